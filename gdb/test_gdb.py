# The GDB test (run by scripts/gdb-test.sh): attach to a kernel waiting under QEMU --gdb, break in
# kernel_main, step, break deeper, check the backtrace. Exit status 0 only if every check passed.
import gdb

results = []

def check(name, ok, detail=""):
    results.append(ok)
    print(f"gdb test {name} ... {'ok' if ok else 'FAILED: ' + detail}")

def frame_line():
    sal = gdb.selected_frame().find_sal()
    return (sal.symtab.filename if sal.symtab else None, sal.line)

try:
    gdb.execute("break kernel_main")
    gdb.execute("continue")
    frame = gdb.selected_frame()
    check("breaks_in_kernel_main", (frame.name() or "").endswith("kernel_main"), f"stopped in {frame.name()}")

    before = frame_line()
    gdb.execute("step")
    after = frame_line()
    name = gdb.selected_frame().name() or ""
    check("step_moves_with_sources", before[1] is not None and after[1] is not None and after != before
          and after[0] is not None and after[0].endswith(".rs"), f"{before} -> {after} in {name}")

    # A function two calls below kernel_main, in another crate (so never inlined into it).
    gdb.execute("break boot::exception::set_hooks")
    gdb.execute("continue")
    bt = gdb.execute("bt", to_string=True)
    frames = [l for l in bt.splitlines() if l.startswith("#")]
    check("backtrace_reaches_kernel_main",
          bool(frames) and "set_hooks" in frames[0] and any("kernel_start" in f for f in frames)
          and any("kernel_main" in f for f in frames), bt)
except gdb.error as e:
    check("gdb_commands_run", False, str(e))

passed = sum(results)
failed = len(results) - passed
print(f"gdb: {passed} passed, {failed} failed")
try:
    gdb.execute("kill")
except gdb.error:
    pass
gdb.execute(f"quit {0 if failed == 0 and passed >= 3 else 1}")
