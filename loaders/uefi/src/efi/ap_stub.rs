//! The code an application processor starts in after microv.efi's SIPI
//! (`crate::aps` has the plan). It is copied to the low block's first page
//! and runs from there, so it refers to nothing outside that block but
//! through [`Params`] (the block's second page): real mode, then 32-bit
//! protected mode, then long mode on the identity tables, then a call to
//! microv.efi's AP entry on the stack its slot names. `microv_ap_park` is
//! where an AP's root VM waits for the OS at the ACPI wakeup mailbox;
//! `microv_ap_halt` is where an AP that is not in MicroV stops.

use core::mem::offset_of;

use microv_arch::msr;

use crate::acpi::mailbox;
use crate::aps::{block, selector, state, Params, Slot};

/// CR0: PE, MP, ET, NE, PG on; EM, TS, NW, CD off.
const CR0_SET: u32 = (1 << 0) | (1 << 1) | (1 << 4) | (1 << 5) | (1 << 31);
const CR0_KEEP: u32 = !((1 << 2) | (1 << 3) | (1 << 29) | (1 << 30));
/// CR4: PAE, and SSE for microv.efi's Rust code (OSFXSR, OSXMMEXCPT).
const CR4_SET: u32 = (1 << 5) | (1 << 9) | (1 << 10);
/// EFER: long mode, and no-execute (MicroV's tables use NX).
const EFER_SET: u32 = (1 << 8) | (1 << 11);

core::arch::global_asm!(
    ".pushsection .text.microv_ap, \"ax\"",
    ".balign 4096",
    ".globl microv_ap_start",
    "microv_ap_start:",
    ".code16",
    "cli",
    "cld",
    "mov ax, cs",
    "mov ds, ax",
    // EBX: the block's linear address, kept through the mode switches.
    "xor ebx, ebx",
    "mov bx, ax",
    "shl ebx, 4",
    "lgdt dword ptr [{params} + {gdtr}]",
    "mov eax, cr0",
    "or eax, 1",
    "mov cr0, eax",
    "jmp fword ptr [{params} + {far32}]",

    ".code32",
    ".globl microv_ap_protected",
    "microv_ap_protected:",
    "mov ax, {data}",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "mov fs, ax",
    "mov gs, ax",
    "mov eax, cr4",
    "or eax, {cr4}",
    "mov cr4, eax",
    "mov eax, [ebx + {params} + {cr3}]",
    "mov cr3, eax",
    "mov ecx, {efer_msr}",
    "rdmsr",
    "or eax, {efer}",
    "wrmsr",
    "mov eax, cr0",
    "and eax, {cr0_keep}",
    "or eax, {cr0_set}",
    "mov cr0, eax",
    "jmp fword ptr [ebx + {params} + {far64}]",

    ".code64",
    ".globl microv_ap_long",
    "microv_ap_long:",
    // The upper halves are undefined after the switch: R12 = the block.
    "mov ebx, ebx",
    "mov r12, rbx",
    "lidt [r12 + {params} + {idtr}]",
    // This CPU's initial APIC ID, and its slot.
    "mov eax, 1",
    "cpuid",
    "shr ebx, 24",
    "lea rdi, [r12 + {params} + {slots}]",
    "mov ecx, [r12 + {params} + {count}]",
    "2:",
    "test ecx, ecx",
    "jz microv_ap_halt",
    "cmp [rdi + {slot_apic}], ebx",
    "je 3f",
    "add rdi, {slot_size}",
    "dec ecx",
    "jmp 2b",
    // Claim the slot: if microv.efi gave up on this AP meanwhile, stop
    // here, in the low block (microv.efi's code may be the OS's by now).
    "3:",
    "mov eax, {waiting}",
    "mov ecx, {starting}",
    "lock cmpxchg [rdi + {slot_state}], ecx",
    "jne microv_ap_halt",
    "mov rsp, [rdi + {slot_stack}]",
    "call qword ptr [r12 + {params} + {entry}]",
    "jmp microv_ap_halt",

    // microv_ap_park(mailbox, apic_id, leave, state): the root VM of an AP
    // in MicroV waits here until the OS names it in the mailbox, then
    // acknowledges and jumps to the OS's wakeup vector (long mode, these
    // identity tables, interrupts off: ACPI's contract). If another CPU
    // failed, one CPUID exit gives this CPU back, natively.
    ".globl microv_ap_park",
    "microv_ap_park:",
    "mov r8, rcx",
    "4:",
    "pause",
    "cmp dword ptr [rdx], 0",
    "jne 5f",
    // The APIC ID first, then the command: the OS writes them the other
    // way round, so a command seen after this AP's ID is this AP's (a
    // command read first could be the previous CPU's wake-up).
    "cmp [rdi + {apic_id}], esi",
    "jne 4b",
    "cmp word ptr [rdi + {command}], {wakeup}",
    "jne 4b",
    "mov rax, [rdi + {vector}]",
    "mov word ptr [rdi + {command}], 0",
    "jmp rax",
    "5:",
    "xor eax, eax",
    "cpuid",
    "mov dword ptr [r8], {native}",

    ".globl microv_ap_halt",
    "microv_ap_halt:",
    "cli",
    "hlt",
    "jmp microv_ap_halt",
    ".globl microv_ap_end",
    "microv_ap_end:",
    ".popsection",
    params = const block::PARAMS * 4096,
    gdtr = const offset_of!(Params, gdtr),
    far32 = const offset_of!(Params, far32),
    far64 = const offset_of!(Params, far64),
    idtr = const offset_of!(Params, idtr),
    cr3 = const offset_of!(Params, cr3),
    count = const offset_of!(Params, slot_count),
    slots = const offset_of!(Params, slots),
    entry = const offset_of!(Params, entry),
    slot_apic = const offset_of!(Slot, apic_id),
    slot_stack = const offset_of!(Slot, stack_top),
    slot_state = const offset_of!(Slot, state),
    waiting = const state::WAITING,
    starting = const state::STARTING,
    slot_size = const core::mem::size_of::<Slot>(),
    data = const selector::DATA,
    cr4 = const CR4_SET,
    efer_msr = const msr::EFER,
    efer = const EFER_SET,
    cr0_keep = const CR0_KEEP,
    cr0_set = const CR0_SET,
    command = const mailbox::COMMAND,
    apic_id = const mailbox::APIC_ID,
    vector = const mailbox::WAKEUP_VECTOR,
    wakeup = const mailbox::WAKEUP,
    native = const state::NATIVE,
);

extern "C" {
    pub fn microv_ap_start();
    pub fn microv_ap_protected();
    pub fn microv_ap_long();
    pub fn microv_ap_park();
    pub fn microv_ap_halt();
    pub fn microv_ap_end();
}
