#!/bin/busybox sh
# /init of the Linux guest that `rvmx run --kernel` boots in the tests and `make run`: prints
# a marker with the kernel release, CPU count and uptime, then reboots (the i8042 reset ends the
# VM), or powers off (ACPI S5) when the kernel command line has rvmx-guest.poweroff.
/bin/busybox mount -t proc proc /proc
/bin/busybox echo "rvmx-guest: Linux $(/bin/busybox uname -r) reached init, $(/bin/busybox grep -c ^processor /proc/cpuinfo) CPU(s), up $(/bin/busybox cut -d' ' -f1 /proc/uptime) s"
/bin/busybox grep -q rvmx-guest.poweroff /proc/cmdline && /bin/busybox poweroff -f
/bin/busybox reboot -f
