//! Structure-aware inputs: a device tree built from fuzzer bytes with `vm-fdt`, so that most
//! inputs get past the blob checks and reach the semantics (cells, reserved-memory placement,
//! alloc-ranges, dma-ranges, memory-region phandles, interrupts, bootargs).

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use vm_fdt::FdtWriter;

const RAM_BASE: u64 = 0x4000_0000;

/// Compatible strings of reserved-memory children, the known ones first.
const POOL_COMPATIBLES: &[&str] = &["dmabounce,swiotlb-pool", "restricted-dma-pool", "shared-dma-pool", "vendor,other", ""];
const BOOTARG_WORDS: &[&str] = &[
    "swiotlb=",
    "swiotlb_policy=",
    "dma_debug=",
    "swiotlb_keep=",
    "swiotlb_reserve=",
    "swiotlb_low_wm=",
    "swiotlb_high_wm=",
    "swiotlb_shrink_delay_ms=",
    "swiotlb_batch=",
    "loglevel=",
    "demo=",
    "force",
    ",",
    "noforce",
    "on",
    "off",
    "lend",
    "static",
    "dynamic",
    "0",
    "1",
    "4",
    "18446744073709551616",
    "-1",
    "0x10",
    "debug",
    " ",
    "=",
    "read-verify",
    "65536",
];

/// An address or size: mostly near QEMU's RAM, sometimes anything.
fn address(u: &mut Unstructured<'_>) -> Result<u64> {
    Ok(match u.int_in_range(0u8..=7)? {
        0 => u.arbitrary()?,
        1 => u64::MAX - u64::from(u.int_in_range(0u32..=0x20_0000)?),
        2 => u64::from(u.int_in_range(0u32..=64)?) << 21,
        _ => RAM_BASE + (u64::from(u.int_in_range(0u32..=0x2_0000)?) << 12),
    })
}

fn size(u: &mut Unstructured<'_>) -> Result<u64> {
    Ok(match u.int_in_range(0u8..=7)? {
        0 => u.arbitrary()?,
        1 => 0,
        2 => u64::from(u.int_in_range(1u32..=0x10_0000)?),
        _ => u64::from(u.int_in_range(1u32..=256)?) << 20,
    })
}

fn cells_value(u: &mut Unstructured<'_>) -> Result<u32> {
    Ok(match u.int_in_range(0u8..=9)? {
        0 => u.arbitrary()?,
        1 => 0,
        2..=4 => 1,
        _ => 2,
    })
}

/// Writes `(address, size)` tuples with the given cell counts (truncating values that do not fit,
/// as a careless bootloader would).
fn tuples(w: &mut FdtWriter, name: &str, entries: &[(u64, u64)], ac: u32, sc: u32) -> Result<(), vm_fdt::Error> {
    let mut cells = Vec::new();
    for &(a, s) in entries {
        for (value, n) in [(a, ac), (s, sc)] {
            for i in (0..n.min(4)).rev() {
                cells.push(if i >= 2 { 0 } else { (value >> (32 * i)) as u32 });
            }
        }
    }
    w.property_array_u32(name, &cells)
}

fn entries(u: &mut Unstructured<'_>, max: u32) -> Result<Vec<(u64, u64)>> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| Ok((address(u)?, size(u)?))).collect()
}

/// Builds a device tree from `u`; `None` if `vm-fdt` refuses it (duplicate names, ...).
pub fn build(u: &mut Unstructured<'_>) -> Result<Option<Vec<u8>>> {
    let mut memreserve = Vec::new();
    for _ in 0..u.int_in_range(0u8..=2)? {
        if let Ok(entry) = vm_fdt::FdtReserveEntry::new(address(u)?, size(u)?) {
            memreserve.push(entry);
        }
    }
    let mut w = match FdtWriter::new_with_mem_reserv(&memreserve) {
        Ok(w) => w,
        Err(_) => return Ok(None),
    };
    Ok(write_tree(&mut w, u)?.and_then(|()| w.finish().ok()))
}

fn write_tree(w: &mut FdtWriter, u: &mut Unstructured<'_>) -> Result<Option<()>> {
    macro_rules! t {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(_) => return Ok(None),
            }
        };
    }
    let (ac, sc) = (cells_value(u)?, cells_value(u)?);
    let root = t!(w.begin_node(""));
    t!(w.property_u32("#address-cells", ac));
    t!(w.property_u32("#size-cells", sc));
    t!(w.property_string("compatible", "linux,dummy-virt"));
    if u.ratio(1, 3)? {
        let ranges = entries(u, 3)?;
        let mut cells = Vec::new();
        for (a, s) in ranges {
            // child address (ac), parent address (ac), size (sc)
            for (value, n) in [(a, ac), (a, ac), (s, sc)] {
                for i in (0..n.min(4)).rev() {
                    cells.push(if i >= 2 { 0 } else { (value >> (32 * i)) as u32 });
                }
            }
        }
        t!(w.property_array_u32("dma-ranges", &cells));
    }
    if u.ratio(1, 4)? {
        t!(w.property_null("dma-coherent"));
    }

    // /memory
    let banks = u.int_in_range(0u8..=3)?;
    for i in 0..banks {
        let name = if i == 0 { "memory@40000000".to_string() } else { format!("memory@{i}") };
        let n = t!(w.begin_node(&name));
        if u.ratio(7, 8)? {
            t!(w.property_string("device_type", "memory"));
        }
        let reg = if i == 0 && u.ratio(3, 4)? { vec![(RAM_BASE, u64::from(u.int_in_range(1u32..=1024)?) << 20)] } else { entries(u, 3)? };
        t!(tuples(w, "reg", &reg, ac, sc));
        t!(w.end_node(n));
    }

    // /reserved-memory
    let mut phandles = Vec::new();
    if u.ratio(3, 4)? {
        let (rac, rsc) = (cells_value(u)?, cells_value(u)?);
        let rm = t!(w.begin_node("reserved-memory"));
        t!(w.property_u32("#address-cells", rac));
        t!(w.property_u32("#size-cells", rsc));
        if u.ratio(7, 8)? {
            t!(w.property_null("ranges"));
        }
        let children = u.int_in_range(0u8..=6)?;
        for i in 0..children {
            let name = if u.ratio(1, 8)? { "pool".to_string() } else { format!("pool@{i}") };
            let n = t!(w.begin_node(&name));
            let compatible = *u.choose(POOL_COMPATIBLES)?;
            if !compatible.is_empty() {
                t!(w.property_string("compatible", compatible));
            }
            if u.ratio(1, 2)? {
                let reg = if u.ratio(3, 4)? { vec![(address(u)?, size(u)?)] } else { entries(u, 2)? };
                t!(tuples(w, "reg", &reg, rac, rsc));
            }
            if u.ratio(1, 2)? {
                let s = size(u)?;
                t!(tuples(w, "size", &[(s, 0)], rsc, 0));
                if u.ratio(1, 2)? {
                    let a = if u.ratio(3, 4)? { 1u64 << u.int_in_range(0u32..=40)? } else { u.arbitrary()? };
                    t!(tuples(w, "alignment", &[(a, 0)], rsc, 0));
                }
                if u.ratio(1, 2)? {
                    let ranges = entries(u, 3)?;
                    t!(tuples(w, "alloc-ranges", &ranges, rac, rsc));
                }
            }
            for flag in ["no-map", "reusable", "linux,dma-default"] {
                if u.ratio(1, 6)? {
                    t!(w.property_null(flag));
                }
            }
            if u.ratio(1, 8)? {
                t!(w.property_string("status", "disabled"));
            }
            if u.ratio(2, 3)? {
                let phandle = 0x100 + u32::from(i);
                t!(w.property_phandle(phandle));
                phandles.push(phandle);
            }
            t!(w.end_node(n));
        }
        t!(w.end_node(rm));
    }

    // An interrupt controller, then devices with interrupts and memory-region.
    let gic = t!(w.begin_node("intc@8000000"));
    t!(w.property_string("compatible", "arm,cortex-a15-gic"));
    t!(w.property_null("interrupt-controller"));
    t!(w.property_u32("#interrupt-cells", if u.ratio(7, 8)? { 3 } else { cells_value(u)? }));
    t!(tuples(w, "reg", &[(0x800_0000, 0x1_0000), (0x801_0000, 0x1_0000)], ac, sc));
    t!(w.property_phandle(0x8001));
    t!(w.end_node(gic));
    if u.ratio(3, 4)? {
        t!(w.property_u32("interrupt-parent", if u.ratio(7, 8)? { 0x8001 } else { u.arbitrary()? }));
    }
    let devices = u.int_in_range(0u8..=3)?;
    for i in 0..devices {
        let dev = t!(w.begin_node(&format!("virtio_mmio@a00{i}000")));
        t!(w.property_string("compatible", "virtio,mmio"));
        t!(tuples(w, "reg", &[(0xa00_0000 + 0x200 * u64::from(i), 0x200)], ac, sc));
        let nirq = u.int_in_range(0u8..=4)?;
        let irqs: Vec<u32> = (0..nirq).map(|_| u.arbitrary()).collect::<Result<_>>()?;
        if !irqs.is_empty() {
            t!(w.property_array_u32("interrupts", &irqs));
        }
        if u.ratio(1, 2)? {
            let mut refs = Vec::new();
            for _ in 0..u.int_in_range(1u8..=2)? {
                refs.push(if !phandles.is_empty() && u.ratio(3, 4)? { *u.choose(&phandles)? } else { u.arbitrary()? });
            }
            t!(w.property_array_u32("memory-region", &refs));
        }
        if u.ratio(1, 4)? {
            t!(w.property_null("dma-coherent"));
        }
        t!(w.end_node(dev));
    }

    // A bus with its own cells, `ranges` (absent: untranslatable, empty: identity, or windows)
    // and `dma-ranges`, with devices under it.
    if u.ratio(1, 2)? {
        let (bac, bsc) = (cells_value(u)?, cells_value(u)?);
        let bus = t!(w.begin_node("soc@8000000"));
        t!(w.property_string("compatible", "simple-bus"));
        t!(w.property_u32("#address-cells", bac));
        t!(w.property_u32("#size-cells", bsc));
        for name in ["ranges", "dma-ranges"] {
            match u.int_in_range(0u8..=3)? {
                0 => {}
                1 => t!(w.property_null(name)),
                _ => {
                    let mut cells = Vec::new();
                    for _ in 0..u.int_in_range(1u8..=2)? {
                        let (child, parent, len) = (address(u)?, address(u)?, size(u)?);
                        for (value, n) in [(child, bac), (parent, ac), (len, bsc)] {
                            for i in (0..n.min(4)).rev() {
                                cells.push(if i >= 2 { 0 } else { (value >> (32 * i)) as u32 });
                            }
                        }
                    }
                    t!(w.property_array_u32(name, &cells));
                }
            }
        }
        for i in 0..u.int_in_range(1u8..=2)? {
            let dev = t!(w.begin_node(&format!("dev@{i}")));
            t!(w.property_string("compatible", if u.ratio(1, 2)? { "virtio,mmio" } else { "arm,pl011" }));
            let reg = vec![(address(u)?, size(u)?)];
            t!(tuples(w, "reg", &reg, bac, bsc));
            if u.ratio(1, 2)? {
                t!(w.property_array_u32("interrupts", &[0, u.int_in_range(0u32..=1100)?, 4]));
            }
            if !phandles.is_empty() && u.ratio(1, 2)? {
                t!(w.property_u32("memory-region", *u.choose(&phandles)?));
            }
            if u.ratio(1, 4)? {
                t!(w.property_string("status", "disabled"));
            }
            t!(w.end_node(dev));
        }
        t!(w.end_node(bus));
    }

    // /chosen
    let chosen = t!(w.begin_node("chosen"));
    let mut bootargs = String::new();
    for _ in 0..u.int_in_range(0u8..=8)? {
        bootargs.push_str(u.choose(BOOTARG_WORDS)?);
        if u.ratio(1, 2)? {
            bootargs.push(' ');
        }
    }
    t!(w.property_string("bootargs", &bootargs));
    t!(w.end_node(chosen));
    t!(w.end_node(root));
    Ok(Some(()))
}
