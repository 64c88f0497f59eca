//! `jenkins-ha-proxy demo`: two sample masters on loopback, the real daemon in front
//! of them, and commands on stdin to break and mend the masters while you watch.
//! With `--active-active`: three sample replicas that all take traffic, with loads
//! the `load` command sets.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::daemon::{self, Listeners};
use crate::sample::SampleMaster;

/// What the demo runs.
pub struct Demo<'a> {
    pub listen: &'a str,
    pub admin_listen: &'a str,
    /// `--standby`: none, hot or cold.
    pub standby: &'a str,
    /// `--tls-cert`, `--tls-key`: certificate and key files to serve HTTPS with.
    pub tls: Option<&'a (PathBuf, PathBuf)>,
    /// `--active-active`: three replicas, `pool.mode = "active-active"`.
    pub active_active: bool,
}

pub async fn run(demo: Demo<'_>) -> anyhow::Result<()> {
    let Demo {
        listen,
        admin_listen,
        standby,
        tls,
        active_active,
    } = demo;
    let masters = start_masters(if active_active { 3 } else { 2 }).await?;
    let mut text = demo_config(listen, admin_listen, standby, &masters);
    if active_active {
        // Loads of 5, 1 and 3: new sessions go to master-b first.
        for (master, (builds, queued, agents)) in
            masters.iter().zip([(3, 1, 1), (0, 1, 0), (2, 0, 1)])
        {
            master.load().set(builds, queued, agents);
        }
        text += "[pool]\nmode = \"active-active\"\nload_interval = \"1s\"\n";
    }
    if let Some((cert, key)) = tls {
        // A TOML basic string: only backslashes and quotes need escaping.
        let quoted = |path: &PathBuf| {
            let text = path.display().to_string();
            format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
        };
        text += &format!(
            "[proxy.tls]\ncert_file = {}\nkey_file = {}\n",
            quoted(cert),
            quoted(key)
        );
    }
    let config = Config::parse(&text, "<demo config>")
        .context("check --listen and --admin-listen (IP:port, e.g. 127.0.0.1:8080)")?;
    let listeners = Listeners::bind(&config)
        .await
        .context("pick free ports with --listen and --admin-listen")?;
    let proxy = listeners.proxy.local_addr()?;
    let admin = listeners.admin.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if active_active {
        println!(
            "{}",
            super::demo_active::instructions(&masters, scheme, proxy, admin)
        );
    } else {
        println!("{}", instructions(&masters, scheme, proxy, admin));
    }

    let quit = CancellationToken::new();
    let stop = quit.clone();
    let daemon = tokio::spawn(daemon::run(config, None, listeners, async move {
        tokio::select! {
            () = daemon::shutdown_signal() => {}
            () = stop.cancelled() => {}
        }
    }));
    let admin_url = format!("http://{admin}");
    tokio::select! {
        () = commands(&masters, &admin_url) => quit.cancel(),
        () = quit.cancelled() => {}
        _ = daemon::shutdown_signal() => quit.cancel(),
    }
    daemon.await.context("the demo daemon panicked")??;
    for master in &masters {
        master.stop().await;
    }
    Ok(())
}

/// `count` sample masters on loopback: master-a, master-b, ...
async fn start_masters(count: usize) -> anyhow::Result<Vec<SampleMaster>> {
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut masters = Vec::with_capacity(count);
    for letter in ['a', 'b', 'c'].into_iter().take(count) {
        let name = format!("master-{letter}");
        let master = SampleMaster::start(&name, loopback)
            .await
            .with_context(|| format!("starting sample {name} on 127.0.0.1"))?;
        masters.push(master);
    }
    Ok(masters)
}

fn demo_config(
    listen: &str,
    admin_listen: &str,
    standby: &str,
    masters: &[SampleMaster],
) -> String {
    // Cold: the "start" command only logs; type `start b` to bring the JVM up.
    let promotion = match standby {
        "hot" => "standby = \"hot\"\n".to_owned(),
        "cold" => "standby = \"cold\"\nstart_command = [\"echo\", \"demo: would start {name} now (type: start a / start b)\"]\n".to_owned(),
        _ => String::new(),
    };
    format!(
        r#"[proxy]
listen = "{listen}"
[admin]
listen = "{admin_listen}"
[health]
path = "/login"
interval = "500ms"
timeout = "300ms"
rise = 2
fall = 3
[failover]
failback = "never"
state_file = "off"
{backends}"#,
        backends = masters
            .iter()
            .map(|m| format!(
                "[[backend]]\nname = \"{}\"\nurl = \"{}\"\n{promotion}",
                m.name(),
                m.url()
            ))
            .collect::<String>()
    )
}

fn instructions(
    masters: &[SampleMaster],
    scheme: &str,
    proxy: SocketAddr,
    admin: SocketAddr,
) -> String {
    format!(
        r#"
jenkins-ha-proxy demo
=====================
Two sample Jenkins masters run on loopback behind the proxy:
  master-a  {a}   (first in the pool: active when healthy)
  master-b  {b}   (standby)
  proxy     {scheme}://{proxy}/   <- send requests here
  admin     http://{admin}/status

Health checks every 500ms; a master is down after 3 failed checks and up again
after 2 passed ones. Failback is "never": a recovered master stays standby.

In another terminal, watch which master answers:
  while true; do curl -s {scheme}://{proxy}/; sleep 0.5; done
and the pool (table, with the reason of every failover):
  jenkins-ha-proxy status --admin http://{admin}

Then type a command here and press Enter:
  kill a | kill b     stop a master like a crashed process
  start a | start b   bring it back
  sick a | sick b     its health check answers 503 (Jenkins starting up)
  well a | well b     its health check answers 200 again
  status              print the pool
  quit                stop the demo (Ctrl-C works too)
"#,
        a = masters[0].url(),
        b = masters[1].url(),
    )
}

/// Reads commands from stdin until `quit` or end of input (then waits for Ctrl-C).
async fn commands(masters: &[SampleMaster], admin_url: &str) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            ["quit" | "exit" | "q"] => return,
            ["status"] => {
                if let Err(error) = super::status::print(admin_url, None, false).await {
                    println!("status: {error:#}");
                }
            }
            [verb, which] => match pick(masters, which) {
                Some(master) => act(master, verb).await,
                None => println!("no master {which:?}: use a or b (or c)"),
            },
            ["load", which, numbers @ ..] if masters.len() > 2 => {
                super::demo_active::set_load(pick(masters, which), numbers)
            }
            _ => println!("commands: kill a|b, start a|b, sick a|b, well a|b, status, quit"),
        }
    }
    // No more input (stdin closed): keep serving until a signal.
    std::future::pending::<()>().await;
}

fn pick<'a>(masters: &'a [SampleMaster], which: &str) -> Option<&'a SampleMaster> {
    let name = which.strip_prefix("master-").unwrap_or(which);
    masters
        .iter()
        .find(|m| m.name().strip_prefix("master-") == Some(name))
}

async fn act(master: &SampleMaster, verb: &str) {
    let name = master.name();
    match verb {
        "kill" => {
            master.stop().await;
            println!("{name} stopped: watch the proxy move traffic away from it");
        }
        "start" => match master.restart().await {
            Ok(()) => println!("{name} started again: it rises after 2 passed checks"),
            Err(error) => println!("cannot restart {name}: {error}"),
        },
        "sick" => {
            master.set_healthy(false);
            println!("{name}'s health check now answers 503");
        }
        "well" => {
            master.set_healthy(true);
            println!("{name}'s health check answers 200 again");
        }
        _ => println!("unknown command {verb:?}: use kill, start, sick, well"),
    }
}
