//! HTTP/1.1: the client connection's request-head parser and the body decoder behind it; the
//! upstream connection's response-head parser and the same decoder for responses.

use portico_proxy::fuzzing::{
    BodyFraming, DecodedBody, HeadRead, decode_body, read_request_head, read_response_head,
};

/// The request head parses without panicking; an accepted head names a method, a target and
/// only valid header names; a head is read the same whatever follows it; a refused head has
/// no framing; the body behind it decodes to the same result whatever pieces it arrives in.
pub fn request_head(data: &[u8]) {
    let first = read_request_head(data);
    let HeadRead::Head(head) = &first else {
        return;
    };
    assert!(
        !head.method.is_empty() && !head.target.is_empty(),
        "{head:?}"
    );
    assert!(head.len <= data.len());
    for (name, _) in &head.headers {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
        );
    }
    if head.refusal.is_some() {
        assert_eq!(head.framing, None);
    }
    // What follows the head (a body, the next request) never changes how the head reads.
    if head.len > 0 {
        assert_eq!(read_request_head(&data[..head.len]), first);
        let mut more = data[..head.len].to_vec();
        more.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(read_request_head(&more), first);
    }
    if let Some(framing) = head.framing {
        body_is_stable(framing, &data[head.len..]);
    }
}

/// The response head parses without panicking; a complete head is complete without the bytes
/// behind it and incomplete one byte short; its body decodes alike in any pieces.
pub fn response_head(data: &[u8]) {
    let first = read_response_head(data);
    let Ok(Some(head)) = &first else {
        return;
    };
    assert!((200..1000).contains(&head.status), "{head:?}");
    assert!(head.len <= data.len());
    assert_eq!(read_response_head(&data[..head.len]), first);
    assert_eq!(read_response_head(&data[..head.len - 1]), Ok(None));
    for (name, _) in &head.headers {
        // Fields about this connection only are taken out.
        assert!(name != "keep-alive", "{head:?}");
    }
    body_is_stable(head.framing, &data[head.len..]);
}

/// The decoder's result does not depend on how its input is cut into reads.
fn body_is_stable(framing: BodyFraming, body: &[u8]) {
    let whole: DecodedBody = decode_body(framing, body, body.len());
    for step in [1, 2, 7] {
        let piecewise = decode_body(framing, body, step);
        assert_eq!(piecewise, whole, "{framing:?} in pieces of {step}");
    }
    if whole.error.is_none() {
        assert!(whole.rest <= body.len());
        if let BodyFraming::Length(n) = framing {
            assert_eq!(whole.data.len() as u64, n);
        }
    }
}
