//! Protocol translation for Portico, free of I/O: REST/JSON to gRPC transcoding
//! (`google.api.http` bindings, the proto3 JSON mapping by prost-reflect, gRPC framing and
//! status mapping) and XML (a safe reader, the generic XML↔JSON mapping). `portico-config` builds transcoders when a config loads, so descriptor and
//! annotation problems are config errors; `portico-proxy` calls them per request.

#![forbid(unsafe_code)]

pub mod grpc;
pub mod openapi;
pub mod reflection;
pub mod shape;
pub mod soap;
pub mod template;
mod transcode;
pub mod wsdl;
pub mod xml;

pub use prost_reflect::{DescriptorPool, DynamicMessage};
pub use transcode::{Call, CallKey, Method, Options, RequestError, Transcoder};
