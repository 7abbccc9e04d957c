//! The identity of a backbone file, recorded in a MeKi sidecar so that a
//! sidecar is never used with a model it was not made for.
//!
//! `backbone_id` hashes the tensor table (name, type and dims of every
//! tensor, in file order) and the bytes of every 1-D tensor (the norm weights:
//! small, and different for every trained model even when shapes agree).
//! MeKi tensors (`meki_*`) are excluded, so the id of a single-file model
//! equals the id of its backbone.

use crate::gguf::GgufFile;

/// 64-bit FNV-1a, twice with different seeds: a 128-bit content fingerprint
/// (not a defence against forgery; it catches mismatched pairs).
struct Fnv128 {
    a: u64,
    b: u64,
}

impl Fnv128 {
    fn new() -> Fnv128 {
        Fnv128 {
            a: 0xcbf2_9ce4_8422_2325,
            b: 0x6c62_272e_07bb_0142,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        for &x in bytes {
            self.a = (self.a ^ x as u64).wrapping_mul(0x0000_0100_0000_01b3);
            self.b = (self.b ^ x as u64)
                .wrapping_mul(0x0000_0100_0000_01b3)
                .rotate_left(5);
        }
    }

    fn hex(&self) -> String {
        format!("{:016x}{:016x}", self.a, self.b)
    }
}

/// Whether a tensor belongs to MeKi (and so not to the backbone).
pub fn is_meki_tensor(name: &str) -> bool {
    name.starts_with("meki_") || name.contains(".meki_")
}

pub fn backbone_id(file: &GgufFile) -> Result<String, String> {
    let mut h = Fnv128::new();
    let backbone = file.tensors().iter().filter(|t| !is_meki_tensor(&t.name));
    for t in backbone.clone() {
        h.update(t.name.as_bytes());
        h.update(&[0]);
        h.update(&(t.ggml_type as u32).to_le_bytes());
        h.update(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            h.update(&d.to_le_bytes());
        }
    }
    for t in backbone {
        if t.dims.iter().filter(|&&d| d > 1).count() <= 1 {
            h.update(file.tensor_data(t).map_err(|e| e.to_string())?);
        }
    }
    Ok(h.hex())
}
