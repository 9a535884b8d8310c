//! The full in-kernel irqchip (`KVM_CREATE_IRQCHIP`): its errnos, `KVM_GET/SET_IRQCHIP` of
//! the PIC pair and the IOAPIC, `KVM_IRQ_LINE_STATUS` through the default and custom GSI
//! routes, and a 32-bit guest that programs the IOAPIC (edge, level and RTC pins; interrupts
//! that wake it from HLT; remote IRR and re-delivery at EOI) and then the 8259 pair (ICWs,
//! masks, the slave's cascade, OCW3 reads), a resampling irqfd on a level-triggered IOAPIC pin
//! (the line held until the EOI, the resamplefd signalled then; dropped stale requests at
//! unmasking; deassignment), and the 8254. Every exit, status, handler count and chip state
//! is printed as `key value` lines; tests/vm/suite.sh runs it on `/dev/rvmx` and `/dev/kvm`
//! in the same boot and requires identical output (but for `info` lines).
//!
//! Usage: kvm-irqchip-check DEVICE

use std::{ffi::CString, os::fd::AsRawFd, process::ExitCode, time::Duration};

use kvm_bindings::{kvm_irq_routing_entry, kvm_irqchip, KvmIrqRouting};
use kvm_ioctls::{Kvm, VcpuExit, VmFd};
use rvmx_test_programs::{code, flat, guest, Guest};

const KVM_CREATE_IRQCHIP: libc::c_ulong = 0xae60;
const KVM_IRQ_LINE_STATUS: libc::c_ulong = 0xc008_ae67;
const KVM_INTERRUPT: libc::c_ulong = 0x4004_ae86;

// 32-bit protected mode, flat segments (GDT at 0x600, IDT at 0x800), stack at 0x9000.
// Results at 0x7000; handler counts at 0x7100 (IOAPIC) and 0x7200 (PIC).
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl chip_start", ".globl chip_end", ".globl chip_pic", ".globl chip_h45", ".globl chip_h48",
    ".globl chip_h49", ".globl chip_h21", ".globl chip_h23", ".globl chip_h2a", ".globl chip_pit", ".globl chip_h20", ".globl chip_h50",
    ".globl chip_h4b", ".globl chip_unmask11",
    ".code32",
    "chip_start:",
    "mov al, 0xff",
    "out 0x21, al",                             // the PIC masked (uninitialized: OCW1)
    "out 0xa1, al",
    "mov dword ptr [0xfee000f0], 0x1ff",        // APIC software-enabled
    "mov ecx, 0xfec00000",
    "mov dword ptr [ecx], 1",                   // version
    "mov eax, [ecx + 0x10]",
    "mov [0x7000], eax",
    "mov dword ptr [ecx], 0",                   // ID
    "mov dword ptr [ecx + 0x10], 0x0f000000",
    "mov eax, [ecx + 0x10]",
    "mov [0x7004], eax",
    "mov dword ptr [ecx], 0x1b",                // pin 5: vector 0x45, edge, to APIC 0
    "mov dword ptr [ecx + 0x10], 0",
    "mov dword ptr [ecx], 0x1a",
    "mov dword ptr [ecx + 0x10], 0x45",
    "mov dword ptr [ecx], 0x23",                // pin 9: vector 0x49, level
    "mov dword ptr [ecx + 0x10], 0",
    "mov dword ptr [ecx], 0x22",
    "mov dword ptr [ecx + 0x10], 0x8049",
    "mov dword ptr [ecx], 0x21",                // pin 8 (the RTC's): vector 0x48, edge
    "mov dword ptr [ecx + 0x10], 0",
    "mov dword ptr [ecx], 0x20",
    "mov dword ptr [ecx + 0x10], 0x48",
    "mov dword ptr [ecx], 0x22",
    "mov eax, [ecx + 0x10]",
    "mov [0x7008], eax",
    "mov dword ptr [ecx], 3",                   // no such register: all ones
    "mov eax, [ecx + 0x10]",
    "mov [0x700c], eax",
    "mov eax, [ecx]",                           // IOREGSEL reads back
    "mov [0x7010], eax",
    "mov al, byte ptr [ecx + 0x10]",            // a byte of the window
    "mov [0x7014], al",
    "out 0x10, al",                             // set up: userspace raises lines from now on
    "6:",                                       // HLT until the interrupt came (STI's shadow
    "cmp dword ptr [0x7100], 0",                // keeps it from coming between the check
    "jne 7f",                                   // and the HLT)
    "sti",
    "hlt",
    "cli",
    "jmp 6b",
    "7:",
    "sti",
    "out 0x11, al",
    "2:",
    "jmp 2b",
    // The 8259 pair: vectors 0x20 and 0x28, IRQs 1, 2 (cascade), 3 and 10 unmasked.
    "chip_pic:",
    "cli",
    "mov al, 0x11",
    "out 0x20, al",
    "out 0xa0, al",
    "mov al, 0x20",
    "out 0x21, al",
    "mov al, 0x28",
    "out 0xa1, al",
    "mov al, 4",
    "out 0x21, al",
    "mov al, 2",
    "out 0xa1, al",
    "mov al, 1",
    "out 0x21, al",
    "out 0xa1, al",
    "mov al, 0xf1",
    "out 0x21, al",
    "mov al, 0xfb",
    "out 0xa1, al",
    "in al, 0x21",                              // IMR reads back
    "mov [0x7020], al",
    "in al, 0xa1",
    "mov [0x7021], al",
    "in ax, 0x20",                              // a word from the PIC: 0 on KVM
    "mov [0x7022], ax",
    "sti",
    "out 0x16, al",
    "3:",
    "jmp 3b",
    // The 8254: channel 0 in mode 2 at 100 Hz on IRQ 0 through the PIC; five ticks, in HLT.
    "chip_pit:",
    "in al, 0x61",                              // the speaker port: userspace's (no DUMMY flag)
    "mov al, 0x34",
    "out 0x43, al",
    "mov al, 0x9c",                             // 11932 = 0x2e9c
    "out 0x40, al",
    "mov al, 0x2e",
    "out 0x40, al",
    "mov al, 0xf0",                             // IRQ 0 unmasked
    "out 0x21, al",
    "sti",                                      // (userspace left the last handler's IF = 0)
    "4:",
    "hlt",
    "cmp dword ptr [0x7300], 5",
    "jb 4b",
    "cli",
    "mov al, 0x00",                             // latch channel 0 and read it: a count below 11932
    "out 0x43, al",
    "in al, 0x40",
    "mov [0x7304], al",
    "in al, 0x40",
    "mov [0x7305], al",
    "mov al, 0xe2",                             // read-back: channel 0's status
    "out 0x43, al",
    "in al, 0x40",
    "mov [0x7306], al",
    "out 0x1b, al",
    // The same ticks through the IOAPIC (pin 0, vector 0x50), the PIC's IRQ 0 masked.
    "mov al, 0xf1",
    "out 0x21, al",
    "mov ecx, 0xfec00000",
    "mov dword ptr [ecx], 0x11",
    "mov dword ptr [ecx + 0x10], 0",
    "mov dword ptr [ecx], 0x10",
    "mov dword ptr [ecx + 0x10], 0x50",
    "sti",
    "8:",
    "hlt",
    "cmp dword ptr [0x7308], 5",
    "jb 8b",
    "cli",
    "out 0x1c, al",
    "5:",
    "jmp 5b",
    // IOAPIC pin 11 unmasked (level, vector 0x4b), for the resampling irqfd. Entered from
    // the handler below: interrupts on again.
    "chip_unmask11:",
    "sti",
    "mov ecx, 0xfec00000",
    "mov dword ptr [ecx], 0x26",
    "mov dword ptr [ecx + 0x10], 0x804b",
    "out 0x1f, al",
    "9:",
    "jmp 9b",
    "chip_h4b:",
    "push eax",
    "inc dword ptr [0x7110]",
    "mov eax, [0x7110]",
    "out 0x1d, al",                             // before the EOI
    "mov dword ptr [0xfee000b0], 0",
    "out 0x1e, al",                             // and after it
    "pop eax",
    "iretd",
    "chip_h50:",
    "inc dword ptr [0x7308]",
    "mov dword ptr [0xfee000b0], 0",
    "iretd",
    "chip_h20:",
    "push eax",
    "inc dword ptr [0x7300]",
    "mov al, 0x20",
    "out 0x20, al",
    "pop eax",
    "iretd",
    // IOAPIC handlers: each reports its count with an OUT, then EOIs.
    "chip_h45:",
    "push eax",
    "inc dword ptr [0x7100]",
    "mov eax, [0x7100]",
    "out 0x15, al",
    "mov dword ptr [0xfee000b0], 0",
    "pop eax",
    "iretd",
    "chip_h49:",
    "push eax",
    "inc dword ptr [0x7104]",
    "mov eax, [0x7104]",
    "out 0x13, al",                             // userspace lowers the line at the third
    "mov dword ptr [0xfee000b0], 0",
    "pop eax",
    "iretd",
    "chip_h48:",
    "push eax",
    "inc dword ptr [0x7108]",
    "mov eax, [0x7108]",
    "out 0x14, al",                             // userspace pulses GSI 8 again from here
    "mov dword ptr [0xfee000b0], 0",
    "out 0x1a, al",                             // and after the EOI
    "pop eax",
    "iretd",
    // PIC handlers.
    "chip_h21:",
    "push eax",
    "inc dword ptr [0x7200]",
    "mov al, 0x20",
    "out 0x20, al",
    "mov eax, [0x7200]",
    "out 0x17, al",
    "pop eax",
    "iretd",
    "chip_h23:",
    "push eax",
    "inc dword ptr [0x7204]",
    "mov al, 0x0b",                             // OCW3: read ISR
    "out 0x20, al",
    "in al, 0x20",
    "mov [0x7208], al",
    "mov al, 0x0a",                             // back to IRR
    "out 0x20, al",
    "in al, 0x20",
    "mov [0x7209], al",
    "mov al, 0x20",
    "out 0x20, al",
    "mov eax, [0x7204]",
    "out 0x18, al",
    "pop eax",
    "iretd",
    "chip_h2a:",
    "push eax",
    "inc dword ptr [0x720c]",
    "mov al, 0x20",
    "out 0xa0, al",
    "out 0x20, al",
    "mov eax, [0x720c]",
    "out 0x19, al",
    "pop eax",
    "iretd",
    ".code64",
    "chip_end:",
    ".popsection",
);

extern "C" {
    static chip_start: u8;
    static chip_end: u8;
    static chip_pic: u8;
    static chip_h45: u8;
    static chip_h48: u8;
    static chip_h49: u8;
    static chip_h21: u8;
    static chip_h23: u8;
    static chip_h2a: u8;
    static chip_pit: u8;
    static chip_h20: u8;
    static chip_h50: u8;
    static chip_h4b: u8;
    static chip_unmask11: u8;
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn create_irqchip(vm: &VmFd) -> Result<(), i32> {
    // SAFETY: no argument.
    if unsafe { libc::ioctl(vm.as_raw_fd(), KVM_CREATE_IRQCHIP, 0) } < 0 { Err(errno()) } else { Ok(()) }
}

/// `KVM_IRQ_LINE_STATUS`: the status, or the errno.
fn line(vm: &VmFd, gsi: u32, level: u32) -> Result<i32, i32> {
    let mut l = kvm_bindings::kvm_irq_level::default();
    l.__bindgen_anon_1.irq = gsi;
    l.level = level;
    // SAFETY: a valid kvm_irq_level, read and written back.
    if unsafe { libc::ioctl(vm.as_raw_fd(), KVM_IRQ_LINE_STATUS, &mut l) } < 0 {
        return Err(errno());
    }
    // SAFETY: the union's status member after KVM_IRQ_LINE_STATUS.
    Ok(unsafe { l.__bindgen_anon_1.status } as i32)
}

/// A pulse (high, then low): both statuses.
fn pulse(vm: &VmFd, gsi: u32) -> String {
    format!("{:?} {:?}", line(vm, gsi, 1), line(vm, gsi, 0))
}

fn chip(vm: &VmFd, id: u32) -> Result<kvm_irqchip, i32> {
    let mut c = kvm_irqchip { chip_id: id, ..Default::default() };
    vm.get_irqchip(&mut c).map(|_| c).map_err(|e| e.errno())
}

fn print_chip(name: &str, vm: &VmFd) {
    for id in 0..2 {
        match chip(vm, id) {
            // SAFETY: chips 0 and 1 are PICs.
            Ok(c) => println!("{name} pic{id} {:?}", unsafe { c.chip.pic }),
            Err(e) => println!("{name} pic{id} errno {e}"),
        }
    }
    match chip(vm, 2) {
        Ok(c) => {
            // SAFETY: chip 2 is the IOAPIC.
            let io = unsafe { c.chip.ioapic };
            // SAFETY: every redirection entry as its 64 bits.
            let tbl: Vec<String> = io.redirtbl.iter().map(|e| format!("{:x}", unsafe { e.bits })).collect();
            println!("{name} ioapic base {:#x} ioregsel {:#x} id {} irr {:#x} redirtbl {}", io.base_address, io.ioregsel, io.id, io.irr, tbl.join(","));
        }
        Err(e) => println!("{name} ioapic errno {e}"),
    }
}

fn read32(g: &Guest, at: usize) -> u32 {
    // SAFETY: inside the 64 KiB mapping.
    unsafe { g.mem.add(at).cast::<u32>().read_unaligned() }
}

/// One run: the exit, as a line.
fn step(g: &mut Guest) -> String {
    match g.vcpu.run() {
        Ok(VcpuExit::IoOut(port, data)) => format!("out {port:#x} {:#x}", data.first().copied().unwrap_or(0)),
        Ok(VcpuExit::IoIn(port, data)) => {
            data.fill(0);
            format!("in {port:#x} size {}", data.len())
        }
        Ok(VcpuExit::MmioWrite(addr, _)) => format!("mmio_write {addr:#x}"),
        Ok(VcpuExit::MmioRead(addr, data)) => {
            data.fill(0);
            format!("mmio_read {addr:#x}")
        }
        Ok(other) => format!("other {other:?}"),
        Err(e) => format!("error {}", e.errno()),
    }
}

/// A non-blocking eventfd.
fn eventfd() -> i32 {
    // SAFETY: no pointer arguments.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK) };
    assert!(fd >= 0, "eventfd");
    fd
}

/// An eventfd's count (reading resets it), or `none`.
fn take(fd: i32) -> String {
    let mut v = 0u64;
    // SAFETY: eight bytes into a u64.
    let r = unsafe { libc::read(fd, (&raw mut v).cast(), 8) };
    if r == 8 { v.to_string() } else { "none".into() }
}

fn signal(fd: i32) {
    let v = 1u64;
    // SAFETY: eight bytes from a u64.
    assert_eq!(unsafe { libc::write(fd, (&raw const v).cast(), 8) }, 8);
}

/// `KVM_IRQFD`: Ok, or the errno.
fn irqfd(vm: &VmFd, fd: i32, gsi: u32, flags: u32, resamplefd: i32) -> Result<(), i32> {
    let a = kvm_bindings::kvm_irqfd { fd: fd as u32, gsi, flags, resamplefd: resamplefd as u32, ..Default::default() };
    // SAFETY: KVM_IRQFD reads a kvm_irqfd.
    if unsafe { libc::ioctl(vm.as_raw_fd(), 0x4020_ae76, &a) } < 0 { Err(errno()) } else { Ok(()) }
}

/// The IOAPIC's `irr` and pin 11's entry.
fn pin11(vm: &VmFd) -> String {
    let c = chip(vm, 2).unwrap();
    // SAFETY: chip 2 is the IOAPIC; the entry as its 64 bits.
    let (irr, e) = unsafe { (c.chip.ioapic.irr, c.chip.ioapic.redirtbl[11].bits) };
    format!("irr {irr:#x} pin11 {e:#x}")
}

/// Sets IOAPIC pin 11's entry.
fn set_pin11(vm: &VmFd, bits: u64) {
    let mut c = chip(vm, 2).unwrap();
    // SAFETY: chip 2 is the IOAPIC.
    unsafe { c.chip.ioapic.redirtbl[11].bits = bits };
    vm.set_irqchip(&c).unwrap();
}

fn create_pit2(vm: &VmFd, flags: u32) -> Result<(), i32> {
    let c = kvm_bindings::kvm_pit_config { flags, ..Default::default() };
    vm.create_pit2(c).map_err(|e| e.errno())
}

/// The PIT's state, but the load times (host clock readings).
fn print_pit(name: &str, vm: &VmFd) {
    match vm.get_pit2() {
        Ok(s) => {
            // Not the latched count nor the status's OUT bit: they depend on when they were
            // latched.
            let ch: Vec<String> = s.channels.iter().map(|c| format!(
                "count {} latched {} status {} {:#x} rw {} {} {} mode {} bcd {} gate {}",
                c.count, c.count_latched, c.status_latched, c.status & 0x7f, c.read_state, c.write_state,
                c.rw_mode, c.mode, c.bcd, c.gate)).collect();
            println!("{name} flags {:#x} {}", s.flags, ch.join(" | "));
        }
        Err(e) => println!("{name} errno {}", e.errno()),
    }
}

fn errnos_pit(kvm: &Kvm) {
    let vm = kvm.create_vm().unwrap();
    println!("pit errno create_without_irqchip {:?}", create_pit2(&vm, 0));
    print_pit("pit errno get_without_pit", &vm);
    let rc = kvm_bindings::kvm_reinject_control::default();
    // SAFETY: KVM_REINJECT_CONTROL reads a kvm_reinject_control.
    let r = unsafe { libc::ioctl(vm.as_raw_fd(), 0xae71, &rc) };
    println!("pit errno reinject_without_pit {:?}", if r < 0 { Err(errno()) } else { Ok(()) });
    create_irqchip(&vm).unwrap();
    println!("pit errno create {:?}", create_pit2(&vm, 1));
    println!("pit errno create_again {:?}", create_pit2(&vm, 0));
    // SAFETY: KVM_CREATE_PIT takes no argument.
    let r = unsafe { libc::ioctl(vm.as_raw_fd(), 0xae64, 0) };
    println!("pit errno create_v1 {:?}", if r < 0 { Err(errno()) } else { Ok(()) });
    print_pit("pit reset", &vm);
    let mut s = vm.get_pit2().unwrap();
    s.channels[1].mode = 2;
    s.channels[1].count = 100;
    s.channels[1].rw_mode = 3;
    s.channels[2].gate = 1;
    s.flags = 2;
    println!("pit set {:?}", vm.set_pit2(&s).map_err(|e| e.errno()));
    print_pit("pit after_set", &vm);
    // SAFETY: as above.
    let r = unsafe { libc::ioctl(vm.as_raw_fd(), 0xae71, &rc) };
    println!("pit reinject_off {:?}", if r < 0 { Err(errno()) } else { Ok(()) });
}

fn errnos(kvm: &Kvm) {
    let vm = kvm.create_vm().unwrap();
    println!("errno get_before_create {:?}", chip(&vm, 0).map(|_| ()));
    println!("errno line_before_create {:?}", line(&vm, 0, 1));
    println!("errno create {:?}", create_irqchip(&vm));
    println!("errno create_again {:?}", create_irqchip(&vm));
    let split = kvm_bindings::kvm_enable_cap { cap: kvm_bindings::KVM_CAP_SPLIT_IRQCHIP, args: [24, 0, 0, 0], ..Default::default() };
    println!("errno split_after_create {:?}", vm.enable_cap(&split).map_err(|e| e.errno()));
    println!("errno get_chip3 {:?}", chip(&vm, 3).map(|_| ()));
    let c = kvm_irqchip { chip_id: 7, ..Default::default() };
    println!("errno set_chip7 {:?}", vm.set_irqchip(&c).map_err(|e| e.errno()));
    print_chip("reset", &vm);
    // Lines with the default routes before anyone programmed a chip: the PIC (reset, all
    // unmasked) takes edges; the IOAPIC's pins are masked.
    for gsi in [0u32, 2, 7, 8, 9, 15, 16, 23, 24, 1000] {
        println!("line gsi {gsi} {}", pulse(&vm, gsi));
    }
    println!("line held {:?} {:?} {:?}", line(&vm, 4, 1), line(&vm, 4, 1), line(&vm, 4, 0));
    print_chip("after_lines", &vm);
    // SET_IRQCHIP: the PIC takes a state whole; the IOAPIC's pending pins are raised again.
    let mut m = chip(&vm, 0).unwrap();
    m.chip.pic.irq_base = 0x40;
    m.chip.pic.imr = 0x0f;
    m.chip.pic.elcr = 0xff;
    println!("set pic0 {:?}", vm.set_irqchip(&m).map_err(|e| e.errno()));
    let mut io = chip(&vm, 2).unwrap();
    // SAFETY: chip 2 is the IOAPIC.
    unsafe {
        io.chip.ioapic.id = 3;
        io.chip.ioapic.irr = 1 << 6 | 1 << 7;
        io.chip.ioapic.redirtbl[6].bits = 0x8056;
        io.chip.ioapic.ioregsel = 0x33;
    }
    println!("set ioapic {:?}", vm.set_irqchip(&io).map_err(|e| e.errno()));
    print_chip("after_set", &vm);

    // Custom routes: irqchip entries, their errnos, and lines through them.
    let entry = |gsi: u32, chip: u32, pin: u32| {
        let mut e = kvm_irq_routing_entry { gsi, type_: kvm_bindings::KVM_IRQ_ROUTING_IRQCHIP, ..Default::default() };
        e.u.irqchip.irqchip = chip;
        e.u.irqchip.pin = pin;
        e
    };
    let msi = |gsi: u32| {
        let mut e = kvm_irq_routing_entry { gsi, type_: kvm_bindings::KVM_IRQ_ROUTING_MSI, ..Default::default() };
        e.u.msi.address_lo = 0xfee0_0000;
        e.u.msi.data = 0x30;
        e
    };
    let set = |entries: &[kvm_irq_routing_entry]| {
        let r = KvmIrqRouting::from_entries(entries).unwrap();
        vm.set_gsi_routing(&r).map_err(|e| e.errno())
    };
    println!("routing pic_pin8 {:?}", set(&[entry(1, 0, 8)]));
    println!("routing ioapic_pin24 {:?}", set(&[entry(1, 2, 24)]));
    println!("routing chip3 {:?}", set(&[entry(1, 3, 0)]));
    println!("routing same_chip_twice {:?}", set(&[entry(1, 2, 1), entry(1, 2, 2)]));
    println!("routing msi_and_pin {:?}", set(&[entry(1, 2, 1), msi(1)]));
    println!("routing master_and_slave {:?}", set(&[entry(1, 0, 1), entry(1, 1, 1)]));
    println!("routing ok {:?}", set(&[entry(3, 0, 5), entry(3, 2, 6), entry(4, 1, 3), msi(40)]));
    for gsi in [3u32, 4, 5, 40] {
        println!("routed gsi {gsi} {}", pulse(&vm, gsi));
    }
    print_chip("after_routes", &vm);

    // Resampling irqfds: a bad resamplefd; then one assigned and deassigned.
    const RESAMPLE: u32 = kvm_bindings::KVM_IRQFD_FLAG_RESAMPLE;
    let (e, r) = (eventfd(), eventfd());
    println!("irqfd resample_bad_fd {:?}", irqfd(&vm, e, 9, RESAMPLE, -1));
    println!("irqfd resample_not_eventfd {:?}", irqfd(&vm, e, 9, RESAMPLE, vm.as_raw_fd()));
    println!("irqfd resample_bad_irqfd {:?}", irqfd(&vm, -1, 9, RESAMPLE, r));
    println!("irqfd resample {:?}", irqfd(&vm, e, 9, RESAMPLE, r));
    println!("irqfd resample_again {:?}", irqfd(&vm, e, 10, RESAMPLE, r));
    println!("irqfd resample_shared_resamplefd {:?}", irqfd(&vm, eventfd(), 9, RESAMPLE, r));
    println!("irqfd resample_deassign {:?}", irqfd(&vm, e, 9, kvm_bindings::KVM_IRQFD_FLAG_DEASSIGN, -1));
    let no_chip = kvm.create_vm().unwrap();
    println!("irqfd resample_without_irqchip {:?}", irqfd(&no_chip, e, 9, RESAMPLE, r));

    // A vCPU first: KVM_CREATE_IRQCHIP is refused. A split irqchip: EEXIST.
    let vm = kvm.create_vm().unwrap();
    let _v = vm.create_vcpu(0).unwrap();
    println!("errno create_after_vcpu {:?}", create_irqchip(&vm));
    let vm = kvm.create_vm().unwrap();
    println!("errno split {:?}", vm.enable_cap(&split).map_err(|e| e.errno()));
    println!("errno create_after_split {:?}", create_irqchip(&vm));
    println!("errno get_on_split {:?}", chip(&vm, 2).map(|_| ()));
    println!("irqfd resample_on_split {:?}", irqfd(&vm, eventfd(), 9, kvm_bindings::KVM_IRQFD_FLAG_RESAMPLE, eventfd()));
    println!("irqfd plain_on_split {:?}", irqfd(&vm, eventfd(), 9, 0, -1));
}

fn main() -> ExitCode {
    let Some(dev) = std::env::args().nth(1) else {
        eprintln!("usage: kvm-irqchip-check DEVICE");
        return ExitCode::from(2);
    };
    let kvm = Kvm::new_with_path(&CString::new(dev).unwrap()).expect("open device");
    // A guest that never exits would keep the suite waiting for its VM's time limit.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(180));
        println!("timeout: no exit within 180 s");
        std::process::exit(3);
    });
    println!("info cap_irqchip {}", kvm.check_extension_raw(kvm_bindings::KVM_CAP_IRQCHIP.into()));
    errnos(&kvm);
    errnos_pit(&kvm);

    // The guest: a VM with the irqchip first, then the vCPU.
    // SAFETY: the symbols are the guest assembled above.
    let (code_bytes, off) = unsafe {
        let base = &chip_start as *const u8;
        let off = |p: &u8| (p as *const u8).offset_from(base) as u32;
        (code(&chip_start, &chip_end), [off(&chip_pic), off(&chip_h45), off(&chip_h48), off(&chip_h49), off(&chip_h21), off(&chip_h23), off(&chip_h2a), off(&chip_pit), off(&chip_h20), off(&chip_h50), off(&chip_h4b), off(&chip_unmask11)])
    };
    let [pic, h45, h48, h49, h21, h23, h2a, pit, h20, h50, h4b, unmask11] = off;
    let vm = kvm.create_vm().unwrap();
    println!("guest create_irqchip {:?}", create_irqchip(&vm));
    // `guest` makes its own VM: borrow its memory layout, with the vCPU on ours.
    let g0 = guest(&kvm, code_bytes);
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot: 0, flags: 0, guest_phys_addr: 0, memory_size: rvmx_test_programs::MEM as u64, userspace_addr: g0.mem as u64,
    };
    // SAFETY: the mapping lives as long as the process.
    unsafe { vm.set_user_memory_region(region) }.unwrap();
    let vcpu = vm.create_vcpu(0).unwrap();
    let mut g = Guest { vm, vcpu, mem: g0.mem };
    drop(g0.vcpu);
    drop(g0.vm);
    // SAFETY: KVM_INTERRUPT with a valid argument.
    let r = unsafe { libc::ioctl(g.vcpu.as_raw_fd(), KVM_INTERRUPT, &0x30u32) };
    println!("errno kvm_interrupt {:?}", if r < 0 { Err(errno()) } else { Ok(()) });
    // GDT at 0x600 (null, code 0x08, data 0x10), IDT at 0x800: 32-bit interrupt gates.
    // SAFETY: inside the 64 KiB mapping.
    unsafe {
        let gdt = g.mem.add(0x600).cast::<u64>();
        gdt.add(1).write(0x00cf_9b00_0000_ffff);
        gdt.add(2).write(0x00cf_9300_0000_ffff);
        for (vector, at) in [(0x45usize, h45), (0x48, h48), (0x49, h49), (0x21, h21), (0x23, h23), (0x2a, h2a), (0x20, h20), (0x50, h50), (0x4b, h4b)] {
            let handler = 0x1000 + at;
            let gate = (handler as u64 & 0xffff) | 0x08 << 16 | 0x8e00u64 << 32 | ((handler as u64 >> 16) << 48);
            g.mem.add(0x800 + vector * 8).cast::<u64>().write(gate);
        }
    }
    let mut s = g.vcpu.get_sregs().unwrap();
    s.cs = flat(11, 8);
    (s.ds, s.es, s.fs, s.gs, s.ss) = (flat(3, 16), flat(3, 16), flat(3, 16), flat(3, 16), flat(3, 16));
    s.cr0 = 0x11;
    s.gdt.base = 0x600;
    s.gdt.limit = 23;
    s.idt.base = 0x800;
    s.idt.limit = 0x7ff;
    g.vcpu.set_sregs(&s).unwrap();
    let mut r = g.vcpu.get_regs().unwrap();
    (r.rip, r.rsp, r.rflags) = (0x1000, 0x9000, 2);
    g.vcpu.set_regs(&r).unwrap();

    // IOAPIC: set up, then an edge interrupt from another thread wakes the halted guest.
    println!("ioapic {}", step(&mut g));
    println!("ioapic regs version {:#x} id {:#x} pin9 {:#x} reg3 {:#x} ioregsel {:#x} byte {:#x}",
             read32(&g, 0x7000), read32(&g, 0x7004), read32(&g, 0x7008), read32(&g, 0x700c), read32(&g, 0x7010), read32(&g, 0x7014) & 0xff);
    let vm_fd = g.vm.as_raw_fd();
    let waker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut l = kvm_bindings::kvm_irq_level::default();
        l.__bindgen_anon_1.irq = 5;
        l.level = 1;
        // SAFETY: a valid kvm_irq_level on the VM fd, which outlives the thread.
        unsafe { libc::ioctl(vm_fd, 0x4008_ae61, &l) };
        l.level = 0;
        // SAFETY: as above.
        unsafe { libc::ioctl(vm_fd, 0x4008_ae61, &l) };
    });
    println!("ioapic hlt_woken {}", step(&mut g));
    waker.join().unwrap();
    println!("ioapic after_handler {}", step(&mut g));
    // The guest spins from here: every run below has an interrupt to take.
    println!("ioapic edge {}", pulse(&g.vm, 5));
    println!("ioapic edge_exit {}", step(&mut g));
    // Level: delivered, and again at each EOI while the line stays high.
    println!("ioapic level_high {:?}", line(&g.vm, 9, 1));
    for i in 0..3 {
        let e = step(&mut g);
        println!("ioapic level {i} {e}");
        if i == 2 {
            println!("ioapic level_low {:?}", line(&g.vm, 9, 0));
        }
    }
    print_chip("level", &g.vm);
    // RTC pin: coalesced while the guest has not EOI'd the last one.
    println!("ioapic rtc {}", pulse(&g.vm, 8));
    println!("ioapic rtc_exit {}", step(&mut g));
    println!("ioapic rtc_coalesced {}", pulse(&g.vm, 8));
    println!("ioapic rtc_eoi {}", step(&mut g));
    // EOI'd: the next pulse is delivered.
    println!("ioapic rtc_after_eoi {}", pulse(&g.vm, 8));
    println!("ioapic rtc_exit2 {}", step(&mut g));
    println!("ioapic rtc_eoi2 {}", step(&mut g));
    println!("ioapic counts {} {} {}", read32(&g, 0x7100), read32(&g, 0x7104), read32(&g, 0x7108));

    // A resampling irqfd on GSI 11 (IOAPIC pin 11: level, vector 0x4b). The guest spins with
    // interrupts on.
    let (e, rs) = (eventfd(), eventfd());
    set_pin11(&g.vm, 0x804b);
    println!("resample assign {:?}", irqfd(&g.vm, e, 11, kvm_bindings::KVM_IRQFD_FLAG_RESAMPLE, rs));
    signal(e);
    println!("resample delivered {} resamplefd {}", step(&mut g), take(rs));
    println!("resample before_eoi {}", pin11(&g.vm));
    println!("resample after_eoi {} resamplefd {} {}", step(&mut g), take(rs), pin11(&g.vm));
    // The device's line is still up: it signals again and the interrupt comes again.
    signal(e);
    println!("resample again {}", step(&mut g));
    println!("resample again_eoi {} resamplefd {}", step(&mut g), take(rs));
    // Raised while the pin is masked, then unmasked by the guest: the stale request is dropped
    // and the resamplefd asked instead of the interrupt delivered.
    set_pin11(&g.vm, 0x1804b);
    signal(e);
    std::thread::sleep(Duration::from_millis(100)); // KVM raises the line from a work item
    println!("resample masked {}", pin11(&g.vm));
    let mut r = g.vcpu.get_regs().unwrap();
    r.rip = 0x1000 + u64::from(unmask11);
    g.vcpu.set_regs(&r).unwrap();
    println!("resample unmasked {} resamplefd {} {}", step(&mut g), take(rs), pin11(&g.vm));
    signal(e);
    println!("resample after_unmask {}", step(&mut g));
    println!("resample after_unmask_eoi {} resamplefd {}", step(&mut g), take(rs));
    // Deassigned while the line is up (the handler has not EOI'd): the line drops; the EOI
    // signals nothing.
    signal(e);
    println!("resample held {}", step(&mut g));
    println!("resample deassign {:?}", irqfd(&g.vm, e, 11, kvm_bindings::KVM_IRQFD_FLAG_DEASSIGN, -1));
    println!("resample deassigned {}", pin11(&g.vm));
    println!("resample deassigned_eoi {} resamplefd {}", step(&mut g), take(rs));
    println!("resample count {}", read32(&g, 0x7110));

    // The PIC pair.
    let mut r = g.vcpu.get_regs().unwrap();
    r.rip = 0x1000 + u64::from(pic);
    g.vcpu.set_regs(&r).unwrap();
    println!("pic setup {}", step(&mut g));
    println!("pic imr {:#x} {:#x} word {:#x}", read32(&g, 0x7020) & 0xff, read32(&g, 0x7021) & 0xff, read32(&g, 0x7022) & 0xffff);
    println!("pic irq1 {}", pulse(&g.vm, 1));
    println!("pic irq1_exit {}", step(&mut g));
    println!("pic irq3 {}", pulse(&g.vm, 3));
    println!("pic irq3_exit {} isr {:#x} irr {:#x}", step(&mut g), read32(&g, 0x7208) & 0xff, read32(&g, 0x7209) & 0xff);
    println!("pic irq10 {}", pulse(&g.vm, 10));
    println!("pic irq10_exit {}", step(&mut g));
    // Two at once: the lower IRQ first.
    println!("pic both {} {}", pulse(&g.vm, 3), pulse(&g.vm, 1));
    println!("pic both_first {}", step(&mut g));
    println!("pic both_second {}", step(&mut g));
    println!("pic masked {}", pulse(&g.vm, 4));
    println!("pic counts {} {} {}", read32(&g, 0x7200), read32(&g, 0x7204), read32(&g, 0x720c));
    print_chip("end", &g.vm);

    // The 8254 (KVM_CREATE_PIT2 without the speaker port): five ticks on IRQ 0.
    println!("pit create {:?}", create_pit2(&g.vm, 0));
    print_pit("pit created", &g.vm);
    let mut r = g.vcpu.get_regs().unwrap();
    r.rip = 0x1000 + u64::from(pit);
    g.vcpu.set_regs(&r).unwrap();
    println!("pit speaker {}", step(&mut g));
    let t0 = std::time::Instant::now();
    println!("pit done {}", step(&mut g));
    let ms = t0.elapsed().as_millis();
    // At least five: a tick waiting for the fifth's EOI may come before the guest looks.
    println!("pit ticks_at_least_5 {}", read32(&g, 0x7300) >= 5);
    println!("info pit ticks {}", read32(&g, 0x7300));
    let count = read32(&g, 0x7304) & 0xffff;
    println!("pit latched_below_initial {}", count > 0 && count <= 11932);
    println!("pit status {:#x}", read32(&g, 0x7306) & 0x3f);
    println!("info pit five_ticks_ms {ms} latched {count}");
    println!("pit five_ticks_took_40ms_or_more {}", ms >= 40);
    // With the PIC in the kernel userspace is always "ready" (nothing for it to inject).
    println!("pit ready_for_interrupt_injection {}", g.vcpu.get_kvm_run().ready_for_interrupt_injection);
    // Through the IOAPIC: the PIT's next tick waits for the EOI of the last one there too.
    println!("pit ioapic_done {}", step(&mut g));
    println!("pit ioapic_ticks_at_least_5 {}", read32(&g, 0x7308) >= 5);
    println!("info pit ioapic_ticks {}", read32(&g, 0x7308));
    print_pit("pit end", &g.vm);
    ExitCode::SUCCESS
}
