// SPDX-License-Identifier: GPL-2.0

//! The `struct kvm_run` page and the PIO data page after it, as one `KVM_RUN` writes them.
//! The layout is [`crate::logic::kvm_run`]'s; userspace may write both pages at any time, so
//! every access is volatile and nothing read from them is trusted.

use core::{cell::Cell, mem::offset_of};

use kernel::{
    page::{Page, PAGE_SIZE},
    transmute::FromBytes,
};

use crate::{
    host::mem::page_address,
    logic::{
        events::VcpuEvents,
        kvm_abi::{Regs, Sregs, KVM_PIO_PAGE_OFFSET},
        kvm_run::{self, exit_reason, sync_regs, DebugExit, FailEntryExit, Header, InternalExit, IoExit, MmioExit},
        msr_filter::MsrExit,
    },
};

/// Writes `$value` to field `$field` of the `$ty` at byte `$base` of the page (the field's
/// type is checked against the value's).
macro_rules! put_field {
    ($run:expr, $base:expr, $ty:ty, $field:ident, $value:expr) => {{
        let (base, value): (usize, _) = ($base, $value);
        #[allow(unused)]
        fn same<T>(_: &T, _: &T) {}
        let _typed = |s: &$ty| same(&s.$field, &value);
        $run.put(base.saturating_add(offset_of!($ty, $field)), value)
    }};
}

/// Byte offset of the exit union.
const EXIT: usize = offset_of!(kvm_run::KvmRun, exit);

/// The `kvm_run` page shared with userspace, and the PIO data page after it.
pub(crate) struct KvmRun {
    run: *mut u8,
    pio: *mut u8,
    /// The exit reason this `KVM_RUN` reported, if any (for the statistics).
    reason: Cell<Option<u32>>,
}

impl KvmRun {
    pub(crate) fn new(run: &Page, pio: &Page) -> Self {
        Self { run: page_address(run), pio: page_address(pio), reason: Cell::new(None) }
    }

    /// Writes `value` at byte `offset` (a field's: aligned for `T`); an offset outside the
    /// page or misaligned is a bug in the caller and writes nothing.
    fn put<T: Copy>(&self, offset: usize, value: T) {
        if offset.saturating_add(size_of::<T>()) <= PAGE_SIZE && offset.checked_rem(align_of::<T>()) == Some(0) {
            // SAFETY: inside the kvm_run page and aligned (checked above); the vCPU owns the
            // page for as long as `self` is used (one KVM_RUN).
            unsafe { self.run.add(offset).cast::<T>().write_volatile(value) }
        }
    }

    /// Reads the value at byte `offset` (a field's: aligned for `T`); 0 outside the page.
    fn get<T: FromBytes + Default>(&self, offset: usize) -> T {
        self.copy_out(offset).unwrap_or_default()
    }

    fn get_u8(&self, offset: usize) -> u8 {
        self.get(offset)
    }

    /// Copies the `T` at byte `offset` out of the page in one go: userspace may change the
    /// page meanwhile, and only this copy is checked and used. `None` outside the page.
    fn copy_out<T: FromBytes>(&self, offset: usize) -> Option<T> {
        if offset.saturating_add(size_of::<T>()) > PAGE_SIZE || offset.checked_rem(align_of::<T>()) != Some(0) {
            return None;
        }
        // SAFETY: inside the kvm_run page and aligned (checked above), as in `put`; `T` is
        // `FromBytes`, so whatever bytes userspace left there are a valid `T`.
        Some(unsafe { self.run.add(offset).cast::<T>().read_volatile() })
    }

    /// `kvm_valid_regs` and `kvm_dirty_regs` (`KVM_CAP_SYNC_REGS`).
    pub(crate) fn sync_masks(&self) -> (u64, u64) {
        (self.get(sync_regs::VALID_REGS_OFFSET), self.get(sync_regs::DIRTY_REGS_OFFSET))
    }

    /// Clears `set` in `kvm_dirty_regs` once it is taken in, as KVM does.
    pub(crate) fn clear_dirty(&self, set: u64) {
        let dirty: u64 = self.get(sync_regs::DIRTY_REGS_OFFSET);
        self.put(sync_regs::DIRTY_REGS_OFFSET, dirty & !set);
    }

    /// `s.regs.regs`, `s.regs.sregs`, `s.regs.events` as userspace left them.
    pub(crate) fn synced_regs(&self) -> Option<Regs> {
        self.copy_out(sync_regs::REGS_OFFSET)
    }

    /// See [`KvmRun::synced_regs`].
    pub(crate) fn synced_sregs(&self) -> Option<Sregs> {
        self.copy_out(sync_regs::SREGS_OFFSET)
    }

    /// See [`KvmRun::synced_regs`].
    pub(crate) fn synced_events(&self) -> Option<VcpuEvents> {
        self.copy_out(sync_regs::EVENTS_OFFSET)
    }

    /// Stores the register sets for userspace (`s.regs`).
    pub(crate) fn put_synced_regs(&self, regs: Regs) {
        self.put(sync_regs::REGS_OFFSET, regs);
    }

    /// See [`KvmRun::put_synced_regs`].
    pub(crate) fn put_synced_sregs(&self, sregs: Sregs) {
        self.put(sync_regs::SREGS_OFFSET, sregs);
    }

    /// See [`KvmRun::put_synced_regs`].
    pub(crate) fn put_synced_events(&self, events: VcpuEvents) {
        self.put(sync_regs::EVENTS_OFFSET, events);
    }

    /// `kvm_run.cr8`: the TPR userspace gives the guest for this run.
    pub(crate) fn cr8(&self) -> u64 {
        self.get(offset_of!(Header, cr8))
    }

    pub(crate) fn immediate_exit(&self) -> bool {
        self.get_u8(offset_of!(Header, immediate_exit)) != 0
    }

    /// `request_interrupt_window`: userspace wants `KVM_EXIT_IRQ_WINDOW_OPEN` as soon as the
    /// guest can take an interrupt.
    pub(crate) fn request_interrupt_window(&self) -> bool {
        self.get_u8(offset_of!(Header, request_interrupt_window)) != 0
    }

    /// The fields KVM fills on every return from `KVM_RUN` (`post_kvm_run_save`).
    pub(crate) fn post_run(&self, ready_for_interrupt: bool, if_flag: bool, cr8: u64, apic_base: u64, in_smm: bool) {
        put_field!(self, 0, Header, ready_for_interrupt_injection, ready_for_interrupt as u8);
        put_field!(self, 0, Header, if_flag, if_flag as u8);
        put_field!(self, 0, Header, flags, if in_smm { crate::logic::smm::KVM_RUN_X86_SMM } else { 0 });
        put_field!(self, 0, Header, cr8, cr8);
        put_field!(self, 0, Header, apic_base, apic_base);
    }

    /// The exit reason this `KVM_RUN` reported, if any.
    pub(crate) fn reason(&self) -> Option<u32> {
        self.reason.get()
    }

    pub(crate) fn set_exit_reason(&self, reason: u32) {
        self.reason.set(Some(reason));
        put_field!(self, 0, Header, exit_reason, reason);
    }

    /// `KVM_EXIT_IO`: direction, size, port, count; the data is at the PIO page.
    pub(crate) fn io(&self, input: bool, size: u8, port: u16, count: u32) {
        self.set_exit_reason(exit_reason::IO);
        put_field!(self, EXIT, IoExit, direction, if input { kvm_run::IO_IN } else { kvm_run::IO_OUT });
        put_field!(self, EXIT, IoExit, size, size);
        put_field!(self, EXIT, IoExit, port, port);
        put_field!(self, EXIT, IoExit, count, count);
        put_field!(self, EXIT, IoExit, data_offset, (KVM_PIO_PAGE_OFFSET * PAGE_SIZE) as u64);
    }

    /// `KVM_EXIT_X86_RDMSR`/`WRMSR`: the guest's access to MSR `index` (of `data`), which the
    /// kernel did not do for `reason` (`logic::msr_filter::reason`).
    pub(crate) fn msr(&self, write: bool, reason: u32, index: u32, data: u64) {
        self.set_exit_reason(if write { exit_reason::X86_WRMSR } else { exit_reason::X86_RDMSR });
        put_field!(self, EXIT, MsrExit, error, 0u8);
        put_field!(self, EXIT, MsrExit, pad, [0u8; 7]);
        put_field!(self, EXIT, MsrExit, reason, reason);
        put_field!(self, EXIT, MsrExit, index, index);
        put_field!(self, EXIT, MsrExit, data, data);
    }

    /// Userspace's answer to an MSR exit: whether the access fails, and a read's value.
    pub(crate) fn msr_reply(&self) -> (bool, u64) {
        (self.get_u8(EXIT.saturating_add(offset_of!(MsrExit, error))) != 0, self.get(EXIT.saturating_add(offset_of!(MsrExit, data))))
    }

    /// `KVM_EXIT_IOAPIC_EOI`: the guest's EOI of `vector`, for a userspace IOAPIC.
    pub(crate) fn ioapic_eoi(&self, vector: u8) {
        self.set_exit_reason(exit_reason::IOAPIC_EOI);
        self.put(EXIT, vector);
    }

    /// `KVM_EXIT_DEBUG`: `exception` (1 or 3) at linear address `pc`; DR6 and DR7 for #DB.
    pub(crate) fn debug(&self, exception: u32, pc: u64, dr6: u64, dr7: u64) {
        self.set_exit_reason(exit_reason::DEBUG);
        put_field!(self, EXIT, DebugExit, exception, exception);
        put_field!(self, EXIT, DebugExit, pc, pc);
        put_field!(self, EXIT, DebugExit, dr6, dr6);
        put_field!(self, EXIT, DebugExit, dr7, dr7);
    }

    /// `KVM_EXIT_FAIL_ENTRY` with the hardware's reason and the CPU.
    pub(crate) fn fail_entry(&self, reason: u64, cpu: u32) {
        self.set_exit_reason(exit_reason::FAIL_ENTRY);
        put_field!(self, EXIT, FailEntryExit, hardware_entry_failure_reason, reason);
        put_field!(self, EXIT, FailEntryExit, cpu, cpu);
    }

    /// `KVM_EXIT_INTERNAL_ERROR` with a suberror and up to 16 data words.
    pub(crate) fn internal_error(&self, suberror: u32, data: &[u64]) {
        let mut e = InternalExit { suberror, ndata: 0, data: [0; kvm_run::INTERNAL_DATA_WORDS] };
        e.ndata = e.data.iter_mut().zip(data).map(|(d, s)| *d = *s).count() as u32;
        self.internal(&e);
    }

    /// `KVM_EXIT_INTERNAL_ERROR` for an instruction that could not be emulated, laid out as
    /// KVM's `emulation_failure` ([`kvm_run::emulation_failure`]).
    pub(crate) fn emulation_failure(&self, insn: &[u8], data: &[u64]) {
        self.internal(&kvm_run::emulation_failure(insn, data));
    }

    /// Writes `e`'s suberror, count and its `ndata` words (the rest of the page is left alone,
    /// as KVM does).
    fn internal(&self, e: &InternalExit) {
        self.set_exit_reason(exit_reason::INTERNAL_ERROR);
        put_field!(self, EXIT, InternalExit, suberror, e.suberror);
        put_field!(self, EXIT, InternalExit, ndata, e.ndata);
        let data = EXIT.saturating_add(offset_of!(InternalExit, data));
        for (i, d) in e.data.iter().take(e.ndata as usize).enumerate() {
            self.put(data.saturating_add(i.saturating_mul(8)), *d);
        }
    }

    /// `KVM_EXIT_MMIO`: a `data.len()`-byte access at `gpa` (`data` is what a write stores);
    /// only those bytes of `mmio.data` are written.
    pub(crate) fn mmio(&self, gpa: u64, data: &[u8], is_write: bool) {
        self.set_exit_reason(exit_reason::MMIO);
        put_field!(self, EXIT, MmioExit, phys_addr, gpa);
        let bytes = EXIT.saturating_add(offset_of!(MmioExit, data));
        for (i, b) in data.iter().enumerate().take(8) {
            self.put(bytes.saturating_add(i), *b);
        }
        put_field!(self, EXIT, MmioExit, len, data.len() as u32);
        put_field!(self, EXIT, MmioExit, is_write, is_write as u8);
    }

    /// The first `len` bytes userspace left in `kvm_run.mmio.data` for a read.
    pub(crate) fn mmio_data(&self, len: u8) -> u64 {
        let bytes = EXIT.saturating_add(offset_of!(MmioExit, data));
        let mut b = [0u8; 8];
        for (i, v) in b.iter_mut().enumerate().take(len.into()) {
            *v = self.get_u8(bytes.saturating_add(i));
        }
        u64::from_le_bytes(b)
    }

    /// Copies the start of the PIO page (INS data userspace left there) into `buf`.
    pub(crate) fn read_pio_data(&self, buf: &mut [u8]) {
        for (i, v) in buf.iter_mut().enumerate().take(PAGE_SIZE) {
            // SAFETY: inside the PIO page (i < PAGE_SIZE), as in `put`.
            *v = unsafe { self.pio.add(i).read_volatile() };
        }
    }

    pub(crate) fn write_pio_data(&self, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate().take(PAGE_SIZE) {
            // SAFETY: inside the PIO page (i < PAGE_SIZE), as in `put`.
            unsafe { self.pio.add(i).write_volatile(*b) };
        }
    }
}
