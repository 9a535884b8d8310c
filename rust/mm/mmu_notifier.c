// SPDX-License-Identifier: GPL-2.0
/*
 * A VM's MMU notifier: Rust-for-Linux has no binding for mmu_notifier, so this file registers
 * one per VM and forwards its callbacks to the VM's guest memory (rust/mm/mmu_notifier.rs).
 * The pointer is opaque here.
 */
#include <linux/mmu_notifier.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/err.h>

int rvmx_vm_invalidate_start(const void *vm, unsigned long start, unsigned long end, bool blockable);
void rvmx_vm_invalidate_end(const void *vm, unsigned long start, unsigned long end);
void rvmx_vm_release(const void *vm);
bool rvmx_vm_clear_young(const void *vm, unsigned long start, unsigned long end);
bool rvmx_vm_test_young(const void *vm, unsigned long start, unsigned long end);

struct rvmx_mmu_notifier {
	struct mmu_notifier mn;
	const void *vm;
};

static const void *vm_of(struct mmu_notifier *mn)
{
	return container_of(mn, struct rvmx_mmu_notifier, mn)->vm;
}

static int invalidate_range_start(struct mmu_notifier *mn, const struct mmu_notifier_range *range)
{
	/* Reschedules between chunks of a huge range only where the caller may block. */
	return rvmx_vm_invalidate_start(vm_of(mn), range->start, range->end,
					mmu_notifier_range_blockable(range));
}

static void invalidate_range_end(struct mmu_notifier *mn, const struct mmu_notifier_range *range)
{
	rvmx_vm_invalidate_end(vm_of(mn), range->start, range->end);
}

/* Page aging (reclaim, idle page tracking): both clears flush, see rvmx_vm_clear_young. */
static bool clear_young(struct mmu_notifier *mn, struct mm_struct *mm, unsigned long start,
			unsigned long end)
{
	return rvmx_vm_clear_young(vm_of(mn), start, end);
}

static bool test_young(struct mmu_notifier *mn, struct mm_struct *mm, unsigned long address)
{
	return rvmx_vm_test_young(vm_of(mn), address, address + 1);
}

static void release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	rvmx_vm_release(vm_of(mn));
}

static const struct mmu_notifier_ops rvmx_mmu_notifier_ops = {
	.invalidate_range_start = invalidate_range_start,
	.invalidate_range_end = invalidate_range_end,
	.clear_flush_young = clear_young,
	.clear_young = clear_young,
	.test_young = test_young,
	.release = release,
};

struct rvmx_mmu_notifier *rvmx_mmu_notifier_register(const void *vm);
void rvmx_mmu_notifier_unregister(struct rvmx_mmu_notifier *n);

/* Registers a notifier on the current process's mm (which it mmgrab()s) for `vm`. */
struct rvmx_mmu_notifier *rvmx_mmu_notifier_register(const void *vm)
{
	struct rvmx_mmu_notifier *n = kzalloc(sizeof(*n), GFP_KERNEL_ACCOUNT);
	int err;

	if (!n)
		return ERR_PTR(-ENOMEM);
	n->mn.ops = &rvmx_mmu_notifier_ops;
	n->vm = vm;
	err = mmu_notifier_register(&n->mn, current->mm);
	if (err) {
		kfree(n);
		return ERR_PTR(err);
	}
	return n;
}

/*
 * Unregisters (calling release first if the mm is still alive), waits for callbacks still
 * running, drops the mm reference and frees the notifier. Sleeps.
 */
void rvmx_mmu_notifier_unregister(struct rvmx_mmu_notifier *n)
{
	mmu_notifier_unregister(&n->mn, n->mn.mm);
	kfree(n);
}
