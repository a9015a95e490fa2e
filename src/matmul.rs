//! `C ← α·A·B + β·C` for strided f32 matrices: loops 5–3 of BLIS here, loops 2–1 and the
//! microkernel in `flashcpu-kernels`.
//!
//! ```text
//! LOOP 5 (JC): n in NC blocks
//!   LOOP 4 (PC): k in KC blocks; pack B[KC×NC] (in parallel over NR strips)
//!     LOOP 3 (IC): m in MC blocks, in parallel (with n split further when m is short); A read
//!     in place (unit-stride rows) or packed
//!       macro-kernel (JR, IR, microkernel)
//! ```
//! Every C element sums its k products in the same order whatever the thread count (KC blocks in
//! order, p in order inside each), so results are bit-identical for 1 and N threads.

use crate::error::{Error, Result};
use crate::isa::{IsaKind, resolve};
use crate::scratch::{Slot, empty_slot, with_buffer};
use crate::view::{MatMut, MatRef};
use flashcpu_kernels::blocking::Blocking;
use flashcpu_kernels::gemm::{Lhs, MAX_NR, MR, PackedA, PackedB, Rhs, macro_kernel};
use flashcpu_kernels::{Isa, view as kv};
use rayon::prelude::*;

/// How a call may use threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Parallelism {
    /// Spread work over the current rayon pool: the global pool, or the caller's own when called
    /// inside `pool.install(..)`.
    #[default]
    Rayon,
    /// Run on the calling thread only.
    Sequential,
}

/// Options for [`matmul_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct MatmulOptions {
    /// Force an instruction set; `None` uses the detected (or `FLASHCPU_ISA`) default.
    pub isa: Option<IsaKind>,
    /// Threads.
    pub parallelism: Parallelism,
}

/// `C ← α·A·B + β·C` on the default ISA and the current rayon pool.
///
/// A is `m × k`, B is `k × n`, C is `m × n`, each with any strides. `k = 0` gives `C = β·C`;
/// `m = 0` or `n = 0` does nothing. With `β = 0`, C is only written, so NaN or garbage in C never
/// leaks into the result. NaN and infinity in A or B propagate as IEEE arithmetic says; α and β
/// must be finite (like attention's scale), else [`Error::InvalidParameter`]: a NaN or infinite
/// factor would fill C with NaN even where A, B and C are finite (∞·0).
///
/// ```
/// use flashcpu::{matmul, MatMut, MatRef};
/// let a = [1.0, 2.0, 3.0, 4.0]; // 2×2 row-major
/// let b = [5.0, 6.0, 7.0, 8.0];
/// let mut c = [0.0; 4];
/// matmul(1.0, MatRef::row_major(&a, 2, 2)?, MatRef::row_major(&b, 2, 2)?, 0.0,
///        MatMut::row_major(&mut c, 2, 2)?)?;
/// assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
/// # Ok::<(), flashcpu::Error>(())
/// ```
pub fn matmul(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: MatMut<'_>) -> Result<()> {
    matmul_with(&MatmulOptions::default(), alpha, a, b, beta, c)
}

/// [`matmul`] with an explicit ISA and threading choice.
pub fn matmul_with(
    opts: &MatmulOptions,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: MatMut<'_>,
) -> Result<()> {
    let isa = resolve(opts.isa)?;
    if a.cols() != b.rows() || a.rows() != c.rows() || b.cols() != c.cols() {
        return Err(Error::ShapeMismatch(format!(
            "A is {}×{}, B is {}×{}, C is {}×{}",
            a.rows(),
            a.cols(),
            b.rows(),
            b.cols(),
            c.rows(),
            c.cols()
        )));
    }
    if !(alpha.is_finite() && beta.is_finite()) {
        return Err(Error::InvalidParameter(format!("α and β must be finite, got α = {alpha}, β = {beta}")));
    }
    gemm(isa, opts.parallelism, alpha, a.0, b.0, beta, c.0);
    Ok(())
}

thread_local! {
    static A_PACK: Slot = empty_slot();
    static B_PACK: Slot = empty_slot();
}

/// The blocked product on checked views. Also the entry point for the crate's other modules.
pub(crate) fn gemm(
    isa: Isa,
    par: Parallelism,
    alpha: f32,
    a: kv::MatRef<'_>,
    b: kv::MatRef<'_>,
    beta: f32,
    mut c: kv::MatMut<'_>,
) {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        scale_in_place(c, beta);
        return;
    }
    let threads = match par {
        Parallelism::Rayon => rayon::current_num_threads(),
        Parallelism::Sequential => 1,
    };
    if m <= SMALL_M && Rhs::direct(isa, b).is_some() {
        small_m(isa, threads, alpha, a, b, beta, c);
        return;
    }
    let blk = Blocking::of(isa);
    // LOOP 5 (JC): n in NC blocks.
    let mut c_rest = c.rb();
    for jc in (0..n).step_by(blk.nc) {
        let nc = blk.nc.min(n - jc);
        let (mut c_jc, right) = c_rest.split_at_col(nc);
        c_rest = right;
        // LOOP 4 (PC): k in KC blocks; the first applies β, later ones accumulate.
        for pc in (0..k).step_by(blk.kc) {
            let kc = blk.kc.min(k - pc);
            let beta_pc = if pc == 0 { beta } else { 1.0 };
            let b_blk = b.block(pc, jc, kc, nc);
            with_buffer(&B_PACK, PackedB::len_for(isa, kc, nc), |buf| {
                let b_pack = pack_b(isa, b_blk, buf, threads);
                let a_blk = a.block(0, pc, m, kc);
                loop3(isa, &blk, threads, alpha, a_blk, b_pack, beta_pc, c_jc.rb());
            });
        }
    }
}

/// Rows of A up to which B is read in place instead of packed (a few tokens being decoded through
/// a projection): packing would read and write every weight once more than the product itself
/// reads it.
const SMALL_M: usize = 16;

/// Depth of one pass of the small-m path: a 64-row slab of B (contiguous in a row-major weight)
/// is walked strip by strip, so a strip's rows stay within a few pages.
const SMALL_M_KC: usize = 64;

/// Columns per work item of the small-m path: whole NR strips on every ISA.
const SMALL_M_NCHUNK: usize = 8 * MAX_NR;

/// `C ← α·A·B + β·C` for few rows of A and a B whose rows are whole unit-stride strips: column
/// chunks in parallel, each walking k in [`SMALL_M_KC`] slabs with B read in place. The k order
/// per element is fixed by the shape, so any thread count gives the same bits.
fn small_m(
    isa: Isa,
    threads: usize,
    alpha: f32,
    a: kv::MatRef<'_>,
    b: kv::MatRef<'_>,
    beta: f32,
    c: kv::MatMut<'_>,
) {
    let (k, n) = (a.cols(), b.cols());
    let mut chunks = Vec::with_capacity(n.div_ceil(SMALL_M_NCHUNK));
    let mut rest = c;
    for j0 in (0..n).step_by(SMALL_M_NCHUNK) {
        let (chunk, right) = rest.split_at_col(SMALL_M_NCHUNK.min(n - j0));
        rest = right;
        chunks.push((j0, chunk));
    }
    let run = |(j0, mut chunk): (usize, kv::MatMut<'_>)| {
        let nc = chunk.cols();
        for pc in (0..k).step_by(SMALL_M_KC) {
            let kc = SMALL_M_KC.min(k - pc);
            let rhs =
                Rhs::direct(isa, b.block(pc, j0, kc, nc)).expect("a column block of a direct B is direct");
            let beta_pc = if pc == 0 { beta } else { 1.0 };
            macro_kernel(isa, Lhs::Strided(a.block(0, pc, a.rows(), kc)), rhs, chunk.rb(), alpha, beta_pc);
        }
    };
    if threads > 1 && chunks.len() > 1 {
        chunks.into_par_iter().for_each(run);
    } else {
        chunks.into_iter().for_each(run);
    }
}

/// Items per thread that LOOP 3 aims for at least (see [`loop3`]).
const ITEMS_PER_THREAD: usize = 8;

/// Packs B, splitting its NR strips across threads when there are several.
fn pack_b<'a>(isa: Isa, b: kv::MatRef<'_>, buf: &'a mut [f32], threads: usize) -> PackedB<'a> {
    let (k, n) = (b.rows(), b.cols());
    // Columns per task: whole strips on every ISA.
    const TASK_COLS: usize = 8 * MAX_NR;
    if threads == 1 || n <= TASK_COLS {
        return PackedB::pack(isa, b, buf);
    }
    buf[..PackedB::len_for(isa, k, n)].par_chunks_mut(TASK_COLS * k).enumerate().for_each(|(t, chunk)| {
        let j0 = t * TASK_COLS;
        PackedB::pack(isa, b.block(0, j0, k, TASK_COLS.min(n - j0)), chunk);
    });
    PackedB::from_buffer(isa, buf, k, n)
}

/// LOOP 3 (IC): m in MC blocks; a work item that packs its A panel does so into thread-local
/// scratch.
///
/// With several threads the items are made even and plentiful, so that one slow core (a shared
/// machine) delays the pass by a small item, not a large one: the row blocks are shrunk until
/// their count is a multiple of the thread count and made even ([`even_row_blocks`]), and n is
/// split until there are at least [`ITEMS_PER_THREAD`] items per thread. Splitting C this way
/// never changes its bits: each element still sums its k products in one order.
#[allow(clippy::too_many_arguments)] // the product, its blocking and its threads
fn loop3(
    isa: Isa,
    blk: &Blocking,
    threads: usize,
    alpha: f32,
    a: kv::MatRef<'_>,
    b: PackedB<'_>,
    beta: f32,
    c: kv::MatMut<'_>,
) {
    let (m, n, nr) = (c.rows(), c.cols(), blk.nr);
    let (m_blocks, n_split) = if threads > 1 {
        let m_blocks = m.div_ceil(blk.mc).next_multiple_of(threads).min(m.div_ceil(blk.mr));
        (m_blocks, (ITEMS_PER_THREAD * threads).div_ceil(m_blocks).min(n.div_ceil(nr)))
    } else {
        (m.div_ceil(blk.mc), 1)
    };
    let n_chunk = n.div_ceil(nr).div_ceil(n_split) * nr;
    let mut items = Vec::with_capacity(m_blocks * n_split);
    let mut rows_rest = c;
    let mut ic = 0;
    for mc in even_row_blocks(m, m_blocks, blk.mr) {
        let (mut rows, below) = rows_rest.split_at_row(mc);
        rows_rest = below;
        for jr in (0..n).step_by(n_chunk) {
            let (block, right) = rows.split_at_col(n_chunk.min(n - jr));
            rows = right;
            items.push((ic, jr, block));
        }
        ic += mc;
    }
    let run = |(ic, jr, block): (usize, usize, kv::MatMut<'_>)| {
        let a_blk = a.block(ic, 0, block.rows(), a.cols());
        let b_blk = b.sub_cols(jr, block.cols());
        if packing_a_pays(a_blk, block.cols(), (blk.mr, nr)) {
            with_buffer(&A_PACK, PackedA::len_for(block.rows(), a.cols()), |buf| {
                macro_kernel(isa, Lhs::Packed(PackedA::pack(isa, a_blk, buf)), b_blk, block, alpha, beta)
            });
        } else {
            macro_kernel(isa, Lhs::Streamed(a_blk), b_blk, block, alpha, beta);
        }
    };
    if threads > 1 && items.len() > 1 {
        items.into_par_iter().for_each(run);
    } else {
        items.into_iter().for_each(run);
    }
}

/// `m` rows in `blocks` consecutive blocks of whole `mr`-row strips whose sizes differ by at most
/// one strip (the last block may be cut short by `m`): even items leave no thread a long one to
/// finish alone. 2048 rows in 12 blocks of 12-row strips: three of 180, eight of 168, one of 164,
/// where blocks of 180 left 68 rows for the last.
pub(crate) fn even_row_blocks(m: usize, blocks: usize, mr: usize) -> impl Iterator<Item = usize> {
    let strips = m.div_ceil(mr);
    let blocks = blocks.clamp(1, strips.max(1));
    let (base, extra) = (strips / blocks, strips % blocks);
    let mut left = m;
    (0..blocks).map(move |b| {
        let rows = ((base + usize::from(b < extra)) * mr).min(left);
        left -= rows;
        rows
    })
}

/// Packing A costs one pass over the panel, repaid once the panel is reused across several NR
/// strips of B. Where the register tile is one MR strip tall, unit-stride rows are read in place
/// instead: each strip is fetched one strip ahead the first time and found in L2 after that
/// (`Lhs::Streamed`), and packing measured slower on every shape tried. Columns with a stride (a
/// transposed A) put every k step in a different cache line, and AVX-512's 12-row tile runs at
/// its speed only on packed strips (read in place, its twelve row addresses spill registers).
fn packing_a_pays(a: kv::MatRef<'_>, nc: usize, (mr, nr): (usize, usize)) -> bool {
    (a.col_stride() != 1 || mr > MR) && a.rows() > MR && nc > 8 * nr
}

/// `C ← β·C`, never reading C when `β = 0` (for `k = 0`).
fn scale_in_place(mut c: kv::MatMut<'_>, beta: f32) {
    for i in 0..c.rows() {
        for j in 0..c.cols() {
            let v = if beta == 0.0 { 0.0 } else { beta * c.at(i, j) };
            c.set(i, j, v);
        }
    }
}
