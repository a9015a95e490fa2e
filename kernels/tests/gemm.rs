//! The kernels through their public API: `macro_kernel` on every ISA this CPU has against the f64
//! reference, with A packed, read in place and streamed, on every edge size around the MR × NR
//! register tile;
//! packing; and the views' construction checks and splits.

use flashcpu_kernels::gemm::{Lhs, MAX_MR, MAX_NR, MR, PackedA, PackedB, Rhs, macro_kernel, nr_of};
#[cfg(target_arch = "x86_64")]
use flashcpu_kernels::isa::Avx2Fma;
use flashcpu_kernels::isa::{Portable, Simd};
use flashcpu_kernels::reference::{matmul_f32_naive, matmul_f64};
use flashcpu_kernels::{Isa, MatMut, MatRef};
use proptest::prelude::*;
use proptest::sample::select;

/// The α and β classes: 0 (C not read / product skipped), 1, a power of two, an inexact negative.
const SCALARS: [f32; 4] = [0.0, 1.0, 0.5, -2.3];
/// Never a value of a product here; found outside C's view after a call, it proves nothing was
/// written there.
const SENTINEL: f32 = 1234.5;

/// A seeded splitmix64 stream, so proptest shrinks shapes rather than floats.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let bits = ((z ^ (z >> 31)) >> 40) as u32;
        bits as f32 / (1u32 << 23) as f32 - 1.0
    }
}

/// Strides `(rs, cs)` and buffer length of a `rows × cols` matrix in layout `layout`:
/// 0 row-major, 1 column-major, 2 row-major padded, 3 column-major padded, 4 neither stride 1.
fn strides(layout: u8, rows: usize, cols: usize) -> (usize, usize, usize) {
    let (rs, cs) = match layout {
        0 => (cols, 1),
        1 => (1, rows),
        2 => (cols + 1, 1),
        3 => (1, rows + 2),
        _ => (2 * cols + 3, 2),
    };
    let extent = if rows == 0 || cols == 0 { 0 } else { (rows - 1) * rs + (cols - 1) * cs + 1 };
    (rs, cs, extent + 2)
}

/// How the case hands A to the kernel: the three [`Lhs`] forms.
#[derive(Clone, Copy, Debug)]
enum LhsForm {
    Packed,
    Strided,
    Streamed,
}

#[derive(Clone, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    lhs: LhsForm,
    /// Layouts of A, B and C (see [`strides`]). C takes only the padded and spread layouts: the
    /// dense ones with a zero dimension have a zero stride, which `MatMut::new` currently refuses
    /// (see `empty_mut_views_accept_any_strides`), and that is the view's bug, not the kernel's.
    layouts: (u8, u8, u8),
    alpha: f32,
    beta: f32,
    seed: u64,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        (0..=2 * MAX_MR + 1, 0..=2 * MAX_NR + 1, select(vec![0, 1, 7, 13, 64])),
        select(vec![LhsForm::Packed, LhsForm::Strided, LhsForm::Streamed]),
        (0..5u8, 0..5u8, 2..5u8),
        (select(SCALARS.to_vec()), select(SCALARS.to_vec())),
        any::<u64>(),
    )
        .prop_map(|((m, n, k), lhs, layouts, (alpha, beta), seed)| Case {
            m,
            n,
            k,
            lhs,
            layouts,
            alpha,
            beta,
            seed,
        })
}

/// Runs the case on `isa`: the kernel within tolerance of the reference, C outside its view
/// untouched. Pack buffers start full of NaN, so zero padding that is not written would show.
fn check(isa: Isa, case: &Case) -> Result<(), TestCaseError> {
    let Case { m, n, k, .. } = *case;
    let (alpha, beta) = (case.alpha, case.beta);
    let mut rng = Rng(case.seed);
    let (a_rs, a_cs, a_len) = strides(case.layouts.0, m, k);
    let (b_rs, b_cs, b_len) = strides(case.layouts.1, k, n);
    let (c_rs, c_cs, c_len) = strides(case.layouts.2, m, n);
    let a_data: Vec<f32> = (0..a_len).map(|_| rng.uniform()).collect();
    let b_data: Vec<f32> = (0..b_len).map(|_| rng.uniform()).collect();
    let mut c_data = vec![SENTINEL; c_len];
    for i in 0..m {
        for j in 0..n {
            // β = 0 must not read C: NaN there must not reach the result.
            c_data[i * c_rs + j * c_cs] = if beta == 0.0 { f32::NAN } else { rng.uniform() };
        }
    }
    let c_old = c_data.clone();
    let a = MatRef::new(&a_data, m, k, a_rs, a_cs).unwrap();
    let b = MatRef::new(&b_data, k, n, b_rs, b_cs).unwrap();

    let mut b_buf = vec![f32::NAN; PackedB::len_for(isa, k, n) + 5];
    let b_pack = PackedB::pack(isa, b, &mut b_buf);
    let mut a_buf = vec![f32::NAN; PackedA::len_for(m, k) + 5];
    let lhs = match case.lhs {
        LhsForm::Packed => Lhs::Packed(PackedA::pack(isa, a, &mut a_buf)),
        LhsForm::Strided => Lhs::Strided(a),
        LhsForm::Streamed => Lhs::Streamed(a),
    };
    // B read in place where its layout allows, for half the seeds.
    let rhs = match Rhs::direct(isa, b) {
        Some(direct) if case.seed.is_multiple_of(2) => direct,
        _ => Rhs::Packed(b_pack),
    };
    let c = MatMut::new(&mut c_data, m, n, c_rs, c_cs).unwrap();
    macro_kernel(isa, lhs, rhs, c, alpha, beta);

    let (exact, naive) = (matmul_f64(a, b), matmul_f32_naive(a, b));
    let mut inside = vec![false; c_len];
    for i in 0..m {
        for j in 0..n {
            let at = i * c_rs + j * c_cs;
            inside[at] = true;
            let old = if beta == 0.0 { 0.0 } else { c_old[at] };
            let beta_c = f64::from(beta) * f64::from(old);
            let want = f64::from(alpha) * exact[i * n + j] + beta_c;
            let naive = beta.mul_add(old, alpha * naive[i * n + j]);
            let sum_abs: f64 = (0..k).map(|p| (f64::from(a.at(i, p)) * f64::from(b.at(p, j))).abs()).sum();
            // The rule of flashcpu's tests (see src/tests/mod.rs in the root crate): at most twice
            // the naive f32 error plus 4ε·Σ|terms|, which absorbs a different summation order and
            // the final α, β roundings, while any missing or extra term lies far outside it.
            let magnitude = f64::from(alpha).abs() * sum_abs + beta_c.abs();
            let bound = 2.0 * (f64::from(naive) - want).abs() + 4.0 * f64::from(f32::EPSILON) * magnitude;
            let got = c_data[at];
            prop_assert!(
                (f64::from(got) - want).abs() <= bound,
                "{:?}: C[{i},{j}] = {got}, want {want}, bound {bound:e}",
                isa.kind()
            );
        }
    }
    for (at, &x) in c_data.iter().enumerate() {
        prop_assert!(
            inside[at] || x.to_bits() == SENTINEL.to_bits(),
            "{:?}: wrote C's buffer at {at}, outside the view",
            isa.kind()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn macro_kernel_matches_reference(case in cases()) {
        for isa in Isa::available() {
            check(isa, &case)?;
        }
    }
}

/// Every (m, n) in 0..=2MR+1 × 0..=2NR+1 (the widest ISA's tile) at k = 7 and 40 once (one line
/// of A and more), in every form of A, on every ISA: the property test samples this grid, this
/// walks all of it. A streamed A splits C after the first tile column, so n goes past NR + 1.
#[test]
fn macro_kernel_every_edge_size() {
    for m in 0..=2 * MAX_MR + 1 {
        for n in 0..=2 * MAX_NR + 1 {
            for (lhs, k) in
                [(LhsForm::Packed, 7), (LhsForm::Strided, 7), (LhsForm::Streamed, 7), (LhsForm::Streamed, 40)]
            {
                let case = Case {
                    m,
                    n,
                    k,
                    lhs,
                    layouts: ((m + n) as u8 % 5, n as u8 % 5, 2 + (m as u8 % 3)),
                    alpha: -2.3,
                    beta: if (m + n) % 2 == 0 { 0.0 } else { 0.5 },
                    seed: (m * 100 + n) as u64,
                };
                for isa in Isa::available() {
                    check(isa, &case).unwrap();
                }
            }
        }
    }
}

/// A streamed A with no columns may have any row stride, like any view without columns: k = 0
/// gives C = β·C.
#[test]
fn streamed_panel_without_columns_scales_c() {
    let a = MatRef::new(&[], 2 * MAX_MR + 1, 0, usize::MAX, 1).unwrap();
    let b = MatRef::new(&[], 0, MAX_NR + 3, MAX_NR + 3, 1).unwrap();
    let (m, n) = (a.rows(), b.cols());
    for isa in Isa::available() {
        let mut buf = vec![0.0; PackedB::len_for(isa, 0, n)];
        let mut c_data = vec![2.0; m * n];
        let c = MatMut::new(&mut c_data, m, n, n, 1).unwrap();
        macro_kernel(isa, Lhs::Streamed(a), PackedB::pack(isa, b, &mut buf), c, 1.0, 0.5);
        assert!(c_data.iter().all(|&x| x == 1.0), "{:?}", isa.kind());
    }
}

/// Strips packed piecewise (as the parallel packer does) and `sub_cols` of a packed panel give the
/// same products as packing in one go.
#[test]
fn piecewise_packing_and_sub_cols_agree_with_whole_packing() {
    let (m, k, n) = (2 * MAX_MR + 1, 19, 3 * MAX_NR + 5);
    let mut rng = Rng(99);
    let a_data: Vec<f32> = (0..m * k).map(|_| rng.uniform()).collect();
    let b_data: Vec<f32> = (0..k * n).map(|_| rng.uniform()).collect();
    let a = MatRef::new(&a_data, m, k, k, 1).unwrap();
    let b = MatRef::new(&b_data, k, n, 1, k).unwrap();
    for isa in Isa::available() {
        let nr = nr_of(isa);
        let product = |b_pack: PackedB<'_>, c_data: &mut [f32]| {
            // Column-major C: valid strides for every cols, including 0.
            let c = MatMut::new(c_data, m, b_pack.cols(), 1, m).unwrap();
            macro_kernel(isa, Lhs::Strided(a), b_pack, c, 1.0, 0.0);
        };
        let mut whole_buf = vec![f32::NAN; PackedB::len_for(isa, k, n)];
        let mut whole = vec![0.0; m * n];
        product(PackedB::pack(isa, b, &mut whole_buf), &mut whole);

        let mut pieces_buf = vec![f32::NAN; PackedB::len_for(isa, k, n)];
        let (first, rest) = pieces_buf.split_at_mut(2 * nr * k);
        PackedB::pack(isa, b.block(0, 0, k, 2 * nr), first);
        PackedB::pack(isa, b.block(0, 2 * nr, k, n - 2 * nr), rest);
        let mut pieces = vec![0.0; m * n];
        product(PackedB::from_buffer(isa, &pieces_buf, k, n), &mut pieces);
        assert_eq!(pieces, whole, "{:?}: piecewise packing", isa.kind());

        let whole_pack = PackedB::pack(isa, b, &mut whole_buf);
        for (j0, cols) in [(0, nr), (nr, 2 * nr + 5), (3 * nr, 5), (2 * nr, 0)] {
            let mut sub = vec![0.0; m * cols];
            product(whole_pack.sub_cols(j0, cols), &mut sub);
            for i in 0..m {
                for j in 0..cols {
                    assert_eq!(sub[i + j * m], whole[i + (j0 + j) * m], "{j0}+{cols}");
                }
            }
        }
    }
}

/// The packed layouts against their definitions (`PackedB`: strip j, row p at `(j·k + p)·NR`;
/// `PackedA`: strip i, column p at `(i·k + p)·MR`; zero padding past the edge), on widths around
/// the groups of strips that a row-major B is packed in (64 columns) and in every layout.
#[test]
fn packed_layouts_match_their_definition() {
    /// Strips of `width` lanes and `depth` steps: lane `l` of step `p` of strip `i` holds
    /// `value(i·width + l, p)`, or 0 past `count` lanes in all.
    fn check_strips(
        packed: &[f32],
        width: usize,
        depth: usize,
        count: usize,
        value: impl Fn(usize, usize) -> f32,
    ) {
        for (at, &x) in packed.iter().enumerate() {
            let (lane, p) = ((at / (depth * width)) * width + at % width, at / width % depth);
            let want = if lane < count { value(lane, p) } else { 0.0 };
            assert_eq!(x.to_bits(), want.to_bits(), "at {at}");
        }
    }
    for isa in Isa::available() {
        for k in [1, 3, 17] {
            for n in [1, 15, 16, 63, 64, 65, 127, 128, 129, 200] {
                for layout in 0..5 {
                    let mut rng = Rng((k * 1000 + n * 10) as u64 + u64::from(layout));
                    let (rs, cs, len) = strides(layout, k, n);
                    let data: Vec<f32> = (0..len).map(|_| rng.uniform()).collect();
                    println!("{:?} k {k} n {n} layout {layout}", isa.kind());
                    let b = MatRef::new(&data, k, n, rs, cs).unwrap();
                    let mut buf = vec![f32::NAN; PackedB::len_for(isa, k, n)];
                    let packed = PackedB::pack(isa, b, &mut buf);
                    assert_eq!(packed.strip_width(), nr_of(isa));
                    check_strips(packed.as_slice(), nr_of(isa), k, n, |j, p| b.at(p, j));
                    // The same matrix read as an n × k left operand.
                    let a = b.t();
                    let mut buf = vec![f32::NAN; PackedA::len_for(n, k)];
                    PackedA::pack(isa, a, &mut buf);
                    check_strips(&buf, MR, k, n, |i, p| a.at(i, p));
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "sub_cols")]
fn sub_cols_must_start_a_strip() {
    let b_data = vec![1.0; 4 * 2 * MAX_NR];
    let b = MatRef::new(&b_data, 4, 2 * MAX_NR, 2 * MAX_NR, 1).unwrap();
    let mut buf = vec![0.0; PackedB::len_for(Isa::portable(), 4, 2 * MAX_NR)];
    PackedB::pack(Isa::portable(), b, &mut buf).sub_cols(1, MAX_NR);
}

#[test]
#[should_panic(expected = "macro_kernel")]
fn macro_kernel_refuses_mismatched_shapes() {
    let (a_data, b_data) = (vec![1.0; 3 * 4], vec![1.0; 5 * 2]);
    let a = MatRef::new(&a_data, 3, 4, 4, 1).unwrap();
    let b = MatRef::new(&b_data, 5, 2, 2, 1).unwrap();
    let mut buf = vec![0.0; PackedB::len_for(Isa::portable(), 5, 2)];
    let mut c_data = vec![0.0; 3 * 2];
    let c = MatMut::new(&mut c_data, 3, 2, 2, 1).unwrap();
    macro_kernel(Isa::portable(), Lhs::Strided(a), PackedB::pack(Isa::portable(), b, &mut buf), c, 1.0, 0.0);
}

#[test]
#[should_panic]
fn packing_into_a_short_buffer_panics() {
    let a_data = vec![1.0; 7 * 3];
    let a = MatRef::new(&a_data, 7, 3, 3, 1).unwrap();
    let mut buf = vec![0.0; PackedA::len_for(7, 3) - 1];
    PackedA::pack(Isa::best(), a, &mut buf);
}

/// Packing's transpose, on every token this CPU can make: lane j of result i is lane i of input j.
#[test]
fn transpose8_swaps_rows_and_lanes() {
    fn check<S: Simd>(s: S) {
        let input: [[f32; 8]; 8] = core::array::from_fn(|j| core::array::from_fn(|i| (10 * j + i) as f32));
        // SAFETY: every row holds 8 floats.
        let rows = input.map(|row| unsafe { s.load(row.as_ptr()) });
        for (i, v) in s.transpose8(rows).into_iter().enumerate() {
            let mut out = [0.0f32; 8];
            // SAFETY: `out` holds 8 floats.
            unsafe { s.store(out.as_mut_ptr(), v) };
            assert_eq!(out, core::array::from_fn(|j| input[j][i]), "row {i}");
        }
    }
    check(Portable);
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = Avx2Fma::detect() {
        check(s);
    }
}

#[test]
fn isa_tokens() {
    let available = Isa::available();
    assert_eq!(available.first(), Some(&Isa::portable()));
    assert!(available.contains(&Isa::best()));
    for isa in &available {
        assert_eq!(Isa::new(isa.kind()), Some(*isa));
    }
}

/// `MatRef::new` accepts exactly the views whose last element lies in the slice; an extent that
/// overflows `usize` is refused, never wrapped; an empty view needs no storage at all.
#[test]
fn mat_ref_new_checks_bounds() {
    let data = [0.0f32; 12];
    assert!(MatRef::new(&data, 3, 4, 4, 1).is_some());
    assert!(MatRef::new(&data[..11], 3, 4, 4, 1).is_none());
    assert!(MatRef::new(&data, 4, 3, 1, 4).is_some());
    assert!(MatRef::new(&data, 4, 3, 1, 5).is_none());
    assert!(MatRef::new(&data, 3, 4, 0, 0).is_some(), "inputs may broadcast");
    for s in [usize::MAX, usize::MAX / 2 + 1] {
        assert!(MatRef::new(&data, 3, 2, s, 1).is_none());
        assert!(MatRef::new(&data, 2, 3, 1, s).is_none());
    }
    assert!(MatRef::new(&data, usize::MAX, 2, 1, 1).is_none());
    assert!(MatRef::new(&data, 1, 12, usize::MAX, 1).is_some());
    let empty: [f32; 0] = [];
    for (r, c) in [(0, 0), (0, 9), (9, 0)] {
        assert!(MatRef::new(&empty, r, c, usize::MAX, usize::MAX).is_some());
    }
}

/// `MatMut::new` also refuses strides that map two indices to one element.
#[test]
fn mat_mut_new_checks_bounds_and_overlap() {
    let mut data = [0.0f32; 32];
    assert!(MatMut::new(&mut data[..11], 3, 4, 4, 1).is_none());
    assert!(MatMut::new(&mut data, 3, 2, usize::MAX, 1).is_none());
    for (rows, cols, rs, cs) in
        [(2, 3, 0, 1), (3, 2, 1, 0), (2, 2, 1, 1), (3, 3, 2, 1), (1, 4, 5, 0), (4, 1, 0, 5), (2, 2, 0, 0)]
    {
        assert!(
            MatMut::new(&mut data, rows, cols, rs, cs).is_none(),
            "{rows}×{cols} strides ({rs}, {cs}) overlap"
        );
    }
    for (rows, cols, rs, cs) in
        [(2, 3, 1, 2), (3, 2, 2, 1), (4, 4, 8, 2), (1, 1, 0, 0), (1, 5, 0, 1), (5, 1, 1, 0)]
    {
        assert!(
            MatMut::new(&mut data, rows, cols, rs, cs).is_some(),
            "{rows}×{cols} strides ({rs}, {cs}) are distinct"
        );
    }
}

/// A view with no elements has no two indices sharing an element, whatever its strides: the dense
/// constructors give an `m × 0` row-major view row stride 0 and a `0 × n` column-major view column
/// stride 0, and those must be accepted (`matmul` with `n = 0` is documented as a no-op).
#[test]
fn empty_mut_views_accept_any_strides() {
    let mut empty: [f32; 0] = [];
    for (rows, cols, rs, cs) in [(3, 0, 0, 1), (0, 3, 1, 0), (0, 0, 0, 0), (5, 0, 0, 0)] {
        assert!(MatMut::new(&mut empty, rows, cols, rs, cs).is_some(), "{rows}×{cols} strides ({rs}, {cs})");
    }
}

/// Splitting a column-major matrix into row blocks interleaves the pieces in memory; each piece
/// still writes exactly its own elements.
#[test]
fn split_at_row_and_col_cover_each_element_once() {
    let (rows, cols) = (5, 7);
    for (rs, cs) in [(cols, 1), (1, rows), (2 * cols + 1, 2)] {
        let len = (rows - 1) * rs + (cols - 1) * cs + 1;
        for (r, c) in [(0, 0), (2, 3), (5, 7), (1, 6)] {
            let mut data = vec![f32::NAN; len];
            let m = MatMut::new(&mut data, rows, cols, rs, cs).unwrap();
            let (top, bottom) = m.split_at_row(r);
            assert_eq!((top.rows(), bottom.rows()), (r, rows - r));
            for (part, i0) in [(top, 0), (bottom, r)] {
                assert_eq!(part.cols(), cols);
                let (mut left, mut right) = part.split_at_col(c);
                assert_eq!((left.cols(), right.cols()), (c, cols - c));
                for i in 0..left.rows() {
                    for j in 0..c {
                        left.set(i, j, ((i0 + i) * 100 + j) as f32);
                    }
                    for j in 0..cols - c {
                        right.set(i, j, ((i0 + i) * 100 + c + j) as f32);
                        assert_eq!(right.at(i, j), ((i0 + i) * 100 + c + j) as f32);
                    }
                }
            }
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(data[i * rs + j * cs], (i * 100 + j) as f32, "({rs},{cs}) {r},{c}");
                }
            }
            let untouched = data.iter().filter(|x| x.is_nan()).count();
            assert_eq!(untouched, len - rows * cols);
        }
    }
}

#[test]
#[should_panic(expected = "split row")]
fn split_at_row_beyond_panics() {
    let mut data = [0.0f32; 6];
    let _ = MatMut::new(&mut data, 2, 3, 3, 1).unwrap().split_at_row(3);
}

#[test]
#[should_panic(expected = "split column")]
fn split_at_col_beyond_panics() {
    let mut data = [0.0f32; 6];
    let _ = MatMut::new(&mut data, 2, 3, 3, 1).unwrap().split_at_col(4);
}

#[test]
fn transpose_block_and_reborrow() {
    let data: Vec<f32> = (0..12).map(|x| x as f32).collect();
    let a = MatRef::new(&data, 3, 4, 4, 1).unwrap();
    let t = a.t();
    assert_eq!((t.rows(), t.cols(), t.row_stride(), t.col_stride()), (4, 3, 1, 4));
    assert_eq!(t.at(3, 1), a.at(1, 3));
    let blk = a.block(1, 2, 2, 2);
    assert_eq!((blk.at(0, 0), blk.at(1, 1)), (6.0, 11.0));
    assert_eq!(a.block(3, 4, 0, 0).rows(), 0);

    let mut out = [0.0f32; 6];
    let mut m = MatMut::new(&mut out, 2, 3, 3, 1).unwrap();
    m.rb().set(1, 2, 5.0);
    m.set(0, 0, 1.0);
    assert_eq!(m.at(1, 2), 5.0);
    assert_eq!(out, [1.0, 0.0, 0.0, 0.0, 0.0, 5.0]);
}

/// A B packed for one ISA's tile width handed to another's kernel would be read past its strips:
/// refused.
#[test]
fn macro_kernel_refuses_b_packed_for_another_width() {
    let (Some(narrow), Some(wide)) = (
        Isa::available().into_iter().find(|&i| nr_of(i) == 16),
        Isa::available().into_iter().find(|&i| nr_of(i) == 32),
    ) else {
        return;
    };
    let b_data = vec![1.0; 3 * 20];
    let b = MatRef::new(&b_data, 3, 20, 20, 1).unwrap();
    let mut buf = vec![0.0; PackedB::len_for(narrow, 3, 20)];
    let packed = PackedB::pack(narrow, b, &mut buf);
    let a = MatRef::new(&[1.0; 6], 2, 3, 3, 1).unwrap();
    let mut c_data = vec![0.0; 2 * 20];
    let c = MatMut::new(&mut c_data, 2, 20, 20, 1).unwrap();
    let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        macro_kernel(wide, Lhs::Strided(a), packed, c, 1.0, 0.0);
    }));
    assert!(refused.is_err());
}

/// Sizes whose packed length overflows `usize` panic before any buffer is touched.
#[test]
#[should_panic(expected = "overflows")]
fn packed_length_overflow_panics() {
    PackedB::len_for(Isa::portable(), 1 << 60, 16);
}
