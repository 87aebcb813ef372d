//! The `Session` handle that handlers use: synchronous reads of the loaded copy, and a
//! record of changes that the middleware applies on the way out.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, SystemTime},
};

use tokio::sync::OnceCell;

use crate::{
    config::{Config, Limits},
    error::{Error, SessionError},
    exchange::{parse_counter, Change, EndReason, LoadOutcome, Loaded, Outcome, Plan, Tie},
    id::{short_digest, SessionId},
    model::{self, is_reserved, MAX_TTL_SECS},
};

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
///
/// # Lazy mode
///
/// With [`RedisSessionLayerBuilder::lazy_load`](crate::RedisSessionLayerBuilder::lazy_load),
/// a request that carries a session cookie gets a handle whose session is not loaded
/// yet: the load runs when something asks for it, at most once per request however
/// many clones ask. The axum extractor asks for it, so handlers that take a `Session`
/// read and write exactly as in the default mode. Without axum, call
/// [`load`](Self::load) first. Until the load has succeeded:
///
/// - changes that return a `Result` are refused with [`SessionError::NotLoaded`];
/// - everything else (reads, [`rotate_id`](Self::rotate_id), [`destroy`](Self::destroy))
///   acts on nothing, and the layer answers the request with `500 Internal Server
///   Error` instead of the handler's response (and logs why), so a handler that forgot
///   the load can never answer as if a live session were empty;
/// - [`needs_load`](Self::needs_load) says whether the load is still to come.
///
/// A request without a session cookie has nothing to load: its session is ready at
/// once, and writes to it start a new session as in the default mode.
#[derive(Clone)]
pub struct Session(Arc<Inner>);

struct Inner {
    state: Mutex<State>,
    /// The load still to run, for a lazy session whose request carried a cookie.
    lazy: Option<LazyLoad>,
    /// Read or changed (where no `Result` could say so) before its lazy load succeeded.
    used_unloaded: AtomicBool,
    /// A failed lazy load was already answered with the layer's error response (by the
    /// axum extractor's rejection).
    failure_answered: AtomicBool,
}

/// The one-time load of a lazy session.
struct LazyLoad {
    loader: Arc<dyn Loader>,
    id: SessionId,
    /// Its result, once it ran: set once, shared by every clone of the handle.
    done: OnceCell<Result<(), Error>>,
}

/// A lazy session's load, as its [`Loader`] runs it.
pub(crate) type LoadFuture<'a> =
    Pin<Box<dyn Future<Output = Result<LoadOutcome, Error>> + Send + 'a>>;

/// The layer behind a lazy session: it runs the load when the session asks for it, and
/// answers a request whose load failed.
pub(crate) trait Loader: Send + Sync {
    /// Loads the session stored under `id`, as the layer loads one on the way in.
    fn load<'a>(&'a self, id: &'a SessionId) -> LoadFuture<'a>;

    /// The layer's error response to a failed load.
    #[cfg(feature = "axum")]
    fn error_response(&self, err: &Error) -> http::Response<bytes::Bytes>;
}

/// Why the response of a lazy session's request is not the handler's.
#[derive(Debug)]
pub(crate) enum LazyFailure {
    /// The load failed; `answered` if a response for it was already made.
    Load { error: Error, answered: bool },
    /// The session was used before it was loaded.
    Unloaded,
}

/// What a session needs from the layer's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) limits: Limits,
    /// The idle TTL of new sessions.
    pub(crate) idle_ttl: Duration,
    /// Tying the session to a (new) user rotates its ID.
    pub(crate) rotate_on_user_change: bool,
}

impl Settings {
    /// What each request's session needs to know of the layer's configuration.
    pub(crate) fn from_config(config: &Config) -> Self {
        Self {
            limits: config.limits,
            idle_ttl: config.idle_ttl,
            rotate_on_user_change: config.rotate_on_user_change,
        }
    }
}

/// What the request's cookie told about its session, when it brought none to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// No cookie of ours, or one that may not be ours to remove (duplicates).
    Fresh,
    /// A cookie for no usable session (unknown, expired, malformed, unusable,
    /// terminated): dropped from the browser unless the response sets a new one.
    Stale,
    /// A cookie for a session that moved on a moment ago (rotated or destroyed by
    /// another request): the browser may hold a newer cookie already, so the response
    /// never touches it, and a change is refused rather than start a session in its place.
    MovedOn,
}

#[derive(Debug)]
struct State {
    settings: Settings,
    /// The ID the response will carry: the loaded one, or a new one once this request
    /// creates or rotates the session.
    id: Option<SessionId>,
    /// The ID the session was loaded under (`None` for a new session).
    loaded_id: Option<SessionId>,
    arrival: Arrival,
    /// User fields as this request sees them: loaded values with its changes applied.
    fields: HashMap<String, String>,
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
    /// The load renewed the key's TTL: a persistent cookie is worth sending again.
    renewed: bool,
    /// The user the stored session is tied to.
    user_id: Option<String>,
    /// The user this request ties the session to.
    tie: Option<String>,
    /// The session's CSRF token, as this request sees it.
    csrf: Option<String>,
    rotate: bool,
    destroy: bool,
    /// A lazy session whose load has not succeeded (yet): nothing in it is real.
    unloaded: bool,
}

impl Session {
    fn with_state(state: State) -> Self {
        Self::build(state, None)
    }

    fn build(state: State, lazy: Option<LazyLoad>) -> Self {
        Self(Arc::new(Inner {
            state: Mutex::new(state),
            lazy,
            used_unloaded: AtomicBool::new(false),
            failure_answered: AtomicBool::new(false),
        }))
    }

    /// A session that `loader` loads under `id` when something asks for it (lazy mode).
    pub(crate) fn lazy(settings: Settings, loader: Arc<dyn Loader>, id: SessionId) -> Self {
        let state = State {
            unloaded: true,
            ..State::new(settings, Arrival::Fresh)
        };
        let lazy = LazyLoad {
            loader,
            id,
            done: OnceCell::new(),
        };
        Self::build(state, Some(lazy))
    }

    /// The session as a load under `id` found it: the stored session, or an empty one
    /// that remembers what the cookie pointed at.
    pub(crate) fn after_load(settings: Settings, id: SessionId, outcome: LoadOutcome) -> Self {
        Self::with_state(State::after_load(settings, id, outcome))
    }

    /// A session that no stored session stands behind, for a request that brought
    /// none to load, or whose cookie named none.
    pub(crate) fn anonymous(settings: Settings, arrival: Arrival) -> Self {
        Self::with_state(State::new(settings, arrival))
    }

    /// A session that no middleware loaded and none will save, with the default limits:
    /// for unit tests of handlers and for doc examples.
    #[must_use]
    pub fn detached() -> Self {
        Self::anonymous(
            Settings {
                limits: Limits::default(),
                idle_ttl: crate::config::DEFAULT_IDLE_TTL,
                rotate_on_user_change: true,
            },
            Arrival::Fresh,
        )
    }

    /// A session loaded from Redis under `id`.
    #[cfg(test)]
    pub(crate) fn loaded(settings: Settings, id: SessionId, loaded: Loaded) -> Self {
        Self::with_state(State::loaded(settings, id, loaded))
    }

    /// Loads the session now, if it is a lazy one that is not loaded yet; otherwise (the
    /// default mode, a request without a session cookie, or a second call) returns at
    /// once. The load runs at most once per request, whichever clone of the handle asks,
    /// concurrently or not; every caller gets its result.
    ///
    /// It costs the round trip the default mode pays on the way in: it reads the session
    /// and refreshes its sliding expiry. The axum extractor calls it; without axum, call
    /// it before using the session:
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use http::{Request, Response};
    /// use tower_redis_session::Session;
    ///
    /// async fn handle(req: Request<String>) -> Result<Response<String>, Infallible> {
    ///     let session = req.extensions().get::<Session>().expect("behind RedisSessionLayer");
    ///     if session.load().await.is_err() {
    ///         // The layer answers with its error response (503 by default) anyway.
    ///         return Ok(Response::new(String::new()));
    ///     }
    ///     let name = session.get("username").unwrap_or_else(|| "stranger".into());
    ///     Ok(Response::new(format!("hello, {name}")))
    /// }
    /// # let mut req = Request::new(String::new());
    /// # req.extensions_mut().insert(Session::detached());
    /// # let res = tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(handle(req)).unwrap();
    /// # assert_eq!(res.body(), "hello, stranger");
    /// ```
    ///
    /// # Errors
    ///
    /// The store failed (timeout, unreachable, unexpected reply). The request is then
    /// answered with the layer's error response (`503` by default, or
    /// [`error_response`](crate::RedisSessionLayerBuilder::error_response)'s), whatever
    /// the handler returns, exactly as when a load on the way in fails in the default
    /// mode; later calls return the same error without trying again.
    pub async fn load(&self) -> Result<(), Error> {
        let Some(lazy) = &self.0.lazy else {
            return Ok(());
        };
        lazy.done
            .get_or_init(|| async {
                let outcome = lazy.loader.load(&lazy.id).await?;
                let settings = self.lock().settings;
                let state = State::after_load(settings, lazy.id.clone(), outcome);
                *self.lock() = state;
                Ok(())
            })
            .await
            .clone()
    }

    /// Whether another clone of this handle exists (in a response body, a task).
    pub(crate) fn is_shared(&self) -> bool {
        Arc::strong_count(&self.0) > 1
    }

    /// `true` for a lazy session whose load has not succeeded yet: call
    /// [`load`](Self::load) before using it. `false` in the default mode, for a request
    /// without a session cookie, and once loaded.
    #[must_use]
    pub fn needs_load(&self) -> bool {
        self.lock().unloaded
    }

    /// Why the response must not be the handler's, if the session is a lazy one that
    /// failed to load or was used before its load.
    pub(crate) fn lazy_failure(&self) -> Option<LazyFailure> {
        let lazy = self.0.lazy.as_ref()?;
        if let Some(Err(error)) = lazy.done.get() {
            return Some(LazyFailure::Load {
                error: error.clone(),
                answered: self.0.failure_answered.load(Ordering::Relaxed),
            });
        }
        self.0
            .used_unloaded
            .load(Ordering::Relaxed)
            .then_some(LazyFailure::Unloaded)
    }

    /// The layer's error response for a failed load was made (by the extractor).
    #[cfg(feature = "axum")]
    pub(crate) fn failure_answered(&self) {
        self.0.failure_answered.store(true, Ordering::Relaxed);
    }

    /// The layer behind this lazy session.
    #[cfg(feature = "axum")]
    pub(crate) fn loader(&self) -> Option<&dyn Loader> {
        self.0.lazy.as_ref().map(|lazy| &*lazy.loader)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, but a poisoned lock still holds a
        // consistent state: every change is made after all its checks pass.
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state, to read (or change where no `Result` can refuse): a lazy session that
    /// is not loaded yet is marked as used too early.
    fn read(&self) -> MutexGuard<'_, State> {
        let state = self.lock();
        if state.unloaded {
            self.0.used_unloaded.store(true, Ordering::Relaxed);
        }
        state
    }

    /// The state, to change: refused for a lazy session that is not loaded yet.
    fn write(&self) -> Result<MutexGuard<'_, State>, SessionError> {
        let state = self.lock();
        if state.unloaded {
            return Err(SessionError::NotLoaded);
        }
        Ok(state)
    }

    /// The value of a user field, as this request sees it.
    #[must_use]
    pub fn get(&self, field: &str) -> Option<String> {
        self.read().fields.get(field).cloned()
    }

    /// All user fields, sorted by name.
    #[must_use]
    pub fn fields(&self) -> Vec<(String, String)> {
        let mut fields: Vec<_> = self
            .read()
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
        self.read().fields.len()
    }

    /// `true` if the session has no user fields.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.read().fields.is_empty()
    }

    /// The session's ID: the one the request carried, or the new one this response will
    /// set after a first write or [`rotate_id`](Self::rotate_id). `None` for a request
    /// without a session that has written nothing.
    #[must_use]
    pub fn id(&self) -> Option<SessionId> {
        self.read().id.clone()
    }

    /// `true` if the session was loaded from Redis (the request carried a live session).
    #[must_use]
    pub fn is_loaded(&self) -> bool {
        self.read().loaded_id.is_some()
    }

    /// `true` if the request carried a well-formed session cookie whose session no longer
    /// exists: it expired, was destroyed, terminated, or rotated away. Useful for "your
    /// session expired" messages.
    #[must_use]
    pub fn cookie_expired(&self) -> bool {
        self.read().arrival != Arrival::Fresh
    }

    /// When the session was created, by Redis's clock (`None` until it is stored).
    #[must_use]
    pub fn created_at(&self) -> Option<SystemTime> {
        self.read().created_at
    }

    /// When a request last loaded the session before this one, by Redis's clock (`None`
    /// for a new session). With a touch interval set, loads closer together than the
    /// interval do not update it.
    #[must_use]
    pub fn last_accessed_at(&self) -> Option<SystemTime> {
        self.read().last_accessed_at
    }

    /// The session's idle TTL: how long it lives without a request.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.read().ttl
    }

    /// How long the key had left in Redis right after this request loaded it: the idle
    /// TTL, or less when the absolute lifetime ends sooner. `None` for a new session.
    #[must_use]
    pub fn expires_in(&self) -> Option<Duration> {
        self.read().expires_in
    }

    /// The user this session is tied to, if any (see [`set_user_id`](Self::set_user_id)).
    #[must_use]
    pub fn user_id(&self) -> Option<String> {
        let state = self.read();
        state.tie.clone().or_else(|| state.user_id.clone())
    }

    /// Ties the session to a user, typically at login, so that
    /// [`SessionManager`](crate::SessionManager) can list and end the user's sessions.
    ///
    /// Tying is a login or a change of identity, so by default it also rotates the ID
    /// ([`rotate_id`](Self::rotate_id)): an app that forgets to rotate at login cannot
    /// be fixated. Turn that off with
    /// [`RedisSessionLayerBuilder::rotate_on_user_change`](crate::RedisSessionLayerBuilder::rotate_on_user_change).
    ///
    /// Every call (re)adds the session to the user's index, first, and ties it second, so
    /// a crash in between never leaves a tied session the index does not know, and an
    /// index entry lost for any reason comes back with the next tie.
    ///
    /// # Errors
    ///
    /// An empty user id, one longer than 256 bytes, a destroyed session, or a lazy
    /// session not loaded yet.
    pub fn set_user_id(&self, user_id: impl Into<String>) -> Result<(), SessionError> {
        let user_id = user_id.into();
        let mut state = self.write()?;
        if state.destroy {
            return Err(SessionError::Destroyed);
        }
        if user_id.is_empty() || user_id.len() > model::MAX_USER_ID_LEN {
            return Err(SessionError::InvalidUserId);
        }
        state.tie = Some(user_id);
        state.mark_dirty();
        if state.settings.rotate_on_user_change {
            state.rotate();
        }
        Ok(())
    }

    /// Sets a user field.
    ///
    /// # Errors
    ///
    /// A reserved or empty field name, a change beyond the session limits, or a lazy
    /// session not loaded yet ([`SessionError::NotLoaded`]).
    pub fn insert(&self, field: &str, value: impl Into<String>) -> Result<(), SessionError> {
        let value = value.into();
        let mut state = self.write()?;
        state.check_change(field, Some(&value))?;
        state.put(field, value.clone());
        state.changes.insert(field.to_owned(), Change::Set(value));
        Ok(())
    }

    /// Removes a user field, returning its value as this request saw it. Removing a
    /// field from a new session that does not have it is no change (it creates nothing).
    ///
    /// # Errors
    ///
    /// A reserved or empty field name, or a lazy session not loaded yet.
    pub fn remove(&self, field: &str) -> Result<Option<String>, SessionError> {
        let mut state = self.write()?;
        state.check_change(field, None)?;
        if state.loaded_id.is_none() && !state.fields.contains_key(field) {
            state.changes.remove(field);
            return Ok(None);
        }
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
    /// a change beyond the session limits, or a lazy session not loaded yet.
    pub fn increment(&self, field: &str, by: i64) -> Result<i64, SessionError> {
        let mut state = self.write()?;
        let not_an_integer = || SessionError::NotAnInteger {
            field: field.to_owned(),
        };
        let current = match state.fields.get(field) {
            Some(v) => parse_counter(v).ok_or_else(not_an_integer)?,
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
    /// A TTL under one second or over 68 years, a destroyed session, or a lazy session
    /// not loaded yet.
    pub fn set_ttl(&self, ttl: Duration) -> Result<(), SessionError> {
        if ttl.as_secs() == 0 || ttl.as_secs() > MAX_TTL_SECS {
            return Err(SessionError::InvalidTtl);
        }
        let mut state = self.write()?;
        if state.destroy {
            return Err(SessionError::Destroyed);
        }
        state.ttl = Duration::from_secs(ttl.as_secs());
        state.ttl_changed = true;
        state.mark_dirty();
        Ok(())
    }

    /// Moves the session to a new ID when the response goes out: at login (which
    /// [`set_user_id`](Self::set_user_id) does by default) and on every privilege
    /// change. The old ID stops working, the data and TTL move over, and the response
    /// sets the new cookie. The absolute lifetime moves over unchanged.
    ///
    /// The session is copied as it is in Redis when the response goes out, with this
    /// request's changes applied, so changes other requests made meanwhile are kept; one
    /// that would land on the old ID during the move is refused (`409 Conflict`) instead
    /// of lost. Does nothing on a destroyed session, or on a new session (which gets a
    /// fresh ID at its first write anyway).
    ///
    /// On a lazy session that is not loaded yet it does nothing, and the response is a
    /// `500` (see [lazy mode](Self#lazy-mode)).
    pub fn rotate_id(&self) {
        let mut state = self.read();
        if !state.destroy && !state.unloaded {
            state.rotate();
        }
    }

    /// Ends the session when the response goes out: the key is deleted and the cookie
    /// expired. Later changes in this request are refused with
    /// [`SessionError::Destroyed`].
    ///
    /// On a lazy session that is not loaded yet it does nothing, and the response is a
    /// `500` (see [lazy mode](Self#lazy-mode)): a logout is never silently skipped.
    pub fn destroy(&self) {
        let mut state = self.read();
        if state.unloaded {
            return;
        }
        state.destroy = true;
        state.fields.clear();
        state.changes.clear();
        state.size = 0;
        state.rotate = false;
        state.ttl_changed = false;
        state.tie = None;
        state.csrf = None;
    }

    /// The session's CSRF token, for a hidden field of every form (or a header of every
    /// script request) that changes something: made with the session (for a request
    /// without one, on first use: a write, so a new session is then stored), kept with
    /// it, and replaced at every rotation. Check what comes back with
    /// [`verify_csrf_token`](Self::verify_csrf_token).
    ///
    /// A stored session without a token (written by another program) gets one on first
    /// use; two requests doing that at once each make their own, and the later save wins,
    /// so the form of the other page is refused once.
    ///
    /// `SameSite=Lax` (the default) already stops cross-site form posts; a token is still
    /// needed for state-changing `GET`s, for sibling hosts of the same site, for
    /// `SameSite=None` cookies, and against login CSRF (give the login form a token of
    /// the anonymous session it is served in).
    ///
    /// ```
    /// # let session = tower_redis_session::Session::detached();
    /// let token = session.csrf_token()?;
    /// assert!(session.verify_csrf_token(&token));
    /// assert!(!session.verify_csrf_token("forged"));
    /// # Ok::<(), tower_redis_session::SessionError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A destroyed session, or a lazy session not loaded yet.
    pub fn csrf_token(&self) -> Result<String, SessionError> {
        let mut state = self.write()?;
        if state.destroy {
            return Err(SessionError::Destroyed);
        }
        if let Some(token) = &state.csrf {
            return Ok(token.clone());
        }
        Ok(state.new_csrf_token())
    }

    /// `true` if `token` is this session's CSRF token, compared in constant time. `false`
    /// for a session without one (no form was ever made for it).
    #[must_use]
    pub fn verify_csrf_token(&self, token: &str) -> bool {
        let state = self.read();
        let Some(expected) = state.csrf.as_deref() else {
            return false;
        };
        let (a, b) = (expected.as_bytes(), token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// `true` once [`destroy`](Self::destroy) was called in this request.
    #[must_use]
    pub fn is_destroyed(&self) -> bool {
        self.read().destroy
    }

    /// What the middleware must write, and what the response does when nothing is to be
    /// written. Called once, after the handler returned.
    pub(crate) fn plan(&self) -> Plan {
        let mut state = self.lock();
        let state = &mut *state;
        if state.unloaded {
            // A lazy session nobody loaded: nothing read, nothing to write, and the
            // cookie and the key's TTL are left as they were.
            return Plan::Nothing(Outcome::Keep);
        }
        let untouched = match state.arrival {
            Arrival::Stale => Outcome::Clear,
            Arrival::Fresh | Arrival::MovedOn => Outcome::Keep,
        };
        if state.destroy {
            return match state.loaded_id.take() {
                Some(id) => Plan::Destroy {
                    id,
                    user: state.user_id.take(),
                },
                // A logout with an ID that moved on: the session may live on under its
                // new ID, so this logout did not happen.
                None if state.arrival == Arrival::MovedOn => Plan::Nothing(Outcome::Refused),
                None => Plan::Nothing(untouched),
            };
        }
        let dirty = !state.changes.is_empty() || state.ttl_changed || state.tie.is_some();
        let Some(id) = state.id.clone() else {
            return Plan::Nothing(untouched);
        };
        let ttl = state.ttl_changed.then_some(state.ttl);
        let tie = state.tie.take();
        let changes = std::mem::take(&mut state.changes);
        match state.loaded_id.clone() {
            None if !dirty => Plan::Nothing(untouched),
            // The browser may hold a newer cookie than the one this request carried: a
            // session started here would replace it.
            None if state.arrival == Arrival::MovedOn => Plan::Nothing(Outcome::Refused),
            None => {
                let mut fields: Vec<_> = state
                    .fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                fields.extend(tie.clone().map(|user| (model::USER_ID.to_owned(), user)));
                fields.extend(
                    (state.csrf.clone()).map(|token| (model::CSRF_TOKEN.to_owned(), token)),
                );
                let counters = changes
                    .into_iter()
                    .filter(|(_, change)| change.is_counter())
                    .map(|(field, _)| field)
                    .collect();
                Plan::Create {
                    id,
                    ttl: state.ttl,
                    fields,
                    counters,
                    user: tie,
                }
            }
            Some(old) if state.rotate => Plan::Rotate {
                old,
                new: id,
                ttl,
                changes: changes.into_iter().collect(),
                tie,
            },
            Some(_) if dirty => {
                let mut changes: Vec<_> = changes.into_iter().collect();
                let tie = tie.map(|user| {
                    changes.push((model::USER_ID.to_owned(), Change::Set(user.clone())));
                    Tie {
                        user,
                        previous: state.user_id.clone(),
                    }
                });
                Plan::Save {
                    id,
                    ttl,
                    changes,
                    tie,
                }
            }
            Some(_) if state.renewed => Plan::Refresh(id),
            Some(_) => Plan::Nothing(Outcome::Keep),
        }
    }
}

impl State {
    /// A session loaded from Redis under `id`.
    fn loaded(settings: Settings, id: SessionId, loaded: Loaded) -> Self {
        let mut state = Self {
            id: Some(id.clone()),
            loaded_id: Some(id),
            expires_in: loaded.expires_in,
            renewed: loaded.renewed,
            sealed: loaded.sealed,
            ..Self::new(settings, Arrival::Fresh)
        };
        for (name, value) in loaded.fields {
            match name.as_str() {
                model::SESSION_TTL => {
                    if let Some(ttl) = model::parse_idle(&value) {
                        state.ttl = ttl;
                    }
                }
                model::LAST_ACCESSED_AT => {
                    state.last_accessed_at = crate::time::parse_rfc3339(&value);
                }
                model::CREATED_AT => state.created_at = crate::time::parse_rfc3339(&value),
                model::USER_ID => state.user_id = Some(value),
                // Not of the shape the layer makes (an empty one, say): no token, so
                // nothing verifies against it, and the first use makes one.
                model::CSRF_TOKEN if crate::id::is_random_text(&value) => state.csrf = Some(value),
                _ if is_reserved(&name) => {}
                _ => {
                    state.size += name.len() + value.len();
                    state.fields.insert(name, value);
                }
            }
        }
        state
    }

    /// The session as a load under `id` found it: the stored session, or an empty one
    /// that remembers what the cookie pointed at (and logs what the cookie pointed at).
    fn after_load(settings: Settings, id: SessionId, outcome: LoadOutcome) -> Self {
        match outcome {
            LoadOutcome::Found(loaded) => Self::loaded(settings, id, loaded),
            LoadOutcome::Missing => {
                crate::cookie::suspicious("session cookie for an unknown or expired session");
                Self::new(settings, Arrival::Stale)
            }
            LoadOutcome::Ended(EndReason::Terminated) => {
                tracing::debug!("session cookie for a terminated session");
                Self::new(settings, Arrival::Stale)
            }
            LoadOutcome::Ended(reason) => {
                tracing::debug!(
                    ?reason,
                    "session cookie for a session that moved on; the cookie is left alone"
                );
                Self::new(settings, Arrival::MovedOn)
            }
            LoadOutcome::Unusable => {
                tracing::warn!(
                    session = %short_digest(&id),
                    "session key holds no usable session (wrong type, fields or size); treated as none"
                );
                Self::new(settings, Arrival::Stale)
            }
        }
    }

    fn new(settings: Settings, arrival: Arrival) -> Self {
        Self {
            settings,
            id: None,
            loaded_id: None,
            arrival,
            fields: HashMap::new(),
            sealed: HashSet::new(),
            size: 0,
            changes: BTreeMap::new(),
            ttl: settings.idle_ttl,
            ttl_changed: false,
            created_at: None,
            last_accessed_at: None,
            expires_in: None,
            renewed: false,
            user_id: None,
            tie: None,
            csrf: None,
            rotate: false,
            destroy: false,
            unloaded: false,
        }
    }

    /// Gives the session a new ID at write-back, if it has a stored one to move, and a
    /// new CSRF token: a page made for the old ID is then refused, whatever token the
    /// copy finds (another request may have made one meanwhile).
    fn rotate(&mut self) {
        self.rotate = self.loaded_id.is_some();
        // A new session gets its (fresh) ID at its first write; nothing to rotate before.
        if self.rotate {
            self.id = Some(SessionId::generate());
            self.new_csrf_token();
        }
    }

    /// A fresh CSRF token (as unguessable as an ID), recorded as a change.
    fn new_csrf_token(&mut self) -> String {
        let token = crate::id::random_text();
        self.csrf = Some(token.clone());
        self.changes
            .insert(model::CSRF_TOKEN.to_owned(), Change::Set(token.clone()));
        self.mark_dirty();
        token
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
        let limits = &self.settings.limits;
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
            .field("needs_load", &state.unloaded)
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

    fn settings() -> Settings {
        Settings {
            limits: Limits::default(),
            idle_ttl: Duration::from_secs(60),
            rotate_on_user_change: true,
        }
    }

    fn small() -> Session {
        Session::anonymous(
            Settings {
                limits: Limits {
                    max_fields: 2,
                    max_value_size: 8,
                    max_session_size: 15,
                },
                ..settings()
            },
            Arrival::Fresh,
        )
    }

    fn loaded(fields: &[(&str, &str)]) -> Session {
        Session::loaded(
            settings(),
            SessionId::generate(),
            Loaded {
                fields: fields
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                expires_in: Some(Duration::from_secs(60)),
                renewed: true,
                sealed: HashSet::new(),
            },
        )
    }

    #[test]
    fn untouched_new_session_plans_nothing_and_has_no_id() {
        let s = Session::detached();
        assert_eq!(s.id(), None);
        assert!(matches!(s.plan(), Plan::Nothing(Outcome::Keep)));
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
        for name in model::RESERVED_FIELDS {
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
        let s = loaded(&[
            ("created_at", "2026-04-02T12:34:56+00:00"),
            ("session_ttl", "90"),
            ("n", "4"),
            ("gone", "x"),
        ]);
        let id = s.id().unwrap();
        assert_eq!(s.ttl(), Duration::from_secs(90));
        assert!(s.created_at().is_some());
        assert_eq!(s.increment("n", 1).unwrap(), 5);
        assert_eq!(s.remove("gone").unwrap().as_deref(), Some("x"));
        match s.plan() {
            Plan::Save {
                id: planned,
                ttl,
                changes,
                tie: None,
            } => {
                assert_eq!(planned, id);
                assert_eq!(ttl, None);
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
        let s = loaded(&[]);
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

    #[test]
    fn removing_a_missing_field_from_a_new_session_is_no_change() {
        let s = Session::detached();
        assert_eq!(s.remove("user").unwrap(), None);
        assert_eq!(s.id(), None);
        assert!(matches!(s.plan(), Plan::Nothing(Outcome::Keep)));
    }

    #[test]
    fn tying_a_user_rotates_and_indexes_every_time() {
        let s = loaded(&[("user_id", "alice")]);
        let old = s.id().unwrap();
        s.set_user_id("alice").unwrap();
        assert_ne!(s.id().unwrap(), old, "tying rotates the ID");
        match s.plan() {
            Plan::Rotate { tie, .. } => assert_eq!(tie.as_deref(), Some("alice")),
            other => panic!("unexpected plan {other:?}"),
        }
        assert!(matches!(
            s.set_user_id("x".repeat(257)),
            Err(SessionError::InvalidUserId)
        ));
    }

    #[test]
    fn a_new_session_stores_its_csrf_token() {
        let s = Session::detached();
        let token = s.csrf_token().unwrap();
        match s.plan() {
            Plan::Create { fields, .. } => {
                assert!(fields.contains(&("csrf_token".to_owned(), token)));
            }
            other => panic!("unexpected plan {other:?}"),
        }
    }

    #[test]
    fn the_csrf_token_is_kept_and_replaced_at_rotation() {
        let old = crate::id::random_text();
        let old = old.as_str();
        let s = loaded(&[("csrf_token", old)]);
        assert_eq!(s.csrf_token().unwrap(), old);
        assert!(s.verify_csrf_token(old));
        assert!(
            matches!(s.plan(), Plan::Nothing(_) | Plan::Refresh(_)),
            "reading it is no change"
        );
        let s = loaded(&[("csrf_token", old)]);
        s.rotate_id();
        let new = s.csrf_token().unwrap();
        assert_ne!(new, old);
        assert!(!s.verify_csrf_token(old));
        match s.plan() {
            Plan::Rotate { changes, .. } => {
                assert!(changes.contains(&("csrf_token".to_owned(), Change::Set(new))));
            }
            other => panic!("unexpected plan {other:?}"),
        }
        // A session without a token gets one at rotation too: the new ID never keeps a
        // token that the copy finds.
        let s = loaded(&[]);
        s.rotate_id();
        match s.plan() {
            Plan::Rotate { changes, .. } => {
                assert!(changes.iter().any(|(name, _)| name == "csrf_token"));
            }
            other => panic!("unexpected plan {other:?}"),
        }
    }

    #[test]
    fn a_stored_csrf_token_of_another_shape_is_no_token() {
        for stored in ["", "short", &"x".repeat(44)] {
            let s = loaded(&[("csrf_token", stored)]);
            assert!(!s.verify_csrf_token(stored), "{stored:?} verifies");
            assert!(!s.verify_csrf_token(""));
            let made = s.csrf_token().unwrap();
            assert!(crate::id::is_random_text(&made), "{made:?}");
        }
    }

    #[test]
    fn a_session_that_moved_on_refuses_changes_and_keeps_the_cookie() {
        let s = Session::anonymous(settings(), Arrival::MovedOn);
        assert!(s.cookie_expired());
        assert!(matches!(s.plan(), Plan::Nothing(Outcome::Keep)));
        let s = Session::anonymous(settings(), Arrival::MovedOn);
        s.insert("a", "1").unwrap();
        assert!(matches!(s.plan(), Plan::Nothing(Outcome::Refused)));
        let s = Session::anonymous(settings(), Arrival::Stale);
        assert!(matches!(s.plan(), Plan::Nothing(Outcome::Clear)));
    }

    /// A lazy session whose load never runs here.
    fn unloaded() -> Session {
        struct NeverLoads;
        impl Loader for NeverLoads {
            fn load<'a>(&'a self, _: &'a SessionId) -> LoadFuture<'a> {
                unreachable!("these tests never load")
            }

            #[cfg(feature = "axum")]
            fn error_response(&self, _: &Error) -> http::Response<bytes::Bytes> {
                unreachable!("these tests never load")
            }
        }
        Session::lazy(settings(), Arc::new(NeverLoads), SessionId::generate())
    }

    #[test]
    fn an_unloaded_lazy_session_refuses_changes_and_plans_nothing() {
        let s = unloaded();
        assert!(s.needs_load());
        assert!(matches!(s.insert("a", "1"), Err(SessionError::NotLoaded)));
        assert!(matches!(s.remove("a"), Err(SessionError::NotLoaded)));
        assert!(matches!(s.increment("n", 1), Err(SessionError::NotLoaded)));
        assert!(matches!(
            s.set_ttl(Duration::from_secs(60)),
            Err(SessionError::NotLoaded)
        ));
        assert!(matches!(
            s.set_user_id("alice"),
            Err(SessionError::NotLoaded)
        ));
        assert!(matches!(s.csrf_token(), Err(SessionError::NotLoaded)));
        assert!(s.lazy_failure().is_none(), "a refused change is no misuse");
        assert!(matches!(s.plan(), Plan::Nothing(Outcome::Keep)));
    }

    #[test]
    fn reading_or_ending_an_unloaded_lazy_session_is_reported() {
        type Use = fn(&Session);
        let uses: [(&str, Use); 5] = [
            ("get", |s| drop(s.get("a"))),
            ("id", |s| drop(s.id())),
            ("is_loaded", |s| {
                let _ = s.is_loaded();
            }),
            ("rotate_id", Session::rotate_id),
            ("destroy", Session::destroy),
        ];
        for (name, use_it) in uses {
            let s = unloaded();
            let clone = s.clone();
            use_it(&clone);
            assert!(
                matches!(s.lazy_failure(), Some(LazyFailure::Unloaded)),
                "{name}"
            );
            assert!(!s.is_destroyed(), "{name}: nothing was ended");
            assert!(matches!(s.plan(), Plan::Nothing(Outcome::Keep)), "{name}");
        }
        // Debug is no use of the session.
        let s = unloaded();
        let _ = format!("{s:?}");
        assert!(s.lazy_failure().is_none());
    }

    #[test]
    fn sessions_outside_lazy_mode_need_no_load() {
        let s = Session::detached();
        assert!(!s.needs_load());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(runtime.block_on(s.load()).is_ok());
        s.insert("a", "1").unwrap();
        assert!(s.lazy_failure().is_none());
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
