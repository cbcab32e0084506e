//! The operator's HTTP endpoints on `CONNECTOR_HTTP_ADDR` (default `127.0.0.1:9464`):
//! `GET /healthz` (the process and its tasks are running), `GET /readyz` (200 only while
//! connected to the broker and consuming, the store usable and the credentials not known bad;
//! otherwise 503 with the reasons), `GET /metrics` (Prometheus text format). hyper's own server:
//! three fixed routes need no framework.

use crate::gate::Gate;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What readiness is made of; each part is set by the component that knows it.
#[derive(Clone)]
pub(crate) struct Health {
    /// Connected to the broker and consuming (set by the consumer).
    pub consuming: watch::Receiver<bool>,
    /// Closed while LastPass refuses the credentials.
    pub gate: Gate,
    /// Cleared when a store operation fails, set again when one succeeds.
    pub store_ok: Arc<AtomicBool>,
    /// Cancelled at shutdown.
    pub stop: CancellationToken,
}

impl Health {
    /// The reasons the connector is not ready; empty when it is.
    pub fn not_ready(&self) -> Vec<&'static str> {
        let mut why = Vec::new();
        if self.stop.is_cancelled() {
            why.push("shutting_down");
        }
        if !*self.consuming.borrow() {
            why.push("broker_disconnected");
        }
        if !self.gate.is_open() {
            why.push("credentials_refused");
        }
        if !self.store_ok.load(Ordering::Relaxed) {
            why.push("store_unavailable");
        }
        metrics::gauge!(crate::telemetry::READY).set(if why.is_empty() { 1.0 } else { 0.0 });
        why
    }
}

fn response(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .header(hyper::header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("a static response is valid")
}

fn answer(health: &Health, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/healthz" => response(
            StatusCode::OK,
            "application/json",
            json!({"status": "alive", "version": env!("CARGO_PKG_VERSION")}).to_string(),
        ),
        "/readyz" => {
            let why = health.not_ready();
            if why.is_empty() {
                response(
                    StatusCode::OK,
                    "application/json",
                    json!({"ready": true}).to_string(),
                )
            } else {
                response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "application/json",
                    json!({"ready": false, "reasons": why}).to_string(),
                )
            }
        }
        "/metrics" => {
            health.not_ready();
            response(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                crate::telemetry::render(),
            )
        }
        _ => response(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Binds `addr` (fails at once when it cannot: a configuration error).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `health.stop` is cancelled.
pub(crate) async fn serve(listener: TcpListener, health: Health) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "HTTP endpoints: /healthz /readyz /metrics");
    }
    let stop = health.stop.clone();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "HTTP accept failed");
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let health = health.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let r = answer(&health, &req);
                async move { Ok::<_, std::convert::Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
