//! The operator's HTTP endpoints on `CONNECTOR_HTTP_ADDR` (default `127.0.0.1:9464`):
//! `GET /healthz` (the process and its tasks are running), `GET /readyz` (200 only while
//! connected to the broker and consuming, the store usable and the credentials not known bad;
//! otherwise 503 with the reasons), `GET /metrics` (Prometheus text format). hyper's own server:
//! three fixed routes need no framework.

use crate::gate::Gate;
use crate::health::Health;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What the endpoints read: the replica's health (broker, store, role), the credentials gate
/// and the stop token.
#[derive(Clone)]
pub(crate) struct Endpoints {
    pub health: Health,
    pub gate: Gate,
    pub stop: CancellationToken,
}

impl Endpoints {
    /// Ready or not, and the body of `/readyz`: the reasons it is not ready, and the role
    /// (active consumer or standby) with the queues this replica is active on.
    pub fn readiness(&self) -> (bool, serde_json::Value) {
        let (_, mut body) = self.health.report();
        let mut why = Vec::new();
        if self.stop.is_cancelled() {
            why.push("shutting_down");
        }
        if body["broker"] != "connected" {
            why.push("broker_disconnected");
        }
        if !self.gate.is_open() {
            why.push("credentials_refused");
        }
        if body["store"] != "ok" {
            why.push("store_unavailable");
        }
        let ready = why.is_empty();
        body["ready"] = json!(ready);
        body["reasons"] = json!(why);
        metrics::gauge!(crate::telemetry::READY).set(if ready { 1.0 } else { 0.0 });
        (ready, body)
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

fn answer(endpoints: &Endpoints, req: &Request<Incoming>) -> Response<Full<Bytes>> {
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
            let (ready, body) = endpoints.readiness();
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            response(status, "application/json", body.to_string())
        }
        "/metrics" => {
            endpoints.readiness();
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

/// Serves until `endpoints.stop` is cancelled.
pub(crate) async fn serve(listener: TcpListener, endpoints: Endpoints) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "HTTP endpoints: /healthz /readyz /metrics");
    }
    let stop = endpoints.stop.clone();
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
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let r = answer(&endpoints, &req);
                async move { Ok::<_, std::convert::Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
