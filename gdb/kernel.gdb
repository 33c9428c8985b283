# GDB set-up for the kernel: gdb-multiarch -q -x gdb/kernel.gdb -ex 'target remote :1234' ELF
set pagination off
set confirm off
set print pretty on
set architecture aarch64
# The views of the kernel's state (buddyinfo, pageblocks, swiotlb, dma-mappings): gdb/kernel_views.py,
# found from the working directory or, failing that, from the kernel's own source paths (gdb does
# not tell a sourced script where it is).
python
import os
def _kernel_views_path():
    candidates = [os.path.join(os.getcwd(), "gdb", "kernel_views.py")]
    sym = gdb.lookup_global_symbol("kernel_main") or gdb.lookup_static_symbol("kernel_main")
    if sym is not None and sym.symtab is not None:
        # .../kernel/src/main.rs -> the repository root
        root = os.path.dirname(os.path.dirname(os.path.dirname(sym.symtab.fullname())))
        candidates.append(os.path.join(root, "gdb", "kernel_views.py"))
    return next((c for c in candidates if os.path.exists(c)), None)
_path = _kernel_views_path()
if _path:
    gdb.execute(f"source {_path}")
else:
    print("kernel.gdb: gdb/kernel_views.py not found (run gdb from the repository root): no kernel views")
end
