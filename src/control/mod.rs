//! What decides: the election rules, the owner task that applies them, the snapshot
//! everything else reads, and the tasks that make a master ready or follow changes.

pub mod commands;
pub mod drain;
pub mod election;
pub mod health;
pub mod jenkins;
pub mod owner;
pub mod promotion;
pub mod readiness;
pub mod routing;
pub mod state_file;
