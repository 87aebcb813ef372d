//! The three kinds of failure: building the layer, changing a session, and the store.

use std::{error::Error as StdError, fmt};

/// Why [`RedisSessionLayerBuilder::build`](crate::RedisSessionLayerBuilder::build) refused
/// a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A cookie named `__Host-…` must be `Secure`, have `Path=/` and no `Domain`
    /// (RFC 6265bis §4.1.3.2); browsers drop it otherwise.
    HostPrefix {
        /// Which rule the configuration breaks.
        reason: &'static str,
    },
    /// A cookie named `__Secure-…` must be `Secure`.
    SecurePrefix,
    /// A `SameSite=None` cookie must be `Secure`; browsers drop it otherwise.
    SameSiteNoneNotSecure,
    /// The cookie name is empty or holds characters a cookie name cannot hold.
    InvalidCookieName {
        /// The name given.
        name: String,
    },
    /// A cookie attribute holds characters it cannot hold, the path does not start with
    /// `/`, or the cookie would not fit in the 4096 bytes browsers keep.
    InvalidCookieAttribute {
        /// The attribute at fault.
        name: &'static str,
    },
    /// The key prefix holds `{` or `}`: a hash tag would put every session in one
    /// cluster slot.
    KeyPrefixHashTag {
        /// The prefix given.
        prefix: String,
    },
    /// A duration setting is out of range.
    InvalidDuration {
        /// The setting.
        setting: &'static str,
        /// What it must be.
        reason: &'static str,
    },
    /// An encryption key or key id is not usable.
    InvalidKey {
        /// The key id (empty if the problem is not with one key).
        id: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A session limit is zero.
    InvalidLimit {
        /// The setting.
        setting: &'static str,
    },
    /// The accepted session-ID format ([`IdFormat`](crate::IdFormat)) is set without
    /// `plain_keys`, or holds fewer than 16 or more than 64 bytes.
    InvalidIdFormat {
        /// The format given.
        format: crate::IdFormat,
        /// What is wrong.
        reason: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HostPrefix { reason } => write!(f, "a `__Host-` cookie {reason}"),
            Self::SecurePrefix => f.write_str("a `__Secure-` cookie must be `Secure`"),
            Self::SameSiteNoneNotSecure => f.write_str("a `SameSite=None` cookie must be `Secure`"),
            Self::InvalidCookieName { name } => write!(f, "invalid cookie name {name:?}"),
            Self::InvalidCookieAttribute { name } => write!(f, "invalid cookie {name}"),
            Self::KeyPrefixHashTag { prefix } => write!(
                f,
                "key prefix {prefix:?} holds a brace: a hash tag would put every session in one cluster slot"
            ),
            Self::InvalidDuration { setting, reason } => write!(f, "`{setting}` {reason}"),
            Self::InvalidKey { id, reason } if id.is_empty() => {
                write!(f, "invalid encryption key ring: {reason}")
            }
            Self::InvalidKey { id, reason } => write!(f, "invalid encryption key {id:?}: {reason}"),
            Self::InvalidLimit { setting } => write!(f, "`{setting}` must be at least 1"),
            Self::InvalidIdFormat { format, reason } => {
                write!(f, "session ID format {format:?} {reason}")
            }
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
    /// the request came in). Answered `409 Conflict` by default.
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
            ErrorKind::Conflict => "session ended or moved on before its changes were saved",
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
