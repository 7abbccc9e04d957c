//! `meki-bench twin`: decode speed of a MeKi model against its dense twin
//! (and against itself with `--no-meki`), measured in one process.
//!
//! Separate `meki-run` processes on a shared or virtual machine see the
//! machine change between runs (other tenants, frequency); a 2% question
//! drowns in that. Here the three models decode the same token sequence in
//! alternating blocks of a few tokens, so every slow phase of the machine
//! hits all of them, and each round's ratio compares time spent side by
//! side. Each block starts with one untimed step (it wakes the model's
//! thread pool, which parks while the other models run).
//!
//! `--cold` drops the MeKi tables from the page cache before every round
//! (`madvise` + `posix_fadvise(DONTNEED)` on the table's byte range): the
//! MeKi model then reads its rows from storage while it decodes, which is
//! what a phone does with tables larger than its free RAM.

use crate::model::forward::Logits;
use crate::model::profile::{Stage, StageProfile};
use crate::model::{KvType, MekiSource, Model, Session};
use std::path::PathBuf;
use std::time::Instant;

/// The ratios reported: (label, numerator model, denominator model).
/// no-meki/dense is the same computation from two files: how far apart
/// identical work lands (memory placement), a floor for the others.
const PAIRS: [(&str, usize, usize); 3] = [
    ("meki/dense", 0, 2),
    ("meki/no-meki", 0, 1),
    ("no-meki/dense", 1, 2),
];

/// The six orders of three models.
const ORDERS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [1, 2, 0],
    [2, 0, 1],
    [2, 1, 0],
    [1, 0, 2],
    [0, 2, 1],
];

pub struct TwinOptions {
    pub meki: PathBuf,
    pub dense: PathBuf,
    pub threads: usize,
    /// Timed decode steps per model per round.
    pub tokens: usize,
    /// Timed steps per block (a model's turn).
    pub block: usize,
    pub rounds: usize,
    /// Drop the MeKi tables from the page cache before every round, so the
    /// MeKi model reads its rows from storage while it decodes.
    pub cold: bool,
    /// Also time prefill of this many tokens (0: decode only), one prompt
    /// per model per round, in the same rotating orders.
    pub prompt: usize,
    /// Prefill in forward calls of this many tokens, the models taking turns
    /// call by call, each call timed alone (0: the prompt in one call).
    pub prompt_block: usize,
    /// Load the three models again before every round, in that round's
    /// order (see `load_models`); `false`: load them once.
    pub reload: bool,
    /// Time by the CPU time of the process's threads (`CLOCK_PROCESS_CPUTIME_ID`:
    /// time on a CPU, which leaves out the time another process or, in a VM,
    /// the host took the core away) instead of the wall clock. Clean at 1
    /// thread; at more, workers waiting between dispatches spin and that
    /// counts too.
    pub cpu_time: bool,
    /// Time the timed decode steps stage by stage too
    /// ([`crate::model::Session::set_profiling`]) and print the stages side
    /// by side.
    pub profile: bool,
}

/// A stopwatch over the wall clock or the process's CPU time.
struct Clock {
    cpu: bool,
    wall0: Instant,
}

impl Clock {
    fn new(cpu: bool) -> Result<Clock, String> {
        if cpu {
            cpu_time::ProcessTime::try_now()
                .map_err(|e| format!("--cpu-time: no process CPU clock here: {e}"))?;
        }
        Ok(Clock {
            cpu,
            wall0: Instant::now(),
        })
    }

    /// Seconds since an arbitrary origin.
    fn now(&self) -> f64 {
        match self.cpu {
            true => cpu_time::ProcessTime::now().as_duration().as_secs_f64(),
            false => self.wall0.elapsed().as_secs_f64(),
        }
    }
}

/// The three models (meki, no-meki, dense), opened in the order `order`
/// (indices into that list) and returned in list order. Where a model lands
/// in memory depends on what was loaded before it, and that alone moved
/// identical work by up to 2% at 2 threads (the same file with MeKi work
/// switched off ran 0.979-0.983 of itself with `--no-meki` when loaded
/// first, 1.000-1.005 when loaded after it; Xeon VM, session 7): rotating
/// the load order with the rounds spreads that over all three.
fn load_models(o: &TwinOptions, order: [usize; 3]) -> Result<[(&'static str, Model); 3], String> {
    let mut slots: [Option<Model>; 3] = [None, None, None];
    for i in order {
        slots[i] = Some(match i {
            0 => Model::open_with(&o.meki, &MekiSource::Auto, o.threads)?,
            1 => Model::open_with(&o.meki, &MekiSource::Disabled, o.threads)?,
            _ => Model::open_with(&o.dense, &MekiSource::Auto, o.threads)?,
        });
    }
    let [Some(m0), Some(m1), Some(m2)] = slots else {
        return Err("twin: load order must name each model once".into());
    };
    Ok([("meki", m0), ("no-meki", m1), ("dense", m2)])
}

/// Drops `m`'s MeKi tables from its map and from the page cache.
fn evict_tables(m: &Model) -> Result<(), String> {
    let mem = m.meki.as_ref().ok_or("the model has no MeKi memory")?;
    let file = mem.file(&m.file);
    let len = mem.table.bytes(file).len();
    file.evict(mem.table.offset_in_file(), len)
        .map_err(|e| format!("evicting the MeKi tables: {e}"))
}

/// Tok/s of the three models (meki, no-meki, dense) per round, and the
/// seconds of every timed block (decode blocks; prefill calls with
/// `--prompt-block`).
#[derive(Default)]
struct Rounds {
    tps: [Vec<f64>; 3],
    block_secs: [Vec<f64>; 3],
}

impl Rounds {
    /// Records and prints one round; `what` prefixes the lines.
    fn push(&mut self, what: &str, round: usize, tps: [f64; 3]) {
        for (v, t) in self.tps.iter_mut().zip(tps) {
            v.push(t);
        }
        println!(
            "{what}round {:>2}: tok/s meki {:.1} no-meki {:.1} dense {:.1} | meki/dense {:.4} meki/no-meki {:.4}",
            round + 1,
            tps[0],
            tps[1],
            tps[2],
            tps[0] / tps[2],
            tps[0] / tps[1]
        );
    }

    /// Median [min-max] tok/s per model, then of the per-round ratios.
    fn report(&self, what: &str, models: &[(&str, Model); 3]) {
        for ((name, _), v) in models.iter().zip(&self.tps) {
            let (m, lo, hi) = summary(v.clone());
            println!("{what}{name}: {m:.1} tok/s median [{lo:.1}-{hi:.1}]");
        }
        let ratio = |a: usize, b: usize| -> Vec<f64> {
            self.tps[a]
                .iter()
                .zip(&self.tps[b])
                .map(|(x, y)| x / y)
                .collect()
        };
        for (label, a, b) in PAIRS {
            let (m, lo, hi) = summary(ratio(a, b));
            println!("{what}ratio {label}: {m:.4} median [{lo:.4}-{hi:.4}]");
        }
        // The same three ratios from each block alone: the three models ran
        // block b of a round right after each other at the same positions, so a burst of another tenant's work spoils a few blocks
        // instead of tilting a whole round. Their median moves far less than
        // the per-round one on a busy machine.
        if self.block_secs[0].is_empty() {
            return;
        }
        for (label, a, b) in PAIRS {
            let (m, q1, q3) = paired_speed_ratio(&self.block_secs[a], &self.block_secs[b]);
            println!(
                "{what}block ratio {label}: {m:.4} median [{q1:.4}-{q3:.4} interquartile] over {} blocks",
                self.block_secs[a].len()
            );
        }
    }
}

/// Speed ratios `b[i] / a[i]` of paired times (`a` the model of the
/// numerator's speed): median and interquartile range.
pub fn paired_speed_ratio(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let mut r: Vec<f64> = a.iter().zip(b).map(|(x, y)| y / x).collect();
    if r.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    r.sort_by(f64::total_cmp);
    let at = |q: f64| r[((r.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.25), at(0.75))
}

/// Per stage, microseconds per decode step of the three models, and the MeKi
/// model's difference to the other two (all rounds pooled).
/// `what`: the unit of a call ("decode step", "prefill call").
fn stage_table(models: &[(&str, Model); 3], p: &[StageProfile; 3], what: &str) -> String {
    let mut s = format!(
        "twin stages (wall clock, us per {what}, {} calls each)\n{:<10}",
        p[0].calls, "stage"
    );
    for (name, _) in models {
        s.push_str(&format!(" {name:>9}"));
    }
    s.push_str(&format!(" {:>12} {:>14}\n", "meki-dense", "meki-no-meki"));
    let row = |s: &mut String, name: &str, us: [f64; 3]| {
        s.push_str(&format!(
            "{name:<10} {:>9.1} {:>9.1} {:>9.1} {:>+12.1} {:>+14.1}\n",
            us[0],
            us[1],
            us[2],
            us[0] - us[2],
            us[0] - us[1]
        ));
    };
    for st in Stage::ALL {
        row(&mut s, st.name(), [0, 1, 2].map(|i| p[i].us_per_call(st)));
    }
    let total = [0, 1, 2].map(|i| p[i].total_us_per_call());
    row(&mut s, "total", total);
    s
}

/// Median and range of a list.
fn summary(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

pub fn run(o: &TwinOptions) -> Result<(), String> {
    if o.tokens == 0 || o.block == 0 || o.rounds == 0 {
        return Err("--tokens, --block and --rounds must be positive".into());
    }
    let mut models = load_models(o, ORDERS[0])?;
    if models[0].1.meki.is_none() {
        return Err(format!("{} has no MeKi memory", o.meki.display()));
    }
    if models[2].1.meki.is_some() {
        return Err(format!(
            "{} is not dense (it has MeKi memory)",
            o.dense.display()
        ));
    }
    let n_vocab = models
        .iter()
        .map(|(_, m)| m.config.n_vocab)
        .min()
        .unwrap_or(1);
    let blocks = o.tokens.div_ceil(o.block);
    let steps = blocks * (o.block + 1);
    let n_ctx = steps + 1;
    for (name, m) in &models {
        if m.config.n_ctx_train > 0 && n_ctx > m.config.n_ctx_train {
            eprintln!(
                "note: {name}: {n_ctx} positions exceed the trained context {} (speed only)",
                m.config.n_ctx_train
            );
        }
    }
    // The same pseudo-random token sequence for every model and round.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let ids: Vec<u32> = (0..(steps + 1).max(o.prompt))
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n_vocab as u64) as u32
        })
        .collect();
    println!(
        "twin decode: {} timed steps per model per round in blocks of {}, {} rounds, {} threads{}",
        blocks * o.block,
        o.block,
        o.rounds,
        o.threads,
        if o.cold {
            "; MeKi tables dropped from the page cache before every round"
        } else {
            ""
        }
    );
    if o.cpu_time {
        println!("(times are CPU time of the process's threads, not wall clock)");
    }
    let clock = Clock::new(o.cpu_time)?;
    let mut decode = Rounds::default();
    let mut stages: [StageProfile; 3] = Default::default();
    for round in 0..o.rounds {
        if o.reload && round > 0 {
            // Free the old copies first: peak memory stays three models.
            drop(models);
            models = load_models(o, ORDERS[round % ORDERS.len()])?;
        }
        let mut sessions: Vec<Session> = models
            .iter()
            .map(|(_, m)| Session::new(m, n_ctx, KvType::F16))
            .collect();
        for s in sessions.iter_mut() {
            s.forward(&ids[..1], Logits::Last)?;
        }
        if o.cold {
            evict_tables(&models[0].1)?;
        }
        let mut spent = [0f64; 3];
        let mut pos = 1;
        for b in 0..blocks {
            // Every order of the three in turn: which model goes first, and
            // which one ran just before (it leaves the caches), both vary.
            for &i in &ORDERS[(b + round) % ORDERS.len()] {
                let s = &mut sessions[i];
                s.forward(&ids[pos..pos + 1], Logits::Last)?;
                s.set_profiling(o.profile);
                let t0 = clock.now();
                for j in 0..o.block {
                    s.forward(&ids[pos + 1 + j..pos + 2 + j], Logits::Last)?;
                }
                let dt = clock.now() - t0;
                s.set_profiling(false);
                spent[i] += dt;
                decode.block_secs[i].push(dt);
            }
            pos += o.block + 1;
        }
        let tps = spent.map(|d| (blocks * o.block) as f64 / d);
        decode.push("", round, tps);
        for (sum, s) in stages.iter_mut().zip(&sessions) {
            if let Some(p) = s.decode_profile() {
                sum.add(p);
            }
        }
    }
    decode.report("", &models);
    if o.profile {
        print!("{}", stage_table(&models, &stages, "decode step"));
    }
    if o.prompt > 0 {
        prefill_rounds(o, models, &ids[..o.prompt])?;
    }
    Ok(())
}

/// Prefill of `prompt` on a fresh session of each model, in the rotating
/// orders, `rounds` times: tok/s per model and the per-round ratios. With
/// `prompt_block` the prompt goes in calls of that many tokens (the KV cache
/// grows call by call, as with llama.cpp's `-ub`), the three models taking
/// turns call by call, and every call also gives a paired block ratio.
fn prefill_rounds(
    o: &TwinOptions,
    mut models: [(&'static str, Model); 3],
    prompt: &[u32],
) -> Result<(), String> {
    let rounds = o.rounds;
    let block = match o.prompt_block {
        0 => prompt.len(),
        b => b.min(prompt.len()),
    };
    println!(
        "twin prefill: {} tokens per model per round in calls of {block}, {rounds} rounds",
        prompt.len()
    );
    let clock = Clock::new(o.cpu_time)?;
    let mut prefill = Rounds::default();
    let mut stages: [StageProfile; 3] = Default::default();
    for round in 0..rounds {
        if o.reload && round > 0 {
            drop(models);
            models = load_models(o, ORDERS[round % ORDERS.len()])?;
        }
        let mut sessions: Vec<Session> = models
            .iter()
            .map(|(_, m)| Session::new(m, prompt.len() + 1, KvType::F16))
            .collect();
        for s in sessions.iter_mut() {
            s.set_profiling(o.profile);
        }
        let mut spent = [0f64; 3];
        for (b, chunk) in prompt.chunks(block).enumerate() {
            for &i in &ORDERS[(b + round) % ORDERS.len()] {
                let t0 = clock.now();
                sessions[i].forward(chunk, Logits::Last)?;
                let dt = clock.now() - t0;
                spent[i] += dt;
                if block < prompt.len() {
                    prefill.block_secs[i].push(dt);
                }
            }
        }
        let tps = spent.map(|d| prompt.len() as f64 / d);
        prefill.push("prefill ", round, tps);
        for (sum, s) in stages.iter_mut().zip(&sessions) {
            if let Some(p) = s.batch_profile() {
                sum.add(p);
            }
        }
    }
    prefill.report("prefill ", &models);
    if o.profile {
        print!("{}", stage_table(&models, &stages, "prefill call"));
    }
    Ok(())
}
