# GDB set-up for the kernel: gdb-multiarch -q -x gdb/kernel.gdb -ex 'target remote :1234' ELF
set pagination off
set confirm off
set print pretty on
set architecture aarch64
