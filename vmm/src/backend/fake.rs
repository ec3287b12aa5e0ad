//! A scripted backend for tests: each vCPU plays a list of exits, and the
//! VM records what the VMM asked of it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vm_memory::GuestMemoryMmap;

use super::{
    BackendError, BackendKind, CpuidEntry, Hypervisor, InterruptLine, Regs, SpecialRegs, Vcpu, Vm,
    VmExit,
};

/// One scripted exit.
#[derive(Clone, Debug)]
pub enum Step {
    /// `in` of that many bytes.
    In(u16, usize),
    /// `out` of these bytes, one access.
    Out(u16, Vec<u8>),
    /// String `ins`: (port, access size, count).
    Ins(u16, usize, usize),
    /// String `outs`: (port, access size, the accesses' bytes).
    Outs(u16, usize, Vec<u8>),
    MmioRead(u64, usize),
    MmioWrite(u64, Vec<u8>),
    Hlt,
    Shutdown,
    Reset,
    PowerOff,
    Interrupted,
    FailEntry(u64),
    Unhandled(u64),
    /// Stays here: like a parked AP, every run waits a millisecond and
    /// returns `Interrupted`, until the VM stops.
    Park,
}

/// What the fake saw, shared with the test.
#[derive(Debug, Default)]
pub struct Record {
    pub mapped: Vec<Arc<GuestMemoryMmap>>,
    pub vcpus: Vec<u8>,
    pub cpuid: Vec<(u8, Vec<CpuidEntry>)>,
    pub boot_state: Vec<(u8, Regs, SpecialRegs)>,
    pub lines: Vec<u32>,
}

/// A hypervisor whose vCPUs play `scripts[id]`.
#[derive(Clone, Default)]
pub struct FakeHypervisor {
    pub scripts: Arc<Mutex<Vec<Vec<Step>>>>,
    pub record: Arc<Mutex<Record>>,
    pub supported: Vec<CpuidEntry>,
}

impl FakeHypervisor {
    pub fn new(scripts: Vec<Vec<Step>>) -> Self {
        FakeHypervisor {
            scripts: Arc::new(Mutex::new(scripts)),
            record: Arc::default(),
            supported: vec![CpuidEntry {
                function: 1,
                ..Default::default()
            }],
        }
    }
}

impl Hypervisor for FakeHypervisor {
    fn kind(&self) -> BackendKind {
        BackendKind::Kvm
    }
    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>, BackendError> {
        Ok(self.supported.clone())
    }
    fn create_vm(&self) -> Result<Box<dyn Vm>, BackendError> {
        Ok(Box::new(FakeVm(self.clone())))
    }
}

struct FakeVm(FakeHypervisor);

/// Counts triggers.
#[derive(Default)]
pub struct FakeLine(pub AtomicU64);

impl InterruptLine for FakeLine {
    fn trigger(&self) -> Result<(), BackendError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl Vm for FakeVm {
    fn map_memory(&mut self, memory: Arc<GuestMemoryMmap>) -> Result<(), BackendError> {
        self.0.record.lock().unwrap().mapped.push(memory);
        Ok(())
    }
    fn interrupt_line(&self, gsi: u32) -> Result<Arc<dyn InterruptLine>, BackendError> {
        self.0.record.lock().unwrap().lines.push(gsi);
        Ok(Arc::new(FakeLine::default()))
    }
    fn create_vcpu(&self, id: u8) -> Result<Box<dyn Vcpu>, BackendError> {
        self.0.record.lock().unwrap().vcpus.push(id);
        let script = self
            .0
            .scripts
            .lock()
            .unwrap()
            .get(usize::from(id))
            .cloned()
            .unwrap_or_default();
        let mut v = FakeVcpu::new(script);
        v.id = id;
        v.record = Some(self.0.record.clone());
        Ok(Box::new(v))
    }
}

/// A vCPU playing a script. Values the VMM put in read buffers are kept.
pub struct FakeVcpu {
    id: u8,
    steps: VecDeque<Step>,
    buf: Vec<u8>,
    pending_read: bool,
    reads: Vec<Vec<u8>>,
    record: Option<Arc<Mutex<Record>>>,
}

impl FakeVcpu {
    pub fn new(steps: Vec<Step>) -> Self {
        FakeVcpu {
            id: 0,
            steps: steps.into(),
            buf: Vec::new(),
            pending_read: false,
            reads: Vec::new(),
            record: None,
        }
    }

    /// What the VMM answered to each read, in order.
    pub fn reads(&self) -> &[Vec<u8>] {
        &self.reads
    }
}

impl FakeVcpu {
    fn ins(&mut self, port: u16, size: usize, count: usize) -> VmExit<'_> {
        self.buf = vec![0; size * count];
        self.pending_read = true;
        VmExit::IoIn {
            port,
            size,
            data: &mut self.buf,
        }
    }

    fn outs(&mut self, port: u16, size: usize, data: Vec<u8>) -> VmExit<'_> {
        self.buf = data;
        VmExit::IoOut {
            port,
            size,
            data: &self.buf,
        }
    }
}

impl Vcpu for FakeVcpu {
    fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> Result<(), BackendError> {
        if let Some(r) = &self.record {
            r.lock().unwrap().cpuid.push((self.id, entries.to_vec()));
        }
        Ok(())
    }

    fn set_boot_state(&mut self, regs: &Regs, sregs: &SpecialRegs) -> Result<(), BackendError> {
        if let Some(r) = &self.record {
            r.lock().unwrap().boot_state.push((self.id, *regs, *sregs));
        }
        Ok(())
    }

    fn run(&mut self) -> Result<VmExit<'_>, BackendError> {
        if std::mem::take(&mut self.pending_read) {
            self.reads.push(self.buf.clone());
        }
        if matches!(self.steps.front(), Some(Step::Park)) {
            std::thread::sleep(std::time::Duration::from_millis(1));
            return Ok(VmExit::Interrupted);
        }
        let Some(step) = self.steps.pop_front() else {
            return Err(BackendError::NotImplemented("fake: script exhausted"));
        };
        Ok(match step {
            Step::In(port, size) => self.ins(port, size, 1),
            Step::Ins(port, size, count) => self.ins(port, size, count),
            Step::Out(port, data) => {
                let size = data.len();
                self.outs(port, size, data)
            }
            Step::Outs(port, size, data) => self.outs(port, size, data),
            Step::MmioRead(gpa, size) => {
                self.buf = vec![0; size];
                self.pending_read = true;
                VmExit::MmioRead {
                    gpa,
                    data: &mut self.buf,
                }
            }
            Step::MmioWrite(gpa, data) => {
                self.buf = data;
                VmExit::MmioWrite {
                    gpa,
                    data: &self.buf,
                }
            }
            Step::Hlt => VmExit::Hlt,
            Step::Shutdown => VmExit::Shutdown,
            Step::Reset => VmExit::Reset,
            Step::PowerOff => VmExit::PowerOff,
            Step::Interrupted => VmExit::Interrupted,
            Step::FailEntry(reason) => VmExit::FailEntry { reason },
            Step::Unhandled(reason) => VmExit::Unhandled {
                backend: "fake",
                reason,
            },
            Step::Park => VmExit::Interrupted,
        })
    }
}
