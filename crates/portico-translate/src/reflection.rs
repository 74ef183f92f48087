//! gRPC server reflection (`grpc.reflection.v1` and `v1alpha`, the same messages): the
//! requests a gateway sends and a descriptor pool assembled from the answers. The exchange
//! itself (a gRPC call) is `portico-proxy`'s.

use std::collections::{HashMap, HashSet};

use prost::Message;
use prost_reflect::DescriptorPool;

/// `ServerReflectionRequest`, with the two questions a transcoder asks.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(string, tag = "1")]
    pub host: String,
    #[prost(oneof = "Question", tags = "3, 4, 7")]
    pub question: Option<Question>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Question {
    #[prost(string, tag = "3")]
    FileByFilename(String),
    #[prost(string, tag = "4")]
    FileContainingSymbol(String),
    #[prost(string, tag = "7")]
    ListServices(String),
}

/// `ServerReflectionResponse`, with the answers a transcoder reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    #[prost(oneof = "Answer", tags = "4, 6, 7")]
    pub answer: Option<Answer>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Answer {
    #[prost(message, tag = "4")]
    Files(FileDescriptorResponse),
    #[prost(message, tag = "6")]
    Services(ListServiceResponse),
    #[prost(message, tag = "7")]
    Error(ErrorResponse),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileDescriptorResponse {
    /// Serialized `FileDescriptorProto`s, kept as bytes so custom options survive.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub file_descriptor_proto: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListServiceResponse {
    #[prost(message, repeated, tag = "1")]
    pub service: Vec<ServiceResponse>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServiceResponse {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorResponse {
    #[prost(int32, tag = "1")]
    pub error_code: i32,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// The name and imports of a `FileDescriptorProto` (the rest is skipped).
#[derive(Clone, PartialEq, prost::Message)]
struct FileHead {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, repeated, tag = "3")]
    dependency: Vec<String>,
}

/// The request stream body for these questions: each request gRPC-framed.
pub fn requests(questions: impl IntoIterator<Item = Question>) -> bytes::Bytes {
    let mut out = Vec::new();
    for q in questions {
        let r = Request {
            host: String::new(),
            question: Some(q),
        };
        out.extend_from_slice(&crate::grpc::frame(&r.encode_to_vec()));
    }
    out.into()
}

/// Decodes the answers in a response stream body.
pub fn responses(body: &[u8]) -> Result<Vec<Answer>, String> {
    crate::grpc::messages(body)?
        .into_iter()
        .map(|m| {
            Response::decode(m)
                .map_err(|e| format!("undecodable reflection answer: {e}"))?
                .answer
                .ok_or_else(|| "empty reflection answer".to_owned())
        })
        .collect()
}

/// Files collected so far, by name, and the imports none of them provides yet.
#[derive(Default)]
pub struct Files {
    by_name: HashMap<String, (Vec<u8>, Vec<String>)>,
}

impl Files {
    pub fn add(&mut self, raw: Vec<u8>) -> Result<(), String> {
        let head = FileHead::decode(raw.as_slice())
            .map_err(|e| format!("undecodable file descriptor: {e}"))?;
        self.by_name.insert(head.name, (raw, head.dependency));
        Ok(())
    }

    pub fn missing(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .by_name
            .values()
            .flat_map(|(_, deps)| deps.iter())
            .filter(|d| !self.by_name.contains_key(*d))
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The pool: files added dependencies first.
    pub fn pool(&self) -> Result<DescriptorPool, String> {
        let mut pool = DescriptorPool::new();
        let mut done = HashSet::new();
        let mut names: Vec<&String> = self.by_name.keys().collect();
        names.sort();
        fn visit(
            name: &str,
            files: &HashMap<String, (Vec<u8>, Vec<String>)>,
            done: &mut HashSet<String>,
            pool: &mut DescriptorPool,
            depth: usize,
        ) -> Result<(), String> {
            if done.contains(name) {
                return Ok(());
            }
            if depth > 64 {
                return Err(format!("import cycle at `{name}`"));
            }
            let (raw, deps) = files
                .get(name)
                .ok_or_else(|| format!("the server did not send `{name}`"))?;
            for d in deps {
                visit(d, files, done, pool, depth + 1)?;
            }
            pool.decode_file_descriptor_proto(raw.as_slice())
                .map_err(|e| format!("`{name}`: {e}"))?;
            done.insert(name.to_owned());
            Ok(())
        }
        for n in names {
            visit(n, &self.by_name, &mut done, &mut pool, 0)?;
        }
        Ok(pool)
    }
}
