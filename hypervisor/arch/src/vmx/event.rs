//! Events into and out of a guest: the interruption-information format
//! shared by VM-entry injection, VM-exit interruption information and
//! IDT-vectoring information (SDM Vol. 3C 25.8.3, 25.9.2, 25.9.3), the
//! checks VM entry makes on an injected event (27.2.1.3), and the guest's
//! interruptibility and activity states (25.4.2).

/// Bits of an interruption-information word.
pub mod info {
    /// Bits 7:0: the vector.
    pub const VECTOR_MASK: u32 = 0xff;
    /// Bits 10:8: the [`EventType`](super::EventType).
    pub const TYPE_SHIFT: u32 = 8;
    /// An error code is delivered (its value is in a field of its own).
    pub const DELIVER_ERROR_CODE: u32 = 1 << 11;
    /// Exit information only: the exit came from an IRET that unblocked
    /// NMIs, which the hypervisor must block again before resuming.
    pub const NMI_UNBLOCKED_BY_IRET: u32 = 1 << 12;
    /// The word describes an event.
    pub const VALID: u32 = 1 << 31;
}

/// Exception vectors.
pub mod vector {
    pub const DE: u8 = 0;
    pub const DB: u8 = 1;
    pub const NMI: u8 = 2;
    pub const BP: u8 = 3;
    pub const OF: u8 = 4;
    pub const UD: u8 = 6;
    pub const NM: u8 = 7;
    pub const DF: u8 = 8;
    pub const TS: u8 = 10;
    pub const NP: u8 = 11;
    pub const SS: u8 = 12;
    pub const GP: u8 = 13;
    pub const PF: u8 = 14;
    pub const MF: u8 = 16;
    pub const AC: u8 = 17;
    pub const MC: u8 = 18;
    pub const CP: u8 = 21;

    /// True for the exceptions that push an error code in protected and
    /// long mode (SDM Vol. 3A 6.13; VM entry requires the injection to
    /// agree, 27.2.1.3).
    pub const fn has_error_code(vector: u8) -> bool {
        matches!(vector, DF | TS | NP | SS | GP | PF | AC | CP)
    }
}

/// The interruption type, bits 10:8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EventType {
    ExternalInterrupt = 0,
    Nmi = 2,
    HardwareException = 3,
    /// INT n.
    SoftwareInterrupt = 4,
    /// INT1 (ICEBP).
    PrivilegedSoftwareException = 5,
    /// INT3 or INTO.
    SoftwareException = 6,
    /// Injection only: the monitor-trap-flag pending event.
    Other = 7,
}

/// An event to inject, or one an exit reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventType,
    pub vector: u8,
    /// An error code goes with it (written or read separately).
    pub error_code: bool,
}

/// Why an event cannot be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventError {
    /// Not an exception vector (32 and above).
    NotAnException(u8),
    /// Vector 2 is injected as an NMI, not as an exception.
    NmiVector,
}

impl Event {
    /// An external interrupt (any vector; those below 32 are allowed too).
    pub const fn external_interrupt(vector: u8) -> Event {
        Event {
            kind: EventType::ExternalInterrupt,
            vector,
            error_code: false,
        }
    }

    /// A non-maskable interrupt.
    pub const fn nmi() -> Event {
        Event {
            kind: EventType::Nmi,
            vector: vector::NMI,
            error_code: false,
        }
    }

    /// A hardware exception, with an error code exactly where the CPU
    /// would push one: for the vectors that have one in protected mode
    /// (`protected_mode`: the guest's CR0.PE), never in real mode, where VM
    /// entry refuses one.
    pub const fn exception(vector: u8, protected_mode: bool) -> Result<Event, EventError> {
        if vector >= 32 {
            Err(EventError::NotAnException(vector))
        } else if vector == vector::NMI {
            Err(EventError::NmiVector)
        } else {
            Ok(Event {
                kind: EventType::HardwareException,
                vector,
                error_code: protected_mode && vector::has_error_code(vector),
            })
        }
    }

    /// The VM-entry interruption-information word: valid, bits 30:12 clear.
    pub const fn entry_info(self) -> u32 {
        let code = if self.error_code {
            info::DELIVER_ERROR_CODE
        } else {
            0
        };
        info::VALID | code | (self.kind as u32) << info::TYPE_SHIFT | self.vector as u32
    }

    /// The event a VM-exit interruption-information or IDT-vectoring word
    /// describes; `None` if it is not valid or has the reserved type 1.
    /// Re-injecting an IDT-vectoring event is `decode` then
    /// [`entry_info`](Self::entry_info).
    pub const fn decode(word: u32) -> Option<Event> {
        if word & info::VALID == 0 {
            return None;
        }
        let kind = match (word >> info::TYPE_SHIFT) & 7 {
            0 => EventType::ExternalInterrupt,
            2 => EventType::Nmi,
            3 => EventType::HardwareException,
            4 => EventType::SoftwareInterrupt,
            5 => EventType::PrivilegedSoftwareException,
            6 => EventType::SoftwareException,
            7 => EventType::Other,
            _ => return None,
        };
        Some(Event {
            kind,
            vector: (word & info::VECTOR_MASK) as u8,
            error_code: word & info::DELIVER_ERROR_CODE != 0,
        })
    }
}

/// Bits of the guest interruptibility state (SDM Vol. 3C table 25-3).
pub mod interruptibility {
    /// The instruction after STI: interrupts are held off.
    pub const BLOCKING_BY_STI: u32 = 1 << 0;
    /// The instruction after MOV SS or POP SS: interrupts, NMIs and debug
    /// exceptions are held off.
    pub const BLOCKING_BY_MOV_SS: u32 = 1 << 1;
    pub const BLOCKING_BY_SMI: u32 = 1 << 2;
    /// Inside an NMI handler (until its IRET).
    pub const BLOCKING_BY_NMI: u32 = 1 << 3;
    pub const ENCLAVE_INTERRUPTION: u32 = 1 << 4;
}

/// Guest activity states (SDM Vol. 3C 25.4.2; IA32_VMX_MISC bits 8:6 say
/// which besides `ACTIVE` the CPU can enter).
pub mod activity {
    pub const ACTIVE: u32 = 0;
    pub const HLT: u32 = 1;
    pub const SHUTDOWN: u32 = 2;
    pub const WAIT_FOR_SIPI: u32 = 3;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injections_encode() {
        assert_eq!(Event::external_interrupt(0x30).entry_info(), 0x8000_0030);
        assert_eq!(Event::nmi().entry_info(), 0x8000_0202);
        let gp = Event::exception(vector::GP, true).unwrap();
        assert_eq!(gp.entry_info(), 0x8000_0b0d);
        assert_eq!(
            Event::exception(vector::UD, true).unwrap().entry_info(),
            0x8000_0306
        );
        assert_eq!(
            Event::exception(vector::GP, false).unwrap().entry_info(),
            0x8000_030d,
            "no error code in real mode"
        );
        for v in [
            vector::DF,
            vector::TS,
            vector::NP,
            vector::SS,
            vector::PF,
            vector::AC,
            vector::CP,
        ] {
            assert!(Event::exception(v, true).unwrap().error_code, "{v}");
        }
        for v in [
            vector::DE,
            vector::DB,
            vector::BP,
            vector::OF,
            vector::NM,
            vector::MF,
            vector::MC,
            31,
        ] {
            assert!(!Event::exception(v, true).unwrap().error_code, "{v}");
        }
        assert_eq!(
            Event::exception(32, true),
            Err(EventError::NotAnException(32))
        );
        assert_eq!(
            Event::exception(vector::NMI, true),
            Err(EventError::NmiVector)
        );
    }

    #[test]
    fn exit_and_vectoring_words_decode() {
        // A #PF with error code that unblocked NMIs (bit 12) is re-injected
        // without bit 12.
        let word = 0x8000_1b0e;
        let pf = Event::decode(word).unwrap();
        assert_eq!(
            pf,
            Event {
                kind: EventType::HardwareException,
                vector: vector::PF,
                error_code: true,
            }
        );
        assert_ne!(word & info::NMI_UNBLOCKED_BY_IRET, 0);
        assert_eq!(pf.entry_info(), 0x8000_0b0e);
        let kinds = [
            (0, EventType::ExternalInterrupt),
            (2, EventType::Nmi),
            (4, EventType::SoftwareInterrupt),
            (5, EventType::PrivilegedSoftwareException),
            (6, EventType::SoftwareException),
            (7, EventType::Other),
        ];
        for (t, kind) in kinds {
            let e = Event::decode(info::VALID | t << 8 | 0x21).unwrap();
            assert_eq!((e.kind, e.vector, e.error_code), (kind, 0x21, false));
            assert_eq!(e.entry_info(), info::VALID | t << 8 | 0x21);
        }
        assert_eq!(Event::decode(0x0000_0b0e), None, "not valid");
        assert_eq!(Event::decode(0x8000_0100), None, "reserved type 1");
    }
}
