//! `Session` as an axum extractor.

use std::fmt;

use axum_core::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use http::{request::Parts, StatusCode};

use crate::{
    error::{Error, SessionError},
    session::Session,
};

/// Rejection of the [`Session`] extractor: the route is not behind a
/// [`RedisSessionLayer`](crate::RedisSessionLayer). A bug in the app's wiring, answered
/// with `500 Internal Server Error`.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct MissingSessionLayer;

impl fmt::Display for MissingSessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no session in the request: is `RedisSessionLayer` applied to this route?")
    }
}

impl std::error::Error for MissingSessionLayer {}

impl IntoResponse for MissingSessionLayer {
    fn into_response(self) -> Response {
        tracing::error!("{self}");
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

/// Rejection of the [`Session`] extractor.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionRejection {
    /// The route is not behind a [`RedisSessionLayer`](crate::RedisSessionLayer).
    MissingSessionLayer(MissingSessionLayer),
    /// In [lazy mode](crate::RedisSessionLayerBuilder::lazy_load), the session could not
    /// be loaded.
    LoadFailed(LoadFailed),
}

impl fmt::Display for SessionRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingSessionLayer(inner) => inner.fmt(f),
            Self::LoadFailed(inner) => inner.fmt(f),
        }
    }
}

impl std::error::Error for SessionRejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::MissingSessionLayer(inner) => Some(inner),
            Self::LoadFailed(inner) => Some(inner),
        }
    }
}

impl IntoResponse for SessionRejection {
    fn into_response(self) -> Response {
        match self {
            Self::MissingSessionLayer(inner) => inner.into_response(),
            Self::LoadFailed(inner) => inner.into_response(),
        }
    }
}

/// Rejection of the [`Session`] extractor in
/// [lazy mode](crate::RedisSessionLayerBuilder::lazy_load): the session store failed to
/// load the session (the failure is logged). Answered with the layer's error response:
/// `503 Service Unavailable` with `Retry-After` by default, or what
/// [`error_response`](crate::RedisSessionLayerBuilder::error_response) makes, the
/// [`Error`] in its extensions, exactly as when the load on the way in fails in the
/// default mode. A handler that takes `Result<Session, SessionRejection>` may answer
/// otherwise, but the layer still sends its error response in place of that answer.
#[derive(Debug)]
pub struct LoadFailed {
    session: Session,
    error: Error,
}

impl LoadFailed {
    /// Why the store failed.
    #[must_use]
    pub fn error(&self) -> &Error {
        &self.error
    }
}

impl fmt::Display for LoadFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the session could not be loaded: {}", self.error)
    }
}

impl std::error::Error for LoadFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl IntoResponse for LoadFailed {
    fn into_response(self) -> Response {
        let Some(loader) = self.session.loader() else {
            // Only a lazy session fails to load, and it always knows its layer.
            return (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response();
        };
        let response = loader.error_response(&self.error);
        self.session.failure_answered();
        response.map(axum_core::body::Body::from)
    }
}

/// The session of the request; in [lazy mode](crate::RedisSessionLayerBuilder::lazy_load),
/// loaded first (once per request, however many extractors ask).
impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let session = parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or(SessionRejection::MissingSessionLayer(MissingSessionLayer))?;
        load(session).await
    }
}

/// `Option<Session>` is `None` on routes outside the layer. In lazy mode the session is
/// loaded first, and a failed load is a rejection (never a silent `None`).
impl<S: Send + Sync> OptionalFromRequestParts<S> for Session {
    type Rejection = SessionRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match parts.extensions.get::<Self>().cloned() {
            Some(session) => load(session).await.map(Some),
            None => Ok(None),
        }
    }
}

async fn load(session: Session) -> Result<Session, SessionRejection> {
    match session.load().await {
        Ok(()) => Ok(session),
        Err(error) => Err(SessionRejection::LoadFailed(LoadFailed { session, error })),
    }
}

/// A refused change as a response: `400 Bad Request` for a change beyond the session
/// limits (the client sent too much), `500 Internal Server Error` for the rest (a bug in
/// the handler: a reserved field, a change after `destroy`, ...).
impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::TooManyFields { .. }
            | Self::ValueTooLarge { .. }
            | Self::SessionTooLarge { .. } => StatusCode::BAD_REQUEST,
            _ => {
                tracing::error!(error = %self, "session change refused");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, self.to_string()).into_response()
    }
}
