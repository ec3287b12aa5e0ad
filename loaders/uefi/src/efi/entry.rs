//! The firmware's entry point and the image's self-relocation.
//!
//! microv.efi is linked for linux-gnu as a PIE at address 0 and converted to
//! PE32+ by objcopy, which does not translate ELF relocations: the image
//! applies its own `R_X86_64_RELATIVE` entries before any Rust code runs.
//! That part is assembly on purpose: compiled Rust may call the precompiled
//! `core` through GOT slots, which hold link-time addresses until then.

use core::arch::global_asm;

/// `DT_RELA`, `DT_RELASZ` and `R_X86_64_RELATIVE` (ELF x86-64 ABI); the size
/// of one `Elf64_Rela` and the offsets in it.
const DT_RELA: u64 = 7;
const DT_RELASZ: u64 = 8;
const R_X86_64_RELATIVE: u32 = 8;
const RELA_SIZE: u64 = 24;
const RELA_INFO: u64 = 8;
const RELA_ADDEND: u64 = 16;
/// EFI_LOAD_ERROR: a relocation type the image cannot apply.
const LOAD_ERROR: u64 = 0x8000_0000_0000_0001;
/// The Microsoft x64 ABI's shadow space for the callee's four register
/// arguments.
const SHADOW_SPACE: u64 = 32;

// efi_main(image handle in RCX, system table in RDX), Microsoft x64 ABI:
// walks _DYNAMIC for the RELA table, adds the load base to every relative
// relocation, then calls `efi_rust_main` with the same two arguments. RBX and
// R12 are callee-saved in both ABIs.
global_asm!(
    ".section .text.efi_main, \"ax\"",
    ".globl efi_main",
    "efi_main:",
    "    push rbx",
    "    push r12",
    "    sub rsp, 8",
    "    mov rbx, rcx",
    "    mov r12, rdx",
    "    lea r8, [rip + ImageBase]",
    "    lea r9, [rip + _DYNAMIC]",
    "    xor r10d, r10d",
    "    xor r11d, r11d",
    "2:  mov rax, [r9]",
    "    test rax, rax",
    "    jz 3f",
    "    cmp rax, {dt_rela}",
    "    cmove r10, [r9 + 8]",
    "    cmp rax, {dt_relasz}",
    "    cmove r11, [r9 + 8]",
    "    add r9, 16",
    "    jmp 2b",
    "3:  test r10, r10",
    "    jz 5f",
    "    add r10, r8",
    "    add r11, r10",
    "4:  cmp r10, r11",
    "    jae 5f",
    "    cmp dword ptr [r10 + {rela_info}], {relative}",
    "    jne 6f",
    "    mov rax, [r10 + {rela_addend}]",
    "    add rax, r8",
    "    mov rcx, [r10]",
    "    mov [r8 + rcx], rax",
    "    add r10, {rela_size}",
    "    jmp 4b",
    "5:  mov rcx, rbx",
    "    mov rdx, r12",
    "    sub rsp, {shadow}",
    "    call {main}",
    "    add rsp, {shadow}",
    "    jmp 7f",
    "6:  movabs rax, {load_error}",
    "7:  add rsp, 8",
    "    pop r12",
    "    pop rbx",
    "    ret",
    dt_rela = const DT_RELA,
    dt_relasz = const DT_RELASZ,
    rela_info = const RELA_INFO,
    relative = const R_X86_64_RELATIVE,
    rela_addend = const RELA_ADDEND,
    rela_size = const RELA_SIZE,
    shadow = const SHADOW_SPACE,
    load_error = const LOAD_ERROR,
    main = sym super::app::efi_rust_main,
);

// A PE loader relocates an image only if it has a base relocation
// directory: one empty block (a single padding entry). The real work is
// efi_main's.
global_asm!(".section .reloc, \"a\"", ".long 0", ".long 10", ".word 0",);

/// The precompiled `alloc` refers to the unwinder; with `panic = "abort"`
/// it is never called.
#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    loop {
        core::hint::spin_loop();
    }
}
