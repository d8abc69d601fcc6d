//! Removals whose clean-up is still to do, kept in etcd so that any leader finishes them.
//!
//! When a member is removed (by `remove_dead_after`, or by `quorate leave` when the leaving
//! host could not finish), `/quorate/removed/<name>` records it. Every maintenance turn the
//! leader's agent reads the records, revokes the node certificates of the name signed before
//! the record's `before`, deletes the name's etcd user, and deletes the record. A record
//! written by an agent that then lost the leadership, crashed or left is finished by the next
//! leader's agent, so a removed host never keeps its access because leadership moved.
//!
//! A name that is back (an etcd member again, or alive in gossip: a rebuilt host under the
//! same name, or a restore onto hosts that carry it) keeps its etcd user: only its older
//! certificates are revoked. [`keeps_user`] is that rule.

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

/// Records of removals still to clean up: `/quorate/removed/<name>`.
pub const REMOVED_PREFIX: &str = "/quorate/removed/";

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// Node certificates of the name signed before this Unix time are revoked.
    pub before: u64,
    /// When the member was removed (Unix time).
    pub removed_at: u64,
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub name: String,
    pub removal: Removal,
    /// The record's revision: it is deleted only if nobody rewrote it meanwhile.
    pub mod_revision: i64,
}

/// Whether `name`'s etcd user must stay: the name is back, as an etcd member or as a live
/// agent (a host about to join under it is alive in gossip before it is a member).
pub fn keeps_user<'a>(
    name: &str,
    members: impl IntoIterator<Item = &'a str>,
    live: impl IntoIterator<Item = &'a str>,
) -> bool {
    members.into_iter().any(|m| m == name) || live.into_iter().any(|l| l == name)
}

/// Records that `name`'s removal is to be cleaned up.
pub async fn record(client: &mut Client, name: &str, r: Removal) -> Result<(), etcd_client::Error> {
    let value = serde_json::to_vec(&r).unwrap_or_default();
    client
        .put(format!("{REMOVED_PREFIX}{name}"), value, None)
        .await
        .map(|_| ())
}

/// The records, by name. A record that does not parse is returned with `before` 0 (nothing is
/// revoked, the user is deleted unless the name is back), so that a damaged one still goes.
pub async fn pending(client: &mut Client) -> Result<Vec<Pending>, etcd_client::Error> {
    let got = client
        .get(REMOVED_PREFIX, Some(GetOptions::new().with_prefix()))
        .await?;
    Ok(got
        .kvs()
        .iter()
        .filter_map(|kv| {
            let name = kv.key_str().ok()?.strip_prefix(REMOVED_PREFIX)?;
            if name.is_empty() {
                return None;
            }
            let removal = serde_json::from_slice(kv.value()).unwrap_or(Removal {
                before: 0,
                removed_at: 0,
            });
            Some(Pending {
                name: name.to_owned(),
                removal,
                mod_revision: kv.mod_revision(),
            })
        })
        .collect())
}

/// Deletes `p`'s record unless it was rewritten since it was read (a newer removal of the name
/// is then done on a later turn).
pub async fn finish(client: &mut Client, p: &Pending) -> Result<(), etcd_client::Error> {
    let key = format!("{REMOVED_PREFIX}{}", p.name);
    let txn = Txn::new()
        .when([Compare::mod_revision(
            key.as_str(),
            CompareOp::Equal,
            p.mod_revision,
        )])
        .and_then([TxnOp::delete(key.as_str(), None)]);
    client.txn(txn).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_is_back_keeps_its_user() {
        let none: [&str; 0] = [];
        assert!(!keeps_user("n1", ["n2", "n3"], ["n2", "n3"]));
        assert!(keeps_user("n1", ["n1", "n2"], none));
        assert!(keeps_user("n1", ["n2"], ["n1"]));
        assert!(!keeps_user("n1", ["n10"], ["n11"]));
    }

    #[test]
    fn a_record_round_trips_as_json() {
        let r = Removal {
            before: 1_700_000_000,
            removed_at: 1_700_000_060,
        };
        let text = serde_json::to_vec(&r).unwrap();
        assert_eq!(serde_json::from_slice::<Removal>(&text).unwrap(), r);
    }
}
