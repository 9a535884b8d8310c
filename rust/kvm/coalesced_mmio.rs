// SPDX-License-Identifier: GPL-2.0

//! `KVM_REGISTER_COALESCED_MMIO`: guest writes into the zones userspace names (a device's
//! registers whose writes need no answer, like the RTC's index port) are appended to a ring
//! page instead of exiting, and userspace replays them at its next exit. The rules are KVM's
//! (logic/coalesced_mmio.rs); this file holds the zones and the page.

use core::{
    mem::offset_of,
    sync::atomic::{fence, Ordering},
};
use kernel::{page::Page, prelude::*};

use crate::{
    host::mem::page_address,
    logic::{
        coalesced_mmio::{self as rules, Entry, Refusal, Zone},
        ioeventfd_rules::Bus,
    },
};

/// The VM's ring page, mapped by every vCPU fd at `KVM_COALESCED_MMIO_PAGE_OFFSET`.
pub(crate) struct Ring {
    page: Page,
}

impl Ring {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self { page: Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO)? })
    }

    /// The page, for the vCPU fds' mappings.
    pub(crate) fn page(&self) -> &Page {
        &self.page
    }

    fn at(&self, offset: usize) -> *mut u8 {
        // The direct map covers the page (a kernel allocation, never highmem on x86-64).
        page_address(&self.page).wrapping_add(offset)
    }

    /// Appends a write of `bytes` at `addr` on `bus` if the ring has room as userspace left
    /// its indices (KVM's `coalesced_mmio_write`); false if the write must exit instead. The
    /// callers serialize (the VM's lock): userspace only moves `first`, and nothing it writes
    /// is trusted. As KVM, only `len` data bytes are written: the rest of the entry's 8 keep
    /// what an earlier entry left there.
    fn append(&self, bus: Bus, addr: u64, bytes: &[u8]) -> bool {
        let entries = rules::ring_entries(kernel::page::PAGE_SIZE);
        // SAFETY: both indices are aligned `u32`s inside the page this ring owns; userspace
        // may write them at any time, hence one volatile read each.
        let (first, last) = unsafe {
            (self.at(rules::RING_FIRST).cast::<u32>().read_volatile(), self.at(rules::RING_LAST).cast::<u32>().read_volatile())
        };
        let Some(index) = rules::insert_at(first, last, entries) else { return false };
        let e = rules::entry(bus, addr, bytes);
        let at = rules::entry_offset(index);
        // SAFETY: `index` is below `entries`, so the entry lies inside the page, 8-byte
        // aligned, and each field at its offset is aligned for its type.
        unsafe {
            self.at(at.wrapping_add(offset_of!(Entry, phys_addr))).cast::<u64>().write_volatile(e.phys_addr);
            self.at(at.wrapping_add(offset_of!(Entry, len))).cast::<u32>().write_volatile(e.len);
            self.at(at.wrapping_add(offset_of!(Entry, pio))).cast::<u32>().write_volatile(e.pio);
            for (i, b) in e.data.iter().take(e.len as usize).enumerate() {
                self.at(at.wrapping_add(offset_of!(Entry, data)).wrapping_add(i)).write_volatile(*b);
            }
        }
        // The entry before the index that publishes it (KVM's smp_wmb).
        fence(Ordering::Release);
        // SAFETY: as for the read above.
        unsafe { self.at(rules::RING_LAST).cast::<u32>().write_volatile(rules::next_last(index, entries)) };
        true
    }
}

/// A VM's zones (under its lock).
#[derive(Default)]
pub(crate) struct Zones {
    list: KVec<Zone>,
}

impl Zones {
    /// `KVM_REGISTER_COALESCED_MMIO`: `EINVAL` for a bad `pio`, `ENOSPC` when the bus is full.
    pub(crate) fn register(&mut self, zone: &Zone) -> Result {
        let bus = zone.bus().map_err(|Refusal::Invalid| EINVAL)?;
        if self.list.iter().filter(|z| z.bus() == Ok(bus)).count() >= rules::MAX_ZONES_PER_BUS {
            return Err(ENOSPC);
        }
        self.list.push(*zone, GFP_KERNEL_ACCOUNT)?;
        Ok(())
    }

    /// `KVM_UNREGISTER_COALESCED_MMIO`: removes every zone holding the request's range;
    /// `EINVAL` only for a bad `pio` (a request naming no zone succeeds, as on KVM).
    pub(crate) fn unregister(&mut self, zone: &Zone) -> Result {
        zone.bus().map_err(|Refusal::Invalid| EINVAL)?;
        self.list.retain(|z| !z.removed_by(zone));
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// A guest write of the low `len` bytes of `value` at `addr` on `bus`: appended to `ring`
    /// if a zone holds it and the ring has room.
    pub(crate) fn write(&self, ring: &Ring, bus: Bus, addr: u64, len: u32, value: u64) -> bool {
        if !self.list.iter().any(|z| z.takes(bus, addr, len)) {
            return false;
        }
        let bytes = value.to_le_bytes();
        let n = usize::try_from(len).map_or(bytes.len(), |n| n.min(bytes.len()));
        ring.append(bus, addr, bytes.get(..n).unwrap_or(&bytes))
    }
}
