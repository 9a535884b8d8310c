//! A guest-side fuzzer: many short guests that execute random instruction bytes from random
//! register and segment state in real, protected (16/32-bit, with or without paging, PAE) and
//! long mode (64-bit and compatibility), with random page tables pointing into RAM, read-only
//! memory, MMIO and nowhere, random GDTs/IDTs/TSSs, random CR0/CR4/EFER, MSRs, XCR0, debug
//! registers, guest debugging, CPUID tables, pending events, SMIs (the RAM is SMM's address space
//! too), memory slots that come and go, coalesced zones over every port and MMIO address in
//! half of the batches (with the ring's indices drained or spoiled before each guest),
//! and random port and MMIO answers from userspace; half of the batches' VMs have the split
//! irqchip, whose in-kernel local APIC then answers the guest's xAPIC page, x2APIC MSRs, CR8
//! and HLT, and a quarter the full one (`KVM_CREATE_IRQCHIP` and `KVM_CREATE_PIT2`: the guests'
//! writes to the PIC's and the PIT's ports and the IOAPIC's page reach them too). Written against the KVM API, so the same binary runs on `/dev/rvmx` and `/dev/kvm`.
//!
//! Usage: kvm-guest-fuzz DEVICE SEED COUNT [--start I] [--verbose] [--budget EXITS]
//!                       [--timeout-ms MS] [--recreate N] [--plan-only]
//!
//! Runs guests START..START+COUNT (START 0 by default). Guest i's state (memory, registers,
//! tables, ioctls, answers) derives only from (SEED, i), so `kvm-guest-fuzz DEV SEED 1 --start I`
//! runs guest I again; the VM and vCPU are created afresh every N guests (`--recreate`, 256 by
//! default; batch b's VM-level choices — split irqchip, CPUID table, vCPU id, dirty logging — derive from
//! (SEED, b)), so `--start $((I - I % 256)) $((I % 256 + 1))` also replays the history of the
//! vCPU that guest I ran on. Each guest runs until it halts (and is not resumed), shuts down,
//! fails, or has used its budget of exits (64) or of wall-clock time (20 ms, SIGALRM). A KVM_RUN
//! errno is an outcome, not a failure: the program exits 0 after its summary unless it panics.
//! `--verbose` prints a line before and after each guest; `--plan-only` (DEVICE unused) makes
//! each guest's initial state without running it (and prints it with --verbose). Without --verbose, a `batch` line on stderr
//! every N guests shows where a run was when a host died.

use std::{
    collections::BTreeMap,
    ffi::CString,
    os::unix::io::AsRawFd,
    process::ExitCode,
    ptr,
    sync::atomic::{AtomicBool, AtomicPtr, Ordering},
    time::Instant,
};

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_fpu, kvm_guest_debug, kvm_msr_entry, kvm_regs, kvm_run,
    kvm_segment, kvm_sregs, kvm_userspace_memory_region, kvm_vcpu_events, kvm_xcrs, CpuId, Msrs,
    KVM_MAX_CPUID_ENTRIES, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY,
};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd, VmFd};
use rvmx_test_programs::Rng;

// ---- Guest physical layout -------------------------------------------------------------------

/// Slot 0: RAM at GPA 0 (reset for every guest).
const RAM: usize = 0x40000;
/// Slot 1: read-only memory at 0xf0000 (contents from the seed alone; guest writes exit as MMIO).
const ROM_GPA: u64 = 0xf_0000;
const ROM: usize = 0x1_0000;
/// Slot 2: an alias of RAM 0x10000..0x20000 (the code area), usually at the top of 4 GiB.
const ALIAS_GPA: u64 = 0xffff_0000;
const ALIAS_OFF: usize = 0x1_0000;
const ALIAS: usize = 0x1_0000;
// Everything else is unbacked: 0x40000..0xf0000, 0x100000.., APIC page, beyond 4 GiB.

/// RAM layout.
const GDT: usize = 0x1000;
const TSS: usize = 0x1800;
const IDT: usize = 0x2000;
const HANDLERS: usize = 0x3000; // 16 bytes per vector
const PT: usize = 0x4000; // 12 pages of page tables: 0x4000..0x10000
const PT_PAGES: usize = 12;
const CODE: usize = 0x1_0000; // code area 0x10000..0x20000
const STACK_TOP: u64 = 0x3_f000;

/// GDT selectors.
const SEL_CODE64: u16 = 0x08;
const SEL_DATA: u16 = 0x10;
const SEL_CODE32: u16 = 0x18;
const SEL_CODE16: u16 = 0x20;
const SEL_DATA16: u16 = 0x28;
const SEL_TSS: u16 = 0x30; // 16 bytes in long mode
const SEL_CODE64_U: u16 = 0x43;
const SEL_DATA_U: u16 = 0x4b;
const SEL_CODE32_U: u16 = 0x53;

const KVM_INTERRUPT: libc::c_ulong = 0x4004_ae86;

// ---- PRNG ------------------------------------------------------------------------------------


/// MSRs worth poking (guest RDMSR/WRMSR via ECX, KVM_SET_MSRS).
const MSRS: &[u32] = &[
    0x10, 0x1b, 0x3a, 0x3b, 0x48, 0x49, 0x8b, 0xe7, 0xe8, 0xfe, 0x10a, 0x10b, 0x122, 0x140,
    0x174, 0x175, 0x176, 0x179, 0x17a, 0x186, 0x1a0, 0x1d9, 0x1db, 0x200, 0x201, 0x250, 0x277,
    0x2ff, 0x345, 0x38d, 0x38f, 0x400, 0x401, 0x402, 0x403, 0x480, 0x481, 0x482, 0x485, 0x48b,
    0x491, 0x4d0, 0x560, 0x570, 0x6a0, 0x6e0, 0x802, 0x808, 0x80b, 0x830, 0x838, 0xd90, 0xda0,
    0x1c4, 0x1c5, 0xc000_0080, 0xc000_0081, 0xc000_0082, 0xc000_0083, 0xc000_0084, 0xc000_0100,
    0xc000_0101, 0xc000_0102, 0xc000_0103, 0xc000_0104, 0xc001_0000, 0xc001_0114, 0xc001_0117,
    0x4b56_4d00, 0x4b56_4d01, 0x4b56_4d02, 0x4b56_4d03, 0x4b56_4d04, 0x4b56_4d05, 0x4b56_4d06,
    0x4b56_4d07, 0x4000_0000, 0x4000_0001, 0x4000_0070, 0xffff_ffff, 0x8000_0000,
];

/// Ports worth answering.
const PORTS: &[u16] = &[
    0x20, 0x21, 0x40, 0x43, 0x60, 0x61, 0x64, 0x70, 0x71, 0x80, 0x92, 0xa0, 0xcf8, 0xcfc, 0x3f8,
    0x3fd, 0x402, 0x510, 0x511, 0x604, 0xb004, 0xe9, 0xf0, 0xffff,
];

/// CPUID leaves worth asking for.
const LEAVES: &[u32] = &[
    0, 1, 2, 4, 6, 7, 0xa, 0xb, 0xd, 0xf, 0x10, 0x12, 0x14, 0x19, 0x1d, 0x1f, 0x24, 0x4000_0000,
    0x4000_0001, 0x8000_0000, 0x8000_0001, 0x8000_0008, 0x8000_001f, 0xffff_ffff,
];

/// An address somewhere interesting: RAM, the ROM, unbacked, the APIC, beyond 4 GiB.
fn address(r: &mut Rng) -> u64 {
    match r.below(9) {
        0..=2 => r.below(RAM as u64),
        3 => ROM_GPA + r.below(ROM as u64),
        4 => 0x4_0000 + r.below(0xb_0000),
        5 => 0xfee0_0000 + r.below(0x1000),
        6 => ALIAS_GPA + r.below(ALIAS as u64),
        7 => 0x1_0000_0000 + r.below(1 << 36),
        _ => r.next() & 0xffff_ffff,
    }
}

/// A register value: small numbers, addresses, MSR indices, ports, kernel-looking and
/// non-canonical addresses, single bits, garbage.
fn value(r: &mut Rng) -> u64 {
    match r.below(14) {
        0 => 0,
        1 => r.below(16),
        2 | 3 => address(r),
        4 => u64::MAX,
        5 => r.pick(MSRS) as u64,
        6 => r.pick(PORTS) as u64,
        7 => 0xffff_ffff_8100_0000 + r.below(0x1_0000),
        8 => 0x0000_8000_0000_0000 | r.below(1 << 20),
        9 => 1 << r.below(64),
        10 => r.next() & 0xffff_ffff,
        11 => r.pick(LEAVES) as u64,
        12 => r.below(0x1_0000),
        _ => r.next(),
    }
}

// ---- Instruction soup ------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Tail {
    Plain,
    /// A random ModRM byte and 0..4 displacement bytes.
    ModRm,
    /// ModRM in register form (mod = 11).
    Reg,
    /// ModRM with memory operand and /n.
    Mem(u8),
    /// ModRM in register form with /n.
    RegN(u8),
    /// n random bytes.
    Bytes(u8),
    /// ModRM then an imm8.
    ModRmImm8,
}

use Tail::*;

/// Instructions that exit, fault, switch modes or privilege, or touch what a hypervisor keeps.
const TEMPLATES: &[(&[u8], Tail)] = &[
    // Port I/O, plain and string, with REP and size prefixes.
    (&[0xe4], Bytes(1)), (&[0xe5], Bytes(1)), (&[0xe6], Bytes(1)), (&[0xe7], Bytes(1)),
    (&[0xec], Plain), (&[0xed], Plain), (&[0xee], Plain), (&[0xef], Plain), (&[0x66, 0xed], Plain),
    (&[0x66, 0xef], Plain), (&[0xf3, 0x6c], Plain), (&[0xf3, 0x6d], Plain), (&[0xf3, 0x6e], Plain),
    (&[0xf3, 0x6f], Plain), (&[0x66, 0xf3, 0x6d], Plain), (&[0x67, 0xf3, 0x6e], Plain),
    (&[0xf2, 0x6c], Plain), (&[0x6c], Plain), (&[0x6f], Plain), (&[0xfd, 0xf3, 0x6d], Plain),
    // Control and debug registers.
    (&[0x0f, 0x20], Reg), (&[0x0f, 0x22], Reg), (&[0x0f, 0x21], Reg), (&[0x0f, 0x23], Reg),
    (&[0x44, 0x0f, 0x22], Reg), (&[0xf0, 0x0f, 0x22], Reg), (&[0x0f, 0x06], Plain),
    (&[0x0f, 0x01], RegN(6)), (&[0x0f, 0x01], Mem(6)), (&[0x0f, 0x01], RegN(4)),
    // MSRs, TSC, PMCs, CPUID, XCRs.
    (&[0x0f, 0x30], Plain), (&[0x0f, 0x32], Plain), (&[0x0f, 0x31], Plain), (&[0x0f, 0x33], Plain),
    (&[0x0f, 0x01, 0xf9], Plain), (&[0x0f, 0xa2], Plain), (&[0x0f, 0x01, 0xd1], Plain),
    (&[0x0f, 0x01, 0xd0], Plain),
    // HLT, interrupts, IRET.
    (&[0xf4], Plain), (&[0xcd], Bytes(1)), (&[0xcc], Plain), (&[0xce], Plain), (&[0xf1], Plain),
    (&[0xcf], Plain), (&[0x48, 0xcf], Plain), (&[0x66, 0xcf], Plain), (&[0xfb], Plain),
    (&[0xfa], Plain), (&[0xfb, 0xf4], Plain),
    // Descriptor tables, segments, task register.
    (&[0x0f, 0x01], Mem(2)), (&[0x0f, 0x01], Mem(3)), (&[0x0f, 0x01], Mem(0)),
    (&[0x0f, 0x01], Mem(1)), (&[0x0f, 0x01], Mem(7)), (&[0x0f, 0x00], RegN(2)),
    (&[0x0f, 0x00], RegN(3)), (&[0x0f, 0x00], RegN(4)), (&[0x0f, 0x00], RegN(1)),
    (&[0x0f, 0x00], Mem(2)), (&[0x0f, 0x00], Mem(3)), (&[0x8e], RegN(2)), (&[0x8e], Mem(2)),
    (&[0x8e], RegN(3)), (&[0x8e], RegN(0)), (&[0x8e], RegN(4)), (&[0x8e], RegN(5)),
    (&[0x17], Plain), (&[0x1f], Plain), (&[0x0f, 0xa1], Plain), (&[0x0f, 0xa9], Plain),
    (&[0x8e, 0xd0, 0xcd, 0x03], Plain), (&[0x0f, 0x02], ModRm), (&[0x0f, 0x03], ModRm),
    // Flags: POPF, and PUSHF; OR [rsp+1], 1 (TF); POPF.
    (&[0x9d], Plain), (&[0x9c], Plain), (&[0x9c, 0x80, 0x4c, 0x24, 0x01, 0x01, 0x9d], Plain),
    (&[0x9c, 0x81, 0x0c, 0x24, 0x00, 0x00, 0x04, 0x00, 0x9d], Plain),
    // Fast system calls.
    (&[0x0f, 0x05], Plain), (&[0x0f, 0x07], Plain), (&[0x48, 0x0f, 0x07], Plain),
    (&[0x0f, 0x34], Plain), (&[0x0f, 0x35], Plain), (&[0x0f, 0x01, 0xf8], Plain),
    // VMX, SVM, SGX, SMX.
    (&[0x0f, 0x01, 0xc1], Plain), (&[0x0f, 0x01, 0xc2], Plain), (&[0x0f, 0x01, 0xc3], Plain),
    (&[0x0f, 0x01, 0xc4], Plain), (&[0xf3, 0x0f, 0xc7], Mem(6)), (&[0x0f, 0xc7], Mem(6)),
    (&[0x66, 0x0f, 0xc7], Mem(6)), (&[0x0f, 0xc7], Mem(7)), (&[0x0f, 0x78], Reg),
    (&[0x0f, 0x79], Reg), (&[0x66, 0x0f, 0x38, 0x80], ModRm), (&[0x66, 0x0f, 0x38, 0x81], ModRm),
    (&[0x0f, 0x01, 0xd4], Plain), (&[0x0f, 0x01, 0xd9], Plain), (&[0x0f, 0x01, 0xd8], Plain),
    (&[0x0f, 0x01, 0xdc], Plain), (&[0x0f, 0x01, 0xdd], Plain), (&[0x0f, 0x01, 0xde], Plain),
    (&[0x0f, 0x01, 0xdf], Plain), (&[0x0f, 0x01, 0xcf], Plain), (&[0x0f, 0x01, 0xd7], Plain),
    (&[0x0f, 0x37], Plain), (&[0x0f, 0x01, 0xc5], Plain),
    // MONITOR/MWAIT, WAITPKG, caches.
    (&[0x0f, 0x01, 0xc8], Plain), (&[0x0f, 0x01, 0xc9], Plain), (&[0xf3, 0x0f, 0xae], RegN(6)),
    (&[0xf2, 0x0f, 0xae], RegN(6)), (&[0x66, 0x0f, 0xae], RegN(6)), (&[0x0f, 0x09], Plain),
    (&[0x0f, 0x08], Plain), (&[0xf3, 0x0f, 0x09], Plain), (&[0x0f, 0xaa], Plain),
    (&[0x0f, 0x0b], Plain), (&[0x0f, 0xae], Mem(7)), (&[0x66, 0x0f, 0x38, 0x82], ModRm),
    (&[0x66, 0x0f, 0x38, 0xf8], ModRm), (&[0xf3, 0x90], Plain),
    // XSAVE family, FXSAVE, MXCSR.
    (&[0x0f, 0xae], Mem(4)), (&[0x0f, 0xae], Mem(5)), (&[0x0f, 0xae], Mem(0)),
    (&[0x0f, 0xae], Mem(1)), (&[0x0f, 0xae], Mem(2)), (&[0x0f, 0xc7], Mem(5)),
    (&[0x0f, 0xc7], Mem(3)), (&[0x48, 0x0f, 0xae], Mem(4)), (&[0x48, 0x0f, 0xae], Mem(5)),
    // FS/GS base, PKRU, RDPID, RDRAND, RDSEED.
    (&[0xf3, 0x48, 0x0f, 0xae], RegN(2)), (&[0xf3, 0x48, 0x0f, 0xae], RegN(3)),
    (&[0x0f, 0x01, 0xef], Plain), (&[0x0f, 0x01, 0xee], Plain), (&[0xf3, 0x0f, 0xc7], RegN(7)),
    (&[0x0f, 0xc7], RegN(6)), (&[0x0f, 0xc7], RegN(7)),
    // Far transfers.
    (&[0xea], Bytes(6)), (&[0x9a], Bytes(6)), (&[0xff], Mem(5)), (&[0xff], Mem(3)),
    (&[0xcb], Plain), (&[0x48, 0xcb], Plain), (&[0xca], Bytes(2)), (&[0xc8], Bytes(3)),
    (&[0xc9], Plain), (&[0x60], Plain), (&[0x61], Plain), (&[0x62], ModRm), (&[0x63], ModRm),
    // Strings (to MMIO when the registers say so), locked memory operations.
    (&[0xf3, 0xa4], Plain), (&[0xf3, 0xa5], Plain), (&[0xf3, 0x48, 0xa5], Plain),
    (&[0xf3, 0xaa], Plain), (&[0xf3, 0xab], Plain), (&[0xf3, 0xac], Plain), (&[0xf2, 0xae], Plain),
    (&[0xf3, 0xa6], Plain), (&[0xf0, 0x87], ModRm), (&[0xf0, 0x0f, 0xc7], Mem(1)),
    (&[0xf0, 0x48, 0x0f, 0xc7], Mem(1)), (&[0xf0, 0x0f, 0xb1], ModRm), (&[0xf0, 0x01], ModRm),
    // Plain loads and stores (MMIO, ROM, page faults).
    (&[0x89], ModRm), (&[0x8b], ModRm), (&[0x88], ModRm), (&[0x8a], ModRm), (&[0xc7], Mem(0)),
    (&[0x48, 0x89], ModRm), (&[0x66, 0x0f, 0x7f], ModRm), (&[0x0f, 0x28], ModRm),
    (&[0xc5, 0xfd, 0x7f], ModRm), (&[0x0f, 0xb7], ModRm), (&[0x80], ModRmImm8),
    (&[0xd9], ModRm), (&[0xdd], ModRm), (&[0xdf], ModRm), (&[0xdb, 0xe3], Plain),
    // Loops that never exit (the timer's business), short backward jumps.
    (&[0xeb, 0xfe], Plain), (&[0xe2], Bytes(1)), (&[0xeb], Bytes(1)), (&[0x75], Bytes(1)),
    (&[0xe9], Bytes(4)), (&[0xe8], Bytes(4)), (&[0xc3], Plain), (&[0xff], RegN(4)),
    // Vector extensions with random payloads.
    (&[0xc5], Bytes(3)), (&[0xc4], Bytes(4)), (&[0x62], Bytes(6)), (&[0x8f], Bytes(4)),
];

const PREFIXES: &[u8] = &[0x66, 0x67, 0xf2, 0xf3, 0x2e, 0x36, 0x3e, 0x26, 0x64, 0x65, 0xf0];

/// One instruction (or a few) into `out`.
fn instruction(r: &mut Rng, out: &mut Vec<u8>) {
    let prefixes = |r: &mut Rng, out: &mut Vec<u8>, n: u64| {
        for _ in 0..n {
            out.push(r.pick(PREFIXES));
        }
        if r.pct(30) {
            out.push(0x40 | r.below(16) as u8);
        }
    };
    match r.below(100) {
        0..=49 => {
            if r.pct(15) {
                let n = 1 + r.below(3);
                prefixes(r, out, n);
            }
            template(r, out);
        }
        50..=64 => {
            for _ in 0..1 + r.below(8) {
                out.push(r.byte());
            }
        }
        65..=76 => {
            put(out, &[0x0f, r.byte(), r.byte()]);
            if r.pct(50) {
                out.push(r.byte());
            }
        }
        77..=82 => {
            // Prefix storm, often past the 15-byte limit.
            let n = 4 + r.below(14);
            prefixes(r, out, n);
            template(r, out);
        }
        83..=90 => {
            // mov ecx, MSR; rdmsr/wrmsr.  mov eax, leaf; cpuid.  mov edx, port; in/out.
            match r.below(4) {
                0 | 1 => {
                    out.push(0xb9);
                    put(out, &r.pick(MSRS).to_le_bytes());
                    put(out, r.pick(&[&[0x0f, 0x30][..], &[0x0f, 0x32]]));
                }
                2 => {
                    out.push(0xb8);
                    put(out, &r.pick(LEAVES).to_le_bytes());
                    put(out, &[0x0f, 0xa2]);
                }
                _ => {
                    out.push(0xba);
                    put(out, &(r.pick(PORTS) as u32).to_le_bytes());
                    out.push(r.pick(&[0xec, 0xed, 0xee, 0xef, 0x6c, 0x6d, 0x6e, 0x6f]));
                }
            }
        }
        _ => {
            // mov rax/eax, imm; mov crN, rax: a random CR0/CR3/CR4/CR8 from the guest itself.
            put(out, &[0x48, 0xb8]);
            put(out, &value(r).to_le_bytes());
            put(out, &[0x0f, 0x22, r.pick(&[0xc0, 0xd8, 0xe0, 0xd0])]);
        }
    }
}

fn template(r: &mut Rng, out: &mut Vec<u8>) {
    let (bytes, tail) = r.pick(TEMPLATES);
    put(out, bytes);
    let disp = |r: &mut Rng, out: &mut Vec<u8>| {
        for _ in 0..r.below(5) {
            out.push(r.byte());
        }
    };
    match tail {
        Plain => {}
        ModRm => {
            out.push(r.byte());
            disp(r, out);
        }
        Reg => out.push(0xc0 | r.below(64) as u8),
        Mem(n) => {
            out.push((r.below(3) as u8) << 6 | n << 3 | r.below(8) as u8);
            disp(r, out);
        }
        RegN(n) => out.push(0xc0 | n << 3 | r.below(8) as u8),
        Bytes(n) => {
            for _ in 0..n {
                out.push(r.byte());
            }
        }
        ModRmImm8 => {
            out.push(r.byte());
            disp(r, out);
            out.push(r.byte());
        }
    }
}

/// Fills `buf` with instructions (the last one cut short).
fn soup(r: &mut Rng, buf: &mut [u8], scratch: &mut Vec<u8>) {
    scratch.clear();
    while scratch.len() < buf.len() {
        instruction(r, scratch);
    }
    buf.copy_from_slice(&scratch[..buf.len()]);
}

/// `out.extend_from_slice(bytes)` without a call to memcpy for a few bytes.
fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        out.push(b);
    }
}

// ---- Guest state -----------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Real,
    Prot16,
    Prot32,
    Paged32,
    Pae,
    Long64,
    Compat,
}

fn seg(base: u64, limit: u32, selector: u16, type_: u8, dpl: u8, db: u8, l: u8, g: u8) -> kvm_segment {
    kvm_segment {
        base, limit, selector, type_, present: 1, dpl, db, s: 1, l, g, avl: 0, unusable: 0, padding: 0,
    }
}

/// GDT descriptor.
fn desc(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    (limit as u64 & 0xffff) | (base as u64 & 0xff_ffff) << 16 | (access as u64) << 40
        | ((limit as u64 >> 16) & 0xf) << 48 | ((flags as u64) & 0xf) << 52 | (base as u64 >> 24) << 56
}

fn w64(mem: &mut [u8], at: usize, v: u64) {
    mem[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn w32(mem: &mut [u8], at: usize, v: u32) {
    mem[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Flags of a page-table entry: present (mostly), writable, user, and random others.
fn pte_flags(r: &mut Rng, wide: bool) -> u64 {
    let mut f = if r.pct(92) { 1 } else { 0 };
    for bit in [1u64, 2, 3, 4, 5, 6, 8] {
        if r.pct(if bit <= 2 { 80 } else { 10 }) {
            f |= 1 << bit;
        }
    }
    if wide && r.pct(8) {
        f |= 1 << 63; // NX
    }
    if wide && r.pct(3) {
        f |= (r.below(16)) << 59; // protection key
    }
    f
}

/// A random page-table entry: into the tables, RAM, ROM, nowhere, beyond MAXPHYADDR, garbage.
fn pte(r: &mut Rng, wide: bool) -> u64 {
    let f = pte_flags(r, wide);
    let v = match r.below(10) {
        0 => 0,
        1 => r.next(),
        2 | 3 => (PT + 0x1000 * r.below_usize(PT_PAGES)) as u64 | f,
        4 | 5 => r.below(RAM as u64) & !0xfff | f,
        6 => (0x4_0000 + r.below(0xb_0000)) & !0xfff | f,
        7 => 1 << (32 + r.below(20)) | f,
        8 => (ROM_GPA + r.below(ROM as u64)) & !0xfff | f,
        _ => r.next() & 0xffe0_0000 | 0x80 | f,
    };
    if wide { v } else { v & 0xffff_ffff }
}

/// `v` sign-extended from bit 47, but for 3% of the calls.
fn canonical(r: &mut Rng, v: u64) -> u64 {
    if r.pct(3) { v } else { ((v << 16) as i64 >> 16) as u64 }
}

/// Whether vector `v` pushes an error code (as a hardware exception in protected mode).
fn has_error_code(v: u8) -> bool {
    matches!(v, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Everything one guest starts with.
struct Plan {
    mode: Mode,
    regs: kvm_regs,
    sregs: kvm_sregs,
    fpu: kvm_fpu,
    xcr0: Option<kvm_xcrs>,
    debugregs: kvm_debugregs,
    events: kvm_vcpu_events,
    msrs: Vec<kvm_msr_entry>,
    guest_debug: Option<kvm_guest_debug>,
    cpuid: Option<Vec<kvm_cpuid_entry2>>,
    /// Slot 1 present; slot 2 at this GPA (or absent).
    rom: bool,
    alias: Option<u64>,
}

/// Reset values for MSRs a guest may have changed (those that exist everywhere first: KVM_SET_MSRS
/// stops at the first it refuses).
const MSR_RESET: &[(u32, u64)] = &[
    (0x174, 0), (0x175, 0), (0x176, 0), (0xc000_0081, 0), (0xc000_0082, 0), (0xc000_0083, 0),
    (0xc000_0084, 0), (0xc000_0102, 0), (0x277, 0x0007_0406_0007_0406), (0x1d9, 0),
    (0xc000_0103, 0),
];

/// Writes guest `i`'s memory and returns its plan. Only `(seed, i)` and `ctx` (fixed per
/// process) decide it.
fn plan(r: &mut Rng, mem: &mut [u8], ctx: &Ctx, scratch: &mut Vec<u8>) -> Plan {
    mem.fill(0);
    let mode = match r.below(100) {
        0..=19 => Mode::Real,
        20..=24 => Mode::Prot16,
        25..=34 => Mode::Prot32,
        35..=49 => Mode::Paged32,
        50..=64 => Mode::Pae,
        65..=94 => Mode::Long64,
        _ => Mode::Compat,
    };
    let alias = ctx.alias_choice(r);
    let long = matches!(mode, Mode::Long64 | Mode::Compat);
    let wide = !matches!(mode, Mode::Paged32);

    // GDT: the fixed descriptors, then garbage, then a few corrupted.
    let gdt: [(u16, u64); 9] = [
        (SEL_CODE64, desc(0, 0xfffff, 0x9b, 0xa)),
        (SEL_DATA, desc(0, 0xfffff, 0x93, 0xc)),
        (SEL_CODE32, desc(0, 0xfffff, 0x9b, 0xc)),
        (SEL_CODE16, desc(0x1_0000, 0xffff, 0x9b, 0)),
        (SEL_DATA16, desc(0, 0xffff, 0x93, 0)),
        (SEL_TSS, desc(TSS as u32, 0x67 + 0x2000 / 8, 0x8b, 0)),
        (SEL_CODE64_U & !3, desc(0, 0xfffff, 0xfb, 0xa)),
        (SEL_DATA_U & !3, desc(0, 0xfffff, 0xf3, 0xc)),
        (SEL_CODE32_U & !3, desc(0, 0xfffff, 0xfb, 0xc)),
    ];
    for (sel, d) in gdt {
        w64(mem, GDT + sel as usize, d);
    }
    for at in (GDT + 0x58..GDT + 0x100).step_by(8) {
        if r.pct(50) {
            w64(mem, at, r.next());
        }
    }
    for _ in 0..if r.pct(15) { 1 + r.below(3) } else { 0 } {
        let at = GDT + 8 * r.below_usize(32);
        let v = if r.pct(50) { r.next() } else { u64::from_le_bytes(mem[at..at + 8].try_into().unwrap()) ^ 1 << r.below(64) };
        w64(mem, at, v);
    }
    // TSS: stacks in RAM, sometimes garbage; an I/O bitmap of random bits after it.
    if long {
        w64(mem, TSS + 4, if r.pct(90) { STACK_TOP - 0x800 } else { value(r) });
        for ist in 0..7 {
            w64(mem, TSS + 0x24 + 8 * ist, if r.pct(70) { STACK_TOP - 0x400 } else { value(r) });
        }
    } else {
        w32(mem, TSS + 4, if r.pct(90) { STACK_TOP as u32 - 0x800 } else { r.next() as u32 });
        w32(mem, TSS + 8, if r.pct(90) { SEL_DATA as u32 } else { r.below(0x100) as u32 });
    }
    mem[TSS + 0x66..TSS + 0x68].copy_from_slice(&(if r.pct(80) { 0x68u16 } else { r.next() as u16 }).to_le_bytes());
    for b in &mut mem[TSS + 0x68..TSS + 0x68 + 0x80] {
        *b = if r.pct(50) { 0 } else { r.byte() };
    }

    // Handlers: report the vector on port 0xf0, halt, drop the error code, return.
    for v in 0..256usize {
        let h = HANDLERS + 16 * v;
        let err = matches!(v, 8 | 10..=14 | 17 | 21 | 29 | 30);
        let mut code = Vec::with_capacity(16);
        code.extend_from_slice(&[0xb0, v as u8, 0xe6, 0xf0, 0xf4]);
        match mode {
            Mode::Real => code.push(0xcf),
            _ if long => {
                if err {
                    code.extend_from_slice(&[0x48, 0x83, 0xc4, 0x08]);
                }
                code.extend_from_slice(&[0x48, 0xcf]);
            }
            _ => {
                if err {
                    code.extend_from_slice(&[0x83, 0xc4, 0x04]);
                }
                code.push(0xcf);
            }
        }
        if r.pct(2) {
            for b in code.iter_mut() {
                *b = r.byte();
            }
        }
        mem[h..h + code.len()].copy_from_slice(&code);
    }
    // IDT (IVT in real mode) for all 256 vectors, some gates odd.
    for v in 0..256usize {
        let h = (HANDLERS + 16 * v) as u64;
        if mode == Mode::Real {
            w32(mem, 4 * v, h as u32); // 0000:h
            continue;
        }
        let sel = if long { SEL_CODE64 } else { SEL_CODE32 } as u64;
        let mut attr: u64 = if r.pct(95) { 0x8e } else { r.pick(&[0x8f, 0xee, 0xef, 0x0e, 0x85, 0x86, 0x00]) };
        let mut ist = 0;
        if long && r.pct(5) {
            ist = r.below(8);
        }
        if r.pct(1) {
            attr = r.byte() as u64;
        }
        let lo = (h & 0xffff) | sel << 16 | ist << 32 | attr << 40 | (h >> 16 & 0xffff) << 48;
        if long {
            w64(mem, IDT + 16 * v, lo);
            w64(mem, IDT + 16 * v + 8, if r.pct(99) { h >> 32 } else { r.next() });
        } else {
            w64(mem, IDT + 8 * v, lo);
        }
    }

    // Page tables: an identity skeleton for the mode, then random entries.
    let page = |n: usize| PT + 0x1000 * n;
    let mut cr3 = page(0) as u64;
    match mode {
        Mode::Paged32 => {
            // PD at page 0; PD[0] → PT at page 3 (identity 0..4 MiB) or a 4-MiB page;
            // PD[1023] → 0xffc00000 as a 4-MiB page.
            if r.pct(80) {
                w32(mem, page(0), page(3) as u32 | 7);
            } else {
                w32(mem, page(0), 0x87);
            }
            w32(mem, page(0) + 4 * 1023, 0xffc0_0087);
            for e in 0..1024usize {
                let f = if r.pct(97) { 7 } else { pte_flags(r, false) as u32 };
                w32(mem, page(3) + 4 * e, (e as u32) << 12 | f);
            }
        }
        Mode::Pae => {
            // PDPT at page 0 (32 bytes); [0] → PD at page 2, [3] → PD at page 4.
            w64(mem, page(0), page(2) as u64 | 1);
            w64(mem, page(0) + 24, page(4) as u64 | 1);
            if r.pct(80) {
                w64(mem, page(2), page(3) as u64 | 7);
            } else {
                w64(mem, page(2), 0x87);
            }
            w64(mem, page(4) + 8 * 511, 0xffe0_0087);
            for e in 0..512usize {
                let f = if r.pct(97) { 7 } else { pte_flags(r, true) };
                w64(mem, page(3) + 8 * e, (e as u64) << 12 | f);
            }
        }
        _ if long => {
            // PML4 page 0: [0] and [511] → PDPT page 1; PDPT [0], [3] → PD page 2;
            // PD[0] → PT page 3 (identity) or a 2-MiB page; PD[511] → 0xffe00000 (2 MiB).
            w64(mem, page(0), page(1) as u64 | 7);
            w64(mem, page(0) + 8 * 511, page(1) as u64 | 7);
            w64(mem, page(1), page(2) as u64 | 7);
            w64(mem, page(1) + 8 * 3, page(2) as u64 | 7);
            if r.pct(80) {
                w64(mem, page(2), page(3) as u64 | 7);
            } else {
                w64(mem, page(2), 0x87);
            }
            w64(mem, page(2) + 8 * 511, 0xffe0_0087);
            for e in 0..512usize {
                let f = if r.pct(97) { 7 } else { pte_flags(r, true) };
                w64(mem, page(3) + 8 * e, (e as u64) << 12 | f);
            }
        }
        _ => {}
    }
    if matches!(mode, Mode::Paged32 | Mode::Pae) || long {
        // Random entries in the skeleton and in the spare table pages.
        for _ in 0..r.below(8) {
            let p = r.pick(&[0, 1, 2, 3, 4, 3, 2, 0]);
            let at = if wide { page(p) + 8 * r.below_usize(512) } else { page(p) + 4 * r.below_usize(1024) };
            let e = pte(r, wide);
            if wide { w64(mem, at, e) } else { w32(mem, at, e as u32) }
        }
        for p in 5..PT_PAGES {
            for _ in 0..8 {
                let e = pte(r, wide);
                if wide { w64(mem, page(p) + 8 * r.below_usize(512), e) } else { w32(mem, page(p) + 4 * r.below_usize(1024), e as u32) }
            }
        }
        if r.pct(5) {
            cr3 = page(r.below_usize(PT_PAGES)) as u64;
        }
        if r.pct(5) {
            cr3 = value(r);
        }
        if r.pct(10) {
            cr3 |= r.below(0x1000) & if mode == Mode::Pae { 0xfe0 } else { 0x18 };
        }
    }

    // Code: 2 KiB of soup around the entry point, 256 bytes at the top of the code area (the
    // reset vector through slot 2), and random data in the upper RAM.
    let entry = CODE + 0x200 + r.below_usize(0xd000);
    let start = entry - 0x80;
    soup(r, &mut mem[start..start + 0x800], scratch);
    soup(r, &mut mem[CODE + 0xff00..CODE + 0x1_0000], scratch);
    for _ in 0..64 {
        let at = 0x2_0000 + 8 * r.below_usize((RAM - 0x2_0000) / 8);
        w64(mem, at, value(r));
    }

    // Registers.
    let mut regs = kvm_regs {
        rax: value(r), rbx: value(r), rcx: if r.pct(50) { r.below(64) } else { value(r) },
        rdx: if r.pct(40) { r.pick(PORTS) as u64 } else { value(r) }, rsi: value(r), rdi: value(r),
        rsp: if r.pct(85) { STACK_TOP - 8 * r.below(0x100) } else { value(r) },
        rbp: value(r), r8: value(r), r9: value(r), r10: value(r), r11: value(r), r12: value(r),
        r13: value(r), r14: value(r), r15: value(r), rip: 0, rflags: 2,
    };
    let mut fl = 2u64 | r.next() & 0xd5; // CF PF AF ZF SF
    for (bit, p) in [(8, 8), (9, 50), (10, 15), (18, 8), (14, 4), (16, 4), (19, 2), (20, 2), (21, 30), (17, 1)] {
        if r.pct(p) {
            fl |= 1 << bit;
        }
    }
    if r.pct(10) {
        fl |= r.below(4) << 12; // IOPL
    }
    regs.rflags = fl;

    // Segments and control registers for the mode.
    let mut s = kvm_sregs::default();
    let user = !matches!(mode, Mode::Real) && r.pct(12);
    let tr = kvm_segment {
        base: TSS as u64, limit: 0x67 + 0x2000 / 8, selector: SEL_TSS, type_: 11, present: 1, s: 0,
        ..Default::default()
    };
    s.tr = tr;
    s.ldt = kvm_segment { unusable: 1, type_: 2, ..Default::default() };
    s.gdt.base = GDT as u64;
    s.gdt.limit = 0xff;
    s.idt.base = IDT as u64;
    s.idt.limit = if long { 0xfff } else { 0x7ff };
    s.apic_base = 0xfee0_0900;
    s.cr0 = 0x11; // ET, PE
    let data_dpl = if user { 3 } else { 0 };
    let (ds_sel, cs_sel) = if user { (SEL_DATA_U, SEL_CODE32_U) } else { (SEL_DATA, SEL_CODE32) };
    let flat_data = seg(0, 0xffff_ffff, ds_sel, 3, data_dpl, 1, 0, 1);
    (s.ds, s.es, s.fs, s.gs, s.ss) = (flat_data, flat_data, flat_data, flat_data, flat_data);
    match mode {
        Mode::Real => {
            s.cr0 = 0x10;
            s.idt.base = 0;
            s.idt.limit = 0x3ff;
            let (cs_base, sel) = match r.below(10) {
                0 if alias == Some(ALIAS_GPA) => (ALIAS_GPA, 0xf000u16),
                1..=3 => {
                    // Selector RPL 0 (bits 1:0), as CS.DPL: mostly.
                    let b = (entry as u64 - r.below(0x1_0000).min(entry as u64)) & if r.pct(90) { !0x3f } else { !0xf };
                    (b, (b >> 4) as u16)
                }
                _ => (CODE as u64, (CODE >> 4) as u16),
            };
            let ip = if cs_base == ALIAS_GPA { 0xfff0 } else { entry as u64 - cs_base };
            let big = r.pct(15);
            let limit = if big { 0xffff_ffff } else { 0xffff };
            s.cs = seg(cs_base, limit, sel, 0xb, 0, 0, 0, big as u8);
            for d in [&mut s.ds, &mut s.es, &mut s.fs, &mut s.gs, &mut s.ss] {
                let sel = if r.pct(50) { 0 } else { r.next() as u16 };
                *d = seg((sel as u64) << 4, limit, sel, 3, 0, 0, 0, big as u8);
            }
            s.ss.base = 0;
            s.ss.selector = 0;
            s.tr = kvm_segment { limit: 0xffff, type_: 11, present: 1, ..Default::default() };
            regs.rip = ip;
            regs.rsp &= 0xffff;
        }
        Mode::Prot16 => {
            s.cs = seg(CODE as u64, 0xffff, SEL_CODE16, 0xb, 0, 0, 0, 0);
            regs.rip = (entry - CODE) as u64;
            s.ss = seg(0, 0xffff, SEL_DATA16, 3, 0, 0, 0, 0);
        }
        Mode::Prot32 | Mode::Paged32 | Mode::Pae => {
            let base = if r.pct(10) { r.below(entry as u64) } else { 0 };
            s.cs = seg(base, 0xffff_ffff, cs_sel, 0xb, data_dpl, 1, 0, 1);
            regs.rip = entry as u64 - base;
            if mode != Mode::Prot32 {
                s.cr0 |= 0x8000_0000;
                s.cr3 = cr3;
            }
            if mode == Mode::Pae {
                s.cr4 |= 0x20;
            } else if mode == Mode::Paged32 && r.pct(60) {
                s.cr4 |= 0x10; // PSE
            }
        }
        Mode::Long64 | Mode::Compat => {
            s.cr0 |= 0x8000_0000;
            s.cr3 = cr3;
            s.cr4 |= 0x20;
            s.efer = 0x500;
            if mode == Mode::Long64 {
                let sel = if user { SEL_CODE64_U } else { SEL_CODE64 };
                s.cs = seg(0, 0xffff_ffff, sel, 0xb, data_dpl, 0, 1, 1);
                regs.rip = if r.pct(10) { 0xffff_ff80_0000_0000 + entry as u64 } else { entry as u64 };
            } else {
                s.cs = seg(0, 0xffff_ffff, cs_sel, 0xb, data_dpl, 1, 0, 1);
                regs.rip = entry as u64;
            }
            if !user && r.pct(30) {
                for d in [&mut s.ds, &mut s.es, &mut s.ss] {
                    *d = kvm_segment { unusable: 1, ..*d };
                }
            }
            let (f, g) = (value(r), value(r));
            s.fs.base = canonical(r, f);
            s.gs.base = canonical(r, g);
        }
    }
    if long {
        regs.rflags &= !(1 << 17); // no VM86 in long mode (KVM lets it reach VM entry)
    }
    // Optional features and flags the mode allows (and the CPUID has), then occasional nonsense.
    for (bit, p) in [(1u64, 40), (5, 60), (16, 50), (18, 10), (2, 5), (3, 5), (29, 3), (30, 2)] {
        if r.pct(p) {
            s.cr0 |= 1 << bit;
        }
    }
    if s.cr0 & 1 << 29 != 0 {
        s.cr0 |= 1 << 30; // NW needs CD
    }
    for (bit, p) in [(9u64, 60), (10, 50), (7, 20), (3, 10), (2, 5), (8, 5), (0, 5), (1, 5), (11, 5), (16, 10), (17, 5), (18, 25), (20, 10), (21, 10), (22, 5), (13, 3), (12, 2), (14, 2), (23, 2)] {
        let want = r.pct(p);
        if want && mode != Mode::Real && ctx.cr4_ok & 1 << bit != 0 && (bit != 17 || long) {
            s.cr4 |= 1 << bit;
        }
    }
    if r.pct(50) {
        s.efer |= 1; // SCE
    }
    if wide && mode != Mode::Real && r.pct(60) {
        s.efer |= 0x800; // NXE
    }
    s.cr2 = value(r);
    s.cr8 = if r.pct(80) { 0 } else { r.below(16) };
    if r.pct(3) {
        s.interrupt_bitmap[r.below_usize(4)] = 1 << r.below(64);
    }
    // Garbage descriptor tables.
    if r.pct(8) {
        let v = if r.pct(50) { address(r) } else { value(r) };
        s.idt.base = canonical(r, v);
        s.idt.limit = r.next() as u16;
    }
    if r.pct(4) {
        s.gdt.base = address(r);
        s.gdt.limit = r.next() as u16;
    }
    if r.pct(4) {
        s.idt.limit = r.below(0x40) as u16;
    }
    // Mutations of fields, each maybe refused by KVM_SET_SREGS.
    if r.pct(10) {
        for _ in 0..1 + r.below(3) {
            let which = r.below(8);
            let sg = match r.below(8) {
                0 => &mut s.cs,
                1 => &mut s.ds,
                2 => &mut s.es,
                3 => &mut s.fs,
                4 => &mut s.gs,
                5 => &mut s.ss,
                6 => &mut s.tr,
                _ => &mut s.ldt,
            };
            match which {
                0 => sg.type_ = r.below(16) as u8,
                1 => sg.dpl = r.below(4) as u8,
                2 => sg.db ^= 1,
                3 => sg.l ^= 1,
                4 => sg.g ^= 1,
                5 => sg.present ^= 1,
                6 => sg.unusable ^= 1,
                _ => {
                    sg.base = value(r);
                    sg.limit = r.next() as u32;
                    sg.selector = r.next() as u16;
                    sg.s ^= r.below(2) as u8;
                }
            }
        }
    }
    if r.pct(4) {
        s.cr0 ^= 1 << r.below(32);
    }
    if r.pct(4) {
        s.cr4 ^= 1 << r.below(26);
    }
    if r.pct(3) {
        s.efer ^= 1 << r.pick(&[0u64, 8, 10, 11, 12, 13, 14, 15, 20, 21, 1, 63]);
    }
    if r.pct(2) {
        let v = value(r);
        s.apic_base = r.pick(&[0, 0xfee0_0800, 0xfee0_0c00, 0xfee0_0400, v]);
    }

    // FPU, XCR0, debug registers, events, MSRs, guest debugging.
    let mut fpu = kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() };
    if r.pct(5) {
        fpu.mxcsr = if r.pct(50) { r.next() as u32 } else { 0x1f80 | r.below(0x10000) as u32 };
        fpu.fcw = r.next() as u16;
        fpu.fsw = r.next() as u16;
        fpu.ftwx = r.byte();
        for x in fpu.xmm.iter_mut().chain(fpu.fpr.iter_mut()) {
            x.iter_mut().for_each(|b| *b = r.byte());
        }
    }
    let xcr0 = ctx.xcrs.then(|| {
        let mut x = kvm_xcrs { nr_xcrs: 1, ..Default::default() };
        x.xcrs[0].value = 1;
        if r.pct(6) {
            let v = value(r);
            x.xcrs[0].value = r.pick(&[3, 7, 0xe7, 0x207, 2, 0, ctx.xcr0_mask, v]);
            if r.pct(20) {
                x.xcrs[0].xcr = r.pick(&[1, 2, 0xffff_ffff]);
            }
            if r.pct(10) {
                x.nr_xcrs = r.below(18) as u32;
            }
        }
        x
    });
    let mut debugregs = kvm_debugregs { dr6: 0xffff_0ff0, dr7: 0x400, ..Default::default() };
    if r.pct(6) {
        for d in debugregs.db.iter_mut() {
            *d = if r.pct(60) { entry as u64 + r.below(0x40) } else { value(r) };
        }
        debugregs.dr7 = 0x400 | r.next() & 0xffff_2bff;
        debugregs.dr6 = 0xffff_0ff0 | r.next() & 0xe00f;
        if r.pct(5) {
            debugregs.dr7 |= 1 << (32 + r.below(32));
        }
    }
    // Clears what a previous guest left pending (NMI_PENDING and SHADOW are valid).
    let mut events = kvm_vcpu_events { flags: 0x5, ..Default::default() };
    if r.pct(6) {
        let e = &mut events;
        if r.pct(40) {
            e.exception.injected = 1;
            e.exception.nr = r.below(32) as u8;
            // Mostly what the vector pushes; a wrong one fails VM entry on KVM and rvmx alike.
            let right = has_error_code(e.exception.nr) && !matches!(mode, Mode::Real);
            e.exception.has_error_code = if r.pct(90) { right as u8 } else { r.below(2) as u8 };
            e.exception.error_code = r.next() as u32 & if r.pct(90) { 0xffff } else { u32::MAX };
        }
        if r.pct(40) {
            e.interrupt.injected = 1;
            e.interrupt.nr = r.byte();
            e.interrupt.soft = r.below(2) as u8;
        }
        // STI blocking only with IF set (else VM entry fails, on KVM too), mostly.
        e.interrupt.shadow = r.below(4) as u8;
        if regs.rflags & 1 << 9 == 0 && r.pct(90) {
            e.interrupt.shadow &= !1;
        }
        e.nmi.injected = r.below(2) as u8;
        e.nmi.pending = r.below(3) as u8;
        e.nmi.masked = r.below(2) as u8;
        if r.pct(10) {
            e.flags |= r.pick(&[0x2, 0x8, 0x10, 0x20, 0x40]);
            e.smi.smm = r.below(2) as u8;
            e.smi.pending = r.below(2) as u8;
            e.triple_fault.pending = r.below(2) as u8;
            e.sipi_vector = r.next() as u32;
        }
    }
    let mut msrs: Vec<kvm_msr_entry> = MSR_RESET.iter().map(|&(index, data)| kvm_msr_entry { index, data, ..Default::default() }).collect();
    if r.pct(10) {
        for _ in 0..1 + r.below(4) {
            let index = if r.pct(90) { r.pick(MSRS) } else { r.next() as u32 };
            msrs.push(kvm_msr_entry { index, data: value(r), ..Default::default() });
        }
    }
    let guest_debug = r.pct(5).then(|| {
        let mut g = kvm_guest_debug { control: 1, ..Default::default() };
        for (bit, p) in [(1u32, 70), (16, 20), (17, 20), (2, 5), (3, 5)] {
            if r.pct(p) {
                g.control |= 1 << bit;
            }
        }
        for d in g.arch.debugreg[..4].iter_mut() {
            *d = if r.pct(60) { entry as u64 + r.below(0x40) } else { value(r) };
        }
        g.arch.debugreg[7] = 0x400 | r.next() & 0xffff_03ff;
        g
    });
    let cpuid = r.pct(2).then(|| mutated(r, &ctx.supported));
    let rom = r.pct(92);
    Plan { mode, regs, sregs: s, fpu, xcr0, debugregs, events, msrs, guest_debug, cpuid, rom, alias }
}

/// The supported CPUID table with a few entries changed, dropped or added.
fn mutated(r: &mut Rng, sup: &[kvm_cpuid_entry2]) -> Vec<kvm_cpuid_entry2> {
    let mut t = sup.to_vec();
    for _ in 0..1 + r.below(6) {
        match r.below(5) {
            0 if !t.is_empty() => {
                let i = r.below_usize(t.len());
                t.remove(i);
            }
            1 => {
                let function = r.pick(LEAVES);
                t.push(kvm_cpuid_entry2 {
                    function, index: r.below(4) as u32, flags: r.below(2) as u32,
                    eax: r.next() as u32, ebx: r.next() as u32, ecx: r.next() as u32, edx: r.next() as u32,
                    ..Default::default()
                });
            }
            _ if !t.is_empty() => {
                let i = r.below_usize(t.len());
                let e = &mut t[i];
                let bit = 1u32 << r.below(32);
                match r.below(4) {
                    0 => e.eax ^= bit,
                    1 => e.ebx ^= bit,
                    2 => e.ecx ^= bit,
                    _ => e.edx ^= bit,
                }
            }
            _ => {}
        }
    }
    if r.pct(10) {
        // Absurd XSAVE sizes.
        for e in t.iter_mut().filter(|e| e.function == 0xd) {
            e.ebx = r.next() as u32;
            e.ecx = r.next() as u32;
        }
    }
    t
}

// ---- The VM ----------------------------------------------------------------------------------

/// Per process: the device, its tables, guest memory (reused by every VM).
struct Ctx {
    /// None with --plan-only.
    kvm: Option<Kvm>,
    supported: Vec<kvm_cpuid_entry2>,
    xcrs: bool,
    xcr0_mask: u64,
    /// CR4 bits the supported CPUID allows.
    cr4_ok: u64,
    ram: *mut u8,
    rom: *mut u8,
}

impl Ctx {
    /// Where slot 2 goes for a guest.
    fn alias_choice(&self, r: &mut Rng) -> Option<u64> {
        match r.below(20) {
            0 => None,
            1 => Some(0x10_0000 + (r.below(0xeff0) << 16)),
            _ => Some(ALIAS_GPA),
        }
    }
}

struct Machine {
    vm: VmFd,
    vcpu: VcpuFd,
    rom: bool,
    alias: Option<u64>,
    dirty_log: bool,
}

/// The vCPU's `kvm_run`, for the SIGALRM handler (null when there is none).
static RUN: AtomicPtr<kvm_run> = AtomicPtr::new(ptr::null_mut());
static FIRED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_alarm(_: libc::c_int) {
    FIRED.store(true, Ordering::SeqCst);
    let run = RUN.load(Ordering::SeqCst);
    if !run.is_null() {
        // SAFETY: the vCPU (and its kvm_run mapping) outlives the pointer's publication: RUN is
        // cleared, with the timer disarmed, before the vCPU is dropped.
        unsafe { ptr::write_volatile(&mut (*run).immediate_exit, 1) };
    }
}

fn arm(ms: u64) {
    let t = libc::itimerval {
        it_interval: libc::timeval { tv_sec: 0, tv_usec: 0 },
        it_value: libc::timeval { tv_sec: (ms / 1000) as i64, tv_usec: (ms % 1000 * 1000) as i64 },
    };
    // SAFETY: setitimer reads `t`.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &t, ptr::null_mut()) };
}

#[derive(Default)]
struct Stats {
    guests: u64,
    counts: BTreeMap<String, u64>,
}

impl Stats {
    fn add(&mut self, key: &str) {
        if let Some(v) = self.counts.get_mut(key) {
            *v += 1;
        } else {
            self.counts.insert(key.to_string(), 1);
        }
    }
}

fn region(slot: u32, gpa: u64, size: usize, host: *mut u8, flags: u32) -> kvm_userspace_memory_region {
    kvm_userspace_memory_region { slot, flags, guest_phys_addr: gpa, memory_size: size as u64, userspace_addr: host as u64 }
}

fn set_region(vm: &VmFd, reg: kvm_userspace_memory_region, st: &mut Stats, what: &str) {
    // SAFETY: every region is one of this process's mappings (never unmapped) or a deletion.
    if let Err(e) = unsafe { vm.set_user_memory_region(reg) } {
        st.add(&format!("refused set_user_memory_region_{what} errno {}", e.errno()));
    }
}

/// A new VM and vCPU for batch `b`.
fn machine(ctx: &Ctx, seed: u64, b: u64, st: &mut Stats) -> Machine {
    let mut r = Rng::new(seed, 1, b);
    let vm = ctx.kvm.as_ref().expect("device").create_vm().expect("KVM_CREATE_VM");
    // Its own stream, so that the batch's other choices stay what they were before it came.
    if Rng::new(seed, 3, b).pct(50) {
        let split = kvm_bindings::kvm_enable_cap { cap: kvm_bindings::KVM_CAP_SPLIT_IRQCHIP, args: [24, 0, 0, 0], ..Default::default() };
        if let Err(e) = vm.enable_cap(&split) {
            st.add(&format!("refused split_irqchip errno {}", e.errno()));
        }
    } else if Rng::new(seed, 7, b).pct(50) {
        // The full irqchip (PIC pair and IOAPIC in the kernel; the guests' port and MMIO
        // writes reach them), from a stream of its own too.
        if let Err(e) = vm.create_irq_chip() {
            st.add(&format!("refused create_irqchip errno {}", e.errno()));
        }
        // And the 8254, whose ports the guests' OUTs may program (IRQ 0 then ticks).
        let pit = kvm_bindings::kvm_pit_config { flags: 1, ..Default::default() };
        if let Err(e) = vm.create_pit2(pit) {
            st.add(&format!("refused create_pit2 errno {}", e.errno()));
        }
    }
    // Coalesced zones over every port and the MMIO below 4 GiB, also from a stream of their own.
    if Rng::new(seed, 5, b).pct(50) {
        for (addr, size, pio) in [(0u64, 0x1_0000u32, 1u32), (0, u32::MAX, 0)] {
            let z = kvm_bindings::kvm_coalesced_mmio_zone { addr, size, __bindgen_anon_1: kvm_bindings::kvm_coalesced_mmio_zone__bindgen_ty_1 { pio } };
            // SAFETY: KVM_REGISTER_COALESCED_MMIO reads one zone.
            if unsafe { libc::ioctl(vm.as_raw_fd(), 0x4010_ae67, &z) } < 0 {
                st.add(&format!("refused coalesced_zone errno {}", std::io::Error::last_os_error().raw_os_error().unwrap_or(0)));
            }
        }
    }
    let dirty_log = r.pct(25);
    set_region(&vm, region(0, 0, RAM, ctx.ram, if dirty_log { KVM_MEM_LOG_DIRTY_PAGES } else { 0 }), st, "ram");
    // The RAM again in SMM's address space (as QEMU maps it): an SMI saves the state at SMBASE
    // (0x30000) + 0xfe00 and runs whatever RAM holds at SMBASE + 0x8000, RSM loads it back.
    set_region(&vm, region(1 << 16, 0, RAM, ctx.ram, 0), st, "smm_ram");
    if let Err(e) = vm.set_tss_address(0xfffb_d000) {
        st.add(&format!("refused set_tss_addr errno {}", e.errno()));
    }
    let id = r.pick(&[0, 0, 0, 1, 5]);
    let vcpu = vm.create_vcpu(id).expect("KVM_CREATE_VCPU");
    let table = match r.below(10) {
        0 => mutated(&mut r, &ctx.supported),
        1 => vec![
            kvm_cpuid_entry2 { function: 0, eax: 1, ebx: 0x786d_7672, ..Default::default() },
            kvm_cpuid_entry2 { function: 1, eax: 0x906ea, ..Default::default() },
            kvm_cpuid_entry2 { function: 0x8000_0000, eax: 0x8000_0001, ..Default::default() },
            kvm_cpuid_entry2 { function: 0x8000_0001, edx: 1 << 29 | 1 << 20 | 1 << 11, ..Default::default() },
        ],
        _ => ctx.supported.clone(),
    };
    match CpuId::from_entries(&table) {
        Ok(c) => {
            if let Err(e) = vcpu.set_cpuid2(&c) {
                st.add(&format!("refused set_cpuid2_vm errno {}", e.errno()));
            }
        }
        Err(_) => st.add("refused set_cpuid2_vm too_big"),
    }
    Machine { vm, vcpu, rom: false, alias: None, dirty_log }
}

/// Slots 1 and 2 as guest `p` wants them.
fn slots(ctx: &Ctx, m: &mut Machine, p: &Plan, st: &mut Stats) {
    if m.rom != p.rom {
        let size = if p.rom { ROM } else { 0 };
        set_region(&m.vm, region(1, ROM_GPA, size, ctx.rom, KVM_MEM_READONLY), st, "rom");
        m.rom = p.rom;
    }
    if m.alias != p.alias {
        if let Some(gpa) = m.alias {
            // SAFETY: see `set_region`.
            set_region(&m.vm, region(2, gpa, 0, unsafe { ctx.ram.add(ALIAS_OFF) }, 0), st, "alias_delete");
        }
        if let Some(gpa) = p.alias {
            // SAFETY: see `set_region`.
            set_region(&m.vm, region(2, gpa, ALIAS, unsafe { ctx.ram.add(ALIAS_OFF) }, 0), st, "alias");
        }
        m.alias = p.alias;
    }
}

fn interrupt(vcpu: &VcpuFd, vector: u32, st: &mut Stats) {
    // SAFETY: KVM_INTERRUPT reads one u32 from the pointer.
    if unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_INTERRUPT, &vector) } < 0 {
        st.add(&format!("refused interrupt errno {}", std::io::Error::last_os_error().raw_os_error().unwrap_or(0)));
    } else {
        st.add("injected interrupt");
    }
}

fn smi(vcpu: &VcpuFd, st: &mut Stats) {
    match vcpu.smi() {
        Ok(()) => st.add("injected smi"),
        Err(e) => st.add(&format!("refused smi errno {}", e.errno())),
    }
}

fn nmi(vcpu: &VcpuFd, st: &mut Stats) {
    match vcpu.nmi() {
        Ok(()) => st.add("injected nmi"),
        Err(e) => st.add(&format!("refused nmi errno {}", e.errno())),
    }
}

enum Next {
    Continue,
    Stop(String),
    Hlt,
    Window,
    Intr,
}

fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EINTR => "EINTR",
        libc::EFAULT => "EFAULT",
        libc::EINVAL => "EINVAL",
        libc::ENOMEM => "ENOMEM",
        libc::EAGAIN => "EAGAIN",
        libc::ENOEXEC => "ENOEXEC",
        libc::ENXIO => "ENXIO",
        libc::EIO => "EIO",
        libc::EBUSY => "EBUSY",
        libc::EPERM => "EPERM",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EHWPOISON => "EHWPOISON",
        _ => "",
    };
    format!("{e}{}{name}", if name.is_empty() { "" } else { " " })
}

/// Runs guest `i`: sets its state, runs it to its end, returns how it ended.
/// `smis` decides when to send `KVM_SMI` (a stream of its own: the other choices stay what
/// they were before SMM came).
fn run_guest(ctx: &Ctx, m: &mut Machine, r: &mut Rng, smis: &mut Rng, p: &Plan, opt: &Opts, st: &mut Stats) -> String {
    slots(ctx, m, p, st);
    let vcpu = &mut m.vcpu;
    if let Some(t) = &p.cpuid {
        match CpuId::from_entries(t) {
            Ok(c) => {
                if let Err(e) = vcpu.set_cpuid2(&c) {
                    st.add(&format!("refused set_cpuid2 errno {}", e.errno()));
                }
            }
            Err(_) => st.add("refused set_cpuid2 too_big"),
        }
    }
    if let Err(e) = vcpu.set_vcpu_events(&p.events) {
        st.add(&format!("refused set_vcpu_events errno {}", e.errno()));
        let _ = vcpu.set_vcpu_events(&kvm_vcpu_events { flags: 0x5, ..Default::default() });
    }
    if let Err(e) = vcpu.set_fpu(&p.fpu) {
        st.add(&format!("refused set_fpu errno {}", e.errno()));
        let _ = vcpu.set_fpu(&kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() });
    }
    if let Some(x) = &p.xcr0 {
        if let Err(e) = vcpu.set_xcrs(x) {
            st.add(&format!("refused set_xcrs errno {}", e.errno()));
        }
    }
    if let Err(e) = vcpu.set_debug_regs(&p.debugregs) {
        st.add(&format!("refused set_debugregs errno {}", e.errno()));
        let _ = vcpu.set_debug_regs(&kvm_debugregs { dr6: 0xffff_0ff0, dr7: 0x400, ..Default::default() });
    }
    let msrs = Msrs::from_entries(&p.msrs).expect("msrs");
    match vcpu.set_msrs(&msrs) {
        Ok(n) if n == p.msrs.len() => {}
        Ok(n) if n < MSR_RESET.len() => st.add(&format!("refused set_msrs reset_stopped_at {:#x}", p.msrs[n].index)),
        Ok(_) => st.add("refused set_msrs random_partly"),
        Err(e) => st.add(&format!("refused set_msrs errno {}", e.errno())),
    }
    let gd = p.guest_debug.unwrap_or_default();
    if let Err(e) = vcpu.set_guest_debug(&gd) {
        st.add(&format!("refused set_guest_debug errno {}", e.errno()));
    }
    if let Err(e) = vcpu.set_sregs(&p.sregs) {
        st.add(&format!("refused set_sregs errno {}", e.errno()));
        if opt.verbose {
            println!("  set_sregs refused ({}): cr0 {:#x} cr4 {:#x} efer {:#x}", e.errno(), p.sregs.cr0, p.sregs.cr4, p.sregs.efer);
        }
        return "sregs_refused".into();
    }
    if let Err(e) = vcpu.set_regs(&p.regs) {
        st.add(&format!("refused set_regs errno {}", e.errno()));
        return "regs_refused".into();
    }

    FIRED.store(false, Ordering::SeqCst);
    vcpu.set_kvm_immediate_exit(0);
    arm(opt.timeout_ms);
    let mut end = String::from("budget");
    let mut exits = 0;
    for _ in 0..opt.budget {
        if r.pct(3) {
            interrupt(vcpu, r.below(256) as u32, st);
        }
        if r.pct(2) {
            nmi(vcpu, st);
        }
        if smis.pct(2) {
            smi(vcpu, st);
        }
        if r.pct(5) {
            vcpu.get_kvm_run().request_interrupt_window = 1;
        }
        let deliberate = r.pct(2);
        if deliberate {
            vcpu.set_kvm_immediate_exit(1);
        }
        let next = match vcpu.run() {
            Ok(VcpuExit::IoIn(_, data)) => {
                data.iter_mut().for_each(|b| *b = r.byte());
                st.add("exit io_in");
                Next::Continue
            }
            Ok(VcpuExit::IoOut(..)) => {
                st.add("exit io_out");
                Next::Continue
            }
            Ok(VcpuExit::MmioRead(_, data)) => {
                data.iter_mut().for_each(|b| *b = r.byte());
                st.add("exit mmio_read");
                Next::Continue
            }
            Ok(VcpuExit::MmioWrite(..)) => {
                st.add("exit mmio_write");
                Next::Continue
            }
            Ok(VcpuExit::Hlt) => Next::Hlt,
            Ok(VcpuExit::Debug(_)) => {
                st.add("exit debug");
                Next::Continue
            }
            Ok(VcpuExit::IrqWindowOpen) => Next::Window,
            Ok(VcpuExit::Shutdown) => Next::Stop("shutdown".into()),
            Ok(VcpuExit::InternalError) => Next::Stop("internal_error".into()),
            Ok(VcpuExit::FailEntry(reason, _)) => Next::Stop(format!("fail_entry {reason:#x}")),
            Ok(VcpuExit::Intr) => Next::Intr,
            Ok(VcpuExit::SystemEvent(t, _)) => Next::Stop(format!("system_event {t}")),
            Ok(VcpuExit::MemoryFault { .. }) => Next::Stop("memory_fault".into()),
            Ok(VcpuExit::Hypercall(_)) => Next::Stop("hypercall".into()),
            Ok(other) => Next::Stop(format!("other {other:?}")),
            Err(e) if e.errno() == libc::EINTR => Next::Intr,
            Err(e) => Next::Stop(format!("errno {}", errno_name(e.errno()))),
        };
        exits += 1;
        vcpu.get_kvm_run().request_interrupt_window = 0;
        match next {
            Next::Continue => {}
            Next::Stop(why) => {
                end = why;
                if end == "internal_error" {
                    // SAFETY: after KVM_EXIT_INTERNAL_ERROR the `internal` member is valid.
                    let s = unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
                    end = format!("internal_error {s}");
                }
                break;
            }
            Next::Hlt => {
                st.add("exit hlt");
                match r.below(10) {
                    0..=3 => {
                        end = "hlt".into();
                        break;
                    }
                    4..=6 => interrupt(vcpu, r.below(256) as u32, st),
                    7 => nmi(vcpu, st),
                    _ => {}
                }
            }
            Next::Window => {
                st.add("exit irq_window_open");
                interrupt(vcpu, 32 + r.below(224) as u32, st);
            }
            Next::Intr => {
                if FIRED.load(Ordering::SeqCst) {
                    end = "timer".into();
                    break;
                }
                st.add(if deliberate { "exit eintr immediate_exit" } else { "exit eintr other" });
                vcpu.set_kvm_immediate_exit(0);
            }
        }
        if deliberate {
            vcpu.set_kvm_immediate_exit(0);
        }
    }
    arm(0);
    // Read-back paths: the registers, a few translations, the dirty log.
    if r.pct(10) {
        let _ = vcpu.get_regs();
        let _ = vcpu.get_sregs();
        let _ = vcpu.get_vcpu_events();
        for _ in 0..4 {
            let gva = if r.pct(50) { address(r) } else { value(r) };
            match vcpu.translate_gva(gva) {
                Ok(_) => st.add("translate ok"),
                Err(e) => st.add(&format!("translate errno {}", e.errno())),
            }
        }
    }
    if m.dirty_log && r.pct(20) {
        if let Err(e) = m.vm.get_dirty_log(0, RAM) {
            st.add(&format!("refused get_dirty_log errno {}", e.errno()));
        }
    }
    if opt.verbose {
        println!("  end {end} exits {exits}");
    }
    let _ = exits;
    end
}

struct Opts {
    verbose: bool,
    budget: usize,
    timeout_ms: u64,
    recreate: u64,
}

fn map(size: usize) -> *mut u8 {
    // SAFETY: a fresh anonymous mapping, never unmapped.
    let p = unsafe {
        libc::mmap(ptr::null_mut(), size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    assert!(p != libc::MAP_FAILED, "mmap");
    p as *mut u8
}

/// CR4 bits a guest with CPUID table `t` may set.
fn cr4_mask(t: &[kvm_cpuid_entry2]) -> u64 {
    let has = |function: u32, reg: usize, bit: u32| {
        t.iter().find(|e| e.function == function && e.index == 0).is_some_and(|e| [e.eax, e.ebx, e.ecx, e.edx][reg] & 1 << bit != 0)
    };
    let mut m = 0x7ff; // VME..OSXMMEXCPT
    for (cr4_bit, function, reg, bit) in [
        (11, 7, 2, 2), (12, 7, 2, 16), (13, 1, 2, 5), (14, 1, 2, 6), (16, 7, 1, 0), (17, 1, 2, 17),
        (18, 1, 2, 26), (20, 7, 1, 7), (21, 7, 1, 20), (22, 7, 2, 3), (23, 7, 2, 7),
    ] {
        if has(function, reg, bit) {
            m |= 1 << cr4_bit;
        }
    }
    m
}

fn usage() -> ExitCode {
    eprintln!("usage: kvm-guest-fuzz DEVICE SEED COUNT [--start I] [--verbose] [--budget EXITS] [--timeout-ms MS] [--recreate N] [--plan-only]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut pos = Vec::new();
    let mut opt = Opts { verbose: false, budget: 64, timeout_ms: 20, recreate: 256 };
    let mut start = 0u64;
    let mut plan_only = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let num = |it: &mut std::slice::Iter<String>| it.next().and_then(|v| parse(v));
        match a.as_str() {
            "--verbose" | "-v" => opt.verbose = true,
            "--plan-only" => plan_only = true,
            "--start" => match num(&mut it) { Some(v) => start = v, None => return usage() },
            "--budget" => match num(&mut it) { Some(v) if v > 0 => opt.budget = v as usize, _ => return usage() },
            "--timeout-ms" => match num(&mut it) { Some(v) if v > 0 => opt.timeout_ms = v, _ => return usage() },
            "--recreate" => match num(&mut it) { Some(v) if v > 0 => opt.recreate = v, _ => return usage() },
            s if s.starts_with('-') => return usage(),
            _ => pos.push(a.clone()),
        }
    }
    let [dev, seed, count] = &pos[..] else { return usage() };
    let (Some(seed), Some(count)) = (parse(seed), parse(count)) else { return usage() };

    let kvm = if plan_only {
        None
    } else {
        match Kvm::new_with_path(&CString::new(dev.as_str()).unwrap()) {
            Ok(k) => Some(k),
            Err(e) => {
                eprintln!("kvm-guest-fuzz: cannot open {dev}: {e}");
                return ExitCode::from(1);
            }
        }
    };
    // With --plan-only: a CPU with XSAVE (XCR0 up to 7) and nothing in CPUID leaf 7.
    let supported = kvm.as_ref().map_or(Vec::new(), |k| {
        k.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).expect("KVM_GET_SUPPORTED_CPUID").as_slice().to_vec()
    });
    let xcr0_mask = supported.iter().find(|e| e.function == 0xd && e.index == 0).map_or(7, |e| e.eax as u64 | (e.edx as u64) << 32);
    let xcrs = kvm.as_ref().is_none_or(|k| k.check_extension(Cap::Xcrs) && supported.iter().any(|e| e.function == 1 && e.ecx & 1 << 26 != 0));
    let cr4_ok = cr4_mask(&supported);
    let ctx = Ctx { kvm, supported, xcrs, xcr0_mask, cr4_ok, ram: map(RAM), rom: map(ROM) };
    {
        // The ROM: soup and data from the seed alone.
        // SAFETY: the ROM mapping is ROM bytes long and only this slice refers to it here.
        let rom = unsafe { std::slice::from_raw_parts_mut(ctx.rom, ROM) };
        let mut r = Rng::new(seed, 2, 0);
        soup(&mut r, rom, &mut Vec::new());
    }
    // SAFETY: a handler that records the alarm and stops the vCPU's next or current KVM_RUN.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as *const () as usize;
        libc::sigaction(libc::SIGALRM, &sa, ptr::null_mut());
    }

    println!("kvm-guest-fuzz {dev} seed {seed} start {start} count {count} budget {} timeout_ms {} recreate {}",
             opt.budget, opt.timeout_ms, opt.recreate);
    let mut st = Stats::default();
    let t0 = Instant::now();
    let mut scratch = Vec::with_capacity(64);
    let mut m: Option<Machine> = None;
    let mut poisoned = false;
    for i in start..start.saturating_add(count) {
        if plan_only {
            let mut r = Rng::new(seed, 0, i);
            // SAFETY: the RAM mapping is RAM bytes long.
            let mem = unsafe { std::slice::from_raw_parts_mut(ctx.ram, RAM) };
            let p = plan(&mut r, mem, &ctx, &mut scratch);
            if !opt.verbose {
                std::hint::black_box(&p);
                st.guests += 1;
                continue;
            }
            println!("guest seed {seed} index {i} mode {:?} rip {:#x} rflags {:#x} cr0 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x}",
                     p.mode, p.regs.rip, p.regs.rflags, p.sregs.cr0, p.sregs.cr3, p.sregs.cr4, p.sregs.efer);
            println!("  cs {:?}\n  ss {:?}\n  events {:?}\n  guest_debug {:?}\n  debugregs {:?}\n  msrs {:x?}\n  rom {} alias {:x?} cpuid {}",
                     p.sregs.cs, p.sregs.ss, p.events, p.guest_debug.map(|g| (g.control, g.arch.debugreg)), p.debugregs,
                     p.msrs.iter().map(|e| (e.index, e.data)).collect::<Vec<_>>(), p.rom, p.alias, p.cpuid.is_some());
            continue;
        }
        // A VM per batch, and a fresh one after a failed VM entry: an event KVM_SET_VCPU_EVENTS
        // let through and the entry refused stays stuck in the VMCS (KVM and rvmx alike) and
        // would fail every later guest of the batch.
        let new_batch = m.is_none() || i % opt.recreate == 0;
        if new_batch || poisoned {
            if poisoned {
                st.add("recreated after fail_entry");
            }
            RUN.store(ptr::null_mut(), Ordering::SeqCst);
            drop(m.take());
            if !opt.verbose && new_batch {
                eprintln!("batch {} guest {i} elapsed_ms {}", i / opt.recreate, t0.elapsed().as_millis());
            }
            let mut mm = machine(&ctx, seed, i / opt.recreate, &mut st);
            RUN.store(mm.vcpu.get_kvm_run() as *mut kvm_run, Ordering::SeqCst);
            m = Some(mm);
        }
        let mm = m.as_mut().unwrap();
        let mut r = Rng::new(seed, 0, i);
        // SAFETY: the RAM mapping is RAM bytes long; no vCPU runs while this slice lives.
        let mem = unsafe { std::slice::from_raw_parts_mut(ctx.ram, RAM) };
        let p = plan(&mut r, mem, &ctx, &mut scratch);
        if opt.verbose {
            println!("guest seed {seed} index {i} mode {:?} rip {:#x} rflags {:#x} cr0 {:#x} cr4 {:#x} efer {:#x} debug {} (reproduce: kvm-guest-fuzz {dev} {seed} 1 --start {i})",
                     p.mode, p.regs.rip, p.regs.rflags, p.sregs.cr0, p.sregs.cr4, p.sregs.efer, p.guest_debug.is_some());
        }
        // The coalesced ring's indices as a VMM that drained it leaves them, or spoiled.
        let mut ri = Rng::new(seed, 6, i);
        let (first, last) = if ri.pct(90) {
            let f = ri.below(170) as u32;
            (f, f)
        } else {
            let (f, x) = (ri.next() as u32, ri.next() as u32);
            (f, ri.pick(&[169, 170, 171, x]))
        };
        let ring = (mm.vcpu.get_kvm_run() as *mut kvm_run).cast::<u8>();
        // SAFETY: the vCPU's mapping is 3 pages (KVM_GET_VCPU_MMAP_SIZE); the ring is the third.
        unsafe {
            ring.add(2 * 4096).cast::<u32>().write_volatile(first);
            ring.add(2 * 4096 + 4).cast::<u32>().write_volatile(last);
        }
        let end = run_guest(&ctx, mm, &mut r, &mut Rng::new(seed, 4, i), &p, &opt, &mut st);
        poisoned = end.starts_with("fail_entry");
        st.guests += 1;
        st.add(&format!("end {end}"));
        st.add(&format!("mode {:?}", p.mode));
    }
    RUN.store(ptr::null_mut(), Ordering::SeqCst);
    drop(m);
    let ms = t0.elapsed().as_millis().max(1);
    for (k, v) in &st.counts {
        println!("{k}: {v}");
    }
    println!("summary seed {seed} start {start} guests {} elapsed_ms {ms} guests_per_s {}", st.guests, st.guests as u128 * 1000 / ms);
    ExitCode::SUCCESS
}

fn parse(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}
