//! Malformed calls at every public entry point but the KV cache and the multi-head layer (those
//! have `bad_input_cache.rs`): shapes that do not fit, strides that overflow or overlap, broadcast
//! dims that do not broadcast, NaN and infinite parameters, zero-sized and absurdly large dims.
//!
//! Each call runs inside `catch_unwind`: the safe crate must answer with the documented `Err` (or
//! the documented `Ok`) and leave its outputs untouched, never panic or abort. The kernels crate
//! documents panics for broken preconditions; its cases check that the panic is the documented one
//! and that nothing wraps silently.

use flashcpu::{
    AttentionParams, Error, IsaKind, MatMut, MatRef, Rope, RopeStyle, View4, View4Mut, Window,
    available_isas, matmul, matmul_with, merge, parse_isa,
};
use flashcpu::{MatmulOptions, attention, attention_with_lse};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// A value no computation produces: an output element that still holds it was not written.
const SENTINEL: f32 = -1234.5;

/// A dimension whose products with any other non-zero dimension overflow `usize`.
const HUGE: usize = 1 << 62;

/// Runs `f`, which must not panic, and returns its result.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| panic!("{what}: panicked"))
}

/// Runs `f`, which must panic (a documented precondition of the kernels crate).
fn panics(what: &str, f: impl FnOnce()) {
    assert!(catch_unwind(AssertUnwindSafe(f)).is_err(), "{what}: did not panic");
}

fn out_of_bounds<T>(r: &flashcpu::Result<T>) -> bool {
    matches!(r, Err(Error::OutOfBounds(_)))
}
fn overlapping<T>(r: &flashcpu::Result<T>) -> bool {
    matches!(r, Err(Error::OverlappingOutput(_)))
}
fn mismatch<T>(r: &flashcpu::Result<T>) -> bool {
    matches!(r, Err(Error::ShapeMismatch(_)))
}
fn invalid<T>(r: &flashcpu::Result<T>) -> bool {
    matches!(r, Err(Error::InvalidParameter(_)))
}
fn out_of_memory<T>(r: &flashcpu::Result<T>) -> bool {
    matches!(r, Err(Error::OutOfMemory(_)))
}

/// Asserts that `f` returns an `Err` that `kind` accepts, without panicking.
fn refused<T: std::fmt::Debug>(
    what: &str,
    kind: fn(&flashcpu::Result<T>) -> bool,
    f: impl FnOnce() -> flashcpu::Result<T>,
) {
    let r = no_panic(what, f);
    assert!(kind(&r), "{what}: got {r:?}");
}

fn untouched(what: &str, data: &[f32]) {
    assert!(data.iter().all(|x| x.to_bits() == SENTINEL.to_bits()), "{what}: an Err wrote to the output");
}

// ---------------------------------------------------------------------------------------------
// Views

#[test]
fn matrix_views_refuse_what_does_not_fit() {
    let data = vec![0.0f32; 12];
    refused("MatRef one short", out_of_bounds, || MatRef::new(&data[..11], 3, 4, 4, 1));
    refused("MatRef row-major short", out_of_bounds, || MatRef::row_major(&data, 4, 4));
    refused("MatRef col-major short", out_of_bounds, || MatRef::col_major(&data, 5, 3));
    refused("MatRef stride overflow", out_of_bounds, || MatRef::new(&data, 2, 2, usize::MAX, 1));
    refused("MatRef row·stride overflow", out_of_bounds, || MatRef::new(&data, HUGE, 2, 8, 1));
    refused("MatRef rows·cols overflow", out_of_bounds, || MatRef::row_major(&data, HUGE, HUGE));
    let mut out = vec![0.0f32; 12];
    refused("MatMut one short", out_of_bounds, || MatMut::new(&mut out[..11], 3, 4, 4, 1).map(drop));
    refused("MatMut stride overflow", out_of_bounds, || MatMut::new(&mut out, 2, 2, 1, usize::MAX).map(drop));
    refused("MatMut rows·cols overflow", out_of_bounds, || MatMut::row_major(&mut out, HUGE, 4).map(drop));
}

#[test]
fn matrix_views_refuse_overlapping_outputs() {
    let mut out = vec![0.0f32; 16];
    refused("MatMut unit strides both ways", overlapping, || MatMut::new(&mut out, 2, 2, 1, 1).map(drop));
    refused("MatMut zero row stride", overlapping, || MatMut::new(&mut out, 3, 2, 0, 1).map(drop));
    refused("MatMut zero column stride", overlapping, || MatMut::new(&mut out, 2, 3, 4, 0).map(drop));
    refused("MatMut rows interleave columns", overlapping, || MatMut::new(&mut out, 3, 3, 2, 1).map(drop));
    // Overlap in the read-only view is a broadcast, which is fine.
    no_panic("MatRef zero strides", || MatRef::new(&[1.0], 5, 5, 0, 0)).unwrap();
}

#[test]
fn empty_matrix_views_need_no_storage() {
    for (rows, cols) in [(0, HUGE), (HUGE, 0), (0, 0)] {
        let what = format!("{rows}×{cols}");
        no_panic(&what, || MatRef::new(&[], rows, cols, usize::MAX, usize::MAX)).unwrap();
        no_panic(&what, || MatMut::new(&mut [], rows, cols, usize::MAX, usize::MAX).map(drop)).unwrap();
        no_panic(&what, || MatRef::row_major(&[], rows, cols)).unwrap();
    }
    let m = MatRef::row_major(&[1.0, 2.0], 1, 2).unwrap();
    assert_eq!((m.get(1, 0), m.get(0, 2), m.get(usize::MAX, usize::MAX)), (None, None, None));
}

/// The dense constructors multiply the shape out with checked arithmetic: an element count past
/// `usize::MAX` is `OutOfBounds`, in a debug build too (it used to overflow there, and wrap in a
/// release build).
#[test]
fn dense_tensor_views_refuse_overflowing_shapes() {
    let data = vec![0.0f32; 64];
    let bools = vec![true; 64];
    for shape in [[1, HUGE, 4, 4], [1, 4, HUGE, 4], [2, 2, 2, HUGE], [HUGE, HUGE, 1, 1]] {
        let what = format!("{shape:?}");
        refused(&format!("View4::bhld {what}"), out_of_bounds, || View4::bhld(&data, shape));
        refused(&format!("View4::blhd {what}"), out_of_bounds, || View4::blhd(&data, shape));
        refused(&format!("bool bhld {what}"), out_of_bounds, || View4::bhld(&bools, shape));
        let mut out = data.clone();
        refused(&format!("View4Mut::bhld {what}"), out_of_bounds, || {
            View4Mut::bhld(&mut out, shape).map(drop)
        });
        refused(&format!("View4Mut::blhd {what}"), out_of_bounds, || {
            View4Mut::blhd(&mut out, shape).map(drop)
        });
    }
    refused("View4::new stride overflow", out_of_bounds, || {
        View4::new(&data, [2, 2, 2, 2], [usize::MAX, 1, 1, 1])
    });
    refused("View4::new one short", out_of_bounds, || View4::new(&data[..15], [1, 2, 2, 4], [16, 8, 4, 1]));
    refused("View4::bhld one short", out_of_bounds, || View4::bhld(&data[..63], [1, 4, 4, 4]));
    refused("View4::blhd one short", out_of_bounds, || View4::blhd(&data[..63], [1, 4, 4, 4]));
}

#[test]
fn tensor_views_refuse_overlapping_outputs() {
    let mut out = vec![0.0f32; 64];
    let shape = [2, 2, 2, 4];
    refused("heads share a stride", overlapping, || View4Mut::new(&mut out, shape, [16, 4, 4, 1]).map(drop));
    refused("batch stride 0", overlapping, || View4Mut::new(&mut out, shape, [0, 8, 4, 1]).map(drop));
    refused("rows overlap dims", overlapping, || View4Mut::new(&mut out, shape, [16, 8, 2, 1]).map(drop));
    no_panic("padded strides", || View4Mut::new(&mut out, shape, [32, 16, 5, 1]).map(drop)).unwrap();
}

/// A tensor without elements needs no storage, whatever its other dimensions.
#[test]
fn empty_tensor_views_need_no_storage() {
    for shape in [[1, 1, HUGE, 0], [0, HUGE, HUGE, HUGE], [HUGE, 0, 7, 3], [1, HUGE, 0, HUGE]] {
        let what = format!("{shape:?}");
        no_panic(&what, || View4::<f32>::bhld(&[], shape)).unwrap();
        no_panic(&what, || View4::<f32>::blhd(&[], shape)).unwrap();
        no_panic(&what, || View4Mut::bhld(&mut [], shape).map(drop)).unwrap();
        no_panic(&what, || View4Mut::blhd(&mut [], shape).map(drop)).unwrap();
    }
}

/// `blhd` takes the logical `[b, h, l, d]` shape like `bhld`: the same tensor stored in either
/// memory order gives the same attention, bit for bit.
#[test]
fn blhd_takes_the_logical_shape() {
    let shape @ [_, heads, len, dim] = [1, 2, 3, 2];
    let index = |h: usize, l: usize, d: usize| [(h * len + l) * dim + d, (l * heads + h) * dim + d];
    let mut bhld = vec![0.0f32; 12];
    let mut blhd = vec![0.0f32; 12];
    let all = || (0..heads).flat_map(|h| (0..len).flat_map(move |l| (0..dim).map(move |d| (h, l, d))));
    for (h, l, d) in all() {
        let [a, b] = index(h, l, d);
        (bhld[a], blhd[b]) = ((h * 7 + l * 3 + d) as f32 / 8.0, (h * 7 + l * 3 + d) as f32 / 8.0);
    }
    let run = |x: View4<'_>, out: View4Mut<'_>| attention(x, x, x, out, &AttentionParams::default());
    let (mut out_bhld, mut out_blhd) = (vec![SENTINEL; 12], vec![SENTINEL; 12]);
    run(View4::bhld(&bhld, shape).unwrap(), View4Mut::bhld(&mut out_bhld, shape).unwrap()).unwrap();
    run(View4::blhd(&blhd, shape).unwrap(), View4Mut::blhd(&mut out_blhd, shape).unwrap()).unwrap();
    for (h, l, d) in all() {
        let [a, b] = index(h, l, d);
        assert_eq!(out_bhld[a].to_bits(), out_blhd[b].to_bits(), "(h {h}, l {l}, d {d})");
    }
}

// ---------------------------------------------------------------------------------------------
// matmul

/// `matmul(alpha, A, B, beta, C)` on fresh dense operands `A: m × k`, `B: kb × n`, `C: mc × nc`;
/// C starts at the sentinel and must stay so on `Err`.
fn call_matmul(
    (m, k): (usize, usize),
    (kb, n): (usize, usize),
    (mc, nc): (usize, usize),
    alpha: f32,
    beta: f32,
) -> flashcpu::Result<Vec<f32>> {
    let (a, b) = (vec![1.0f32; m * k], vec![1.0f32; kb * n]);
    let mut c = vec![SENTINEL; mc * nc];
    let r = matmul(
        alpha,
        MatRef::row_major(&a, m, k)?,
        MatRef::row_major(&b, kb, n)?,
        beta,
        MatMut::row_major(&mut c, mc, nc)?,
    );
    if r.is_err() {
        untouched("matmul", &c);
    }
    r.map(|()| c)
}

#[test]
fn matmul_refuses_shapes_that_do_not_fit() {
    refused("A 2×3 times B 4×2", mismatch, || call_matmul((2, 3), (4, 2), (2, 2), 1.0, 0.0));
    refused("A 2×3 times B 2×2", mismatch, || call_matmul((2, 3), (2, 2), (2, 2), 1.0, 0.0));
    refused("C rows", mismatch, || call_matmul((2, 3), (3, 2), (3, 2), 1.0, 0.0));
    refused("C columns", mismatch, || call_matmul((2, 3), (3, 2), (2, 3), 1.0, 0.0));
    refused("C transposed", mismatch, || call_matmul((2, 3), (3, 4), (4, 2), 1.0, 1.0));
    refused("empty A, C with rows", mismatch, || call_matmul((0, 3), (3, 2), (2, 2), 1.0, 0.0));
}

/// α and β must be finite, like attention's scale: a NaN or infinite factor would turn finite
/// products into NaN (∞·0).
#[test]
fn matmul_refuses_non_finite_factors() {
    for x in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN] {
        refused(&format!("α = {x}"), invalid, || call_matmul((2, 3), (3, 2), (2, 2), x, 0.0));
        refused(&format!("β = {x}"), invalid, || call_matmul((2, 3), (3, 2), (2, 2), 1.0, x));
        refused(&format!("k = 0, β = {x}"), invalid, || call_matmul((2, 0), (0, 2), (2, 2), 1.0, x));
    }
    // Mismatched shapes are reported first.
    refused("α NaN and a shape mismatch", mismatch, || call_matmul((2, 3), (2, 2), (2, 2), f32::NAN, 0.0));
}

#[test]
fn matmul_documented_edge_cases() {
    // k = 0: C = β·C; β = 0 writes zeros over whatever C held.
    let c = no_panic("k = 0", || call_matmul((2, 0), (0, 3), (2, 3), 1.0, 0.0)).unwrap();
    assert!(c.iter().all(|&x| x == 0.0), "k = 0, β = 0: {c:?}");
    // m = 0 or n = 0: nothing to do, whatever the other sizes.
    no_panic("m = 0, huge k", || {
        matmul(
            1.0,
            MatRef::row_major(&[], 0, HUGE)?,
            MatRef::new(&[1.0], HUGE, 3, 0, 0)?,
            0.0,
            MatMut::row_major(&mut [], 0, 3)?,
        )
    })
    .unwrap();
    no_panic("n = 0, huge m", || {
        matmul(
            1.0,
            MatRef::new(&[1.0], HUGE, 2, 0, 0)?,
            MatRef::row_major(&[], 2, 0)?,
            0.0,
            MatMut::row_major(&mut [], HUGE, 0)?,
        )
    })
    .unwrap();
    // NaN in A reaches exactly the rows that read it.
    let (mut a, b) = (vec![1.0f32; 6], vec![1.0f32; 6]);
    a[0] = f32::NAN;
    let mut c = vec![SENTINEL; 4];
    let r = no_panic("NaN in A", || {
        matmul(
            1.0,
            MatRef::row_major(&a, 2, 3)?,
            MatRef::row_major(&b, 3, 2)?,
            0.0,
            MatMut::row_major(&mut c, 2, 2)?,
        )
    });
    r.unwrap();
    assert!(c[0].is_nan() && c[1].is_nan() && c[2] == 3.0 && c[3] == 3.0, "{c:?}");
}

#[test]
fn matmul_refuses_missing_instruction_sets() {
    for kind in IsaKind::ALL.into_iter().filter(|k| !available_isas().contains(k)) {
        let opts = MatmulOptions { isa: Some(kind), ..Default::default() };
        let mut c = vec![SENTINEL; 4];
        let r = no_panic("missing ISA", || {
            matmul_with(
                &opts,
                1.0,
                MatRef::row_major(&[1.0; 4], 2, 2)?,
                MatRef::row_major(&[1.0; 4], 2, 2)?,
                0.0,
                MatMut::row_major(&mut c, 2, 2)?,
            )
        });
        assert!(matches!(r, Err(Error::UnsupportedIsa(_))), "{kind:?}: {r:?}");
        untouched("missing ISA", &c);
    }
}

// ---------------------------------------------------------------------------------------------
// Attention

/// Shapes of a valid call: B = 2, H = 4, H_kv = 2, q_len = 3, kv_len = 5, d = 4, dv = 6.
const Q: [usize; 4] = [2, 4, 3, 4];
const K: [usize; 4] = [2, 2, 5, 4];
const V: [usize; 4] = [2, 2, 5, 6];
const O: [usize; 4] = [2, 4, 3, 6];
const LSE: [usize; 4] = [2, 4, 3, 1];

/// `attention_with_lse` on dense tensors of the given shapes (data broadcast from one element
/// when a shape is absurd), with output and lse at the sentinel, which must survive an `Err`.
fn call(
    q: [usize; 4],
    k: [usize; 4],
    v: [usize; 4],
    out: [usize; 4],
    lse: Option<[usize; 4]>,
    params: &AttentionParams<'_>,
) -> flashcpu::Result<(Vec<f32>, Vec<f32>)> {
    let input = |shape: [usize; 4], data: &'static [f32]| -> View4<'static> {
        match shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).filter(|&n| n <= 1 << 16) {
            Some(n) => {
                View4::bhld(&data[..n.min(data.len())], shape).unwrap_or_else(|_| broadcast(shape, data))
            }
            None => broadcast(shape, data),
        }
    };
    static DATA: [f32; 1 << 12] = [0.25; 1 << 12];
    let mut od = vec![SENTINEL; out.iter().product()];
    let mut ld = lse.map(|s| vec![SENTINEL; s.iter().product()]);
    let result = attention_with_lse(
        input(q, &DATA),
        input(k, &DATA),
        input(v, &DATA),
        View4Mut::bhld(&mut od, out).expect("a dense output"),
        ld.as_deref_mut().zip(lse).map(|(data, s)| View4Mut::bhld(data, s).expect("a dense lse")),
        params,
    );
    if result.is_err() {
        untouched("attention output", &od);
        untouched("attention lse", ld.as_deref().unwrap_or_default());
    }
    result.map(|()| (od, ld.unwrap_or_default()))
}

/// A view of `shape` that reads one element for every index (all strides 0).
fn broadcast(shape: [usize; 4], data: &'static [f32]) -> View4<'static> {
    View4::new(&data[..1], shape, [0; 4]).expect("a broadcast view")
}

fn with<'a>(f: impl FnOnce(&mut AttentionParams<'a>)) -> AttentionParams<'a> {
    let mut p = AttentionParams::default();
    f(&mut p);
    p
}

#[test]
fn attention_refuses_shapes_that_do_not_fit() {
    let p = AttentionParams::default();
    refused("K batch", mismatch, || call(Q, [1, 2, 5, 4], [1, 2, 5, 6], O, Some(LSE), &p));
    refused("V batch", mismatch, || call(Q, K, [3, 2, 5, 6], O, Some(LSE), &p));
    refused("K head dim", mismatch, || call(Q, [2, 2, 5, 5], V, O, Some(LSE), &p));
    refused("V kv_len", mismatch, || call(Q, K, [2, 2, 4, 6], O, Some(LSE), &p));
    refused("V heads", mismatch, || call(Q, K, [2, 1, 5, 6], O, Some(LSE), &p));
    refused("4 heads over 3 KV heads", mismatch, || call(Q, [2, 3, 5, 4], [2, 3, 5, 6], O, None, &p));
    refused("4 heads over 8 KV heads", mismatch, || call(Q, [2, 8, 5, 4], [2, 8, 5, 6], O, None, &p));
    refused("4 heads over 0 KV heads", mismatch, || call(Q, [2, 0, 5, 4], [2, 0, 5, 6], O, None, &p));
    refused("output dv", mismatch, || call(Q, K, V, [2, 4, 3, 5], None, &p));
    refused("output q_len", mismatch, || call(Q, K, V, [2, 4, 4, 6], None, &p));
    refused("output heads", mismatch, || call(Q, K, V, [2, 2, 3, 6], None, &p));
    refused("lse q_len", mismatch, || call(Q, K, V, O, Some([2, 4, 2, 1]), &p));
    refused("lse width 2", mismatch, || call(Q, K, V, O, Some([2, 4, 3, 2]), &p));
    refused("lse heads", mismatch, || call(Q, K, V, O, Some([2, 1, 3, 1]), &p));
}

#[test]
fn attention_refuses_bad_parameters() {
    for scale in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, -1.0] {
        refused(&format!("scale {scale}"), invalid, || {
            call(Q, K, V, O, Some(LSE), &with(|p| p.scale = Some(scale)))
        });
    }
    for cap in [f32::NAN, f32::INFINITY, 0.0, -2.0] {
        refused(&format!("softcap {cap}"), invalid, || {
            call(Q, K, V, O, Some(LSE), &with(|p| p.softcap = Some(cap)))
        });
    }
    let wide = Window { left: Some(usize::MAX), right: Some(0) };
    refused("window past 2^48", invalid, || call(Q, K, V, O, None, &with(|p| p.window = Some(wide))));
    let wide = Window { left: None, right: Some((1 << 48) + 1) };
    refused("right window past 2^48", invalid, || call(Q, K, V, O, None, &with(|p| p.window = Some(wide))));
    refused("one key length for 2 batch entries", mismatch, || {
        call(Q, K, V, O, None, &with(|p| p.key_lengths = Some(&[5])))
    });
    refused("key length past kv_len", invalid, || {
        call(Q, K, V, O, None, &with(|p| p.key_lengths = Some(&[5, 6])))
    });
    refused("3 slopes for 4 heads", mismatch, || {
        call(Q, K, V, O, None, &with(|p| p.alibi_slopes = Some(&[0.5; 3])))
    });
    refused("NaN slope", invalid, || {
        call(Q, K, V, O, None, &with(|p| p.alibi_slopes = Some(&[0.5, f32::NAN, 0.5, 0.5])))
    });
    refused("5 sinks for 4 heads", mismatch, || call(Q, K, V, O, None, &with(|p| p.sinks = Some(&[0.0; 5]))));
    refused("infinite sink", invalid, || {
        call(Q, K, V, O, None, &with(|p| p.sinks = Some(&[0.0, 0.0, f32::INFINITY, 0.0])))
    });
}

#[test]
fn attention_refuses_bias_and_mask_that_do_not_broadcast() {
    let bias = vec![0.0f32; 2 * 4 * 4 * 6];
    let mask = vec![true; 2 * 4 * 4 * 6];
    for shape in [[2, 4, 3, 4], [2, 4, 4, 5], [3, 4, 3, 5], [2, 2, 3, 5], [1, 1, 1, 5], [1, 1, 3, 1]] {
        let b = View4::bhld(&bias, shape).unwrap();
        refused(&format!("bias {shape:?}"), mismatch, || {
            call(Q, K, V, O, Some(LSE), &with(|p| p.bias = Some(b)))
        });
        let m = View4::bhld(&mask, shape).unwrap();
        refused(&format!("mask {shape:?}"), mismatch, || {
            call(Q, K, V, O, Some(LSE), &with(|p| p.mask = Some(m)))
        });
    }
    // Size-1 batch and head dims broadcast.
    let b = View4::bhld(&bias, [1, 1, 3, 5]).unwrap();
    no_panic("bias [1, 1, 3, 5]", || call(Q, K, V, O, Some(LSE), &with(|p| p.bias = Some(b)))).unwrap();
    let m = View4::bhld(&mask, [2, 1, 3, 5]).unwrap();
    no_panic("mask [2, 1, 3, 5]", || call(Q, K, V, O, Some(LSE), &with(|p| p.mask = Some(m)))).unwrap();
}

#[test]
fn attention_refuses_missing_instruction_sets() {
    for kind in IsaKind::ALL.into_iter().filter(|k| !available_isas().contains(k)) {
        let r = call(Q, K, V, O, Some(LSE), &with(|p| p.isa = Some(kind)));
        assert!(matches!(r, Err(Error::UnsupportedIsa(_))), "{kind:?}: {r:?}");
    }
}

/// A call with nothing to write returns at once, whatever its other sizes: no tile lists, no
/// partial results, no scratch sized from the absurd dimension (each used to abort the process
/// on a failed allocation).
#[test]
fn attention_with_nothing_to_write_returns_at_once() {
    let p = AttentionParams::default();
    let (od, ld) = no_panic("Q and out [1, 1, 2^62, 0]", || {
        call([1, 1, HUGE, 0], [1, 1, 5, 0], [1, 1, 5, 0], [1, 1, HUGE, 0], None, &p)
    })
    .unwrap();
    assert!(od.is_empty() && ld.is_empty());
    no_panic("K/V [1, 1, 2^62, 0], one query row", || {
        call([1, 1, 1, 0], [1, 1, HUGE, 0], [1, 1, HUGE, 0], [1, 1, 1, 0], None, &p)
    })
    .unwrap();
    no_panic("huge batch, no heads", || {
        call([HUGE, 0, 3, 4], [HUGE, 0, 5, 4], [HUGE, 0, 5, 6], [HUGE, 0, 3, 6], Some([HUGE, 0, 3, 1]), &p)
    })
    .unwrap();
    no_panic("huge head dims, no query rows", || {
        call([1, 2, 0, HUGE], [1, 1, 5, HUGE], [1, 1, 5, HUGE], [1, 2, 0, HUGE], Some([1, 2, 0, 1]), &p)
    })
    .unwrap();
}

/// A call whose work needs more memory than any machine has is an `Err`, never an abort: here
/// the split-KV partials of 2^62 keys (more than any address space holds), and the scratch of a
/// 2^45-wide head.
#[test]
fn attention_too_large_to_run_is_an_error() {
    let p = AttentionParams::default();
    refused("lse over 2^62 keys", out_of_memory, || {
        call([1, 1, 1, 0], [1, 1, HUGE, 0], [1, 1, HUGE, 0], [1, 1, 1, 0], Some([1, 1, 1, 1]), &p)
    });
    refused("one row over 2^60 broadcast keys", out_of_memory, || {
        call([1, 1, 1, 4], [1, 1, 1 << 60, 4], [1, 1, 1 << 60, 2], [1, 1, 1, 2], None, &p)
    });
    refused("a 2^45-wide head", out_of_memory, || {
        call([1, 1, 1, 1 << 45], [1, 1, 1, 1 << 45], [1, 1, 1, 1], [1, 1, 1, 1], None, &p)
    });
    refused("a 2^45-wide head, prefill", out_of_memory, || {
        call([1, 1, 40, 1 << 45], [1, 1, 3, 1 << 45], [1, 1, 3, 1], [1, 1, 40, 1], Some([1, 1, 40, 1]), &p)
    });
}

#[test]
fn attention_documented_edge_cases() {
    let p = AttentionParams::default();
    // No keys: output 0 and lse −∞ for every row.
    let (od, ld) = no_panic("kv_len 0", || call(Q, [2, 2, 0, 4], [2, 2, 0, 6], O, Some(LSE), &p)).unwrap();
    assert!(od.iter().all(|&x| x == 0.0) && ld.iter().all(|&x| x == f32::NEG_INFINITY));
    // dv = 0 with an lse: the lse is still computed.
    let (_, ld) = no_panic("dv 0", || call(Q, K, [2, 2, 5, 0], [2, 4, 3, 0], Some(LSE), &p)).unwrap();
    assert!(ld.iter().all(|&x| (x - (0.25f32 * 0.25 * 4.0 * 0.5 + 5f32.ln())).abs() < 1e-5), "{ld:?}");
    // Zero query heads and zero KV heads: nothing to do.
    no_panic("no heads", || {
        call([2, 0, 3, 4], [2, 0, 5, 4], [2, 0, 5, 6], [2, 0, 3, 6], Some([2, 0, 3, 1]), &p)
    })
    .unwrap();
    // Key lengths of 0 hide every key; a causal top-left row 0 sees one key.
    let (od, ld) =
        no_panic("key lengths 0", || call(Q, K, V, O, Some(LSE), &with(|p| p.key_lengths = Some(&[0, 0]))))
            .unwrap();
    assert!(od.iter().all(|&x| x == 0.0) && ld.iter().all(|&x| x == f32::NEG_INFINITY));
    // A window of 0 keys on both sides with bottom-right offset 2 still sees its diagonal key.
    let narrow = Window { left: Some(0), right: Some(0) };
    let (od, _) =
        no_panic("window 0", || call(Q, K, V, O, Some(LSE), &with(|p| p.window = Some(narrow)))).unwrap();
    assert!(od.iter().all(|&x| (x - 0.25).abs() < 1e-6), "{od:?}");
}

/// NaN and ∞ in visible inputs reach only the rows that read them, and a hidden key's NaN never.
#[test]
fn attention_propagates_non_finite_inputs_only_where_visible() {
    let q = vec![0.5f32; 2 * 4];
    let mut k = vec![0.5f32; 3 * 4];
    let mut v = vec![1.0f32; 3 * 4];
    k[8] = f32::NAN; // key 2
    v[8] = f32::INFINITY;
    let mut out = vec![SENTINEL; 2 * 4];
    let mask = [true, true, false, true, true, true];
    let params = with(|p| p.mask = Some(View4::bhld(&mask, [1, 1, 2, 3]).unwrap()));
    no_panic("NaN key", || {
        attention(
            View4::bhld(&q, [1, 1, 2, 4])?,
            View4::bhld(&k, [1, 1, 3, 4])?,
            View4::bhld(&v, [1, 1, 3, 4])?,
            View4Mut::bhld(&mut out, [1, 1, 2, 4])?,
            &params,
        )
    })
    .unwrap();
    assert!(out[..4].iter().all(|&x| x == 1.0), "row 0 hides key 2: {:?}", &out[..4]);
    assert!(out[4..].iter().all(|x| x.is_nan()), "row 1 sees key 2: {:?}", &out[4..]);
}

// ---------------------------------------------------------------------------------------------
// merge

#[test]
fn merge_refuses_parts_that_do_not_fit() {
    let check = |what: &str, (na, la, nb, lb, dv): (usize, usize, usize, usize, usize)| {
        let (mut out_a, mut lse_a) = (vec![SENTINEL; na], vec![SENTINEL; la]);
        let (out_b, lse_b) = (vec![0.0f32; nb], vec![0.0f32; lb]);
        refused(what, mismatch, || merge(&mut out_a, &mut lse_a, &out_b, &lse_b, dv));
        untouched(what, &out_a);
        untouched(what, &lse_a);
    };
    check("lse lengths differ", (6, 2, 6, 3, 3));
    check("out_a short", (5, 2, 6, 2, 3));
    check("out_b long", (6, 2, 7, 2, 3));
    check("dv disagrees", (6, 2, 6, 2, 2));
    check("rows·dv overflows", (0, 2, 0, 2, usize::MAX));
    check("dv 0 with outputs", (2, 2, 2, 2, 0));
}

#[test]
fn merge_documented_edge_cases() {
    // Two parts that saw no key: output 0, lse −∞.
    let (mut out_a, mut lse_a) = (vec![7.0f32; 2], vec![f32::NEG_INFINITY]);
    no_panic("both empty", || merge(&mut out_a, &mut lse_a, &[f32::NAN, 1.0], &[f32::NEG_INFINITY], 2))
        .unwrap();
    assert_eq!((out_a, lse_a[0]), (vec![0.0, 0.0], f32::NEG_INFINITY));
    // A part with weight 0 contributes nothing, even NaN.
    let (mut out_a, mut lse_a) = (vec![1.0f32, 2.0], vec![0.0]);
    no_panic("empty B", || {
        merge(&mut out_a, &mut lse_a, &[f32::NAN, f32::INFINITY], &[f32::NEG_INFINITY], 2)
    })
    .unwrap();
    assert_eq!((out_a, lse_a[0]), (vec![1.0, 2.0], 0.0));
    // No rows, any dv.
    no_panic("no rows", || merge(&mut [], &mut [], &[], &[], usize::MAX)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Rope and parse_isa

#[test]
fn rope_refuses_bad_parameters() {
    for base in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.0, 0.5, 0.0, -10_000.0] {
        let rope = Rope { style: RopeStyle::HalfSplit, base };
        refused(&format!("base {base}"), invalid, || rope.validate(64));
    }
    for d in [1, 3, 127] {
        let rope = Rope { style: RopeStyle::Interleaved, base: 10_000.0 };
        refused(&format!("head dim {d}"), invalid, || rope.validate(d));
    }
    no_panic("head dim 0", || Rope { style: RopeStyle::HalfSplit, base: 10_000.0 }.validate(0)).unwrap();
}

/// `Rope::angles` and `Rope::rotate` document a panic when their slices disagree in length.
#[test]
fn rope_slices_must_agree() {
    let rope = Rope { style: RopeStyle::HalfSplit, base: 10_000.0 };
    let (mut cos, mut sin) = (vec![0.0f32; 4], vec![0.0f32; 3]);
    panics("angles with 4 cos and 3 sin", || rope.angles(5, &mut cos, &mut sin));
    let (cos, sin) = (vec![1.0f32; 4], vec![0.0f32; 4]);
    let mut x = vec![1.0f32; 7];
    panics("rotate 7 over 4 angles", || rope.rotate(&mut x, &cos, &sin));
    panics("rotate 8 over 4 cos and 3 sin", || rope.rotate(&mut [0.0; 8], &cos, &sin[..3]));
    // Position 0 rotates by nothing; huge positions stay finite.
    let mut x = vec![0.5f32; 8];
    let (mut c, mut s) = (vec![0.0f32; 4], vec![0.0f32; 4]);
    rope.angles(usize::MAX, &mut c, &mut s);
    rope.rotate(&mut x, &c, &s);
    assert!(x.iter().all(|v| v.is_finite()), "{x:?}");
}

#[test]
fn parse_isa_refuses_unknown_names() {
    for name in ["", " ", "sse9", "avx", "avx-512", "portable\0", "neon", "avx2fma512"] {
        let r = no_panic(name, || parse_isa(name));
        assert!(matches!(r, Err(Error::UnsupportedIsa(_))), "{name:?}: {r:?}");
    }
    for (name, kind) in
        [("AVX512", IsaKind::Avx512), (" portable ", IsaKind::Portable), ("Avx2", IsaKind::Avx2Fma)]
    {
        assert_eq!(no_panic(name, || parse_isa(name)), Ok(kind), "{name:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The kernels crate: views return `None` where the safe crate returns `Err`; the rest documents
// panics for broken preconditions, which must come as panics rather than wrapped arithmetic.

mod kernels {
    use super::{HUGE, no_panic, panics};
    use flashcpu_kernels::gemm::{Lhs, PackedB, macro_kernel};
    use flashcpu_kernels::view::{View4, View4Mut};
    use flashcpu_kernels::{Isa, MatMut, MatRef};

    #[test]
    fn views_refuse_what_does_not_fit() {
        let data = [0.0f32; 16];
        assert!(MatRef::new(&data, 2, 2, usize::MAX, 1).is_none());
        assert!(MatRef::new(&data, HUGE, HUGE, 1, 1).is_none());
        assert!(MatRef::new(&data[..15], 4, 4, 4, 1).is_none());
        assert!(MatMut::new(&mut [0.0; 16], 2, 2, 1, 1).is_none(), "overlap");
        assert!(MatMut::new(&mut [0.0; 16], HUGE, 2, 2, 1).is_none());
        assert!(View4::new(&data, [2, 2, 2, 2], [usize::MAX, 1, 1, 1]).is_none());
        assert!(View4::new(&data, [HUGE, HUGE, 2, 2], [1, 1, 1, 1]).is_none());
        assert!(View4Mut::new(&mut [0.0; 16], [2, 2, 2, 2], [4, 4, 2, 1]).is_none(), "overlap");
        assert!(View4::<f32>::new(&[], [HUGE, HUGE, 0, HUGE], [usize::MAX; 4]).is_some());
    }

    /// `block` checks `r0 + rows` without wrapping: a block that starts past the view panics
    /// instead of aliasing rows outside it.
    #[test]
    fn blocks_past_the_view_panic() {
        let data = [0.0f32; 16];
        let m = MatRef::new(&data, 4, 4, 4, 1).unwrap();
        panics("block at usize::MAX", || _ = m.block(usize::MAX, 0, 2, 1));
        panics("block columns wrap", || _ = m.block(0, usize::MAX, 1, 2));
        panics("block one row past", || _ = m.block(3, 0, 2, 4));
        assert_eq!(no_panic("empty block at the end", || m.block(4, 4, 0, 0)).rows(), 0);
        panics("at past the end", || _ = m.at(4, 0));
        let v = View4::new(&data, [1, 2, 2, 4], [16, 8, 4, 1]).unwrap();
        panics("matrix of a missing head", || _ = v.matrix(0, 2));
        panics("batch entry 1 of 1", || _ = v.batch_entry(1));
        let mut out = [0.0f32; 16];
        let c = MatMut::new(&mut out, 4, 4, 4, 1).unwrap();
        panics("split past the rows", move || _ = c.split_at_row(5));
    }

    /// An empty tensor's `batch·heads` can overflow; listing its matrices is a documented panic.
    #[test]
    fn matrices_of_an_overflowing_empty_view_panic() {
        let v = View4Mut::new(&mut [0.0; 0], [HUGE, HUGE, 0, 4], [0; 4]).unwrap();
        panics("into_matrices", move || drop(v.into_matrices()));
        let v = View4Mut::new(&mut [0.0; 0], [3, 2, 0, 4], [0; 4]).unwrap();
        assert_eq!(no_panic("six empty matrices", move || v.into_matrices()).len(), 6);
    }

    #[test]
    fn macro_kernel_refuses_shapes_that_do_not_fit() {
        let isa = Isa::best();
        let (a, b) = ([1.0f32; 12], [1.0f32; 12]);
        let mut buf = vec![0.0f32; PackedB::len_for(isa, 3, 4)];
        let b = MatRef::new(&b, 3, 4, 4, 1).unwrap();
        let packed = PackedB::pack(isa, b, &mut buf);
        let mut out = [0.0f32; 16];
        let lhs = Lhs::Strided(MatRef::new(&a, 3, 4, 4, 1).unwrap());
        let c = MatMut::new(&mut out, 3, 4, 4, 1).unwrap();
        panics("A depth 4 against B depth 3", || macro_kernel(isa, lhs, packed, c, 1.0, 0.0));
        panics("a packing buffer one short", || {
            let mut short = vec![0.0f32; PackedB::len_for(isa, 3, 4) - 1];
            _ = PackedB::pack(isa, b, &mut short);
        });
    }
}
