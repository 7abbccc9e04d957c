//! What `meki-run` does, as library functions: text generation, tokenization
//! and perplexity. The binary only parses flags and prints.

use crate::model::forward::Logits;
use crate::model::profile::StageProfile;
use crate::model::{KvType, Model, Session};
use crate::sampler::{Sampler, SamplerParams};
use crate::tokenizer::{StreamDecoder, Tokenizer};
use std::io::Write;
use std::time::Instant;

/// Timings of a generation, printed like llama.cpp's summary.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub load_ms: f64,
    /// Setting up the session: its KV cache and the prompt's work buffers
    /// ([`Session::reserve`]).
    pub session_ms: f64,
    pub prompt_tokens: usize,
    pub prompt_ms: f64,
    /// Forward passes after the prompt's (one per generated token but the
    /// last, whose logits are never needed): what `gen_ms` timed, as
    /// llama.cpp counts its eval "runs".
    pub gen_runs: usize,
    pub gen_ms: f64,
    /// Time per forward-pass stage (`GenerateOptions::profile`): the
    /// prompt's batch and the decode steps.
    pub profile: Option<(StageProfile, StageProfile)>,
}

impl Timings {
    pub fn report(&self) -> String {
        let rate = |n: usize, ms: f64| {
            if ms > 0.0 {
                n as f64 * 1000.0 / ms
            } else {
                0.0
            }
        };
        format!(
            "load time = {:.2} ms\nsession set-up time = {:.2} ms\nprompt eval time = {:.2} ms / {} tokens ({:.2} tokens per second)\n\
             eval time = {:.2} ms / {} runs ({:.2} tokens per second)\nresident memory = {:.1} MiB",
            self.load_ms,
            self.session_ms,
            self.prompt_ms,
            self.prompt_tokens,
            rate(self.prompt_tokens, self.prompt_ms),
            self.gen_ms,
            self.gen_runs,
            rate(self.gen_runs, self.gen_ms),
            resident_mib(),
        )
    }

    /// The stage tables of a profiled generation (empty if not profiled).
    pub fn profile_report(&self) -> String {
        match &self.profile {
            Some((batch, decode)) => {
                format!("{}{}", batch.report("prompt"), decode.report("decode"))
            }
            None => String::new(),
        }
    }
}

/// Resident set size of this process (Linux/Android `/proc`), 0 elsewhere.
pub fn resident_mib() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|pages| pages * 4096.0 / (1024.0 * 1024.0))
        .unwrap_or(0.0)
}

pub struct GenerateOptions {
    pub prompt: String,
    pub n_predict: usize,
    pub n_ctx: usize,
    pub kv: KvType,
    pub sampler: SamplerParams,
    pub ignore_eos: bool,
    /// Time the forward pass stage by stage ([`Timings::profile`]).
    pub profile: bool,
}

/// Generate a completion of `prompt`, streaming text to `out`.
pub fn generate(
    model: &Model,
    tok: &Tokenizer,
    opts: &GenerateOptions,
    out: &mut dyn Write,
) -> Result<(Vec<u32>, Timings), String> {
    let mut t = Timings::default();
    let prompt = tok.encode(&opts.prompt, true, true);
    if prompt.is_empty() {
        return Err("the prompt is empty and the model adds no BOS token".into());
    }
    let n_ctx = opts.n_ctx.min(model.config.n_ctx_train.max(opts.n_ctx));
    if prompt.len() >= n_ctx {
        return Err(format!(
            "the prompt has {} tokens, more than the context size {n_ctx} allows",
            prompt.len()
        ));
    }
    let start = Instant::now();
    let mut session = Session::new(model, n_ctx, opts.kv);
    // The prompt's work buffers and the cache positions of the prompt and
    // the reply before the timers start, as llama.cpp's context reserves
    // its buffers when it is created.
    session.reserve(prompt.len(), prompt.len().saturating_add(opts.n_predict));
    t.session_ms = start.elapsed().as_secs_f64() * 1e3;
    session.set_profiling(opts.profile);
    let mut sampler = Sampler::new(opts.sampler.clone());
    for &p in &prompt {
        sampler.accept(p);
    }
    let mut dec = StreamDecoder::without_special();
    let io = |e: std::io::Error| format!("writing output: {e}");
    write!(out, "{}", opts.prompt).map_err(io)?;
    out.flush().map_err(io)?;

    let start = Instant::now();
    let mut logits = session.forward(&prompt, Logits::Last)?;
    t.prompt_ms = start.elapsed().as_secs_f64() * 1e3;
    t.prompt_tokens = prompt.len();

    let mut generated = Vec::new();
    let start = Instant::now();
    while generated.len() < opts.n_predict && session.n_past() < n_ctx {
        let next = sampler.sample(&logits);
        if !opts.ignore_eos && tok.is_eog(next) {
            break;
        }
        sampler.accept(next);
        generated.push(next);
        write!(out, "{}", dec.push(tok, next)).map_err(io)?;
        out.flush().map_err(io)?;
        if generated.len() == opts.n_predict || session.n_past() >= n_ctx {
            break;
        }
        session.forward_into(&[next], Logits::Last, &mut logits)?;
        t.gen_runs += 1;
    }
    write!(out, "{}", dec.finish()).map_err(io)?;
    t.gen_ms = start.elapsed().as_secs_f64() * 1e3;
    if let (Some(batch), Some(decode)) = (session.batch_profile(), session.decode_profile()) {
        t.profile = Some((batch.clone(), decode.clone()));
    }
    Ok((generated, t))
}

/// Perplexity with llama-perplexity's method: the text is tokenized once
/// (with BOS when the model wants it), cut into non-overlapping chunks of
/// `n_ctx` tokens, the first token of each chunk replaced by BOS (when the
/// model adds one), and each chunk is scored on its second half.
pub struct PerplexityResult {
    pub ppl: f64,
    pub chunks: usize,
    pub tokens_scored: usize,
    pub per_chunk: Vec<f64>,
}

pub fn perplexity(
    model: &Model,
    tok: &Tokenizer,
    text: &str,
    n_ctx: usize,
    n_batch: usize,
    kv: KvType,
    progress: &mut dyn FnMut(usize, usize, f64),
) -> Result<PerplexityResult, String> {
    let tokens = tok.encode(text, true, false);
    if n_ctx < 8 {
        return Err(format!("context size {n_ctx} is too small for perplexity"));
    }
    let n_chunks = tokens.len() / n_ctx;
    if n_chunks == 0 {
        return Err(format!(
            "the text has {} tokens; perplexity needs at least one chunk of {n_ctx} (use a smaller -c)",
            tokens.len()
        ));
    }
    let first = n_ctx / 2;
    let mut nll = 0f64;
    let mut count = 0usize;
    let mut per_chunk = Vec::with_capacity(n_chunks);
    let mut session = Session::new(model, n_ctx, kv);
    session.reserve(n_batch.clamp(1, n_ctx), n_ctx);
    for c in 0..n_chunks {
        let mut chunk: Vec<u32> = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if tok.add_bos() {
            if let Some(b) = tok.bos() {
                chunk[0] = b;
            }
        }
        session.rewind(0);
        let mut logits = Vec::with_capacity(n_ctx * model.config.n_vocab);
        for batch in chunk.chunks(n_batch.max(1)) {
            logits.extend(session.forward(batch, Logits::All)?);
        }
        let nv = model.config.n_vocab;
        for i in first..n_ctx - 1 {
            let row = &logits[i * nv..(i + 1) * nv];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let sum: f64 = row.iter().map(|&l| ((l as f64) - max).exp()).sum();
            let logp = row[chunk[i + 1] as usize] as f64 - max - sum.ln();
            nll -= logp;
            count += 1;
        }
        let ppl = (nll / count as f64).exp();
        per_chunk.push(ppl);
        progress(c + 1, n_chunks, ppl);
    }
    Ok(PerplexityResult {
        ppl: (nll / count as f64).exp(),
        chunks: n_chunks,
        tokens_scored: count,
        per_chunk,
    })
}
