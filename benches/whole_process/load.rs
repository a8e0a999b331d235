//! Closed-loop load: N workers, each calling in a loop until a deadline.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::task::JoinSet;

use crate::stats::Samples;

/// Runs `n` workers to completion; each returns its own samples. The wall
/// time is from the first spawn to the last worker's end (callers with a
/// warm-up window set their own).
pub async fn run_workers<Fut>(n: usize, worker: impl Fn(usize) -> Fut) -> anyhow::Result<Samples>
where
    Fut: Future<Output = anyhow::Result<Samples>> + Send + 'static,
{
    let start = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..n {
        set.spawn(worker(i));
    }
    let mut all = Samples::default();
    while let Some(done) = set.join_next().await {
        all.extend(&done.context("a load worker panicked")??);
    }
    all.wall = start.elapsed();
    Ok(all)
}

/// Calls `call` until `deadline`, timing each call. A worker calls at most
/// `cap` times, so that even a deadline far off ends the loop.
pub async fn until<F, Fut>(deadline: Instant, cap: usize, mut call: F) -> anyhow::Result<Samples>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut samples = Samples::with_capacity(cap.min(1 << 16));
    let mut now = Instant::now();
    while now < deadline && samples.len() < cap {
        call().await?;
        let end = Instant::now();
        samples.push(end - now);
        now = end;
    }
    Ok(samples)
}

/// Makes `n` calls one after another, timing each.
pub async fn sequential<F, Fut>(n: usize, mut call: F) -> anyhow::Result<Samples>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut samples = Samples::with_capacity(n);
    let start = Instant::now();
    let mut now = start;
    for _ in 0..n {
        call().await?;
        let end = Instant::now();
        samples.push(end - now);
        now = end;
    }
    samples.wall = start.elapsed();
    Ok(samples)
}

/// The upper bound on calls one worker makes in `duration` (at most one per
/// microsecond): the loops' hard stop.
pub fn cap_for(duration: Duration) -> usize {
    usize::try_from(duration.as_micros()).unwrap_or(usize::MAX)
}
