//! Session IDs: generated from a CSPRNG, parsed strictly from cookies.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// Random bytes in an ID: 256 bits, twice OWASP's 128-bit minimum.
const ID_BYTES: usize = 32;

/// Length of an ID in its text form: 32 bytes as URL-safe base64 without padding.
pub(crate) const ID_LEN: usize = 43;

/// An opaque session ID: 32 bytes from the operating system's CSPRNG, written as
/// 43 characters of URL-safe base64 without padding.
///
/// The only ways to get one are [`SessionId::generate`] and [`SessionId::parse`], so a
/// `SessionId` always has exactly this shape: a Redis key is never built from unchecked
/// input. `Debug` is redacted so that IDs do not end up in logs; `Display` and
/// [`SessionId::as_str`] give the real value, for the cookie.
///
/// ```
/// use tower_redis_session::SessionId;
///
/// let id = SessionId::generate();
/// assert_eq!(id.as_str().len(), 43);
/// assert_eq!(SessionId::parse(id.as_str()), Some(id.clone()));
/// assert_eq!(format!("{id:?}"), "SessionId(..)");
///
/// // Anything else is not an ID.
/// for bad in ["", "*", "../x", "{a}b", "session:x", &"A".repeat(8192)] {
///     assert_eq!(SessionId::parse(bad), None);
/// }
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId {
    text: Box<str>,
    /// Computed once, with the ID: every ID the layer holds names a key.
    digest: Box<str>,
}

impl SessionId {
    /// Makes a new random ID.
    #[must_use]
    pub fn generate() -> Self {
        let mut bytes = [0u8; ID_BYTES];
        // ThreadRng is a CSPRNG (ChaCha12) seeded and reseeded from the OS.
        rand::rng().fill_bytes(&mut bytes);
        Self::new(URL_SAFE_NO_PAD.encode(bytes).into_boxed_str())
    }

    /// Parses the text form of an ID, as found in a cookie.
    ///
    /// Returns `None` unless `s` is exactly 43 characters of the URL-safe base64
    /// alphabet that decode to 32 bytes in canonical form (no stray trailing bits).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != ID_LEN {
            return None;
        }
        let mut bytes = [0u8; ID_BYTES];
        // The decoder rejects characters outside the alphabet and non-canonical
        // trailing bits, so exactly one text form exists per ID.
        match URL_SAFE_NO_PAD.decode_slice(s, &mut bytes) {
            Ok(ID_BYTES) => Some(Self::new(s.into())),
            _ => None,
        }
    }

    fn new(text: Box<str>) -> Self {
        let digest = digest(&text).into();
        Self { text, digest }
    }

    /// The ID's text form, as sent in the cookie.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The SHA-256 digest of the ID's text form, as URL-safe base64 without padding:
    /// what goes into the Redis key by default, and what logs may show.
    #[must_use]
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

/// URL-safe base64 (no padding) of the SHA-256 of `text`: how IDs and user ids are named
/// in keys.
pub(crate) fn digest(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(text.as_bytes()))
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(..)")
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_ids_have_the_documented_shape_and_do_not_repeat() {
        let mut seen = HashSet::new();
        for _ in 0..100_000 {
            let id = SessionId::generate();
            assert_eq!(id.as_str().len(), ID_LEN);
            assert!(id
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(SessionId::parse(id.as_str()).as_ref(), Some(&id));
            assert!(seen.insert(id), "an ID repeated");
        }
    }

    #[test]
    fn parse_refuses_everything_that_is_not_an_id() {
        let good = SessionId::generate();
        let cases: &[(&str, String)] = &[
            ("empty", String::new()),
            ("one short", good.as_str()[1..].to_string()),
            ("one long", format!("{good}A")),
            ("padding", format!("{}=", &good.as_str()[1..])),
            ("standard base64 plus", format!("+{}", &good.as_str()[1..])),
            ("standard base64 slash", format!("/{}", &good.as_str()[1..])),
            ("glob", "*".repeat(ID_LEN)),
            ("path", format!("../{}", &good.as_str()[3..])),
            ("hash tag", format!("{{a}}{}", &good.as_str()[3..])),
            ("prefix", format!("session:{}", &good.as_str()[8..])),
            ("8 KB", "A".repeat(8192)),
            (
                "non-canonical trailing bits",
                format!("{}B", &good.as_str()[..42]),
            ),
            ("multibyte", format!("é{}", &good.as_str()[2..])),
        ];
        for (name, input) in cases {
            assert_eq!(SessionId::parse(input), None, "{name}");
        }
    }

    #[test]
    fn digest_is_url_safe_and_differs_from_the_id() {
        let id = SessionId::generate();
        let digest = id.digest();
        assert_eq!(digest.len(), 43);
        assert_ne!(digest, id.as_str());
        assert_eq!(digest, id.digest());
    }
}
