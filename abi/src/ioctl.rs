//! The `/dev/microv` interface between the `microv` CLI and the Linux driver.

use crate::c_struct;
use crate::exits::EXIT_KINDS_MAX;
use crate::launch::{FaultRecord, Segment, MAX_CPUS, MAX_SEGMENTS};

/// Path of the driver's device node.
pub const DEVICE_PATH: &str = "/dev/microv";

const IOC_TYPE: u64 = b'M' as u64;
const fn iowr(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64 & 0x3fff) << 16) | (IOC_TYPE << 8) | nr
}

c_struct! {
    /// A flattened hypervisor image handed to the driver: `size` bytes at
    /// `user_addr` are the image's memory from its link address `base`
    /// (bss included, zero-filled).
    pub struct ImageArg as "mv_image_arg" {
        pub user_addr: u64,
        pub size: u64,
        pub base: u64,
        pub entry: u64,
        pub segment_count: u64,
        pub segments: [Segment; MAX_SEGMENTS],
    }
}

c_struct! {
    /// `MV_IOC_START`: start MicroV beneath Linux on every online CPU.
    pub struct StartArgs as "mv_start_args" {
        pub kernel: ImageArg,
        pub extension: ImageArg,
        pub pool_size: u64,
        /// [`crate::launch::boot_flags`].
        pub flags: u64,
        /// Out: a [`crate::StartError`] when the ioctl fails, else 0.
        pub error_code: u32,
        /// Out: the OS's number of the CPU that failed, or `u32::MAX` when
        /// not CPU-specific. (`boot_flags::FAIL_CPU` takes MicroV's index.)
        pub error_cpu: u32,
        /// Out: extra detail for `error_code`.
        pub error_detail: u64,
    }
}

c_struct! {
    /// `MV_IOC_STOP`: return every CPU to native and free the pool.
    pub struct StopArgs as "mv_stop_args" {
        pub error_code: u32,
        pub error_cpu: u32,
        pub error_detail: u64,
    }
}

/// [`HvStatus::state`] values.
pub mod hv_state {
    pub const STOPPED: u32 = 0;
    pub const RUNNING: u32 = 1;
    /// Stopped on its own after a fault; `last_fault` says why.
    pub const FAILED: u32 = 2;
}

/// [`CpuStatus::state`] values.
pub mod cpu_state {
    pub const NATIVE: u32 = 0;
    pub const RUNNING: u32 = 1;
    pub const FAILED: u32 = 2;
}

c_struct! {
    /// One CPU in [`HvStatus`].
    pub struct CpuStatus as "mv_cpu_status" {
        pub os_cpu: u32,
        pub state: u32,
        /// Exit counts indexed by [`crate::ExitKind`].
        pub exits: [u64; EXIT_KINDS_MAX],
    }
}

c_struct! {
    /// `MV_IOC_STATUS`: what `microv status` prints.
    pub struct HvStatus as "mv_status" {
        pub state: u32,
        /// A [`crate::launch::StartMode`] value, 0 when stopped.
        pub start_mode: u32,
        pub abi_version: u64,
        pub capabilities: u64,
        /// MicroV's software version (`hypercall::encode_version`), 0 when stopped.
        pub hv_version: u64,
        pub cpu_count: u32,
        pub chunk_count: u32,
        pub pool_bytes: u64,
        pub pool_free_bytes: u64,
        /// Physical address of the pool's first chunk (its first byte is the
        /// microkernel's image header) — for tests that check the root VM
        /// cannot read hypervisor memory.
        pub pool_first_pa: u64,
        /// Nanoseconds since MicroV started (0 when stopped).
        pub uptime_ns: u64,
        /// The last start/stop error or fault (a `StartError`), 0 if none.
        pub last_error_code: u32,
        /// The OS's number of the CPU it happened on, `u32::MAX` if none.
        pub last_error_cpu: u32,
        pub last_fault: FaultRecord,
        pub cpus: [CpuStatus; MAX_CPUS],
    }
}

c_struct! {
    /// `MV_IOC_LOG`: copy the hypervisor's log ring to `user_addr`.
    pub struct LogArgs as "mv_log_args" {
        pub user_addr: u64,
        pub size: u64,
        /// Out: bytes copied.
        pub copied: u64,
        /// Out: bytes lost to ring wrap-around since start.
        pub lost: u64,
    }
}

c_struct! {
    /// `MV_IOC_TEST_FAULT`: make the extension fault on CPU `os_cpu` (test
    /// images only), to check that MicroV stops cleanly and says why.
    pub struct TestFaultArgs as "mv_test_fault_args" {
        pub os_cpu: u32,
        /// A `crate::hypercall::test_fault` value.
        pub kind: u32,
        pub error_code: u32,
        pub error_cpu: u32,
        pub error_detail: u64,
    }
}

c_struct! {
    /// `MV_IOC_CREATE_VM` (on `/dev/microv`): a new, empty micro VM. The
    /// ioctl returns a file descriptor for it; closing the last reference
    /// destroys the VM, its vCPUs and its mappings, and unpins its memory.
    pub struct CreateVmArgs as "mv_create_vm_args" {
        /// Out: MicroV's id of the VM (for reports; the fd names the VM).
        pub vm_id: u64,
    }
}

c_struct! {
    /// `MV_IOC_VM_MAP_MEMORY` (on a VM fd): `size` bytes of the VMM's memory
    /// at `user_addr` become guest-physical `gpa`..`gpa + size`. The driver
    /// pins the pages for the VM's lifetime. All three are 4 KiB multiples.
    pub struct MapMemoryArgs as "mv_map_memory_args" {
        pub user_addr: u64,
        pub size: u64,
        pub gpa: u64,
        /// `crate::run::map_access` bits; 0 means all.
        pub flags: u64,
    }
}

c_struct! {
    /// `MV_IOC_VM_CREATE_VCPU` (on a VM fd): a new vCPU. The ioctl returns
    /// a file descriptor for it; `mmap` of that fd (offset 0, one page)
    /// is the vCPU's run page (`crate::run::RunPage`).
    pub struct CreateVcpuArgs as "mv_create_vcpu_args" {
        /// The vCPU's APIC ID (0 = the bootstrap processor).
        pub apic_id: u32,
        pub reserved: u32,
        /// Out: MicroV's id of the vCPU.
        pub vcpu_id: u64,
    }
}

c_struct! {
    /// `MV_IOC_VCPU_RUN`, `MV_IOC_VCPU_GET_REGS`, `MV_IOC_VCPU_SET_REGS`,
    /// `MV_IOC_VCPU_KICK` (on a vCPU fd): no arguments (the driver does
    /// not read this struct; NULL will do); the run page carries
    /// everything.
    ///
    /// RUN returns 0 with the exit in the run page, or fails with EINTR
    /// when a signal is pending for the thread (the exit then says
    /// `INTERRUPTED`). It handles some exits itself and goes back in:
    /// `INTERRUPTED`, `KICK` (it wakes the vCPUs named), `TIMER` (it
    /// re-arms its host timer) and `HLT`, which sleeps in the host until
    /// the APIC timer's deadline (if armed), a KICK, a signal, or a vector
    /// raised in the run page before it slept: the VMM never sees a HLT.
    /// If a signal cuts that sleep short, the next RUN sleeps on until one
    /// of those (the guest never leaves a HLT without a reason), unless the
    /// VMM set `request` bits or SET_REGS since. While the guest runs, a
    /// host timer at its APIC timer's deadline makes it exit, so the timer
    /// fires on time.
    ///
    /// KICK (any thread; it never waits for RUN): makes the vCPU look at
    /// its raised vectors now. A RUN sleeping in a HLT wakes and enters
    /// the guest; a vCPU in the guest is interrupted (an IPI to its CPU)
    /// and entered again; otherwise the kick is kept until the vCPU's next
    /// entry, so a HLT sleep that follows returns at once. RUN does not
    /// return to the VMM for a kick: a signal does that.
    pub struct VcpuArgs as "mv_vcpu_args" {
        pub reserved: u64,
    }
}

c_struct! {
    /// A VM's `run.run` exits as the driver counted them, by reason,
    /// summed over its vCPUs (every exit, also those RUN handles itself:
    /// `interrupted` and the halts it sleeps through).
    pub struct VmExitCounts as "mv_vm_exit_counts" {
        pub io: u64,
        pub mmio: u64,
        pub hlt: u64,
        pub interrupted: u64,
        pub shutdown: u64,
        /// `FAIL_ENTRY`, `UNHANDLED` and reasons the driver does not know.
        pub other: u64,
    }
}

/// [`VmInfo::state`] values.
pub mod vm_state {
    /// It has a file descriptor and belongs to the running MicroV (such a
    /// VM keeps `MV_IOC_STOP` from stopping MicroV).
    pub const LIVE: u32 = 0;
    /// Its file descriptor is closed but MicroV did not destroy it: the
    /// driver keeps its pages until that MicroV is gone.
    pub const ZOMBIE: u32 = 1;
    /// The MicroV it was made in is gone (stopped or failed); its VMM
    /// still holds the file descriptor, whose calls fail with ENODEV.
    pub const ORPHANED: u32 = 2;
}

/// Most VMs one [`VmList`] holds (MicroV serves 64 at a time).
pub const VM_LIST_MAX: usize = 64;

c_struct! {
    /// One VM in [`VmList`].
    pub struct VmInfo as "mv_vm_info" {
        /// MicroV's id of the VM (ids start over with each start of MicroV).
        pub vm_id: u64,
        /// The process (thread group) that created it.
        pub pid: u32,
        pub vcpu_count: u32,
        /// A [`vm_state`] value.
        pub state: u32,
        pub reserved: u32,
        /// The creating process's command name, NUL-padded (Linux's
        /// `comm`: at most 15 bytes and a NUL).
        pub comm: [u8; 16],
        /// Guest memory the driver pinned for it.
        pub memory_bytes: u64,
        pub exits: VmExitCounts,
    }
}

c_struct! {
    /// `MV_IOC_LIST_VMS` (on `/dev/microv`): the micro VMs the driver
    /// holds, in creation order. Everything is output.
    pub struct VmList as "mv_vm_list" {
        /// Entries filled in `vms`.
        pub count: u32,
        /// VMs the driver holds in all (more than [`VM_LIST_MAX`]: the
        /// newest are left off).
        pub total: u32,
        pub vms: [VmInfo; VM_LIST_MAX],
    }
}

/// ioctl request numbers.
pub const IOC_START: u64 = iowr(1, core::mem::size_of::<StartArgs>());
pub const IOC_STOP: u64 = iowr(2, core::mem::size_of::<StopArgs>());
pub const IOC_STATUS: u64 = iowr(3, core::mem::size_of::<HvStatus>());
pub const IOC_LOG: u64 = iowr(4, core::mem::size_of::<LogArgs>());
pub const IOC_TEST_FAULT: u64 = iowr(5, core::mem::size_of::<TestFaultArgs>());
pub const IOC_CREATE_VM: u64 = iowr(6, core::mem::size_of::<CreateVmArgs>());
pub const IOC_VM_MAP_MEMORY: u64 = iowr(7, core::mem::size_of::<MapMemoryArgs>());
pub const IOC_VM_CREATE_VCPU: u64 = iowr(8, core::mem::size_of::<CreateVcpuArgs>());
pub const IOC_VCPU_RUN: u64 = iowr(9, core::mem::size_of::<VcpuArgs>());
pub const IOC_VCPU_GET_REGS: u64 = iowr(10, core::mem::size_of::<VcpuArgs>());
pub const IOC_VCPU_SET_REGS: u64 = iowr(11, core::mem::size_of::<VcpuArgs>());
pub const IOC_VCPU_KICK: u64 = iowr(12, core::mem::size_of::<VcpuArgs>());
pub const IOC_LIST_VMS: u64 = iowr(13, core::mem::size_of::<VmList>());

// The ioctl size field has 14 bits.
const _: () = assert!(core::mem::size_of::<HvStatus>() < (1 << 14));
const _: () = assert!(core::mem::size_of::<VmList>() < (1 << 14));
const _: () = assert!(core::mem::size_of::<VmInfo>() == 96);
