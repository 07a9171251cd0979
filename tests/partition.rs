//! Partitions, made with a network namespace on this machine: a worker runs in a namespace of
//! its own, joined to the host by a veth pair (private 10.x addresses that exist only here), and
//! the link is taken down mid-shard. The worker loses its lease after the TTL and stops its
//! attempt; the coordinator is SIGKILLed and restarted behind the partition without changing
//! anything committed; the link comes back and the worker rejoins and commits again; the output
//! is a 1-worker run's. Needs root (`ip netns`); elsewhere it says why and skips, unless
//! LEHR_REQUIRE_NETNS is set (scripts/test.sh sets it as root).

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// A network namespace with a veth link to the host: `HOST_IP` on the host side, `NS_IP`
/// inside. Removed on drop.
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Netns {
    fn create() -> Result<Netns, String> {
        let id = std::process::id() % 250;
        let ns = Netns {
            name: format!("lehr-part-{}", std::process::id()),
            host_if: format!("lp{}h", std::process::id() % 100_000),
            host_ip: format!("10.237.{id}.1"),
        };
        let peer = format!("lp{}n", std::process::id() % 100_000);
        let ns_ip = format!("10.237.{id}.2/30");
        ip(&["netns", "add", &ns.name])?;
        ip(&["link", "add", &ns.host_if, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &peer, "netns", &ns.name])?;
        ip(&["addr", "add", &format!("{}/30", ns.host_ip), "dev", &ns.host_if])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        ip(&["netns", "exec", &ns.name, "ip", "addr", "add", &ns_ip, "dev", &peer])?;
        ip(&["netns", "exec", &ns.name, "ip", "link", "set", &peer, "up"])?;
        ip(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn cut(&self) {
        ip(&["link", "set", &self.host_if, "down"]).unwrap();
    }

    fn heal(&self) {
        ip(&["link", "set", &self.host_if, "up"]).unwrap();
    }

    /// `lehr ARGS` inside the namespace.
    fn lehr(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, env!("CARGO_BIN_EXE_lehr")]);
        c.env_remove("LEHR_COORDINATOR").env_remove("LEHR_TOKEN").env_remove("LEHR_TLS_CA");
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn netns_or_skip() -> Option<Netns> {
    match Netns::create() {
        Ok(ns) => Some(ns),
        Err(why) => {
            assert!(std::env::var_os("LEHR_REQUIRE_NETNS").is_none(), "{why}, and LEHR_REQUIRE_NETNS is set");
            eprintln!("skipping: cannot make a network namespace ({why}); run as root with iproute2");
            None
        }
    }
}

/// The ids a worker name has had (a worker that lost its registration registers again).
fn ids_of(url: &str, name: &str) -> BTreeSet<String> {
    workers(url)
        .as_array()
        .map(|ws| {
            ws.iter().filter(|w| w["name"] == name).map(|w| w["worker_id"].as_str().unwrap().to_string()).collect()
        })
        .unwrap_or_default()
}

fn committed(status: &Value) -> Vec<Value> {
    status["tasks"].as_array().unwrap().iter().filter(|t| t["state"] == "committed").cloned().collect()
}

#[test]
fn a_partitioned_worker_loses_its_lease_stops_and_rejoins_and_nothing_committed_changes() {
    let Some(ns) = netns_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The repo's sample in 160 KiB ranges, whatever ../shared holds, slowed per KiB: every shard
    // lasts as long whatever its documents' sizes (a range holds 11 to 173 of them), so the cut
    // lands inside one however the documents fall.
    let (inputs, split) = (sample_corpus_inputs(), "160KiB");
    let reference = crash::reference_run_of(dir.path(), &inputs, split);

    let port = free_port();
    let local = format!("http://127.0.0.1:{port}");
    let state = dir.path().join("state");
    let serve = |state: &std::path::Path| {
        Proc(
            lehr()
                .args(["coordinator", "--state"])
                .arg(state)
                .args(["--listen", &format!("0.0.0.0:{port}"), "--http", "none", "--insecure", "--lease-ttl", "3s"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut coordinator = serve(&state);
    wait_for_coordinator(&local);
    // One worker on the host, slow enough that shards remain after the partition heals (1.6 s
    // a shard, some 40 s for the corpus), and one inside the namespace, dialling the host's end
    // of the link, ten times slower: 16 s a shard, so the cut, the TTL and the worker noticing
    // (about 5 s) fit inside its first one, and one after the heal still commits in half a minute.
    let _host = Proc(
        lehr()
            .args(["worker", "--coordinator", &local, "--name", "w-host"])
            .env("LEHR_FAULT_SLOW_KIB_US", "10000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ns_log = dir.path().join("w-ns.log");
    let _inside = Proc(
        ns.lehr()
            .args(["worker", "--coordinator", &format!("http://{}:{port}", ns.host_ip), "--name", "w-ns"])
            .env("LEHR_FAULT_SLOW_KIB_US", "100000")
            .env("LEHR_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&ns_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let out = dir.path().join("partitioned");
    let spec = write_spec(dir.path(), "partitioned", &inputs, &out, split, "");
    let job = submit(&local, &spec);

    let victim =
        wait_until("w-ns to be in a shard", Duration::from_secs(60), || crash::busy_task_on(&local, &job, "w-ns"));
    ns.cut();
    // The coordinator expires the cut-off worker's lease after the TTL ...
    let task_of = |status: &Value| status["tasks"].as_array().unwrap().iter().find(|t| t["task_id"] == victim).cloned();
    wait_until("the partitioned lease to expire", Duration::from_secs(30), || {
        let t = task_of(&job_status(&local, &job)?)?;
        t["attempt_log"].as_array()?.iter().any(|a| a["outcome"] == "expired").then_some(())
    });
    // ... and the worker, hearing nothing for a TTL, stops the attempt on its own.
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&ns_log).unwrap_or_default().contains("the lease is lost") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the partitioned worker did not stop its attempt; its log:\n{}",
            std::fs::read_to_string(&ns_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A coordinator restart behind the partition changes nothing committed.
    let before = committed(&job_status(&local, &job).unwrap());
    coordinator.sigkill();
    let _coordinator = serve(&state);
    let restarted = wait_until("the restarted coordinator", Duration::from_secs(30), || job_status(&local, &job));
    crash::assert_committed_kept(&before, &restarted, "a restart behind the partition");

    // The link returns: the worker gets through again and commits shards.
    ns.heal();
    let healed = committed(&restarted).len();
    wait_until("the rejoined worker to commit a shard", Duration::from_secs(120), || {
        let s = job_status(&local, &job)?;
        let ids = ids_of(&local, "w-ns");
        committed(&s)
            .iter()
            .any(|t| {
                let log = t["attempt_log"].as_array().unwrap();
                let last = log.last().unwrap();
                last["outcome"] == "committed"
                    && ids.contains(last["worker_id"].as_str().unwrap_or(""))
                    && !before.iter().any(|b| b["task_id"] == t["task_id"])
            })
            .then_some(())
    });
    let status = wait_for_end(&local, &job);
    assert_eq!(job_state(&status), "succeeded", "{status:#}");
    assert!(committed(&status).len() > healed);
    let t = task_of(&status).unwrap();
    let outcomes: Vec<&str> =
        t["attempt_log"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes.first(), Some(&"expired"), "the cut-off attempt expired: {outcomes:?}");
    assert_eq!(outcomes.last(), Some(&"committed"), "{outcomes:?}");
    assert_eq!(checksums(&out), reference, "a partition must not change the output");
}
