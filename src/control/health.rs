//! Heartbeat probes: one task per master sends `GET <health.path>` on a fresh
//! connection every `interval` (every `timeout` after a failed check), bounded by
//! `timeout`, and sends a [`ProbeReport`] to whoever listens (the owner task, which
//! takes them as events). Probes never decide anything themselves.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::HealthConfig;
use crate::control::routing::Master;
use crate::upstream::{ConnectError, Upstream};

/// Why a check failed. Display is what /status shows as `last_error`.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("HTTP {0}")]
    Status(StatusCode),
    /// 503 "Jenkins is getting ready to work": the JVM is starting or reloading.
    #[error("Jenkins is starting (503: getting ready to work)")]
    Starting,
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad health request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The answer is not the expected one (expect_header / expect_body).
    #[error("{0}")]
    Unexpected(String),
}

/// The outcome of one check of one master.
#[derive(Debug)]
pub struct ProbeReport {
    pub master: Arc<Master>,
    /// When the check completed.
    pub at: SystemTime,
    pub latency: Duration,
    /// What a passed check learned, or why the check failed.
    pub outcome: Result<CheckInfo, ProbeError>,
    /// The check ran at once because another instance of the pool found the master
    /// refusing connections (cluster mode): a refused connection now is as good a
    /// proof as it was there.
    pub urgent: bool,
}

impl ProbeReport {
    pub fn passed(&self) -> bool {
        self.outcome.is_ok()
    }

    /// The master refused the connection of a check run at another instance's
    /// request: down at once, as for a refused client connection.
    pub fn refused_on_request(&self) -> bool {
        self.urgent
            && matches!(&self.outcome, Err(ProbeError::Connect(error))
                if !error.is_timeout() && !error.is_local())
    }

    /// Jenkins answered that it is starting (a failure, but a restart, not a crash).
    pub fn starting(&self) -> bool {
        matches!(self.outcome, Err(ProbeError::Starting))
    }

    /// The `X-Jenkins-Session` header of a passed check: a new value means the JVM
    /// restarted.
    pub fn session(&self) -> Option<&str> {
        self.outcome.as_ref().ok()?.session.as_deref()
    }
}

/// What a passed check learned.
#[derive(Debug, Clone, Default)]
pub struct CheckInfo {
    pub session: Option<String>,
}

/// Starts one probe task per master; they run until the set is dropped or aborted,
/// or until nobody receives `reports` any more. `E`: what the receiver takes (the
/// owner's events), made from each report.
pub fn spawn_probes<E>(
    masters: &[Arc<Master>],
    settings: &HealthConfig,
    reports: mpsc::Sender<E>,
) -> JoinSet<()>
where
    E: From<ProbeReport> + Send + 'static,
{
    let mut probes = JoinSet::new();
    for master in masters {
        let master = Arc::clone(master);
        let settings = settings.clone();
        let reports = reports.clone();
        let span = tracing::info_span!("probe", master = %master.name);
        probes.spawn(probe_loop(master, settings, reports).instrument(span));
    }
    probes
}

async fn probe_loop<E: From<ProbeReport>>(
    master: Arc<Master>,
    settings: HealthConfig,
    reports: mpsc::Sender<E>,
) {
    let mut next = tokio::time::Instant::now();
    loop {
        let urgent = tokio::select! {
            () = tokio::time::sleep_until(next) => false,
            () = master.check_now.notified() => true,
        };
        let started = Instant::now();
        let outcome = check_detailed(&master.upstream, &settings).await;
        let latency = started.elapsed();
        match &outcome {
            Ok(_) => tracing::debug!(?latency, "check passed"),
            Err(ProbeError::Connect(error)) if error.is_local() => {
                // No connection was even tried: no evidence about the master either
                // way, so nothing is reported; try again one timeout later.
                crate::sys::fd_limit::log_exhaustion("a health check could not run", error);
                next = tokio::time::Instant::from_std(started) + settings.timeout;
                continue;
            }
            Err(error) => tracing::debug!(?latency, %error, "check failed"),
        }
        // After a failure, check again sooner (one timeout later, not one interval):
        // a dead master is confirmed within about timeout x fall + interval rather
        // than fall x interval. A slow round never causes a burst of catch-up checks.
        let gap = if outcome.is_ok() {
            settings.interval
        } else {
            settings.timeout
        };
        next = tokio::time::Instant::from_std(started) + gap;
        let report = ProbeReport {
            master: Arc::clone(&master),
            at: SystemTime::now(),
            latency,
            outcome,
            urgent,
        };
        if reports.send(E::from(report)).await.is_err() {
            return; // nobody listens (the owner has stopped): so do we
        }
    }
}

/// One check: connect (and the TLS handshake of an `https://` master), `GET path`,
/// read the status line. Passes on 200-399 except 503 (what Jenkins answers while it
/// starts). The whole check is bounded by `timeout`.
pub async fn check(upstream: &Upstream, settings: &HealthConfig) -> Result<(), ProbeError> {
    check_detailed(upstream, settings).await.map(|_| ())
}

/// [`check`], also returning what a passed check learned (the Jenkins session).
pub async fn check_detailed(
    upstream: &Upstream,
    settings: &HealthConfig,
) -> Result<CheckInfo, ProbeError> {
    let timeout = settings.timeout;
    match tokio::time::timeout(timeout, check_unbounded(upstream, settings)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(ProbeError::Timeout(timeout)),
    }
}

/// How much of a 503 page is read to tell "starting" from other trouble.
const STARTING_PAGE_LIMIT: usize = 16 * 1024;

async fn check_unbounded(
    upstream: &Upstream,
    settings: &HealthConfig,
) -> Result<CheckInfo, ProbeError> {
    let path = settings.path.as_str();
    let authority = upstream.authority();
    let stream = upstream.open_control(settings.timeout).await?;
    let (mut sender, connection) =
        http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    let request = Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "jenkins-ha-proxy-health-check")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::new())?;
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(error) => {
            driver.abort();
            return Err(error.into());
        }
    };
    let status = response.status();
    let session = response
        .headers()
        .get("x-jenkins-session")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let verdict = if passes(status) {
        expected(response, settings)
            .await
            .map(|()| CheckInfo { session })
    } else if status == StatusCode::SERVICE_UNAVAILABLE && says_starting(response.into_body()).await
    {
        Err(ProbeError::Starting)
    } else {
        Err(ProbeError::Status(status))
    };
    driver.abort(); // done with this connection: dropping closes the socket
    verdict
}

/// `health.expect_header` and `health.expect_body`: is it Jenkins that answered?
async fn expected(
    response: hyper::Response<hyper::body::Incoming>,
    settings: &HealthConfig,
) -> Result<(), ProbeError> {
    if let Some(header) = &settings.expect_header {
        if !response.headers().contains_key(header.as_str()) {
            return Err(ProbeError::Unexpected(format!(
                "no {header} header in the answer: not Jenkins?"
            )));
        }
    }
    let Some(needle) = &settings.expect_body else {
        return Ok(());
    };
    use http_body_util::BodyExt;
    let page = http_body_util::Limited::new(response.into_body(), EXPECT_BODY_LIMIT)
        .collect()
        .await
        .map_err(|error| ProbeError::Unexpected(format!("reading the body: {error}")))?
        .to_bytes();
    if String::from_utf8_lossy(&page).contains(needle.as_str()) {
        Ok(())
    } else {
        Err(ProbeError::Unexpected(format!(
            "the body does not contain {needle:?}: not Jenkins?"
        )))
    }
}

/// How much of a health page is searched for `health.expect_body`.
const EXPECT_BODY_LIMIT: usize = 256 * 1024;

/// Whether a 503 page is Jenkins' "getting ready to work" (start-up or reload).
async fn says_starting(body: hyper::body::Incoming) -> bool {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, STARTING_PAGE_LIMIT)
        .collect()
        .await
    {
        Ok(collected) => {
            String::from_utf8_lossy(&collected.to_bytes()).contains("getting ready to work")
        }
        Err(_) => false, // a page over the limit is not Jenkins' start-up page
    }
}

fn passes(status: StatusCode) -> bool {
    (200..400).contains(&status.as_u16()) && status != StatusCode::SERVICE_UNAVAILABLE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        for (code, ok) in [
            (200, true),
            (204, true),
            (302, true),
            (399, true),
            (199, false),
            (400, false),
            (403, false),
            (500, false),
            (503, false),
        ] {
            let status = StatusCode::from_u16(code).expect("valid code");
            assert_eq!(passes(status), ok, "{code}");
        }
    }
}
