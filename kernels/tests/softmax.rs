//! The vector exp and tanh against f64, on every ISA the host has: the accuracy their docs state.

#[cfg(target_arch = "x86_64")]
use flashcpu_kernels::isa::{Avx2Fma, Avx512};
use flashcpu_kernels::isa::{Portable, Simd};
use flashcpu_kernels::softmax::{exp, exp_nonpositive, tanh};

/// Applies a lane function to `LANES` inputs at a time.
fn lanes<S: Simd>(s: S, xs: &[f32], f: impl Fn(S, S::V) -> S::V) -> Vec<f32> {
    let mut out = vec![0.0f32; xs.len().next_multiple_of(S::LANES)];
    let mut padded = xs.to_vec();
    padded.resize(out.len(), 0.0);
    for (src, dst) in padded.chunks_exact(S::LANES).zip(out.chunks_exact_mut(S::LANES)) {
        // SAFETY: both chunks hold exactly LANES floats.
        unsafe { s.store(dst.as_mut_ptr(), f(s, s.load(src.as_ptr()))) };
    }
    out.truncate(xs.len());
    out
}

fn sweep(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    (0..=n).map(|i| lo + (hi - lo) * i as f32 / n as f32).collect()
}

fn check_all<S: Simd>(s: S) {
    // exp: relative error < 3e-7 on [−87, 88].
    let xs = sweep(-87.0, 88.0, 200_003);
    for (x, y) in xs.iter().zip(lanes(s, &xs, exp)) {
        let want = f64::from(*x).exp();
        let rel = (f64::from(y) - want).abs() / want;
        assert!(rel < 3e-7, "exp({x}) = {y}, want {want}, relative error {rel:e}");
    }
    // exp_nonpositive: relative error < 3e-7 + |x|·1.2e-7 on [−87, 0].
    let xs = sweep(-87.0, 0.0, 100_003);
    for (x, y) in xs.iter().zip(lanes(s, &xs, exp_nonpositive)) {
        let want = f64::from(*x).exp();
        let rel = (f64::from(y) - want).abs() / want;
        assert!(
            rel < 3e-7 + f64::from(x.abs()) * 1.2e-7,
            "exp_nonpositive({x}) = {y}, relative error {rel:e}"
        );
    }
    // The edges: exactly 0 for hidden scores, NaN stays NaN.
    let edges = [f32::NEG_INFINITY, -1e30, -200.0, -88.1, f32::NAN, 0.0, -0.0];
    for f in [exp::<S>, exp_nonpositive::<S>] {
        let got = lanes(s, &edges, f);
        assert_eq!(&got[..4], &[0.0; 4], "hidden scores must weigh exactly 0");
        assert!(got[4].is_nan(), "NaN must stay NaN");
        assert_eq!(&got[5..], &[1.0, 1.0]);
    }
    // tanh: absolute error < 3e-7; ±1 in the limits; NaN stays NaN.
    let xs = sweep(-20.0, 20.0, 100_003);
    for (x, y) in xs.iter().zip(lanes(s, &xs, tanh)) {
        let want = f64::from(*x).tanh();
        assert!((f64::from(y) - want).abs() < 3e-7, "tanh({x}) = {y}, want {want}");
    }
    let got = lanes(s, &[f32::INFINITY, f32::NEG_INFINITY, 1e30, f32::NAN], tanh);
    assert_eq!(&got[..3], &[1.0, -1.0, 1.0]);
    assert!(got[3].is_nan());
}

#[test]
fn portable_exp_and_tanh_meet_their_stated_accuracy() {
    check_all(Portable);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_exp_and_tanh_meet_their_stated_accuracy() {
    if let Some(s) = Avx2Fma::detect() {
        check_all(s);
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx512_exp_and_tanh_meet_their_stated_accuracy() {
    if let Some(s) = Avx512::detect() {
        check_all(s);
    }
}
