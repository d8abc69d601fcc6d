//! What the issuer answers to a signing request, decided purely from the raw body, its proof,
//! the clock, whether this agent holds the CA, the gossip view, who asks (the connection's
//! address and the node certificate it presented, if any) and which etcd members hold which
//! names. The HTTP handler in [`super::server`] only gathers these inputs, applies the
//! decision and counts the outcome, so every grant and every refusal can be tested without
//! sockets.
//!
//! A node certificate for name N is bound to identity: it goes only to a request from the
//! address its SANs will carry (N's gossip address), and only when no member holds N (a new
//! host), when the requester presents N's current certificate (renewal), or when N's member
//! does not answer (a host that lost its disk comes back under its name). Everything else is
//! refused, counted and logged with the peer's address.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;

use super::proof;
use super::wire::{CertKind, SignRequest, SignResponse};
use crate::etcd::MemberHealth;
use crate::gossip::GossipView;
use crate::metrics::Counters;
use crate::pki::{cert_spec, CertProfile, CertSpec, CertificateAuthority};

/// Requests older (or newer) than this are refused.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Everything besides the request that the decision depends on.
pub struct SignContext<'a> {
    /// The proof keys of every accepted join token (two while a rotation runs).
    pub proof_keys: &'a [[u8; 32]],
    /// The proof key derived from the client token, once the cluster has one.
    pub client_proof_key: Option<&'a [u8; 32]>,
    /// This host's clock.
    pub now: SystemTime,
    /// Lifetimes of issued certificates.
    pub validity: Lifetimes,
    /// Whether this agent holds the CA (is the issuer).
    pub holds_ca: bool,
    /// Gossip's members, where node requests are looked up.
    pub view: &'a GossipView,
    /// Who asks.
    pub requester: Requester<'a>,
    /// The etcd members and whether each answers (looked up for node requests only).
    pub members: &'a Members,
    /// The roles this agent's config defines (`[[roles]]`), which client requests may ask.
    pub roles: &'a [String],
    /// Those of them that client-token holders may ask (`client_agents = true`).
    pub client_agent_roles: &'a [String],
}

/// How long issued certificates live, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// `pki.node_cert_validity`.
    pub node: Duration,
    /// `pki.client_cert_validity`.
    pub client: Duration,
}

impl Lifetimes {
    /// The lifetimes the config sets.
    pub fn from_pki(pki: &crate::config::PkiSection) -> Self {
        Self {
            node: pki.node_validity(),
            client: pki.client_validity(),
        }
    }

    /// The same lifetime for both kinds.
    pub fn both(d: Duration) -> Self {
        Self { node: d, client: d }
    }

    fn of(&self, kind: CertKind) -> Duration {
        match kind {
            CertKind::Node => self.node,
            CertKind::Client => self.client,
        }
    }
}

/// The other end of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requester<'a> {
    /// The connection's source address.
    pub addr: IpAddr,
    /// The name in the node certificate it presented (verified against the CA in the TLS
    /// handshake), if it presented one.
    pub node_cert: Option<&'a str>,
}

/// What the issuer knows of etcd's members when it decides a node request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Members {
    /// No cluster yet (the seed signs before etcd exists): nobody holds a name.
    NotFormed,
    /// There is a cluster but its member list could not be read: no name can be checked.
    Unknown(String),
    /// The members, each with whether it answered just now.
    Known(Vec<MemberHealth>),
}

/// Which credential a request proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The join token: any certificate the identity rules allow.
    Join,
    /// The client token: client certificates only, under names no agent uses.
    Client,
}

/// A request whose proof, format and time were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub request: SignRequest,
    pub credential: Credential,
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
    /// A client certificate's etcd role (None: the default client role).
    pub role: Option<String>,
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
    /// The request does not come from the address the certificate would carry (403).
    #[error(
        "a certificate for node {name} goes only to {expected} (its gossip address), and this \
         request came from {from}: run the agent on the host with that address (no NAT \
         between agents), or give this host its own name"
    )]
    WrongAddress {
        name: String,
        from: IpAddr,
        expected: IpAddr,
    },
    /// A live member holds the name and the requester did not present its certificate (403).
    #[error(
        "node {name} is a live member of the cluster: only that member renews its certificate \
         (over TLS with its current one); give this host its own name, or remove the member \
         first (quorate leave on it)"
    )]
    NameHeld { name: String },
    /// The member list could not be read, so the name cannot be checked (503).
    #[error("cannot check whether a member holds the name {name}: {why}; retry shortly")]
    CannotCheck { name: String, why: String },
    /// The certificate's name could not be made an etcd user yet (503).
    #[error("cannot give {name} its etcd user yet: {why}; retry shortly")]
    NoEtcdUser { name: String, why: String },
    /// A node certificate for a name that client certificates were issued under (403).
    #[error(
        "node name {name} is a client's etcd user (role {role}): its client certificates would \
         hold the node's root role; give this host another name, or revoke them first (quorate \
         cert revoke --name {name})"
    )]
    NameIsClient { name: String, role: String },
    /// A client-token holder asked for a node certificate (403).
    #[error(
        "the client token admits client certificates only, never a node certificate: a member \
         needs the cluster's join token"
    )]
    NodeWithClientToken { name: String },
    /// A client-token holder asked for a name reserved to the agents (403).
    #[error("client name {name:?} is reserved ({why}): choose another name for this client")]
    ReservedName { name: String, why: &'static str },
    /// A client name outside the allowed characters or length (400).
    #[error("client name {name:?} must be 1-64 letters, digits, '-', '_', '.' or '@'")]
    InvalidClientName { name: String },
    /// A client certificate asked for a role the members do not define (400).
    #[error(
        "role {role:?} is not one of the members' [[roles]] ({}): define it in every member's \
         config, or ask for one of those",
        if known.is_empty() { "none is defined".to_owned() } else { known.join(", ") }
    )]
    UnknownRole { role: String, known: Vec<String> },
    /// The client token asked for a role that is not open to client agents (403).
    #[error(
        "role {role:?} is not open to client-mode hosts holding the client token ({}): set \
         client_agents = true in that role's [[roles]] entry on every member, or use another role",
        if allowed.is_empty() { "none is".to_owned() } else { format!("open: {}", allowed.join(", ")) }
    )]
    RoleNotForClientAgents { role: String, allowed: Vec<String> },
    /// A node certificate request named a role (400).
    #[error("a node certificate has no role (agents hold etcd's root role): leave role out")]
    RoleForNode,
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
            Refusal::WrongAddress { .. }
            | Refusal::NameHeld { .. }
            | Refusal::NodeWithClientToken { .. }
            | Refusal::NameIsClient { .. }
            | Refusal::ReservedName { .. }
            | Refusal::RoleNotForClientAgents { .. } => StatusCode::FORBIDDEN,
            Refusal::CannotCheck { .. } | Refusal::NoEtcdUser { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::Malformed(_)
            | Refusal::ClockSkew { .. }
            | Refusal::InvalidClientName { .. }
            | Refusal::UnknownRole { .. }
            | Refusal::RoleForNode
            | Refusal::Signing(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Whether this is an authenticated but invalid request: those are counted as
    /// `api_rejected_invalid` (or `api_rejected_identity`) and logged. Asking a non-issuer,
    /// or at a moment the names cannot be checked, is neither.
    pub fn is_invalid(&self) -> bool {
        !matches!(
            self,
            Refusal::Unauthenticated
                | Refusal::NotIssuer
                | Refusal::CannotCheck { .. }
                | Refusal::NoEtcdUser { .. }
        )
    }

    /// Adds the refusal to the counter it belongs to, if any.
    pub fn count(&self, counters: &Counters) {
        match self {
            Refusal::Unauthenticated => Counters::inc(&counters.api_rejected_unauthenticated),
            Refusal::NotIssuer | Refusal::CannotCheck { .. } | Refusal::NoEtcdUser { .. } => {}
            Refusal::WrongAddress { .. }
            | Refusal::NameHeld { .. }
            | Refusal::NodeWithClientToken { .. }
            | Refusal::NameIsClient { .. }
            | Refusal::ReservedName { .. }
            | Refusal::RoleNotForClientAgents { .. } => {
                Counters::inc(&counters.api_rejected_identity)
            }
            _ => Counters::inc(&counters.api_rejected_invalid),
        }
    }
}

/// Decides the answer to the request `body` carrying the proof header value `proof`. The
/// checks run in this order: proof (on the raw bytes, before any parsing), JSON, clock skew,
/// CA, then the profile's own rules.
pub fn decide(ctx: &SignContext<'_>, body: &[u8], proof: &str) -> Result<Grant, Refusal> {
    let req = authenticate(ctx, body, proof)?;
    grant(ctx, req)
}

/// Which token `proof` proves for `body`: the join token first, then the client token.
fn credential(ctx: &SignContext<'_>, body: &[u8], proof: &str) -> Option<Credential> {
    if ctx.proof_keys.iter().any(|k| proof::verify(k, body, proof)) {
        return Some(Credential::Join);
    }
    ctx.client_proof_key
        .filter(|key| proof::verify(key, body, proof))
        .map(|_| Credential::Client)
}

/// The first half of [`decide`]: proof, JSON, clock skew and CA. The handler looks the
/// members up between the two halves, and only for an authenticated node request.
pub fn authenticate(
    ctx: &SignContext<'_>,
    body: &[u8],
    proof: &str,
) -> Result<Authenticated, Refusal> {
    let credential = credential(ctx, body, proof).ok_or(Refusal::Unauthenticated)?;
    let req: SignRequest =
        serde_json::from_slice(body).map_err(|e| Refusal::Malformed(e.to_string()))?;
    let skew = clock_skew(ctx.now, req.sent_at);
    if skew > MAX_CLOCK_SKEW {
        return Err(Refusal::ClockSkew { skew });
    }
    if !ctx.holds_ca {
        return Err(Refusal::NotIssuer);
    }
    Ok(Authenticated {
        request: req,
        credential,
    })
}

/// The second half of [`decide`]: the profile's own rules, identity included.
pub fn grant(ctx: &SignContext<'_>, auth: Authenticated) -> Result<Grant, Refusal> {
    let req = auth.request;
    if auth.credential == Credential::Client && req.kind == CertKind::Node {
        return Err(Refusal::NodeWithClientToken { name: req.name });
    }
    if req.kind == CertKind::Client {
        client_name_allowed(&req.name, ctx.view)?;
    }
    match (&req.role, req.kind) {
        (Some(_), CertKind::Node) => return Err(Refusal::RoleForNode),
        (Some(role), CertKind::Client) if !ctx.roles.contains(role) => {
            return Err(Refusal::UnknownRole {
                role: role.clone(),
                known: ctx.roles.to_vec(),
            })
        }
        (Some(role), CertKind::Client)
            if auth.credential == Credential::Client && !ctx.client_agent_roles.contains(role) =>
        {
            return Err(Refusal::RoleNotForClientAgents {
                role: role.clone(),
                allowed: ctx.client_agent_roles.to_vec(),
            })
        }
        _ => {}
    }
    let profile = profile(&req, ctx)?;
    Ok(Grant {
        spec: cert_spec(&profile, ctx.now, ctx.validity.of(req.kind)),
        name: req.name,
        kind: req.kind,
        csr_pem: req.csr_pem,
        role: req.role,
    })
}

/// Signs a granted request with `ca`; the answer carries `crl` (the issuer's revocation
/// list), or an empty list signed now when the issuer has none yet.
pub fn issue(
    ca: &CertificateAuthority,
    grant: &Grant,
    crl: Option<String>,
) -> Result<SignResponse, Refusal> {
    let cert_pem = ca
        .sign_csr(&grant.csr_pem, &grant.spec)
        .map_err(|e| Refusal::Signing(e.to_string()))?;
    let crl_pem = crl.or_else(|| ca.sign_crl(&[], 0, SystemTime::now()).ok());
    Ok(SignResponse {
        cert_pem,
        ca_pem: ca.cert_pem().to_owned(),
        crl_pem,
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
/// from the request beyond its name, and only the holder of that identity gets them.
fn profile(req: &SignRequest, ctx: &SignContext<'_>) -> Result<CertProfile, Refusal> {
    match req.kind {
        CertKind::Node => {
            let name = req.name.clone();
            let meta = ctx
                .view
                .peer(&req.name)
                .filter(|p| p.is_live())
                .and_then(|p| p.meta.as_ref())
                .ok_or_else(|| Refusal::UnknownNode { name: name.clone() })?;
            let expected = meta.gossip_addr.ip().to_canonical();
            let from = ctx.requester.addr.to_canonical();
            if from != expected {
                return Err(Refusal::WrongAddress {
                    name,
                    from,
                    expected,
                });
            }
            if ctx.requester.node_cert != Some(req.name.as_str()) {
                name_free(&req.name, ctx.members)?;
            }
            Ok(CertProfile::Node {
                name,
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

/// The client names nobody gets, whatever the token: a name an agent uses, or one of
/// quorate's own identities (`root`, `quorate*`), whose certificate would carry their rights
/// once etcd checks names.
fn client_name_allowed(name: &str, view: &GossipView) -> Result<(), Refusal> {
    let name = name.to_owned();
    let why = if name.eq_ignore_ascii_case("root") {
        "etcd's root user"
    } else if name.to_ascii_lowercase().starts_with("quorate") {
        "names starting with quorate belong to the agents"
    } else if view.peer(&name).is_some() {
        "an agent of this cluster has that name"
    } else {
        return Ok(());
    };
    Err(Refusal::ReservedName { name, why })
}

/// Whether a new certificate for `name` may go to someone who does not hold its current one:
/// no member holds the name, or its member does not answer (it is being replaced).
pub fn name_free(name: &str, members: &Members) -> Result<(), Refusal> {
    match members {
        Members::NotFormed => Ok(()),
        Members::Unknown(why) => Err(Refusal::CannotCheck {
            name: name.to_owned(),
            why: why.clone(),
        }),
        Members::Known(list) => match list.iter().find(|m| m.member.name == name) {
            Some(m) if m.healthy => Err(Refusal::NameHeld {
                name: name.to_owned(),
            }),
            _ => Ok(()),
        },
    }
}

/// Why `name` cannot be a client certificate's name in any case (characters, length, or a name
/// reserved to etcd's root and the agents), or None.
pub fn client_name_problem(name: &str) -> Option<&'static str> {
    if !valid_client_name(name) {
        Some("a client name is 1-64 letters, digits, '-', '_', '.' or '@'")
    } else if name.eq_ignore_ascii_case("root") {
        Some("reserved: etcd's root user")
    } else if name.to_ascii_lowercase().starts_with("quorate") {
        Some("reserved: names starting with quorate belong to the agents")
    } else {
        None
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
