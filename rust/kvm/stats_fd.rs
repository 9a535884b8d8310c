// SPDX-License-Identifier: GPL-2.0

//! `KVM_GET_STATS_FD` on a VM or vCPU fd: a read-only fd with the statistics in KVM's binary
//! format (`logic/binary_stats.rs`), read afresh at each read. It keeps the counters alive
//! after the VM or vCPU fd is closed, as KVM's keeps the VM.

use kernel::{
    prelude::*,
    str::CString,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, ArcBorrow,
    },
    uaccess::UserSliceWriter,
};

use crate::{
    kvm::fd::{self, FdObject},
    logic::binary_stats::{self, VCPU_STATS, VM_STATS},
    run::counters::VcpuStats,
};

/// A vCPU's statistics fd.
pub(crate) struct VcpuStatsFd {
    /// "kvm-PID/vcpu-ID", as KVM's.
    id: CString,
    stats: Arc<VcpuStats>,
}

/// A VM's statistics fd.
pub(crate) struct VmStatsFd {
    /// "kvm-PID", as KVM's.
    id: CString,
    flushes: Arc<Atomic<u64>>,
}

/// A new fd for vCPU `vcpu` of the VM process `pid` created.
pub(crate) fn vcpu_fd(pid: i32, vcpu: u32, stats: Arc<VcpuStats>) -> Result<isize> {
    let id = CString::try_from_fmt(fmt!("kvm-{pid}/vcpu-{vcpu}"))?;
    let obj = Arc::new(VcpuStatsFd { id, stats }, GFP_KERNEL_ACCOUNT)?;
    Ok(fd::install_readonly(obj)? as isize)
}

/// A new fd for the VM process `pid` created, whose flushes `flushes` counts.
pub(crate) fn vm_fd(pid: i32, flushes: Arc<Atomic<u64>>) -> Result<isize> {
    let id = CString::try_from_fmt(fmt!("kvm-{pid}"))?;
    let obj = Arc::new(VmStatsFd { id, flushes }, GFP_KERNEL_ACCOUNT)?;
    Ok(fd::install_readonly(obj)? as isize)
}

/// Copies the file's bytes from `pos` on (as many as `out` takes; 0 past the end).
fn read_file(out: &mut UserSliceWriter, pos: u64, id: &CString, names: &[&str], values: &[u64]) -> Result<usize> {
    let mut file = KVec::from_elem(0u8, binary_stats::file_size(names.len()), GFP_KERNEL)?;
    binary_stats::write_file(&mut file, id.to_str().unwrap_or("kvm"), names, values);
    let rest = usize::try_from(pos).ok().and_then(|p| file.get(p..)).unwrap_or(&[]);
    let part = rest.get(..out.len()).unwrap_or(rest);
    out.write_slice(part)?;
    Ok(part.len())
}

impl FdObject for VcpuStatsFd {
    const NAME: &'static CStr = c"kvm-vcpu-stats";
    const HAS_READ: bool = true;

    fn ioctl(_this: ArcBorrow<'_, Self>, _cmd: u32, _arg: usize) -> Result<isize> {
        Err(ENOTTY)
    }

    fn read(this: ArcBorrow<'_, Self>, out: &mut UserSliceWriter, pos: u64) -> Result<usize> {
        let c = this.stats.snapshot();
        read_file(out, pos, &this.id, &VCPU_STATS.map(|s| s.name), &VCPU_STATS.map(|s| (s.value)(&c)))
    }
}

impl FdObject for VmStatsFd {
    const NAME: &'static CStr = c"kvm-vm-stats";
    const HAS_READ: bool = true;

    fn ioctl(_this: ArcBorrow<'_, Self>, _cmd: u32, _arg: usize) -> Result<isize> {
        Err(ENOTTY)
    }

    fn read(this: ArcBorrow<'_, Self>, out: &mut UserSliceWriter, pos: u64) -> Result<usize> {
        let n = this.flushes.load(Relaxed);
        read_file(out, pos, &this.id, &VM_STATS, &[n, n])
    }
}
