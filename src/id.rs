//! Session IDs: generated from a CSPRNG, parsed strictly from cookies.

use std::{fmt, sync::Arc};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use crate::ConfigError;

/// Random bytes in an ID: 256 bits, twice OWASP's 128-bit minimum.
const ID_BYTES: usize = 32;

/// Length of an ID in its text form: 32 bytes as URL-safe base64 without padding.
pub(crate) const ID_LEN: usize = 43;

/// The shape of session IDs another program makes, accepted from cookies besides the
/// crate's own, for apps that share sessions with it (with
/// [`plain_keys`](crate::RedisSessionLayerBuilder::plain_keys) only); set with
/// [`RedisSessionLayerBuilder::id_format`](crate::RedisSessionLayerBuilder::id_format).
///
/// A format holds from 16 bytes (128 bits, OWASP's minimum) to 64 bytes; the layer
/// refuses to build otherwise. Parsing is strict: exactly the format's length, only its
/// alphabet, one text form per ID, so no key is ever built from `{`, `}`, `*`, `:`,
/// whitespace or control bytes.
///
/// The layer still makes new IDs (for new sessions and rotations) in its own format, 32
/// bytes as 43 characters of URL-safe base64, and keeps accepting those: the other
/// program must accept them too.
///
/// ```
/// use tower_redis_session::{IdFormat, SessionId};
///
/// // PHP's `bin2hex(random_bytes(16))`: 32 lowercase hex digits.
/// let php = IdFormat::Hex { bytes: 16 };
/// let id = SessionId::parse_as("0123456789abcdef0123456789abcdef", php).unwrap();
/// assert_eq!(id.as_str(), "0123456789abcdef0123456789abcdef");
/// assert_eq!(SessionId::parse_as("0123456789ABCDEF0123456789ABCDEF", php), None);
/// assert_eq!(SessionId::parse_as("0123456789abcdef0123456789abcde*", php), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdFormat {
    /// `bytes` bytes as URL-safe base64 without padding (`A-Z a-z 0-9 - _`), in canonical
    /// form (no stray trailing bits). The crate's own format is `Base64Url { bytes: 32 }`.
    Base64Url {
        /// How many random bytes the ID holds.
        bytes: usize,
    },
    /// `bytes` bytes as lowercase hexadecimal (`0-9 a-f`), `2 * bytes` characters, as
    /// PHP's `bin2hex(random_bytes(bytes))` writes them.
    Hex {
        /// How many random bytes the ID holds.
        bytes: usize,
    },
}

impl IdFormat {
    /// The fewest bytes a format may hold: 16 (128 bits).
    pub const MIN_BYTES: usize = 16;
    /// The most bytes a format may hold: 64, which keeps keys and cookies short.
    pub const MAX_BYTES: usize = 64;

    fn bytes(self) -> usize {
        match self {
            Self::Base64Url { bytes } | Self::Hex { bytes } => bytes,
        }
    }

    /// Length of an ID of this format in its text form.
    fn text_len(self) -> usize {
        match self {
            Self::Base64Url { bytes } => bytes.saturating_mul(4).div_ceil(3),
            Self::Hex { bytes } => bytes.saturating_mul(2),
        }
    }

    /// `true` if `s` is an ID of this format; assumes the format is within bounds.
    fn accepts(self, s: &str) -> bool {
        if s.len() != self.text_len() {
            return false;
        }
        match self {
            Self::Base64Url { bytes } => {
                // Room for any in-bounds format; the decoder rejects characters outside
                // the alphabet, padding and non-canonical trailing bits.
                let mut buf = [0u8; Self::MAX_BYTES + 3];
                URL_SAFE_NO_PAD
                    .decode_slice(s, &mut buf)
                    .is_ok_and(|n| n == bytes)
            }
            Self::Hex { .. } => s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        }
    }
}

impl Default for IdFormat {
    /// The crate's own format: 32 bytes as URL-safe base64.
    fn default() -> Self {
        Self::Base64Url { bytes: ID_BYTES }
    }
}

/// Checks an accepted-ID format when the layer is built.
pub(crate) fn check_format(format: IdFormat, plain_keys: bool) -> Result<(), ConfigError> {
    if !plain_keys {
        Err(ConfigError::IdFormatWithoutPlainKeys)
    } else if !(IdFormat::MIN_BYTES..=IdFormat::MAX_BYTES).contains(&format.bytes()) {
        Err(ConfigError::IdFormatSize { format })
    } else {
        Ok(())
    }
}

/// The longest ID a cookie may carry: ours, or one of the accepted format.
pub(crate) fn longest(format: Option<IdFormat>) -> usize {
    format.map_or(ID_LEN, |f| f.text_len().max(ID_LEN))
}

/// An ID from a cookie: the crate's own format, or else the accepted `format`.
pub(crate) fn parse_incoming(s: &str, format: Option<IdFormat>) -> Option<SessionId> {
    SessionId::parse(s).or_else(|| SessionId::parse_as(s, format?))
}

/// An opaque session ID: 32 bytes from a CSPRNG (`rand`'s `ThreadRng`: ChaCha12, seeded
/// from the operating system's generator and reseeded from it periodically), written as
/// 43 characters of URL-safe base64 without padding.
///
/// The only ways to get one are [`SessionId::generate`], [`SessionId::parse`] and, for IDs
/// another program made, [`SessionId::parse_as`], so a `SessionId` always has a checked
/// shape: a Redis key is never built from unchecked input. `Debug` is redacted so that IDs do not end up in logs; `Display` and
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
pub struct SessionId(Arc<Parts>);

/// An ID's text followed by its digest (computed once, with the ID: every ID the layer
/// holds names a key), shared by its clones: a request's session holds its ID more than
/// once.
#[derive(PartialEq, Eq, Hash)]
struct Parts {
    both: Box<str>,
}

/// Length of a digest: 32 bytes of SHA-256 as URL-safe base64 without padding.
const DIGEST_LEN: usize = 43;

/// 32 random bytes as URL-safe base64: the text of a new ID, or of a CSRF token.
pub(crate) fn random_text() -> String {
    let mut bytes = [0u8; ID_BYTES];
    // ThreadRng is a CSPRNG (ChaCha12) seeded and reseeded from the OS.
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `s` has the shape of [`random_text`]: 43 characters of URL-safe base64 that
/// decode to 32 bytes. A stored CSRF token of any other shape (an empty one, written by
/// another program) is not a token.
pub(crate) fn is_random_text(s: &str) -> bool {
    SessionId::parse(s).is_some()
}

impl SessionId {
    /// Makes a new random ID.
    #[must_use]
    pub fn generate() -> Self {
        #[cfg(test)]
        if let Some(id) = planted::next() {
            return id;
        }
        let mut bytes = [0u8; ID_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        let mut text = [0u8; ID_LEN];
        URL_SAFE_NO_PAD
            .encode_slice(bytes, &mut text)
            .expect("32 bytes are 43 base64 characters");
        Self::new(std::str::from_utf8(&text).expect("base64 is ASCII"))
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
            Ok(ID_BYTES) => Some(Self::new(s)),
            _ => None,
        }
    }

    /// Parses the text form of an ID of the given format (and only that format): see
    /// [`IdFormat`]. `None` also for a format outside 16 to 64 bytes.
    #[must_use]
    pub fn parse_as(s: &str, format: IdFormat) -> Option<Self> {
        let in_bounds = (IdFormat::MIN_BYTES..=IdFormat::MAX_BYTES).contains(&format.bytes());
        (in_bounds && format.accepts(s)).then(|| Self::new(s))
    }

    fn new(text: &str) -> Self {
        let mut both = String::with_capacity(text.len() + DIGEST_LEN);
        both.push_str(text);
        URL_SAFE_NO_PAD.encode_string(Sha256::digest(text.as_bytes()), &mut both);
        Self(Arc::new(Parts {
            both: both.into_boxed_str(),
        }))
    }

    /// The ID's text form, as sent in the cookie.
    #[must_use]
    pub fn as_str(&self) -> &str {
        let both = &self.0.both;
        &both[..both.len() - DIGEST_LEN]
    }

    /// The SHA-256 digest of the ID's text form, as URL-safe base64 without padding:
    /// what goes into the Redis key by default, and what logs may show.
    #[must_use]
    pub fn digest(&self) -> &str {
        let both = &self.0.both;
        &both[both.len() - DIGEST_LEN..]
    }
}

/// IDs that [`SessionId::generate`] hands out before any random one, on the thread that
/// planted them: lets the crate's own unit tests make an ID collide with a live session.
/// Compiled into the crate's unit-test build only: the library as anyone links it (the
/// integration tests included) always draws IDs from the CSPRNG, and nothing public lets
/// a caller choose one.
#[cfg(test)]
pub(crate) mod planted {
    use std::{cell::RefCell, collections::VecDeque};

    use super::SessionId;

    thread_local! {
        static NEXT: RefCell<VecDeque<SessionId>> = const { RefCell::new(VecDeque::new()) };
    }

    /// The next IDs `generate` returns on this thread, in order.
    pub(crate) fn plant(ids: impl IntoIterator<Item = SessionId>) {
        NEXT.with(|next| next.borrow_mut().extend(ids));
    }

    /// How many planted IDs are left on this thread.
    pub(crate) fn left() -> usize {
        NEXT.with(|next| next.borrow().len())
    }

    pub(super) fn next() -> Option<SessionId> {
        NEXT.with(|next| next.borrow_mut().pop_front())
    }
}

/// URL-safe base64 (no padding) of the SHA-256 of `text`: how IDs and user ids are named
/// in keys.
pub(crate) fn digest(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(text.as_bytes()))
}

/// The first 12 characters of the ID's digest: enough to follow one session through the
/// logs, useless for taking it over.
pub(crate) fn short_digest(id: &SessionId) -> &str {
    &id.digest()[..12]
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(..)")
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE;
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
    fn the_default_format_is_ours() {
        let id = SessionId::generate();
        assert_eq!(
            SessionId::parse_as(id.as_str(), IdFormat::default()),
            Some(id)
        );
        assert_eq!(IdFormat::default().text_len(), ID_LEN);
    }

    #[test]
    fn hex_ids_parse_in_lowercase_at_their_exact_length_only() {
        let php = IdFormat::Hex { bytes: 16 };
        let good = "00112233445566778899aabbccddeeff";
        assert_eq!(SessionId::parse_as(good, php).unwrap().as_str(), good);
        let cases: &[(&str, String)] = &[
            ("empty", String::new()),
            ("one short", good[1..].to_owned()),
            ("one long", format!("{good}0")),
            ("uppercase", good.to_uppercase()),
            ("not hex", format!("g{}", &good[1..])),
            ("glob", format!("*{}", &good[1..])),
            ("hash tag", format!("{{a}}{}", &good[3..])),
            ("colon", format!("x:{}", &good[2..])),
            ("space", format!(" {}", &good[1..])),
            ("tab", format!("\t{}", &good[1..])),
            ("newline", format!("{}\n", &good[1..])),
            ("NUL", format!("\0{}", &good[1..])),
            ("DEL", format!("\x7f{}", &good[1..])),
            ("multibyte", format!("é{}", &good[2..])),
            ("0x prefix", format!("0x{}", &good[2..])),
            ("8 KB", "a".repeat(8192)),
        ];
        for (name, input) in cases {
            assert_eq!(SessionId::parse_as(input, php), None, "{name}");
        }
        // Ours are not hex: another format is accepted only where asked for.
        assert_eq!(SessionId::parse(good), None);
    }

    #[test]
    fn base64url_ids_of_other_lengths_parse_canonically() {
        for bytes in [16, 24, 33, 48, 64] {
            let format = IdFormat::Base64Url { bytes };
            let text = URL_SAFE_NO_PAD.encode(vec![0xa5; bytes]);
            assert_eq!(text.len(), format.text_len(), "{bytes}");
            assert!(SessionId::parse_as(&text, format).is_some(), "{bytes}");
            assert_eq!(
                SessionId::parse_as(&text[1..], format),
                None,
                "{bytes} short"
            );
            let padded = URL_SAFE.encode(vec![0xa5; bytes]);
            if padded != text {
                assert_eq!(SessionId::parse_as(&padded, format), None, "{bytes} padded");
            }
            let plus = format!("+{}", &text[1..]);
            assert_eq!(SessionId::parse_as(&plus, format), None, "{bytes} plus");
        }
        // 16 bytes are 22 characters, whose last one carries 4 bits that must be zero.
        let format = IdFormat::Base64Url { bytes: 16 };
        let text = URL_SAFE_NO_PAD.encode([0u8; 16]);
        assert!(SessionId::parse_as(&text, format).is_some());
        let stray = format!("{}B", &text[..21]);
        assert_eq!(SessionId::parse_as(&stray, format), None);
    }

    #[test]
    fn formats_outside_the_bounds_parse_nothing_and_do_not_build() {
        for format in [
            IdFormat::Hex { bytes: 15 },
            IdFormat::Hex { bytes: 65 },
            IdFormat::Base64Url { bytes: 0 },
            IdFormat::Base64Url { bytes: 65 },
            IdFormat::Hex {
                bytes: usize::MAX / 2,
            },
        ] {
            let text = "a".repeat(format.text_len().min(200));
            assert_eq!(SessionId::parse_as(&text, format), None, "{format:?}");
            assert!(
                check_format(format, true) == Err(ConfigError::IdFormatSize { format }),
                "{format:?}"
            );
        }
        for format in [
            IdFormat::Hex { bytes: 16 },
            IdFormat::Base64Url { bytes: 64 },
        ] {
            assert_eq!(check_format(format, true), Ok(()));
            assert_eq!(
                check_format(format, false),
                Err(ConfigError::IdFormatWithoutPlainKeys)
            );
        }
    }

    #[test]
    fn incoming_ids_are_ours_or_of_the_accepted_format() {
        let ours = SessionId::generate();
        let hex = "00112233445566778899aabbccddeeff";
        let php = Some(IdFormat::Hex { bytes: 16 });
        assert_eq!(parse_incoming(ours.as_str(), None), Some(ours.clone()));
        assert_eq!(parse_incoming(ours.as_str(), php), Some(ours));
        assert_eq!(parse_incoming(hex, None), None);
        assert_eq!(parse_incoming(hex, php).unwrap().as_str(), hex);
        assert_eq!(longest(None), ID_LEN);
        assert_eq!(longest(php), ID_LEN);
        assert_eq!(longest(Some(IdFormat::Hex { bytes: 64 })), 128);
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
