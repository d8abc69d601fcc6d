//! Node names held in etcd: a held name goes to its holder only, at the address it carries;
//! a dead member's name to its replacement; and each kind's lifetime.
use super::*;

fn members(list: &[(&str, &str, bool)]) -> Members {
    Members::Known(
        list.iter()
            .enumerate()
            .map(|(i, (name, addr, healthy))| {
                crate::etcd::MemberHealth::example(i as u64 + 1, name, addr, false, *healthy)
            })
            .collect(),
    )
}

#[test]
fn a_node_certificate_goes_only_to_the_address_it_carries() {
    let v = three_nodes();
    let refused = decide_req(
        &from(&ctx(&v), "10.0.0.66"),
        &request("etcd-2", CertKind::Node),
    )
    .unwrap_err();
    assert_eq!(
        refused,
        Refusal::WrongAddress {
            name: "etcd-2".into(),
            from: ip("10.0.0.66"),
            expected: ip("10.0.0.2"),
        }
    );
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.to_string().contains("no NAT"), "{refused}");
    // An IPv4 peer seen through a dual-stack socket is the same address.
    assert!(decide_req(
        &from(&ctx(&v), "::ffff:10.0.0.2"),
        &request("etcd-2", CertKind::Node)
    )
    .is_ok());
    // Client certificates carry no address: from anywhere.
    assert!(decide_req(
        &from(&ctx(&v), "10.0.0.66"),
        &request("ops", CertKind::Client)
    )
    .is_ok());
}

#[test]
fn a_held_name_goes_only_to_its_holder_and_a_dead_ones_to_its_replacement() {
    let v = three_nodes();
    let live = members(&[("etcd-1", "10.0.0.1", true), ("etcd-2", "10.0.0.2", true)]);
    let held = SignContext {
        members: &live,
        ..ctx(&v)
    };
    let req = request("etcd-2", CertKind::Node);
    let refused = decide_req(&held, &req).unwrap_err();
    assert_eq!(
        refused,
        Refusal::NameHeld {
            name: "etcd-2".into()
        }
    );
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    // Renewal: the requester presented etcd-2's current certificate.
    let renewing = SignContext {
        requester: Requester {
            node_cert: Some("etcd-2"),
            ..held.requester
        },
        ..held
    };
    assert!(decide_req(&renewing, &req).is_ok());
    // Another node's certificate proves nothing about etcd-2.
    let other = SignContext {
        requester: Requester {
            node_cert: Some("etcd-1"),
            ..held.requester
        },
        ..held
    };
    assert_eq!(
        decide_req(&other, &req),
        Err(Refusal::NameHeld {
            name: "etcd-2".into()
        })
    );
    // etcd-2's member does not answer (its host lost its disk): the host that comes back
    // under its name gets it; so does a name no member holds (a new host).
    let with = |members: &Members| decide_req(&SignContext { members, ..held }, &req);
    let dead = members(&[("etcd-1", "10.0.0.1", true), ("etcd-2", "10.0.0.2", false)]);
    assert!(with(&dead).is_ok());
    assert!(with(&members(&[("etcd-1", "10.0.0.1", true)])).is_ok());
    // An unstarted member (no name yet) holds nothing.
    assert!(with(&members(&[("", "10.0.0.2", false)])).is_ok());
    // A member list that cannot be read: no name can be checked, so none is given.
    let refused = with(&Members::Unknown("no quorum".into())).unwrap_err();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !refused.is_invalid(),
        "a moment without etcd is not an attack"
    );
    // A client certificate never takes a member's name.
    assert!(matches!(
        decide_req(&held, &request("etcd-2", CertKind::Client)),
        Err(Refusal::ReservedName { .. })
    ));
}

#[test]
fn node_and_client_certificates_get_their_own_lifetimes() {
    let v = three_nodes();
    let ctx = SignContext {
        validity: Lifetimes {
            node: Duration::from_secs(90 * 86_400),
            client: Duration::from_secs(365 * 86_400),
        },
        ..ctx(&v)
    };
    let lifetime = |g: Grant| g.spec.not_after.duration_since(at(NOW)).unwrap();
    let node = decide_req(&ctx, &request("etcd-2", CertKind::Node)).unwrap();
    let client = decide_req(&ctx, &request("ops", CertKind::Client)).unwrap();
    assert_eq!(lifetime(node), Duration::from_secs(90 * 86_400));
    assert_eq!(lifetime(client), Duration::from_secs(365 * 86_400));
}
