// SPDX-License-Identifier: GPL-2.0

//! One address space of a VM's guest memory: its slots, its EPT, its dirty bitmaps, and KVM's
//! memory model that ties them to the VM owner's address space. A VM has two, as KVM's: the
//! guest's (0), and the one its vCPUs see in system-management mode (1, where QEMU puts
//! SMRAM), each with its own slots, EPT root and MMU notifier.
//!
//! EPT entries are a cache of the owner's page tables. A fault pins the host pages only while
//! it maps them; the MMU notifier then removes entries before the host changes what is behind
//! them ([`GuestMemory::invalidate_start`]), and a fault that raced with such a change is
//! retried (the sequence count and the range in progress, as KVM's `mmu_invalidate_seq`).
//!
//! Locking: everything here is under one spinlock, the MMU lock, which the notifier takes too.
//! Nothing under it sleeps or allocates (an allocation could enter reclaim, which calls the
//! notifier): table pages come from the faulting vCPU's [`TableCache`], bitmaps are
//! allocated before, pins are released after. The VM's mutex (`kvm/vm.rs`), which serializes slot
//! changes, is taken before it, never after.

use core::{
    ops::Range,
    sync::atomic::{AtomicI32, AtomicU64, Ordering},
};
use kernel::{
    bindings, ffi, new_spinlock,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, SpinLock, SpinLockGuard,
    },
};

use crate::{
    vmx::ept::{Ept, TableCache},
    logic::hva_index::{self, HvaEntry},
    logic::kvm_abi::MAX_VCPU_ID,
    host::mem::{PinError, PinnedRun},
    logic::memslot_rules::{Change, Slot, MAX_SLOTS},
};

/// What the MMU keeps per slot id.
#[derive(Default)]
struct IdEntry {
    /// Where the slot with this id starts, if there is one.
    gpa: Option<u64>,
    /// Its dirty bitmap while it logs writes (bit n: page n written).
    dirty: Option<KVVec<u64>>,
}

struct Mmu {
    /// Sorted by guest-physical address (slots never overlap), so a fault finds its slot by
    /// binary search. Grown by [`GuestMemory::reserve`] before a slot is added.
    slots: KVVec<Slot>,
    /// The same slots by host address, for the MMU notifier (same capacity as `slots`).
    hva: KVVec<HvaEntry>,
    /// Indexed by slot id, up to the highest id used (grown like `slots`).
    ids: KVVec<IdEntry>,
    ept: Ept,
    /// Bumped at the end of every invalidation and on every slot change: a fault that read
    /// another value before pinning retries.
    seq: u64,
    /// Invalidations started and not ended, and the union of their host address ranges.
    in_progress: u32,
    range: Range<u64>,
}

impl Mmu {
    /// The slot whose RAM backs `gpa` for this access: none outside every slot, nor for a
    /// write to a read-only slot (both are MMIO).
    fn ram_slot(&self, gpa: u64, write: bool) -> Option<Slot> {
        // The first slot ending above `gpa` is the only one that can hold it.
        let i = self.slots.partition_point(|s| s.gpa.saturating_add(s.size) <= gpa);
        self.slots.get(i).filter(|s| s.contains(gpa) && !(write && s.readonly())).copied()
    }

    /// Adds `slot` at its place in both orders (within the reserved capacity: no allocation).
    fn insert(&mut self, slot: Slot) -> Result {
        let i = self.slots.partition_point(|s| s.gpa < slot.gpa);
        let h = hva_index::position(&self.hva, slot.uaddr, slot.gpa);
        if self.hva.len() >= self.hva.capacity() {
            return Err(EINVAL); // reserve() grew both tables
        }
        self.slots.insert_within_capacity(i, slot).map_err(|_| EINVAL)?; // decide() allows MAX_SLOTS ids
        let _ = self.hva.insert_within_capacity(h, HvaEntry::new(slot.uaddr, slot.size, slot.gpa)); // room checked
        hva_index::fix_max_end(&mut self.hva, h);
        Ok(())
    }

    /// Records a write to guest page `gpa` of `slot` if the slot logs writes.
    fn mark_dirty(&mut self, slot: &Slot, gpa: u64) {
        let Some(bits) = self.ids.get_mut(slot.id as usize).and_then(|e| e.dirty.as_mut()) else { return };
        let page = (gpa.wrapping_sub(slot.gpa) >> 12) as usize; // gpa is in the slot
        if let Some(word) = bits.get_mut(page / 64) {
            *word |= 1 << (page % 64);
        }
    }

    /// Whether a fault that read `seq` before pinning host pages at `hva` must retry: an
    /// invalidation (or slot change) ended since, or one covering them is still under way.
    fn must_retry(&self, seq: u64, hva: &Range<u64>) -> bool {
        self.seq != seq || (self.in_progress > 0 && hva.start < self.range.end && self.range.start < hva.end)
    }

    /// Whether some slot's host mapping overlaps `hva`.
    fn behind_a_slot(&self, hva: &Range<u64>) -> bool {
        hva_index::any_overlap(&self.hva, hva)
    }

    /// Applies `how` to the EPT entries of the guest pages in `range`; whether any changed.
    fn zap(&mut self, range: Range<u64>, how: Zap) -> bool {
        match how {
            Zap::Unmap => self.ept.unmap_range(range),
            Zap::WriteProtect => self.ept.write_protect_range(range),
            Zap::Test => self.ept.any_mapped(range),
        }
    }

    /// Slot `id`, if it exists.
    fn slot(&self, id: u16) -> Option<Slot> {
        let gpa = self.ids.get(id as usize)?.gpa?;
        let i = self.slots.binary_search_by_key(&gpa, |s| s.gpa).ok()?;
        self.slots.get(i).copied()
    }

    /// Takes slot `id` out of the table (binary search, one move of the slots after it); it
    /// stays in the host-address index until [`Self::forget_hva`].
    fn remove(&mut self, id: u16) -> Option<Slot> {
        let gpa = self.ids.get(id as usize).and_then(|e| e.gpa)?;
        let i = self.slots.binary_search_by_key(&gpa, |s| s.gpa).ok()?;
        self.slots.remove(i).ok()
    }

    /// Takes a removed slot out of the host-address index, once its EPT entries are gone:
    /// until then the MMU notifier still finds them through it.
    fn forget_hva(&mut self, slot: &Slot) {
        let h = hva_index::position(&self.hva, slot.uaddr, slot.gpa);
        if self.hva.get(h).is_some_and(|e| e.gpa == slot.gpa && e.start == slot.uaddr) {
            let _ = self.hva.remove(h);
            hva_index::fix_max_end(&mut self.hva, h);
        }
    }

    /// Where slot `id` starts now (`None`: deleted).
    fn set_gpa(&mut self, id: u16, gpa: Option<u64>) {
        if let Some(e) = self.ids.get_mut(id as usize) {
            e.gpa = gpa;
        }
    }
}

/// What a zap does to the EPT entries of a range.
#[derive(Clone, Copy)]
enum Zap {
    Unmap,
    /// Dirty logging: the next write faults.
    WriteProtect,
    /// Nothing changes: only whether anything is mapped (page aging's test).
    Test,
}

/// Zaps that may sleep drop the lock after each chunk of this much guest-physical space (one
/// level-3 entry) that changed anything.
const ZAP_CHUNK: u64 = 1 << 30;
/// `KVM_GET_DIRTY_LOG` drops the lock after this many bitmap words (2^18 pages).
const DIRTY_WORDS_PER_LOCK: usize = 4096;

/// What a fault found.
pub(crate) enum Outcome {
    /// RAM: the page is mapped now, or the fault raced with a change of the host mapping and
    /// the guest simply faults again.
    Mapped,
    /// No RAM for this access: MMIO, as of the slot table's generation given
    /// ([`GuestMemory::slots_gen`]).
    Mmio(u64),
    /// RAM whose host memory cannot be had for this access (unmapped, or written and
    /// read-only on the host): `EFAULT`, as from KVM.
    HostFault,
    /// A signal arrived while the host faulted the page in: `EINTR` with `KVM_EXIT_INTR`.
    Interrupted,
}

#[pin_data]
pub(crate) struct GuestMemory {
    /// The EPT pointer; the root table never changes.
    eptp: u64,
    /// The host CPU each vCPU (by id) is in a VMX window on, or -1 (shared by the VM's
    /// address spaces: a change in either kicks every vCPU in a window).
    running: Arc<Running>,
    /// How many times every vCPU's translations were flushed (the VM's statistics).
    flushes: Arc<Atomic<u64>>,
    /// Bumped at each change of the slot table (under the MMU lock) and read without it: what
    /// an EPT fault found of the slots (no RAM for an access) holds while it is unchanged.
    slots_gen: AtomicU64,
    #[pin]
    mmu: SpinLock<Mmu>,
}

/// Reads of guest RAM from the host pages EPT maps ([`GuestMemory::mapped_reads`]): the MMU
/// lock is taken at the first and held until [`MappedReads::release`] or the end, so that the
/// entries of a guest page walk cost one lock, not one each. Nothing that may sleep happens
/// while it is held: a read EPT cannot answer releases it first.
pub(crate) struct MappedReads<'a> {
    memory: &'a GuestMemory,
    held: Option<SpinLockGuard<'a, Mmu>>,
}

impl MappedReads<'_> {
    /// Copies the guest bytes at `gpa` (inside one page) from the host page EPT maps there,
    /// if one is.
    pub(crate) fn read(&mut self, gpa: u64, buf: &mut [u8]) -> bool {
        let memory = self.memory;
        self.held.get_or_insert_with(|| memory.mmu.lock()).ept.read(gpa, buf)
    }

    /// Lets the MMU lock go (before anything that may sleep).
    pub(crate) fn release(&mut self) {
        self.held = None;
    }
}

/// Runs on a CPU that was in a VMX window of this VM: by the time it runs, the window has
/// ended (windows keep interrupts off), so the vCPU's next window starts with INVEPT.
///
/// # Safety
///
/// None: it does nothing (an IPI callback).
unsafe extern "C" fn kicked(_info: *mut ffi::c_void) {}

/// The vCPUs' host CPUs ([`GuestMemory::running`]).
pub(crate) type Running = [AtomicI32; MAX_VCPU_ID as usize];

/// A VM's table of its vCPUs' host CPUs, for [`GuestMemory::new`]: none in a window yet.
pub(crate) fn new_running() -> Result<Arc<Running>> {
    Ok(Arc::new([const { AtomicI32::new(-1) }; MAX_VCPU_ID as usize], GFP_KERNEL_ACCOUNT)?)
}

/// Whether `cpu` is in a VMX window of the VM whose vCPUs' CPUs `info` points to.
///
/// # Safety
///
/// `info` points to a [`Running`] that lives for the call.
unsafe extern "C" fn in_window(cpu: ffi::c_int, info: *mut ffi::c_void) -> bool {
    // SAFETY: the caller's guarantee.
    let running = unsafe { &*info.cast::<Running>() };
    running.iter().any(|r| r.load(Ordering::SeqCst) == cpu)
}

impl GuestMemory {
    /// An empty address space of a VM whose vCPUs publish their CPUs in `running` and whose
    /// flushes are counted in `flushes`.
    pub(crate) fn new(running: Arc<Running>, flushes: Arc<Atomic<u64>>) -> Result<Arc<Self>> {
        let ept = Ept::new()?;
        let eptp = ept.eptp();
        Arc::pin_init(
            pin_init!(GuestMemory {
                eptp,
                running,
                flushes,
                slots_gen: AtomicU64::new(0),
                mmu <- new_spinlock!(Mmu { slots: KVVec::new(), hva: KVVec::new(), ids: KVVec::new(), ept, seq: 0, in_progress: 0, range: 0..0 }),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// The EPT pointer of this VM.
    pub(crate) fn eptp(&self) -> u64 {
        self.eptp
    }

    /// Where vCPU `id` records the CPU its window runs on.
    pub(crate) fn running(&self, id: u32) -> Result<&AtomicI32> {
        self.running.get(id as usize).ok_or(EINVAL) // ids are checked when vCPUs are created
    }

    /// Makes sure no vCPU still runs with translations from before a change to the EPT (a
    /// vCPU in a window is interrupted; its next window starts with INVEPT), then frees the
    /// tables the change detached. Under the MMU lock: everything detached so far was
    /// detached before this flush began.
    fn flush(&self, m: &mut Mmu) {
        self.kick_running();
        m.ept.free_detached();
        // Under the MMU lock: no other writer.
        self.flushes.store(self.flushes.load(Relaxed).wrapping_add(1), Relaxed);
    }

    /// Interrupts every vCPU inside a VMX window of this VM and waits until each has left it
    /// (windows keep interrupts off). The caller changed something first (the EPT, the VM's
    /// settings) that a vCPU checks before it enters: a vCPU not seen here sees the change.
    pub(crate) fn kick_running(&self) {
        // Pairs with the store of `running` in a window (run/window.rs), before INVEPT and
        // before the entry loop's checks.
        core::sync::atomic::fence(Ordering::SeqCst);
        let running = core::ptr::from_ref::<Running>(&self.running).cast_mut().cast();
        // SAFETY: `in_window` only reads `self.running`, which outlives the call; `kicked` does
        // nothing. The CPUs found are interrupted together, and waiting for them is allowed
        // with interrupts on: the MMU lock is a plain spinlock, never taken with interrupts
        // off (not inside a VMX window), so a CPU spinning on it still takes the IPI.
        unsafe {
            bindings::on_each_cpu_cond_mask(Some(in_window), Some(kicked), running, true, &raw const bindings::__cpu_online_mask)
        };
    }

    /// Whether the guest page holding `gpa` is mapped (for reading, at least).
    pub(crate) fn is_mapped(&self, gpa: u64) -> bool {
        self.mmu.lock().ept.is_mapped(gpa & !0xfff, false)
    }

    /// The count of flushes of every vCPU's translations (KVM's `remote_tlb_flush`), which a
    /// statistics fd may keep after the VM is gone.
    pub(crate) fn flush_count(&self) -> Arc<Atomic<u64>> {
        self.flushes.clone()
    }

    // --- Guest faults ---

    /// Maps the guest page holding `gpa` after an EPT violation (a write if `write`): the
    /// host pages behind it and, unless the slot logs writes, its unmapped neighbours in the
    /// same fault-around block, where the host has them all already or the guest touches
    /// memory in order (it has a page beside this one). Sleeps (pins host pages).
    pub(crate) fn fault_in(&self, gpa: u64, write: bool, cache: &mut TableCache) -> Result<Outcome> {
        let page = gpa & !0xfff;
        let (slot, seq, sequential, read_only_mapped) = {
            let m = self.mmu.lock();
            let Some(slot) = m.ram_slot(gpa, write) else { return Ok(Outcome::Mmio(self.slots_gen())) };
            let near = m.ept.near(page);
            if near.mapped(page, write) {
                return Ok(Outcome::Mapped); // another vCPU mapped it first
            }
            let mapped = |g| near.mapped(g, false);
            // In order, upwards or downwards (Linux's early allocations go top-down).
            let neighbour = |p: Option<u64>| p.is_some_and(&mapped);
            let sequential = neighbour(page.checked_sub(0x1000)) || neighbour(page.checked_add(0x1000));
            // The last: a write to a page mapped read-only (dirty logging, or a read-only host
            // page), which gets that page alone, pinned for writing this time.
            (slot, m.seq, sequential, mapped(page))
        };
        cache.top_up()?;
        let uaddr = |gpa: u64| slot.uaddr_of(gpa);
        // What the host already has, writable where the slot is: a read then maps it
        // writable too, saving the write fault (KVM's fast path).
        let want_write = !slot.readonly();
        // The lockless probe below, first: without the page touched the host cannot have the
        // whole run, and an isolated touch gets its page alone.
        let host_has = read_only_mapped || crate::host::mem::host_has_page(uaddr(page), want_write);
        // The fault-around block (its unmapped pages around this one) only where it is used:
        // the host has the page, or the guest touches memory in order. An isolated first
        // touch skips looking at its neighbours, and so does a slot that maps one page per
        // fault anyway.
        let around = crate::module_parameters::fault_around.value();
        let (mut first, count) = if read_only_mapped || !slot.maps_around(around) || !(host_has || sequential) {
            (page, 1)
        } else {
            let m = self.mmu.lock();
            let near = m.ept.near(page);
            slot.fault_around(page, around, |g| near.mapped(g, false))
        };
        let covers = |first: u64, p: &PinnedRun| first.saturating_add((p.len() as u64) << 12) > page;
        let mut host_writable = want_write;
        // Only if the host has the whole run: fault-around then faults the rest in below. A
        // first touch probes the page touched without locks: without it the run cannot be
        // whole, and the lookup of the run would take the host's mmap lock only to find that
        // out. (A write to a page mapped read-only is a run of one: the lookup is the probe.
        // The lockless probe does not see the shared zero page, so a read-only slot's
        // never-written pages are mapped one fault at a time.)
        let present = host_has
            .then(|| PinnedRun::pin_present(uaddr(first), count as usize, want_write))
            .flatten()
            .filter(|p| p.len() as u64 == count);
        let pinned = match present {
            Some(p) => p,
            // Otherwise, for a guest touching memory in order, the host faults the run in,
            // writable where the slot is: fault-around's point is that the guest's next
            // writes there need no fault (KVM maps a read read-only; here a read allocates,
            // breaks COW or unmerges a KSM page, within the fault-around block only). An
            // isolated touch gets its page alone, as on KVM: faulting in its whole block would
            // allocate and zero pages the guest may never use. Where the host has the page
            // read-only (mprotect), a read maps it read-only, as KVM, and a write is the VMM's
            // fault.
            None => {
                let run = (sequential && count > 1).then(|| PinnedRun::pin(uaddr(first), count as usize, want_write));
                let p = match run {
                    Some(Ok(p)) if covers(first, &p) => Ok(p),
                    // An isolated touch, or the run stopped short of the page touched or
                    // failed: that page alone.
                    _ => {
                        first = page;
                        match PinnedRun::pin(uaddr(page), 1, want_write) {
                            Err(PinError::Fault) if want_write && !write => {
                                host_writable = false;
                                PinnedRun::pin(uaddr(page), 1, false)
                            }
                            p => p,
                        }
                    }
                };
                match p {
                    Ok(p) => p,
                    Err(PinError::Fault) => return Ok(Outcome::HostFault),
                    Err(PinError::Interrupted) => return Ok(Outcome::Interrupted),
                    Err(PinError::Poisoned) => {
                        crate::host::mem::hwpoison_signal(uaddr(page));
                        return Ok(Outcome::Mapped); // the signal ends KVM_RUN (EINTR)
                    }
                }
            }
        };
        let writable = host_writable && (write || !slot.logs_dirty());
        let hva = uaddr(first)..uaddr(first).saturating_add((pinned.len() as u64) << 12);
        let mut pinned = pinned;
        {
            let mut m = self.mmu.lock();
            if m.must_retry(seq, &hva) {
                return Ok(Outcome::Mapped); // the guest faults again, on the new mapping
            }
            for (i, hpa) in pinned.phys().enumerate() {
                // The run is inside one slot and one level-1 table (the cache holds its tables).
                m.ept.map(first.wrapping_add((i as u64) << 12), hpa, writable, cache)?;
            }
            // Logged dirty together with its writable mapping, under the same hold (as KVM
            // marks it when it installs the entry): a KVM_GET_DIRTY_LOG that took the bit
            // before the mapping existed would otherwise never see the guest's writes. (A
            // logging slot maps writable only the page a write touched.)
            if writable {
                m.mark_dirty(&slot, page);
            }
        }
        if writable {
            pinned.set_dirty();
        }
        Ok(Outcome::Mapped) // `pinned` is released here, after the MMU lock
    }

    // --- Emulation: lookups for one access ---

    /// The slot table's generation ([`Outcome::Mmio`]).
    pub(crate) fn slots_gen(&self) -> u64 {
        self.slots_gen.load(Ordering::Acquire)
    }

    /// The slot whose RAM backs `gpa` for this access, if any.
    pub(crate) fn ram_slot(&self, gpa: u64, write: bool) -> Option<Slot> {
        self.mmu.lock().ram_slot(gpa, write)
    }

    /// rvmx wrote the guest RAM page at `gpa` for the guest: it is logged dirty like the
    /// guest's own writes, after the write (as KVM's `mark_page_dirty` after its copy), so that
    /// a KVM_GET_DIRTY_LOG that comes in between cannot take the bit before the new data is
    /// there.
    pub(crate) fn mark_written(&self, gpa: u64) {
        let mut m = self.mmu.lock();
        if let Some(slot) = m.ram_slot(gpa, true) {
            m.mark_dirty(&slot, gpa & !0xfff);
        }
    }

    /// Whether a slot backs `gpa` with RAM for this access.
    pub(crate) fn is_ram(&self, gpa: u64, write: bool) -> bool {
        self.mmu.lock().ram_slot(gpa, write).is_some()
    }

    /// Reads from the host pages EPT maps, for a series of them under one hold of the MMU
    /// lock (a guest page walk and the fetch after it).
    pub(crate) fn mapped_reads(&self) -> MappedReads<'_> {
        MappedReads { memory: self, held: None }
    }

    /// The EPT walk for `gpa` down to the first misconfigured entry (see `Ept`).
    pub(crate) fn find_misconfiguration(&self, gpa: u64) -> Option<(u32, u64, &'static str)> {
        self.mmu.lock().ept.find_misconfiguration(gpa)
    }

    // --- The slot table (the VM's mutex held: no other change at the same time) ---

    /// Decides a `KVM_SET_USER_MEMORY_REGION` against the slots.
    pub(crate) fn decide(&self, region: &crate::logic::kvm_abi::UserspaceMemoryRegion) -> Result<Change, crate::logic::memslot_rules::Refusal> {
        let phys_bits = crate::host::x86::cpuid(0x8000_0008)[0] & 0xff;
        let m = self.mmu.lock();
        crate::logic::memslot_rules::decide_within(region, &m.slots, |id| m.slot(id), crate::logic::memslot_rules::gpa_limit(phys_bits))
    }

    /// Makes room for one more slot and for slot id `id` before [`Self::apply`] adds it: the
    /// tables grow outside the MMU lock (doubling, up to `MAX_SLOTS`) and are swapped in
    /// under it.
    pub(crate) fn reserve(&self, id: u16) -> Result {
        let (full, capacity, ids) = {
            let m = self.mmu.lock();
            let full = m.slots.len() >= m.slots.capacity() || m.hva.len() >= m.hva.capacity();
            (full, m.slots.capacity().min(m.hva.capacity()), m.ids.len())
        };
        let max = MAX_SLOTS as usize;
        if full {
            let n = capacity.saturating_mul(2).clamp(16, max);
            let mut bigger = KVVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
            let mut bigger_hva = KVVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
            let mut m = self.mmu.lock();
            // Within the new capacity: no allocation under the lock.
            bigger.extend_from_slice(&m.slots, GFP_NOWAIT)?;
            bigger_hva.extend_from_slice(&m.hva, GFP_NOWAIT)?;
            core::mem::swap(&mut m.slots, &mut bigger);
            core::mem::swap(&mut m.hva, &mut bigger_hva);
        } // the old tables are freed here, after the lock
        if ids <= id as usize {
            let n = (id as usize).saturating_add(1).max(ids.saturating_mul(2)).min(max);
            let mut bigger = KVVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
            let mut m = self.mmu.lock();
            for e in m.ids.drain_all() {
                // `n` > the old length: there is room for every entry.
                let _ = bigger.push_within_capacity(e);
            }
            while bigger.len() < n {
                let _ = bigger.push_within_capacity(IdEntry::default());
            }
            core::mem::swap(&mut m.ids, &mut bigger);
        }
        Ok(())
    }

    /// Applies a decided change. `bitmap` is a zeroed dirty bitmap for the slot if it logs
    /// writes and had none (allocated by the caller, outside the lock); the bitmap it no longer
    /// needs is dropped after the lock.
    pub(crate) fn apply(&self, change: Change, bitmap: Option<KVVec<u64>>) -> Result {
        let mut bitmap = bitmap;
        let mut m = self.mmu.lock();
        // In-flight faults read the old slots: they retry.
        m.seq = m.seq.wrapping_add(1);
        self.slots_gen.fetch_add(1, Ordering::Release);
        // The slot table changes first, then the EPT entries of the old range go (a fault
        // cannot map them again meanwhile: it would not find them, or would retry).
        let mut zap = None;
        let mut removed = None;
        {
            let m = &mut *m;
            match change {
                Change::Unchanged => {}
                Change::Create(slot) => {
                    m.insert(slot)?;
                    m.set_gpa(slot.id, Some(slot.gpa));
                    Self::swap_bitmap(m, &slot, &mut bitmap);
                    // An invalidation already under way may cover the new slot's memory: until
                    // every one has ended, faults anywhere retry.
                    if m.in_progress > 0 {
                        m.range = 0..u64::MAX;
                    }
                }
                Change::Delete(id) => {
                    zap = m.slot(id).map(|old| (old.gpa..old.gpa.saturating_add(old.size), Zap::Unmap));
                    removed = m.remove(id);
                    m.set_gpa(id, None);
                    if let Some(e) = m.ids.get_mut(id as usize) {
                        bitmap = e.dirty.take();
                    }
                }
                Change::Move(slot) => {
                    zap = m.slot(slot.id).map(|old| (old.gpa..old.gpa.saturating_add(old.size), Zap::Unmap));
                    removed = m.remove(slot.id);
                    m.insert(slot)?; // reserve() made room in the index for both
                    m.set_gpa(slot.id, Some(slot.gpa));
                    // A bitmap the slot keeps logging into moves with it, as KVM's does.
                    Self::swap_bitmap(m, &slot, &mut bitmap);
                }
                Change::Flags(slot) => {
                    // From now on the first write to each page must fault to be logged.
                    if slot.logs_dirty() {
                        zap = Some((slot.gpa..slot.gpa.saturating_add(slot.size), Zap::WriteProtect));
                    }
                    m.slots.iter_mut().filter(|s| s.id == slot.id).for_each(|s| *s = slot);
                    Self::swap_bitmap(m, &slot, &mut bitmap);
                }
            }
        }
        if let Some((range, how)) = zap {
            let (mut mm, any) = self.zap_gpa(m, range, how);
            if any {
                self.flush(&mut mm);
            }
            m = mm;
        }
        if let Some(old) = removed {
            m.forget_hva(&old);
        }
        drop(m);
        // After the lock: freeing a vmalloc'ed bitmap may sleep.
        drop(bitmap);
        Ok(())
    }

    /// Applies `how` to the EPT entries of the guest pages in `range`, 1 GiB at a time, with
    /// a chance to reschedule between chunks that changed anything (the lock is dropped: the
    /// caller has made sure no fault can map the range again meanwhile). The caller flushes
    /// if it returns true. Process context only.
    fn zap_gpa<'a>(&'a self, mut m: SpinLockGuard<'a, Mmu>, range: Range<u64>, how: Zap) -> (SpinLockGuard<'a, Mmu>, bool) {
        let mut any = false;
        let mut at = range.start;
        while at < range.end {
            let next = (at | (ZAP_CHUNK - 1)).saturating_add(1).min(range.end);
            let changed = m.zap(at..next, how);
            any |= changed;
            at = next;
            if changed && at < range.end {
                m = self.flush_and_relax(m);
            }
        }
        (m, any)
    }

    /// In the middle of a zap: flushes what it changed so far, then [`Self::relax`]. The flush
    /// comes first: a notifier call while the lock is dropped may find those entries gone
    /// and so not flush, and the host may then free the pages, which no vCPU may still have
    /// cached (as KVM flushes before it yields).
    fn flush_and_relax<'a>(&'a self, mut m: SpinLockGuard<'a, Mmu>) -> SpinLockGuard<'a, Mmu> {
        self.flush(&mut m);
        self.relax(m)
    }

    /// Drops the MMU lock, lets the scheduler run, takes the lock again.
    fn relax<'a>(&'a self, m: SpinLockGuard<'a, Mmu>) -> SpinLockGuard<'a, Mmu> {
        drop(m);
        crate::host::sched::cond_resched();
        self.mmu.lock()
    }

    /// Gives `slot` the bitmap in `spare` if it logs writes and has none; takes its bitmap
    /// into `spare` (to be freed after the lock) if it no longer logs.
    fn swap_bitmap(m: &mut Mmu, slot: &Slot, spare: &mut Option<KVVec<u64>>) {
        let Some(d) = m.ids.get_mut(slot.id as usize).map(|e| &mut e.dirty) else { return };
        if slot.logs_dirty() && d.is_none() {
            *d = spare.take();
        } else if !slot.logs_dirty() {
            *spare = d.take();
        }
    }

    /// Whether slot `id` exists and needs a new dirty bitmap for `slot`'s flags: its size in
    /// words if so.
    pub(crate) fn bitmap_needed(&self, slot: &Slot) -> Option<usize> {
        let m = self.mmu.lock();
        let has = m.ids.get(slot.id as usize).is_some_and(|e| e.dirty.is_some());
        (slot.logs_dirty() && !has).then(|| slot.bitmap_words())
    }

    /// `KVM_GET_DIRTY_LOG`'s core: moves slot `id`'s bitmap into `out` (as many words, zeroed
    /// by the caller) and write-protects the pages that were written, starting a new round.
    /// `ENOENT` if the slot does not exist or does not log. Process context (the VM's mutex
    /// held: the slot stays); reschedules every so often on huge logs.
    pub(crate) fn take_dirty_log(&self, id: u16, out: &mut [u64]) -> Result {
        let mut m = self.mmu.lock();
        let slot = m.slot(id).ok_or(ENOENT)?;
        let mut any = false;
        for (w, copy) in out.iter_mut().enumerate() {
            let Some(word) = m.ids.get_mut(id as usize).and_then(|e| e.dirty.as_mut()).and_then(|b| b.get_mut(w)) else {
                return Err(ENOENT); // the caller sized `out` from this bitmap
            };
            let mut taken = core::mem::take(word);
            *copy = taken;
            // Each run of set bits is one range to write-protect.
            let mut bit = 0u32;
            while taken != 0 {
                let zeros = taken.trailing_zeros();
                taken >>= zeros;
                let ones = taken.trailing_ones();
                taken = taken.checked_shr(ones).unwrap_or(0);
                bit = bit.saturating_add(zeros);
                let page = ((w as u64) << 6) | bit as u64; // < the slot's pages
                let start = slot.gpa.wrapping_add(page << 12);
                any |= m.zap(start..start.wrapping_add((ones as u64) << 12), Zap::WriteProtect);
                bit = bit.saturating_add(ones);
            }
            if w % DIRTY_WORDS_PER_LOCK == DIRTY_WORDS_PER_LOCK - 1 {
                m = self.relax(m);
            }
        }
        if any {
            self.flush(&mut m);
        }
        Ok(())
    }

    /// The number of bitmap words of slot `id` if it logs writes.
    pub(crate) fn dirty_log_words(&self, id: u16) -> Result<usize> {
        let m = self.mmu.lock();
        m.ids.get(id as usize).and_then(|e| e.dirty.as_ref()).map(|bits| bits.len()).ok_or(ENOENT)
    }

    // --- The MMU notifier's callbacks (mm/mmu_notifier.rs) ---

    /// Applies `how` to the EPT entries of every slot's pages in the host range `hva`, the
    /// slots found through the host-address index; where `may_sleep`, reschedules between
    /// chunks and resumes after the slot it was at (a slot removed meanwhile had its entries
    /// removed with it; one added meanwhile has none yet, and faults into `hva` retry).
    /// Whether any entry was there.
    fn zap_hva<'a>(&'a self, mut m: SpinLockGuard<'a, Mmu>, hva: Range<u64>, how: Zap, may_sleep: bool) -> (SpinLockGuard<'a, Mmu>, bool) {
        let mut any = false;
        let mut i = hva_index::first_candidate(&m.hva, hva.start);
        while let Some(e) = m.hva.get(i).copied() {
            if e.start >= hva.end {
                break;
            }
            i = i.saturating_add(1);
            let start = hva.start.max(e.start);
            let end = hva.end.min(e.end);
            if start >= end {
                continue;
            }
            // Both ends lie in the slot: offsets below its size, so no overflow.
            let mut from = e.gpa.wrapping_add(start.wrapping_sub(e.start)) & !0xfff;
            let gpa_end = e.gpa.wrapping_add(end.wrapping_sub(e.start));
            while from < gpa_end {
                let next = (from | (ZAP_CHUNK - 1)).saturating_add(1).min(gpa_end);
                let changed = m.zap(from..next, how);
                any |= changed;
                from = next;
                if changed && may_sleep {
                    m = self.flush_and_relax(m);
                    i = hva_index::after(&m.hva, e.start, e.gpa);
                }
            }
        }
        (m, any)
    }

    /// The host is about to change its mappings of `[start, end)`: the EPT entries for them
    /// go now, and no vCPU runs with them once this returns. Sleeps only if `may_sleep`.
    pub(crate) fn invalidate_start(&self, start: u64, end: u64, may_sleep: bool) {
        let mut m = self.mmu.lock();
        // Only ranges behind a slot hold faults back (as KVM's), or any munmap in the VMM
        // (malloc, thread stacks) would make faults retry.
        let hva = start..end;
        let behind_a_slot = m.behind_a_slot(&hva);
        if behind_a_slot {
            m.range = if m.in_progress == 0 || m.range.is_empty() { hva.clone() } else { m.range.start.min(start)..m.range.end.max(end) };
        } else if m.in_progress == 0 {
            m.range = 0..0;
        }
        m.in_progress = m.in_progress.saturating_add(1);
        if !behind_a_slot {
            return;
        }
        let (mut m, any) = self.zap_hva(m, hva, Zap::Unmap, may_sleep);
        if any {
            self.flush(&mut m);
        }
    }

    /// The change of `[start, end)` is done: faults that pinned behind a slot before it retry.
    pub(crate) fn invalidate_end(&self, start: u64, end: u64) {
        let mut m = self.mmu.lock();
        // Only behind a slot, as KVM: the VMM's other threads mprotect and munmap all the
        // time (stacks, malloc), and faults racing with that would otherwise retry for
        // nothing. A slot deleted meanwhile bumped `seq` itself; one created meanwhile
        // counts here.
        if m.behind_a_slot(&(start..end)) {
            m.seq = m.seq.wrapping_add(1);
        }
        m.in_progress = m.in_progress.saturating_sub(1);
    }

    /// Page aging: whether the guest used host pages of `hva` since the last call. EPT
    /// accessed bits are not enabled, so, as KVM without them, a mapped page counts as used
    /// and its entry goes: the guest's next access faults it back in, which makes it used
    /// again (fault-around counts the neighbours it maps as used too). Always flushed: an
    /// entry left in a vCPU's TLB would outlive a later invalidation that finds nothing
    /// mapped. Atomic context.
    pub(crate) fn clear_young(&self, start: u64, end: u64) -> bool {
        let m = self.mmu.lock();
        let (mut m, any) = self.zap_hva(m, start..end, Zap::Unmap, false);
        if any {
            self.flush(&mut m);
        }
        any
    }

    /// Page aging's test: whether a page of `hva` is mapped, i.e. used since the last
    /// [`Self::clear_young`]. Atomic context.
    pub(crate) fn test_young(&self, start: u64, end: u64) -> bool {
        let m = self.mmu.lock();
        self.zap_hva(m, start..end, Zap::Test, false).1
    }

    /// The address space is going away: nothing stays mapped.
    pub(crate) fn release(&self) {
        let mut m = self.mmu.lock();
        m.seq = m.seq.wrapping_add(1);
        let (mut m, any) = self.zap_hva(m, 0..u64::MAX, Zap::Unmap, true);
        if any {
            self.flush(&mut m);
        }
    }
}
