//! Fuzz harness for `flashcpu::attention_with_lse`, shared by the cargo-fuzz target
//! (`fuzz/fuzz_targets/attention.rs`) and the stable replay test (`tests/fuzz_replay_attention.rs`).
//!
//! Input, one byte per field; past the end of the input a seeded stream of finite values takes
//! over (see `common::Bytes`):
//! ```text
//! batch kv_heads group       % 3, % 3, 1 + % 3 (heads = kv_heads·group)
//! q_len kv_len d dv          % 21, % 21, % 17, % 17
//! tweak                      one byte in 8 picks a shape defect (% 9): 0 K batch+1, 1 V batch+1,
//!                            2 K d+1, 3 V kv_len+1, 4 V heads+1, 5 heads+1, 6 out dv+1,
//!                            7 out q_len+1, 8 lse q_len+1
//! isa parallelism lse        an index into available_isas(); even: Sequential, odd: Rayon;
//!                            % 3: 0 no lse, else an lse buffer
//! scale causal window        SCALES (or BAD_SCALES); an alignment; % 3 == 0 gives a window with
//!                            sides from SIDES (or BAD_SIDES)
//! key_lengths                none, valid lengths, or (one byte in 16) lengths up to kv_len + 2
//!                            and a count of batch − 1..batch + 1
//! bias mask                  none, a broadcastable shape, or (one byte in 16) a shape that may
//!                            not broadcast
//! alibi sinks                none, one per head from SLOPES and SINKS, or (one byte in 16) a
//!                            count around it; values non-finite one time in 16
//! softcap                    SOFTCAPS (or BAD_SOFTCAPS)
//! layouts of Q K V out bias  a kind byte and its parameter bytes (see `Layout::decode`)
//! Q K V out bias mask        Q, K, V, bias: a scale byte, then every slot of the buffer (gaps
//!                            included); out: every slot; mask: one byte per bit
//! ```
//! Wherever a byte picks between valid and invalid options, bytes from `INVALID_FROM` up pick an
//! invalid one: random inputs are mostly valid calls, each defect now and then.
//! It panics only on a real defect:
//! - a view constructor that disagrees with the exact bounds rule, or that accepts output strides
//!   sending two indices to one element (refusing distinct ones is allowed: the check is
//!   conservative);
//! - `Err` for a valid call, `Ok` for an invalid one, or an error of a kind the call's defects do
//!   not explain; an `Err` that wrote to the output or the lse; any write outside the output view;
//! - a row that sees no key whose output is not exactly 0 or whose lse is not −∞ (the sink, with
//!   sinks);
//! - an lse whose inputs (its Q row, the K rows and bias entries of the keys it sees) are finite,
//!   or an output element whose inputs (those, and its column of the V rows it sees) are finite,
//!   that is not within tolerance of the f64 reference. Inputs that a row does not see may hold
//!   anything (NaN and ∞ in gaps, padding, masked keys): the reference is computed on a copy with
//!   every non-finite value replaced by 0, which changes no checked element.

#[path = "common.rs"]
mod common;

use common::Bytes;
use flashcpu::reference::{attention_f32_naive, attention_f64};
use flashcpu::{
    AttentionParams, CausalAlign, Error, Parallelism, View4, View4Mut, Window, attention_with_lse,
    available_isas,
};

/// Largest q_len and kv_len: a Q tile and a K tile with ragged edges, and cheap to check.
pub const MAX_LEN: usize = 20;
/// Largest d and dv.
pub const MAX_DIM: usize = 16;
/// Buffers are never longer than this; views that would need more get a short buffer and must be
/// refused.
const MAX_BUF: usize = 1 << 14;
/// Largest accepted window side.
const MAX_WINDOW: usize = 1 << 48;

const SCALES: [Option<f32>; 6] = [None, None, Some(0.5), Some(1.0), Some(0.125), Some(3.0)];
const BAD_SCALES: [Option<f32>; 5] =
    [Some(0.0), Some(-1.0), Some(f32::NAN), Some(f32::INFINITY), Some(f32::NEG_INFINITY)];
const SOFTCAPS: [Option<f32>; 6] = [None, None, None, None, Some(1.0), Some(5.0)];
const BAD_SOFTCAPS: [Option<f32>; 4] = [Some(0.0), Some(-1.0), Some(f32::NAN), Some(f32::INFINITY)];
const SIDES: [Option<usize>; 6] = [None, Some(0), Some(1), Some(2), Some(5), Some(MAX_WINDOW)];
const BAD_SIDES: [Option<usize>; 2] = [Some(MAX_WINDOW + 1), Some(usize::MAX)];
const SLOPES: [f32; 6] = [0.5, 0.0, 1.0, 2.0, -0.5, 0.0625];
const SINKS: [f32; 5] = [0.0, -2.0, 3.0, 20.0, -20.0];
const BAD_VALUES: [f32; 3] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];

/// Bytes from here up pick an invalid option (1 in 16), so that a random input is mostly a valid
/// call with one defect now and then.
const INVALID_FROM: u8 = 240;

/// One of `valid`, or (one byte in 16) one of `invalid`.
fn mostly<T: Copy>(bytes: &mut Bytes<'_>, valid: &[T], invalid: &[T]) -> T {
    let b = usize::from(bytes.byte());
    if b >= usize::from(INVALID_FROM) { invalid[b % invalid.len()] } else { valid[b % valid.len()] }
}

/// Offset of the last element of a 4-D view plus one (0 when empty), or `None` on overflow.
fn extent(shape: [usize; 4], strides: [usize; 4]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().zip(strides).try_fold(1usize, |acc, (&n, s)| acc.checked_add((n - 1).checked_mul(s)?))
}

/// A stride byte: mostly small, with three that overflow or reach far past any buffer.
fn stride(b: u8) -> usize {
    match b {
        255 => usize::MAX,
        254 => usize::MAX / 2 + 1,
        253 => 1 << 33,
        b => usize::from(b) % 24,
    }
}

/// Which constructor builds a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Bhld,
    Blhd,
    New,
}

/// Shape, strides and buffer length of one tensor.
#[derive(Clone, Debug)]
struct Layout {
    shape: [usize; 4],
    strides: [usize; 4],
    len: usize,
    via: Via,
}

impl Layout {
    /// Kinds: 0 `bhld`, 1 `blhd`, 2 padded (+0..3 after each dimension), 3 dim-major, 6 heads
    /// outermost, 7 head stride 0 (every head on the same elements: fine for inputs, overlapping
    /// for an output with several heads); and (one byte in 16) 4 raw strides from four bytes (may
    /// overlap or overflow) or 5 `bhld` strides with a buffer 1..3 elements short. Every buffer
    /// gets 0..2 elements of slack unless it is meant to be short.
    fn decode(bytes: &mut Bytes<'_>, shape: [usize; 4]) -> Layout {
        let [b, h, l, d] = shape;
        let kind = mostly(bytes, &[0, 1, 2, 3, 6, 0, 1, 2, 3, 6, 7], &[4, 5]);
        let (strides, via) = match kind {
            0 | 5 => ([h * l * d, l * d, d, 1], if kind == 0 { Via::Bhld } else { Via::New }),
            1 => ([l * h * d, d, h * d, 1], Via::Blhd),
            2 => {
                let rs = d + bytes.below(4);
                let hs = l * rs + bytes.below(4);
                ([h * hs + bytes.below(4), hs, rs, 1], Via::New)
            }
            3 => {
                let cs = l + bytes.below(3);
                let hs = d * cs + bytes.below(3);
                ([h * hs + bytes.below(3), hs, 1, cs], Via::New)
            }
            4 => ([0; 4].map(|_| stride(bytes.byte())), Via::New),
            6 => ([l * d, b * l * d, d, 1], Via::New),
            _ => ([l * d, 0, d, 1], Via::New),
        };
        let len = match extent(shape, strides) {
            Some(e) if kind == 5 => e.saturating_sub(1 + bytes.below(3)),
            Some(e) if e <= MAX_BUF => e + bytes.below(3),
            _ => bytes.below(64),
        };
        Layout { shape, strides, len, via }
    }

    fn fits(&self) -> bool {
        extent(self.shape, self.strides).is_some_and(|e| e <= self.len)
    }

    fn offset(&self, idx: [usize; 4]) -> usize {
        (0..4).map(|x| idx[x] * self.strides[x]).sum()
    }

    /// Every index, in `[b, h, l, d]` order.
    fn indices(&self) -> Vec<[usize; 4]> {
        let [b, h, l, d] = self.shape;
        let mut out = Vec::with_capacity(b * h * l * d);
        for bi in 0..b {
            for hi in 0..h {
                for li in 0..l {
                    for di in 0..d {
                        out.push([bi, hi, li, di]);
                    }
                }
            }
        }
        out
    }

    fn view<'a>(&self, data: &'a [f32]) -> flashcpu::Result<View4<'a>> {
        match self.via {
            Via::Bhld => View4::bhld(data, self.shape),
            Via::Blhd => View4::blhd(data, self.shape),
            Via::New => View4::new(data, self.shape, self.strides),
        }
    }

    fn view_mut<'a>(&self, data: &'a mut [f32]) -> flashcpu::Result<View4Mut<'a>> {
        match self.via {
            Via::Bhld => View4Mut::bhld(data, self.shape),
            Via::Blhd => View4Mut::blhd(data, self.shape),
            Via::New => View4Mut::new(data, self.shape, self.strides),
        }
    }

    /// `View4::new` (and `bhld`, `blhd`) must follow the bounds rule exactly.
    fn check_input(&self, view: &flashcpu::Result<View4<'_>>) {
        match (self.fits(), view) {
            (true, Ok(_)) | (false, Err(Error::OutOfBounds(_))) => {}
            (fits, other) => panic!("{self:?}: fits = {fits}, but the view gave {other:?}"),
        }
    }

    /// Whether distinct indices reach distinct elements, by brute force (small tensors only).
    fn distinct(&self) -> bool {
        let mut offsets: Vec<usize> = self.indices().into_iter().map(|i| self.offset(i)).collect();
        let n = offsets.len();
        offsets.sort_unstable();
        offsets.dedup();
        offsets.len() == n
    }

    /// `View4Mut::new` must follow the bounds rule exactly and never accept overlapping strides.
    fn check_output(&self, view: &flashcpu::Result<View4Mut<'_>>) {
        let fits = self.fits();
        match view {
            Ok(_) => assert!(fits && self.distinct(), "{self:?}: accepted out of bounds or overlapping"),
            Err(Error::OutOfBounds(_)) => assert!(!fits, "{self:?}: fits, but OutOfBounds"),
            Err(Error::OverlappingOutput(_)) => assert!(fits, "{self:?}: out of bounds, but Overlapping"),
            Err(other) => panic!("{self:?}: View4Mut gave {other:?}"),
        }
    }
}

/// A buffer of `len` elements at one decoded scale: NaN, ±∞ and −0 wherever the input says.
fn elements(bytes: &mut Bytes<'_>, len: usize, max_exponent: usize) -> Vec<f32> {
    let scale = 2f32.powi(bytes.below(max_exponent + 8) as i32 - 8);
    (0..len).map(|_| bytes.element(scale)).collect()
}

/// The error kinds that the call's defects explain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Shape,
    Invalid,
}

fn kind(e: &Error) -> Option<Kind> {
    match e {
        Error::ShapeMismatch(_) => Some(Kind::Shape),
        Error::InvalidParameter(_) => Some(Kind::Invalid),
        _ => None,
    }
}

/// Index `(b, h)` of a broadcastable `[1|B, 1|H, ..]` tensor.
fn broadcast(shape: [usize; 4], b: usize, h: usize) -> (usize, usize) {
    (if shape[0] == 1 { 0 } else { b }, if shape[1] == 1 { 0 } else { h })
}

/// Per-head values from `pool`: none (half the time), one per head, or (one byte in 16) a count
/// around it; a value is non-finite one time in 16.
fn per_head(bytes: &mut Bytes<'_>, heads: usize, pool: &[f32]) -> Option<Vec<f32>> {
    if bytes.byte().is_multiple_of(2) {
        return None;
    }
    let n = mostly(bytes, &[heads], &[heads + 1, heads.saturating_sub(1)]);
    Some((0..n).map(|_| mostly(bytes, pool, &BAD_VALUES)).collect())
}

/// A bias or mask shape: none (half the time), broadcastable, or (one byte in 16) one that may
/// not be.
fn broadcast_shape(bytes: &mut Bytes<'_>, full: [usize; 4]) -> Option<[usize; 4]> {
    let b = bytes.byte();
    if b.is_multiple_of(2) {
        return None;
    }
    let mut shape = [
        if bytes.byte().is_multiple_of(2) { 1 } else { full[0] },
        if bytes.byte().is_multiple_of(2) { 1 } else { full[1] },
        full[2],
        full[3],
    ];
    if b >= INVALID_FROM {
        let dim = bytes.below(4);
        shape[dim] += 1 + bytes.below(2);
    }
    Some(shape)
}

/// Decodes one input and checks one `attention_with_lse` call; see the module doc for what fails.
pub fn run(data: &[u8]) {
    let mut bytes = Bytes::new(data);
    let (batch, kv_heads, group) = (bytes.below(3), bytes.below(3), 1 + bytes.below(3));
    let (q_len, kv_len) = (bytes.below(MAX_LEN + 1), bytes.below(MAX_LEN + 1));
    let (d, dv) = (bytes.below(MAX_DIM + 1), bytes.below(MAX_DIM + 1));
    // One input in 8 gets a shape defect.
    let tweak = if bytes.byte() >= 224 { bytes.below(9) } else { usize::MAX };
    let grow = |t: usize| usize::from(tweak == t);
    let heads = kv_heads * group + grow(5);
    let isa = bytes.pick(&available_isas());
    let parallelism =
        if bytes.byte().is_multiple_of(2) { Parallelism::Sequential } else { Parallelism::Rayon };
    let lse_shape = (bytes.below(3) != 0).then_some([batch, heads, q_len + grow(8), 1]);
    let lse_len = lse_shape.map(|s| s.iter().product::<usize>());

    let scale = mostly(&mut bytes, &SCALES, &BAD_SCALES);
    let causal = bytes.pick(&[None, Some(CausalAlign::TopLeft), Some(CausalAlign::BottomRight)]);
    let window = (bytes.below(3) == 0).then(|| Window {
        left: mostly(&mut bytes, &SIDES, &BAD_SIDES),
        right: mostly(&mut bytes, &SIDES, &BAD_SIDES),
    });
    let key_lengths: Option<Vec<usize>> = match bytes.byte() {
        0..=159 => None,
        160..=239 => Some((0..batch).map(|_| bytes.below(kv_len + 1)).collect()),
        _ => {
            let n = (batch + bytes.below(3)).saturating_sub(1);
            Some((0..n).map(|_| bytes.below(kv_len + 3)).collect())
        }
    };
    let full = [batch, heads, q_len, kv_len];
    let bias_shape = broadcast_shape(&mut bytes, full);
    let mask_shape = broadcast_shape(&mut bytes, full);
    let slopes = per_head(&mut bytes, heads, &SLOPES);
    let sinks = per_head(&mut bytes, heads, &SINKS);
    let softcap = mostly(&mut bytes, &SOFTCAPS, &BAD_SOFTCAPS);

    let lq = Layout::decode(&mut bytes, [batch, heads, q_len, d]);
    let lk = Layout::decode(&mut bytes, [batch + grow(0), kv_heads, kv_len, d + grow(2)]);
    let lv = Layout::decode(&mut bytes, [batch + grow(1), kv_heads + grow(4), kv_len + grow(3), dv]);
    let lo = Layout::decode(&mut bytes, [batch, heads, q_len + grow(7), dv + grow(6)]);
    let lb = bias_shape.map(|s| Layout::decode(&mut bytes, s));
    let q_data = elements(&mut bytes, lq.len, 3);
    let k_data = elements(&mut bytes, lk.len, 3);
    let v_data = elements(&mut bytes, lv.len, 7);
    let out_before = elements(&mut bytes, lo.len, 7);
    let bias_data = lb.as_ref().map(|l| elements(&mut bytes, l.len, 3));
    // Masks are dense; about 3 in 4 bits visible.
    let mask_data: Option<Vec<bool>> = mask_shape
        .map(|s| (0..s.iter().product::<usize>()).map(|_| !bytes.byte().is_multiple_of(4)).collect());
    let lse_before: Option<Vec<f32>> = lse_len.map(|n| (0..n).map(|i| i as f32 - 0.5).collect());

    let (q, k, v) = (lq.view(&q_data), lk.view(&k_data), lv.view(&v_data));
    lq.check_input(&q);
    lk.check_input(&k);
    lv.check_input(&v);
    let bias = match (&lb, &bias_data) {
        (Some(l), Some(data)) => {
            let view = l.view(data);
            l.check_input(&view);
            let Ok(view) = view else { return };
            Some(view)
        }
        _ => None,
    };
    let mask = match (mask_shape, &mask_data) {
        (Some(s), Some(data)) => Some(View4::bhld(data, s).expect("a dense mask fits its buffer")),
        _ => None,
    };
    let mut out_data = out_before.clone();
    let mut lse = lse_before.clone();
    let out = lo.view_mut(&mut out_data);
    lo.check_output(&out);
    let (Ok(q), Ok(k), Ok(v), Ok(out)) = (q, k, v, out) else {
        return;
    };

    let params = AttentionParams {
        scale,
        causal,
        window,
        key_lengths: key_lengths.as_deref(),
        bias,
        mask,
        alibi_slopes: slopes.as_deref(),
        softcap,
        sinks: sinks.as_deref(),
        isa: Some(isa),
        parallelism,
    };
    let what = format!(
        "Q {:?} K {:?} V {:?} out {:?} lse {lse_len:?} {params:?}",
        lq.shape, lk.shape, lv.shape, lo.shape
    );

    // The defects of the call, each with the error kind it must give.
    let mut defects: Vec<(Kind, &str)> = Vec::new();
    let mut defect = |bad: bool, kind: Kind, why: &'static str| {
        if bad {
            defects.push((kind, why));
        }
    };
    defect(lk.shape[0] != batch || lv.shape[0] != batch, Kind::Shape, "batch");
    defect(lk.shape[3] != d, Kind::Shape, "head dim");
    defect(lv.shape[1] != lk.shape[1] || lv.shape[2] != lk.shape[2], Kind::Shape, "K and V");
    defect(heads > 0 && (kv_heads == 0 || heads % kv_heads != 0), Kind::Shape, "head ratio");
    defect(lo.shape != [batch, heads, q_len, dv], Kind::Shape, "output shape");
    defect(lse_shape.is_some_and(|s| s != [batch, heads, q_len, 1]), Kind::Shape, "lse shape");
    let scale_used = scale.unwrap_or(if d == 0 { 1.0 } else { 1.0 / (d as f32).sqrt() });
    defect(!(scale_used.is_finite() && scale_used > 0.0), Kind::Invalid, "scale");
    defect(softcap.is_some_and(|c| !(c.is_finite() && c > 0.0)), Kind::Invalid, "softcap");
    let wide = |s: Option<usize>| s.is_some_and(|x| x > MAX_WINDOW);
    defect(window.is_some_and(|w| wide(w.left) || wide(w.right)), Kind::Invalid, "window");
    if let Some(lens) = &key_lengths {
        defect(lens.len() != batch, Kind::Shape, "key length count");
        defect(lens.len() == batch && lens.iter().any(|&l| l > kv_len), Kind::Invalid, "key length");
    }
    for values in [&slopes, &sinks].into_iter().flatten() {
        defect(values.len() != heads, Kind::Shape, "per-head count");
        defect(
            values.len() == heads && values.iter().any(|x| !x.is_finite()),
            Kind::Invalid,
            "per-head value",
        );
    }
    let broadcasts = |s: [usize; 4]| {
        (s[0] == batch || s[0] == 1) && (s[1] == heads || s[1] == 1) && s[2] == q_len && s[3] == kv_len
    };
    defect(bias_shape.is_some_and(|s| !broadcasts(s)), Kind::Shape, "bias shape");
    defect(mask_shape.is_some_and(|s| !broadcasts(s)), Kind::Shape, "mask shape");

    let lse_view = lse.as_deref_mut().zip(lse_shape).map(|(l, s)| View4Mut::bhld(l, s).expect("a dense lse"));
    let result = attention_with_lse(q, k, v, out, lse_view, &params);
    if !defects.is_empty() {
        let explained =
            result.as_ref().err().and_then(kind).is_some_and(|k| defects.iter().any(|d| d.0 == k));
        assert!(explained, "{what}: defects {defects:?}, but the call gave {result:?}");
        let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same(&out_data, &out_before), "{what}: an Err wrote to the output");
        assert!(
            lse.as_deref().zip(lse_before.as_deref()).is_none_or(|(a, b)| same(a, b)),
            "{what}: an Err wrote to the lse"
        );
        return;
    }
    if let Err(e) = result {
        panic!("{what}: a valid call was refused: {e}");
    }

    let mut inside = vec![false; lo.len];
    for idx in lo.indices() {
        inside[lo.offset(idx)] = true;
    }
    for (at, (x, y)) in out_data.iter().zip(&out_before).enumerate() {
        assert!(
            inside[at] || x.to_bits() == y.to_bits(),
            "{what}: wrote the output buffer at {at}, outside the view"
        );
    }

    // The reference on a sanitized copy: every non-finite Q, K, V element becomes 0, every NaN or
    // +∞ bias entry 0 (−∞ stays: it hides a key). Checked elements read none of them.
    let clean = |x: &[f32]| x.iter().map(|&y| if y.is_finite() { y } else { 0.0 }).collect::<Vec<_>>();
    let (q_clean, k_clean, v_clean) = (clean(&q_data), clean(&k_data), clean(&v_data));
    let bias_clean: Option<Vec<f32>> = bias_data
        .as_ref()
        .map(|b| b.iter().map(|&y| if y.is_finite() || y == f32::NEG_INFINITY { y } else { 0.0 }).collect());
    let clean_params = AttentionParams {
        bias: lb.as_ref().zip(bias_clean.as_deref()).map(|(l, data)| l.view(data).expect("checked above")),
        ..params
    };
    let (qc, kc, vc) = (
        lq.view(&q_clean).expect("checked above"),
        lk.view(&k_clean).expect("checked above"),
        lv.view(&v_clean).expect("checked above"),
    );
    let exact = attention_f64(qc, kc, vc, &clean_params);
    let naive = attention_f32_naive(qc, kc, vc, &clean_params);

    let bias_at = |b: usize, h: usize, i: usize, j: usize| {
        lb.as_ref().zip(bias_data.as_ref()).map(|(l, data)| {
            let (bb, bh) = broadcast(l.shape, b, h);
            data[l.offset([bb, bh, i, j])]
        })
    };
    let mask_at = |b: usize, h: usize, i: usize, j: usize| {
        mask_shape.zip(mask_data.as_ref()).is_none_or(|(s, data)| {
            let (mb, mh) = broadcast(s, b, h);
            data[((mb * s[1] + mh) * q_len + i) * kv_len + j]
        })
    };
    let max_v = v_clean.iter().fold(0f64, |m, &x| m.max(f64::from(x).abs()));
    let eps = f64::from(f32::EPSILON);
    // Query head h reads KV head h / ratio (`group` may be off by the tweak that adds a head).
    let ratio = heads / kv_heads.max(1);
    for b in 0..batch {
        let kl = key_lengths.as_ref().map_or(kv_len, |l| l[b]);
        let off = kl as i64 - q_len as i64;
        for h in 0..heads {
            let kvh = h / ratio;
            for i in 0..q_len {
                let r = (b * heads + h) * q_len + i;
                let (ii, at) = (i as i64, format!("{what}: row {i} of (b {b}, h {h})"));
                // The documented rules: key length, causal, window, mask bit, −∞ bias.
                let sees = |j: usize| {
                    let jj = j as i64;
                    let causal_ok = match causal {
                        None => true,
                        Some(CausalAlign::TopLeft) => jj <= ii,
                        Some(CausalAlign::BottomRight) => jj <= ii + off,
                    };
                    let window_ok = window.is_none_or(|w| {
                        w.left.is_none_or(|x| jj >= ii + off - x as i64)
                            && w.right.is_none_or(|x| jj <= ii + off + x as i64)
                    });
                    causal_ok
                        && window_ok
                        && mask_at(b, h, i, j)
                        && bias_at(b, h, i, j) != Some(f32::NEG_INFINITY)
                };
                let seen: Vec<usize> = (0..kl).filter(|&j| sees(j)).collect();
                let got: Vec<f32> = (0..dv).map(|c| out_data[lo.offset([b, h, i, c])]).collect();
                let got_lse = lse.as_ref().map(|l| l[r]);
                if seen.is_empty() {
                    let want = sinks.as_ref().map_or(f32::NEG_INFINITY, |s| s[h]);
                    assert!(got.iter().all(|&x| x == 0.0), "{at} sees no key, but its output is {got:?}");
                    assert!(got_lse.is_none_or(|x| x == want), "{at} sees no key, but lse = {got_lse:?}");
                    continue;
                }
                let q_ok = (0..d).all(|p| q_data[lq.offset([b, h, i, p])].is_finite());
                let k_ok =
                    seen.iter().all(|&j| (0..d).all(|p| k_data[lk.offset([b, kvh, j, p])].is_finite()));
                let bias_ok = seen.iter().all(|&j| bias_at(b, h, i, j).is_none_or(f32::is_finite));
                if !(q_ok && k_ok && bias_ok) {
                    continue;
                }
                // δ: the logit error bound of the tolerance (src/attention/tests.rs explains it).
                let magnitude = seen
                    .iter()
                    .map(|&j| {
                        let dot: f64 = (0..d)
                            .map(|p| {
                                let x = f64::from(q_data[lq.offset([b, h, i, p])]);
                                (x * f64::from(k_data[lk.offset([b, kvh, j, p])])).abs()
                            })
                            .sum();
                        let alibi = slopes.as_ref().map_or(0.0, |s| {
                            f64::from(s[h]).abs() * (ii + off - j as i64).unsigned_abs() as f64
                        });
                        f64::from(scale_used) * dot
                            + f64::from(softcap.unwrap_or(0.0))
                            + alibi
                            + bias_at(b, h, i, j).map_or(0.0, |x| f64::from(x).abs())
                    })
                    .fold(0.0, f64::max);
                let delta = (2.0 + (d as f64).sqrt()) * eps * magnitude;
                if let Some(got_lse) = got_lse {
                    let (e, n) = (exact.lse[r], f64::from(naive.lse[r]));
                    let bound = 2.0 * (n - e).abs() + 1e-5 * (1.0 + e.abs()) + delta;
                    let err = (f64::from(got_lse) - e).abs();
                    assert!(err <= bound, "{at}: lse {got_lse}, want {e} (error {err:e} > bound {bound:e})");
                }
                for (c, &x) in got.iter().enumerate() {
                    if !seen.iter().all(|&j| v_data[lv.offset([b, kvh, j, c])].is_finite()) {
                        continue;
                    }
                    let (e, n) = (exact.out[r * dv + c], f64::from(naive.out[r * dv + c]));
                    let bound = 2.0 * (n - e).abs() + max_v * (1e-5 + 2.0 * delta);
                    let err = (f64::from(x) - e).abs();
                    assert!(err <= bound, "{at}: out[{c}] = {x}, want {e} (error {err:e} > bound {bound:e})");
                }
            }
        }
    }
}
