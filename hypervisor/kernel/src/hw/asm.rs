//! The microkernel's assembly: image entry, the syscall gate, exception
//! stubs, the upcall into the extension, the world switch and the last
//! steps of promotion. Every offset and selector is a `const` operand taken
//! from the Rust layouts (`offset_of!`, `gpr::*`, `selector::*`).

use core::arch::global_asm;
use core::mem::offset_of;
use core::sync::atomic::AtomicU64;

use microv_abi::launch::{
    gpr, BootInfo, ImageHeader, KERNEL_STACK_SIZE, MAX_CPUS, PAGE_SIZE, POOL_VA,
};
use microv_abi::syscall::VsRegs;
use microv_arch::descriptor::selector;
use microv_arch::msr;
use microv_arch::xsave::HOST_XCR0;

use super::cpu::PromoteRegs;
use super::percpu::{PerCpu, SwitchArgs, VmxSwitchArgs};

/// Bit *i* set once CPU *i* entered: a second entry with the same landing
/// page (which would share its stack) halts instead.
static CLAIMED: AtomicU64 = AtomicU64::new(0);

const fn reg(i: usize) -> usize {
    offset_of!(VsRegs, gprs) + 8 * i
}

/// RFLAGS for ring 3: reserved bit 1 only (IF clear; GIF is clear anyway).
const USER_RFLAGS: u64 = 0x2;
const MXCSR_DEFAULT: u32 = 0x1f80;
/// Offset of XSTATE_BV in an XSAVE area (the header follows the 512-byte
/// legacy area).
const XSTATE_BV_OFFSET: usize = 512;

global_asm!(
    r#"
    .section .text.entry, "ax"
    .globl microv_kernel_entry
microv_kernel_entry:
    // RDI = this CPU's landing page (the loader's address). RSP is the
    // loader's and is never written: the stack comes from the boot info,
    // which lies in the pool, right after this image.
    mov rax, qword ptr [rip + {header} + {hdr_size}]
    add rax, {page_size} - 1
    and rax, -{page_size}
    movabs rbx, {pool_va}
    add rax, rbx
    mov ecx, dword ptr [rax + {bi_cpu_count}]
    cmp rcx, {max_cpus}
    ja 9f
    xor edx, edx
2:
    cmp rdx, rcx
    jae 9f
    cmp rdi, qword ptr [rax + {bi_landing} + rdx * 8]
    je 3f
    inc rdx
    jmp 2b
3:
    lock bts qword ptr [rip + {claimed}], rdx
    jc 9f
    mov rsp, qword ptr [rax + {bi_stacks}]
    add rsp, rbx
    lea rcx, [rdx + 1]
    imul rcx, rcx, {stack_size}
    add rsp, rcx
    mov rsi, rdx
    mov rdx, rax
    xor ebp, ebp
    call microv_kernel_main
    ud2
9:
    cli
    hlt
    jmp 9b

    .text
    // ---- syscall gate (LSTAR) ----
    .globl microv_syscall_entry
microv_syscall_entry:
    swapgs
    mov gs:[{pc_user_rsp}], rsp
    mov rsp, gs:[{pc_kernel_rsp}]
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
    mov rsi, gs:[{pc_self}]
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
    mov rsp, gs:[{pc_user_rsp}]
    swapgs
    sysretq

    // ---- upcall: microv_enter_extension(kind, index, a, b) -> ! ----
    .globl microv_enter_extension
microv_enter_extension:
    mov r8, rcx
    mov rcx, gs:[{pc_ext_entry}]
    mov rsp, gs:[{pc_ext_stack}]
    mov r11, {user_rflags}
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

    // ---- load_guest_fpu BASE, XCR0, FPU: XCR0 and FPU state of a vCPU ----
    // [BASE + XCR0] is its XCR0 (checked by the caller), [BASE + FPU] its
    // XSAVE area. The state goes in under that XCR0 plus SSE: SSE registers
    // work whatever XCR0 says, so a guest without SSE in XCR0 still gets its
    // own XMM registers back, never MicroV's. XRSTOR faults on a component
    // XCR0 does not enable, and the area may hold one from before the guest
    // lowered XCR0 (XSAVE leaves the bits of disabled components alone), so
    // only what is enabled is restored. Then exactly the vCPU's XCR0.
    // Clobbers RAX, RCX, RDX, R9.
    .macro load_guest_fpu base, xcr0, fpu
    xor ecx, ecx
    mov eax, dword ptr [\base + \xcr0]
    or eax, {xcr0_sse}
    mov edx, dword ptr [\base + \xcr0 + 4]
    xsetbv
    mov r9, [\base + \fpu]
    mov rax, [\base + \xcr0]
    or rax, {xcr0_sse}
    and qword ptr [r9 + {xstate_bv}], rax
    mov eax, -1
    mov edx, -1
    xrstor64 [r9]
    test byte ptr [\base + \xcr0], {xcr0_sse}
    jnz 3f
    xor ecx, ecx
    mov eax, dword ptr [\base + \xcr0]
    mov edx, dword ptr [\base + \xcr0 + 4]
    xsetbv
3:
    .endm

    // ---- load_guest_gprs REGS / store_guest_gprs REGS: RCX, RDX, RBX, RBP
    // and R8–R15 from or to a register page (RAX, RSI, RDI and RSP are each
    // switch's own business) ----
    .macro load_guest_gprs regs
    mov rcx, [\regs + {r_rcx}]
    mov rdx, [\regs + {r_rdx}]
    mov rbx, [\regs + {r_rbx}]
    mov rbp, [\regs + {r_rbp}]
    mov r8,  [\regs + {r_r8}]
    mov r9,  [\regs + {r_r9}]
    mov r10, [\regs + {r_r10}]
    mov r11, [\regs + {r_r11}]
    mov r12, [\regs + {r_r12}]
    mov r13, [\regs + {r_r13}]
    mov r14, [\regs + {r_r14}]
    mov r15, [\regs + {r_r15}]
    .endm
    .macro store_guest_gprs regs
    mov [\regs + {r_rcx}], rcx
    mov [\regs + {r_rdx}], rdx
    mov [\regs + {r_rbx}], rbx
    mov [\regs + {r_rbp}], rbp
    mov [\regs + {r_r8}], r8
    mov [\regs + {r_r9}], r9
    mov [\regs + {r_r10}], r10
    mov [\regs + {r_r11}], r11
    mov [\regs + {r_r12}], r12
    mov [\regs + {r_r13}], r13
    mov [\regs + {r_r14}], r14
    mov [\regs + {r_r15}], r15
    .endm

    // ---- save_guest_fpu ARGS, REGS_OFF, FPU_OFF: the guest's XCR0 and FPU
    // state into its register page and XSAVE area, then MicroV's own ----
    // Records XCR0 as the CPU has it (an emulator without the XSETBV
    // intercept lets the guest change it directly), saves under it plus
    // SSE (see load_guest_fpu). Clobbers RAX, RCX, RDX, RSI, R8.
    .macro save_guest_fpu args, regs, fpu
    mov rsi, [\args + \regs]
    xor ecx, ecx
    xgetbv
    mov dword ptr [rsi + {r_xcr0}], eax
    mov dword ptr [rsi + {r_xcr0} + 4], edx
    test eax, {xcr0_sse}
    jnz 4f
    or eax, {xcr0_sse}
    xsetbv
4:
    mov r8, [\args + \fpu]
    mov eax, -1
    mov edx, -1
    xsave64 [r8]
    xor ecx, ecx
    mov eax, {host_xcr0}
    xor edx, edx
    xsetbv
    fninit
    ldmxcsr [rip + microv_host_mxcsr]
    .endm

    // ---- world switch: microv_world_switch(&SwitchArgs) ----
    .globl microv_world_switch
microv_world_switch:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdi
    load_guest_fpu rdi, {sa_xcr0}, {sa_fpu}
    mov rsi, [rdi + {sa_regs}]
    mov rax, [rdi + {sa_vmcb}]
    load_guest_gprs rsi
    mov rdi, [rsi + {r_rdi}]
    mov rsi, [rsi + {r_rsi}]
    // IF is what masks host interrupts in a guest with V_INTR_MASKING
    // (VMRUN keeps the host's IF): set, a host interrupt ends the guest's
    // run. GIF stays clear in host mode, so none is taken here.
    sti
    vmload rax
    vmrun rax
    // Host mode again, but VMRUN does not switch what VMLOAD covers: the
    // guest's TR, GS base and syscall MSRs are still loaded. Save them and
    // load MicroV's before anything else, so an exception (a machine
    // check) can only ever arrive on MicroV's TSS.
    vmsave rax
    mov rax, [rsp]
    mov rax, [rax + {sa_host_vmcb}]
    vmload rax
    // #VMEXIT disables the guest's breakpoints (AMD APM vol. 2), but QEMU
    // before 8.0 only rewrote DR7 and left the guest's breakpoints armed
    // inside the emulator, where rewriting the same DR7 value does not
    // reach them. Host mode must never take a #DB the guest set up, so
    // disarm them: a DR7 that differs outside the enable bits makes the
    // emulator drop every breakpoint, then the real value.
    mov eax, {dr7_flush}
    mov dr7, rax
    mov eax, {dr7_init}
    mov dr7, rax
    cli
    push rdi
    mov rdi, [rsp + 8]
    mov rdi, [rdi + {sa_regs}]
    store_guest_gprs rdi
    mov [rdi + {r_rsi}], rsi
    pop rax
    mov [rdi + {r_rdi}], rax
    pop rdi
    // Record the guest's XCR0 as the CPU has it: the XSETBV intercept lets
    // MicroV check every change, but an emulator without that intercept
    // (QEMU 7.2's TCG) lets the guest change XCR0 directly, and the guest
    // must get back what it set. Then save its FPU state under that XCR0
    // and switch to MicroV's own.
    save_guest_fpu rdi, {sa_regs}, {sa_fpu}
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret

    // ---- VMX world switch: microv_vmx_world_switch(&VmxSwitchArgs) ----
    // VMLAUNCH (first entry of this VMCS) or VMRESUME; the exit arrives at
    // microv_vmx_exit on the stack this call set as the VMCS's host RSP
    // (the pushed RDI on top). VMX keeps neither RAX nor CR2 in the VMCS:
    // RAX travels in the register page (`vmx_state` put it there), CR2 in
    // the arguments. Host RFLAGS after an exit: IF clear.
    .globl microv_vmx_world_switch
microv_vmx_world_switch:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdi
    load_guest_fpu rdi, {va_xcr0}, {va_fpu}
    mov rax, {vmcs_host_rsp}
    vmwrite rax, rsp
    jbe 5f
    mov rax, [rdi + {va_cr2}]
    mov cr2, rax
    mov rsi, [rdi + {va_regs}]
    load_guest_gprs rsi
    cmp qword ptr [rdi + {va_launched}], 0
    mov rax, [rsi + {r_rax}]
    mov rdi, [rsi + {r_rdi}]
    mov rsi, [rsi + {r_rsi}]
    je 6f
    vmresume
    jmp 5f
6:
    vmlaunch
5:
    // VMfail (the VMWRITE above or the entry): RSP is this call's; report
    // RFLAGS and put MicroV's registers back (the guest's got no further).
    pushfq
    pop rax
    bts rax, 63
    mov rdi, [rsp]
    mov [rdi + {va_fail}], rax
    jmp 7f

    .globl microv_vmx_exit
microv_vmx_exit:
    push rdi
    push rax
    mov rdi, [rsp + 16]
    mov rax, [rdi + {va_regs}]
    store_guest_gprs rax
    mov [rax + {r_rsi}], rsi
    pop rcx
    mov [rax + {r_rax}], rcx
    pop rcx
    mov [rax + {r_rdi}], rcx
    mov rcx, cr2
    mov [rdi + {va_cr2}], rcx
    mov qword ptr [rdi + {va_fail}], 0
7:
    mov rdi, [rsp]
    save_guest_fpu rdi, {va_regs}, {va_fpu}
    pop rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret

    // ---- microv_promote_final(&PromoteRegs) -> ! ----
    // Every value was checked by the caller, so nothing here faults; the
    // root's TR and GS arrive last (VMLOAD), and CR3 is handed to the
    // trampoline in RAX: host mode reads no root-writable memory here.
    .globl microv_promote_final
microv_promote_final:
    mov r8, rdi
    load_guest_fpu r8, {pr_xcr0}, {pr_fpu}
    mov ecx, {msr_pat}
    mov eax, dword ptr [r8 + {pr_pat}]
    mov edx, dword ptr [r8 + {pr_pat} + 4]
    wrmsr
    mov rax, [r8 + {pr_cr2}]
    mov cr2, rax
    mov rax, [r8 + {pr_cr4}]
    mov cr4, rax
    mov rax, [r8 + {pr_cr0}]
    mov cr0, rax
    // AMD: what VMLOAD covers (TR, GS, FS, LDTR, syscall MSRs) last. Intel
    // (no VMCB: 0) loaded the MSRs before; the trampoline loads TR/LDTR.
    mov rax, [r8 + {pr_vmcb}]
    test rax, rax
    jz 8f
    vmload rax
8:
    mov rdi, [r8 + {pr_landing}]
    mov rcx, [r8 + {pr_entry}]
    mov rax, [r8 + {pr_cr3}]
    // Nothing of MicroV's goes along into the root's code: only RDI (the
    // landing page), RAX (the root's CR3) and RCX (the entry) stay.
    xor edx, edx
    xor ebx, ebx
    xor esi, esi
    xor ebp, ebp
    xor r8d, r8d
    xor r9d, r9d
    xor r10d, r10d
    xor r11d, r11d
    xor r12d, r12d
    xor r13d, r13d
    xor r14d, r14d
    xor r15d, r15d
    jmp rcx

    // ---- load_host_segments(gdtr_ptr, idtr_ptr) ----
    .globl microv_load_host_segments
microv_load_host_segments:
    lgdt [rdi]
    lidt [rsi]
    mov ax, {kernel_data}
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    lea rax, [rip + 2f]
    push {kernel_code}
    push rax
    retfq
2:
    mov ax, {tss}
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

    // GS is not used here: the handler finds its CPU from this (IST) stack.
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
    .long {mxcsr}
"#,
    header = sym super::MICROV_KERNEL_HEADER,
    claimed = sym CLAIMED,
    hdr_size = const offset_of!(ImageHeader, image_size),
    page_size = const PAGE_SIZE,
    pool_va = const POOL_VA,
    bi_cpu_count = const offset_of!(BootInfo, cpu_count),
    bi_landing = const offset_of!(BootInfo, landing),
    bi_stacks = const offset_of!(BootInfo, stacks_offset),
    max_cpus = const MAX_CPUS,
    stack_size = const KERNEL_STACK_SIZE,
    pc_self = const offset_of!(PerCpu, self_va),
    pc_kernel_rsp = const offset_of!(PerCpu, kernel_rsp),
    pc_user_rsp = const offset_of!(PerCpu, user_rsp),
    pc_ext_entry = const offset_of!(PerCpu, ext_entry),
    pc_ext_stack = const offset_of!(PerCpu, ext_stack_top),
    user_rflags = const USER_RFLAGS,
    sa_vmcb = const offset_of!(SwitchArgs, vmcb_pa),
    sa_host_vmcb = const offset_of!(SwitchArgs, host_vmcb_pa),
    sa_regs = const offset_of!(SwitchArgs, regs),
    sa_fpu = const offset_of!(SwitchArgs, fpu),
    sa_xcr0 = const offset_of!(SwitchArgs, xcr0),
    r_rcx = const reg(gpr::RCX),
    r_rdx = const reg(gpr::RDX),
    r_rbx = const reg(gpr::RBX),
    r_rbp = const reg(gpr::RBP),
    r_rsi = const reg(gpr::RSI),
    r_rdi = const reg(gpr::RDI),
    r_r8 = const reg(gpr::R8),
    r_r9 = const reg(gpr::R9),
    r_r10 = const reg(gpr::R10),
    r_r11 = const reg(gpr::R11),
    r_r12 = const reg(gpr::R12),
    r_r13 = const reg(gpr::R13),
    r_r14 = const reg(gpr::R14),
    r_r15 = const reg(gpr::R15),
    r_xcr0 = const offset_of!(VsRegs, xcr0),
    host_xcr0 = const HOST_XCR0,
    xcr0_sse = const microv_arch::xsave::SSE,
    pr_xcr0 = const offset_of!(PromoteRegs, xcr0),
    pr_fpu = const offset_of!(PromoteRegs, fpu),
    pr_pat = const offset_of!(PromoteRegs, pat),
    pr_cr2 = const offset_of!(PromoteRegs, cr2),
    pr_cr4 = const offset_of!(PromoteRegs, cr4),
    pr_cr0 = const offset_of!(PromoteRegs, cr0),
    pr_vmcb = const offset_of!(PromoteRegs, vmcb_pa),
    pr_landing = const offset_of!(PromoteRegs, landing),
    pr_entry = const offset_of!(PromoteRegs, entry),
    pr_cr3 = const offset_of!(PromoteRegs, cr3),
    msr_pat = const msr::PAT,
    kernel_data = const selector::KERNEL_DATA,
    kernel_code = const selector::KERNEL_CODE,
    tss = const selector::TSS,
    mxcsr = const MXCSR_DEFAULT,
    xstate_bv = const XSTATE_BV_OFFSET,
    dr7_init = const super::cpu::DR7_INIT,
    dr7_flush = const super::cpu::DR7_INIT | (1 << 16),
    va_regs = const offset_of!(VmxSwitchArgs, regs),
    va_fpu = const offset_of!(VmxSwitchArgs, fpu),
    va_xcr0 = const offset_of!(VmxSwitchArgs, xcr0),
    va_cr2 = const offset_of!(VmxSwitchArgs, cr2),
    r_rax = const reg(gpr::RAX),
    va_launched = const offset_of!(VmxSwitchArgs, launched),
    va_fail = const offset_of!(VmxSwitchArgs, fail_rflags),
    vmcs_host_rsp = const microv_arch::vmx::fields::host::RSP.encoding(),
);

extern "C" {
    /// `syscall` target (LSTAR).
    pub fn microv_syscall_entry();
    /// First of 32 exception stubs, 16 bytes apart.
    pub fn microv_exception_stubs();
    /// Enters the extension; never returns.
    pub fn microv_enter_extension(kind: u64, index: u64, a: u64, b: u64) -> !;
    /// Runs a vCPU until its next #VMEXIT.
    pub fn microv_world_switch(args: *mut SwitchArgs);
    /// Runs the current VMCS's vCPU until its next VM exit (or a VMfail,
    /// reported in `fail_rflags`).
    pub fn microv_vmx_world_switch(args: *mut VmxSwitchArgs);
    /// The VMCS's host RIP: where every VM exit arrives.
    pub fn microv_vmx_exit();
    /// Loads the root's checked state and jumps to the trampoline.
    pub fn microv_promote_final(regs: *const PromoteRegs) -> !;
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
