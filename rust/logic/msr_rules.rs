// SPDX-License-Identifier: GPL-2.0

//! The MSRs a guest has on rvmx: which exist (`KVM_GET_MSR_INDEX_LIST`), where each lives, and
//! which values a write may set (else #GP to the guest, or a stop at that entry for
//! `KVM_SET_MSRS`, as KVM does). Pure logic, host-tested; the exits and ioctls are cpu/msr.rs.

/// MSR numbers (SDM vol. 4).
use super::arch::msr::*;

/// The MSRs whose guest values are kept by software and loaded into the CPU while the guest
/// runs (VM-entry MSR-load list), the host's put back at exit (VM-exit MSR-load list), in
/// this order. TSC_AUX and SPEC_CTRL only where the host has them. SPEC_CTRL's host value
/// is back before the first host instruction after an exit (KVM writes it in its exit path,
/// before any RET).
pub const SWITCHED: [u32; 7] = [STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE, TSC_AUX, SPEC_CTRL];

/// The guest MSRs kept outside the CPU while the guest does not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestMsrs {
    /// Values of [`SWITCHED`], in order.
    pub switched: [u64; 7],
    /// IA32_PAT.
    pub pat: u64,
    /// IA32_SYSENTER_CS, _ESP, _EIP.
    pub sysenter: [u64; 3],
    /// IA32_MISC_ENABLE.
    pub misc_enable: u64,
    /// IA32_MTRR_DEF_TYPE.
    pub mtrr_def_type: u64,
    /// Variable-range MTRRs 0-7: base/mask pairs (0x200..0x20f).
    pub mtrr_var: [u64; 16],
    /// Fixed-range MTRRs: 64K, 16K x2, 4K x8.
    pub mtrr_fixed: [u64; 11],
    /// Added to the host TSC while the guest runs.
    pub tsc_offset: u64,
    /// IA32_TSC_ADJUST.
    pub tsc_adjust: u64,
    /// The machine-check registers.
    pub mce: super::mce::Mce,
    /// IA32_BIOS_SIGN_ID (the microcode revision userspace gives the guest).
    pub ucode_rev: u64,
    /// IA32_ARCH_CAPABILITIES (the host-derived value at creation; userspace may set it).
    pub arch_capabilities: u64,
    /// MSR_PLATFORM_INFO (set only by userspace).
    pub platform_info: u64,
    /// IA32_SMBASE (KVM keeps all 64 bits userspace writes; an SMI uses the low 32).
    pub smbase: u64,
    /// MSR_SMI_COUNT.
    pub smi_count: u64,
    /// MSR_MISC_FEATURES_ENABLES (CPUID faulting).
    pub misc_features: u64,
    /// HWCR.
    pub hwcr: u64,
    /// MSR_IA32_POWER_CTL.
    pub power_ctl: u64,
}

/// IA32_PRED_CMD.IBPB.
pub const PRED_CMD_IBPB: u64 = 1 << 0;
/// IA32_FLUSH_CMD.L1D_FLUSH.
pub const FLUSH_CMD_L1D: u64 = 1 << 0;

/// A write to IA32_PRED_CMD (write-only), checked as KVM's `kvm_set_msr_common`: `Ok(true)`
/// to pass IBPB to the processor, `Ok(false)` for a write of 0, `Err` for #GP. `guest_has`:
/// the guest's CPUID lists the MSR (the VMM's own writes skip that check); `host_has`: the
/// processor has IBPB.
pub const fn pred_cmd(v: u64, guest_has: bool, host_has: bool, host: bool) -> Result<bool, ()> {
    if (!host && !guest_has) || v & !PRED_CMD_IBPB != 0 || (v != 0 && !host_has) {
        return Err(());
    }
    Ok(v != 0)
}

/// A write to IA32_FLUSH_CMD, as [`pred_cmd`]; without the processor's L1D flush even a write
/// of 0 is #GP (KVM).
pub const fn flush_cmd(v: u64, guest_has: bool, host_has: bool, host: bool) -> Result<bool, ()> {
    if (!host && !guest_has) || v & !FLUSH_CMD_L1D != 0 || !host_has {
        return Err(());
    }
    Ok(v != 0)
}

/// IA32_DEBUGCTL bits a write may set and that are ignored: LBR (0) and BTF (1).
pub const DEBUGCTL_IGNORED: u64 = 1 << 0 | 1 << 1;
/// IA32_MISC_ENABLE after reset, as KVM sets it: PEBS and BTS unavailable.
pub const MISC_ENABLE_RESET: u64 = MISC_ENABLE_PMU_RO;
/// IA32_MISC_ENABLE bits the guest cannot change (#GP): BTS (11) and PEBS (12) unavailable.
pub const MISC_ENABLE_PMU_RO: u64 = 1 << 11 | 1 << 12;
/// IA32_MISC_ENABLE.MWAIT (18): MONITOR/MWAIT enabled (see `kvm_abi::quirk::MISC_ENABLE_NO_MWAIT`).
pub const MISC_ENABLE_MWAIT: u64 = 1 << 18;
/// IA32_MISC_ENABLE.EMON (7): the guest's writes to it are ignored.
pub const MISC_ENABLE_EMON: u64 = 1 << 7;
/// IA32_BIOS_SIGN_ID at vCPU creation, as KVM sets it (revision 1).
pub const UCODE_REV_RESET: u64 = 0x1_0000_0000;
/// MSR_PLATFORM_INFO.CPUID_FAULT: CPUID faulting exists (KVM emulates it: the value a vCPU
/// starts with).
pub const PLATFORM_INFO_CPUID_FAULT: u64 = 1 << 31;
/// MSR_MISC_FEATURES_ENABLES.CPUID_FAULT: CPUID at CPL > 0 raises #GP.
pub const MISC_FEATURES_CPUID_FAULT: u64 = 1 << 0;
/// HWCR bits that hold a value (McStatusWrEn, TscFreqSel), as KVM has them. KVM also keeps
/// bit 35 (CpuidUserDis) for guests whose CPUID lists AMD's GP_ON_USER_CPUID, which rvmx does
/// not emulate.
pub const HWCR_VALID: u64 = 1 << 18 | 1 << 24;
/// HWCR bits whose writes are ignored: TLB cache disable, flush filter disable, IGNNE emulation.
pub const HWCR_IGNORED: u64 = 1 << 3 | 1 << 6 | 1 << 8;
/// IA32_PAT after reset.
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;
/// IA32_MTRRCAP: 8 variable ranges, fixed ranges, write-combining.
pub const MTRR_CAP_VALUE: u64 = 8 | 1 << 8 | 1 << 10;

impl Default for GuestMsrs {
    fn default() -> Self {
        Self {
            switched: [0; 7],
            pat: PAT_RESET,
            sysenter: [0; 3],
            misc_enable: MISC_ENABLE_RESET,
            mtrr_def_type: 0,
            mtrr_var: [0; 16],
            mtrr_fixed: [0; 11],
            tsc_offset: 0,
            tsc_adjust: 0,
            mce: Default::default(),
            ucode_rev: UCODE_REV_RESET,
            arch_capabilities: 0,
            platform_info: PLATFORM_INFO_CPUID_FAULT,
            misc_features: 0,
            smbase: super::smm::DEFAULT_SMBASE as u64,
            smi_count: 0,
            hwcr: 0,
            power_ctl: 0,
        }
    }
}

/// Every MSR `KVM_GET_MSR_INDEX_LIST` reports: those a guest can read and userspace can save
/// and restore.
pub const INDEX_LIST: [u32; 29] = [
    SYSENTER_CS, SYSENTER_ESP, SYSENTER_EIP, STAR, CSTAR, KERNEL_GS_BASE, SFMASK, LSTAR,
    TSC_AUX, TSC, PAT, MISC_ENABLE, MTRR_DEF_TYPE, EFER, FS_BASE, GS_BASE, TSC_ADJUST,
    // Emulated (KVM's emulated_msrs order): kvmclock, the APIC timer's deadline (0 and
    // ignored without an in-kernel APIC), CPUID faulting, POWER_CTL, HWCR.
    KVM_SYSTEM_TIME, KVM_WALL_CLOCK, KVM_SYSTEM_TIME_NEW, KVM_WALL_CLOCK_NEW, KVM_STEAL_TIME, TSC_DEADLINE,
    SMBASE, SMI_COUNT, PLATFORM_INFO, MISC_FEATURES_ENABLES, POWER_CTL, HWCR,
];

/// Whether `v` is a canonical 48-bit address.
pub const fn canonical(v: u64) -> bool {
    let top = (v as i64) >> 47;
    top == 0 || top == -1
}

/// Whether every byte of a PAT (or fixed-range MTRR) value is a valid memory type.
pub const fn valid_memory_types(v: u64, pat: bool) -> bool {
    // Byte by byte from the low one; the zero bytes left at the top are UC, valid.
    let mut v = v;
    while v != 0 {
        let t = v & 0xff;
        // 0 UC, 1 WC, 4 WT, 5 WP, 6 WB; PAT also 7 UC-.
        if !(t == 0 || t == 1 || t == 4 || t == 5 || t == 6 || (pat && t == 7)) {
            return false;
        }
        v >>= 8;
    }
    true
}

/// Slot of a fixed-range MTRR in [`GuestMsrs::mtrr_fixed`].
pub const fn fixed_mtrr_slot(msr: u32) -> Option<usize> {
    match msr {
        MTRR_FIX64K => Some(0),
        MTRR_FIX16K_80000 => Some(1),
        MTRR_FIX16K_A0000 => Some(2),
        // msr is in the range (8 MSRs): neither wraps.
        MTRR_FIX4K_C0000..=MTRR_FIX4K_F8000 => Some(msr.wrapping_sub(MTRR_FIX4K_C0000).wrapping_add(3) as usize),
        _ => None,
    }
}

/// Slot of `msr` in [`SWITCHED`].
pub fn switched_slot(msr: u32) -> Option<usize> {
    SWITCHED.iter().position(|&m| m == msr)
}

/// A set of [`SWITCHED`] MSRs: bit `i` for slot `i`.
pub type SwitchedSet = u8;
const _: () = assert!(SWITCHED.len() <= SwitchedSet::BITS as usize);

/// Every [`SWITCHED`] MSR.
pub const ALL_SWITCHED: SwitchedSet = ((1u16 << SWITCHED.len()) - 1) as SwitchedSet;

/// `msr`'s bit in a [`SwitchedSet`] (0 if it is not switched): its slot's (tested).
pub const fn switched_bit(msr: u32) -> SwitchedSet {
    match msr {
        STAR => 1 << 0,
        LSTAR => 1 << 1,
        CSTAR => 1 << 2,
        SFMASK => 1 << 3,
        KERNEL_GS_BASE => 1 << 4,
        TSC_AUX => 1 << 5,
        SPEC_CTRL => 1 << 6,
        _ => 0,
    }
}

/// The switched MSRs a guest with EFER `efer` can use without an exit, which must be in the
/// CPU while it runs (KVM's `vmx_setup_uret_msrs`); the others wait in [`GuestMsrs`], where
/// the intercepted RDMSR and WRMSR find them, and the host's values stay in the CPU.
/// SYSCALL/SYSRET's STAR, LSTAR and SFMASK only in long mode with EFER.SCE (SYSCALL is #UD
/// elsewhere on Intel); CSTAR with them, though KVM never loads it on Intel, where SYSCALL
/// from compatibility mode is #UD: an emulator that follows AMD there would hand the guest
/// the host's entry point. SWAPGS's KERNEL_GS_BASE in long mode; TSC_AUX while RDTSCP and
/// RDPID are enabled (`rdtscp`); SPEC_CTRL always (the lists' length leaves it out while
/// the guest's value is the host's).
pub fn in_cpu(efer: u64, rdtscp: bool) -> SwitchedSet {
    use super::arch::efer::{LMA, SCE};
    let long = efer & LMA != 0;
    let syscall = if long && efer & SCE != 0 {
        switched_bit(STAR) | switched_bit(LSTAR) | switched_bit(CSTAR) | switched_bit(SFMASK)
    } else {
        0
    };
    let swapgs = if long { switched_bit(KERNEL_GS_BASE) } else { 0 };
    let tsc_aux = if rdtscp { switched_bit(TSC_AUX) } else { 0 };
    syscall | swapgs | tsc_aux | switched_bit(SPEC_CTRL)
}

fn switched_mut(m: &mut GuestMsrs, msr: u32) -> Result<&mut u64, ()> {
    switched_slot(msr).and_then(|i| m.switched.get_mut(i)).ok_or(())
}

/// Reads a software-kept MSR; `None` if it is not one (EFER, FS/GS base, TSC and APIC_BASE
/// live elsewhere; anything else does not exist).
pub fn read(m: &GuestMsrs, msr: u32, host: bool) -> Option<u64> {
    Some(match msr {
        m_ if super::mce::Mce::owns(m_) => return m.mce.read(msr, host),
        UCODE_REV => m.ucode_rev,
        SMBASE if host => m.smbase,
        SMI_COUNT => m.smi_count,
        PAT => m.pat,
        SYSENTER_CS..=SYSENTER_EIP => *m.sysenter.get(msr.wrapping_sub(SYSENTER_CS) as usize)?,
        MISC_ENABLE => m.misc_enable,
        // The guest may be refused PLATFORM_INFO (KVM_CAP_MSR_PLATFORM_INFO): cpu/msr.rs.
        PLATFORM_INFO => m.platform_info,
        MISC_FEATURES_ENABLES => m.misc_features,
        HWCR => m.hwcr,
        POWER_CTL => m.power_ctl,
        MTRR_CAP => MTRR_CAP_VALUE,
        MTRR_DEF_TYPE => m.mtrr_def_type,
        MTRR_PHYS_BASE0..=MTRR_PHYS_MASK7 => *m.mtrr_var.get(msr.wrapping_sub(MTRR_PHYS_BASE0) as usize)?,
        _ => match (fixed_mtrr_slot(msr), switched_slot(msr)) {
            (Some(i), _) => *m.mtrr_fixed.get(i)?,
            (_, Some(i)) => *m.switched.get(i)?,
            _ => return None,
        },
    })
}

/// Writes a software-kept MSR; `Err(())` if the value is invalid (#GP) or the MSR is not one.
/// `host`: the write comes from userspace (`KVM_SET_MSRS`), which KVM trusts with some values
/// a guest may not write (a VMM restoring state).
pub fn write(m: &mut GuestMsrs, msr: u32, v: u64, host: bool) -> Result<(), ()> {
    match msr {
        m_ if super::mce::Mce::owns(m_) => return m.mce.write(msr, v, host),
        // A guest's write asks the processor to load the revision: ignored, as KVM does.
        UCODE_REV => {
            if host {
                m.ucode_rev = v;
            }
        }
        // SMM's: only userspace sets them (a VMM restoring state), any value (KVM).
        SMBASE if host => m.smbase = v,
        SMI_COUNT if host => m.smi_count = v,
        PAT if valid_memory_types(v, true) => m.pat = v,
        SYSENTER_CS => m.sysenter[0] = v & 0xffff_ffff,
        SYSENTER_ESP | SYSENTER_EIP if canonical(v) => *m.sysenter.get_mut(msr.wrapping_sub(SYSENTER_CS) as usize).ok_or(())? = v,
        // KVM's rules: userspace sets any value; the guest may not change the PMU bits, and
        // its EMON writes are ignored.
        MISC_ENABLE if host => m.misc_enable = v,
        MISC_ENABLE if (v ^ m.misc_enable) & MISC_ENABLE_PMU_RO == 0 => {
            m.misc_enable = (v & !MISC_ENABLE_EMON) | (m.misc_enable & MISC_ENABLE_EMON);
        }
        // Only userspace gives PLATFORM_INFO (any value, as KVM).
        PLATFORM_INFO if host => m.platform_info = v,
        // CPUID faulting, only where PLATFORM_INFO says it exists.
        MISC_FEATURES_ENABLES
            if v & !MISC_FEATURES_CPUID_FAULT == 0
                && (v & MISC_FEATURES_CPUID_FAULT == 0 || m.platform_info & PLATFORM_INFO_CPUID_FAULT != 0) =>
        {
            m.misc_features = v
        }
        HWCR if v & !(HWCR_VALID | HWCR_IGNORED) == 0 => m.hwcr = v & HWCR_VALID,
        // Any value, no effect (KVM keeps it the same way).
        POWER_CTL => m.power_ctl = v,
        MTRR_DEF_TYPE if v & !0xcff == 0 && valid_memory_types(v & 0xff, false) => m.mtrr_def_type = v,
        MTRR_PHYS_BASE0..=MTRR_PHYS_MASK7 if v >> 48 == 0 => {
            *m.mtrr_var.get_mut(msr.wrapping_sub(MTRR_PHYS_BASE0) as usize).ok_or(())? = v;
        }
        // Bits 63:32 of SFMASK and TSC_AUX are reserved: the VM-entry MSR-load list would
        // fail every later entry with them (KVM: #GP, or a failed KVM_SET_MSRS).
        STAR => *switched_mut(m, msr)? = v,
        SFMASK | TSC_AUX if v >> 32 == 0 => *switched_mut(m, msr)? = v,
        LSTAR | CSTAR | KERNEL_GS_BASE if canonical(v) => *switched_mut(m, msr)? = v,
        // Which bits exist is the processor's to say: the caller tried `v` on it (as KVM).
        SPEC_CTRL => *switched_mut(m, msr)? = v,
        _ => match fixed_mtrr_slot(msr) {
            Some(i) if valid_memory_types(v, false) => *m.mtrr_fixed.get_mut(i).ok_or(())? = v,
            _ => return Err(()),
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_values_and_reads() {
        let m = GuestMsrs::default();
        assert_eq!(read(&m, PAT, false), Some(PAT_RESET));
        assert_eq!(read(&m, MTRR_CAP, false), Some(0x508));
        assert_eq!(read(&m, 0x1234, false), None);
        assert_eq!(read(&m, EFER, false), None, "EFER lives in SREGS/VMCS");
    }

    #[test]
    fn writes_and_their_validity() {
        let mut m = GuestMsrs::default();
        assert_eq!(write(&mut m, LSTAR, 0xffff_ffff_8100_0000, false), Ok(()));
        assert_eq!(read(&m, LSTAR, false), Some(0xffff_ffff_8100_0000));
        assert_eq!(write(&mut m, LSTAR, 0x8000_0000_0000_0000, false), Err(()), "non-canonical");
        assert_eq!(write(&mut m, PAT, 0x0606_0606_0606_0606, false), Ok(()));
        assert_eq!(write(&mut m, PAT, 0x0202, false), Err(()), "type 2 is reserved");
        assert_eq!(write(&mut m, MTRR_FIX4K_F8000, 0x0606_0606_0606_0606, false), Ok(()));
        assert_eq!(read(&m, MTRR_FIX4K_F8000, false), Some(0x0606_0606_0606_0606));
        assert_eq!(write(&mut m, MTRR_DEF_TYPE, 0xc06, false), Ok(()));
        assert_eq!(write(&mut m, MTRR_DEF_TYPE, 0x1006, false), Err(()));
        assert_eq!(write(&mut m, MISC_ENABLE, MISC_ENABLE_RESET | 1 | 1 << 22, false), Ok(()));
        assert_eq!(write(&mut m, MISC_ENABLE, MISC_ENABLE_RESET | MISC_ENABLE_EMON, false), Ok(()));
        assert_eq!(read(&m, MISC_ENABLE, false), Some(MISC_ENABLE_RESET), "EMON ignored, the rest as written");
        assert_eq!(write(&mut m, MISC_ENABLE, 1, false), Err(()), "PEBS/BTS bits are read-only");
        assert_eq!(write(&mut m, MISC_ENABLE, 1, true), Ok(()), "userspace sets any value");
        assert_eq!(read(&m, MISC_ENABLE, false), Some(1));
        assert_eq!(write(&mut m, 0x1234, 0, false), Err(()));
        // PRED_CMD and FLUSH_CMD: write-only commands gated by CPUID (not for the VMM).
        assert_eq!(pred_cmd(1, true, true, false), Ok(true));
        assert_eq!(pred_cmd(0, true, true, false), Ok(false));
        assert_eq!(pred_cmd(0, true, false, false), Ok(false), "0 is fine without IBPB");
        assert_eq!(pred_cmd(1, false, true, false), Err(()), "not in the guest's CPUID");
        assert_eq!(pred_cmd(1, false, true, true), Ok(true), "the VMM's write");
        assert_eq!(pred_cmd(1, true, false, false), Err(()), "the host has no IBPB");
        assert_eq!(pred_cmd(2, true, true, true), Err(()), "reserved bit");
        assert_eq!(flush_cmd(1, true, true, false), Ok(true));
        assert_eq!(flush_cmd(0, true, false, true), Err(()), "no L1D flush on the host: even 0");
        for msr in [SFMASK, TSC_AUX] {
            for host in [false, true] {
                assert_eq!(write(&mut m, msr, 1 << 32, host), Err(()), "{msr:#x}: reserved bits 63:32");
                assert_eq!(write(&mut m, msr, 0xffff_ffff, host), Ok(()));
            }
        }
        // SPEC_CTRL: switched, starts at 0; the processor judges the value (cpu/msr.rs).
        assert_eq!(read(&m, SPEC_CTRL, false), Some(0));
        assert_eq!((write(&mut m, SPEC_CTRL, 6, false), read(&m, SPEC_CTRL, false)), (Ok(()), Some(6)));
        assert_eq!(switched_slot(SPEC_CTRL), Some(SWITCHED.len() - 1), "last: its entry can be left out of the lists");
        assert_eq!((write(&mut m, UCODE_REV, 0, false), read(&m, UCODE_REV, false)), (Ok(()), Some(UCODE_REV_RESET)));
        assert_eq!((write(&mut m, UCODE_REV, 7 << 32, true), read(&m, UCODE_REV, false)), (Ok(()), Some(7 << 32)));
    }

    #[test]
    fn switched_msrs_in_the_cpu() {
        use crate::arch::efer::{LMA, LME, SCE};
        let bits = |msrs: &[u32]| msrs.iter().fold(0, |s, &m| s | switched_bit(m));
        assert_eq!(switched_bit(0x1234), 0);
        for (i, &m) in SWITCHED.iter().enumerate() {
            assert_eq!(switched_bit(m), 1 << i, "{m:#x}: its slot's bit");
        }
        assert_eq!(bits(&SWITCHED), ALL_SWITCHED);
        // Real mode, 32-bit protected mode, long mode enabled but not active: nothing the
        // guest cannot reach (its RDMSR/WRMSR exit; SYSCALL, SWAPGS are #UD).
        for efer in [0, SCE, LME | SCE] {
            assert_eq!(in_cpu(efer, false), bits(&[SPEC_CTRL]), "EFER {efer:#x}");
            assert_eq!(in_cpu(efer, true), bits(&[TSC_AUX, SPEC_CTRL]), "EFER {efer:#x} with RDTSCP");
        }
        // Long mode: SWAPGS; with SCE, SYSCALL/SYSRET too.
        assert_eq!(in_cpu(LME | LMA, false), bits(&[KERNEL_GS_BASE, SPEC_CTRL]));
        assert_eq!(in_cpu(LME | LMA | SCE, true), bits(&SWITCHED));
    }

    #[test]
    fn hwcr_platform_info_and_cpuid_faulting() {
        let mut m = GuestMsrs::default();
        for bit in 0..64 {
            let v = 1u64 << bit;
            let legal = v & (HWCR_VALID | HWCR_IGNORED) != 0;
            assert_eq!(write(&mut m, HWCR, v, false).is_ok(), legal, "HWCR bit {bit}");
            assert_eq!(read(&m, HWCR, false), Some(if legal { v & HWCR_VALID } else { 0 }), "HWCR bit {bit}");
            m.hwcr = 0;
        }
        assert_eq!(read(&m, PLATFORM_INFO, false), Some(PLATFORM_INFO_CPUID_FAULT));
        assert_eq!(write(&mut m, PLATFORM_INFO, 0xff00, false), Err(()), "the guest cannot write it");
        assert_eq!(write(&mut m, MISC_FEATURES_ENABLES, 2, false), Err(()));
        assert_eq!(write(&mut m, MISC_FEATURES_ENABLES, 1, false), Ok(()));
        assert_eq!(write(&mut m, PLATFORM_INFO, 0xff00, true), Ok(()));
        assert_eq!(write(&mut m, MISC_FEATURES_ENABLES, 1, true), Err(()), "no faulting without PLATFORM_INFO's bit");
        assert_eq!(write(&mut m, MISC_FEATURES_ENABLES, 0, false), Ok(()));
    }

    #[test]
    fn index_list_entries_are_readable_or_live_elsewhere() {
        let m = GuestMsrs::default();
        for msr in INDEX_LIST {
            let kvmclock = matches!(msr, KVM_SYSTEM_TIME | KVM_WALL_CLOCK | KVM_SYSTEM_TIME_NEW | KVM_WALL_CLOCK_NEW | KVM_STEAL_TIME);
            let elsewhere = kvmclock || matches!(msr, EFER | FS_BASE | GS_BASE | TSC | TSC_ADJUST | TSC_DEADLINE | ARCH_CAPABILITIES);
            assert!(elsewhere || read(&m, msr, msr == SMBASE).is_some(), "{msr:#x}");
        }
        assert_eq!(read(&m, SMBASE, false), None, "SMBASE is userspace's alone");
        let mut w = m;
        assert_eq!((write(&mut w, SMBASE, 0x100_0000, false), write(&mut w, SMI_COUNT, 1, false)), (Err(()), Err(())));
        assert_eq!((write(&mut w, SMBASE, 0x100_0000, true), read(&w, SMBASE, true)), (Ok(()), Some(0x100_0000)));
        assert!(canonical(0x7fff_ffff_ffff) && canonical(0xffff_8000_0000_0000) && !canonical(1 << 47));
    }
}
