//! `flashcpu`: measure this machine's peak and benchmark flashcpu's kernels.

mod data;
mod matmul_cmd;
mod report;

use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "flashcpu",
    version,
    about = "CPU flash attention and matmul: peak, benchmarks"
)]
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
}

/// Options every command shares.
#[derive(Args, Clone, Debug)]
struct Common {
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Instruction set: portable or avx2fma (default: FLASHCPU_ISA, else the best available).
    #[arg(long)]
    isa: Option<String>,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Peak { common }) => report::with_pool(&common, report::peak),
        Some(Command::Bench {
            op: BenchOp::Matmul { m, n, k, common },
        }) => report::with_pool(&common, |c| matmul_cmd::run(c, m, n, k)),
        None => report::with_pool(
            &Common {
                threads: None,
                isa: None,
                json: false,
            },
            |c| matmul_cmd::run(c, 1024, 1024, 1024),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flashcpu: {e}");
            ExitCode::FAILURE
        }
    }
}
