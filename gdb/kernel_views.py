# GDB views of the kernel's page allocator and DMA state, read from a stopped target (in the
# spirit of Linux's scripts/gdb `lx-*` helpers). Loaded by gdb/kernel.gdb. Commands:
#   buddyinfo      free blocks per order, zone and migrate type (walked from the free lists)
#   pageblocks     the RAM picture, one character per pageblock (the kernel's `ram_picture`)
#   swiotlb        bounce pools: slot map, live bounce mappings, lent pageblocks, counters
#   dma-mappings   live mappings from the DMA-API debug tracker (bootarg dma_debug=on)
#
# Everything is read through gdb's Rust support from the kernel's statics. Locks are never taken
# (the target is stopped; a lock cannot be taken from here anyway): each view says which locks it
# read through and whether one was held at the stop, in which case what is behind it may be
# mid-update. Nothing here writes to the target.
import gdb

# The kernel's constants (mm::PAGE_SHIFT, page_alloc::PAGEBLOCK_ORDER, swiotlb::IO_TLB_SHIFT):
# consts leave no trace in the debug info.
PAGE_SHIFT = 12
PAGEBLOCK_ORDER = 9
IO_TLB_SHIFT = 11
IO_TLB_SEGSIZE = 128
NIL = 0xFFFF_FFFF  # page::NIL, the end of a free list

PAGE_ALLOCATOR = "kernel::platform::mm::PAGE_ALLOCATOR"
KERNEL = "kernel::platform::KERNEL"
DMA = "kernel::platform::dma::DMA"
DMA_DEBUG = "kernel::platform::dma::DEBUG"
RESTRICTED = "kernel::platform::dma::RESTRICTED"
DEVICE_POOLS = "kernel::platform::dma::DEVICE_POOLS"
DISKS = "kernel::platform::virtio_blk::DISKS"
WORKLOAD_DEV = "kernel::demo::workload::DEV"

# The wrappers between a static and its data: spin::Once's storage and UnsafeCell.
_WRAPPERS = ("core::cell::UnsafeCell<", "core::mem::maybe_uninit::MaybeUninit<",
             "core::mem::manually_drop::ManuallyDrop<", "core::mem::maybe_dangling::MaybeDangling<")


class ViewError(Exception):
    """The kernel state is not there (yet) or not what this script expects."""


# ---- reading Rust values ----

def static(path):
    """The value of a Rust static by its path (`kernel::platform::mm::PAGE_ALLOCATOR`)."""
    try:
        return gdb.parse_and_eval(path)
    except gdb.error:
        sym = gdb.lookup_static_symbol(path) or gdb.lookup_global_symbol(path)
        if sym is None:
            raise ViewError(f"no symbol {path} in the kernel's debug info")
        return sym.value()


def unwrap(v):
    """Steps through UnsafeCell, MaybeUninit, ManuallyDrop and MaybeDangling."""
    while str(v.type.strip_typedefs()).startswith(_WRAPPERS):
        names = [f.name for f in v.type.fields()]
        v = v["value"] if "value" in names else field0(v)
    return v


def field0(v):
    """The first field of a tuple struct (its name varies: `__0`, `0`)."""
    return v[v.type.fields()[0]]


def atomic(v):
    """The plain value inside an AtomicU8/U32/U64/Usize/Bool."""
    return int(v["v"]["value"])


def variant(v):
    """(name, payload) of a Rust enum value: gdb resolves the active variant of a data-carrying
    enum as its last field; a C-like enum is a plain enum value."""
    if v.type.strip_typedefs().code == gdb.TYPE_CODE_ENUM:
        return str(v).split("::")[-1], v
    fields = [f.name for f in v.type.fields() if f.name]
    if not fields:
        raise ViewError(f"{v.type} is not a Rust enum")
    name = fields[-1].split("::")[-1]
    return name, v[fields[-1]]


def some(v):
    """The payload of `Some(x)`, or None."""
    name, payload = variant(v)
    return field0(payload) if name == "Some" else None


def field_at(t, path):
    """(byte offset, type) of the field reached by `path` (field names; `None` steps into a
    wrapper's only or first field) from the start of a value of type `t`, from the type alone."""
    off = 0
    for name in path:
        t = t.strip_typedefs()
        fields = t.fields()
        f = fields[0] if name is None else next((f for f in fields if f.name == name), None)
        if f is None:
            raise ViewError(f"{t} has no field {name}")
        off += f.bitpos // 8
        t = f.type
    return off, t


def area_slots(lock_ptr, locks, what):
    """The slot array (a `*Slot`) of the area whose lock `lock_ptr` points to and the runs parked
    in its slot cache, noting whether that lock was held, read by offsets: gdb cannot make a
    value of the area's type at all ("not available on integers of more than 8 bytes": its
    segment maps are `u128`), but its fields' offsets and the plain words inside are fine."""
    t = lock_ptr.type.target()
    base = int(lock_ptr)
    locked_off, _ = field_at(t, ["locked", "v", "value"])
    data_off, data_t = field_at(t, ["data"])
    while str(data_t.strip_typedefs()).startswith(_WRAPPERS):
        names = [f.name for f in data_t.strip_typedefs().fields()]
        off, data_t = field_at(data_t, ["value" if "value" in names else None])
        data_off += off
    slots_off, vec_t = field_at(data_t, ["slots"])
    buf_names = [f.name for f in field_at(vec_t, ["buf"])[1].strip_typedefs().fields()]
    ptr_path = ["buf", "inner", "ptr", "pointer", "pointer"] if "inner" in buf_names else ["buf", "ptr", "pointer", "pointer"]
    ptr_off, _ = field_at(vec_t, ptr_path)
    elem = vec_t.template_argument(0)
    locks.read.append((what, read_bytes(base + locked_off, 1)[0] != 0))
    addr = int.from_bytes(read_bytes(base + data_off + slots_off + ptr_off, 8), "little")
    parked_off, _ = field_at(data_t, ["cache", "len"])
    return gdb.Value(addr).cast(elem.pointer()), read_bytes(base + data_off + parked_off, 1)[0]


def vec_items(v):
    """(pointer to the first element, len) of a Vec<T>."""
    try:
        elem = v.type.template_argument(0)
    except RuntimeError:
        # Some Vecs come without template parameters in the debug info: take T from the name.
        name = str(v.type.strip_typedefs())
        elem = gdb.lookup_type(name[name.index("<") + 1:name.rindex(", alloc::alloc::Global>")])
    buf = v["buf"]
    raw = buf["inner"]["ptr"] if "inner" in [f.name for f in buf.type.fields()] else buf["ptr"]
    ptr = raw["pointer"]["pointer"]
    return ptr.cast(elem.pointer()), int(v["len"])


def rust_str(s):
    """A &str as a Python string."""
    return s["data_ptr"].string(length=int(s["length"]))


def read_bytes(ptr, n):
    return bytes(gdb.selected_inferior().read_memory(int(ptr), n))


def enum_values(type_name):
    """{discriminant: short variant name} of a C-like Rust enum (`#[repr(u8)]` states)."""
    return {f.enumval: f.name.split("::")[-1] for f in gdb.lookup_type(type_name).fields()}


class Locks:
    """The locks a view read through without taking them, for the note under the view."""

    def __init__(self):
        self.read = []

    def inner(self, lock, what):
        """The data of an IrqSafeSpinLock, read without taking it."""
        self.read.append((what, bool(atomic(lock["locked"]))))
        return unwrap(lock["data"])

    def note(self):
        held = [w for w, h in self.read if h]
        names = sorted({w for w, _ in self.read})
        line = f"(read without taking the locks: {', '.join(names)}"
        if held:
            return line + f"; HELD at this stop: {', '.join(sorted(set(held)))}: what they guard may be mid-update)"
        return line + "; none was held at this stop)"


def once(v, what):
    """The data of a spin::Once, or ViewError if it was never initialised."""
    if atomic(field0(v["status"])) != 2:  # spin's Status::Complete
        raise ViewError(f"{what} is not initialised yet (stop later in the boot)")
    return unwrap(v["data"])


# ---- the page allocator ----

def page_allocator(locks):
    return locks.inner(once(static(PAGE_ALLOCATOR), "the page allocator")["inner"], "page allocator")


def migrate_types():
    """Names of MigrateType in index order."""
    return [n for _, n in sorted(enum_values("kernel::mm::page_alloc::migratetype::MigrateType").items())]


def zones(pa):
    arr = pa["zones"]
    lo, hi = arr.type.range()
    return [arr[i] for i in range(lo, hi + 1)]


ZONE_NAMES = ["DMA", "Normal"]  # ZoneType::name, index order


class PageDescs:
    """The page descriptors (`mem_map`), read from the target in one go: following a free list one
    descriptor read at a time costs a round trip to the gdb stub each, minutes for a fragmented
    zone. Decoded here with the layout gdb reports for `PageDesc` (the tag byte and the fields of
    `Free`); the tag value of `Free` is learnt from a descriptor gdb decodes itself."""

    def __init__(self, pa):
        self.ptr, self.len = vec_items(pa["mem_map"])
        t = self.ptr.type.target().strip_typedefs()
        self.size = t.sizeof
        tag = t.fields()[0]
        if tag.name is not None:
            raise ViewError(f"{t} has no separate tag field; this script does not know its layout")
        self.tag = (tag.bitpos // 8, tag.type.sizeof)
        free = next(f for f in t.fields() if f.name and f.name.split("::")[-1] == "Free")
        self.fields = {g.name: (g.bitpos // 8, g.type.sizeof) for g in free.type.fields()}
        self.raw = read_bytes(self.ptr, self.len * self.size)
        self.free_tag = None

    def _field(self, idx, offset, size):
        at = idx * self.size + offset
        return int.from_bytes(self.raw[at:at + size], "little")

    def free_block(self, idx):
        """(order, prev, next) if page `idx` heads a free block, else None."""
        if self.free_tag is None:
            if variant(self.ptr[idx])[0] != "Free":
                return None
            self.free_tag = self._field(idx, *self.tag)
        if self._field(idx, *self.tag) != self.free_tag:
            return None
        return tuple(self._field(idx, *self.fields[k]) for k in ("order", "prev", "next"))

    def describe(self, idx):
        return self.ptr[idx].format_string()


def walk_free_lists(pa):
    """{(zone, order, type): blocks} counted by walking every free list through the page
    descriptors, and a list of problems found on the way."""
    descs = PageDescs(pa)
    counts, problems = {}, []
    for z, zone in enumerate(zones(pa)):
        areas = zone["free_area"]
        lo, hi = areas.type.range()
        for order in range(lo, hi + 1):
            heads = areas[order]["free_list"]
            for mt in range(heads.type.range()[1] + 1):
                idx, n, prev = int(heads[mt]), 0, NIL
                while idx != NIL:
                    if idx >= descs.len or n > descs.len:
                        problems.append(f"zone {z} order {order} type {mt}: list runs off at page {idx}")
                        break
                    block = descs.free_block(idx)
                    if block is None or block[0] != order or block[1] != prev:
                        problems.append(f"zone {z} order {order} type {mt}: page {idx} is {descs.describe(idx)}")
                        break
                    n += 1
                    prev, idx = idx, block[2]
                counts[(z, order, mt)] = n
    return counts, problems


class BuddyInfo(gdb.Command):
    """Free blocks per order, zone and migrate type (/proc/pagetypeinfo's first table), counted by
    walking the page allocator's free lists, then the zones' own free-page counters beside them.
    Usage: buddyinfo"""

    def __init__(self):
        super().__init__("buddyinfo", gdb.COMMAND_DATA)

    def invoke(self, arg, from_tty):
        run_view(self.show)

    def show(self):
        locks = Locks()
        pa = page_allocator(locks)
        types = migrate_types()
        counts, problems = walk_free_lists(pa)
        nr_orders = max(o for _, o, _ in counts) + 1
        print("Free blocks per migrate type at order (walked from the free lists)")
        print(f"{'':38}" + "".join(f" {o:>5}" for o in range(nr_orders)) + "   pages")
        total = 0
        for z, zone in enumerate(zones(pa)):
            walked = 0
            for mt, name in enumerate(types):
                row = [counts[(z, o, mt)] for o in range(nr_orders)]
                pages = sum(n << o for o, n in enumerate(row))
                walked += pages
                print(f"Node 0, zone {ZONE_NAMES[z]:>8}, type {name:>10}" + "".join(f" {n:>5}" for n in row) + f" {pages:>7}")
            counters = [int(zone["nr_free_pages"][mt]) for mt in range(len(types))]
            same = "agrees" if sum(counters) == walked else "DISAGREES"
            print(f"  zone {ZONE_NAMES[z]}: {walked} free pages walked; nr_free_pages counters "
                  f"{dict(zip(types, counters))} = {sum(counters)} ({same}); managed {int(zone['managed_pages'])}")
            total += walked
        print(f"total free pages: {total} ({total << PAGE_SHIFT >> 20} MiB)")
        for p in problems:
            print(f"PROBLEM: {p}")
        print(locks.note())


# ---- the RAM picture ----

def bounce_regions():
    """(start, end, label) of the reserved-memory regions of SWIOTLB and restricted pools, from
    the boot memory map (what the kernel's `in_swiotlb_region` looks at)."""
    memblock = once(static(KERNEL), "the kernel (boot memory map)")["memblock"]
    reserved = memblock["reserved"]
    regions = []
    for i in range(int(reserved["len"])):
        r = reserved["items"][i]
        kind, payload = variant(r["flags"]["kind"])
        if kind == "ReservedMemory" and variant(field0(payload))[0] in ("Swiotlb", "RestrictedDma"):
            base = int(r["range"]["base"])
            regions.append((base, base + int(r["range"]["size"]), rust_str(r["label"])))
    return regions


PICTURE_CHAR = {"Unmovable": "U", "Movable": "M", "Swiotlb": "S", "Cma": "C", "Isolate": "I"}  # MigrateType::picture_char
# PageAllocator::RAM_PICTURE_LEGEND, word for word.
PICTURE_LEGEND = ("M movable, U unmovable, S lent to the page allocator as MIGRATE_SWIOTLB and holding pages, "
                  "s lent and empty, C CMA area, I isolated, b bounce slots, . reserved, | end of ZONE_DMA")


def pageblock_wholly_free(mem_map, block):
    """`PageAllocator::pageblock_wholly_free`: the block's first page heads a free buddy block of
    the pageblock's order (each pageblock is its own buddy tree, merged up to that order)."""
    name, payload = variant(mem_map[block << PAGEBLOCK_ORDER])
    return name == "Free" and int(payload["order"]) == PAGEBLOCK_ORDER


def ram_picture(pa):
    """The picture as `RamPicture`'s Display writes it, and the number of pageblocks in it."""
    base = int(pa["base"])
    types, nblocks = vec_items(pa["pageblock_type"])
    mem_map, _ = vec_items(pa["mem_map"])
    dma_end_block = int(zones(pa)[0]["end"]) >> PAGEBLOCK_ORDER
    regions = bounce_regions()
    out = []
    for block in range(nblocks):
        if block == dma_end_block and block != 0:
            out.append("|")
        mt = some(types[block])
        if mt is not None:
            name = variant(mt)[0]
            if name == "Swiotlb" and pageblock_wholly_free(mem_map, block):
                out.append("s")
            else:
                out.append(PICTURE_CHAR[name])
        else:
            addr = base + (block << (PAGEBLOCK_ORDER + PAGE_SHIFT))
            out.append("b" if any(s <= addr < e for s, e, _ in regions) else ".")
    return "".join(out), nblocks


class PageBlocks(gdb.Command):
    """RAM, one character per 2 MiB pageblock from the lowest address up, as the kernel's
    `ram_picture` prints it: U unmovable, M movable, S lent to the page allocator as
    MIGRATE_SWIOTLB and holding pages, s lent and wholly free, C MIGRATE_CMA (the CMA area), I isolated, b bounce slots (a
    SWIOTLB pool, not managed), . not managed, | the ZONE_DMA / ZONE_NORMAL boundary.
    Usage: pageblocks"""

    def __init__(self):
        super().__init__("pageblocks", gdb.COMMAND_DATA)

    def invoke(self, arg, from_tty):
        run_view(self.show)

    def show(self):
        locks = Locks()
        pa = page_allocator(locks)
        picture, nblocks = ram_picture(pa)
        base = int(pa["base"])
        end = base + (nblocks << (PAGEBLOCK_ORDER + PAGE_SHIFT))
        print(f"RAM {base:#x}-{end:#x}, {nblocks} pageblocks of 2 MiB:")
        print(f"[{picture}]")
        tally = {c: picture.count(c) for c in "UMSsCIb."}
        print("  " + ", ".join(f"{c} {n}" for c, n in tally.items()))
        print(f"  legend: {PICTURE_LEGEND}")
        print(locks.note())


# ---- SWIOTLB pools ----

SLOT_CHARS = {"Free": ".", "Used": "#", "Lent": "L"}


def pool_view(pool, locks, what):
    """A pool's slots, read from its segment states and its areas: a dict for the printers."""
    start, end = int(pool["start"]), int(pool["end"])
    # One AtomicSegmentState per 128-slot segment: `used` and `lent` bitmaps, two u64 each.
    segs_ptr, nsegs = vec_items(pool["states"])
    seg_t = segs_ptr.type.target().strip_typedefs()
    seg_size = seg_t.sizeof
    offs = {f.name: f.bitpos // 8 for f in seg_t.fields()}
    raw = read_bytes(segs_ptr, nsegs * seg_size)
    states = []
    for seg in range(nsegs):
        at = seg * seg_size
        used = int.from_bytes(raw[at + offs["used"]:at + offs["used"] + 16], "little")
        lent = int.from_bytes(raw[at + offs["lent"]:at + offs["lent"] + 16], "little")
        states += ["Lent" if lent >> i & 1 else "Used" if used >> i & 1 else "Free" for i in range(IO_TLB_SEGSIZE)]
    nslots = len(states)
    areas_ptr, nareas = vec_items(pool["areas"])
    area_nslots = int(pool["area_nslots"])
    lock_size = areas_ptr.type.target().sizeof
    areas = [area_slots(gdb.Value(int(areas_ptr) + a * lock_size).cast(areas_ptr.type), locks, f"{what} area locks")
             for a in range(nareas)]
    slots_of = [slots for slots, _ in areas]
    # Runs of the slot caches: each a page (CACHED_RUN_SLOTS), read Used, counted in `used`,
    # with a parked record (`Slot::PARKED`: slots but no bytes) in their first slot.
    parked = sum(runs for _, runs in areas) << (PAGE_SHIFT - IO_TLB_SHIFT)
    # Each live allocation keeps its record in its first slot (pad slots included), and the
    # allocations tile the used slots: walk from each used stretch's first slot, record to record.
    mappings = []
    i = 0
    while i < nslots:
        if states[i] != "Used":
            i += 1
            continue
        area, local = divmod(i, area_nslots)
        rec = slots_of[area][local]
        n = int(rec["nslots"])
        if n == 0:  # no record here: a mapping being made or freed
            i += 1
            continue
        if int(rec["alloc_size"]) == 0:  # a parked run: held, no mapping
            i += n
            continue
        head = local + int(rec["pad_slots"])
        tlb = start + ((area * area_nslots + head) << IO_TLB_SHIFT) + int(rec["offset"])
        mappings.append({"slot": area * area_nslots + head, "tlb": tlb, "orig": int(rec["orig_addr"]),
                         "size": int(rec["alloc_size"]), "nslots": n, "dir": variant(rec["dir"])[0]})
        i += n
    c = pool["counters"]
    counters = {k: atomic(c[k]) for k in ("free", "used", "lent", "used_hiwater", "maps", "maps_in_irq",
                                          "map_failures", "irq_failures", "bytes_to_device", "bytes_to_cpu")}
    return {"what": what, "start": start, "end": end, "nslots": nslots, "nareas": nareas, "states": states,
            "mappings": mappings, "counters": counters, "irq_reserve": atomic(pool["irq_reserve_slots"]), "parked": parked}


def slot_map(states, per=128):
    """One character per segment (128 slots, 256 KiB): . all free, # all used, L all lent,
    + some used, - free and lent."""
    out = []
    for s in range(0, len(states), per):
        seg = set(states[s:s + per])
        if len(seg) == 1:
            out.append(SLOT_CHARS[seg.pop()])
        else:
            out.append("+" if "Used" in seg else "-")
    return "".join(out)


MAPPINGS_SHOWN = 32  # per pool, unless `swiotlb full`


def print_pool(p, full):
    c = p["counters"]
    used = p["states"].count("Used")
    print(f"{p['what']}: {p['start']:#x}-{p['end']:#x}, {p['nslots']} slots in {p['nareas']} area{'' if p['nareas'] == 1 else 's'}, "
          f"irq reserve {p['irq_reserve']}")
    # The slot caches' parked runs read Used in the states and count as held in `used`.
    print(f"  slot states: used {used} ({p['parked']} of them parked in the slot caches), free {p['states'].count('Free')}, "
          f"lent {p['states'].count('Lent')}; "
          f"counters: used {c['used']} (used and parked), free {c['free']}, lent {c['lent']}, hiwater {c['used_hiwater']}"
          + ("" if used == c["used"] else "  (states and counter DIFFER: a mapping is being made or freed)"))
    print(f"  maps {c['maps']} ({c['maps_in_irq']} in irq), failures {c['map_failures']} "
          f"({c['irq_failures']} in irq), bytes bounced to device {c['bytes_to_device']}, to cpu {c['bytes_to_cpu']}")
    print(f"  slot map, 1 char = 128 slots (. free, # used, + partly used, L lent, - free and lent):")
    sm = slot_map(p["states"])
    for i in range(0, len(sm), 64):
        print(f"    {sm[i:i + 64]}")
    print(f"  live bounce mappings: {len(p['mappings'])}")
    shown = p["mappings"] if full else p["mappings"][:MAPPINGS_SHOWN]
    for m in shown:
        # alloc_coherent records no original buffer (orig 0): the memory lives in the slots.
        orig = "coherent memory" if m["orig"] == 0 else f"orig {m['orig']:#x}"
        print(f"    slot {m['slot']:>5} tlb {m['tlb']:#x} size {m['size']:>6} ({m['nslots']:>3} slots) "
              f"{m['dir']:<13} {orig}")
    if len(shown) < len(p["mappings"]):
        print(f"    ... {len(p['mappings']) - len(shown)} more (`swiotlb full` lists them all)")


def pools(locks):
    """Every pool the DMA layer knows, as (view, kind): the default pool, the dynamic policy's
    extra pools, per-device pools and restricted pools."""
    dma = once(static(DMA), "the DMA layer")
    manager = dma["manager"].dereference()
    out = [(pool_view(manager["pool"], locks, "default pool"), "default")]
    extra = manager["extra"]
    for i in range(atomic(manager["nr_extra"])):
        out.append((pool_view(once(extra[i], "an extra pool"), locks, f"extra pool {i}"), "extra"))
    try:
        slots = static(DEVICE_POOLS)
        lo, hi = slots.type.range()
    except ViewError:
        lo, hi = 0, -1  # set_inflight_hint is not linked into this kernel: no device pools
    for i in range(lo, hi + 1):
        dp = some(locks.inner(field0(slots[i]), "device pool slots"))
        if dp is not None:
            out.append((pool_view(dp["pool"].dereference(), locks, f"device pool {i}"), "device"))
    restricted = locks.inner(static(RESTRICTED), "restricted pool table")
    labels = {start: label for start, _, label in bounce_regions()}
    lo, hi = restricted.type.range()
    for i in range(lo, hi + 1):
        entry = some(restricted[i])
        if entry is not None:
            base = int(field0(entry))
            what = f"restricted pool {labels.get(base, hex(base))}"
            out.append((pool_view(entry[entry.type.fields()[1]].dereference(), locks, what), "restricted"))
    return dma, manager, out


class Swiotlb(gdb.Command):
    """The SWIOTLB pools (default, extra, per-device, restricted): slot usage map, live bounce
    mappings from the slot metadata, slot counters, and the default pool's pageblocks (slots,
    lent to the page allocator, reclaiming, carved for a device, unused) with the policy's
    counters. The first 32 mappings of each pool are listed; `swiotlb full` lists them all.
    Usage: swiotlb [full]"""

    def __init__(self):
        super().__init__("swiotlb", gdb.COMMAND_DATA)

    def invoke(self, arg, from_tty):
        if arg.strip() not in ("", "full"):
            raise gdb.GdbError("usage: swiotlb [full]")
        run_view(lambda: self.show(arg.strip() == "full"))

    def show(self, full):
        locks = Locks()
        dma, manager, all_pools = pools(locks)
        policy = variant(manager["policy"])[0].lower()
        never = " (never lent)" if bool(manager["never_lend"]) else ""
        print(f"policy {policy}{never}")
        for p, _ in all_pools:
            print_pool(p, full)
        blocks_ptr, nblocks = vec_items(manager["blocks"]["states"])
        names = enum_values("kernel::dma::swiotlb::mem::blocks::BlockState")
        states = [names[b] for b in read_bytes(blocks_ptr, nblocks)]
        chars = {"AsSlots": "b", "Lent": "S", "Reclaiming": "r", "CarvedForDevice": "d", "Unused": "u"}
        start = int(manager["start"])
        print(f"default pool pageblocks from {start:#x} (b slots, S lent, r reclaiming, d device pool, u unused):")
        print(f"  [{''.join(chars[s] for s in states)}]  "
              + ", ".join(f"{n} {states.count(s)}" for s, n in (("AsSlots", "slots"), ("Lent", "lent"),
                          ("Reclaiming", "reclaiming"), ("CarvedForDevice", "device"), ("Unused", "unused"))))
        runs = []  # [first, last] runs of lent pageblocks
        for b, st in enumerate(states):
            if st != "Lent":
                continue
            if runs and runs[-1][1] == b - 1:
                runs[-1][1] = b
            else:
                runs.append([b, b])
        if runs:
            block = 1 << (PAGEBLOCK_ORDER + PAGE_SHIFT)
            print("  lent to the page allocator: " + ", ".join(
                f"{start + a * block:#x}-{start + (b + 1) * block:#x}" for a, b in runs))
        lc = manager["counters"]

        def stat(name):
            return atomic(lc[name])
        print(f"  reclaim: {stat('reclaims')} tries, {stat('pageblocks_reclaimed')} pageblocks, {stat('reclaims_busy')} busy; "
              f"pages {stat('pages_migrated')} migrated, {stat('pages_dropped')} dropped, "
              f"{stat('pages_pinned_blocking')} pinned-blocking")
        print(f"  shrink: {stat('shrinks')} runs, {stat('pageblocks_lent_again')} pageblocks lent again; "
              f"misses {stat('misses')}, worker runs {stat('worker_runs')}, extra pools {stat('extra_pools')}, "
              f"device pools {stat('device_pools_carved')} carved / {stat('device_pools_returned')} returned")
        print(locks.note())


# ---- the DMA-API debug tracker ----

def device_names():
    """{DeviceId: name} of the devices the platform keeps: the virtio-blk disks and the demo
    workload's device."""
    names = {}
    try:
        dev = once(static(WORKLOAD_DEV), "the workload device").dereference()
        names[int(dev["id"])] = f"workload {rust_str(dev['name'])}"
    except ViewError:
        pass
    try:
        disks = static(DISKS)
    except ViewError:
        return names
    lo, hi = disks.type.range()
    for i in range(lo, hi + 1):
        try:
            disk = once(disks[i], "a disk")
        except ViewError:
            continue
        dev = disk["dma_dev"].dereference()
        names[int(dev["id"])] = f"disk{int(disk['index'])} {rust_str(dev['name'])}"
    return names


def tracker_entries(locks):
    """(enabled, live entries, the tracker's count field) of the DMA-API debug tracker."""
    dma = once(static(DMA), "the DMA layer")
    enabled = some(dma["api"]["debug"]) is not None
    table = locks.inner(static(DMA_DEBUG)["table"], "dma-debug table")
    live = table["live"]
    lo, hi = live.type.range()
    entries = []
    for i in range(lo, hi + 1):
        e = some(live[i])
        if e is not None:
            entries.append({"dev": int(e["dev"]), "addr": int(e["addr"]), "size": int(e["size"]),
                            "dir": variant(e["dir"])[0], "checked": bool(e["error_checked"])})
    return enabled, entries, int(table["count"]), int(table["errors"])


class DmaMappings(gdb.Command):
    """Live streaming DMA mappings recorded by the DMA-API debug tracker (boot with dma_debug=on),
    with the device, and for a bounced mapping the pool, slot and original buffer.
    Usage: dma-mappings"""

    def __init__(self):
        super().__init__("dma-mappings", gdb.COMMAND_DATA)

    def invoke(self, arg, from_tty):
        run_view(self.show)

    def show(self):
        locks = Locks()
        enabled, entries, count, errors = tracker_entries(locks)
        if not enabled:
            print("DMA-API debugging is off: boot with dma_debug=on to track mappings")
            return
        _, _, all_pools = pools(locks)
        names = device_names()
        print(f"{len(entries)} live DMA mappings (tracker count {count}, errors reported {errors})")
        for e in sorted(entries, key=lambda e: (e["dev"], e["addr"])):
            where = "direct"
            for p, _ in all_pools:
                if p["start"] <= e["addr"] < p["end"]:
                    m = next((m for m in p["mappings"] if m["tlb"] == e["addr"]), None)
                    where = (f"{p['what']} slot {m['slot']} <- orig {m['orig']:#x}" if m
                             else f"{p['what']}, but NO LIVE BOUNCE MAPPING there")
            dev = names.get(e["dev"], f"dev {e['dev']}")
            print(f"  {dev:<32} {e['addr']:#012x} {e['size']:>7} {e['dir']:<13} {where}"
                  + ("" if e["checked"] else "  (map error not checked yet)"))
        print(locks.note())


def run_view(show):
    try:
        show()
    except ViewError as e:
        print(f"not available: {e}")
    except gdb.MemoryError as e:
        print(f"not available: cannot read target memory ({e})")


BuddyInfo()
PageBlocks()
Swiotlb()
DmaMappings()
