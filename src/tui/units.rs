//! How numbers read on screen: bytes in IEC units, rates, durations and
//! compact counts, all short enough for an 80-column pane.

/// Bytes in IEC units: one decimal below 10, none above ("3.1 MiB", "412 MiB").
pub fn bytes(n: u64) -> String {
    bytes_f(n as f64)
}

/// [`bytes`] for averaged (fractional) byte counts.
pub fn bytes_f(n: f64) -> String {
    if !n.is_finite() || n < 0.0 {
        return "–".into();
    }
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{} B", v.round() as u64)
    } else if v < 10.0 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.0} {}", UNITS[unit])
    }
}

/// "12.1/139 GiB": a used/total pair sharing the total's unit.
pub fn bytes_of(used: u64, total: u64) -> String {
    let t = bytes(total);
    let unit = t.rsplit(' ').next().unwrap_or("B");
    let div = match unit {
        "KiB" => 1024f64,
        "MiB" => 1024f64.powi(2),
        "GiB" => 1024f64.powi(3),
        "TiB" => 1024f64.powi(4),
        "PiB" => 1024f64.powi(5),
        _ => 1.0,
    };
    let u = used as f64 / div;
    let u = if u < 10.0 && div > 1.0 {
        format!("{u:.1}")
    } else {
        format!("{u:.0}")
    };
    format!("{u}/{t}")
}

/// Compact counts: 812, 1.9k, 23k, 4.1M.
pub fn count(n: f64) -> String {
    if !n.is_finite() {
        return "–".into();
    }
    let a = n.abs();
    if a < 1_000.0 {
        format!("{n:.0}")
    } else if a < 10_000.0 {
        format!("{:.1}k", n / 1e3)
    } else if a < 1_000_000.0 {
        format!("{:.0}k", n / 1e3)
    } else if a < 10_000_000.0 {
        format!("{:.1}M", n / 1e6)
    } else {
        format!("{:.0}M", n / 1e6)
    }
}

/// Durations as a person reads them: "45s", "3m12s", "2h05m".
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "–".into();
    }
    let s = secs.round() as u64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// A loss or metric value with three significant digits.
pub fn value(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.01 {
        format!("{v:.2}")
    } else {
        format!("{v:.1e}")
    }
}

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

/// Short bytes for breakdowns where the unit is already clear: "6.1M", "256K".
pub fn bytes_short(n: u64) -> String {
    let long = bytes(n);
    match long.split_once(' ') {
        Some((v, "B")) => format!("{v}B"),
        Some((v, unit)) => format!("{v}{}", &unit[..1]),
        None => long,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_a_person_writes_them() {
        assert_eq!(bytes(812), "812 B");
        assert_eq!(bytes(3 * 1024 * 1024 + 100 * 1024), "3.1 MiB");
        assert_eq!(bytes(412 * 1024 * 1024), "412 MiB");
        assert_eq!(
            bytes_of(12 * 1024 * 1024 * 1024, 139 * 1024 * 1024 * 1024),
            "12/139 GiB"
        );
        assert_eq!(duration(192.0), "3m12s");
        assert_eq!(count(1900.0), "1.9k");
    }

    #[test]
    fn spark_and_resample() {
        assert_eq!(spark(&[0.0, 1.0, 2.0], 2.0), " ▄█");
        assert_eq!(resample(&[1.0, 3.0, 5.0, 7.0], 2), vec![2.0, 6.0]);
        assert_eq!(fit_width(&[1.0, 2.0], 4), vec![1.0, 1.0, 2.0, 2.0]);
        assert_eq!(bytes_short(256 * 1024), "256K");
    }
}
