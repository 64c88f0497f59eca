//! Upgraded connections (WebSocket agents, the CLI's WebSocket mode, any `Upgrade`):
//! the 101 goes back to the client, then a tracked tunnel copies bytes both ways.

use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderMap, HeaderValue, CONNECTION, UPGRADE};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::control::routing::Master;
use crate::upstream::attachments::Kind;
use crate::upstream::tunnel::{self, End};

/// The `Upgrade` value of a request that asks for one (`Connection: upgrade` and an
/// `Upgrade` header), else None.
pub fn requested(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade
        .then(|| headers.get(UPGRADE).cloned())
        .flatten()
}

/// Puts back the two hop-by-hop headers an upgrade needs on its next hop.
pub fn restore(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol);
}

/// Spawns the tunnel between the client and the master once both sides have
/// switched protocols. It is attached to `master`, so a drain closes it.
pub fn spawn_tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    master: &Arc<Master>,
    idle_timeout: Option<Duration>,
) {
    let attachment = master.upstream.attachments().attach(Kind::Tunnel);
    let name = master.name.clone();
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(master = %name, %error, "upgrade did not complete");
                return;
            }
        };
        let (end, sent, received) = tunnel::pipe(
            TokioIo::new(client),
            TokioIo::new(upstream),
            idle_timeout,
            &attachment,
        )
        .await;
        match end {
            End::Closed => tracing::debug!(master = %name, sent, received, "tunnel closed"),
            End::Idle => tracing::info!(master = %name, "tunnel closed: idle timeout"),
            End::Drained => tracing::debug!(master = %name, "tunnel closed by drain"),
        }
    });
}
