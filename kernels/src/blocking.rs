//! One blocking table per ISA: the register tile, the matmul's cache blocks and the attention's
//! tile sizes stand together, derived from the vector width and the cache sizes the CPU reports.
//!
//! ```text
//! MR × NR   register tile: 6 × 16 under AVX2 and portable, 12 × 32 under AVX-512
//! KC        depth of a block: the MR × KC strip of A read in place takes a quarter of L1
//! MC        rows of A per block: the MC × KC panel takes a quarter of L2
//! NC        columns of the shared packed B: the KC × NC panel takes a quarter of L3
//! Bc        keys per attention tile: a K (or V) tile of KV_TILE_BYTES
//! rows      stacked query rows per attention item: ATTENTION_ROWS, whole NR strips on every ISA;
//!           TALL_ATTENTION_ROWS where each item streams more K and V than FAR_KV_BYTES
//! ```

use crate::gemm::{MR, mr_of, nr_of};
use crate::isa::Isa;
use std::sync::OnceLock;

/// Cache capacities in bytes: the level-1 data cache and L2 of one core, and the last level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSizes {
    /// Level-1 data cache of one core.
    pub l1d: usize,
    /// Level-2 cache of one core.
    pub l2: usize,
    /// Level-3 (last-level) cache.
    pub l3: usize,
}

impl CacheSizes {
    /// Where the CPU does not say: a common x86-64 core (32 KiB, 512 KiB, 8 MiB).
    pub const FALLBACK: CacheSizes = CacheSizes { l1d: 32 << 10, l2: 512 << 10, l3: 8 << 20 };

    /// What this CPU reports (CPUID's deterministic cache parameters on x86-64), read once;
    /// [`CacheSizes::FALLBACK`] for any level it does not report.
    pub fn detect() -> CacheSizes {
        static SIZES: OnceLock<CacheSizes> = OnceLock::new();
        *SIZES.get_or_init(|| {
            let found = reported();
            let or = |x: Option<usize>, d: usize| x.filter(|&x| x > 0).unwrap_or(d);
            CacheSizes {
                l1d: or(found[0], Self::FALLBACK.l1d),
                l2: or(found[1], Self::FALLBACK.l2),
                l3: or(found[2], Self::FALLBACK.l3),
            }
        })
    }
}

/// Sizes of the data or unified caches of levels 1, 2 and 3 that CPUID describes: leaf 4 on
/// Intel, leaf 0x8000_001D on AMD, with the same encoding.
#[cfg(target_arch = "x86_64")]
#[allow(unused_unsafe)] // `__cpuid_count` is a safe function on newer compilers than the MSRV
fn reported() -> [Option<usize>; 3] {
    use core::arch::x86_64::__cpuid_count;
    let mut sizes = [None; 3];
    // SAFETY: CPUID exists on every x86-64 CPU; a leaf above the maximum returns data, not a fault.
    let (max_basic, max_ext) = unsafe { (__cpuid_count(0, 0).eax, __cpuid_count(0x8000_0000, 0).eax) };
    for leaf in [4, 0x8000_001D] {
        let supported = if leaf == 4 { max_basic >= 4 } else { max_ext >= leaf };
        for sub in 0..8 {
            if !supported {
                break;
            }
            // SAFETY: as above.
            let r = unsafe { __cpuid_count(leaf, sub) };
            let kind = r.eax & 0x1f; // 0: no more caches, 1: data, 2: instruction, 3: unified
            if kind == 0 {
                break;
            }
            let level = ((r.eax >> 5) & 7) as usize;
            if kind == 2 || !(1..=3).contains(&level) {
                continue;
            }
            let field = |x: u32, shift: u32, bits: u32| ((x >> shift) & ((1 << bits) - 1)) as usize + 1;
            let (ways, partitions, line) = (field(r.ebx, 22, 10), field(r.ebx, 12, 10), field(r.ebx, 0, 12));
            let sets = r.ecx as usize + 1;
            sizes[level - 1] = Some(ways * partitions * line * sets);
        }
        if sizes.iter().any(Option::is_some) {
            break;
        }
    }
    sizes
}

#[cfg(not(target_arch = "x86_64"))]
fn reported() -> [Option<usize>; 3] {
    [None; 3]
}

/// Bytes of one K or V tile in attention prefill. A K and a V tile stay in L2 beside the item's
/// Qᵀ, Sᵀ and Oᵀ (about 150 KiB at 64 query rows, d = 128): 96 KiB each fits any L2 of 512 KiB
/// or more. Against 72 and 144 KiB on a 512 KiB-L2 core, 96 was the fastest at d = 64 and 128.
const KV_TILE_BYTES: usize = 96 << 10;

/// Most keys per tile: narrow heads gain nothing past this (the per-tile work is already long).
const MAX_KEYS_PER_TILE: usize = 384;

/// Stacked query rows per attention item (the heads of a KV group times the rows of each):
/// two 32-query strips under AVX-512, four 16-query strips otherwise, so no lane is wasted on
/// any ISA; at d = 128 the item's Qᵀ and Oᵀ take 32 KiB each.
const ATTENTION_ROWS: usize = 64;

/// Bytes of K and V an item streams (per query row, on average) beyond which the items that
/// share a K/V head no longer find its tiles in the cache behind L2: a core's share of a shared
/// L3 is 2–4 MiB on current servers. Measured on one Zen 4 core (1 MiB L2), 32 heads, d = 128:
/// 64-row items ran at 79 GFLOP/s over 2 and 3 MiB of K and V per head, and at 61–75 over 4 MiB;
/// at d = 64 they fell from 70 GFLOP/s over 2 MiB to 56–61 over 4 and 8 MiB.
const FAR_KV_BYTES: usize = 2 << 20;

/// Stacked query rows per item past [`FAR_KV_BYTES`]: each K/V tile then comes from far once per
/// 256 queries instead of 64. Over 4 MiB of K and V per head this ran 61–75 → 78–83 GFLOP/s
/// (d = 128) and 61 → 80 (d = 64); 512 rows were no better. Below the threshold tall items lose
/// (L 512, d 128: 73 → 61 GFLOP/s; L 4096, d 64: 81 → 73): their scores and Oᵀ crowd L2 (Sᵀ is
/// 192 KiB at 192 keys) with no far traffic to save.
const TALL_ATTENTION_ROWS: usize = 4 * ATTENTION_ROWS;

/// The blocking of one ISA on one CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    /// Rows of the register tile.
    pub mr: usize,
    /// Columns of the register tile, and the width of packed B strips.
    pub nr: usize,
    /// Depth of a matmul block (LOOP 4).
    pub kc: usize,
    /// Rows of A per matmul block (LOOP 3).
    pub mc: usize,
    /// Columns of B per packed panel (LOOP 5).
    pub nc: usize,
}

impl Blocking {
    /// The table for `isa` on this CPU, from the cache sizes it reports.
    pub fn of(isa: Isa) -> Blocking {
        Self::derive((mr_of(isa), nr_of(isa)), CacheSizes::detect())
    }

    /// The table for an `mr × nr` register tile and the given caches.
    pub fn derive((mr, nr): (usize, usize), caches: CacheSizes) -> Blocking {
        let f32s = size_of::<f32>();
        // A quarter of L1 for one MR-row strip of A, the unit both tiles read (the 12-row tile
        // takes two, half of L1); whole cache lines of A per step group (16 floats). Blocks of A
        // are whole tiles tall.
        let kc = round_down(caches.l1d / 4 / (MR * f32s), 64).clamp(128, 1024);
        let mc = round_down(caches.l2 / 4 / (kc * f32s), mr).clamp(4 * mr, 40 * MR);
        let nc = round_down(caches.l3 / 4 / (kc * f32s), nr).clamp(8 * nr, 8192);
        Blocking { mr, nr, kc, mc, nc }
    }

    /// Stacked query rows per attention work item (the heads of a KV group times the rows of
    /// each) when a query row reads `kv_bytes` of K and V on average: 64, or 256 past 2 MiB, where
    /// K/V tiles no longer stay in the cache between the items of a head. Whole NR strips on
    /// every ISA.
    pub fn attention_rows(&self, kv_bytes: usize) -> usize {
        if kv_bytes > FAR_KV_BYTES { TALL_ATTENTION_ROWS } else { ATTENTION_ROWS }
    }

    /// Keys per K/V tile for heads of width `d` (keys) and `dv` (values): a multiple of MR (the keys
    /// are the rows of Sᵀ = K·Qᵀ) whose K or V tile fills 96 KiB, so that a K and a V tile stay in
    /// L2 beside the work item.
    pub fn attention_keys(&self, d: usize, dv: usize) -> usize {
        let row_bytes = d.max(dv).max(1).saturating_mul(size_of::<f32>());
        round_down(KV_TILE_BYTES / row_bytes, self.mr).clamp(4 * self.mr, MAX_KEYS_PER_TILE)
    }
}

/// `x` rounded down to a multiple of `step`.
fn round_down(x: usize, step: usize) -> usize {
    x / step * step
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The derived blocks for the AVX-512 tile on a Zen 5 core (48 KiB, 1 MiB, 32 MiB) and the
    /// AVX2 tile on a Zen 3 one (32 KiB, 512 KiB, 32 MiB).
    #[test]
    fn derived_tables() {
        let zen5 = CacheSizes { l1d: 48 << 10, l2: 1 << 20, l3: 32 << 20 };
        let b = Blocking::derive((12, 32), zen5);
        assert_eq!((b.kc, b.mc, b.nc), (512, 120, 4096));
        assert_eq!([64, 128, 256].map(|d| b.attention_keys(d, d)), [384, 192, 96]);
        let zen3 = CacheSizes { l1d: 32 << 10, l2: 512 << 10, l3: 32 << 20 };
        let b = Blocking::derive((6, 16), zen3);
        assert_eq!((b.kc, b.mc, b.nc), (320, 102, 6544));
        assert_eq!([64, 128, 256].map(|d| b.attention_keys(d, d)), [384, 192, 96]);
        assert_eq!(b.attention_keys(0, 0), 384);
        assert_eq!(b.attention_keys(usize::MAX, 1), 4 * MR);
    }

    #[test]
    fn items_grow_tall_past_the_far_kv_bytes() {
        let b = Blocking::of(Isa::best());
        assert_eq!([0, 2 << 20, (2 << 20) + 1, usize::MAX].map(|x| b.attention_rows(x)), [64, 64, 256, 256]);
        assert!(TALL_ATTENTION_ROWS.is_multiple_of(b.nr) && ATTENTION_ROWS.is_multiple_of(b.nr));
    }

    #[test]
    fn detected_sizes_are_plausible() {
        let c = CacheSizes::detect();
        assert!(c.l1d >= 4 << 10 && c.l2 >= c.l1d && c.l3 >= 1 << 20, "{c:?}");
    }
}
