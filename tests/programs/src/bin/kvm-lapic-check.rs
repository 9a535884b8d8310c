//! The in-kernel local APIC of KVM's split irqchip, as far as rvmx has it: enabling it
//! (`KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)`), its register page through `KVM_GET/SET_LAPIC`,
//! IA32_APIC_BASE and the TPR in SREGS, and a 64-bit guest that reads and writes its
//! registers through the xAPIC MMIO page, CR8 and, after switching to x2APIC mode, the MSRs;
//! self-IPIs, the PIC's ExtINT, and several vCPUs: MP states, INIT/SIPI, IPIs and NMIs that
//! wake a vCPU halted in the kernel, a signal during a halt.
//! Prints `key value` lines; tests/vm/suite.sh runs it on `/dev/rvmx` and `/dev/kvm` in the
//! same boot and requires identical output.
//!
//! Usage: kvm-lapic-check DEVICE

use std::{ffi::CString, process::ExitCode};

use kvm_bindings::{kvm_enable_cap, kvm_lapic_state, kvm_msr_entry, Msrs};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use rvmx_test_programs::{interrupt, split};

const SPLIT_IRQCHIP: u32 = 121;

// The guest: xAPIC registers through MMIO at 0xfee00000 (mapped by a 2 MiB page), the TPR
// through CR8, then x2APIC mode and its MSRs. Values are stored from 0x8000 on, 8 bytes each.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl lapic_start", ".globl lapic_end",
    "lapic_start:",
    "mov rbx, 0xfee00000",
    "mov eax, [rbx + 0x20]", "mov [0x8000], rax",    // ID
    "mov eax, [rbx + 0x30]", "mov [0x8008], rax",    // version
    "mov eax, [rbx + 0xf0]", "mov [0x8010], rax",    // SPIV
    "mov dword ptr [rbx + 0xf0], 0x1ff",              // software enable, spurious 0xff
    "mov eax, [rbx + 0xf0]", "mov [0x8018], rax",
    "mov dword ptr [rbx + 0x80], 0x3f",               // TPR
    "mov rax, cr8", "mov [0x8020], rax",
    "mov eax, 9", "mov cr8, rax",
    "mov eax, [rbx + 0x80]", "mov [0x8028], rax",    // TPR after CR8
    "mov eax, [rbx + 0xa0]", "mov [0x8030], rax",    // PPR
    "mov dword ptr [rbx + 0xe0], 0x0fffffff",         // DFR: cluster
    "mov dword ptr [rbx + 0xd0], 0x12000000",         // LDR
    "mov eax, [rbx + 0xe0]", "mov [0x8038], rax",
    "mov eax, [rbx + 0xd0]", "mov [0x8040], rax",
    "mov dword ptr [rbx + 0x350], 0x700",             // LVT0: ExtINT
    "mov eax, [rbx + 0x350]", "mov [0x8048], rax",
    "mov dword ptr [rbx + 0x30], 0",                  // version: read-only
    "mov eax, [rbx + 0x30]", "mov [0x8050], rax",
    "mov ax, [rbx + 0x22]", "mov [0x8058], rax",      // a 2-byte read inside ID
    "mov eax, [rbx + 0x3e0]", "mov [0x8060], rax",   // TDCR
    // x2APIC mode: IA32_APIC_BASE |= EXTD.
    "mov ecx, 0x1b", "rdmsr", "mov [0x8068], rax",
    "or eax, 0x400", "wrmsr",
    "mov eax, [rbx + 0x20]", "mov [0x8070], rax",    // the MMIO hole: all ones
    "mov ecx, 0x802", "rdmsr", "mov [0x8078], rax",  // ID
    "mov ecx, 0x80d", "rdmsr", "mov [0x8080], rax",  // LDR (derived from the ID)
    "mov ecx, 0x808", "rdmsr", "mov [0x8088], rax",  // TPR
    "mov ecx, 0x808", "mov eax, 0x20", "xor edx, edx", "wrmsr",
    "mov rax, cr8", "mov [0x8090], rax",
    "mov ecx, 0x80a", "rdmsr", "mov [0x8098], rax",  // PPR (KVM recomputes it on the read)
    "out 0x10, al",                                   // HLT would wait in the kernel for an interrupt
    "lapic_end:",
    ".popsection",
);

// Self-IPIs through the ICR, delivered through the IDT (vectors 0x40 and 0x41), with the TPR
// holding one back until it is lowered. Results from 0x8100 on.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl ipi_start", ".globl ipi_end", ".globl ipi_h40", ".globl ipi_h41",
    "ipi_start:",
    "mov rsp, 0x9000",
    "mov rbx, 0xfee00000",
    "mov dword ptr [rbx + 0xf0], 0x1ff",
    "mov dword ptr [rbx + 0x300], 0x40040",           // self, vector 0x40, while IF = 0
    "mov eax, [rbx + 0x220]", "mov [0x8100], rax",    // IRR 0x40-0x5f
    "sti", "nop", "cli",
    "mov eax, [rbx + 0x120]", "mov [0x8130], rax",    // ISR after the handler's EOI
    "mov eax, 5", "mov cr8, rax",                     // TPR 0x50
    "mov dword ptr [rbx + 0x300], 0x40041",           // class 4: held back
    "sti", "nop", "nop", "cli",
    "mov rax, [0x8128]", "mov [0x8138], rax",         // handled so far: 0
    "mov eax, [rbx + 0x220]", "mov [0x8140], rax",
    "xor eax, eax", "mov cr8, rax",
    "sti", "nop", "cli",
    "out 0x10, al",
    ".balign 128",
    "ipi_h40:",
    "mov eax, [rbx + 0x120]", "mov [0x8108], rax",    // ISR in the handler
    "mov eax, [rbx + 0xa0]", "mov [0x8110], rax",     // PPR in the handler
    "mov dword ptr [rbx + 0xb0], 0",                  // EOI
    "inc qword ptr [0x8118]",
    "iretq",
    ".balign 128",
    "ipi_h41:",
    "mov eax, [rbx + 0xa0]", "mov [0x8120], rax",
    "mov dword ptr [rbx + 0xb0], 0",
    "inc qword ptr [0x8128]",
    "iretq",
    "ipi_end:",
    ".popsection",
);

// The userspace PIC's interrupt (KVM_INTERRUPT) taken through LINT0 as ExtINT, vector 0x30.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl extint_start", ".globl extint_end", ".globl extint_h30",
    "extint_start:",
    "mov rsp, 0x9000",
    "out 0x10, al",                                   // IF = 0: userspace queues 0x30
    "sti", "nop", "cli",
    "mov rax, [0x8200]", "mov [0x8208], rax",
    "out 0x10, al",
    "sti",
    "out 0x11, al",                                   // IF = 1: userspace asks for a window
    "nop",
    "out 0x12, al",
    "nop",
    "out 0x13, al",
    ".balign 64",
    "extint_h30:",
    "inc qword ptr [0x8200]",
    "iretq",
    "extint_end:",
    ".popsection",
);


// Several vCPUs: the BSP starts the APs with INIT and SIPI (vector 0x0a: real mode at
// 0xa000), then sends a fixed IPI and an NMI to APs halted in the kernel. Code offsets are
// symbols; results from 0x8400 on.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl smp_start", ".globl smp_end", ".globl smp_bsp_ipi", ".globl smp_bsp_nmi",
    ".globl smp_ap_wait", ".globl smp_ap_nmi", ".globl smp_ap_stop", ".globl smp_h50", ".globl smp_nmi",
    "smp_start:",
    "mov rbx, 0xfee00000",
    "mov dword ptr [rbx + 0xf0], 0x1ff",
    "mov dword ptr [rbx + 0x300], 0xc4500",           // INIT to all but self
    "mov dword ptr [rbx + 0x300], 0xc460a",           // SIPI, vector 0x0a
    "out 0x10, al",
    "smp_bsp_ipi:",
    "mov dword ptr [rbx + 0x310], 0x01000000",
    "mov dword ptr [rbx + 0x300], 0x50",              // fixed 0x50 to APIC 1
    "out 0x11, al",
    "smp_bsp_nmi:",
    "mov dword ptr [rbx + 0x310], 0x02000000",
    "mov dword ptr [rbx + 0x300], 0x400",             // NMI to APIC 2
    "out 0x12, al",
    "smp_ap_wait:",                                   // AP 1: sti; hlt until vector 0x50
    "mov rbx, 0xfee00000",
    "mov dword ptr [rbx + 0xf0], 0x1ff",
    "out 0x22, al",
    "sti", "hlt", "cli",
    "mov rax, [0x8400]", "mov [0x8408], rax",
    "mov eax, [rbx + 0x100 + 0x50]", "mov [0x8410], rax",   // ISR 0x40-0x5f after EOI
    "out 0x21, al",
    "smp_ap_nmi:",                                    // AP 2: IF = 0, only an NMI wakes it
    "cli",
    "out 0x23, al",
    "hlt",
    // An IRET to here, a no-op on hardware: Bochs leaks virtual-NMI blocking from an NMI
    // delivery that an EPT violation interrupted (on any vCPU of that CPU), and only an IRET
    // ends it; so the NMI has been taken on both hypervisors before the count is read.
    "mov rax, ss", "push rax", "lea rax, [rsp + 8]", "push rax", "pushfq",
    "mov rax, cs", "push rax", "lea rax, [rip + 2f]", "push rax", "iretq",
    "2:",
    "mov rax, [0x8420]", "mov [0x8428], rax",
    "out 0x24, al",
    "smp_ap_stop:",                                   // halts with IF = 0 for good
    "cli", "hlt",
    "out 0x25, al",
    ".balign 64",
    "smp_h50:",
    "inc qword ptr [0x8400]",
    "mov dword ptr [rbx + 0xb0], 0",
    "iretq",
    ".balign 64",
    "smp_nmi:",
    "inc qword ptr [0x8420]",
    "iretq",
    "smp_end:",
    ".popsection",
);

// An AP's first code after SIPI (real mode, CS 0x0a00): marks memory with CS and exits.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl sipi_start", ".globl sipi_end",
    "sipi_start:",
    ".code16",
    "mov ax, cs",
    "mov [0x300], ax",
    "inc word ptr [0x302]",
    "out 0x20, al",
    ".code64",
    "sipi_end:",
    ".popsection",
);


// The APIC timer: one-shot (10 ms), periodic (5 ms, five HLTs), TSC deadline (armed ahead
// and in the past), each waking HLT or taken at STI. Then a long one-shot left running for
// KVM_GET/SET_LAPIC. Results from 0x8500 on; handler counts at 0x8580, 0x8588, 0x8590.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl timer_start", ".globl timer_end", ".globl timer_h60", ".globl timer_h61", ".globl timer_h62",
    "timer_start:",
    "mov rsp, 0x9000",
    "mov rbx, 0xfee00000",
    "mov dword ptr [rbx + 0xf0], 0x1ff",
    "mov dword ptr [rbx + 0x3e0], 0xb",               // divide by 1
    "mov dword ptr [rbx + 0x320], 0x60",              // one-shot, vector 0x60
    "mov dword ptr [rbx + 0x380], 10000000",
    "mov eax, [rbx + 0x390]", "mov [0x8500], rax",    // TMCCT while it runs
    "sti", "hlt", "cli",
    "mov rax, [0x8580]", "mov [0x8508], rax",
    "mov eax, [rbx + 0x390]", "mov [0x8510], rax",    // TMCCT once expired: 0
    "mov dword ptr [rbx + 0x320], 0x20061",           // periodic, vector 0x61
    "mov dword ptr [rbx + 0x380], 5000000",
    "mov ecx, 5",
    "2:", "sti", "hlt", "cli", "dec ecx", "jnz 2b",
    "mov dword ptr [rbx + 0x380], 0",                 // stopped
    "sti", "nop", "nop", "cli",                       // a tick that came meanwhile
    "mov rax, [0x8588]", "mov [0x8518], rax",
    "mov dword ptr [rbx + 0x320], 0x10061",           // masked: a count set now is not delivered
    "mov dword ptr [rbx + 0x380], 12345",
    "mov dword ptr [rbx + 0x320], 0x40062",           // TSC deadline, vector 0x62: TMICT cleared
    "mov eax, [rbx + 0x380]", "mov [0x8520], rax",
    "rdtsc", "shl rdx, 32", "or rax, rdx", "add rax, 3000000", "mov [0x8530], rax",
    "mov rdx, rax", "shr rdx, 32", "mov ecx, 0x6e0", "wrmsr",
    "rdmsr", "shl rdx, 32", "or rax, rdx", "mov [0x8528], rax",
    "sti", "hlt", "cli",
    "mov rax, [0x8590]", "mov [0x8538], rax",
    "mov ecx, 0x6e0", "rdmsr", "shl rdx, 32", "or rax, rdx", "mov [0x8540], rax",  // 0 once expired
    "mov ecx, 0x6e0", "mov eax, 1", "xor edx, edx", "wrmsr",                       // passed
    "sti", "nop", "cli",
    "mov rax, [0x8590]", "mov [0x8548], rax",
    "mov dword ptr [rbx + 0x320], 0x60",              // one-shot again, for a long time
    "mov dword ptr [rbx + 0x3e0], 0xa",               // divide by 128
    "mov dword ptr [rbx + 0x380], 0x10000000",
    "out 0x10, al",
    "mov eax, [rbx + 0x390]", "mov [0x8550], rax",    // after KVM_SET_LAPIC restarted it
    "out 0x11, al",
    ".balign 64",
    "timer_h60:",
    "inc qword ptr [0x8580]", "mov dword ptr [rbx + 0xb0], 0", "iretq",
    ".balign 64",
    "timer_h61:",
    "inc qword ptr [0x8588]", "mov dword ptr [rbx + 0xb0], 0", "iretq",
    ".balign 64",
    "timer_h62:",
    "inc qword ptr [0x8590]", "mov dword ptr [rbx + 0xb0], 0", "iretq",
    "timer_end:",
    ".popsection",
);


// MSIs from userspace (KVM_SIGNAL_MSI, KVM_IRQ_LINE on MSI routes): the guest enables its
// APIC and stops; userspace sends three; the guest takes them by priority; the EOI of the
// level-triggered IOAPIC pin route's vector exits to userspace. Counts at 0x8600.
core::arch::global_asm!(
    ".pushsection .rodata.guests, \"a\"",
    ".globl msi_start", ".globl msi_end", ".globl msi_h70", ".globl msi_h71", ".globl msi_h72", ".globl msi_again",
    "msi_start:",
    "mov rsp, 0x9000",
    "mov rbx, 0xfee00000",
    "mov dword ptr [rbx + 0xf0], 0x1ff",
    "out 0x10, al",
    "msi_again:",
    "sti", "nop", "nop", "nop", "nop", "cli",
    "out 0x11, al",
    ".balign 64",
    "msi_h70:",
    "inc qword ptr [0x8600]", "mov rax, [0x8610]", "shl rax, 4", "or rax, 0", "mov [0x8610], rax",
    "mov dword ptr [rbx + 0xb0], 0", "iretq",
    ".balign 64",
    "msi_h71:",
    "inc qword ptr [0x8600]", "mov rax, [0x8610]", "shl rax, 4", "or rax, 1", "mov [0x8610], rax",
    "mov dword ptr [rbx + 0xb0], 0", "iretq",
    ".balign 64",
    "msi_h72:",
    "inc qword ptr [0x8600]", "mov rax, [0x8610]", "shl rax, 4", "or rax, 2", "mov [0x8610], rax",
    "mov dword ptr [rbx + 0xb0], 0", "iretq",
    "msi_end:",
    ".popsection",
);

extern "C" {
    static msi_start: u8;
    static msi_end: u8;
    static msi_h70: u8;
    static msi_h71: u8;
    static msi_h72: u8;
    static msi_again: u8;
    static timer_start: u8;
    static timer_end: u8;
    static timer_h60: u8;
    static timer_h61: u8;
    static timer_h62: u8;
    static smp_start: u8;
    static smp_end: u8;
    static smp_bsp_ipi: u8;
    static smp_bsp_nmi: u8;
    static smp_ap_wait: u8;
    static smp_ap_nmi: u8;
    static smp_ap_stop: u8;
    static smp_h50: u8;
    static smp_nmi: u8;
    static sipi_start: u8;
    static sipi_end: u8;
    static extint_start: u8;
    static extint_h30: u8;
    static extint_end: u8;
    static lapic_start: u8;
    static lapic_end: u8;
    static ipi_start: u8;
    static ipi_h40: u8;
    static ipi_h41: u8;
    static ipi_end: u8;
}

/// A 64-bit vCPU 0 of a new split-irqchip VM running `code` at 0x1000, with x2APIC and
/// TSC-deadline in CPUID, 0xfee00000 mapped by a 2 MiB page, a GDT and an IDT whose vectors
/// in `gates` point at the given offsets in `code`.
fn split_guest(kvm: &Kvm, code: &[u8], gates: &[(u8, u64)]) -> rvmx_test_programs::Guest {
    let (vm, mem) = split_vm(kvm, code, gates);
    let vcpu = vm.create_vcpu(0).unwrap();
    long_mode(&vcpu, "guest", 0x1000, 0);
    rvmx_test_programs::Guest { vm, vcpu, mem }
}

/// The split-irqchip VM of [`split_guest`], without vCPUs.
fn split_vm(kvm: &Kvm, code: &[u8], gates: &[(u8, u64)]) -> (VmFd, *mut u8) {
    let (vm, mem, enabled) = split::vm(kvm, code, gates);
    println!("guest enable {enabled:?}");
    (vm, mem)
}

/// Puts `vcpu` in 64-bit mode at `rip` (stack `rsp`) with [`split_guest`]'s CPUID and tables;
/// prints the ioctls' results under `name`.
fn long_mode(vcpu: &VcpuFd, name: &str, rip: u64, rsp: u64) {
    set_cpuid(vcpu, name);
    to_long_mode(vcpu, name, rip, rsp);
}

/// [`split_guest`]'s CPUID table (before the vCPU first runs).
fn set_cpuid(vcpu: &VcpuFd, name: &str) {
    println!("{name} set_cpuid2 {:?}", split::set_cpuid(vcpu));
}

/// 64-bit mode at `rip` with stack `rsp`, on [`split_vm`]'s tables.
fn to_long_mode(vcpu: &VcpuFd, name: &str, rip: u64, rsp: u64) {
    println!("{name} set_sregs {:?}", split::to_long_mode(vcpu, rip, rsp));
}

/// Runs to the guest's OUT; the words it saved from `at` on.
fn run_saved(g: &mut rvmx_test_programs::Guest, at: usize, n: usize) -> String {
    let exit = match g.vcpu.run() {
        Ok(VcpuExit::IoOut(port, _)) => format!("out {port:#x}"),
        Ok(other) => format!("other {other:?}"),
        Err(e) => format!("error {}", e.errno()),
    };
    // SAFETY: inside the mapping.
    let saved: Vec<String> = (0..n).map(|i| format!("{:#x}", unsafe { g.mem.add(at + i * 8).cast::<u64>().read() })).collect();
    format!("exit {exit} saved {}", saved.join(" "))
}

/// The non-zero registers of a `kvm_lapic_state`, as `offset:value` words.
fn regs(s: &kvm_lapic_state) -> String {
    let words = s.regs.chunks_exact(4).map(|b| u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8]));
    words.enumerate().filter(|(_, v)| *v != 0).map(|(i, v)| format!("{:x}:{v:x}", i * 4)).collect::<Vec<_>>().join(" ")
}

fn enable(vm: &VmFd, pins: u64) -> Result<(), i32> {
    vm.enable_cap(&kvm_enable_cap { cap: SPLIT_IRQCHIP, args: [pins, 0, 0, 0], ..Default::default() }).map_err(|e| e.errno())
}

/// `KVM_IRQ_LINE_STATUS` (kvm-ioctls has no wrapper): the status, or the errno.
fn irq_line_status(vm: &VmFd, gsi: u32, level: u32) -> Result<i32, i32> {
    use std::os::fd::AsRawFd;
    let mut arg = kvm_bindings::kvm_irq_level { level, ..Default::default() };
    arg.__bindgen_anon_1.irq = gsi;
    // SAFETY: KVM_IRQ_LINE_STATUS reads and writes a `struct kvm_irq_level`, which is valid.
    let r = unsafe { libc::ioctl(vm.as_raw_fd(), 0xc008_ae67, &mut arg) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: the union holds the status now.
    Ok(unsafe { arg.__bindgen_anon_1.status } as i32)
}

/// An MSI route (`gsi` to `vector` on APIC `dest`, level-triggered if `level`).
fn msi_route(gsi: u32, dest: u32, vector: u32, level: bool) -> kvm_bindings::kvm_irq_routing_entry {
    let mut e = kvm_bindings::kvm_irq_routing_entry { gsi, type_: kvm_bindings::KVM_IRQ_ROUTING_MSI, ..Default::default() };
    e.u.msi = kvm_bindings::kvm_irq_routing_msi { address_lo: 0xfee0_0000 | dest << 12, data: vector | if level { 1 << 15 } else { 0 }, ..Default::default() };
    e
}

/// MSIs on the split irqchip: the capabilities, `KVM_SET_GSI_ROUTING`'s checks, `KVM_SIGNAL_MSI`
/// and `KVM_IRQ_LINE_STATUS` results, delivery by priority, and the IOAPIC EOI exit.
fn msi(kvm: &Kvm) {
    use kvm_bindings::KvmIrqRouting;
    for (name, cap) in [("irqchip", 0u64), ("irq_routing", 25), ("irq_inject_status", 26), ("tsc_deadline_timer", 72)] {
        println!("msi cap {name} {}", kvm.check_extension_raw(cap));
    }
    // SAFETY: the symbols are the guest assembled above.
    let (code, h70, h71, h72, again) = unsafe {
        let start = &msi_start as *const u8;
        let off = |p: &u8| (p as *const u8).offset_from(start) as u64;
        (std::slice::from_raw_parts(start, off(&msi_end) as usize), off(&msi_h70), off(&msi_h71), off(&msi_h72), off(&msi_again))
    };
    let mut g = split_guest(kvm, code, &[(0x70, h70), (0x71, h71), (0x72, h72)]);
    let route = |entries: &[kvm_bindings::kvm_irq_routing_entry]| {
        g.vm.set_gsi_routing(&KvmIrqRouting::from_entries(entries).unwrap()).map_err(|e| e.errno())
    };
    let mut chip = kvm_bindings::kvm_irq_routing_entry { gsi: 1, type_: kvm_bindings::KVM_IRQ_ROUTING_IRQCHIP, ..Default::default() };
    chip.u.irqchip = kvm_bindings::kvm_irq_routing_irqchip { irqchip: 2, pin: 1 };
    let mut bad_flags = msi_route(3, 0, 0x70, false);
    bad_flags.flags = 2;
    println!("msi routing irqchip {:?} twice {:?} gsi_4096 {:?} flags {:?} empty {:?}",
        route(&[chip]), route(&[msi_route(3, 0, 0x70, false), msi_route(3, 0, 0x71, false)]),
        route(&[msi_route(4096, 0, 0x70, false)]), route(&[bad_flags]), route(&[]));
    println!("msi routing ok {:?}", route(&[msi_route(5, 0, 0x70, false), msi_route(2, 0, 0x71, true)]));
    let vapic = |addr: u64| {
        use std::os::fd::AsRawFd;
        // SAFETY: KVM_SET_VAPIC_ADDR reads a `struct kvm_vapic_addr` (one u64), which is valid.
        let r = unsafe { libc::ioctl(g.vcpu.as_raw_fd(), 0x4008_ae93, &addr) };
        if r < 0 { Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)) } else { Ok(()) }
    };
    println!("msi vapic_addr 0 {:?}", vapic(0));
    println!("msi stop {}", exit_of(g.vcpu.run()));
    let signal = |dest: u32, vector: u32, flags: u32| {
        g.vm.signal_msi(kvm_bindings::kvm_msi { address_lo: 0xfee0_0000 | dest << 12, data: vector, flags, ..Default::default() }).map_err(|e| e.errno())
    };
    println!("msi signal {:?} no_apic {:?} bad_flags {:?}", signal(0, 0x72, 0), signal(7, 0x72, 0), signal(0, 0x72, 2));
    println!("msi line gsi5 {:?} lowered {:?} unrouted {:?} gsi2 {:?}",
        irq_line_status(&g.vm, 5, 1), irq_line_status(&g.vm, 5, 0), irq_line_status(&g.vm, 9, 1), irq_line_status(&g.vm, 2, 1));
    for _ in 0..3 {
        let exit = match g.vcpu.run() {
            Ok(VcpuExit::IoapicEoi(v)) => format!("ioapic_eoi {v:#x}"),
            other => exit_of(other),
        };
        // SAFETY: inside the mapping.
        let (n, order) = unsafe { (g.mem.add(0x8600).cast::<u64>().read(), g.mem.add(0x8610).cast::<u64>().read()) };
        println!("msi run {exit} taken {n} order {order:#x}");
        if exit.starts_with("out") {
            break;
        }
    }

    // KVM_IRQFD: an eventfd raises GSI 5 (vector 0x70) without the vCPU thread.
    let vm_fd = {
        use std::os::fd::AsRawFd;
        g.vm.as_raw_fd()
    };
    let irqfd = |fd: i32, gsi: u32, flags: u32| {
        let arg = kvm_bindings::kvm_irqfd { fd: fd as u32, gsi, flags, ..Default::default() };
        // SAFETY: KVM_IRQFD reads a `struct kvm_irqfd`, which is valid.
        let r = unsafe { libc::ioctl(vm_fd, 0x4020_ae76, &arg) };
        if r < 0 { Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)) } else { Ok(()) }
    };
    // SAFETY: a new eventfd, owned by this function (never closed: the process is short-lived).
    let efd = unsafe { libc::eventfd(0, 0) };
    let not_eventfd = vm_fd;
    println!("msi irqfd cap {} resample {:?} bad_fd {:?} not_eventfd {:?} flags {:?}", kvm.check_extension_raw(32),
        irqfd(efd, 5, 2), irqfd(-1, 5, 0), irqfd(not_eventfd, 5, 0), irqfd(efd, 5, 4));
    println!("msi irqfd assign {:?} again {:?}", irqfd(efd, 5, 0), irqfd(efd, 6, 0));
    let signal_efd = || {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a valid u64 to the eventfd.
        unsafe { libc::write(efd, (&one as *const u64).cast(), 8) }
    };
    let rerun = |g: &mut rvmx_test_programs::Guest| {
        let exit = run_from(&mut g.vcpu, 0x1000 + again);
        // SAFETY: inside the mapping.
        let (n, order) = unsafe { (g.mem.add(0x8600).cast::<u64>().read(), g.mem.add(0x8610).cast::<u64>().read()) };
        format!("{exit} taken {n} order {order:#x}")
    };
    signal_efd();
    println!("msi irqfd signalled {}", rerun(&mut g));
    println!("msi irqfd deassign {:?} again {:?} bad_fd {:?}", irqfd(efd, 5, 1), irqfd(efd, 5, 1), irqfd(-1, 5, 1));
    signal_efd();
    println!("msi irqfd after_deassign {}", rerun(&mut g));
}

/// The APIC timer in its three modes, waking HLT in the kernel, and KVM_GET/SET_LAPIC of a
/// running timer. Counts and states are printed; the time-dependent values as ranges.
fn timer(kvm: &Kvm) {
    // SAFETY: the symbols are the guest assembled above.
    let (code, h60, h61, h62) = unsafe {
        let start = &timer_start as *const u8;
        let off = |p: &u8| (p as *const u8).offset_from(start) as u64;
        (std::slice::from_raw_parts(start, off(&timer_end) as usize), off(&timer_h60), off(&timer_h61), off(&timer_h62))
    };
    let mut g = split_guest(kvm, code, &[(0x60, h60), (0x61, h61), (0x62, h62)]);
    let exit = exit_of(g.vcpu.run());
    let read = |at: usize| -> u64 {
        // SAFETY: inside the mapping.
        unsafe { g.mem.add(at).cast::<u64>().read() }
    };
    // A value out of range is printed with it.
    let within = |v: u64, max: u64| if (1..=max).contains(&v) { "true".to_string() } else { format!("false ({v})") };
    println!("timer {exit} tmcct_running {} oneshot {} tmcct_expired {}", within(read(0x8500), 10_000_000), read(0x8508), read(0x8510));
    let periodic = read(0x8518);
    // At least one tick per HLT (more if the guest is slow to return to its loop).
    let periodic = if periodic >= 5 { "true".to_string() } else { format!("false ({periodic})") };
    println!("timer periodic {periodic} deadline_tmict {} deadline_msr {}", read(0x8520), read(0x8528) == read(0x8530));
    println!("timer deadline {} msr_after {} passed {}", read(0x8538), read(0x8540), read(0x8548));
    let s = g.vcpu.get_lapic().unwrap();
    let (tmict, tmcct) = (lapic_word(&s, 0x380), lapic_word(&s, 0x390));
    println!("timer get_lapic tmict {tmict:#x} tmcct_running {}", tmcct > 0 && tmcct <= tmict);
    println!("timer set_lapic {:?}", g.vcpu.set_lapic(&s).map_err(|e| e.errno()));
    let exit = exit_of(g.vcpu.run());
    let after = read(0x8550) as u32;
    println!("timer restored {exit} tmcct_running {} count {}", after > 0 && after <= tmcct, read(0x8580));
}

/// The 32-bit register at `off` of a `kvm_lapic_state`.
fn lapic_word(s: &kvm_lapic_state, off: usize) -> u32 {
    u32::from_le_bytes([s.regs[off] as u8, s.regs[off + 1] as u8, s.regs[off + 2] as u8, s.regs[off + 3] as u8])
}

/// Runs `v` from `rip` to its next exit, as text.
fn run_from(v: &mut VcpuFd, rip: u64) -> String {
    let mut r = v.get_regs().unwrap();
    r.rip = rip;
    v.set_regs(&r).unwrap();
    exit_of(v.run())
}

/// Runs `ap` on a thread to its "ready" exit and its next one (halted in the kernel until
/// woken), and `bsp` from `bsp_rip` once the AP is ready. The AP's two exits, the BSP's exit,
/// and the AP (`None`: the AP did not come back in 20 s).
fn wake_halted(ap: VcpuFd, bsp: &mut VcpuFd, bsp_rip: u64) -> (String, String, Option<(String, VcpuFd)>) {
    use std::{sync::mpsc, time::Duration};
    let mut ap = ap;
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        tx.send(exit_of(ap.run())).unwrap();
        tx.send(exit_of(ap.run())).unwrap();
        ap
    });
    let ready = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| "timeout".into());
    let bsp_exit = run_from(bsp, bsp_rip);
    let woken = rx.recv_timeout(Duration::from_secs(20)).ok().map(|e| (e, t.join().unwrap()));
    (ready, bsp_exit, woken)
}

/// An exit as text: the port of an OUT, or the errno.
fn exit_of(r: Result<VcpuExit<'_>, kvm_ioctls::Error>) -> String {
    match r {
        Ok(VcpuExit::IoOut(port, _)) => format!("out {port:#x}"),
        Ok(other) => format!("other {other:?}"),
        Err(e) => format!("error {}", e.errno()),
    }
}

fn mp_state(v: &VcpuFd) -> String {
    v.get_mp_state().map_or_else(|e| format!("error {}", e.errno()), |s| s.mp_state.to_string())
}

extern "C" fn on_usr1(_: libc::c_int) {}

/// Several vCPUs on the in-kernel APICs: MP states, INIT and SIPI, HLT in the kernel woken by
/// a fixed IPI and by an NMI, and a halt a signal interrupts.
fn smp(kvm: &Kvm) {
    use std::{sync::mpsc, time::Duration};
    // SAFETY: the symbols are the guests assembled above.
    let (code, off, sipi) = unsafe {
        let start = &smp_start as *const u8;
        let off = |p: &u8| (p as *const u8).offset_from(start) as u64;
        let sipi = std::slice::from_raw_parts(&sipi_start as *const u8, (&sipi_end as *const u8).offset_from(&sipi_start) as usize);
        let offs = [off(&smp_bsp_ipi), off(&smp_bsp_nmi), off(&smp_ap_wait), off(&smp_ap_nmi), off(&smp_ap_stop), off(&smp_h50), off(&smp_nmi)];
        (std::slice::from_raw_parts(start, off(&smp_end) as usize), offs, sipi)
    };
    let [bsp_ipi, bsp_nmi, ap_wait, ap_nmi, ap_stop, h50, nmi] = off;
    let (vm, mem) = split_vm(kvm, code, &[(0x50, h50), (2, nmi)]);
    // SAFETY: 0xa000 is inside the mapping.
    unsafe { std::ptr::copy_nonoverlapping(sipi.as_ptr(), mem.add(0xa000), sipi.len()) };
    let read = |at: usize| -> u64 {
        // SAFETY: inside the mapping.
        unsafe { mem.add(at).cast::<u64>().read_volatile() }
    };
    let bsp = vm.create_vcpu(0).unwrap();
    long_mode(&bsp, "smp bsp", 0x1000, 0x9000);
    let ap1 = vm.create_vcpu(1).unwrap();
    let mut ap2 = vm.create_vcpu(2).unwrap();
    set_cpuid(&ap1, "smp ap1");
    set_cpuid(&ap2, "smp ap2");
    println!("smp mp_state {} {} {}", mp_state(&bsp), mp_state(&ap1), mp_state(&ap2));
    let set = |v: &VcpuFd, s: u32| v.set_mp_state(kvm_bindings::kvm_mp_state { mp_state: s }).map_err(|e| e.errno());
    println!("smp set_mp_state bad {:?} {:?}", set(&ap2, 5), set(&ap2, 99));
    ap2.set_kvm_immediate_exit(1);
    println!("smp uninitialized immediate_exit {}", exit_of(ap2.run()));
    ap2.set_kvm_immediate_exit(0);

    // INIT and SIPI to both APs: AP 1 takes them in KVM_GET_MP_STATE, AP 2 in KVM_RUN (EAGAIN).
    let mut b = bsp;
    println!("smp bsp init_sipi {}", exit_of(b.run()));
    println!("smp ap1 mp_state {}", mp_state(&ap1));
    for (name, v) in [("ap1", &ap1), ("ap2", &ap2)] {
        let (r, s) = (v.get_regs().unwrap(), v.get_sregs().unwrap());
        println!("smp {name} after_sipi rip {:#x} rdx {:#x} rflags {:#x} cs {:#x} {:#x} cr0 {:#x}", r.rip, r.rdx, r.rflags, s.cs.selector, s.cs.base, s.cr0);
    }
    let mut a2 = ap2;
    println!("smp ap2 run {}", exit_of(a2.run()));
    println!("smp ap2 mp_state {}", mp_state(&a2));
    println!("smp ap2 run {} mark {:#x}", exit_of(a2.run()), read(0x300));
    let mut a1 = ap1;
    println!("smp ap1 run {} mark {:#x}", exit_of(a1.run()), read(0x300));

    // A fixed IPI wakes AP 1 from HLT in the kernel.
    to_long_mode(&a1, "smp ap1", 0x1000 + ap_wait, 0x9800);
    let (ready, bsp_exit, woken) = wake_halted(a1, &mut b, 0x1000 + bsp_ipi);
    println!("smp ipi ap1 {ready} bsp {bsp_exit}");
    let Some((e, a1)) = woken else {
        println!("smp ipi ap1 timeout");
        std::process::exit(1);
    };
    println!("smp ipi ap1 {e} count {} isr {:#x}", read(0x8408), read(0x8410));
    // An IPI to a vCPU outside KVM_RUN is in the state saved (KVM_GET_LAPIC's IRR).
    let exit = run_from(&mut b, 0x1000 + bsp_ipi);
    let irr = a1.get_lapic().map(|l| lapic_word(&l, 0x220));
    println!("smp ipi saved bsp {exit} ap1 irr_40_5f {:?}", irr.map(|v| format!("{v:#x}")).map_err(|e| e.errno()));

    // An NMI wakes AP 2 halted with IF = 0.
    to_long_mode(&a2, "smp ap2", 0x1000 + ap_nmi, 0x9c00);
    let (ready, bsp_exit, woken) = wake_halted(a2, &mut b, 0x1000 + bsp_nmi);
    println!("smp nmi ap2 {ready} bsp {bsp_exit}");
    let Some((e, _a2)) = woken else {
        println!("smp nmi ap2 timeout");
        std::process::exit(1);
    };
    println!("smp nmi ap2 {e} count {}", read(0x8428));

    // A signal ends KVM_RUN of a vCPU halted for good: EINTR, still HALTED; then RUNNABLE
    // from userspace, and it goes on after the HLT.
    let mut a1 = a1;
    let mut r = a1.get_regs().unwrap();
    r.rip = 0x1000 + ap_stop;
    a1.set_regs(&r).unwrap();
    // SAFETY: an empty handler, so that the signal only interrupts KVM_RUN.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as *const () as usize;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let e = exit_of(a1.run());
        let reason = a1.get_kvm_run().exit_reason;
        tx.send(format!("{e} reason {reason} mp_state {}", mp_state(&a1))).unwrap();
        a1
    });
    use std::os::unix::thread::JoinHandleExt;
    let thread = t.as_pthread_t();
    let mut got = None;
    for _ in 0..200 {
        // SAFETY: the thread is alive until joined below.
        unsafe { libc::pthread_kill(thread, libc::SIGUSR1) };
        if let Ok(e) = rx.recv_timeout(Duration::from_millis(100)) {
            got = Some(e);
            break;
        }
    }
    let Some(e) = got else {
        println!("smp halt signal timeout");
        std::process::exit(1);
    };
    println!("smp halt signal {e}");
    let mut a1 = t.join().unwrap();
    println!("smp halt runnable {:?} {} rip {:#x}", set(&a1, 0), exit_of(a1.run()), a1.get_regs().unwrap().rip - 0x1000 - ap_stop);
}

/// `KVM_CAP_X2APIC_API`: its value on the system fd and on VMs with and without the split
/// irqchip, `KVM_ENABLE_CAP`'s checks, 32-bit x2APIC IDs in `KVM_GET/SET_LAPIC` and in MSIs,
/// the broadcast quirk, and LVR's directed-EOI bit.
fn x2apic_api(kvm: &Kvm) {
    const X2APIC_API: u32 = 129;
    let api = |vm: &VmFd, flags: u64| {
        vm.enable_cap(&kvm_enable_cap { cap: X2APIC_API, args: [flags, 0, 0, 0], ..Default::default() }).map_err(|e| e.errno())
    };
    let plain = kvm.create_vm().unwrap();
    let split = kvm.create_vm().unwrap();
    println!("x2apic_api cap system {} plain_vm {} split_vm_before {}", kvm.check_extension_raw(X2APIC_API as u64),
             plain.check_extension_raw(X2APIC_API as u64), split.check_extension_raw(X2APIC_API as u64));
    println!("x2apic_api split {:?} cap {}", enable(&split, 24), split.check_extension_raw(X2APIC_API as u64));
    println!("x2apic_api plain unknown {:?} both {:?} suppress {:?} no_suppress {:?}",
             api(&plain, 1 << 4), api(&plain, 0xc), api(&plain, 4), api(&plain, 8));
    // Two vCPUs, vCPU 1 in x2APIC mode with its APIC software-enabled.
    let v0 = split.create_vcpu(0).unwrap();
    let v1 = split.create_vcpu(1).unwrap();
    set_cpuid(&v0, "x2apic_api v0");
    set_cpuid(&v1, "x2apic_api v1");
    let msrs = Msrs::from_entries(&[kvm_msr_entry { index: 0x1b, data: 0xfee0_0c00, ..Default::default() }]).unwrap();
    println!("x2apic_api v1 x2apic {:?}", v1.set_msrs(&msrs).map_err(|e| e.errno()));
    let mut s = v1.get_lapic().unwrap();
    s.regs[0xf0..0xf4].copy_from_slice(&0x1ffu32.to_le_bytes().map(|b| b as _));
    println!("x2apic_api v1 spiv {:?}", v1.set_lapic(&s).map_err(|e| e.errno()));
    let id = |v: &VcpuFd| v.get_lapic().map(|s| format!("{:#x}", lapic_word(&s, 0x20))).map_err(|e| e.errno());
    let set_id = |v: &VcpuFd, id: u32| {
        let mut s = v.get_lapic().unwrap();
        s.regs[0x20..0x24].copy_from_slice(&id.to_le_bytes().map(|b| b as _));
        v.set_lapic(&s).map_err(|e| e.errno())
    };
    let msi = |vm: &VmFd, address_hi: u32, dest: u32| {
        vm.signal_msi(kvm_bindings::kvm_msi { address_lo: 0xfee0_0000 | dest << 12, address_hi, data: 0x45, ..Default::default() }).map_err(|e| e.errno())
    };
    println!("x2apic_api legacy id v0 {:?} v1 {:?} set_other {:?} then {:?}", id(&v0), id(&v1), set_id(&v1, 7), id(&v1));
    println!("x2apic_api legacy msi broadcast {:?} hi_byte {:?} hi_dest {:?}", msi(&split, 0, 0xff), msi(&split, 1, 1), msi(&split, 0x100, 1));
    let mut bad = kvm_bindings::kvm_irq_routing_entry { gsi: 30, type_: kvm_bindings::KVM_IRQ_ROUTING_MSI, ..Default::default() };
    bad.u.msi = kvm_bindings::kvm_irq_routing_msi { address_lo: 0xfee0_1000, address_hi: 1, data: 0x45, ..Default::default() };
    let routing = |vm: &VmFd| vm.set_gsi_routing(&kvm_bindings::KvmIrqRouting::from_entries(&[bad]).unwrap()).map_err(|e| e.errno());
    println!("x2apic_api legacy route_hi_byte {:?}", routing(&split));
    println!("x2apic_api enable 32bit_ids {:?}", api(&split, 1));
    println!("x2apic_api 32bit id v0 {:?} v1 {:?} set_other {:?} set_same {:?}", id(&v0), id(&v1), set_id(&v1, 7), set_id(&v1, 1));
    println!("x2apic_api 32bit msi hi_byte {:?} hi_dest {:?} route_hi_byte {:?}", msi(&split, 1, 1), msi(&split, 0x100, 1), routing(&split));
    println!("x2apic_api enable no_broadcast_quirk {:?} msi broadcast {:?}", api(&split, 2), msi(&split, 0, 0xff));
    // LVR bit 24: advertised by default in split mode, not once userspace disabled it.
    let lvr = |vm: &VmFd, name: &str| {
        let v = vm.create_vcpu(2).unwrap();
        set_cpuid(&v, name);
        format!("{:#x}", lapic_word(&v.get_lapic().unwrap(), 0x30))
    };
    let other = kvm.create_vm().unwrap();
    println!("x2apic_api other split {:?} disable_suppress {:?}", enable(&other, 24), api(&other, 8));
    println!("x2apic_api lvr default {} disabled {}", lvr(&split, "x2apic_api lvr1"), lvr(&other, "x2apic_api lvr2"));
    println!("x2apic_api enable_suppress {:?} both {:?}", api(&other, 4), api(&other, 0xc));
}

fn main() -> ExitCode {
    let Some(dev) = std::env::args().nth(1) else {
        eprintln!("usage: kvm-lapic-check DEVICE");
        return ExitCode::from(2);
    };
    let kvm = Kvm::new_with_path(&CString::new(dev).unwrap()).expect("open device");
    println!("cap_split_irqchip {}", kvm.check_extension_raw(SPLIT_IRQCHIP as u64));

    // Enabling: the pin count's limit, once, before vCPUs.
    let vm = kvm.create_vm().unwrap();
    println!("enable too_many_pins {:?} 24 {:?} again {:?}", enable(&vm, 4097), enable(&vm, 24), enable(&vm, 24));
    let late = kvm.create_vm().unwrap();
    let _v = late.create_vcpu(0).unwrap();
    println!("enable after_vcpu {:?}", enable(&late, 24));
    println!("no_irqchip get_lapic {:?}", _v.get_lapic().map(|_| ()).map_err(|e| e.errno()));
    println!("no_irqchip set_lapic {:?}", _v.set_lapic(&kvm_lapic_state::default()).map_err(|e| e.errno()));

    // Reset state of the BSP and an AP, through KVM_GET_LAPIC, SREGS and KVM_GET_MSRS.
    let bsp = vm.create_vcpu(0).unwrap();
    let ap = vm.create_vcpu(1).unwrap();
    for (name, v) in [("bsp", &bsp), ("ap", &ap)] {
        println!("{name} reset {}", regs(&v.get_lapic().unwrap()));
        let s = v.get_sregs().unwrap();
        let mut m = Msrs::from_entries(&[kvm_msr_entry { index: 0x1b, ..Default::default() }]).unwrap();
        let n = v.get_msrs(&mut m).map_err(|e| e.errno());
        println!("{name} apic_base sregs {:#x} msr {n:?} {:#x} cr8 {}", s.apic_base, m.as_slice()[0].data, s.cr8);
    }
    // KVM_SET_LAPIC: TPR, SPIV, LDR, DFR, LVT0, an IRR bit; the read-only version is kept.
    let mut s = bsp.get_lapic().unwrap();
    let mut put = |off: usize, v: u32| {
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            s.regs[off + i] = *b as _;
        }
    };
    put(0x80, 0x70);
    put(0xf0, 0x1ff);
    put(0xd0, 0x0100_0000);
    put(0xe0, 0xffff_ffff);
    put(0x350, 0x8700);
    put(0x200 + 0x10 * 2, 1 << 3); // IRR vector 0x43
    put(0x30, 0x1234);
    println!("set_lapic {:?}", bsp.set_lapic(&s).map_err(|e| e.errno()));
    println!("after_set {}", regs(&bsp.get_lapic().unwrap()));
    println!("after_set cr8 {}", bsp.get_sregs().unwrap().cr8);
    // SREGS moves the TPR and refuses a bad APIC_BASE.
    let mut sr = bsp.get_sregs().unwrap();
    sr.cr8 = 2;
    println!("set_sregs_cr8 {:?} tpr {:#x}", bsp.set_sregs(&sr).map_err(|e| e.errno()), lapic_word(&bsp.get_lapic().unwrap(), 0x80));
    sr.apic_base = 0xfee0_0c00; // EXTD without CPUID x2APIC
    println!("set_sregs_bad_apic_base {:?}", bsp.set_sregs(&sr).map_err(|e| e.errno()));

    // The guest (its own split-irqchip VM).
    // SAFETY: the symbols are the guest assembled above.
    let code = unsafe {
        let start = &lapic_start as *const u8;
        std::slice::from_raw_parts(start, (&lapic_end as *const u8).offset_from(start) as usize)
    };
    let mut g = split_guest(&kvm, code, &[]);
    println!("guest {}", run_saved(&mut g, 0x8000, 20));
    println!("guest final {}", regs(&g.vcpu.get_lapic().unwrap()));
    println!("guest apic_base {:#x}", g.vcpu.get_sregs().unwrap().apic_base);

    // Self-IPIs delivered through the IDT, EOI, and the TPR holding one back.
    // SAFETY: the symbols are the guest assembled above.
    let (code, h40, h41) = unsafe {
        let start = &ipi_start as *const u8;
        let off = |p: &u8| (p as *const u8).offset_from(start) as u64;
        (std::slice::from_raw_parts(start, off(&ipi_end) as usize), off(&ipi_h40), off(&ipi_h41))
    };
    let mut g = split_guest(&kvm, code, &[(0x40, h40), (0x41, h41)]);
    println!("ipi {}", run_saved(&mut g, 0x8100, 9));
    println!("ipi final {}", regs(&g.vcpu.get_lapic().unwrap()));

    // KVM_INTERRUPT with a split irqchip: the PIC's vector, one at a time (EEXIST), taken
    // through the BSP's LINT0 (ExtINT); ready_for_interrupt_injection and the interrupt window.
    // SAFETY: the symbols are the guest assembled above.
    let (code, h30) = unsafe {
        let start = &extint_start as *const u8;
        let off = |p: &u8| (p as *const u8).offset_from(start) as u64;
        (std::slice::from_raw_parts(start, off(&extint_end) as usize), off(&extint_h30))
    };
    let mut g = split_guest(&kvm, code, &[(0x30, h30)]);
    let irq = |g: &rvmx_test_programs::Guest, v: u32| interrupt(&g.vcpu, v);
    let stop = |g: &mut rvmx_test_programs::Guest| {
        let exit = match g.vcpu.run() {
            Ok(VcpuExit::IoOut(port, _)) => format!("out {port:#x}"),
            Ok(VcpuExit::IrqWindowOpen) => "irq_window_open".to_string(),
            Ok(other) => format!("other {other:?}"),
            Err(e) => format!("error {}", e.errno()),
        };
        let r = g.vcpu.get_kvm_run();
        // SAFETY: inside the mapping.
        let count = unsafe { g.mem.add(0x8200).cast::<u64>().read() };
        format!("{exit} ready {} if {} count {count}", r.ready_for_interrupt_injection, r.if_flag)
    };
    println!("extint stop1 {}", stop(&mut g));
    println!("extint queue {:?} again {:?} too_big {:?}", irq(&g, 0x30), irq(&g, 0x31), irq(&g, 256));
    println!("extint stop2 {}", stop(&mut g));
    println!("extint stop3 {}", stop(&mut g));
    g.vcpu.get_kvm_run().request_interrupt_window = 1;
    println!("extint window {} rip {:#x}", stop(&mut g), g.vcpu.get_regs().unwrap().rip);
    g.vcpu.get_kvm_run().request_interrupt_window = 0;
    println!("extint queue2 {:?}", irq(&g, 0x30));
    println!("extint stop4 {}", stop(&mut g));
    println!("extint stop5 {}", stop(&mut g));
    // An AP's LINT0 is masked: the vector waits (accepted once, then EEXIST).
    let ap = g.vm.create_vcpu(1).unwrap();
    println!("extint ap {:?} {:?}", interrupt(&ap, 0x30), interrupt(&ap, 0x30));

    msi(&kvm);
    timer(&kvm);
    smp(&kvm);
    x2apic_api(&kvm);
    ExitCode::SUCCESS
}
