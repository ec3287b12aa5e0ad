//! The microkernel's assembly: image entry, the syscall gate, exception
//! stubs, the upcall into the extension, the world switch and the jump to
//! the loader's promotion routine. Offsets into `PerCpu` and `SwitchArgs`
//! are checked against the Rust layouts in `percpu.rs`.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text.entry, "ax"
    .globl microv_kernel_entry
microv_kernel_entry:
    // RDI = this CPU's landing page; RSP = this CPU's kernel stack top.
    and rsp, -16
    xor ebp, ebp
    call microv_kernel_main
    ud2

    .text
    // ---- syscall gate (LSTAR) ----
    .globl microv_syscall_entry
microv_syscall_entry:
    swapgs
    mov gs:[16], rsp
    mov rsp, gs:[8]
    push 0                      // keeps the call below 16-byte aligned
    push r11
    push rcx
    push r9
    push r8
    push r10
    push rdx
    push rsi
    push rdi
    push rax
    mov rdi, rsp
    cld
    call microv_syscall
    pop rax
    pop rdi
    pop rsi
    pop rdx
    pop r10
    pop r8
    pop r9
    pop rcx
    pop r11
    mov rsp, gs:[16]
    swapgs
    sysretq

    // ---- upcall: microv_enter_extension(kind, index, a, b) -> ! ----
    .globl microv_enter_extension
microv_enter_extension:
    mov r8, rcx
    mov rcx, gs:[24]            // extension entry
    mov r11, gs:[32]            // extension stack top
    mov rsp, r11
    mov r11, 0x2                // RFLAGS for ring 3: IF clear (GIF is clear anyway)
    xor eax, eax
    xor ebx, ebx
    xor ebp, ebp
    xor r9d, r9d
    xor r10d, r10d
    xor r12d, r12d
    xor r13d, r13d
    xor r14d, r14d
    xor r15d, r15d
    swapgs
    sysretq

    // ---- world switch: microv_world_switch(&SwitchArgs) ----
    // SwitchArgs: [0] VMCB PA, [8] host VMCB PA, [16] GPR array, [24] FPU area.
    .globl microv_world_switch
microv_world_switch:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdi
    mov r8, [rdi + 24]
    mov eax, -1
    mov edx, -1
    xrstor64 [r8]
    mov rsi, [rdi + 16]
    mov rax, [rdi]
    mov rcx, [rsi + 8]
    mov rdx, [rsi + 16]
    mov rbx, [rsi + 24]
    mov rbp, [rsi + 40]
    mov r8,  [rsi + 64]
    mov r9,  [rsi + 72]
    mov r10, [rsi + 80]
    mov r11, [rsi + 88]
    mov r12, [rsi + 96]
    mov r13, [rsi + 104]
    mov r14, [rsi + 112]
    mov r15, [rsi + 120]
    mov rdi, [rsi + 56]
    mov rsi, [rsi + 48]
    vmload rax
    vmrun rax
    vmsave rax
    push rdi
    mov rdi, [rsp + 8]
    mov rdi, [rdi + 16]
    mov [rdi + 8], rcx
    mov [rdi + 16], rdx
    mov [rdi + 24], rbx
    mov [rdi + 40], rbp
    mov [rdi + 48], rsi
    mov [rdi + 64], r8
    mov [rdi + 72], r9
    mov [rdi + 80], r10
    mov [rdi + 88], r11
    mov [rdi + 96], r12
    mov [rdi + 104], r13
    mov [rdi + 112], r14
    mov [rdi + 120], r15
    pop rax
    mov [rdi + 56], rax
    pop rdi
    mov r8, [rdi + 24]
    mov eax, -1
    mov edx, -1
    xsave64 [r8]
    fninit
    ldmxcsr [rip + microv_host_mxcsr]
    mov rax, [rdi + 8]
    vmload rax
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret

    // ---- microv_promote_jump(landing, fpu_or_null, entry) -> ! ----
    .globl microv_promote_jump
microv_promote_jump:
    mov r8, rdx
    test rsi, rsi
    jz 1f
    mov eax, -1
    mov edx, -1
    xrstor64 [rsi]
1:
    jmp r8

    // ---- load_host_segments(gdtr_ptr, idtr_ptr) ----
    .globl microv_load_host_segments
microv_load_host_segments:
    lgdt [rdi]
    lidt [rsi]
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    lea rax, [rip + 2f]
    push 0x08
    push rax
    retfq
2:
    mov ax, 0x30
    ltr ax
    ret

    // ---- MSR access that survives #GP (for the root's pass-through) ----
    // microv_rdmsr_safe(index, *mut u64) -> 0 ok / 1 faulted
    .globl microv_rdmsr_safe
microv_rdmsr_safe:
    mov ecx, edi
    .globl microv_rdmsr_insn
microv_rdmsr_insn:
    rdmsr
    shl rdx, 32
    or rax, rdx
    mov [rsi], rax
    xor eax, eax
    ret
    // microv_wrmsr_safe(index, value) -> 0 ok / 1 faulted
    .globl microv_wrmsr_safe
microv_wrmsr_safe:
    mov ecx, edi
    mov eax, esi
    mov rdx, rsi
    shr rdx, 32
    .globl microv_wrmsr_insn
microv_wrmsr_insn:
    wrmsr
    xor eax, eax
    ret
    // The exception handler resumes a faulting rdmsr/wrmsr here.
    .globl microv_msr_fixup
microv_msr_fixup:
    mov eax, 1
    ret

    // ---- exceptions: every vector on IST 1 ----
    .macro stub_noerr v
    .balign 16
    push 0
    push \v
    jmp microv_exception_common
    .endm
    .macro stub_err v
    .balign 16
    push \v
    jmp microv_exception_common
    .endm

    .balign 16
    .globl microv_exception_stubs
microv_exception_stubs:
    .irp v, 0,1,2,3,4,5,6,7
    stub_noerr \v
    .endr
    stub_err 8
    stub_noerr 9
    .irp v, 10,11,12,13,14
    stub_err \v
    .endr
    .irp v, 15,16
    stub_noerr \v
    .endr
    stub_err 17
    .irp v, 18,19,20
    stub_noerr \v
    .endr
    stub_err 21
    .irp v, 22,23,24,25,26,27,28
    stub_noerr \v
    .endr
    .irp v, 29,30
    stub_err \v
    .endr
    stub_noerr 31

microv_exception_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    // From ring 3 GS still holds the extension's base: reach the per-CPU data.
    test qword ptr [rsp + 18*8], 3
    jz 3f
    swapgs
3:
    mov rdi, rsp
    mov rbx, rsp
    and rsp, -16
    cld
    call microv_exception
    // Returned: a recoverable fault (an MSR fix-up in ring 0): resume.
    mov rsp, rbx
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16                 // vector and error code
    iretq

    .section .rodata
    .balign 4
microv_host_mxcsr:
    .long 0x1f80
"#
);

extern "C" {
    /// `syscall` target (LSTAR).
    pub fn microv_syscall_entry();
    /// First of 32 exception stubs, 16 bytes apart.
    pub fn microv_exception_stubs();
    /// Enters the extension; never returns.
    pub fn microv_enter_extension(kind: u64, index: u64, a: u64, b: u64) -> !;
    /// Runs a vCPU until its next #VMEXIT.
    pub fn microv_world_switch(args: *mut super::percpu::SwitchArgs);
    /// Loads the FPU state (if any) and jumps to the loader's promotion routine.
    pub fn microv_promote_jump(landing: u64, fpu: u64, entry: u64) -> !;
    /// RDMSR that returns 1 instead of faulting on #GP.
    pub fn microv_rdmsr_safe(index: u32, value: *mut u64) -> u64;
    /// WRMSR that returns 1 instead of faulting on #GP.
    pub fn microv_wrmsr_safe(index: u32, value: u64) -> u64;
    /// The `rdmsr` inside `microv_rdmsr_safe`.
    pub fn microv_rdmsr_insn();
    /// The `wrmsr` inside `microv_wrmsr_safe`.
    pub fn microv_wrmsr_insn();
    /// Where a faulting `rdmsr`/`wrmsr` resumes.
    pub fn microv_msr_fixup();
    /// Loads MicroV's GDT, IDT, segments and TSS.
    pub fn microv_load_host_segments(gdtr: *const u8, idtr: *const u8);
}
