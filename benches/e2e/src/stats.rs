//! Samples and their summaries: median and p95 (nearest rank), and ratios
//! of the agent's figures to raw runc's from the same run.

use std::time::Duration;

/// A set of measurements in one unit (milliseconds, unless said otherwise).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    /// Samples from durations, in milliseconds.
    pub fn from_durations(d: &[Duration]) -> Samples {
        Samples(d.iter().map(|d| d.as_secs_f64() * 1e3).collect())
    }

    /// The `p`-th percentile (0..=100) by nearest rank; NaN when empty.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    /// The median (p50).
    pub fn p50(&self) -> f64 {
        self.percentile(50.0)
    }

    /// The 95th percentile.
    pub fn p95(&self) -> f64 {
        self.percentile(95.0)
    }

    /// The largest sample; NaN when empty.
    pub fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NAN, f64::max)
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// `agent / raw`; NaN when either is missing.
pub fn ratio(agent: f64, raw: f64) -> f64 {
    if raw > 0.0 && agent.is_finite() {
        agent / raw
    } else {
        f64::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Samples((1..=20).map(f64::from).collect());
        assert_eq!(s.p50(), 10.0);
        assert_eq!(s.p95(), 19.0);
        assert_eq!(s.percentile(100.0), 20.0);
        assert_eq!(s.percentile(0.0), 1.0);
        assert_eq!(Samples(vec![7.0]).p95(), 7.0);
        assert!(Samples::default().p50().is_nan());
    }

    #[test]
    fn unsorted_input_and_ratios() {
        let s = Samples(vec![5.0, 1.0, 3.0]);
        assert_eq!((s.p50(), s.max(), s.len()), (3.0, 5.0, 3));
        assert_eq!(ratio(3.0, 2.0), 1.5);
        assert!(ratio(1.0, 0.0).is_nan());
        let d = Samples::from_durations(&[Duration::from_micros(1500)]);
        assert_eq!(d.0, [1.5]);
    }
}
