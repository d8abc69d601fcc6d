use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::gossip::{NodeId, NodeMeta, Peer, PeerState};
use crate::pki::test_support::{self, DAY};
use crate::pki::{inspect, NodeKey, CLOCK_SKEW_ALLOWANCE};

const KEY: [u8; 32] = [7; 32];
const NOW: u64 = 1_800_000_000;
const VALIDITY: Duration = Duration::from_secs(30 * 86_400);

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A gossip member at `addr`, with metadata from that address when `meta` is set.
fn peer(name: &str, addr: &str, state: PeerState, meta: bool) -> Peer {
    let addr: SocketAddr = addr.parse().unwrap();
    Peer {
        id: NodeId::new(name, addr, 1),
        state,
        meta: meta.then(|| NodeMeta::example(name, addr)),
    }
}

fn view(peers: Vec<Peer>) -> GossipView {
    GossipView {
        peers,
        plans: Vec::new(),
    }
}

fn request(name: &str, kind: CertKind) -> SignRequest {
    SignRequest {
        name: name.into(),
        kind,
        csr_pem: "CSR".into(),
        sent_at: NOW,
        role: None,
    }
}

/// Nobody holds a name yet.
const NOT_FORMED: Members = Members::NotFormed;

/// A context whose requester is at 10.0.0.2 (etcd-2's address in [`three_nodes`]).
fn ctx(view: &GossipView) -> SignContext<'_> {
    SignContext {
        proof_keys: std::slice::from_ref(&KEY),
        client_proof_key: None,
        now: at(NOW),
        validity: Lifetimes::both(VALIDITY),
        holds_ca: true,
        view,
        requester: Requester {
            addr: ip("10.0.0.2"),
            node_cert: None,
        },
        members: &NOT_FORMED,
        roles: ROLES,
        client_agent_roles: &[],
    }
}

/// The roles the issuer's config defines.
const ROLES: &[String] = &[];

/// `ctx` with the requester at `addr`.
fn from<'a>(ctx: &SignContext<'a>, addr: &str) -> SignContext<'a> {
    SignContext {
        requester: Requester {
            addr: ip(addr),
            ..ctx.requester
        },
        ..*ctx
    }
}

/// Decides `body` sent with a valid proof.
fn decide_body(ctx: &SignContext<'_>, body: &[u8]) -> Result<Grant, Refusal> {
    decide(ctx, body, &proof::sign(&KEY, body))
}

fn decide_req(ctx: &SignContext<'_>, req: &SignRequest) -> Result<Grant, Refusal> {
    decide_body(ctx, &serde_json::to_vec(req).unwrap())
}

fn three_nodes() -> GossipView {
    view(vec![
        peer("etcd-1", "10.0.0.1:7946", PeerState::Alive, true),
        peer("etcd-2", "10.0.0.2:7946", PeerState::Alive, true),
        peer("node_3", "[fd00::3]:7946", PeerState::Suspect, true),
    ])
}

#[test]
fn node_grant_has_its_name_gossip_address_and_loopback() {
    let mut v = three_nodes();
    // Only the gossip address counts, not the advertised API address.
    v.peers[1].meta.as_mut().unwrap().api_addr = "192.0.2.9:7947".parse().unwrap();
    let grant = decide_req(&ctx(&v), &request("etcd-2", CertKind::Node)).unwrap();
    assert_eq!(
        grant,
        Grant {
            name: "etcd-2".into(),
            kind: CertKind::Node,
            csr_pem: "CSR".into(),
            role: None,
            spec: CertSpec {
                common_name: "etcd-2".into(),
                dns_names: vec!["etcd-2".into(), "localhost".into()],
                ips: vec![ip("10.0.0.2"), ip("127.0.0.1"), ip("::1")],
                server_auth: true,
                client_auth: true,
                not_before: at(NOW) - CLOCK_SKEW_ALLOWANCE,
                not_after: at(NOW) + VALIDITY,
            },
        }
    );
}

#[test]
fn suspect_ipv6_node_without_dns_name_gets_localhost_and_its_address() {
    let v = three_nodes();
    let grant = decide_req(
        &from(&ctx(&v), "fd00::3"),
        &request("node_3", CertKind::Node),
    )
    .unwrap();
    assert_eq!(grant.spec.common_name, "node_3");
    assert_eq!(grant.spec.dns_names, vec!["localhost".to_owned()]);
    assert_eq!(
        grant.spec.ips,
        vec![ip("fd00::3"), ip("127.0.0.1"), ip("::1")]
    );
    assert!(grant.spec.server_auth && grant.spec.client_auth);
}

#[test]
fn node_known_twice_is_granted_at_its_live_address() {
    let v = view(vec![
        peer("etcd-2", "10.0.0.9:7946", PeerState::Down, true),
        peer("etcd-2", "10.0.0.2:7946", PeerState::Alive, true),
    ]);
    let grant = decide_req(&ctx(&v), &request("etcd-2", CertKind::Node)).unwrap();
    assert_eq!(
        grant.spec.ips,
        vec![ip("10.0.0.2"), ip("127.0.0.1"), ip("::1")]
    );
}

#[test]
fn client_grant_has_no_sans_and_client_auth_only() {
    let v = view(Vec::new());
    let grant = decide_req(&ctx(&v), &request("ops@example.com", CertKind::Client)).unwrap();
    assert_eq!(
        grant,
        Grant {
            name: "ops@example.com".into(),
            kind: CertKind::Client,
            csr_pem: "CSR".into(),
            role: None,
            spec: CertSpec {
                common_name: "ops@example.com".into(),
                dns_names: Vec::new(),
                ips: Vec::new(),
                server_auth: false,
                client_auth: true,
                not_before: at(NOW) - CLOCK_SKEW_ALLOWANCE,
                not_after: at(NOW) + VALIDITY,
            },
        }
    );
}

#[test]
fn no_client_certificate_carries_an_agents_name_or_roots() {
    let v = three_nodes();
    // With the join token too: etcd would map the name to that agent's (root) user.
    for name in ["etcd-1", "root", "ROOT", "quorate-agent", "Quorate"] {
        let refused = decide_req(&ctx(&v), &request(name, CertKind::Client)).unwrap_err();
        assert!(
            matches!(refused, Refusal::ReservedName { .. }),
            "{name}: {refused:?}"
        );
    }
    let grant = decide_req(&ctx(&v), &request("app", CertKind::Client)).unwrap();
    assert!(grant.spec.ips.is_empty() && grant.spec.dns_names.is_empty());
    assert!(!grant.spec.server_auth);
}

#[test]
fn client_names() {
    let v = view(Vec::new());
    let long = "a".repeat(64);
    for good in ["a", "app-1_x.y@z", "A9", long.as_str()] {
        let grant = decide_req(&ctx(&v), &request(good, CertKind::Client)).unwrap();
        assert_eq!(grant.spec.common_name, good);
    }
    let too_long = "a".repeat(65);
    for bad in [
        "",
        too_long.as_str(),
        "a b",
        "a/b",
        "a:b",
        "CN=x,O=y",
        "é",
        "a\n",
    ] {
        let refused = decide_req(&ctx(&v), &request(bad, CertKind::Client)).unwrap_err();
        assert_eq!(
            refused,
            Refusal::InvalidClientName { name: bad.into() },
            "{bad:?}"
        );
    }
    let refused = decide_req(&ctx(&v), &request("a b", CertKind::Client)).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "client name \"a b\" must be 1-64 letters, digits, '-', '_', '.' or '@'"
    );
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn node_not_live_with_metadata_in_gossip_is_unknown() {
    let v = view(vec![
        peer("down", "10.0.0.4:7946", PeerState::Down, true),
        peer("quiet", "10.0.0.5:7946", PeerState::Alive, false),
    ]);
    for name in ["absent", "down", "quiet", ""] {
        let refused = decide_req(&ctx(&v), &request(name, CertKind::Node)).unwrap_err();
        assert_eq!(refused, Refusal::UnknownNode { name: name.into() });
        assert_eq!(refused.status(), StatusCode::CONFLICT);
    }
    let refused = decide_req(&ctx(&v), &request("down", CertKind::Node)).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "node down is not known in gossip yet; retry shortly"
    );
}

#[test]
fn proof_must_match_key_and_body() {
    let v = three_nodes();
    let body = serde_json::to_vec(&request("etcd-2", CertKind::Node)).unwrap();
    let good = proof::sign(&KEY, &body);
    let wrong_key = proof::sign(&[8; 32], &body);
    let other_body = proof::sign(&KEY, b"{}");
    for bad in ["", "zz", &good[..20], &wrong_key, &other_body] {
        let refused = decide(&ctx(&v), &body, bad).unwrap_err();
        assert_eq!(refused, Refusal::Unauthenticated, "{bad:?}");
    }
    // Surrounding whitespace in the header value is tolerated.
    assert!(decide(&ctx(&v), &body, &format!(" {good}\t")).is_ok());
    assert!(decide(&ctx(&v), &body, &good.to_uppercase()).is_ok());
    // While a rotation runs, a proof with either accepted join token is admitted.
    let rotating = [[8; 32], KEY];
    let both = SignContext {
        proof_keys: &rotating,
        ..ctx(&v)
    };
    assert!(decide(&both, &body, &wrong_key).is_ok());
    assert!(decide(&both, &body, &good).is_ok());
    assert_eq!(
        decide(&both, &body, &proof::sign(&[9; 32], &body)).unwrap_err(),
        Refusal::Unauthenticated
    );
}

#[test]
fn proof_is_checked_before_anything_else() {
    let v = three_nodes();
    let ctx = SignContext {
        holds_ca: false,
        ..ctx(&v)
    };
    assert_eq!(
        decide(&ctx, b"not json", "00"),
        Err(Refusal::Unauthenticated)
    );
    assert_eq!(decide(&ctx, b"", ""), Err(Refusal::Unauthenticated));
}

#[test]
fn malformed_bodies() {
    let v = view(Vec::new());
    let cases: [(&[u8], &str); 4] = [
        (b"not json", "expected ident at line 1 column 2"),
        (b"{}", "missing field `name` at line 1 column 2"),
        (
            br#"{"name":"n","kind":"server","csr_pem":"","sent_at":1}"#,
            "unknown variant `server`, expected `node` or `client` at line 1 column 27",
        ),
        (
            br#"{"name":"n","kind":"node","csr_pem":"","sent_at":-1}"#,
            "invalid value: integer `-1`, expected u64 at line 1 column 51",
        ),
    ];
    for (body, reason) in cases {
        let refused = decide_body(&ctx(&v), body).unwrap_err();
        assert_eq!(refused, Refusal::Malformed(reason.into()));
        assert_eq!(refused.to_string(), format!("malformed request: {reason}"));
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    }
}

#[test]
fn clock_skew_up_to_fifteen_minutes_is_accepted_either_way() {
    let v = view(Vec::new());
    let limit = MAX_CLOCK_SKEW.as_secs();
    for sent_at in [NOW - limit, NOW + limit, NOW] {
        let req = SignRequest {
            sent_at,
            ..request("ops", CertKind::Client)
        };
        assert!(decide_req(&ctx(&v), &req).is_ok(), "{sent_at}");
    }
    for (sent_at, skew) in [
        (NOW - limit - 1, limit + 1),
        (NOW + limit + 1, limit + 1),
        (0, NOW),
        (u64::MAX, u64::MAX),
    ] {
        let req = SignRequest {
            sent_at,
            ..request("ops", CertKind::Client)
        };
        let refused = decide_req(&ctx(&v), &req).unwrap_err();
        assert!(
            matches!(refused, Refusal::ClockSkew { skew: s } if s.as_secs() == skew),
            "{refused:?}"
        );
        assert_eq!(
            refused.to_string(),
            format!(
                "request time is {skew}s away from this host's clock; synchronise the clocks (NTP)"
            )
        );
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    }
}

#[test]
fn an_agent_without_the_ca_refuses_valid_requests() {
    let v = three_nodes();
    let ctx = SignContext {
        holds_ca: false,
        ..ctx(&v)
    };
    for req in [
        request("etcd-1", CertKind::Node),
        request("ops", CertKind::Client),
        // The CA is checked before the profile's own rules.
        request("absent", CertKind::Node),
        request("a b", CertKind::Client),
    ] {
        let refused = decide_req(&ctx, &req).unwrap_err();
        assert_eq!(refused, Refusal::NotIssuer, "{req:?}");
        assert_eq!(
            refused.to_string(),
            "this agent does not hold the CA; ask the issuer"
        );
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    // A malformed or stale request is refused as such even by a non-issuer.
    assert!(matches!(
        decide_body(&ctx, b"{}"),
        Err(Refusal::Malformed(_))
    ));
    let stale = SignRequest {
        sent_at: 0,
        ..request("ops", CertKind::Client)
    };
    assert!(matches!(
        decide_req(&ctx, &stale),
        Err(Refusal::ClockSkew { .. })
    ));
}

#[test]
fn each_refusal_has_its_status_and_counter() {
    let cases = [
        (
            Refusal::Unauthenticated,
            401,
            Some("api_rejected_unauthenticated"),
        ),
        (
            Refusal::Malformed("x".into()),
            400,
            Some("api_rejected_invalid"),
        ),
        (
            Refusal::ClockSkew {
                skew: Duration::from_secs(901),
            },
            400,
            Some("api_rejected_invalid"),
        ),
        (Refusal::NotIssuer, 503, None),
        (
            Refusal::UnknownNode { name: "n".into() },
            409,
            Some("api_rejected_invalid"),
        ),
        (
            Refusal::InvalidClientName { name: "".into() },
            400,
            Some("api_rejected_invalid"),
        ),
        (
            Refusal::Signing("x".into()),
            400,
            Some("api_rejected_invalid"),
        ),
    ];
    for (refusal, status, counter) in cases {
        assert_eq!(refusal.status().as_u16(), status, "{refusal:?}");
        assert_eq!(
            refusal.is_invalid(),
            counter == Some("api_rejected_invalid"),
            "{refusal:?}"
        );
        let counters = Counters::default();
        refusal.count(&counters);
        let counted: Vec<_> = counters
            .snapshot()
            .into_iter()
            .filter(|(_, _, v)| *v != 0)
            .map(|(name, _, v)| (name, v))
            .collect();
        assert_eq!(
            counted,
            counter.map(|c| (c, 1)).into_iter().collect::<Vec<_>>()
        );
    }
}

#[test]
fn issue_signs_exactly_the_grant() {
    let ca = test_support::ca("ca");
    let key = NodeKey::generate().unwrap();
    let v = three_nodes();
    let req = SignRequest {
        // The CSR's own subject is ignored: the name comes from the request.
        csr_pem: key.csr_pem("evil").unwrap(),
        sent_at: now_secs(),
        ..request("etcd-2", CertKind::Node)
    };
    let ctx = SignContext {
        now: SystemTime::now(),
        validity: Lifetimes::both(DAY),
        ..ctx(&v)
    };
    let grant = decide_req(&ctx, &req).unwrap();
    let response = issue(&ca, &grant, None).unwrap();
    // Without a list of its own the issuer hands out an empty one, signed by its CA.
    let crl = response.crl_pem.clone().expect("a revocation list");
    assert!(crate::pki::crl::crl_serials(&crl, ca.cert_pem())
        .unwrap()
        .is_empty());
    let given = issue(&ca, &grant, Some("LIST".into())).unwrap();
    assert_eq!(given.crl_pem.as_deref(), Some("LIST"));
    assert_eq!(response.ca_pem, ca.cert_pem());
    let info = inspect(&response.cert_pem).unwrap();
    assert_eq!(info.common_name, "etcd-2");
    assert_eq!(info.dns_names, ["etcd-2", "localhost"]);
    assert_eq!(info.ips, [ip("10.0.0.2"), ip("127.0.0.1"), ip("::1")]);
    assert!(info.server_auth && info.client_auth && !info.is_ca);
}

#[test]
fn issue_refuses_a_bad_csr() {
    let ca = test_support::ca("ca");
    let v = view(Vec::new());
    let grant = decide_req(&ctx(&v), &request("ops", CertKind::Client)).unwrap();
    let refused = issue(&ca, &grant, None).unwrap_err();
    assert!(
        matches!(refused, Refusal::Signing(ref m) if m.starts_with("certificate signing request rejected: ")),
        "{refused:?}"
    );
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

mod client_token;
mod members;
mod properties;
mod roles;
