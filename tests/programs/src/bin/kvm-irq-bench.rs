//! The interrupt path of the in-kernel local APIC (split irqchip), measured by the guest as
//! kvm-bench measures exits: TSC ticks per operation, 64-bit guests in x2APIC mode. The same
//! binary runs on `/dev/rvmx` and `/dev/kvm` (`make bench`, tests/vm/bench.sh). Not a
//! pass/fail test: in Bochs the TSC counts emulated instructions.
//!
//! - `ipi_round_trip`: vCPU 0 sends a fixed IPI to vCPU 1, whose handler answers with one;
//!   both wait with interrupts on, spinning (one vCPU per host CPU).
//! - `ipi_round_trip_hlt`: the same with both waiting in HLT: the HLT wake-up, twice per trip.
//! - `timer_tsc_deadline`: vCPU 0 arms its TSC-deadline timer at the present TSC and spins
//!   until the timer interrupt's handler ran (it writes EOI).
//! - `self_ipi`: a self-IPI (the x2APIC SELF_IPI register) taken at once, and its EOI.
//! - `eoi_write`: an EOI with nothing in service (x2APIC MSR write).
//! - `cr8_tpr`: the TPR through CR8 as a guest kernel uses it: raise it (MOV to CR8), read it,
//!   lower it again, with nothing pending (three CR8 accesses per operation).
//! - `irqfd_msi`: a device's interrupt through `KVM_IRQFD` on a GSI with an MSI route (how a
//!   virtio-pci device interrupts): a host thread signals the eventfd, the guest's handler
//!   counts and EOIs, the thread sees the count and signals again. The guest spins.
//!
//! Usage: kvm-irq-bench DEVICE
//! Prints `name ticks-per-operation` lines.

use std::{ffi::CString, process::ExitCode, time::Duration};

use kvm_bindings::{kvm_irq_routing_entry, kvm_mp_state, KvmIrqRouting, KVM_IRQ_ROUTING_MSI, KVM_MP_STATE_RUNNABLE};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use rvmx_test_programs::{code, pin_to, split};

// Memory the guests share: 0x500/0x508 the TSC before and after vCPU 0's loop, 0x8000 the
// "answered" flag of vCPU 0, 0x8010 "vCPU 1 is ready", 0x8018 "vCPU 1 may stop". vCPU 0 gets
// the count in RSI and ends with an OUT to port 0x99 (an HLT would sleep in the kernel).
std::arch::global_asm!(
    ".pushsection .rodata",
    ".code64",
    ".macro x2apic_on",
    "mov ecx, 0x1b", "rdmsr", "or eax, 0xc00", "wrmsr", // IA32_APIC_BASE: enabled, x2APIC
    "mov ecx, 0x80f", "mov eax, 0x1ff", "xor edx, edx", "wrmsr", // SVR: enabled, spurious 0xff
    ".endm",
    ".macro eoi",
    "mov ecx, 0x80b", "xor eax, eax", "xor edx, edx", "wrmsr",
    ".endm",
    ".macro start_clock",
    "rdtsc", "mov [0x500], eax", "mov [0x504], edx",
    ".endm",
    ".macro stop_clock",
    "rdtsc", "mov [0x508], eax", "mov [0x50c], edx",
    ".endm",
    // Wait until [0x8000] is set, spinning or (\hlt = 1) in HLT, interrupts on.
    ".macro wait_answer hlt",
    "3: cli",
    "cmp dword ptr [0x8000], 0",
    "jne 4f",
    "sti",
    ".if \\hlt", "hlt", ".else", "pause", ".endif",
    "jmp 3b",
    "4: sti",
    ".endm",
    // The IPI round trip, vCPU 0's side: IPI 0x40 to APIC 1, wait for its 0x41.
    ".macro ipi_bsp hlt",
    "x2apic_on",
    "sti",
    "1: cmp dword ptr [0x8010], 0", "je 1b",
    "start_clock",
    "2: mov dword ptr [0x8000], 0",
    "mov ecx, 0x830", "mov eax, 0x40", "mov edx, 1", "wrmsr",
    "wait_answer \\hlt",
    "dec esi", "jnz 2b",
    "stop_clock",
    // Let vCPU 1 go: the flag, and an IPI in case it sleeps.
    "mov dword ptr [0x8018], 1",
    "mov ecx, 0x830", "mov eax, 0x40", "mov edx, 1", "wrmsr",
    "out 0x99, al",
    ".endm",
    // vCPU 1: waits for IPIs until told to stop.
    ".macro ipi_ap hlt",
    "x2apic_on",
    "sti",
    "mov dword ptr [0x8010], 1",
    "2: .if \\hlt", "hlt", ".else", "pause", ".endif",
    "cmp dword ptr [0x8018], 0", "je 2b",
    "out 0x99, al",
    ".endm",
    "irqb_start:",
    "irqb_ipi_bsp: ipi_bsp 0",
    "irqb_ipi_ap: ipi_ap 0",
    "irqb_ipi_hlt_bsp: ipi_bsp 1",
    "irqb_ipi_hlt_ap: ipi_ap 1",
    // vCPU 1's handler of 0x40: EOI, then 0x41 back to APIC 0.
    "irqb_h40: push rax", "push rcx", "push rdx",
    "eoi",
    "mov ecx, 0x830", "mov eax, 0x41", "xor edx, edx", "wrmsr",
    "pop rdx", "pop rcx", "pop rax", "iretq",
    // vCPU 0's handler of the answer, of its timer and of its self-IPI: EOI, flag.
    "irqb_answer: push rax", "push rcx", "push rdx",
    "mov dword ptr [0x8000], 1",
    "eoi",
    "pop rdx", "pop rcx", "pop rax", "iretq",
    // The TSC-deadline timer, vector 0x42, armed at the present TSC.
    "irqb_timer: x2apic_on",
    "mov ecx, 0x832", "mov eax, 0x40042", "xor edx, edx", "wrmsr", // LVTT: TSC deadline
    "sti",
    "start_clock",
    "2: mov dword ptr [0x8000], 0",
    "rdtsc", "mov ecx, 0x6e0", "wrmsr",
    "wait_answer 0",
    "dec esi", "jnz 2b",
    "stop_clock",
    "out 0x99, al",
    // A self-IPI, vector 0x43.
    "irqb_self: x2apic_on",
    "sti",
    "start_clock",
    "2: mov dword ptr [0x8000], 0",
    "mov ecx, 0x83f", "mov eax, 0x43", "xor edx, edx", "wrmsr",
    "wait_answer 0",
    "dec esi", "jnz 2b",
    "stop_clock",
    "out 0x99, al",
    // Device interrupts from an irqfd (vector 0x44), counted at 0x8020 by their handler: ready
    // at 0x8010, then spin until RSI of them came.
    "irqb_irqfd: x2apic_on",
    "sti",
    "mov dword ptr [0x8010], 1",
    "start_clock",
    "2: pause",
    "cmp [0x8020], esi", "jb 2b",
    "stop_clock",
    "out 0x99, al",
    "irqb_count: push rax", "push rcx", "push rdx",
    "inc dword ptr [0x8020]",
    "eoi",
    "pop rdx", "pop rcx", "pop rax", "iretq",
    // EOI writes with nothing in service.
    "irqb_eoi: x2apic_on",
    "start_clock",
    "2: eoi",
    "dec esi", "jnz 2b",
    "stop_clock",
    "out 0x99, al",
    // The TPR through CR8: raised to 1, read, lowered to 0; interrupts on, nothing pending.
    "irqb_cr8: x2apic_on",
    "sti",
    "start_clock",
    "2: mov eax, 1", "mov cr8, rax",
    "mov rax, cr8",
    "xor eax, eax", "mov cr8, rax",
    "dec esi", "jnz 2b",
    "stop_clock",
    "out 0x99, al",
    "irqb_end:",
    ".popsection",
);

extern "C" {
    static irqb_start: u8;
    static irqb_ipi_bsp: u8;
    static irqb_ipi_ap: u8;
    static irqb_ipi_hlt_bsp: u8;
    static irqb_ipi_hlt_ap: u8;
    static irqb_h40: u8;
    static irqb_answer: u8;
    static irqb_timer: u8;
    static irqb_self: u8;
    static irqb_eoi: u8;
    static irqb_cr8: u8;
    static irqb_irqfd: u8;
    static irqb_count: u8;
    static irqb_end: u8;
}

/// The port the guests end with.
const DONE_PORT: u16 = 0x99;

/// Runs `vcpu` to its OUT to [`DONE_PORT`].
fn run_to_done(vcpu: &mut VcpuFd) -> Result<(), String> {
    loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(DONE_PORT, _)) => return Ok(()),
            Ok(other) => return Err(format!("unexpected exit {other:?}")),
            Err(e) if e.errno() == libc::EAGAIN || e.errno() == libc::EINTR => {}
            Err(e) => return Err(format!("KVM_RUN: {e}")),
        }
    }
}

/// Where a guest symbol is in the assembled blob.
fn offset(sym: &u8) -> u64 {
    // SAFETY: every guest symbol is in the one blob that starts at irqb_start.
    unsafe { (sym as *const u8).offset_from(&irqb_start as *const u8) as u64 }
}

/// Who else takes part in a measurement.
#[derive(Clone, Copy)]
enum Peer {
    None,
    /// vCPU 1, from this offset, on the other host CPU.
    Ap(u64),
    /// A host thread on the other host CPU that signals an irqfd whose GSI has an MSI route to
    /// vector 0x44 of APIC 0, each time the guest counted the last one.
    Irqfd,
}

/// The GSI the irqfd row's MSI route has.
const IRQFD_GSI: u32 = 24;

/// Signals `efd` `n` times, each after the guest counted the last one at 0x8020 of `mem`
/// (once it said it is ready at 0x8010).
fn signal_loop(efd: vmm_sys_util::eventfd::EventFd, mem: usize, n: u64) {
    pin_to(Some(1));
    let word = |at: usize| {
        // SAFETY: inside the guest's 64 KiB mapping, which lives as long as the process; the
        // guest writes it concurrently, hence the volatile read.
        unsafe { ((mem + at) as *const u32).read_volatile() }
    };
    while word(0x8010) == 0 {
        std::hint::spin_loop();
    }
    for i in 0..n {
        let _ = efd.write(1);
        while u64::from(word(0x8020)) <= i {
            std::hint::spin_loop();
        }
    }
}

/// One measurement: vCPU 0 runs from `bsp` with RSI = `n`, with `peer`; the ticks per
/// operation vCPU 0 measured.
fn measure(kvm: &Kvm, bsp: u64, peer: Peer, n: u64) -> Result<u64, String> {
    // SAFETY: the symbols delimit the guests assembled above, irqb_start first.
    let (image, gates) = unsafe {
        let answer = offset(&irqb_answer);
        (code(&irqb_start, &irqb_end), [(0x40, offset(&irqb_h40)), (0x41, answer), (0x42, answer), (0x43, answer), (0x44, offset(&irqb_count))])
    };
    let (vm, mem, enabled) = split::vm(kvm, image, &gates);
    enabled.map_err(|e| format!("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP): errno {e}"))?;
    let signaller = match peer {
        Peer::Irqfd => {
            let mut route = kvm_irq_routing_entry { gsi: IRQFD_GSI, type_: KVM_IRQ_ROUTING_MSI, ..Default::default() };
            route.u.msi.address_lo = 0xfee0_0000;
            route.u.msi.data = 0x44;
            let routes = KvmIrqRouting::from_entries(&[route]).map_err(|e| format!("routes: {e:?}"))?;
            vm.set_gsi_routing(&routes).map_err(|e| format!("KVM_SET_GSI_ROUTING: {e}"))?;
            let efd = vmm_sys_util::eventfd::EventFd::new(0).map_err(|e| format!("eventfd: {e}"))?;
            vm.register_irqfd(&efd, IRQFD_GSI).map_err(|e| format!("KVM_IRQFD: {e}"))?;
            let at = mem as usize;
            Some(std::thread::spawn(move || signal_loop(efd, at, n)))
        }
        _ => None,
    };
    let ap = match peer { Peer::Ap(rip) => Some(rip), _ => None };
    let mut v0 = vm.create_vcpu(0).map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    split::set_cpuid(&v0).and_then(|()| split::to_long_mode(&v0, 0x1000 + bsp, 0x9000)).map_err(|e| format!("vCPU 0 setup: errno {e}"))?;
    let mut r = v0.get_regs().unwrap();
    r.rsi = n;
    v0.set_regs(&r).unwrap();
    let ap = match ap {
        Some(rip) => {
            let mut v1 = vm.create_vcpu(1).map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
            split::set_cpuid(&v1).map_err(|e| format!("vCPU 1 CPUID: errno {e}"))?;
            v1.set_mp_state(kvm_mp_state { mp_state: KVM_MP_STATE_RUNNABLE }).map_err(|e| format!("KVM_SET_MP_STATE: {e}"))?;
            split::to_long_mode(&v1, 0x1000 + rip, 0x9800).map_err(|e| format!("vCPU 1 setup: errno {e}"))?;
            Some(std::thread::spawn(move || {
                pin_to(Some(1));
                run_to_done(&mut v1)
            }))
        }
        None => None,
    };
    pin_to(Some(0));
    let r = run_to_done(&mut v0);
    let ap_result = ap.map(|t| t.join().unwrap_or_else(|_| Err("vCPU 1's thread panicked".into())));
    if let Some(t) = signaller.filter(|_| r.is_ok()) {
        t.join().map_err(|_| "the signalling thread panicked".to_string())?;
    }
    r?;
    ap_result.unwrap_or(Ok(()))?;
    // SAFETY: 0x500..0x510 is inside the guest's 64 KiB mapping.
    let (t0, t1) = unsafe { (mem.add(0x500).cast::<u64>().read(), mem.add(0x508).cast::<u64>().read()) };
    Ok(t1.wrapping_sub(t0) / n)
}

fn main() -> ExitCode {
    let Some(dev) = std::env::args().nth(1) else {
        eprintln!("usage: kvm-irq-bench DEVICE");
        return ExitCode::from(2);
    };
    let kvm = match Kvm::new_with_path(&CString::new(dev.as_str()).unwrap()) {
        Ok(k) => std::sync::Arc::new(k),
        Err(e) => {
            eprintln!("kvm-irq-bench: {dev}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // SAFETY: the symbols exist (assembled above).
    let rows = unsafe {
        [
            ("ipi_round_trip", offset(&irqb_ipi_bsp), Peer::Ap(offset(&irqb_ipi_ap)), 500),
            ("ipi_round_trip_hlt", offset(&irqb_ipi_hlt_bsp), Peer::Ap(offset(&irqb_ipi_hlt_ap)), 500),
            ("timer_tsc_deadline", offset(&irqb_timer), Peer::None, 1000),
            ("self_ipi", offset(&irqb_self), Peer::None, 1000),
            ("eoi_write", offset(&irqb_eoi), Peer::None, 2000),
            ("cr8_tpr", offset(&irqb_cr8), Peer::None, 2000),
            ("irqfd_msi", offset(&irqb_irqfd), Peer::Irqfd, 500),
        ]
    };
    let mut ok = true;
    for (name, bsp, ap, n) in rows {
        // A guest that never ends would hang `make bench`: each gets a minute.
        let (tx, rx) = std::sync::mpsc::channel();
        let kvm_fd = std::sync::Arc::clone(&kvm);
        std::thread::spawn(move || tx.send(measure(&kvm_fd, bsp, ap, n)));
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(ticks)) => println!("{name} {ticks}"),
            Ok(Err(e)) => {
                println!("{name} failed: {e}");
                ok = false;
            }
            Err(_) => {
                println!("{name} failed: no end within 60 s");
                return ExitCode::FAILURE;
            }
        }
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
