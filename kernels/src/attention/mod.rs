//! The flash-attention work item: one Q tile of every query head in a KV-head group, walked across
//! its K/V tiles with an online softmax. Threads, planning and validation live in `flashcpu`.

mod rows;
mod tile;

use crate::isa::{Isa, dispatch};
use crate::view::{MatMut, MatRef};
use half::{bf16, f16};

/// The rule part of the mask: absolute query row `i` sees keys `[max(0, i + lo), min(key_len, i + hi))`.
///
/// Causal masks (either alignment), sliding windows and per-sequence key lengths all reduce to
/// this interval, which is non-decreasing in `i`; that is what lets a whole K tile be classified as
/// empty, full or partial from its corner rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRule {
    /// Offset of the first visible key relative to the row (very negative: no left limit).
    pub lo: i64,
    /// Offset one past the last visible key relative to the row (very large: no right limit).
    pub hi: i64,
    /// Keys at or past this index do not exist for this sequence (padding).
    pub key_len: usize,
}

impl KeyRule {
    /// The visible key interval of absolute query row `i`; empty when `start ≥ end`.
    pub fn range(&self, i: usize) -> (usize, usize) {
        let clamp = |x: i64| x.clamp(0, self.key_len as i64) as usize;
        let i = i as i64;
        (clamp(i.saturating_add(self.lo)), clamp(i.saturating_add(self.hi)))
    }
}

/// Keys or values of one KV head, in the cache's storage type. Half-precision tiles are widened
/// to f32 in scratch (F16C where the CPU has it, through `half`), so accumulation is always f32
/// and queries are never rounded down.
#[derive(Clone, Copy, Debug)]
pub enum KvMat<'a> {
    /// f32 storage, read in place.
    F32(MatRef<'a, f32>),
    /// IEEE half precision.
    F16(MatRef<'a, f16>),
    /// bfloat16.
    Bf16(MatRef<'a, bf16>),
}

/// Calls `$body` with `$m` bound to the typed matrix inside a [`KvMat`], whatever its storage, so
/// generic kernels are instantiated once per storage type.
macro_rules! with_kv {
    ($kv:expr, $m:ident => $body:expr) => {
        match $kv {
            $crate::attention::KvMat::F32($m) => $body,
            $crate::attention::KvMat::F16($m) => $body,
            $crate::attention::KvMat::Bf16($m) => $body,
        }
    };
}

/// A K/V storage type that SIMD code widens to f32 in registers as it loads.
pub(crate) trait Element: Copy {
    /// The value as f32 (exact for all three types).
    fn to_f32(self) -> f32;
    /// `LANES` values from `p`, widened.
    ///
    /// # Safety
    /// `p..p + S::LANES` must be readable.
    unsafe fn load<S: crate::isa::Simd>(s: S, p: *const Self) -> S::V;
    /// The matrix inside `m` if it is stored in this type.
    fn typed(m: KvMat<'_>) -> Option<MatRef<'_, Self>>;
}

impl Element for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    unsafe fn load<S: crate::isa::Simd>(s: S, p: *const f32) -> S::V {
        // SAFETY: the caller's contract.
        unsafe { s.load(p) }
    }
    #[inline(always)]
    fn typed(m: KvMat<'_>) -> Option<MatRef<'_, f32>> {
        if let KvMat::F32(m) = m { Some(m) } else { None }
    }
}

impl Element for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    unsafe fn load<S: crate::isa::Simd>(s: S, p: *const f16) -> S::V {
        // SAFETY: the caller's contract; f16 is 16 raw bits.
        unsafe { s.load_f16(p.cast()) }
    }
    #[inline(always)]
    fn typed(m: KvMat<'_>) -> Option<MatRef<'_, f16>> {
        if let KvMat::F16(m) = m { Some(m) } else { None }
    }
}

impl Element for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    unsafe fn load<S: crate::isa::Simd>(s: S, p: *const bf16) -> S::V {
        // SAFETY: the caller's contract; bf16 is 16 raw bits.
        unsafe { s.load_bf16(p.cast()) }
    }
    #[inline(always)]
    fn typed(m: KvMat<'_>) -> Option<MatRef<'_, bf16>> {
        if let KvMat::Bf16(m) = m { Some(m) } else { None }
    }
}

impl<'a> KvMat<'a> {
    /// Rows `r0..r0 + n`, in the storage type.
    pub(crate) fn block(&self, r0: usize, n: usize) -> KvMat<'a> {
        with_kv!(self, m => KvMat::from(m.block(r0, 0, n, m.cols())))
    }
    /// Whether each row is contiguous, as the row-wise decode kernels read it.
    pub(crate) fn unit_cols(&self) -> bool {
        with_kv!(self, m => m.col_stride() == 1 || m.cols() <= 1)
    }
    /// Rows (keys).
    pub fn rows(&self) -> usize {
        with_kv!(self, m => m.rows())
    }
    /// Columns (head dimension).
    pub fn cols(&self) -> usize {
        with_kv!(self, m => m.cols())
    }
    /// Rows `r0..r0 + n` as f32: in place for f32 when their layout is what `need` asks, else
    /// copied (half precision widened) into `buf` (dense, `n × cols`) in registers.
    #[inline(always)]
    pub(crate) fn rows_f32<'s, S: crate::isa::Simd>(
        &self,
        s: S,
        r0: usize,
        n: usize,
        buf: &'s mut [f32],
        need: RowLayout,
    ) -> MatRef<'s>
    where
        'a: 's,
    {
        let cols = self.cols();
        if let KvMat::F32(m) = self {
            let tile = m.block(r0, 0, n, cols);
            let in_place = match need {
                RowLayout::Any => true,
                RowLayout::UnitCols => tile.col_stride() == 1 || cols <= 1,
                RowLayout::Dense => tile.has_dense_rows(),
            };
            if in_place {
                return tile;
            }
        }
        with_kv!(self, m => widen(s, m.block(r0, 0, n, cols), buf))
    }
    /// Rows `r0..r0 + n` as prefetch targets (see [`AheadRows`]). Assumes unit column stride:
    /// for other strides the hints are merely less useful.
    pub(crate) fn ahead_rows(&self, r0: usize, n: usize) -> AheadRows {
        with_kv!(self, m => AheadRows::of(m, r0, n))
    }
}

/// The layout [`KvMat::rows_f32`] must hand out, f32 rows being read in place when they have it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowLayout {
    /// Any strides.
    Any,
    /// Unit column stride.
    UnitCols,
    /// Dense rows: unit column stride and rows `cols` apart. For the prefill products, which read
    /// each tile many times: rows a page or more apart (a `[b, l, h, d]` tensor with many heads)
    /// streamed from L2 far slower than a copy (attention over such K and V ran at two thirds of
    /// its speed over dense ones).
    Dense,
}

/// Rows of a K or V tile to fetch into L2 while another tile is read, so that the next pass
/// finds them there: a plain description rather than a closure, which would not inherit the
/// kernel's target features and would cost a call per key.
///
/// The reader fetches a line ahead for each line it reads, at the same offset of the same row,
/// so the hints go out at the pace of the data: fetching all lines of a row at once as each key
/// began left decoding a fifth slower.
#[derive(Clone, Copy)]
pub(crate) struct AheadRows {
    base: *const u8,
    /// Bytes from one row to the next.
    stride: usize,
    rows: usize,
    /// Bytes of a row.
    width: usize,
}

impl AheadRows {
    /// Nothing to fetch.
    pub(crate) const NONE: AheadRows = AheadRows { base: core::ptr::null(), stride: 0, rows: 0, width: 0 };

    fn of<T: Copy>(m: &MatRef<'_, T>, r0: usize, n: usize) -> AheadRows {
        let bytes = size_of::<T>();
        AheadRows {
            base: m.ptr().wrapping_add(r0.wrapping_mul(m.row_stride())).cast(),
            stride: m.row_stride().wrapping_mul(bytes),
            rows: n,
            width: m.cols() * bytes,
        }
    }

    /// Start of row `j`, or `fallback` (a row being read, already in L1) when there is no such
    /// row: the caller then prefetches without a branch per line.
    #[inline(always)]
    pub(crate) fn row_or(&self, j: usize, fallback: *const u8) -> *const u8 {
        if j < self.rows { self.base.wrapping_add(j.wrapping_mul(self.stride)) } else { fallback }
    }

    /// The lines of row `j` from byte `from` on, if there is such a row. No bounds check is
    /// needed: a prefetch never faults, so the addresses may wrap.
    #[inline(always)]
    pub(crate) fn fetch_from<S: crate::isa::Simd>(&self, s: S, j: usize, from: usize) {
        if j < self.rows {
            let row = self.base.wrapping_add(j.wrapping_mul(self.stride));
            for offset in (from..self.width).step_by(64) {
                s.prefetch_far(row.wrapping_add(offset).cast());
            }
        }
    }
}

impl<'a> From<MatRef<'a, f32>> for KvMat<'a> {
    fn from(m: MatRef<'a, f32>) -> Self {
        KvMat::F32(m)
    }
}

impl<'a> From<MatRef<'a, f16>> for KvMat<'a> {
    fn from(m: MatRef<'a, f16>) -> Self {
        KvMat::F16(m)
    }
}

impl<'a> From<MatRef<'a, bf16>> for KvMat<'a> {
    fn from(m: MatRef<'a, bf16>) -> Self {
        KvMat::Bf16(m)
    }
}

/// Copies `m` into `buf` as a dense f32 matrix: a vector at a time where a row is contiguous,
/// one value at a time elsewhere.
#[inline(always)]
fn widen<'s, S: crate::isa::Simd, T: Element>(s: S, m: MatRef<'_, T>, buf: &'s mut [f32]) -> MatRef<'s> {
    let (n, cols) = (m.rows(), m.cols());
    let body = cols - cols % S::LANES;
    for (j, dst) in buf.chunks_exact_mut(cols.max(1)).take(n).enumerate() {
        match m.row_slice(j) {
            Some(src) => {
                // A plain pointer walk: this loop is where decoding first touches each K/V byte,
                // and iterator and slice checks here cost as much as the conversion itself.
                let (src_p, dst_p) = (src.as_ptr(), dst.as_mut_ptr());
                let mut c = 0;
                while c < body {
                    // SAFETY: c + LANES ≤ body ≤ cols, the length of both `src` and `dst`.
                    unsafe { s.store(dst_p.add(c), T::load(s, src_p.add(c))) };
                    c += S::LANES;
                }
                for c in body..cols {
                    dst[c] = src[c].to_f32();
                }
            }
            None => dst.iter_mut().enumerate().for_each(|(c, x)| *x = m.at(j, c).to_f32()),
        }
    }
    MatRef::new(&*buf, n, cols, cols, 1).expect("conversion buffer holds n × cols")
}

/// One query head's part of a work item.
#[derive(Debug)]
pub struct HeadTile<'a> {
    /// The tile's query rows, `rows × d`.
    pub q: MatRef<'a>,
    /// Where the tile's output rows go, `rows × dv`.
    pub out: MatMut<'a>,
    /// Where the rows' log-sum-exp goes, if requested (`rows` floats).
    pub lse: Option<&'a mut [f32]>,
    /// Additive bias for the tile's rows, `rows × kv_len`.
    pub bias: Option<MatRef<'a>>,
    /// Boolean mask for the tile's rows, `rows × kv_len`; `false` hides a key.
    pub mask: Option<MatRef<'a, bool>>,
    /// ALiBi slope: adds `−slope·|i + alibi_offset − j|` to score (i, j).
    pub alibi_slope: Option<f32>,
    /// Attention-sink logit that joins the softmax denominator.
    pub sink: Option<f32>,
}

/// A work item: the same rows of every query head that shares one K/V head.
#[derive(Debug)]
pub struct TileJob<'a> {
    /// The query heads of the group (all with the same rows).
    pub heads: Vec<HeadTile<'a>>,
    /// Keys, `kv_len × d`.
    pub k: KvMat<'a>,
    /// Values, `kv_len × dv`.
    pub v: KvMat<'a>,
    /// Absolute index of the tile's first query row.
    pub q_start: usize,
    /// Which keys each row may see.
    pub rule: KeyRule,
    /// The slice of keys this item covers, `start..end` (all of them, or one split of a split-KV
    /// decode whose partial results are merged afterwards).
    pub keys: (usize, usize),
    /// `kv_len − q_len`: the diagonal offset that ALiBi distances are measured from.
    pub alibi_offset: i64,
    /// Multiplies Q·Kᵀ (usually 1/√d).
    pub scale: f32,
    /// Logit soft-cap `c`: scores become `c·tanh(s/c)`.
    pub softcap: Option<f32>,
    /// Keys per K/V tile.
    pub bc: usize,
    /// The caller has checked that every value in V is finite ([`all_finite`]), so the kernel can
    /// skip its per-tile check. `false` is always safe.
    pub v_known_finite: bool,
}

/// Whether every element of `m` is finite; vectorised for unit column stride. Half-precision
/// storage always answers `false` (its tiles are checked after widening).
pub fn all_finite(isa: Isa, m: MatRef<'_>) -> bool {
    if m.col_stride() != 1 {
        return (0..m.rows()).all(|i| (0..m.cols()).all(|j| m.at(i, j).is_finite()));
    }
    dispatch!(isa,
        // SAFETY: a MatRef with unit column stride has `cols` readable floats in each row.
        portable => unsafe { crate::softmax::all_finite(crate::isa::Portable, m.ptr(), m.rows(), m.cols(), m.row_stride()) },
        // SAFETY: an Isa of kind Avx2Fma or Avx512 is only made after detecting AVX2, FMA and F16C.
        avx2 => unsafe { all_finite_avx2(crate::isa::Avx2Fma::new_unchecked(), m) },
    )
}

/// # Safety
/// The CPU must support AVX2 and FMA, and `m` must have unit column stride.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn all_finite_avx2(s: crate::isa::Avx2Fma, m: MatRef<'_>) -> bool {
    // SAFETY: unit column stride (the contract) gives `cols` readable floats per row.
    unsafe { crate::softmax::all_finite(s, m.ptr(), m.rows(), m.cols(), m.row_stride()) }
}

/// Floats of scratch that [`attend`] needs for `rows` stacked query rows (all heads of the item),
/// on any ISA; `None` if that count overflows `usize`.
pub fn scratch_len(rows: usize, d: usize, dv: usize, bc: usize) -> Option<usize> {
    let padded = tile::padded_rows(rows)?;
    let parts = [
        rows.checked_mul(d)?,
        padded.checked_mul(d)?,
        tile::scores_len(bc, rows)?,
        bc.checked_mul(d.checked_add(dv.checked_mul(2)?)?)?,
        dv.checked_mul(padded)?,
        padded.checked_mul(3)?,
    ];
    parts.iter().try_fold(0usize, |sum, &x| sum.checked_add(x))
}

/// Runs one work item: for each K/V tile the mask does not hide, S = Q·Kᵀ, the score transforms,
/// the online softmax update and O += P·V; then O /= l and lse = m + ln l.
///
/// Semantics: a row that sees no key (and has no sink) gets O = 0 and lse = −∞; keys the mask hides
/// are never read when a whole tile is hidden, and never influence a row when only some are;
/// non-finite values reach exactly the rows that attend to them.
///
/// Panics if the parts' shapes disagree or `scratch` is shorter than [`scratch_len`].
pub fn attend(isa: Isa, job: TileJob<'_>, scratch: &mut [f32]) {
    let rows = job.heads.first().map_or(0, |h| h.q.rows());
    let (kv_len, d, dv) = (job.k.rows(), job.k.cols(), job.v.cols());
    assert!(job.bc > 0 && job.v.rows() == kv_len && job.rule.key_len <= kv_len, "attend: K/V shapes");
    for h in &job.heads {
        assert!(
            h.q.rows() == rows && h.q.cols() == d && h.out.rows() == rows && h.out.cols() == dv,
            "attend: head tile shapes"
        );
        assert!(h.lse.as_ref().is_none_or(|l| l.len() == rows), "attend: lse length");
        assert!(h.bias.is_none_or(|b| b.rows() == rows && b.cols() == kv_len), "attend: bias shape");
        assert!(h.mask.is_none_or(|m| m.rows() == rows && m.cols() == kv_len), "attend: mask shape");
    }
    let need = rows.checked_mul(job.heads.len()).and_then(|m_rows| scratch_len(m_rows, d, dv, job.bc));
    assert!(need.is_some_and(|need| scratch.len() >= need), "attend: scratch");
    dispatch!(isa,
        portable => tile::attend_body::<_, false>(crate::isa::Portable, job, scratch),
        // SAFETY: an Isa of kind Avx2Fma or Avx512 is only made after detecting AVX2, FMA and F16C.
        avx2 => unsafe { attend_avx2(crate::isa::Avx2Fma::new_unchecked(), job, scratch) },
        avx512 => {
            // SAFETY: an Isa of kind Avx512 is only made after detecting AVX-512F, AVX2, FMA and F16C.
            let s = unsafe { crate::isa::Avx512::new_unchecked() };
            if tile::is_rowwise(rows * job.heads.len()) {
                // SAFETY: the token proves the features.
                unsafe { attend_avx512::<true>(s, job, scratch) }
            } else {
                // SAFETY: the token proves the features.
                unsafe { attend_avx512::<false>(s, job, scratch) }
            }
        },
    )
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_avx2(s: crate::isa::Avx2Fma, job: TileJob<'_>, scratch: &mut [f32]) {
    tile::attend_body::<_, false>(s, job, scratch)
}

/// An item on 16-lane zmm vectors. Row-wise (decode) items get an instantiation of their own
/// (`ROWWISE`), free of the transposed layout's code.
///
/// # Safety
/// The CPU must support AVX-512F, AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn attend_avx512<const ROWWISE: bool>(s: crate::isa::Avx512, job: TileJob<'_>, scratch: &mut [f32]) {
    tile::attend_body::<_, ROWWISE>(s, job, scratch)
}
