# The ioctl fuzzer (Bochs, VMX): kvm-ioctl-fuzz makes CALLS random calls over the system, VM
# and vCPU fds of DEVICE (random ioctls and arguments, bad pointers, fds created, closed,
# dup'd and used from forked children, slot memory and kvm_run unmapped, vCPUs run by threads
# while slots change; see the program's header) while a host workload (a shell counting in a
# loop) runs beside it. Passes if the fuzzer ran to its summary with no finding (a hang or a
# child killed by a signal it did not send), the workload kept counting, the kernel logged no
# oops, BUG, WARNING, KASAN/UBSAN/KFENCE report, lockdep report, hung task, soft lockup or RCU
# stall, kmemleak (on kernels that have it: vm-run --kernel debug) finds no leaked object
# allocated by the module, the module unloads, and every page pinned with FOLL_PIN was
# unpinned (/proc/vmstat nr_foll_pin_acquired = nr_foll_pin_released).
#
#   sh /root/ioctl-fuzz.sh SEED CALLS [DEVICE]      (DEVICE /dev/rvmx by default, or /dev/kvm)
#
# A failure reproduces with `kvm-ioctl-fuzz DEVICE SEED CALLS`; the last `batch` line printed
# before a host died, or the FINDING line, says which batch of 1000 calls to replay with
# `kvm-ioctl-fuzz DEVICE SEED 1000 --start N --verbose`.
. /root/lib.sh

seed=${1:?usage: ioctl-fuzz.sh SEED CALLS [DEVICE]} calls=${2:?usage: ioctl-fuzz.sh SEED CALLS [DEVICE]}
dev=${3:-/dev/rvmx}
case "$dev" in
/dev/kvm) [ -c /dev/kvm ] || kvm-load; module=kvm_intel ;;
*) module=rvmx ;;
esac

clear_log
kmemleak=/sys/kernel/debug/kmemleak
# Forget what kmemleak suspected before the run (boot-time objects).
[ -w $kmemleak ] && echo clear > $kmemleak

workload_start

# IOCTL_FUZZ_START=N: calls N..N+CALLS (a long campaign in chunks, one boot each).
echo "    kvm-ioctl-fuzz $dev $seed $calls${IOCTL_FUZZ_START:+ --start $IOCTL_FUZZ_START} (reproduce with the same command)"
# stdout (findings, counts, the summary) to a file; stderr (a `batch` line every 1000 calls,
# findings) to the console, so a log whose host died says where the fuzzer was.
start=$(cut -d' ' -f1 /proc/uptime)
# IOCTL_FUZZ_TRACE=FILE: also write the per-call trace (kvm-ioctl-fuzz --trace, --compare).
kvm-ioctl-fuzz "$dev" "$seed" "$calls" ${IOCTL_FUZZ_START:+--start "$IOCTL_FUZZ_START"} \
	${IOCTL_FUZZ_TRACE:+--trace "$IOCTL_FUZZ_TRACE"} > /tmp/ioctl-fuzz.out
status=$?
echo "    fuzzer ran ${start}s..$(cut -d' ' -f1 /proc/uptime)s (guest uptime)"
workload_stop

sed 's/^/    /' /tmp/ioctl-fuzz.out
echo "    workload samples (uptime, count): $(tr '\n' ';' < /tmp/samples)"

ran_to_end() {
	[ $status -eq 0 ] || { echo "kvm-ioctl-fuzz exited with status $status"; tail -n 20 /tmp/ioctl-fuzz.out; return 1; }
	grep -q "^summary seed $seed start 0 calls $calls " /tmp/ioctl-fuzz.out || { echo "no summary for $calls calls"; return 1; }
}
check "ioctl-fuzz: kvm-ioctl-fuzz $dev $seed $calls ran every call to the end" ran_to_end

no_findings() {
	! grep '^FINDING' /tmp/ioctl-fuzz.out
}
check "ioctl-fuzz: no hang and no child killed by a signal the fuzzer did not send" no_findings

check "ioctl-fuzz: the host workload kept counting throughout" workload_kept_running

check "ioctl-fuzz: no oops, BUG, WARNING, sanitizer or lockdep report, hung task, lockup or RCU stall in the kernel log" kernel_log_quiet

# kmemleak: objects reported are at least 5 s old; scan twice (its own advice) and keep only
# the objects whose allocation backtrace names the module.
no_module_leaks() {
	sleep 6
	echo scan > $kmemleak; echo scan > $kmemleak
	cat $kmemleak > /tmp/kmemleak.txt
	total=$(grep -c '^unreferenced object' /tmp/kmemleak.txt)
	awk -v m="[$module]" '/^unreferenced object/ { if (hit) printf "%s", obj; obj = ""; hit = 0 }
		{ obj = obj $0 "\n"; if (index($0, m)) hit = 1 } END { if (hit) printf "%s", obj }' /tmp/kmemleak.txt > /tmp/kmemleak.module
	echo "kmemleak: $total unreferenced objects in all, $(grep -c '^unreferenced object' /tmp/kmemleak.module) from $module"
	[ ! -s /tmp/kmemleak.module ] || { head -n 60 /tmp/kmemleak.module; return 1; }
}
if [ -r $kmemleak ]; then
	check "ioctl-fuzz: kmemleak finds no leaked object allocated by $module" no_module_leaks
fi

case "$dev" in
/dev/kvm) check "ioctl-fuzz: kvm_intel unloads afterwards" rmmod kvm_intel ;;
*) check "ioctl-fuzz: rvmx unloads afterwards (no leaked reference)" rmmod rvmx ;;
esac

pins_balance() {
	a=$(sed -n 's/^nr_foll_pin_acquired //p' /proc/vmstat) r=$(sed -n 's/^nr_foll_pin_released //p' /proc/vmstat)
	[ -n "$a" ] || { echo "no nr_foll_pin_acquired in /proc/vmstat"; return 1; }
	echo "nr_foll_pin_acquired $a nr_foll_pin_released $r"
	[ "$a" = "$r" ]
}
check "ioctl-fuzz: every pinned page was unpinned (nr_foll_pin_acquired = nr_foll_pin_released)" pins_balance

[ $failures -eq 0 ]
