// SPDX-License-Identifier: GPL-2.0

//! `KVM_CAP_X2APIC_API`: how a VM's in-kernel local APICs read x2APIC IDs and MSI destinations,
//! treat destination 0xff, and suppress EOI broadcasts (KVM's `kvm_vm_ioctl_enable_cap` and
//! `kvm_lapic_{advertise_,}suppress_eoi_broadcast`, for a VM without an in-kernel IOAPIC).

/// `KVM_X2APIC_API_USE_32BIT_IDS`: x2APIC IDs as 32 bits in `KVM_GET/SET_LAPIC`, MSI
/// destinations extended with address_hi bits 31:8.
pub const USE_32BIT_IDS: u64 = 1 << 0;
/// `KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK`: a device's destination 0xff is not the x2APIC
/// broadcast.
pub const DISABLE_BROADCAST_QUIRK: u64 = 1 << 1;
/// `KVM_X2APIC_ENABLE_SUPPRESS_EOI_BROADCAST` (split irqchip only).
pub const ENABLE_SUPPRESS_EOI_BROADCAST: u64 = 1 << 2;
/// `KVM_X2APIC_DISABLE_SUPPRESS_EOI_BROADCAST`.
pub const DISABLE_SUPPRESS_EOI_BROADCAST: u64 = 1 << 3;
/// Every flag KVM knows (`KVM_X2APIC_API_VALID_FLAGS`).
pub const VALID: u64 = USE_32BIT_IDS | DISABLE_BROADCAST_QUIRK | ENABLE_SUPPRESS_EOI_BROADCAST | DISABLE_SUPPRESS_EOI_BROADCAST;

/// `KVM_CHECK_EXTENSION(KVM_CAP_X2APIC_API)`: every flag on the system fd and on a VM with the
/// split irqchip; a VM without it cannot enable EOI broadcast suppression.
pub const fn capability(vm_without_split_irqchip: bool) -> u64 {
    if vm_without_split_irqchip {
        VALID & !ENABLE_SUPPRESS_EOI_BROADCAST
    } else {
        VALID
    }
}

/// Whether the guest's directed EOI (SPIV bit 12) suppresses EOI broadcasts (KVM's
/// `suppress_eoi_broadcast_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SuppressEoi {
    /// KVM's historical split-irqchip behaviour: advertised in LVR, but EOIs still go to
    /// the userspace IOAPIC.
    #[default]
    Quirked,
    /// Advertised and honoured: a directed EOI does not reach userspace.
    Enabled,
    /// Not advertised.
    Disabled,
}

/// A VM's x2APIC API settings (all off at creation; flags only ever turn on).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct X2apicApi {
    /// `USE_32BIT_IDS` is on.
    pub x2apic_format: bool,
    /// `DISABLE_BROADCAST_QUIRK` is on.
    pub broadcast_quirk_disabled: bool,
    /// What a directed EOI does.
    pub suppress_eoi: SuppressEoi,
}

/// `KVM_ENABLE_CAP(KVM_CAP_X2APIC_API)` refused with `EINVAL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid;

impl X2apicApi {
    /// Applies `flags` as KVM does: unknown flags, both suppression flags, or enabling
    /// suppression without the split irqchip are refused, and nothing changes then.
    pub fn enable(&mut self, flags: u64, split_irqchip: bool) -> Result<(), Invalid> {
        let both = ENABLE_SUPPRESS_EOI_BROADCAST | DISABLE_SUPPRESS_EOI_BROADCAST;
        if flags & !VALID != 0 || flags & both == both || (flags & ENABLE_SUPPRESS_EOI_BROADCAST != 0 && !split_irqchip) {
            return Err(Invalid);
        }
        self.x2apic_format |= flags & USE_32BIT_IDS != 0;
        self.broadcast_quirk_disabled |= flags & DISABLE_BROADCAST_QUIRK != 0;
        if flags & ENABLE_SUPPRESS_EOI_BROADCAST != 0 {
            self.suppress_eoi = SuppressEoi::Enabled;
        }
        if flags & DISABLE_SUPPRESS_EOI_BROADCAST != 0 {
            self.suppress_eoi = SuppressEoi::Disabled;
        }
        Ok(())
    }

    /// LVR bit 24 (with x2APIC in the guest's CPUID): the quirked default advertises it
    /// unless the IOAPIC is KVM's in-kernel one, which has no EOI register
    /// (`kvm_lapic_advertise_suppress_eoi_broadcast`).
    pub const fn advertise_directed_eoi(&self, ioapic_in_kernel: bool) -> bool {
        match self.suppress_eoi {
            SuppressEoi::Enabled => true,
            SuppressEoi::Disabled => false,
            SuppressEoi::Quirked => !ioapic_in_kernel,
        }
    }

    /// Whether an EOI with SPIV's directed-EOI bit `directed` stays away from the IOAPIC
    /// (`kvm_lapic_suppress_eoi_broadcast`): when suppression was enabled; under the quirk,
    /// only with the in-kernel IOAPIC (a split irqchip's userspace IOAPIC gets it anyway).
    pub const fn suppresses(&self, directed: bool, ioapic_in_kernel: bool) -> bool {
        directed
            && match self.suppress_eoi {
                SuppressEoi::Enabled => true,
                SuppressEoi::Disabled => false,
                SuppressEoi::Quirked => ioapic_in_kernel,
            }
    }

    /// The settings packed in a byte (to share them through an atomic).
    pub const fn to_bits(self) -> u8 {
        let mode = match self.suppress_eoi {
            SuppressEoi::Quirked => 0,
            SuppressEoi::Enabled => 1,
            SuppressEoi::Disabled => 2,
        };
        self.x2apic_format as u8 | (self.broadcast_quirk_disabled as u8) << 1 | mode << 2
    }

    /// The settings from [`X2apicApi::to_bits`].
    pub const fn from_bits(b: u8) -> Self {
        let suppress_eoi = match b >> 2 & 3 {
            1 => SuppressEoi::Enabled,
            2 => SuppressEoi::Disabled,
            _ => SuppressEoi::Quirked,
        };
        Self { x2apic_format: b & 1 != 0, broadcast_quirk_disabled: b & 2 != 0, suppress_eoi }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_checks() {
        let mut a = X2apicApi::default();
        assert_eq!(a.enable(1 << 4, true), Err(Invalid), "unknown flag");
        assert_eq!(a.enable(ENABLE_SUPPRESS_EOI_BROADCAST | DISABLE_SUPPRESS_EOI_BROADCAST, true), Err(Invalid));
        assert_eq!(a.enable(ENABLE_SUPPRESS_EOI_BROADCAST | USE_32BIT_IDS, false), Err(Invalid), "needs split");
        assert_eq!(a, X2apicApi::default(), "a refused call changes nothing");
        assert_eq!(a.enable(DISABLE_SUPPRESS_EOI_BROADCAST, false), Ok(()));
        assert!(!a.advertise_directed_eoi(false));
        assert_eq!(a.enable(USE_32BIT_IDS | ENABLE_SUPPRESS_EOI_BROADCAST, true), Ok(()));
        assert!(a.x2apic_format && !a.broadcast_quirk_disabled && a.advertise_directed_eoi(false));
        assert!(a.suppresses(true, false) && !a.suppresses(false, false));
        assert_eq!(a.enable(0, true), Ok(()));
        assert!(a.x2apic_format, "flags are never turned off");
    }

    #[test]
    fn quirked_default() {
        let a = X2apicApi::default();
        assert!(a.advertise_directed_eoi(false), "advertised without an in-kernel IOAPIC");
        assert!(!a.suppresses(true, false), "but the EOI still goes out");
        assert!(!a.advertise_directed_eoi(true), "not with KVM's IOAPIC");
        assert!(a.suppresses(true, true), "where it is respected if set anyway");
    }

    #[test]
    fn capability_values() {
        assert_eq!(capability(false), 0xf);
        assert_eq!(capability(true), 0xb);
    }

    #[test]
    fn bits_round_trip() {
        for b in 0..12u8 {
            let a = X2apicApi::from_bits(b);
            assert_eq!(X2apicApi::from_bits(a.to_bits()), a);
        }
        let a = X2apicApi { x2apic_format: true, broadcast_quirk_disabled: true, suppress_eoi: SuppressEoi::Disabled };
        assert_eq!(X2apicApi::from_bits(a.to_bits()), a);
    }
}
