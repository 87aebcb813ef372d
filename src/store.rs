//! The Redis side: keys, the scripts, and one typed call per step of a request.

use std::{collections::HashSet, future::Future, sync::LazyLock, time::Duration};

use fred::{
    clients::{Client, Pool},
    interfaces::{KeysInterface as _, SortedSetsInterface as _},
    types::{scripts::Script, Value},
};

use crate::{
    config::Config,
    session::{Change, Loaded},
    Error, ErrorKind, SessionId,
};

const COMMON: &str = include_str!("lua/common.lua");

/// A session script: the shared helpers, then `body` run as a function whose result is
/// replied together with `KEYS[1]`, so that [`Store::run`] can check that a reply is for
/// the key it asked about.
fn script(body: &str) -> Script {
    Script::from_lua(format!(
        "{COMMON}\nlocal function main()\n{body}\nend\nreturn {{main(), KEYS[1]}}\n"
    ))
}

static LOAD: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/load.lua")));
static CREATE: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/create.lua")));
static SAVE: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/save.lua")));

/// Slack for internal fields in the load script's size checks.
const INTERNAL_FIELDS: usize = 16;
const INTERNAL_BYTES: usize = 1024;

/// The fred handle the layer sends its commands through: a [`Client`] (one multiplexed
/// connection per server) or a [`Pool`] of them. Build either with
/// [`client_builder`](crate::client_builder) to get timeouts, reconnection and
/// `TCP_NODELAY` right.
#[derive(Clone, Debug)]
pub enum Redis {
    /// One fred client.
    Client(Client),
    /// A round-robin pool of fred clients.
    Pool(Pool),
}

impl Redis {
    /// The client for the next command: the client itself, or the pool's next one.
    #[must_use]
    pub fn client(&self) -> &Client {
        match self {
            Self::Client(client) => client,
            Self::Pool(pool) => pool.next(),
        }
    }
}

impl From<Client> for Redis {
    fn from(client: Client) -> Self {
        Self::Client(client)
    }
}

impl From<Pool> for Redis {
    fn from(pool: Pool) -> Self {
        Self::Pool(pool)
    }
}

/// What loading a session found.
#[derive(Debug)]
pub(crate) enum LoadOutcome {
    Found(Loaded),
    /// No such session: never existed, expired, or destroyed.
    Missing,
    /// The key holds something that is not a usable session.
    Unusable,
}

/// What creating a session found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CreateOutcome {
    Created,
    /// The key exists (an ID collision): nothing written.
    Exists,
    /// The absolute deadline carried by a rotation has passed: nothing written.
    Expired,
}

/// What applying changes to an existing session found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WriteOutcome {
    Applied,
    /// The session was gone (destroyed, rotated away, expired): nothing written.
    Gone,
}

/// Keys, limits and timeouts, shared by every request of one layer.
#[derive(Debug)]
pub(crate) struct Store {
    redis: Redis,
    key_prefix: String,
    plain_keys: bool,
    timeout: Duration,
    touch_interval: u64,
    load_max_fields: usize,
    load_max_bytes: usize,
    absolute_lifetime: u64,
    #[cfg(feature = "encryption")]
    crypto: Option<(std::sync::Arc<crate::KeyRing>, crate::DecryptFailure)>,
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

impl Store {
    pub(crate) fn new(redis: Redis, config: &Config) -> Self {
        let limits = &config.limits;
        // Encrypted values take up to 4/3 of their size plus a nonce, tag and header.
        #[cfg(feature = "encryption")]
        let load_max_bytes = if config.encryption.is_some() {
            limits.max_session_size / 3 * 4 + limits.max_fields * 96 + INTERNAL_BYTES
        } else {
            limits.max_session_size + INTERNAL_BYTES
        };
        #[cfg(not(feature = "encryption"))]
        let load_max_bytes = limits.max_session_size + INTERNAL_BYTES;
        Self {
            redis,
            key_prefix: config.key_prefix.clone(),
            plain_keys: config.plain_keys,
            timeout: config.command_timeout,
            touch_interval: config.touch_interval.map_or(0, |d| d.as_secs()),
            load_max_fields: limits.max_fields + INTERNAL_FIELDS,
            load_max_bytes,
            absolute_lifetime: config.absolute_lifetime.map_or(0, |d| d.as_secs()),
            #[cfg(feature = "encryption")]
            crypto: config
                .encryption
                .clone()
                .map(|ring| (ring, config.decrypt_failure)),
        }
    }

    /// A user field's value as it goes into Redis: encrypted when encryption is on.
    /// Internal fields stay plaintext.
    fn seal(&self, member: &str, field: &str, value: &str) -> Value {
        #[cfg(feature = "encryption")]
        if let Some((ring, _)) = &self.crypto {
            if !crate::RESERVED_FIELDS.contains(&field) {
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
                if crate::RESERVED_FIELDS.contains(&name.as_str()) {
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
                        if *policy == crate::DecryptFailure::RejectSession {
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

    pub(crate) fn redis(&self) -> &Redis {
        &self.redis
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
        format!("{}{member}", self.key_prefix)
    }

    /// The key of a user's index: a sorted set of the members of their sessions, scored
    /// by when each was added. The user id is digested, so any id makes a valid key and
    /// none shows in key names. `:` never occurs in a member, so no index key can be a
    /// session key.
    pub(crate) fn index_key(&self, user_id: &str) -> String {
        format!("{}user:{}", self.key_prefix, crate::id::digest(user_id))
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.key_prefix
    }

    /// One round trip: adds a session to its user's index. The index has no TTL, so
    /// `volatile-*` eviction never drops it; dead entries are pruned when it is read.
    pub(crate) async fn index_add(&self, user_id: &str, id: &SessionId) -> Result<(), Error> {
        let score = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let _: i64 = self
            .timed(|| {
                self.redis.client().zadd(
                    self.index_key(user_id),
                    None,
                    None,
                    false,
                    false,
                    (score, self.member(id)),
                )
            })
            .await?;
        Ok(())
    }

    /// One round trip: removes a session from its user's index.
    pub(crate) async fn index_remove(&self, user_id: &str, member: &str) -> Result<(), Error> {
        let _: i64 = self
            .timed(|| self.redis.client().zrem(self.index_key(user_id), member))
            .await?;
        Ok(())
    }

    /// Runs a command under the command timeout, mapping fred errors to ours. `command`
    /// makes the command's future; it is called again, once and within the same timeout,
    /// if the first attempt met a `MOVED` or `ASK` that fred did not follow (see
    /// `client_builder`): the command did not run, and on `MOVED` fred has refreshed its
    /// slot map, so the second attempt reaches the slot's new owner.
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
            Err(_) => Err(Error::new(ErrorKind::Timeout, None)),
        }
    }

    async fn run(&self, script: &Script, key: String, args: Vec<Value>) -> Result<Value, Error> {
        let reply = self
            .timed(|| script.evalsha_with_reload(self.redis.client(), key.clone(), args.clone()))
            .await?;
        // Every script replies `{result, KEYS[1]}`. A reply for another key means the
        // client handed this command another command's reply (as fred 10.1.0 does after
        // an ASK): never act on it, and never show another session's data.
        match reply {
            Value::Array(mut items) if items.len() == 2 => {
                let echoed = items.pop().and_then(Value::into_string);
                if echoed.as_deref() == Some(key.as_str()) {
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

    /// Loads the scripts into Redis (every primary of a cluster), so the first request
    /// after start does not pay for a `NOSCRIPT` round trip.
    pub(crate) async fn load_scripts(&self) -> Result<(), Error> {
        for script in [&*LOAD, &*CREATE, &*SAVE] {
            self.timed(|| script.load(self.redis.client())).await?;
        }
        Ok(())
    }

    /// One round trip: read the session and refresh its sliding expiry.
    pub(crate) async fn load(&self, id: &SessionId) -> Result<LoadOutcome, Error> {
        let args = vec![
            int(self.touch_interval),
            int(self.load_max_fields as u64),
            int(self.load_max_bytes as u64),
        ];
        let reply = self.run(&LOAD, self.key(id), args).await?;
        let Value::Array(items) = reply else {
            return Err(Error::protocol("load: reply is not an array"));
        };
        let mut items = items.into_iter();
        match items.next().and_then(|v| v.as_i64()) {
            Some(0) => return Ok(LoadOutcome::Missing),
            Some(-1) => return Ok(LoadOutcome::Unusable),
            Some(1) => {}
            _ => return Err(Error::protocol("load: unknown status")),
        }
        let (Some(Value::Array(flat)), Some(ttl_ms)) = (items.next(), items.next()) else {
            return Err(Error::protocol("load: reply too short"));
        };
        let mut fields = Vec::with_capacity(flat.len() / 2);
        let mut flat = flat.into_iter();
        while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
            fields.push((into_string(name), into_string(value)));
        }
        let ttl_ms = ttl_ms.as_i64().unwrap_or(0).max(0);
        let Some(opened) = self.open(self.member(id), fields) else {
            return Ok(LoadOutcome::Unusable);
        };
        Ok(LoadOutcome::Found(Loaded {
            fields: opened.fields,
            expires_in: Duration::from_millis(ttl_ms.unsigned_abs()),
            sealed: opened.sealed,
        }))
    }

    /// One round trip: create a session under `id` unless the key exists.
    pub(crate) async fn create(
        &self,
        id: &SessionId,
        ttl: Duration,
        fields: &[(String, String)],
    ) -> Result<CreateOutcome, Error> {
        let member = self.member(id);
        let mut args = Vec::with_capacity(2 + fields.len() * 2);
        args.push(int(ttl.as_secs()));
        args.push(int(self.absolute_lifetime));
        for (name, value) in fields {
            if name != "last_accessed_at" && name != "session_ttl" {
                args.push(text(name.as_str()));
                args.push(self.seal(member, name, value));
            }
        }
        match self.run(&CREATE, self.key(id), args).await?.as_i64() {
            Some(1) => Ok(CreateOutcome::Created),
            Some(0) => Ok(CreateOutcome::Exists),
            Some(-1) => Ok(CreateOutcome::Expired),
            _ => Err(Error::protocol("create: unknown status")),
        }
    }

    /// One round trip: apply field-level changes if the session still exists.
    pub(crate) async fn save(
        &self,
        id: &SessionId,
        ttl: Option<Duration>,
        changes: Vec<(String, Change)>,
    ) -> Result<WriteOutcome, Error> {
        let args = self.save_args(self.member(id), ttl, changes);
        match self.run(&SAVE, self.key(id), args).await?.as_i64() {
            Some(1) => Ok(WriteOutcome::Applied),
            Some(0) => Ok(WriteOutcome::Gone),
            Some(-2) => Err(Error::protocol(
                "save: an increment met a value that is not an integer",
            )),
            _ => Err(Error::protocol("save: unknown status")),
        }
    }

    /// ARGV of the save script: the TTL, then one op/field/value triple per change.
    pub(crate) fn save_args(
        &self,
        member: &str,
        ttl: Option<Duration>,
        changes: Vec<(String, Change)>,
    ) -> Vec<Value> {
        let mut args = Vec::with_capacity(1 + changes.len() * 3);
        args.push(ttl.map_or_else(|| text(""), |t| int(t.as_secs())));
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

    /// One round trip: delete a session. Returns whether it existed.
    pub(crate) async fn delete(&self, id: &SessionId) -> Result<bool, Error> {
        let deleted: i64 = self.timed(|| self.redis.client().del(self.key(id))).await?;
        Ok(deleted > 0)
    }
}

/// fred's error for a MOVED or ASK it did not follow (`max_redirections` spent): the
/// command was not run.
fn is_redirection(err: &fred::error::Error) -> bool {
    *err.kind() == fred::error::ErrorKind::Routing && err.details() == "Too many redirections."
}

fn into_string(value: Value) -> String {
    match value {
        Value::String(s) => s.to_string(),
        Value::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
        other => other.as_string().unwrap_or_default(),
    }
}
