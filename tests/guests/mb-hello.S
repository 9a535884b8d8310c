/*
 * A tiny multiboot guest for QEMU's `-kernel` (tests/vm/qemu.sh runs it with
 * `-accel kvm,kernel-irqchip=off` on /dev/rvmx and on /dev/kvm and compares the output).
 *
 * It exercises what a real OS needs from a KVM without an in-kernel irqchip: SeaBIOS and the
 * multiboot option ROM (real mode, mode switches, PIO) run first; then this code prints on
 * QEMU's 16550 UART, reads CPUID, takes timer interrupts from QEMU's userspace i8254 + i8259
 * (injected with KVM_INTERRUPT through interrupt windows, woken from HLT), touches memory
 * above 1 MiB, and leaves through isa-debug-exit (QEMU exits with status (code << 1) | 1).
 */
	.set	MB_MAGIC, 0x1badb002
	.set	MB_FLAGS, 0
	.set	COM1, 0x3f8
	.set	EXIT_PORT, 0xf4
	.set	TICKS_WANTED, 5

	.section .multiboot, "a"
	.align	4
	.long	MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

	.text
	.code32
	.globl	_start
_start:
	cli
	cmp	$0x2badb002, %eax	/* the loader's multiboot magic */
	jne	bad_loader
	lgdt	gdt_desc
	ljmp	$0x08, $1f
1:	mov	$0x10, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss
	mov	%ax, %fs
	mov	%ax, %gs
	mov	$stack_top, %esp

	mov	$msg_hello, %esi
	call	puts

	/* CPUID vendor string: KVM and rvmx both pass the host's through. */
	xor	%eax, %eax
	cpuid
	mov	%ebx, vendor
	mov	%edx, vendor + 4
	mov	%ecx, vendor + 8
	mov	$msg_vendor, %esi
	call	puts
	mov	$vendor, %esi
	call	puts
	mov	$msg_nl, %esi
	call	puts

	/* Memory: write a pattern over 64 KiB at 2 MiB, read it back. */
	mov	$0x200000, %edi
	mov	$0x4000, %ecx
2:	mov	%edi, (%edi)
	add	$4, %edi
	loop	2b
	mov	$0x200000, %edi
	mov	$0x4000, %ecx
3:	cmp	%edi, (%edi)
	jne	bad_memory
	add	$4, %edi
	loop	3b
	mov	$msg_memory, %esi
	call	puts

	/* IDT: every vector reports an unexpected event, except IRQ0 (remapped to 0x20). */
	mov	$idt, %edi
	xor	%ecx, %ecx
4:	mov	$unexpected, %eax
	cmp	$0x20, %ecx
	jne	5f
	mov	$irq0, %eax
5:	mov	%ax, (%edi)		/* offset 15:0 */
	movw	$0x08, 2(%edi)		/* selector */
	movw	$0x8e00, 4(%edi)	/* present, DPL 0, 32-bit interrupt gate */
	shr	$16, %eax
	mov	%ax, 6(%edi)		/* offset 31:16 */
	add	$8, %edi
	inc	%ecx
	cmp	$256, %ecx
	jne	4b
	lidt	idt_desc

	/* i8259: vectors 0x20/0x28, only IRQ0 unmasked. */
	mov	$0x11, %al
	out	%al, $0x20
	out	%al, $0xa0
	mov	$0x20, %al
	out	%al, $0x21
	mov	$0x28, %al
	out	%al, $0xa1
	mov	$0x04, %al
	out	%al, $0x21
	mov	$0x02, %al
	out	%al, $0xa1
	mov	$0x01, %al
	out	%al, $0x21
	out	%al, $0xa1
	mov	$0xfe, %al
	out	%al, $0x21
	mov	$0xff, %al
	out	%al, $0xa1

	/* i8254 channel 0, mode 2, 100 Hz. */
	mov	$0x34, %al
	out	%al, $0x43
	mov	$(1193182 / 100) & 0xff, %al
	out	%al, $0x40
	mov	$(1193182 / 100) >> 8, %al
	out	%al, $0x40

	/* Sleep in HLT until the timer has ticked TICKS_WANTED times. */
6:	sti
	hlt
	cli
	cmpl	$TICKS_WANTED, ticks
	jb	6b
	mov	$msg_ticks, %esi
	call	puts

	mov	$0, %eax
	jmp	leave

bad_loader:
	mov	$1, %eax
	jmp	leave
bad_memory:
	mov	$msg_bad_memory, %esi
	call	puts
	mov	$2, %eax
	jmp	leave
unexpected:
	mov	$msg_unexpected, %esi
	call	puts
	mov	$3, %eax
leave:
	mov	$EXIT_PORT, %dx
	out	%eax, %dx
	/* Not under isa-debug-exit: stop here. */
7:	cli
	hlt
	jmp	7b

irq0:
	push	%eax
	incl	ticks
	mov	$0x20, %al		/* non-specific EOI */
	out	%al, $0x20
	pop	%eax
	iret

/* puts: print the NUL-terminated string at %esi on COM1 (polling the transmitter). */
puts:
	push	%eax
	push	%edx
1:	lodsb
	test	%al, %al
	jz	3f
	mov	%al, %ah
	mov	$COM1 + 5, %dx
2:	in	%dx, %al
	test	$0x20, %al
	jz	2b
	mov	$COM1, %dx
	mov	%ah, %al
	out	%al, %dx
	jmp	1b
3:	pop	%edx
	pop	%eax
	ret

	.section .rodata
msg_hello:	.asciz	"mb-hello: protected mode, multiboot loader ok\n"
msg_vendor:	.asciz	"mb-hello: cpu vendor "
msg_nl:		.asciz	"\n"
msg_memory:	.asciz	"mb-hello: 64 KiB at 2 MiB written and read back\n"
msg_bad_memory:	.asciz	"mb-hello: memory at 2 MiB reads back wrong\n"
msg_ticks:	.asciz	"mb-hello: 5 timer interrupts taken in HLT\n"
msg_unexpected:	.asciz	"mb-hello: unexpected exception or interrupt\n"

	.align	8
gdt:	.quad	0
	.quad	0x00cf9a000000ffff	/* 0x08: flat 32-bit code */
	.quad	0x00cf92000000ffff	/* 0x10: flat data */
gdt_desc:
	.word	gdt_desc - gdt - 1
	.long	gdt
idt_desc:
	.word	256 * 8 - 1
	.long	idt

	.data
ticks:	.long	0
vendor:	.fill	13, 1, 0

	.bss
	.align	16
idt:	.fill	256 * 8, 1, 0
	.fill	4096, 1, 0
stack_top:
