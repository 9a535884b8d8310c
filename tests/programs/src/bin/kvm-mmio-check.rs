//! MMIO, read-only memory slots and string port I/O, through rust-vmm's `kvm-ioctls`: small
//! guests (assembled below) touch guest-physical addresses with no RAM behind them, in every
//! instruction form the MMIO exit must decode (moves, string instructions, and the
//! instructions that compute with memory: ADD... CMPXCHG, BT*), and print every exit, the registers and the
//! RAM they changed as `key value` lines. tests/vm/suite.sh runs it on `/dev/rvmx` and
//! `/dev/kvm` in the same boot and requires identical output (but for `info` lines).
//!
//! Usage: kvm-mmio-check DEVICE

use std::{ffi::CString, process::ExitCode};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Cap, Kvm, VcpuExit};
use rvmx_test_programs::{code, flat, guest, long_mode_guest, run, Guest};

// 64-bit guest: MMIO at 1 MiB (inside the identity-mapped 2 MiB, outside the 64 KiB slot).
// Loaded values are saved to RAM at 0x8100 before their registers are reused.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl mmio64_start", ".globl mmio64_end",
    "mmio64_start:",
    "mov rbx, 0x100000",
    "mov dword ptr [rbx], 0x11223344",      // C7 imm32
    "mov byte ptr [rbx + 1], 0x55",         // C6 imm8
    "mov qword ptr [rbx + 8], -2",          // REX.W C7, sign-extended
    "mov ax, 0x6677",
    "mov word ptr [rbx + 0x10], ax",        // 66 89
    "mov r14, 0x0123456789abcdef",
    "mov qword ptr [rbx + 0x18], r14",      // REX.W+R 89
    "mov ecx, dword ptr [rbx + 0x20]",      // 8B
    "mov qword ptr [0x8100], rcx",
    "mov dh, byte ptr [rbx + 0x21]",        // 8A into a high byte register
    "mov qword ptr [0x8108], rdx",
    "movzx r8d, word ptr [rbx + 0x22]",
    "movsx r9, byte ptr [rbx + 0x23]",
    "movsxd r10, dword ptr [rbx + 0x24]",
    "mov esi, 2",
    "mov r11, qword ptr [rbx + rsi*8 + 0x40]", // SIB
    "movabs al, byte ptr [0x100031]",       // A0 with a 64-bit offset
    "mov qword ptr [0x8110], rax",
    // RIP-relative to 0x100060: the code runs at 0x1000, the assembler counts from here.
    ".set mmio64_rip_target, mmio64_start + 0x100060 - 0x1000",
    "mov eax, dword ptr [rip + mmio64_rip_target]",
    "mov qword ptr [0x8118], rax",
    "mov rdi, 0x100080",
    "mov eax, 0xaabbccdd",
    "mov ecx, 3",
    "rep stosd",                            // 3 MMIO writes
    "mov rsi, 0x8000",
    "mov rdi, 0x1000a0",
    "mov ecx, 2",
    "rep movsw",                            // RAM to MMIO
    "mov rsi, 0x1000c0",
    "mov rdi, 0x9000",
    "mov ecx, 2",
    "rep movsb",                            // MMIO to RAM
    "hlt",
    "mmio64_end:",
    ".popsection",
);

// 64-bit guest: instructions that read MMIO, compute and (mostly) write back, as KVM's
// emulator runs them: one read exit, then one write exit; then LODS and MOVNTI. Registers and RFLAGS after each are
// saved to RAM at 0x8200 (for BT*, only CF: the other flags are undefined).
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl rmw64_start", ".globl rmw64_end",
    "rmw64_start:",
    "mov rsp, 0xa000",                      // for PUSHF
    "mov rbx, 0x100000",
    "mov ecx, 0x01020304",
    "add dword ptr [rbx], ecx",
    "pushfq", "pop rax", "mov [0x8200], rax",
    "lock or byte ptr [rbx + 4], 0x81",
    "pushfq", "pop rax", "mov [0x8208], rax",
    "mov edx, 0x10",
    "sub edx, dword ptr [rbx + 8]",         // into a register: a read only
    "mov [0x8210], rdx",
    "pushfq", "pop rax", "mov [0x8218], rax",
    "cmp word ptr [rbx + 0x10], 0x1234",    // a read only
    "pushfq", "pop rax", "mov [0x8220], rax",
    "test qword ptr [rbx + 0x18], rcx",
    "pushfq", "pop rax", "mov [0x8228], rax",
    "mov esi, 0x55",
    "xchg dword ptr [rbx + 0x20], esi",
    "mov [0x8230], rsi",
    "mov edi, 7",
    "xadd dword ptr [rbx + 0x24], edi",
    "mov [0x8238], rdi",
    "pushfq", "pop rax", "mov [0x8240], rax",
    "mov eax, 0x2a",
    "mov r8d, 0x99",
    "lock cmpxchg dword ptr [rbx + 0x28], r8d", // unequal: EAX loaded, the value written back
    "mov [0x8248], rax",
    "pushfq", "pop rax", "mov [0x8250], rax",
    "inc byte ptr [rbx + 0x30]",
    "dec qword ptr [rbx + 0x38]",
    "not word ptr [rbx + 0x40]",
    "neg dword ptr [rbx + 0x44]",
    "pushfq", "pop rax", "mov [0x8258], rax",
    "mov ecx, 35",
    "bts dword ptr [rbx + 0x48], ecx",      // bit 3 of the dword at +0x4c
    "pushfq", "pop rax", "and eax, 1", "mov [0x8260], rax",
    "btr word ptr [rbx + 0x50], 3",
    "pushfq", "pop rax", "and eax, 1", "mov [0x8268], rax",
    "bt qword ptr [rbx + 0x58], 63",        // a read only
    "pushfq", "pop rax", "and eax, 1", "mov [0x8270], rax",
    "stc",
    "adc dword ptr [rbx + 0x60], 1",
    "pushfq", "pop rax", "mov [0x8278], rax",
    "lea rsi, [rbx + 0x68]",
    "mov rax, -1",
    "lodsw",                                // a string read into AX; RSI moves on
    "mov [0x8280], rax",
    "mov [0x8288], rsi",
    "mov rcx, 0x1122334455667788",
    "movnti qword ptr [rbx + 0x70], rcx",   // a store with a non-temporal hint
    "hlt",
    "rmw64_end:",
    ".popsection",
);

// Real-mode guest: MMIO above the 64 KiB slot through ES (base 0x20000).
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl mmio16_start", ".globl mmio16_end",
    ".code16",
    "mmio16_start:",
    "mov ax, 0x2000",
    "mov es, ax",
    "mov word ptr es:[0x10], 0x1234",
    "mov bx, 4",
    "mov si, 8",
    "mov al, byte ptr es:[bx + si + 4]",
    "mov byte ptr [0x3000], al",
    "mov di, 0x20",
    "mov cx, 2",
    "mov ax, 0x5566",
    "rep stosw",
    "mov edx, dword ptr es:[0x40]",         // 66: a 32-bit access in real mode
    "movzx ecx, byte ptr es:[0x41]",
    "mov bp, 0x50",
    "mov word ptr es:[bp + di], dx",        // BP-based with an override
    "hlt",
    ".code64",
    "mmio16_end:",
    ".popsection",
);

// Real mode: a read-only slot (DS base 0x10000) reads like RAM; writes to it exit as MMIO
// and leave it unchanged.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl readonly_start", ".globl readonly_end",
    ".code16",
    "readonly_start:",
    "mov ax, 0x1000",
    "mov ds, ax",
    "mov al, byte ptr [5]",
    "mov byte ptr [5], 0x77",
    "mov word ptr [0x1002], 0xbeef",
    "mov bl, byte ptr [5]",
    "hlt",
    ".code64",
    "readonly_end:",
    ".popsection",
);

// Real mode: OUTS and INS with and without REP, both directions.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl strio_start", ".globl strio_end",
    ".code16",
    "strio_start:",
    "mov si, 0x3000",
    "mov dx, 0x3f8",
    "mov cx, 3",
    "rep outsb",
    "outsw",
    "mov di, 0x3100",
    "mov cx, 4",
    "mov dx, 0x60",
    "rep insw",
    "std",
    "mov di, 0x3207",
    "mov cx, 2",
    "rep insb",
    "cld",
    "mov si, 0x3300",
    "outsd",
    "insb",
    "hlt",
    ".code64",
    "strio_end:",
    ".popsection",
);

// 64-bit: instructions outside the decoder's set on MMIO (KVM's emulator knows them; rvmx
// reports them), then a fetch from MMIO.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl unsupported_start", ".globl unsupported_end",
    "unsupported_start:",
    "mov rbx, 0x100000",
    "mul dword ptr [rbx]",
    "hlt",
    "unsupported_end:",
    ".popsection",
);

// 32-bit protected mode: the guest turns on PAE paging itself (MOV to CR0 exits; the
// PDPTEs come from its memory), writes MMIO through its second PDPTE, then uses LMSW.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl pae_on_start", ".globl pae_on_end",
    ".code32",
    "pae_on_start:",
    "mov dword ptr [0x5000], 0x6001",       // PDPTE0: PD at 0x6000
    "mov dword ptr [0x5008], 0x7001",       // PDPTE1: PD at 0x7000
    "mov dword ptr [0x6000], 0x83",         // 0-2 MiB: identity
    "mov dword ptr [0x7000], 0x200083",     // 1 GiB-: 2 MiB (MMIO)
    "mov eax, cr4",
    "or eax, 0x20",
    "mov cr4, eax",
    "mov eax, 0x5000",
    "mov cr3, eax",
    "mov eax, cr0",
    "or eax, 0x80000000",
    "mov cr0, eax",
    "mov dword ptr [0x40000010], 0xcafe",
    "mov eax, cr0",
    "mov dword ptr [0x3000], eax",
    "mov ax, 0xb",                          // LMSW: PE, MP, TS
    "lmsw ax",
    "mov eax, cr0",
    "mov dword ptr [0x3004], eax",
    "xor ax, ax",
    "lmsw ax",                              // cannot clear PE
    "mov eax, cr0",
    "mov dword ptr [0x3008], eax",
    "hlt",
    ".code64",
    "pae_on_end:",
    ".popsection",
);

// 32-bit, already in PAE paging through KVM_SET_SREGS: an MMIO write through PDPTE1.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl pae_sregs_start", ".globl pae_sregs_end",
    ".code32",
    "pae_sregs_start:",
    "mov word ptr [0x40000020], 0xbeef",
    "hlt",
    ".code64",
    "pae_sregs_end:",
    ".popsection",
);

// Real mode: sums one byte from each of 64 one-page slots (DS walks 0x10000, 0x11000...).
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl manyslots_start", ".globl manyslots_end",
    ".code16",
    "manyslots_start:",
    "mov cx, 64",
    "mov ax, 0x1000",
    "xor bx, bx",
    "1:",
    "mov ds, ax",
    "mov dl, byte ptr [0]",                 // a MOV: an MMIO read once slot 20 has moved
    "add bl, dl",
    "add ax, 0x100",
    "loop 1b",
    "xor ax, ax",
    "mov ds, ax",
    "mov al, bl",
    "out 0x80, al",
    "hlt",
    ".code64",
    "manyslots_end:",
    ".popsection",
);

extern "C" {
    static manyslots_start: u8;
    static manyslots_end: u8;
    static pae_on_start: u8;
    static pae_on_end: u8;
    static pae_sregs_start: u8;
    static pae_sregs_end: u8;
    static mmio64_start: u8;
    static mmio64_end: u8;
    static rmw64_start: u8;
    static rmw64_end: u8;
    static mmio16_start: u8;
    static mmio16_end: u8;
    static readonly_start: u8;
    static readonly_end: u8;
    static strio_start: u8;
    static strio_end: u8;
    static unsupported_start: u8;
    static unsupported_end: u8;
}

fn ram(g: &Guest, at: usize, len: usize) -> &[u8] {
    // SAFETY: callers stay inside the 64 KiB mapping.
    unsafe { std::slice::from_raw_parts(g.mem.add(at), len) }
}

fn print_regs(name: &str, g: &Guest) {
    let r = g.vcpu.get_regs().unwrap();
    println!("{name} regs rsi {:#x} rdi {:#x} rbp {:#x} r8 {:#x} r9 {:#x} r10 {:#x} r11 {:#x}",
             r.rsi, r.rdi, r.rbp, r.r8, r.r9, r.r10, r.r11);
}

fn main() -> ExitCode {
    let Some(dev) = std::env::args().nth(1) else {
        eprintln!("usage: kvm-mmio-check DEVICE");
        return ExitCode::from(2);
    };
    let kvm = Kvm::new_with_path(&CString::new(dev).unwrap()).expect("open device");
    println!("cap_readonly_mem {}", kvm.check_extension(Cap::ReadonlyMem));

    // SAFETY (all blocks below): the symbols are the guests assembled above.
    let mut g = long_mode_guest(&kvm, unsafe { code(&mmio64_start, &mmio64_end) }, "mmio64");
    // SAFETY: inside the mapping.
    unsafe { std::ptr::copy_nonoverlapping([0xa1u8, 0xa2, 0xa3, 0xa4].as_ptr(), g.mem.add(0x8000), 4) };
    run("mmio64", &mut g, 40, 0);
    print_regs("mmio64", &g);
    println!("mmio64 saved {:02x?}", ram(&g, 0x8100, 32));
    println!("mmio64 movs_to_ram {:02x?}", ram(&g, 0x9000, 4));

    let mut g = long_mode_guest(&kvm, unsafe { code(&rmw64_start, &rmw64_end) }, "rmw64");
    run("rmw64", &mut g, 60, 0);
    println!("rmw64 saved {:x?}", (0..18).map(|i| u64::from_le_bytes(ram(&g, 0x8200 + i * 8, 8).try_into().unwrap())).collect::<Vec<_>>());

    let mut g = guest(&kvm, unsafe { code(&mmio16_start, &mmio16_end) });
    run("mmio16", &mut g, 20, 0);
    print_regs("mmio16", &g);
    println!("mmio16 saved {:02x?}", ram(&g, 0x3000, 1));

    let mut g = guest(&kvm, unsafe { code(&readonly_start, &readonly_end) });
    // SAFETY: a fresh anonymous mapping, never unmapped (the process is short-lived).
    let ro = unsafe {
        let p = libc::mmap(std::ptr::null_mut(), 0x10000, libc::PROT_READ | libc::PROT_WRITE,
                           libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) as *mut u8;
        std::slice::from_raw_parts_mut(p, 0x10000)
    };
    ro.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    let region = kvm_userspace_memory_region {
        slot: 1, flags: kvm_bindings::KVM_MEM_READONLY, guest_phys_addr: 0x10000, memory_size: 0x10000,
        userspace_addr: ro.as_ptr() as u64,
    };
    // SAFETY: the mapping stays for the process's life.
    println!("readonly set_region {:?}", unsafe { g.vm.set_user_memory_region(region) }.map_err(|e| e.errno()));
    run("readonly", &mut g, 10, 0);
    println!("readonly unchanged {:02x?} {:02x?}", &ro[5..6], &ro[0x1002..0x1004]);

    let mut g = guest(&kvm, unsafe { code(&strio_start, &strio_end) });
    // SAFETY: inside the mapping.
    unsafe {
        std::ptr::copy_nonoverlapping(b"ABCDEF".as_ptr(), g.mem.add(0x3000), 6);
        std::ptr::copy_nonoverlapping(b"wxyz".as_ptr(), g.mem.add(0x3300), 4);
    }
    run("strio", &mut g, 20, 0x30);
    print_regs("strio", &g);
    println!("strio ins_memory {:02x?} {:02x?}", ram(&g, 0x3100, 8), ram(&g, 0x3206, 2));
    println!("strio insb_nonrep {:02x?}", ram(&g, 0x3100, 1));

    // PAE paging turned on by the guest (the PDPTEs are read from its memory), LMSW.
    let protected = |g: &Guest| {
        let mut s = g.vcpu.get_sregs().unwrap();
        s.cs = flat(11, 8);
        (s.ds, s.es, s.fs, s.gs, s.ss) = (flat(3, 16), flat(3, 16), flat(3, 16), flat(3, 16), flat(3, 16));
        s.cr0 = 0x11; // PE, ET
        s
    };
    let mut g = guest(&kvm, unsafe { code(&pae_on_start, &pae_on_end) });
    g.vcpu.set_sregs(&protected(&g)).unwrap();
    run("pae_on", &mut g, 10, 0);
    println!("pae_on cr0 {:02x?}", ram(&g, 0x3000, 12));
    let s = g.vcpu.get_sregs().unwrap();
    println!("pae_on sregs cr0 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x}", s.cr0, s.cr3, s.cr4, s.efer);

    // The same with a reserved bit in PDPTE1: the MOV to CR0 raises #GP (no IDT: shutdown).
    let mut g = guest(&kvm, unsafe { code(&pae_on_start, &pae_on_end) });
    let mut s = protected(&g);
    s.idt.limit = 0;
    g.vcpu.set_sregs(&s).unwrap();
    // SAFETY: inside the mapping: patch the PDPTE1 the guest writes (0x7001 → 0x7021).
    unsafe {
        let code = std::slice::from_raw_parts_mut(g.mem.add(0x1000), 64);
        let at = code.windows(4).position(|w| w == [0x01, 0x70, 0x00, 0x00]).unwrap();
        code[at] = 0x21;
    }
    run("pae_bad_pdpte", &mut g, 10, 0);

    // PAE paging set through KVM_SET_SREGS: the PDPTEs are read at that moment, as KVM does.
    let mut g = guest(&kvm, unsafe { code(&pae_sregs_start, &pae_sregs_end) });
    // SAFETY: inside the mapping: the same tables as above.
    unsafe {
        for (at, v) in [(0x5000usize, 0x6001u64), (0x5008, 0x7001), (0x6000, 0x83), (0x7000, 0x20_0083)] {
            g.mem.add(at).cast::<u64>().write(v);
        }
    }
    let mut s = protected(&g);
    (s.cr0, s.cr3, s.cr4) = (0x8000_0011, 0x5000, 0x20);
    println!("pae_sregs set_sregs {:?}", g.vcpu.set_sregs(&s).map_err(|e| e.errno()));
    run("pae_sregs", &mut g, 10, 0);

    // 64 one-page slots; then slot 10 deleted and re-added with other contents, and slot 20
    // moved away (its page becomes MMIO): the guest must see each change.
    let mut g = guest(&kvm, unsafe { code(&manyslots_start, &manyslots_end) });
    // SAFETY: a fresh anonymous mapping, never unmapped (the process is short-lived).
    let pages = unsafe {
        let p = libc::mmap(std::ptr::null_mut(), 65 * 4096, libc::PROT_READ | libc::PROT_WRITE,
                           libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) as *mut u8;
        std::slice::from_raw_parts_mut(p, 65 * 4096)
    };
    let base = pages.as_ptr() as u64;
    let slot = |g: &Guest, id: u32, gpa: u64, size: u64, page: usize| {
        let r = kvm_userspace_memory_region {
            slot: id, flags: 0, guest_phys_addr: gpa, memory_size: size,
            userspace_addr: base + page as u64 * 4096,
        };
        // SAFETY: inside the mapping above, alive for the process's life.
        unsafe { g.vm.set_user_memory_region(r) }.map_err(|e| e.errno())
    };
    for i in 1..=64u32 {
        pages[(i as usize - 1) * 4096] = i as u8;
        if let Err(e) = slot(&g, i, 0x10000 + (i as u64 - 1) * 0x1000, 4096, i as usize - 1) {
            println!("manyslots slot {i} errno {e}");
        }
    }
    let rerun = |g: &mut Guest, name: &str| {
        let mut r = g.vcpu.get_regs().unwrap();
        r.rip = 0x1000;
        g.vcpu.set_regs(&r).unwrap();
        let mut s = g.vcpu.get_sregs().unwrap();
        s.ds.base = 0;
        s.ds.selector = 0;
        g.vcpu.set_sregs(&s).unwrap();
        run(name, g, 70, 0);
    };
    rerun(&mut g, "manyslots");
    pages[64 * 4096] = 100;
    println!("manyslots delete10 {:?}", slot(&g, 10, 0x19000, 0, 9));
    println!("manyslots readd10 {:?}", slot(&g, 10, 0x19000, 4096, 64));
    println!("manyslots move20 {:?}", slot(&g, 20, 0x80_0000, 4096, 19));
    rerun(&mut g, "manyslots_changed");

    // Not in the decoder's set: KVM emulates MUL on MMIO, rvmx stops with an emulation
    // failure that names the instruction (info lines: the two differ by design).
    let mut g = long_mode_guest(&kvm, unsafe { code(&unsupported_start, &unsupported_end) }, "info unsupported");
    match g.vcpu.run() {
        Ok(VcpuExit::InternalError) => {
            // SAFETY: after KVM_EXIT_INTERNAL_ERROR the `internal` member is the valid one.
            let i = unsafe { g.vcpu.get_kvm_run().__bindgen_anon_1.internal };
            let words = &i.data[..(i.ndata as usize).min(16)];
            let bytes: Vec<u8> = words.iter().skip(1).take(2).flat_map(|w| w.to_le_bytes()).collect();
            let size = bytes.first().copied().unwrap_or(0) as usize;
            println!("info unsupported internal_error suberror {} flags {:#x} insn {:02x?}",
                     i.suberror, words.first().copied().unwrap_or(0), &bytes[1..(1 + size).min(bytes.len())]);
        }
        other => println!("info unsupported {:?}", other.map(|_| ()).map_err(|e| e.errno())),
    }
    ExitCode::SUCCESS
}
