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

/// The start (00:00 UTC) of the day a text begins with (`YYYY-MM-DD`,
/// anything after the first ten characters ignored, as LINSTOR reads a
/// token's `expires_at`), in epoch milliseconds; None if it is no date.
pub fn day_start_ms(text: &str) -> Option<i64> {
    let date = text.get(..10).unwrap_or(text);
    let mut parts = date.splitn(3, '-');
    let mut num = |len: usize| parts.next().filter(|p| p.len() == len && p.bytes().all(|b| b.is_ascii_digit()))?.parse::<i32>().ok();
    let (year, month, day) = (num(4)?, num(2)?, num(2)?);
    let month = ::time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date = ::time::Date::from_calendar_date(year, month, u8::try_from(day).ok()?).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp() * 1000)
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

    #[test]
    fn reads_the_day_a_text_starts_with() {
        assert_eq!(day_start_ms("2026-06-02"), Some(1_780_358_400_000));
        assert_eq!(day_start_ms("2026-06-02T10:00:00Z"), Some(1_780_358_400_000));
        assert_eq!(day_start_ms("1970-01-01"), Some(0));
        for bad in ["", "2026-6-2", "2026-02-30", "2026-13-01", "tomorrow", "2026/06/02", "+026-06-02"] {
            assert_eq!(day_start_ms(bad), None, "{bad}");
        }
    }
}
