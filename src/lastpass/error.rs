use std::time::Duration;

/// A failed LastPass call, typed so callers decide without matching strings.
/// No variant ever carries the provhash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LastPassError {
    /// Timeout, connection error, HTTP non-200, or a body that is neither JSON nor the XML auth
    /// error: worth retrying. `retry_after` is the server's `Retry-After`, when it sent one.
    #[error("LastPass is unavailable: {reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The XML `Authorization Error`: the cid or provhash is wrong; no command's fault.
    #[error("LastPass refused the API credentials (Authorization Error)")]
    Unauthorized,
    /// LastPass answered with a failure: permanent for this request.
    #[error("LastPass rejected the request: {0}")]
    Rejected(String),
    /// The user does not exist.
    #[error("no such LastPass user: {0}")]
    NoSuchUser(String),
    /// Something answered, but not as the LastPass Enterprise API does: HTTP 404, 405 or 410, or
    /// a redirect (an HTML page with HTTP 200 may be a throttling page: transient). Retried like a transient
    /// error while running (a proxy can answer so for a while), but at start (`run`, `check`) it
    /// means `LASTPASS_API_URL` is wrong.
    #[error("LASTPASS_API_URL does not answer like the LastPass API: {reason}")]
    NotTheApi { reason: String },
}

impl LastPassError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LastPassError::Transient { .. } | LastPassError::NotTheApi { .. }
        )
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LastPassError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
