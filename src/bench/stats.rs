//! Latency statistics of one query in one form: median and 95th percentile, in milliseconds.

use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub median_ms: f64,
    pub p95_ms: f64,
    pub samples: usize,
}

impl Latency {
    /// From the measured durations (at least one).
    pub fn of(samples: &[Duration]) -> Latency {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        Latency {
            median_ms: median(&ms),
            p95_ms: nearest_rank(&ms, 0.95),
            samples: ms.len(),
        }
    }
}

/// The median of sorted values: the middle one, or the mean of the two middle ones.
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The nearest-rank percentile `p` (0 to 1) of sorted values.
fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `a / b` of two medians, rounded to two decimals as reported.
pub fn ratio(a: &Latency, b: &Latency) -> f64 {
    (a.median_ms / b.median_ms * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p95() {
        let d: Vec<Duration> = (1..=20).rev().map(Duration::from_millis).collect();
        let l = Latency::of(&d);
        assert_eq!(l.median_ms, 10.5);
        assert_eq!(l.p95_ms, 19.0);
        assert_eq!(Latency::of(&d[..3]).median_ms, 19.0);
        assert_eq!(ratio(&Latency::of(&d[..1]), &l), 1.9);
    }
}
