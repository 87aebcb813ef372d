//! Finding the session cookie in a request, and writing `Set-Cookie`.

use std::time::Duration;

use cookie::Cookie;
use http::{header, HeaderMap, HeaderValue};

use crate::{
    config::CookieConfig,
    id::{IdFormat, SessionId},
};

/// What the request's `Cookie` headers say about the session.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// No cookie of ours.
    Absent,
    /// Exactly one cookie of ours, holding a well-formed ID.
    Id(SessionId),
    /// One cookie of ours that is not an ID: treated as no cookie, and removed.
    Malformed,
    /// Several cookies of our name (cookie tossing: one may have been planted for a
    /// parent domain): treated as no cookie, and none is removed, since a removal can
    /// only reach the host-only one, which is ours.
    Duplicate,
}

/// Looks for the one cookie named `name` across every `Cookie` header, on raw bytes so
/// that non-UTF-8 headers cannot panic or hide a cookie. Its value must be an ID of the
/// crate's own format or, if given, of `format`.
pub(crate) fn find(headers: &HeaderMap, name: &str, format: Option<IdFormat>) -> Incoming {
    let mut found: Option<&[u8]> = None;
    for value in headers.get_all(header::COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if pair[..eq].trim_ascii() != name.as_bytes() {
                continue;
            }
            if found.is_some() {
                return Incoming::Duplicate;
            }
            found = Some(pair[eq + 1..].trim_ascii());
        }
    }
    match found {
        None => Incoming::Absent,
        Some(value) => match std::str::from_utf8(value)
            .ok()
            .and_then(|s| crate::id::parse_incoming(s, format))
        {
            Some(id) => Incoming::Id(id),
            None => Incoming::Malformed,
        },
    }
}

/// Logs a suspicious session cookie (malformed, duplicated, naming no session) as a
/// warning, at most once a second per process, so that a flood of bad cookies cannot
/// flood the logs; the warning says how many were left out since the last one.
pub(crate) fn suspicious(reason: &'static str) {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static LAST_SECOND: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST_SECOND.load(Relaxed);
    if now > last
        && LAST_SECOND
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_ok()
    {
        let suppressed = SUPPRESSED.swap(0, Relaxed);
        tracing::warn!(
            reason,
            suppressed,
            "ignoring a session cookie: possibly suspicious request"
        );
    } else {
        SUPPRESSED.fetch_add(1, Relaxed);
        tracing::debug!(reason, "ignoring a session cookie");
    }
}

impl CookieConfig {
    /// `Set-Cookie` for `id`. In persistent mode `Max-Age` is `max_age` (what is left of
    /// the key's TTL) rounded up to whole seconds, so the cookie never ends before the
    /// session; without it the cookie ends with the browser session.
    pub(crate) fn set_cookie(&self, id: &SessionId, max_age: Option<Duration>) -> HeaderValue {
        let mut cookie = self.base(id.as_str());
        if let Some(max_age) = max_age.filter(|_| self.persistent) {
            let secs = max_age.as_millis().div_ceil(1000);
            cookie.set_max_age(cookie::time::Duration::seconds(
                i64::try_from(secs).unwrap_or(i64::MAX),
            ));
        }
        Self::header_value(&cookie)
    }

    /// `Set-Cookie` that makes the browser drop the cookie: the same name, path and domain
    /// (or it would not match), an empty value and `Max-Age=0`.
    pub(crate) fn removal(&self) -> HeaderValue {
        let mut cookie = self.base("");
        cookie.set_max_age(cookie::time::Duration::ZERO);
        Self::header_value(&cookie)
    }

    fn base<'a>(&'a self, value: &'a str) -> Cookie<'a> {
        let mut cookie = Cookie::new(self.name.as_str(), value);
        cookie.set_http_only(self.http_only);
        cookie.set_secure(self.secure);
        cookie.set_same_site(self.same_site);
        cookie.set_path(self.path.as_str());
        if let Some(domain) = &self.domain {
            cookie.set_domain(domain.as_str());
        }
        cookie
    }

    fn header_value(cookie: &Cookie<'_>) -> HeaderValue {
        // Names, paths and domains are checked when the layer is built, and IDs are
        // base64url or hex, so the text is always a valid header value.
        HeaderValue::try_from(cookie.to_string())
            .expect("cookie attributes are validated when the layer is built")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(header::COOKIE, HeaderValue::from_bytes(v).unwrap());
        }
        map
    }

    #[test]
    fn finds_exactly_one_well_formed_cookie() {
        let id = SessionId::generate();
        let good = format!("a=1; sid={id}; b=2");
        let dup = format!("sid={id}; sid={id}");
        let other = format!("xsid={id}; sidx={id}");
        let cases: Vec<(&str, Vec<&[u8]>, Incoming)> = vec![
            ("no header", vec![], Incoming::Absent),
            (
                "one among others",
                vec![good.as_bytes()],
                Incoming::Id(id.clone()),
            ),
            (
                "split across headers",
                vec![b"a=1".as_slice(), format!("sid={id}").leak().as_bytes()],
                Incoming::Id(id.clone()),
            ),
            ("similar names", vec![other.as_bytes()], Incoming::Absent),
            (
                "duplicate in one header",
                vec![dup.as_bytes()],
                Incoming::Duplicate,
            ),
            (
                "duplicate across headers",
                vec![good.as_bytes(), good.as_bytes()],
                Incoming::Duplicate,
            ),
            ("garbage", vec![b"sid=*".as_slice()], Incoming::Malformed),
            (
                "non-UTF-8 value",
                vec![b"sid=\xff\xfe".as_slice()],
                Incoming::Malformed,
            ),
            (
                "quoted",
                vec![format!("sid=\"{id}\"").leak().as_bytes()],
                Incoming::Malformed,
            ),
            ("no equals sign", vec![b"sid".as_slice()], Incoming::Absent),
        ];
        for (name, values, expected) in cases {
            assert_eq!(find(&headers(&values), "sid", None), expected, "{name}");
        }
    }

    #[test]
    fn oversized_cookie_is_rejected() {
        let big = format!("sid={}", "A".repeat(8192));
        assert_eq!(
            find(&headers(&[big.as_bytes()]), "sid", None),
            Incoming::Malformed
        );
    }

    #[test]
    fn default_cookie_attributes() {
        let config = CookieConfig::default();
        let id = SessionId::generate();
        let set = config.set_cookie(&id, Some(Duration::from_secs(60)));
        assert_eq!(
            set.to_str().unwrap(),
            format!("__Host-sid={id}; HttpOnly; SameSite=Lax; Secure; Path=/")
        );
        let removal = config.removal();
        assert_eq!(
            removal.to_str().unwrap(),
            "__Host-sid=; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=0"
        );
    }
}
