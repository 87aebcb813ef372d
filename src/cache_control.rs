//! What a response's caching headers let a shared cache (a proxy or CDN) do with it, so
//! that one user's session cookie never reaches another user through a cache
//! (`Cache-Control`, RFC 9111; `CDN-Cache-Control`, RFC 9213).

use http::{header, HeaderMap, HeaderName, HeaderValue};

/// `CDN-Cache-Control`: `Cache-Control` for CDNs only, which those that read it obey
/// in place of `Cache-Control`.
const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// How a shared cache may treat a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SharedCaching {
    /// A shared cache may store the response (and so hand its cookies to others).
    pub(crate) may_store: bool,
    /// The app asked for shared caching (`public`, `s-maxage`, a `max-age` above zero,
    /// or a `CDN-Cache-Control` that allows storing): a page meant to be cached.
    pub(crate) asked_for: bool,
}

impl SharedCaching {
    /// Reads the response's `Cache-Control` and `CDN-Cache-Control` headers.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let cc = directives(headers, &header::CACHE_CONTROL);
        let cdn = directives(headers, &CDN_CACHE_CONTROL);
        let cdn_stores = headers.contains_key(CDN_CACHE_CONTROL) && !keeps_out(&cdn);
        let may_store = !keeps_out(&cc) || cdn_stores;
        let asked = cc.iter().any(|(name, value)| match name.as_str() {
            "public" | "s-maxage" => true,
            "max-age" => value
                .as_deref()
                .is_some_and(|v| v.trim_matches('"').parse::<u64>() != Ok(0)),
            _ => false,
        });
        Self {
            may_store,
            asked_for: may_store && (asked || cdn_stores),
        }
    }

    /// Makes a response that carries the session cookie unstorable by every shared cache.
    pub(crate) fn forbid(headers: &mut HeaderMap) {
        let no_store = HeaderValue::from_static("no-store");
        headers.insert(header::CACHE_CONTROL, no_store.clone());
        if headers.contains_key(CDN_CACHE_CONTROL) {
            headers.insert(CDN_CACHE_CONTROL, no_store);
        }
    }
}

/// Whether directives keep a response out of shared caches: a bare `private` (one with a
/// list of header names keeps only those out), or a bare `no-store` unless
/// `must-understand` lets a cache that knows the status code ignore it.
fn keeps_out(directives: &[(String, Option<String>)]) -> bool {
    // Neither takes an argument here: one with an argument is not understood.
    let has = |name: &str| directives.iter().any(|(n, v)| n == name && v.is_none());
    has("private") || (has("no-store") && !has("must-understand"))
}

/// Every directive of every `name` header, names lower-cased, with its value if any;
/// split on commas outside quoted strings (`private="a, b"` is one directive).
fn directives(headers: &HeaderMap, name: &HeaderName) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for value in headers.get_all(name) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        let mut quoted = false;
        let mut start = 0;
        for (i, c) in text.char_indices().chain([(text.len(), ',')]) {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    let item = text[start..i].trim();
                    start = i + 1;
                    if item.is_empty() {
                        continue;
                    }
                    let (name, value) = match item.split_once('=') {
                        Some((n, v)) => (n.trim(), Some(v.trim().to_owned())),
                        None => (item, None),
                    };
                    out.push((name.to_ascii_lowercase(), value));
                }
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caching(pairs: &[(&str, &str)]) -> SharedCaching {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        SharedCaching::of(&headers)
    }

    #[test]
    fn only_a_bare_private_or_an_unqualified_no_store_keeps_a_response_out_of_shared_caches() {
        let cc = "cache-control";
        for kept_out in [
            "no-store",
            "NO-STORE",
            "  Private  ",
            "max-age=60,no-store",
            "public, s-maxage=60, PRIVATE",
        ] {
            assert!(!caching(&[(cc, kept_out)]).may_store, "{kept_out}");
        }
        for stored in [
            "public",
            "no-cache",
            "max-age=0",
            "private=\"x-user\"",
            "private=\"x-a, no-store, x-b\"",
            "no-cache=\"x-a, private, x-b\"",
            "public, max-age=600, must-understand, no-store",
            "no-store=1",
        ] {
            assert!(caching(&[(cc, stored)]).may_store, "{stored}");
        }
        assert!(caching(&[]).may_store, "heuristic caching");
        assert!(!caching(&[(cc, "public, max-age=60"), (cc, "no-store")]).may_store);
    }

    #[test]
    fn a_cdn_cache_control_that_allows_storing_counts() {
        let both = [
            ("cache-control", "private"),
            ("cdn-cache-control", "public, max-age=600"),
        ];
        assert_eq!(
            caching(&both),
            SharedCaching {
                may_store: true,
                asked_for: true
            }
        );
        let cdn_off = [
            ("cache-control", "private"),
            ("cdn-cache-control", "no-store"),
        ];
        assert!(!caching(&cdn_off).may_store);
    }

    #[test]
    fn shared_caching_is_asked_for_only_by_public_s_maxage_or_a_positive_max_age() {
        let cc = "cache-control";
        for asked in ["public", "s-maxage=60", "max-age=60", "public, no-cache"] {
            assert!(caching(&[(cc, asked)]).asked_for, "{asked}");
        }
        for not_asked in [
            "no-cache",
            "max-age=0",
            "max-age=0, must-revalidate",
            "private",
        ] {
            assert!(!caching(&[(cc, not_asked)]).asked_for, "{not_asked}");
        }
        assert!(!caching(&[]).asked_for);
    }

    #[test]
    fn forbidding_covers_the_cdn_header_too() {
        let mut headers = HeaderMap::new();
        headers.insert(CDN_CACHE_CONTROL, HeaderValue::from_static("max-age=600"));
        SharedCaching::forbid(&mut headers);
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(headers[CDN_CACHE_CONTROL], "no-store");
    }
}
