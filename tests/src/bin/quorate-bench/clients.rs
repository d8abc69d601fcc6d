//! Client mode at scale: CLIENTS client agents (one address each) on a 3-member
//! cluster, next to the same cluster without them, in the same run, the order alternating
//! between rounds. Each side measures:
//! - formation: from starting the processes to the three members ready. The client token only
//!   exists once the cluster has formed, so on the "with" side the client agents are given the
//!   join token (which a client may hold) and are started at the same moment as the members:
//!   they ask for the directory from the first second, and the clock runs until the members
//!   are ready; the time until every client is ready is reported beside it;
//! - clients ready after the token: `token create --client`, every member holding it, then the
//!   client agents restarted from empty state and files with the client token; the clock runs
//!   from their start until every one is ready (certificate written, an endpoint answering);
//! - traffic over a steady window: each member's gossip datagrams received and sent (its
//!   counters, which include the directory asks and answers), each client's directory traffic
//!   (its /status), and, when a packet socket can be opened (root), the UDP payload bytes on
//!   the gossip port captured with a packet socket, split into member-to-member gossip and the
//!   client channel; CPU time of the member agents and of their etcd over the window;
//! - memory: VmRSS of the member agents, their etcd and the client agents;
//! - failure detection: `kill -9` of member n3's agent and its etcd, then the time until both
//!   other members' gossip view has n3 down (and first suspected).
//!
//! Hosts are loopback addresses of one /24 (the harness's default), or with `netns` one network
//! namespace each on a bridge. On loopback every TCP connection an agent opens comes from
//! 127.0.0.1 (the local route's preferred source), so the issuer's per-address rate limit of
//! agent API connections sees all client agents as one host; in namespaces each has its own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use quorate::client::ClientStatus;
use quorate::config::{ClientSection, Mode};
use quorate::gossip::PeerState;
use quorate_tests::{wait_for, Agent, Cluster, NetnsLab};

mod capture;
mod procfs;
mod report;
use capture::{split, Capture};
use procfs::{child_named, cpu_time, rss_kib};
pub use report::report;

const MEMBERS: usize = 3;
/// Deadline for the members to form, and for every client to be ready, on a loaded 2-core
/// machine with up to 250 client agents.
const TIMEOUT: Duration = Duration::from_secs(180);
/// Settling time after the last client is ready (or formation), before the window.
const SETTLE: Duration = Duration::from_secs(5);
const GOSSIP_PORT: u16 = 7946;

/// Counters of one member over the window.
#[derive(Debug, Clone, Default)]
pub struct MemberWindow {
    pub received: u64,
    pub sent: u64,
    pub client_answers: u64,
    /// Agent CPU time over the window.
    pub cpu: Duration,
    /// Its etcd's CPU time over the window.
    pub etcd_cpu: Duration,
}

/// One client's directory traffic over the window.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientWindow {
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    pub datagrams_received: u64,
    pub bytes_received: u64,
}

/// UDP payload bytes and datagrams on the gossip port, captured on `lo`.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    /// Per member: (datagrams, bytes) sent to / received from other members.
    pub swim_sent: Vec<(u64, u64)>,
    pub swim_received: Vec<(u64, u64)>,
    /// Per member: (datagrams, bytes) of the client channel: asks received, answers sent.
    pub asks_received: Vec<(u64, u64)>,
    pub answers_sent: Vec<(u64, u64)>,
    /// Datagrams the kernel dropped from the capture socket (its buffer was full).
    pub dropped: u64,
}

/// One side of a round.
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub formation: Duration,
    /// Every client ready, from the common start (join token).
    pub clients_cold: Option<Duration>,
    /// Every client ready, from its start with the client token.
    pub clients_ready: Option<Duration>,
    pub window: Duration,
    pub members: Vec<MemberWindow>,
    pub client_traffic: Vec<ClientWindow>,
    pub captured: Option<Captured>,
    /// VmRSS in KiB.
    pub member_rss: Vec<u64>,
    pub etcd_rss: Vec<u64>,
    pub client_rss: Vec<u64>,
    pub suspected: Option<Duration>,
    pub detected: Duration,
    /// Member counters over the whole side (certificates issued, API refusals, drops).
    pub counters: Vec<(String, u64)>,
    /// Why clients were not ready in time, if they were not (one line per distinct reason).
    pub not_ready: Vec<String>,
    /// The clients' readiness during the window, and after n3 was killed.
    pub steady: Option<AfterKill>,
    pub after_kill: Option<AfterKill>,
}

/// How long the clients are watched after a member is killed: three of their endpoint checks.
const AFTER_KILL: Duration = Duration::from_secs(30);

/// The clients' readiness over a time (the steady window, or the [`AFTER_KILL`] after a member
/// was killed), polled every 250 ms.
#[derive(Debug, Clone, Default)]
pub struct AfterKill {
    /// Clients seen not ready at least once.
    pub ever: usize,
    pub polls: u64,
    pub polls_not_ready: u64,
    /// Not ready in the last poll.
    pub at_end: usize,
    pub first_not_ready: Option<Duration>,
    /// What the clients said when first seen not ready (counted).
    pub reasons: Vec<String>,
}

pub struct Round {
    pub without: Side,
    pub with: Side,
    pub order: &'static str,
}

/// Where the hosts are: loopback addresses of one /24 (the harness's default), or one network
/// namespace per host on a bridge, where each host's TCP connections come from its own
/// address (on loopback they all come from 127.0.0.1, see docs/benchmarks.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    Loopback,
    Netns,
}

/// One round: both sides, `with` first when `with_first`.
pub fn round(clients: usize, window: Duration, with_first: bool, net: Net) -> Round {
    if with_first {
        let with = side(clients, window, net);
        let without = side(0, window, net);
        Round {
            without,
            with,
            order: "with, without",
        }
    } else {
        let without = side(0, window, net);
        let with = side(clients, window, net);
        Round {
            without,
            with,
            order: "without, with",
        }
    }
}

fn client_status(a: &Agent) -> Result<ClientStatus, String> {
    let (code, body) = a.get("/status")?;
    if code != 200 {
        return Err(format!("/status answered {code}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("not a client's status: {e}"))
}

/// The config of client agent `i`: its own address, the given token, every member to ask.
fn client_config(
    c: &Cluster,
    lab: Option<&NetnsLab>,
    i: usize,
    token: &str,
) -> quorate::config::ConfigBuilder {
    let addr = |i: usize| match lab {
        Some(lab) => lab.addr(i),
        None => c.subnet.host(i as u8 + 1),
    };
    let members: Vec<String> = (0..MEMBERS).map(|m| addr(m).to_string()).collect();
    let dir = files_dir(c, i);
    c.config(i)
        .advertise(addr(i))
        .token(token)
        .seed(false)
        .join(members)
        .with(move |cfg| {
            cfg.mode = Mode::Client;
            cfg.client = Some(ClientSection {
                name: Some(format!("bench-client-{i}")),
                dir: Some(dir),
                on_change: None,
                role: None,
            });
        })
}

fn files_dir(c: &Cluster, i: usize) -> PathBuf {
    c.root.path().join(format!("n{}", i + 1)).join("files")
}

fn check_alive(c: &Cluster) {
    for a in &c.agents {
        assert!(!a.exited(), "{} exited:\n{}", a.name, a.log_tail(30));
    }
}

/// Polls the members (every 10 ms) and the clients (in a thread of their own) from `start`:
/// (members ready, every client ready or None after TIMEOUT with the reasons).
fn wait_formation(
    c: &Cluster,
    clients: &[usize],
    start: Instant,
) -> (Duration, Option<Duration>, Vec<String>) {
    std::thread::scope(|s| {
        let clients_thread = s.spawn(|| wait_clients(c, clients, start));
        let mut ready = [false; MEMBERS];
        while ready.iter().any(|r| !r) {
            assert!(
                start.elapsed() < TIMEOUT,
                "members not ready in {TIMEOUT:?}:\n{}",
                c.logs(20)
            );
            for (i, r) in ready.iter_mut().enumerate() {
                let a = &c.agents[i];
                assert!(!a.exited(), "{} exited:\n{}", a.name, a.log_tail(20));
                *r = *r || a.ready().is_ok();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let formation = start.elapsed();
        let (all, why) = clients_thread.join().expect("client poller");
        (formation, all, why)
    })
}

/// Waits until every client in `clients` is ready: the time from `start`, or None after
/// TIMEOUT with the distinct reasons of those that are not.
fn wait_clients(c: &Cluster, clients: &[usize], start: Instant) -> (Option<Duration>, Vec<String>) {
    let mut pending: Vec<usize> = clients.to_vec();
    while !pending.is_empty() {
        if start.elapsed() > TIMEOUT {
            let mut why: Vec<String> = pending
                .iter()
                .map(|&i| match client_status(&c.agents[i]) {
                    Ok(s) => s.message,
                    Err(e) => e,
                })
                .collect();
            why.sort();
            let mut counted: Vec<String> = Vec::new();
            for w in why.chunk_by(|a, b| a == b) {
                counted.push(format!("{} client(s): {}", w.len(), w[0]));
            }
            return (None, counted);
        }
        pending.retain(|&i| {
            let a = &c.agents[i];
            assert!(!a.exited(), "{} exited:\n{}", a.name, a.log_tail(20));
            a.ready().is_err()
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    (Some(start.elapsed()), Vec::new())
}

fn side(clients: usize, window: Duration, net: Net) -> Side {
    // The lab outlives the cluster (dropped after it).
    let lab = (net == Net::Netns).then(|| NetnsLab::create(MEMBERS + clients));
    let mut c = match &lab {
        Some(lab) => Cluster::in_netns(lab, MEMBERS),
        None => Cluster::new(MEMBERS),
    };
    let client_ix: Vec<usize> = (0..clients)
        .map(|_| {
            let token = c.token.clone();
            let i = c.agents.len();
            let cfg = client_config(&c, lab.as_ref(), i, &token);
            let i = c.add_agent(move |_, _| cfg.clone());
            if let Some(lab) = &lab {
                c.agents[i].addr = lab.addr(i);
                c.agents[i].netns = Some(lab.ns(i));
            }
            i
        })
        .collect();
    let mut out = Side {
        window,
        ..Side::default()
    };

    // Formation, with the clients (join token) started at the same moment as the members.
    let start = Instant::now();
    c.start_all();
    let (formation, cold, why) = wait_formation(&c, &client_ix, start);
    out.formation = formation;
    out.clients_cold = cold;
    out.not_ready
        .extend(why.into_iter().map(|w| format!("join token: {w}")));
    let formed = Instant::now();

    if clients > 0 {
        // The client token, held by every member; then the clients from scratch with it.
        let o = c.agents[0].cli(&["token", "create", "--client"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let client_token = String::from_utf8_lossy(&o.stdout).trim().to_owned();
        wait_for("every member to hold the client token", TIMEOUT, || {
            for a in &c.agents[..MEMBERS] {
                let o = a.cli(&["token", "show", "--client"]);
                if String::from_utf8_lossy(&o.stdout).trim() != client_token {
                    return Err(format!("{} has not read it yet", a.name));
                }
            }
            Ok(())
        });
        for &i in &client_ix {
            c.agents[i].signal_stop();
        }
        for &i in &client_ix {
            let name = c.agents[i].name.clone();
            assert!(
                c.agents[i].wait_stopped(Duration::from_secs(30)),
                "{name} did not stop"
            );
            for dir in [c.agents[i].state_dir(), files_dir(&c, i)] {
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).expect("wipe client dir");
                }
            }
            let cfg = client_config(&c, lab.as_ref(), i, &client_token);
            c.agents[i].write_config(&cfg);
        }
        let start = Instant::now();
        for &i in &client_ix {
            c.agents[i].start();
        }
        let (ready, why) = wait_clients(&c, &client_ix, start);
        out.clients_ready = ready;
        out.not_ready
            .extend(why.into_iter().map(|w| format!("client token: {w}")));
    }
    // Both sides start their window at least SETTLE after the last event, and on a cluster
    // at least 6 s old.
    std::thread::sleep(SETTLE.max(Duration::from_secs(6).saturating_sub(formed.elapsed())));
    check_alive(&c);

    // The steady window.
    let before_members: Vec<_> = (0..MEMBERS).map(|i| member_sample(&c.agents[i])).collect();
    let before_clients: Vec<_> = client_ix
        .iter()
        .map(|&i| client_status(&c.agents[i]).ok())
        .collect();
    let capture = Capture::start(&c, net);
    let t0 = Instant::now();
    if client_ix.is_empty() {
        std::thread::sleep(window);
    } else {
        out.steady = Some(watch_clients(&c, &client_ix, window));
    }
    let captured = capture.map(|cap| cap.stop());
    let after_members: Vec<_> = (0..MEMBERS).map(|i| member_sample(&c.agents[i])).collect();
    let after_clients: Vec<_> = client_ix
        .iter()
        .map(|&i| client_status(&c.agents[i]).ok())
        .collect();
    out.window = t0.elapsed();
    for (b, a) in before_members.iter().zip(&after_members) {
        let d = |k: &str| a.0.get(k).copied().unwrap_or(0) - b.0.get(k).copied().unwrap_or(0);
        out.members.push(MemberWindow {
            received: d("gossip_datagrams_received"),
            sent: d("gossip_datagrams_sent"),
            client_answers: d("gossip_client_answers"),
            cpu: a.1.saturating_sub(b.1),
            etcd_cpu: a.2.saturating_sub(b.2),
        });
    }
    for (b, a) in before_clients.iter().zip(&after_clients) {
        if let (Some(b), Some(a)) = (b, a) {
            out.client_traffic.push(ClientWindow {
                datagrams_sent: a.datagrams_sent - b.datagrams_sent,
                bytes_sent: a.bytes_sent - b.bytes_sent,
                datagrams_received: a.datagrams_received - b.datagrams_received,
                bytes_received: a.bytes_received - b.bytes_received,
            });
        }
    }
    out.captured = match captured {
        Some(Ok(packets)) => Some(split(&c, clients, &packets.0, packets.1)),
        Some(Err(e)) => {
            eprintln!("packet capture failed: {e}");
            None
        }
        None => None,
    };

    // Memory.
    for a in &c.agents[..MEMBERS] {
        let pid = a.pid().expect("member running");
        out.member_rss.push(rss_kib(pid).unwrap_or(0));
        out.etcd_rss
            .push(child_named(pid, "etcd").and_then(rss_kib).unwrap_or(0));
    }
    for &i in &client_ix {
        if let Some(r) = c.agents[i].pid().and_then(rss_kib) {
            out.client_rss.push(r);
        }
    }
    let mut totals: HashMap<String, u64> = HashMap::new();
    for a in &c.agents[..MEMBERS] {
        if let Ok(s) = a.status() {
            for (k, v) in s.counters {
                *totals.entry(k).or_default() += v;
            }
        }
    }
    for k in [
        "certificates_issued",
        "api_requests",
        "api_refused_busy",
        "api_refused_rate",
        "api_rejected_identity",
        "gossip_dropped_unauthenticated",
        "gossip_dropped_malformed",
        "gossip_client_answers",
    ] {
        out.counters
            .push((k.to_owned(), totals.get(k).copied().unwrap_or(0)));
    }

    // Failure detection: n3's agent and its etcd killed, n1 and n2 to see it down.
    let victim = MEMBERS - 1;
    let victim_name = c.agents[victim].name.clone();
    // Its etcd is killed by pid at the same moment, as a host that loses power.
    let victim_etcd = c.agents[victim]
        .pid()
        .and_then(|p| child_named(p, "etcd"))
        .expect("n3's etcd");
    let start = Instant::now();
    c.agents[victim].kill9();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim_etcd as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let ((suspected, detected), after_kill) = std::thread::scope(|s| {
        let c = &c;
        let watcher =
            (!client_ix.is_empty()).then(|| s.spawn(|| watch_clients(c, &client_ix, AFTER_KILL)));
        let detection = detect(c, &victim_name, start);
        (
            detection,
            watcher.map(|w| w.join().expect("client watcher")),
        )
    });
    out.suspected = suspected;
    out.detected = detected;
    out.after_kill = after_kill;
    c.stop_all();
    out
}

/// Polls n1 and n2 until both have `victim` down: (both suspected it, both have it down),
/// from `start`.
fn detect(c: &Cluster, victim_name: &str, start: Instant) -> (Option<Duration>, Duration) {
    let mut suspected: [Option<Duration>; MEMBERS - 1] = [None; MEMBERS - 1];
    let mut down: [Option<Duration>; MEMBERS - 1] = [None; MEMBERS - 1];
    while down.iter().any(Option::is_none) {
        assert!(
            start.elapsed() < TIMEOUT,
            "{victim_name} not seen down in {TIMEOUT:?}:\n{}",
            c.logs(20)
        );
        for o in 0..MEMBERS - 1 {
            if down[o].is_some() {
                continue;
            }
            let Ok(s) = c.agents[o].status() else {
                continue;
            };
            let state = s
                .gossip
                .iter()
                .find(|g| g.name == victim_name)
                .map(|g| g.state);
            let now = start.elapsed();
            match state {
                Some(PeerState::Suspect) => {
                    suspected[o].get_or_insert(now);
                }
                Some(PeerState::Down) | None => {
                    suspected[o].get_or_insert(now);
                    down[o] = Some(now);
                }
                Some(PeerState::Alive) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (
        suspected.iter().flatten().copied().max(),
        down.iter().flatten().copied().max().unwrap_or_default(),
    )
}

/// Watches the clients' readiness for `how_long` after a member was killed.
fn watch_clients(c: &Cluster, clients: &[usize], how_long: Duration) -> AfterKill {
    let start = Instant::now();
    let mut out = AfterKill::default();
    let mut ever = vec![false; clients.len()];
    let mut reasons: Vec<String> = Vec::new();
    let mut last_round_not_ready = 0;
    while start.elapsed() < how_long {
        last_round_not_ready = 0;
        for (k, &i) in clients.iter().enumerate() {
            out.polls += 1;
            if c.agents[i].ready().is_err() {
                out.polls_not_ready += 1;
                last_round_not_ready += 1;
                if !ever[k] {
                    ever[k] = true;
                    out.first_not_ready.get_or_insert(start.elapsed());
                    if let Ok(st) = client_status(&c.agents[i]) {
                        reasons.push(st.message);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    out.ever = ever.iter().filter(|e| **e).count();
    out.at_end = last_round_not_ready;
    reasons.sort();
    for w in reasons.chunk_by(|a, b| a == b) {
        out.reasons.push(format!("{} client(s): {}", w.len(), w[0]));
    }
    out
}

/// A member's counters, its agent's CPU time (user + system) and its etcd's.
fn member_sample(a: &Agent) -> (std::collections::BTreeMap<String, u64>, Duration, Duration) {
    let counters = wait_for(&format!("{}'s status", a.name), TIMEOUT, || {
        a.status().map(|s| s.counters)
    });
    let pid = a.pid();
    (
        counters,
        pid.and_then(cpu_time).unwrap_or_default(),
        pid.and_then(|p| child_named(p, "etcd"))
            .and_then(cpu_time)
            .unwrap_or_default(),
    )
}

/// Checks the arguments: members and clients must fit the /24.
pub fn check(clients: usize) {
    assert!(
        (1..=250).contains(&clients),
        "CLIENTS must be 1 to 250 (one loopback address each, next to the 3 members)"
    );
}
