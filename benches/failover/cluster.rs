//! The cluster row: one etcd (Debian's etcd-server) and two instances of our proxy in
//! cluster mode, each a child process, in front of the same two masters.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::child::{self, free_port, Child, Stop};
use crate::common::http;
use crate::common::peers::{self, ProxySpec};
use crate::plan::Plan;

/// The instances' lease: the default (`[cluster] lease_ttl`).
const LEASE_TTL: &str = "10s";
const READY: Duration = Duration::from_secs(20);

/// A running pool: etcd and the instances, all stopped on drop.
pub struct Cluster {
    _etcd: Child,
    pub instances: Vec<Instance>,
}

pub struct Instance {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
    /// How to start it again after a kill: the same config, ports and name.
    command: fn() -> Command,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Instance {
    pub fn kill(&mut self) -> Result<(), String> {
        self.child
            .kill_now()
            .map_err(|e| format!("killing {}: {e}", self.child.name()))
    }

    /// Starts it again, and waits until it serves.
    pub fn restart(&mut self) -> Result<(), String> {
        let mut command = (self.command)();
        command.arg("run").arg("--config").arg(&self.config);
        let name = self.child.name().to_owned();
        self.child = Child::spawn(&name, command, &self.log, Stop::Term)?;
        child::wait_for_http(&mut self.child, self.listen, "/", READY, |_| true)
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.exited()
    }
}

fn our_binary() -> Command {
    let mut command = Command::new(peers::OUR_BINARY);
    command.env("RUST_LOG", "info");
    command
}

/// etcd, then the instances one after the other (the first is the leader), each
/// waited for until a request through it reaches `primary`.
pub fn start(
    plan: &Plan,
    primary: SocketAddr,
    backup: SocketAddr,
    dir: &Path,
) -> Result<Cluster, String> {
    let client = free_port([127, 0, 0, 1])?;
    let peer = free_port([127, 0, 0, 1])?;
    let mut etcd_command = Command::new("etcd");
    etcd_command
        .arg("--name")
        .arg("bench")
        .arg("--data-dir")
        .arg(dir.join("etcd-data"))
        .arg("--listen-client-urls")
        .arg(format!("http://{client}"))
        .arg("--advertise-client-urls")
        .arg(format!("http://{client}"))
        .arg("--listen-peer-urls")
        .arg(format!("http://{peer}"))
        .arg("--initial-advertise-peer-urls")
        .arg(format!("http://{peer}"))
        .arg("--initial-cluster")
        .arg(format!("bench=http://{peer}"));
    let _ = std::fs::remove_dir_all(dir.join("etcd-data"));
    let mut etcd = Child::spawn("etcd", etcd_command, &dir.join("etcd.log"), Stop::Term)?;
    child::wait_for_port(&mut etcd, client, READY)?;
    let mut instances = Vec::new();
    for index in 0..2 {
        let spec = ProxySpec {
            kind: peers::ProxyKind::OursCluster,
            listen: free_port([127, 0, 0, 1])?,
            primary,
            backup,
            workers: plan.workers,
            checks: plan.checks,
        };
        let admin = free_port([127, 0, 0, 1])?;
        let extra = format!(
            "[cluster]\netcd = [\"http://{client}\"]\ninstance = \"proxy-{index}\"\nkey_prefix = \"/bench\"\nlease_ttl = \"{LEASE_TTL}\"\n"
        );
        let instance_dir = dir.join(format!("proxy-{index}"));
        std::fs::create_dir_all(&instance_dir)
            .map_err(|e| format!("creating {}: {e}", instance_dir.display()))?;
        let (command, stop) = peers::ours_with_admin(&spec, admin, &instance_dir, &extra)?;
        let log = instance_dir.join("proxy.log");
        let mut child = Child::spawn(&format!("proxy-{index}"), command, &log, stop)?;
        child::wait_for_http(&mut child, spec.listen, "/", READY, |reply| {
            reply.header("x-master") == Some("master-a")
        })?;
        instances.push(Instance {
            listen: spec.listen,
            admin,
            child,
            command: our_binary,
            config: instance_dir.join("jenkins-ha-proxy.toml"),
            log,
        });
    }
    Ok(Cluster {
        _etcd: etcd,
        instances,
    })
}

/// The index of the instance that leads the pool, as instance 0 sees it.
pub fn leader(cluster: &Cluster) -> Result<usize, String> {
    let reply = http::get(
        cluster.instances[0].admin,
        "/status",
        Duration::from_secs(2),
    )
    .map_err(|e| format!("GET /status: {e}"))?;
    let status: serde_json::Value =
        serde_json::from_slice(&reply.body).map_err(|e| format!("/status: {e}"))?;
    let leader = status["cluster"]["leader"]
        .as_str()
        .ok_or("no leader in /status")?;
    leader
        .strip_prefix("proxy-")
        .and_then(|i| i.parse().ok())
        .filter(|i: &usize| *i < cluster.instances.len())
        .ok_or_else(|| format!("unknown leader {leader:?}"))
}
