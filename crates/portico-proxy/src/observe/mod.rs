//! What the gateway reports: Prometheus metrics, the access log and OpenTelemetry traces
//! (`trace.rs`: a request's trace context and spans; `otel.rs`: their export), and the phase
//! record of requests that ask for it (`phases.rs`: `Server-Timing`).

pub mod access_log;
pub mod audit;
pub mod metrics;
pub mod otel;
pub mod phases;
pub mod trace;
