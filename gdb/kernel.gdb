# GDB set-up for the kernel: gdb-multiarch -q -x gdb/kernel.gdb -ex 'target remote :1234' ELF
set pagination off
set confirm off
set print pretty on
set architecture aarch64
# The views of the kernel's state (buddyinfo, pageblocks, swiotlb, dma-mappings): gdb/kernel_views.py,
# found upwards from the kernel's own source paths (the views match the tree the ELF was built
# from), else from the working directory: gdb does not tell a sourced script where it is.
python
import os
def _kernel_views_path():
    dirs = []
    sym = gdb.lookup_static_symbol("kernel::platform::mm::PAGE_ALLOCATOR")
    if sym is not None and sym.symtab is not None:
        dirs.append(os.path.dirname(sym.symtab.fullname()))  # .../kernel/src/platform
    dirs.append(os.getcwd())
    for d in dirs:
        while True:
            path = os.path.join(d, "gdb", "kernel_views.py")
            if os.path.exists(path):
                return path
            if os.path.dirname(d) == d:
                break
            d = os.path.dirname(d)
    return None
_path = _kernel_views_path()
if _path:
    gdb.execute(f"source {_path}")
else:
    print("kernel.gdb: gdb/kernel_views.py not found (load the kernel ELF first, or run gdb from the repository): no kernel views")
end
