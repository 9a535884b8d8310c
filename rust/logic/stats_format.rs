// SPDX-License-Identifier: GPL-2.0

//! What rvmx counts per vCPU, and the text its debugfs `stats` files hold (pure logic, shared
//! with the `rvmx stat` command, which parses what the module writes).
//!
//! One `name value` line per counter; per-reason counters only where non-zero, as
//! `exit.REASON` (VM exits by VMX basic exit reason, each handled in the kernel or not) and
//! `user_exit.REASON` (returns from `KVM_RUN` by `kvm_run.exit_reason`).

use core::fmt::{self, Write};

/// VMX basic exit reasons counted (SDM vol. 3, appendix C: 0..=79).
pub const VMX_REASONS: usize = 80;
/// `KVM_EXIT_*` codes counted (`<linux/kvm.h>`: 0..=39 in Linux 7.3).
pub const KVM_EXITS: usize = 40;

/// Names of the VMX basic exit reasons, by number ("" where the SDM defines none).
const VMX_NAMES: [&str; VMX_REASONS] = [
    "EXCEPTION_NMI", "EXTERNAL_INTERRUPT", "TRIPLE_FAULT", "INIT", "SIPI", "IO_SMI", "OTHER_SMI",
    "INTERRUPT_WINDOW", "NMI_WINDOW", "TASK_SWITCH", "CPUID", "GETSEC", "HLT", "INVD", "INVLPG",
    "RDPMC", "RDTSC", "RSM", "VMCALL", "VMCLEAR", "VMLAUNCH", "VMPTRLD", "VMPTRST", "VMREAD",
    "VMRESUME", "VMWRITE", "VMXOFF", "VMXON", "CR_ACCESS", "DR_ACCESS", "IO_INSTRUCTION", "RDMSR",
    "WRMSR", "INVALID_GUEST_STATE", "MSR_LOAD_FAIL", "", "MWAIT", "MONITOR_TRAP_FLAG", "",
    "MONITOR", "PAUSE", "MCE_DURING_VMENTRY", "", "TPR_BELOW_THRESHOLD", "APIC_ACCESS",
    "EOI_INDUCED", "GDTR_IDTR", "LDTR_TR", "EPT_VIOLATION", "EPT_MISCONFIG", "INVEPT", "RDTSCP",
    "PREEMPTION_TIMER", "INVVPID", "WBINVD", "XSETBV", "APIC_WRITE", "RDRAND", "INVPCID",
    "VMFUNC", "ENCLS", "RDSEED", "PML_FULL", "XSAVES", "XRSTORS", "PCONFIG", "SPP", "UMWAIT",
    "TPAUSE", "LOADIWKEY", "ENCLV", "", "ENQCMD_PASID", "ENQCMDS_PASID", "BUS_LOCK", "NOTIFY",
    "SEAMCALL", "TDCALL", "RDMSRLIST", "WRMSRLIST",
];

/// Names of the `KVM_EXIT_*` codes, by number (`KVM_EXIT_` left off).
const KVM_NAMES: [&str; KVM_EXITS] = [
    "UNKNOWN", "EXCEPTION", "IO", "HYPERCALL", "DEBUG", "HLT", "MMIO", "IRQ_WINDOW_OPEN",
    "SHUTDOWN", "FAIL_ENTRY", "INTR", "SET_TPR", "TPR_ACCESS", "S390_SIEIC", "S390_RESET", "DCR",
    "NMI", "INTERNAL_ERROR", "OSI", "PAPR_HCALL", "S390_UCONTROL", "WATCHDOG", "S390_TSCH", "EPR",
    "SYSTEM_EVENT", "S390_STSI", "IOAPIC_EOI", "HYPERV", "ARM_NISV", "X86_RDMSR", "X86_WRMSR",
    "DIRTY_RING_FULL", "AP_RESET_HOLD", "X86_BUS_LOCK", "XEN", "RISCV_SBI", "RISCV_CSR",
    "NOTIFY", "LOONGARCH_IOCSR", "MEMORY_FAULT",
];

/// The name of VMX basic exit reason `r`, or `None` if the SDM defines none.
pub fn vmx_reason_name(r: usize) -> Option<&'static str> {
    VMX_NAMES.get(r).copied().filter(|n| !n.is_empty())
}

/// The name of `KVM_EXIT_*` code `r`.
pub fn kvm_exit_name(r: usize) -> Option<&'static str> {
    KVM_NAMES.get(r).copied()
}

/// One vCPU's counters (or their sum over a VM's vCPUs), as read at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters {
    /// `KVM_RUN` calls.
    pub runs: u64,
    /// Interrupts-off VMX windows opened (each: VMPTRLD, state loaded, one or more entries).
    pub windows: u64,
    /// VM exits, whatever handled them.
    pub exits: u64,
    /// TSC ticks spent in guest mode (from VM entry to VM exit).
    pub guest_tsc: u64,
    /// EPT violations that mapped guest RAM (first touches; with fault-around, one that
    /// continues an in-order walk, or whose block the host has whole, maps the unmapped pages
    /// of its block).
    pub ept_faults: u64,
    /// Halts that polled for a wake-up before sleeping (KVM's `halt_attempted_poll`).
    pub halt_polls: u64,
    /// Those a wake-up ended while polling (KVM's `halt_successful_poll`).
    pub halt_poll_wakeups: u64,
    /// VM exits by VMX basic exit reason.
    pub by_reason: [u64; VMX_REASONS],
    /// Returns from `KVM_RUN` to userspace by `kvm_run.exit_reason` (also `INTR` on signals).
    pub user_exits: [u64; KVM_EXITS],
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            runs: 0,
            windows: 0,
            exits: 0,
            guest_tsc: 0,
            ept_faults: 0,
            halt_polls: 0,
            halt_poll_wakeups: 0,
            by_reason: [0; VMX_REASONS],
            user_exits: [0; KVM_EXITS],
        }
    }
}

/// The scalar counters, in file order, with their names.
const SCALARS: [&str; 8] = ["runs", "windows", "exits", "guest_tsc", "ept_faults", "halt_polls", "halt_poll_wakeups", "user_exits"];

impl Counters {
    /// Adds `other` to `self` (a VM's total over its vCPUs). Wraps like the counters do.
    pub fn add(&mut self, other: &Counters) {
        self.runs = self.runs.wrapping_add(other.runs);
        self.windows = self.windows.wrapping_add(other.windows);
        self.exits = self.exits.wrapping_add(other.exits);
        self.guest_tsc = self.guest_tsc.wrapping_add(other.guest_tsc);
        self.ept_faults = self.ept_faults.wrapping_add(other.ept_faults);
        self.halt_polls = self.halt_polls.wrapping_add(other.halt_polls);
        self.halt_poll_wakeups = self.halt_poll_wakeups.wrapping_add(other.halt_poll_wakeups);
        for (a, b) in self.by_reason.iter_mut().zip(other.by_reason.iter()) {
            *a = a.wrapping_add(*b);
        }
        for (a, b) in self.user_exits.iter_mut().zip(other.user_exits.iter()) {
            *a = a.wrapping_add(*b);
        }
    }

    /// Returns to userspace, all reasons together.
    pub fn total_user_exits(&self) -> u64 {
        self.user_exits.iter().fold(0u64, |a, b| a.wrapping_add(*b))
    }

    fn scalar(&self, i: usize) -> u64 {
        let all = [
            self.runs, self.windows, self.exits, self.guest_tsc, self.ept_faults, self.halt_polls, self.halt_poll_wakeups,
            self.total_user_exits(),
        ];
        all.get(i).copied().unwrap_or(0)
    }

    /// Writes the `stats` file's text.
    pub fn write(&self, w: &mut impl Write) -> fmt::Result {
        for (i, name) in SCALARS.iter().enumerate() {
            writeln!(w, "{name} {}", self.scalar(i))?;
        }
        for (r, n) in self.by_reason.iter().enumerate().filter(|(_, n)| **n != 0) {
            match vmx_reason_name(r) {
                Some(name) => writeln!(w, "exit.{name} {n}")?,
                None => writeln!(w, "exit.{r} {n}")?,
            }
        }
        // Every index has a name (KVM_NAMES covers KVM_EXITS).
        for (name, n) in KVM_NAMES.iter().zip(self.user_exits.iter()).filter(|(_, n)| **n != 0) {
            writeln!(w, "user_exit.{name} {n}")?;
        }
        Ok(())
    }

    /// Parses a `stats` file's text; `None` if a line is not one [`Counters::write`] writes.
    pub fn parse(text: &str) -> Option<Counters> {
        let mut c = Counters::default();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(' ')?;
            let value: u64 = value.parse().ok()?;
            if let Some(reason) = name.strip_prefix("exit.") {
                let r = match VMX_NAMES.iter().position(|n| !n.is_empty() && *n == reason) {
                    Some(r) => r,
                    None => reason.parse().ok().filter(|r| *r < VMX_REASONS)?,
                };
                *c.by_reason.get_mut(r)? = value;
            } else if let Some(reason) = name.strip_prefix("user_exit.") {
                *c.user_exits.get_mut(KVM_NAMES.iter().position(|n| *n == reason)?)? = value;
            } else {
                match SCALARS.iter().position(|n| *n == name)? {
                    0 => c.runs = value,
                    1 => c.windows = value,
                    2 => c.exits = value,
                    3 => c.guest_tsc = value,
                    4 => c.ept_faults = value,
                    5 => c.halt_polls = value,
                    6 => c.halt_poll_wakeups = value,
                    _ => {} // user_exits: the sum of the per-reason lines
                }
            }
        }
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;


    #[test]
    fn names_match_the_sdm_and_kvm() {
        assert_eq!(vmx_reason_name(10), Some("CPUID"));
        assert_eq!(vmx_reason_name(30), Some("IO_INSTRUCTION"));
        assert_eq!(vmx_reason_name(48), Some("EPT_VIOLATION"));
        assert_eq!(vmx_reason_name(52), Some("PREEMPTION_TIMER"));
        assert_eq!(vmx_reason_name(55), Some("XSETBV"));
        assert_eq!(vmx_reason_name(79), Some("WRMSRLIST"));
        assert_eq!(vmx_reason_name(35), None);
        assert_eq!(vmx_reason_name(80), None);
        // The numbers rvmx's exit dispatch uses name themselves.
        use crate::vmx_exit::reason;
        for (r, n) in [(reason::HLT, "HLT"), (reason::VMCALL, "VMCALL"), (reason::CR_ACCESS, "CR_ACCESS"),
            (reason::RDMSR, "RDMSR"), (reason::EPT_MISCONFIG, "EPT_MISCONFIG"), (reason::WBINVD, "WBINVD")] {
            assert_eq!(vmx_reason_name(r as usize), Some(n));
        }
        assert_eq!(kvm_exit_name(2), Some("IO"));
        assert_eq!(kvm_exit_name(6), Some("MMIO"));
        assert_eq!(kvm_exit_name(17), Some("INTERNAL_ERROR"));
        assert_eq!(kvm_exit_name(39), Some("MEMORY_FAULT"));
        assert_eq!(kvm_exit_name(40), None);
    }

    #[test]
    fn kvm_exit_names_are_kvm_bindings_numbers() {
        assert_eq!(kvm_exit_name(kvm_bindings::KVM_EXIT_HLT as usize), Some("HLT"));
        assert_eq!(kvm_exit_name(kvm_bindings::KVM_EXIT_IRQ_WINDOW_OPEN as usize), Some("IRQ_WINDOW_OPEN"));
        assert_eq!(kvm_exit_name(kvm_bindings::KVM_EXIT_SET_TPR as usize), Some("SET_TPR"));
        assert_eq!(kvm_exit_name(kvm_bindings::KVM_EXIT_SYSTEM_EVENT as usize), Some("SYSTEM_EVENT"));
        assert_eq!(kvm_exit_name(kvm_bindings::KVM_EXIT_X86_WRMSR as usize), Some("X86_WRMSR"));
        assert_eq!(kvm_exit_name(kvm_bindings::KVM_EXIT_MEMORY_FAULT as usize), Some("MEMORY_FAULT"));
    }

    fn sample() -> Counters {
        let mut c = Counters { runs: 3, windows: 7, exits: 12, guest_tsc: 123_456, ept_faults: 2, halt_polls: 9, halt_poll_wakeups: 8, ..Default::default() };
        c.by_reason[10] = 5;
        c.by_reason[30] = 4;
        c.by_reason[48] = 2;
        c.by_reason[71] = 1; // no name: written as a number
        c.user_exits[2] = 2;
        c.user_exits[5] = 1;
        c
    }

    #[test]
    fn text_lists_scalars_then_nonzero_reasons() {
        let mut s = String::new();
        sample().write(&mut s).unwrap();
        assert_eq!(s, "runs 3\nwindows 7\nexits 12\nguest_tsc 123456\nept_faults 2\nhalt_polls 9\nhalt_poll_wakeups 8\nuser_exits 3\n\
            exit.CPUID 5\nexit.IO_INSTRUCTION 4\nexit.EPT_VIOLATION 2\nexit.71 1\n\
            user_exit.IO 2\nuser_exit.HLT 1\n");
    }

    #[test]
    fn parse_reads_back_what_write_wrote() {
        let mut s = String::new();
        sample().write(&mut s).unwrap();
        assert_eq!(Counters::parse(&s), Some(sample()));
        assert_eq!(Counters::parse(""), Some(Counters::default()));
        assert_eq!(Counters::parse("runs x\n"), None);
        assert_eq!(Counters::parse("bogus 1\n"), None);
        assert_eq!(Counters::parse("exit.NOPE 1\n"), None);
        assert_eq!(Counters::parse("exit.80 1\n"), None);
        assert_eq!(Counters::parse("user_exit.NOPE 1\n"), None);
        assert_eq!(Counters::parse("runs\n"), None);
    }

    #[test]
    fn vm_totals_add_vcpus() {
        let mut t = Counters::default();
        t.add(&sample());
        t.add(&sample());
        assert_eq!(t.runs, 6);
        assert_eq!(t.guest_tsc, 246_912);
        assert_eq!(t.by_reason[10], 10);
        assert_eq!(t.total_user_exits(), 6);
        let mut w = Counters { runs: u64::MAX, ..Default::default() };
        w.add(&Counters { runs: 2, ..Default::default() });
        assert_eq!(w.runs, 1);
    }
}
