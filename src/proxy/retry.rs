//! What the request path does when sending a request fails: a pure function of the
//! failure and of what the request allows ([`next_step`]), tested exhaustively;
//! `super::send` carries the steps out. A request served on its first try never
//! comes here.
//!
//! Retries, and why each is safe:
//! - The connection could not be established: the request was never sent, body
//!   included. Report it to the owner (which marks the master down at once) and send
//!   to the new active master.
//! - The connect timed out: the master may be down, or only busy (a full accept queue
//!   drops SYNs), so it is not reported; the request tries again on whichever master
//!   is active, for as long as the health checks take to demote one, then 504. A
//!   connect still under way when its master is demoted is given up for the new one.
//! - The TLS handshake was refused (the master's certificate, most often): the request
//!   was never sent, but this is no proof the master is down (it answers), so it is
//!   not reported: wait, up to the time the health checks take, for them to demote
//!   it (they fail the same way), then send it to the new active master; else 502.
//! - hyper gives the request back unsent (`try_send_request`): same as a failed
//!   connect when the connection was fresh; on a reused pooled connection, the master
//!   merely closed an idle connection: try a fresh one, and count nothing against it.
//! - A GET/HEAD/OPTIONS without a body broke before any response byte: replay it once
//!   on the active master of the latest snapshot, on a fresh connection. If the replay
//!   breaks on the same master, that master may be dying: its health checks decide,
//!   never this client, so wait for them to demote it, then send it to the new one.
//! - A replayable request waiting on a master that is demoted meanwhile is sent to
//!   the new active master.
//! - Nothing else is ever sent again: 502, 503 or 504.

use std::time::{Duration, Instant};

/// How one attempt to send the request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// No descriptor, socket buffer or port on our side: says nothing about the master.
    ConnectLocal,
    /// Every connection the master may have (`max_connections`) stayed busy.
    ConnectSaturated,
    /// The connect timed out. `still_active`: the master is still the active one;
    /// `deadline_passed`: the health checks have had the time to demote it.
    ConnectTimedOut {
        still_active: bool,
        deadline_passed: bool,
    },
    /// The connect was refused or reset, or the HTTP handshake failed.
    ConnectFailed,
    /// The TLS handshake failed for a reason of TLS (a certificate refused).
    ConnectTls,
    /// The master was demoted while the connect was under way (a frozen master's
    /// accept queue holds it): given up, the request never sent.
    ConnectAbandoned,
    /// hyper gave the request back unsent; `reused`: on a pooled connection.
    Unsent { reused: bool },
    /// The client's own request body failed (a bad chunk, an aborted upload).
    ClientBody,
    /// The connection broke before any response byte; the request is spent.
    Broke,
    /// The master was demoted while the request waited for its response head.
    Demoted,
    /// No response head within `proxy.request_timeout`.
    HeadTimedOut,
}

/// What the request allows when an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Attempts {
    /// A copy can be sent: idempotent, without a body, and resends are left.
    pub can_resend: bool,
    /// It was already replayed on the master it just failed on.
    pub replayed_here: bool,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// The unsent request again, on a fresh connection to the same master.
    FreshConnection,
    /// The unsent request again, on whichever master is active now.
    RetryOnActive,
    /// Report the failed connect to the owner, then send the unsent request to the
    /// master its answer names (502 when every master was tried, or no owner).
    ReportAndRetry,
    /// A copy to the active master, on a fresh connection, noting the master it broke on.
    Replay,
    /// A copy to the active master, on a fresh connection.
    Resend,
    /// Wait, up to the time the health checks take, for the master to be demoted; then
    /// a copy to the new active master (502 if it is not demoted).
    WaitForDemotion,
    /// Wait as for `WaitForDemotion`, then the unsent request to the new active master.
    AwaitDemotionUnsent,
    /// Answer the client now.
    Answer(Answer),
}

/// The proxy's own answers to a request it could not serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// 400: the client's request body failed.
    BadRequest,
    /// 502: the master failed during the request.
    BadGateway,
    /// 503: this process is out of descriptors or socket memory.
    Overloaded,
    /// 503: every connection the master may have stayed busy.
    Saturated,
    /// 504: connects kept timing out and the master was not demoted.
    ConnectTimedOut,
    /// 504: no response head in time.
    GatewayTimeout,
}

/// The step after `failure`, given what the request allows.
pub(super) fn next_step(failure: Failure, attempts: &Attempts) -> Step {
    match failure {
        Failure::ConnectLocal => Step::Answer(Answer::Overloaded),
        Failure::ConnectSaturated => Step::Answer(Answer::Saturated),
        Failure::ConnectTimedOut {
            still_active: true,
            deadline_passed: true,
        } => Step::Answer(Answer::ConnectTimedOut),
        Failure::ConnectTimedOut { .. } | Failure::ConnectAbandoned => Step::RetryOnActive,
        Failure::ConnectFailed | Failure::Unsent { reused: false } => Step::ReportAndRetry,
        Failure::ConnectTls => Step::AwaitDemotionUnsent,
        Failure::Unsent { reused: true } => Step::FreshConnection,
        Failure::ClientBody => Step::Answer(Answer::BadRequest),
        Failure::Broke if attempts.replayed_here => Step::WaitForDemotion,
        Failure::Broke if attempts.can_resend => Step::Replay,
        Failure::Broke => Step::Answer(Answer::BadGateway),
        Failure::Demoted if attempts.can_resend => Step::Resend,
        Failure::Demoted | Failure::HeadTimedOut => Step::Answer(Answer::GatewayTimeout),
    }
}

/// When a request whose connects time out stops trying: its first timed-out connect
/// starts the time the health checks take to demote a master (`down_confirmation`).
#[derive(Debug, Default)]
pub(super) struct ConnectDeadline(Option<Instant>);

impl ConnectDeadline {
    /// A connect timed out at `now`: whether that time has passed.
    pub(super) fn passed(&mut self, now: Instant, down_confirmation: Duration) -> bool {
        now >= *self.0.get_or_insert(now + down_confirmation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every failure, each timed-out connect case included.
    const FAILURES: [Failure; 15] = [
        Failure::ConnectLocal,
        Failure::ConnectSaturated,
        Failure::ConnectTimedOut {
            still_active: false,
            deadline_passed: false,
        },
        Failure::ConnectTimedOut {
            still_active: false,
            deadline_passed: true,
        },
        Failure::ConnectTimedOut {
            still_active: true,
            deadline_passed: false,
        },
        Failure::ConnectTimedOut {
            still_active: true,
            deadline_passed: true,
        },
        Failure::ConnectFailed,
        Failure::ConnectTls,
        Failure::ConnectAbandoned,
        Failure::Unsent { reused: false },
        Failure::Unsent { reused: true },
        Failure::ClientBody,
        Failure::Broke,
        Failure::Demoted,
        Failure::HeadTimedOut,
    ];

    fn every_attempts() -> impl Iterator<Item = Attempts> {
        [(false, false), (false, true), (true, false), (true, true)]
            .into_iter()
            .map(|(can_resend, replayed_here)| Attempts {
                can_resend,
                replayed_here,
            })
    }

    /// The whole table: for each failure, the step for each of (no copy, not replayed
    /// here), (no copy, replayed here), (copy, not replayed here), (copy, replayed here).
    #[test]
    fn every_failure_has_its_step() {
        use Step::{
            FreshConnection, Replay, ReportAndRetry, Resend, RetryOnActive, WaitForDemotion,
        };
        let answer = Step::Answer;
        let timed_out = |still_active, deadline_passed| Failure::ConnectTimedOut {
            still_active,
            deadline_passed,
        };
        let expected: [(Failure, [Step; 4]); 15] = [
            (Failure::ConnectLocal, [answer(Answer::Overloaded); 4]),
            (Failure::ConnectSaturated, [answer(Answer::Saturated); 4]),
            (timed_out(false, false), [RetryOnActive; 4]),
            (timed_out(false, true), [RetryOnActive; 4]),
            (timed_out(true, false), [RetryOnActive; 4]),
            (timed_out(true, true), [answer(Answer::ConnectTimedOut); 4]),
            (Failure::ConnectFailed, [ReportAndRetry; 4]),
            (Failure::ConnectTls, [Step::AwaitDemotionUnsent; 4]),
            (Failure::ConnectAbandoned, [RetryOnActive; 4]),
            (Failure::Unsent { reused: false }, [ReportAndRetry; 4]),
            (Failure::Unsent { reused: true }, [FreshConnection; 4]),
            (Failure::ClientBody, [answer(Answer::BadRequest); 4]),
            (
                Failure::Broke,
                [
                    answer(Answer::BadGateway),
                    WaitForDemotion,
                    Replay,
                    WaitForDemotion,
                ],
            ),
            (
                Failure::Demoted,
                [
                    answer(Answer::GatewayTimeout),
                    answer(Answer::GatewayTimeout),
                    Resend,
                    Resend,
                ],
            ),
            (Failure::HeadTimedOut, [answer(Answer::GatewayTimeout); 4]),
        ];
        for (failure, steps) in expected {
            for (attempts, step) in every_attempts().zip(steps) {
                assert_eq!(
                    next_step(failure, &attempts),
                    step,
                    "{failure:?} {attempts:?}"
                );
            }
        }
        assert_eq!(
            expected.map(|(failure, _)| failure).to_vec(),
            FAILURES.to_vec(),
            "the table covers every failure"
        );
    }

    #[test]
    fn a_copy_is_sent_only_when_the_request_allows_one() {
        for failure in FAILURES {
            for attempts in every_attempts() {
                let step = next_step(failure, &attempts);
                if matches!(step, Step::Replay | Step::Resend) {
                    assert!(attempts.can_resend, "{failure:?} {attempts:?}");
                }
            }
        }
    }

    #[test]
    fn only_a_refused_connect_or_an_unsent_request_on_a_fresh_connection_is_reported() {
        for failure in FAILURES {
            for attempts in every_attempts() {
                let reported = next_step(failure, &attempts) == Step::ReportAndRetry;
                let refused = matches!(
                    failure,
                    Failure::ConnectFailed | Failure::Unsent { reused: false }
                );
                assert_eq!(reported, refused, "{failure:?} {attempts:?}");
            }
        }
    }

    #[test]
    fn a_timed_out_connect_is_retried_until_the_health_checks_had_their_time() {
        let start = Instant::now();
        let confirmation = Duration::from_secs(5);
        let mut deadline = ConnectDeadline::default();
        assert!(
            !deadline.passed(start, confirmation),
            "the first timeout starts it"
        );
        assert!(!deadline.passed(start + Duration::from_secs(4), confirmation));
        assert!(deadline.passed(start + confirmation, confirmation));
        // Later timeouts do not move it.
        assert!(deadline.passed(start + Duration::from_secs(6), Duration::from_secs(60)));
        let mut none = ConnectDeadline::default();
        assert!(
            none.passed(start, Duration::ZERO),
            "no confirmation time: at once"
        );
    }
}
