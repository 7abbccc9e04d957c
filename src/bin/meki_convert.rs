//! `meki-convert`: GGUF conversion front end. The logic lives in the library
//! (`meki::gguf`, `meki::quant`) so tests can call it without a subprocess.

use clap::{Parser, Subcommand};
use meki::kernels::formats::GgmlType;
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
    Quantize(meki::quant::QuantizeOptions),
    /// Convert a MeKi training checkpoint (HF-style directory, or Megatron
    /// .pt / iter_* dir / dir with latest_checkpointed_iteration.txt) to GGUF,
    /// folding the MeKi tables.
    Checkpoint(CheckpointArgs),
}

#[derive(clap::Args)]
struct CheckpointArgs {
    /// Checkpoint directory or file.
    path: PathBuf,
    /// Output GGUF.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Backbone type: f32, f16, bf16, q8_0, q4_0, q4_k_m, ... (llama-quantize names).
    #[arg(long = "type", default_value = "f16")]
    backbone_type: String,
    /// Folded table type: f16, q8_0 or f32.
    #[arg(long, default_value = "f16")]
    table_type: String,
    /// Tokenizer directory (tokenizer.json, tokenizer_config.json); default: PATH for HF checkpoints.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Keep this GGUF's backbone byte for byte and add only the MeKi tensors.
    #[arg(long)]
    base: Option<PathBuf>,
    /// Write the MeKi tensors to the sidecar OUT.meki.gguf; OUT stays a plain backbone.
    #[arg(long)]
    split_tables: bool,
    /// Expected MeKi width d_mem (checked against the tensors).
    #[arg(long)]
    meki_dim: Option<usize>,
    /// MeKi projection type (blk.N.meki_gate / meki_out): f32, f16, bf16,
    /// q8_0, q5_0, q5_1, q4_0 or q4_1 (default: as any 2-D tensor of --type).
    #[arg(long, value_name = "T", value_parser = meki::quant::parse_meki_proj_type)]
    meki_proj_type: Option<GgmlType>,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
}

fn main() {
    let cli = Cli::parse();
    // Ctrl-C, kill or a file-size limit must not leave half-written outputs.
    meki::gguf::cleanup_on_signal();
    let result = match cli.command {
        Command::Inspect { file } => meki::gguf::inspect::run(&file),
        Command::Quantize(o) => meki::quant::quantize_file(&o),
        Command::Checkpoint(a) => {
            meki::convert::convert_checkpoint(&meki::convert::CheckpointOptions {
                input: a.path,
                output: a.output,
                backbone_type: a.backbone_type,
                table_type: a.table_type,
                meki_proj_type: a.meki_proj_type,
                tokenizer: a.tokenizer,
                base: a.base,
                split_tables: a.split_tables,
                threads: a.threads,
                meki_dim: a.meki_dim,
                progress: true,
            })
            .map(|_| ())
        }
    };
    if let Err(e) = result {
        eprintln!("meki-convert: {e}");
        std::process::exit(1);
    }
}
