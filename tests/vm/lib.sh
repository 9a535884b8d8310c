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
