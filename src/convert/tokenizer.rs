//! `tokenizer.json` (+ `tokenizer_config.json`, `config.json`) of a byte-level
//! BPE tokenizer -> GGUF tokenizer metadata, as llama.cpp's
//! `convert_hf_to_gguf.py` (`_set_vocab_gpt2`, gguf-py `SpecialVocab`) writes it.

use crate::gguf::{Array, Value};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::Path;

/// Qwen2/Qwen3's pre-tokenizer regex (llama.cpp `qwen2`).
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's (llama.cpp `llama-bpe`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// gguf-py `TokenType`.
const NORMAL: i32 = 1;
const UNUSED: i32 = 5;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

/// The tokenizer's metadata, in the order convert_hf_to_gguf.py writes it.
pub struct TokenizerMeta {
    pub kv: Vec<(String, Value)>,
    pub n_tokens: usize,
}

fn read_json(path: &Path) -> Result<Json, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `does_token_look_special` of convert_hf_to_gguf.py.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<\u{ff5c}") && t.ends_with("\u{ff5c}>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// Which llama.cpp pre-tokenizer the tokenizer.json's pre_tokenizer is.
fn pre_name(pre: &Json) -> Result<&'static str, String> {
    let ty = pre.get("type").and_then(Json::as_str).unwrap_or("");
    match ty {
        "ByteLevel" if pre.get("use_regex").and_then(Json::as_bool).unwrap_or(true) => Ok("gpt-2"),
        "Sequence" => {
            let items = pre
                .get("pretokenizers")
                .and_then(Json::as_array)
                .ok_or("tokenizer.json: pre_tokenizer Sequence without \"pretokenizers\"")?;
            let regex = items.iter().find_map(|p| {
                (p.get("type").and_then(Json::as_str) == Some("Split"))
                    .then(|| {
                        p.get("pattern")
                            .and_then(|q| q.get("Regex"))
                            .and_then(Json::as_str)
                    })
                    .flatten()
            });
            let byte_level = items
                .iter()
                .any(|p| p.get("type").and_then(Json::as_str) == Some("ByteLevel"));
            match regex {
                Some(r) if byte_level && r == QWEN2_REGEX => Ok("qwen2"),
                Some(r) if byte_level && r == LLAMA3_REGEX => Ok("llama-bpe"),
                Some(r) => Err(format!(
                    "tokenizer.json: pre-tokenizer regex {r:?} is not one meki knows (qwen2, llama-bpe, gpt-2)"
                )),
                None => Err("tokenizer.json: pre_tokenizer Sequence without a Split regex".into()),
            }
        }
        other => Err(format!(
            "tokenizer.json: pre_tokenizer type {other:?} is not a byte-level BPE one"
        )),
    }
}

/// Reads DIR's tokenizer; `config` is the checkpoint's config.json (special
/// ids fall back to its `*_token_id`).
pub fn read_tokenizer(dir: &Path, config: Option<&Json>) -> Result<TokenizerMeta, String> {
    let tok_path = dir.join("tokenizer.json");
    let tok = read_json(&tok_path)?;
    let model = tok.get("model").ok_or("tokenizer.json: no \"model\"")?;
    if model.get("type").and_then(Json::as_str) != Some("BPE") {
        return Err("tokenizer.json: model.type is not \"BPE\" (only byte-level BPE tokenizers are converted)".into());
    }
    let pre = pre_name(tok.get("pre_tokenizer").unwrap_or(&Json::Null))?;
    let vocab = model
        .get("vocab")
        .and_then(Json::as_object)
        .ok_or("tokenizer.json: model.vocab is not an object")?;
    let mut by_id: HashMap<usize, (String, i32)> = HashMap::with_capacity(vocab.len());
    let mut n = 0usize;
    for (t, id) in vocab {
        let id = id
            .as_u64()
            .and_then(|i| usize::try_from(i).ok())
            .ok_or_else(|| format!("tokenizer.json: vocab[{t:?}] is not a token id"))?;
        by_id.insert(id, (t.clone(), NORMAL));
        n = n.max(id + 1);
    }
    let added = tok
        .get("added_tokens")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    for a in &added {
        let id = a
            .get("id")
            .and_then(Json::as_u64)
            .and_then(|i| usize::try_from(i).ok())
            .ok_or("tokenizer.json: an added token has no id")?;
        let content = a
            .get("content")
            .and_then(Json::as_str)
            .ok_or("tokenizer.json: an added token has no content")?;
        let special = a.get("special").and_then(Json::as_bool).unwrap_or(false);
        let (text, ty) = if special || looks_special(content) {
            (content.to_string(), CONTROL)
        } else {
            (content.replace('\u{2581}', " "), USER_DEFINED)
        };
        by_id.insert(id, (text, ty));
        n = n.max(id + 1);
    }
    // Every id below n is listed (vocab or added), or a hole: ids are dense in practice.
    if n > by_id.len() + (1 << 20) {
        return Err(format!(
            "tokenizer.json: token ids up to {n} but only {} tokens",
            by_id.len()
        ));
    }
    let mut tokens = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for i in 0..n {
        match by_id.remove(&i) {
            Some((t, ty)) => {
                tokens.push(t);
                types.push(ty);
            }
            None => {
                tokens.push(format!("[PAD{i}]"));
                types.push(UNUSED);
            }
        }
    }
    let merges: Vec<String> = match model.get("merges").and_then(Json::as_array) {
        None => Vec::new(),
        Some(m) => m
            .iter()
            .map(|e| match e {
                Json::String(s) => Some(s.clone()),
                Json::Array(p) if p.len() == 2 => {
                    let enc = |x: &Json| x.as_str().map(|s| s.replace(' ', "\u{120}"));
                    Some(format!("{} {}", enc(&p[0])?, enc(&p[1])?))
                }
                _ => None,
            })
            .collect::<Option<_>>()
            .ok_or("tokenizer.json: model.merges holds something other than strings or pairs")?,
    };

    let mut kv: Vec<(String, Value)> = vec![
        ("tokenizer.ggml.model".into(), "gpt2".into()),
        ("tokenizer.ggml.pre".into(), pre.into()),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(Array::String(tokens)),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(Array::I32(types)),
        ),
    ];
    if !merges.is_empty() {
        kv.push((
            "tokenizer.ggml.merges".into(),
            Value::Array(Array::String(merges)),
        ));
    }

    // gguf-py SpecialVocab: tokenizer_config.json names, then config.json ids.
    let cfg_path = dir.join("tokenizer_config.json");
    let mut tc = if cfg_path.is_file() {
        Some(read_json(&cfg_path)?)
    } else {
        None
    };
    if let Some(Json::Object(o)) = tc.as_mut() {
        let has = |o: &serde_json::Map<String, Json>, k: &str| {
            o.get(k)
                .is_some_and(|v| !v.is_null() && v.as_str() != Some(""))
        };
        if !has(o, "bos_token") && has(o, "cls_token") {
            let v = o["cls_token"].clone();
            o.insert("bos_token".into(), v);
        }
        if !has(o, "eos_token") && has(o, "sep_token") {
            let v = o["sep_token"].clone();
            o.insert("eos_token".into(), v);
        }
    }
    const TYPES: [(&str, &str); 7] = [
        ("bos", "bos_token_id"),
        ("eos", "eos_token_id"),
        ("unk", "unknown_token_id"),
        ("sep", "seperator_token_id"),
        ("pad", "padding_token_id"),
        ("cls", "cls_token_id"),
        ("mask", "mask_token_id"),
    ];
    let mut ids: Vec<Option<u64>> = vec![None; TYPES.len()];
    let mut add_flags: Vec<(String, bool)> = Vec::new();
    for (i, (typ, _)) in TYPES.iter().enumerate() {
        let Some(tc) = tc.as_ref() else { break };
        if let Some(b) = tc.get(format!("add_{typ}_token")).and_then(Json::as_bool) {
            add_flags.push((typ.to_string(), b));
        }
        let content = match tc.get(format!("{typ}_token")) {
            Some(Json::String(s)) => s.clone(),
            Some(Json::Object(o)) => match o.get("content").and_then(Json::as_str) {
                Some(s) => s.to_string(),
                None => continue,
            },
            _ => continue,
        };
        ids[i] = added.iter().find_map(|a| {
            (a.get("content").and_then(Json::as_str) == Some(content.as_str()))
                .then(|| a.get("id").and_then(Json::as_u64))
                .flatten()
        });
    }
    if let Some(cfg) = config {
        for (i, (typ, _)) in TYPES.iter().enumerate() {
            if ids[i].is_none() {
                ids[i] = cfg.get(format!("{typ}_token_id")).and_then(Json::as_u64);
            }
        }
    }
    for (i, (_, key)) in TYPES.iter().enumerate() {
        if let Some(id) = ids[i].filter(|&id| (id as usize) < n) {
            kv.push((format!("tokenizer.ggml.{key}"), Value::U32(id as u32)));
        }
    }
    for (typ, b) in add_flags {
        // gguf-py has writers for bos, eos and sep only.
        if matches!(typ.as_str(), "bos" | "eos" | "sep") {
            kv.push((format!("tokenizer.ggml.add_{typ}_token"), Value::Bool(b)));
        }
    }
    let template = tc
        .as_ref()
        .and_then(|t| t.get("chat_template"))
        .and_then(Json::as_str)
        .map(str::to_string)
        .or_else(|| std::fs::read_to_string(dir.join("chat_template.jinja")).ok());
    if let Some(t) = template {
        kv.push(("tokenizer.chat_template".into(), Value::String(t)));
    }
    Ok(TokenizerMeta { kv, n_tokens: n })
}
