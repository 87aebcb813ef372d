//! `RedisSession`, the middleware: finds the cookie, starts the load, calls the inner
//! service.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower_service::Service;

use crate::{
    body::ResponseBody,
    cookie::{self, Incoming},
    future::ResponseFuture,
    session::{Arrival, Session, Settings},
    shared::Shared,
};

/// The session middleware, made by [`RedisSessionLayer`](crate::RedisSessionLayer).
///
/// Puts a [`Session`] in the extensions of every request (loaded on the way in, or when
/// something asks for it in [lazy mode](crate::RedisSessionLayerBuilder::lazy_load)) and
/// saves its changes once the inner service has answered. Store failures become error
/// responses (503 by default), never service errors, so `Error = S::Error`.
#[derive(Clone)]
pub struct RedisSession<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> RedisSession<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the middleware, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RedisSession<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let config = &self.shared.config;
        let incoming = cookie::find(req.headers(), &config.cookie.name, config.id_format);
        if let Incoming::Id(id) = incoming {
            if config.lazy_load {
                // Loaded when something asks for it, not here.
                let settings = Settings::from_config(config);
                let session = Session::lazy(settings, self.shared.clone(), id);
                req.extensions_mut().insert(session.clone());
                let fut = self.inner.call(req);
                return ResponseFuture::inner(Arc::clone(&self.shared), session, fut);
            }
            // The inner service is called only once the session is loaded, so take the
            // instance that `poll_ready` readied and leave a clone in its place. See
            // https://docs.rs/tower/latest/tower/trait.Service.html#be-careful-when-cloning-inner-services
            let clone = self.inner.clone();
            let inner = std::mem::replace(&mut self.inner, clone);
            return ResponseFuture::load(Arc::clone(&self.shared), inner, req, id);
        }
        let arrival = match incoming {
            Incoming::Malformed => {
                crate::cookie::suspicious("malformed session cookie");
                Arrival::Stale
            }
            Incoming::Duplicate => {
                crate::cookie::suspicious("more than one session cookie (cookie tossing?)");
                Arrival::Fresh
            }
            Incoming::Absent | Incoming::Id(_) => Arrival::Fresh,
        };
        let session = Session::anonymous(Settings::from_config(config), arrival);
        req.extensions_mut().insert(session.clone());
        let fut = self.inner.call(req);
        ResponseFuture::inner(Arc::clone(&self.shared), session, fut)
    }
}

impl<S: fmt::Debug> fmt::Debug for RedisSession<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSession")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .finish()
    }
}
