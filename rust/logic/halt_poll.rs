// SPDX-License-Identifier: GPL-2.0

//! Halt polling, as KVM's `kvm_vcpu_halt`: a vCPU whose guest halts with an in-kernel APIC
//! first watches for a wake-up event for a short while before it sleeps, because a sleep and
//! a wake-up (two context switches and an IPI) cost far more than a wait of a few
//! microseconds when the event comes soon, as it does for IPIs between a guest's CPUs and for
//! short timer waits. The time polled adapts per vCPU: it grows while halts end within the
//! maximum, and shrinks (to nothing) after halts that outlast it, so an idle guest does not
//! spin the host's CPU.
//!
//! The maximum is the module parameter `halt_poll_ns` (200 µs, KVM's x86 default), or a VM's
//! own (`KVM_ENABLE_CAP(KVM_CAP_HALT_POLL)`); 0 turns polling off.

/// KVM's default maximum on x86 (`KVM_HALT_POLL_NS_DEFAULT`), in nanoseconds.
pub const DEFAULT_MAX_NS: u32 = 200_000;

/// KVM's `halt_poll_ns_grow`: the time polled doubles after a short halt...
const GROW: u32 = 2;
/// ... starting from `halt_poll_ns_grow_start` (10 µs)...
const GROW_START: u32 = 10_000;
/// ... and halves after a long one (`halt_poll_ns_shrink`), to 0 below the start.
const SHRINK: u32 = 2;

/// One vCPU's polling time, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HaltPoll {
    ns: u32,
}

impl HaltPoll {
    /// How long the next halt polls, given the maximum `max` in force (which may have been
    /// lowered since the last halt).
    pub fn window(&mut self, max: u32) -> u32 {
        self.ns = self.ns.min(max);
        self.ns
    }

    /// After a halt that lasted `halt_ns` (polling included) under maximum `max`: a halt that
    /// the poll covered changes nothing; a longer one shrinks the poll if it outlasted the
    /// maximum (polling would not have helped), and grows it if it did not.
    pub fn adapt(&mut self, max: u32, halt_ns: u64) {
        if max == 0 {
            self.ns = 0;
        } else if halt_ns <= u64::from(self.ns) {
        } else if self.ns != 0 && halt_ns > u64::from(max) {
            self.ns /= SHRINK;
            if self.ns < GROW_START {
                self.ns = 0;
            }
        } else if self.ns < max && halt_ns < u64::from(max) {
            self.ns = self.ns.saturating_mul(GROW).max(GROW_START);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_halts_grow_the_poll_from_10us_by_doubling_long_ones_shrink_it_to_nothing() {
        let mut p = HaltPoll::default();
        assert_eq!(p.window(DEFAULT_MAX_NS), 0, "no polling before a short halt was seen");
        p.adapt(DEFAULT_MAX_NS, 50_000);
        assert_eq!(p.window(DEFAULT_MAX_NS), 10_000);
        p.adapt(DEFAULT_MAX_NS, 50_000);
        assert_eq!(p.window(DEFAULT_MAX_NS), 20_000);
        p.adapt(DEFAULT_MAX_NS, 15_000);
        assert_eq!(p.window(DEFAULT_MAX_NS), 20_000, "a halt the poll covered changes nothing");
        for _ in 0..10 {
            p.adapt(DEFAULT_MAX_NS, 199_000);
        }
        assert_eq!(p.window(DEFAULT_MAX_NS), DEFAULT_MAX_NS, "grown past the maximum, capped at it");
        p.adapt(DEFAULT_MAX_NS, 1_000_000);
        assert_eq!(p.window(DEFAULT_MAX_NS), 100_000, "a halt longer than the maximum halves it");
        p.adapt(DEFAULT_MAX_NS, 1_000_000);
        p.adapt(DEFAULT_MAX_NS, 1_000_000);
        p.adapt(DEFAULT_MAX_NS, 1_000_000);
        assert_eq!(p.window(DEFAULT_MAX_NS), 12_500);
        p.adapt(DEFAULT_MAX_NS, 1_000_000);
        assert_eq!(p.window(DEFAULT_MAX_NS), 0, "below the start: off");
    }

    #[test]
    fn a_maximum_of_zero_turns_polling_off_and_a_lower_one_caps_it() {
        let mut p = HaltPoll { ns: 80_000 };
        assert_eq!(p.window(30_000), 30_000);
        p.adapt(0, 5_000);
        assert_eq!(p.window(DEFAULT_MAX_NS), 0);
        p.adapt(0, 5_000);
        assert_eq!(p.window(DEFAULT_MAX_NS), 0, "stays off");
        let mut q = HaltPoll { ns: u32::MAX / 2 + 1 };
        q.adapt(u32::MAX, 4_000_000_000);
        assert_eq!(q.window(u32::MAX), u32::MAX, "growth saturates");
    }
}
