# `make run`: what a newcomer sees: rvmx loaded, what it offers, then a Linux guest booted by
# the rvmx tool on /dev/rvmx (the guest's console is shown as it boots).
echo "== rvmx.ko is loaded; the kernel log says:"
dmesg | grep 'rvmx:'
echo "== rvmx info (a kvm-ioctls client on /dev/rvmx):"
insmod /lib/modules/msr.ko
rvmx info
echo "== small guests run through KVM_RUN on /dev/rvmx (real mode, then 64-bit long mode):"
kvm-run-check /dev/rvmx | grep -E '^(io|long64) '
echo "== rvmx run --kernel: the test kernel boots as a 2-CPU guest of rvmx (its console follows, then the exits it made and rvmx's statistics of the VM):"
rvmx run --kernel /root/guest-bzImage --initrd /root/guest-initrd.cpio --mem 128M --cpus 2 --timeout 300 \
	--cmdline "console=ttyS0 reboot=k panic=-1 tsc_early_khz=100000 nohz=off quiet" --trace-exits --stats
echo "== rvmx run --disk: the guest kernel boots from an ext4 disk image (virtio-blk) to a shell on its serial console; what is typed there (here by this script) writes a file, and 'exit' powers off cleanly:"
# The commands go in once the shell is there: earlier input would meet a UART the guest has not opened.
shell() { # shell COMMANDS: one boot from the disk with COMMANDS typed at its shell
	rm -f /tmp/in /tmp/demo.out && mkfifo /tmp/in
	rvmx run --kernel /root/guest-disk-bzImage --disk /root/guest-disk.img --rng --mem 128M --timeout 300 \
		--cmdline "console=ttyS0 reboot=k panic=-1 tsc_early_khz=100000 nohz=off quiet root=/dev/vda" < /tmp/in | tee /tmp/demo.out &
	exec 3> /tmp/in
	until grep -q "a shell on the console" /tmp/demo.out 2> /dev/null; do sleep 1; done
	sleep 1
	echo "$1" >&3
	wait
	exec 3>&-
}
shell 'echo "written at boot 1, up $(cut -d" " -f1 /proc/uptime) s" > /root/note; cat /root/note; df -h /; exit'
echo "== the same disk booted again: the file is there"
shell 'cat /root/note; exit'
