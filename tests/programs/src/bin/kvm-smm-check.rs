//! System-management mode, through rust-vmm's `kvm-ioctls`: a 64-bit guest on the split
//! irqchip, with its RAM also in address space 1 and 64 KiB of SMRAM at SMBASE (0x30000) only
//! there, takes SMIs from `KVM_SMI` (one also while in SMM, latched until RSM) and from its own
//! x2APIC (a self-SMI IPI). The SMI handler (real mode) changes the saved RAX in the save-state
//! map, reads the guest's RAM through address space 1, reports, and returns with RSM; RSM
//! outside SMM is #UD. Userspace checks the capabilities, slots in each address space, the SMM
//! fields of `KVM_GET_VCPU_EVENTS`, `kvm_run.flags`, SREGS in SMM, IA32_SMBASE and
//! MSR_SMI_COUNT, and the map KVM writes. Prints `key value` lines; tests/vm/suite.sh runs it on
//! `/dev/rvmx` and `/dev/kvm` and requires identical output.
//!
//! Usage: kvm-smm-check DEVICE

use std::{ffi::CString, process::ExitCode};

use kvm_bindings::{kvm_msr_entry, kvm_userspace_memory_region, Msrs};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use rvmx_test_programs::{code, split};

/// SMBASE after reset, where the test's SMRAM is (address space 1 only).
const SMBASE: u64 = 0x3_0000;
const SMRAM_SIZE: usize = 0x1_0000;

// The guest, 64-bit, at 0x1000.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl smm_start", ".globl smm_end", ".globl smm_ud", ".globl smm_after_smi", ".globl smm_loop",
    "smm_start:",
    "mov al, [0x38000]",            // SMRAM is not in address space 0: MMIO
    "mov eax, 0x22",
    "out 0x10, al",                 // userspace: KVM_SMI, taken before the next instruction
    "smm_after_smi:",
    "out 0x11, al",                 // RAX as the handler left it in the map
    "mov ecx, 0x1b",
    "rdmsr",
    "or eax, 1 << 10",              // x2APIC
    "wrmsr",
    "mov ecx, 0x830",               // ICR: self, assert, SMI
    "mov eax, 0x44200",
    "xor edx, edx",
    "wrmsr",
    "out 0x12, al",
    "rsm",                          // not in SMM: #UD
    "out 0x14, al",
    "smm_ud:",
    "out 0x13, al",                 // the end (HLT would sleep in the kernel: split irqchip)
    "smm_loop:",
    "out 0x15, al",
    "jmp smm_loop",
    "smm_end:",
    ".popsection",
);

extern "C" {
    static smm_start: u8;
    static smm_end: u8;
    static smm_ud: u8;
    static smm_after_smi: u8;
    static smm_loop: u8;
}

/// The SMI handler at SMBASE + 0x8000, 16-bit real mode (big: 4 GiB data segments).
const HANDLER: [u8; 20] = [
    0x66, 0x67, 0xc7, 0x05, 0xf8, 0xff, 0x03, 0x00, 0x34, 0x12, 0x00, 0x00, // mov dword [SMBASE + 0xfff8], 0x1234: saved RAX
    0x67, 0xa0, 0x00, 0x10, 0x00, 0x00, // mov al, [0x1000]: the guest's code, through address space 1
    0xe6, 0x20, // out 0x20, al
];
const RSM: [u8; 2] = [0x0f, 0xaa];

fn anon(size: usize) -> *mut u8 {
    // SAFETY: a fresh anonymous mapping, never unmapped (the process is short-lived).
    unsafe {
        libc::mmap(std::ptr::null_mut(), size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    }
    .cast()
}

fn region(slot: u32, gpa: u64, size: usize, mem: *mut u8) -> kvm_userspace_memory_region {
    kvm_userspace_memory_region { slot, flags: 0, guest_phys_addr: gpa, memory_size: size as u64, userspace_addr: mem as u64 }
}

fn u32_at(smram: *const u8, offset: usize) -> u32 {
    // SAFETY: `offset` + 4 is inside the SMRAM mapping.
    unsafe { smram.add(offset).cast::<u32>().read_unaligned() }
}

fn u64_at(smram: *const u8, offset: usize) -> u64 {
    // SAFETY: `offset` + 8 is inside the SMRAM mapping.
    unsafe { smram.add(offset).cast::<u64>().read_unaligned() }
}

fn msr(vcpu: &VcpuFd, index: u32) -> String {
    let mut m = Msrs::from_entries(&[kvm_msr_entry { index, ..Default::default() }]).unwrap();
    match vcpu.get_msrs(&mut m) {
        Ok(1) => format!("{:#x}", m.as_slice()[0].data),
        r => format!("{:?}", r.map_err(|e| e.errno())),
    }
}

/// What userspace sees of SMM now.
fn state(name: &str, vcpu: &mut VcpuFd) {
    let e = vcpu.get_vcpu_events().unwrap();
    let s = vcpu.get_sregs().unwrap();
    let flags = vcpu.get_kvm_run().flags;
    println!("{name} smm {} pending {} inside_nmi {} latched_init {} valid_smm {} run_flags {flags:#x} nmi_masked {}",
             e.smi.smm, e.smi.pending, e.smi.smm_inside_nmi, e.smi.latched_init, e.flags >> 3 & 1, e.nmi.masked);
    println!("{name} cs {:#x}/{:#x} cr0 {:#x} cr4 {:#x} efer {:#x} smi_count {}", s.cs.selector, s.cs.base, s.cr0, s.cr4, s.efer, msr(vcpu, 0x34));
}

fn main() -> ExitCode {
    let Some(dev) = std::env::args().nth(1) else {
        eprintln!("usage: kvm-smm-check DEVICE");
        return ExitCode::from(2);
    };
    let kvm = Kvm::new_with_path(&CString::new(dev).unwrap()).expect("open device");
    println!("caps x86_smm {} multi_address_space {}", kvm.check_extension_raw(117), kvm.check_extension_raw(118));
    // SAFETY: the guest's symbols delimit its code.
    let (guest, ud, after_smi) = unsafe { (code(&smm_start, &smm_end), code(&smm_start, &smm_ud).len() as u64, code(&smm_start, &smm_after_smi).len() as u64) };
    let (vm, mem, enabled) = split::vm(&kvm, guest, &[(6, ud)]);
    println!("split_irqchip {enabled:?}");
    let smram = anon(SMRAM_SIZE);
    // SAFETY: the handler and RSM fit in the 64 KiB of SMRAM at 0x8000.
    unsafe {
        std::ptr::copy_nonoverlapping(HANDLER.as_ptr(), smram.add(0x8000), HANDLER.len());
        std::ptr::copy_nonoverlapping(RSM.as_ptr(), smram.add(0x8000 + HANDLER.len()), RSM.len());
    }
    // Address space 1: the guest's RAM again, and SMRAM; a third address space does not exist.
    // SAFETY: each region is a live mapping of at least its size.
    let set = |r| unsafe { vm.set_user_memory_region(r) }.map_err(|e| e.errno());
    println!("as1 ram {:?}", set(region(1 << 16, 0, 0x1_0000, mem)));
    println!("as1 smram {:?}", set(region(1 << 16 | 1, SMBASE, SMRAM_SIZE, smram)));
    println!("as1 overlap {:?}", set(region(1 << 16 | 2, SMBASE, 0x1000, smram)));
    println!("as2 {:?}", set(region(2 << 16, 0x10_0000, 0x1000, smram)));
    let mut vcpu = vm.create_vcpu(0).unwrap();
    println!("cpuid {:?}", split::set_cpuid(&vcpu));
    println!("long_mode {:?}", split::to_long_mode(&vcpu, 0x1000, 0x8000));
    println!("smbase {}", msr(&vcpu, 0x9e));
    state("reset", &mut vcpu);
    let mut smm_exits = 0;
    for i in 0..12 {
        let exit = match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => format!("io_out {port:#x} {:#x}", data[0]),
            Ok(VcpuExit::MmioRead(addr, data)) => {
                data.fill(0x5a);
                format!("mmio_read {addr:#x} len {}", data.len())
            }
            Ok(VcpuExit::Hlt) => "hlt".into(),
            Ok(other) => format!("other {other:?}"),
            Err(e) => format!("error {}", e.errno()),
        };
        let r = vcpu.get_regs().unwrap();
        println!("exit {i} {exit} rip {:#x} rax {:#x}", r.rip, r.rax);
        let port = exit.strip_prefix("io_out ").and_then(|p| p.get(..4));
        match port {
            Some("0x10") => {
                println!("smi {:?}", vcpu.smi().map_err(|e| e.errno()));
                state("smi_pending", &mut vcpu);
            }
            Some("0x20") => {
                state("in_smm", &mut vcpu);
                let map = |o: usize| u64_at(smram, o);
                println!("map revision {:#x} smbase {:#x} rip {:#x} (guest + {:#x}) rflags {:#x} cr0 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x} cs {:#x}",
                         u32_at(smram, 0xfefc), u32_at(smram, 0xff00), map(0xff78), map(0xff78).wrapping_sub(0x1000), map(0xff70),
                         map(0xff58), map(0xff50), map(0xff48), map(0xfed0), u32_at(smram, 0xfe10));
                // The first time, one more SMI: latched while in SMM, taken after RSM.
                smm_exits += 1;
                if smm_exits == 1 {
                    println!("smi_in_smm {:?}", vcpu.smi().map_err(|e| e.errno()));
                    state("in_smm_pending", &mut vcpu);
                }
            }
            Some("0x11") => {
                println!("after_rsm at guest + {after_smi:#x}: {}", r.rip == 0x1000 + after_smi);
                state("after_rsm", &mut vcpu);
            }
            _ => {}
        }
        if port == Some("0x13") || exit == "hlt" || exit.starts_with("error") || exit.starts_with("other") {
            break;
        }
    }
    state("end", &mut vcpu);
    // NMI blocking set and lifted by userspace between runs.
    // SAFETY: the guest's symbols delimit its code.
    let lp = unsafe { code(&smm_start, &smm_loop).len() as u64 };
    let mut r = vcpu.get_regs().unwrap();
    r.rip = 0x1000 + lp;
    vcpu.set_regs(&r).unwrap();
    for masked in [1, 0, 1, 0] {
        let mut e = vcpu.get_vcpu_events().unwrap();
        e.nmi.masked = masked;
        vcpu.set_vcpu_events(&e).unwrap();
        let _ = vcpu.run();
        let _ = vcpu.run();
        println!("nmi_masked set {masked} after two runs {}", vcpu.get_vcpu_events().unwrap().nmi.masked);
    }
    // An INIT latched in SMM (userspace's, through the events) waits for RSM: the handler runs
    // to its end, then the INIT resets the vCPU (the BSP: runnable at the reset vector, where
    // this VM has no memory).
    println!("smi {:?}", vcpu.smi().map_err(|e| e.errno()));
    let exit = |vcpu: &mut VcpuFd| match vcpu.run() {
        Ok(VcpuExit::IoOut(port, _)) => format!("io_out {port:#x}"),
        Ok(other) => format!("{other:?}").split('(').next().unwrap_or_default().to_string(),
        Err(e) => format!("error {}", e.errno()),
    };
    println!("init_in_smm exit {}", exit(&mut vcpu));
    let mut e = vcpu.get_vcpu_events().unwrap();
    e.smi.latched_init = 1;
    println!("latch_init {:?}", vcpu.set_vcpu_events(&e).map_err(|e| e.errno()));
    state("init_latched", &mut vcpu);
    println!("after_rsm_init exit {}", exit(&mut vcpu));
    let (r, s) = (vcpu.get_regs().unwrap(), vcpu.get_sregs().unwrap());
    println!("after_rsm_init rip {:#x} cs {:#x}/{:#x} mp_state {}", r.rip, s.cs.selector, s.cs.base, vcpu.get_mp_state().unwrap().mp_state);
    state("after_rsm_init", &mut vcpu);
    ExitCode::SUCCESS
}
