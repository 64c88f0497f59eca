//! Active-active placement: which replica a request, a WebSocket or a `[[tcp]]` agent
//! connection goes to. A pure function of the replicas' state and of what ties the
//! request to one of them ([`place`]), tested exhaustively; no I/O, no clock.
//!
//! Rules:
//! - Only a routable replica (healthy, enabled) is ever chosen.
//! - A request tied to a routable replica (the proxy's cookie, or the first request
//!   of its CLI call) goes there, whatever the loads.
//! - Anything else goes to the replica with the least load: Jenkins' load (running
//!   builds + queued items + online agents, as last read) plus the requests the proxy
//!   has in flight to it, so a burst between two reads spreads out. A replica whose
//!   load could not be read comes after every replica whose load could (it is not
//!   excluded); ties go to the first in file order.
//! - A request whose tie names a replica that is not routable (down, disabled, or no
//!   longer in the pool) is placed anew: "replaced" (its cookie is replaced).
//!
//! The cookie's value is a [`token`] per replica: a hash of its name and URL, the
//! same in every proxy instance and across restarts, that says nothing of the URL.

/// What ties a request to one replica, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    /// Nothing: a new browser session, an API call, a webhook, an agent connection.
    None,
    /// The proxy's cookie: the replica it names (an index in file order), or None for
    /// a value that names no replica of the pool.
    Cookie(Option<usize>),
    /// The first request of its CLI call (the `Session` header) went to this replica.
    Session(usize),
}

/// Why a replica was chosen: the `reason` label of the placement metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The request's cookie named it.
    Cookie,
    /// Its CLI call's first request went there.
    Session,
    /// No tie: the least loaded replica.
    LeastLoad,
    /// Its tie named a replica that is not routable: placed anew, cookie replaced.
    Replaced,
}

impl Reason {
    pub const ALL: [Reason; 4] = [
        Reason::Cookie,
        Reason::Session,
        Reason::LeastLoad,
        Reason::Replaced,
    ];

    /// The label scripts and metrics see (a public contract: never renamed).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Cookie => "cookie",
            Reason::Session => "session",
            Reason::LeastLoad => "least_load",
            Reason::Replaced => "replaced",
        }
    }

    /// The placement started a new session on the replica (`/status` `sessions`).
    pub fn new_session(self) -> bool {
        matches!(self, Reason::LeastLoad | Reason::Replaced)
    }

    /// Position in [`Reason::ALL`].
    pub fn index(self) -> usize {
        match self {
            Reason::Cookie => 0,
            Reason::Session => 1,
            Reason::LeastLoad => 2,
            Reason::Replaced => 3,
        }
    }
}

/// One replica as placement sees it (file order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Healthy and enabled.
    pub routable: bool,
    /// Builds + queued items + online agents, as last read; None when it could not be.
    pub load: Option<u64>,
    /// The proxy's own requests waiting on it now.
    pub in_flight: u64,
}

/// The replica for a request (an index into `candidates`) and why; None when no
/// replica is routable.
pub fn place(candidates: &[Candidate], affinity: Affinity) -> Option<(usize, Reason)> {
    let routable = |index: usize| candidates.get(index).is_some_and(|c| c.routable);
    match affinity {
        Affinity::Cookie(Some(index)) if routable(index) => return Some((index, Reason::Cookie)),
        Affinity::Session(index) if routable(index) => return Some((index, Reason::Session)),
        _ => {}
    }
    let reason = match affinity {
        Affinity::None => Reason::LeastLoad,
        Affinity::Cookie(_) | Affinity::Session(_) => Reason::Replaced,
    };
    least_loaded(candidates).map(|index| (index, reason))
}

/// The routable replica with the least load (readable first, then load plus
/// in-flight, then file order).
fn least_loaded(candidates: &[Candidate]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.routable)
        .min_by_key(|(index, c)| {
            let load = c.load.unwrap_or(0).saturating_add(c.in_flight);
            (c.load.is_none(), load, *index)
        })
        .map(|(index, _)| index)
}

/// The cookie value of a replica: FNV-1a (64 bits) of its name and URL.
pub fn token(name: &str, url: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = name.bytes().chain([0]).chain(url.bytes());
    bytes.fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// A token as the cookie carries it: 16 lowercase hex digits.
pub fn token_text(token: u64) -> String {
    format!("{token:016x}")
}

/// The token a cookie value carries; None for anything but 16 hex digits.
pub fn parse_token(text: &str) -> Option<u64> {
    let hex = text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| u64::from_str_radix(text, 16).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(load: u64) -> Candidate {
        Candidate {
            routable: true,
            load: Some(load),
            in_flight: 0,
        }
    }

    #[test]
    fn new_work_goes_to_the_least_loaded_replica() {
        let replicas = [up(5), up(1), up(3)];
        assert_eq!(
            place(&replicas, Affinity::None),
            Some((1, Reason::LeastLoad))
        );
        // Ties: file order.
        assert_eq!(
            place(&[up(2), up(1), up(1)], Affinity::None),
            Some((1, Reason::LeastLoad))
        );
        // Requests in flight count: a burst spreads out.
        let busy = Candidate {
            in_flight: 3,
            ..up(1)
        };
        assert_eq!(
            place(&[up(5), busy, up(3)], Affinity::None),
            Some((2, Reason::LeastLoad))
        );
    }

    #[test]
    fn an_unreadable_load_is_placed_last_not_excluded() {
        let unread = Candidate {
            load: None,
            ..up(0)
        };
        assert_eq!(
            place(&[unread, up(100)], Affinity::None),
            Some((1, Reason::LeastLoad))
        );
        let down = Candidate {
            routable: false,
            ..up(0)
        };
        assert_eq!(
            place(&[down, unread], Affinity::None),
            Some((1, Reason::LeastLoad))
        );
        // Among unreadable ones: in flight, then file order.
        let busy_unread = Candidate {
            in_flight: 1,
            ..unread
        };
        assert_eq!(
            place(&[busy_unread, unread], Affinity::None),
            Some((1, Reason::LeastLoad))
        );
    }

    #[test]
    fn a_tie_to_a_routable_replica_holds_whatever_the_loads() {
        let replicas = [up(5), up(1), up(3)];
        assert_eq!(
            place(&replicas, Affinity::Cookie(Some(0))),
            Some((0, Reason::Cookie))
        );
        assert_eq!(
            place(&replicas, Affinity::Session(2)),
            Some((2, Reason::Session))
        );
        let down = Candidate {
            routable: false,
            ..up(0)
        };
        let replicas = [down, up(4), up(3)];
        assert_eq!(
            place(&replicas, Affinity::Cookie(Some(0))),
            Some((2, Reason::Replaced))
        );
        assert_eq!(
            place(&replicas, Affinity::Cookie(None)),
            Some((2, Reason::Replaced))
        );
        assert_eq!(
            place(&replicas, Affinity::Cookie(Some(7))),
            Some((2, Reason::Replaced))
        );
        assert_eq!(
            place(&replicas, Affinity::Session(0)),
            Some((2, Reason::Replaced))
        );
        assert_eq!(place(&[down, down], Affinity::Cookie(Some(1))), None);
        assert_eq!(place(&[], Affinity::None), None);
    }

    /// Every pool of up to three replicas with every state each can be in, and every
    /// affinity: the rules in the module doc hold.
    #[test]
    fn the_rules_hold_for_every_small_pool() {
        let states: Vec<Candidate> = [false, true]
            .into_iter()
            .flat_map(|routable| {
                [None, Some(0), Some(1), Some(2)]
                    .into_iter()
                    .flat_map(move |load| {
                        (0..2).map(move |in_flight| Candidate {
                            routable,
                            load,
                            in_flight,
                        })
                    })
            })
            .collect();
        let mut pools: Vec<Vec<Candidate>> = vec![Vec::new()];
        let mut shorter: Vec<Vec<Candidate>> = vec![Vec::new()];
        for _ in 0..3 {
            shorter = shorter
                .iter()
                .flat_map(|pool| {
                    states.iter().map(move |state| {
                        let mut longer = pool.clone();
                        longer.push(*state);
                        longer
                    })
                })
                .collect();
            pools.extend(shorter.iter().cloned());
        }
        let mut checked = 0;
        for pool in &pools {
            let mut affinities = vec![Affinity::None, Affinity::Cookie(None)];
            for index in 0..=pool.len() {
                affinities.push(Affinity::Cookie(Some(index)));
                affinities.push(Affinity::Session(index));
            }
            for affinity in affinities {
                check_rules(pool, affinity);
                checked += 1;
            }
        }
        assert!(checked > 40_000, "{checked}");
    }

    fn check_rules(pool: &[Candidate], affinity: Affinity) {
        let outcome = place(pool, affinity);
        let any_routable = pool.iter().any(|c| c.routable);
        let Some((index, reason)) = outcome else {
            assert!(!any_routable, "{pool:?} {affinity:?}");
            return;
        };
        assert!(pool[index].routable, "{pool:?} {affinity:?}");
        let tied = match affinity {
            Affinity::Cookie(Some(i)) | Affinity::Session(i) => Some(i),
            _ => None,
        };
        if let Some(tied) = tied.filter(|&i| pool.get(i).is_some_and(|c| c.routable)) {
            assert_eq!(index, tied, "{pool:?} {affinity:?}");
            let expected = match affinity {
                Affinity::Session(_) => Reason::Session,
                _ => Reason::Cookie,
            };
            assert_eq!(reason, expected);
            return;
        }
        let expected = match affinity {
            Affinity::None => Reason::LeastLoad,
            _ => Reason::Replaced,
        };
        assert_eq!(reason, expected, "{pool:?} {affinity:?}");
        for (other, candidate) in pool.iter().enumerate().filter(|(_, c)| c.routable) {
            let chosen = &pool[index];
            let total = |c: &Candidate| c.load.map(|l| l + c.in_flight);
            match (total(chosen), total(candidate)) {
                (None, Some(_)) => panic!("unreadable chosen over readable: {pool:?}"),
                (Some(a), Some(b)) => assert!(a < b || (a == b && index <= other), "{pool:?}"),
                (None, None) => assert!(
                    chosen.in_flight < candidate.in_flight
                        || (chosen.in_flight == candidate.in_flight && index <= other),
                    "{pool:?}"
                ),
                (Some(_), None) => {}
            }
        }
    }

    #[test]
    fn tokens_are_stable_opaque_and_parse_back() {
        let a = token("master-a", "http://10.0.0.11:8080");
        assert_eq!(a, token("master-a", "http://10.0.0.11:8080"));
        assert_ne!(a, token("master-b", "http://10.0.0.11:8080"));
        assert_ne!(a, token("master-a", "http://10.0.0.12:8080"));
        let text = token_text(a);
        assert_eq!(text.len(), 16);
        assert!(!text.contains("10.0.0"));
        assert_eq!(parse_token(&text), Some(a));
        assert_eq!(parse_token(&text.to_uppercase()), Some(a));
        for bad in [
            "",
            "abc",
            "master-a",
            "0123456789abcdeg",
            "0123456789abcdef0",
            "+123456789abcdef",
        ] {
            assert_eq!(parse_token(bad), None, "{bad:?}");
        }
        // FNV-1a test vector (empty name and URL: one zero byte).
        assert_eq!(token("", ""), 0xaf63_bd4c_8601_b7df);
    }

    #[test]
    fn reasons_have_their_labels_in_order() {
        for (index, reason) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), index);
        }
        let labels = Reason::ALL.map(Reason::as_str);
        assert_eq!(labels, ["cookie", "session", "least_load", "replaced"]);
        assert!(Reason::LeastLoad.new_session() && Reason::Replaced.new_session());
        assert!(!Reason::Cookie.new_session() && !Reason::Session.new_session());
    }
}
