//! What a response's caching headers let a shared cache (a proxy or CDN) do with it, so
//! that one user's session cookie never reaches another user through a cache
//! (`Cache-Control`, RFC 9111; targeted fields such as `CDN-Cache-Control`, RFC 9213;
//! `Surrogate-Control`).

use http::{header, HeaderMap, HeaderName, HeaderValue};

/// A directive's name, lower-cased, and its argument if it has one (a quoted string's
/// content, its quoted-pairs undone).
type Directive = (String, Option<String>);

/// How a shared cache may treat a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SharedCaching {
    /// A shared cache may store the response (and so hand its cookies to others).
    pub(crate) may_store: bool,
    /// The app asked for shared caching (`public`, `s-maxage`, a `max-age` above zero,
    /// or a targeted field that allows storing): a page meant to be cached.
    pub(crate) asked_for: bool,
}

impl SharedCaching {
    /// Reads the response's `Cache-Control` and its targeted fields.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let cc = Field::read(headers, &header::CACHE_CONTROL);
        // A CDN that reads a targeted field obeys it in place of `Cache-Control`, so any
        // one of them that allows storing lets the response be stored.
        let targeted_stores = targeted(headers)
            .iter()
            .any(|name| !Field::read(headers, name).keeps_out());
        let may_store = !cc.keeps_out() || targeted_stores;
        let asked = cc
            .directives
            .iter()
            .any(|(name, value)| match name.as_str() {
                "public" | "s-maxage" => true,
                "max-age" => value.as_deref().is_some_and(|v| v.parse::<u64>() != Ok(0)),
                _ => false,
            });
        Self {
            may_store,
            asked_for: may_store && (asked || targeted_stores),
        }
    }

    /// Makes a response that carries the session cookie unstorable by every shared cache:
    /// `no-store` in `Cache-Control` and in every targeted field the response has.
    pub(crate) fn forbid(headers: &mut HeaderMap) {
        let no_store = HeaderValue::from_static("no-store");
        for name in targeted(headers) {
            headers.insert(name, no_store.clone());
        }
        headers.insert(header::CACHE_CONTROL, no_store);
    }
}

/// The response's targeted cache-control fields: every field whose name ends in
/// `cache-control` other than `Cache-Control` itself (`CDN-Cache-Control`,
/// `Cloudflare-CDN-Cache-Control`, `Akamai-Cache-Control`, ...; RFC 9213), and
/// `Surrogate-Control` (obeyed by some CDNs in place of `Cache-Control`).
fn targeted(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            name == "surrogate-control"
                || (name != "cache-control" && name.ends_with("cache-control"))
        })
        .cloned()
        .collect()
}

/// What one field (all its lines) says.
struct Field {
    /// The directives of its well-formed lines.
    directives: Vec<Directive>,
    /// A line could not be read (a stray quote or backslash, bytes that are not a
    /// token): a cache may read it in ways this module cannot foresee.
    malformed: bool,
}

impl Field {
    /// Reads every line of the field `name`.
    fn read(headers: &HeaderMap, name: &HeaderName) -> Self {
        let mut field = Self {
            directives: Vec::new(),
            malformed: false,
        };
        for value in headers.get_all(name) {
            match directives(value.as_bytes()) {
                Some(mut directives) => field.directives.append(&mut directives),
                None => field.malformed = true,
            }
        }
        field
    }

    /// Whether the field keeps the response out of shared caches: a bare `private` (one
    /// with a list of header names keeps only those out), or a bare `no-store` unless
    /// `must-understand` lets a cache that knows the status code ignore it. A field with
    /// a line that cannot be read never does: a cache may ignore the field, or read it
    /// some other way.
    fn keeps_out(&self) -> bool {
        // Neither takes an argument here: one with an argument is not understood.
        let has = |name: &str| {
            self.directives
                .iter()
                .any(|(n, v)| n == name && v.is_none())
        };
        !self.malformed && (has("private") || (has("no-store") && !has("must-understand")))
    }
}

/// The directives of one field line, or `None` if it does not follow the grammar
/// (RFC 9111 §5.2, RFC 9110 §5.6): a comma-separated list of
/// `token [ "=" ( token / quoted-string ) ]`, where a quoted string may hold escaped
/// characters (`\"`, `\\`): `private="a, b"` and `x="a\", private"` are each one directive.
/// Spaces and tabs are allowed around commas and around `=`.
fn directives(line: &[u8]) -> Option<Vec<Directive>> {
    let mut out = Vec::new();
    let mut rest = line;
    loop {
        rest = skip_space(rest);
        match rest.first() {
            None => return Some(out),
            // An empty list element.
            Some(b',') => {
                rest = &rest[1..];
                continue;
            }
            Some(_) => {}
        }
        let (name, after) = token(rest)?;
        rest = skip_space(after);
        let mut value = None;
        if let Some((b'=', after)) = rest.split_first() {
            let after = skip_space(after);
            let (arg, after) = if after.first() == Some(&b'"') {
                quoted_string(after)?
            } else {
                token(after)?
            };
            value = Some(arg);
            rest = skip_space(after);
        }
        out.push((name.to_ascii_lowercase(), value));
        match rest.split_first() {
            None => return Some(out),
            Some((b',', after)) => rest = after,
            Some(_) => return None,
        }
    }
}

fn skip_space(text: &[u8]) -> &[u8] {
    let start = text
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(text.len());
    &text[start..]
}

/// A non-empty token at the start of `text`, and what follows it.
fn token(text: &[u8]) -> Option<(String, &[u8])> {
    let is_tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    let end = text.iter().position(|b| !is_tchar(b)).unwrap_or(text.len());
    if end == 0 {
        return None;
    }
    let token = std::str::from_utf8(&text[..end]).ok()?.to_owned();
    Some((token, &text[end..]))
}

/// The content of the quoted string at the start of `text` (which is `"`), its
/// quoted-pairs undone, and what follows it; `None` if it never ends, or holds a control
/// character.
fn quoted_string(text: &[u8]) -> Option<(String, &[u8])> {
    let mut content = Vec::new();
    let mut i = 1;
    loop {
        let b = *text.get(i)?;
        match b {
            b'"' => break,
            b'\\' => {
                let escaped = *text.get(i + 1)?;
                if !is_qchar(escaped) {
                    return None;
                }
                content.push(escaped);
                i += 2;
            }
            _ if is_qchar(b) => {
                content.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    Some((
        String::from_utf8_lossy(&content).into_owned(),
        &text[i + 1..],
    ))
}

/// A byte a quoted string may hold: a tab, a space, a visible character or obs-text.
fn is_qchar(b: u8) -> bool {
    b == b'\t' || b == b' ' || b.is_ascii_graphic() || b >= 0x80
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
    fn an_escaped_quote_never_ends_a_quoted_string() {
        let cc = "cache-control";
        for stored in [
            r#"public, max-age=600, x-note="a\", private, b""#,
            r#"public, max-age=600, x-note="a\", no-store, b""#,
            r#"public, x-note="a\\\", private""#,
            r#"private="x-a\", private", public"#,
        ] {
            let read = caching(&[(cc, stored)]);
            assert!(read.may_store && read.asked_for, "{stored}");
        }
        // An escaped backslash ends before the quote: the string ends there.
        for kept_out in [
            r#"x-note="a\\", private"#,
            r#"x-note="\"\\", no-store"#,
            r#"x-note = "a, b" , private"#,
        ] {
            assert!(!caching(&[(cc, kept_out)]).may_store, "{kept_out}");
        }
        assert_eq!(
            directives(br#"a="x\"y\\", b=2"#),
            Some(vec![
                ("a".to_owned(), Some(r#"x"y\"#.to_owned())),
                ("b".to_owned(), Some("2".to_owned())),
            ])
        );
    }

    #[test]
    fn a_line_that_cannot_be_read_never_keeps_a_response_out() {
        let cc = "cache-control";
        for malformed in [
            r#"private, x-note="unterminated"#,
            r#"no-store, x-note="ends in a backslash\"#,
            r#"private, x-note="a\"#,
            r#"private, x-note=a\b"#,
            r#"private, x-note=a"b""#,
            r#"private, "no-store""#,
            r#"private, x-note="a" b"#,
            "private, x-note=",
            "private, =1",
            "private; no-store",
            "no-store=?0, private",
        ] {
            assert!(directives(malformed.as_bytes()).is_none(), "{malformed}");
            assert!(caching(&[(cc, malformed)]).may_store, "{malformed}");
        }
        // A bad line spoils the field, whatever its other lines say.
        assert!(caching(&[(cc, "no-store"), (cc, "x=\"a")]).may_store);
        // Not text at all.
        let mut headers = HeaderMap::new();
        headers.append(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        headers.append(
            header::CACHE_CONTROL,
            HeaderValue::from_bytes(b"must-understand, x=\xff").unwrap(),
        );
        assert!(SharedCaching::of(&headers).may_store);
        // obs-text inside a quoted string is allowed.
        let line = HeaderValue::from_bytes(b"x=\"caf\xc3\xa9\", private").unwrap();
        headers.insert(header::CACHE_CONTROL, line);
        assert!(!SharedCaching::of(&headers).may_store);
    }

    #[test]
    fn every_targeted_field_that_allows_storing_counts() {
        for name in [
            "cdn-cache-control",
            "cloudflare-cdn-cache-control",
            "akamai-cache-control",
            "fastly-cache-control",
            "surrogate-control",
        ] {
            let storable = [("cache-control", "private"), (name, "max-age=600")];
            assert_eq!(
                caching(&storable),
                SharedCaching {
                    may_store: true,
                    asked_for: true
                },
                "{name}"
            );
            assert!(caching(&[(name, "max-age=600")]).may_store, "{name}");
            let kept_out = [("cache-control", "private"), (name, "no-store")];
            assert!(!caching(&kept_out).may_store, "{name}");
            let malformed = [("cache-control", "private"), (name, "private, x=\"a")];
            assert!(caching(&malformed).may_store, "{name}");
        }
        // One storable field among several is enough.
        let one = [
            ("cache-control", "no-store"),
            ("cdn-cache-control", "private"),
            ("surrogate-control", "max-age=600"),
            ("akamai-cache-control", "no-store"),
        ];
        assert!(caching(&one).may_store);
        // Fields that merely resemble one are not read.
        let unrelated = [("cache-control", "private"), ("x-cache-status", "HIT")];
        assert!(!caching(&unrelated).may_store);
    }

    #[test]
    fn forbidding_covers_every_targeted_field() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("cache-control", "private"),
            ("cdn-cache-control", "max-age=600"),
            ("cloudflare-cdn-cache-control", "max-age=600"),
            ("akamai-cache-control", "public"),
            ("surrogate-control", "max-age=600"),
            ("surrogate-control", "max-age=60;edge"),
            ("x-cache-status", "HIT"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        SharedCaching::forbid(&mut headers);
        for name in [
            "cache-control",
            "cdn-cache-control",
            "cloudflare-cdn-cache-control",
            "akamai-cache-control",
            "surrogate-control",
        ] {
            let values: Vec<_> = headers.get_all(name).iter().collect();
            assert_eq!(values, ["no-store"], "{name}");
        }
        assert_eq!(headers["x-cache-status"], "HIT");
        assert!(!SharedCaching::of(&headers).may_store);
        // No targeted field is added where the response had none.
        let mut plain = HeaderMap::new();
        SharedCaching::forbid(&mut plain);
        assert_eq!(plain.len(), 1);
        assert_eq!(plain[header::CACHE_CONTROL], "no-store");
    }
}
