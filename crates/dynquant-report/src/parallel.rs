//! Many small generations side by side. Generating is one token at a time, and splitting each
//! token's matrix products over threads costs a synchronisation per product; answers are
//! independent, so each worker generates whole answers on a one-thread pool instead. Results
//! come back in job order and do not depend on the number of workers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::{ReportError, Result};

/// `f` over `jobs` with as many workers as the current rayon pool has threads, each running its
/// jobs on a pool of one thread; results in job order, the first error (by job order) returned.
pub fn map_jobs<J: Sync, T: Send>(
    jobs: &[J],
    f: impl Fn(&J) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let workers = rayon::current_num_threads().clamp(1, jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<T>>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| -> Result<()> {
        let mut handles = Vec::new();
        for _ in 0..workers {
            handles.push(scope.spawn(|| -> Result<()> {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .map_err(|e| ReportError::Invalid(format!("starting a worker: {e}")))?;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else {
                        return Ok(());
                    };
                    let r = pool.install(|| f(job));
                    let failed = r.is_err();
                    *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                    if failed {
                        // stop handing out work; earlier jobs still finish
                        next.store(jobs.len(), Ordering::Relaxed);
                        return Ok(());
                    }
                }
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| ReportError::Invalid("a generation worker panicked".into()))??;
        }
        Ok(())
    })?;
    let mut out = Vec::with_capacity(jobs.len());
    for s in slots {
        match s.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(r) => out.push(r?),
            None => {
                return Err(ReportError::Invalid(
                    "a generation was not run after an earlier failure".into(),
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_in_job_order_for_any_worker_count() {
        let jobs: Vec<u64> = (0..50).collect();
        for threads in [1, 2, 5] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            let out = pool
                .install(|| map_jobs(&jobs, |j| Ok(j * j + rayon::current_num_threads() as u64)))
                .expect("map");
            // every job ran on a one-thread pool
            assert_eq!(out, jobs.iter().map(|j| j * j + 1).collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_first_failure_is_returned() {
        let jobs: Vec<u64> = (0..20).collect();
        let r = map_jobs(&jobs, |&j| {
            if j == 7 {
                Err(ReportError::Invalid(format!("job {j}")))
            } else {
                Ok(j)
            }
        });
        assert!(matches!(r, Err(ReportError::Invalid(m)) if m == "job 7"));
    }
}
