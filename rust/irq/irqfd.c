// SPDX-License-Identifier: GPL-2.0
/*
 * KVM_IRQFD's eventfd side (KVM's virt/kvm/eventfd.c; resampling is Rust's): a wait-queue entry
 * on the eventfd whose wakeup consumes the count and injects the GSI through the callback into
 * Rust (rust/irq/irqfd.rs). Rust-for-Linux has no binding for waiting on another file's wait
 * queue. The target pointer is opaque here.
 */
#include <linux/eventfd.h>
#include <linux/file.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/wait.h>
#include <linux/err.h>

void rvmx_irqfd_inject(const void *target, u32 gsi, bool resample);

struct rvmx_irqfd {
	wait_queue_entry_t wait;
	poll_table pt;
	struct eventfd_ctx *eventfd;
	struct file *file;	/* held from new to arm */
	bool armed;
	bool hung_up;		/* the eventfd was released: the entry is unlinked */
	bool resample;		/* KVM_IRQFD_FLAG_RESAMPLE */
	const void *target;
	u32 gsi;
};

/* Called with the eventfd's wait-queue lock held, interrupts off. */
static int irqfd_wakeup(wait_queue_entry_t *wait, unsigned int mode, int sync, void *key)
{
	struct rvmx_irqfd *f = container_of(wait, struct rvmx_irqfd, wait);
	__poll_t flags = key_to_poll(key);
	u64 cnt;

	if (flags & EPOLLIN) {
		eventfd_ctx_do_read(f->eventfd, &cnt);
		rvmx_irqfd_inject(f->target, f->gsi, f->resample);
	}
	/*
	 * The eventfd is being released: stop listening (the entry may be unlinked here); the
	 * Rust side frees the entry at its next KVM_IRQFD or at VM teardown.
	 */
	if (flags & EPOLLHUP) {
		list_del_init(&wait->entry);
		WRITE_ONCE(f->hung_up, true);
	}
	return 0;
}

static void irqfd_queue_proc(struct file *file, wait_queue_head_t *wqh, poll_table *pt)
{
	struct rvmx_irqfd *f = container_of(pt, struct rvmx_irqfd, pt);

	add_wait_queue(wqh, &f->wait);
}

struct rvmx_irqfd *rvmx_irqfd_new(int fd, u32 gsi, bool resample, const void *target);
struct eventfd_ctx *rvmx_irqfd_eventfd(struct rvmx_irqfd *f);
bool rvmx_irqfd_hung_up(struct rvmx_irqfd *f);
void rvmx_irqfd_arm(struct rvmx_irqfd *f);
void rvmx_irqfd_free(struct rvmx_irqfd *f);

/* An irqfd for eventfd `fd`, not yet listening: EBADF, EINVAL (not an eventfd), ENOMEM. */
struct rvmx_irqfd *rvmx_irqfd_new(int fd, u32 gsi, bool resample, const void *target)
{
	struct rvmx_irqfd *f;
	struct file *file = fget(fd);
	struct eventfd_ctx *eventfd;

	if (!file)
		return ERR_PTR(-EBADF);
	eventfd = eventfd_ctx_fileget(file);
	if (IS_ERR(eventfd)) {
		fput(file);
		return ERR_CAST(eventfd);
	}
	f = kzalloc(sizeof(*f), GFP_KERNEL_ACCOUNT);
	if (!f) {
		eventfd_ctx_put(eventfd);
		fput(file);
		return ERR_PTR(-ENOMEM);
	}
	f->eventfd = eventfd;
	f->file = file;
	f->target = target;
	f->gsi = gsi;
	f->resample = resample;
	init_waitqueue_func_entry(&f->wait, irqfd_wakeup);
	init_poll_funcptr(&f->pt, irqfd_queue_proc);
	return f;
}

struct eventfd_ctx *rvmx_irqfd_eventfd(struct rvmx_irqfd *f)
{
	return f->eventfd;
}

bool rvmx_irqfd_hung_up(struct rvmx_irqfd *f)
{
	return READ_ONCE(f->hung_up);
}

/* Starts listening; a count already there is injected now (as KVM does). */
void rvmx_irqfd_arm(struct rvmx_irqfd *f)
{
	__poll_t events = vfs_poll(f->file, &f->pt);

	f->armed = true;
	fput(f->file);
	f->file = NULL;
	if (events & EPOLLIN)
		rvmx_irqfd_inject(f->target, f->gsi, f->resample);
}

/* Stops listening (after this no wakeup runs for it) and frees it. Sleeps. */
void rvmx_irqfd_free(struct rvmx_irqfd *f)
{
	u64 cnt;

	if (f->armed)
		eventfd_ctx_remove_wait_queue(f->eventfd, &f->wait, &cnt);
	if (f->file)
		fput(f->file);
	eventfd_ctx_put(f->eventfd);
	kfree(f);
}
