//! C declarations generated from the Rust layouts.
//!
//! The Linux driver and its trampoline are C and assembly. Instead of a second
//! hand-written copy of every shared layout (the original MicroV's headers and
//! spec drifted apart), the header `loaders/linux/microv_abi.h` is generated
//! from this crate by `cargo xtask gen-header`, and a unit test fails when the
//! checked-in header differs from what this crate would generate.

use core::fmt::{self, Write};

/// A type that has a C spelling.
pub trait CType {
    /// Writes the element type, e.g. `__u64` or `struct mv_x`.
    fn write_type(w: &mut dyn Write) -> fmt::Result;
    /// Writes array dimensions after the field name, e.g. `[16]`.
    fn write_dims(_w: &mut dyn Write) -> fmt::Result {
        Ok(())
    }
}

/// Writes one field declaration: `\t__u64 name[16];`.
pub fn write_field<T: CType>(w: &mut dyn Write, name: &str) -> fmt::Result {
    w.write_str("\t")?;
    T::write_type(w)?;
    write!(w, " {name}")?;
    T::write_dims(w)?;
    w.write_str(";\n")
}

/// A `#[repr(C)]` struct shared with C code.
pub trait CStruct {
    /// The C struct tag, e.g. `mv_cpu_landing`.
    const C_NAME: &'static str;
    /// Writes the struct definition followed by offset and size assertions.
    fn write_c_decl(w: &mut dyn Write) -> fmt::Result;
    /// Writes `#define MVOFF_<struct>_<field> <offset>` lines for assembly.
    fn write_offsets(w: &mut dyn Write) -> fmt::Result;
}

macro_rules! scalar_ctype {
    ($($t:ty => $c:literal),* $(,)?) => {$(
        impl CType for $t {
            fn write_type(w: &mut dyn Write) -> fmt::Result {
                w.write_str($c)
            }
        }
    )*};
}
scalar_ctype!(u8 => "__u8", u16 => "__u16", u32 => "__u32", u64 => "__u64", i32 => "__s32", i64 => "__s64");

impl<T: CType, const N: usize> CType for [T; N] {
    fn write_type(w: &mut dyn Write) -> fmt::Result {
        T::write_type(w)
    }
    fn write_dims(w: &mut dyn Write) -> fmt::Result {
        write!(w, "[{N}]")?;
        T::write_dims(w)
    }
}

/// Declares a `#[repr(C)]` struct shared with C and implements [`CStruct`] for it.
///
/// Every field must be explicit (no implicit padding) so that the layout is
/// the same for any compiler and the struct can derive `zerocopy::IntoBytes`.
#[macro_export]
macro_rules! c_struct {
    (
        $(#[$m:meta])*
        pub struct $name:ident as $cname:literal {
            $( $(#[$fm:meta])* pub $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq,
            zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable, zerocopy::KnownLayout)]
        pub struct $name {
            $( $(#[$fm])* pub $field: $ty ),*
        }

        impl $name {
            /// All fields zero.
            pub fn zeroed() -> Self {
                <Self as zerocopy::FromZeros>::new_zeroed()
            }
        }

        impl $crate::cdecl::CStruct for $name {
            const C_NAME: &'static str = $cname;
            fn write_c_decl(w: &mut dyn core::fmt::Write) -> core::fmt::Result {
                writeln!(w, "struct {} {{", $cname)?;
                $( $crate::cdecl::write_field::<$ty>(w, stringify!($field))?; )*
                writeln!(w, "}};")?;
                $(
                    writeln!(w, "_Static_assert(offsetof(struct {}, {}) == {}, \"{}.{}\");",
                        $cname, stringify!($field), core::mem::offset_of!($name, $field),
                        $cname, stringify!($field))?;
                )*
                writeln!(w, "_Static_assert(sizeof(struct {}) == {}, \"sizeof {}\");",
                    $cname, core::mem::size_of::<$name>(), $cname)
            }
            fn write_offsets(w: &mut dyn core::fmt::Write) -> core::fmt::Result {
                $(
                    writeln!(w, "#define MVOFF_{}_{} {}", $cname, stringify!($field),
                        core::mem::offset_of!($name, $field))?;
                )*
                writeln!(w, "#define MVSIZE_{} {}", $cname, core::mem::size_of::<$name>())
            }
        }

        impl $crate::cdecl::CType for $name {
            fn write_type(w: &mut dyn core::fmt::Write) -> core::fmt::Result {
                write!(w, "struct {}", $cname)
            }
        }
    };
}
