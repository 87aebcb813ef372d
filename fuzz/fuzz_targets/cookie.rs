//! Any bytes as `Cookie` headers: the layer's cookie lookup never panics and finds a
//! session ID exactly when an independent reading of the rules does (one cookie of that
//! name across all headers, holding 43 characters of URL-safe base64 in canonical form).
//! `SessionId::parse` agrees with the same reference on any text.
#![no_main]

use http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tower_redis_session::{fuzzing, SessionId};

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The reference: 32 bytes as base64url without padding is 43 characters whose last one
/// carries two unused bits, which must be zero (its alphabet index is a multiple of 4).
fn is_id(s: &[u8]) -> bool {
    s.len() == 43
        && s.iter().all(|b| ALPHABET.contains(b))
        && ALPHABET.iter().position(|&c| c == s[42]).unwrap() % 4 == 0
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !first.is_ascii_whitespace() {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !last.is_ascii_whitespace() {
            break;
        }
        s = rest;
    }
    s
}

/// The reference reading of the cookie rules.
fn reference<'a>(values: &[&'a [u8]], name: &str) -> Option<&'a [u8]> {
    let mut found = Vec::new();
    for value in values {
        for pair in value.split(|&b| b == b';') {
            let pair = trim(pair);
            if let Some(eq) = pair.iter().position(|&b| b == b'=') {
                if trim(&pair[..eq]) == name.as_bytes() {
                    found.push(trim(&pair[eq + 1..]));
                }
            }
        }
    }
    match found.as_slice() {
        [one] if is_id(one) => Some(one),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let name = ["sid", "__Host-sid", "a", "s"][usize::from(selector % 4)];
    // Headers are separated by '\n', a byte no header value can hold.
    let mut headers = HeaderMap::new();
    let mut values = Vec::new();
    for part in rest.split(|&b| b == b'\n').take(8) {
        if let Ok(value) = HeaderValue::from_bytes(part) {
            headers.append(header::COOKIE, value);
            values.push(part);
        }
    }
    let got = fuzzing::session_cookie(&headers, name);
    let expected = reference(&values, name);
    assert_eq!(
        got.as_ref().map(|id| id.as_str().as_bytes()),
        expected,
        "cookie lookup disagrees with the reference"
    );
    if let Some(id) = got {
        assert_eq!(SessionId::parse(id.as_str()).as_ref(), Some(&id));
        // The key suffix is a digest of the same alphabet: nothing a glob, a hash tag or
        // a path could be made of.
        assert!(is_id_alphabet(&id.digest()));
    }
    if let Ok(text) = std::str::from_utf8(rest) {
        let parsed = SessionId::parse(text);
        assert_eq!(parsed.is_some(), is_id(text.as_bytes()), "parse disagrees");
        if let Some(id) = parsed {
            assert_eq!(id.as_str(), text);
        }
    }
});

fn is_id_alphabet(s: &str) -> bool {
    s.len() == 43 && s.bytes().all(|b| ALPHABET.contains(&b))
}
