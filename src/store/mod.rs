//! The Redis side, and the only module that speaks to Redis: keys, the scripts, one
//! typed call per step of a request ([`Store::load`], [`Store::write_back`]), and the
//! user index ([`index`]).
//!
//! Where a step spans two keys (a session and its user's index, or the old and new keys
//! of a rotation), every script still touches one key (so all of it works on Redis
//! Cluster), and the order is chosen so that a crash in between leaves at worst an entry
//! or key that is pruned or expires: never a lost session, a lost acknowledged change,
//! or a tied session its user's index does not know.

pub(crate) mod cache;
pub(crate) mod index;
pub(crate) mod scripts;
#[cfg(test)]
mod tests;
mod tracking;

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    time::Duration,
};

use fred::types::Value;

use crate::{
    client::Redis,
    config::{Config, ScriptMode},
    error::{Error, ErrorKind},
    exchange::{Change, EndReason, LoadOutcome, Loaded, Outcome, Plan},
    id::{short_digest, SessionId},
    model,
};

/// Drops a key's cached copies when a write to it is answered, fails or is cancelled.
struct InvalidateOnDrop<'a>(&'a [u8]);

impl Drop for InvalidateOnDrop<'_> {
    fn drop(&mut self) {
        cache::invalidate_everywhere(self.0);
    }
}

/// Slack for internal fields in the scripts' size checks.
const INTERNAL_FIELDS: usize = 16;
const INTERNAL_BYTES: usize = 1024;
/// The widest a counter gets (`-9223372036854775808`): the load allows every field of a
/// session at its limits to grow by this much, since a save that only increments existing
/// counters is not checked against what is stored (see `save.lua`).
const COUNTER_DIGITS: usize = 20;

/// Keys, limits and timeouts, shared by every request of one layer.
#[derive(Debug)]
pub(crate) struct Store {
    redis: Redis,
    key_prefix: String,
    plain_keys: bool,
    timeout: Duration,
    script_mode: ScriptMode,
    /// The load script's ARGV, the same for every load of this layer (the touch
    /// interval, the most fields and bytes a stored session may have, and the absolute
    /// lifetime in ms, 0 for none): written out once (a clone only bumps reference
    /// counts) rather than formatted on each request.
    load_args: Vec<Value>,
    /// The layer's absolute lifetime in ms (0: none), written out once, for the other
    /// scripts.
    lifetime_arg: Value,
    /// The layer's size limits, which a rotation checks its copy against.
    limits: crate::config::Limits,
    /// The most user fields, and bytes of them, that a save that grows a session may
    /// leave in its hash, and whether its values are encrypted at rest (ARGV[3] to
    /// ARGV[5] of `save`), written out once.
    save_limits: [Value; 3],
    /// The read cache (its tracking task is started by the first load, from within the
    /// runtime, and again by a load after it ended with its runtime).
    cache: Option<std::sync::Arc<cache::Cache>>,
    #[cfg(feature = "encryption")]
    crypto: Option<(
        std::sync::Arc<crate::crypto::KeyRing>,
        crate::crypto::DecryptFailure,
    )>,
}

/// User fields as stored, opened: decrypted where they were encrypted.
pub(crate) struct Opened {
    pub(crate) fields: Vec<(String, String)>,
    /// Fields that were stored encrypted, or failed to open and were dropped: targets an
    /// increment must overwrite rather than `HINCRBY`.
    pub(crate) sealed: HashSet<String>,
}

fn text(s: impl Into<String>) -> Value {
    Value::String(s.into().into())
}

fn int(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// `n` as the decimal text Redis receives for an integer argument.
fn decimal(n: u64) -> Value {
    text(i64::try_from(n).unwrap_or(i64::MAX).to_string())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A TTL in ms from a script's reply; `None` if Redis did not know it (`-1`, `-2`).
fn ttl_of(value: Option<&Value>) -> Option<Duration> {
    value
        .and_then(Value::as_i64)
        .and_then(|ms| u64::try_from(ms).ok())
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
}

impl Store {
    pub(crate) fn new(redis: Redis, config: &Config) -> Self {
        let limits = &config.limits;
        // Encrypted values take up to 4/3 of their size plus a nonce, tag and header.
        // The user fields' bytes as stored: encrypted values take up to 4/3 of their
        // size plus a nonce, tag and header.
        #[cfg(feature = "encryption")]
        let user_bytes = if config.encryption.is_some() {
            limits.max_session_size / 3 * 4 + limits.max_fields * 96
        } else {
            limits.max_session_size
        };
        #[cfg(not(feature = "encryption"))]
        let user_bytes = limits.max_session_size;
        #[cfg(feature = "encryption")]
        let encrypts = config.encryption.is_some();
        #[cfg(not(feature = "encryption"))]
        let encrypts = false;
        let load_max_fields = limits.max_fields + INTERNAL_FIELDS;
        let load_max_bytes = user_bytes + INTERNAL_BYTES + load_max_fields * COUNTER_DIGITS;
        let lifetime_ms = config.absolute_lifetime.map_or(0, millis);
        let touch_interval = config.touch_interval.map_or(0, |d| d.as_secs());
        Self {
            redis,
            key_prefix: config.key_prefix.clone(),
            plain_keys: config.plain_keys,
            timeout: config.command_timeout,
            script_mode: config.script_mode,
            load_args: vec![
                decimal(touch_interval),
                decimal(load_max_fields as u64),
                decimal(load_max_bytes as u64),
                decimal(lifetime_ms),
            ],
            lifetime_arg: decimal(lifetime_ms),
            save_limits: [
                decimal(limits.max_fields as u64),
                decimal(limits.max_session_size as u64),
                text(if encrypts { "1" } else { "0" }),
            ],
            limits: *limits,
            cache: config.read_cache.map(|settings| {
                let cache = std::sync::Arc::new(cache::Cache::new(settings));
                cache::register(&cache);
                cache
            }),
            #[cfg(feature = "encryption")]
            crypto: config
                .encryption
                .clone()
                .map(|ring| (ring, config.decrypt_failure)),
        }
    }

    pub(crate) fn redis(&self) -> &Redis {
        &self.redis
    }

    pub(crate) fn cache_stats(&self) -> Option<cache::CacheStats> {
        self.cache.as_ref().map(|cache| cache.stats())
    }

    /// The read cache, its tracking task started.
    fn cache(&self) -> Option<&cache::Cache> {
        let cache = self.cache.as_ref()?;
        if cache.claim_tracking() {
            tracking::spawn(cache, &self.redis, &self.key_prefix);
        }
        Some(cache)
    }

    /// What follows the prefix in a session's key: the ID's SHA-256 digest, or the ID
    /// itself with `plain_keys`. Also the session's entry in its user's index.
    pub(crate) fn member<'a>(&self, id: &'a SessionId) -> &'a str {
        if self.plain_keys {
            id.as_str()
        } else {
            id.digest()
        }
    }

    /// The Redis key of a session.
    pub(crate) fn key(&self, id: &SessionId) -> String {
        self.key_of(self.member(id))
    }

    pub(crate) fn key_of(&self, member: &str) -> String {
        let mut key = String::with_capacity(self.key_prefix.len() + member.len());
        key.push_str(&self.key_prefix);
        key.push_str(member);
        key
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.key_prefix
    }

    /// A user field's value as it goes into Redis: encrypted when encryption is on.
    /// Internal fields and counters (see [`Change::Counter`]) stay plaintext.
    fn seal(&self, member: &str, field: &str, value: &str) -> Value {
        #[cfg(feature = "encryption")]
        if let Some((ring, _)) = &self.crypto {
            if !model::is_reserved(field) {
                return text(ring.encrypt(member, field, value));
            }
        }
        let _ = (member, field);
        text(value)
    }

    /// Opens the user fields of a stored session. `None` if a value failed to decrypt and
    /// the policy rejects the whole session.
    pub(crate) fn open(&self, member: &str, fields: Vec<(String, String)>) -> Option<Opened> {
        #[cfg(feature = "encryption")]
        if let Some((ring, policy)) = &self.crypto {
            use crate::crypto::Opened as O;
            let mut opened = Opened {
                fields: Vec::with_capacity(fields.len()),
                sealed: HashSet::new(),
            };
            for (name, value) in fields {
                if model::is_reserved(&name) {
                    opened.fields.push((name, value));
                    continue;
                }
                match ring.open(member, &name, &value) {
                    O::Decrypted(plain) => {
                        opened.sealed.insert(name.clone());
                        opened.fields.push((name, plain));
                    }
                    O::Plain => opened.fields.push((name, value)),
                    O::Failed(reason) => {
                        tracing::warn!(field = %name, reason, "session value failed to decrypt; not given to the handler");
                        if *policy == crate::crypto::DecryptFailure::RejectSession {
                            return None;
                        }
                        opened.sealed.insert(name);
                    }
                }
            }
            return Some(opened);
        }
        let _ = member;
        Some(Opened {
            fields,
            sealed: HashSet::new(),
        })
    }

    /// Runs a command under the command timeout, mapping fred errors to ours. `command`
    /// makes the command's future; it is called again, once and within the same timeout,
    /// if the first attempt met a `MOVED` or `ASK` that fred did not follow (see
    /// [`client_builder`](crate::client_builder)): the command did not run, and on
    /// `MOVED` fred has refreshed its slot map, so the second attempt reaches the slot's
    /// new owner.
    pub(crate) async fn timed<T, F>(&self, mut command: impl FnMut() -> F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, fred::error::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let result = match tokio::time::timeout_at(deadline, command()).await {
            Ok(Err(e)) if is_redirection(&e) => tokio::time::timeout_at(deadline, command()).await,
            other => other,
        };
        match result {
            Ok(result) => result.map_err(Error::from),
            Err(_) => Err(Error::new(ErrorKind::Timeout)),
        }
    }

    /// Runs a script on `key` and returns its result, checked to be for `key`: by
    /// `EVALSHA` (loading it on `NOSCRIPT`), or by `FCALL` of its function with
    /// [`ScriptMode::Functions`] (never falling back to `EVALSHA`).
    async fn run(
        &self,
        script: &scripts::Lua,
        key: impl Into<bytes::Bytes>,
        args: impl AsRef<[Value]>,
    ) -> Result<Value, Error> {
        let _timer = crate::metrics::ScriptTimer::start(script.name());
        // As bytes, the key is shared (not copied) by each attempt and the check below.
        let key: bytes::Bytes = key.into();
        // A script that may change the key drops its cached copies (in every read cache
        // of this process) before it is sent and again once answered, whatever the
        // answer: no later load of this app is served an older session than this write
        // left (see `cache`).
        let _invalidate_after = scripts::writes(script).then(|| {
            cache::invalidate_everywhere(&key);
            InvalidateOnDrop(&key)
        });
        let args = args.as_ref();
        let reply = match self.script_mode {
            ScriptMode::Evalsha => {
                self.timed(|| {
                    script.evalsha_with_reload(self.redis.client(), key.clone(), args.to_vec())
                })
                .await?
            }
            ScriptMode::Functions => {
                self.timed(|| {
                    scripts::fcall(self.redis.client(), script, key.clone(), args.to_vec())
                })
                .await?
            }
        };
        // Every script replies `{result, KEYS[1]}`. A reply for another key means the
        // client handed this command another command's reply (as fred 10.1.0 does after
        // an ASK): never act on it, and never show another session's data.
        match reply {
            Value::Array(mut items) if items.len() == 2 => {
                if items.pop().as_ref().and_then(Value::as_bytes) == Some(&key[..]) {
                    Ok(items.pop().unwrap_or(Value::Null))
                } else {
                    tracing::error!(
                        "the Redis client returned a reply meant for another command; discarded"
                    );
                    Err(Error::protocol("script reply for another key"))
                }
            }
            _ => Err(Error::protocol("script reply without its key")),
        }
    }

    /// Runs a script whose result is an array `{status, ...}`: the status and the rest.
    async fn run_status(
        &self,
        script: &scripts::Lua,
        key: String,
        args: Vec<Value>,
    ) -> Result<(i64, Vec<Value>), Error> {
        match self.run(script, key, args).await? {
            Value::Array(items) => {
                let mut items = items.into_iter();
                match items.next().and_then(|v| v.as_i64()) {
                    Some(status) => Ok((status, items.collect())),
                    None => Err(Error::protocol("script reply without a status")),
                }
            }
            _ => Err(Error::protocol("script reply is not an array")),
        }
    }

    /// Loads the scripts into Redis (every primary of a cluster), so the first request
    /// after start does not pay for a `NOSCRIPT` round trip; with [`ScriptMode::Functions`],
    /// checks that the library is loaded there.
    pub(crate) async fn load_scripts(&self) -> Result<(), Error> {
        if self.script_mode == ScriptMode::Functions {
            return scripts::check_library(self).await;
        }
        for script in scripts::all() {
            self.timed(|| script.load(self.redis.client())).await?;
        }
        Ok(())
    }

    /// One round trip: read the session and refresh its sliding expiry.
    pub(crate) async fn load(&self, id: &SessionId) -> Result<LoadOutcome, Error> {
        // As bytes, shared (not copied) by the call and a fill of the read cache.
        let key = bytes::Bytes::from(self.key(id));
        let ticket = match self.cache() {
            Some(cache) => match cache.lookup(&key) {
                Ok(hit) => return Ok(LoadOutcome::Found(hit)),
                Err(ticket) => Some((cache, ticket, key.clone())),
            },
            None => None,
        };
        // The load's reply carries its status last (see load.lua): `{fields.., ttl, 1}`,
        // or `{fields.., ttl, fresh, 3}` for a load within the touch interval, which
        // renewed nothing and would answer the same for `fresh` ms.
        let reply = self.run(&scripts::LOAD, key, &self.load_args).await?;
        let Value::Array(mut flat) = reply else {
            return Err(Error::protocol("load: reply is not an array"));
        };
        let mut fresh = None;
        let renewed = match flat.pop().and_then(|v| v.as_i64()) {
            Some(1) => true,
            Some(3) => {
                fresh = flat.pop().and_then(|v| v.as_i64());
                false
            }
            Some(0) => return Ok(LoadOutcome::Missing),
            Some(2) => return Ok(LoadOutcome::Ended(end_reason(flat.first()))),
            Some(-1) => return Ok(LoadOutcome::Unusable),
            Some(_) => return Err(Error::protocol("load: unknown status")),
            None => return Err(Error::protocol("load: reply without a status")),
        };
        let Some(ttl) = flat.pop() else {
            return Err(Error::protocol("load: reply without the TTL"));
        };
        let expires_in = ttl_of(Some(&ttl));
        let Some(opened) = self.open(self.member(id), pairs(flat)) else {
            return Ok(LoadOutcome::Unusable);
        };
        let loaded = Loaded {
            fields: opened.fields,
            expires_in,
            renewed,
            sealed: opened.sealed,
        };
        if let (Some((cache, ticket, key)), Some(fresh)) = (ticket, fresh) {
            let fresh = Duration::from_millis(u64::try_from(fresh).unwrap_or(0));
            cache.fill(key, ticket, &loaded, fresh, expires_in);
        }
        Ok(LoadOutcome::Found(loaded))
    }

    /// One round trip, before a read sends a persistent cookie again: what is left of the
    /// session's TTL if it is still live and not being rotated away (`None` if it ended or
    /// moved on since the request loaded it).
    async fn live_ttl(&self, id: &SessionId) -> Result<Option<Duration>, Error> {
        let ttl = self
            .run(&scripts::LIVE_TTL, self.key(id), Vec::new())
            .await?;
        Ok(ttl_of(Some(&ttl)))
    }

    /// Writes what a request planned, and says what its response does.
    pub(crate) async fn write_back(&self, plan: Plan) -> Result<Outcome, Error> {
        match plan {
            Plan::Nothing(outcome) => Ok(outcome),
            // A read that renewed the TTL: its cookie goes out again only if the session
            // is still live, with what is left of its TTL now. A failed check only costs
            // the refresh; the read itself was served.
            Plan::Refresh(id) => Ok(match self.live_ttl(&id).await {
                Ok(Some(ttl)) => Outcome::Refresh(id, Some(ttl)),
                Ok(None) => Outcome::Keep,
                Err(err) => {
                    tracing::warn!(
                        session = %short_digest(&id),
                        error = %err,
                        "could not check the session before sending its cookie again; not sent"
                    );
                    Outcome::Keep
                }
            }),
            Plan::Create {
                id,
                ttl,
                mut fields,
                counters,
                user,
            } => {
                // Every session is created with its CSRF token, so that two pages asking
                // for the first one at once get the same one.
                if !fields.iter().any(|(name, _)| name == model::CSRF_TOKEN) {
                    let token = crate::id::random_text();
                    fields.push((model::CSRF_TOKEN.to_owned(), token));
                }
                if let Some(user) = &user {
                    self.index_add(user, &id).await?;
                }
                let mut id = id;
                // A collision (2^-256) retries with a fresh ID, indexed first as well.
                for _ in 0..3 {
                    match self.create(&id, ttl, &fields, &counters).await? {
                        Created::Yes(expires_in) => {
                            crate::metrics::created();
                            return Ok(Outcome::Set(id, expires_in));
                        }
                        Created::Taken => {
                            collision();
                            id = SessionId::generate();
                            if let Some(user) = &user {
                                self.index_add(user, &id).await?;
                            }
                        }
                        Created::Expired | Created::Ended => return Ok(Outcome::Refused),
                    }
                }
                Err(collisions())
            }
            Plan::Save {
                id,
                ttl,
                changes,
                tie,
            } => {
                // Index first: a crash before the save leaves an entry that is pruned.
                if let Some(tie) = &tie {
                    self.index_add(&tie.user, &id).await?;
                }
                let args = self.save_args(self.member(&id), ttl, changes);
                let (status, rest) = self.run_status(&scripts::SAVE, self.key(&id), args).await?;
                match status {
                    1 => {}
                    0 => {
                        refused(&id, "its changes");
                        return Ok(Outcome::Refused);
                    }
                    // Another request set the counter to text meanwhile: a conflict.
                    -2 => {
                        refused(&id, "its increment (the field no longer holds an integer)");
                        return Ok(Outcome::Refused);
                    }
                    // Other requests grew the session meanwhile: with this one's changes
                    // it would pass the limits.
                    -3 => {
                        tracing::warn!(
                            session = %short_digest(&id),
                            "with changes other requests saved meanwhile, this request's changes would take the session past its size limits; not applied, answered 409"
                        );
                        return Ok(Outcome::Refused);
                    }
                    _ => return Err(Error::protocol("save: unknown status")),
                }
                if let Some(tie) = &tie {
                    if let Some(previous) = tie.previous.as_ref().filter(|p| **p != tie.user) {
                        let saved_at = rest
                            .get(1)
                            .ok_or(Error::protocol("save: reply without its time"))?;
                        self.index_drop(previous, self.member(&id), saved_at)
                            .await?;
                    }
                }
                Ok(Outcome::Refresh(id, ttl_of(rest.first())))
            }
            Plan::Rotate {
                old,
                new,
                ttl,
                changes,
                tie,
            } => self.rotate(old, new, ttl, changes, tie).await,
            Plan::Destroy { id, user } => {
                let ended = self
                    .end(self.member(&id), EndReason::Destroyed, None)
                    .await?;
                if ended == Ended::Already(EndReason::Rotated) {
                    // Moved to a new ID meanwhile: that session lives on, and the browser
                    // may hold its cookie. This logout did not happen.
                    refused(&id, "its logout");
                    return Ok(Outcome::Refused);
                }
                if let Some(user) = &user {
                    self.index_remove(user, self.member(&id)).await?;
                }
                Ok(Outcome::Clear)
            }
        }
    }

    /// Moves a session to a new ID, in three single-key steps:
    ///
    /// 1. `begin_rotate` marks the old key as rotating and reads it: saves to it are
    ///    refused from then on, so the copy misses no acknowledged change;
    /// 2. the new key is created from that copy with this request's changes applied
    ///    (indexed first, if the session is tied to a user);
    /// 3. `finish_rotate` turns the old key into a marker, if the mark is still this
    ///    rotation's. If it is not (the session ended, or the mark was abandoned and
    ///    cleared, so saves may have landed), the new key is deleted and the rotation is
    ///    refused.
    ///
    /// A rotation refused or failed between 1 and 3 (an increment that meets text, a
    /// session ended meanwhile, a store error) lifts its own mark again
    /// (`abandon_rotate`), so the session takes saves at once. A crash after 1 leaves a
    /// mark that is abandoned after a few command timeouts (the session stays, and takes
    /// saves again); after 2, also a new key nobody has the ID of, which expires (and an
    /// index entry, which is pruned).
    async fn rotate(
        &self,
        old: SessionId,
        new: SessionId,
        ttl: Option<Duration>,
        changes: Vec<(String, Change)>,
        tie: Option<String>,
    ) -> Result<Outcome, Error> {
        let token = new.digest()[..16].to_owned();
        let hold = millis(self.timeout.saturating_mul(3).max(Duration::from_secs(1)));
        let args = vec![
            self.load_args[1].clone(),
            self.load_args[2].clone(),
            self.lifetime_arg.clone(),
            int(hold),
            text(token.as_str()),
        ];
        let (status, rest) = self
            .run_status(&scripts::BEGIN_ROTATE, self.key(&old), args)
            .await?;
        match status {
            1 => {}
            0 | 2 | 3 | -1 => {
                refused(&old, "its rotation");
                return Ok(Outcome::Refused);
            }
            _ => return Err(Error::protocol("begin_rotate: unknown status")),
        }
        let marked = Marked {
            old: &old,
            token: &token,
        };
        match self
            .rotate_marked(marked, new, ttl, changes, tie, rest)
            .await
        {
            Ok(Some(outcome)) => Ok(outcome),
            Ok(None) => {
                self.abandon_rotation(marked).await;
                Ok(Outcome::Refused)
            }
            Err(err) => {
                self.abandon_rotation(marked).await;
                Err(err)
            }
        }
    }

    /// Steps 2 and 3 of [`rotate`](Self::rotate), once the old key is marked: the
    /// outcome once `finish_rotate` has run, or `None` if the rotation was refused before
    /// (its mark is still on the old key).
    async fn rotate_marked(
        &self,
        marked: Marked<'_>,
        mut new: SessionId,
        ttl: Option<Duration>,
        changes: Vec<(String, Change)>,
        tie: Option<String>,
        begun: Vec<Value>,
    ) -> Result<Option<Outcome>, Error> {
        let old = marked.old;
        let mut begun = begun.into_iter();
        let (Some(Value::Array(flat)), Some(deadline)) = (begun.next(), begun.next()) else {
            return Err(Error::protocol("begin_rotate: reply too short"));
        };
        let Some(opened) = self.open(self.member(old), pairs(flat)) else {
            refused(old, "its rotation (a value failed to decrypt)");
            return Ok(None);
        };
        let sealed = opened.sealed;
        let mut fields: HashMap<String, String> = opened.fields.into_iter().collect();
        // The user the session is tied to now (not when this request loaded it), whose
        // index entry for the old ID goes; and the one the new ID is tied to.
        let previous = fields.get(model::USER_ID).cloned();
        let user = tie.or_else(|| previous.clone());
        let idle = match ttl {
            Some(ttl) => ttl,
            None => fields
                .get(model::SESSION_TTL)
                .and_then(|v| model::parse_idle(v))
                .ok_or(Error::protocol("begin_rotate: no idle TTL"))?,
        };
        // The new ID gets this request's fresh CSRF token (one of its changes), never a
        // token found in the copy: another request may have made one for the old ID.
        fields.remove(model::CSRF_TOKEN);
        // Whether this request's changes grow the session (set a value, or make a new
        // counter): those are checked against the limits below, as a save checks them.
        // (Its new CSRF token is internal, as a tie's user is: they do not count.)
        let grows = changes.iter().any(|(field, change)| match change {
            _ if model::is_reserved(field) => false,
            Change::Set(_) => true,
            Change::Increment(_) | Change::Counter(_) => !fields.contains_key(field),
            Change::Remove => false,
        });
        for (field, change) in &changes {
            if change.apply(field, &mut fields).is_none() {
                // Another request set the counter to text meanwhile: a conflict.
                refused(
                    old,
                    "its rotation (an increment met a field that no longer holds an integer)",
                );
                return Ok(None);
            }
        }
        // The limits hold for what is stored: other requests may have grown the session
        // since this one loaded it. As for a save, changes that grow it are checked; a
        // copy with none is the session as it loads (past the limits at most by
        // counters that parallel increments grew, which a load allows for).
        let (count, size) = fields
            .iter()
            .filter(|(name, _)| !model::is_reserved(name))
            .fold((0, 0), |(count, size), (name, value)| {
                (count + 1, size + name.len() + value.len())
            });
        if grows && (count > self.limits.max_fields || size > self.limits.max_session_size) {
            tracing::warn!(
                session = %short_digest(old),
                "with changes other requests saved meanwhile, this request's changes would take the session past its size limits; not rotated, answered 409"
            );
            return Ok(None);
        }
        // Internal fields the new key gets from create (and the old mark) go; the
        // deadline is carried to the millisecond, unchanged.
        for name in [
            model::LAST_ACCESSED_AT,
            model::SESSION_TTL,
            model::ROTATING,
            model::ABSOLUTE_EXPIRES_AT,
        ] {
            fields.remove(name);
        }
        if let Some(ms) = deadline.as_i64().and_then(|ms| u64::try_from(ms).ok()) {
            let at = std::time::UNIX_EPOCH + Duration::from_millis(ms);
            fields.insert(
                model::ABSOLUTE_EXPIRES_AT.to_owned(),
                crate::time::format_rfc3339_ms(at),
            );
        }
        match &user {
            Some(user) => fields.insert(model::USER_ID.to_owned(), user.clone()),
            None => fields.remove(model::USER_ID),
        };
        // What was stored in plaintext stays so (counters, with encryption at rest), and
        // so do the fields this request made counters; what it set is sealed.
        let plain: HashSet<String> = fields
            .keys()
            .filter(
                |field| match changes.iter().find(|(name, _)| name == *field) {
                    Some((_, change)) => change.is_counter(),
                    None => !sealed.contains(*field),
                },
            )
            .cloned()
            .collect();
        let fields: Vec<_> = fields.into_iter().collect();

        let mut created = Err(collisions());
        for _ in 0..3 {
            if let Some(user) = &user {
                self.index_add(user, &new).await?;
            }
            match self.create(&new, idle, &fields, &plain).await? {
                Created::Yes(expires_in) => {
                    created = Ok(Some(expires_in));
                    break;
                }
                Created::Taken => {
                    collision();
                    new = SessionId::generate();
                }
                // Ended before it was created ("log out everywhere" met its index entry).
                Created::Expired | Created::Ended => {
                    created = Ok(None);
                    break;
                }
            }
        }
        // Three collisions (an error), past its absolute lifetime by now, or ended
        // meanwhile (refused): the caller lifts the mark.
        let Some(expires_in) = created? else {
            refused(old, "its rotation");
            return Ok(None);
        };

        let args = vec![text(marked.token), int(millis(model::MARKER_TTL))];
        let finished = self
            .run(&scripts::FINISH_ROTATE, self.key(old), args)
            .await?;
        if finished.as_i64() != Some(1) {
            // The session ended or took changes meanwhile: the copy must not live on.
            let _: i64 = self
                .timed(|| del(self.redis.client(), self.key(&new)))
                .await?;
            if let Some(user) = &user {
                self.index_remove(user, self.member(&new)).await?;
            }
            refused(old, "its rotation");
            return Ok(Some(Outcome::Refused));
        }
        // The session has moved: the browser must get its new ID whatever happens now.
        // The old ID's index entry is only tidying (it points at a marker, and listing
        // prunes it), so a failure to drop it is logged, not answered.
        if let Some(previous) = &previous {
            if let Err(err) = self.index_remove(previous, self.member(old)).await {
                tracing::warn!(
                    session = %short_digest(old),
                    error = %err,
                    "a rotated session's old index entry could not be dropped; listing the user's sessions prunes it"
                );
            }
        }
        crate::metrics::rotated();
        Ok(Some(Outcome::Set(new, expires_in)))
    }

    /// One round trip: lifts the mark of a rotation that will not finish, if it is still
    /// this rotation's. A failure is only logged: the mark then lapses by itself.
    async fn abandon_rotation(&self, marked: Marked<'_>) {
        let args = vec![text(marked.token)];
        let lifted = self
            .run(&scripts::ABANDON_ROTATE, self.key(marked.old), args)
            .await;
        if let Err(err) = lifted {
            tracing::warn!(
                session = %short_digest(marked.old),
                error = %err,
                "a rotation that did not finish could not lift its mark; the session refuses changes until the mark lapses"
            );
        }
    }

    /// One round trip: create a session under `id` unless the key is taken. The
    /// `plain` fields are counters, written in plaintext even with encryption at rest.
    async fn create(
        &self,
        id: &SessionId,
        ttl: Duration,
        fields: &[(String, String)],
        plain: &HashSet<String>,
    ) -> Result<Created, Error> {
        let member = self.member(id);
        let mut args = Vec::with_capacity(2 + fields.len() * 2);
        args.push(int(ttl.as_secs()));
        args.push(self.lifetime_arg.clone());
        for (name, value) in fields {
            args.push(text(name.as_str()));
            args.push(if plain.contains(name) {
                text(value.as_str())
            } else {
                self.seal(member, name, value)
            });
        }
        let (status, rest) = self
            .run_status(&scripts::CREATE, self.key(id), args)
            .await?;
        match status {
            1 => Ok(Created::Yes(ttl_of(rest.first()))),
            0 => Ok(Created::Taken),
            -1 => Ok(Created::Expired),
            -2 => Ok(Created::Ended),
            _ => Err(Error::protocol("create: unknown status")),
        }
    }

    /// ARGV of the save script: the TTL, the lifetime, the limits, whether values are
    /// encrypted, then one op/field/value triple per change.
    pub(crate) fn save_args(
        &self,
        member: &str,
        ttl: Option<Duration>,
        changes: Vec<(String, Change)>,
    ) -> Vec<Value> {
        let mut args = Vec::with_capacity(5 + changes.len() * 3);
        args.push(ttl.map_or_else(|| text(""), |t| int(t.as_secs())));
        args.push(self.lifetime_arg.clone());
        args.extend(self.save_limits.iter().cloned());
        for (field, change) in changes {
            let (op, value) = match change {
                Change::Set(value) => ("s", self.seal(member, &field, &value)),
                Change::Counter(n) => ("s", Value::Integer(n)),
                Change::Remove => ("d", text("")),
                Change::Increment(n) => ("i", Value::Integer(n)),
            };
            args.extend([text(op), text(field), value]);
        }
        args
    }

    /// One round trip: ends a session, leaving a marker; with `user`, only if it is tied
    /// to that user.
    pub(crate) async fn end(
        &self,
        member: &str,
        why: EndReason,
        user: Option<&str>,
    ) -> Result<Ended, Error> {
        let args = vec![
            text(why.as_str()),
            int(millis(model::MARKER_TTL)),
            text(user.unwrap_or_default()),
        ];
        let (status, rest) = self
            .run_status(&scripts::END, self.key_of(member), args)
            .await?;
        let ended = match status {
            1 => Ended::Live,
            0 => Ended::Nothing,
            2 => Ended::Already(end_reason(rest.first())),
            3 => Ended::OtherUser,
            _ => return Err(Error::protocol("end: unknown status")),
        };
        crate::metrics::ended(why.as_str(), ended == Ended::Live);
        Ok(ended)
    }
}

/// What ending a session found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// A live session, now ended.
    Live,
    /// No session; a marker now stands in its place.
    Nothing,
    /// A marker, kept: the session had ended already, or moved on.
    Already(EndReason),
    /// A live session tied to another user: untouched.
    OtherUser,
}

/// The old key of a rotation in progress, and the token of its mark.
#[derive(Clone, Copy)]
struct Marked<'a> {
    old: &'a SessionId,
    token: &'a str,
}

/// What creating a session found.
enum Created {
    /// Created; the key's TTL.
    Yes(Option<Duration>),
    /// A session holds the key (an ID collision): nothing written.
    Taken,
    /// The absolute deadline has passed: nothing written.
    Expired,
    /// A marker holds the key: the session was ended before its creation landed.
    Ended,
}

fn end_reason(value: Option<&Value>) -> EndReason {
    match value.and_then(Value::as_str).as_deref() {
        Some("rotated") => EndReason::Rotated,
        Some("destroyed") => EndReason::Destroyed,
        // `terminated`, or a marker written by another program.
        _ => EndReason::Terminated,
    }
}

/// A new ID named a key that is taken (by chance 2^-256: a sign of a broken random
/// generator): nothing was written, and the caller retries with another ID.
fn collision() {
    tracing::warn!("session ID collision; retrying with a new ID");
}

/// Three collisions in a row: no random generator does that.
fn collisions() -> Error {
    Error::protocol("three session ID collisions in a row")
}

fn refused(id: &SessionId, what: &str) {
    tracing::warn!(
        session = %short_digest(id),
        "session ended or moved on before {what} could be saved; not applied, answered 409"
    );
}

async fn del(client: &fred::clients::Client, key: String) -> Result<i64, fred::error::Error> {
    use fred::interfaces::KeysInterface as _;
    client.del(key).await
}

/// A flat `[name, value, ...]` array as pairs.
fn pairs(flat: Vec<Value>) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut flat = flat.into_iter();
    while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
        out.push((into_string(name), into_string(value)));
    }
    out
}

/// fred's error for a MOVED or ASK it did not follow (`max_redirections` spent): the
/// command was not run.
fn is_redirection(err: &fred::error::Error) -> bool {
    *err.kind() == fred::error::ErrorKind::Routing && err.details() == "Too many redirections."
}

pub(crate) fn into_string(value: Value) -> String {
    match value {
        Value::String(s) => String::from(&*s),
        Value::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
        other => other.as_string().unwrap_or_default(),
    }
}
