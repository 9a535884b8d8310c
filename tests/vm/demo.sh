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
