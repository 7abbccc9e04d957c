//! Interactive chat: the model's own `tokenizer.chat_template` rendered with
//! minijinja (Python-compatible string methods from minijinja-contrib, since
//! real templates call `.strip()`, `.split()`, `.startswith()`...).
//!
//! Each turn renders the whole conversation, tokenizes it, keeps the longest
//! prefix already in the KV cache and feeds only the rest, so earlier turns
//! are never recomputed.

use crate::model::forward::Logits;
use crate::model::Session;
use crate::sampler::Sampler;
use crate::tokenizer::{StreamDecoder, Tokenizer};
use minijinja::{context, Environment};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Debug)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// Instructions one render may execute: real templates take thousands per
/// message; a hostile one (nested `range(100000)` loops) stops with an error
/// after about a second instead of running for hours.
pub const TEMPLATE_FUEL: u64 = 50_000_000;

/// A chat template ready to render.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    pub fn new(source: &str, tok: &Tokenizer) -> Result<ChatTemplate, String> {
        let mut env = Environment::new();
        env.set_fuel(Some(TEMPLATE_FUEL));
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| format!("chat template does not parse: {e}"))?;
        let piece = |id: Option<u32>| {
            id.map(|i| String::from_utf8_lossy(tok.token_to_piece_with(i, true)).into_owned())
                .unwrap_or_default()
        };
        Ok(ChatTemplate {
            env,
            bos: piece(tok.bos()),
            eos: piece(tok.eos()),
        })
    }

    /// The prompt text for `messages`, ending with the assistant's turn opener.
    pub fn render(&self, messages: &[Message]) -> Result<String, String> {
        let t = self.env.get_template("chat").map_err(|e| e.to_string())?;
        t.render(context! {
            messages => minijinja::Value::from_iter(
                messages.iter().map(|m| context! { role => m.role.as_str(), content => m.content.as_str() })
            ),
            add_generation_prompt => true,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
        })
        .map_err(|e| format!("chat template: {e}"))
    }
}

/// Length of the common prefix of two token sequences.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// One chat conversation over a session.
pub struct Chat<'m, 't> {
    pub session: Session<'m>,
    tok: &'t Tokenizer,
    template: ChatTemplate,
    pub messages: Vec<Message>,
    cached: Vec<u32>,
}

impl<'m, 't> Chat<'m, 't> {
    pub fn new(session: Session<'m>, tok: &'t Tokenizer, template: ChatTemplate) -> Self {
        Chat {
            session,
            tok,
            template,
            messages: Vec::new(),
            cached: Vec::new(),
        }
    }

    /// Add the user's message, generate the answer (streamed to `out`) until
    /// an end-of-generation token, `max_tokens`, or `stop` is raised (Ctrl-C).
    pub fn reply(
        &mut self,
        user: &str,
        sampler: &mut Sampler,
        max_tokens: usize,
        stop: &AtomicBool,
        out: &mut dyn Write,
    ) -> Result<String, String> {
        // Cleared here, before the prompt is processed: a Ctrl-C while the
        // user was typing is forgotten, one during prompt processing counts.
        stop.store(false, Ordering::SeqCst);
        self.messages.push(Message {
            role: "user".into(),
            content: user.into(),
        });
        let prompt = self.template.render(&self.messages)?;
        // The template writes BOS itself where the model wants one.
        let ids = self.tok.encode(&prompt, false, true);
        let keep = common_prefix(&self.cached, &ids).min(ids.len().saturating_sub(1));
        self.session.rewind(keep);
        self.cached.truncate(keep);
        let n_ctx = self.session.n_ctx();
        if ids.len() + 1 >= n_ctx {
            self.messages.pop();
            return Err(format!(
                "the conversation ({} tokens) no longer fits the context of {n_ctx}",
                ids.len()
            ));
        }
        let mut logits = self.session.forward(&ids[keep..], Logits::Last)?;
        self.cached.extend_from_slice(&ids[keep..]);
        let mut dec = StreamDecoder::without_special();
        let mut answer = String::new();
        let io = |e: std::io::Error| e.to_string();
        for _ in 0..max_tokens {
            if stop.load(Ordering::SeqCst) || self.session.n_past() + 1 >= n_ctx {
                break;
            }
            let next = sampler.sample(&logits);
            sampler.accept(next);
            if self.tok.is_eog(next) {
                break;
            }
            let text = dec.push(self.tok, next);
            write!(out, "{text}").map_err(io)?;
            out.flush().map_err(io)?;
            answer.push_str(&text);
            self.session
                .forward_into(&[next], Logits::Last, &mut logits)?;
            self.cached.push(next);
        }
        let tail = dec.finish();
        write!(out, "{tail}").map_err(io)?;
        answer.push_str(&tail);
        self.messages.push(Message {
            role: "assistant".into(),
            content: answer.clone(),
        });
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefix_counts_equal_leading_ids() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
        assert_eq!(common_prefix(&[7, 8], &[7, 8]), 2);
    }
}
