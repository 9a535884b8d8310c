// SPDX-License-Identifier: GPL-2.0

//! What `KVM_SET_USER_MEMORY_REGION` may do to the slot table, decided exactly as KVM's
//! `__kvm_set_memory_region` decides it. Pure logic (host-tested); the module applies the
//! decision and pins pages (mm/guest_memory.rs).

use super::kvm_abi::{UserspaceMemoryRegion, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY};

/// Slots per VM, reported as `KVM_CAP_NR_MEMSLOTS` (KVM's `KVM_USER_MEM_SLOTS` on x86).
pub const MAX_SLOTS: u32 = 32764;
/// Largest slot, in pages (KVM's `KVM_MEM_MAX_NR_PAGES` is 2^31 - 1).
pub const MAX_SLOT_PAGES: u64 = (1 << 31) - 1;
/// Highest guest-physical address + 1 that rvmx's 4-level EPT maps (48 bits).
pub const GPA_LIMIT: u64 = 1 << 48;
/// Highest user address + 1 on x86_64 with 4-level paging.
pub const USER_LIMIT: u64 = 0x7fff_ffff_f000;

/// KVM's address spaces on x86, named by bits 31:16 of a slot number
/// (`KVM_CAP_MULTI_ADDRESS_SPACE` = 2): each has its own slots, which may overlap another's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressSpace {
    /// What the guest sees outside system-management mode.
    Guest,
    /// What it sees in SMM (QEMU maps its RAM there too, and SMRAM over it).
    Smm,
}

impl AddressSpace {
    /// How many there are.
    pub const COUNT: u32 = 2;

    /// The address space a `slot` field names, if it exists.
    pub const fn of_slot(slot: u32) -> Option<Self> {
        match slot >> 16 {
            0 => Some(Self::Guest),
            1 => Some(Self::Smm),
            _ => None,
        }
    }

    /// The one a vCPU sees, in SMM or not.
    pub const fn of_vcpu(in_smm: bool) -> Self {
        if in_smm { Self::Smm } else { Self::Guest }
    }
}

/// One guest memory slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Slot number.
    pub id: u16,
    /// `KVM_MEM_*` flags.
    pub flags: u32,
    /// Guest-physical start.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
    /// Start of the backing memory in the VM owner's address space.
    pub uaddr: u64,
}

impl Slot {
    /// Whether `gpa` lies in the slot.
    pub const fn contains(&self, gpa: u64) -> bool {
        match gpa.checked_sub(self.gpa) {
            Some(off) => off < self.size,
            None => false,
        }
    }

    /// Whether the slot overlaps the guest-physical range `[gpa, gpa + size)`.
    pub const fn overlaps(&self, gpa: u64, size: u64) -> bool {
        // Ends saturate at 2^64 (callers have checked that the ranges do not wrap).
        gpa < self.gpa.saturating_add(self.size) && self.gpa < gpa.saturating_add(size)
    }

    /// The user address backing `gpa`, which lies in the slot (whose ranges were checked
    /// not to wrap when it was set).
    pub const fn uaddr_of(&self, gpa: u64) -> u64 {
        self.uaddr.wrapping_add(gpa.wrapping_sub(self.gpa))
    }

    /// Number of pages.
    pub const fn pages(&self) -> u64 {
        self.size >> 12
    }

    /// Whether guest writes must exit to userspace.
    pub const fn readonly(&self) -> bool {
        self.flags & KVM_MEM_READONLY != 0
    }

    /// Whether guest writes are logged for `KVM_GET_DIRTY_LOG`.
    pub const fn logs_dirty(&self) -> bool {
        self.flags & KVM_MEM_LOG_DIRTY_PAGES != 0
    }

    /// Whether a first touch may map pages around it (`around` pages to a block): not for a
    /// block of one, nor where dirty pages are logged (a page read first must stay read-only
    /// there until written).
    pub const fn maps_around(&self, around: u32) -> bool {
        !self.logs_dirty() && around > 1
    }

    /// The guest pages to map when the guest first touches `gpa`, as `(first page, count)`:
    /// the pages around it that are not mapped yet (`mapped` says which are), inside the block
    /// of `around` pages (a power of two, at most 512) aligned like Linux's fault-around, and
    /// inside the slot. One page where it [`maps_around`](Self::maps_around) nothing.
    pub fn fault_around(&self, gpa: u64, around: u32, mapped: impl Fn(u64) -> bool) -> (u64, u64) {
        let page = gpa & !0xfff;
        if !self.maps_around(around) {
            return (page, 1);
        }
        let block = (around.min(512).next_power_of_two() as u64) << 12;
        let base = page & block.wrapping_neg(); // block is a power of two
        let lo = base.max(self.gpa);
        let hi = base.saturating_add(block).min(self.gpa.saturating_add(self.size));
        let mut first = page;
        while let Some(prev) = first.checked_sub(4096).filter(|&p| p >= lo && !mapped(p)) {
            first = prev;
        }
        let mut end = page.saturating_add(4096);
        while end < hi && !mapped(end) {
            end = end.saturating_add(4096);
        }
        (first, end.saturating_sub(first) >> 12)
    }

    /// 64-bit words of the slot's dirty bitmap (KVM rounds it up to whole longs).
    pub const fn bitmap_words(&self) -> usize {
        self.pages().div_ceil(64) as usize
    }
}

/// What a valid request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new slot.
    Create(Slot),
    /// Remove slot `id` (size 0).
    Delete(u16),
    /// Slot `id` moves to the guest-physical address in the new slot (its pages stay; the
    /// flags may change too).
    Move(Slot),
    /// Slot `id` stays where it is with new flags (dirty logging on or off).
    Flags(Slot),
    /// Nothing that affects the mapping changes (same slot given again).
    Unchanged,
}

/// Why a request is refused; each maps to KVM's errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// EINVAL: bad flags, alignment, size, slot number or address; or an illegal change.
    Invalid,
    /// EEXIST: the range overlaps another slot.
    Overlap,
}

/// Decides `region` against the current `slots` (sorted by guest-physical address), for a
/// host whose guest-physical addresses reach up to [`GPA_LIMIT`].
pub fn decide(region: &UserspaceMemoryRegion, slots: &[Slot]) -> Result<Change, Refusal> {
    decide_within(region, slots, |id| slots.iter().find(|s| s.id == id).copied(), GPA_LIMIT)
}

/// Whether a slot other than `id` in `slots` (sorted by guest-physical address, never
/// overlapping) overlaps `[gpa, gpa + size)`: a binary search, then at most two slots.
pub fn overlaps_other(slots: &[Slot], id: u16, gpa: u64, size: u64) -> bool {
    let first = slots.partition_point(|s| s.gpa.saturating_add(s.size) <= gpa);
    slots.get(first..).unwrap_or_default().iter().take_while(|s| s.gpa < gpa.saturating_add(size)).any(|s| s.id != id)
}

/// The guest-physical addresses a host gives guests: below 2^MAXPHYADDR (its CPUID
/// 0x80000008 EAX[7:0], as KVM's `kvm_mmu_max_gfn`) and within rvmx's 4-level EPT.
pub const fn gpa_limit(phys_bits: u32) -> u64 {
    if phys_bits >= 48 { GPA_LIMIT } else { 1 << phys_bits }
}

/// [`decide`] for a host whose guest-physical addresses end at `gpa_limit` (a slot reaching
/// beyond is refused, `EINVAL`, as KVM refuses it), finding slots by id with `by_id`.
pub fn decide_within(
    region: &UserspaceMemoryRegion,
    slots: &[Slot],
    by_id: impl Fn(u16) -> Option<Slot>,
    gpa_limit: u64,
) -> Result<Change, Refusal> {
    use Refusal::*;
    let r = region;
    if r.flags & !(KVM_MEM_READONLY | KVM_MEM_LOG_DIRTY_PAGES) != 0 {
        return Err(Invalid);
    }
    // Bits 31:16 name the address space: the caller picks its table.
    if AddressSpace::of_slot(r.slot).is_none() || r.slot & 0xffff >= MAX_SLOTS {
        return Err(Invalid);
    }
    let id = r.slot as u16;
    let page_mask = 0xfff;
    if r.memory_size & page_mask != 0 || r.guest_phys_addr & page_mask != 0 {
        return Err(Invalid);
    }
    if r.userspace_addr & page_mask != 0 {
        return Err(Invalid);
    }
    let old = by_id(id);
    if r.memory_size == 0 {
        return match old {
            Some(_) => Ok(Change::Delete(id)),
            None => Err(Invalid),
        };
    }
    let end = r.guest_phys_addr.checked_add(r.memory_size).ok_or(Invalid)?;
    let uend = r.userspace_addr.checked_add(r.memory_size).ok_or(Invalid)?;
    if end > gpa_limit || uend > USER_LIMIT || r.memory_size >> 12 > MAX_SLOT_PAGES {
        return Err(Invalid);
    }
    let new = Slot {
        id,
        flags: r.flags,
        gpa: r.guest_phys_addr,
        size: r.memory_size,
        uaddr: r.userspace_addr,
    };
    let overlaps = || overlaps_other(slots, id, new.gpa, new.size);
    match old {
        None => {
            if overlaps() {
                return Err(Overlap);
            }
            Ok(Change::Create(new))
        }
        Some(old) => {
            // KVM: an existing slot cannot change size, backing memory or read-only-ness.
            if old.size != new.size || old.uaddr != new.uaddr || old.readonly() != new.readonly() {
                return Err(Invalid);
            }
            if old.gpa == new.gpa {
                return Ok(if old.flags == new.flags { Change::Unchanged } else { Change::Flags(new) });
            }
            if overlaps() {
                return Err(Overlap);
            }
            Ok(Change::Move(new))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(slot: u32, gpa: u64, size: u64, uaddr: u64, flags: u32) -> UserspaceMemoryRegion {
        UserspaceMemoryRegion { slot, flags, guest_phys_addr: gpa, memory_size: size, userspace_addr: uaddr }
    }

    fn slot(id: u16, gpa: u64, size: u64, uaddr: u64) -> Slot {
        Slot { id, flags: 0, gpa, size, uaddr }
    }

    #[test]
    fn slots_end_below_the_hosts_physical_address_width() {
        assert_eq!(gpa_limit(40), 1 << 40);
        assert_eq!(gpa_limit(52), GPA_LIMIT);
        let r = region(1, (1 << 40) - 0x2000, 0x2000, 0x7000_0000, 0);
        assert!(matches!(decide_within(&r, &[], |_| None, gpa_limit(40)), Ok(Change::Create(_))));
        let r = region(1, (1 << 40) - 0x1000, 0x2000, 0x7000_0000, 0);
        assert_eq!(decide_within(&r, &[], |_| None, gpa_limit(40)), Err(Refusal::Invalid));
        assert!(matches!(decide(&r, &[]), Ok(Change::Create(_))));
    }

    #[test]
    fn fault_around_maps_the_unmapped_run_of_the_aligned_block() {
        let s = slot(0, 0x10_0000, 0x10_0000, 0x7000_0000);
        let none = |_| false;
        assert_eq!(s.fault_around(0x10_5123, 16, none), (0x10_0000, 16), "the 64 KiB block");
        assert_eq!(s.fault_around(0x10_5123, 1, none), (0x10_5000, 1), "off");
        assert_eq!(s.fault_around(0x10_5123, 0, none), (0x10_5000, 1), "off");
        assert_eq!(s.fault_around(0x10_5123, 12, none), (0x10_0000, 16), "rounded up to a power of two");
        let big = slot(2, 0x20_0000, 0x40_0000, 0x7000_0000);
        assert_eq!(big.fault_around(0x33_0000, 4096, none), (0x20_0000, 512), "at most 512 pages (2 MiB)");
        // Mapped pages bound the run on both sides.
        let mapped = |g: u64| g == 0x10_2000 || g == 0x10_9000;
        assert_eq!(s.fault_around(0x10_5000, 16, mapped), (0x10_3000, 6));
        assert_eq!(s.fault_around(0x10_1000, 16, mapped), (0x10_0000, 2));
        // The slot bounds it too.
        let small = slot(1, 0x10_3000, 0x3000, 0x7000_0000);
        assert_eq!(small.fault_around(0x10_4000, 16, none), (0x10_3000, 3));
        let mut logged = s;
        logged.flags = KVM_MEM_LOG_DIRTY_PAGES;
        assert_eq!(logged.fault_around(0x10_5123, 16, none), (0x10_5000, 1), "logging: one page");
    }

    #[test]
    fn create_delete_move() {
        let slots = [slot(0, 0, 0x10000, 0x7000_0000)];
        let r = region(1, 0x10000, 0x1000, 0x7100_0000, 0);
        assert_eq!(decide(&r, &slots), Ok(Change::Create(slot(1, 0x10000, 0x1000, 0x7100_0000))));
        assert_eq!(decide(&region(0, 0, 0, 0, 0), &slots), Ok(Change::Delete(0)));
        assert_eq!(decide(&region(3, 0, 0, 0, 0), &slots), Err(Refusal::Invalid), "delete absent");
        let moved = region(0, 0x100000, 0x10000, 0x7000_0000, 0);
        assert_eq!(decide(&moved, &slots), Ok(Change::Move(slot(0, 0x100000, 0x10000, 0x7000_0000))));
        assert_eq!(decide(&region(0, 0, 0x10000, 0x7000_0000, 0), &slots), Ok(Change::Unchanged));
    }

    #[test]
    fn overlap_is_eexist() {
        let slots = [slot(0, 0x10000, 0x10000, 0x7000_0000)];
        for (gpa, size) in [(0x10000, 0x1000), (0xf000, 0x2000), (0x1f000, 0x1000), (0, 0x100000)] {
            assert_eq!(decide(&region(1, gpa, size, 0x7100_0000, 0), &slots), Err(Refusal::Overlap));
        }
        assert!(decide(&region(1, 0x20000, 0x1000, 0x7100_0000, 0), &slots).is_ok(), "adjacent");
        assert!(decide(&region(1, 0xf000, 0x1000, 0x7100_0000, 0), &slots).is_ok(), "adjacent below");
    }

    #[test]
    fn overlaps_by_binary_search() {
        let slots: Vec<Slot> = (0..100u16).map(|i| slot(i, 0x10000 * i as u64, 0x8000, 0x7000_0000)).collect();
        assert!(!overlaps_other(&slots, 200, 0x8000, 0x8000), "the gap between two slots");
        assert!(overlaps_other(&slots, 200, 0x8000, 0x8001), "one byte into the next");
        assert!(overlaps_other(&slots, 200, 0x37fff, 1), "the last byte of a slot");
        assert!(!overlaps_other(&slots, 3, 0x30000, 0x8000), "itself");
        assert!(overlaps_other(&slots, 3, 0x30000, 0x18000), "itself and the next");
        assert!(overlaps_other(&slots, 200, 0, u64::MAX), "everything");
        assert!(!overlaps_other(&slots, 200, 0x10000 * 100, 0x1000), "after the last");
        for gpa in (0..0x10000 * 100u64).step_by(0x1000) {
            let linear = slots.iter().any(|s| s.overlaps(gpa, 0x3000));
            assert_eq!(overlaps_other(&slots, 200, gpa, 0x3000), linear, "{gpa:#x}");
        }
    }

    #[test]
    fn bad_arguments_are_einval() {
        let none: [Slot; 0] = [];
        let bad = [
            region(0, 0x1001, 0x1000, 0x7000_0000, 0),       // gpa misaligned
            region(0, 0, 0x1800, 0x7000_0000, 0),            // size misaligned
            region(0, 0, 0x1000, 0x7000_0800, 0),            // uaddr misaligned
            region(0, 0, 0x1000, 0x7000_0000, 1 << 2),       // unknown flag
            region(2 << 16, 0, 0x1000, 0x7000_0000, 0),      // address space 2
            region(MAX_SLOTS, 0, 0x1000, 0x7000_0000, 0),    // slot number too large
            region(0, u64::MAX & !0xfff, 0x2000, 0x7000_0000, 0), // gpa wraps
            region(0, 0, 0x1000, 0xffff_8000_0000_0000, 0),  // kernel address
            region(0, GPA_LIMIT, 0x1000, 0x7000_0000, 0),    // beyond EPT
        ];
        for r in bad {
            assert_eq!(decide(&r, &none), Err(Refusal::Invalid), "{r:?}");
        }
    }

    #[test]
    fn existing_slot_cannot_change_shape() {
        let slots = [slot(0, 0, 0x10000, 0x7000_0000)];
        assert_eq!(decide(&region(0, 0, 0x20000, 0x7000_0000, 0), &slots), Err(Refusal::Invalid));
        assert_eq!(decide(&region(0, 0, 0x10000, 0x7100_0000, 0), &slots), Err(Refusal::Invalid));
        let ro = region(0, 0, 0x10000, 0x7000_0000, KVM_MEM_READONLY);
        assert_eq!(decide(&ro, &slots), Err(Refusal::Invalid));
    }

    #[test]
    fn dirty_logging_is_a_flags_change() {
        let slots = [slot(0, 0, 0x10000, 0x7000_0000)];
        let log = region(0, 0, 0x10000, 0x7000_0000, KVM_MEM_LOG_DIRTY_PAGES);
        let logged = Slot { flags: KVM_MEM_LOG_DIRTY_PAGES, ..slots[0] };
        assert_eq!(decide(&log, &slots), Ok(Change::Flags(logged)));
        assert_eq!(decide(&log, &[logged]), Ok(Change::Unchanged));
        let moved = region(0, 0x20000, 0x10000, 0x7000_0000, KVM_MEM_LOG_DIRTY_PAGES);
        assert_eq!(decide(&moved, &slots), Ok(Change::Move(Slot { gpa: 0x20000, ..logged })));
        assert!(logged.logs_dirty() && !slots[0].logs_dirty());
        assert_eq!((logged.bitmap_words(), Slot { size: 0x41000, ..logged }.bitmap_words()), (1, 2));
    }

    #[test]
    fn lookups() {
        let s = slot(0, 0x10000, 0x2000, 0);
        assert!(s.contains(0x10000) && s.contains(0x11fff) && !s.contains(0x12000) && !s.contains(0xffff));
        assert_eq!(s.pages(), 2);
    }
}
