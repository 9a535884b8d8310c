/*
 * A raw real-mode image for `rvmx run --flat` (loaded at 0x1000). Each entry point ends the
 * VM a different way, so one image tests every outcome:
 *   0x1000  prints a line on COM1, then writes 42 to the debug-exit port 0xf4
 *   0x1100  asks the i8042 to pulse the reset line (a guest `reboot`)
 *   0x1200  triple-faults (an empty IDT, then INT3)
 *   0x1300  halts with interrupts off
 */
	.code16
	.text
	.globl	_start
_start:
	xor	%ax, %ax
	mov	%ax, %ds
	mov	$msg, %si
	cld
1:	lodsb
	test	%al, %al
	jz	3f
	mov	%al, %ah
	mov	$0x3fd, %dx		/* line status: wait for an empty transmitter */
2:	in	%dx, %al
	test	$0x20, %al
	jz	2b
	mov	$0x3f8, %dx
	mov	%ah, %al
	out	%al, %dx
	jmp	1b
3:	mov	$42, %al
	out	%al, $0xf4
	hlt

	.org	0x100
reset:
	mov	$0xfe, %al
	out	%al, $0x64
	hlt

	.org	0x200
triple:
	lidt	empty_idt
	int3
	hlt

	.org	0x300
halt:
	cli
	hlt

	.org	0x400
msg:	.asciz	"flat-hello: real mode, COM1 through rvmx run\n"
empty_idt:
	.word	0
	.long	0
