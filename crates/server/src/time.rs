//! Clock reading and RFC 3339 conversion, at the edge of the core's plain timestamps.

use permsync_core::Timestamp;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub fn now() -> Timestamp {
    Timestamp((OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64)
}

/// RFC 3339 in UTC, with millisecond precision when there is a fraction.
pub fn rfc3339(t: Timestamp) -> String {
    let dt = OffsetDateTime::from_unix_timestamp_nanos(t.0 as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let dt = if t.0 % 1000 == 0 {
        dt
    } else {
        dt.replace_nanosecond((t.0.rem_euclid(1000) * 1_000_000) as u32)
            .unwrap_or(dt)
    };
    dt.format(&Rfc3339).unwrap_or_default()
}

pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let dt = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(dt.unix_timestamp_nanos() / 1_000_000)
        .ok()
        .map(Timestamp)
}
