//! Small statistics and formatting helpers of the HTTP bench.

use std::time::Duration;

/// Median of `values` (the upper one of an even count); `None` when empty
/// or when a value is not a number.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.to_vec();
    if sorted.iter().any(|v| v.is_nan()) {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

/// The `q` quantile (0.0..=1.0, nearest rank) of `samples`, sorted in place.
pub fn quantile(samples: &mut [u64], q: f64) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = (q.clamp(0.0, 1.0) * samples.len() as f64).ceil() as usize;
    samples.get(rank.saturating_sub(1)).copied()
}

/// Largest over smallest of `counts`; `None` when one of them is zero or
/// there are none.
pub fn max_min_ratio(counts: &[u64]) -> Option<f64> {
    let max = *counts.iter().max()?;
    let min = *counts.iter().min()?;
    (min > 0).then(|| max as f64 / min as f64)
}

/// A rate such as `123.4k` or `1.23M`.
pub fn rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2}M", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.1}k", per_second / 1e3)
    } else {
        format!("{per_second:.0}")
    }
}

/// A latency in the unit that suits it.
pub fn latency(duration: Duration) -> String {
    let us = duration.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else if us >= 1_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} us")
    }
}

/// KiB as MiB with one decimal.
pub fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(3.0));
        assert_eq!(median(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut samples: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(quantile(&mut samples, 0.5), Some(50));
        assert_eq!(quantile(&mut samples, 0.99), Some(99));
        assert_eq!(quantile(&mut samples, 1.0), Some(100));
        assert_eq!(quantile(&mut samples, 0.0), Some(1));
        assert_eq!(quantile(&mut [], 0.5), None);
    }

    #[test]
    fn balance_ratios() {
        assert_eq!(max_min_ratio(&[10, 10]), Some(1.0));
        assert_eq!(max_min_ratio(&[11, 10, 10]), Some(1.1));
        assert_eq!(max_min_ratio(&[5, 0]), None);
        assert_eq!(max_min_ratio(&[]), None);
    }

    #[test]
    fn formats() {
        assert_eq!(rate(1_234_567.0), "1.23M");
        assert_eq!(rate(98_765.0), "98.8k");
        assert_eq!(rate(321.0), "321");
        assert_eq!(latency(Duration::from_micros(640)), "640 us");
        assert_eq!(latency(Duration::from_micros(1_500)), "1.50 ms");
        assert_eq!(latency(Duration::from_millis(25)), "25.0 ms");
        assert_eq!(mib(5632.0), "5.5 MiB");
    }
}
