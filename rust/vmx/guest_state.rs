// SPDX-License-Identifier: GPL-2.0

//! What a vCPU's VMCS holds: the execution controls rvmx runs every guest with, and the guest
//! register state, moved between KVM's `kvm_regs`/`kvm_sregs` and the VMCS.
//!
//! A window loads `Regs` into the VMCS and stores them back when it ends; `Sregs` stay in
//! the VMCS between windows (see [`crate::vmx::sregs`]).

use kernel::prelude::*;

use crate::{
    vmx::entry::Gprs,
    logic::kvm_abi::{Regs, Sregs},
    logic::arch::{self, cr0, efer, vector},
    logic::vmx_controls::{entry, exit, pin, proc, proc2},
    logic::vcpu_state,
    vmx::vmcs::Current,
    logic::vmcs_fields::*,
    logic::vmx_caps::VmxCaps,
};

/// Pin-based controls: external interrupts and NMIs exit (they belong to the host).
const PIN: u32 = pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING;
/// Primary controls for the interrupt window and the NMI window (see logic/events.rs).
pub(crate) const PROC_IRQ_WINDOW: u32 = proc::INTERRUPT_WINDOW_EXITING;
pub(crate) const PROC_NMI_WINDOW: u32 = proc::NMI_WINDOW_EXITING;
/// Primary controls: HLT exits, MWAIT and MONITOR exit (a guest must not put the host's CPU
/// to sleep), RDPMC exits (the counters are the host's; guests have no PMU), MOV DR exits
/// (the debug registers are the host's, see cpu/debugregs.rs), every I/O instruction exits,
/// secondary controls on. CR8 is the host's TPR (a guest must not mask the host's interrupts):
/// see [`CR8_EXITING`] and [`TPR_SHADOW`].
/// Every RDMSR/WRMSR exits but those the MSR bitmap lets through (cpu/msr.rs).
/// TSC offsetting: the guest's TSC is the host's plus its offset (its writes to IA32_TSC set
/// the offset).
const PROC: u32 = proc::TSC_OFFSETTING
    | proc::HLT_EXITING
    | proc::MWAIT_EXITING
    | proc::RDPMC_EXITING
    | proc::MOV_DR_EXITING
    | proc::UNCONDITIONAL_IO_EXITING
    | proc::MONITOR_EXITING
    | proc::SECONDARY_CONTROLS;
/// CR8 loads and stores exit: without an in-kernel APIC (userspace keeps the guest's TPR, as
/// KVM then does), or where the CPU has no TPR shadow.
const CR8_EXITING: u32 = proc::CR8_LOAD_EXITING | proc::CR8_STORE_EXITING;
/// With an in-kernel APIC, as KVM: CR8 reads and writes go to the TPR in the vCPU's
/// virtual-APIC page without exits; a write exits only when it lowers the TPR below the
/// class of an interrupt it held back (the TPR threshold), which is then delivered.
const TPR_SHADOW: u32 = proc::USE_TPR_SHADOW;
/// Primary control "use MSR bitmaps" (every CPU with EPT has it; without it every RDMSR and
/// WRMSR exits, which the bitmap otherwise says per MSR).
pub(crate) const PROC_USE_MSR_BITMAPS: u32 = proc::USE_MSR_BITMAPS;
/// Secondary controls: EPT, VPID, unrestricted guest.
const SECONDARY: u32 = proc2::ENABLE_EPT | proc2::ENABLE_VPID | proc2::UNRESTRICTED_GUEST;
/// Secondary controls that make an instruction exit, when the CPU has them (KVM sets them
/// the same way): WBINVD (a guest would flush the host's caches), ENCLS (SGX belongs to the
/// host; without the control, an SGX-enabled host would run a guest's ENCLS natively).
const SECONDARY_EXITING: u32 = proc2::WBINVD_EXITING | proc2::ENCLS_EXITING;
/// Exceptions that always exit: #MC (the host's machine-check handler must see it, as
/// KVM's `handle_exception_irqoff`) and #UD (AMD's VMMCALL is rewritten to VMCALL, KVM's
/// `KVM_X86_QUIRK_FIX_HYPERCALL_INSN`; every other #UD goes back to the guest), besides the
/// debugger's ([`crate::logic::guest_debug`]).
pub(crate) const EXCEPTIONS_ALWAYS: u32 = 1 << vector::MC | 1 << vector::UD;
/// Exit controls: save debug controls (the guest's DR7, which a #DB may change), 64-bit
/// host, save/load PAT and EFER.
const EXIT: u32 = exit::SAVE_DEBUG_CONTROLS
    | exit::HOST_ADDRESS_SPACE_SIZE
    | exit::SAVE_PAT
    | exit::LOAD_PAT
    | exit::SAVE_EFER
    | exit::LOAD_EFER;
/// Entry controls: load debug controls (the guest's DR7 and DEBUGCTL; a CPU with "true"
/// controls may let it be off, and then the guest would run with DR7 disarmed), load PAT
/// and EFER.
const ENTRY: u32 = entry::LOAD_DEBUG_CONTROLS | entry::LOAD_PAT | entry::LOAD_EFER;
/// Entry control: the guest is in IA-32e mode (EFER.LMA).
pub(crate) const ENTRY_IA32E: u32 = entry::IA32E_MODE;
/// CR0 bits the host owns, as KVM: all but TS and WP. The guest reads them from the shadow
/// and its writes to them exit, so the real CR0 can differ: NE always on (VMX needs it), CD
/// and NW always off (KVM's "always off"; some CPUs do not keep them for a guest).
pub(crate) const CR0_HOST_OWNED: u64 = !(cr0::TS | cr0::WP);

/// CR0 as the guest sees it: its own bits from the real CR0, host-owned ones from the shadow.
pub(crate) fn guest_cr0(cur: &Current<'_>) -> u64 {
    (cur.read(GUEST_CR0) & !CR0_HOST_OWNED) | (cur.read(CR0_READ_SHADOW) & CR0_HOST_OWNED)
}

/// The CR0 the guest runs with for the CR0 `cr0` it asked for.
pub(crate) const fn real_cr0(cr0: u64) -> u64 {
    (cr0 & !(cr0::CD | cr0::NW)) | cr0::NE
}
/// CR4 bits the host keeps set in the real CR4 whatever the guest asks: VMXE (no nested VMX;
/// the guest sees 0). The guest/host mask (`vcpu_state::cr4_guest_host_mask`) makes every bit
/// the guest does not own exit.
pub(crate) const CR4_HOST_OWNED: u64 = crate::logic::arch::cr4::VMXE;

/// The secondary controls for a guest that may run `ins` (its CPUID's), where the CPU has
/// them: RDTSCP and INVPCID enabled only if listed, RDRAND and RDSEED exit (#UD) if not, as
/// KVM's `vmx_secondary_exec_control`.
fn secondary_controls(caps: &VmxCaps, ins: crate::logic::cpuid_table::Instructions) -> u32 {
    let only = |on: bool, bits: u32| if on { bits } else { 0 };
    let wanted = SECONDARY_EXITING
        | only(ins.rdtscp, proc2::ENABLE_RDTSCP)
        | only(ins.invpcid, proc2::ENABLE_INVPCID)
        | only(!ins.rdrand, proc2::RDRAND_EXITING)
        | only(!ins.rdseed, proc2::RDSEED_EXITING);
    SECONDARY | (caps.procbased2.may_be_one & wanted)
}

/// Writes the controls that stay the same for the vCPU's life (its CPUID is fixed once it
/// runs; `vapic`: its in-kernel APIC's virtual-APIC page). Fails if the CPU cannot run with
/// them (already checked at load, so this is a consistency check). Whether the TPR shadow is
/// on.
pub(crate) fn write_controls(cur: &Current<'_>, caps: &VmxCaps, eptp: u64, vpid: u16, ins: crate::logic::cpuid_table::Instructions, vapic: Option<u64>) -> Result<bool> {
    let secondary = secondary_controls(caps, ins);
    let (timer_pin, timer_exit) = if has_window_timer(caps) {
        (pin::PREEMPTION_TIMER, exit::SAVE_PREEMPTION_TIMER)
    } else {
        (0, 0)
    };
    // Virtual NMIs: the guest's NMI blocking is tracked and an NMI window can be opened.
    let vnmi = if has_virtual_nmis(caps) { pin::VIRTUAL_NMIS } else { 0 };
    let pin = caps.pinbased.adjust(PIN | timer_pin | vnmi).ok_or(EIO)?;
    let bitmaps = if caps.procbased.allows(PROC_USE_MSR_BITMAPS) { PROC_USE_MSR_BITMAPS } else { 0 };
    let vapic = vapic.filter(|_| caps.procbased.allows(TPR_SHADOW));
    let cr8 = if vapic.is_some() { TPR_SHADOW } else { CR8_EXITING };
    let proc = caps.procbased.adjust(PROC | cr8 | bitmaps).ok_or(EIO)?;
    let sec = caps.procbased2.adjust(secondary).ok_or(EIO)?;
    let exit = caps.exit.adjust(EXIT | timer_exit).ok_or(EIO)?;
    cur.write(PIN_BASED_CONTROLS, pin);
    cur.write(PROC_BASED_CONTROLS, proc);
    cur.write(SECONDARY_CONTROLS, sec);
    cur.write(EXIT_CONTROLS, exit);
    cur.write(EXCEPTION_BITMAP, EXCEPTIONS_ALWAYS);
    // With ENCLS exiting, every ENCLS leaf exits (#UD: no SGX for guests).
    if sec & proc2::ENCLS_EXITING != 0 {
        cur.write(ENCLS_EXITING_BITMAP, u64::MAX);
    }
    cur.write(PF_ERROR_CODE_MASK, 0);
    cur.write(PF_ERROR_CODE_MATCH, 0);
    cur.write(CR3_TARGET_COUNT, 0);
    cur.write(CR0_GUEST_HOST_MASK, CR0_HOST_OWNED);
    // Until the window writes the mask for the guest's CPUID: every bit exits.
    cur.write(CR4_GUEST_HOST_MASK, u64::MAX);
    cur.write(EPT_POINTER, eptp);
    cur.write(VPID, vpid);
    cur.write(VMCS_LINK_POINTER, u64::MAX);
    cur.write(TSC_OFFSET, 0);
    if let Some(page) = vapic {
        cur.write(VIRTUAL_APIC_PAGE_ADDR, page);
        cur.write(TPR_THRESHOLD, 0);
    }
    Ok(vapic.is_some())
}

/// Whether the guest's NMIs are virtual NMIs with NMI-window exits.
pub(crate) fn has_virtual_nmis(caps: &VmxCaps) -> bool {
    caps.pinbased.allows(pin::VIRTUAL_NMIS) && caps.procbased.allows(PROC_NMI_WINDOW)
}

/// Whether windows are bounded by the VMX-preemption timer (it and its save control exist).
pub(crate) fn has_window_timer(caps: &VmxCaps) -> bool {
    caps.pinbased.allows(pin::PREEMPTION_TIMER) && caps.exit.allows(exit::SAVE_PREEMPTION_TIMER)
}

/// Guest state that lives only in the VMCS (no KVM_SET_* for it yet), at its reset value:
/// written once, then kept by the VMCS across windows (VMCLEAR preserves it), so e.g. an
/// STI interrupt shadow survives the end of a window.
pub(crate) fn write_initial_guest_state(cur: &Current<'_>) {
    cur.write(GUEST_IA32_DEBUGCTL, 0);
    cur.write(GUEST_PENDING_DBG_EXCEPTIONS, 0);
    cur.write(GUEST_ACTIVITY_STATE, 0);
    cur.write(GUEST_INTERRUPTIBILITY, 0);
    cur.write(ENTRY_INTR_INFO, 0);
}

/// The entry controls for a guest whose EFER is `efer`.
fn entry_controls(caps: &VmxCaps, guest_efer: u64) -> Result<u32> {
    let ia32e = if guest_efer & efer::LMA != 0 { ENTRY_IA32E } else { 0 };
    caps.entry.adjust(ENTRY | ia32e).ok_or(EIO)
}

macro_rules! segment_fields {
    ($($seg:ident: $sel:ident, $base:ident, $limit:ident, $ar:ident;)*) => {
        /// Loads the segment registers of `s` into the VMCS.
        fn write_segments(cur: &Current<'_>, s: &Sregs) {
            $(
                cur.write($sel, s.$seg.selector);
                cur.write($base, s.$seg.base);
                cur.write($limit, s.$seg.limit);
                cur.write($ar, vcpu_state::segment_ar(&s.$seg));
            )*
        }
        /// Stores the VMCS segment registers into `s`.
        fn read_segments(cur: &Current<'_>, s: &mut Sregs) {
            $(
                s.$seg = vcpu_state::segment_from_vmcs(
                    cur.read($sel), cur.read($base), cur.read($limit), cur.read($ar));
            )*
        }
    };
}

segment_fields! {
    cs: GUEST_CS_SELECTOR, GUEST_CS_BASE, GUEST_CS_LIMIT, GUEST_CS_AR;
    ds: GUEST_DS_SELECTOR, GUEST_DS_BASE, GUEST_DS_LIMIT, GUEST_DS_AR;
    es: GUEST_ES_SELECTOR, GUEST_ES_BASE, GUEST_ES_LIMIT, GUEST_ES_AR;
    fs: GUEST_FS_SELECTOR, GUEST_FS_BASE, GUEST_FS_LIMIT, GUEST_FS_AR;
    gs: GUEST_GS_SELECTOR, GUEST_GS_BASE, GUEST_GS_LIMIT, GUEST_GS_AR;
    ss: GUEST_SS_SELECTOR, GUEST_SS_BASE, GUEST_SS_LIMIT, GUEST_SS_AR;
    tr: GUEST_TR_SELECTOR, GUEST_TR_BASE, GUEST_TR_LIMIT, GUEST_TR_AR;
    ldt: GUEST_LDTR_SELECTOR, GUEST_LDTR_BASE, GUEST_LDTR_LIMIT, GUEST_LDTR_AR;
}

/// Loads the guest registers `regs` into the VMCS and `gprs`, and `sregs` if given (the VMCS
/// keeps them between windows: see [`crate::vmx::sregs`]); `pdptes`, if given, into the
/// PDPTE fields.
pub(crate) fn load(
    cur: &Current<'_>,
    caps: &VmxCaps,
    regs: &Regs,
    sregs: Option<&Sregs>,
    pdptes: Option<[u64; 4]>,
    gprs: &mut Gprs,
) -> Result {
    *gprs = Gprs {
        rax: regs.rax, rbx: regs.rbx, rcx: regs.rcx, rdx: regs.rdx, rsi: regs.rsi,
        rdi: regs.rdi, rbp: regs.rbp, r8: regs.r8, r9: regs.r9, r10: regs.r10, r11: regs.r11,
        r12: regs.r12, r13: regs.r13, r14: regs.r14, r15: regs.r15,
    };
    cur.write(GUEST_RSP, regs.rsp);
    cur.write(GUEST_RIP, regs.rip);
    cur.write(GUEST_RFLAGS, regs.rflags | crate::logic::arch::rflags::FIXED);
    if let Some(sregs) = sregs {
        load_sregs(cur, caps, sregs)?;
    }
    // PAE paging without long mode takes its PDPTEs from the VMCS (SDM 26.3.1.6). VM exits
    // save them (EPT is on) and the VMCS keeps them between windows; new ones come from
    // KVM_SET_SREGS or an emulated MOV to CR0, read from guest memory.
    if let Some(p) = pdptes {
        cur.write(GUEST_PDPTE0, p[0]);
        cur.write(GUEST_PDPTE1, p[1]);
        cur.write(GUEST_PDPTE2, p[2]);
        cur.write(GUEST_PDPTE3, p[3]);
    }
    Ok(())
}

/// Loads the segment, descriptor-table and control registers of `sregs` into the VMCS.
fn load_sregs(cur: &Current<'_>, caps: &VmxCaps, sregs: &Sregs) -> Result {
    // The entry controls first: the only step that can fail, before anything is written.
    let entry = entry_controls(caps, sregs.efer)?;
    write_segments(cur, sregs);
    cur.write(GUEST_GDTR_BASE, sregs.gdt.base);
    cur.write(GUEST_GDTR_LIMIT, sregs.gdt.limit as u32);
    cur.write(GUEST_IDTR_BASE, sregs.idt.base);
    cur.write(GUEST_IDTR_LIMIT, sregs.idt.limit as u32);
    cur.write(GUEST_CR0, real_cr0(sregs.cr0));
    cur.write(CR0_READ_SHADOW, sregs.cr0);
    cur.write(GUEST_CR3, sregs.cr3);
    cur.write(GUEST_CR4, sregs.cr4 | CR4_HOST_OWNED);
    cur.write(CR4_READ_SHADOW, sregs.cr4);
    cur.write(GUEST_IA32_EFER, sregs.efer);
    cur.write(ENTRY_CONTROLS, entry);
    Ok(())
}

/// Stores the guest registers from the VMCS and `gprs` into `regs`.
pub(crate) fn store_regs(cur: &Current<'_>, gprs: &Gprs, regs: &mut Regs) {
    *regs = Regs {
        rax: gprs.rax, rbx: gprs.rbx, rcx: gprs.rcx, rdx: gprs.rdx, rsi: gprs.rsi,
        rdi: gprs.rdi, rbp: gprs.rbp, r8: gprs.r8, r9: gprs.r9, r10: gprs.r10, r11: gprs.r11,
        r12: gprs.r12, r13: gprs.r13, r14: gprs.r14, r15: gprs.r15,
        rsp: cur.read(GUEST_RSP),
        rip: cur.read(GUEST_RIP),
        rflags: cur.read(GUEST_RFLAGS),
    };
}

/// Stores the VMCS's segment, descriptor-table and control registers into `sregs` (CR2, CR8
/// and APIC_BASE are not there).
pub(crate) fn store_sregs(cur: &Current<'_>, sregs: &mut Sregs) {
    read_segments(cur, sregs);
    sregs.gdt.base = cur.read(GUEST_GDTR_BASE);
    sregs.gdt.limit = cur.read(GUEST_GDTR_LIMIT) as u16;
    sregs.idt.base = cur.read(GUEST_IDTR_BASE);
    sregs.idt.limit = cur.read(GUEST_IDTR_LIMIT) as u16;
    sregs.cr0 = guest_cr0(cur);
    sregs.cr3 = cur.read(GUEST_CR3);
    sregs.cr4 = guest_cr4(cur);
    sregs.efer = cur.read(GUEST_IA32_EFER);
}

/// The guest's CR4: the host-owned bits as the guest set them (the read shadow).
fn guest_cr4(cur: &Current<'_>) -> u64 {
    (cur.read(GUEST_CR4) & !CR4_HOST_OWNED) | (cur.read(CR4_READ_SHADOW) & CR4_HOST_OWNED)
}

/// Reads back into `s` what emulating a memory access reads of the registers (KVM reads
/// segments lazily, field by field; rvmx cannot once the window is closed, so it reads these
/// 12 fields instead of all 45): EFER, CR0, CR3, CR4, CS's access rights (the mode), SS's (the
/// CPL), and the six segment bases (limits are not checked). Other fields are left as they
/// were.
pub(crate) fn store_emulation_sregs(cur: &Current<'_>, s: &mut Sregs) {
    s.efer = cur.read(GUEST_IA32_EFER);
    s.cr0 = guest_cr0(cur);
    s.cr3 = cur.read(GUEST_CR3);
    s.cr4 = guest_cr4(cur);
    s.cs = vcpu_state::segment_from_vmcs(s.cs.selector, cur.read(GUEST_CS_BASE), s.cs.limit, cur.read(GUEST_CS_AR));
    s.ss = vcpu_state::segment_from_vmcs(s.ss.selector, cur.read(GUEST_SS_BASE), s.ss.limit, cur.read(GUEST_SS_AR));
    s.ds.base = cur.read(GUEST_DS_BASE);
    s.es.base = cur.read(GUEST_ES_BASE);
    s.fs.base = cur.read(GUEST_FS_BASE);
    s.gs.base = cur.read(GUEST_GS_BASE);
}


/// At most this many VMCS dumps per module load: a guest (or caller) that makes every entry
/// fail must not flood the kernel log.
const MAX_DUMPS: u32 = 8;
static DUMPS: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// Logs the guest state of a VMCS whose VM entry failed (`why`: the VM-instruction error or
/// the exit reason), in the order the SDM checks it (26.3), so the bad field can be found.
pub(crate) fn dump_failed_entry(cur: &Current<'_>, why: u64) {
    // Off by default, as in KVM: a VMM's invalid state is the VMM's business, not the host log's.
    if !crate::module_parameters::dump_invalid_vmcs.value() {
        return;
    }
    let n = DUMPS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    if n >= MAX_DUMPS {
        return;
    }
    let last = if n == MAX_DUMPS - 1 { " (last dump until reload)" } else { "" };
    pr_err!("VM entry failed ({:#x}); guest state follows{}\n", why, last);
    pr_err!("  cr0 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x} entry {:#x} exit {:#x}\n",
            cur.read(GUEST_CR0), cur.read(GUEST_CR3), cur.read(GUEST_CR4), cur.read(GUEST_IA32_EFER),
            cur.read(ENTRY_CONTROLS), cur.read(EXIT_CONTROLS));
    pr_err!("  rip {:#x} rsp {:#x} rflags {:#x} interruptibility {:#x} activity {:#x} event {:#x}\n",
            cur.read(GUEST_RIP), cur.read(GUEST_RSP), cur.read(GUEST_RFLAGS),
            cur.read(GUEST_INTERRUPTIBILITY), cur.read(GUEST_ACTIVITY_STATE), cur.read(ENTRY_INTR_INFO));
    macro_rules! seg {
        ($name:literal, $sel:ident, $base:ident, $limit:ident, $ar:ident) => {
            pr_err!("  {} sel {:#06x} base {:#x} limit {:#x} ar {:#x}\n", $name,
                    cur.read($sel), cur.read($base), cur.read($limit), cur.read($ar));
        };
    }
    seg!("cs", GUEST_CS_SELECTOR, GUEST_CS_BASE, GUEST_CS_LIMIT, GUEST_CS_AR);
    seg!("ss", GUEST_SS_SELECTOR, GUEST_SS_BASE, GUEST_SS_LIMIT, GUEST_SS_AR);
    seg!("ds", GUEST_DS_SELECTOR, GUEST_DS_BASE, GUEST_DS_LIMIT, GUEST_DS_AR);
    seg!("es", GUEST_ES_SELECTOR, GUEST_ES_BASE, GUEST_ES_LIMIT, GUEST_ES_AR);
    seg!("fs", GUEST_FS_SELECTOR, GUEST_FS_BASE, GUEST_FS_LIMIT, GUEST_FS_AR);
    seg!("gs", GUEST_GS_SELECTOR, GUEST_GS_BASE, GUEST_GS_LIMIT, GUEST_GS_AR);
    seg!("tr", GUEST_TR_SELECTOR, GUEST_TR_BASE, GUEST_TR_LIMIT, GUEST_TR_AR);
    seg!("ldtr", GUEST_LDTR_SELECTOR, GUEST_LDTR_BASE, GUEST_LDTR_LIMIT, GUEST_LDTR_AR);
    pr_err!("  gdtr {:#x}/{:#x} idtr {:#x}/{:#x}\n", cur.read(GUEST_GDTR_BASE), cur.read(GUEST_GDTR_LIMIT),
            cur.read(GUEST_IDTR_BASE), cur.read(GUEST_IDTR_LIMIT));
}

/// The guest's RIP as a linear address, as `KVM_EXIT_DEBUG` reports it (KVM's
/// `kvm_get_linear_rip`): RIP in 64-bit mode, else CS base + RIP in 32 bits.
pub(crate) fn linear_rip(cur: &Current<'_>) -> u64 {
    code_base(cur).linear(cur.read(GUEST_RIP))
}

/// What makes the guest's RIP linear now.
pub(crate) fn code_base(cur: &Current<'_>) -> arch::CodeBase {
    arch::CodeBase { long64: long64(cur), cs_base: cur.read(GUEST_CS_BASE) }
}

/// Whether the guest runs 64-bit code ([`arch::is_64_bit_mode`]), where registers are not
/// truncated to 32 bits.
pub(crate) fn long64(cur: &Current<'_>) -> bool {
    arch::is_64_bit_mode(cur.read(GUEST_CS_AR) & arch::seg_ar::L != 0, cur.read(GUEST_IA32_EFER))
}
