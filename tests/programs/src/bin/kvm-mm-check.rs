//! Guest memory follows the host mapping behind its slots, as on KVM (`KVM_CAP_SYNC_MMU`): on
//! the KVM device given as the argument (`/dev/rvmx` or `/dev/kvm`), a guest reads and writes
//! slot memory while its VMM replaces, discards, write-protects, unmaps, forks and punches
//! holes in it, and a large guest touches well over 1 GiB of 4 GiB of slots. One line per
//! fact, so the outputs on the two devices can be compared; lines starting with `info` may
//! differ.
//!
//!   kvm-mm-check DEVICE                the VMM changes the memory behind a slot
//!   kvm-mm-check DEVICE large          a guest touching 1.25 GiB of 4 GiB of slots, a 256 GiB
//!                                      dirty-logging slot
//!   kvm-mm-check DEVICE slots [N]      N one-page slots (default: the most a VM may have)

use std::{ffi::CString, process::ExitCode};
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::{Kvm, VcpuExit};
use rvmx_test_programs::{code, guest, long_mode_guest, pin_to, Guest};

const PAGE: usize = 4096;
/// The slot the first guest reads and writes: 4 pages at guest-physical 0x20000.
const DATA_GPA: u64 = 0x20000;
const DATA_PAGES: usize = 4;

// The command guest: each round reads a command from port 0x10 (0 read, 1 write, 2 halt), a
// page of the data slot from 0x11 and a value from 0x12; a read reports the byte at the start
// of that page on port 0x13, a write stores the value there and reports on port 0x14.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".code16",
    ".globl cmd_start", ".globl cmd_end",
    "cmd_start:",
    "mov ax, 0x2000",
    "mov es, ax",
    "2:",
    "in al, 0x10",
    "mov bl, al",
    "in al, 0x11",
    "xor ah, ah",
    "shl ax, 12",
    "mov si, ax",
    "in al, 0x12",
    "cmp bl, 1",
    "je 3f",
    "cmp bl, 2",
    "je 4f",
    "mov al, es:[si]",
    "out 0x13, al",
    "jmp 2b",
    "3:",
    "mov es:[si], al",
    "out 0x14, al",
    "jmp 2b",
    "4:",
    "hlt",
    "cmd_end:",
    ".popsection",
);

extern "C" {
    static cmd_start: u8;
    static cmd_end: u8;
    static big_start: u8;
    static big_end: u8;
}

/// One command for the guest, and what came of it: the value read or written, or the error
/// and `KVM_EXIT_MEMORY_FAULT` fields.
fn command(g: &mut Guest, op: u8, page: u8, value: u8) -> String {
    let answers = [op, page, value];
    loop {
        match g.vcpu.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                let i = (port - 0x10) as usize;
                data[0] = *answers.get(i).unwrap_or(&0);
            }
            // (A guest resumed after an error finishes the access it was making.)
            Ok(VcpuExit::IoOut(0x13, data)) => return format!("read {:#04x}", data[0]),
            Ok(VcpuExit::IoOut(0x14, data)) => return format!("wrote {:#04x}", data[0]),
            Ok(VcpuExit::Hlt) => return "hlt".into(),
            Ok(other) => return format!("other {other:?}"),
            Err(e) => {
                let errno = e.errno();
                let run = g.vcpu.get_kvm_run();
                if run.exit_reason == kvm_bindings::KVM_EXIT_MEMORY_FAULT {
                    // SAFETY: the exit reason says which union member is valid.
                    let f = unsafe { run.__bindgen_anon_1.memory_fault };
                    return format!("error errno {errno} memory_fault flags {:#x} gpa {:#x} size {:#x}", f.flags, f.gpa, f.size);
                }
                return format!("error errno {errno} exit_reason {}", run.exit_reason);
            }
        }
    }
}

/// A fresh anonymous private mapping of `len` bytes (at `at` with MAP_FIXED if given).
fn anon(len: usize, at: Option<*mut u8>) -> *mut u8 {
    let fixed = if at.is_some() { libc::MAP_FIXED } else { 0 };
    // SAFETY: an anonymous private mapping; MAP_FIXED only over our own data mapping.
    let p = unsafe {
        libc::mmap(at.unwrap_or(std::ptr::null_mut()).cast(), len, libc::PROT_READ | libc::PROT_WRITE,
                   libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | fixed, -1, 0)
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap");
    p.cast()
}

fn set_slot(g: &Guest, slot: u32, gpa: u64, mem: *mut u8, len: usize, flags: u32) -> Result<(), i32> {
    let region = kvm_userspace_memory_region { slot, flags, guest_phys_addr: gpa, memory_size: len as u64, userspace_addr: mem as u64 };
    // SAFETY: the region is a mapping of `len` bytes that outlives the VM (or is deliberately
    // changed under it: what this program tests).
    unsafe { g.vm.set_user_memory_region(region) }.map_err(|e| e.errno())
}

/// FOLL_PIN pages acquired and not released, system-wide.
fn pins_held() -> i64 {
    let vmstat = std::fs::read_to_string("/proc/vmstat").unwrap_or_default();
    let get = |k: &str| vmstat.lines().find_map(|l| l.strip_prefix(k)?.trim().parse::<i64>().ok()).unwrap_or(0);
    get("nr_foll_pin_acquired ") - get("nr_foll_pin_released ")
}

/// The command guest, and a fresh data mapping of `DATA_PAGES` pages whose page i starts
/// with byte `first + i`.
fn command_guest(kvm: &Kvm, first: u8) -> (Guest, *mut u8) {
    let g = guest(kvm, code(unsafe { &cmd_start }, unsafe { &cmd_end }));
    let data = anon(DATA_PAGES * PAGE, None);
    for i in 0..DATA_PAGES {
        // SAFETY: inside the data mapping.
        unsafe { data.add(i * PAGE).write(first + i as u8) };
    }
    (g, data)
}

fn follows_host(kvm: &Kvm) {
    let (mut g, data) = command_guest(kvm, 0x10);
    let page = |i: usize| data.wrapping_add(i * PAGE);
    println!("mm sync_mmu {}", kvm.check_extension_raw(16));
    println!("mm memory_fault_info {}", kvm.check_extension_raw(232));
    println!("mm slot {:?}", set_slot(&g, 1, DATA_GPA, data, DATA_PAGES * PAGE, 0));
    let read = |i: usize| -> u8 {
        // SAFETY: inside the data mapping (when it is mapped).
        unsafe { page(i).read_volatile() }
    };
    let say = |g: &mut Guest, what: &str, op: u8, p: u8, v: u8| println!("mm {what} {}", command(g, op, p, v));
    for i in 0..DATA_PAGES as u8 {
        say(&mut g, "first_read", 0, i, 0);
    }
    say(&mut g, "write_page0", 1, 0, 0xa0);
    println!("mm host_sees_page0 {:#04x}", read(0));

    // The VMM replaces page 0 with a new page (mmap MAP_FIXED): the guest reads the new one.
    anon(PAGE, Some(page(0)));
    // SAFETY: the new page.
    unsafe { page(0).write(0xb0) };
    say(&mut g, "after_map_fixed_read_page0", 0, 0, 0);
    say(&mut g, "after_map_fixed_write_page0", 1, 0, 0xb1);
    println!("mm host_sees_new_page0 {:#04x}", read(0));

    // MADV_DONTNEED: a private anonymous page comes back zero, for the guest too.
    say(&mut g, "write_page1", 1, 1, 0xc1);
    // SAFETY: inside the data mapping.
    println!("mm madv_dontneed {}", unsafe { libc::madvise(page(1).cast(), PAGE, libc::MADV_DONTNEED) });
    say(&mut g, "after_dontneed_read_page1", 0, 1, 0);

    // mprotect(PROT_READ): the guest still reads, its write is the VMM's fault (EFAULT with
    // KVM_EXIT_MEMORY_FAULT); writable again, the write goes through.
    // SAFETY: inside the data mapping.
    println!("mm mprotect_read {}", unsafe { libc::mprotect(page(2).cast(), PAGE, libc::PROT_READ) });
    say(&mut g, "readonly_read_page2", 0, 2, 0);
    say(&mut g, "readonly_write_page2", 1, 2, 0xd2);
    // SAFETY: as above.
    println!("mm mprotect_rw {}", unsafe { libc::mprotect(page(2).cast(), PAGE, libc::PROT_READ | libc::PROT_WRITE) });
    say(&mut g, "rw_write_page2", 1, 2, 0xd3);
    println!("mm host_sees_page2 {:#04x}", read(2));

    // munmap: the guest's access fails; a new mapping there is read as zero.
    say(&mut g, "write_page3", 1, 3, 0xe3);
    // SAFETY: our own page.
    println!("mm munmap {}", unsafe { libc::munmap(page(3).cast(), PAGE) });
    say(&mut g, "unmapped_read_page3", 0, 3, 0);
    anon(PAGE, Some(page(3)));
    say(&mut g, "remapped_read_page3", 0, 3, 0);

    // fork: copy-on-write in the parent; the guest and the VMM still share every page, and
    // nothing the child writes reaches either.
    say(&mut g, "before_fork_write_page0", 1, 0, 0x11);
    // SAFETY: the child only writes its own copy of the data and exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: the child's copy of the data mapping.
        unsafe { page(0).write_volatile(0x99) };
        // SAFETY: leaves at once, without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for our child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    say(&mut g, "after_fork_read_page0", 0, 0, 0);
    say(&mut g, "after_fork_write_page0", 1, 0, 0x22);
    println!("mm host_sees_page0_after_fork {:#04x}", read(0));
    // SAFETY: the parent's data page.
    unsafe { page(0).write_volatile(0x33) };
    say(&mut g, "guest_sees_host_write_after_fork", 0, 0, 0);

    // Shared memory (memfd): a hole punched in the file is zero for the guest too.
    let name = CString::new("kvm-mm-check").unwrap();
    // SAFETY: plain syscalls on a new memfd.
    let (fd, shared) = unsafe {
        let fd = libc::memfd_create(name.as_ptr(), 0);
        libc::ftruncate(fd, (DATA_PAGES * PAGE) as i64);
        let p = libc::mmap(std::ptr::null_mut(), DATA_PAGES * PAGE, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0);
        (fd, p as *mut u8)
    };
    println!("mm shared_slot {:?}", set_slot(&g, 1, DATA_GPA, data, 0, 0).and_then(|_| set_slot(&g, 1, DATA_GPA, shared, DATA_PAGES * PAGE, 0)));
    say(&mut g, "shared_write_page1", 1, 1, 0x41);
    // SAFETY: a second, read-only view of the file.
    let view = unsafe { libc::mmap(std::ptr::null_mut(), DATA_PAGES * PAGE, libc::PROT_READ, libc::MAP_SHARED, fd, 0) } as *const u8;
    // SAFETY: inside the view.
    println!("mm other_view_sees {:#04x}", unsafe { view.add(PAGE).read_volatile() });
    // SAFETY: punches page 1 of our memfd.
    let punched = unsafe { libc::fallocate(fd, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, PAGE as i64, PAGE as i64) };
    println!("mm punch_hole {punched}");
    say(&mut g, "after_punch_read_page1", 0, 1, 0);
    say(&mut g, "halt", 2, 0, 0);
    println!("info mm pins_held_while_vm_lives {}", pins_held());
}

/// The page frame behind `addr` in this process (root reads frame numbers in pagemap).
fn pfn(addr: *const u8) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let mut entry = [0u8; 8];
    let f = std::fs::File::open("/proc/self/pagemap").ok()?;
    f.read_exact_at(&mut entry, (addr as u64 / PAGE as u64) * 8).ok()?;
    let e = u64::from_le_bytes(entry);
    (e >> 63 == 1 && e & ((1 << 55) - 1) != 0).then_some(e & ((1 << 55) - 1))
}

/// Marks page frame `pfn` idle (`Some`) or reads whether it still is (`None`), through the
/// kernel's idle page tracking, which asks the MMU notifier whether the guest used it.
fn page_idle(pfn: u64, mark: bool) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(mark).open("/sys/kernel/mm/page_idle/bitmap")?;
    let at = pfn / 64 * 8;
    if mark {
        f.write_all_at(&(1u64 << (pfn % 64)).to_le_bytes(), at)?;
    }
    let mut word = [0u8; 8];
    f.read_exact_at(&mut word, at)?;
    Ok(u64::from_le_bytes(word) >> (pfn % 64) & 1 == 1)
}

/// The host's page aging sees the guest's accesses, as on KVM (the MMU notifier's
/// `clear_young`): four one-page slots (so no fault-around joins them) that the guest has
/// read are marked idle; then the guest reads page 1 and writes page 2, and only pages 0 and
/// 3 may still be idle.
fn idle_pages(kvm: &Kvm) {
    // mlock() below drains only this CPU's batch of new pages: the guest's first touches
    // (which allocate the pages) must happen on the same CPU.
    pin_to(Some(0));
    idle_pages_pinned(kvm);
    pin_to(None);
}

fn idle_pages_pinned(kvm: &Kvm) {
    let (mut g, data) = command_guest(kvm, 0x50);
    let page = |i: usize| data.wrapping_add(i * PAGE);
    for i in 0..DATA_PAGES {
        let gpa = DATA_GPA + (i * PAGE) as u64;
        if let Err(e) = set_slot(&g, 2 + i as u32, gpa, page(i), PAGE, 0) {
            println!("idle slot {i} error {e}");
            return;
        }
    }
    for i in 0..DATA_PAGES as u8 {
        command(&mut g, 0, i, 0);
    }
    // Idle tracking sees only pages on the LRU lists: mlock() first drains this CPU's batch of
    // new pages onto them (lru_add_drain).
    let drain = anon(PAGE, None);
    // SAFETY: locks and unlocks our own page.
    unsafe {
        libc::mlock(drain.cast(), PAGE);
        libc::munlock(drain.cast(), PAGE);
    }
    let pfns: Vec<_> = (0..DATA_PAGES).map(|i| pfn(page(i))).collect();
    let marked: Vec<_> = pfns.iter().map(|p| p.map(|p| page_idle(p, true))).collect();
    if marked.iter().any(|m| !matches!(m, Some(Ok(true)))) {
        println!("idle tracking unavailable: {marked:?}");
        return;
    }
    println!("idle guest_read_page1 {}", command(&mut g, 0, 1, 0));
    println!("idle guest_write_page2 {}", command(&mut g, 1, 2, 0x77));
    let state: Vec<_> = pfns.iter().flatten().map(|&p| match page_idle(p, false) {
        Ok(true) => "idle",
        Ok(false) => "used",
        Err(_) => "error",
    }).collect();
    println!("idle after {}", state.join(" "));
    println!("idle halt {}", command(&mut g, 2, 0, 0));
}

// The large guest (64-bit, identity-mapped with 2 MiB pages up to 5 GiB): writes one byte to
// each of RCX pages from RDI on (a byte = the page number's low byte), then sums what it reads
// back from every page, and reports the sum with OUT 0x20 (RAX) before halting.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".code64",
    ".globl big_start", ".globl big_end",
    "big_start:",
    "mov rsi, rdi",
    "mov rdx, rcx",
    "xor rbx, rbx",
    "2:",
    "mov byte ptr [rsi], bl",
    "inc rbx",
    "add rsi, 4096",
    "dec rdx",
    "jnz 2b",
    "xor rax, rax",
    "mov rsi, rdi",
    "mov rdx, rcx",
    "3:",
    "movzx rbx, byte ptr [rsi]",
    "add rax, rbx",
    "add rsi, 4096",
    "dec rdx",
    "jnz 3b",
    "out 0x20, eax",
    "hlt",
    "big_end:",
    ".code16",
    ".popsection",
);

/// 4 GiB of slots (four 1 GiB slots at 1 GiB .. 5 GiB), of which the guest touches 1.25 GiB
/// spanning two slots.
fn large(kvm: &Kvm) {
    const GIB: u64 = 1 << 30;
    let mut g = long_mode_guest(kvm, code(unsafe { &big_start }, unsafe { &big_end }), "large");
    // Identity map 0 .. 5 GiB with 2 MiB pages: PML4 0x2000 → PDPT 0x3000 → PDs 0x4000..0x9000.
    // SAFETY: the tables fit in the 64 KiB at guest-physical 0 (code is at 0x1000).
    unsafe {
        for d in 0..5u64 {
            g.mem.add(0x3000 + 8 * d as usize).cast::<u64>().write(0x4003 + 0x1000 * d);
            for e in 0..512u64 {
                let pd = g.mem.add(0x4000 + 0x1000 * d as usize).cast::<u64>();
                pd.add(e as usize).write((d * GIB + (e << 21)) | 0x83);
            }
        }
    }
    let mem = anon(4 * GIB as usize, None);
    for s in 0..4u64 {
        println!("large slot{} {:?}", s + 1, set_slot(&g, s as u32 + 1, (s + 1) * GIB, mem.wrapping_add((s * GIB) as usize), GIB as usize, 0));
    }
    let pages = (GIB + GIB / 4) / PAGE as u64;
    let mut regs = g.vcpu.get_regs().unwrap();
    regs.rdi = GIB + GIB / 2; // from the middle of slot 1 into slot 2
    regs.rcx = pages;
    g.vcpu.set_regs(&regs).unwrap();
    let before = pins_held();
    match g.vcpu.run() {
        Ok(VcpuExit::IoOut(0x20, d)) => println!("large sum {:#x} of {pages} pages", u32::from_le_bytes([d[0], d[1], d[2], d[3]])),
        other => println!("large run {:?}", other.map_err(|e| e.errno())),
    }
    let expected: u64 = (0..pages).map(|p| p & 0xff).sum();
    println!("large expected_sum {:#x}", expected as u32);
    // SAFETY: a byte the guest wrote (page 0x12345 of its run).
    let host = unsafe { mem.add((GIB / 2) as usize + 0x12345 * PAGE).read_volatile() };
    println!("large host_sees {host:#04x}");
    println!("info large pins_held_after_run {}", pins_held() - before);
    // SAFETY: the VM is about to go; nothing uses the mapping afterwards.
    drop(g);
    unsafe { libc::munmap(mem.cast(), 4 * GIB as usize) };
}

/// `count` memory slots of one page each (slot 0 is the guest's own), each touched by the
/// guest; `None`: as many as `KVM_CAP_NR_MEMSLOTS` says, and one more is refused.
fn slots(kvm: &Kvm, count: Option<u64>) {
    let mut g = long_mode_guest(kvm, code(unsafe { &big_start }, unsafe { &big_end }), "slots");
    let max = kvm.check_extension_raw(10) as u64; // KVM_CAP_NR_MEMSLOTS
    let n = count.unwrap_or(max - 1).min(max - 1);
    println!("info slots max {max}");
    // SAFETY: identity map the first 1 GiB with 2 MiB pages: PDPT 0x3000 → PD 0x4000.
    unsafe {
        for e in 0..512u64 {
            g.mem.add(0x4000).cast::<u64>().add(e as usize).write((e << 21) | 0x83);
        }
    }
    let mem = anon(n as usize * PAGE, None);
    let base = 0x100000u64;
    let ok = (0..n).filter(|&i| set_slot(&g, i as u32 + 1, base + i * PAGE as u64, mem.wrapping_add(i as usize * PAGE), PAGE, 0).is_ok()).count();
    println!("slots created {ok} of {n}");
    if count.is_none() {
        println!("slots one_more {:?}", set_slot(&g, max as u32, base + n * PAGE as u64, mem, PAGE, 0));
    }
    let mut regs = g.vcpu.get_regs().unwrap();
    regs.rdi = base;
    regs.rcx = n;
    g.vcpu.set_regs(&regs).unwrap();
    match g.vcpu.run() {
        Ok(VcpuExit::IoOut(0x20, d)) => println!("slots sum {:#x}", u32::from_le_bytes([d[0], d[1], d[2], d[3]])),
        other => println!("slots run {:?}", other.map_err(|e| e.errno())),
    }
    println!("slots expected_sum {:#x}", (0..n).map(|p| p & 0xff).sum::<u64>());
    // Every slot goes again, one by one.
    let gone = (0..n).filter(|&i| set_slot(&g, i as u32 + 1, base + i * PAGE as u64, mem.wrapping_add(i as usize * PAGE), 0, 0).is_ok()).count();
    println!("slots deleted {gone}");
}

/// A 256 GiB slot that logs dirty pages: its bitmap (8 MiB) is allocated and read back without
/// a warning in the host's log.
fn dirty_256g(kvm: &Kvm) {
    let g = guest(kvm, code(unsafe { &cmd_start }, unsafe { &cmd_end }));
    let huge = 256usize << 30;
    let reserve = anon(huge, None); // never touched
    // At 4 GiB: KVM refuses slots beyond the host's physical-address width (40 bits in Bochs).
    println!("dirty256g slot {:?}", set_slot(&g, 1, 1 << 32, reserve, huge, KVM_MEM_LOG_DIRTY_PAGES));
    match g.vm.get_dirty_log(1, huge) {
        Ok(bits) => println!("dirty256g log words {} set {}", bits.len(), bits.iter().filter(|w| **w != 0).count()),
        Err(e) => println!("dirty256g log error {}", e.errno()),
    }
    println!("dirty256g delete {:?}", set_slot(&g, 1, 1 << 32, reserve, 0, 0));
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: kvm-mm-check /dev/rvmx|/dev/kvm [large]");
        return ExitCode::from(2);
    };
    let kvm = match Kvm::new_with_path(&CString::new(path.clone()).unwrap()) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("kvm-mm-check: cannot open {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.next().as_deref() {
        Some("large") => {
            large(&kvm);
            dirty_256g(&kvm);
        }
        Some("slots") => slots(&kvm, args.next().and_then(|n| n.parse().ok())),
        _ => {
            follows_host(&kvm);
            idle_pages(&kvm);
        }
    }
    ExitCode::SUCCESS
}
