// SPDX-License-Identifier: GPL-2.0

//! Guest MSRs: RDMSR/WRMSR exits, `KVM_GET/SET_MSRS`, and the VM-entry/exit MSR lists that
//! put the guest's SYSCALL and SWAPGS MSRs into the CPU only while the guest runs.
//!
//! Where each MSR lives: EFER and FS/GS base in the VMCS (and SREGS), PAT and SYSENTER in the
//! VMCS, STAR/LSTAR/CSTAR/SFMASK/KERNEL_GS_BASE/TSC_AUX/SPEC_CTRL in the guest MSR list below
//! while the guest can use them without an exit (the CPU loads the list at entry and stores
//! it at exit, since SWAPGS changes KERNEL_GS_BASE without an exit, and the guest writes
//! SPEC_CTRL without one once it uses it; `msr_rules::in_cpu` says which are in it), the
//! rest in [`GuestMsrs`]. Outside a window every guest value is in `GuestMsrs` or
//! SREGS. The lists and the VMCS keep theirs between windows: a window writes them only after
//! userspace's access (`KVM_SET_MSRS` and the like) or a change of the guest's EFER that
//! changed which MSRs are in the lists, and reads back only what the guest changes without an
//! exit (the switched MSRs in the lists); its WRMSR exits write both places.

use core::{
    mem::size_of,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
};
use kernel::{
    page::{Page, PAGE_SIZE},
    prelude::*,
    uaccess::{UserPtr, UserSlice},
};

use crate::{
    host::uaccess::{read_user, user_field},
    logic::kvm_abi::{MsrEntry, MAX_IO_MSRS},
    host::mem::{page_address, page_phys, phys_to_virt},
    logic::arch::{apic_base, msr::*},
    logic::kvm_abi::quirk,
    logic::msr_rules::{self, switched_bit, GuestMsrs, SwitchedSet, SWITCHED},
    logic::vcpu_state,
    vmx::vmcs::Current,
    logic::vmcs_fields::*,
    host::x86,
};

/// Bytes of the host list's offset in the area page.
const HOST_LIST: usize = 2048;

/// One page: the guest MSR list (entry load, exit store) then the host list (exit load).
/// Each entry is 16 bytes: index, reserved, value (SDM 24.7.2). And the MSR bitmap: every
/// RDMSR and WRMSR exits, except SPEC_CTRL's once the guest set it (as KVM).
pub(crate) struct MsrArea {
    _page: Page,
    virt: *mut u64,
    phys: u64,
    bitmap: Page,
    /// The VMCS uses `bitmap` ("use MSR bitmaps").
    bitmaps: AtomicBool,
    /// The guest reads and writes SPEC_CTRL without exits: its value is in the CPU.
    spec_ctrl_passed: AtomicBool,
    /// The switched MSRs the host has (not TSC_AUX without RDTSCP, nor SPEC_CTRL without the
    /// MSR).
    present: SwitchedSet,
    /// Those in the lists now.
    active: SwitchedSet,
    /// Each [`SWITCHED`] MSR's entry in the lists; `None` while it is not in them.
    entries: [Option<usize>; SWITCHED.len()],
    /// The other way round: entry `i`'s MSR, as its place in [`SWITCHED`] (for `i < count`),
    /// so that every window walks the entries in use only.
    order: [usize; SWITCHED.len()],
    /// Entries in each list.
    count: usize,
    /// The lists' lengths the VMCS holds (`usize::MAX` before the first write).
    count_written: AtomicUsize,
    /// The guest list and the VMCS hold what [`GuestMsrs`] holds (false after an access
    /// outside a window, which may have changed it).
    guest_loaded: AtomicBool,
}

// SAFETY: the raw pointer is into `_page`, which the area owns and frees with it; moving the
// area to another thread moves the page too.
unsafe impl Send for MsrArea {}
// SAFETY: an area lives in its vCPU's state, behind the vCPU mutex: every access, also the
// writes through `&self` to the page, is by the thread holding that mutex (or by the
// processor inside that thread's window), so two threads never use it at once.
unsafe impl Sync for MsrArea {}

/// Word of entry `i`'s MSR index in the guest or the host list; its value is the next word.
/// (i < SWITCHED.len(), a handful: wrapping is never reached, and no overflow check is left
/// on the window's path.)
#[inline(always)]
const fn index_word(host: bool, i: usize) -> usize {
    let w = i.wrapping_mul(2);
    if host { w.wrapping_add(HOST_LIST / 8) } else { w }
}

/// Word of entry `i`'s value in the guest or the host list.
#[inline(always)]
const fn value_word(host: bool, i: usize) -> usize {
    index_word(host, i) | 1 // index words are even
}

impl MsrArea {
    /// The lists for this host; `spec_ctrl`: the host has IA32_SPEC_CTRL.
    pub(crate) fn new(spec_ctrl: bool) -> Result<Self> {
        let page = Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO)?;
        let phys = page_phys(&page);
        let rdtscp = x86::cpuid(0x8000_0001)[3] & crate::logic::cpuid_table::EXT1_EDX_RDTSCP != 0;
        let bitmap = Page::alloc_page(GFP_KERNEL_ACCOUNT)?;
        let mut present = msr_rules::ALL_SWITCHED;
        if !rdtscp {
            present &= !switched_bit(TSC_AUX);
        }
        if !spec_ctrl {
            present &= !switched_bit(SPEC_CTRL);
        }
        let area = Self {
            virt: phys_to_virt(phys),
            phys,
            _page: page,
            bitmap,
            bitmaps: AtomicBool::new(false),
            spec_ctrl_passed: AtomicBool::new(false),
            present,
            active: 0,
            entries: [None; SWITCHED.len()],
            order: [0; SWITCHED.len()],
            count: 0,
            count_written: AtomicUsize::new(usize::MAX),
            guest_loaded: AtomicBool::new(false),
        };
        area.intercept_all();
        Ok(area)
    }

    /// Puts the MSRs of `set` (all present) in the lists, in [`SWITCHED`]'s order: SPEC_CTRL,
    /// if in it, last. Their values are written next (`load`).
    fn lay_out(&mut self, set: SwitchedSet) {
        self.count = 0;
        for (k, (slot, &msr)) in self.entries.iter_mut().zip(SWITCHED.iter()).enumerate() {
            *slot = None;
            if set & switched_bit(msr) != 0 {
                *slot = Some(self.count);
                if let Some(o) = self.order.get_mut(self.count) {
                    *o = k;
                }
                self.count = self.count.saturating_add(1); // at most SWITCHED.len()
            }
        }
        for (entry, &msr) in self.entries.iter().zip(SWITCHED.iter()) {
            if let Some(i) = *entry {
                self.set(index_word(false, i), msr as u64);
                self.set(index_word(true, i), msr as u64);
            }
        }
        self.active = set;
        self.guest_loaded.store(false, Relaxed);
    }

    /// Whether the lists hold other MSRs than `want` (`msr_rules::in_cpu`) calls for: the
    /// guest's EFER changed inside a window, which must end for `load` to lay them out again.
    pub(crate) fn stale(&self, want: SwitchedSet) -> bool {
        want & self.present != self.active
    }

    /// Whether the host has switched MSR `msr`.
    fn has(&self, msr: u32) -> bool {
        self.present & switched_bit(msr) != 0
    }

    fn set(&self, word: usize, v: u64) {
        // SAFETY: `word` < 512: inside our page, accessed under the vCPU mutex.
        unsafe { self.virt.add(word).write_volatile(v) }
    }

    fn get(&self, word: usize) -> u64 {
        // SAFETY: as in `set`.
        unsafe { self.virt.add(word).read_volatile() }
    }

    /// Sets every bit of the MSR bitmap: each RDMSR and WRMSR exits.
    fn intercept_all(&self) {
        // SAFETY: the bitmap page is ours and PAGE_SIZE bytes long; not yet in any VMCS.
        unsafe { core::ptr::write_bytes(self.bitmap_bytes(), 0xff, PAGE_SIZE) };
    }

    /// The MSR bitmap's first byte (its page's direct mapping).
    fn bitmap_bytes(&self) -> *mut u8 {
        page_address(&self.bitmap)
    }

    /// Points the VMCS at the lists and, if `bitmaps` ("use MSR bitmaps" is on), at the MSR
    /// bitmap (once per VMCS).
    pub(crate) fn write_controls(&self, cur: &Current<'_>, bitmaps: bool) {
        cur.write(ENTRY_MSR_LOAD_ADDR, self.phys);
        cur.write(EXIT_MSR_STORE_ADDR, self.phys);
        cur.write(EXIT_MSR_LOAD_ADDR, self.phys | HOST_LIST as u64); // inside the aligned page
        if bitmaps {
            cur.write(MSR_BITMAP, page_phys(&self.bitmap));
        }
        self.bitmaps.store(bitmaps, Relaxed);
        self.write_counts(cur);
    }

    /// Whether SPEC_CTRL's reads and writes exit. They stop exiting after the guest's first
    /// non-zero write (a guest using IBRS writes it on each kernel entry), as KVM does; the
    /// processor then judges the values, and the lists always switch it, saving the guest's
    /// at exit (the caller writes the lists' lengths next, in `set_live`; `load` does, at the
    /// next window, when they exit again). They exit again when the MSR filter comes to deny
    /// them.
    pub(crate) fn set_spec_ctrl_intercept(&self, intercept: bool) {
        let passed = !intercept;
        if !self.bitmaps.load(Relaxed) || !self.has(SPEC_CTRL) || self.spec_ctrl_passed.swap(passed, Relaxed) == passed {
            return;
        }
        let bitmap_virt = self.bitmap_bytes();
        // Read bitmap for low MSRs at byte 0, write bitmap for low MSRs at byte 2048 (SDM
        // 24.6.9): SPEC_CTRL's bit in both.
        let (byte, bit) = ((SPEC_CTRL / 8) as usize, SPEC_CTRL % 8);
        for half in [0, 2048] {
            // SAFETY: `half | byte` < PAGE_SIZE: inside the bitmap page, accessed under the
            // vCPU mutex while the VMCS is not running.
            unsafe {
                let p = bitmap_virt.add(half | byte); // byte < 2048
                let v = p.read_volatile();
                p.write_volatile(if intercept { v | 1 << bit } else { v & !(1 << bit) });
            }
        }
    }

    /// The lists' lengths: SPEC_CTRL, the last entry, only while the guest's value differs
    /// from the host's (each load of it costs what a WRMSR does; KVM skips equal values too),
    /// or always once the guest writes it without exits.
    fn write_counts(&self, cur: &Current<'_>) {
        let mut count = self.count;
        if let Some(i) = self.entry(SPEC_CTRL) {
            let passed = self.spec_ctrl_passed.load(Relaxed);
            if !passed && self.get(value_word(false, i)) == self.get(value_word(true, i)) {
                count = i; // the last entry
            }
        }
        if self.count_written.swap(count, Relaxed) == count {
            return;
        }
        cur.write(ENTRY_MSR_LOAD_COUNT, count as u32);
        cur.write(EXIT_MSR_STORE_COUNT, count as u32);
        cur.write(EXIT_MSR_LOAD_COUNT, count as u32);
    }

    /// [`GuestMsrs`] may change outside a window: the next window writes it all again.
    pub(crate) fn guest_changed(&self) {
        self.guest_loaded.store(false, Relaxed);
    }

    /// At window start, for a guest that can use the switched MSRs `want`
    /// (`msr_rules::in_cpu`): this CPU's and task's values into the host list (read every
    /// time: KERNEL_GS_BASE is the task's, SPEC_CTRL may change, and KVM's guests' values
    /// sit in the others until it returns to userspace); if `m` changed outside a window or
    /// the lists now hold other MSRs, its values into the guest list, and PAT, SYSENTER and
    /// the TSC offset into the VMCS.
    pub(crate) fn load(&mut self, cur: &Current<'_>, m: &GuestMsrs, want: SwitchedSet) {
        if self.stale(want) {
            self.lay_out(want & self.present);
        }
        let changed = !self.guest_loaded.swap(true, Relaxed);
        for (i, &k) in self.in_use().iter().enumerate() {
            let (Some(&msr), Some(&v)) = (SWITCHED.get(k), m.switched.get(k)) else { continue };
            if changed {
                self.set(value_word(false, i), v);
            }
            // Only MSRs the host has (`lay_out`).
            self.set(value_word(true, i), x86::rdmsr(msr));
        }
        self.write_counts(cur);
        if changed {
            cur.write(GUEST_IA32_PAT, m.pat);
            cur.write(GUEST_SYSENTER_CS, m.sysenter[0] as u32);
            cur.write(GUEST_SYSENTER_ESP, m.sysenter[1]);
            cur.write(GUEST_SYSENTER_EIP, m.sysenter[2]);
            cur.write(TSC_OFFSET, m.tsc_offset);
        }
    }

    /// At window end: the guest values of the switched MSRs in the lists back from them
    /// (SWAPGS changes KERNEL_GS_BASE, a guest that uses SPEC_CTRL writes it, without exits).
    /// The others, PAT and SYSENTER change only by WRMSR exits, which write `m` too.
    pub(crate) fn store(&self, m: &mut GuestMsrs) {
        for (i, &k) in self.in_use().iter().enumerate() {
            if let Some(v) = m.switched.get_mut(k) {
                *v = self.get(value_word(false, i));
            }
        }
    }

    /// The entries in use: their MSRs' places in [`SWITCHED`], in list order.
    fn in_use(&self) -> &[usize] {
        self.order.get(..self.count).unwrap_or(&[])
    }

    /// The entry of `msr` in the lists, if it is a switched MSR in them now.
    fn entry(&self, msr: u32) -> Option<usize> {
        *self.entries.get(msr_rules::switched_slot(msr)?)?
    }

    /// Inside a window: the guest's new value of switched MSR `msr`, for the next entry.
    fn set_live(&self, cur: &Current<'_>, msr: u32, v: u64) {
        if let Some(i) = self.entry(msr) {
            self.set(value_word(false, i), v);
            if msr == SPEC_CTRL {
                self.write_counts(cur);
            }
        }
    }
}

/// Reads the TSC.

/// The loop of `KVM_GET_MSRS`/`KVM_SET_MSRS` over the `struct kvm_msrs` at `arg`: `f` handles
/// one entry (filling `data` for a read) and returns false to stop there. Returns how many
/// entries were handled; entries are written back for reads (`write_back`). `E2BIG` for more
/// than KVM's `MAX_IO_MSRS`.
pub(crate) fn for_each_entry(arg: usize, write_back: bool, mut f: impl FnMut(&mut MsrEntry) -> bool) -> Result<isize> {
    let n: u32 = read_user(arg)?;
    if n >= MAX_IO_MSRS {
        return Err(E2BIG);
    }
    let len = (n as usize).saturating_mul(size_of::<MsrEntry>()); // n < MAX_IO_MSRS
    let (mut reader, mut writer) = UserSlice::new(UserPtr::from_addr(user_field(arg, 8)?), len).reader_writer();
    for done in 0..n as isize {
        let mut e: MsrEntry = reader.read()?;
        if !f(&mut e) {
            return Ok(done);
        }
        if write_back {
            writer.write(&e)?;
        }
    }
    Ok(n as isize)
}

/// The guest state an MSR access works on. Inside a window the VMCS and the area's guest list
/// are live; outside, `vmcs` is `None` and everything is in `msrs` and `sregs` (synced).
pub(crate) struct MsrState<'a, 'b> {
    pub(crate) vmcs: Option<&'a Current<'b>>,
    pub(crate) area: &'a MsrArea,
    pub(crate) msrs: &'a mut GuestMsrs,
    pub(crate) sregs: &'a mut crate::vmx::sregs::GuestSregs,
    /// EFER bits the guest's CPUID allows.
    pub(crate) efer_ok: u64,
    /// The guest's CPUID lists RDTSCP or RDPID: it has IA32_TSC_AUX.
    pub(crate) tsc_aux_ok: bool,
    /// The guest's CPUID lists TSC_ADJUST: writes to IA32_TSC_ADJUST count.
    pub(crate) tsc_adjust_ok: bool,
    /// The speculation-control MSRs the guest's CPUID lists.
    pub(crate) speculation: crate::logic::cpuid_table::SpeculationMsrs,
    /// This vCPU's kvmclock MSR and the VM's clock (its wall-clock MSR is VM-wide).
    pub(crate) clock: &'a mut crate::logic::kvmclock::VcpuClock,
    /// This vCPU's steal-time MSR.
    pub(crate) steal: &'a mut crate::logic::steal_time::StealTime,
    pub(crate) vm_clock: &'a crate::cpu::kvmclock::VmClock,
    /// The in-kernel local APIC: IA32_APIC_BASE and the x2APIC MSRs are its.
    pub(crate) apic: Option<&'a mut crate::irq::lapic::LocalApic>,
    /// The VM's quirks and MSR settings.
    pub(crate) vm: crate::logic::kvm_abi::VmSettings,
    /// The guest's CPUID lists SSE3 (IA32_MISC_ENABLE.MWAIT may change).
    pub(crate) sse3: bool,
    /// With `KVM_CAP_ENFORCE_PV_FEATURE_CPUID`, the PV features of the guest's CPUID: its
    /// kvmclock MSRs need theirs.
    pub(crate) pv_features: Option<u32>,
    /// The VM's MSR filter as the vCPU took it (SPEC_CTRL passes through only where it allows).
    pub(crate) filter: Option<&'a crate::cpu::msr_filter::MsrFilter>,
    /// Userspace's access (`KVM_GET/SET_MSRS`), not the guest's.
    pub(crate) host: bool,
}

impl MsrState<'_, '_> {
    /// Whether paravirtual MSR `msr` is missing: `KVM_CAP_ENFORCE_PV_FEATURE_CPUID` is on and the
    /// guest's CPUID lacks its feature (KVM's `guest_pv_has`). The guest then gets #GP;
    /// userspace reads 0 and may write only 0, as KVM treats its accesses to MSRs it lists.
    pub(crate) fn pv_msr_missing(&self, msr: u32) -> bool {
        use crate::logic::kvmclock::feature;
        let needs = match msr {
            KVM_WALL_CLOCK_NEW | KVM_SYSTEM_TIME_NEW => feature::CLOCKSOURCE2,
            KVM_WALL_CLOCK | KVM_SYSTEM_TIME => feature::CLOCKSOURCE,
            KVM_STEAL_TIME => feature::STEAL_TIME,
            _ => return false,
        };
        self.pv_features.is_some_and(|f| f & needs == 0)
    }

    /// The TSC offset, in the VMCS too inside a window; the kvmclock page follows the TSC.
    pub(crate) fn set_tsc_offset(&mut self, offset: u64) {
        self.msrs.tsc_offset = offset;
        self.clock.update = true;
        if let Some(c) = self.vmcs {
            c.write(TSC_OFFSET, offset);
        }
    }

    /// RDMSR; `None` for an MSR the guest does not have (#GP).
    pub(crate) fn read(&self, msr: u32) -> Option<u64> {
        let live = self.vmcs;
        Some(match msr {
            EFER => live.map_or_else(|| self.sregs.get().efer, |c| c.read(GUEST_IA32_EFER)),
            FS_BASE => live.map_or_else(|| self.sregs.get().fs.base, |c| c.read(GUEST_FS_BASE)),
            GS_BASE => live.map_or_else(|| self.sregs.get().gs.base, |c| c.read(GUEST_GS_BASE)),
            TSC => crate::host::x86::rdtsc().wrapping_add(self.msrs.tsc_offset),
            TSC_ADJUST => self.msrs.tsc_adjust,
            APIC_BASE => self.apic.as_ref().map_or(self.sregs.apic_base(), |a| a.apic_base()),
            X2APIC_FIRST..=X2APIC_LAST => self.apic.as_ref()?.msr_read(msr)?,
            // 0 without an in-kernel APIC or outside TSC-deadline mode (KVM).
            TSC_DEADLINE => self.apic.as_ref().map_or(0, |a| a.tsc_deadline()),
            // kvmclock, both MSR pairs (the guest's CPUID counts only with
            // KVM_CAP_ENFORCE_PV_FEATURE_CPUID).
            m if self.pv_msr_missing(m) && !self.host => return None,
            m if self.pv_msr_missing(m) => 0,
            KVM_WALL_CLOCK | KVM_WALL_CLOCK_NEW => self.vm_clock.wall_clock_msr(),
            KVM_SYSTEM_TIME | KVM_SYSTEM_TIME_NEW => self.clock.system_time,
            KVM_STEAL_TIME => self.steal.msr,
            PAT if live.is_some() => live?.read(GUEST_IA32_PAT),
            SYSENTER_CS if live.is_some() => live?.read(GUEST_SYSENTER_CS) as u64,
            SYSENTER_ESP if live.is_some() => live?.read(GUEST_SYSENTER_ESP),
            SYSENTER_EIP if live.is_some() => live?.read(GUEST_SYSENTER_EIP),
            TSC_AUX if !self.host && !self.tsc_aux_ok => return None,
            PLATFORM_INFO if !self.host && !self.vm.platform_info_readable => return None,
            // No debug-control feature is given to guests (KVM without LBR, bus-lock
            // detection or RTM): it reads 0.
            DEBUGCTL => 0,
            ARCH_CAPABILITIES if self.speculation.arch_capabilities => self.msrs.arch_capabilities,
            // The VMM may read what KVM advertises even when the guest's CPUID does not list it.
            ARCH_CAPABILITIES if self.host => 0,
            SPEC_CTRL if !self.host && !self.speculation.spec_ctrl => return None,
            m if msr_rules::switched_slot(m).is_some() => match (self.area.entry(m), live) {
                (Some(i), Some(_)) => self.area.get(value_word(false, i)),
                // Without the host's MSR: TSC_AUX is absent; SPEC_CTRL reads its value, 0
                // (KVM's).
                _ if !self.area.has(m) && m != SPEC_CTRL => return None,
                _ => msr_rules::read(self.msrs, m, self.host)?,
            },
            m => msr_rules::read(self.msrs, m, self.host)?,
        })
    }

    /// WRMSR; `Err(())` for an MSR the guest does not have or an invalid value (#GP).
    pub(crate) fn write(&mut self, msr: u32, v: u64) -> Result<(), ()> {
        let live = self.vmcs;
        match msr {
            EFER => {
                let old = self.read(EFER).ok_or(())?;
                if v & !(vcpu_state::EFER_SUPPORTED & self.efer_ok) != 0 {
                    return Err(());
                }
                // LME cannot change while paging is on; LMA is the processor's.
                let cr0 = live.map_or_else(|| self.sregs.get().cr0, |c| c.read(GUEST_CR0));
                if cr0 & crate::logic::arch::cr0::PG != 0 && (v ^ old) & crate::logic::arch::efer::LME != 0 {
                    return Err(());
                }
                let new = (v & !crate::logic::arch::efer::LMA) | (old & crate::logic::arch::efer::LMA);
                match live {
                    Some(c) => c.write(GUEST_IA32_EFER, new),
                    None => self.sregs.get_mut().efer = new,
                }
            }
            FS_BASE | GS_BASE => {
                if !msr_rules::canonical(v) {
                    return Err(());
                }
                match (live, msr == FS_BASE) {
                    (Some(c), true) => c.write(GUEST_FS_BASE, v),
                    (Some(c), false) => c.write(GUEST_GS_BASE, v),
                    (None, true) => self.sregs.get_mut().fs.base = v,
                    (None, false) => self.sregs.get_mut().gs.base = v,
                }
            }
            // The guest's write moves IA32_TSC_ADJUST by as much as the TSC (KVM, SDM 17.17.3);
            // userspace's is matched with the VM's other vCPUs and leaves TSC_ADJUST alone.
            TSC if self.host => {
                let offset = self.vm_clock.synchronize_tsc(v, &mut self.clock.tsc_generation);
                self.set_tsc_offset(offset);
            }
            TSC => {
                let offset = v.wrapping_sub(crate::host::x86::rdtsc());
                let moved = offset.wrapping_sub(self.msrs.tsc_offset);
                self.msrs.tsc_adjust = self.msrs.tsc_adjust.wrapping_add(moved);
                self.set_tsc_offset(offset);
            }
            // The guest's write moves its TSC by the change; userspace's only restores the
            // value. Without TSC_ADJUST in the guest's CPUID, writes are ignored (KVM).
            TSC_ADJUST if self.tsc_adjust_ok => {
                if !self.host {
                    let moved = v.wrapping_sub(self.msrs.tsc_adjust);
                    self.set_tsc_offset(self.msrs.tsc_offset.wrapping_add(moved));
                }
                self.msrs.tsc_adjust = v;
            }
            TSC_ADJUST => {}
            APIC_BASE if self.apic.is_some() => {
                let a = self.apic.as_mut().ok_or(())?;
                a.set_apic_base(v, self.host)?;
                self.sregs.set_apic_base(a.apic_base());
            }
            // Without it: base (page-aligned, within 48 bits), BSP flag and enable; no x2APIC.
            APIC_BASE if v & !(apic_base::BASE | apic_base::BSP | apic_base::ENABLE) == 0 => self.sregs.set_apic_base(v),
            APIC_BASE => return Err(()),
            X2APIC_FIRST..=X2APIC_LAST => self.apic.as_mut().ok_or(())?.msr_write(msr, v)?,
            // Ignored without an in-kernel APIC (KVM).
            TSC_DEADLINE => {
                let now = crate::host::x86::rdtsc().wrapping_add(self.msrs.tsc_offset);
                if let Some(a) = self.apic.as_mut() {
                    a.set_tsc_deadline(v, now);
                }
            }
            // Any value: the page is written before the guest runs again (and only where
            // guest RAM is, as KVM writes it only where it can map it).
            m if self.pv_msr_missing(m) && (!self.host || v != 0) => return Err(()),
            m if self.pv_msr_missing(m) => {}
            KVM_WALL_CLOCK | KVM_WALL_CLOCK_NEW => {
                self.vm_clock.set_wall_clock_msr(v);
                self.clock.wall_clock = true;
            }
            KVM_SYSTEM_TIME | KVM_SYSTEM_TIME_NEW => self.clock.set_system_time(v),
            // Only where the kernel accounts run delay, and without the reserved bits (KVM);
            // the structure is written before the next entry (run/steal_time.rs).
            KVM_STEAL_TIME => {
                if crate::host::clock::run_delay().is_none() || !crate::logic::steal_time::write_allowed(v) {
                    return Err(());
                }
                self.steal.set_msr(v);
            }
            TSC_AUX if !self.host && !self.tsc_aux_ok => return Err(()),
            // Without KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT the MWAIT bit enables MONITOR/MWAIT
            // and shows in CPUID: only for a guest with SSE3 (KVM), userspace's writes too.
            MISC_ENABLE
                if !self.vm.has_quirk(quirk::MISC_ENABLE_NO_MWAIT)
                    && !self.sse3
                    && (v ^ self.msrs.misc_enable) & msr_rules::MISC_ENABLE_MWAIT != 0 =>
            {
                return Err(())
            }
            // KVM ignores BTF and LBR it does not support and refuses every other bit.
            DEBUGCTL if v & !msr_rules::DEBUGCTL_IGNORED == 0 => {}
            DEBUGCTL => return Err(()),
            // Only the VMM sets it (the value is not checked, as on KVM); 0 is accepted even
            // when the guest's CPUID does not list it.
            ARCH_CAPABILITIES if self.host && self.speculation.arch_capabilities => self.msrs.arch_capabilities = v,
            ARCH_CAPABILITIES if self.host && v == 0 => {}
            ARCH_CAPABILITIES => return Err(()),
            // The guest's speculation controls, switched in at entry: the value must be
            // one this processor takes (KVM tries it on the processor as well).
            SPEC_CTRL if !self.host && !self.speculation.spec_ctrl => return Err(()),
            SPEC_CTRL => {
                if !crate::cpu::mitigations::spec_ctrl_accepts(v) {
                    return Err(());
                }
                msr_rules::write(self.msrs, msr, v, self.host)?;
                if let Some(c) = live {
                    if v != 0 && !self.host && self.filter.is_none_or(|f| f.allows_read_write(SPEC_CTRL)) {
                        self.area.set_spec_ctrl_intercept(false);
                    }
                    self.area.set_live(c, msr, v);
                }
            }
            // Commands the guest may give the processor (KVM passes them through).
            PRED_CMD => {
                let host_has = crate::vmx::operation::Vmx::get().is_some_and(|x| x.mitigations().for_guests().ibpb);
                if msr_rules::pred_cmd(v, self.speculation.pred_cmd, host_has, self.host)? {
                    // SAFETY: IBPB only discards branch predictions; the processor has it.
                    unsafe { crate::host::x86::wrmsr(PRED_CMD, msr_rules::PRED_CMD_IBPB) };
                }
            }
            FLUSH_CMD => {
                let host_has = crate::vmx::operation::Vmx::get().is_some_and(|x| x.mitigations().for_guests().flush_l1d);
                if msr_rules::flush_cmd(v, self.speculation.flush_cmd, host_has, self.host)? {
                    // SAFETY: the L1D flush only writes back and invalidates the L1D; the
                    // processor has it.
                    unsafe { crate::host::x86::wrmsr(FLUSH_CMD, msr_rules::FLUSH_CMD_L1D) };
                }
            }
            m => {
                // Validity and the software copy; then the live place inside a window.
                if msr_rules::switched_slot(m).is_some() && !self.area.has(m) {
                    return Err(());
                }
                msr_rules::write(self.msrs, m, v, self.host)?;
                let Some(c) = live else { return Ok(()) };
                match m {
                    PAT => { c.write(GUEST_IA32_PAT, v); }
                    SYSENTER_CS => { c.write(GUEST_SYSENTER_CS, v as u32); }
                    SYSENTER_ESP => { c.write(GUEST_SYSENTER_ESP, v); }
                    SYSENTER_EIP => { c.write(GUEST_SYSENTER_EIP, v); }
                    _ => self.area.set_live(c, m, v),
                }
            }
        }
        Ok(())
    }
}
