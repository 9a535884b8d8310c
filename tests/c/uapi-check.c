/*
 * Prints the values include/rvmx.h defines. tests/run builds it twice, alone and after
 * <linux/kvm.h>, and requires identical output: the mirror must equal KVM's header.
 */
#include <stddef.h>
#include <stdio.h>
#include "rvmx.h"

#define P(x) printf(#x " %#lx\n", (unsigned long)(x))

int main(void)
{
	printf("KVM_API_VERSION %d\n", KVM_API_VERSION);
	printf("KVM_GET_API_VERSION %#lx\n", (unsigned long)KVM_GET_API_VERSION);
	printf("KVM_CREATE_VM %#lx\n", (unsigned long)KVM_CREATE_VM);
	printf("KVM_CHECK_EXTENSION %#lx\n", (unsigned long)KVM_CHECK_EXTENSION);
	printf("KVM_GET_VCPU_MMAP_SIZE %#lx\n", (unsigned long)KVM_GET_VCPU_MMAP_SIZE);
	printf("KVM_PIO_PAGE_OFFSET %d\n", KVM_PIO_PAGE_OFFSET);
	printf("KVM_COALESCED_MMIO_PAGE_OFFSET %d\n", KVM_COALESCED_MMIO_PAGE_OFFSET);
	P(KVM_CAP_USER_MEMORY); P(KVM_CAP_SET_TSS_ADDR); P(KVM_CAP_NR_VCPUS);
	P(KVM_CAP_NR_MEMSLOTS); P(KVM_CAP_SET_IDENTITY_MAP_ADDR); P(KVM_CAP_MAX_VCPUS);
	P(KVM_CAP_CHECK_EXTENSION_VM); P(KVM_CAP_MAX_VCPU_ID); P(KVM_CAP_READONLY_MEM);
	P(KVM_MEM_LOG_DIRTY_PAGES); P(KVM_MEM_READONLY);
	P(KVM_CREATE_VCPU); P(KVM_SET_USER_MEMORY_REGION); P(KVM_SET_TSS_ADDR);
	P(KVM_SET_IDENTITY_MAP_ADDR); P(KVM_RUN); P(KVM_GET_REGS); P(KVM_SET_REGS);
	P(KVM_GET_SREGS); P(KVM_SET_SREGS);
	P(KVM_EXIT_UNKNOWN); P(KVM_EXIT_IO); P(KVM_EXIT_HLT); P(KVM_EXIT_MMIO); P(KVM_EXIT_SHUTDOWN);
	P(KVM_EXIT_FAIL_ENTRY); P(KVM_EXIT_INTR); P(KVM_EXIT_INTERNAL_ERROR);
	P(KVM_EXIT_IO_IN); P(KVM_EXIT_IO_OUT);
	P(KVM_INTERNAL_ERROR_EMULATION); P(KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON);
	P(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES);
	P(sizeof(struct kvm_userspace_memory_region)); P(sizeof(struct kvm_regs));
	P(sizeof(struct kvm_segment)); P(sizeof(struct kvm_dtable)); P(sizeof(struct kvm_sregs));
	P(offsetof(struct kvm_sregs, efer)); P(offsetof(struct kvm_segment, unusable));
	P(offsetof(struct kvm_run, exit_reason)); P(offsetof(struct kvm_run, io.port));
	P(offsetof(struct kvm_run, io.data_offset)); P(offsetof(struct kvm_run, fail_entry.cpu));
	P(offsetof(struct kvm_run, internal.data));
	P(offsetof(struct kvm_run, mmio.data)); P(offsetof(struct kvm_run, mmio.len));
	P(offsetof(struct kvm_run, mmio.is_write)); P(offsetof(struct kvm_run, emulation_failure.flags));
	P(offsetof(struct kvm_run, emulation_failure.insn_bytes)); P(offsetof(struct kvm_run, kvm_valid_regs));
	P(sizeof(struct kvm_run));
	P(KVM_CAP_DEBUGREGS); P(KVM_CAP_XSAVE); P(KVM_CAP_XCRS); P(KVM_MAX_XCRS);
	P(KVM_GET_DEBUGREGS); P(KVM_SET_DEBUGREGS); P(KVM_GET_XSAVE); P(KVM_SET_XSAVE);
	P(KVM_GET_XCRS); P(KVM_SET_XCRS);
	P(sizeof(struct kvm_debugregs)); P(offsetof(struct kvm_debugregs, flags));
	P(sizeof(struct kvm_xsave)); P(sizeof(struct kvm_xcrs)); P(offsetof(struct kvm_xcrs, padding));
	P(KVM_EXIT_DEBUG); P(KVM_EXIT_IRQ_WINDOW_OPEN); P(KVM_EXIT_SET_TPR);
	P(KVM_CAP_MP_STATE); P(KVM_CAP_USER_NMI); P(KVM_CAP_SET_GUEST_DEBUG); P(KVM_CAP_VCPU_EVENTS);
	P(KVM_CAP_GET_TSC_KHZ); P(KVM_CAP_SET_GUEST_DEBUG2);
	P(KVM_TRANSLATE); P(KVM_INTERRUPT); P(KVM_GET_MP_STATE); P(KVM_SET_MP_STATE); P(KVM_NMI); P(KVM_SMI);
	P(KVM_SET_GUEST_DEBUG); P(KVM_GET_VCPU_EVENTS); P(KVM_SET_VCPU_EVENTS); P(KVM_SET_TSC_KHZ);
	P(KVM_GET_TSC_KHZ); P(KVM_MP_STATE_RUNNABLE);
	P(KVM_VCPUEVENT_VALID_NMI_PENDING); P(KVM_VCPUEVENT_VALID_SIPI_VECTOR);
	P(KVM_VCPUEVENT_VALID_SHADOW); P(KVM_VCPUEVENT_VALID_SMM); P(KVM_VCPUEVENT_VALID_PAYLOAD);
	P(KVM_VCPUEVENT_VALID_TRIPLE_FAULT); P(KVM_X86_SHADOW_INT_MOV_SS); P(KVM_X86_SHADOW_INT_STI);
	P(KVM_GUESTDBG_ENABLE); P(KVM_GUESTDBG_SINGLESTEP); P(KVM_GUESTDBG_USE_SW_BP);
	P(KVM_GUESTDBG_USE_HW_BP); P(KVM_GUESTDBG_INJECT_DB); P(KVM_GUESTDBG_INJECT_BP);
	P(KVM_GUESTDBG_BLOCKIRQ);
	P(sizeof(struct kvm_vcpu_events)); P(offsetof(struct kvm_vcpu_events, flags));
	P(offsetof(struct kvm_vcpu_events, exception_payload)); P(sizeof(struct kvm_guest_debug));
	P(sizeof(struct kvm_translation)); P(offsetof(struct kvm_run, debug.arch.dr7));
	P(sizeof(struct kvm_mp_state)); P(sizeof(struct kvm_interrupt));
	P(KVM_CAP_DESTROY_MEMORY_REGION_WORKS); P(KVM_CAP_JOIN_MEMORY_REGIONS_WORKS);
	P(KVM_CAP_IRQ_ROUTING); P(KVM_CAP_IMMEDIATE_EXIT); P(KVM_CAP_MCE); P(KVM_CAP_IOEVENTFD);
	P(KVM_CAP_IOEVENTFD_NO_LENGTH); P(KVM_CAP_IOEVENTFD_ANY_LENGTH); P(KVM_CAP_USER_MEMORY2);
	P(KVM_CAP_GET_MSR_FEATURES);
	P(sizeof(struct kvm_userspace_memory_region2)); P(offsetof(struct kvm_userspace_memory_region2, pad2));
	P(sizeof(struct kvm_dirty_log)); P(KVM_GET_DIRTY_LOG); P(KVM_SET_USER_MEMORY_REGION2);
	P(KVM_IOEVENTFD_FLAG_DATAMATCH); P(KVM_IOEVENTFD_FLAG_PIO); P(KVM_IOEVENTFD_FLAG_DEASSIGN);
	P(sizeof(struct kvm_ioeventfd)); P(offsetof(struct kvm_ioeventfd, flags)); P(KVM_IOEVENTFD);
	P(sizeof(struct kvm_irq_routing)); P(KVM_SET_GSI_ROUTING);
	P(sizeof(struct kvm_x86_mce)); P(offsetof(struct kvm_x86_mce, bank));
	P(KVM_X86_SETUP_MCE); P(KVM_X86_GET_MCE_CAP_SUPPORTED); P(KVM_X86_SET_MCE);
	P(sizeof(struct kvm_msr_list)); P(KVM_GET_MSR_INDEX_LIST); P(KVM_GET_MSR_FEATURE_INDEX_LIST);
	return 0;
}
