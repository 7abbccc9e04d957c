//! `meki-convert`: GGUF conversion front end. The logic lives in the library
//! (`meki::gguf`, `meki::quant`) so tests can call it without a subprocess.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "meki-convert",
    version,
    about = "Convert, quantize and inspect GGUF files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a GGUF file's metadata (long arrays abbreviated) and tensor table.
    Inspect {
        /// GGUF file to read.
        file: PathBuf,
    },
    /// Quantize a GGUF model, like llama-quantize.
    Quantize {
        /// Input GGUF (F32/F16/BF16 weights, or already quantized).
        input: PathBuf,
        /// Output GGUF (written to a temporary file, renamed when complete).
        output: PathBuf,
        /// Target: f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, q4_k_m, q5_k_m.
        #[arg(value_name = "TYPE")]
        target: String,
        /// Use TYPE for every 2-D tensor (no mix: embedding and output too).
        #[arg(long)]
        pure: bool,
        /// Worker threads (default: all cores).
        #[arg(short = 't', long, default_value_t = 0)]
        threads: usize,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { file } => meki::gguf::inspect::run(&file),
        Command::Quantize {
            input,
            output,
            target,
            pure,
            threads,
        } => meki::quant::quantize_file(&meki::quant::QuantizeOptions {
            input,
            output,
            target,
            pure,
            threads,
        }),
    };
    if let Err(e) = result {
        eprintln!("meki-convert: {e}");
        std::process::exit(1);
    }
}
