//! Request ids: every answer carries one. The request's own (the body's `id`), else the caller's `x-request-id`
//! header or metadata, else a new UUIDv7, whose leading 48 bits are the time in milliseconds so that ids sort by
//! arrival. The same id is the payload log's record id and what feedback names later.

use std::time::{SystemTime, UNIX_EPOCH};

use super::ApiError;
use crate::routing::random_u64;

/// The header (REST) or metadata key (gRPC) of the request id, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Longest id taken: enough for any UUID, trace id or composite key, short enough to keep in memory by the million.
pub const MAX_ID_BYTES: usize = 256;

/// The request's id: the body's, else the transport's, else a new one. An id that is empty, too long or not
/// printable ASCII is refused, since it must travel in a header and a file name-safe log.
pub fn resolve(body: Option<String>, transport: Option<&str>) -> Result<String, ApiError> {
    match body.filter(|id| !id.is_empty()).or_else(|| transport.filter(|id| !id.is_empty()).map(str::to_owned)) {
        Some(id) => check(id),
        None => Ok(generate()),
    }
}

/// The id of a refused request's answer, so that an error too can be matched to the caller's logs: the body's when
/// it was read and is valid, else the transport's when valid, else a new one.
pub fn for_refusal(body: Option<String>, transport: Option<&str>) -> String {
    let body = body.filter(|id| !id.is_empty()).and_then(|id| check(id).ok());
    let transport = || transport.filter(|id| !id.is_empty()).and_then(|id| check(id.to_owned()).ok());
    body.or_else(transport).unwrap_or_else(generate)
}

fn check(id: String) -> Result<String, ApiError> {
    if id.len() > MAX_ID_BYTES {
        return Err(ApiError::invalid_input(format!(
            "the request id is {} bytes long; at most {MAX_ID_BYTES} are allowed",
            id.len()
        )));
    }
    if let Some(bad) = id.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(ApiError::invalid_input(format!(
            "the request id holds {bad:?}; an id is printable ASCII (it is sent back in the {REQUEST_ID_HEADER} \
             header)"
        )));
    }
    Ok(id)
}

/// A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, the version, 74 random bits.
pub fn generate() -> String {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let (a, b) = (random_u64(), random_u64());
    let high = (millis << 16) | 0x7000 | (a & 0x0fff);
    let low = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    // Written digit by digit into a buffer: this runs on every request that brings no id of its own.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [b'-'; 36];
    let mut at = 0;
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            at += 1;
        }
        let nibble = if i < 16 { (high >> (60 - 4 * i)) & 0xf } else { (low >> (124 - 4 * i)) & 0xf };
        id[at] = HEX[nibble as usize];
        at += 1;
    }
    // ASCII, so each byte is one char: one allocation, and nothing that could fail.
    id.iter().copied().map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_wins_then_the_header_then_a_new_id() {
        assert_eq!(resolve(Some("b".into()), Some("h")).unwrap(), "b");
        assert_eq!(resolve(None, Some("h")).unwrap(), "h");
        assert_eq!(resolve(Some(String::new()), Some("h")).unwrap(), "h");
        let new = resolve(None, None).unwrap();
        assert_eq!(new.len(), 36);
        assert_eq!(&new[14..15], "7", "version 7: {new}");
        assert!(matches!(&new[19..20], "8" | "9" | "a" | "b"), "RFC variant: {new}");
        assert_ne!(generate(), generate());
        let millis = u64::from_str_radix(&new[..13].replace('-', ""), 16).unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(now - millis < 5_000, "the first 48 bits are the time in milliseconds: {new}");
    }

    #[test]
    fn a_refusal_gets_the_request_id_unless_it_is_invalid() {
        assert_eq!(for_refusal(Some("b".into()), Some("h")), "b");
        assert_eq!(for_refusal(None, Some("h")), "h");
        assert_eq!(for_refusal(Some("bad\nid".into()), Some("h")), "h");
        let replaced = for_refusal(Some("bad\nid".into()), Some("bad\theader"));
        assert_eq!((replaced.len(), &replaced[14..15]), (36, "7"), "{replaced}");
        assert_eq!(for_refusal(None, None).len(), 36);
    }

    #[test]
    fn ids_sort_by_time() {
        let first = generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(generate() > first);
    }

    #[test]
    fn unusable_ids_are_refused() {
        assert!(resolve(Some("a\nb".into()), None).is_err());
        assert!(resolve(Some("é".into()), None).is_err());
        assert!(resolve(None, Some(&"x".repeat(MAX_ID_BYTES + 1))).is_err());
        assert!(resolve(Some("x".repeat(MAX_ID_BYTES)), None).is_ok());
    }
}
