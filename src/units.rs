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

/// A byte count for people: "12 B", "3.1 KiB", "412 MiB", "1.9 GiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v < 99.95 {
        format!("{v:.1} {}", UNITS[unit])
    } else if v.round() < 1024.0 || unit + 1 == UNITS.len() {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("1.0 {}", UNITS[unit + 1])
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
    fn human_bytes_reads_like_the_dashboard() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(3174), "3.1 KiB");
        assert_eq!(human_bytes(412 << 20), "412 MiB");
        assert_eq!(human_bytes(2_040_109_466), "1.9 GiB");
        assert_eq!(human_bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }
}
