//! The real handler end to end: an [`ApiServer`] on a loopback port with TLS material from the
//! crate's own CA, asked through the crate's own client.

use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::api::{request_certificate, ApiClientError, CertKind, CsrRequest, ServerTrust};
use crate::gossip::{NodeId, NodeMeta, Peer, PeerState};
use crate::liveness::Liveness;
use crate::pki::test_support::{self, DAY};
use crate::pki::{inspect, server_config, CertInfo, NodeKey};

const PROOF_KEY: [u8; 32] = [3; 32];
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

/// Gossip knows `etcd-2` at 10.0.0.2.
fn view() -> GossipView {
    let addr = "10.0.0.2:7946".parse().unwrap();
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
        proof_key: PROOF_KEY,
        cert_validity: DAY,
        counters: counters.clone(),
        tracker: tracker.clone(),
        heartbeat: Liveness::new().register("api"),
        restore: None,
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
    /// Asks for a certificate for a fresh key, proving `proof_key`.
    async fn request(
        &self,
        trust: ServerTrust,
        proof_key: &[u8; 32],
        name: &str,
        kind: CertKind,
    ) -> Result<CertInfo, ApiClientError> {
        let key = NodeKey::generate().unwrap();
        let csr = key.csr_pem(name).unwrap();
        let key_pem = key.to_pem();
        let csr = CsrRequest {
            name,
            kind,
            csr_pem: &csr,
            key_pem: &key_pem,
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
    let ips: Vec<IpAddr> = ["10.0.0.2", "127.0.0.1", "::1"]
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
