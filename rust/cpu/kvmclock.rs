// SPDX-License-Identifier: GPL-2.0

//! A VM's kvmclock, the guest-visible time its vCPUs share: the clock `KVM_GET_CLOCK` and
//! `KVM_SET_CLOCK` read and move, the point it is computed from, and the VM-wide wall-clock
//! MSR. Each vCPU's time page is written from it by `run/pvclock.rs`. It also keeps the
//! vCPUs' TSCs in step (`logic/tsc_sync.rs`).
//!
//! As KVM's master clock, the reference is taken once (at creation and at each
//! `KVM_SET_CLOCK`) while the host's clocksource is a constant-rate TSC: then every vCPU's page
//! says the same thing, stays valid, and carries PVCLOCK_TSC_STABLE. When the host stops using
//! the TSC (noticed at least once a second while a guest uses kvmclock), the clock is rebased
//! on the host's base clock: each page is then computed anew when it is written, and
//! rewritten when the vCPU moves to another CPU. The reference does not follow NTP's
//! corrections of the host clock, as KVM's does not.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::{Acquire, Relaxed, Release}};
use kernel::{new_spinlock, prelude::*, sync::{Arc, SpinLock}};

use crate::{
    host::{clock, x86},
    logic::kvmclock::{Clock, ClockData, Reference, WallClock},
    logic::tsc_sync::TscSync,
};

#[pin_data]
pub(crate) struct VmClock {
    /// Taken only for short computations (never sleeping: the host's clocks are read inside).
    #[pin]
    state: SpinLock<Clock>,
    /// Bumped whenever the reference or the offset change: every time page is then rewritten.
    generation: AtomicU64,
    /// `state`'s reference is stable (read without the lock on each entry).
    stable: AtomicBool,
    /// The TSC when the host's clocksource was last checked (see [`VmClock::recheck`]).
    checked_at: AtomicU64,
    /// MSR_KVM_WALL_CLOCK(_NEW): VM-wide, as KVM keeps it.
    wall_clock: AtomicU64,
    /// KVM's master clock is on: `KVM_GET_CLOCK` reports the stable TSC. It is on while all
    /// vCPUs' TSCs are in one generation, as decided at `KVM_SET_CLOCK` and, after a TSC
    /// change asked for it, at a vCPU's next entry (KVM's `pvclock_update_vm_gtod_copy` and
    /// `KVM_REQ_MASTERCLOCK_UPDATE`).
    master: AtomicBool,
    /// A TSC change asked for the master clock to be decided again at the next entry.
    master_update: AtomicBool,
    /// The vCPUs' TSC generation: the offset a new vCPU or a TSC write from userspace gets.
    #[pin]
    tsc: SpinLock<TscSync>,
}

impl VmClock {
    /// A clock that reads 0 now (KVM starts each VM's kvmclock at its creation).
    pub(crate) fn new() -> Result<Arc<Self>> {
        let (now, stable) = clock::now();
        Arc::pin_init(
            pin_init!(VmClock {
                state <- new_spinlock!(Clock::new(&now, stable, x86::tsc_khz())),
                generation: AtomicU64::new(0),
                stable: AtomicBool::new(stable),
                checked_at: AtomicU64::new(now.tsc),
                wall_clock: AtomicU64::new(0),
                master: AtomicBool::new(false),
                master_update: AtomicBool::new(false),
                tsc <- new_spinlock!(TscSync::default()),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// The TSC offset of a vCPU whose TSC userspace sets to `value`, kept in step with the
    /// VM's other vCPUs as KVM keeps them (`logic/tsc_sync.rs`). `generation` is the vCPU's
    /// (see `VcpuClock::tsc_generation`).
    pub(crate) fn synchronize_tsc(&self, value: u64, generation: &mut u64) -> u64 {
        self.tsc_change(|t, now| t.synchronize(Some(value), now, generation))
    }

    /// The TSC offset of a vCPU just created (after the last point where its creation can fail,
    /// as KVM's `kvm_arch_vcpu_postcreate`).
    pub(crate) fn add_vcpu(&self, generation: &mut u64) -> u64 {
        self.tsc_change(|t, now| t.add_vcpu(now, generation))
    }

    /// `KVM_VCPU_TSC_OFFSET`: userspace sets a vCPU's offset itself.
    pub(crate) fn set_tsc_offset(&self, offset: u64, generation: &mut u64) {
        self.tsc_change(|t, now| t.set_offset(offset, now, generation))
    }

    /// A change to the vCPUs' TSCs, then whether the master clock must be decided again.
    fn tsc_change<R>(&self, f: impl FnOnce(&mut TscSync, crate::logic::tsc_sync::HostTime) -> R) -> R {
        let mut t = self.tsc.lock();
        let r = f(&mut t, clock::host_time());
        if t.master_update_needed(self.master.load(Relaxed)) {
            self.master_update.store(true, Relaxed);
        }
        r
    }

    /// The generation of the reference and offset (see [`VmClock::page_clock`]).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Acquire)
    }

    /// Whether the reference is the stable TSC.
    pub(crate) fn stable(&self) -> bool {
        self.stable.load(Relaxed)
    }

    /// The clock a time page is computed from: with a fresh (unstable) reference if the
    /// clock has no stable one.
    pub(crate) fn page_clock(&self) -> Clock {
        let mut c = *self.state.lock();
        if !c.reference.stable {
            let (now, _) = clock::now();
            c.reference = Reference::at(&now, false);
        }
        c
    }

    /// Checks, at most once a second, whether the host still uses the TSC (a guest using
    /// kvmclock calls this before each entry; the TSC read is its only cost in between). If
    /// not, the clock is rebased on the base clock and every page rewritten without the
    /// stable bit (KVM leaves its master clock at the next entry after the change).
    pub(crate) fn recheck(&self) {
        let tsc = x86::rdtsc();
        let second = u64::from(x86::tsc_khz()).saturating_mul(1000);
        if !self.stable() || tsc.wrapping_sub(self.checked_at.load(Relaxed)) < second {
            return;
        }
        self.checked_at.store(tsc, Relaxed);
        let mut c = self.state.lock();
        let (now, tsc_based) = clock::now();
        if c.reference.stable && !tsc_based {
            c.rebase(&now, false);
            self.stable.store(false, Relaxed);
            self.generation.fetch_add(1, Release);
        }
    }

    /// `KVM_GET_CLOCK`.
    pub(crate) fn get(&self) -> ClockData {
        let c = self.state.lock();
        let (now, tsc_based) = clock::now();
        c.get(&now, self.master.load(Relaxed), tsc_based)
    }

    /// A vCPU is about to enter the guest: the master clock is decided again if a TSC change
    /// asked for it.
    pub(crate) fn vcpu_runs(&self) {
        if self.master_update.load(Relaxed) && self.master_update.swap(false, Relaxed) {
            self.master.store(self.tsc.lock().vcpus_matched(), Relaxed);
        }
    }

    /// `KVM_SET_CLOCK`; `EINVAL` for flags KVM does not know.
    pub(crate) fn set(&self, data: &ClockData) -> Result {
        let mut c = self.state.lock();
        let (now, tsc_based) = clock::now();
        c.set(data, &now, tsc_based).map_err(|()| EINVAL)?;
        self.stable.store(tsc_based, Relaxed);
        self.master.store(self.tsc.lock().vcpus_matched(), Relaxed);
        self.generation.fetch_add(1, Release);
        Ok(())
    }

    /// The wall-clock page's time (the version is the caller's): the real time at which the
    /// kvmclock read 0.
    pub(crate) fn wall_clock(&self, version: u32) -> WallClock {
        let c = self.state.lock();
        let (now, _) = clock::now();
        c.wall_clock(&now, version)
    }

    /// MSR_KVM_WALL_CLOCK(_NEW).
    pub(crate) fn wall_clock_msr(&self) -> u64 {
        self.wall_clock.load(Relaxed)
    }

    pub(crate) fn set_wall_clock_msr(&self, v: u64) {
        self.wall_clock.store(v, Relaxed);
    }
}
