// SPDX-License-Identifier: GPL-2.0

//! The VM entry/exit stub: the one place where guest register values live in the CPU.
//!
//! `rvmx_vmenter` saves the host's callee-saved registers, records the stack pointer and the
//! exit label as the VMCS host RSP/RIP, loads the guest's general-purpose registers and
//! enters the guest (VMLAUNCH for the first entry of a window, VMRESUME after). A VM exit
//! lands on `rvmx_vmexit` with the host stack as it was: the guest's registers are stored back,
//! the caller-saved registers are cleared so no guest value leaks into host code, and the
//! function returns 0. A failed entry (VMfailValid/VMfailInvalid) returns 1.
//! VMX does not switch CR2; the caller loads and saves it around the stub.

/// The guest's general-purpose registers that VMX does not keep in the VMCS (RSP and RIP are
/// VMCS fields). Offsets are used by the stub below.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Gprs {
    pub(crate) rax: u64,
    pub(crate) rbx: u64,
    pub(crate) rcx: u64,
    pub(crate) rdx: u64,
    pub(crate) rsi: u64,
    pub(crate) rdi: u64,
    pub(crate) rbp: u64,
    pub(crate) r8: u64,
    pub(crate) r9: u64,
    pub(crate) r10: u64,
    pub(crate) r11: u64,
    pub(crate) r12: u64,
    pub(crate) r13: u64,
    pub(crate) r14: u64,
    pub(crate) r15: u64,
}

core::arch::global_asm!(
    ".pushsection .text",
    ".balign 16",
    ".globl rvmx_vmenter",
    ".type rvmx_vmenter, @function",
    "rvmx_vmenter:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdi",                  // the Gprs pointer, found again at exit
    "mov rax, 0x6c14",           // HOST_RSP: the stack as it is now
    "vmwrite rax, rsp",
    "lea rdx, [rip + rvmx_vmexit]",
    "mov rax, 0x6c16",           // HOST_RIP: the exit label
    "vmwrite rax, rdx",
    "cmp rsi, 0",                // flags survive the MOVs below
    "mov rax, [rdi + 0]",
    "mov rbx, [rdi + 8]",
    "mov rcx, [rdi + 16]",
    "mov rdx, [rdi + 24]",
    "mov rsi, [rdi + 32]",
    "mov rbp, [rdi + 48]",
    "mov r8, [rdi + 56]",
    "mov r9, [rdi + 64]",
    "mov r10, [rdi + 72]",
    "mov r11, [rdi + 80]",
    "mov r12, [rdi + 88]",
    "mov r13, [rdi + 96]",
    "mov r14, [rdi + 104]",
    "mov r15, [rdi + 112]",
    "mov rdi, [rdi + 40]",
    "jne 2f",
    "vmlaunch",
    "jmp 3f",
    "2: vmresume",
    "3:",                        // entry failed; the host stack is untouched
    "add rsp, 8",
    "mov eax, 1",
    "jmp 4f",
    ".globl rvmx_vmexit",
    "rvmx_vmexit:",
    "push rdi",                  // the guest's RDI
    "mov rdi, [rsp + 8]",
    "mov [rdi + 0], rax",
    "mov [rdi + 8], rbx",
    "mov [rdi + 16], rcx",
    "mov [rdi + 24], rdx",
    "mov [rdi + 32], rsi",
    "mov [rdi + 48], rbp",
    "mov [rdi + 56], r8",
    "mov [rdi + 64], r9",
    "mov [rdi + 72], r10",
    "mov [rdi + 80], r11",
    "mov [rdi + 88], r12",
    "mov [rdi + 96], r13",
    "mov [rdi + 104], r14",
    "mov [rdi + 112], r15",
    "pop rax",
    "mov [rdi + 40], rax",
    "add rsp, 8",
    "xor eax, eax",
    "4:",
    "xor ecx, ecx",              // no guest value survives in a caller-saved register
    "xor edx, edx",
    "xor esi, esi",
    "xor edi, edi",
    "xor r8d, r8d",
    "xor r9d, r9d",
    "xor r10d, r10d",
    "xor r11d, r11d",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    ".size rvmx_vmenter, . - rvmx_vmenter",
    ".popsection",
);

extern "C" {
    fn rvmx_vmenter(gprs: *mut Gprs, resume: u64) -> u64;
}

/// Enters the guest with `gprs` and returns at its next VM exit (`true`), or `false` if the
/// entry failed (the VMCS's VM-instruction error says why).
///
/// # Safety
///
/// Interrupts are off, the vCPU's VMCS is current on this CPU with complete guest, host and
/// control state (HOST_RSP/HOST_RIP are written here), and `resume` is true only if this
/// VMCS was launched in the current window.
pub(crate) unsafe fn enter(gprs: &mut Gprs, resume: bool) -> bool {
    // SAFETY: the caller guarantees the VMX preconditions; the stub follows the C ABI, saves
    // and restores every callee-saved register and touches only `gprs` and its own stack.
    unsafe { rvmx_vmenter(gprs, resume as u64) == 0 }
}
