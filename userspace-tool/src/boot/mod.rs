//! Putting a guest in memory and its boot CPU at its entry point: a raw image in real mode
//! (flat.rs), or a Linux bzImage with the tables firmware would leave behind (linux.rs,
//! mptable.rs, acpi.rs). There is no firmware: `rvmx run` does its part.

pub mod acpi;
pub mod flat;
pub mod linux;
pub mod mptable;

/// The byte that makes `bytes` sum to zero, as firmware tables (MP, ACPI) carry it.
pub(crate) fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)))
}
