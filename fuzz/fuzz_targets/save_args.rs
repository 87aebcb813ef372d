//! Any sequence of session changes (awkward names and values, limits, counters, TTLs,
//! user ties, rotation, logout): every call answers as a model of the session says, never
//! panics, and the write-back the save script would receive decodes to exactly the
//! session's fields, within the limits, with no reserved field but the user tie.
#![no_main]

use std::collections::HashMap;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tower_redis_session::{fuzzing, Session, SessionError, RESERVED_FIELDS};

// The layer's default limits, which `Session::detached()` has.
const MAX_FIELDS: usize = 256;
const MAX_VALUE: usize = 64 * 1024;
const MAX_SESSION: usize = 256 * 1024;
const MAX_TTL_SECS: u64 = (i64::MAX / 1000 / 2) as u64;

#[derive(Arbitrary, Debug)]
enum Name {
    Short(u8),
    Reserved(u8),
    Any(String),
}

impl Name {
    fn get(&self) -> String {
        match self {
            // Few distinct names, so changes hit the same fields again.
            Self::Short(n) => {
                ["a", "", "n", "\0", "é", "a\nb", "🦀", "x y"][usize::from(n % 8)].to_owned()
            }
            Self::Reserved(n) => {
                RESERVED_FIELDS[usize::from(*n) % RESERVED_FIELDS.len()].to_owned()
            }
            Self::Any(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Insert(Name, String),
    /// A value of `len % 70_000` bytes: around the value and session limits.
    InsertBig(Name, u32, u8),
    Remove(Name),
    Increment(Name, i64),
    SetTtl(u64),
    SetUserId(String),
    Rotate,
    Destroy,
}

#[derive(Default)]
struct Model {
    fields: HashMap<String, String>,
    tie: Option<String>,
    dirty: bool,
    destroyed: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Destroyed,
    Empty,
    Reserved,
    ValueTooLarge,
    TooManyFields,
    SessionTooLarge,
    NotAnInteger,
    InvalidTtl,
    InvalidUserId,
}

fn refusal(err: &SessionError) -> Refusal {
    match err {
        SessionError::Destroyed => Refusal::Destroyed,
        SessionError::EmptyFieldName => Refusal::Empty,
        SessionError::ReservedField { .. } => Refusal::Reserved,
        SessionError::ValueTooLarge { .. } => Refusal::ValueTooLarge,
        SessionError::TooManyFields { .. } => Refusal::TooManyFields,
        SessionError::SessionTooLarge { .. } => Refusal::SessionTooLarge,
        SessionError::NotAnInteger { .. } => Refusal::NotAnInteger,
        SessionError::InvalidTtl => Refusal::InvalidTtl,
        SessionError::InvalidUserId => Refusal::InvalidUserId,
        other => panic!("unexpected error {other:?}"),
    }
}

impl Model {
    fn size(&self) -> usize {
        self.fields.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    fn check(&self, field: &str, value: Option<&str>) -> Result<(), Refusal> {
        if self.destroyed {
            return Err(Refusal::Destroyed);
        }
        if field.is_empty() {
            return Err(Refusal::Empty);
        }
        if RESERVED_FIELDS.contains(&field) {
            return Err(Refusal::Reserved);
        }
        let Some(value) = value else { return Ok(()) };
        if field.len().max(value.len()) > MAX_VALUE {
            return Err(Refusal::ValueTooLarge);
        }
        let old = self.fields.get(field);
        if old.is_none() && self.fields.len() >= MAX_FIELDS {
            return Err(Refusal::TooManyFields);
        }
        let new_size =
            self.size() - old.map_or(0, |v| field.len() + v.len()) + field.len() + value.len();
        if new_size > MAX_SESSION {
            return Err(Refusal::SessionTooLarge);
        }
        Ok(())
    }

    fn insert(&mut self, field: &str, value: &str) -> Result<(), Refusal> {
        self.check(field, Some(value))?;
        self.fields.insert(field.to_owned(), value.to_owned());
        self.dirty = true;
        Ok(())
    }

    fn increment(&mut self, field: &str, by: i64) -> Result<i64, Refusal> {
        let current = match self.fields.get(field) {
            Some(v) => v.parse::<i64>().map_err(|_| Refusal::NotAnInteger)?,
            None => 0,
        };
        let new = current.checked_add(by).ok_or(Refusal::NotAnInteger)?;
        self.insert(field, &new.to_string())?;
        Ok(new)
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let session = Session::detached();
    let mut model = Model::default();
    for op in ops.iter().take(64) {
        match op {
            Op::Insert(name, value) => {
                let name = name.get();
                let got = session
                    .insert(&name, value.as_str())
                    .map_err(|e| refusal(&e));
                assert_eq!(got, model.insert(&name, value), "insert {name:?}");
            }
            Op::InsertBig(name, len, byte) => {
                let name = name.get();
                let value = char::from(b'!' + byte % 90)
                    .to_string()
                    .repeat(*len as usize % 70_000);
                let got = session
                    .insert(&name, value.as_str())
                    .map_err(|e| refusal(&e));
                assert_eq!(
                    got,
                    model.insert(&name, &value),
                    "insert {name:?} ({} bytes)",
                    value.len()
                );
            }
            Op::Remove(name) => {
                let name = name.get();
                let got = session.remove(&name).map_err(|e| refusal(&e));
                let expected = model.check(&name, None).map(|()| {
                    model.dirty = true;
                    model.fields.remove(&name)
                });
                assert_eq!(got, expected, "remove {name:?}");
            }
            Op::Increment(name, by) => {
                let name = name.get();
                let got = session.increment(&name, *by).map_err(|e| refusal(&e));
                // "01" or "+1" reads as an i64 to Rust but not to Redis's HINCRBY:
                // refusing to increment it is right too.
                let non_canonical = model
                    .fields
                    .get(&name)
                    .is_some_and(|v| v.parse::<i64>().is_ok_and(|n| n.to_string() != *v));
                if !(non_canonical && got == Err(Refusal::NotAnInteger)) {
                    assert_eq!(
                        got,
                        model.increment(&name, *by),
                        "increment {name:?} by {by}"
                    );
                }
            }
            Op::SetTtl(secs) => {
                let got = session
                    .set_ttl(Duration::from_secs(*secs))
                    .map_err(|e| refusal(&e));
                let expected = if *secs == 0 || *secs > MAX_TTL_SECS {
                    Err(Refusal::InvalidTtl)
                } else if model.destroyed {
                    Err(Refusal::Destroyed)
                } else {
                    model.dirty = true;
                    Ok(())
                };
                assert_eq!(got, expected, "set_ttl {secs}");
            }
            Op::SetUserId(user) => {
                let got = session.set_user_id(user.as_str()).map_err(|e| refusal(&e));
                let expected = if model.destroyed {
                    Err(Refusal::Destroyed)
                } else if user.is_empty() || user.len() > MAX_VALUE {
                    Err(Refusal::InvalidUserId)
                } else {
                    model.tie = Some(user.clone());
                    model.dirty = true;
                    Ok(())
                };
                assert_eq!(got, expected, "set_user_id {user:?}");
            }
            Op::Rotate => session.rotate_id(),
            Op::Destroy => {
                session.destroy();
                model = Model {
                    destroyed: true,
                    ..Model::default()
                };
            }
        }
        // Reads see this request's own changes.
        let mut fields: Vec<_> = model
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        fields.sort_unstable();
        assert_eq!(session.fields(), fields);
        assert_eq!(session.user_id(), model.tie);
    }

    // The write-back: nothing for an untouched or destroyed new session; otherwise the
    // TTL, then one set per field, which decode to exactly the fields (and the user tie).
    let Some(args) = fuzzing::save_args(&session) else {
        assert!(!model.dirty || model.destroyed, "changes but no write-back");
        return;
    };
    assert!(
        model.dirty && !model.destroyed,
        "a write-back without changes"
    );
    assert!(
        session.id().is_some(),
        "a write-back needs an ID for the cookie"
    );
    let (ttl, triples) = args.split_first().expect("the TTL comes first");
    assert!(ttl.parse::<u64>().is_ok(), "TTL {ttl:?}");
    assert_eq!(triples.len() % 3, 0, "op/field/value triples");
    let mut written = HashMap::new();
    for triple in triples.chunks(3) {
        assert_eq!(triple[0], "s", "a new session is written with sets only");
        let field = &triple[1];
        assert!(
            !RESERVED_FIELDS.contains(&field.as_str()) || field == "user_id",
            "reserved field {field:?} in the write-back"
        );
        assert!(
            written.insert(field.clone(), triple[2].clone()).is_none(),
            "{field:?} twice"
        );
    }
    assert!(model.fields.len() <= MAX_FIELDS);
    assert!(model.size() <= MAX_SESSION);
    let mut expected = model.fields;
    if let Some(user) = model.tie {
        expected.insert("user_id".to_owned(), user);
    }
    assert_eq!(written, expected);
});
