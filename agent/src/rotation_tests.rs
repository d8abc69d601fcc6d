use super::*;

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("n{i}")).collect()
}

/// Members' rings and what etcd holds, advanced one member look at a time.
struct Sim {
    rings: BTreeMap<String, Keyring>,
    records: Records,
    members: Vec<String>,
}

impl Sim {
    fn new(n: usize, token: &JoinToken) -> Self {
        let members = names(n);
        let rings: BTreeMap<String, Keyring> = members
            .iter()
            .map(|m| (m.clone(), Keyring::single(token.clone())))
            .collect();
        let mut records = Records::default();
        for (m, r) in &rings {
            records.members.insert(m.clone(), MemberRing::of(r));
        }
        Self {
            rings,
            records,
            members,
        }
    }

    /// What `me` does in one look: the next ring, recorded.
    fn look(&mut self, me: &str) -> Option<Progress> {
        let ring = &self.rings[me];
        let newest = newest(ring, &self.records.chain);
        let (next, progress) = next_ring(ring, newest, &self.members, &self.records.members, me);
        self.records
            .members
            .insert(me.to_owned(), MemberRing::of(&next));
        self.rings.insert(me.to_owned(), next);
        progress
    }

    /// Nobody sends with a token somebody does not accept.
    fn assert_safe(&self) {
        for (a, ra) in &self.rings {
            for (b, rb) in &self.rings {
                assert!(
                    rb.accepts(ra.primary()),
                    "{b} does not accept what {a} sends with: {ra:?} / {rb:?}"
                );
            }
        }
    }
}

#[test]
fn a_link_opens_with_the_old_token_only_and_names_the_new() {
    let (old, new) = (JoinToken::generate(), JoinToken::generate());
    let link = seal_link(&old, &new, 1_700_000_000);
    assert!(!link.sealed.contains(new.expose()));
    assert_eq!(link.to, new.fingerprint());
    assert_eq!(open_link(&old, &link), Some(new.clone()));
    assert_eq!(open_link(&new, &link), None);
    assert_eq!(open_link(&JoinToken::generate(), &link), None);
    // The fingerprint and the time are bound to the sealed bytes.
    let moved = ChainLink {
        created_at: 1,
        ..link.clone()
    };
    assert_eq!(open_link(&old, &moved), None);
    let relabelled = ChainLink {
        to: JoinToken::generate().fingerprint(),
        ..link
    };
    assert_eq!(open_link(&old, &relabelled), None);
}

#[test]
fn three_members_rotate_in_three_steps_and_never_send_what_another_refuses() {
    let (old, new) = (JoinToken::generate(), JoinToken::generate());
    let mut sim = Sim::new(3, &old);
    assert_eq!(sim.look("n1"), None, "no rotation: nothing changes");
    sim.records
        .chain
        .insert(old.fingerprint(), seal_link(&old, &new, 10));
    let mut steps = Vec::new();
    for round in 0..6 {
        for m in names(3) {
            if let Some(p) = sim.look(&m) {
                steps.push(p.step);
            }
            sim.assert_safe();
        }
        if round == 0 {
            for r in sim.rings.values() {
                assert!(r.accepts(&new) && r.accepts(&old));
            }
        }
    }
    for r in sim.rings.values() {
        assert_eq!(r, &Keyring::single(new.clone()), "settled on the new token");
    }
    for step in [Step::Install, Step::Use, Step::Retire] {
        assert!(steps.contains(&step), "{step:?} seen: {steps:?}");
    }
    assert_eq!(
        newest(&sim.rings["n1"], &sim.records.chain),
        None,
        "nothing follows the new token"
    );
}

#[test]
fn a_member_down_holds_the_rotation_and_catches_up_when_back() {
    let (old, new) = (JoinToken::generate(), JoinToken::generate());
    let mut sim = Sim::new(3, &old);
    sim.records
        .chain
        .insert(old.fingerprint(), seal_link(&old, &new, 10));
    // n3 is down: it looks no more.
    let mut last = None;
    for _ in 0..5 {
        for m in ["n1", "n2"] {
            last = sim.look(m);
            sim.assert_safe();
        }
    }
    let last = last.unwrap();
    assert_eq!(
        (last.step, last.waiting),
        (Step::Install, vec!["n3".to_owned()])
    );
    for m in ["n1", "n2"] {
        assert_eq!(
            sim.rings[m].primary(),
            &old,
            "{m} still sends with the old token"
        );
    }
    // Back: it follows the chain (it still holds the old token) and the rotation ends.
    for _ in 0..5 {
        for m in names(3) {
            sim.look(&m);
            sim.assert_safe();
        }
    }
    for r in sim.rings.values() {
        assert_eq!(r, &Keyring::single(new.clone()));
    }
}

#[test]
fn a_member_away_for_two_rotations_follows_the_chain_to_the_newest() {
    let (t0, t1, t2) = (
        JoinToken::generate(),
        JoinToken::generate(),
        JoinToken::generate(),
    );
    let mut chain = BTreeMap::new();
    chain.insert(t0.fingerprint(), seal_link(&t0, &t1, 1));
    chain.insert(t1.fingerprint(), seal_link(&t1, &t2, 2));
    let ring = Keyring::single(t0.clone());
    assert_eq!(newest(&ring, &chain), Some(t2.clone()));
    // A tampered link stops the walk where it is.
    let mut bad = chain.clone();
    bad.get_mut(&t1.fingerprint()).unwrap().sealed = "AAAA".into();
    assert_eq!(newest(&ring, &bad), Some(t1));
}

#[test]
fn a_rotation_begins_only_when_settled_and_the_ca_no_longer_needs_the_token() {
    let (old, new) = (JoinToken::generate(), JoinToken::generate());
    let sim = Sim::new(3, &old);
    let ring = Keyring::single(old.clone());
    let members = names(3);
    assert_eq!(may_start(&ring, &new, &members, &sim.records, true), Ok(()));
    let refused = |r: Result<(), StartError>| match r {
        Err(StartError::Refused(why)) => why,
        other => panic!("not refused: {other:?}"),
    };
    let why = refused(may_start(&ring, &new, &members, &sim.records, false));
    assert!(why.contains("CA seal"), "{why}");
    let why = refused(may_start(&ring, &old, &members, &sim.records, true));
    assert!(why.contains("already in force"), "{why}");
    let why = refused(may_start(
        &ring,
        &JoinToken::generate_client(),
        &members,
        &sim.records,
        true,
    ));
    assert!(why.contains("client token"), "{why}");
    let mut started = sim.records.clone();
    started
        .chain
        .insert(old.fingerprint(), seal_link(&old, &new, 1));
    let why = refused(may_start(
        &ring,
        &JoinToken::generate(),
        &members,
        &started,
        true,
    ));
    assert!(why.contains("in progress"), "{why}");
    // After old -> new, going back to old is refused: the chain would loop.
    let mut done = sim.records.clone();
    done.chain
        .insert(old.fingerprint(), seal_link(&old, &new, 1));
    for m in done.members.values_mut() {
        *m = MemberRing::of(&Keyring::single(new.clone()));
    }
    let why = refused(may_start(
        &Keyring::single(new.clone()),
        &old,
        &members,
        &done,
        true,
    ));
    assert!(why.contains("was in force before"), "{why}");
    let mut without = sim.records.clone();
    without.members.remove("n2");
    let why = refused(may_start(&ring, &new, &members, &without, true));
    assert!(why.contains("n2") && why.contains("upgrade"), "{why}");
}

#[test]
fn records_decode_and_bad_ones_are_named() {
    let link = serde_json::to_vec(&seal_link(
        &JoinToken::generate(),
        &JoinToken::generate(),
        1,
    ))
    .unwrap();
    let ring = serde_json::to_vec(&MemberRing {
        primary: "aa".into(),
        accepted: vec!["aa".into()],
    })
    .unwrap();
    let kvs = [
        ("/quorate/token/chain/aa", link.as_slice()),
        ("/quorate/token/members/n1", ring.as_slice()),
        ("/quorate/token/members/n2", b"nope".as_slice()),
        ("/quorate/token/other", b"x".as_slice()),
    ];
    let (records, bad) = Records::parse(kvs);
    assert_eq!(records.chain.len(), 1);
    assert_eq!(records.members.keys().collect::<Vec<_>>(), ["n1"]);
    assert_eq!(bad, ["/quorate/token/members/n2"]);
}
