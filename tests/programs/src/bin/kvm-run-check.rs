//! Runs small real-mode guests through rust-vmm's `kvm-ioctls` and prints every exit and the
//! final registers as `key value` lines. tests/vm/suite.sh runs it on `/dev/rvmx` and
//! `/dev/kvm` in the same boot and requires identical output.
//!
//! Usage: kvm-run-check DEVICE

use std::{ffi::CString, process::ExitCode};

use kvm_ioctls::{Kvm, VcpuExit};
use rvmx_test_programs::{flat, guest, long_mode_guest, run, Guest};

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

    // A guest loop of 10000 iterations with in-kernel exits (CPUID) in between, then HLT
    // (three: the signal-mask test below runs it again and again).
    let lp = [
        0x66, 0xbe, 0x10, 0x27, 0x00, 0x00, // mov esi, 10000
        0x66, 0x31, 0xc0,       // xor eax, eax
        0x0f, 0xa2,             // cpuid
        0x66, 0x4e,             // dec esi
        0x75, 0xf7,             // jnz -9 (to xor)
        0xf4, 0xf4, 0xf4,
    ];
    let mut g = guest(&kvm, &lp);
    run("loop", &mut g, 4, 0);

    // KVM_SET_SIGNAL_MASK: the mask replaces the thread's during KVM_RUN. SIGUSR1 is blocked
    // in the thread and pending: unblocked by an empty vCPU mask, KVM_RUN ends with EINTR
    // before the guest runs; blocked in the vCPU mask too, the guest runs to HLT.
    {
        use std::os::fd::AsRawFd;
        extern "C" fn on_usr1(_: libc::c_int) {}
        // struct kvm_signal_mask { __u32 len; __u8 sigset[]; }: the set right after `len`.
        #[repr(C)]
        struct Mask {
            len: u32,
            set: [u32; 2],
        }
        let mask = |len: u32, set: u64| Some(Mask { len, set: [set as u32, (set >> 32) as u32] });
        const KVM_SET_SIGNAL_MASK: u64 = 0x4004_ae8b;
        // SAFETY: plain libc signal-set calls on a local set.
        let usr1 = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            set
        };
        // SAFETY: plain libc signal calls on this (single) thread.
        unsafe {
            libc::signal(libc::SIGUSR1, on_usr1 as *const () as usize);
            libc::pthread_sigmask(libc::SIG_BLOCK, &usr1, std::ptr::null_mut());
            libc::raise(libc::SIGUSR1);
        }
        // SAFETY: a plain query of this thread's pending signals.
        let pending = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigpending(&mut set);
            libc::sigismember(&set, libc::SIGUSR1)
        };
        println!("sigmask usr1_pending {pending}");
        // The CPUID loop above: the pending signal ends KVM_RUN on the way (both KVM and rvmx
        // look for signals between guest entries).
        let mut g = guest(&kvm, &lp);
        let fd = g.vcpu.as_raw_fd();
        let set_mask = |m: Option<Mask>| {
            let p = m.as_ref().map_or(std::ptr::null(), |m| m as *const Mask);
            // SAFETY: `p` is null or a kvm_signal_mask with its 8-byte set.
            let r = unsafe { libc::ioctl(fd, KVM_SET_SIGNAL_MASK as _, p) };
            if r < 0 { std::io::Error::last_os_error().raw_os_error().unwrap_or(0) } else { r }
        };
        let run_once = |g: &mut Guest| match g.vcpu.run() {
            Ok(VcpuExit::Hlt) => "hlt".to_string(),
            Ok(other) => format!("{other:?}"),
            Err(e) => format!("errno {}", e.errno()),
        };
        println!("sigmask bad_len {}", set_mask(mask(4, 0)));
        println!("sigmask empty {}", set_mask(mask(8, 0)));
        println!("sigmask run_unblocked {}", run_once(&mut g));
        println!("sigmask blocking {}", set_mask(mask(8, 1 << (libc::SIGUSR1 - 1))));
        println!("sigmask run_blocked {}", run_once(&mut g));
        println!("sigmask none {}", set_mask(None));
        println!("sigmask run_thread_mask {}", run_once(&mut g));
        // SAFETY: drops the pending signal (ignored), then unblocks it.
        unsafe {
            libc::signal(libc::SIGUSR1, libc::SIG_IGN);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &usr1, std::ptr::null_mut());
        }
    }

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

    // MOV to CR0 setting NE (a bit rvmx owns: exits and is emulated), reading CR0 back, then
    // setting CR4.VMXE: #GP (no nested VMX), with no IDT a triple fault.
    let cr = [
        0x0f, 0x20, 0xc0,                   // mov eax, cr0
        0x66, 0x83, 0xc8, 0x20,             // or eax, 0x20 (NE)
        0x0f, 0x22, 0xc0,                   // mov cr0, eax
        0x0f, 0x20, 0xc0,                   // mov eax, cr0
        0x66, 0xa3, 0x00, 0x20,             // mov [0x2000], eax
        0x0f, 0x20, 0xe0,                   // mov eax, cr4
        0x66, 0x0d, 0x00, 0x20, 0x00, 0x00, // or eax, 0x2000 (VMXE)
        0x0f, 0x22, 0xe0,                   // mov cr4, eax
        0xf4,
    ];
    let mut g = guest(&kvm, &cr);
    let mut s = g.vcpu.get_sregs().unwrap();
    s.idt.limit = 0;
    g.vcpu.set_sregs(&s).unwrap();
    run("cr", &mut g, 4, 0);
    // SAFETY: inside the mapping.
    println!("cr cr0_read_by_guest {:#x}", unsafe { g.mem.add(0x2000).cast::<u32>().read() });
    let s = g.vcpu.get_sregs().unwrap();
    println!("cr sregs cr0 {:#x} cr4 {:#x}", s.cr0, s.cr4);

    // x87/SSE state: set through KVM_SET_FPU, used and changed by the guest, read back. MXCSR
    // is not in it on KVM (reported 0, ignored on set: the guest keeps its own). Printed as
    // `info` lines: KVM nested in Bochs is no reference here (it loses XMM state set with
    // KVM_SET_FPU); tests/vm/suite.sh checks rvmx's values against the architecture instead.
    let fpu_code = [
        0x0f, 0x11, 0x06, 0x00, 0x30, // movups [0x3000], xmm0
        0x0f, 0x10, 0x0e, 0x00, 0x30, // movups xmm1, [0x3000]
        0xd9, 0xe8,                   // fld1
        0x0f, 0xae, 0x1e, 0x10, 0x30, // stmxcsr [0x3010]
        0xf4,
    ];
    let mut g = guest(&kvm, &fpu_code);
    let mut s = g.vcpu.get_sregs().unwrap();
    s.cr4 = 0x200; // OSFXSR
    g.vcpu.set_sregs(&s).unwrap();
    let mut f = g.vcpu.get_fpu().unwrap();
    println!("info fpu reset fcw {:#x} fsw {:#x} ftwx {:#x} mxcsr {:#x}", f.fcw, f.fsw, f.ftwx, f.mxcsr);
    f.xmm[0] = core::array::from_fn(|i| i as u8 + 1);
    f.mxcsr = 0x1f80 | 1 << 15; // flush-to-zero
    println!("info set_fpu {:?}", g.vcpu.set_fpu(&f).map_err(|e| e.errno()));
    run("info fpu", &mut g, 5, 0);
    // SAFETY: inside the mapping.
    println!("info fpu memory {:02x?}", unsafe { std::slice::from_raw_parts(g.mem.add(0x3000), 16) });
    // SAFETY: inside the mapping.
    println!("info fpu guest_mxcsr {:#x}", unsafe { g.mem.add(0x3010).cast::<u32>().read_unaligned() });
    let f = g.vcpu.get_fpu().unwrap();
    println!("info fpu after fcw {:#x} fsw {:#x} ftwx {:#x} mxcsr {:#x} st0 {:02x?} xmm1 {:02x?} last_ip {:#x}",
             f.fcw, f.fsw, f.ftwx, f.mxcsr, &f.fpr[0][..10], f.xmm[1], f.last_ip);
    let bad = kvm_bindings::kvm_fpu { mxcsr: 1 << 16, ..f };
    println!("info set_fpu_reserved_mxcsr {:?}", g.vcpu.set_fpu(&bad).map_err(|e| e.errno()));

    // 32-bit protected mode, no paging.
    let mut g = guest(&kvm, &[0xb8, 0x34, 0x12, 0x00, 0x00, 0xe7, 0x81, 0xf4]); // mov eax; out 0x81, eax; hlt
    let mut s = g.vcpu.get_sregs().unwrap();
    s.cs = flat(11, 8);
    (s.ds, s.es, s.fs, s.gs, s.ss) = (flat(3, 16), flat(3, 16), flat(3, 16), flat(3, 16), flat(3, 16));
    s.cr0 = 0x11; // PE, ET
    g.vcpu.set_sregs(&s).unwrap();
    run("protected32", &mut g, 4, 0);

    // 64-bit long mode with 4-level paging (identity, one 2-MiB page), set up through SREGS,
    // with a CPUID table of our own: CPUID answers come from it, long mode needs its LM bit.
    let lm = [
        0x31, 0xc0,                                     // xor eax, eax
        0x0f, 0xa2,                                     // cpuid
        0x89, 0x1c, 0x25, 0x00, 0x60, 0x00, 0x00,       // mov [0x6000], ebx
        0xb8, 0x01, 0x00, 0x00, 0x80,                   // mov eax, 0x80000001
        0x0f, 0xa2,                                     // cpuid
        0x89, 0x14, 0x25, 0x04, 0x60, 0x00, 0x00,       // mov [0x6004], edx
        0xb8, 0x40, 0x00, 0x00, 0x00,                   // mov eax, 0x40 (above the table)
        0x0f, 0xa2,                                     // cpuid
        0x89, 0x04, 0x25, 0x08, 0x60, 0x00, 0x00,       // mov [0x6008], eax
        0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // mov rax, imm64
        0xe7, 0x80,                                     // out 0x80, eax
        0xf4,                                           // hlt
    ];
    let mut g = long_mode_guest(&kvm, &lm, "long64");
    println!("get_cpuid2 {:?}", g.vcpu.get_cpuid2(4).map(|c| c.as_slice().len()).map_err(|e| e.errno()));
    println!("get_cpuid2_too_small {:?}", g.vcpu.get_cpuid2(2).map(|c| c.as_slice().len()).map_err(|e| e.errno()));
    run("long64", &mut g, 4, 0);
    // SAFETY: inside the mapping.
    let words: Vec<u32> = (0..3).map(|i| unsafe { g.mem.add(0x6000 + 4 * i).cast::<u32>().read() }).collect();
    println!("long64 cpuid_results {words:#x?}");
    let s = g.vcpu.get_sregs().unwrap();
    println!("long64 sregs cr0 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x} cs.l {}", s.cr0, s.cr3, s.cr4, s.efer, s.cs.l);

    // MSRs from the guest: WRMSR/RDMSR of LSTAR, RDMSR of EFER and PAT, then an MSR that does
    // not exist: #GP, and with no IDT a triple fault.
    let msr = [
        0xb9, 0x82, 0x00, 0x00, 0xc0,             // mov ecx, 0xc0000082 (LSTAR)
        0xb8, 0x78, 0x56, 0x34, 0x12,             // mov eax, 0x12345678
        0xba, 0xff, 0xff, 0xff, 0xff,             // mov edx, 0xffffffff
        0x0f, 0x30,                               // wrmsr
        0x31, 0xc0, 0x31, 0xd2,                   // xor eax, eax; xor edx, edx
        0x0f, 0x32,                               // rdmsr
        0x89, 0x04, 0x25, 0x10, 0x60, 0x00, 0x00, // mov [0x6010], eax
        0x89, 0x14, 0x25, 0x14, 0x60, 0x00, 0x00, // mov [0x6014], edx
        0xb9, 0x80, 0x00, 0x00, 0xc0,             // mov ecx, 0xc0000080 (EFER)
        0x0f, 0x32,                               // rdmsr
        0x89, 0x04, 0x25, 0x18, 0x60, 0x00, 0x00, // mov [0x6018], eax
        0xb9, 0x77, 0x02, 0x00, 0x00,             // mov ecx, 0x277 (PAT)
        0x0f, 0x32,                               // rdmsr
        0x89, 0x04, 0x25, 0x1c, 0x60, 0x00, 0x00, // mov [0x601c], eax
        0x89, 0x14, 0x25, 0x20, 0x60, 0x00, 0x00, // mov [0x6020], edx
        0xe6, 0x80,                               // out 0x80, al
        0xb9, 0x34, 0x12, 0x00, 0x00,             // mov ecx, 0x1234
        0x0f, 0x32,                               // rdmsr: #GP
        0xf4,
    ];
    let mut g = long_mode_guest(&kvm, &msr, "msr64");
    run("msr64", &mut g, 4, 0);
    // SAFETY: inside the mapping.
    let words: Vec<u32> = (0..5).map(|i| unsafe { g.mem.add(0x6010 + 4 * i).cast::<u32>().read() }).collect();
    println!("msr64 guest_reads {words:#x?}");
    // The same MSRs from userspace, after the guest ran.
    let mut msrs = kvm_bindings::Msrs::from_entries(&[
        kvm_bindings::kvm_msr_entry { index: 0xc000_0082, ..Default::default() },
        kvm_bindings::kvm_msr_entry { index: 0xc000_0080, ..Default::default() },
        kvm_bindings::kvm_msr_entry { index: 0x277, ..Default::default() },
        kvm_bindings::kvm_msr_entry { index: 0x1234, ..Default::default() },
    ]).unwrap();
    let n = g.vcpu.get_msrs(&mut msrs).map_err(|e| e.errno());
    let got: Vec<(u32, u64)> = msrs.as_slice().iter().map(|e| (e.index, e.data)).collect();
    println!("get_msrs {n:?} {got:#x?}");
    let set = kvm_bindings::Msrs::from_entries(&[
        kvm_bindings::kvm_msr_entry { index: 0xc000_0084, data: 0x4700, ..Default::default() }, // SFMASK
        kvm_bindings::kvm_msr_entry { index: 0xc000_0082, data: 1 << 63, ..Default::default() }, // non-canonical
        kvm_bindings::kvm_msr_entry { index: 0x277, data: 0x0606_0606_0606_0606, ..Default::default() },
    ]).unwrap();
    println!("set_msrs {:?}", g.vcpu.set_msrs(&set).map_err(|e| e.errno()));
    // IA32_MISC_ENABLE: reset value; userspace may set any value (QEMU writes 1 at reset).
    let misc = |g: &Guest| {
        let mut m = kvm_bindings::Msrs::from_entries(&[kvm_bindings::kvm_msr_entry { index: 0x1a0, ..Default::default() }]).unwrap();
        g.vcpu.get_msrs(&mut m).map(|_| m.as_slice()[0].data).map_err(|e| e.errno())
    };
    let before = misc(&g);
    let one = kvm_bindings::Msrs::from_entries(&[kvm_bindings::kvm_msr_entry { index: 0x1a0, data: 1, ..Default::default() }]).unwrap();
    let set = g.vcpu.set_msrs(&one).map_err(|e| e.errno());
    println!("misc_enable reset {before:x?} set_1 {set:?} after {:x?}", misc(&g));
    // kvmclock's MSRs as QEMU touches them at reset: read, then written with 0 (off).
    let mut clock = kvm_bindings::Msrs::from_entries(&[
        kvm_bindings::kvm_msr_entry { index: 0x11, ..Default::default() },
        kvm_bindings::kvm_msr_entry { index: 0x12, ..Default::default() },
    ]).unwrap();
    let n = g.vcpu.get_msrs(&mut clock).map_err(|e| e.errno());
    let values: Vec<u64> = clock.as_slice().iter().map(|e| e.data).collect();
    println!("kvmclock_msrs get {n:?} {values:x?} set_off {:?}", g.vcpu.set_msrs(&clock).map_err(|e| e.errno()));
    println!("info msr_index_list {:?}", kvm.get_msr_index_list().map(|l| l.as_slice().len()));

    // The supported CPUID table: its size is device-specific, E2BIG for too small an array.
    println!("info supported_cpuid {:?}", kvm.get_supported_cpuid(256).map(|c| c.as_slice().len()));
    println!("supported_cpuid_too_small {:?}", kvm.get_supported_cpuid(1).map(|c| c.as_slice().len()).map_err(|e| e.errno()));

    // immediate_exit: KVM_RUN returns EINTR at once.
    let mut g = guest(&kvm, &[0xf4]);
    g.vcpu.set_kvm_immediate_exit(1);
    run("immediate_exit", &mut g, 1, 0);
    ExitCode::SUCCESS
}
