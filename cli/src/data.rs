//! Benchmark inputs: deterministic pseudo-random values (splitmix64; no cryptographic intent) in
//! buffers whose sizes come from the command line, so every size is checked and every allocation
//! fallible: a size this machine cannot hold is an error message, never an abort.

/// `dims` multiplied out, or an error naming `what` when the product overflows `usize`.
pub fn count(what: &str, dims: &[usize]) -> Result<usize, String> {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("{what} of {} floats is larger than memory can address", join(dims)))
}

/// Checks that `dims.product()` floats can be allocated now, for buffers the library allocates
/// itself (a KV cache, a layer's weights), whose allocation cannot report failure.
pub fn ensure_fits(what: &str, dims: &[usize]) -> Result<(), String> {
    reserve(what, dims).map(drop)
}

/// An empty vector with room for `len = dims.product()` floats, and `len`; or an error naming
/// `what`.
fn reserve(what: &str, dims: &[usize]) -> Result<(Vec<f32>, usize), String> {
    let len = count(what, dims)?;
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| format!("cannot allocate {what} of {} floats", join(dims)))?;
    Ok((v, len))
}

/// `dims.product()` zeros.
pub fn zeros(what: &str, dims: &[usize]) -> Result<Vec<f32>, String> {
    let (mut v, len) = reserve(what, dims)?;
    v.resize(len, 0.0);
    Ok(v)
}

/// `dims.product()` values uniform in [-1, 1), the same for the same `seed`.
pub fn uniform(what: &str, dims: &[usize], seed: u64) -> Result<Vec<f32>, String> {
    let (mut v, len) = reserve(what, dims)?;
    let mut state = seed;
    v.extend((0..len).map(|_| {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }));
    Ok(v)
}

fn join(dims: &[usize]) -> String {
    dims.iter().map(usize::to_string).collect::<Vec<_>>().join("×")
}

/// An error unless every `(flag, value)` is at least 1.
pub fn positive(args: &[(&str, usize)]) -> Result<(), String> {
    match args.iter().find(|(_, value)| *value == 0) {
        Some((flag, _)) => Err(format!("--{flag} must be at least 1")),
        None => Ok(()),
    }
}

/// An error unless `kv_heads` divides `heads` (grouped-query attention).
pub fn divides(heads: usize, kv_heads: usize) -> Result<(), String> {
    if heads.is_multiple_of(kv_heads) {
        Ok(())
    } else {
        Err(format!("--heads {heads} must be a multiple of --kv-heads {kv_heads}"))
    }
}
