/*
 * A raw real-mode image for `rvmx run --flat` (loaded at 0x1000). Each entry point ends the
 * VM a different way, so one image tests every outcome:
 *   0x1000  prints a line on COM1, then writes 42 to the debug-exit port 0xf4
 *   0x1100  asks the i8042 to pulse the reset line (a guest `reboot`)
 *   0x1200  triple-faults (an empty IDT, then INT3)
 *   0x1300  halts with interrupts off
 *   0x1400  programs the 8259s and the 8254 (100 Hz), sleeps in HLT until 5 timer interrupts
 *           arrived (injected by rvmx run's userspace PIC), prints a line, writes 43 to 0xf4
 *   0x1500  reads a line from COM1, interrupt-driven (IRQ4 through the PIC), prints it back,
 *           writes 44 to 0xf4
 *   0x1600  halts with interrupts on and nothing that could interrupt it (no timer
 *           programmed; with the input closed, nothing comes from COM1 either)
 *   0x1680  string I/O on COM1: REP INSB of its line status four times, then REP OUTSB of a
 *           line and of those four bytes (one KVM_EXIT_IO each, count > 1), writes 45 to 0xf4
 */
	.code16
	.text
	.globl	_start
_start:
	xor	%ax, %ax
	mov	%ax, %ds
	mov	%ax, %ss
	mov	$0x8000, %sp
	mov	$msg, %si
	call	puts
	mov	$42, %al
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
timer:
	cli
	xor	%ax, %ax
	mov	%ax, %ds
	mov	%ax, %ss
	mov	$0x8000, %sp
	movw	$irq0, 0x20 * 4		/* IVT entry 0x20: offset, segment 0 */
	movw	$0, 0x20 * 4 + 2
	mov	$0xfe, %bl		/* only IRQ0 */
	call	pic_init
	mov	$0x34, %al		/* counter 0, mode 2, low then high: 100 Hz */
	out	%al, $0x43
	mov	$(11932 & 0xff), %al
	out	%al, $0x40
	mov	$(11932 >> 8), %al
	out	%al, $0x40
1:	sti
	hlt
	cli
	cmpw	$5, ticks
	jb	1b
	mov	$timer_msg, %si
	call	puts
	mov	$43, %al
	out	%al, $0xf4
	hlt
irq0:
	incw	%cs:ticks
	push	%ax
	mov	$0x20, %al		/* non-specific EOI */
	out	%al, $0x20
	pop	%ax
	iret
/* Both 8259s: vectors 0x20 and 0x28, slave on IRQ2, master mask %bl, slave masked. */
pic_init:
	mov	$0x11, %al		/* ICW1 to both 8259s */
	out	%al, $0x20
	out	%al, $0xa0
	mov	$0x20, %al		/* ICW2 */
	out	%al, $0x21
	mov	$0x28, %al
	out	%al, $0xa1
	mov	$4, %al			/* ICW3: slave on IRQ2 */
	out	%al, $0x21
	mov	$2, %al
	out	%al, $0xa1
	mov	$1, %al			/* ICW4: 8086 mode */
	out	%al, $0x21
	out	%al, $0xa1
	mov	%bl, %al
	out	%al, $0x21
	mov	$0xff, %al
	out	%al, $0xa1
	ret
puts:
	lodsb
	test	%al, %al
	jz	3f
	mov	%al, %ah
	mov	$0x3fd, %dx
2:	in	%dx, %al
	test	$0x20, %al
	jz	2b
	mov	$0x3f8, %dx
	mov	%ah, %al
	out	%al, %dx
	jmp	puts
3:	ret

	.org	0x500
echo:
	cli
	xor	%ax, %ax
	mov	%ax, %ds
	mov	%ax, %ss
	mov	$0x8000, %sp
	movw	$irq4, 0x24 * 4		/* IVT entry 0x24 (IRQ4): offset, segment 0 */
	movw	$0, 0x24 * 4 + 2
	mov	$0xef, %bl		/* only IRQ4 */
	call	pic_init
	mov	$0x3f9, %dx		/* IER: interrupt when data is received */
	mov	$1, %al
	out	%al, %dx
	mov	$0x3fc, %dx		/* MCR: OUT2 gates the UART's interrupt line */
	mov	$0x08, %al
	out	%al, %dx
1:	sti
	hlt
	cli
	cmpb	$0, done
	je	1b
	mov	$echo_msg, %si
	call	puts
	mov	$line, %si
	call	puts
	mov	$44, %al
	out	%al, $0xf4
	hlt
irq4:	/* drains the receive FIFO into `line` until a newline */
	push	%ax
	push	%bx
	push	%dx
2:	mov	$0x3fd, %dx
	in	%dx, %al
	test	$1, %al
	jz	3f
	mov	$0x3f8, %dx
	in	%dx, %al
	cmp	$'\n', %al
	jne	4f
	movb	$1, done
4:	mov	len, %bx
	cmp	$62, %bx
	jae	2b
	mov	%al, line(%bx)
	incw	len
	jmp	2b
3:	mov	$0x20, %al		/* non-specific EOI */
	out	%al, $0x20
	pop	%dx
	pop	%bx
	pop	%ax
	iret

	.org	0x600
idle:
	sti
	hlt
	jmp	idle

	.org	0x680
string_io:
	xor	%ax, %ax
	mov	%ax, %ds
	mov	%ax, %es
	cld
	mov	$0x3fd, %dx		/* line status: 0x60 ('`'), the transmitter empty */
	mov	$lsr, %di
	mov	$4, %cx
	rep insb
	mov	$0x3f8, %dx
	mov	$string_msg, %si
	mov	$(lsr - string_msg), %cx
	rep outsb
	mov	$lsr, %si
	mov	$5, %cx			/* the four status bytes and the newline */
	rep outsb
	mov	$45, %al
	out	%al, $0xf4
	hlt

	.org	0x700
msg:	.asciz	"flat-hello: real mode, COM1 through rvmx run\n"
timer_msg:	.asciz	"flat-hello: 5 timer interrupts from the PIT through the PIC, woken from HLT\n"
echo_msg:	.asciz	"flat-hello: read from COM1: "
ticks:	.word	0
len:	.word	0
done:	.byte	0
line:	.fill	64, 1, 0
string_msg:	.ascii	"flat-hello: REP OUTSB through rvmx run; REP INSB of the line status: "
lsr:	.fill	4, 1, 0
	.byte	10
empty_idt:
	.word	0
	.long	0
