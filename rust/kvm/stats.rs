// SPDX-License-Identifier: GPL-2.0

//! Statistics in debugfs, always on:
//!
//! - `/sys/kernel/debug/rvmx/PID-N/stats`: a VM's counters, summed over its vCPUs (N numbers
//!   the VMs rvmx created since it was loaded);
//! - `/sys/kernel/debug/rvmx/PID-N/vcpuID/stats`: one vCPU's.
//!
//! The text is `logic::stats_format::Counters::write`'s; the counters are run/counters.rs.

use core::{
    ptr,
    sync::atomic::{AtomicPtr, Ordering},
};
use kernel::{
    current,
    debugfs::{Dir, File},
    new_mutex,
    prelude::*,
    str::CString,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, Mutex,
    },
};

use crate::{logic::stats_format::Counters, run::counters::VcpuStats};

/// debugfs' `rvmx` directory, for as long as the module is loaded.
static ROOT: AtomicPtr<Dir> = AtomicPtr::new(ptr::null_mut());

/// Owns debugfs' `rvmx` directory; VMs find it through [`ROOT`].
pub(crate) struct StatsRoot {
    /// `rvmx/mitigations`: the speculative-execution protections and their counts.
    _mitigations: Pin<KBox<File<()>>>,
    _dir: KBox<Dir>,
}

impl StatsRoot {
    pub(crate) fn new() -> Result<Self> {
        let dir = KBox::new(Dir::new(c"rvmx"), GFP_KERNEL)?;
        let mitigations = KBox::pin_init(
            dir.read_callback_file(c"mitigations", (), &|_: &(), f| match crate::vmx::operation::Vmx::get() {
                Some(vmx) => vmx.mitigations().write(f),
                None => Ok(()),
            }),
            GFP_KERNEL,
        )?;
        // The box's contents do not move while `StatsRoot` owns it.
        ROOT.store(ptr::from_ref::<Dir>(&dir).cast_mut(), Ordering::Release);
        Ok(Self { _mitigations: mitigations, _dir: dir })
    }
}

impl Drop for StatsRoot {
    fn drop(&mut self) {
        // No VM is left to read it: VM and vCPU fds hold the module, and the module drops
        // this after `/dev/rvmx` is gone.
        ROOT.store(ptr::null_mut(), Ordering::Release);
    }
}

/// A clone of the root directory (it stays alive while any subdirectory does).
fn root() -> Option<Dir> {
    // SAFETY: null, or the `Dir` owned by the live `StatsRoot`, which clears the pointer
    // before freeing it.
    unsafe { ROOT.load(Ordering::Acquire).as_ref() }.cloned()
}

/// Numbers the VMs' directories (KVM's `PID-FD` names repeat when fds are reused; these not).
static NEXT_VM: Atomic<u64> = Atomic::new(0);

/// One vCPU's debugfs directory and file.
struct VcpuEntry {
    id: u32,
    stats: Arc<VcpuStats>,
    _file: Pin<KBox<File<Arc<VcpuStats>>>>,
    _dir: Dir,
}

/// A VM's debugfs directory: its `stats` file and one directory per vCPU it ever had (as in
/// KVM, a vCPU's numbers stay for the VM's lifetime).
pub(crate) struct VmStats {
    /// The creating thread's id (the binary statistics' id string carries it, as KVM's).
    creator: i32,
    /// Dropped first: no reader of the VM's file is left when the vCPU list goes.
    _file: Pin<KBox<File<Arc<Mutex<KVec<VcpuEntry>>>>>>,
    vcpus: Arc<Mutex<KVec<VcpuEntry>>>,
    dir: Dir,
}

impl VmStats {
    /// The directory of a new VM created by process `pid`.
    pub(crate) fn new(pid: i32) -> Result<Self> {
        let n = NEXT_VM.fetch_add(1, Relaxed);
        let name = CString::try_from_fmt(fmt!("{pid}-{n}"))?;
        let dir = root().ok_or(ENODEV)?.subdir(&name);
        let vcpus = Arc::pin_init(new_mutex!(KVec::new()), GFP_KERNEL_ACCOUNT)?;
        let file = KBox::pin_init(
            dir.read_callback_file(c"stats", vcpus.clone(), &|vcpus: &Arc<Mutex<KVec<VcpuEntry>>>, f| {
                let mut total = Counters::default();
                for v in vcpus.lock().iter() {
                    total.add(&v.stats.snapshot());
                }
                total.write(f)
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        Ok(Self { creator: current!().pid(), _file: file, vcpus, dir })
    }

    /// The creating thread's id.
    pub(crate) fn creator(&self) -> i32 {
        self.creator
    }

    /// The counters of a new vCPU `id`, with its directory.
    pub(crate) fn add_vcpu(&self, id: u32) -> Result<Arc<VcpuStats>> {
        let stats = Arc::new(VcpuStats::new(), GFP_KERNEL_ACCOUNT)?;
        let name = CString::try_from_fmt(fmt!("vcpu{id}"))?;
        let dir = self.dir.subdir(&name);
        let file = KBox::pin_init(
            dir.read_callback_file(c"stats", stats.clone(), &|s: &Arc<VcpuStats>, f| s.snapshot().write(f)),
            GFP_KERNEL_ACCOUNT,
        )?;
        let mut vcpus = self.vcpus.lock();
        vcpus.push(VcpuEntry { id, stats: stats.clone(), _file: file, _dir: dir }, GFP_KERNEL_ACCOUNT)?;
        Ok(stats)
    }

    /// Forgets vCPU `id`, whose creation failed after [`VmStats::add_vcpu`] (its id may be
    /// used again).
    pub(crate) fn remove_vcpu(&self, id: u32) {
        self.vcpus.lock().retain(|v| v.id != id);
    }
}
