//! The VM's time base. Every timer model (PIT, local APIC) takes time as a number of
//! nanoseconds from this clock, so the models are tested without sleeping.

use std::time::Instant;

/// Nanoseconds since the VM started.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    /// A clock that starts now.
    pub fn start() -> Self {
        Clock(Instant::now())
    }

    pub fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}
