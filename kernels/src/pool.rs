//! A small thread pool for per-token kernels: persistent workers that spin
//! briefly and then park, so a dispatch costs a few µs (a decode step issues
//! ~200 matrix-vector products; rayon's per-call overhead is too high there).
//!
//! [`ThreadPool::run`] runs one closure on every thread (the caller is
//! thread 0) and returns when all have finished. Work splitting is up to the
//! closure (see `matmul.rs`: an atomic counter hands out row chunks).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before parking.
const SPIN: Duration = Duration::from_micros(300);
/// How long the caller spins for stragglers before sleeping (on a loaded
/// machine a spinning caller would steal the CPU the stragglers need).
const CALLER_SPIN: Duration = Duration::from_micros(50);

type Job<'a> = dyn Fn(usize, usize) + Sync + 'a;

struct Shared {
    /// Incremented once per job (and at shutdown).
    generation: AtomicUsize,
    /// Points to a `&Job` valid while `remaining > 0` (see `run`).
    job: AtomicPtr<&'static Job<'static>>,
    /// Workers still running the current job.
    remaining: AtomicUsize,
    sleepers: AtomicUsize,
    shutdown: AtomicBool,
    panicked: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
    /// The caller sleeps here when stragglers take long; the last worker
    /// to finish wakes it.
    done_lock: Mutex<bool>,
    done: Condvar,
    n_threads: usize,
}

pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serializes `run` calls from different threads.
    running: Mutex<()>,
}

impl ThreadPool {
    /// A pool of `n_threads` threads in total, the caller included
    /// (`n_threads - 1` workers are spawned; 0 is treated as 1).
    pub fn new(n_threads: usize) -> ThreadPool {
        let n_threads = n_threads.max(1);
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            remaining: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            done_lock: Mutex::new(false),
            done: Condvar::new(),
            n_threads,
        });
        let workers = (1..n_threads)
            .map(|tid| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("meki-worker-{tid}"))
                    .spawn(move || worker(s, tid))
                    .expect("spawning a kernel worker thread")
            })
            .collect();
        ThreadPool {
            shared,
            workers,
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
        let s = &*self.shared;
        if s.n_threads == 1 {
            f(0, 1);
            return;
        }
        let _guard = self.running.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the `'static` lifetime is a lie told only to the workers:
        // they dereference the pointer between observing the new generation and
        // decrementing `remaining`, and this function does not return (nor
        // unwind: the caller's share runs under catch_unwind) before
        // `remaining` is back to 0, so `f` outlives every use.
        let fref: &'static Job<'static> = unsafe { std::mem::transmute(f) };
        let slot: *mut &'static Job<'static> = Box::into_raw(Box::new(fref));
        s.job.store(slot, Ordering::Release);
        s.remaining.store(s.n_threads - 1, Ordering::Release);
        s.generation.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0, s.n_threads)));
        let t0 = Instant::now();
        while s.remaining.load(Ordering::Acquire) != 0 {
            if t0.elapsed() < CALLER_SPIN {
                std::hint::spin_loop();
                continue;
            }
            let mut waiting = s.done_lock.lock().unwrap_or_else(|e| e.into_inner());
            *waiting = true;
            while s.remaining.load(Ordering::Acquire) != 0 {
                waiting = s.done.wait(waiting).unwrap_or_else(|e| e.into_inner());
            }
            *waiting = false;
        }
        // SAFETY: `slot` came from Box::into_raw above and no worker uses it
        // any more (`remaining` is 0).
        drop(unsafe { Box::from_raw(slot) });
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::AcqRel) {
            panic!("a kernel worker thread panicked");
        }
    }
}

fn worker(s: Arc<Shared>, tid: usize) {
    // Generation 0 is the pool's creation: the thread may start after the
    // first job was published, which it must not skip.
    let mut seen = 0;
    loop {
        let t0 = Instant::now();
        let mut spins = 0u32;
        while s.generation.load(Ordering::Acquire) == seen {
            spins += 1;
            if !spins.is_multiple_of(256) || t0.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let mut l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            while s.generation.load(Ordering::SeqCst) == seen {
                l = s.wake.wait(l).unwrap_or_else(|e| e.into_inner());
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        seen = s.generation.load(Ordering::Acquire);
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: a new generation with no shutdown means `run` published a
        // live job pointer and is waiting for `remaining` (see `run`).
        let job: &Job<'static> = unsafe { *s.job.load(Ordering::Acquire) };
        if catch_unwind(AssertUnwindSafe(|| job(tid, s.n_threads))).is_err() {
            s.panicked.store(true, Ordering::Release);
        }
        if s.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Last one out: wake the caller if it went to sleep. Taking the
            // lock orders this after the caller's check of `remaining`.
            let waiting = s.done_lock.lock().unwrap_or_else(|e| e.into_inner());
            if *waiting {
                s.done.notify_one();
            }
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        {
            let _l = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
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
                    std::thread::sleep(SPIN * 3);
                }
            }
        }
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
