//! The async runtime every command runs on, with a bounded blocking pool.
//!
//! tokio's default lets the blocking pool (file reads, atomic writes and their fsync, lock waits)
//! grow to 512 threads, each kept 10 s after its last job. Under a daemon's steady work — a push
//! every few seconds whose ledger, journal and rate-limit writes arrive in bursts — idle threads
//! rarely reach 10 s, so the pool settles at its largest burst so far, and every thread keeps its
//! stack pages and its allocator cache: the soak (README, "Soak") saw the thread count, and RSS
//! with it, creep up over a long life. The pool is bounded instead; work beyond the bound waits
//! its turn, which for file work that takes milliseconds costs nothing anyone sees.

use std::time::Duration;

/// Threads for blocking work at most (besides the workers, one per core).
pub const MAX_BLOCKING_THREADS: usize = 16;
/// How long an idle blocking thread is kept before it exits.
pub const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// The multi-threaded runtime with the bounded blocking pool.
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::{Arc, Barrier, Mutex};

    use super::*;

    /// A burst of blocking jobs, each holding its thread until all the threads the pool will give
    /// have started one, runs on at most `MAX_BLOCKING_THREADS` threads. tokio's default pool
    /// (`Runtime::new`) starts a thread for every job queued while the others are busy: 19 for
    /// this burst when tried.
    #[test]
    fn a_burst_of_blocking_work_runs_on_a_bounded_pool() {
        let runtime = build().unwrap();
        let threads = Arc::new(Mutex::new(HashSet::new()));
        // The first MAX_BLOCKING_THREADS jobs meet at the barrier, so each of them is on its own
        // thread at once; the rest can only run on those threads after them.
        let barrier = Arc::new(Barrier::new(MAX_BLOCKING_THREADS));
        let jobs = (0..64).map(|i| {
            let (threads, barrier) = (Arc::clone(&threads), Arc::clone(&barrier));
            runtime.spawn_blocking(move || {
                threads.lock().unwrap().insert(std::thread::current().id());
                if i < MAX_BLOCKING_THREADS {
                    barrier.wait();
                }
            })
        });
        let jobs: Vec<_> = jobs.collect();
        runtime.block_on(async {
            for job in jobs {
                job.await.unwrap();
            }
        });
        let used = threads.lock().unwrap().len();
        assert!(used <= MAX_BLOCKING_THREADS, "{used} blocking threads for one burst");
        assert_eq!(used, MAX_BLOCKING_THREADS, "the barrier needs that many at once");
    }
}
