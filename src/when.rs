//! Wall-clock times as the file writes them (RFC 3339 offset date-times)
//! and as messages show them (UTC, `2026-12-24T00:00:00Z`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days from 1970-01-01 to the civil date (proleptic Gregorian calendar).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count from 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// The moment an offset date-time names. Err: what is wrong with it (a
/// local date-time, a date or a time alone).
pub fn from_toml(d: &toml::value::Datetime) -> Result<SystemTime, String> {
    let (Some(date), Some(time)) = (d.date, d.time) else {
        return Err(format!(
            "`{d}` is not a date-time; write a date, a time and an offset, such as 2026-12-24T00:00:00Z"
        ));
    };
    let offset_minutes = match d.offset {
        Some(toml::value::Offset::Z) => 0,
        Some(toml::value::Offset::Custom { minutes }) => i64::from(minutes),
        None => {
            return Err(format!(
                "`{d}` is a local date-time, whose moment depends on the machine's time zone; add the offset, such as {d}Z (UTC) or {d}+01:00"
            ))
        }
    };
    let days = days_from_civil(i64::from(date.year), u32::from(date.month), u32::from(date.day));
    let secs = days * 86_400 + i64::from(time.hour) * 3600 + i64::from(time.minute) * 60 + i64::from(time.second)
        - offset_minutes * 60;
    let nanos = Duration::from_nanos(u64::from(time.nanosecond));
    if secs < 0 {
        return Err(format!("`{d}` is before 1970"));
    }
    Ok(UNIX_EPOCH + Duration::from_secs(secs as u64) + nanos)
}

/// `t` in UTC, to the second: `2026-12-24T00:00:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s % 3600 / 60, s % 60)
}

/// Seconds since the epoch, for JSON and metrics.
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<SystemTime, String> {
        let d: toml::value::Datetime = s.parse().unwrap();
        from_toml(&d)
    }

    #[test]
    fn offset_date_times_are_moments() {
        assert_eq!(unix_seconds(parse("1970-01-01T00:00:00Z").unwrap()), 0);
        assert_eq!(unix_seconds(parse("2026-12-24T00:00:00Z").unwrap()), 1_798_070_400);
        assert_eq!(parse("2026-12-24T01:00:00+01:00"), parse("2026-12-24T00:00:00Z"));
        assert_eq!(unix_seconds(parse("2000-02-29T12:34:56-00:30").unwrap()), 951_829_496);
    }

    #[test]
    fn local_and_partial_values_are_refused_with_the_fix() {
        assert!(parse("2026-12-24T00:00:00").unwrap_err().contains("local date-time"));
        assert!(parse("2026-12-24").unwrap_err().contains("not a date-time"));
        assert!(parse("07:32:00").unwrap_err().contains("not a date-time"));
    }

    #[test]
    fn times_print_in_utc_and_round_trip() {
        for s in ["1970-01-01T00:00:00Z", "2026-12-24T00:00:00Z", "2000-02-29T23:59:59Z", "2100-03-01T00:00:01Z"] {
            assert_eq!(rfc3339(parse(s).unwrap()), s);
        }
        assert_eq!(rfc3339(parse("2026-12-24T01:00:00+01:00").unwrap()), "2026-12-24T00:00:00Z");
    }
}
