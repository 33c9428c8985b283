//! `/memory` nodes (DT spec §3.4): the RAM banks.

use super::cells::{self, base_name, child_cells, reg_entries, Node};
use super::{phys_range, DeviceTree, DtError};
use crate::mm::PhysRange;

impl<'a> DeviceTree<'a> {
    /// Every RAM bank: each `reg` entry of each enabled root child with
    /// `device_type = "memory"`, in tree order. Zero-sized entries are skipped, as Linux
    /// `early_init_dt_scan_memory()` does.
    pub fn memory_banks(&self) -> impl Iterator<Item = Result<PhysRange, DtError<'a>>> + '_ {
        let root = self.root();
        let cells = root.and_then(|r| child_cells(r));
        let mut nodes = root.ok().into_iter().flat_map(|r| r.children()).filter(|n| is_memory(*n));
        let mut current_node: &'a str = "";
        let mut current = None;
        let mut failed = false;
        core::iter::from_fn(move || {
            if failed {
                return None;
            }
            let result = (|| {
                let cells = cells?;
                loop {
                    if let Some(entries) = &mut current {
                        for (base, size) in entries {
                            if size != 0 {
                                return Ok(Some(phys_range(current_node, base, size)?));
                            }
                        }
                        current = None;
                    }
                    let Some(node) = nodes.next() else {
                        return Ok(None);
                    };
                    let Some(reg) = cells::prop(node, "reg") else {
                        return Err(DtError::MissingReg { node: node.name });
                    };
                    current_node = node.name;
                    current = Some(reg_entries(node.name, "reg", reg, cells)?);
                }
            })();
            failed = result.is_err();
            result.transpose()
        })
    }
}

/// A RAM node: `device_type = "memory"` and not disabled.
pub(super) fn is_memory(node: Node<'_, '_>) -> bool {
    cells::prop(node, "device_type") == Some(b"memory\0") && cells::is_enabled(node)
}

/// Whether `name` is a root child we never treat as a device.
pub(super) fn is_special_root_child(name: &str) -> bool {
    matches!(base_name(name), "chosen" | "cpus" | "reserved-memory" | "aliases")
}
