// SPDX-License-Identifier: GPL-2.0
/*
 * Does the test VM's CPU keep a task's AVX state across context switches? Two processes on
 * CPU 0 hold different values in YMM7-YMM9 (upper halves included) and yield to each other
 * LOOPS times; each checks its YMM8 after every switch. No hypervisor is involved: this tests
 * the emulator and the L1 kernel, so that a failure in the VM suites is not blamed on rvmx.
 * (Bochs 2.7's compacted XSAVE fails it: see scripts/vm-run's --cpu.)
 *
 *   fpu-context-check [LOOPS]     exit 0: intact (or no AVX to check), 1: state lost
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static int os_avx(void)
{
	unsigned int lo, hi;

	if (!__builtin_cpu_supports("avx"))
		return 0;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return (lo & 6) == 6; /* the kernel switches SSE and AVX state */
}

int main(int argc, char **argv)
{
	long loops = argc > 1 ? atol(argv[1]) : 20000, n;
	cpu_set_t cpu0;
	double v, out[4];
	int child, status = 0;

	if (!os_avx()) {
		printf("fpu-context-check: no AVX, nothing to check\n");
		return 0;
	}
	CPU_ZERO(&cpu0);
	CPU_SET(0, &cpu0);
	if (sched_setaffinity(0, sizeof(cpu0), &cpu0)) {
		perror("sched_setaffinity");
		return 1;
	}
	child = fork();
	if (child < 0) {
		perror("fork");
		return 1;
	}
	v = child ? 3.5 : 7.25;
	for (n = 0; n < loops; n++) {
		__asm__ volatile("vbroadcastsd %0, %%ymm7\n\tvbroadcastsd %0, %%ymm8\n\tvbroadcastsd %0, %%ymm9"
				 : : "m"(v) : "xmm7", "xmm8", "xmm9");
		sched_yield();
		__asm__ volatile("vmovupd %%ymm8, %0\n\tvzeroupper" : "=m"(out) : : "memory");
		if (out[3] != v) {
			printf("fpu-context-check: pid %d, switch %ld: YMM8's upper lane is %g, not %g\n",
			       getpid(), n, out[3], v);
			status = 1;
			break;
		}
	}
	if (child) {
		int s;

		if (waitpid(child, &s, 0) != child || !WIFEXITED(s) || WEXITSTATUS(s) != 0)
			status = 1;
		if (!status)
			printf("fpu-context-check: %ld switches each, AVX state intact\n", loops);
	}
	return status;
}
