// SPDX-License-Identifier: GPL-2.0

//! The host's clocks as kvmclock reads them: boot time and real time, each with the TSC value
//! it was computed from.

use kernel::bindings;

use crate::host::helpers;

/// A clock and the host TSC read together.
pub(crate) struct Snapshot {
    /// The TSC the clock was computed from; meaningful only if `tsc_based`.
    pub(crate) tsc: u64,
    /// The clock, in nanoseconds.
    pub(crate) ns: u64,
    /// The host's clocksource is a constant-rate TSC: `tsc` and `ns` describe one instant,
    /// and later TSC values extrapolate the clock.
    pub(crate) tsc_based: bool,
}

fn snapshot(which: u32) -> Snapshot {
    let (mut tsc, mut ns) = (0, 0);
    // SAFETY: the helper writes the two `u64`s it is given and reads the timekeeper under
    // its own seqcount; `which` is CLOCK_BOOTTIME or CLOCK_REALTIME, clocks it handles.
    let tsc_based = unsafe { helpers::rvmx_clock_snapshot(which as i32, &mut tsc, &mut ns) };
    Snapshot { tsc, ns, tsc_based }
}

/// CLOCK_BOOTTIME (KVM's `get_kvmclock_base_ns`) with its TSC.
pub(crate) fn boot() -> Snapshot {
    snapshot(bindings::CLOCK_BOOTTIME)
}

/// CLOCK_REALTIME with its TSC.
pub(crate) fn real() -> Snapshot {
    snapshot(bindings::CLOCK_REALTIME)
}
