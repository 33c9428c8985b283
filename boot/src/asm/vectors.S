// Exception vector table (Arm ARM D1.10.2): 16 entries of 0x80 bytes, VBAR_EL1 2 KiB aligned.
// Each entry saves x0/x1, loads its kind into x1 and jumps to the common code, which saves the
// rest of the trap frame (boot/src/exception.rs: TrapFrame), then the FP/SIMD state, calls
// boot_handle_exception(frame, kind), restores everything (ELR may have been changed by the
// handler) and returns with eret.
//
// The FP/SIMD state is saved because the handlers are Rust compiled for aarch64-unknown-none,
// which uses the vector registers for copies and zeroing: an interrupt may come between any two
// instructions of the interrupted code, so it must find v0-v31, FPSR and FPCR as it left them.
// (Linux builds the kernel with -mgeneral-regs-only instead; the Rust target cannot.) All 32
// registers are saved, not only the caller-saved ones: AAPCS64 preserves only the low 64 bits
// of v8-v15 across a call.

.equ FRAME_SIZE, 36 * 8
.equ FPSIMD_SIZE, 32 * 16 + 16
// boot/src/smp.rs: each CPU's stack area is a guard page then the stack (linker.ld).
.equ STACK_GUARD, 4096
.equ OVERFLOW_STACK_SHIFT, 13           // 8 KiB emergency stack per CPU (OVERFLOW_STACKS)
.equ KIND_STACK_OVERFLOW, 16            // boot_handle_exception: a kernel stack overflowed

.macro VECTOR kind
.balign 0x80
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #0]
    mov     x1, #\kind
    b       exception_common
.endm

// An exception taken on the kernel's own stack (SP_ELx): before anything is pushed, check that
// the frames this entry pushes fit above the bottom of this CPU's stack (Linux: the VMAP_STACK
// check in kernel_ventry). If not, the stack has overflowed into its guard page, and pushing
// would fault again, without end: go to stack_overflow, which switches to this CPU's emergency
// stack. No memory is touched before the check: x0 and x1 wait in TPIDRRO_EL0 and SP_EL0
// (neither is used: nothing runs at EL0, and the kernel runs on SP_EL1); exceptions are masked
// on entry, so nothing else can use them meanwhile.
.macro VECTOR_SPX kind
.balign 0x80
    msr     tpidrro_el0, x0
    msr     sp_el0, x1
    mrs     x1, tpidr_el1               // this CPU's index (boot/src/smp.rs: cpu_id)
    add     x1, x1, x1, lsl #4          // x 17
    lsl     x1, x1, #12                 // x (STACK_GUARD + STACK_SIZE) = x 0x11000
    mov     x0, sp
    sub     x0, x0, x1
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    sub     x0, x0, x1                  // SP's offset in this CPU's guard page + stack
    sub     x0, x0, #(FRAME_SIZE + FPSIMD_SIZE + 16)
    cmp     x0, #STACK_GUARD            // what we push would reach the guard page?
    mrs     x1, sp_el0
    mrs     x0, tpidrro_el0
    b.lo    stack_overflow
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #0]
    mov     x1, #\kind
    b       exception_common
.endm

.section .text.vectors, "ax"
.balign 0x800
.global exception_vectors
exception_vectors:
    // Current EL with SP_EL0
    VECTOR 0
    VECTOR 1
    VECTOR 2
    VECTOR 3
    // Current EL with SP_ELx
    VECTOR_SPX 4
    VECTOR_SPX 5
    VECTOR_SPX 6
    VECTOR_SPX 7
    // Lower EL, AArch64
    VECTOR 8
    VECTOR 9
    VECTOR 10
    VECTOR 11
    // Lower EL, AArch32
    VECTOR 12
    VECTOR 13
    VECTOR 14
    VECTOR 15

// The kernel stack overflowed (x0, x1 as interrupted; SP in or near the guard page). Keep the
// overflowed SP in SP_EL0 for the report, move to this CPU's emergency stack, and report it
// through the common path as kind KIND_STACK_OVERFLOW (the ESR, ELR and FAR still describe the
// exception that found the stack full). The report stops the machine: nothing returns here.
stack_overflow:
    msr     tpidrro_el0, x0
    mov     x0, sp
    msr     sp_el0, x0
    mrs     x0, tpidr_el1
    add     x0, x0, #1
    lsl     x0, x0, #OVERFLOW_STACK_SHIFT
    mov     sp, x0                      // (cpu + 1) x 8 KiB ...
    adrp    x0, OVERFLOW_STACKS
    add     x0, x0, :lo12:OVERFLOW_STACKS
    add     sp, sp, x0                  // ... above the emergency stacks' base: this CPU's top
    mrs     x0, tpidrro_el0
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #0]
    mov     x1, #KIND_STACK_OVERFLOW
    b       exception_common

exception_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x2, elr_el1
    stp     x30, x2, [sp, #240]
    mrs     x2, spsr_el1
    mrs     x3, esr_el1
    stp     x2, x3, [sp, #256]
    mrs     x2, far_el1
    add     x3, sp, #FRAME_SIZE         // the interrupted SP
    stp     x2, x3, [sp, #272]

    mov     x0, sp
    sub     sp, sp, #FPSIMD_SIZE
    stp     q0, q1, [sp, #16]
    stp     q2, q3, [sp, #48]
    stp     q4, q5, [sp, #80]
    stp     q6, q7, [sp, #112]
    stp     q8, q9, [sp, #144]
    stp     q10, q11, [sp, #176]
    stp     q12, q13, [sp, #208]
    stp     q14, q15, [sp, #240]
    stp     q16, q17, [sp, #272]
    stp     q18, q19, [sp, #304]
    stp     q20, q21, [sp, #336]
    stp     q22, q23, [sp, #368]
    stp     q24, q25, [sp, #400]
    stp     q26, q27, [sp, #432]
    stp     q28, q29, [sp, #464]
    stp     q30, q31, [sp, #496]
    mrs     x2, fpsr
    mrs     x3, fpcr
    stp     x2, x3, [sp, #0]
    // A frame record so that backtraces walk through the exception into the interrupted code.
    ldr     x2, [x0, #248]
    stp     x29, x2, [sp, #-16]!
    mov     x29, sp
    bl      boot_handle_exception
    add     sp, sp, #16
    ldp     x2, x3, [sp, #0]
    msr     fpsr, x2
    msr     fpcr, x3
    ldp     q0, q1, [sp, #16]
    ldp     q2, q3, [sp, #48]
    ldp     q4, q5, [sp, #80]
    ldp     q6, q7, [sp, #112]
    ldp     q8, q9, [sp, #144]
    ldp     q10, q11, [sp, #176]
    ldp     q12, q13, [sp, #208]
    ldp     q14, q15, [sp, #240]
    ldp     q16, q17, [sp, #272]
    ldp     q18, q19, [sp, #304]
    ldp     q20, q21, [sp, #336]
    ldp     q22, q23, [sp, #368]
    ldp     q24, q25, [sp, #400]
    ldp     q26, q27, [sp, #432]
    ldp     q28, q29, [sp, #464]
    ldp     q30, q31, [sp, #496]
    add     sp, sp, #FPSIMD_SIZE

    ldp     x2, x3, [sp, #256]
    msr     spsr_el1, x2
    ldr     x2, [sp, #248]
    msr     elr_el1, x2
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    add     sp, sp, #FRAME_SIZE
    eret
