// SPDX-License-Identifier: GPL-2.0

//! A VM's MSR filter in force (`KVM_X86_SET_MSR_FILTER`, rules in `logic/msr_filter.rs`):
//! copied from userspace once, then shared read-only by the vCPUs, each of which takes the
//! current one before it enters the guest.

use kernel::{
    prelude::*,
    uaccess::{UserPtr, UserSlice},
};

use crate::logic::msr_filter::{self, FilterArg, Range};

/// A filter: MSRs outside every range follow `default_allow`.
pub(crate) struct MsrFilter {
    default_allow: bool,
    ranges: KVec<Range<KVec<u8>>>,
}

impl MsrFilter {
    /// The filter `arg` describes, its bitmaps copied in, checked as KVM checks it (`EINVAL`,
    /// or `EFAULT` for a bitmap it cannot read, range by range in order).
    pub(crate) fn from_user(arg: &FilterArg) -> Result<Self> {
        let default_allow = msr_filter::default_allow(arg).map_err(|()| EINVAL)?;
        let mut ranges = KVec::new();
        for r in arg.ranges.iter() {
            let Some(bytes) = msr_filter::bitmap_bytes(r).map_err(|()| EINVAL)? else { continue };
            let mut bitmap = KVec::new();
            UserSlice::new(UserPtr::from_addr(r.bitmap as usize), bytes).read_all(&mut bitmap, GFP_KERNEL_ACCOUNT)?;
            ranges.push(Range { flags: r.flags, base: r.base, nmsrs: r.nmsrs, bitmap }, GFP_KERNEL_ACCOUNT)?;
        }
        Ok(Self { default_allow, ranges })
    }

    /// Whether the guest may `kind` (`FILTER_READ`/`FILTER_WRITE`) MSR `index` in the kernel.
    pub(crate) fn allows(&self, index: u32, kind: u32) -> bool {
        msr_filter::allowed(self.default_allow, &self.ranges, index, kind)
    }

    /// Whether the guest may both read and write MSR `index` (what passing it through needs).
    pub(crate) fn allows_read_write(&self, index: u32) -> bool {
        self.allows(index, msr_filter::FILTER_READ) && self.allows(index, msr_filter::FILTER_WRITE)
    }
}
