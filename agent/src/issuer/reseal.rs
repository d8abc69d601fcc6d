//! The switch of the CA in etcd from the join token's seal to the CA seal secret's
//! ([`super::seal_secret`]). Every voter's agent records that it holds the secret under
//! [`HOLDERS_PREFIX`]`<name>` (its keeper, `node::seal`); once every started voter does
//! ([`all_voters_hold`]), the issuer seals the CA again with the secret's key, by
//! compare-and-swap on the value it read ([`reseal`]). From then on the join token alone no
//! longer opens the CA: a host that joins with it can read `/quorate/ca` only as a voter, and
//! gets the secret from another voter's agent.
//!
//! It waits for every voter so that no voter is left that could never become the issuer, and
//! so that losing any one member cannot lose the only copy of the secret. Right after the
//! switch it compacts etcd's history up to it, so that the token-sealed value cannot be read
//! back with `get --rev` (once in the cluster's life; watchers of older revisions are told the
//! history is compacted, as after any compaction). Learners get the
//! secret once promoted. The switch is one way: an agent older than the seal secret cannot
//! open the CA afterwards (downgrades below it are not supported).

use std::collections::BTreeMap;

use etcd_client::{Client, CompactionOptions, Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::seal_secret::SealSecret;
use super::{SealedCa, UnsealError, CA_KEY};

/// Where each voter records the fingerprint of the secret it holds.
pub const HOLDERS_PREFIX: &str = "/quorate/seal/holders/";

/// A member as etcd lists it: (name, learner). An unstarted member has no name yet.
pub type MemberEntry = (String, bool);

/// Whether every started voter among `members` holds the secret `id` according to `holders`
/// (name to fingerprint). An unstarted member counts as a voter without it: it may become one.
pub fn all_voters_hold(
    members: &[MemberEntry],
    holders: &BTreeMap<String, String>,
    id: &str,
) -> bool {
    let mut voters = members.iter().filter(|(_, learner)| !learner).peekable();
    voters.peek().is_some()
        && voters
            .all(|(name, _)| !name.is_empty() && holders.get(name).map(String::as_str) == Some(id))
}

/// Records that `name` holds the secret `id` (a write only when the record differs).
pub async fn record_holder(
    client: &mut Client,
    name: &str,
    id: &str,
) -> Result<(), etcd_client::Error> {
    let key = format!("{HOLDERS_PREFIX}{name}");
    let got = client.get(key.as_str(), None).await?;
    if got.kvs().first().map(|kv| kv.value()) != Some(id.as_bytes()) {
        client.put(key, id, None).await?;
    }
    Ok(())
}

/// What [`reseal`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resealed {
    /// The CA was sealed with the secret just now.
    Done,
    /// It already is.
    Already,
    /// Some voter does not hold the secret yet (or no CA is stored).
    Waiting,
}

/// Seals the stored CA with `secret` (the cluster's, see `seal_secret::ensure_created`) once
/// every voter holds it; the token's key `token_key` opens the current seal.
pub async fn reseal(
    client: &mut Client,
    secret: &SealSecret,
    token_key: &[u8; 32],
) -> Result<Resealed, String> {
    let e = |e: etcd_client::Error| e.to_string();
    let got = client.get(CA_KEY, None).await.map_err(e)?;
    let Some(stored) = got.kvs().first().map(|kv| kv.value().to_vec()) else {
        return Ok(Resealed::Waiting);
    };
    let sealed = SealedCa::from_json(&stored).map_err(|e| e.to_string())?;
    let id = secret.id();
    if sealed.sealed_with(&id) {
        return Ok(Resealed::Already);
    }
    let members: Vec<MemberEntry> = client
        .member_list()
        .await
        .map_err(e)?
        .members()
        .iter()
        .map(|m| (m.name().to_owned(), m.is_learner()))
        .collect();
    let listed = client
        .get(HOLDERS_PREFIX, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(e)?;
    let holders: BTreeMap<String, String> = listed
        .kvs()
        .iter()
        .filter_map(|kv| {
            let name = kv.key_str().ok()?.strip_prefix(HOLDERS_PREFIX)?;
            Some((name.to_owned(), kv.value_str().ok()?.to_owned()))
        })
        .collect();
    if !all_voters_hold(&members, &holders, &id) {
        return Ok(Resealed::Waiting);
    }
    let ca = sealed
        .open(token_key, Some(secret))
        .map_err(|e: UnsealError| e.to_string())?;
    let swap = Txn::new()
        .when([Compare::value(CA_KEY, CompareOp::Equal, stored)])
        .and_then([TxnOp::put(
            CA_KEY,
            SealedCa::seal_with_secret(&ca, secret).to_json(),
            None,
        )]);
    let done = client.txn(swap).await.map_err(e)?;
    if !done.succeeded() {
        return Ok(Resealed::Waiting);
    }
    tracing::info!(id = %id, voters = members.len(), "the CA in etcd is now sealed with the CA seal secret (the join token alone no longer opens it)");
    // The token-sealed value stays readable in etcd's history (`get --rev`) until compaction:
    // compact up to the re-seal now, once in the cluster's life.
    if let Some(revision) = done.header().map(|h| h.revision()) {
        let options = CompactionOptions::new().with_physical();
        match client.compact(revision, Some(options)).await {
            Ok(_) => tracing::info!(revision, "compacted etcd's history up to the re-seal"),
            Err(err) => {
                tracing::warn!(revision, error = %err, "etcd's history keeps the token-sealed CA until its next compaction")
            }
        }
    }
    Ok(Resealed::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, learner: bool) -> MemberEntry {
        (name.to_owned(), learner)
    }

    #[test]
    fn every_started_voter_must_hold_this_secret() {
        let holders: BTreeMap<String, String> = [("a", "x"), ("b", "x"), ("c", "y")]
            .into_iter()
            .map(|(n, i)| (n.to_owned(), i.to_owned()))
            .collect();
        let ab = [m("a", false), m("b", false)];
        assert!(all_voters_hold(&ab, &holders, "x"));
        assert!(!all_voters_hold(&ab, &holders, "y"), "another secret");
        // A learner need not hold it; a voter holding another one, one without a record, or an
        // unstarted member (no name yet) stops it.
        assert!(all_voters_hold(
            &[m("a", false), m("d", true)],
            &holders,
            "x"
        ));
        assert!(!all_voters_hold(
            &[m("a", false), m("c", false)],
            &holders,
            "x"
        ));
        assert!(!all_voters_hold(
            &[m("a", false), m("d", false)],
            &holders,
            "x"
        ));
        assert!(!all_voters_hold(
            &[m("a", false), m("", false)],
            &holders,
            "x"
        ));
        // No voter at all: never.
        assert!(!all_voters_hold(&[], &holders, "x"));
        assert!(!all_voters_hold(&[m("a", true)], &holders, "x"));
    }
}
