//! Every operation of every ISA token the host has, lane by lane against its scalar definition:
//! kernels written once over `Simd` are only as right as each token's methods.

#[cfg(target_arch = "x86_64")]
use flashcpu_kernels::isa::{Avx2Fma, Avx512};
use flashcpu_kernels::isa::{Portable, Simd};
use half::{bf16, f16};

/// `LANES` distinct values per vector `i`, mixed in sign and magnitude.
fn input<S: Simd>(i: usize) -> Vec<f32> {
    (0..S::LANES).map(|l| ((i * 31 + l * 7) % 23) as f32 * 0.37 - 4.1).collect()
}

fn load<S: Simd>(s: S, x: &[f32]) -> S::V {
    assert_eq!(x.len(), S::LANES);
    // SAFETY: `x` holds LANES floats.
    unsafe { s.load(x.as_ptr()) }
}

fn lanes_of<S: Simd>(s: S, v: S::V) -> Vec<f32> {
    let mut out = vec![0.0; S::LANES];
    // SAFETY: `out` holds LANES floats.
    unsafe { s.store(out.as_mut_ptr(), v) };
    out
}

/// `portable`: the token is [`Portable`], whose halfway rounding differs (see `Simd::round`).
fn check_token<S: Simd>(s: S, portable: bool) {
    let (a, b) = (input::<S>(0), input::<S>(1));
    let (va, vb) = (load(s, &a), load(s, &b));
    let zip = |f: fn(f32, f32) -> f32| a.iter().zip(&b).map(|(&x, &y)| f(x, y)).collect::<Vec<_>>();
    assert_eq!(lanes_of(s, s.splat(2.5)), vec![2.5; S::LANES]);
    assert_eq!(lanes_of(s, s.add(va, vb)), zip(|x, y| x + y));
    assert_eq!(lanes_of(s, s.sub(va, vb)), zip(|x, y| x - y));
    assert_eq!(lanes_of(s, s.mul(va, vb)), zip(|x, y| x * y));
    assert_eq!(lanes_of(s, s.div(va, vb)), zip(|x, y| x / y));
    let fma: Vec<f32> = a.iter().zip(&b).map(|(&x, &y)| x.mul_add(y, 1.25)).collect();
    let got = lanes_of(s, s.mul_add(va, vb, s.splat(1.25)));
    // The portable build may not fuse: one extra rounding of x·y at most.
    for (g, w) in got.iter().zip(&fma) {
        assert!((g - w).abs() <= 4.0 * f32::EPSILON * w.abs().max(1.0), "mul_add {g} vs {w}");
    }
    assert_eq!(lanes_of(s, s.max(va, vb)), zip(f32::max));
    assert_eq!(lanes_of(s, s.min(va, vb)), zip(f32::min));
    // The x86 NaN rule: a NaN in either lane yields `b`'s lane.
    let nan = s.splat(f32::NAN);
    assert!(lanes_of(s, s.max(va, nan)).iter().all(|x| x.is_nan()));
    assert!(lanes_of(s, s.min(va, nan)).iter().all(|x| x.is_nan()));
    assert_eq!(lanes_of(s, s.max(nan, vb)), b);
    assert_eq!(lanes_of(s, s.min(nan, vb)), b);

    let xs: Vec<f32> = (0..S::LANES).map(|l| l as f32 * 0.73 - 5.1).collect();
    let want: Vec<f32> = xs.iter().map(|&x| x.round()).collect();
    assert_eq!(lanes_of(s, s.round(load(s, &xs))), want);
    // Halfway cases: to even on the x86 tokens, away from zero on the portable one.
    let halves: Vec<f32> = (0..S::LANES).map(|l| l as f32 - 7.5).collect();
    for (x, r) in halves.iter().zip(lanes_of(s, s.round(load(s, &halves)))) {
        let want = if portable { x.round() } else { x.round_ties_even() };
        assert_eq!(r, want, "round({x})");
    }
    let exps: Vec<f32> = (0..S::LANES).map(|l| [-127.0, -126.0, -1.0, 0.0, 1.0, 127.0][l % 6]).collect();
    let want: Vec<f32> = exps.iter().map(|&n| if n == -127.0 { 0.0 } else { 2f32.powi(n as i32) }).collect();
    assert_eq!(lanes_of(s, s.pow2i(load(s, &exps))), want);

    let h: Vec<u16> = a.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
    let want: Vec<f32> = h.iter().map(|&x| f16::from_bits(x).to_f32()).collect();
    // SAFETY: `h` holds LANES values.
    assert_eq!(lanes_of(s, unsafe { s.load_f16(h.as_ptr()) }), want);
    let h: Vec<u16> = a.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
    let want: Vec<f32> = h.iter().map(|&x| bf16::from_bits(x).to_f32()).collect();
    // SAFETY: `h` holds LANES values.
    assert_eq!(lanes_of(s, unsafe { s.load_bf16(h.as_ptr()) }), want);

    let eight: Vec<Vec<f32>> = (0..8).map(input::<S>).collect();
    let vs: [S::V; 8] = core::array::from_fn(|i| load(s, &eight[i]));
    let sums = lanes_of(s, s.sum8(vs));
    for (i, row) in eight.iter().enumerate() {
        let want: f32 = row.iter().sum();
        assert!((sums[i] - want).abs() <= 1e-5 * row.iter().map(|x| x.abs()).sum::<f32>(), "sum8 lane {i}");
    }
    assert!(sums[8..].iter().all(|&x| x == 0.0), "sum8 lanes past 8 are 0");
    let t = s.transpose8(vs).map(|v| lanes_of(s, v));
    for (i, row) in t.iter().enumerate() {
        for (l, &x) in row.iter().enumerate() {
            // Lane l of result i is lane i of input l, within each group of 8 lanes.
            assert_eq!(x, eight[l % 8][l / 8 * 8 + i], "transpose8 result {i} lane {l}");
        }
    }
    let total: f32 = a.iter().sum();
    assert!((s.reduce_sum(va) - total).abs() <= 1e-5 * a.iter().map(|x| x.abs()).sum::<f32>());
    assert_eq!(s.reduce_max(va), a.iter().copied().fold(f32::NEG_INFINITY, f32::max));
    // Hints never fault, whatever the address.
    s.prefetch(core::ptr::null());
    s.prefetch_far(usize::MAX as *const f32);
}

#[test]
fn portable_token_matches_scalar_definitions() {
    check_token(Portable, true);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_token_matches_scalar_definitions() {
    if let Some(s) = Avx2Fma::detect() {
        check_token(s, false);
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx512_token_matches_scalar_definitions() {
    if let Some(s) = Avx512::detect() {
        check_token(s, false);
    }
}
