// SPDX-License-Identifier: GPL-2.0

//! The privileged x86 instructions rvmx needs, each wrapped once.
//!
//! The kernel crate has no wrappers for control registers, debug registers, descriptor tables,
//! XSAVE or VMX instructions; these are the module's only `asm!` blocks (the VM entry stub,
//! vmx/entry.rs, is assembly of its own).

use core::arch::asm;

use crate::host::helpers;

/// Executes CPUID for `leaf` (subleaf 0) and returns `[eax, ebx, ecx, edx]`.
pub(crate) fn cpuid(leaf: u32) -> [u32; 4] {
    cpuid_count(leaf, 0)
}

/// Executes CPUID for `leaf` and `subleaf`.
pub(crate) fn cpuid_count(leaf: u32, subleaf: u32) -> [u32; 4] {
    let (eax, ebx, ecx, edx);
    // SAFETY: CPUID only reads processor identification into registers. LLVM reserves rbx, so
    // it is saved in a scratch register and restored by the `xchg`.
    unsafe {
        asm!(
            "mov {b:r}, rbx",
            "cpuid",
            "xchg {b:r}, rbx",
            b = out(reg) ebx,
            inout("eax") leaf => eax,
            inout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nomem, nostack, preserves_flags),
        );
    }
    [eax, ebx, ecx, edx]
}

/// Reads CR0.
pub(crate) fn read_cr0() -> u64 {
    let v;
    // SAFETY: rvmx runs in ring 0, where reading CR0 has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads CR4 from the hardware (not the kernel's per-CPU shadow).
pub(crate) fn read_cr4() -> u64 {
    let v;
    // SAFETY: rvmx runs in ring 0, where reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes CR4.
///
/// # Safety
///
/// Interrupts must be off (the kernel rewrites CR4 from its shadow in interrupt context), and
/// `value` must differ from the current CR4 only in bits the caller owns (CR4.VMXE for rvmx).
pub(crate) unsafe fn write_cr4(value: u64) {
    // SAFETY: the caller guarantees the value is one the kernel's state accepts.
    unsafe { asm!("mov cr4, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Enters VMX operation with the VMXON region at physical address `region`. Returns `false` if
/// the processor refused (VMfailInvalid or VMfailValid).
///
/// # Safety
///
/// Interrupts must be off, CR4.VMXE set, CR0/CR4 within the VMX fixed bits, and `region` a
/// 4 KiB-aligned page owned by this CPU that holds the VMCS revision identifier.
pub(crate) unsafe fn vmxon(region: u64) -> bool {
    let failed: u8;
    // SAFETY: the caller guarantees VMXON's preconditions; the operand is a pointer to a u64
    // that lives on this stack frame for the duration of the instruction.
    unsafe {
        asm!(
            "vmxon [{pa}]",
            "setna {f}",
            pa = in(reg) &region,
            f = out(reg_byte) failed,
            options(nostack),
        );
    }
    failed == 0
}

/// Leaves VMX operation.
///
/// # Safety
///
/// The CPU must be in VMX root operation entered by [`vmxon`], with interrupts off and no
/// current VMCS still needed (it is dropped from the processor's cache).
pub(crate) unsafe fn vmxoff() {
    // SAFETY: the caller guarantees the CPU is in VMX root operation.
    unsafe { asm!("vmxoff", options(nostack)) };
}

/// Reads MSR `msr` on CPU `cpu`; `None` if the read faults. May sleep (it is a cross-CPU call
/// unless `cpu` is the current CPU), so it is for set-up paths, never inside a VMX window.
pub(crate) fn rdmsr_on_cpu(cpu: u32, msr: u32) -> Option<u64> {
    let mut value = 0u64;
    // SAFETY: `value` is a valid, writable u64 for the duration of the call; the kernel
    // catches a #GP from an absent MSR and returns an error instead.
    let r = unsafe { kernel::bindings::rdmsrq_safe_on_cpu(cpu, msr, &mut value) };
    (r == 0).then_some(value)
}

/// Reads MSR `msr` on this CPU; `None` if it does not exist (the read's #GP is caught).
pub(crate) fn rdmsr_safe(msr: u32) -> Option<u64> {
    let mut v = 0;
    // SAFETY: `v` is a valid u64; the kernel's `_safe` accessor catches the #GP of an absent MSR.
    (unsafe { helpers::rvmx_rdmsr_safe(msr, &mut v) } == 0).then_some(v)
}

/// Reads CR3.
pub(crate) fn read_cr3() -> u64 {
    let v;
    // SAFETY: rvmx runs in ring 0, where reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads an architectural MSR that every VMX-capable x86_64 CPU has (EFER, PAT, FS/GS base,
/// SYSENTER). Not for optional MSRs: those go through [`rdmsr_on_cpu`], which catches #GP.
pub(crate) fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: callers pass only MSRs that exist on every CPU rvmx loads on.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (hi as u64) << 32 | lo as u64
}

/// The TSC frequency the kernel measured, in kHz (1 GHz if it did not).
pub(crate) fn tsc_khz() -> u32 {
    // SAFETY: `tsc_khz` is set once at boot and only read afterwards.
    match unsafe { kernel::bindings::tsc_khz } {
        0 => 1_000_000,
        k => k,
    }
}

/// Reads CR2 (the guest's, right after a VM exit: VMX does not switch it).
pub(crate) fn read_cr2() -> u64 {
    let v;
    // SAFETY: reading CR2 in ring 0 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes CR2.
///
/// # Safety
///
/// Interrupts must be off (a host page fault would overwrite it anyway): used only to load the
/// guest's CR2 right before VM entry.
pub(crate) unsafe fn write_cr2(value: u64) {
    // SAFETY: CR2 is a plain register; the caller owns its value until the VM entry.
    unsafe { asm!("mov cr2, {}", in(reg) value, options(nomem, nostack, preserves_flags)) };
}

/// Reads the TSC (not serialising: for statistics, where a few cycles of skew do not matter).
pub(crate) fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC only reads the time-stamp counter (CR4.TSD does not restrict ring 0).
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (hi as u64) << 32 | lo as u64
}

/// Runs the host's machine-check handler for a #MC that hit the guest (or its VM entry), as
/// KVM's `kvm_machine_check` does. Interrupts off.
pub(crate) fn machine_check() {
    // SAFETY: `do_machine_check` is the kernel's #MC handler, built for this context (KVM
    // calls it the same way with interrupts off after a VM exit); host/helpers.c passes it a
    // pt_regs of its own.
    unsafe { helpers::rvmx_machine_check() };
}

/// Whether the host kernel delivers events with FRED (Linux 7.3 turns it on where the CPU
/// has it).
pub(crate) fn host_uses_fred() -> bool {
    // SAFETY: reads a boot-time CPU feature bit.
    unsafe { helpers::rvmx_host_uses_fred() }
}

/// Writes `value` to MSR `msr` on this CPU.
///
/// # Safety
///
/// The MSR exists on this CPU (a missing one #GPs in the kernel), and writing `value` leaves
/// the host in a state it expects: a command (IBPB, L1D flush), or a value the caller puts
/// back (IA32_DEBUGCTL) before interrupts are on.
pub(crate) unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR and the value; the helper is the kernel's wrmsrq.
    unsafe { helpers::rvmx_wrmsr(msr, value) }
}

// --- Debug registers ---

/// Reads debug register DR`n` (0-3, 6; any other `n` reads DR7).
pub(crate) fn read_dr(n: u8) -> u64 {
    let v: u64;
    // SAFETY: reading a debug register in ring 0 has no side effects.
    unsafe {
        match n {
            0 => asm!("mov {}, dr0", out(reg) v, options(nomem, nostack, preserves_flags)),
            1 => asm!("mov {}, dr1", out(reg) v, options(nomem, nostack, preserves_flags)),
            2 => asm!("mov {}, dr2", out(reg) v, options(nomem, nostack, preserves_flags)),
            3 => asm!("mov {}, dr3", out(reg) v, options(nomem, nostack, preserves_flags)),
            6 => asm!("mov {}, dr6", out(reg) v, options(nomem, nostack, preserves_flags)),
            _ => asm!("mov {}, dr7", out(reg) v, options(nomem, nostack, preserves_flags)),
        }
    }
    v
}

/// Writes debug register DR`n` (0-3, 6; any other `n` writes DR7).
///
/// # Safety
///
/// Interrupts off, and the host's value is put back before they are on again (the host's
/// hardware breakpoints and watchpoints live there).
pub(crate) unsafe fn write_dr(n: u8, v: u64) {
    // SAFETY: the caller restores the host's value before the host can use it.
    unsafe {
        match n {
            0 => asm!("mov dr0, {}", in(reg) v, options(nomem, nostack, preserves_flags)),
            1 => asm!("mov dr1, {}", in(reg) v, options(nomem, nostack, preserves_flags)),
            2 => asm!("mov dr2, {}", in(reg) v, options(nomem, nostack, preserves_flags)),
            3 => asm!("mov dr3, {}", in(reg) v, options(nomem, nostack, preserves_flags)),
            6 => asm!("mov dr6, {}", in(reg) v, options(nomem, nostack, preserves_flags)),
            _ => asm!("mov dr7, {}", in(reg) v, options(nomem, nostack, preserves_flags)),
        }
    }
}

// --- FPU and extended state ---

/// Reads XCR0.
///
/// # Safety
///
/// CR4.OSXSAVE is set (else XGETBV is #UD).
pub(crate) unsafe fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees CR4.OSXSAVE; XGETBV only reads XCR0.
    unsafe { asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (hi as u64) << 32 | lo as u64
}

/// Writes XCR0.
///
/// # Safety
///
/// Interrupts off and inside `kernel_fpu_begin`; `v` is valid for this CPU (a subset of the
/// host's XCR0 with x87 set), and the host's XCR0 is put back before any host code uses it.
pub(crate) unsafe fn xsetbv0(v: u64) {
    // SAFETY: the caller guarantees the value and the restore.
    unsafe { asm!("xsetbv", in("ecx") 0, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nomem, nostack)) };
}

/// FXSAVE64 into the 512-byte area at `area`.
///
/// # Safety
///
/// `area` is 512 writable bytes, 16-byte aligned; the FPU may be used (`kernel_fpu_begin`).
pub(crate) unsafe fn fxsave64(area: *mut u8) {
    // SAFETY: the caller guarantees the area and FPU use.
    unsafe { asm!("fxsave64 [{}]", in(reg) area, options(nostack)) };
}

/// FXRSTOR64 from the 512-byte area at `area`.
///
/// # Safety
///
/// As [`fxsave64`], and the image's MXCSR has no reserved bit set (else #GP).
pub(crate) unsafe fn fxrstor64(area: *const u8) {
    // SAFETY: the caller guarantees the area, its MXCSR and FPU use.
    unsafe { asm!("fxrstor64 [{}]", in(reg) area, options(nostack)) };
}

/// XSAVE64 of the components in `rfbm` into the standard-format area at `area`.
///
/// # Safety
///
/// `area` is writable and 64-byte aligned, large enough for XCR0's components; `rfbm` is
/// within the current XCR0; the FPU may be used.
pub(crate) unsafe fn xsave64(area: *mut u8, rfbm: u64) {
    // SAFETY: the caller guarantees the area, the mask and FPU use.
    unsafe {
        asm!("xsave64 [{}]", in(reg) area, in("eax") rfbm as u32, in("edx") (rfbm >> 32) as u32, options(nostack))
    };
}

/// XRSTOR64 of the components in `rfbm` from the standard-format area at `area`.
///
/// # Safety
///
/// As [`xsave64`], and the image's header and MXCSR are loadable (else #GP).
pub(crate) unsafe fn xrstor64(area: *const u8, rfbm: u64) {
    // SAFETY: the caller guarantees the area, its contents, the mask and FPU use.
    unsafe {
        asm!("xrstor64 [{}]", in(reg) area, in("eax") rfbm as u32, in("edx") (rfbm >> 32) as u32, options(nostack))
    };
}

// --- Descriptor tables and segments ---

/// Operand of SGDT/SIDT/LGDT/LIDT.
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
pub(crate) struct DescPtr {
    pub(crate) limit: u16,
    pub(crate) base: u64,
}

/// The GDTR.
pub(crate) fn sgdt() -> DescPtr {
    let mut d = DescPtr::default();
    // SAFETY: SGDT stores 10 bytes into `d`.
    unsafe { asm!("sgdt [{}]", in(reg) &mut d, options(nostack, preserves_flags)) };
    d
}

/// The IDTR.
pub(crate) fn sidt() -> DescPtr {
    let mut d = DescPtr::default();
    // SAFETY: SIDT stores 10 bytes into `d`.
    unsafe { asm!("sidt [{}]", in(reg) &mut d, options(nostack, preserves_flags)) };
    d
}

/// The LDTR selector.
pub(crate) fn sldt() -> u16 {
    let v: u16;
    // SAFETY: SLDT only reads a register.
    unsafe { asm!("sldt {0:x}", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// The task register's selector.
pub(crate) fn str() -> u16 {
    let v: u16;
    // SAFETY: STR only reads a register.
    unsafe { asm!("str {0:x}", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// A segment register.
#[derive(Clone, Copy)]
pub(crate) enum Seg {
    Cs,
    Ss,
    Ds,
    Es,
    Fs,
    Gs,
}

/// The selector in segment register `s`.
pub(crate) fn selector(s: Seg) -> u16 {
    let v: u16;
    // SAFETY: reading a segment selector has no side effects.
    unsafe {
        match s {
            Seg::Cs => asm!("mov {0:x}, cs", out(reg) v, options(nomem, nostack, preserves_flags)),
            Seg::Ss => asm!("mov {0:x}, ss", out(reg) v, options(nomem, nostack, preserves_flags)),
            Seg::Ds => asm!("mov {0:x}, ds", out(reg) v, options(nomem, nostack, preserves_flags)),
            Seg::Es => asm!("mov {0:x}, es", out(reg) v, options(nomem, nostack, preserves_flags)),
            Seg::Fs => asm!("mov {0:x}, fs", out(reg) v, options(nomem, nostack, preserves_flags)),
            Seg::Gs => asm!("mov {0:x}, gs", out(reg) v, options(nomem, nostack, preserves_flags)),
        }
    }
    v
}

/// Loads the GDTR, IDTR, LDTR, DS and ES a VM exit changed back to the host's values.
///
/// # Safety
///
/// Interrupts off; the values are the ones saved on this CPU at the start of the window (by
/// [`sgdt`], [`sidt`], [`sldt`], [`selector`]), so the tables and selectors are the live ones.
pub(crate) unsafe fn load_host_tables(gdt: &DescPtr, idt: &DescPtr, ldt: u16, ds: u16, es: u16) {
    // SAFETY: the caller guarantees the values are this CPU's own, saved before the exits.
    unsafe {
        asm!("lgdt [{}]", in(reg) gdt, options(nostack, preserves_flags));
        asm!("lidt [{}]", in(reg) idt, options(nostack, preserves_flags));
        asm!("lldt {0:x}", in(reg) ldt, options(nostack, preserves_flags));
        asm!("mov ds, {0:x}", in(reg) ds, options(nostack, preserves_flags));
        asm!("mov es, {0:x}", in(reg) es, options(nostack, preserves_flags));
    }
}

// --- VMX instructions (VMXON and VMXOFF are above) ---

/// Whether a VMX instruction failed (CF or ZF set: VMfailInvalid or VMfailValid).
macro_rules! vmx_failed {
    ($insn:literal, $($operands:tt)*) => {{
        let failed: u8;
        // SAFETY: the calling function's contract; the instruction only touches the operands.
        unsafe { asm!(concat!($insn, "\n", "setna {failed}"), $($operands)*, failed = out(reg_byte) failed, options(nostack)) };
        failed != 0
    }};
}

/// VMPTRLD: makes the VMCS at physical address `pa` current. Returns `false` if refused.
///
/// # Safety
///
/// In VMX operation; `pa` is a VMCS region owned by the caller, holding the revision id, not
/// current on another CPU.
pub(crate) unsafe fn vmptrld(pa: u64) -> bool {
    !vmx_failed!("vmptrld [{pa}]", pa = in(reg) &pa)
}

/// VMCLEAR: writes the VMCS at `pa` back to memory and makes it not current. Returns `false`
/// if refused.
///
/// # Safety
///
/// In VMX operation; `pa` is a VMCS region owned by the caller.
pub(crate) unsafe fn vmclear(pa: u64) -> bool {
    !vmx_failed!("vmclear [{pa}]", pa = in(reg) &pa)
}

/// VMREAD of field `encoding` of the current VMCS (0 if the field does not exist).
///
/// # Safety
///
/// A VMCS is current on this CPU.
pub(crate) unsafe fn vmread(encoding: u64) -> u64 {
    let value: u64;
    // SAFETY: the caller guarantees a current VMCS; VMREAD only reads it. An unsupported
    // field fails the instruction and leaves the cleared register.
    unsafe { asm!("xor {v:e}, {v:e}", "vmread {v}, {f}", f = in(reg) encoding, v = out(reg) value, options(nostack)) };
    value
}

/// VMWRITE of `value` to field `encoding` of the current VMCS. Returns `false` if the
/// processor refused (unsupported field, read-only field, reserved bits).
///
/// # Safety
///
/// A VMCS is current on this CPU, and the value is one the caller means the guest or the
/// host to have (the processor checks the rest at VM entry).
pub(crate) unsafe fn vmwrite(encoding: u64, value: u64) -> bool {
    !vmx_failed!("vmwrite {enc}, {v}", enc = in(reg) encoding, v = in(reg) value)
}

/// INVEPT of type `kind` (1 single-context, 2 global) for `eptp`.
///
/// # Safety
///
/// In VMX operation, and the processor supports that INVEPT type.
pub(crate) unsafe fn invept(kind: u64, eptp: u64) {
    let descriptor = [eptp, 0u64];
    // SAFETY: the caller guarantees VMX operation and the type; the descriptor is 16 readable
    // bytes on this stack.
    unsafe { asm!("invept {k}, [{d}]", k = in(reg) kind, d = in(reg) &descriptor, options(nostack)) };
}

// --- Host events and side channels ---

/// Hands an NMI that arrived while a guest ran to the host's NMI handler (`int 2`).
///
/// # Safety
///
/// Interrupts off, right after the VM exit that reported the NMI (as KVM does).
pub(crate) unsafe fn host_nmi() {
    // SAFETY: the kernel's NMI handler is reentrant-safe and expects to be called this way.
    unsafe { asm!("int 2") };
}

/// KVM's software L1D flush (`vmx_l1d_flush` without IA32_FLUSH_CMD): touches every page of
/// `buf` to fill the TLB, serialises, then reads every cache line of it, evicting the L1D.
pub(crate) fn l1d_flush_by_reads(buf: &[u8]) {
    if buf.is_empty() {
        return;
    }
    // SAFETY: reads `buf` only; CPUID is saved around RBX (reserved by LLVM) and only
    // serialises.
    unsafe {
        asm!(
            "xor eax, eax",
            "2:",
            "movzx ecx, byte ptr [{buf} + rax]",
            "add eax, 4096",
            "cmp rax, {size}",
            "jb 2b",
            "mov {rbx}, rbx",
            "xor eax, eax",
            "cpuid",
            "mov rbx, {rbx}",
            "xor eax, eax",
            "3:",
            "movzx ecx, byte ptr [{buf} + rax]",
            "add eax, 64",
            "cmp rax, {size}",
            "jb 3b",
            "lfence",
            buf = in(reg) buf.as_ptr(),
            size = in(reg) buf.len(),
            rbx = out(reg) _,
            out("rax") _, out("rcx") _, out("rdx") _,
            options(nostack, readonly),
        );
    }
}
