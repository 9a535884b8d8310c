//! An interrupt line between a device and the PIC. vm-superio's devices signal through a
//! `Trigger`; this one only remembers the edge, and the port bus turns it into a request at the
//! PIC under its lock ([`super::isa::Isa::update_irqs`]).

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use vm_superio::Trigger;

/// A line a device raises: remembered until the VMM turns it into a request at the PIC.
#[derive(Clone, Default)]
pub struct Line(Arc<AtomicBool>);

impl Line {
    /// Whether the line was raised since the last call.
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

impl Trigger for Line {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.store(true, Ordering::Release);
        Ok(())
    }
}
