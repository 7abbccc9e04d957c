//! A small thread pool for per-token kernels: persistent workers that wait for
//! the next job by spinning briefly, then yielding, then sleeping on a futex
//! (`park`), so back-to-back dispatches cost a few µs (a decode step issues
//! ~200 matrix-vector products; rayon's per-call overhead is too high there)
//! and an oversubscribed machine is not made worse by busy workers.
//!
//! Two kinds of job:
//! - [`ThreadPool::run`] runs one closure on every thread (the caller is
//!   thread 0) and returns when all have finished (static splits by thread).
//! - [`ThreadPool::run_chunks`] hands out `n` work items from a shared counter;
//!   the caller works too, and once every item is claimed it closes the job:
//!   a worker that had not joined yet (descheduled, still waking up) skips it.
//!   The caller then waits only for workers that are really running items,
//!   so a busy core costs at most one item, never a wake-up.
//! - [`ThreadPool::run_joined`] runs one closure, like `run`, but only on
//!   the caller and the workers that join before the caller is done (the
//!   closure shares its work through its own counter): decode attention,
//!   whose per-thread scratch needs the thread index.
//!
//! Waiting: a worker spins ~`SPIN` on the job word, then calls
//! `sched_yield` until `YIELD` has passed (on an idle core that returns at
//! once; on a busy one it gives the core to whoever needs it), then parks;
//! the yield phase halves after each wait that ended parked. The caller
//! wakes only parked workers (a futex wake each), and itself spins briefly
//! then parks while it waits for running workers.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long an idle worker busy-spins before it starts yielding.
const SPIN: Duration = Duration::from_micros(20);
/// How long an idle worker keeps yielding before it parks.
const YIELD: Duration = Duration::from_micros(150);
/// How long the caller busy-spins for running workers before yielding.
const CALLER_SPIN: Duration = Duration::from_micros(20);

type Job<'a> = dyn Fn(usize, usize) + Sync + 'a;

/// Job word layout: generation (high 31 bits) | CLOSED | joined count (32 bits).
const JOINED_MASK: u64 = 0xffff_ffff;
const CLOSED: u64 = 1 << 32;
const GEN_ONE: u64 = 1 << 33;

struct Shared {
    /// Generation, closed flag and number of workers that joined the job.
    state: AtomicU64,
    /// Points to a `&Job` valid while the job is open or joined workers run
    /// (see `dispatch`).
    job: AtomicPtr<&'static Job<'static>>,
    /// Joined workers that finished the current job.
    finished: AtomicUsize,
    shutdown: AtomicBool,
    panicked: AtomicBool,
    /// Per worker (index tid - 1): set while it is parked or about to park.
    parked: Vec<AtomicBool>,
    workers: OnceLock<Vec<Thread>>,
    /// The caller sets this before parking; the last finishing worker unparks it.
    caller_parked: AtomicBool,
    caller: Mutex<Option<Thread>>,
    n_threads: usize,
}

pub struct ThreadPool {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
    /// Serializes jobs submitted from different threads.
    running: Mutex<()>,
}

impl ThreadPool {
    /// A pool of `n_threads` threads in total, the caller included
    /// (`n_threads - 1` workers are spawned; 0 is treated as 1).
    pub fn new(n_threads: usize) -> ThreadPool {
        let n_threads = n_threads.max(1);
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            finished: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            parked: (1..n_threads).map(|_| AtomicBool::new(false)).collect(),
            workers: OnceLock::new(),
            caller_parked: AtomicBool::new(false),
            caller: Mutex::new(None),
            n_threads,
        });
        let handles: Vec<JoinHandle<()>> = (1..n_threads)
            .map(|tid| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("meki-worker-{tid}"))
                    .spawn(move || worker(s, tid))
                    .expect("spawning a kernel worker thread")
            })
            .collect();
        let _ = shared
            .workers
            .set(handles.iter().map(|h| h.thread().clone()).collect());
        ThreadPool {
            shared,
            handles,
            running: Mutex::new(()),
        }
    }

    /// A pool with one thread per available core.
    pub fn with_available_parallelism() -> ThreadPool {
        ThreadPool::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn n_threads(&self) -> usize {
        self.shared.n_threads
    }

    /// Runs `f(thread_index, n_threads)` on every thread of the pool and waits
    /// for all of them. A panic in any thread is re-raised here.
    pub fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        if self.shared.n_threads == 1 {
            f(0, 1);
            return;
        }
        self.dispatch(f, true);
    }

    /// Calls `f(tid, n_threads)` on the caller and on every worker that joins
    /// the job before the caller's own call has returned; a worker not running
    /// by then skips it. For jobs that hand out their work through a counter
    /// of their own (so the caller alone can do all of it) but need the
    /// thread index (per-thread scratch): unlike [`ThreadPool::run`], a
    /// parked or descheduled worker never delays the call.
    pub fn run_joined(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        if self.shared.n_threads == 1 {
            f(0, 1);
            return;
        }
        self.dispatch(f, false);
    }

    /// Calls `f(item)` once for every `item` in `0..n`, spread over the pool's
    /// threads by a shared counter (dynamic balancing). Workers that have not
    /// started when all items are taken do not take part. A panic in `f` is
    /// re-raised here.
    pub fn run_chunks(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        if n == 0 {
            return;
        }
        if self.shared.n_threads == 1 || n == 1 {
            (0..n).for_each(f);
            return;
        }
        let next = AtomicUsize::new(0);
        let body = |_: usize, _: usize| loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            f(i);
        };
        self.dispatch(&body, false);
    }

    /// Calls `f(i, chunk)` for every chunk `i` of `data.chunks_mut(chunk_len)`
    /// (the last one may be shorter), spread over the pool's threads like
    /// [`ThreadPool::run_chunks`]: each call writes its own chunk, so threads
    /// fill disjoint parts of one buffer without locks.
    pub fn run_chunks_mut<T: Send>(
        &self,
        data: &mut [T],
        chunk_len: usize,
        f: &(dyn Fn(usize, &mut [T]) + Sync),
    ) {
        assert!(chunk_len > 0, "run_chunks_mut: chunk length 0");
        let len = data.len();
        let base = SendPtr(data.as_mut_ptr());
        self.run_chunks(len.div_ceil(chunk_len), &|i| {
            let start = i * chunk_len;
            let end = len.min(start + chunk_len);
            // SAFETY: `run_chunks` calls this once per `i` and returns only
            // after every call has finished; the ranges `start..end` of
            // distinct `i` are disjoint and inside `data`, which stays
            // mutably borrowed (so touched by nothing else) until then.
            let chunk = unsafe { std::slice::from_raw_parts_mut(base.at(start), end - start) };
            f(i, chunk);
        });
    }

    /// Publishes `f`, runs the caller's share, closes the job (after the
    /// caller's share unless `all`: then after every worker joined) and waits
    /// for the joined workers.
    fn dispatch(&self, f: &(dyn Fn(usize, usize) + Sync), all: bool) {
        let s = &*self.shared;
        let _guard = self.running.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the `'static` lifetime is a lie told only to the workers: a
        // worker dereferences the pointer only after joining the job (a CAS on
        // `state` that fails once the job is closed), and this function does
        // not return (nor unwind: the caller's share runs under catch_unwind)
        // before the job is closed and every joined worker has finished, so
        // `f` outlives every use.
        let fref: &'static Job<'static> = unsafe { std::mem::transmute(f) };
        let slot: *mut &'static Job<'static> = Box::into_raw(Box::new(fref));
        s.job.store(slot, Ordering::Release);
        s.finished.store(0, Ordering::Relaxed);
        let gen = (s.state.load(Ordering::Relaxed) & !(CLOSED | JOINED_MASK)).wrapping_add(GEN_ONE);
        // SeqCst pairs with the workers' SeqCst store of `parked` then load of
        // `state`: either the worker sees the new job or we see it parked.
        s.state.store(gen, Ordering::SeqCst);
        wake_parked(s);
        let mine = catch_unwind(AssertUnwindSafe(|| f(0, s.n_threads)));
        let joined = if all {
            let want = (s.n_threads - 1) as u64;
            wait_until(s, || s.state.load(Ordering::Acquire) & JOINED_MASK == want);
            s.state.fetch_or(CLOSED, Ordering::AcqRel);
            want as usize
        } else {
            (s.state.fetch_or(CLOSED, Ordering::AcqRel) & JOINED_MASK) as usize
        };
        wait_until(s, || s.finished.load(Ordering::Acquire) == joined);
        // SAFETY: `slot` came from Box::into_raw above; the job is closed and
        // every worker that joined it has finished, so none uses it any more.
        drop(unsafe { Box::from_raw(slot) });
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::AcqRel) {
            panic!("a kernel worker thread panicked");
        }
    }
}

/// The base of a buffer that [`ThreadPool::run_chunks_mut`] hands out in
/// disjoint chunks.
struct SendPtr<T>(*mut T);

// SAFETY: the pointer is only used to build disjoint `&mut [T]` chunks, one
// per thread at a time, so sharing it is like sending those chunks (`T: Send`).
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// `base + i` (a method, so closures capture the whole `Sync` wrapper,
    /// not its raw-pointer field).
    fn at(&self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}

fn wake_parked(s: &Shared) {
    if let Some(ws) = s.workers.get() {
        for (p, t) in s.parked.iter().zip(ws) {
            if p.load(Ordering::SeqCst) {
                t.unpark();
            }
        }
    }
}

/// The caller's wait: spin briefly, then park until a worker unparks it. No
/// yielding phase: the workers it waits for are running (or must be
/// scheduled), and a caller that keeps its core only delays them when the
/// machine is oversubscribed.
fn wait_until(s: &Shared, done: impl Fn() -> bool) {
    let t0 = Instant::now();
    let mut spins = 0u32;
    while !done() {
        spins += 1;
        if !spins.is_multiple_of(64) || t0.elapsed() < CALLER_SPIN {
            std::hint::spin_loop();
        } else {
            *s.caller.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::thread::current());
            // SeqCst pairs with the workers' increment of `finished` then load
            // of `caller_parked`: either we see the count or they see the flag.
            s.caller_parked.store(true, Ordering::SeqCst);
            while !done() {
                std::thread::park_timeout(Duration::from_millis(1));
            }
            s.caller_parked.store(false, Ordering::SeqCst);
            return;
        }
    }
}

fn worker(s: Arc<Shared>, tid: usize) {
    // Generation 0 is the pool's creation.
    let mut seen_gen = 0u64;
    // Adaptive yield phase: halved after every wait that ended parked (jobs
    // are far apart, yielding only burns CPU), reset when a job comes while
    // the worker is still awake.
    let mut yield_for = YIELD;
    loop {
        // Wait for a new generation.
        let t0 = Instant::now();
        let mut spins = 0u32;
        let mut yielding = false;
        let mut parked = false;
        let state = loop {
            let st = s.state.load(Ordering::Acquire);
            if st & !(CLOSED | JOINED_MASK) != seen_gen {
                break st;
            }
            if !yielding {
                spins += 1;
                if !spins.is_multiple_of(64) || t0.elapsed() < SPIN {
                    std::hint::spin_loop();
                    continue;
                }
                yielding = true;
            }
            if t0.elapsed() < yield_for {
                std::thread::yield_now();
                continue;
            }
            parked = true;
            s.parked[tid - 1].store(true, Ordering::SeqCst);
            while s.state.load(Ordering::SeqCst) & !(CLOSED | JOINED_MASK) == seen_gen {
                std::thread::park();
            }
            s.parked[tid - 1].store(false, Ordering::Relaxed);
        };
        yield_for = if parked {
            (yield_for / 2).max(SPIN)
        } else {
            YIELD
        };
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        seen_gen = state & !(CLOSED | JOINED_MASK);
        // Join the job unless it is closed (or already replaced by a newer one,
        // which the next loop iteration picks up).
        let mut st = state;
        let joined = loop {
            if st & CLOSED != 0 || st & !(CLOSED | JOINED_MASK) != seen_gen {
                break false;
            }
            match s
                .state
                .compare_exchange_weak(st, st + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break true,
                Err(now) => st = now,
            }
        };
        if !joined {
            continue;
        }
        // SAFETY: joining succeeded on an open job, so `dispatch` published a
        // live job pointer and waits for us to increment `finished`.
        let job: &Job<'static> = unsafe { *s.job.load(Ordering::Acquire) };
        if catch_unwind(AssertUnwindSafe(|| job(tid, s.n_threads))).is_err() {
            s.panicked.store(true, Ordering::Release);
        }
        s.finished.fetch_add(1, Ordering::SeqCst);
        if s.caller_parked.load(Ordering::SeqCst) {
            if let Some(t) = &*s.caller.lock().unwrap_or_else(|e| e.into_inner()) {
                t.unpark();
            }
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        let s = &self.shared;
        s.shutdown.store(true, Ordering::Release);
        s.state.fetch_add(GEN_ONE, Ordering::SeqCst); // wraps: only equality matters
        if let Some(ws) = s.workers.get() {
            for t in ws {
                t.unpark();
            }
        }
        for w in self.handles.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_runs_once_per_job() {
        for n in [1, 2, 3, 5] {
            let pool = ThreadPool::new(n);
            for round in 0..200 {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(&|tid, nt| {
                    assert_eq!(nt, n);
                    hits[tid].fetch_add(1, Ordering::Relaxed);
                });
                assert!(
                    hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                    "n={n} round={round}"
                );
                if round % 50 == 0 {
                    // Let the workers park, then wake them.
                    std::thread::sleep(YIELD * 3);
                }
            }
        }
    }

    #[test]
    fn every_chunk_runs_once() {
        for n in [1, 2, 3, 5] {
            let pool = ThreadPool::new(n);
            for round in 0..300 {
                let items = round % 37;
                let hits: Vec<AtomicUsize> = (0..items).map(|_| AtomicUsize::new(0)).collect();
                pool.run_chunks(items, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(
                    hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                    "n={n} round={round}"
                );
                if round % 60 == 0 {
                    std::thread::sleep(YIELD * 3);
                }
            }
        }
    }

    #[test]
    fn run_joined_runs_the_caller_and_only_joined_workers() {
        for n in [1, 2, 3, 5] {
            let pool = ThreadPool::new(n);
            for round in 0..300 {
                // Work handed out by the job's own counter, per-thread
                // slots by tid: every item once, the caller always there.
                let items = round % 37;
                let next = AtomicUsize::new(0);
                let hits: Vec<AtomicUsize> = (0..items).map(|_| AtomicUsize::new(0)).collect();
                let per_tid: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run_joined(&|tid, nt| {
                    assert_eq!(nt, n);
                    per_tid[tid].fetch_add(1, Ordering::Relaxed);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= items {
                            break;
                        }
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    }
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                assert_eq!(per_tid[0].load(Ordering::Relaxed), 1, "n={n} round={round}");
                assert!(per_tid.iter().all(|c| c.load(Ordering::Relaxed) <= 1));
                if round % 60 == 0 {
                    // Parked workers: the call does not wait for them.
                    std::thread::sleep(YIELD * 3);
                }
            }
        }
    }

    #[test]
    fn every_mut_chunk_is_its_own() {
        for n in [1, 2, 3, 5] {
            let pool = ThreadPool::new(n);
            for len in [0, 1, 7, 32, 33, 100] {
                for chunk_len in [1, 3, 8, 200] {
                    let mut data = vec![usize::MAX; len];
                    let calls = AtomicUsize::new(0);
                    pool.run_chunks_mut(&mut data, chunk_len, &|i, chunk| {
                        calls.fetch_add(1, Ordering::Relaxed);
                        assert!(!chunk.is_empty() && chunk.len() <= chunk_len);
                        for (k, v) in chunk.iter_mut().enumerate() {
                            assert_eq!(*v, usize::MAX, "element written twice");
                            *v = i * chunk_len + k;
                        }
                    });
                    let want: Vec<usize> = (0..len).collect();
                    assert_eq!(data, want, "n={n} len={len} chunk_len={chunk_len}");
                    assert_eq!(calls.load(Ordering::Relaxed), len.div_ceil(chunk_len));
                }
            }
        }
    }

    #[test]
    fn more_threads_than_cores() {
        // 8 threads on whatever this machine has: must finish promptly and
        // run every item exactly once even when workers are descheduled.
        let pool = ThreadPool::new(8);
        let total = AtomicUsize::new(0);
        for _ in 0..2000 {
            pool.run_chunks(16, &|i| {
                total.fetch_add(i + 1, Ordering::Relaxed);
            });
        }
        assert_eq!(total.load(Ordering::Relaxed), 2000 * 136);
    }

    #[test]
    fn worker_panic_is_reported_and_pool_survives() {
        let pool = ThreadPool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|tid, _| {
                if tid == 1 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        let c = AtomicUsize::new(0);
        pool.run(&|_, _| {
            c.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(c.load(Ordering::Relaxed), 2);
    }
}
