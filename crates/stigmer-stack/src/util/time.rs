//! Time as docker and the local server write it (RFC 3339, UTC) and as people read it, without
//! a date-time dependency: every program of the loop needs only these few conversions.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seconds since the epoch of docker's `StartedAt` (`2024-05-01T12:34:56.123456789Z`, UTC);
/// `None` for docker's zero time (`0001-01-01T00:00:00Z`, never started) and anything else.
pub fn rfc3339_to_unix(text: &str) -> Option<u64> {
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.split('-').map(|part| part.parse::<i64>().ok());
    let (year, month, day) = (
        date_parts.next()??,
        date_parts.next()??,
        date_parts.next()??,
    );
    let time = time.strip_suffix('Z')?;
    let time = time.split('.').next()?;
    let mut time_parts = time.split(':').map(|part| part.parse::<i64>().ok());
    let (hour, minute, second) = (
        time_parts.next()??,
        time_parts.next()??,
        time_parts.next()??,
    );
    // Days from the civil date (http://howardhinnant.github.io/date_algorithms.html).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

/// How long ago an RFC 3339 time was, in seconds.
pub fn seconds_since(text: &str) -> Option<u64> {
    unix_now().checked_sub(rfc3339_to_unix(text)?)
}

/// `5s`, `2m05s`, `2h03m`.
pub fn duration_text(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_timestamps() {
        assert_eq!(rfc3339_to_unix("1970-01-01T00:00:00Z"), Some(0));
        // date -u -d 2026-11-26T18:23:40Z +%s
        assert_eq!(
            rfc3339_to_unix("2026-11-26T18:23:40.76849498Z"),
            Some(1_795_717_420)
        );
        assert_eq!(rfc3339_to_unix("0001-01-01T00:00:00Z"), None);
        assert_eq!(rfc3339_to_unix("2024-03-01 12:34:56"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(duration_text(5), "5s");
        assert_eq!(duration_text(125), "2m05s");
        assert_eq!(duration_text(7380), "2h03m");
    }
}
