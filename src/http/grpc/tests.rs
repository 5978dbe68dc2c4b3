use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};

use super::body::PendingStatus;
use super::*;
use crate::BoxError;
use crate::classify::{Answered, OutcomeSink};
use crate::http::{NotReplayable, ReplayError};

fn response(status: u16, headers: &[(&'static str, &'static str)]) -> Response<()> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

fn trailers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                http::HeaderName::from_static(k),
                http::HeaderValue::from_static(v),
            )
        })
        .collect()
}

const RETRY: Outcome = Outcome::Failure { retryable: true };
const FINAL: Outcome = Outcome::Failure { retryable: false };

#[test]
fn codes_map_to_outcomes_by_default() {
    let c = GrpcClassify::new();
    for n in 0..=16 {
        let code = Code::from_i32(n);
        assert_eq!(code as i32, n);
        let want = match code {
            Code::Ok => Outcome::Success,
            Code::Unavailable => RETRY,
            Code::ResourceExhausted => Outcome::Overloaded { retry_after: None },
            _ => FINAL,
        };
        assert_eq!(c.classify_code(code, None), want, "{code:?}");
    }
    assert_eq!(Code::from_i32(17), Code::Unknown);
    assert_eq!(Code::from_i32(-1), Code::Unknown);
    let tuned = c
        .clone()
        .code(Code::NotFound, Outcome::Success)
        .code(Code::Unavailable, FINAL);
    assert_eq!(tuned.classify_code(Code::NotFound, None), Outcome::Success);
    assert_eq!(tuned.classify_code(Code::Unavailable, None), FINAL);
    // The original is unchanged: the table is copied on write.
    assert_eq!(c.classify_code(Code::Unavailable, None), RETRY);
}

#[test]
fn trailers_only_responses_are_classified_from_their_headers() {
    let c = GrpcClassify::new();
    let unavailable = response(200, &[("grpc-status", "14")]);
    assert_eq!(c.classify_response(&unavailable), RETRY);
    assert!(!GrpcClassify::status_in_trailers(&unavailable));
    let ok_so_far = response(200, &[("content-type", "application/grpc")]);
    assert_eq!(c.classify_response(&ok_so_far), Outcome::Success);
    assert!(GrpcClassify::status_in_trailers(&ok_so_far));
    let garbage = response(200, &[("grpc-status", "x")]);
    assert_eq!(c.classify_response(&garbage), FINAL);
    // No gRPC status at all: the HTTP status decides.
    assert_eq!(c.classify_response(&response(503, &[])), RETRY);
    assert_eq!(c.classify_response(&response(429, &[])), RETRY);
    assert_eq!(c.classify_response(&response(404, &[])), FINAL);
    assert_eq!(
        Code::from_http(StatusCode::UNAUTHORIZED),
        Code::Unauthenticated
    );
    let mut spent = response(200, &[("grpc-status", "14")]);
    spent.extensions_mut().insert(NotReplayable);
    assert_eq!(c.classify_response(&spent), FINAL);
}

#[test]
fn pushback_sets_the_delay_or_stops_retries() {
    let c = GrpcClassify::new();
    let wait = response(
        200,
        &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "250")],
    );
    assert_eq!(
        c.classify_response(&wait),
        Outcome::Overloaded {
            retry_after: Some(Duration::from_millis(250))
        }
    );
    let exhausted = response(
        200,
        &[("grpc-status", "8"), ("grpc-retry-pushback-ms", "0")],
    );
    assert_eq!(
        c.classify_response(&exhausted),
        Outcome::Overloaded {
            retry_after: Some(Duration::ZERO)
        }
    );
    for no in ["-1", "soon", ""] {
        let stop = trailers(&[("grpc-status", "14")]);
        let mut stop = stop;
        stop.insert(GRPC_RETRY_PUSHBACK_MS, http::HeaderValue::from_static(no));
        assert_eq!(c.classify_trailers(&stop), FINAL, "{no:?}");
    }
    // Pushback does not make a final code retryable.
    let internal = trailers(&[("grpc-status", "13"), ("grpc-retry-pushback-ms", "10")]);
    assert_eq!(c.classify_trailers(&internal), FINAL);
    assert_eq!(
        c.classify_trailers(&trailers(&[("grpc-status", "0")])),
        Outcome::Success
    );
    assert_eq!(c.classify_trailers(&HeaderMap::new()), FINAL);
}

#[test]
fn transport_errors_are_retryable_unless_unreplayable() {
    let c = GrpcClassify::new();
    let reset: Result<Response<()>, BoxError> = Err("stream reset".into());
    assert_eq!(c.classify(&reset), RETRY);
    let spent: Result<Response<()>, BoxError> = Err(Box::new(ReplayError::new(None)));
    assert_eq!(c.classify(&spent), FINAL);
}

/// Where the reports of these tests go.
#[derive(Default)]
struct Recorder(Mutex<Vec<Outcome>>);

impl OutcomeSink for Recorder {
    fn record(&self, _: &Answered, outcome: Outcome) {
        self.0.lock().unwrap().push(outcome);
    }
}

impl Recorder {
    fn seen(&self) -> Vec<Outcome> {
        self.0.lock().unwrap().clone()
    }
}

/// `body` as a channel leaves it after [`GrpcClassify::defer`]: waiting
/// with a report whose headers said success.
fn waiting<B>(body: B) -> (GrpcStatusBody<B>, Arc<Recorder>) {
    let sink = Arc::new(Recorder::default());
    let attempt = Answered {
        elapsed: Duration::from_millis(1),
        at: std::time::Instant::now(),
        admission: None,
    };
    let pending = Arc::new(PendingStatus::default());
    let report = OutcomeReport::new(sink.clone(), attempt, Outcome::Success);
    pending.wait(report, GrpcClassify::new());
    (GrpcStatusBody::new(body, Some(pending)), sink)
}

#[tokio::test]
async fn the_status_body_reports_the_trailers_once() {
    let t = trailers(&[("grpc-status", "0")]);
    let body = Full::new(Bytes::from_static(b"reply")).with_trailers(async move { Some(Ok(t)) });
    let (body, seen) = waiting(body);
    let collected = body.collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(seen.seen(), [Outcome::Success]);

    let t = trailers(&[("grpc-status", "14"), ("grpc-retry-pushback-ms", "5")]);
    let body = Full::new(Bytes::new()).with_trailers(async move { Some(Ok(t)) });
    let (body, seen) = waiting(body);
    body.collect().await.unwrap();
    let pushed = Outcome::Overloaded {
        retry_after: Some(Duration::from_millis(5)),
    };
    assert_eq!(seen.seen(), [pushed]);
}

#[tokio::test]
async fn the_status_body_reports_a_missing_status_an_error_and_a_drop() {
    let (body, seen) = waiting(Full::new(Bytes::from_static(b"x")));
    body.collect().await.unwrap();
    assert_eq!(seen.seen(), [FINAL]);

    let frames: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = vec![
        Ok(http_body::Frame::data(Bytes::from_static(b"part"))),
        Err(std::io::Error::other("reset")),
    ];
    let (body, seen) = waiting(StreamBody::new(futures_util::stream::iter(frames)));
    assert!(body.collect().await.is_err());
    assert_eq!(seen.seen(), [RETRY]);

    // Dropped before its end: the headers' outcome, once.
    let (body, seen) =
        waiting(Full::new(Bytes::from_static(b"unread")).with_trailers(async { None }));
    let mut body = Box::pin(body);
    assert!(body.frame().await.is_some());
    assert!(seen.seen().is_empty(), "nothing is known yet");
    drop(body);
    assert_eq!(seen.seen(), [Outcome::Success]);
}

#[tokio::test]
async fn a_body_nothing_waits_for_reports_nothing() {
    let t = trailers(&[("grpc-status", "14")]);
    let body = GrpcStatusBody::new(
        Full::new(Bytes::new()).with_trailers(async move { Some(Ok(t)) }),
        None,
    );
    let collected = body.collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "14");
}

/// Through a channel: a Trailers-Only error counts on the endpoint when it
/// is answered; a status in the trailers when the body ends.
#[tokio::test]
async fn the_channel_records_trailers_only_at_once_and_trailers_at_the_end() {
    use std::convert::Infallible;
    use tower::{Service, ServiceExt, service_fn};

    use crate::Channel;
    use crate::discover::Static;

    let server = service_fn(|req: http::Request<String>| async move {
        let trailers_only = req.uri().path() == "/only";
        let mut t = HeaderMap::new();
        t.insert(GRPC_STATUS, http::HeaderValue::from_static("14"));
        let in_trailers = (!trailers_only).then(|| t.clone());
        let body = Full::new(Bytes::from_static(b"\0\0\0\0\0"))
            .with_trailers(async move { in_trailers.map(Ok) });
        let mut response = Response::new(body);
        if trailers_only {
            *response.headers_mut() = t;
        }
        Ok::<_, Infallible>(response)
    });
    let addr: std::net::SocketAddr = "127.0.0.1:50051".parse().unwrap();
    let mut channel = Channel::builder(connect(server))
        .discover(Static::new([addr]))
        .classifier(GrpcClassify::new())
        .build()
        .unwrap();
    let failures = |c: &Channel<_, _>| c.endpoints()[0].failures;
    let only = http::Request::get("/only").body(String::new()).unwrap();
    let response = channel.ready().await.unwrap().call(only).await.unwrap();
    assert_eq!(failures(&channel), 1, "counted when answered");
    assert!(response.extensions().get::<StatusSlot>().is_none());
    drop(response);
    assert_eq!(failures(&channel), 1);

    let streamed = http::Request::get("/stream").body(String::new()).unwrap();
    let response = channel.ready().await.unwrap().call(streamed).await.unwrap();
    assert_eq!(failures(&channel), 1, "not known before the trailers");
    assert!(
        response.extensions().get::<StatusSlot>().is_none(),
        "the classifier took the slot"
    );
    response.into_body().collect().await.unwrap();
    assert_eq!(failures(&channel), 2);
}
