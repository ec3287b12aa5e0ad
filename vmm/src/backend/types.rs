//! Register and CPUID values in a form no backend owns. Backends convert
//! them to their own layout (KVM's `kvm_regs`/`kvm_sregs`, MicroV's run
//! page) at the edge.

/// One CPUID leaf/subleaf and its answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidEntry {
    pub function: u32,
    pub index: u32,
    /// The answer depends on `index` (ECX), not only on `function`.
    pub indexed: bool,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// General-purpose registers, RIP and RFLAGS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

/// A segment register with its hidden part, as VMCB/VMCS/KVM all hold it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    /// The descriptor's type field (4 bits).
    pub type_: u8,
    pub present: bool,
    pub dpl: u8,
    /// D/B: 32-bit default operand size.
    pub db: bool,
    /// S: code or data (not system).
    pub s: bool,
    /// L: 64-bit code.
    pub l: bool,
    /// G: limit in 4 KiB units.
    pub g: bool,
}

/// GDTR or IDTR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescriptorTable {
    pub base: u64,
    pub limit: u16,
}

/// The control and segment state a vCPU starts the kernel with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecialRegs {
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub tr: Segment,
    pub ldt: Segment,
    pub gdt: DescriptorTable,
    pub idt: DescriptorTable,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}
