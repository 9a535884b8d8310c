// SPDX-License-Identifier: GPL-2.0

//! The host's time as kvmclock reads it: the TSC, KVM's base clock and the real time, read at
//! one instant.

use crate::{host::helpers, logic::kvmclock::Now};

/// The host's time now, and whether its clocksource is a constant-rate TSC (then `tsc` is
/// the value the clocks were computed from, and later TSC values extrapolate them).
pub(crate) fn now() -> (Now, bool) {
    let mut n = Now::default();
    // SAFETY: the helper writes the three `u64`s it is given and reads the timekeeper under
    // its own seqcount; it does not sleep (callers may hold a spinlock).
    let tsc_based = unsafe { helpers::rvmx_clock_snapshot(&mut n.tsc, &mut n.base_ns, &mut n.real_ns) };
    (n, tsc_based)
}

/// The host's time as TSC synchronization reads it (KVM's `kvm_synchronize_tsc`).
pub(crate) fn host_time() -> crate::logic::tsc_sync::HostTime {
    let (n, _) = now();
    // SAFETY: `check_tsc_unstable` only reads a flag the kernel sets when it stops trusting the TSC.
    let tsc_unstable = unsafe { kernel::bindings::check_tsc_unstable() } != 0;
    crate::logic::tsc_sync::HostTime { tsc: n.tsc, ns: n.base_ns, tsc_khz: crate::host::x86::tsc_khz(), tsc_unstable }
}

/// The current thread's time spent waiting for a CPU (the scheduler's `run_delay`, ns), `None`
/// where the kernel does not account it (no `CONFIG_SCHED_INFO`).
pub(crate) fn run_delay() -> Option<u64> {
    let mut ns = 0;
    // SAFETY: the helper writes the one `u64` it is given and reads the current task's own
    // scheduler statistics.
    unsafe { helpers::rvmx_run_delay(&mut ns) }.then_some(ns)
}
