//! Which instruction set the kernels run on: detected once, overridable by `FLASHCPU_ISA`.

use crate::error::{Error, Result};
use flashcpu_kernels::Isa;
pub use flashcpu_kernels::IsaKind;
use std::sync::OnceLock;

/// The environment variable that forces an instruction set: `portable`, `avx2fma` (`avx2`) or
/// `avx512`.
pub const ISA_ENV: &str = "FLASHCPU_ISA";

/// Parses an ISA name as accepted by `FLASHCPU_ISA` and the CLI's `--isa`.
///
/// ```
/// use flashcpu::{IsaKind, parse_isa};
/// assert_eq!(parse_isa("avx2")?, IsaKind::Avx2Fma);
/// assert!(parse_isa("sse9").is_err());
/// # Ok::<(), flashcpu::Error>(())
/// ```
pub fn parse_isa(name: &str) -> Result<IsaKind> {
    match name.trim().to_ascii_lowercase().as_str() {
        "portable" => Ok(IsaKind::Portable),
        "avx2" | "avx2fma" | "avx2+fma" => Ok(IsaKind::Avx2Fma),
        "avx512" | "avx512f" => Ok(IsaKind::Avx512),
        other => Err(Error::UnsupportedIsa(format!(
            "unknown ISA {other:?}; expected one of: portable, avx2fma, avx512"
        ))),
    }
}

/// `kind` as a proven [`Isa`], or an error if this CPU lacks it.
pub(crate) fn isa_for(kind: IsaKind) -> Result<Isa> {
    Isa::new(kind)
        .ok_or_else(|| Error::UnsupportedIsa(format!("{} is not supported by this CPU", kind.name())))
}

/// The instruction set used when a call does not name one: `FLASHCPU_ISA` if set, else the best
/// the CPU has. Decided once per process; a bad `FLASHCPU_ISA` makes every call return this error.
pub(crate) fn default_isa() -> Result<Isa> {
    static DEFAULT: OnceLock<Result<Isa>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| match std::env::var(ISA_ENV) {
            Ok(name) => isa_for(parse_isa(&name)?),
            Err(_) => Ok(Isa::best()),
        })
        .clone()
}

/// The instruction set calls run on by default (see [`ISA_ENV`]).
pub fn active_isa() -> Result<IsaKind> {
    default_isa().map(Isa::kind)
}

/// Every instruction set this CPU can run, portable first. Tests use it to cover every path.
///
/// ```
/// use flashcpu::{IsaKind, MatMut, MatRef, MatmulOptions, available_isas, matmul_with};
/// let (a, b) = ([1.0f32, 2.0], [3.0f32, 4.0]);
/// assert_eq!(available_isas()[0], IsaKind::Portable);
/// for isa in available_isas() {
///     let opts = MatmulOptions { isa: Some(isa), ..Default::default() };
///     let mut c = [0.0f32];
///     let (a, b) = (MatRef::row_major(&a, 1, 2)?, MatRef::row_major(&b, 2, 1)?);
///     matmul_with(&opts, 1.0, a, b, 0.0, MatMut::row_major(&mut c, 1, 1)?)?;
///     assert_eq!(c, [11.0]);
/// }
/// # Ok::<(), flashcpu::Error>(())
/// ```
pub fn available_isas() -> Vec<IsaKind> {
    Isa::available().into_iter().map(Isa::kind).collect()
}

/// `requested` if given and supported, else the default.
pub(crate) fn resolve(requested: Option<IsaKind>) -> Result<Isa> {
    requested.map_or_else(default_isa, isa_for)
}
