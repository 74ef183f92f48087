//! A gRPC bookstore served by tonic, built at test time from `protos/` (compiled by protox, so
//! no protoc is needed) and answering with dynamic messages, so the gateway's transcoding is
//! tested against a real gRPC server with no generated code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;

use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value};
use tokio::net::TcpListener;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

/// The protos folder of the test kit.
pub fn protos_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("protos")
}

/// `bookstore/bookstore.proto` with its imports, as a serialized `FileDescriptorSet` (what
/// `protoc --include_imports --descriptor_set_out` writes).
pub fn bookstore_descriptor_set() -> Vec<u8> {
    // Encoded by protox itself: going through prost-types would drop the extension options
    // (`google.api.http`).
    protox::Compiler::new([protos_dir()])
        .expect("protos folder")
        .include_imports(true)
        .open_file("bookstore/bookstore.proto")
        .expect("test protos compile")
        .encode_file_descriptor_set()
}

/// Writes the descriptor set to `dir/bookstore.pb` and returns its path.
pub fn write_bookstore_descriptor_set(dir: &std::path::Path) -> PathBuf {
    let p = dir.join("bookstore.pb");
    std::fs::write(&p, bookstore_descriptor_set()).unwrap();
    p
}

#[derive(Clone)]
struct DynCodec {
    input: MessageDescriptor,
}

struct DynEncoder;
struct DynDecoder(MessageDescriptor);

impl Codec for DynCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynEncoder;
    type Decoder = DynDecoder;
    fn encoder(&mut self) -> DynEncoder {
        DynEncoder
    }
    fn decoder(&mut self) -> DynDecoder {
        DynDecoder(self.input.clone())
    }
}

impl Encoder for DynEncoder {
    type Item = DynamicMessage;
    type Error = Status;
    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl Decoder for DynDecoder {
    type Item = DynamicMessage;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

/// `google.rpc.Status` and `google.protobuf.Any`, for error details.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

fn msg(pool: &DescriptorPool, name: &str) -> DynamicMessage {
    DynamicMessage::new(pool.get_message_by_name(name).expect(name))
}

fn int(m: &DynamicMessage, f: &str) -> i64 {
    m.get_field_by_name(f)
        .and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from)))
        .unwrap_or(0)
}

fn text(m: &DynamicMessage, f: &str) -> String {
    m.get_field_by_name(f)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn book(pool: &DescriptorPool, shelf: i64, id: &str, title: &str) -> DynamicMessage {
    let mut b = msg(pool, "bookstore.Book");
    b.set_field_by_name("shelf", Value::I64(shelf));
    b.set_field_by_name("id", Value::String(id.to_owned()));
    b.set_field_by_name("title", Value::String(title.to_owned()));
    b
}

/// What each unary method answers.
fn unary(
    pool: &DescriptorPool,
    method: &str,
    req: DynamicMessage,
    md: &tonic::metadata::MetadataMap,
) -> Result<DynamicMessage, Status> {
    let user = md
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Ok(match method {
        "ListShelves" => {
            let mut r = msg(pool, "bookstore.ListShelvesResponse");
            let shelves = [(1, "fiction"), (2, "history")]
                .iter()
                .map(|(id, theme)| {
                    let mut s = msg(pool, "bookstore.Shelf");
                    s.set_field_by_name("id", Value::I64(*id));
                    s.set_field_by_name("theme", Value::String((*theme).into()));
                    Value::Message(s)
                })
                .collect();
            r.set_field_by_name("shelves", Value::List(shelves));
            r
        }
        "CreateShelf" => {
            let mut s = match req.get_field_by_name("shelf").as_deref() {
                Some(Value::Message(s)) => s.clone(),
                _ => msg(pool, "bookstore.Shelf"),
            };
            if int(&s, "id") == 0 {
                s.set_field_by_name("id", Value::I64(99));
            }
            s
        }
        "GetShelf" => {
            let id = int(&req, "shelf");
            if id == 404 {
                return Err(Status::not_found(format!("shelf {id} does not exist")));
            }
            let mut s = msg(pool, "bookstore.Shelf");
            s.set_field_by_name("id", Value::I64(id));
            s.set_field_by_name("theme", Value::String(format!("theme-{id}")));
            s
        }
        "GetBook" | "GetBookTitle" => {
            let (shelf, id) = match text(&req, "name") {
                n if !n.is_empty() => {
                    let parts: Vec<&str> = n.split('/').collect();
                    (parts[1].parse().unwrap_or(0), parts[3].to_owned())
                }
                _ => (int(&req, "shelf"), text(&req, "book")),
            };
            let mut b = book(pool, shelf, &id, &format!("Title {id}"));
            b.set_field_by_name("author", Value::String(user));
            b
        }
        "UpdateBook" => match req.get_field_by_name("book").as_deref() {
            Some(Value::Message(b)) => b.clone(),
            _ => return Err(Status::invalid_argument("no book")),
        },
        "PublishBook" => book(pool, int(&req, "shelf"), &text(&req, "book"), "published"),
        "ArchiveBook" => book(pool, int(&req, "shelf"), &text(&req, "book"), "archived"),
        "SearchBooks" | "Echo" | "Unannotated" => req,
        "Fail" => {
            let code = Code::from(int(&req, "code") as i32);
            let message = text(&req, "message");
            let with_details = req
                .get_field_by_name("with_details")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            if !with_details {
                return Err(Status::new(code, message));
            }
            let mut v = msg(pool, "bookstore.FieldViolation");
            v.set_field_by_name("field", Value::String("shelf.theme".into()));
            v.set_field_by_name("description", Value::String("must not be empty".into()));
            let details = RpcStatus {
                code: code as i32,
                message: message.clone(),
                details: vec![
                    ProtoAny {
                        type_url: "type.googleapis.com/bookstore.FieldViolation".into(),
                        value: v.encode_to_vec(),
                    },
                    ProtoAny {
                        type_url: "type.googleapis.com/unknown.Thing".into(),
                        value: vec![1, 2, 3],
                    },
                ],
            };
            return Err(Status::with_details(
                code,
                message,
                details.encode_to_vec().into(),
            ));
        }
        other => return Err(Status::unimplemented(format!("no method {other}"))),
    })
}

type BoxStream = Pin<Box<dyn futures_util::Stream<Item = Result<DynamicMessage, Status>> + Send>>;

#[derive(Clone)]
struct Unary(DescriptorPool, String);

impl tonic::server::UnaryService<DynamicMessage> for Unary {
    type Response = DynamicMessage;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<DynamicMessage>, Status>> + Send>>;
    fn call(&mut self, req: tonic::Request<DynamicMessage>) -> Self::Future {
        let (pool, method) = (self.0.clone(), self.1.clone());
        Box::pin(async move {
            let md = req.metadata().clone();
            unary(&pool, &method, req.into_inner(), &md).map(tonic::Response::new)
        })
    }
}

#[derive(Clone)]
struct Streaming(DescriptorPool);

impl tonic::server::ServerStreamingService<DynamicMessage> for Streaming {
    type Response = DynamicMessage;
    type ResponseStream = BoxStream;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<BoxStream>, Status>> + Send>>;
    fn call(&mut self, req: tonic::Request<DynamicMessage>) -> Self::Future {
        let pool = self.0.clone();
        Box::pin(async move {
            let shelf = int(req.get_ref(), "shelf");
            let mut books: Vec<Result<DynamicMessage, Status>> = (1..=3)
                .map(|i| Ok(book(&pool, shelf, &i.to_string(), &format!("Title {i}"))))
                .collect();
            // Shelf 13 fails after two books.
            if shelf == 13 {
                books.truncate(2);
                books.push(Err(Status::aborted("shelf 13 is haunted")));
            }
            if shelf == 404 {
                return Err(Status::not_found("no shelf 404"));
            }
            let s: BoxStream = Box::pin(futures_util::stream::iter(books));
            Ok(tonic::Response::new(s))
        })
    }
}

/// CountBooks: the number of books sent, and their titles joined.
#[derive(Clone)]
struct Counting(DescriptorPool);

impl tonic::server::ClientStreamingService<DynamicMessage> for Counting {
    type Response = DynamicMessage;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<DynamicMessage>, Status>> + Send>>;
    fn call(&mut self, req: tonic::Request<tonic::Streaming<DynamicMessage>>) -> Self::Future {
        let pool = self.0.clone();
        Box::pin(async move {
            let mut stream = req.into_inner();
            let mut titles = Vec::new();
            while let Some(b) = stream.message().await? {
                titles.push(text(&b, "title"));
            }
            let mut s = msg(&pool, "bookstore.Shelf");
            s.set_field_by_name("id", Value::I64(titles.len() as i64));
            s.set_field_by_name("theme", Value::String(titles.join("+")));
            Ok(tonic::Response::new(s))
        })
    }
}

/// Chat: every book back, its title upper-cased.
#[derive(Clone)]
struct Chatting;

impl tonic::server::StreamingService<DynamicMessage> for Chatting {
    type Response = DynamicMessage;
    type ResponseStream = BoxStream;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<BoxStream>, Status>> + Send>>;
    fn call(&mut self, req: tonic::Request<tonic::Streaming<DynamicMessage>>) -> Self::Future {
        Box::pin(async move {
            let mut input = req.into_inner();
            let mut out = Vec::new();
            while let Some(mut b) = input.message().await? {
                let t = text(&b, "title").to_uppercase();
                b.set_field_by_name("title", Value::String(t));
                out.push(Ok(b));
            }
            let s: BoxStream = Box::pin(futures_util::stream::iter(out));
            Ok(tonic::Response::new(s))
        })
    }
}

/// Which gRPC reflection the bookstore offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reflection {
    V1,
    V1Alpha,
}

/// `FileDescriptorSet` with its files kept as raw bytes (custom options intact).
#[derive(Clone, PartialEq, prost::Message)]
struct RawSet {
    #[prost(bytes = "vec", repeated, tag = "1")]
    file: Vec<Vec<u8>>,
}

/// The `name` field of a serialized `FileDescriptorProto`.
fn file_name(raw: &[u8]) -> String {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Head {
        #[prost(string, tag = "1")]
        name: String,
    }
    Head::decode(raw).map(|h| h.name).unwrap_or_default()
}

/// Answers a reflection stream (the whole request stream read first, which is all a gateway
/// needs): files by name or by symbol (with their imports, as servers commonly send them) and
/// the service list, the descriptors served byte for byte as compiled.
fn reflection_answers(pool: &DescriptorPool, raw: &RawSet, body: &[u8]) -> Vec<u8> {
    use portico_translate::reflection::{
        Answer, ErrorResponse, FileDescriptorResponse, ListServiceResponse, Question, Request,
        Response, ServiceResponse,
    };
    let by_name = |name: &str| raw.file.iter().find(|f| file_name(f) == name).cloned();
    let mut out = Vec::new();
    for m in portico_translate::grpc::messages(body).unwrap_or_default() {
        let Ok(req) = Request::decode(m) else {
            continue;
        };
        let answer = match req.question {
            Some(Question::ListServices(_)) => Answer::Services(ListServiceResponse {
                service: pool
                    .services()
                    .map(|s| ServiceResponse {
                        name: s.full_name().to_owned(),
                    })
                    .collect(),
            }),
            Some(Question::FileContainingSymbol(sym)) => {
                match pool.get_service_by_name(&sym).map(|s| s.parent_file()) {
                    Some(file) => {
                        let mut names = vec![file.name().to_owned()];
                        let mut i = 0;
                        while i < names.len() {
                            if let Some(f) = pool.get_file_by_name(&names[i]) {
                                for d in f.dependencies() {
                                    if !names.iter().any(|n| n == d.name()) {
                                        names.push(d.name().to_owned());
                                    }
                                }
                            }
                            i += 1;
                        }
                        Answer::Files(FileDescriptorResponse {
                            file_descriptor_proto: names
                                .iter()
                                .filter_map(|n| by_name(n))
                                .collect(),
                        })
                    }
                    None => Answer::Error(ErrorResponse {
                        error_code: 5,
                        error_message: format!("no symbol {sym}"),
                    }),
                }
            }
            Some(Question::FileByFilename(name)) => match by_name(&name) {
                Some(f) => Answer::Files(FileDescriptorResponse {
                    file_descriptor_proto: vec![f],
                }),
                None => Answer::Error(ErrorResponse {
                    error_code: 5,
                    error_message: format!("no file {name}"),
                }),
            },
            None => continue,
        };
        let resp = Response {
            answer: Some(answer),
        };
        out.extend_from_slice(&portico_translate::grpc::frame(&resp.encode_to_vec()));
    }
    out
}

/// Starts the bookstore (h2c), with gRPC server reflection (v1), and returns its address.
pub async fn grpc_bookstore() -> SocketAddr {
    grpc_bookstore_with(Reflection::V1).await
}

/// The bookstore offering only the given reflection version.
pub async fn grpc_bookstore_with(reflection: Reflection) -> SocketAddr {
    let set = bookstore_descriptor_set();
    let raw = std::sync::Arc::new(RawSet::decode(set.as_slice()).unwrap());
    let pool = DescriptorPool::decode(set.as_slice()).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let pool = pool.clone();
            let raw = raw.clone();
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let pool = pool.clone();
                    let raw = raw.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let offered = match reflection {
                            Reflection::V1 => {
                                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
                            }
                            Reflection::V1Alpha => {
                                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
                            }
                        };
                        if path == offered {
                            use http_body_util::BodyExt;
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let answers = reflection_answers(&pool, &raw, &body);
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", "0".parse().unwrap());
                            let frames = vec![
                                Ok::<_, std::convert::Infallible>(http_body::Frame::data(
                                    bytes::Bytes::from(answers),
                                )),
                                Ok(http_body::Frame::trailers(trailers)),
                            ];
                            let body =
                                http_body_util::StreamBody::new(futures_util::stream::iter(frames));
                            let mut r = http::Response::new(tonic::body::Body::new(body));
                            r.headers_mut()
                                .insert("content-type", "application/grpc".parse().unwrap());
                            return Ok::<_, std::convert::Infallible>(r);
                        }
                        let method = path.rsplit('/').next().unwrap_or_default().to_owned();
                        let desc = pool
                            .get_service_by_name("bookstore.Bookstore")
                            .and_then(|s| s.methods().find(|m| m.name() == method));
                        let Some(desc) = desc else {
                            let mut r = http::Response::new(tonic::body::Body::default());
                            r.headers_mut().insert("grpc-status", "12".parse().unwrap());
                            r.headers_mut()
                                .insert("content-type", "application/grpc".parse().unwrap());
                            return Ok::<_, std::convert::Infallible>(r);
                        };
                        let mut grpc = tonic::server::Grpc::new(DynCodec {
                            input: desc.input(),
                        });
                        Ok(
                            match (desc.is_client_streaming(), desc.is_server_streaming()) {
                                (true, true) => grpc.streaming(Chatting, req).await,
                                (true, false) => grpc.client_streaming(Counting(pool), req).await,
                                (false, true) => grpc.server_streaming(Streaming(pool), req).await,
                                (false, false) => grpc.unary(Unary(pool, method), req).await,
                            },
                        )
                    }
                });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}
