//! tokenizer (under construction)
