//! How a VM ended, and the exit status `rvmx run` turns it into (documented in the README, so
//! scripts can tell a guest's own status from the hypervisor's failures).

/// How the guest stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No CPU can run again: each is in HLT with interrupts off or no timer running, or
    /// waits for a STARTUP IPI.
    Halted,
    /// The guest reset the machine through the i8042 (`reboot`).
    Reset,
    /// The guest powered the machine off through ACPI (`poweroff`).
    PowerOff,
    /// The guest wrote its status to the debug-exit port.
    DebugExit(u8),
    /// Triple fault: `KVM_EXIT_SHUTDOWN`.
    Shutdown,
    /// The VM entry failed: the hardware's reason.
    FailEntry(u64),
    /// `KVM_EXIT_INTERNAL_ERROR` with its suberror.
    Internal(u32),
    /// An exit `rvmx run` does not handle.
    Unexpected(String),
    /// `--timeout` expired; where the guest was.
    TimedOut(String),
}

impl Outcome {
    /// The exit status of `rvmx run`: 0 for a clean stop, the guest's own status through the
    /// debug-exit port, else a distinct value per failure (documented in the README).
    pub fn status(&self) -> u8 {
        match self {
            Outcome::Halted | Outcome::Reset | Outcome::PowerOff => 0,
            Outcome::DebugExit(v) => *v,
            Outcome::Shutdown => 10,
            Outcome::FailEntry(_) => 11,
            Outcome::Internal(_) => 12,
            Outcome::Unexpected(_) => 13,
            Outcome::TimedOut(_) => 14,
        }
    }

    /// One line for the user.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Halted => "guest halted".into(),
            Outcome::Reset => "guest reset the machine (i8042)".into(),
            Outcome::PowerOff => "guest powered off (ACPI S5)".into(),
            Outcome::DebugExit(v) => format!("guest exited with status {v} (debug-exit port)"),
            Outcome::Shutdown => "guest shut down: triple fault (KVM_EXIT_SHUTDOWN)".into(),
            Outcome::FailEntry(r) => format!("VM entry failed: hardware reason {r:#x}"),
            Outcome::Internal(s) => format!("internal error in the hypervisor: suberror {s}"),
            Outcome::Unexpected(e) => format!("unexpected exit: {e}"),
            Outcome::TimedOut(at) => format!("timed out; guest at {at}"),
        }
    }
}
