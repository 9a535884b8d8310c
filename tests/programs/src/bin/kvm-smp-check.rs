//! A 2-vCPU guest whose bootstrap processor starts the other with INIT and SIPI, through a
//! userspace local-APIC model, on the KVM device given as the argument (`/dev/rvmx` or
//! `/dev/kvm`). Without an in-kernel LAPIC this is how a VMM runs SMP guests (QEMU with
//! `kernel-irqchip=off`): the ICR writes exit as MMIO, the VMM keeps the AP waiting for its
//! SIPI and then sets the AP's registers to the SIPI vector; `KVM_GET/SET_MP_STATE` only
//! know RUNNABLE then. Prints one line per fact; `info` lines may differ.

use std::{
    ffi::CString,
    process::ExitCode,
    sync::{mpsc, Arc},
};
use kvm_bindings::{kvm_mp_state, kvm_userspace_memory_region, KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_UNINITIALIZED};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use rvmx_test_programs::{code, flat};

/// The local APIC's interrupt command register (low, high) in the default APIC page.
const ICR_LOW: u64 = 0xfee0_0300;
const ICR_HIGH: u64 = 0xfee0_0310;
/// Guest RAM.
const MEM: usize = 0x10000;

// The BSP (32-bit protected mode, flat): INIT and SIPI (vector 8: the AP starts at 0x8000)
// to APIC ID 1, then waits for the AP's flag and reports the AP's value.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".code32",
    ".globl bsp_start", ".globl bsp_end",
    "bsp_start:",
    "mov dword ptr [0xfee00310], 0x01000000", // destination: APIC ID 1
    "mov dword ptr [0xfee00300], 0x00004500", // INIT
    "mov dword ptr [0xfee00300], 0x00004608", // STARTUP, vector 8
    "2:",
    // Each turn of the wait exits to userspace: KVM in Bochs lets a vCPU that spins without
    // exits starve the host's RCU kthread (a stall report), rvmx does not.
    "out 0x12, al",
    "cmp dword ptr [0x7000], 0x1234",
    "jne 2b",
    "mov eax, dword ptr [0x7004]",
    "out 0x10, eax",
    "hlt",
    "bsp_end:",
    ".code16",
    ".globl ap_start", ".globl ap_end",
    "ap_start:",                              // real mode, CS = 0x800
    "xor ax, ax",
    "mov ds, ax",
    "mov eax, cs",
    "mov dword ptr [0x7004], eax",            // the AP's CS: the SIPI vector's segment
    "mov dword ptr [0x7000], 0x1234",         // the flag the BSP waits for
    "out 0x11, al",
    "hlt",
    "ap_end:",
    ".popsection",
);

extern "C" {
    static bsp_start: u8;
    static bsp_end: u8;
    static ap_start: u8;
    static ap_end: u8;
}

/// What the userspace LAPIC model tells the AP's thread.
enum Ipi {
    Init,
    Startup(u8),
}

fn main() -> ExitCode {
    let Some(dev) = std::env::args().nth(1) else {
        eprintln!("usage: kvm-smp-check /dev/rvmx|/dev/kvm");
        return ExitCode::from(2);
    };
    let kvm = Kvm::new_with_path(&CString::new(dev).unwrap()).expect("open device");
    let vm = Arc::new(kvm.create_vm().expect("KVM_CREATE_VM"));
    // SAFETY: a fresh anonymous mapping, never unmapped (the process is short-lived).
    let mem = unsafe {
        libc::mmap(std::ptr::null_mut(), MEM, libc::PROT_READ | libc::PROT_WRITE,
                   libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    } as *mut u8;
    let (bsp_code, ap_code) = (code(unsafe { &bsp_start }, unsafe { &bsp_end }), code(unsafe { &ap_start }, unsafe { &ap_end }));
    // SAFETY: both fit in the mapping, at 0x1000 and 0x8000. Every page is written first, so
    // no guest access meets the shared zero page (KVM in Bochs took over a minute to break the
    // copy-on-write of a page the waiting BSP reads while the AP writes it).
    unsafe {
        std::ptr::write_bytes(mem, 0, MEM);
        std::ptr::copy_nonoverlapping(bsp_code.as_ptr(), mem.add(0x1000), bsp_code.len());
        std::ptr::copy_nonoverlapping(ap_code.as_ptr(), mem.add(0x8000), ap_code.len());
    }
    let region = kvm_userspace_memory_region { slot: 0, flags: 0, guest_phys_addr: 0, memory_size: MEM as u64, userspace_addr: mem as u64 };
    // SAFETY: the region is the mapping above.
    unsafe { vm.set_user_memory_region(region) }.expect("KVM_SET_USER_MEMORY_REGION");
    let bsp = vm.create_vcpu(0).expect("vCPU 0");
    let ap = vm.create_vcpu(1).expect("vCPU 1");

    // Without an in-kernel LAPIC only RUNNABLE exists: the model keeps "waiting for SIPI".
    println!("ap mp_state {:?}", ap.get_mp_state().map(|m| m.mp_state).map_err(|e| e.errno()));
    println!("ap set_mp_state_uninitialized {:?}",
             ap.set_mp_state(kvm_mp_state { mp_state: KVM_MP_STATE_UNINITIALIZED }).map_err(|e| e.errno()));

    let mut s = bsp.get_sregs().unwrap();
    s.cs = flat(11, 8);
    (s.ds, s.es, s.fs, s.gs, s.ss) = (flat(3, 16), flat(3, 16), flat(3, 16), flat(3, 16), flat(3, 16));
    s.cr0 = 0x11; // PE, ET
    bsp.set_sregs(&s).unwrap();
    let mut r = bsp.get_regs().unwrap();
    (r.rip, r.rflags) = (0x1000, 2);
    bsp.set_regs(&r).unwrap();

    let (tx, rx) = mpsc::channel::<Ipi>();
    let ap_thread = std::thread::spawn(move || run_ap(ap, rx));
    let bsp_log = run_bsp(bsp, tx);
    let ap_log = ap_thread.join().unwrap();
    bsp_log.iter().for_each(|l| println!("bsp {l}"));
    ap_log.iter().for_each(|l| println!("ap {l}"));
    // SAFETY: inside the mapping.
    println!("memory flag {:#x} value {:#x}", unsafe { mem.add(0x7000).cast::<u32>().read() }, unsafe { mem.add(0x7004).cast::<u32>().read() });
    ExitCode::SUCCESS
}

/// The BSP: its ICR writes go to the LAPIC model, which signals the AP's thread.
fn run_bsp(mut vcpu: VcpuFd, tx: mpsc::Sender<Ipi>) -> Vec<String> {
    let mut log = Vec::new();
    let mut icr_high = 0u32;
    let mut waits = 0u64;
    for _ in 0..1_000_000 {
        match vcpu.run() {
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                let v = u32::from_le_bytes(data.try_into().unwrap_or([0; 4]));
                match addr {
                    ICR_HIGH => icr_high = v,
                    ICR_LOW => {
                        let (mode, vector, dest) = ((v >> 8) & 7, v as u8, icr_high >> 24);
                        log.push(format!("icr mode {mode} vector {vector:#x} destination {dest}"));
                        if dest == 1 {
                            let _ = tx.send(if mode == 5 { Ipi::Init } else { Ipi::Startup(vector) });
                        }
                    }
                    _ => log.push(format!("mmio_write {addr:#x} {v:#x}")),
                }
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                data.fill(0);
                log.push(format!("mmio_read {addr:#x}"));
            }
            Ok(VcpuExit::IoOut(0x12, _)) => waits += 1, // how often depends on timing
            Ok(VcpuExit::IoOut(port, data)) => log.push(format!("io_out {port:#x} {data:02x?}")),
            last => {
                log.push(last_exit(last));
                break;
            }
        }
    }
    println!("info bsp waited {waits} turns");
    log
}

/// How a vCPU's run ended: HLT, an exit the loop does not expect, or an error.
fn last_exit(exit: Result<VcpuExit<'_>, kvm_ioctls::Error>) -> String {
    match exit {
        Ok(VcpuExit::Hlt) => "hlt".into(),
        Ok(other) => format!("other {other:?}"),
        Err(e) => format!("error {}", e.errno()),
    }
}

/// The AP: waits for INIT then SIPI as a processor in wait-for-SIPI does, starts at the
/// vector's page in real mode, runs to HLT.
fn run_ap(mut vcpu: VcpuFd, rx: mpsc::Receiver<Ipi>) -> Vec<String> {
    let mut log = Vec::new();
    let mut init = false;
    let vector = loop {
        match rx.recv() {
            Ok(Ipi::Init) => init = true,
            Ok(Ipi::Startup(v)) if init => break v,
            Ok(Ipi::Startup(_)) => log.push("sipi without init ignored".into()),
            Err(_) => return log,
        }
    };
    let mut s = vcpu.get_sregs().unwrap();
    s.cs.selector = (vector as u16) << 8;
    s.cs.base = (vector as u64) << 12;
    vcpu.set_sregs(&s).unwrap();
    let mut r = vcpu.get_regs().unwrap();
    r.rip = 0;
    vcpu.set_regs(&r).unwrap();
    log.push(format!("started at {:#x}", s.cs.base));
    println!("info ap mp_state_running {:?}", vcpu.get_mp_state().map(|m| m.mp_state == KVM_MP_STATE_RUNNABLE));
    for _ in 0..10 {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => log.push(format!("io_out {port:#x} {data:02x?}")),
            last => {
                log.push(last_exit(last));
                break;
            }
        }
    }
    let r = vcpu.get_regs().unwrap();
    log.push(format!("regs rax {:#x} rip {:#x}", r.rax, r.rip));
    log
}
