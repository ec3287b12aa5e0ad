//! The loop each vCPU thread runs: enter the guest, handle the neutral exit,
//! repeat until the VM is stopping. Nothing here knows the backend.

use crate::backend::{Vcpu, VmExit};
use crate::bus::{Access, Bus};
use crate::control::{ResetCause, RunControl, StopReason};
use crate::stats::ExitStats;
use crate::VmmError;

/// What a vCPU thread reaches.
pub struct VcpuContext<'a> {
    pub id: u8,
    pub pio: &'a Bus,
    pub mmio: &'a Bus,
    pub control: &'a RunControl,
    pub stats: &'a ExitStats,
}

/// What to do after an exit (Firecracker's `VcpuEmulation`, minus pause).
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Handles one exit. Errors leave `detail` empty for the caller to fill:
/// the exit borrows the vCPU, so only the caller can ask it.
pub fn handle_exit(exit: VmExit<'_>, ctx: &VcpuContext<'_>) -> Result<Flow, VmmError> {
    ctx.stats.count(exit.kind());
    let access = match exit {
        // String I/O hands several accesses at once; each reaches the
        // device on its own, as the guest's instruction makes them.
        VmExit::IoIn { port, size, data } => {
            ctx.stats.count_port(port);
            let mut access = Access::Handled;
            for one in data.chunks_mut(size.max(1)) {
                access = ctx.pio.read(u64::from(port), one)?;
            }
            access
        }
        VmExit::IoOut { port, size, data } => {
            ctx.stats.count_port(port);
            let mut access = Access::Handled;
            for one in data.chunks(size.max(1)) {
                access = ctx.pio.write(u64::from(port), one)?;
            }
            access
        }
        VmExit::MmioRead { gpa, data } => ctx.mmio.read(gpa, data)?,
        VmExit::MmioWrite { gpa, data } => ctx.mmio.write(gpa, data)?,
        // The backend waits for the next interrupt inside the next run.
        VmExit::Hlt | VmExit::Interrupted => Access::Handled,
        VmExit::Shutdown => {
            ctx.control
                .request_stop(StopReason::Reset(ResetCause::TripleFault));
            return Ok(Flow::Stop);
        }
        VmExit::Reset => {
            ctx.control
                .request_stop(StopReason::Reset(ResetCause::Backend));
            return Ok(Flow::Stop);
        }
        VmExit::PowerOff => {
            ctx.control.request_stop(StopReason::PowerOff);
            return Ok(Flow::Stop);
        }
        VmExit::FailEntry { reason } => {
            return Err(VmmError::FailEntry {
                vcpu: ctx.id,
                reason,
                detail: String::new(),
            })
        }
        VmExit::Unhandled { backend, reason } => {
            return Err(VmmError::UnhandledExit {
                vcpu: ctx.id,
                backend,
                reason,
                detail: String::new(),
            })
        }
    };
    if access == Access::Unclaimed {
        ctx.stats.count_unclaimed();
    }
    // A device may have ended the VM (power off, reset).
    Ok(if ctx.control.is_stopping() {
        Flow::Stop
    } else {
        Flow::Continue
    })
}

/// Runs `vcpu` until the VM stops. On error, the VM is stopped too.
pub fn run(vcpu: &mut dyn Vcpu, ctx: &VcpuContext<'_>) -> Result<(), VmmError> {
    let result = run_inner(vcpu, ctx);
    if result.is_err() {
        ctx.control.request_stop(StopReason::VcpuFailed(ctx.id));
    }
    result
}

fn run_inner(vcpu: &mut dyn Vcpu, ctx: &VcpuContext<'_>) -> Result<(), VmmError> {
    while !ctx.control.is_stopping() {
        let exit = vcpu.run()?;
        match handle_exit(exit, ctx) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Stop) => break,
            Err(mut e) => {
                // The exit no longer borrows the vCPU: ask it for details.
                if let VmmError::FailEntry { detail, .. } | VmmError::UnhandledExit { detail, .. } =
                    &mut e
                {
                    *detail = vcpu.diagnose();
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::backend::fake::{FakeVcpu, Step};
    use crate::backend::ExitKind;
    use crate::devices::power::Power;
    use crate::devices::serial::tests::{CountingLine, SharedBuf};
    use crate::devices::serial::SerialDevice;

    struct World {
        pio: Bus,
        mmio: Bus,
        control: RunControl,
        stats: ExitStats,
        out: SharedBuf,
    }

    impl World {
        fn new() -> Self {
            let out = SharedBuf::default();
            let mut pio = Bus::new();
            let serial =
                SerialDevice::new(Arc::new(CountingLine::default()), Box::new(out.clone()));
            pio.insert(0x3f8, 8, Arc::new(Mutex::new(serial))).unwrap();
            World {
                pio,
                mmio: Bus::new(),
                control: RunControl::new(),
                stats: ExitStats::new(),
                out,
            }
        }
        fn ctx(&self) -> VcpuContext<'_> {
            VcpuContext {
                id: 0,
                pio: &self.pio,
                mmio: &self.mmio,
                control: &self.control,
                stats: &self.stats,
            }
        }
    }

    #[test]
    fn guest_output_then_triple_fault() {
        let w = World::new();
        let mut steps: Vec<Step> = b"ok\n".iter().map(|b| Step::Out(0x3f8, vec![*b])).collect();
        steps.push(Step::In(0x3fd, 1)); // LSR
        steps.push(Step::In(0x80, 1)); // nobody there
        steps.push(Step::Interrupted);
        steps.push(Step::Hlt);
        steps.push(Step::Shutdown);
        steps.push(Step::Out(0x3f8, b"never".to_vec()));
        let mut vcpu = FakeVcpu::new(steps);
        run(&mut vcpu, &w.ctx()).unwrap();
        assert_eq!(&*w.out.0.lock().unwrap(), b"ok\n");
        assert_eq!(
            w.control.reason(),
            Some(StopReason::Reset(ResetCause::TripleFault))
        );
        assert_eq!(
            vcpu.reads(),
            [vec![0x60], vec![0xff]],
            "LSR: THR empty; floating bus"
        );
        let c = w.stats.snapshot();
        assert_eq!(c.get(ExitKind::IoOut), 3);
        assert_eq!(c.get(ExitKind::IoIn), 2);
        assert_eq!(c.get(ExitKind::Shutdown), 1);
        assert_eq!(c.unclaimed, 1);
    }

    #[test]
    fn string_io_reaches_the_device_one_access_at_a_time() {
        let w = World::new();
        let mut vcpu = FakeVcpu::new(vec![
            // rep outsw: each word's low byte is the UART's.
            Step::Outs(0x3f8, 2, vec![b'o', 0, b'k', 0]),
            Step::Out(0x3ff, vec![b's']), // the scratch register
            Step::Ins(0x3ff, 1, 3),
            Step::Ins(0x3ff, 1, 0), // a rep with a count of 0
            Step::Shutdown,
        ]);
        run(&mut vcpu, &w.ctx()).unwrap();
        assert_eq!(&*w.out.0.lock().unwrap(), b"ok");
        assert_eq!(vcpu.reads(), [b"sss".to_vec(), Vec::new()]);
        let c = w.stats.snapshot();
        assert_eq!((c.get(ExitKind::IoOut), c.get(ExitKind::IoIn)), (2, 2));
    }

    #[test]
    fn a_device_can_end_the_run() {
        let mut w = World::new();
        w.pio
            .insert(
                0x600,
                3,
                Arc::new(Mutex::new(Power::new(Arc::new(RunControl::new())))),
            )
            .unwrap();
        // This Power reports to another control: the loop keeps going
        // until its own control says stop.
        let mut vcpu = FakeVcpu::new(vec![Step::Out(0x600, vec![0x34]), Step::PowerOff]);
        run(&mut vcpu, &w.ctx()).unwrap();
        assert_eq!(w.control.reason(), Some(StopReason::PowerOff));

        let w = World::new();
        let mut vcpu = FakeVcpu::new(vec![Step::Reset]);
        run(&mut vcpu, &w.ctx()).unwrap();
        assert_eq!(
            w.control.reason(),
            Some(StopReason::Reset(ResetCause::Backend))
        );
    }

    #[test]
    fn mmio_goes_to_the_mmio_bus() {
        let w = World::new();
        let mut vcpu = FakeVcpu::new(vec![
            Step::MmioRead(0xd000_0000, 4),
            Step::MmioWrite(0xd000_0000, vec![1, 2]),
            Step::PowerOff,
        ]);
        run(&mut vcpu, &w.ctx()).unwrap();
        assert_eq!(vcpu.reads(), [vec![0xff; 4]]);
        assert_eq!(w.stats.snapshot().unclaimed, 2);
    }

    #[test]
    fn failures_stop_the_vm_with_the_vcpu_named() {
        for (step, want) in [
            (
                Step::FailEntry(0x80),
                "vCPU 0 could not enter the guest (backend code 0x80)",
            ),
            (
                Step::Unhandled(99),
                "vCPU 0 stopped on an exit the fake backend does not translate (code 99)",
            ),
        ] {
            let w = World::new();
            let mut vcpu = FakeVcpu::new(vec![step]);
            let e = run(&mut vcpu, &w.ctx()).unwrap_err();
            assert_eq!(e.to_string(), want);
            assert_eq!(w.control.reason(), Some(StopReason::VcpuFailed(0)));
        }
        let w = World::new();
        let mut vcpu = FakeVcpu::new(vec![]);
        assert!(
            run(&mut vcpu, &w.ctx()).is_err(),
            "backend errors propagate"
        );
    }

    #[test]
    fn a_stopping_vm_is_not_entered() {
        let w = World::new();
        w.control.request_stop(StopReason::Quit);
        let mut vcpu = FakeVcpu::new(vec![Step::Out(0x3f8, b"x".to_vec())]);
        run(&mut vcpu, &w.ctx()).unwrap();
        assert!(w.out.0.lock().unwrap().is_empty());
    }
}
