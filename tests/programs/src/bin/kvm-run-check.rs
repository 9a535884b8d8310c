//! Runs small real-mode guests through rust-vmm's `kvm-ioctls` and prints every exit and the
//! final registers as `key value` lines. tests/vm/suite.sh runs it on `/dev/rvmx` and
//! `/dev/kvm` in the same boot and requires identical output.
//!
//! Usage: kvm-run-check DEVICE

use std::{ffi::CString, process::ExitCode};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

/// Guest memory: 64 KiB at guest-physical 0, code at 0x1000.
const MEM: usize = 0x10000;
const CODE: u64 = 0x1000;

struct Guest {
    _vm: VmFd,
    vcpu: VcpuFd,
    mem: *mut u8,
}

fn guest(kvm: &Kvm, code: &[u8]) -> Guest {
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    // SAFETY: a fresh anonymous mapping, never unmapped (the process is short-lived).
    let mem = unsafe {
        libc::mmap(std::ptr::null_mut(), MEM, libc::PROT_READ | libc::PROT_WRITE,
                   libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    } as *mut u8;
    // SAFETY: `code` fits in the mapping at offset 0x1000.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), mem.add(CODE as usize), code.len()) };
    let region = kvm_userspace_memory_region {
        slot: 0, flags: 0, guest_phys_addr: 0, memory_size: MEM as u64, userspace_addr: mem as u64,
    };
    // SAFETY: the region is the mapping above, alive for the process's life.
    unsafe { vm.set_user_memory_region(region) }.expect("KVM_SET_USER_MEMORY_REGION");
    let vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
    let mut sregs = vcpu.get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = CODE;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();
    Guest { _vm: vm, vcpu, mem }
}

/// Runs until HLT, shutdown or an error (at most `max` exits), printing each exit; IN
/// accesses read `in_value`.
fn run(name: &str, g: &mut Guest, max: usize, in_value: u8) {
    for i in 0..max {
        let line = match g.vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => format!("io_out port {port:#x} data {data:02x?}"),
            Ok(VcpuExit::IoIn(port, data)) => {
                data.iter_mut().for_each(|b| *b = in_value);
                format!("io_in port {port:#x} size {}", data.len())
            }
            Ok(VcpuExit::Hlt) => {
                println!("{name} exit {i} hlt");
                break;
            }
            Ok(VcpuExit::Shutdown) => {
                println!("{name} exit {i} shutdown");
                break;
            }
            Ok(other) => {
                println!("{name} exit {i} other {other:?}");
                break;
            }
            Err(e) => {
                println!("{name} exit {i} error errno {}", e.errno());
                break;
            }
        };
        println!("{name} exit {i} {line}");
    }
    let r = g.vcpu.get_regs().unwrap();
    println!("{name} regs rax {:#x} rbx {:#x} rcx {:#x} rdx {:#x} rip {:#x} rflags {:#x}", r.rax, r.rbx, r.rcx, r.rdx, r.rip, r.rflags);
}

fn main() -> ExitCode {
    let Some(dev) = std::env::args().nth(1) else {
        eprintln!("usage: kvm-run-check DEVICE");
        return ExitCode::from(2);
    };
    let kvm = Kvm::new_with_path(&CString::new(dev).unwrap()).expect("open device");

    // Port I/O both ways, a memory write, CPUID handled in the kernel, HLT.
    let io = [
        0xba, 0xf8, 0x03,       // mov dx, 0x3f8
        0xb0, 0x48,             // mov al, 'H'
        0xee,                   // out dx, al
        0xec,                   // in al, dx
        0x88, 0xc3,             // mov bl, al
        0xb8, 0x34, 0x12,       // mov ax, 0x1234
        0xe7, 0x80,             // out 0x80, ax
        0x66, 0xb8, 0x78, 0x56, 0x34, 0x12, // mov eax, 0x12345678
        0x66, 0xe7, 0x84,       // out 0x84, eax
        0x89, 0x1e, 0x00, 0x20, // mov [0x2000], bx
        0x66, 0x31, 0xc0,       // xor eax, eax
        0x0f, 0xa2,             // cpuid (handled in the kernel)
        0xf4,                   // hlt
    ];
    let mut g = guest(&kvm, &io);
    run("io", &mut g, 10, 0x42);
    // SAFETY: inside the mapping.
    println!("io memory_0x2000 {:#x}", unsafe { g.mem.add(0x2000).cast::<u16>().read_unaligned() });

    // VMCALL: no hypercalls, the guest gets -KVM_ENOSYS.
    let mut g = guest(&kvm, &[0x0f, 0x01, 0xc1, 0xf4]);
    run("vmcall", &mut g, 4, 0);

    // A VMX instruction in the guest: #UD, with no IDT: triple fault, KVM_EXIT_SHUTDOWN.
    let mut g = guest(&kvm, &[0x0f, 0x01, 0xc4, 0xf4]); // vmxoff
    let mut s = g.vcpu.get_sregs().unwrap();
    s.idt.limit = 0;
    g.vcpu.set_sregs(&s).unwrap();
    run("vmxoff", &mut g, 4, 0);

    // A guest loop of 10000 iterations with in-kernel exits (CPUID) in between.
    let lp = [
        0x66, 0xbe, 0x10, 0x27, 0x00, 0x00, // mov esi, 10000
        0x66, 0x31, 0xc0,       // xor eax, eax
        0x0f, 0xa2,             // cpuid
        0x66, 0x4e,             // dec esi
        0x75, 0xf7,             // jnz -9 (to xor)
        0xf4,
    ];
    let mut g = guest(&kvm, &lp);
    run("loop", &mut g, 4, 0);

    // A guest spinning in `jmp $`: a signal (SIGALRM after 200 ms) ends KVM_RUN with EINTR.
    // With IF=0 too, but only where asked (--if0-spin): KVM inside Bochs freezes the emulated
    // machine in that case, rvmx bounds its windows with the VMX-preemption timer.
    extern "C" fn on_alarm(_: libc::c_int) {}
    // SAFETY: installs a handler that does nothing, without SA_RESTART.
    unsafe { libc::signal(libc::SIGALRM, on_alarm as *const () as libc::sighandler_t) };
    let spins: &[(&str, u64)] = if std::env::args().any(|a| a == "--if0-spin") {
        &[("spin_if1", 0x202), ("spin_if0", 0x2)]
    } else {
        &[("spin_if1", 0x202)]
    };
    for &(name, rflags) in spins {
        let mut g = guest(&kvm, &[0xeb, 0xfe]); // jmp $
        let mut r = g.vcpu.get_regs().unwrap();
        r.rflags = rflags;
        g.vcpu.set_regs(&r).unwrap();
        let t = libc::itimerval {
            it_interval: libc::timeval { tv_sec: 0, tv_usec: 0 },
            it_value: libc::timeval { tv_sec: 0, tv_usec: 200_000 },
        };
        // SAFETY: arms a one-shot timer.
        unsafe { libc::setitimer(libc::ITIMER_REAL, &t, std::ptr::null_mut()) };
        run(name, &mut g, 1, 0);
        println!("{name} exit_reason_intr {}", g.vcpu.get_kvm_run().exit_reason == 10);
    }

    // immediate_exit: KVM_RUN returns EINTR at once.
    let mut g = guest(&kvm, &[0xf4]);
    g.vcpu.set_kvm_immediate_exit(1);
    run("immediate_exit", &mut g, 1, 0);
    ExitCode::SUCCESS
}
