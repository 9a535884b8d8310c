// SPDX-License-Identifier: GPL-2.0

//! KVM's binary statistics (`KVM_GET_STATS_FD`, `Documentation/virt/kvm/api.rst` 4.133): a
//! read-only file per VM and per vCPU holding a header, an id string, one descriptor per
//! statistic and the values, at the offsets the header gives. rvmx offers, under KVM's
//! names, the statistics it counts with KVM's meaning; see [`VCPU_STATS`] and [`VM_STATS`].

use super::{
    kvm_run::exit_reason,
    stats_format::Counters,
    vmx_exit::reason,
};

/// Bytes of the id string and of each descriptor's name (`KVM_STATS_NAME_SIZE`).
pub const NAME_SIZE: usize = 48;
/// `struct kvm_stats_header`.
pub const HEADER_SIZE: usize = 24;
/// `struct kvm_stats_desc` without its name.
pub const DESC_SIZE: usize = 16;

/// `KVM_STATS_TYPE_CUMULATIVE`, `KVM_STATS_UNIT_NONE`, `KVM_STATS_BASE_POW10`: a count that
/// only grows (every statistic rvmx offers).
pub const CUMULATIVE_COUNT: u32 = 0;

/// One statistic: its name and where its value comes from.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    /// KVM's name for it.
    pub name: &'static str,
    /// Its value from a vCPU's counters.
    pub value: fn(&Counters) -> u64,
}

fn by_reason(c: &Counters, r: u16) -> u64 {
    c.by_reason.get(usize::from(r)).copied().unwrap_or(0)
}

fn user_exit(c: &Counters, r: u32) -> u64 {
    c.user_exits.get(r as usize).copied().unwrap_or(0)
}

/// A vCPU's statistics, with KVM's names and meaning (`kvm_vcpu_stat`).
pub const VCPU_STATS: [Stat; 12] = [
    // Every VM exit.
    Stat { name: "exits", value: |c| c.exits },
    // HLT exits (with an in-kernel APIC, each HLT the guest runs).
    Stat { name: "halt_exits", value: |c| by_reason(c, reason::HLT) },
    // Port I/O exits, whoever handles them.
    Stat { name: "io_exits", value: |c| by_reason(c, reason::IO) },
    // MMIO accesses that went to userspace.
    Stat { name: "mmio_exits", value: |c| user_exit(c, exit_reason::MMIO) },
    // Returns to userspace for a signal.
    Stat { name: "signal_exits", value: |c| user_exit(c, exit_reason::INTR) },
    // Returns to userspace for `request_interrupt_window`.
    Stat { name: "request_irq_exits", value: |c| user_exit(c, exit_reason::IRQ_WINDOW_OPEN) },
    // Exits for a host interrupt.
    Stat { name: "irq_exits", value: |c| by_reason(c, reason::EXTERNAL_INTERRUPT) },
    Stat { name: "irq_window_exits", value: |c| by_reason(c, reason::INTERRUPT_WINDOW) },
    Stat { name: "nmi_window_exits", value: |c| by_reason(c, reason::NMI_WINDOW) },
    // VMCALLs.
    Stat { name: "hypercalls", value: |c| by_reason(c, reason::VMCALL) },
    // Halts that polled before sleeping, and those a wake-up ended while polling.
    Stat { name: "halt_attempted_poll", value: |c| c.halt_polls },
    Stat { name: "halt_successful_poll", value: |c| c.halt_poll_wakeups },
];

/// A VM's statistics (`kvm_vm_stat`): flushes of every vCPU's EPT translations, each
/// requested and done at once (KVM counts the requests and the flushes apart).
pub const VM_STATS: [&str; 2] = ["remote_tlb_flush", "remote_tlb_flush_requests"];

/// Where the descriptors start: after the header and the id (the file is header, id,
/// descriptors, values).
pub const fn desc_offset() -> usize {
    HEADER_SIZE + NAME_SIZE
}

/// Where the values start.
pub const fn data_offset(n: usize) -> usize {
    desc_offset().saturating_add(n.saturating_mul(DESC_SIZE + NAME_SIZE))
}

/// The file's size.
pub const fn file_size(n: usize) -> usize {
    data_offset(n).saturating_add(n.saturating_mul(8))
}

/// Writes the file of the statistics `names` with `values` (as many) and id `id` (cut to fit)
/// into `out`, which is [`file_size`] long. Every statistic is one cumulative count.
pub fn write_file(out: &mut [u8], id: &str, names: &[&str], values: &[u64]) {
    let n = names.len().min(values.len());
    let mut w = Writer { out, pos: 0 };
    // struct kvm_stats_header: flags, name_size, num_desc, id_offset, desc_offset, data_offset.
    for v in [0, NAME_SIZE, n, HEADER_SIZE, desc_offset(), data_offset(n)] {
        w.bytes(&(v as u32).to_le_bytes());
    }
    w.name(id);
    for (i, name) in names.iter().take(n).enumerate() {
        // struct kvm_stats_desc: flags, exponent (i16), size (u16, in u64s), offset in the
        // values, bucket_size; then the name.
        w.bytes(&CUMULATIVE_COUNT.to_le_bytes());
        w.bytes(&0i16.to_le_bytes());
        w.bytes(&1u16.to_le_bytes());
        w.bytes(&(i.saturating_mul(8) as u32).to_le_bytes());
        w.bytes(&0u32.to_le_bytes());
        w.name(name);
    }
    for v in values.iter().take(n) {
        w.bytes(&v.to_le_bytes());
    }
}

/// Writes at a cursor, dropping what does not fit (the caller sizes the buffer).
struct Writer<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        let end = self.pos.saturating_add(b.len());
        if let Some(dst) = self.out.get_mut(self.pos..end) {
            dst.copy_from_slice(b);
        }
        self.pos = end;
    }

    /// A NUL-padded name field of [`NAME_SIZE`] bytes (at most `NAME_SIZE - 1` of the name).
    fn name(&mut self, s: &str) {
        let mut field = [0u8; NAME_SIZE];
        let b = s.as_bytes();
        let n = b.len().min(NAME_SIZE - 1);
        if let (Some(dst), Some(src)) = (field.get_mut(..n), b.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.bytes(&field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;
    use kvm_bindings::{kvm_stats_desc, kvm_stats_header};

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    #[test]
    fn layout_matches_kvm() {
        assert_eq!(NAME_SIZE, 48, "KVM_STATS_NAME_SIZE");
        assert_eq!(HEADER_SIZE, size_of::<kvm_stats_header>());
        assert_eq!(DESC_SIZE, size_of::<kvm_stats_desc>());
    }

    #[test]
    fn file_reads_as_the_selftests_read_it() {
        let names: Vec<&str> = VCPU_STATS.iter().map(|s| s.name).collect();
        let mut c = Counters::default();
        c.exits = 7;
        c.by_reason[reason::HLT as usize] = 3;
        let values: Vec<u64> = VCPU_STATS.iter().map(|s| (s.value)(&c)).collect();
        let mut f = vec![0u8; file_size(names.len())];
        write_file(&mut f, "kvm-42/vcpu-1", &names, &values);
        // Header.
        assert_eq!(u32_at(&f, 4), NAME_SIZE as u32);
        let n = u32_at(&f, 8) as usize;
        assert_eq!(n, names.len());
        let (id_off, desc_off, data_off) = (u32_at(&f, 12) as usize, u32_at(&f, 16) as usize, u32_at(&f, 20) as usize);
        assert_eq!(&f[id_off..id_off + 14], b"kvm-42/vcpu-1\0");
        // Find "halt_exits" by name, read its value where its offset says.
        let stride = DESC_SIZE + NAME_SIZE;
        let i = (0..n).find(|i| f[desc_off + i * stride + DESC_SIZE..].starts_with(b"halt_exits\0")).unwrap();
        let d = desc_off + i * stride;
        assert_eq!(u32_at(&f, d), 0, "cumulative count");
        assert_eq!(u16::from_le_bytes([f[d + 6], f[d + 7]]), 1, "one value");
        let off = data_off + u32_at(&f, d + 8) as usize;
        assert_eq!(u64::from_le_bytes(f[off..off + 8].try_into().unwrap()), 3);
        assert_eq!(data_off + n * 8, f.len(), "values end the file");
    }

    #[test]
    fn a_long_id_is_cut_and_stays_terminated() {
        let mut f = vec![0u8; file_size(0)];
        write_file(&mut f, &"x".repeat(100), &[], &[]);
        assert_eq!(f[HEADER_SIZE + NAME_SIZE - 1], 0);
    }
}
