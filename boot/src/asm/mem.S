// memcpy and memset for the kernel (Linux: arch/arm64/lib/memcpy.S, memset.S).
//
// The compiler calls these for every copy and fill it does not inline: the SWIOTLB bounce copies,
// page migration, scrubbing, struct moves. The generic versions in compiler_builtins move 8
// bytes per loop iteration (and one byte at a time when source and destination are not equally
// aligned); these move 64 bytes per iteration with 16-byte vector loads and stores, at any
// alignment (RAM is Normal memory and SCTLR_EL1.A is clear, so unaligned accesses are fine).
// The symbols are strong; compiler_builtins' are weak, so these win at link time.
//
// Short sizes copy from both ends with accesses that may overlap in the middle, so there is no
// byte loop anywhere. Exceptions save the vector registers (vectors.S), so using them here is
// safe in any context.

.section .text.memcpy, "ax"
.balign 64
.global memcpy
.type memcpy, %function
// void *memcpy(void *dst, const void *src, size_t n): dst and src must not overlap.
// x0 dst (returned unchanged), x1 src, x2 n; x3 dst cursor, x4 src end, x5 dst end.
memcpy:
    add     x4, x1, x2
    add     x5, x0, x2
    cmp     x2, #64
    b.hi    .Lcpy_long
    cmp     x2, #32
    b.hi    .Lcpy_33_64
    cmp     x2, #16
    b.hs    .Lcpy_16_32
    cmp     x2, #8
    b.hs    .Lcpy_8_15
    cmp     x2, #4
    b.hs    .Lcpy_4_7
    cbz     x2, .Lcpy_ret
    // 1..3 bytes: the first, the middle and the last.
    lsr     x3, x2, #1
    ldrb    w6, [x1]
    ldrb    w7, [x1, x3]
    ldrb    w8, [x4, #-1]
    strb    w6, [x0]
    strb    w7, [x0, x3]
    strb    w8, [x5, #-1]
.Lcpy_ret:
    ret
.Lcpy_4_7:
    ldr     w6, [x1]
    ldr     w7, [x4, #-4]
    str     w6, [x0]
    str     w7, [x5, #-4]
    ret
.Lcpy_8_15:
    ldr     x6, [x1]
    ldr     x7, [x4, #-8]
    str     x6, [x0]
    str     x7, [x5, #-8]
    ret
.Lcpy_16_32:
    ldr     q0, [x1]
    ldr     q1, [x4, #-16]
    str     q0, [x0]
    str     q1, [x5, #-16]
    ret
.Lcpy_33_64:
    ldp     q0, q1, [x1]
    ldp     q2, q3, [x4, #-32]
    stp     q0, q1, [x0]
    stp     q2, q3, [x5, #-32]
    ret
.Lcpy_long:
    // n > 64: 64-byte blocks from the start while more than 64 bytes are left after the block
    // just copied, then the last 64 bytes, ending exactly at the end (overlapping the previous
    // block is harmless: source and destination do not overlap).
    mov     x3, x0
    sub     x2, x2, #64
1:  ldp     q0, q1, [x1]
    ldp     q2, q3, [x1, #32]
    add     x1, x1, #64
    stp     q0, q1, [x3]
    stp     q2, q3, [x3, #32]
    add     x3, x3, #64
    subs    x2, x2, #64
    b.hi    1b
    ldp     q0, q1, [x4, #-64]
    ldp     q2, q3, [x4, #-32]
    stp     q0, q1, [x5, #-64]
    stp     q2, q3, [x5, #-32]
    ret
.size memcpy, . - memcpy

.section .text.memset, "ax"
.balign 64
.global memset
.type memset, %function
// void *memset(void *dst, int c, size_t n): the same shape as memcpy, storing v0 (c in every
// byte). x0 dst (returned unchanged), w1 c, x2 n; x3 cursor, x5 end.
memset:
    dup     v0.16b, w1
    add     x5, x0, x2
    cmp     x2, #64
    b.hi    .Lset_long
    cmp     x2, #32
    b.hi    .Lset_33_64
    cmp     x2, #16
    b.hs    .Lset_16_32
    fmov    x6, d0
    cmp     x2, #8
    b.hs    .Lset_8_15
    cmp     x2, #4
    b.hs    .Lset_4_7
    cbz     x2, .Lset_ret
    lsr     x3, x2, #1
    strb    w6, [x0]
    strb    w6, [x0, x3]
    strb    w6, [x5, #-1]
.Lset_ret:
    ret
.Lset_4_7:
    str     w6, [x0]
    str     w6, [x5, #-4]
    ret
.Lset_8_15:
    str     x6, [x0]
    str     x6, [x5, #-8]
    ret
.Lset_16_32:
    str     q0, [x0]
    str     q0, [x5, #-16]
    ret
.Lset_33_64:
    stp     q0, q0, [x0]
    stp     q0, q0, [x5, #-32]
    ret
.Lset_long:
    mov     x3, x0
    sub     x2, x2, #64
1:  stp     q0, q0, [x3]
    stp     q0, q0, [x3, #32]
    add     x3, x3, #64
    subs    x2, x2, #64
    b.hi    1b
    stp     q0, q0, [x5, #-64]
    stp     q0, q0, [x5, #-32]
    ret
.size memset, . - memset
