//! Configuration of `run`: environment variables, each also a flag (flags win), parsed once into
//! a [`Config`]. A missing or malformed value stops startup with a message naming it (exit 2).

use crate::lastpass::{DEFAULT_API_URL, DEFAULT_PAGE_SIZE, DEFAULT_TIME_ZONE, Provhash, Tz};
use crate::retry::RetryPolicy;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The flags of `lastpass-connector run`. Secrets are never flags (a flag is visible to every
/// local user in `/proc/PID/cmdline`): `AMQP_URL` (it holds the broker password) and
/// `LASTPASS_PROVHASH` come from the environment only, and the provhash preferably from
/// `LASTPASS_PROVHASH_FILE`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Environment only (secrets are never flags):\n  \
    AMQP_URL                      RabbitMQ URL [default: amqp://guest:guest@127.0.0.1:5672/%2f]\n  \
    LASTPASS_PROVHASH             LastPass API secret (prefer LASTPASS_PROVHASH_FILE)\n  \
    CONNECTOR_STATE_URL           postgres:// URL of the state shared by replicas [default: none: the\n  \
                                  embedded store in CONNECTOR_STATE_DIR]\n  \
    CONNECTOR_ALLOW_INSECURE_HTTP true to allow http:// to a LastPass API that is not loopback")]
pub struct RunArgs {
    /// LastPass Enterprise API endpoint.
    #[arg(long, env = "LASTPASS_API_URL", value_name = "LASTPASS_API_URL", default_value = DEFAULT_API_URL)]
    pub lastpass_api_url: String,
    /// LastPass account number (cid).
    #[arg(long, env = "LASTPASS_CID", value_name = "LASTPASS_CID")]
    pub lastpass_cid: Option<String>,
    /// A file holding the provhash; re-read when LastPass refuses the credentials.
    #[arg(
        long,
        env = "LASTPASS_PROVHASH_FILE",
        value_name = "LASTPASS_PROVHASH_FILE"
    )]
    pub lastpass_provhash_file: Option<PathBuf>,
    /// Timeout of each LastPass call.
    #[arg(long, env = "LASTPASS_TIMEOUT", value_name = "LASTPASS_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub lastpass_timeout: Duration,
    /// The largest LastPass answer read, in bytes; a larger one is a transient error.
    #[arg(long, env = "LASTPASS_MAX_RESPONSE_BYTES", value_name = "LASTPASS_MAX_RESPONSE_BYTES",
          default_value_t = crate::lastpass::ClientConfig::DEFAULT_MAX_RESPONSE_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(4096..=(1u64 << 32)))]
    pub lastpass_max_response_bytes: u64,
    /// At most this many LastPass calls per second, across all commands and the sync (unset:
    /// no fixed limit; a 429 still slows the calls down for a while).
    #[arg(long, env = "CONNECTOR_LASTPASS_MAX_RPS", value_name = "CONNECTOR_LASTPASS_MAX_RPS", value_parser = parse_rps)]
    pub lastpass_max_rps: Option<f64>,
    /// Prefix P of every exchange and queue.
    #[arg(long, env = "CONNECTOR_PREFIX", value_name = "CONNECTOR_PREFIX", default_value = "lastpass", value_parser = parse_prefix)]
    pub prefix: String,
    /// Where the embedded state (ledger, sync snapshot) lives.
    #[arg(
        long,
        env = "CONNECTOR_STATE_DIR",
        value_name = "CONNECTOR_STATE_DIR",
        default_value = "./state"
    )]
    pub state_dir: PathBuf,
    /// How many commands are applied at once.
    #[arg(long, env = "CONNECTOR_CONCURRENCY", value_name = "CONNECTOR_CONCURRENCY", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: u16,
    /// How long completed commands are remembered.
    #[arg(long, env = "CONNECTOR_LEDGER_RETENTION", value_name = "CONNECTOR_LEDGER_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub ledger_retention: Duration,
    /// LastPass attempts in process before a delayed redelivery.
    #[arg(long, env = "CONNECTOR_RETRY_ATTEMPTS", value_name = "CONNECTOR_RETRY_ATTEMPTS", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(1..=20))]
    pub retry_attempts: u16,
    /// First in-process backoff delay (doubles, with jitter).
    #[arg(long, env = "CONNECTOR_RETRY_MIN_DELAY", value_name = "CONNECTOR_RETRY_MIN_DELAY", default_value = "500ms", value_parser = parse_duration)]
    pub retry_min_delay: Duration,
    /// Longest in-process backoff delay.
    #[arg(long, env = "CONNECTOR_RETRY_MAX_DELAY", value_name = "CONNECTOR_RETRY_MAX_DELAY", default_value = "10s", value_parser = parse_duration)]
    pub retry_max_delay: Duration,
    /// Delays of the delayed redeliveries through P.retry.*, comma separated ("" for none).
    #[arg(long, env = "CONNECTOR_RETRY_DELAYS", value_name = "CONNECTOR_RETRY_DELAYS", default_value = "30s,2m,10m", value_parser = parse_durations)]
    pub retry_delays: DurationList,
    /// Delivery limit of the work queues: a backstop against crash loops.
    #[arg(long, env = "CONNECTOR_DELIVERY_LIMIT", value_name = "CONNECTOR_DELIVERY_LIMIT", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub delivery_limit: u32,
    /// Start a sync this often (e.g. 1h); off when unset.
    #[arg(long, env = "CONNECTOR_SYNC_INTERVAL", value_name = "CONNECTOR_SYNC_INTERVAL", value_parser = parse_duration)]
    pub sync_interval: Option<Duration>,
    /// IANA zone of LastPass dates written without an offset (last_login, created).
    #[arg(long, env = "LASTPASS_TIME_ZONE", value_name = "LASTPASS_TIME_ZONE", default_value = DEFAULT_TIME_ZONE.name(), value_parser = parse_time_zone)]
    pub lastpass_time_zone: Tz,
    /// getuserdata page size for the sync.
    #[arg(long, env = "CONNECTOR_SYNC_PAGE_SIZE", value_name = "CONNECTOR_SYNC_PAGE_SIZE", default_value_t = DEFAULT_PAGE_SIZE,
          value_parser = clap::value_parser!(u32).range(1..=2000))]
    pub sync_page_size: u32,
    /// Most provisions coalesced into one batchadd (and one look); 1 turns batching off.
    #[arg(long, env = "CONNECTOR_BATCH_MAX", value_name = "CONNECTOR_BATCH_MAX", default_value_t = 50,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch_max: u16,
    /// Longest a provision waits for others to share a LastPass call with.
    #[arg(long, env = "CONNECTOR_BATCH_WINDOW", value_name = "CONNECTOR_BATCH_WINDOW", default_value = "200ms", value_parser = parse_duration)]
    pub batch_window: Duration,
    /// Where /healthz, /readyz and /metrics are served.
    #[arg(
        long,
        env = "CONNECTOR_HTTP_ADDR",
        value_name = "CONNECTOR_HTTP_ADDR",
        default_value = "127.0.0.1:9464"
    )]
    pub http_addr: std::net::SocketAddr,
    /// How long in-flight commands may take to finish at SIGTERM before they are given back.
    #[arg(long, env = "CONNECTOR_SHUTDOWN_GRACE", value_name = "CONNECTOR_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Change nothing in LastPass: look each user command up and publish what it would do
    /// (command.dry_run), never recording it as completed. Syncs, which only read, run as usual.
    #[arg(long, env = "CONNECTOR_DRY_RUN", action = clap::ArgAction::SetTrue,
          value_parser = parse_dry_run)]
    pub dry_run: bool,
}

/// A list of durations (a newtype so clap takes the whole list as one value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationList(pub Vec<Duration>);

/// Where the provhash comes from.
#[derive(Clone)]
pub enum ProvhashSource {
    Value(Provhash),
    File(PathBuf),
}

impl std::fmt::Debug for ProvhashSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProvhashSource::Value(_) => f.write_str("Value(***)"),
            ProvhashSource::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

impl ProvhashSource {
    /// The secret: the value, or the file's content without surrounding white space.
    pub fn load(&self) -> Result<Provhash, ConfigError> {
        match self {
            ProvhashSource::Value(p) => Ok(p.clone()),
            ProvhashSource::File(path) => {
                let s = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(format!(
                        "LASTPASS_PROVHASH_FILE: cannot read {}: {e}",
                        path.display()
                    ))
                })?;
                let s = s.trim();
                if s.is_empty() {
                    return Err(ConfigError(format!(
                        "LASTPASS_PROVHASH_FILE: {} is empty",
                        path.display()
                    )));
                }
                Ok(Provhash::new(s.to_string()))
            }
        }
    }
}

/// The whole configuration of `run`, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub amqp_url: String,
    pub api_url: String,
    pub cid: String,
    pub provhash: ProvhashSource,
    pub lastpass_timeout: Duration,
    pub lastpass_max_response_bytes: usize,
    pub lastpass_time_zone: Tz,
    /// `CONNECTOR_LASTPASS_MAX_RPS`: LastPass calls per second at most.
    pub lastpass_max_rps: Option<f64>,
    pub prefix: String,
    pub state_dir: PathBuf,
    /// `CONNECTOR_STATE_URL`: the shared store in PostgreSQL; `None` for the embedded store.
    pub state_url: Option<secrecy::SecretString>,
    pub concurrency: u16,
    pub ledger_retention: Duration,
    pub retry: RetryPolicy,
    pub delivery_limit: u32,
    pub sync_interval: Option<Duration>,
    pub sync_page_size: u32,
    /// `CONNECTOR_BATCH_MAX` and `CONNECTOR_BATCH_WINDOW`.
    pub batch_max: u16,
    pub batch_window: Duration,
    pub shutdown_grace: Duration,
    pub http_addr: std::net::SocketAddr,
    /// `--dry-run` / `CONNECTOR_DRY_RUN`: preview user commands, change nothing in LastPass.
    pub dry_run: bool,
}

/// A configuration value is missing or malformed; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// `run`'s flags alone, for [`Config::parse_from`].
#[derive(clap::Parser)]
#[command(name = "run")]
struct RunCommandLine {
    #[command(flatten)]
    args: RunArgs,
}

impl Config {
    /// The LastPass client's settings, with the secret just loaded.
    pub fn client_config(
        &self,
        provhash: crate::lastpass::Provhash,
    ) -> crate::lastpass::ClientConfig {
        crate::lastpass::ClientConfig {
            api_url: self.api_url.clone(),
            cid: self.cid.clone(),
            provhash,
            timeout: self.lastpass_timeout,
            max_response_bytes: self.lastpass_max_response_bytes,
            time_zone: self.lastpass_time_zone,
            max_rps: self.lastpass_max_rps,
        }
    }

    /// Parses flags exactly as `lastpass-connector run` does (the environment included), then
    /// validates them: the one way to build a `Config`.
    pub fn parse_from<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::Parser;
        let argv = std::iter::once(std::ffi::OsString::from("run"))
            .chain(args.into_iter().map(Into::into));
        let cli = RunCommandLine::try_parse_from(argv)
            .map_err(|e| ConfigError(e.render().to_string().trim().to_string()))?;
        Config::from_args(cli.args)
    }

    pub fn from_args(a: RunArgs) -> Result<Config, ConfigError> {
        let cid = a
            .lastpass_cid
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| ConfigError("LASTPASS_CID (--lastpass-cid) is required".into()))?;
        let cid = cid.trim().to_string();
        if !cid.chars().all(|c| c.is_ascii_digit()) {
            return Err(ConfigError(format!(
                "LASTPASS_CID must be the numeric LastPass account number, got {cid:?}"
            )));
        }
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let amqp_url = var("AMQP_URL").unwrap_or_else(|| DEFAULT_AMQP_URL.to_string());
        let allow_insecure_http = match var("CONNECTOR_ALLOW_INSECURE_HTTP").as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => {
                return Err(ConfigError(format!(
                    "CONNECTOR_ALLOW_INSECURE_HTTP must be true or false, got {other:?}"
                )));
            }
        };
        let provhash = match (a.lastpass_provhash_file, var("LASTPASS_PROVHASH")) {
            (Some(path), _) => ProvhashSource::File(path),
            (None, Some(p)) if !p.trim().is_empty() => {
                ProvhashSource::Value(Provhash::new(p.trim().to_string()))
            }
            _ => {
                return Err(ConfigError(
                    "LASTPASS_PROVHASH or LASTPASS_PROVHASH_FILE is required".into(),
                ));
            }
        };
        provhash.load()?;
        // Every URL is parsed before anything connects.
        crate::amqp::check_url(&amqp_url)
            .map_err(|why| ConfigError(format!("AMQP_URL is not a usable RabbitMQ URL: {why}")))?;
        let state_url = match var("CONNECTOR_STATE_URL") {
            None => None,
            Some(url) => {
                crate::store::check_state_url(url.trim()).map_err(|why| {
                    ConfigError(format!(
                        "CONNECTOR_STATE_URL is not a usable PostgreSQL URL: {why}"
                    ))
                })?;
                Some(secrecy::SecretString::from(url.trim().to_string()))
            }
        };
        crate::lastpass::check_api_url(&a.lastpass_api_url, allow_insecure_http)
            .map_err(|why| ConfigError(format!("LASTPASS_API_URL is not usable: {why}")))?;
        if a.retry_min_delay > a.retry_max_delay {
            return Err(ConfigError(
                "CONNECTOR_RETRY_MIN_DELAY must not exceed CONNECTOR_RETRY_MAX_DELAY".into(),
            ));
        }
        Ok(Config {
            amqp_url,
            api_url: a.lastpass_api_url,
            cid,
            provhash,
            lastpass_timeout: a.lastpass_timeout,
            lastpass_max_response_bytes: usize::try_from(a.lastpass_max_response_bytes)
                .unwrap_or(usize::MAX),
            lastpass_time_zone: a.lastpass_time_zone,
            lastpass_max_rps: a.lastpass_max_rps,
            prefix: a.prefix,
            state_dir: a.state_dir,
            state_url,
            concurrency: a.concurrency,
            ledger_retention: a.ledger_retention,
            retry: RetryPolicy {
                attempts: usize::from(a.retry_attempts),
                min_delay: a.retry_min_delay,
                max_delay: a.retry_max_delay,
                round_delays: a.retry_delays.0,
            },
            delivery_limit: a.delivery_limit,
            sync_interval: a.sync_interval,
            sync_page_size: a.sync_page_size,
            batch_max: a.batch_max,
            batch_window: a.batch_window,
            shutdown_grace: a.shutdown_grace,
            http_addr: a.http_addr,
            dry_run: a.dry_run,
        })
    }
}

/// An IANA zone name (`America/New_York`, `Europe/Berlin`, `UTC`), as the tz database spells it.
fn parse_time_zone(s: &str) -> Result<Tz, String> {
    s.trim()
        .parse::<Tz>()
        .map_err(|_| format!("{s:?} is not an IANA time zone name such as America/New_York or UTC"))
}

/// A rate in calls per second: a finite number greater than 0.
pub(crate) fn parse_rps(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err("must be a number of calls per second greater than 0".into())
    }
}

/// `CONNECTOR_DRY_RUN`: `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`); the error names
/// the variable, as every other setting's does.
fn parse_dry_run(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(format!(
            "CONNECTOR_DRY_RUN must be true or false, got {s:?}"
        )),
    }
}

fn parse_prefix(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(s.to_string())
    } else {
        Err("letters, digits, '-', '_' and '.' only, 1 to 200 characters".into())
    }
}

/// The longest duration any setting accepts: far beyond any sensible value, and small enough
/// that adding it to a clock reading can never overflow.
const MAX_DURATION: Duration = Duration::from_secs(10 * 366 * 86_400);

/// Parses a duration with [`humantime`] (`500ms`, `30s`, `2m`, `1h`, `7d`, `1h 30m`); a bare
/// number is seconds. Values that overflow or exceed ten years are refused.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<u64>().ok().map(Duration::from_secs)
    } else {
        humantime::parse_duration(s).ok()
    };
    match d {
        Some(d) if d <= MAX_DURATION => Ok(d),
        Some(_) => Err(format!(
            "{s:?} is longer than the ten years any setting allows"
        )),
        None => Err(format!(
            "{s:?} is not a duration like 500ms, 30s, 2m, 1h or 7d (or is too large)"
        )),
    }
}

fn parse_durations(s: &str) -> Result<DurationList, String> {
    if s.trim().is_empty() {
        return Ok(DurationList(vec![]));
    }
    s.split(',')
        .map(parse_duration)
        .collect::<Result<_, _>>()
        .map(DurationList)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 fortnights").is_err());
        assert_eq!(
            parse_durations("1s,2m").unwrap().0,
            vec![Duration::from_secs(1), Duration::from_secs(120)]
        );
        assert!(parse_durations("").unwrap().0.is_empty());
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        // Overflow is an error, never a panic or a wrapped value.
        assert!(parse_duration("999999999999999d").is_err());
        assert!(parse_duration("99999999999999999999").is_err());
        assert!(parse_duration("3700d").is_err());
    }

    #[test]
    fn rates() {
        use clap::Parser;
        assert_eq!(parse_rps("20"), Ok(20.0));
        assert_eq!(parse_rps(" 0.5 "), Ok(0.5));
        for bad in ["0", "-1", "NaN", "inf", "fast", ""] {
            assert!(parse_rps(bad).is_err(), "{bad}");
        }
        let unset = RunCommandLine::try_parse_from(["run"]).unwrap();
        assert_eq!(unset.args.lastpass_max_rps, None);
        let set = RunCommandLine::try_parse_from(["run", "--lastpass-max-rps", "12.5"]).unwrap();
        assert_eq!(set.args.lastpass_max_rps, Some(12.5));
        assert!(RunCommandLine::try_parse_from(["run", "--lastpass-max-rps", "0"]).is_err());
    }

    #[test]
    fn dry_run_is_a_flag_and_an_environment_variable() {
        use clap::Parser;
        // Only the flag here: the environment is the process's, shared by parallel tests, so
        // the variable is checked on the binary (`run --help`) and by clap's own `env` support.
        let off = RunCommandLine::try_parse_from(["run"]).unwrap();
        assert!(!off.args.dry_run);
        let on = RunCommandLine::try_parse_from(["run", "--dry-run"]).unwrap();
        assert!(on.args.dry_run);
        assert!(RunCommandLine::try_parse_from(["run", "--dry-run", "yes"]).is_err());
        assert_eq!(parse_dry_run("true"), Ok(true));
        assert_eq!(parse_dry_run(" TRUE "), Ok(true));
        assert_eq!(parse_dry_run("1"), Ok(true));
        assert_eq!(parse_dry_run("false"), Ok(false));
        assert_eq!(parse_dry_run("0"), Ok(false));
        let e = parse_dry_run("maybe").unwrap_err();
        assert!(e.contains("CONNECTOR_DRY_RUN"), "{e}");
        let arg = <RunCommandLine as clap::CommandFactory>::command()
            .get_arguments()
            .find(|a| a.get_id() == "dry_run")
            .map(|a| a.get_env().map(|e| e.to_owned()))
            .unwrap();
        assert_eq!(
            arg.as_deref(),
            Some(std::ffi::OsStr::new("CONNECTOR_DRY_RUN"))
        );
    }

    #[test]
    fn prefixes() {
        assert!(parse_prefix("lastpass").is_ok());
        assert!(parse_prefix("test-1.a_b").is_ok());
        assert!(parse_prefix("").is_err());
        assert!(parse_prefix("a b").is_err());
        assert!(parse_prefix("a/b").is_err());
    }

    #[test]
    fn time_zones() {
        assert_eq!(parse_time_zone("America/New_York"), Ok(DEFAULT_TIME_ZONE));
        assert_eq!(parse_time_zone(" UTC "), Ok(chrono_tz::UTC));
        assert_eq!(
            parse_time_zone("Europe/Berlin"),
            Ok(chrono_tz::Europe::Berlin)
        );
        assert!(parse_time_zone("Eastern").is_err());
        assert!(parse_time_zone("-04:00").is_err());
        assert!(parse_time_zone("").is_err());
    }
}
