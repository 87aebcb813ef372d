//! Integration tests against real Redis on 127.0.0.1, started by the support code.
//!
//! The behaviour suite (per_request, concurrency, cookies, expiry, rotation, failure,
//! manager) is written once, as `async fn name(topology: Topology)`, and stamped onto
//! each topology by [`session_tests!`]: `<module>::single::<name>` runs against a
//! `redis-server` of the test's own, `<module>::cluster::<name>` against the binary's
//! shared 3-master + 3-replica cluster. Fault tests (failover, resharding, Sentinel) and
//! TLS start topologies of their own.
//!
//! Hardening tests (`hostile`: hostile input; `faults`: faults under load) and
//! `encryption` (feature `encryption`) each start servers of their own.
//!
//! `cargo test --all-features --test it -- ::cluster::` runs the suite on the cluster only.

/// Stamps behaviour tests onto every topology: for each `name` listed, a test
/// `single::name` running `name(Topology::Single)` and a test `cluster::name` running
/// `name(Topology::Cluster)`.
macro_rules! session_tests {
    ($($name:ident),+ $(,)?) => {
        session_tests!(@on single Single; $($name),+);
        session_tests!(@on cluster Cluster; $($name),+);
    };
    (@on $module:ident $topology:ident; $($name:ident),+) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::Topology::$topology).await;
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
mod hostile;
mod lazy;
mod manager;
#[cfg(feature = "metrics")]
mod metrics;
mod peer;
mod per_request;
mod php_interop;
mod review;
mod rotation;
mod sentinel;
#[cfg(any(feature = "enable-rustls", feature = "enable-native-tls"))]
mod tls;
