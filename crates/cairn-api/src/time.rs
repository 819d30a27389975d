//! Formatting epoch milliseconds (ISO-8601 for replies, a short form for
//! tables). The clock is read by callers and passed in, so everything here
//! is pure and testable.

/// (year, month, day, hour, minute, second, millisecond) in UTC.
fn parts(epoch_ms: i64) -> (i64, u32, u32, i64, i64, i64, i64) {
    let secs = epoch_ms.div_euclid(1000);
    let ms = epoch_ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    (y, m, d, sod / 3600, (sod % 3600) / 60, sod % 60, ms)
}

/// Formats epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmm+00:00`.
pub fn iso8601_utc(epoch_ms: i64) -> String {
    let (y, m, d, h, mi, s, ms) = parts(epoch_ms);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}+00:00")
}

/// Formats epoch milliseconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn datetime_utc(epoch_ms: i64) -> String {
    let (y, m, d, h, mi, s, _) = parts(epoch_ms);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00.000+00:00");
        assert_eq!(iso8601_utc(1_780_394_400_123), "2026-06-02T10:00:00.123+00:00");
        assert_eq!(iso8601_utc(951_782_400_000), "2000-02-29T00:00:00.000+00:00");
        assert_eq!(datetime_utc(1_780_394_400_123), "2026-06-02 10:00:00");
    }
}
