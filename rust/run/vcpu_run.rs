// SPDX-License-Identifier: GPL-2.0

//! `KVM_RUN`: the loop that runs a vCPU until userspace has work to do.
//!
//! Each turn opens one interrupts-off VMX window: VMPTRLD, host and guest state into the VMCS,
//! INVEPT, then enter the guest as many times as exits can be handled in the kernel. The
//! window closes (guest state stored, VMCLEAR, host tables restored, VMXOFF) for anything that
//! needs the host: an interrupt, faulting in guest memory, or a return to userspace. Between
//! windows the loop checks for signals and reschedules, so a spinning guest never wedges a CPU.

use kernel::{current, page::Page, prelude::*};

use crate::{
    cpu::debugregs::{GuestDebug, HostDebug},
    vmx::entry::{self, Gprs},
    logic::events::{self, Events},
    logic::guest_debug::{DR6_ACTIVE_LOW, DR6_BS},
    cpu::fpu::{GuestFpu, KernelFpu},
    run::emulate,
    run::exit::{internal, kvm_exit, Exit, Next},
    vmx::guest_state,
    vmx::host_state::HostState,
    logic::ioeventfd_rules::Bus,
    logic::kvm_abi::{Regs, Sregs},
    host::mem::{page_phys, phys_to_virt},
    vmx::vmcs::{Current, Vmcs},
    logic::vmcs_fields::*,
    kvm::vm::{Fault, Vm},
    vmx::operation::Vmx,
    host::x86,
};

/// The `struct kvm_run` page shared with userspace, and the PIO data page after it.
pub(crate) struct KvmRun {
    run: *mut u8,
    pio: *mut u8,
    /// The exit reason this `KVM_RUN` reported, if any (for the statistics).
    reason: core::cell::Cell<Option<u32>>,
}

/// Offsets in `struct kvm_run` (`<linux/kvm.h>`).
mod off {
    pub(super) const REQUEST_INTERRUPT_WINDOW: usize = 0;
    pub(super) const IMMEDIATE_EXIT: usize = 1;
    pub(super) const EXIT_REASON: usize = 8;
    pub(super) const READY_FOR_INTERRUPT_INJECTION: usize = 12;
    pub(super) const IF_FLAG: usize = 13;
    pub(super) const FLAGS: usize = 14;
    pub(super) const CR8: usize = 16;
    pub(super) const APIC_BASE: usize = 24;
    pub(super) const EXIT_UNION: usize = 32;
}

impl KvmRun {
    pub(crate) fn new(run: &Page, pio: &Page) -> Self {
        Self {
            run: phys_to_virt(page_phys(run)).cast(),
            pio: phys_to_virt(page_phys(pio)).cast(),
            reason: core::cell::Cell::new(None),
        }
    }

    fn put<T: Copy>(&self, offset: usize, value: T) {
        // SAFETY: every offset used is inside the 4096-byte kvm_run page, which the vCPU owns
        // for as long as `self` is used (one KVM_RUN). Userspace may write the page at the
        // same time: volatile accesses, and nothing is trusted from it.
        unsafe { self.run.add(offset).cast::<T>().write_volatile(value) }
    }

    /// Writes `value` as element `i` of an array of `T` at `base`; an element that would
    /// not fit in the page is dropped (callers stay inside the exit union).
    fn put_at<T: Copy>(&self, base: usize, i: usize, value: T) {
        let size = core::mem::size_of::<T>();
        let offset = i.checked_mul(size).and_then(|o| o.checked_add(base));
        if let Some(o) = offset.filter(|o| o.saturating_add(size) <= 4096) {
            self.put(o, value);
        }
    }

    pub(crate) fn immediate_exit(&self) -> bool {
        // SAFETY: as in `put`.
        unsafe { self.run.add(off::IMMEDIATE_EXIT).read_volatile() != 0 }
    }

    /// `request_interrupt_window`: userspace wants `KVM_EXIT_IRQ_WINDOW_OPEN` as soon as the
    /// guest can take an interrupt.
    pub(crate) fn request_interrupt_window(&self) -> bool {
        // SAFETY: as in `put`.
        unsafe { self.run.add(off::REQUEST_INTERRUPT_WINDOW).read_volatile() != 0 }
    }

    /// The fields KVM fills on every return from `KVM_RUN` (`post_kvm_run_save`).
    fn post_run(&self, st: &RunState) {
        let if_flag = st.regs.rflags & RFLAGS_IF != 0;
        self.put(off::READY_FOR_INTERRUPT_INJECTION, st.events.ready_for_interrupt(if_flag, st.interruptibility) as u8);
        self.put(off::IF_FLAG, if_flag as u8);
        self.put(off::FLAGS, 0u16);
        self.put(off::CR8, st.sregs.cr8);
        self.put(off::APIC_BASE, st.sregs.apic_base);
    }

    pub(crate) fn set_exit_reason(&self, reason: u32) {
        self.reason.set(Some(reason));
        self.put(off::EXIT_REASON, reason);
    }

    /// `KVM_EXIT_IO`: direction, size, port, count, data at the PIO page.
    pub(crate) fn io(&self, input: bool, size: u8, port: u16, count: u32) {
        self.set_exit_reason(kvm_exit::IO);
        self.put(off::EXIT_UNION, if input { 0u8 } else { 1u8 });
        self.put(off::EXIT_UNION + 1, size);
        self.put(off::EXIT_UNION + 2, port);
        self.put(off::EXIT_UNION + 4, count);
        self.put(off::EXIT_UNION + 8, (crate::logic::kvm_abi::KVM_PIO_PAGE_OFFSET * 4096) as u64);
    }

    /// `KVM_EXIT_DEBUG`: `exception` (1 or 3) at linear address `pc`; DR6 and DR7 for #DB.
    pub(crate) fn debug(&self, exception: u32, pc: u64, dr6: u64, dr7: u64) {
        self.set_exit_reason(kvm_exit::DEBUG);
        self.put(off::EXIT_UNION, exception);
        self.put(off::EXIT_UNION + 8, pc);
        self.put(off::EXIT_UNION + 16, dr6);
        self.put(off::EXIT_UNION + 24, dr7);
    }

    /// `KVM_EXIT_FAIL_ENTRY` with the hardware's reason and the CPU.
    pub(crate) fn fail_entry(&self, reason: u64, cpu: u32) {
        self.set_exit_reason(kvm_exit::FAIL_ENTRY);
        self.put(off::EXIT_UNION, reason);
        self.put(off::EXIT_UNION + 8, cpu);
    }

    /// `KVM_EXIT_INTERNAL_ERROR` with a suberror and up to 16 data words.
    pub(crate) fn internal_error(&self, suberror: u32, data: &[u64]) {
        self.set_exit_reason(kvm_exit::INTERNAL_ERROR);
        self.put(off::EXIT_UNION, suberror);
        let n = data.len().min(16);
        self.put(off::EXIT_UNION + 4, n as u32);
        for (i, d) in data.iter().take(n).enumerate() {
            self.put_at(off::EXIT_UNION + 8, i, *d);
        }
    }

    /// `KVM_EXIT_MMIO`: a `data.len()`-byte access at `gpa` (`data` is what a write stores).
    pub(crate) fn mmio(&self, gpa: u64, data: &[u8], is_write: bool) {
        self.set_exit_reason(kvm_exit::MMIO);
        self.put(off::EXIT_UNION, gpa);
        for (i, b) in data.iter().enumerate().take(8) {
            self.put_at(off::EXIT_UNION + 8, i, *b);
        }
        self.put(off::EXIT_UNION + 16, data.len() as u32);
        self.put(off::EXIT_UNION + 20, is_write as u8);
    }

    /// The first `len` bytes userspace left in `kvm_run.mmio.data` for a read.
    pub(crate) fn mmio_data(&self, len: u8) -> u64 {
        let mut b = [0u8; 8];
        for (i, v) in b.iter_mut().enumerate().take(len.into()) {
            // SAFETY: inside the kvm_run page (i < 8), as in `put`.
            *v = unsafe { self.run.add(off::EXIT_UNION + 8).add(i).read_volatile() };
        }
        u64::from_le_bytes(b)
    }

    /// `KVM_EXIT_INTERNAL_ERROR` for an instruction that could not be emulated, laid out as
    /// KVM's `emulation_failure`: flags, the instruction bytes when known, then `data`.
    pub(crate) fn emulation_failure(&self, insn: &[u8], data: &[u64]) {
        const FLAG_INSTRUCTION_BYTES: u64 = 1;
        self.set_exit_reason(kvm_exit::INTERNAL_ERROR);
        self.put(off::EXIT_UNION, internal::EMULATION);
        let insn = insn.get(..15).unwrap_or(insn);
        self.put(off::EXIT_UNION + 8, if insn.is_empty() { 0 } else { FLAG_INSTRUCTION_BYTES });
        // Of the 16 data words: the flags, then 2 words of instruction bytes when known.
        let (start, room): (usize, usize) = if insn.is_empty() { (1, 15) } else { (3, 13) };
        if !insn.is_empty() {
            self.put(off::EXIT_UNION + 16, insn.len() as u8);
            for i in 0..15 {
                self.put_at(off::EXIT_UNION + 17, i, insn.get(i).copied().unwrap_or(0));
            }
        }
        let data = data.get(..room).unwrap_or(data);
        for (i, d) in data.iter().enumerate() {
            self.put_at(off::EXIT_UNION + 8, start.saturating_add(i), *d);
        }
        self.put(off::EXIT_UNION + 4, start.saturating_add(data.len()) as u32);
    }

    /// Copies the start of the PIO page (INS data userspace left there) into `buf`.
    pub(crate) fn read_pio_data(&self, buf: &mut [u8]) {
        for (i, v) in buf.iter_mut().enumerate().take(4096) {
            // SAFETY: inside the PIO page, as in `put`.
            *v = unsafe { self.pio.add(i).read_volatile() };
        }
    }

    pub(crate) fn write_pio_data(&self, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate().take(4096) {
            // SAFETY: inside the PIO page, as in `put`.
            unsafe { self.pio.add(i).write_volatile(*b) };
        }
    }
}

/// An IN or OUT that went to userspace and completes at the next `KVM_RUN`.
#[derive(Clone, Copy)]
pub(crate) struct PendingIo {
    pub(crate) input: bool,
    pub(crate) size: u8,
    pub(crate) instruction_len: u64,
}

/// Everything a vCPU keeps between runs (under the vCPU mutex).
pub(crate) struct RunState {
    pub(crate) regs: Regs,
    pub(crate) sregs: Sregs,
    pub(crate) vmcs: Vmcs,
    pub(crate) controls_written: bool,
    /// The CR4 guest/host mask in the VMCS (0 before the first window: never a real mask,
    /// which always has VMXE).
    pub(crate) cr4_mask: u64,
    pub(crate) gprs: Gprs,
    pub(crate) pending_io: Option<PendingIo>,
    /// An emulated instruction (MMIO read, INS) waiting for userspace's data.
    pub(crate) pending: Option<crate::run::emulate::Pending>,
    /// The data of that instruction's access.
    pub(crate) emulated: crate::run::emulate::Data,
    /// PAE PDPTEs to load at the next window (read from guest memory).
    pub(crate) pdptes: Option<[u64; 4]>,
    /// Interrupts, NMIs and exceptions to deliver.
    pub(crate) events: Events,
    /// The guest's interruptibility state (STI/MOV SS shadows, NMI blocking).
    pub(crate) interruptibility: u32,
    /// A userspace debugger's settings (`KVM_SET_GUEST_DEBUG`).
    pub(crate) debugger: crate::logic::guest_debug::Debugger,
    /// The signal mask for `KVM_RUN` (`KVM_SET_SIGNAL_MASK`).
    pub(crate) sigmask: Option<u64>,
    /// FPU/extended state and XCR0.
    pub(crate) fpu: GuestFpu,
    /// Debug registers.
    pub(crate) debug: GuestDebug,
    /// The guest's CPUID table (`KVM_SET_CPUID2`).
    pub(crate) cpuid: KVec<crate::logic::cpuid_table::CpuidEntry>,
    /// What that table allows.
    pub(crate) allowed: Allowed,
    /// Guest MSRs kept by software, and the VM-entry/exit MSR lists.
    pub(crate) msrs: crate::logic::msr_rules::GuestMsrs,
    pub(crate) msr_area: crate::cpu::msr::MsrArea,
    /// Page-table pages for this vCPU's next EPT fault, allocated before the MMU lock.
    pub(crate) tables: crate::vmx::ept::TableCache,
}

impl RunState {
    /// The instruction is done (RIP moved past it outside the window): an STI or MOV SS
    /// shadow it was in ends, as when the processor retires it.
    pub(crate) fn end_shadow(&mut self) {
        self.interruptibility &= !(events::block::STI | events::block::MOV_SS);
    }

    /// Raises an exception an emulated instruction caused (CR2 set for a page fault); it is
    /// delivered at the next entry.
    pub(crate) fn raise(&mut self, f: emulate::GuestFault) {
        if let Some(cr2) = f.cr2 {
            self.sregs.cr2 = cr2;
        }
        self.events.exception = Some(events::Exception::raise(f.vector, Some(f.error_code)));
    }

    /// After an instruction emulated from registers `before` (RIP, rCX): `Some` if `KVM_RUN`
    /// returns (an exit, or a single step done), `None` if the guest runs on. An STI or MOV SS
    /// shadow ends once the instruction did something (RIP moved, or a REP iteration counted
    /// rCX down), as KVM's writeback ends it.
    fn emulated_end(&mut self, before: (u64, u64), outcome: emulate::Outcome, run: &KvmRun) -> Option<Result<isize>> {
        if (self.regs.rip, self.regs.rcx) != before {
            self.end_shadow();
        }
        match outcome {
            emulate::Outcome::Exit(pending) => {
                self.pending = pending;
                Some(Ok(0))
            }
            // An ioeventfd took the write: the instruction is done.
            emulate::Outcome::Done if stepped(self, run) => Some(Ok(0)),
            emulate::Outcome::Done => None,
            emulate::Outcome::Fault(f) => {
                self.raise(f);
                None
            }
        }
    }

    /// Takes a new CPUID table and what follows from it.
    pub(crate) fn set_cpuid(&mut self, table: KVec<crate::logic::cpuid_table::CpuidEntry>, vmx: &Vmx) {
        self.cpuid = table;
        self.allowed = Allowed::new(&self.cpuid, vmx);
    }

    /// The EFER bits the guest's CPUID allows.
    pub(crate) fn efer_ok(&self) -> u64 {
        self.allowed.efer
    }
}

/// What the guest's CPUID table allows, worked out when the table is set (as KVM's
/// `kvm_vcpu_after_set_cpuid`), not on every window.
#[derive(Clone, Copy)]
pub(crate) struct Allowed {
    /// EFER bits (LM, NX).
    pub(crate) efer: u64,
    /// CR4 bits: its CPUID's, rvmx's, the processor's in VMX operation.
    pub(crate) cr4: u64,
    /// The speculation-control MSRs.
    pub(crate) speculation: crate::logic::cpuid_table::SpeculationMsrs,
    /// RDTSCP/RDPID (and so IA32_TSC_AUX), INVPCID, RDRAND, RDSEED (the others are #UD).
    pub(crate) instructions: crate::logic::cpuid_table::Instructions,
}

impl Allowed {
    pub(crate) fn new(table: &[crate::logic::cpuid_table::CpuidEntry], vmx: &Vmx) -> Self {
        use crate::{logic::cpuid_table, logic::vcpu_state};
        let (lm, nx) = cpuid_table::long_mode_and_nx(table);
        let cr4 = cpuid_table::cr4_features(table, vmx.fpu().xcr0);
        Self {
            efer: vcpu_state::efer_allowed(lm, nx),
            cr4: vcpu_state::cr4_allowed(cr4, vmx.caps().cr4_fixed.1),
            // A table may list what the host lacks: as KVM (its guest_cpu_cap_has), the MSR
            // exists for the guest only where the host has it.
            speculation: {
                let mut sp = cpuid_table::speculation_msrs(table);
                sp.spec_ctrl &= vmx.mitigations().for_guests().spec_ctrl.msr;
                sp
            },
            instructions: cpuid_table::instructions(table),
        }
    }
}

/// Completes the I/O of the previous exit: IN data into RAX, RIP past the instruction.
fn complete_io(st: &mut RunState, run: &KvmRun) {
    if let Some(p) = st.pending_io.take() {
        if p.input {
            let mut b = [0u8; 4];
            run.read_pio_data(b.get_mut(..usize::from(p.size)).unwrap_or(&mut []));
            let data = u32::from_le_bytes(b) as u64;
            st.regs.rax = match p.size {
                1 => (st.regs.rax & !0xff) | data,
                2 => (st.regs.rax & !0xffff) | data,
                _ => data, // 32-bit results zero-extend into RAX
            };
        }
        st.regs.rip = st.regs.rip.wrapping_add(p.instruction_len);
        st.end_shadow();
    }
}

/// Where the vCPU runs: its VM's EPT, its VPID, and who it is.
pub(crate) struct Target<'a> {
    pub(crate) vmx: &'a Vmx,
    pub(crate) eptp: u64,
    pub(crate) vpid: u16,
    pub(crate) running: &'a core::sync::atomic::AtomicI32,
    /// Its counters.
    pub(crate) stats: &'a crate::kvm::stats::VcpuStats,
    /// A number no other vCPU had since the module was loaded (never 0).
    pub(crate) serial: u64,
}

/// Longest time a window may keep interrupts off while the guest runs: 1 ms. Interrupts end
/// a window sooner; the timer is the guarantee (on CPUs, or emulators, where an interrupt
/// does not reach a guest running with IF=0, it is the only one).
const WINDOW_BUDGET_US: u64 = 1000;

/// The window budget in host TSC ticks.
fn window_budget_ticks() -> u64 {
    (x86::tsc_khz() as u64).saturating_mul(WINDOW_BUDGET_US) / 1000
}

/// The VMX-preemption timer value for one window budget.
fn window_timer(t: &Target<'_>) -> u32 {
    let khz = x86::tsc_khz() as u64;
    let ticks = khz.saturating_mul(WINDOW_BUDGET_US) / 1000;
    (ticks >> t.vmx.caps().preemption_timer_rate()).clamp(1, u32::MAX as u64) as u32
}

/// One VMX window: enters the guest until an exit needs the host.
fn window(t: &Target<'_>, st: &mut RunState, run: &KvmRun) -> Result<Next> {
    // The host's user FPU state is saved (and reloaded on return to userspace) so that the
    // guest's can be loaded into the registers.
    let _fpu = KernelFpu::begin();
    let features = *t.vmx.fpu();
    let result = t.vmx.with_vmx_operation(|op| -> Result<Next> {
        t.stats.window();
        let cpu = kernel::cpu::CpuId::current().as_u32();
        let host = HostState::save()?;
        // A debugger's hardware breakpoints replace the guest's for the window.
        let dbg = st.debugger;
        let drs = if dbg.hw_breakpoints() { GuestDebug { db: dbg.db, dr7: dbg.dr7, ..st.debug } } else { st.debug };
        // Every step that can fail comes before the host's debug registers are switched, so
        // none can return without putting them back.
        let cur = Current::load(op, &st.vmcs)?;
        if !st.controls_written {
            guest_state::write_controls(&cur, t.vmx.caps(), t.eptp, t.vpid, st.allowed.instructions)?;
            guest_state::write_initial_guest_state(&cur);
            st.msr_area.write_controls(&cur, t.vmx.caps().procbased.allows(guest_state::PROC_USE_MSR_BITMAPS));
            st.controls_written = true;
        }
        host.write_to(&cur);
        guest_state::load(&cur, t.vmx.caps(), &st.regs, &st.sregs, st.pdptes.take(), &mut st.gprs)?;
        cur.write(GUEST_DR7, drs.dr7);
        cur.write(EXCEPTION_BITMAP, dbg.exception_bitmap() | guest_state::EXCEPTIONS_ALWAYS);
        if dbg.single_step() {
            cur.write(GUEST_RFLAGS, cur.read(GUEST_RFLAGS) | RFLAGS_TF);
        }
        cur.write(GUEST_INTERRUPTIBILITY, st.interruptibility);
        let want_window = run.request_interrupt_window();
        let mut windows = Windows::new(&cur, t.vmx.caps());
        st.msr_area.load(&cur, &st.msrs);
        if guest_state::has_window_timer(t.vmx.caps()) {
            cur.write(PREEMPTION_TIMER_VALUE, window_timer(t));
        }
        // Published before the flush: a slot change either sees this vCPU running (and kicks
        // it out) or happened before the INVEPT below.
        t.running.store(cpu as i32, core::sync::atomic::Ordering::SeqCst);
        crate::vmx::ept::invept(op, t.vmx.caps(), t.eptp);
        let mitigations = t.vmx.mitigations();
        let mut entry_args = mitigations.window_start(cpu, t.serial);
        let host_debug = HostDebug::switch_to_guest(&drs, t.vmx.has_debugctl());
        // SAFETY: interrupts off inside `_fpu`; `save` below runs before the window ends.
        let host_xcr0 = unsafe { st.fpu.load(&features) };
        let mut resume = false;
        let window_started = x86::rdtsc();
        let budget = window_budget_ticks();
        // The CPUID table cannot change inside the window: looked up once, not per exit.
        let Allowed { efer: efer_ok, cr4: cr4_ok, speculation, instructions, .. } = st.allowed;
        // The VMCS keeps it between windows: written again only when the CPUID table changed.
        let cr4_mask = crate::logic::vcpu_state::cr4_guest_host_mask(cr4_ok);
        if st.cr4_mask != cr4_mask {
            cur.write(CR4_GUEST_HOST_MASK, cr4_mask);
            st.cr4_mask = cr4_mask;
        }
        let next = loop {
            windows.arm(&cur, &mut st.events, want_window, dbg.blocks_irqs());
            // SAFETY: interrupts are off; CR2 holds the guest's value until the entry.
            unsafe { x86::write_cr2(st.sregs.cr2) };
            if !resume {
                mitigations.flush_l1d();
            }
            let entered = x86::rdtsc();
            // SAFETY: interrupts off, the VMCS is current and complete, `resume` is true only
            // after a successful launch in this window.
            if !unsafe { entry::enter(&mut st.gprs, resume, &mut entry_args) } {
                let error = cur.read(VM_INSTRUCTION_ERROR);
                guest_state::dump_failed_entry(&cur, error as u64);
                run.fail_entry(error as u64, cpu);
                break Next::ToUser;
            }
            resume = true;
            let full_reason = cur.read(EXIT_REASON);
            let exited = x86::rdtsc();
            t.stats.exit(full_reason as u16, exited.wrapping_sub(entered));
            st.sregs.cr2 = x86::read_cr2();
            let vectoring = cur.read(IDT_VECTORING_INFO);
            if vectoring & events::info::VALID != 0 {
                let (code, len) = (cur.read(IDT_VECTORING_ERROR_CODE), cur.read(EXIT_INSTRUCTION_LEN));
                if st.events.interrupted(vectoring, code, len) {
                    // The NMI was not delivered: it is not blocking NMIs yet.
                    cur.write(GUEST_INTERRUPTIBILITY, cur.read(GUEST_INTERRUPTIBILITY) & !events::block::NMI);
                }
            }
            let mut exit = Exit {
                cur: &cur,
                gprs: &mut st.gprs,
                run,
                pending_io: &mut st.pending_io,
                cpuid: &st.cpuid,
                msrs: crate::cpu::msr::MsrState {
                    vmcs: Some(&cur),
                    area: &st.msr_area,
                    msrs: &mut st.msrs,
                    sregs: &mut st.sregs,
                    efer_ok,
                    tsc_aux_ok: instructions.rdtscp,
                    speculation,
                    host: false,
                },
                cpu,
                debug: &mut st.debug,
                host_debug: &host_debug,
                xcr0: &mut st.fpu.xcr0,
                features: &features,
                events: &mut st.events,
                want_irq_window: want_window,
                debugger: &dbg,
                cr4_ok,
                skipped: false,
            };
            match exit.handle(full_reason) {
                // Single-stepping: an instruction rvmx emulated completed, that is a step.
                Next::Reenter if exit.skipped && dbg.single_step() => {
                    run.debug(1, linear_rip(&cur), DR6_ACTIVE_LOW | DR6_BS, cur.read(GUEST_DR7));
                    break Next::ToUser;
                }
                // The preemption timer only counts guest time: a guest that exits at once on
                // every entry (an exception loop rvmx reflects) would keep the window, and
                // interrupts, off forever. The host's time bounds it too.
                Next::Reenter if exited.wrapping_sub(window_started) > budget => break Next::Host,
                Next::Reenter => continue,
                next => break next,
            }
        };
        // SAFETY: pairs with `load` above, interrupts still off.
        unsafe { st.fpu.save(&features, host_xcr0) };
        if !dbg.hw_breakpoints() {
            st.debug.dr7 = cur.read(GUEST_DR7);
        }
        host_debug.restore(&mut st.debug);
        guest_state::store(&cur, &st.gprs, &mut st.regs, &mut st.sregs);
        if dbg.single_step() {
            // The debugger's TF is not the guest's.
            st.regs.rflags &= !RFLAGS_TF;
        }
        st.interruptibility = cur.read(GUEST_INTERRUPTIBILITY);
        st.msr_area.store(&cur, &mut st.msrs);
        drop(cur);
        t.running.store(-1, core::sync::atomic::Ordering::SeqCst);
        host.restore();
        mitigations.window_end(&entry_args);
        Ok(next)
    });
    result.map_err(Error::from)?
}

/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;
/// RFLAGS.TF.
const RFLAGS_TF: u64 = 1 << 8;

/// The guest's RIP as a linear address (CS base + RIP), as `KVM_EXIT_DEBUG` reports it.
pub(crate) fn linear_rip(cur: &Current<'_>) -> u64 {
    cur.read(GUEST_CS_BASE).wrapping_add(cur.read(GUEST_RIP))
}

/// The interrupt- and NMI-window controls of the current VMCS, and the event of the next entry.
struct Windows {
    /// The primary controls without window bits.
    base: u32,
    /// The window bits now set.
    on: u32,
    /// NMI windows exist (virtual NMIs).
    nmi: bool,
}

impl Windows {
    fn new(cur: &Current<'_>, caps: &crate::logic::vmx_caps::VmxCaps) -> Self {
        let all = guest_state::PROC_IRQ_WINDOW | guest_state::PROC_NMI_WINDOW;
        let proc = cur.read(PROC_BASED_CONTROLS);
        Self { base: proc & !all, on: proc & all, nmi: guest_state::has_virtual_nmis(caps) }
    }

    /// Before an entry: injects the next event (exceptions exit handlers raised come first),
    /// and opens the windows for what has to wait. Costs nothing while there are no events.
    /// With `block_irqs` (a debugger's BLOCKIRQ) no interrupt is injected or waited for.
    fn arm(&mut self, cur: &Current<'_>, events: &mut Events, want_irq_window: bool, block_irqs: bool) {
        if self.on == 0 && !want_irq_window && *events == Events::default() {
            return;
        }
        let want_irq_window = want_irq_window && !block_irqs;
        let if_flag = cur.read(GUEST_RFLAGS) & RFLAGS_IF != 0 && !block_irqs;
        let mut entry = events.next(if_flag, cur.read(GUEST_INTERRUPTIBILITY), want_irq_window);
        entry.irq_window &= !block_irqs;
        if let Some(i) = entry.inject {
            cur.write(ENTRY_EXCEPTION_ERROR_CODE, i.error_code);
            cur.write(ENTRY_INSTRUCTION_LEN, i.len);
            cur.write(ENTRY_INTR_INFO, i.info);
        }
        let on = if entry.irq_window { guest_state::PROC_IRQ_WINDOW } else { 0 }
            | if entry.nmi_window && self.nmi { guest_state::PROC_NMI_WINDOW } else { 0 };
        if on != self.on {
            cur.write(PROC_BASED_CONTROLS, self.base | on);
            self.on = on;
        }
    }
}

/// Single-stepping: an instruction completed outside the guest (by userspace, or by an
/// ioeventfd) was a step (KVM's `kvm_skip_emulated_instruction`): reports it in `kvm_run`.
fn stepped(st: &RunState, run: &KvmRun) -> bool {
    if !st.debugger.single_step() {
        return false;
    }
    let pc = st.sregs.cs.base.wrapping_add(st.regs.rip);
    run.debug(1, pc, DR6_ACTIVE_LOW | DR6_BS, st.debug.dr7);
    true
}

/// `KVM_RUN` of a vCPU of `vm`; `kvm_run`'s interrupt fields are filled whatever the outcome.
pub(crate) fn run(t: &Target<'_>, st: &mut RunState, run: &KvmRun, vm: &Vm) -> Result<isize> {
    t.stats.run();
    let r = run_loop(t, st, run, vm);
    run.post_run(st);
    if let Some(reason) = run.reason.get() {
        t.stats.user_exit(reason);
    }
    r
}

fn run_loop(t: &Target<'_>, st: &mut RunState, run: &KvmRun, vm: &Vm) -> Result<isize> {
    let mut completed = st.pending_io.is_some() || st.pending.is_some_and(|p| p.completes_step());
    complete_io(st, run);
    if let Some(p) = st.pending.take() {
        st.end_shadow();
        match emulate::complete(vm, &mut st.regs, &st.sregs, run, p, &mut st.emulated) {
            emulate::Outcome::Done => {}
            emulate::Outcome::Exit(next) => {
                st.pending = next;
                return Ok(0);
            }
            emulate::Outcome::Fault(f) => {
                st.raise(f);
                completed = false;
            }
        }
    }
    if completed && stepped(st, run) {
        return Ok(0);
    }
    if run.immediate_exit() {
        run.set_exit_reason(kvm_exit::INTR);
        return Err(EINTR);
    }
    if core::mem::take(&mut st.events.triple_fault) {
        run.set_exit_reason(kvm_exit::SHUTDOWN);
        return Ok(0);
    }
    loop {
        if current!().signal_pending() {
            run.set_exit_reason(kvm_exit::INTR);
            return Err(EINTR);
        }
        crate::host::sched::cond_resched();
        match window(t, st, run)? {
            Next::ToUser => return Ok(0),
            Next::Host | Next::Reenter => {}
            Next::EptFault { gpa, qualification, vectoring, cpu } => {
                match vm.fault_in(gpa, qualification, &mut st.tables)? {
                    Fault::Mapped => t.stats.ept_fault(),
                    // RAM the VMM's mapping cannot give (unmapped, or read-only for a write):
                    // EFAULT with exit reason KVM_EXIT_UNKNOWN, as KVM answers on this host
                    // (it fills in KVM_EXIT_MEMORY_FAULT only for private memory).
                    Fault::HostFault => {
                        run.set_exit_reason(kvm_exit::UNKNOWN);
                        return Err(EFAULT);
                    }
                    Fault::Interrupted => {
                        run.set_exit_reason(kvm_exit::INTR);
                        return Err(EINTR);
                    }
                    // Delivering an event touched MMIO (an IDT or stack outside RAM): no
                    // instruction to emulate, KVM's KVM_INTERNAL_ERROR_DELIVERY_EV.
                    Fault::Mmio(_) if vectoring & events::info::VALID != 0 => {
                        let data = [vectoring as u64, crate::logic::vmx_exit::reason::EPT_VIOLATION as u64, qualification, gpa, cpu as u64];
                        run.internal_error(internal::DELIVERY_EV, &data);
                        return Ok(0);
                    }
                    // No RAM behind it (or a write to a read-only slot): MMIO.
                    Fault::Mmio(mem) => {
                        let before = (st.regs.rip, st.regs.rcx);
                        let outcome = emulate::mmio(mem, &mut st.regs, &st.sregs, run, gpa, qualification, &mut st.emulated);
                        if let Some(exit) = st.emulated_end(before, outcome, run) {
                            return exit;
                        }
                    }
                }
            }
            Next::PortOut { port, size, value } => {
                if !vm.ioeventfd_write(Bus::Pio, port as u64, size as u32, value) {
                    return Ok(0); // kvm_run describes the exit
                }
                // An ioeventfd took it: the OUT completes here, as userspace would have.
                complete_io(st, run);
                if stepped(st, run) {
                    return Ok(0);
                }
            }
            Next::EptMisconfig { gpa } => {
                vm.report_ept_misconfig(gpa, run);
                return Ok(0);
            }
            Next::StringIo { io, len } => {
                let before = (st.regs.rip, st.regs.rcx);
                let outcome = emulate::string_io(vm, &mut st.regs, &st.sregs, run, io, len, &mut st.emulated);
                if let Some(exit) = st.emulated_end(before, outcome, run) {
                    return exit;
                }
            }
            Next::PaePaging { cr0, cr4, len } => {
                // The PDPTEs must be valid and in guest RAM, or the MOV raises #GP(0).
                let new = Sregs { cr0, cr4, ..st.sregs };
                match emulate::pdptes(vm, &new) {
                    Some(p) => {
                        st.sregs.cr0 = cr0;
                        st.sregs.cr4 = cr4;
                        st.pdptes = Some(p);
                        st.regs.rip = st.regs.rip.wrapping_add(len as u64);
                        st.end_shadow();
                    }
                    None => {
                        st.events.exception =
                            Some(events::Exception::raise(events::vector::GP, Some(0)))
                    }
                }
            }
        }
    }
}
