//! `meki-convert inspect`: a gguf-dump-like listing of a GGUF file.
//!
//! Layout (stable, for scripts): a `key: value` header block, then the
//! metadata table and the tensor table. Table columns are separated by two
//! or more spaces; the free-form column (key = value, tensor name) comes last.

use super::reader::GgufFile;
use super::value::{Array, Value};
use std::fmt::Write as _;
use std::path::Path;

/// Array elements shown before `... (N total)`.
const ARRAY_HEAD: usize = 5;
/// Strings longer than this (in chars) are cut, with their length noted.
const STRING_MAX: usize = 100;

pub fn run(file: &Path) -> Result<(), String> {
    let gguf = GgufFile::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut out = String::new();
    render(&gguf, &mut out);
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth reporting.
    let _ = stdout.write_all(out.as_bytes());
    Ok(())
}

/// The listing of `gguf`, appended to `out`.
pub fn render(gguf: &GgufFile, out: &mut String) {
    let h = gguf.header();
    let _ = writeln!(out, "file: {}", gguf.path().display());
    let _ = writeln!(out, "size: {}", gguf.as_bytes().len());
    let _ = writeln!(out, "version: {}", h.version);
    let _ = writeln!(out, "tensor_count: {}", h.tensors.len());
    let _ = writeln!(out, "kv_count: {}", h.metadata.len());
    let _ = writeln!(out, "alignment: {}", h.alignment);
    let _ = writeln!(out, "data_offset: {}", h.data_offset);
    let _ = writeln!(out);
    let _ = writeln!(out, "metadata:");
    let _ = writeln!(
        out,
        "{:>5}  {:<10}  {:>8}  key = value",
        "#", "type", "count"
    );
    for (i, (key, value)) in h.metadata.iter().enumerate() {
        let count = match value {
            Value::Array(a) => a.len(),
            _ => 1,
        };
        let _ = writeln!(
            out,
            "{:>5}  {:<10}  {:>8}  {key} = {}",
            i + 1,
            value.type_label(),
            count,
            format_value(value)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "tensors:");
    let _ = writeln!(
        out,
        "{:>5}  {:<6}  {:<28}  {:>14}  {:>14}  name",
        "#", "type", "shape", "file_offset", "bytes"
    );
    for (i, t) in h.tensors.iter().enumerate() {
        let shape = t
            .dims
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let _ = writeln!(
            out,
            "{:>5}  {:<6}  {:<28}  {:>14}  {:>14}  {}",
            i + 1,
            t.ggml_type.name(),
            format!("[{shape}]"),
            h.data_offset + t.offset,
            t.n_bytes,
            t.name
        );
    }
}

/// One-line rendering of a value: strings quoted and escaped, long strings
/// and arrays abbreviated.
pub fn format_value(v: &Value) -> String {
    match v {
        Value::String(s) => format_string(s),
        Value::Array(a) => format_array(a),
        Value::U8(x) => x.to_string(),
        Value::I8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::F32(x) => x.to_string(),
        Value::Bool(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::F64(x) => x.to_string(),
    }
}

fn format_string(s: &str) -> String {
    let n = s.chars().count();
    if n <= STRING_MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(STRING_MAX).collect();
        format!("{head:?}... ({n} chars)")
    }
}

fn format_array(a: &Array) -> String {
    let shown = a.len().min(ARRAY_HEAD);
    let mut parts: Vec<String> = (0..shown)
        .filter_map(|i| a.get(i))
        .map(|v| format_value(&v))
        .collect();
    if a.len() > shown {
        parts.push(format!("... ({} total)", a.len()));
    }
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_abbreviated() {
        let v = Value::Array(Array::U32((0..1000).collect()));
        assert_eq!(format_value(&v), "[0, 1, 2, 3, 4, ... (1000 total)]");
        let v = Value::Array(Array::String(vec!["a\"b".into(), "\n".into()]));
        assert_eq!(format_value(&v), r#"["a\"b", "\n"]"#);
        let nested = Value::Array(Array::Array(vec![Array::I8(vec![-1]); 7]));
        assert_eq!(
            format_value(&nested),
            "[[-1], [-1], [-1], [-1], [-1], ... (7 total)]"
        );
        let long = Value::String("é".repeat(150));
        let s = format_value(&long);
        assert!(s.ends_with("\"... (150 chars)"), "{s}");
    }
}
