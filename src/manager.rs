//! `SessionManager`: see, count and end sessions outside of requests.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::{
    error::Error, exchange::EndReason, id::SessionId, model, shared::Shared, store::Ended,
};

/// A handle to the sessions a [`RedisSessionLayer`](crate::RedisSessionLayer) stores,
/// for an app's "your sessions" page, "log out everywhere", and monitoring.
///
/// Get it with [`RedisSessionLayer::manager`](crate::RedisSessionLayer::manager); it is
/// cheap to clone and works outside requests. Sessions are tied to a user with
/// [`Session::set_user_id`](crate::Session::set_user_id). Each user has an index (a
/// sorted set under `{prefix}user:{sha256(user id)}`) of their sessions; every command
/// touches one key, so all of it works on Redis Cluster.
///
/// ```no_run
/// # async fn run(layer: tower_redis_session::RedisSessionLayer) -> Result<(), tower_redis_session::Error> {
/// let manager = layer.manager();
/// for info in manager.list("alice").await? {
///     println!("{} expires in {:?}", info.handle, info.expires_in);
/// }
/// manager.terminate_all("alice", None).await?; // log out everywhere
/// # Ok(()) }
/// ```
///
/// # The index and eviction
///
/// A session is added to its user's index *before* it is tied to the user (and again on
/// every tie), so a crash in between leaves at worst an index entry without a session,
/// which is pruned; never a tied session that "log out everywhere" would miss. An entry is
/// pruned only once it is a minute old, so a session being created right now is never
/// taken for a dead one. The index key has no TTL, so under
/// `maxmemory-policy` `noeviction` or any `volatile-*` policy Redis never evicts it (it
/// does evict session keys, which only logs those sessions out). Under an `allkeys-*`
/// policy an index can be evicted; then use
/// [`terminate_all_by_scan`](Self::terminate_all_by_scan). Dead entries (expired or
/// ended sessions) are pruned whenever an index is listed or terminated; an index emptied
/// that way is deleted. Each add to an index (a login) also drops its entries older than
/// the absolute lifetime and the grace.
#[derive(Clone)]
pub struct SessionManager {
    shared: Arc<Shared>,
}

/// Names a stored session without being usable as its cookie: the SHA-256 digest of its
/// ID (in every mode, also with `plain_keys`). Safe to show in a page and to post back in
/// a form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionHandle(String);

impl SessionHandle {
    /// Parses a handle posted back by a client: the same strict shape as a session ID (43
    /// characters of URL-safe base64), so no key is built from unchecked input.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        SessionId::parse(s).map(|_| Self(s.to_owned()))
    }

    /// The handle as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionHandle({})", &self.0[..self.0.len().min(12)])
    }
}

/// One live session of a user, as [`SessionManager::list`] found it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionInfo {
    /// Names the session, e.g. for [`SessionManager::terminate`].
    pub handle: SessionHandle,
    /// What is left of its key's TTL.
    pub expires_in: Duration,
    /// When it was created (Redis's clock).
    pub created_at: Option<SystemTime>,
    /// When a request last loaded it (Redis's clock).
    pub last_accessed_at: Option<SystemTime>,
    /// Its user fields, sorted by name.
    pub fields: Vec<(String, String)>,
}

/// What [`SessionManager::stats`] counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// Live session keys.
    pub sessions: u64,
    /// User index keys.
    pub user_indexes: u64,
    /// Bytes Redis reports (`MEMORY USAGE`) for the session keys.
    pub session_bytes: u64,
}

impl SessionManager {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The same manager (same key prefix and settings), sending its commands through
    /// `redis` instead of the layer's connection: e.g. a pool logged in as a Redis user
    /// allowed the full scans of [`stats`](Self::stats) and
    /// [`terminate_all_by_scan`](Self::terminate_all_by_scan) (`SCAN`, `MEMORY USAGE`),
    /// which the app's own user can then do without. Which method needs which commands
    /// is listed in the operations guide (`docs/operations.md`).
    ///
    /// ```no_run
    /// # async fn run(layer: tower_redis_session::RedisSessionLayer) -> Result<(), Box<dyn std::error::Error>> {
    /// let ops = tower_redis_session::connect("redis://sessions-ops:PASSWORD@127.0.0.1:6379").await?;
    /// let stats = layer.manager().with_redis(ops).stats().await?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn with_redis(&self, redis: impl Into<crate::Redis>) -> Self {
        let mut config = self.shared.config.clone();
        // It loads nothing, so it needs no read cache; its writes still drop the keys
        // from every cache of this process.
        config.read_cache = None;
        let store = crate::store::Store::new(redis.into(), &config);
        Self::new(Arc::new(Shared { config, store }))
    }

    /// The handle of a session, e.g. of the current request's session, to mark it in a
    /// listing or keep it in [`terminate_all`](Self::terminate_all).
    #[must_use]
    pub fn handle(&self, id: &SessionId) -> SessionHandle {
        SessionHandle(id.digest().to_owned())
    }

    /// The handle of an index member (the key suffix: the ID's digest, or with plain keys
    /// the ID itself, in whatever format it was accepted).
    fn handle_of(&self, member: &str) -> SessionHandle {
        if self.shared.config.plain_keys {
            SessionHandle(crate::id::digest(member))
        } else {
            SessionHandle(member.to_owned())
        }
    }

    /// The Redis key of a session (prefix + digest, or prefix + ID with `plain_keys`), for
    /// looking at it with your own commands or `redis-cli`.
    #[must_use]
    pub fn redis_key(&self, id: &SessionId) -> String {
        self.shared.store.key(id)
    }

    /// The user's live sessions, oldest first. Two round trips (the index, then one
    /// pipeline reading every session), plus one to prune dead entries if there are any
    /// old enough.
    ///
    /// # Errors
    ///
    /// The store failed.
    pub async fn list(&self, user_id: &str) -> Result<Vec<SessionInfo>, Error> {
        let store = &self.shared.store;
        let entries = store.index_entries(user_id).await?;
        let members: Vec<String> = entries.iter().map(|e| e.member.clone()).collect();
        let stored = store.read_sessions(&members).await?;
        let mut infos = Vec::new();
        let mut dead = Vec::new();
        for (entry, stored) in entries.into_iter().zip(stored) {
            let Some(stored) = stored
                .filter(|s| s.fields.get(model::USER_ID).map(String::as_str) == Some(user_id))
            else {
                dead.push(entry);
                continue;
            };
            let time = |name: &str| {
                stored
                    .fields
                    .get(name)
                    .and_then(|t| crate::time::parse_rfc3339(t))
            };
            let (created_at, last_accessed_at) =
                (time(model::CREATED_AT), time(model::LAST_ACCESSED_AT));
            let user_fields = stored
                .fields
                .into_iter()
                .filter(|(name, _)| !model::is_reserved(name))
                .collect();
            // Values that fail to decrypt are left out, whatever the layer's policy.
            let mut fields = store
                .open(&entry.member, user_fields)
                .map(|opened| opened.fields)
                .unwrap_or_default();
            fields.sort_unstable();
            infos.push(SessionInfo {
                handle: self.handle_of(&entry.member),
                expires_in: stored.expires_in,
                created_at,
                last_accessed_at,
                fields,
            });
        }
        store.prune(user_id, dead).await?;
        infos.sort_by_key(|info| info.created_at);
        Ok(infos)
    }

    /// Ends one session of the user: it is replaced by a marker, so its very next request
    /// (even one already in flight) finds no session. Returns `false` if the handle is not
    /// one of the user's live sessions (so a user cannot end someone else's session by
    /// guessing).
    ///
    /// # Errors
    ///
    /// The store failed.
    pub async fn terminate(&self, user_id: &str, handle: &SessionHandle) -> Result<bool, Error> {
        let store = &self.shared.store;
        let Some(entry) = store
            .index_entries(user_id)
            .await?
            .into_iter()
            .find(|e| self.handle_of(&e.member) == *handle)
        else {
            return Ok(false);
        };
        Ok(store.end_indexed(user_id, vec![entry], None, None).await? > 0)
    }

    /// Ends all of the user's sessions ("log out everywhere"), or all but `except` (e.g.
    /// the current one after a password change: take its handle before
    /// [`Session::rotate_id`](crate::Session::rotate_id), which gives the session an ID the
    /// index learns only when the response goes out). Returns how many were live.
    ///
    /// A session that moves to a new ID while this runs (a rotation it finds finished) is
    /// followed: the index is read again and the new ID ended too. Costs one read of the
    /// index, one round trip per session and one to drop their entries from the index;
    /// for each round that finds a session rotated away, one more read of the index; with
    /// `except`, one look at the session to keep after each read of the index; and one
    /// to prune entries whose session is not tied to the user (kept while younger than a
    /// minute: the tie may be in flight).
    ///
    /// # Errors
    ///
    /// The store failed; some sessions may have been ended already.
    ///
    /// [`ErrorKind::Conflict`](crate::ErrorKind::Conflict): a session kept moving to new
    /// IDs through 16 reads of the index, or the session `except` names is moving or
    /// moved to a new ID (its new ID cannot be told from the others, so what the last
    /// read of the index listed was not ended).
    /// The sessions found were ended; call it again (with the new handle).
    pub async fn terminate_all(
        &self,
        user_id: &str,
        except: Option<&SessionHandle>,
    ) -> Result<usize, Error> {
        let store = &self.shared.store;
        let wanted = |member: &str| except.map_or(true, |e| *e != self.handle_of(member));
        let (entries, keep): (Vec<_>, Vec<_>) = store
            .index_entries(user_id)
            .await?
            .into_iter()
            .partition(|e| wanted(&e.member));
        // A session that rotates meanwhile is followed to its new ID, unless the one to
        // keep rotated too (its new ID cannot be told apart): then it is a conflict.
        let keep = keep.first().map(|e| e.member.as_str());
        store
            .end_indexed(user_id, entries, Some(&wanted), keep)
            .await
    }

    /// Ends every session tied to the user by scanning all session keys (on every primary
    /// of a cluster), not trusting the index: for after an index was lost, e.g. evicted
    /// under an `allkeys-*` policy. Costs a full `SCAN` plus one `HGET` per session.
    ///
    /// # Errors
    ///
    /// The store failed, or a cluster's primaries are not known (a scan that cannot
    /// reach every primary is never reported as complete); some sessions may have been
    /// ended already.
    pub async fn terminate_all_by_scan(&self, user_id: &str) -> Result<usize, Error> {
        let store = &self.shared.store;
        // What the index knows first: that also ends (with a marker) a login in flight
        // whose session the scan could not see yet. The index key itself stays.
        let mut ended = self.terminate_all(user_id, None).await?;
        for keys in store.scan_pages().await? {
            let sessions: Vec<_> = keys
                .into_iter()
                .filter(|k| store.is_session_key(k))
                .collect();
            if sessions.is_empty() {
                continue;
            }
            let owners = store.owners(&sessions).await?;
            for (key, owner) in sessions.iter().zip(owners) {
                if owner.as_deref() == Some(user_id) {
                    let member = &key[store.prefix().len()..];
                    let end = store.end(member, EndReason::Terminated, Some(user_id));
                    ended += usize::from(end.await? == Ended::Live);
                }
            }
        }
        Ok(ended)
    }

    /// Counts live sessions and user indexes, and sums the memory Redis reports for the
    /// sessions, with a `SCAN` over the key prefix (on every primary of a cluster) and one
    /// pipelined `MEMORY USAGE` per page. Markers left by sessions ended in the last
    /// minute are not counted.
    ///
    /// Cost grows with the whole keyspace, not just the sessions: fine for a dashboard
    /// polled every minute, not for every request. On a Redis used only for sessions,
    /// `DBSIZE` (constant time) counts the same keys plus the indexes.
    ///
    /// # Errors
    ///
    /// The store failed, or a cluster's primaries are not known.
    pub async fn stats(&self) -> Result<SessionStats, Error> {
        let store = &self.shared.store;
        let mut stats = SessionStats::default();
        for keys in store.scan_pages().await? {
            let (sessions, indexes): (Vec<_>, Vec<_>) =
                keys.into_iter().partition(|k| store.is_session_key(k));
            stats.user_indexes += indexes.len() as u64;
            if sessions.is_empty() {
                continue;
            }
            for size in store.memory_usage(&sessions).await?.into_iter().flatten() {
                stats.sessions += 1;
                stats.session_bytes += size;
            }
        }
        Ok(stats)
    }
}

impl fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManager")
            .field("key_prefix", &self.shared.config.key_prefix)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_parse_strictly() {
        let id = SessionId::generate();
        assert!(SessionHandle::parse(id.digest()).is_some());
        assert!(SessionHandle::parse("user:abc").is_none());
        assert!(SessionHandle::parse("").is_none());
    }
}
