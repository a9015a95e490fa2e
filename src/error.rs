//! The one error type of the safe API.

use std::fmt;

/// Why a call was refused. Every check happens before any work starts, so an `Err` leaves every
/// output untouched.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A view's rows, columns and strides reach past the end of its slice, or overflow `usize`.
    OutOfBounds(String),
    /// An output view whose strides map two indices onto the same element.
    OverlappingOutput(String),
    /// Operand shapes that do not fit together.
    ShapeMismatch(String),
    /// A parameter outside its documented domain (non-finite scale, window past the key length, …).
    InvalidParameter(String),
    /// An instruction set that was asked for but is unknown or missing on this CPU.
    UnsupportedIsa(String),
    /// A buffer that the call needs cannot be allocated (its size overflows or memory is short).
    OutOfMemory(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::OutOfBounds(s) => write!(f, "view out of bounds: {s}"),
            Error::OverlappingOutput(s) => write!(f, "output elements overlap: {s}"),
            Error::ShapeMismatch(s) => write!(f, "shape mismatch: {s}"),
            Error::InvalidParameter(s) => write!(f, "invalid parameter: {s}"),
            Error::UnsupportedIsa(s) => write!(f, "unsupported instruction set: {s}"),
            Error::OutOfMemory(s) => write!(f, "cannot allocate: {s}"),
        }
    }
}

impl std::error::Error for Error {}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
