//! Fuzz harness for the public API of `flashcpu-kernels`: strided views, packing and the
//! macro-kernel, on every ISA this CPU has. Shared by the cargo-fuzz target
//! (`fuzz/fuzz_targets/kernels.rs`) and the stable replay test (`tests/fuzz_replay_kernels.rs`).
//!
//! Input, one byte per field; past the end of the input a seeded stream of finite values takes
//! over (see `common::Bytes`):
//! ```text
//! isa                an index into Isa::available()
//! m k n              each % 41
//! lhs rhs            % 3: A packed, read in place, streamed; % 2: B packed, or read in place
//!                    where `Rhs::direct` allows it
//! alpha beta         indices into ALPHAS and BETAS
//! layout of A, B, C  a kind % 6 and its parameter bytes (see `decode`)
//! block              four bytes: a block of A to compare element by element
//! A, B, C            each: a scale byte, then every slot of its buffer (gaps included)
//! tensor             a 4-D shape (each dim % 4), four stride bytes and a length byte
//! ```
//! It panics only on a real defect:
//! - `MatRef::new`, `MatMut::new` or `View4::new` disagreeing with the exact bounds rule, or
//!   `MatMut::new` accepting strides that send two indices to one element;
//! - `block`, `t`, `row_slice` or `View4::matrix` reading another element than the one indexed;
//! - packing writing past `len_for` floats of its buffer;
//! - a macro-kernel element that is not within tolerance of `α·(A·B)ᵢⱼ + β·Cᵢⱼ` in f64 (C not read
//!   when β = 0), or any write outside C's view. Elements are finite here (NaN propagation is the
//!   safe crate's fuzz target's business), so every element is checked.

#[path = "common.rs"]
mod common;

use common::{Bytes, Operand, stride, tolerance};
use flashcpu_kernels::gemm::{Lhs, PackedA, PackedB, Rhs, macro_kernel};
use flashcpu_kernels::reference::{matmul_f32_naive, matmul_f64};
use flashcpu_kernels::view::View4;
use flashcpu_kernels::{Isa, MatMut, MatRef};

/// Largest m, k and n: several MR × NR tiles (an AVX-512 tile is 6 × 32) and ragged edges.
pub const MAX_DIM: usize = 40;

const ALPHAS: [f32; 6] = [1.0, 0.0, -2.3, 0.5, -0.0, 3.0];
const BETAS: [f32; 6] = [0.0, 1.0, 0.5, -2.3, -0.0, 1e-3];

/// A value packing never writes: what follows `len_for` floats of a packing buffer must keep it.
const GUARD: f32 = -7777.0;

/// Kinds: 0 row-major, 1 column-major, 2 padded rows, 3 zero strides (a broadcast; refused for
/// C), 4 raw strides from two bytes (may overlap or overflow), 5 row-major 1..3 elements short.
fn decode(bytes: &mut Bytes<'_>, rows: usize, cols: usize) -> Operand {
    let kind = bytes.below(6);
    let strides = match kind {
        0 | 5 => (cols, 1),
        1 => (1, rows),
        2 => (cols + 1 + bytes.below(5), 1),
        3 => (0, 0),
        _ => (stride(bytes.byte()), stride(bytes.byte())),
    };
    Operand::new(bytes, (rows, cols), strides, kind == 5, 1 << 13)
}

/// `MatRef::new` must follow the bounds rule exactly.
fn input<'a>(l: &Operand, data: &'a [f32]) -> Option<MatRef<'a>> {
    let view = MatRef::new(data, l.rows, l.cols, l.rs, l.cs);
    assert_eq!(view.is_some(), l.fits(), "{l:?}: MatRef::new disagrees with the bounds rule");
    view
}

/// `MatMut::new` must refuse what does not fit and never accept overlapping strides.
fn output<'a>(l: &Operand, data: &'a mut [f32]) -> Option<MatMut<'a>> {
    let view = MatMut::new(data, l.rows, l.cols, l.rs, l.cs);
    if view.is_some() {
        assert!(
            l.fits() && l.distinct(),
            "{l:?}: MatMut::new accepted a view that is out of bounds or overlaps"
        );
    }
    view
}

/// Finite elements at one scale (special bytes read as plain values here).
fn elements(bytes: &mut Bytes<'_>, len: usize) -> Vec<f32> {
    let scale = bytes.scale();
    (0..len).map(|_| f32::from(bytes.byte() as i8) / 16.0 * scale).collect()
}

/// Decodes one input and checks views, packing and one macro-kernel call.
pub fn run(data: &[u8]) {
    let mut bytes = Bytes::new(data);
    let isa = bytes.pick(&Isa::available());
    let (m, k, n) = (bytes.below(MAX_DIM + 1), bytes.below(MAX_DIM + 1), bytes.below(MAX_DIM + 1));
    let (lhs_kind, rhs_kind) = (bytes.below(3), bytes.below(2));
    let (alpha, beta) = (bytes.pick(&ALPHAS), bytes.pick(&BETAS));
    let (la, lb, lc) = (decode(&mut bytes, m, k), decode(&mut bytes, k, n), decode(&mut bytes, m, n));
    let block = [bytes.byte(), bytes.byte(), bytes.byte(), bytes.byte()].map(usize::from);
    let a_data = elements(&mut bytes, la.len);
    let b_data = elements(&mut bytes, lb.len);
    let c_before = elements(&mut bytes, lc.len);
    check_tensor(&mut bytes);

    let (Some(a), Some(b)) = (input(&la, &a_data), input(&lb, &b_data)) else { return };
    check_block(a, block);
    let mut c_data = c_before.clone();
    let Some(c) = output(&lc, &mut c_data) else { return };

    let mut a_buf = vec![GUARD; PackedA::len_for(m, k) + 8];
    let mut b_buf = vec![GUARD; PackedB::len_for(isa, k, n) + 8];
    let lhs = match lhs_kind {
        0 => Lhs::Packed(PackedA::pack(isa, a, &mut a_buf)),
        1 => Lhs::Strided(a),
        _ => Lhs::Streamed(a),
    };
    let rhs = match Rhs::direct(isa, b).filter(|_| rhs_kind == 1) {
        Some(direct) => direct,
        None => Rhs::Packed(PackedB::pack(isa, b, &mut b_buf)),
    };
    macro_kernel(isa, lhs, rhs, c, alpha, beta);
    let guard_kept = |buf: &[f32], len: usize| buf[len..].iter().all(|&x| x == GUARD);
    assert!(guard_kept(&a_buf, PackedA::len_for(m, k)), "{isa:?}: PackedA wrote past len_for({m}, {k})");
    assert!(guard_kept(&b_buf, PackedB::len_for(isa, k, n)), "{isa:?}: PackedB wrote past len_for({k}, {n})");

    let what =
        format!("{m}×{k}×{n} {isa:?} lhs {lhs_kind} rhs {rhs_kind} α={alpha} β={beta} {la:?} {lb:?} {lc:?}");
    let (exact, naive) = (matmul_f64(a, b), matmul_f32_naive(a, b));
    let reads_c = beta != 0.0;
    let mut inside = vec![false; lc.len];
    for i in 0..m {
        for j in 0..n {
            let at = i * lc.rs + j * lc.cs;
            inside[at] = true;
            let old = if reads_c { c_before[at] } else { 0.0 };
            let want = f64::from(alpha) * exact[i * n + j] + f64::from(beta) * f64::from(old);
            let naive = beta.mul_add(old, alpha * naive[i * n + j]);
            let sum_abs: f64 = (0..k).map(|p| (f64::from(a.at(i, p)) * f64::from(b.at(p, j))).abs()).sum();
            let magnitude = f64::from(alpha).abs() * sum_abs + (f64::from(beta) * f64::from(old)).abs();
            let bound = tolerance(want, naive, magnitude).expect("finite inputs of this size stay finite");
            let got = c_data[at];
            let err = (f64::from(got) - want).abs();
            assert!(
                err <= bound,
                "{what}: C[{i},{j}] = {got}, want {want} (error {err:e} > bound {bound:e})"
            );
        }
    }
    for (at, (x, y)) in c_data.iter().zip(&c_before).enumerate() {
        assert!(
            inside[at] || x.to_bits() == y.to_bits(),
            "{what}: wrote C's buffer at {at}, outside the view"
        );
    }
}

/// A block of `a` chosen by four bytes (clamped into the view), its transpose and its row slices
/// must read the elements they index.
fn check_block(a: MatRef<'_>, [r0, c0, rows, cols]: [usize; 4]) {
    let r0 = r0 % (a.rows() + 1);
    let c0 = c0 % (a.cols() + 1);
    let (rows, cols) = (rows % (a.rows() - r0 + 1), cols % (a.cols() - c0 + 1));
    let blk = a.block(r0, c0, rows, cols);
    let t = blk.t();
    assert_eq!((blk.rows(), blk.cols(), t.rows(), t.cols()), (rows, cols, cols, rows));
    for i in 0..rows {
        let slice = blk.row_slice(i);
        for j in 0..cols {
            let want = a.at(r0 + i, c0 + j);
            assert_eq!(blk.at(i, j).to_bits(), want.to_bits(), "block ({r0}, {c0}) element ({i}, {j})");
            assert_eq!(t.at(j, i).to_bits(), want.to_bits(), "transposed block element ({j}, {i})");
            if let Some(row) = slice {
                assert_eq!(row[j].to_bits(), want.to_bits(), "row slice {i} element {j}");
            }
        }
    }
}

/// A 4-D view over a small buffer: `View4::new` must follow the bounds rule, and each of its
/// `(batch, head)` matrices must read the element the 4-D strides give.
fn check_tensor(bytes: &mut Bytes<'_>) {
    let shape = [bytes.below(4), bytes.below(4), bytes.below(4), bytes.below(4)];
    let strides = [stride(bytes.byte()), stride(bytes.byte()), stride(bytes.byte()), stride(bytes.byte())];
    let data: Vec<f32> = (0..bytes.below(256)).map(|i| i as f32).collect();
    let needed = if shape.contains(&0) {
        Some(0)
    } else {
        shape.iter().zip(strides).try_fold(1usize, |acc, (&d, s)| acc.checked_add((d - 1).checked_mul(s)?))
    };
    let view = View4::new(&data, shape, strides);
    let fits = needed.is_some_and(|e| e <= data.len());
    assert_eq!(view.is_some(), fits, "View4::new({shape:?}, {strides:?}) over {} floats", data.len());
    let Some(view) = view else { return };
    for b in 0..shape[0] {
        for h in 0..shape[1] {
            let m = view.matrix(b, h);
            for i in 0..shape[2] {
                for j in 0..shape[3] {
                    let at = b * strides[0] + h * strides[1] + i * strides[2] + j * strides[3];
                    assert_eq!(m.at(i, j), data[at], "{shape:?} {strides:?}: ({b}, {h}, {i}, {j})");
                }
            }
        }
    }
}
