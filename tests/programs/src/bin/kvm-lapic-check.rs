//! The in-kernel local APIC of KVM's split irqchip, as far as rvmx has it: enabling it
//! (`KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)`), its register page through `KVM_GET/SET_LAPIC`,
//! IA32_APIC_BASE and the TPR in SREGS, and a 64-bit guest that reads and writes its
//! registers through the xAPIC MMIO page, CR8 and, after switching to x2APIC mode, the MSRs.
//! Prints `key value` lines; tests/vm/suite.sh runs it on `/dev/rvmx` (loaded with
//! `split_irqchip=1`) and `/dev/kvm` in the same boot and requires identical output.
//!
//! Usage: kvm-lapic-check DEVICE

use std::{ffi::CString, process::ExitCode};

use kvm_bindings::{kvm_cpuid_entry2, kvm_enable_cap, kvm_lapic_state, kvm_msr_entry, CpuId, Msrs};
use kvm_ioctls::{Kvm, VcpuExit, VmFd};

const SPLIT_IRQCHIP: u32 = 121;

// The guest: xAPIC registers through MMIO at 0xfee00000 (mapped by a 2 MiB page), the TPR
// through CR8, then x2APIC mode and its MSRs. Values are stored from 0x8000 on, 8 bytes each.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl lapic_start", ".globl lapic_end",
    "lapic_start:",
    "mov rbx, 0xfee00000",
    "mov eax, [rbx + 0x20]", "mov [0x8000], rax",    // ID
    "mov eax, [rbx + 0x30]", "mov [0x8008], rax",    // version
    "mov eax, [rbx + 0xf0]", "mov [0x8010], rax",    // SPIV
    "mov dword ptr [rbx + 0xf0], 0x1ff",              // software enable, spurious 0xff
    "mov eax, [rbx + 0xf0]", "mov [0x8018], rax",
    "mov dword ptr [rbx + 0x80], 0x3f",               // TPR
    "mov rax, cr8", "mov [0x8020], rax",
    "mov eax, 9", "mov cr8, rax",
    "mov eax, [rbx + 0x80]", "mov [0x8028], rax",    // TPR after CR8
    "mov eax, [rbx + 0xa0]", "mov [0x8030], rax",    // PPR
    "mov dword ptr [rbx + 0xe0], 0x0fffffff",         // DFR: cluster
    "mov dword ptr [rbx + 0xd0], 0x12000000",         // LDR
    "mov eax, [rbx + 0xe0]", "mov [0x8038], rax",
    "mov eax, [rbx + 0xd0]", "mov [0x8040], rax",
    "mov dword ptr [rbx + 0x350], 0x700",             // LVT0: ExtINT
    "mov eax, [rbx + 0x350]", "mov [0x8048], rax",
    "mov dword ptr [rbx + 0x30], 0",                  // version: read-only
    "mov eax, [rbx + 0x30]", "mov [0x8050], rax",
    "mov ax, [rbx + 0x22]", "mov [0x8058], rax",      // a 2-byte read inside ID
    "mov eax, [rbx + 0x3e0]", "mov [0x8060], rax",   // TDCR
    // x2APIC mode: IA32_APIC_BASE |= EXTD.
    "mov ecx, 0x1b", "rdmsr", "mov [0x8068], rax",
    "or eax, 0x400", "wrmsr",
    "mov eax, [rbx + 0x20]", "mov [0x8070], rax",    // the MMIO hole: all ones
    "mov ecx, 0x802", "rdmsr", "mov [0x8078], rax",  // ID
    "mov ecx, 0x80d", "rdmsr", "mov [0x8080], rax",  // LDR (derived from the ID)
    "mov ecx, 0x808", "rdmsr", "mov [0x8088], rax",  // TPR
    "mov ecx, 0x808", "mov eax, 0x20", "xor edx, edx", "wrmsr",
    "mov rax, cr8", "mov [0x8090], rax",
    "mov ecx, 0x80a", "rdmsr", "mov [0x8098], rax",  // PPR (KVM recomputes it on the read)
    "out 0x10, al",                                   // HLT would wait in the kernel for an interrupt
    "lapic_end:",
    ".popsection",
);

// Self-IPIs through the ICR, delivered through the IDT (vectors 0x40 and 0x41), with the TPR
// holding one back until it is lowered. Results from 0x8100 on.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl ipi_start", ".globl ipi_end", ".globl ipi_h40", ".globl ipi_h41",
    "ipi_start:",
    "mov rsp, 0x9000",
    "mov rbx, 0xfee00000",
    "mov dword ptr [rbx + 0xf0], 0x1ff",
    "mov dword ptr [rbx + 0x300], 0x40040",           // self, vector 0x40, while IF = 0
    "mov eax, [rbx + 0x220]", "mov [0x8100], rax",    // IRR 0x40-0x5f
    "sti", "nop", "cli",
    "mov eax, [rbx + 0x120]", "mov [0x8130], rax",    // ISR after the handler's EOI
    "mov eax, 5", "mov cr8, rax",                     // TPR 0x50
    "mov dword ptr [rbx + 0x300], 0x40041",           // class 4: held back
    "sti", "nop", "nop", "cli",
    "mov rax, [0x8128]", "mov [0x8138], rax",         // handled so far: 0
    "mov eax, [rbx + 0x220]", "mov [0x8140], rax",
    "xor eax, eax", "mov cr8, rax",
    "sti", "nop", "cli",
    "out 0x10, al",
    ".balign 128",
    "ipi_h40:",
    "mov eax, [rbx + 0x120]", "mov [0x8108], rax",    // ISR in the handler
    "mov eax, [rbx + 0xa0]", "mov [0x8110], rax",     // PPR in the handler
    "mov dword ptr [rbx + 0xb0], 0",                  // EOI
    "inc qword ptr [0x8118]",
    "iretq",
    ".balign 128",
    "ipi_h41:",
    "mov eax, [rbx + 0xa0]", "mov [0x8120], rax",
    "mov dword ptr [rbx + 0xb0], 0",
    "inc qword ptr [0x8128]",
    "iretq",
    "ipi_end:",
    ".popsection",
);

// The userspace PIC's interrupt (KVM_INTERRUPT) taken through LINT0 as ExtINT, vector 0x30.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl extint_start", ".globl extint_end", ".globl extint_h30",
    "extint_start:",
    "mov rsp, 0x9000",
    "out 0x10, al",                                   // IF = 0: userspace queues 0x30
    "sti", "nop", "cli",
    "mov rax, [0x8200]", "mov [0x8208], rax",
    "out 0x10, al",
    "sti",
    "out 0x11, al",                                   // IF = 1: userspace asks for a window
    "nop",
    "out 0x12, al",
    "nop",
    "out 0x13, al",
    ".balign 64",
    "extint_h30:",
    "inc qword ptr [0x8200]",
    "iretq",
    "extint_end:",
    ".popsection",
);

extern "C" {
    static extint_start: u8;
    static extint_h30: u8;
    static extint_end: u8;
    static lapic_start: u8;
    static lapic_end: u8;
    static ipi_start: u8;
    static ipi_h40: u8;
    static ipi_h41: u8;
    static ipi_end: u8;
}

/// A 64-bit vCPU 0 of a new split-irqchip VM running `code` at 0x1000, with x2APIC and
/// TSC-deadline in CPUID, 0xfee00000 mapped by a 2 MiB page, a GDT and an IDT whose vectors
/// in `gates` point at the given offsets in `code`.
fn split_guest(kvm: &Kvm, code: &[u8], gates: &[(u8, u64)]) -> rvmx_test_programs::Guest {
    let vm = kvm.create_vm().unwrap();
    println!("guest enable {:?}", enable(&vm, 24));
    // SAFETY: a fresh anonymous mapping of 64 KiB, never unmapped (the process is short-lived).
    let mem = unsafe {
        libc::mmap(std::ptr::null_mut(), 0x10000, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    } as *mut u8;
    // SAFETY: inside the 64 KiB mapping: code at 0x1000, page tables at 0x2000-0x5fff, GDT at
    // 0x6800, IDT at 0x7000.
    unsafe {
        std::ptr::copy_nonoverlapping(code.as_ptr(), mem.add(0x1000), code.len());
        mem.add(0x2000).cast::<u64>().write(0x3003);
        mem.add(0x3000).cast::<u64>().write(0x4003);
        mem.add(0x4000).cast::<u64>().write(0x83);
        mem.add(0x3018).cast::<u64>().write(0x5003);
        mem.add(0x5000 + 0x1f7 * 8).cast::<u64>().write(0xfee0_0000 | 0x9b); // PCD, PWT
        mem.add(0x6808).cast::<u64>().write(0x0020_9a00_0000_0000); // 64-bit code
        mem.add(0x6810).cast::<u64>().write(0x00cf_9200_0000_ffff); // data (IRETQ reloads SS)
        for &(vector, offset) in gates {
            let target = 0x1000 + offset;
            let e = mem.add(0x7000 + usize::from(vector) * 16);
            e.cast::<u64>().write_unaligned((target & 0xffff) | 8 << 16 | 0x8e00 << 32 | (target >> 16 & 0xffff) << 48);
            e.add(8).cast::<u64>().write_unaligned(target >> 32);
        }
    }
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot: 0, flags: 0, guest_phys_addr: 0, memory_size: 0x10000, userspace_addr: mem as u64,
    };
    // SAFETY: the region is the mapping above, alive for the process's life.
    unsafe { vm.set_user_memory_region(region) }.unwrap();
    let vcpu = vm.create_vcpu(0).unwrap();
    let entry = |function: u32, eax: u32, ebx: u32, ecx: u32, edx: u32| kvm_cpuid_entry2 { function, eax, ebx, ecx, edx, ..Default::default() };
    let table = [
        entry(0, 1, 0x756e_6547, 0x6c65_746e, 0x4965_6e69),
        entry(1, 0x906ea, 0, 1 << 21 | 1 << 24, 1 << 9), // x2APIC, TSC-deadline; APIC
        entry(0x8000_0000, 0x8000_0008, 0, 0, 0),
        entry(0x8000_0001, 0, 0, 0, 1 << 29 | 1 << 20),
        entry(0x8000_0008, 0x3027, 0, 0, 0),
    ];
    println!("guest set_cpuid2 {:?}", vcpu.set_cpuid2(&CpuId::from_entries(&table).unwrap()).map_err(|e| e.errno()));
    let mut sr = vcpu.get_sregs().unwrap();
    let long = |type_: u8, selector: u16, l: u8| kvm_bindings::kvm_segment { l, db: 1 - l, ..rvmx_test_programs::flat(type_, selector) };
    sr.cs = long(11, 8, 1);
    (sr.ds, sr.es, sr.fs, sr.gs, sr.ss) = (long(3, 16, 0), long(3, 16, 0), long(3, 16, 0), long(3, 16, 0), long(3, 16, 0));
    (sr.cr3, sr.cr4, sr.cr0, sr.efer) = (0x2000, 0x20, 0x8000_0011, 0x500);
    (sr.gdt.base, sr.gdt.limit, sr.idt.base, sr.idt.limit) = (0x6800, 23, 0x7000, 0xfff);
    println!("guest set_sregs {:?}", vcpu.set_sregs(&sr).map_err(|e| e.errno()));
    let mut r = vcpu.get_regs().unwrap();
    (r.rip, r.rflags) = (0x1000, 2);
    vcpu.set_regs(&r).unwrap();
    rvmx_test_programs::Guest { vm, vcpu, mem }
}

/// Runs to the guest's OUT; the words it saved from `at` on.
fn run_saved(g: &mut rvmx_test_programs::Guest, at: usize, n: usize) -> String {
    let exit = match g.vcpu.run() {
        Ok(VcpuExit::IoOut(port, _)) => format!("out {port:#x}"),
        Ok(other) => format!("other {other:?}"),
        Err(e) => format!("error {}", e.errno()),
    };
    // SAFETY: inside the mapping.
    let saved: Vec<String> = (0..n).map(|i| format!("{:#x}", unsafe { g.mem.add(at + i * 8).cast::<u64>().read() })).collect();
    format!("exit {exit} saved {}", saved.join(" "))
}

/// The non-zero registers of a `kvm_lapic_state`, as `offset:value` words.
fn regs(s: &kvm_lapic_state) -> String {
    let words = s.regs.chunks_exact(4).map(|b| u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8]));
    words.enumerate().filter(|(_, v)| *v != 0).map(|(i, v)| format!("{:x}:{v:x}", i * 4)).collect::<Vec<_>>().join(" ")
}

/// `KVM_INTERRUPT` (kvm-ioctls has no wrapper for it).
fn interrupt(vcpu: &kvm_ioctls::VcpuFd, irq: u32) -> Result<(), i32> {
    use std::os::fd::AsRawFd;
    let arg = kvm_bindings::kvm_interrupt { irq };
    // SAFETY: KVM_INTERRUPT reads a `struct kvm_interrupt` from the pointer, which is valid.
    let r = unsafe { libc::ioctl(vcpu.as_raw_fd(), 0x4004_ae86, &arg) };
    if r < 0 { Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)) } else { Ok(()) }
}

fn enable(vm: &VmFd, pins: u64) -> Result<(), i32> {
    vm.enable_cap(&kvm_enable_cap { cap: SPLIT_IRQCHIP, args: [pins, 0, 0, 0], ..Default::default() }).map_err(|e| e.errno())
}

fn main() -> ExitCode {
    let Some(dev) = std::env::args().nth(1) else {
        eprintln!("usage: kvm-lapic-check DEVICE");
        return ExitCode::from(2);
    };
    let kvm = Kvm::new_with_path(&CString::new(dev).unwrap()).expect("open device");
    println!("cap_split_irqchip {}", kvm.check_extension_raw(SPLIT_IRQCHIP as u64));

    // Enabling: the pin count's limit, once, before vCPUs.
    let vm = kvm.create_vm().unwrap();
    println!("enable too_many_pins {:?} 24 {:?} again {:?}", enable(&vm, 4097), enable(&vm, 24), enable(&vm, 24));
    let late = kvm.create_vm().unwrap();
    let _v = late.create_vcpu(0).unwrap();
    println!("enable after_vcpu {:?}", enable(&late, 24));
    println!("no_irqchip get_lapic {:?}", _v.get_lapic().map(|_| ()).map_err(|e| e.errno()));
    println!("no_irqchip set_lapic {:?}", _v.set_lapic(&kvm_lapic_state::default()).map_err(|e| e.errno()));

    // Reset state of the BSP and an AP, through KVM_GET_LAPIC, SREGS and KVM_GET_MSRS.
    let bsp = vm.create_vcpu(0).unwrap();
    let ap = vm.create_vcpu(1).unwrap();
    for (name, v) in [("bsp", &bsp), ("ap", &ap)] {
        println!("{name} reset {}", regs(&v.get_lapic().unwrap()));
        let s = v.get_sregs().unwrap();
        let mut m = Msrs::from_entries(&[kvm_msr_entry { index: 0x1b, ..Default::default() }]).unwrap();
        let n = v.get_msrs(&mut m).map_err(|e| e.errno());
        println!("{name} apic_base sregs {:#x} msr {n:?} {:#x} cr8 {}", s.apic_base, m.as_slice()[0].data, s.cr8);
    }
    // KVM_SET_LAPIC: TPR, SPIV, LDR, DFR, LVT0, an IRR bit; the read-only version is kept.
    let mut s = bsp.get_lapic().unwrap();
    let mut put = |off: usize, v: u32| {
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            s.regs[off + i] = *b as _;
        }
    };
    put(0x80, 0x70);
    put(0xf0, 0x1ff);
    put(0xd0, 0x0100_0000);
    put(0xe0, 0xffff_ffff);
    put(0x350, 0x8700);
    put(0x200 + 0x10 * 2, 1 << 3); // IRR vector 0x43
    put(0x30, 0x1234);
    println!("set_lapic {:?}", bsp.set_lapic(&s).map_err(|e| e.errno()));
    println!("after_set {}", regs(&bsp.get_lapic().unwrap()));
    println!("after_set cr8 {}", bsp.get_sregs().unwrap().cr8);
    // SREGS moves the TPR and refuses a bad APIC_BASE.
    let mut sr = bsp.get_sregs().unwrap();
    sr.cr8 = 2;
    println!("set_sregs_cr8 {:?} tpr {:#x}", bsp.set_sregs(&sr).map_err(|e| e.errno()), { let l = bsp.get_lapic().unwrap(); u32::from_le_bytes([l.regs[0x80] as u8, l.regs[0x81] as u8, l.regs[0x82] as u8, l.regs[0x83] as u8]) });
    sr.apic_base = 0xfee0_0c00; // EXTD without CPUID x2APIC
    println!("set_sregs_bad_apic_base {:?}", bsp.set_sregs(&sr).map_err(|e| e.errno()));

    // The guest (its own split-irqchip VM).
    // SAFETY: the symbols are the guest assembled above.
    let code = unsafe {
        let start = &lapic_start as *const u8;
        std::slice::from_raw_parts(start, (&lapic_end as *const u8).offset_from(start) as usize)
    };
    let mut g = split_guest(&kvm, code, &[]);
    println!("guest {}", run_saved(&mut g, 0x8000, 20));
    println!("guest final {}", regs(&g.vcpu.get_lapic().unwrap()));
    println!("guest apic_base {:#x}", g.vcpu.get_sregs().unwrap().apic_base);

    // Self-IPIs delivered through the IDT, EOI, and the TPR holding one back.
    // SAFETY: the symbols are the guest assembled above.
    let (code, h40, h41) = unsafe {
        let start = &ipi_start as *const u8;
        let off = |p: &u8| (p as *const u8).offset_from(start) as u64;
        (std::slice::from_raw_parts(start, off(&ipi_end) as usize), off(&ipi_h40), off(&ipi_h41))
    };
    let mut g = split_guest(&kvm, code, &[(0x40, h40), (0x41, h41)]);
    println!("ipi {}", run_saved(&mut g, 0x8100, 9));
    println!("ipi final {}", regs(&g.vcpu.get_lapic().unwrap()));

    // KVM_INTERRUPT with a split irqchip: the PIC's vector, one at a time (EEXIST), taken
    // through the BSP's LINT0 (ExtINT); ready_for_interrupt_injection and the interrupt window.
    // SAFETY: the symbols are the guest assembled above.
    let (code, h30) = unsafe {
        let start = &extint_start as *const u8;
        let off = |p: &u8| (p as *const u8).offset_from(start) as u64;
        (std::slice::from_raw_parts(start, off(&extint_end) as usize), off(&extint_h30))
    };
    let mut g = split_guest(&kvm, code, &[(0x30, h30)]);
    let irq = |g: &rvmx_test_programs::Guest, v: u32| interrupt(&g.vcpu, v);
    let stop = |g: &mut rvmx_test_programs::Guest| {
        let exit = match g.vcpu.run() {
            Ok(VcpuExit::IoOut(port, _)) => format!("out {port:#x}"),
            Ok(VcpuExit::IrqWindowOpen) => "irq_window_open".to_string(),
            Ok(other) => format!("other {other:?}"),
            Err(e) => format!("error {}", e.errno()),
        };
        let r = g.vcpu.get_kvm_run();
        // SAFETY: inside the mapping.
        let count = unsafe { g.mem.add(0x8200).cast::<u64>().read() };
        format!("{exit} ready {} if {} count {count}", r.ready_for_interrupt_injection, r.if_flag)
    };
    println!("extint stop1 {}", stop(&mut g));
    println!("extint queue {:?} again {:?} too_big {:?}", irq(&g, 0x30), irq(&g, 0x31), irq(&g, 256));
    println!("extint stop2 {}", stop(&mut g));
    println!("extint stop3 {}", stop(&mut g));
    g.vcpu.get_kvm_run().request_interrupt_window = 1;
    println!("extint window {} rip {:#x}", stop(&mut g), g.vcpu.get_regs().unwrap().rip);
    g.vcpu.get_kvm_run().request_interrupt_window = 0;
    println!("extint queue2 {:?}", irq(&g, 0x30));
    println!("extint stop4 {}", stop(&mut g));
    println!("extint stop5 {}", stop(&mut g));
    // An AP's LINT0 is masked: the vector waits (accepted once, then EEXIST).
    let ap = g.vm.create_vcpu(1).unwrap();
    println!("extint ap {:?} {:?}", interrupt(&ap, 0x30), interrupt(&ap, 0x30));
    ExitCode::SUCCESS
}
