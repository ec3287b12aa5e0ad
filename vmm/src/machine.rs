//! Puts a VM together and runs it: guest memory, boot set-up, backend VM,
//! devices, one thread per vCPU, and the console; then waits for the first
//! reason to stop and takes every thread down.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use vm_memory::GuestMemoryMmap;

use crate::backend::{self, Hypervisor};
use crate::boot::{self, cpuid, layout};
use crate::bus::Bus;
use crate::config::{host_memory, VmConfig};
use crate::control::{RunControl, StopReason};
use crate::devices::serial::SerialOut;
use crate::devices::Devices;
use crate::stats::{ExitCounts, ExitStats};
use crate::vcpu_loop::{self, VcpuContext};
use crate::{console, kick, VmmError};

/// How long vCPU threads get to leave the guest once the VM stops.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the guest's console goes.
pub struct Console {
    /// Read for the guest's serial input (polled); `None`: no input.
    pub input: Option<Box<dyn AsFd + Send>>,
    /// The guest's serial output.
    pub output: SerialOut,
}

/// How a run went.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub reason: StopReason,
    pub exits: ExitCounts,
    /// From the start of `run` to the end.
    pub elapsed: Duration,
    /// From the start of `run` to the guest's first console byte.
    pub first_output: Option<Duration>,
    /// Console bytes the output refused.
    pub lost_output: u64,
}

/// Remembers when the first byte went through.
struct Timed {
    inner: SerialOut,
    start: Instant,
    first: Arc<OnceLock<Duration>>,
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.first.set(self.start.elapsed());
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Runs the VM `config` describes on its backend until it stops.
pub fn run(config: &VmConfig, console: Console) -> Result<RunReport, VmmError> {
    config.check(host_memory())?;
    let hv = backend::open(config.backend)?;
    run_on(hv.as_ref(), config, console)
}

fn guest_memory(size: u64) -> Result<GuestMemoryMmap, VmmError> {
    let too_big = |reason: String| VmmError::GuestMemory { size, reason };
    let regions = layout::ram_regions(size)
        .into_iter()
        .map(|(addr, len)| {
            Ok((
                addr,
                usize::try_from(len).map_err(|e| too_big(e.to_string()))?,
            ))
        })
        .collect::<Result<Vec<_>, VmmError>>()?;
    GuestMemoryMmap::from_ranges(&regions).map_err(|e| too_big(e.to_string()))
}

/// What every vCPU thread shares.
struct Shared {
    pio: Bus,
    mmio: Bus,
    control: Arc<RunControl>,
    stats: ExitStats,
}

/// Runs the VM on `hv` (a real backend, or the tests' fake).
pub fn run_on(
    hv: &dyn Hypervisor,
    config: &VmConfig,
    console: Console,
) -> Result<RunReport, VmmError> {
    let start = Instant::now();
    let memory = Arc::new(guest_memory(config.memory)?);
    let mut config = config.clone();
    config.cmdline = crate::backend::with_platform_params(&config.cmdline, &hv.platform_cmdline());
    let config = &config;
    let boot = boot::load(&memory, config)?;
    let mut vm = hv.create_vm()?;
    vm.map_memory(Arc::clone(&memory))?;

    let control = Arc::new(RunControl::new());
    let first = Arc::new(OnceLock::new());
    let output = Box::new(Timed {
        inner: console.output,
        start,
        first: Arc::clone(&first),
    });
    let devices = Devices::new(vm.as_ref(), Arc::clone(&control), output)?;

    let supported = hv.supported_cpuid()?;
    let mut vcpus = Vec::with_capacity(usize::from(config.cpus));
    for id in 0..config.cpus {
        let mut vcpu = vm.create_vcpu(id)?;
        vcpu.set_cpuid(&cpuid::guest_cpuid(&supported, id, config.cpus))?;
        if id == 0 {
            vcpu.set_boot_state(&boot.regs, &boot.sregs)?;
        }
        vcpus.push(vcpu);
    }
    kick::install()?;

    let shared = Arc::new(Shared {
        pio: devices.pio,
        mmio: devices.mmio,
        control: Arc::clone(&control),
        stats: ExitStats::new(),
    });
    let mut threads: Vec<JoinHandle<Result<(), VmmError>>> = Vec::new();
    let mut spawn_error = None;
    for (id, mut vcpu) in (0u8..).zip(vcpus) {
        let shared = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || {
                let ctx = VcpuContext {
                    id,
                    pio: &shared.pio,
                    mmio: &shared.mmio,
                    control: &shared.control,
                    stats: &shared.stats,
                };
                vcpu_loop::run(vcpu.as_mut(), &ctx)
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                spawn_error = Some(VmmError::Thread(e));
                control.request_stop(StopReason::VcpuFailed(id));
                break;
            }
        }
    }
    let input = match &console.input {
        Some(fd) => match console::spawn_input(
            fd.as_ref(),
            Arc::clone(&devices.serial),
            Arc::clone(&control),
        ) {
            Ok(t) => Some(t),
            Err(e) => {
                spawn_error.get_or_insert(VmmError::Console(e));
                control.request_stop(StopReason::ConsoleFailed);
                None
            }
        },
        None => None,
    };

    let reason = control.wait();
    let stuck = kick::stop_all(&threads, STOP_TIMEOUT);
    let mut first_error = spawn_error;
    for (id, t) in (0u8..).zip(threads) {
        if stuck.contains(&usize::from(id)) {
            first_error.get_or_insert(VmmError::VcpuStuck(id));
            continue;
        }
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(VmmError::VcpuStuck(id));
            }
        }
    }
    if let Some(t) = input {
        let _ = t.join();
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let lost_output = devices.serial.lock().map_or(0, |s| s.lost_output());
    Ok(RunReport {
        reason,
        exits: shared.stats.snapshot(),
        elapsed: start.elapsed(),
        first_output: first.get().copied(),
        lost_output,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fake::{FakeHypervisor, Step};
    use crate::backend::ExitKind;
    use crate::boot::kernel::tests::{fake_bzimage, TempFile};
    use crate::control::ResetCause;
    use crate::devices::serial::tests::SharedBuf;

    fn config(kernel: &TempFile, cpus: u8) -> VmConfig {
        VmConfig {
            memory: 64 << 20,
            cpus,
            ..VmConfig::new(&kernel.0)
        }
    }

    fn out(s: &[u8]) -> Vec<Step> {
        s.iter().map(|b| Step::Out(0x3f8, vec![*b])).collect()
    }

    #[test]
    fn a_guest_prints_and_powers_off() {
        let k = TempFile::new("m-poweroff", &fake_bzimage(1, b"\xf4"));
        let mut bsp = out(b"hello\n");
        bsp.push(Step::Out(0x600, vec![0x34])); // ACPI S5
        bsp.push(Step::Out(0x3f8, b"late".to_vec()));
        // The AP waits, as for a SIPI, until the VM stops.
        let ap = vec![Step::Park];
        let hv = FakeHypervisor::new(vec![bsp, ap]);
        let buf = SharedBuf::default();
        let console = Console {
            input: None,
            output: Box::new(buf.clone()),
        };
        let report = run_on(&hv, &config(&k, 2), console).unwrap();
        assert_eq!(report.reason, StopReason::PowerOff);
        assert_eq!(&*buf.0.lock().unwrap(), b"hello\n");
        assert!(report.first_output.is_some());
        assert_eq!(report.exits.get(ExitKind::IoOut), 7);
        assert_eq!(report.lost_output, 0);
        let rec = hv.record.lock().unwrap();
        assert_eq!(rec.vcpus, [0, 1]);
        assert_eq!(rec.lines, [4], "COM1's IRQ");
        assert_eq!(rec.mapped.len(), 1);
        assert_eq!(rec.boot_state.len(), 1, "only the BSP gets registers");
        assert_eq!(rec.boot_state[0].1.rip, 0x10_0200);
        let apic_ids: Vec<u32> = rec.cpuid.iter().map(|(_, c)| c[0].ebx >> 24).collect();
        assert_eq!(apic_ids, [0, 1]);
    }

    #[test]
    fn keyboard_reset_ends_the_run() {
        let k = TempFile::new("m-reset", &fake_bzimage(1, b"\xf4"));
        let hv = FakeHypervisor::new(vec![vec![Step::In(0x64, 1), Step::Out(0x64, vec![0xfe])]]);
        let console = Console {
            input: None,
            output: Box::new(io::sink()),
        };
        let report = run_on(&hv, &config(&k, 1), console).unwrap();
        assert_eq!(report.reason, StopReason::Reset(ResetCause::Keyboard));
        assert!(report.first_output.is_none());
    }

    #[test]
    fn a_failing_vcpu_fails_the_run() {
        let k = TempFile::new("m-fail", &fake_bzimage(1, b"\xf4"));
        let hv = FakeHypervisor::new(vec![vec![Step::FailEntry(7)]]);
        let console = Console {
            input: None,
            output: Box::new(io::sink()),
        };
        let e = run_on(&hv, &config(&k, 1), console).unwrap_err();
        assert!(
            matches!(
                e,
                VmmError::FailEntry {
                    vcpu: 0,
                    reason: 7,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn console_quit_ends_the_run() {
        use std::os::unix::net::UnixStream;
        let k = TempFile::new("m-quit", &fake_bzimage(1, b"\xf4"));
        let hv = FakeHypervisor::new(vec![vec![Step::Park]]);
        let (mut user, vm_side) = UnixStream::pair().unwrap();
        user.write_all(b"\x01x").unwrap();
        let console = Console {
            input: Some(Box::new(vm_side)),
            output: Box::new(io::sink()),
        };
        let report = run_on(&hv, &config(&k, 1), console).unwrap();
        assert_eq!(report.reason, StopReason::Quit);
    }

    #[test]
    fn bad_requests_fail_before_any_vm_exists() {
        let hv = FakeHypervisor::new(vec![]);
        let c = VmConfig {
            memory: 64 << 20,
            ..VmConfig::new("/nonexistent/vmlinuz")
        };
        let console = Console {
            input: None,
            output: Box::new(io::sink()),
        };
        let e = run_on(&hv, &c, console).unwrap_err();
        assert_eq!(e.to_string(), "kernel /nonexistent/vmlinuz not found");
        assert!(hv.record.lock().unwrap().vcpus.is_empty());
        let mut c = c;
        c.memory = 1 << 50;
        let e = run(
            &c,
            Console {
                input: None,
                output: Box::new(io::sink()),
            },
        )
        .unwrap_err();
        assert!(matches!(e, VmmError::Config(_)), "{e}");
    }
}
