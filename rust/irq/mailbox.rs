// SPDX-License-Identifier: GPL-2.0

//! What reaches a vCPU's local APIC from outside its thread: IPIs from other vCPUs, MSIs,
//! INIT and SIPI, the APIC timer's ticks. The vCPU's own APIC is under its mutex, held for a
//! whole `KVM_RUN`, so senders post here instead (KVM's posted-interrupt descriptor and
//! `pending_events` play this part) and the vCPU takes the post before each entry into the
//! guest and before it sleeps. Posting wakes a vCPU asleep in HLT; the sender then kicks one
//! that is in the guest ([`super::bus`]).
//!
//! The lock is an interrupts-off spinlock: the timer posts from its hrtimer callback.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kernel::{
    current, new_condvar, new_spinlock_irq,
    prelude::*,
    processor::cpu_relax,
    sync::{Arc, CondVar, SpinLockIrq},
    time::{Instant, Monotonic},
};

use crate::logic::{lapic::Address, mp_state::InitSipi};

/// What waits for the vCPU.
#[derive(Default)]
pub(crate) struct Posted {
    /// Fixed interrupts: their IRR bits, and the level-triggered ones among them (TMR).
    pub(crate) irr: [u64; 4],
    pub(crate) level: [u64; 4],
    /// NMIs (KVM's `nmi_queued`; the vCPU keeps at most two pending).
    pub(crate) nmis: u8,
    /// Expiries of the APIC timer not yet delivered.
    pub(crate) timer_ticks: u32,
    /// An SMI (KVM's `KVM_REQ_SMI`).
    pub(crate) smi: bool,
}

#[pin_data]
pub(crate) struct Mailbox {
    /// The vCPU's id.
    pub(crate) vcpu_id: u32,
    #[pin]
    posted: SpinLockIrq<(Posted, InitSipi)>,
    /// Something was posted since the vCPU last looked (changed under the lock; read
    /// without it before each entry).
    work: AtomicBool,
    /// The APIC's [`Address`], packed: senders match destinations against it.
    address: AtomicU64,
    /// A vCPU waiting for an event sleeps here.
    #[pin]
    wake: CondVar,
}

impl Mailbox {
    pub(crate) fn new(vcpu_id: u32, address: Address) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Mailbox {
                vcpu_id,
                posted <- new_spinlock_irq!((Posted::default(), InitSipi::default())),
                work: AtomicBool::new(false),
                address: AtomicU64::new(address.pack()),
                wake <- new_condvar!(),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// The APIC's address as last published.
    pub(crate) fn address(&self) -> Address {
        Address::unpack(self.vcpu_id, self.address.load(Ordering::Acquire))
    }

    /// Publishes the APIC's address after a change to its ID, LDR, DFR or enables.
    pub(crate) fn publish(&self, a: Address) {
        self.address.store(a.pack(), Ordering::Release);
    }

    /// Posts with `f`, then wakes the vCPU if it sleeps. The sender kicks it out of the guest.
    pub(crate) fn post(&self, f: impl FnOnce(&mut Posted, &mut InitSipi)) {
        {
            let mut g = self.posted.lock();
            let (p, i) = &mut *g;
            f(p, i);
            // SeqCst: ordered before the sender's read of where the vCPU runs, as the vCPU
            // orders its own "running" before reading this (no kick is lost).
            self.work.store(true, Ordering::SeqCst);
        }
        self.wake.notify_all();
    }

    /// Whether anything was posted since the last [`Mailbox::take`].
    pub(crate) fn has_work(&self) -> bool {
        self.work.load(Ordering::SeqCst)
    }

    /// Takes the interrupts, NMIs and timer ticks posted; INIT and SIPI stay until the vCPU
    /// acts on them with [`Mailbox::init_sipi`]. Also whether one of those waits.
    pub(crate) fn take(&self) -> (Posted, bool) {
        let mut g = self.posted.lock();
        let (p, i) = &mut *g;
        let taken = core::mem::take(p);
        let init_sipi = i.pending();
        self.work.store(init_sipi, Ordering::SeqCst);
        (taken, init_sipi)
    }

    /// Drops everything posted but INIT and SIPI (`KVM_SET_LAPIC` replaces the state they
    /// were for).
    pub(crate) fn discard(&self) {
        let _ = self.take();
    }

    /// Drops the timer's ticks not yet taken (the timer was stopped or started anew).
    pub(crate) fn clear_timer_ticks(&self) {
        self.posted.lock().0.timer_ticks = 0;
    }

    /// The pending INIT and SIPI, for the vCPU to inspect or act on.
    pub(crate) fn init_sipi<R>(&self, f: impl FnOnce(&mut InitSipi) -> R) -> R {
        let mut g = self.posted.lock();
        let r = f(&mut g.1);
        let pending = g.1.pending() || g.0.nmis != 0 || g.0.timer_ticks != 0 || g.0.irr != [0; 4] || g.0.smi;
        self.work.store(pending, Ordering::SeqCst);
        r
    }

    /// Watches for a post without sleeping (halt polling) until `ns` nanoseconds after
    /// `start`, a signal, or another task waiting for this CPU. Whether something was posted.
    pub(crate) fn poll(&self, start: Instant<Monotonic>, ns: u32) -> bool {
        loop {
            if self.has_work() {
                return true;
            }
            let timed_out = start.elapsed().as_nanos() >= i64::from(ns);
            if timed_out || !crate::host::sched::may_poll() || current!().signal_pending() {
                return false;
            }
            cpu_relax();
        }
    }

    /// Sleeps until something is posted or a signal arrives; whether it went to sleep at all
    /// (not if something was posted already).
    pub(crate) fn wait(&self) -> bool {
        let mut g = self.posted.lock();
        let mut slept = false;
        while !self.work.load(Ordering::SeqCst) {
            slept = true;
            if self.wake.wait_interruptible(&mut g) {
                break;
            }
        }
        slept
    }
}
