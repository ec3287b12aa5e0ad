//! Interrupts on MicroV: device lines pulse the VMM's IOAPIC
//! ([`crate::devices::ioapic`]), which names a vector and a destination; the
//! vector is raised in the destination vCPU's run page
//! ([`super::doorbell`]). MicroV's x2APIC emulation takes it from there.

use std::sync::{Arc, Mutex};

use super::doorbell::Doorbell;
use crate::backend::{BackendError, InterruptLine};
use crate::devices::ioapic::{Delivery, Destination, Ioapic};

/// The vCPUs interrupts can reach, by APIC ID.
#[derive(Debug, Default)]
pub struct Targets {
    vcpus: Mutex<Vec<(u8, Arc<Doorbell>)>>,
}

impl Targets {
    pub fn add(&self, apic_id: u8, doorbell: Arc<Doorbell>) {
        self.vcpus
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((apic_id, doorbell));
    }

    /// The doorbell of the vCPU with `apic_id`.
    #[cfg(test)]
    pub fn doorbell(&self, apic_id: u8) -> Option<Arc<Doorbell>> {
        let vcpus = self.vcpus.lock().unwrap();
        vcpus
            .iter()
            .find(|(a, _)| *a == apic_id)
            .map(|(_, d)| Arc::clone(d))
    }

    /// Raises `d` on its vCPU: a physical destination that names a vCPU
    /// gets it; anything else (logical destinations, broadcast, an unknown
    /// APIC ID) goes to the bootstrap vCPU, APIC ID 0. Returns false when
    /// there is no vCPU yet.
    pub fn deliver(&self, d: Delivery) -> bool {
        let vcpus = self.vcpus.lock().unwrap_or_else(|e| e.into_inner());
        let named = match d.destination {
            Destination::Physical(id) => vcpus.iter().find(|(a, _)| *a == id),
            Destination::Logical(_) => None,
        };
        let target = named.or_else(|| vcpus.iter().find(|(a, _)| *a == 0));
        match target {
            Some((_, doorbell)) => {
                doorbell.raise(d.vector);
                true
            }
            None => false,
        }
    }
}

/// A GSI of the VMM's IOAPIC.
pub struct IoapicLine {
    pub ioapic: Arc<Mutex<Ioapic>>,
    pub targets: Arc<Targets>,
    pub gsi: u32,
}

impl InterruptLine for IoapicLine {
    fn trigger(&self) -> Result<(), BackendError> {
        // The IOAPIC's lock is released before the vCPU is rung.
        let delivery = self
            .ioapic
            .lock()
            .map_err(|_| BackendError::os("IOAPIC", std::io::Error::other("lock poisoned")))?
            .trigger(self.gsi);
        if let Some(d) = delivery {
            self.targets.deliver(d);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::microv::page::RunPageMap;
    use crate::bus::BusDevice;

    fn vcpu() -> (Arc<RunPageMap>, Arc<Doorbell>) {
        let page = Arc::new(RunPageMap::anonymous().unwrap());
        (Arc::clone(&page), Arc::new(Doorbell::new(page)))
    }

    #[test]
    fn interrupts_reach_the_named_vcpu_or_the_bsp() {
        let t = Targets::default();
        let d = |vector, destination| Delivery {
            vector,
            destination,
        };
        assert!(
            !t.deliver(d(0x20, Destination::Physical(0))),
            "no vCPUs yet"
        );
        let (p0, b0) = vcpu();
        let (p1, b1) = vcpu();
        t.add(0, b0);
        t.add(1, b1);
        assert!(t.deliver(d(0x21, Destination::Physical(1))));
        assert!(t.deliver(d(0x22, Destination::Physical(7))));
        assert!(t.deliver(d(0x23, Destination::Logical(2))));
        assert_eq!(p1.take_raised(), [1 << 0x21, 0, 0, 0]);
        assert_eq!(p0.take_raised(), [(1 << 0x22) | (1 << 0x23), 0, 0, 0]);
    }

    #[test]
    fn a_line_pulses_the_ioapic() {
        let ioapic = Arc::new(Mutex::new(Ioapic::new()));
        let targets = Arc::new(Targets::default());
        let (page, bell) = vcpu();
        targets.add(0, bell);
        let line = IoapicLine {
            ioapic: Arc::clone(&ioapic),
            targets,
            gsi: 4,
        };
        line.trigger().unwrap();
        assert!(!page.any_raised(), "masked at reset");
        {
            let mut io = ioapic.lock().unwrap();
            io.write(0, &[0x18]).unwrap(); // pin 4, low half
            io.write(0x10, &0x34u32.to_le_bytes()).unwrap();
        }
        line.trigger().unwrap();
        assert_eq!(page.take_raised(), [1 << 0x34, 0, 0, 0]);
        assert_eq!(ioapic.lock().unwrap().dropped(), 1);
    }
}
