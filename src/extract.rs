//! `Session` as an axum extractor.

use std::{convert::Infallible, fmt};

use axum_core::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use http::{request::Parts, StatusCode};

use crate::{error::SessionError, session::Session};

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

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or(MissingSessionLayer)
    }
}

/// `Option<Session>` is `None` on routes outside the layer.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Session {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Self>().cloned())
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
