// SPDX-License-Identifier: GPL-2.0

//! VMX capability MSRs: their numbers and what rvmx reads from them.
//!
//! Pure logic (no kernel): the module reads the MSRs, this file decodes and judges them. It is
//! also compiled on the host (unit tests) and by the `rvmx` tool, which decodes the same MSRs
//! through `/dev/cpu/N/msr` for `rvmx info`. References are to the Intel SDM, volume 3,
//! appendix A ("VMX capability reporting facility").

use core::fmt;

use super::vmx_controls::{pin, proc, proc2};

/// A model-specific register number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msr(pub u32);

/// Lock and enable bits for VMX, written by firmware (SDM 24.7).
pub const IA32_FEATURE_CONTROL: Msr = Msr(0x3a);
/// VMCS revision, VMXON region size, memory type, "true" controls (A.1).
pub const IA32_VMX_BASIC: Msr = Msr(0x480);
/// Allowed settings of the pin-based execution controls (A.3.1).
pub const IA32_VMX_PINBASED_CTLS: Msr = Msr(0x481);
/// Allowed settings of the primary processor-based execution controls (A.3.2).
pub const IA32_VMX_PROCBASED_CTLS: Msr = Msr(0x482);
/// Allowed settings of the VM-exit controls (A.4).
pub const IA32_VMX_EXIT_CTLS: Msr = Msr(0x483);
/// Allowed settings of the VM-entry controls (A.5).
pub const IA32_VMX_ENTRY_CTLS: Msr = Msr(0x484);
/// Miscellaneous data: preemption timer rate, activity states (A.6).
pub const IA32_VMX_MISC: Msr = Msr(0x485);
/// CR0 bits that must be 1 in VMX operation (A.7).
pub const IA32_VMX_CR0_FIXED0: Msr = Msr(0x486);
/// CR0 bits that may be 1 in VMX operation (A.7).
pub const IA32_VMX_CR0_FIXED1: Msr = Msr(0x487);
/// CR4 bits that must be 1 in VMX operation (A.8).
pub const IA32_VMX_CR4_FIXED0: Msr = Msr(0x488);
/// CR4 bits that may be 1 in VMX operation (A.8).
pub const IA32_VMX_CR4_FIXED1: Msr = Msr(0x489);
/// Allowed settings of the secondary processor-based execution controls (A.3.3).
pub const IA32_VMX_PROCBASED_CTLS2: Msr = Msr(0x48b);
/// EPT and VPID capabilities (A.10).
pub const IA32_VMX_EPT_VPID_CAP: Msr = Msr(0x48c);
/// "True" pin-based controls, present when VMX_BASIC bit 55 is set (A.3.1).
pub const IA32_VMX_TRUE_PINBASED_CTLS: Msr = Msr(0x48d);
/// "True" primary processor-based controls (A.3.2).
pub const IA32_VMX_TRUE_PROCBASED_CTLS: Msr = Msr(0x48e);
/// "True" VM-exit controls (A.4).
pub const IA32_VMX_TRUE_EXIT_CTLS: Msr = Msr(0x48f);
/// "True" VM-entry controls (A.5).
pub const IA32_VMX_TRUE_ENTRY_CTLS: Msr = Msr(0x490);

/// IA32_FEATURE_CONTROL bit 0: the MSR is locked until reset.
pub const FEATURE_CONTROL_LOCKED: u64 = 1 << 0;
/// IA32_FEATURE_CONTROL bit 2: VMXON allowed outside SMX operation.
pub const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;

/// CPUID.1:ECX bit 5: the processor supports VMX.
pub const CPUID_1_ECX_VMX: u32 = 1 << 5;
/// Write-back memory type, the one rvmx needs for the VMCS and EPT structures.
pub const MEMORY_TYPE_WB: u64 = 6;

/// EPT_VPID_CAP bits (SDM A.10).
pub mod ept_vpid {
    /// EPT entries may be execute-only.
    pub const EXECUTE_ONLY: u64 = 1 << 0;
    /// A page walk of length 4 is supported.
    pub const WALK_LENGTH_4: u64 = 1 << 6;
    /// EPT paging structures may be write-back.
    pub const MEMORY_TYPE_WB: u64 = 1 << 14;
    /// 2-MiB EPT pages.
    pub const PAGE_2M: u64 = 1 << 16;
    /// 1-GiB EPT pages.
    pub const PAGE_1G: u64 = 1 << 17;
    /// The INVEPT instruction.
    pub const INVEPT: u64 = 1 << 20;
    /// Accessed and dirty flags in EPT entries.
    pub const ACCESSED_DIRTY: u64 = 1 << 21;
    /// Single-context INVEPT.
    pub const INVEPT_SINGLE: u64 = 1 << 25;
    /// All-context INVEPT.
    pub const INVEPT_ALL: u64 = 1 << 26;
    /// The INVVPID instruction.
    pub const INVVPID: u64 = 1 << 32;
    /// Single-context INVVPID.
    pub const INVVPID_SINGLE: u64 = 1 << 41;
    /// All-context INVVPID.
    pub const INVVPID_ALL: u64 = 1 << 42;
}

/// Allowed settings of a 32-bit VMX control field (SDM A.3): a bit may be 0 if it is clear in
/// `must_be_one`, and may be 1 if it is set in `may_be_one`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Controls {
    /// Bits that must be 1 (the MSR's low half, "allowed 0-settings").
    pub must_be_one: u32,
    /// Bits that may be 1 (the MSR's high half, "allowed 1-settings").
    pub may_be_one: u32,
}

impl Controls {
    /// Decodes a control-capability MSR value.
    pub const fn from_msr(value: u64) -> Self {
        Self { must_be_one: value as u32, may_be_one: (value >> 32) as u32 }
    }

    /// Whether every bit in `bits` may be set.
    pub const fn allows(&self, bits: u32) -> bool {
        self.may_be_one & bits == bits
    }

    /// `wanted` adjusted to what the CPU accepts: required bits forced on; `None` if a wanted
    /// bit cannot be 1.
    pub const fn adjust(&self, wanted: u32) -> Option<u32> {
        if self.allows(wanted) {
            Some(wanted | self.must_be_one)
        } else {
            None
        }
    }
}

/// Why a CPU cannot run rvmx. Each names what is missing, for one clear log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// CPUID says the processor has no VMX.
    NoVmx,
    /// Firmware left IA32_FEATURE_CONTROL unlocked: VMXON would fault.
    FeatureControlUnlocked,
    /// Firmware locked IA32_FEATURE_CONTROL with VMX outside SMX disabled.
    VmxDisabledByFirmware,
    /// A VMX capability MSR could not be read.
    MsrUnreadable(Msr),
    /// The VMXON/VMCS region is not 4 KiB (VMX_BASIC bits 44:32).
    RegionSize(u32),
    /// VMX structures must be write-back (VMX_BASIC bits 53:50).
    MemoryType(u64),
    /// Physical addresses of VMX structures are limited to 32 bits (VMX_BASIC bit 48).
    AddressWidth32,
    /// The "true" control MSRs are absent (VMX_BASIC bit 55).
    NoTrueControls,
    /// Required features are absent: a [`Missing`] set.
    Features(Missing),
}

/// A set of required VMX features the CPU lacks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Missing(u32);

impl Missing {
    /// Names of the required features, in bit order.
    const NAMES: [&'static str; 8] = [
        "secondary controls",
        "EPT",
        "EPT 4-level walk",
        "EPT write-back tables",
        "INVEPT (single or all context)",
        "VPID",
        "INVVPID (single or all context)",
        "unrestricted guest",
    ];

    fn add(&mut self, index: usize) {
        self.0 |= 1 << index;
    }

    /// Whether nothing is missing.
    pub const fn is_empty(&self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for (i, name) in Self::NAMES.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                write!(f, "{sep}{name}")?;
                sep = ", ";
            }
        }
        Ok(())
    }
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoVmx => write!(f, "this CPU has no VMX (CPUID.1:ECX.VMX[bit 5] = 0)"),
            Self::FeatureControlUnlocked => {
                write!(f, "IA32_FEATURE_CONTROL is not locked by firmware; VMXON would fault")
            }
            Self::VmxDisabledByFirmware => write!(
                f,
                "VMX is disabled by firmware (IA32_FEATURE_CONTROL locked without VMX outside \
                 SMX); enable VT-x in the firmware setup"
            ),
            Self::MsrUnreadable(msr) => write!(f, "cannot read VMX capability MSR {:#x}", msr.0),
            Self::RegionSize(size) => {
                write!(f, "VMXON region size is {size} bytes, rvmx needs 4096")
            }
            Self::MemoryType(t) => {
                write!(f, "VMX structures use memory type {t}, rvmx needs write-back (6)")
            }
            Self::AddressWidth32 => {
                write!(f, "VMX structures are limited to 32-bit physical addresses")
            }
            Self::NoTrueControls => write!(f, "the VMX \"true\" control MSRs are absent"),
            Self::Features(missing) => write!(f, "required VMX features missing: {missing}"),
        }
    }
}

/// Checks CPUID and firmware settings: can this CPU enter VMX operation at all?
pub fn check_platform(cpuid_1_ecx: u32, feature_control: u64) -> Result<(), Unsupported> {
    if cpuid_1_ecx & CPUID_1_ECX_VMX == 0 {
        return Err(Unsupported::NoVmx);
    }
    if feature_control & FEATURE_CONTROL_LOCKED == 0 {
        return Err(Unsupported::FeatureControlUnlocked);
    }
    if feature_control & FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
        return Err(Unsupported::VmxDisabledByFirmware);
    }
    Ok(())
}

/// The VMX capabilities of a CPU, as rvmx uses them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmxCaps {
    /// Raw IA32_VMX_BASIC.
    pub basic: u64,
    /// Pin-based execution controls (true MSR).
    pub pinbased: Controls,
    /// Primary processor-based execution controls (true MSR).
    pub procbased: Controls,
    /// Secondary processor-based execution controls (zero if unavailable).
    pub procbased2: Controls,
    /// VM-exit controls (true MSR).
    pub exit: Controls,
    /// VM-entry controls (true MSR).
    pub entry: Controls,
    /// Raw IA32_VMX_MISC.
    pub misc: u64,
    /// Raw IA32_VMX_EPT_VPID_CAP (zero if unavailable).
    pub ept_vpid: u64,
    /// CR0 bits fixed to 1 / allowed to be 1 in VMX operation.
    pub cr0_fixed: (u64, u64),
    /// CR4 bits fixed to 1 / allowed to be 1 in VMX operation.
    pub cr4_fixed: (u64, u64),
}

impl VmxCaps {
    /// Reads and checks the capability MSRs through `read` (which returns `None` if the MSR
    /// faults). Fails with the first problem that makes the CPU unusable for rvmx.
    pub fn read(read: impl Fn(Msr) -> Option<u64>) -> Result<Self, Unsupported> {
        let rd = |msr: Msr| read(msr).ok_or(Unsupported::MsrUnreadable(msr));
        let basic = rd(IA32_VMX_BASIC)?;
        let caps = Self { basic, ..Self::default() };
        if caps.region_size() != 4096 {
            return Err(Unsupported::RegionSize(caps.region_size()));
        }
        if caps.memory_type() != MEMORY_TYPE_WB {
            return Err(Unsupported::MemoryType(caps.memory_type()));
        }
        if basic & (1 << 48) != 0 {
            return Err(Unsupported::AddressWidth32);
        }
        if basic & (1 << 55) == 0 {
            return Err(Unsupported::NoTrueControls);
        }
        let procbased = Controls::from_msr(rd(IA32_VMX_TRUE_PROCBASED_CTLS)?);
        let has_secondary = procbased.allows(proc::SECONDARY_CONTROLS);
        let caps = Self {
            pinbased: Controls::from_msr(rd(IA32_VMX_TRUE_PINBASED_CTLS)?),
            procbased,
            procbased2: if has_secondary {
                Controls::from_msr(rd(IA32_VMX_PROCBASED_CTLS2)?)
            } else {
                Controls::default()
            },
            exit: Controls::from_msr(rd(IA32_VMX_TRUE_EXIT_CTLS)?),
            entry: Controls::from_msr(rd(IA32_VMX_TRUE_ENTRY_CTLS)?),
            misc: rd(IA32_VMX_MISC)?,
            // The EPT/VPID MSR exists only if EPT or VPID may be enabled (A.10).
            ept_vpid: if has_secondary {
                read(IA32_VMX_EPT_VPID_CAP).unwrap_or(0)
            } else {
                0
            },
            cr0_fixed: (rd(IA32_VMX_CR0_FIXED0)?, rd(IA32_VMX_CR0_FIXED1)?),
            cr4_fixed: (rd(IA32_VMX_CR4_FIXED0)?, rd(IA32_VMX_CR4_FIXED1)?),
            ..caps
        };
        let missing = caps.missing();
        if !missing.is_empty() {
            return Err(Unsupported::Features(missing));
        }
        Ok(caps)
    }

    /// VMCS revision identifier (VMX_BASIC bits 30:0), written at the start of every VMXON
    /// region and VMCS.
    pub const fn revision_id(&self) -> u32 {
        self.basic as u32 & 0x7fff_ffff
    }

    /// Size of the VMXON region and VMCS in bytes (VMX_BASIC bits 44:32).
    pub const fn region_size(&self) -> u32 {
        ((self.basic >> 32) & 0x1fff) as u32
    }

    /// Memory type of VMX structures (VMX_BASIC bits 53:50).
    pub const fn memory_type(&self) -> u64 {
        (self.basic >> 50) & 0xf
    }

    /// The required features this CPU lacks: EPT (4-level, WB, INVEPT), VPID (INVVPID) and
    /// unrestricted guest.
    pub fn missing(&self) -> Missing {
        use ept_vpid::*;
        let mut m = Missing::default();
        let ev = self.ept_vpid;
        let checks = [
            self.procbased.allows(proc::SECONDARY_CONTROLS),
            self.procbased2.allows(proc2::ENABLE_EPT),
            ev & WALK_LENGTH_4 != 0,
            ev & ept_vpid::MEMORY_TYPE_WB != 0,
            ev & INVEPT != 0 && ev & (INVEPT_SINGLE | INVEPT_ALL) != 0,
            self.procbased2.allows(proc2::ENABLE_VPID),
            ev & INVVPID != 0 && ev & (INVVPID_SINGLE | INVVPID_ALL) != 0,
            self.procbased2.allows(proc2::UNRESTRICTED_GUEST),
        ];
        for (i, ok) in checks.iter().enumerate() {
            if !ok {
                m.add(i);
            }
        }
        m
    }

    /// Whether `cr0` and `cr4` satisfy the fixed bits of VMX operation (SDM 24.8).
    pub fn control_registers_ok(&self, cr0: u64, cr4: u64) -> bool {
        let fits = |v: u64, (fixed0, fixed1): (u64, u64)| v & fixed0 == fixed0 && v & !fixed1 == 0;
        fits(cr0, self.cr0_fixed) && fits(cr4, self.cr4_fixed)
    }

    /// VMX-preemption timer rate: the timer counts down every 2^rate TSC ticks (A.6).
    pub const fn preemption_timer_rate(&self) -> u32 {
        (self.misc & 0x1f) as u32
    }
}

/// One line summarising the capabilities, for the load-time log and `rvmx info`.
impl fmt::Display for VmxCaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ept_vpid::*;
        let ev = self.ept_vpid;
        let flag = |bit: u64, name: &'static str| if ev & bit != 0 { name } else { "" };
        write!(
            f,
            "VMCS revision {:#x}, EPT (4-level{}{}{}{}), VPID, unrestricted guest",
            self.revision_id(),
            flag(PAGE_2M, ", 2M"),
            flag(PAGE_1G, ", 1G"),
            flag(ACCESSED_DIRTY, ", A/D"),
            flag(EXECUTE_ONLY, ", exec-only"),
        )?;
        if self.pinbased.allows(pin::PREEMPTION_TIMER) {
            write!(f, ", preemption timer (TSC/{})", 1u64 << self.preemption_timer_rate())?;
        }
        if self.pinbased.allows(pin::VIRTUAL_NMIS) {
            write!(f, ", virtual NMIs")?;
        }
        if self.procbased2.allows(proc2::ENABLE_PML) {
            write!(f, ", PML")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The MSR values Bochs 2.7 reports for `corei7_skylake_x` (VMX_BASIC from the project's
    /// environment notes; the others typical of that model).
    fn bochs_msrs(msr: Msr) -> Option<u64> {
        Some(match msr {
            IA32_VMX_BASIC => 0x00d8_1000_0000_002b,
            IA32_VMX_TRUE_PINBASED_CTLS => 0x0000_007f_0000_0016,
            IA32_VMX_TRUE_PROCBASED_CTLS => 0xfff9_fffe_0400_6172,
            IA32_VMX_PROCBASED_CTLS2 => 0x0053_7cff_0000_0000,
            IA32_VMX_TRUE_EXIT_CTLS => 0x01ff_ffff_0003_6dfb,
            IA32_VMX_TRUE_ENTRY_CTLS => 0x0003_ffff_0000_11fb,
            IA32_VMX_MISC => 0x0000_0000_0000_01e5,
            IA32_VMX_EPT_VPID_CAP => 0x0000_0f01_0673_4141,
            IA32_VMX_CR0_FIXED0 => 0x8000_0021,
            IA32_VMX_CR0_FIXED1 => 0xffff_ffff,
            IA32_VMX_CR4_FIXED0 => 0x2000,
            IA32_VMX_CR4_FIXED1 => 0x0037_67ff,
            _ => return None,
        })
    }

    #[test]
    fn bochs_skylake_is_supported() {
        let caps = VmxCaps::read(bochs_msrs).expect("supported");
        assert_eq!(caps.revision_id(), 0x2b);
        assert_eq!(caps.region_size(), 4096);
        assert_eq!(caps.preemption_timer_rate(), 5);
        let line = format!("{caps}");
        assert!(line.starts_with("VMCS revision 0x2b, EPT (4-level, 2M"), "{line}");
        assert!(line.contains("preemption timer (TSC/32)"), "{line}");
    }

    #[test]
    fn platform_checks_name_the_problem() {
        assert_eq!(check_platform(0, 5), Err(Unsupported::NoVmx));
        assert_eq!(check_platform(CPUID_1_ECX_VMX, 4), Err(Unsupported::FeatureControlUnlocked));
        assert_eq!(check_platform(CPUID_1_ECX_VMX, 1), Err(Unsupported::VmxDisabledByFirmware));
        assert_eq!(check_platform(CPUID_1_ECX_VMX, 5), Ok(()));
        assert!(format!("{}", Unsupported::VmxDisabledByFirmware).contains("firmware"));
    }

    #[test]
    fn missing_features_are_all_listed() {
        let no_ept_no_ug = |msr: Msr| {
            let v = bochs_msrs(msr)?;
            Some(if msr == IA32_VMX_PROCBASED_CTLS2 {
                v & !(((proc2::ENABLE_EPT | proc2::UNRESTRICTED_GUEST) as u64) << 32)
            } else {
                v
            })
        };
        let err = VmxCaps::read(no_ept_no_ug).unwrap_err();
        assert_eq!(format!("{err}"), "required VMX features missing: EPT, unrestricted guest");
    }

    #[test]
    fn basic_msr_is_validated() {
        let with_basic = |basic: u64| move |msr: Msr| {
            if msr == IA32_VMX_BASIC { Some(basic) } else { bochs_msrs(msr) }
        };
        assert_eq!(
            VmxCaps::read(with_basic(0x00d8_0800_0000_002b)),
            Err(Unsupported::RegionSize(2048))
        );
        assert_eq!(
            VmxCaps::read(with_basic(0x0000_1000_0000_002b)).unwrap_err(),
            Unsupported::MemoryType(0)
        );
        assert_eq!(
            VmxCaps::read(with_basic(0x0058_1000_0000_002b)),
            Err(Unsupported::NoTrueControls)
        );
        assert_eq!(
            VmxCaps::read(|m| if m == IA32_VMX_BASIC { None } else { bochs_msrs(m) }),
            Err(Unsupported::MsrUnreadable(IA32_VMX_BASIC))
        );
    }

    #[test]
    fn control_adjustment_and_fixed_bits() {
        let c = Controls::from_msr(0x0000_00ff_0000_0016);
        assert_eq!(c.adjust(0x1), Some(0x17));
        assert_eq!(c.adjust(0x100), None);
        let caps = VmxCaps::read(bochs_msrs).unwrap();
        // Linux's CR0 (PE, MP, ET, NE, WP, AM, PG) and CR4 with VMXE.
        assert!(caps.control_registers_ok(0x8005_0033, 0x0030_26f0));
        assert!(!caps.control_registers_ok(0x8005_0033, 0x0030_06f0), "VMXE clear");
        assert!(!caps.control_registers_ok(0x0005_0033, 0x0030_26f0), "PG clear");
    }
}
