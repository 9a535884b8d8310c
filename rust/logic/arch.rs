// SPDX-License-Identifier: GPL-2.0

//! The x86 architecture's bits, named once (SDM vol. 3): control registers, EFER, RFLAGS,
//! debug registers, exception vectors, segment access rights, IA32_APIC_BASE and MSR numbers.
//! VMX's own encodings are in `vmx_controls`, `vmcs_fields` and `vmx_exit`. Pure.

/// A field of bits `lo..lo + width` of a register or an exit qualification.
#[derive(Clone, Copy)]
pub struct Bits {
    lo: u32,
    mask: u64,
}

impl Bits {
    /// Bits `lo..=hi`.
    pub const fn new(lo: u32, hi: u32) -> Self {
        Self { lo, mask: u64::MAX.wrapping_shr(63u32.wrapping_sub(hi.wrapping_sub(lo))) }
    }

    /// The field's value in `v`.
    pub const fn get(self, v: u64) -> u64 {
        v.wrapping_shr(self.lo) & self.mask
    }
}

/// CR0 bits (SDM vol. 3A, 2.5).
pub mod cr0 {
    /// Protection enable.
    pub const PE: u64 = 1 << 0;
    /// Monitor coprocessor.
    pub const MP: u64 = 1 << 1;
    /// x87 emulation.
    pub const EM: u64 = 1 << 2;
    /// Task switched.
    pub const TS: u64 = 1 << 3;
    /// Extension type (always 1).
    pub const ET: u64 = 1 << 4;
    /// Numeric error (native x87 error reporting; VMX requires it).
    pub const NE: u64 = 1 << 5;
    /// Write protect.
    pub const WP: u64 = 1 << 16;
    /// Alignment mask.
    pub const AM: u64 = 1 << 18;
    /// Not write-through.
    pub const NW: u64 = 1 << 29;
    /// Cache disable.
    pub const CD: u64 = 1 << 30;
    /// Paging.
    pub const PG: u64 = 1 << 31;
    /// The bits CR0 has; guest writes to the other bits of 31:0 are ignored, as on KVM (and
    /// bits 63:32 are #GP).
    pub const DEFINED: u64 = PE | MP | EM | TS | ET | NE | WP | AM | NW | CD | PG;
    /// The bits LMSW loads (it cannot clear PE).
    pub const LMSW: u64 = PE | MP | EM | TS;

    /// CR0 after a guest's MOV of `v` (bits 63:32 already checked): ET reads 1 and reserved
    /// bits 31:0 are dropped (KVM's `kvm_set_cr0`).
    pub const fn written(v: u64) -> u64 {
        (v | ET) & DEFINED
    }
}

/// CR4 bits (SDM vol. 3A, 2.5).
pub mod cr4 {
    /// Virtual-8086 mode extensions.
    pub const VME: u64 = 1 << 0;
    /// Protected-mode virtual interrupts.
    pub const PVI: u64 = 1 << 1;
    /// Time stamp disable (RDTSC at CPL 0 only).
    pub const TSD: u64 = 1 << 2;
    /// Debugging extensions.
    pub const DE: u64 = 1 << 3;
    /// Page size extensions.
    pub const PSE: u64 = 1 << 4;
    /// Physical address extension (required for long mode).
    pub const PAE: u64 = 1 << 5;
    /// Machine checks enabled (else a machine check shuts the processor down).
    pub const MCE: u64 = 1 << 6;
    /// Page global enable.
    pub const PGE: u64 = 1 << 7;
    /// Performance-monitoring counter enable (RDPMC at any CPL).
    pub const PCE: u64 = 1 << 8;
    /// FXSAVE/FXRSTOR and SSE enabled.
    pub const OSFXSR: u64 = 1 << 9;
    /// Unmasked SIMD exceptions.
    pub const OSXMMEXCPT: u64 = 1 << 10;
    /// VMX enable.
    pub const VMXE: u64 = 1 << 13;
    /// RDFSBASE and friends.
    pub const FSGSBASE: u64 = 1 << 16;
    /// Process-context identifiers.
    pub const PCIDE: u64 = 1 << 17;
    /// XSAVE and XCR0 enabled.
    pub const OSXSAVE: u64 = 1 << 18;
    /// Supervisor-mode execution prevention.
    pub const SMEP: u64 = 1 << 20;
    /// Supervisor-mode access prevention.
    pub const SMAP: u64 = 1 << 21;
    /// Protection keys for user pages (never given to guests: leaf 7's OSPKE stays clear).
    pub const PKE: u64 = 1 << 22;
    /// Bits whose change invalidates the guest's TLB entries (SDM vol. 3A, 4.10.4.1).
    pub const TLB_FLUSH: u64 = PSE | PGE | PAE | PCIDE | SMEP;
    /// Bits whose change reloads the PDPTEs under PAE paging (SDM vol. 3A, 4.4.1).
    pub const PDPTR_RELOAD: u64 = PSE | PGE | PAE | SMEP;
}

/// CR3 bits 11:0: the PCID with CR4.PCIDE (which may only be turned on with them zero).
pub const CR3_PCID: u64 = 0xfff;

/// CR8's bits: the task priority (the others are reserved).
pub const CR8_TPR: u64 = 0xf;

/// Whether code runs in 64-bit mode: CS.L in IA-32e mode (KVM's `is_64_bit_mode`).
pub const fn is_64_bit_mode(cs_l: bool, efer_value: u64) -> bool {
    cs_l && efer_value & efer::LMA != 0
}

/// RIP as KVM compares and reports it (`kvm_get_linear_rip`): RIP in 64-bit mode, else
/// CS base + RIP in 32 bits.
pub const fn linear_rip(long64: bool, cs_base: u64, rip: u64) -> u64 {
    if long64 { rip } else { cs_base.wrapping_add(rip) & 0xffff_ffff }
}

/// What turns RIP into the linear address KVM compares ([`linear_rip`]): 64-bit mode, else
/// CS's base. Taken at an exit, it stays right while CS and EFER are not changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeBase {
    /// The code runs in 64-bit mode ([`is_64_bit_mode`]).
    pub long64: bool,
    /// CS's base (not used in 64-bit mode).
    pub cs_base: u64,
}

impl CodeBase {
    /// `rip` as a linear address.
    pub const fn linear(self, rip: u64) -> u64 {
        linear_rip(self.long64, self.cs_base, rip)
    }
}

/// EFER bits.
pub mod efer {
    /// SYSCALL enable.
    pub const SCE: u64 = 1 << 0;
    /// Long mode enable.
    pub const LME: u64 = 1 << 8;
    /// Long mode active.
    pub const LMA: u64 = 1 << 10;
    /// No-execute enable.
    pub const NXE: u64 = 1 << 11;
}

/// RFLAGS bits.
pub mod rflags {
    /// Carry.
    pub const CF: u64 = 1 << 0;
    /// Bit 1, which always reads 1.
    pub const FIXED: u64 = 1 << 1;
    /// Parity of the result's low byte (set when even).
    pub const PF: u64 = 1 << 2;
    /// Auxiliary carry (out of bit 3).
    pub const AF: u64 = 1 << 4;
    /// Zero.
    pub const ZF: u64 = 1 << 6;
    /// Sign.
    pub const SF: u64 = 1 << 7;
    /// Trap flag: a single-step #DB after the next instruction.
    pub const TF: u64 = 1 << 8;
    /// Interrupt enable.
    pub const IF: u64 = 1 << 9;
    /// Direction: string instructions count down.
    pub const DF: u64 = 1 << 10;
    /// Overflow.
    pub const OF: u64 = 1 << 11;
    /// Resume: instruction breakpoints do not fire on the next instruction.
    pub const RF: u64 = 1 << 16;
    /// Virtual-8086 mode.
    pub const VM: u64 = 1 << 17;
}

/// Debug registers DR6/DR7 (SDM vol. 3, 18.2).
pub mod dr {
    /// DR6 after reset, and its bits that always read 1.
    pub const DR6_RESET: u64 = 0xffff_0ff0;
    /// DR6 bits software can change: B0-B3, BD, BS, BT, RTM.
    const DR6_VOLATILE: u64 = 0x0001_e00f;
    /// DR6 bits that read as 1 (RTM is active-low and reads 1 when not supported).
    const DR6_FIXED_1: u64 = 0xfffe_0ff0;
    /// DR7 after reset.
    pub const DR7_RESET: u64 = 0x400;
    /// DR7 bits software can change.
    const DR7_VOLATILE: u64 = 0xffff_2bff;
    /// DR7.GD: MOV DR raises #DB.
    pub const DR7_GD: u64 = 1 << 13;
    /// DR6.BD: the #DB came from DR7.GD.
    pub const DR6_BD: u64 = 1 << 13;
    /// DR7 local/global enable bits of the four breakpoints.
    pub const DR7_ENABLES: u64 = 0xff;

    /// DR6 after the guest writes `v` (KVM's `kvm_set_dr`); `None` (#GP) if bits 63:32 are set.
    pub const fn dr6(v: u64) -> Option<u64> {
        if v >> 32 != 0 { None } else { Some(v & DR6_VOLATILE | DR6_FIXED_1) }
    }

    /// DR7 after the guest writes `v`; `None` (#GP) if bits 63:32 are set.
    pub const fn dr7(v: u64) -> Option<u64> {
        if v >> 32 != 0 { None } else { Some(v & DR7_VOLATILE | DR7_RESET) }
    }
}

/// Exception and NMI vectors.
pub mod vector {
    /// Debug.
    pub const DB: u8 = 1;
    /// Non-maskable interrupt.
    pub const NMI: u8 = 2;
    /// Breakpoint (INT3).
    pub const BP: u8 = 3;
    /// Overflow (INTO).
    pub const OF: u8 = 4;
    /// Invalid opcode.
    pub const UD: u8 = 6;
    /// Double fault.
    pub const DF: u8 = 8;
    /// Stack fault.
    pub const SS: u8 = 12;
    /// General protection.
    pub const GP: u8 = 13;
    /// Page fault.
    pub const PF: u8 = 14;
    /// Alignment check.
    pub const AC: u8 = 17;
    /// Machine check.
    pub const MC: u8 = 18;
}

/// Segment access rights, as VMX's guest-state area holds them (SDM vol. 3C, 25.4.1).
pub mod seg_ar {
    use super::Bits;
    /// Descriptor privilege level (SS's is the CPL).
    pub const DPL: Bits = Bits::new(5, 6);
    /// 64-bit code segment (CS.L).
    pub const L: u32 = 1 << 13;
}

/// IA32_APIC_BASE bits.
pub mod apic_base {
    /// This processor is the bootstrap processor.
    pub const BSP: u64 = 1 << 8;
    /// x2APIC mode.
    pub const EXTD: u64 = 1 << 10;
    /// The local APIC is enabled.
    pub const ENABLE: u64 = 1 << 11;
    /// The APIC page's physical address (within the 48 bits rvmx gives guests).
    pub const BASE: u64 = 0xffff_ffff_f000;
}

/// MSR numbers (SDM vol. 4; kvmclock's are KVM's).
#[allow(missing_docs)]
pub mod msr {
    pub const TSC: u32 = 0x10;
    pub const SPEC_CTRL: u32 = 0x48;
    pub const PRED_CMD: u32 = 0x49;
    pub const ARCH_CAPABILITIES: u32 = 0x10a;
    pub const FLUSH_CMD: u32 = 0x10b;
    /// kvmclock's wall-clock MSR (the original number).
    pub const KVM_WALL_CLOCK: u32 = 0x11;
    /// kvmclock's system-time MSR (the original number).
    pub const KVM_SYSTEM_TIME: u32 = 0x12;
    /// kvmclock's wall-clock MSR (`KVM_FEATURE_CLOCKSOURCE2`).
    pub const KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
    /// kvmclock's system-time MSR (`KVM_FEATURE_CLOCKSOURCE2`).
    pub const KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
    /// `MSR_KVM_STEAL_TIME`: the steal-time structure's address and enable bit.
    pub const KVM_STEAL_TIME: u32 = 0x4b56_4d03;
    pub const APIC_BASE: u32 = 0x1b;
    /// The local APIC timer's TSC deadline.
    pub const TSC_DEADLINE: u32 = 0x6e0;
    /// The x2APIC registers (0x800 + the xAPIC offset / 16).
    pub const X2APIC_FIRST: u32 = 0x800;
    /// The last x2APIC register MSR.
    pub const X2APIC_LAST: u32 = 0x8ff;
    /// IA32_TSC_ADJUST: the guest's adjustment of its TSC (writes move the TSC with it).
    pub const TSC_ADJUST: u32 = 0x3b;
    /// IA32_BIOS_SIGN_ID: the microcode revision (bits 63:32).
    pub const UCODE_REV: u32 = 0x8b;
    /// MSR_SMI_COUNT: SMIs the vCPU took (the guest reads it, userspace sets it).
    pub const SMI_COUNT: u32 = 0x34;
    /// IA32_SMBASE: userspace's alone (the guest gets #GP).
    pub const SMBASE: u32 = 0x9e;
    pub const MTRR_CAP: u32 = 0xfe;
    /// MSR_PLATFORM_INFO: bit 31 says CPUID faulting exists (the rest is the VMM's to give).
    pub const PLATFORM_INFO: u32 = 0xce;
    /// MSR_MISC_FEATURES_ENABLES: bit 0 turns CPUID faulting on.
    pub const MISC_FEATURES_ENABLES: u32 = 0x140;
    /// AMD's HWCR (MSR_K7_HWCR), which KVM also gives Intel guests.
    pub const HWCR: u32 = 0xc001_0015;
    pub const SYSENTER_CS: u32 = 0x174;
    pub const SYSENTER_ESP: u32 = 0x175;
    pub const SYSENTER_EIP: u32 = 0x176;
    pub const MISC_ENABLE: u32 = 0x1a0;
    /// MSR_IA32_POWER_CTL: kept for the guest, no effect (KVM's).
    pub const POWER_CTL: u32 = 0x1fc;
    pub const DEBUGCTL: u32 = 0x1d9;
    pub const MTRR_PHYS_BASE0: u32 = 0x200;
    pub const MTRR_PHYS_MASK7: u32 = 0x20f;
    pub const MTRR_FIX64K: u32 = 0x250;
    pub const MTRR_FIX16K_80000: u32 = 0x258;
    pub const MTRR_FIX16K_A0000: u32 = 0x259;
    pub const MTRR_FIX4K_C0000: u32 = 0x268;
    pub const MTRR_FIX4K_F8000: u32 = 0x26f;
    pub const PAT: u32 = 0x277;
    pub const MTRR_DEF_TYPE: u32 = 0x2ff;
    pub const EFER: u32 = 0xc000_0080;
    pub const STAR: u32 = 0xc000_0081;
    pub const LSTAR: u32 = 0xc000_0082;
    pub const CSTAR: u32 = 0xc000_0083;
    pub const SFMASK: u32 = 0xc000_0084;
    pub const FS_BASE: u32 = 0xc000_0100;
    pub const GS_BASE: u32 = 0xc000_0101;
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    pub const TSC_AUX: u32 = 0xc000_0103;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_extracts_fields() {
        assert_eq!(Bits::new(5, 6).get(0x60), 3);
        assert_eq!(Bits::new(16, 31).get(0xabcd_0000), 0xabcd);
        assert_eq!(Bits::new(0, 63).get(u64::MAX), u64::MAX);
        assert_eq!(seg_ar::DPL.get(0xa09b), 0);
        assert_eq!(seg_ar::DPL.get(0xf3), 3);
    }

    #[test]
    fn linear_rip_wraps_in_32_bits_only_outside_64_bit_mode() {
        let real = CodeBase { long64: false, cs_base: 0xf_0000 };
        assert_eq!(real.linear(0xfff0), 0xf_fff0);
        let wrap = CodeBase { long64: false, cs_base: 0xffff_f000 };
        assert_eq!(wrap.linear(0x1010), 0x10);
        // A RIP that differs only above bit 31 is the same place outside 64-bit mode.
        assert_eq!(wrap.linear(0x1_0000_1010), wrap.linear(0x1010));
        let long = CodeBase { long64: true, cs_base: 0x1234 };
        assert_eq!(long.linear(0xffff_8000_0000_0000), 0xffff_8000_0000_0000);
    }

    #[test]
    fn sets_are_the_documented_values() {
        assert_eq!(cr0::DEFINED, 0xe005_003f);
        assert_eq!(cr0::LMSW, 0xf);
        assert_eq!(cr4::VMXE, 0x2000);
        assert_eq!(rflags::TF | rflags::IF, 0x300);
    }

    #[test]
    fn debug_register_values() {
        assert_eq!(dr::dr6(0), Some(0xfffe_0ff0));
        assert_eq!(dr::dr6(!0u32 as u64), Some(0xffff_eff0 | 0xf | 0x800));
        assert_eq!(dr::dr6(1 << 32), None);
        assert_eq!(dr::dr7(0), Some(dr::DR7_RESET));
        assert_eq!(dr::dr7(0xff | 1 << 12), Some(0x4ff), "bit 12 is reserved");
        assert_eq!(dr::dr7(1 << 40), None);
    }
}
