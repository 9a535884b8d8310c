// SPDX-License-Identifier: GPL-2.0

//! GSI routing (`KVM_SET_GSI_ROUTING`) as KVM checks it (`kvm_set_irq_routing`): GSIs below
//! `KVM_MAX_IRQ_ROUTES`; a GSI has one MSI route, or up to one route to each in-kernel chip
//! (the PIC pair's master and slave and the IOAPIC, `KVM_CREATE_IRQCHIP`'s), which a split
//! irqchip refuses (its PIC and IOAPIC are in userspace). `KVM_IRQ_LINE` on a GSI sets every
//! route's line; the routes of the userspace IOAPIC's pins (split irqchip: the GSIs below the
//! count `KVM_CAP_SPLIT_IRQCHIP` reserved) say which EOIs it must see (`KVM_EXIT_IOAPIC_EOI`,
//! KVM's `kvm_scan_ioapic_routes`).

use super::kvm_abi::MAX_IRQ_ROUTES;

/// `KVM_IRQ_ROUTING_IRQCHIP`.
pub const TYPE_IRQCHIP: u32 = 1;
/// `KVM_IRQ_ROUTING_MSI`.
pub const TYPE_MSI: u32 = 2;
/// `KVM_MSI_VALID_DEVID`.
pub const MSI_VALID_DEVID: u32 = 1;

/// `KVM_IRQCHIP_*`: the in-kernel chips a route or `KVM_GET/SET_IRQCHIP` names.
pub mod chip {
    /// The master 8259.
    pub const PIC_MASTER: u32 = 0;
    /// The slave 8259.
    pub const PIC_SLAVE: u32 = 1;
    /// The IOAPIC.
    pub const IOAPIC: u32 = 2;
}

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

/// Where a route leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// An MSI: its address (low and high) and data.
    Msi {
        /// Address bits 31:0.
        address_lo: u32,
        /// Address bits 63:32.
        address_hi: u32,
        /// Data.
        data: u32,
    },
    /// A pin of the PIC pair (0-15: the slave's pins are 8-15).
    Pic(u32),
    /// An IOAPIC pin (0-23).
    Ioapic(u32),
}

impl Default for Target {
    fn default() -> Self {
        Self::Msi { address_lo: 0, address_hi: 0, data: 0 }
    }
}

/// A route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// The GSI.
    pub gsi: u32,
    /// Where it leads.
    pub target: Target,
    /// The chip a route to an in-kernel chip named (`chip::*`), for the one-route-per-chip
    /// rule (the PIC master and slave count as two chips).
    pub chip: Option<u32>,
}

impl Route {
    /// An MSI route.
    pub const fn msi(gsi: u32, address_lo: u32, address_hi: u32, data: u32) -> Self {
        Self { gsi, target: Target::Msi { address_lo, address_hi, data }, chip: None }
    }

    /// The MSI, if this is an MSI route.
    pub const fn as_msi(&self) -> Option<(u32, u32, u32)> {
        match self.target {
            Target::Msi { address_lo, address_hi, data } => Some((address_lo, address_hi, data)),
            _ => None,
        }
    }

    /// A level-triggered MSI (data bit 15): its EOIs go to the userspace IOAPIC.
    pub const fn level_triggered(&self) -> bool {
        matches!(self.target, Target::Msi { data, .. } if data & 1 << 15 != 0)
    }
}

/// An entry as KVM checks it (`kvm_set_irq_routing`, `kvm_set_routing_entry`); `None` is
/// `EINVAL`. `irqchip`: the VM has `KVM_CREATE_IRQCHIP`'s chips (a split irqchip refuses
/// routes to them).
pub const fn check(e: &RoutingEntry, x2apic_format: bool, irqchip: bool) -> Option<Route> {
    if e.gsi as u64 >= MAX_IRQ_ROUTES {
        return None;
    }
    match e.type_ {
        TYPE_MSI => {
            if e.flags & !MSI_VALID_DEVID != 0 {
                return None;
            }
            // kvm_msi_route_invalid: address_hi bits 7:0 are not an address with 32-bit IDs.
            if x2apic_format && e.u[1] & 0xff != 0 {
                return None;
            }
            Some(Route::msi(e.gsi, e.u[0], e.u[1], e.u[2]))
        }
        TYPE_IRQCHIP if irqchip && e.flags == 0 => {
            let (id, pin) = (e.u[0], e.u[1]);
            let target = match id {
                chip::PIC_MASTER | chip::PIC_SLAVE if pin < 8 => Target::Pic(pin | (id & 1) << 3),
                chip::IOAPIC if pin < super::ioapic::PINS as u32 => Target::Ioapic(pin),
                _ => return None,
            };
            Some(Route { gsi: e.gsi, target, chip: Some(id) })
        }
        _ => None,
    }
}

/// Whether `routes`, sorted by GSI, break KVM's rule for one GSI (`setup_routing_entry`): two
/// routes are allowed only if both lead to in-kernel chips, and different ones (`EINVAL`).
pub fn has_conflicts(routes: &[Route]) -> bool {
    routes.iter().enumerate().any(|(i, a)| {
        routes.iter().skip(i.saturating_add(1)).take_while(|b| b.gsi == a.gsi).any(|b| match (a.chip, b.chip) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        })
    })
}

/// The routes of `gsi` in `routes` sorted by GSI (none, one MSI, or up to three chip pins).
pub fn routes_of(routes: &[Route], gsi: u32) -> &[Route] {
    let start = routes.partition_point(|r| r.gsi < gsi);
    let end = routes.partition_point(|r| r.gsi <= gsi);
    routes.get(start..end).unwrap_or(&[])
}

/// The GSI a chip's pin is routed from (KVM's `kvm_irq_map_chip_pin`), if any: the ack of
/// an interrupt there is reported for that GSI (irqfd resampling, the PIT's reinjection).
pub fn gsi_of(routes: &[Route], target: Target) -> Option<u32> {
    routes.iter().find(|r| r.target == target).map(|r| r.gsi)
}

/// The IOAPIC pins for which [`gsi_of`] is a GSI `wanted` accepts, bit `n` for pin `n`: one
/// pass over `routes` sorted by GSI, where a pin's first route is its lowest GSI.
pub fn ioapic_pins_where(routes: &[Route], wanted: impl Fn(u32) -> bool) -> u32 {
    pins_where(routes, |t| match t {
        Target::Ioapic(p) => Some(p),
        _ => None,
    }, wanted)
}

/// The same for the PIC pair's pins (0-15).
pub fn pic_pins_where(routes: &[Route], wanted: impl Fn(u32) -> bool) -> u32 {
    pins_where(routes, |t| match t {
        Target::Pic(p) => Some(p),
        _ => None,
    }, wanted)
}

fn pins_where(routes: &[Route], pin_of: impl Fn(Target) -> Option<u32>, wanted: impl Fn(u32) -> bool) -> u32 {
    let (mut seen, mut pins) = (0u32, 0u32);
    for r in routes {
        if let Some(p) = pin_of(r.target) {
            let bit = 1u32.checked_shl(p).unwrap_or(0);
            if seen & bit == 0 && wanted(r.gsi) {
                pins |= bit;
            }
            seen |= bit;
        }
    }
    pins
}

/// The routes `KVM_CREATE_IRQCHIP` installs (KVM's `default_routing`): GSIs 0-15 to the PIC
/// pin and the IOAPIC pin of the same number, 16-23 to the IOAPIC only. Sorted by GSI.
pub fn default_routes() -> impl Iterator<Item = Route> {
    (0..super::ioapic::PINS as u32).flat_map(|gsi| {
        let ioapic = Route { gsi, target: Target::Ioapic(gsi), chip: Some(chip::IOAPIC) };
        let pic = (gsi < 16).then_some(Route { gsi, target: Target::Pic(gsi), chip: Some(gsi >> 3) });
        core::iter::once(ioapic).chain(pic)
    })
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

    fn pin(gsi: u32, chip: u32, pin: u32) -> RoutingEntry {
        RoutingEntry { gsi, type_: TYPE_IRQCHIP, u: [chip, pin, 0, 0, 0, 0, 0, 0], ..Default::default() }
    }

    #[test]
    fn entries() {
        let ok = msi(5, 0xfee0_1000, 0, 0x8031);
        assert_eq!(check(&ok, false, false), Some(Route::msi(5, 0xfee0_1000, 0, 0x8031)));
        assert!(check(&ok, false, false).is_some_and(|r| r.level_triggered()));
        assert!(check(&msi(4095, 0, 0, 0), false, false).is_some());
        assert_eq!(check(&msi(4096, 0, 0, 0), false, false), None, "GSI beyond the routes");
        assert_eq!(check(&RoutingEntry { flags: 2, ..ok }, false, false), None, "unknown flag");
        assert!(check(&RoutingEntry { flags: MSI_VALID_DEVID, ..ok }, false, false).is_some());
        assert_eq!(check(&pin(3, 2, 3), false, false), None, "split: no in-kernel PIC or IOAPIC");
        assert_eq!(check(&RoutingEntry { type_: 4, ..ok }, false, true), None, "Hyper-V SINT");
        assert_eq!(check(&msi(1, 0, 0x12, 0), true, false), None, "32-bit IDs: address_hi bits 7:0");
        assert!(check(&msi(1, 0, 0x100, 0), true, false).is_some());
        assert!(check(&msi(1, 0, 0x12, 0), false, false).is_some());
    }

    #[test]
    fn chip_entries() {
        assert_eq!(check(&pin(3, 2, 23), false, true).map(|r| r.target), Some(Target::Ioapic(23)));
        assert_eq!(check(&pin(3, 2, 24), false, true), None);
        assert_eq!(check(&pin(9, 1, 1), false, true).map(|r| r.target), Some(Target::Pic(9)));
        assert_eq!(check(&pin(9, 0, 8), false, true), None, "8 pins a chip");
        assert_eq!(check(&pin(9, 3, 0), false, true), None, "no chip 3");
        assert_eq!(check(&RoutingEntry { flags: 1, ..pin(3, 2, 3) }, false, true), None, "flags");
    }

    #[test]
    fn table() {
        let r = |gsi, chip| Route { gsi, target: Target::Ioapic(gsi), chip };
        let t = [r(0, None), r(2, Some(0)), r(2, Some(2)), r(3, None), r(9, Some(1))];
        assert!(!has_conflicts(&t));
        assert!(has_conflicts(&[r(0, None), r(2, None), r(2, None)]));
        assert!(has_conflicts(&[r(2, Some(2)), r(2, None)]), "an MSI and a pin");
        assert!(has_conflicts(&[r(2, Some(2)), r(2, Some(2))]), "one chip twice");
        assert!(!has_conflicts(&[r(2, Some(0)), r(2, Some(1))]), "master and slave are two");
        assert_eq!(routes_of(&t, 2).len(), 2);
        assert_eq!(routes_of(&t, 3), &[r(3, None)]);
        assert!(routes_of(&t, 4).is_empty());
        assert!(routes_of(&[], 0).is_empty());
        assert_eq!(gsi_of(&t, Target::Ioapic(9)), Some(9));
        assert_eq!(gsi_of(&t, Target::Pic(1)), None);
    }

    #[test]
    fn ioapic_pins_where_agrees_with_gsi_of() {
        let r = |gsi, pin| Route { gsi, target: Target::Ioapic(pin), chip: Some(chip::IOAPIC) };
        let mut t = vec![r(0, 2), r(0, 0), r(1, 2), r(2, 5), r(3, 0), r(7, 9)];
        t.extend(default_routes().filter(|x| x.gsi > 9));
        t.sort_by_key(|x| x.gsi);
        for gsi in 0..30 {
            let want = (0..24u32).filter(|p| gsi_of(&t, Target::Ioapic(*p)) == Some(gsi)).fold(0, |m, p| m | 1 << p);
            assert_eq!(ioapic_pins_where(&t, |g| g == gsi), want, "gsi {gsi}");
        }
        assert_eq!(ioapic_pins_where(&t, |g| g == 0), 0b101);
        let want = (0..24u32).filter(|p| gsi_of(&t, Target::Ioapic(*p)).is_some_and(|g| g == 2 || g == 7)).fold(0, |m, p| m | 1 << p);
        assert_eq!(ioapic_pins_where(&t, |g| g == 2 || g == 7), want);
        assert_eq!(want, 1 << 5 | 1 << 9);
        let pic: Vec<Route> = default_routes().collect();
        assert_eq!(pic_pins_where(&pic, |g| g == 11 || g == 20), 1 << 11, "GSI 20 has no PIC pin");
    }

    #[test]
    fn default_routes_are_kvms() {
        let d: Vec<Route> = default_routes().collect();
        assert_eq!(d.len(), 40);
        assert!(!has_conflicts(&d));
        assert!(d.windows(2).all(|w| w[0].gsi <= w[1].gsi));
        assert_eq!(routes_of(&d, 9).iter().map(|r| r.target).collect::<Vec<_>>(), [Target::Ioapic(9), Target::Pic(9)]);
        assert_eq!(routes_of(&d, 9)[1].chip, Some(chip::PIC_SLAVE));
        assert_eq!(routes_of(&d, 20).len(), 1);
    }
}
