//! Finding the session cookie in a request, and writing `Set-Cookie`.

use std::time::Duration;

use cookie::SameSite;
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
        let max_age = max_age
            .filter(|_| self.persistent)
            .map(|max_age| i64::try_from(max_age.as_millis().div_ceil(1000)).unwrap_or(i64::MAX));
        self.header_value(id.as_str(), max_age)
    }

    /// `Set-Cookie` that makes the browser drop the cookie: the same name, path and domain
    /// (or it would not match), an empty value and `Max-Age=0`.
    pub(crate) fn removal(&self) -> HeaderValue {
        self.header_value("", Some(0))
    }

    /// The header, written as the `cookie` crate writes a cookie with these attributes
    /// (same order, a leading `.` of the domain left out; a test holds the two to the
    /// same text), straight into one buffer: on every login and rotation.
    fn header_value(&self, value: &str, max_age: Option<i64>) -> HeaderValue {
        use std::fmt::Write as _;
        let domain = self
            .domain
            .as_deref()
            .map(|d| d.strip_prefix('.').unwrap_or(d));
        let mut text = String::with_capacity(
            self.name.len() + value.len() + self.path.len() + domain.map_or(0, str::len) + 64,
        );
        text.push_str(&self.name);
        text.push('=');
        text.push_str(value);
        if self.http_only {
            text.push_str("; HttpOnly");
        }
        text.push_str(match self.same_site {
            SameSite::Strict => "; SameSite=Strict",
            SameSite::Lax => "; SameSite=Lax",
            SameSite::None => "; SameSite=None",
        });
        if self.secure {
            text.push_str("; Secure");
        }
        text.push_str("; Path=");
        text.push_str(&self.path);
        if let Some(domain) = domain {
            text.push_str("; Domain=");
            text.push_str(domain);
        }
        if let Some(secs) = max_age {
            let _ = write!(text, "; Max-Age={secs}");
        }
        // Names, paths and domains are checked when the layer is built, and IDs are
        // base64url or hex, so the text is always a valid header value.
        HeaderValue::try_from(text)
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

    /// The header is the text the `cookie` crate writes for the same attributes.
    #[test]
    fn set_cookie_is_written_as_the_cookie_crate_writes_it() {
        let id = SessionId::generate();
        for same_site in [SameSite::Strict, SameSite::Lax, SameSite::None] {
            for (secure, http_only, domain) in [
                (true, true, None),
                (false, false, Some("example.com")),
                (true, false, Some(".example.com")),
            ] {
                let config = CookieConfig {
                    name: "sid".to_owned(),
                    secure,
                    http_only,
                    same_site,
                    path: "/app".to_owned(),
                    domain: domain.map(str::to_owned),
                    persistent: true,
                };
                let expected = |value: &str, max_age: Option<i64>| {
                    let mut c = cookie::Cookie::new("sid", value);
                    c.set_http_only(http_only);
                    c.set_secure(secure);
                    c.set_same_site(same_site);
                    c.set_path("/app");
                    if let Some(domain) = domain {
                        c.set_domain(domain);
                    }
                    if let Some(secs) = max_age {
                        c.set_max_age(cookie::time::Duration::seconds(secs));
                    }
                    c.to_string()
                };
                let set = config.set_cookie(&id, Some(Duration::from_millis(59_001)));
                assert_eq!(set.to_str().unwrap(), expected(id.as_str(), Some(60)));
                let set = config.set_cookie(&id, None);
                assert_eq!(set.to_str().unwrap(), expected(id.as_str(), None));
                assert_eq!(config.removal().to_str().unwrap(), expected("", Some(0)));
            }
        }
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
