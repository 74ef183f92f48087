//! gRPC framing and status codes (the parts of the gRPC-over-HTTP/2 protocol a transcoder
//! needs; message encoding itself is prost's).

use bytes::{BufMut, Bytes, BytesMut};

/// One length-prefixed message: flag 0 (not compressed), 4-byte big-endian length, the bytes.
pub fn frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.put_u8(0);
    b.put_u32(msg.len() as u32);
    b.put_slice(msg);
    b.freeze()
}

/// Splits a body into its messages. A compressed message is refused: Portico does not offer
/// `grpc-accept-encoding`, so a server has no reason to send one.
pub fn messages(mut body: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    while !body.is_empty() {
        if body.len() < 5 {
            return Err("truncated gRPC message header".into());
        }
        if body[0] != 0 {
            return Err("compressed gRPC message (no grpc-accept-encoding was offered)".into());
        }
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let end = 5usize
            .checked_add(len)
            .filter(|e| *e <= body.len())
            .ok_or("truncated gRPC message")?;
        out.push(&body[5..end]);
        body = &body[end..];
    }
    Ok(out)
}

/// The status code names of `google.rpc.Code`.
pub fn code_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// The HTTP status for a gRPC status, as `google.rpc.Code` documents it.
pub fn http_status(code: u32) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

/// `grpc-timeout` for a duration: at most 8 digits, in the finest unit that fits.
pub fn timeout_header(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 100_000_000 {
        format!("{ms}m")
    } else {
        format!("{}S", d.as_secs().min(99_999_999))
    }
}

/// `google.rpc.Status`, carried base64-encoded in `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trips_and_refuses_truncation() {
        let mut two = frame(b"abc").to_vec();
        two.extend_from_slice(&frame(b""));
        assert_eq!(messages(&two).unwrap(), vec![&b"abc"[..], &b""[..]]);
        assert!(messages(&two[..6]).is_err());
        assert!(messages(&[1, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn statuses_map_to_http() {
        assert_eq!(http_status(5), 404);
        assert_eq!(http_status(16), 401);
        assert_eq!(http_status(14), 503);
        assert_eq!(http_status(99), 500);
        assert_eq!(timeout_header(std::time::Duration::from_secs(5)), "5000m");
    }
}
