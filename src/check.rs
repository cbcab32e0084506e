//! What `run` checks before it consumes, and what `lastpass-connector check` prints: the
//! configuration (already parsed by then), the broker, and one LastPass call (`getuserdata` of
//! one user). A cause that cannot fix itself (the API URL answers 404 or is not LastPass, the
//! broker refuses the URL) stops `run` with exit 2 naming the variable; one that can (broker
//! down, LastPass unavailable) is only reported.

use crate::amqp::{BrokerCheck, check_broker};
use crate::config::Config;
use crate::lastpass::{Client, LastPass, LastPassError};

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckItem {
    /// What was checked ("configuration", "RabbitMQ", "LastPass").
    pub what: &'static str,
    pub state: CheckState,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckState {
    Ok,
    /// Wrong configuration: `run` stops with exit 2.
    Fatal,
    /// Not working now; may come back by itself.
    Failing,
}

/// Checks the broker and LastPass with the configuration `run` would use.
pub async fn check(config: &Config) -> Vec<CheckItem> {
    let mut items = vec![CheckItem {
        what: "configuration",
        state: CheckState::Ok,
        detail: format!(
            "prefix {}, LastPass cid {}, API {}",
            config.prefix, config.cid, config.api_url
        ),
    }];
    let broker = match check_broker(&config.amqp_url, "lastpass-connector check").await {
        BrokerCheck::Reachable => CheckItem {
            what: "RabbitMQ",
            state: CheckState::Ok,
            detail: format!(
                "{} accepts AMQP_URL",
                crate::amqp::endpoint(&config.amqp_url)
            ),
        },
        BrokerCheck::Refused(why) => CheckItem {
            what: "RabbitMQ",
            state: CheckState::Fatal,
            detail: format!("AMQP_URL is refused by the broker (user, password or vhost): {why}"),
        },
        BrokerCheck::Unreachable(why) => CheckItem {
            what: "RabbitMQ",
            state: CheckState::Failing,
            detail: format!("not reachable: {why}"),
        },
    };
    items.push(broker);
    items.push(check_lastpass(config).await);
    items
}

async fn check_lastpass(config: &Config) -> CheckItem {
    let item = |state, detail| CheckItem {
        what: "LastPass",
        state,
        detail,
    };
    let provhash = match config.provhash.load() {
        Ok(p) => p,
        Err(e) => return item(CheckState::Fatal, e.to_string()),
    };
    let client = match Client::new(config.client_config(provhash)) {
        Ok(c) => c,
        Err(e) => return item(CheckState::Fatal, format!("LASTPASS_API_URL: {e}")),
    };
    match client.list_page(0, 1).await {
        Ok(page) => item(
            CheckState::Ok,
            format!("getuserdata answered: {} account(s) in the company", page.total),
        ),
        Err(LastPassError::NotTheApi { reason }) => item(
            CheckState::Fatal,
            format!("LASTPASS_API_URL {} does not answer like the LastPass API: {reason}", config.api_url),
        ),
        Err(LastPassError::Unauthorized) => item(
            CheckState::Failing,
            "LastPass refused the credentials (Authorization Error): check LASTPASS_CID and the provhash".into(),
        ),
        Err(e) => item(CheckState::Failing, e.to_string()),
    }
}
