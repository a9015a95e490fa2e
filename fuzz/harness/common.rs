//! Shared by the fuzz harnesses (one per public entry point, each in its own file beside this
//! one): a byte reader that never runs dry, element decoding with NaN and infinities, and
//! flashcpu's tolerance rule. Each harness includes this file as a module; not every harness uses
//! every helper.
#![allow(dead_code)]

/// Reads the fuzzer's bytes front to back. Past the end it continues with a xorshift stream seeded
/// by the input, whose bytes stay below [`SPECIAL`], so short inputs still fill their matrices,
/// with finite values only: NaN and infinities appear only where the input itself puts them.
pub struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
    state: u64,
}

/// Element bytes from here up decode to special values (see [`Bytes::element`]).
pub const SPECIAL: u8 = 0xFC;

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Bytes<'a> {
        // FNV-1a of the input: a different tail stream for every input.
        let hash = data
            .iter()
            .fold(0xCBF2_9CE4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3));
        Bytes { data, pos: 0, state: hash | 1 }
    }

    pub fn byte(&mut self) -> u8 {
        if let Some(&b) = self.data.get(self.pos) {
            self.pos += 1;
            return b;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        ((self.state >> 32) % u64::from(SPECIAL)) as u8
    }

    /// A number in `0..n` (`n ≤ 256`).
    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }

    /// One of `options`.
    pub fn pick<T: Copy>(&mut self, options: &[T]) -> T {
        options[self.below(options.len())]
    }

    /// A power of two in `2⁻⁸..2⁷`: the scale of one matrix's elements.
    pub fn scale(&mut self) -> f32 {
        2f32.powi(self.below(16) as i32 - 8)
    }

    /// A matrix element: `0xFF` NaN, `0xFE` +∞, `0xFD` −∞, `0xFC` −0, any other byte `b` gives
    /// `(b as i8) / 16 · scale`. Finite elements stay within ±2¹⁰, far from f32 overflow and
    /// underflow for the products and sums of a small matmul, so a non-finite result can only
    /// come from a non-finite input.
    pub fn element(&mut self, scale: f32) -> f32 {
        match self.byte() {
            0xFF => f32::NAN,
            0xFE => f32::INFINITY,
            0xFD => f32::NEG_INFINITY,
            0xFC => -0.0,
            b => f32::from(b as i8) / 16.0 * scale,
        }
    }
}

/// flashcpu's tolerance rule: a kernel result may be at most twice as far from the f64 `exact`
/// value as the naive f32 computation is, plus `4·ε·magnitude`, where `magnitude` is the f64 sum of
/// the absolute values of every term (for matmul `|α|·Σ_p|a_ip·b_pj| + |β·c_old|`). The floor
/// absorbs a different summation order and the final α, β roundings; a missing or extra term lies
/// far outside it. `None` when `naive` is not finite: f32 overflowed there, so the kernel may too.
pub fn tolerance(exact: f64, naive: f32, magnitude: f64) -> Option<f64> {
    naive
        .is_finite()
        .then(|| 2.0 * (f64::from(naive) - exact).abs() + 4.0 * f64::from(f32::EPSILON) * magnitude)
}

/// Shape, strides and buffer length of one fuzzed matrix operand.
#[derive(Clone, Copy, Debug)]
pub struct Operand {
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
    pub len: usize,
}

impl Operand {
    /// An operand with strides `(rs, cs)` and a buffer that fits it with 0..2 elements of slack,
    /// or (`short`) that ends 1..3 elements early. Where the view needs more than `max_len`
    /// elements, or its extent overflows, the buffer is a short one of 0..63 elements that the
    /// view constructors must refuse.
    pub fn new(
        bytes: &mut Bytes<'_>,
        (rows, cols): (usize, usize),
        (rs, cs): (usize, usize),
        short: bool,
        max_len: usize,
    ) -> Operand {
        let len = match extent(rows, cols, rs, cs) {
            Some(e) if short => e.saturating_sub(1 + bytes.below(3)),
            Some(e) if e <= max_len => e + bytes.below(3),
            _ => bytes.below(64),
        };
        Operand { rows, cols, rs, cs, len }
    }

    /// Whether the view lies inside its buffer: the bounds rule the constructors must follow.
    pub fn fits(&self) -> bool {
        extent(self.rows, self.cols, self.rs, self.cs).is_some_and(|e| e <= self.len)
    }

    /// Whether no two indices share an element (what an output view needs).
    pub fn distinct(&self) -> bool {
        distinct_offsets(self.rows, self.cols, self.rs, self.cs)
    }
}

/// A stride byte: mostly small, with three that overflow or reach far past any buffer.
pub fn stride(b: u8) -> usize {
    match b {
        255 => usize::MAX,
        254 => usize::MAX / 2 + 1,
        253 => 1 << 33,
        b => usize::from(b) % 48,
    }
}

/// Offset of the last element of a `rows × cols` view plus one: the slice length it needs (0 when
/// empty), or `None` when that overflows `usize`.
pub fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1).checked_mul(rs)?.checked_add((cols - 1).checked_mul(cs)?)?.checked_add(1)
}

/// Whether `(i, j) ↦ i·rs + j·cs` is one-to-one on the grid, by brute force (small grids only).
pub fn distinct_offsets(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    let mut offsets: Vec<usize> = (0..rows).flat_map(|i| (0..cols).map(move |j| i * rs + j * cs)).collect();
    let len = offsets.len();
    offsets.sort_unstable();
    offsets.dedup();
    offsets.len() == len
}
