// SPDX-License-Identifier: GPL-2.0

//! KVM's MSR filter (`KVM_X86_SET_MSR_FILTER`) and MSR exits to userspace
//! (`KVM_CAP_X86_USER_SPACE_MSR`, `KVM_EXIT_X86_RDMSR/WRMSR`), as `arch/x86/kvm/msrs.c` has
//! them: which guest RDMSR and WRMSR the kernel may handle, and which failures the VMM asked
//! to handle itself.

/// `KVM_MSR_FILTER_READ` / `_WRITE`: which accesses a range filters.
pub const FILTER_READ: u32 = 1 << 0;
/// See [`FILTER_READ`].
pub const FILTER_WRITE: u32 = 1 << 1;
/// `KVM_MSR_FILTER_RANGE_VALID_MASK`.
pub const RANGE_VALID: u32 = FILTER_READ | FILTER_WRITE;
/// `KVM_MSR_FILTER_DEFAULT_DENY`: MSRs no range covers are denied (else allowed).
pub const DEFAULT_DENY: u32 = 1 << 0;
/// `KVM_MSR_FILTER_VALID_MASK`.
pub const FILTER_VALID: u32 = DEFAULT_DENY;
/// `KVM_MSR_FILTER_MAX_RANGES`.
pub const MAX_RANGES: usize = 16;
/// `KVM_MSR_FILTER_MAX_BITMAP_SIZE`: bytes of one range's bitmap.
pub const MAX_BITMAP_BYTES: usize = 0x600;

/// `KVM_MSR_EXIT_REASON_*`: why an access went to userspace, and (as a mask for
/// `KVM_ENABLE_CAP`) which failures userspace wants to see.
pub mod reason {
    /// The MSR exists but refused the access (a #GP on KVM).
    pub const INVAL: u32 = 1 << 0;
    /// The kernel does not know the MSR.
    pub const UNKNOWN: u32 = 1 << 1;
    /// The filter denied the access.
    pub const FILTER: u32 = 1 << 2;
    /// `KVM_MSR_EXIT_REASON_VALID_MASK`.
    pub const VALID: u32 = INVAL | UNKNOWN | FILTER;
}

/// `struct kvm_msr_filter_range`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RangeArg {
    /// [`FILTER_READ`] and/or [`FILTER_WRITE`].
    pub flags: u32,
    /// MSRs covered, from `base`.
    pub nmsrs: u32,
    /// First MSR.
    pub base: u32,
    /// Padding (the pointer's alignment).
    pub pad: u32,
    /// Userspace address of the bitmap: bit set = allowed.
    pub bitmap: u64,
}

/// `struct kvm_msr_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FilterArg {
    /// [`DEFAULT_DENY`] or 0.
    pub flags: u32,
    /// Padding.
    pub pad: u32,
    /// The ranges; those with `nmsrs` 0 are unused.
    pub ranges: [RangeArg; MAX_RANGES],
}
// SAFETY: `repr(C)`, integers only, the padding explicit (sizes tested against kvm-bindings):
// any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for FilterArg {}

/// `KVM_X86_SET_MSR_FILTER`'s checks of the whole filter (KVM's order: flags, then "deny
/// with no range"): whether MSRs outside every range are allowed.
pub fn default_allow(f: &FilterArg) -> Result<bool, ()> {
    if f.flags & !FILTER_VALID != 0 {
        return Err(());
    }
    let allow = f.flags & DEFAULT_DENY == 0;
    if !allow && f.ranges.iter().all(|r| r.nmsrs == 0) {
        return Err(());
    }
    Ok(allow)
}

/// The bytes of range `r`'s bitmap to copy (whole longs, as KVM), `None` for an unused range,
/// `Err` for one KVM refuses (`EINVAL`).
pub fn bitmap_bytes(r: &RangeArg) -> Result<Option<usize>, ()> {
    if r.nmsrs == 0 {
        return Ok(None);
    }
    if r.flags & !RANGE_VALID != 0 || r.flags == 0 {
        return Err(());
    }
    let bytes = (r.nmsrs as usize).div_ceil(64).saturating_mul(8);
    if bytes > MAX_BITMAP_BYTES {
        return Err(());
    }
    Ok(Some(bytes))
}

/// One range of a filter in force.
#[derive(Clone, Debug)]
pub struct Range<B> {
    /// [`FILTER_READ`] and/or [`FILTER_WRITE`].
    pub flags: u32,
    /// First MSR and how many.
    pub base: u32,
    /// See [`Range::base`].
    pub nmsrs: u32,
    /// Bit set = allowed ([`bitmap_bytes`] long).
    pub bitmap: B,
}

/// Whether the guest may `kind` ([`FILTER_READ`] or [`FILTER_WRITE`]) MSR `index` in the
/// kernel (KVM's `kvm_msr_allowed`): the first range covering it for that access decides,
/// else the default. x2APIC MSRs are never filtered.
pub fn allowed<B: core::ops::Deref<Target = [u8]>>(default_allow: bool, ranges: &[Range<B>], index: u32, kind: u32) -> bool {
    if (0x800..=0x8ff).contains(&index) {
        return true;
    }
    for r in ranges {
        // KVM's u32 end wraps: a range past 2^32 then covers nothing.
        let end = r.base.wrapping_add(r.nmsrs);
        if index >= r.base && index < end && r.flags & kind != 0 {
            let bit = index.wrapping_sub(r.base) as usize;
            return r.bitmap.get(bit / 8).is_some_and(|b| b & (1 << (bit % 8)) != 0);
        }
    }
    default_allow
}

/// `kvm_run.msr` (`KVM_EXIT_X86_RDMSR/WRMSR`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MsrExit {
    /// Set by userspace: the access fails (#GP).
    pub error: u8,
    /// Zeroed.
    pub pad: [u8; 7],
    /// [`reason`]: why.
    pub reason: u32,
    /// The MSR.
    pub index: u32,
    /// WRMSR: the value written; RDMSR: userspace puts the value here.
    pub data: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_kvm_bindings() {
        assert_eq!(size_of::<RangeArg>(), size_of::<kvm_bindings::kvm_msr_filter_range>());
        assert_eq!(offset_of!(RangeArg, bitmap), offset_of!(kvm_bindings::kvm_msr_filter_range, bitmap));
        assert_eq!(size_of::<FilterArg>(), size_of::<kvm_bindings::kvm_msr_filter>());
        assert_eq!(offset_of!(FilterArg, ranges), offset_of!(kvm_bindings::kvm_msr_filter, ranges));
        type Msr = kvm_bindings::kvm_run__bindgen_ty_1__bindgen_ty_23;
        assert_eq!(size_of::<MsrExit>(), size_of::<Msr>());
        assert_eq!(offset_of!(MsrExit, reason), offset_of!(Msr, reason));
        assert_eq!(offset_of!(MsrExit, data), offset_of!(Msr, data));
    }

    #[test]
    fn filter_checks_as_kvm() {
        let mut f = FilterArg::default();
        assert_eq!(default_allow(&f), Ok(true));
        f.flags = DEFAULT_DENY;
        assert_eq!(default_allow(&f), Err(()), "deny everything: refused");
        f.ranges[3].nmsrs = 1;
        assert_eq!(default_allow(&f), Ok(false));
        f.flags = 2;
        assert_eq!(default_allow(&f), Err(()));
        let r = RangeArg { flags: FILTER_READ, nmsrs: 65, ..Default::default() };
        assert_eq!(bitmap_bytes(&r), Ok(Some(16)), "whole longs");
        assert_eq!(bitmap_bytes(&RangeArg { flags: 0, ..r }), Err(()));
        assert_eq!(bitmap_bytes(&RangeArg { flags: 4, ..r }), Err(()));
        assert_eq!(bitmap_bytes(&RangeArg { flags: 0, nmsrs: 0, ..r }), Ok(None), "unused: not checked");
        assert_eq!(bitmap_bytes(&RangeArg { nmsrs: 0x600 * 8, ..r }), Ok(Some(0x600)));
        assert_eq!(bitmap_bytes(&RangeArg { nmsrs: 0x600 * 8 + 1, ..r }), Err(()));
    }

    #[test]
    fn lookups() {
        let ranges = [
            Range { flags: FILTER_READ, base: 0xc000_0080, nmsrs: 16, bitmap: vec![0b1111_1110, 0xff] },
            Range { flags: FILTER_WRITE, base: 0, nmsrs: 8, bitmap: vec![0] },
            Range { flags: FILTER_READ | FILTER_WRITE, base: 0xffff_fff0, nmsrs: 0x20, bitmap: vec![0; 8] },
        ];
        assert!(!allowed(true, &ranges, 0xc000_0080, FILTER_READ), "bit 0 clear");
        assert!(allowed(true, &ranges, 0xc000_0081, FILTER_READ));
        assert!(allowed(true, &ranges, 0xc000_0080, FILTER_WRITE), "no write range: the default");
        assert!(!allowed(false, &ranges, 0xc000_0080, FILTER_WRITE));
        assert!(!allowed(true, &ranges, 5, FILTER_WRITE));
        assert!(allowed(false, &ranges, 0x830, FILTER_READ), "x2APIC");
        assert!(allowed(true, &ranges, 0xffff_fff5, FILTER_READ), "a wrapping range covers nothing");
    }
}
