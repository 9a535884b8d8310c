# Shared settings for rvmx's scripts: pinned inputs and the cache layout.
# Sourced, not run. Every expensive output lives under $RVMX_CACHE, keyed by its inputs.

set -euo pipefail

RVMX_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RVMX_CACHE=${RVMX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rvmx}

# Pinned build inputs (see docs/building.md). Change a pin and every cache keyed on it rebuilds.
RUSTC_VERSION=1.95.0
LINUX_SRC_PKG=linux-source-7.3
LINUX_SRC_VERSION=7.3.4-1~bpo13+1
RUST_SRC_VERSION=1.95.0+dfsg1-2~bpo13+1
BINDGEN_VERSION=0.72.1
LIBCLANG_VERSION=18.1.1
DEBIAN_SUITE=trixie-backports

# Debian bookworm packages the host needs to build and to run the test VMs.
HOST_PACKAGES=(flex bison libelf-dev bc cpio xz-utils kmod libssl-dev lz4 gcc make
               bochs bochsbios vgabios bochs-term busybox-static isolinux syslinux-common
               genisoimage qemu-system-x86 util-linux python3-pip uuid-dev e2fsprogs e2fsck-static
               gnuplot-nox)

log() { printf '[rvmx] %s\n' "$*" >&2; }
die() { printf '[rvmx] error: %s\n' "$*" >&2; exit 1; }

# Short content hash of the arguments (strings), used as cache keys.
key_of() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }

# The private apt configuration that reaches a Debian suite ($1, default $DEBIAN_SUITE) without
# touching the system's apt: sets APT_OPTS and APT_DIR (its state and download cache, one per suite).
apt_private() {
	local suite=${1:-$DEBIAN_SUITE}
	local d=$RVMX_CACHE/apt
	[ "$suite" = "$DEBIAN_SUITE" ] || d=$RVMX_CACHE/apt-$suite
	APT_DIR=$d
	mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
	printf 'deb http://deb.debian.org/debian %s main\n' "$suite" > "$d/sources.list"
	APT_OPTS=(-o "Dir::Etc::sourcelist=$d/sources.list" -o Dir::Etc::sourceparts=/nonexistent
	          -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache"
	          -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root -q)
}

# Check that the machine's rustc is the pinned one: the kernel and the module must share it.
check_rustc() {
	command -v rustc >/dev/null || die "rustc not found (need $RUSTC_VERSION, the one the kernel is built with)"
	local v; v=$(rustc --version | awk '{print $2}')
	[ "$v" = "$RUSTC_VERSION" ] || die "rustc is $v, rvmx pins $RUSTC_VERSION (scripts/lib.sh)"
}

# Paths of the toolchain pieces (filled in by scripts/setup-toolchain).
BINDGEN_DIR=$RVMX_CACHE/tools/bindgen-$BINDGEN_VERSION
BINDGEN=$BINDGEN_DIR/bin/bindgen
LIBCLANG_DIR=$RVMX_CACHE/tools/libclang-$LIBCLANG_VERSION
RUST_SRC_DIR=$RVMX_CACHE/tools/rust-src-$RUST_SRC_VERSION
# Prefer the toolchain's own rust-src component; fall back to Debian's package of the same version.
RUST_LIB_SRC=$(rustc --print sysroot 2>/dev/null || true)/lib/rustlib/src/rust/library
[ -d "$RUST_LIB_SRC/core" ] || RUST_LIB_SRC=$RUST_SRC_DIR/usr/src/rustc-$RUSTC_VERSION/library
LINUX_TARBALL_DIR=$RVMX_CACHE/tools/$LINUX_SRC_PKG-$LINUX_SRC_VERSION

# Which test kernel: the default one (with lockdep and atomic-sleep checking,
# scripts/kernel-checks.config), RVMX_KERNEL_VARIANT=mitigations (the same with the
# CPU-vulnerability mitigations compiled in, scripts/kernel-mitigations.config),
# RVMX_KERNEL_VARIANT=debug (kmemleak, KFENCE, UBSAN, hung-task and lockup detectors,
# scripts/kernel-debug.config), or RVMX_KERNEL_VARIANT=production (no debug checks, as a
# distribution builds it: what `make bench` measures on first), or RVMX_KERNEL_VARIANT=guest
# (production's configuration with virtio-mmio, virtio-blk, virtio-rng and ext4: the guest
# kernel for `rvmx run --disk`, scripts/kernel-guest.config).
RVMX_KERNEL_VARIANT=${RVMX_KERNEL_VARIANT:-}
KERNEL_LLVM= KERNEL_LIBCLANG_DIR= KERNEL_HOST_PACKAGES=()
base=("$RVMX_ROOT/scripts/kernel.config")
checks=("$RVMX_ROOT/scripts/kernel.config" "$RVMX_ROOT/scripts/kernel-checks.config")
case "$RVMX_KERNEL_VARIANT" in
'') KERNEL_FRAGMENTS=("${checks[@]}") ;;
mitigations) KERNEL_FRAGMENTS=("${checks[@]}" "$RVMX_ROOT/scripts/kernel-mitigations.config") ;;
# The debug kernel is built with Clang (Linux allows KASAN with Rust only then): bookworm's
# clang-19, and its libclang for bindgen.
debug) KERNEL_FRAGMENTS=("${checks[@]}" "$RVMX_ROOT/scripts/kernel-debug.config")
       KERNEL_LLVM=-19 KERNEL_LIBCLANG_DIR=/usr/lib/llvm-19/lib
       KERNEL_HOST_PACKAGES=(clang-19 lld-19 llvm-19 libclang1-19) ;;
production) KERNEL_FRAGMENTS=("${base[@]}") ;;
guest) KERNEL_FRAGMENTS=("${base[@]}" "$RVMX_ROOT/scripts/kernel-guest.config") ;;
*) echo "[rvmx] unknown kernel variant '$RVMX_KERNEL_VARIANT' (none, mitigations, debug, production or guest)" >&2; exit 1 ;;
esac

# The test kernel build directory, keyed by every input that shapes it.
kernel_key() {
	key_of "$LINUX_SRC_VERSION" "$RUSTC_VERSION" "$BINDGEN_VERSION" "$LIBCLANG_VERSION" ${KERNEL_LLVM:+"LLVM=$KERNEL_LLVM"} \
		"$(cat "${KERNEL_FRAGMENTS[@]}")" "$(cat "$RVMX_ROOT/scripts/build-kernel")"
}
KERNEL_DIR=$RVMX_CACHE/linux-${RVMX_KERNEL_VARIANT:+$RVMX_KERNEL_VARIANT-}$(kernel_key)

# make variables for any kbuild invocation against a Rust-enabled tree.
kbuild_vars() {
	KBUILD_VARS=(RUSTC="$(command -v rustc)" BINDGEN="$BINDGEN" RUST_LIB_SRC="$RUST_LIB_SRC"
	             ${KERNEL_LLVM:+LLVM="$KERNEL_LLVM"})
	export LIBCLANG_PATH=${KERNEL_LIBCLANG_DIR:-$LIBCLANG_DIR}
}
