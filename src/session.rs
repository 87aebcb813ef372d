//! The `Session` handle that handlers use: synchronous reads of the loaded copy, and a
//! record of changes that the middleware applies on the way out.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use crate::{config::Limits, SessionError, SessionId};

/// Internal fields of the session hash: read by the layer, never settable by handlers.
///
/// | field | meaning |
/// |---|---|
/// | `created_at` | when the session was created (RFC 3339, UTC, Redis's clock) |
/// | `last_accessed_at` | when a request last loaded it (RFC 3339, UTC) |
/// | `session_ttl` | idle TTL in whole seconds |
/// | `absolute_expires_at` | end of its absolute lifetime, if one is set (RFC 3339, UTC) |
/// | `user_id` | the user the session is tied to ([`Session::set_user_id`]) |
pub const RESERVED_FIELDS: &[&str] = &[
    "created_at",
    "last_accessed_at",
    "session_ttl",
    "absolute_expires_at",
    "user_id",
];

/// Largest TTL accepted: 2^31 - 1 seconds (68 years). The scripts pass TTLs to `PEXPIRE`
/// in ms as Lua numbers, which Redis receives in exponent form (`1e+17`, refused) from
/// 10^14 s on; this keeps them exact integers. load.lua refuses larger stored TTLs.
pub(crate) const MAX_TTL_SECS: u64 = (1 << 31) - 1;

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

/// The session of one request.
///
/// The middleware puts it in the request extensions; with the `axum` feature it is an
/// extractor. It is a cheap handle (an `Arc`): clones see and change the same session.
///
/// Reads come from the copy loaded at the start of the request and see this request's
/// own changes. Changes are recorded as field-level operations and written to Redis in
/// one script after the handler has returned, so two requests that change different
/// fields both persist, and a request racing a logout cannot bring the session back.
///
/// ```
/// use tower_redis_session::Session;
///
/// # let session = Session::detached();
/// session.insert("username", "ferris")?;
/// assert_eq!(session.get("username").as_deref(), Some("ferris"));
/// assert_eq!(session.increment("page_views", 1)?, 1);
/// assert!(session.insert("created_at", "x").is_err()); // reserved
/// # Ok::<(), tower_redis_session::SessionError>(())
/// ```
#[derive(Clone)]
pub struct Session(Arc<Mutex<State>>);

#[derive(Debug)]
struct State {
    limits: Limits,
    /// The ID the response will carry: the loaded one, or a new one once this request
    /// creates or rotates the session.
    id: Option<SessionId>,
    /// The ID the session was loaded under (`None` for a new session).
    loaded_id: Option<SessionId>,
    /// User fields as this request sees them: loaded values with its changes applied.
    fields: HashMap<String, String>,
    /// Internal fields that move with the session on rotation (`created_at`, ...).
    carried: Vec<(String, String)>,
    /// User fields that were stored encrypted (never `HINCRBY` targets).
    sealed: HashSet<String>,
    /// Bytes of user field names and values in `fields`.
    size: usize,
    changes: BTreeMap<String, Change>,
    ttl: Duration,
    ttl_changed: bool,
    created_at: Option<SystemTime>,
    last_accessed_at: Option<SystemTime>,
    expires_in: Option<Duration>,
    /// The user the stored session is tied to.
    user_id: Option<String>,
    /// The user this request ties the session to.
    tie: Option<String>,
    rotate: bool,
    destroy: bool,
    cookie_expired: bool,
}

/// A session as the load script returned it.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) fields: Vec<(String, String)>,
    pub(crate) expires_in: Duration,
    /// User fields that were stored encrypted.
    pub(crate) sealed: HashSet<String>,
}

/// What the middleware must do in Redis once the handler is done.
#[derive(Debug)]
pub(crate) enum Plan {
    /// No Redis work.
    Nothing,
    /// Create a new session under `id` (indexed under `user` first, if tied).
    Create {
        id: SessionId,
        ttl: Duration,
        fields: Vec<(String, String)>,
        user: Option<String>,
    },
    /// Apply field-level changes to the loaded session.
    Save {
        id: SessionId,
        /// The session's idle TTL, written only if this request changed it.
        ttl: Duration,
        ttl_changed: bool,
        changes: Vec<(String, Change)>,
        tie: Option<Tie>,
    },
    /// Copy the session to `new` (carried internal fields + user fields), then retire `old`.
    Rotate {
        old: SessionId,
        new: SessionId,
        ttl: Duration,
        fields: Vec<(String, String)>,
        /// The user the new ID is indexed under (before it is created).
        user: Option<String>,
        /// The user the old ID was indexed under (removed after it is deleted).
        previous: Option<String>,
    },
    /// Delete the loaded session (and its entry in its user's index).
    Destroy { id: SessionId, user: Option<String> },
}

/// A request that ties a stored session to a user.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Tie {
    pub(crate) user: String,
    /// The user it was tied to before, whose index entry goes.
    pub(crate) previous: Option<String>,
}

fn is_reserved(name: &str) -> bool {
    RESERVED_FIELDS.contains(&name)
}

impl Session {
    fn with_state(state: State) -> Self {
        Self(Arc::new(Mutex::new(state)))
    }

    /// A session with no cookie behind it, for requests without a (usable) cookie.
    pub(crate) fn anonymous(limits: Limits, ttl: Duration, cookie_expired: bool) -> Self {
        Self::with_state(State::new(limits, ttl, cookie_expired))
    }

    /// A session that no middleware loaded and none will save, with the default limits:
    /// for unit tests of handlers and for doc examples.
    #[must_use]
    pub fn detached() -> Self {
        Self::anonymous(Limits::default(), crate::config::DEFAULT_IDLE_TTL, false)
    }

    /// A session loaded from Redis under `id`.
    pub(crate) fn loaded(
        limits: Limits,
        default_ttl: Duration,
        id: SessionId,
        loaded: Loaded,
    ) -> Self {
        let mut state = State {
            id: Some(id.clone()),
            loaded_id: Some(id),
            expires_in: Some(loaded.expires_in),
            sealed: loaded.sealed,
            ..State::new(limits, default_ttl, false)
        };
        for (name, value) in loaded.fields {
            match name.as_str() {
                "session_ttl" => {
                    if let Ok(secs) = value.parse() {
                        state.ttl = Duration::from_secs(secs);
                    }
                }
                "last_accessed_at" => state.last_accessed_at = crate::time::parse_rfc3339(&value),
                "user_id" => state.user_id = Some(value),
                _ if is_reserved(&name) => {
                    if name == "created_at" {
                        state.created_at = crate::time::parse_rfc3339(&value);
                    }
                    state.carried.push((name, value));
                }
                _ => {
                    state.size += name.len() + value.len();
                    state.fields.insert(name, value);
                }
            }
        }
        Self::with_state(state)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, but a poisoned lock still holds a
        // consistent state: every change is made after all its checks pass.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value of a user field, as this request sees it.
    #[must_use]
    pub fn get(&self, field: &str) -> Option<String> {
        self.lock().fields.get(field).cloned()
    }

    /// All user fields, sorted by name.
    #[must_use]
    pub fn fields(&self) -> Vec<(String, String)> {
        let mut fields: Vec<_> = self
            .lock()
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        fields.sort_unstable();
        fields
    }

    /// Number of user fields.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().fields.len()
    }

    /// `true` if the session has no user fields.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.lock().fields.is_empty()
    }

    /// The session's ID: the one the request carried, or the new one this response will
    /// set after a first write or [`rotate_id`](Self::rotate_id). `None` for a request
    /// without a session that has written nothing.
    #[must_use]
    pub fn id(&self) -> Option<SessionId> {
        self.lock().id.clone()
    }

    /// `true` if the session was loaded from Redis (the request carried a live session).
    #[must_use]
    pub fn is_loaded(&self) -> bool {
        self.lock().loaded_id.is_some()
    }

    /// `true` if the request carried a well-formed session cookie whose session no longer
    /// exists: it expired, was destroyed, or was rotated away. Useful for "your session
    /// expired" messages.
    #[must_use]
    pub fn cookie_expired(&self) -> bool {
        self.lock().cookie_expired
    }

    /// When the session was created, by Redis's clock (`None` until it is stored).
    #[must_use]
    pub fn created_at(&self) -> Option<SystemTime> {
        self.lock().created_at
    }

    /// When a request last loaded the session before this one, by Redis's clock (`None`
    /// for a new session). With a touch interval set, loads closer together than the
    /// interval do not update it.
    #[must_use]
    pub fn last_accessed_at(&self) -> Option<SystemTime> {
        self.lock().last_accessed_at
    }

    /// The session's idle TTL: how long it lives without a request.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.lock().ttl
    }

    /// How long the key had left in Redis right after this request loaded it: the idle
    /// TTL, or less when the absolute lifetime ends sooner. `None` for a new session.
    #[must_use]
    pub fn expires_in(&self) -> Option<Duration> {
        self.lock().expires_in
    }

    /// The user this session is tied to, if any (see [`set_user_id`](Self::set_user_id)).
    #[must_use]
    pub fn user_id(&self) -> Option<String> {
        let state = self.lock();
        state.tie.clone().or_else(|| state.user_id.clone())
    }

    /// Ties the session to a user, typically at login (together with
    /// [`rotate_id`](Self::rotate_id)), so that
    /// [`SessionManager`](crate::SessionManager) can list and end the user's sessions.
    ///
    /// At write-back the session is added to the user's index first and tied second, so
    /// a crash in between never leaves a tied session the index does not know.
    ///
    /// # Errors
    ///
    /// An empty user id, one longer than the value size limit, or a destroyed session.
    pub fn set_user_id(&self, user_id: impl Into<String>) -> Result<(), SessionError> {
        let user_id = user_id.into();
        let mut state = self.lock();
        if state.destroy {
            return Err(SessionError::Destroyed);
        }
        if user_id.is_empty() || user_id.len() > state.limits.max_value_size {
            return Err(SessionError::InvalidUserId);
        }
        if state.user_id.as_deref() != Some(user_id.as_str()) {
            state.tie = Some(user_id);
            state.mark_dirty();
        }
        Ok(())
    }

    /// Sets a user field.
    ///
    /// # Errors
    ///
    /// A reserved or empty field name, or a change beyond the session limits.
    pub fn insert(&self, field: &str, value: impl Into<String>) -> Result<(), SessionError> {
        let value = value.into();
        let mut state = self.lock();
        state.check_change(field, Some(&value))?;
        state.put(field, value.clone());
        state.changes.insert(field.to_owned(), Change::Set(value));
        Ok(())
    }

    /// Removes a user field, returning its value as this request saw it.
    ///
    /// # Errors
    ///
    /// A reserved or empty field name.
    pub fn remove(&self, field: &str) -> Result<Option<String>, SessionError> {
        let mut state = self.lock();
        state.check_change(field, None)?;
        let old = state.fields.remove(field);
        if let Some(old) = &old {
            state.size -= field.len() + old.len();
        }
        state.changes.insert(field.to_owned(), Change::Remove);
        state.mark_dirty();
        Ok(old)
    }

    /// Adds `by` to an integer field (a missing field counts as 0) and returns the value
    /// this request sees.
    ///
    /// The write-back is an atomic `HINCRBY`, so N concurrent increments add exactly N,
    /// whatever the values each request saw. Under faults, increments are at least once:
    /// a write-back that timed out may still have landed.
    ///
    /// # Errors
    ///
    /// A reserved or empty field name, a value that is not a 64-bit integer, an overflow,
    /// or a change beyond the session limits.
    pub fn increment(&self, field: &str, by: i64) -> Result<i64, SessionError> {
        let mut state = self.lock();
        let not_an_integer = || SessionError::NotAnInteger {
            field: field.to_owned(),
        };
        let current = match state.fields.get(field) {
            // Only the canonical form ("7", "-7"; not "07", "+7", "-0"): the one Redis's
            // HINCRBY reads as an integer, so the write-back cannot fail on it.
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n.to_string() == *v => n,
                _ => return Err(not_an_integer()),
            },
            None => 0,
        };
        let new = current.checked_add(by).ok_or_else(not_an_integer)?;
        let text = new.to_string();
        state.check_change(field, Some(&text))?;
        state.put(field, text);
        let change = match state.changes.get(field) {
            Some(Change::Increment(n)) => {
                Change::Increment(n.checked_add(by).ok_or_else(not_an_integer)?)
            }
            Some(_) => Change::Counter(new),
            None if state.sealed.contains(field) => Change::Counter(new),
            None => Change::Increment(by),
        };
        state.changes.insert(field.to_owned(), change);
        Ok(new)
    }

    /// Changes this session's idle TTL, from this response on. The key's TTL never goes
    /// past the absolute lifetime, if one is set.
    ///
    /// # Errors
    ///
    /// A TTL under one second or over 68 years, or a destroyed session.
    pub fn set_ttl(&self, ttl: Duration) -> Result<(), SessionError> {
        if ttl.as_secs() == 0 || ttl.as_secs() > MAX_TTL_SECS {
            return Err(SessionError::InvalidTtl);
        }
        let mut state = self.lock();
        if state.destroy {
            return Err(SessionError::Destroyed);
        }
        state.ttl = Duration::from_secs(ttl.as_secs());
        state.ttl_changed = true;
        state.mark_dirty();
        Ok(())
    }

    /// Moves the session to a new ID when the response goes out: call it at login and on
    /// every privilege change. The old ID stops working, the data and TTL move over, and
    /// the response sets the new cookie.
    ///
    /// Writes that other requests make to the old ID after this request loaded it are not
    /// carried over. Does nothing on a destroyed session, or on a new session (which gets
    /// a fresh ID at its first write anyway).
    pub fn rotate_id(&self) {
        let mut state = self.lock();
        if state.destroy {
            return;
        }
        state.rotate = state.loaded_id.is_some();
        // A new session gets its (fresh) ID at its first write; nothing to rotate before.
        if state.id.is_some() {
            state.id = Some(SessionId::generate());
        }
    }

    /// Ends the session when the response goes out: the key is deleted and the cookie
    /// expired. Later changes in this request are refused with
    /// [`SessionError::Destroyed`].
    pub fn destroy(&self) {
        let mut state = self.lock();
        state.destroy = true;
        state.fields.clear();
        state.changes.clear();
        state.size = 0;
        state.rotate = false;
        state.ttl_changed = false;
        state.tie = None;
    }

    /// `true` once [`destroy`](Self::destroy) was called in this request.
    #[must_use]
    pub fn is_destroyed(&self) -> bool {
        self.lock().destroy
    }

    /// What the middleware must write. Called once, after the handler returned.
    pub(crate) fn plan(&self) -> Plan {
        let mut state = self.lock();
        let state = &mut *state;
        if state.destroy {
            return match state.loaded_id.take() {
                Some(id) => Plan::Destroy {
                    id,
                    user: state.user_id.take(),
                },
                None => Plan::Nothing,
            };
        }
        let dirty = !state.changes.is_empty() || state.ttl_changed || state.tie.is_some();
        let Some(id) = state.id.clone() else {
            return Plan::Nothing;
        };
        let tie = state.tie.take();
        match state.loaded_id.clone() {
            None if dirty => {
                let mut fields: Vec<_> = user_fields(&state.fields).collect();
                fields.extend(tie.clone().map(|user| ("user_id".to_owned(), user)));
                Plan::Create {
                    id,
                    ttl: state.ttl,
                    fields,
                    user: tie,
                }
            }
            None => Plan::Nothing,
            Some(old) if state.rotate => {
                let user = tie.or_else(|| state.user_id.clone());
                let fields = state
                    .carried
                    .iter()
                    .cloned()
                    .chain(user.clone().map(|user| ("user_id".to_owned(), user)))
                    .chain(user_fields(&state.fields))
                    .collect();
                Plan::Rotate {
                    old,
                    new: id,
                    ttl: state.ttl,
                    fields,
                    user,
                    previous: state.user_id.clone(),
                }
            }
            Some(_) if dirty => {
                let mut changes: Vec<_> = std::mem::take(&mut state.changes).into_iter().collect();
                let tie = tie.map(|user| {
                    changes.push(("user_id".to_owned(), Change::Set(user.clone())));
                    Tie {
                        user,
                        previous: state.user_id.clone(),
                    }
                });
                Plan::Save {
                    id,
                    ttl: state.ttl,
                    ttl_changed: state.ttl_changed,
                    changes,
                    tie,
                }
            }
            Some(_) => Plan::Nothing,
        }
    }
}

fn user_fields(fields: &HashMap<String, String>) -> impl Iterator<Item = (String, String)> + '_ {
    fields.iter().map(|(k, v)| (k.clone(), v.clone()))
}

impl State {
    fn new(limits: Limits, ttl: Duration, cookie_expired: bool) -> Self {
        Self {
            limits,
            id: None,
            loaded_id: None,
            fields: HashMap::new(),
            carried: Vec::new(),
            sealed: HashSet::new(),
            size: 0,
            changes: BTreeMap::new(),
            ttl,
            ttl_changed: false,
            created_at: None,
            last_accessed_at: None,
            expires_in: None,
            user_id: None,
            tie: None,
            rotate: false,
            destroy: false,
            cookie_expired,
        }
    }

    /// Checks a change to `field` (setting it to `value`, or removing it) against the
    /// reserved names and the limits, before anything is changed.
    fn check_change(&self, field: &str, value: Option<&str>) -> Result<(), SessionError> {
        if self.destroy {
            return Err(SessionError::Destroyed);
        }
        if field.is_empty() {
            return Err(SessionError::EmptyFieldName);
        }
        if is_reserved(field) {
            return Err(SessionError::ReservedField {
                name: field.to_owned(),
            });
        }
        let Some(value) = value else { return Ok(()) };
        let limits = &self.limits;
        let size = field.len().max(value.len());
        if size > limits.max_value_size {
            return Err(SessionError::ValueTooLarge {
                field: field.to_owned(),
                size,
                limit: limits.max_value_size,
            });
        }
        let old = self.fields.get(field);
        if old.is_none() && self.fields.len() >= limits.max_fields {
            return Err(SessionError::TooManyFields {
                limit: limits.max_fields,
            });
        }
        let new_size =
            self.size - old.map_or(0, |v| field.len() + v.len()) + field.len() + value.len();
        if new_size > limits.max_session_size {
            return Err(SessionError::SessionTooLarge {
                size: new_size,
                limit: limits.max_session_size,
            });
        }
        Ok(())
    }

    /// Sets a field in this request's view (the change itself is recorded by the caller).
    fn put(&mut self, field: &str, value: String) {
        self.size += field.len() + value.len();
        if let Some(old) = self.fields.insert(field.to_owned(), value) {
            self.size -= field.len() + old.len();
        }
        self.mark_dirty();
    }

    /// A first change to a session without an ID gives it one, so [`Session::id`] shows
    /// the ID the response will set.
    fn mark_dirty(&mut self) {
        if self.id.is_none() {
            self.id = Some(SessionId::generate());
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        // Field names only: values may be secrets, and the ID is redacted by its own Debug.
        let mut names: Vec<_> = state.fields.keys().collect();
        names.sort_unstable();
        f.debug_struct("Session")
            .field("id", &state.id)
            .field("loaded", &state.loaded_id.is_some())
            .field("fields", &names)
            .field("ttl", &state.ttl)
            .field("pending_changes", &state.changes.len())
            .field("rotate", &state.rotate)
            .field("destroy", &state.destroy)
            .finish()
    }
}

#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl Session {
    /// Reads a field holding JSON text as a `T`.
    ///
    /// # Errors
    ///
    /// The field holds something that is not the JSON of a `T`.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        field: &str,
    ) -> Result<Option<T>, SessionError> {
        self.get(field)
            .map(|text| {
                serde_json::from_str(&text).map_err(|source| SessionError::Json {
                    field: field.to_owned(),
                    source,
                })
            })
            .transpose()
    }

    /// Stores `value` in a field as JSON text.
    ///
    /// # Errors
    ///
    /// `value` cannot be written as JSON, or the same errors as [`insert`](Self::insert).
    pub fn insert_json<T: serde::Serialize + ?Sized>(
        &self,
        field: &str,
        value: &T,
    ) -> Result<(), SessionError> {
        let text = serde_json::to_string(value).map_err(|source| SessionError::Json {
            field: field.to_owned(),
            source,
        })?;
        self.insert(field, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Session {
        Session::anonymous(
            Limits {
                max_fields: 2,
                max_value_size: 8,
                max_session_size: 15,
            },
            Duration::from_secs(60),
            false,
        )
    }

    #[test]
    fn untouched_new_session_plans_nothing_and_has_no_id() {
        let s = Session::detached();
        assert_eq!(s.id(), None);
        assert!(matches!(s.plan(), Plan::Nothing));
    }

    #[test]
    fn first_write_gives_an_id_and_plans_a_create() {
        let s = Session::detached();
        s.insert("a", "1").unwrap();
        let id = s.id().unwrap();
        match s.plan() {
            Plan::Create {
                id: planned,
                fields,
                ..
            } => {
                assert_eq!(planned, id);
                assert_eq!(fields, vec![("a".to_owned(), "1".to_owned())]);
            }
            other => panic!("unexpected plan {other:?}"),
        }
    }

    #[test]
    fn reserved_and_empty_names_are_refused() {
        let s = Session::detached();
        for name in RESERVED_FIELDS {
            assert!(matches!(
                s.insert(name, "x"),
                Err(SessionError::ReservedField { .. })
            ));
            assert!(s.remove(name).is_err());
            assert!(s.increment(name, 1).is_err());
        }
        assert!(matches!(
            s.insert("", "x"),
            Err(SessionError::EmptyFieldName)
        ));
        assert_eq!(s.id(), None, "a refused change records nothing");
    }

    #[test]
    fn limits_are_enforced_at_the_point_of_change() {
        let s = small();
        assert!(matches!(
            s.insert("a", "123456789"),
            Err(SessionError::ValueTooLarge { limit: 8, .. })
        ));
        s.insert("a", "12345678").unwrap();
        assert!(matches!(
            s.insert("b", "12345678"),
            Err(SessionError::SessionTooLarge { limit: 15, .. })
        ));
        s.insert("b", "1").unwrap();
        assert!(matches!(
            s.insert("c", "1"),
            Err(SessionError::TooManyFields { limit: 2 })
        ));
        // Replacing a value within the limits is fine, and a refused change left no trace.
        s.insert("a", "x").unwrap();
        assert_eq!(
            s.fields(),
            vec![("a".into(), "x".into()), ("b".into(), "1".into())]
        );
    }

    #[test]
    fn increments_merge_into_one_change() {
        let s = Session::detached();
        assert_eq!(s.increment("n", 2).unwrap(), 2);
        assert_eq!(s.increment("n", 3).unwrap(), 5);
        assert_eq!(s.get("n").as_deref(), Some("5"));
        s.insert("m", "10").unwrap();
        assert_eq!(s.increment("m", 1).unwrap(), 11);
        s.insert("x", "abc").unwrap();
        assert!(matches!(
            s.increment("x", 1),
            Err(SessionError::NotAnInteger { .. })
        ));
        s.insert("big", i64::MAX.to_string()).unwrap();
        assert!(s.increment("big", 1).is_err());
    }

    #[test]
    fn loaded_session_plans_field_level_changes() {
        let id = SessionId::generate();
        let s = Session::loaded(
            Limits::default(),
            Duration::from_secs(60),
            id.clone(),
            Loaded {
                fields: vec![
                    ("created_at".into(), "2026-04-02T12:34:56+00:00".into()),
                    ("session_ttl".into(), "90".into()),
                    ("n".into(), "4".into()),
                    ("gone".into(), "x".into()),
                ],
                expires_in: Duration::from_secs(90),
                sealed: HashSet::new(),
            },
        );
        assert_eq!(s.ttl(), Duration::from_secs(90));
        assert!(s.created_at().is_some());
        assert_eq!(s.increment("n", 1).unwrap(), 5);
        assert_eq!(s.remove("gone").unwrap().as_deref(), Some("x"));
        match s.plan() {
            Plan::Save {
                id: planned,
                ttl,
                ttl_changed,
                changes,
                tie: None,
            } => {
                assert_eq!(planned, id);
                assert_eq!((ttl, ttl_changed), (Duration::from_secs(90), false));
                assert_eq!(
                    changes,
                    vec![
                        ("gone".into(), Change::Remove),
                        ("n".into(), Change::Increment(1)),
                    ]
                );
            }
            other => panic!("unexpected plan {other:?}"),
        }
    }

    #[test]
    fn destroy_wins_over_everything_and_refuses_later_changes() {
        let s = Session::loaded(
            Limits::default(),
            Duration::from_secs(60),
            SessionId::generate(),
            Loaded {
                fields: vec![],
                expires_in: Duration::from_secs(60),
                sealed: HashSet::new(),
            },
        );
        s.insert("a", "1").unwrap();
        s.rotate_id();
        s.destroy();
        assert!(matches!(s.insert("b", "1"), Err(SessionError::Destroyed)));
        assert!(matches!(s.plan(), Plan::Destroy { .. }));
    }

    #[test]
    fn ttl_must_be_positive() {
        let s = Session::detached();
        assert!(matches!(
            s.set_ttl(Duration::ZERO),
            Err(SessionError::InvalidTtl)
        ));
        assert!(matches!(
            s.set_ttl(Duration::from_millis(999)),
            Err(SessionError::InvalidTtl)
        ));
        s.set_ttl(Duration::from_secs(5)).unwrap();
        assert!(matches!(s.plan(), Plan::Create { ttl, .. } if ttl == Duration::from_secs(5)));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn typed_values_are_stored_as_json_text() {
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
        struct Cart {
            items: Vec<u32>,
        }
        let s = Session::detached();
        s.insert_json("cart", &Cart { items: vec![1, 2] }).unwrap();
        assert_eq!(s.get("cart").as_deref(), Some(r#"{"items":[1,2]}"#));
        assert_eq!(
            s.get_json::<Cart>("cart").unwrap(),
            Some(Cart { items: vec![1, 2] })
        );
        assert_eq!(s.get_json::<Cart>("missing").unwrap(), None);
        s.insert("cart", "not json").unwrap();
        assert!(matches!(
            s.get_json::<Cart>("cart"),
            Err(SessionError::Json { .. })
        ));
        assert!(
            s.insert_json("created_at", &1).is_err(),
            "reserved names still refused"
        );
    }
}
