//! The RFC 3339 timestamps of the data model (`2026-04-02T12:34:56+00:00`).
//!
//! The scripts write them on Redis's clock; this side reads them back with the same
//! grammar as the scripts (`parse_time` in `store/lua/common.lua`), so a value is
//! refused the same way on both sides.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest timestamp text read, in bytes: room for any offset and a fraction far
/// finer than anyone writes, and a bound on the work one value costs.
const MAX_STAMP_LEN: usize = 64;

/// Parses `YYYY-MM-DD`, `T` or `t`, `HH:MM:SS`, then optionally `.` and 1 or more
/// digits, then `Z`, `z` or an offset `+hh:mm` / `-hh:mm`, in at most 64 bytes.
/// Fractions below a millisecond are dropped, as in the scripts. Anything else, or a
/// time before 1970, is `None`.
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    // Bytes past the ASCII range (another program's text, or invalid UTF-8 read back as
    // U+FFFD) are never part of a timestamp: every byte is checked below.
    let b = s.as_bytes();
    if b.len() < 20
        || b.len() > MAX_STAMP_LEN
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let y = digits(&b[0..4])?;
    let (m, d) = (digits(&b[5..7])?, digits(&b[8..10])?);
    let (hh, mm, ss) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0;
    if let [b'.', frac @ ..] = rest {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        // The first three digits, as milliseconds ('.7' is 700 ms).
        millis = frac[..3.min(n)]
            .iter()
            .chain(std::iter::repeat(&b'0'))
            .take(3)
            .fold(0, |ms, c| ms * 10 + i64::from(c - b'0'));
        rest = &frac[n..];
    }
    let offset = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (oh, om) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let offset = oh * 3600 + om * 60;
            if *sign == b'+' {
                offset
            } else {
                -offset
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss - offset;
    let ms = u64::try_from(secs).ok()? * 1000 + u64::try_from(millis).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

/// The number an all-ASCII-digit slice writes; `None` for any other byte.
fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0, |n, c| {
        c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
    })
}

/// `t` as the scripts write a deadline: `2026-04-02T12:34:56.789+00:00` (UTC, ms).
pub(crate) fn format_rfc3339_ms(t: SystemTime) -> String {
    let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// One table for the timestamp grammar, shared with the test that plants these values
/// in Redis for the scripts (`tests/it/expiry.rs`): the text, and the Unix time in ms
/// it means, or `None` where both sides must refuse it.
pub(crate) const TIMESTAMP_CASES: &[(&str, Option<u64>)] = &[
    ("2026-04-02T12:34:56+00:00", Some(1_775_133_296_000)),
    ("2026-04-02T12:34:56Z", Some(1_775_133_296_000)),
    ("1970-01-01T00:00:00Z", Some(0)),
    ("2026-04-02T12:34:56.789+00:00", Some(1_775_133_296_789)),
    ("2026-04-02T12:34:56.7+00:00", Some(1_775_133_296_700)),
    ("2026-04-02T12:34:56.123456789Z", Some(1_775_133_296_123)),
    ("2026-04-02T14:34:56+02:00", Some(1_775_133_296_000)),
    ("2026-04-02T07:04:56.5-05:30", Some(1_775_133_296_500)),
    ("2026-04-02T12:34:56.1234567890Z", Some(1_775_133_296_123)),
    (
        "2026-04-02T12:34:56.123456789012345678Z",
        Some(1_775_133_296_123),
    ),
    (
        "2026-04-02T12:34:56.1234567890123456789012345678901234567890123Z",
        Some(1_775_133_296_123),
    ),
    (
        "2026-04-02T12:34:56.12345678901234567890123456789012345678+00:00",
        Some(1_775_133_296_123),
    ),
    ("2026-04-02t12:34:56z", Some(1_775_133_296_000)),
    ("2026-04-02T12:34:56.5z", Some(1_775_133_296_500)),
    ("2026-04-02t14:34:56+02:00", Some(1_775_133_296_000)),
    ("2000-02-29T23:59:59.123+00:00", Some(951_868_799_123)),
    ("", None),
    ("2026-04-02", None),
    ("2026-04-02 12:34:56+00:00", None),
    ("2026-13-02T12:34:56Z", None),
    ("2026-04-02T24:00:00Z", None),
    ("2026-04-02T12:34:5xZ", None),
    ("+026-04-02T12:34:56Z", None),
    ("2026-04-02T12:34:56Zjunk", None),
    ("2026-04-02T12:34:56", None),
    ("2026-04-02T12:34:56.Z", None),
    // Longer than 64 bytes, whatever it says; other letters, or lower case elsewhere.
    (
        "2026-04-02T12:34:56.12345678901234567890123456789012345678901234Z",
        None,
    ),
    (
        "2026-04-02T12:34:56.123456789012345678901234567890123456789+00:00",
        None,
    ),
    ("2026-04-02x12:34:56Z", None),
    ("2026-04-02T12:34:56x", None),
    ("2026-04-02T12:34:56.z", None),
    ("2026-04-02T12:34:56zz", None),
    ("2026-04-02T12:34:56+0200z", None),
    ("2026-04-02T12:34:56+0200", None),
    ("2026-04-02T12:34:56+24:00", None),
    ("1969-12-31T23:59:59Z", None),
    ("1970-01-01T00:30:00+01:00", None),
    ("2026-04-02T12:34:5\u{e9}Z", None),
    ("2026-04-02T12:34:56.\u{fffd}Z", None),
    // The two shapes the scripts write (25 and 29 bytes, `+00:00`), which the scripts
    // read by byte position, and other text of those lengths, which they parse in full.
    ("2026-04-02T12:34:56.000+00:00", Some(1_775_133_296_000)),
    ("2026-12-31T23:59:59.999+00:00", Some(1_798_761_599_999)),
    ("2024-02-29T00:00:00+00:00", Some(1_709_164_800_000)),
    ("2100-03-01T00:00:00+00:00", Some(4_107_542_400_000)),
    ("4999-12-31T23:59:59.999+00:00", Some(95_617_583_999_999)),
    ("2026-02-30T00:00:00+00:00", Some(1_772_409_600_000)),
    ("2026-04-02T23:59:60+00:00", Some(1_775_174_400_000)),
    ("2026-04-02T12:34:56.1234Z", Some(1_775_133_296_123)),
    ("2026-04-02T12:34:56.12345678Z", Some(1_775_133_296_123)),
    ("2026-04-02T14:34:56.789+02:00", Some(1_775_133_296_789)),
    ("2026-04-02T12:34:56.789-00:00", Some(1_775_133_296_789)),
    ("2026-04-02T24:00:00+00:00", None),
    ("2026-00-02T12:34:56+00:00", None),
    ("2026-04-00T12:34:56+00:00", None),
    ("2026-04-02T12:60:56+00:00", None),
    ("2026-04-02T12:34:61+00:00", None),
    ("2026-04-02t12:34:56+00:00", Some(1_775_133_296_000)),
    ("2026-04-02t12:34:56.789+00:00", Some(1_775_133_296_789)),
    ("2026-04-02T12:34:5.789+00:00z", None),
    ("2026/04-02T12:34:56+00:00", None),
    ("2026-04-02T12:34:5x+00:00", None),
    ("2026-04-02T12:34:56+00:0x", None),
    ("2026-04-02T12:34:56 00:00", None),
    ("2026-04-02T12:34:56,789+00:00", None),
    ("2026-04-02T12:34:56.78x+00:00", None),
    ("2026-04-02T12:34:56.789+00;00", None),
    ("1969-12-31T23:59:59.999+00:00", None),
    ("2026-04-02T12:34:56.7\u{e9}+00:00", None),
];

/// How the stamps are written, shared with the test that runs the scripts' own writer
/// (`tests/it/expiry.rs`): a Unix time in ms and its text to the millisecond. The scripts
/// write the same text without `.mmm` where they stamp whole seconds.
pub(crate) const STAMP_CASES: &[(u64, &str)] = &[
    (0, "1970-01-01T00:00:00.000+00:00"),
    (1_000, "1970-01-01T00:00:01.000+00:00"),
    (86_399_999, "1970-01-01T23:59:59.999+00:00"),
    (951_782_400_000, "2000-02-29T00:00:00.000+00:00"),
    (951_868_799_123, "2000-02-29T23:59:59.123+00:00"),
    (978_307_199_999, "2000-12-31T23:59:59.999+00:00"),
    (1_709_164_800_000, "2024-02-29T00:00:00.000+00:00"),
    (1_775_133_296_789, "2026-04-02T12:34:56.789+00:00"),
    (1_798_761_599_999, "2026-12-31T23:59:59.999+00:00"),
    (4_107_542_400_000, "2100-03-01T00:00:00.000+00:00"),
    (95_617_583_999_999, "4999-12-31T23:59:59.999+00:00"),
    (253_402_300_799_999, "9999-12-31T23:59:59.999+00:00"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_grammar_table() {
        for (text, expected) in TIMESTAMP_CASES {
            let got = parse_rfc3339(text)
                .map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64);
            assert_eq!(got, *expected, "{text:?}");
        }
    }

    #[test]
    fn stamps_are_written_as_the_table_says() {
        for (ms, text) in STAMP_CASES {
            let t = UNIX_EPOCH + Duration::from_millis(*ms);
            assert_eq!(format_rfc3339_ms(t), *text);
            assert_eq!(parse_rfc3339(text), Some(t), "{text}");
        }
    }

    #[test]
    fn deadlines_are_written_to_the_millisecond_and_read_back() {
        for ms in [0, 951_868_799_123, 1_775_133_296_789, 4_102_444_800_001] {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            let text = format_rfc3339_ms(t);
            assert_eq!(parse_rfc3339(&text), Some(t), "{text}");
        }
        assert_eq!(
            format_rfc3339_ms(UNIX_EPOCH + Duration::from_millis(1_775_133_296_789)),
            "2026-04-02T12:34:56.789+00:00"
        );
    }
}
