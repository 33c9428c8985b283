# The GDB test (run by scripts/gdb-test.sh): attach to a kernel waiting under QEMU --gdb, break in
# at the demo's kernel_main, walk it with next and step, break deeper and check the backtrace.
# Then, while the kernel reads two disks
# (demo=read-verify dma_debug=on), stop in the virtio-blk interrupt handler with bounce mappings
# live and check each view of gdb/kernel_views.py against the kernel's own counters, read here
# directly with parse_and_eval. Exit status 0 only if every check passed.
import re

import gdb

results = []
MIN_CHECKS = 20  # fewer passed checks than this means a part of the test did not run


def check(name, ok, detail=""):
    results.append(ok)
    print(f"gdb test {name} ... {'ok' if ok else 'FAILED: ' + str(detail)[:3000]}")


def frame_line():
    sal = gdb.selected_frame().find_sal()
    return (sal.symtab.filename if sal.symtab else None, sal.line)


# The kernel's statics, spelled out in gdb's Rust syntax: spin::Once keeps its value in
# data.value.value.value.0, an IrqSafeSpinLock in data.value, an atomic in v.value.
PA = "kernel::platform::mm::PAGE_ALLOCATOR.data.value.value.value.0.inner.data.value"
MANAGER = "(*kernel::platform::dma::DMA.data.value.value.value.0.manager)"
TRACKER = "kernel::platform::dma::DEBUG.table.data.value"
DISK = "kernel::platform::virtio_blk::DISKS[{}].data.value.value.value.0"
PAGEBLOCK_PAGES = 512
SLOTS_PER_PAGEBLOCK = 1024


def ev(expr):
    return int(gdb.parse_and_eval(expr))


def view(command):
    return gdb.execute(command, to_string=True)


def restricted_pool():
    """The first restricted pool, read with plain gdb.Value (the test's own path to it)."""
    table = gdb.parse_and_eval("kernel::platform::dma::RESTRICTED.data.value")
    entry = table[0]["Some"]["__0"]
    return entry["__1"].dereference()


def section(out, header_prefix):
    """The lines of one pool's block in the `swiotlb` view: its header and the indented lines."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(header_prefix):
            block = [line]
            for more in lines[i + 1:]:
                if not more.startswith(" "):
                    break
                block.append(more)
            return block
    return []


def number(pattern, text):
    m = re.search(pattern, text)
    return int(m.group(1)) if m else None


def check_buddyinfo():
    out = view("buddyinfo")
    counters = sum(ev(f"{PA}.zones[{z}].nr_free_pages[{t}]") for z in range(2) for t in range(5))
    total = number(r"total free pages: (\d+)", out)
    check("buddyinfo_total_equals_free_page_counters", total == counters and total > 0
          and "PROBLEM" not in out and "DISAGREES" not in out, f"view {total}, counters {counters}\n{out}")
    # Each row walked from the free lists against the kernel's nr_free counter of that list.
    zones = {"DMA": 0, "Normal": 1}
    types = {"Unmovable": 0, "Movable": 1, "Swiotlb": 2, "Cma": 3, "Isolate": 4}
    bad, rows = [], 0
    for m in re.finditer(r"^Node 0, zone +(\w+), type +(\w+)((?: +\d+)+)$", out, re.M):
        z, t = zones[m.group(1)], types[m.group(2)]
        *per_order, pages = [int(x) for x in m.group(3).split()]
        rows += 1
        kernel = [ev(f"{PA}.zones[{z}].free_area[{o}].nr_free[{t}]") for o in range(len(per_order))]
        if per_order != kernel or pages != sum(n << o for o, n in enumerate(per_order)):
            bad.append((m.group(1), m.group(2), per_order, kernel, pages))
    check("buddyinfo_rows_equal_nr_free_per_order", rows == 10 and not bad, bad or out)


def check_pageblocks():
    out = view("pageblocks")
    m = re.search(r"^\[([UMSsCIb.|]+)\]$", out, re.M)
    picture = m.group(1) if m else ""
    blocks = picture.replace("|", "")
    span_blocks = ev(f"{PA}.zones[1].end") // PAGEBLOCK_PAGES
    dma_end = ev(f"{PA}.zones[0].end") // PAGEBLOCK_PAGES
    boundary_ok = picture.find("|") == dma_end if 0 < dma_end < span_blocks else "|" not in picture
    check("pageblocks_one_char_per_block_of_the_zones", len(blocks) == span_blocks and boundary_ok,
          f"{len(blocks)} blocks, zones span {span_blocks}, ZONE_DMA ends at block {dma_end}\n{out}")
    lent = ev(f"{MANAGER}.blocks.counts[1].v.value")
    pool = restricted_pool()
    restricted_blocks = (int(pool["end"]) - int(pool["start"])) // (PAGEBLOCK_PAGES << 12)
    as_slots = sum(ev(f"{MANAGER}.blocks.counts[{s}].v.value") for s in (0, 3, 4))  # slots, device, unused
    lent_chars = blocks.count("S") + blocks.count("s")  # holding pages + empty
    # `s` is a wholly free lent block, `S` one holding pages: MIGRATE_SWIOTLB's free pages lie
    # between 512 per `s` and that plus 511 per `S`.
    swiotlb_free = sum(ev(f"{PA}.zones[{z}].nr_free_pages[2]") for z in range(2))
    empty, holding = blocks.count("s"), blocks.count("S")
    check("pageblocks_s_is_a_wholly_free_lent_block",
          empty * PAGEBLOCK_PAGES <= swiotlb_free <= empty * PAGEBLOCK_PAGES + holding * (PAGEBLOCK_PAGES - 1),
          f"s {empty}, S {holding}, free MIGRATE_SWIOTLB pages {swiotlb_free}\n{out}")
    check("pageblocks_S_and_b_match_the_swiotlb_manager",
          lent_chars == lent and blocks.count("b") == as_slots + restricted_blocks,
          f"S+s {lent_chars} vs lent {lent}; b {blocks.count('b')} vs {as_slots} + {restricted_blocks}\n{out}")


def check_swiotlb_default_pool():
    out = view("swiotlb")
    block = "\n".join(section(out, "default pool:"))
    used = number(r"slot states: used (\d+)", block)
    # The slot caches' parked runs read Used and are counted held (used).
    parked = number(r"\((\d+) of them parked in the slot caches\)", block)
    kernel_used = ev(f"{MANAGER}.pool.counters.used.v.value")
    check("swiotlb_default_used_and_parked_slots_equal_used_counter", used == kernel_used and used > parked,
          f"view {used} used, {parked} parked, counter {kernel_used}\n{out}")
    mappings = re.findall(r"^ +slot +\d+ tlb 0x[0-9a-f]+ size +\d+ \( *(\d+) slots\) (\w+)", block, re.M)
    live = number(r"live bounce mappings: (\d+)", block)
    check("swiotlb_default_live_mappings_cover_the_used_slots",
          live == len(mappings) and live >= 2 and sum(int(n) for n, _ in mappings) + parked == kernel_used
          and any(d == "FromDevice" for _, d in mappings), f"{mappings}\n{block}")
    lent_blocks = number(r"\]  slots \d+, lent (\d+)", out)
    check("swiotlb_lent_pageblocks_equal_manager_and_pool",
          lent_blocks == ev(f"{MANAGER}.blocks.counts[1].v.value")
          and number(r"slot states: used \d+ \(\d+ of them parked in the slot caches\), free \d+, lent (\d+)", block) == ev(f"{MANAGER}.pool.counters.lent.v.value")
          == lent_blocks * SLOTS_PER_PAGEBLOCK, out)
    check("swiotlb_says_it_reads_without_locks", "read without taking the locks" in out, out)


def check_dma_mappings(min_rows, disk_name, pool_word):
    out = view("dma-mappings")
    rows = [l for l in out.splitlines() if l.startswith("  disk") or l.startswith("  dev ")]
    count = ev(f"{TRACKER}.count")
    check(f"dma_mappings_{disk_name}_rows_equal_tracker_count",
          len(rows) == count and count >= min_rows and number(r"^(\d+) live DMA mappings", out) == count,
          f"{len(rows)} rows, tracker count {count}\n{out}")
    check(f"dma_mappings_{disk_name}_bounced_in_{pool_word.replace(' ', '_')}",
          all(disk_name in r and pool_word in r for r in rows) and "NO LIVE" not in out, out)


try:
    # `break kernel_main` stops in the demo's own main (its first line boots the machine), and
    # `next` walks it line by line instead of running the whole kernel to its exit.
    gdb.execute("break kernel_main")
    gdb.execute("continue")
    frame = gdb.selected_frame()
    check("breaks_in_the_demos_kernel_main", (frame.name() or "").endswith("kernel_main"), f"stopped in {frame.name()}")
    # (Under demo=read-verify the main is short: one `next` over the boot, one to the mode's
    # match; `step` then goes into the code it calls. The dev profile optimises (opt-level 1),
    # so a `next` may come back to a line: each must move, within kernel_main.)
    lines = [frame_line()]
    for _ in range(2):
        gdb.execute("next")
        lines.append(frame_line())
    name = gdb.selected_frame().name() or ""
    check("next_walks_kernel_main_line_by_line",
          name.endswith("kernel_main") and all(l[0] is not None and l[0].endswith("main.rs") and l[1] is not None for l in lines)
          and all(a != b for a, b in zip(lines, lines[1:])) and max(l[1] for l in lines) > lines[0][1], f"{lines} in {name}")
    before = frame_line()
    gdb.execute("step")
    after = frame_line()
    check("step_moves_with_sources", before[1] is not None and after[1] is not None and after != before
          and after[0] is not None and after[0].endswith(".rs"), f"{before} -> {after}")
    gdb.execute("delete")

    # A function two calls below kernel_main, in the kernel library (so not inlined into it).
    gdb.execute("break kernel::platform::virtio_blk::probe_all")
    gdb.execute("continue")
    bt = gdb.execute("bt", to_string=True)
    frames = [l for l in bt.splitlines() if l.startswith("#")]
    check("backtrace_reaches_kernel_main",
          bool(frames) and "probe_all" in frames[0] and any("kernel_main" in f for f in frames[1:]), bt)
    gdb.execute("delete")

    # Stop 0: a slot search, which runs under its area's lock: the view must say it read through
    # a lock that was held.
    stop0 = gdb.Breakpoint("kernel::dma::swiotlb::area::AreaSlots::alloc")
    gdb.execute("continue")
    note = [l for l in view("swiotlb").splitlines() if l.startswith("(read without taking the locks")]
    check("swiotlb_says_which_lock_was_held", len(note) == 1 and re.search(r"HELD at this stop: [^:]*area locks", note[0])
          is not None, note)
    stop0.delete()

    # Stop 1: the interrupt handler of disk0 (data buffer above the DMA window), entered for a
    # completed read whose header, data and status mappings are all still live bounces.
    stop1 = gdb.Breakpoint("kernel::platform::virtio_blk::handle_irq")
    stop1.condition = f"irq == {DISK.format(0)}.irq && {TRACKER}.count >= 3"
    gdb.execute("continue")
    check("stops_in_the_disk0_interrupt_handler", (gdb.selected_frame().name() or "").endswith("virtio_blk::handle_irq")
          and ev("boot::exception::IRQ_DEPTH[0].v.value") > 0, gdb.selected_frame().name())
    check_buddyinfo()
    check_pageblocks()
    check_swiotlb_default_pool()
    check_dma_mappings(3, "disk0", "default pool")
    stop1.delete()

    # Stop 2: inside the bounce itself, copying disk1's data back out of its restricted pool in
    # the interrupt handler (IdentityMappedRam::copy(dst x1, src x2, len x3) at its first
    # instruction, where the arguments are still in their registers).
    pool = restricted_pool()
    start, end = int(pool["start"]), int(pool["end"])
    # The name also has inlined locations (callers generic over the memory type inline it):
    # take the out-of-line function, the one whose block sits directly in the static block.
    probe = gdb.Breakpoint("kernel::platform::phys::{impl#0}::copy")
    entries = []
    for loc in probe.locations:
        block = gdb.block_for_pc(loc.address)
        while block is not None and not (block.function is not None and block.superblock.is_static):
            block = block.superblock
        if block is not None and block.function.name.endswith("::copy"):
            entries.append(block.start)
    probe.delete()
    if not entries:
        raise gdb.error("no out-of-line IdentityMappedRam::copy")
    stop2 = gdb.Breakpoint(f"*{entries[0]:#x}")
    stop2.condition = f"$x3 > 4096 && $x2 >= {start:#x} && $x2 < {end:#x} && boot::exception::IRQ_DEPTH[0].v.value > 0"
    # The timer tick's deadline check may reap a completion too (`check_timeouts` polls the used
    # ring): that copy is in interrupt context but not in the disk's handler; go on to one that is.
    for _ in range(5):
        gdb.execute("continue")
        bt = gdb.execute("bt", to_string=True)
        if "virtio_blk::handle_irq" in bt:
            break
    check("stops_in_the_disk1_bounce_copy_in_the_interrupt_handler",
          "SwiotlbPool::unmap" in bt and "virtio_blk::handle_irq" in bt, bt)
    out = view("swiotlb")
    rblock = "\n".join(section(out, "restricted pool"))
    used = number(r"slot states: used (\d+)", rblock)
    kernel_used = int(pool["counters"]["used"]["v"]["value"])
    tlb = int(gdb.parse_and_eval("$x2"))
    check("swiotlb_restricted_used_slots_equal_used_counter", used == kernel_used and used > 0,
          f"view {used}, counter {kernel_used}\n{out}")
    check("swiotlb_restricted_shows_the_mapping_being_bounced",
          re.search(rf"tlb {tlb:#x} size +\d+ \( *\d+ slots\) FromDevice +orig 0x", rblock) is not None,
          f"copying from {tlb:#x}\n{rblock}")
    # The tracker forgets a mapping before the pool copies it back: the data mapping is gone
    # from dma-mappings here, the status byte's is still there.
    check_dma_mappings(1, "disk1", "restricted pool")
except gdb.error as e:
    check("gdb_commands_run", False, str(e))

passed = sum(results)
failed = len(results) - passed
print(f"gdb: {passed} passed, {failed} failed")
try:
    gdb.execute("kill")
except gdb.error:
    pass
gdb.execute(f"quit {0 if failed == 0 and passed >= MIN_CHECKS else 1}")
