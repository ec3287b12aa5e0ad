//! The KVM backend (`/dev/kvm`, through `kvm-ioctls`).
//!
//! Interrupts and timers are KVM's in-kernel ones: LAPIC, IOAPIC and PIC
//! (`KVM_CREATE_IRQCHIP`) and a PIT (only so a guest that calibrates its TSC
//! against the PIT finds one; the ACPI tables say hardware-reduced, so Linux
//! does not use it as its timer). Device interrupts are irqfds.

mod convert;
mod vcpu;

use std::io;
use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{BackendError, BackendKind, CpuidEntry, Hypervisor, InterruptLine, Vcpu, Vm};

pub use vcpu::KvmVcpu;

/// KVM's device node.
pub const DEVICE_PATH: &str = "/dev/kvm";

/// Where KVM on Intel puts the real-mode TSS (three pages) it needs; below
/// the IOAPIC, in the guest's MMIO gap, never RAM.
const TSS_ADDRESS: usize = 0xfffb_d000;

fn os(op: &'static str) -> impl Fn(kvm_ioctls::Error) -> BackendError {
    move |e| BackendError::os(op, io::Error::from_raw_os_error(e.errno()))
}

/// Whether this KVM is PVM (`kvm_pvm`): KVM without hardware
/// virtualization. It runs guests that are not PVM-aware (any stock
/// kernel) through KVM's instruction emulator, about a million
/// instructions a second, and lets them execute `cpuid` natively (so the
/// CPUID we set is not what they see). The emulator cannot do `int3`,
/// `xrstor` or `cmpxchg16b` in 64-bit mode, which every Linux kernel
/// executes while booting: stock Linux cannot boot there. We still try
/// (a PVM-aware guest would run) and say why when it fails.
pub fn is_pvm() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

/// `/dev/kvm`, opened.
pub struct KvmHypervisor {
    kvm: Kvm,
    emulating: bool,
}

impl KvmHypervisor {
    /// Opens `/dev/kvm` and checks that it has what the VMM uses.
    pub fn open() -> Result<Self, BackendError> {
        let kvm = Kvm::new().map_err(|e| match e.errno() {
            libc::ENOENT | libc::ENODEV | libc::ENXIO => BackendError::DeviceMissing {
                device: DEVICE_PATH,
            },
            libc::EACCES | libc::EPERM => BackendError::NotPermitted {
                device: DEVICE_PATH,
            },
            _ => os("opening /dev/kvm")(e),
        })?;
        for (cap, what) in [
            (
                Cap::Irqchip,
                "an in-kernel interrupt controller (KVM_CAP_IRQCHIP)",
            ),
            (Cap::Irqfd, "irqfd (KVM_CAP_IRQFD)"),
            (Cap::UserMemory, "user memory regions (KVM_CAP_USER_MEMORY)"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(BackendError::Unsupported {
                    backend: "kvm",
                    what,
                });
            }
        }
        Ok(KvmHypervisor {
            kvm,
            emulating: is_pvm(),
        })
    }

    /// Whether KVM's LAPIC emulates the TSC-deadline timer (the CPUID bit
    /// is the VMM's to set).
    pub fn has_tsc_deadline(&self) -> bool {
        self.kvm.check_extension(Cap::TscDeadlineTimer)
    }
}

impl Hypervisor for KvmHypervisor {
    fn kind(&self) -> BackendKind {
        BackendKind::Kvm
    }

    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>, BackendError> {
        let cpuid = self
            .kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(os("KVM_GET_SUPPORTED_CPUID"))?;
        let mut entries: Vec<CpuidEntry> = cpuid
            .as_slice()
            .iter()
            .map(convert::cpuid_from_kvm)
            .collect();
        if self.has_tsc_deadline() {
            // KVM reports the bit as unsupported because only the VMM knows
            // whether it uses the in-kernel LAPIC; we do.
            for e in entries.iter_mut().filter(|e| e.function == 1) {
                e.ecx |= crate::boot::cpuid::LEAF1_ECX_TSC_DEADLINE;
            }
        }
        Ok(entries)
    }

    fn create_vm(&self) -> Result<Box<dyn Vm>, BackendError> {
        let fd = self.kvm.create_vm().map_err(os("KVM_CREATE_VM"))?;
        // Only Intel needs the TSS area; AMD (and kvm_pvm) may refuse or
        // ignore it, which harms nothing.
        let _ = fd.set_tss_address(TSS_ADDRESS);
        fd.create_irq_chip().map_err(os("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(os("KVM_CREATE_PIT2"))?;
        Ok(Box::new(KvmVm {
            shared: Arc::new(Shared {
                fd,
                memory: Mutex::new(Vec::new()),
                emulating: self.emulating,
            }),
        }))
    }
}

/// What the VM and all its vCPUs hold: the VM's fd and the memory KVM has
/// been told to use, which must live as long as any of them.
struct Shared {
    fd: VmFd,
    memory: Mutex<Vec<Arc<GuestMemoryMmap>>>,
    /// KVM emulates guest instructions in software ([`is_pvm`]).
    emulating: bool,
}

/// A KVM VM.
pub struct KvmVm {
    shared: Arc<Shared>,
}

struct Irqfd(EventFd);

impl InterruptLine for Irqfd {
    fn trigger(&self) -> Result<(), BackendError> {
        self.0
            .write(1)
            .map_err(|e| BackendError::os("irqfd write", e))
    }
}

impl Vm for KvmVm {
    fn map_memory(&mut self, memory: Arc<GuestMemoryMmap>) -> Result<(), BackendError> {
        let mut held = self
            .shared
            .memory
            .lock()
            .map_err(|_| BackendError::os("memory lock", io::Error::other("poisoned")))?;
        let first_slot = held.iter().map(|m| m.num_regions()).sum::<usize>();
        for (i, region) in memory.iter().enumerate() {
            let slot = u32::try_from(first_slot + i).map_err(|_| BackendError::Unsupported {
                backend: "kvm",
                what: "that many memory slots",
            })?;
            let r = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the region is a live anonymous mapping of `len` bytes;
            // `held` (shared with every vCPU) keeps it mapped for as long as
            // the VM or any vCPU fd can reach it.
            unsafe { self.shared.fd.set_user_memory_region(r) }
                .map_err(os("KVM_SET_USER_MEMORY_REGION"))?;
        }
        held.push(memory);
        Ok(())
    }

    fn interrupt_line(&self, gsi: u32) -> Result<Arc<dyn InterruptLine>, BackendError> {
        let evt = EventFd::new(EFD_NONBLOCK).map_err(|e| BackendError::os("eventfd", e))?;
        self.shared
            .fd
            .register_irqfd(&evt, gsi)
            .map_err(os("KVM_IRQFD"))?;
        Ok(Arc::new(Irqfd(evt)))
    }

    fn create_vcpu(&self, id: u8) -> Result<Box<dyn Vcpu>, BackendError> {
        let fd = self
            .shared
            .fd
            .create_vcpu(u64::from(id))
            .map_err(os("KVM_CREATE_VCPU"))?;
        let mut lapic = fd.get_lapic().map_err(os("KVM_GET_LAPIC"))?;
        convert::set_virtual_wire(&mut lapic);
        fd.set_lapic(&lapic).map_err(os("KVM_SET_LAPIC"))?;
        Ok(Box::new(KvmVcpu::new(fd, Arc::clone(&self.shared))))
    }
}
