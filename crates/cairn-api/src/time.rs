//! Formatting epoch milliseconds (ISO-8601 for replies, a short form for
//! tables). The clock is read by callers and passed in, so everything here
//! is pure and testable. The calendar is the `time` crate's.

use ::time::UtcDateTime;

/// The instant in UTC; outside the years -9999..=9999 it is clamped to
/// the nearest end of that range.
fn utc(epoch_ms: i64) -> UtcDateTime {
    UtcDateTime::from_unix_timestamp_nanos(i128::from(epoch_ms) * 1_000_000).unwrap_or(if epoch_ms < 0 {
        UtcDateTime::MIN
    } else {
        UtcDateTime::MAX
    })
}

/// Formats epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmm+00:00`.
pub fn iso8601_utc(epoch_ms: i64) -> String {
    let t = utc(epoch_ms);
    format!("{}T{:02}:{:02}:{:02}.{:03}+00:00", day(t), t.hour(), t.minute(), t.second(), t.millisecond())
}

/// Formats epoch milliseconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn datetime_utc(epoch_ms: i64) -> String {
    let t = utc(epoch_ms);
    format!("{} {:02}:{:02}:{:02}", day(t), t.hour(), t.minute(), t.second())
}

fn day(t: UtcDateTime) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
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
        assert_eq!(iso8601_utc(-1), "1969-12-31T23:59:59.999+00:00");
        assert_eq!(datetime_utc(i64::MAX), "9999-12-31 23:59:59");
    }
}
