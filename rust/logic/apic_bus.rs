// SPDX-License-Identifier: GPL-2.0

//! Which local APICs of a VM an interrupt goes to: KVM's `kvm_irq_delivery_to_apic` (the
//! slow path, whose answers the APIC map's fast path reproduces), for IPIs and MSIs.
//!
//! Every APIC present (hardware enabled) whose address matches gets a fixed interrupt, an
//! NMI, INIT or SIPI. A lowest-priority one (or an MSI with the redirection hint) goes to one
//! of the matching software-enabled APICs, chosen by KVM's vector hashing (its default): the
//! (vector mod n)-th of the n candidates, in vCPU creation order.

use super::lapic::{Address, DeliveryMode, Irq, Shorthand, Source, APIC_BROADCAST, X2APIC_BROADCAST};

/// The most vCPUs a set of destinations can name (one bit each, by creation index).
pub const MAX_APICS: usize = 64;

/// The destinations of `irq` among `apics` (index = the vCPU's creation index; `None` for an
/// index without a vCPU), sent by the APIC at index `sender` (an IPI) or by a device (`None`:
/// an MSI). A bit set for each APIC to deliver to.
pub fn destinations(irq: &Irq, sender: Option<usize>, apics: &[Option<Address>], broadcast_quirk_disabled: bool) -> u64 {
    let mut irq = *irq;
    // KVM turns a physical broadcast's lowest priority into fixed (and says so in the log).
    if !irq.logical && irq.dest == APIC_BROADCAST && irq.delivery == DeliveryMode::LowestPriority {
        irq.delivery = DeliveryMode::Fixed;
    }
    let lowest = irq.lowest_priority();
    let (mut targets, mut candidates) = (0u64, 0u64);
    for (i, a) in apics.iter().enumerate().take(MAX_APICS) {
        let Some(a) = a else { continue };
        if !a.hw_enabled {
            continue;
        }
        let source = match sender {
            Some(s) if s == i => Source::ThisApic,
            Some(_) => Source::OtherApic,
            None => Source::Device,
        };
        if !a.matches_dest(source, irq.shorthand, irq.dest, irq.logical, broadcast_quirk_disabled) {
            continue;
        }
        if !lowest {
            targets |= 1 << i;
        } else if a.sw_enabled {
            candidates |= 1 << i;
        }
    }
    if let Some(k) = super::lapic::vector_hash_index(irq.vector, candidates.count_ones()) {
        targets |= nth_bit(candidates, k);
    }
    targets
}

/// KVM's count when an interrupt reached no APIC (`kvm_irq_delivery_to_apic`): its APIC-map
/// fast path (no shorthand but self, not a broadcast) answers 0 deliveries; the slow path it
/// falls back to otherwise answers -1.
pub const fn undelivered(irq: &Irq) -> i32 {
    let shorthand_ok = matches!(irq.shorthand, Shorthand::None | Shorthand::ToSelf);
    if shorthand_ok && irq.dest != APIC_BROADCAST && irq.dest != X2APIC_BROADCAST { 0 } else { -1 }
}

/// The `k`-th set bit of `bits` (counting from 0 at the lowest), alone; 0 if there is none.
fn nth_bit(mut bits: u64, k: u32) -> u64 {
    for _ in 0..k {
        bits &= bits.wrapping_sub(1);
    }
    bits & bits.wrapping_neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::lapic::{x2apic_ldr, Shorthand, DFR_CLUSTER, DFR_FLAT};

    fn xapic(id: u32, ldr_bits: u32) -> Option<Address> {
        Some(Address {
            vcpu_id: id,
            xapic_id: id as u8,
            ldr: ldr_bits << 24,
            dfr: DFR_FLAT,
            x2apic: false,
            hw_enabled: true,
            sw_enabled: true,
            extint: false,
        })
    }

    fn irq(delivery: DeliveryMode, shorthand: Shorthand, dest: u32, logical: bool, vector: u8) -> Irq {
        Irq { vector, delivery, logical, level: true, trigger_level: false, shorthand, dest, redirect_hint: false }
    }

    #[test]
    fn physical_and_shorthands() {
        let apics = [xapic(0, 1), xapic(1, 2), None, xapic(3, 8)];
        let fixed = |sh, dest| irq(DeliveryMode::Fixed, sh, dest, false, 0x40);
        assert_eq!(destinations(&fixed(Shorthand::None, 1), Some(0), &apics, false), 0b10);
        assert_eq!(destinations(&fixed(Shorthand::None, 3), Some(0), &apics, false), 0b1000);
        assert_eq!(destinations(&fixed(Shorthand::None, 2), Some(0), &apics, false), 0, "no such APIC");
        assert_eq!(destinations(&fixed(Shorthand::None, 0xff), Some(0), &apics, false), 0b1011, "broadcast");
        assert_eq!(destinations(&fixed(Shorthand::ToSelf, 0), Some(1), &apics, false), 0b10);
        assert_eq!(destinations(&fixed(Shorthand::AllIncludingSelf, 0), Some(1), &apics, false), 0b1011);
        assert_eq!(destinations(&fixed(Shorthand::AllExcludingSelf, 0), Some(1), &apics, false), 0b1001);
        // A device has no self.
        assert_eq!(destinations(&fixed(Shorthand::AllExcludingSelf, 0), None, &apics, false), 0b1011);
    }

    #[test]
    fn absent_apics_get_nothing() {
        let mut apics = [xapic(0, 1), xapic(1, 2)];
        if let Some(a) = apics[1].as_mut() {
            a.hw_enabled = false;
        }
        let all = irq(DeliveryMode::Nmi, Shorthand::AllIncludingSelf, 0, false, 0);
        assert_eq!(destinations(&all, Some(0), &apics, false), 0b1);
        // Software-disabled APICs still get fixed interrupts to drop, and INIT/SIPI/NMI.
        if let Some(a) = apics[1].as_mut() {
            a.hw_enabled = true;
            a.sw_enabled = false;
        }
        assert_eq!(destinations(&all, Some(0), &apics, false), 0b11);
    }

    #[test]
    fn logical_flat_and_cluster() {
        let apics = [xapic(0, 1), xapic(1, 2), xapic(2, 4)];
        let fixed = |dest| irq(DeliveryMode::Fixed, Shorthand::None, dest, true, 0x40);
        assert_eq!(destinations(&fixed(0b101), Some(1), &apics, false), 0b101);
        let mut cl = apics;
        for (i, a) in cl.iter_mut().enumerate() {
            if let Some(a) = a.as_mut() {
                a.dfr = DFR_CLUSTER;
                a.ldr = (0x10 | 1 << i) << 24;
            }
        }
        assert_eq!(destinations(&fixed(0x13), None, &cl, false), 0b11);
        assert_eq!(destinations(&fixed(0x23), None, &cl, false), 0, "another cluster");
    }

    #[test]
    fn lowest_priority_hashes_the_vector() {
        let apics = [xapic(0, 1), xapic(1, 2), xapic(2, 4)];
        let lp = |vector| irq(DeliveryMode::LowestPriority, Shorthand::None, 0b111, true, vector);
        // kvm_vector_to_index: vector mod 3 picks among the 3 candidates.
        assert_eq!(destinations(&lp(0x30), None, &apics, false), 0b001);
        assert_eq!(destinations(&lp(0x31), None, &apics, false), 0b010);
        assert_eq!(destinations(&lp(0x32), None, &apics, false), 0b100);
        // Software-disabled APICs are no candidates.
        let mut off = apics;
        if let Some(a) = off[0].as_mut() {
            a.sw_enabled = false;
        }
        assert_eq!(destinations(&lp(0x30), None, &off, false), 0b010, "0x30 mod 2 = 0: the first of 1 and 2");
        assert_eq!(destinations(&lp(0x31), None, &off, false), 0b100);
        // An MSI's redirection hint is lowest priority too.
        let mut hint = irq(DeliveryMode::Fixed, Shorthand::None, 0b111, true, 0x31);
        hint.redirect_hint = true;
        assert_eq!(destinations(&hint, None, &apics, false), 0b010);
        // A physical broadcast's lowest priority becomes fixed.
        let bc = irq(DeliveryMode::LowestPriority, Shorthand::None, 0xff, false, 0x30);
        assert_eq!(destinations(&bc, None, &apics, false), 0b111);
        assert_eq!(destinations(&lp(0x30), None, &[], false), 0, "no candidates");
    }

    #[test]
    fn x2apic_broadcast_quirk() {
        let mut apics = [xapic(0, 1), xapic(1, 2)];
        for a in apics.iter_mut().flatten() {
            a.x2apic = true;
            a.ldr = x2apic_ldr(a.vcpu_id);
        }
        let dev = irq(DeliveryMode::Fixed, Shorthand::None, 0xff, false, 0x40);
        assert_eq!(destinations(&dev, None, &apics, false), 0b11, "0xff from a device is the x2APIC broadcast");
        assert_eq!(destinations(&dev, None, &apics, true), 0, "quirk disabled: APIC ID 0xff");
        assert_eq!(destinations(&dev, Some(0), &apics, false), 0, "an IPI's 0xff is an ID");
    }

    #[test]
    fn undelivered_counts() {
        let mut i = irq(DeliveryMode::Fixed, Shorthand::None, 7, false, 0x40);
        assert_eq!(undelivered(&i), 0, "a physical destination nobody has");
        i.dest = 0xff;
        assert_eq!(undelivered(&i), -1, "broadcast: the slow path");
        i.dest = 1;
        i.shorthand = Shorthand::AllExcludingSelf;
        assert_eq!(undelivered(&i), -1);
    }

    #[test]
    fn nth_bits() {
        assert_eq!(nth_bit(0b1011_0100, 0), 0b100);
        assert_eq!(nth_bit(0b1011_0100, 1), 0b1_0000);
        assert_eq!(nth_bit(0b1011_0100, 3), 0b1000_0000);
        assert_eq!(nth_bit(0b1011_0100, 4), 0);
    }
}
