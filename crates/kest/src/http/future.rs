//! The response future shared by the Kest layers: an asynchronous check
//! (which may reject: the inner service then never runs), the inner call
//! inside the flow it produced, and optionally writing the flow's passport
//! into the response.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use opentelemetry::context::{FutureExt as _, WithContext};
use tower::Service;

use super::body::ResponseBody;
use super::{Rejection, ReturnPassport};
use crate::lineage::{Lineage, Scoped};
use crate::policy::BoxFuture;

/// What a passed check hands to the inner call.
pub(crate) struct Gate {
    /// The flow the inner service runs in.
    pub(crate) lineage: Lineage,
    /// The OpenTelemetry context it runs in (`None`: the current one).
    pub(crate) otel: Option<opentelemetry::Context>,
    /// The identity verified by this layer, handed to the layers inside as
    /// a request extension.
    pub(crate) extension: Option<super::VerifiedIdentity>,
}

pub(crate) type Check = BoxFuture<'static, Result<Gate, Rejection>>;

/// Builds the response `baggage` header for a flow, given the response's
/// existing `baggage` header, if any.
pub(crate) type Finish =
    Arc<dyn Fn(Lineage, Option<String>) -> BoxFuture<'static, Result<HeaderValue, Rejection>> + Send + Sync>;

/// The response future of [`LineageService`](super::LineageService) and
/// [`IdentityService`](super::IdentityService).
pub struct ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    state: State<S, B>,
    finish: Option<Finish>,
}

enum State<S, B>
where
    S: Service<Request<B>>,
{
    Checking { check: Check, pending: Box<(S, Request<B>)> },
    Calling { lineage: Lineage, future: Scoped<WithContext<S::Future>> },
    Finishing { future: BoxFuture<'static, Result<HeaderValue, Rejection>>, response: Box<S::Response> },
    Done,
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn new(check: Check, service: S, request: Request<B>, finish: Option<Finish>) -> Self {
        ResponseFuture { state: State::Checking { check, pending: Box::new((service, request)) }, finish }
    }
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Checking { .. } => "checking",
            State::Calling { .. } => "calling",
            State::Finishing { .. } => "finishing",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture").field("state", &state).finish_non_exhaustive()
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every state is `Unpin` (the pinned futures are boxed).
        let this = self.get_mut();
        loop {
            match std::mem::replace(&mut this.state, State::Done) {
                State::Checking { mut check, pending } => match check.as_mut().poll(cx) {
                    Poll::Pending => {
                        this.state = State::Checking { check, pending };
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(rejection)) => return Poll::Ready(Ok(rejection.into_response())),
                    Poll::Ready(Ok(Gate { lineage, otel, extension })) => {
                        let (mut service, mut request) = *pending;
                        if let Some(identity) = extension {
                            request.extensions_mut().insert(identity);
                        }
                        let otel = otel.unwrap_or_else(opentelemetry::Context::current);
                        let future = {
                            let _attached = otel.clone().attach();
                            lineage.enter(|| service.call(request))
                        };
                        let future = lineage.scope(future.with_context(otel));
                        this.state = State::Calling { lineage, future };
                    }
                },
                State::Calling { lineage, mut future } => match Pin::new(&mut future).poll(cx) {
                    Poll::Pending => {
                        this.state = State::Calling { lineage, future };
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(mut response)) => {
                        if let Some(finish) = &this.finish
                            && response.extensions_mut().remove::<ReturnPassport>().is_some()
                        {
                            let existing = response
                                .headers()
                                .get_all(super::BAGGAGE)
                                .iter()
                                .filter_map(|v| v.to_str().ok())
                                .collect::<Vec<_>>()
                                .join(",");
                            let existing = (!existing.is_empty()).then_some(existing);
                            this.state = State::Finishing {
                                future: finish(lineage, existing),
                                response: Box::new(response),
                            };
                            continue;
                        }
                        return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                    }
                },
                State::Finishing { mut future, response } => match future.as_mut().poll(cx) {
                    Poll::Pending => {
                        this.state = State::Finishing { future, response };
                        return Poll::Pending;
                    }
                    Poll::Ready(Ok(baggage)) => {
                        let mut response = *response;
                        response.headers_mut().insert(super::BAGGAGE, baggage);
                        return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                    }
                    Poll::Ready(Err(rejection)) => return Poll::Ready(Ok(rejection.into_response())),
                },
                State::Done => {
                    #[expect(
                        clippy::panic,
                        reason = "polling a completed future is a caller bug, as in tower"
                    )]
                    {
                        panic!("kest::http::ResponseFuture polled after completion")
                    }
                }
            }
        }
    }
}
