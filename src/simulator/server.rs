//! The HTTP side of the simulator: the API endpoint (faults, then [`Company::answer`]) and the
//! `/_control/` endpoints (never subject to faults).

use super::api::ApiAnswer;
use super::company::Company;
use super::{ControlError, FaultsPatch, QuirksPatch, SimUserPatch, SimUserSpec, StateView};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub(crate) struct Shared {
    company: Mutex<Company>,
}

impl Shared {
    pub(crate) fn new(company: Company) -> Self {
        Shared {
            company: Mutex::new(company),
        }
    }

    /// The company; a poisoned lock is recovered (the state is plain data).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Company> {
        self.company.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type AppState = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>, open_control: bool) -> Router {
    let control = Router::new()
        .route("/_control/state", get(state))
        .route("/_control/calls", get(calls))
        .route("/_control/faults", get(get_faults).put(put_faults))
        .route("/_control/quirks", get(get_quirks).put(put_quirks))
        .route("/_control/credentials", put(put_credentials))
        .route("/_control/users", post(add_user))
        .route(
            "/_control/users/{username}",
            get(get_user).delete(delete_user).patch(patch_user),
        )
        .route("/_control/invited", post(add_invited))
        .route("/_control/existing-accounts", post(add_existing_account));
    let control = if open_control {
        control
    } else {
        control.route_layer(axum::middleware::from_fn(loopback_only))
    };
    Router::new()
        .route("/", post(api))
        .route("/enterpriseapi.php", post(api))
        .merge(control)
        .layer(DefaultBodyLimit::max(32 << 20))
        .with_state(shared)
}

/// The control endpoints steer the simulator without authentication: only a peer on this
/// machine may use them (unless `--open-control`).
async fn loopback_only(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if peer.ip().is_loopback() {
        next.run(request).await
    } else {
        (
            StatusCode::FORBIDDEN,
            "the simulator's control endpoints answer loopback peers only (see --open-control)\n",
        )
            .into_response()
    }
}

const HTML_503: &str = "<html><head><title>503 Service Unavailable</title></head>\
<body><h1>Service Unavailable</h1></body></html>\n";
const HTML_429: &str = "<html><head><title>429 Too Many Requests</title></head>\
<body><h1>Too Many Requests</h1></body></html>\n";

async fn api(State(shared): AppState, body: Bytes) -> Response {
    let latency = shared.lock().faults.latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let answer = {
        let mut company = shared.lock();
        match company.fault() {
            Some(fault) => fault,
            None => company.answer(&body),
        }
    };
    let html = [(header::CONTENT_TYPE, "text/html; charset=UTF-8")];
    match answer {
        ApiAnswer::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, html, HTML_503).into_response(),
        ApiAnswer::RateLimited { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            [
                (header::CONTENT_TYPE, "text/html; charset=UTF-8".to_string()),
                (header::RETRY_AFTER, retry_after_secs.to_string()),
            ],
            HTML_429,
        )
            .into_response(),
        ApiAnswer::Body(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/xml;charset=UTF-8")],
            body,
        )
            .into_response(),
    }
}

fn json_response<T: serde::Serialize>(status: StatusCode, v: &T) -> Response {
    let body = serde_json::to_string(v).unwrap_or_else(|_| "null".into());
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error_response(e: ControlError) -> Response {
    let status = match e {
        ControlError::NotFound => StatusCode::NOT_FOUND,
        ControlError::Conflict(_) => StatusCode::CONFLICT,
        ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
    };
    json_response(status, &json!({ "error": e.to_string() }))
}

/// Control bodies are parsed whatever their Content-Type; a bad body is a 400 with `{"error"}`.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ControlError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| ControlError::Invalid(e.to_string()))
}

async fn state(State(shared): AppState) -> Response {
    let view = StateView::of(&shared.lock());
    json_response(StatusCode::OK, &view)
}

async fn calls(State(shared): AppState) -> Response {
    let calls = shared.lock().calls();
    json_response(StatusCode::OK, &calls)
}

async fn get_faults(State(shared): AppState) -> Response {
    let faults = shared.lock().faults.clone();
    json_response(StatusCode::OK, &faults)
}

async fn put_faults(State(shared): AppState, body: Bytes) -> Response {
    match parse::<FaultsPatch>(&body) {
        Ok(patch) => {
            let faults = shared.lock().set_faults(patch);
            json_response(StatusCode::OK, &faults)
        }
        Err(e) => error_response(e),
    }
}

async fn get_quirks(State(shared): AppState) -> Response {
    let quirks = shared.lock().quirks.clone();
    json_response(StatusCode::OK, &quirks)
}

async fn put_quirks(State(shared): AppState, body: Bytes) -> Response {
    match parse::<QuirksPatch>(&body) {
        Ok(patch) => {
            let quirks = shared.lock().set_quirks(patch);
            json_response(StatusCode::OK, &quirks)
        }
        Err(e) => error_response(e),
    }
}

#[derive(Deserialize)]
struct Rotation {
    #[serde(default)]
    provhash: Option<String>,
    #[serde(default, deserialize_with = "super::string_or_number")]
    cid: Option<String>,
}

async fn put_credentials(State(shared): AppState, body: Bytes) -> Response {
    match parse::<Rotation>(&body) {
        Ok(r) => {
            let creds = shared.lock().rotate(r.provhash, r.cid);
            json_response(
                StatusCode::OK,
                &json!({"cid": creds.cid, "provhash": creds.provhash}),
            )
        }
        Err(e) => error_response(e),
    }
}

async fn add_user(State(shared): AppState, body: Bytes) -> Response {
    let spec = match parse::<SimUserSpec>(&body) {
        Ok(s) => s,
        Err(e) => return error_response(e),
    };
    let result = shared.lock().add_user(spec);
    match result {
        Ok(uid) => json_response(StatusCode::OK, &json!({ "uid": uid })),
        Err(e) => error_response(e),
    }
}

async fn get_user(State(shared): AppState, Path(username): Path<String>) -> Response {
    let user = shared.lock().user(&username);
    match user {
        Some(u) => json_response(StatusCode::OK, &u),
        None => error_response(ControlError::NotFound),
    }
}

async fn delete_user(State(shared): AppState, Path(username): Path<String>) -> Response {
    if shared.lock().delete_user(&username) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error_response(ControlError::NotFound)
    }
}

async fn patch_user(
    State(shared): AppState,
    Path(username): Path<String>,
    body: Bytes,
) -> Response {
    let patch = match parse::<SimUserPatch>(&body) {
        Ok(p) => p,
        Err(e) => return error_response(e),
    };
    let result = shared.lock().update_user(&username, patch);
    match result {
        Ok(u) => json_response(StatusCode::OK, &u),
        Err(e) => error_response(e),
    }
}

#[derive(Deserialize)]
struct Invitation {
    username: String,
}

async fn add_invited(State(shared): AppState, body: Bytes) -> Response {
    match parse::<Invitation>(&body) {
        Ok(i) if !i.username.trim().is_empty() => {
            shared.lock().add_invitation(&i.username);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(_) => error_response(ControlError::Invalid("username is required".into())),
        Err(e) => error_response(e),
    }
}

/// `POST /_control/existing-accounts` `{"username": …}`: a person with a LastPass account
/// elsewhere, whom `batchadd` invites instead of creating.
async fn add_existing_account(State(shared): AppState, body: Bytes) -> Response {
    match parse::<Invitation>(&body) {
        Ok(i) if !i.username.trim().is_empty() => {
            shared.lock().flag_existing_account(&i.username);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(_) => error_response(ControlError::Invalid("username is required".into())),
        Err(e) => error_response(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    async fn control_status(open_control: bool, peer: &str) -> StatusCode {
        let company = Company::new(
            "1".into(),
            "p".into(),
            0,
            1,
            Default::default(),
            Default::default(),
        );
        let app = router(Arc::new(Shared::new(company)), open_control);
        let mut request = axum::extract::Request::get("/_control/state")
            .body(Body::empty())
            .unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        app.oneshot(request).await.unwrap().status()
    }

    #[tokio::test]
    async fn control_endpoints_answer_loopback_peers_only() {
        assert_eq!(
            control_status(false, "127.0.0.1:5000").await,
            StatusCode::OK
        );
        assert_eq!(control_status(false, "[::1]:5000").await, StatusCode::OK);
        assert_eq!(
            control_status(false, "192.0.2.7:5000").await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(control_status(true, "192.0.2.7:5000").await, StatusCode::OK);
    }
}
