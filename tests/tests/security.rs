//! Nothing joins without the token: an agent with another token is not admitted to gossip and
//! gets no certificate; unauthenticated datagrams and API requests are dropped and counted.

use std::net::UdpSocket;

use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{wait_for, Cluster};

fn counter(c: &Cluster, i: usize, name: &str) -> u64 {
    c.agents[i].status().unwrap().counters[name]
}

#[test]
fn wrong_token_gets_nothing() {
    let mut c = Cluster::new(3);
    c.start_all();
    c.wait_ready(FORM_TIMEOUT);

    // A fourth agent with another token, joining the seed.
    let intruder_token = quorate::token::JoinToken::generate();
    let i = c.add_agent(|_, b| b.token(intruder_token.expose()));
    c.agents[i].start();
    wait_for(
        "the seed to drop the intruder's datagrams",
        FORM_TIMEOUT,
        || {
            let n = counter(&c, 0, "gossip_dropped_unauthenticated");
            if n >= 3 {
                Ok(())
            } else {
                Err(format!("{n} dropped"))
            }
        },
    );
    // Garbage and truncated datagrams are dropped and counted too.
    let before = counter(&c, 0, "gossip_dropped_unauthenticated");
    let sock = UdpSocket::bind((c.subnet.host(200), 0)).unwrap();
    for payload in [&b"hello"[..], &[0u8; 600], &[1u8; 29]] {
        sock.send_to(payload, (c.agents[0].addr, 7946)).unwrap();
    }
    wait_for("garbage to be counted", FORM_TIMEOUT, || {
        let n = counter(&c, 0, "gossip_dropped_unauthenticated");
        if n >= before + 3 {
            Ok(())
        } else {
            Err(format!("{n} dropped, {before} before"))
        }
    });

    for a in &c.agents[..3] {
        let s = a.status().unwrap();
        assert!(
            s.gossip.iter().all(|m| m.name != c.agents[i].name),
            "{} admitted the intruder: {:?}",
            a.name,
            s.gossip
        );
        assert_eq!(s.counters["gossip_dropped_malformed"], 0, "{}", a.name);
    }
    let s = c.agents[i].status().unwrap();
    assert!(
        s.gossip.is_empty(),
        "the intruder sees members: {:?}",
        s.gossip
    );
    assert!(!s.ready && s.ca_hash.is_none(), "{s:?}");
    assert!(!c.agents[i].state_dir().join("pki/node.pem").exists());

    // A certificate request with a proof made from another token is refused and counted,
    // and nothing is issued.
    let issued = counter(&c, 0, "certificates_issued");
    let bogus = c.agents[1].dir.join("bogus.toml");
    std::fs::write(&bogus, c.config(1).token(intruder_token.expose()).to_toml()).unwrap();
    let out = c.root.path().join("bogus-cert");
    let o = std::process::Command::new(quorate_tests::quorate_bin())
        .args([
            "--config",
            bogus.to_str().unwrap(),
            "cert",
            "client",
            "mallory",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a wrong token got a certificate");
    assert!(
        stderr.contains("401") && stderr.contains("token"),
        "{stderr}"
    );
    assert!(!out.join("mallory.pem").exists());
    assert_eq!(counter(&c, 0, "api_rejected_unauthenticated"), 1);
    assert_eq!(counter(&c, 0, "certificates_issued"), issued);

    replayed_datagrams_are_dropped(&c);
}

/// An authentic datagram from outside the freshness window (what a recording replayed later
/// is), and one in the format of agents before the stamp once every peer speaks the new one,
/// are dropped before foca and counted; the cluster is undisturbed.
fn replayed_datagrams_are_dropped(c: &Cluster) {
    use quorate::gossip::Envelope;
    use quorate::token::{JoinToken, KeyPurpose};
    let key = JoinToken::parse(&c.token)
        .unwrap()
        .derive(KeyPurpose::Gossip);
    wait_for(
        "the seed to speak only the stamped envelope",
        FORM_TIMEOUT,
        || {
            if c.agents[0]
                .log()
                .contains("older datagrams are no longer accepted")
            {
                Ok(())
            } else {
                Err("not yet".into())
            }
        },
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let sock = UdpSocket::bind((c.subnet.host(201), 0)).unwrap();
    let stale_before = counter(c, 0, "gossip_dropped_stale");
    let malformed_before = counter(c, 0, "gossip_dropped_malformed");
    let ten_minutes_ago = Envelope::stamped(&key).seal_at(b"recorded earlier", now_ms - 600_000);
    let old_format = Envelope::new(&key).seal(b"an old agent's datagram");
    for datagram in [&ten_minutes_ago, &old_format] {
        sock.send_to(datagram, (c.agents[0].addr, 7946)).unwrap();
    }
    wait_for("the replayed datagrams to be counted", FORM_TIMEOUT, || {
        let n = counter(c, 0, "gossip_dropped_stale");
        if n >= stale_before + 2 {
            Ok(())
        } else {
            Err(format!("{n} dropped as stale, {stale_before} before"))
        }
    });
    // Dropped before foca's decoder (which would count garbage as malformed).
    assert_eq!(counter(c, 0, "gossip_dropped_malformed"), malformed_before);
    let log = c.agents[0].log();
    assert!(
        log.contains("a replay, or clocks apart"),
        "the drop is explained in the log"
    );
    for a in &c.agents[..3] {
        a.ready().unwrap();
    }
}
