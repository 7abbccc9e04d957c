//! Where a forward pass spends its time, stage by stage (opt-in:
//! [`super::Session::set_profiling`]; `meki-run --profile`,
//! `meki-bench twin --profile`).
//!
//! A sampling profiler (perf) sees kernels, not the step they belong to, and
//! the VM's noise is as large as the 1-2% a MeKi layer adds. Timing the stages
//! of every step in the process that runs them, for a MeKi model and its twin
//! side by side, says which stage the difference lives in. A lap reads the
//! monotonic clock (a vDSO call, ~20 ns), ~12 per layer: under 0.1% of a 0.6B
//! decode step, and nothing when profiling is off.

use std::time::Instant;

/// The stages of a forward pass, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Embedding rows, rotation tables, MeKi storage read-ahead.
    Embed,
    /// RMSNorm before attention.
    AttnNorm,
    /// The Q, K, V products.
    Qkv,
    /// Biases, per-head q/k norm, rotation, K and V into the cache.
    QkvPost,
    /// softmax(q K^T) V over the cache.
    Attention,
    /// The attention output product and its residual add.
    Wo,
    /// RMSNorm before the FFN.
    FfnNorm,
    /// W_gate h and W_up h (and the MeKi gate product, in the same dispatch
    /// at decode).
    FfnIn,
    /// silu(gate) * up.
    Silu,
    /// MeKi: sigmoid of the gate, table row gather, e + g.
    MekiMix,
    /// W_down (and the MeKi output product, in the same dispatch at decode).
    FfnOut,
    /// The FFN's residual add, and MeKi's post-norm and add.
    Residual,
    /// Final norm and the output head.
    Head,
}

impl Stage {
    pub const ALL: [Stage; 13] = [
        Stage::Embed,
        Stage::AttnNorm,
        Stage::Qkv,
        Stage::QkvPost,
        Stage::Attention,
        Stage::Wo,
        Stage::FfnNorm,
        Stage::FfnIn,
        Stage::Silu,
        Stage::MekiMix,
        Stage::FfnOut,
        Stage::Residual,
        Stage::Head,
    ];

    /// A short name for tables (no spaces: scripts split on them).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Embed => "embed",
            Stage::AttnNorm => "attn_norm",
            Stage::Qkv => "qkv",
            Stage::QkvPost => "qkv_post",
            Stage::Attention => "attention",
            Stage::Wo => "wo",
            Stage::FfnNorm => "ffn_norm",
            Stage::FfnIn => "ffn_in",
            Stage::Silu => "silu",
            Stage::MekiMix => "meki_mix",
            Stage::FfnOut => "ffn_out",
            Stage::Residual => "residual",
            Stage::Head => "head",
        }
    }
}

/// Seconds spent per stage over the forward calls of one kind (decode steps
/// or batches), the weight and KV-cache bytes the stage read, and how many
/// calls and tokens they covered.
#[derive(Clone, Debug, Default)]
pub struct StageProfile {
    pub secs: [f64; Stage::ALL.len()],
    /// Bytes of the matrices (and, for attention, of the cached keys and
    /// values) each stage read; norm vectors and activations not counted.
    pub bytes: [f64; Stage::ALL.len()],
    pub calls: u64,
    pub tokens: u64,
}

impl StageProfile {
    pub fn total_secs(&self) -> f64 {
        self.secs.iter().sum()
    }

    /// Adds `other`'s times and counts to these.
    pub fn add(&mut self, other: &StageProfile) {
        for (a, b) in self.secs.iter_mut().zip(&other.secs) {
            *a += b;
        }
        for (a, b) in self.bytes.iter_mut().zip(&other.bytes) {
            *a += b;
        }
        self.calls += other.calls;
        self.tokens += other.tokens;
    }

    /// Microseconds per call, all stages.
    pub fn total_us_per_call(&self) -> f64 {
        self.total_secs() * 1e6 / self.calls.max(1) as f64
    }

    /// Microseconds per call in `stage`.
    pub fn us_per_call(&self, stage: Stage) -> f64 {
        match self.calls {
            0 => 0.0,
            n => self.secs[stage as usize] * 1e6 / n as f64,
        }
    }

    /// Megabytes (1e6) read per call in `stage`.
    pub fn mb_per_call(&self, stage: Stage) -> f64 {
        self.bytes[stage as usize] / 1e6 / self.calls.max(1) as f64
    }

    /// The rate `stage` read its bytes at, GB/s (0 where it read none).
    pub fn gb_per_s(&self, stage: Stage) -> f64 {
        let (b, t) = (self.bytes[stage as usize], self.secs[stage as usize]);
        if b > 0.0 && t > 0.0 {
            b / t / 1e9
        } else {
            0.0
        }
    }

    /// A table: per stage, microseconds per call, share of the total, and
    /// the bytes read per call and their rate (compare with the memory
    /// bandwidth: a stage well below it is compute- or latency-bound);
    /// `what` names the calls ("prompt", "decode").
    pub fn report(&self, what: &str) -> String {
        let total = self.total_secs().max(f64::MIN_POSITIVE);
        let all_bytes: f64 = self.bytes.iter().sum();
        let mut s = format!(
            "profile {what}: {} calls, {} tokens, {:.1} us per call, {:.2} MB per call at {:.1} GB/s\n\
             {:<10} {:>10} {:>7} {:>9} {:>7}\n",
            self.calls,
            self.tokens,
            self.total_us_per_call(),
            all_bytes / 1e6 / self.calls.max(1) as f64,
            all_bytes / total / 1e9,
            "stage",
            "us/call",
            "share",
            "MB/call",
            "GB/s"
        );
        for st in Stage::ALL {
            s.push_str(&format!(
                "{:<10} {:>10.1} {:>6.1}% {:>9.3} {:>7.1}\n",
                st.name(),
                self.us_per_call(st),
                100.0 * self.secs[st as usize] / total,
                self.mb_per_call(st),
                self.gb_per_s(st)
            ));
        }
        s
    }
}

/// The stopwatch of one forward call: each [`Lap::mark`] adds the time since
/// the previous mark to a stage. Holds nothing when profiling is off.
pub(crate) struct Lap<'a> {
    on: Option<(&'a mut StageProfile, Instant)>,
}

impl<'a> Lap<'a> {
    pub(crate) fn start(profile: Option<&'a mut StageProfile>, tokens: usize) -> Lap<'a> {
        Lap {
            on: profile.map(|p| {
                p.calls += 1;
                p.tokens += tokens as u64;
                (p, Instant::now())
            }),
        }
    }

    /// `stage` read `bytes()` more bytes in this call (the count is made
    /// only when profiling: nothing is added to an unprofiled step).
    #[inline]
    pub(crate) fn read(&mut self, stage: Stage, bytes: impl FnOnce() -> usize) {
        if let Some((p, _)) = &mut self.on {
            p.bytes[stage as usize] += bytes() as f64;
        }
    }

    /// The time since the last mark (or the start) was spent in `stage`.
    #[inline]
    pub(crate) fn mark(&mut self, stage: Stage) {
        if let Some((p, t)) = &mut self.on {
            let now = Instant::now();
            p.secs[stage as usize] += (now - *t).as_secs_f64();
            *t = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_add_up_per_stage() {
        let mut p = StageProfile::default();
        {
            let mut lap = Lap::start(Some(&mut p), 3);
            std::thread::sleep(std::time::Duration::from_millis(2));
            lap.mark(Stage::Qkv);
            lap.read(Stage::Qkv, || 2_000_000);
            lap.mark(Stage::Head);
        }
        assert_eq!((p.calls, p.tokens), (1, 3));
        assert!(p.secs[Stage::Qkv as usize] >= 0.002);
        assert!(p.secs[Stage::Head as usize] < p.secs[Stage::Qkv as usize]);
        assert_eq!(p.secs[Stage::Embed as usize], 0.0);
        assert_eq!(p.mb_per_call(Stage::Qkv), 2.0);
        let rate = p.gb_per_s(Stage::Qkv);
        assert!(rate > 0.0 && rate <= 2e6 / 0.002 / 1e9, "{rate}");
        assert_eq!(p.gb_per_s(Stage::Head), 0.0);
        let r = p.report("batch");
        assert!(r.starts_with("profile batch: 1 calls, 3 tokens"), "{r}");
        assert_eq!(r.lines().count(), 2 + Stage::ALL.len());
        // Off: no call is counted.
        let mut lap = Lap::start(None, 1);
        lap.mark(Stage::Qkv);
    }
}
