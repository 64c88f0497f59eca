//! One master as the election sees it: its health, and how one observation changes it.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not checked yet.
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// One observation about one master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    CheckPassed,
    CheckFailed {
        error: String,
    },
    /// A connection attempt for a client request failed (refused, timed out, reset
    /// before any byte was sent).
    TrafficConnectFailed {
        error: String,
    },
    /// Making this master ready (reload, start, health after it) failed.
    PromotionFailed {
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterState {
    pub name: String,
    pub health: Health,
    pub consecutive_passed: u32,
    pub consecutive_failed: u32,
    pub last_error: Option<String>,
    /// Taken out of the election for maintenance (admin API).
    pub disabled: bool,
    /// A cold standby: its JVM is stopped, so its checks fail, yet it can be started.
    pub cold: bool,
    /// Starting it (cold) or making it ready failed; cleared when it passes a check.
    pub promotion_failed: bool,
}

impl MasterState {
    /// Can be chosen: up, or a cold standby that can be started; never disabled. The
    /// owner moves traffic to it only once it answers healthy.
    pub fn electable(&self) -> bool {
        let startable = self.cold && self.health == Health::Down && !self.promotion_failed;
        (self.health == Health::Up || startable) && !self.disabled
    }
}

impl MasterState {
    /// A passed check: the reason, when it brings the master up.
    pub(super) fn check_passed(&mut self, rise: u32) -> Option<String> {
        let before = self.health;
        self.consecutive_passed = self.consecutive_passed.saturating_add(1);
        self.consecutive_failed = 0;
        self.promotion_failed = false;
        let rises = match before {
            Health::Unknown => true,
            Health::Down => self.consecutive_passed >= rise,
            Health::Up => false,
        };
        if !rises {
            return None;
        }
        self.health = Health::Up;
        // The error explained why it was down; it no longer applies.
        self.last_error = None;
        Some(if before == Health::Unknown {
            format!("{} up: first check passed", self.name)
        } else {
            format!(
                "{} up after {}",
                self.name,
                checks(self.consecutive_passed, "passed")
            )
        })
    }

    /// A failed check: the reason, when it takes the master down.
    pub(super) fn check_failed(&mut self, fall: u32, error: &str) -> Option<String> {
        let before = self.health;
        self.consecutive_failed = self.consecutive_failed.saturating_add(1);
        self.consecutive_passed = 0;
        self.last_error = Some(error.to_owned());
        let falls = match before {
            Health::Unknown => true,
            Health::Up => self.consecutive_failed >= fall,
            Health::Down => false,
        };
        if !falls {
            return None;
        }
        self.health = Health::Down;
        Some(if before == Health::Unknown {
            format!("{} down: first check failed: {error}", self.name)
        } else {
            format!(
                "{} down after {}: {error}",
                self.name,
                checks(self.consecutive_failed, "failed")
            )
        })
    }

    /// A connection for a client request failed, or making the master ready did
    /// (`promotion`): down at once. The reason, unless a failed connect finds it down.
    pub(super) fn down_at_once(
        &mut self,
        fall: u32,
        error: &str,
        promotion: bool,
    ) -> Option<String> {
        let before = self.health;
        if promotion {
            self.promotion_failed = true;
        }
        self.consecutive_passed = 0;
        self.consecutive_failed = self.consecutive_failed.max(fall);
        self.last_error = Some(error.to_owned());
        if before == Health::Down && !promotion {
            return None;
        }
        self.health = Health::Down;
        let what = if promotion {
            "promotion failed"
        } else {
            "connection for a client request failed"
        };
        Some(format!("{} down: {what}: {error}", self.name))
    }
}

/// "1 failed check", "3 failed checks".
fn checks(count: u32, how: &str) -> String {
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {how} check{plural}")
}
