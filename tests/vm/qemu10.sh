# QEMU 10 (bookworm-backports, scripts/qemu-bundle 10) with kernel-irqchip=split: its PIC,
# PIT, IOAPIC and UART in userspace, a local APIC per vCPU in the kernel (KVM_CAP_SPLIT_IRQCHIP,
# GSI routes, irqfd). SeaBIOS, the multiboot option ROM, then mb-hello, which prints, takes
# PIT interrupts in HLT (halted in the kernel, woken by the userspace PIC's ExtINT) and exits
# through isa-debug-exit (QEMU's status 1 is the guest's 0). On rvmx loaded with
# split_irqchip=1, then on kvm_intel in the same boot; the serial output must be the same.
. /root/lib.sh

q10() { # q10 LABEL DEVICE
	timeout 600 qemu-system-x86_64 -accel kvm,device=$2,kernel-irqchip=split -M pc -m 32 \
		-nodefaults -vga none -display none -serial file:/tmp/q10-serial-$1 -no-reboot \
		-device isa-debug-exit,iobase=0xf4,iosize=4 -kernel /root/mb-hello.elf > /tmp/q10-log-$1 2>&1
	status=$?
	cat /tmp/q10-serial-$1
	grep -v "requested feature" /tmp/q10-log-$1
	[ $status = 1 ] || { echo "qemu exit status $status, wanted 1 (the guest's 0)"; return 1; }
	grep -qx "mb-hello: 5 timer interrupts taken in HLT" /tmp/q10-serial-$1
}

rmmod rvmx 2>/dev/null
check "qemu10: rvmx loads with split_irqchip=1" insmod /lib/rvmx/rvmx.ko split_irqchip=1
check "qemu10: QEMU 10 -accel kvm,device=/dev/rvmx,kernel-irqchip=split boots SeaBIOS and a multiboot guest: serial output, PIT interrupts through the userspace PIC, exit status" \
	q10 rvmx /dev/rvmx
check "qemu10: rvmx unloads afterwards" rmmod rvmx
kvm-load
check "qemu10: the same on /dev/kvm" q10 kvm /dev/kvm
check "qemu10: the guest's serial output on rvmx is identical to KVM's" diff /tmp/q10-serial-kvm /tmp/q10-serial-rvmx

[ $failures -eq 0 ]
