// SPDX-License-Identifier: GPL-2.0

//! The guest's extended processor state (x87, SSE, AVX, AVX-512): the XSAVE image a vCPU
//! keeps between windows, laid out exactly as KVM's 4 KiB `struct kvm_xsave` (standard, not
//! compacted, format), and the rules for the guest's XCR0 (`XSETBV`, `KVM_SET_XCRS`).
//! Pure logic, host-tested.

/// Size of the image (`struct kvm_xsave`).
pub const AREA_SIZE: usize = 4096;
/// The legacy (FXSAVE) region at the start of the image.
pub const LEGACY_SIZE: usize = 512;
/// Offset of the XSAVE header's XSTATE_BV (which components the image holds).
const XSTATE_BV: usize = 512;
/// Offset of XCOMP_BV; zero in the standard format, which is the only one accepted.
const XCOMP_BV: usize = 520;
/// End of the XSAVE header: the legacy region and the header, all a bare image needs.
pub const MIN_SIZE: u32 = 576;
/// Offset of MXCSR in the legacy region.
const MXCSR: usize = 24;

/// XCR0 state components (SDM vol. 1, 13.1).
pub mod xfeature {
    /// x87 state (always enabled).
    pub const X87: u64 = 1 << 0;
    /// SSE: XMM registers and MXCSR.
    pub const SSE: u64 = 1 << 1;
    /// AVX: upper halves of YMM0-15.
    pub const YMM: u64 = 1 << 2;
    /// AVX-512: opmask registers, upper halves of ZMM0-15, ZMM16-31 (all three or none).
    pub const AVX512: u64 = 0b111 << 5;
}

/// The components rvmx switches for a guest when the host enables them. MPX (deprecated),
/// PKRU (switched by KVM outside XSAVE, needs CR4.PKE which guests do not get) and AMX
/// (larger than `kvm_xsave`; needs XFD) never reach a guest's XCR0.
pub const SWITCHED: u64 = xfeature::X87 | xfeature::SSE | xfeature::YMM | xfeature::AVX512;

/// The XCR0 values a guest may set: the components its CPUID leaf 0xD.0 lists (`eax`,
/// `edx`) that rvmx switches on this host (`features`), and x87 always (KVM's
/// `guest_supported_xcr0 | XFEATURE_MASK_FP`).
pub const fn guest_allowed(leaf_d_eax: u32, leaf_d_edx: u32, features: u64) -> u64 {
    ((leaf_d_edx as u64) << 32 | leaf_d_eax as u64) & features | xfeature::X87
}

/// Whether XCR0 may be `v` given the `allowed` components (SDM vol. 2, XSETBV; KVM's
/// `__kvm_set_xcr`): x87 on, AVX only with SSE, AVX-512 all together and only with AVX.
pub const fn xcr0_valid(v: u64, allowed: u64) -> bool {
    use xfeature::*;
    if v & !allowed != 0 || v & X87 == 0 || (v & YMM != 0 && v & SSE == 0) {
        return false;
    }
    v & AVX512 == 0 || (v & AVX512 == AVX512 && v & YMM != 0)
}

/// The standard-format size of an image with the components in `xcr0`, as CPUID 0xD.0 EBX
/// reports it: the end of the highest enabled component. `component(i)` is the host's CPUID
/// 0xD.i as `(size, offset)`: like KVM, rvmx never takes these sizes from userspace's table
/// (a size and offset that overflow would otherwise reach this sum); saturating all the same.
pub fn size_for(xcr0: u64, component: impl Fn(u32) -> (u32, u32)) -> u32 {
    components(xcr0)
        .map(|i| {
            let (size, offset) = component(i);
            offset.saturating_add(size)
        })
        .fold(MIN_SIZE, u32::max)
}

/// The extended components (2 and up) `xcr0` enables, in order.
fn components(xcr0: u64) -> impl Iterator<Item = u32> {
    let mut bits = xcr0 & !(xfeature::X87 | xfeature::SSE) & !(1 << 63);
    core::iter::from_fn(move || {
        let i = bits.trailing_zeros();
        bits &= bits.wrapping_sub(1);
        (i < 63).then_some(i)
    })
}

/// The compacted-format size of an image with the components in `xcr0` (XSAVEC/XSAVES), as
/// CPUID 0xD.1 EBX reports it (KVM's `xstate_required_size(.., true)`): the header, then each
/// enabled component in order, 64-byte aligned where the host says so. `component(i)` is the
/// host's CPUID 0xD.i as `(size, aligned)`.
pub fn compacted_size_for(xcr0: u64, component: impl Fn(u32) -> (u32, bool)) -> u32 {
    components(xcr0).fold(MIN_SIZE, |end, i| {
        let (size, aligned) = component(i);
        let start = if aligned { end.saturating_add(63) & !63 } else { end };
        start.saturating_add(size).max(end)
    })
}

/// The image a vCPU starts with: x87 and SSE at their reset values (FCW 0x37f, MXCSR
/// 0x1f80), every other component in its initial state.
pub fn reset(a: &mut [u8; AREA_SIZE]) {
    a.fill(0);
    a[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
    a[MXCSR..MXCSR + 4].copy_from_slice(&0x1f80u32.to_le_bytes());
    set_xstate_bv(a, xfeature::X87 | xfeature::SSE);
}

/// Which components the image holds (the rest are in their initial state).
pub fn xstate_bv(a: &[u8; AREA_SIZE]) -> u64 {
    u64::from_le_bytes(super::kvm_abi::le_bytes(a, XSTATE_BV))
}

fn set_xstate_bv(a: &mut [u8; AREA_SIZE], v: u64) {
    a[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&v.to_le_bytes());
}

/// After the legacy region was written (`KVM_SET_FPU`): x87 and SSE come from it.
pub fn legacy_written(a: &mut [u8; AREA_SIZE]) {
    set_xstate_bv(a, xstate_bv(a) | xfeature::X87 | xfeature::SSE);
}

/// Whether XRSTOR can load `a` with the host's `features` without faulting: the header
/// names only switched components, is in standard format with its reserved bytes zero, and
/// MXCSR has no reserved bit set (`mxcsr_mask`, from FXSAVE). KVM refuses the same images
/// with EINVAL in `KVM_SET_XSAVE`.
pub fn loadable(a: &[u8; AREA_SIZE], features: u64, mxcsr_mask: u32) -> bool {
    let mxcsr = u32::from_le_bytes(super::kvm_abi::le_bytes(a, MXCSR));
    xstate_bv(a) & !features == 0
        && a.get(XCOMP_BV..MIN_SIZE as usize).is_some_and(|r| r.iter().all(|b| *b == 0))
        && mxcsr & !mxcsr_mask == 0
}

#[cfg(test)]
mod tests {
    use super::{xfeature::*, *};

    #[test]
    fn xcr0_rules() {
        let all = X87 | SSE | YMM | AVX512;
        assert!(xcr0_valid(X87, all));
        assert!(xcr0_valid(X87 | SSE, all));
        assert!(xcr0_valid(X87 | SSE | YMM, all));
        assert!(xcr0_valid(all, all));
        assert!(!xcr0_valid(0, all), "x87 must stay on");
        assert!(!xcr0_valid(SSE, all));
        assert!(!xcr0_valid(X87 | YMM, all), "AVX without SSE");
        assert!(!xcr0_valid(X87 | SSE | YMM | 1 << 5, all), "part of AVX-512");
        assert!(!xcr0_valid(X87 | SSE | AVX512, all), "AVX-512 without AVX");
        assert!(!xcr0_valid(X87 | SSE | YMM, X87 | SSE), "not allowed");
    }

    #[test]
    fn allowed_follows_cpuid_and_host() {
        assert_eq!(guest_allowed(0, 0, SWITCHED), X87);
        assert_eq!(guest_allowed(0x7, 0, X87 | SSE), X87 | SSE);
        assert_eq!(guest_allowed(0x2ff, 0, SWITCHED), SWITCHED);
        assert_eq!(guest_allowed(0x7, 1, SWITCHED), X87 | SSE | YMM);
    }

    #[test]
    fn sizes() {
        // Sandy Bridge: AVX 256 bytes at 576; AVX-512 at 1088/1152/1664 (Skylake-X).
        let comp = |i| match i {
            2 => (256, 576),
            5 => (64, 1088),
            6 => (512, 1152),
            7 => (1024, 1664),
            _ => (0, 0),
        };
        assert_eq!(size_for(X87 | SSE, comp), 576);
        assert_eq!(size_for(X87 | SSE | YMM, comp), 832);
        assert_eq!(size_for(X87 | SSE | YMM | AVX512, comp), 2688);
        assert_eq!(size_for(X87 | YMM, |_| (u32::MAX, u32::MAX)), u32::MAX, "saturates");
        let compacted = |i| match i {
            2 => (256, false),
            5 => (64, true),
            6 => (512, true),
            7 => (1024, true),
            _ => (0, false),
        };
        assert_eq!(compacted_size_for(X87 | SSE, compacted), 576);
        assert_eq!(compacted_size_for(X87 | SSE | YMM, compacted), 832);
        assert_eq!(compacted_size_for(X87 | SSE | AVX512, compacted), 576 + 64 + 512 + 1024);
        assert_eq!(compacted_size_for(X87 | SSE | YMM | 1 << 5, compacted), 896, "aligned after AVX");
    }

    #[test]
    fn images() {
        let mut a = [0xffu8; AREA_SIZE];
        reset(&mut a);
        assert_eq!(xstate_bv(&a), X87 | SSE);
        assert!(loadable(&a, X87 | SSE, 0xffff));
        assert!(!loadable(&a, X87, 0xffff), "SSE not switched");
        a[MXCSR + 2] = 1;
        assert!(!loadable(&a, X87 | SSE, 0xffff), "reserved MXCSR bit");
        reset(&mut a);
        a[XCOMP_BV + 7] = 0x80;
        assert!(!loadable(&a, X87 | SSE, 0xffff), "compacted format");
        reset(&mut a);
        set_xstate_bv(&mut a, 0);
        legacy_written(&mut a);
        assert_eq!(xstate_bv(&a), X87 | SSE);
    }
}
