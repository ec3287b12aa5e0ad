//! `/dev/microv`: the ioctls behind a trait, so the commands can be tested
//! with a fake driver.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use microv_abi::ioctl::{
    HvStatus, ImageArg, LogArgs, StartArgs, StopArgs, TestFaultArgs, VmList, IOC_LIST_VMS, IOC_LOG,
    IOC_START, IOC_STATUS, IOC_STOP, IOC_TEST_FAULT,
};
use microv_abi::launch::MAX_SEGMENTS;
use microv_image::FlatImage;

/// What `microv start` hands the driver.
#[derive(Clone, Copy, Debug)]
pub struct StartRequest<'a> {
    pub kernel: &'a FlatImage,
    pub extension: &'a FlatImage,
    pub pool_size: u64,
    pub flags: u64,
}

/// How an ioctl failed: errno and what the driver wrote into the struct's
/// error fields (0 / `u32::MAX` / 0 when none, or for ioctls without them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoctlError {
    pub errno: i32,
    pub code: u32,
    pub cpu: u32,
    pub detail: u64,
}

impl IoctlError {
    /// A failure that carries only errno.
    pub fn errno(errno: i32) -> Self {
        IoctlError {
            errno,
            code: 0,
            cpu: u32::MAX,
            detail: 0,
        }
    }
}

/// What the log ioctl copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRead {
    /// Bytes copied into the buffer.
    pub copied: usize,
    /// Bytes lost to ring wrap-around since start.
    pub lost: u64,
}

/// The driver's operations.
pub trait Device {
    fn start(&mut self, req: &StartRequest<'_>) -> Result<(), IoctlError>;
    fn stop(&mut self) -> Result<(), IoctlError>;
    fn status(&mut self) -> Result<HvStatus, IoctlError>;
    /// The micro VMs the driver holds (ENOTTY: a driver without the list).
    fn list_vms(&mut self) -> Result<VmList, IoctlError>;
    /// Copies the log into `buf`.
    fn log(&mut self, buf: &mut [u8]) -> Result<LogRead, IoctlError>;
    /// Makes the extension fault on CPU `os_cpu` (test images).
    fn test_fault(&mut self, os_cpu: u32, kind: u32) -> Result<(), IoctlError>;
}

/// The [`ImageArg`] for a flat image: `user_addr` points at its bytes, which
/// must stay alive and unmoved until the ioctl returns.
pub fn image_arg(flat: &FlatImage) -> ImageArg {
    let mut arg = ImageArg::zeroed();
    arg.user_addr = flat.bytes.as_ptr() as u64;
    arg.size = flat.bytes.len() as u64;
    arg.base = flat.base;
    arg.entry = flat.entry;
    for (slot, seg) in arg.segments.iter_mut().zip(&flat.segments) {
        *slot = *seg;
    }
    arg.segment_count = flat.segments.len().min(MAX_SEGMENTS) as u64;
    arg
}

/// The [`StartArgs`] for a request (pointers into the request's images).
pub fn start_args(req: &StartRequest<'_>) -> StartArgs {
    let mut args = StartArgs::zeroed();
    args.kernel = image_arg(req.kernel);
    args.extension = image_arg(req.extension);
    args.pool_size = req.pool_size;
    args.flags = req.flags;
    args.error_cpu = u32::MAX;
    args
}

/// The real driver, through its device node.
pub struct LinuxDevice {
    file: File,
}

fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

impl LinuxDevice {
    /// Opens the device node read-write; the error is errno.
    pub fn open(path: &Path) -> Result<Self, i32> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map(|file| LinuxDevice { file })
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    }

    /// Issues `request` on `arg`; returns errno on failure.
    ///
    /// # Safety
    ///
    /// `request` must be the ioctl whose argument is a `T` (the driver reads
    /// and writes `size_of::<T>()` bytes), and every user address inside
    /// `arg` must point to memory that is valid for the access the driver
    /// makes to it for the duration of the call.
    unsafe fn ioctl<T>(&self, request: u64, arg: &mut T) -> Result<(), i32> {
        let ptr: *mut T = arg;
        // SAFETY: the fd is open for this object's lifetime; `ptr` is an
        // exclusively borrowed `T`, which the caller guarantees is what
        // `request` expects, with valid embedded user addresses.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), request as _, ptr) };
        if rc < 0 {
            Err(last_errno())
        } else {
            Ok(())
        }
    }
}

impl Device for LinuxDevice {
    fn start(&mut self, req: &StartRequest<'_>) -> Result<(), IoctlError> {
        let mut args = start_args(req);
        // SAFETY: IOC_START takes a StartArgs; its user addresses point to the
        // images borrowed by `req`, alive and unmoved during the call.
        unsafe { self.ioctl(IOC_START, &mut args) }.map_err(|errno| IoctlError {
            errno,
            code: args.error_code,
            cpu: args.error_cpu,
            detail: args.error_detail,
        })
    }

    fn stop(&mut self) -> Result<(), IoctlError> {
        let mut args = StopArgs::zeroed();
        args.error_cpu = u32::MAX;
        // SAFETY: IOC_STOP takes a StopArgs, which holds no addresses.
        unsafe { self.ioctl(IOC_STOP, &mut args) }.map_err(|errno| IoctlError {
            errno,
            code: args.error_code,
            cpu: args.error_cpu,
            detail: args.error_detail,
        })
    }

    fn status(&mut self) -> Result<HvStatus, IoctlError> {
        let mut status = HvStatus::zeroed();
        // SAFETY: IOC_STATUS takes an HvStatus, which holds no addresses.
        unsafe { self.ioctl(IOC_STATUS, &mut status) }.map_err(IoctlError::errno)?;
        Ok(status)
    }

    fn list_vms(&mut self) -> Result<VmList, IoctlError> {
        let mut list = VmList::zeroed();
        // SAFETY: IOC_LIST_VMS takes a VmList, which holds no addresses.
        unsafe { self.ioctl(IOC_LIST_VMS, &mut list) }.map_err(IoctlError::errno)?;
        Ok(list)
    }

    fn log(&mut self, buf: &mut [u8]) -> Result<LogRead, IoctlError> {
        let mut args = LogArgs::zeroed();
        args.user_addr = buf.as_mut_ptr() as u64;
        args.size = buf.len() as u64;
        // SAFETY: IOC_LOG takes a LogArgs whose `user_addr`/`size` describe
        // `buf`, exclusively borrowed during the call.
        unsafe { self.ioctl(IOC_LOG, &mut args) }.map_err(IoctlError::errno)?;
        Ok(LogRead {
            copied: (args.copied as usize).min(buf.len()),
            lost: args.lost,
        })
    }

    fn test_fault(&mut self, os_cpu: u32, kind: u32) -> Result<(), IoctlError> {
        let mut args = TestFaultArgs::zeroed();
        args.os_cpu = os_cpu;
        args.kind = kind;
        // SAFETY: IOC_TEST_FAULT takes a TestFaultArgs, which holds no addresses.
        unsafe { self.ioctl(IOC_TEST_FAULT, &mut args) }.map_err(|errno| IoctlError {
            errno,
            code: args.error_code,
            cpu: args.error_cpu,
            detail: args.error_detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real ioctl path against a node that knows none of MicroV's
    /// requests: every call fails with ENOTTY and leaves the error fields as
    /// the CLI initialised them.
    #[test]
    fn real_ioctls_report_errno() {
        assert_eq!(
            LinuxDevice::open(Path::new("/nonexistent/microv")).err(),
            Some(libc::ENOENT)
        );
        let Ok(mut dev) = LinuxDevice::open(Path::new("/dev/null")) else {
            eprintln!("skipped: /dev/null cannot be opened read-write");
            return;
        };
        let enotty = IoctlError::errno(libc::ENOTTY);
        assert_eq!(dev.status().err(), Some(enotty));
        assert_eq!(dev.list_vms().err(), Some(enotty));
        assert_eq!(dev.stop().err(), Some(enotty));
        let mut buf = [0u8; 16];
        assert_eq!(dev.log(&mut buf).err(), Some(enotty));
        let flat = microv_image::flatten(
            &microv_image::testing::sample_image(microv_image::ImageKind::Kernel),
            microv_image::ImageKind::Kernel,
        )
        .unwrap();
        let req = StartRequest {
            kernel: &flat,
            extension: &flat,
            pool_size: 64 << 20,
            flags: 0,
        };
        assert_eq!(dev.start(&req).err(), Some(enotty));
    }
}

#[cfg(test)]
pub mod fake {
    //! A driver in memory that records what it was asked.

    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    #[derive(Debug, Default)]
    pub struct State {
        /// The StartArgs built for each start, with copies of the images' bytes.
        pub starts: Vec<(StartArgs, Vec<u8>, Vec<u8>)>,
        pub stops: usize,
        /// What `status` returns (`None`: fails with errno EIO).
        pub status: Option<HvStatus>,
        /// What `list_vms` returns (`None`: fails with ENOTTY, as an
        /// older driver does).
        pub vms: Option<VmList>,
        pub log: Vec<u8>,
        pub lost: u64,
        /// (os_cpu, kind) of each test fault asked for.
        pub test_faults: Vec<(u32, u32)>,
        /// Makes the next start/stop fail.
        pub fail: Option<IoctlError>,
    }

    #[derive(Clone, Default)]
    pub struct FakeDevice(pub Rc<RefCell<State>>);

    impl Device for FakeDevice {
        fn start(&mut self, req: &StartRequest<'_>) -> Result<(), IoctlError> {
            let mut s = self.0.borrow_mut();
            s.starts.push((
                start_args(req),
                req.kernel.bytes.clone(),
                req.extension.bytes.clone(),
            ));
            s.fail.take().map_or(Ok(()), Err)
        }
        fn stop(&mut self) -> Result<(), IoctlError> {
            let mut s = self.0.borrow_mut();
            s.stops += 1;
            s.fail.take().map_or(Ok(()), Err)
        }
        fn status(&mut self) -> Result<HvStatus, IoctlError> {
            self.0.borrow().status.ok_or(IoctlError::errno(libc::EIO))
        }
        fn list_vms(&mut self) -> Result<VmList, IoctlError> {
            self.0.borrow().vms.ok_or(IoctlError::errno(libc::ENOTTY))
        }
        fn log(&mut self, buf: &mut [u8]) -> Result<LogRead, IoctlError> {
            let s = self.0.borrow();
            let n = s.log.len().min(buf.len());
            buf[..n].copy_from_slice(&s.log[..n]);
            Ok(LogRead {
                copied: n,
                lost: s.lost,
            })
        }
        fn test_fault(&mut self, os_cpu: u32, kind: u32) -> Result<(), IoctlError> {
            let mut s = self.0.borrow_mut();
            s.test_faults.push((os_cpu, kind));
            s.fail.take().map_or(Ok(()), Err)
        }
    }
}
