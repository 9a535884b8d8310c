# `make run`: what a newcomer sees. Grows with rvmx (next: booting a guest through rvmx).
echo "== rvmx.ko is loaded; the kernel log says:"
dmesg | grep 'rvmx:'
echo "== rvmx info (a kvm-ioctls client on /dev/rvmx):"
insmod /lib/modules/msr.ko
rvmx info
