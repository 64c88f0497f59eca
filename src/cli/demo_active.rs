//! `jenkins-ha-proxy demo --active-active`: what the demo prints and the `load`
//! command, for three sample replicas that all take traffic.

use std::net::SocketAddr;

use crate::sample::SampleMaster;

pub(super) fn instructions(
    masters: &[SampleMaster],
    scheme: &str,
    proxy: SocketAddr,
    admin: SocketAddr,
) -> String {
    let replicas: String = masters
        .iter()
        .map(|m| format!("  {}  {}   load {}\n", m.name(), m.url(), m.load().total()))
        .collect();
    format!(
        r#"
jenkins-ha-proxy demo --active-active
=====================================
Three sample replicas of one controller take traffic at once behind the proxy, as
CloudBees CI High Availability runs them (never do this with plain Jenkins masters
on one JENKINS_HOME: they would corrupt it):
{replicas}  proxy     {scheme}://{proxy}/   <- send requests here
  admin     http://{admin}/status

A request without the JHP_REPLICA cookie (a new session) goes to the replica with
the least load: running builds + queued items + online agents, read every second,
plus the requests in flight. The answer sets the cookie; with it, requests stick
to their replica while it is healthy.

In another terminal, new sessions (curl without a cookie jar):
  while true; do curl -s {scheme}://{proxy}/; sleep 0.5; done
one session that sticks (curl keeps the cookie in a jar):
  while true; do curl -s -b /tmp/jar -c /tmp/jar {scheme}://{proxy}/; sleep 0.5; done
and the pool with its loads and placements:
  jenkins-ha-proxy status --admin http://{admin}

Then type a command here and press Enter:
  load a 7 2 1        master-a now runs 7 builds, has 2 queued, 1 agent online
  kill a | start a    stop a replica like a crashed process, bring it back
  sick a | well a     its health check answers 503, 200 again
  status              print the pool
  quit                stop the demo (Ctrl-C works too)
(any of a, b, c)
"#
    )
}

/// `load <which> <builds> <queued> <agents>`: `master` is the one `which` names.
pub(super) fn set_load(master: Option<&SampleMaster>, numbers: &[&str]) {
    let parsed: Vec<u64> = numbers.iter().filter_map(|n| n.parse().ok()).collect();
    let (Some(master), &[builds, queued, agents]) = (master, &parsed[..]) else {
        println!("usage: load a|b|c BUILDS QUEUED AGENTS, e.g. load a 7 2 1");
        return;
    };
    master.load().set(builds, queued, agents);
    println!(
        "{} now reports {builds} builds, {queued} queued, {agents} agents: load {}",
        master.name(),
        master.load().total()
    );
}
