//! A bus: non-overlapping address ranges, each naming the device that answers there, as
//! Firecracker's `Bus` and cloud-hypervisor's vm-device do. An exit is dispatched by looking its
//! address up, and each device states once which access widths it answers ([`BusDevice::claims`]).
//!
//! The map holds a device's name (`D`, a small `Copy` enum), not the device: the devices of the
//! port bus share one lock with the interrupt wiring that reaches into the PIC and the PIT, and
//! each vCPU's local APIC lives under its own CPU's lock, so whoever holds the lock turns the
//! name into the device.

use std::collections::BTreeMap;

use crate::devices::lapic::Ipi;

/// What a write asks of the machine beyond the device itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The i8042 pulsed the CPU reset line (a guest `reboot`).
    Reset,
    /// The guest entered ACPI S5 (soft off): `poweroff`.
    PowerOff,
    /// A byte written to the debug-exit port: the VM ends with it as its status.
    DebugExit(u8),
    /// A local APIC sent an IPI, to be routed to every APIC it names.
    Ipi(Ipi),
}

/// A device on a bus. `base` is the start of the range the access fell in (a device may have
/// several), `offset` the access's distance from it; `now` is the VM's clock (ns) for the devices
/// that count time.
pub trait BusDevice {
    /// Whether the device answers an access of `len` bytes at `offset` (a write if `write`).
    /// Any other access is as if nothing were there: reads see all ones, writes are dropped.
    /// By default byte registers, as the PC's ISA devices have.
    fn claims(&self, _offset: u64, len: usize, _write: bool) -> bool {
        len == 1
    }

    /// A claimed read: fills `data`.
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8], now: u64);

    /// A claimed write.
    fn write(&mut self, base: u64, offset: u64, data: &[u8], now: u64) -> Option<Effect>;
}

/// Address ranges and the devices (by name) that answer in them.
pub struct Bus<D> {
    /// Each range by its first address: its length and its device.
    ranges: BTreeMap<u64, (u64, D)>,
}

impl<D: Copy> Bus<D> {
    /// The ranges, `(base, len, device)`. Panics if two overlap: they are the machine's fixed
    /// layout, and an overlap would make one device shadow another.
    pub fn new(ranges: &[(u64, u64, D)]) -> Self {
        let mut bus = Bus { ranges: BTreeMap::new() };
        for &(base, len, device) in ranges {
            let end = base + len;
            let clash = bus.ranges.range(..end).next_back().is_some_and(|(b, (l, _))| b + l > base);
            assert!(len > 0 && !clash, "bus range {base:#x}+{len:#x} overlaps another");
            bus.ranges.insert(base, (len, device));
        }
        bus
    }

    /// The device whose range holds `addr`: its name, the range's base, and `addr`'s offset.
    pub fn find(&self, addr: u64) -> Option<(D, u64, u64)> {
        let (&base, &(len, device)) = self.ranges.range(..=addr).next_back()?;
        (addr - base < len).then_some((device, base, addr - base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_range_that_holds_an_address() {
        let bus = Bus::new(&[(0x20, 2, 'a'), (0x40, 4, 'b'), (0xa0, 2, 'a')]);
        assert_eq!(bus.find(0x21), Some(('a', 0x20, 1)));
        assert_eq!(bus.find(0x43), Some(('b', 0x40, 3)));
        assert_eq!(bus.find(0xa0), Some(('a', 0xa0, 0)));
        assert_eq!([0x1f, 0x22, 0x44, 0xa2].map(|a| bus.find(a)), [None; 4]);
    }

    #[test]
    #[should_panic(expected = "overlaps")]
    fn refuses_overlapping_ranges() {
        Bus::new(&[(0x40, 4, ()), (0x43, 1, ())]);
    }
}
