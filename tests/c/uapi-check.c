/*
 * Prints the values include/rvmx.h defines. tests/run builds it twice, alone and after
 * <linux/kvm.h>, and requires identical output: the mirror must equal KVM's header.
 */
#include <stdio.h>
#include "rvmx.h"

int main(void)
{
	printf("KVM_API_VERSION %d\n", KVM_API_VERSION);
	printf("KVM_GET_API_VERSION %#lx\n", (unsigned long)KVM_GET_API_VERSION);
	printf("KVM_CREATE_VM %#lx\n", (unsigned long)KVM_CREATE_VM);
	printf("KVM_CHECK_EXTENSION %#lx\n", (unsigned long)KVM_CHECK_EXTENSION);
	printf("KVM_GET_VCPU_MMAP_SIZE %#lx\n", (unsigned long)KVM_GET_VCPU_MMAP_SIZE);
	printf("KVM_PIO_PAGE_OFFSET %d\n", KVM_PIO_PAGE_OFFSET);
	printf("KVM_COALESCED_MMIO_PAGE_OFFSET %d\n", KVM_COALESCED_MMIO_PAGE_OFFSET);
	return 0;
}
