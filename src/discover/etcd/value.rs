//! The value stored under an etcd key: how an endpoint is written and read.
//!
//! Two forms are read:
//! - a bare socket address, `127.0.0.1:8080` or `[::1]:8080` (surrounding
//!   whitespace, such as the newline `echo` adds, is ignored);
//! - a JSON object, `{"addr": "127.0.0.1:8080", "weight": 5, "metadata":
//!   {"zone": "a"}}`. `addr` is required; `weight` defaults to 1
//!   ([`DEFAULT_WEIGHT`](crate::DEFAULT_WEIGHT)); `metadata` defaults to empty
//!   and holds strings only. Unknown fields are ignored, so writers may add
//!   fields later.
//!
//! The address must be an IP literal: a host name would need a resolver, and
//! discovery through etcd exists to avoid one. [`encode_value`] writes the
//! JSON form (what [`Registrar`](crate::discover::Registrar) puts), and
//! [`parse_value`] reads both forms. Neither panics on any input.
//!
//! ```
//! use towline::discover::etcd::{encode_value, parse_value};
//!
//! let ep = parse_value(br#"{"addr": "127.0.0.1:8080", "weight": 3}"#).unwrap();
//! assert_eq!(ep.weight, 3);
//! assert_eq!(parse_value(b"127.0.0.1:8080\n").unwrap().addr, ep.addr);
//! assert_eq!(parse_value(&encode_value(&ep)).unwrap(), ep);
//! assert!(parse_value(b"not an address").is_err());
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::{DEFAULT_WEIGHT, Endpoint};

/// Why a value under the watched prefix is not an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueError {
    /// The value is not UTF-8 text.
    NotUtf8,
    /// The value looks like JSON (starts with `{`) but is not a valid
    /// endpoint object; carries serde's explanation.
    Json(String),
    /// The address (bare, or the JSON `addr` field) is not an `ip:port`
    /// socket address; carries the offending text (truncated to 64 bytes).
    Addr(String),
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueError::NotUtf8 => f.write_str("value is not UTF-8"),
            ValueError::Json(e) => write!(f, "value is not a valid endpoint object: {e}"),
            ValueError::Addr(a) => write!(f, "`{a}` is not an ip:port socket address"),
        }
    }
}

impl std::error::Error for ValueError {}

/// The JSON form, as read and written.
#[derive(Serialize, Deserialize)]
struct JsonEndpoint {
    addr: String,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

/// Reads an endpoint from an etcd value. Never panics.
///
/// Two forms: a bare `ip:port` (`127.0.0.1:8080`, `[::1]:8080`; surrounding
/// whitespace ignored), or a JSON object `{"addr": "ip:port", "weight": N,
/// "metadata": {"k": "v"}}` where `weight` defaults to 1, `metadata` to
/// empty (string values only), and unknown fields are ignored. Host names
/// are refused: the address must be an IP literal.
pub fn parse_value(value: &[u8]) -> Result<Endpoint, ValueError> {
    let text = std::str::from_utf8(value).map_err(|_| ValueError::NotUtf8)?;
    let text = text.trim();
    if text.starts_with('{') {
        let json: JsonEndpoint =
            serde_json::from_str(text).map_err(|e| ValueError::Json(e.to_string()))?;
        let addr = parse_addr(json.addr.trim())?;
        Ok(Endpoint {
            addr,
            weight: json.weight,
            metadata: json.metadata,
        })
    } else {
        parse_addr(text).map(Endpoint::new)
    }
}

/// Writes `endpoint` in the JSON form that [`parse_value`] reads back to an
/// equal endpoint (`metadata` is left out when empty).
pub fn encode_value(endpoint: &Endpoint) -> Vec<u8> {
    let json = JsonEndpoint {
        addr: endpoint.addr.to_string(),
        weight: endpoint.weight,
        metadata: endpoint.metadata.clone(),
    };
    // Strings and integers only: serialising this cannot fail.
    serde_json::to_vec(&json).unwrap_or_default()
}

fn parse_addr(text: &str) -> Result<SocketAddr, ValueError> {
    text.parse().map_err(|_| {
        let mut end = text.len().min(64);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        ValueError::Addr(text[..end].to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bare_addresses_v4_and_v6_with_whitespace() {
        assert_eq!(
            parse_value(b"10.0.0.1:80").unwrap(),
            Endpoint::new(addr("10.0.0.1:80"))
        );
        assert_eq!(
            parse_value(b"  [::1]:9000\r\n").unwrap(),
            Endpoint::new(addr("[::1]:9000"))
        );
    }

    #[test]
    fn json_with_defaults_and_all_fields() {
        let ep = parse_value(br#"{"addr":"127.0.0.1:1"}"#).unwrap();
        assert_eq!(ep, Endpoint::new(addr("127.0.0.1:1")));
        let ep = parse_value(
            br#" {"addr":"127.0.0.1:2","weight":0,"metadata":{"zone":"b"},"extra":[1]} "#,
        )
        .unwrap();
        assert_eq!(
            ep,
            Endpoint::new(addr("127.0.0.1:2"))
                .with_weight(0)
                .with_metadata("zone", "b")
        );
    }

    #[test]
    fn malformed_values_are_errors() {
        let cases: &[&[u8]] = &[
            b"",
            b"localhost:80",
            b"127.0.0.1",
            b"127.0.0.1:99999",
            b"\xff\xfe",
            b"{",
            br#"{"weight": 2}"#,
            br#"{"addr": "127.0.0.1:1", "weight": -1}"#,
            br#"{"addr": "127.0.0.1:1", "weight": 4294967296}"#,
            br#"{"addr": "127.0.0.1:1", "metadata": {"n": 1}}"#,
            br#"{"addr": 5}"#,
            br#"{"addr": "no"}"#,
        ];
        for case in cases {
            assert!(
                parse_value(case).is_err(),
                "{:?} parsed",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn long_bad_address_is_truncated_on_a_char_boundary() {
        let text = "é".repeat(100);
        match parse_value(text.as_bytes()) {
            Err(ValueError::Addr(shown)) => assert!(shown.len() <= 64 && !shown.is_empty()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let eps = [
            Endpoint::new(addr("127.0.0.1:8080")),
            Endpoint::new(addr("[fe80::1]:1"))
                .with_weight(u32::MAX)
                .with_metadata("k", "v \"quoted\"")
                .with_metadata("", "ü"),
        ];
        for ep in eps {
            assert_eq!(parse_value(&encode_value(&ep)).unwrap(), ep);
        }
    }

    /// Seeded random bytes, and random mutations of valid values: never a
    /// panic, and whatever parses re-encodes to the same endpoint.
    #[test]
    fn random_input_never_panics_and_what_parses_round_trips() {
        let mut rng = crate::rng::Rng::seeded(7);
        let seeds: [&[u8]; 3] = [
            b"127.0.0.1:80",
            br#"{"addr":"[::1]:9","weight":3,"metadata":{"a":"b"}}"#,
            b"{}",
        ];
        for _ in 0..20_000 {
            let mut input = seeds[rng.below(seeds.len())].to_vec();
            for _ in 0..rng.below(4) {
                let at = rng.below(input.len() + 1);
                match rng.below(3) {
                    0 if at < input.len() => input[at] = rng.next_u64() as u8,
                    1 if at < input.len() => {
                        input.remove(at);
                    }
                    _ => input.insert(at, rng.next_u64() as u8),
                }
            }
            if let Ok(ep) = parse_value(&input) {
                assert_eq!(parse_value(&encode_value(&ep)).unwrap(), ep);
            }
        }
    }
}
