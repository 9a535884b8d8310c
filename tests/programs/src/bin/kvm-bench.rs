//! Exit costs on a KVM-compatible device, measured by the guest: each guest reads the TSC,
//! repeats one operation N times, reads the TSC again and halts; the program prints the TSC
//! ticks per operation. The same binary runs on `/dev/rvmx` and `/dev/kvm` (`make bench`,
//! tests/vm/bench.sh). Not a pass/fail test: in Bochs the TSC counts emulated instructions.
//!
//! Usage: kvm-bench DEVICE [ROW...]
//! Prints `name ticks-per-operation` lines (for the rows named, or all).
//!
//! With `KVM_BENCH_TRACE` set (scripts/bench-trace), three `KVM_RUN`s of each row are bracketed
//! by Bochs' magic breakpoint (`xchg bx, bx`), which toggles Bochs' instruction trace: each
//! traced run is one round trip from userspace to the guest and back. Two rows exist for the
//! traces only: `ept_first_touch_4k_sparse_out` adds an OUT after each sparse first touch, so
//! that the fault (which KVM handles without returning to userspace) falls inside one traced
//! run; `cpuid_traced` brackets three CPUIDs in the guest itself (an exit handled in the
//! kernel: from the guest's CPUID to its next instruction).

use std::{arch::x86_64::_rdtsc, ffi::CString, process::ExitCode};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit};
use rvmx_test_programs::{code, flat, guest, interrupt, to_long_mode, Guest};

// 32-bit protected-mode guests (flat segments), each entered with ESI = N. The TSC before
// the loop goes to 0x500, after it to 0x508.
std::arch::global_asm!(
    ".pushsection .rodata",
    ".code32",
    ".macro start_clock",
    "rdtsc",
    "mov [0x500], eax",
    "mov [0x504], edx",
    ".endm",
    ".macro stop_clock",
    "rdtsc",
    "mov [0x508], eax",
    "mov [0x50c], edx",
    "hlt",
    ".endm",
    // CPUID leaf 0: handled in the kernel.
    "bench_cpuid: start_clock",
    "2: xor eax, eax",
    "cpuid",
    "dec esi",
    "jnz 2b",
    "stop_clock",
    "bench_cpuid_end:",
    // VMCALL with an unknown hypercall number: handled in the kernel (-ENOSYS in EAX).
    "bench_vmcall: start_clock",
    "2: mov eax, 0xffff",
    "vmcall",
    "dec esi",
    "jnz 2b",
    "stop_clock",
    "bench_vmcall_end:",
    // OUT to a port nobody claims in the kernel: a KVM_EXIT_IO round trip through userspace.
    "bench_pio: start_clock",
    "2: out 0x80, al",
    "dec esi",
    "jnz 2b",
    "stop_clock",
    "bench_pio_end:",
    // IN from a port nobody claims in the kernel: userspace answers the KVM_EXIT_IO.
    "bench_pio_in: start_clock",
    "2: in al, 0x80",
    "dec esi",
    "jnz 2b",
    "stop_clock",
    "bench_pio_in_end:",
    // A write outside every slot: a KVM_EXIT_MMIO round trip (decoded in the kernel).
    "bench_mmio: start_clock",
    "2: mov dword ptr [0xd0000], eax",
    "dec esi",
    "jnz 2b",
    "stop_clock",
    "bench_mmio_end:",
    // The first write to each 4 KiB page of a slot never touched: an EPT fault-in per page.
    "bench_touch: start_clock",
    "mov ebx, 0x1000000",
    "2: mov [ebx], eax",
    "add ebx, 4096",
    "dec esi",
    "jnz 2b",
    "stop_clock",
    "bench_touch_end:",
    // The same, one page in every 16 (64 KiB apart): nothing mapped around a fault is used.
    "bench_touch_sparse: start_clock",
    "mov ebx, 0x1000000",
    "2: mov [ebx], eax",
    "add ebx, 65536",
    "dec esi",
    "jnz 2b",
    "stop_clock",
    "bench_touch_sparse_end:",
    // The same with an OUT after each touch: one KVM_RUN per first touch (traces only).
    "bench_touch_sparse_out: start_clock",
    "mov ebx, 0x1000000",
    "2: mov [ebx], eax",
    "add ebx, 65536",
    "out 0x80, al",
    "dec esi",
    "jnz 2b",
    "stop_clock",
    "bench_touch_sparse_out_end:",
    // CPUID in the kernel, traced from the guest (traces only): ESI warm-up exits, then
    // three each bracketed by the magic breakpoint (CPUID clobbers EBX, not the breakpoint).
    "bench_cpuid_traced: start_clock",
    "2: xor eax, eax",
    "cpuid",
    "dec esi",
    "jnz 2b",
    "mov edi, 3",
    "3: xor eax, eax",
    "xchg bx, bx",
    "cpuid",
    "xchg bx, bx",
    "dec edi",
    "jnz 3b",
    "stop_clock",
    "bench_cpuid_traced_end:",
    // HLT with interrupts on and no in-kernel irqchip: KVM_EXIT_HLT, userspace queues
    // interrupt 0x20 (KVM_INTERRUPT) and runs the vCPU again, whose handler returns at once.
    "bench_hlt: mov esp, 0x8000",      // the handler's frame
    "start_clock",
    "2: sti",
    "hlt",
    "dec esi",
    "jnz 2b",
    "cli",
    "stop_clock",
    "bench_hlt_handler: iretd",
    "bench_hlt_end:",
    ".code64",
    // The MMIO write again in 64-bit mode with paging, as Linux guests make it: the
    // instruction is fetched and its address translated through the guest's page tables.
    "bench_mmio_long: start_clock",
    "2: mov dword ptr [0xd0000], eax",
    "dec esi",
    "jnz 2b",
    "stop_clock",
    "bench_mmio_long_end:",
    ".popsection",
);

extern "C" {
    static bench_cpuid: u8;
    static bench_cpuid_end: u8;
    static bench_vmcall: u8;
    static bench_vmcall_end: u8;
    static bench_pio: u8;
    static bench_pio_end: u8;
    static bench_mmio: u8;
    static bench_mmio_end: u8;
    static bench_touch: u8;
    static bench_touch_end: u8;
    static bench_touch_sparse: u8;
    static bench_touch_sparse_end: u8;
    static bench_touch_sparse_out: u8;
    static bench_touch_sparse_out_end: u8;
    static bench_cpuid_traced: u8;
    static bench_cpuid_traced_end: u8;
    static bench_pio_in: u8;
    static bench_pio_in_end: u8;
    static bench_hlt: u8;
    static bench_hlt_handler: u8;
    static bench_hlt_end: u8;
    static bench_mmio_long: u8;
    static bench_mmio_long_end: u8;
}

/// Where the untouched pages of `touch` are, and how many; `touch_sparse` touches one page
/// in every 16 of a slot as large.
const TOUCH_BASE: u64 = 0x100_0000;
const TOUCH_PAGES: u64 = 2048;
const SPARSE_STRIDE: u64 = 16;

/// A guest running `code` with ESI = `n`, in 32-bit protected mode or (`long`) in 64-bit long
/// mode with identity paging.
fn bench_guest(kvm: &Kvm, code: &[u8], n: u64, long: bool) -> Guest {
    let g = guest(kvm, code);
    if long {
        let (_, cpuid, sregs) = to_long_mode(&g);
        cpuid.and(sregs).expect("long mode");
    } else {
        let mut s = g.vcpu.get_sregs().unwrap();
        s.cs = flat(11, 8);
        (s.ds, s.es, s.ss) = (flat(3, 16), flat(3, 16), flat(3, 16));
        s.cr0 |= 1;
        g.vcpu.set_sregs(&s).unwrap();
    }
    let mut r = g.vcpu.get_regs().unwrap();
    r.rsi = n;
    g.vcpu.set_regs(&r).unwrap();
    g
}

/// The vector `hlt` takes.
const HLT_VECTOR: u32 = 0x20;
/// Where `hlt`'s GDT (the flat segments' descriptors, which delivery reads) and IDT go.
const GDT: u64 = 0x580;
const IDT: u64 = 0x600;

/// Gives `g` (running `hlt`) a GDT and an IDT whose vector 0x20 leads to its handler.
fn hlt_idt(g: &Guest) {
    let gdt: [u64; 3] = [0, 0x00cf_9b00_0000_ffff, 0x00cf_9300_0000_ffff]; // null, code 0x8, data 0x10
    for (i, d) in gdt.iter().enumerate() {
        // SAFETY: the GDT is inside the guest's 64 KiB mapping.
        unsafe { g.mem.add(GDT as usize + 8 * i).cast::<u64>().write_unaligned(*d) };
    }
    // SAFETY: the symbols delimit the `hlt` guest, loaded at 0x1000.
    let handler = unsafe { &bench_hlt_handler as *const u8 as u64 - &bench_hlt as *const u8 as u64 } + 0x1000;
    let gate = (handler & 0xffff) | 8 << 16 | 0x8e00 << 32 | (handler >> 16) << 48; // 32-bit interrupt gate
    // SAFETY: the IDT's entry is inside the guest's 64 KiB mapping.
    unsafe { g.mem.add((IDT + 8 * u64::from(HLT_VECTOR)) as usize).cast::<u64>().write_unaligned(gate) };
    let mut s = g.vcpu.get_sregs().unwrap();
    s.gdt.base = GDT;
    s.gdt.limit = (8 * gdt.len() - 1) as u16;
    s.idt.base = IDT;
    s.idt.limit = (8 * (HLT_VECTOR + 1) - 1) as u16;
    g.vcpu.set_sregs(&s).unwrap();
}

/// Runs `g` to its HLT with interrupts off, answering its port and MMIO exits at once and a
/// HLT with interrupts on with an interrupt; the TSC ticks per operation, or what went wrong.
fn measure(mut g: Guest, n: u64, trace: bool) -> Result<u64, String> {
    for run in 1u32.. {
        // Runs 100 to 102: warm (caches, branch history, the first touches of the code).
        let traced = trace && (100..103).contains(&run);
        if traced {
            // SAFETY: an exchange of BX with itself changes nothing (Bochs' magic breakpoint).
            unsafe { core::arch::asm!("xchg bx, bx") };
        }
        let exit = g.vcpu.run();
        if traced {
            // SAFETY: as above.
            unsafe { core::arch::asm!("xchg bx, bx") };
        }
        match exit {
            Ok(VcpuExit::Hlt) => {
                if g.vcpu.get_kvm_run().if_flag == 0 {
                    break;
                }
                interrupt(&g.vcpu, HLT_VECTOR).map_err(|e| format!("KVM_INTERRUPT: errno {e}"))?;
            }
            Ok(VcpuExit::IoOut(..) | VcpuExit::MmioWrite(..)) => {}
            Ok(VcpuExit::IoIn(_, data)) => data.fill(0),
            Ok(other) => return Err(format!("unexpected exit {other:?}")),
            Err(e) => return Err(format!("KVM_RUN: {e}")),
        }
    }
    // SAFETY: 0x500..0x510 is inside the guest's 64 KiB mapping.
    let (t0, t1) = unsafe { (g.mem.add(0x500).cast::<u64>().read(), g.mem.add(0x508).cast::<u64>().read()) };
    Ok(t1.wrapping_sub(t0) / n)
}

/// Ticks (of this process's TSC) per create VM + slot + vCPU, then close.
fn create_destroy(kvm: &Kvm, n: u64) -> u64 {
    // SAFETY: reading the TSC has no preconditions.
    let t0 = unsafe { _rdtsc() };
    for _ in 0..n {
        drop(guest(kvm, &[0xf4]));
    }
    // SAFETY: as above.
    (unsafe { _rdtsc() } - t0) / n
}

fn main() -> ExitCode {
    let Some(dev) = std::env::args().nth(1) else {
        eprintln!("usage: kvm-bench DEVICE [ROW...]");
        return ExitCode::from(2);
    };
    let kvm = match Kvm::new_with_path(&CString::new(dev.as_str()).unwrap()) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("kvm-bench: {dev}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // SAFETY: each pair of symbols delimits one guest assembled above.
    let guests = unsafe {
        [
            ("cpuid", code(&bench_cpuid, &bench_cpuid_end), 2000),
            ("vmcall", code(&bench_vmcall, &bench_vmcall_end), 2000),
            ("pio_out_userspace", code(&bench_pio, &bench_pio_end), 2000),
            ("pio_in_userspace", code(&bench_pio_in, &bench_pio_in_end), 2000),
            ("mmio_write_userspace", code(&bench_mmio, &bench_mmio_end), 2000),
            ("mmio_write_userspace_long", code(&bench_mmio_long, &bench_mmio_long_end), 2000),
            ("ept_first_touch_4k", code(&bench_touch, &bench_touch_end), TOUCH_PAGES),
            ("hlt_wake_userspace_irq", code(&bench_hlt, &bench_hlt_end), 2000),
            ("ept_first_touch_4k_sparse", code(&bench_touch_sparse, &bench_touch_sparse_end), TOUCH_PAGES / SPARSE_STRIDE),
            ("ept_first_touch_4k_sparse_out", code(&bench_touch_sparse_out, &bench_touch_sparse_out_end), TOUCH_PAGES / SPARSE_STRIDE),
            ("cpuid_traced", code(&bench_cpuid_traced, &bench_cpuid_traced_end), 100),
        ]
    };
    // The rows named, or all but the trace-only ones.
    let trace_only = ["ept_first_touch_4k_sparse_out", "cpuid_traced"];
    let rows: Vec<String> = std::env::args().skip(2).collect();
    let trace = std::env::var_os("KVM_BENCH_TRACE").is_some();
    let wanted = |name: &str| if rows.is_empty() { !trace_only.contains(&name) } else { rows.iter().any(|r| r == name) };
    if let Some(unknown) = rows.iter().find(|r| *r != "vm_vcpu_create_destroy" && !guests.iter().any(|(name, _, _)| name == *r)) {
        eprintln!("kvm-bench: no row {unknown}");
        return ExitCode::from(2);
    }
    // In the order named (scripts/trace-report reads the traces in that order), or all.
    let selected: Vec<_> = if rows.is_empty() {
        guests.iter().copied().filter(|(name, _, _)| wanted(name)).collect()
    } else {
        rows.iter().filter_map(|r| guests.iter().copied().find(|(name, _, _)| name == r)).collect()
    };
    let mut ok = true;
    for (name, code, n) in selected {
        let g = bench_guest(&kvm, code, n, name.ends_with("_long"));
        if name == "hlt_wake_userspace_irq" {
            hlt_idt(&g);
        }
        if name.starts_with("ept_first_touch_4k") {
            let len = (TOUCH_PAGES * 4096) as usize;
            // SAFETY: a fresh anonymous mapping, never touched by this process; it lives
            // until the process exits.
            let mem = unsafe {
                libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE,
                           libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
            };
            let region = kvm_userspace_memory_region {
                slot: 1, flags: 0, guest_phys_addr: TOUCH_BASE, memory_size: len as u64, userspace_addr: mem as u64,
            };
            // SAFETY: the region is the mapping above.
            unsafe { g.vm.set_user_memory_region(region) }.expect("slot 1");
        }
        match measure(g, n, trace) {
            Ok(ticks) => println!("{name} {ticks}"),
            Err(e) => {
                println!("{name} failed: {e}");
                ok = false;
            }
        }
    }
    if wanted("vm_vcpu_create_destroy") {
        println!("vm_vcpu_create_destroy {}", create_destroy(&kvm, 20));
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
