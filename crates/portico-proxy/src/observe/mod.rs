//! What the gateway reports: Prometheus metrics, the access log and OpenTelemetry traces
//! (`trace.rs`: a request's trace context and spans; `otel.rs`: their export), and the phase
//! record of requests that ask for it (`phases.rs`: `Server-Timing`), the audit trail
//! (`audit.rs`), the last 15 minutes of traffic for the admin API (`live.rs`), and the last
//! answers that broke their contract (`violations.rs`).

pub mod access_log;
pub mod audit;
pub mod live;
pub mod metrics;
pub mod otel;
pub mod phases;
pub mod trace;
pub mod violations;
