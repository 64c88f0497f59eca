//! systemd `Type=notify` support: READY once listeners are bound and the first
//! election is done, RELOADING/READY around a reload, STOPPING, and WATCHDOG pings
//! when the unit sets `WatchdogSec`. Outside systemd (no `NOTIFY_SOCKET`) these are
//! no-ops.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(error) = sd_notify::notify(false, states) {
        tracing::warn!(%error, "cannot notify systemd");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Pings the watchdog at half its period while the daemon runs; returns at once if
/// the unit has no `WatchdogSec`.
pub async fn watchdog() {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let mut ticks = tokio::time::interval(Duration::from_micros(usec) / 2);
    loop {
        ticks.tick().await;
        send(&[NotifyState::Watchdog]);
    }
}
