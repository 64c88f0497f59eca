//! A real etcd (Debian's `etcd-server`, `/usr/bin/etcd`), one member or several, on
//! loopback ports with a temporary data directory, started and stopped by the test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::DEADLINE;

/// The etcd binary; `scripts/test` installs it on a fresh machine.
const ETCD: &str = "etcd";

pub struct EtcdCluster {
    pub members: Vec<Member>,
    dir: PathBuf,
}

pub struct Member {
    pub name: String,
    pub client: SocketAddr,
    peer: SocketAddr,
    child: Option<Child>,
}

/// A loopback port nobody listens on now (the test binds it again at once).
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("addr")
}

impl EtcdCluster {
    /// Starts `size` members forming one cluster, and waits until it answers.
    pub async fn start(size: usize) -> EtcdCluster {
        let dir = std::env::temp_dir().join(format!(
            "jha-etcd-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).expect("etcd temp dir");
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("etcd-{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let mut cluster = EtcdCluster { members, dir };
        for index in 0..size {
            cluster.spawn(index, "new");
        }
        cluster.wait_ready().await;
        cluster
    }

    /// `http://host:port` of every member, for `[cluster] etcd`.
    pub fn urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://{}", m.client))
            .collect()
    }

    /// The TOML array of `urls()`.
    pub fn toml_urls(&self) -> String {
        let quoted: Vec<String> = self.urls().iter().map(|u| format!("\"{u}\"")).collect();
        format!("[{}]", quoted.join(", "))
    }

    fn spawn(&mut self, index: usize, state: &str) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect();
        let member = &self.members[index];
        let data = self.dir.join(&member.name);
        let log = std::fs::File::create(self.dir.join(format!("{}.log", member.name)))
            .expect("etcd log file");
        let child = Command::new(ETCD)
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-client-urls")
            .arg(format!("http://{}", member.client))
            .arg("--advertise-client-urls")
            .arg(format!("http://{}", member.client))
            .arg("--listen-peer-urls")
            .arg(format!("http://{}", member.peer))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://{}", member.peer))
            .arg("--initial-cluster")
            .arg(initial.join(","))
            .arg("--initial-cluster-state")
            .arg(state)
            .arg("--initial-cluster-token")
            .arg(self.dir.file_name().and_then(|n| n.to_str()).unwrap_or("jha"))
            // Tests only: no fsync, short elections.
            .arg("--unsafe-no-fsync")
            .arg("--heartbeat-interval")
            .arg("50")
            .arg("--election-timeout")
            .arg("500")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start {ETCD} ({error}): install Debian's etcd-server (scripts/test does)")
            });
        self.members[index].child = Some(child);
    }

    /// Waits until a write through some member succeeds (a leader is elected).
    pub async fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            for member in self.members.iter().filter(|m| m.child.is_some()) {
                if put_ok(member.client).await {
                    return;
                }
            }
            assert!(
                started.elapsed() < DEADLINE,
                "etcd did not become ready; logs in {}",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs member `index`.
    pub async fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts a killed member again with its data.
    pub async fn restart(&mut self, index: usize) {
        self.spawn(index, "existing");
    }

    pub fn log_dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(child) = member.child.as_mut() {
                let _ = child.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One write through `client` within a short deadline.
async fn put_ok(client: SocketAddr) -> bool {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(client).await.ok()?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(connection);
        let request = hyper::Request::post("/v3/kv/put")
            .header("host", client.to_string())
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                br#"{"key":"cmVhZHk=","value":"eQ=="}"#,
            )))
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        Some(response.status().is_success())
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Some(true))
    )
}
