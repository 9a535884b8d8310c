# The main in-VM suite (Bochs, VMX): loading, the system fd's ABI against KVM's, lifetimes,
# CPU hotplug and coexistence with kvm_intel. Run by tests/run via scripts/vm-run --module rvmx.
. /root/lib.sh
insmod /lib/modules/msr.ko

check "load: rvmx.ko proves VMX on both CPUs" dmesg_has "rvmx: VMX ready on 2 CPUs: VMCS revision"
check "load: no error logged" sh -c '! dmesg | grep -E "rvmx: .*(fail|error|missing)"'
check "load: /dev/rvmx is a character device, mode 0600" \
	sh -c '[ -c /dev/rvmx ] && [ "$(stat -c %a /dev/rvmx)" = 600 ]'

check "tool: rvmx info on /dev/rvmx" sh -c 'rvmx info > /tmp/info-rvmx && cat /tmp/info-rvmx &&
	grep -q "^API version: *12$" /tmp/info-rvmx &&
	grep -q "^vCPU mmap size: *12288 bytes$" /tmp/info-rvmx &&
	grep -q "^host VMX: *VMCS revision 0x" /tmp/info-rvmx'
check "tool: missing device is one readable line and exit 1" \
	expect_fail_with "no such device (is the module loaded?" rvmx info --device /dev/nonexistent

# rvmx run: one raw image, one entry point per way a guest can end (tests/guests/flat-hello.S).
# By default the local APICs are in the kernel (split irqchip); `--irqchip user` keeps them in
# the tool, as before, and is tested below too.
tool_run() { # tool_run LABEL WANTED-STATUS STDERR-TEXT ARGS...: stdout in /tmp/run-LABEL.out
	label=$1 want=$2 text=$3; shift 3
	rvmx run "$@" > /tmp/run-$label.out 2> /tmp/run-$label.err; status=$?
	cat /tmp/run-$label.out /tmp/run-$label.err
	[ $status = "$want" ] || { echo "exit status $status, wanted $want"; return 1; }
	grep -qF -- "$text" /tmp/run-$label.err || { echo "no '$text' on stderr"; return 1; }
}
hello_run() { # hello_run LABEL DEVICE
	tool_run "$1" 42 "guest exited with status 42" --device "$2" --flat /root/flat-hello.bin --entry 0x1000 \
		--trace-exits && grep -qx "flat-hello: real mode, COM1 through rvmx run" /tmp/run-$1.out &&
		grep -q "^  io_out  *[1-9][0-9]*$" /tmp/run-$1.err
}
check "tool: rvmx run --flat shows the guest's COM1 output, ends with its debug-exit status (42), counts exits" \
	hello_run hello /dev/rvmx
# The module's own counters (debugfs) against what the tool saw come back from KVM_RUN.
stat_row() { # stat_row FILE LABEL: the total column of a row of rvmx's statistics table
	sed -n "s/^$2  *\([0-9][0-9]*\).*/\1/p" "$1" | head -n 1
}
stats_run() {
	rvmx run --flat /root/flat-hello.bin --entry 0x1000 --trace-exits --stats > /tmp/stats.out 2> /tmp/stats.err
	status=$?; cat /tmp/stats.err
	[ $status = 42 ] || { echo "exit status $status, wanted 42"; return 1; }
	grep -q "^VM [0-9]*-[0-9]* (1 vCPU)$" /tmp/stats.err || { echo "no table"; return 1; }
	# Every KVM_RUN the tool made came back once: the tool's count per reason is the module's.
	tool_total=$(sed -n '/exits by reason/,/statistics/s/^  [a-z_]* *\([0-9]*\)$/\1/p' /tmp/stats.err |
		awk '{ s += $1 } END { print s }')
	tool_unclaimed=$(sed -n 's/^  io_unclaimed *\([0-9]*\)$/\1/p' /tmp/stats.err)
	tool_io=$(sed -n 's/^  io_\(in\|out\) *\([0-9]*\)$/\2/p' /tmp/stats.err | awk '{ s += $1 } END { print s }')
	tool_user=$((tool_total - ${tool_unclaimed:-0}))
	echo "tool: $tool_user returns from KVM_RUN, $tool_io IO"
	[ "$(stat_row /tmp/stats.err 'KVM_RUN calls')" = "$tool_user" ] &&
	[ "$(stat_row /tmp/stats.err 'exits to userspace')" = "$tool_user" ] &&
	[ "$(stat_row /tmp/stats.err '  IO')" = "$tool_io" ] &&
	[ "$(stat_row /tmp/stats.err '  IO_INSTRUCTION')" -ge "$tool_io" ] &&
	[ "$(stat_row /tmp/stats.err 'VM exits')" -ge "$tool_user" ] &&
	[ "$(stat_row /tmp/stats.err 'VMX windows')" -ge "$tool_user" ] &&
	[ "$(stat_row /tmp/stats.err 'EPT faults (RAM mapped)')" -gt 0 ] &&
	[ "$(stat_row /tmp/stats.err '  EPT_VIOLATION')" -ge "$(stat_row /tmp/stats.err 'EPT faults (RAM mapped)')" ] &&
	[ "$(stat_row /tmp/stats.err 'TSC ticks in guest mode')" -gt 0 ] || { echo "counts disagree"; return 1; }
	# The VM's directory went with it.
	# (rvmx/mitigations is the module's own file, not a VM's.)
	[ -z "$(ls /sys/kernel/debug/rvmx | grep -vx mitigations)" ] || { echo "left behind:"; ls /sys/kernel/debug/rvmx; return 1; }
}
check "stats: rvmx run --stats: the module's debugfs counters equal the tool's own (KVM_RUN calls, returns by reason), exits by reason, EPT faults, windows, guest time; the VM's directory goes with it" \
	stats_run
# rvmx stat on a running VM: the COM1 echo guest waits in HLT for a line that comes later.
live_stat() {
	rm -f /tmp/in; mkfifo /tmp/in
	rvmx run --flat /root/flat-hello.bin --load 0x1000 --entry 0x1500 --console /tmp/live.out < /tmp/in 2> /tmp/live.err &
	pid=$!
	exec 4> /tmp/in
	i=0
	while [ -z "$(ls /sys/kernel/debug/rvmx 2> /dev/null | grep -vx mitigations)" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
	sleep 1
	rvmx stat > /tmp/stat-all.out 2>&1; r1=$?
	rvmx stat "$pid" > /tmp/stat-pid.out 2>&1; r2=$?
	rvmx stat 99999-0 > /tmp/stat-none.out 2>&1; r3=$?
	printf 'live\n' >&4; exec 4>&-
	wait $pid; status=$?
	cat /tmp/stat-all.out /tmp/stat-none.out /tmp/live.err
	[ $status = 44 ] && [ $r1 = 0 ] && [ $r2 = 0 ] && [ $r3 = 1 ] || { echo "status $status, stat $r1 $r2 $r3"; return 1; }
	grep -q "^VM $pid-[0-9]* (1 vCPU)$" /tmp/stat-all.out && diff /tmp/stat-all.out /tmp/stat-pid.out > /dev/null &&
	[ "$(stat_row /tmp/stat-all.out '  HLT')" -ge 1 ] && grep -q "no VM 99999-0" /tmp/stat-none.out || return 1
	out=$(rvmx stat 2>&1); r=$?
	[ $r = 1 ] && echo "$out" | grep -q "no VM is running on rvmx"
}
check "stats: rvmx stat shows a running VM's counters (HLT exits while its guest waits for input), by PID too; clear errors for an unknown VM and when none runs" \
	live_stat
check "tool: rvmx run: a guest reset through the i8042 ends the VM with status 0" \
	tool_run reset 0 "guest reset the machine" --flat /root/flat-hello.bin --load 0x1000 --entry 0x1100
check "tool: rvmx run: a triple fault ends the VM with status 10" \
	tool_run triple 10 "triple fault" --flat /root/flat-hello.bin --load 0x1000 --entry 0x1200
timer_run() { # timer_run LABEL DEVICE [EXTRA-ARG]
	tool_run "$1" 43 "guest exited with status 43" --device "$2" ${3:-} --flat /root/flat-hello.bin --load 0x1000 \
		--entry 0x1400 --trace-exits &&
	grep -qx "flat-hello: 5 timer interrupts from the PIT through the PIC, woken from HLT" /tmp/run-$1.out
}
check "tool: rvmx run: the userspace PIT and PIC interrupt the guest (ExtINT through the in-kernel APIC's LINT0 with KVM_INTERRUPT, interrupt windows), waking it from HLT in the kernel" \
	timer_run timer /dev/rvmx
check "tool: rvmx run --irqchip user: the same through the userspace local APIC, waking it from HLT in userspace" \
	timer_run timer-user /dev/rvmx "--irqchip user"
check "tool: rvmx run: HLT with interrupts off ends the VM with status 0 (seen through KVM_GET_MP_STATE)" \
	tool_run halt 0 "guest halted" --flat /root/flat-hello.bin --load 0x1000 --entry 0x1300
check "tool: rvmx run --irqchip user: HLT with interrupts off ends the VM with status 0 (KVM_EXIT_HLT)" \
	tool_run halt-user 0 "guest halted" --irqchip user --flat /root/flat-hello.bin --load 0x1000 --entry 0x1300
idle_run() { # idle_run LABEL DEVICE [EXTRA-ARG]: HLT with interrupts on, nothing to wake it, input closed
	tool_run "$1" 0 "guest halted" --device "$2" ${3:-} --flat /root/flat-hello.bin --load 0x1000 --entry 0x1600 < /dev/null
}
check "tool: rvmx run: HLT with interrupts on and nothing to wake the CPU (no timer, input closed) ends the VM with status 0" \
	idle_run idle /dev/rvmx
check "tool: rvmx run --irqchip user: the same" idle_run idle-user /dev/rvmx "--irqchip user"
echo_run() { # echo_run LABEL DEVICE [EXTRA-ARG]: stdin reaches the guest's COM1 (IRQ4), output to --console
	printf 'ping pong\n' | rvmx run --device "$2" ${3:-} --flat /root/flat-hello.bin --load 0x1000 --entry 0x1500 \
		--console /tmp/echo-$1.out 2> /tmp/echo-$1.err; status=$?
	cat /tmp/echo-$1.out /tmp/echo-$1.err
	[ $status = 44 ] || { echo "exit status $status, wanted 44"; return 1; }
	grep -qx "flat-hello: read from COM1: ping pong" /tmp/echo-$1.out
}
check "tool: rvmx run: what stdin gives reaches the guest's COM1 by interrupt; --console takes its output" \
	echo_run echo /dev/rvmx
string_run() { # string_run LABEL DEVICE: REP INSB and REP OUTSB on COM1, one byte per access
	tool_run "$1" 45 "guest exited with status 45" --device "$2" --flat /root/flat-hello.bin --load 0x1000 --entry 0x1680 &&
	grep -qx 'flat-hello: REP OUTSB through rvmx run; REP INSB of the line status: ````' /tmp/run-$1.out
}
check "tool: rvmx run: REP OUTSB and REP INSB batches (one KVM_EXIT_IO of count > 1 each) reach COM1 one byte at a time" \
	string_run string /dev/rvmx
# --irqchip kernel: the whole interrupt controller and the PIT in the kernel, as Firecracker.
check "tool: rvmx run --irqchip kernel: the kernel's PIT and PIC interrupt the guest, waking it from HLT in the kernel" \
	timer_run timer-kernel /dev/rvmx "--irqchip kernel"
check "tool: rvmx run --irqchip kernel: COM1's input interrupt through an irqfd into the kernel's PIC" \
	echo_run echo-kernel /dev/rvmx "--irqchip kernel"
check "tool: rvmx run --irqchip kernel: HLT with interrupts on and nothing to wake the CPU ends the VM with status 0" \
	idle_run idle-kernel /dev/rvmx "--irqchip kernel"
# The project's own kernel as a guest of rvmx run: 8259/PIT in userspace, the local APICs in the
# kernel (or with --irqchip user in userspace), COM1 console, ACPI tables; init prints a marker
# with the CPU count and reboots. The guest's
# console goes to a file (its log is not this VM's).
# With END "poweroff" the guest's init powers off (ACPI S5) instead of rebooting.
linux_run() { # linux_run LABEL DEVICE CPUS [EXTRA-ARG [END]]
	case ${5:-reboot} in
	poweroff) extra=" rvmx-guest.poweroff" ended="guest powered off (ACPI S5)" ;;
	*) extra="" ended="guest reset the machine" ;;
	esac
	rvmx run ${4:-} --device "$2" --cpus "$3" --kernel /root/guest-bzImage --initrd /root/guest-initrd.cpio --mem 128M \
		--timeout 300 --trace-exits --cmdline "console=ttyS0 reboot=k panic=-1 tsc_early_khz=100000 nohz=off$extra" \
		< /dev/null > /tmp/linux-$1.out 2> /tmp/linux-$1.err; status=$?
	grep -E "^rvmx-guest:|Linux version|Run /init|smp: Brought up" /tmp/linux-$1.out | cut -c1-100
	cat /tmp/linux-$1.err
	[ $status = 0 ] || { echo "exit status $status, wanted 0"; tail -n 5 /tmp/linux-$1.out; return 1; }
	grep -q "$ended" /tmp/linux-$1.err &&
	grep -q "^rvmx-guest: Linux 7.3[^ ]* reached init, $3 CPU(s)" /tmp/linux-$1.out &&
	grep -q "smp: Brought up 1 node, $3 CPU" /tmp/linux-$1.out || return 1
	# The guest kernel itself saw nothing wrong with its machine (its firmware tables, PCI,
	# the i8042 included).
	! grep -E -A3 "$MACHINE_COMPLAINTS" /tmp/linux-$1.out
}
boot_time() { # boot_time LABEL: the guest's uptime when its init ran
	tr -d '\r' < /tmp/linux-$1.out | sed -n "s/^rvmx-guest: .*, up \([0-9.]*\) s$/\1 s/p"
}
check "tool: rvmx run --kernel --cpus 2 boots the project's Linux 7.3 to init (marker), which starts its second CPU (INIT/STARTUP through the in-kernel local APICs); its reboot ends the VM with status 0" \
	linux_run rvmx-smp /dev/rvmx 2 --stats
check "tool: rvmx run --irqchip user --kernel --cpus 2: the same boot with the local APICs in userspace (INIT/STARTUP, timer, IPIs as MMIO exits)" \
	linux_run rvmx-smp-user /dev/rvmx 2 "--irqchip user"
# With the kernel's irqchip the MADT (and an MP table) lists its IOAPIC (KVM's version 0x11,
# after the CPUs), and the guest uses it (no noapic).
ioapic_listed() { # ioapic_listed LABEL
	grep -q "IOAPIC\[0\]: apic_id 2, version 17, address 0xfec00000, GSI 0-23" /tmp/linux-$1.out &&
	! grep -E "Kernel command line:.*noapic|Skipping IOAPIC probe" /tmp/linux-$1.out
}
check "tool: rvmx run --irqchip kernel --kernel --cpus 2: the same boot with the PIC, IOAPIC, PIT and local APICs in the kernel; the guest's poweroff (ACPI S5) ends the VM with status 0" \
	linux_run rvmx-smp-kernel /dev/rvmx 2 "--irqchip kernel" poweroff
check "tool: ... the guest found the kernel's IOAPIC in the ACPI tables and uses it" ioapic_listed rvmx-smp-kernel
acpi_used() { # acpi_used LABEL: the CPUs came from the MADT (the MP table is only there with an I/O APIC)
	grep -q "ACPI: RSDP 0x00000000000E0000" /tmp/linux-$1.out &&
	grep -E -q "ACPI: Using ACPI (\(MADT\) for SMP|for processor \(LAPIC\))" /tmp/linux-$1.out
}
check "tool: the guest found rvmx run's ACPI tables and took its CPUs from the MADT (split irqchip)" acpi_used rvmx-smp
check "tool: ... the same with the kernel's irqchip" acpi_used rvmx-smp-kernel
linux_stats() { # both vCPUs ran, the second one took exits of its own
	grep -q "^VM [0-9]*-[0-9]* (2 vCPUs)$" /tmp/linux-rvmx-smp.err &&
	sed -n 's/^  CPUID  *\([0-9]*\)  *\([0-9]*\)  *\([0-9]*\)$/\2 \3/p' /tmp/linux-rvmx-smp.err | grep -q '^[1-9][0-9]* [1-9][0-9]*$' &&
	[ "$(stat_row /tmp/linux-rvmx-smp.err 'EPT faults (RAM mapped)')" -gt 100 ]
}
check "stats: the Linux guest's per-vCPU counters: CPUID exits on both vCPUs, EPT faults" linux_stats

bad_inputs() {
	out=$(rvmx run --flat /nonexistent --entry 0 2>&1); r=$?
	echo "$out"; [ $r = 1 ] && echo "$out" | grep -q "^rvmx: /nonexistent: No such file" || return 1
	out=$(rvmx run --flat /root/flat-hello.bin --entry 0x1000 --mem 12X 2>&1); r=$?
	echo "$out"; [ $r = 2 ] && echo "$out" | grep -q "not a memory size" || return 1
	out=$(rvmx run --flat /root/flat-hello.bin --entry 0x1000 --mem 4K 2>&1); r=$?
	echo "$out"; [ $r = 1 ] && echo "$out" | grep -q "does not fit"
}
check "tool: rvmx run: a missing image, a bad size, an image too big: one clear line each" bad_inputs

check "abi: kvm-abi-check on /dev/rvmx" sh -c 'kvm-abi-check /dev/rvmx > /tmp/abi-rvmx'
check "vm: kvm-ioctls client creates a VM, slots and a vCPU on /dev/rvmx" \
	sh -c 'kvm-vm-check /dev/rvmx > /tmp/vm-rvmx'
check "run: guests in real, 32-bit protected and 64-bit long mode run on /dev/rvmx" \
	sh -c 'kvm-run-check /dev/rvmx --if0-spin > /tmp/run-rvmx'
check "conformance: hypercalls, OUT 0x7e, moved port completions, kvm_run.cr8, KVM_IRQ_LINE, SET_CPUID2 after a run, on /dev/rvmx" \
	sh -c 'kvm-conformance-check /dev/rvmx > /tmp/conf-rvmx'
# kvmclock on a host whose clocksource is the TSC (the test VM's) and on one where it is not.
on_hpet() { # on_hpet COMMAND...: COMMAND with the HPET as the host's clocksource
	cs=/sys/devices/system/clocksource/clocksource0/current_clocksource
	echo hpet > $cs || return 1
	"$@"; r=$?
	echo tsc > $cs && return $r
}
check "clock: kvmclock on /dev/rvmx: KVM_GET/SET_CLOCK, a guest's time and wall-clock pages" \
	sh -c 'kvm-clock-check /dev/rvmx > /tmp/clock-rvmx'
check "clock: the same with the host's clocksource the HPET (no stable TSC) on /dev/rvmx" \
	on_hpet sh -c 'kvm-clock-check /dev/rvmx > /tmp/clockh-rvmx'
with_params() { # with_params PARAM=VALUE COMMAND...: COMMAND with rvmx reloaded with that parameter
	p=$1; shift
	rmmod rvmx && insmod /lib/rvmx/rvmx.ko "$p" || return 1
	"$@"; r=$?
	rmmod rvmx && insmod /lib/rvmx/rvmx.ko && return $r
}
check "lapic: the in-kernel local APIC's registers (split irqchip) on /dev/rvmx" \
	sh -c 'kvm-lapic-check /dev/rvmx > /tmp/lapic-rvmx'
check "mmio: MMIO, read-only slots and string I/O guests run on /dev/rvmx" \
	sh -c 'kvm-mmio-check /dev/rvmx > /tmp/mmio-rvmx'
check "coalesced: zones of MMIO and ports fill the ring page on /dev/rvmx" \
	sh -c 'kvm-coalesced-check /dev/rvmx > /tmp/coal-rvmx'
check "irqchip: the in-kernel PIC pair and IOAPIC (KVM_CREATE_IRQCHIP) on /dev/rvmx" \
	sh -c 'kvm-irqchip-check /dev/rvmx > /tmp/chip-rvmx'
# Two checks compare with KVM what depends on how many EPT faults a guest takes: IDT-vectoring
# reinjection (deliveries onto stack pages EPT does not map yet) and a debugger's single steps
# (a step that faults is reported again, by KVM too). They run with one page mapped per EPT
# fault (fault_around=1), as KVM maps them.
one_page_per_fault() { with_params fault_around=1 "$@"; }
check "cpu state: XCR0 (XSETBV), AVX registers across exits, XSAVE/XCRS/DEBUGREGS ioctls, MOV DR on /dev/rvmx" \
	one_page_per_fault sh -c 'kvm-cpu-state-check /dev/rvmx > /tmp/cs-rvmx'
check "irq: interrupt/NMI injection, windows, shadows, reinjection, VCPU_EVENTS, CR8 on /dev/rvmx" \
	one_page_per_fault sh -c 'kvm-irq-check /dev/rvmx > /tmp/irq-rvmx'
check "smm: SMIs (KVM_SMI, a self-SMI IPI, one latched in SMM), SMRAM in address space 1, the save-state map, RSM on /dev/rvmx" \
	sh -c 'kvm-smm-check /dev/rvmx > /tmp/smm-rvmx'
# Fault-around maps the neighbours of a first touch where the guest touches memory in order
# (a Linux boot: fewer EPT faults than one page per fault), and an isolated touch's page alone
# (the flat guest's few pages: as many faults either way), as KVM maps it.
fault_around() {
	one_page_per_fault linux_run rvmx-one-page /dev/rvmx 2 --stats > /dev/null || { cat /tmp/linux-rvmx-one-page.err; return 1; }
	one=$(stat_row /tmp/linux-rvmx-one-page.err 'EPT faults (RAM mapped)') around=$(stat_row /tmp/linux-rvmx-smp.err 'EPT faults (RAM mapped)')
	echo "Linux boot, EPT faults: $one with fault_around=1, $around with the default (16)"
	[ "$around" -ge 1 ] && [ $((around * 2)) -lt "$one" ] || return 1
	one_page_per_fault sh -c 'rvmx run --flat /root/flat-hello.bin --entry 0x1000 --stats > /dev/null 2> /tmp/stats-1.err'
	[ $? = 42 ] || { cat /tmp/stats-1.err; return 1; }
	one=$(stat_row /tmp/stats-1.err 'EPT faults (RAM mapped)') around=$(stat_row /tmp/stats.err 'EPT faults (RAM mapped)')
	echo "flat guest, EPT faults: $one with fault_around=1, $around with the default"
	[ "$one" = "$around" ]
}
check "memory: fault-around (module parameter fault_around, default 16 pages) maps a Linux guest's first touches in fewer than half the EPT faults of one page per fault, and an isolated touch's page alone" \
	fault_around
check "memory: dirty-page logging, ioeventfds and machine-check injection on /dev/rvmx" \
	sh -c 'kvm-memory-check /dev/rvmx > /tmp/mem-rvmx'
# KVM's memory model: the guest sees what the VMM's mapping has behind a slot, whatever the VMM
# does to it, and nothing stays pinned; large guests and many slots (the VM has 2 GiB).
check "mm: guest memory follows the VMM's mapping (MAP_FIXED, MADV_DONTNEED, mprotect, munmap, fork, hole punch) on /dev/rvmx" \
	sh -c 'kvm-mm-check /dev/rvmx > /tmp/mm-rvmx'
check "mm: a guest touching 1.25 GiB of 4 GiB of slots, a 256 GiB dirty-logging slot, 1000 slots on /dev/rvmx" \
	sh -c 'kvm-mm-check /dev/rvmx large > /tmp/mml-rvmx && kvm-mm-check /dev/rvmx slots 1000 >> /tmp/mml-rvmx'
# KVM takes minutes in Bochs to create its 32764 slots: the full count runs on rvmx alone.
every_slot() {
	kvm-mm-check /dev/rvmx slots > /tmp/slots-rvmx; cat /tmp/slots-rvmx
	grep -qx "info slots max 32764" /tmp/slots-rvmx && grep -qx "slots created 32763 of 32763" /tmp/slots-rvmx &&
	grep -qx "slots one_more Err(22)" /tmp/slots-rvmx && grep -qx "slots deleted 32763" /tmp/slots-rvmx &&
	[ "$(sed -n 's/^slots sum //p' /tmp/slots-rvmx)" = "$(sed -n 's/^slots expected_sum //p' /tmp/slots-rvmx)" ]
}
check "mm: a VM with every slot KVM_CAP_NR_MEMSLOTS allows (32764), each touched by the guest, then deleted, on /dev/rvmx" every_slot
pins_balance() { # FOLL_PIN pins taken and released, system-wide, are equal (nothing left pinned)
	for try in 1 2 3 4 5; do # per-CPU counts reach /proc/vmstat within a second or so
		a=$(sed -n 's/^nr_foll_pin_acquired //p' /proc/vmstat) r=$(sed -n 's/^nr_foll_pin_released //p' /proc/vmstat)
		[ "$a" = "$r" ] && break
		sleep 1
	done
	echo "FOLL_PIN acquired $a released $r"; [ "$a" = "$r" ]
}
check "mm: no host page stays pinned once the guests are gone (FOLL_PIN counters balance)" pins_balance
check "smp: a BSP starts a second vCPU with INIT/SIPI through a userspace LAPIC model on /dev/rvmx" \
	sh -c 'kvm-smp-check /dev/rvmx > /tmp/smp-rvmx && cat /tmp/smp-rvmx && grep -qx "bsp io_out 0x10 \[00, 08, 00, 00\]" /tmp/smp-rvmx'

# QEMU 7.2 with kernel-irqchip=off (its PIC, PIT, LAPIC and UART in userspace): SeaBIOS, the
# multiboot option ROM, then mb-hello, which prints, takes timer interrupts and exits through
# isa-debug-exit (QEMU's status 1 is the guest's 0). QEMU 7.2 opens /dev/kvm only: on rvmx's
# turn that name is a node for rvmx's device.
qemu_guest() { # qemu_guest LABEL
	timeout 300 qemu-system-x86_64 -accel kvm,kernel-irqchip=off -M pc -m 32 -nodefaults \
		-vga none -display none -serial file:/tmp/qemu-serial-$1 -no-reboot \
		-device isa-debug-exit,iobase=0xf4,iosize=4 -kernel /root/mb-hello.elf \
		> /tmp/qemu-log-$1 2>&1
	status=$?
	cat /tmp/qemu-serial-$1
	grep -v "requested feature\|deprecated\|kernel-irqchip except" /tmp/qemu-log-$1
	[ $status = 1 ] || { echo "qemu exit status $status, wanted 1 (the guest's 0)"; return 1; }
	grep -qx "mb-hello: 5 timer interrupts taken in HLT" /tmp/qemu-serial-$1
}
qemu_on_rvmx() {
	mknod /dev/kvm c 10 "$(cut -d: -f2 /sys/class/misc/rvmx/dev)" || return 1
	qemu_guest rvmx; r=$?
	rm -f /dev/kvm
	return $r
}
check "qemu: QEMU 7.2 -accel kvm,kernel-irqchip=off boots SeaBIOS and a multiboot guest on /dev/rvmx: serial output, PIT/PIC interrupts, exit status" \
	qemu_on_rvmx
check "cpu state: a host hardware watchpoint still fires after a guest armed its own breakpoint" \
	grep -qx "host_watchpoint_after_guest fired true" /tmp/cs-rvmx
check "run: KVM_SET_SIGNAL_MASK's mask is the one in force during KVM_RUN" sh -c '
	grep -qx "sigmask run_unblocked errno 4" /tmp/run-rvmx && grep -qx "sigmask run_blocked hlt" /tmp/run-rvmx'
check "run: a guest spinning with IF=0 is still interrupted by a signal" \
	grep -qx "spin_if0 exit_reason_intr true" /tmp/run-rvmx
# Pinned-page balance from /proc/vmstat, with the per-CPU counters folded first.
pins() {
	echo 1 > /proc/sys/vm/stat_refresh
	awk '/^nr_foll_pin_acquired/ {a = $2} /^nr_foll_pin_released/ {r = $2} END {print a - r}' /proc/vmstat
}
free_kb() { awk '/^MemFree/ {print $2}' /proc/meminfo; }
stress() {
	before=$(free_kb)
	kvm-stress-check /dev/rvmx 1000 > /tmp/stress-rvmx || return 1
	cat /tmp/stress-rvmx
	grep '^info pinned_after' /tmp/stress-rvmx | grep -v ' 0$' && return 1
	[ "$(pins)" = 0 ] || { echo "guest pages still pinned: $(pins)"; return 1; }
	after=$(free_kb)
	echo "MemFree before $before kB, after $after kB"
	[ $((before - after)) -lt 2048 ] || { echo "lost $((before - after)) kB"; return 1; }
}
check "lifetime: 1000 VM cycles, close orders, SIGKILL mid-run, 2x2 migrating vCPUs; no page left pinned, memory back" stress
# Migration from outside: taskset moves every thread of a running client between the CPUs.
migrate() {
	kvm-stress-check /dev/rvmx 300 > /tmp/stress-taskset & pid=$!
	moves=0
	while kill -0 $pid 2> /dev/null; do
		taskset -a -p 1 $pid > /dev/null 2>&1 && taskset -a -p 2 $pid > /dev/null 2>&1 && moves=$((moves + 1))
	done
	wait $pid || return 1
	echo "moved between CPUs $moves times"
	grep -v '^info ' /tmp/stress-rvmx > /tmp/stress-a
	[ $moves -gt 0 ] && grep -v '^info ' /tmp/stress-taskset | diff /tmp/stress-a -
}
check "lifetime: vCPU threads moved by taskset while running give the same results" migrate

opens() {
	i=0
	while [ $i -lt 1000 ]; do exec 3</dev/rvmx || return 1; exec 3<&-; i=$((i + 1)); done
	[ "$(cat /sys/module/rvmx/refcnt)" = 0 ] || { echo "refcnt $(cat /sys/module/rvmx/refcnt)"; return 1; }
}
check "lifetime: 1000 opens and closes leave no reference" opens

rmmod_while_open() {
	exec 3</dev/rvmx
	if rmmod rvmx 2>/dev/null; then exec 3<&-; echo "rmmod succeeded with /dev/rvmx open"; return 1; fi
	loaded rvmx || return 1
	exec 3<&-
	rmmod rvmx && ! loaded rvmx && [ ! -e /dev/rvmx ] && [ ! -e /sys/kernel/debug/rvmx ]
}
check "lifetime: rmmod refused while open, clean after close (device and debugfs directory gone)" rmmod_while_open

cycles() {
	i=0
	while [ $i -lt 5 ]; do
		clear_log
		insmod /lib/rvmx/rvmx.ko || return 1
		dmesg_has "rvmx: VMX ready on 2 CPUs" || return 1
		rmmod rvmx || return 1
		i=$((i + 1))
	done
}
check "lifetime: 5 insmod/rmmod cycles" cycles

hotplug() {
	echo 0 > /sys/devices/system/cpu/cpu1/online || return 1
	echo "  cpu1 offline" > /dev/console
	clear_log
	insmod /lib/rvmx/rvmx.ko || return 1
	dmesg_has "rvmx: VMX ready on 1 CPUs" || return 1
	echo "  rvmx loaded on 1 CPU" > /dev/console
	echo 1 > /sys/devices/system/cpu/cpu1/online || return 1
	echo "  cpu1 online" > /dev/console
	dmesg_has "rvmx: CPU 1: VMX operation ready" || return 1
	kvm-abi-check /dev/rvmx > /dev/null || return 1
	rmmod rvmx
}
check "hotplug: a CPU coming online after load gets VMX" hotplug

# kvm_intel takes VMX on every CPU at load: it can only do so if rvmx left every CPU as it was.
check "coexistence: kvm_intel loads after rvmx is unloaded" \
	sh -c 'kvm-load && [ -c /dev/kvm ]'
check "coexistence: rvmx refuses with EBUSY while kvm_intel holds VMX" sh -c '
	dmesg -c > /dev/null
	out=$(insmod /lib/rvmx/rvmx.ko 2>&1) && { echo "insmod succeeded"; exit 1; }
	echo "$out"; echo "$out" | grep -q "Device or resource busy" &&
	dmesg | grep -q "another hypervisor (kvm_intel) holds VMX; unload it first" &&
	[ ! -e /dev/rvmx ] && ! grep -q "^rvmx " /proc/modules'

check "abi: kvm-abi-check on /dev/kvm" sh -c 'kvm-abi-check /dev/kvm > /tmp/abi-kvm'
check "vm: the same client on /dev/kvm" sh -c 'kvm-vm-check /dev/kvm > /tmp/vm-kvm'
check "run: the same guests on /dev/kvm" sh -c 'kvm-run-check /dev/kvm > /tmp/run-kvm'
check "conformance: the same client on /dev/kvm" sh -c 'kvm-conformance-check /dev/kvm > /tmp/conf-kvm'
check "clock: the same client on /dev/kvm" sh -c 'kvm-clock-check /dev/kvm > /tmp/clock-kvm'
check "lapic: the same client on /dev/kvm" sh -c 'kvm-lapic-check /dev/kvm > /tmp/lapic-kvm'
check "clock: the same on the HPET clocksource on /dev/kvm" on_hpet sh -c 'kvm-clock-check /dev/kvm > /tmp/clockh-kvm'
check "mmio: the same MMIO guests on /dev/kvm" sh -c 'kvm-mmio-check /dev/kvm > /tmp/mmio-kvm'
check "coalesced: the same zones on /dev/kvm" sh -c 'kvm-coalesced-check /dev/kvm > /tmp/coal-kvm'
check "irqchip: the same chips on /dev/kvm" sh -c 'kvm-irqchip-check /dev/kvm > /tmp/chip-kvm'
check "cpu state: the same guest on /dev/kvm" sh -c 'kvm-cpu-state-check /dev/kvm > /tmp/cs-kvm'
check "irq: the same guests on /dev/kvm" sh -c 'kvm-irq-check /dev/kvm > /tmp/irq-kvm'
check "smm: the same guest on /dev/kvm" sh -c 'kvm-smm-check /dev/kvm > /tmp/smm-kvm'
check "memory: the same guests on /dev/kvm" sh -c 'kvm-memory-check /dev/kvm > /tmp/mem-kvm'
check "mm: the same guests on /dev/kvm" \
	sh -c 'kvm-mm-check /dev/kvm > /tmp/mm-kvm && kvm-mm-check /dev/kvm large > /tmp/mml-kvm && kvm-mm-check /dev/kvm slots 1000 >> /tmp/mml-kvm'
check "smp: the same guest on /dev/kvm" sh -c 'kvm-smp-check /dev/kvm > /tmp/smp-kvm'
check "lifetime: the same stress on /dev/kvm" \
	sh -c 'kvm-stress-check /dev/kvm 30 | grep -v "^info " > /tmp/stress-kvm'
check "tool: the same client drives /dev/kvm" sh -c 'rvmx info --device /dev/kvm'
check "tool: rvmx run --device /dev/kvm: the same guest output and status" hello_run hello-kvm /dev/kvm
check "tool: rvmx run: the same exits on rvmx and KVM" diff /tmp/run-hello-kvm.err /tmp/run-hello.err
check "tool: rvmx run --device /dev/kvm: the same timer guest" timer_run timer-kvm /dev/kvm
check "tool: rvmx run --device /dev/kvm: the same COM1 input guest" echo_run echo-kvm /dev/kvm
check "tool: rvmx run --device /dev/kvm: the same idle guest ends" idle_run idle-kvm /dev/kvm
check "tool: rvmx run --device /dev/kvm: the same string I/O" string_run string-kvm /dev/kvm
check "tool: rvmx run --device /dev/kvm --kernel --cpus 2: the same Linux guest reaches init with 2 CPUs" \
	linux_run kvm-smp /dev/kvm 2
check "tool: rvmx run --irqchip kernel --device /dev/kvm: the same timer guest" timer_run timer-kernel-kvm /dev/kvm "--irqchip kernel"
check "tool: rvmx run --irqchip kernel --device /dev/kvm: the same COM1 input guest" echo_run echo-kernel-kvm /dev/kvm "--irqchip kernel"
check "tool: rvmx run --irqchip kernel --device /dev/kvm: the same idle guest ends" idle_run idle-kernel-kvm /dev/kvm "--irqchip kernel"
check "tool: rvmx run --irqchip kernel --device /dev/kvm --kernel --cpus 2: the same Linux guest reaches init with 2 CPUs and powers off" \
	linux_run kvm-smp-kernel /dev/kvm 2 "--irqchip kernel" poweroff
check "tool: ... and finds the same IOAPIC" ioapic_listed kvm-smp-kernel
echo "    Linux guest with 2 CPUs, uptime at init (guest clock): rvmx $(boot_time rvmx-smp), KVM $(boot_time kvm-smp)"
# QEMU last among KVM's users: after it, kvm_intel in Bochs sometimes stalled the next client.
check "qemu: the same QEMU and guest on /dev/kvm" qemu_guest kvm

check "coexistence: rvmx loads again once kvm_intel is gone" sh -c '
	rmmod kvm_intel && rmmod kvm && rmmod irqbypass && dmesg -c > /dev/null &&
	insmod /lib/rvmx/rvmx.ko && dmesg | grep -q "rvmx: VMX ready on 2 CPUs"'

# Same answers as KVM, line for line; capabilities: whatever rvmx offers, KVM offers too.
abi_same() {
	grep -v '^extension ' /tmp/abi-rvmx > /tmp/a; grep -v '^extension ' /tmp/abi-kvm > /tmp/b
	diff /tmp/b /tmp/a
}
caps_subset() {
	awk 'NR == FNR { if ($1 == "extension") kvm[$2] = $3; next }
	     $1 == "extension" && $3 != "0" {
	         if (kvm[$2] == "0" || kvm[$2] == "") { print "rvmx offers cap " $2 ", KVM does not"; bad = 1 }
	         if ($2 + 0 > 256) { print "bogus cap " $2 " answered " $3; bad = 1 }
	     }
	     END { exit bad }' /tmp/abi-kvm /tmp/abi-rvmx
}
check "abi: versions, mmap size and errnos identical to KVM's" abi_same
check "abi: capabilities are a subset of KVM's, unknown ones answer 0" caps_subset
vm_same() { grep -v '^info ' /tmp/vm-kvm > /tmp/a; grep -v '^info ' /tmp/vm-rvmx > /tmp/b; diff /tmp/a /tmp/b; }
check "vm: slots, vCPUs, reset state, errnos and fork identical to KVM's" vm_same
sed 's/^/    rvmx: /' /tmp/vm-rvmx
run_same() { grep -v '^info ' /tmp/run-kvm > /tmp/a; grep -v '^spin_if0\|^info ' /tmp/run-rvmx | diff /tmp/a -; }
check "run: every exit and final register identical to KVM's" run_same
conf_same() { grep -v '^info ' /tmp/conf-kvm > /tmp/a; grep -v '^info ' /tmp/conf-rvmx | diff /tmp/a -; }
check "conformance: hypercall answers, port 0x7e, dropped port completions, TPR from kvm_run, IRQ_LINE, SIGNAL_MSI and SET_CPUID2 errnos, VM ENABLE_CAP (quirks, max vCPU id), single steps over emulated instructions identical to KVM's" \
	conf_same
fpu_right() {
	grep -qx 'info fpu reset fcw 0x37f fsw 0x0 ftwx 0x0 mxcsr 0x0' /tmp/run-rvmx &&
	grep -qx 'info fpu memory \[01, 02, 03, 04, 05, 06, 07, 08, 09, 0a, 0b, 0c, 0d, 0e, 0f, 10\]' /tmp/run-rvmx &&
	grep -qx 'info fpu guest_mxcsr 0x1f80' /tmp/run-rvmx &&
	grep -q '^info fpu after fcw 0x37f fsw 0x3800 ftwx 0x80 mxcsr 0x0 st0 \[00, 00, 00, 00, 00, 00, 00, 80, ff, 3f\] xmm1 \[01, 02, 03, 04, 05, 06, 07, 08, 09, 0a, 0b, 0c, 0d, 0e, 0f, 10\]' /tmp/run-rvmx &&
	grep -qx 'info set_fpu_reserved_mxcsr Ok(())' /tmp/run-rvmx || { grep fpu /tmp/run-rvmx; return 1; }
}
check "run: x87/SSE state set by KVM_SET_FPU reaches the guest and comes back; MXCSR as KVM has it there (reported 0, ignored on set: the guest keeps 0x1f80)" fpu_right
clock_same() { # clock_same SUFFIX: the kvmclock lines identical but the host- and moment-dependent ones
	grep -v '^info ' /tmp/clock$1-kvm > /tmp/a; grep -v '^info ' /tmp/clock$1-rvmx | diff /tmp/a -
}
check "clock: kvmclock as KVM gives it: GET/SET_CLOCK flags and errnos, the guest's pages and the time it reads, on a TSC host" \
	clock_same ""
check "clock: the same on a host without a stable TSC" clock_same h
check "lapic: enabling the split irqchip, KVM_GET/SET_LAPIC, APIC_BASE and TPR in SREGS, and a guest's xAPIC MMIO, CR8 and x2APIC MSR accesses identical to KVM's" \
	diff /tmp/lapic-kvm /tmp/lapic-rvmx
mmio_same() { grep -v '^info ' /tmp/mmio-kvm > /tmp/a; grep -v '^info ' /tmp/mmio-rvmx | diff /tmp/a -; }
check "mmio: every MMIO and string I/O exit, register and RAM byte identical to KVM's" mmio_same
check "coalesced: every exit, ring entry and index, errno and the zone limit identical to KVM's" \
	diff /tmp/coal-kvm /tmp/coal-rvmx
check "coalesced: the guest's writes reached the ring (MMIO, OUT, each element of REP OUTSB) and a full ring exited" sh -c '
	grep -qx "cap coalesced_mmio 2 coalesced_pio 1" /tmp/coal-rvmx &&
	grep -q "^zones ring \\[[0-9]*\\] addr 0x20004 len 4 pio 0 data \\[77, 66, 55, 44, 00, 00, 00, 00\\]" /tmp/coal-rvmx &&
	[ "$(grep -c "^zones ring .* addr 0x70 len 1 pio 1 data \\[7[89a]," /tmp/coal-rvmx)" = 3 ] &&
	grep -q "^full ring \\[3\\] addr 0x20002 len 2 pio 0 " /tmp/coal-rvmx &&
	grep -qx "full exit 0 mmio_write addr 0x20004 data \\[77, 66, 55, 44\\]" /tmp/coal-rvmx &&
	grep -qx "full ring first 4 last 4" /tmp/coal-rvmx'
chip_same() { grep -v '^info ' /tmp/chip-kvm > /tmp/a; grep -v '^info ' /tmp/chip-rvmx | diff /tmp/a -; }
check "irqchip: errnos, GET/SET_IRQCHIP and GET/SET_PIT2, line statuses through default and custom routes, and a guest's IOAPIC (edge, level re-delivered at EOI, RTC coalescing, HLT woken) and 8259 pair identical to KVM's" \
	chip_same
check "irqchip: the guest took every interrupt (IOAPIC: 2 edges, 3 level deliveries, 2 RTC; PIC: IRQ 1 twice, IRQ 3 twice, IRQ 10)" \
	grep -qx "ioapic counts 2 3 2" /tmp/chip-rvmx
check "irqchip: the 8259 pair delivered by priority through LINT0's ExtINT" sh -c '
	grep -qx "pic counts 2 2 1" /tmp/chip-rvmx && grep -qx "pic both_first out 0x17 0x2" /tmp/chip-rvmx'
check "pit: the in-kernel 8254 (KVM_CREATE_PIT2) ticked at 100 Hz on IRQ 0 and woke the halted guest, through the PIC and then the IOAPIC (reinjection waits for each EOI)" sh -c '
	grep -qx "pit ticks_at_least_5 true" /tmp/chip-rvmx && grep -qx "pit five_ticks_took_40ms_or_more true" /tmp/chip-rvmx &&
	grep -qx "pit latched_below_initial true" /tmp/chip-rvmx && grep -qx "pit ioapic_ticks_at_least_5 true" /tmp/chip-rvmx'
cs_same() { grep -v '^info ' /tmp/cs-kvm > /tmp/a; grep -v '^info ' /tmp/cs-rvmx | diff /tmp/a -; }
check "cpu state: XCR0, AVX state, guest #GP/#DB, debug registers and their errnos identical to KVM's" cs_same
irq_same() { grep -v '^info ' /tmp/irq-kvm > /tmp/a; grep -v '^info ' /tmp/irq-rvmx | diff /tmp/a -; }
check "irq: every exit, kvm_run interrupt field, event and handler count identical to KVM's" irq_same
check "irq: deliveries onto untouched stack pages completed (IDT-vectoring reinjection), and after POPF and IRET set IF: 9 interrupts, 2 NMIs, 1 #UD" \
	grep -qx "irq counts interrupts 9 nmis 2 ud 1 cx 0x3" /tmp/irq-rvmx
check "smm: every exit, SMM event field, kvm_run flag, SREGS in SMM, SMBASE and save-state map identical to KVM's" \
	diff /tmp/smm-kvm /tmp/smm-rvmx
check "smm: the handler ran three times in SMM and RSM returned each time with the RAX it wrote into the map" sh -c '
	grep -qx "caps x86_smm 1 multi_address_space 2" /tmp/smm-rvmx &&
	[ "$(grep -c "^in_smm smm 1 " /tmp/smm-rvmx)" = 3 ] && grep -q "io_out 0x11 0x34 .* rax 0x1234$" /tmp/smm-rvmx &&
	grep -q "io_out 0x12 0x34 .* rax 0x1234$" /tmp/smm-rvmx && grep -q "io_out 0x13 " /tmp/smm-rvmx'
mem_same() { grep -v '^info ' /tmp/mem-kvm > /tmp/a; grep -v '^info ' /tmp/mem-rvmx | diff /tmp/a -; }
check "memory: dirty logs (exactly the written pages), ioeventfd signals and exits, #MC delivery and errnos identical to KVM's" mem_same
check "memory: the dirty log names exactly the pages the guest wrote, round by round" sh -c '
	grep -qx "dirty round1 slot1 Ok(\[0, 3, 7\])" /tmp/mem-rvmx &&
	grep -qx "dirty round2 slot1 Ok(\[3, 9\])" /tmp/mem-rvmx &&
	grep -qx "dirty round2 slot2 Ok(\[0, 2\])" /tmp/mem-rvmx &&
	grep -qx "dirty round3 slot1 Ok(\[11\])" /tmp/mem-rvmx'
mm_same() { cat /tmp/mm-kvm /tmp/mml-kvm | grep -v '^info ' > /tmp/a; cat /tmp/mm-rvmx /tmp/mml-rvmx | grep -v '^info ' | diff /tmp/a -; }
check "mm: every guest read, write, host view and error identical to KVM's (KVM_CAP_SYNC_MMU)" mm_same
check "mm: the host's page aging sees the guest's accesses (idle page tracking through the MMU notifier's clear_young)" \
	grep -qx "idle after idle used used idle" /tmp/mm-rvmx
check "mm: the guest reads the page the VMM mapped in its place, zero after MADV_DONTNEED and a punched hole, EFAULT where unmapped" sh -c '
	grep -qx "mm after_map_fixed_read_page0 read 0xb0" /tmp/mm-rvmx &&
	grep -qx "mm madv_dontneed 0" /tmp/mm-rvmx &&
	grep -qx "mm after_dontneed_read_page1 read 0x00" /tmp/mm-rvmx &&
	grep -qx "mm after_punch_read_page1 read 0x00" /tmp/mm-rvmx &&
	grep -qx "mm unmapped_read_page3 error errno 14 exit_reason 0" /tmp/mm-rvmx &&
	grep -qx "large sum 0x27d8000 of 327680 pages" /tmp/mml-rvmx'
smp_same() { grep -v '^info ' /tmp/smp-kvm > /tmp/a; grep -v '^info ' /tmp/smp-rvmx | diff /tmp/a -; }
check "smp: every exit of both vCPUs and the memory they shared identical to KVM's" smp_same
check "memory: ioeventfd writes (OUT, OUTS, MMIO, each part of a page-crossing MMIO write) are signalled without an exit" \
	grep -qx "iofd counts a 1 b 3 c 2 d 2" /tmp/mem-rvmx
check "mmio: an instruction outside the decoder's set (MUL on MMIO) is an emulation failure naming its bytes" \
	grep -q '^info unsupported internal_error suberror 1 flags 0x1 insn \[f7, 23, f4, ' /tmp/mmio-rvmx
check "qemu: the guest's serial output on rvmx is identical to KVM's" diff /tmp/qemu-serial-kvm /tmp/qemu-serial-rvmx
stress_same() { grep -v '^info ' /tmp/stress-rvmx | diff /tmp/stress-kvm -; }
check "lifetime: stress results identical to KVM's" stress_same
sed 's/^/    rvmx: /' /tmp/run-rvmx
sed 's/^/    rvmx: /' /tmp/mmio-rvmx
sed 's/^/    rvmx: /' /tmp/mem-rvmx
sed 's/^/    rvmx: /' /tmp/mm-rvmx /tmp/mml-rvmx
sed 's/^/    rvmx: /' /tmp/abi-rvmx | grep -v '^    rvmx: extension .* 0$'

[ $failures -eq 0 ]
