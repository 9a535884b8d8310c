// SPDX-License-Identifier: GPL-2.0

//! Which speculative-execution protections rvmx applies around VM entry and exit: the ones
//! KVM applies on the same host, decided from the host kernel's own mitigation state (its
//! synthetic CPU feature bits, set by `arch/x86/kernel/cpu/bugs.c` from the command line and
//! the CPU's bugs). Pure logic, host-tested; cpu/mitigations.rs and vmx/entry.rs carry them out.
//!
//! What each protects against, and where KVM does it (Linux 7.3):
//! - VERW before VM entry: MDS, TAA, MMIO stale data, RFDS (`vmenter.S`, CLEAR_CPU_BUF_VM).
//! - L1D flush before VM entry: L1TF (`vmx_l1d_flush`, KVM's default "cond" mode: once host
//!   code ran since the last entry).
//! - RSB fill after VM exit, before the first RET: the guest's return predictions must not
//!   steer the host (RSB_VMEXIT, 32 entries; RSB_VMEXIT_LITE on eIBRS parts with PBRSB).
//! - SPEC_CTRL rewritten after VM exit under legacy IBRS (KERNEL_IBRS): IBRS only protects
//!   after a write made in the more privileged mode.
//! - Branch history cleared after VM exit: BHI (CLEAR_BHB_VMEXIT).
//! - IBPB when a CPU switches to another vCPU (`kvm_arch_vcpu_load`), and before the next
//!   return to user space after a guest ran (VMSCAPE, IBPB_EXIT_TO_USER).

use core::fmt::{self, Write};

/// Flags the entry stub tests (vmx/entry.rs), one bit each.
pub mod stub {
    /// VERW right before VMLAUNCH/VMRESUME.
    pub const VERW: u64 = 1 << 0;
    /// Fill all 32 RSB entries after VM exit.
    pub const RSB_FULL: u64 = 1 << 1;
    /// The one-entry RSB fill of eIBRS parts (PBRSB).
    pub const RSB_LITE: u64 = 1 << 2;
    /// Rewrite the host's SPEC_CTRL after VM exit (legacy IBRS).
    pub const IBRS: u64 = 1 << 3;
    /// Clear the branch history after VM exit.
    pub const BHB: u64 = 1 << 4;
}

/// The host kernel's mitigation state, as its CPU feature and bug bits say (read once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostState {
    /// `mitigations=off` (`cpu_mitigations_off()`).
    pub mitigations_off: bool,
    /// X86_FEATURE_CLEAR_CPU_BUF_VM.
    pub clear_cpu_buf_vm: bool,
    /// X86_FEATURE_RSB_VMEXIT.
    pub rsb_vmexit: bool,
    /// X86_FEATURE_RSB_VMEXIT_LITE.
    pub rsb_vmexit_lite: bool,
    /// X86_FEATURE_KERNEL_IBRS (with X86_FEATURE_MSR_SPEC_CTRL).
    pub kernel_ibrs: bool,
    /// X86_FEATURE_CLEAR_BHB_VMEXIT.
    pub clear_bhb_vmexit: bool,
    /// X86_BUG_L1TF, and the CPU does not say VM entry needs no flush
    /// (ARCH_CAPABILITIES.SKIP_VMENTRY_L1DFLUSH).
    pub l1tf: bool,
    /// X86_FEATURE_FLUSH_L1D: the IA32_FLUSH_CMD MSR flushes L1D.
    pub flush_l1d: bool,
    /// X86_FEATURE_IBPB.
    pub ibpb: bool,
    /// X86_FEATURE_IBPB_EXIT_TO_USER (VMSCAPE).
    pub ibpb_exit_to_user: bool,
    /// The CPU's bugs and features a guest is told about (ARCH_CAPABILITIES, CPUID).
    pub bugs: Bugs,
    /// The host's IA32_ARCH_CAPABILITIES (0 without it).
    pub arch_capabilities: u64,
    /// IA32_SPEC_CTRL and the controls in it.
    pub spec_ctrl: SpecCtrl,
}

/// The host's IA32_SPEC_CTRL and its controls (X86_FEATURE_*): what a guest may be given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecCtrl {
    /// X86_FEATURE_MSR_SPEC_CTRL: the MSR exists.
    pub msr: bool,
    /// X86_FEATURE_SPEC_CTRL: Intel's CPUID bit (IBRS and IBPB).
    pub intel: bool,
    /// X86_FEATURE_IBRS.
    pub ibrs: bool,
    /// X86_FEATURE_STIBP.
    pub stibp: bool,
    /// X86_FEATURE_SPEC_CTRL_SSBD.
    pub ssbd: bool,
    /// X86_BUG_EIBRS_PBRSB: an IBPB does not clear the RSB's post-barrier return predictions.
    pub eibrs_pbrsb: bool,
}

/// CPU bugs (X86_BUG_*) and features that shape what a guest is told.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// X86_BUG_CPU_MELTDOWN.
    pub meltdown: bool,
    /// X86_BUG_SPEC_STORE_BYPASS.
    pub ssb: bool,
    /// X86_BUG_MDS.
    pub mds: bool,
    /// X86_BUG_RFDS.
    pub rfds: bool,
    /// X86_BUG_ITS.
    pub its: bool,
    /// X86_BUG_TAA.
    pub taa: bool,
    /// X86_BUG_GDS.
    pub gds: bool,
    /// X86_BUG_L1TF (whatever ARCH_CAPABILITIES says about flushing).
    pub l1tf: bool,
    /// X86_FEATURE_RTM.
    pub rtm: bool,
    /// X86_FEATURE_MD_CLEAR (VERW clears buffers).
    pub md_clear: bool,
}

/// IA32_ARCH_CAPABILITIES bits (`msr-index.h`).
pub mod arch_cap {
    /// Not affected by Meltdown.
    pub const RDCL_NO: u64 = 1 << 0;
    /// The hypervisor flushes L1D on VM entry: a nested one need not.
    pub const SKIP_VMENTRY_L1DFLUSH: u64 = 1 << 3;
    /// Not affected by speculative store bypass.
    pub const SSB_NO: u64 = 1 << 4;
    /// Not affected by MDS.
    pub const MDS_NO: u64 = 1 << 5;
    /// No machine check on page-size changes (KVM always says so).
    pub const PSCHANGE_MC_NO: u64 = 1 << 6;
    /// Not affected by TAA.
    pub const TAA_NO: u64 = 1 << 8;
    /// Not affected by GDS.
    pub const GDS_NO: u64 = 1 << 26;
    /// Not affected by RFDS.
    pub const RFDS_NO: u64 = 1 << 27;
    /// Not affected by ITS.
    pub const ITS_NO: u64 = 1 << 62;
    /// The host bits KVM passes on (`KVM_SUPPORTED_ARCH_CAP`), without TSX_CTRL_MSR (bit 7:
    /// rvmx does not emulate IA32_TSX_CTRL).
    pub const PASSED_ON: u64 = RDCL_NO | 1 << 1 | 1 << 2 | SKIP_VMENTRY_L1DFLUSH | SSB_NO | MDS_NO
        | PSCHANGE_MC_NO | TAA_NO | 1 << 13 | 1 << 14 | 1 << 15 | 1 << 17 | 1 << 19 | 1 << 20
        | 1 << 24 | GDS_NO | RFDS_NO | 1 << 28 | ITS_NO;
}

/// The IA32_ARCH_CAPABILITIES a guest reads (KVM's `kvm_get_arch_capabilities`): the host's
/// bits KVM passes on, PSCHANGE_MC_NO, SKIP_VMENTRY_L1DFLUSH unless the host needs a flush it
/// does not do (L1TF with mitigations off), and "not affected" for each bug the host does
/// not have. (KVM also says GDS_NO when microcode mitigates GDS; that is KVM-only knowledge.)
pub const fn guest_arch_capabilities(h: HostState) -> u64 {
    let b = h.bugs;
    let mut v = (h.arch_capabilities & arch_cap::PASSED_ON) | arch_cap::PSCHANGE_MC_NO;
    if !(h.l1tf && h.mitigations_off) {
        v |= arch_cap::SKIP_VMENTRY_L1DFLUSH;
    }
    const fn not(bug: bool, bit: u64) -> u64 {
        if bug { 0 } else { bit }
    }
    v |= not(b.meltdown, arch_cap::RDCL_NO) | not(b.ssb, arch_cap::SSB_NO) | not(b.mds, arch_cap::MDS_NO)
        | not(b.rfds, arch_cap::RFDS_NO) | not(b.its, arch_cap::ITS_NO) | not(b.gds, arch_cap::GDS_NO);
    if !b.rtm {
        v &= !arch_cap::TAA_NO;
    } else if !b.taa {
        v |= arch_cap::TAA_NO;
    }
    v
}

/// How the L1D cache is flushed before VM entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum L1dFlush {
    /// Not needed (no L1TF, or mitigations off).
    #[default]
    Never,
    /// Before the first entry after host code ran (KVM's "cond"): with IA32_FLUSH_CMD
    /// (`hardware`) or by reading 64 KiB (KVM's software fallback).
    Cond {
        /// IA32_FLUSH_CMD exists.
        hardware: bool,
    },
}

/// What rvmx does on each entry and exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// [`stub`] flags.
    pub stub: u64,
    /// The L1D flush.
    pub l1d: L1dFlush,
    /// IBPB when a CPU runs a different vCPU than the last one it ran.
    pub ibpb_on_switch: bool,
    /// IBPB on the next return to user space after a guest ran.
    pub ibpb_exit_to_user: bool,
}

/// KVM's choices for a host in state `h`. The synthetic feature bits are only set when the
/// host mitigates the bug, so they already follow `mitigations=off` and per-bug options.
/// Two of KVM's inputs are KVM-only exports: L1TF's mode (approximated by the bug and
/// `mitigations=off`) and whether IBPB on vCPU switch is on (approximated by the IBPB feature
/// and `mitigations=off`, as `spectre_v2_user`'s default).
pub const fn plan(h: HostState) -> Plan {
    let mut stub = 0;
    if h.clear_cpu_buf_vm {
        stub |= self::stub::VERW;
    }
    if h.rsb_vmexit {
        stub |= self::stub::RSB_FULL;
    } else if h.rsb_vmexit_lite {
        stub |= self::stub::RSB_LITE;
    }
    if h.kernel_ibrs {
        stub |= self::stub::IBRS;
    }
    if h.clear_bhb_vmexit {
        stub |= self::stub::BHB;
    }
    let l1d = if h.l1tf && !h.mitigations_off { L1dFlush::Cond { hardware: h.flush_l1d } } else { L1dFlush::Never };
    Plan { stub, l1d, ibpb_on_switch: h.ibpb && !h.mitigations_off, ibpb_exit_to_user: h.ibpb_exit_to_user }
}

/// How many times each step ran (since the module was loaded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// VM entries attempted.
    pub entries: u64,
    /// VERWs before an entry.
    pub verw: u64,
    /// RSB fills after an exit.
    pub rsb_fill: u64,
    /// SPEC_CTRL rewrites after an exit.
    pub ibrs: u64,
    /// Branch-history clears after an exit.
    pub bhb_clear: u64,
    /// L1D flushes before an entry.
    pub l1d_flush: u64,
    /// IBPBs for a vCPU switch.
    pub ibpb_switch: u64,
    /// Returns to user space armed with an IBPB.
    pub ibpb_exit_to_user: u64,
}

fn yes(on: bool) -> &'static str {
    if on { "yes" } else { "no" }
}

/// The text of debugfs' `rvmx/mitigations`: the plan, then the counts, one `name value` per
/// line.
pub fn write(p: &Plan, c: &Counts, f: &mut impl Write) -> fmt::Result {
    let rsb = if p.stub & stub::RSB_FULL != 0 {
        "full"
    } else if p.stub & stub::RSB_LITE != 0 {
        "lite"
    } else {
        "no"
    };
    let l1d = match p.l1d {
        L1dFlush::Never => "no",
        L1dFlush::Cond { hardware: true } => "cond-msr",
        L1dFlush::Cond { hardware: false } => "cond-software",
    };
    writeln!(f, "plan verw {}", yes(p.stub & stub::VERW != 0))?;
    writeln!(f, "plan rsb_fill {rsb}")?;
    writeln!(f, "plan ibrs {}", yes(p.stub & stub::IBRS != 0))?;
    writeln!(f, "plan bhb_clear {}", yes(p.stub & stub::BHB != 0))?;
    writeln!(f, "plan l1d_flush {l1d}")?;
    writeln!(f, "plan ibpb_switch {}", yes(p.ibpb_on_switch))?;
    writeln!(f, "plan ibpb_exit_to_user {}", yes(p.ibpb_exit_to_user))?;
    writeln!(f, "count entries {}", c.entries)?;
    writeln!(f, "count verw {}", c.verw)?;
    writeln!(f, "count rsb_fill {}", c.rsb_fill)?;
    writeln!(f, "count ibrs {}", c.ibrs)?;
    writeln!(f, "count bhb_clear {}", c.bhb_clear)?;
    writeln!(f, "count l1d_flush {}", c.l1d_flush)?;
    writeln!(f, "count ibpb_switch {}", c.ibpb_switch)?;
    writeln!(f, "count ibpb_exit_to_user {}", c.ibpb_exit_to_user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mitigations_off_means_nothing() {
        let h = HostState { mitigations_off: true, l1tf: true, ibpb: true, ..Default::default() };
        assert_eq!(plan(h), Plan::default());
    }

    #[test]
    fn skylake_like_host() {
        // Retpolines (RSB_VMEXIT), MDS without microcode still VERWs, L1TF without FLUSH_L1D.
        let h = HostState { clear_cpu_buf_vm: true, rsb_vmexit: true, l1tf: true, ..Default::default() };
        let p = plan(h);
        assert_eq!(p.stub, stub::VERW | stub::RSB_FULL);
        assert_eq!(p.l1d, L1dFlush::Cond { hardware: false });
        assert!(!p.ibpb_on_switch && !p.ibpb_exit_to_user);
    }

    #[test]
    fn eibrs_host() {
        let h = HostState {
            rsb_vmexit_lite: true, clear_bhb_vmexit: true, ibpb: true, ibpb_exit_to_user: true,
            ..Default::default()
        };
        let p = plan(h);
        assert_eq!(p.stub, stub::RSB_LITE | stub::BHB);
        assert!(p.ibpb_on_switch && p.ibpb_exit_to_user);
        let full = plan(HostState { rsb_vmexit: true, ..h });
        assert_eq!(full.stub & (stub::RSB_FULL | stub::RSB_LITE), stub::RSB_FULL, "the full fill wins");
        assert_eq!(plan(HostState { kernel_ibrs: true, ..h }).stub & stub::IBRS, stub::IBRS);
    }

    #[test]
    fn arch_capabilities_for_guests() {
        // Bochs' Sandy Bridge: no ARCH_CAPABILITIES, MDS, L1TF, Meltdown, SSB; mitigations on.
        let bugs = Bugs { meltdown: true, ssb: true, mds: true, l1tf: true, ..Default::default() };
        let h = HostState { l1tf: true, bugs, ..Default::default() };
        let v = guest_arch_capabilities(h);
        assert_eq!(v, arch_cap::PSCHANGE_MC_NO | arch_cap::SKIP_VMENTRY_L1DFLUSH | arch_cap::RFDS_NO | arch_cap::ITS_NO | arch_cap::GDS_NO);
        let off = guest_arch_capabilities(HostState { mitigations_off: true, ..h });
        assert_eq!(off & arch_cap::SKIP_VMENTRY_L1DFLUSH, 0, "no flush is done: a nested hypervisor must");
        // A modern host passes its own bits on, not TSX_CTRL; TAA_NO only with RTM.
        let modern = HostState { arch_capabilities: arch_cap::RDCL_NO | 1 << 7 | arch_cap::TAA_NO, ..Default::default() };
        let v = guest_arch_capabilities(modern);
        assert_eq!(v & (1 << 7 | arch_cap::TAA_NO), 0);
        let rtm = HostState { bugs: Bugs { rtm: true, ..Default::default() }, ..modern };
        assert_eq!(guest_arch_capabilities(rtm) & arch_cap::TAA_NO, arch_cap::TAA_NO);
        assert_eq!(v & (arch_cap::RDCL_NO | arch_cap::MDS_NO | arch_cap::SSB_NO), arch_cap::RDCL_NO | arch_cap::MDS_NO | arch_cap::SSB_NO);
    }

    #[test]
    fn text() {
        struct S(std::string::String);
        impl Write for S {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.0.push_str(s);
                Ok(())
            }
        }
        let p = plan(HostState { clear_cpu_buf_vm: true, rsb_vmexit: true, l1tf: true, flush_l1d: true, ..Default::default() });
        let mut s = S(std::string::String::new());
        write(&p, &Counts { entries: 7, verw: 7, ..Default::default() }, &mut s).unwrap();
        assert!(s.0.starts_with("plan verw yes\nplan rsb_fill full\nplan ibrs no\n"));
        assert!(s.0.contains("plan l1d_flush cond-msr\n") && s.0.contains("count entries 7\ncount verw 7\n"));
        assert!(s.0.ends_with("count ibpb_exit_to_user 0\n"));
    }
}
