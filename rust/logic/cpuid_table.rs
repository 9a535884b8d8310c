// SPDX-License-Identifier: GPL-2.0

//! CPUID for guests: the table `KVM_GET_SUPPORTED_CPUID` offers (the host's CPUID filtered to
//! what rvmx really gives a guest) and the lookup a CPUID exit does in a vCPU's table
//! (`KVM_SET_CPUID2`). Pure logic, host-tested.

/// `struct kvm_cpuid_entry2`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct CpuidEntry {
    pub function: u32,
    pub index: u32,
    pub flags: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
    pub padding: [u32; 3],
}
// SAFETY: `repr(C)` with only `u32` fields (its size is <linux/kvm.h>'s, tested against kvm-bindings): no
// uninitialized bytes, and any bit pattern is a valid value.
#[cfg(MODULE)]
unsafe impl kernel::transmute::FromBytes for CpuidEntry {}
// SAFETY: as for `FromBytes`: every byte of a `CpuidEntry` is an initialized field.
#[cfg(MODULE)]
unsafe impl kernel::transmute::AsBytes for CpuidEntry {}

/// `kvm_cpuid_entry2.flags`: the entry depends on the subleaf in ECX.
pub const FLAG_SIGNIFICANT_INDEX: u32 = 1;
/// Entries per table (KVM's `KVM_MAX_CPUID_ENTRIES`).
pub const MAX_ENTRIES: usize = 256;

/// Leaf 1 ECX bits a guest gets (SDM vol. 2A, table 3-10): SSE3, PCLMULQDQ, SSSE3, CX16,
/// SSE4.1, SSE4.2, MOVBE, POPCNT, AES, RDRAND. Not VMX/SMX (no nested
/// VMX), not MONITOR (MWAIT is not handled), not x2APIC or TSC-deadline (no in-kernel APIC).
/// XSAVE and the AVX family follow the XSAVE state rvmx switches ([`LEAF1_ECX_XSAVE`],
/// [`LEAF1_ECX_AVX`]); OSXSAVE follows the guest's CR4.
pub const LEAF1_ECX: u32 = 1 << 0 | 1 << 1 | 1 << 9 | 1 << 13 | 1 << 19 | 1 << 20 | 1 << 22
    | 1 << 23 | 1 << 25 | 1 << 30;
/// Leaf 1 ECX bit 31: the CPU is a virtual machine's. Always given, as KVM does, whatever the
/// host's own bit says: guests then leave host-only features alone (microcode loading, uncore
/// and power-management MSRs).
pub const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 ECX XSAVE: given when rvmx switches XSAVE state.
pub const LEAF1_ECX_XSAVE: u32 = 1 << 26;
/// Leaf 1 ECX AVX, FMA, F16C: given when the AVX state (YMM) is switched.
pub const LEAF1_ECX_AVX: u32 = 1 << 28 | 1 << 12 | 1 << 29;
/// Leaf 7.0 EBX AVX2: given with AVX.
pub const LEAF7_EBX_AVX: u32 = 1 << 5;
/// Leaf 7.0 EBX AVX512F, DQ, IFMA, CD, BW, VL: given when the AVX-512 state is switched.
pub const LEAF7_EBX_AVX512: u32 = 1 << 16 | 1 << 17 | 1 << 21 | 1 << 28 | 1 << 30 | 1 << 31;
/// Leaf 0xD.1 EAX: XSAVEOPT (XSAVEC/XSAVES need IA32_XSS and compacted sizes: not given).
pub const LEAFD1_EAX: u32 = 1 << 0;
/// Leaf 0xD.1 EAX XSAVEC, XSAVES: a table that lists either gets the compacted size in EBX.
pub const LEAFD1_EAX_COMPACTED: u32 = 1 << 1 | 1 << 3;
/// Leaf 1 EDX bits a guest gets: FPU, VME, DE, PSE, TSC, MSR, PAE, CX8, APIC (emulated by
/// userspace), SEP, PGE, CMOV, PAT, PSE36, CLFSH, MMX, FXSR, SSE, SSE2. Not MCE/MCA or MTRR
/// (their MSRs are not emulated yet), not HTT/SS/TM/PBE/ACPI/DS.
pub const LEAF1_EDX: u32 = 1 << 0 | 1 << 1 | 1 << 2 | 1 << 3 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 8
    | 1 << 9 | 1 << 11 | 1 << 13 | 1 << 15 | 1 << 16 | 1 << 17 | 1 << 19 | 1 << 23 | 1 << 24
    | 1 << 25 | 1 << 26;
/// Leaf 7.0 EBX bits: FSGSBASE, BMI1, SMEP, BMI2, ERMS, INVPCID, RDSEED, ADX, SMAP,
/// CLFLUSHOPT, SHA. INVPCID only where the CPU lets VMX enable it (see [`supported`]).
pub const LEAF7_EBX: u32 = 1 << 0 | 1 << 3 | 1 << 7 | 1 << 8 | 1 << 9 | 1 << 10 | 1 << 18 | 1 << 19
    | 1 << 20 | 1 << 23 | 1 << 29;
/// Leaf 1 ECX PCID (not offered; a VMM may list it, and CR4.PCIDE then works in the hardware).
pub const LEAF1_ECX_PCID: u32 = 1 << 17;
/// Leaf 1 ECX x2APIC (the in-kernel local APIC's x2APIC mode).
pub const LEAF1_ECX_X2APIC: u32 = 1 << 21;
/// Leaf 1 ECX TSC-deadline timer mode.
pub const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
/// Leaf 7.0 EBX FSGSBASE.
pub const LEAF7_EBX_FSGSBASE: u32 = 1 << 0;
/// Leaf 7.0 EBX TSC_ADJUST: IA32_TSC_ADJUST, emulated (offered whatever the host has, as KVM).
pub const LEAF7_EBX_TSC_ADJUST: u32 = 1 << 1;
/// Leaf 7.0 EBX SMEP.
pub const LEAF7_EBX_SMEP: u32 = 1 << 7;
/// Leaf 7.0 EBX SMAP.
pub const LEAF7_EBX_SMAP: u32 = 1 << 20;
/// Leaf 7.0 ECX RDPID.
pub const LEAF7_ECX_RDPID: u32 = 1 << 22;
/// Leaf 7.0 EBX INVPCID.
pub const LEAF7_EBX_INVPCID: u32 = 1 << 10;
/// Leaf 0x80000001 ECX bits: LAHF/SAHF, ABM (LZCNT), PREFETCHW.
pub const EXT1_ECX: u32 = 1 << 0 | 1 << 5 | 1 << 8;
/// Leaf 0x80000001 EDX bits: SYSCALL, NX, 1-GiB pages, RDTSCP, LM.
pub const EXT1_EDX: u32 = 1 << 11 | 1 << 20 | 1 << 26 | 1 << 27 | 1 << 29;
/// Leaf 0x80000001 EDX RDTSCP.
pub const EXT1_EDX_RDTSCP: u32 = 1 << 27;
/// Leaf 0x80000001 EDX LM.
pub const EXT1_EDX_LM: u32 = 1 << 29;
/// Leaf 0x80000001 EDX NX.
pub const EXT1_EDX_NX: u32 = 1 << 20;
/// Highest basic leaf offered: 0xD (XSAVE) when XSAVE state is switched, else 7.
pub const MAX_BASIC: u32 = 0xd;
/// Highest extended leaf offered.
pub const MAX_EXTENDED: u32 = 0x8000_0008;

/// What the VMX controls let the guest use (secondary controls that exist on this CPU).
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestControls {
    /// "Enable INVPCID" can be set.
    pub invpcid: bool,
    /// "Enable RDTSCP" can be set.
    pub rdtscp: bool,
    /// XCR0 components rvmx switches for guests ([`super::xstate::SWITCHED`] that the host
    /// enables); 0 if it does not use XSAVE.
    pub xfeatures: u64,
    /// The speculation controls a guest may use on this host (KVM gives them too, so that a
    /// guest can protect itself).
    pub speculation: Speculation,
    /// An in-kernel local APIC exists (split irqchip): x2APIC is offered, whatever the host
    /// has, as KVM emulates it.
    pub x2apic: bool,
    /// The host kernel accounts run delay (`CONFIG_SCHED_INFO`): steal time is offered.
    pub steal_time: bool,
}

/// Speculation-control features for guests (the host's, as the kernel sees them).
#[derive(Clone, Copy, Debug, Default)]
pub struct Speculation {
    /// IA32_PRED_CMD.IBPB works: leaf 0x80000008 EBX AMD_IBPB (KVM synthesises it on Intel).
    pub ibpb: bool,
    /// IA32_FLUSH_CMD works: leaf 7.0 EDX FLUSH_L1D.
    pub flush_l1d: bool,
    /// VERW clears CPU buffers: leaf 7.0 EDX MD_CLEAR.
    pub md_clear: bool,
    /// Intel's SPEC_CTRL CPUID bit (IA32_SPEC_CTRL with IBRS, and IBPB): leaf 7.0 EDX.
    pub spec_ctrl: bool,
    /// IA32_SPEC_CTRL.IBRS: leaf 0x80000008 EBX AMD_IBRS (KVM synthesises the AMD bits).
    pub ibrs: bool,
    /// IA32_SPEC_CTRL.STIBP: leaf 7.0 EDX INTEL_STIBP, 0x80000008 EBX AMD_STIBP.
    pub stibp: bool,
    /// IA32_SPEC_CTRL.SSBD: leaf 7.0 EDX SPEC_CTRL_SSBD, 0x80000008 EBX AMD_SSBD.
    pub ssbd: bool,
    /// Not affected by speculative store bypass: leaf 0x80000008 EBX AMD_SSB_NO.
    pub ssb_no: bool,
    /// An IBPB also clears return predictions: leaf 0x80000008 EBX AMD_IBPB_RET.
    pub ibpb_ret: bool,
}

/// Leaf 7.0 EDX MD_CLEAR.
pub const LEAF7_EDX_MD_CLEAR: u32 = 1 << 10;
/// Leaf 7.0 EDX SPEC_CTRL: IA32_SPEC_CTRL (IBRS) and IA32_PRED_CMD (IBPB).
pub const LEAF7_EDX_SPEC_CTRL: u32 = 1 << 26;
/// Leaf 7.0 EDX INTEL_STIBP.
pub const LEAF7_EDX_STIBP: u32 = 1 << 27;
/// Leaf 7.0 EDX SPEC_CTRL_SSBD.
pub const LEAF7_EDX_SSBD: u32 = 1 << 31;
/// Leaf 7.0 EDX FLUSH_L1D.
pub const LEAF7_EDX_FLUSH_L1D: u32 = 1 << 28;
/// Leaf 7.0 EDX ARCH_CAPABILITIES: always given, as KVM does (the MSR is emulated).
pub const LEAF7_EDX_ARCH_CAPABILITIES: u32 = 1 << 29;
/// Leaf 7.2 EDX: the further IA32_SPEC_CTRL controls (PSFD, IPRED_CTRL, RRSBA_CTRL, DDPD_U,
/// BHI_CTRL), given with IA32_SPEC_CTRL where the host has them, as KVM does.
pub const LEAF7_2_EDX_SPEC_CTRL: u32 = 1 << 0 | 1 << 1 | 1 << 2 | 1 << 3 | 1 << 4;
/// Leaf 7.2 EDX MCDT_NO: no MXCSR-dependent timing (information only).
pub const LEAF7_2_EDX_MCDT_NO: u32 = 1 << 5;
/// The highest leaf 7 subleaf offered (7.1 is offered empty).
pub const LEAF7_MAX_SUBLEAF: u32 = 2;
/// Leaf 0x80000008 EBX AMD_IBPB: IA32_PRED_CMD's IBPB.
pub const EXT8_EBX_IBPB: u32 = 1 << 12;
/// Leaf 0x80000008 EBX AMD_IBRS.
pub const EXT8_EBX_IBRS: u32 = 1 << 14;
/// Leaf 0x80000008 EBX AMD_STIBP.
pub const EXT8_EBX_STIBP: u32 = 1 << 15;
/// Leaf 0x80000008 EBX AMD_SSBD.
pub const EXT8_EBX_SSBD: u32 = 1 << 24;
/// Leaf 0x80000008 EBX AMD_SSB_NO.
pub const EXT8_EBX_SSB_NO: u32 = 1 << 26;
/// Leaf 0x80000008 EBX AMD_IBPB_RET.
pub const EXT8_EBX_IBPB_RET: u32 = 1 << 30;

/// The supported table: host CPUID (`host(leaf, subleaf)`, as `[eax, ebx, ecx, edx]`)
/// filtered to what rvmx gives guests. Appends to `out`; returns how many entries it wrote.
pub fn supported(host: impl Fn(u32, u32) -> [u32; 4], ctl: GuestControls, out: &mut [CpuidEntry]) -> usize {
    let mut n = 0;
    let mut push = |function: u32, index: u32, flags: u32, r: [u32; 4]| {
        if let Some(slot) = out.get_mut(n) {
            *slot = CpuidEntry { function, index, flags, eax: r[0], ebx: r[1], ecx: r[2], edx: r[3], padding: [0; 3] };
            n = n.saturating_add(1); // below out.len()
        }
    };
    let h0 = host(0, 0);
    use super::xstate::xfeature;
    let xf = ctl.xfeatures;
    let max_basic = h0[0].min(if xf != 0 { MAX_BASIC } else { 7 });
    let avx = xf & xfeature::YMM != 0;
    let avx512 = xf & xfeature::AVX512 == xfeature::AVX512;
    let only = |on: bool, bits: u32| if on { bits } else { 0 };
    push(0, 0, 0, [max_basic, h0[1], h0[2], h0[3]]);
    for leaf in 1..=max_basic {
        let h = host(leaf, 0);
        match leaf {
            // Signature kept; EBX: brand index and CLFLUSH size kept, logical count and
            // initial APIC id cleared (userspace sets them per vCPU).
            1 => {
                let ecx = LEAF1_ECX | only(xf != 0, LEAF1_ECX_XSAVE) | only(avx, LEAF1_ECX_AVX);
                let ecx = h[2] & ecx | LEAF1_ECX_HYPERVISOR | only(ctl.x2apic, LEAF1_ECX_X2APIC);
                push(1, 0, 0, [h[0], h[1] & 0xffff, ecx, h[3] & LEAF1_EDX]);
            }
            7 => {
                let ebx = (LEAF7_EBX | only(avx, LEAF7_EBX_AVX) | only(avx512, LEAF7_EBX_AVX512))
                    & if ctl.invpcid { !0 } else { !LEAF7_EBX_INVPCID };
                let sp = ctl.speculation;
                let edx = LEAF7_EDX_ARCH_CAPABILITIES | only(sp.flush_l1d, LEAF7_EDX_FLUSH_L1D) | only(sp.md_clear, LEAF7_EDX_MD_CLEAR)
                    | only(sp.spec_ctrl, LEAF7_EDX_SPEC_CTRL) | only(sp.stibp, LEAF7_EDX_STIBP) | only(sp.ssbd, LEAF7_EDX_SSBD);
                let max_sub = h[0].min(LEAF7_MAX_SUBLEAF);
                push(7, 0, FLAG_SIGNIFICANT_INDEX, [max_sub, h[1] & ebx | LEAF7_EBX_TSC_ADJUST, 0, edx]);
                if max_sub >= 1 {
                    push(7, 1, FLAG_SIGNIFICANT_INDEX, [0; 4]);
                }
                if max_sub >= 2 {
                    let edx = LEAF7_2_EDX_MCDT_NO | only(sp.spec_ctrl, LEAF7_2_EDX_SPEC_CTRL);
                    push(7, 2, FLAG_SIGNIFICANT_INDEX, [0, 0, 0, host(7, 2)[3] & edx]);
                }
            }
            // XSAVE: the switched components, their sizes and offsets as the host lays them
            // out (standard format), the image size for all of them (KVM's table).
            0xd => {
                let size = super::xstate::size_for(xf, |i| {
                    let c = host(0xd, i);
                    (c[0], c[1])
                });
                push(0xd, 0, FLAG_SIGNIFICANT_INDEX, [xf as u32, size, size, (xf >> 32) as u32]);
                push(0xd, 1, FLAG_SIGNIFICANT_INDEX, [host(0xd, 1)[0] & LEAFD1_EAX, 0, 0, 0]);
                for i in (2..63).filter(|i| xf & 1 << i != 0) {
                    let c = host(0xd, i);
                    push(0xd, i, FLAG_SIGNIFICANT_INDEX, [c[0], c[1], c[2], 0]);
                }
            }
            // Cache and TLB descriptors are informational: passed through. Leaves 4 (cache
            // topology), 5 (MONITOR), 6 (power) are not offered.
            2 => push(2, 0, 0, h),
            _ => {}
        }
    }
    let e0 = host(0x8000_0000, 0);
    let max_ext = e0[0].min(MAX_EXTENDED);
    if max_ext >= 0x8000_0001 {
        push(0x8000_0000, 0, 0, [max_ext, 0, 0, 0]);
    }
    for leaf in 0x8000_0001..=max_ext {
        let h = host(leaf, 0);
        match leaf {
            0x8000_0001 => {
                let edx = h[3] & EXT1_EDX & if ctl.rdtscp { !0 } else { !EXT1_EDX_RDTSCP };
                push(leaf, 0, 0, [0, 0, h[2] & EXT1_ECX, edx]);
            }
            // Brand string.
            0x8000_0002..=0x8000_0004 => push(leaf, 0, 0, h),
            // Address sizes: physical bits (at most the 48 the EPT maps), linear bits.
            0x8000_0008 => {
                let sp = ctl.speculation;
                let ebx = only(sp.ibpb, EXT8_EBX_IBPB) | only(sp.ibrs, EXT8_EBX_IBRS) | only(sp.stibp, EXT8_EBX_STIBP)
                    | only(sp.ssbd, EXT8_EBX_SSBD) | only(sp.ssb_no, EXT8_EBX_SSB_NO) | only(sp.ibpb_ret, EXT8_EBX_IBPB_RET);
                push(leaf, 0, 0, [(h[0] & 0xff).min(48) | (h[0] & 0xff00), ebx, 0, 0]);
            }
            _ => {}
        }
    }
    // KVM's paravirtual leaves, last as in KVM's table: its signature and the kvmclock
    // features rvmx implements.
    push(0x4000_0000, 0, 0, super::kvmclock::SIGNATURE_LEAF);
    let steal = if ctl.steal_time { super::kvmclock::feature::STEAL_TIME } else { 0 };
    push(0x4000_0001, 0, 0, [super::kvmclock::feature::SUPPORTED | steal, 0, 0, 0]);
    n
}

/// The KVM paravirtual features the table gives (EAX of the features leaf after the first
/// "KVMKVMKVM" signature among the hypervisor bases 0x40000000-0x4000ff00, as KVM's
/// `kvm_get_hypervisor_cpuid` finds it); 0 without the signature or the leaf.
pub fn kvm_pv_features(table: &[CpuidEntry]) -> u32 {
    let [_, sig_b, sig_c, sig_d] = super::kvmclock::SIGNATURE_LEAF;
    (0x4000_0000u32..0x4001_0000)
        .step_by(0x100)
        .find(|&base| find_any(table, base).is_some_and(|e| (e.ebx, e.ecx, e.edx) == (sig_b, sig_c, sig_d)))
        .and_then(|base| find_any(table, base | 1))
        .map_or(0, |e| e.eax)
}

/// The entry for `leaf`.`subleaf` (the subleaf counts only where the entry says so).
#[inline]
pub fn find(table: &[CpuidEntry], leaf: u32, subleaf: u32) -> Option<&CpuidEntry> {
    table
        .iter()
        .find(|e| e.function == leaf && (e.flags & FLAG_SIGNIFICANT_INDEX == 0 || e.index == subleaf))
}

/// The first entry for `leaf` whatever its subleaf (KVM's `kvm_find_cpuid_entry`).
fn find_any(table: &[CpuidEntry], leaf: u32) -> Option<&CpuidEntry> {
    table.iter().find(|e| e.function == leaf)
}

/// The entry for `(leaf, subleaf)` in `table`, or zeros.
pub fn lookup(table: &[CpuidEntry], leaf: u32, subleaf: u32) -> [u32; 4] {
    find(table, leaf, subleaf).map_or([0; 4], |e| [e.eax, e.ebx, e.ecx, e.edx])
}

/// CPUID bits that follow the vCPU's state rather than the table (KVM's
/// `kvm_update_cpuid_runtime`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Runtime {
    /// IA32_APIC_BASE.EN: leaf 1 EDX.APIC (bit 9).
    pub apic_enabled: bool,
    /// CR4.OSXSAVE: leaf 1 ECX.OSXSAVE (bit 27).
    pub osxsave: bool,
    /// CR4.PKE: leaf 7.0 ECX.OSPKE (bit 4).
    pub ospke: bool,
    /// Without KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT, IA32_MISC_ENABLE.MWAIT: leaf 1 ECX.MWAIT.
    pub mwait: Option<bool>,
    /// Leaf 0xD.0 EBX: the image size for the components XCR0 enables, from the host's
    /// layout ([`super::xstate::size_for`]), never from the table.
    pub xsave_size: u32,
    /// Leaf 0xD.1 EBX when the table lists XSAVEC or XSAVES: the compacted size.
    pub xsave_compacted_size: u32,
}

/// What a guest's CPUID returns, as KVM computes it (Intel semantics, `kvm_cpuid`): the
/// table's entry, with leaf 1's APIC and OSXSAVE bits, leaf 7's OSPKE and leaf 0xD's sizes
/// following the vCPU state; zeros for a
/// missing leaf within its class's range (basic 0.., extended 0x80000000..); for a leaf
/// above that range, the highest basic leaf.
pub fn guest_cpuid(table: &[CpuidEntry], leaf: u32, subleaf: u32, rt: Runtime) -> [u32; 4] {
    guest_cpuid_with(table, leaf, subleaf, || rt, || (rt.xsave_size, rt.xsave_compacted_size))
}

/// [`guest_cpuid`], with the runtime bits read by `rt` only if the answer comes from a leaf
/// that has some (1, 7.0), and the XSAVE sizes (standard, compacted) computed by
/// `xsave_sizes` only if it comes from leaf 0xD (they cost as much as the rest of a CPUID
/// exit): most CPUID exits need neither. Like
/// KVM, which updates the entries themselves, the runtime bits follow the leaf the answer
/// comes from, also when an out-of-range leaf is answered by the highest basic leaf.
#[inline]
pub fn guest_cpuid_with(
    table: &[CpuidEntry],
    leaf: u32,
    subleaf: u32,
    rt: impl FnOnce() -> Runtime,
    xsave_sizes: impl FnOnce() -> (u32, u32),
) -> [u32; 4] {
    let (mut r, from) = raw_guest_cpuid(table, leaf, subleaf);
    runtime_bits(&mut r, from, subleaf, rt, xsave_sizes);
    r
}

/// The table as `KVM_GET_CPUID2` reports it: with the runtime bits, which KVM writes into the
/// entries its lookups find (the first leaf 1 entry, and those for 7.0, 0xD.0 and 0xD.1).
pub fn with_runtime(table: &[CpuidEntry], rt: Runtime) -> impl Iterator<Item = CpuidEntry> + '_ {
    const RUNTIME_LEAVES: [(u32, u32); 4] = [(1, 0), (7, 0), (0xd, 0), (0xd, 1)];
    table.iter().map(move |e| {
        let found = |&(leaf, sub): &(u32, u32)| {
            let f = if leaf == 1 { find_any(table, 1) } else { find(table, leaf, sub) };
            f.is_some_and(|f| core::ptr::eq(f, e))
        };
        let Some(&(leaf, sub)) = RUNTIME_LEAVES.iter().find(|l| found(l)) else { return *e };
        let mut r = [e.eax, e.ebx, e.ecx, e.edx];
        runtime_bits(&mut r, leaf, sub, || rt, || (rt.xsave_size, rt.xsave_compacted_size));
        let [eax, ebx, ecx, edx] = r;
        CpuidEntry { eax, ebx, ecx, edx, ..*e }
    })
}

/// Puts the runtime bits into the registers of `leaf`.`subleaf`'s entry (KVM's
/// `kvm_update_cpuid_runtime`); the XSAVE sizes are computed only for leaf 0xD.
#[inline]
fn runtime_bits(r: &mut [u32; 4], leaf: u32, subleaf: u32, rt: impl FnOnce() -> Runtime, xsave_sizes: impl FnOnce() -> (u32, u32)) {
    let set = |v: u32, bit: u32, on: bool| if on { v | 1 << bit } else { v & !(1 << bit) };
    match (leaf, subleaf) {
        (1, _) => {
            let rt = rt();
            r[3] = set(r[3], 9, rt.apic_enabled);
            r[2] = set(r[2], 27, rt.osxsave);
            if let Some(on) = rt.mwait {
                r[2] = set(r[2], 3, on);
            }
        }
        (7, 0) => r[2] = set(r[2], 4, rt().ospke),
        (0xd, 0) => r[1] = xsave_sizes().0,
        (0xd, 1) if r[0] & LEAFD1_EAX_COMPACTED != 0 => r[1] = xsave_sizes().1,
        _ => {}
    }
}

/// [`guest_cpuid`] before the runtime bits, with the leaf the answer came from (`u32::MAX` if
/// none), as KVM's `kvm_cpuid`: the exact entry, else (`get_out_of_range_cpuid_entry`) for a
/// leaf above its class's maximum (basic, hypervisor 0x400000xx block, extended, Centaur) the
/// highest basic leaf with the same subleaf, unless the vendor is AMD or Hygon (zeros there).
/// Without an entry, leaves 0xB and 0x1F still give the subleaf in ECX and the x2APIC ID in
/// EDX when the leaf exists.
#[inline]
fn raw_guest_cpuid(table: &[CpuidEntry], leaf: u32, subleaf: u32) -> ([u32; 4], u32) {
    let mut function = leaf;
    let entry = find(table, leaf, subleaf).or_else(|| {
        let basic = find_any(table, 0)?;
        if amd_like(basic) {
            return None;
        }
        let class = if (0x4000_0000..=0x4fff_ffff).contains(&leaf) {
            leaf & 0xffff_ff00
        } else if leaf >= 0xc000_0000 {
            0xc000_0000
        } else {
            leaf & 0x8000_0000
        };
        if find_any(table, class).is_some_and(|c| leaf <= c.eax) {
            return None;
        }
        function = basic.eax;
        find(table, basic.eax, subleaf)
    });
    if let Some(e) = entry {
        return ([e.eax, e.ebx, e.ecx, e.edx], e.function);
    }
    let mut r = [0; 4];
    if function == 0xb || function == 0x1f {
        if let Some(e) = find(table, function, 1) {
            r = [0, 0, subleaf & 0xff, e.edx];
        }
    }
    (r, u32::MAX)
}

/// Whether leaf 0 names AMD ("AuthenticAMD", "AMDisbetter!") or Hygon ("HygonGenuine"), whose
/// CPUs answer zeros above a leaf range (KVM's `is_guest_vendor_amd/hygon`).
fn amd_like(basic: &CpuidEntry) -> bool {
    const VENDORS: [(u32, u32, u32); 3] = [
        (0x6874_7541, 0x444d_4163, 0x6974_6e65), // AuthenticAMD (EBX, ECX, EDX)
        (0x6944_4d41, 0x2172_6574, 0x7465_6273), // AMDisbetter!
        (0x6f67_7948, 0x656e_6975, 0x6e65_476e), // HygonGenuine
    ];
    VENDORS.contains(&(basic.ebx, basic.ecx, basic.edx))
}

/// Whether a guest with this table may use XSAVE (CR4.OSXSAVE, XSETBV): rvmx switches XSAVE
/// state on this host (`xfeatures` non-zero) and the table has leaf 1 ECX.XSAVE (KVM's rule).
pub fn xsave_allowed(table: &[CpuidEntry], xfeatures: u64) -> bool {
    xfeatures != 0 && lookup(table, 1, 0)[2] & LEAF1_ECX_XSAVE != 0
}

/// The features behind the CR4 bits a guest with this table may set.
pub fn cr4_features(table: &[CpuidEntry], xfeatures: u64) -> super::vcpu_state::Cr4Features {
    let (l1, l7) = (lookup(table, 1, 0), lookup(table, 7, 0));
    super::vcpu_state::Cr4Features {
        xsave: xsave_allowed(table, xfeatures),
        pcid: l1[2] & LEAF1_ECX_PCID != 0,
        fsgsbase: l7[1] & LEAF7_EBX_FSGSBASE != 0,
        smep: l7[1] & LEAF7_EBX_SMEP != 0,
        smap: l7[1] & LEAF7_EBX_SMAP != 0,
    }
}

/// The XCR0 components a guest with this table may enable: those its leaf 0xD.0 lists that
/// rvmx switches, and x87.
pub fn xcr0_allowed(table: &[CpuidEntry], xfeatures: u64) -> u64 {
    let d = lookup(table, 0xd, 0);
    super::xstate::guest_allowed(d[0], d[3], xfeatures)
}

/// Whether a table gives the guest long mode and NX (for the EFER bits SREGS may set).
pub fn long_mode_and_nx(table: &[CpuidEntry]) -> (bool, bool) {
    let edx = lookup(table, 0x8000_0001, 0)[3];
    (edx & EXT1_EDX_LM != 0, edx & EXT1_EDX_NX != 0)
}

/// Why `KVM_SET_CPUID2` refuses a table (KVM's `kvm_check_cpuid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Leaf 0x80000008 gives a linear-address width other than 48, 57 or 0 (EINVAL).
    LinearAddressBits,
    /// Leaf 0xD.0 lists AMX tile data, a dynamic component this process has no permission
    /// for (EPERM; rvmx never switches it).
    DynamicXfeatures,
}

/// XCR0 bit 18: AMX tile data, enabled per process on demand (XFD).
const XFEATURE_XTILE_DATA: u64 = 1 << 18;

/// Checks a table as KVM does before taking it.
pub fn check(table: &[CpuidEntry]) -> Result<(), Refusal> {
    if let Some(e) = find(table, 0x8000_0008, 0) {
        if !matches!((e.eax >> 8) & 0xff, 0 | 48 | 57) {
            return Err(Refusal::LinearAddressBits);
        }
    }
    if let Some(e) = find(table, 0xd, 0) {
        if (u64::from(e.edx) << 32 | u64::from(e.eax)) & XFEATURE_XTILE_DATA != 0 {
            return Err(Refusal::DynamicXfeatures);
        }
    }
    Ok(())
}

/// The speculation-control MSRs a guest with this table has (KVM's CPUID gates).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpeculationMsrs {
    /// IA32_ARCH_CAPABILITIES (leaf 7.0 EDX ARCH_CAPABILITIES).
    pub arch_capabilities: bool,
    /// IA32_PRED_CMD (leaf 7.0 EDX SPEC_CTRL, or 0x80000008 EBX AMD_IBPB).
    pub pred_cmd: bool,
    /// IA32_FLUSH_CMD (leaf 7.0 EDX FLUSH_L1D).
    pub flush_cmd: bool,
    /// IA32_SPEC_CTRL (leaf 7.0 EDX SPEC_CTRL, or 0x80000008 EBX AMD_IBRS, AMD_STIBP or
    /// AMD_SSBD).
    pub spec_ctrl: bool,
}

/// The speculation-control MSRs a guest with this table has.
pub fn speculation_msrs(table: &[CpuidEntry]) -> SpeculationMsrs {
    let edx7 = lookup(table, 7, 0)[3];
    SpeculationMsrs {
        arch_capabilities: edx7 & LEAF7_EDX_ARCH_CAPABILITIES != 0,
        pred_cmd: edx7 & LEAF7_EDX_SPEC_CTRL != 0 || lookup(table, 0x8000_0008, 0)[1] & EXT8_EBX_IBPB != 0,
        flush_cmd: edx7 & LEAF7_EDX_FLUSH_L1D != 0,
        spec_ctrl: edx7 & LEAF7_EDX_SPEC_CTRL != 0
            || lookup(table, 0x8000_0008, 0)[1] & (EXT8_EBX_IBRS | EXT8_EBX_STIBP | EXT8_EBX_SSBD) != 0,
    }
}

/// Whether the guest has IA32_TSC_AUX: its CPUID lists RDTSCP or RDPID (KVM's rule).
pub fn has_tsc_aux(table: &[CpuidEntry]) -> bool {
    lookup(table, 0x8000_0001, 0)[3] & EXT1_EDX_RDTSCP != 0 || lookup(table, 7, 0)[2] & LEAF7_ECX_RDPID != 0
}

/// Leaf 1 ECX SSE3.
pub const LEAF1_ECX_SSE3: u32 = 1 << 0;
/// Leaf 1 ECX MONITOR/MWAIT.
pub const LEAF1_ECX_MWAIT: u32 = 1 << 3;
/// Leaf 1 ECX RDRAND.
pub const LEAF1_ECX_RDRAND: u32 = 1 << 30;
/// Leaf 7.0 EBX RDSEED.
pub const LEAF7_EBX_RDSEED: u32 = 1 << 18;

/// The instructions a guest may run because its CPUID lists them; the others are #UD, as on
/// KVM (which sets the VMX controls from the guest's CPUID, not the host's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Instructions {
    /// RDTSCP and RDPID, and IA32_TSC_AUX (CPUID RDTSCP or RDPID): "enable RDTSCP".
    pub rdtscp: bool,
    /// INVPCID: "enable INVPCID".
    pub invpcid: bool,
    /// RDRAND: without it, "RDRAND exiting" and #UD.
    pub rdrand: bool,
    /// RDSEED: without it, "RDSEED exiting" and #UD.
    pub rdseed: bool,
    /// IA32_TSC_ADJUST takes writes (else they are ignored, as KVM ignores them).
    pub tsc_adjust: bool,
    /// SSE3: IA32_MISC_ENABLE.MWAIT may change (without KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT).
    pub sse3: bool,
    /// MONITOR/MWAIT in the table (they run as NOPs where allowed, see `run/exit.rs`).
    pub mwait: bool,
}

/// The instructions the guest with this table may run.
pub fn instructions(table: &[CpuidEntry]) -> Instructions {
    let ebx7 = lookup(table, 7, 0)[1];
    Instructions {
        rdtscp: has_tsc_aux(table),
        invpcid: ebx7 & LEAF7_EBX_INVPCID != 0,
        rdrand: lookup(table, 1, 0)[2] & LEAF1_ECX_RDRAND != 0,
        rdseed: ebx7 & LEAF7_EBX_RDSEED != 0,
        tsc_adjust: ebx7 & LEAF7_EBX_TSC_ADJUST != 0,
        sse3: lookup(table, 1, 0)[2] & LEAF1_ECX_SSE3 != 0,
        mwait: lookup(table, 1, 0)[2] & LEAF1_ECX_MWAIT != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host with everything set: only what rvmx offers may come through.
    fn host_all(leaf: u32, _sub: u32) -> [u32; 4] {
        match leaf {
            0 => [0xd, 0x756e_6547, 0x6c65_746e, 0x4965_6e69],
            0x8000_0000 => [0x8000_0008, 0, 0, 0],
            0x8000_0008 => [0x3027, 0, 0, 0],
            _ => [!0; 4],
        }
    }

    #[test]
    fn supported_table_hides_what_rvmx_cannot_give() {
        let mut t = [CpuidEntry::default(); MAX_ENTRIES];
        let ctl = GuestControls { invpcid: false, rdtscp: true, xfeatures: 0, speculation: Speculation::default(), x2apic: false, steal_time: false };
        let n = supported(host_all, ctl, &mut t);
        let t = &t[..n];
        assert_eq!(lookup(t, 0, 0)[0], 7, "no XSAVE leaf without XSAVE state");
        let l1 = lookup(t, 1, 0);
        assert_eq!(l1[2] & LEAF1_ECX_X2APIC, 0, "no x2APIC without an in-kernel APIC");
        assert_eq!(l1[2] & (1 << 5), 0, "no VMX");
        assert_eq!(l1[2] & (1 << 26 | 1 << 27 | 1 << 28), 0, "no XSAVE/OSXSAVE/AVX");
        assert_ne!(l1[2] & (1 << 31), 0, "hypervisor bit");
        assert_eq!(l1[1] >> 16, 0, "no APIC id or logical count");
        assert_eq!(lookup(t, 7, 0)[1] & LEAF7_EBX_INVPCID, 0, "INVPCID only if VMX allows it");
        assert_eq!(lookup(t, 7, 0)[1] & (1 << 5), 0, "no AVX2");
        assert_eq!(lookup(t, 7, 0)[0], LEAF7_MAX_SUBLEAF);
        assert_eq!(lookup(t, 7, 1), [0; 4]);
        assert_eq!(lookup(t, 7, 2), [0, 0, 0, LEAF7_2_EDX_MCDT_NO], "SPEC_CTRL's bits only with the MSR");
        let spec = Speculation { spec_ctrl: true, ..Default::default() };
        let mut t2 = [CpuidEntry::default(); MAX_ENTRIES];
        let n2 = supported(host_all, GuestControls { speculation: spec, ..Default::default() }, &mut t2);
        assert_eq!(lookup(&t2[..n2], 7, 2)[3], LEAF7_2_EDX_MCDT_NO | LEAF7_2_EDX_SPEC_CTRL);
        let no_sub = |leaf: u32, sub: u32| if (leaf, sub) == (7, 0) { [0, !0, !0, !0] } else { host_all(leaf, sub) };
        let n3 = supported(no_sub, GuestControls::default(), &mut t2);
        assert!(t2[..n3].iter().all(|e| e.function != 7 || e.index == 0), "no subleaves the host lacks");
        assert_eq!(lookup(t, 0xd, 0), [0; 4], "no XSAVE leaf");
        assert_eq!(lookup(t, 0x8000_0008, 0)[0], 0x3027 & 0xff00 | 39);
        assert_eq!(long_mode_and_nx(t), (true, true));
        let kvm = |e: &&CpuidEntry| (0x4000_0000..=0x4000_0001).contains(&e.function);
        assert!(t.iter().filter(|e| !kvm(e)).all(|e| e.function <= MAX_BASIC || e.function >= 0x8000_0000));
        assert_eq!(lookup(t, 0x4000_0000, 0), crate::kvmclock::SIGNATURE_LEAF);
        assert_eq!(lookup(t, 0x4000_0001, 0), [crate::kvmclock::feature::SUPPORTED, 0, 0, 0]);
    }

    #[test]
    fn xsave_follows_the_switched_state() {
        use crate::xstate::xfeature::*;
        let host = |leaf: u32, sub: u32| match (leaf, sub) {
            (0xd, 2) => [256, 576, 0, 0],
            (0xd, 5) => [64, 1088, 0, 0],
            (0xd, 1) => [0xf, 0, 0, 0],
            _ => host_all(leaf, sub),
        };
        let mut t = [CpuidEntry::default(); MAX_ENTRIES];
        let ctl = GuestControls { invpcid: true, rdtscp: true, xfeatures: X87 | SSE | YMM, speculation: Speculation::default(), x2apic: true, steal_time: true };
        let n = supported(host, ctl, &mut t);
        let t = &t[..n];
        assert_eq!(lookup(t, 0, 0)[0], 0xd);
        let l1 = lookup(t, 1, 0);
        assert_ne!(l1[2] & LEAF1_ECX_X2APIC, 0, "x2APIC with an in-kernel APIC, whatever the host");
        assert_eq!(l1[2] & (LEAF1_ECX_XSAVE | LEAF1_ECX_AVX), LEAF1_ECX_XSAVE | LEAF1_ECX_AVX);
        assert_eq!(l1[2] & (1 << 27), 0, "OSXSAVE is the guest's CR4, not the table's");
        assert_eq!(lookup(t, 7, 0)[1] & (LEAF7_EBX_AVX | LEAF7_EBX_AVX512), LEAF7_EBX_AVX);
        assert_eq!(lookup(t, 0xd, 0), [7, 832, 832, 0]);
        assert_eq!(lookup(t, 0xd, 1), [1, 0, 0, 0], "XSAVEOPT only");
        assert_eq!(lookup(t, 0xd, 2), [256, 576, 0, 0]);
        assert_eq!(lookup(t, 0xd, 5), [0; 4], "AVX-512 not switched");
        assert!(xsave_allowed(t, X87 | SSE | YMM) && !xsave_allowed(t, 0));
        assert_eq!(xcr0_allowed(t, X87 | SSE | YMM | AVX512), X87 | SSE | YMM);
        assert_eq!(xcr0_allowed(t, X87 | SSE), X87 | SSE);
        assert_eq!(xcr0_allowed(&[], X87 | SSE), X87);
        // Leaf 0xD.0 EBX is the runtime size (the host's layout for the guest's XCR0), even
        // when a table claims sizes that would overflow.
        let rt = |xsave_size| Runtime { xsave_size, ..Default::default() };
        assert_eq!(guest_cpuid(t, 0xd, 0, rt(576))[1], 576);
        assert_eq!(guest_cpuid(t, 0xd, 0, rt(832))[1], 832);
        assert_eq!(guest_cpuid(t, 0xd, 2, rt(576))[1], 576, "only subleaf 0");
        let hostile = [
            CpuidEntry { function: 0xd, flags: FLAG_SIGNIFICANT_INDEX, eax: 7, ..Default::default() },
            CpuidEntry { function: 0xd, index: 2, flags: FLAG_SIGNIFICANT_INDEX, eax: u32::MAX, ebx: u32::MAX, ..Default::default() },
        ];
        assert_eq!(guest_cpuid(&hostile, 0xd, 0, rt(832))[1], 832);
        let compacted = [CpuidEntry { function: 0xd, index: 1, flags: FLAG_SIGNIFICANT_INDEX, eax: 0xf, ebx: u32::MAX, ..Default::default() }];
        let rt2 = Runtime { xsave_compacted_size: 896, ..Default::default() };
        assert_eq!(guest_cpuid(&compacted, 0xd, 1, rt2)[1], 896, "XSAVEC/XSAVES: the compacted size");
        // Above the basic range with 0xD the highest leaf: the runtime size too (KVM updates
        // the entry itself); the sizes are computed only then.
        let top = [CpuidEntry { function: 0, eax: 0xd, ..Default::default() }, hostile[0], hostile[1]];
        assert_eq!(guest_cpuid(&top, 0x4000_0000, 0, rt(576))[1], 576);
        let mut asked = false;
        guest_cpuid_with(&top, 1, 0, Runtime::default, || { asked = true; (0, 0) });
        assert!(!asked, "not computed for other leaves");
        let mut read = false;
        guest_cpuid_with(&top, 0, 0, || { read = true; Runtime::default() }, || (0, 0));
        assert!(!read, "the runtime bits are read only for the leaves that have some");
    }

    #[test]
    fn instructions_follow_the_table() {
        assert_eq!(instructions(&[]), Instructions::default(), "no table: none of them");
        let t = [
            CpuidEntry { function: 1, ecx: LEAF1_ECX_RDRAND, ..Default::default() },
            CpuidEntry { function: 7, flags: FLAG_SIGNIFICANT_INDEX, ebx: LEAF7_EBX_INVPCID, ecx: LEAF7_ECX_RDPID, ..Default::default() },
        ];
        assert_eq!(instructions(&t), Instructions { rdtscp: true, invpcid: true, rdrand: true, rdseed: false, tsc_adjust: false, sse3: false, mwait: false });
    }

    #[test]
    fn speculation_controls() {
        let mut t = [CpuidEntry::default(); MAX_ENTRIES];
        let sp = Speculation { ibpb: true, flush_l1d: false, md_clear: true, ..Default::default() };
        let n = supported(host_all, GuestControls { speculation: sp, ..Default::default() }, &mut t);
        let t = &t[..n];
        assert_eq!(lookup(t, 7, 0)[3], LEAF7_EDX_ARCH_CAPABILITIES | LEAF7_EDX_MD_CLEAR);
        assert_eq!(lookup(t, 0x8000_0008, 0)[1], EXT8_EBX_IBPB);
        assert_eq!(speculation_msrs(t), SpeculationMsrs { arch_capabilities: true, pred_cmd: true, flush_cmd: false, spec_ctrl: false });
        assert_eq!(speculation_msrs(&[]), SpeculationMsrs::default());
        // A host with IA32_SPEC_CTRL: Intel's bits and the AMD ones KVM synthesises.
        let sp = Speculation { ibpb: true, spec_ctrl: true, ibrs: true, stibp: true, ssbd: true, ssb_no: true, ..Default::default() };
        let mut t = [CpuidEntry::default(); MAX_ENTRIES];
        let n = supported(host_all, GuestControls { speculation: sp, ..Default::default() }, &mut t);
        let t = &t[..n];
        assert_eq!(lookup(t, 7, 0)[3], LEAF7_EDX_ARCH_CAPABILITIES | LEAF7_EDX_SPEC_CTRL | LEAF7_EDX_STIBP | LEAF7_EDX_SSBD);
        assert_eq!(lookup(t, 0x8000_0008, 0)[1], EXT8_EBX_IBPB | EXT8_EBX_IBRS | EXT8_EBX_STIBP | EXT8_EBX_SSBD | EXT8_EBX_SSB_NO);
        assert!(speculation_msrs(t).spec_ctrl && speculation_msrs(t).pred_cmd);
        // The MSR exists for a guest with any of the bits that name one of its controls.
        let amd_ssbd = [CpuidEntry { function: 0x8000_0008, ebx: EXT8_EBX_SSBD, ..Default::default() }];
        assert!(speculation_msrs(&amd_ssbd).spec_ctrl);
        let only_ibpb = [CpuidEntry { function: 0x8000_0008, ebx: EXT8_EBX_IBPB, ..Default::default() }];
        assert!(!speculation_msrs(&only_ibpb).spec_ctrl && speculation_msrs(&only_ibpb).pred_cmd);
    }

    #[test]
    fn tables_kvm_refuses() {
        let e = |function, index, eax, edx| CpuidEntry { function, index, eax, edx, flags: FLAG_SIGNIFICANT_INDEX, ..Default::default() };
        assert_eq!(check(&[]), Ok(()));
        assert_eq!(check(&[e(0x8000_0008, 0, 0x3027, 0)]), Ok(()));
        assert_eq!(check(&[e(0x8000_0008, 0, 0x2827, 0)]), Err(Refusal::LinearAddressBits));
        assert_eq!(check(&[e(0xd, 0, 0x7, 0)]), Ok(()));
        assert_eq!(check(&[e(0xd, 0, 0x6_0007, 0)]), Err(Refusal::DynamicXfeatures));
        assert_eq!(check(&[e(0xd, 1, 0x6_0007, 0)]), Ok(()), "only sub-leaf 0 lists components");
    }

    #[test]
    fn out_of_range_leaves_answer_the_highest_basic_leaf() {
        let t = [
            CpuidEntry { function: 0, eax: 7, ..Default::default() },
            CpuidEntry { function: 7, flags: FLAG_SIGNIFICANT_INDEX, ebx: 9, ..Default::default() },
            CpuidEntry { function: 0x8000_0000, eax: 0x8000_0001, ..Default::default() },
        ];
        let rt = Runtime::default();
        assert_eq!(guest_cpuid(&t, 5, 0, rt), [0; 4], "in range, no entry");
        assert_eq!(guest_cpuid(&t, 0x20, 0, rt)[1], 9, "above basic range: leaf 7");
        assert_eq!(guest_cpuid(&t, 0x8000_0008, 0, rt)[1], 9, "above extended range");
        assert_eq!(guest_cpuid(&t, 0x4000_0000, 0, rt)[1], 9, "no hypervisor block: leaf 7");
        assert_eq!(guest_cpuid(&[], 1, 0, rt), [0; 4], "empty table");
        let mut hv = t.to_vec();
        hv.push(CpuidEntry { function: 0x4000_0000, eax: 0x4000_0001, ebx: 0x4b4d_564b, ..Default::default() });
        hv.push(CpuidEntry { function: 0x4000_0001, eax: 0x1_0000, ..Default::default() });
        assert_eq!(guest_cpuid(&hv, 0x4000_0000, 0, rt), [0x4000_0001, 0x4b4d_564b, 0, 0], "as set");
        assert_eq!(guest_cpuid(&hv, 0x4000_0001, 0, rt)[0], 0x1_0000);
        assert_eq!(guest_cpuid(&hv, 0x4000_0002, 0, rt)[1], 9, "above the block's maximum");
        assert_eq!(guest_cpuid(&hv, 0x4000_0100, 0, rt)[1], 9, "another block: none");
        let mut amd = t.to_vec();
        amd[0] = CpuidEntry { function: 0, eax: 7, ebx: 0x6874_7541, ecx: 0x444d_4163, edx: 0x6974_6e65, ..Default::default() };
        assert_eq!(guest_cpuid(&amd, 0x20, 0, rt), [0; 4], "AMD: zeros above the range");
        assert_eq!(guest_cpuid(&amd, 0x8000_0008, 0, rt), [0; 4]);
    }

    #[test]
    fn topology_leaves_keep_the_subleaf_and_x2apic_id() {
        let t = [
            CpuidEntry { function: 0, eax: 0xb, ..Default::default() },
            CpuidEntry { function: 0xb, flags: FLAG_SIGNIFICANT_INDEX, index: 0, eax: 1, edx: 3, ..Default::default() },
            CpuidEntry { function: 0xb, flags: FLAG_SIGNIFICANT_INDEX, index: 1, eax: 4, edx: 3, ..Default::default() },
        ];
        let rt = Runtime::default();
        assert_eq!(guest_cpuid(&t, 0xb, 1, rt)[0], 4);
        assert_eq!(guest_cpuid(&t, 0xb, 0x107, rt), [0, 0, 7, 3], "undefined subleaf: CL and EDX");
        assert_eq!(guest_cpuid(&t, 0x30, 5, rt), [0, 0, 5, 3], "through the highest basic leaf 0xB");
        assert_eq!(guest_cpuid(&t, 0x1f, 5, rt), [0, 0, 5, 3], "0x1F above the range is 0xB");
    }

    #[test]
    fn leaf1_runtime_bits_follow_the_vcpu() {
        let t = [
            CpuidEntry { function: 0, eax: 1, ..Default::default() },
            CpuidEntry { function: 1, edx: 1, ecx: 1 << 27, ..Default::default() },
        ];
        let on = Runtime { apic_enabled: true, osxsave: false, ospke: false, mwait: None, xsave_size: 576, xsave_compacted_size: 576 };
        assert_eq!(guest_cpuid(&t, 1, 0, on), [0, 0, 0, 0x201]);
        assert_eq!(guest_cpuid(&t, 0x40, 0, on)[3], 0x201, "also through the out-of-range rule");
        assert_eq!(guest_cpuid(&t, 0, 0, on)[3], 0, "other leaves untouched");
    }

    #[test]
    fn get_cpuid2_runtime_bits_go_where_kvm_finds_the_leaves() {
        let t = [
            CpuidEntry { function: 1, edx: 0, ..Default::default() },
            CpuidEntry { function: 1, index: 1, edx: 0, ..Default::default() },
            // Leaf 7 without the significant-index flag: KVM's lookup of 7.0 finds it.
            CpuidEntry { function: 7, index: 3, ecx: 1 << 4, ..Default::default() },
            CpuidEntry { function: 0xd, index: 0, flags: FLAG_SIGNIFICANT_INDEX, ebx: 1, ..Default::default() },
            CpuidEntry { function: 0xd, index: 1, flags: FLAG_SIGNIFICANT_INDEX, eax: LEAFD1_EAX_COMPACTED, ebx: 1, ..Default::default() },
            CpuidEntry { function: 0xd, index: 2, flags: FLAG_SIGNIFICANT_INDEX, ebx: 1, ..Default::default() },
        ];
        let rt = Runtime { apic_enabled: true, osxsave: true, ospke: false, mwait: Some(true), xsave_size: 576, xsave_compacted_size: 832 };
        let out: Vec<CpuidEntry> = with_runtime(&t, rt).collect();
        assert_eq!((out[0].edx, out[0].ecx), (1 << 9, 1 << 27 | 1 << 3), "the first leaf 1 entry");
        assert_eq!((out[1].edx, out[1].ecx), (0, 0), "not a second one");
        assert_eq!(out[2].ecx, 0, "OSPKE follows CR4.PKE");
        assert_eq!((out[3].ebx, out[4].ebx, out[5].ebx), (576, 832, 1));
    }

    #[test]
    fn pv_features_after_the_kvm_signature() {
        let [a, b, c, d] = crate::kvmclock::SIGNATURE_LEAF;
        let sig = |function| CpuidEntry { function, eax: a, ebx: b, ecx: c, edx: d, ..Default::default() };
        let feat = |function, eax| CpuidEntry { function, eax, ..Default::default() };
        assert_eq!(kvm_pv_features(&[sig(0x4000_0000), feat(0x4000_0001, 9)]), 9);
        assert_eq!(kvm_pv_features(&[sig(0x4000_0100), feat(0x4000_0001, 9), feat(0x4000_0101, 5)]), 5, "at the signature's base");
        assert_eq!(kvm_pv_features(&[feat(0x4000_0001, 9)]), 0, "no signature");
        assert_eq!(kvm_pv_features(&[sig(0x4000_0000)]), 0, "no features leaf");
    }

    #[test]
    fn lookup_respects_significant_index() {
        let t = [
            CpuidEntry { function: 7, index: 0, flags: FLAG_SIGNIFICANT_INDEX, ebx: 5, ..Default::default() },
            CpuidEntry { function: 1, index: 0, flags: 0, eax: 0x906ea, ..Default::default() },
        ];
        assert_eq!(lookup(&t, 7, 0)[1], 5);
        assert_eq!(lookup(&t, 7, 1), [0; 4]);
        assert_eq!(lookup(&t, 1, 9)[0], 0x906ea, "subleaf ignored without the flag");
        assert_eq!(long_mode_and_nx(&t), (false, false));
    }
}
