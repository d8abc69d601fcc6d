//! Handing the CA seal secret ([`crate::issuer::seal_secret`]) to a voter: the requester
//! presents its node certificate in the TLS handshake, and gets the secret only while etcd
//! lists that name as a started voting member (not a learner, not a host that only holds a
//! certificate) and the request comes from the member's gossip address. The decision is pure
//! ([`may_hold`]); the handler is in [`super::server`], the requester side is [`fetch`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use http_body_util::Full;
use rustls_pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsConnector;

use super::sign::Members;
use super::wire::ErrorBody;
use crate::gossip::GossipView;
use crate::issuer::seal_secret::SealSecret;

/// Path of the endpoint.
pub const SEAL_PATH: &str = "/v1/seal-secret";

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealAnswer {
    /// The secret's text form.
    pub secret: String,
}

/// Why the secret is not handed out. The `Display` text is what the requester is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealRefusal {
    /// No node certificate of this cluster in the handshake, or a revoked one (401).
    #[error("present this node's certificate (a node of this cluster, not revoked)")]
    NoCertificate,
    /// This agent does not hold the secret (503).
    #[error("this agent does not hold the CA seal secret; ask another member")]
    NotHeld,
    /// The member list could not be read (503).
    #[error("cannot check the members: {0}; retry shortly")]
    CannotCheck(String),
    /// The name is not a started voting member (403).
    #[error("{name} is not a voting member of the cluster: only voters get the CA seal secret")]
    NotVoter { name: String },
    /// The request does not come from the member's gossip address (403).
    #[error(
        "the CA seal secret of {name} goes only to {expected}, and this request came from {from}"
    )]
    WrongAddress {
        name: String,
        from: IpAddr,
        expected: IpAddr,
    },
}

impl SealRefusal {
    /// The HTTP status answered.
    pub fn status(&self) -> StatusCode {
        match self {
            SealRefusal::NoCertificate => StatusCode::UNAUTHORIZED,
            SealRefusal::NotHeld | SealRefusal::CannotCheck(_) => StatusCode::SERVICE_UNAVAILABLE,
            SealRefusal::NotVoter { .. } | SealRefusal::WrongAddress { .. } => {
                StatusCode::FORBIDDEN
            }
        }
    }

    /// Whether it counts as an identity refusal (`api_rejected_identity`).
    pub fn is_identity(&self) -> bool {
        self.status() != StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Whether the node `name` (from its verified, unrevoked certificate) asking from `from` may
/// have the secret (pure).
pub fn may_hold(
    name: Option<&str>,
    from: IpAddr,
    view: &GossipView,
    members: &Members,
) -> Result<(), SealRefusal> {
    let name = name.ok_or(SealRefusal::NoCertificate)?;
    let list = match members {
        Members::Known(list) => list,
        Members::Unknown(why) => return Err(SealRefusal::CannotCheck(why.clone())),
        Members::NotFormed => return Err(SealRefusal::CannotCheck("no cluster yet".into())),
    };
    let voter = list
        .iter()
        .any(|m| m.member.name == name && !m.member.is_learner);
    if !voter {
        return Err(SealRefusal::NotVoter { name: name.into() });
    }
    let expected = view
        .peer(name)
        .and_then(|p| p.meta.as_ref())
        .map(|m| m.gossip_addr.ip().to_canonical())
        .ok_or_else(|| SealRefusal::NotVoter { name: name.into() })?;
    let from = from.to_canonical();
    if from != expected {
        return Err(SealRefusal::WrongAddress {
            name: name.into(),
            from,
            expected,
        });
    }
    Ok(())
}

/// Asks the agent at `addr` for the secret, presenting this node's certificate, connecting
/// from `from` (its advertised address).
pub async fn fetch(
    addr: SocketAddr,
    from: IpAddr,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    timeout: Duration,
) -> Result<SealSecret, String> {
    let work = async {
        let config = crate::pki::client_config_with_identity(ca_pem, cert_pem, key_pem)
            .map_err(|e| e.to_string())?;
        let tcp = super::client::connect_from(addr, Some(from))
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let tls = TlsConnector::from(Arc::clone(&config))
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .map_err(|e| format!("TLS with {addr}: {e}"))?;
        let request = hyper::Request::post(SEAL_PATH)
            .header(hyper::header::HOST, addr.to_string())
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let (status, bytes) = crate::http1::request(tls, request, 64 * 1024).await?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(format!("{addr} answered {status}: {message}"));
        }
        let answer: SealAnswer =
            serde_json::from_slice(&bytes).map_err(|e| format!("malformed answer: {e}"))?;
        SealSecret::from_text(&answer.secret).ok_or_else(|| "malformed secret".to_owned())
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("{addr} did not answer within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::{Member, MemberHealth};
    use crate::gossip::{NodeId, NodeMeta, Peer, PeerState};

    fn view() -> GossipView {
        let peer = |name: &str, addr: &str| {
            let addr: SocketAddr = addr.parse().unwrap();
            Peer {
                id: NodeId::new(name, addr, 1),
                state: PeerState::Alive,
                meta: Some(NodeMeta::example(name, addr)),
            }
        };
        GossipView {
            peers: vec![peer("n1", "10.0.0.1:7946"), peer("n2", "10.0.0.2:7946")],
            plans: Vec::new(),
        }
    }

    fn members(learner: bool) -> Members {
        let m = |id: u64, name: &str, is_learner: bool| MemberHealth {
            member: Member {
                id,
                name: name.into(),
                peer_urls: vec![],
                client_urls: vec![],
                is_learner,
            },
            healthy: true,
        };
        Members::Known(vec![m(1, "n1", false), m(2, "n2", learner)])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_started_voter_from_its_address_gets_it() {
        assert_eq!(
            may_hold(Some("n2"), ip("10.0.0.2"), &view(), &members(false)),
            Ok(())
        );
        assert_eq!(
            may_hold(Some("n2"), ip("::ffff:10.0.0.2"), &view(), &members(false)),
            Ok(())
        );
    }

    #[test]
    fn learners_strangers_other_addresses_and_no_certificate_are_refused() {
        let v = view();
        assert_eq!(
            may_hold(Some("n2"), ip("10.0.0.2"), &v, &members(true)),
            Err(SealRefusal::NotVoter { name: "n2".into() })
        );
        assert_eq!(
            may_hold(Some("n3"), ip("10.0.0.3"), &v, &members(false)),
            Err(SealRefusal::NotVoter { name: "n3".into() })
        );
        let wrong = may_hold(Some("n2"), ip("10.0.0.9"), &v, &members(false)).unwrap_err();
        assert!(matches!(wrong, SealRefusal::WrongAddress { .. }));
        assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
        assert!(wrong.is_identity());
        assert_eq!(
            may_hold(None, ip("10.0.0.2"), &v, &members(false)),
            Err(SealRefusal::NoCertificate)
        );
        let unknown = may_hold(
            Some("n2"),
            ip("10.0.0.2"),
            &v,
            &Members::Unknown("x".into()),
        );
        assert!(matches!(unknown, Err(SealRefusal::CannotCheck(_))));
        assert!(!unknown.unwrap_err().is_identity());
        assert!(matches!(
            may_hold(Some("n2"), ip("10.0.0.2"), &v, &Members::NotFormed),
            Err(SealRefusal::CannotCheck(_))
        ));
    }
}
