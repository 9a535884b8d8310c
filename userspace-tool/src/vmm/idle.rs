//! When a VM with the local APICs in the kernel (split irqchip) can no longer run. A halted
//! vCPU then sleeps inside KVM_RUN, so `rvmx run` never sees its HLT: each vCPU thread looks
//! instead, at least every [`PERIOD`] (its timer brings it out of KVM_RUN), whether its CPU is
//! stopped (halted with nothing pending and nothing to wake it, or waiting for a STARTUP IPI),
//! and reads its count of VM exits (exit_count.rs).
//!
//! One look per thread is no snapshot of the machine: CPU 1 may be seen waiting for a STARTUP
//! just before CPU 0 sends one and halts. A CPU's stopped stretch is a run of looks that saw it
//! stopped with the same exit count: it did not run in between (running, then halting again,
//! takes at least the HLT's exit), so it was stopped from the end of the first look to the
//! start of the last. The VM ends once every CPU's stretch covers one instant T, the latest
//! stretch start: at T all were stopped at once, so none could wake another, and the looks
//! after T checked the devices that could still interrupt one.

use std::time::Duration;

/// How long a vCPU thread may stay in KVM_RUN before it looks again.
pub const PERIOD: Duration = Duration::from_millis(500);

/// What one CPU's thread saw, in ns of the machine's clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Look {
    /// When the present stopped stretch began (the end of its first look); `None` while the
    /// CPU runs.
    since: Option<u64>,
    /// When the latest look began.
    last: u64,
    /// The CPU's exit count at the latest look.
    exits: u64,
}

impl Look {
    /// Records a look from `start` to `end` that found the CPU `stopped` (or not) with `exits`
    /// VM exits so far.
    pub fn saw(&mut self, stopped: bool, exits: u64, start: u64, end: u64) {
        let same_stretch = stopped && self.since.is_some() && exits == self.exits;
        self.since = match (stopped, same_stretch) {
            (true, true) => self.since,
            (true, false) => Some(end),
            (false, _) => None,
        };
        self.last = start;
        self.exits = exits;
    }
}

/// Whether no CPU can run again, from each CPU's [`Look`] (see the module's comment).
pub fn none_can_run(looks: &[Look]) -> bool {
    let Some(latest) = looks.iter().map(|l| l.since).collect::<Option<Vec<u64>>>().and_then(|s| s.into_iter().max()) else {
        return false;
    };
    looks.iter().all(|l| l.last > latest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Looks of 1 ns each, with no exits in between.
    fn look(steps: &[(bool, u64)]) -> Look {
        let mut l = Look::default();
        for &(stopped, now) in steps {
            l.saw(stopped, 0, now, now + 1);
        }
        l
    }

    #[test]
    fn ends_only_after_a_second_look_at_every_cpu() {
        // CPU 1 waits for a STARTUP at 10; CPU 0 halts at 20 (having sent nothing it could).
        let cpu1 = look(&[(true, 10)]);
        let cpu0 = look(&[(true, 20)]);
        assert!(!none_can_run(&[cpu0, cpu1]), "CPU 1 was last seen before CPU 0 stopped");
        let cpu1 = look(&[(true, 10), (true, 30)]);
        assert!(!none_can_run(&[cpu0, cpu1]), "CPU 0 must be seen twice too");
        let cpu0 = look(&[(true, 20), (true, 31)]);
        assert!(none_can_run(&[cpu0, cpu1]));
    }

    #[test]
    fn a_cpu_that_ran_again_starts_a_new_stretch() {
        // CPU 1 got its STARTUP after its first look and ran; then both stop.
        let cpu1 = look(&[(true, 10), (false, 30), (true, 40)]);
        let cpu0 = look(&[(true, 20), (true, 35)]);
        assert!(!none_can_run(&[cpu0, cpu1]), "CPU 1 stopped at 40, CPU 0 last seen at 35");
        let cpu0 = look(&[(true, 20), (true, 35), (true, 45)]);
        let cpu1 = look(&[(true, 10), (false, 30), (true, 40), (true, 50)]);
        assert!(none_can_run(&[cpu0, cpu1]));
        assert!(!none_can_run(&[cpu0, look(&[(true, 10), (false, 60)])]), "one runs");
        assert!(!none_can_run(&[Look::default()]), "never looked at");
    }

    #[test]
    fn a_cpu_that_ran_between_two_looks_starts_over() {
        // Two CPUs passing IPIs, each seen halted at every look: their exit counts move.
        let mut cpu0 = Look::default();
        let mut cpu1 = Look::default();
        cpu0.saw(true, 10, 0, 1);
        cpu1.saw(true, 20, 100, 101);
        cpu0.saw(true, 15, 500, 501);
        cpu1.saw(true, 27, 600, 601);
        assert!(!none_can_run(&[cpu0, cpu1]), "both ran since their first look");
        cpu0.saw(true, 15, 1000, 1001);
        cpu1.saw(true, 27, 1100, 1101);
        assert!(none_can_run(&[cpu0, cpu1]), "no exits since 501 and 601");
    }

    #[test]
    fn a_look_counts_from_its_end_to_the_next_ones_start() {
        let mut l = Look::default();
        l.saw(true, 0, 10, 20);
        l.saw(true, 0, 20, 30);
        assert!(!none_can_run(&[l]), "stopped from 20 (the first look's end), last look began at 20");
        l.saw(true, 0, 21, 25);
        assert!(none_can_run(&[l]));
    }

    #[test]
    fn one_cpu_needs_two_looks() {
        assert!(!none_can_run(&[look(&[(true, 5)])]));
        assert!(none_can_run(&[look(&[(true, 5), (true, 7)])]), "seen again after the first look ended");
    }
}
