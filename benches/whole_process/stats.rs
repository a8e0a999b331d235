//! Latency samples and their summaries.

use std::time::Duration;

/// Latencies of one phase in one round, in nanoseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    nanos: Vec<u64>,
    /// Wall time of the whole phase (calls/s = len / wall).
    pub wall: Duration,
}

impl Samples {
    /// Room for `n` samples, so that recording never allocates mid-phase.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            nanos: Vec::with_capacity(n),
            wall: Duration::ZERO,
        }
    }

    /// Records one latency.
    pub fn push(&mut self, latency: Duration) {
        self.nanos
            .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Merges the samples of concurrent workers of one phase.
    pub fn extend(&mut self, other: &Samples) {
        self.nanos.extend_from_slice(&other.nanos);
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.nanos.len()
    }

    /// The summary of this phase.
    pub fn summary(&mut self) -> Summary {
        self.nanos.sort_unstable();
        let calls_per_sec = if self.wall.is_zero() {
            0.0
        } else {
            self.nanos.len() as f64 / self.wall.as_secs_f64()
        };
        Summary {
            p50: percentile(&self.nanos, 0.50),
            p99: percentile(&self.nanos, 0.99),
            calls_per_sec,
            count: self.nanos.len(),
        }
    }
}

/// One phase in one round.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Throughput over the phase's wall time.
    pub calls_per_sec: f64,
    /// Number of calls.
    pub count: usize,
}

/// The nearest-rank percentile of sorted nanoseconds.
fn percentile(sorted: &[u64], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Duration::from_nanos(sorted[rank - 1])
}

/// A value measured once per round: its median and spread across rounds.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    /// Median across rounds.
    pub median: f64,
    /// Smallest round.
    pub min: f64,
    /// Largest round.
    pub max: f64,
}

/// Median and range of per-round values (empty → zeros).
pub fn spread(values: impl IntoIterator<Item = f64>) -> Spread {
    let mut v: Vec<f64> = values.into_iter().collect();
    if v.is_empty() {
        return Spread {
            median: 0.0,
            min: 0.0,
            max: 0.0,
        };
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    };
    Spread {
        median,
        min: v[0],
        max: v[v.len() - 1],
    }
}

/// Median of durations (used for spawn times within a round).
pub fn median_duration(mut values: Vec<Duration>) -> Duration {
    values.sort_unstable();
    match values.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2,
    }
}
