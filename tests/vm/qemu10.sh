# QEMU 10 (bookworm-backports, scripts/qemu-bundle 10) with kernel-irqchip=split: its PIC,
# PIT, IOAPIC and UART in userspace, a local APIC per vCPU in the kernel (KVM_CAP_SPLIT_IRQCHIP,
# GSI routes, irqfd). SeaBIOS, the multiboot option ROM, then mb-hello, which prints, takes
# PIT interrupts in HLT (halted in the kernel, woken by the userspace PIC's ExtINT) and exits
# through isa-debug-exit (QEMU's status 1 is the guest's 0). On rvmx loaded with
# split_irqchip=1, then on kvm_intel in the same boot; the serial output must be the same.
# Then the project's Linux and Debian bookworm's unmodified cloud kernel with 2 vCPUs (APs
# started with INIT/SIPI through the in-kernel APICs, the LAPIC timer, IOAPIC interrupts as
# MSIs): init's marker, a clean boot log, and what the kernel says about its machine, the same
# on rvmx and KVM.
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

linux() { # linux LABEL DEVICE [KERNEL RELEASE-PATTERN]: the project's Linux by default
	timeout 900 qemu-system-x86_64 -accel kvm,device=$2,kernel-irqchip=split -M pc -smp 2 -m 256 \
		-nodefaults -vga none -display none -serial file:/tmp/q10-linux-$1 -no-reboot \
		-kernel ${3:-/root/guest-bzImage} -initrd /root/guest-initrd.cpio \
		-append "console=ttyS0 reboot=k panic=-1 tsc_early_khz=100000 nohz=off" > /tmp/q10-linux-log-$1 2>&1
	status=$?
	tr -d '\r' < /tmp/q10-linux-$1 > /tmp/q10-linux-$1.txt
	grep -E "^rvmx-guest:|smp: Brought up|clocksource: Switched" /tmp/q10-linux-$1.txt | cut -c1-100
	grep -v "requested feature" /tmp/q10-linux-log-$1
	[ $status = 0 ] || { echo "qemu exit status $status, wanted 0 (the guest's reboot)"; tail -n 5 /tmp/q10-linux-$1.txt; return 1; }
	grep -q "^rvmx-guest: Linux ${4:-7\.3}[^ ]* reached init, 2 CPU(s)" /tmp/q10-linux-$1.txt &&
	grep -q "smp: Brought up 1 node, 2 CPUs" /tmp/q10-linux-$1.txt || return 1
	! grep -E -A3 "Call Trace|WARNING|BUG|unchecked MSR|Stale (ISR|IRR)|spurious" /tmp/q10-linux-$1.txt
}

# What a boot log says about the machine and the hypervisor, without times and counts that
# differ from boot to boot: to compare rvmx's with KVM's.
machine_lines() { # machine_lines LABEL
	grep -E "Hypervisor detected|kvm-clock: Using|clocksource: Switched|x2apic|APIC: Switched|smpboot: CPU0:|smp: Brought up|KVM setup|kvm-guest|reached init" \
		/tmp/q10-linux-$1.txt | sed -e 's/^\[ *[0-9.]*\] //' -e 's/, up [0-9.]* s$//' -e 's/ (\([0-9.]*\) BogoMIPS)//'
}
same_machine() { # same_machine KVM-LABEL RVMX-LABEL
	machine_lines $1 > /tmp/ml-$1; machine_lines $2 > /tmp/ml-$2
	cat /tmp/ml-$2; diff /tmp/ml-$1 /tmp/ml-$2
}

rmmod rvmx 2>/dev/null
check "qemu10: rvmx loads with split_irqchip=1" insmod /lib/rvmx/rvmx.ko split_irqchip=1
check "qemu10: QEMU 10 -accel kvm,device=/dev/rvmx,kernel-irqchip=split boots SeaBIOS and a multiboot guest: serial output, PIT interrupts through the userspace PIC, exit status" \
	q10 rvmx /dev/rvmx
check "qemu10: QEMU 10 with kernel-irqchip=split boots the project's Linux 7.3 with 2 vCPUs to init on /dev/rvmx, with a clean boot log" \
	linux rvmx /dev/rvmx
check "qemu10: rvmx unloads afterwards" rmmod rvmx
kvm-load
check "qemu10: the same on /dev/kvm" q10 kvm /dev/kvm
check "qemu10: the guest's serial output on rvmx is identical to KVM's" diff /tmp/q10-serial-kvm /tmp/q10-serial-rvmx
check "qemu10: the same Linux boot on /dev/kvm" linux kvm /dev/kvm
check "qemu10: what the project's Linux says about its machine (hypervisor, clock, APIC, CPUs) on rvmx is what it says on KVM" \
	same_machine kvm rvmx
# An unmodified distribution kernel (Debian bookworm's cloud kernel, scripts/distro-kernel),
# on rvmx reloaded with the parameter after kvm_intel goes.
if [ -f /root/distro-vmlinuz ]; then
	check "qemu10: the same QEMU boots Debian bookworm's cloud kernel with 2 vCPUs to init on /dev/kvm" \
		linux distro-kvm /dev/kvm /root/distro-vmlinuz '6\.1\.0-[0-9]*-cloud-amd64'
	check "qemu10: rvmx loads again with split_irqchip=1 once kvm_intel is gone" \
		sh -c 'rmmod kvm_intel && rmmod kvm && insmod /lib/rvmx/rvmx.ko split_irqchip=1'
	check "qemu10: QEMU 10 with kernel-irqchip=split boots Debian bookworm's cloud kernel with 2 vCPUs to init on /dev/rvmx, with a clean boot log" \
		linux distro-rvmx /dev/rvmx /root/distro-vmlinuz '6\.1\.0-[0-9]*-cloud-amd64'
	check "qemu10: what the Debian kernel says about its machine (hypervisor, clock, APIC, CPUs) on rvmx is what it says on KVM" \
		same_machine distro-kvm distro-rvmx
else
	check "qemu10: the Debian cloud kernel is there (scripts/distro-kernel)" false
fi

[ $failures -eq 0 ]
