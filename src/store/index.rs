//! The user index and the manager's reads: a sorted set per user, under
//! `{prefix}user:{sha256(user id)}`, of the members (key suffixes) of that user's
//! sessions, each scored by when it was last added (ms, Redis's clock, so app servers
//! with drifting clocks age entries alike).
//!
//! An entry is added before the session is tied (so no tied session is ever missing
//! from it) and re-added on every tie. It is pruned only when it is certainly dead:
//! its session is gone, ended or tied to someone else, the entry is older than
//! [`PRUNE_GRACE`] (a session being created right now is not there *yet*), and its
//! score is still the one that was read (the `prune` script checks it). Every add also
//! drops the entries older than the absolute lifetime and the grace: their sessions
//! have ended by then, whatever became of them. The index has no TTL, so `volatile-*`
//! eviction never drops it.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use fred::{
    interfaces::{
        HashesInterface as _, KeysInterface as _, MemoryInterface as _, SortedSetsInterface as _,
    },
    types::Value,
};

use super::{int, scripts, text, Ended, Store};
use crate::{
    error::{Error, ErrorKind},
    exchange::EndReason,
    id::SessionId,
    model,
};

/// How old an index entry must be before it may be pruned: far longer than a login takes
/// between adding the entry and creating its session, even with app clocks apart.
const PRUNE_GRACE: Duration = Duration::from_secs(60);

/// How many times one termination re-reads the index after meeting a session rotated away
/// (each re-read follows one more rotation that ran meanwhile).
const REREADS: usize = 16;

/// One entry of a user's index.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) member: String,
    /// When it was last added, in ms.
    score: f64,
}

/// A stored session as the manager reads it.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) fields: HashMap<String, String>,
    /// What is left of its key's TTL.
    pub(crate) expires_in: Duration,
}

impl Store {
    /// The key of a user's index. The user id is digested, so any id makes a valid key
    /// and none shows in key names. `:` never occurs in a member, so no index key can be
    /// a session key.
    pub(crate) fn index_key(&self, user_id: &str) -> String {
        format!("{}user:{}", self.prefix(), crate::id::digest(user_id))
    }

    /// `true` if `key` is a session key of this store (not an index).
    pub(crate) fn is_session_key(&self, key: &str) -> bool {
        key.strip_prefix(self.prefix())
            .is_some_and(|rest| !rest.contains(':'))
    }

    /// One round trip: adds (or re-adds, with a fresh score) a session to its user's
    /// index, dropping the entries that are dead by the absolute lifetime.
    pub(crate) async fn index_add(&self, user_id: &str, id: &SessionId) -> Result<(), Error> {
        // A session's deadline may be up to 5 minutes later than its entry's score plus
        // the lifetime: its created_at may be that far ahead of Redis's clock.
        let grace = PRUNE_GRACE + Duration::from_secs(300);
        let args = vec![
            text(self.member(id)),
            self.lifetime_arg.clone(),
            int(grace.as_millis() as u64),
        ];
        self.run(&scripts::INDEX_ADD, self.index_key(user_id), args)
            .await?;
        Ok(())
    }

    /// One round trip: drops a session from the index of the user it was tied to before
    /// a save at `before` (ms, Redis's clock) tied it to another, unless it was tied back
    /// to that user since.
    pub(crate) async fn index_drop(
        &self,
        user_id: &str,
        member: &str,
        before: &Value,
    ) -> Result<(), Error> {
        let args = vec![text(member), before.clone()];
        self.run(&scripts::INDEX_DROP, self.index_key(user_id), args)
            .await?;
        Ok(())
    }

    /// One round trip: removes a session from its user's index.
    pub(crate) async fn index_remove(&self, user_id: &str, member: &str) -> Result<(), Error> {
        let client = self.redis().client();
        let _: i64 = self
            .timed(|| client.zrem(self.index_key(user_id), member))
            .await?;
        Ok(())
    }

    /// One round trip: the entries of a user's index, oldest first.
    pub(crate) async fn index_entries(&self, user_id: &str) -> Result<Vec<Entry>, Error> {
        let client = self.redis().client();
        let pairs: Vec<(String, f64)> = self
            .timed(|| client.zrange(self.index_key(user_id), 0, -1, None, false, None, true))
            .await?;
        Ok(pairs
            .into_iter()
            .map(|(member, score)| Entry { member, score })
            .collect())
    }

    /// One round trip (a pipeline): each member's live session, if it has one.
    pub(crate) async fn read_sessions(
        &self,
        members: &[String],
    ) -> Result<Vec<Option<Stored>>, Error> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.redis().client().pipeline();
        for member in members {
            let key = self.key_of(member);
            let _: () = pipeline.hgetall(&key).await?;
            let _: () = pipeline.pttl(&key).await?;
        }
        let replies: Vec<Value> = self.timed(|| pipeline.all()).await?;
        Ok(replies
            .chunks(2)
            .map(|pair| {
                let fields: HashMap<String, String> = pair[0].clone().convert().unwrap_or_default();
                let ttl_ms = pair.get(1).and_then(Value::as_i64).unwrap_or(-2);
                let live = fields.contains_key(model::SESSION_TTL) && ttl_ms > 0;
                live.then(|| Stored {
                    fields,
                    expires_in: Duration::from_millis(ttl_ms.unsigned_abs()),
                })
            })
            .collect())
    }

    /// Prunes entries found dead, keeping those younger than [`PRUNE_GRACE`] and those
    /// re-added since they were read. One round trip, if any is old enough.
    pub(crate) async fn prune(&self, user_id: &str, dead: Vec<Entry>) -> Result<(), Error> {
        if dead.is_empty() {
            return Ok(());
        }
        let mut args = vec![int(PRUNE_GRACE.as_millis() as u64)];
        for entry in dead {
            args.push(text(entry.member));
            args.push(Value::Double(entry.score));
        }
        self.run(&scripts::PRUNE, self.index_key(user_id), args)
            .await?;
        Ok(())
    }

    /// Ends the sessions of index entries (leaving markers), then drops the entries of
    /// the sessions it ended, or found gone or ended already, from the user's index (one
    /// `ZREM`). Returns how many were live. One round trip per session, plus one.
    ///
    /// An entry whose session is live but not tied to this user is kept: it may be a tie
    /// in flight (the index entry is written first), and dropping it would leave that
    /// session out of reach of every later termination. It is handed to
    /// [`prune`](Self::prune), which drops it only once it is older than the grace.
    ///
    /// With `more` (the filter of a "log out everywhere"), an end that finds a session
    /// rotated away re-reads the index: the rotation may have added its new ID after the
    /// index was read. Entries not seen before that `more` accepts are ended in turn,
    /// until a re-read brings nothing new. It is a conflict (after the cleanup) when that
    /// takes more than [`REREADS`] re-reads, or when `keep` (the member of the session
    /// to spare) was itself rotated away meanwhile: its new ID cannot be told from the
    /// others, so it is not followed, and nothing is reported done that was not.
    pub(crate) async fn end_indexed(
        &self,
        user_id: &str,
        entries: Vec<Entry>,
        more: Option<&(dyn Fn(&str) -> bool + Sync)>,
        keep: Option<&str>,
    ) -> Result<usize, Error> {
        let mut seen: HashSet<String> = entries.iter().map(|e| e.member.clone()).collect();
        let (mut pending, mut dead, mut kept) = (entries, Vec::new(), Vec::new());
        let mut ended = 0;
        let mut followed = Ok(());
        let mut round = 0;
        loop {
            // After each read of the index and before ending what it listed: were the
            // session to keep moving to a new ID, that ID could be among them.
            if self.moving(keep).await? {
                followed = Err(Error::new(ErrorKind::Conflict));
                break;
            }
            let mut rotated = false;
            for entry in pending.drain(..) {
                match self
                    .end(&entry.member, EndReason::Terminated, Some(user_id))
                    .await?
                {
                    Ended::OtherUser => kept.push(entry),
                    found => {
                        ended += usize::from(found == Ended::Live);
                        rotated |= found == Ended::Already(EndReason::Rotated);
                        dead.push(entry.member);
                    }
                }
            }
            let Some(more) = more.filter(|_| rotated) else {
                break;
            };
            if round == REREADS {
                followed = Err(Error::new(ErrorKind::Conflict));
                break;
            }
            round += 1;
            pending = self
                .index_entries(user_id)
                .await?
                .into_iter()
                .filter(|e| more(&e.member) && seen.insert(e.member.clone()))
                .collect();
            if pending.is_empty() {
                break;
            }
        }
        // Each is a marker now (which no creation can replace): the entries are dead.
        if !dead.is_empty() {
            let client = self.redis().client();
            let _: i64 = self
                .timed(|| client.zrem(self.index_key(user_id), dead.clone()))
                .await?;
        }
        self.prune(user_id, kept).await?;
        followed.map(|()| ended)
    }

    /// One round trip if `member` is given: whether its session is moving to a new ID (a
    /// rotation's mark on it) or has moved (a `rotated` marker). Its new ID may then be
    /// in the index already, and cannot be told from the others.
    async fn moving(&self, member: Option<&str>) -> Result<bool, Error> {
        let Some(member) = member else {
            return Ok(false);
        };
        let client = self.redis().client();
        let (ended, rotating): (Option<String>, Option<String>) = self
            .timed(|| client.hmget(self.key_of(member), vec![model::ENDED, model::ROTATING]))
            .await?;
        Ok(rotating.is_some() || ended.as_deref() == Some(EndReason::Rotated.as_str()))
    }

    /// One round trip (a pipeline): the `user_id` of each session key.
    pub(crate) async fn owners(&self, keys: &[String]) -> Result<Vec<Option<String>>, Error> {
        let pipeline = self.redis().client().pipeline();
        for key in keys {
            let _: () = pipeline.hget(key, model::USER_ID).await?;
        }
        self.timed(|| pipeline.all()).await
    }

    /// One round trip (a pipeline): `MEMORY USAGE` of each key that holds a live
    /// session (`None` for markers and keys gone meanwhile).
    pub(crate) async fn memory_usage(&self, keys: &[String]) -> Result<Vec<Option<u64>>, Error> {
        let pipeline = self.redis().client().pipeline();
        for key in keys {
            let _: () = pipeline.hexists(key, model::SESSION_TTL).await?;
            let _: () = pipeline.memory_usage(key, None).await?;
        }
        let replies: Vec<Value> = self.timed(|| pipeline.all()).await?;
        Ok(replies
            .chunks(2)
            .map(|pair| {
                let live = pair[0].as_i64() == Some(1);
                pair.get(1).and_then(Value::as_u64).filter(|_| live)
            })
            .collect())
    }

    /// Every key under the prefix, a `SCAN` page at a time, on every primary. A cluster
    /// whose primaries the client does not know is an error: a scan that cannot reach
    /// every primary would miss sessions.
    pub(crate) async fn scan_pages(&self) -> Result<Vec<Vec<String>>, Error> {
        let client = self.redis().client();
        let pattern = format!("{}*", escape_glob(self.prefix()));
        let mut pages = Vec::new();
        for node in super::scripts::primaries(client)? {
            let mut cursor = "0".to_owned();
            loop {
                let page: Value = self
                    .timed(|| node.scan_page(cursor.clone(), pattern.clone(), Some(1000), None))
                    .await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_in_the_prefix_match_literally() {
        assert_eq!(escape_glob("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:");
    }
}
