//! kvmclock as a client and a guest see it: `KVM_GET_CLOCK`/`KVM_SET_CLOCK` on the VM fd (what
//! QEMU's kvmclock device does at start and migration), the KVM CPUID leaves, and a 64-bit
//! guest that registers its time page (`MSR_KVM_SYSTEM_TIME_NEW`) and wall-clock page
//! (`MSR_KVM_WALL_CLOCK_NEW`) and reads the time from them, as Linux's kvm-clock does.
//! Prints `key value` lines; lines starting with `info` depend on the host and the moment.
//! tests/vm/suite.sh runs it on `/dev/rvmx` and `/dev/kvm` in the same boot and requires the
//! other lines to be identical.
//!
//! Usage: kvm-clock-check DEVICE

use std::{ffi::CString, os::fd::AsRawFd, process::ExitCode, time::{SystemTime, UNIX_EPOCH}};

use kvm_bindings::{kvm_clock_data, kvm_msr_entry, Msrs, KVM_CLOCK_REALTIME};
use kvm_ioctls::{Kvm, VcpuExit};
use rvmx_test_programs::long_mode_guest;

const SEC: u64 = 1_000_000_000;
/// The guest's time page and wall-clock page.
const TIME_PAGE: usize = 0x6000;
const WALL_PAGE: usize = 0x7000;
/// Where the guest stores its RDTSC values.
const TSC_AT: usize = 0x8000;

/// A `pvclock_vcpu_time_info` as the guest reads it.
#[derive(Clone, Copy, Debug)]
struct TimeInfo {
    version: u32,
    tsc_timestamp: u64,
    system_time: u64,
    mul: u32,
    shift: i8,
    flags: u8,
}

impl TimeInfo {
    fn at(mem: *mut u8) -> Self {
        // SAFETY: the page is inside the guest's 64 KiB mapping.
        let r = |off: usize| unsafe { mem.add(TIME_PAGE + off) };
        // SAFETY: as above; unaligned reads of plain integers.
        unsafe {
            TimeInfo {
                version: r(0).cast::<u32>().read_volatile(),
                tsc_timestamp: r(8).cast::<u64>().read_unaligned(),
                system_time: r(16).cast::<u64>().read_unaligned(),
                mul: r(24).cast::<u32>().read_unaligned(),
                shift: r(28).cast::<i8>().read(),
                flags: r(29).read(),
            }
        }
    }

    /// Linux's `__pvclock_read_cycles`.
    fn read(&self, tsc: u64) -> u64 {
        let delta = tsc.wrapping_sub(self.tsc_timestamp);
        let d = if self.shift < 0 { delta >> -self.shift } else { delta << self.shift };
        self.system_time.wrapping_add(((d as u128 * self.mul as u128) >> 32) as u64)
    }
}

fn realtime_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// The 64-bit guest: wall clock at 0x7000, time page at 0x6000 (enabled), then RDTSC into
/// 0x8000 before each OUT to port 0x10 (three times), then HLT.
fn guest_code() -> Vec<u8> {
    let mut c = vec![
        0xb9, 0x00, 0x4d, 0x56, 0x4b, // mov ecx, 0x4b564d00 (MSR_KVM_WALL_CLOCK_NEW)
        0xb8, 0x00, 0x70, 0x00, 0x00, // mov eax, 0x7000
        0x31, 0xd2, // xor edx, edx
        0x0f, 0x30, // wrmsr
        0xb9, 0x01, 0x4d, 0x56, 0x4b, // mov ecx, 0x4b564d01 (MSR_KVM_SYSTEM_TIME_NEW)
        0xb8, 0x01, 0x60, 0x00, 0x00, // mov eax, 0x6001
        0x0f, 0x30, // wrmsr
    ];
    for _ in 0..3 {
        c.extend_from_slice(&[
            0x0f, 0x31, // rdtsc
            0x89, 0x04, 0x25, 0x00, 0x80, 0x00, 0x00, // mov [0x8000], eax
            0x89, 0x14, 0x25, 0x04, 0x80, 0x00, 0x00, // mov [0x8004], edx
            0xe6, 0x10, // out 0x10, al
        ]);
    }
    c.push(0xf4);
    c
}

fn main() -> ExitCode {
    let Some(dev) = std::env::args().nth(1) else {
        eprintln!("usage: kvm-clock-check DEVICE");
        return ExitCode::from(2);
    };
    let kvm = Kvm::new_with_path(&CString::new(dev).unwrap()).expect("open device");
    println!("cap_adjust_clock {}", kvm.check_extension_raw(39));

    // The VM's clock starts near 0 at creation and runs with real time.
    let vm = kvm.create_vm().unwrap();
    let c0 = vm.get_clock().unwrap();
    println!("info clock_at_creation {} flags {:#x}", c0.clock, c0.flags);
    println!("clock_starts_below_1s {}", c0.clock < SEC);
    // The host's clocksource decides whether kvmclock is computed from a stable TSC.
    let source = std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource").unwrap_or_default();
    let stable = source.trim() == "tsc";
    println!("info host_clocksource {}", source.trim());
    println!("flags_before_a_vcpu_ran {:#x}", c0.flags);
    // KVM_SET_CLOCK: flags it does not know are refused; the result of GET may be passed back.
    let set = |clock: u64, flags: u32, realtime: u64| {
        vm.set_clock(&kvm_clock_data { clock, flags, realtime, ..Default::default() }).map_err(|e| e.errno())
    };
    println!("set_clock_flag1 {:?}", set(5, 1, 0));
    println!("set_clock_flag16 {:?}", set(5, 16, 0));
    println!("set_clock_get_result {:?}", vm.set_clock(&vm.get_clock().unwrap()).map_err(|e| e.errno()));
    println!("set_clock_1e15 {:?}", set(1_000_000 * SEC, 0, 0));
    let c1 = vm.get_clock().unwrap();
    println!("clock_after_set {}", (1_000_000 * 1_000_000_000..1_000_000 * 1_000_000_000 + 2 * SEC).contains(&c1.clock));
    // KVM_CLOCK_REALTIME: the clock moves on by the real time elapsed since `realtime`.
    let now = realtime_ns();
    println!("set_clock_realtime {:?}", set(SEC, KVM_CLOCK_REALTIME, now - 3 * SEC));
    let c2 = vm.get_clock().unwrap();
    println!("clock_after_set_realtime {}", (4 * SEC..6 * SEC).contains(&c2.clock));
    println!("set_clock_realtime_future {:?}", set(SEC, KVM_CLOCK_REALTIME, now + 100 * SEC));
    println!("clock_never_back {}", (SEC..3 * SEC).contains(&vm.get_clock().unwrap().clock));
    // Bad pointers.
    let vmfd = vm.as_raw_fd();
    // SAFETY: a bad address the kernel must refuse with EFAULT.
    let bad = |cmd: u64| unsafe { libc::ioctl(vmfd, cmd as _, 8usize) } < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT);
    println!("get_clock_efault {} set_clock_efault {}", bad(0x8030_ae7c), bad(0x4030_ae7b));
    // The VM's TSC rate (what new vCPUs get) is the vCPUs'.
    // SAFETY: KVM_GET_TSC_KHZ takes no argument.
    let vm_khz = unsafe { libc::ioctl(vmfd, 0xaea3 as _, 0usize) };
    drop(vm);

    // The guest's side: the KVM leaves, its pages, the time it reads from them.
    let supported = kvm.get_supported_cpuid(256).unwrap();
    let leaf = |l: u32| supported.as_slice().iter().find(|e| e.function == l).map(|e| [e.eax, e.ebx, e.ecx, e.edx]);
    println!("supported_kvm_signature {:x?}", leaf(0x4000_0000).map(|r| r[1..].to_vec()));
    let features = leaf(0x4000_0001).map_or(0, |r| r[0]);
    println!("supported_kvmclock clocksource {} clocksource2 {} stable_bit {} nop_io_delay {}",
             features & 1 != 0, features & 8 != 0, features & 1 << 24 != 0, features & 2 != 0);
    println!("info supported_kvm_features {features:#x}");

    let mut g = long_mode_guest(&kvm, &guest_code(), "kvmclock");
    println!("vm_tsc_khz_is_vcpus {}", vm_khz > 0 && vm_khz == g.vcpu.get_tsc_khz().map_or(0, |k| k as i32));
    let mem = g.mem;
    // SAFETY: inside the mapping.
    let guest_tsc = || unsafe { mem.add(TSC_AT).cast::<u64>().read_volatile() };
    // SAFETY: the wall-clock page is inside the mapping.
    let wall = || unsafe { [0, 4, 8].map(|o| mem.add(WALL_PAGE + o).cast::<u32>().read_unaligned()) };
    let out = |g: &mut rvmx_test_programs::Guest| match g.vcpu.run() {
        Ok(VcpuExit::IoOut(port, _)) => format!("out {port:#x}"),
        Ok(VcpuExit::Hlt) => "hlt".into(),
        Ok(other) => format!("other {other:?}"),
        Err(e) => format!("error {}", e.errno()),
    };

    // First stop: both pages written, the time it reads close to KVM_GET_CLOCK's.
    let e = out(&mut g);
    let t = TimeInfo::at(mem);
    let clock = g.vm.get_clock().unwrap().clock;
    let read = t.read(guest_tsc());
    println!("exit1 {e} version_even {} mul_set {} stable_flag_if_tsc_stable {}", t.version % 2 == 0 && t.version > 0, t.mul != 0,
             (t.flags & 1 != 0) == stable);
    println!("info page1 {t:?} read {read} get_clock {clock}");
    println!("guest_time_matches_get_clock {}", read <= clock && clock - read < 2 * SEC);
    let [wv, sec, nsec] = wall();
    let boot_epoch = sec as u64 * SEC + nsec as u64;
    println!("wall_clock version_even {} nsec_below_1e9 {} epoch_plus_clock_is_now {}", wv % 2 == 0 && wv > 0, nsec < 1_000_000_000,
             (boot_epoch + read).abs_diff(realtime_ns()) < 3 * SEC);
    let mut msrs = Msrs::from_entries(&[
        kvm_msr_entry { index: 0x4b56_4d00, ..Default::default() },
        kvm_msr_entry { index: 0x4b56_4d01, ..Default::default() },
    ]).unwrap();
    let n = g.vcpu.get_msrs(&mut msrs).map_err(|e| e.errno());
    println!("msrs {n:?} {:#x?}", msrs.as_slice().iter().map(|e| e.data).collect::<Vec<_>>());
    let listed = kvm.get_msr_index_list().map(|l| [0x11, 0x12, 0x4b56_4d00, 0x4b56_4d01].map(|m| l.as_slice().contains(&m)));
    println!("msr_index_list_has_kvmclock {listed:?}");

    // KVM_SET_CLOCK while the guest runs: its page is rewritten before it runs again.
    g.vm.set_clock(&kvm_clock_data { clock: 1_000_000 * SEC, ..Default::default() }).unwrap();
    let e = out(&mut g);
    let t2 = TimeInfo::at(mem);
    let read2 = t2.read(guest_tsc());
    println!("exit2 {e} version_moved {} time_follows_set_clock {}", t2.version > t.version && t2.version % 2 == 0,
             (1_000_000 * SEC..1_000_000 * SEC + 2 * SEC).contains(&read2));
    // The wall-clock page is written only when its MSR is.
    println!("wall_clock_unchanged {}", wall() == [wv, sec, nsec]);

    // Userspace restores the time MSR with the page disabled: the guest's page stays as is.
    let off = Msrs::from_entries(&[kvm_msr_entry { index: 0x4b56_4d01, data: 0x6000, ..Default::default() }]).unwrap();
    println!("disable {:?}", g.vcpu.set_msrs(&off).map_err(|e| e.errno()));
    g.vm.set_clock(&kvm_clock_data { clock: 0, ..Default::default() }).unwrap();
    let e = out(&mut g);
    let t3 = TimeInfo::at(mem);
    println!("exit3 {e} page_untouched {}", t3.version == t2.version && t3.system_time == t2.system_time);
    println!("end {}", out(&mut g));
    // Once a vCPU ran, on a TSC host, KVM_GET_CLOCK gives the real time and TSC it read with.
    let c = g.vm.get_clock().unwrap();
    let flags_ok = c.flags == if stable { 0xe } else { 0 };
    println!("flags_after_run_as_host_clocksource {flags_ok}");
    if c.flags & KVM_CLOCK_REALTIME != 0 {
        println!("realtime_is_now {}", c.realtime.abs_diff(realtime_ns()) < 2 * SEC);
    }
    println!("info flags_after_run {:#x}", c.flags);
    // The host leaves the TSC clocksource while the VM lives: the clock stops claiming a
    // stable TSC (KVM leaves its master clock), and still runs on.
    let cs = "/sys/devices/system/clocksource/clocksource0/current_clocksource";
    if stable && std::fs::write(cs, "hpet").is_ok() {
        std::thread::sleep(std::time::Duration::from_millis(1200));
        let c2 = g.vm.get_clock().unwrap();
        println!("host_left_tsc flags {:#x} clock_runs {}", c2.flags, c2.clock > c.clock);
        let _ = std::fs::write(cs, "tsc");
    }
    ExitCode::SUCCESS
}
