use std::collections::VecDeque;

use http_body_util::{BodyExt, Full};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

use super::*;

/// A body of the given chunks, then optional trailers, with no size hint.
struct Chunks {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
}

fn chunks(n: usize, size: usize) -> Chunks {
    Chunks {
        chunks: (0..n).map(|i| Bytes::from(vec![i as u8; size])).collect(),
        trailers: None,
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(match self.chunks.pop_front() {
            Some(c) => Some(Ok(Frame::data(c))),
            None => self.trailers.take().map(|t| Ok(Frame::trailers(t))),
        })
    }
}

/// A body fed through a channel: data arrives only when the test sends it.
struct Fed(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

impl Body for Fed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|c| c.map(|c| Ok(Frame::data(c))))
    }
}

async fn next_data<B>(body: &mut ReplayBody<B>) -> Option<Result<Bytes, BoxError>>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    body.frame()
        .await
        .map(|f| f.map(|f| f.into_data().expect("a data frame")))
}

async fn all(
    body: ReplayBody<impl Body<Error: Into<BoxError>>>,
) -> Result<(Bytes, Option<HeaderMap>), BoxError> {
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok((collected.to_bytes(), trailers))
}

fn expected(n: usize, size: usize) -> Bytes {
    (0..n)
        .flat_map(|i| vec![i as u8; size])
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test]
async fn a_copy_made_before_or_after_the_first_send_replays_everything() {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    let body = Chunks {
        trailers: Some(trailers.clone()),
        ..chunks(4, 100)
    };
    let original = ReplayBody::new(body, 1024);
    let early = original.try_clone().unwrap();
    let (data, t) = all(early).await.unwrap();
    assert_eq!(data, expected(4, 100));
    assert_eq!(t.as_ref(), Some(&trailers));
    let late = original.try_clone().unwrap();
    assert!(!late.is_end_stream());
    let (data, t) = all(late).await.unwrap();
    assert_eq!(data, expected(4, 100));
    assert_eq!(t, Some(trailers));
}

#[tokio::test]
async fn interleaved_copies_share_one_read_of_the_original() {
    let original = ReplayBody::new(chunks(3, 10), 1024);
    let mut a = original.try_clone().unwrap();
    let mut b = original.try_clone().unwrap();
    // a reads ahead, b catches up from the buffer, then b leads.
    assert_eq!(next_data(&mut a).await.unwrap().unwrap()[0], 0);
    assert_eq!(next_data(&mut b).await.unwrap().unwrap()[0], 0);
    assert_eq!(next_data(&mut b).await.unwrap().unwrap()[0], 1);
    assert_eq!(next_data(&mut b).await.unwrap().unwrap()[0], 2);
    assert_eq!(next_data(&mut a).await.unwrap().unwrap()[0], 1);
    assert!(next_data(&mut b).await.is_none());
    assert_eq!(next_data(&mut a).await.unwrap().unwrap()[0], 2);
    assert!(next_data(&mut a).await.is_none());
    assert!(a.is_end_stream() && b.is_end_stream());
}

#[tokio::test]
async fn a_retry_carries_on_where_an_abandoned_copy_stopped() {
    let original = ReplayBody::new(chunks(8, 1000), 64 * 1024);
    let mut first = original.try_clone().unwrap();
    for _ in 0..3 {
        next_data(&mut first).await.unwrap().unwrap();
    }
    // The first attempt's connection still holds its copy, unpolled.
    let second = original.try_clone().unwrap();
    assert_eq!(all(second).await.unwrap().0, expected(8, 1000));
    drop(first);
    assert_eq!(all(original).await.unwrap().0, expected(8, 1000));
}

#[tokio::test]
async fn copies_waiting_at_the_front_are_all_woken() {
    let (feed, rx) = tokio::sync::mpsc::unbounded_channel();
    let original = ReplayBody::new(Fed(rx), 1024);
    let readers: Vec<_> = (0..3)
        .map(|_| tokio::spawn(all(original.try_clone().unwrap())))
        .collect();
    for i in 0..5u8 {
        tokio::task::yield_now().await;
        feed.send(Bytes::from(vec![i; 7])).unwrap();
    }
    drop(feed);
    for r in readers {
        assert_eq!(r.await.unwrap().unwrap().0, expected(5, 7));
    }
}

#[tokio::test]
async fn outgrowing_the_limit_leaves_one_copy_and_is_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let original = metrics::with_local_recorder(&recorder, || ReplayBody::new(chunks(4, 5), 12));
    let request_ticket = original.ticket();
    let mut leader = original.try_clone().unwrap();
    let mut behind = original.try_clone().unwrap();
    let leader_ticket = leader.ticket();
    for _ in 0..2 {
        next_data(&mut leader).await.unwrap().unwrap();
    }
    assert!(!request_ticket.overflowed());
    // The third chunk makes 15 bytes > 12: the buffer goes, the reader
    // goes on.
    metrics::with_local_recorder(&recorder, || {
        let waker = Waker::noop();
        let polled = Pin::new(&mut leader).poll_frame(&mut Context::from_waker(waker));
        assert!(matches!(polled, Poll::Ready(Some(Ok(_)))));
    });
    assert!(request_ticket.overflowed() && leader_ticket.overflowed());
    assert!(leader_ticket.can_send() && !request_ticket.can_send());
    assert!(original.try_clone().is_none());
    assert!(next_data(&mut leader).await.unwrap().is_ok());
    assert!(next_data(&mut leader).await.is_none());
    let err = next_data(&mut behind).await.unwrap().unwrap_err();
    assert!(err.is::<ReplayError>());

    let counted: Vec<u64> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| k.key().name() == super::super::UNREPLAYABLE_BODIES)
        .map(|(.., v)| match v {
            DebugValue::Counter(n) => n,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(counted, [1]);
}

#[tokio::test]
async fn a_body_known_to_be_too_large_is_never_copied_but_can_be_sent() {
    let request = replayable_with_limit(
        Request::post("/")
            .body(Full::new(Bytes::from(vec![7u8; 100])))
            .unwrap(),
        99,
    );
    assert!(BodyReplay.replay(&request).is_none());
    let ticket = request.extensions().get::<ReplayTicket>().unwrap().clone();
    assert!(ticket.can_send() && ticket.overflowed());
    let body = request.into_body();
    assert_eq!(body.size_hint().exact(), Some(100));
    assert_eq!(all(body).await.unwrap().0, Bytes::from(vec![7u8; 100]));
}

#[tokio::test]
async fn body_replay_copies_the_whole_request_with_its_own_ticket() {
    #[derive(Clone, Debug, PartialEq)]
    struct Tag(u32);
    let mut request = replayable(
        Request::put("http://a/b?c=d")
            .header("x-one", "1")
            .version(http::Version::HTTP_2)
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap(),
    );
    request.extensions_mut().insert(Tag(9));
    let copy = BodyReplay.replay(&request).unwrap();
    assert_eq!(copy.method(), http::Method::PUT);
    assert_eq!(copy.uri(), "http://a/b?c=d");
    assert_eq!(copy.version(), http::Version::HTTP_2);
    assert_eq!(copy.headers()["x-one"], "1");
    assert_eq!(copy.extensions().get::<Tag>(), Some(&Tag(9)));
    let (a, b) = (
        request.extensions().get::<ReplayTicket>().unwrap().id,
        copy.extensions().get::<ReplayTicket>().unwrap().id,
    );
    assert_ne!(a, b);
    assert_eq!(copy.body().size_hint().exact(), Some(7));
    assert_eq!(all(copy.into_body()).await.unwrap().0, "payload");
}

#[tokio::test]
async fn replayable_service_wraps_each_body() {
    use tower::{Layer, ServiceExt};
    let inner = tower::service_fn(|req: Request<ReplayBody<String>>| async move {
        let copy = BodyReplay.replay(&req).map(|c| c.into_body());
        let (data, _) = all(copy.unwrap()).await?;
        Ok::<_, BoxError>(data)
    });
    let svc = ReplayableLayer::default().layer(inner);
    let req = Request::new(String::from("hello"));
    assert_eq!(svc.oneshot(req).await.unwrap(), "hello");
}
