// SPDX-License-Identifier: GPL-2.0

//! A VM's kvmclock: the clock `KVM_GET_CLOCK` and `KVM_SET_CLOCK` read and move, the point it
//! is computed from, and the VM-wide wall-clock MSR. Each vCPU's time page is written from it
//! by `run/pvclock.rs`.
//!
//! As KVM's master clock, the reference is taken once (at creation and at each
//! `KVM_SET_CLOCK`) while the host's clocksource is a constant-rate TSC: then every vCPU's page
//! says the same thing, stays valid, and carries PVCLOCK_TSC_STABLE. On other hosts each page
//! is computed anew from the host's time when it is written, and rewritten when the vCPU moves
//! to another CPU. The reference is not moved with NTP's corrections of the host clock, as
//! KVM's is not.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::{Acquire, Relaxed, Release}};
use kernel::{new_spinlock, prelude::*, sync::{Arc, SpinLock}};

use crate::{
    host::{clock, x86},
    logic::kvmclock::{self, ClockData, Reference, WallClock},
};

#[pin_data]
pub(crate) struct VmClock {
    #[pin]
    state: SpinLock<kvmclock::VmClock>,
    /// Bumped whenever the reference or the offset change: every time page is then rewritten.
    generation: AtomicU64,
    /// `state`'s reference is stable (read without the lock on each entry).
    stable: AtomicBool,
    /// MSR_KVM_WALL_CLOCK(_NEW): VM-wide, as KVM keeps it.
    wall_clock: AtomicU64,
    /// A vCPU of the VM has entered the guest (`KVM_GET_CLOCK` reports the stable TSC from then
    /// on, as KVM's master clock starts at a vCPU's first entry).
    vcpu_ran: AtomicBool,
}

/// The host's boot time now, as a reference: the TSC it was computed from when the
/// clocksource is the TSC, else the TSC read right after (KVM's fallback).
fn reference_now() -> Reference {
    let b = clock::boot();
    let tsc = if b.tsc_based { b.tsc } else { x86::rdtsc() };
    Reference { tsc, boot_ns: b.ns, stable: b.tsc_based }
}

impl VmClock {
    /// A clock that reads 0 now (KVM starts each VM's kvmclock at its creation).
    pub(crate) fn new() -> Result<Arc<Self>> {
        let reference = reference_now();
        let state = kvmclock::VmClock { reference, offset: 0u64.wrapping_sub(reference.boot_ns), tsc_khz: x86::tsc_khz() };
        Arc::pin_init(
            pin_init!(VmClock {
                state <- new_spinlock!(state),
                generation: AtomicU64::new(0),
                stable: AtomicBool::new(reference.stable),
                wall_clock: AtomicU64::new(0),
                vcpu_ran: AtomicBool::new(false),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// The generation of the reference and offset (see [`VmClock::now`]).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Acquire)
    }

    /// Whether the reference is the stable TSC.
    pub(crate) fn stable(&self) -> bool {
        self.stable.load(Relaxed)
    }

    /// The clock as a time page is computed from: with a fresh reference if it is not stable.
    pub(crate) fn now(&self) -> kvmclock::VmClock {
        let mut c = *self.state.lock();
        if !c.reference.stable {
            c.reference = reference_now();
        }
        c
    }

    /// Records that the host's clocksource is no longer a stable TSC: pages are recomputed
    /// from the host's time from now on (KVM leaves its master clock then too).
    fn lost_stable(&self, c: &mut kvmclock::VmClock, boot_ns: u64) {
        let clock = c.at(x86::rdtsc(), boot_ns);
        c.reference = Reference { tsc: x86::rdtsc(), boot_ns, stable: false };
        c.offset = clock.wrapping_sub(boot_ns);
        self.stable.store(false, Relaxed);
        self.generation.fetch_add(1, Release);
    }

    /// `KVM_GET_CLOCK`.
    pub(crate) fn get(&self) -> ClockData {
        let real = clock::real();
        let boot_ns = clock::boot().ns; // used without a stable reference
        let mut c = self.state.lock();
        if c.reference.stable && !real.tsc_based {
            self.lost_stable(&mut c, boot_ns);
        }
        c.get(real.tsc, real.ns, boot_ns, self.vcpu_ran.load(Relaxed))
    }

    /// A vCPU is about to enter the guest.
    pub(crate) fn vcpu_runs(&self) {
        if !self.vcpu_ran.load(Relaxed) {
            self.vcpu_ran.store(true, Relaxed);
        }
    }

    /// `KVM_SET_CLOCK`; `EINVAL` for flags KVM does not know.
    pub(crate) fn set(&self, data: &ClockData) -> Result {
        let reference = reference_now();
        let real_ns = clock::real().ns;
        let mut c = self.state.lock();
        c.set(data, reference, real_ns).map_err(|()| EINVAL)?;
        self.stable.store(reference.stable, Relaxed);
        self.generation.fetch_add(1, Release);
        Ok(())
    }

    /// The wall-clock page's time (the version is the caller's): the real time at which the
    /// kvmclock read 0.
    pub(crate) fn wall_clock(&self, version: u32) -> WallClock {
        let real = clock::real();
        let c = self.now();
        let kvmclock = if c.reference.stable && real.tsc_based { c.at(real.tsc, 0) } else { c.at(0, clock::boot().ns) };
        kvmclock::VmClock::wall_clock(real.ns, kvmclock, version)
    }

    /// MSR_KVM_WALL_CLOCK(_NEW).
    pub(crate) fn wall_clock_msr(&self) -> u64 {
        self.wall_clock.load(Relaxed)
    }

    pub(crate) fn set_wall_clock_msr(&self, v: u64) {
        self.wall_clock.store(v, Relaxed);
    }
}
