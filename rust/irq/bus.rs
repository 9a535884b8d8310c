// SPDX-License-Identifier: GPL-2.0

//! A VM's local APICs as senders see them: each vCPU's [`Mailbox`], in creation order. An IPI
//! or MSI is matched against the addresses they publish (`logic/apic_bus.rs`), posted to each
//! destination, and a destination that is in the guest is kicked out so it takes the post
//! before it enters again.

use core::sync::atomic::{AtomicU8, Ordering};
use kernel::{new_spinlock_irq, prelude::*, sync::{Arc, SpinLockIrq}};

use super::{mailbox::Mailbox, routing::GsiRoutes};
use crate::{
    host::sched::kick_cpu,
    logic::{apic_bus, kvm_abi::MAX_VCPUS, lapic::{Irq, Request}, x2apic_api::X2apicApi},
    mm::guest_memory::GuestMemory,
};

const _: () = assert!(MAX_VCPUS <= apic_bus::MAX_APICS);

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
}

impl ApicBus {
    pub(crate) fn new(memory: Arc<GuestMemory>) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(ApicBus {
                memory,
                members <- new_spinlock_irq!([const { None }; MAX_VCPUS]),
                routes <- GsiRoutes::new(),
                api: AtomicU8::new(X2apicApi::default().to_bits()),
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
        self.routes.set(arg, self.api().x2apic_format)
    }

    /// The MSI that `gsi` is routed to, if any.
    pub(crate) fn route(&self, gsi: u32) -> Option<Irq> {
        self.routes.lookup(gsi, self.api())
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
            return apic_bus::undelivered(irq);
        }
        i32::try_from(accepted).unwrap_or(i32::MAX)
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
