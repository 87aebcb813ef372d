//! A TCP proxy in front of Redis that holds a connection's requests once a chosen
//! command goes through: a slow network, or a command that times out and lands late.

use std::sync::Arc;

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::Notify,
};

/// A TCP proxy in front of Redis that forwards everything until a client sends
/// `trigger` for the `nth` time; then `seen` is notified and that connection's requests
/// are held: until `release` is notified, or for good without one.
pub async fn holding_proxy(
    upstream: u16,
    trigger: Vec<u8>,
    nth: usize,
    release: Option<Arc<Notify>>,
) -> (u16, Arc<Notify>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Notify::new());
    let notify = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
            let (trigger, notify, release) =
                (trigger.clone(), Arc::clone(&notify), release.clone());
            tokio::spawn(async move {
                let (mut window, mut count) = (Vec::<u8>::new(), 0);
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let Ok(n) = cr.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    window.extend_from_slice(&buf[..n]);
                    let found = window
                        .windows(trigger.len())
                        .filter(|w| *w == trigger.as_slice())
                        .count();
                    let keep = window.len().saturating_sub(trigger.len() - 1);
                    window.drain(..keep);
                    if count < nth && count + found >= nth {
                        notify.notify_one();
                        match &release {
                            Some(release) => release.notified().await,
                            // Held for good: the command never reaches Redis.
                            None => std::future::pending::<()>().await,
                        }
                    }
                    count += found;
                    if sw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

/// What a call of the layer's script `name` (`create`, `save`, ...) carries on the wire in
/// the test's script mode, for [`holding_proxy`]'s trigger: its SHA1 under `EVALSHA`, the
/// end of its function's name under `FCALL`.
pub fn script_trigger(name: &str) -> Vec<u8> {
    if super::script_mode() == tower_redis_session::ScriptMode::Functions {
        format!("_{name}").into_bytes()
    } else {
        let source =
            tower_redis_session::__private::script_source(&format!("lua/{name}.lua")).unwrap();
        fred::util::sha1_hash(&source).into_bytes()
    }
}
