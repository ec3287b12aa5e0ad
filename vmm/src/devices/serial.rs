//! COM1: `vm-superio`'s 16550A model at 0x3f8, IRQ 4, interrupt-driven in
//! both directions. Output goes to the console writer; input arrives from
//! the console thread through [`SerialDevice::enqueue_input`].

use std::io::Write;
use std::sync::Arc;

use vm_superio::serial::{Error as SerialError, NoEvents};
use vm_superio::{Serial, Trigger};

use super::DeviceError;
use crate::backend::{BackendError, InterruptLine};
use crate::bus::BusDevice;

pub const COM1_PORT: u16 = 0x3f8;
pub const COM1_IRQ: u32 = 4;
pub const PORT_COUNT: u64 = 8;

/// Where the guest's console output goes.
pub type SerialOut = Box<dyn Write + Send>;

/// `vm-superio`'s interrupt hook, raised through the backend.
pub struct IrqTrigger(Arc<dyn InterruptLine>);

impl Trigger for IrqTrigger {
    type E = BackendError;
    fn trigger(&self) -> Result<(), BackendError> {
        self.0.trigger()
    }
}

/// The serial port on the bus.
pub struct SerialDevice {
    uart: Serial<IrqTrigger, NoEvents, SerialOut>,
    /// Bytes the console writer refused (closed terminal, full pipe): the
    /// guest cannot be blamed, so they are counted, not fatal.
    lost_output: u64,
}

impl SerialDevice {
    pub fn new(line: Arc<dyn InterruptLine>, out: SerialOut) -> Self {
        SerialDevice {
            uart: Serial::new(IrqTrigger(line), out),
            lost_output: 0,
        }
    }

    /// Room left in the receive FIFO.
    pub fn input_room(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// Queues console input for the guest and raises the interrupt; takes
    /// at most [`Self::input_room`] bytes and returns how many it took.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> Result<usize, DeviceError> {
        let n = bytes.len().min(self.input_room());
        let Some(part) = bytes.get(..n).filter(|p| !p.is_empty()) else {
            return Ok(0);
        };
        self.uart.enqueue_raw_bytes(part).map_err(|e| match e {
            SerialError::Trigger(t) => DeviceError::Interrupt(t),
            // Only a full FIFO fails otherwise, and we sized `part`.
            _ => DeviceError::Interrupt(BackendError::Unsupported {
                backend: "serial",
                what: "room in its FIFO",
            }),
        })
    }

    pub fn lost_output(&self) -> u64 {
        self.lost_output
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // The UART's registers are bytes; wider reads see the register
        // then floating bus.
        data.fill(0xff);
        if let (Some(first), Ok(reg)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.uart.read(reg);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        let (Some(&value), Ok(reg)) = (data.first(), u8::try_from(offset)) else {
            return Ok(());
        };
        match self.uart.write(reg, value) {
            Ok(()) => Ok(()),
            Err(SerialError::IOError(_)) => {
                self.lost_output += 1;
                Ok(())
            }
            Err(SerialError::Trigger(e)) => Err(DeviceError::Interrupt(e)),
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::io;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    /// Counts the interrupts raised.
    #[derive(Default)]
    pub struct CountingLine(pub AtomicU64);
    impl InterruptLine for CountingLine {
        fn trigger(&self) -> Result<(), BackendError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    /// A writer tests can read back.
    #[derive(Clone, Default)]
    pub struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);
    impl Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LSR: u64 = 5;

    #[test]
    fn output_reaches_the_console() {
        let line = Arc::new(CountingLine::default());
        let out = SharedBuf::default();
        let mut s = SerialDevice::new(line.clone(), Box::new(out.clone()));
        for b in b"hi\n" {
            s.write(0, &[*b]).unwrap();
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
        assert_eq!(
            line.0.load(Ordering::SeqCst),
            0,
            "THRE interrupt not enabled"
        );
        s.write(IER, &[0x2]).unwrap();
        s.write(0, b"!").unwrap();
        assert!(line.0.load(Ordering::SeqCst) >= 1);
    }

    #[test]
    fn input_is_interrupt_driven_and_bounded() {
        let line = Arc::new(CountingLine::default());
        let mut s = SerialDevice::new(line.clone(), Box::new(SharedBuf::default()));
        s.write(IER, &[0x1]).unwrap(); // received-data interrupt
        let before = line.0.load(Ordering::SeqCst);
        assert_eq!(s.enqueue_input(b"ab").unwrap(), 2);
        assert!(line.0.load(Ordering::SeqCst) > before);
        let mut d = [0u8; 1];
        s.read(LSR, &mut d);
        assert_eq!(d[0] & 1, 1, "data ready");
        s.read(IIR, &mut d);
        assert_eq!(d[0] & 0xf, 0x4, "received data available");
        s.read(0, &mut d);
        assert_eq!(d, *b"a");
        s.read(0, &mut d);
        assert_eq!(d, *b"b");
        s.read(LSR, &mut d);
        assert_eq!(d[0] & 1, 0);
        // The FIFO holds 64 bytes; the rest waits with the caller.
        let room = s.input_room();
        assert_eq!(s.enqueue_input(&[b'x'; 100]).unwrap(), room);
        assert_eq!(s.input_room(), 0);
        assert_eq!(s.enqueue_input(b"y").unwrap(), 0);
        assert_eq!(s.enqueue_input(b"").unwrap(), 0);
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let mut s = SerialDevice::new(Arc::new(CountingLine::default()), Box::new(Broken));
        let mut wide = [0u8; 4];
        s.read(LSR, &mut wide);
        assert_eq!(&wide[1..], [0xff; 3]);
        s.read(0x1_0000, &mut wide);
        s.write(0x1_0000, b"x").unwrap();
        s.write(0, b"").unwrap();
        s.write(0, b"x").unwrap();
        assert_eq!(
            s.lost_output(),
            1,
            "a broken console loses bytes, not the VM"
        );
    }
}
