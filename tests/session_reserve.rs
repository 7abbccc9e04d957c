//! `Session::reserve`: sizing the work buffers and writing the KV cache
//! positions ahead changes no result, for calls shorter than, as long as
//! and longer than the reservation.

use meki::model::forward::Logits;
use meki::model::{KvType, MekiSource, Model, Session};
use std::path::PathBuf;

#[test]
fn reserved_sessions_give_the_same_logits() {
    for name in ["meki-small.gguf", "dense-small.gguf"] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(name);
        let model = Model::open_with(&path, &MekiSource::Auto, 2).unwrap();
        let calls: [&[u32]; 4] = [&[1, 400, 17], &[9, 3000, 5, 6, 7, 8], &[12], &[77, 5]];
        let run = |reserve: Option<usize>| {
            let mut s = Session::new(&model, 64, KvType::F16);
            if let Some(n) = reserve {
                s.reserve(n, n + 2);
            }
            let mut all = Vec::new();
            for (i, c) in calls.iter().enumerate() {
                all.push(s.forward(c, Logits::All).unwrap());
                if let (0, Some(n)) = (i, reserve) {
                    // Mid-session: the stored positions stay as they are.
                    s.reserve(n, 40);
                }
            }
            all
        };
        let plain = run(None);
        for n in [1, 3, 4, 40] {
            let got = run(Some(n));
            for (a, b) in plain.iter().zip(&got) {
                let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{name}: reserve({n}) changed the logits");
            }
        }
    }
}
