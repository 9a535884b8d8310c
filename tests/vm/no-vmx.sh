# On a CPU without VMX (QEMU TCG) rvmx must refuse to load, with one clear line and ENODEV.
. /root/lib.sh
check "no-vmx: this CPU really has no VMX" sh -c '! grep -qw vmx /proc/cpuinfo'
check "no-vmx: insmod fails with ENODEV" expect_fail_with "No such device" insmod /lib/rvmx/rvmx.ko
check "no-vmx: the log says why" dmesg_has "rvmx: this CPU has no VMX"
check "no-vmx: nothing left behind" sh -c '! grep -q "^rvmx " /proc/modules && [ ! -e /dev/rvmx ]'
[ $failures -eq 0 ]
