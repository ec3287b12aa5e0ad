//! The MicroV backend: guests run beneath Linux on MicroV, reached through
//! the driver's `/dev/microv` (the interface is `microv_abi::ioctl` and the
//! run page `microv_abi::run`).
//!
//! - [`MicrovHypervisor::open`] opens `/dev/microv` and checks that MicroV
//!   runs (`MV_IOC_STATUS`); `create_vm` is `MV_IOC_CREATE_VM`, which
//!   returns the VM's descriptor.
//! - `Vm::map_memory`: one `MV_IOC_VM_MAP_MEMORY` per guest memory region
//!   (the driver pins the pages; MicroV maps them in the guest's nested
//!   tables). The regions are advised as huge-page memory first: physically
//!   contiguous 2 MiB runs make fewer, larger nested mappings.
//! - `Vm::create_vcpu`: `MV_IOC_VM_CREATE_VCPU` returns the vCPU's
//!   descriptor; its run page is `mmap`ed from it (`page`).
//! - `Vcpu::set_boot_state`: `MV_IOC_VCPU_GET_REGS`, the boot state written
//!   over it in the run page (`regs`), and `request::SET_REGS |
//!   SET_SREGS` so MicroV loads it at the first run.
//! - `Vcpu::run` (`vcpu`): completes the last exit, `MV_IOC_VCPU_RUN`
//!   (EINTR: a signal, [`VmExit::Interrupted`](crate::backend::VmExit)),
//!   translates the run page's exit. MMIO arrives undecoded: the backend
//!   decodes the instruction from guest memory through the guest's page
//!   tables (`guest`, `insn`, `mmio`) and completes it through the
//!   registers; string I/O likewise (`string_io`), a batch per exit.
//!   After a HLT the next run first waits (at most `vcpu::HALT_POLL`) for
//!   a vector.
//! - Interrupts (`irq`): the x2APIC and the TSC-deadline timer are
//!   MicroV's; the IOAPIC is the VMM's ([`crate::devices::ioapic`], on the
//!   MMIO bus through `Vm::mmio_devices`). A device's line pulses it, and
//!   the vector is raised in the destination vCPU's run page, which is
//!   woken or kicked out of the guest (`doorbell`).
//! - CPUID (`cpuid`): MicroV's extension answers the guest's `cpuid`
//!   itself; `Vcpu::set_cpuid` is a no-op and the supported list is
//!   informational.
//!
//! Written against the ABI alone: the driver and MicroV do not serve these
//! ioctls yet, so everything above the ioctls (`device`) is tested
//! against a fake that plays MicroV's side of the run page.

mod cpuid;
mod device;
mod doorbell;
mod guest;
mod insn;
mod irq;
mod mmio;
mod page;
mod regs;
mod string_io;
#[cfg(test)]
mod testing;
mod vcpu;

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use microv_abi::ioctl::{hv_state, MapMemoryArgs};
use microv_abi::run::map_access;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use self::device::{Device, VmOps};
use self::doorbell::Doorbell;
use self::irq::{IoapicLine, Targets};
use super::{
    BackendError, BackendKind, CpuidEntry, Hypervisor, InterruptLine, MmioDevice, Vcpu, Vm,
};
use crate::devices::ioapic::{Ioapic, IOAPIC_ADDR, IOAPIC_SIZE, PINS};

pub use vcpu::MicrovVcpu;

/// The driver's device node.
pub const DEVICE_PATH: &str = microv_abi::ioctl::DEVICE_PATH;

/// Names MicroV in errors.
const BACKEND: &str = "microv";

/// What a failed driver call means. The driver answers ENODEV when MicroV
/// is not running (its `MV_ERR_NOT_RUNNING`), EPERM without
/// CAP_SYS_ADMIN, and ENOTTY for an ioctl it does not know (a driver older
/// than micro VMs); EOPNOTSUPP is taken to mean the same of MicroV.
fn ioctl_error(op: &'static str, e: io::Error) -> BackendError {
    match e.raw_os_error() {
        Some(libc::ENODEV | libc::ENXIO) => BackendError::NotRunning { backend: "MicroV" },
        Some(libc::EACCES | libc::EPERM) => BackendError::NotPermitted {
            device: DEVICE_PATH,
        },
        Some(libc::ENOTTY | libc::EOPNOTSUPP) => BackendError::Unsupported {
            backend: BACKEND,
            what: "micro VMs (the loaded driver or MicroV predates them)",
        },
        _ => BackendError::os(op, e),
    }
}

/// What failing to open the device node means.
fn open_error(e: io::Error) -> BackendError {
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => BackendError::DeviceMissing {
            device: DEVICE_PATH,
        },
        Some(libc::EACCES | libc::EPERM) => BackendError::NotPermitted {
            device: DEVICE_PATH,
        },
        _ => BackendError::os("opening /dev/microv", e),
    }
}

/// MicroV's state from `MV_IOC_STATUS`: only a running MicroV runs VMs.
fn check_running(state: u32) -> Result<(), BackendError> {
    if state == hv_state::RUNNING {
        Ok(())
    } else {
        Err(BackendError::NotRunning { backend: "MicroV" })
    }
}

/// `/dev/microv`, opened, with MicroV running.
#[derive(Debug)]
pub struct MicrovHypervisor {
    device: Device,
}

impl MicrovHypervisor {
    pub fn open() -> Result<Self, BackendError> {
        Self::open_at(Path::new(DEVICE_PATH))
    }

    fn open_at(path: &Path) -> Result<Self, BackendError> {
        let device = Device::open(path).map_err(open_error)?;
        let state = device
            .state()
            .map_err(|e| ioctl_error("MV_IOC_STATUS", e))?;
        check_running(state)?;
        Ok(MicrovHypervisor { device })
    }
}

impl Hypervisor for MicrovHypervisor {
    fn kind(&self) -> BackendKind {
        BackendKind::MicroV
    }

    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>, BackendError> {
        Ok(cpuid::supported())
    }

    /// MicroV's platform has no PIT, HPET or PM timer to calibrate the TSC
    /// against, and Linux reads a hypervisor's TSC frequency from CPUID
    /// only for hypervisors it knows: pass the frequency MicroV reports in
    /// its timing leaf (CPUID 0x4000_0010 EAX, kHz) to the kernel, and say
    /// the TSC is reliable (guests read the host's TSC with no offset), as
    /// Linux itself decides for hypervisors it knows. Without it the
    /// clocksource watchdog, checking the TSC against jiffies that run
    /// late while the VMM serves exits, may drop the TSC for jiffies, and
    /// guest time then drifts.
    fn platform_cmdline(&self) -> Vec<String> {
        match cpuid::tsc_khz() {
            0 => Vec::new(),
            khz => vec![format!("tsc_early_khz={khz}"), "tsc=reliable".to_string()],
        }
    }

    fn create_vm(&self) -> Result<Box<dyn Vm>, BackendError> {
        let fd = self
            .device
            .create_vm()
            .map_err(|e| ioctl_error("MV_IOC_CREATE_VM", e))?;
        Ok(Box::new(MicrovVm::new(Box::new(fd))))
    }
}

/// What a VM and all its vCPUs share. Fields drop in order: the VM's
/// descriptor closes (the driver unpins the memory) before the memory goes.
pub(crate) struct VmShared {
    ops: Box<dyn VmOps>,
    memory: Mutex<Vec<Arc<GuestMemoryMmap>>>,
}

/// A MicroV VM.
pub struct MicrovVm {
    shared: Arc<VmShared>,
    ioapic: Arc<Mutex<Ioapic>>,
    targets: Arc<Targets>,
}

impl MicrovVm {
    fn new(ops: Box<dyn VmOps>) -> Self {
        MicrovVm {
            shared: Arc::new(VmShared {
                ops,
                memory: Mutex::new(Vec::new()),
            }),
            ioapic: Arc::new(Mutex::new(Ioapic::new())),
            targets: Arc::new(Targets::default()),
        }
    }
}

/// Asks for transparent huge pages under `len` bytes at `addr`; only
/// advice, so failure (no THP in this kernel) is ignored.
fn advise_huge_pages(addr: *mut u8, len: usize) {
    // SAFETY: advice about a mapping this process owns; MADV_HUGEPAGE
    // changes how it is backed, never its contents.
    unsafe { libc::madvise(addr.cast(), len, libc::MADV_HUGEPAGE) };
}

const PAGE: u64 = 4096;

impl Vm for MicrovVm {
    fn map_memory(&mut self, memory: Arc<GuestMemoryMmap>) -> Result<(), BackendError> {
        let mut held = self
            .shared
            .memory
            .lock()
            .map_err(|_| BackendError::os("memory lock", io::Error::other("poisoned")))?;
        // Held before the driver pins it: it must outlive the VM.
        held.push(Arc::clone(&memory));
        for region in memory.iter() {
            let gpa = region.start_addr().raw_value();
            let size = region.len();
            let addr = region.as_ptr();
            let whole = |n: u64| n.is_multiple_of(PAGE);
            if !(whole(gpa) && whole(size) && whole(addr as u64)) {
                return Err(BackendError::Unsupported {
                    backend: BACKEND,
                    what: "guest memory regions that are not whole 4 KiB pages",
                });
            }
            advise_huge_pages(addr, size as usize);
            let args = MapMemoryArgs {
                user_addr: addr as u64,
                size,
                gpa,
                flags: map_access::ALL,
            };
            self.shared
                .ops
                .map_memory(&args)
                .map_err(|e| ioctl_error("MV_IOC_VM_MAP_MEMORY", e))?;
        }
        Ok(())
    }

    fn interrupt_line(&self, gsi: u32) -> Result<Arc<dyn InterruptLine>, BackendError> {
        if gsi >= PINS {
            return Err(BackendError::Unsupported {
                backend: BACKEND,
                what: "interrupt lines beyond the IOAPIC's 24 pins",
            });
        }
        Ok(Arc::new(IoapicLine {
            ioapic: Arc::clone(&self.ioapic),
            targets: Arc::clone(&self.targets),
            gsi,
        }))
    }

    fn create_vcpu(&self, id: u8) -> Result<Box<dyn Vcpu>, BackendError> {
        let (ops, page) = self
            .shared
            .ops
            .create_vcpu(u32::from(id))
            .map_err(|e| ioctl_error("MV_IOC_VM_CREATE_VCPU", e))?;
        let page = Arc::new(page);
        let doorbell = Arc::new(Doorbell::new(Arc::clone(&page)));
        self.targets.add(id, Arc::clone(&doorbell));
        Ok(Box::new(MicrovVcpu::new(
            ops,
            page,
            doorbell,
            Arc::clone(&self.shared),
        )))
    }

    fn mmio_devices(&self) -> Vec<MmioDevice> {
        vec![MmioDevice {
            base: IOAPIC_ADDR,
            len: IOAPIC_SIZE,
            device: self.ioapic.clone(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::testing::FakeVm;
    use super::*;
    use crate::boot::layout;
    use vm_memory::GuestAddress;

    #[test]
    fn errors_say_what_is_wrong() {
        let err = |errno| ioctl_error("op", io::Error::from_raw_os_error(errno)).to_string();
        assert_eq!(err(libc::ENODEV), "MicroV is not running");
        assert_eq!(err(libc::ENXIO), "MicroV is not running");
        assert_eq!(err(libc::EPERM), "no permission to open /dev/microv");
        assert!(
            err(libc::ENOTTY).contains("predates them"),
            "{}",
            err(libc::ENOTTY)
        );
        assert!(err(libc::EOPNOTSUPP).starts_with("microv lacks micro VMs"));
        assert!(err(libc::ENOMEM).starts_with("op failed: "));
        let open = |errno| open_error(io::Error::from_raw_os_error(errno)).to_string();
        assert_eq!(open(libc::ENOENT), "/dev/microv does not exist");
        assert_eq!(open(libc::EACCES), "no permission to open /dev/microv");
        assert!(open(libc::EIO).starts_with("opening /dev/microv failed"));
        assert!(check_running(hv_state::RUNNING).is_ok());
        for s in [hv_state::STOPPED, hv_state::FAILED] {
            assert!(matches!(
                check_running(s),
                Err(BackendError::NotRunning { .. })
            ));
        }
    }

    #[test]
    fn opening_checks_the_device_and_microv() {
        let e = MicrovHypervisor::open_at(Path::new("/nonexistent/microv")).unwrap_err();
        assert!(matches!(e, BackendError::DeviceMissing { .. }), "{e}");
        // A device that does not know MicroV's ioctls.
        let e = MicrovHypervisor::open_at(Path::new("/dev/null")).unwrap_err();
        assert!(matches!(e, BackendError::Unsupported { .. }), "{e}");
        // The real one, where there is one.
        if !Path::new(DEVICE_PATH).exists() {
            let e = MicrovHypervisor::open().unwrap_err();
            assert!(matches!(e, BackendError::DeviceMissing { .. }), "{e}");
        }
    }

    fn new_vm(fake: &Arc<FakeVm>) -> MicrovVm {
        MicrovVm::new(Box::new(Arc::clone(fake)))
    }

    #[test]
    fn each_region_is_mapped_where_the_guest_sees_it() {
        let fake = Arc::new(FakeVm::default());
        let mut vm = new_vm(&fake);
        let regions: Vec<(GuestAddress, usize)> = layout::ram_regions(3 << 30 | 64 << 20)
            .into_iter()
            .map(|(a, l)| (a, l as usize))
            .collect();
        let memory = Arc::new(GuestMemoryMmap::from_ranges(&regions).unwrap());
        vm.map_memory(Arc::clone(&memory)).unwrap();
        let mapped = fake.mapped.lock().unwrap().clone();
        assert_eq!(mapped.len(), 2);
        for (args, region) in mapped.iter().zip(memory.iter()) {
            assert_eq!(args.gpa, region.start_addr().raw_value());
            assert_eq!(args.size, region.len());
            assert_eq!(args.user_addr, region.as_ptr() as u64);
            assert_eq!(args.flags, map_access::ALL);
        }
        assert_eq!((mapped[1].gpa, mapped[1].size), (1 << 32, 64 << 20));
        assert_eq!(vm.shared.memory.lock().unwrap().len(), 1, "held");
        drop(memory);

        let fake = Arc::new(FakeVm {
            fail: Some(libc::ENODEV),
            ..Default::default()
        });
        let mut vm = new_vm(&fake);
        let memory = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
        let e = vm.map_memory(Arc::clone(&memory)).unwrap_err();
        assert!(matches!(e, BackendError::NotRunning { .. }), "{e}");
        assert!(vm.create_vcpu(0).is_err());
        let odd = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0x800), 4096)]).unwrap());
        let e = vm.map_memory(odd).unwrap_err();
        assert!(e.to_string().contains("4 KiB"), "{e}");
    }

    #[test]
    fn lines_reach_vcpus_through_the_ioapic() {
        let fake = Arc::new(FakeVm::default());
        let vm = new_vm(&fake);
        assert!(vm.interrupt_line(PINS).is_err());
        let line = vm.interrupt_line(4).unwrap();
        let _bsp = vm.create_vcpu(0).unwrap();
        let _ap = vm.create_vcpu(1).unwrap();
        assert_eq!(*fake.vcpus.lock().unwrap(), [0, 1]);
        let devices = vm.mmio_devices();
        assert_eq!(devices.len(), 1);
        assert_eq!((devices[0].base, devices[0].len), (0xfec0_0000, 0x1000));
        // The guest routes pin 4 to vector 0x24 on APIC 1.
        {
            let mut io = devices[0].device.lock().unwrap();
            io.write(0, &[0x19]).unwrap();
            io.write(0x10, &(1u32 << 24).to_le_bytes()).unwrap();
            io.write(0, &[0x18]).unwrap();
            io.write(0x10, &0x24u32.to_le_bytes()).unwrap();
        }
        line.trigger().unwrap();
        assert_eq!(vm.ioapic.lock().unwrap().dropped(), 0);
        let ap = vm.targets.doorbell(1).unwrap();
        assert_eq!(ap.page().take_raised(), [1 << 0x24, 0, 0, 0]);
        let bsp = vm.targets.doorbell(0).unwrap();
        assert!(!bsp.page().any_raised());
    }

    #[test]
    fn a_hypervisor_without_micro_vms_refuses_them() {
        let hv = MicrovHypervisor {
            device: Device::open(Path::new("/dev/null")).unwrap(),
        };
        assert_eq!(hv.kind(), BackendKind::MicroV);
        assert_eq!(BACKEND, BackendKind::MicroV.name());
        assert!(!hv.supported_cpuid().unwrap().is_empty());
        let e = hv.create_vm().err().unwrap();
        assert!(matches!(e, BackendError::Unsupported { .. }), "{e}");
    }
}
