//! Encryption at rest of user field values (feature `encryption`).
//!
//! XChaCha20-Poly1305 with a fresh random 192-bit nonce per write. The associated data
//! binds the value to its session (the key suffix: the ID's digest) and its field name,
//! so a value copied to another field or session fails to decrypt. A key ring lets keys
//! rotate without logging anyone out: the newest key encrypts, every key decrypts.

use std::fmt;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use chacha20poly1305::{
    aead::{Aead, KeyInit, Payload},
    XChaCha20Poly1305, XNonce,
};
use rand::RngCore as _;
use zeroize::Zeroizing;

use crate::ConfigError;

/// Marks a stored value as encrypted: `enc:v1:{key id}:{base64url(nonce ‖ ciphertext)}`.
const PREFIX: &str = "enc:v1:";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// The keys that encrypt and decrypt session values. The first key encrypts every new
/// write; all keys decrypt. Key material is zeroized when dropped and never printed.
///
/// Keys come as `id:base64` pairs separated by commas, newest first, e.g. from an
/// environment variable:
///
/// ```
/// use tower_redis_session::KeyRing;
///
/// let k2 = KeyRing::generate_key();
/// let k1 = KeyRing::generate_key();
/// let ring = KeyRing::parse(&format!("k2:{k2},k1:{k1}"))?;
/// assert_eq!(ring.key_ids(), vec!["k2", "k1"]);
/// assert_eq!(format!("{ring:?}"), r#"KeyRing { key_ids: ["k2", "k1"], .. }"#);
///
/// // Wrong length or encoding is refused.
/// assert!(KeyRing::parse("k1:c2hvcnQ").is_err());
/// assert!(KeyRing::parse("k1:not base64!").is_err());
/// # Ok::<(), tower_redis_session::ConfigError>(())
/// ```
///
/// Safe rotation: (1) deploy with `new:…,old:…` (new encrypts, old still decrypts; a
/// field is re-encrypted when it is next written); (2) wait one absolute lifetime after
/// step 1, so that every session that existed then has ended (a session that is only
/// read keeps its fields under `old`, so the idle TTL is not enough; with no absolute
/// lifetime there is no bound); (3) deploy with `new:…` alone. A field still under `old`
/// after step 3 fails to decrypt and is handled per [`DecryptFailure`].
pub struct KeyRing {
    keys: Vec<(String, Zeroizing<[u8; KEY_LEN]>)>,
}

/// What the layer does with a stored value that fails to decrypt (tampered, truncated,
/// under a key no longer in the ring, or plaintext where a ciphertext belongs). It is
/// never handed to the handler, and a warning is logged either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DecryptFailure {
    /// Leave the field out of the session; the rest of the session stays usable.
    #[default]
    DropField,
    /// Treat the whole session as invalid: the request gets a fresh, empty session and
    /// the cookie is cleared (the stored key is left to expire).
    RejectSession,
}

impl KeyRing {
    /// A ring with one key, which encrypts and decrypts. `id` is 1 to 16 characters of
    /// `[A-Za-z0-9_-]`; `key` is 32 bytes.
    ///
    /// # Errors
    ///
    /// A bad id or a key that is not 32 bytes.
    pub fn new(id: &str, key: &[u8]) -> Result<Self, ConfigError> {
        Self { keys: Vec::new() }.with_older_key(id, key)
    }

    /// Adds a key that only decrypts (an older key, kept while sessions written under
    /// it may live).
    ///
    /// # Errors
    ///
    /// A bad or duplicate id, or a key that is not 32 bytes.
    pub fn with_older_key(mut self, id: &str, key: &[u8]) -> Result<Self, ConfigError> {
        let valid_id = (1..=16).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_id {
            return Err(ConfigError::InvalidKeyId { id: id.to_owned() });
        }
        if self.keys.iter().any(|(existing, _)| existing == id) {
            return Err(ConfigError::DuplicateKeyId { id: id.to_owned() });
        }
        let key: [u8; KEY_LEN] = key
            .try_into()
            .map_err(|_| ConfigError::InvalidKeyLength { id: id.to_owned() })?;
        self.keys.push((id.to_owned(), Zeroizing::new(key)));
        Ok(self)
    }

    /// Parses `id:base64,id:base64,…`, newest (encrypting) key first. Base64 may be
    /// standard or URL-safe, with or without padding.
    ///
    /// # Errors
    ///
    /// An empty list, a pair without `:`, bad base64, a key that is not 32 bytes, or a
    /// bad or duplicate id.
    pub fn parse(spec: &str) -> Result<Self, ConfigError> {
        let mut ring = Self { keys: Vec::new() };
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, encoded) = pair.split_once(':').ok_or(ConfigError::KeyRingSyntax)?;
            let normalized: String = encoded
                .trim_end_matches('=')
                .chars()
                .map(|c| match c {
                    '+' => '-',
                    '/' => '_',
                    c => c,
                })
                .collect();
            let key = Zeroizing::new(
                URL_SAFE_NO_PAD
                    .decode(normalized)
                    .map_err(|_| ConfigError::KeyNotBase64 { id: id.to_owned() })?,
            );
            ring = ring.with_older_key(id, &key)?;
        }
        if ring.keys.is_empty() {
            return Err(ConfigError::EmptyKeyRing);
        }
        Ok(ring)
    }

    /// Reads [`parse`](Self::parse)'s format from an environment variable (e.g.
    /// `SESSION_KEYS`).
    ///
    /// # Errors
    ///
    /// The variable is unset or not valid Unicode, or [`parse`](Self::parse) refuses it.
    pub fn from_env(var: &str) -> Result<Self, ConfigError> {
        let spec = std::env::var(var).map_err(|_| ConfigError::KeyRingVariableUnset {
            variable: var.to_owned(),
        })?;
        Self::parse(&spec)
    }

    /// A new random key, base64url-encoded: what to put after `id:`.
    #[must_use]
    pub fn generate_key() -> String {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rand::rng().fill_bytes(key.as_mut());
        URL_SAFE_NO_PAD.encode(key.as_ref())
    }

    /// The key ids, newest first.
    #[must_use]
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|(id, _)| id.as_str()).collect()
    }

    fn cipher(key: &[u8; KEY_LEN]) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(key.into())
    }

    /// Encrypts `value` of `field` in the session whose key suffix is `member`.
    pub(crate) fn encrypt(&self, member: &str, field: &str, value: &str) -> String {
        let (id, key) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = associated_data(member, field);
        let ciphertext = Self::cipher(key)
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any message that fits in memory");
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        format!("{PREFIX}{id}:{}", URL_SAFE_NO_PAD.encode(sealed))
    }

    /// Reads a stored user field: an encrypted value, or a plaintext integer (counters
    /// stay plaintext so `HINCRBY` works). Anything else is a failure.
    pub(crate) fn open(&self, member: &str, field: &str, stored: &str) -> Opened {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return if stored.parse::<i64>().is_ok() {
                Opened::Plain
            } else {
                Opened::Failed("plaintext where a ciphertext belongs")
            };
        };
        let Some((id, encoded)) = rest.split_once(':') else {
            return Opened::Failed("malformed ciphertext");
        };
        let Some((_, key)) = self.keys.iter().find(|(kid, _)| kid == id) else {
            return Opened::Failed("encrypted under a key not in the ring");
        };
        let Ok(sealed) = URL_SAFE_NO_PAD.decode(encoded) else {
            return Opened::Failed("malformed ciphertext");
        };
        if sealed.len() < NONCE_LEN {
            return Opened::Failed("truncated ciphertext");
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let aad = associated_data(member, field);
        let plain = Self::cipher(key).decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        );
        match plain.map(String::from_utf8) {
            Ok(Ok(value)) => Opened::Decrypted(value),
            _ => Opened::Failed("authentication failed (tampered, moved or truncated)"),
        }
    }
}

/// What [`KeyRing::open`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opened {
    Decrypted(String),
    /// A plaintext integer (a counter): use as stored.
    Plain,
    Failed(&'static str),
}

/// `trs:v1 ‖ 0 ‖ member ‖ 0 ‖ field`. The member never holds a NUL, so the split is
/// unambiguous whatever the field name holds.
fn associated_data(member: &str, field: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(8 + member.len() + field.len());
    aad.extend_from_slice(b"trs:v1\0");
    aad.extend_from_slice(member.as_bytes());
    aad.push(0);
    aad.extend_from_slice(field.as_bytes());
    aad
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("key_ids", &self.key_ids())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(ids: &[&str]) -> KeyRing {
        let spec: Vec<_> = ids
            .iter()
            .map(|id| format!("{id}:{}", URL_SAFE_NO_PAD.encode([id.as_bytes()[0]; 32])))
            .collect();
        KeyRing::parse(&spec.join(",")).unwrap()
    }

    /// The save script's size check reads a sealed value's plaintext length from its
    /// text alone (`plain_len` in `common.lua`): the base64 length, less the nonce and
    /// the tag.
    #[test]
    fn a_sealed_values_plaintext_length_follows_from_its_text() {
        let ring = ring(&["key-1"]);
        for len in 0..300 {
            let sealed = ring.encrypt("member", "field", &"v".repeat(len));
            let after_id = sealed["enc:v1:".len()..].find(':').unwrap() + "enc:v1:".len();
            let b64 = sealed.len() - after_id - 1;
            assert_eq!(b64 * 3 / 4 - NONCE_LEN - 16, len, "{sealed}");
        }
    }

    #[test]
    fn round_trips_and_hides_the_plaintext() {
        let ring = ring(&["a"]);
        for value in ["", "secret", "\0\n\u{1F980}", &"x".repeat(100_000)] {
            let sealed = ring.encrypt("member", "field", value);
            assert!(sealed.starts_with("enc:v1:a:"));
            assert!(value.len() < 4 || !sealed.contains(value));
            assert_eq!(
                ring.open("member", "field", &sealed),
                Opened::Decrypted(value.to_owned())
            );
        }
        assert_ne!(
            ring.encrypt("m", "f", "v"),
            ring.encrypt("m", "f", "v"),
            "fresh nonce"
        );
    }

    #[test]
    fn values_are_bound_to_their_session_and_field() {
        let ring = ring(&["a"]);
        let sealed = ring.encrypt("session1", "role", "admin");
        assert!(matches!(
            ring.open("session2", "role", &sealed),
            Opened::Failed(_)
        ));
        assert!(matches!(
            ring.open("session1", "name", &sealed),
            Opened::Failed(_)
        ));
    }

    #[test]
    fn tampering_never_panics_and_always_fails() {
        let ring = ring(&["a"]);
        let sealed = ring.encrypt("m", "f", "value");
        let mut cases: Vec<String> = (PREFIX.len() + 2..sealed.len())
            .map(|i| {
                let mut bytes = sealed.clone().into_bytes();
                bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
                String::from_utf8(bytes).unwrap()
            })
            .collect();
        cases.extend((0..sealed.len()).map(|n| sealed[..n].to_owned()));
        cases.push("enc:v1:zz:AAAA".to_owned());
        cases.push("plain text".to_owned());
        for case in cases {
            assert!(
                matches!(ring.open("m", "f", &case), Opened::Failed(_))
                    || case.parse::<i64>().is_ok(),
                "{case}"
            );
        }
        assert_eq!(ring.open("m", "f", "42"), Opened::Plain);
    }

    #[test]
    fn older_keys_decrypt_and_the_newest_encrypts() {
        let old = ring(&["old"]);
        let sealed = old.encrypt("m", "f", "v");
        let both = ring(&["new", "old"]);
        assert_eq!(both.open("m", "f", &sealed), Opened::Decrypted("v".into()));
        assert!(both.encrypt("m", "f", "v").starts_with("enc:v1:new:"));
        let new_only = ring(&["new"]);
        assert!(matches!(
            new_only.open("m", "f", &sealed),
            Opened::Failed(_)
        ));
    }

    #[test]
    fn bad_configuration_is_refused() {
        let key = KeyRing::generate_key();
        let id = |id: &str| id.to_owned();
        for (spec, expected) in [
            (String::new(), ConfigError::EmptyKeyRing),
            ("nocolon".into(), ConfigError::KeyRingSyntax),
            (
                format!("bad id!:{key}"),
                ConfigError::InvalidKeyId { id: id("bad id!") },
            ),
            (
                format!("a:{key},a:{key}"),
                ConfigError::DuplicateKeyId { id: id("a") },
            ),
            (
                "a:AAAA".into(),
                ConfigError::InvalidKeyLength { id: id("a") },
            ),
            (
                format!("a:{key}@"),
                ConfigError::KeyNotBase64 { id: id("a") },
            ),
        ] {
            assert_eq!(KeyRing::parse(&spec).err(), Some(expected), "{spec}");
        }
        let standard = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(KeyRing::parse(&format!("a:{standard}")).is_ok());
    }
}
