//! Safetensors files (one `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`), memory-mapped; every header entry is
//! validated against the file before a tensor is served.
//!
//! Format: u64 little-endian header length N, N bytes of JSON
//! `{"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}`,
//! then the data; offsets are relative to the end of the header.

use super::tensor::{shape_str, Dtype, RawTensor};
use crate::gguf::FileMap;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Largest JSON header accepted (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100 << 20;

struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the shard's map.
    range: std::ops::Range<usize>,
}

/// All tensors of a checkpoint directory's safetensors shards.
pub struct Safetensors {
    maps: Vec<FileMap>,
    paths: Vec<PathBuf>,
    entries: HashMap<String, Entry>,
    /// Names in file order (shard by shard, by data offset).
    order: Vec<String>,
}

fn map_file(path: &Path) -> Result<FileMap, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    FileMap::map(&file, path).map_err(|e| format!("{}: mmap: {e}", path.display()))
}

impl Safetensors {
    /// Opens `dir/model.safetensors`, or the shards of
    /// `dir/model.safetensors.index.json`.
    pub fn open_dir(dir: &Path) -> Result<Safetensors, String> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.is_file() {
            let text =
                std::fs::read_to_string(&index).map_err(|e| format!("{}: {e}", index.display()))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", index.display()))?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| format!("{}: no \"weight_map\" object", index.display()))?;
            let mut names: Vec<String> = Vec::new();
            for (tensor, file) in map {
                let f = file.as_str().ok_or_else(|| {
                    format!(
                        "{}: weight_map[{tensor:?}] is not a string",
                        index.display()
                    )
                })?;
                if f.contains('/') || f.contains('\\') || f == ".." {
                    return Err(format!(
                        "{}: weight_map[{tensor:?}] = {f:?} is not a file name in the directory",
                        index.display()
                    ));
                }
                if !names.iter().any(|n| n == f) {
                    names.push(f.to_string());
                }
            }
            names.sort();
            names.into_iter().map(|n| dir.join(n)).collect()
        } else if single.is_file() {
            vec![single]
        } else {
            return Err(format!(
                "{}: neither model.safetensors nor model.safetensors.index.json",
                dir.display()
            ));
        };
        let mut st = Safetensors {
            maps: Vec::new(),
            paths: Vec::new(),
            entries: HashMap::new(),
            order: Vec::new(),
        };
        for path in files {
            let map = map_file(&path)?;
            st.add_shard(&path, map)?;
        }
        Ok(st)
    }

    fn add_shard(&mut self, path: &Path, map: FileMap) -> Result<(), String> {
        let shard = self.maps.len();
        let entries = parse_header(&map).map_err(|e| format!("{}: {e}", path.display()))?;
        for (name, dtype, shape, range) in entries {
            if self.entries.contains_key(&name) {
                return Err(format!(
                    "{}: tensor {name:?} appears in two shards",
                    path.display()
                ));
            }
            self.order.push(name.clone());
            self.entries.insert(
                name,
                Entry {
                    shard,
                    dtype,
                    shape,
                    range,
                },
            );
        }
        self.maps.push(map);
        self.paths.push(path.to_path_buf());
        Ok(())
    }

    pub fn names(&self) -> &[String] {
        &self.order
    }

    pub fn get(&self, name: &str) -> Option<RawTensor<'_>> {
        let e = self.entries.get(name)?;
        Some(RawTensor {
            dtype: e.dtype,
            shape: e.shape.clone(),
            data: &self.maps[e.shard][e.range.clone()],
        })
    }
}

type HeaderEntry = (String, Dtype, Vec<usize>, std::ops::Range<usize>);

/// Parses and validates a safetensors header against the file size.
pub fn parse_header(bytes: &[u8]) -> Result<Vec<HeaderEntry>, String> {
    if bytes.len() < 8 {
        return Err(format!(
            "{} bytes: too short for a safetensors header",
            bytes.len()
        ));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER || n > (bytes.len() - 8) as u64 {
        return Err(format!(
            "header length {n} at offset 0 exceeds the file ({} bytes) or the {MAX_HEADER}-byte limit",
            bytes.len()
        ));
    }
    let data_start = 8 + n as usize;
    let json: serde_json::Value =
        serde_json::from_slice(&bytes[8..data_start]).map_err(|e| format!("header JSON: {e}"))?;
    let obj = json.as_object().ok_or("header JSON is not an object")?;
    let data_len = bytes.len() - data_start;
    let mut out = Vec::with_capacity(obj.len());
    for (name, info) in obj {
        if name == "__metadata__" {
            continue;
        }
        let err = |m: &str| format!("tensor {name:?}: {m}");
        let dtype = match info.get("dtype").and_then(|d| d.as_str()) {
            Some("F32") => Dtype::F32,
            Some("F16") => Dtype::F16,
            Some("BF16") => Dtype::BF16,
            Some(other) => {
                return Err(err(&format!(
                    "dtype {other:?} is not supported (F32, F16, BF16)"
                )))
            }
            None => return Err(err("no \"dtype\" string")),
        };
        let shape: Vec<usize> = info
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| err("no \"shape\" array"))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| err("\"shape\" holds something other than non-negative integers"))?;
        let offs: Vec<u64> = info
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .ok_or_else(|| err("no \"data_offsets\" array"))?
            .iter()
            .map(|d| d.as_u64())
            .collect::<Option<_>>()
            .ok_or_else(|| err("\"data_offsets\" are not integers"))?;
        let [begin, end] = offs[..] else {
            return Err(err("\"data_offsets\" must have two entries"));
        };
        if begin > end || end > data_len as u64 {
            return Err(err(&format!(
                "data_offsets [{begin}, {end}] outside the {data_len} data bytes"
            )));
        }
        let want = shape
            .iter()
            .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| err("shape overflows"))?;
        if want as u64 != end - begin {
            return Err(err(&format!(
                "shape {} of {} needs {want} bytes, data_offsets give {}",
                shape_str(&shape),
                dtype.name(),
                end - begin
            )));
        }
        let range = data_start + begin as usize..data_start + end as usize;
        out.push((name.clone(), dtype, shape, range));
    }
    out.sort_by_key(|e| e.3.start);
    Ok(out)
}

impl std::fmt::Debug for Safetensors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Safetensors({:?}, {} tensors)",
            self.paths,
            self.entries.len()
        )
    }
}
