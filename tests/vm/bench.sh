# `make bench` inside the Bochs test VM (on one CPU): the same client and the same Linux guest on
# /dev/rvmx, then, with rvmx unloaded, on /dev/kvm; one table with the ratios. Not pass/fail.
insmod /lib/modules/msr.ko 2> /dev/null
linux_boot() { # linux_boot DEVICE [--stats]: the guest's uptime (s) when its init ran
	rvmx run --device "$1" ${2:-} --kernel /root/guest-bzImage --initrd /root/guest-initrd.cpio --mem 128M \
		--timeout 600 --cmdline "console=ttyS0 reboot=k panic=-1 tsc_early_khz=100000 nohz=off quiet" \
		< /dev/null 2> /tmp/linux-boot.err | tr -d '\r' | sed -n 's/^rvmx-guest: .*, up \([0-9.]*\) s$/linux_boot_to_init_guest_ms \1/p' |
		awk '{ printf "%s %d\n", $1, $2 * 1000 }'
}
disk() { # disk DEVICE: the guest kernel from the ext4 disk, disk-bench on a second, blank disk
	cp /root/guest-disk.img /tmp/root.img && dd if=/dev/zero of=/tmp/bench.img bs=1M count=32 2> /dev/null &&
	rvmx run --device "$1" --kernel /root/guest-disk-bzImage --disk /tmp/root.img --disk /tmp/bench.img --mem 128M \
		--timeout 900 --cmdline "console=ttyS0 reboot=k panic=-1 tsc_early_khz=100000 nohz=off quiet root=/dev/vda rvmx-disk.bench" \
		< /dev/null 2> /dev/null | tr -d '\r' | sed -n 's/^rvmx-disk: bench //p; s/^rvmx-disk: root .*, up \([0-9.]*\) s, .*/disk_boot_to_init_guest_ms \1/p' |
		awk '{ printf "%s %d\n", $1, $1 ~ /_ms$/ ? $2 * 1000 : $2 }'
	rm -f /tmp/root.img /tmp/bench.img
}
bench() { # bench DEVICE > results (progress on the console, which the host timestamps)
	echo "bench: exits on $1" > /dev/console
	kvm-bench "$1"
	echo "bench: the in-kernel local APIC's interrupt path on $1" > /dev/console
	kvm-irq-bench "$1"
	echo "bench: Linux boot on $1" > /dev/console
	case $1 in /dev/rvmx) linux_boot "$1" --stats; cp /tmp/linux-boot.err /tmp/linux-stats ;; *) linux_boot "$1" ;; esac
	if [ -f /root/guest-disk.img ]; then
		echo "bench: the guest kernel from a virtio-blk disk on $1" > /dev/console
		disk "$1"
	fi
	echo "bench: done on $1" > /dev/console
}
# Everything on CPU 0 (the test VM has two: Linux 7.3 warns about Bochs' one-CPU topology).
taskset -p 1 $$ > /dev/null
cat /sys/kernel/debug/rvmx/mitigations > /tmp/rvmx-plan 2> /dev/null
bench /dev/rvmx > /tmp/bench-rvmx
rmmod rvmx && kvm-load || { echo "bench: could not switch to kvm_intel"; exit 1; }
bench /dev/kvm > /tmp/bench-kvm
echo
echo "BENCH test VM: Linux $(uname -r) in Bochs, run on CPU 0; TSC ticks per operation, measured by the guest"
echo "BENCH kernel command line: $(grep -o 'mitigations=[a-z]*' /proc/cmdline || echo 'mitigations on (default)'); rvmx: $(grep '^plan' /tmp/rvmx-plan 2>/dev/null | tr '\n' ' ')"
echo "BENCH (in Bochs the TSC counts emulated instructions: lower is fewer instructions)"
printf 'BENCH %-28s %12s %12s %8s\n' operation rvmx KVM rvmx/KVM
awk 'NR == FNR { kvm[$1] = $2; next }
     { r = ($2 ~ /^[0-9]+$/ && kvm[$1] > 0) ? sprintf("%.2f", $2 / kvm[$1]) : "-"
       printf "BENCH %-28s %12s %12s %8s\n", $1, $2, kvm[$1], r }' /tmp/bench-kvm /tmp/bench-rvmx
echo "BENCH "
echo "BENCH Where the Linux boot's exits went on rvmx (rvmx run --stats):"
sed -n '/statistics of this VM/,/^rvmx: guest/p' /tmp/linux-stats | grep -v '^rvmx: ' | sed 's/^/BENCH /'
