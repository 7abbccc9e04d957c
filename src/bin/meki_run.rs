//! `meki-run`: run GGUF models on the CPU (generation, tokenization, perplexity).
//! The work is done by `meki::run`; this file parses flags and prints.

use clap::{Args, Parser, Subcommand};
use meki::model::{KvType, MekiSource, Model};
use meki::run::{self, GenerateOptions};
use meki::sampler::SamplerParams;
use meki::tokenizer::Tokenizer;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "meki-run",
    version,
    about = "Run Qwen3/Qwen2/Llama GGUF models (with or without MeKi tables) on the CPU",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    gen: GenArgs,
}

#[derive(Args)]
struct ModelArgs {
    /// GGUF model file.
    #[arg(short = 'm', long = "model")]
    model: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Context size in tokens (default: 4096, capped by memory you have).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    ctx: usize,
    /// KV cache element type: f16 (default, as llama.cpp) or f32.
    #[arg(long = "kv-type", default_value = "f16", value_parser = ["f16", "f32"])]
    kv_type: String,
    /// MeKi sidecar file (default: the model's own MeKi tensors, or NAME.meki.gguf beside it).
    #[arg(long = "meki", value_name = "FILE", conflicts_with = "no_meki")]
    meki: Option<PathBuf>,
    /// Run the backbone alone, ignoring any MeKi tables.
    #[arg(long = "no-meki")]
    no_meki: bool,
}

#[derive(Args)]
struct GenArgs {
    /// GGUF model file.
    #[arg(short = 'm', long = "model")]
    model: Option<PathBuf>,
    /// Prompt text.
    #[arg(short = 'p', long = "prompt")]
    prompt: Option<String>,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n_predict: usize,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Context size in tokens.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    ctx: usize,
    /// KV cache element type: f16 (default, as llama.cpp) or f32.
    #[arg(long = "kv-type", default_value = "f16", value_parser = ["f16", "f32"])]
    kv_type: String,
    /// Temperature; 0 is greedy decoding.
    #[arg(long, default_value_t = 0.8)]
    temp: f32,
    /// Keep the K most likely tokens (0: all).
    #[arg(long = "top-k", default_value_t = 40)]
    top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches P.
    #[arg(long = "top-p", default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens less likely than M times the most likely one.
    #[arg(long = "min-p", default_value_t = 0.05)]
    min_p: f32,
    /// Penalty for tokens among the last 64 (1.0: off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Random seed for sampling (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Keep generating past end-of-generation tokens.
    #[arg(long = "ignore-eos")]
    ignore_eos: bool,
    /// Interactive chat with the model's chat template (-p, if given, is the first message).
    /// Ctrl-C stops the current answer; Ctrl-D or /exit ends the chat.
    #[arg(long)]
    chat: bool,
    /// MeKi sidecar file (default: the model's own MeKi tensors, or NAME.meki.gguf beside it).
    #[arg(long = "meki", value_name = "FILE", conflicts_with = "no_meki")]
    meki: Option<PathBuf>,
    /// Run the backbone alone, ignoring any MeKi tables.
    #[arg(long = "no-meki")]
    no_meki: bool,
    /// After the timings, print the time per forward-pass stage (norms, products,
    /// attention, MeKi gather and post-norm, head), for the prompt and per decode step.
    #[arg(long)]
    profile: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Print the token ids of a text (one line), with BOS where the model asks for it.
    Tokenize {
        #[command(flatten)]
        model: ModelArgs,
        /// Text to tokenize.
        #[arg(short = 'p', long = "prompt", conflicts_with = "file")]
        prompt: Option<String>,
        /// File to tokenize.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
    },
    /// Perplexity of a text file, llama-perplexity's method (chunks of -c tokens, each scored on its second half).
    Perplexity {
        #[command(flatten)]
        model: ModelArgs,
        /// UTF-8 text file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Tokens per forward batch.
        #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
        batch: usize,
    },
}

fn kv(s: &str) -> KvType {
    if s == "f32" {
        KvType::F32
    } else {
        KvType::F16
    }
}

fn meki_source(meki: Option<PathBuf>, no_meki: bool) -> MekiSource {
    match (meki, no_meki) {
        (_, true) => MekiSource::Disabled,
        (Some(p), false) => MekiSource::Sidecar(p),
        (None, false) => MekiSource::Auto,
    }
}

fn load(
    path: &PathBuf,
    meki: &MekiSource,
    threads: usize,
) -> Result<(Model, Tokenizer, f64), String> {
    let start = Instant::now();
    let model = Model::open_with(path, meki, threads)?;
    let tok = Tokenizer::from_gguf(&model.file)
        .map_err(|e| format!("{}: tokenizer: {e}", path.display()))?;
    Ok((model, tok, start.elapsed().as_secs_f64() * 1e3))
}

fn read_text(path: &PathBuf) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "{}: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Tokenize {
            model,
            prompt,
            file,
        }) => tokenize(model, prompt, file),
        Some(Command::Perplexity { model, file, batch }) => perplexity(model, file, batch),
        None => generate(cli.gen),
    };
    if let Err(e) = result {
        eprintln!("meki-run: {e}");
        std::process::exit(1);
    }
}

fn tokenize(m: ModelArgs, prompt: Option<String>, file: Option<PathBuf>) -> Result<(), String> {
    let text = match (prompt, file) {
        (Some(p), _) => p,
        (None, Some(f)) => read_text(&f)?,
        (None, None) => return Err("tokenize needs -p TEXT or -f FILE".into()),
    };
    let gguf =
        meki::gguf::GgufFile::open(&m.model).map_err(|e| format!("{}: {e}", m.model.display()))?;
    let tok = Tokenizer::from_gguf(&gguf).map_err(|e| format!("tokenizer: {e}"))?;
    let ids = tok.encode(&text, true, true);
    let line: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    println!("{}", line.join(" "));
    Ok(())
}

fn perplexity(m: ModelArgs, file: PathBuf, batch: usize) -> Result<(), String> {
    let text = read_text(&file)?;
    let (model, tok, _) = load(&m.model, &meki_source(m.meki, m.no_meki), m.threads)?;
    let start = Instant::now();
    let mut progress = |done: usize, total: usize, ppl: f64| {
        let el = start.elapsed().as_secs_f64();
        let eta = el / done as f64 * (total - done) as f64;
        eprint!("\r[{done}/{total}] running PPL = {ppl:.4}  elapsed {el:.0}s  ETA {eta:.0}s   ");
        let _ = std::io::stderr().flush();
    };
    let r = run::perplexity(
        &model,
        &tok,
        &text,
        m.ctx,
        batch,
        kv(&m.kv_type),
        &mut progress,
    )?;
    eprintln!();
    println!("chunks = {}, tokens scored = {}", r.chunks, r.tokens_scored);
    println!("PPL = {:.6}", r.ppl);
    Ok(())
}

fn generate(g: GenArgs) -> Result<(), String> {
    let model_path = g.model.clone().map_or_else(default_model, Ok)?;
    if g.chat {
        return chat(g, model_path);
    }
    let prompt = g.prompt.clone().ok_or("no prompt given (-p TEXT)")?;
    let (model, tok, load_ms) = load(
        &model_path,
        &meki_source(g.meki.clone(), g.no_meki),
        g.threads,
    )?;
    let opts = GenerateOptions {
        prompt,
        n_predict: g.n_predict,
        n_ctx: g.ctx,
        kv: kv(&g.kv_type),
        sampler: sampler_params(&g),
        ignore_eos: g.ignore_eos,
        profile: g.profile,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (_, mut timings) = run::generate(&model, &tok, &opts, &mut out)?;
    writeln!(out).map_err(|e| e.to_string())?;
    timings.load_ms = load_ms;
    eprintln!("\n{}", timings.report());
    eprint!("{}", timings.profile_report());
    Ok(())
}

/// The model that ships in `models/` (used when -m is not given).
fn default_model() -> Result<PathBuf, String> {
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/meki-small.gguf");
    if shipped.exists() {
        Ok(shipped)
    } else {
        Err(format!(
            "no model given (-m MODEL.gguf) and {} does not exist",
            shipped.display()
        ))
    }
}

fn sampler_params(g: &GenArgs) -> SamplerParams {
    let seed = g.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    SamplerParams {
        temp: g.temp,
        top_k: g.top_k,
        top_p: g.top_p,
        min_p: g.min_p,
        repeat_penalty: g.repeat_penalty,
        repeat_last_n: 64,
        seed,
    }
}

fn chat(g: GenArgs, model_path: PathBuf) -> Result<(), String> {
    use meki::chat::{Chat, ChatTemplate};
    use std::io::BufRead;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    let (model, tok, _) = load(
        &model_path,
        &meki_source(g.meki.clone(), g.no_meki),
        g.threads,
    )?;
    let source = model
        .file
        .metadata()
        .get_str("tokenizer.chat_template")
        .map_err(|_| "the model has no tokenizer.chat_template: --chat needs one".to_string())?;
    let template = ChatTemplate::new(source, &tok)?;
    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = stop.clone();
    ctrlc::set_handler(move || handler_stop.store(true, std::sync::atomic::Ordering::SeqCst))
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    let session = meki::model::Session::new(&model, g.ctx, kv(&g.kv_type));
    let mut chat = Chat::new(session, &tok, template);
    let mut sampler = meki::sampler::Sampler::new(sampler_params(&g));
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut first = g.prompt.clone();
    eprintln!(
        "chat with {} (Ctrl-C stops an answer, Ctrl-D or /exit quits)",
        model_path.display()
    );
    loop {
        let user = match first.take() {
            Some(p) => p,
            None => {
                eprint!("\n> ");
                let _ = std::io::stderr().flush();
                match lines.next() {
                    Some(Ok(l)) => l,
                    Some(Err(e)) => return Err(format!("reading stdin: {e}")),
                    None => break,
                }
            }
        };
        let user = user.trim();
        if user == "/exit" {
            break;
        }
        if user.is_empty() {
            continue;
        }
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        match chat.reply(user, &mut sampler, g.n_predict.max(1), &stop, &mut out) {
            Ok(_) => writeln!(out).map_err(|e| e.to_string())?,
            Err(e) => eprintln!("\nmeki-run: {e}"),
        }
    }
    Ok(())
}
