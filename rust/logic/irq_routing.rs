// SPDX-License-Identifier: GPL-2.0

//! GSI routing (`KVM_SET_GSI_ROUTING`) as a split irqchip has it: every route is an MSI (KVM
//! refuses irqchip routes when the PIC and IOAPIC are in userspace), at most one per GSI, GSIs
//! below `KVM_MAX_IRQ_ROUTES`. `KVM_IRQ_LINE` on a routed GSI sends its MSI, and the routes of
//! the userspace IOAPIC's pins (the GSIs below the count `KVM_CAP_SPLIT_IRQCHIP` reserved) say
//! which EOIs it must see (`KVM_EXIT_IOAPIC_EOI`, KVM's `kvm_scan_ioapic_routes`).

use super::kvm_abi::MAX_IRQ_ROUTES;

/// `KVM_IRQ_ROUTING_IRQCHIP`.
pub const TYPE_IRQCHIP: u32 = 1;
/// `KVM_IRQ_ROUTING_MSI`.
pub const TYPE_MSI: u32 = 2;
/// `KVM_MSI_VALID_DEVID`.
pub const MSI_VALID_DEVID: u32 = 1;

/// `struct kvm_irq_routing` without its entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RoutingHeader {
    /// Entries that follow.
    pub nr: u32,
    /// None defined.
    pub flags: u32,
}
// SAFETY: `repr(C)`, two `u32`s: any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for RoutingHeader {}

/// `struct kvm_irq_routing_entry`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RoutingEntry {
    /// The GSI.
    pub gsi: u32,
    /// `KVM_IRQ_ROUTING_*`.
    pub type_: u32,
    /// `KVM_MSI_VALID_DEVID` for an MSI.
    pub flags: u32,
    /// Padding.
    pub pad: u32,
    /// The union: an MSI's address_lo, address_hi, data, devid first.
    pub u: [u32; 8],
}
// SAFETY: `repr(C)` with twelve `u32`s, no gap (tested against kvm-bindings): any bit pattern
// is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for RoutingEntry {}

/// An MSI route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// The GSI.
    pub gsi: u32,
    /// The MSI's address, low and high.
    pub address_lo: u32,
    /// Address bits 63:32.
    pub address_hi: u32,
    /// The MSI's data.
    pub data: u32,
}

impl Route {
    /// Level triggered (data bit 15): its EOIs go to the userspace IOAPIC.
    pub const fn level_triggered(&self) -> bool {
        self.data & 1 << 15 != 0
    }
}

/// An entry of a split irqchip's table, as KVM checks it (`kvm_set_irq_routing`,
/// `kvm_set_routing_entry`); `None` is `EINVAL`.
pub const fn check(e: &RoutingEntry, x2apic_format: bool) -> Option<Route> {
    if e.gsi as u64 >= MAX_IRQ_ROUTES || e.type_ != TYPE_MSI || e.flags & !MSI_VALID_DEVID != 0 {
        return None;
    }
    let r = Route { gsi: e.gsi, address_lo: e.u[0], address_hi: e.u[1], data: e.u[2] };
    // kvm_msi_route_invalid: address_hi bits 7:0 are not an address with 32-bit IDs.
    if x2apic_format && r.address_hi & 0xff != 0 {
        return None;
    }
    Some(r)
}

/// Whether `routes`, sorted by GSI, give some GSI twice (KVM allows one non-irqchip route per
/// GSI: `EINVAL`).
pub fn has_duplicates(routes: &[Route]) -> bool {
    routes.windows(2).any(|w| matches!(w, [a, b] if a.gsi == b.gsi))
}

/// The route of `gsi` in `routes` sorted by GSI.
pub fn lookup(routes: &[Route], gsi: u32) -> Option<Route> {
    routes.binary_search_by_key(&gsi, |r| r.gsi).ok().and_then(|i| routes.get(i).copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msi(gsi: u32, lo: u32, hi: u32, data: u32) -> RoutingEntry {
        RoutingEntry { gsi, type_: TYPE_MSI, u: [lo, hi, data, 0, 0, 0, 0, 0], ..Default::default() }
    }

    #[test]
    fn abi_matches_kvm_bindings() {
        use core::mem::{offset_of, size_of};
        assert_eq!(size_of::<RoutingEntry>(), size_of::<kvm_bindings::kvm_irq_routing_entry>());
        assert_eq!(size_of::<RoutingHeader>(), size_of::<kvm_bindings::kvm_irq_routing>());
        assert_eq!(offset_of!(RoutingEntry, u), offset_of!(kvm_bindings::kvm_irq_routing_entry, u));
        assert_eq!(offset_of!(RoutingEntry, flags), offset_of!(kvm_bindings::kvm_irq_routing_entry, flags));
        assert_eq!((TYPE_IRQCHIP, TYPE_MSI), (kvm_bindings::KVM_IRQ_ROUTING_IRQCHIP, kvm_bindings::KVM_IRQ_ROUTING_MSI));
        assert_eq!(MSI_VALID_DEVID, kvm_bindings::KVM_MSI_VALID_DEVID);
    }

    #[test]
    fn entries() {
        let ok = msi(5, 0xfee0_1000, 0, 0x8031);
        assert_eq!(check(&ok, false), Some(Route { gsi: 5, address_lo: 0xfee0_1000, address_hi: 0, data: 0x8031 }));
        assert!(check(&ok, false).is_some_and(|r| r.level_triggered()));
        assert!(check(&msi(4095, 0, 0, 0), false).is_some());
        assert_eq!(check(&msi(4096, 0, 0, 0), false), None, "GSI beyond the routes");
        assert_eq!(check(&RoutingEntry { flags: 2, ..ok }, false), None, "unknown flag");
        assert!(check(&RoutingEntry { flags: MSI_VALID_DEVID, ..ok }, false).is_some());
        assert_eq!(check(&RoutingEntry { type_: TYPE_IRQCHIP, ..ok }, false), None, "no in-kernel PIC or IOAPIC");
        assert_eq!(check(&RoutingEntry { type_: 4, ..ok }, false), None, "Hyper-V SINT");
        assert_eq!(check(&msi(1, 0, 0x12, 0), true), None, "32-bit IDs: address_hi bits 7:0");
        assert!(check(&msi(1, 0, 0x100, 0), true).is_some());
        assert!(check(&msi(1, 0, 0x12, 0), false).is_some());
    }

    #[test]
    fn table() {
        let r = |gsi| Route { gsi, ..Default::default() };
        let t = [r(0), r(2), r(3), r(9)];
        assert!(!has_duplicates(&t));
        assert!(has_duplicates(&[r(0), r(2), r(2)]));
        assert_eq!(lookup(&t, 3), Some(r(3)));
        assert_eq!(lookup(&t, 4), None);
        assert_eq!(lookup(&[], 0), None);
    }
}
