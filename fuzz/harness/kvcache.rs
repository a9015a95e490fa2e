//! Fuzz harness for `flashcpu::KvCache`, shared by the cargo-fuzz target
//! (`fuzz/fuzz_targets/kvcache.rs`) and the stable replay test (`tests/fuzz_replay_kvcache.rs`).
//!
//! A small cache (plain or ring; f32, f16 or bf16) runs a sequence of operations beside a model:
//! per sequence, a plain `Vec` of every K and V row appended (rounded to the storage type) and the
//! oldest position the cache still holds. Input, one byte per field; past the end of the input a
//! seeded stream takes over (see `common::Bytes`):
//! ```text
//! batch kv_heads group d dv     1 + % 2, 1 + % 2, 1 + % 2, % 9, % 9 (heads = kv_heads·group)
//! capacity ring window dtype    1 + % MAX_CAPACITY; odd: a ring of window 1 + % capacity; % 3
//! ops                           1 + % MAX_OPS operations, each an opcode byte % 8 and its fields:
//!   0 1  append(seq, n)         seq % (batch + 1) (batch: no such sequence), n % (capacity + 2)
//!   2    append_all(n)
//!   3    truncate(seq, len)     len: the floor − 1, the floor, the length, one past it, or any
//!   4    reset(seq)
//!   5 6  attend(q_len, params)
//!   7    append_and_attend(n, q_len, params)
//! chunk defect                  one byte in 16: a K head too many (`ShapeMismatch`), or a value
//!                               the storage type cannot hold (`InvalidParameter` for f16, bf16)
//! params                        causal (none, bottom-right, top-left), a window (one byte in 4),
//!                               a bias of one column per held position (one in 4), and now and
//!                               then a defect: key lengths given, a NaN scale, a bias one column
//!                               too wide
//! values                        one byte each, `(b as i8) / 32`: finite, |x| ≤ 4
//! ```
//! It panics only on a real defect:
//! - a call accepted that the documented rules refuse, or refused that they accept;
//! - after any call, a length, held range, rollback floor or key-column count other than the
//!   model's; a refused call that wrote to the output;
//! - an attention result outside the tolerance of the f64 reference over the model's rows (the
//!   attention fuzz harness's rule: twice the naive f32 error, plus a floor that grows with the
//!   logits' magnitude); a row that sees no key whose output is not 0 or whose lse is not −∞.

#[path = "common.rs"]
mod common;

use common::Bytes;
use flashcpu::reference::{attention_f32_naive, attention_f64};
use flashcpu::{AttentionParams, CausalAlign, KvCache, KvCacheConfig, KvDtype, View4, View4Mut, Window};
use half::{bf16, f16};

/// Largest capacity: a ring wraps within a few operations.
pub const MAX_CAPACITY: usize = 12;
/// Most operations per input.
pub const MAX_OPS: usize = 32;
/// Most queries per attend.
const MAX_Q: usize = 4;

/// The cache's shape, as the model needs it.
#[derive(Clone, Copy, Debug)]
struct Shape {
    batch: usize,
    kv_heads: usize,
    heads: usize,
    d: usize,
    dv: usize,
    capacity: usize,
    window: Option<usize>,
    dtype: KvDtype,
}

/// One appended position of one sequence: K `[kv_heads, d]` and V `[kv_heads, dv]`, as stored.
#[derive(Clone, Debug)]
struct Row {
    k: Vec<f32>,
    v: Vec<f32>,
}

/// What the cache should hold: every row appended to each sequence (truncations drop rows), and
/// the oldest position each still holds.
struct Model {
    shape: Shape,
    rows: Vec<Vec<Row>>,
    oldest: Vec<usize>,
}

fn round(dtype: KvDtype, x: f32) -> f32 {
    match dtype {
        KvDtype::F32 => x,
        KvDtype::F16 => f16::from_f32(x).to_f32(),
        KvDtype::Bf16 => bf16::from_f32(x).to_f32(),
    }
}

impl Model {
    fn len(&self, seq: usize) -> usize {
        self.rows[seq].len()
    }

    fn floor(&self, seq: usize) -> usize {
        match self.shape.window {
            Some(w) if self.oldest[seq] > 0 => self.oldest[seq] + w - 1,
            _ => 0,
        }
    }

    /// Most positions one append may add to `seq`.
    fn room(&self, seq: usize) -> usize {
        let s = self.shape;
        s.window.map_or_else(|| s.capacity - self.len(seq), |w| s.capacity - w + 1)
    }

    fn key_columns(&self) -> usize {
        (0..self.shape.batch).map(|b| self.len(b) - self.oldest[b]).max().unwrap_or(0)
    }

    fn append(&mut self, seq: usize, rows: Vec<Row>) {
        self.rows[seq].extend(rows);
        self.oldest[seq] = self.oldest[seq].max(self.len(seq).saturating_sub(self.shape.capacity));
    }

    /// Asserts that `cache` shows what the model holds.
    fn check(&self, cache: &KvCache, what: &str) {
        for b in 0..self.shape.batch {
            let (len, oldest) = (self.len(b), self.oldest[b]);
            assert_eq!(cache.len(b), Ok(len), "{what}: length of sequence {b}");
            assert_eq!(cache.positions(b), Ok(oldest..len), "{what}: positions of sequence {b}");
            assert_eq!(cache.rollback_floor(b), Ok(self.floor(b)), "{what}: floor of sequence {b}");
        }
        assert_eq!(cache.key_columns(), self.key_columns(), "{what}: key columns");
        assert!(cache.len(self.shape.batch).is_err(), "{what}: len of a sequence past the batch");
    }
}

/// A chunk of `n` positions for `batch` sequences, dense `[batch, heads, n, dim]` K and V, with
/// whether the documented rules refuse it.
struct Chunk {
    k: Vec<f32>,
    v: Vec<f32>,
    k_shape: [usize; 4],
    v_shape: [usize; 4],
    defective: bool,
}

impl Chunk {
    fn decode(bytes: &mut Bytes<'_>, s: Shape, batch: usize, n: usize) -> Chunk {
        let defect = if bytes.byte() >= 240 { 1 + bytes.below(2) } else { 0 };
        let k_heads = s.kv_heads + usize::from(defect == 1);
        let (k_shape, v_shape) = ([batch, k_heads, n, s.d], [batch, s.kv_heads, n, s.dv]);
        let mut k: Vec<f32> = (0..k_shape.iter().product()).map(|_| value(bytes)).collect();
        let mut v: Vec<f32> = (0..v_shape.iter().product()).map(|_| value(bytes)).collect();
        let huge = if s.dtype == KvDtype::F16 { 1e5 } else { f32::MAX };
        if defect == 2 && s.dtype != KvDtype::F32 {
            let target = if v.is_empty() || (!k.is_empty() && bytes.byte().is_multiple_of(2)) {
                &mut k
            } else {
                &mut v
            };
            if !target.is_empty() {
                let at = bytes.below(256) % target.len();
                target[at] = huge;
            }
        }
        let overflows = s.dtype != KvDtype::F32 && k.iter().chain(&v).any(|&x| x == huge);
        Chunk { k, v, k_shape, v_shape, defective: defect == 1 || overflows }
    }

    fn views(&self) -> (View4<'_>, View4<'_>) {
        (
            View4::bhld(&self.k, self.k_shape).expect("dense chunk"),
            View4::bhld(&self.v, self.v_shape).expect("dense chunk"),
        )
    }

    /// Batch entry `b` as model rows, rounded as the cache stores them.
    fn rows(&self, b: usize, dtype: KvDtype) -> Vec<Row> {
        let [_, heads, n, d] = self.k_shape;
        let dv = self.v_shape[3];
        let plane = |data: &[f32], dim: usize, t: usize| -> Vec<f32> {
            (0..heads)
                .flat_map(|h| (0..dim).map(move |c| (h, c)))
                .map(|(h, c)| round(dtype, data[((b * heads + h) * n + t) * dim + c]))
                .collect()
        };
        (0..n).map(|t| Row { k: plane(&self.k, d, t), v: plane(&self.v, dv, t) }).collect()
    }
}

/// A finite value, |x| ≤ 4.
fn value(bytes: &mut Bytes<'_>) -> f32 {
    f32::from(bytes.byte() as i8) / 32.0
}

/// The parameters of one attend, the data they borrow, and whether they carry a defect.
struct Params {
    causal: Option<CausalAlign>,
    window: Option<Window>,
    scale: Option<f32>,
    key_lengths: Option<Vec<usize>>,
    bias: Option<(Vec<f32>, [usize; 4])>,
}

impl Params {
    fn decode(bytes: &mut Bytes<'_>, s: Shape, q_len: usize, key_columns: usize) -> Params {
        let causal = [
            None,
            Some(CausalAlign::BottomRight),
            Some(CausalAlign::BottomRight),
            Some(CausalAlign::TopLeft),
        ][bytes.below(4)];
        let side =
            |bytes: &mut Bytes<'_>| [None, Some(0), Some(1), Some(2), Some(5), Some(100)][bytes.below(6)];
        let window = (bytes.below(4) == 0).then(|| Window { left: side(bytes), right: side(bytes) });
        let defect = if bytes.byte() >= 232 { bytes.below(3) + 1 } else { 0 };
        let scale = if defect == 2 { Some(f32::NAN) } else { [None, None, Some(0.5)][bytes.below(3)] };
        let key_lengths = (defect == 1).then(|| vec![0; s.batch]);
        let bias = (bytes.below(4) == 0 || defect == 3).then(|| {
            let shape = [
                if bytes.byte().is_multiple_of(2) { 1 } else { s.batch },
                if bytes.byte().is_multiple_of(2) { 1 } else { s.heads },
                q_len,
                key_columns + usize::from(defect == 3),
            ];
            ((0..shape.iter().product()).map(|_| value(bytes)).collect(), shape)
        });
        Params { causal, window, scale, key_lengths, bias }
    }

    fn attention(&self) -> AttentionParams<'_> {
        AttentionParams {
            causal: self.causal,
            window: self.window,
            scale: self.scale,
            key_lengths: self.key_lengths.as_deref(),
            bias: self.bias.as_ref().map(|(data, shape)| View4::bhld(data, *shape).expect("dense bias")),
            ..AttentionParams::default()
        }
    }

    /// The window the cache attends with, or `None` where the documented rules refuse the call:
    /// a parameter defect, or a ring whose window is narrower than asked or no longer holds the
    /// positions the first query reaches.
    fn effective_window(&self, model: &Model, q_len: usize) -> Option<Option<Window>> {
        let defective = self.key_lengths.is_some()
            || self.scale.is_some_and(f32::is_nan)
            || self.bias.as_ref().is_some_and(|(_, shape)| shape[3] != model.key_columns());
        if defective {
            return None;
        }
        let Some(w) = model.shape.window else { return Some(self.window) };
        let left = self.window.and_then(|x| x.left);
        if left.is_some_and(|l| l > w - 1) {
            return None;
        }
        let left = left.unwrap_or(w - 1);
        let lost = (0..model.shape.batch).any(|b| {
            let (oldest, len) = (model.oldest[b], model.len(b));
            oldest > 0 && len.saturating_sub(q_len + left) < oldest
        });
        (!lost).then_some(Some(Window { left: Some(left), right: self.window.and_then(|x| x.right) }))
    }
}

/// Checks one accepted attend's output and lse against the f64 reference over the model's rows;
/// `window` is the one the cache applied.
fn check_attention(model: &Model, query: &Query, q_len: usize, spec: &Params, window: Option<Window>) {
    let (s, q) = (model.shape, &query.q);
    let kv_len = model.key_columns();
    let lens: Vec<usize> = (0..s.batch).map(|b| model.len(b) - model.oldest[b]).collect();
    let (mut k, mut v) =
        (vec![0.0; s.batch * s.kv_heads * kv_len * s.d], vec![0.0; s.batch * s.kv_heads * kv_len * s.dv]);
    for b in 0..s.batch {
        for (j, row) in model.rows[b][model.oldest[b]..].iter().enumerate() {
            for h in 0..s.kv_heads {
                let kd = ((b * s.kv_heads + h) * kv_len + j) * s.d;
                k[kd..kd + s.d].copy_from_slice(&row.k[h * s.d..][..s.d]);
                let vd = ((b * s.kv_heads + h) * kv_len + j) * s.dv;
                v[vd..vd + s.dv].copy_from_slice(&row.v[h * s.dv..][..s.dv]);
            }
        }
    }
    let params = AttentionParams { key_lengths: Some(&lens), window, ..spec.attention() };
    let bias_at = |b: usize, h: usize, i: usize, j: usize| -> f64 {
        spec.bias.as_ref().map_or(0.0, |(data, [bb, bh, rows, cols])| {
            let (b, h) = (if *bb == 1 { 0 } else { b }, if *bh == 1 { 0 } else { h });
            f64::from(data[((b * bh + h) * rows + i) * cols + j]).abs()
        })
    };
    let qv = View4::bhld(q, [s.batch, s.heads, q_len, s.d]).expect("dense Q");
    let kv = View4::bhld(&k, [s.batch, s.kv_heads, kv_len, s.d]).expect("dense K");
    let vv = View4::bhld(&v, [s.batch, s.kv_heads, kv_len, s.dv]).expect("dense V");
    let (exact, naive) = (attention_f64(qv, kv, vv, &params), attention_f32_naive(qv, kv, vv, &params));
    let scale = f64::from(params.scale.unwrap_or(if s.d == 0 { 1.0 } else { 1.0 / (s.d as f32).sqrt() }));
    let eps = f64::from(f32::EPSILON);
    let group = s.heads / s.kv_heads;
    let (out, lse) = (&query.out, &query.lse);
    for b in 0..s.batch {
        for h in 0..s.heads {
            let kvh = h / group;
            // Every held key's logit bounds the magnitude (a bound over the keys a row sees, loose
            // but sound); max|V| over the head's held values scales the output floor.
            let v = &v;
            let max_v = (0..lens[b])
                .flat_map(|j| {
                    (0..s.dv).map(move |c| v[((b * s.kv_heads + kvh) * kv_len + j) * s.dv + c].abs())
                })
                .fold(0.0f32, f32::max);
            for i in 0..q_len {
                let r = (b * s.heads + h) * q_len + i;
                let what = format!("entry {b}, head {h}, query {i}");
                let got_out = &out[r * s.dv..][..s.dv];
                if exact.lse[r] == f64::NEG_INFINITY {
                    assert!(
                        got_out.iter().all(|&x| x == 0.0),
                        "{what} sees no key, but its output is {got_out:?}"
                    );
                    assert_eq!(lse[r], f32::NEG_INFINITY, "{what} sees no key");
                    continue;
                }
                let magnitude = (0..lens[b])
                    .map(|j| {
                        let dot: f64 = (0..s.d)
                            .map(|p| {
                                let x = f64::from(q[((b * s.heads + h) * q_len + i) * s.d + p]);
                                (x * f64::from(k[((b * s.kv_heads + kvh) * kv_len + j) * s.d + p])).abs()
                            })
                            .sum();
                        scale * dot + bias_at(b, h, i, j)
                    })
                    .fold(0.0, f64::max);
                let delta = (2.0 + (s.d as f64).sqrt()) * eps * magnitude;
                let (e, n) = (exact.lse[r], f64::from(naive.lse[r]));
                let bound = 2.0 * (n - e).abs() + 1e-5 * (1.0 + e.abs()) + delta;
                let err = (f64::from(lse[r]) - e).abs();
                assert!(err <= bound, "{what}: lse {}, want {e} (error {err:e} > bound {bound:e})", lse[r]);
                for (c, &x) in got_out.iter().enumerate() {
                    let (e, n) = (exact.out[r * s.dv + c], f64::from(naive.out[r * s.dv + c]));
                    let bound = 2.0 * (n - e).abs() + f64::from(max_v) * (1e-5 + 2.0 * delta);
                    let err = (f64::from(x) - e).abs();
                    assert!(
                        err <= bound,
                        "{what}: out[{c}] = {x}, want {e} (error {err:e} > bound {bound:e})"
                    );
                }
            }
        }
    }
}

/// Output, lse and Q buffers of one attend of `q_len` queries.
struct Query {
    q: Vec<f32>,
    out: Vec<f32>,
    lse: Vec<f32>,
}

const SENTINEL: f32 = 1234.5;

impl Query {
    fn decode(bytes: &mut Bytes<'_>, s: Shape, q_len: usize) -> Query {
        let rows = s.batch * s.heads * q_len;
        Query {
            q: (0..rows * s.d).map(|_| value(bytes)).collect(),
            out: vec![SENTINEL; rows * s.dv],
            lse: vec![SENTINEL; rows],
        }
    }

    fn run(
        &mut self,
        s: Shape,
        q_len: usize,
        call: impl FnOnce(View4<'_>, View4Mut<'_>, View4Mut<'_>) -> flashcpu::Result<()>,
    ) -> flashcpu::Result<()> {
        let q = View4::bhld(&self.q, [s.batch, s.heads, q_len, s.d]).expect("dense Q");
        let out = View4Mut::bhld(&mut self.out, [s.batch, s.heads, q_len, s.dv]).expect("dense output");
        let lse = View4Mut::bhld(&mut self.lse, [s.batch, s.heads, q_len, 1]).expect("dense lse");
        let result = call(q, out, lse);
        if result.is_err() {
            assert!(
                self.out.iter().chain(&self.lse).all(|&x| x == SENTINEL),
                "a refused attend wrote its output"
            );
        }
        result
    }
}

pub fn run(data: &[u8]) {
    let mut bytes = Bytes::new(data);
    let (batch, kv_heads, group) = (1 + bytes.below(2), 1 + bytes.below(2), 1 + bytes.below(2));
    let (d, dv) = (bytes.below(9), bytes.below(9));
    let capacity = 1 + bytes.below(MAX_CAPACITY);
    let window = (bytes.byte() % 2 == 1).then(|| 1 + bytes.below(capacity));
    let dtype = [KvDtype::F32, KvDtype::F16, KvDtype::Bf16][bytes.below(3)];
    let s = Shape { batch, kv_heads, heads: kv_heads * group, d, dv, capacity, window, dtype };
    let cfg = KvCacheConfig { batch, kv_heads, head_dim: d, value_dim: dv, capacity, dtype, window };
    let mut cache = KvCache::new(cfg).expect("a valid configuration");
    let mut model = Model { shape: s, rows: vec![Vec::new(); batch], oldest: vec![0; batch] };
    let ops = 1 + bytes.below(MAX_OPS);
    for op in 0..ops {
        let code = bytes.below(8);
        let what = format!("{s:?}, operation {op} (code {code})");
        match code {
            0 | 1 => {
                let (seq, n) = (bytes.below(batch + 1), bytes.below(capacity + 2));
                let chunk = Chunk::decode(&mut bytes, s, 1, n);
                let ok = seq < batch && !chunk.defective && n <= model.room(seq);
                let (k, v) = chunk.views();
                let result = cache.append(seq, k, v);
                assert_eq!(result.is_ok(), ok, "{what}: append({seq}, {n}): {result:?}");
                if ok {
                    model.append(seq, chunk.rows(0, dtype));
                }
            }
            2 => {
                let n = bytes.below(capacity + 2);
                let chunk = Chunk::decode(&mut bytes, s, batch, n);
                let ok = !chunk.defective && (0..batch).all(|b| n <= model.room(b));
                let (k, v) = chunk.views();
                let result = cache.append_all(k, v);
                assert_eq!(result.is_ok(), ok, "{what}: append_all({n}): {result:?}");
                if ok {
                    (0..batch).for_each(|b| model.append(b, chunk.rows(b, dtype)));
                }
            }
            3 => {
                let seq = bytes.below(batch + 1);
                let (floor, len) = if seq < batch { (model.floor(seq), model.len(seq)) } else { (0, 0) };
                let candidates = [floor.wrapping_sub(1), floor, len, len + 1, bytes.below(len + 2)];
                let to = candidates[bytes.below(candidates.len())];
                let ok = seq < batch && floor <= to && to <= len;
                let result = cache.truncate(seq, to);
                assert_eq!(result.is_ok(), ok, "{what}: truncate({seq}, {to}): {result:?}");
                if ok {
                    model.rows[seq].truncate(to);
                }
            }
            4 => {
                let seq = bytes.below(batch + 1);
                let result = cache.reset(seq);
                assert_eq!(result.is_ok(), seq < batch, "{what}: reset({seq}): {result:?}");
                if seq < batch {
                    model.rows[seq].clear();
                    model.oldest[seq] = 0;
                }
            }
            5 | 6 => {
                let q_len = 1 + bytes.below(MAX_Q);
                let params = Params::decode(&mut bytes, s, q_len, model.key_columns());
                let mut query = Query::decode(&mut bytes, s, q_len);
                let p = params.attention();
                let result = query.run(s, q_len, |q, out, lse| cache.attend(q, out, Some(lse), &p));
                let window = params.effective_window(&model, q_len);
                assert_eq!(result.is_ok(), window.is_some(), "{what}: attend of {q_len}: {result:?}");
                if let Some(window) = window {
                    check_attention(&model, &query, q_len, &params, window);
                }
            }
            _ => {
                let n = bytes.below(capacity + 2);
                let chunk = Chunk::decode(&mut bytes, s, batch, n);
                let q_len = 1 + bytes.below(MAX_Q);
                let appended = !chunk.defective && (0..batch).all(|b| n <= model.room(b));
                let mut after = Model { shape: s, rows: model.rows.clone(), oldest: model.oldest.clone() };
                if appended {
                    (0..batch).for_each(|b| after.append(b, chunk.rows(b, dtype)));
                }
                let params = Params::decode(&mut bytes, s, q_len, after.key_columns());
                let mut query = Query::decode(&mut bytes, s, q_len);
                let p = params.attention();
                let (k, v) = chunk.views();
                let result =
                    query.run(s, q_len, |q, out, lse| cache.append_and_attend((k, v), q, out, Some(lse), &p));
                let window = params.effective_window(&after, q_len).filter(|_| appended);
                assert_eq!(
                    result.is_ok(),
                    window.is_some(),
                    "{what}: append_and_attend({n}, {q_len}): {result:?}"
                );
                if let Some(window) = window {
                    model = after;
                    check_attention(&model, &query, q_len, &params, window);
                }
            }
        }
        model.check(&cache, &what);
    }
}
