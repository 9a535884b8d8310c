// SPDX-License-Identifier: GPL-2.0

//! `KVM_IRQFD` with `KVM_IRQFD_FLAG_RESAMPLE` (KVM's irqfd resamplers), for level-triggered
//! lines of the full in-kernel irqchip. Such an irqfd raises its GSI and leaves it high, as
//! its own interrupt source; when the guest acknowledges the interrupt (the PIC's INTA or EOI,
//! the IOAPIC's EOI) the line is lowered and every resamplefd of that GSI is signalled, so the
//! device model looks whether its interrupt is still pending and signals the irqfd again if so.
//!
//! The list is read where acknowledgements happen (inside vCPU windows, interrupts off) and
//! changed only by ioctls: a snapshot behind an interrupts-off spinlock, replaced whole (as the
//! GSI routes are). No lock is held while an eventfd is signalled, since a resamplefd may be
//! another irqfd's eventfd, whose wakeup sets lines on the chips.

use kernel::{new_spinlock_irq, prelude::*, sync::{Arc, SpinLockIrq}};

use crate::host::eventfd::EventFd;

/// The interrupt source resampling irqfds hold their lines with (KVM's
/// `KVM_IRQFD_RESAMPLE_IRQ_SOURCE_ID`).
pub(crate) const RESAMPLE_SOURCE: u32 = 1;

#[derive(Clone)]
struct Entry {
    gsi: u32,
    /// Which irqfd the entry belongs to (an id its VM gave it: two irqfds may share an eventfd
    /// while one of them is being refused).
    owner: u64,
    resamplefd: Arc<EventFd>,
}

type List = KVec<Entry>;

#[pin_data]
pub(crate) struct Resamplers {
    /// `None` while there is none.
    #[pin]
    list: SpinLockIrq<Option<Arc<List>>>,
}

impl Resamplers {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Resamplers { list <- new_spinlock_irq!(None) })
    }

    fn snapshot(&self) -> Option<Arc<List>> {
        self.list.lock().clone()
    }

    /// The list with `change` applied, built outside the lock (process context) and put in
    /// place; the old one is freed when its last reader is done.
    fn update(&self, change: impl FnOnce(&mut List) -> Result) -> Result {
        let mut new = List::new();
        if let Some(old) = self.snapshot() {
            new.extend_from_slice(&old, GFP_KERNEL_ACCOUNT)?;
        }
        change(&mut new)?;
        let new = if new.is_empty() { None } else { Some(Arc::new(new, GFP_KERNEL_ACCOUNT)?) };
        let old = core::mem::replace(&mut *self.list.lock(), new);
        drop(old); // outside the lock
        Ok(())
    }

    /// The irqfd with id `owner` resamples `gsi` through `resamplefd`. The caller (holding the
    /// VM's irqfd list) serializes changes.
    pub(crate) fn add(&self, gsi: u32, owner: u64, resamplefd: EventFd) -> Result {
        let e = Entry { gsi, owner, resamplefd: Arc::new(resamplefd, GFP_KERNEL_ACCOUNT)? };
        self.update(|l| Ok(l.push(e, GFP_KERNEL_ACCOUNT)?))
    }

    /// The irqfd of `owner` is gone: its GSI if no other irqfd resamples it now (the caller
    /// lowers the line, as KVM's `irqfd_resampler_shutdown`).
    pub(crate) fn remove(&self, owner: u64) -> Option<u32> {
        let gsi = self.snapshot()?.iter().find(|e| e.owner == owner)?.gsi;
        // Out of memory here leaves the entry: its resamplefd keeps being signalled (as a
        // spare reference) until the VM goes.
        self.update(|l| {
            l.retain(|e| e.owner != owner);
            Ok(())
        })
        .ok()?;
        (!self.resamples(gsi)).then_some(gsi)
    }

    /// Whether some irqfd resamples `gsi`.
    pub(crate) fn resamples(&self, gsi: u32) -> bool {
        self.snapshot().is_some_and(|l| l.iter().any(|e| e.gsi == gsi))
    }

    /// The GSIs some irqfd resamples, as a predicate on a snapshot; `None` if there is none.
    pub(crate) fn gsis(&self) -> Option<impl Fn(u32) -> bool> {
        let l = self.snapshot()?;
        Some(move |gsi| l.iter().any(|e| e.gsi == gsi))
    }

    /// Signals the resamplefds of `gsi` (KVM's `irqfd_resampler_notify`). Any context; no lock
    /// held.
    pub(crate) fn notify(&self, gsi: u32) {
        if let Some(l) = self.snapshot() {
            for e in l.iter().filter(|e| e.gsi == gsi) {
                e.resamplefd.signal();
            }
        }
    }
}
