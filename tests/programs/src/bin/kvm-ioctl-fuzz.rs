//! An ioctl fuzzer: random sequences of calls over the system fd, VM fds and vCPU fds, aimed at
//! the host side of a KVM-compatible device (issue 13, "a caller can never harm the host").
//! Written against the raw KVM ABI (no wrapper library), so the same binary runs on
//! `/dev/rvmx` and `/dev/kvm`.
//!
//! Usage: kvm-ioctl-fuzz DEVICE SEED CALLS [--start N] [--verbose] [--batch B] [--trace FILE]
//!        kvm-ioctl-fuzz --compare TRACE-A TRACE-B
//!
//! Calls START..START+CALLS run in batches of B (1000 by default). Every batch starts from
//! nothing (it opens DEVICE, and closes and unmaps everything it made at its end), and all its
//! choices come from a PRNG seeded with (SEED, batch), so `--start N` (rounded down to a batch)
//! replays the batch that call N was in: `kvm-ioctl-fuzz DEV SEED B --start N` reproduces it.
//! What a call does depends on what earlier calls of its batch returned, so a replay is exact
//! as long as the device answers the same way (the threaded and forked parts have timing of
//! their own).
//!
//! A call is one of:
//! - an ioctl on a system, VM, vCPU or unrelated fd (sometimes the wrong kind of fd), with one
//!   of the KVM ioctl numbers (those rvmx answers and others KVM has) or a random number
//!   (random direction, size, type and nr), and an argument pointer that is valid, NULL, a
//!   kernel address, unmapped, non-canonical, read-only, or placed so the structure straddles
//!   into a PROT_NONE page; contents random or a GET result with random fields changed:
//!   memory regions (random slot, flags, GPA, size and host address, overlapping, huge,
//!   unaligned, aliased, pointing at the kvm_run mapping), CPUID tables and MSR lists with
//!   random counts, dirty logs with random bitmap pointers, ioeventfds with random fds and
//!   lengths, irqfds (resampling too) with fresh or signalled eventfds, coalesced-MMIO zones over the guests' writes or anywhere, regs/sregs/fpu/xsave/xcrs/debugregs/events/mp_state/guest debug;
//! - VMs with the split irqchip (an in-kernel local APIC per vCPU) half of the time, and
//!   KVM_ENABLE_CAP mostly with capabilities that exist, so the APIC's ioctls, MSI routes,
//!   irqfds and HLT in the kernel get random calls too;
//! - KVM_RUN of a tiny guest (mostly real-mode code that exits at once: HLT, OUT, IN, MMIO,
//!   CPUID, VMCALL; sometimes a spin with IF=1 that the watchdog's kick ends; rarely random
//!   bytes);
//! - create, close, dup and dup2 of fds; mmap of the vCPU fd at random offsets, sizes and
//!   protections, touched in a child (a SIGBUS or SIGSEGV there is an outcome, not a finding);
//!   munmap of slot memory (whole or a page) and of the kvm_run mapping;
//! - fork: the child makes random calls on the inherited fds (KVM answers EIO on a VM or vCPU
//!   fd used from another process) and exits;
//! - a race: one or two threads run vCPUs while this thread changes slots, unmaps slot memory,
//!   closes and dup2s fds and calls ioctls on the running vCPU.
//!
//! The fuzzer does not judge errnos (that is for targeted tests): it counts them per ioctl
//! and fd kind. It reports `FINDING` lines (on stdout and stderr) for: a child killed by a
//! signal it did not send, and a hang — a watchdog thread kicks (SIGUSR1) any call that runs
//! past its budget (KVM_RUN 30 ms, other calls 2 s) and reports one that has not returned 5 s
//! after the kick (and exits with status 3 if it is still stuck 30 s later). Every batch
//! prints a progress line to stderr (where a dead host's log shows the fuzzer was); the end
//! prints the counts and `summary seed S start N calls C ... findings F` on stdout. Exit status
//! 0 when it ran to the end (findings or not: the summary says), 2 usage, 3 a hang it could
//! not recover from. Memory: at most 48 MiB of slot memory and 4 VMs of 4 vCPUs at a time.
//!
//! `--trace FILE` writes one line per operation of this thread (`call I OP ERRNO`): two traces
//! (one per device, same seed) compare with `--compare A B`. Within a batch, calls compare
//! while both runs make the same operations; an errno that differs there is reported as a
//! mismatch, counted per (operation, errno A, errno B) with its first call; from the first call
//! whose operations differ the rest of the batch is skipped ("out of step"). Always exits 0.

use std::{
    collections::BTreeMap,
    ffi::CString,
    io::Write,
    mem::size_of,
    process::ExitCode,
    ptr,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Mutex,
    },
};

use kvm_bindings as kb;
use rvmx_test_programs::Rng;

// ---- PRNG (as kvm-guest-fuzz) ----------------------------------------------------------------


// ---- The ABI ---------------------------------------------------------------------------------

const KVMIO: u64 = 0xae;
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    dir << 30 | (size as u64) << 16 | KVMIO << 8 | nr
}
const fn io(nr: u64) -> u64 {
    ioc(0, nr, 0)
}
const fn iow(nr: u64, size: usize) -> u64 {
    ioc(1, nr, size)
}
const fn ior(nr: u64, size: usize) -> u64 {
    ioc(2, nr, size)
}
const fn iowr(nr: u64, size: usize) -> u64 {
    ioc(3, nr, size)
}

const KVM_GET_API_VERSION: u64 = io(0x00);
const KVM_CREATE_VM: u64 = io(0x01);
const KVM_GET_MSR_INDEX_LIST: u64 = iowr(0x02, 4);
const KVM_CHECK_EXTENSION: u64 = io(0x03);
const KVM_GET_VCPU_MMAP_SIZE: u64 = io(0x04);
const KVM_GET_SUPPORTED_CPUID: u64 = iowr(0x05, 8);
const KVM_GET_EMULATED_CPUID: u64 = iowr(0x09, 8);
const KVM_GET_MSR_FEATURE_INDEX_LIST: u64 = iowr(0x0a, 4);
const KVM_X86_GET_MCE_CAP_SUPPORTED: u64 = ior(0x9d, 8);
const KVM_CREATE_VCPU: u64 = io(0x41);
const KVM_GET_DIRTY_LOG: u64 = iow(0x42, size_of::<kb::kvm_dirty_log>());
const KVM_SET_USER_MEMORY_REGION: u64 = iow(0x46, size_of::<kb::kvm_userspace_memory_region>());
const KVM_SET_TSS_ADDR: u64 = io(0x47);
const KVM_SET_IDENTITY_MAP_ADDR: u64 = iow(0x48, 8);
const KVM_SET_USER_MEMORY_REGION2: u64 = iow(0x49, size_of::<kb::kvm_userspace_memory_region2>());
const KVM_CREATE_IRQCHIP: u64 = io(0x60);
const KVM_IRQ_LINE: u64 = iow(0x61, size_of::<kb::kvm_irq_level>());
const KVM_IRQ_LINE_STATUS: u64 = iowr(0x67, size_of::<kb::kvm_irq_level>());
const KVM_GET_IRQCHIP: u64 = iowr(0x62, size_of::<kb::kvm_irqchip>());
const KVM_GET_PIT2: u64 = ior(0x9f, size_of::<kb::kvm_pit_state2>());
const KVM_SET_PIT2: u64 = iow(0xa0, size_of::<kb::kvm_pit_state2>());
const KVM_REINJECT_CONTROL: u64 = io(0x71);
const KVM_SET_IRQCHIP: u64 = ior(0x63, size_of::<kb::kvm_irqchip>());
const KVM_SET_GSI_ROUTING: u64 = iow(0x6a, 8);
const KVM_IRQFD: u64 = iow(0x76, size_of::<kb::kvm_irqfd>());
const KVM_CREATE_PIT2: u64 = iow(0x77, size_of::<kb::kvm_pit_config>());
const KVM_IOEVENTFD: u64 = iow(0x79, size_of::<kb::kvm_ioeventfd>());
const KVM_REGISTER_COALESCED_MMIO: u64 = iow(0x67, size_of::<kb::kvm_coalesced_mmio_zone>());
const KVM_UNREGISTER_COALESCED_MMIO: u64 = iow(0x68, size_of::<kb::kvm_coalesced_mmio_zone>());
const KVM_SET_CLOCK: u64 = iow(0x7b, size_of::<kb::kvm_clock_data>());
const KVM_GET_CLOCK: u64 = ior(0x7c, size_of::<kb::kvm_clock_data>());
const KVM_CLEAR_DIRTY_LOG: u64 = iowr(0xc0, size_of::<kb::kvm_clear_dirty_log>());
const KVM_GET_STATS_FD: u64 = io(0xce);
const KVM_ENABLE_CAP: u64 = iow(0xa3, size_of::<kb::kvm_enable_cap>());
const KVM_RUN: u64 = io(0x80);
const KVM_GET_REGS: u64 = ior(0x81, size_of::<kb::kvm_regs>());
const KVM_SET_REGS: u64 = iow(0x82, size_of::<kb::kvm_regs>());
const KVM_GET_SREGS: u64 = ior(0x83, size_of::<kb::kvm_sregs>());
const KVM_SET_SREGS: u64 = iow(0x84, size_of::<kb::kvm_sregs>());
const KVM_TRANSLATE: u64 = iowr(0x85, size_of::<kb::kvm_translation>());
const KVM_INTERRUPT: u64 = iow(0x86, 4);
const KVM_GET_MSRS: u64 = iowr(0x88, 8);
const KVM_SET_MSRS: u64 = iow(0x89, 8);
const KVM_SET_SIGNAL_MASK: u64 = iow(0x8b, 4);
const KVM_GET_FPU: u64 = ior(0x8c, size_of::<kb::kvm_fpu>());
const KVM_SET_FPU: u64 = iow(0x8d, size_of::<kb::kvm_fpu>());
const KVM_GET_LAPIC: u64 = ior(0x8e, size_of::<kb::kvm_lapic_state>());
const KVM_SET_LAPIC: u64 = iow(0x8f, size_of::<kb::kvm_lapic_state>());
const KVM_SET_CPUID2: u64 = iow(0x90, 8);
const KVM_GET_CPUID2: u64 = iowr(0x91, 8);
const KVM_GET_MP_STATE: u64 = ior(0x98, 4);
const KVM_SET_MP_STATE: u64 = iow(0x99, 4);
const KVM_NMI: u64 = io(0x9a);
const KVM_SET_GUEST_DEBUG: u64 = iow(0x9b, size_of::<kb::kvm_guest_debug>());
const KVM_X86_SETUP_MCE: u64 = iow(0x9c, 8);
const KVM_X86_SET_MCE: u64 = iow(0x9e, size_of::<kb::kvm_x86_mce>());
const KVM_GET_VCPU_EVENTS: u64 = ior(0x9f, size_of::<kb::kvm_vcpu_events>());
const KVM_SET_VCPU_EVENTS: u64 = iow(0xa0, size_of::<kb::kvm_vcpu_events>());
const KVM_GET_DEBUGREGS: u64 = ior(0xa1, size_of::<kb::kvm_debugregs>());
const KVM_SET_DEBUGREGS: u64 = iow(0xa2, size_of::<kb::kvm_debugregs>());
const KVM_SET_TSC_KHZ: u64 = io(0xa2);
const KVM_GET_TSC_KHZ: u64 = io(0xa3);
const KVM_GET_XSAVE: u64 = ior(0xa4, size_of::<kb::kvm_xsave>());
const KVM_SET_XSAVE: u64 = iow(0xa5, size_of::<kb::kvm_xsave>());
const KVM_GET_XCRS: u64 = ior(0xa6, size_of::<kb::kvm_xcrs>());
const KVM_SET_XCRS: u64 = iow(0xa7, size_of::<kb::kvm_xcrs>());
const KVM_KVMCLOCK_CTRL: u64 = io(0xad);
const KVM_SMI: u64 = io(0xb7);
const KVM_GET_XSAVE2: u64 = ior(0xcf, size_of::<kb::kvm_xsave>());

const REGS: usize = size_of::<kb::kvm_regs>();
const SREGS: usize = size_of::<kb::kvm_sregs>();
const CPUID_ENTRY: usize = size_of::<kb::kvm_cpuid_entry2>();
const MSR_ENTRY: usize = size_of::<kb::kvm_msr_entry>();

/// Which fd an ioctl is meant for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Sys,
    Vm,
    Vcpu,
}

/// The ioctls the fuzzer knows, by name, number and the fd they belong to.
const IOCTLS: &[(&str, u64, Kind)] = &[
    ("KVM_GET_API_VERSION", KVM_GET_API_VERSION, Kind::Sys),
    ("KVM_CREATE_VM", KVM_CREATE_VM, Kind::Sys),
    ("KVM_GET_MSR_INDEX_LIST", KVM_GET_MSR_INDEX_LIST, Kind::Sys),
    ("KVM_GET_MSR_FEATURE_INDEX_LIST", KVM_GET_MSR_FEATURE_INDEX_LIST, Kind::Sys),
    ("KVM_CHECK_EXTENSION", KVM_CHECK_EXTENSION, Kind::Sys),
    ("KVM_GET_VCPU_MMAP_SIZE", KVM_GET_VCPU_MMAP_SIZE, Kind::Sys),
    ("KVM_GET_SUPPORTED_CPUID", KVM_GET_SUPPORTED_CPUID, Kind::Sys),
    ("KVM_GET_EMULATED_CPUID", KVM_GET_EMULATED_CPUID, Kind::Sys),
    ("KVM_X86_GET_MCE_CAP_SUPPORTED", KVM_X86_GET_MCE_CAP_SUPPORTED, Kind::Sys),
    ("KVM_CREATE_VCPU", KVM_CREATE_VCPU, Kind::Vm),
    ("KVM_GET_DIRTY_LOG", KVM_GET_DIRTY_LOG, Kind::Vm),
    ("KVM_SET_USER_MEMORY_REGION", KVM_SET_USER_MEMORY_REGION, Kind::Vm),
    ("KVM_SET_USER_MEMORY_REGION2", KVM_SET_USER_MEMORY_REGION2, Kind::Vm),
    ("KVM_SET_TSS_ADDR", KVM_SET_TSS_ADDR, Kind::Vm),
    ("KVM_SET_IDENTITY_MAP_ADDR", KVM_SET_IDENTITY_MAP_ADDR, Kind::Vm),
    ("KVM_CREATE_IRQCHIP", KVM_CREATE_IRQCHIP, Kind::Vm),
    ("KVM_IRQ_LINE", KVM_IRQ_LINE, Kind::Vm),
    ("KVM_IRQ_LINE_STATUS", KVM_IRQ_LINE_STATUS, Kind::Vm),
    ("KVM_GET_IRQCHIP", KVM_GET_IRQCHIP, Kind::Vm),
    ("KVM_GET_PIT2", KVM_GET_PIT2, Kind::Vm),
    ("KVM_SET_PIT2", KVM_SET_PIT2, Kind::Vm),
    ("KVM_REINJECT_CONTROL", KVM_REINJECT_CONTROL, Kind::Vm),
    ("KVM_SET_IRQCHIP", KVM_SET_IRQCHIP, Kind::Vm),
    ("KVM_SET_GSI_ROUTING", KVM_SET_GSI_ROUTING, Kind::Vm),
    ("KVM_IRQFD", KVM_IRQFD, Kind::Vm),
    ("KVM_CREATE_PIT2", KVM_CREATE_PIT2, Kind::Vm),
    ("KVM_IOEVENTFD", KVM_IOEVENTFD, Kind::Vm),
    ("KVM_REGISTER_COALESCED_MMIO", KVM_REGISTER_COALESCED_MMIO, Kind::Vm),
    ("KVM_UNREGISTER_COALESCED_MMIO", KVM_UNREGISTER_COALESCED_MMIO, Kind::Vm),
    ("KVM_SET_CLOCK", KVM_SET_CLOCK, Kind::Vm),
    ("KVM_GET_CLOCK", KVM_GET_CLOCK, Kind::Vm),
    ("KVM_CLEAR_DIRTY_LOG", KVM_CLEAR_DIRTY_LOG, Kind::Vm),
    ("KVM_GET_STATS_FD", KVM_GET_STATS_FD, Kind::Vm),
    ("KVM_ENABLE_CAP", KVM_ENABLE_CAP, Kind::Vm),
    ("KVM_CHECK_EXTENSION", KVM_CHECK_EXTENSION, Kind::Vm),
    ("KVM_SET_TSC_KHZ", KVM_SET_TSC_KHZ, Kind::Vm),
    ("KVM_GET_TSC_KHZ", KVM_GET_TSC_KHZ, Kind::Vm),
    ("KVM_RUN", KVM_RUN, Kind::Vcpu),
    ("KVM_GET_REGS", KVM_GET_REGS, Kind::Vcpu),
    ("KVM_SET_REGS", KVM_SET_REGS, Kind::Vcpu),
    ("KVM_GET_SREGS", KVM_GET_SREGS, Kind::Vcpu),
    ("KVM_SET_SREGS", KVM_SET_SREGS, Kind::Vcpu),
    ("KVM_TRANSLATE", KVM_TRANSLATE, Kind::Vcpu),
    ("KVM_INTERRUPT", KVM_INTERRUPT, Kind::Vcpu),
    ("KVM_GET_MSRS", KVM_GET_MSRS, Kind::Vcpu),
    ("KVM_SET_MSRS", KVM_SET_MSRS, Kind::Vcpu),
    ("KVM_SET_SIGNAL_MASK", KVM_SET_SIGNAL_MASK, Kind::Vcpu),
    ("KVM_GET_FPU", KVM_GET_FPU, Kind::Vcpu),
    ("KVM_SET_FPU", KVM_SET_FPU, Kind::Vcpu),
    ("KVM_GET_LAPIC", KVM_GET_LAPIC, Kind::Vcpu),
    ("KVM_SET_LAPIC", KVM_SET_LAPIC, Kind::Vcpu),
    ("KVM_SET_CPUID2", KVM_SET_CPUID2, Kind::Vcpu),
    ("KVM_GET_CPUID2", KVM_GET_CPUID2, Kind::Vcpu),
    ("KVM_GET_MP_STATE", KVM_GET_MP_STATE, Kind::Vcpu),
    ("KVM_SET_MP_STATE", KVM_SET_MP_STATE, Kind::Vcpu),
    ("KVM_NMI", KVM_NMI, Kind::Vcpu),
    ("KVM_SET_GUEST_DEBUG", KVM_SET_GUEST_DEBUG, Kind::Vcpu),
    ("KVM_X86_SETUP_MCE", KVM_X86_SETUP_MCE, Kind::Vcpu),
    ("KVM_X86_SET_MCE", KVM_X86_SET_MCE, Kind::Vcpu),
    ("KVM_GET_VCPU_EVENTS", KVM_GET_VCPU_EVENTS, Kind::Vcpu),
    ("KVM_SET_VCPU_EVENTS", KVM_SET_VCPU_EVENTS, Kind::Vcpu),
    ("KVM_GET_DEBUGREGS", KVM_GET_DEBUGREGS, Kind::Vcpu),
    ("KVM_SET_DEBUGREGS", KVM_SET_DEBUGREGS, Kind::Vcpu),
    ("KVM_SET_TSC_KHZ", KVM_SET_TSC_KHZ, Kind::Vcpu),
    ("KVM_GET_TSC_KHZ", KVM_GET_TSC_KHZ, Kind::Vcpu),
    ("KVM_GET_XSAVE", KVM_GET_XSAVE, Kind::Vcpu),
    ("KVM_SET_XSAVE", KVM_SET_XSAVE, Kind::Vcpu),
    ("KVM_GET_XSAVE2", KVM_GET_XSAVE2, Kind::Vcpu),
    ("KVM_GET_XCRS", KVM_GET_XCRS, Kind::Vcpu),
    ("KVM_SET_XCRS", KVM_SET_XCRS, Kind::Vcpu),
    ("KVM_KVMCLOCK_CTRL", KVM_KVMCLOCK_CTRL, Kind::Vcpu),
    ("KVM_SMI", KVM_SMI, Kind::Vcpu),
    ("KVM_ENABLE_CAP", KVM_ENABLE_CAP, Kind::Vcpu),
    ("KVM_GET_STATS_FD", KVM_GET_STATS_FD, Kind::Vcpu),
];

fn ioctl_name(cmd: u64) -> &'static str {
    IOCTLS.iter().find(|e| e.1 == cmd).map_or("random", |e| e.0)
}

/// MSRs worth naming in KVM_GET/SET_MSRS.
const MSRS: &[u32] = &[
    0x10, 0x1b, 0x3a, 0x3b, 0x48, 0x49, 0x8b, 0xe7, 0xe8, 0xfe, 0x10a, 0x122, 0x174, 0x175, 0x176,
    0x179, 0x17a, 0x1a0, 0x1d9, 0x200, 0x277, 0x2ff, 0x480, 0x48b, 0x4d0, 0x6e0, 0x802, 0x808,
    0x830, 0x9e, 0x34, 0xc000_0080, 0xc000_0081, 0xc000_0082, 0xc000_0083, 0xc000_0084, 0xc000_0100,
    0xc000_0101, 0xc000_0102, 0xc000_0103, 0x4b56_4d00, 0x4b56_4d01, 0x4b56_4d02, 0x4000_0000,
    0xffff_ffff, 0x8000_0000,
];

/// Capabilities KVM_ENABLE_CAP takes on a VM or a vCPU (KVM's numbers): SPLIT_IRQCHIP,
/// X2APIC_API, X86_APIC_BUS_CYCLES_NS, DISABLE_QUIRKS, DISABLE_QUIRKS2, MAX_VCPU_ID,
/// X86_USER_SPACE_MSR, MSR_PLATFORM_INFO, EXIT_ON_EMULATION_FAILURE, ENFORCE_PV_FEATURE_CPUID,
/// IRQCHIP (no ENABLE_CAP target: an error either way).
const ENABLE_CAPS: &[u32] = &[121, 129, 237, 116, 213, 128, 188, 159, 204, 190, 0];
/// KVM_CAP_SPLIT_IRQCHIP.
const CAP_SPLIT_IRQCHIP: u32 = 121;

/// A value for a register or field: small, address-like, kernel-looking, single bits, garbage.
fn value(r: &mut Rng) -> u64 {
    match r.below(12) {
        0 => 0,
        1 => r.below(16),
        2 => r.below(0x10_0000),
        3 => u64::MAX,
        4 => r.pick(MSRS) as u64,
        5 => 0xffff_ffff_8100_0000 + r.below(0x1_0000),
        6 => 0x0000_8000_0000_0000 | r.below(1 << 20),
        7 => 1 << r.below(64),
        8 => r.next() & 0xffff_ffff,
        9 => (1u64 << r.below(64)).wrapping_sub(1),
        10 => r.below(0x1_0000_0000) & !0xfff,
        _ => r.next(),
    }
}

// ---- Memory the fuzzer points the kernel at -------------------------------------------------

const PAGE: usize = 4096;
/// The scratch areas: 4 pages each, then a PROT_NONE guard page.
const SCRATCH: usize = 4 * PAGE;
/// Slot memory the fuzzer keeps mapped at once.
const MAX_MAPPED: usize = 48 << 20;
const MAX_MAPPINGS: usize = 16;
const MAX_VMS: usize = 4;
const MAX_VCPUS: usize = 4;

fn mmap_anon(len: usize, prot: i32, shared: bool) -> *mut u8 {
    let flags = libc::MAP_ANONYMOUS | if shared { libc::MAP_SHARED } else { libc::MAP_PRIVATE };
    // SAFETY: a fresh anonymous mapping.
    let p = unsafe { libc::mmap(ptr::null_mut(), len, prot, flags, -1, 0) };
    if p == libc::MAP_FAILED { ptr::null_mut() } else { p as *mut u8 }
}

/// RW scratch, a read-only area, each followed by an inaccessible page.
struct Scratch {
    rw: *mut u8,
    ro: *mut u8,
}

impl Scratch {
    fn new() -> Scratch {
        let rw = mmap_anon(SCRATCH + PAGE, libc::PROT_READ | libc::PROT_WRITE, false);
        let ro = mmap_anon(SCRATCH + PAGE, libc::PROT_READ | libc::PROT_WRITE, false);
        assert!(!rw.is_null() && !ro.is_null(), "scratch mmap");
        // SAFETY: the last page of each mapping becomes the guard.
        unsafe {
            libc::mprotect(rw.add(SCRATCH) as _, PAGE, libc::PROT_NONE);
            libc::mprotect(ro.add(SCRATCH) as _, PAGE, libc::PROT_NONE);
            libc::mprotect(ro as _, SCRATCH, libc::PROT_READ);
        }
        Scratch { rw, ro }
    }
    /// Guard page after the RW scratch.
    fn guard(&self) -> usize {
        self.rw as usize + SCRATCH
    }
}

/// A pointer the kernel should not be able to use.
fn bad_pointer(r: &mut Rng, sc: &Scratch) -> usize {
    match r.below(8) {
        0 => 0,
        1 => 0xffff_ffff_8100_0000 + r.below(0x10_0000) as usize,
        2 => 0xffff_8880_0000_0000 + (r.below(0x1000) as usize) * PAGE,
        3 => 0xffff_ffff_ffff_f000 + r.below(0x1000) as usize,
        4 => 0x0000_8000_0000_0000 - r.below(64) as usize,
        5 => sc.guard() + r.below(PAGE as u64) as usize,
        6 => 0x1000 + r.below(0x1000) as usize,
        _ => r.next() as usize,
    }
}

/// Where to put an ioctl argument of `bytes`: usually the scratch; sometimes NULL, a kernel
/// address, unmapped memory, read-only memory (holding `bytes`) or straddling into the guard
/// page. Returns the pointer.
fn place(r: &mut Rng, sc: &Scratch, bytes: &[u8]) -> usize {
    let len = bytes.len().min(SCRATCH);
    let roll = r.below(100);
    // SAFETY (all arms): copies stay inside the 4-page scratch areas.
    unsafe {
        if roll < 72 || len == 0 {
            let off = if r.pct(8) && len + 8 <= SCRATCH { r.below(8) as usize } else { 0 };
            ptr::copy_nonoverlapping(bytes.as_ptr(), sc.rw.add(off), len);
            sc.rw as usize + off
        } else if roll < 84 {
            bad_pointer(r, sc)
        } else if roll < 92 {
            // The structure ends k bytes into the guard page.
            let k = 1 + r.below_usize(len);
            let start = sc.guard() - (len - k);
            ptr::copy_nonoverlapping(bytes.as_ptr(), start as *mut u8, len - k);
            start
        } else {
            libc::mprotect(sc.ro as _, SCRATCH, libc::PROT_READ | libc::PROT_WRITE);
            ptr::copy_nonoverlapping(bytes.as_ptr(), sc.ro, len);
            libc::mprotect(sc.ro as _, SCRATCH, libc::PROT_READ);
            sc.ro as usize
        }
    }
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

// ---- The watchdog ----------------------------------------------------------------------------

/// A call in flight, watched: one for this thread, one per race thread.
struct Watch {
    active: AtomicBool,
    tid: AtomicU64,
    start_ms: AtomicU64,
    budget_ms: AtomicU64,
    call: AtomicU64,
    name: AtomicUsize, // index into IOCTLS, or usize::MAX for a random number
    kicked_ms: AtomicU64,
    reported: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const WATCH: Watch = Watch {
    active: AtomicBool::new(false),
    tid: AtomicU64::new(0),
    start_ms: AtomicU64::new(0),
    budget_ms: AtomicU64::new(0),
    call: AtomicU64::new(0),
    name: AtomicUsize::new(0),
    kicked_ms: AtomicU64::new(0),
    reported: AtomicBool::new(false),
};
static WATCHES: [Watch; 3] = [WATCH; 3];
static FINDINGS: AtomicU64 = AtomicU64::new(0);
static REPRO: Mutex<String> = Mutex::new(String::new());
/// Kicked but not returned for this long: a hang.
const HANG_MS: u64 = 5000;
/// Still stuck this long after the report: give up (exit 3).
const GIVE_UP_MS: u64 = 30_000;

fn now_ms() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes `t`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

fn finding(msg: &str) {
    FINDINGS.fetch_add(1, Ordering::SeqCst);
    let repro = REPRO.lock().map(|s| s.clone()).unwrap_or_default();
    println!("FINDING {msg} (reproduce: {repro})");
    eprintln!("FINDING {msg} (reproduce: {repro})");
    let _ = std::io::stdout().flush();
}

fn watchdog() {
    loop {
        // SAFETY: usleep has no memory effects.
        unsafe { libc::usleep(20_000) };
        let now = now_ms();
        for w in WATCHES.iter() {
            if !w.active.load(Ordering::SeqCst) {
                continue;
            }
            let start = w.start_ms.load(Ordering::SeqCst);
            if now < start + w.budget_ms.load(Ordering::SeqCst) {
                continue;
            }
            let kicked = w.kicked_ms.load(Ordering::SeqCst);
            if kicked == 0 {
                w.kicked_ms.store(now, Ordering::SeqCst);
            }
            // Kick (again): a pending signal ends KVM_RUN and interruptible waits.
            // SAFETY: the thread id was published by the thread itself, which is alive while
            // `active` is set.
            unsafe { libc::pthread_kill(w.tid.load(Ordering::SeqCst) as libc::pthread_t, libc::SIGUSR1) };
            if kicked != 0 && now >= kicked + HANG_MS && !w.reported.swap(true, Ordering::SeqCst) {
                let n = w.name.load(Ordering::SeqCst);
                let name = IOCTLS.get(n).map_or("a call", |e| e.0);
                finding(&format!("hang: {name} (call {}) did not return {HANG_MS} ms after a kick (SIGUSR1)", w.call.load(Ordering::SeqCst)));
            }
            if kicked != 0 && now >= kicked + HANG_MS + GIVE_UP_MS {
                eprintln!("kvm-ioctl-fuzz: still stuck after {GIVE_UP_MS} ms more; exiting");
                println!("FINDING unrecoverable hang; no summary");
                let _ = std::io::stdout().flush();
                // SAFETY: _exit ends the process without running anything else.
                unsafe { libc::_exit(3) };
            }
        }
    }
}

/// Runs `f` (one blocking call) under watch slot `slot`.
fn watched<T>(slot: usize, call: u64, cmd: u64, budget_ms: u64, f: impl FnOnce() -> T) -> T {
    let w = &WATCHES[slot];
    // SAFETY: pthread_self has no preconditions.
    w.tid.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
    w.call.store(call, Ordering::SeqCst);
    w.name.store(IOCTLS.iter().position(|e| e.1 == cmd).unwrap_or(usize::MAX), Ordering::SeqCst);
    w.budget_ms.store(budget_ms, Ordering::SeqCst);
    w.kicked_ms.store(0, Ordering::SeqCst);
    w.reported.store(false, Ordering::SeqCst);
    w.start_ms.store(now_ms(), Ordering::SeqCst);
    w.active.store(true, Ordering::SeqCst);
    let v = f();
    w.active.store(false, Ordering::SeqCst);
    v
}

extern "C" fn on_kick(_: libc::c_int) {}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn errno_name(e: i32) -> String {
    let n = match e {
        0 => "ok",
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOMSG => "ENOMSG",
        libc::EOVERFLOW => "EOVERFLOW",
        _ => return format!("errno{e}"),
    };
    n.to_string()
}

// ---- Statistics and the trace ----------------------------------------------------------------

#[derive(Default)]
struct Stats {
    counts: BTreeMap<String, u64>,
    trace: Option<std::io::BufWriter<std::fs::File>>,
}

impl Stats {
    fn add(&mut self, key: String) {
        *self.counts.entry(key).or_insert(0) += 1;
    }
    /// One call's outcome; traced when `call` is given.
    fn record(&mut self, call: Option<u64>, op: &str, err: i32) {
        if let (Some(i), Some(t)) = (call, self.trace.as_mut()) {
            let _ = writeln!(t, "call {i} {op} {}", errno_name(err));
        }
        self.add(format!("{op} {}", errno_name(err)));
    }
    fn merge(&mut self, prefix: &str, other: &BTreeMap<String, u64>) {
        for (k, v) in other {
            *self.counts.entry(format!("{prefix}{k}")).or_insert(0) += v;
        }
    }
}

// ---- Batch state -----------------------------------------------------------------------------

struct Mapping {
    addr: usize,
    len: usize,
    /// Whole, read-write and ours to write into.
    writable: bool,
    alive: bool,
}

struct Vcpu {
    fd: i32,
    run: usize,
    run_len: usize,
}

struct Vm {
    fd: i32,
    vcpus: Vec<Vcpu>,
    /// The mapping slot 0 (GPA 0) was made from, if any.
    ram: Option<usize>,
}

struct Batch<'a> {
    dev: &'a CString,
    sc: &'a Scratch,
    supported_cpuid: &'a [u8],
    sys: Vec<i32>,
    vms: Vec<Vm>,
    /// Fds the fuzzer closed or made otherwise (eventfds, dups of other kinds): numbers to misuse.
    other: Vec<i32>,
    maps: Vec<Mapping>,
    mapped: usize,
    /// vCPU-fd mappings made by the mmap call (unmapped at the end).
    extra_maps: Vec<(usize, usize)>,
    mmap_size: usize,
    base_fd: i32,
    call: u64,
    verbose: bool,
    in_child: bool,
}

impl Batch<'_> {
    fn any_vm(&self, r: &mut Rng) -> Option<usize> {
        (!self.vms.is_empty()).then(|| r.below_usize(self.vms.len()))
    }
    fn any_vcpu(&self, r: &mut Rng) -> Option<(usize, usize)> {
        let with: Vec<usize> = (0..self.vms.len()).filter(|&v| !self.vms[v].vcpus.is_empty()).collect();
        if with.is_empty() {
            return None;
        }
        let v = r.pick(&with);
        Some((v, r.below_usize(self.vms[v].vcpus.len())))
    }
    /// An fd of `kind` (or, sometimes, of any kind or a stale number).
    /// A new eventfd (kept among the fds to misuse), signalled a third of the time; -1 if none
    /// could be made.
    fn new_eventfd(&mut self, r: &mut Rng) -> i32 {
        // SAFETY: eventfd has no memory arguments.
        let e = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if e >= 0 {
            self.other.push(e);
            if r.pct(33) {
                let one = 1u64;
                // SAFETY: eight bytes from a u64.
                unsafe { libc::write(e, (&raw const one).cast(), 8) };
            }
        }
        e
    }

    fn fd_of(&self, r: &mut Rng, kind: Kind) -> i32 {
        if r.pct(8) {
            return match r.below(4) {
                0 if !self.other.is_empty() => r.pick(&self.other),
                1 => -1,
                2 => 1000 + r.below(24) as i32,
                _ => self.base_fd + r.below(32) as i32,
            };
        }
        let k = if r.pct(10) { r.pick(&[Kind::Sys, Kind::Vm, Kind::Vcpu]) } else { kind };
        match k {
            Kind::Sys if !self.sys.is_empty() => r.pick(&self.sys),
            Kind::Vm => self.any_vm(r).map_or(-1, |v| self.vms[v].fd),
            Kind::Vcpu => self.any_vcpu(r).map_or(-1, |(v, c)| self.vms[v].vcpus[c].fd),
            _ => -1,
        }
    }

    /// A host address for a memory slot: one of the fuzzer's mappings (aligned or not, whole or
    /// partly), the scratch or read-only area, a kvm_run mapping, or a bad pointer.
    fn slot_uaddr(&self, r: &mut Rng) -> (u64, u64) {
        let live: Vec<&Mapping> = self.maps.iter().filter(|m| m.alive).collect();
        match r.below(12) {
            0..=6 if !live.is_empty() => {
                let m = live[r.below_usize(live.len())];
                let pages = (m.len / PAGE) as u64;
                let off = if r.pct(70) { 0 } else { r.below(pages) * PAGE as u64 };
                let mut a = m.addr as u64 + off;
                if r.pct(5) {
                    a += 1 + r.below(PAGE as u64 - 1);
                }
                (a, m.len as u64 - off)
            }
            7 => (self.sc.rw as u64, SCRATCH as u64),
            8 => (self.sc.ro as u64, SCRATCH as u64),
            9 => match self.any_vcpu(r) {
                Some((v, c)) if self.vms[v].vcpus[c].run != 0 => (self.vms[v].vcpus[c].run as u64, PAGE as u64),
                _ => (0, PAGE as u64),
            },
            _ => (bad_pointer(r, self.sc) as u64 & !0xfff, PAGE as u64),
        }
    }

    /// A random memory region (kvm_userspace_memory_region).
    fn region(&self, r: &mut Rng) -> [u8; 32] {
        let slot: u32 = match r.below(10) {
            0..=5 => r.below(5) as u32,
            6 => r.below(40) as u32,
            7 => 1 << 16 | r.below(4) as u32,
            8 => r.pick(&[509, 510, 511, 512, 32767, 32768, 0xffff, u32::MAX]),
            _ => r.next() as u32,
        };
        let flags: u32 = match r.below(10) {
            0..=5 => 0,
            6 => 1,
            7 => 2,
            8 => 3,
            _ => { let x = r.next() as u32; r.pick(&[4, 8, 0x10, x]) }
        };
        let (uaddr, avail) = self.slot_uaddr(r);
        let size: u64 = match r.below(12) {
            0..=1 => 0,
            // Mostly a few pages: pinning is what a call costs most (Bochs, debug kernel).
            2..=6 => (1 + r.below((avail / PAGE as u64).clamp(1, 16))) * PAGE as u64,
            7 => if r.pct(30) { avail } else { (1 + r.below(avail.max(PAGE as u64) / PAGE as u64)) * PAGE as u64 },
            8 => 1 << r.pick(&[21, 30, 40, 47, 52, 63]),
            9 => r.below(0x10000),
            10 => u64::MAX & !0xfff,
            _ => value(r),
        };
        let gpa: u64 = match r.below(12) {
            0..=3 => 0,
            4..=6 => r.below(0x10_0000) & !0xfff,
            7 => r.below(0x1_0000_0000) & !0xfff,
            8 => 0xfee0_0000,
            9 => r.pick(&[1 << 36, 1 << 46, 1 << 52, (1u64 << 52) - 0x1000, u64::MAX & !0xfff]),
            10 => r.below(0x10_0000),
            _ => value(r),
        };
        let mut b = [0u8; 32];
        put32(&mut b, 0, slot);
        put32(&mut b, 4, flags);
        put64(&mut b, 8, gpa);
        put64(&mut b, 16, size);
        put64(&mut b, 24, uaddr);
        b
    }
}

// ---- The calls -------------------------------------------------------------------------------

/// Guests that exit at once (real mode, code at GPA 0x1000), a spin with IF=1, random bytes.
const GUESTS: &[&[u8]] = &[
    &[0xf4],                                                       // hlt
    &[0xe6, 0x10, 0xf4],                                           // out 0x10, al; hlt
    &[0xe4, 0x10, 0xf4],                                           // in al, 0x10; hlt
    &[0x66, 0xed, 0xf4],                                           // in eax, dx; hlt
    &[0xb8, 0x00, 0x20, 0x8e, 0xd8, 0xa2, 0x00, 0x00, 0xf4],       // mov ds,0x2000; mov [0],al: MMIO
    &[0xb8, 0x00, 0x20, 0x8e, 0xd8, 0xa0, 0x00, 0x00, 0xf4],       // MMIO read
    &[0x0f, 0xa2, 0xf4],                                           // cpuid; hlt
    &[0x0f, 0x01, 0xc1, 0xf4],                                     // vmcall; hlt
    &[0x0f, 0x32, 0xf4],                                           // rdmsr; hlt
    &[0xf3, 0x6e, 0xf4],                                           // rep outsb; hlt
    &[0xfb, 0xeb, 0xfe],                                           // sti; jmp $ (kicked)
    &[0x0f, 0x0b],                                                 // ud2
];

impl Batch<'_> {
    fn ioctl(&self, slot: usize, fd: i32, cmd: u64, arg: usize) -> (i64, i32) {
        let budget = if cmd == KVM_RUN { 30 } else { 2000 };
        watched(slot, self.call, cmd, budget, || {
            // SAFETY: the kernel checks every argument: that is what is being fuzzed. Pointers
            // into this process point at the scratch areas or at memory the fuzzer does not use.
            let ret = unsafe { libc::ioctl(fd, cmd as _, arg) };
            (ret as i64, if ret < 0 { errno() } else { 0 })
        })
    }

    /// Issues `cmd` on `fd` with `arg` and records it as OP@KIND.
    fn call_ioctl(&mut self, st: &mut Stats, kind: &str, fd: i32, cmd: u64, arg: usize) -> (i64, i32) {
        let name = ioctl_name(cmd);
        if self.verbose {
            eprintln!("call {} {name}@{kind} fd {fd} cmd {cmd:#x} arg {arg:#x}", self.call);
        }
        let (ret, e) = self.ioctl(0, fd, cmd, arg);
        st.record((!self.in_child).then_some(self.call), &format!("{name}@{kind}"), e);
        // New fds from random or unexpected calls are closed at the end of the batch.
        if e == 0 && (cmd == KVM_GET_STATS_FD || (name == "random" && ret > 2)) {
            self.other.push(ret as i32);
        }
        (ret, e)
    }

    /// The argument bytes for `cmd`: random or mutated-valid.
    fn arg_bytes(&mut self, r: &mut Rng, st: &mut Stats, cmd: u64, fd: i32) -> Vec<u8> {
        let size = ((cmd >> 16) & 0x3fff) as usize;
        let mut b = vec![0u8; size];
        match cmd {
            KVM_SET_USER_MEMORY_REGION => b.copy_from_slice(&self.region(r)),
            KVM_SET_USER_MEMORY_REGION2 => {
                b[..32].copy_from_slice(&self.region(r));
                if r.pct(20) {
                    r.fill(&mut b[32..]);
                }
            }
            KVM_GET_DIRTY_LOG => {
                put32(&mut b, 0, if r.pct(80) { r.below(5) as u32 } else { r.next() as u32 });
                let p = if r.pct(60) { self.sc.rw as u64 } else if r.pct(50) { self.sc.ro as u64 } else { bad_pointer(r, self.sc) as u64 };
                put64(&mut b, 8, p);
            }
            KVM_CLEAR_DIRTY_LOG => {
                put32(&mut b, 0, r.below(5) as u32);
                put32(&mut b, 4, if r.pct(50) { 64 * r.below(4) as u32 } else { r.next() as u32 });
                put64(&mut b, 8, if r.pct(50) { 64 * r.below(4) } else { value(r) });
                put64(&mut b, 16, if r.pct(60) { self.sc.rw as u64 } else { bad_pointer(r, self.sc) as u64 });
            }
            KVM_IOEVENTFD => {
                put64(&mut b, 0, value(r));
                put64(&mut b, 8, if r.pct(50) { r.below(0x10000) } else { value(r) });
                let x = r.next() as u32;
                put32(&mut b, 16, r.pick(&[0, 1, 2, 4, 8, 3, 16, x]));
                let efd = if r.pct(60) { self.new_eventfd(r) } else { self.fd_of(r, Kind::Vm) };
                put32(&mut b, 20, efd as u32);
                put32(&mut b, 24, if r.pct(70) { r.below(8) as u32 } else { r.next() as u32 });
                if r.pct(10) {
                    r.fill(&mut b[28..]);
                }
            }
            // Irqfds, resampling ones too, on the first GSIs (the chips' pins) or any; their
            // eventfds sometimes already signalled, so the assignment injects at once.
            KVM_IRQFD => {
                let fd = if r.pct(70) { self.new_eventfd(r) } else { self.fd_of(r, Kind::Vm) };
                put32(&mut b, 0, fd as u32);
                put32(&mut b, 4, if r.pct(80) { r.below(26) as u32 } else { r.next() as u32 });
                let x = r.next() as u32;
                put32(&mut b, 8, r.pick(&[0, 0, 1, 2, 2, 3, 4, x]));
                let rfd = if r.pct(70) { self.new_eventfd(r) } else { self.fd_of(r, Kind::Vm) };
                put32(&mut b, 12, rfd as u32);
                if r.pct(10) {
                    r.fill(&mut b[16..]);
                }
            }
            // Zones over the tiny guests' port and MMIO writes (port 0x10, GPA 0x20000) or
            // anywhere, of any size and bus.
            KVM_REGISTER_COALESCED_MMIO | KVM_UNREGISTER_COALESCED_MMIO => {
                put64(&mut b, 0, match r.below(4) {
                    0 => 0x10 - r.below(4),
                    1 => 0x20000 - r.below(4),
                    2 => r.below(0x10000),
                    _ => value(r),
                });
                let x = r.next() as u32;
                put32(&mut b, 8, r.pick(&[0, 1, 2, 4, 8, 0x1000, u32::MAX, x]));
                put32(&mut b, 12, r.pick(&[0, 1, 1, 0, 2, x]));
            }
            KVM_GET_SUPPORTED_CPUID | KVM_GET_EMULATED_CPUID | KVM_GET_CPUID2 | KVM_SET_CPUID2 => {
                let nent = match r.below(8) {
                    0 => 0,
                    1 => 1,
                    2..=4 => r.below(100) as u32,
                    5 => r.pick(&[255, 256, 257, 1024]),
                    6 => (SCRATCH / CPUID_ENTRY) as u32 + r.below(4) as u32,
                    _ => r.next() as u32,
                };
                let fit = (nent as usize).min((SCRATCH - 8) / CPUID_ENTRY);
                b = vec![0u8; 8 + fit * CPUID_ENTRY];
                put32(&mut b, 0, nent);
                if cmd == KVM_SET_CPUID2 {
                    let sup = self.supported_cpuid.len() / CPUID_ENTRY;
                    for e in 0..fit {
                        let d = &mut b[8 + e * CPUID_ENTRY..8 + (e + 1) * CPUID_ENTRY];
                        if sup > 0 && r.pct(80) {
                            let s = e % sup;
                            d.copy_from_slice(&self.supported_cpuid[s * CPUID_ENTRY..(s + 1) * CPUID_ENTRY]);
                            if r.pct(20) {
                                let w = 3 + r.below_usize(4);
                                put32(d, w * 4, value(r) as u32);
                            }
                        } else {
                            r.fill(d);
                        }
                    }
                }
            }
            KVM_GET_MSR_INDEX_LIST | KVM_GET_MSR_FEATURE_INDEX_LIST => {
                let n = match r.below(5) {
                    0 => 0,
                    1 => r.below(64) as u32,
                    2 => r.pick(&[255, 256, 1000]),
                    3 => ((SCRATCH - 4) / 4) as u32 + r.below(4) as u32,
                    _ => r.next() as u32,
                };
                b = vec![0u8; 4 + 4 * (n as usize).min((SCRATCH - 4) / 4)];
                put32(&mut b, 0, n);
            }
            KVM_GET_MSRS | KVM_SET_MSRS => {
                let n = match r.below(8) {
                    0 => 0,
                    1..=4 => 1 + r.below(16) as u32,
                    5 => r.pick(&[255, 256, 257]),
                    6 => ((SCRATCH - 8) / MSR_ENTRY) as u32 + r.below(4) as u32,
                    _ => r.next() as u32,
                };
                let fit = (n as usize).min((SCRATCH - 8) / MSR_ENTRY);
                b = vec![0u8; 8 + fit * MSR_ENTRY];
                put32(&mut b, 0, n);
                for e in 0..fit {
                    let o = 8 + e * MSR_ENTRY;
                    put32(&mut b, o, if r.pct(85) { r.pick(MSRS) } else { r.next() as u32 });
                    put64(&mut b, o + 8, value(r));
                }
            }
            KVM_SET_SIGNAL_MASK => {
                let x = r.next() as u32;
                let len = r.pick(&[8, 8, 8, 0, 4, 16, x]);
                b = vec![0u8; 4 + 16];
                put32(&mut b, 0, len);
                // Never block the watchdog's kick (SIGUSR1) or SIGKILL-like signals' friends.
                let mask = r.next() & !(1 << (libc::SIGUSR1 - 1)) & !(1 << (libc::SIGALRM - 1));
                put64(&mut b, 4, mask);
            }
            KVM_SET_REGS | KVM_SET_SREGS | KVM_SET_FPU | KVM_SET_XSAVE | KVM_SET_XCRS | KVM_SET_DEBUGREGS
            | KVM_SET_VCPU_EVENTS | KVM_SET_LAPIC => {
                // Mostly a GET result with fields changed; else random or zero.
                let get = match cmd {
                    KVM_SET_REGS => KVM_GET_REGS,
                    KVM_SET_SREGS => KVM_GET_SREGS,
                    KVM_SET_FPU => KVM_GET_FPU,
                    KVM_SET_XSAVE => KVM_GET_XSAVE,
                    KVM_SET_XCRS => KVM_GET_XCRS,
                    KVM_SET_DEBUGREGS => KVM_GET_DEBUGREGS,
                    KVM_SET_VCPU_EVENTS => KVM_GET_VCPU_EVENTS,
                    _ => KVM_GET_LAPIC,
                };
                match r.below(10) {
                    0..=5 => {
                        let (_, e) = self.call_ioctl(st, "vcpu", fd, get, self.sc.rw as usize);
                        if e == 0 {
                            // SAFETY: the GET wrote `size` bytes into the scratch.
                            unsafe { ptr::copy_nonoverlapping(self.sc.rw, b.as_mut_ptr(), size) };
                        }
                        for _ in 0..1 + r.below(4) {
                            let at = r.below_usize(size / 8) * 8;
                            match r.below(3) {
                                0 => put64(&mut b, at, value(r)),
                                1 => b[at + r.below_usize(8)] ^= 1 << r.below(8),
                                _ => put32(&mut b, at, r.next() as u32),
                            }
                        }
                        if cmd == KVM_SET_XCRS && r.pct(50) {
                            put32(&mut b, 0, r.pick(&[0, 1, 2, 16, 17, u32::MAX]));
                        }
                    }
                    6..=8 => r.fill(&mut b),
                    _ => {}
                }
            }
            KVM_SET_MP_STATE => put32(&mut b, 0, if r.pct(80) { r.below(10) as u32 } else { r.next() as u32 }),
            KVM_INTERRUPT => put32(&mut b, 0, if r.pct(80) { r.below(256) as u32 } else { r.next() as u32 }),
            KVM_SET_GUEST_DEBUG => {
                let control = match r.below(6) {
                    0 => 0,
                    1 => 1,
                    2 => 3,
                    3 => 1 | 0x20000,
                    4 => 1 | 0x10000 | 0x40000,
                    _ => r.next() as u32,
                };
                put32(&mut b, 0, control);
                for k in 0..8 {
                    put64(&mut b, 8 + 8 * k, if r.pct(50) { 0x1000 + r.below(16) } else { value(r) });
                }
            }
            KVM_X86_SETUP_MCE | KVM_SET_IDENTITY_MAP_ADDR => put64(&mut b, 0, value(r)),
            // struct kvm_enable_cap: cap, flags, args[4].
            KVM_ENABLE_CAP if r.pct(70) => {
                put32(&mut b, 0, r.pick(ENABLE_CAPS));
                put32(&mut b, 4, if r.pct(90) { 0 } else { value(r) as u32 });
                for k in 0..4 {
                    put64(&mut b, 8 + 8 * k, if r.pct(50) { r.below(32) } else { value(r) });
                }
            }
            KVM_TRANSLATE => put64(&mut b, 0, value(r)),
            // A GSI mostly among the default routes' (the PIC's and IOAPIC's pins), any level.
            KVM_IRQ_LINE | KVM_IRQ_LINE_STATUS => {
                put32(&mut b, 0, if r.pct(80) { r.below(26) as u32 } else { value(r) as u32 });
                put32(&mut b, 4, if r.pct(80) { r.below(2) as u32 } else { value(r) as u32 });
            }
            // struct kvm_irqchip: a chip id, then a PIC or IOAPIC state of random bytes (or a
            // GET's result with some changed).
            // struct kvm_pit_state2: channels with small counts and modes mostly, any flags.
            KVM_SET_PIT2 => {
                r.fill(&mut b);
                for ch in 0..3 {
                    put32(&mut b, ch * 24, if r.pct(70) { r.below(0x10001) as u32 } else { value(r) as u32 });
                    if r.pct(70) {
                        b[ch * 24 + 13] = r.below(8) as u8; // mode
                    }
                }
                let x = r.next() as u32;
                put32(&mut b, 72, r.pick(&[0, 1, 2, 3, x]));
            }
            KVM_GET_IRQCHIP | KVM_SET_IRQCHIP => {
                r.fill(&mut b);
                put32(&mut b, 0, if r.pct(85) { r.below(4) as u32 } else { value(r) as u32 });
            }
            _ => {
                if r.pct(70) {
                    r.fill(&mut b);
                }
            }
        }
        b
    }

    /// An ioctl on an fd of `kind`.
    fn fuzz_ioctl(&mut self, r: &mut Rng, st: &mut Stats, kind: Kind) {
        let fd = self.fd_of(r, kind);
        let kname = match kind {
            Kind::Sys => "sys",
            Kind::Vm => "vm",
            Kind::Vcpu => "vcpu",
        };
        let cmd = if r.pct(12) {
            // A random number: random direction, size, type and nr. Types other than KVM's are
            // kept away from the VFS's own (FIFREEZE is 'X': it would freeze devtmpfs).
            let ty = if r.pct(85) { KVMIO } else { r.pick(&[0x00, 0x01, 0xaf, 0xff]) };
            let size = match r.below(4) {
                0 => 0,
                1 => r.below(0x40),
                2 => r.below(0x1000),
                _ => r.below(0x4000),
            };
            r.below(4) << 30 | size << 16 | ty << 8 | r.below(256)
        } else {
            let list: Vec<u64> = IOCTLS.iter().filter(|e| e.2 == kind || r.pct(3)).map(|e| e.1).collect();
            r.pick(&list)
        };
        if cmd == KVM_CREATE_VM || cmd == KVM_CREATE_VCPU || cmd == KVM_RUN {
            // These have their own calls (with bookkeeping); here they only get random args.
            let arg = if r.pct(50) { r.below(4) as usize } else { value(r) as usize };
            let (ret, e) = self.call_ioctl(st, kname, fd, cmd, arg);
            if e == 0 && cmd != KVM_RUN {
                self.other.push(ret as i32);
            }
            return;
        }
        let dir = cmd >> 30;
        let arg = if dir == 0 {
            // _IO: a value (capability, TSC kHz, TSS address) or, sometimes, a pointer.
            match r.below(6) {
                0 => r.below(16) as usize,
                1 => r.below(300) as usize,
                2 => r.pick(&[0, 1, 100_000, 1_000_000, 4_000_000, u32::MAX as u64]) as usize,
                3 => 0xfffb_d000,
                4 => self.sc.rw as usize,
                _ => value(r) as usize,
            }
        } else {
            let b = self.arg_bytes(r, st, cmd, fd);
            place(r, self.sc, &b)
        };
        self.call_ioctl(st, kname, fd, cmd, arg);
    }

    fn create_vm(&mut self, r: &mut Rng, st: &mut Stats) {
        if self.vms.len() >= MAX_VMS || self.sys.is_empty() {
            return self.fuzz_ioctl(r, st, Kind::Sys);
        }
        let fd = r.pick(&self.sys);
        let ty = if r.pct(95) { 0 } else { value(r) as usize };
        let (ret, e) = self.call_ioctl(st, "sys", fd, KVM_CREATE_VM, ty);
        if e != 0 {
            return;
        }
        let mut vm = Vm { fd: ret as i32, vcpus: Vec::new(), ram: None };
        if r.pct(50) {
            // The split irqchip, before any vCPU: 0 or 24 IOAPIC routes, or anything.
            let mut cap = [0u8; 104];
            put32(&mut cap, 0, CAP_SPLIT_IRQCHIP);
            put64(&mut cap, 8, if r.pct(80) { r.pick(&[0, 24]) } else { value(r) });
            self.call_ioctl(st, "vm", vm.fd, KVM_ENABLE_CAP, cap.as_ptr() as usize);
        }
        if r.pct(80) {
            if let Some(m) = self.new_mapping(r, 0x10000, true) {
                let mut reg = [0u8; 32];
                put64(&mut reg, 16, 0x10000);
                put64(&mut reg, 24, self.maps[m].addr as u64);
                let (_, e) = self.call_ioctl(st, "vm", vm.fd, KVM_SET_USER_MEMORY_REGION, reg.as_ptr() as usize);
                if e == 0 {
                    vm.ram = Some(m);
                }
            }
        }
        self.vms.push(vm);
    }

    fn create_vcpu(&mut self, r: &mut Rng, st: &mut Stats) {
        let Some(v) = self.any_vm(r) else { return self.create_vm(r, st) };
        if self.vms[v].vcpus.len() >= MAX_VCPUS {
            return self.fuzz_ioctl(r, st, Kind::Vcpu);
        }
        let id = match r.below(10) {
            0..=6 => r.below(4),
            7 => r.pick(&[7, 8, 9, 255, 1023, 1024]),
            _ => value(r),
        };
        let (ret, e) = self.call_ioctl(st, "vm", self.vms[v].fd, KVM_CREATE_VCPU, id as usize);
        if e != 0 {
            return;
        }
        let fd = ret as i32;
        let len = self.mmap_size.max(PAGE);
        // SAFETY: maps the vCPU's kvm_run; the fuzzer only reads exit_reason from it.
        let p = unsafe { libc::mmap(ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0) };
        let run = if p == libc::MAP_FAILED {
            st.record(None, "mmap_kvm_run", errno());
            0
        } else {
            p as usize
        };
        self.vms[v].vcpus.push(Vcpu { fd, run, run_len: len });
    }

    /// A new anonymous mapping (within the budget): its index.
    fn new_mapping(&mut self, r: &mut Rng, len: usize, writable: bool) -> Option<usize> {
        if self.mapped + len > MAX_MAPPED || self.maps.len() >= MAX_MAPPINGS {
            return None;
        }
        let ro = !writable && r.pct(20);
        let prot = if ro { libc::PROT_READ } else { libc::PROT_READ | libc::PROT_WRITE };
        let p = mmap_anon(len, prot, r.pct(20));
        if p.is_null() {
            return None;
        }
        if !ro && r.pct(50) {
            // SAFETY: the first page of a fresh RW mapping.
            unsafe { ptr::write_bytes(p, r.next() as u8, PAGE.min(len)) };
        }
        self.mapped += len;
        self.maps.push(Mapping { addr: p as usize, len, writable: !ro, alive: true });
        Some(self.maps.len() - 1)
    }

    fn map_memory(&mut self, r: &mut Rng, st: &mut Stats) {
        let len = match r.below(6) {
            0 => PAGE,
            1 => 0x10000,
            2 => 2 << 20,
            3 => (2 << 20) + PAGE,
            _ => (1 + r.below(256) as usize) * PAGE,
        };
        let ok = self.new_mapping(r, len, false).is_some();
        st.add(format!("mmap_anon {}", if ok { "ok" } else { "skipped" }));
    }

    /// munmap of slot memory: a whole mapping, a page of it, or a fresh mapping over it.
    fn unmap_memory(&mut self, r: &mut Rng, st: &mut Stats) {
        let live: Vec<usize> = (0..self.maps.len()).filter(|&i| self.maps[i].alive).collect();
        if live.is_empty() {
            return self.map_memory(r, st);
        }
        let i = r.pick(&live);
        let (addr, len) = (self.maps[i].addr, self.maps[i].len);
        let how = r.below(3);
        // SAFETY: the fuzzer's own mapping; nothing of the fuzzer's refers into it afterwards
        // (writable is cleared).
        let ret = unsafe {
            match how {
                0 => libc::munmap(addr as _, len),
                1 => libc::munmap((addr + r.below_usize(len / PAGE) * PAGE) as _, PAGE),
                _ => {
                    let p = libc::mmap(addr as _, len, libc::PROT_READ | libc::PROT_WRITE,
                                       libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED, -1, 0);
                    if p == libc::MAP_FAILED { -1 } else { 0 }
                }
            }
        };
        self.maps[i].writable = how == 2 && ret == 0;
        // A mapping with a hole is not touched again, not even by the batch's cleanup: the hole
        // may hold someone else's mapping by then (the fuzzer's own heap: it crashed).
        self.maps[i].alive = how == 2;
        st.record(Some(self.call), ["munmap_slot_memory", "munmap_slot_page", "remap_slot_memory"][how as usize],
                  if ret == 0 { 0 } else { errno() });
    }

    fn munmap_run(&mut self, r: &mut Rng, st: &mut Stats) {
        let Some((v, c)) = self.any_vcpu(r) else { return self.create_vcpu(r, st) };
        let vc = &mut self.vms[v].vcpus[c];
        if vc.run == 0 {
            return;
        }
        // SAFETY: the fuzzer's own kvm_run mapping, forgotten here.
        let ret = unsafe { libc::munmap(vc.run as _, if r.pct(70) { vc.run_len } else { PAGE }) };
        vc.run = 0;
        st.record(Some(self.call), "munmap_kvm_run", if ret == 0 { 0 } else { errno() });
    }

    /// mmap of a vCPU (or other) fd at a random offset and size, touched in a child.
    fn mmap_fd(&mut self, r: &mut Rng, st: &mut Stats) {
        let fd = self.fd_of(r, Kind::Vcpu);
        let off = match r.below(6) {
            0..=2 => r.below(4) as i64,
            3 => r.pick(&[64, 1 << 20]),
            4 => -1,
            _ => r.next() as i64 & 0xfff_ffff,
        } * PAGE as i64;
        let len = match r.below(5) {
            0 => 0,
            1..=3 => (1 + r.below(4) as usize) * PAGE,
            _ => 1 + r.below(0x10000) as usize,
        };
        let prot = r.pick(&[libc::PROT_READ, libc::PROT_READ | libc::PROT_WRITE, libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC, libc::PROT_NONE]);
        let flags = if r.pct(80) { libc::MAP_SHARED } else { libc::MAP_PRIVATE };
        // SAFETY: a new mapping the fuzzer touches only in a child.
        let p = unsafe { libc::mmap(ptr::null_mut(), len, prot, flags, fd, off) };
        if p == libc::MAP_FAILED {
            st.record(Some(self.call), "mmap_vcpu_fd", errno());
            return;
        }
        st.record(Some(self.call), "mmap_vcpu_fd", 0);
        let write = prot & libc::PROT_WRITE != 0 && r.pct(50);
        if !self.in_child && prot != libc::PROT_NONE && r.pct(50) {
            let (addr, pages) = (p as usize, len.div_ceil(PAGE));
            let outcome = in_fork(self.call, st, |_| {
                for k in 0..pages {
                    // SAFETY: a child touching a mapping; a signal is an outcome.
                    unsafe {
                        let a = (addr + k * PAGE) as *mut u8;
                        let v = ptr::read_volatile(a);
                        if write {
                            ptr::write_volatile(a, v);
                        }
                    }
                }
            }, &[libc::SIGBUS, libc::SIGSEGV]);
            st.add(format!("touch_vcpu_mapping {outcome}"));
        }
        if self.extra_maps.len() < 16 && r.pct(50) {
            self.extra_maps.push((p as usize, len));
        } else {
            // SAFETY: the mapping just made.
            unsafe { libc::munmap(p, len) };
        }
    }

    /// fork: the child makes random calls on the inherited fds.
    fn fork_calls(&mut self, r: &mut Rng, st: &mut Stats, seed: u64) {
        let call = self.call;
        let n = 1 + r.below(12);
        // The child works on its copy of this batch's bookkeeping; a SIGALRM every 50 ms ends
        // its blocking calls (it has no watchdog thread).
        let outcome = in_fork(call, st, |cs| {
            self.in_child = true;
            let t = libc::itimerval {
                it_interval: libc::timeval { tv_sec: 0, tv_usec: 50_000 },
                it_value: libc::timeval { tv_sec: 0, tv_usec: 50_000 },
            };
            // SAFETY: setitimer reads `t`; SIGALRM has the empty handler.
            unsafe { libc::setitimer(libc::ITIMER_REAL, &t, ptr::null_mut()) };
            let mut cr = Rng::new(seed, 3, call);
            for _ in 0..n {
                self.step(&mut cr, cs, seed, true);
            }
        }, &[]);
        st.add(format!("fork_child {outcome}"));
    }

    /// Threads run vCPUs while this thread changes slots, unmaps memory and closes fds.
    fn race(&mut self, r: &mut Rng, st: &mut Stats) {
        let Some((v, _)) = self.any_vcpu(r) else { return self.create_vcpu(r, st) };
        let nthreads = 1 + r.below_usize(2.min(self.vms[v].vcpus.len()));
        for c in 0..self.vms[v].vcpus.len() {
            if r.pct(70) {
                self.prepare_guest(r, st, v, c);
            }
        }
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let call = self.call;
        // The VM may leave self.vms while the threads run (close_fd).
        let vm_fd = self.vms[v].fd;
        let mut handles = Vec::new();
        for t in 0..nthreads {
            let fd = self.vms[v].vcpus[t].fd;
            let runs = 1 + r.below(8);
            let stop = stop.clone();
            handles.push(std::thread::spawn(move || {
                let mut counts: BTreeMap<String, u64> = BTreeMap::new();
                for _ in 0..runs {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let e = watched(1 + t, call, KVM_RUN, 30, || {
                        // SAFETY: KVM_RUN takes no argument.
                        let ret = unsafe { libc::ioctl(fd, KVM_RUN as _, 0) };
                        if ret < 0 { errno() } else { 0 }
                    });
                    *counts.entry(format!("KVM_RUN@vcpu {}", errno_name(e))).or_insert(0) += 1;
                }
                counts
            }));
        }
        for _ in 0..2 + r.below(10) {
            match r.below(10) {
                0..=3 => {
                    let b = self.region(r);
                    let fd = if r.pct(90) { vm_fd } else { self.fd_of(r, Kind::Vm) };
                    // SAFETY: the region bytes live on the stack for the call.
                    self.call_ioctl(st, "vm", fd, KVM_SET_USER_MEMORY_REGION, b.as_ptr() as usize);
                }
                4 => self.unmap_memory(r, st),
                5 => self.close_fd(r, st),
                6 => self.dup_fd(r, st),
                7 => self.munmap_run(r, st),
                _ => self.fuzz_ioctl(r, st, Kind::Vcpu),
            }
        }
        stop.store(true, Ordering::SeqCst);
        for h in handles {
            match h.join() {
                Ok(c) => st.merge("race ", &c),
                Err(_) => st.add("race thread_panicked".into()),
            }
        }
    }

    /// Code at GPA 0x1000 of slot 0's memory, and real-mode state to run it.
    fn prepare_guest(&mut self, r: &mut Rng, st: &mut Stats, v: usize, c: usize) {
        let fd = self.vms[v].vcpus[c].fd;
        if let Some(m) = self.vms[v].ram {
            let m = &self.maps[m];
            if m.alive && m.writable && m.len >= 0x2000 {
                let mut code = [0u8; 16];
                if r.pct(5) {
                    r.fill(&mut code);
                } else {
                    let g = r.pick(GUESTS);
                    code[..g.len()].copy_from_slice(g);
                }
                // SAFETY: 16 bytes at 0x1000 of a live, whole RW mapping of at least 8 KiB.
                unsafe { ptr::copy_nonoverlapping(code.as_ptr(), (m.addr + 0x1000) as *mut u8, 16) };
            }
        }
        let sregs = self.sc.rw as usize + SCRATCH - SREGS - REGS;
        let (_, e) = self.call_ioctl(st, "vcpu", fd, KVM_GET_SREGS, sregs);
        if e == 0 {
            // SAFETY: cs.base at 0 and cs.selector at 12 of the sregs just read.
            unsafe {
                ptr::write_unaligned(sregs as *mut u64, 0);
                ptr::write_unaligned((sregs + 12) as *mut u16, 0);
            }
            self.call_ioctl(st, "vcpu", fd, KVM_SET_SREGS, sregs);
        }
        let mut regs = [0u8; REGS];
        put64(&mut regs, 128, 0x1000);
        put64(&mut regs, 136, if r.pct(50) { 0x202 } else { 2 });
        put64(&mut regs, 16, 0x10); // rdx: a port
        self.call_ioctl(st, "vcpu", fd, KVM_SET_REGS, regs.as_ptr() as usize);
    }

    fn run_vcpu(&mut self, r: &mut Rng, st: &mut Stats) {
        let Some((v, c)) = self.any_vcpu(r) else { return self.create_vcpu(r, st) };
        if r.pct(70) {
            self.prepare_guest(r, st, v, c);
        }
        let vc = &self.vms[v].vcpus[c];
        let (fd, run) = (vc.fd, vc.run);
        if run != 0 && r.pct(10) {
            // SAFETY: immediate_exit (offset 1) of a live kvm_run mapping.
            unsafe { ptr::write_volatile((run + 1) as *mut u8, 1) };
        }
        let (_, e) = self.call_ioctl(st, "vcpu", fd, KVM_RUN, 0);
        if run != 0 {
            // SAFETY: exit_reason (offset 8) of a live kvm_run mapping.
            let reason = unsafe { ptr::read_volatile((run + 8) as *const u32) };
            unsafe { ptr::write_volatile((run + 1) as *mut u8, 0) };
            if e == 0 {
                st.add(format!("KVM_RUN exit_reason {reason}"));
            }
        }
    }

    fn close_fd(&mut self, r: &mut Rng, st: &mut Stats) {
        let (fd, what) = match r.below(5) {
            0 if self.sys.len() > 1 => {
                let i = r.below_usize(self.sys.len());
                (self.sys.remove(i), "sys")
            }
            1 | 2 if !self.vms.is_empty() => {
                let v = r.below_usize(self.vms.len());
                let vm = self.vms.remove(v);
                // Its vCPUs stay open (they hold the VM) as numbers to misuse.
                for vc in &vm.vcpus {
                    self.other.push(vc.fd);
                    if vc.run != 0 {
                        self.extra_maps.push((vc.run, vc.run_len));
                    }
                }
                (vm.fd, "vm")
            }
            3 => match self.any_vcpu(r) {
                Some((v, c)) => {
                    let vc = self.vms[v].vcpus.remove(c);
                    if vc.run != 0 {
                        self.extra_maps.push((vc.run, vc.run_len));
                    }
                    (vc.fd, "vcpu")
                }
                None => return,
            },
            _ if !self.other.is_empty() => (r.pick(&self.other), "other"),
            _ => return,
        };
        self.other.push(fd);
        // SAFETY: closes a number of this batch's (never below base_fd: stdio, the trace).
        let ret = if fd >= self.base_fd { unsafe { libc::close(fd) } } else { 0 };
        st.record(Some(self.call), &format!("close@{what}"), if ret == 0 { 0 } else { errno() });
    }

    fn dup_fd(&mut self, r: &mut Rng, st: &mut Stats) {
        let kind = r.pick(&[Kind::Sys, Kind::Vm, Kind::Vcpu]);
        let fd = self.fd_of(r, kind);
        if r.pct(70) {
            // SAFETY: dup of a number.
            let n = unsafe { libc::dup(fd) };
            st.record(Some(self.call), "dup", if n >= 0 { 0 } else { errno() });
            if n >= 0 {
                match kind {
                    Kind::Sys => self.sys.push(n),
                    _ => self.other.push(n),
                }
            }
        } else {
            // dup2 over another of this batch's fds (the old object loses a reference).
            let tk = r.pick(&[Kind::Sys, Kind::Vm, Kind::Vcpu]);
            let target = self.fd_of(r, tk);
            if target < self.base_fd {
                return;
            }
            // SAFETY: dup2 onto a number of this batch.
            let n = unsafe { libc::dup2(fd, target) };
            st.record(Some(self.call), "dup2", if n >= 0 { 0 } else { errno() });
        }
    }

    fn reopen(&mut self, st: &mut Stats) {
        // SAFETY: opens the device.
        let fd = unsafe { libc::open(self.dev.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        st.record(Some(self.call), "open_device", if fd >= 0 { 0 } else { errno() });
        if fd >= 0 {
            self.sys.push(fd);
        }
    }

    /// One call.
    fn step(&mut self, r: &mut Rng, st: &mut Stats, seed: u64, child: bool) {
        match r.below(100) {
            0..=11 => self.fuzz_ioctl(r, st, Kind::Sys),
            12..=31 => self.fuzz_ioctl(r, st, Kind::Vm),
            32..=55 => self.fuzz_ioctl(r, st, Kind::Vcpu),
            56..=59 => self.create_vm(r, st),
            60..=64 => self.create_vcpu(r, st),
            65..=74 => self.run_vcpu(r, st),
            75..=77 => self.close_fd(r, st),
            78..=79 => self.dup_fd(r, st),
            80 => self.reopen(st),
            81..=83 => self.map_memory(r, st),
            84..=85 => self.unmap_memory(r, st),
            86 => self.munmap_run(r, st),
            87..=89 => self.mmap_fd(r, st),
            90..=91 if !child => self.fork_calls(r, st, seed),
            92..=94 if !child => self.race(r, st),
            _ => self.fuzz_ioctl(r, st, Kind::Vcpu),
        }
    }

    /// Closes and unmaps everything the batch made.
    fn finish(&mut self) {
        for vm in &self.vms {
            for vc in &vm.vcpus {
                if vc.run != 0 {
                    self.extra_maps.push((vc.run, vc.run_len));
                }
            }
        }
        // SAFETY: the batch's own mappings and fds (everything from base_fd up).
        unsafe {
            for &(a, l) in &self.extra_maps {
                libc::munmap(a as _, l);
            }
            libc::syscall(libc::SYS_close_range, self.base_fd as u32, u32::MAX, 0);
            for m in self.maps.iter().filter(|m| m.alive) {
                libc::munmap(m.addr as _, m.len);
            }
        }
    }
}

/// Runs `f` in a child (for call `call`); returns how it ended: "exit N", "signal N" or
/// "hang". Being killed by a signal in `outcomes` is an outcome; by any other signal (the
/// fuzzer sends its children none, except SIGKILL to a hung one) a finding.
fn in_fork(call: u64, st: &mut Stats, f: impl FnOnce(&mut Stats), outcomes: &[i32]) -> String {
    let mut pipe = [0i32; 2];
    // SAFETY: pipe writes two fds.
    if unsafe { libc::pipe(pipe.as_mut_ptr()) } != 0 {
        return "no pipe".into();
    }
    let _ = std::io::stdout().flush();
    // SAFETY: the child runs only `f` and then _exit; no locks are held by this thread.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: closing the read end in the child.
        unsafe { libc::close(pipe[0]) };
        let mut cs = Stats::default();
        f(&mut cs);
        let mut out = String::new();
        for (k, v) in &cs.counts {
            out.push_str(&format!("{v} {k}\n"));
        }
        // SAFETY: writes the child's counts to the pipe, then exits without unwinding.
        unsafe {
            libc::write(pipe[1], out.as_ptr() as _, out.len());
            libc::_exit(0);
        }
    }
    // SAFETY: the parent's copy of the write end.
    unsafe { libc::close(pipe[1]) };
    if pid < 0 {
        // SAFETY: closing our pipe.
        unsafe { libc::close(pipe[0]) };
        return format!("fork {}", errno_name(errno()));
    }
    let t0 = now_ms();
    let mut status = 0;
    let mut killed = false;
    loop {
        // SAFETY: waits for our own child.
        let w = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if w == pid {
            break;
        }
        if !killed && now_ms() > t0 + 10_000 {
            finding(&format!("hang: a forked child (call {}) did not finish in 10 s; killed it", call));
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        // SAFETY: no memory effects.
        unsafe { libc::usleep(1000) };
    }
    let mut buf = vec![0u8; 65536];
    // SAFETY: reads into `buf`.
    let n = unsafe { libc::read(pipe[0], buf.as_mut_ptr() as _, buf.len()) };
    // SAFETY: our read end.
    unsafe { libc::close(pipe[0]) };
    if n > 0 {
        for line in String::from_utf8_lossy(&buf[..n as usize]).lines() {
            if let Some((v, k)) = line.split_once(' ') {
                *st.counts.entry(format!("child {k}")).or_insert(0) += v.parse::<u64>().unwrap_or(0);
            }
        }
    }
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        if killed && sig == libc::SIGKILL {
            return "hang".into();
        }
        if !outcomes.contains(&sig) {
            finding(&format!("a forked child (call {}) was killed by signal {sig}", call));
        }
        format!("signal {sig}")
    } else {
        format!("exit {}", libc::WEXITSTATUS(status))
    }
}

// ---- Trace comparison ------------------------------------------------------------------------

/// Reads a trace: call index -> "OP RESULT".
fn read_trace(path: &str) -> std::io::Result<BTreeMap<u64, Vec<String>>> {
    let mut m: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for line in std::fs::read_to_string(path)?.lines() {
        let mut w = line.splitn(3, ' ');
        if let (Some("call"), Some(i), Some(rest)) = (w.next(), w.next(), w.next()) {
            if let Ok(i) = i.parse() {
                m.entry(i).or_default().push(rest.to_string());
            }
        }
    }
    Ok(m)
}

fn compare(a: &str, b: &str, batch: u64) -> ExitCode {
    let (ta, tb) = match (read_trace(a), read_trace(b)) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("kvm-ioctl-fuzz: cannot read a trace: {e}");
            return ExitCode::from(2);
        }
    };
    // Per batch, the calls stay comparable while both runs make the same operations (the same
    // PRNG draws): an errno that differs there is a mismatch, counted per (op, a, b). Once the
    // operations differ (an outcome changed what the batch had to work with), the rest of the
    // batch is skipped.
    let mut mism: BTreeMap<(String, String, String), (u64, u64)> = BTreeMap::new();
    let (mut compared, mut out_of_step) = (0u64, BTreeMap::new());
    let mut skip_batch = u64::MAX;
    for (i, la) in &ta {
        // Only calls both traces have (runs of different ranges compare on their overlap).
        let Some(lb) = tb.get(i) else { continue };
        if i / batch == skip_batch {
            continue;
        }
        let ops = |l: &Vec<String>| l.iter().map(|x| x.split(' ').next().unwrap_or("").to_string()).collect::<Vec<_>>();
        if ops(la) != ops(lb) {
            skip_batch = i / batch;
            out_of_step.insert(i - i % batch, *i);
            continue;
        }
        compared += 1;
        for (x, y) in la.iter().zip(lb.iter()) {
            if x != y {
                let (op, ea) = x.split_once(' ').unwrap_or((x, ""));
                let eb = y.split_once(' ').map_or("", |p| p.1);
                mism.entry((op.to_string(), ea.to_string(), eb.to_string())).or_insert((0, *i)).0 += 1;
            }
        }
    }
    for ((op, ea, eb), (n, first)) in &mism {
        println!("mismatch {op}: {a} {ea} {b} {eb}: {n} calls, first call {first}");
    }
    for (bs, i) in &out_of_step {
        println!("out of step: batch {bs} from call {i}");
    }
    println!("compare: {} calls in {a}, {} in {b}, {compared} compared, {} kinds of mismatch, {} batches out of step",
             ta.len(), tb.len(), mism.len(), out_of_step.len());
    ExitCode::SUCCESS
}

// ---- main ------------------------------------------------------------------------------------

fn usage() -> ExitCode {
    eprintln!("usage: kvm-ioctl-fuzz DEVICE SEED CALLS [--start N] [--verbose] [--batch B] [--trace FILE]");
    eprintln!("       kvm-ioctl-fuzz --compare TRACE-A TRACE-B [--batch B]");
    ExitCode::from(2)
}

fn parse(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut pos = Vec::new();
    let (mut start, mut batch, mut verbose) = (0u64, 1000u64, false);
    let mut trace = None;
    let mut cmp = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--verbose" | "-v" => verbose = true,
            "--start" => match it.next().and_then(|v| parse(v)) { Some(v) => start = v, None => return usage() },
            "--batch" => match it.next().and_then(|v| parse(v)) { Some(v) if v > 0 => batch = v, _ => return usage() },
            "--trace" => match it.next() { Some(v) => trace = Some(v.clone()), None => return usage() },
            "--compare" => match (it.next(), it.next()) { (Some(x), Some(y)) => cmp = Some((x.clone(), y.clone())), _ => return usage() },
            s if s.starts_with('-') => return usage(),
            _ => pos.push(a.clone()),
        }
    }
    if let Some((a, b)) = cmp {
        return compare(&a, &b, batch);
    }
    let [dev, seed, calls] = &pos[..] else { return usage() };
    let (Some(seed), Some(calls)) = (parse(seed), parse(calls)) else { return usage() };
    let Ok(devc) = CString::new(dev.as_str()) else { return usage() };
    let first = start - start % batch;
    if first != start {
        eprintln!("kvm-ioctl-fuzz: --start {start} rounded down to its batch's first call, {first}");
    }
    let end = start.saturating_add(calls);

    let mut st = Stats::default();
    if let Some(t) = &trace {
        match std::fs::File::create(t) {
            Ok(f) => st.trace = Some(std::io::BufWriter::new(f)),
            Err(e) => {
                eprintln!("kvm-ioctl-fuzz: cannot create {t}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    // The device must open: a fuzzer that tests nothing must not pass.
    // SAFETY: opens the device.
    let probe = unsafe { libc::open(devc.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if probe < 0 {
        eprintln!("kvm-ioctl-fuzz: cannot open {dev}: {}", std::io::Error::last_os_error());
        return ExitCode::from(1);
    }
    // SAFETY: plain ioctls on the probe fd; the CPUID buffer holds 256 entries.
    let (mmap_size, supported) = unsafe {
        let n = libc::ioctl(probe, KVM_GET_VCPU_MMAP_SIZE as _, 0);
        let mut buf = vec![0u8; 8 + 256 * CPUID_ENTRY];
        put32(&mut buf, 0, 256);
        let ok = libc::ioctl(probe, KVM_GET_SUPPORTED_CPUID as _, buf.as_mut_ptr()) == 0;
        let nent = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
        let sup = if ok { buf[8..8 + nent.min(256) * CPUID_ENTRY].to_vec() } else { Vec::new() };
        libc::close(probe);
        (if n > 0 { n as usize } else { PAGE }, sup)
    };
    // SAFETY: an empty handler for the watchdog's kick (no SA_RESTART: KVM_RUN returns EINTR).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_kick as *const () as usize;
        libc::sigaction(libc::SIGUSR1, &sa, ptr::null_mut());
        libc::sigaction(libc::SIGALRM, &sa, ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    std::thread::spawn(watchdog);
    let sc = Scratch::new();
    {
        // The read-only area's contents come from the seed.
        let mut r = Rng::new(seed, 2, 0);
        // SAFETY: made writable for the fill, then read-only again.
        unsafe {
            libc::mprotect(sc.ro as _, SCRATCH, libc::PROT_READ | libc::PROT_WRITE);
            r.fill(std::slice::from_raw_parts_mut(sc.ro, SCRATCH));
            libc::mprotect(sc.ro as _, SCRATCH, libc::PROT_READ);
        }
    }

    println!("kvm-ioctl-fuzz {dev} seed {seed} start {first} calls {} batch {batch} mmap_size {mmap_size} supported_cpuid {}",
             end - first, supported.len() / CPUID_ENTRY);
    let t0 = now_ms();
    let mut done = 0u64;
    let mut b = first / batch;
    while b * batch < end {
        let bstart = b * batch;
        *REPRO.lock().unwrap() = format!("kvm-ioctl-fuzz {dev} {seed} {batch} --start {bstart}");
        eprintln!("batch {b} call {bstart} elapsed_ms {} findings {}", now_ms() - t0, FINDINGS.load(Ordering::SeqCst));
        let mut r = Rng::new(seed, 0, b);
        // The lowest free fd: everything from it up is this batch's, closed at its end.
        // SAFETY: fcntl and close on a duplicate of stdin; open of the device.
        let (base_fd, sys) = unsafe {
            let base = libc::fcntl(0, libc::F_DUPFD, 3);
            libc::close(base);
            (base.max(3), libc::open(devc.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC))
        };
        let mut bt = Batch {
            dev: &devc, sc: &sc, supported_cpuid: &supported, sys: if sys >= 0 { vec![sys] } else { vec![] },
            vms: Vec::new(), other: Vec::new(), maps: Vec::new(), mapped: 0, extra_maps: Vec::new(),
            mmap_size, base_fd, call: bstart, verbose, in_child: false,
        };
        for i in bstart..(bstart + batch).min(end) {
            bt.call = i;
            bt.step(&mut r, &mut st, seed, false);
            done += 1;
        }
        bt.finish();
        b += 1;
    }
    let ms = (now_ms() - t0).max(1);
    if let Some(t) = st.trace.as_mut() {
        let _ = t.flush();
    }
    for (k, v) in &st.counts {
        println!("{k}: {v}");
    }
    println!("summary seed {seed} start {first} calls {done} elapsed_ms {ms} calls_per_s {} findings {}",
             done * 1000 / ms, FINDINGS.load(Ordering::SeqCst));
    ExitCode::SUCCESS
}
