// Kernel entry (Arm ARM D1: exception levels; Linux: arch/arm64/kernel/head.S).
//
// x0 holds the DTB address from the loader, or 0 (QEMU with an ELF kernel). We keep it in x19,
// drop to EL1 if entered at EL2, turn on FP/SIMD (Rust code uses the SIMD registers), set up the
// stack, zero BSS, install the vectors, switch on the early MMU map, and call kernel_main(x0).

// Dropping from EL2 to EL1 (the same for every CPU, which all enter at the same EL): EL1 runs
// AArch64 with no traps to EL2, may use the counters and FP/SIMD, and (GICv3) the GIC's system
// registers. Continues at `target` at EL1 with D, A, I, F masked. Uses x1, x2.
.macro el2_to_el1 target
    // ---- EL2 -> EL1 ----
    mov     x1, #(1 << 31)              // HCR_EL2.RW: EL1 is AArch64; no traps to EL2
    msr     hcr_el2, x1
    mov     x1, #3                      // CNTHCTL_EL2.EL1PCTEN | EL1PCEN: EL1 may use the counters
    msr     cnthctl_el2, x1
    msr     cntvoff_el2, xzr            // virtual counter == physical counter
    mov     x1, #0x33ff                 // CPTR_EL2: RES1 bits only, TFP = 0 (no FP/SIMD trap)
    msr     cptr_el2, x1
    mrs     x1, id_aa64pfr0_el1         // GICv3 system registers present?
    ubfx    x1, x1, #24, #4
    cbz     x1, 1f
    mrs     x1, S3_4_C12_C9_5           // ICC_SRE_EL2
    mov     x2, #0x9                    // SRE | Enable: EL1 may use the GIC system registers
    orr     x1, x1, x2
    msr     S3_4_C12_C9_5, x1
    isb
1:  ldr     x1, =0x30d00800             // SCTLR_EL1 RES1 bits; MMU and caches off
    msr     sctlr_el1, x1
    mov     x1, #0x3c5                  // SPSR_EL2: EL1h with D, A, I, F masked
    msr     spsr_el2, x1
    adr     x1, \target
    msr     elr_el2, x1
    eret

.endm

.section .data
.balign 8
.global boot_entry_el
boot_entry_el:
    .quad 0

.section .text.boot, "ax"
.global _start
_start:
    mov     x19, x0

    mrs     x1, CurrentEL
    ubfx    x1, x1, #2, #2
    adrp    x2, boot_entry_el           // for the boot log (the .data copy survives BSS zeroing)
    str     x1, [x2, :lo12:boot_entry_el]
    cmp     x1, #2
    b.ne    .Lat_el1

    el2_to_el1 .Lat_el1

.Lat_el1:
    mov     x1, #(3 << 20)              // CPACR_EL1.FPEN = 0b11: no FP/SIMD trap at EL1/EL0
    msr     cpacr_el1, x1
    isb

    adrp    x1, __stack_top
    add     x1, x1, :lo12:__stack_top
    mov     sp, x1
    msr     tpidr_el1, xzr              // this is CPU 0 (boot/src/smp.rs: cpu_id)

    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
2:  cmp     x1, x2
    b.hs    3f
    stp     xzr, xzr, [x1], #16
    b       2b
3:
    adrp    x1, exception_vectors
    add     x1, x1, :lo12:exception_vectors
    msr     vbar_el1, x1
    isb

    mov     x0, x19
    bl      boot_early_mmu_enable       // boot/src/early_mmu.rs
    mov     x0, x19
    mov     x29, xzr                    // end of the frame-pointer chain for backtraces
    mov     x30, xzr
    bl      kernel_main                 // never returns
4:  wfe
    b       4b

// A secondary CPU's entry (Linux: secondary_entry / secondary_startup in head.S), where PSCI
// CPU_ON starts it: MMU and caches off, at the EL the boot CPU was entered at, x0 = the context
// id = the address of a SecondaryBootData (boot/src/smp.rs), which the boot CPU cleaned to the
// point of coherency. The CPU drops to EL1, switches on the MMU with the boot CPU's final page
// table and translation registers, takes its own stack, records its CPU index in TPIDR_EL1,
// installs the vectors and calls the kernel's entry (secondary_start_kernel) with its index.
.equ SBD_STACK_TOP, 0
.equ SBD_CPU, 8
.equ SBD_TTBR0, 16
.equ SBD_MAIR, 24
.equ SBD_TCR, 32
.equ SBD_SCTLR, 40
.equ SBD_ENTRY, 48

.section .text.boot, "ax"
.global secondary_entry
secondary_entry:
    mov     x19, x0
    mrs     x1, CurrentEL
    ubfx    x1, x1, #2, #2
    cmp     x1, #2
    b.ne    .Lsecondary_at_el1
    el2_to_el1 .Lsecondary_at_el1

.Lsecondary_at_el1:
    mov     x1, #(3 << 20)              // CPACR_EL1.FPEN: no FP/SIMD trap
    msr     cpacr_el1, x1
    ldr     x1, [x19, #SBD_MAIR]
    msr     mair_el1, x1
    ldr     x1, [x19, #SBD_TCR]
    msr     tcr_el1, x1
    ldr     x1, [x19, #SBD_TTBR0]
    msr     ttbr0_el1, x1
    isb
    tlbi    vmalle1                     // nothing cached from before us may be used
    dsb     nsh
    isb
    ldr     x1, [x19, #SBD_SCTLR]       // MMU and caches on, as on the boot CPU
    msr     sctlr_el1, x1
    isb
    ldr     x1, [x19, #SBD_STACK_TOP]
    mov     sp, x1
    ldr     x0, [x19, #SBD_CPU]
    msr     tpidr_el1, x0
    adrp    x1, exception_vectors
    add     x1, x1, :lo12:exception_vectors
    msr     vbar_el1, x1
    isb
    ldr     x2, [x19, #SBD_ENTRY]
    mov     x29, xzr
    mov     x30, xzr
    blr     x2                          // never returns
5:  wfe
    b       5b
