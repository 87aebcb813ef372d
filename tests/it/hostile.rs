//! Hostile input through the real layer and a real `redis-server`: any bytes as `Cookie`
//! headers (property tests), awkward field names and values, 1 MB values against the
//! limits, the shape and spread of session IDs, and values that a third party wrote
//! straight into Redis.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{body::Body, routing::post, Json, Router};
use http::{header, HeaderValue, Request, StatusCode};
use proptest::{
    prelude::*,
    test_runner::{Config as ProptestConfig, TestCaseError, TestRunner},
};
use serde::{Deserialize, Serialize};
use tower_redis_session::{RedisSessionLayer, Session, SessionError, SessionId, RESERVED_FIELDS};

use crate::support::{
    hardening::{self, key, pool, routes, send, send_request, Gate},
    layer,
    monitor::{self, Monitor},
    resp::Reply,
    Logs, RedisServer,
};

const PREFIX: &str = "session:";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 512,
        ..ProptestConfig::default()
    })
}

/// Commands clients sent since the last call, seen through `MONITOR`: one per round
/// trip, whatever the command (those scripts run are tagged `lua` there and left out).
fn round_trips(monitor: &Monitor) -> u64 {
    monitor::sent_by_clients(&monitor.take(), &[]).count() as u64
}

// ---------------------------------------------------------------------------------------
// Any bytes as Cookie headers

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// An independent reading of the rules: 32 bytes as base64url without padding is 43
/// characters whose last one carries two unused bits, which must be zero.
fn is_id(s: &[u8]) -> bool {
    s.len() == 43
        && s.iter().all(|b| ALPHABET.contains(b))
        && ALPHABET.iter().position(|&c| c == s[42]).unwrap() % 4 == 0
}

/// The session ID an independent reading of the cookie rules finds in these headers: the
/// one `sid` cookie across all of them, if it holds an ID.
fn reference(values: &[Vec<u8>]) -> Option<String> {
    let mut found = Vec::new();
    for value in values {
        for pair in value.split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            if let Some(eq) = pair.iter().position(|&b| b == b'=') {
                if pair[..eq].trim_ascii() == b"sid" {
                    found.push(pair[eq + 1..].trim_ascii());
                }
            }
        }
    }
    match found.as_slice() {
        [one] if is_id(one) => Some(String::from_utf8(one.to_vec()).unwrap()),
        _ => None,
    }
}

/// Bytes a header value can hold (HTAB, visible ASCII, space, obs-text).
fn header_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(b'\t'),
        0x20u8..=0x7e,
        0x80u8..=0xff,
        // The bytes that matter most to a cookie parser, more often.
        prop::sample::select(b";= \"\t,".to_vec()),
    ]
}

/// A piece of a `Cookie` header.
#[derive(Debug, Clone)]
enum Piece {
    Raw(Vec<u8>),
    /// `live[n % live.len()]`.
    Live(usize),
    /// A well-formed ID of a session that was destroyed.
    Dead,
    /// A well-formed ID that no session ever had.
    Unknown,
    /// A live ID with one byte replaced.
    Mutated(usize, usize, u8),
    Text(&'static str),
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "sid=", "sid =", " sid=", "SID=", "sid", "xsid=", "sid=\"", "__Host-sid=", "a=1",
            "=", "sid==", ";", "; ", " ", "\t", ",", "\"",
        ]).prop_map(Piece::Text),
        3 => any::<usize>().prop_map(Piece::Live),
        1 => Just(Piece::Dead),
        1 => Just(Piece::Unknown),
        2 => (any::<usize>(), 0usize..43, header_byte()).prop_map(|(i, p, b)| Piece::Mutated(i, p, b)),
        2 => prop::collection::vec(header_byte(), 0..16).prop_map(Piece::Raw),
    ]
}

/// One `name=value` cookie, often ours.
fn cookie() -> impl Strategy<Value = Vec<Piece>> {
    let id = prop_oneof![
        3 => any::<usize>().prop_map(Piece::Live),
        1 => Just(Piece::Dead),
        1 => Just(Piece::Unknown),
        1 => (any::<usize>(), 0usize..43, header_byte()).prop_map(|(i, p, b)| Piece::Mutated(i, p, b)),
    ];
    prop_oneof![
        3 => (prop::sample::select(vec!["sid=", " sid=", "sid =", "sid= "]), id)
            .prop_map(|(name, id)| vec![Piece::Text(name), id]),
        1 => prop::sample::select(vec!["a=1", "theme=dark", "sid_old=x", "xsid=1"])
            .prop_map(|c| vec![Piece::Text(c)]),
        1 => prop::collection::vec(header_byte().prop_filter("no separator", |b| *b != b';'), 0..12)
            .prop_map(|raw| vec![Piece::Raw(raw)]),
    ]
}

struct Ids {
    live: Vec<String>,
    dead: String,
    unknown: String,
}

fn render(pieces: &[Piece], ids: &Ids) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Raw(bytes) => out.extend_from_slice(bytes),
            Piece::Live(i) => out.extend_from_slice(ids.live[i % ids.live.len()].as_bytes()),
            Piece::Dead => out.extend_from_slice(ids.dead.as_bytes()),
            Piece::Unknown => out.extend_from_slice(ids.unknown.as_bytes()),
            Piece::Mutated(i, pos, byte) => {
                let mut id = ids.live[i % ids.live.len()].as_bytes().to_vec();
                id[*pos] = *byte;
                out.extend_from_slice(&id);
            }
            Piece::Text(text) => out.extend_from_slice(text.as_bytes()),
        }
    }
    out
}

#[test]
fn any_cookie_headers_never_panic_never_adopt_and_reach_redis_only_for_well_formed_ids() {
    let rt = runtime();
    let redis = RedisServer::start_with(&[]);
    // The app logs in as the documented ACL user, which cannot touch a key outside
    // `session:*`: any such access would fail the request.
    let url = redis.create_documented_acl_user("hostile-cookies");
    let app = rt.block_on(async {
        let layer = layer(pool(&url).await).build().unwrap();
        layer.load_scripts().await.unwrap();
        routes(Arc::new(Gate::default())).layer(layer)
    });
    let ids = rt.block_on(async {
        let mut live = Vec::new();
        for _ in 0..3 {
            live.push(send(&app, "POST", "/set/a/1", None).await.new_id().unwrap());
        }
        let dead = send(&app, "POST", "/set/a/1", None).await.new_id().unwrap();
        assert_eq!(
            send(&app, "POST", "/logout", Some(&dead)).await.status,
            StatusCode::OK
        );
        Ids {
            live,
            dead,
            unknown: SessionId::generate().to_string(),
        }
    });

    let monitor = Monitor::start(redis.port()).expect("MONITOR");

    // Headers of well-formed cookies (some of them ours) and headers of any pieces.
    let header = prop_oneof![
        2 => prop::collection::vec(cookie(), 0..4).prop_map(|cookies| {
            let mut pieces = Vec::new();
            for (i, c) in cookies.into_iter().enumerate() {
                if i > 0 {
                    pieces.push(Piece::Text("; "));
                }
                pieces.extend(c);
            }
            pieces
        }),
        1 => prop::collection::vec(piece(), 0..8),
    ];
    let case = (prop::collection::vec(header, 0..=3), any::<bool>());
    // Cases without a well-formed ID, with an unknown one, with a live one.
    let seen = std::cell::RefCell::new([0usize; 3]);
    runner(1000)
        .run(&case, |(headers, write)| {
            let values: Vec<Vec<u8>> = headers.iter().map(|h| render(h, &ids)).collect();
            let expected = reference(&values);
            let live = expected.as_ref().is_some_and(|id| ids.live.contains(id));
            seen.borrow_mut()[usize::from(expected.is_some()) + usize::from(live)] += 1;

            let mut req = Request::builder()
                .method(if write { "POST" } else { "GET" })
                .uri(if write { "/set/b/2" } else { "/whoami" });
            for value in &values {
                req = req.header(header::COOKIE, HeaderValue::from_bytes(value).unwrap());
            }
            round_trips(&monitor);
            let res = rt.block_on(send_request(&app, req.body(Body::empty()).unwrap()));
            let trips = round_trips(&monitor);

            // A write carrying the ID of a session logged out a moment ago (its marker is
            // still there) is refused: the browser may have logged in again meanwhile.
            let refused = write && expected.as_deref() == Some(ids.dead.as_str());
            let status = if refused {
                StatusCode::CONFLICT
            } else {
                StatusCode::OK
            };
            prop_assert_eq!(res.status, status, "{}", res.body);
            // One load for a well-formed ID, one write for a handler that writes: nothing
            // reaches Redis for a cookie that is not exactly one well-formed ID.
            let expected_trips = u64::from(expected.is_some()) + u64::from(write && !refused);
            prop_assert_eq!(trips, expected_trips, "round trips");
            if !write {
                let loaded = res.body.starts_with("loaded=true");
                prop_assert_eq!(loaded, live, "{}", res.body);
                if live {
                    let id = expected.as_deref().unwrap();
                    prop_assert!(res.body.ends_with(id), "{}", res.body);
                }
            }
            // A new ID is the server's own, never one the client sent.
            if let Some(new) = res.new_id() {
                prop_assert!(!live, "a live session got a new ID without rotation");
                let new = new.as_bytes();
                prop_assert!(
                    !values
                        .iter()
                        .any(|v| v.windows(new.len()).any(|w| w == new)),
                    "adopted a client-supplied ID"
                );
            }
            Ok(())
        })
        .unwrap();
    let seen = seen.into_inner();
    println!(
        "cookie property test: 1000 cases ({} without a well-formed ID, {} unknown IDs, {} live IDs)",
        seen[0], seen[1], seen[2]
    );
    assert!(seen.iter().all(|&n| n > 0), "{seen:?}");

    // Everything in Redis is a session under the prefix, with a TTL, keyed by a digest.
    for k in redis.cmd(&["KEYS", "*"]).items() {
        let k = k.text().unwrap();
        assert!(k.starts_with(PREFIX), "key outside the prefix: {k}");
        assert!(
            redis.cmd(&["PTTL", &k]).int().unwrap() > 0,
            "{k} has no TTL"
        );
        for id in ids.live.iter().chain([&ids.dead, &ids.unknown]) {
            assert!(!k.contains(id.as_str()), "raw ID in a key");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Awkward field names and values

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Op {
    Insert(String, String),
    Remove(String),
    Increment(String, i64),
}

/// The reply of `POST /ops`: per change, the value it returned or the error's kind and
/// message.
type OpsReply = Vec<Result<Option<String>, (String, String)>>;

fn kind(err: &SessionError) -> &'static str {
    match err {
        SessionError::Destroyed => "Destroyed",
        SessionError::EmptyFieldName => "EmptyFieldName",
        SessionError::ReservedField { .. } => "ReservedField",
        SessionError::ValueTooLarge { .. } => "ValueTooLarge",
        SessionError::TooManyFields { .. } => "TooManyFields",
        SessionError::SessionTooLarge { .. } => "SessionTooLarge",
        SessionError::NotAnInteger { .. } => "NotAnInteger",
        SessionError::InvalidTtl => "InvalidTtl",
        SessionError::InvalidUserId => "InvalidUserId",
        _ => "other",
    }
}

async fn apply_ops(session: Session, Json(ops): Json<Vec<Op>>) -> Json<OpsReply> {
    let refused = |e: SessionError| (kind(&e).to_owned(), e.to_string());
    Json(
        ops.into_iter()
            .map(|op| match op {
                Op::Insert(name, value) => session.insert(&name, value).map(|()| None),
                Op::Remove(name) => session.remove(&name),
                Op::Increment(name, by) => {
                    session.increment(&name, by).map(|n| Some(n.to_string()))
                }
            })
            .map(|r| r.map_err(refused))
            .collect(),
    )
}

async fn dump(session: Session) -> Json<(bool, Vec<(String, String)>)> {
    Json((session.is_loaded(), session.fields()))
}

fn ops_app(layer: RedisSessionLayer) -> Router {
    Router::new()
        .route("/ops", post(apply_ops))
        .route("/dump", post(dump))
        .layer(layer)
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    fields: usize,
    value: usize,
    session: usize,
}

/// What the session should answer and hold: the crate's documented rules, written again.
#[derive(Debug, Default)]
struct Model {
    fields: HashMap<String, String>,
    dirty: bool,
    /// The session is stored (removing a field it lacks is then still a write).
    stored: bool,
}

impl Model {
    fn size(&self) -> usize {
        self.fields.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    fn check(&self, limits: Limits, field: &str, value: Option<&str>) -> Result<(), &'static str> {
        if field.is_empty() {
            return Err("EmptyFieldName");
        }
        if RESERVED_FIELDS.contains(&field) {
            return Err("ReservedField");
        }
        let Some(value) = value else { return Ok(()) };
        if field.len().max(value.len()) > limits.value {
            return Err("ValueTooLarge");
        }
        let old = self.fields.get(field);
        if old.is_none() && self.fields.len() >= limits.fields {
            return Err("TooManyFields");
        }
        if self.size() - old.map_or(0, |v| field.len() + v.len()) + field.len() + value.len()
            > limits.session
        {
            return Err("SessionTooLarge");
        }
        Ok(())
    }

    fn apply(&mut self, limits: Limits, op: &Op) -> Result<Option<String>, &'static str> {
        match op {
            Op::Insert(name, value) => {
                self.check(limits, name, Some(value))?;
                self.fields.insert(name.clone(), value.clone());
                self.dirty = true;
                Ok(None)
            }
            Op::Remove(name) => {
                self.check(limits, name, None)?;
                // Removing a field a new session lacks is no change.
                self.dirty |= self.stored || self.fields.contains_key(name);
                Ok(self.fields.remove(name))
            }
            Op::Increment(name, by) => {
                let current = match self.fields.get(name) {
                    Some(v) => v.parse::<i64>().map_err(|_| "NotAnInteger")?,
                    None => 0,
                };
                let new = current.checked_add(*by).ok_or("NotAnInteger")?;
                self.check(limits, name, Some(&new.to_string()))?;
                self.fields.insert(name.clone(), new.to_string());
                self.dirty = true;
                Ok(Some(new.to_string()))
            }
        }
    }

    fn sorted(&self) -> Vec<(String, String)> {
        let mut fields: Vec<_> = self
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        fields.sort_unstable();
        fields
    }
}

/// An integer to Rust's `parse::<i64>` in another form than Rust (and Redis) writes it.
fn non_canonical(v: &str) -> bool {
    v.parse::<i64>().is_ok_and(|n| n.to_string() != v)
}

/// Names that parsers and protocols trip on, the reserved ones, and some near the limits.
fn awkward_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "", "a", "n", "\0", "\n", "\r\n", " ", "a b", "é", "🦀", "\u{202e}", "\u{feff}",
            ":", "*", "{a}", "session:x", "created_at", "session_ttl", "user_id", "CREATED_AT",
        ]).prop_map(str::to_owned),
        2 => prop::collection::vec(any::<char>(), 0..6).prop_map(String::from_iter),
        1 => (38usize..=42).prop_map(|n| "k".repeat(n)),
    ]
}

fn awkward_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "", "\0", "\0\0\0", "\n", "\r\n", "a\0b", "é", "🦀🦀", "\u{202e}rtl", "\u{feff}",
            "0", "1", "-1", "999999999999999999", "-999999999999999999", " 1", "1 ", "1e3",
            "true", "null", "\"quoted\"", "\\", "%s%n", "'; DROP TABLE", "\u{7f}",
        ]).prop_map(str::to_owned),
        2 => prop::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter),
        1 => (36usize..=44).prop_map(|n| "x".repeat(n)),
        1 => (17usize..=22).prop_map(|n| "é".repeat(n)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (awkward_name(), awkward_value()).prop_map(|(n, v)| Op::Insert(n, v)),
        1 => awkward_name().prop_map(Op::Remove),
        // Stored values Redis does not read as integers ("01", "+1") and sums near the i64
        // limits are left to the ignored test below, until src/ handles them.
        2 => (awkward_name(), prop_oneof![-2i64..=2, Just(1 << 40), Just(-(1 << 40))])
            .prop_map(|(n, by)| Op::Increment(n, by)),
    ]
}

/// The user fields of a stored session, as raw bytes.
fn stored_fields(redis: &RedisServer, id: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let reply = redis.cmd(&["HGETALL", &key(PREFIX, id)]);
    let items = reply.items();
    let mut fields: Vec<_> = items
        .chunks(2)
        .map(|kv| {
            (
                kv[0].bytes().unwrap().to_vec(),
                kv[1].bytes().unwrap().to_vec(),
            )
        })
        .filter(|(k, _)| !RESERVED_FIELDS.iter().any(|r| r.as_bytes() == k.as_slice()))
        .collect();
    fields.sort_unstable();
    fields
}

fn as_bytes(fields: &[(String, String)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<_> = fields
        .iter()
        .map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes()))
        .collect();
    out.sort_unstable();
    out
}

async fn post_json<T: Serialize, R: for<'de> Deserialize<'de>>(
    app: &Router,
    path: &str,
    sid: Option<&str>,
    body: &T,
) -> (hardening::Res, Option<R>) {
    let mut req = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(sid) = sid {
        req = req.header(header::COOKIE, format!("sid={sid}"));
    }
    let res = send_request(
        app,
        req.body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    )
    .await;
    let parsed = serde_json::from_str(&res.body).ok();
    (res, parsed)
}

/// Sends `ops` and checks every answer against the model; returns the response.
async fn run_ops(
    app: &Router,
    sid: Option<&str>,
    ops: &[Op],
    model: &mut Model,
    limits: Limits,
) -> Result<hardening::Res, TestCaseError> {
    let (res, reply) = post_json::<_, OpsReply>(app, "/ops", sid, &ops).await;
    prop_assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let reply = reply.unwrap();
    for (op, got) in ops.iter().zip(reply) {
        // "01" or "+1" reads as an i64 to Rust but not to Redis: refusing to increment it
        // is right too (see the ignored test below).
        if let (Op::Increment(name, _), Err((kind, _))) = (op, &got) {
            if kind == "NotAnInteger" && model.fields.get(name).is_some_and(|v| non_canonical(v)) {
                continue;
            }
        }
        let expected = model.apply(limits, op);
        match (&got, &expected) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{:?}", op),
            (Err((kind, message)), Err(expected)) => {
                prop_assert_eq!(kind, expected, "{:?}", op);
                // A clear one-line message, whatever bytes the name holds.
                prop_assert!(!message.is_empty() && !message.contains(['\n', '\r', '\0']));
            }
            _ => prop_assert!(false, "{:?}: got {:?}, expected {:?}", op, got, expected),
        }
    }
    Ok(res)
}

async fn check_stored(
    app: &Router,
    redis: &RedisServer,
    id: &str,
    model: &Model,
) -> Result<(), TestCaseError> {
    let (res, dumped) =
        post_json::<_, (bool, Vec<(String, String)>)>(app, "/dump", Some(id), &()).await;
    prop_assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let (loaded, fields) = dumped.unwrap();
    prop_assert!(loaded);
    prop_assert_eq!(&fields, &model.sorted());
    prop_assert_eq!(stored_fields(redis, id), as_bytes(&model.sorted()));
    Ok(())
}

#[test]
fn awkward_field_names_and_values_round_trip_exactly_or_are_refused_clearly() {
    let rt = runtime();
    let redis = RedisServer::start_with(&[]);
    let limits = Limits {
        fields: 4,
        value: 40,
        session: 100,
    };
    let app = rt.block_on(async {
        let layer = layer(pool(&redis.url()).await)
            .max_fields(limits.fields)
            .max_value_size(limits.value)
            .max_session_size(limits.session)
            .build()
            .unwrap();
        ops_app(layer)
    });
    let batch = || prop::collection::vec(op(), 0..8);
    let stats = std::cell::Cell::new((0usize, 0usize));
    runner(256)
        .run(&(batch(), batch()), |(first, second)| {
            rt.block_on(async {
                // A new session...
                let mut model = Model::default();
                let res = run_ops(&app, None, &first, &mut model, limits).await?;
                let Some(id) = res.new_id() else {
                    prop_assert!(!model.dirty, "changes were made but no session");
                    return Ok(());
                };
                stats.set((stats.get().0 + 1, stats.get().1));
                check_stored(&app, &redis, &id, &model).await?;
                // ...then changes to the stored one (the save script: set, delete, HINCRBY).
                model.dirty = false;
                model.stored = true;
                let res = run_ops(&app, Some(&id), &second, &mut model, limits).await?;
                prop_assert!(res.new_id().is_none() && !res.clears_cookie());
                stats.set((stats.get().0, stats.get().1 + usize::from(model.dirty)));
                check_stored(&app, &redis, &id, &model).await
            })
        })
        .unwrap();
    println!(
        "field property test: 256 cases, {} sessions stored, {} changed in a second request",
        stats.get().0,
        stats.get().1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_megabyte_values_round_trip_exactly_or_are_refused_clearly() {
    let redis = RedisServer::start_with(&[]);
    // Every char up to U+07FF (NUL, newlines, quotes, two-byte UTF-8), over and over.
    let awkward: String = (0u32..0x800)
        .filter_map(char::from_u32)
        .cycle()
        .scan(0usize, |len, c| {
            *len += c.len_utf8();
            (*len <= 1 << 20).then_some(c)
        })
        .collect();
    let mib = 1 << 20;
    assert!(awkward.len() > mib - 4 && awkward.len() <= mib);

    // Default limits (64 KiB a value): refused at the point of change, nothing recorded.
    let app = ops_app(layer(pool(&redis.url()).await).build().unwrap());
    let (res, reply) = post_json::<_, OpsReply>(
        &app,
        "/ops",
        None,
        &[
            Op::Insert("big".into(), awkward.clone()),
            Op::Insert(awkward.clone(), "v".into()),
        ],
    )
    .await;
    let reply = reply.unwrap();
    for r in &reply {
        let (kind, message) = r.as_ref().unwrap_err();
        assert_eq!(kind, "ValueTooLarge");
        assert!(message.contains("limit of 65536"), "{}", &message[..200]);
    }
    assert!(res.new_id().is_none(), "nothing was recorded");

    // Limits raised: a 1 MiB value and a 1 MiB name go through Redis byte for byte.
    let app = ops_app(
        layer(pool(&redis.url()).await)
            .max_value_size(2 * mib)
            .max_session_size(4 * mib)
            .build()
            .unwrap(),
    );
    let (res, reply) = post_json::<_, OpsReply>(
        &app,
        "/ops",
        None,
        &[
            Op::Insert("big".into(), awkward.clone()),
            Op::Insert(format!("{awkward}!"), "name".into()),
        ],
    )
    .await;
    assert!(reply.unwrap().iter().all(Result::is_ok));
    let id = res.new_id().unwrap();
    let mut expected = vec![
        ("big".to_owned(), awkward.clone()),
        (format!("{awkward}!"), "name".to_owned()),
    ];
    expected.sort_unstable();
    assert!(stored_fields(&redis, &id) == as_bytes(&expected));
    let (_, dumped) =
        post_json::<_, (bool, Vec<(String, String)>)>(&app, "/dump", Some(&id), &()).await;
    let (loaded, fields) = dumped.unwrap();
    assert!(
        loaded && fields == expected,
        "the 1 MiB values came back changed"
    );
    // A third 1 MiB value would pass the value limit but not the session limit.
    let (_, reply) = post_json::<_, OpsReply>(
        &app,
        "/ops",
        Some(&id),
        &[
            Op::Insert("c".into(), awkward.clone()),
            Op::Insert("d".into(), awkward.clone()),
        ],
    )
    .await;
    let reply = reply.unwrap();
    assert!(reply[0].is_ok());
    assert_eq!(reply[1].as_ref().unwrap_err().0, "SessionTooLarge");
}

// ---------------------------------------------------------------------------------------
// Session IDs

#[tokio::test]
async fn session_ids_are_unbiased_and_those_the_layer_sets_are_well_formed_and_distinct() {
    use base64::Engine as _;
    // Every one of the 256 bits is set in about half of 20,000 IDs (6 standard deviations:
    // a false alarm about once in two million runs), and every byte value is about as
    // common as the others. src/id.rs checks shape and uniqueness over 100,000 IDs.
    const N: usize = 20_000;
    let mut ones = [0u32; 256];
    let mut bytes = [0u32; 256];
    for _ in 0..N {
        let id = SessionId::generate();
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(id.as_str())
            .unwrap();
        assert_eq!(raw.len(), 32);
        for (i, byte) in raw.iter().enumerate() {
            bytes[usize::from(*byte)] += 1;
            for bit in 0..8 {
                ones[i * 8 + bit] += u32::from(byte >> bit & 1);
            }
        }
    }
    let half = N as f64 / 2.0;
    let sd = (N as f64 / 4.0).sqrt();
    for (bit, &n) in ones.iter().enumerate() {
        assert!(
            (f64::from(n) - half).abs() < 6.0 * sd,
            "bit {bit} set in {n} of {N}"
        );
    }
    let per_value = (N * 32) as f64 / 256.0;
    let sd = (per_value * (255.0 / 256.0)).sqrt();
    for (value, &n) in bytes.iter().enumerate() {
        assert!(
            (f64::from(n) - per_value).abs() < 6.0 * sd,
            "byte {value} seen {n} times"
        );
    }

    // The IDs the layer puts in cookies: the documented shape, all different, never in a key.
    let redis = RedisServer::start_with(&[]);
    let app =
        routes(Arc::new(Gate::default())).layer(layer(pool(&redis.url()).await).build().unwrap());
    let mut seen = HashSet::new();
    for _ in 0..200 {
        let id = send(&app, "POST", "/set/a/1", None).await.new_id().unwrap();
        assert!(is_id(id.as_bytes()), "{id}");
        assert!(seen.insert(id), "an ID repeated");
    }
    let keys = redis.cmd(&["KEYS", "*"]);
    assert_eq!(keys.items().len(), 200);
    for k in keys.items() {
        let k = k.text().unwrap();
        assert!(!seen.iter().any(|id| k.contains(id.as_str())));
    }
}

// ---------------------------------------------------------------------------------------
// Values written into Redis by a third party

/// Writes a valid session hash (the internal fields and a TTL) under a fresh ID, then
/// lets `spoil` change it; returns the ID.
fn planted(redis: &RedisServer, spoil: impl FnOnce(&str)) -> String {
    let id = SessionId::generate().to_string();
    let k = key(PREFIX, &id);
    redis.cmd(&[
        "HSET",
        &k,
        "created_at",
        "2026-01-01T00:00:00+00:00",
        "last_accessed_at",
        "2026-01-01T00:00:00+00:00",
        "session_ttl",
        "600",
        "username",
        "ferris",
    ]);
    redis.cmd(&["EXPIRE", &k, "600"]);
    spoil(&k);
    id
}

fn net_out(redis: &RedisServer) -> u64 {
    redis
        .info_field("stats", "total_net_output_bytes")
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_planted_by_a_third_party_give_an_anonymous_session_quickly_and_cost_little() {
    let redis = RedisServer::start_with(&[]);
    // The planted sessions were created in January: no absolute lifetime, so that only
    // the planted values decide.
    let app = routes(Arc::new(Gate::default())).layer(
        layer(pool(&redis.url()).await)
            .absolute_lifetime(None)
            .build()
            .unwrap(),
    );
    let ten_mb = "x".repeat(10 << 20);

    type Spoil<'a> = Box<dyn FnOnce(&str) + 'a>;
    fn spoil<'a>(f: impl FnOnce(&str) + 'a) -> Spoil<'a> {
        Box::new(f)
    }
    let r = &redis;
    let cases: Vec<(&str, Spoil<'_>, bool)> =
        vec![
            (
                "a 10 MB field",
                spoil(|k| {
                    r.cmd(&["HSET", k, "big", &ten_mb]);
                }),
                false,
            ),
            (
                "a 10 MB field name",
                spoil(|k| {
                    r.cmd(&["HSET", k, &ten_mb, "x"]);
                }),
                false,
            ),
            (
                "100,000 fields",
                spoil(|k| {
                    let mut args = vec!["HSET".to_owned(), k.to_owned()];
                    for i in 0..100_000 {
                        args.push(format!("f{i}"));
                        args.push("v".into());
                    }
                    r.cmd(&args);
                }),
                false,
            ),
            (
                "no internal fields",
                spoil(|k| {
                    r.cmd(&["HDEL", k, "created_at", "last_accessed_at", "session_ttl"]);
                }),
                false,
            ),
            (
                "no created_at",
                spoil(|k| {
                    r.cmd(&["HDEL", k, "created_at"]);
                }),
                false,
            ),
            (
                "a string",
                spoil(|k| {
                    r.cmd(&["DEL", k]);
                    r.cmd(&["SET", k, "x", "EX", "600"]);
                }),
                false,
            ),
            (
                "a list",
                spoil(|k| {
                    r.cmd(&["DEL", k]);
                    r.cmd(&["RPUSH", k, "created_at", "x"]);
                }),
                false,
            ),
            (
                "a sorted set",
                spoil(|k| {
                    r.cmd(&["DEL", k]);
                    r.cmd(&["ZADD", k, "1", "x"]);
                }),
                false,
            ),
            (
                "garbage created_at",
                spoil(|k| {
                    r.cmd(&["HSET", k, "created_at", "yesterday"]);
                }),
                false,
            ),
            (
                "garbage absolute_expires_at",
                spoil(|k| {
                    r.cmd(&["HSET", k, "absolute_expires_at", "\0"]);
                }),
                false,
            ),
            (
                "past absolute_expires_at",
                spoil(|k| {
                    r.cmd(&["HSET", k, "absolute_expires_at", "2000-01-01T00:00:00Z"]);
                }),
                false,
            ),
        ]
        .into_iter()
        .chain(["0", "-5", "abc", "1.5", "nan", ""].into_iter().map(
            |ttl| -> (&str, Spoil<'_>, bool) {
                (
                    "a session_ttl out of range",
                    spoil(move |k| {
                        r.cmd(&["HSET", k, "session_ttl", ttl]);
                    }),
                    false,
                )
            },
        ))
        .chain([
            (
                "no TTL",
                spoil(|k: &str| {
                    r.cmd(&["PERSIST", k]);
                }),
                true,
            ),
            (
                "garbage last_accessed_at",
                spoil(|k: &str| {
                    r.cmd(&["HSET", k, "last_accessed_at", "\n"]);
                }),
                true,
            ),
            (
                "a non-UTF-8 value",
                spoil(|k: &str| {
                    r.cmd(&[b"HSET".as_slice(), k.as_bytes(), b"raw", b"\xff\xfe\x00"]);
                }),
                true,
            ),
        ])
        .collect();

    // Every event the layer logs for these requests, at every level.
    let logs = Logs::capture(tracing::Level::TRACE);
    let mut planted_ids = Vec::new();
    let mut report = Vec::new();
    for (name, spoil, usable) in cases {
        let id = planted(&redis, spoil);
        planted_ids.push(id.clone());
        let k = key(PREFIX, &id);
        let before_bytes = net_out(&redis);
        let started = Instant::now();
        let warnings = logs.lines_at("WARN").len();
        let res = logs.during(send(&app, "GET", "/whoami", Some(&id))).await;
        if name == "a string" {
            // A key of the wrong type is worth a warning (naming the session by a digest).
            assert!(
                logs.lines_at("WARN").len() > warnings,
                "{name}: no warning logged: {}",
                logs.text()
            );
        }
        let took = started.elapsed();
        let sent = net_out(&redis) - before_bytes;
        assert_eq!(res.status, StatusCode::OK, "{name}: {}", res.body);
        assert!(took < Duration::from_secs(2), "{name}: {took:?}");
        assert_eq!(
            res.body.starts_with("loaded=true"),
            usable,
            "{name}: {}",
            res.body
        );
        if !usable {
            // Nothing of the planted value reached the app.
            assert!(sent < 4096, "{name}: Redis sent {sent} bytes");
            assert!(res.clears_cookie(), "{name}: the cookie is cleared");
        } else {
            // A usable session always leaves the request with a TTL.
            let ttl = redis.cmd(&["PTTL", &k]).int().unwrap();
            assert!(ttl > 0, "{name}: no TTL after the request ({ttl})");
        }
        report.push(format!(
            "{name}: {} in {took:.0?}, {sent} bytes from Redis",
            if usable { "loaded" } else { "anonymous" }
        ));
    }
    logs.assert_no_raw_ids(&planted_ids);
    println!(
        "planted values ({} cases): {}",
        report.len(),
        report.join("; ")
    );
    let peak = redis.info_field("memory", "used_memory_peak_human");
    let lua = redis.info_field("memory", "used_memory_lua_human");
    println!("Redis memory after them: peak {peak}, Lua {lua}");

    // A non-UTF-8 value is shown lossily, and left byte for byte by a save of another
    // field (writes are field-level).
    let id = planted(&redis, |k| {
        redis.cmd(&[b"HSET".as_slice(), k.as_bytes(), b"raw", b"\xff\xfe\x00"]);
    });
    assert_eq!(
        send(&app, "GET", "/read/raw", Some(&id)).await.body,
        "\u{fffd}\u{fffd}\0"
    );
    assert_eq!(
        send(&app, "POST", "/set/other/1", Some(&id)).await.status,
        StatusCode::OK
    );
    let raw = redis.cmd(&["HGET", &key(PREFIX, &id), "raw"]);
    assert_eq!(raw, Reply::Bulk(Some(b"\xff\xfe\x00".to_vec())));
}

// ---------------------------------------------------------------------------------------
// Found by the property tests above, and fixed in src/.

async fn stored_then_incremented(
    app: &Router,
    stored: &str,
    by: i64,
) -> (String, hardening::Res, OpsReply) {
    let (res, _) =
        post_json::<_, OpsReply>(app, "/ops", None, &[Op::Insert("n".into(), stored.into())]).await;
    let id = res.new_id().unwrap();
    let (res, reply) =
        post_json::<_, OpsReply>(app, "/ops", Some(&id), &[Op::Increment("n".into(), by)]).await;
    (id, res, reply.unwrap_or_default())
}

/// A stored value that Rust reads as an i64 but Redis's HINCRBY does not ("01", "+1",
/// "-0") is refused where the increment is made; sums near the i64 limits (and a stored
/// i64::MIN, 20 characters) are applied exactly by the save script.
#[tokio::test]
async fn increments_of_stored_integers_are_applied_exactly_or_refused_at_the_point_of_change() {
    let redis = RedisServer::start_with(&[]);
    let app = ops_app(layer(pool(&redis.url()).await).build().unwrap());
    let mut failures = Vec::new();
    for (stored, by) in [
        ("-9223372036854775808", i64::MAX),
        ("9223372036854775807", -1),
        ("9200000000000000000", 1),
        ("-1000000000000000000", 1),
        ("-9200000000000000000", -1),
        ("01", 1),
        ("+1", 1),
        ("-0", 1),
        ("00", 1),
    ] {
        let (id, res, reply) = stored_then_incremented(&app, stored, by).await;
        let now = redis.cmd(&["HGET", &key(PREFIX, &id), "n"]).text().unwrap();
        let ok = res.status == StatusCode::OK
            && match reply.first() {
                Some(Ok(Some(n))) => *n == now,
                Some(Err((kind, _))) => kind == "NotAnInteger" && now == stored,
                _ => false,
            };
        if !ok {
            failures.push(format!(
                "{stored} + {by}: {} {:?}, stored {now}",
                res.status, res.body
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Every TTL the crate accepts (up to 2^31 - 1 s, 68 years) is one Redis's `PEXPIRE`
/// takes, so no write can fail half-way and leave a key without a TTL; larger ones are
/// refused where they are set, and a stored `session_ttl` out of range (or `inf`) is no
/// session rather than an error on every load.
#[tokio::test]
async fn every_ttl_that_is_accepted_is_one_redis_can_store() {
    let redis = RedisServer::start_with(&[]);
    let app = Router::new()
        .route(
            "/ttl/{secs}",
            post(
                |s: Session, axum::extract::Path(secs): axum::extract::Path<u64>| async move {
                    if s.set_ttl(Duration::from_secs(secs)).is_ok() {
                        "ok"
                    } else {
                        "refused"
                    }
                },
            ),
        )
        .layer(
            layer(pool(&redis.url()).await)
                .absolute_lifetime(None)
                .build()
                .unwrap(),
        );
    let whoami = routes(Arc::new(Gate::default())).layer(
        layer(pool(&redis.url()).await)
            .absolute_lifetime(None)
            .build()
            .unwrap(),
    );
    let mut failures = Vec::new();
    // The largest TTL accepted is accepted: set at creation and on a stored session, kept
    // to the second by Redis, and loaded.
    let max = (1u64 << 31) - 1;
    let res = send(&app, "POST", &format!("/ttl/{max}"), None).await;
    assert_eq!(res.body, "ok", "2^31 - 1 s refused at creation");
    let id = res
        .new_id()
        .expect("a session with the largest TTL is created");
    let res = send(&app, "POST", &format!("/ttl/{max}"), Some(&id)).await;
    assert_eq!(
        (res.status, res.body.as_str()),
        (StatusCode::OK, "ok"),
        "2^31 - 1 s refused on a stored session"
    );
    let pttl = redis.cmd(&["PTTL", &key(PREFIX, &id)]).int().unwrap();
    let max_ms = i64::try_from(max).unwrap() * 1000;
    assert!(
        (max_ms - 60_000..=max_ms).contains(&pttl),
        "PTTL {pttl} ms for a TTL of {max} s"
    );
    let read = send(&whoami, "GET", "/whoami", Some(&id)).await;
    assert!(read.body.starts_with("loaded=true"), "{}", read.body);
    for secs in [
        1u64 << 31,
        10u64.pow(12),
        10u64.pow(14),
        10u64.pow(15),
        (i64::MAX / 2000) as u64,
    ] {
        let res = send(&app, "POST", &format!("/ttl/{secs}"), None).await;
        if res.body == "refused" {
            continue; // refused at the point of change: fine
        }
        let Some(id) = res.new_id() else {
            failures.push(format!("{secs} s: create {} {:?}", res.status, res.body));
            continue;
        };
        let res = send(&app, "POST", &format!("/ttl/{secs}"), Some(&id)).await;
        let read = send(&whoami, "GET", "/whoami", Some(&id)).await;
        if res.status != StatusCode::OK || !read.body.starts_with("loaded=true") {
            failures.push(format!(
                "{secs} s: save {} / load {} {:?}",
                res.status, read.status, read.body
            ));
        }
    }
    // A failed create must not leave a hash behind without a TTL.
    for k in redis.cmd(&["KEYS", "*"]).items() {
        let k = k.text().unwrap();
        let ttl = redis.cmd(&["PTTL", &k]).int().unwrap();
        if ttl == -1 {
            failures.push(format!("session key without a TTL left behind: {k}"));
        }
    }
    for planted_ttl in ["99999999999999999999", "inf", "1e400"] {
        let id = planted(&redis, |k| {
            redis.cmd(&["HSET", k, "session_ttl", planted_ttl]);
        });
        let res = send(&whoami, "GET", "/whoami", Some(&id)).await;
        if res.status != StatusCode::OK || !res.body.starts_with("loaded=false") {
            failures.push(format!(
                "stored session_ttl {planted_ttl}: load {} {:?}",
                res.status, res.body
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
