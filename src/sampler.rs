//! Token sampling, llama.cpp's default chain in its order:
//! repetition penalty -> top-k -> top-p -> min-p -> temperature -> draw.
//! `temp <= 0` is greedy (argmax of the raw logits, penalties applied).

#[derive(Clone, Debug)]
pub struct SamplerParams {
    pub temp: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    /// How many recent tokens the repetition penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temp: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

pub struct Sampler {
    p: SamplerParams,
    rng: u64,
    recent: Vec<u32>,
}

impl Sampler {
    pub fn new(p: SamplerParams) -> Sampler {
        let rng = p.seed ^ 0x9E37_79B9_7F4A_7C15;
        Sampler {
            p,
            rng,
            recent: Vec::new(),
        }
    }

    /// Remember a token (prompt or generated) for the repetition penalty.
    pub fn accept(&mut self, tok: u32) {
        self.recent.push(tok);
        let keep = self.p.repeat_last_n;
        if self.recent.len() > keep.max(1) * 2 {
            let cut = self.recent.len() - keep;
            self.recent.drain(..cut);
        }
    }

    fn next_f64(&mut self) -> f64 {
        // splitmix64: small, fast, good enough for sampling.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        // Copied only where the penalty changes values: a vocabulary's
        // logits are ~600 KB at 152K entries, and a copy per token was a
        // fresh allocation with its page faults and a memmove (~1% of a
        // 0.6B decode step).
        let mut logits = std::borrow::Cow::Borrowed(logits);
        if self.p.repeat_penalty != 1.0 && self.p.repeat_last_n > 0 {
            let start = self.recent.len().saturating_sub(self.p.repeat_last_n);
            let mut seen = self.recent[start..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            let logits = logits.to_mut();
            for t in seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / self.p.repeat_penalty
                    } else {
                        *l * self.p.repeat_penalty
                    };
                }
            }
        }
        if self.p.temp <= 0.0 {
            return argmax(&logits);
        }
        // Candidates sorted by logit, cut by top-k.
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        let k = if self.p.top_k == 0 {
            cand.len()
        } else {
            self.p.top_k.min(cand.len())
        };
        if k < cand.len() {
            cand.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
            cand.truncate(k);
        }
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        // Probabilities at temperature 1 for top-p / min-p, as llama.cpp does.
        let probs = softmax(&cand.iter().map(|c| c.1).collect::<Vec<_>>());
        let mut keep = cand.len();
        if self.p.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, p) in probs.iter().enumerate() {
                cum += p;
                if cum >= self.p.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if self.p.min_p > 0.0 {
            let floor = probs[0] * self.p.min_p;
            keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count().max(1));
        }
        cand.truncate(keep.max(1));
        let scaled: Vec<f32> = cand.iter().map(|c| c.1 / self.p.temp).collect();
        let probs = softmax(&scaled);
        let r = self.next_f64() as f32;
        let mut cum = 0.0;
        for (c, p) in cand.iter().zip(&probs) {
            cum += p;
            if r < cum {
                return c.0;
            }
        }
        cand[cand.len() - 1].0
    }
}

/// Index of the first largest value: the index a scan keeping the first
/// strict maximum returns (NaN never wins; a NaN first value keeps 0; 0 for
/// an empty slice). Lane maxima first, which vectorize (the scan's
/// dependence on the best so far did not: ~90 µs over 152K logits), then
/// the first index holding the maximum.
pub fn argmax(x: &[f32]) -> u32 {
    const LANES: usize = 16;
    let Some(&first) = x.first() else {
        return 0;
    };
    let mut lanes = [first; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    let max = lanes
        .iter()
        .chain(tail)
        .fold(first, |m, &v| if v > m { v } else { m });
    // The first chunk holding it (a whole-chunk test that vectorizes, where
    // a scan stopping at the first hit did not), then its place there.
    let at = x
        .chunks(LANES)
        .position(|c| c.iter().fold(false, |hit, &v| hit | (v == max)))
        .unwrap_or(0);
    let pos = x[at * LANES..].iter().position(|&v| v == max).unwrap_or(0);
    (at * LANES + pos) as u32
}

fn softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - max).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(SamplerParams {
            temp: 0.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]), 1);
    }

    /// The vectorized argmax against the plain scan it replaces: ties
    /// (first wins), NaNs (never win; first NaN keeps 0), infinities,
    /// signed zeros, every length up to 70 and a vocabulary-sized row.
    #[test]
    fn argmax_equals_first_strict_maximum_scan() {
        fn scan(x: &[f32]) -> u32 {
            let mut best = 0;
            for (i, &v) in x.iter().enumerate() {
                if v > x[best] {
                    best = i;
                }
            }
            best as u32
        }
        let pool = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            2.5,
            2.5,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -3.0,
            f32::MAX,
            f32::MIN,
        ];
        let mut z = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            z ^= z << 13;
            z ^= z >> 7;
            z ^= z << 17;
            z
        };
        for len in (0..=70).chain([151936]) {
            for _ in 0..40 {
                let x: Vec<f32> = (0..len)
                    .map(|_| {
                        let r = next();
                        if r % 4 == 0 {
                            pool[(r >> 8) as usize % pool.len()]
                        } else {
                            ((r >> 11) % 1000) as f32 / 100.0 - 5.0
                        }
                    })
                    .collect();
                assert_eq!(argmax(&x), scan(&x), "len {len}: {:?}", &x[..len.min(80)]);
            }
        }
    }

    #[test]
    fn top_k_one_is_greedy_at_any_temperature() {
        let mut s = Sampler::new(SamplerParams {
            temp: 5.0,
            top_k: 1,
            ..Default::default()
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]), 1);
        }
    }

    #[test]
    fn repeat_penalty_demotes_seen_tokens() {
        let mut s = Sampler::new(SamplerParams {
            temp: 0.0,
            repeat_penalty: 2.0,
            ..Default::default()
        });
        s.accept(1);
        // 3.0 / 2 = 1.5 < 2.9
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]), 3);
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let mut s = Sampler::new(SamplerParams {
            temp: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 7,
            ..Default::default()
        });
        let logits = [0.0f32, (3.0f32).ln()]; // p = 0.25, 0.75
        let n = 4000;
        let ones = (0..n).filter(|_| s.sample(&logits) == 1).count();
        let frac = ones as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.03, "{frac}");
    }
}
