//! `flashcpu bench matmul`.

use crate::data::{positive, uniform, zeros};
use crate::report::{CmdResult, Ctx, emit_rate, median_seconds};
use flashcpu::{MatMut, MatRef, MatmulOptions, matmul_with, reference};

/// Rows checked against the f64 reference (the full check is O(m·n·k) in slow f64 loops).
const CHECKED_ROWS: usize = 8;

pub fn run(ctx: &Ctx, m: usize, n: usize, k: usize) -> CmdResult {
    positive(&[("m", m), ("n", n), ("k", k)])?;
    let a = uniform("A", &[m, k], 1)?;
    let b = uniform("B", &[k, n], 2)?;
    let mut c = zeros("C", &[m, n])?;
    let opts = MatmulOptions { isa: Some(ctx.isa), ..Default::default() };
    let call = |c: &mut [f32]| -> flashcpu::Result<()> {
        matmul_with(
            &opts,
            1.0,
            MatRef::row_major(&a, m, k)?,
            MatRef::row_major(&b, k, n)?,
            0.0,
            MatMut::row_major(c, m, n)?,
        )
    };
    call(&mut c)?;
    let median_s = median_seconds(|| call(&mut c).expect("validated above"));
    let mut max_err = 0.0f64;
    for i in (0..m).step_by(m.div_ceil(CHECKED_ROWS).max(1)) {
        let row = reference::matmul_f64(MatRef::new(&a[i * k..], 1, k, k, 1)?, MatRef::row_major(&b, k, n)?);
        for (j, want) in row.iter().enumerate() {
            max_err = max_err.max((f64::from(c[i * n + j]) - want).abs());
        }
    }
    let flops = 2.0 * m as f64 * n as f64 * k as f64;
    emit_rate(ctx, "matmul", &format!("{m}x{k}x{n}"), median_s, flops, &[("max_abs_err", max_err)])
}
