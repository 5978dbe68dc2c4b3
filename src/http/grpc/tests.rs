use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};

use super::*;
use crate::BoxError;
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

fn recorder() -> (Arc<Mutex<Vec<Outcome>>>, impl FnOnce(Outcome)) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let report = seen.clone();
    (seen, move |o| report.lock().unwrap().push(o))
}

#[tokio::test]
async fn the_status_body_reports_the_trailers_once() {
    let (seen, report) = recorder();
    let t = trailers(&[("grpc-status", "0")]);
    let body = Full::new(Bytes::from_static(b"reply")).with_trailers(async move { Some(Ok(t)) });
    let body = GrpcStatusBody::new(body, GrpcClassify::new(), report);
    let collected = body.collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(*seen.lock().unwrap(), [Outcome::Success]);

    let (seen, report) = recorder();
    let t = trailers(&[("grpc-status", "14"), ("grpc-retry-pushback-ms", "5")]);
    let body = Full::new(Bytes::new()).with_trailers(async move { Some(Ok(t)) });
    GrpcStatusBody::new(body, GrpcClassify::new(), report)
        .collect()
        .await
        .unwrap();
    let pushed = Outcome::Overloaded {
        retry_after: Some(Duration::from_millis(5)),
    };
    assert_eq!(*seen.lock().unwrap(), [pushed]);
}

#[tokio::test]
async fn the_status_body_reports_a_missing_status_and_errors_but_not_a_drop() {
    let (seen, report) = recorder();
    let body = GrpcStatusBody::new(
        Full::new(Bytes::from_static(b"x")),
        GrpcClassify::new(),
        report,
    );
    body.collect().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [FINAL]);

    let (seen, report) = recorder();
    let frames: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = vec![
        Ok(http_body::Frame::data(Bytes::from_static(b"part"))),
        Err(std::io::Error::other("reset")),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let body = GrpcStatusBody::new(body, GrpcClassify::new(), report);
    assert!(body.collect().await.is_err());
    assert_eq!(*seen.lock().unwrap(), [RETRY]);

    let (seen, report) = recorder();
    let mut body = Box::pin(GrpcStatusBody::new(
        Full::new(Bytes::from_static(b"unread")).with_trailers(async { None }),
        GrpcClassify::new(),
        report,
    ));
    assert!(body.frame().await.is_some());
    drop(body);
    assert!(seen.lock().unwrap().is_empty());
}
