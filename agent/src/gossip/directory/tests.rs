use super::*;
use crate::etcd::Member;
use crate::gossip::testing::{meta, peer, view_of};
use crate::gossip::PeerState;

fn member(name: &str, n: u8, learner: bool) -> Member {
    Member {
        id: n as u64,
        name: name.into(),
        peer_urls: vec![format!("https://127.0.0.{n}:2380")],
        client_urls: vec![format!("https://127.0.0.{n}:2379")],
        is_learner: learner,
    }
}

fn healthy(members: Vec<Member>) -> EtcdHealth {
    EtcdHealth {
        reachable: true,
        member_id: Some(1),
        leader: Some(1),
        quorum: true,
        members,
        ..EtcdHealth::default()
    }
}

#[test]
fn a_healthy_member_lists_the_voters_with_their_agents_and_the_issuer() {
    let mut own = meta("n1", 1);
    own.ca_hash = Some(format!("sha256:{}", "ab".repeat(32)).parse().unwrap());
    let mut n2 = meta("n2", 2);
    n2.issuer = true;
    let view = view_of(vec![n2, meta("n3", 3)]);
    let health = healthy(vec![
        member("n3", 3, false),
        member("n1", 1, false),
        member("n2", 2, false),
        member("n4", 4, true),
        member("", 5, false),
    ]);
    let d = answer(7, Some(&own), &health, &view).unwrap();
    assert_eq!(d.id, 7);
    assert_eq!(d.answered_by, "n1");
    assert_eq!(d.ca_hash, own.ca_hash);
    assert_eq!(d.issuer_api, Some("127.0.0.2:7946".parse().unwrap()));
    let names: Vec<&str> = d.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        ["n1", "n2", "n3"],
        "learners and unstarted members left out"
    );
    assert_eq!(d.members[0].client_urls, ["https://127.0.0.1:2379"]);
    assert_eq!(
        d.members[0].gossip_addr,
        Some("127.0.0.1:7946".parse().unwrap())
    );
    assert_eq!(
        d.members[2].gossip_addr,
        Some("127.0.0.3:7946".parse().unwrap())
    );

    // This member is the issuer itself; a down issuer elsewhere is not offered.
    let mut own_issuer = own.clone();
    own_issuer.issuer = true;
    let d = answer(1, Some(&own_issuer), &health, &view).unwrap();
    assert_eq!(d.issuer_api, Some(own.api_addr));
    let mut down = meta("n2", 2);
    down.issuer = true;
    let view = crate::gossip::GossipView {
        peers: vec![peer(down, PeerState::Down)],
        plans: Vec::new(),
    };
    assert_eq!(
        answer(1, Some(&own), &health, &view).unwrap().issuer_api,
        None
    );
}

#[test]
fn no_answer_without_a_healthy_etcd_or_before_the_agent_has_metadata() {
    let own = meta("n1", 1);
    let view = view_of(vec![]);
    let mut health = healthy(vec![member("n1", 1, false)]);
    assert!(answer(1, None, &health, &view).is_none());
    health.quorum = false;
    assert!(answer(1, Some(&own), &health, &view).is_none());
    assert!(answer(1, Some(&own), &EtcdHealth::default(), &view).is_none());
}

#[test]
fn only_fresh_asks_count() {
    assert!(fresh(1000, 1000));
    assert!(fresh(1000, 1060) && fresh(1060, 1000));
    assert!(!fresh(1000, 1061) && !fresh(1061, 1000));
    assert!(!fresh(0, u64::MAX));
}

#[test]
fn one_answer_per_address_per_interval() {
    let mut rate = AnswerRate::default();
    let t0 = Instant::now();
    let a: IpAddr = "10.0.0.1".parse().unwrap();
    let b: IpAddr = "10.0.0.2".parse().unwrap();
    assert!(rate.admit(a, t0));
    assert!(!rate.admit(a, t0 + Duration::from_millis(100)));
    assert!(rate.admit(b, t0 + Duration::from_millis(100)));
    assert!(rate.admit(a, t0 + MIN_ASK_INTERVAL));
    // A flood of addresses cannot grow the table without bound.
    for i in 0..(MAX_REMEMBERED as u32 + 10) {
        rate.admit(IpAddr::from(i.to_be_bytes()), t0 + MIN_ASK_INTERVAL);
    }
    assert!(rate.last.len() <= MAX_REMEMBERED);
}

#[test]
fn messages_round_trip_and_garbage_decodes_to_nothing() {
    let ask = ClientMessage::Ask(Ask {
        id: 9,
        sent_at: 1,
        name: "omni".into(),
    });
    assert_eq!(ClientMessage::decode(&ask.encode()), Some(ask));
    assert_eq!(ClientMessage::decode(&[0xff, 0xff, 0xff]), None);
    assert_eq!(ClientMessage::decode(&[]), None);
}

#[test]
fn members_remember_the_clients_that_asked_lately() {
    let mut seen = ClientsSeen::default();
    let a: SocketAddr = "10.0.0.21:40000".parse().unwrap();
    let b: SocketAddr = "10.0.0.22:40000".parse().unwrap();
    seen.record("omni", a, 1000);
    let list = seen.record("kube", b, 1005);
    assert_eq!(
        list.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["kube", "omni"]
    );
    // omni asks again from another port: one entry, the newest.
    let list = seen.record("omni", "10.0.0.21:40001".parse().unwrap(), 1010);
    assert_eq!(list.len(), 2);
    assert_eq!(list[1].last_seen, 1010);
    // kube falls silent.
    let later = 1005 + SEEN_WINDOW.as_secs() + 1;
    assert_eq!(recent(&list, later).len(), 1);
    let list = seen.record("omni", a, later);
    assert_eq!(list.len(), 1, "a silent client is forgotten");
}
