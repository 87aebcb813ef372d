//! The Lua scripts, assembled: the shared helpers (`lua/common.lua`), then one script's
//! body run as a function whose result is replied together with `KEYS[1]`:
//!
//! ```text
//! <common.lua>
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

use std::sync::LazyLock;

use fred::types::scripts::Script;

const COMMON: &str = include_str!("lua/common.lua");

/// The full text of a script, as sent to Redis.
fn assemble(body: &str) -> String {
    format!("{COMMON}\nlocal function main()\n{body}\nend\nreturn {{main(), KEYS[1]}}\n")
}

macro_rules! scripts {
    ($($(#[$doc:meta])* $name:ident = $file:literal;)+) => {
        $(
            $(#[$doc])*
            pub(crate) static $name: LazyLock<Script> =
                LazyLock::new(|| Script::from_lua(assemble(include_str!($file))));
        )+
        /// Every script, for loading them all at start.
        pub(crate) fn all() -> [&'static Script; [$(stringify!($name)),+].len()] {
            [$(&*$name),+]
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
    /// Writes a new session, only if its key is free.
    CREATE = "lua/create.lua";
    /// Applies field-level changes, only if the session still exists.
    SAVE = "lua/save.lua";
    /// Marks a session as rotating and returns its current contents.
    BEGIN_ROTATE = "lua/begin_rotate.lua";
    /// Turns a rotated session's old key into a marker.
    FINISH_ROTATE = "lua/finish_rotate.lua";
    /// Ends a session, leaving a marker.
    END = "lua/end.lua";
    /// Adds a session to its user's index, scored by Redis's clock.
    INDEX_ADD = "lua/index_add.lua";
    /// Removes dead entries from a user's index.
    PRUNE = "lua/prune.lua";
}
