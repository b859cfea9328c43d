//! The thread pools of every parallel call, shared and bounded.
//!
//! `num_threads = 0`, or any count at least the size of rayon's global pool (one thread per core,
//! or `RAYON_NUM_THREADS`), runs on the global pool: asking for a million threads starts none.
//! A smaller count runs on a pool of that size, kept for reuse; at most [`MAX_SMALL_POOLS`] such
//! pools live at once (least recently used dropped first, its threads exit), so the threads this
//! crate ever holds are bounded by `global + MAX_SMALL_POOLS * (global - 1)`.
use std::sync::{Arc, Mutex};

/// Most pools of fewer threads than the global pool kept alive at once.
pub const MAX_SMALL_POOLS: usize = 4;

/// Threads of rayon's global pool (the most any call runs on).
pub fn max_threads() -> usize {
    static GLOBAL: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *GLOBAL.get_or_init(|| match rayon::current_thread_index() {
        None => rayon::current_num_threads(), // outside any pool: the global pool's size
        // inside a pool (never the case from Python): one thread per core, rayon's default
        Some(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
}

/// The thread count a request of `num_threads` runs on (0 = all of the global pool).
pub fn effective_threads(num_threads: usize) -> usize {
    let max = max_threads();
    if num_threads == 0 || num_threads >= max {
        max
    } else {
        num_threads
    }
}

/// Run `f` on a pool of `effective_threads(num_threads)` threads (see the module docs).
pub fn with_pool<R: Send>(num_threads: usize, f: impl FnOnce() -> R + Send) -> Result<R, String> {
    static POOLS: Mutex<Vec<(usize, Arc<rayon::ThreadPool>)>> = Mutex::new(Vec::new());
    let n = effective_threads(num_threads);
    if n == max_threads() {
        return Ok(f());
    }
    let pool = {
        let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
        let pos = pools.iter().position(|p| p.0 == n);
        let entry = match pos {
            Some(i) => pools.remove(i),
            None => {
                let p = rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("tokbench-{i}"))
                    .build()
                    .map_err(|e| format!("cannot start {n} threads: {e}"))?;
                (n, Arc::new(p))
            }
        };
        let pool = entry.1.clone();
        pools.insert(0, entry); // most recently used first
        pools.truncate(MAX_SMALL_POOLS);
        pool
    };
    Ok(pool.install(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_counts_use_the_global_pool() {
        assert_eq!(effective_threads(0), max_threads());
        assert_eq!(effective_threads(1_000_000), max_threads());
        let n = with_pool(1_000_000, rayon::current_num_threads).unwrap();
        assert_eq!(n, max_threads());
    }

    #[test]
    fn small_pools_are_reused_and_bounded() {
        for _ in 0..3 {
            for k in 1..20 {
                let got = with_pool(k, rayon::current_num_threads).unwrap();
                assert_eq!(got, effective_threads(k));
            }
        }
    }
}
