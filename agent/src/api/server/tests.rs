//! The real handler end to end: an [`ApiServer`] on a loopback port with TLS material from the
//! crate's own CA, asked through the crate's own client.

use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::api::members::MemberSource;
use crate::api::sign::Members;
use crate::api::{request_certificate, ApiClientError, CertKind, CsrRequest, ServerTrust};
use crate::etcd::MemberHealth;
use crate::gossip::{NodeId, NodeMeta, Peer, PeerState};
use crate::liveness::Liveness;
use crate::pki::test_support::{self, DAY};
use crate::pki::{inspect, server_config, CertInfo, NodeKey};

static TOKEN: std::sync::LazyLock<crate::token::JoinToken> =
    std::sync::LazyLock::new(crate::token::JoinToken::generate);
static PROOF_KEY: std::sync::LazyLock<[u8; 32]> =
    std::sync::LazyLock::new(|| TOKEN.derive(KeyPurpose::ApiProof));
const TIMEOUT: Duration = Duration::from_secs(10);

/// A running issuer and the handles that keep it fed.
struct Issuer {
    addr: SocketAddr,
    ca: Arc<CertificateAuthority>,
    counters: Arc<Counters>,
    material: watch::Sender<ApiMaterial>,
    _view: watch::Sender<GossipView>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// The address gossip knows `etcd-2` at, which its requests come from.
const ETCD_2: &str = "127.0.0.2";

/// Gossip knows `etcd-2` at [`ETCD_2`].
fn view() -> GossipView {
    let addr = format!("{ETCD_2}:7946").parse().unwrap();
    GossipView {
        peers: vec![Peer {
            id: NodeId::new("etcd-2", addr, 1),
            state: PeerState::Alive,
            meta: Some(NodeMeta::example("etcd-2", addr)),
        }],
        plans: Vec::new(),
    }
}

async fn start_issuer() -> Issuer {
    start_issuer_with(None, None).await
}

/// An issuer whose node requests see `members` (None: every name is free), with the
/// revocation list `crl` (a file) when given.
async fn start_issuer_with(members: Option<Members>, crl: Option<std::path::PathBuf>) -> Issuer {
    let ca = Arc::new(test_support::ca("quorate CA"));
    let (cert, key) = test_support::node_cert(&ca, "etcd-1", &[]);
    let tls = server_config(&cert, ca.cert_pem(), &key.to_pem()).unwrap();
    let (material, material_rx) = watch::channel(ApiMaterial {
        tls: Some(tls),
        ca: Some(ca.clone()),
    });
    let (view_tx, view_rx) = watch::channel(view());
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counters = Arc::new(Counters::default());
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let server = ApiServer {
        listener,
        material: material_rx,
        view: view_rx,
        join_keys: TokenKeys::fixed(crate::keyring::Keyring::single(TOKEN.clone())),
        client_keys: watch::channel(None).1,
        cert_validity: crate::api::sign::Lifetimes::both(DAY),
        counters: counters.clone(),
        tracker: tracker.clone(),
        heartbeat: Liveness::new().register("api"),
        restore: None,
        members: members.map(MemberSource::Fixed),
        crl_file: crl,
        issued: None,
        roles: vec!["app".into()],
        client_agent_roles: vec![],
        pki_dir: None,
    };
    tracker.spawn(server.run(cancel.clone()));
    Issuer {
        addr,
        ca,
        counters,
        material,
        _view: view_tx,
        cancel,
        tracker,
    }
}

impl Issuer {
    /// Asks for a certificate for a fresh key, proving `proof_key`, from [`ETCD_2`].
    async fn request(
        &self,
        trust: ServerTrust,
        proof_key: &[u8; 32],
        name: &str,
        kind: CertKind,
    ) -> Result<CertInfo, ApiClientError> {
        let from = ETCD_2.parse().unwrap();
        self.request_as(trust, proof_key, name, kind, from, None)
            .await
    }

    /// [`Self::request`] from `from`, presenting `renewing` (certificate, key) when set.
    async fn request_as(
        &self,
        trust: ServerTrust,
        proof_key: &[u8; 32],
        name: &str,
        kind: CertKind,
        from: IpAddr,
        renewing: Option<(&str, &str)>,
    ) -> Result<CertInfo, ApiClientError> {
        let key = NodeKey::generate().unwrap();
        let csr = key.csr_pem(name).unwrap();
        let key_pem = key.to_pem();
        let csr = CsrRequest {
            name,
            kind,
            csr_pem: &csr,
            key_pem: &key_pem,
            from: Some(from),
            renewing,
            role: None,
        };
        let response =
            request_certificate(self.addr, &trust, self.ca.hash(), proof_key, &csr, TIMEOUT)
                .await?;
        assert_eq!(response.ca_pem, self.ca.cert_pem());
        Ok(inspect(&response.cert_pem).unwrap())
    }

    fn pinned(&self) -> ServerTrust {
        ServerTrust::Pinned(self.ca.hash())
    }

    /// The counters that are not zero.
    fn counted(&self) -> Vec<(&'static str, u64)> {
        self.counters
            .snapshot()
            .into_iter()
            .filter(|(_, _, v)| *v != 0)
            .map(|(name, _, v)| (name, v))
            .collect()
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(TIMEOUT, self.tracker.wait())
            .await
            .expect("the API server stops when cancelled");
    }
}

fn refusal(result: Result<CertInfo, ApiClientError>) -> (u16, String) {
    match result {
        Err(ApiClientError::Refused {
            status, message, ..
        }) => (status, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn issues_a_node_certificate_from_gossip() {
    let issuer = start_issuer().await;
    let pinned = issuer.pinned();
    let info = issuer
        .request(pinned, &PROOF_KEY, "etcd-2", CertKind::Node)
        .await
        .unwrap();
    assert_eq!(info.common_name, "etcd-2");
    assert_eq!(info.dns_names, ["etcd-2", "localhost"]);
    let ips: Vec<IpAddr> = [ETCD_2, "127.0.0.1", "::1"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(info.ips, ips);
    assert!(info.server_auth && info.client_auth && !info.is_ca);
    assert_eq!(
        issuer.counted(),
        [("api_requests", 1), ("certificates_issued", 1)]
    );
    issuer.stop().await;
}

#[tokio::test]
async fn issues_a_client_certificate_to_a_ca_trusting_client() {
    let issuer = start_issuer().await;
    let trust = ServerTrust::Ca(issuer.ca.cert_pem().to_owned());
    let info = issuer
        .request(trust, &PROOF_KEY, "ops", CertKind::Client)
        .await
        .unwrap();
    assert_eq!(info.common_name, "ops");
    assert!(info.dns_names.is_empty() && info.ips.is_empty());
    assert!(info.client_auth && !info.server_auth);
    issuer.stop().await;
}

#[tokio::test]
async fn refuses_and_counts_a_wrong_proof() {
    let issuer = start_issuer().await;
    let result = issuer
        .request(issuer.pinned(), &[4; 32], "etcd-2", CertKind::Node)
        .await;
    assert!(matches!(&result, Err(e) if e.is_permanent()), "{result:?}");
    assert_eq!(
        refusal(result),
        (
            401,
            "missing or wrong join-token proof; use the cluster's join token".into()
        )
    );
    assert_eq!(
        issuer.counted(),
        [("api_requests", 1), ("api_rejected_unauthenticated", 1)]
    );
    issuer.stop().await;
}

#[tokio::test]
async fn refuses_and_counts_a_node_unknown_to_gossip() {
    let issuer = start_issuer().await;
    let result = issuer
        .request(issuer.pinned(), &PROOF_KEY, "etcd-9", CertKind::Node)
        .await;
    assert!(matches!(&result, Err(e) if !e.is_permanent()), "{result:?}");
    assert_eq!(
        refusal(result),
        (
            409,
            "node etcd-9 is not known in gossip yet; retry shortly".into()
        )
    );
    assert_eq!(
        issuer.counted(),
        [("api_requests", 1), ("api_rejected_invalid", 1)]
    );
    issuer.stop().await;
}

#[tokio::test]
async fn an_agent_without_the_ca_sends_requesters_to_the_issuer() {
    let issuer = start_issuer().await;
    issuer.material.send_modify(|m| m.ca = None);
    let result = issuer
        .request(issuer.pinned(), &PROOF_KEY, "ops", CertKind::Client)
        .await;
    assert_eq!(
        refusal(result),
        (
            503,
            "this agent does not hold the CA; ask the issuer".into()
        )
    );
    assert_eq!(issuer.counted(), [("api_requests", 1)]);
    issuer.stop().await;
}

/// etcd's view with a live member named `etcd-2`.
fn etcd_2_alive(healthy: bool) -> Members {
    Members::Known(vec![MemberHealth::example(
        2, "etcd-2", ETCD_2, false, healthy,
    )])
}

#[tokio::test]
async fn a_live_members_name_goes_only_to_its_own_certificate_from_its_address() {
    let issuer = start_issuer_with(Some(etcd_2_alive(true)), None).await;
    let etcd_2: IpAddr = ETCD_2.parse().unwrap();
    // etcd-2's node certificate asked for from `from`, presenting `renewing`.
    let ask = |from: IpAddr, renewing: Option<(String, String)>| {
        let issuer = &issuer;
        async move {
            let trust = ServerTrust::Ca(issuer.ca.cert_pem().to_owned());
            let renewing = renewing.as_ref().map(|(c, k)| (c.as_str(), k.as_str()));
            issuer
                .request_as(trust, &PROOF_KEY, "etcd-2", CertKind::Node, from, renewing)
                .await
        }
    };
    // A join-token holder on etcd-2's address: the name is held.
    let (status, message) = refusal(ask(etcd_2, None).await);
    assert_eq!(status, 403);
    assert!(
        message.contains("node etcd-2 is a live member"),
        "{message}"
    );
    // From another address, even with etcd-2's certificate: refused, naming both addresses.
    let (cert, key) = test_support::node_cert(&issuer.ca, "etcd-2", &[etcd_2]);
    let own = Some((cert, key.to_pem()));
    let (status, message) = refusal(ask("127.0.0.3".parse().unwrap(), own.clone()).await);
    assert_eq!(status, 403);
    assert!(
        message.contains("goes only to 127.0.0.2") && message.contains("came from 127.0.0.3"),
        "{message}"
    );
    // Another node's certificate proves nothing about etcd-2.
    let (other, other_key) = test_support::node_cert(&issuer.ca, "etcd-1", &[etcd_2]);
    let (status, _) = refusal(ask(etcd_2, Some((other, other_key.to_pem()))).await);
    assert_eq!(status, 403);
    // etcd-2 itself renews: its current certificate, presented over TLS, from its address.
    let info = ask(etcd_2, own).await.unwrap();
    assert_eq!(info.common_name, "etcd-2");
    assert_eq!(
        issuer.counted(),
        [
            ("api_requests", 4),
            ("api_rejected_identity", 3),
            ("certificates_issued", 1)
        ]
    );
    issuer.stop().await;
}

#[tokio::test]
async fn a_dead_members_name_goes_to_the_host_that_replaces_it() {
    let issuer = start_issuer_with(Some(etcd_2_alive(false)), None).await;
    let info = issuer
        .request(issuer.pinned(), &PROOF_KEY, "etcd-2", CertKind::Node)
        .await
        .unwrap();
    assert_eq!(info.common_name, "etcd-2");
    issuer.stop().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_fails_the_handshake() {
    let issuer = start_issuer().await;
    let other = test_support::ca("another CA");
    let (cert, key) = test_support::node_cert(&other, "etcd-2", &[]);
    let result = issuer
        .request_as(
            ServerTrust::Ca(issuer.ca.cert_pem().to_owned()),
            &PROOF_KEY,
            "etcd-2",
            CertKind::Node,
            ETCD_2.parse().unwrap(),
            Some((&cert, &key.to_pem())),
        )
        .await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(issuer.counted(), [], "nothing reached the handler");
    issuer.stop().await;
}

/// A TCP connection from `from` that never starts TLS (it holds a slot until the handshake
/// times out).
async fn idle_connection(to: SocketAddr, from: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn connections_beyond_the_cap_or_an_addresss_rate_are_closed_and_counted() {
    use crate::api::limit::{BURST, MAX_CONNECTIONS};
    let issuer = start_issuer().await;
    let mut held = Vec::new();
    // One address opening connections back to back: past its burst they are refused.
    for _ in 0..BURST as usize + 10 {
        held.push(idle_connection(issuer.addr, "127.0.0.5").await);
    }
    // Many addresses, one connection each, while those are held: past the cap, refused.
    for i in 1..=MAX_CONNECTIONS as u8 {
        held.push(idle_connection(issuer.addr, &format!("127.0.1.{i}")).await);
    }
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let c = issuer.counted();
        let get = |n: &str| c.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        if get("api_refused_rate").is_some() && get("api_refused_busy").is_some() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not refused: {c:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing reached a handler.
    assert!(issuer
        .counted()
        .iter()
        .all(|(k, _)| !k.starts_with("api_requests")));
    drop(held);
    issuer.stop().await;
}

#[tokio::test]
async fn a_revoked_node_certificate_renews_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let crl_file = dir.path().join("crl.pem");
    let issuer = start_issuer_with(Some(etcd_2_alive(true)), Some(crl_file.clone())).await;
    let etcd_2: IpAddr = ETCD_2.parse().unwrap();
    let (cert, key) = test_support::node_cert(&issuer.ca, "etcd-2", &[etcd_2]);
    let serial = inspect(&cert).unwrap().serial_hex;
    let revoked = crate::pki::crl::Revoked {
        serial,
        name: "etcd-2".into(),
        at: 1,
    };
    let crl = issuer
        .ca
        .sign_crl(&[revoked], 2, SystemTime::now())
        .unwrap();
    std::fs::write(&crl_file, crl).unwrap();
    let trust = ServerTrust::Ca(issuer.ca.cert_pem().to_owned());
    let key_pem = key.to_pem();
    let result = issuer
        .request_as(
            trust,
            &PROOF_KEY,
            "etcd-2",
            CertKind::Node,
            etcd_2,
            Some((&cert, &key_pem)),
        )
        .await;
    let (status, message) = refusal(result);
    assert_eq!(status, 403);
    assert!(message.contains("is a live member"), "{message}");
    issuer.stop().await;
}
