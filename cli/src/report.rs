//! Timing, thread pools and the table/JSON output shared by every command.

use crate::Common;
use flashcpu::IsaKind;
use std::error::Error;
use std::time::Instant;

pub type CmdResult<T = ()> = Result<T, Box<dyn Error + Send + Sync>>;

/// `println!` that returns the write's error instead of panicking, so that a closed pipe
/// (`flashcpu bench … | head -1`) ends the command quietly (see `main`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}
pub(crate) use out;

/// Most threads `--threads` accepts: far beyond any machine's cores, short of what the OS refuses.
const MAX_THREADS: usize = 1024;

/// What a command needs once the pool is up.
pub struct Ctx {
    pub threads: usize,
    pub isa: IsaKind,
    pub json: bool,
}

/// Runs `f` inside a rayon pool of `--threads` threads with the chosen ISA resolved.
pub fn with_pool(common: &Common, f: impl FnOnce(&Ctx) -> CmdResult + Send) -> CmdResult {
    let isa = match &common.isa {
        Some(name) => {
            let kind = flashcpu::parse_isa(name)?;
            if !flashcpu::available_isas().contains(&kind) {
                return Err(format!("{} is not supported by this CPU", kind.name()).into());
            }
            kind
        }
        None => flashcpu::active_isa()?,
    };
    let threads =
        common.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if !(1..=MAX_THREADS).contains(&threads) {
        return Err(format!("--threads must be between 1 and {MAX_THREADS}").into());
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    pool.install(|| f(&Ctx { threads, isa, json: common.json }))
}

/// Median wall time of `f` in seconds: one warm-up, then repeats until 7 runs and 1 s have passed
/// (at most 50 runs).
pub fn median_seconds(mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < 7 || (start.elapsed().as_secs_f64() < 1.0 && times.len() < 50) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The FMA peak for the context's ISA and threads.
pub fn peak_gflops(ctx: &Ctx) -> Result<f64, flashcpu::Error> {
    flashcpu::peak::fma_peak_gflops(Some(ctx.isa), ctx.threads)
}

/// One line for a compute-bound operation: `flops` done in `median_s`, as GFLOP/s and as a share
/// of the FMA peak measured now, plus `extra` keys (e.g. the error against the reference).
pub fn emit_rate(
    ctx: &Ctx,
    op: &str,
    shape: &str,
    median_s: f64,
    flops: f64,
    extra: &[(&str, f64)],
) -> CmdResult {
    let gflops = flops / median_s / 1e9;
    let peak = peak_gflops(ctx)?;
    let mut fields = vec![("gflops", gflops), ("peak_gflops", peak), ("pct_peak", 100.0 * gflops / peak)];
    fields.extend_from_slice(extra);
    emit(ctx, op, shape, median_s, &fields)?;
    Ok(())
}

/// One result line, as a table row or a JSON object. `fields` are extra numeric keys.
pub fn emit(ctx: &Ctx, op: &str, shape: &str, median_s: f64, fields: &[(&str, f64)]) -> std::io::Result<()> {
    if ctx.json {
        let mut line = format!(
            "{{\"op\":\"{op}\",\"shape\":\"{shape}\",\"isa\":\"{}\",\"threads\":{},\"median_s\":{median_s:.6e}",
            ctx.isa.name(),
            ctx.threads
        );
        for (key, value) in fields {
            line += &format!(",\"{key}\":{}", json_number(*value));
        }
        out!("{line}}}")
    } else {
        let mut line = format!(
            "{op:<8} {shape:<22} isa {:<8} threads {:<2} median {:>10.3} ms",
            ctx.isa.name(),
            ctx.threads,
            median_s * 1e3
        );
        for (key, value) in fields {
            line += &if value.abs() < 0.01 && *value != 0.0 {
                format!("  {key} {value:.2e}")
            } else {
                format!("  {key} {value:.2}")
            };
        }
        out!("{line}")
    }
}

/// JSON has no NaN or infinity; report them as null.
fn json_number(x: f64) -> String {
    if x.is_finite() { format!("{x}") } else { "null".into() }
}

/// `flashcpu peak`.
pub fn peak(ctx: &Ctx) -> CmdResult {
    let gflops = peak_gflops(ctx)?;
    emit(ctx, "peak", "fma-chains", 0.0, &[("gflops", gflops)])?;
    let gbps = flashcpu::peak::read_bandwidth_gbps(Some(ctx.isa), ctx.threads)?;
    emit(ctx, "peak", "read-512MiB", 0.0, &[("gbps", gbps)])?;
    Ok(())
}
