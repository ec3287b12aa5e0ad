//! Events between the VMCB's formats, which the extension reads and writes
//! on Intel too (EXITINTINFO after an exit, EVENTINJ before an entry), and
//! VMX's interruption information (SDM Vol. 3C 25.8.3, 25.9.3).
//!
//! SVM has four event types (interrupt, NMI, exception, software
//! interrupt); VMX splits exceptions into hardware exceptions, INT3/INTO
//! (software exceptions) and INT1 (privileged software exception), and
//! needs the length of the instruction for the software kinds. An event an
//! exit interrupted is therefore kept as VMX reported it ([`Vectoring`],
//! by the microkernel, out of the extension's reach): when the extension
//! re-injects it unchanged, as its policy does, VM entry gets the CPU's
//! own words back. A fresh SVM event is translated: type 3 becomes a
//! hardware exception (what AMD delivers for it), type 4 a software
//! interrupt whose length is next RIP − RIP, as AMD takes its return
//! address from next RIP.

use microv_arch::svm::event as svm;
use microv_arch::vmx::event::{Event, EventType};

/// Longest x86 instruction: the most VM entry accepts as an injected
/// software event's length.
const MAX_INSTRUCTION_LENGTH: u64 = 15;

/// An event whose delivery a VM exit interrupted: the IDT-vectoring
/// information and error code fields, and the VM-exit instruction length
/// (the instruction's, for software interrupts and exceptions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vectoring {
    pub info: u32,
    pub error_code: u32,
    pub instruction_length: u32,
}

impl Vectoring {
    /// The event in the VMCB's EXITINTINFO format; `None` if the word is
    /// not valid or not an event IDT vectoring reports.
    pub fn to_svm(&self) -> Option<u64> {
        let event = Event::decode(self.info)?;
        svm_word(event, self.error_code)
    }
}

/// `event` (with `error_code`, if it has one) in SVM's EVENTINJ /
/// EXITINTINFO format; `None` for VMX's "other event", which SVM lacks.
pub fn svm_word(event: Event, error_code: u32) -> Option<u64> {
    let kind = match event.kind {
        EventType::ExternalInterrupt => svm::TYPE_INTERRUPT,
        EventType::Nmi => svm::TYPE_NMI,
        // AMD reports INT3, INTO and INT1 as exceptions.
        EventType::HardwareException
        | EventType::SoftwareException
        | EventType::PrivilegedSoftwareException => svm::TYPE_EXCEPTION,
        EventType::SoftwareInterrupt => svm::TYPE_SOFTWARE_INTERRUPT,
        EventType::Other => return None,
    };
    let code = if event.error_code {
        svm::ERROR_CODE_VALID | u64::from(error_code) << 32
    } else {
        0
    };
    Some(svm::VALID | kind | code | u64::from(event.vector))
}

/// The three VM-entry event fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    /// VM-entry interruption information.
    pub info: u32,
    /// VM-entry exception error code (used if `info` says so).
    pub error_code: u32,
    /// VM-entry instruction length (used for software events).
    pub instruction_length: u32,
}

/// Why an EVENTINJ word cannot become a VM-entry injection; each carries
/// the word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectError {
    /// A type SVM reserves (1, 5–7), or reserved bits 30:12 set.
    Type(u64),
    /// An exception vector of 32 or more, or 2 (NMI) as an exception.
    Vector(u64),
    /// An error code where protected mode has none, or none where it
    /// has one; or an error code with an interrupt or NMI.
    ErrorCode(u64),
    /// A software interrupt whose next RIP is not 1–15 bytes past RIP,
    /// on a CPU that cannot inject one of length 0.
    InstructionLength(u64),
}

/// What the vCPU is doing when the event is injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InjectContext {
    pub rip: u64,
    pub next_rip: u64,
    /// CR0.PE: real mode delivers no error codes.
    pub protected_mode: bool,
    /// IA32_VMX_MISC bit 30: software events of length 0 are accepted.
    pub zero_length: bool,
}

/// Bits 30:12 of EVENTINJ, reserved.
const SVM_RESERVED: u64 = 0x7fff_f000;

/// The VM-entry injection for the extension's EVENTINJ word `word`: `None`
/// if no event is to be injected. `redeliver` is the event the last exit
/// interrupted: if `word` asks for exactly that event, VM entry gets it
/// as the CPU reported it.
pub fn injection(
    word: u64,
    cx: &InjectContext,
    redeliver: Option<&Vectoring>,
) -> Result<Option<Injection>, InjectError> {
    if word & svm::VALID == 0 {
        return Ok(None);
    }
    if let Some(v) = redeliver.filter(|v| v.to_svm() == Some(word)) {
        if let Some(event) = Event::decode(v.info) {
            return Ok(Some(Injection {
                info: event.entry_info(),
                error_code: v.error_code,
                instruction_length: v.instruction_length,
            }));
        }
    }
    if word & SVM_RESERVED != 0 {
        return Err(InjectError::Type(word));
    }
    let vector = word as u8;
    let has_code = word & svm::ERROR_CODE_VALID != 0;
    let error_code = (word >> 32) as u32;
    let (event, length) = match word & svm::TYPE_MASK {
        svm::TYPE_INTERRUPT | svm::TYPE_NMI if has_code => {
            return Err(InjectError::ErrorCode(word))
        }
        svm::TYPE_INTERRUPT => (Event::external_interrupt(vector), 0),
        svm::TYPE_NMI => (Event::nmi(), 0),
        svm::TYPE_EXCEPTION => {
            let event = Event::exception(vector, cx.protected_mode)
                .map_err(|_| InjectError::Vector(word))?;
            // Real mode pushes no error code: one asked for is dropped.
            if cx.protected_mode && event.error_code != has_code {
                return Err(InjectError::ErrorCode(word));
            }
            (event, 0)
        }
        svm::TYPE_SOFTWARE_INTERRUPT if has_code => return Err(InjectError::ErrorCode(word)),
        svm::TYPE_SOFTWARE_INTERRUPT => {
            let event = Event {
                kind: EventType::SoftwareInterrupt,
                vector,
                error_code: false,
            };
            (event, software_length(word, cx)?)
        }
        _ => return Err(InjectError::Type(word)),
    };
    Ok(Some(Injection {
        info: event.entry_info(),
        error_code: if event.error_code { error_code } else { 0 },
        instruction_length: length,
    }))
}

/// The length VM entry needs for a software interrupt: next RIP − RIP,
/// else 0 where the CPU accepts it.
fn software_length(word: u64, cx: &InjectContext) -> Result<u32, InjectError> {
    let length = cx.next_rip.wrapping_sub(cx.rip);
    if (1..=MAX_INSTRUCTION_LENGTH).contains(&length) {
        Ok(length as u32)
    } else if cx.zero_length {
        Ok(0)
    } else {
        Err(InjectError::InstructionLength(word))
    }
}

/// Whether an interruption-information word is valid and of `kind`.
pub fn is_kind(word: u32, kind: EventType) -> bool {
    Event::decode(word).is_some_and(|e| e.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use microv_arch::svm::vector as svm_vector;
    use microv_arch::vmx::event::vector;

    const CX: InjectContext = InjectContext {
        rip: 0x1000,
        next_rip: 0,
        protected_mode: true,
        zero_length: false,
    };

    fn inject(word: u64) -> Result<Option<Injection>, InjectError> {
        injection(word, &CX, None)
    }

    fn plain(info: u32, error_code: u32) -> Option<Injection> {
        Some(Injection {
            info,
            error_code,
            instruction_length: 0,
        })
    }

    #[test]
    fn the_extensions_events_translate() {
        assert_eq!(inject(0), Ok(None));
        // #UD and #GP(0), as the root's policy injects them.
        assert_eq!(
            inject(svm::exception(svm_vector::UD)),
            Ok(plain(0x8000_0306, 0))
        );
        assert_eq!(
            inject(svm::exception_with_code(svm_vector::GP, 0x18)),
            Ok(plain(0x8000_0b0d, 0x18))
        );
        // An NMI (whatever vector SVM carries) and an interrupt.
        assert_eq!(inject(svm::nmi()), Ok(plain(0x8000_0202, 0)));
        assert_eq!(
            inject(svm::VALID | svm::TYPE_NMI),
            Ok(plain(0x8000_0202, 0))
        );
        assert_eq!(inject(svm::interrupt(0x31)), Ok(plain(0x8000_0031, 0)));
        // #BP as AMD delivers it: a hardware exception, no length.
        assert_eq!(inject(svm::exception(3)), Ok(plain(0x8000_0303, 0)));
    }

    #[test]
    fn error_codes_follow_the_mode() {
        // Real mode: #GP's error code is dropped, as the CPU pushes none.
        let real = InjectContext {
            protected_mode: false,
            ..CX
        };
        let gp = svm::exception_with_code(svm_vector::GP, 7);
        assert_eq!(injection(gp, &real, None), Ok(plain(0x8000_030d, 0)));
        // Protected mode: a code must come exactly where the CPU pushes one.
        let ud_with_code = svm::exception_with_code(svm_vector::UD, 0);
        assert_eq!(
            inject(ud_with_code),
            Err(InjectError::ErrorCode(ud_with_code))
        );
        let pf = svm::exception(vector::PF);
        assert_eq!(inject(pf), Err(InjectError::ErrorCode(pf)));
        let nmi = svm::nmi() | svm::ERROR_CODE_VALID;
        assert_eq!(inject(nmi), Err(InjectError::ErrorCode(nmi)));
        let intn = svm::VALID | svm::TYPE_SOFTWARE_INTERRUPT | svm::ERROR_CODE_VALID | 0x80;
        assert_eq!(inject(intn), Err(InjectError::ErrorCode(intn)));
    }

    #[test]
    fn bad_words_are_refused() {
        for t in [1, 5, 6, 7] {
            let w = svm::VALID | t << 8;
            assert_eq!(inject(w), Err(InjectError::Type(w)));
        }
        let reserved = svm::exception(svm_vector::UD) | 1 << 20;
        assert_eq!(inject(reserved), Err(InjectError::Type(reserved)));
        let nmi_as_exception = svm::exception(2);
        assert_eq!(
            inject(nmi_as_exception),
            Err(InjectError::Vector(nmi_as_exception))
        );
        let high = svm::exception(32);
        assert_eq!(inject(high), Err(InjectError::Vector(high)));
    }

    #[test]
    fn software_interrupts_take_their_length_from_next_rip() {
        let int80 = svm::VALID | svm::TYPE_SOFTWARE_INTERRUPT | 0x80;
        let cx = InjectContext {
            next_rip: 0x1002,
            ..CX
        };
        assert_eq!(
            injection(int80, &cx, None),
            Ok(Some(Injection {
                info: 0x8000_0480,
                error_code: 0,
                instruction_length: 2,
            }))
        );
        // No usable next RIP: refused, unless the CPU takes length 0.
        assert_eq!(inject(int80), Err(InjectError::InstructionLength(int80)));
        let far = InjectContext {
            next_rip: 0x1010,
            ..CX
        };
        assert_eq!(
            injection(int80, &far, None),
            Err(InjectError::InstructionLength(int80))
        );
        let zero = InjectContext {
            zero_length: true,
            ..CX
        };
        assert_eq!(
            injection(int80, &zero, None).map(|i| i.map(|i| i.instruction_length)),
            Ok(Some(0))
        );
    }

    #[test]
    fn interrupted_events_go_back_exactly() {
        // INT3 (software exception, 1 byte) cut short by an EPT violation
        // on the IDT: SVM sees #BP; re-injected as INT3 with its length.
        let int3 = Vectoring {
            info: 0x8000_0603,
            error_code: 0,
            instruction_length: 1,
        };
        let word = int3.to_svm().unwrap();
        assert_eq!(word, svm::exception(3));
        assert_eq!(
            injection(word, &CX, Some(&int3)),
            Ok(Some(Injection {
                info: 0x8000_0603,
                error_code: 0,
                instruction_length: 1,
            }))
        );
        // INT1 (privileged software exception) likewise.
        let int1 = Vectoring {
            info: 0x8000_0501,
            error_code: 0,
            instruction_length: 1,
        };
        assert_eq!(int1.to_svm(), Some(svm::exception(1)));
        assert_eq!(
            injection(svm::exception(1), &CX, Some(&int1)).map(|i| i.map(|i| i.info)),
            Ok(Some(0x8000_0501))
        );
        // A #PF with its code, and the "NMI unblocked by IRET" bit dropped.
        let pf = Vectoring {
            info: 0x8000_1b0e,
            error_code: 6,
            instruction_length: 0,
        };
        let word = pf.to_svm().unwrap();
        assert_eq!(word, svm::exception_with_code(vector::PF, 6));
        assert_eq!(
            injection(word, &CX, Some(&pf)).map(|i| i.map(|i| (i.info, i.error_code))),
            Ok(Some((0x8000_0b0e, 6)))
        );
        // Anything else the extension asks for is translated afresh.
        assert_eq!(
            injection(svm::exception(svm_vector::UD), &CX, Some(&int3)),
            Ok(plain(0x8000_0306, 0))
        );
    }

    #[test]
    fn vectoring_words_become_exitintinfo() {
        let word = |info, error_code| {
            Vectoring {
                info,
                error_code,
                instruction_length: 0,
            }
            .to_svm()
        };
        assert_eq!(word(0x8000_0030, 0), Some(svm::interrupt(0x30)));
        assert_eq!(word(0x8000_0202, 0), Some(svm::nmi()));
        assert_eq!(word(0x8000_0b0d, 0), Some(svm::exception_with_code(13, 0)));
        assert_eq!(word(0x8000_0b08, 9), Some(svm::exception_with_code(8, 9)));
        assert_eq!(
            word(0x8000_0480, 0),
            Some(svm::VALID | svm::TYPE_SOFTWARE_INTERRUPT | 0x80)
        );
        assert_eq!(word(0x0000_0b0e, 0), None, "not valid");
        assert_eq!(word(0x8000_0700, 0), None, "other event");
        assert!(is_kind(0x8000_0202, EventType::Nmi));
        assert!(!is_kind(0x0000_0202, EventType::Nmi));
    }
}
