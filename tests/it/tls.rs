//! Redis over TLS (`rediss://`), with a CA the test made: the layer works through it, and
//! a server certificate from another CA is refused when the client starts.
//!
//! A `rediss://` URL alone trusts the system's CAs (native-tls if that feature is on,
//! else rustls with the platform's roots). For a private CA, set fred's `Config::tls`
//! on the builder, as [`tls_client`] does.

use std::time::Duration;

use http::StatusCode;
use tower_redis_session::{
    client_builder,
    fred::{prelude::*, types::config::TlsConfig},
};

use crate::support::{tls::TlsServer, TestApp};

/// `client_builder(rediss://...)` with `tls` as fred's TLS configuration, connected.
async fn tls_client(server: &TlsServer, tls: TlsConfig) -> Result<Client, Error> {
    let mut builder = client_builder(&server.url())?;
    builder.with_config(|config| config.tls = Some(tls));
    let client = builder.build()?;
    match tokio::time::timeout(Duration::from_secs(15), client.init()).await {
        Ok(result) => result.map(|_| client),
        Err(_) => panic!("init() neither connected nor failed within 15 s"),
    }
}

async fn start() -> TlsServer {
    tokio::task::spawn_blocking(TlsServer::start).await.unwrap()
}

async fn sessions_round_trip(client: Client) {
    let app = TestApp::with_client(client, true, |b| b).await;
    let id = app.login().await;
    let res = app.post("/incr/n", Some(&id)).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(res.body, "1");
    let rotated = app.post("/rotate", Some(&id)).await.new_id().unwrap();
    assert_eq!(
        app.get("/read/username", Some(&rotated)).await.body,
        "ferris"
    );
    assert_eq!(app.get("/read/n", Some(&rotated)).await.body, "1");
    assert_eq!(app.hash(&rotated).await["username"], "ferris");
    app.check_keyspace().await;
}

#[cfg(feature = "enable-rustls")]
#[tokio::test]
async fn sessions_work_over_tls_with_rustls_and_a_private_ca() {
    let server = start().await;
    let tls = crate::support::tls::rustls_trusting(&server.pki.ca_pem());
    let client = tls_client(&server, tls).await.expect("connect over TLS");
    assert!(client.client_config().uses_rustls());
    sessions_round_trip(client).await;
}

#[cfg(feature = "enable-native-tls")]
#[tokio::test]
async fn sessions_work_over_tls_with_native_tls_and_a_private_ca() {
    let server = start().await;
    let tls = crate::support::tls::native_tls_trusting(&server.pki.ca_pem());
    let client = tls_client(&server, tls).await.expect("connect over TLS");
    assert!(client.client_config().uses_native_tls());
    sessions_round_trip(client).await;
}

#[cfg(feature = "enable-rustls")]
#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_at_start_with_a_clear_error() {
    let server = start().await;
    let other = crate::support::tls::make_pki(&server.dir.join("other"), "other");
    let tls = crate::support::tls::rustls_trusting(&other.ca_pem());
    let started = std::time::Instant::now();
    let err = tls_client(&server, tls)
        .await
        .expect_err("a certificate from an unknown CA must be refused");
    let text = err.to_string();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once, not after retries: {:?}",
        started.elapsed()
    );
    assert!(
        text.to_lowercase().contains("certificate"),
        "the error says what is wrong: {err:?}"
    );
    println!(
        "wrong CA: init() failed after {:?} with {err:?}",
        started.elapsed()
    );
}
