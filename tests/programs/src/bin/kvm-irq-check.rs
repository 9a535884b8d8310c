//! Interrupts without an in-kernel irqchip, through rust-vmm's `kvm-ioctls`: a real-mode
//! guest (assembled below) with handlers for an external interrupt, NMIs, INT n and #UD is
//! driven the way a userspace PIC/LAPIC drives a vCPU: `request_interrupt_window` and
//! `KVM_EXIT_IRQ_WINDOW_OPEN` (also right after STI and MOV SS), `KVM_INTERRUPT` when
//! `ready_for_interrupt_injection` says so, `KVM_NMI` (at most two latched, none nested),
//! `KVM_GET/SET_VCPU_EVENTS` and the interrupt bitmap of SREGS. Several deliveries push onto
//! a stack page the guest never touched, so the VM exit for that page interrupts the
//! delivery, which must be completed afterwards (IDT-vectoring reinjection). Windows open
//! after POPF and IRET set IF, and an IRET from the NMI handler that faults to the host keeps
//! a waiting NMI out of the handler (NMI blocking restored for its second try). A 64-bit guest
//! uses CR8 (`KVM_EXIT_SET_TPR`, `kvm_run.cr8`). Every exit is printed with `kvm_run`'s
//! interrupt fields and the events; tests/vm/suite.sh requires the same output on
//! `/dev/rvmx` and `/dev/kvm` (but for `info` lines).
//!
//! Usage: kvm-irq-check DEVICE

use std::{ffi::CString, process::ExitCode};

use kvm_bindings::{kvm_userspace_memory_region, kvm_vcpu_events};
use kvm_ioctls::{Cap, Kvm, VcpuExit};
use rvmx_test_programs::{code, guest, interrupt, long_mode_guest, Guest, MEM};


// Real-mode guest at 0x1000. Counters: [0x7000] interrupts 0x20, [0x7002] NMIs, [0x7004]
// #UD. Each `mov sp` moves the stack to a page nothing has touched yet.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".code16",
    ".globl irq_start", ".globl irq_end", ".globl irq_h20", ".globl irq_nmi", ".globl irq_ud",
    "irq_start:",
    "mov sp, 0x8000",
    "cli",
    "out 0x10, al",                 // IF=0: not ready
    "sti",
    "out 0x11, al",                 // in the STI shadow
    "nop",
    "out 0x12, al",                 // ready; userspace asks for a window: at once
    "cli",
    "out 0x13, al",                 // IF=0; userspace asks for a window
    "sti",
    "mov bx, 0x1234",               // the shadow: the window opens after this
    "nop",                          // userspace injects here
    "mov sp, 0xa000",               // fresh stack page
    "out 0x14, al",                 // userspace: KVM_INTERRUPT 0x20, delivered after the OUT
    "mov cx, [0x7000]",
    "out 0x15, al",
    "mov ax, 0",
    "out 0x18, al",                 // userspace: window request; MOV SS shadow next
    "mov ss, ax",
    "mov dx, 0x5678",               // the shadow: the window opens after this
    "nop",
    "mov sp, 0xc000",               // fresh stack page for NMIs
    "out 0x16, al",                 // userspace: three KVM_NMIs
    "nop",
    "out 0x17, al",
    "mov sp, 0xd000",               // fresh stack page for INT 0x20
    "int 0x20",
    "out 0x19, al",
    "mov sp, 0xe000",               // fresh stack page for #UD
    "ud2",
    "out 0x1a, al",                 // userspace: interrupt through SET_VCPU_EVENTS
    "nop",
    "out 0x1b, al",                 // userspace: interrupt through SREGS' bitmap
    "nop",
    "mov sp, 0xf000",
    "pushf",                        // IF set by POPF (no shadow): the window opens after it
    "pop ax",
    "or ax, 0x200",
    "push ax",
    "cli",
    "out 0x1c, al",                 // userspace: window request
    "popf",
    "nop",
    "pushf",                        // IF set by IRET to the next instruction
    "pop ax",
    "or ax, 0x200",
    "push ax",
    "push 0",
    ".byte 0x68",                   // PUSH imm16: the IP of 3 (the guest runs at 0x1000, CS 0)
    ".word 3f - irq_start + 0x1000",
    "cli",
    "out 0x1d, al",                 // userspace: window request
    "iret",
    "3:",
    "nop",
    "cli",
    "out 0x1e, al",
    "hlt",
    "irq_h20:",
    "inc word ptr [0x7000]",
    "out 0x21, al",
    "iret",
    "irq_nmi:",
    "inc word ptr [0x7002]",
    "out 0x22, al",                 // userspace: one more KVM_NMI while this one is handled
    "iret",
    "irq_ud:",
    "inc word ptr [0x7004]",
    "push bp",
    "mov bp, sp",
    "add word ptr [bp + 2], 2",     // past the UD2
    "pop bp",
    "out 0x23, al",
    "iret",
    "irq_end:",
    ".code64",
    ".popsection",
);

// 64-bit guest: CR8 writes and reads; a reserved bit raises #GP (no IDT: shutdown).
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl cr8_start", ".globl cr8_end",
    "cr8_start:",
    "mov rax, 5",
    "mov cr8, rax",
    "out 0x30, al",
    "mov rax, 9",
    "mov cr8, rax",                 // raise: no exit
    "mov rax, 0x102",               // bits 63:8 ignored: 2, lower: KVM_EXIT_SET_TPR
    "mov cr8, rax",
    "mov rbx, cr8",
    "out 0x31, al",
    "mov rax, 0x10",                // bit 4: #GP
    "mov cr8, rax",
    "hlt",
    "cr8_end:",
    ".popsection",
);

// Real-mode guest: an IRET from the NMI handler that faults to the host (its stack page left
// EPT, as userspace deleted and added the memory slot again) while a second NMI waits. The
// IRET had unblocked NMIs when it faulted; they must be blocked again for its second try, so
// the waiting NMI comes after the IRET, not inside the handler. Each handler run reports
// the IP it interrupted (in AX).
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".code16",
    ".globl nmiret_start", ".globl nmiret_end", ".globl nmiret_handler",
    "nmiret_start:",
    "mov sp, 0x8000",
    "out 0x40, al",                 // userspace: KVM_NMI
    "nop",                          // the NMI comes before this instruction
    "out 0x42, al",
    "hlt",
    "nmiret_handler:",
    "mov bp, sp",
    "mov ax, [bp]",                 // the interrupted IP
    "out 0x41, al",                 // first run: KVM_NMI (waits) and the memory slot replaced
    "iret",
    "nmiret_end:",
    ".code64",
    ".popsection",
);

extern "C" {
    static nmiret_start: u8;
    static nmiret_end: u8;
    static nmiret_handler: u8;
    static irq_start: u8;
    static irq_end: u8;
    static irq_h20: u8;
    static irq_nmi: u8;
    static irq_ud: u8;
    static cr8_start: u8;
    static cr8_end: u8;
}

fn word(g: &Guest, gpa: usize) -> u16 {
    // SAFETY: inside the 64 KiB mapping.
    unsafe { g.mem.add(gpa).cast::<u16>().read_unaligned() }
}

fn events(g: &Guest) -> String {
    let e = g.vcpu.get_vcpu_events().unwrap();
    // A vector means something only while its event is there (KVM leaves the last one).
    let exc = if e.exception.injected != 0 { e.exception.nr } else { 0 };
    let irq = if e.interrupt.injected != 0 { e.interrupt.nr } else { 0 };
    format!("events exc {}/{} irq {}/{:#x} shadow {} nmi inj {} pend {} masked {} flags {:#x}",
            e.exception.injected, exc, e.interrupt.injected, irq,
            e.interrupt.shadow, e.nmi.injected, e.nmi.pending, e.nmi.masked, e.flags)
}

/// One `KVM_RUN`, printed with `kvm_run`'s interrupt fields; the OUT port or 0.
fn step(name: &str, g: &mut Guest) -> u16 {
    let (what, port) = match g.vcpu.run() {
        Ok(VcpuExit::IoOut(port, _)) => (format!("out {port:#x}"), port),
        Ok(VcpuExit::IrqWindowOpen) => ("irq_window_open".to_string(), 1),
        Ok(VcpuExit::SetTpr) => ("set_tpr".to_string(), 2),
        Ok(VcpuExit::Hlt) => ("hlt".to_string(), 0),
        Ok(VcpuExit::Shutdown) => ("shutdown".to_string(), 0),
        Ok(other) => (format!("other {other:?}"), 0),
        Err(e) => (format!("error errno {}", e.errno()), 0),
    };
    let r = g.vcpu.get_kvm_run();
    let (ready, if_flag, cr8) = (r.ready_for_interrupt_injection, r.if_flag, r.cr8);
    let rip = g.vcpu.get_regs().unwrap().rip;
    println!("{name} {what} rip {rip:#x} if {if_flag} ready {ready} cr8 {cr8} {}", events(g));
    port
}

fn real_mode(kvm: &Kvm) {
    // SAFETY: the symbols delimit the guest assembled above.
    let (start, blob) = unsafe { (&irq_start as *const u8 as usize, code(&irq_start, &irq_end)) };
    let mut g = guest(kvm, blob);
    // SAFETY: handler symbols inside the blob.
    for (vector, h) in unsafe { [(0x20usize, &irq_h20 as *const u8), (2, &irq_nmi), (6, &irq_ud)] } {
        let ip = (h as usize - start + 0x1000) as u16;
        // SAFETY: the IVT at 0 is inside the mapping.
        unsafe { g.mem.add(4 * vector).cast::<[u16; 2]>().write_unaligned([ip, 0]) };
    }
    println!("bad_irq {:?}", interrupt(&g.vcpu, 256));
    use kvm_bindings::{kvm_mp_state, KVM_MP_STATE_HALTED, KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_UNINITIALIZED};
    println!("mp_state {:?}", g.vcpu.get_mp_state().map(|m| m.mp_state).map_err(|e| e.errno()));
    for state in [KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_UNINITIALIZED, KVM_MP_STATE_HALTED, 99] {
        let r = g.vcpu.set_mp_state(kvm_mp_state { mp_state: state }).map_err(|e| e.errno());
        println!("set_mp_state {state} {r:?}");
    }
    let set_window = |g: &mut Guest, on: u8| g.vcpu.get_kvm_run().request_interrupt_window = on;
    let mut nmi_handled = 0;
    for _ in 0..80 {
        match step("irq", &mut g) {
            0 => break,
            0x12 | 0x13 | 0x18 | 0x1c | 0x1d => set_window(&mut g, 1),
            1 => {
                set_window(&mut g, 0);
                println!("irq window interrupt {:?}", interrupt(&g.vcpu, 0x20));
            }
            0x14 => println!("irq interrupt {:?}", interrupt(&g.vcpu, 0x20)),
            0x16 => (0..3).for_each(|_| g.vcpu.nmi().unwrap()),
            0x22 => {
                nmi_handled += 1;
                if nmi_handled == 1 {
                    g.vcpu.nmi().unwrap();
                    println!("irq nmi_while_handling {}", events(&g));
                }
            }
            0x1a => {
                let mut e = g.vcpu.get_vcpu_events().unwrap();
                let bad = kvm_vcpu_events { flags: 1 << 7, ..e };
                println!("irq set_events_bad_flags {:?}", g.vcpu.set_vcpu_events(&bad).map_err(|e| e.errno()));
                let mut bad = e;
                bad.exception.injected = 1;
                bad.exception.nr = 2;
                println!("irq set_events_nmi_as_exception {:?}", g.vcpu.set_vcpu_events(&bad).map_err(|e| e.errno()));
                e.interrupt.injected = 1;
                e.interrupt.nr = 0x20;
                println!("irq set_events {:?}", g.vcpu.set_vcpu_events(&e).map_err(|e| e.errno()));
                let s = g.vcpu.get_sregs().unwrap();
                println!("irq sregs_bitmap {:x?}", s.interrupt_bitmap);
            }
            0x1b => {
                // Two bits: the lowest is queued.
                let mut s = g.vcpu.get_sregs().unwrap();
                s.interrupt_bitmap = [1 << 0x20 | 1 << 0x30, 0, 0, 0];
                println!("irq sregs_queue {:?}", g.vcpu.set_sregs(&s).map_err(|e| e.errno()));
                println!("irq sregs_bitmap_after {:x?}", g.vcpu.get_sregs().unwrap().interrupt_bitmap);
            }
            _ => {}
        }
    }
    println!("irq counts interrupts {} nmis {} ud {} cx {:#x}", word(&g, 0x7000), word(&g, 0x7002), word(&g, 0x7004),
             g.vcpu.get_regs().unwrap().rcx & 0xffff);
}

fn nmi_iret(kvm: &Kvm) {
    // SAFETY: the symbols delimit the guest assembled above; the handler is inside it.
    let (blob, handler) = unsafe {
        (code(&nmiret_start, &nmiret_end), &nmiret_handler as *const u8 as usize - &nmiret_start as *const u8 as usize)
    };
    let mut g = guest(kvm, blob);
    // SAFETY: the IVT at 0 is inside the mapping.
    unsafe { g.mem.add(4 * 2).cast::<[u16; 2]>().write_unaligned([(handler + 0x1000) as u16, 0]) };
    let mut handled = 0;
    for _ in 0..12 {
        match step("nmi_iret", &mut g) {
            0 => break,
            0x40 => g.vcpu.nmi().unwrap(),
            0x41 => {
                handled += 1;
                println!("nmi_iret handler {handled} interrupted ip {:#x}", g.vcpu.get_regs().unwrap().rax & 0xffff);
                if handled == 1 {
                    g.vcpu.nmi().unwrap();
                    let mut region = kvm_userspace_memory_region {
                        slot: 0, flags: 0, guest_phys_addr: 0, memory_size: 0, userspace_addr: g.mem as u64,
                    };
                    // SAFETY: deletes slot 0, then maps the same memory again as before.
                    let deleted = unsafe { g.vm.set_user_memory_region(region) };
                    region.memory_size = MEM as u64;
                    // SAFETY: as above.
                    let added = unsafe { g.vm.set_user_memory_region(region) };
                    println!("nmi_iret slot replaced {:?} {:?}", deleted.map_err(|e| e.errno()), added.map_err(|e| e.errno()));
                }
            }
            _ => {}
        }
    }
}

fn cr8(kvm: &Kvm) {
    // SAFETY: the symbols delimit the guest assembled above.
    let mut g = long_mode_guest(kvm, unsafe { code(&cr8_start, &cr8_end) }, "cr8");
    let mut s = g.vcpu.get_sregs().unwrap();
    s.cr8 = 3;
    g.vcpu.set_sregs(&s).unwrap();
    println!("cr8 sregs {}", g.vcpu.get_sregs().unwrap().cr8);
    for _ in 0..6 {
        if step("cr8", &mut g) == 0 {
            break;
        }
    }
    let r = g.vcpu.get_regs().unwrap();
    println!("cr8 rbx {:#x} sregs {}", r.rbx, g.vcpu.get_sregs().unwrap().cr8);
}

fn main() -> ExitCode {
    let Some(dev) = std::env::args().nth(1) else {
        eprintln!("usage: kvm-irq-check DEVICE");
        return ExitCode::from(2);
    };
    let kvm = Kvm::new_with_path(&CString::new(dev).unwrap()).expect("open device");
    println!("caps user_nmi {} vcpu_events {} mp_state {}", kvm.check_extension(Cap::UserNmi),
             kvm.check_extension(Cap::VcpuEvents), kvm.check_extension(Cap::MpState));
    real_mode(&kvm);
    nmi_iret(&kvm);
    cr8(&kvm);
    ExitCode::SUCCESS
}
