//! Join token rotation without a restart, in three steps every member takes by itself from
//! what the others record in etcd (Consul's keyring: install, use, remove):
//!
//! 1. `quorate token rotate` stores a link `/quorate/token/chain/<old>`: the new token sealed
//!    with the old one's [`KeyPurpose::RotationSeal`] key. Every member reads it and then
//!    accepts both tokens (still sealing and proving with the old one).
//! 2. Once every etcd member records that it accepts the new token, each member seals and
//!    proves with the new one (still accepting the old).
//! 3. Once every member records that it uses the new one, each member drops the old one: a
//!    host given the old token is no longer admitted.
//!
//! A member records its ring as fingerprints in `/quorate/token/members/<name>`. A member
//! that is down blocks steps 2 and 3 (nobody stops accepting a token somebody still uses)
//! until it comes back, is removed, or leaves. A member that comes back after the rotation
//! (its ring holds only the old token) reads the chain over etcd with its node certificate,
//! which no token change touches, and follows it to the newest token. Only agents read
//! `/quorate/` (etcd RBAC), so the chain tells a token holder nothing.

use std::collections::BTreeMap;

use base64::Engine;
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::aead::Aead;
use crate::keyring::Keyring;
use crate::token::{JoinToken, KeyPurpose};

/// Everything rotation keeps in etcd is under this prefix.
pub const PREFIX: &str = "/quorate/token/";
/// `<prefix><old fingerprint>`: the token that follows it.
pub const CHAIN_PREFIX: &str = "/quorate/token/chain/";
/// `<prefix><member name>`: that member's ring, as fingerprints.
pub const MEMBERS_PREFIX: &str = "/quorate/token/members/";

/// One link of the chain: the token that follows another, sealed with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    /// The fingerprint of the token that follows.
    pub to: String,
    /// That token, sealed with the previous one's rotation key, base64.
    pub sealed: String,
    /// When the rotation began (seconds since the epoch).
    pub created_at: u64,
}

/// A member's ring as it records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRing {
    /// The fingerprint of the token it seals and proves with.
    pub primary: String,
    /// Every token it accepts, the primary included.
    pub accepted: Vec<String>,
}

impl MemberRing {
    pub fn of(ring: &Keyring) -> Self {
        Self {
            primary: ring.primary().fingerprint(),
            accepted: ring.accepted().map(|t| t.fingerprint()).collect(),
        }
    }

    /// One token, accepted and used, nothing else.
    fn settled_on(&self, fingerprint: &str) -> bool {
        self.primary == fingerprint && self.accepted.iter().all(|a| a == fingerprint)
    }
}

fn aad(from: &str, to: &str, created_at: u64) -> Vec<u8> {
    format!("{CHAIN_PREFIX}{from} -> {to} {created_at}").into_bytes()
}

/// The link from `from` to `to`.
pub fn seal_link(from: &JoinToken, to: &JoinToken, created_at: u64) -> ChainLink {
    let aead = Aead::new(&from.derive(KeyPurpose::RotationSeal));
    let to_fp = to.fingerprint();
    let sealed = aead.seal(
        &aad(&from.fingerprint(), &to_fp, created_at),
        to.expose().as_bytes(),
    );
    ChainLink {
        to: to_fp,
        sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
        created_at,
    }
}

/// The token `link` leads to from `from`, when it opens with `from` and is what it claims.
pub fn open_link(from: &JoinToken, link: &ChainLink) -> Option<JoinToken> {
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(&link.sealed)
        .ok()?;
    let aead = Aead::new(&from.derive(KeyPurpose::RotationSeal));
    let plain = aead
        .open(
            &aad(&from.fingerprint(), &link.to, link.created_at),
            &sealed,
        )
        .ok()?;
    let token = JoinToken::parse(std::str::from_utf8(&plain).ok()?).ok()?;
    (token.fingerprint() == link.to).then_some(token)
}

/// What etcd holds under [`PREFIX`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    /// By the fingerprint of the token they lead from.
    pub chain: BTreeMap<String, ChainLink>,
    /// By member name.
    pub members: BTreeMap<String, MemberRing>,
}

impl Records {
    /// Decodes `(key, value)` pairs; a value that does not decode is skipped (and named in
    /// the second half).
    pub fn parse<'a>(kvs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> (Self, Vec<String>) {
        let mut records = Records::default();
        let mut bad = Vec::new();
        for (key, value) in kvs {
            if let Some(from) = key.strip_prefix(CHAIN_PREFIX) {
                match serde_json::from_slice(value) {
                    Ok(link) => {
                        records.chain.insert(from.to_owned(), link);
                    }
                    Err(_) => bad.push(key.to_owned()),
                }
            } else if let Some(name) = key.strip_prefix(MEMBERS_PREFIX) {
                match serde_json::from_slice(value) {
                    Ok(ring) => {
                        records.members.insert(name.to_owned(), ring);
                    }
                    Err(_) => bad.push(key.to_owned()),
                }
            }
        }
        (records, bad)
    }
}

/// The newest token the chain leads to from the ring's primary (or, failing that, from
/// another token it accepts); None when nothing follows.
pub fn newest(ring: &Keyring, chain: &BTreeMap<String, ChainLink>) -> Option<JoinToken> {
    ring.accepted().find_map(|start| {
        let mut at = start.clone();
        let mut moved = false;
        // A chain is as long as the number of rotations; the bound only stops a loop.
        for _ in 0..=chain.len() {
            let Some(next) = chain
                .get(&at.fingerprint())
                .and_then(|link| open_link(&at, link))
            else {
                break;
            };
            at = next;
            moved = true;
        }
        moved.then_some(at)
    })
}

/// Where a rotation stands, from the members' records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The new token's fingerprint.
    pub to: String,
    pub step: Step,
    /// The members the next step waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<String>,
}

/// The step a rotation is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Members are installing the new token (accepting it).
    Install,
    /// Every member accepts it; members are switching to it.
    Use,
    /// Every member uses it; members are dropping the old one.
    Retire,
}

/// The records with this member's ring in place of its own (possibly older) record.
fn with_own(
    records: &BTreeMap<String, MemberRing>,
    me: &str,
    ring: &Keyring,
) -> BTreeMap<String, MemberRing> {
    let mut all = records.clone();
    all.insert(me.to_owned(), MemberRing::of(ring));
    all
}

/// Where the rotation to `target` stands among `members` (started etcd members' names).
pub fn progress(
    target: &JoinToken,
    members: &[String],
    records: &BTreeMap<String, MemberRing>,
) -> Progress {
    let to = target.fingerprint();
    let lacking = |ok: &dyn Fn(&MemberRing) -> bool| -> Vec<String> {
        members
            .iter()
            .filter(|m| !records.get(*m).is_some_and(ok))
            .cloned()
            .collect()
    };
    let not_accepting = lacking(&|r| r.accepted.contains(&to));
    if !not_accepting.is_empty() {
        return Progress {
            to,
            step: Step::Install,
            waiting: not_accepting,
        };
    }
    let not_using = lacking(&|r| r.primary == to);
    if !not_using.is_empty() {
        return Progress {
            to,
            step: Step::Use,
            waiting: not_using,
        };
    }
    let waiting = lacking(&|r| r.settled_on(&to));
    Progress {
        to,
        step: Step::Retire,
        waiting,
    }
}

/// The ring this member should hold next, and the rotation's progress (None: no rotation).
/// `newest` is the chain's end from `ring` ([`newest`]); `members` the started etcd members'
/// names; `me` this member's name.
pub fn next_ring(
    ring: &Keyring,
    newest: Option<JoinToken>,
    members: &[String],
    records: &BTreeMap<String, MemberRing>,
    me: &str,
) -> (Keyring, Option<Progress>) {
    let target = match newest {
        Some(t) => t,
        // A rotation this member already switched for: the primary is the target.
        None if !ring.others().is_empty() => ring.primary().clone(),
        None => return (ring.clone(), None),
    };
    // Step 1: accept it.
    if !ring.accepts(&target) {
        let mut others = ring.others().to_vec();
        others.push(target.clone());
        let next = Keyring::new(ring.primary().clone(), others);
        let progress = progress(&target, members, &with_own(records, me, &next));
        return (next, Some(progress));
    }
    let now = progress(&target, members, &with_own(records, me, ring));
    let next = match now.step {
        // Step 2: everyone accepts it: use it.
        Step::Use if ring.primary() != &target => {
            let mut others = vec![ring.primary().clone()];
            others.extend(ring.others().iter().filter(|t| **t != target).cloned());
            Keyring::new(target.clone(), others)
        }
        // Step 3: everyone uses it: drop the rest.
        Step::Retire => Keyring::single(target.clone()),
        _ => ring.clone(),
    };
    if next.others().is_empty() && next.primary() == &target {
        return (next, None);
    }
    let progress = if next == *ring {
        now
    } else {
        progress(&target, members, &with_own(records, me, &next))
    };
    (next, Some(progress))
}

/// Reads every record under [`PREFIX`].
pub async fn read(client: &mut Client) -> Result<Records, String> {
    let got = client
        .get(PREFIX, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| format!("cannot read {PREFIX}: {e}"))?;
    let kvs: Vec<(String, Vec<u8>)> = got
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.value().to_vec(),
            )
        })
        .collect();
    let (records, bad) = Records::parse(kvs.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
    if !bad.is_empty() {
        tracing::warn!(keys = ?bad, "join token rotation records that do not decode were skipped");
    }
    Ok(records)
}

/// Records this member's ring.
pub async fn record(client: &mut Client, me: &str, ring: &MemberRing) -> Result<(), String> {
    let value = serde_json::to_vec(ring).map_err(|e| e.to_string())?;
    client
        .put(format!("{MEMBERS_PREFIX}{me}"), value, None)
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot record this member's join token ring: {e}"))
}

/// Why a rotation was not begun.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Etcd(String),
}

/// Checks that a rotation from `ring` to `next` may begin among `members` (pure).
pub fn may_start(
    ring: &Keyring,
    next: &JoinToken,
    members: &[String],
    records: &Records,
    ca_sealed_with_secret: bool,
) -> Result<(), StartError> {
    let refuse = |why: String| Err(StartError::Refused(why));
    if next.is_client() {
        return refuse(
            "that is a client token (qrc1_...): give a join token, or none to have one made".into(),
        );
    }
    if ring.accepts(next) {
        return refuse(format!("token {} is already in force", next.fingerprint()));
    }
    // The chain is keyed by the tokens rotated away from: one of them again would make a loop
    // that a member away during both rotations could not follow.
    if records.chain.contains_key(&next.fingerprint()) {
        return refuse(format!(
            "token {} was in force before and was rotated away: give a new one (`quorate token \
             generate`), or none to have one made",
            next.fingerprint()
        ));
    }
    if !ca_sealed_with_secret {
        return refuse(
            "the CA in etcd is still sealed with the join token: rotate once every voter holds \
             the CA seal secret (`quorate status`, line 'CA seal')"
                .into(),
        );
    }
    let current = ring.primary().fingerprint();
    if !ring.others().is_empty() || records.chain.contains_key(&current) {
        return refuse(format!(
            "a rotation from token {current} is in progress: `quorate status` shows what it \
             waits for"
        ));
    }
    let unsettled: Vec<String> = members
        .iter()
        .filter(|m| {
            !records
                .members
                .get(*m)
                .is_some_and(|r| r.settled_on(&current))
        })
        .cloned()
        .collect();
    if !unsettled.is_empty() {
        return refuse(format!(
            "members {} have not recorded token {current} as their only token yet (a rotation \
             ending, an agent starting, or an agent older than rotations: upgrade it); try \
             again in a few seconds",
            unsettled.join(", ")
        ));
    }
    Ok(())
}

/// `quorate token rotate`: stores the link from the primary token to `next`.
pub async fn start(
    client: &mut Client,
    ring: &Keyring,
    next: &JoinToken,
    members: &[String],
    now: u64,
) -> Result<(), StartError> {
    let etcd = |what: &str, e: etcd_client::Error| StartError::Etcd(format!("cannot {what}: {e}"));
    let ca = client
        .get(crate::issuer::CA_KEY, None)
        .await
        .map_err(|e| etcd("read the CA", e))?;
    let ca_sealed_with_secret = ca
        .kvs()
        .first()
        .and_then(|kv| crate::issuer::SealedCa::from_json(kv.value()).ok())
        .is_some_and(|ca| ca.seal_id.is_some());
    let records = read(client).await.map_err(StartError::Etcd)?;
    may_start(ring, next, members, &records, ca_sealed_with_secret)?;
    let key = format!("{CHAIN_PREFIX}{}", ring.primary().fingerprint());
    let value = serde_json::to_vec(&seal_link(ring.primary(), next, now))
        .map_err(|e| StartError::Etcd(e.to_string()))?;
    let txn = Txn::new()
        .when(vec![Compare::create_revision(
            key.as_str(),
            CompareOp::Equal,
            0,
        )])
        .and_then(vec![TxnOp::put(key.as_str(), value, None)]);
    let done = client
        .txn(txn)
        .await
        .map_err(|e| etcd("store the new token", e))?;
    if !done.succeeded() {
        return Err(StartError::Refused(
            "another rotation began at the same time: `quorate status` shows it".into(),
        ));
    }
    tracing::warn!(
        from = %ring.primary().fingerprint(),
        to = %next.fingerprint(),
        "join token rotation begun"
    );
    Ok(())
}

#[cfg(test)]
#[path = "rotation_tests.rs"]
mod tests;
