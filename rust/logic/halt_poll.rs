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

/// One vCPU's polling time, in nanoseconds, and the halt under way, which began at a `T`
/// (the kernel's monotonic clock; a plain number in the tests). A halt lasts from the HLT
/// until the vCPU runs again: posts that do not wake it (an interrupt it cannot take yet)
/// leave it going, polling on within the time it started with (KVM polls until the vCPU is
/// runnable, not until the first post).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HaltPoll<T> {
    ns: u32,
    halt: Option<Halt<T>>,
}

impl<T> Default for HaltPoll<T> {
    fn default() -> Self {
        Self { ns: 0, halt: None }
    }
}

/// A halt under way: when it began, how long it may poll, and whether it had to sleep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Halt<T> {
    start: T,
    window: u32,
    slept: bool,
}

impl<T: Copy> HaltPoll<T> {
    /// A halt begins (at `now()`), or goes on: when it began and how long it may poll from
    /// then, given the maximum `max` in force (which may have been lowered since the last
    /// halt).
    pub fn window(&mut self, max: u32, now: impl FnOnce() -> T) -> (T, u32) {
        let h = match self.halt {
            Some(h) => h,
            None => {
                self.ns = self.ns.min(max);
                let h = Halt { start: now(), window: self.ns, slept: false };
                self.halt = Some(h);
                h
            }
        };
        (h.start, h.window)
    }

    /// Whether a halt is under way (cheap: `end` has nothing to do otherwise).
    #[inline]
    pub fn in_halt(&self) -> bool {
        self.halt.is_some()
    }

    /// The halt under way went to sleep: polling did not end it.
    pub fn slept(&mut self) {
        if let Some(h) = self.halt.as_mut() {
            h.slept = true;
        }
    }

    /// The halt under way, if any, ended; `elapsed` gives its length in ns (polling included)
    /// from its start, `max` the maximum now (it may have changed meanwhile). A halt that
    /// the poll covered changes nothing; a longer one shrinks the poll if it outlasted the
    /// maximum (polling would not have helped), and grows it if it did not. Whether it polled
    /// and, if so, whether it ended without sleeping (KVM's `halt_attempted_poll` and
    /// `halt_successful_poll`); `None` without a halt under way.
    pub fn end(&mut self, max: impl FnOnce() -> u32, elapsed: impl FnOnce(T) -> u64) -> Option<(bool, bool)> {
        let h = self.halt.take()?;
        let (max, halt_ns) = (max(), elapsed(h.start));
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
        Some((h.window != 0, h.window != 0 && !h.slept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One whole halt from time 0 of `ns` nanoseconds that slept if `slept`: its window, and
    /// what `end` says.
    fn halt(p: &mut HaltPoll<u64>, max: u32, ns: u64, slept: bool) -> (u32, Option<(bool, bool)>) {
        let (_, window) = p.window(max, || 0);
        if slept {
            p.slept();
        }
        (window, p.end(|| max, |start| ns - start))
    }

    #[test]
    fn short_halts_grow_the_poll_from_10us_by_doubling_long_ones_shrink_it_to_nothing() {
        let mut p = HaltPoll::default();
        assert_eq!(halt(&mut p, DEFAULT_MAX_NS, 50_000, true), (0, Some((false, false))), "no polling before a short halt");
        assert_eq!(halt(&mut p, DEFAULT_MAX_NS, 50_000, true), (10_000, Some((true, false))));
        assert_eq!(halt(&mut p, DEFAULT_MAX_NS, 15_000, false), (20_000, Some((true, true))));
        assert_eq!(halt(&mut p, DEFAULT_MAX_NS, 15_000, false).0, 20_000, "a halt the poll covered changes nothing");
        for _ in 0..10 {
            halt(&mut p, DEFAULT_MAX_NS, 199_000, true);
        }
        assert_eq!(halt(&mut p, DEFAULT_MAX_NS, 1_000_000, true).0, DEFAULT_MAX_NS, "grown past the maximum, capped at it");
        assert_eq!(halt(&mut p, DEFAULT_MAX_NS, 1_000_000, true).0, 100_000, "a halt longer than the maximum halves it");
        halt(&mut p, DEFAULT_MAX_NS, 1_000_000, true);
        halt(&mut p, DEFAULT_MAX_NS, 1_000_000, true);
        assert_eq!(halt(&mut p, DEFAULT_MAX_NS, 1_000_000, true).0, 12_500);
        assert_eq!(halt(&mut p, DEFAULT_MAX_NS, 1_000_000, true).0, 0, "below the start: off");
    }

    #[test]
    fn a_halt_goes_on_across_posts_that_do_not_end_it() {
        let mut p = HaltPoll { ns: 40_000, halt: None };
        assert_eq!(p.window(DEFAULT_MAX_NS, || 7), (7, 40_000));
        assert_eq!(p.window(DEFAULT_MAX_NS, || 99), (7, 40_000), "the same halt: its start and window");
        p.slept();
        assert_eq!(p.window(DEFAULT_MAX_NS, || 99), (7, 40_000));
        assert_eq!(p.end(|| DEFAULT_MAX_NS, |start| 5_000_007 - start), Some((true, false)), "slept: polled without success");
        assert_eq!(p.end(|| DEFAULT_MAX_NS, |_| 0), None, "no halt under way");
        assert_eq!(p.window(DEFAULT_MAX_NS, || 0).1, 20_000, "one long halt shrank it once");
    }

    #[test]
    fn a_maximum_of_zero_turns_polling_off_and_a_lower_one_caps_it() {
        let mut p = HaltPoll { ns: 80_000, halt: None };
        assert_eq!(halt(&mut p, 30_000, 5_000, false), (30_000, Some((true, true))));
        assert_eq!(halt(&mut p, 0, 5_000, false), (0, Some((false, false))));
        assert_eq!(halt(&mut p, DEFAULT_MAX_NS, 5_000, false).0, 0, "stays off");
        let mut q = HaltPoll { ns: u32::MAX / 2 + 1, halt: None };
        halt(&mut q, u32::MAX, 4_000_000_000, true);
        assert_eq!(q.window(u32::MAX, || 0).1, u32::MAX, "growth saturates");
    }
}
