//! Series of values as a pane draws them: sparklines, and values binned or
//! widened to a pane's columns. How single numbers read is
//! [`crate::units`]'s, re-exported here for the panes.

pub use crate::units::{bytes, bytes_f, bytes_of, bytes_short, count, duration, value};

/// One row of eighth blocks scaled to `max` (0 → ' ', max → '█').
pub fn spark(values: &[f64], max: f64) -> String {
    const BARS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    values
        .iter()
        .map(|&v| {
            if max <= 0.0 || !v.is_finite() || v <= 0.0 {
                BARS[0]
            } else {
                // Any non-zero value shows at least the lowest bar, so a
                // quiet step is visibly different from no traffic at all.
                let i = ((v / max) * 8.0).round().clamp(1.0, 8.0) as usize;
                BARS[i]
            }
        })
        .collect()
}

/// Average `values` into `n` bins (or keep them when there are fewer).
pub fn resample(values: &[f64], n: usize) -> Vec<f64> {
    if n == 0 || values.is_empty() {
        return Vec::new();
    }
    if values.len() <= n {
        return values.to_vec();
    }
    (0..n)
        .map(|i| {
            let a = i * values.len() / n;
            let b = ((i + 1) * values.len() / n).max(a + 1);
            let s: f64 = values[a..b].iter().sum();
            s / (b - a) as f64
        })
        .collect()
}

/// Exactly `n` columns: averaged bins when there are more values, each
/// value widened over several columns when there are fewer.
pub fn fit_width(values: &[f64], n: usize) -> Vec<f64> {
    if values.len() >= n {
        return resample(values, n);
    }
    if values.is_empty() {
        return Vec::new();
    }
    (0..n).map(|i| values[i * values.len() / n]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spark_and_resample() {
        assert_eq!(spark(&[0.0, 1.0, 2.0], 2.0), " ▄█");
        assert_eq!(resample(&[1.0, 3.0, 5.0, 7.0], 2), vec![2.0, 6.0]);
        assert_eq!(fit_width(&[1.0, 2.0], 4), vec![1.0, 1.0, 2.0, 2.0]);
    }
}
