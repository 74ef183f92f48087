//! One way to call an upstream from inside the gateway: the route's timeout, a gRPC client's
//! deadline, retries with their budget and back-off, and the failure turned into a problem.
//! The pipeline's proxied requests and the translations' calls (gRPC, SOAP, composite
//! routes) all go through `call_upstream`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use http::{Request, Response, Uri, Version};

use crate::base::conn::TimerSlot;
use crate::body::problem::Problem;
use crate::body::{Body, BodyStats, UpstreamBody};
use crate::observe::access_log::Record;
use crate::upstream::pool::{CallError, UpstreamPool};

/// `future`, unless `timer` fires first (then `Err(TimedOut)`).
async fn within<F: Future>(
    timer: &mut Pin<Box<tokio::time::Sleep>>,
    future: F,
) -> Result<F::Output, TimedOut> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        timer.as_mut().poll(cx).map(|()| Err(TimedOut))
    })
    .await
}

/// The route timeout (or a retry attempt's) ran out.
#[derive(Debug)]
struct TimedOut;

/// Sends the request through the upstream's pool within `timeout` (the route's, or a composite
/// route's call's; the upstream's `request_timeout` when `None`), which covers connecting,
/// waiting for the response head and any retries. `rec`, when given, gets the target that
/// answered and the upstream's time, and its trace the attempts' spans; a call made apart from
/// the request's record gives a fork of its trace as `fork`. The request is borrowed (see
/// `UpstreamPool::send`): its body is consumed, and the caller drops what is left.
#[allow(clippy::manual_async_fn)] // see the comment in the body
pub(crate) fn call_upstream<'a>(
    timeout: Option<Duration>,
    pool: &'a UpstreamPool,
    target: usize,
    req: &'a mut Request<Body>,
    mut rec: Option<&'a mut Record>,
    mut fork: Option<&'a mut crate::observe::trace::Trace>,
    timers: Option<&'a TimerSlot>,
) -> impl Future<Output = Result<Response<UpstreamBody>, Problem>> + 'a {
    // Not `async fn`: its parameters would be moved once more, into locals, before the
    // body runs.
    async move {
        let mut budget = timeout.unwrap_or(pool.spec.request_timeout);
        // A gRPC client's own deadline, when shorter, is the one that counts. (A static name:
        // looking up by `&str` parses the name again on every request.)
        // gRPC calls (and gRPC-Web ones) are always POSTs: other methods skip the lookup.
        static GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");
        if req.method() == http::Method::POST
            && let Some(t) = req
                .headers()
                .get(&GRPC_TIMEOUT)
                .and_then(|v| grpc_timeout(v.as_bytes()))
        {
            budget = budget.min(t);
        }
        // One clock read for both (each is ~50 instructions).
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started) + budget;
        let stats = match req.body() {
            Body::Counted(_, s, ..) => Some(s.clone()),
            // A decoded body keeps the client body's stats beside it.
            _ => req.extensions().get::<Arc<BodyStats>>().cloned(),
        };
        let mut template = None;
        if let Some(policy) = &pool.spec.retry {
            pool.earn_retry(policy.budget_percent);
            template = Box::pin(replayable(req, policy.non_idempotent)).await?;
        }
        let mut target = target;
        let mut attempt = 1;
        let result = loop {
            let attempt_deadline = match pool.spec.retry.as_ref().and_then(|p| p.attempt_timeout) {
                Some(t) => deadline.min(tokio::time::Instant::now() + t),
                None => deadline,
            };
            // Boxed: measured when the pool's future was 2.4 KB, an unboxed one was copied at
            // every layer of the request's future (several KB moved per request). It is 416
            // bytes now; whether the box still pays has not been measured again. Built in its
            // box: `Box::pin` copied all 416 bytes into cold memory at 1,000 connections.
            let mut timer = match timers {
                Some(t) => t.take(attempt_deadline),
                None => Box::pin(tokio::time::sleep_until(attempt_deadline)),
            };
            // The attempt's span: its id goes upstream as the parent of what the upstream does.
            // The W3C context is written by the connection (see `UpstreamPool::send`); a
            // `traceparent` the client sent is taken out first, once.
            let mut traceparent = None;
            let span = match rec
                .as_deref_mut()
                .and_then(|r| r.trace.as_mut())
                .or(fork.as_deref_mut())
            {
                Some(t) => {
                    let id = crate::observe::trace::new_span_id();
                    let sampled = t.decide(None);
                    if t.propagators.tracecontext {
                        traceparent = Some(crate::observe::trace::traceparent(
                            &t.trace_id,
                            &id,
                            sampled,
                        ));
                        // A retry's request may hold the one an HTTP/2 attempt put in.
                        if std::mem::take(&mut t.client_traceparent) || attempt > 1 {
                            req.headers_mut()
                                .remove(&crate::observe::trace::TRACEPARENT);
                        }
                    }
                    crate::observe::trace::inject_b3(
                        req.headers_mut(),
                        &t.propagators,
                        &t.trace_id,
                        &id,
                        sampled,
                    );
                    // The method now: sending takes the request's head.
                    t.records_children()
                        .then(|| (id, std::time::SystemTime::now(), req.method().clone()))
                }
                None => None,
            };
            let began = rec
                .as_deref()
                .is_some_and(|r| r.phases.is_some())
                .then(Instant::now);
            let result = within(
                &mut timer,
                crate::base::future::box_in_place(|| {
                    pool.send(target, &mut *req, traceparent.as_ref())
                }),
            )
            .await;
            // What the attempt ended with, for its span and the phase record: the status it
            // answered, or the error it met.
            let (status, error) = if span.is_some() || began.is_some() {
                match &result {
                    Ok(Ok((_, resp))) => (Some(resp.status().as_u16()), None),
                    Ok(Err(e)) => (None, Some(call_error(e).code())),
                    Err(_) => (None, Some(Problem::UpstreamTimeout.code())),
                }
            } else {
                (None, None)
            };
            if let Some(began) = began
                && let Some(p) = rec.as_deref_mut().and_then(|r| r.phases.as_deref_mut())
            {
                let outcome =
                    status.map_or_else(|| error.unwrap_or("").to_string(), |s| s.to_string());
                p.mark(
                    "upstream",
                    began,
                    Some(format!(
                        "{} {} try {attempt}: {outcome}",
                        pool.spec.name,
                        pool.target(target).authority
                    )),
                );
            }
            if let Some((id, start, method)) = span
                && let Some(t) = rec
                    .as_deref_mut()
                    .and_then(|r| r.trace.as_mut())
                    .or(fork.as_deref_mut())
            {
                let t_info = pool.target(target);
                t.children.push(crate::observe::trace::Child {
                    span_id: id,
                    kind: crate::observe::trace::ChildKind::Attempt {
                        upstream: pool.spec.name.clone(),
                        target: t_info.display.clone(),
                        authority: t_info.authority.clone(),
                        method,
                        attempt,
                        status,
                        error,
                    },
                    start,
                    end: std::time::SystemTime::now(),
                });
            }
            if let Some(t) = timers {
                t.put(timer);
            }
            let (Some(policy), Some(t)) = (&pool.spec.retry, &template) else {
                break result;
            };
            let reason = match &result {
                Ok(Ok((_, resp))) if policy.on_statuses.contains(&resp.status().as_u16()) => {
                    "status"
                }
                Ok(Err(CallError::Connect(_) | CallError::ConnectTimeout))
                    if policy.on_connect_failure =>
                {
                    "connect_failure"
                }
                Ok(Err(CallError::Request(_))) if policy.on_reset => "reset",
                Err(_) if policy.on_timeout && attempt_deadline < deadline => "timeout",
                _ => break result,
            };
            if attempt >= policy.attempts || tokio::time::Instant::now() >= deadline {
                break result;
            }
            if !pool.spend_retry() {
                metrics::counter!("portico_upstream_retry_budget_exhausted_total", "upstream" => pool.spec.name.to_string()).increment(1);
                break result;
            }
            metrics::counter!("portico_upstream_retries_total", "upstream" => pool.spec.name.to_string(), "reason" => reason).increment(1);
            // Exponential back-off with full jitter, then another target.
            let cap = (policy.backoff * 2u32.pow(attempt - 1)).min(policy.backoff * 10);
            let pause = cap.mul_f64(fastrand::f64());
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + pause)).await;
            drop(result);
            target = pool.other_target(target).unwrap_or(target);
            *req = t.build();
            attempt += 1;
        };
        let elapsed = started.elapsed();
        if let Some(rec) = rec.as_deref_mut() {
            rec.upstream_duration = Some(elapsed);
        }
        pool.duration.record(elapsed.as_secs_f64());
        let (answered, status) = match &result {
            Ok(Ok((served_by, resp))) => (*served_by, resp.status().as_u16()),
            Ok(Err(_)) => (target, 502),
            Err(_) => (target, 504),
        };
        pool.record_live(answered, status, elapsed);
        let problem = match result {
            Ok(Ok((served_by, resp))) => {
                if let Some(rec) = rec {
                    rec.upstream = Some(pool.target(served_by).display.clone());
                }
                return Ok(resp);
            }
            _ if stats
                .as_ref()
                .is_some_and(|s| s.too_large.load(Ordering::Relaxed)) =>
            {
                return Err(Problem::PayloadTooLarge);
            }
            _ if stats
                .as_ref()
                .is_some_and(|s| s.undecodable.load(Ordering::Relaxed)) =>
            {
                return Err(Problem::BadRequest(
                    "The request body does not decode with the coding its Content-Encoding names.",
                ));
            }
            _ if stats
                .as_ref()
                .is_some_and(|s| s.too_slow.load(Ordering::Relaxed)) =>
            {
                return Err(Problem::BodyTimeout);
            }
            // The client's body broke, not the upstream: that is the client's error.
            _ if stats.is_some_and(|s| s.failed.load(Ordering::Relaxed)) => {
                return Err(Problem::BadRequest(
                    "The request body is malformed (invalid chunked encoding) or was cut short.",
                ));
            }
            Err(_) => Problem::UpstreamTimeout,
            Ok(Err(e)) => {
                match &e {
                    CallError::Connect(e) => {
                        tracing::debug!(upstream = %pool.spec.name, error = %e, "upstream connect failed");
                    }
                    CallError::Request(e) => {
                        tracing::debug!(upstream = %pool.spec.name, error = %e, "upstream request failed");
                    }
                    _ => {}
                }
                call_error(&e)
            }
        };
        metrics::counter!("portico_upstream_errors_total", "upstream" => pool.spec.name.to_string(), "kind" => problem.code()).increment(1);
        Err(problem)
    }
}

/// The answer a failed call gets.
fn call_error(e: &CallError) -> Problem {
    match e {
        CallError::ConnectTimeout => Problem::UpstreamTimeout,
        CallError::Overloaded | CallError::PendingFull | CallError::PendingTimeout => {
            Problem::UpstreamOverloaded
        }
        CallError::Connect(_) => Problem::UpstreamConnect,
        CallError::Request(_) => Problem::UpstreamProtocol,
    }
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Largest request body kept in memory so the request can be sent again.
const REPLAY_BODY_LIMIT: u64 = 64 * 1024;

/// What is needed to send a request again.
pub(crate) struct ReplayTemplate {
    method: http::Method,
    uri: Uri,
    version: Version,
    headers: http::HeaderMap,
    body: Option<bytes::Bytes>,
}

impl ReplayTemplate {
    pub(crate) fn build(&self) -> Request<Body> {
        let mut r = Request::new(match &self.body {
            Some(b) => Body::full(b.clone()),
            None => Body::Empty,
        });
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.version_mut() = self.version;
        *r.headers_mut() = self.headers.clone();
        r
    }
}

/// Makes a request replayable (for idempotent methods, or any with `any_method`): a body with a
/// `Content-Length` up to 64 KiB is read first and kept; larger or chunked bodies stream as usual
/// and are not retried once sent.
pub(crate) async fn replayable(
    req: &mut Request<Body>,
    any_method: bool,
) -> Result<Option<ReplayTemplate>, Problem> {
    let idempotent = matches!(
        *req.method(),
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::TRACE
    );
    if !idempotent && !any_method {
        return Ok(None);
    }
    let body = match std::mem::replace(req.body_mut(), Body::Empty) {
        Body::Counted(incoming, stats, idle, floor) => {
            let len = req
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if len.is_none_or(|l| l > REPLAY_BODY_LIMIT) {
                *req.body_mut() = Body::Counted(incoming, stats, idle, floor);
                return Ok(None);
            }
            use http_body_util::BodyExt;
            // Read through the counting body, so its limits (size, rate) hold here too.
            let counted = Body::Counted(incoming, stats.clone(), idle, floor);
            let bytes = match counted.collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) if stats.too_slow.load(Ordering::Relaxed) => {
                    return Err(Problem::BodyTimeout);
                }
                Err(_) if stats.too_large.load(Ordering::Relaxed) => {
                    return Err(Problem::PayloadTooLarge);
                }
                Err(_) => {
                    return Err(Problem::BadRequest(
                        "The request body is malformed or was cut short.",
                    ));
                }
            };
            stats.bytes.store(bytes.len() as u64, Ordering::Relaxed);
            Some(bytes)
        }
        Body::Full(b) => b,
        Body::Empty => None,
        // Streams produced by the gateway (a decoded body) are sent once, not replayed.
        body @ (Body::Upstream(_) | Body::Stream(_)) => {
            *req.body_mut() = body;
            return Ok(None);
        }
    };
    let template = ReplayTemplate {
        method: req.method().clone(),
        uri: req.uri().clone(),
        version: req.version(),
        headers: req.headers().clone(),
        body,
    };
    *req = template.build();
    Ok(Some(template))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_read_by_unit_and_bounded() {
        let ms = Duration::from_millis;
        for (text, want) in [
            (&b"1H"[..], Some(Duration::from_secs(3600))),
            (b"2M", Some(Duration::from_secs(120))),
            (b"3S", Some(Duration::from_secs(3))),
            (b"250m", Some(ms(250))),
            (b"7u", Some(Duration::from_micros(7))),
            (b"9n", Some(Duration::from_nanos(9))),
            (b"99999999S", Some(Duration::from_secs(99_999_999))),
            // Nine digits, no digits, no unit, an unknown unit, a sign, a space.
            (b"123456789S", None),
            (b"S", None),
            (b"100", None),
            (b"5x", None),
            (b"-5S", None),
            (b" 5S", None),
            (b"", None),
        ] {
            assert_eq!(
                grpc_timeout(text),
                want,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[tokio::test]
    async fn within_gives_the_answer_or_the_timeout_whichever_is_first() {
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        let mut timer = Box::pin(tokio::time::sleep_until(far));
        assert_eq!(within(&mut timer, async { 7 }).await.ok(), Some(7));
        let mut timer = Box::pin(tokio::time::sleep(Duration::ZERO));
        assert!(
            within(&mut timer, std::future::pending::<()>())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_replayable_request_keeps_its_small_body_and_a_post_is_not_retried() {
        let mut req = Request::new(Body::full("abc"));
        *req.method_mut() = http::Method::PUT;
        let t = replayable(&mut req, false)
            .await
            .unwrap()
            .expect("PUT is idempotent");
        assert!(matches!(t.build().body(), Body::Full(Some(b)) if b == "abc"));
        let mut post = Request::new(Body::full("abc"));
        *post.method_mut() = http::Method::POST;
        assert!(replayable(&mut post, false).await.unwrap().is_none());
        assert!(
            replayable(&mut post, true).await.unwrap().is_some(),
            "non_idempotent: true"
        );
    }
}
