//! A vCPU's count of VM exits, read from its binary statistics (`KVM_GET_STATS_FD`, the
//! counter KVM calls "exits"): idle.rs's proof that a vCPU seen stopped twice did not run in
//! between (a guest that runs and halts again leaves at least its HLT's exit).

use std::{
    fs::File,
    os::fd::{AsRawFd, FromRawFd},
    os::unix::fs::FileExt,
};

use kvm_ioctls::VcpuFd;
use rvmx_logic::kvm_abi::KVM_GET_STATS_FD;

use crate::error::{Error, Result};

/// `struct kvm_stats_header` and `struct kvm_stats_desc` (without its name), in bytes.
const HEADER_LEN: usize = 24;
const DESC_LEN: usize = 16;
/// The statistic, by its KVM name.
const NAME: &[u8] = b"exits";

/// A vCPU's "exits" counter.
pub struct ExitCount {
    stats: File,
    /// Where the counter is in the stats file.
    at: u64,
}

/// The little-endian `u32` at `at` in `b` (0 past its end).
fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
}

impl ExitCount {
    /// The counter of `vcpu`.
    pub fn new(vcpu: &VcpuFd) -> Result<Self> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd or -1.
        let fd = unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_GET_STATS_FD.into()) };
        if fd < 0 {
            return Err(Error::Os("KVM_GET_STATS_FD", std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let stats = unsafe { File::from_raw_fd(fd) };
        let read = |len: usize, at: u64| -> Result<Vec<u8>> {
            let mut b = vec![0; len];
            stats.read_exact_at(&mut b, at).map_err(|e| Error::Os("reading the vCPU's statistics", e))?;
            Ok(b)
        };
        let h = read(HEADER_LEN, 0)?;
        let (name_size, num_desc, desc_offset, data_offset) = (u32_at(&h, 4), u32_at(&h, 8), u32_at(&h, 16), u32_at(&h, 20));
        let stride = DESC_LEN + name_size as usize;
        let descs = read(stride * num_desc as usize, desc_offset.into())?;
        let offset = descs
            .chunks_exact(stride)
            .find(|d| d[DESC_LEN..].split(|&c| c == 0).next() == Some(NAME))
            .map(|d| u32_at(d, 8))
            .ok_or_else(|| Error::Os("the vCPU's statistics", std::io::Error::other("no \"exits\" counter")))?;
        Ok(ExitCount { stats, at: u64::from(data_offset) + u64::from(offset) })
    }

    /// The exits so far.
    pub fn read(&self) -> Result<u64> {
        let mut b = [0u8; 8];
        self.stats.read_exact_at(&mut b, self.at).map_err(|e| Error::Os("reading the vCPU's statistics", e))?;
        Ok(u64::from_le_bytes(b))
    }
}
