//! Integration tests against real Redis on 127.0.0.1, started by the support code.
//!
//! The behaviour suite (per_request, concurrency, cookies, expiry, rotation, failure,
//! manager) is written once, as `async fn name(topology: Topology)`, and stamped onto
//! each topology and script mode by [`session_tests!`]: `<module>::single::<name>` runs
//! against a `redis-server` of the test's own, `<module>::cluster::<name>` against the
//! binary's shared 3-master + 3-replica cluster, both with `EVALSHA` (the default);
//! `<module>::functions_single::<name>` and `<module>::functions_cluster::<name>` run the
//! same on the same topologies with `ScriptMode::Functions` (the library is loaded when
//! the topology starts). Fault tests (failover, resharding, Sentinel) and TLS start
//! topologies of their own.
//!
//! Hardening tests (`hostile`: hostile input; `faults`: faults under load), `encryption`
//! (feature `encryption`) and `functions` (the Redis Functions mode's own promises and
//! its ACL users) each start servers of their own.
//!
//! `cargo test --all-features --test it -- ::cluster::` runs the suite on the cluster
//! only; `-- ::functions_` runs it in the Functions mode only.

/// Stamps behaviour tests onto every topology and script mode: for each `name` listed,
/// tests `single::name` and `cluster::name` running `name(Topology::Single)` and
/// `name(Topology::Cluster)` with `EVALSHA`, and `functions_single::name` and
/// `functions_cluster::name` running them with `ScriptMode::Functions`.
macro_rules! session_tests {
    ($($name:ident),+ $(,)?) => {
        session_tests!(@on single Single Evalsha; $($name),+);
        session_tests!(@on cluster Cluster Evalsha; $($name),+);
        session_tests!(@on functions_single Single Functions; $($name),+);
        session_tests!(@on functions_cluster Cluster Functions; $($name),+);
    };
    (@on $module:ident $topology:ident $mode:ident; $($name:ident),+) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::support::in_script_mode(
                        tower_redis_session::ScriptMode::$mode,
                        super::$name(crate::support::Topology::$topology),
                    )
                    .await;
                }
            )+
        }
    };
}

#[path = "../support/mod.rs"]
mod support;

mod checker;
mod cluster_faults;
mod concurrency;
mod cookies;
#[cfg(feature = "encryption")]
mod encryption;
mod expiry;
mod failure;
mod faults;
mod functions;
mod hostile;
mod lazy;
mod manager;
#[cfg(feature = "metrics")]
mod metrics;
mod peer;
mod per_request;
mod php_interop;
mod probes;
mod probes10;
mod probes2;
mod probes3;
mod probes4;
mod probes5;
mod probes6;
#[cfg(feature = "encryption")]
mod probes7;
mod probes8;
#[cfg(feature = "encryption")]
mod probes9;
mod read_cache;
mod review;
mod rotation;
mod sentinel;
#[cfg(any(feature = "enable-rustls", feature = "enable-native-tls"))]
mod tls;
