#!/bin/busybox sh
# /sbin/init of the root file system scripts/guest-disk builds (ext4, busybox): `make run` and
# the disk tests boot it with `rvmx run --disk IMAGE --cmdline "... root=/dev/vda"`.
# Words on the kernel command line pick what it does:
#   rvmx-disk.write=WORD   says what /rvmx-data holds (and, after the fsync loop, how many of
#                          its files are whole), writes WORD there, powers off cleanly
#   rvmx-disk.read         prints /rvmx-data's contents and powers off
#   rvmx-disk.fsync        writes and fsyncs files in a loop until the VMM is killed
#   rvmx-disk.bench        disk-bench on the second disk (/dev/vdb), then powers off
#   (none)                 a shell on the console; leaving it powers off cleanly
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2> /dev/null
mount -o remount,rw /
hostname rvmx
echo "rvmx-disk: root $(grep ' / ' /proc/mounts | cut -d' ' -f1,3,4 | head -n 1), $(grep -c ^processor /proc/cpuinfo) CPU(s), up $(cut -d' ' -f1 /proc/uptime) s, rng $(cat /sys/class/misc/hw_random/rng_current 2> /dev/null || echo none)"

off() { # a clean power-off: everything written, the root read-only
	sync
	mount -o remount,ro /
	poweroff -f
}

report() { # what the disk holds from earlier boots
	echo "rvmx-disk: read $(cat /rvmx-data 2> /dev/null || echo '(nothing)')"
	if [ -d /fsync ]; then # after the fsync loop: the files it completed
		n=0
		for f in /fsync/*; do [ "$(wc -c < "$f")" = 4096 ] && n=$((n + 1)); done
		echo "rvmx-disk: $n of $(ls /fsync | wc -l) fsync files whole"
	fi
}
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^rvmx-disk\.$1//p" | head -n 1; }
case " $(cat /proc/cmdline) " in
*" rvmx-disk.write="*)
	report
	arg write= > /rvmx-data
	echo "rvmx-disk: wrote $(cat /rvmx-data)"
	off ;;
*" rvmx-disk.read "*)
	report
	off ;;
*" rvmx-disk.bench "*)
	disk-bench /dev/vdb | sed 's/^/rvmx-disk: bench /'
	off ;;
*" rvmx-disk.fsync "*)
	mkdir -p /fsync
	echo "rvmx-disk: fsync loop"
	i=0
	while :; do
		i=$((i + 1))
		dd if=/dev/urandom of=/fsync/$((i % 64)) bs=4096 count=1 conv=fsync 2> /dev/null
		[ $((i % 50)) = 0 ] && echo "rvmx-disk: $i files synced"
	done ;;
esac
echo "rvmx-disk: a shell on the console; 'exit' powers off"
setsid cttyhack sh -l
off
