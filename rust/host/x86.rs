// SPDX-License-Identifier: GPL-2.0

//! The privileged x86 instructions rvmx needs, each wrapped once.
//!
//! The kernel crate has no wrappers for control registers or VMX instructions; these are the
//! only `asm!` blocks outside the guest entry path.

use core::arch::asm;

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

extern "C" {
    /// `rdmsrq_safe()`, an inline function (host/helpers.c).
    fn rvmx_rdmsr_safe(msr: u32, value: *mut u64) -> i32;
}

/// Reads MSR `msr` on this CPU; `None` if it does not exist (the read's #GP is caught).
pub(crate) fn rdmsr_safe(msr: u32) -> Option<u64> {
    let mut v = 0;
    // SAFETY: `v` is a valid u64; the kernel's `_safe` accessor catches the #GP of an absent MSR.
    (unsafe { rvmx_rdmsr_safe(msr, &mut v) } == 0).then_some(v)
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

extern "C" {
    fn rvmx_wrmsr(msr: u32, value: u64);
    fn rvmx_machine_check();
    fn rvmx_host_uses_fred() -> bool;
}

/// Runs the host's machine-check handler for a #MC that hit the guest (or its VM entry), as
/// KVM's `kvm_machine_check` does. Interrupts off.
pub(crate) fn machine_check() {
    // SAFETY: `do_machine_check` is the kernel's #MC handler, built for this context (KVM
    // calls it the same way with interrupts off after a VM exit); host/helpers.c passes it a
    // pt_regs of its own.
    unsafe { rvmx_machine_check() };
}

/// Whether the host kernel delivers events with FRED (Linux 7.3 turns it on where the CPU
/// has it).
pub(crate) fn host_uses_fred() -> bool {
    // SAFETY: reads a boot-time CPU feature bit.
    unsafe { rvmx_host_uses_fred() }
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
    unsafe { rvmx_wrmsr(msr, value) }
}
