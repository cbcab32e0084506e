//! `lastpass-connector healthcheck`: GET `/healthz` of a running connector (a container's
//! HEALTHCHECK has no curl); exit 0 when it answers 200.

use super::ToolFailure;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct HealthcheckArgs {
    /// The connector's HTTP address (a 0.0.0.0 host is probed on 127.0.0.1).
    #[arg(long, env = "CONNECTOR_HTTP_ADDR", default_value = "127.0.0.1:9464")]
    pub http_addr: std::net::SocketAddr,
    /// Check `/readyz` instead of `/healthz`.
    #[arg(long)]
    pub ready: bool,
    /// Probe this URL instead (e.g. the simulator's `/_control/state`).
    #[arg(long)]
    pub url: Option<String>,
}

pub async fn healthcheck(args: HealthcheckArgs) -> Result<(), ToolFailure> {
    let mut addr = args.http_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let path = if args.ready { "readyz" } else { "healthz" };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(4))
        .build()
        .map_err(|e| ToolFailure::Outcome(format!("HTTP client: {e}")))?;
    let url = args
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}/{path}"));
    let r = client
        .get(&url)
        .send()
        .await
        .map_err(|e| ToolFailure::Outcome(format!("{addr}: {e}")))?;
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    println!("{status} {body}");
    if status.is_success() {
        Ok(())
    } else {
        Err(ToolFailure::Outcome(format!("{url} answered {status}")))
    }
}
