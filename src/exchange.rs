//! What a request's session and the store hand each other: what a load found, and,
//! once the handler is done, the writes it asks for and what they do to the cookie.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use crate::id::SessionId;

/// What loading a session found.
#[derive(Debug)]
pub(crate) enum LoadOutcome {
    Found(Loaded),
    /// No such session: never existed, expired, or was deleted.
    Missing,
    /// The session ended a moment ago and left a marker saying how.
    Ended(EndReason),
    /// The key holds something that is not a usable session.
    Unusable,
}

impl LoadOutcome {
    /// What the load found, as the metrics label it: `found`, `missing`, `unusable`, or
    /// the marker's reason.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Found(_) => "found",
            Self::Missing => "missing",
            Self::Unusable => "unusable",
            Self::Ended(why) => why.as_str(),
        }
    }
}

/// A session as the load script returned it.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) fields: Vec<(String, String)>,
    /// The key's TTL right after the load (`None` if Redis did not say).
    pub(crate) expires_in: Option<Duration>,
    /// The load renewed the key's TTL (with a touch interval, not every load does).
    pub(crate) renewed: bool,
    /// User fields that were stored encrypted.
    pub(crate) sealed: HashSet<String>,
}

/// Why a session ended, as its marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndReason {
    /// Rotated to a new ID.
    Rotated,
    /// Destroyed by a request of its own (logout).
    Destroyed,
    /// Terminated by the session manager.
    Terminated,
}

impl EndReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Rotated => "rotated",
            Self::Destroyed => "destroyed",
            Self::Terminated => "terminated",
        }
    }
}

/// What the middleware must do in Redis once the handler is done.
#[derive(Debug)]
pub(crate) enum Plan {
    /// No Redis work; the response does this.
    Nothing(Outcome),
    /// A read whose load renewed the key's TTL: in persistent mode, the cookie goes out
    /// again if the session is still live (one check), with what is left of its TTL.
    Refresh(SessionId),
    /// Create a new session under `id` (indexed under `user` first, if tied).
    Create {
        id: SessionId,
        ttl: Duration,
        fields: Vec<(String, String)>,
        /// The fields this request incremented: counters, stored in plaintext even with
        /// encryption at rest, so that later increments are `HINCRBY`.
        counters: HashSet<String>,
        user: Option<String>,
    },
    /// Apply field-level changes to the loaded session.
    Save {
        id: SessionId,
        /// The new idle TTL, if this request changed it.
        ttl: Option<Duration>,
        changes: Vec<(String, Change)>,
        tie: Option<Tie>,
    },
    /// Move the session to `new`: its current contents (not the copy loaded at the start
    /// of the request) with this request's changes applied.
    Rotate {
        old: SessionId,
        new: SessionId,
        /// The new idle TTL, if this request changed it.
        ttl: Option<Duration>,
        changes: Vec<(String, Change)>,
        /// The user this request ties the session to, if it does.
        tie: Option<String>,
    },
    /// End the loaded session (and drop its entry in its user's index).
    Destroy { id: SessionId, user: Option<String> },
}

/// A request that ties a stored session to a user.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Tie {
    pub(crate) user: String,
    /// The user it was tied to before, whose index entry goes.
    pub(crate) previous: Option<String>,
}

/// One recorded change to a field, applied by the save script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// `HSET field value`.
    Set(String),
    /// `HDEL field`.
    Remove,
    /// `HINCRBY field n`: atomic, so concurrent increments all count.
    Increment(i64),
    /// `HSET field n` of an integer counter, always in plaintext (so later increments
    /// can be `HINCRBY`, even with encryption at rest). Used when this request set or
    /// removed the field before incrementing it, or when it was stored encrypted.
    Counter(i64),
}

impl Change {
    /// Whether the field ends up an integer counter (stored in plaintext).
    pub(crate) fn is_counter(&self) -> bool {
        matches!(self, Self::Increment(_) | Self::Counter(_))
    }

    /// Applies the change to a copy of the fields, as the save script would; `None` if
    /// an increment meets a value that is not a canonical 64-bit integer or overflows.
    pub(crate) fn apply(&self, field: &str, fields: &mut HashMap<String, String>) -> Option<()> {
        match self {
            Self::Set(value) => {
                fields.insert(field.to_owned(), value.clone());
            }
            Self::Remove => {
                fields.remove(field);
            }
            Self::Counter(n) => {
                fields.insert(field.to_owned(), n.to_string());
            }
            Self::Increment(by) => {
                let current = match fields.get(field) {
                    Some(v) => parse_counter(v)?,
                    None => 0,
                };
                fields.insert(field.to_owned(), current.checked_add(*by)?.to_string());
            }
        }
        Some(())
    }
}

/// An integer counter in the only form Redis's `HINCRBY` reads ("7", "-7"; not "07",
/// "+7", "-0"), so that a write-back cannot fail on a value the handler accepted.
pub(crate) fn parse_counter(v: &str) -> Option<i64> {
    v.parse::<i64>().ok().filter(|n| n.to_string() == v)
}

/// What the response does, once the session's changes are written (or refused).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Leave the cookie alone.
    Keep,
    /// Set the cookie to a new ID; `Max-Age` (persistent mode) is what is left of the
    /// key's TTL (`None` if Redis did not say).
    Set(SessionId, Option<Duration>),
    /// The session lives on under the ID the request carried (a save just found it
    /// live, or a check after a read did): in persistent mode the cookie is sent again
    /// with `Max-Age` what is left of the key's TTL (skipped if unknown); otherwise it is
    /// left alone.
    Refresh(SessionId, Option<Duration>),
    /// Remove the cookie.
    Clear,
    /// The changes were not applied: answer `409 Conflict` and leave the cookie alone.
    Refused,
}
