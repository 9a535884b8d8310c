# The guest fuzzer (Bochs, VMX): kvm-guest-fuzz runs COUNT random guests (random instruction
# bytes, modes, page tables, descriptor tables, MSRs, events and I/O answers; see the program's
# header) on DEVICE while a host workload (a shell counting in a loop) runs beside it. Passes if
# the fuzzer ran to its summary, the workload kept counting throughout, the kernel logged no
# oops, BUG, WARNING, lockdep report, hung task, soft lockup or RCU stall, and the module
# unloads afterwards (nothing leaked a reference).
#
#   sh /root/fuzz.sh SEED COUNT [DEVICE]      (DEVICE /dev/rvmx by default, or /dev/kvm)
#
# A failure reproduces with `kvm-guest-fuzz DEVICE SEED COUNT` (the last `batch` line printed
# before a host died says which 256 guests were running; add --start I --verbose to see each).
. /root/lib.sh

seed=${1:?usage: fuzz.sh SEED COUNT [DEVICE]} count=${2:?usage: fuzz.sh SEED COUNT [DEVICE]}
dev=${3:-/dev/rvmx}
case "$dev" in
/dev/kvm) [ -c /dev/kvm ] || kvm-load ;;
esac

clear_log

workload_start

echo "    kvm-guest-fuzz $dev $seed $count (reproduce with the same command)"
# stdout (the summary) to a file; stderr (a `batch` line every 256 guests, any panic) to the
# console, so a log whose host died says where the fuzzer was.
kvm-guest-fuzz "$dev" "$seed" "$count" > /tmp/fuzz.out
status=$?
workload_stop

sed 's/^/    /' /tmp/fuzz.out
echo "    workload samples (uptime, count): $(tr '\n' ';' < /tmp/samples)"

ran_to_end() {
	[ $status -eq 0 ] || { echo "kvm-guest-fuzz exited with status $status"; tail -n 20 /tmp/fuzz.out; return 1; }
	grep -q "^summary seed $seed start 0 guests $count " /tmp/fuzz.out || { echo "no summary for $count guests"; return 1; }
}
check "fuzz: kvm-guest-fuzz $dev $seed $count ran every guest to the end" ran_to_end

check "fuzz: the host workload kept counting throughout" workload_kept_running

check "fuzz: no oops, BUG, WARNING, lockdep report, hung task, lockup or RCU stall in the kernel log" kernel_log_quiet

case "$dev" in
/dev/kvm) check "fuzz: kvm_intel unloads afterwards" rmmod kvm_intel ;;
*) check "fuzz: rvmx unloads afterwards (no leaked reference)" rmmod rvmx ;;
esac

[ $failures -eq 0 ]
