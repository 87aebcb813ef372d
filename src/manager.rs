//! `SessionManager`: see, count and end sessions outside of requests.

use std::{
    collections::HashMap,
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};

use fred::{
    interfaces::{
        ClientLike as _, ClusterInterface as _, HashesInterface as _, KeysInterface as _,
        MemoryInterface as _, SortedSetsInterface as _,
    },
    types::Value,
};

use crate::{layer::Shared, Error, SessionId, RESERVED_FIELDS};

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
/// A session is added to its user's index *before* it is tied to the user, so a crash in
/// between leaves at worst an index entry without a session, which is pruned; never a
/// tied session that "log out everywhere" would miss. The index key has no TTL, so under
/// `maxmemory-policy` `noeviction` or any `volatile-*` policy Redis never evicts it (it
/// does evict session keys, which only logs those sessions out). Under an `allkeys-*`
/// policy an index can be evicted; then use
/// [`terminate_all_by_scan`](Self::terminate_all_by_scan). Dead entries (expired or
/// ended sessions) are pruned whenever an index is listed or terminated; an index emptied
/// that way is deleted.
#[derive(Clone)]
pub struct SessionManager {
    shared: Arc<Shared>,
}

/// Names a stored session without being usable as its cookie: the SHA-256 digest of its
/// ID (or, with `plain_keys`, the ID itself), as in its Redis key. Safe to show in a page
/// and to post back in a form.
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

    /// The handle of a session, e.g. of the current request's session, to mark it in a
    /// listing or keep it in [`terminate_all`](Self::terminate_all).
    #[must_use]
    pub fn handle(&self, id: &SessionId) -> SessionHandle {
        SessionHandle(self.shared.store.member(id).to_owned())
    }

    /// The Redis key of a session (prefix + digest, or prefix + ID with `plain_keys`), for
    /// looking at it with your own commands or `redis-cli`.
    #[must_use]
    pub fn redis_key(&self, id: &SessionId) -> String {
        self.shared.store.key(id)
    }

    /// The user's live sessions, oldest first. Two round trips (the index, then one
    /// pipeline reading every session), plus one to prune dead entries if there are any.
    ///
    /// # Errors
    ///
    /// The store failed.
    pub async fn list(&self, user_id: &str) -> Result<Vec<SessionInfo>, Error> {
        let store = &self.shared.store;
        let members = self.members(user_id).await?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let client = store.redis().client();
        let pipeline = client.pipeline();
        for member in &members {
            let key = store.key_of(member);
            let _: () = pipeline.hgetall(&key).await?;
            let _: () = pipeline.pttl(&key).await?;
        }
        let replies: Vec<Value> = store.timed(|| pipeline.all()).await?;
        let mut infos = Vec::new();
        let mut dead = Vec::new();
        for (member, pair) in members.into_iter().zip(replies.chunks(2)) {
            let hash: HashMap<String, String> = pair[0].clone().convert().unwrap_or_default();
            let ttl_ms = pair[1].as_i64().unwrap_or(-2);
            if ttl_ms < 0 || hash.get("user_id").map(String::as_str) != Some(user_id) {
                dead.push(member);
                continue;
            }
            let time = |name: &str| hash.get(name).and_then(|t| crate::time::parse_rfc3339(t));
            let user_fields = hash
                .iter()
                .filter(|(name, _)| !RESERVED_FIELDS.contains(&name.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            // Values that fail to decrypt are left out, whatever the layer's policy.
            let mut fields = store
                .open(&member, user_fields)
                .map(|opened| opened.fields)
                .unwrap_or_default();
            fields.sort_unstable();
            infos.push(SessionInfo {
                handle: SessionHandle(member),
                expires_in: Duration::from_millis(ttl_ms.unsigned_abs()),
                created_at: time("created_at"),
                last_accessed_at: time("last_accessed_at"),
                fields,
            });
        }
        self.prune(user_id, dead).await?;
        infos.sort_by_key(|info| info.created_at);
        Ok(infos)
    }

    /// Ends one session of the user: its key is deleted, so its very next request (even
    /// one already in flight) finds no session. Returns `false` if the handle is not one
    /// of the user's sessions (so a user cannot end someone else's session by guessing).
    ///
    /// # Errors
    ///
    /// The store failed.
    pub async fn terminate(&self, user_id: &str, handle: &SessionHandle) -> Result<bool, Error> {
        let store = &self.shared.store;
        let client = store.redis().client();
        let score: Option<f64> = store
            .timed(|| client.zscore(store.index_key(user_id), handle.as_str()))
            .await?;
        if score.is_none() {
            return Ok(false);
        }
        let deleted: i64 = store
            .timed(|| client.del(store.key_of(handle.as_str())))
            .await?;
        self.prune(user_id, vec![handle.0.clone()]).await?;
        Ok(deleted > 0)
    }

    /// Ends all of the user's sessions ("log out everywhere"), or all but `except` (e.g.
    /// the current one after a password change). Returns how many were live.
    ///
    /// # Errors
    ///
    /// The store failed; some sessions may have been ended already.
    pub async fn terminate_all(
        &self,
        user_id: &str,
        except: Option<&SessionHandle>,
    ) -> Result<usize, Error> {
        let store = &self.shared.store;
        let members: Vec<String> = self
            .members(user_id)
            .await?
            .into_iter()
            .filter(|m| except.map_or(true, |e| e.as_str() != m))
            .collect();
        if members.is_empty() {
            return Ok(0);
        }
        // One DEL per key (each in its own cluster slot), sent as one pipeline.
        let pipeline = store.redis().client().pipeline();
        for member in &members {
            let _: () = pipeline.del(store.key_of(member)).await?;
        }
        let deleted: Vec<i64> = store.timed(|| pipeline.all()).await?;
        self.prune(user_id, members).await?;
        Ok(deleted.into_iter().filter(|&n| n > 0).count())
    }

    /// Ends every session tied to the user by scanning all session keys (on every primary
    /// of a cluster), not trusting the index: for after an index was lost, e.g. evicted
    /// under an `allkeys-*` policy. Costs a full `SCAN` plus one `HGET` per session.
    ///
    /// # Errors
    ///
    /// The store failed; some sessions may have been ended already.
    pub async fn terminate_all_by_scan(&self, user_id: &str) -> Result<usize, Error> {
        let store = &self.shared.store;
        let client = store.redis().client();
        let mut ended = 0;
        for keys in self.scan_pages().await? {
            let sessions: Vec<_> = keys
                .into_iter()
                .filter(|k| self.is_session_key(k))
                .collect();
            if sessions.is_empty() {
                continue;
            }
            let pipeline = client.pipeline();
            for key in &sessions {
                let _: () = pipeline.hget(key, "user_id").await?;
            }
            let owners: Vec<Option<String>> = store.timed(|| pipeline.all()).await?;
            for (key, owner) in sessions.iter().zip(owners) {
                if owner.as_deref() == Some(user_id) {
                    let deleted: i64 = store.timed(|| client.del(key)).await?;
                    ended += usize::from(deleted > 0);
                }
            }
        }
        let _: i64 = store.timed(|| client.del(store.index_key(user_id))).await?;
        Ok(ended)
    }

    /// Counts live sessions and user indexes, and sums the memory Redis reports for the
    /// sessions, with a `SCAN` over the key prefix (on every primary of a cluster) and one
    /// pipelined `MEMORY USAGE` per page.
    ///
    /// Cost grows with the whole keyspace, not just the sessions: fine for a dashboard
    /// polled every minute, not for every request. On a Redis used only for sessions,
    /// `DBSIZE` (constant time) counts the same keys plus the indexes.
    ///
    /// # Errors
    ///
    /// The store failed.
    pub async fn stats(&self) -> Result<SessionStats, Error> {
        let store = &self.shared.store;
        let client = store.redis().client();
        let mut stats = SessionStats::default();
        for keys in self.scan_pages().await? {
            let (sessions, indexes): (Vec<_>, Vec<_>) =
                keys.into_iter().partition(|k| self.is_session_key(k));
            stats.user_indexes += indexes.len() as u64;
            if sessions.is_empty() {
                continue;
            }
            let pipeline = client.pipeline();
            for key in &sessions {
                let _: () = pipeline.memory_usage(key, None).await?;
            }
            let sizes: Vec<Option<u64>> = store.timed(|| pipeline.all()).await?;
            for size in sizes.into_iter().flatten() {
                stats.sessions += 1;
                stats.session_bytes += size;
            }
        }
        Ok(stats)
    }

    /// The members of a user's index.
    async fn members(&self, user_id: &str) -> Result<Vec<String>, Error> {
        let store = &self.shared.store;
        let client = store.redis().client();
        store
            .timed(|| client.zrange(store.index_key(user_id), 0, -1, None, false, None, false))
            .await
    }

    /// Removes entries from a user's index, and the index itself once empty.
    async fn prune(&self, user_id: &str, members: Vec<String>) -> Result<(), Error> {
        if members.is_empty() {
            return Ok(());
        }
        let store = &self.shared.store;
        let client = store.redis().client();
        let index = store.index_key(user_id);
        let _: i64 = store.timed(|| client.zrem(&index, members.clone())).await?;
        // ZREM deletes a sorted set it empties, so nothing else is needed.
        Ok(())
    }

    fn is_session_key(&self, key: &str) -> bool {
        key.strip_prefix(self.shared.store.prefix())
            .is_some_and(|rest| !rest.contains(':'))
    }

    /// Every key under the prefix, a `SCAN` page at a time, on every primary.
    async fn scan_pages(&self) -> Result<Vec<Vec<String>>, Error> {
        let store = &self.shared.store;
        let client = store.redis().client();
        let pattern = format!("{}*", escape_glob(store.prefix()));
        let nodes = if client.is_clustered() {
            client
                .cached_cluster_state()
                .map(|state| state.unique_primary_nodes())
                .unwrap_or_default()
                .into_iter()
                .map(Some)
                .collect()
        } else {
            vec![None]
        };
        let mut pages = Vec::new();
        for node in nodes {
            let mut cursor = "0".to_owned();
            loop {
                let page: Value = match &node {
                    Some(server) => {
                        let on_node = client.with_cluster_node(server.clone());
                        store
                            .timed(|| {
                                on_node.scan_page(cursor.clone(), pattern.clone(), Some(1000), None)
                            })
                            .await?
                    }
                    None => {
                        store
                            .timed(|| {
                                client.scan_page(cursor.clone(), pattern.clone(), Some(1000), None)
                            })
                            .await?
                    }
                };
                let (next, keys): (String, Vec<String>) = page
                    .convert()
                    .map_err(|_| Error::protocol("SCAN: unexpected reply"))?;
                pages.push(keys);
                if next == "0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok(pages)
    }
}

/// Escapes `SCAN MATCH` glob characters so the prefix matches literally.
fn escape_glob(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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
    fn glob_characters_in_the_prefix_match_literally() {
        assert_eq!(escape_glob("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:");
    }

    #[test]
    fn handles_parse_strictly() {
        let id = SessionId::generate();
        assert!(SessionHandle::parse(id.digest()).is_some());
        assert!(SessionHandle::parse("user:abc").is_none());
        assert!(SessionHandle::parse("").is_none());
    }
}
