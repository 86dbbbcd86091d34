//! How quantities read to people, in one place: byte counts, memory sizes
//! people type, ratios.

/// Read a memory size such as `24GiB`, `24 GB`, `512MiB`, `1.5GiB` or `80G`;
/// None when it is not one. Units are binary whatever their spelling: a
/// "24 GB" card has 24 GiB.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let bad = || None;
    let text = s.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return bad(),
    };
    let total = (value * (1u64 << shift) as f64).round();
    // 2^64 is exactly representable; anything at or above it does not fit.
    if !total.is_finite() || total >= 18_446_744_073_709_551_616.0 {
        return bad();
    }
    Some(total as u64)
}

/// A byte count for people, in IEC units with up to three significant
/// digits and no trailing ".0": "812 B", "3.1 KiB", "24 MiB", "25.7 GiB",
/// "412 MiB". One rule for the screen, the summary and the planner.
pub fn bytes(n: u64) -> String {
    bytes_f(n as f64)
}

const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// [`bytes`] for averaged (fractional) byte counts; "–" for none.
pub fn bytes_f(n: f64) -> String {
    if !n.is_finite() || n < 0.0 {
        return "–".into();
    }
    match scaled(n) {
        (v, 0) => format!("{} B", v.round() as u64),
        (v, unit) => format!("{} {}", significant(v), UNITS[unit]),
    }
}

/// `n` bytes in the unit [`bytes_f`] writes them in, and that unit's index
/// in [`UNITS`].
fn scaled(n: f64) -> (f64, usize) {
    let (mut v, mut unit) = (n, 0);
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    // What would round to 1024 of a unit reads as 1 of the next.
    if unit > 0 && v.round() >= 1024.0 && unit + 1 < UNITS.len() {
        return (v / 1024.0, unit + 1);
    }
    (v, unit)
}

/// One decimal below 100 and none above, without a trailing ".0".
fn significant(v: f64) -> String {
    let one = format!("{v:.1}");
    match one.strip_suffix(".0") {
        Some(whole) if v < 99.95 => whole.to_string(),
        _ if v < 99.95 => one,
        _ => format!("{v:.0}"),
    }
}

/// "12.1/139 GiB": a used/total pair sharing the total's unit.
pub fn bytes_of(used: u64, total: u64) -> String {
    let (_, power) = scaled(total as f64);
    let u = used as f64 / 1024f64.powi(power as i32);
    let u = match power {
        0 => format!("{u:.0}"),
        _ => significant(u),
    };
    format!("{u}/{}", bytes(total))
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

/// Short bytes for breakdowns where the unit is already clear: "6.1M", "256K".
pub fn bytes_short(n: u64) -> String {
    let long = bytes(n);
    match long.split_once(' ') {
        Some((v, "B")) => format!("{v}B"),
        Some((v, unit)) => format!("{v}{}", &unit[..1]),
        None => long,
    }
}

/// "0.28×", "0.016×", "1.02×": enough digits to tell small ratios apart.
pub fn ratio(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.0}×")
    } else if r >= 0.1 {
        format!("{r:.2}×")
    } else {
        format!("{r:.3}×")
    }
}

/// The UTC calendar date (year, month, day) of a number of days since
/// 1970-01-01 (Howard Hinnant's civil-from-days algorithm).
pub fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn parse_bytes_reads_the_usual_spellings() {
        let cases = [
            ("24GiB", 24 * GIB),
            ("24 GB", 24 * GIB),
            ("24gb", 24 * GIB),
            ("80G", 80 * GIB),
            ("512MiB", 512 << 20),
            ("1.5GiB", 3 * GIB / 2),
            ("  64 KiB ", 64 << 10),
            ("2T", 2 << 40),
            ("1000", 1000),
            ("12 B", 12),
        ];
        for (text, want) in cases {
            assert_eq!(parse_bytes(text), Some(want), "{text}");
        }
    }

    #[test]
    fn parse_bytes_rejects_what_it_cannot_read() {
        for bad in [
            "24 parsecs",
            "",
            "GiB",
            "-1GiB",
            "1.2.3G",
            "1e3",
            "24 GiB GiB",
            "99999999999TiB",
        ] {
            assert_eq!(parse_bytes(bad), None, "{bad:?} was accepted");
        }
    }

    #[test]
    fn ratios_keep_enough_digits() {
        assert_eq!(ratio(36.3), "36×");
        assert_eq!(ratio(0.584), "0.58×");
        assert_eq!(ratio(0.0163), "0.016×");
    }

    #[test]
    fn bytes_read_like_a_person_writes_them() {
        assert_eq!(
            bytes_of(12 * 1024 * 1024 * 1024, 139 * 1024 * 1024 * 1024),
            "12/139 GiB"
        );
        assert_eq!(bytes_of(512 << 10, (1 << 20) - 1), "0.5/1 MiB");
        assert_eq!(bytes_of(700, 1000), "700/1000 B");
        assert_eq!(duration(192.0), "3m12s");
        assert_eq!(count(1900.0), "1.9k");
        assert_eq!(bytes_short(256 * 1024), "256K");
        assert_eq!(bytes(12), "12 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(3174), "3.1 KiB");
        assert_eq!(bytes(412 << 20), "412 MiB");
        assert_eq!(bytes(2_040_109_466), "1.9 GiB");
        assert_eq!(bytes(1024 * 1024 - 1), "1 MiB");
        assert_eq!(bytes(24 << 20), "24 MiB");
        assert_eq!(bytes(27_594_321_920), "25.7 GiB");
        assert_eq!(bytes(u64::MAX), "16 EiB");
    }

    #[test]
    fn civil_dates_by_hand() {
        assert_eq!(super::civil_date(0), (1970, 1, 1));
        // 30 years with 7 leap days, then January and a leap February.
        assert_eq!(super::civil_date(10_957 + 31 + 29), (2000, 3, 1));
        assert_eq!(super::civil_date(-1), (1969, 12, 31));
    }
}
