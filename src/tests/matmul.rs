//! `matmul_with` against the f64 reference on every ISA and both threadings: sizes around the
//! register tile and past the cache blocks, every layout of A, B and C, and α, β ∈ {0, 1, 0.5, −2.3};
//! then the contract's deterministic cases (β = 0 never reads C, k = 0, empty outputs, thread-count
//! determinism, NaN and infinity propagation) and every error, one by one.

use super::{Rng, pool3, tolerance};
use crate::reference::{matmul_f32_naive, matmul_f64};
use crate::{
    Error, IsaKind, MatMut, MatRef, MatmulOptions, Parallelism, available_isas, matmul, matmul_with,
    parse_isa,
};
use flashcpu_kernels::Isa;
use flashcpu_kernels::blocking::Blocking;
use flashcpu_kernels::gemm::{MAX_MR as MR, MAX_NR as NR};
use proptest::prelude::*;
use proptest::sample::select;

/// Edge sizes: 0, 1, around MR = 6 or 12 and NR = 16 or 32, and a few that leave ragged tiles in
/// both.
const SIZES: [usize; 17] = [0, 1, 2, 5, 6, 7, 11, 12, 13, 15, 16, 17, 31, 63, 65, 97, 129];
/// The α and β classes: 0 (skip), 1 (no multiply), a power of two and an inexact negative.
const SCALARS: [f32; 4] = [0.0, 1.0, 0.5, -2.3];

/// How a matrix sits in its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Through `MatRef::row_major` / `MatMut::row_major`.
    RowMajor,
    /// Through `MatRef::col_major` / `MatMut::col_major`.
    ColMajor,
    /// Row-major with `row_stride = cols + 3`.
    PaddedRows,
    /// Column-major with `col_stride = rows + 5`.
    PaddedCols,
    /// Neither stride is 1: `col_stride = 2`, `row_stride = 2·cols + 1`.
    Spread,
    /// The `.t()` of a padded row-major `cols × rows` view (inputs); the same strides for C.
    Transposed,
}

const LAYOUTS: [Layout; 6] = [
    Layout::RowMajor,
    Layout::ColMajor,
    Layout::PaddedRows,
    Layout::PaddedCols,
    Layout::Spread,
    Layout::Transposed,
];

/// Elements past the last one a view reaches, and in the gaps of padded layouts, hold this value;
/// a kernel that writes outside its view changes them.
const SENTINEL: f32 = 1234.5;
/// Slack after the last element of every buffer.
const SLACK: usize = 3;

/// A `rows × cols` matrix stored in a buffer with a [`Layout`].
#[derive(Clone, Debug)]
struct Strided {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
    layout: Layout,
}

impl Strided {
    fn new(layout: Layout, rows: usize, cols: usize) -> Strided {
        let (rs, cs) = match layout {
            Layout::RowMajor => (cols, 1),
            Layout::ColMajor => (1, rows),
            Layout::PaddedRows => (cols + 3, 1),
            Layout::PaddedCols => (1, rows + 5),
            Layout::Spread => (2 * cols + 1, 2),
            Layout::Transposed => (1, rows + 2),
        };
        let extent = if rows == 0 || cols == 0 { 0 } else { (rows - 1) * rs + (cols - 1) * cs + 1 };
        Strided { data: vec![SENTINEL; extent + SLACK], rows, cols, rs, cs, layout }
    }

    fn offset(&self, i: usize, j: usize) -> usize {
        i * self.rs + j * self.cs
    }

    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[self.offset(i, j)]
    }

    fn fill(&mut self, mut value: impl FnMut() -> f32) {
        for i in 0..self.rows {
            for j in 0..self.cols {
                let o = self.offset(i, j);
                self.data[o] = value();
            }
        }
    }

    fn view(&self) -> MatRef<'_> {
        let (d, r, c) = (&self.data[..], self.rows, self.cols);
        match self.layout {
            Layout::RowMajor => MatRef::row_major(d, r, c),
            Layout::ColMajor => MatRef::col_major(d, r, c),
            Layout::Transposed => MatRef::new(d, c, r, self.cs, self.rs).map(MatRef::t),
            _ => MatRef::new(d, r, c, self.rs, self.cs),
        }
        .unwrap_or_else(|e| panic!("{:?} {r}×{c} input view: {e}", self.layout))
    }

    fn view_mut(&mut self) -> MatMut<'_> {
        let (r, c, rs, cs, layout) = (self.rows, self.cols, self.rs, self.cs, self.layout);
        let d = &mut self.data[..];
        match layout {
            Layout::RowMajor => MatMut::row_major(d, r, c),
            Layout::ColMajor => MatMut::col_major(d, r, c),
            _ => MatMut::new(d, r, c, rs, cs),
        }
        .unwrap_or_else(|e| panic!("{layout:?} {r}×{c} output view: {e}"))
    }

    /// Whether every element outside the view still holds [`SENTINEL`].
    fn outside_untouched(&self) -> bool {
        let mut inside = vec![false; self.data.len()];
        for i in 0..self.rows {
            for j in 0..self.cols {
                inside[self.offset(i, j)] = true;
            }
        }
        self.data.iter().zip(&inside).all(|(&x, &inside)| inside || x.to_bits() == SENTINEL.to_bits())
    }

    fn bits(&self) -> Vec<u32> {
        self.data.iter().map(|x| x.to_bits()).collect()
    }
}

/// What `C ← α·A·B + β·C` should give, element by element, with its tolerance inputs.
struct Expected {
    n: usize,
    /// `α·(A·B) + β·c_old` in f64.
    exact: Vec<f64>,
    /// The same with `A·B` from the naive f32 loop, combined in f32.
    naive: Vec<f32>,
    /// `|α|·Σ_p |a_ip·b_pj| + |β·c_old|` in f64.
    magnitude: Vec<f64>,
}

impl Expected {
    /// `c_old(i, j)` is only called when `β ≠ 0`: with `β = 0` the old C does not take part.
    fn new(
        alpha: f32,
        a: MatRef<'_>,
        b: MatRef<'_>,
        beta: f32,
        c_old: impl Fn(usize, usize) -> f32,
    ) -> Expected {
        let (m, k, n) = (a.rows(), a.cols(), b.cols());
        let ab = matmul_f64(a, b);
        let ab_naive = matmul_f32_naive(a, b);
        let (mut exact, mut naive, mut magnitude) = (vec![], vec![], vec![]);
        for i in 0..m {
            for j in 0..n {
                let sum_abs: f64 = (0..k)
                    .map(|p| {
                        let (x, y) = (a.get(i, p).unwrap(), b.get(p, j).unwrap());
                        (f64::from(x) * f64::from(y)).abs()
                    })
                    .sum();
                let c = if beta == 0.0 { 0.0 } else { c_old(i, j) };
                let (alpha64, beta_c) = (f64::from(alpha), f64::from(beta) * f64::from(c));
                exact.push(alpha64 * ab[i * n + j] + beta_c);
                let naive_ab = alpha * ab_naive[i * n + j];
                naive.push(if beta == 0.0 { naive_ab } else { beta.mul_add(c, naive_ab) });
                magnitude.push(alpha64.abs() * sum_abs + beta_c.abs());
            }
        }
        Expected { n, exact, naive, magnitude }
    }

    /// Checks every element of the result read through `got(i, j)`; `what` names the run.
    fn check(&self, what: &str, got: impl Fn(usize, usize) -> f32) -> Result<(), TestCaseError> {
        for (idx, &exact) in self.exact.iter().enumerate() {
            let (i, j) = (idx / self.n, idx % self.n);
            let value = got(i, j);
            let bound = tolerance(exact, self.naive[idx], self.magnitude[idx])
                .expect("test data never overflows f32");
            let err = (f64::from(value) - exact).abs();
            prop_assert!(
                err <= bound,
                "{what}: C[{i},{j}] = {value}, exact {exact}, error {err:e} > bound {bound:e} \
                 (naive f32 {}, Σ|terms| {:e})",
                self.naive[idx],
                self.magnitude[idx]
            );
        }
        Ok(())
    }
}

/// Every (ISA, threading) pair this host can run.
fn runs() -> Vec<(IsaKind, Parallelism)> {
    available_isas()
        .into_iter()
        .flat_map(|isa| [(isa, Parallelism::Sequential), (isa, Parallelism::Rayon)])
        .collect()
}

/// `matmul_with` on a copy of `c`: `Rayon` runs inside the 3-thread pool. Panics on `Err`.
fn run(
    (isa, parallelism): (IsaKind, Parallelism),
    alpha: f32,
    a: &Strided,
    b: &Strided,
    beta: f32,
    c: &Strided,
) -> Strided {
    let mut out = c.clone();
    let opts = MatmulOptions { isa: Some(isa), parallelism };
    let mut call = || matmul_with(&opts, alpha, a.view(), b.view(), beta, out.view_mut());
    match parallelism {
        Parallelism::Rayon => pool3().install(call),
        Parallelism::Sequential => call(),
    }
    .unwrap_or_else(|e| panic!("{isa:?} {parallelism:?}: {e}"));
    out
}

/// One property-test case.
#[derive(Clone, Debug)]
struct Case {
    m: usize,
    k: usize,
    n: usize,
    a: Layout,
    b: Layout,
    c: Layout,
    alpha: f32,
    beta: f32,
    seed: u64,
    /// Small integers instead of uniform floats: every product and sum is exact in f32, so the
    /// naive error is 0 and only the floor is left.
    ints: bool,
}

fn cases(dims: impl Strategy<Value = (usize, usize, usize)>) -> impl Strategy<Value = Case> {
    let layout = || select(LAYOUTS.to_vec());
    let scalar = || select(SCALARS.to_vec());
    (dims, (layout(), layout(), layout()), (scalar(), scalar()), any::<u64>(), prop::bool::weighted(0.25))
        .prop_map(|((m, k, n), (a, b, c), (alpha, beta), seed, ints)| Case {
            m,
            k,
            n,
            a,
            b,
            c,
            alpha,
            beta,
            seed,
            ints,
        })
}

/// Runs `case` on every ISA and threading: each result within tolerance of the reference, nothing
/// written outside C's view, and Rayon bit-identical to Sequential.
fn check_case(case: &Case) -> Result<(), TestCaseError> {
    let mut rng = Rng::new(case.seed);
    let value = |rng: &mut Rng| {
        if case.ints { rng.small_int() } else { rng.uniform() }
    };
    let mut a = Strided::new(case.a, case.m, case.k);
    let mut b = Strided::new(case.b, case.k, case.n);
    let mut c = Strided::new(case.c, case.m, case.n);
    a.fill(|| value(&mut rng));
    b.fill(|| value(&mut rng));
    if case.beta == 0.0 {
        // β = 0 must not read C: garbage here must not reach the result.
        c.fill(|| f32::NAN);
    } else {
        c.fill(|| value(&mut rng));
    }
    let expected = Expected::new(case.alpha, a.view(), b.view(), case.beta, |i, j| c.at(i, j));
    for isa in available_isas() {
        let seq = run((isa, Parallelism::Sequential), case.alpha, &a, &b, case.beta, &c);
        expected.check(&format!("{isa:?} sequential"), |i, j| seq.at(i, j))?;
        prop_assert!(seq.outside_untouched(), "{isa:?}: wrote outside C's view");
        let par = run((isa, Parallelism::Rayon), case.alpha, &a, &b, case.beta, &c);
        prop_assert!(par.bits() == seq.bits(), "{isa:?}: 3 rayon threads differ from sequential");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(1024) })]

    /// Every combination of edge sizes, layouts and scalars.
    #[test]
    fn matches_reference_on_edge_sizes(
        case in cases((select(SIZES.to_vec()), select(SIZES.to_vec()), select(SIZES.to_vec())))
    ) {
        check_case(&case)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Several IC blocks (m > MC), several PC blocks (k > KC, so β applies once and later blocks
    /// accumulate), and several JC blocks (n > NC, with a cheap m and k).
    #[test]
    fn matches_reference_beyond_cache_blocks(
        case in cases(prop_oneof![
            (select(vec![mc() + 1, 2 * mc() + 8]), select(vec![kc() + 1, kc() + 44]), select(vec![1, 5, 17, 33, 65])),
            (select(vec![1, 7]), select(vec![1, 17]), Just(nc() + NR + 3)),
        ])
    ) {
        check_case(&case)?;
    }
}

/// The largest cache blocks of any ISA this CPU has: sizes past them cross every ISA's blocks.
fn largest_blocks() -> Blocking {
    let all: Vec<Blocking> = Isa::available().into_iter().map(Blocking::of).collect();
    let most = |f: fn(&Blocking) -> usize| all.iter().map(f).max().expect("portable is always available");
    Blocking { mc: most(|b| b.mc), kc: most(|b| b.kc), nc: most(|b| b.nc), ..all[0] }
}
fn mc() -> usize {
    largest_blocks().mc
}
fn kc() -> usize {
    largest_blocks().kc
}
fn nc() -> usize {
    largest_blocks().nc
}

/// A case with the given shape and scalars; layouts row-major unless given.
fn case(m: usize, k: usize, n: usize, alpha: f32, beta: f32) -> Case {
    Case {
        m,
        k,
        n,
        a: Layout::RowMajor,
        b: Layout::RowMajor,
        c: Layout::RowMajor,
        alpha,
        beta,
        seed: (m * 1_000_003 + k * 1009 + n) as u64,
        ints: false,
    }
}

/// β = 0 with C full of NaN (and of infinities): the result is finite and right, on full register
/// tiles (the store-from-registers path), on edge tiles and past KC, in every C layout.
#[test]
fn beta_zero_never_reads_c() {
    for (m, k, n) in [
        (2 * MR, 9, 2 * NR),
        (37, 19, 41),
        (2 * mc() + 8, kc() + 44, 33),
        (2 * MR + 1, kc() + 44, 3 * NR + 5),
    ] {
        for layout in LAYOUTS {
            let case = Case { c: layout, ..case(m, k, n, -2.3, 0.0) };
            check_case(&case).unwrap();
        }
    }
    let mut a = Strided::new(Layout::RowMajor, 7, 5);
    let mut b = Strided::new(Layout::ColMajor, 5, 18);
    let mut c = Strided::new(Layout::RowMajor, 7, 18);
    a.fill(|| 1.0);
    b.fill(|| 1.0);
    c.fill(|| f32::INFINITY);
    for r in runs() {
        let out = run(r, 1.0, &a, &b, 0.0, &c);
        assert!((0..7).all(|i| (0..18).all(|j| out.at(i, j) == 5.0)), "{r:?}");
    }
}

/// `k = 0`: C ← β·C exactly (a single f32 multiply), and C ← 0 without reading it when β = 0.
#[test]
fn k_zero_scales_c() {
    let (m, n) = (9, 21);
    let (a, b) = (Strided::new(Layout::RowMajor, m, 0), Strided::new(Layout::ColMajor, 0, n));
    for beta in SCALARS {
        let mut c = Strided::new(Layout::PaddedRows, m, n);
        let mut rng = Rng::new(7);
        c.fill(|| if beta == 0.0 { f32::NAN } else { rng.uniform() });
        for r in runs() {
            let out = run(r, 1.5, &a, &b, beta, &c);
            for i in 0..m {
                for j in 0..n {
                    let want = if beta == 0.0 { 0.0 } else { beta * c.at(i, j) };
                    assert_eq!(out.at(i, j).to_bits(), want.to_bits(), "{r:?} β={beta}");
                }
            }
            assert!(out.outside_untouched());
        }
    }
}

/// `m = 0` or `n = 0`: nothing to do, nothing written (C views with strides that the overlap check
/// accepts; see [`dense_constructors_accept_empty_outputs`] for the dense constructors).
#[test]
fn empty_outputs_are_a_no_op() {
    for (m, k, n) in [(0, 5, 7), (7, 5, 0), (0, 0, 0), (0, 3, 0)] {
        let (a, b) = (vec![1.0; m * k], vec![1.0; k * n]);
        let a = MatRef::new(&a, m, k, k.max(1), 1).unwrap();
        let b = MatRef::new(&b, k, n, n.max(1), 1).unwrap();
        let mut c = vec![SENTINEL; 4];
        for (isa, parallelism) in runs() {
            let opts = MatmulOptions { isa: Some(isa), parallelism };
            let c_view = MatMut::new(&mut c, m, n, n.max(1), 1).unwrap();
            matmul_with(&opts, 2.0, a, b, 0.0, c_view).unwrap();
            assert!(c.iter().all(|&x| x == SENTINEL), "{m}×{k}×{n} {isa:?}");
        }
    }
}

/// A dense output with no elements (`m × 0` row-major, `0 × n` column-major) has no two indices
/// sharing an element, so the dense constructors must accept it, as they do for inputs.
#[test]
fn dense_constructors_accept_empty_outputs() {
    let mut empty: [f32; 0] = [];
    for (rows, cols) in [(0, 0), (0, 3), (3, 0), (1, 0), (0, 1)] {
        assert!(MatRef::row_major(&empty, rows, cols).is_ok());
        assert!(MatRef::col_major(&empty, rows, cols).is_ok());
        let row_major = MatMut::row_major(&mut empty, rows, cols);
        assert!(row_major.is_ok(), "row-major {rows}×{cols}: {row_major:?}");
        let col_major = MatMut::col_major(&mut empty, rows, cols);
        assert!(col_major.is_ok(), "col-major {rows}×{cols}: {col_major:?}");
    }
    // And so the documented no-op goes through the dense constructors too.
    let (a, b) = ([1.0f32; 6], []);
    let mut c: [f32; 0] = [];
    let c_view = MatMut::row_major(&mut c, 3, 0).expect("3×0 row-major output");
    matmul(1.0, MatRef::row_major(&a, 3, 2).unwrap(), MatRef::row_major(&b, 2, 0).unwrap(), 0.0, c_view)
        .unwrap();
}

/// The sum order of every element is fixed by the shapes, so any thread count gives the same bits.
#[test]
fn results_do_not_depend_on_thread_count() {
    let (m, k, n) = (300, 300, 300);
    for (c_layout, alpha, beta) in [(Layout::RowMajor, 1.0, 0.0), (Layout::ColMajor, -2.3, 0.5)] {
        let mut rng = Rng::new(300);
        let mut a = Strided::new(Layout::RowMajor, m, k);
        let mut b = Strided::new(Layout::RowMajor, k, n);
        let mut c = Strided::new(c_layout, m, n);
        a.fill(|| rng.uniform());
        b.fill(|| rng.uniform());
        c.fill(|| rng.uniform());
        for isa in available_isas() {
            let seq = run((isa, Parallelism::Sequential), alpha, &a, &b, beta, &c);
            for threads in 1..=3 {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let mut out = c.clone();
                let opts = MatmulOptions { isa: Some(isa), parallelism: Parallelism::Rayon };
                pool.install(|| matmul_with(&opts, alpha, a.view(), b.view(), beta, out.view_mut())).unwrap();
                assert!(
                    out.bits() == seq.bits(),
                    "{isa:?} {c_layout:?}: {threads} threads differ from sequential"
                );
            }
        }
    }
}

/// IEEE propagation: a NaN in A makes its row of C NaN, an infinity in B makes its column of C
/// infinite (every A entry it meets is positive), and every other element stays finite.
#[test]
fn nan_and_infinity_propagate_to_their_row_and_column() {
    let (m, k, n) = (13, 20, 37);
    let mut rng = Rng::new(13);
    let mut a = Strided::new(Layout::ColMajor, m, k);
    let mut b = Strided::new(Layout::RowMajor, k, n);
    a.fill(|| 1.0 + rng.uniform().abs());
    b.fill(|| rng.uniform());
    let c = Strided::new(Layout::RowMajor, m, n);
    let (nan_row, inf_col) = (4, 17);
    let o = a.offset(nan_row, 7);
    a.data[o] = f32::NAN;
    let o = b.offset(3, inf_col);
    b.data[o] = f32::INFINITY;
    for r in runs() {
        let out = run(r, 0.5, &a, &b, 0.0, &c);
        for i in 0..m {
            for j in 0..n {
                let x = out.at(i, j);
                if i == nan_row {
                    assert!(x.is_nan(), "{r:?} C[{i},{j}] = {x}");
                } else if j == inf_col {
                    assert_eq!(x, f32::INFINITY, "{r:?} C[{i},{j}]");
                } else {
                    assert!(x.is_finite(), "{r:?} C[{i},{j}] = {x}");
                }
            }
        }
    }
}

/// Inputs may repeat elements (stride 0 broadcasts a row or a column); only outputs must not.
#[test]
fn broadcast_input_strides_are_allowed() {
    let (m, k, n) = (23, 19, 29);
    let mut rng = Rng::new(23);
    let a_row: Vec<f32> = (0..k).map(|_| rng.uniform()).collect();
    let b_col: Vec<f32> = (0..k).map(|_| rng.uniform()).collect();
    let a = MatRef::new(&a_row, m, k, 0, 1).unwrap();
    let b = MatRef::new(&b_col, k, n, 1, 0).unwrap();
    let expected = Expected::new(1.0, a, b, 0.0, |_, _| unreachable!());
    for (isa, parallelism) in runs() {
        let mut c = vec![f32::NAN; m * n];
        let opts = MatmulOptions { isa: Some(isa), parallelism };
        let c_view = MatMut::row_major(&mut c, m, n).unwrap();
        pool3().install(|| matmul_with(&opts, 1.0, a, b, 0.0, c_view)).unwrap();
        expected.check(&format!("{isa:?} {parallelism:?}"), |i, j| c[i * n + j]).unwrap();
    }
}

/// Calls `matmul_with` on every ISA and threading with the given views and expects `Err`; checks
/// that the output buffer was not touched.
fn expect_error(
    (ar, ac): (usize, usize),
    (br, bc): (usize, usize),
    (cr, cc): (usize, usize),
    is_expected: impl Fn(&Error) -> bool,
) {
    let (a, b) = (vec![1.0; ar * ac], vec![1.0; br * bc]);
    let mut c = vec![SENTINEL; cr * cc];
    for (isa, parallelism) in runs() {
        let opts = MatmulOptions { isa: Some(isa), parallelism };
        let err = matmul_with(
            &opts,
            1.0,
            MatRef::row_major(&a, ar, ac).unwrap(),
            MatRef::row_major(&b, br, bc).unwrap(),
            0.0,
            MatMut::row_major(&mut c, cr, cc).unwrap(),
        )
        .expect_err("mismatched shapes must be refused");
        assert!(is_expected(&err), "{isa:?}: unexpected error {err:?}");
        assert!(c.iter().all(|&x| x == SENTINEL), "an Err wrote to C");
    }
}

#[test]
fn shape_mismatch_inner_dimension() {
    expect_error((3, 4), (5, 2), (3, 2), |e| matches!(e, Error::ShapeMismatch(_)));
}

#[test]
fn shape_mismatch_rows_of_c() {
    expect_error((3, 4), (4, 2), (2, 2), |e| matches!(e, Error::ShapeMismatch(_)));
}

#[test]
fn shape_mismatch_cols_of_c() {
    expect_error((3, 4), (4, 2), (3, 3), |e| matches!(e, Error::ShapeMismatch(_)));
}

/// Views that need one element more than the slice has are refused, for both view types and all
/// constructors; the exact fit is accepted.
#[test]
fn out_of_bounds_views_are_refused() {
    let mut data = [0.0f32; 12];
    let oob = |r: crate::Result<()>| matches!(r, Err(Error::OutOfBounds(_)));
    assert!(MatRef::new(&data, 3, 4, 4, 1).is_ok());
    assert!(oob(MatRef::new(&data[..11], 3, 4, 4, 1).map(drop)));
    assert!(oob(MatRef::new(&data, 3, 4, 5, 1).map(drop)));
    assert!(oob(MatRef::row_major(&data[..11], 3, 4).map(drop)));
    assert!(oob(MatRef::col_major(&data[..11], 3, 4).map(drop)));
    assert!(oob(MatRef::new(&data, 4, 3, 1, 5).map(drop)));
    assert!(MatMut::new(&mut data, 3, 4, 4, 1).is_ok());
    assert!(oob(MatMut::new(&mut data[..11], 3, 4, 4, 1).map(drop)));
    assert!(oob(MatMut::row_major(&mut data[..11], 3, 4).map(drop)));
    assert!(oob(MatMut::col_major(&mut data[..11], 3, 4).map(drop)));
    // Out of bounds takes precedence over overlap: the strides are not even looked at for overlap.
    assert!(oob(MatMut::new(&mut data, 3, 4, 0, 9).map(drop)));
}

/// Strides and shapes whose extent overflows `usize` are out of bounds, never a wrapped offset.
#[test]
fn overflowing_strides_are_refused() {
    let mut data = [0.0f32; 16];
    let oob = |r: crate::Result<()>| matches!(r, Err(Error::OutOfBounds(_)));
    let huge = [usize::MAX, usize::MAX / 2 + 1, usize::MAX / 3 + 1];
    for s in huge {
        assert!(oob(MatRef::new(&data, 3, 2, s, 1).map(drop)), "row stride {s}");
        assert!(oob(MatRef::new(&data, 2, 3, 1, s).map(drop)), "col stride {s}");
        assert!(oob(MatRef::new(&data, 3, 3, s, s).map(drop)), "both {s}");
        assert!(oob(MatMut::new(&mut data, 3, 2, s, 1).map(drop)), "mut row stride {s}");
        assert!(oob(MatMut::new(&mut data, 2, 3, 1, s).map(drop)), "mut col stride {s}");
    }
    assert!(oob(MatRef::new(&data, usize::MAX, 2, 1, 1).map(drop)));
    assert!(oob(MatRef::new(&data, 2, usize::MAX, 1, 1).map(drop)));
    assert!(oob(MatRef::row_major(&data, usize::MAX, usize::MAX).map(drop)));
    assert!(oob(MatMut::row_major(&mut data, usize::MAX, 3).map(drop)));
    // A single row or column never multiplies the unused stride: huge is fine there.
    assert!(MatRef::new(&data, 1, 4, usize::MAX, 1).is_ok());
    assert!(MatMut::new(&mut data, 4, 1, 1, usize::MAX).is_ok());
}

/// Output strides that send two indices to one element are refused; interleaved but distinct
/// ones are accepted.
#[test]
fn overlapping_outputs_are_refused() {
    let mut data = [0.0f32; 32];
    let overlap = |r: crate::Result<()>| matches!(r, Err(Error::OverlappingOutput(_)));
    for (rows, cols, rs, cs) in [
        (2, 3, 0, 1), // every row the same
        (3, 2, 1, 0), // every column the same
        (2, 2, 1, 1), // (0, 1) and (1, 0)
        (3, 3, 2, 1), // row 1 starts inside row 0
        (1, 4, 5, 0), // a single row with a zero column stride
        (4, 1, 0, 5), // a single column with a zero row stride
        (2, 2, 0, 0),
    ] {
        assert!(
            overlap(MatMut::new(&mut data, rows, cols, rs, cs).map(drop)),
            "{rows}×{cols} strides ({rs}, {cs})"
        );
        // The same strides are fine for an input.
        assert!(MatRef::new(&data, rows, cols, rs, cs).is_ok());
    }
    for (rows, cols, rs, cs) in [(2, 3, 1, 2), (3, 2, 2, 1), (4, 4, 8, 2), (1, 1, 0, 0)] {
        assert!(MatMut::new(&mut data, rows, cols, rs, cs).is_ok(), "{rows}×{cols} strides ({rs}, {cs})");
    }
}

#[test]
fn unknown_isa_names_are_refused() {
    for name in ["sse9", "", "avx512bw", "portable2"] {
        assert!(matches!(parse_isa(name), Err(Error::UnsupportedIsa(_))), "{name:?}");
    }
    assert_eq!(parse_isa(" Portable "), Ok(IsaKind::Portable));
    for name in ["avx2", "AVX2FMA", "avx2+fma"] {
        assert_eq!(parse_isa(name), Ok(IsaKind::Avx2Fma), "{name:?}");
    }
    for name in ["avx512", "AVX512F"] {
        assert_eq!(parse_isa(name), Ok(IsaKind::Avx512), "{name:?}");
    }
}

/// An ISA this CPU lacks is an error, not a crash (nothing to check on a CPU that has them all).
#[test]
fn missing_isas_are_refused() {
    let available = available_isas();
    assert_eq!(available.first(), Some(&IsaKind::Portable));
    for isa in IsaKind::ALL.into_iter().filter(|k| !available.contains(k)) {
        let (a, b) = ([1.0f32; 4], [1.0f32; 4]);
        let mut c = [SENTINEL; 4];
        let opts = MatmulOptions { isa: Some(isa), parallelism: Parallelism::Sequential };
        let err = matmul_with(
            &opts,
            1.0,
            MatRef::row_major(&a, 2, 2).unwrap(),
            MatRef::row_major(&b, 2, 2).unwrap(),
            0.0,
            MatMut::row_major(&mut c, 2, 2).unwrap(),
        );
        assert!(matches!(err, Err(Error::UnsupportedIsa(_))), "{isa:?}");
        assert_eq!(c, [SENTINEL; 4]);
    }
}

/// Row blocks for threads: whole strips but the last, sizes within one strip of each other, the
/// asked-for count, and every row once.
#[test]
fn row_blocks_are_even_whole_strips() {
    for (m, blocks, mr) in [(2048, 12, 12), (2048, 11, 12), (1, 2, 12), (13, 4, 6), (100, 3, 1), (7, 9, 6)] {
        let sizes: Vec<usize> = crate::matmul::even_row_blocks(m, blocks, mr).collect();
        let (first, last) = (sizes[0], *sizes.last().unwrap());
        assert_eq!(sizes.iter().sum::<usize>(), m, "{m} rows in {blocks}");
        assert_eq!(sizes.len(), blocks.min(m.div_ceil(mr)), "{m} rows in {blocks}");
        assert!(sizes[..sizes.len() - 1].iter().all(|&s| s % mr == 0 && first - s <= mr), "{sizes:?}");
        assert!(last > 0 && last <= first, "{sizes:?}");
    }
    assert_eq!(
        crate::matmul::even_row_blocks(2048, 12, 12).collect::<Vec<_>>(),
        [180, 180, 180, 168, 168, 168, 168, 168, 168, 168, 168, 164]
    );
}
