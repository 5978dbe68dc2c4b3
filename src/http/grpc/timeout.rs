//! The `grpc-timeout` header: how long the server has for a call.
//!
//! Its value is at most eight ASCII digits and a unit: `H` hours, `M`
//! minutes, `S` seconds, `m` milliseconds, `u` microseconds, `n`
//! nanoseconds. A time is written in the finest unit whose count fits in
//! eight digits, rounded up to that unit, so that the server never gets less
//! time than the caller has left.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Request};

use crate::channel::AttemptInfo;

/// The `grpc-timeout` header name.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The largest count the header may carry: eight digits.
const MAX_COUNT: u128 = 99_999_999;

/// Units from the finest, with their length in nanoseconds.
const UNITS: [(u8, u128); 6] = [
    (b'n', 1),
    (b'u', 1_000),
    (b'm', 1_000_000),
    (b'S', 1_000_000_000),
    (b'M', 60_000_000_000),
    (b'H', 3_600_000_000_000),
];

/// `remaining` as a `grpc-timeout` value. Times beyond what the header can
/// say (about 11,400 years) are written as the largest it can.
///
/// ```
/// use std::time::Duration;
/// use towline::http::grpc::encode_grpc_timeout;
///
/// assert_eq!(encode_grpc_timeout(Duration::from_millis(250)), "250000u");
/// assert_eq!(encode_grpc_timeout(Duration::from_nanos(99_999_999)), "99999999n");
/// assert_eq!(encode_grpc_timeout(Duration::from_secs(30)), "30000000u");
/// assert_eq!(encode_grpc_timeout(Duration::from_secs(3600)), "3600000m");
/// ```
pub fn encode_grpc_timeout(remaining: Duration) -> HeaderValue {
    let nanos = remaining.as_nanos();
    let (unit, count) = UNITS
        .iter()
        .map(|&(unit, len)| (unit, nanos.div_ceil(len)))
        .find(|&(_, count)| count <= MAX_COUNT)
        .unwrap_or((b'H', MAX_COUNT));
    let mut text = count.to_string();
    text.push(char::from(unit));
    // Digits and an ASCII letter: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("99999999H"))
}

/// Sets `grpc-timeout` in `headers` to `remaining`, replacing any value
/// there: what a client does on each attempt with the time its call has
/// left.
pub fn set_grpc_timeout(headers: &mut HeaderMap, remaining: Duration) {
    headers.insert(GRPC_TIMEOUT, encode_grpc_timeout(remaining));
}

/// The attempt hook that propagates deadlines: give it to
/// [`Builder::on_attempt`](crate::channel::Builder::on_attempt) and each
/// attempt tells its server how long it has.
///
/// It sets `grpc-timeout` to the time left before the attempt is cut: the
/// smaller of what is left of the call's deadline and the attempt's own
/// timeout ([`AttemptInfo::remaining`]). So the first attempt carries about
/// the whole budget, and a retry what is left of it. Without a deadline or
/// a timeout the request is left as it is, and a `grpc-timeout` the caller
/// set (tonic's `Request::set_timeout`) is kept when it is shorter.
///
/// ```
/// # use std::convert::Infallible;
/// # use std::time::Duration;
/// # use http::{Request, Response};
/// # use tower::{Service, ServiceExt, service_fn};
/// use towline::Channel;
/// use towline::discover::Static;
/// use towline::http::grpc::{self, GrpcClassify, parse_grpc_timeout};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A server that answers with the time it was given, in milliseconds.
/// let server = service_fn(|req: Request<String>| async move {
///     let timeout = req.headers().get("grpc-timeout").and_then(parse_grpc_timeout);
///     Ok::<_, Infallible>(Response::new(timeout.map_or(0, |t| t.as_millis())))
/// });
/// let addr: std::net::SocketAddr = "127.0.0.1:50051".parse()?;
/// let mut channel = Channel::builder(grpc::connect(server))
///     .discover(Static::new([addr]))
///     .classifier(GrpcClassify::new())
///     .deadline(Duration::from_secs(2))
///     .on_attempt(grpc::propagate_deadline)
///     .build()?;
/// let response = channel.ready().await?.call(Request::new(String::new())).await?;
/// // The whole deadline, less the moment it took to send the request.
/// assert!((1_000..=2_000).contains(response.into_body().get_ref()));
/// # Ok(())
/// # }
/// ```
pub fn propagate_deadline<B>(request: &mut Request<B>, attempt: &AttemptInfo) {
    let Some(left) = attempt.remaining() else {
        return;
    };
    let headers = request.headers_mut();
    let shorter = headers
        .get(GRPC_TIMEOUT)
        .and_then(parse_grpc_timeout)
        .is_some_and(|own| own <= left);
    if !shorter {
        set_grpc_timeout(headers, left);
    }
}

/// Reads a `grpc-timeout` value, as a server does; `None` when it is
/// malformed (no unit, no digits, more than eight digits, another unit).
///
/// ```
/// use std::time::Duration;
/// use http::HeaderValue;
/// use towline::http::grpc::parse_grpc_timeout;
///
/// assert_eq!(parse_grpc_timeout(&HeaderValue::from_static("5S")), Some(Duration::from_secs(5)));
/// assert_eq!(parse_grpc_timeout(&HeaderValue::from_static("5s")), None);
/// ```
pub fn parse_grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let bytes = value.as_bytes();
    let (&unit, digits) = bytes.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let count: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let len = UNITS.iter().find(|(u, _)| *u == unit)?.1;
    let nanos = u128::from(count) * len;
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    // The remainder is below one second, so it fits in u32.
    let sub = u32::try_from(nanos % 1_000_000_000).ok()?;
    Some(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_in_the_finest_unit_that_fits_rounding_up() {
        let cases = [
            (Duration::ZERO, "0n"),
            (Duration::from_nanos(1), "1n"),
            (Duration::from_nanos(100_000_000), "100000u"),
            (Duration::from_nanos(100_000_001), "100001u"),
            (Duration::from_secs(99), "99000000u"),
            (Duration::from_secs(100), "100000m"),
            (Duration::from_secs(100_000), "100000S"),
            (Duration::from_secs(100_000_000), "1666667M"),
            (Duration::from_secs(6_000_000_000), "1666667H"),
            (Duration::MAX, "99999999H"),
        ];
        for (d, want) in cases {
            assert_eq!(encode_grpc_timeout(d), want, "{d:?}");
        }
    }

    #[test]
    fn a_written_timeout_reads_back_no_shorter_and_at_most_one_unit_longer() {
        let mut rng = crate::rng::Rng::seeded(77);
        for _ in 0..10_000 {
            // Spread over ns to days: a random count of a random power of ten.
            let scale = 10u64.pow((rng.unit() * 14.0) as u32);
            let d = Duration::from_nanos((rng.unit() * scale as f64) as u64 * 1000 + 1);
            let v = encode_grpc_timeout(d);
            let back = parse_grpc_timeout(&v).expect("valid");
            let unit = UNITS
                .iter()
                .find(|(u, _)| *u == *v.as_bytes().last().unwrap())
                .unwrap()
                .1;
            assert!(back >= d, "{d:?} -> {v:?} -> {back:?}");
            assert!(back.as_nanos() - d.as_nanos() < unit, "{d:?} -> {v:?}");
            assert!(v.len() <= 9);
        }
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in ["", "S", "5", "123456789S", "5s", "-5S", "5 S", "5.0S", "٣S"] {
            let v = HeaderValue::from_bytes(bad.as_bytes()).unwrap();
            assert_eq!(parse_grpc_timeout(&v), None, "{bad:?}");
        }
        let v = HeaderValue::from_static("99999999H");
        assert_eq!(
            parse_grpc_timeout(&v),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        let mut headers = HeaderMap::new();
        set_grpc_timeout(&mut headers, Duration::from_millis(1500));
        set_grpc_timeout(&mut headers, Duration::from_millis(700));
        assert_eq!(headers.get_all(GRPC_TIMEOUT).iter().count(), 1);
        assert_eq!(headers[GRPC_TIMEOUT], "700000u");
    }
}
