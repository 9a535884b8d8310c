//! Corners where a client sees KVM's own rules: hypercall answers (by number, width and
//! privilege), OUT to port 0x7e (KVM_X86_QUIRK_OUT_7E_INC_RIP), a port access whose RIP
//! userspace moved before completing it, `kvm_run.cr8` as the guest's TPR, `KVM_IRQ_LINE`
//! without an irqchip, `KVM_SET_CPUID2` after `KVM_RUN`, `KVM_SIGNAL_MSI`, `KVM_ENABLE_CAP` on a
//! VM fd, a debugger's single steps over emulated instructions. Prints `key value` lines;
//! tests/vm/suite.sh runs it on `/dev/rvmx` and `/dev/kvm` in the same boot and requires
//! identical output but the `info` lines.
//!
//! Usage: kvm-conformance-check DEVICE

use std::{ffi::CString, os::fd::AsRawFd, process::ExitCode};

use kvm_bindings::{kvm_cpuid_entry2, kvm_irq_level, kvm_msr_entry, kvm_segment, CpuId, Msrs, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};
use kvm_ioctls::{Kvm, VcpuExit};
use rvmx_test_programs::{flat, guest, long_mode_guest, Guest};

const CODE: u64 = 0x1000;

fn exit_line(g: &mut Guest, in_value: u8) -> String {
    match g.vcpu.run() {
        Ok(VcpuExit::IoOut(port, data)) => format!("io_out port {port:#x} data {data:02x?}"),
        Ok(VcpuExit::IoIn(port, data)) => {
            data.fill(in_value);
            format!("io_in port {port:#x} size {}", data.len())
        }
        Ok(VcpuExit::Hlt) => "hlt".to_string(),
        Ok(VcpuExit::Shutdown) => "shutdown".to_string(),
        Ok(other) => format!("other {other:?}"),
        Err(e) => format!("error errno {}", e.errno()),
    }
}

/// The guest's exits (as [`exit_line`] gives them) until it halts, shuts down or fails, at
/// most `max`.
fn exits_to_end(g: &mut Guest, max: usize) -> Vec<String> {
    let mut exits = Vec::new();
    for _ in 0..max {
        let e = exit_line(g, 0);
        let end = e == "hlt" || e.starts_with("error") || e.starts_with("other") || e == "shutdown";
        exits.push(e);
        if end {
            break;
        }
    }
    exits
}

fn regs_line(g: &Guest) -> String {
    let r = g.vcpu.get_regs().unwrap();
    format!("rax {:#x} rip {:#x}", r.rax, r.rip)
}

/// VMCALL with RAX = `nr`, RBX..RSI = `args`, from the guest's current mode; prints RAX after.
fn hypercall(g: &mut Guest, name: &str, nr: u64, args: [u64; 4]) {
    let mut r = g.vcpu.get_regs().unwrap();
    (r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rip) = (nr, args[0], args[1], args[2], args[3], CODE);
    g.vcpu.set_regs(&r).unwrap();
    let exit = exit_line(g, 0);
    println!("hypercall {name} nr {nr:#x} exit {exit} {}", regs_line(g));
}

fn hypercalls(g: &mut Guest, mode: &str) {
    let ipi_shorthand = 0xc0000;
    for (nr, args) in [
        (0, [0; 4]),
        (1, [0; 4]),                  // VAPIC_POLL_IRQ
        (2, [0; 4]),                  // MMU_OP (gone)
        (3, [0; 4]),                  // FEATURES (gone)
        (5, [0, 1, 0, 0]),            // KICK_CPU of APIC ID 1
        (9, [0x8000, 1, 0, 0]),       // CLOCK_PAIRING of an unknown clock type
        (10, [1, 0, 0, 0xfe]),        // SEND_IPI, fixed vector 0xfe
        (10, [1, 0, 0, ipi_shorthand]), // SEND_IPI with a shorthand
        (11, [0, 1, 0, 0]),           // SCHED_YIELD to APIC ID 1
        (12, [0x10000, 1, 0, 0]),     // MAP_GPA_RANGE (no exit for it)
        (0x1_0000_0001, [0; 4]),      // VAPIC_POLL_IRQ in EAX only
        (1000, [0; 4]),
    ] {
        hypercall(g, mode, nr, args);
    }
}

fn main() -> ExitCode {
    let Some(dev) = std::env::args().nth(1) else {
        eprintln!("usage: kvm-conformance-check DEVICE");
        return ExitCode::from(2);
    };
    let kvm = Kvm::new_with_path(&CString::new(dev).unwrap()).expect("open device");
    let vmcall_hlt = [0x0f, 0x01, 0xc1, 0xf4];

    // Hypercalls from real mode (32-bit registers), 64-bit mode, and CPL 3.
    let mut g = guest(&kvm, &vmcall_hlt);
    hypercalls(&mut g, "real");
    let mut g = long_mode_guest(&kvm, &vmcall_hlt, "hypercall");
    hypercalls(&mut g, "long64");
    let mut g = guest(&kvm, &vmcall_hlt);
    let mut s = g.vcpu.get_sregs().unwrap();
    let user = |type_: u8, selector: u16| kvm_segment { dpl: 3, ..flat(type_, selector | 3) };
    s.cs = user(11, 8);
    (s.ds, s.es, s.fs, s.gs, s.ss) = (user(3, 16), user(3, 16), user(3, 16), user(3, 16), user(3, 16));
    s.cr0 |= 1; // PE
    g.vcpu.set_sregs(&s).unwrap();
    hypercall(&mut g, "cpl3", 1, [0; 4]);
    hypercall(&mut g, "cpl3", 1000, [0; 4]);

    // CPUID from the vCPU's table: hypervisor leaves as set, and what leaves above a range's
    // maximum answer (the highest basic leaf, or zeros for an AMD vendor), topology leaves.
    for vendor in ["intel", "amd"] {
        let (ebx, ecx, edx) = if vendor == "amd" { (0x6874_7541, 0x444d_4163, 0x6974_6e65) } else { (0x756e_6547, 0x6c65_746e, 0x4965_6e69) };
        let e = |function: u32, index: u32, flags: u32, regs: [u32; 4]| kvm_cpuid_entry2 {
            function, index, flags, eax: regs[0], ebx: regs[1], ecx: regs[2], edx: regs[3], ..Default::default()
        };
        let table = [
            e(0, 0, 0, [0xb, ebx, ecx, edx]),
            e(1, 0, 0, [0x906ea, 0x0800, 0, 0]),
            e(0xb, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, [1, 1, 0x100, 0]),
            e(0xb, 1, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, [4, 2, 0x201, 0]),
            e(0x4000_0000, 0, 0, [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d]),
            e(0x4000_0001, 0, 0, [0x0100_00fb, 0, 0, 1]),
            e(0x8000_0000, 0, 0, [0x8000_0001, 0, 0, 0]),
            e(0x8000_0001, 0, 0, [0, 0, 1, 0x2010_0800]),
        ];
        let mut g = guest(&kvm, &[0x0f, 0xa2, 0xf4]); // cpuid; hlt
        g.vcpu.set_cpuid2(&CpuId::from_entries(&table).unwrap()).unwrap();
        for (leaf, sub) in [(0x4000_0000, 0), (0x4000_0001, 0), (0x4000_0002, 0), (0x4000_0100, 0), (0x4fff_ff00, 0),
                            (0xb, 1), (0xb, 7), (0x20, 3), (0x1f, 2), (0x5000_0000, 0), (0x8000_0008, 0), (0xc000_0000, 0)] {
            let mut r = g.vcpu.get_regs().unwrap();
            (r.rax, r.rcx, r.rip) = (leaf, sub, CODE);
            g.vcpu.set_regs(&r).unwrap();
            let exit = exit_line(&mut g, 0);
            let r = g.vcpu.get_regs().unwrap();
            println!("cpuid {vendor} {leaf:#x}.{sub} exit {exit} {:#x} {:#x} {:#x} {:#x}", r.rax, r.rbx, r.rcx, r.rdx);
        }
    }

    // OUT to port 0x7e exits with RIP already past it; to 0x7f, at it.
    for port in [0x7e, 0x7f] {
        let mut g = guest(&kvm, &[0xb0, 0x5a, 0xe6, port, 0xf4]); // mov al; out port, al; hlt
        let exit = exit_line(&mut g, 0);
        println!("out{port:x} exit {exit} {}", regs_line(&g));
        let exit = exit_line(&mut g, 0);
        println!("out{port:x} then {exit} {}", regs_line(&g));
    }

    // The guest's own RFLAGS.TF over an OUT that userspace completes: the single-step #DB
    // follows the OUT (KVM raises it when it skips the instruction), so the #DB handler
    // (IVT vector 1 at 0:0x1100) sees the IP after the OUT, not after the next instruction.
    let tf = [
        0x9c, 0x58, 0x0d, 0x00, 0x01, 0x50, 0x9d, // pushf; pop ax; or ax, 0x100; push ax; popf
        0xe6, 0x80,                               // out 0x80, al (to userspace)
        0x90, 0xf4,                               // nop; hlt
    ];
    for port in [0x80u8, 0x7e] {
        let mut code = tf;
        code[8] = port;
        let mut g = guest(&kvm, &code);
        // SAFETY: inside the mapping: IVT entry 1, and the handler at 0x1100.
        unsafe {
            g.mem.add(4).cast::<u32>().write_unaligned(0x1100);
            // mov bp, sp; mov ax, [bp]; out 0x92, ax; hlt
            std::ptr::copy_nonoverlapping([0x89u8, 0xe5, 0x8b, 0x46, 0x00, 0xe7, 0x92, 0xf4].as_ptr(), g.mem.add(0x1100), 8);
        }
        let exits = exits_to_end(&mut g, 3);
        println!("tf_out{port:x} exits {exits:?} {}", regs_line(&g));
    }

    // A port access userspace moved RIP away from (KVM_SET_REGS) before completing it: KVM
    // drops the completion. Unmoved (another register set), it completes.
    // 0x1000: in al, 0x60 / out 0x61, al; 0x1002: hlt; 0x1003: hlt; 0x1004: hlt.
    for (name, code) in [("in", [0xe4, 0x60, 0xf4, 0xf4, 0xf4]), ("out", [0xe6, 0x61, 0xf4, 0xf4, 0xf4])] {
        for moved in [false, true] {
            let mut g = guest(&kvm, &code);
            let exit = exit_line(&mut g, 0x77);
            let mut r = g.vcpu.get_regs().unwrap();
            if moved {
                r.rip = CODE + 3;
            } else {
                r.rbx = 0x1234;
            }
            g.vcpu.set_regs(&r).unwrap();
            let then = exit_line(&mut g, 0);
            println!("pio_{name} moved {moved} exit {exit} then {then} {}", regs_line(&g));
        }
    }

    // kvm_run.cr8 is the guest's TPR at each KVM_RUN (with no in-kernel APIC); above 15: EINVAL.
    // mov rax, cr8; hlt
    let mut g = long_mode_guest(&kvm, &[0x44, 0x0f, 0x20, 0xc0, 0xf4], "cr8");
    let mut s = g.vcpu.get_sregs().unwrap();
    s.cr8 = 3;
    g.vcpu.set_sregs(&s).unwrap();
    g.vcpu.get_kvm_run().cr8 = 9;
    let exit = exit_line(&mut g, 0);
    println!("cr8 from_kvm_run exit {exit} {} sregs_cr8 {}", regs_line(&g), g.vcpu.get_sregs().unwrap().cr8);
    g.vcpu.get_kvm_run().cr8 = 16;
    let exit = exit_line(&mut g, 0);
    println!("cr8 reserved exit {exit} kvm_run_cr8 {}", g.vcpu.get_kvm_run().cr8);

    // IA32_TSC_ADJUST (emulated): userspace's write only sets the value; the guest's moves its
    // TSC; the guest's write of IA32_TSC moves TSC_ADJUST by as much. Without TSC_ADJUST in
    // CPUID, writes to it are ignored (no #GP). Timing-dependent values are printed as checks.
    let tsc_guest = [
        0xb9, 0x3b, 0x00, 0x00, 0x00,             // mov ecx, 0x3b (IA32_TSC_ADJUST)
        0x0f, 0x32,                               // rdmsr
        0x89, 0x04, 0x25, 0x00, 0x60, 0x00, 0x00, // mov [0x6000], eax
        0x89, 0x14, 0x25, 0x04, 0x60, 0x00, 0x00, // mov [0x6004], edx
        0x0f, 0x31,                               // rdtsc
        0x89, 0x04, 0x25, 0x08, 0x60, 0x00, 0x00, // mov [0x6008], eax
        0x89, 0x14, 0x25, 0x0c, 0x60, 0x00, 0x00, // mov [0x600c], edx
        0xb9, 0x3b, 0x00, 0x00, 0x00,             // mov ecx, 0x3b
        0x8b, 0x04, 0x25, 0x00, 0x60, 0x00, 0x00, // mov eax, [0x6000]
        0x8b, 0x14, 0x25, 0x04, 0x60, 0x00, 0x00, // mov edx, [0x6004]
        0x81, 0xc2, 0x00, 0x01, 0x00, 0x00,       // add edx, 0x100 (+2^40)
        0x0f, 0x30,                               // wrmsr
        0x0f, 0x31,                               // rdtsc
        0x89, 0x04, 0x25, 0x10, 0x60, 0x00, 0x00, // mov [0x6010], eax
        0x89, 0x14, 0x25, 0x14, 0x60, 0x00, 0x00, // mov [0x6014], edx
        0x0f, 0x31,                               // rdtsc
        0x89, 0x04, 0x25, 0x18, 0x60, 0x00, 0x00, // mov [0x6018], eax
        0x89, 0x14, 0x25, 0x1c, 0x60, 0x00, 0x00, // mov [0x601c], edx
        0xb9, 0x10, 0x00, 0x00, 0x00,             // mov ecx, 0x10 (IA32_TSC)
        0x31, 0xc0,                               // xor eax, eax
        0xba, 0x00, 0x10, 0x00, 0x00,             // mov edx, 0x1000 (TSC = 2^44)
        0x0f, 0x30,                               // wrmsr
        0xb9, 0x3b, 0x00, 0x00, 0x00,             // mov ecx, 0x3b
        0x0f, 0x32,                               // rdmsr
        0x89, 0x04, 0x25, 0x20, 0x60, 0x00, 0x00, // mov [0x6020], eax
        0x89, 0x14, 0x25, 0x24, 0x60, 0x00, 0x00, // mov [0x6024], edx
        0x0f, 0x31,                               // rdtsc
        0x89, 0x04, 0x25, 0x28, 0x60, 0x00, 0x00, // mov [0x6028], eax
        0x89, 0x14, 0x25, 0x2c, 0x60, 0x00, 0x00, // mov [0x602c], edx
        0xf4,                                     // hlt
    ];
    for listed in [true, false] {
        let name = if listed { "tsc_adjust" } else { "tsc_adjust_unlisted" };
        let mut g = long_mode_guest(&kvm, &tsc_guest, name);
        let e = |function: u32, eax: u32, ebx: u32, edx: u32| kvm_cpuid_entry2 { function, eax, ebx, edx, ..Default::default() };
        let table = [
            e(0, 7, 0x756e_6547, 0x4965_6e69),
            e(1, 0x906ea, 0, 0),
            kvm_cpuid_entry2 { flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX, ..e(7, 0, if listed { 1 << 1 } else { 0 }, 0) },
            e(0x8000_0000, 0x8000_0001, 0, 0),
            e(0x8000_0001, 0, 0, 1 << 29 | 1 << 20),
        ];
        g.vcpu.set_cpuid2(&CpuId::from_entries(&table).unwrap()).unwrap();
        let set = g.vcpu.set_msrs(&Msrs::from_entries(&[kvm_msr_entry { index: 0x3b, data: 5, ..Default::default() }]).unwrap());
        let exit = exit_line(&mut g, 0);
        // SAFETY: inside the mapping.
        let q = |off: usize| unsafe { g.mem.add(0x6000 + off).cast::<u64>().read() };
        let (a0, t0, t1, t2, a2, t3) = (q(0), q(8), q(0x10), q(0x18), q(0x20), q(0x28));
        let jumped = t1.wrapping_sub(t0) >> 40 == 1;
        let expected = a0.wrapping_add(if jumped { 1 << 40 } else { 0 }).wrapping_add((1u64 << 44).wrapping_sub(t2));
        let mut got = Msrs::from_entries(&[kvm_msr_entry { index: 0x3b, ..Default::default() }]).unwrap();
        let n = g.vcpu.get_msrs(&mut got).map_err(|e| e.errno());
        println!("{name} set_msrs {:?} exit {exit} guest_read {a0} tsc_jumped_2^40 {jumped} adjust_after_tsc_write_ok {} \
                  tsc_after_write_ok {} get_msrs {n:?} same_as_guest {}",
                 set.map_err(|e| e.errno()), expected.wrapping_sub(a2) < 1 << 24,
                 t3.wrapping_sub(1 << 44) < 1 << 24, got.as_slice()[0].data == a2);
    }

    // KVM_IRQ_LINE and KVM_IRQ_LINE_STATUS on a VM without an irqchip.
    let vmfd = g.vm.as_raw_fd();
    let ioctl = |cmd: u64, arg: usize| {
        // SAFETY: the argument is a kvm_irq_level on this stack or a bad address the kernel
        // must refuse with EFAULT.
        let r = unsafe { libc::ioctl(vmfd, cmd as _, arg) };
        if r < 0 { format!("errno {}", std::io::Error::last_os_error().raw_os_error().unwrap_or(0)) } else { format!("ok {r}") }
    };
    let mut level = kvm_irq_level::default();
    level.level = 1;
    let at = &mut level as *mut kvm_irq_level as usize;
    println!("irq_line {}", ioctl(0x4008_ae61, at));
    println!("irq_line_bad_pointer {}", ioctl(0x4008_ae61, 8));
    println!("irq_line_status {}", ioctl(0xc008_ae67, at));

    // KVM_SIGNAL_MSI without an irqchip: EFAULT for a bad pointer, else EINVAL.
    let msi = kvm_bindings::kvm_msi { address_lo: 0xfee0_0000, data: 0x30, ..Default::default() };
    println!("signal_msi {}", ioctl(0x4020_aea5, &msi as *const _ as usize));
    println!("signal_msi_bad_pointer {}", ioctl(0x4020_aea5, 8));

    // KVM_SET_CPUID2 after KVM_RUN: the same table again is accepted, a different one is not.
    let cpuid = g.vcpu.get_cpuid2(8).unwrap();
    println!("set_cpuid2_after_run_same {:?}", g.vcpu.set_cpuid2(&cpuid).map_err(|e| e.errno()));
    let mut other = cpuid.clone();
    other.as_mut_slice()[0].ebx ^= 1;
    println!("set_cpuid2_after_run_other {:?}", g.vcpu.set_cpuid2(&other).map_err(|e| e.errno()));
    enable_cap(&kvm);
    vmmcall(&kvm);
    rf_on_faults(&kvm);
    singlestep(&kvm);
    ExitCode::SUCCESS
}

/// The capabilities QEMU 8 and later require, and `KVM_ENABLE_CAP` on a VM fd: flags and
/// unknown capabilities refused, `KVM_CAP_DISABLE_QUIRKS2` (here turning off the port 0x7e
/// quirk, which then exits like any OUT), `KVM_CAP_MAX_VCPU_ID` (set once, before vCPUs),
/// `KVM_CAP_HALT_POLL`.
fn enable_cap(kvm: &Kvm) {
    for (name, cap) in [("internal_error_data", 40), ("signal_msi", 77), ("enable_cap_vm", 98), ("disable_quirks", 116),
                        ("x86_robust_singlestep", 51), ("adjust_clock", 39)] {
        println!("cap {name} {}", kvm.check_extension_raw(cap));
    }
    let quirks2 = kvm.check_extension_raw(213);
    println!("cap disable_quirks2_has_out_7e {}", quirks2 & 1 << 3 != 0);
    let en = |vm: &kvm_ioctls::VmFd, cap: u32, flags: u32, arg: u64| {
        let c = kvm_bindings::kvm_enable_cap { cap, flags, args: [arg, 0, 0, 0], ..Default::default() };
        vm.enable_cap(&c).map_err(|e| e.errno())
    };
    let vm = kvm.create_vm().unwrap();
    println!("enable_cap flags {:?} unknown {:?} quirks2_unknown_bit {:?} quirks_unknown_bit {:?}",
             en(&vm, 116, 1, 0), en(&vm, 0x7fff, 0, 0), en(&vm, 213, 0, 1 << 63), en(&vm, 116, 0, 1 << 63));
    println!("enable_cap max_vcpu_id 4 {:?} again {:?} 5 {:?} above_limit {:?}",
             en(&vm, 128, 0, 4), en(&vm, 128, 0, 4), en(&vm, 128, 0, 5), en(&vm, 128, 0, 1 << 40));
    println!("create_vcpu id4 {:?} id3 {:?}", vm.create_vcpu(4).map(|_| ()).map_err(|e| e.errno()),
             vm.create_vcpu(3).map(|_| ()).map_err(|e| e.errno()));
    let vm = kvm.create_vm().unwrap();
    let _vcpu = vm.create_vcpu(0).unwrap();
    println!("enable_cap max_vcpu_id after_vcpu {:?}", en(&vm, 128, 0, 2));
    // KVM_CAP_HALT_POLL: a VM's own maximum polling time, any u32 (after vCPUs too).
    println!("cap halt_poll {} vm {}", kvm.check_extension_raw(182), vm.check_extension_raw(182));
    println!("enable_cap halt_poll 1000 {:?} 0 {:?} u32_max {:?} above_u32 {:?} flags {:?}",
             en(&vm, 182, 0, 1000), en(&vm, 182, 0, 0), en(&vm, 182, 0, u32::MAX.into()), en(&vm, 182, 0, 1 << 32), en(&vm, 182, 1, 0));
    // OUT to 0x7e with the quirk off: RIP stays at the OUT while userspace handles it.
    let mut g = guest(kvm, &[0xb0, 0x5a, 0xe6, 0x7e, 0xf4]);
    println!("disable_quirks2_out_7e {:?}", en(&g.vm, 213, 0, 1 << 3));
    let exit = exit_line(&mut g, 0);
    println!("out7e_quirk_off exit {exit} {}", regs_line(&g));
    let exit = exit_line(&mut g, 0);
    println!("out7e_quirk_off then {exit} {}", regs_line(&g));
}

/// A userspace debugger single-steps over instructions the hypervisor emulates in the kernel
/// or completes with userspace's help (what `KVM_CAP_X86_ROBUST_SINGLESTEP` promises): a step
/// is reported at each next instruction. Compared: the distinct stops up to the IN (KVM nested
/// in Bochs repeats some stops, and its first ones at random); the IN's completion and what
/// follows are `info`: KVM in Bochs runs on to the HLT there without reporting a step, where
/// its code (complete_fast_pio_in, kvm_skip_emulated_instruction) reports one.
fn singlestep(kvm: &Kvm) {
    let code = [
        0x90, // nop
        0xb9, 0xa0, 0x01, 0x00, 0x00, // mov ecx, 0x1a0 (IA32_MISC_ENABLE)
        0x0f, 0x32, // rdmsr
        0x0f, 0x30, // wrmsr
        0x0f, 0x20, 0xc0, // mov rax, cr0
        0x0f, 0x22, 0xc0, // mov cr0, rax
        0x48, 0xc7, 0xc0, 0x05, 0x00, 0x00, 0x00, // mov rax, 5
        0x44, 0x0f, 0x22, 0xc0, // mov cr8, rax
        0x89, 0x04, 0x25, 0x00, 0x00, 0x02, 0x00, // mov [0x20000], eax (MMIO)
        0x8b, 0x04, 0x25, 0x00, 0x00, 0x02, 0x00, // mov eax, [0x20000] (MMIO)
        0xe4, 0x60, // in al, 0x60
        0x0f, 0x09, // wbinvd
        0x31, 0xc0, // xor eax, eax
        0x0f, 0xa2, // cpuid
        0xf4, // hlt
    ];
    let mut g = long_mode_guest(kvm, &code, "singlestep");
    let dbg = kvm_bindings::kvm_guest_debug {
        control: kvm_bindings::KVM_GUESTDBG_ENABLE | kvm_bindings::KVM_GUESTDBG_SINGLESTEP,
        ..Default::default()
    };
    println!("singlestep set {:?}", g.vcpu.set_guest_debug(&dbg).map_err(|e| e.errno()));
    let mut steps = Vec::new();
    for _ in 0..40 {
        let line = match g.vcpu.run() {
            Ok(VcpuExit::Debug(d)) => format!("db{} +{:#x}", d.exception, d.pc.wrapping_sub(CODE)),
            Ok(VcpuExit::IoIn(port, data)) => {
                data.fill(0x42);
                format!("in {port:#x}")
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => format!("mmio_w {addr:#x} {}", data.len()),
            Ok(VcpuExit::MmioRead(addr, data)) => {
                data.fill(0x24);
                format!("mmio_r {addr:#x} {}", data.len())
            }
            Ok(VcpuExit::Hlt) => "hlt".into(),
            Ok(other) => format!("other {other:?}"),
            Err(e) => format!("error {}", e.errno()),
        };
        let end = line == "hlt" || line.starts_with("other") || line.starts_with("error");
        steps.push(line);
        if end {
            break;
        }
    }
    let split = steps.iter().position(|s| s.starts_with("in ")).map_or(steps.len(), |i| i + 1);
    let mut stops = steps[..split].to_vec();
    stops.dedup();
    println!("singlestep {}", stops.join(", "));
    println!("info singlestep_after_in {} {}", steps[split..].join(", "), regs_line(&g));
}

/// AMD's VMMCALL on this Intel host: with KVM_X86_QUIRK_FIX_HYPERCALL_INSN (on by default)
/// it is rewritten to VMCALL in guest memory and runs as the hypercall in protected and long
/// mode; in real mode, and with the quirk off (KVM_CAP_DISABLE_QUIRKS2), the guest gets #UD
/// (its real-mode handler reports vector 6 on port 0xe0; in long mode, with no IDT, #UD ends
/// in a triple fault).
fn vmmcall(kvm: &Kvm) {
    for (mode, quirk) in [("real", true), ("real", false), ("long64", true), ("long64", false)] {
        // mov eax, 1 (KVM_HC_VAPIC_POLL_IRQ); vmmcall; hlt
        let code: &[u8] = if mode == "real" { &[0x66, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f, 0x01, 0xd9, 0xf4] }
                          else { &[0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f, 0x01, 0xd9, 0xf4] };
        let mut g = if mode == "real" { guest(kvm, code) } else { long_mode_guest(kvm, code, "vmmcall") };
        // SAFETY: inside the mapping: IVT entry 6 and the handler at 0x1100.
        unsafe {
            g.mem.add(6 * 4).cast::<u32>().write_unaligned(0x1100);
            std::ptr::copy_nonoverlapping([0xb0u8, 0x06, 0xe6, 0xe0, 0xf4].as_ptr(), g.mem.add(0x1100), 5);
        }
        if !quirk {
            let c = kvm_bindings::kvm_enable_cap { cap: 213, args: [1 << 5, 0, 0, 0], ..Default::default() };
            println!("vmmcall disable_quirk {:?}", g.vm.enable_cap(&c).map_err(|e| e.errno()));
        }
        let exits = exits_to_end(&mut g, 3);
        let at = code.len() - 4;
        // SAFETY: inside the mapping.
        let bytes: Vec<u8> = (0..3).map(|i| unsafe { g.mem.add(CODE as usize + at + i).read() }).collect();
        println!("vmmcall {mode} quirk {quirk} exits {exits:?} bytes {bytes:02x?} {}", regs_line(&g));
    }
}

/// The RFLAGS image a fault pushes carries RF (KVM sets it when it delivers a fault it raised,
/// as the processor does for its own): a #GP from WRMSR (raised by the hypervisor) and one from
/// loading a bad DS selector (raised by the processor), in 64-bit mode with an IDT; the
/// handler sends the pushed RFLAGS to port 0x90.
fn rf_on_faults(kvm: &Kvm) {
    let wrmsr = [0xb9, 0xef, 0xbe, 0xad, 0xde, 0x31, 0xc0, 0x31, 0xd2, 0x0f, 0x30, 0xf4]; // mov ecx, 0xdeadbeef; wrmsr
    let bad_ds = [0x66, 0xb8, 0xf8, 0x0f, 0x8e, 0xd8, 0xf4]; // mov ax, 0xff8; mov ds, ax
    for (name, code) in [("wrmsr", &wrmsr[..]), ("mov_ds", &bad_ds[..])] {
        let mut g = long_mode_guest(kvm, code, "rf");
        // SAFETY: inside the mapping: a GDT at 0x6800 (null, 64-bit code), an IDT at 0x7000
        // with #GP at 0x1200, and the handler (mov rax, [rsp + 24]; out 0x90, eax; hlt).
        unsafe {
            g.mem.add(0x6808).cast::<u64>().write_unaligned(0x0020_9a00_0000_0000);
            let e = g.mem.add(0x7000 + 13 * 16);
            e.cast::<u64>().write_unaligned(0x0000_8e00_0008_1200);
            e.add(8).cast::<u64>().write_unaligned(0);
            std::ptr::copy_nonoverlapping([0x48u8, 0x8b, 0x44, 0x24, 0x18, 0xe7, 0x90, 0xf4].as_ptr(), g.mem.add(0x1200), 8);
        }
        let mut s = g.vcpu.get_sregs().unwrap();
        (s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit) = (0x6800, 15, 0x7000, 0xfff);
        g.vcpu.set_sregs(&s).unwrap();
        let mut r = g.vcpu.get_regs().unwrap();
        r.rsp = 0x9000;
        g.vcpu.set_regs(&r).unwrap();
        let line = match g.vcpu.run() {
            Ok(VcpuExit::IoOut(0x90, data)) => {
                let image = u32::from_le_bytes(data.try_into().unwrap_or([0; 4]));
                format!("pushed_rflags_rf {} if {}", image >> 16 & 1, image >> 9 & 1)
            }
            Ok(other) => format!("other {other:?}"),
            Err(e) => format!("error {}", e.errno()),
        };
        println!("rf_on_gp {name} {line}");
    }
}
