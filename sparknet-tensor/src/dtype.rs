//! Element types: the [`DType`] tag and the sealed [`Element`] trait.
//!
//! Integer arithmetic wraps (as numpy's does) instead of panicking on overflow, so no user value
//! can make an in-place operation panic in a debug build.

use std::fmt;

/// The element type of a tensor, as a runtime tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// `f32`, numpy `<f4`.
    F32,
    /// `f64`, numpy `<f8`.
    F64,
    /// `u8`, numpy `|u1`.
    U8,
    /// `i32`, numpy `<i4`.
    I32,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::U8 => 1,
            DType::F32 | DType::I32 => 4,
            DType::F64 => 8,
        }
    }

    /// The numpy `descr` string this crate writes for the type (little-endian).
    pub fn npy_descr(self) -> &'static str {
        match self {
            DType::F32 => "<f4",
            DType::F64 => "<f8",
            DType::U8 => "|u1",
            DType::I32 => "<i4",
        }
    }

    /// Parses a numpy `descr` string; `None` for anything this crate does not read (big-endian,
    /// other widths, structured types).
    pub fn from_npy_descr(descr: &str) -> Option<DType> {
        match descr {
            "<f4" | "f4" => Some(DType::F32),
            "<f8" | "f8" => Some(DType::F64),
            "|u1" | "<u1" | "u1" => Some(DType::U8),
            "<i4" | "i4" => Some(DType::I32),
            _ => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::U8 => "u8",
            DType::I32 => "i32",
        })
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for u8 {}
    impl Sealed for i32 {}
}

/// A type a [`Tensor`](crate::Tensor) can hold: `f32`, `f64`, `u8` or `i32`.
///
/// The trait is sealed; its methods are the few primitives the kernels need, written so that the
/// compiler can vectorise slice loops over them.
pub trait Element:
    sealed::Sealed + Copy + Default + PartialOrd + fmt::Debug + Send + Sync + 'static
{
    /// The runtime tag of this type.
    const DTYPE: DType;
    /// Additive identity.
    const ZERO: Self;
    /// Multiplicative identity.
    const ONE: Self;

    /// `self + rhs` (wrapping for integers).
    fn elem_add(self, rhs: Self) -> Self;
    /// `self - rhs` (wrapping for integers).
    fn elem_sub(self, rhs: Self) -> Self;
    /// `self * rhs` (wrapping for integers).
    fn elem_mul(self, rhs: Self) -> Self;
    /// The value as `f64` (exact for every type but large `f64`s, trivially).
    fn to_f64(self) -> f64;
    /// `v` if it is representable exactly enough: integers must be in range and whole.
    fn from_f64_checked(v: f64) -> Option<Self>;
    /// `v as Self` (floats to integers truncate toward zero and saturate).
    fn from_f64_lossy(v: f64) -> Self;
    /// Converts an index (for `arange`); `None` when an integer type cannot hold it.
    fn from_usize(v: usize) -> Option<Self>;
    /// True for a floating-point NaN.
    fn is_nan(self) -> bool;
    /// Formats one element for `Display` (floats with a decimal point, as numpy does).
    fn format(self, precision: Option<usize>) -> String;
    /// Decodes little-endian bytes (whose length is a multiple of the element size).
    fn from_le_bytes_vec(bytes: &[u8]) -> Vec<Self>;
    /// Appends the little-endian bytes of `data` to `out`.
    fn extend_le_bytes(data: &[Self], out: &mut Vec<u8>);
}

/// The floating-point element types (`f32`, `f64`): the ones `mean` is defined for.
pub trait Float: Element {
    /// Converts from `f64` with rounding.
    fn from_f64(v: f64) -> Self;
}

macro_rules! float_element {
    ($t:ty, $tag:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$tag;
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline(always)]
            fn elem_add(self, rhs: Self) -> Self {
                self + rhs
            }
            #[inline(always)]
            fn elem_sub(self, rhs: Self) -> Self {
                self - rhs
            }
            #[inline(always)]
            fn elem_mul(self, rhs: Self) -> Self {
                self * rhs
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64_checked(v: f64) -> Option<Self> {
                Some(v as $t)
            }
            #[inline(always)]
            fn from_f64_lossy(v: f64) -> Self {
                v as $t
            }
            fn from_usize(v: usize) -> Option<Self> {
                Some(v as $t)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                self.is_nan()
            }
            fn format(self, precision: Option<usize>) -> String {
                match precision {
                    _ if self.is_nan() => "nan".to_string(),
                    _ if self.is_infinite() => {
                        (if self > 0.0 { "inf" } else { "-inf" }).to_string()
                    }
                    Some(p) => format!("{self:.p$}"),
                    None if self.is_finite() && self == self.trunc() && self.abs() < 1e16 => {
                        format!("{self}.")
                    }
                    None => format!("{self}"),
                }
            }
            fn from_le_bytes_vec(bytes: &[u8]) -> Vec<Self> {
                bytes
                    .chunks_exact(size_of::<$t>())
                    .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk of element size")))
                    .collect()
            }
            fn extend_le_bytes(data: &[Self], out: &mut Vec<u8>) {
                out.reserve(data.len() * size_of::<$t>());
                for v in data {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }

        impl Float for $t {
            fn from_f64(v: f64) -> Self {
                v as $t
            }
        }
    };
}

macro_rules! int_element {
    ($t:ty, $tag:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$tag;
            const ZERO: Self = 0;
            const ONE: Self = 1;
            #[inline(always)]
            fn elem_add(self, rhs: Self) -> Self {
                self.wrapping_add(rhs)
            }
            #[inline(always)]
            fn elem_sub(self, rhs: Self) -> Self {
                self.wrapping_sub(rhs)
            }
            #[inline(always)]
            fn elem_mul(self, rhs: Self) -> Self {
                self.wrapping_mul(rhs)
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64_checked(v: f64) -> Option<Self> {
                let ok = v.fract() == 0.0 && v >= <$t>::MIN as f64 && v <= <$t>::MAX as f64;
                ok.then_some(v as $t)
            }
            #[inline(always)]
            fn from_f64_lossy(v: f64) -> Self {
                v as $t
            }
            fn from_usize(v: usize) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                false
            }
            fn format(self, _precision: Option<usize>) -> String {
                format!("{self}")
            }
            fn from_le_bytes_vec(bytes: &[u8]) -> Vec<Self> {
                bytes
                    .chunks_exact(size_of::<$t>())
                    .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk of element size")))
                    .collect()
            }
            fn extend_le_bytes(data: &[Self], out: &mut Vec<u8>) {
                out.reserve(data.len() * size_of::<$t>());
                for v in data {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    };
}

float_element!(f32, F32);
float_element!(f64, F64);
int_element!(u8, U8);
int_element!(i32, I32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descr_round_trips() {
        for d in [DType::F32, DType::F64, DType::U8, DType::I32] {
            assert_eq!(DType::from_npy_descr(d.npy_descr()), Some(d));
        }
        assert_eq!(DType::from_npy_descr(">f4"), None);
        assert_eq!(DType::from_npy_descr("<f2"), None);
    }

    #[test]
    fn integer_arithmetic_wraps() {
        assert_eq!(250u8.elem_add(10), 4);
        assert_eq!(0u8.elem_sub(1), 255);
        assert_eq!(i32::MAX.elem_add(1), i32::MIN);
    }

    #[test]
    fn checked_conversions() {
        assert_eq!(u8::from_f64_checked(255.0), Some(255));
        assert_eq!(u8::from_f64_checked(256.0), None);
        assert_eq!(i32::from_f64_checked(1.5), None);
        assert_eq!(u8::from_usize(300), None);
        assert_eq!(f32::from_usize(300), Some(300.0));
    }

    #[test]
    fn float_format_like_numpy() {
        assert_eq!(2.0f32.format(None), "2.");
        assert_eq!(2.5f64.format(None), "2.5");
        assert_eq!(2.0f32.format(Some(2)), "2.00");
        assert_eq!(f32::NAN.format(None), "nan");
        assert_eq!(f64::NEG_INFINITY.format(Some(3)), "-inf");
    }
}
