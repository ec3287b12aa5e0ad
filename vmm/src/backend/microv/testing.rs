//! Test doubles for the driver: a VM that records what it is asked, and a
//! vCPU whose run plays MicroV's side of the run page from a script.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use microv_abi::ioctl::MapMemoryArgs;
use microv_abi::run::{RunApic, RunExit, RunRegs};
use vm_memory::GuestMemoryMmap;

use super::device::{VcpuOps, VmOps};
use super::doorbell::Doorbell;
use super::page::RunPageMap;
use super::vcpu::MicrovVcpu;
use super::VmShared;

/// What the run page held when the VMM entered the guest.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The requests, which MicroV takes.
    pub requests: u64,
    pub regs: RunRegs,
    pub io_data: u64,
    pub apic: RunApic,
}

enum Step {
    Exit(RunExit, Option<Box<RunRegs>>),
    Fail(i32),
}

struct Script {
    steps: VecDeque<Step>,
    seen: Vec<Seen>,
    get_regs: Result<RunRegs, i32>,
}

/// MicroV behind one vCPU, playing a script.
#[derive(Clone)]
pub struct Microv {
    script: Arc<Mutex<Script>>,
    pub page: Arc<RunPageMap>,
}

impl Microv {
    pub fn new() -> Self {
        Microv {
            script: Arc::new(Mutex::new(Script {
                steps: VecDeque::new(),
                seen: Vec::new(),
                get_regs: Ok(RunRegs::zeroed()),
            })),
            page: Arc::new(RunPageMap::anonymous().unwrap()),
        }
    }

    fn push(&self, s: Step) {
        self.script.lock().unwrap().steps.push_back(s);
    }

    /// The next run ends with `e`.
    pub fn exit(&self, e: RunExit) {
        self.push(Step::Exit(e, None));
    }

    /// The next run ends with `e`, the registers then being `r`.
    pub fn exit_with_regs(&self, e: RunExit, r: RunRegs) {
        self.push(Step::Exit(e, Some(Box::new(r))));
    }

    /// The next run fails with `errno`.
    pub fn fail(&self, errno: i32) {
        self.push(Step::Fail(errno));
    }

    pub fn regs_on_get(&self, r: RunRegs) {
        self.script.lock().unwrap().get_regs = Ok(r);
    }

    pub fn fail_get_regs(&self, errno: i32) {
        self.script.lock().unwrap().get_regs = Err(errno);
    }

    /// The page at each run so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.script.lock().unwrap().seen.clone()
    }
}

impl VcpuOps for Microv {
    fn run(&self) -> io::Result<()> {
        let mut s = self.script.lock().unwrap();
        let p = &self.page;
        s.seen.push(Seen {
            requests: p.take_requests(),
            regs: p.regs(),
            io_data: p.exit().io.data,
            apic: p.apic(),
        });
        match s.steps.pop_front() {
            Some(Step::Exit(e, regs)) => {
                if let Some(r) = regs {
                    p.set_regs(&r);
                }
                p.set_exit(&e);
                Ok(())
            }
            Some(Step::Fail(errno)) => Err(io::Error::from_raw_os_error(errno)),
            None => Err(io::Error::other("script exhausted")),
        }
    }

    fn get_regs(&self) -> io::Result<()> {
        match self.script.lock().unwrap().get_regs {
            Ok(r) => {
                self.page.set_regs(&r);
                Ok(())
            }
            Err(errno) => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// A VM descriptor that records its calls.
#[derive(Default)]
pub struct FakeVm {
    pub mapped: Mutex<Vec<MapMemoryArgs>>,
    pub vcpus: Mutex<Vec<u32>>,
    /// Errno for every call, when set.
    pub fail: Option<i32>,
}

impl VmOps for Arc<FakeVm> {
    fn map_memory(&self, args: &MapMemoryArgs) -> io::Result<()> {
        if let Some(e) = self.fail {
            return Err(io::Error::from_raw_os_error(e));
        }
        self.mapped.lock().unwrap().push(*args);
        Ok(())
    }

    fn create_vcpu(&self, apic_id: u32) -> io::Result<(Box<dyn VcpuOps>, RunPageMap)> {
        if let Some(e) = self.fail {
            return Err(io::Error::from_raw_os_error(e));
        }
        self.vcpus.lock().unwrap().push(apic_id);
        Ok((Box::new(Microv::new()), RunPageMap::anonymous()?))
    }
}

/// A vCPU over `m`, in a VM with `memory`.
pub fn vcpu_with(m: &Microv, memory: Vec<Arc<GuestMemoryMmap>>) -> MicrovVcpu {
    let vm = Arc::new(VmShared {
        ops: Box::new(Arc::new(FakeVm::default())),
        memory: Mutex::new(memory),
    });
    let doorbell = Arc::new(Doorbell::new(Arc::clone(&m.page)));
    MicrovVcpu::new(Box::new(m.clone()), Arc::clone(&m.page), doorbell, vm)
}
