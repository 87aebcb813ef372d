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
//! Only the helpers a script calls go into it: every `local function` is a closure that
//! Redis builds again on each call of the script, so an unused one is paid for on every
//! request. `common.lua` is a sequence of blocks separated by blank lines; a block that
//! defines `local function name(` is kept when `name(` occurs in the body or in a kept
//! block, and blocks keep their order, so a helper is defined before those that use it.

use std::sync::LazyLock;

use fred::types::scripts::Script;

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
}

#[cfg(test)]
mod tests {
    use super::*;

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
