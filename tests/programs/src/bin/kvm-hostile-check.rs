//! A hostile guest, through rust-vmm's `kvm-ioctls`: 64-bit guests (assembled below, with an
//! IDT whose handlers record the vector in r13 and resume at r15) try what could hurt a
//! hypervisor: string I/O and MMIO at the ends of the address space and of pages, CPUID tables
//! with absurd XSAVE sizes, every CR0/CR4/EFER bit, WRPKRU, MSRs with reserved bits,
//! instructions that must exit or fault, debug registers armed at kernel addresses and
//! exceptions whose delivery fails. Each line is what KVM gives (a vector, a value, an exit);
//! userspace also checks that this process's own PKRU, hardware watchpoint and signal mask are
//! unchanged afterwards. Prints `key value` lines; tests/vm/security.sh runs it on `/dev/rvmx`
//! and `/dev/kvm` and requires identical output (but for `info` lines).
//!
//! Usage: kvm-hostile-check DEVICE [CASES]
//!
//! CASES is a comma-separated list of case numbers (1 string I/O, 2 MMIO, 3 XSAVE CPUID,
//! 4 CR0/CR4/EFER bits, 5 PKRU, 6 MSRs, 7 instructions, 8 debug registers, 9 event delivery);
//! all by default, string I/O last.
//!
//! The guests share one code blob (at 0x1000): each entry point runs one instruction (or a
//! try-and-restore sequence) and stops at HLT; userspace sets the registers, runs it and reads
//! the registers back. r13 = -1 before each call, so r13 tells which exception (if any) the
//! instruction raised; the #PF handler puts CR2 in r12, the #DB handler DR6.

use std::{ffi::CString, process::ExitCode};

use kvm_bindings::{kvm_cpuid_entry2, kvm_regs, kvm_segment, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit};
use rvmx_test_programs::{code, flat, guest, mmio_pattern, pin_to, watchpoint, Guest};

// Exception handlers, one per vector, 32 bytes apart (copied to 0x7000): r13 := vector, r12 :=
// CR2 (#PF) or DR6 (#DB), drop the error code, resume at r15.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl hx_handlers_start", ".globl hx_handlers_end",
    ".macro hx_handler v, err",
    ".balign 32",
    "mov r13d, \\v",
    ".if \\v == 14",
    "mov r12, cr2",
    ".endif",
    ".if \\v == 1",
    "mov r12, dr6",
    ".endif",
    ".if \\err",
    "add rsp, 8",
    ".endif",
    "mov [rsp], r15",
    "iretq",
    ".endm",
    ".balign 32",
    "hx_handlers_start:",
    "hx_handler 0, 0", "hx_handler 1, 0", "hx_handler 2, 0", "hx_handler 3, 0",
    "hx_handler 4, 0", "hx_handler 5, 0", "hx_handler 6, 0", "hx_handler 7, 0",
    "hx_handler 8, 1", "hx_handler 9, 0", "hx_handler 10, 1", "hx_handler 11, 1",
    "hx_handler 12, 1", "hx_handler 13, 1", "hx_handler 14, 1", "hx_handler 15, 0",
    "hx_handler 16, 0", "hx_handler 17, 1", "hx_handler 18, 0", "hx_handler 19, 0",
    "hx_handler 20, 0", "hx_handler 21, 1", "hx_handler 22, 0", "hx_handler 23, 0",
    "hx_handler 24, 0", "hx_handler 25, 0", "hx_handler 26, 0", "hx_handler 27, 0",
    "hx_handler 28, 0", "hx_handler 29, 1", "hx_handler 30, 1", "hx_handler 31, 0",
    ".balign 32",
    "hx_handlers_end:",
    ".popsection",
);

// The entry points. Each sets r15 to its final HLT (where a handler resumes), runs its
// instruction(s) and stops.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl hx_code_start", ".globl hx_code_end",
    ".macro hx_entry name, bytes:vararg",
    ".globl \\name",
    "\\name:",
    "lea r15, [rip + 9f]",
    ".byte \\bytes",
    "9:",
    "hlt",
    ".endm",
    "hx_code_start:",
    "hlt",
    // String I/O (DX = port) and MMIO.
    "hx_entry hx_insw, 0x66, 0xf3, 0x6d",
    "hx_entry hx_insb, 0xf3, 0x6c",
    "hx_entry hx_insd, 0xf3, 0x6d",
    "hx_entry hx_outsb, 0xf3, 0x6e",
    "hx_entry hx_insb32, 0x67, 0xf3, 0x6c",             // address size 32: EDI, ECX
    "hx_entry hx_store, 0x89, 0x07",                    // mov [rdi], eax
    "hx_entry hx_load, 0x8b, 0x06",                     // mov eax, [rsi]
    "hx_entry hx_movsb, 0xf3, 0xa4",
    // Instructions.
    "hx_entry hx_wrmsr, 0x0f, 0x30",
    "hx_entry hx_rdmsr, 0x0f, 0x32",
    "hx_entry hx_rdtsc, 0x0f, 0x31",
    "hx_entry hx_cpuid, 0x0f, 0xa2",
    "hx_entry hx_xsetbv, 0x0f, 0x01, 0xd1",
    "hx_entry hx_xgetbv, 0x0f, 0x01, 0xd0",
    "hx_entry hx_wrpkru, 0x0f, 0x01, 0xef",
    "hx_entry hx_rdpkru, 0x0f, 0x01, 0xee",
    "hx_entry hx_wbinvd, 0x0f, 0x09",
    "hx_entry hx_invd, 0x0f, 0x08",
    "hx_entry hx_rdpmc, 0x0f, 0x33",
    "hx_entry hx_monitor, 0x0f, 0x01, 0xc8",
    "hx_entry hx_mwait, 0x0f, 0x01, 0xc9",
    "hx_entry hx_encls, 0x0f, 0x01, 0xcf",
    "hx_entry hx_enclu, 0x0f, 0x01, 0xd7",
    "hx_entry hx_getsec, 0x0f, 0x37",
    "hx_entry hx_vmxon, 0xf3, 0x0f, 0xc7, 0x36",        // vmxon [rsi]
    "hx_entry hx_vmclear, 0x66, 0x0f, 0xc7, 0x36",      // vmclear [rsi]
    "hx_entry hx_vmptrld, 0x0f, 0xc7, 0x36",            // vmptrld [rsi]
    "hx_entry hx_vmread, 0x0f, 0x78, 0xd8",             // vmread rax, rbx
    "hx_entry hx_vmwrite, 0x0f, 0x79, 0xd8",            // vmwrite rbx, rax
    "hx_entry hx_vmlaunch, 0x0f, 0x01, 0xc2",
    "hx_entry hx_vmresume, 0x0f, 0x01, 0xc3",
    "hx_entry hx_vmxoff, 0x0f, 0x01, 0xc4",
    "hx_entry hx_invept, 0x66, 0x0f, 0x38, 0x80, 0x06", // invept rax, [rsi]
    "hx_entry hx_invvpid, 0x66, 0x0f, 0x38, 0x81, 0x06",
    "hx_entry hx_vmfunc, 0x0f, 0x01, 0xd4",
    "hx_entry hx_vmcall, 0x0f, 0x01, 0xc1",
    "hx_entry hx_rdtscp, 0x0f, 0x01, 0xf9",
    "hx_entry hx_rdpid, 0xf3, 0x0f, 0xc7, 0xf8",        // rdpid rax
    "hx_entry hx_invpcid, 0x66, 0x0f, 0x38, 0x82, 0x06", // invpcid rax, [rsi]
    "hx_entry hx_rdrand, 0x0f, 0xc7, 0xf0",             // rdrand eax
    "hx_entry hx_umwait, 0xf2, 0x0f, 0xae, 0xf0",       // umwait eax
    "hx_entry hx_tpause, 0x66, 0x0f, 0xae, 0xf0",       // tpause eax
    "hx_entry hx_pconfig, 0x0f, 0x01, 0xc5",
    "hx_entry hx_int3, 0xcc",
    "hx_entry hx_ud2, 0x0f, 0x0b",
    "hx_entry hx_dr7_set, 0x0f, 0x23, 0xf8",            // mov dr7, rax
    "hx_entry hx_dr6_set, 0x0f, 0x23, 0xf0",            // mov dr6, rax
    "hx_entry hx_dr0_get, 0x0f, 0x21, 0xc0",            // mov rax, dr0
    // Debug registers: DR0..DR3 := rax, rbx, rcx, rdx; DR7 := rsi.
    ".globl hx_dr_set",
    "hx_dr_set:",
    "lea r15, [rip + 9f]",
    "mov dr0, rax",
    "mov dr1, rbx",
    "mov dr2, rcx",
    "mov dr3, rdx",
    "mov dr7, rsi",
    "9:",
    "hlt",
    // rax..rdx := DR0..DR3, rsi := DR6, rdi := DR7.
    ".globl hx_dr_get",
    "hx_dr_get:",
    "lea r15, [rip + 9f]",
    "mov rax, dr0",
    "mov rbx, dr1",
    "mov rcx, dr2",
    "mov rdx, dr3",
    "mov rsi, dr6",
    "mov rdi, dr7",
    "9:",
    "hlt",
    // CR4 |= rax, read back into rdx, then the old value restored.
    ".globl hx_cr4_try",
    "hx_cr4_try:",
    "mov rbx, cr4",
    "or rax, rbx",
    "lea r15, [rip + 8f]",
    "mov cr4, rax",
    "8:",
    "mov rdx, cr4",
    "lea r15, [rip + 9f]",
    "mov cr4, rbx",
    "9:",
    "hlt",
    // CR4 |= rax, kept; read back into rdx.
    ".globl hx_cr4_set",
    "hx_cr4_set:",
    "mov rbx, cr4",
    "or rbx, rax",
    "lea r15, [rip + 9f]",
    "mov cr4, rbx",
    "9:",
    "mov rdx, cr4",
    "hlt",
    // CR0 |= rax (hx_cr0_or) or CR0 &= rax (hx_cr0_and), read back, restored.
    ".globl hx_cr0_or",
    "hx_cr0_or:",
    "mov rbx, cr0",
    "or rax, rbx",
    "jmp 7f",
    ".globl hx_cr0_and",
    "hx_cr0_and:",
    "mov rbx, cr0",
    "and rax, rbx",
    "7:",
    "lea r15, [rip + 8f]",
    "mov cr0, rax",
    "8:",
    "mov rdx, cr0",
    "lea r15, [rip + 9f]",
    "mov cr0, rbx",
    "9:",
    "hlt",
    // EFER |= rax (WRMSR), read back into rdx, restored.
    ".globl hx_efer_try",
    "hx_efer_try:",
    "mov r8, rax",
    "mov ecx, 0xc0000080",
    "rdmsr",
    "shl rdx, 32",
    "or rax, rdx",
    "mov rbx, rax",
    "or rax, r8",
    "mov rdx, rax",
    "shr rdx, 32",
    "lea r15, [rip + 8f]",
    "wrmsr",
    "8:",
    "mov ecx, 0xc0000080",
    "rdmsr",
    "shl rdx, 32",
    "or rdx, rax",
    "mov r9, rdx",
    "mov rax, rbx",
    "mov rdx, rbx",
    "shr rdx, 32",
    "lea r15, [rip + 9f]",
    "wrmsr",
    "9:",
    "mov rdx, r9",
    "hlt",
    "hx_code_end:",
    ".popsection",
);

extern "C" {
    static hx_handlers_start: u8;
    static hx_handlers_end: u8;
    static hx_code_start: u8;
    static hx_code_end: u8;
    static hx_insw: u8;
    static hx_insb: u8;
    static hx_insd: u8;
    static hx_outsb: u8;
    static hx_insb32: u8;
    static hx_store: u8;
    static hx_load: u8;
    static hx_movsb: u8;
    static hx_wrmsr: u8;
    static hx_rdmsr: u8;
    static hx_rdtsc: u8;
    static hx_cpuid: u8;
    static hx_xsetbv: u8;
    static hx_xgetbv: u8;
    static hx_wrpkru: u8;
    static hx_rdpkru: u8;
    static hx_wbinvd: u8;
    static hx_invd: u8;
    static hx_rdpmc: u8;
    static hx_monitor: u8;
    static hx_mwait: u8;
    static hx_encls: u8;
    static hx_enclu: u8;
    static hx_getsec: u8;
    static hx_vmxon: u8;
    static hx_vmclear: u8;
    static hx_vmptrld: u8;
    static hx_vmread: u8;
    static hx_vmwrite: u8;
    static hx_vmlaunch: u8;
    static hx_vmresume: u8;
    static hx_vmxoff: u8;
    static hx_invept: u8;
    static hx_invvpid: u8;
    static hx_vmfunc: u8;
    static hx_vmcall: u8;
    static hx_rdtscp: u8;
    static hx_rdpid: u8;
    static hx_invpcid: u8;
    static hx_rdrand: u8;
    static hx_umwait: u8;
    static hx_tpause: u8;
    static hx_pconfig: u8;
    static hx_int3: u8;
    static hx_ud2: u8;
    static hx_dr7_set: u8;
    static hx_dr6_set: u8;
    static hx_dr0_get: u8;
    static hx_dr_set: u8;
    static hx_dr_get: u8;
    static hx_cr4_try: u8;
    static hx_cr4_set: u8;
    static hx_cr0_or: u8;
    static hx_cr0_and: u8;
    static hx_efer_try: u8;
}

/// Guest RAM layout (64 KiB at 0, see lib.rs): code 0x1000, paging 0x2000..0x6000, GDT 0x6000,
/// IDT 0x6100, stack below 0x7000, handlers 0x7000, scratch 0x9000, data pages 0xa000.. and
/// 0xd000..; 0xf000 is also the top page of the address space. 0x10000.. has no memory.
const GDT: u64 = 0x6000;
const IDT: u64 = 0x6100;
const STACK: u64 = 0x7000;
const HANDLERS: usize = 0x7000;

/// Where entry `sym` is in guest memory.
fn at(sym: &u8) -> u64 {
    // SAFETY: taking the address of the blob's start symbol.
    sym as *const u8 as u64 - unsafe { &hx_code_start as *const u8 as u64 } + 0x1000
}

fn poke(g: &Guest, gpa: usize, bytes: &[u8]) {
    assert!(gpa + bytes.len() <= 0x10000);
    // SAFETY: inside the 64 KiB mapping (checked).
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), g.mem.add(gpa), bytes.len()) };
}

fn poke64(g: &Guest, gpa: usize, v: u64) {
    poke(g, gpa, &v.to_le_bytes());
}

fn ram(g: &Guest, gpa: usize, len: usize) -> Vec<u8> {
    assert!(gpa + len <= 0x10000);
    // SAFETY: inside the 64 KiB mapping (checked).
    unsafe { std::slice::from_raw_parts(g.mem.add(gpa), len) }.to_vec()
}

/// FNV-1a: a short fingerprint of a long run of guest memory.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3))
}

fn entry(function: u32, index: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
    let flags = if function == 0xd || function == 7 { kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX } else { 0 };
    kvm_cpuid_entry2 { function, index, flags, eax, ebx, ecx, edx, ..Default::default() }
}

/// lib.rs's `long_mode_guest` table: vendor, family, LM and NX, nothing else.
fn minimal_table() -> Vec<kvm_cpuid_entry2> {
    vec![
        entry(0, 0, 1, 0x786d_7672, 0, 0),
        entry(1, 0, 0x906ea, 0, 0, 0),
        entry(0x8000_0000, 0, 0x8000_0001, 0, 0, 0),
        entry(0x8000_0001, 0, 0, 0, 0, 1 << 29 | 1 << 20),
    ]
}

/// A fixed table both devices can give in full on the test CPU: basic x86-64 features, XSAVE
/// (leaf 0xD from the device), SYSCALL, NX, RDTSCP, LM; no leaf 7, no PMU, no VMX, no
/// MONITOR.
fn fixed_table(kvm: &Kvm) -> Vec<kvm_cpuid_entry2> {
    let sup = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).expect("KVM_GET_SUPPORTED_CPUID");
    let sup = sup.as_slice();
    let xsave = sup.iter().any(|e| e.function == 1 && e.ecx & 1 << 26 != 0);
    // FPU, TSC, MSR, PAE, CX8, SEP, PGE, CMOV, PAT, FXSR, SSE, SSE2.
    let edx = 1 << 0 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 8 | 1 << 11 | 1 << 13 | 1 << 15 | 1 << 16
        | 1 << 24 | 1 << 25 | 1 << 26;
    let mut t = vec![
        entry(0, 0, if xsave { 0xd } else { 1 }, 0x786d_7672, 0, 0),
        entry(1, 0, 0x906ea, 0, if xsave { 1 << 26 } else { 0 }, edx),
        entry(0x8000_0000, 0, 0x8000_0001, 0, 0, 0),
        entry(0x8000_0001, 0, 0, 0, 0, 1 << 11 | 1 << 20 | 1 << 27 | 1 << 29),
    ];
    if xsave {
        t.extend(sup.iter().filter(|e| e.function == 0xd).copied());
    }
    t
}

fn supported_table(kvm: &Kvm) -> Vec<kvm_cpuid_entry2> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).expect("KVM_GET_SUPPORTED_CPUID").as_slice().to_vec()
}

fn has(t: &[kvm_cpuid_entry2], function: u32, index: u32, reg: usize, bit: u32) -> bool {
    t.iter().find(|e| e.function == function && e.index == index).is_some_and(|e| {
        [e.eax, e.ebx, e.ecx, e.edx][reg] & 1 << bit != 0
    })
}

/// A 64-bit guest (our code blob at 0x1000) with identity paging of the low 2 MiB, 4-KiB
/// pages at 0x200000 (→ 0xa000, 0xb000, 0xc000, not present, unbacked 0x20000, not present),
/// the top page of the address space and of the 4 GiB → 0xf000, a GDT, an IDT with all 32
/// handlers, and CPUID `table`. `name set_cpuid2` is printed if the table is refused.
fn vm(kvm: &Kvm, table: &[kvm_cpuid_entry2], name: &str) -> Guest {
    try_vm(kvm, table, name).0
}

/// [`vm`], and whether KVM_SET_CPUID2 and KVM_SET_SREGS took the table and the state.
fn try_vm(kvm: &Kvm, table: &[kvm_cpuid_entry2], name: &str) -> (Guest, bool) {
    // SAFETY: the symbols delimit the blobs assembled above.
    let (blob, handlers) = unsafe {
        (code(&hx_code_start, &hx_code_end), code(&hx_handlers_start, &hx_handlers_end))
    };
    assert!(blob.len() <= 0x1000);
    let g = guest(kvm, blob);
    for (gpa, v) in [
        (0x2000, 0x3003u64), (0x2000 + 511 * 8, 0x3003),                       // PML4
        (0x3000, 0x4003), (0x3000 + 3 * 8, 0x4003), (0x3000 + 511 * 8, 0x4003), // PDPT
        (0x4000, 0x83), (0x4008, 0x5003), (0x4000 + 511 * 8, 0x5003),           // PD
        (0x5000, 0xa003), (0x5008, 0xb003), (0x5010, 0xc003), (0x5020, 0x2_0003), // PT
        (0x5030, 0x2_1003), (0x5038, 0xe003),                                   // MMIO, then RAM
        (0x5000 + 511 * 8, 0xf003),
    ] {
        poke64(&g, gpa, v);
    }
    for (i, d) in [0u64, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff].iter().enumerate() {
        poke64(&g, GDT as usize + 8 * i, *d);
    }
    poke(&g, HANDLERS, handlers);
    for vector in 0..32u64 {
        let h = HANDLERS as u64 + 32 * vector;
        let lo = (h & 0xffff) | 8 << 16 | 0x8e00 << 32 | (h >> 16 & 0xffff) << 48;
        poke64(&g, IDT as usize + 16 * vector as usize, lo);
        poke64(&g, IDT as usize + 16 * vector as usize + 8, h >> 32);
    }
    let cpuid = CpuId::from_entries(table).unwrap();
    let mut ok = true;
    if let Err(e) = g.vcpu.set_cpuid2(&cpuid) {
        println!("{name} set_cpuid2 errno {}", e.errno());
        ok = false;
    }
    let mut s = g.vcpu.get_sregs().unwrap();
    let seg = |type_: u8, selector: u16, l: u8| kvm_segment { l, db: 1 - l, ..flat(type_, selector) };
    s.cs = seg(11, 8, 1);
    (s.ds, s.es, s.fs, s.gs, s.ss) = (seg(3, 16, 0), seg(3, 16, 0), seg(3, 16, 0), seg(3, 16, 0), seg(3, 16, 0));
    s.gdt.base = GDT;
    s.gdt.limit = 23;
    s.idt.base = IDT;
    s.idt.limit = 16 * 32 - 1;
    s.cr3 = 0x2000;
    s.cr4 = 0x20; // PAE
    s.cr0 = 0x8001_0033; // PG, WP, NE, ET, MP, PE
    s.efer = 0x500; // LME, LMA
    if let Err(e) = g.vcpu.set_sregs(&s) {
        println!("{name} set_sregs errno {}", e.errno());
        ok = false;
    }
    (g, ok)
}

extern "C" fn on_alarm(_: libc::c_int) {}

/// Runs the vCPU until HLT or anything but port or MMIO I/O (at most `max` exits), printing
/// each exit if `verbose`. Bytes read by IN are `pat`, `pat + 1`... across the exits; MMIO
/// reads get lib.rs's `mmio_pattern`. Returns how it ended. A watchdog (SIGALRM) makes a
/// guest that never exits end with errno 4 rather than hang the test.
fn drive(name: &str, g: &mut Guest, max: usize, verbose: bool, pat: &mut u8) -> String {
    // SAFETY: alarm(2) only arms a timer.
    unsafe { libc::alarm(60) };
    let mut end = String::from("bound");
    for i in 0..max {
        let line = match g.vcpu.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                data.iter_mut().for_each(|b| {
                    *b = *pat;
                    *pat = pat.wrapping_add(1);
                });
                format!("io_in port {port:#x}")
            }
            Ok(VcpuExit::IoOut(port, data)) => format!("io_out port {port:#x} data {data:02x?}"),
            Ok(VcpuExit::MmioWrite(addr, data)) => format!("mmio_write addr {addr:#x} data {data:02x?}"),
            Ok(VcpuExit::MmioRead(addr, data)) => {
                mmio_pattern(addr, data);
                format!("mmio_read addr {addr:#x} len {}", data.len())
            }
            Ok(VcpuExit::Hlt) => {
                end = "hlt".into();
                break;
            }
            Ok(VcpuExit::Shutdown) => {
                end = "shutdown".into();
                break;
            }
            Ok(VcpuExit::InternalError) => {
                // SAFETY: after KVM_EXIT_INTERNAL_ERROR the `internal` member is the valid one.
                let s = unsafe { g.vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
                end = format!("internal_error suberror {s}");
                break;
            }
            Ok(VcpuExit::FailEntry(reason, _)) => {
                end = format!("fail_entry reason {reason:#x}");
                break;
            }
            Ok(other) => {
                end = format!("other {other:?}");
                break;
            }
            Err(e) => {
                end = format!("error errno {}", e.errno());
                break;
            }
        };
        let line = if line.starts_with("io_") {
            // SAFETY: after KVM_EXIT_IO the `io` member is the valid one.
            let io = unsafe { g.vcpu.get_kvm_run().__bindgen_anon_1.io };
            format!("{line} size {} count {}", io.size, io.count)
        } else {
            line
        };
        if verbose {
            println!("{name} exit {i} {line}");
        }
    }
    // SAFETY: disarms the timer.
    unsafe { libc::alarm(0) };
    end
}

/// Runs entry `sym` with the registers `set` makes (rsp, rflags, r13 = -1 and rip preset).
fn call(name: &str, g: &mut Guest, sym: &u8, verbose: bool, set: impl FnOnce(&mut kvm_regs)) -> (String, kvm_regs) {
    let mut r = kvm_regs { rip: at(sym), rsp: STACK, rflags: 2, r13: u64::MAX, ..Default::default() };
    set(&mut r);
    g.vcpu.set_regs(&r).unwrap();
    let mut pat = 0x10;
    let end = drive(name, g, 64, verbose, &mut pat);
    (end, g.vcpu.get_regs().unwrap())
}

/// "ok" or the exception vector the handlers left in r13.
fn fault(r: &kvm_regs) -> String {
    if r.r13 == u64::MAX { "ok".into() } else { format!("vector {}", r.r13) }
}

/// `fault`, and the end of the run if it was not the entry's HLT.
fn outcome(end: &str, r: &kvm_regs) -> String {
    if end == "hlt" { fault(r) } else { format!("{} end {end}", fault(r)) }
}

// ---- 1. String I/O at the ends of the address space and of pages ----------------------------

/// Each case in a fresh VM (port 0x60 for IN, 0x3f8 for OUT): every exit, how it ended, the
/// registers and the RAM at both ends of the address space (0xfff8.. is also VA 2^64-8..,
/// 0.. is also VA 0..). The never-ending `rep insd` (RCX = 2^64-1) is bounded by a
/// not-present page three pages on rather than by stopping after N exits: a stop would leave
/// the I/O pending, and completing it (KVM_RUN) runs the instruction on.
fn string_io(kvm: &Kvm) {
    struct Case {
        name: &'static str,
        sym: &'static u8,
        port: u64,
        rcx: u64,
        rdi: u64,
        rsi: u64,
        df: bool,
    }
    // SAFETY (below): symbols of the blob.
    let cases = unsafe {
        [
            Case { name: "str_insw_top", sym: &hx_insw, port: 0x60, rcx: 2, rdi: u64::MAX - 1, rsi: 0, df: false },
            Case { name: "str_insb_down_from_0", sym: &hx_insb, port: 0x60, rcx: 3, rdi: 0, rsi: 0, df: true },
            Case { name: "str_outsb_top", sym: &hx_outsb, port: 0x3f8, rcx: 3, rdi: 0, rsi: u64::MAX, df: false },
            Case { name: "str_insb_cross_page", sym: &hx_insb, port: 0x60, rcx: 5000, rdi: 0xdff0, rsi: 0, df: false },
            Case { name: "str_insd_huge", sym: &hx_insd, port: 0x60, rcx: u64::MAX, rdi: 0x20_0000, rsi: 0, df: false },
            Case { name: "str_insb_addr32", sym: &hx_insb32, port: 0x60, rcx: 0xabcd_0000_0000_0004, rdi: 0x1234_5678_ffff_fffe, rsi: 0, df: false },
            Case { name: "str_insb_noncanonical", sym: &hx_insb, port: 0x60, rcx: 2, rdi: 0x8000_0000_0000_0000, rsi: 0, df: false },
            Case { name: "str_insw_not_present", sym: &hx_insw, port: 0x60, rcx: 2, rdi: 0x20_3ffe, rsi: 0, df: false },
            Case { name: "str_insb_mmio", sym: &hx_insb, port: 0x60, rcx: 4, rdi: 0x1_0ffe, rsi: 0, df: false },
            Case { name: "str_outsb_mmio", sym: &hx_outsb, port: 0x3f8, rcx: 2, rdi: 0, rsi: 0x1_0fff, df: false },
        ]
    };
    for c in cases {
        let mut g = vm(kvm, &minimal_table(), c.name);
        poke(&g, 0xfff0, &[0xee; 16]);
        poke(&g, 0, &[0xee; 16]);
        poke(&g, 0xffff, &[0x41]);
        poke(&g, 0, &[0x42, 0x43]);
        let (end, r) = call(c.name, &mut g, c.sym, true, |r| {
            (r.rdx, r.rcx, r.rdi, r.rsi) = (c.port, c.rcx, c.rdi, c.rsi);
            r.rflags = 2 | if c.df { 0x400 } else { 0 };
        });
        println!("{} end {end} {}", c.name, fault(&r));
        if r.r13 == 14 {
            println!("{} cr2 {:#x}", c.name, r.r12);
        }
        println!("{} regs rip {:#x} rcx {:#x} rdi {:#x} rsi {:#x} rflags {:#x}", c.name, r.rip.wrapping_sub(at(c.sym)), r.rcx, r.rdi, r.rsi, r.rflags);
        println!("{} mem top {:02x?} bottom {:02x?}", c.name, ram(&g, 0xfff8, 8), ram(&g, 0, 8));
        if c.rcx == 5000 {
            println!("{} mem fnv {:#018x} page_end {:02x?} last {:02x?}", c.name, fnv(&ram(&g, 0xdff0, 5000)),
                     ram(&g, 0xdffe, 4), ram(&g, 0xdff0 + 4998, 3));
        }
        if c.rcx == u64::MAX {
            println!("{} mem fnv {:#018x} first {:02x?} last {:02x?}", c.name, fnv(&ram(&g, 0xa000, 0x3000)),
                     ram(&g, 0xa000, 4), ram(&g, 0xcffc, 4));
        }
    }
}

// ---- 2. MMIO at page ends ------------------------------------------------------------------

/// 4-byte MOVs split between RAM and no memory (either first), and between two pages of no
/// memory; `rep movsb` with RCX = 2^64-1 between RAM and MMIO, ended by a not-present page 4
/// bytes on; `rep movsb` from MMIO to MMIO across pages.
fn mmio(kvm: &Kvm) {
    let mut g = vm(kvm, &minimal_table(), "mmio");
    poke(&g, 0xfff8, &[0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7]);
    poke(&g, 0x9000, &[0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58]);
    // SAFETY (below): symbols of the blob.
    let (store, load, movsb) = unsafe { (&hx_store, &hx_load, &hx_movsb) };
    for (name, sym, addr) in [
        ("mmio_store_ram_to_unbacked", store, 0xfffeu64),
        ("mmio_load_ram_to_unbacked", load, 0xfffe),
        ("mmio_store_unbacked_to_unbacked", store, 0x1_0ffe),
        ("mmio_load_unbacked_to_unbacked", load, 0x1_0ffe),
        ("mmio_store_unbacked_to_ram", store, 0x20_6ffe),
        ("mmio_load_unbacked_to_ram", load, 0x20_6ffe),
    ] {
        let (end, r) = call(name, &mut g, sym, true, |r| {
            (r.rax, r.rdi, r.rsi) = (0x1122_3344_5566_7788, addr, addr);
        });
        println!("{name} {} rax {:#x}", outcome(&end, &r), r.rax);
    }
    println!("mmio ram_after_stores {:02x?} {:02x?}", ram(&g, 0xfff8, 8), ram(&g, 0xe000, 4));
    for (name, rcx, rsi, rdi) in [
        ("mmio_movsb_ram_to_mmio_huge", u64::MAX, 0x9000u64, 0x20_4ffcu64),
        ("mmio_movsb_mmio_to_ram_huge", u64::MAX, 0x20_4ffc, 0x9100),
        ("mmio_movsb_mmio_to_mmio", 3, 0x1_0ffe, 0x1_1fff),
    ] {
        let (end, r) = call(name, &mut g, movsb, true, |r| (r.rcx, r.rsi, r.rdi) = (rcx, rsi, rdi));
        println!("{name} {} cr2 {:#x} rcx {:#x} rsi {:#x} rdi {:#x}", outcome(&end, &r), r.r12, r.rcx, r.rsi, r.rdi);
    }
    println!("mmio movsb_to_ram {:02x?}", ram(&g, 0x9100, 8));
}

// ---- 3. XSAVE sizes from a hostile CPUID table -----------------------------------------------

/// Leaf 0xD tables with sizes and offsets that overflow when added: KVM computes 0xD.0 EBX
/// (and 0xD.1 EBX when the table claims XSAVEC/XSAVES) from the host's layout for the XCR0 the
/// guest set, keeps the table's other words, and takes only the XCR0 bits the host has.
fn xsave_table(kvm: &Kvm) {
    let base: Vec<_> = fixed_table(kvm).into_iter().filter(|e| e.function != 0xd).collect();
    if !base.iter().any(|e| e.function == 1 && e.ecx & 1 << 26 != 0) {
        println!("info xsave device has none");
        return;
    }
    let with_avx = |t: &mut Vec<kvm_cpuid_entry2>| {
        t.iter_mut().filter(|e| e.function == 1).for_each(|e| e.ecx |= 1 << 28);
    };
    let huge = |i: u32| 0xffff_ff00 | i;
    let mut sizes = base.clone();
    with_avx(&mut sizes);
    sizes.push(entry(0xd, 0, 7, !0, !0, 0));
    sizes.push(entry(0xd, 1, 1, !0, !0, !0));
    for i in [2, 5, 6, 7] {
        sizes.push(entry(0xd, i, huge(i), huge(i), 0, 0));
    }
    // Every XCR0 bit, and every bit but the dynamically enabled AMX tile data (18), which
    // KVM only gives a process that asked for it (arch_prctl ARCH_REQ_XCOMP_GUEST_PERM).
    let every = |xcr0: u64| {
        let mut t = base.clone();
        with_avx(&mut t);
        t.push(entry(0xd, 0, xcr0 as u32, !0, !0, (xcr0 >> 32) as u32));
        t.push(entry(0xd, 1, 0xf, !0, !0, !0));
        for i in 2..63 {
            t.push(entry(0xd, i, huge(i), huge(i), !0, !0));
        }
        t
    };
    // SAFETY (below): symbols of the blob.
    let (cr4_set, cpuid, xsetbv, xgetbv) = unsafe { (&hx_cr4_set, &hx_cpuid, &hx_xsetbv, &hx_xgetbv) };
    for (name, table) in [("xsave_huge_sizes", sizes), ("xsave_all_bits", every(!0)),
                          ("xsave_all_static_bits", every(!(1 << 18)))] {
        let (mut g, ok) = try_vm(kvm, &table, name);
        if !ok {
            continue;
        }
        let (end, r) = call(name, &mut g, cr4_set, false, |r| r.rax = 1 << 18);
        println!("{name} osxsave {}", outcome(&end, &r));
        let show = |g: &mut Guest, what: &str, sub: u64| {
            let (end, r) = call(name, g, cpuid, false, |r| (r.rax, r.rcx) = (0xd, sub));
            println!("{name} {what} cpuid_d_{sub} {} eax {:#x} ebx {:#x} ecx {:#x} edx {:#x}",
                     outcome(&end, &r), r.rax, r.rbx, r.rcx, r.rdx);
        };
        show(&mut g, "reset", 0);
        show(&mut g, "reset", 1);
        show(&mut g, "reset", 2);
        for xcr0 in [7u64, 0xe7, 0x207, 1 << 62 | 7, 3] {
            let (end, r) = call(name, &mut g, xsetbv, false, |r| (r.rax, r.rdx, r.rcx) = (xcr0 & 0xffff_ffff, xcr0 >> 32, 0));
            let (_, x) = call(name, &mut g, xgetbv, false, |r| r.rcx = 0);
            println!("{name} xsetbv {xcr0:#x} {} xgetbv {:#x}", outcome(&end, &r), x.rax | x.rdx << 32);
            show(&mut g, &format!("xcr0_{:#x}", x.rax | x.rdx << 32), 0);
            show(&mut g, &format!("xcr0_{:#x}", x.rax | x.rdx << 32), 1);
        }
    }
}

// ---- 4. Every CR0, CR4 and EFER bit ----------------------------------------------------------

/// Whether KVM (the SDM) lets a 64-bit guest with CPUID `t` set CR4 bit `bit`.
fn cr4_allowed(t: &[kvm_cpuid_entry2], bit: u32) -> bool {
    match bit {
        0..=10 => true, // VME .. OSXMMEXCPT
        11 => has(t, 7, 0, 2, 2),                         // UMIP
        13 => has(t, 1, 0, 2, 5),                         // VMXE
        16 => has(t, 7, 0, 1, 0),                         // FSGSBASE
        17 => has(t, 1, 0, 2, 17),                        // PCIDE
        18 => has(t, 1, 0, 2, 26),                        // OSXSAVE
        20 => has(t, 7, 0, 1, 7),                         // SMEP
        21 => has(t, 7, 0, 1, 20),                        // SMAP
        22 => has(t, 7, 0, 2, 3),                         // PKE
        23 => has(t, 7, 0, 2, 7) || has(t, 7, 0, 3, 20),  // CET
        28 => has(t, 7, 1, 0, 26),                        // LAM_SUP
        _ => false, // LA57 cannot change in long mode; SMXE, KL and the rest: reserved
    }
}

/// Whether KVM lets a guest with CPUID `t` set EFER bit `bit` (LME and LMA are already set).
fn efer_allowed(t: &[kvm_cpuid_entry2], bit: u32) -> bool {
    match bit {
        0 | 8 | 10 => true,
        11 => has(t, 0x8000_0001, 0, 3, 20),  // NXE
        12 => has(t, 0x8000_0001, 0, 2, 2),   // SVME
        14 => has(t, 0x8000_0001, 0, 3, 25),  // FFXSR
        21 => has(t, 0x8000_0021, 0, 0, 8),   // AUTOIBRS
        _ => false,
    }
}

fn control_bits(kvm: &Kvm) {
    // SAFETY (below): symbols of the blob.
    let (cr4_try, cr0_or, cr0_and, efer_try) = unsafe { (&hx_cr4_try, &hx_cr0_or, &hx_cr0_and, &hx_efer_try) };
    for (table_name, table) in [("minimal", minimal_table()), ("supported", supported_table(kvm))] {
        let mut g = vm(kvm, &table, table_name);
        let base = g.vcpu.get_sregs().unwrap();
        // One line per bit (a run of bits with the same outcome shares a line): the raw
        // outcome for the minimal table (the same on every host) and for CR0; for the device's
        // own table, whether the outcome is what that table implies (the raw outcome on `info`
        // lines, but for the usual #GP).
        let sweep = |g: &mut Guest, reg: &str, sym: &u8, old: u64, allowed: &dyn Fn(u32) -> bool, by_table: bool| {
            let mut lines: Vec<(u32, u32, String)> = Vec::new();
            for bit in 0..64 {
                let (end, r) = call(table_name, g, sym, false, |r| r.rax = 1 << bit);
                let got = if end != "hlt" { format!("end {end}") } else if r.r13 == u64::MAX {
                    format!("ok value {:#x}", r.rdx)
                } else {
                    fault(&r)
                };
                let line = if by_table {
                    let as_table = end == "hlt" && if allowed(bit) { r.r13 == u64::MAX && r.rdx == old | 1 << bit } else { r.r13 == 13 };
                    if bit > 10 && got != "vector 13" {
                        println!("info {reg} {table_name} bit {bit} {got}");
                    }
                    format!("as_table {as_table}")
                } else {
                    got
                };
                match lines.last_mut() {
                    Some((_, last, l)) if *l == line && *last + 1 == bit => *last = bit,
                    _ => lines.push((bit, bit, line)),
                }
            }
            for (first, last, line) in lines {
                if first == last {
                    println!("{reg} {table_name} bit {first} {line}");
                } else {
                    println!("{reg} {table_name} bits {first}-{last} {line}");
                }
            }
        };
        let by_table = table_name != "minimal";
        sweep(&mut g, "cr4", cr4_try, base.cr4, &|bit| cr4_allowed(&table, bit), by_table);
        sweep(&mut g, "cr0", cr0_or, base.cr0, &|_| true, false);
        for (what, keep) in [("cr0_clear_mp", !2u64), ("cr0_clear_et", !0x10), ("cr0_clear_ne", !0x20), ("cr0_clear_wp", !0x1_0000)] {
            let (end, r) = call(table_name, &mut g, cr0_and, false, |r| r.rax = keep);
            println!("{what} {table_name} {} value {:#x}", outcome(&end, &r), r.rdx);
        }
        let (end, r) = call(table_name, &mut g, cr0_or, false, |r| r.rax = 0x6000_0000);
        println!("cr0_cd_nw {table_name} {} value {:#x}", outcome(&end, &r), r.rdx);
        sweep(&mut g, "efer", efer_try, base.efer, &|bit| efer_allowed(&table, bit), by_table);
        let s = g.vcpu.get_sregs().unwrap();
        println!("control {table_name} restored cr0 {} cr4 {} efer {}", s.cr0 == base.cr0, s.cr4 == base.cr4, s.efer == base.efer);
    }
}

// ---- 5. PKRU --------------------------------------------------------------------------------

fn host_pkru() -> Option<u32> {
    // SAFETY: CPUID is always available on x86-64.
    let ospke = core::arch::x86_64::__cpuid_count(7, 0).ecx & 1 << 4 != 0;
    ospke.then(|| {
        let v: u32;
        // SAFETY: RDPKRU (ECX = 0) only reads PKRU; CR4.PKE is on (OSPKE).
        unsafe { core::arch::asm!(".byte 0x0f, 0x01, 0xee", in("ecx") 0, out("eax") v, out("edx") _) };
        v
    })
}

fn pkru(kvm: &Kvm) {
    let before = host_pkru();
    let table = supported_table(kvm);
    let mut g = vm(kvm, &table, "pkru");
    // SAFETY (below): symbols of the blob.
    let (cr4_set, wrpkru, rdpkru) = unsafe { (&hx_cr4_set, &hx_wrpkru, &hx_rdpkru) };
    let (end, r) = call("pkru", &mut g, cr4_set, false, |r| r.rax = 1 << 22);
    let pke = r.r13 == u64::MAX && r.rdx & 1 << 22 != 0;
    println!("pkru cr4_pke as_table {}", end == "hlt" && pke == has(&table, 7, 0, 2, 3));
    println!("info pkru cr4_pke {}", outcome(&end, &r));
    let (end, r) = call("pkru", &mut g, wrpkru, false, |r| (r.rax, r.rcx, r.rdx) = (0xffff_fffc, 0, 0));
    let w = outcome(&end, &r);
    let (end, r) = call("pkru", &mut g, rdpkru, false, |r| r.rcx = 0);
    let rd = format!("{} value {:#x}", outcome(&end, &r), r.rax);
    if pke {
        println!("pkru wrpkru {w} rdpkru {rd}");
    } else {
        println!("pkru without_pke wrpkru {w} rdpkru {}", outcome(&end, &r));
    }
    // The guest's PKRU must not have leaked into this process.
    match (before, host_pkru()) {
        (Some(b), Some(a)) => println!("info pkru host {b:#x}; vmm pkru unchanged {}", a == b),
        _ => println!("info pkru host has none"),
    }
    println!("vmm pkru unchanged {}", before == host_pkru());
}

// ---- 6. MSRs with reserved bits and non-canonical values --------------------------------------

fn msrs(kvm: &Kvm) {
    let mut g = vm(kvm, &fixed_table(kvm), "msr");
    // SAFETY (below): symbols of the blob.
    let (wrmsr, rdmsr, rdtsc) = unsafe { (&hx_wrmsr, &hx_rdmsr, &hx_rdtsc) };
    let rd = |g: &mut Guest, name: &str, index: u32| {
        let (end, r) = call(name, g, rdmsr, false, |r| r.rcx = index as u64);
        if r.r13 == u64::MAX && end == "hlt" {
            format!("ok {:#x}", r.rax & 0xffff_ffff | r.rdx << 32)
        } else {
            outcome(&end, &r)
        }
    };
    let wr = |g: &mut Guest, name: &str, index: u32, v: u64| {
        let (end, r) = call(name, g, wrmsr, false, |r| (r.rcx, r.rax, r.rdx) = (index as u64, v & 0xffff_ffff, v >> 32));
        outcome(&end, &r)
    };
    const NONCANON: u64 = 0x0000_8000_0000_0000;
    let tests: &[(&str, u32, Option<u64>)] = &[
        ("sfmask", 0xc000_0084, Some(0x4_7700)),
        ("tsc_aux_high", 0xc000_0103, Some(0x1_0000_0001)),
        ("tsc_aux", 0xc000_0103, Some(0x42)),
        ("star", 0xc000_0081, Some(0x0023_0010_0000_0000)),
        ("lstar_noncanonical", 0xc000_0082, Some(NONCANON)),
        ("lstar", 0xc000_0082, Some(0xffff_8000_0000_1000)),
        ("cstar_noncanonical", 0xc000_0083, Some(NONCANON | 0x40)),
        ("fs_base_noncanonical", 0xc000_0100, Some(NONCANON)),
        ("fs_base", 0xc000_0100, Some(0xffff_8000_0000_2000)),
        ("gs_base_noncanonical", 0xc000_0101, Some(0x1234_5678_9abc_def0)),
        ("kernel_gs_base_noncanonical", 0xc000_0102, Some(0xfff0_0000_0000_0000)),
        ("pat_type2", 0x277, Some(0x0007_0406_0007_0402)),
        ("pat_reserved_bits", 0x277, Some(0x0007_0406_0007_0f06)),
        ("pat", 0x277, Some(0x0007_0406_0007_0401)),
        ("sysenter_cs", 0x174, Some(0xffff_ffff_0000_0010)),
        ("sysenter_esp_noncanonical", 0x175, Some(NONCANON | 0x100)),
        ("sysenter_eip_noncanonical", 0x176, Some(0x1234_5678_9abc_def0)),
        ("misc_enable", 0x1a0, None),
        ("spec_ctrl", 0x48, Some(1)),
        ("pred_cmd", 0x49, Some(1)),
        ("flush_cmd", 0x10b, Some(1)),
        ("arch_capabilities", 0x10a, None),
        ("debugctl_zero", 0x1d9, Some(0)),
        ("debugctl_reserved", 0x1d9, Some(1 << 63)),
        ("efer_svme", 0xc000_0080, Some(0x1500)),
        ("x2apic_tpr", 0x808, None),
        ("unknown", 0x4b56_4d99, Some(1)),
    ];
    // SFMASK bits 63:32 are reserved: KVM passes the write to the CPU (a user-return MSR), so
    // the outcome is the host CPU's.
    let w = wr(&mut g, "msr_sfmask_high", 0xc000_0084, 0xffff_ffff_0004_7700);
    println!("info msr_sfmask_high wrmsr {w} rdmsr {}", rd(&mut g, "msr_sfmask_high", 0xc000_0084));
    for (name, index, value) in tests {
        let name = format!("msr_{name}");
        let w = value.map(|v| wr(&mut g, &name, *index, v));
        let r = rd(&mut g, &name, *index);
        match w {
            Some(w) => println!("{name} wrmsr {w} rdmsr {r}"),
            None => println!("{name} rdmsr {r}"),
        }
    }
    // What the device's own CPUID table tells the guest about CPU vulnerabilities, and the
    // speculation-control MSRs it then has (the host's features decide what works).
    {
        let table = supported_table(kvm);
        let edx7 = table.iter().find(|e| e.function == 7 && e.index == 0).map_or(0, |e| e.edx);
        let ebx8 = table.iter().find(|e| e.function == 0x8000_0008).map_or(0, |e| e.ebx);
        let bit = |v: u32, n: u32| v >> n & 1 == 1;
        println!("msr_supported cpuid arch_capabilities {} md_clear {} flush_l1d {} spec_ctrl {} ibpb {}",
                 bit(edx7, 29), bit(edx7, 10), bit(edx7, 28), bit(edx7, 26), bit(ebx8, 12));
        let mut s = vm(kvm, &table, "msr_supported");
        println!("msr_supported arch_capabilities rdmsr {}", rd(&mut s, "msr_supported", 0x10a));
        println!("msr_supported arch_capabilities wrmsr {}", wr(&mut s, "msr_supported", 0x10a, 0));
        println!("msr_supported pred_cmd wrmsr_1 {} wrmsr_0 {} rdmsr {}", wr(&mut s, "msr_supported", 0x49, 1),
                 wr(&mut s, "msr_supported", 0x49, 0), rd(&mut s, "msr_supported", 0x49));
        println!("msr_supported flush_cmd wrmsr_1 {} wrmsr_2 {}", wr(&mut s, "msr_supported", 0x10b, 1),
                 wr(&mut s, "msr_supported", 0x10b, 2));
        // The same value as a feature MSR of the system fd, and the vCPU's through KVM_GET_MSRS.
        let mut feature = kvm_bindings::Msrs::from_entries(&[kvm_bindings::kvm_msr_entry { index: 0x10a, ..Default::default() }]).unwrap();
        let n = kvm.get_msrs(&mut feature).map_err(|e| e.errno());
        println!("msr_supported arch_capabilities feature_msr {n:?} {:#x}", feature.as_slice()[0].data);
        let mut vcpu_msr = kvm_bindings::Msrs::from_entries(&[kvm_bindings::kvm_msr_entry { index: 0x10a, ..Default::default() }]).unwrap();
        let n = s.vcpu.get_msrs(&mut vcpu_msr).map_err(|e| e.errno());
        println!("msr_supported arch_capabilities get_msrs {n:?} {:#x}", vcpu_msr.as_slice()[0].data);
        println!("msr_supported cpuid stibp {} ssbd {} amd_ibrs {} amd_stibp {} amd_ssbd {} amd_ssb_no {} amd_ibpb_ret {}",
                 bit(edx7, 27), bit(edx7, 31), bit(ebx8, 14), bit(ebx8, 15), bit(ebx8, 24), bit(ebx8, 26), bit(ebx8, 30));
        spec_ctrl(kvm, &mut s, &rd, &wr);
    }
    // MISC_ENABLE written back unchanged, then with bits it does not have.
    let (end, r) = call("msr_misc_enable", &mut g, rdmsr, false, |r| r.rcx = 0x1a0);
    let misc = r.rax & 0xffff_ffff | r.rdx << 32;
    if end == "hlt" && r.r13 == u64::MAX {
        let same = wr(&mut g, "msr_misc_enable", 0x1a0, misc);
        let high = wr(&mut g, "msr_misc_enable", 0x1a0, misc | 1 << 63);
        let after = rd(&mut g, "msr_misc_enable", 0x1a0);
        println!("msr_misc_enable write_same {same} write_bit63 {high} changed {}",
                 after != format!("ok {misc:#x}"));
    }
    // TSC: written, then read back by RDMSR and RDTSC.
    const W: u64 = 0x1000_0000_0000;
    let w = wr(&mut g, "msr_tsc", 0x10, W);
    let (end, r) = call("msr_tsc", &mut g, rdmsr, false, |r| r.rcx = 0x10);
    let m = r.rax & 0xffff_ffff | r.rdx << 32;
    let (end2, r2) = call("msr_tsc", &mut g, rdtsc, false, |_| {});
    let t = r2.rax & 0xffff_ffff | r2.rdx << 32;
    let sane = |v: u64| (W..W + (1 << 40)).contains(&v);
    println!("msr_tsc wrmsr {w} rdmsr {} sane {} rdtsc {} sane {} ordered {}", outcome(&end, &r), sane(m),
             outcome(&end2, &r2), sane(t), t >= m);
}

/// This CPU's IA32_SPEC_CTRL as the host sees it (the msr driver), `None` without the MSR.
fn host_spec_ctrl(cpu: usize) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/dev/cpu/{cpu}/msr")).ok()?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, 0x48).ok()?;
    Some(u64::from_le_bytes(b))
}

/// IA32_SPEC_CTRL with the device's own CPUID table (the host's controls decide what works):
/// the guest's writes and reads of each control and of a reserved bit, the VMM's
/// KVM_SET/GET_MSRS, and the host's own value on the CPU the guest ran on, unchanged after
/// the guest left SSBD and STIBP set.
fn spec_ctrl(kvm: &Kvm, s: &mut Guest, rd: &dyn Fn(&mut Guest, &str, u32) -> String, wr: &dyn Fn(&mut Guest, &str, u32, u64) -> String) {
    let listed = kvm.get_msr_index_list().map(|l| l.as_slice().contains(&0x48));
    println!("msr_supported spec_ctrl index_list {:?}", listed.map_err(|e| e.errno()));
    pin_to(Some(0));
    let before = host_spec_ctrl(0);
    for v in [1u64, 2, 4, 1 << 40, 0, 6] {
        println!("msr_supported spec_ctrl wrmsr_{v:#x} {} rdmsr {}", wr(s, "msr_supported", 0x48, v), rd(s, "msr_supported", 0x48));
    }
    // The guest runs on with its value (6 if the CPU has STIBP and SSBD), exits, ends.
    let _ = rd(s, "msr_supported", 0x10);
    println!("msr_supported spec_ctrl host_unchanged {}", host_spec_ctrl(0) == before);
    println!("info spec_ctrl host {before:x?}");
    pin_to(None);
    let entry = |data| kvm_bindings::kvm_msr_entry { index: 0x48, data, ..Default::default() };
    for v in [4u64, 1 << 40] {
        let set = s.vcpu.set_msrs(&kvm_bindings::Msrs::from_entries(&[entry(v)]).unwrap()).map_err(|e| e.errno());
        let mut got = kvm_bindings::Msrs::from_entries(&[entry(0)]).unwrap();
        let n = s.vcpu.get_msrs(&mut got).map_err(|e| e.errno());
        println!("msr_supported spec_ctrl set_msrs_{v:#x} {set:?} get_msrs {n:?} {:#x}", got.as_slice()[0].data);
    }
}

// ---- 7. Instructions that must exit or fault --------------------------------------------------

/// With the fixed table (no VMX, SGX, SMX, MONITOR, PMU, RDPID, INVPCID, RDRAND, WAITPKG,
/// PCONFIG). Not done: RDPMC at CPL3 with CR4.PCE (would need ring-3 segments and a TSS).
fn instructions(kvm: &Kvm) {
    let mut g = vm(kvm, &fixed_table(kvm), "instr");
    // SAFETY (below): symbols of the blob.
    let list: &[(&str, &u8, [u64; 4])] = unsafe {
        // (name, entry, [rax, rcx, rdx, rsi])
        &[
            ("wbinvd", &hx_wbinvd, [0; 4]),
            ("invd", &hx_invd, [0; 4]),
            ("rdpmc_0", &hx_rdpmc, [0; 4]),
            ("rdpmc_fixed0", &hx_rdpmc, [0, 0x4000_0000, 0, 0]),
            ("monitor", &hx_monitor, [0x8000, 0, 0, 0]),
            ("mwait", &hx_mwait, [0; 4]),
            ("encls", &hx_encls, [0; 4]),
            ("enclu", &hx_enclu, [0; 4]),
            ("getsec", &hx_getsec, [0; 4]),
            ("vmxon", &hx_vmxon, [0, 0, 0, 0x9000]),
            ("vmclear", &hx_vmclear, [0, 0, 0, 0x9000]),
            ("vmptrld", &hx_vmptrld, [0, 0, 0, 0x9000]),
            ("vmread", &hx_vmread, [0, 0, 0, 0]),
            ("vmwrite", &hx_vmwrite, [0, 0, 0, 0]),
            ("vmlaunch", &hx_vmlaunch, [0; 4]),
            ("vmresume", &hx_vmresume, [0; 4]),
            ("vmxoff", &hx_vmxoff, [0; 4]),
            ("invept", &hx_invept, [1, 0, 0, 0x9000]),
            ("invvpid", &hx_invvpid, [1, 0, 0, 0x9000]),
            ("vmfunc", &hx_vmfunc, [0; 4]),
            ("rdpid", &hx_rdpid, [0; 4]),
            ("invpcid_bad_type", &hx_invpcid, [4, 0, 0, 0x9000]),
            ("rdrand", &hx_rdrand, [0; 4]),
            ("umwait", &hx_umwait, [0; 4]),
            ("tpause", &hx_tpause, [0; 4]),
            ("pconfig", &hx_pconfig, [0; 4]),
            ("xsetbv_xcr1_no_osxsave", &hx_xsetbv, [3, 1, 0, 0]),
        ]
    };
    for (name, sym, [rax, rcx, rdx, rsi]) in list {
        let (end, r) = call(name, &mut g, sym, true, |r| (r.rax, r.rcx, r.rdx, r.rsi) = (*rax, *rcx, *rdx, *rsi));
        println!("instr {name} {}", outcome(&end, &r));
    }
    // SAFETY (below): symbols of the blob.
    let (vmcall, rdtscp, cr4_set, xsetbv) = unsafe { (&hx_vmcall, &hx_rdtscp, &hx_cr4_set, &hx_xsetbv) };
    // An unknown hypercall: KVM answers -KVM_ENOSYS (-1000) in RAX.
    let (end, r) = call("vmcall", &mut g, vmcall, true, |r| r.rax = 0x7fff_0001);
    println!("instr vmcall {} rax {:#x}", outcome(&end, &r), r.rax);
    let (end, r) = call("rdtscp", &mut g, rdtscp, true, |r| r.rcx = 0x5555);
    println!("instr rdtscp {} tsc_aux {:#x}", outcome(&end, &r), r.rcx);
    let (end, r) = call("osxsave", &mut g, cr4_set, false, |r| r.rax = 1 << 18);
    println!("instr cr4_osxsave {}", outcome(&end, &r));
    let (end, r) = call("xsetbv", &mut g, xsetbv, true, |r| (r.rax, r.rcx, r.rdx) = (3, 1, 0));
    println!("instr xsetbv_xcr1 {}", outcome(&end, &r));
}

// ---- 8. Debug registers -----------------------------------------------------------------------


fn count(fd: i32) -> u64 {
    let mut v = 0u64;
    // SAFETY: reads 8 bytes into `v`.
    unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
    v
}

fn debug_regs(kvm: &Kvm) {
    let watched = Box::into_raw(Box::new(0u32));
    let wp = watchpoint(watched as u64);
    let fires = || {
        let before = wp.map(count);
        // SAFETY: a volatile write to our own (leaked) boxed u32.
        unsafe { std::ptr::write_volatile(watched, 7) };
        before.zip(wp.map(count)).map(|(b, a)| a == b + 1)
    };
    println!("info vmm watchpoint before {:?}", fires());
    let mut g = vm(kvm, &fixed_table(kvm), "dr");
    // SAFETY (below): symbols of the blob.
    let (dr_set, dr_get, dr7_set, dr6_set, dr0_get) = unsafe { (&hx_dr_set, &hx_dr_get, &hx_dr7_set, &hx_dr6_set, &hx_dr0_get) };
    let show = |g: &mut Guest, what: &str| {
        let (end, r) = call(what, g, dr_get, false, |_| {});
        println!("dr {what} {} dr0 {:#x} dr1 {:#x} dr2 {:#x} dr3 {:#x} dr6 {:#x} dr7 {:#x}", outcome(&end, &r),
                 r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi);
    };
    // All four armed (global and local) at kernel-looking addresses: execute, write, read/write,
    // write (8 bytes).
    let dr7 = 0x9fd0_03ffu64;
    let (end, r) = call("dr_set", &mut g, dr_set, false, |r| {
        (r.rax, r.rbx, r.rcx, r.rdx, r.rsi) = (0xffff_ffff_8100_0000, 0xffff_ffff_8100_0040, 0xffff_ffff_8100_0080, 0xffff_ffff_8100_00c0, dr7);
    });
    println!("dr arm_kernel_addresses {}", outcome(&end, &r));
    show(&mut g, "armed");
    println!("vmm watchpoint fires_after_armed_guest {}", fires().unwrap_or(true));
    show(&mut g, "armed_again");
    // GD: the next MOV DR raises #DB with DR6.BD; the CPU clears GD for the handler.
    let (end, r) = call("dr_gd", &mut g, dr7_set, false, |r| r.rax = dr7 | 1 << 13);
    println!("dr set_gd {}", outcome(&end, &r));
    let (end, r) = call("dr_gd", &mut g, dr0_get, false, |_| {});
    println!("dr mov_with_gd {} dr6_bd {}", outcome(&end, &r), r.r12 & 1 << 13 != 0);
    show(&mut g, "after_gd");
    for (name, sym, v) in [("dr6_high", dr6_set, 1u64 << 32), ("dr7_high", dr7_set, 1 << 40 | 0x400)] {
        let (end, r) = call(name, &mut g, sym, false, |r| r.rax = v);
        println!("dr {name} {}", outcome(&end, &r));
    }
    show(&mut g, "after_high");
    // Left armed on the way out.
    let (end, r) = call("dr_set", &mut g, dr_set, false, |r| {
        (r.rax, r.rbx, r.rcx, r.rdx, r.rsi) = (0xffff_ffff_8100_0000, 0xffff_ffff_8100_0040, 0xffff_ffff_8100_0080, 0xffff_ffff_8100_00c0, dr7);
    });
    println!("dr rearm {}", outcome(&end, &r));
    let d = g.vcpu.get_debug_regs().unwrap();
    println!("dr get_debugregs db {:#x?} dr7 {:#x}", d.db, d.dr7);
    match fires() {
        Some(f) => println!("vmm watchpoint fires {f}"),
        None => println!("info vmm watchpoint unavailable"),
    }
}

// ---- 9. Exceptions during event delivery ------------------------------------------------------

/// Exceptions whose delivery reads an IDT or writes a stack with no memory (KVM: internal
/// error, suberror 3 = KVM_INTERNAL_ERROR_DELIVERY_EV) or a not-present, non-canonical or
/// too-short one (#PF/#GP → #DF → triple fault: KVM_EXIT_SHUTDOWN). Each in a fresh VM.
fn delivery(kvm: &Kvm) {
    // SAFETY (below): symbols of the blob.
    let (int3, ud2) = unsafe { (&hx_int3, &hx_ud2) };
    // (name, entry, IDT base, IDT limit, RSP)
    let cases: &[(&str, &u8, u64, u16, u64)] = &[
        ("deliver_idt_unbacked_int3", int3, 0x2_0000, 0x1ff, STACK),
        ("deliver_idt_unbacked_ud", ud2, 0x2_0000, 0x1ff, STACK),
        ("deliver_idt_not_present_ud", ud2, 0x20_3000, 0x1ff, STACK),
        ("deliver_idt_limit0_ud", ud2, IDT, 0, STACK),
        ("deliver_stack_unbacked_ud", ud2, IDT, 0x1ff, 0x2_0100),
        ("deliver_stack_not_present_ud", ud2, IDT, 0x1ff, 0x20_3100),
        ("deliver_stack_noncanonical_int3", int3, IDT, 0x1ff, NONCANONICAL_STACK),
    ];
    for (name, sym, base, limit, rsp) in cases {
        let mut g = vm(kvm, &minimal_table(), name);
        let mut s = g.vcpu.get_sregs().unwrap();
        (s.idt.base, s.idt.limit) = (*base, *limit);
        g.vcpu.set_sregs(&s).unwrap();
        let (end, r) = call(name, &mut g, sym, true, |r| r.rsp = *rsp);
        println!("{name} end {end} {}", fault(&r));
    }
}

const NONCANONICAL_STACK: u64 = 0x0000_8000_0000_0100;

// ---- 10. The signal mask ----------------------------------------------------------------------

fn sigmask() -> Vec<bool> {
    // SAFETY: sigset_t is plain data; pthread_sigmask only fills it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set) };
    // SAFETY: sigismember reads the set filled above.
    (1..65).map(|s| unsafe { libc::sigismember(&set, s) } == 1).collect()
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dev) = args.next() else {
        eprintln!("usage: kvm-hostile-check DEVICE [CASES]");
        return ExitCode::from(2);
    };
    let cases: Vec<u32> = match args.next() {
        Some(list) => list.split(',').filter_map(|c| c.trim().parse().ok()).collect(),
        None => (1..=9).collect(),
    };
    let kvm = Kvm::new_with_path(&CString::new(dev).unwrap()).expect("open device");
    let mask = sigmask();
    // SAFETY: a handler that does nothing, so that the watchdog's SIGALRM interrupts KVM_RUN.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as *const () as usize;
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
    }
    type Section = (u32, fn(&Kvm));
    let sections: [Section; 9] = [
        (4, control_bits), (3, xsave_table), (5, pkru), (6, msrs), (7, instructions),
        (8, debug_regs), (9, delivery), (2, mmio), (1, string_io),
    ];
    for (n, f) in sections {
        if cases.contains(&n) {
            println!("case {n}");
            f(&kvm);
        }
    }
    println!("vmm sigmask unchanged {}", sigmask() == mask);
    ExitCode::SUCCESS
}
