//! The data model in one place: the internal fields of a session hash, the marker an
//! ended session leaves, and the limits on what they hold.
//!
//! A session is a Redis HASH under `{prefix}{digest of the ID}` (or `{prefix}{ID}` with
//! `plain_keys`). Its user fields are field name → string value; the fields below are
//! the layer's own. The scripts read the same names (`store/lua/common.lua`).

use std::time::Duration;

/// When the session was created (RFC 3339, Redis's clock).
pub(crate) const CREATED_AT: &str = "created_at";
/// When a request last loaded it (RFC 3339, Redis's clock).
pub(crate) const LAST_ACCESSED_AT: &str = "last_accessed_at";
/// Its idle TTL in whole seconds.
pub(crate) const SESSION_TTL: &str = "session_ttl";
/// The end of its absolute lifetime (RFC 3339 with milliseconds).
pub(crate) const ABSOLUTE_EXPIRES_AT: &str = "absolute_expires_at";
/// The user it is tied to.
pub(crate) const USER_ID: &str = "user_id";
/// Present while a rotation copies it to a new ID: `<until ms>:<token>`.
pub(crate) const ROTATING: &str = "rotating";
/// Its CSRF token ([`Session::csrf_token`](crate::Session::csrf_token)), made with the
/// session.
pub(crate) const CSRF_TOKEN: &str = "csrf_token";
/// The one field of a marker: why the session ended (`rotated`, `destroyed`,
/// `terminated`).
pub(crate) const ENDED: &str = "ended";

/// Internal fields of the session hash: read by the layer, never settable by handlers.
///
/// | field | meaning |
/// |---|---|
/// | `created_at` | when the session was created (RFC 3339, UTC, Redis's clock) |
/// | `last_accessed_at` | when a request last loaded it (RFC 3339, UTC) |
/// | `session_ttl` | idle TTL in whole seconds |
/// | `absolute_expires_at` | end of its absolute lifetime (RFC 3339, UTC, milliseconds) |
/// | `user_id` | the user the session is tied to ([`Session::set_user_id`](crate::Session::set_user_id)) |
/// | `rotating` | present for a moment while a rotation copies the session to its new ID |
/// | `csrf_token` | its CSRF token ([`Session::csrf_token`](crate::Session::csrf_token)), made with the session; replaced at every rotation |
///
/// An ended session leaves for a minute a *marker* in place of its hash: a hash with the
/// single field `ended` (`rotated`, `destroyed` or `terminated`) and no `session_ttl`.
/// It grants nothing; it tells requests still in flight with the old ID that their
/// session moved on.
pub const RESERVED_FIELDS: &[&str] = &[
    CREATED_AT,
    LAST_ACCESSED_AT,
    SESSION_TTL,
    ABSOLUTE_EXPIRES_AT,
    USER_ID,
    ROTATING,
    CSRF_TOKEN,
];

/// `true` for the fields of [`RESERVED_FIELDS`].
pub(crate) fn is_reserved(name: &str) -> bool {
    RESERVED_FIELDS.contains(&name)
}

/// How long a marker lives: longer than any request that may still carry the old ID.
pub(crate) const MARKER_TTL: Duration = Duration::from_secs(60);

/// Longest user id, in bytes: it is stored in the session and digested into the key of
/// the user's index.
pub(crate) const MAX_USER_ID_LEN: usize = 256;

/// Largest TTL accepted: 2^31 - 1 seconds (68 years). The scripts pass TTLs to `PEXPIRE`
/// in ms as Lua numbers, which Redis receives in exponent form (`1e+17`, refused) from
/// 10^14 s on; this keeps them exact integers. The scripts refuse larger stored TTLs.
pub(crate) const MAX_TTL_SECS: u64 = (1 << 31) - 1;

/// Reads `session_ttl` as the scripts do (`valid_idle` in `common.lua`): whole seconds
/// written canonically (`60`, not `060`, `+60` or `60.0`), 1 to [`MAX_TTL_SECS`].
pub(crate) fn parse_idle(s: &str) -> Option<Duration> {
    let canonical = s.len() <= 10
        && s.bytes().all(|b| b.is_ascii_digit())
        && !s.starts_with('0')
        && !s.is_empty();
    let secs: u64 = s.parse().ok().filter(|_| canonical)?;
    (secs <= MAX_TTL_SECS).then(|| Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_ttls_are_read_as_the_scripts_read_them() {
        assert_eq!(parse_idle("60"), Some(Duration::from_secs(60)));
        assert_eq!(
            parse_idle("2147483647"),
            Some(Duration::from_secs(MAX_TTL_SECS))
        );
        for bad in [
            "",
            "0",
            "060",
            "+60",
            "60.0",
            "-1",
            "2147483648",
            "1e3",
            " 60",
        ] {
            assert_eq!(parse_idle(bad), None, "{bad:?}");
        }
    }
}
