//! Putting a guest in memory and its boot CPU at its entry point: a raw image in real mode
//! (flat.rs), or a Linux bzImage with the tables firmware would leave behind (linux.rs,
//! mptable.rs, acpi.rs). There is no firmware: `rvmx run` does its part.

pub mod acpi;
pub mod flat;
pub mod linux;
pub mod mptable;
