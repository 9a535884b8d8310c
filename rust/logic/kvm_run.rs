// SPDX-License-Identifier: GPL-2.0

//! `struct kvm_run`, the page a vCPU shares with userspace (`<linux/kvm.h>`): its header, the
//! exit structures of the union rvmx fills, and the `KVM_EXIT_*` codes. Pure layout; the
//! module writes the page with volatile accesses (run/kvm_run.rs), the tests hold every
//! offset to kvm-bindings'.

/// `KVM_EXIT_*`: why `KVM_RUN` returned.
#[allow(missing_docs)]
pub mod exit_reason {
    pub const UNKNOWN: u32 = 0;
    pub const IO: u32 = 2;
    pub const DEBUG: u32 = 4;
    pub const HLT: u32 = 5;
    pub const MMIO: u32 = 6;
    pub const IRQ_WINDOW_OPEN: u32 = 7;
    pub const SHUTDOWN: u32 = 8;
    pub const FAIL_ENTRY: u32 = 9;
    pub const INTR: u32 = 10;
    pub const SET_TPR: u32 = 11;
    pub const INTERNAL_ERROR: u32 = 17;
    pub const IOAPIC_EOI: u32 = 26;
    pub const X86_RDMSR: u32 = 29;
    pub const X86_WRMSR: u32 = 30;
}

/// `KVM_INTERNAL_ERROR_*`: the suberror of `KVM_EXIT_INTERNAL_ERROR`.
pub mod internal_error {
    /// The instruction could not be emulated.
    pub const EMULATION: u32 = 1;
    /// An event's delivery (IDT, stack) touched MMIO, which cannot be emulated.
    pub const DELIVERY_EV: u32 = 3;
    /// An exit reason the hypervisor does not handle.
    pub const UNEXPECTED_EXIT_REASON: u32 = 4;
}

/// `KVM_EXIT_IO_IN`: `kvm_run.io.direction` of an IN.
pub const IO_IN: u8 = 0;
/// `KVM_EXIT_IO_OUT`.
pub const IO_OUT: u8 = 1;

/// The fixed part of `struct kvm_run`, up to the exit union.
// Fields named and laid out as in <linux/kvm.h>.
#[allow(missing_docs)]
#[repr(C)]
pub struct Header {
    pub request_interrupt_window: u8,
    pub immediate_exit: u8,
    pub padding1: [u8; 6],
    pub exit_reason: u32,
    pub ready_for_interrupt_injection: u8,
    pub if_flag: u8,
    pub flags: u16,
    pub cr8: u64,
    pub apic_base: u64,
}

/// The header and the 256-byte exit union, as far as rvmx writes the page.
// Fields named and laid out as in <linux/kvm.h>.
#[allow(missing_docs)]
#[repr(C)]
pub struct KvmRun {
    pub header: Header,
    pub exit: [u64; 32],
}

/// `kvm_run.kvm_valid_regs`, `kvm_dirty_regs` and `s.regs` (`KVM_CAP_SYNC_REGS`): register
/// sets `KVM_RUN` copies out at its end (valid) or takes in at its start (dirty), saving the
/// VMM the GET/SET ioctls.
pub mod sync_regs {
    /// `KVM_SYNC_X86_REGS`: `struct kvm_regs`.
    pub const REGS: u64 = 1 << 0;
    /// `KVM_SYNC_X86_SREGS`: `struct kvm_sregs`.
    pub const SREGS: u64 = 1 << 1;
    /// `KVM_SYNC_X86_EVENTS`: `struct kvm_vcpu_events`.
    pub const EVENTS: u64 = 1 << 2;
    /// Every set (the value of `KVM_CAP_SYNC_REGS`); any other bit is `EINVAL`.
    pub const VALID: u64 = REGS | SREGS | EVENTS;
    /// Byte offset of `kvm_valid_regs` in `struct kvm_run`.
    pub const VALID_REGS_OFFSET: usize = 288;
    /// Byte offset of `kvm_dirty_regs`.
    pub const DIRTY_REGS_OFFSET: usize = 296;
    /// Byte offset of `s.regs` (`struct kvm_sync_regs`: regs, sregs, events, back to back).
    pub const REGS_OFFSET: usize = 304;
    /// Byte offset of `s.regs.sregs`.
    pub const SREGS_OFFSET: usize = REGS_OFFSET + core::mem::size_of::<super::super::kvm_abi::Regs>();
    /// Byte offset of `s.regs.events`.
    pub const EVENTS_OFFSET: usize = SREGS_OFFSET + core::mem::size_of::<super::super::kvm_abi::Sregs>();
}

/// `kvm_run.io`: `count` elements of `size` bytes at `data_offset` in the vCPU mapping.
// Fields named and laid out as in <linux/kvm.h>.
#[allow(missing_docs)]
#[repr(C)]
pub struct IoExit {
    pub direction: u8,
    pub size: u8,
    pub port: u16,
    pub count: u32,
    pub data_offset: u64,
}

/// `kvm_run.debug.arch` (x86).
// Fields named and laid out as in <linux/kvm.h>.
#[allow(missing_docs)]
#[repr(C)]
pub struct DebugExit {
    pub exception: u32,
    pub pad: u32,
    pub pc: u64,
    pub dr6: u64,
    pub dr7: u64,
}

/// `kvm_run.mmio`.
// Fields named and laid out as in <linux/kvm.h>.
#[allow(missing_docs)]
#[repr(C)]
pub struct MmioExit {
    pub phys_addr: u64,
    pub data: [u8; 8],
    pub len: u32,
    pub is_write: u8,
}

/// `kvm_run.fail_entry`.
// Fields named and laid out as in <linux/kvm.h>.
#[allow(missing_docs)]
#[repr(C)]
pub struct FailEntryExit {
    pub hardware_entry_failure_reason: u64,
    pub cpu: u32,
}

/// Data words of `kvm_run.internal`.
pub const INTERNAL_DATA_WORDS: usize = 16;

/// `kvm_run.internal`; `kvm_run.emulation_failure` is the same words read differently (see
/// [`emulation_failure`]).
// Fields named and laid out as in <linux/kvm.h>.
#[allow(missing_docs)]
#[repr(C)]
pub struct InternalExit {
    pub suberror: u32,
    pub ndata: u32,
    pub data: [u64; INTERNAL_DATA_WORDS],
}

/// `KVM_INTERNAL_ERROR_EMULATION` as KVM's `prepare_emulation_failure_exit` lays it out in
/// `kvm_run.emulation_failure`: data word 0 the flags, words 1-2 the instruction's length and
/// its first 15 bytes when known, then `data` as far as 16 words go.
pub fn emulation_failure(insn: &[u8], data: &[u64]) -> InternalExit {
    const FLAG_INSTRUCTION_BYTES: u64 = 1;
    let insn = insn.get(..15).unwrap_or(insn);
    let head: &[u64] = &if insn.is_empty() {
        [0; 3]
    } else {
        let mut bytes = [0u8; 16];
        let size = [insn.len() as u8];
        for (d, s) in bytes.iter_mut().zip(size.iter().chain(insn)) {
            *d = *s;
        }
        let lo = bytes.first_chunk::<8>().copied().unwrap_or_default();
        let hi = bytes.last_chunk::<8>().copied().unwrap_or_default();
        [FLAG_INSTRUCTION_BYTES, u64::from_le_bytes(lo), u64::from_le_bytes(hi)]
    };
    let head = head.get(..if insn.is_empty() { 1 } else { 3 }).unwrap_or(head);
    let mut out = InternalExit { suberror: internal_error::EMULATION, ndata: 0, data: [0; INTERNAL_DATA_WORDS] };
    let n = out.data.iter_mut().zip(head.iter().chain(data)).map(|(d, s)| *d = *s).count();
    out.ndata = n as u32;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};
    use kvm_bindings::*;

    #[test]
    fn header_offsets_match_kvm_bindings() {
        assert_eq!(offset_of!(Header, request_interrupt_window), offset_of!(kvm_run, request_interrupt_window));
        assert_eq!(offset_of!(Header, immediate_exit), offset_of!(kvm_run, immediate_exit));
        assert_eq!(offset_of!(Header, exit_reason), offset_of!(kvm_run, exit_reason));
        assert_eq!(
            offset_of!(Header, ready_for_interrupt_injection),
            offset_of!(kvm_run, ready_for_interrupt_injection)
        );
        assert_eq!(offset_of!(Header, if_flag), offset_of!(kvm_run, if_flag));
        assert_eq!(offset_of!(Header, flags), offset_of!(kvm_run, flags));
        assert_eq!(offset_of!(Header, cr8), offset_of!(kvm_run, cr8));
        assert_eq!(offset_of!(Header, apic_base), offset_of!(kvm_run, apic_base));
        assert_eq!(offset_of!(KvmRun, exit), offset_of!(kvm_run, __bindgen_anon_1));
        assert_eq!(size_of::<[u64; 32]>(), 256);
        assert_eq!(offset_of!(KvmRun, exit) + 256, offset_of!(kvm_run, kvm_valid_regs));
    }

    #[test]
    fn sync_regs_layout_matches_kvm_bindings() {
        use sync_regs::*;
        assert_eq!(VALID_REGS_OFFSET, offset_of!(kvm_run, kvm_valid_regs));
        assert_eq!(DIRTY_REGS_OFFSET, offset_of!(kvm_run, kvm_dirty_regs));
        assert_eq!(REGS_OFFSET, offset_of!(kvm_run, s));
        assert_eq!(SREGS_OFFSET - REGS_OFFSET, offset_of!(kvm_sync_regs, sregs));
        assert_eq!(EVENTS_OFFSET - REGS_OFFSET, offset_of!(kvm_sync_regs, events));
        assert_eq!((REGS, SREGS, EVENTS), (KVM_SYNC_X86_REGS as u64, KVM_SYNC_X86_SREGS as u64, KVM_SYNC_X86_EVENTS as u64));
        assert!(EVENTS_OFFSET + size_of::<super::super::events::VcpuEvents>() <= 4096);
    }

    #[test]
    fn exit_layouts_match_kvm_bindings() {
        type Io = kvm_run__bindgen_ty_1__bindgen_ty_4;
        assert_eq!(size_of::<IoExit>(), size_of::<Io>());
        assert_eq!(offset_of!(IoExit, direction), offset_of!(Io, direction));
        assert_eq!(offset_of!(IoExit, size), offset_of!(Io, size));
        assert_eq!(offset_of!(IoExit, port), offset_of!(Io, port));
        assert_eq!(offset_of!(IoExit, count), offset_of!(Io, count));
        assert_eq!(offset_of!(IoExit, data_offset), offset_of!(Io, data_offset));
        assert_eq!(size_of::<DebugExit>(), size_of::<kvm_debug_exit_arch>());
        assert_eq!(offset_of!(DebugExit, exception), offset_of!(kvm_debug_exit_arch, exception));
        assert_eq!(offset_of!(DebugExit, pc), offset_of!(kvm_debug_exit_arch, pc));
        assert_eq!(offset_of!(DebugExit, dr6), offset_of!(kvm_debug_exit_arch, dr6));
        assert_eq!(offset_of!(DebugExit, dr7), offset_of!(kvm_debug_exit_arch, dr7));
        type Mmio = kvm_run__bindgen_ty_1__bindgen_ty_6;
        assert_eq!(size_of::<MmioExit>(), size_of::<Mmio>());
        assert_eq!(offset_of!(MmioExit, phys_addr), offset_of!(Mmio, phys_addr));
        assert_eq!(offset_of!(MmioExit, data), offset_of!(Mmio, data));
        assert_eq!(offset_of!(MmioExit, len), offset_of!(Mmio, len));
        assert_eq!(offset_of!(MmioExit, is_write), offset_of!(Mmio, is_write));
        type Fail = kvm_run__bindgen_ty_1__bindgen_ty_2;
        assert_eq!(size_of::<FailEntryExit>(), size_of::<Fail>());
        assert_eq!(offset_of!(FailEntryExit, cpu), offset_of!(Fail, cpu));
        type Internal = kvm_run__bindgen_ty_1__bindgen_ty_13;
        assert_eq!(size_of::<InternalExit>(), size_of::<Internal>());
        assert_eq!(offset_of!(InternalExit, ndata), offset_of!(Internal, ndata));
        assert_eq!(offset_of!(InternalExit, data), offset_of!(Internal, data));
    }

    #[test]
    fn codes_match_kvm_bindings() {
        use exit_reason::*;
        for (ours, kvm) in [
            (UNKNOWN, KVM_EXIT_UNKNOWN),
            (IO, KVM_EXIT_IO),
            (DEBUG, KVM_EXIT_DEBUG),
            (HLT, KVM_EXIT_HLT),
            (MMIO, KVM_EXIT_MMIO),
            (IRQ_WINDOW_OPEN, KVM_EXIT_IRQ_WINDOW_OPEN),
            (SHUTDOWN, KVM_EXIT_SHUTDOWN),
            (FAIL_ENTRY, KVM_EXIT_FAIL_ENTRY),
            (INTR, KVM_EXIT_INTR),
            (SET_TPR, KVM_EXIT_SET_TPR),
            (INTERNAL_ERROR, KVM_EXIT_INTERNAL_ERROR),
            (internal_error::EMULATION, KVM_INTERNAL_ERROR_EMULATION),
            (internal_error::DELIVERY_EV, KVM_INTERNAL_ERROR_DELIVERY_EV),
            (internal_error::UNEXPECTED_EXIT_REASON, KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON),
        ] {
            assert_eq!(ours, kvm);
        }
        assert_eq!(u32::from(IO_IN), KVM_EXIT_IO_IN);
        assert_eq!(u32::from(IO_OUT), KVM_EXIT_IO_OUT);
    }

    #[test]
    fn emulation_failure_lays_out_flags_bytes_then_data() {
        type Emu = kvm_run__bindgen_ty_1__bindgen_ty_14;
        let e = emulation_failure(&[0x0f, 0x0b], &[7, 8]);
        assert_eq!(e.suberror, KVM_INTERNAL_ERROR_EMULATION);
        assert_eq!(e.ndata, 5);
        // The words land where kvm-bindings' emulation_failure has flags and insn_size.
        let word = |off: usize| (off - offset_of!(InternalExit, data)) / 8;
        assert_eq!(e.data[word(offset_of!(Emu, flags))], KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES as u64);
        assert_eq!(e.data[1] & 0xff, 2); // insn_size
        assert_eq!((e.data[1] >> 8) & 0xffff, 0x0b0f);
        assert_eq!(&e.data[3..5], &[7, 8]);
        let e = emulation_failure(&[], &[1; 20]);
        assert_eq!((e.data[0], e.data[1], e.ndata), (0, 1, 16));
        let e = emulation_failure(&[0x90; 20], &[]);
        assert_eq!((e.data[1] & 0xff, e.data[2] >> 56, e.ndata), (15, 0x90, 3));
    }
}
