//! Typed VMCS fields (SDM Vol. 3C 25.11.2). A field is named by a 32-bit
//! encoding: bit 0 the access type (full or the high half of a 64-bit
//! field), bits 9:1 an index, bits 11:10 the type (control, read-only
//! VM-exit information, guest state, host state), bits 14:13 the width
//! (16-bit, 64-bit, 32-bit, natural); bits 12 and 31:15 are reserved.
//!
//! A [`Field`] carries its width and access in its type, and its
//! constructor checks them against the encoding while compiling: a field
//! declared with the wrong width, a high-access encoding (MicroV runs in
//! 64-bit mode, where full access moves all 64 bits) or a read-only field
//! declared writable (or the reverse) does not build. Only writable fields
//! have [`Field::write`]:
//!
//! ```compile_fail,E0080
//! # use microv_arch::vmx::vmcs::Field;
//! // 0x681E (guest RIP) is natural-width, not 32-bit.
//! const RIP: Field<u32> = Field::new::<0x681E>();
//! # let _ = RIP;
//! ```
//!
//! ```compile_fail,E0599
//! # use microv_arch::vmx::{fields::exit_info, instruction_error::VmFail, vmcs::Vmcs};
//! # struct Cpu;
//! # impl Vmcs for Cpu {
//! #     fn vmread(&mut self, _: u32) -> Result<u64, VmFail> { Ok(0) }
//! #     fn vmwrite(&mut self, _: u32, _: u64) -> Result<(), VmFail> { Ok(()) }
//! # }
//! // The exit reason is VM-exit information: it has no setter.
//! let _ = exit_info::REASON.write(&mut Cpu, 0);
//! ```

use core::marker::PhantomData;

use super::instruction_error::VmFail;

/// The width of a field, as a marker type: `u16`, `u32`, `u64` or
/// [`Natural`].
pub trait Width: sealed::Sealed {
    /// Bits 14:13 of an encoding of this width.
    const CODE: u32;
    /// What a field of this width holds.
    type Value: Copy;
    /// The value as VMWRITE takes it.
    fn to_raw(value: Self::Value) -> u64;
    /// The field's bits of what VMREAD returned.
    fn from_raw(raw: u64) -> Self::Value;
}

/// Natural width: 64 bits on a 64-bit CPU (addresses, control registers,
/// RIP, RSP, RFLAGS, the exit qualification).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Natural {}

/// Whether VMWRITE may write a field, as a marker type.
pub trait Access: sealed::Sealed {
    /// True for the VM-exit information fields (type 1).
    const READ_ONLY: bool;
}

/// Control, guest-state and host-state fields: VMREAD and VMWRITE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writable {}

/// VM-exit information fields (type 1): VMREAD only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOnly {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u16 {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
    impl Sealed for super::Natural {}
    impl Sealed for super::Writable {}
    impl Sealed for super::ReadOnly {}
}

macro_rules! width {
    ($ty:ty, $code:literal, $value:ty) => {
        impl Width for $ty {
            const CODE: u32 = $code;
            type Value = $value;
            fn to_raw(value: $value) -> u64 {
                u64::from(value)
            }
            fn from_raw(raw: u64) -> $value {
                raw as $value
            }
        }
    };
}
width!(u16, 0, u16);
width!(u64, 1, u64);
width!(u32, 2, u32);
width!(Natural, 3, u64);

impl Access for Writable {
    const READ_ONLY: bool = false;
}
impl Access for ReadOnly {
    const READ_ONLY: bool = true;
}

/// Bits 11:10 of a VM-exit information field's encoding.
const TYPE_EXIT_INFO: u32 = 1;

/// True if `encoding` names a full-access field of width `width` (bits
/// 14:13) that is read-only exactly when `read_only` says so, with its
/// reserved bits clear.
pub const fn encoding_matches(encoding: u32, width: u32, read_only: bool) -> bool {
    let reserved = encoding & !0x6fff;
    let high_access = encoding & 1;
    let kind = (encoding >> 10) & 3;
    reserved == 0
        && high_access == 0
        && (encoding >> 13) & 3 == width
        && (kind == TYPE_EXIT_INFO) == read_only
}

/// One VMCS field: its encoding, of width `W`, writable unless `A` is
/// [`ReadOnly`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field<W: Width, A: Access = Writable> {
    encoding: u32,
    marker: PhantomData<(W, A)>,
}

impl<W: Width, A: Access> Field<W, A> {
    /// The field `ENCODING`; fails to compile unless the encoding's width
    /// is `W`, its access is full and it is read-only exactly when `A` is.
    pub const fn new<const ENCODING: u32>() -> Self {
        const {
            assert!(
                encoding_matches(ENCODING, W::CODE, A::READ_ONLY),
                "VMCS encoding does not match the field's width or access"
            )
        };
        Field {
            encoding: ENCODING,
            marker: PhantomData,
        }
    }

    /// The encoding VMREAD and VMWRITE take.
    pub const fn encoding(self) -> u32 {
        self.encoding
    }

    /// Reads the field from the current VMCS.
    pub fn read(self, vmcs: &mut dyn Vmcs) -> Result<W::Value, VmFail> {
        vmcs.vmread(self.encoding).map(W::from_raw)
    }
}

impl<W: Width> Field<W, Writable> {
    /// Writes the field of the current VMCS.
    pub fn write(self, vmcs: &mut dyn Vmcs, value: W::Value) -> Result<(), VmFail> {
        vmcs.vmwrite(self.encoding, W::to_raw(value))
    }
}

/// The current VMCS: VMREAD and VMWRITE in the microkernel, a map in tests
/// (`fake::FakeVmcs`, feature `fake`). Reached through typed [`Field`]s.
pub trait Vmcs {
    /// VMREAD: the field `encoding`, zero-extended.
    fn vmread(&mut self, encoding: u32) -> Result<u64, VmFail>;
    /// VMWRITE: `value` into the field `encoding` (bits beyond the field's
    /// width are ignored).
    fn vmwrite(&mut self, encoding: u32, value: u64) -> Result<(), VmFail>;
}

/// Test double: a VMCS as a map from encoding to value (feature `fake`,
/// for other crates' tests).
#[cfg(any(test, feature = "fake"))]
pub mod fake {
    extern crate std;
    use super::*;
    use crate::vmx::instruction_error::InstructionError;
    use std::collections::BTreeMap;

    /// Fields never written read as unsupported (VMfailValid 12), so a test
    /// notices a read of state nobody set; VMWRITE of a VM-exit
    /// information field fails as on CPUs without "VMWRITE to any field".
    #[derive(Debug, Default)]
    pub struct FakeVmcs {
        pub fields: BTreeMap<u32, u64>,
    }

    impl FakeVmcs {
        /// Sets a read-only field, as the CPU does at a VM exit.
        pub fn exit_info<W: Width>(&mut self, field: Field<W, ReadOnly>, value: W::Value) {
            self.fields.insert(field.encoding(), W::to_raw(value));
        }
    }

    impl Vmcs for FakeVmcs {
        fn vmread(&mut self, encoding: u32) -> Result<u64, VmFail> {
            self.fields
                .get(&encoding)
                .copied()
                .ok_or(VmFail::Valid(InstructionError::UNSUPPORTED_FIELD))
        }
        fn vmwrite(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
            if (encoding >> 10) & 3 == TYPE_EXIT_INFO {
                return Err(VmFail::Valid(InstructionError::VMWRITE_READ_ONLY));
            }
            self.fields.insert(encoding, value);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeVmcs;
    use super::*;
    use crate::vmx::instruction_error::InstructionError;

    #[test]
    fn encodings_are_checked_against_width_and_access() {
        // Guest ES selector, 64-bit VMCS link pointer, exit reason, exit
        // qualification, host RIP.
        assert!(encoding_matches(0x0800, u16::CODE, false));
        assert!(encoding_matches(0x2800, u64::CODE, false));
        assert!(encoding_matches(0x4402, u32::CODE, true));
        assert!(encoding_matches(0x6400, Natural::CODE, true));
        assert!(encoding_matches(0x6c16, Natural::CODE, false));
        // Wrong width, high access, wrong access, reserved bits.
        assert!(!encoding_matches(0x681e, u32::CODE, false));
        assert!(!encoding_matches(0x2801, u64::CODE, false));
        assert!(!encoding_matches(0x2801, u32::CODE, false));
        assert!(!encoding_matches(0x4402, u32::CODE, false));
        assert!(!encoding_matches(0x4802, u32::CODE, true));
        assert!(!encoding_matches(0x1000 | 0x0800, u16::CODE, false));
        assert!(!encoding_matches(0x8000 | 0x0800, u16::CODE, false));
        assert!(!encoding_matches(1 << 20, u16::CODE, false));
    }

    const CS_SELECTOR: Field<u16> = Field::new::<0x0802>();
    const EFER: Field<u64> = Field::new::<0x2806>();
    const EXIT_REASON: Field<u32, ReadOnly> = Field::new::<0x4402>();
    const RSP: Field<Natural> = Field::new::<0x681c>();

    #[test]
    fn fields_read_and_write_their_width() {
        let mut vmcs = FakeVmcs::default();
        CS_SELECTOR.write(&mut vmcs, 0x10).unwrap();
        EFER.write(&mut vmcs, 0xd01).unwrap();
        RSP.write(&mut vmcs, u64::MAX - 7).unwrap();
        assert_eq!(vmcs.fields[&0x802], 0x10);
        assert_eq!(CS_SELECTOR.read(&mut vmcs), Ok(0x10));
        assert_eq!(EFER.read(&mut vmcs), Ok(0xd01));
        assert_eq!(RSP.read(&mut vmcs), Ok(u64::MAX - 7));
        // VMREAD zero-extends; a wider raw value keeps the field's bits.
        vmcs.fields.insert(0x802, 0xdead_0018);
        assert_eq!(CS_SELECTOR.read(&mut vmcs), Ok(0x18));
        vmcs.exit_info(EXIT_REASON, 48);
        assert_eq!(EXIT_REASON.read(&mut vmcs), Ok(48));
        assert_eq!(EXIT_REASON.encoding(), 0x4402);
    }

    #[test]
    fn the_fake_fails_as_the_cpu_does() {
        let mut vmcs = FakeVmcs::default();
        assert_eq!(
            RSP.read(&mut vmcs),
            Err(VmFail::Valid(InstructionError::UNSUPPORTED_FIELD))
        );
        assert_eq!(
            vmcs.vmwrite(EXIT_REASON.encoding(), 1),
            Err(VmFail::Valid(InstructionError::VMWRITE_READ_ONLY))
        );
    }
}
