//! Extended and debug state, through rust-vmm's `kvm-ioctls`: a 64-bit guest (assembled
//! below, with an IDT whose handlers report the vector on port 0xe0) turns on XSAVE, sets
//! XCR0 (valid and invalid), keeps AVX registers across exits to userspace, and uses debug
//! registers (MOV DR, a data breakpoint, #GP for bad values). Userspace checks
//! `KVM_GET/SET_XSAVE`, `KVM_GET/SET_XCRS` and `KVM_GET/SET_DEBUGREGS` in between, and that a
//! hardware watchpoint of this very process still fires after the guest ran (a VM exit
//! leaves DR7 disarmed unless the hypervisor restores it). Prints `key value` lines;
//! tests/vm/suite.sh runs it on `/dev/rvmx` and `/dev/kvm` and requires identical output
//! (but for `info` lines). A second guest uses the MSRs of SYSCALL, SWAPGS and RDTSCP while
//! it turns EFER.SCE on and off (the hypervisor may keep them in the CPU only while the
//! guest can use them), with userspace reading and writing them in between.
//!
//! Usage: kvm-cpu-state-check DEVICE

use std::{ffi::CString, process::ExitCode};

use kvm_bindings::{kvm_debugregs, kvm_segment, kvm_xcrs, kvm_xsave, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm, VcpuExit};
use rvmx_test_programs::{code, flat, guest, watchpoint, Guest};

// The guest. r15 holds where a handler resumes after a fault. RAM: results at 0x8000..,
// AVX data at 0x8100.., watched dword at 0x8300.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl cs_start", ".globl cs_end", ".globl cs_db", ".globl cs_bp", ".globl cs_dbg", ".globl cs_hwbp", ".globl cs_int3", ".globl cs_ud", ".globl cs_gp",
    ".globl cs_sys", ".globl cs_lstar", ".globl cs_lstar2",
    "cs_start:",
    "mov rax, cr4",
    "or rax, 1 << 18",                  // CR4.OSXSAVE
    "mov cr4, rax",
    "xor ecx, ecx",
    "xgetbv",
    "mov [0x8000], rax",                // XCR0 after reset: 1
    "mov eax, 0xd",
    "xor ecx, ecx",
    "cpuid",
    "mov [0x8008], rbx",                // XSAVE size for XCR0 = 1
    "lea r15, [rip + 1f]",
    "mov eax, 5",                       // x87 | AVX without SSE: #GP
    "xor edx, edx",
    "xor ecx, ecx",
    "xsetbv",
    "1:",
    "lea r15, [rip + 1f]",
    "mov eax, 3",
    "mov ecx, 1",                       // XCR1 does not exist: #GP
    "xsetbv",
    "1:",
    "mov eax, 7",                       // x87 | SSE | AVX
    "xor edx, edx",
    "xor ecx, ecx",
    "xsetbv",
    "xgetbv",
    "mov [0x8010], rax",
    "mov eax, 0xd",
    "xor ecx, ecx",
    "cpuid",
    "mov [0x8018], rbx",                // XSAVE size for XCR0 = 7
    "vmovdqu ymm0, [0x8100]",
    "out 0x10, al",                     // to userspace: reads and changes the XSAVE image
    "vmovdqu [0x8200], ymm0",           // kept across the exit
    "vmovdqu [0x8220], ymm1",           // written by userspace with KVM_SET_XSAVE
    // Debug registers.
    "mov rax, 0x12345678",
    "mov dr0, rax",
    "mov rbx, dr0",
    "mov [0x8040], rbx",
    "mov rax, dr6",
    "mov [0x8048], rax",
    "mov rax, dr7",
    "mov [0x8050], rax",
    "mov rax, 0x8300",
    "mov dr1, rax",
    "mov rax, 0x00d00404",              // L1, write breakpoint, 4 bytes
    "mov dr7, rax",
    "lea r15, [rip + 1f]",
    "mov dword ptr [0x8300], 1",        // #DB (trap) if the CPU has data breakpoints
    "1:",
    "mov rax, dr6",
    "mov [0x8058], rax",
    "xor eax, eax",
    "mov dr7, rax",
    "lea r15, [rip + 1f]",
    "mov rax, 0x100000400",             // bits 63:32 of DR7: #GP
    "mov dr7, rax",
    "1:",
    "out 0x11, al",                     // to userspace: GET/SET_DEBUGREGS
    "mov rax, dr2",
    "mov [0x8060], rax",
    "mov rax, dr7",
    "mov [0x8068], rax",
    "hlt",
    // A userspace debugger's guest (entered at cs_dbg): single steps, INT3, a hardware
    // breakpoint, then its own TF over an emulated CPUID.
    "cs_dbg:",
    "nop",
    "mov eax, 0",
    "cpuid",
    "out 0x40, al",
    "add eax, 1",
    "cs_int3:",
    "int3",
    "cs_hwbp:",
    "nop",
    "lea r15, [rip + 1f]",
    "pushfq",
    "or qword ptr [rsp], 0x100",        // TF
    "popfq",
    "xor eax, eax",                     // the trap comes after this one
    "cpuid",
    "1:",
    "mov rax, dr6",
    "mov [0x8070], rax",
    "hlt",
    // The SYSCALL/SWAPGS/RDTSCP guest (entered at cs_sys), long mode without EFER.SCE;
    // userspace set STAR, LSTAR (cs_lstar), SFMASK, KERNEL_GS_BASE and TSC_AUX first.
    "cs_sys:",
    "lea r15, [rip + 1f]",
    "syscall",                          // without SCE: #UD
    "1:",
    "swapgs",                           // GS base := userspace's KERNEL_GS_BASE
    "mov ecx, 0xc0000101",
    "rdmsr",
    "mov [0x8080], eax",
    "mov [0x8084], edx",
    "mov ecx, 0xc0000102",              // KERNEL_GS_BASE now: the old GS base
    "rdmsr",
    "mov [0x8088], eax",
    "mov [0x808c], edx",
    "mov eax, 0x9abc0000",
    "mov edx, 0x1234",
    "wrmsr",
    "swapgs",                           // GS base := the guest's own write
    "mov ecx, 0xc0000101",
    "rdmsr",
    "mov [0x8090], eax",
    "mov [0x8094], edx",
    "lea r15, [rip + 1f]",
    "rdtscp",                           // TSC_AUX in ECX (#UD without RDTSCP in CPUID)
    "mov [0x8098], ecx",
    "1:",
    "mov ecx, 0xc0000084",              // SFMASK, written while SYSCALL is off: DF and TF
    "mov eax, 0x500",
    "xor edx, edx",
    "wrmsr",
    "mov ecx, 0xc0000080",
    "rdmsr",
    "or eax, 1",                        // EFER.SCE
    "wrmsr",
    "std",                              // DF, which SFMASK clears
    "syscall",
    "hlt",                              // not reached: the handlers end in HLT
    "cs_lstar:",
    "mov [0x80a0], rcx",                // the return RIP
    "mov [0x80a8], r11",                // RFLAGS before (DF set)
    "pushfq",
    "pop rax",
    "mov [0x80b0], rax",                // RFLAGS after SFMASK
    "mov ax, cs",
    "mov [0x80b8], ax",
    "mov ax, ss",
    "mov [0x80ba], ax",
    "out 0x12, al",                     // to userspace: reads the MSRs, moves LSTAR
    "std",
    "syscall",                          // to the new LSTAR
    "hlt",
    "cs_lstar2:",
    "mov [0x80c0], r11",
    "mov ecx, 0xc0000080",
    "rdmsr",
    "and eax, -2",                      // SCE off again
    "wrmsr",
    "lea r15, [rip + 1f]",
    "syscall",                          // #UD
    "1:",
    "hlt",
    // Handlers: report the vector, resume at r15 (#DB: with TF off).
    "cs_db:",
    "mov al, 1",
    "out 0xe0, al",
    "mov [rsp], r15",
    "and qword ptr [rsp + 16], -257",
    "iretq",
    "cs_bp:",
    "mov al, 3",
    "out 0xe0, al",
    "iretq",
    "cs_ud:",
    "mov al, 6",
    "out 0xe0, al",
    "mov [rsp], r15",
    "iretq",
    "cs_gp:",
    "mov al, 13",
    "out 0xe0, al",
    "add rsp, 8",                       // error code
    "mov [rsp], r15",
    "iretq",
    "cs_end:",
    ".popsection",
);

extern "C" {
    static cs_start: u8;
    static cs_end: u8;
    static cs_db: u8;
    static cs_bp: u8;
    static cs_dbg: u8;
    static cs_hwbp: u8;
    static cs_int3: u8;
    static cs_ud: u8;
    static cs_gp: u8;
    static cs_sys: u8;
    static cs_lstar: u8;
    static cs_lstar2: u8;
}

/// Writes `bytes` at guest-physical `gpa`.
fn poke(g: &Guest, gpa: usize, bytes: &[u8]) {
    // SAFETY: callers stay inside the 64 KiB mapping.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), g.mem.add(gpa), bytes.len()) };
}

fn ram(g: &Guest, gpa: usize, len: usize) -> Vec<u8> {
    // SAFETY: callers stay inside the 64 KiB mapping.
    unsafe { std::slice::from_raw_parts(g.mem.add(gpa), len) }.to_vec()
}

fn u64_at(g: &Guest, gpa: usize) -> u64 {
    u64::from_le_bytes(ram(g, gpa, 8).try_into().unwrap())
}

/// A 64-bit guest with a GDT (at 0x5000), an IDT (at 0x6000) for #DB, #UD and #GP, a stack,
/// and the device's whole supported CPUID (which has XSAVE and AVX where the host does).
fn setup(kvm: &Kvm) -> Guest {
    // SAFETY: the symbols delimit the guest assembled above.
    let (start, blob) = unsafe { (&cs_start as *const u8 as u64, code(&cs_start, &cs_end)) };
    let g = guest(kvm, blob);
    poke(&g, 0x2000, &0x3003u64.to_le_bytes());
    poke(&g, 0x3000, &0x4003u64.to_le_bytes());
    poke(&g, 0x4000, &0x83u64.to_le_bytes());
    for (i, d) in [0u64, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff].iter().enumerate() {
        poke(&g, 0x5000 + 8 * i, &d.to_le_bytes());
    }
    // SAFETY: handler symbols inside the blob.
    let handlers = unsafe { [(1, &cs_db as *const u8), (3, &cs_bp), (6, &cs_ud), (13, &cs_gp)] };
    for (vector, h) in handlers {
        let at = h as u64 - start + 0x1000;
        let lo = (at & 0xffff) | 8 << 16 | 0x8e00 << 32 | (at >> 16 & 0xffff) << 48;
        poke(&g, 0x6000 + 16 * vector, &lo.to_le_bytes());
        poke(&g, 0x6000 + 16 * vector + 8, &(at >> 32).to_le_bytes());
    }
    let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).expect("KVM_GET_SUPPORTED_CPUID");
    g.vcpu.set_cpuid2(&cpuid).expect("KVM_SET_CPUID2");
    let mut s = g.vcpu.get_sregs().unwrap();
    let seg = |type_: u8, selector: u16, l: u8| kvm_segment { l, db: 1 - l, ..flat(type_, selector) };
    s.cs = seg(11, 8, 1);
    (s.ds, s.es, s.fs, s.gs, s.ss) = (seg(3, 16, 0), seg(3, 16, 0), seg(3, 16, 0), seg(3, 16, 0), seg(3, 16, 0));
    s.gdt.base = 0x5000;
    s.gdt.limit = 23;
    s.idt.base = 0x6000;
    s.idt.limit = 16 * 32 - 1;
    s.cr3 = 0x2000;
    s.cr4 = 0x620; // PAE, OSFXSR, OSXMMEXCPT
    s.cr0 = 0x8000_0033; // PG, NE, ET, MP, PE
    s.efer = 0x500;
    g.vcpu.set_sregs(&s).expect("KVM_SET_SREGS");
    let mut r = g.vcpu.get_regs().unwrap();
    r.rsp = 0xf000;
    g.vcpu.set_regs(&r).unwrap();
    let pattern: Vec<u8> = (0..32).map(|i| 0x40 + i).collect();
    poke(&g, 0x8100, &pattern);
    g
}

/// Where `sym` (in the guest blob) is in guest memory.
fn guest_addr(sym: &u8) -> u64 {
    // SAFETY: taking the address of the blob's start symbol.
    sym as *const u8 as u64 - unsafe { &cs_start as *const u8 as u64 } + 0x1000
}

/// A userspace debugger drives the guest at `cs_dbg` (`KVM_SET_GUEST_DEBUG`).
fn debugger(kvm: &Kvm) {
    use kvm_bindings::{kvm_guest_debug, KVM_GUESTDBG_ENABLE as ENABLE, KVM_GUESTDBG_INJECT_BP,
                       KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP};
    let mut g = setup(kvm);
    let mut r = g.vcpu.get_regs().unwrap();
    // SAFETY: a symbol of the blob.
    r.rip = guest_addr(unsafe { &cs_dbg });
    g.vcpu.set_regs(&r).unwrap();
    let base = guest_addr(unsafe { &cs_dbg });
    let dbg = |g: &Guest, control: u32, debugreg: [u64; 8]| {
        let d = kvm_guest_debug { control, pad: 0, arch: kvm_bindings::kvm_guest_debug_arch { debugreg } };
        g.vcpu.set_guest_debug(&d).map_err(|e| e.errno())
    };
    // KVM takes a DR7 with bits 63:32 set (VM entry would then fail); rvmx refuses it.
    println!("info dbg bad_dr7 {:?}", dbg(&g, ENABLE | KVM_GUESTDBG_USE_HW_BP, [0, 0, 0, 0, 0, 0, 0, 1 << 32]));
    println!("dbg singlestep {:?}", dbg(&g, ENABLE | KVM_GUESTDBG_SINGLESTEP, [0; 8]));
    let show = |g: &mut Guest, what: &str| {
        let line = match g.vcpu.run() {
            Ok(VcpuExit::Debug(d)) => {
                let hw = if d.exception == 1 { format!(" dr6 {:#x}", d.dr6) } else { String::new() };
                format!("debug exception {} at +{:#x}{hw}", d.exception, d.pc.wrapping_sub(base))
            }
            Ok(VcpuExit::IoOut(port, data)) => format!("out {port:#x} {:02x?}", data),
            Ok(VcpuExit::Hlt) => "hlt".to_string(),
            Ok(other) => format!("other {other:?}"),
            Err(e) => format!("error errno {}", e.errno()),
        };
        let rf = g.vcpu.get_regs().unwrap().rflags;
        println!("dbg {what} {line} tf {}", rf >> 8 & 1);
    };
    // Steps over NOP, MOV, an emulated CPUID, an OUT completed by userspace, ADD; stops at INT3.
    let int3 = guest_addr(unsafe { &cs_int3 });
    for i in 0..12 {
        show(&mut g, &format!("step{i}"));
        if g.vcpu.get_regs().unwrap().rip == int3 {
            break;
        }
    }
    println!("dbg sw_bp {:?}", dbg(&g, ENABLE | KVM_GUESTDBG_USE_SW_BP, [0; 8]));
    show(&mut g, "int3");
    println!("dbg inject_bp {:?}", dbg(&g, ENABLE | KVM_GUESTDBG_USE_SW_BP | KVM_GUESTDBG_INJECT_BP, [0; 8]));
    // The guest's #BP handler runs (vector 3 on port 0xe0) and returns after the INT3.
    let hwbp = guest_addr(unsafe { &cs_hwbp });
    show(&mut g, "handler");
    println!("dbg hw_bp {:?}", dbg(&g, ENABLE | KVM_GUESTDBG_USE_HW_BP, [hwbp, 0, 0, 0, 0, 0, 0, 0x401]));
    show(&mut g, "hw_bp");
    println!("dbg off {:?}", dbg(&g, 0, [0; 8]));
    show(&mut g, "own_tf");
    show(&mut g, "end");
    println!("dbg guest_dr6_after_own_step {:#x}", u64_at(&g, 0x8070));
}

/// The XSAVE image's bytes `at..at + len`.
fn xsave_bytes(x: &kvm_xsave, at: usize, len: usize) -> Vec<u8> {
    x.region.iter().flat_map(|w| w.to_le_bytes()).skip(at).take(len).collect()
}

/// The MSRs of SYSCALL, SWAPGS and RDTSCP as userspace reads them.
fn syscall_msrs_now(g: &Guest) -> String {
    const MSRS: [u32; 6] = [0xc000_0081, 0xc000_0082, 0xc000_0083, 0xc000_0084, 0xc000_0102, 0xc000_0103];
    let entries: Vec<_> = MSRS.iter().map(|&index| kvm_bindings::kvm_msr_entry { index, ..Default::default() }).collect();
    let mut msrs = kvm_bindings::Msrs::from_entries(&entries).unwrap();
    let n = g.vcpu.get_msrs(&mut msrs).map_err(|e| e.errno());
    let values: Vec<String> = msrs.as_slice().iter().map(|e| format!("{:#x}={:#x}", e.index, e.data)).collect();
    format!("{n:?} {}", values.join(" "))
}

/// The guest at `cs_sys`: SYSCALL, SWAPGS and RDTSCP with the MSRs userspace set, while
/// EFER.SCE goes on and off, and userspace's reads and writes of them in between.
fn syscall_msrs(kvm: &Kvm) {
    let mut g = setup(kvm);
    let mut r = g.vcpu.get_regs().unwrap();
    // SAFETY: symbols of the blob.
    let (sys, lstar, lstar2) = unsafe { (guest_addr(&cs_sys), guest_addr(&cs_lstar), guest_addr(&cs_lstar2)) };
    r.rip = sys;
    g.vcpu.set_regs(&r).unwrap();
    let set = |g: &Guest, entries: &[(u32, u64)]| {
        let e: Vec<_> = entries.iter().map(|&(index, data)| kvm_bindings::kvm_msr_entry { index, data, ..Default::default() }).collect();
        g.vcpu.set_msrs(&kvm_bindings::Msrs::from_entries(&e).unwrap()).map_err(|e| e.errno())
    };
    // STAR: SYSCALL's CS 8 and SS 16; CSTAR is only kept; SFMASK (TF) is the guest's to set.
    println!("sys set_msrs {:?}", set(&g, &[(0xc000_0081, 0x0023_0008_0000_0000), (0xc000_0082, lstar),
        (0xc000_0083, 0xffff_ffff_8000_1000), (0xc000_0084, 0x100), (0xc000_0102, 0x5555_6666_7777),
        (0xc000_0103, 0x2a)]));
    println!("sys before_run {}", syscall_msrs_now(&g));
    println!("sys first_stop port {:?}", run_to_port("sys", &mut g).map(|p| format!("{p:#x}")));
    println!("sys swapgs gs_base {:#x} kernel_gs_base {:#x} after_guest_write {:#x}", u64_at(&g, 0x8080),
             u64_at(&g, 0x8088), u64_at(&g, 0x8090));
    println!("sys rdtscp tsc_aux {:#x}", u64_at(&g, 0x8098) & 0xffff_ffff);
    println!("sys syscall rcx_is_next {} r11 {:#x} rflags {:#x} cs {:#x} ss {:#x}", u64_at(&g, 0x80a0) == lstar - 1,
             u64_at(&g, 0x80a8), u64_at(&g, 0x80b0), u64_at(&g, 0x80b8) & 0xffff, u64_at(&g, 0x80ba) & 0xffff);
    println!("sys at_stop {}", syscall_msrs_now(&g));
    println!("sys efer {:#x}", g.vcpu.get_sregs().unwrap().efer);
    println!("sys set_lstar {:?}", set(&g, &[(0xc000_0082, lstar2), (0xc000_0084, 0x100)]));
    println!("sys second_stop port {:?}", run_to_port("sys", &mut g).map(|p| format!("{p:#x}")));
    println!("sys second_syscall r11 {:#x}", u64_at(&g, 0x80c0));
    println!("sys at_end {}", syscall_msrs_now(&g));
    println!("sys efer_end {:#x}", g.vcpu.get_sregs().unwrap().efer);
}

fn copy(x: &kvm_xsave) -> kvm_xsave {
    kvm_xsave { region: x.region, ..Default::default() }
}

fn set_xsave_bytes(x: &mut kvm_xsave, at: usize, bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        let (w, k) = ((at + i) / 4, (at + i) % 4);
        let mut le = x.region[w].to_le_bytes();
        le[k] = *b;
        x.region[w] = u32::from_le_bytes(le);
    }
}

/// Runs until the next OUT to a port below 0xe0 (reported), HLT or anything else.
fn run_to_port(name: &str, g: &mut Guest) -> Option<u16> {
    loop {
        match g.vcpu.run() {
            Ok(VcpuExit::IoOut(0xe0, data)) => println!("{name} guest_exception vector {}", data[0]),
            Ok(VcpuExit::IoOut(port, _)) => return Some(port),
            Ok(VcpuExit::Hlt) => {
                println!("{name} hlt");
                return None;
            }
            Ok(other) => {
                println!("{name} exit other {other:?}");
                return None;
            }
            Err(e) => {
                println!("{name} exit error errno {}", e.errno());
                return None;
            }
        }
    }
}


fn count(fd: i32) -> u64 {
    let mut v = 0u64;
    // SAFETY: reads 8 bytes into `v`.
    unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
    v
}

fn main() -> ExitCode {
    let Some(dev) = std::env::args().nth(1) else {
        eprintln!("usage: kvm-cpu-state-check DEVICE");
        return ExitCode::from(2);
    };
    let kvm = Kvm::new_with_path(&CString::new(dev).unwrap()).expect("open device");
    println!("caps xsave {} xcrs {} debugregs {}", kvm.check_extension(Cap::Xsave),
             kvm.check_extension(Cap::Xcrs), kvm.check_extension(Cap::Debugregs));

    // A watched variable of this process: a write before and after the guest runs.
    let watched = Box::into_raw(Box::new(0u32));
    let addr = watched as u64;
    let wp = watchpoint(addr);
    let poke_watched = || {
        // SAFETY: a volatile write to our own (leaked) boxed u32.
        unsafe { std::ptr::write_volatile(watched, 7) };
    };
    poke_watched();
    let before = wp.map(count);
    println!("info host_watchpoint_before {before:?}");

    let mut g = setup(&kvm);
    let x = g.vcpu.get_xcrs().unwrap();
    println!("reset xcrs nr {} xcr0 {:#x}", x.nr_xcrs, x.xcrs[0].value);
    let khz = g.vcpu.get_tsc_khz().unwrap_or(0);
    println!("info tsc_khz {khz}");
    println!("tsc_khz nonzero {}", khz > 0);
    println!("set_tsc_khz same {:?} half {:?}", g.vcpu.set_tsc_khz(khz).map_err(|e| e.errno()),
             g.vcpu.set_tsc_khz(khz / 2).map_err(|e| e.errno()));
    // Faster than the host: KVM emulates it by catching up, rvmx refuses (no TSC scaling).
    println!("info set_tsc_khz double {:?}", g.vcpu.set_tsc_khz(khz * 2).map_err(|e| e.errno()));
    g.vcpu.set_tsc_khz(khz).unwrap();
    for gva in [0x1234u64, 0x1f_fff8, 0x20_0000, 0xffff_8000_0000_0000] {
        match g.vcpu.translate_gva(gva) {
            Ok(t) => println!("translate {gva:#x} valid {} gpa {:#x} writeable {} usermode {}",
                              t.valid, t.physical_address, t.writeable, t.usermode),
            Err(e) => println!("translate {gva:#x} errno {}", e.errno()),
        }
    }
    let mut bad = kvm_xcrs { nr_xcrs: 1, ..Default::default() };
    bad.xcrs[0].value = 5;
    println!("set_xcrs_avx_without_sse {:?}", g.vcpu.set_xcrs(&bad).map_err(|e| e.errno()));
    bad.xcrs[0].value = 0;
    println!("set_xcrs_no_x87 {:?}", g.vcpu.set_xcrs(&bad).map_err(|e| e.errno()));
    bad.flags = 1;
    bad.xcrs[0].value = 1;
    println!("set_xcrs_flags {:?}", g.vcpu.set_xcrs(&bad).map_err(|e| e.errno()));
    let other = kvm_xcrs { nr_xcrs: 1, xcrs: [kvm_bindings::kvm_xcr { xcr: 1, reserved: 0, value: 3 }; 16], ..Default::default() };
    println!("set_xcrs_only_xcr1 {:?}", g.vcpu.set_xcrs(&other).map_err(|e| e.errno()));

    println!("first_stop port {:?}", run_to_port("xsave", &mut g).map(|p| format!("{p:#x}")));
    println!("xsave xgetbv_reset {:#x} size_reset {} xgetbv {:#x} size {}", u64_at(&g, 0x8000),
             u64_at(&g, 0x8008), u64_at(&g, 0x8010), u64_at(&g, 0x8018));
    let x = g.vcpu.get_xcrs().unwrap();
    println!("xsave xcrs nr {} xcr0 {:#x}", x.nr_xcrs, x.xcrs[0].value);
    let mut image = g.vcpu.get_xsave().unwrap();
    let bv = xsave_bytes(&image, 512, 1)[0];
    println!("xsave image ymm0 {:02x?} xstate_bv_avx {}", xsave_bytes(&image, 160, 16)
        .into_iter().chain(xsave_bytes(&image, 576, 16)).collect::<Vec<_>>(), bv & 4 != 0);
    // ymm1 := 0x80.. (low half in the legacy region, high half in the AVX component).
    let ymm1: Vec<u8> = (0..32).map(|i| 0x80 + i).collect();
    set_xsave_bytes(&mut image, 176, &ymm1[..16]);
    set_xsave_bytes(&mut image, 592, &ymm1[16..]);
    set_xsave_bytes(&mut image, 512, &[bv | 7]);
    let mut broken = copy(&image);
    set_xsave_bytes(&mut broken, 512 + 1, &[2]); // XSTATE_BV bit 9 (PKRU): never a guest's
    // SAFETY (set_xsave below): a plain 4 KiB kvm_xsave, no XSAVE2 flexible array.
    let set_xsave = |x: &kvm_xsave| unsafe { g.vcpu.set_xsave(x) }.map_err(|e| e.errno());
    println!("set_xsave_bad_xstate_bv {:?}", set_xsave(&broken));
    let mut broken = copy(&image);
    set_xsave_bytes(&mut broken, 26, &[1]); // MXCSR bit 16: reserved
    println!("set_xsave_bad_mxcsr {:?}", set_xsave(&broken));
    let mut broken = copy(&image);
    set_xsave_bytes(&mut broken, 527, &[0x80]); // XCOMP_BV: compacted format
    println!("set_xsave_compacted {:?}", set_xsave(&broken));
    println!("set_xsave {:?}", set_xsave(&image));

    println!("second_stop port {:?}", run_to_port("debug", &mut g).map(|p| format!("{p:#x}")));
    println!("avx ymm0_kept {:02x?}", ram(&g, 0x8200, 32));
    println!("avx ymm1_from_set_xsave {:02x?}", ram(&g, 0x8220, 32));
    println!("debug dr0 {:#x} dr6 {:#x} dr7 {:#x}", u64_at(&g, 0x8040), u64_at(&g, 0x8048), u64_at(&g, 0x8050));
    println!("debug dr6_after_watchpoint {:#x}", u64_at(&g, 0x8058));
    let d = g.vcpu.get_debug_regs().unwrap();
    println!("debug get db {:x?} dr7 {:#x} flags {}", d.db, d.dr7, d.flags);
    let bad = kvm_debugregs { dr7: 1 << 32, ..d };
    println!("set_debugregs_bad_dr7 {:?}", g.vcpu.set_debug_regs(&bad).map_err(|e| e.errno()));
    let bad = kvm_debugregs { flags: 1, ..d };
    println!("set_debugregs_flags {:?}", g.vcpu.set_debug_regs(&bad).map_err(|e| e.errno()));
    let mut good = d;
    good.db[2] = 0xabc;
    good.dr7 = 0x400 | 1 << 13; // GD: the guest's next MOV DR raises #DB
    println!("set_debugregs {:?}", g.vcpu.set_debug_regs(&good).map_err(|e| e.errno()));
    // The guest's `mov rax, dr2` now faults (#DB, GD) and its handler resumes at r15, the
    // label before the #GP test: it runs again and stops at port 0x11.
    println!("third_stop port {:?}", run_to_port("gd", &mut g).map(|p| format!("{p:#x}")));
    let d = g.vcpu.get_debug_regs().unwrap();
    println!("gd get dr7 {:#x} dr6_bd {}", d.dr7, d.dr6 & 1 << 13 != 0);
    println!("fourth_stop port {:?}", run_to_port("end", &mut g).map(|p| format!("{p:#x}")));
    println!("end dr2 {:#x} dr7 {:#x}", u64_at(&g, 0x8060), u64_at(&g, 0x8068));

    debugger(&kvm);
    syscall_msrs(&kvm);

    // The host's watchpoint still fires after the guest armed and disarmed its own.
    poke_watched();
    match (before, wp.map(count)) {
        (Some(b), Some(a)) => println!("host_watchpoint_after_guest fired {}", a == b + 1),
        _ => println!("info host_watchpoint unavailable"),
    }
    ExitCode::SUCCESS
}
