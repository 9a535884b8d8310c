//! Lifetimes and concurrency on a KVM-compatible device, through kvm-ioctls. Prints `key
//! value` lines that must be the same on `/dev/rvmx` and `/dev/kvm` (tests/vm/suite.sh):
//! create/run/destroy cycles, fds closed in every order, a process killed in the middle of
//! KVM_RUN, two VMs of two vCPUs running at once on threads that migrate between CPUs, and no
//! guest page left pinned afterwards.
//!
//! Usage: kvm-stress-check DEVICE [CYCLES]

use std::{ffi::CString, process::ExitCode, thread, time::Duration};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use rvmx_test_programs::pin_to;

const MEM: usize = 0x10000;

/// A VM with 64 KiB at 0 holding `code` at 0x1000, and `vcpus` vCPUs starting there.
fn vm_with(kvm: &Kvm, code: &[u8], vcpus: u64) -> (VmFd, Vec<VcpuFd>, *mut u8) {
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    // SAFETY: a fresh anonymous mapping; unmapped by `unmap` or at exit.
    let mem = unsafe {
        libc::mmap(std::ptr::null_mut(), MEM, libc::PROT_READ | libc::PROT_WRITE,
                   libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    } as *mut u8;
    // SAFETY: `code` fits at 0x1000 in the mapping.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), mem.add(0x1000), code.len()) };
    let region = kvm_userspace_memory_region {
        slot: 0, flags: 0, guest_phys_addr: 0, memory_size: MEM as u64, userspace_addr: mem as u64,
    };
    // SAFETY: the region is the mapping above.
    unsafe { vm.set_user_memory_region(region) }.expect("slot");
    let cpus = (0..vcpus)
        .map(|id| {
            let v = vm.create_vcpu(id).expect("KVM_CREATE_VCPU");
            let mut s = v.get_sregs().unwrap();
            s.cs.base = 0;
            s.cs.selector = 0;
            v.set_sregs(&s).unwrap();
            let mut r = v.get_regs().unwrap();
            r.rip = 0x1000;
            r.rflags = 0x2;
            r.rbx = id;
            v.set_regs(&r).unwrap();
            v
        })
        .collect();
    (vm, cpus, mem)
}

fn unmap(mem: *mut u8) {
    // SAFETY: `mem` is a MEM-byte mapping made by `vm_with`, no longer used.
    unsafe { libc::munmap(mem.cast(), MEM) };
}

/// Runs until HLT; returns the number of exits, or the error.
fn run_to_hlt(v: &mut VcpuFd) -> Result<u32, i32> {
    for n in 1..1_000_000 {
        match v.run() {
            Ok(VcpuExit::Hlt) => return Ok(n),
            Ok(VcpuExit::IoOut(..)) => {}
            Ok(other) => panic!("unexpected exit {other:?}"),
            Err(e) => return Err(e.errno()),
        }
    }
    Err(0)
}

/// Writes 4 pages (0x2000, 0x3000, 0x4000, 0x5000) and halts.
const TOUCH: [u8; 17] = [
    0x89, 0x1e, 0x00, 0x20, // mov [0x2000], bx
    0x89, 0x1e, 0x00, 0x30, // mov [0x3000], bx
    0x89, 0x1e, 0x00, 0x40, // mov [0x4000], bx
    0x89, 0x1e, 0x00, 0x50, // mov [0x5000], bx
    0xf4,
];

/// Counts 200000 iterations with an OUT every 65536 (4 exits to userspace) and halts.
const COUNT: [u8; 25] = [
    0x66, 0xbe, 0x40, 0x0d, 0x03, 0x00,       // 1000: mov esi, 200000
    0x66, 0x4e,                               // 1006: dec esi
    0x66, 0xf7, 0xc6, 0xff, 0xff, 0x00, 0x00, // 1008: test esi, 0xffff
    0x75, 0xf5,                               // 100f: jnz 1006
    0xe6, 0x80,                               // 1011: out 0x80, al
    0x66, 0x85, 0xf6,                         // 1013: test esi, esi
    0x75, 0xee,                               // 1016: jnz 1006
    0xf4,                                     // 1018: hlt
];

/// Pages pinned with FOLL_PIN and not yet released, system-wide (rvmx pins guest memory;
/// KVM does not pin), as an `info` line after `phase`.
fn pins(phase: &str) {
    // The counters are per-CPU until folded: fold them first.
    let _ = std::fs::write("/proc/sys/vm/stat_refresh", "1");
    let vmstat = std::fs::read_to_string("/proc/vmstat").unwrap_or_default();
    let get = |k: &str| -> i64 {
        vmstat.lines().find_map(|l| l.strip_prefix(k)?.trim().parse().ok()).unwrap_or(0)
    };
    println!("info pinned_after_{phase} {}", get("nr_foll_pin_acquired ") - get("nr_foll_pin_released "));
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(dev) = args.get(1) else {
        eprintln!("usage: kvm-stress-check DEVICE [CYCLES]");
        return ExitCode::from(2);
    };
    let cycles: usize = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(200);
    let kvm = Kvm::new_with_path(&CString::new(dev.as_str()).unwrap()).expect("open device");

    // Create, run (4 pages faulted in), destroy, many times.
    let mut ok = 0;
    for i in 0..cycles {
        let (vm, mut cpus, mem) = vm_with(&kvm, &TOUCH, 1);
        cpus[0].set_regs(&{ let mut r = cpus[0].get_regs().unwrap(); r.rbx = i as u64; r }).unwrap();
        if run_to_hlt(&mut cpus[0]).is_ok() && unsafe { mem.add(0x5000).read() } == i as u8 {
            ok += 1;
        }
        // Close orders alternate: vCPU first, or VM first.
        if i % 2 == 0 {
            drop(cpus);
            drop(vm);
        } else {
            drop(vm);
            drop(cpus);
        }
        unmap(mem);
    }
    println!("cycles_ok {}", ok == cycles);
    pins("cycles");

    // A vCPU keeps running after its VM fd is closed (it holds the VM).
    let (vm, mut cpus, mem) = vm_with(&kvm, &TOUCH, 1);
    drop(vm);
    println!("run_after_vm_fd_closed {:?}", run_to_hlt(&mut cpus[0]).map(|_| "hlt"));
    drop(cpus);
    unmap(mem);
    pins("vm_fd_closed_first");

    // A process killed in the middle of KVM_RUN (guest spinning) leaves nothing behind.
    // The parent sleeps on CPU 0, the child spins on the last CPU: under Bochs a CPU that
    // spins in a KVM guest may not take its timer interrupt, and the parent's wake-up timer
    // must not be queued there.
    let ncpu = thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    pin_to(Some(0));
    // SAFETY: the child only runs the guest; the parent kills and reaps it.
    match unsafe { libc::fork() } {
        0 => {
            pin_to(Some(ncpu - 1));
            let kvm = Kvm::new_with_path(&CString::new(dev.as_str()).unwrap()).unwrap();
            let (_vm, mut cpus, _mem) = vm_with(&kvm, &[0x89, 0x1e, 0x00, 0x20, 0xeb, 0xfe], 1);
            let _ = cpus[0].run();
            // SAFETY: leave without destructors (unreachable in practice).
            unsafe { libc::_exit(1) };
        }
        pid => {
            thread::sleep(Duration::from_millis(300));
            let mut status = 0;
            // SAFETY: kills and reaps the child forked above.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            pin_to(None);
            println!("killed_mid_run {}", libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
            pins("kill");
        }
    }

    // Two VMs, two vCPUs each, running at once; their threads hop between CPUs.
    let mut handles = Vec::new();
    let mut keep = Vec::new();
    for _ in 0..2 {
        let (vm, cpus, mem) = vm_with(&kvm, &COUNT, 2);
        keep.push((vm, mem));
        for mut v in cpus {
            handles.push(thread::spawn(move || {
                let ncpu = thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
                let mut result = Err(0);
                let mut exits = 0;
                for turn in 0.. {
                    // Move to the next CPU before every run: the vCPU migrates constantly.
                    pin_to(Some(turn % ncpu));
                    match v.run() {
                        Ok(VcpuExit::IoOut(..)) => exits += 1,
                        Ok(VcpuExit::Hlt) => {
                            result = Ok(exits);
                            break;
                        }
                        Ok(other) => panic!("unexpected exit {other:?}"),
                        Err(e) => {
                            result = Err(e.errno());
                            break;
                        }
                    }
                }
                (result, v.get_regs().unwrap().rbx)
            }));
        }
    }
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    println!("concurrent_vcpus {results:?}");
    for (vm, mem) in keep {
        drop(vm);
        unmap(mem);
    }
    pins("concurrent");
    ExitCode::SUCCESS
}
