//! The response future: load → inner service → save, and the cookie on the way out.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_service::Service;
use tracing::instrument::{Instrument as _, WithSubscriber as _};

use crate::{
    body::ResponseBody,
    cache_control::SharedCaching,
    error::{Error, ErrorKind},
    exchange::{LoadOutcome, Outcome, Plan},
    id::SessionId,
    session::{LazyFailure, LoadFuture, Loader, Session, Settings},
    shared::Shared,
};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project! {
    /// Response future of [`RedisSession`](crate::RedisSession).
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
        shared: Arc<Shared>,
        session: Option<Session>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        // Waiting for the load script; the inner service is called after it.
        Load {
            fut: BoxFuture<Result<LoadOutcome, Error>>,
            pending: Option<(S, Request<ReqBody>, SessionId)>,
        },
        Inner { #[pin] fut: S::Future },
        // A lazy session the handler left unloaded, loaded now because a clone of it
        // outlives the handler (a streaming body may read it).
        LateLoad {
            fut: BoxFuture<()>,
            response: Option<S::Response>,
        },
        // The handler's response, to finish or to write back for.
        Respond { response: Option<S::Response> },
        // Waiting for the write-back; the response goes out after it.
        Save {
            fut: BoxFuture<Result<Outcome, Error>>,
            response: Option<S::Response>,
        },
        Done,
    }
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn load(
        shared: Arc<Shared>,
        inner: S,
        req: Request<ReqBody>,
        id: SessionId,
    ) -> Self {
        let fut = {
            let shared = Arc::clone(&shared);
            let id = id.clone();
            Box::pin(async move { load_session(&shared, &id).await })
        };
        Self {
            state: State::Load {
                fut,
                pending: Some((inner, req, id)),
            },
            shared,
            session: None,
        }
    }

    pub(crate) fn inner(shared: Arc<Shared>, session: Session, fut: S::Future) -> Self {
        Self {
            state: State::Inner { fut },
            shared,
            session: Some(session),
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Load { fut, pending } => {
                    let outcome = ready!(fut.as_mut().poll(cx));
                    let (mut inner, mut req, id) = pending.take().expect("polled after completion");
                    let settings = Settings::from_config(&this.shared.config);
                    let session = match outcome {
                        Ok(outcome) => Session::after_load(settings, id, outcome),
                        Err(err) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(error_response(this.shared, err)));
                        }
                    };
                    req.extensions_mut().insert(session.clone());
                    *this.session = Some(session);
                    let fut = inner.call(req);
                    this.state.set(State::Inner { fut });
                }
                StateProj::Inner { fut } => {
                    let response = match ready!(fut.poll(cx)) {
                        Ok(response) => response,
                        Err(err) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(err));
                        }
                    };
                    let session = this
                        .session
                        .as_ref()
                        .expect("session set before the inner call");
                    if session.needs_load() && session.is_shared() {
                        // Loaded as the default mode would have, so that what reads it
                        // later never sees a live session as empty. A failure is answered
                        // below like any failed lazy load.
                        let session = session.clone();
                        this.state.set(State::LateLoad {
                            fut: Box::pin(async move {
                                let _ = session.load().await;
                            }),
                            response: Some(response),
                        });
                    } else {
                        this.state.set(State::Respond {
                            response: Some(response),
                        });
                    }
                }
                StateProj::LateLoad { fut, response } => {
                    ready!(fut.as_mut().poll(cx));
                    let response = response.take();
                    this.state.set(State::Respond { response });
                }
                StateProj::Respond { response } => {
                    let response = response.take().expect("polled after completion");
                    let session = this
                        .session
                        .take()
                        .expect("session set before the inner call");
                    if let Some(failure) = session.lazy_failure() {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(lazy_failure(this.shared, response, failure)));
                    }
                    let plan = match session.plan() {
                        // Sending the cookie again after a read costs a check of the
                        // session: only for a response that may carry it.
                        Plan::Refresh(_) if !refreshes_cookie(this.shared, response.headers()) => {
                            Plan::Nothing(Outcome::Keep)
                        }
                        plan => plan,
                    };
                    if let Plan::Nothing(outcome) = plan {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(finish(this.shared, response, outcome)));
                    }
                    let shared = Arc::clone(this.shared);
                    let fut: BoxFuture<_> = if matches!(plan, Plan::Rotate { .. }) {
                        // A rotation marks the old key (saves to it are refused) until it
                        // finishes or is abandoned: it runs to its end even if the
                        // response is dropped (the client went away).
                        // Logged as the request would be: in its span, to its subscriber.
                        let task = tokio::spawn(
                            async move { shared.store.write_back(plan).await }
                                .in_current_span()
                                .with_current_subscriber(),
                        );
                        Box::pin(async move {
                            task.await.unwrap_or_else(|_| {
                                Err(Error::protocol("the rotation task failed"))
                            })
                        })
                    } else {
                        Box::pin(async move { shared.store.write_back(plan).await })
                    };
                    this.state.set(State::Save {
                        fut,
                        response: Some(response),
                    });
                }
                StateProj::Save { fut, response } => {
                    let outcome = ready!(fut.as_mut().poll(cx));
                    let response = response.take().expect("polled after completion");
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(match outcome {
                        Ok(outcome) => finish(this.shared, response, outcome),
                        Err(err) => {
                            tracing::error!(
                                error = %err,
                                cause = %cause(&err),
                                "session store failed to save; the response is replaced by an error"
                            );
                            error_response(this.shared, err)
                        }
                    }));
                }
                StateProj::Done => panic!("`ResponseFuture` polled after completion"),
            }
        }
    }
}

/// Loads the session under `id`: counts what the load found, and logs a failure. The
/// load on the way in, and a lazy session's.
async fn load_session(shared: &Shared, id: &SessionId) -> Result<LoadOutcome, Error> {
    let outcome = shared.store.load(id).await;
    match &outcome {
        Ok(found) => crate::metrics::loaded(found.label()),
        Err(err) => {
            tracing::error!(error = %err, cause = %cause(err), "session store failed to load a session");
        }
    }
    outcome
}

impl Loader for Shared {
    fn load<'a>(&'a self, id: &'a SessionId) -> LoadFuture<'a> {
        Box::pin(load_session(self, id))
    }

    #[cfg(feature = "axum")]
    fn error_response(&self, err: &Error) -> Response<Bytes> {
        store_error_response(self, err)
    }
}

/// The response, with what the outcome does to the cookie.
fn finish<B>(
    shared: &Shared,
    response: Response<B>,
    outcome: Outcome,
) -> Response<ResponseBody<B>> {
    let cookie = &shared.config.cookie;
    let value = match outcome {
        Outcome::Keep => None,
        Outcome::Refused => return error_response(shared, Error::new(ErrorKind::Conflict)),
        Outcome::Set(id, max_age) => Some(cookie.set_cookie(&id, max_age)),
        Outcome::Clear => Some(cookie.removal()),
        Outcome::Refresh(id, Some(max_age)) if refreshes_cookie(shared, response.headers()) => {
            Some(cookie.set_cookie(&id, Some(max_age)))
        }
        Outcome::Refresh(..) => None,
    };
    let mut response = response.map(ResponseBody::inner);
    if let Some(value) = value {
        let headers = response.headers_mut();
        headers.append(header::SET_COOKIE, value);
        // A shared cache must never hand one user's cookie to another: a response that
        // carries the cookie is made unstorable.
        if SharedCaching::of(headers).may_store {
            SharedCaching::forbid(headers);
        }
    }
    response
}

/// Whether the response may send the cookie again only to refresh its `Max-Age`: a
/// persistent cookie has one, and it never rides a page the app meant shared caches to
/// keep (`public`, `s-maxage`, a `max-age` above zero, a storable targeted field such as
/// `CDN-Cache-Control` or `Surrogate-Control`), whose caching it would have to turn off.
/// Any other page carries it, made unstorable.
fn refreshes_cookie(shared: &Shared, headers: &http::HeaderMap) -> bool {
    shared.config.cookie.persistent && !SharedCaching::of(headers).asked_for
}

/// The response of a request whose lazy session failed to load, or was used before its
/// load: never the handler's.
fn lazy_failure<B>(
    shared: &Shared,
    response: Response<B>,
    failure: LazyFailure,
) -> Response<ResponseBody<B>> {
    match failure {
        // The extractor's rejection: the layer's error response already.
        LazyFailure::Load {
            error,
            answered: true,
        } => {
            crate::metrics::error_response(&error, response.status());
            response.map(ResponseBody::inner)
        }
        LazyFailure::Load { error, .. } => {
            tracing::debug!("the session failed to load; the handler's response is replaced");
            error_response(shared, error)
        }
        LazyFailure::Unloaded => {
            tracing::error!(
                "a lazy session was used before `Session::load`; answering 500 instead of the handler's response"
            );
            let mut response = Response::new(ResponseBody::error(Bytes::from_static(
                b"session used before it was loaded\n",
            )));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
    }
}

/// What an error's cause says, for the logs (`Error`'s own text leaves it out).
pub(crate) fn cause(err: &Error) -> String {
    std::error::Error::source(err).map_or_else(String::new, ToString::to_string)
}

/// The response sent instead of the handler's: a store failure, or changes refused.
fn error_response<B>(shared: &Shared, err: Error) -> Response<ResponseBody<B>> {
    if err.kind() == ErrorKind::Conflict {
        tracing::debug!("changes refused; answering 409");
    }
    let response = store_error_response(shared, &err);
    crate::metrics::error_response(&err, response.status());
    response.map(ResponseBody::error)
}

/// The layer's response to `err` (its `error_response` hook's, or the default), with
/// the error in its extensions.
fn store_error_response(shared: &Shared, err: &Error) -> Response<Bytes> {
    let mut response = match &shared.config.error_response {
        Some(make) => make(err),
        None => default_error_response(err),
    };
    response.extensions_mut().insert(err.clone());
    response
}

fn default_error_response(err: &Error) -> Response<Bytes> {
    let (status, text) = match err.kind() {
        ErrorKind::Timeout | ErrorKind::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "session store unavailable, please retry\n",
        ),
        ErrorKind::Conflict => (
            StatusCode::CONFLICT,
            "your session ended or changed in another request; nothing was saved, please reload\n",
        ),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "session store error\n"),
    };
    let mut response = Response::new(Bytes::from_static(text.as_bytes()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

impl<S, ReqBody> fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Load { .. } => "load",
            State::Inner { .. } => "inner",
            State::LateLoad { .. } => "late load",
            State::Respond { .. } => "respond",
            State::Save { .. } => "save",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
