//! What the layer counts and times, through the [`metrics`](https://docs.rs/metrics)
//! facade, when the `metrics` feature is on; without it every function here is empty and
//! compiles to nothing.
//!
//! The names and labels are listed in one table, in the Monitoring section of
//! `docs/operations.md`; keep the two in step.

#[cfg(feature = "metrics")]
use ::metrics::{counter, describe_counter, describe_histogram, histogram, Unit};
use fred::types::scripts::Script;
use http::StatusCode;

#[cfg(feature = "metrics")]
use crate::error::ErrorKind;
use crate::{
    error::Error,
    store::{EndReason, LoadOutcome},
};

/// The names, as in the table in `docs/operations.md`.
#[cfg(feature = "metrics")]
mod names {
    pub(super) const LOADED: &str = "tower_redis_session_loaded_total";
    pub(super) const LOAD_MISSES: &str = "tower_redis_session_load_misses_total";
    pub(super) const CREATED: &str = "tower_redis_session_created_total";
    pub(super) const ROTATED: &str = "tower_redis_session_rotated_total";
    pub(super) const DESTROYED: &str = "tower_redis_session_destroyed_total";
    pub(super) const TERMINATED: &str = "tower_redis_session_terminated_total";
    pub(super) const REFUSED: &str = "tower_redis_session_refused_total";
    pub(super) const STORE_ERRORS: &str = "tower_redis_session_store_errors_total";
    pub(super) const ERROR_RESPONSES: &str = "tower_redis_session_error_responses_total";
    pub(super) const REDIS_DURATION: &str = "tower_redis_session_redis_duration_seconds";
}
#[cfg(feature = "metrics")]
use names::*;

/// Gives every metric of the layer its description (and the Redis time its unit, seconds)
/// in the recorder installed now. Optional: the metrics are recorded without it, but an
/// exporter such as Prometheus's shows the descriptions (`# HELP`) only if they were
/// given. Call it once, after installing the recorder.
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub fn describe_metrics() {
    describe_counter!(LOADED, "Requests whose session cookie named a live session");
    describe_counter!(
        LOAD_MISSES,
        "Requests whose session cookie named no usable session, by reason"
    );
    describe_counter!(CREATED, "New sessions written");
    describe_counter!(ROTATED, "Session IDs rotated");
    describe_counter!(
        DESTROYED,
        "Sessions destroyed by a request of their own (logout)"
    );
    describe_counter!(TERMINATED, "Sessions ended by the session manager");
    describe_counter!(
        REFUSED,
        "Changes refused because the session ended or moved on (409 Conflict by default)"
    );
    describe_counter!(
        STORE_ERRORS,
        "Store failures that replaced a response, by kind"
    );
    describe_counter!(
        ERROR_RESPONSES,
        "Responses the layer sent in place of the handler's, by status"
    );
    describe_histogram!(
        REDIS_DURATION,
        Unit::Seconds,
        "Time of one session script call in Redis, by script"
    );
}

/// What a load found (a failed load is counted by [`error_response`]).
#[inline]
pub(crate) fn loaded(outcome: &Result<LoadOutcome, Error>) {
    #[cfg(feature = "metrics")]
    match outcome {
        Ok(LoadOutcome::Found(_)) => counter!(LOADED).increment(1),
        Ok(LoadOutcome::Missing) => miss("missing"),
        Ok(LoadOutcome::Unusable) => miss("unusable"),
        Ok(LoadOutcome::Ended(EndReason::Rotated)) => miss("rotated"),
        Ok(LoadOutcome::Ended(EndReason::Destroyed)) => miss("destroyed"),
        Ok(LoadOutcome::Ended(EndReason::Terminated)) => miss("terminated"),
        Err(_) => {}
    }
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}

#[cfg(feature = "metrics")]
fn miss(reason: &'static str) {
    counter!(LOAD_MISSES, "reason" => reason).increment(1);
}

/// A new session was written.
#[inline]
pub(crate) fn created() {
    #[cfg(feature = "metrics")]
    counter!(CREATED).increment(1);
}

/// A session moved to a new ID.
#[inline]
pub(crate) fn rotated() {
    #[cfg(feature = "metrics")]
    counter!(ROTATED).increment(1);
}

/// A session was ended (`live`: it was a live session, not already gone).
#[inline]
pub(crate) fn ended(why: EndReason, live: bool) {
    #[cfg(feature = "metrics")]
    match why {
        EndReason::Destroyed if live => counter!(DESTROYED).increment(1),
        EndReason::Terminated if live => counter!(TERMINATED).increment(1),
        _ => {}
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (why, live);
}

/// The layer answers in place of the handler: `err` is why, `status` what it sent.
#[inline]
pub(crate) fn error_response(err: &Error, status: StatusCode) {
    #[cfg(feature = "metrics")]
    {
        let kind = match err.kind() {
            ErrorKind::Conflict => None,
            ErrorKind::Timeout => Some("timeout"),
            ErrorKind::Unavailable => Some("unavailable"),
            ErrorKind::Protocol => Some("protocol"),
        };
        match kind {
            Some(kind) => counter!(STORE_ERRORS, "kind" => kind).increment(1),
            None => counter!(REFUSED).increment(1),
        }
        counter!(ERROR_RESPONSES, "status" => status_label(status)).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (err, status);
}

/// The status as a label value, without allocating for the usual ones.
#[cfg(feature = "metrics")]
fn status_label(status: StatusCode) -> ::metrics::SharedString {
    match status.as_u16() {
        409 => "409".into(),
        500 => "500".into(),
        503 => "503".into(),
        other => other.to_string().into(),
    }
}

/// Times one script call, from [`start`](Self::start) until it is dropped (after the
/// reply, an error or the timeout). Without the feature, an empty value.
pub(crate) struct ScriptTimer {
    #[cfg(feature = "metrics")]
    start: std::time::Instant,
    #[cfg(feature = "metrics")]
    script: &'static str,
}

impl ScriptTimer {
    #[inline]
    #[must_use]
    pub(crate) fn start(script: &Script) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = script;
        Self {
            #[cfg(feature = "metrics")]
            start: std::time::Instant::now(),
            #[cfg(feature = "metrics")]
            script: script_name(script),
        }
    }
}

#[cfg(feature = "metrics")]
impl Drop for ScriptTimer {
    fn drop(&mut self) {
        histogram!(REDIS_DURATION, "script" => self.script).record(self.start.elapsed());
    }
}

/// The script's name, as in the label: its file name without `.lua`.
#[cfg(feature = "metrics")]
fn script_name(script: &Script) -> &'static str {
    use crate::store::scripts;
    let known: [(&Script, &str); 10] = [
        (&scripts::LOAD, "load"),
        (&scripts::LIVE_TTL, "live_ttl"),
        (&scripts::CREATE, "create"),
        (&scripts::SAVE, "save"),
        (&scripts::BEGIN_ROTATE, "begin_rotate"),
        (&scripts::FINISH_ROTATE, "finish_rotate"),
        (&scripts::ABANDON_ROTATE, "abandon_rotate"),
        (&scripts::END, "end"),
        (&scripts::INDEX_ADD, "index_add"),
        (&scripts::PRUNE, "prune"),
    ];
    known
        .iter()
        .find(|(s, _)| std::ptr::eq(*s, script))
        .map_or("other", |(_, name)| name)
}
