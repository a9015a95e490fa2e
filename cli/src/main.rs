//! `flashcpu`: measure this machine's peak and benchmark flashcpu's kernels.

mod attention_cmd;
mod data;
mod decode_cmd;
mod demo;
mod matmul_cmd;
mod mha_cmd;
mod report;

use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "flashcpu", version, about = "CPU flash attention and matmul: peak, benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Measure this machine's f32 FMA peak (GFLOP/s).
    Peak {
        #[command(flatten)]
        common: Common,
    },
    /// Benchmark one operation.
    Bench {
        #[command(subcommand)]
        op: BenchOp,
    },
}

#[derive(Subcommand)]
enum BenchOp {
    /// C = A·B for row-major M×K times K×N.
    Matmul {
        /// Rows of A and C.
        #[arg(long, default_value_t = 1024)]
        m: usize,
        /// Columns of B and C.
        #[arg(long, default_value_t = 1024)]
        n: usize,
        /// Columns of A, rows of B.
        #[arg(long, default_value_t = 1024)]
        k: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Flash attention forward on dense [B, H, L, D] tensors (GFLOP/s count the kept work).
    Attention {
        /// Batch size.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Query heads.
        #[arg(long, default_value_t = 32)]
        heads: usize,
        /// Key/value heads (a divisor of --heads; fewer is grouped-query attention).
        #[arg(long)]
        kv_heads: Option<usize>,
        /// Query rows.
        #[arg(long, default_value_t = 2048)]
        q_len: usize,
        /// Key/value rows (default: --q-len).
        #[arg(long)]
        kv_len: Option<usize>,
        /// Head dimension (also the value dimension).
        #[arg(long, default_value_t = 128)]
        head_dim: usize,
        /// Causal mask (bottom-right aligned).
        #[arg(long)]
        causal: bool,
        /// Also time the naive path: S = Q·Kᵀ materialised, softmax, P·V on flashcpu's matmul.
        #[arg(long)]
        naive: bool,
        #[command(flatten)]
        common: Common,
    },
    /// One multi-head attention layer forward: Q/K/V projections, attention, output projection.
    Mha {
        /// Model width.
        #[arg(long, default_value_t = 4096)]
        d_model: usize,
        /// Query heads (head dim = d_model / heads).
        #[arg(long, default_value_t = 32)]
        heads: usize,
        /// Key/value heads.
        #[arg(long, default_value_t = 8)]
        kv_heads: usize,
        /// Tokens per sequence.
        #[arg(long, default_value_t = 2048)]
        seq: usize,
        /// Sequences.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Causal self-attention.
        #[arg(long)]
        causal: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Decoding: a few query rows against a filled KV cache (reports GB/s of K and V read).
    Decode {
        /// Sequences.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Query heads.
        #[arg(long, default_value_t = 32)]
        heads: usize,
        /// Key/value heads.
        #[arg(long, default_value_t = 8)]
        kv_heads: usize,
        /// Cached positions per sequence.
        #[arg(long, default_value_t = 16384)]
        kv_len: usize,
        /// New query rows per sequence.
        #[arg(long, default_value_t = 1)]
        q_len: usize,
        /// Head dimension.
        #[arg(long, default_value_t = 128)]
        head_dim: usize,
        /// Cache storage: f32, f16 or bf16.
        #[arg(long, default_value = "f32")]
        kv_dtype: String,
        #[command(flatten)]
        common: Common,
    },
}

/// Options every command shares.
#[derive(Args, Clone, Debug)]
struct Common {
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Instruction set: portable, avx2 or avx512 (default: FLASHCPU_ISA, else the best available).
    #[arg(long)]
    isa: Option<String>,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go to stdout as clap writes them; a bad argument gets one line.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let message = e.render().to_string();
            let first = message.lines().next().unwrap_or_default();
            eprintln!("flashcpu: {}", first.strip_prefix("error: ").unwrap_or(first));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Some(Command::Peak { common }) => report::with_pool(&common, report::peak),
        Some(Command::Bench { op: BenchOp::Matmul { m, n, k, common } }) => {
            report::with_pool(&common, |c| matmul_cmd::run(c, m, n, k))
        }
        Some(Command::Bench {
            op: BenchOp::Attention { batch, heads, kv_heads, q_len, kv_len, head_dim, causal, naive, common },
        }) => {
            let shape = attention_cmd::Shape {
                batch,
                heads,
                kv_heads: kv_heads.unwrap_or(heads),
                q_len,
                kv_len: kv_len.unwrap_or(q_len),
                head_dim,
                causal,
            };
            report::with_pool(&common, |c| attention_cmd::run(c, shape, naive))
        }
        Some(Command::Bench {
            op: BenchOp::Decode { batch, heads, kv_heads, kv_len, q_len, head_dim, kv_dtype, common },
        }) => decode_cmd::parse_dtype(&kv_dtype).map_err(Into::into).and_then(|dtype| {
            let shape = decode_cmd::DecodeShape { batch, heads, kv_heads, kv_len, q_len, head_dim, dtype };
            report::with_pool(&common, |c| decode_cmd::run(c, shape))
        }),
        Some(Command::Bench {
            op: BenchOp::Mha { d_model, heads, kv_heads, seq, batch, causal, common },
        }) => {
            let shape = mha_cmd::MhaShape { d_model, heads, kv_heads, seq, batch, causal };
            report::with_pool(&common, |c| mha_cmd::run(c, shape))
        }
        None => report::with_pool(&Common { threads: None, isa: None, json: false }, demo::run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`flashcpu … | head -1`): nothing is left to tell it.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flashcpu: {e}");
            ExitCode::FAILURE
        }
    }
}
