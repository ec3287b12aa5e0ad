//! Layouts shared by the loaders (Linux driver and its trampoline, later the
//! UEFI loader) and the microkernel, and the fixed virtual-address layout of
//! the hypervisor.
//!
//! The loader allocates the hypervisor's memory *pool* as 2 MiB chunks, copies
//! the microkernel and extension images into it, writes a [`BootInfo`], builds
//! boot page tables that map the pool linearly at [`POOL_VA`], and enters the
//! microkernel once per CPU through a trampoline with a [`CpuLanding`] page
//! that holds the CPU's state at entry. The landing page and the trampoline
//! are mapped at the same virtual address in the loader's and the
//! hypervisor's address spaces, so the switch of CR3 in either direction runs
//! on code and data that stay mapped.

use crate::c_struct;

/// Hypervisor virtual address of pool byte 0 (the first byte of the
/// microkernel image). The bottom of the canonical upper half, a range Linux
/// leaves unused ("guard hole, reserved for hypervisor").
pub const POOL_VA: u64 = 0xffff_8000_0000_0000;
/// The pool is allocated and mapped in chunks of this size and alignment.
pub const CHUNK_SIZE: u64 = 2 << 20;
/// Most chunks a pool can have (512 MiB).
pub const MAX_CHUNKS: usize = 256;
/// Default pool size used by `microv start`.
pub const DEFAULT_POOL_SIZE: u64 = 64 << 20;
/// Most physical CPUs MicroV runs on.
pub const MAX_CPUS: usize = 64;
/// Size of each CPU's microkernel stack, carved from the pool by the loader.
pub const KERNEL_STACK_SIZE: u64 = 32 << 10;
/// Page size.
pub const PAGE_SIZE: u64 = 4096;

/// Link address of the extension (host ring 3).
pub const EXTENSION_BASE: u64 = 0x0000_0000_4000_0000;
/// Largest extension image (text, data and bss together).
pub const EXTENSION_MAX_SIZE: u64 = 64 << 20;
/// Largest microkernel image.
pub const KERNEL_MAX_SIZE: u64 = 16 << 20;
/// Base of the extension's per-CPU stacks; CPU *n*'s stack is the
/// [`EXTENSION_STACK_SIZE`] bytes from `EXTENSION_STACKS + n * EXTENSION_STACK_STRIDE`;
/// the rest of each stride is unmapped, so an overflow faults.
pub const EXTENSION_STACKS: u64 = 0x0000_7f00_0000_0000;
/// Bytes of stack each CPU gives the extension.
pub const EXTENSION_STACK_SIZE: u64 = 64 << 10;
/// Distance between two CPUs' extension stacks: the gap is an unmapped guard.
pub const EXTENSION_STACK_STRIDE: u64 = 1 << 20;
/// Where pages the extension allocates are mapped in its address space.
pub const EXTENSION_HEAP: u64 = 0x0000_1000_0000_0000;

/// Magic of a [`CpuLanding`] ("MVLANDNG").
pub const LANDING_MAGIC: u64 = u64::from_le_bytes(*b"MVLANDNG");
/// Magic of a [`BootInfo`] ("MVBOOTIN").
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"MVBOOTIN");
/// Magic at the start of the microkernel image ("MVKERNEL").
pub const KERNEL_IMAGE_MAGIC: u64 = u64::from_le_bytes(*b"MVKERNEL");
/// Magic at the start of the extension image ("MVEXTENS").
pub const EXTENSION_IMAGE_MAGIC: u64 = u64::from_le_bytes(*b"MVEXTENS");
/// Version of the layouts in this module. Loader and images must agree.
pub const LAUNCH_VERSION: u32 = 3;

/// How MicroV was started (`id.capabilities`, `microv status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum StartMode {
    /// Started beneath a running OS by its driver.
    LateLaunch = 1,
    /// Started before the OS by the UEFI loader.
    EarlyBoot = 2,
}

c_struct! {
    /// The header at the very start of each hypervisor image. The build fills
    /// in `checksum` (FNV-1a 64 of the loaded bytes with this field zero) so a
    /// corrupt image is refused before anything runs.
    pub struct ImageHeader as "mv_image_header" {
        pub magic: u64,
        pub launch_version: u32,
        pub header_size: u32,
        pub checksum: u64,
        pub image_size: u64,
    }
}
const _: () = assert!(core::mem::size_of::<ImageHeader>() == 32);

impl ImageHeader {
    /// The header an image is built with; the build seals size and checksum.
    pub const fn unsealed(magic: u64) -> Self {
        ImageHeader {
            magic,
            launch_version: LAUNCH_VERSION,
            header_size: core::mem::size_of::<ImageHeader>() as u32,
            checksum: 0,
            image_size: 0,
        }
    }
}

/// Offset of [`ImageHeader::checksum`] in the image.
pub const IMAGE_CHECKSUM_OFFSET: usize = core::mem::offset_of!(ImageHeader, checksum);

/// FNV-1a, 64-bit, over `bytes`: the image checksum.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

c_struct! {
    /// A descriptor-table register as stored by `sgdt`/`sidt`, padded so that
    /// `limit` and `base` are contiguous at offset 6: `lgdt [p + 6]` works.
    pub struct DescriptorTableRegister as "mv_dtr" {
        pub pad: [u16; 3],
        pub limit: u16,
        pub base: u64,
    }
}
const _: () = assert!(core::mem::offset_of!(DescriptorTableRegister, limit) == 6);

c_struct! {
    /// The state of a CPU as the loader captures it on entry. It becomes the
    /// root VM's vCPU for that CPU.
    pub struct CapturedState as "mv_captured_state" {
        pub cr0: u64,
        pub cr3: u64,
        pub cr4: u64,
        pub efer: u64,
        pub rflags: u64,
        pub rsp: u64,
        /// Where the root resumes once MicroV runs beneath it.
        pub rip: u64,
        pub dr7: u64,
        pub pat: u64,
        pub xcr0: u64,
        pub gdtr: DescriptorTableRegister,
        pub idtr: DescriptorTableRegister,
        pub cs: u16,
        pub ss: u16,
        pub ds: u16,
        pub es: u16,
        pub fs: u16,
        pub gs: u16,
        pub tr: u16,
        pub ldtr: u16,
        /// Raw 8-byte GDT descriptors of CS, SS, DS, ES (0 for a null selector).
        pub cs_desc: u64,
        pub ss_desc: u64,
        pub ds_desc: u64,
        pub es_desc: u64,
        /// Raw 16-byte GDT descriptors of TR and LDTR (system descriptors;
        /// zeros for a null selector). Intel VMX needs them: VMSAVE, which
        /// reads TR and LDTR from the CPU on AMD, does not exist there.
        pub tr_desc: [u64; 2],
        pub ldtr_desc: [u64; 2],
    }
}

c_struct! {
    /// Everything the trampoline needs to put the root's state back onto the
    /// real CPU ("promotion": after `stop`, or when MicroV fails on this CPU).
    /// The microkernel has already loaded what VMLOAD covers (FS, GS, TR,
    /// LDTR, syscall MSRs), CR0, CR4, CR2, PAT, XCR0 and the FPU state, and
    /// passes CR3 in a register: the trampoline switches to the root's page
    /// tables before it reads this frame, so host mode never reads it.
    pub struct PromoteFrame as "mv_promote_frame" {
        /// RAX, RCX, RDX, RBX, RSP (unused), RBP, RSI, RDI, R8..R15.
        pub gprs: [u64; 16],
        pub rip: u64,
        pub rsp: u64,
        pub rflags: u64,
        pub cr3: u64,
        pub efer: u64,
        pub cs: u64,
        pub ss: u64,
        pub ds: u64,
        pub es: u64,
        /// Loaded last, once no hypervisor code runs any more: a breakpoint
        /// the root armed can only ever hit the root's own code.
        pub dr7: u64,
        pub gdtr: DescriptorTableRegister,
        pub idtr: DescriptorTableRegister,
        /// Intel only (VMLOAD loads TR and LDTR on AMD): the root's TR and
        /// LDTR selectors, loaded from `tr_gdt`, a GDT holding copies of
        /// their descriptors marked available (the root's own TSS
        /// descriptor is busy, and Linux maps its GDT read-only); the
        /// trampoline points `tr_gdtr` at it, loads them, then the root's
        /// GDT. TR = 0: nothing to load.
        pub tr: u64,
        pub ldtr: u64,
        pub tr_gdtr: DescriptorTableRegister,
        pub tr_gdt: [u64; PROMOTE_GDT_ENTRIES],
    }
}

/// Slots of [`PromoteFrame::tr_gdt`]: room for the root's TR and LDTR up to
/// selector 0xF0 (Linux's TSS is at 0x40).
pub const PROMOTE_GDT_ENTRIES: usize = 32;

/// Indices into [`PromoteFrame::gprs`] (x86 register-number order).
pub mod gpr {
    pub const RAX: usize = 0;
    pub const RCX: usize = 1;
    pub const RDX: usize = 2;
    pub const RBX: usize = 3;
    pub const RSP: usize = 4;
    pub const RBP: usize = 5;
    pub const RSI: usize = 6;
    pub const RDI: usize = 7;
    pub const R8: usize = 8;
    pub const R9: usize = 9;
    pub const R10: usize = 10;
    pub const R11: usize = 11;
    pub const R12: usize = 12;
    pub const R13: usize = 13;
    pub const R14: usize = 14;
    pub const R15: usize = 15;
}

c_struct! {
    /// Why MicroV stopped on a CPU on its own (a fault in the extension or
    /// the microkernel), written into the CPU's landing page for the loader.
    pub struct FaultRecord as "mv_fault_record" {
        /// A [`crate::StartError`] value; 0 when nothing went wrong.
        pub code: u32,
        /// Exception vector, or `u32::MAX` for a non-exception failure.
        pub vector: u32,
        pub error_code: u64,
        pub rip: u64,
        pub cr2: u64,
        /// Privilege level the fault happened at (3: extension, 0: microkernel).
        pub cpl: u64,
        /// Extra detail for non-exception failures (see `StartError`).
        pub detail: u64,
    }
}

c_struct! {
    /// One 4 KiB page per CPU, allocated by the loader outside the pool and
    /// mapped at the same virtual address by the hypervisor.
    pub struct CpuLanding as "mv_cpu_landing" {
        pub magic: u64,
        pub launch_version: u32,
        /// The OS's number for this CPU.
        pub os_cpu: u32,
        /// MicroV's index for this CPU (0..cpu_count).
        pub index: u32,
        /// Set by the microkernel: 1 while MicroV runs on this CPU.
        pub running: u32,
        /// Physical address of the microkernel's PML4.
        pub kernel_cr3: u64,
        /// Microkernel entry point (hypervisor virtual address).
        pub kernel_entry: u64,
        /// Result of entry: 0, or a [`crate::StartError`] value.
        pub status: u64,
        /// Extra detail for `status` (for example the value that was refused).
        pub detail: u64,
        pub captured: CapturedState,
        pub promote: PromoteFrame,
        pub fault: FaultRecord,
        /// Stack for the trampoline's final IRET frame: never the stack the
        /// root was interrupted on, which may be a user stack (SMAP) or a
        /// kernel address chosen by user space.
        pub iret_stack: [u64; LANDING_IRET_STACK_WORDS],
    }
}

/// Words in [`CpuLanding::iret_stack`] (an IRET frame is five).
pub const LANDING_IRET_STACK_WORDS: usize = 8;
const _: () = assert!(core::mem::size_of::<CpuLanding>() <= PAGE_SIZE as usize);

c_struct! {
    /// One loaded segment of an image: where it lies relative to the image
    /// base and what access it needs (ELF `p_flags`: 4 read, 2 write, 1 execute).
    pub struct Segment as "mv_segment" {
        pub offset: u64,
        pub size: u64,
        pub flags: u64,
    }
}

/// Most segments an image may have.
pub const MAX_SEGMENTS: usize = 8;
/// Segment flag: executable.
pub const SEGMENT_X: u64 = 1;
/// Segment flag: writable.
pub const SEGMENT_W: u64 = 2;
/// Segment flag: readable.
pub const SEGMENT_R: u64 = 4;

c_struct! {
    /// Where an image was placed in the pool.
    pub struct LoadedImage as "mv_loaded_image" {
        /// Offset of the image in the pool.
        pub pool_offset: u64,
        /// Bytes (page multiple), including zero-filled bss.
        pub size: u64,
        /// Link address of the image's first byte.
        pub base: u64,
        /// Entry point (virtual address).
        pub entry: u64,
        pub segment_count: u64,
        pub segments: [Segment; MAX_SEGMENTS],
    }
}

c_struct! {
    /// What the loader tells the microkernel, in the pool (two pages), in the
    /// first page after the microkernel image (which starts at pool offset
    /// 0): the microkernel finds it from its own sealed image size, so it
    /// never takes the address from the root.
    pub struct BootInfo as "mv_boot_info" {
        pub magic: u64,
        pub launch_version: u32,
        /// A [`StartMode`] value.
        pub start_mode: u32,
        pub cpu_count: u32,
        pub chunk_count: u32,
        /// Physical address of each chunk; chunk *i* is mapped at
        /// `POOL_VA + i * CHUNK_SIZE`.
        pub chunks: [u64; MAX_CHUNKS],
        pub kernel: LoadedImage,
        pub extension: LoadedImage,
        /// First pool offset the microkernel may allocate from; everything
        /// below is images, this page, boot page tables and stacks.
        pub free_offset: u64,
        /// Loader virtual address of each CPU's landing page.
        pub landing: [u64; MAX_CPUS],
        /// Loader virtual address and size of the shared log ring (outside
        /// the pool, readable by the loader).
        pub log: u64,
        pub log_size: u64,
        /// Test-only behaviour requested at start ([`boot_flags`]).
        pub flags: u64,
        /// Pool offset of the microkernel stacks: CPU *i*'s stack is the
        /// [`KERNEL_STACK_SIZE`] bytes below `(i + 1) * KERNEL_STACK_SIZE`
        /// from there. The microkernel takes its stack from here, never
        /// from the root-writable landing page.
        pub stacks_offset: u64,
        /// Hypervisor virtual address of the trampoline's promotion routine
        /// (the hypervisor's private copy of the trampoline).
        pub promote_entry: u64,
        /// Ordinary RAM of the root ("System RAM"), as the loader found it
        /// at start: `ram[i] = [first byte, last byte]`, sorted, at most
        /// [`MAX_RAM_RANGES`]. Only frames in these ranges (and outside the
        /// pool) may back a micro VM's memory.
        pub ram_count: u64,
        pub ram: [[u64; 2]; MAX_RAM_RANGES],
        /// The TSC frequency in kHz as the loader knows it (Linux's
        /// `tsc_khz`; 0 if unknown), reported to VMs in CPUID 0x4000_0010.
        pub tsc_khz: u64,
    }
}

/// Most RAM ranges the boot info lists (the rest of the RAM is simply not
/// offered to micro VMs).
pub const MAX_RAM_RANGES: usize = 64;
const _: () = assert!(core::mem::size_of::<BootInfo>() <= 2 * PAGE_SIZE as usize);

/// Bits of [`BootInfo::flags`].
pub mod boot_flags {
    /// Fail bring-up on the CPU whose index is in bits 15:8 (start-failure tests).
    pub const FAIL_CPU: u64 = 1 << 0;
    /// Shift of the CPU index for [`FAIL_CPU`].
    pub const FAIL_CPU_SHIFT: u64 = 8;
}

c_struct! {
    /// Header of the shared log ring: `written` counts every byte ever
    /// written; byte *k* is at `data[k % (log_size - 16)]`.
    pub struct LogHeader as "mv_log_header" {
        pub written: u64,
        pub lost: u64,
    }
}

impl BootInfo {
    /// Pool offset of physical address `pa`, if the pool holds it.
    pub fn pool_offset(&self, pa: u64) -> Option<u64> {
        let count = (self.chunk_count as usize).min(MAX_CHUNKS);
        self.chunks
            .iter()
            .take(count)
            .enumerate()
            .find_map(|(i, &base)| {
                (pa >= base && pa - base < CHUNK_SIZE).then(|| i as u64 * CHUNK_SIZE + (pa - base))
            })
    }

    /// Physical address of pool offset `offset`.
    pub fn pool_pa(&self, offset: u64) -> Option<u64> {
        let chunk = usize::try_from(offset / CHUNK_SIZE).ok()?;
        if chunk >= (self.chunk_count as usize).min(MAX_CHUNKS) {
            return None;
        }
        self.chunks
            .get(chunk)
            .map(|base| base + offset % CHUNK_SIZE)
    }

    /// True if this is a boot info of this launch version whose counts are
    /// in range (the microkernel checks this before using any of it).
    pub fn is_sane(&self) -> bool {
        self.magic == BOOT_INFO_MAGIC
            && self.launch_version == LAUNCH_VERSION
            && self.chunk_count as usize <= MAX_CHUNKS
            && self.cpu_count as usize <= MAX_CPUS
            && self.free_offset <= self.pool_size()
    }

    /// The CPU index whose bring-up must fail on purpose, if the loader
    /// asked for one ([`boot_flags::FAIL_CPU`]).
    pub fn injected_failure_cpu(&self) -> Option<u64> {
        (self.flags & boot_flags::FAIL_CPU != 0)
            .then_some((self.flags >> boot_flags::FAIL_CPU_SHIFT) & 0xff)
    }

    /// Pool size in bytes.
    pub fn pool_size(&self) -> u64 {
        u64::from(self.chunk_count.min(MAX_CHUNKS as u32)) * CHUNK_SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_addresses_translate_both_ways() {
        let mut bi = BootInfo::zeroed();
        bi.chunk_count = 2;
        bi.chunks[0] = 0x4000_0000;
        bi.chunks[1] = 0x1_0020_0000;
        assert_eq!(bi.pool_offset(0x4000_1234), Some(0x1234));
        assert_eq!(bi.pool_offset(0x1_0020_0008), Some(CHUNK_SIZE + 8));
        assert_eq!(bi.pool_offset(0x4020_0000), None);
        assert_eq!(bi.pool_pa(CHUNK_SIZE + 8), Some(0x1_0020_0008));
        assert_eq!(bi.pool_pa(2 * CHUNK_SIZE), None);
        assert_eq!(bi.pool_size(), 2 * CHUNK_SIZE);
        bi.chunk_count = u32::MAX;
        assert_eq!(bi.pool_size(), MAX_CHUNKS as u64 * CHUNK_SIZE);
    }

    #[test]
    fn sanity_and_test_flags() {
        let mut bi = BootInfo::zeroed();
        assert!(!bi.is_sane(), "no magic");
        bi.magic = BOOT_INFO_MAGIC;
        bi.launch_version = LAUNCH_VERSION;
        bi.chunk_count = 2;
        bi.cpu_count = 2;
        bi.free_offset = CHUNK_SIZE;
        assert!(bi.is_sane());
        bi.cpu_count = MAX_CPUS as u32 + 1;
        assert!(!bi.is_sane());
        bi.cpu_count = 2;
        bi.free_offset = 3 * CHUNK_SIZE;
        assert!(!bi.is_sane(), "free offset past the pool");
        assert_eq!(bi.injected_failure_cpu(), None);
        bi.flags = boot_flags::FAIL_CPU | (3 << boot_flags::FAIL_CPU_SHIFT);
        assert_eq!(bi.injected_failure_cpu(), Some(3));
    }

    #[test]
    fn fnv_matches_reference_values() {
        let h = ImageHeader::unsealed(KERNEL_IMAGE_MAGIC);
        assert_eq!(
            (h.magic, h.launch_version, h.header_size),
            (KERNEL_IMAGE_MAGIC, LAUNCH_VERSION, 32)
        );
        assert_eq!((h.checksum, h.image_size), (0, 0));
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
