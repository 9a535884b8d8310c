//! Guest memory and I/O the VMM does not see exit by exit, on the KVM device given as the
//! argument (`/dev/rvmx` or `/dev/kvm`), printing one line per fact so the outputs can be
//! compared: dirty-page logging (`KVM_MEM_LOG_DIRTY_PAGES`, `KVM_GET_DIRTY_LOG`), ioeventfds
//! (`KVM_IOEVENTFD`) and machine-check injection (`KVM_X86_SETUP_MCE`, `KVM_X86_SET_MCE`).
//! Lines starting with `info` may differ between the two.

use std::{ffi::CString, os::fd::AsRawFd, process::ExitCode};
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::{Kvm, VcpuExit};
use rvmx_test_programs::{code, guest, Guest};

const fn ioc(dir: u32, nr: u32, size: usize) -> u64 {
    (dir << 30 | (size as u32) << 16 | 0xae << 8 | nr) as u64
}

/// An ioctl with a pointer argument: its return value or `-errno`.
fn raw<T>(fd: i32, cmd: u64, arg: *const T) -> i64 {
    // SAFETY: `cmd`'s argument is `arg`, which points to a live value of the right size (or
    // is deliberately bad: the kernel checks it).
    let r = unsafe { libc::ioctl(fd, cmd as _, arg) };
    if r < 0 { -(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as i64) } else { r as i64 }
}

// Dirty logging: slot 1 (16 pages at 0x10000) logs from the start, slot 2 (4 pages at 0x20000)
// from the first OUT on. Each OUT lets userspace read the logs.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".code16",
    ".globl dirty_start", ".globl dirty_end",
    "dirty_start:",
    "mov ax, 0x1000",
    "mov es, ax",                       // ES: slot 1
    "mov byte ptr es:[0x0000], 1",      // page 0
    "mov byte ptr es:[0x3000], 1",      // page 3
    "mov byte ptr es:[0x7ffc], 1",      // page 7
    "mov al, es:[0x5000]",              // page 5: read only
    "mov ax, 0x2000",
    "mov ds, ax",                       // DS: slot 2
    "mov byte ptr [0x0000], 2",         // mapped writable before logging starts
    "out 0x10, al",                     // userspace: logs; slot 2 starts logging
    "mov byte ptr [0x0000], 3",         // write-protected now: logged
    "mov byte ptr [0x2000], 3",
    "mov byte ptr es:[0x3000], 2",      // page 3 again, after the log was read
    "mov byte ptr es:[0x9000], 2",
    "mov al, es:[0x7000]",              // page 7: read only this round
    "out 0x11, al",                     // userspace: logs
    "mov ax, 0xe000",
    "mov ds, ax",                       // DS: no RAM (MMIO)
    "xor si, si",
    "mov di, 0xb000",
    "movsb",                            // MMIO to slot 1 page 11: written by the hypervisor
    "out 0x12, al",                     // userspace: logs
    "hlt",
    "dirty_end:",
    ".popsection",
);

// ioeventfds: each write either signals an eventfd (no exit) or exits.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".code16",
    ".globl iofd_start", ".globl iofd_end",
    "iofd_start:",
    "mov dx, 0x700",
    "mov al, 0x42",
    "out dx, al",                       // port 0x700, 1 byte, 0x42: eventfd A
    "mov al, 0x43",
    "out dx, al",                       // 0x43: eventfd B (registered as "other_value")
    "mov dx, 0x702",
    "mov ax, 0x1234",
    "out dx, ax",                       // port 0x702, 2 bytes, any value: eventfd B
    "out dx, al",                       // 1 byte: exits
    "mov ax, 0xe000",
    "mov ds, ax",
    "mov word ptr [0x10], 0x5678",      // MMIO 0xe0010, any width: eventfd C
    "mov dword ptr [0x10], 0x9abc",     // again, 4 bytes: eventfd C
    "mov dword ptr [0xffe], 0x11223344", // split: 0xe0ffe exits, 0xe1000 eventfd D
    "mov dword ptr [0x1ffe], 0x55667788", // split: 0xe1ffe eventfd D, 0xe2000 exits
    "mov byte ptr [0x20], 7",           // MMIO 0xe0020: exits
    "xor ax, ax",
    "mov ds, ax",
    "mov word ptr [0x500], 0x1234",
    "mov si, 0x500",
    "mov dx, 0x702",
    "outsw",                            // string output to port 0x702: eventfd B
    "mov dx, 0x700",
    "outsb",                            // 0x34 to port 0x700: exits
    "out 0x13, al",                     // userspace: deassigns A
    "mov dx, 0x700",
    "mov al, 0x42",
    "out dx, al",                       // exits now
    "hlt",
    "iofd_end:",
    ".popsection",
);

// Machine checks: the #MC handler (IVT vector 18) reports through port 0x18.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".code16",
    ".globl mce_start", ".globl mce_end", ".globl mce_handler",
    "mce_start:",
    "mov sp, 0x8000",
    "out 0x17, al",                     // userspace: KVM_X86_SET_MCE
    "nop",
    "hlt",
    "mce_handler:",
    "out 0x18, al",
    "hlt",
    "mce_end:",
    ".popsection",
);

extern "C" {
    static dirty_start: u8;
    static dirty_end: u8;
    static iofd_start: u8;
    static iofd_end: u8;
    static mce_start: u8;
    static mce_end: u8;
    static mce_handler: u8;
}

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: kvm-memory-check /dev/rvmx|/dev/kvm");
        return ExitCode::from(2);
    };
    let kvm = match Kvm::new_with_path(&CString::new(path.clone()).unwrap()) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("kvm-memory-check: cannot open {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    dirty_log(&kvm);
    ioeventfds(&kvm);
    machine_checks(&kvm);
    ExitCode::SUCCESS
}

/// A fresh anonymous mapping of `len` bytes (never unmapped: the process is short-lived).
fn mapping(len: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping.
    unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE,
                   libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) as *mut u8
    }
}

fn slot(g: &Guest, slot: u32, gpa: u64, mem: *mut u8, len: usize, flags: u32) -> Result<(), i32> {
    let region = kvm_userspace_memory_region { slot, flags, guest_phys_addr: gpa, memory_size: len as u64, userspace_addr: mem as u64 };
    // SAFETY: the region is a live mapping of `len` bytes.
    unsafe { g.vm.set_user_memory_region(region) }.map_err(|e| e.errno())
}

/// The pages the slot's log reports, as page numbers.
fn dirty_pages(g: &Guest, slot: u32, len: usize) -> Result<Vec<usize>, i32> {
    let words = g.vm.get_dirty_log(slot, len).map_err(|e| e.errno())?;
    Ok((0..words.len() * 64).filter(|p| words[p / 64] & (1 << (p % 64)) != 0).collect())
}

/// Runs to the next exit, printing it; false once the guest halted or failed.
fn step(name: &str, g: &mut Guest, data: &mut Vec<String>) -> bool {
    let line = match g.vcpu.run() {
        Ok(VcpuExit::IoOut(port, d)) => format!("io_out port {port:#x} data {d:02x?}"),
        Ok(VcpuExit::MmioWrite(addr, d)) => format!("mmio_write addr {addr:#x} data {d:02x?}"),
        Ok(VcpuExit::MmioRead(addr, d)) => {
            d.iter_mut().enumerate().for_each(|(i, b)| *b = 0xa0 + i as u8);
            format!("mmio_read addr {addr:#x} len {}", d.len())
        }
        Ok(VcpuExit::Hlt) => "hlt".to_string(),
        Ok(VcpuExit::Shutdown) => "shutdown".to_string(),
        Ok(other) => format!("other {other:?}"),
        Err(e) => format!("error errno {}", e.errno()),
    };
    println!("{name} {line}");
    let more = line.starts_with("io_out") || line.starts_with("mmio");
    data.push(line);
    more
}

fn dirty_log(kvm: &Kvm) {
    let mut g = guest(kvm, code(unsafe { &dirty_start }, unsafe { &dirty_end }));
    let (m1, m2) = (mapping(0x10000), mapping(0x4000));
    println!("dirty slot1_logging {:?}", slot(&g, 1, 0x10000, m1, 0x10000, KVM_MEM_LOG_DIRTY_PAGES));
    // Slot 2 through KVM_SET_USER_MEMORY_REGION2 (guest_memfd is for confidential VM types).
    let region2 = |flags: u32| kvm_bindings::kvm_userspace_memory_region2 {
        slot: 2, flags, guest_phys_addr: 0x20000, memory_size: 0x4000, userspace_addr: m2 as u64, ..Default::default()
    };
    let cmd2 = ioc(1, 0x49, size_of::<kvm_bindings::kvm_userspace_memory_region2>());
    println!("dirty slot2_region2_guest_memfd {}", raw(g.vm.as_raw_fd(), cmd2, &region2(1 << 2)));
    println!("dirty slot2_region2 {}", raw(g.vm.as_raw_fd(), cmd2, &region2(0)));
    println!("dirty before_run {:?}", dirty_pages(&g, 1, 0x10000));
    let mut exits = Vec::new();
    step("dirty", &mut g, &mut exits); // OUT 0x10
    println!("dirty round1 slot1 {:?}", dirty_pages(&g, 1, 0x10000));
    println!("dirty round1_again slot1 {:?}", dirty_pages(&g, 1, 0x10000));
    println!("dirty slot2_not_logging {:?}", dirty_pages(&g, 2, 0x4000));
    println!("dirty slot2_start_logging {:?}", slot(&g, 2, 0x20000, m2, 0x4000, KVM_MEM_LOG_DIRTY_PAGES));
    // SAFETY: inside slot 1's mapping. Userspace's own writes are not logged.
    unsafe { m1.add(0xd000).write(9) };
    step("dirty", &mut g, &mut exits); // OUT 0x11
    println!("dirty round2 slot1 {:?}", dirty_pages(&g, 1, 0x10000));
    println!("dirty round2 slot2 {:?}", dirty_pages(&g, 2, 0x4000));
    step("dirty", &mut g, &mut exits); // MMIO read of MOVSB
    step("dirty", &mut g, &mut exits); // OUT 0x12
    println!("dirty round3 slot1 {:?}", dirty_pages(&g, 1, 0x10000));
    step("dirty", &mut g, &mut exits); // HLT
    // SAFETY: inside the mappings: what the guest wrote arrived.
    let bytes = unsafe { [m1.read(), m1.add(0x3000).read(), m1.add(0x7ffc).read(), m1.add(0x9000).read(), m1.add(0xb000).read(), m2.read(), m2.add(0x2000).read()] };
    println!("dirty memory {bytes:02x?}");
    // Errors: no such address space or slot number, a slot that does not log, a bad bitmap.
    let log = |slot: u32, bitmap: u64| kvm_bindings::kvm_dirty_log { slot, padding1: 0, __bindgen_anon_1: kvm_bindings::kvm_dirty_log__bindgen_ty_1 { dirty_bitmap: bitmap as *mut _ } };
    let cmd = ioc(1, 0x42, size_of::<kvm_bindings::kvm_dirty_log>());
    let mut bitmap = [0u64; 1];
    let fd = g.vm.as_raw_fd();
    let bad_ids = [("address_space_1", 1 << 16 | 1, bitmap.as_mut_ptr() as u64), ("address_space_2", 2 << 16 | 1, 0), ("slot_509", 509, 0), ("slot_32764", 32764, 0)];
    for (what, s, b) in bad_ids.into_iter().chain([("absent_slot", 7, 0), ("not_logging", 0, 0), ("bad_bitmap", 1, 0x10)]) {
        println!("dirty get_log {what} {}", raw(fd, cmd, &log(s, b)));
    }
    println!("dirty readonly_and_logging {:?}", slot(&g, 3, 0x30000, m2, 0x4000, KVM_MEM_LOG_DIRTY_PAGES | kvm_bindings::KVM_MEM_READONLY));
    println!("dirty stop_logging {:?} then {:?}", slot(&g, 1, 0x10000, m1, 0x10000, 0), dirty_pages(&g, 1, 0x10000));
}

/// `struct kvm_ioeventfd` for `raw`.
fn ioeventfd(fd: i32, addr: u64, len: u32, flags: u32, datamatch: u64) -> kvm_bindings::kvm_ioeventfd {
    kvm_bindings::kvm_ioeventfd { datamatch, addr, len, fd, flags, ..Default::default() }
}

/// Reads (and resets) an eventfd's counter: 0 if it was never signalled.
fn count(efd: i32) -> u64 {
    let mut v = 0u64;
    // SAFETY: reads 8 bytes into `v` from a non-blocking eventfd.
    let n = unsafe { libc::read(efd, (&mut v as *mut u64).cast(), 8) };
    if n == 8 { v } else { 0 }
}

fn ioeventfds(kvm: &Kvm) {
    let mut g = guest(kvm, code(unsafe { &iofd_start }, unsafe { &iofd_end }));
    // SAFETY: plain eventfd(2) calls.
    let [a, b, c, d] = [0; 4].map(|_| unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) });
    let (datamatch, pio, deassign) = (1u32, 2u32, 4u32);
    let cmd = ioc(1, 0x79, size_of::<kvm_bindings::kvm_ioeventfd>());
    let fd = g.vm.as_raw_fd();
    let reg = |e: &kvm_bindings::kvm_ioeventfd| raw(fd, cmd, e);
    println!("iofd assign_a {}", reg(&ioeventfd(a, 0x700, 1, pio | datamatch, 0x42)));
    println!("iofd assign_b {}", reg(&ioeventfd(b, 0x702, 2, pio, 0)));
    println!("iofd assign_c {}", reg(&ioeventfd(c, 0xe0010, 0, 0, 0)));
    println!("iofd assign_d {}", reg(&ioeventfd(d, 0xe1000, 2, 0, 0)));
    println!("iofd assign_e {}", reg(&ioeventfd(d, 0xe1ffe, 2, 0, 0)));
    // Refusals, in KVM's order of checks.
    // SAFETY: opening /dev/null, a file that is not an eventfd.
    let not_eventfd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
    for (what, e) in [
        ("same_again", ioeventfd(a, 0x700, 1, pio | datamatch, 0x42)),
        ("any_value_over_a_value", ioeventfd(b, 0x700, 1, pio, 0)),
        ("other_value", ioeventfd(b, 0x700, 1, pio | datamatch, 0x43)),
        ("any_width_over_c", ioeventfd(a, 0xe0010, 4, 0, 0)),
        ("len_3", ioeventfd(a, 0x710, 3, pio, 0)),
        ("len_0_datamatch", ioeventfd(a, 0xe0100, 0, datamatch, 1)),
        ("unknown_flag", ioeventfd(a, 0x710, 1, pio | 1 << 5, 0)),
        ("addr_overflow", ioeventfd(a, u64::MAX - 1, 4, 0, 0)),
        ("bad_fd", ioeventfd(-1, 0x710, 1, pio, 0)),
        ("not_an_eventfd", ioeventfd(not_eventfd, 0x710, 1, pio, 0)),
        ("deassign_absent", ioeventfd(a, 0x710, 1, pio | deassign, 0)),
        ("deassign_wrong_fd", ioeventfd(b, 0x700, 1, pio | datamatch | deassign, 0x42)),
    ] {
        println!("iofd refuse {what} {}", reg(&e));
    }
    println!("iofd bad_pointer {}", raw(fd, cmd, 0x10 as *const kvm_bindings::kvm_ioeventfd));
    let mut exits = Vec::new();
    while step("iofd", &mut g, &mut exits) {
        if exits.last().is_some_and(|l| l.starts_with("io_out port 0x13")) {
            println!("iofd counts a {} b {} c {} d {}", count(a), count(b), count(c), count(d));
            println!("iofd deassign_a {}", reg(&ioeventfd(a, 0x700, 1, pio | datamatch | deassign, 0x42)));
        }
    }
    println!("iofd counts_after a {} b {} c {} d {}", count(a), count(b), count(c), count(d));
    let r = g.vcpu.get_regs().unwrap();
    println!("iofd regs rax {:#x} rdx {:#x} rip {:#x}", r.rax, r.rdx, r.rip);
}

fn machine_checks(kvm: &Kvm) {
    let kfd = kvm.as_raw_fd();
    // Feature MSRs: KVM lists some (ARCH_CAPABILITIES...), rvmx none.
    let mut list = [0u32; 65];
    list[0] = 64;
    let r = raw(kfd, ioc(3, 0x0a, 4), list.as_mut_ptr());
    println!("info feature_msrs {r} count {}", list[0]);
    println!("feature_msrs cap {}", kvm.check_extension_raw(153) > 0);
    // The microcode revision, a feature MSR on both: the host's value, then the vCPU's.
    let ucode = kvm_bindings::Msrs::from_entries(&[kvm_bindings::kvm_msr_entry { index: 0x8b, ..Default::default() }]).unwrap();
    let r = raw(kfd, ioc(3, 0x88, 8), ucode.as_fam_struct_ptr());
    println!("feature_msrs listed_ucode_rev {} read {r}", list[1..=list[0].min(64) as usize].contains(&0x8b));
    let mut supported = 0u64;
    let r = raw(kfd, ioc(2, 0x9d, 8), &mut supported as *mut u64);
    println!("info mce supported {r} {supported:#x}");
    println!("mce cap {}", kvm.check_extension_raw(31));
    let mut g = guest(kvm, code(unsafe { &mce_start }, unsafe { &mce_end }));
    let handler = (unsafe { &mce_handler } as *const u8 as usize - unsafe { &mce_start } as *const u8 as usize) as u16 + 0x1000;
    // SAFETY: IVT entry 18 inside the guest's RAM: offset, then segment 0.
    unsafe { g.mem.add(18 * 4).cast::<u32>().write(handler as u32) };
    let vfd = g.vcpu.as_raw_fd();
    let setup = |cap: u64| raw(vfd, ioc(1, 0x9c, 8), &cap);
    let msrs = |g: &Guest, list: &[u32]| {
        let mut m = kvm_bindings::Msrs::from_entries(&list.iter().map(|&index| kvm_bindings::kvm_msr_entry { index, ..Default::default() }).collect::<Vec<_>>()).unwrap();
        let n = g.vcpu.get_msrs(&mut m).map_err(|e| e.errno());
        (n, m.as_slice().iter().map(|e| e.data).collect::<Vec<u64>>())
    };
    println!("mce before_setup mcg_cap {:x?}", msrs(&g, &[0x179]));
    println!("ucode_rev vcpu {:x?}", msrs(&g, &[0x8b]));
    let set = kvm_bindings::Msrs::from_entries(&[kvm_bindings::kvm_msr_entry { index: 0x8b, data: 5 << 32, ..Default::default() }]).unwrap();
    println!("ucode_rev set {:?} then {:x?}", g.vcpu.set_msrs(&set).map_err(|e| e.errno()), msrs(&g, &[0x8b]));
    println!("mce setup_0_banks {} setup_33_banks {}", setup(0), setup(33));
    // CMCI, signalled through the in-kernel LAPIC when there is one, is offered in any case.
    println!("mce setup_cmci {}", setup(1 << 10 | 2));
    println!("mce setup_ctl_ser_2_banks {}", setup(1 << 8 | 1 << 24 | 2));
    println!("mce after_setup cap ctl mc0_ctl mc1_ctl {:x?}", msrs(&g, &[0x179, 0x17b, 0x400, 0x404]));
    println!("mce bank2_absent {:x?}", msrs(&g, &[0x408]));
    let mce = |bank: u8, status: u64, mcg_status: u64| kvm_bindings::kvm_x86_mce { status, addr: 0x1234_5000, misc: 0x86, mcg_status, bank, ..Default::default() };
    let set_mce = |m: &kvm_bindings::kvm_x86_mce| raw(vfd, ioc(1, 0x9e, size_of::<kvm_bindings::kvm_x86_mce>()), m);
    let (val, uc, s_bit) = (1u64 << 63, 1u64 << 61, 1u64 << 56);
    println!("mce set_bank2 {} set_not_valid {}", set_mce(&mce(2, val | uc | s_bit, 5)), set_mce(&mce(1, uc, 5)));
    // A corrected error is only recorded.
    println!("mce corrected {}", set_mce(&mce(0, val | 0x17, 0)));
    println!("mce mc0 status addr misc {:x?}", msrs(&g, &[0x401, 0x402, 0x403]));
    let mut sregs = g.vcpu.get_sregs().unwrap();
    sregs.cr4 |= 1 << 6; // CR4.MCE
    g.vcpu.set_sregs(&sregs).unwrap();
    let mut exits = Vec::new();
    step("mce", &mut g, &mut exits); // OUT 0x17
    println!("mce uncorrected {}", set_mce(&mce(1, val | uc | s_bit, 5)));
    step("mce", &mut g, &mut exits); // the handler's OUT 0x18
    println!("mce after_mc mcg_status mc1_status mc1_addr {:x?}", msrs(&g, &[0x17a, 0x405, 0x406]));
    // A second one while MCIP is set: shutdown at the next KVM_RUN.
    println!("mce while_in_progress {}", set_mce(&mce(1, val | uc | s_bit, 5)));
    step("mce", &mut g, &mut exits);
}
