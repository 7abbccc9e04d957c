//! Megatron-LM torch checkpoints: `iter_XXXXXXX/mp_rank_00/model_optim_rng.pt`,
//! a `torch.save` zip archive (`NAME/data.pkl`, raw storages `NAME/data/KEY`)
//! read without Python. The model state dict is under `model` (`model0` with
//! virtual pipeline stages), the training arguments (`argparse.Namespace`)
//! under `args`.

use super::pickle::{self, Py, TensorRef};
use super::tensor::{shape_str, RawTensor};
use super::zip::ZipIndex;
use crate::gguf::FileMap;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

pub struct TorchCheckpoint {
    pub path: PathBuf,
    map: FileMap,
    zip: ZipIndex,
    /// Archive name prefix (`archive/`, `model_optim_rng/`, ...).
    prefix: String,
    /// Model state dict entries, in file order.
    pub tensors: Vec<(String, TensorRef)>,
    /// Training arguments (`args`), attribute -> value.
    pub args: HashMap<String, Py>,
}

/// Finds the `.pt` file for PATH: the file itself, an `iter_*` directory, or
/// the directory holding `latest_checkpointed_iteration.txt`.
pub fn resolve_path(path: &Path) -> Result<PathBuf, String> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let mut dir = path.to_path_buf();
    let tracker = dir.join("latest_checkpointed_iteration.txt");
    if tracker.is_file() {
        let text =
            std::fs::read_to_string(&tracker).map_err(|e| format!("{}: {e}", tracker.display()))?;
        let it = text.trim();
        dir = if it == "release" {
            dir.join("release")
        } else {
            let n: u64 = it.parse().map_err(|_| {
                format!(
                    "{}: {it:?} is neither an iteration number nor \"release\"",
                    tracker.display()
                )
            })?;
            dir.join(format!("iter_{n:07}"))
        };
    }
    if dir.join("model_optim_rng.pt").is_file() {
        return Ok(dir.join("model_optim_rng.pt"));
    }
    let ranks: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("mp_rank_"))
        })
        .collect();
    match ranks.len() {
        0 => {
            if dir.join(".metadata").is_file() || dir.join("metadata.json").is_file() {
                return Err(format!(
                    "{}: a torch_dist (distributed) checkpoint; convert it to the torch format first \
                     (Megatron's --ckpt-convert-format torch)",
                    dir.display()
                ));
            }
            Err(format!("{}: no mp_rank_* directory or model_optim_rng.pt", dir.display()))
        }
        1 => {
            let f = ranks[0].join("model_optim_rng.pt");
            if f.is_file() {
                Ok(f)
            } else {
                Err(format!("{}: missing", f.display()))
            }
        }
        n => Err(format!(
            "{}: {n} model-parallel ranks; only tensor/pipeline parallel size 1 checkpoints are supported",
            dir.display()
        )),
    }
}

impl TorchCheckpoint {
    pub fn open(path: &Path) -> Result<TorchCheckpoint, String> {
        let path = resolve_path(path)?;
        let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let map =
            FileMap::map(&file, &path).map_err(|e| format!("{}: mmap: {e}", path.display()))?;
        let ctx = |e: String| format!("{}: {e}", path.display());
        let zip = ZipIndex::parse(&map).map_err(ctx)?;
        let pkl_name = zip
            .entries
            .keys()
            .filter(|k| k.ends_with("data.pkl") && k.matches('/').count() <= 1)
            .min_by_key(|k| k.len())
            .cloned()
            .ok_or_else(|| ctx("no data.pkl in the archive (not a torch.save file?)".into()))?;
        let prefix = pkl_name[..pkl_name.len() - "data.pkl".len()].to_string();
        if let Some(r) = zip.entries.get(&format!("{prefix}byteorder")) {
            if &map[r.clone()] != b"little" {
                return Err(ctx("big-endian checkpoint: not supported".into()));
            }
        }
        let root = pickle::load(&map[zip.entries[&pkl_name].clone()])
            .map_err(|e| ctx(format!("{pkl_name}: {e}")))?;
        let model = root
            .get("model")
            .or_else(|| root.get("model0"))
            .or_else(|| root.get("state_dict"))
            .ok_or_else(|| ctx("no \"model\" state dict in the checkpoint".into()))?;
        let Py::Dict(items) = model else {
            return Err(ctx("\"model\" is not a dict".into()));
        };
        let mut tensors = Vec::new();
        for (k, v) in items {
            if let (Py::Str(name), Py::Tensor(t)) = (k, v) {
                tensors.push((name.clone(), t.clone()));
            }
        }
        let mut args = HashMap::new();
        if let Some(Py::Dict(attrs)) = root.get("args").and_then(|a| a.state().or(Some(a))) {
            for (k, v) in attrs {
                if let Py::Str(k) = k {
                    args.insert(k.clone(), v.clone());
                }
            }
        }
        Ok(TorchCheckpoint {
            path,
            map,
            zip,
            prefix,
            tensors,
            args,
        })
    }

    /// A model tensor's data, checked to be a contiguous view inside its storage.
    pub fn get(&self, name: &str) -> Result<Option<RawTensor<'_>>, String> {
        let Some((_, t)) = self.tensors.iter().rev().find(|(n, _)| n == name) else {
            return Ok(None);
        };
        let err = |m: String| format!("{}: tensor {name:?}: {m}", self.path.display());
        let dtype = t
            .dtype
            .clone()
            .map_err(|s| err(format!("storage type {s} is not f32/f16/bf16")))?;
        let mut expect = 1usize;
        for (i, (&d, &s)) in t.shape.iter().zip(&t.stride).enumerate().rev() {
            if d > 1 && s != expect {
                return Err(err(format!(
                    "not contiguous (shape {}, stride {:?} at dim {i})",
                    shape_str(&t.shape),
                    t.stride
                )));
            }
            expect = expect.saturating_mul(d);
        }
        if t.shape.len() != t.stride.len() {
            return Err(err("size and stride differ in length".into()));
        }
        let key = format!("{}data/{}", self.prefix, t.storage);
        let range = self
            .zip
            .entries
            .get(&key)
            .ok_or_else(|| err(format!("storage {key:?} missing from the archive")))?;
        let es = dtype.size();
        let n: usize = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| err("shape overflows".into()))?;
        let begin = t.offset.checked_mul(es);
        let end = t.offset.checked_add(n).and_then(|e| e.checked_mul(es));
        match (begin, end) {
            (Some(b), Some(e)) if e <= range.len() => Ok(Some(RawTensor {
                dtype,
                shape: t.shape.clone(),
                data: &self.map[range.start + b..range.start + e],
            })),
            _ => Err(err(format!(
                "offset {} + {n} elements of {} exceed its storage ({} bytes)",
                t.offset,
                dtype.name(),
                range.len()
            ))),
        }
    }

    pub fn arg_int(&self, key: &str) -> Option<i64> {
        self.args.get(key).and_then(Py::as_int)
    }

    pub fn arg_float(&self, key: &str) -> Option<f64> {
        self.args.get(key).and_then(Py::as_float)
    }

    pub fn arg_bool(&self, key: &str) -> Option<bool> {
        self.args.get(key).and_then(Py::as_bool)
    }
}
