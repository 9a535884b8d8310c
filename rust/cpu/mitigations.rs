// SPDX-License-Identifier: GPL-2.0

//! The speculative-execution protections of [`mitigation_rules`], carried out around each VMX
//! window and each entry. VERW, the RSB fill, the SPEC_CTRL rewrite and the branch-history
//! clear are in the entry stub (vmx/entry.rs), which counts what it executes; the L1D flush and
//! the IBPBs are here. The kernel helpers KVM uses for them are exported to KVM only, so the
//! few instructions are rvmx's own (as `arch/x86/kvm/vmx/` writes them).
//!
//! debugfs' `rvmx/mitigations` shows the plan and how often each step ran.

use core::{
    fmt,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};
use kernel::{alloc::VVec, prelude::*};

use crate::{
    host::helpers,
    vmx::entry::EntryArgs,
    logic::mitigation_rules::{self, Bugs, Counts, HostState, L1dFlush, Plan, SpecCtrl},
};

/// KVM's software L1D flush reads this much (twice the largest L1D).
const FLUSH_SIZE: usize = 64 * 1024;

/// Reads the host's state from the kernel's feature and bug bits.
fn host_state() -> HostState {
    // SAFETY: reads boot-time CPU feature bits and, if the CPU has it, ARCH_CAPABILITIES.
    let v = unsafe { helpers::rvmx_host_mitigations() };
    let bit = |n: u32| v & (1 << n) != 0;
    HostState {
        mitigations_off: bit(0),
        clear_cpu_buf_vm: bit(1),
        rsb_vmexit: bit(2),
        rsb_vmexit_lite: bit(3),
        kernel_ibrs: bit(4),
        clear_bhb_vmexit: bit(5),
        l1tf: bit(6),
        flush_l1d: bit(7),
        ibpb: bit(8),
        ibpb_exit_to_user: bit(9),
        bugs: Bugs {
            meltdown: bit(10),
            ssb: bit(11),
            mds: bit(12),
            rfds: bit(13),
            its: bit(14),
            taa: bit(15),
            gds: bit(16),
            rtm: bit(17),
            md_clear: bit(18),
            l1tf: bit(19),
        },
        // SAFETY: reads IA32_ARCH_CAPABILITIES with the fault-safe accessor, if the CPU has it.
        arch_capabilities: unsafe { helpers::rvmx_host_arch_capabilities() },
        spec_ctrl: SpecCtrl { msr: bit(20), intel: bit(21), ibrs: bit(22), stibp: bit(23), ssbd: bit(24), eibrs_pbrsb: bit(25) },
    }
}

/// How often each step ran since load, for debugfs (relaxed: statistics).
struct Counters {
    entries: AtomicU64,
    verw: AtomicU64,
    rsb_fill: AtomicU64,
    ibrs: AtomicU64,
    bhb_clear: AtomicU64,
    l1d_flush: AtomicU64,
    ibpb_switch: AtomicU64,
    ibpb_exit_to_user: AtomicU64,
}

static COUNTS: Counters = Counters {
    entries: AtomicU64::new(0),
    verw: AtomicU64::new(0),
    rsb_fill: AtomicU64::new(0),
    ibrs: AtomicU64::new(0),
    bhb_clear: AtomicU64::new(0),
    l1d_flush: AtomicU64::new(0),
    ibpb_switch: AtomicU64::new(0),
    ibpb_exit_to_user: AtomicU64::new(0),
};

/// Whether this CPU takes `v` in IA32_SPEC_CTRL (KVM's test of a guest's value: the processor
/// decides which bits exist). False if the CPU has no such MSR.
pub(crate) fn spec_ctrl_accepts(v: u64) -> bool {
    // SAFETY: writes `v` with the fault-safe accessor and puts the old value back, interrupts
    // off: nothing runs with the test value.
    unsafe { helpers::rvmx_spec_ctrl_accepts(v) }
}

fn add(c: &AtomicU64, n: u64) {
    if n != 0 {
        c.fetch_add(n, Relaxed);
    }
}

/// What guests are told and may use, so they can protect themselves (as on KVM).
#[derive(Clone, Copy)]
pub(crate) struct ForGuests {
    /// IA32_ARCH_CAPABILITIES at vCPU creation (and for the system fd's feature MSR).
    pub(crate) arch_capabilities: u64,
    /// IA32_PRED_CMD's IBPB works on this host.
    pub(crate) ibpb: bool,
    /// IA32_FLUSH_CMD works on this host.
    pub(crate) flush_l1d: bool,
    /// VERW clears CPU buffers on this host (CPUID MD_CLEAR).
    pub(crate) md_clear: bool,
    /// IA32_SPEC_CTRL and its controls on this host.
    pub(crate) spec_ctrl: SpecCtrl,
    /// Not affected by speculative store bypass (CPUID AMD_SSB_NO).
    pub(crate) ssb_no: bool,
}

/// What rvmx does on this host, and what it needs for it.
pub(crate) struct Mitigations {
    plan: Plan,
    guests: ForGuests,
    /// The buffer the software L1D flush reads (only without IA32_FLUSH_CMD).
    flush_buf: Option<VVec<u8>>,
    /// For each CPU, the vCPU it ran last (0: none), for the IBPB on a switch.
    last_vcpu: KVec<AtomicU64>,
}

impl Mitigations {
    pub(crate) fn new() -> Result<Self> {
        let host = host_state();
        let plan = mitigation_rules::plan(host);
        let guests = ForGuests {
            arch_capabilities: mitigation_rules::guest_arch_capabilities(host),
            ibpb: host.ibpb,
            flush_l1d: host.flush_l1d,
            md_clear: host.bugs.md_clear,
            spec_ctrl: host.spec_ctrl,
            ssb_no: !host.bugs.ssb,
        };
        let flush_buf = match plan.l1d {
            L1dFlush::Cond { hardware: false } => {
                let mut buf = VVec::with_capacity(FLUSH_SIZE, GFP_KERNEL)?;
                // Page i holds byte i + 1, as KVM's: no page is the zero page or a KSM twin.
                for i in 0..FLUSH_SIZE {
                    buf.push(((i / 4096) as u8).wrapping_add(1), GFP_KERNEL)?;
                }
                Some(buf)
            }
            _ => None,
        };
        let nr_cpus = kernel::cpu::nr_cpu_ids() as usize;
        let mut last_vcpu = KVec::with_capacity(nr_cpus, GFP_KERNEL)?;
        for _ in 0..nr_cpus {
            last_vcpu.push(AtomicU64::new(0), GFP_KERNEL)?;
        }
        Ok(Self { plan, guests, flush_buf, last_vcpu })
    }

    /// What guests are told and may use.
    pub(crate) fn for_guests(&self) -> ForGuests {
        self.guests
    }

    /// At the start of a window on `cpu` for the vCPU numbered `vcpu` (never 0), interrupts
    /// off: the IBPB if this CPU last ran another vCPU (KVM's `kvm_arch_vcpu_load`), and the
    /// stub's arguments.
    pub(crate) fn window_start(&self, cpu: u32, vcpu: u64) -> EntryArgs {
        if self.plan.ibpb_on_switch {
            if let Some(last) = self.last_vcpu.get(cpu as usize) {
                if last.swap(vcpu, Relaxed) != vcpu {
                    // SAFETY: IBPB only flushes branch predictions; the CPU has it.
                    unsafe { crate::host::x86::wrmsr(crate::logic::arch::msr::PRED_CMD, crate::logic::msr_rules::PRED_CMD_IBPB) };
                    add(&COUNTS.ibpb_switch, 1);
                }
            }
        }
        // SAFETY: reads this CPU's SPEC_CTRL value; interrupts are off.
        let host_spec_ctrl = if self.plan.stub & mitigation_rules::stub::IBRS != 0 { unsafe { helpers::rvmx_host_spec_ctrl() } } else { 0 };
        EntryArgs::new(self.plan.stub, host_spec_ctrl)
    }

    /// Before the first VM entry of a window: host code ran since the last one (the window
    /// opens after userspace, an interrupt, a page fault or emulation, each of which makes
    /// KVM's "cond" mode flush), so the L1D holds host data a guest could read through L1TF.
    pub(crate) fn flush_l1d(&self) {
        match self.plan.l1d {
            L1dFlush::Never => return,
            // SAFETY: IA32_FLUSH_CMD exists (X86_FEATURE_FLUSH_L1D); the flush only writes
            // back and invalidates the L1D.
            L1dFlush::Cond { hardware: true } => unsafe { crate::host::x86::wrmsr(crate::logic::arch::msr::FLUSH_CMD, crate::logic::msr_rules::FLUSH_CMD_L1D) },
            L1dFlush::Cond { hardware: false } => {
                if let Some(buf) = &self.flush_buf {
                    crate::host::x86::l1d_flush_by_reads(buf.get(..FLUSH_SIZE).unwrap_or(buf));
                }
            }
        }
        add(&COUNTS.l1d_flush, 1);
    }

    /// At the end of a window, interrupts still off: the stub's counts, and VMSCAPE's IBPB
    /// before the next return to user space.
    pub(crate) fn window_end(&self, args: &EntryArgs) {
        let c = args.counts();
        add(&COUNTS.entries, c.entries);
        add(&COUNTS.verw, c.verw);
        add(&COUNTS.rsb_fill, c.rsb_fill);
        add(&COUNTS.ibrs, c.ibrs);
        add(&COUNTS.bhb_clear, c.bhb_clear);
        if self.plan.ibpb_exit_to_user && c.entries != 0 {
            // SAFETY: sets this CPU's flag for the kernel's exit to user space; interrupts
            // (hence preemption) are off, so the flag is this CPU's until then.
            unsafe { helpers::rvmx_ibpb_exit_to_user() };
            add(&COUNTS.ibpb_exit_to_user, 1);
        }
    }

    /// The text of debugfs' `rvmx/mitigations`.
    pub(crate) fn write(&self, f: &mut impl fmt::Write) -> fmt::Result {
        let c = &COUNTS;
        let counts = Counts {
            entries: c.entries.load(Relaxed),
            verw: c.verw.load(Relaxed),
            rsb_fill: c.rsb_fill.load(Relaxed),
            ibrs: c.ibrs.load(Relaxed),
            bhb_clear: c.bhb_clear.load(Relaxed),
            l1d_flush: c.l1d_flush.load(Relaxed),
            ibpb_switch: c.ibpb_switch.load(Relaxed),
            ibpb_exit_to_user: c.ibpb_exit_to_user.load(Relaxed),
        };
        mitigation_rules::write(&self.plan, &counts, f)
    }
}
