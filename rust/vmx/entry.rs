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

use core::mem::offset_of;

use crate::logic::vmcs_fields::{HOST_RIP, HOST_RSP};

/// The guest's general-purpose registers that VMX does not keep in the VMCS (RSP and RIP are
/// VMCS fields). The stub addresses them by `offset_of!`.
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

/// What the stub does besides entering the guest ([`crate::logic::mitigation_rules::stub`] flags), and
/// what it counts as it does it (the counts prove in debugfs that the steps really ran).
/// The stub addresses them by `offset_of!`.
#[repr(C)]
#[derive(Default)]
pub(crate) struct EntryArgs {
    flags: u64,
    /// The host's SPEC_CTRL, rewritten after each exit under legacy IBRS.
    host_spec_ctrl: u64,
    entries: u64,
    verw: u64,
    rsb_fill: u64,
    ibrs: u64,
    bhb_clear: u64,
    /// The stack pointer HOST_RSP holds in this window (0: not written yet). The stub runs
    /// from the same frame for every entry of a window: the VMCS's HOST_RSP and HOST_RIP are
    /// written at its first entry only (as KVM's `vmx_update_host_rsp`).
    host_rsp: u64,
}

impl EntryArgs {
    pub(crate) fn new(flags: u64, host_spec_ctrl: u64) -> Self {
        Self { flags, host_spec_ctrl, ..Self::default() }
    }

    /// What the stub did in this window.
    pub(crate) fn counts(&self) -> crate::logic::mitigation_rules::Counts {
        crate::logic::mitigation_rules::Counts {
            entries: self.entries,
            verw: self.verw,
            rsb_fill: self.rsb_fill,
            ibrs: self.ibrs,
            bhb_clear: self.bhb_clear,
            ..Default::default()
        }
    }
}

/// A function return, as the kernel writes it: through the return thunk when the kernel is
/// built with return thunks (`RET` in `linkage.h`), so the boot-time patching of return sites
/// covers the stub too.
#[cfg(CONFIG_MITIGATION_RETHUNK)]
macro_rules! ret {
    () => {
        "jmp __x86_return_thunk"
    };
}
#[cfg(not(CONFIG_MITIGATION_RETHUNK))]
macro_rules! ret {
    () => {
        "ret"
    };
}

// Entry, in order: HOST_RSP/HOST_RIP, the guest's registers, VERW (after every other memory
// access that could refill the buffers; it clobbers ZF, so VMLAUNCH/VMRESUME is chosen after
// it), entry. Exit, in order: the guest's registers saved and cleared, then, before the first
// RET (a guest could have planted return predictions): the RSB fill, the SPEC_CTRL rewrite,
// the branch-history clear; as KVM's vmenter.S. Calls used to stuff the RSB are annotated
// for objtool as intra-function calls.
core::arch::global_asm!(
    ".macro rvmx_intra_call target",
    ".Lrvmx_ic_\\@: call \\target",
    ".pushsection .discard.annotate_insn, \"M\", @progbits, 8",
    ".long .Lrvmx_ic_\\@ - ., 7",
    ".popsection",
    ".endm",
    ".pushsection .text",
    ".balign 16",
    ".globl rvmx_vmenter",
    ".type rvmx_vmenter, @function",
    "rvmx_vmenter:",             // rdi: Gprs, rsi: resume, rdx: EntryArgs
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdx",                  // the EntryArgs pointer and
    "push rdi",                  // the Gprs pointer, found again at exit
    "cmp rsp, [rdx + {a_host_rsp}]",
    "je 1f",
    "mov [rdx + {a_host_rsp}], rsp",
    "mov rax, {host_rsp}",       // the stack as it is now
    "vmwrite rax, rsp",
    "lea rcx, [rip + rvmx_vmexit]",
    "mov rax, {host_rip}",       // the exit label
    "vmwrite rax, rcx",
    "1:",
    "push qword ptr [rdx + {a_flags}]",      // the flags, for VERW
    "push rsi",                  // launched?
    "inc qword ptr [rdx + {a_entries}]",  // entries
    "test byte ptr [rdx + {a_flags}], {verw}",
    "jz 1f",
    "inc qword ptr [rdx + {a_verw}]",  // VERWs
    "1:",
    "mov rax, [rdi + {g_rax}]",
    "mov rbx, [rdi + {g_rbx}]",
    "mov rcx, [rdi + {g_rcx}]",
    "mov rdx, [rdi + {g_rdx}]",
    "mov rsi, [rdi + {g_rsi}]",
    "mov rbp, [rdi + {g_rbp}]",
    "mov r8, [rdi + {g_r8}]",
    "mov r9, [rdi + {g_r9}]",
    "mov r10, [rdi + {g_r10}]",
    "mov r11, [rdi + {g_r11}]",
    "mov r12, [rdi + {g_r12}]",
    "mov r13, [rdi + {g_r13}]",
    "mov r14, [rdi + {g_r14}]",
    "mov r15, [rdi + {g_r15}]",
    "mov rdi, [rdi + {g_rdi}]",
    "test byte ptr [rsp + 8], {verw}",
    "jz 1f",
    "verw word ptr [rip + rvmx_verw_sel]",
    "1:",
    "cmp qword ptr [rsp], 0",
    "jne 2f",
    "vmlaunch",
    "jmp 3f",
    "2: vmresume",
    "3:",                        // entry failed; the host stack is as it was
    "add rsp, 32",
    "mov eax, 1",
    "jmp 4f",
    ".globl rvmx_vmexit",
    "rvmx_vmexit:",              // rsp = HOST_RSP: Gprs pointer, EntryArgs pointer above

    "push rdi",                  // the guest's RDI
    "mov rdi, [rsp + 8]",
    "mov [rdi + {g_rax}], rax",
    "mov [rdi + {g_rbx}], rbx",
    "mov [rdi + {g_rcx}], rcx",
    "mov [rdi + {g_rdx}], rdx",
    "mov [rdi + {g_rsi}], rsi",
    "mov [rdi + {g_rbp}], rbp",
    "mov [rdi + {g_r8}], r8",
    "mov [rdi + {g_r9}], r9",
    "mov [rdi + {g_r10}], r10",
    "mov [rdi + {g_r11}], r11",
    "mov [rdi + {g_r12}], r12",
    "mov [rdi + {g_r13}], r13",
    "mov [rdi + {g_r14}], r14",
    "mov [rdi + {g_r15}], r15",
    "pop rax",
    "mov [rdi + {g_rdi}], rax",
    "pop rax",                   // the Gprs pointer
    "pop rsi",                   // the EntryArgs pointer
    "xor ebx, ebx",              // no guest value in a callee-saved register either
    "xor ebp, ebp",
    "xor r12d, r12d",
    "xor r13d, r13d",
    "xor r14d, r14d",
    "xor r15d, r15d",
    // 32 RSB entries: 16 loops of two calls whose return addresses are traps.
    "test byte ptr [rsi + {a_flags}], {rsb_full}",
    "jz 5f",
    "mov ecx, 16",
    "6:",
    "rvmx_intra_call 7f",
    "int3",
    "7:",
    "rvmx_intra_call 8f",
    "int3",
    "8:",
    "add rsp, 16",
    "dec ecx",
    "jnz 6b",
    "lfence",
    "inc qword ptr [rsi + {a_rsb_fill}]",
    "jmp 9f",
    "5:",
    "test byte ptr [rsi + {a_flags}], {rsb_lite}",
    "jz 9f",
    "rvmx_intra_call 10f",
    "int3",
    "10:",
    "add rsp, 8",
    "lfence",
    "inc qword ptr [rsi + {a_rsb_fill}]",
    "9:",
    "test byte ptr [rsi + {a_flags}], {ibrs}",
    "jz 11f",
    "mov ecx, {spec_ctrl}",
    "mov eax, [rsi + {a_host_spec_ctrl}]",
    "mov edx, [rsi + {a_host_spec_ctrl} + 4]",
    "wrmsr",
    "inc qword ptr [rsi + {a_ibrs}]",
    "11:",
    "test byte ptr [rsi + {a_flags}], {bhb}",
    "jz 12f",
    "call rvmx_clear_bhb_loop",
    "inc qword ptr [rsi + {a_bhb_clear}]",
    "12:",
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
    ret!(),
    ".size rvmx_vmenter, . - rvmx_vmenter",
    // KVM's clear_bhb_loop (exported to KVM only): 5 x 5 taken branches and returns overwrite
    // the branch history; every RET in the upper half of a cache line (ITS).
    ".balign 16",
    ".type rvmx_clear_bhb_loop, @function",
    "rvmx_clear_bhb_loop:",
    "push rbp",
    "mov rbp, rsp",
    "mov ecx, 5",
    "rvmx_intra_call 21f",
    "jmp 25f",
    ".balign 64, 0xcc",
    ".skip 27, 0xcc",
    "21:",
    "rvmx_intra_call 22f",
    ret!(),
    ".balign 64, 0xcc",
    ".skip 14, 0xcc",
    "22: mov eax, 5",
    "23: jmp 24f",
    "nop",
    "24: sub eax, 1",
    "jnz 23b",
    "sub ecx, 1",
    "jnz 21b",
    ret!(),
    "25: lfence",
    "pop rbp",
    ret!(),
    ".size rvmx_clear_bhb_loop, . - rvmx_clear_bhb_loop",
    ".popsection",
    // Its stack is not a standard frame while the calls nest (objtool's
    // STACK_FRAME_NON_STANDARD, as for KVM's).
    ".pushsection .discard.func_stack_frame_non_standard, \"aw\"",
    ".quad rvmx_clear_bhb_loop",
    ".popsection",
    // objtool cannot follow a VM exit (the exit label is reached through HOST_RIP, not a
    // jump): the stub is left out of its stack validation (KVM describes its stub with
    // unwind hints instead).
    ".pushsection .discard.func_stack_frame_non_standard, \"aw\"",
    ".quad rvmx_vmenter",
    ".popsection",
    // VERW's operand: the kernel data selector (KVM's x86_verw_sel is exported to KVM only).
    ".pushsection .rodata",
    ".balign 2",
    "rvmx_verw_sel: .word 0x18",
    ".popsection",
    verw = const crate::logic::mitigation_rules::stub::VERW,
    rsb_full = const crate::logic::mitigation_rules::stub::RSB_FULL,
    rsb_lite = const crate::logic::mitigation_rules::stub::RSB_LITE,
    ibrs = const crate::logic::mitigation_rules::stub::IBRS,
    bhb = const crate::logic::mitigation_rules::stub::BHB,
    host_rsp = const HOST_RSP.encoding,
    host_rip = const HOST_RIP.encoding,
    spec_ctrl = const crate::logic::arch::msr::SPEC_CTRL,
    g_rax = const offset_of!(Gprs, rax),
    g_rbx = const offset_of!(Gprs, rbx),
    g_rcx = const offset_of!(Gprs, rcx),
    g_rdx = const offset_of!(Gprs, rdx),
    g_rsi = const offset_of!(Gprs, rsi),
    g_rdi = const offset_of!(Gprs, rdi),
    g_rbp = const offset_of!(Gprs, rbp),
    g_r8 = const offset_of!(Gprs, r8),
    g_r9 = const offset_of!(Gprs, r9),
    g_r10 = const offset_of!(Gprs, r10),
    g_r11 = const offset_of!(Gprs, r11),
    g_r12 = const offset_of!(Gprs, r12),
    g_r13 = const offset_of!(Gprs, r13),
    g_r14 = const offset_of!(Gprs, r14),
    g_r15 = const offset_of!(Gprs, r15),
    a_flags = const offset_of!(EntryArgs, flags),
    a_host_spec_ctrl = const offset_of!(EntryArgs, host_spec_ctrl),
    a_entries = const offset_of!(EntryArgs, entries),
    a_verw = const offset_of!(EntryArgs, verw),
    a_rsb_fill = const offset_of!(EntryArgs, rsb_fill),
    a_ibrs = const offset_of!(EntryArgs, ibrs),
    a_bhb_clear = const offset_of!(EntryArgs, bhb_clear),
    a_host_rsp = const offset_of!(EntryArgs, host_rsp),
);

extern "C" {
    fn rvmx_vmenter(gprs: *mut Gprs, resume: u64, args: *mut EntryArgs) -> u64;
}

/// Enters the guest with `gprs` and returns at its next VM exit (`true`), or `false` if the
/// entry failed (the VMCS's VM-instruction error says why).
///
/// # Safety
///
/// Interrupts are off, the vCPU's VMCS is current on this CPU with complete guest, host and
/// control state but HOST_RSP/HOST_RIP, which the stub writes unless `args` says it did so
/// for this VMCS already: `args` was made in this window, after the VMCS was loaded, and
/// serves no other VMCS. `resume` is true only if this VMCS was launched in the current
/// window.
pub(crate) unsafe fn enter(gprs: &mut Gprs, resume: bool, args: &mut EntryArgs) -> bool {
    // SAFETY: the caller guarantees the VMX preconditions; the stub follows the C ABI, saves
    // and restores every callee-saved register and touches only `gprs`, `args`, its own stack
    // and (with the flags the host's state chose) SPEC_CTRL, which it sets to the host's value.
    unsafe { rvmx_vmenter(gprs, resume as u64, args) == 0 }
}
