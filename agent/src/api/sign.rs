//! What the issuer answers to a signing request, decided purely from the raw body, its proof,
//! the clock, whether this agent holds the CA and the gossip view. The HTTP handler in
//! [`super::server`] only gathers these inputs, applies the decision and counts the outcome,
//! so every grant and every refusal can be tested without sockets.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;

use super::proof;
use super::wire::{CertKind, SignRequest, SignResponse};
use crate::gossip::GossipView;
use crate::metrics::Counters;
use crate::pki::{cert_spec, CertProfile, CertSpec, CertificateAuthority};

/// Requests older (or newer) than this are refused.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Everything besides the request that the decision depends on.
pub struct SignContext<'a> {
    /// The proof key derived from the join token.
    pub proof_key: &'a [u8; 32],
    /// This host's clock.
    pub now: SystemTime,
    /// Lifetime of issued certificates.
    pub validity: Duration,
    /// Whether this agent holds the CA (is the issuer).
    pub holds_ca: bool,
    /// Gossip's members, where node requests are looked up.
    pub view: &'a GossipView,
}

/// A request the issuer will sign: the certificate's complete content and the CSR whose
/// public key it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The name asked for (node or client name).
    pub name: String,
    pub kind: CertKind,
    /// The CSR, whose public key alone is used.
    pub csr_pem: String,
    /// Everything else the certificate says, from policy and gossip.
    pub spec: CertSpec,
}

/// Why a signing request is refused. The `Display` text is what the requester is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The proof header is missing or does not match the body (401).
    #[error("missing or wrong join-token proof; use the cluster's join token")]
    Unauthenticated,
    /// The body is not a [`SignRequest`] (400).
    #[error("malformed request: {0}")]
    Malformed(String),
    /// `sent_at` is more than [`MAX_CLOCK_SKEW`] away from this host's clock (400).
    #[error(
        "request time is {}s away from this host's clock; synchronise the clocks (NTP)",
        skew.as_secs()
    )]
    ClockSkew { skew: Duration },
    /// This agent is not the issuer (503, not counted).
    #[error("this agent does not hold the CA; ask the issuer")]
    NotIssuer,
    /// No live gossip member of that name with metadata (409: it may appear shortly).
    #[error("node {name} is not known in gossip yet; retry shortly")]
    UnknownNode { name: String },
    /// A client name outside the allowed characters or length (400).
    #[error("client name {name:?} must be 1-64 letters, digits, '-', '_', '.' or '@'")]
    InvalidClientName { name: String },
    /// The CA could not sign the CSR (bad PEM, bad signature): the CA's own message (400).
    #[error("{0}")]
    Signing(String),
}

impl Refusal {
    /// The HTTP status answered.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Unauthenticated => StatusCode::UNAUTHORIZED,
            Refusal::NotIssuer => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::UnknownNode { .. } => StatusCode::CONFLICT,
            Refusal::Malformed(_)
            | Refusal::ClockSkew { .. }
            | Refusal::InvalidClientName { .. }
            | Refusal::Signing(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Whether this is an authenticated but invalid request: those are counted as
    /// `api_rejected_invalid` and logged. Asking a non-issuer is neither.
    pub fn is_invalid(&self) -> bool {
        !matches!(self, Refusal::Unauthenticated | Refusal::NotIssuer)
    }

    /// Adds the refusal to the counter it belongs to, if any.
    pub fn count(&self, counters: &Counters) {
        match self {
            Refusal::Unauthenticated => Counters::inc(&counters.api_rejected_unauthenticated),
            Refusal::NotIssuer => {}
            _ => Counters::inc(&counters.api_rejected_invalid),
        }
    }
}

/// Decides the answer to the request `body` carrying the proof header value `proof`. The
/// checks run in this order: proof (on the raw bytes, before any parsing), JSON, clock skew,
/// CA, then the profile's own rules.
pub fn decide(ctx: &SignContext<'_>, body: &[u8], proof: &str) -> Result<Grant, Refusal> {
    if !proof::verify(ctx.proof_key, body, proof) {
        return Err(Refusal::Unauthenticated);
    }
    let req: SignRequest =
        serde_json::from_slice(body).map_err(|e| Refusal::Malformed(e.to_string()))?;
    let skew = clock_skew(ctx.now, req.sent_at);
    if skew > MAX_CLOCK_SKEW {
        return Err(Refusal::ClockSkew { skew });
    }
    if !ctx.holds_ca {
        return Err(Refusal::NotIssuer);
    }
    let profile = profile(&req, ctx.view)?;
    Ok(Grant {
        spec: cert_spec(&profile, ctx.now, ctx.validity),
        name: req.name,
        kind: req.kind,
        csr_pem: req.csr_pem,
    })
}

/// Signs a granted request with `ca`.
pub fn issue(ca: &CertificateAuthority, grant: &Grant) -> Result<SignResponse, Refusal> {
    let cert_pem = ca
        .sign_csr(&grant.csr_pem, &grant.spec)
        .map_err(|e| Refusal::Signing(e.to_string()))?;
    Ok(SignResponse {
        cert_pem,
        ca_pem: ca.cert_pem().to_owned(),
    })
}

/// How far `sent_at` (seconds since the epoch) is from `now`, either way. A time too far in
/// the future to represent counts as infinitely far.
fn clock_skew(now: SystemTime, sent_at: u64) -> Duration {
    let Some(sent) = UNIX_EPOCH.checked_add(Duration::from_secs(sent_at)) else {
        return Duration::MAX;
    };
    now.duration_since(sent).unwrap_or_else(|e| e.duration())
}

/// The certificate profile for `req`: a node's names and addresses come from gossip, never
/// from the request beyond its name.
fn profile(req: &SignRequest, view: &GossipView) -> Result<CertProfile, Refusal> {
    match req.kind {
        CertKind::Node => {
            let meta = view
                .peer(&req.name)
                .filter(|p| p.is_live())
                .and_then(|p| p.meta.as_ref())
                .ok_or_else(|| Refusal::UnknownNode {
                    name: req.name.clone(),
                })?;
            Ok(CertProfile::Node {
                name: req.name.clone(),
                addrs: vec![meta.gossip_addr.ip()],
            })
        }
        CertKind::Client if valid_client_name(&req.name) => Ok(CertProfile::Client {
            name: req.name.clone(),
        }),
        CertKind::Client => Err(Refusal::InvalidClientName {
            name: req.name.clone(),
        }),
    }
}

fn valid_client_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

#[cfg(test)]
mod tests;
