//! Which instruction set the kernels run on: detected once, overridable by `FLASHCPU_ISA`.

use crate::error::{Error, Result};
use flashcpu_kernels::Isa;
pub use flashcpu_kernels::IsaKind;
use std::sync::OnceLock;

/// The environment variable that forces an instruction set: `portable`, `avx2fma` (`avx2`) or
/// `avx512`.
pub const ISA_ENV: &str = "FLASHCPU_ISA";

/// Parses an ISA name as accepted by `FLASHCPU_ISA` and the CLI's `--isa`.
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
pub fn available_isas() -> Vec<IsaKind> {
    Isa::available().into_iter().map(Isa::kind).collect()
}

/// `requested` if given and supported, else the default.
pub(crate) fn resolve(requested: Option<IsaKind>) -> Result<Isa> {
    requested.map_or_else(default_isa, isa_for)
}
