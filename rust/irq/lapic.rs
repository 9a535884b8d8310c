// SPDX-License-Identifier: GPL-2.0

//! A vCPU's in-kernel local APIC (split irqchip, `KVM_CAP_SPLIT_IRQCHIP`, or the full one of
//! `KVM_CREATE_IRQCHIP`): the register model of `logic/lapic.rs`, reached through the xAPIC
//! MMIO page, the x2APIC MSRs, IA32_APIC_BASE and `KVM_GET/SET_LAPIC`. With the full irqchip,
//! LINT0's ExtINT comes from the in-kernel PIC and EOIs go to the in-kernel IOAPIC.
//!
//! Its fixed interrupts are injected when the guest takes them (`run/window.rs`). IPIs go to
//! the VM's APICs through the [`ApicBus`], which posts them in each destination's
//! [`Mailbox`]; the vCPU takes its own post before each entry. The timer runs on an hrtimer
//! ([`ApicTimer`]) in one-shot, periodic and TSC-deadline modes. It also holds the vCPU's MP
//! state and acts on INIT and SIPI.

use kernel::{prelude::*, sync::Arc};

use super::{bus::ApicBus, mailbox::Mailbox, timer::ApicTimer, vapic::VirtualApicPage};
use crate::logic::{
    arch::apic_base,
    cpuid_table::{self, CpuidEntry},
    events::Events,
    kvm_abi::LapicState,
    lapic::{self as model, reg, Accepted, Caps, Effect, Lapic, TimerMode},
    mp_state::{self, MpState},
};

/// The APIC page's size.
const PAGE: u64 = 0x1000;

pub(crate) struct LocalApic {
    apic: Lapic,
    /// The userspace PIC's interrupt (`KVM_INTERRUPT` in split mode, KVM's
    /// `pending_external_vector`), taken through LINT0 as ExtINT.
    extint: Option<u8>,
    /// What other vCPUs, devices and the timer sent it.
    mailbox: Arc<Mailbox>,
    /// The VM's APICs, and this one's place among them.
    bus: Arc<ApicBus>,
    index: usize,
    /// The vCPU's activity state.
    mp_state: MpState,
    /// The timer, and IA32_TSC_DEADLINE (0: none armed).
    timer: ApicTimer,
    tsc_deadline: u64,
    /// An EOI the userspace IOAPIC must see (`KVM_EXIT_IOAPIC_EOI` before the next entry).
    eoi_exit: Option<u8>,
    /// The VM's APIC bus period (`KVM_CAP_X86_APIC_BUS_CYCLES_NS`), in nanoseconds.
    bus_cycle_ns: u64,
    /// Where the processor keeps the guest's TPR while it runs (TPR shadow).
    vapic: VirtualApicPage,
}

impl LocalApic {
    /// vCPU `vcpu_id`'s APIC after creation (`bsp`: the VM's boot CPU), on `bus` ticking every
    /// `bus_cycle_ns` (`lint0_reenabled`: KVM's quirk of that name is in force).
    pub(crate) fn new(vcpu_id: u32, bsp: bool, bus: Arc<ApicBus>, bus_cycle_ns: u64, lint0_reenabled: bool) -> Result<Self> {
        let mut apic = Lapic::new(vcpu_id, bsp);
        if !lint0_reenabled {
            apic.reset(false, bsp, false);
        }
        let mailbox = Mailbox::new(vcpu_id, apic.address())?;
        let timer = ApicTimer::new(mailbox.clone(), bus.clone())?;
        let vapic = VirtualApicPage::new()?;
        let index = bus.join(&mailbox)?;
        Ok(Self { apic, extint: None, mailbox, bus, index, mp_state: MpState::initial(true, bsp), timer, tsc_deadline: 0, eoi_exit: None, bus_cycle_ns, vapic })
    }

    /// The vCPU's activity state.
    pub(crate) fn mp_state(&self) -> MpState {
        self.mp_state
    }

    /// `KVM_SET_MP_STATE` (checked by the caller); SIPI_RECEIVED also pends a SIPI.
    pub(crate) fn set_mp_state(&mut self, state: MpState, sipi: bool) {
        self.mp_state = state;
        if sipi {
            self.mailbox.post(|_, i| i.pend_sipi());
        }
    }

    /// HLT: the vCPU sleeps until an event.
    pub(crate) fn halt(&mut self) {
        self.mp_state = MpState::Halted;
    }

    /// The vCPU blocked and may run again (`vcpu_block`).
    pub(crate) fn wake(&mut self) {
        self.mp_state = self.mp_state.woken();
    }

    /// The mailbox, to sleep on until something is posted.
    pub(crate) fn mailbox(&self) -> &Mailbox {
        &self.mailbox
    }

    /// Whether the APIC is the BSP's (IA32_APIC_BASE.BSP, KVM's `kvm_vcpu_is_bsp`).
    fn bsp(&self) -> bool {
        self.apic.apic_base() & apic_base::BSP != 0
    }

    /// Whether an INIT or SIPI waits to be acted on (`kvm_apic_has_pending_init_or_sipi`).
    pub(crate) fn init_sipi_pending(&self) -> bool {
        self.mailbox.init_sipi(|i| i.pending())
    }

    /// Acts on a pending INIT and SIPI (`kvm_apic_accept_events`): what the vCPU must do.
    /// An INIT has already reset the APIC (`lint0_reenabled`: KVM's quirk of that name).
    pub(crate) fn accept_init_sipi(&mut self, lint0_reenabled: bool) -> mp_state::Accepted {
        let bsp = self.bsp();
        let (mailbox, state) = (&self.mailbox, &mut self.mp_state);
        let a = mailbox.init_sipi(|i| i.accept(state, bsp));
        if a.init {
            self.apic.reset(true, bsp, lint0_reenabled);
            self.timer.cancel();
            self.tsc_deadline = 0;
            self.publish();
        }
        a
    }

    /// Takes what was posted: fixed interrupts into IRR (as `__apic_accept_irq` with this
    /// APIC's state now), NMIs and SMIs into `events`. Returns whether an INIT or SIPI waits (acted
    /// on outside the guest, where the vCPU's whole state is at hand).
    pub(crate) fn take_posted(&mut self, events: &mut Events, nmi_masked: bool) -> bool {
        if !self.mailbox.has_work() {
            return false;
        }
        let (p, init_sipi) = self.mailbox.take();
        for (w, (irr, level)) in p.irr.iter().zip(p.level.iter()).enumerate() {
            let mut bits = *irr;
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits.wrapping_sub(1);
                // w < 4, b < 64: a vector.
                let _ = self.apic.accept_fixed(((w as u32) << 6 | b) as u8, level & 1 << b != 0);
            }
        }
        let mut nmis = p.nmis;
        events.smi_pending |= p.smi;
        // Ticks not taken yet are one interrupt (KVM's kvm_inject_apic_timer_irqs).
        if p.timer_ticks != 0 {
            match self.apic.local_deliver(reg::LVTT) {
                Accepted::Nmi => nmis = nmis.saturating_add(1),
                Accepted::Smi => events.smi_pending = true,
                _ => {}
            }
            if self.apic.timer_mode() == TimerMode::TscDeadline {
                self.tsc_deadline = 0;
            }
        }
        for _ in 0..nmis {
            events.queue_nmi(nmi_masked);
        }
        init_sipi
    }

    /// IA32_MCG_CAP's MCG_CMCI_P changed: the LVT CMCI entry appears or goes.
    pub(crate) fn set_cmci(&mut self, cmci: bool) {
        self.apic.set_cmci(cmci);
    }

    /// Signals a corrected machine-check interrupt (`kvm_apic_local_deliver(APIC_LVTCMCI)`) in
    /// the LVT's delivery mode: its vector into IRR, an NMI into `events`, an INIT or STARTUP
    /// latched in the mailbox as from another vCPU, an SMI into `events` (remote read does
    /// nothing, as for IPIs).
    pub(crate) fn deliver_cmci(&mut self, events: &mut Events, nmi_masked: bool) {
        match self.apic.local_deliver(reg::LVTCMCI) {
            Accepted::Nmi => events.queue_nmi(nmi_masked),
            Accepted::Smi => events.smi_pending = true,
            Accepted::Init => self.mailbox.post(|_, i| i.latch_init()),
            Accepted::Sipi(v) => self.mailbox.post(|_, i| i.latch_sipi(v)),
            Accepted::Dropped | Accepted::Fixed | Accepted::RemoteRead => {}
        }
    }

    /// Entering or leaving SMM: in SMM an INIT waits for RSM and a SIPI is dropped
    /// (`kvm_apic_init_sipi_allowed`); one that waited is pending again after.
    pub(crate) fn set_smm(&self, on: bool) {
        self.mailbox.init_sipi(|i| i.set_blocked(on));
    }

    /// Whether an INIT is latched (`KVM_GET_VCPU_EVENTS`' `smi.latched_init`).
    pub(crate) fn init_latched(&self) -> bool {
        self.mailbox.init_sipi(|i| i.init_latched())
    }

    /// Latches or drops an INIT (`KVM_SET_VCPU_EVENTS` with the SMM state).
    pub(crate) fn set_init_latched(&self, on: bool) {
        self.mailbox.init_sipi(|i| i.set_init_latched(on));
    }

    /// Drops what was posted (before `KVM_SET_LAPIC`, as KVM clears its posted interrupts).
    pub(crate) fn discard_posted(&mut self) {
        self.mailbox.discard();
    }

    /// An EOI to report to userspace, once.
    pub(crate) fn take_eoi_exit(&mut self) -> Option<u8> {
        self.eoi_exit.take()
    }

    /// The timer's period from TMICT, TDCR and the mode (KVM's `lapic_timer.period`).
    fn timer_period(&self) -> u64 {
        let mode = self.apic.timer_mode();
        if mode == TimerMode::TscDeadline {
            return 0;
        }
        model::period_ns(self.apic.get(reg::TMICT), self.apic.divide(), self.bus_cycle_ns, mode)
    }

    /// TMCCT now (`apic_get_tmcct`).
    fn tmcct(&self) -> u32 {
        let remaining = self.timer.remaining_ns().unwrap_or(-1);
        model::tmcct(self.apic.get(reg::TMICT), self.timer_period(), remaining, self.apic.divide(), self.bus_cycle_ns)
    }

    /// Starts the timer for `ns` from now, then periodically if the mode is periodic.
    fn start_timer(&mut self, ns: u64) {
        let period = self.timer_period();
        let periodic = self.apic.timer_mode() == TimerMode::Periodic;
        self.timer.start(ns, if periodic { period } else { 0 });
    }

    /// IA32_TSC_DEADLINE as the guest reads it: 0 outside TSC-deadline mode (KVM).
    pub(crate) fn tsc_deadline(&self) -> u64 {
        if self.apic.timer_mode() == TimerMode::TscDeadline { self.tsc_deadline } else { 0 }
    }

    /// A write of IA32_TSC_DEADLINE when the guest's TSC reads `now` (KVM's
    /// `kvm_set_lapic_tscdeadline_msr`): ignored outside TSC-deadline mode; 0 disarms; a
    /// deadline passed expires at once.
    pub(crate) fn set_tsc_deadline(&mut self, deadline: u64, now: u64) {
        if !self.apic.hw_enabled() || self.apic.timer_mode() != TimerMode::TscDeadline {
            return;
        }
        self.timer.cancel();
        self.tsc_deadline = deadline;
        self.arm_tsc_deadline(now);
    }

    /// Arms the timer for `tsc_deadline` from the guest TSC `now`.
    fn arm_tsc_deadline(&mut self, now: u64) {
        if self.tsc_deadline == 0 {
            return;
        }
        let Some(ticks) = self.tsc_deadline.checked_sub(now).filter(|t| *t != 0) else {
            self.mailbox.post(|p, _| p.timer_ticks = p.timer_ticks.saturating_add(1));
            return;
        };
        self.timer.start(model::tsc_ticks_to_ns(ticks, crate::host::x86::tsc_khz()), 0);
    }

    /// Publishes the APIC's address for senders.
    fn publish(&self) {
        self.mailbox.publish(self.apic.address());
    }

    /// `KVM_GET_LAPIC` (x2APIC IDs as `KVM_CAP_X2APIC_API` says).
    pub(crate) fn state(&self) -> LapicState {
        LapicState { regs: self.apic.get_state(self.tmcct(), self.bus.api().x2apic_format) }
    }

    /// `KVM_SET_LAPIC`; `EINVAL` for a state KVM refuses.
    /// The timer restarts from the TMCCT given (KVM's `__start_apic_timer(apic, APIC_TMCCT)`);
    /// `now` is the guest's TSC, for a TSC deadline armed before.
    pub(crate) fn set_state(&mut self, s: &LapicState, now: u64) -> Result {
        let r = self.apic.set_state(&s.regs, self.bus.api().x2apic_format);
        self.publish();
        self.timer.cancel();
        let count = r.map_err(|_| EINVAL)?;
        let mode = self.apic.timer_mode();
        if mode == TimerMode::TscDeadline {
            self.arm_tsc_deadline(now);
        } else {
            let period = self.timer_period();
            if period != 0 {
                self.start_timer(model::restore_deadline_ns(mode, count, period, self.apic.divide(), self.bus_cycle_ns));
            }
        }
        Ok(())
    }

    /// What the guest's CPUID table allows (x2APIC, TSC-deadline, MAXPHYADDR).
    pub(crate) fn set_cpuid(&mut self, table: &[CpuidEntry]) {
        let l1 = cpuid_table::lookup(table, 1, 0);
        // KVM's cpuid_query_maxphyaddr: 0x80000008 EAX[7:0] if the table reaches it, else 36.
        let reaches = cpuid_table::lookup(table, 0x8000_0000, 0)[0] >= 0x8000_0008;
        let phys = if reaches { cpuid_table::lookup(table, 0x8000_0008, 0)[0] as u8 } else { 36 };
        self.apic.set_cpuid(Caps {
            x2apic: l1[2] & cpuid_table::LEAF1_ECX_X2APIC != 0,
            tsc_deadline: l1[2] & cpuid_table::LEAF1_ECX_TSC_DEADLINE != 0,
            // As KVM_CAP_X2APIC_API and the in-kernel IOAPIC (which has no EOI register) say.
            directed_eoi: self.bus.api().advertise_directed_eoi(self.bus.irqchip().is_some()),
            maxphyaddr: phys,
        });
    }

    /// IA32_APIC_BASE.
    pub(crate) fn apic_base(&self) -> u64 {
        self.apic.apic_base()
    }

    /// WRMSR IA32_APIC_BASE (`host`: userspace's `KVM_SET_MSRS`/`KVM_SET_SREGS`); `Err` is #GP.
    pub(crate) fn set_apic_base(&mut self, v: u64, host: bool) -> Result<(), ()> {
        let e = self.apic.set_apic_base(v, host).map_err(|_| ())?;
        self.apply(e);
        Ok(())
    }

    /// The TPR as CR8 shows it.
    pub(crate) fn cr8(&self) -> u64 {
        self.apic.cr8()
    }

    /// MOV to CR8 (or `kvm_run.cr8`): the TPR.
    pub(crate) fn set_cr8(&mut self, cr8: u64) {
        self.apic.set_cr8(cr8);
    }

    /// The virtual-APIC page's physical address, for the VMCS (TPR shadow).
    pub(crate) fn vapic_phys(&self) -> u64 {
        self.vapic.phys()
    }

    /// Before an entry with the TPR shadow: the TPR into the virtual-APIC page, and the TPR
    /// threshold the VMCS needs for it (KVM's `update_cr8_intercept`); `highest_irr`: IRR's
    /// highest vector as it is now ([`LocalApic::highest_irr`]).
    pub(crate) fn load_vtpr(&mut self, highest_irr: Option<u8>) -> u32 {
        self.vapic.set_tpr(self.apic.tpr());
        self.apic.tpr_threshold_for(highest_irr)
    }

    /// IRR's highest vector: the checks before an entry scan IRR once and share the result
    /// until something changes IRR.
    pub(crate) fn highest_irr(&self) -> Option<u8> {
        self.apic.highest_irr()
    }

    /// After an exit with the TPR shadow: the TPR the guest's MOV to CR8 left in the page
    /// (KVM's `kvm_lapic_sync_from_vapic` for the TPR alone).
    pub(crate) fn sync_vtpr(&mut self) {
        let tpr = self.vapic.tpr();
        if tpr != self.apic.tpr() {
            self.apic.set_tpr(tpr);
        }
    }

    /// RDMSR of an x2APIC register (0x800-0x8ff); `None` is #GP.
    pub(crate) fn msr_read(&self, msr: u32) -> Option<u64> {
        self.apic.x2apic_read(msr, self.tmcct()).ok()
    }

    /// WRMSR of an x2APIC register; `Err` is #GP.
    pub(crate) fn msr_write(&mut self, msr: u32, v: u64) -> Result<(), ()> {
        let e = self.apic.x2apic_write(msr, v).map_err(|_| ())?;
        self.apply(e);
        Ok(())
    }

    /// Where `gpa` is in the APIC page, if it is (KVM's `apic_mmio_in_range`).
    fn offset(&self, gpa: u64) -> Option<u32> {
        let off = gpa.wrapping_sub(self.apic.base_address());
        (off < PAGE).then_some(off as u32)
    }

    /// `KVM_INTERRUPT` in split mode: the PIC's vector, `EEXIST` while one waits (KVM).
    pub(crate) fn queue_extint(&mut self, vector: u8) -> Result {
        if self.extint.is_some() {
            return Err(EEXIST);
        }
        self.extint = Some(vector);
        Ok(())
    }

    /// Whether userspace may queue a PIC interrupt now and see it taken: its PIC is the one
    /// (not the kernel's), none waits and LINT0 takes ExtINT (KVM's `kvm_cpu_accept_dm_intr`;
    /// with the PIC in the kernel KVM ignores userspace's interrupt window).
    pub(crate) fn accepts_extint(&self) -> bool {
        !self.pic_in_kernel() && self.extint.is_none() && self.apic.accept_pic_intr()
    }

    /// Whether the VM's PIC is in the kernel (`KVM_CREATE_IRQCHIP`).
    pub(crate) fn pic_in_kernel(&self) -> bool {
        self.bus.irqchip().is_some()
    }

    /// Whether the PIC asks for an interrupt that LINT0 takes: userspace's (split irqchip) or
    /// the in-kernel PIC's output (KVM's `kvm_cpu_has_extint`).
    fn has_extint(&self) -> bool {
        self.apic.accept_pic_intr() && (self.extint.is_some() || self.bus.irqchip().is_some_and(|c| c.pic_output()))
    }

    /// Whether an interrupt is deliverable: the PIC's through LINT0, or a fixed one in IRR
    /// above the processor priority.
    pub(crate) fn has_interrupt(&self) -> bool {
        self.has_interrupt_with(self.apic.highest_irr())
    }

    /// [`LocalApic::has_interrupt`] with IRR's highest vector `highest_irr` scanned already.
    pub(crate) fn has_interrupt_with(&self, highest_irr: Option<u8>) -> bool {
        self.has_extint() || self.apic.highest_pending_of(highest_irr).is_some()
    }

    /// The interrupt to inject now: the PIC's first (KVM's `kvm_cpu_get_interrupt`; the
    /// in-kernel PIC's INTA cycle gives its vector), else the APIC's, acknowledged (IRR to ISR).
    pub(crate) fn take_interrupt(&mut self) -> Option<u8> {
        if self.has_extint() {
            if let Some(v) = self.extint.take() {
                return Some(v);
            }
            if let Some(c) = self.bus.irqchip() {
                return Some(c.read_extint(&self.bus));
            }
        }
        let v = self.apic.highest_pending()?;
        self.apic.ack(v);
        Some(v)
    }

    /// Effects a register write asks for: an IPI is sent; a change of ID, LDR, DFR or the
    /// enables is published; the timer starts, stops or changes; an EOI the userspace IOAPIC
    /// asked for (a level-triggered route of one of its pins) is reported.
    fn apply(&mut self, e: Effect) {
        match e {
            Effect::SendIpi(irq) => {
                let _ = self.bus.deliver(&irq, Some(self.index));
            }
            // To the in-kernel IOAPIC where it handles the vector; with a split irqchip, a
            // directed EOI stays in the guest only where userspace enabled suppression (the
            // default, KVM's quirk, sends it out anyway).
            Effect::Eoi(e) => {
                let api = self.bus.api();
                let address = self.apic.address();
                if let Some(c) = self.bus.irqchip() {
                    c.eoi(&self.bus, self.index, &address, e.vector, e.level_triggered, api.suppresses(e.directed, true));
                } else if !api.suppresses(e.directed, false) && self.bus.routes.ioapic_eoi(e.vector, &address, api) {
                    self.eoi_exit = Some(e.vector);
                }
            }
            // Published below.
            Effect::MapChanged | Effect::Spiv { .. } | Effect::ApicBase { .. } => {}
            // TMICT: from the new count; 0 stops it.
            Effect::TimerStart => match self.timer_period() {
                0 => self.timer.cancel(),
                p => self.start_timer(p),
            },
            // TDCR: the time left scales with the divisor (KVM's update_target_expiration).
            Effect::TimerDivide { old, new } => {
                if let Some(left) = self.timer.remaining_ns().filter(|_| self.timer_period() != 0) {
                    self.start_timer(model::rescale_ns(u64::try_from(left).unwrap_or(0), old, new));
                }
            }
            Effect::TimerMode { cancel: true, .. } => {
                self.timer.cancel();
                self.tsc_deadline = 0;
            }
            Effect::TimerMode { new, .. } => {
                self.timer.set_period(if new == TimerMode::Periodic { self.timer_period() } else { 0 });
            }
            Effect::None | Effect::Tpr { .. } => {}
        }
        // Any write may change what senders match (ID, LDR, DFR, the enables) or whether LINT0
        // takes the PIC's interrupts (LVT0): one atomic store.
        self.publish();
    }
}

impl Drop for LocalApic {
    fn drop(&mut self) {
        self.bus.leave(self.index);
    }
}

impl crate::run::emulate::LocalMmio for LocalApic {
    /// A guest read of the APIC page (all ones in the MMIO hole, 0 where KVM leaves the
    /// destination as it was).
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> bool {
        let Some(offset) = self.offset(gpa) else { return false };
        // The MMIO hole reads all ones whatever the width (KVM's memset).
        if !self.apic.hw_enabled() || self.apic.x2apic_mode() {
            buf.fill(0xff);
            return true;
        }
        let v = self.apic.read(offset, buf.len() as u32, self.tmcct()).unwrap_or(0).to_le_bytes();
        buf.fill(0);
        for (b, v) in buf.iter_mut().zip(v.iter()) {
            *b = *v;
        }
        true
    }

    /// A guest write: only 4 bytes at a 16-byte aligned offset take effect, as on KVM.
    fn write(&mut self, gpa: u64, bytes: &[u8]) -> bool {
        let Some(offset) = self.offset(gpa) else { return false };
        if let Ok(word) = <[u8; 4]>::try_from(bytes) {
            let e = self.apic.write(offset, u32::from_le_bytes(word));
            self.apply(e);
        }
        true
    }
}
