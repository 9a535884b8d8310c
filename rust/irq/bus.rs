// SPDX-License-Identifier: GPL-2.0

//! A VM's local APICs as senders see them: each vCPU's [`Mailbox`], in creation order. An IPI
//! or MSI is matched against the addresses they publish (`logic/apic_bus.rs`), posted to each
//! destination, and a destination that is in the guest is kicked out so it takes the post
//! before it enters again. The bus also holds the VM's GSI routes and, once
//! `KVM_CREATE_IRQCHIP` made them, the in-kernel PIC and IOAPIC the routes lead to.

use core::sync::atomic::{AtomicU8, Ordering};
use kernel::{new_spinlock_irq, prelude::*, sync::{Arc, SetOnce, SpinLockIrq}};

use super::{
    irqchip::Irqchip,
    mailbox::Mailbox,
    pit::Ticks,
    resample::{Resamplers, RESAMPLE_SOURCE},
    routing::GsiRoutes,
};
use crate::{
    host::sched::kick_cpu,
    logic::{
        apic_bus,
        ioapic::Delivered,
        irq_routing::Target,
        kvm_abi::MAX_VCPUS,
        lapic::{Irq, Request},
        x2apic_api::X2apicApi,
    },
    mm::guest_memory::GuestMemory,
};

const _: () = assert!(MAX_VCPUS <= apic_bus::MAX_APICS);

/// The interrupt source of `KVM_IRQ_LINE` and irqfds (KVM's `KVM_USERSPACE_IRQ_SOURCE_ID`):
/// a chip pin's line is the OR of its sources.
pub(crate) const USERSPACE_SOURCE: u32 = 0;

#[pin_data]
pub(crate) struct ApicBus {
    /// Who runs where (the vCPUs' windows publish their CPU there).
    memory: Arc<GuestMemory>,
    /// The vCPUs' mailboxes by creation index. Interrupts off: senders include hrtimer
    /// callbacks and eventfd wakeups.
    #[pin]
    members: SpinLockIrq<[Option<Arc<Mailbox>>; MAX_VCPUS]>,
    /// The GSI routes that lead onto it (split irqchip).
    #[pin]
    pub(crate) routes: GsiRoutes,
    /// `KVM_CAP_X2APIC_API`'s settings ([`X2apicApi::to_bits`]).
    api: AtomicU8,
    /// The PIC pair and IOAPIC, once `KVM_CREATE_IRQCHIP` made them.
    irqchip: SetOnce<Arc<Irqchip>>,
    /// The in-kernel PIT's reinjection state, once `KVM_CREATE_PIT2` made it: GSI 0's EOIs
    /// and unmasking reach it.
    pit_ticks: SetOnce<Arc<Ticks>>,
    /// The resampling irqfds' resamplefds, by GSI: acknowledgements reach them.
    #[pin]
    pub(crate) resamplers: Resamplers,
}

impl ApicBus {
    pub(crate) fn new(memory: Arc<GuestMemory>) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(ApicBus {
                memory,
                members <- new_spinlock_irq!([const { None }; MAX_VCPUS]),
                routes <- GsiRoutes::new(),
                api: AtomicU8::new(X2apicApi::default().to_bits()),
                irqchip: SetOnce::new(),
                pit_ticks: SetOnce::new(),
                resamplers <- Resamplers::new(),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// The VM's `KVM_CAP_X2APIC_API` settings.
    pub(crate) fn api(&self) -> X2apicApi {
        X2apicApi::from_bits(self.api.load(Ordering::Relaxed))
    }

    /// New settings (the caller serializes changes).
    pub(crate) fn set_api(&self, api: X2apicApi) {
        self.api.store(api.to_bits(), Ordering::Relaxed);
    }

    /// `KVM_SET_GSI_ROUTING` at `arg`, checked as the VM's settings say.
    pub(crate) fn set_routes(&self, arg: usize) -> Result {
        self.routes.set(arg, self.api().x2apic_format, self.irqchip().is_some())
    }

    /// The in-kernel PIC pair and IOAPIC, if the VM has them.
    pub(crate) fn irqchip(&self) -> Option<&Irqchip> {
        self.irqchip.as_ref().map(|c| &**c)
    }

    /// `KVM_CREATE_IRQCHIP` (the caller checked it may): the chips and their default routes.
    pub(crate) fn create_irqchip(&self) -> Result {
        self.routes.set_default()?;
        if !self.irqchip.populate(Irqchip::new()?) {
            return Err(EEXIST);
        }
        Ok(())
    }

    /// The PIT's reinjection state (set once, by `KVM_CREATE_PIT2`).
    pub(crate) fn set_pit_ticks(&self, ticks: Arc<Ticks>) {
        let _ = self.pit_ticks.populate(ticks);
    }

    /// A chip's pin was acknowledged (its interrupt's EOI, KVM's ack notifiers on the pin's
    /// GSI; no chip lock held): a PIT tick waiting for GSI 0's ack is sent; a resampled line
    /// is lowered and its resamplefds signalled (KVM's `irqfd_resampler_ack`).
    pub(crate) fn pin_acked(&self, pin: Target) {
        let Some(gsi) = self.routes.gsi_of(pin) else { return };
        if gsi == 0 && self.pit_ticks.as_ref().is_some_and(|t| t.acked()) {
            super::pit::pulse(self);
        }
        if self.resamplers.resamples(gsi) {
            let _ = self.set_gsi(gsi, RESAMPLE_SOURCE, false, false);
            self.resamplers.notify(gsi);
        }
    }

    /// An IOAPIC pin's stale request was dropped at its unmasking for its resamplers to look
    /// at (KVM's `kvm_notify_irqfd_resampler`; no chip lock held).
    pub(crate) fn pin_resampled(&self, pin: Target) {
        if let Some(gsi) = self.routes.gsi_of(pin) {
            self.resamplers.notify(gsi);
        }
    }

    /// Whether an irqfd resamples the GSI of a chip's pin (asked under the IOAPIC's lock: the
    /// routes' and the resamplers' locks are taken inside every chip's).
    pub(crate) fn resamples(&self, pin: Target) -> bool {
        self.routes.gsi_of(pin).is_some_and(|gsi| self.resamplers.resamples(gsi))
    }

    /// The IOAPIC pins whose GSI has an ack notifier (KVM's `kvm_irq_has_notifier`): GSI 0
    /// while the PIT reinjects, and the GSIs irqfds resample.
    pub(crate) fn notified_ioapic_pins(&self) -> u32 {
        let pit = self.pit_ticks.as_ref().is_some_and(|t| t.reinjecting());
        let resampled = self.resamplers.gsis();
        if !pit && resampled.is_none() {
            return 0; // no pass over the routes at every EOI
        }
        self.routes.ioapic_pins_where(|gsi| (pit && gsi == 0) || resampled.as_ref().is_some_and(|r| r(gsi)))
    }

    /// The PIC pins whose GSI an irqfd resamples (their acknowledgement lowers the line at
    /// once, [`crate::logic::pic::Pic::set_resampled`]).
    pub(crate) fn resampled_pic_pins(&self) -> u16 {
        match self.resamplers.gsis() {
            Some(r) => self.routes.pic_pins_where(r) as u16,
            None => 0,
        }
    }

    /// A guest unmasked a chip's pin (KVM's mask notifiers; no chip lock held): the PIT
    /// forgets the ticks GSI 0 missed.
    pub(crate) fn pin_unmasked(&self, pin: Target) {
        if let Some(t) = self.pit_ticks.as_ref() {
            if self.routes.gsi_of(pin) == Some(0) {
                t.reset();
            }
        }
    }

    /// Sets `gsi`'s line to `level` for interrupt source `source` on every route of the GSI
    /// (KVM's `kvm_set_irq`): an MSI is sent when raised, a chip pin follows the level.
    /// KVM's status: deliveries summed, 0 coalesced, -1 if nothing took it.
    pub(crate) fn set_gsi(&self, gsi: u32, source: u32, level: bool, line_status: bool) -> i32 {
        let mut ret = -1;
        for target in self.routes.targets(gsi).into_iter().flatten() {
            let r = match target {
                Target::Msi { address_lo, address_hi, data } => {
                    match Irq::from_msi(address_lo, address_hi, data, self.api().x2apic_format).filter(|_| level) {
                        Some(irq) => self.deliver(&irq, None),
                        None => -1,
                    }
                }
                pin => self.irqchip().map_or(-1, |c| c.set_pin(self, pin, source, level, line_status)),
            };
            if r >= 0 {
                ret = r.saturating_add(ret.max(0));
            }
        }
        ret
    }

    /// Adds a vCPU's mailbox; its index (`ENOSPC` if every place is taken, which vCPU
    /// creation's own limit prevents).
    pub(crate) fn join(&self, m: &Arc<Mailbox>) -> Result<usize> {
        let mut members = self.members.lock();
        let (i, slot) = members.iter_mut().enumerate().find(|(_, s)| s.is_none()).ok_or(ENOSPC)?;
        *slot = Some(m.clone());
        Ok(i)
    }

    /// Removes the mailbox at `index` (its vCPU could not be created after all).
    pub(crate) fn leave(&self, index: usize) {
        if let Some(slot) = self.members.lock().get_mut(index) {
            *slot = None;
        }
    }

    /// Delivers `irq` from the APIC at `sender` (an IPI) or from a device (`None`). Returns
    /// KVM's `kvm_irq_delivery_to_apic` count: how many took it (a fixed interrupt counts
    /// where the APIC was enabled when it was posted), or [`apic_bus::undelivered`].
    pub(crate) fn deliver(&self, irq: &Irq, sender: Option<usize>) -> i32 {
        self.deliver_to(irq, sender).count
    }

    /// [`ApicBus::deliver`], with the members posted to.
    pub(crate) fn deliver_to(&self, irq: &Irq, sender: Option<usize>) -> Delivered {
        let members = self.members.lock();
        let addresses = members.each_ref().map(|m| m.as_ref().map(|m| m.address()));
        let targets = apic_bus::destinations(irq, sender, &addresses, self.api().broadcast_quirk_disabled);
        let request = irq.request();
        let mut accepted = 0u32;
        for (i, m) in members.iter().enumerate() {
            let Some(m) = m.as_ref().filter(|_| targets & 1 << i != 0) else { continue };
            let a = addresses.get(i).copied().flatten();
            let counts = match request {
                Request::Fixed { .. } => a.is_some_and(|a| a.hw_enabled && a.sw_enabled),
                Request::Nmi | Request::Init | Request::Sipi(_) | Request::RemoteRead | Request::Smi => true,
                Request::None => false,
            };
            accepted = accepted.saturating_add(u32::from(counts));
            match request {
                Request::Fixed { vector, level_triggered } => m.post(|p, _| {
                    let (word, bit) = (usize::from(vector >> 6), 1u64 << (vector & 63));
                    if let (Some(irr), Some(level)) = (p.irr.get_mut(word), p.level.get_mut(word)) {
                        *irr |= bit;
                        *level = if level_triggered { *level | bit } else { *level & !bit };
                    }
                }),
                Request::Nmi => m.post(|p, _| p.nmis = p.nmis.saturating_add(1)),
                Request::Init => m.post(|_, i| i.latch_init()),
                Request::Sipi(v) => m.post(|_, i| i.latch_sipi(v)),
                Request::Smi => m.post(|p, _| p.smi = true),
                // Remote read only wakes a PV-halted vCPU in KVM.
                Request::RemoteRead | Request::None => continue,
            }
            self.kick(m);
        }
        if targets == 0 {
            // With no vCPU at all KVM has no APIC map: its slow path answers -1.
            let count = if members.iter().all(|m| m.is_none()) { -1 } else { apic_bus::undelivered(irq) };
            return Delivered { count, targets: 0 };
        }
        Delivered { count: i32::try_from(accepted).unwrap_or(i32::MAX), targets: u32::try_from(targets).unwrap_or(u32::MAX) }
    }

    /// The PIC's output rose: wakes the first vCPU whose LINT0 takes ExtINT (KVM's
    /// `pic_unlock`); it asks the PIC for the vector when it can take an interrupt.
    pub(crate) fn kick_extint(&self) {
        let members = self.members.lock();
        if let Some(m) = members.iter().flatten().find(|m| m.address().extint) {
            m.post(|_, _| {});
            self.kick(m);
        }
    }

    /// Whether some vCPU's LINT0 takes ExtINT (KVM's check in `kvm_pic_reset`).
    pub(crate) fn any_takes_extint(&self) -> bool {
        self.members.lock().iter().flatten().any(|m| m.address().extint)
    }

    /// Makes the vCPU of `m` take its post: out of the guest if it is in it (a vCPU asleep
    /// was woken by the post itself).
    pub(crate) fn kick(&self, m: &Mailbox) {
        if let Ok(cpu) = self.memory.running(m.vcpu_id) {
            // SeqCst: after the post's store of `work` (see `Mailbox::post`).
            if let Ok(cpu) = u32::try_from(cpu.load(Ordering::SeqCst)) {
                kick_cpu(cpu);
            }
        }
    }
}
