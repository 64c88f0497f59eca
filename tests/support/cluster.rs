//! A pool of proxy instances, each the real binary in its own process, agreeing
//! through a real etcd, in front of two sample masters on 127.0.0.2 and 127.0.0.3.

use std::net::SocketAddr;
use std::path::PathBuf;

use jenkins_ha_proxy::sample::SampleMaster;

use super::child::ChildDaemon;
use super::etcd::EtcdCluster;
use super::{get, wait_until};

pub struct Pool {
    pub etcd: EtcdCluster,
    pub a: SampleMaster,
    pub b: SampleMaster,
    /// `None` once killed.
    pub instances: Vec<Option<ChildDaemon>>,
    /// The proxy and admin addresses of each instance (kept after a kill).
    pub proxies: Vec<SocketAddr>,
    pub admins: Vec<SocketAddr>,
    pub prefix: String,
    dir: PathBuf,
}

/// What every instance's config has besides its name: short checks and lease, so the
/// tests are fast.
pub struct Timings {
    pub lease_ttl: &'static str,
    pub interval: &'static str,
    pub timeout: &'static str,
    pub fall: u32,
}

pub const FAST: Timings = Timings {
    lease_ttl: "2s",
    interval: "200ms",
    timeout: "150ms",
    fall: 2,
};

impl Pool {
    /// `size` instances (`proxy-0`...) over `etcd_members` etcd members; `extra(i)`
    /// is added to instance i's `[health]` table.
    pub async fn start(
        size: usize,
        etcd_members: usize,
        timings: &Timings,
        extra: impl Fn(usize) -> String,
    ) -> Pool {
        let etcd = EtcdCluster::start(etcd_members).await;
        let a = SampleMaster::start("master-a", "127.0.0.2:0".parse().expect("addr"))
            .await
            .expect("master-a");
        let b = SampleMaster::start("master-b", "127.0.0.3:0".parse().expect("addr"))
            .await
            .expect("master-b");
        let dir = etcd.log_dir().join("proxies");
        std::fs::create_dir_all(&dir).expect("dir");
        let prefix = format!("/jha-test/{}", std::process::id());
        let mut pool = Pool {
            etcd,
            a,
            b,
            instances: Vec::new(),
            proxies: Vec::new(),
            admins: Vec::new(),
            prefix,
            dir,
        };
        for index in 0..size {
            let path = pool.write_config(index, timings, &extra(index));
            let daemon = ChildDaemon::start(&path, None).await;
            pool.proxies.push(daemon.proxy);
            pool.admins.push(daemon.admin);
            pool.instances.push(Some(daemon));
        }
        pool
    }

    fn write_config(&self, index: usize, timings: &Timings, extra: &str) -> PathBuf {
        let masters = [("master-a", self.a.url()), ("master-b", self.b.url())];
        self.write_config_for(
            &format!("proxy-{index}"),
            &self.prefix,
            &masters,
            timings,
            extra,
        )
    }

    /// An instance named `name` of the pool at `prefix`, with `masters` in that order,
    /// on this pool's etcd; it runs until dropped.
    pub async fn spawn(&self, name: &str, prefix: &str, masters: &[(&str, String)]) -> ChildDaemon {
        let path = self.write_config_for(name, prefix, masters, &FAST, "");
        ChildDaemon::start(&path, None).await
    }

    fn write_config_for(
        &self,
        name: &str,
        prefix: &str,
        masters: &[(&str, String)],
        timings: &Timings,
        extra: &str,
    ) -> PathBuf {
        let backends: String = masters
            .iter()
            .map(|(master, url)| format!("[[backend]]\nname = \"{master}\"\nurl = \"{url}\"\n"))
            .collect();
        let text = format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\nconnect_timeout = \"500ms\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [health]\ninterval = \"{}\"\ntimeout = \"{}\"\nrise = 1\nfall = {}\n{extra}\n\
             [failover]\nstate_file = \"off\"\nhold_timeout = \"8s\"\ndrain_timeout = \"1s\"\n\
             [cluster]\netcd = {}\ninstance = \"{name}\"\nkey_prefix = \"{prefix}\"\nlease_ttl = \"{}\"\n\
             {backends}",
            timings.interval,
            timings.timeout,
            timings.fall,
            self.etcd.toml_urls(),
            timings.lease_ttl,
        );
        let path = self
            .dir
            .join(format!("{name}{}.toml", prefix.replace('/', "_")));
        std::fs::write(&path, text).expect("write config");
        path
    }

    pub fn instance(&self, index: usize) -> &ChildDaemon {
        self.instances[index].as_ref().expect("a running instance")
    }

    /// `/status` of instance `index` (None when it does not answer in time).
    pub async fn status(&self, index: usize) -> Option<serde_json::Value> {
        let reply = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            get(self.admins[index], "/status"),
        )
        .await
        .ok()?
        .ok()?;
        serde_json::from_slice(&reply.body).ok()
    }

    /// Waits until every running instance routes to `master`.
    pub async fn wait_routing(&self, master: &str) {
        for index in 0..self.instances.len() {
            if self.instances[index].is_none() {
                continue;
            }
            wait_until(&format!("proxy-{index} to route to {master}"), || async {
                self.status(index)
                    .await
                    .is_some_and(|s| s["active"] == master && s["cluster"]["routing"] == true)
            })
            .await;
        }
    }

    /// Waits until the pool has formed: every running instance sees all of them in
    /// its view and routes to `master`. (Right after start, an instance that
    /// registered before the first pointer holds everyone's routing until it has
    /// acknowledged it, and the others learn of it at different moments: routing can
    /// pause for a few milliseconds after `wait_routing` saw it on.)
    pub async fn wait_formed(&self, master: &str) {
        let running = self.instances.iter().filter(|i| i.is_some()).count();
        for index in 0..self.instances.len() {
            if self.instances[index].is_none() {
                continue;
            }
            let what = format!("proxy-{index} to see {running} instances and route to {master}");
            wait_until(&what, || async {
                self.status(index).await.is_some_and(|s| {
                    s["active"] == master
                        && s["cluster"]["routing"] == true
                        && s["cluster"]["instances"].as_array().map(Vec::len) == Some(running)
                })
            })
            .await;
        }
    }

    /// SIGKILLs instance `index`.
    pub fn kill(&mut self, index: usize) {
        if let Some(daemon) = self.instances[index].take() {
            daemon.signal(rustix::process::Signal::KILL);
        }
    }
}
