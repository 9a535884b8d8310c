// SPDX-License-Identifier: GPL-2.0

//! The module's C side, declared once. `host/helpers.c` exports kernel macros and inline
//! functions that have no Rust binding, one line each; `mm/mmu_notifier.c` registers the MMU
//! notifier (its ops table is C); `anon_inode_getfile_fmode` is exported by the kernel but
//! missing from the generated bindings. Each function is called only by the Rust file named
//! beside it, which wraps it in a safe function with the reason it is sound.

use core::ffi::c_void;
use kernel::ffi;

extern "C" {
    // host/mem.rs
    /// `page_to_phys()`. The page is passed as `void *`: bindgen's `struct page` is not
    /// FFI-safe in Rust's eyes.
    pub(crate) fn rvmx_page_to_phys(page: *mut c_void) -> u64;
    /// Nothing else waits for this CPU (`single_task_running() && !need_resched()`).
    pub(crate) fn rvmx_may_poll() -> bool;
    /// Whether the host has the user page at `uaddr` (writable if `write`), without locks or faults.
    pub(crate) fn rvmx_host_has_page(uaddr: usize, write: bool) -> bool;
    /// `page_address()`: the direct-map address of a page (`void *` as for `rvmx_page_to_phys`).
    pub(crate) fn rvmx_page_address(page: *mut c_void) -> *mut c_void;
    /// `phys_to_virt()`: the direct-map address of a physical address.
    pub(crate) fn rvmx_phys_to_virt(phys: u64) -> *mut c_void;

    // host/lock.rs
    /// `mutex_lock_killable()`: 0, or `-EINTR` if a fatal signal came first.
    pub(crate) fn rvmx_mutex_lock_killable(lock: *mut kernel::bindings::mutex) -> i32;

    // host/sched.rs
    /// `cond_resched()`.
    pub(crate) fn rvmx_cond_resched();
    /// A reschedule IPI to `cpu` unless it is this one (or offline).
    pub(crate) fn rvmx_kick_cpu(cpu: i32);

    // host/x86.rs
    /// `rdmsrq_safe()`.
    pub(crate) fn rvmx_rdmsr_safe(msr: u32, value: *mut u64) -> i32;
    /// `wrmsrq()`.
    pub(crate) fn rvmx_wrmsr(msr: u32, value: u64);
    /// `do_machine_check()` with a `pt_regs` of the helper's own.
    pub(crate) fn rvmx_machine_check();
    /// `cpu_feature_enabled(X86_FEATURE_FRED)`.
    pub(crate) fn rvmx_host_uses_fred() -> bool;

    // cpu/fpu.rs
    /// `kernel_fpu_begin()` (the end is in the bindings).
    pub(crate) fn rvmx_kernel_fpu_begin();

    // cpu/mitigations.rs
    /// Whether the processor takes `v` in IA32_SPEC_CTRL.
    pub(crate) fn rvmx_spec_ctrl_accepts(v: u64) -> bool;
    /// The host kernel's mitigation state, as `logic/mitigation_rules.rs` reads it.
    pub(crate) fn rvmx_host_mitigations() -> u32;
    /// The host's IA32_ARCH_CAPABILITIES.
    pub(crate) fn rvmx_host_arch_capabilities() -> u64;
    /// The host's IA32_SPEC_CTRL value (`x86_spec_ctrl_current`).
    pub(crate) fn rvmx_host_spec_ctrl() -> u64;
    /// Requests an IBPB on the next exit to user space (VMSCAPE's mitigation).
    pub(crate) fn rvmx_ibpb_exit_to_user();

    // host/clock.rs
    /// The host TSC, KVM's base clock and the real time read together; whether the
    /// clocksource is the TSC.
    pub(crate) fn rvmx_clock_snapshot(tsc: *mut u64, base_ns: *mut u64, real_ns: *mut u64) -> bool;

    /// The current thread's run delay; false without `CONFIG_SCHED_INFO`.
    pub(crate) fn rvmx_run_delay(ns: *mut u64) -> bool;

    // vmx/host_state.rs
    /// `invalidate_tss_limit()`.
    pub(crate) fn rvmx_invalidate_tss_limit();

    // kvm/vcpu.rs
    /// `sigprocmask`-like activation of `KVM_SET_SIGNAL_MASK`'s mask for `KVM_RUN`.
    pub(crate) fn rvmx_sigset_activate(set: *mut u64);
    /// Puts the thread's own signal mask back.
    pub(crate) fn rvmx_sigset_deactivate();

    // kvm/fd.rs
    /// `fs/anon_inodes.c` (EXPORT_SYMBOL_GPL): a file (a `struct file *`, or an error pointer),
    /// returned as `void *`; the file operations are passed as `void *` too: bindgen's struct
    /// trips the FFI-safety lint.
    pub(crate) fn anon_inode_getfile_fmode(
        name: *const ffi::c_char,
        fops: *const ffi::c_void,
        private: *mut ffi::c_void,
        flags: ffi::c_int,
        fmode: ffi::c_uint,
    ) -> *mut ffi::c_void;

    // mm/mmu_notifier.rs (mm/mmu_notifier.c)
    /// Registers a notifier on the current `mm` whose callbacks get `memory`.
    pub(crate) fn rvmx_mmu_notifier_register(memory: *const c_void) -> *mut c_void;
    /// Unregisters it and waits for running callbacks.
    pub(crate) fn rvmx_mmu_notifier_unregister(notifier: *mut c_void);

    // irq/irqfd.rs (irq/irqfd.c)
    /// A `KVM_IRQFD` entry for eventfd `fd`, not yet listening; an `ERR_PTR` on failure.
    pub(crate) fn rvmx_irqfd_new(fd: i32, gsi: u32, resample: bool, target: *const c_void) -> *mut c_void;
    /// Its eventfd context (identity only).
    pub(crate) fn rvmx_irqfd_eventfd(irqfd: *mut c_void) -> *const c_void;
    /// Its eventfd was released (the entry no longer listens).
    pub(crate) fn rvmx_irqfd_hung_up(irqfd: *mut c_void) -> bool;
    /// Starts listening (injects a count already there).
    pub(crate) fn rvmx_irqfd_arm(irqfd: *mut c_void);
    /// Stops listening and frees it.
    pub(crate) fn rvmx_irqfd_free(irqfd: *mut c_void);
}
