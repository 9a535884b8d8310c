# Helpers for the in-VM test scripts (busybox sh). Each check prints one line,
# "PASS name [uptime]" or "FAIL name [uptime]" followed by the failing command's output;
# tests/run counts them. The guest uptime shows where a suite spends its (emulated) time.
failures=0

# check NAME COMMAND...: run COMMAND, PASS if it exits 0.
check() {
	name=$1; shift
	echo "RUN $name"   # a check that hangs the VM is the last RUN without a result
	if out=$("$@" 2>&1); then
		echo "PASS $name [$(cut -d' ' -f1 /proc/uptime)s]"
	else
		echo "FAIL $name [$(cut -d' ' -f1 /proc/uptime)s]"
		printf '%s\n' "$out" | tail -n 20 | sed 's/^/    /'
		failures=$((failures + 1))
	fi
}

# reference COMMAND...: one of KVM's reference runs, once more if it fails, saying so. kvm_intel
# in Bochs at times stalls a guest's vCPU for tens of seconds (a soft lockup in the guest's log:
# QEMU's Debian boot, 2026-12; rvmx run's disk boot, CI 2026-12-07). rvmx's runs never get a
# second try.
reference() {
	"$@" > /tmp/ref-out 2>&1 && { cat /tmp/ref-out; return 0; }
	echo "KVM's run failed; once more (its first output's tail below):"; tail -n 8 /tmp/ref-out
	"$@"
}

# What a Linux guest's boot log must not say about `rvmx run`'s machine or the hypervisor: a
# kernel problem, or a complaint about its firmware tables, PCI, the i8042 or the 8259s' ELCR.
MACHINE_COMPLAINTS="Call Trace|WARNING|BUG|unchecked MSR|Stale (ISR|IRR)|spurious|ACPI (BIOS )?(Error|Warning)|BIOS bug|PCI: Fatal|i8042: Can't|setting ELCR"

# expect_fail_with TEXT COMMAND...: COMMAND must fail and print TEXT.
expect_fail_with() {
	text=$1; shift
	if out=$("$@" 2>&1); then echo "unexpectedly succeeded: $out"; return 1; fi
	case "$out" in *"$text"*) return 0 ;; esac
	echo "failed without '$text': $out"; return 1
}

# dmesg_has TEXT: the kernel log contains TEXT.
dmesg_has() { dmesg | grep -qF -- "$1" || { echo "not in dmesg: $1"; dmesg | tail -n 5; return 1; }; }

# loaded MODULE: MODULE is in /proc/modules.
loaded() { grep -q "^$1 " /proc/modules; }

# Fresh kernel log, so the next dmesg_has sees only what follows.
clear_log() { dmesg -c >/dev/null; }

# A host workload for the fuzzers: a shell counting in a loop, and a sampler recording
# (uptime, count) in /tmp/samples every 5 s of guest time. workload_start before the fuzzer,
# workload_stop after it, then check workload_kept_running.
workload_counter() { # the workload's count (the file may be caught mid-rewrite: read again)
	v=; n=0
	while [ -z "$v" ] && [ $n -lt 100 ]; do v=$(cat /tmp/counter 2>/dev/null); n=$((n + 1)); done
	echo "${v:-0}"
}
workload_sample() { echo "$(cut -d' ' -f1 /proc/uptime) $(workload_counter)" >> /tmp/samples; }
workload_start() {
	rm -f /tmp/counter /tmp/samples
	sh -c 'i=0; while :; do i=$((i + 1)); echo $i > /tmp/counter; done' &
	workload=$!
	while [ ! -s /tmp/counter ]; do sleep 1; done
	workload_sample
	(while :; do sleep 5; workload_sample; done) &
	sampler=$!
}
workload_stop() {
	workload_sample
	kill $sampler $workload
	wait $sampler $workload 2>/dev/null
}
# Every sample (the empty-line reads count as 0 and fail) above the one before.
workload_kept_running() {
	prev=-1 n=0
	while read -r t c; do
		[ -n "$c" ] && [ "$c" -gt "$prev" ] || { echo "workload stalled at ${t}s: count $c after $prev"; return 1; }
		prev=$c n=$((n + 1))
	done < /tmp/samples
	[ $n -ge 2 ] || { echo "only $n samples"; return 1; }
	echo "$n samples, last count $prev"
}

# The kernel logged nothing a fuzzer must never cause: oops, BUG, WARNING, sanitizer (KASAN,
# UBSAN, KFENCE) or kmemleak report, lockdep report, hung task, lockup, RCU stall, sleeping in
# atomic context. Prints the log's tail if it did.
kernel_log_quiet() {
	if dmesg | grep -Ei 'oops|BUG:|WARNING:|KASAN|UBSAN|KFENCE|kmemleak: .*(new suspected|leak)|lockdep|possible (recursive|circular)|circular locking|inconsistent lock|hung task|blocked for more than|rcu.*stall|soft lockup|hard lockup|general protection|Call Trace|kernel panic|sleeping function called'; then
		dmesg | tail -n 60
		return 1
	fi
}
