# GDB script (gdb-multiarch -batch -x): single-steps one direct and one bounced 4 KiB
# map+unmap of the mapping benchmark (`demo=bench-map`) and writes, per function, how many
# instructions each executed, to the JSON file named by $INSN_TRACE_OUT. Run by
# scripts/bench.sh (`insn_trace` below); `report.py` turns it into the "where the instructions
# go" table.
#
# It breaks on the benchmark's own `bench::mapping::map_unmap`, which calls `map_single` and
# `unmap_single` the way a driver does, and steps to its return: the counts include that
# caller's prologue, as a driver's would. The first calls the benchmark makes are the direct
# ones (buffer inside the DMA window); a call at another address is the bounced one, to the
# device, copying. A few calls of each are skipped so that neither is the first of its loop.
import json
import os
import re

import gdb

SKIP = 3


def pc():
    return int(gdb.parse_and_eval("$pc"))


def function_of(address):
    text = gdb.execute(f"info symbol {address:#x}", to_string=True)
    if text.startswith("No symbol"):
        return f"{address:#x}"
    return clean(text.split(" in section")[0].rsplit(" + ", 1)[0].strip())


def clean(name):
    # Rust's hash suffix and LLVM's clone suffixes say nothing to a reader.
    name = name.split(" (.llvm.")[0]
    head, _, tail = name.rpartition("::h")
    return head if len(tail) == 16 and all(c in "0123456789abcdef" for c in tail) else name


INNERMOST = {}


# Library code inlined into the kernel's (atomics, slices, options, register accessors) is
# counted to the kernel function that used it.
LIBRARIES = ("core::", "alloc::", "aarch64_cpu::", "tock_registers::", "spin::")


def innermost_of(address):
    """The innermost function of this workspace, inlined ones included, whose code is at
    `address` (from the DWARF inline records: the first named block up from the address's
    block that is not library code); the symbol's function when there is no debug
    information."""
    if address not in INNERMOST:
        name = None
        try:
            block = gdb.block_for_pc(address)
        except RuntimeError:
            block = None
        while block is not None and name is None:
            if block.function is not None and not block.function.name.startswith(LIBRARIES):
                name = block.function.name
            block = block.superblock
        INNERMOST[address] = clean(name) if name else function_of(address)
    return INNERMOST[address]


def step():
    """One instruction. QEMU 7.2's gdbstub can lose a single step over a load-acquire (LDAR*:
    the target then runs on to the next breakpoint), so those, never branches, are stepped by a
    temporary breakpoint on the next instruction instead."""
    here = pc()
    # `=> 0x.. <kernel::dma::..+8>:\tldar\tx9, [x12]`: the mnemonic follows the first colon that
    # whitespace follows (Rust paths have colons of their own).
    mnemonic = re.search(r":\s+(\S+)", gdb.execute(f"x/i {here:#x}", to_string=True))
    if mnemonic and mnemonic.group(1).startswith("ldar"):
        gdb.execute(f"tbreak *{here + 4:#x}", to_string=True)
        gdb.execute("continue", to_string=True)
    else:
        gdb.execute("stepi", to_string=True)


def trace_call():
    """Steps from a breakpoint at a function's entry to its return; counts per function."""
    ret = int(gdb.parse_and_eval("$x30"))
    sp = int(gdb.parse_and_eval("$sp"))
    counts, order, total, pcs = {}, [], 0, []
    inlined, inlined_order = {}, []
    while True:
        pcs.append(pc())
        f = function_of(pcs[-1])
        if f not in counts:
            counts[f] = 0
            order.append(f)
        counts[f] += 1
        g = innermost_of(pcs[-1])
        if g not in inlined:
            inlined[g] = 0
            inlined_order.append(g)
        inlined[g] += 1
        total += 1
        step()
        # Back in the caller, with its stack: the call returned (not a recursive re-entry).
        if pc() == ret and int(gdb.parse_and_eval("$sp")) == sp:
            break
        if total > 200_000:
            raise gdb.GdbError("insn_trace: the call did not return within 200,000 instructions")
    result = {
        "total": total,
        "functions": [[f, counts[f]] for f in order],
        # The same instructions by the innermost function their code came from, inlined ones
        # included (what the optimiser merged into `functions`' entries, taken apart again).
        "inlined": [[g, inlined[g]] for g in inlined_order],
    }
    # INSN_TRACE_PCS=1: every address stepped too, in order (for reading the trace against
    # `objdump -d`).
    if os.environ.get("INSN_TRACE_PCS"):
        result["pcs"] = [f"{a:#x}" for a in pcs]
    return result


def main():
    gdb.execute("set pagination off")
    gdb.execute("set confirm off")
    # At the entry itself (a breakpoint on the name would land after the prologue).
    symbol = gdb.lookup_static_symbol("bench::mapping::map_unmap")
    if symbol is None:
        raise gdb.GdbError("insn_trace: no bench::mapping::map_unmap in this kernel")
    entry = int(symbol.value().address)
    bp = gdb.Breakpoint(f"*{entry:#x}")
    gdb.execute(f"ignore {bp.number} {SKIP}")
    gdb.execute("continue")
    inside = int(gdb.parse_and_eval("$x2"))
    size = int(gdb.parse_and_eval("$x3"))
    result = {"size": size, "direct": trace_call()}
    bp.condition = f"$x2 != {inside:#x} && $x3 == {size}"
    gdb.execute(f"ignore {bp.number} {SKIP}")
    gdb.execute("continue")
    result["bounced"] = trace_call()
    with open(os.environ["INSN_TRACE_OUT"], "w") as f:
        json.dump(result, f, indent=1)
    gdb.execute("kill")


try:
    main()
except Exception as e:  # a batch gdb would otherwise go on and hang on the running target
    print(f"insn_trace: {e}")
    gdb.execute("kill")
gdb.execute("quit")
