//! A `quorate leave --force` that has to wait (etcd refuses the removal with "unhealthy
//! cluster" while another voter is frozen) must neither starve the systemd watchdog nor hold up
//! a shutdown: the agent plays systemd's protocol against a socket this test listens on, keeps
//! sending WATCHDOG=1 while the leave waits, and SIGTERM ends it within
//! `etcd.stop_timeout` + 5 s with every task stopped cleanly.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use quorate::gossip::PeerState;
use quorate_tests::cluster::{ClientCert, FORM_TIMEOUT};
use quorate_tests::{wait_for, Cluster};

/// The watchdog interval the agent is given (it pings at half of it).
const WATCHDOG: Duration = Duration::from_secs(4);
/// etcd.stop_timeout's default.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether n1's etcd considers the peer with member ID `remote` (hex) inactive (its rafthttp
/// stream timed out), from etcd's own `etcd_network_active_peers` gauge.
fn peer_inactive(c: &Cluster, cert: &ClientCert, remote: &str) -> Result<(), String> {
    let url = format!("{}/metrics", c.client_url(0));
    let out = Command::new("curl")
        .args(["-s", "--max-time", "3", "--cacert"])
        .arg(&cert.ca)
        .arg("--cert")
        .arg(&cert.cert)
        .arg("--key")
        .arg(&cert.key)
        .arg(&url)
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let remote = format!("Remote=\"{remote}\"");
    let line = text
        .lines()
        .find(|l| l.starts_with("etcd_network_active_peers") && l.contains(&remote))
        .ok_or_else(|| format!("no etcd_network_active_peers line for {remote} at {url}"))?;
    if line.trim_end().ends_with(" 0") {
        Ok(())
    } else {
        Err(format!("still active: {line}"))
    }
}

#[test]
fn a_waiting_leave_keeps_the_watchdog_fed_and_sigterm_ends_it_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    let mut c = Cluster::new(3);
    c.agents[0].env = vec![
        (
            "NOTIFY_SOCKET".into(),
            socket_path.to_string_lossy().into_owned(),
        ),
        ("WATCHDOG_USEC".into(), WATCHDOG.as_micros().to_string()),
    ];
    // Record every WATCHDOG=1 the agent sends, with its arrival time. The socket is read from
    // the start, as systemd does: a full queue would block the agent's notifier.
    let pings: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let stop_listening = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listener = {
        let (pings, stop) = (pings.clone(), stop_listening.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let msg = String::from_utf8_lossy(&buf[..n]);
                    if msg.lines().any(|l| l == "WATCHDOG=1") {
                        pings.lock().unwrap().push(Instant::now());
                    }
                }
            }
        })
    };
    c.start_and_wait();
    let cert = c.client_cert(0, "leave-shutdown");
    wait_for(
        "the agent to feed the watchdog",
        FORM_TIMEOUT,
        || match pings.lock().unwrap().len() {
            0 => Err("no WATCHDOG=1 yet".to_owned()),
            _ => Ok(()),
        },
    );

    // Freeze host n2 (agent and etcd): its member stays in the cluster, unreachable.
    let s2 = c.agents[1].status().unwrap();
    let n2_member = s2.etcd.member_id.expect("n2's member id");
    let frozen: Vec<u32> = [c.agents[1].pid(), s2.etcd.pid]
        .into_iter()
        .flatten()
        .collect();
    for pid in &frozen {
        kill(Pid::from_raw(*pid as i32), Signal::SIGSTOP).unwrap();
    }
    let thaw = || {
        for pid in &frozen {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGCONT);
        }
    };
    // Until n1's etcd counts n2 as inactive, it would let n1 remove itself.
    wait_for("n1's etcd to count n2 inactive", FORM_TIMEOUT, || {
        peer_inactive(&c, &cert, &n2_member)
    });
    wait_for("n1 to see n2 down in gossip", FORM_TIMEOUT, || {
        let s = c.agents[0].status()?;
        match s.gossip.iter().find(|m| m.name == "n2") {
            Some(m) if m.state == PeerState::Down => Ok(()),
            Some(m) => Err(format!("n2 is {:?}", m.state)),
            None => Ok(()),
        }
    });

    // n1 leaves by force; etcd refuses ("unhealthy cluster") and the agent waits it out.
    let leave = {
        let config = c.agents[0].config_path();
        std::thread::spawn(move || {
            Command::new(quorate_tests::quorate_bin())
                .arg("--config")
                .arg(config)
                .args(["leave", "--force"])
                .output()
                .expect("run quorate leave")
        })
    };
    wait_for("the leave to wait on etcd's refusal", FORM_TIMEOUT, || {
        let log = c.agents[0].log();
        if log.contains("waiting to remove this member") {
            Ok(())
        } else if log.contains("left the cluster") {
            Err("the leave did not wait: etcd removed the member".to_owned())
        } else {
            Err("not waiting yet".to_owned())
        }
    });
    let waiting_since = Instant::now();
    // Two watchdog intervals of waiting, then check the pings kept coming.
    wait_for("two watchdog intervals of waiting", FORM_TIMEOUT, || {
        if waiting_since.elapsed() > 2 * WATCHDOG {
            Ok(())
        } else {
            Err("still early".to_owned())
        }
    });
    let during: Vec<Instant> = pings
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|t| *t >= waiting_since)
        .collect();
    let log = c.agents[0].log();
    assert!(
        !log.contains("not feeding the watchdog"),
        "a loop went stale while the leave waited:\n{}",
        c.agents[0].log_tail(40)
    );
    assert!(
        during.len() >= 2,
        "only {} WATCHDOG=1 during {:?} of waiting",
        during.len(),
        waiting_since.elapsed()
    );
    assert!(
        !log.contains("left the cluster"),
        "the leave ended before the shutdown"
    );

    // SIGTERM while the leave still waits.
    let term_at = Instant::now();
    c.agents[0].signal_stop();
    let bound = STOP_TIMEOUT + Duration::from_secs(5);
    let stopped = c.agents[0].wait_stopped(bound + Duration::from_secs(5));
    let took = term_at.elapsed();
    thaw();
    stop_listening.store(true, std::sync::atomic::Ordering::Relaxed);
    listener.join().unwrap();
    let out = leave.join().unwrap();
    assert!(stopped, "the agent did not exit after SIGTERM");
    assert!(
        took <= bound,
        "the agent took {took:?} to stop (bound: etcd.stop_timeout + 5 s = {bound:?})"
    );
    let log = c.agents[0].log();
    assert!(
        !log.contains("some tasks did not stop in time"),
        "a task outlived the shutdown:\n{}",
        c.agents[0].log_tail(40)
    );
    assert!(log.contains("stopped"), "{}", c.agents[0].log_tail(20));
    assert!(
        !out.status.success(),
        "the interrupted leave reported success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Nothing was removed: n1 is still a member.
    let list = c.etcdctl_ok(2, &cert, &["member", "list"]);
    assert!(list.contains("n1"), "{list}");
}
