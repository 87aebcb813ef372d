//! Integration tests against a real `redis-server`, one per test, started by the
//! support code on 127.0.0.1.

#[path = "../support/mod.rs"]
mod support;

mod concurrency;
mod cookies;
mod expiry;
mod failure;
mod manager;
mod per_request;
mod rotation;
