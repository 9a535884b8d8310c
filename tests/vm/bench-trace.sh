# `make bench-trace` (scripts/bench-trace [ROW...]) inside the Bochs test VM: kvm-bench's rows
# with three KVM_RUNs each traced (Bochs' magic breakpoint, vm-run --trace) on /dev/rvmx, then
# on /dev/kvm. The host symbolizes the traces with the module addresses printed here.
# On CPU 0: Bochs' debugger traces the CPU it last stopped on, which is CPU 0.
taskset -p 1 $$ > /dev/null
sections() { # sections MODULE: where its code sections were loaded
	for s in /sys/module/$1/sections/.text /sys/module/$1/sections/.noinstr.text; do
		[ -f "$s" ] && echo "TRACE-SECTION $1 ${s##*/} $(cat "$s")"
	done
}
rows=${*:-cpuid_traced pio_out_userspace mmio_write_userspace mmio_write_userspace_long ept_first_touch_4k_sparse_out}
sections rvmx
echo "TRACE-RUN rvmx $rows"
KVM_BENCH_TRACE=1 kvm-bench /dev/rvmx $rows | sed 's/^/TRACE-ROW rvmx /'
rmmod rvmx && kvm-load || { echo "bench-trace: could not switch to kvm_intel"; exit 1; }
sections irqbypass
sections kvm
sections kvm_intel
echo "TRACE-RUN kvm $rows"
KVM_BENCH_TRACE=1 kvm-bench /dev/kvm $rows | sed 's/^/TRACE-ROW kvm /'
