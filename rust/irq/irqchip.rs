// SPDX-License-Identifier: GPL-2.0

//! `KVM_CREATE_IRQCHIP`'s chips: the 8259 pair (ports 0x20/0x21, 0xa0/0xa1, ELCR at
//! 0x4d0/0x4d1) and the IOAPIC (MMIO at 0xfec00000), with their rules in `logic/pic.rs` and
//! `logic/ioapic.rs`. Lines are set through the GSI routes ([`ApicBus::set_gsi`]); the IOAPIC
//! delivers through the APIC bus; the PIC's output reaches the vCPU whose LINT0 takes ExtINT,
//! which asks the PIC for the vector when it injects ([`Irqchip::read_extint`]).
//!
//! Both locks are interrupts-off spinlocks: lines are set from irqfd wakeups and timers, and
//! vCPUs read the PIC and send EOIs inside their windows. Lock order: a chip, then the bus's
//! members. What a change means for others (a pin acknowledged or unmasked, the PIC's output
//! risen) is collected under the chip's lock and acted on after it ([`Effects`]): those
//! actions may set lines again.

use kernel::{
    new_spinlock_irq,
    prelude::*,
    sync::{Arc, SpinLockIrq},
    transmute::{AsBytes, FromBytes},
};

use super::{bus::ApicBus, resample::RESAMPLE_SOURCE};
use crate::logic::{
    ioapic::{self, Ioapic, IoapicState},
    irq_routing::{chip, Target},
    kvm_abi::Irqchip as ChipArg,
    pic::{Pic, PicState, Port},
};

#[pin_data]
pub(crate) struct Irqchip {
    #[pin]
    pic: SpinLockIrq<Pic>,
    #[pin]
    ioapic: SpinLockIrq<Ioapic>,
}

impl Irqchip {
    pub(crate) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Irqchip {
                pic <- new_spinlock_irq!(Pic::new()),
                ioapic <- new_spinlock_irq!(Ioapic::new()),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// Sets the line of `target` (a pin of either chip) for interrupt source `source`: KVM's
    /// status (deliveries, 0 coalesced, -1 masked or lost).
    pub(crate) fn set_pin(&self, bus: &ApicBus, target: Target, source: u32, level: bool, line_status: bool) -> i32 {
        match target {
            Target::Pic(pin) => {
                let mut pic = self.pic.lock();
                let r = pic.set_irq(pin, source, level);
                let e = Effects::of_pic(&mut pic);
                drop(pic);
                e.apply(bus);
                r
            }
            Target::Ioapic(pin) => {
                let mut io = self.ioapic.lock();
                io.set_irq(pin, source, level, line_status, &mut |irq| bus.deliver_to(irq, None))
            }
            Target::Msi { .. } => -1,
        }
    }

    /// The PIC, locked for an access that may acknowledge an interrupt: told first which pins'
    /// acknowledgement lowers a resampling irqfd's line at once (asked before the lock: the
    /// routes' and the resamplers' locks are leaves).
    fn locked_pic(&self, bus: &ApicBus) -> kernel::sync::lock::spinlock::SpinLockIrqGuard<'_, Pic> {
        let resampled = bus.resampled_pic_pins();
        let mut pic = self.pic.lock();
        pic.set_resampled(resampled, RESAMPLE_SOURCE);
        pic
    }

    /// Whether the PIC asks for an interrupt (its INTR output).
    pub(crate) fn pic_output(&self) -> bool {
        self.pic.lock().output
    }

    /// The INTA cycle: the PIC's vector for the vCPU injecting ExtINT now.
    pub(crate) fn read_extint(&self, bus: &ApicBus) -> u8 {
        let mut pic = self.locked_pic(bus);
        let v = pic.read_irq();
        let e = Effects::of_pic(&mut pic);
        drop(pic);
        e.apply(bus);
        v
    }

    /// A guest's IN of `len` bytes from `port`, if the PIC pair takes it: the value (a read
    /// wider than a byte is 0, as on KVM). A poll acknowledges an interrupt.
    pub(crate) fn port_read(&self, bus: &ApicBus, port: u16, len: u32) -> Option<u32> {
        let p = Port::decode_access(port, len)?;
        let mut pic = self.locked_pic(bus);
        let v = pic.read(p, len);
        let e = Effects::of_pic(&mut pic);
        drop(pic);
        e.apply(bus);
        Some(u32::from(v))
    }

    /// A guest's OUT of `len` bytes of `data` to `port`: true if the PIC pair took it.
    pub(crate) fn port_write(&self, bus: &ApicBus, port: u16, len: u32, data: u64) -> bool {
        let Some(p) = Port::decode_access(port, len) else { return false };
        let mut pic = self.locked_pic(bus);
        // Only an ICW1 asks (a chip's lock, then the bus's members: the usual order).
        pic.write(p, len, data as u8, || bus.any_takes_extint());
        let e = Effects::of_pic(&mut pic);
        drop(pic);
        e.apply(bus);
        true
    }

    /// A guest's MMIO read of `buf.len()` bytes at `gpa`: true if the IOAPIC answered.
    pub(crate) fn mmio_read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let io = self.ioapic.lock();
        if !ioapic::claims(io.base(), gpa, buf.len() as u32) {
            return false;
        }
        let v = io.mmio_read(gpa).to_le_bytes();
        buf.fill(0);
        if matches!(buf.len(), 1 | 2 | 4 | 8) {
            for (b, v) in buf.iter_mut().zip(v.iter()) {
                *b = *v;
            }
        }
        true
    }

    /// A guest's MMIO write of `len` bytes of `value` at `gpa`: true if the IOAPIC took it.
    pub(crate) fn mmio_write(&self, bus: &ApicBus, gpa: u64, len: u32, value: u64) -> bool {
        let mut io = self.ioapic.lock();
        if !ioapic::claims(io.base(), gpa, len) {
            return false;
        }
        // A pending level pin unmasked is delivered, or left to its irqfd resampler.
        io.mmio_write(gpa, len, value, &mut |irq| bus.deliver_to(irq, None), &mut |pin| bus.resamples(Target::Ioapic(pin)));
        let e = Effects::of_ioapic(&mut io);
        drop(io);
        e.apply(bus);
        true
    }

    /// The EOI of `vector` by bus member `member`, whose APIC has `address` (KVM's
    /// `kvm_ioapic_send_eoi`): forwarded where the IOAPIC handles the vector for it.
    pub(crate) fn eoi(&self, bus: &ApicBus, member: usize, address: &crate::logic::lapic::Address, vector: u8, level: bool, suppressed: bool) {
        let api = bus.api();
        // Pins whose GSI has an ack notifier (the PIT's GSI 0 while it reinjects, resampled GSIs).
        let notified = bus.notified_ioapic_pins();
        let mut io = self.ioapic.lock();
        let matches = |dest: u32, logical: bool| {
            address.matches_dest(crate::logic::lapic::Source::Device, crate::logic::lapic::Shorthand::None, dest, logical, api.broadcast_quirk_disabled)
        };
        if !io.handles(member, vector, notified, &matches) {
            return;
        }
        io.eoi_rtc(member, vector);
        for pin in 0..ioapic::PINS as u32 {
            if !io.has_vector(pin, vector) {
                continue;
            }
            // The pin's ack notifiers run without the lock (they may set lines: the PIT
            // sends its next tick, a resampled line is lowered) and before the EOI looks at
            // the line, as in KVM's `kvm_ioapic_update_eoi_one`.
            drop(io);
            bus.pin_acked(Target::Ioapic(pin));
            io = self.ioapic.lock();
            io.eoi_pin(pin, level, suppressed, &mut |irq| bus.deliver_to(irq, None));
        }
        // An interrupt storm: the next delivery would wait 10 ms on KVM. Delivered now, once
        // per 10000 EOIs (a delayed re-delivery needs a timer not here yet).
        if io.take_delayed_eoi() {
            io.eoi_inject(&mut |irq| bus.deliver_to(irq, None));
        }
        let e = Effects::of_ioapic(&mut io);
        drop(io);
        e.apply(bus);
    }

    /// `KVM_GET_IRQCHIP`: fills `arg`'s union with the state of chip `arg.chip_id`.
    pub(crate) fn get(&self, arg: &mut ChipArg) -> Result {
        match arg.chip_id {
            chip::PIC_MASTER | chip::PIC_SLAVE => {
                let s = *self.pic.lock().chips.get(arg.chip_id as usize).ok_or(EINVAL)?;
                copy_into(&mut arg.chip, s.as_bytes())
            }
            chip::IOAPIC => {
                let s = self.ioapic.lock().state();
                copy_into(&mut arg.chip, s.as_bytes())
            }
            _ => Err(EINVAL),
        }
    }

    /// `KVM_SET_IRQCHIP`: chip `arg.chip_id` takes the state in `arg`'s union.
    pub(crate) fn set(&self, bus: &ApicBus, arg: &ChipArg) -> Result {
        match arg.chip_id {
            chip::PIC_MASTER | chip::PIC_SLAVE => {
                let s = PicState::from_bytes_copy(arg.chip.get(..size_of::<PicState>()).ok_or(EINVAL)?).ok_or(EINVAL)?;
                let mut pic = self.pic.lock();
                pic.set_state(arg.chip_id as usize, &s);
                let e = Effects::of_pic(&mut pic);
                drop(pic);
                e.apply(bus);
            }
            chip::IOAPIC => {
                let s = IoapicState::from_bytes_copy(arg.chip.get(..size_of::<IoapicState>()).ok_or(EINVAL)?).ok_or(EINVAL)?;
                self.ioapic.lock().set_state(&s, &mut |irq| bus.deliver_to(irq, None));
            }
            _ => return Err(EINVAL),
        }
        Ok(())
    }
}

/// Copies `from` to the start of `to` (the rest of the union is left as the caller gave it,
/// as KVM's memcpy of the chip's size leaves it).
fn copy_into(to: &mut [u8; 512], from: &[u8]) -> Result {
    to.get_mut(..from.len()).ok_or(EINVAL)?.copy_from_slice(from);
    Ok(())
}

/// What a chip's change means for others, taken under its lock.
#[derive(Default)]
struct Effects {
    pic_acked: u16,
    pic_unmasked: u16,
    /// The PIC's output rose.
    wakeup: bool,
    ioapic_unmasked: u32,
    ioapic_resampled: u32,
}

impl Effects {
    fn of_pic(pic: &mut Pic) -> Self {
        Self { pic_acked: pic.take_acked(), pic_unmasked: pic.take_unmasked(), wakeup: pic.take_wakeup(), ..Self::default() }
    }

    fn of_ioapic(io: &mut Ioapic) -> Self {
        Self {
            ioapic_unmasked: io.take_unmasked(),
            ioapic_resampled: io.take_resampled(),
            ..Self::default()
        }
    }

    /// Acts on them, with no chip lock held: the PIT and the irqfd resamplers hear of
    /// acknowledged and unmasked pins, then the vCPU taking ExtINT is woken if the PIC still
    /// asks for an interrupt (an acknowledgement may have lowered a level-triggered line: KVM
    /// runs the PIC's ack notifiers before it looks at its output again).
    fn apply(self, bus: &ApicBus) {
        let pins = |bits: u32| (0..32u32).filter(move |p| bits & 1 << p != 0);
        for p in pins(u32::from(self.pic_acked)) {
            bus.pin_acked(Target::Pic(p));
        }
        for p in pins(u32::from(self.pic_unmasked)) {
            bus.pin_unmasked(Target::Pic(p));
        }
        for p in pins(self.ioapic_unmasked) {
            bus.pin_unmasked(Target::Ioapic(p));
        }
        for p in pins(self.ioapic_resampled) {
            bus.pin_resampled(Target::Ioapic(p));
        }
        if self.wakeup && bus.irqchip().is_some_and(|c| c.pic_output()) {
            bus.kick_extint();
        }
    }
}
