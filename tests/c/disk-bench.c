// disk-bench DEVICE: 4 KiB I/O throughput of a block device, run inside a guest of `rvmx run
// --disk` (make bench): sequential and random reads and writes, one request at a time,
// O_DIRECT (no guest page cache), over the device's first 32 MiB. Prints one line per pattern,
// "disk_<pattern>_4k_ns N": nanoseconds of the guest's clock per request, lower is better (in
// Bochs that clock counts instructions, so the figure compares hypervisors, not disks). The
// write patterns end with an fdatasync, counted in.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 4096
#define SPAN (32 << 20)
#define OPS 2048

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

// xorshift64: the same "random" offsets on every hypervisor.
static uint64_t next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static int run(int fd, const char *name, int write, int random, void *buf)
{
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	double start = now();
	for (int i = 0; i < OPS; i++) {
		off_t off = random ? (off_t)(next(&seed) % (SPAN / BLOCK)) * BLOCK : (off_t)i * BLOCK % SPAN;
		ssize_t n = write ? pwrite(fd, buf, BLOCK, off) : pread(fd, buf, BLOCK, off);
		if (n != BLOCK) {
			fprintf(stderr, "disk-bench: %s at %lld: %zd\n", name, (long long)off, n);
			return 1;
		}
	}
	if (write && fdatasync(fd)) {
		perror("disk-bench: fdatasync");
		return 1;
	}
	printf("disk_%s_4k_ns %.0f\n", name, (now() - start) * 1e9 / OPS);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: disk-bench DEVICE\n");
		return 2;
	}
	int fd = open(argv[1], O_RDWR | O_DIRECT);
	void *buf;
	if (fd < 0 || posix_memalign(&buf, BLOCK, BLOCK)) {
		perror(argv[1]);
		return 1;
	}
	memset(buf, 0x5a, BLOCK);
	return run(fd, "seq_write", 1, 0, buf) || run(fd, "seq_read", 0, 0, buf) ||
	       run(fd, "rand_write", 1, 1, buf) || run(fd, "rand_read", 0, 1, buf);
}
