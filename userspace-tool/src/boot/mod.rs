//! Putting a guest in memory and its boot CPU at its entry point: a Linux bzImage with the
//! tables firmware would leave behind (linux.rs, mptable.rs).

pub mod linux;
pub mod mptable;
