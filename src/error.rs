//! The three kinds of failure: building the layer, changing a session, and the store.

use std::{error::Error as StdError, fmt};

/// Why [`RedisSessionLayerBuilder::build`](crate::RedisSessionLayerBuilder::build) refused
/// a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A cookie named `__Host-…` must be `Secure` (RFC 6265bis §4.1.3.2); browsers drop
    /// it otherwise.
    HostPrefixNotSecure,
    /// A cookie named `__Host-…` must have `Path=/`.
    HostPrefixPathNotRoot,
    /// A cookie named `__Host-…` must not have a `Domain`.
    HostPrefixWithDomain,
    /// A cookie named `__Secure-…` must be `Secure`.
    SecurePrefix,
    /// A `SameSite=None` cookie must be `Secure`; browsers drop it otherwise.
    SameSiteNoneNotSecure,
    /// The cookie name is empty or holds characters a cookie name cannot hold.
    InvalidCookieName {
        /// The name given.
        name: String,
    },
    /// A cookie attribute holds characters it cannot hold, or the path does not start
    /// with `/`.
    InvalidCookieAttribute {
        /// The attribute at fault (`path` or `domain`).
        name: &'static str,
    },
    /// The cookie's name, path and domain with the longest session ID would not fit in
    /// the 4096 bytes browsers keep.
    CookieTooLong,
    /// The key prefix holds `{` or `}`: a hash tag would put every session in one
    /// cluster slot.
    KeyPrefixHashTag {
        /// The prefix given.
        prefix: String,
    },
    /// A TTL or lifetime is shorter than 1 second or longer than 68 years (what Redis
    /// and the data model can hold).
    DurationOutOfRange {
        /// The setting (`idle_ttl` or `absolute_lifetime`).
        setting: &'static str,
    },
    /// The touch interval is not shorter than the idle TTL: sessions would expire
    /// between refreshes.
    TouchIntervalNotShorterThanIdleTtl,
    /// The command timeout is zero.
    ZeroCommandTimeout,
    /// The read cache needs a touch interval: only a load within it writes nothing, so
    /// only its answer may be served again from memory.
    ReadCacheWithoutTouchInterval,
    /// A session limit is zero.
    InvalidLimit {
        /// The setting.
        setting: &'static str,
    },
    /// A key id is empty, longer than 16 characters, or holds a character other than
    /// `A-Z a-z 0-9 _ -`.
    InvalidKeyId {
        /// The id given.
        id: String,
    },
    /// Two keys of a key ring have the same id.
    DuplicateKeyId {
        /// The id.
        id: String,
    },
    /// An encryption key is not 32 bytes long.
    InvalidKeyLength {
        /// The key's id.
        id: String,
    },
    /// An encryption key is not valid base64.
    KeyNotBase64 {
        /// The key's id.
        id: String,
    },
    /// An entry of a key ring is not written `id:base64`.
    KeyRingSyntax,
    /// A key ring holds no key.
    EmptyKeyRing,
    /// The environment variable meant to hold the key ring is not set (or not valid
    /// Unicode).
    KeyRingVariableUnset {
        /// The variable's name.
        variable: String,
    },
    /// An accepted session-ID format ([`IdFormat`](crate::IdFormat)) is set without
    /// `plain_keys(true)`: hashed keys need no other format.
    IdFormatWithoutPlainKeys,
    /// An accepted session-ID format holds fewer than 16 or more than 64 bytes.
    IdFormatSize {
        /// The format given.
        format: crate::IdFormat,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HostPrefixNotSecure => f.write_str("a `__Host-` cookie must be `Secure`"),
            Self::HostPrefixPathNotRoot => f.write_str("a `__Host-` cookie must have `Path=/`"),
            Self::HostPrefixWithDomain => {
                f.write_str("a `__Host-` cookie must not have a `Domain`")
            }
            Self::SecurePrefix => f.write_str("a `__Secure-` cookie must be `Secure`"),
            Self::SameSiteNoneNotSecure => f.write_str("a `SameSite=None` cookie must be `Secure`"),
            Self::InvalidCookieName { name } => write!(f, "invalid cookie name {name:?}"),
            Self::InvalidCookieAttribute { name } => write!(f, "invalid cookie {name}"),
            Self::CookieTooLong => f.write_str(
                "the cookie's name, path and domain are too long: the cookie must stay under 4096 bytes",
            ),
            Self::KeyPrefixHashTag { prefix } => write!(
                f,
                "key prefix {prefix:?} holds a brace: a hash tag would put every session in one cluster slot"
            ),
            Self::DurationOutOfRange { setting } => {
                write!(f, "`{setting}` must be between 1 second and 68 years")
            }
            Self::TouchIntervalNotShorterThanIdleTtl => {
                f.write_str("`touch_interval` must be shorter than the idle TTL")
            }
            Self::ZeroCommandTimeout => f.write_str("`command_timeout` must be more than zero"),
            Self::ReadCacheWithoutTouchInterval => {
                f.write_str("the read cache needs a `touch_interval`")
            }
            Self::InvalidLimit { setting } => write!(f, "`{setting}` must be at least 1"),
            Self::InvalidKeyId { id } => write!(
                f,
                "invalid encryption key id {id:?}: ids are 1 to 16 characters of [A-Za-z0-9_-]"
            ),
            Self::DuplicateKeyId { id } => write!(f, "encryption key id {id:?} is used twice"),
            Self::InvalidKeyLength { id } => {
                write!(f, "encryption key {id:?} is not 32 bytes long")
            }
            Self::KeyNotBase64 { id } => write!(f, "encryption key {id:?} is not valid base64"),
            Self::KeyRingSyntax => f.write_str("an encryption key ring entry is not `id:base64`"),
            Self::EmptyKeyRing => f.write_str("the encryption key ring holds no key"),
            Self::KeyRingVariableUnset { variable } => write!(
                f,
                "environment variable {variable:?} (the encryption key ring) is not set"
            ),
            Self::IdFormatWithoutPlainKeys => f.write_str(
                "a session ID format applies only with `plain_keys(true)` (hashed keys need no other format)",
            ),
            Self::IdFormatSize { format } => write!(
                f,
                "session ID format {format:?} must hold 16 to 64 bytes"
            ),
        }
    }
}

impl StdError for ConfigError {}

/// Why a change to a [`Session`](crate::Session) was refused, returned where the change is
/// made. A refused change is not recorded, and nothing else is lost.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionError {
    /// The field name is one of the internal fields the layer keeps
    /// ([`RESERVED_FIELDS`](crate::RESERVED_FIELDS)).
    ReservedField {
        /// The field name.
        name: String,
    },
    /// Field names cannot be empty.
    EmptyFieldName,
    /// The session would hold more user fields than allowed.
    TooManyFields {
        /// The limit ([`RedisSessionLayerBuilder::max_fields`](crate::RedisSessionLayerBuilder::max_fields)).
        limit: usize,
    },
    /// A field name or value is longer than allowed.
    ValueTooLarge {
        /// The field name.
        field: String,
        /// The size of its name and value, in bytes.
        size: usize,
        /// The limit ([`RedisSessionLayerBuilder::max_value_size`](crate::RedisSessionLayerBuilder::max_value_size)).
        limit: usize,
    },
    /// The session's field names and values together would exceed the limit.
    SessionTooLarge {
        /// Their size after the change, in bytes.
        size: usize,
        /// The limit ([`RedisSessionLayerBuilder::max_session_size`](crate::RedisSessionLayerBuilder::max_session_size)).
        limit: usize,
    },
    /// [`Session::increment`](crate::Session::increment) on a field whose value is not a
    /// 64-bit integer, or a sum that overflows one.
    NotAnInteger {
        /// The field name.
        field: String,
    },
    /// A TTL of zero, or longer than Redis can store.
    InvalidTtl,
    /// An empty user id, or one longer than 256 bytes.
    InvalidUserId,
    /// The session was destroyed earlier in this request.
    Destroyed,
    /// A lazy session (see
    /// [`RedisSessionLayerBuilder::lazy_load`](crate::RedisSessionLayerBuilder::lazy_load))
    /// was changed before it was loaded: call [`Session::load`](crate::Session::load)
    /// first (the axum extractor does). Nothing was recorded.
    NotLoaded,
    /// A typed value could not be converted to or from JSON.
    #[cfg(feature = "serde")]
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    Json {
        /// The field name.
        field: String,
        /// What serde_json said.
        source: serde_json::Error,
    },
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedField { name } => {
                write!(f, "field {name:?} is reserved for the session layer")
            }
            Self::EmptyFieldName => f.write_str("field names cannot be empty"),
            Self::TooManyFields { limit } => {
                write!(f, "a session holds at most {limit} fields")
            }
            Self::ValueTooLarge { field, size, limit } => write!(
                f,
                "field {field:?} takes {size} bytes, more than the limit of {limit}"
            ),
            Self::SessionTooLarge { size, limit } => write!(
                f,
                "the session would take {size} bytes, more than the limit of {limit}"
            ),
            Self::NotAnInteger { field } => {
                write!(f, "field {field:?} does not hold a 64-bit integer")
            }
            Self::InvalidTtl => f.write_str("a session TTL must be between 1 second and 68 years"),
            Self::InvalidUserId => f.write_str("a user id must be 1 to 256 bytes long"),
            Self::Destroyed => f.write_str("the session was destroyed in this request"),
            Self::NotLoaded => {
                f.write_str("the session is not loaded yet: call `Session::load` first")
            }
            #[cfg(feature = "serde")]
            Self::Json { field, .. } => write!(f, "field {field:?} is not the JSON expected"),
        }
    }
}

impl StdError for SessionError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            #[cfg(feature = "serde")]
            Self::Json { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A failure of the session store, or a change it refused, seen by the layer (and in the
/// extensions of the response it sends instead of the handler's, for outer layers and
/// tests).
///
/// A timeout means "outcome unknown", not "not applied": a write may still land later.
/// The scripts are written so that a late write is harmless.
///
/// Its `Display` says what happened; the cause, if any (fred's error, or what was wrong
/// with a reply), is its [`source`](StdError::source).
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    source: Option<Source>,
}

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Redis did not answer within the command timeout.
    Timeout,
    /// Redis could not be reached, or refused the command for the moment (connection
    /// lost, cluster reconfiguring, out of memory, ...).
    Unavailable,
    /// Redis answered something the scripts never return: a bug, or a key changed by
    /// someone else in a way the layer cannot read.
    Protocol,
    /// The request's changes were not applied: its session was ended, rotated away or
    /// expired by another request while the handler ran (or had already moved on when
    /// the request came in). Answered `409 Conflict` by default. From the
    /// [`SessionManager`](crate::SessionManager): a session it was to end (or to spare)
    /// kept moving to new IDs; what it found was ended, and calling it again is safe.
    Conflict,
}

#[derive(Debug, Clone)]
enum Source {
    Redis(fred::error::Error),
    Reply(UnexpectedReply),
}

/// What was wrong with a reply from Redis.
#[derive(Debug, Clone, Copy)]
struct UnexpectedReply(&'static str);

impl fmt::Display for UnexpectedReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl StdError for UnexpectedReply {}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Self { kind, source: None }
    }

    /// A reply the layer cannot read; `details` says what was wrong with it.
    pub(crate) fn protocol(details: &'static str) -> Self {
        Self {
            kind: ErrorKind::Protocol,
            source: Some(Source::Reply(UnexpectedReply(details))),
        }
    }

    /// What kind of failure this is.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl From<fred::error::Error> for Error {
    fn from(err: fred::error::Error) -> Self {
        use fred::error::ErrorKind as F;
        let transient = [
            "OOM",
            "LOADING",
            "BUSY",
            "READONLY",
            "MASTERDOWN",
            "TRYAGAIN",
        ]
        .iter()
        .any(|p| err.details().starts_with(p));
        let kind = match err.kind() {
            F::Timeout => ErrorKind::Timeout,
            // OOM, LOADING, BUSY, READONLY, ... replies come back as `Unknown`; they pass
            // with time, unlike a bug in our own scripts.
            F::Unknown if transient => ErrorKind::Unavailable,
            F::Unknown
            | F::Parse
            | F::Protocol
            | F::InvalidArgument
            | F::InvalidCommand
            | F::NotFound
            | F::Config
            | F::Url => ErrorKind::Protocol,
            // IO, Canceled, Backpressure, Cluster, Routing, Sentinel, Auth, Tls, ...
            _ => ErrorKind::Unavailable,
        };
        Self {
            kind,
            source: Some(Source::Redis(err)),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            ErrorKind::Timeout => "session store timed out",
            ErrorKind::Unavailable => "session store unavailable",
            ErrorKind::Protocol => "unexpected reply from the session store",
            ErrorKind::Conflict => "the session ended or moved on meanwhile",
        })
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.source {
            Some(Source::Redis(err)) => Some(err),
            Some(Source::Reply(reply)) => Some(reply),
            None => None,
        }
    }
}
