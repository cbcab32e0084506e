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
}

impl LastPassError {
    pub fn is_transient(&self) -> bool {
        matches!(self, LastPassError::Transient { .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LastPassError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
