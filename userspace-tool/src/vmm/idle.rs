//! When a VM with the local APICs in the kernel (split irqchip) can no longer run. A halted
//! vCPU then sleeps inside KVM_RUN, so `rvmx run` never sees its HLT: each vCPU thread looks
//! instead, at least every [`PERIOD`] (its timer brings it out of KVM_RUN), whether its CPU is
//! stopped: halted with nothing to wake it, or waiting for a STARTUP IPI.
//!
//! One look per thread is no snapshot of the machine: CPU 1 may be seen waiting for a STARTUP
//! just before CPU 0 sends one and halts. The VM therefore ends only once every CPU is seen
//! stopped and each was seen again, still stopped, after the last of them stopped. Whatever
//! a CPU sent another, it sent before it stopped, so the later look would have seen it.

use std::time::Duration;

/// How long a vCPU thread may stay in KVM_RUN before it looks again.
pub const PERIOD: Duration = Duration::from_millis(500);

/// What one CPU's thread saw, in ns of the machine's clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Look {
    /// The first look of the present stopped stretch; `None` while the CPU runs.
    since: Option<u64>,
    /// The latest look.
    last: u64,
}

impl Look {
    /// Records a look at `now`.
    pub fn saw(&mut self, stopped: bool, now: u64) {
        self.since = if stopped { self.since.or(Some(now)) } else { None };
        self.last = now;
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

    fn look(steps: &[(bool, u64)]) -> Look {
        let mut l = Look::default();
        for &(stopped, now) in steps {
            l.saw(stopped, now);
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
    fn one_cpu_needs_two_looks() {
        assert!(!none_can_run(&[look(&[(true, 5)])]));
        assert!(none_can_run(&[look(&[(true, 5), (true, 6)])]));
    }
}
