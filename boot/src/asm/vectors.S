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

.macro VECTOR kind
.balign 0x80
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
    VECTOR 4
    VECTOR 5
    VECTOR 6
    VECTOR 7
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
