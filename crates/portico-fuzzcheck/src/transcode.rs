//! JSON (with path and query) to protobuf, against the test kit's bookstore service.

use std::sync::OnceLock;

use portico_translate::{Options, Transcoder, grpc};

/// `crates/portico-testkit/protos` compiled (a test in portico-proxy keeps the two equal).
const BOOKSTORE: &[u8] = include_bytes!("../../../examples/bookstore.pb");

fn transcoder() -> &'static Transcoder {
    static T: OnceLock<Transcoder> = OnceLock::new();
    T.get_or_init(|| {
        let options = Options {
            services: Vec::new(),
            call_by_name: true,
            emit_defaults: false,
            ignore_unknown_query: false,
        };
        Transcoder::new(BOOKSTORE, options).expect("the bookstore descriptor set loads")
    })
}

/// Input: `METHOD path?query` on the first line, the JSON body after it. Routing and
/// transcoding never panic; a request that transcodes is one gRPC message of the method's
/// input type; for methods whose answer has the same type (`Echo`, `SearchBooks`), the
/// message read back as JSON and sent again gives the same JSON (JSON -> protobuf is stable
/// after one trip). Any body also goes through the response side as an encoded message.
pub fn transcode(data: &[u8]) {
    let t = transcoder();
    let (line, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let line = crate::text(line);
    let (method, target) = line.split_once(' ').unwrap_or(("POST", &line));
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let Ok(call) = t.route(&method, path) else {
        return;
    };
    // Whatever the body is, read as an answer it is refused or written, never a panic.
    let _ = t.message_json(call.key(), body);
    let Ok(framed) = t.request(&call, query, body) else {
        return;
    };
    let msgs = grpc::messages(&framed).expect("one framed message");
    let [msg] = msgs.as_slice() else {
        panic!("{} messages", msgs.len());
    };
    let input = call.method.desc.input();
    portico_translate::DynamicMessage::decode(input.clone(), *msg)
        .unwrap_or_else(|e| panic!("undecodable request message: {e}"));
    if input.full_name() != call.method.desc.output().full_name() {
        return;
    }
    // Sent again by name (the whole message is the body), the JSON read back is the same.
    let json = t
        .message_json(call.key(), msg)
        .unwrap_or_else(|e| panic!("a request message is not readable: {e}"));
    let by_name = t
        .route(&http::Method::POST, call.method.path.as_str())
        .expect("called by name");
    let framed2 = t.request(&by_name, None, &json).unwrap_or_else(|e| {
        panic!(
            "its own JSON refused: {e:?}: {}",
            String::from_utf8_lossy(&json)
        )
    });
    let msgs2 = grpc::messages(&framed2).expect("one framed message");
    let json2 = t.message_json(by_name.key(), msgs2[0]).expect("readable");
    let (a, b): (serde_json::Value, serde_json::Value) = (
        serde_json::from_slice(&json).expect("JSON"),
        serde_json::from_slice(&json2).expect("JSON"),
    );
    assert_eq!(a, b);
}
