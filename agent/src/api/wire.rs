//! The agent API's request and response bodies (JSON).

use serde::{Deserialize, Serialize};

/// Path of the certificate-signing endpoint.
pub const SIGN_PATH: &str = "/v1/sign";

/// What kind of certificate is asked for; the issuer's policy decides its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertKind {
    /// A node's certificate (server + client auth, SANs from the node's gossiped address).
    Node,
    /// A client certificate for etcdctl and applications (client auth only).
    Client,
}

/// A certificate signing request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignRequest {
    /// The node name (for `Node`) or the client name (CN, for `Client`).
    pub name: String,
    pub kind: CertKind,
    pub csr_pem: String,
    /// Seconds since the Unix epoch when the request was made; stale requests are refused.
    pub sent_at: u64,
    /// Client certificates: the etcd role of the name (one of the members' `[[roles]]`);
    /// None: the default client role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// A signed certificate and the CA that signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignResponse {
    pub cert_pem: String,
    pub ca_pem: String,
    /// The revocation list as the issuer has it, so that a new member's etcd starts with one
    /// (absent from older issuers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_pem: Option<String>,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
