//! Defragmentation on real etcd: `quorate defrag` does every member one at a time, leader
//! last, printing each member's size before and after, and is refused while a voter is down
//! unless forced; the automatic defragmentation waits while a voter is down and goes one member
//! at a time once the cluster is whole again (checked from the agents' logs).

use std::time::Duration;

use etcd_client::CompactionOptions;
use quorate::etcd::client::connect;
use quorate_tests::cluster::{ClientCert, FORM_TIMEOUT};
use quorate_tests::space::{self, Put};
use quorate_tests::{wait_for, Cluster};

/// Writes about 10 MiB of history over one key through agents `via`, then compacts it away:
/// the members' files are then mostly free pages (the compaction as the agents' identity).
fn fragment(c: &Cluster, via: &[usize], cert: &ClientCert) {
    let tls = space::tls(cert);
    let eps: Vec<String> = via.iter().map(|i| c.client_url(*i)).collect();
    let rt = space::runtime();
    for seq in 1..=200u64 {
        wait_for("a write", FORM_TIMEOUT, || {
            match rt.block_on(space::put(
                &eps,
                &tls,
                "/frag/key",
                space::value(seq, 50 * 1024),
            )) {
                Put::Acked => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
    }
    // Compaction needs the root role from etcd 3.5.28 on with authentication: the agents'.
    let admin = space::tls(&c.agent_cert(via[0]));
    rt.block_on(async {
        let mut client = connect(&eps[..1], &admin, Duration::from_secs(10))
            .await
            .unwrap();
        let rev = client.get("/frag/key", None).await.unwrap();
        let rev = rev.header().unwrap().revision();
        client
            .compact(rev, Some(CompactionOptions::new().with_physical()))
            .await
            .unwrap();
    });
}

/// Bytes of a size as the agent prints it (`12.3 MiB`).
fn bytes(text: &str) -> f64 {
    let mut parts = text.split_whitespace();
    let n: f64 = parts
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(f64::NAN);
    let unit = match parts.next() {
        Some("KiB") => 1024.0,
        Some("MiB") => 1024.0 * 1024.0,
        Some("GiB") => 1024.0 * 1024.0 * 1024.0,
        _ => 1.0,
    };
    n * unit
}

/// The (before, after) of `member`'s line in `quorate defrag`'s output.
fn sizes(out: &str, member: &str) -> (f64, f64) {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{member}: ")))
        .unwrap_or_else(|| panic!("no line for {member}: {out}"));
    let rest = line[member.len() + 2..].split(" in ").next().unwrap();
    let (before, after) = rest
        .split_once(" -> ")
        .unwrap_or_else(|| panic!("no sizes in {line:?}"));
    (bytes(before), bytes(after))
}

#[test]
fn defrag_on_demand_prints_each_member_and_is_refused_while_a_voter_is_down() {
    let mut c = Cluster::new(3);
    c.start_and_wait();
    let cert = c.client_cert(0, "fragmenter");
    fragment(&c, &[0, 1, 2], &cert);

    let o = c.agents[0].cli(&["defrag"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "quorate defrag failed: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for a in &c.agents {
        let (before, after) = sizes(&out, &a.name);
        assert!(after < before, "{}: {before} -> {after}\n{out}", a.name);
    }
    let leader = c.agents[0].status().unwrap().etcd.leader_name.unwrap();
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with(&format!("{leader}: ")),
        "leader last: {out}"
    );

    // A voter down: refused, with the reason and the way out.
    c.agents[2].stop();
    let refusal = wait_for("quorate defrag to refuse", FORM_TIMEOUT, || {
        let o = c.agents[0].cli(&["defrag"]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        if !o.status.success() && err.contains("voters not healthy: n3") {
            Ok(err)
        } else {
            Err(format!("{}{err}", String::from_utf8_lossy(&o.stdout)))
        }
    });
    assert!(refusal.contains("--force"), "{refusal}");

    let o = c.agents[0].cli(&["defrag", "--force"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    sizes(&out, "n1");
    sizes(&out, "n2");
    assert!(out.contains("n3: not defragmented"), "{out}");

    space::assert_no_overlap(&space::intervals(&c));
}

#[test]
fn automatic_defrag_waits_for_a_voter_down_then_goes_one_member_at_a_time() {
    let mut c = Cluster::with(3, |_, b| {
        b.with(|cfg| cfg.maintenance.defrag_min_reclaim = Some("1MiB".into()))
    });
    c.start_and_wait();
    let cert = c.client_cert(0, "fragmenter");
    c.agents[2].stop();
    fragment(&c, &[0, 1], &cert);

    wait_for("the coordinator to wait for n3", FORM_TIMEOUT, || {
        for a in &c.agents[..2] {
            let o = a.cli(&["status"]);
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            if text.contains("defragmentation waits: voters not healthy: n3") {
                return Ok(());
            }
        }
        Err("no agent waits for n3".into())
    });
    assert_eq!(
        space::intervals(&c),
        vec![],
        "nothing defragmented while n3 is down"
    );

    c.agents[2].start();
    c.wait_ready(FORM_TIMEOUT);
    let intervals = wait_for("n1 and n2 to be defragmented", FORM_TIMEOUT, || {
        let all = space::intervals(&c);
        if ["n1", "n2"].iter().all(|m| {
            all.iter()
                .any(|i| i.member == *m && i.trigger == "automatic")
        }) {
            Ok(all)
        } else {
            Err(format!("{all:?}"))
        }
    });
    space::assert_no_overlap(&intervals);
    // The coordinator (the leader's agent) did its own member after the other one that was due.
    let own = intervals
        .iter()
        .position(|i| i.member == i.agent)
        .expect("the coordinator defragmented its own member");
    let coordinator = &intervals[own].agent;
    let other = if coordinator == "n1" { "n2" } else { "n1" };
    let theirs = intervals
        .iter()
        .position(|i| i.member == other)
        .expect("the other member");
    assert!(theirs < own, "leader last: {intervals:?}");
}
