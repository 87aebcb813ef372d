//! The response future: load → inner service → save, and the cookie on the way out.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::{
    layer::Shared,
    session::{Plan, Tie},
    store::{CreateOutcome, LoadOutcome, WriteOutcome},
    Error, ErrorKind, ResponseBody, Session, SessionId,
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
        // The request's session cookie is to be dropped if nothing replaces it.
        clear_cookie: bool,
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
        // Waiting for the write-back; the response goes out after it.
        Save {
            fut: BoxFuture<Result<CookieAction, Error>>,
            response: Option<S::Response>,
        },
        Done,
    }
}

/// What the response does with the cookie.
#[derive(Debug)]
enum CookieAction {
    Keep,
    Set(SessionId, Duration),
    Clear,
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
            Box::pin(async move { shared.store.load(&id).await })
        };
        Self {
            state: State::Load {
                fut,
                pending: Some((inner, req, id)),
            },
            shared,
            session: None,
            clear_cookie: false,
        }
    }

    pub(crate) fn inner(
        shared: Arc<Shared>,
        session: Session,
        fut: S::Future,
        clear_cookie: bool,
    ) -> Self {
        Self {
            state: State::Inner { fut },
            shared,
            session: Some(session),
            clear_cookie,
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
                    let config = &this.shared.config;
                    let session = match outcome {
                        Ok(LoadOutcome::Found(loaded)) => {
                            Session::loaded(config.limits, config.idle_ttl, id, loaded)
                        }
                        Ok(LoadOutcome::Missing) => {
                            tracing::debug!("session cookie for a missing or expired session");
                            *this.clear_cookie = true;
                            Session::anonymous(config.limits, config.idle_ttl, true)
                        }
                        Ok(LoadOutcome::Unusable) => {
                            tracing::warn!(
                                session = %short_digest(&id),
                                "session key holds no usable session (wrong type, fields or size); treated as none"
                            );
                            *this.clear_cookie = true;
                            Session::anonymous(config.limits, config.idle_ttl, false)
                        }
                        Err(err) => {
                            tracing::error!(error = %err, "session store failed to load a session");
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
                        .take()
                        .expect("session set before the inner call");
                    let config = &this.shared.config;
                    let plan = session.plan();
                    if let Plan::Nothing = plan {
                        // A loaded session that is destroyed plans a `Destroy`, so here
                        // a destroyed session is a new one: it has nothing to keep.
                        let action = match session.id() {
                            Some(id)
                                if config.cookie.persistent
                                    && session.is_loaded()
                                    && !session.is_destroyed() =>
                            {
                                CookieAction::Set(id, session.expires_in().unwrap_or_default())
                            }
                            Some(_) if !session.is_destroyed() => CookieAction::Keep,
                            _ if *this.clear_cookie => CookieAction::Clear,
                            _ => CookieAction::Keep,
                        };
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(finish(this.shared, response, action)));
                    }
                    let shared = Arc::clone(this.shared);
                    let fut = Box::pin(async move { persist(&shared, plan).await });
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
                        Ok(action) => finish(this.shared, response, action),
                        Err(err) => {
                            tracing::error!(
                                error = %err,
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

/// Applies a plan in Redis and says what the cookie must do.
///
/// Where a step spans two keys (a session and its user's index, or the old and new keys
/// of a rotation), the order is chosen so that a crash in between leaves at worst an
/// entry or key that is pruned or expires, never a lost session or an unindexed one.
async fn persist(shared: &Shared, plan: Plan) -> Result<CookieAction, Error> {
    let store = &shared.store;
    match plan {
        Plan::Nothing => Ok(CookieAction::Keep),
        Plan::Create {
            id,
            ttl,
            fields,
            user,
        } => {
            if let Some(user) = &user {
                store.index_add(user, &id).await?;
            }
            match create(store, id.clone(), ttl, &fields).await? {
                Some(created) => {
                    if let (Some(user), true) = (&user, created != id) {
                        // A collision moved the session to another ID: index that one.
                        store.index_add(user, &created).await?;
                        store.index_remove(user, store.member(&id)).await?;
                    }
                    Ok(CookieAction::Set(created, ttl))
                }
                None => Err(Error::protocol("new session past its absolute lifetime")),
            }
        }
        Plan::Save {
            id,
            ttl,
            ttl_changed,
            changes,
            tie,
        } => {
            if let Some(tie) = &tie {
                store.index_add(&tie.user, &id).await?;
            }
            match store.save(&id, ttl_changed.then_some(ttl), changes).await? {
                WriteOutcome::Applied => {
                    if let Some(Tie {
                        user,
                        previous: Some(previous),
                    }) = &tie
                    {
                        if previous != user {
                            store.index_remove(previous, store.member(&id)).await?;
                        }
                    }
                    Ok(if shared.config.cookie.persistent {
                        CookieAction::Set(id, ttl)
                    } else {
                        CookieAction::Keep
                    })
                }
                WriteOutcome::Gone => {
                    if let Some(tie) = &tie {
                        store.index_remove(&tie.user, store.member(&id)).await?;
                    }
                    tracing::warn!(
                        session = %short_digest(&id),
                        "session ended (logout, rotation or expiry) before this request's changes were saved; changes dropped, cookie cleared"
                    );
                    Ok(CookieAction::Clear)
                }
            }
        }
        Plan::Rotate {
            old,
            new,
            ttl,
            fields,
            user,
            previous,
        } => {
            // New key first, then retire the old one: a crash in between leaves an orphan
            // that expires, never a lost session. Works across cluster slots.
            if let Some(user) = &user {
                store.index_add(user, &new).await?;
            }
            let created = create(store, new.clone(), ttl, &fields).await?;
            if let (Some(user), Some(created)) = (&user, &created) {
                if *created != new {
                    store.index_add(user, created).await?;
                }
            }
            let old_existed = store.delete(&old).await?;
            if let Some(previous) = &previous {
                store.index_remove(previous, store.member(&old)).await?;
            }
            match created {
                Some(created) if old_existed => Ok(CookieAction::Set(created, ttl)),
                Some(created) => {
                    // The old session ended while this request ran (logout elsewhere): its
                    // copy must not live on under the new ID, which nobody has seen yet.
                    store.delete(&created).await?;
                    if let Some(user) = &user {
                        store.index_remove(user, store.member(&created)).await?;
                    }
                    tracing::warn!(
                        session = %short_digest(&old),
                        "session ended before its ID rotation completed; cookie cleared"
                    );
                    Ok(CookieAction::Clear)
                }
                // Past its absolute lifetime: the rotation ended the session instead.
                None => Ok(CookieAction::Clear),
            }
        }
        Plan::Destroy { id, user } => {
            store.delete(&id).await?;
            if let Some(user) = &user {
                store.index_remove(user, store.member(&id)).await?;
            }
            Ok(CookieAction::Clear)
        }
    }
}

/// Creates a session, with a fresh ID in the (2^-256) event that the key is taken.
/// `None` if the absolute deadline carried in `fields` has passed.
async fn create(
    store: &crate::store::Store,
    mut id: SessionId,
    ttl: Duration,
    fields: &[(String, String)],
) -> Result<Option<SessionId>, Error> {
    for _ in 0..3 {
        match store.create(&id, ttl, fields).await? {
            CreateOutcome::Created => return Ok(Some(id)),
            CreateOutcome::Exists => {
                tracing::warn!("session ID collision; retrying with a new ID");
                id = SessionId::generate();
            }
            CreateOutcome::Expired => return Ok(None),
        }
    }
    Err(Error::protocol("three session ID collisions in a row"))
}

/// The first 12 characters of the ID's digest: enough to follow one session through the
/// logs, useless for taking it over.
fn short_digest(id: &SessionId) -> &str {
    &id.digest()[..12]
}

fn finish<B>(
    shared: &Shared,
    response: Response<B>,
    action: CookieAction,
) -> Response<ResponseBody<B>> {
    let mut response = response.map(ResponseBody::inner);
    let cookie = &shared.config.cookie;
    let value = match action {
        CookieAction::Keep => return response,
        CookieAction::Set(id, max_age) => cookie.set_cookie(&id, max_age),
        CookieAction::Clear => cookie.removal(),
    };
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, value);
    // A shared cache must never hand one user's cookie to another.
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn error_response<B>(shared: &Shared, err: Error) -> Response<ResponseBody<B>> {
    let response = match &shared.config.error_response {
        Some(make) => make(&err),
        None => default_error_response(&err),
    };
    let mut response = response.map(ResponseBody::error);
    response.extensions_mut().insert(err);
    response
}

fn default_error_response(err: &Error) -> Response<Bytes> {
    let (status, text) = match err.kind() {
        ErrorKind::Timeout | ErrorKind::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "session store unavailable, please retry\n",
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
            State::Save { .. } => "save",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
