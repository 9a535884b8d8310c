// SPDX-License-Identifier: GPL-2.0

//! `KVM_REGISTER_COALESCED_MMIO` as KVM decides it (virt/kvm/coalesced_mmio.c): which zones
//! are valid, which guest writes a zone takes, which zones an unregistration removes, and where
//! in the ring page the next write goes. The ring is one page per VM that every vCPU fd maps at
//! [`super::kvm_abi::KVM_COALESCED_MMIO_PAGE_OFFSET`]: writes into a zone are appended there
//! instead of exiting, and userspace replays them at its next exit. Pure logic, tested on the
//! host; the module keeps the zones and the page (kvm/coalesced_mmio.rs).

use super::ioeventfd_rules::Bus;

/// `struct kvm_coalesced_mmio_zone`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Zone {
    /// Guest-physical address, or port with `pio`.
    pub addr: u64,
    /// Length in bytes.
    pub size: u32,
    /// 1 for a port range (`KVM_CAP_COALESCED_PIO`), 0 for MMIO; anything else is refused.
    pub pio: u32,
}
// SAFETY: `repr(C)` with integers only and no padding (16 bytes, tested against kvm-bindings):
// any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for Zone {}

/// `struct kvm_coalesced_mmio`: one ring entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// Address or port written.
    pub phys_addr: u64,
    /// Bytes written (1 to 8).
    pub len: u32,
    /// 1 for a port write.
    pub pio: u32,
    /// The bytes, little-endian, the rest zero.
    pub data: [u8; 8],
}

/// Bytes before the entries in the ring page: `first` (userspace's next to read) and `last`
/// (the kernel's next to fill), both `u32`.
pub const RING_HEADER: usize = 8;
/// Byte offset of `first` in the ring page.
pub const RING_FIRST: usize = 0;
/// Byte offset of `last` in the ring page.
pub const RING_LAST: usize = 4;

/// Entries in a ring page of `page_size` bytes (`KVM_COALESCED_MMIO_MAX`).
pub const fn ring_entries(page_size: usize) -> u32 {
    match page_size.saturating_sub(RING_HEADER).checked_div(size_of::<Entry>()) {
        Some(n) if n <= u32::MAX as usize => n as u32,
        _ => 0,
    }
}

/// Byte offset of entry `index` in the ring page.
pub const fn entry_offset(index: u32) -> usize {
    RING_HEADER.saturating_add((index as usize).saturating_mul(size_of::<Entry>()))
}

/// Most zones per bus: KVM's I/O bus holds `NR_IOBUS_DEVS` devices (ioeventfds not counted).
pub const MAX_ZONES_PER_BUS: usize = 1000;

/// Why a request is refused (KVM's errno).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// EINVAL: `pio` is neither 0 nor 1.
    Invalid,
}

impl Zone {
    /// The bus of a zone `KVM_REGISTER_COALESCED_MMIO` or `KVM_UNREGISTER_COALESCED_MMIO`
    /// names, or the refusal of both.
    pub fn bus(&self) -> Result<Bus, Refusal> {
        match self.pio {
            0 => Ok(Bus::Mmio),
            1 => Ok(Bus::Pio),
            _ => Err(Refusal::Invalid),
        }
    }

    /// Whether the access of `len` bytes at `addr` lies wholly inside the zone (KVM's
    /// `coalesced_mmio_in_range`, with its C types: `len` is an `int`, so a length above
    /// `INT_MAX` is in no zone, and the zone's end wraps as a `gpa_t` does).
    pub fn contains(&self, addr: u64, len: u32) -> bool {
        let Ok(len) = i32::try_from(len) else { return false };
        let Some(end) = addr.checked_add(len as u64) else { return false };
        addr >= self.addr && end <= self.addr.wrapping_add(u64::from(self.size))
    }

    /// Whether a guest write of `len` bytes at `addr` on `bus` is appended to the ring. KVM's
    /// I/O bus offers the write only to a device whose range holds it, and the zone checks the
    /// same again.
    pub fn takes(&self, bus: Bus, addr: u64, len: u32) -> bool {
        self.bus() == Ok(bus) && self.contains(addr, len)
    }

    /// Whether `KVM_UNREGISTER_COALESCED_MMIO` of `request` removes this zone: the same bus,
    /// and the request's range inside this zone (KVM removes every such zone; a request that
    /// names none still succeeds).
    pub fn removed_by(&self, request: &Zone) -> bool {
        self.pio == request.pio && self.contains(request.addr, request.size)
    }
}

/// Where the next write goes, given the ring's `first` and `last` as userspace left them:
/// `Some(index)` of the entry to fill, or `None` when the write must exit instead. KVM keeps
/// one entry free so that a full ring differs from an empty one, and never trusts `last`: an
/// index outside the ring also exits.
pub fn insert_at(first: u32, last: u32, entries: u32) -> Option<u32> {
    if last >= entries || last.wrapping_add(1).checked_rem(entries) == Some(first) {
        return None;
    }
    Some(last)
}

/// `last` after filling entry `index`.
pub fn next_last(index: u32, entries: u32) -> u32 {
    index.wrapping_add(1).checked_rem(entries).unwrap_or(0)
}

/// The entry for a write of `bytes` (at most 8; longer writes are split by the caller) at
/// `addr` on `bus`.
pub fn entry(bus: Bus, addr: u64, bytes: &[u8]) -> Entry {
    let mut data = [0u8; 8];
    for (d, b) in data.iter_mut().zip(bytes) {
        *d = *b;
    }
    let n = bytes.len().min(data.len());
    Entry { phys_addr: addr, len: n as u32, pio: u32::from(bus == Bus::Pio), data }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};
    use kvm_bindings as kb;

    #[test]
    fn layouts_match_kvm_bindings() {
        assert_eq!(size_of::<Zone>(), size_of::<kb::kvm_coalesced_mmio_zone>());
        assert_eq!(offset_of!(Zone, size), offset_of!(kb::kvm_coalesced_mmio_zone, size));
        assert_eq!(size_of::<Entry>(), size_of::<kb::kvm_coalesced_mmio>());
        assert_eq!(offset_of!(Entry, len), offset_of!(kb::kvm_coalesced_mmio, len));
        assert_eq!(offset_of!(Entry, data), offset_of!(kb::kvm_coalesced_mmio, data));
        assert_eq!(RING_HEADER, size_of::<kb::kvm_coalesced_mmio_ring>());
        assert_eq!(RING_LAST, offset_of!(kb::kvm_coalesced_mmio_ring, last));
        assert_eq!(RING_FIRST, offset_of!(kb::kvm_coalesced_mmio_ring, first));
        // KVM_COALESCED_MMIO_MAX on 4 KiB pages.
        assert_eq!(ring_entries(4096), 170);
        assert_eq!(entry_offset(169) + size_of::<Entry>(), 4088);
    }

    #[test]
    fn pio_must_be_0_or_1() {
        assert_eq!(Zone { pio: 0, ..Default::default() }.bus(), Ok(Bus::Mmio));
        assert_eq!(Zone { pio: 1, ..Default::default() }.bus(), Ok(Bus::Pio));
        assert_eq!(Zone { pio: 2, ..Default::default() }.bus(), Err(Refusal::Invalid));
    }

    #[test]
    fn a_zone_takes_writes_wholly_inside_it() {
        let z = Zone { addr: 0x1000, size: 8, pio: 0 };
        assert!(z.takes(Bus::Mmio, 0x1000, 8));
        assert!(z.takes(Bus::Mmio, 0x1004, 4));
        assert!(!z.takes(Bus::Mmio, 0x1004, 8), "runs past the end");
        assert!(!z.takes(Bus::Mmio, 0xfff, 2), "starts before");
        assert!(!z.takes(Bus::Pio, 0x1000, 1), "other bus");
        assert!(!Zone { size: 0, ..z }.takes(Bus::Mmio, 0x1000, 1), "empty zone");
        assert!(!z.contains(u64::MAX, 1), "address overflow");
        assert!(!Zone { addr: 0, size: u32::MAX, pio: 0 }.contains(0, 0x8000_0000), "length above INT_MAX");
        // A zone whose end wraps (as gpa_t arithmetic does) holds nothing above its start.
        assert!(!Zone { addr: u64::MAX - 3, size: 8, pio: 0 }.contains(u64::MAX - 3, 2));
    }

    #[test]
    fn unregistration_removes_the_zones_that_hold_the_request() {
        let z = Zone { addr: 0x70, size: 2, pio: 1 };
        assert!(z.removed_by(&Zone { addr: 0x70, size: 2, pio: 1 }));
        assert!(z.removed_by(&Zone { addr: 0x71, size: 1, pio: 1 }));
        assert!(z.removed_by(&Zone { addr: 0x70, size: 0, pio: 1 }));
        assert!(!z.removed_by(&Zone { addr: 0x70, size: 4, pio: 1 }));
        assert!(!z.removed_by(&Zone { addr: 0x70, size: 2, pio: 0 }));
    }

    #[test]
    fn the_ring_keeps_one_entry_free_and_never_trusts_last() {
        let n = 170;
        assert_eq!(insert_at(0, 0, n), Some(0));
        assert_eq!(insert_at(5, 4, n), None, "full");
        assert_eq!(insert_at(0, n - 1, n), None, "full across the wrap");
        assert_eq!(insert_at(1, n - 1, n), Some(n - 1));
        assert_eq!(insert_at(0, n, n), None, "last out of range");
        assert_eq!(insert_at(0, u32::MAX, n), None);
        assert_eq!(insert_at(u32::MAX, 3, n), Some(3), "a wild first only counts as not full");
        assert_eq!(next_last(n - 1, n), 0);
        assert_eq!(next_last(3, n), 4);
        assert_eq!(next_last(3, 0), 0);
    }

    #[test]
    fn entries_carry_the_bytes_and_the_bus() {
        let e = entry(Bus::Pio, 0x80, &[1, 2, 3, 4]);
        assert_eq!((e.phys_addr, e.len, e.pio, e.data), (0x80, 4, 1, [1, 2, 3, 4, 0, 0, 0, 0]));
        let e = entry(Bus::Mmio, 0x1_0000_0000, &[9; 8]);
        assert_eq!((e.len, e.pio, e.data), (8, 0, [9; 8]));
    }
}
