# The security suite (Bochs, VMX): hostile guests on rvmx and on KVM in the same boot, and
# rvmx's speculative-execution protections against the host's own vulnerability state.
# tests/run runs it twice: on the default test kernel (no mitigations compiled in, booted with
# mitigations=off) and on the mitigations kernel (vm-run --kernel mitigations).
. /root/lib.sh

# The emulator first: a task's AVX state must survive context switches in the test VM itself,
# or an FPU failure later on would be the emulator's, not rvmx's (scripts/vm-run's --cpu).
check "emulator: a task keeps its AVX state across context switches (no hypervisor involved)" fpu-context-check 20000

# The msr driver: the hostile check reads the host's own IA32_SPEC_CTRL through it.
insmod /lib/modules/msr.ko 2>/dev/null
vuln() { cat "/sys/devices/system/cpu/vulnerabilities/$1" 2>/dev/null || echo "absent"; }
echo "    host: mds: $(vuln mds); spectre_v2: $(vuln spectre_v2); l1tf: $(vuln l1tf); vmscape: $(vuln vmscape)"

# What the host's vulnerability files say rvmx must do around guests (as KVM would on this
# host), read independently of the module's own choice.
expected_plan() {
	verw=no rsb=no l1d=no ibpb_user=no
	for f in mds tsx_async_abort mmio_stale_data reg_file_data_sampling; do
		case "$(vuln $f)" in *"Clear CPU buffers"*) verw=yes ;; esac
	done
	# The kernel's choice (spectre_v2_determine_rsb_fill_type_at_vmexit): the full fill after
	# retpolines, LFENCE or legacy IBRS; with enhanced IBRS only the one-entry sequence, and
	# only where the CPU has the PBRSB bug.
	v2=$(vuln spectre_v2)
	case "$v2" in
	*"Enhanced / Automatic IBRS"*) case "$v2" in *"PBRSB-eIBRS: SW sequence"*) rsb=lite ;; esac ;;
	*"Mitigation: Retpolines"*|*"Vulnerable: LFENCE"*|*"Mitigation: IBRS"*) rsb=full ;;
	esac
	# PTE inversion shows even with mitigations off: the L1D flush follows the bug and the
	# command line (KVM's default "cond" mode unless mitigations are off).
	case "$(vuln l1tf)" in "Not affected"|absent) ;; *) grep -qw 'mitigations=off' /proc/cmdline || l1d=yes ;; esac
	case "$(vuln vmscape)" in *"IBPB before exit to userspace"*) ibpb_user=yes ;; esac
	echo "verw $verw rsb_fill $rsb l1d $l1d ibpb_exit_to_user $ibpb_user"
}

mitig() { sed -n "s/^$1 \(.*\)$/\1/p" /sys/kernel/debug/rvmx/mitigations; }
count() { mitig "count $1"; }

plan_matches() {
	want=$(expected_plan)
	l1d=$(mitig "plan l1d_flush"); case "$l1d" in cond-*) l1d=yes ;; esac
	got="verw $(mitig 'plan verw') rsb_fill $(mitig 'plan rsb_fill') l1d $l1d ibpb_exit_to_user $(mitig 'plan ibpb_exit_to_user')"
	cat /sys/kernel/debug/rvmx/mitigations
	echo "expected from the vulnerability files: $want"
	[ "$want" = "$got" ]
}
check "mitigations: rvmx's plan (debugfs rvmx/mitigations) is what the host's vulnerability files call for" plan_matches
grep '^plan' /sys/kernel/debug/rvmx/mitigations > /tmp/plan

clear_log
for c in entries verw rsb_fill l1d_flush ibpb_exit_to_user; do eval "before_$c=\$(count $c)"; done
check "hostile: kvm-hostile-check on /dev/rvmx runs to the end" sh -c 'kvm-hostile-check /dev/rvmx > /tmp/hostile-rvmx'
# Bochs' emulated clock now and then makes the clocksource watchdog complain: not rvmx's.
host_quiet() {
	dmesg | grep -v 'clocksource' > /tmp/hostile-dmesg
	[ ! -s /tmp/hostile-dmesg ] || { cat /tmp/hostile-dmesg; return 1; }
}
check "hostile: the host logged nothing while the hostile guests ran on rvmx" host_quiet
check "hostile: the VMM's own PKRU, hardware watchpoint and signal mask are unchanged" sh -c '
	grep -qx "vmm pkru unchanged true" /tmp/hostile-rvmx && grep -qx "vmm watchpoint fires true" /tmp/hostile-rvmx &&
	grep -qx "vmm sigmask unchanged true" /tmp/hostile-rvmx'
# Where the CPU has the MSR (IBRS), the msr driver must have read a value for it to count.
check "hostile: the host's IA32_SPEC_CTRL on the guest's CPU is its own again after guests set theirs" sh -c '
	grep -qx "msr_supported spec_ctrl host_unchanged true" /tmp/hostile-rvmx &&
	{ ! grep -qw ibrs /proc/cpuinfo || grep -q "^info spec_ctrl host Some" /tmp/hostile-rvmx; }'

steps_ran() {
	for c in entries verw rsb_fill l1d_flush ibpb_exit_to_user; do
		eval "d_$c=\$(( \$(count $c) - before_$c ))"
	done
	echo "during the hostile guests: $d_entries entries, $d_verw VERW, $d_rsb_fill RSB fills, $d_l1d_flush L1D flushes, $d_ibpb_exit_to_user IBPBs before user space" | tee /tmp/steps
	[ "$d_entries" -gt 0 ] || return 1
	case "$(mitig 'plan verw')" in yes) [ "$d_verw" = "$d_entries" ] ;; *) [ "$d_verw" = 0 ] ;; esac || return 1
	case "$(mitig 'plan rsb_fill')" in no) [ "$d_rsb_fill" = 0 ] ;; *) [ "$d_rsb_fill" = "$d_entries" ] ;; esac || return 1
	case "$(mitig 'plan l1d_flush')" in
	no) [ "$d_l1d_flush" = 0 ] ;;
	*) [ "$d_l1d_flush" -gt 0 ] && [ "$d_l1d_flush" -le "$d_entries" ] ;;
	esac || return 1
	case "$(mitig 'plan ibpb_exit_to_user')" in yes) [ "$d_ibpb_exit_to_user" -gt 0 ] ;; *) [ "$d_ibpb_exit_to_user" = 0 ] ;; esac
}
check "mitigations: the entry stub ran each planned step on every entry or exit, and no other" steps_ran
# Found by make fuzz: a guest whose every entry exits again at once (an exception loop rvmx
# reflects) spent no guest time, so the preemption timer never ended its window and the CPU
# stayed with interrupts off. Windows are now bounded by host time too.
check "fuzz regressions: batch 313 of seed 1205 (guest 80343 never runs guest code) ends" \
	sh -c 'kvm-guest-fuzz /dev/rvmx 1205 256 --start 80128 > /dev/null'

check "hostile: kvm_intel takes over (rvmx unloaded)" sh -c 'rmmod rvmx && kvm-load && [ -c /dev/kvm ]'
check "hostile: the same guests on /dev/kvm" sh -c 'kvm-hostile-check /dev/kvm > /tmp/hostile-kvm'
hostile_same() {
	grep -v '^info ' /tmp/hostile-kvm > /tmp/a
	grep -v '^info ' /tmp/hostile-rvmx | diff /tmp/a -
}
check "hostile: every answer identical to KVM's (exceptions, values, exits, errnos)" hostile_same
rmmod kvm_intel; rmmod kvm; rmmod irqbypass
echo "    rvmx's plan: $(tr '\n' ' ' < /tmp/plan)"
sed 's/^/    /' /tmp/steps 2>/dev/null

[ $failures -eq 0 ]
