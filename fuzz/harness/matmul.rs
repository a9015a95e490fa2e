//! Fuzz harness for `flashcpu::matmul_with`, shared by the cargo-fuzz target
//! (`fuzz/fuzz_targets/matmul.rs`) and the stable replay test (`tests/fuzz_replay.rs`).
//!
//! Input, one byte per field; past the end of the input a seeded stream of finite values takes
//! over (see `common::Bytes`):
//! ```text
//! m k n              each % 41
//! tweak              % 16: 0 A has k+1 columns, 1 B has k+1 rows, 2 C has m+1 rows,
//!                    3 C has n+1 columns, otherwise the shapes agree
//! isa parallelism    indices into available_isas() and [Sequential, Rayon]
//! alpha beta         indices into ALPHAS and BETAS (NaN, ±∞ and −0 included)
//! layout of A, B, C  a kind % 8 and its parameter bytes (see `Layout::decode`)
//! A, B, C            each: a scale byte, then every slot of its buffer (gaps included)
//! ```
//! It panics only on a real defect:
//! - a view constructor that disagrees with the exact bounds rule, or that accepts output strides
//!   sending two indices to one element (refusing distinct ones is allowed: the check is
//!   conservative);
//! - `Err` for a valid call; anything but `ShapeMismatch` for mismatched shapes, or but
//!   `InvalidParameter` for a NaN or infinite α or β; an `Err` that wrote to C; any write outside
//!   C's view;
//! - an element whose inputs (its row of A and column of B, α when k > 0, β and the old C element
//!   when β ≠ 0) are all finite but that is not finite and within tolerance of the f64 reference;
//!   one with a NaN input that is not NaN; one with an infinite input that is finite.

#[path = "common.rs"]
mod common;

use common::{Bytes, Operand, stride, tolerance};
use flashcpu::reference::{matmul_f32_naive, matmul_f64};
use flashcpu::{Error, MatMut, MatRef, MatmulOptions, Parallelism, available_isas, matmul_with};

/// Largest m, k and n: big enough for several MR × NR tiles and ragged edges, small enough that
/// the f64 reference costs nothing.
pub const MAX_DIM: usize = 40;
/// Buffers are never longer than this; views that would need more get a short buffer and must be
/// refused.
const MAX_LEN: usize = 1 << 13;

const ALPHAS: [f32; 12] =
    [1.0, 0.0, -2.3, 0.5, 2.0, -1.0, 1e-3, 3.0, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
const BETAS: [f32; 12] = [0.0, 1.0, 0.5, -2.3, -1.0, 2.0, -0.0, 1e-3, 3.0, f32::NAN, f32::INFINITY, 0.0];

/// One operand and how its view is built.
#[derive(Debug)]
struct Layout {
    op: Operand,
    /// Built as the `.t()` of a `cols × rows` view (inputs only; C uses the same strides directly).
    transposed: bool,
}

impl Layout {
    /// Kinds: 0 row-major, 1 column-major, 2 padded rows (+1..4), 3 padded columns (+1..4),
    /// 4 transposed column-major (+0..2), 5 no unit stride, 6 raw strides from two bytes (may
    /// overlap or overflow), 7 row-major with a buffer 1..3 elements short. Every buffer gets 0..2
    /// elements of slack unless it is meant to be short.
    fn decode(bytes: &mut Bytes<'_>, rows: usize, cols: usize) -> Layout {
        let kind = bytes.below(8);
        let strides = match kind {
            0 | 7 => (cols, 1),
            1 => (1, rows),
            2 => (cols + 1 + bytes.below(4), 1),
            3 => (1, rows + 1 + bytes.below(4)),
            4 => (1, rows + bytes.below(3)),
            5 => (2 * cols + 1, 2),
            _ => (stride(bytes.byte()), stride(bytes.byte())),
        };
        Layout { op: Operand::new(bytes, (rows, cols), strides, kind == 7, MAX_LEN), transposed: kind == 4 }
    }

    fn offset(&self, i: usize, j: usize) -> usize {
        i * self.op.rs + j * self.op.cs
    }

    fn view<'a>(&self, data: &'a [f32]) -> flashcpu::Result<MatRef<'a>> {
        let Operand { rows, cols, rs, cs, .. } = self.op;
        if self.transposed {
            MatRef::new(data, cols, rows, cs, rs).map(MatRef::t)
        } else {
            MatRef::new(data, rows, cols, rs, cs)
        }
    }

    /// `MatRef::new` must follow the bounds rule exactly.
    fn check_input(&self, view: &flashcpu::Result<MatRef<'_>>) {
        match (self.op.fits(), view) {
            (true, Ok(_)) | (false, Err(Error::OutOfBounds(_))) => {}
            (fits, other) => panic!("{self:?}: fits = {fits}, but MatRef::new gave {other:?}"),
        }
    }

    /// `MatMut::new` must follow the bounds rule exactly and never accept overlapping strides.
    fn check_output(&self, view: &flashcpu::Result<MatMut<'_>>) {
        let fits = self.op.fits();
        match view {
            Ok(_) => assert!(
                fits && self.op.distinct(),
                "{self:?}: MatMut::new accepted a view that is out of bounds or overlaps"
            ),
            Err(Error::OutOfBounds(_)) => assert!(!fits, "{self:?}: fits, but OutOfBounds"),
            Err(Error::OverlappingOutput(_)) => {
                assert!(fits, "{self:?}: out of bounds, but Overlapping")
            }
            Err(other) => panic!("{self:?}: MatMut::new gave {other:?}"),
        }
    }
}

fn elements(bytes: &mut Bytes<'_>, len: usize) -> Vec<f32> {
    let scale = bytes.scale();
    (0..len).map(|_| bytes.element(scale)).collect()
}

/// Decodes one input and checks one `matmul_with` call; see the module doc for what fails.
pub fn run(data: &[u8]) {
    let mut bytes = Bytes::new(data);
    let (m, k, n) = (bytes.below(MAX_DIM + 1), bytes.below(MAX_DIM + 1), bytes.below(MAX_DIM + 1));
    let tweak = bytes.below(16);
    let isa = bytes.pick(&available_isas());
    let parallelism = bytes.pick(&[Parallelism::Sequential, Parallelism::Rayon]);
    let (alpha, beta) = (bytes.pick(&ALPHAS), bytes.pick(&BETAS));
    let grow = |t: usize| usize::from(tweak == t);
    let la = Layout::decode(&mut bytes, m, k + grow(0));
    let lb = Layout::decode(&mut bytes, k + grow(1), n);
    let lc = Layout::decode(&mut bytes, m + grow(2), n + grow(3));
    let a_data = elements(&mut bytes, la.op.len);
    let b_data = elements(&mut bytes, lb.op.len);
    let c_before = elements(&mut bytes, lc.op.len);
    let mut c_data = c_before.clone();

    let (a, b) = (la.view(&a_data), lb.view(&b_data));
    la.check_input(&a);
    lb.check_input(&b);
    let c = MatMut::new(&mut c_data, lc.op.rows, lc.op.cols, lc.op.rs, lc.op.cs);
    lc.check_output(&c);
    let (Ok(a), Ok(b), Ok(c)) = (a, b, c) else {
        return;
    };

    let opts = MatmulOptions { isa: Some(isa), parallelism };
    let what = format!("{m}×{k}×{n} {isa:?} {parallelism:?} α={alpha} β={beta} {la:?} {lb:?} {lc:?}");
    let result = matmul_with(&opts, alpha, a, b, beta, c);
    if tweak < 4 {
        assert!(matches!(result, Err(Error::ShapeMismatch(_))), "{what}: mismatched shapes gave {result:?}");
        let same = c_data.iter().zip(&c_before).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{what}: an Err wrote to C");
        return;
    }
    let same = c_data.iter().zip(&c_before).all(|(x, y)| x.to_bits() == y.to_bits());
    if !(alpha.is_finite() && beta.is_finite()) {
        assert!(
            matches!(result, Err(Error::InvalidParameter(_))),
            "{what}: a non-finite factor gave {result:?}"
        );
        assert!(same, "{what}: an Err wrote to C");
        return;
    }
    if let Err(e) = result {
        panic!("{what}: a valid call was refused: {e}");
    }

    let (exact, naive) = (matmul_f64(a, b), matmul_f32_naive(a, b));
    // β = 0 (either sign) means C is not read; a NaN β is not 0 and is read.
    let reads_c = beta != 0.0;
    let mut inside = vec![false; lc.op.len];
    for i in 0..m {
        for j in 0..n {
            let at = lc.offset(i, j);
            inside[at] = true;
            let (got, old) = (c_data[at], c_before[at]);
            let mut used: Vec<f32> =
                (0..k).flat_map(|p| [a.get(i, p).unwrap(), b.get(p, j).unwrap()]).collect();
            if k > 0 {
                used.push(alpha);
            }
            if reads_c {
                used.extend([beta, old]);
            }
            let at_ij = format!("{what}: C[{i},{j}] = {got}");
            if used.iter().any(|x| x.is_nan()) {
                assert!(got.is_nan(), "{at_ij}, but a NaN input takes part");
                continue;
            }
            if used.iter().any(|x| x.is_infinite()) {
                assert!(!got.is_finite(), "{at_ij}, but an infinite input takes part");
                continue;
            }
            let old = if reads_c { old } else { 0.0 };
            let beta_c = f64::from(beta) * f64::from(old);
            let want = f64::from(alpha) * exact[i * n + j] + beta_c;
            let naive_ab = alpha * naive[i * n + j];
            let naive = if reads_c { beta.mul_add(old, naive_ab) } else { naive_ab };
            let sum_abs: f64 = (0..k)
                .map(|p| (f64::from(a.get(i, p).unwrap()) * f64::from(b.get(p, j).unwrap())).abs())
                .sum();
            let magnitude = f64::from(alpha).abs() * sum_abs + beta_c.abs();
            if let Some(bound) = tolerance(want, naive, magnitude) {
                let err = (f64::from(got) - want).abs();
                assert!(
                    got.is_finite() && err <= bound,
                    "{at_ij}, want {want} (error {err:e} > bound {bound:e})"
                );
            }
        }
    }
    for (at, (x, y)) in c_data.iter().zip(&c_before).enumerate() {
        assert!(
            inside[at] || x.to_bits() == y.to_bits(),
            "{what}: wrote C's buffer at {at}, outside the view"
        );
    }
}
