# rvmx: top-level build. `make` builds rvmx.ko and the rvmx tool; `make run` boots the test VM
# and shows rvmx working; `make check` runs every test. See README.md.
#
# KDIR: a Rust-enabled kernel tree to build against. Default: the project's Linux 7.3 test
# kernel, built and cached under ~/.cache/rvmx on first use (scripts/build-kernel).

KDIR ?=
CARGO_TARGET := x86_64-unknown-linux-gnu
# Programs that run inside the test VM's busybox initramfs are linked statically.
STATIC_CARGO := RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$(CURDIR)/build/cargo \
	cargo build --release --quiet --target $(CARGO_TARGET)
STATIC_OUT := build/cargo/$(CARGO_TARGET)/release

.PHONY: all module lint tool test-programs guests kernel setup run check test-host bench bench-trace fuzz clean

all: module tool

setup:
	scripts/setup-toolchain

kernel:
	scripts/build-kernel >/dev/null

module:
	@kdir="$(KDIR)"; [ -n "$$kdir" ] || kdir=$$(scripts/build-kernel) || exit 1; \
	$(MAKE) -C "$$kdir" M=$(CURDIR) $$(scripts/kbuild-args "$$kdir") modules

# Clippy over the module (with the kernel's clippy settings): fails on any arithmetic that can
# overflow, index or slice that can be out of bounds, unwrap/expect, panic! or unreachable!
# (docs/no-panics.md). rust/rvmx.rs denies them too; the flags make the build fail even if that
# line goes. The touch makes kbuild compile the crate again, so clippy always runs.
NO_PANIC_LINTS := -Dclippy::arithmetic_side_effects -Dclippy::indexing_slicing -Dclippy::unwrap_used \
	-Dclippy::expect_used -Dclippy::panic -Dclippy::unreachable
lint:
	@kdir="$(KDIR)"; [ -n "$$kdir" ] || kdir=$$(scripts/build-kernel) || exit 1; \
	touch rust/rvmx.rs; \
	if ! out=$$($(MAKE) -C "$$kdir" M=$(CURDIR) $$(scripts/kbuild-args "$$kdir") CLIPPY=1 KRUSTFLAGS="$(NO_PANIC_LINTS)" modules 2>&1); then \
		printf '%s\n' "$$out" | grep -A14 '^error' >&2; echo "make lint: failed (docs/no-panics.md)" >&2; exit 1; \
	fi

tool:
	cd userspace-tool && $(STATIC_CARGO)
	@mkdir -p build/bin && cp $(STATIC_OUT)/rvmx build/bin/

test-programs:
	cd tests/programs && $(STATIC_CARGO)
	@mkdir -p build/bin && cp $(STATIC_OUT)/kvm-abi-check $(STATIC_OUT)/kvm-vm-check $(STATIC_OUT)/kvm-run-check \
		$(STATIC_OUT)/kvm-stress-check $(STATIC_OUT)/kvm-mmio-check $(STATIC_OUT)/kvm-coalesced-check $(STATIC_OUT)/kvm-irqchip-check $(STATIC_OUT)/kvm-cpu-state-check \
		$(STATIC_OUT)/kvm-irq-check $(STATIC_OUT)/kvm-smm-check $(STATIC_OUT)/kvm-memory-check \
		$(STATIC_OUT)/kvm-smp-check $(STATIC_OUT)/kvm-bench $(STATIC_OUT)/kvm-hostile-check \
		$(STATIC_OUT)/kvm-guest-fuzz $(STATIC_OUT)/kvm-mm-check $(STATIC_OUT)/kvm-ioctl-fuzz \
		$(STATIC_OUT)/kvm-conformance-check $(STATIC_OUT)/kvm-clock-check $(STATIC_OUT)/kvm-lapic-check \
		$(STATIC_OUT)/kvm-irq-bench build/bin/
	cc -O2 -Wall -Werror -static -o build/bin/fpu-context-check tests/c/fpu-context-check.c

# Guest images for the in-VM tests (QEMU's -kernel).
guests: build/guests/mb-hello.elf build/guests/flat-hello.bin
build/guests/flat-hello.bin: tests/guests/flat-hello.S
	@mkdir -p build/guests
	as --32 -o build/guests/flat-hello.o tests/guests/flat-hello.S
	ld -m elf_i386 -Ttext=0x1000 --oformat binary -o $@ build/guests/flat-hello.o
build/guests/mb-hello.elf: tests/guests/mb-hello.S tests/guests/mb-hello.ld
	@mkdir -p build/guests
	as --32 -o build/guests/mb-hello.o tests/guests/mb-hello.S
	ld -m elf_i386 --no-warn-rwx-segments -T tests/guests/mb-hello.ld -o $@ build/guests/mb-hello.o

# The main job: boot the Bochs test VM, load rvmx, show it working.
run: guests
	@kdir=$$(scripts/build-kernel) && initrd=$$(scripts/guest-initrd "$$kdir") && \
	gkdir=$$(RVMX_KERNEL_VARIANT=guest scripts/build-kernel) && disk=$$(scripts/guest-disk) && \
	scripts/vm-run --module rvmx --add tests/vm/demo.sh:/root/demo.sh \
		--add "$$kdir/arch/x86/boot/bzImage:/root/guest-bzImage" --add "$$initrd:/root/guest-initrd.cpio" \
		--add "$$gkdir/arch/x86/boot/bzImage:/root/guest-disk-bzImage" --add "$$disk:/root/guest-disk.img" \
		-- sh /root/demo.sh

check:
	tests/run

# Exit costs and a Linux boot, rvmx against KVM in the same Bochs VM (pinned to one CPU), on the
# production test kernel (no lockdep or atomic-sleep checking, as distributions build it;
# mitigations off), on the default test kernel (with those checks, which slow KVM's exit path
# more than rvmx's) and on the mitigations kernel (as distributions boot): the difference is
# what the speculative-execution protections cost each. Not a test. Progress lines carry the
# host's wall-clock time. BENCH_KERNELS picks the kernels. The tables are kept in build/bench.txt
# and drawn into docs/bench.svg (scripts/bench-chart, gnuplot).
BENCH_KERNELS ?= production default mitigations
bench: module tool test-programs
	@kdir=$$(scripts/build-kernel) && initrd=$$(scripts/guest-initrd "$$kdir") && \
	gkdir=$$(RVMX_KERNEL_VARIANT=guest scripts/build-kernel) && disk=$$(scripts/guest-disk) && \
	for k in $(BENCH_KERNELS); do \
	echo "== test kernel: $$k"; \
	scripts/vm-run --cpus 2 --module rvmx --kernel $$k --timeout 3600 --add tests/vm/bench.sh:/root/bench.sh \
		--add "$$kdir/arch/x86/boot/bzImage:/root/guest-bzImage" --add "$$initrd:/root/guest-initrd.cpio" \
		--add "$$gkdir/arch/x86/boot/bzImage:/root/guest-disk-bzImage" --add "$$disk:/root/guest-disk.img" \
		-- sh /root/bench.sh | sed -u 's/\r$$//' | while IFS= read -r l; do case "$$l" in \
		"bench: "*) echo "$$(date +%T) $$l" ;; "BENCH "*) echo "$${l#BENCH }" ;; esac; done; \
	done | tee build/bench.txt && scripts/bench-chart build/bench.txt docs/bench.svg

# Where one round trip's instructions go, per function, on rvmx and on KVM (Bochs' instruction
# trace, symbolized): build/trace/report.txt and a timeline per row. BENCH_TRACE_ROWS picks
# kvm-bench rows; BENCH_TRACE_KERNEL the test kernel (production by default).
BENCH_TRACE_KERNEL ?= production
bench-trace: module tool test-programs
	scripts/bench-trace --kernel $(BENCH_TRACE_KERNEL) $(BENCH_TRACE_ROWS)

# The guest-side fuzzer: FUZZ_COUNT random guests from FUZZ_SEED on rvmx in Bochs, with a host
# workload beside it, on the default kernel and on the mitigations kernel (tests/vm/fuzz.sh).
# A failing guest reproduces with `kvm-guest-fuzz /dev/rvmx SEED 1 --start I` in the test VM.
FUZZ_SEED ?= $(shell date +%s)
FUZZ_COUNT ?= 100000
FUZZ_KERNELS ?= default mitigations
# Then the ioctl fuzzer (tests/vm/ioctl-fuzz.sh): IOCTL_FUZZ_CALLS random calls over the system,
# VM and vCPU fds from IOCTL_FUZZ_SEED, on the debug test kernel (kmemleak, KFENCE, UBSAN,
# lockdep, hung-task and lockup detectors). A finding reproduces with the `kvm-ioctl-fuzz ...
# --start N` command its FINDING line (or the last `batch` line before a dead host) gives.
# Speed in Bochs on the debug kernel depends on the calls: 25-40 per second of wall time in
# the first measurement, 4-5 per second for seed 1206's calls 9000-16000 (KASAN, Bochs alone
# on 2 cores). 10^6 calls take 7 hours to 3 days here; a host with VMX is far faster.
# IOCTL_FUZZ_START=N runs calls N..N+IOCTL_FUZZ_CALLS of the seed: the 10^6 campaign in chunks.
IOCTL_FUZZ_SEED ?= $(FUZZ_SEED)
IOCTL_FUZZ_CALLS ?= 1000000
IOCTL_FUZZ_START ?= 0
IOCTL_FUZZ_KERNELS ?= debug
fuzz: module tool test-programs
	@for k in $(FUZZ_KERNELS); do \
		echo "== fuzz: seed $(FUZZ_SEED), $(FUZZ_COUNT) guests, test kernel $$k"; \
		log=$$(mktemp); \
		scripts/vm-run --cpus 2 --module rvmx --kernel $$k --timeout 36000 --add tests/vm/lib.sh:/root/lib.sh \
			--add tests/vm/fuzz.sh:/root/fuzz.sh -- sh /root/fuzz.sh $(FUZZ_SEED) $(FUZZ_COUNT) > $$log 2>&1; rc=$$?; \
		tr -d '\r' < $$log | grep -E '^(PASS|FAIL|    )|Kernel panic|BUG|WARNING'; rm -f $$log; \
		[ $$rc = 0 ] || { echo "make fuzz: failed on the $$k kernel (vm-run exit $$rc)"; exit 1; }; \
	done
	@for k in $(IOCTL_FUZZ_KERNELS); do \
		echo "== ioctl fuzz: seed $(IOCTL_FUZZ_SEED), $(IOCTL_FUZZ_CALLS) calls from call $(IOCTL_FUZZ_START), test kernel $$k"; \
		log=$$(mktemp); \
		scripts/vm-run --cpus 2 --module rvmx --kernel $$k --timeout $$(( $(IOCTL_FUZZ_CALLS) / 10 + 1800 )) \
			--add tests/vm/lib.sh:/root/lib.sh --add tests/vm/ioctl-fuzz.sh:/root/ioctl-fuzz.sh \
			-- IOCTL_FUZZ_START=$(IOCTL_FUZZ_START) sh /root/ioctl-fuzz.sh $(IOCTL_FUZZ_SEED) $(IOCTL_FUZZ_CALLS) > $$log 2>&1; rc=$$?; \
		tr -d '\r' < $$log | grep -E '^(PASS|FAIL|    |FINDING)|Kernel panic|BUG|WARNING' | grep -v '^    [A-Za-z_0-9@ ]*: [0-9]*$$'; \
		tr -d '\r' < $$log | grep '^batch ' | tail -n 1; rm -f $$log; \
		[ $$rc = 0 ] || { echo "make fuzz: the ioctl fuzzer failed on the $$k kernel (vm-run exit $$rc)"; exit 1; }; \
	done

test-host:
	cd rust/logic && cargo test --quiet
	cd userspace-tool && cargo test --quiet

clean:
	@kdir="$(KDIR)"; [ -z "$$kdir" ] || $(MAKE) -C "$$kdir" M=$(CURDIR) clean
	rm -rf build *.o *.ko *.mod *.mod.c .*.cmd rust/*.o rust/*/*.o rust/.*.cmd rust/*/.*.cmd Module.symvers modules.order
