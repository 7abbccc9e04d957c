//! `meki-bench`: kernel and end-to-end benchmarks (logic lives in `meki::bench`).
use clap::{Parser, Subcommand};
use meki::bench::kernels::{self, Options};
use meki::bench::twin;
use meki::kernels::Isa;

#[derive(Parser)]
#[command(name = "meki-bench", about = "meki benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Matrix-vector / matrix-matrix kernel throughput vs memory bandwidth and FMA peak.
    ///
    /// Per format and shape: decode (1 token) and prefill (--prefill-tokens)
    /// through the plain row kernels (the FORMAT rows, what llama.cpp's
    /// test-backend-ops measures) and, for the formats the engine repacks at
    /// load (Q4_0, Q4_K, Q6_K, Q8_0 on AVX2), through the engine path on repacked
    /// 8-row groups (the FORMAT:pk rows; --no-packed skips them). With
    /// --vs-llama the same for llama.cpp's 4096x14336 cases, side by side.
    Kernels {
        /// Threads (the caller included).
        #[arg(short = 't', long, default_value_t = 2)]
        threads: usize,
        /// Comma-separated weight formats (q4_0,q8_0,q4_K,...); default: all.
        #[arg(long, value_delimiter = ',')]
        formats: Vec<String>,
        /// Comma-separated ROWSxCOLS shapes; default: the 7 standard shapes.
        #[arg(long, value_delimiter = ',')]
        shapes: Vec<String>,
        /// Shorter timings, smaller bandwidth buffer, no prefill on the output head.
        #[arg(long)]
        quick: bool,
        /// Tokens of the prefill (matrix-matrix) measurement.
        #[arg(long, default_value_t = 512)]
        prefill_tokens: usize,
        /// Kernel family (scalar, avx2, neon, neon-nodotprod); default: detected / MEKI_KERNELS.
        #[arg(long)]
        isa: Option<String>,
        /// Path to llama.cpp's test-backend-ops: compare MUL_MAT side by side
        /// (llama.cpp / meki ratios for the plain kernels and the engine path).
        #[arg(long)]
        vs_llama: Option<std::path::PathBuf>,
        /// Time by CPU time per thread instead of wall clock (A/B on a loaded machine).
        #[arg(long)]
        cpu_time: bool,
        /// Skip the bandwidth / FMA peak / dispatch measurements.
        #[arg(long)]
        no_refs: bool,
        /// Alternating llama.cpp / meki rounds of `--vs-llama` (best of each side).
        #[arg(long, default_value_t = 3)]
        vs_llama_rounds: usize,
        /// Skip the engine-path rows (FORMAT:pk: weights repacked at load).
        #[arg(long)]
        no_packed: bool,
    },
    /// Decode speed of a MeKi model vs its dense twin and vs itself with
    /// --no-meki, in one process, alternating blocks of tokens (ratios per round).
    Twin {
        /// The MeKi model (single file, or with its sidecar beside it).
        meki: std::path::PathBuf,
        /// Its dense twin (no MeKi tensors).
        dense: std::path::PathBuf,
        /// Threads (the caller included).
        #[arg(short = 't', long, default_value_t = 1)]
        threads: usize,
        /// Timed decode steps per model per round.
        #[arg(long, default_value_t = 256)]
        tokens: usize,
        /// Timed steps in one model's turn before the next model runs.
        #[arg(long, default_value_t = 16)]
        block: usize,
        /// Rounds (each with fresh KV caches); the ratio is reported per round.
        #[arg(long, default_value_t = 9)]
        rounds: usize,
        /// Drop the MeKi tables from the page cache before every round (the
        /// MeKi model then reads its table rows from storage while decoding).
        #[arg(long)]
        cold: bool,
        /// After the decode rounds, also time prefill of this many tokens
        /// (one fresh prompt per model per round, same rotating orders;
        /// 0: decode only).
        #[arg(long, default_value_t = 0)]
        prompt: usize,
        /// Prefill the prompt in forward calls of this many tokens (micro-
        /// batches), the three models taking turns call by call like decode
        /// blocks, each call timed on its own (0: the whole prompt in one
        /// call). Pairs the models within a fraction of a second, not a round.
        #[arg(long, default_value_t = 0)]
        prompt_block: usize,
        /// Load the three models once (default: again before every round, in
        /// that round's order, so that where each lands in memory does not
        /// favour one of them).
        #[arg(long)]
        no_reload: bool,
        /// Time by the CPU time of the process's threads (time on a CPU,
        /// without the time other processes or a VM's host took the core)
        /// instead of the wall clock; clean at 1 thread (at more, waiting
        /// workers spin and that counts)
        #[arg(long)]
        cpu_time: bool,
        /// Also time each decode step (and, with --prompt, each prefill
        /// call) stage by stage (wall clock) and print, per stage,
        /// microseconds per step or call for the three models and MeKi's
        /// difference to each: where its extra time goes.
        #[arg(long)]
        profile: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Kernels {
            threads,
            formats,
            shapes,
            quick,
            prefill_tokens,
            isa,
            vs_llama,
            cpu_time,
            no_refs,
            vs_llama_rounds,
            no_packed,
        } => (|| {
            let formats = if formats.is_empty() {
                kernels::DEFAULT_FORMATS.to_vec()
            } else {
                formats
                    .iter()
                    .map(|f| kernels::parse_format(f))
                    .collect::<Result<_, _>>()?
            };
            let shapes = if shapes.is_empty() {
                kernels::DEFAULT_SHAPES.to_vec()
            } else {
                shapes
                    .iter()
                    .map(|s| kernels::parse_shape(s))
                    .collect::<Result<_, _>>()?
            };
            let isa = match isa {
                None => meki::kernels::isa(),
                Some(s) => {
                    Isa::from_name(&s).ok_or_else(|| format!("unknown kernel family {s:?}"))?
                }
            };
            kernels::run(&Options {
                threads,
                formats,
                shapes,
                quick,
                prefill_tokens,
                isa,
                vs_llama,
                cpu_time,
                no_refs,
                vs_llama_rounds,
                no_packed,
            })
        })(),
        Cmd::Twin {
            meki,
            dense,
            threads,
            tokens,
            block,
            rounds,
            cold,
            prompt,
            prompt_block,
            no_reload,
            cpu_time,
            profile,
        } => twin::run(&twin::TwinOptions {
            meki,
            dense,
            threads,
            tokens,
            block,
            rounds,
            cold,
            prompt,
            prompt_block,
            reload: !no_reload,
            cpu_time,
            profile,
        }),
    };
    if let Err(e) = result {
        eprintln!("meki-bench: {e}");
        std::process::exit(1);
    }
}
