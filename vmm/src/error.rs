//! The VMM's error: one variant per layer, each with a `hint` for the user
//! where there is something they can do.

use std::io;

use crate::backend::BackendError;
use crate::boot::BootError;
use crate::config::ConfigError;
use crate::devices::DeviceError;

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("cannot allocate {} MiB of guest memory: {reason}", size >> 20)]
    GuestMemory { size: u64, reason: String },
    #[error(
        "vCPU {vcpu} could not enter the guest (backend code {reason:#x}{})",
        with(detail)
    )]
    FailEntry {
        vcpu: u8,
        reason: u64,
        detail: String,
    },
    #[error(
        "vCPU {vcpu} stopped on an exit the {backend} backend does not translate (code {reason}{})",
        with(detail)
    )]
    UnhandledExit {
        vcpu: u8,
        backend: &'static str,
        reason: u64,
        detail: String,
    },
    #[error("vCPU {0} did not stop when asked")]
    VcpuStuck(u8),
    #[error("cannot start a thread: {0}")]
    Thread(#[source] io::Error),
    #[error("cannot set up the console: {0}")]
    Console(#[source] io::Error),
}

/// ", detail" when there is one.
fn with(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!("; {detail}")
    }
}

impl VmmError {
    /// What the user can do about it, if anything.
    pub fn hint(&self) -> Option<String> {
        match self {
            VmmError::Config(e) => Some(e.hint()),
            VmmError::Boot(e) => e.hint(),
            VmmError::Backend(e) => backend_hint(e),
            VmmError::GuestMemory { .. } => Some("try a smaller --mem".into()),
            _ => None,
        }
    }
}

fn backend_hint(e: &BackendError) -> Option<String> {
    Some(match e {
        BackendError::DeviceMissing { device: "/dev/kvm" } => {
            "load KVM (`modprobe kvm_amd` or `modprobe kvm_intel`); inside a VM, nested virtualization must be enabled".into()
        }
        BackendError::NotPermitted { device: "/dev/kvm" } => {
            "run as root, or add yourself to the group that owns /dev/kvm (usually `kvm`)".into()
        }
        BackendError::DeviceMissing { device: "/dev/microv" } => {
            "load MicroV's driver (`insmod microv.ko`) and start MicroV with `microv start`; \
             or use --backend kvm to run the guest on Linux's KVM"
                .into()
        }
        BackendError::NotPermitted { device: "/dev/microv" } => {
            "run as root: MicroV's driver serves only CAP_SYS_ADMIN".into()
        }
        BackendError::DeviceMissing { .. } | BackendError::NotPermitted { .. } => {
            "check that the device exists and that you may open it".into()
        }
        BackendError::NotRunning { .. } => "start it with `microv start`".into(),
        BackendError::Unsupported { backend: "kvm", .. } => {
            "this KVM lacks a feature the VMM needs; use a newer host kernel".into()
        }
        BackendError::Unsupported { backend: "microv", .. } => {
            "load the driver and images built with this microv: `microv stop`, \
             `rmmod microv`, `insmod microv.ko`, `microv start`"
                .into()
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_errors_have_hints() {
        let e = VmmError::from(BackendError::NotRunning { backend: "MicroV" });
        assert_eq!(e.to_string(), "MicroV is not running");
        assert_eq!(e.hint().unwrap(), "start it with `microv start`");
        let e = VmmError::from(BackendError::DeviceMissing {
            device: "/dev/microv",
        });
        assert_eq!(e.to_string(), "/dev/microv does not exist");
        let h = e.hint().unwrap();
        assert!(
            h.contains("insmod microv.ko") && h.contains("`microv start`"),
            "{h}"
        );
        let e = VmmError::from(BackendError::NotPermitted {
            device: "/dev/microv",
        });
        assert!(e.hint().unwrap().contains("root"));
        let e = VmmError::from(BackendError::Unsupported {
            backend: "microv",
            what: "micro VMs",
        });
        assert!(e.hint().unwrap().contains("rmmod microv"));
        let e = VmmError::from(BackendError::NotImplemented("fake"));
        assert_eq!(e.to_string(), "the fake backend is not implemented yet");
        assert!(e.hint().is_none());
        let e = VmmError::from(BackendError::DeviceMissing { device: "/dev/kvm" });
        assert_eq!(e.to_string(), "/dev/kvm does not exist");
        assert!(e.hint().unwrap().contains("modprobe kvm_amd"));
        let e = VmmError::from(BackendError::NotPermitted { device: "/dev/kvm" });
        assert!(e.hint().unwrap().contains("kvm"));
        let e = VmmError::from(BackendError::NotPermitted { device: "/dev/x" });
        assert!(e.hint().is_some());
        let e = VmmError::from(BackendError::Unsupported {
            backend: "kvm",
            what: "irqfd",
        });
        assert_eq!(e.to_string(), "kvm lacks irqfd");
        assert!(e.hint().is_some());
        let e = VmmError::from(BackendError::os(
            "KVM_RUN",
            io::Error::from_raw_os_error(libc::EFAULT),
        ));
        assert!(
            e.to_string().starts_with("KVM_RUN failed: Bad address"),
            "{e}"
        );
        assert!(e.hint().is_none());
    }

    #[test]
    fn other_errors_read_well() {
        let e = VmmError::GuestMemory {
            size: 1 << 30,
            reason: "no".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot allocate 1024 MiB of guest memory: no"
        );
        assert!(e.hint().is_some());
        let e = VmmError::from(ConfigError::Cpus { asked: 0 });
        assert!(e.hint().is_some());
        assert!(VmmError::VcpuStuck(1).hint().is_none());
        assert_eq!(
            VmmError::VcpuStuck(1).to_string(),
            "vCPU 1 did not stop when asked"
        );
    }
}
