//! Protocol translation with I/O: REST/JSON to gRPC, gRPC-Web, SOAP, XML and JSON, composite routes.

pub mod aggregate;
pub mod grpc;
pub mod grpc_web;
pub mod soap;
pub mod xml_json;
