//! The Lua scripts, assembled: the shared helpers (`lua/common.lua`) the script uses,
//! then its body run as a function whose result is replied together with `KEYS[1]`:
//!
//! ```text
//! <the helpers of common.lua that the body calls, directly or through another helper>
//! local function main()
//!   <body>
//! end
//! return {main(), KEYS[1]}
//! ```
//!
//! On the wire every reply is therefore a two-element array, `[result, key]`, and
//! [`Store::run`](super::Store) checks the key before it reads the result (see
//! `client_builder` for why). Each body's header comment states its contract: the one
//! key it touches, its ARGV and its result.
//!
//! The same helpers and bodies also make one Redis Functions library, for
//! [`ScriptMode::Functions`](crate::ScriptMode::Functions) (see [`functions_library`]):
//! its text is generated here from the same files, never kept twice.
//!
//! Only the helpers a script calls go into it: every `local function` is a closure that
//! Redis builds again on each call of the script, so an unused one is paid for on every
//! request. `common.lua` is a sequence of blocks separated by blank lines; a block that
//! defines `local function name(` is kept when `name(` occurs in the body or in a kept
//! block, and blocks keep their order, so a helper is defined before those that use it.

use std::{fmt::Write as _, ops::Deref, sync::LazyLock};

use fred::{
    clients::{Client, WithOptions},
    interfaces::{ClientLike as _, FunctionInterface as _},
    types::{config::Options, scripts::Script, Value},
};

use crate::{client::Redis, error::Error};

const COMMON: &str = include_str!("lua/common.lua");

/// The full text of a script, as sent to Redis.
fn assemble(body: &str) -> String {
    let helpers = helpers_for(body);
    format!("{helpers}\nlocal function main()\n{body}\nend\nreturn {{main(), KEYS[1]}}\n")
}

/// The name a block of `common.lua` defines (`None` for a comment-only block).
fn defines(block: &str) -> Option<&str> {
    let rest = block
        .lines()
        .find_map(|line| line.strip_prefix("local function "))?;
    rest.split('(').next()
}

/// Whether `text` calls `name`: `name(` not preceded by a character of an identifier.
fn calls(text: &str, name: &str) -> bool {
    let pattern = format!("{name}(");
    text.match_indices(&pattern).any(|(at, _)| {
        !text[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// The blocks of `common.lua` that `body` needs, in their order in the file.
fn helpers_for(body: &str) -> String {
    let blocks: Vec<&str> = COMMON.split("\n\n").collect();
    let mut kept = vec![false; blocks.len()];
    // A kept block can only need blocks before it, so one pass from the end suffices.
    for i in (0..blocks.len()).rev() {
        let Some(name) = defines(blocks[i]) else {
            continue;
        };
        kept[i] =
            calls(body, name) || (i + 1..blocks.len()).any(|j| kept[j] && calls(blocks[j], name));
    }
    let mut out = String::new();
    for (block, _) in blocks.iter().zip(&kept).filter(|(_, kept)| **kept) {
        out.push_str(block.trim_matches('\n'));
        out.push_str("\n\n");
    }
    out
}

/// One session script: its text for `EVALSHA`, and its function in the library.
pub(crate) struct Lua {
    /// `lua/<name>.lua`.
    file: &'static str,
    body: &'static str,
    script: LazyLock<Script>,
}

impl Lua {
    /// Its name: the file name without `.lua`, as in the metrics label and the function's
    /// name.
    pub(crate) fn name(&self) -> &'static str {
        let file = self.file;
        file.strip_prefix("lua/")
            .and_then(|f| f.strip_suffix(".lua"))
            .unwrap_or(file)
    }

    /// The name of its function in the library.
    pub(crate) fn function(&self) -> &'static str {
        LIBRARY
            .functions
            .iter()
            .find(|(name, _)| *name == self.name())
            .map_or("", |(_, function)| function.as_str())
    }
}

/// The script as `EVALSHA` runs it (so `&LOAD` is also a `&Script`).
impl Deref for Lua {
    type Target = Script;

    fn deref(&self) -> &Script {
        &self.script
    }
}

macro_rules! scripts {
    ($($(#[$doc:meta])* $name:ident = $file:literal;)+) => {
        $(
            $(#[$doc])*
            pub(crate) static $name: Lua = Lua {
                file: $file,
                body: include_str!($file),
                script: LazyLock::new(|| Script::from_lua(assemble(include_str!($file)))),
            };
        )+
        /// Every script, for loading them all at start.
        pub(crate) fn all() -> [&'static Lua; [$(stringify!($name)),+].len()] {
            [$(&$name),+]
        }
        /// The text of a script by file name, as sent to Redis (`lua/common.lua`: the
        /// shared helpers alone).
        pub(crate) fn source(name: &str) -> Option<String> {
            match name {
                "lua/common.lua" => Some(COMMON.to_owned()),
                $($file => Some(assemble(include_str!($file))),)+
                _ => None,
            }
        }
    };
}

scripts! {
    /// Reads a session and refreshes its sliding expiry.
    LOAD = "lua/load.lua";
    /// What is left of a live session's TTL, before a read sends its cookie again.
    LIVE_TTL = "lua/live_ttl.lua";
    /// Writes a new session, only if its key is free.
    CREATE = "lua/create.lua";
    /// Applies field-level changes, only if the session still exists.
    SAVE = "lua/save.lua";
    /// Marks a session as rotating and returns its current contents.
    BEGIN_ROTATE = "lua/begin_rotate.lua";
    /// Turns a rotated session's old key into a marker.
    FINISH_ROTATE = "lua/finish_rotate.lua";
    /// Lifts the mark of a rotation that will not finish.
    ABANDON_ROTATE = "lua/abandon_rotate.lua";
    /// Ends a session, leaving a marker.
    END = "lua/end.lua";
    /// Adds a session to its user's index, scored by Redis's clock.
    INDEX_ADD = "lua/index_add.lua";
    /// Removes dead entries from a user's index.
    PRUNE = "lua/prune.lua";
    /// Drops a session's entry from the index of the user it was tied to before.
    INDEX_DROP = "lua/index_drop.lua";
}

// ---------------------------------------------------------------------------------------
// The Redis Functions library

/// The library of [`ScriptMode::Functions`](crate::ScriptMode::Functions): its name, its
/// text for `FUNCTION LOAD`, and each script's function.
struct Library {
    name: String,
    code: String,
    /// (script name, function name), in the order of [`all`].
    functions: Vec<(&'static str, String)>,
    /// The function that answers the library's name, for checking it is loaded.
    version: String,
}

/// Where the library's text holds its name until the name (which depends on the text) is
/// known.
const NAME_SLOT: &str = "@library@";

/// Whether running `script` on a session key may change what a load of it returns: every
/// script but `load` (whose only writes are the sliding expiry it reports, and which
/// fills the read cache itself) and `live_ttl` (which only reads).
pub(crate) fn writes(script: &Lua) -> bool {
    !matches!(script.name(), "load" | "live_ttl")
}

/// The flags of a script's function.
///
/// Out of memory, Redis refuses a function as a whole unless it has `allow-oom`, while a
/// script run by `EVALSHA` (no flags) is refused only at its first write that could
/// allocate (`HSET`, `ZADD`, ...; not `DEL`, `ZREM`, `PEXPIRE`). To answer as `EVALSHA`
/// does: `load` must still serve reads (and refresh the TTL), and `end`, `finish_rotate`
/// and `prune` start by freeing memory, as `abandon_rotate` only frees, so they get
/// `allow-oom`; `live_ttl` only reads (`no-writes`, which Redis runs out of memory too); `create`, `save`,
/// `begin_rotate` and `index_add` exist to write, and are refused. One difference
/// remains: out of memory, `load` also writes its `last_accessed_at` stamp (a field
/// rewritten in place), which `EVALSHA` refuses.
fn flags(name: &str) -> &'static str {
    match name {
        "load" | "end" | "finish_rotate" | "abandon_rotate" | "prune" | "index_drop" => {
            "{'allow-oom'}"
        }
        "live_ttl" => "{'no-writes'}",
        _ => "{}",
    }
}

static LIBRARY: LazyLock<Library> = LazyLock::new(|| {
    let scripts = all();
    let bodies: Vec<&str> = scripts.iter().map(|s| s.body).collect();
    let mut code = String::from(
        "-- tower-redis-session: the session scripts as Redis Functions, generated from the\n\
         -- crate's Lua files. Load with FUNCTION LOAD REPLACE on every primary. The name\n\
         -- changes with the code, so an app only ever calls the functions it was built with.\n\
         -- Each function takes one key and replies {result, KEYS[1]}, as under EVALSHA.\n\n",
    );
    code.push_str(&helpers_for(&bodies.join("\n")));
    for script in scripts {
        let _ = write!(
            code,
            "local function script_{}(KEYS, ARGV)\n{}\nend\n\n",
            script.name(),
            script.body.trim_end()
        );
    }
    let _ = write!(
        code,
        "local lib = '{NAME_SLOT}'\n\
         local function register(name, body, flags)\n  \
           redis.register_function{{\n    \
             function_name = lib .. '_' .. name,\n    \
             callback = function(keys, args) return {{body(keys, args), keys[1]}} end,\n    \
             flags = flags,\n  \
           }}\n\
         end\n"
    );
    for script in scripts {
        let name = script.name();
        let _ = writeln!(code, "register('{name}', script_{name}, {})", flags(name));
    }
    code.push_str(
        "redis.register_function{\n  \
           function_name = lib .. '_version',\n  \
           callback = function() return lib end,\n  \
           flags = {'no-writes'},\n\
         }\n",
    );
    let digest = fred::util::sha1_hash(&code);
    let name = format!("tower_redis_session_{}", &digest[..12]);
    let code = format!("#!lua name={name}\n{}", code.replace(NAME_SLOT, &name));
    Library {
        functions: scripts
            .iter()
            .map(|s| (s.name(), format!("{name}_{}", s.name())))
            .collect(),
        version: format!("{name}_version"),
        name,
        code,
    }
});

/// The Redis Functions library that [`ScriptMode::Functions`](crate::ScriptMode::Functions)
/// calls: the text to load with `FUNCTION LOAD REPLACE`, on every primary, once per
/// deployment of a new version of the crate (see [`load_functions`], which does that).
///
/// It is generated from the same Lua files as the scripts `EVALSHA` runs, and its name
/// ([`functions_library_name`]) and every function's name end in a digest of this text:
/// a layer only ever calls the library of its own version of the crate, and libraries of
/// two versions can be loaded side by side during a rolling deployment.
///
/// ```
/// let code = tower_redis_session::functions_library();
/// let name = tower_redis_session::functions_library_name();
/// assert!(code.starts_with(&format!("#!lua name={name}\n")));
/// ```
#[must_use]
pub fn functions_library() -> &'static str {
    &LIBRARY.code
}

/// The name of the [`functions_library`]: `tower_redis_session_` and a digest of its
/// text, e.g. for `FUNCTION LIST LIBRARYNAME tower_redis_session_` or for deleting a
/// library of an older version with `FUNCTION DELETE`.
#[must_use]
pub fn functions_library_name() -> &'static str {
    &LIBRARY.name
}

/// Loads the [`functions_library`] into Redis with `FUNCTION LOAD REPLACE`: into the
/// server, or every primary of a cluster (replicas get it through replication, so a
/// failover keeps it). Run it at deploy time, before the app starts, as a user allowed
/// `FUNCTION LOAD`; a layer in [`ScriptMode::Functions`](crate::ScriptMode::Functions)
/// never loads anything itself. Loading the same library again changes nothing. Needs
/// Redis 7.0 or later.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let admin = tower_redis_session::connect("redis://deployer:PASSWORD@127.0.0.1:6379").await?;
/// tower_redis_session::load_functions(admin).await?;
/// # Ok(()) }
/// ```
///
/// A node added to a cluster later needs it too: run it again after adding one.
///
/// # Errors
///
/// Redis is unreachable, refused the library (the user may not `FUNCTION LOAD`; Redis is
/// older than 7.0), or a cluster's primaries are not known.
pub async fn load_functions(redis: impl Into<Redis>) -> Result<(), Error> {
    let redis = redis.into();
    for node in primaries(redis.client())? {
        let loaded: Result<Value, _> = node.function_load(true, functions_library()).await;
        loaded.map_err(explain)?;
    }
    Ok(())
}

/// Checks that the library is loaded on the server, or every primary of a cluster: one
/// call of its `version` function each, within the layer's command timeout.
pub(crate) async fn check_library(store: &super::Store) -> Result<(), Error> {
    let version = LIBRARY.version.as_str();
    for node in primaries(store.redis().client())? {
        let reply: Value = store
            .timed(|| async {
                node.fcall(version, Vec::<String>::new(), Vec::<Value>::new())
                    .await
                    .map_err(explain)
            })
            .await?;
        if reply.as_str().as_deref() != Some(LIBRARY.name.as_str()) {
            return Err(Error::protocol(
                "the functions library answered another name",
            ));
        }
    }
    Ok(())
}

/// Calls a script's function (`FCALL`) on `key`.
pub(crate) async fn fcall(
    client: &Client,
    script: &Lua,
    key: bytes::Bytes,
    args: Vec<Value>,
) -> Result<Value, fred::error::Error> {
    client
        .fcall(script.function(), key, args)
        .await
        .map_err(explain)
}

/// fred's error for a function call or load, saying what to do when the library is
/// missing or Redis has no functions.
fn explain(err: fred::error::Error) -> fred::error::Error {
    let details = err.details();
    let hint = if details.starts_with("ERR Function not found") {
        format!(
            "the Redis Functions library {} is not loaded on this server (a layer in \
             ScriptMode::Functions never loads scripts itself): load it at deploy time with \
             tower_redis_session::load_functions, or FUNCTION LOAD REPLACE with the text of \
             tower_redis_session::functions_library(), on every primary",
            LIBRARY.name
        )
    } else if details.starts_with("ERR unknown command")
        && (details.to_ascii_lowercase().contains("fcall")
            || details.to_ascii_lowercase().contains("function"))
    {
        "Redis Functions (ScriptMode::Functions) need Redis 7.0 or later".to_owned()
    } else {
        return err;
    };
    fred::error::Error::new(err.kind().clone(), format!("{details}: {hint}"))
}

/// The client on every primary of a cluster, or on the one server: where the library
/// must be, and what a full scan reads. A cluster whose primaries the client does not
/// know is an error.
pub(crate) fn primaries(client: &Client) -> Result<Vec<WithOptions<Client>>, Error> {
    use fred::interfaces::ClusterInterface as _;
    if !client.is_clustered() {
        return Ok(vec![client.with_options(&Options::default())]);
    }
    let primaries = client
        .cached_cluster_state()
        .map(|state| state.unique_primary_nodes())
        .unwrap_or_default();
    if primaries.is_empty() {
        return Err(Error::new(crate::error::ErrorKind::Unavailable));
    }
    Ok(primaries
        .into_iter()
        .map(|server| client.with_cluster_node(server))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_check_skips_exactly_the_reserved_fields() {
        let block = COMMON
            .split("\n\n")
            .find(|block| defines(block) == Some("fits_after"))
            .unwrap();
        let table = block
            .split_once("local internal = {")
            .and_then(|(_, rest)| rest.split_once('}'))
            .unwrap()
            .0;
        let mut listed: Vec<&str> = table
            .split(',')
            .map(|entry| entry.split('=').next().unwrap().trim())
            .collect();
        let mut reserved = crate::model::RESERVED_FIELDS.to_vec();
        listed.sort_unstable();
        reserved.sort_unstable();
        assert_eq!(listed, reserved);
    }

    #[test]
    fn every_helper_block_defines_one_function() {
        for block in COMMON.split("\n\n") {
            let n = block
                .lines()
                .filter(|l| l.starts_with("local function "))
                .count();
            assert!(
                n <= 1,
                "a block of common.lua defines {n} functions:\n{block}"
            );
            if n == 0 {
                assert!(
                    block
                        .lines()
                        .all(|l| l.trim().is_empty() || l.starts_with("--")),
                    "a block of common.lua without a function holds code:\n{block}"
                );
            }
        }
    }

    #[test]
    fn the_functions_library_is_made_of_the_same_helpers_and_bodies() {
        let code = functions_library();
        let name = functions_library_name();
        assert!(code.starts_with(&format!("#!lua name={name}\n")));
        assert_eq!(name.len(), "tower_redis_session_".len() + 12);
        for script in all() {
            assert!(code.contains(script.body.trim_end()), "{}", script.file);
            // Every helper the script's EVALSHA text has, the library has too.
            for block in helpers_for(script.body).split("\n\n") {
                assert!(code.contains(block.trim()), "{}: {block}", script.file);
            }
            let function = script.function();
            assert_eq!(function, format!("{name}_{}", script.name()));
            assert!(code.contains(&format!("register('{}', script_{0},", script.name())));
        }
        assert!(!code.contains(NAME_SLOT));
    }

    #[test]
    fn scripts_carry_only_the_helpers_they_use() {
        let load = source("lua/load.lua").unwrap();
        assert!(load.contains("local function read_session("));
        assert!(
            load.contains("local function days_from_civil("),
            "parse_time needs it"
        );
        assert!(!load.contains("local function call_chunked("));
        let end = source("lua/end.lua").unwrap();
        assert!(!end.contains("local function parse_time("));
    }
}
