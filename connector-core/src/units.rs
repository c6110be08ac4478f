//! Durations as configs write them.

use std::time::Duration;

/// A duration as `90s`, `15m`, `12h`, `2d` or `1w` (one unit; `0` alone
/// is zero). Errors name the value and the form expected.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || {
        format!(
            "{s:?} is not a duration: write a whole number and one unit, e.g. \"90s\", \"15m\", \"12h\", \"2d\""
        )
    };
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    n.checked_mul(secs)
        .filter(|s| *s <= 100 * 366 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is longer than a hundred years"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_one_unit_and_refuse_the_rest() {
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration(" 90s "), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in [
            "",
            "d",
            "2",
            "2 days",
            "-1h",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(
            parse_duration("999999w")
                .unwrap_err()
                .contains("hundred years")
        );
    }
}
