//! An ID that collides with a live session, against a real `redis-server`.
//!
//! A collision of 256-bit random IDs does not happen by chance, so these tests make one:
//! [`planted`](crate::id::planted), compiled into this unit-test build only, hands out
//! chosen IDs before random ones. They run on a `current_thread` runtime, so every
//! `SessionId::generate` of a request (in the handler and in the write-back) runs on the
//! test's thread, where the IDs are planted and the log capture is the default.

#[path = "../../tests/support/logs.rs"]
mod logs;
#[path = "../../tests/support/reaper.rs"]
mod reaper;
#[path = "../../tests/support/resp.rs"]
mod resp;
#[path = "../../tests/support/server.rs"]
mod server;

use std::{collections::HashMap, convert::Infallible};

use bytes::Bytes;
use fred::prelude::*;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use tower::{service_fn, Layer as _, ServiceExt as _};

use self::{logs::Logs, server::RedisServer};
use crate::{id::planted, RedisSessionLayer, Session, SessionId, SessionManager};

/// The handler: `/set/<field>/<value>`, `/login/<user>` (ties the session to a user),
/// `/rotate`.
async fn handler(req: Request<Empty<Bytes>>) -> Result<Response<String>, Infallible> {
    let session = req
        .extensions()
        .get::<Session>()
        .cloned()
        .expect("behind the layer");
    let parts: Vec<&str> = req.uri().path().split('/').skip(1).collect();
    let result = match parts.as_slice() {
        ["set", field, value] => session.insert(field, *value),
        ["login", user] => session
            .insert("username", *user)
            .and_then(|()| session.set_user_id(*user)),
        ["rotate"] => {
            session.rotate_id();
            Ok(())
        }
        _ => panic!("no route {}", req.uri()),
    };
    result.expect("a change within the limits");
    Ok(Response::new("ok".to_owned()))
}

struct App {
    redis: RedisServer,
    client: Client,
    layer: RedisSessionLayer,
    logs: Logs,
}

struct Answer {
    status: StatusCode,
    set_cookie: Option<String>,
    /// The store error the layer put in the response, with its cause.
    error: Option<String>,
}

impl Answer {
    /// The ID the response sets, if it sets one.
    fn id(&self) -> Option<String> {
        let value = self
            .set_cookie
            .as_deref()?
            .split(';')
            .next()?
            .split_once('=')?
            .1;
        (!value.is_empty()).then(|| value.to_owned())
    }
}

const PREFIX: &str = "session:";

impl App {
    async fn start() -> Self {
        let redis = RedisServer::start();
        let client = crate::client_builder(&redis.url())
            .unwrap()
            .build()
            .unwrap();
        client.init().await.unwrap();
        let layer = RedisSessionLayer::builder(client.clone())
            .cookie_name("sid")
            .key_prefix(PREFIX)
            .build()
            .unwrap();
        layer.load_scripts().await.unwrap();
        Self {
            redis,
            client,
            layer,
            logs: Logs::capture(tracing::Level::DEBUG),
        }
    }

    async fn post(&self, path: &str, sid: Option<&str>) -> Answer {
        let mut req = Request::builder().method("POST").uri(path);
        if let Some(sid) = sid {
            req = req.header(header::COOKIE, format!("sid={sid}"));
        }
        let service = self.layer.layer(service_fn(handler));
        let res = self
            .logs
            .during(service.oneshot(req.body(Empty::new()).unwrap()))
            .await
            .unwrap();
        let (parts, body) = res.into_parts();
        let _ = body.collect().await.unwrap();
        let mut set_cookies = parts.headers.get_all(header::SET_COOKIE).iter();
        let set_cookie = set_cookies.next().map(|v| v.to_str().unwrap().to_owned());
        assert!(set_cookies.next().is_none(), "one Set-Cookie at most");
        Answer {
            status: parts.status,
            set_cookie,
            error: parts.extensions.get::<crate::Error>().map(|e| {
                let cause = std::error::Error::source(e).map(ToString::to_string);
                format!("{e}: {}", cause.unwrap_or_default())
            }),
        }
    }

    /// Creates a session holding `field=value` and returns its ID.
    async fn create(&self, field: &str, value: &str) -> SessionId {
        let res = self.post(&format!("/set/{field}/{value}"), None).await;
        assert_eq!(res.status, StatusCode::OK);
        SessionId::parse(&res.id().expect("a new session sets its cookie")).unwrap()
    }

    fn key(&self, id: &SessionId) -> String {
        format!("{PREFIX}{}", id.digest())
    }

    /// The session's hash and its key's TTL in ms.
    async fn stored(&self, id: &SessionId) -> (HashMap<String, String>, i64) {
        let key = self.key(id);
        (
            self.client.hgetall(&key).await.unwrap(),
            self.client.pttl(&key).await.unwrap(),
        )
    }

    async fn all_keys(&self) -> Vec<String> {
        let reply = self.redis.cmd(&["KEYS", "*"]);
        let mut keys: Vec<String> = reply.items().iter().filter_map(resp::Reply::text).collect();
        keys.sort();
        keys
    }

    fn manager(&self) -> SessionManager {
        self.layer.manager()
    }

    /// Sends a request whose `SessionId::generate` calls draw `ids` first (and random IDs
    /// after), with the logs cleared before it; checks that it drew them all.
    async fn post_drawing(
        &self,
        ids: &[&SessionId],
        path: &str,
        sid: Option<&SessionId>,
    ) -> Answer {
        self.logs.clear();
        planted::plant(ids.iter().map(|id| (*id).clone()));
        let res = self.post(path, sid.map(SessionId::as_str)).await;
        assert_eq!(planted::left(), 0, "every planted ID was drawn");
        res
    }

    /// Fails if a log line holds a raw ID.
    fn assert_no_raw_ids(&self, ids: &[&SessionId]) {
        let ids: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
        self.logs.assert_no_raw_ids(&ids);
    }
}

/// The victim's session, untouched: same fields, same TTL give or take the time the test
/// took.
async fn assert_untouched(app: &App, id: &SessionId, before: &(HashMap<String, String>, i64)) {
    let (hash, pttl) = app.stored(id).await;
    assert_eq!(
        hash, before.0,
        "the live session at the colliding ID changed"
    );
    assert!(
        pttl <= before.1 && pttl > before.1 - 5_000,
        "its TTL was reset: {pttl} ms, was {} ms",
        before.1
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_new_session_whose_id_is_taken_gets_another_and_never_overwrites_the_live_one() {
    let app = App::start().await;
    let victim = app.create("username", "victim").await;
    let before = app.stored(&victim).await;
    let other = SessionId::generate();

    let res = app
        .post_drawing(&[&victim, &other], "/set/username/mallory", None)
        .await;

    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        res.id().as_deref(),
        Some(other.as_str()),
        "the new session gets the next ID, never the taken one"
    );
    assert_untouched(&app, &victim, &before).await;
    let (created, pttl) = app.stored(&other).await;
    assert_eq!(created["username"], "mallory");
    assert!(pttl > 0);
    let warnings = app.logs.lines_at("WARN");
    assert_eq!(
        warnings.len(),
        1,
        "one warning for the collision: {warnings:?}"
    );
    assert!(warnings[0].contains("collision"), "{warnings:?}");
    app.assert_no_raw_ids(&[&victim, &other]);
    assert_eq!(
        app.all_keys().await,
        {
            let mut keys = vec![app.key(&victim), app.key(&other)];
            keys.sort();
            keys
        },
        "nothing else written"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_new_tied_session_whose_id_is_taken_leaves_the_live_one_to_its_own_user() {
    let app = App::start().await;
    let victim = app.create("username", "victim").await;
    let before = app.stored(&victim).await;
    let other = SessionId::generate();

    let res = app
        .post_drawing(&[&victim, &other], "/login/mallory", None)
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.id().as_deref(), Some(other.as_str()));
    assert_untouched(&app, &victim, &before).await;
    assert_eq!(app.stored(&other).await.0["user_id"], "mallory");

    // The taken ID's index entry (written first, as for every tied create) gives mallory
    // no hold on the victim's session: not listed, and "log out everywhere" spares it.
    let manager = app.manager();
    let listed = manager.list("mallory").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].handle, manager.handle(&other));
    assert_eq!(manager.terminate_all("mallory", None).await.unwrap(), 1);
    assert_untouched(&app, &victim, &before).await;
    assert_eq!(app.logs.lines_at("WARN").len(), 1);
    app.assert_no_raw_ids(&[&victim, &other]);
}

#[tokio::test(flavor = "current_thread")]
async fn three_id_collisions_in_a_row_give_a_clear_error_and_overwrite_nothing() {
    let app = App::start().await;
    let victim = app.create("username", "victim").await;
    let before = app.stored(&victim).await;
    let keys = app.all_keys().await;

    let res = app
        .post_drawing(&[&victim; 3], "/set/username/mallory", None)
        .await;

    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.set_cookie, None, "no cookie for a session never saved");
    let error = res.error.expect("the store error is in the response");
    assert!(error.contains("three session ID collisions"), "{error}");
    assert_untouched(&app, &victim, &before).await;
    assert_eq!(app.all_keys().await, keys, "nothing written");
    assert_eq!(
        app.logs.lines_at("WARN").len(),
        3,
        "a warning per collision"
    );
    let errors = app.logs.lines_at("ERROR");
    assert!(
        errors.len() == 1 && errors[0].contains("three session ID collisions"),
        "{errors:?}"
    );
    app.assert_no_raw_ids(&[&victim]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_rotation_whose_new_id_is_taken_moves_to_another_and_never_overwrites_the_live_one() {
    let app = App::start().await;
    let victim = app.create("username", "victim").await;
    let before = app.stored(&victim).await;
    let mine = app.create("username", "ferris").await;

    let res = app.post_drawing(&[&victim], "/rotate", Some(&mine)).await;

    assert_eq!(res.status, StatusCode::OK);
    let new = SessionId::parse(&res.id().expect("a rotation sets the new ID")).unwrap();
    assert_ne!(new, victim, "never the taken ID");
    assert_ne!(new, mine);
    assert_untouched(&app, &victim, &before).await;
    assert_eq!(app.stored(&new).await.0["username"], "ferris");
    assert_eq!(app.stored(&mine).await.0["ended"], "rotated");
    let warnings = app.logs.lines_at("WARN");
    assert!(
        warnings.len() == 1 && warnings[0].contains("collision"),
        "{warnings:?}"
    );
    app.assert_no_raw_ids(&[&victim, &mine, &new]);
}

#[tokio::test(flavor = "current_thread")]
async fn three_id_collisions_in_a_rotation_give_a_clear_error_and_overwrite_nothing() {
    let app = App::start().await;
    let victim = app.create("username", "victim").await;
    let before = app.stored(&victim).await;
    let mine = app.create("username", "ferris").await;
    let keys = app.all_keys().await;

    let res = app
        .post_drawing(&[&victim; 3], "/rotate", Some(&mine))
        .await;

    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.set_cookie, None, "the browser keeps the ID it has");
    let error = res.error.expect("the store error is in the response");
    assert!(error.contains("three session ID collisions"), "{error}");
    assert_untouched(&app, &victim, &before).await;
    assert_eq!(app.all_keys().await, keys, "no key written");
    let (hash, _) = app.stored(&mine).await;
    assert_eq!(hash["username"], "ferris", "the session stays where it was");
    assert_eq!(
        app.logs.lines_at("WARN").len(),
        3,
        "a warning per collision"
    );
    app.assert_no_raw_ids(&[&victim, &mine]);
}
