//! Guest setup shared by the test programs: a VM with 64 KiB of RAM at guest-physical 0 and
//! code at 0x1000, in real mode or (with identity paging) in 64-bit long mode.

use kvm_bindings::{kvm_cpuid_entry2, kvm_segment, kvm_userspace_memory_region, CpuId};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

/// Guest memory: 64 KiB at guest-physical 0, code at 0x1000.
pub const MEM: usize = 0x10000;
pub const CODE: u64 = 0x1000;

/// A VM with one vCPU and its RAM.
pub struct Guest {
    /// The VM.
    pub vm: VmFd,
    /// vCPU 0.
    pub vcpu: VcpuFd,
    /// The RAM's mapping (slot 0).
    pub mem: *mut u8,
}

/// `KVM_INTERRUPT` (kvm-ioctls has no wrapper for it): queues `irq` for a vCPU without an
/// in-kernel irqchip (or for its LINT0 ExtINT with the split irqchip); the errno on failure.
pub fn interrupt(vcpu: &VcpuFd, irq: u32) -> Result<(), i32> {
    use std::os::fd::AsRawFd;
    let arg = kvm_bindings::kvm_interrupt { irq };
    // SAFETY: KVM_INTERRUPT reads one `struct kvm_interrupt`, which `arg` is.
    let r = unsafe { libc::ioctl(vcpu.as_raw_fd(), rvmx_logic::kvm_abi::KVM_INTERRUPT.into(), &arg) };
    if r < 0 { Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)) } else { Ok(()) }
}

/// A real-mode guest running `code` at 0x1000 (CS base 0).
pub fn guest(kvm: &Kvm, code: &[u8]) -> Guest {
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    // SAFETY: a fresh anonymous mapping, never unmapped (the process is short-lived).
    let mem = unsafe {
        libc::mmap(std::ptr::null_mut(), MEM, libc::PROT_READ | libc::PROT_WRITE,
                   libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    } as *mut u8;
    // SAFETY: `code` fits in the mapping at offset 0x1000.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), mem.add(CODE as usize), code.len()) };
    let region = kvm_userspace_memory_region {
        slot: 0, flags: 0, guest_phys_addr: 0, memory_size: MEM as u64, userspace_addr: mem as u64,
    };
    // SAFETY: the region is the mapping above, alive for the process's life.
    unsafe { vm.set_user_memory_region(region) }.expect("KVM_SET_USER_MEMORY_REGION");
    let vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
    let mut sregs = vcpu.get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = CODE;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();
    Guest { vm, vcpu, mem }
}

/// A flat 4 GiB segment.
pub fn flat(type_: u8, selector: u16) -> kvm_segment {
    kvm_segment {
        base: 0, limit: 0xffff_ffff, selector, type_, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1,
        avl: 0, unusable: 0, padding: 0,
    }
}

/// A guest in 64-bit long mode with identity paging (one 2-MiB page) and a small CPUID table
/// of our own (with LM and NX, which long mode needs). Prints how SREGS reacts before and
/// after the CPUID table is set.
pub fn long_mode_guest(kvm: &Kvm, code: &[u8], name: &str) -> Guest {
    let g = guest(kvm, code);
    let (refused_before, cpuid, sregs) = to_long_mode(&g);
    println!("{name} long_mode_before_cpuid {refused_before}");
    println!("{name} set_cpuid2 {cpuid:?}");
    println!("{name} set_sregs_long_mode {sregs:?}");
    g
}

/// Puts `g` in 64-bit long mode as [`long_mode_guest`] does: whether SREGS refused long mode
/// (EINVAL) before the CPUID table was set, then what setting the table and SREGS answered.
pub fn to_long_mode(g: &Guest) -> (bool, Result<(), i32>, Result<(), i32>) {
    // SAFETY: page tables at 0x2000..0x5000 inside the 64 KiB mapping.
    unsafe {
        g.mem.add(0x2000).cast::<u64>().write(0x3003);
        g.mem.add(0x3000).cast::<u64>().write(0x4003);
        g.mem.add(0x4000).cast::<u64>().write(0x83);
    }
    let entry = |function: u32, eax: u32, ebx: u32, edx: u32| kvm_cpuid_entry2 {
        function, eax, ebx, edx, ..Default::default()
    };
    let table = [
        entry(0, 1, 0x786d_7672, 0), // "rvmx"
        entry(1, 0x906ea, 0, 0),
        entry(0x8000_0000, 0x8000_0001, 0, 0),
        entry(0x8000_0001, 0, 0, 1 << 29 | 1 << 20), // LM, NX
    ];
    let mut s = g.vcpu.get_sregs().unwrap();
    let long = |type_: u8, selector: u16, l: u8| kvm_segment { l, db: 1 - l, ..flat(type_, selector) };
    s.cs = long(11, 8, 1);
    (s.ds, s.es, s.fs, s.gs, s.ss) = (long(3, 16, 0), long(3, 16, 0), long(3, 16, 0), long(3, 16, 0), long(3, 16, 0));
    s.cr3 = 0x2000;
    s.cr4 = 0x20; // PAE
    s.cr0 = 0x8000_0011; // PG, ET, PE
    s.efer = 0x500; // LME, LMA
    let refused_before = g.vcpu.set_sregs(&s).map_err(|e| e.errno()).err() == Some(libc::EINVAL);
    let cpuid = CpuId::from_entries(&table).unwrap();
    let set_cpuid = g.vcpu.set_cpuid2(&cpuid).map_err(|e| e.errno());
    (refused_before, set_cpuid, g.vcpu.set_sregs(&s).map_err(|e| e.errno()))
}


/// What a device answers to an MMIO read of `data.len()` bytes at `addr`: a pattern that
/// differs per byte address, so a wrong address or width shows.
pub fn mmio_pattern(addr: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = (addr as u8).wrapping_add(i as u8) ^ 0xa5;
    }
}

/// Runs until HLT, shutdown or an error (at most `max` exits), printing each exit. Byte `i`
/// of an IN reads `in_value + i`; MMIO reads get [`mmio_pattern`].
pub fn run(name: &str, g: &mut Guest, max: usize, in_value: u8) {
    for i in 0..max {
        let line = match g.vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => format!("io_out port {port:#x} data {data:02x?}"),
            Ok(VcpuExit::IoIn(port, data)) => {
                data.iter_mut().enumerate().for_each(|(k, b)| *b = in_value.wrapping_add(k as u8));
                format!("io_in port {port:#x} size {}", data.len())
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => format!("mmio_write addr {addr:#x} data {data:02x?}"),
            Ok(VcpuExit::MmioRead(addr, data)) => {
                mmio_pattern(addr, data);
                format!("mmio_read addr {addr:#x} len {}", data.len())
            }
            Ok(VcpuExit::Hlt) => {
                println!("{name} exit {i} hlt");
                break;
            }
            Ok(VcpuExit::Shutdown) => {
                println!("{name} exit {i} shutdown");
                break;
            }
            Ok(other) => {
                println!("{name} exit {i} other {other:?}");
                break;
            }
            Err(e) => {
                println!("{name} exit {i} error errno {}", e.errno());
                break;
            }
        };
        println!("{name} exit {i} {line}");
    }
    let r = g.vcpu.get_regs().unwrap();
    println!("{name} regs rax {:#x} rbx {:#x} rcx {:#x} rdx {:#x} rip {:#x} rflags {:#x}", r.rax, r.rbx, r.rcx, r.rdx, r.rip, r.rflags);
}

/// The bytes between two symbols of a guest assembled into this program (see the
/// `global_asm!` guests in the test programs).
pub fn code(start: &u8, end: &u8) -> &'static [u8] {
    let (s, e) = (start as *const u8, end as *const u8);
    // SAFETY: both symbols delimit one assembled blob in .rodata, `start` first.
    unsafe { std::slice::from_raw_parts(s, e.offset_from(s) as usize) }
}

/// A hardware write watchpoint on `addr` in this process (perf), or `None` if the CPU or
/// kernel has none: proves a hypervisor left this process's debug registers working.
pub fn watchpoint(addr: u64) -> Option<i32> {
    // `struct perf_event_attr` up to `bp_len` (PERF_ATTR_SIZE_VER1, 72 bytes).
    #[repr(C)]
    struct Attr {
        type_: u32,
        size: u32,
        config: u64,
        sample_period: u64,
        sample_type: u64,
        read_format: u64,
        flags: u64,
        wakeup_events: u32,
        bp_type: u32,
        bp_addr: u64,
        bp_len: u64,
    }
    const PERF_TYPE_BREAKPOINT: u32 = 5;
    const HW_BREAKPOINT_W: u32 = 2;
    const EXCLUDE_KERNEL: u64 = 1 << 5;
    const EXCLUDE_HV: u64 = 1 << 6;
    let attr = Attr {
        type_: PERF_TYPE_BREAKPOINT, size: 72, config: 0, sample_period: 0, sample_type: 0,
        read_format: 0, flags: EXCLUDE_KERNEL | EXCLUDE_HV, wakeup_events: 0,
        bp_type: HW_BREAKPOINT_W, bp_addr: addr, bp_len: 4,
    };
    // SAFETY: perf_event_open reads `attr` (72 bytes, size field says so); pid 0 = this
    // thread, cpu -1 = any.
    let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, &attr as *const Attr, 0, -1, -1, 0) };
    (fd >= 0).then_some(fd as i32)
}

/// The fuzzers' PRNG (SplitMix64: small, fast, and the same everywhere), seeded by (seed,
/// stream, index) so any one guest or batch can be replayed alone.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, stream: u64, i: u64) -> Rng {
        let mut r = Rng(seed);
        r.next();
        r.0 ^= stream.wrapping_mul(0xd1b5_4a32_d192_ed03);
        r.next();
        r.0 ^= i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        r.next();
        r
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next() >> 32) * n) >> 32
    }
    pub fn below_usize(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn pct(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
    pub fn pick<T: Copy>(&mut self, s: &[T]) -> T {
        s[self.below_usize(s.len())]
    }
    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    pub fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// Runs the calling thread on CPU `cpu` only, or on every CPU (`None`).
pub fn pin_to(cpu: Option<usize>) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET adds CPUs within its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        match cpu {
            Some(c) => libc::CPU_SET(c, &mut set),
            None => (0..libc::CPU_SETSIZE as usize).for_each(|c| libc::CPU_SET(c, &mut set)),
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Guests of the in-kernel local APIC (split irqchip), in 64-bit mode: 64 KiB of RAM with the
/// code at 0x1000, identity paging (0x2000-0x5fff: the first 2 MiB, and 0xfee00000 uncached
/// for the xAPIC page), a GDT at 0x6800 and an IDT at 0x7000.
pub mod split {
    use kvm_bindings::{kvm_cpuid_entry2, kvm_enable_cap, kvm_segment, CpuId, KVM_CAP_SPLIT_IRQCHIP};
    use kvm_ioctls::{Kvm, VcpuFd, VmFd};

    /// A VM with the split irqchip (24 IOAPIC routes; the result of enabling it), its RAM
    /// holding `code` and an IDT whose vectors in `gates` point at the given offsets in `code`.
    pub fn vm(kvm: &Kvm, code: &[u8], gates: &[(u8, u64)]) -> (VmFd, *mut u8, Result<(), i32>) {
        let vm = kvm.create_vm().unwrap();
        let cap = kvm_enable_cap { cap: KVM_CAP_SPLIT_IRQCHIP, args: [24, 0, 0, 0], ..Default::default() };
        let enabled = vm.enable_cap(&cap).map_err(|e| e.errno());
        // SAFETY: a fresh anonymous mapping of 64 KiB, never unmapped (the process is short-lived).
        let mem = unsafe {
            libc::mmap(std::ptr::null_mut(), 0x10000, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        } as *mut u8;
        // SAFETY: inside the 64 KiB mapping: code at 0x1000, page tables at 0x2000-0x5fff, GDT
        // at 0x6800, IDT at 0x7000.
        unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), mem.add(0x1000), code.len());
            mem.add(0x2000).cast::<u64>().write(0x3003);
            mem.add(0x3000).cast::<u64>().write(0x4003);
            mem.add(0x4000).cast::<u64>().write(0x83);
            mem.add(0x3018).cast::<u64>().write(0x5003);
            mem.add(0x5000 + 0x1f7 * 8).cast::<u64>().write(0xfee0_0000 | 0x9b); // PCD, PWT
            mem.add(0x6808).cast::<u64>().write(0x0020_9a00_0000_0000); // 64-bit code
            mem.add(0x6810).cast::<u64>().write(0x00cf_9200_0000_ffff); // data (IRETQ reloads SS)
            for &(vector, offset) in gates {
                let target = 0x1000 + offset;
                let e = mem.add(0x7000 + usize::from(vector) * 16);
                e.cast::<u64>().write_unaligned((target & 0xffff) | 8 << 16 | 0x8e00 << 32 | (target >> 16 & 0xffff) << 48);
                e.add(8).cast::<u64>().write_unaligned(target >> 32);
            }
        }
        let region = kvm_bindings::kvm_userspace_memory_region {
            slot: 0, flags: 0, guest_phys_addr: 0, memory_size: 0x10000, userspace_addr: mem as u64,
        };
        // SAFETY: the region is the mapping above, alive for the process's life.
        unsafe { vm.set_user_memory_region(region) }.unwrap();
        (vm, mem, enabled)
    }

    /// A CPUID table with x2APIC and the TSC-deadline timer (before the vCPU first runs).
    pub fn set_cpuid(vcpu: &VcpuFd) -> Result<(), i32> {
        let entry = |function: u32, eax: u32, ebx: u32, ecx: u32, edx: u32| kvm_cpuid_entry2 { function, eax, ebx, ecx, edx, ..Default::default() };
        let table = [
            entry(0, 1, 0x756e_6547, 0x6c65_746e, 0x4965_6e69),
            entry(1, 0x906ea, 0, 1 << 21 | 1 << 24, 1 << 9), // x2APIC, TSC-deadline; APIC
            entry(0x8000_0000, 0x8000_0008, 0, 0, 0),
            entry(0x8000_0001, 0, 0, 0, 1 << 29 | 1 << 20),
            entry(0x8000_0008, 0x3027, 0, 0, 0),
        ];
        vcpu.set_cpuid2(&CpuId::from_entries(&table).unwrap()).map_err(|e| e.errno())
    }

    /// 64-bit mode at `rip` with stack `rsp`, on [`vm`]'s tables.
    pub fn to_long_mode(vcpu: &VcpuFd, rip: u64, rsp: u64) -> Result<(), i32> {
        let mut sr = vcpu.get_sregs().unwrap();
        let long = |type_: u8, selector: u16, l: u8| kvm_segment { l, db: 1 - l, ..super::flat(type_, selector) };
        sr.cs = long(11, 8, 1);
        (sr.ds, sr.es, sr.fs, sr.gs, sr.ss) = (long(3, 16, 0), long(3, 16, 0), long(3, 16, 0), long(3, 16, 0), long(3, 16, 0));
        (sr.cr3, sr.cr4, sr.cr0, sr.efer) = (0x2000, 0x20, 0x8000_0011, 0x500);
        (sr.gdt.base, sr.gdt.limit, sr.idt.base, sr.idt.limit) = (0x6800, 23, 0x7000, 0xfff);
        let r = vcpu.set_sregs(&sr).map_err(|e| e.errno());
        let mut regs = vcpu.get_regs().unwrap();
        (regs.rip, regs.rflags, regs.rsp) = (rip, 2, rsp);
        vcpu.set_regs(&regs).unwrap();
        r
    }
}
