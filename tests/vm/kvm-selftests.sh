# Linux's own KVM selftests (built by scripts/build-kvm-selftests) on rvmx and on KVM in the same
# boot. The selftests open /dev/kvm by name and read kvm.ko's parameters, so for rvmx: kvm.ko
# is loaded without kvm_intel (its parameters, no /dev/kvm of its own), then rvmx (every x86
# VM the selftests create has the full in-kernel irqchip), and /dev/kvm is made rvmx's node. Each test runs with a time limit; its result is PASS (exit 0), SKIP (4, a
# capability missing), FAIL or TIMEOUT. Prints one `SELFTEST name kvm=R rvmx=R` line per test,
# and checks that every test LIST records as passing on rvmx still passes.
#
#   sh /root/kvm-selftests.sh SECONDS LIST     (LIST: tests/kvm-selftests.list's format;
#                                               binaries in /root/kvm-selftests/)
. /root/lib.sh

limit=${1:?usage: kvm-selftests.sh SECONDS LIST}
list=${2:?usage: kvm-selftests.sh SECONDS LIST}
set -- $(grep -v '^#' "$list" | cut -d' ' -f1)
dir=/root/kvm-selftests

run_one() {
	# KILL: a test stuck in the kernel ignores TERM.
	timeout -s KILL "$limit" "$dir/$1" > "/tmp/st-$2-$1.log" 2>&1 < /dev/null
	case $? in
	0) echo PASS ;;
	4) echo SKIP ;;
	124|143|137) echo TIMEOUT ;;
	*) echo FAIL ;;
	esac
}

# run_all BACKEND TEST...: every test on BACKEND (rvmx or kvm), results in /tmp/st-BACKEND.
run_all() {
	backend=$1; shift
	for t in "$@"; do
		r=$(run_one "$t" "$backend")
		echo "$t $r" >> "/tmp/st-$backend"
		echo "    $backend $t: $r"
	done
}

# rvmx first (kvm.ko's parameters, rvmx's node as /dev/kvm), then KVM itself.
rmmod rvmx 2>/dev/null
insmod /lib/modules/irqbypass.ko && insmod /lib/modules/kvm.ko || { echo "kvm.ko did not load"; exit 1; }
insmod /lib/rvmx/rvmx.ko || { echo "rvmx did not load"; exit 1; }
rm -f /dev/kvm
mknod /dev/kvm c "$(cut -d: -f1 /sys/class/misc/rvmx/dev)" "$(cut -d: -f2 /sys/class/misc/rvmx/dev)"
clear_log
run_all rvmx "$@"
check "selftests: the host logged nothing while they ran on rvmx" kernel_log_quiet
rm -f /dev/kvm
rmmod rvmx && insmod /lib/modules/kvm-intel.ko || { echo "kvm_intel did not load"; exit 1; }
run_all kvm "$@"
for t in "$@"; do
	echo "SELFTEST $t kvm=$(grep "^$t " /tmp/st-kvm | cut -d' ' -f2) rvmx=$(grep "^$t " /tmp/st-rvmx | cut -d' ' -f2)"
done
for t in $(awk '!/^#/ && $3 == "PASS" { print $1 }' "$list"); do
	check "selftests: $t passes on rvmx (as recorded)" grep -qx "$t PASS" /tmp/st-rvmx
done
# The first lines of each rvmx failure, for the reader of the log.
for t in "$@"; do
	case "$(grep "^$t " /tmp/st-rvmx | cut -d' ' -f2)" in
	PASS) ;;
	*) echo "--- rvmx $t:"; grep -v '^$' "/tmp/st-rvmx-$t.log" | tail -n 6 | sed 's/^/    /' ;;
	esac
done
[ $failures -eq 0 ]
