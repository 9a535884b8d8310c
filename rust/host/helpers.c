// SPDX-License-Identifier: GPL-2.0
/*
 * The few kernel facilities rvmx's Rust code needs that are C macros or inline functions
 * without a Rust binding. Each is one line; the Rust side wraps it once (rust/host/mem.rs).
 */
#include <linux/mm.h>
#include <linux/io.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/stat.h>
#include <linux/signal.h>
#include <asm/desc.h>
#include <asm/fpu/api.h>
#include <asm/msr.h>
#include <asm/mce.h>
#include <asm/cpufeature.h>
#include <asm/nospec-branch.h>
#include <linux/cpu.h>
#include <linux/smp.h>
#include <trace/events/ipi.h>
#include <linux/timekeeping.h>
#include <linux/clocksource_ids.h>

phys_addr_t rvmx_page_to_phys(struct page *page);

phys_addr_t rvmx_page_to_phys(struct page *page)
{
	return page_to_phys(page);
}

/*
 * Whether the host has the page at user address uaddr (writable, if write) in this task's
 * page tables, looked up without locks or faults: KVM's hva_to_pfn_fast. The reference taken
 * is dropped at once (put_page is inline).
 */
bool rvmx_host_has_page(unsigned long uaddr, bool write);

bool rvmx_host_has_page(unsigned long uaddr, bool write)
{
	struct page *page;

	if (get_user_pages_fast_only(uaddr, 1, write ? FOLL_WRITE : 0, &page) != 1)
		return false;
	put_page(page);
	return true;
}

void *rvmx_page_address(struct page *page);

void *rvmx_page_address(struct page *page)
{
	return page_address(page);
}

void *rvmx_phys_to_virt(phys_addr_t phys);

void *rvmx_phys_to_virt(phys_addr_t phys)
{
	return phys_to_virt(phys);
}

/*
 * A VM exit sets the host TR limit to 0x67, cutting off the TSS I/O bitmap. Like the kernel's
 * invalidate_tss_limit() (which KVM calls): tell the kernel to restore the limit lazily, or,
 * if this task uses an I/O bitmap, reload TR now. The reload is force_reload_TR() with the
 * GDT switch that load_TR_desc() does through load_direct_gdt(), a KVM-only export, spelled
 * out with GPL exports. Interrupts are off.
 */
void rvmx_invalidate_tss_limit(void);

void rvmx_invalidate_tss_limit(void)
{
	int cpu = smp_processor_id();
	struct desc_struct *gdt = get_cpu_gdt_rw(cpu);
	struct desc_ptr rw_gdt = { .address = (unsigned long)gdt, .size = GDT_SIZE - 1 };
	tss_desc tss;

	if (likely(!test_thread_flag(TIF_IO_BITMAP))) {
		this_cpu_write(__tss_limit_invalid, true);
		return;
	}
	memcpy(&tss, &gdt[GDT_ENTRY_TSS], sizeof(tss));
	tss.type = DESC_TSS; /* LTR needs an available (not busy) TSS */
	write_gdt_entry(gdt, GDT_ENTRY_TSS, &tss, DESC_TSS);
	native_load_gdt(&rw_gdt); /* LTR writes the busy bit: use the writable GDT */
	asm volatile("ltr %w0" : : "q" (GDT_ENTRY_TSS * 8));
	load_fixmap_gdt(cpu);
	this_cpu_write(__tss_limit_invalid, false);
}

/* kernel_fpu_begin() and cond_resched() are inline or macros. */
void rvmx_kernel_fpu_begin(void);

void rvmx_kernel_fpu_begin(void)
{
	kernel_fpu_begin();
}

int rvmx_mutex_lock_killable(struct mutex *lock);

/* A macro under lockdep: KVM takes a vCPU's mutex this way for each of its ioctls. */
int rvmx_mutex_lock_killable(struct mutex *lock)
{
	return mutex_lock_killable(lock);
}

void rvmx_cond_resched(void);

void rvmx_cond_resched(void)
{
	cond_resched();
}

/*
 * Whether a task may keep polling on this CPU: nothing else waits to run here (KVM's
 * kvm_vcpu_can_poll; need_resched is inline).
 */
bool rvmx_may_poll(void);

bool rvmx_may_poll(void)
{
	return single_task_running() && !need_resched();
}

void rvmx_kick_cpu(int cpu);

/* KVM's kvm_vcpu_kick: a reschedule IPI makes a vCPU in the guest on @cpu exit at once. */
void rvmx_kick_cpu(int cpu)
{
	int me = get_cpu();

	if (cpu != me && cpu_online(cpu))
		smp_send_reschedule(cpu);
	put_cpu();
}

void rvmx_sigset_activate(sigset_t *set);
void rvmx_sigset_deactivate(void);

/* KVM_SET_SIGNAL_MASK's mask replaces the thread's for the length of KVM_RUN, as in KVM. */
void rvmx_sigset_activate(sigset_t *set)
{
	sigprocmask(SIG_SETMASK, set, &current->real_blocked);
}

void rvmx_sigset_deactivate(void)
{
	sigprocmask(SIG_SETMASK, &current->real_blocked, NULL);
	sigemptyset(&current->real_blocked);
}

int rvmx_rdmsr_safe(u32 msr, u64 *value);
void rvmx_wrmsr(u32 msr, u64 value);

/* The MSR accessors are inline; the _safe one catches the #GP of an absent MSR. */
int rvmx_rdmsr_safe(u32 msr, u64 *value)
{
	return rdmsrq_safe(msr, value);
}

void rvmx_wrmsr(u32 msr, u64 value)
{
	wrmsrq(msr, value);
}

void rvmx_machine_check(void);
bool rvmx_host_uses_fred(void);

/* A #MC that hit the guest goes to the host's handler, as KVM's kvm_machine_check(). */
void rvmx_machine_check(void)
{
#ifdef CONFIG_X86_MCE
	struct pt_regs regs = {
		.cs = 3, /* as KVM: a fake user-mode context, whatever the guest ran */
		.flags = X86_EFLAGS_IF,
	};

	do_machine_check(&regs);
#endif
}

bool rvmx_host_uses_fred(void)
{
	return cpu_feature_enabled(X86_FEATURE_FRED);
}

/*
 * The host's speculative-execution mitigation state, as rust/logic/mitigation_rules.rs reads it:
 * one bit per HostState field, in its order.
 */
u32 rvmx_host_mitigations(void);
u64 rvmx_host_spec_ctrl(void);
void rvmx_ibpb_exit_to_user(void);

u32 rvmx_host_mitigations(void)
{
	u64 arch_cap = 0;
	u32 v = 0;

	if (cpu_mitigations_off())
		v |= 1 << 0;
	if (boot_cpu_has(X86_FEATURE_CLEAR_CPU_BUF_VM))
		v |= 1 << 1;
	if (boot_cpu_has(X86_FEATURE_RSB_VMEXIT))
		v |= 1 << 2;
	if (boot_cpu_has(X86_FEATURE_RSB_VMEXIT_LITE))
		v |= 1 << 3;
	if (boot_cpu_has(X86_FEATURE_KERNEL_IBRS) && boot_cpu_has(X86_FEATURE_MSR_SPEC_CTRL))
		v |= 1 << 4;
	if (boot_cpu_has(X86_FEATURE_CLEAR_BHB_VMEXIT))
		v |= 1 << 5;
	if (boot_cpu_has(X86_FEATURE_ARCH_CAPABILITIES))
		rdmsrq_safe(MSR_IA32_ARCH_CAPABILITIES, &arch_cap);
	if (boot_cpu_has_bug(X86_BUG_L1TF) && !(arch_cap & ARCH_CAP_SKIP_VMENTRY_L1DFLUSH))
		v |= 1 << 6;
	if (boot_cpu_has(X86_FEATURE_FLUSH_L1D))
		v |= 1 << 7;
	if (boot_cpu_has(X86_FEATURE_IBPB))
		v |= 1 << 8;
	if (boot_cpu_has(X86_FEATURE_IBPB_EXIT_TO_USER))
		v |= 1 << 9;
	/* What the guest's ARCH_CAPABILITIES and CPUID say (KVM's kvm_get_arch_capabilities). */
	if (boot_cpu_has_bug(X86_BUG_CPU_MELTDOWN))
		v |= 1 << 10;
	if (boot_cpu_has_bug(X86_BUG_SPEC_STORE_BYPASS))
		v |= 1 << 11;
	if (boot_cpu_has_bug(X86_BUG_MDS))
		v |= 1 << 12;
	if (boot_cpu_has_bug(X86_BUG_RFDS))
		v |= 1 << 13;
	if (boot_cpu_has_bug(X86_BUG_ITS))
		v |= 1 << 14;
	if (boot_cpu_has_bug(X86_BUG_TAA))
		v |= 1 << 15;
	if (boot_cpu_has_bug(X86_BUG_GDS))
		v |= 1 << 16;
	if (boot_cpu_has(X86_FEATURE_RTM))
		v |= 1 << 17;
	if (boot_cpu_has(X86_FEATURE_MD_CLEAR))
		v |= 1 << 18;
	if (boot_cpu_has_bug(X86_BUG_L1TF))
		v |= 1 << 19;
	/* IA32_SPEC_CTRL and its controls, for guests (KVM's kvm_set_cpu_caps). */
	if (boot_cpu_has(X86_FEATURE_MSR_SPEC_CTRL))
		v |= 1 << 20;
	if (boot_cpu_has(X86_FEATURE_SPEC_CTRL))
		v |= 1 << 21;
	if (boot_cpu_has(X86_FEATURE_IBRS))
		v |= 1 << 22;
	if (boot_cpu_has(X86_FEATURE_STIBP))
		v |= 1 << 23;
	if (boot_cpu_has(X86_FEATURE_SPEC_CTRL_SSBD))
		v |= 1 << 24;
	if (boot_cpu_has_bug(X86_BUG_EIBRS_PBRSB))
		v |= 1 << 25;
	return v;
}

/* The host's IA32_ARCH_CAPABILITIES, 0 if the CPU has none. */
u64 rvmx_host_arch_capabilities(void);

u64 rvmx_host_arch_capabilities(void)
{
	u64 v = 0;

	if (boot_cpu_has(X86_FEATURE_ARCH_CAPABILITIES))
		rdmsrq_safe(MSR_IA32_ARCH_CAPABILITIES, &v);
	return v;
}

/* This CPU's SPEC_CTRL value (interrupts off: it changes only on context switch). */
u64 rvmx_host_spec_ctrl(void)
{
	return this_cpu_read(x86_spec_ctrl_current);
}

/*
 * Whether this CPU takes v in IA32_SPEC_CTRL: written, then the old value put back, with
 * interrupts off (KVM's kvm_spec_ctrl_test_value, exported to KVM only).
 */
bool rvmx_spec_ctrl_accepts(u64 v);

bool rvmx_spec_ctrl_accepts(u64 v)
{
	unsigned long flags;
	bool ok = false;
	u64 saved;

	local_irq_save(flags);
	if (!rdmsrq_safe(MSR_IA32_SPEC_CTRL, &saved) && !wrmsrq_safe(MSR_IA32_SPEC_CTRL, v)) {
		wrmsrq(MSR_IA32_SPEC_CTRL, saved);
		ok = true;
	}
	local_irq_restore(flags);
	return ok;
}

/* VMSCAPE: the kernel's exit to user space issues an IBPB after a guest ran (as KVM). */
void rvmx_ibpb_exit_to_user(void)
{
	this_cpu_write(x86_ibpb_exit_to_user, true);
}

/*
 * For kvmclock: the host TSC, KVM's base clock (CLOCK_MONOTONIC_RAW plus the time spent in
 * suspend: boot time at the raw clock's rate, KVM's get_kvmclock_base_ns) and CLOCK_REALTIME,
 * all read at one instant. True if the timekeeper's clocksource is a constant-rate TSC, so
 * that later TSC values extrapolate the clock (KVM's "master clock" condition); otherwise
 * *tsc is read right after the clocks.
 */
bool rvmx_clock_snapshot(u64 *tsc, u64 *base_ns, u64 *real_ns);

bool rvmx_clock_snapshot(u64 *tsc, u64 *base_ns, u64 *real_ns)
{
	struct system_time_snapshot snap;
	ktime_t offs_boot = ktime_mono_to_any(0, TK_OFFS_BOOT);
	bool tsc_based;

	ktime_get_snapshot_id(CLOCK_REALTIME, &snap);
	if (!snap.valid) {
		*base_ns = ktime_to_ns(ktime_add(ktime_get_raw(), offs_boot));
		*real_ns = ktime_get_real_ns();
		*tsc = rdtsc();
		return false;
	}
	*base_ns = ktime_to_ns(ktime_add(snap.monoraw, offs_boot));
	*real_ns = ktime_to_ns(snap.systime);
	tsc_based = snap.cs_id == CSID_X86_TSC && boot_cpu_has(X86_FEATURE_CONSTANT_TSC);
	*tsc = tsc_based ? snap.cycles : rdtsc();
	return tsc_based;
}

/*
 * For steal time: the current thread's time spent waiting for a CPU (the scheduler's
 * run_delay, in ns), false without CONFIG_SCHED_INFO (KVM offers steal time only with it).
 */
bool rvmx_run_delay(u64 *ns);

bool rvmx_run_delay(u64 *ns)
{
#ifdef CONFIG_SCHED_INFO
	*ns = current->sched_info.run_delay;
	return true;
#else
	*ns = 0;
	return false;
#endif
}
