# rvmx run's virtio-mmio devices, on rvmx and then on kvm_intel in the same boot: the guest
# kernel (scripts/kernel-guest.config) finds a virtio-blk disk and a virtio-rng in the DSDT and
# boots from the disk (ext4, scripts/guest-disk); an fsync loop in the guest survives the VMM
# being killed (SIGKILL); each later boot finds the file the boot before wrote before its clean
# poweroff, and the image checks clean (e2fsck -n); bad disk images are refused before
# anything runs. One boot per check keeps the suite short.
. /root/lib.sh
insmod /lib/modules/msr.ko 2> /dev/null

CMDLINE="console=ttyS0 reboot=k panic=-1 tsc_early_khz=100000 nohz=off root=/dev/vda"
disk_boot() { # disk_boot LABEL DEVICE IMAGE EXTRA-CMDLINE [RVMX-RUN-ARGS...]: one boot from IMAGE
	label=$1 dev=$2 image=$3 extra=$4; shift 4
	rvmx run --device "$dev" "$@" --kernel /root/guest-disk-bzImage --mem 128M --timeout 600 --disk "$image" \
		--cmdline "$CMDLINE $extra" < /dev/null > /tmp/disk-$label.out 2> /tmp/disk-$label.err; status=$?
	tr -d '\r' < /tmp/disk-$label.out > /tmp/disk-$label.txt
	grep -E "^rvmx-disk:|virtio_blk|EXT4-fs \(vda\): mounted" /tmp/disk-$label.txt | cut -c1-110
	cat /tmp/disk-$label.err
	[ $status = 0 ] && grep -q "guest powered off (ACPI S5)" /tmp/disk-$label.err || { echo "exit status $status"; tail -n 5 /tmp/disk-$label.txt; return 1; }
	! grep -E -A3 "$MACHINE_COMPLAINTS|EXT4-fs error|I/O error" /tmp/disk-$label.txt
}

# One image per device, one boot per check, each reading what the boot before it wrote:
# first an fsync loop in the guest, killed (SIGKILL) mid-run: what the guest synced must reach
# the image, and the journal keeps the file system consistent; then clean boots with each
# irqchip, the first of which replays the journal (every synced file whole).
killed() { # killed LABEL DEVICE: the fsync loop on a fresh copy of the image, killed
	cp /root/guest-disk.img /tmp/disk-$1.img
	rvmx run --device "$2" --kernel /root/guest-disk-bzImage --mem 128M --timeout 600 --disk /tmp/disk-$1.img \
		--cmdline "$CMDLINE rvmx-disk.fsync" < /dev/null > /tmp/disk-$1.out 2> /tmp/disk-$1.err &
	pid=$!
	i=0
	while [ $i -lt 600 ] && ! tr -d '\r' < /tmp/disk-$1.out | grep -q "^rvmx-disk: 100 files synced"; do
		sleep 1; i=$((i + 1))
		kill -0 $pid 2> /dev/null || break
	done
	kill -9 $pid 2> /dev/null
	wait $pid
	tr -d '\r' < /tmp/disk-$1.out | grep "^rvmx-disk:" | tail -n 2
	tr -d '\r' < /tmp/disk-$1.out | grep -q "^rvmx-disk: 100 files synced" || { cat /tmp/disk-$1.err; return 1; }
}
next_boot() { # next_boot LABEL DEVICE IRQCHIP WANT-READ [RVMX-RUN-ARGS...]: reads WANT-READ, writes its own
	nb_label=$1 nb_dev=$2 nb_chip=$3 nb_want=$4; shift 4
	disk_boot $nb_label-$nb_chip $nb_dev /tmp/disk-$nb_label.img "rvmx-disk.write=from-$nb_label-$nb_chip" --irqchip $nb_chip "$@" &&
	grep -q "^rvmx-disk: read $nb_want$" /tmp/disk-$nb_label-$nb_chip.txt &&
	grep -q "^rvmx-disk: wrote from-$nb_label-$nb_chip" /tmp/disk-$nb_label-$nb_chip.txt
}
after_kill() { # after_kill LABEL DEVICE: the first clean boot after the kill, with --rng and 2 CPUs
	next_boot $1 $2 split "(nothing)" --rng --cpus 2 &&
	grep -q "^rvmx-disk: root /dev/root ext4 rw.*, 2 CPU(s), .*rng virtio_rng.0" /tmp/disk-$1-split.txt &&
	# All 64 files were written and synced at least once; the one being rewritten at the kill
	# may have lost its new contents (dd truncates it first), no other.
	grep -E -q "^rvmx-disk: 6[34] of 64 fsync files whole" /tmp/disk-$1-split.txt
}
last_boot() { # last_boot LABEL DEVICE IRQCHIP WANT-READ: then e2fsck -n finds nothing to fix
	next_boot "$@" && e2fsck.static -fn /tmp/disk-$1.img
	r=$?; rm -f /tmp/disk-$1.img; return $r
}

# Bad input: one line, status 1, the image untouched, before any VM is created.
bad_disk() { # bad_disk TEXT DISK-ARG
	expect_fail_with "$1" rvmx run --kernel /root/guest-disk-bzImage --disk "$2" --timeout 5 < /dev/null &&
	[ "$(rvmx run --kernel /root/guest-disk-bzImage --disk "$2" --timeout 5 2>&1 < /dev/null | wc -l)" = 1 ]
}
bad_inputs() {
	head -c 100 /dev/zero > /tmp/short.img
	cp /root/guest-disk.img /tmp/ro.img && chmod 444 /tmp/ro.img
	sum=$(md5sum < /tmp/ro.img)
	bad_disk "shorter than one 512-byte sector" /tmp/short.img &&
	bad_disk "/tmp/missing.img: No such file or directory" /tmp/missing.img &&
	bad_disk "read-only: give it as --disk /tmp/ro.img,ro" /tmp/ro.img &&
	[ "$(md5sum < /tmp/ro.img)" = "$sum" ]
	r=$?
	rm -f /tmp/ro.img /tmp/short.img
	return $r
}
# A locked image (another VM has it) is refused too: a host unit test shows it
# (block::tests::bad_images_are_refused_with_one_line), as the test VM's kernel has no file
# locking (CONFIG_FILE_LOCKING, tinyconfig), where rvmx run uses an image unlocked.

check "disk: bad images are refused with one line and status 1, nothing written (too short, missing, read-only file given read-write)" bad_inputs
check "disk: on /dev/rvmx, an fsync loop in the guest (ext4 on virtio-blk) runs until rvmx run is killed (SIGKILL)" \
	killed rvmx /dev/rvmx
check "disk: rvmx run --disk --rng (split irqchip, 2 CPUs) boots the guest kernel from that image: ext4 replays its journal, every synced file is whole, the guest uses virtio-rng; it writes a file and powers off cleanly" \
	after_kill rvmx /dev/rvmx
check "disk: ... with the kernel's irqchip (interrupts through irqfd): the file the boot before wrote is there; it writes its own" \
	next_boot rvmx /dev/rvmx kernel from-rvmx-split
check "disk: ... with the local APICs in userspace: the same; then e2fsck -n finds nothing to fix" \
	last_boot rvmx /dev/rvmx user from-rvmx-kernel
check "disk: rvmx unloads afterwards" rmmod rvmx
kvm-load
# KVM's boots are the reference (`reference`, lib.sh): a retry starts from the image the
# failed try started from.
kvm_try() { # kvm_try COMMAND...: COMMAND on /tmp/disk-kvm.img, the image put back if it fails
	cp /tmp/disk-kvm.img /tmp/disk-kvm.before 2> /dev/null
	"$@" && return 0
	r=$?; cp /tmp/disk-kvm.before /tmp/disk-kvm.img 2> /dev/null; return $r
}
check "disk: the same fsync loop killed on /dev/kvm" reference killed kvm /dev/kvm
check "disk: ... the boot after it on /dev/kvm (split irqchip, 2 CPUs, virtio-rng)" reference kvm_try after_kill kvm /dev/kvm
check "disk: ... then with the kernel's irqchip, and e2fsck -n" reference kvm_try last_boot kvm /dev/kvm kernel from-kvm-split
rm -f /tmp/disk-kvm.before
echo "Disk boot times (guest uptime at init):"
for l in rvmx-split rvmx-kernel rvmx-user kvm-split kvm-kernel; do
	echo "  $l: $(sed -n 's/^rvmx-disk: .*, up \([0-9.]*\) s, .*/\1 s/p' /tmp/disk-$l.txt)"
done
[ $failures -eq 0 ]
