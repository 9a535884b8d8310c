// SPDX-License-Identifier: GPL-2.0
/*
 * The few kernel facilities rvmx's Rust code needs that are C macros or inline functions
 * without a Rust binding. Each is one line; the Rust side wraps it once (rust/mem.rs).
 */
#include <linux/mm.h>
#include <linux/io.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/signal.h>
#include <asm/desc.h>
#include <asm/fpu/api.h>
#include <asm/msr.h>
#include <asm/mce.h>
#include <asm/cpufeature.h>

phys_addr_t rvmx_page_to_phys(struct page *page);

phys_addr_t rvmx_page_to_phys(struct page *page)
{
	return page_to_phys(page);
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

void rvmx_cond_resched(void);

void rvmx_cond_resched(void)
{
	cond_resched();
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
