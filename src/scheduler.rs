//! A ready-queue over a DAG with bounded parallelism.
//!
//! A node starts when its dependencies have succeeded and fewer than `jobs`
//! nodes are running. A failed node's descendants are skipped. Without
//! `keep_going`, the first failure stops new starts (running nodes finish);
//! with it, independent branches carry on. Pure scheduling: the work itself
//! is a closure, so tests drive it with a recording job.

use std::collections::BTreeSet;
use std::sync::mpsc;

/// The outcome of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeStatus<T, E> {
    Done(T),
    Failed(E),
    /// A dependency (this index) failed or was skipped.
    SkippedDependency(usize),
    /// Not started because an earlier failure stopped the run.
    NotStarted,
}

/// Runs `work(i)` for every node `0..deps.len()`, where `deps[i]` lists the
/// nodes `i` depends on (all with smaller or larger indices; any DAG).
pub fn run<T, E, F>(
    deps: &[Vec<usize>],
    jobs: usize,
    keep_going: bool,
    work: F,
) -> Vec<NodeStatus<T, E>>
where
    T: Send,
    E: Send,
    F: Fn(usize) -> Result<T, E> + Sync,
{
    let n = deps.len();
    let jobs = jobs.max(1);
    let mut status: Vec<Option<NodeStatus<T, E>>> = (0..n).map(|_| None).collect();
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![vec![]; n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut running = 0usize;
    let mut stopped = false;

    // `jobs` workers take nodes from one queue (a thread per node costs
    // more than a cached layer's whole check).
    let (todo, queue) = mpsc::channel::<usize>();
    let queue = std::sync::Mutex::new(queue);
    std::thread::scope(|scope| {
        // A worker that panics hands the panic over, and the loop below
        // resumes it: waiting on for its result would hang the run for
        // good (the panic of a write to a closed stderr, for one).
        let (tx, rx) = mpsc::channel::<(usize, std::thread::Result<Result<T, E>>)>();
        let work = &work;
        for _ in 0..jobs.min(n) {
            let tx = tx.clone();
            let queue = &queue;
            scope.spawn(move || {
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(i) = next else { break };
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(i)));
                    let panicked = r.is_err();
                    if tx.send((i, r)).is_err() || panicked {
                        break;
                    }
                }
            });
        }
        drop(tx);
        loop {
            while !stopped && running < jobs {
                let Some(i) = ready.pop_first() else { break };
                running += 1;
                if todo.send(i).is_err() {
                    running -= 1;
                    break;
                }
            }
            if running == 0 {
                break;
            }
            let Ok((i, result)) = rx.recv() else { break };
            running -= 1;
            let result = match result {
                Ok(r) => r,
                // Unwinding drops the queue's sender: idle workers end,
                // busy ones finish their node; then the scope re-panics.
                Err(panic) => std::panic::resume_unwind(panic),
            };
            match result {
                Ok(v) => {
                    status[i] = Some(NodeStatus::Done(v));
                    for &c in &dependents[i] {
                        waiting[c] -= 1;
                        if waiting[c] == 0 {
                            ready.insert(c);
                        }
                    }
                }
                Err(e) => {
                    status[i] = Some(NodeStatus::Failed(e));
                    skip_descendants(i, &dependents, &mut status);
                    if !keep_going {
                        stopped = true;
                    }
                }
            }
        }
        drop(todo);
    });

    status
        .into_iter()
        .map(|s| s.unwrap_or(NodeStatus::NotStarted))
        .collect()
}

fn skip_descendants<T, E>(
    failed: usize,
    dependents: &[Vec<usize>],
    status: &mut [Option<NodeStatus<T, E>>],
) {
    let mut stack = vec![failed];
    while let Some(i) = stack.pop() {
        for &c in &dependents[i] {
            if status[c].is_none() {
                status[c] = Some(NodeStatus::SkippedDependency(i));
                stack.push(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// A chain 0 -> 1 and an independent 2, plus 3 depending on 1.
    fn deps() -> Vec<Vec<usize>> {
        vec![vec![], vec![0], vec![], vec![1]]
    }

    /// A panicking node ends the run with its panic, never a hang.
    #[test]
    fn a_panicking_node_panics_the_run_instead_of_hanging() {
        let (done, ended) = mpsc::channel();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(|| {
                run(&deps(), 2, false, |i| {
                    if i == 1 {
                        panic!("boom");
                    }
                    Ok::<_, ()>(i)
                })
            });
            let _ = done.send(r.is_err());
        });
        let panicked = ended
            .recv_timeout(Duration::from_secs(10))
            .expect("the run hangs after a node panicked");
        assert!(panicked);
    }

    #[test]
    fn respects_dependencies() {
        let log = Mutex::new(vec![]);
        let out = run(&deps(), 1, false, |i| {
            log.lock().unwrap().push(i);
            Ok::<_, ()>(i)
        });
        assert!(out.iter().all(|s| matches!(s, NodeStatus::Done(_))));
        let order = log.into_inner().unwrap();
        let pos = |x| order.iter().position(|&y| y == x).unwrap();
        assert!(pos(0) < pos(1) && pos(1) < pos(3));
    }

    #[test]
    fn independent_branches_run_concurrently() {
        let start = Instant::now();
        let out = run(&[vec![], vec![]], 2, false, |_| {
            std::thread::sleep(Duration::from_millis(300));
            Ok::<_, ()>(())
        });
        assert_eq!(out.len(), 2);
        assert!(
            start.elapsed() < Duration::from_millis(550),
            "took {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn never_exceeds_jobs() {
        let live = Mutex::new((0usize, 0usize));
        run(&vec![vec![]; 6], 2, false, |_| {
            {
                let mut l = live.lock().unwrap();
                l.0 += 1;
                l.1 = l.1.max(l.0);
            }
            std::thread::sleep(Duration::from_millis(30));
            live.lock().unwrap().0 -= 1;
            Ok::<_, ()>(())
        });
        assert_eq!(live.lock().unwrap().1, 2);
    }

    #[test]
    fn failure_skips_descendants_and_keep_going_runs_siblings() {
        let out = run(
            &deps(),
            1,
            true,
            |i| if i == 0 { Err("boom") } else { Ok(i) },
        );
        assert_eq!(out[0], NodeStatus::Failed("boom"));
        assert_eq!(out[1], NodeStatus::SkippedDependency(0));
        assert_eq!(out[3], NodeStatus::SkippedDependency(1));
        assert_eq!(out[2], NodeStatus::Done(2));
    }

    #[test]
    fn failure_without_keep_going_starts_nothing_new() {
        let out = run(
            &deps(),
            1,
            false,
            |i| if i == 0 { Err("boom") } else { Ok(i) },
        );
        assert_eq!(out[0], NodeStatus::Failed("boom"));
        assert_eq!(out[2], NodeStatus::NotStarted);
    }
}
