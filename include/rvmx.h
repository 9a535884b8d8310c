/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * rvmx userspace API.
 *
 * rvmx's ABI *is* KVM's: this header mirrors the parts of <linux/kvm.h> that rvmx implements,
 * with the same names, numbers and structures, so a program can include either. If
 * <linux/kvm.h> was included first, its definitions are used and the mirror below is skipped.
 * The only rvmx-specific definition is the device path.
 *
 * Implemented so far: the system fd (KVM_GET_API_VERSION, KVM_CHECK_EXTENSION,
 * KVM_GET_VCPU_MMAP_SIZE, KVM_CREATE_VM), the VM fd (memory slots, vCPUs, TSS and identity-map
 * addresses) and the vCPU fd (mmap of struct kvm_run, REGS, SREGS, KVM_RUN, interrupts and
 * events, MP state, guest debugging, debug registers, XSAVE image and XCRs, TRANSLATE, TSC
 * kHz). A request rvmx does not implement fails as KVM fails an unknown one on that fd (EINVAL, or ENOTTY on a VM fd).
 */
#ifndef _RVMX_H
#define _RVMX_H

/* Open this instead of /dev/kvm. */
#define RVMX_DEVICE "/dev/rvmx"

#ifndef __LINUX_KVM_H
#include <linux/ioctl.h>
#include <linux/types.h>

#define KVM_API_VERSION 12
#define KVMIO 0xAE

/* System ioctls: on the fd of /dev/rvmx. */
#define KVM_GET_API_VERSION       _IO(KVMIO, 0x00)
#define KVM_CREATE_VM             _IO(KVMIO, 0x01) /* type 0 only */
#define KVM_CHECK_EXTENSION       _IO(KVMIO, 0x03) /* 0 = not offered */
#define KVM_GET_VCPU_MMAP_SIZE    _IO(KVMIO, 0x04) /* kvm_run + PIO page + coalesced-MMIO page */

/* Layout of the vCPU mmap area, in pages. */
#define KVM_PIO_PAGE_OFFSET 1
#define KVM_COALESCED_MMIO_PAGE_OFFSET 2

/* KVM_CHECK_EXTENSION capabilities rvmx offers. */
#define KVM_CAP_USER_MEMORY 3
#define KVM_CAP_SET_TSS_ADDR 4
#define KVM_CAP_NR_VCPUS 9
#define KVM_CAP_NR_MEMSLOTS 10
#define KVM_CAP_SET_IDENTITY_MAP_ADDR 37
#define KVM_CAP_MAX_VCPUS 66
#define KVM_CAP_CHECK_EXTENSION_VM 105
#define KVM_CAP_READONLY_MEM 81
#define KVM_CAP_DEBUGREGS 50
#define KVM_CAP_MP_STATE 14
#define KVM_CAP_USER_NMI 22
#define KVM_CAP_SET_GUEST_DEBUG 23
#define KVM_CAP_VCPU_EVENTS 41
#define KVM_CAP_GET_TSC_KHZ 61
#define KVM_CAP_SET_GUEST_DEBUG2 195
#define KVM_CAP_XSAVE 55
#define KVM_CAP_XCRS 56
#define KVM_CAP_MAX_VCPU_ID 128
#define KVM_CAP_DESTROY_MEMORY_REGION_WORKS 21
#define KVM_CAP_JOIN_MEMORY_REGIONS_WORKS 30
#define KVM_CAP_IRQ_ROUTING 25 /* KVM_SET_GSI_ROUTING exists; EINVAL without an in-kernel irqchip */
#define KVM_CAP_IMMEDIATE_EXIT 136
#define KVM_CAP_MCE 31 /* value: banks per vCPU */
#define KVM_CAP_IOEVENTFD 36
#define KVM_CAP_IOEVENTFD_NO_LENGTH 100
#define KVM_CAP_IOEVENTFD_ANY_LENGTH 122
#define KVM_CAP_GET_MSR_FEATURES 153

struct kvm_userspace_memory_region {
	__u32 slot;
	__u32 flags;
	__u64 guest_phys_addr;
	__u64 memory_size; /* bytes */
	__u64 userspace_addr; /* start of the userspace allocated memory */
};
#define KVM_MEM_LOG_DIRTY_PAGES (1UL << 0)
#define KVM_MEM_READONLY (1UL << 1)

struct kvm_regs {
	__u64 rax, rbx, rcx, rdx;
	__u64 rsi, rdi, rsp, rbp;
	__u64 r8, r9, r10, r11;
	__u64 r12, r13, r14, r15;
	__u64 rip, rflags;
};

struct kvm_segment {
	__u64 base;
	__u32 limit;
	__u16 selector;
	__u8 type;
	__u8 present, dpl, db, s, l, g, avl;
	__u8 unusable;
	__u8 padding;
};

struct kvm_dtable {
	__u64 base;
	__u16 limit;
	__u16 padding[3];
};

#define KVM_NR_INTERRUPTS 256
struct kvm_sregs {
	struct kvm_segment cs, ds, es, fs, gs, ss;
	struct kvm_segment tr, ldt;
	struct kvm_dtable gdt, idt;
	__u64 cr0, cr2, cr3, cr4, cr8;
	__u64 efer;
	__u64 apic_base;
	__u64 interrupt_bitmap[(KVM_NR_INTERRUPTS + 63) / 64];
};

/* kvm_run->exit_reason values rvmx produces. */
#define KVM_EXIT_UNKNOWN 0
#define KVM_EXIT_IO 2
#define KVM_EXIT_DEBUG 4
#define KVM_EXIT_HLT 5
#define KVM_EXIT_MMIO 6
#define KVM_EXIT_SHUTDOWN 8
#define KVM_EXIT_FAIL_ENTRY 9
#define KVM_EXIT_IRQ_WINDOW_OPEN 7
#define KVM_EXIT_INTR 10
#define KVM_EXIT_SET_TPR 11
#define KVM_EXIT_INTERNAL_ERROR 17

/* KVM_EXIT_INTERNAL_ERROR suberrors. */
#define KVM_INTERNAL_ERROR_EMULATION 1
#define KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON 4
/* Flag of emulation_failure: insn_size/insn_bytes are valid. */
#define KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES (1ULL << 0)

/* Page 0 of the vCPU mmap area. Only the members rvmx fills are spelled out. */
/* KVM_EXIT_DEBUG: the exception (1 = #DB, 3 = #BP), linear RIP, DR6/DR7 for #DB. */
struct kvm_debug_exit_arch {
	__u32 exception;
	__u32 pad;
	__u64 pc;
	__u64 dr6;
	__u64 dr7;
};

struct kvm_run {
	/* in */
	__u8 request_interrupt_window;
	__u8 immediate_exit;
	__u8 padding1[6];
	/* out */
	__u32 exit_reason;
	__u8 ready_for_interrupt_injection;
	__u8 if_flag;
	__u16 flags;
	/* in (pre_kvm_run), out (post_kvm_run) */
	__u64 cr8;
	__u64 apic_base;
	union {
		/* KVM_EXIT_DEBUG */
		struct {
			struct kvm_debug_exit_arch arch;
		} debug;
		/* KVM_EXIT_FAIL_ENTRY */
		struct {
			__u64 hardware_entry_failure_reason;
			__u32 cpu;
		} fail_entry;
		/* KVM_EXIT_IO */
		struct {
#define KVM_EXIT_IO_IN 0
#define KVM_EXIT_IO_OUT 1
			__u8 direction;
			__u8 size; /* bytes */
			__u16 port;
			__u32 count;
			__u64 data_offset; /* relative to kvm_run start */
		} io;
		/* KVM_EXIT_MMIO */
		struct {
			__u64 phys_addr;
			__u8  data[8];
			__u32 len;
			__u8  is_write;
		} mmio;
		/* KVM_EXIT_INTERNAL_ERROR */
		struct {
			__u32 suberror;
			__u32 ndata;
			__u64 data[16];
		} internal;
		/* KVM_EXIT_INTERNAL_ERROR, suberror KVM_INTERNAL_ERROR_EMULATION */
		struct {
			__u32 suberror;
			__u32 ndata;
			__u64 flags;
			union {
				struct {
					__u8  insn_size;
					__u8  insn_bytes[15];
				};
			};
			/* Arbitrary extra data may follow. */
		} emulation_failure;
		char padding[256];
	};
	__u64 kvm_valid_regs;
	__u64 kvm_dirty_regs;
	union {
		char padding[2048];
	} s;
};

/* VM fd ioctls. */
#define KVM_CREATE_VCPU            _IO(KVMIO, 0x41)
#define KVM_SET_USER_MEMORY_REGION _IOW(KVMIO, 0x46, struct kvm_userspace_memory_region)
#define KVM_SET_TSS_ADDR           _IO(KVMIO, 0x47)
#define KVM_SET_IDENTITY_MAP_ADDR  _IOW(KVMIO, 0x48, __u64)

/* vCPU fd ioctls. */
#define KVM_RUN       _IO(KVMIO, 0x80)
#define KVM_GET_REGS  _IOR(KVMIO, 0x81, struct kvm_regs)
#define KVM_SET_REGS  _IOW(KVMIO, 0x82, struct kvm_regs)
#define KVM_GET_SREGS _IOR(KVMIO, 0x83, struct kvm_sregs)
#define KVM_SET_SREGS _IOW(KVMIO, 0x84, struct kvm_sregs)

/* Debug registers: DR0-3, DR6, DR7 (flags must be 0). */
struct kvm_debugregs {
	__u64 db[4];
	__u64 dr6;
	__u64 dr7;
	__u64 flags;
	__u64 reserved[9];
};

/* The FPU/extended state as an XSAVE image in standard format. */
struct kvm_xsave {
	__u32 region[1024];
	__u32 extra[0];
};

#define KVM_MAX_XCRS 16
struct kvm_xcr {
	__u32 xcr;
	__u32 reserved;
	__u64 value;
};

/* Extended control registers: XCR0 only. */
struct kvm_xcrs {
	__u32 nr_xcrs;
	__u32 flags;
	struct kvm_xcr xcrs[KVM_MAX_XCRS];
	__u64 padding[16];
};

/* Interrupts without an in-kernel irqchip. */
struct kvm_interrupt {
	__u32 irq;
};

/* Pending and in-flight events (KVM_VCPUEVENT_VALID_* in flags). */
#define KVM_VCPUEVENT_VALID_NMI_PENDING 0x00000001
#define KVM_VCPUEVENT_VALID_SIPI_VECTOR 0x00000002
#define KVM_VCPUEVENT_VALID_SHADOW      0x00000004
#define KVM_VCPUEVENT_VALID_SMM         0x00000008
#define KVM_VCPUEVENT_VALID_PAYLOAD     0x00000010
#define KVM_VCPUEVENT_VALID_TRIPLE_FAULT 0x00000020
#define KVM_X86_SHADOW_INT_MOV_SS 0x01
#define KVM_X86_SHADOW_INT_STI    0x02
struct kvm_vcpu_events {
	struct {
		__u8 injected;
		__u8 nr;
		__u8 has_error_code;
		__u8 pending;
		__u32 error_code;
	} exception;
	struct {
		__u8 injected;
		__u8 nr;
		__u8 soft;
		__u8 shadow;
	} interrupt;
	struct {
		__u8 injected;
		__u8 pending;
		__u8 masked;
		__u8 pad;
	} nmi;
	__u32 sipi_vector;
	__u32 flags;
	struct {
		__u8 smm;
		__u8 pending;
		__u8 smm_inside_nmi;
		__u8 latched_init;
	} smi;
	struct {
		__u8 pending;
	} triple_fault;
	__u8 reserved[26];
	__u8 exception_has_payload;
	__u64 exception_payload;
};

/* Without an in-kernel LAPIC only RUNNABLE exists. */
#define KVM_MP_STATE_RUNNABLE 0
struct kvm_mp_state {
	__u32 mp_state;
};

/* A userspace debugger's settings. */
#define KVM_GUESTDBG_ENABLE     0x00000001
#define KVM_GUESTDBG_SINGLESTEP 0x00000002
#define KVM_GUESTDBG_USE_SW_BP  0x00010000
#define KVM_GUESTDBG_USE_HW_BP  0x00020000
#define KVM_GUESTDBG_INJECT_DB  0x00040000
#define KVM_GUESTDBG_INJECT_BP  0x00080000
#define KVM_GUESTDBG_BLOCKIRQ   0x00100000
struct kvm_guest_debug_arch {
	__u64 debugreg[8];
};
struct kvm_guest_debug {
	__u32 control;
	__u32 pad;
	struct kvm_guest_debug_arch arch;
};

struct kvm_translation {
	__u64 linear_address;
	__u64 physical_address;
	__u8  valid;
	__u8  writeable;
	__u8  usermode;
	__u8  pad[5];
};

#define KVM_TRANSLATE        _IOWR(KVMIO, 0x85, struct kvm_translation)
#define KVM_INTERRUPT        _IOW(KVMIO, 0x86, struct kvm_interrupt)
#define KVM_GET_MP_STATE     _IOR(KVMIO, 0x98, struct kvm_mp_state)
#define KVM_SET_MP_STATE     _IOW(KVMIO, 0x99, struct kvm_mp_state)
#define KVM_NMI              _IO(KVMIO, 0x9a)
#define KVM_SMI              _IO(KVMIO, 0xb7)
#define KVM_SET_GUEST_DEBUG  _IOW(KVMIO, 0x9b, struct kvm_guest_debug)
#define KVM_GET_VCPU_EVENTS  _IOR(KVMIO, 0x9f, struct kvm_vcpu_events)
#define KVM_SET_VCPU_EVENTS  _IOW(KVMIO, 0xa0, struct kvm_vcpu_events)
#define KVM_SET_TSC_KHZ      _IO(KVMIO, 0xa2)
#define KVM_GET_TSC_KHZ      _IO(KVMIO, 0xa3)
#define KVM_GET_DEBUGREGS _IOR(KVMIO, 0xa1, struct kvm_debugregs)
#define KVM_SET_DEBUGREGS _IOW(KVMIO, 0xa2, struct kvm_debugregs)
#define KVM_GET_XSAVE     _IOR(KVMIO, 0xa4, struct kvm_xsave)
#define KVM_SET_XSAVE     _IOW(KVMIO, 0xa5, struct kvm_xsave)
#define KVM_GET_XCRS      _IOR(KVMIO, 0xa6, struct kvm_xcrs)
#define KVM_SET_XCRS      _IOW(KVMIO, 0xa7, struct kvm_xcrs)

/* Dirty logs. */
struct kvm_dirty_log {
	__u32 slot;
	__u32 padding1;
	union {
		void *dirty_bitmap; /* one bit per page */
		__u64 padding2;
	};
};
#define KVM_GET_DIRTY_LOG           _IOW(KVMIO, 0x42, struct kvm_dirty_log)

/* ioeventfds: a guest write signals an eventfd instead of exiting. */
enum {
	kvm_ioeventfd_flag_nr_datamatch,
	kvm_ioeventfd_flag_nr_pio,
	kvm_ioeventfd_flag_nr_deassign,
	kvm_ioeventfd_flag_nr_virtio_ccw_notify,
	kvm_ioeventfd_flag_nr_fast_mmio,
	kvm_ioeventfd_flag_nr_max,
};
#define KVM_IOEVENTFD_FLAG_DATAMATCH (1 << kvm_ioeventfd_flag_nr_datamatch)
#define KVM_IOEVENTFD_FLAG_PIO       (1 << kvm_ioeventfd_flag_nr_pio)
#define KVM_IOEVENTFD_FLAG_DEASSIGN  (1 << kvm_ioeventfd_flag_nr_deassign)
struct kvm_ioeventfd {
	__u64 datamatch;
	__u64 addr; /* legal pio/mmio address */
	__u32 len;  /* 1, 2, 4, 8, or 0 for any */
	__s32 fd;
	__u32 flags;
	__u8  pad[36];
};
#define KVM_IOEVENTFD _IOW(KVMIO, 0x79, struct kvm_ioeventfd)

/* GSI routing: checked, then refused (no in-kernel irqchip). Entries not mirrored. */
struct kvm_irq_routing {
	__u32 nr;
	__u32 flags;
	/* struct kvm_irq_routing_entry entries[]; */
};
#define KVM_SET_GSI_ROUTING _IOW(KVMIO, 0x6a, struct kvm_irq_routing)

/* Machine checks. */
struct kvm_x86_mce {
	__u64 status;
	__u64 addr;
	__u64 misc;
	__u64 mcg_status;
	__u8 bank;
	__u8 pad1[7];
	__u64 pad2[3];
};
#define KVM_X86_SETUP_MCE             _IOW(KVMIO, 0x9c, __u64)
#define KVM_X86_GET_MCE_CAP_SUPPORTED _IOR(KVMIO, 0x9d, __u64)
#define KVM_X86_SET_MCE               _IOW(KVMIO, 0x9e, struct kvm_x86_mce)

/* MSR lists: those KVM_GET/SET_MSRS save and restore, and the feature MSRs (none on rvmx),
 * read on the system fd with KVM_GET_MSRS. */
struct kvm_msr_list {
	__u32 nmsrs; /* number of msrs in entries */
	__u32 indices[];
};
#define KVM_GET_MSR_INDEX_LIST         _IOWR(KVMIO, 0x02, struct kvm_msr_list)
#define KVM_GET_MSR_FEATURE_INDEX_LIST _IOWR(KVMIO, 0x0a, struct kvm_msr_list)
#endif /* __LINUX_KVM_H */


/* Linux 6.8's larger slot request; defined here too for older <linux/kvm.h>. */
#ifndef KVM_SET_USER_MEMORY_REGION2
#define KVM_CAP_USER_MEMORY2 231
struct kvm_userspace_memory_region2 {
	__u32 slot;
	__u32 flags;
	__u64 guest_phys_addr;
	__u64 memory_size;
	__u64 userspace_addr;
	__u64 guest_memfd_offset; /* KVM_MEM_GUEST_MEMFD: refused for the default VM type */
	__u32 guest_memfd;
	__u32 pad1;
	__u64 pad2[14];
};
#define KVM_SET_USER_MEMORY_REGION2 _IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2)
#endif

#endif /* _RVMX_H */
