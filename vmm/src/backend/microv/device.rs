//! The driver's ioctls (`microv_abi::ioctl`), and the two traits the rest
//! of the backend uses them through, so that everything above them runs
//! against a fake in tests. Nothing here interprets results.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;

use microv_abi::ioctl::{
    CreateVcpuArgs, CreateVmArgs, HvStatus, MapMemoryArgs, VcpuArgs, IOC_CREATE_VM, IOC_STATUS,
    IOC_VCPU_GET_REGS, IOC_VCPU_RUN, IOC_VM_CREATE_VCPU, IOC_VM_MAP_MEMORY,
};
use vmm_sys_util::ioctl::ioctl_with_mut_ref;

use super::page::RunPageMap;

/// What the backend asks of a VM file descriptor.
pub trait VmOps: Send + Sync {
    /// `MV_IOC_VM_MAP_MEMORY`.
    fn map_memory(&self, args: &MapMemoryArgs) -> io::Result<()>;
    /// `MV_IOC_VM_CREATE_VCPU` and the vCPU's mapped run page.
    fn create_vcpu(&self, apic_id: u32) -> io::Result<(Box<dyn VcpuOps>, RunPageMap)>;
}

/// What the backend asks of a vCPU file descriptor.
pub trait VcpuOps: Send {
    /// `MV_IOC_VCPU_RUN`: the exit is in the run page.
    fn run(&self) -> io::Result<()>;
    /// `MV_IOC_VCPU_GET_REGS`: the registers are in the run page.
    fn get_regs(&self) -> io::Result<()>;
}

/// Issues `request` with `arg`; the non-negative result.
///
/// # Safety
///
/// `request` must be the driver's ioctl that takes a `T` (it reads and
/// writes `size_of::<T>()` bytes and keeps no pointer to them).
unsafe fn ioctl<F: AsFd, T>(fd: &F, request: u64, arg: &mut T) -> io::Result<i32> {
    let fd = fd.as_fd();
    // SAFETY: the caller guarantees `request` takes a `T`; `arg` is valid
    // for the call and `fd` is open.
    let r = unsafe { ioctl_with_mut_ref(&fd, request, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Takes ownership of a descriptor an ioctl returned.
fn owned(fd: i32) -> OwnedFd {
    // SAFETY: the driver's CREATE ioctls return a new descriptor that
    // nothing else in this process owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `/dev/microv`, opened.
#[derive(Debug)]
pub struct Device(File);

impl Device {
    pub fn open(path: &Path) -> io::Result<Self> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map(Device)
    }

    /// MicroV's state (`microv_abi::ioctl::hv_state`).
    pub fn state(&self) -> io::Result<u32> {
        let mut status = Box::new(HvStatus::zeroed());
        // SAFETY: IOC_STATUS takes an HvStatus.
        unsafe { ioctl(&self.0, IOC_STATUS, &mut *status) }?;
        Ok(status.state)
    }

    /// `MV_IOC_CREATE_VM`: a new VM's descriptor.
    pub fn create_vm(&self) -> io::Result<VmFd> {
        let mut args = CreateVmArgs::zeroed();
        // SAFETY: IOC_CREATE_VM takes a CreateVmArgs.
        let fd = unsafe { ioctl(&self.0, IOC_CREATE_VM, &mut args) }?;
        Ok(VmFd(owned(fd)))
    }
}

/// A VM's descriptor.
#[derive(Debug)]
pub struct VmFd(OwnedFd);

impl VmOps for VmFd {
    fn map_memory(&self, args: &MapMemoryArgs) -> io::Result<()> {
        let mut a = *args;
        // SAFETY: IOC_VM_MAP_MEMORY takes a MapMemoryArgs; the memory it
        // names is the caller's to keep alive (the VM holds it).
        unsafe { ioctl(&self.0, IOC_VM_MAP_MEMORY, &mut a) }.map(drop)
    }

    fn create_vcpu(&self, apic_id: u32) -> io::Result<(Box<dyn VcpuOps>, RunPageMap)> {
        let mut args = CreateVcpuArgs::zeroed();
        args.apic_id = apic_id;
        // SAFETY: IOC_VM_CREATE_VCPU takes a CreateVcpuArgs.
        let fd = owned(unsafe { ioctl(&self.0, IOC_VM_CREATE_VCPU, &mut args) }?);
        let page = RunPageMap::of_vcpu(fd.as_fd())?;
        Ok((Box::new(VcpuFd(fd)), page))
    }
}

/// A vCPU's descriptor.
#[derive(Debug)]
pub struct VcpuFd(OwnedFd);

impl VcpuOps for VcpuFd {
    fn run(&self) -> io::Result<()> {
        let mut args = VcpuArgs::zeroed();
        // SAFETY: IOC_VCPU_RUN takes a VcpuArgs.
        unsafe { ioctl(&self.0, IOC_VCPU_RUN, &mut args) }.map(drop)
    }

    fn get_regs(&self) -> io::Result<()> {
        let mut args = VcpuArgs::zeroed();
        // SAFETY: IOC_VCPU_GET_REGS takes a VcpuArgs.
        unsafe { ioctl(&self.0, IOC_VCPU_GET_REGS, &mut args) }.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_device_and_foreign_files_fail_cleanly() {
        let e = Device::open(Path::new("/nonexistent/microv")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        // /dev/null knows none of MicroV's ioctls.
        let d = Device::open(Path::new("/dev/null")).unwrap();
        assert_eq!(d.state().unwrap_err().raw_os_error(), Some(libc::ENOTTY));
        assert_eq!(
            d.create_vm().unwrap_err().raw_os_error(),
            Some(libc::ENOTTY)
        );
        let f = File::open("/dev/null").unwrap();
        let vm = VmFd(OwnedFd::from(f.try_clone().unwrap()));
        assert!(vm.map_memory(&MapMemoryArgs::zeroed()).is_err());
        assert!(vm.create_vcpu(0).is_err());
        let vcpu = VcpuFd(OwnedFd::from(f));
        assert!(vcpu.run().is_err());
        assert!(vcpu.get_regs().is_err());
    }
}
