//! Drives a KVM-compatible device through rust-vmm's `kvm-ioctls`, unmodified, and prints every
//! answer as a `key value` line. tests/vm/suite.sh runs it on `/dev/rvmx` and `/dev/kvm` in the
//! same boot and requires identical lines, except `info` lines (device-specific limits).
//!
//! Usage: kvm-vm-check DEVICE

use std::{ffi::CString, os::fd::AsRawFd, process::ExitCode};

use kvm_bindings::{kvm_regs, kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::{Cap, Kvm, VmFd};

/// `Ok` as "ok", an error as its errno name.
fn show<T>(r: Result<T, kvm_ioctls::Error>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => errno_name(e.errno()),
    }
}

fn errno_name(e: i32) -> String {
    match e {
        libc::EINVAL => "EINVAL",
        libc::EEXIST => "EEXIST",
        libc::ENOTTY => "ENOTTY",
        libc::EFAULT => "EFAULT",
        libc::EIO => "EIO",
        libc::ENOMEM => "ENOMEM",
        libc::E2BIG => "E2BIG",
        libc::ENODEV => "ENODEV",
        _ => return format!("errno{e}"),
    }
    .into()
}

/// A raw ioctl with an integer argument: its return value or errno name.
fn raw(fd: i32, cmd: u32, arg: u64) -> String {
    // SAFETY: the requests used here take an integer, nothing, or a pointer the kernel checks
    // (the bad-pointer tests); none writes memory the program owns.
    let r = unsafe { libc::ioctl(fd, cmd as _, arg) };
    if r < 0 { errno_name(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)) } else { r.to_string() }
}

fn region(slot: u32, gpa: u64, size: u64, uaddr: u64, flags: u32) -> kvm_userspace_memory_region {
    kvm_userspace_memory_region { slot, flags, guest_phys_addr: gpa, memory_size: size, userspace_addr: uaddr }
}

fn set_region(vm: &VmFd, r: kvm_userspace_memory_region) -> String {
    // SAFETY: the regions point into `mem` (kept alive by the caller) or are refused.
    show(unsafe { vm.set_user_memory_region(r) })
}

/// Reads the byte at `addr` in a child process: "ok", or the signal that killed it.
fn touch(addr: usize) -> String {
    // SAFETY: the child only reads one byte and exits; the parent waits for it.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            std::ptr::read_volatile(addr as *const u8);
            libc::_exit(0);
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        match (libc::WIFSIGNALED(status), libc::WTERMSIG(status)) {
            (true, libc::SIGBUS) => "SIGBUS".into(),
            (true, libc::SIGSEGV) => "SIGSEGV".into(),
            (true, sig) => format!("signal{sig}"),
            _ => "ok".into(),
        }
    }
}

/// mmap of the vCPU fd: any length and page offset maps (as KVM); pages past the area (run,
/// PIO data, coalesced MMIO) have nothing behind them.
fn vcpu_area(fd: i32) {
    for (what, pages, pgoff) in [("whole", 3usize, 0i64), ("longer", 5, 0), ("from_page_1", 2, 1), ("beyond", 2, 7)] {
        let len = pages * 4096;
        // SAFETY: a new shared mapping of the vCPU fd, unmapped below.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, pgoff * 4096) };
        if p == libc::MAP_FAILED {
            println!("vcpu_mmap {what} {}", errno_name(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)));
            continue;
        }
        let touched: Vec<_> = (0..pages).map(|k| touch(p as usize + k * 4096)).collect();
        println!("vcpu_mmap {what} ok touch {}", touched.join(" "));
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(p, len) };
    }
}

fn main() -> ExitCode {
    let Some(dev) = std::env::args().nth(1) else {
        eprintln!("usage: kvm-vm-check DEVICE");
        return ExitCode::from(2);
    };
    let kvm = match Kvm::new_with_path(&CString::new(dev.clone()).unwrap()) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("kvm-vm-check: {dev}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("create_vm_type_1 {}", raw(kvm.as_raw_fd(), 0xae01, 1));
    let vm = match kvm.create_vm() {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("kvm-vm-check: KVM_CREATE_VM: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("create_vm ok");
    for cap in [Cap::UserMemory, Cap::SetTssAddr, Cap::CheckExtensionVm] {
        println!("vm_check_extension {cap:?} {}", vm.check_extension(cap));
    }
    let max_vcpu_id = kvm.get_max_vcpu_id() as u64;
    println!("info max_vcpu_id {max_vcpu_id} max_vcpus {} nr_memslots {}", kvm.get_max_vcpus(), kvm.get_nr_memslots());

    // Memory slots: 64 KiB of anonymous memory and KVM's rules for changing slots.
    let size = 0x10000usize;
    // SAFETY: a fresh private anonymous mapping, unmapped at exit.
    let mem = unsafe {
        libc::mmap(std::ptr::null_mut(), size * 2, libc::PROT_READ | libc::PROT_WRITE,
                   libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    } as u64;
    let cases = [
        ("slot0_create", region(0, 0, 0x10000, mem, 0)),
        ("slot0_again_unchanged", region(0, 0, 0x10000, mem, 0)),
        ("slot1_overlap", region(1, 0x8000, 0x10000, mem + 0x10000, 0)),
        ("slot1_adjacent", region(1, 0x10000, 0x10000, mem + 0x10000, 0)),
        ("slot2_gpa_misaligned", region(2, 0x20800, 0x1000, mem, 0)),
        ("slot2_size_misaligned", region(2, 0x20000, 0x800, mem, 0)),
        ("slot2_uaddr_misaligned", region(2, 0x20000, 0x1000, mem + 8, 0)),
        ("slot2_bad_flag", region(2, 0x20000, 0x1000, mem, 1 << 7)),
        ("slot2_gpa_wraps", region(2, u64::MAX & !0xfff, 0x2000, mem, 0)),
        ("slot2_kernel_uaddr", region(2, 0x20000, 0x1000, 0xffff_8000_0000_0000, 0)),
        ("slot2_huge_slot_number", region(0x7fff, 0x20000, 0x1000, mem, 0)),
        ("slot0_resize", region(0, 0, 0x20000, mem, 0)),
        ("slot0_new_uaddr", region(0, 0, 0x10000, mem + 0x10000, 0)),
        ("slot0_make_readonly", region(0, 0, 0x10000, mem, KVM_MEM_READONLY)),
        ("slot0_move_onto_slot1", region(0, 0x18000, 0x10000, mem, 0)),
        ("slot0_move", region(0, 0x100000, 0x10000, mem, 0)),
        ("slot0_delete", region(0, 0, 0, 0, 0)),
        ("slot0_delete_again", region(0, 0, 0, 0, 0)),
        ("slot0_recreate", region(0, 0, 0x10000, mem, 0)),
        ("slot3_readonly", region(3, 0x40000, 0x1000, mem, KVM_MEM_READONLY)),
    ];
    for (name, r) in cases {
        println!("{name} {}", set_region(&vm, r));
    }
    // Address space 1 is SMM's (KVM_CAP_MULTI_ADDRESS_SPACE = 2): its slots may overlap those of
    // address space 0; there is no address space 2.
    println!("slot_address_space_1 {}", set_region(&vm, region(1 << 16, 0x20000, 0x1000, mem, 0)));
    println!("slot_address_space_2 {}", set_region(&vm, region(2 << 16, 0x20000, 0x1000, mem, 0)));
    println!("set_tss_addr {}", show(vm.set_tss_address(0xfffb_d000)));
    println!("set_tss_addr_too_high {}", raw(vm.as_raw_fd(), 0xae47, 0xffff_f000));
    println!("set_identity_map_addr {}", show(vm.set_identity_map_address(0xfffb_c000)));

    // vCPUs.
    let mut vcpu = match vm.create_vcpu(0) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("kvm-vm-check: KVM_CREATE_VCPU: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("create_vcpu_0 ok");
    println!("create_vcpu_0_again {}", show(vm.create_vcpu(0)));
    println!("create_vcpu_max_id {}", show(vm.create_vcpu(max_vcpu_id)));
    println!("create_vcpu_huge_id {}", show(vm.create_vcpu(1 << 40)));
    println!("set_identity_map_after_vcpu {}", show(vm.set_identity_map_address(0xfffb_c000)));
    println!("kvm_run_exit_reason {}", vcpu.get_kvm_run().exit_reason);
    vcpu_area(vcpu.as_raw_fd());

    let regs = vcpu.get_regs().unwrap();
    println!("reset_regs rip {:#x} rflags {:#x} rdx {:#x} rsp {:#x} rax {:#x}", regs.rip, regs.rflags, regs.rdx, regs.rsp, regs.rax);
    let s = vcpu.get_sregs().unwrap();
    for (name, seg) in [("cs", s.cs), ("ds", s.ds), ("ss", s.ss), ("tr", s.tr), ("ldt", s.ldt)] {
        println!(
            "reset_{name} sel {:#x} base {:#x} limit {:#x} type {} p {} s {} dpl {} db {} l {} g {} avl {} unusable {}",
            seg.selector, seg.base, seg.limit, seg.type_, seg.present, seg.s, seg.dpl, seg.db, seg.l, seg.g, seg.avl, seg.unusable
        );
    }
    println!("reset_gdt {:#x} {:#x} idt {:#x} {:#x}", s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit);
    println!("reset_cr cr0 {:#x} cr2 {:#x} cr3 {:#x} cr4 {:#x} cr8 {:#x} efer {:#x} apic_base {:#x}", s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer, s.apic_base);

    let mut r = kvm_regs { rax: 0x1234, rbx: 5, rip: 0x1000, rflags: 0, rsp: 0x8000, ..Default::default() };
    println!("set_regs {}", show(vcpu.set_regs(&r)));
    r = vcpu.get_regs().unwrap();
    println!("regs_roundtrip rax {:#x} rbx {:#x} rip {:#x} rflags {:#x} rsp {:#x}", r.rax, r.rbx, r.rip, r.rflags, r.rsp);
    let mut lm = s;
    lm.cr0 = 0x8000_0011;
    lm.efer = 0x500;
    lm.cr4 = 0;
    println!("set_sregs_long_mode_without_pae {}", show(vcpu.set_sregs(&lm)));
    lm.cr4 = 0x20;
    lm.cr3 = 0x1000;
    lm.cs.l = 1;
    println!("set_sregs_long_mode {}", show(vcpu.set_sregs(&lm)));
    let back = vcpu.get_sregs().unwrap();
    println!("sregs_roundtrip cr0 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x} cs.l {}", back.cr0, back.cr3, back.cr4, back.efer, back.cs.l);

    // Requests each fd does not know.
    for cmd in [0xaeffu32, 0x1234] {
        println!("vm_unknown_ioctl {cmd:#x} {}", raw(vm.as_raw_fd(), cmd, 0));
        println!("vcpu_unknown_ioctl {cmd:#x} {}", raw(vcpu.as_raw_fd(), cmd, 0));
    }
    println!("vcpu_fd_create_vcpu {}", raw(vcpu.as_raw_fd(), 0xae41, 1));

    // Bad pointers: EFAULT from every request that reads or writes user memory, never a
    // crash. An unmapped user address, and a kernel one.
    use kvm_bindings as kb;
    use std::mem::size_of;
    const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
        dir << 30 | (size as u32) << 16 | 0xae << 8 | nr
    }
    let (w, r, wr) = (1, 2, 3);
    let requests = [
        ("system", kvm.as_raw_fd(), "get_supported_cpuid", ioc(wr, 0x05, size_of::<kb::kvm_cpuid2>())),
        ("system", kvm.as_raw_fd(), "get_msr_index_list", ioc(wr, 0x02, 4)),
        ("vm", vm.as_raw_fd(), "set_user_memory_region", ioc(w, 0x46, size_of::<kb::kvm_userspace_memory_region>())),
        ("vm", vm.as_raw_fd(), "set_gsi_routing", ioc(w, 0x6a, size_of::<kb::kvm_irq_routing>())),
        ("vcpu", vcpu.as_raw_fd(), "get_regs", ioc(r, 0x81, size_of::<kb::kvm_regs>())),
        ("vcpu", vcpu.as_raw_fd(), "set_regs", ioc(w, 0x82, size_of::<kb::kvm_regs>())),
        ("vcpu", vcpu.as_raw_fd(), "get_sregs", ioc(r, 0x83, size_of::<kb::kvm_sregs>())),
        ("vcpu", vcpu.as_raw_fd(), "set_sregs", ioc(w, 0x84, size_of::<kb::kvm_sregs>())),
        ("vcpu", vcpu.as_raw_fd(), "get_msrs", ioc(wr, 0x88, size_of::<kb::kvm_msrs>())),
        ("vcpu", vcpu.as_raw_fd(), "set_msrs", ioc(w, 0x89, size_of::<kb::kvm_msrs>())),
        ("vcpu", vcpu.as_raw_fd(), "set_signal_mask", ioc(w, 0x8b, size_of::<kb::kvm_signal_mask>())),
        ("vcpu", vcpu.as_raw_fd(), "get_fpu", ioc(r, 0x8c, size_of::<kb::kvm_fpu>())),
        ("vcpu", vcpu.as_raw_fd(), "set_fpu", ioc(w, 0x8d, size_of::<kb::kvm_fpu>())),
        ("vcpu", vcpu.as_raw_fd(), "set_cpuid2", ioc(w, 0x90, size_of::<kb::kvm_cpuid2>())),
        ("vcpu", vcpu.as_raw_fd(), "get_cpuid2", ioc(wr, 0x91, size_of::<kb::kvm_cpuid2>())),
    ];
    for (fd_kind, fd, name, cmd) in requests {
        for (what, ptr) in [("unmapped", 0x10u64), ("kernel", 0xffff_8880_0000_0000)] {
            println!("bad_pointer {fd_kind} {name} {what} {}", raw(fd, cmd, ptr));
        }
    }

    // GSI routing needs an in-kernel irqchip (QEMU only checks the capability without one).
    let routing = kb::kvm_irq_routing::default();
    println!("set_gsi_routing_without_irqchip {}",
        raw(vm.as_raw_fd(), ioc(w, 0x6a, size_of::<kb::kvm_irq_routing>()), &routing as *const _ as u64));

    // A forked child shares the fds but not the address space: KVM refuses it with EIO.
    // SAFETY: the child only makes ioctls and exits.
    match unsafe { libc::fork() } {
        0 => {
            let code = if vm.create_vcpu(1).err().map(|e| e.errno()) == Some(libc::EIO)
                && vcpu.get_regs().err().map(|e| e.errno()) == Some(libc::EIO) { 0 } else { 1 };
            // SAFETY: leaves the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        pid => {
            let mut status = 0;
            // SAFETY: waits for the child just forked.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            println!("forked_child_gets_eio {}", libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        }
    }
    ExitCode::SUCCESS
}
