// SPDX-License-Identifier: GPL-2.0

//! What a vCPU's runs count: `KVM_RUN` calls, windows, exits by reason, guest time, EPT
//! faults, returns to userspace by reason. Written only by the vCPU's own `KVM_RUN`
//! (serialised by the vCPU mutex) and read by debugfs (kvm/stats.rs) at any time: relaxed
//! atomic loads and stores, no lock and no read-modify-write on the exit path. Core's atomics,
//! not `kernel::sync::atomic`: the kernel's go through an out-of-line C helper per access (four
//! calls per VM exit, ~25 instructions); a relaxed 64-bit load or store is one `mov` either way.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::logic::stats_format::{Counters, KVM_EXITS, VMX_REASONS};

/// The counters of one vCPU.
pub(crate) struct VcpuStats {
    runs: AtomicU64,
    windows: AtomicU64,
    guest_tsc: AtomicU64,
    ept_faults: AtomicU64,
    halt_polls: AtomicU64,
    halt_poll_wakeups: AtomicU64,
    by_reason: [AtomicU64; VMX_REASONS],
    user_exits: [AtomicU64; KVM_EXITS],
}

/// Adds `n` to a counter only its vCPU's `KVM_RUN` writes: a plain load and store suffice.
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl VcpuStats {
    pub(crate) fn new() -> Self {
        Self {
            runs: AtomicU64::new(0),
            windows: AtomicU64::new(0),
            guest_tsc: AtomicU64::new(0),
            ept_faults: AtomicU64::new(0),
            halt_polls: AtomicU64::new(0),
            halt_poll_wakeups: AtomicU64::new(0),
            by_reason: [const { AtomicU64::new(0) }; VMX_REASONS],
            user_exits: [const { AtomicU64::new(0) }; KVM_EXITS],
        }
    }

    /// A `KVM_RUN` call.
    pub(crate) fn run(&self) {
        bump(&self.runs, 1);
    }

    /// A VMX window opened.
    pub(crate) fn window(&self) {
        bump(&self.windows, 1);
    }

    /// A VM exit with basic reason `reason` after `guest_tsc` TSC ticks in guest mode. (The
    /// total is the sum by reason: one counter less on the exit path.)
    pub(crate) fn exit(&self, reason: u16, guest_tsc: u64) {
        bump(&self.guest_tsc, guest_tsc);
        if let Some(c) = self.by_reason.get(reason as usize) {
            bump(c, 1);
        }
    }

    /// A guest page mapped on first touch.
    pub(crate) fn ept_fault(&self) {
        bump(&self.ept_faults, 1);
    }

    /// A halt polled for a wake-up before sleeping; `woken`: one came while it polled.
    pub(crate) fn halt_poll(&self, woken: bool) {
        bump(&self.halt_polls, 1);
        bump(&self.halt_poll_wakeups, u64::from(woken));
    }

    /// A return to userspace with `kvm_run.exit_reason` = `reason`.
    pub(crate) fn user_exit(&self, reason: u32) {
        if let Some(c) = self.user_exits.get(reason as usize) {
            bump(c, 1);
        }
    }

    pub(crate) fn snapshot(&self) -> Counters {
        let mut c = Counters {
            runs: self.runs.load(Relaxed),
            windows: self.windows.load(Relaxed),
            guest_tsc: self.guest_tsc.load(Relaxed),
            ept_faults: self.ept_faults.load(Relaxed),
            halt_polls: self.halt_polls.load(Relaxed),
            halt_poll_wakeups: self.halt_poll_wakeups.load(Relaxed),
            ..Counters::default()
        };
        for (d, s) in c.by_reason.iter_mut().zip(self.by_reason.iter()) {
            *d = s.load(Relaxed);
            c.exits = c.exits.wrapping_add(*d);
        }
        for (d, s) in c.user_exits.iter_mut().zip(self.user_exits.iter()) {
            *d = s.load(Relaxed);
        }
        c
    }
}
