# `make run`: what a newcomer sees. Grows with rvmx (next: booting a Linux guest through rvmx).
echo "== rvmx.ko is loaded; the kernel log says:"
dmesg | grep 'rvmx:'
echo "== rvmx info (a kvm-ioctls client on /dev/rvmx):"
insmod /lib/modules/msr.ko
rvmx info
echo "== small guests run through KVM_RUN on /dev/rvmx (real mode, then 64-bit long mode):"
kvm-run-check /dev/rvmx | grep -E '^(io|long64) '
