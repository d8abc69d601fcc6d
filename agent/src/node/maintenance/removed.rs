//! Removals whose clean-up is still to do, kept in etcd so that any leader finishes them.
//!
//! When a member is removed (by `remove_dead_after`, or by `quorate leave`: the leaving host
//! records it before it asks for its own revocation, while its certificate still opens
//! connections), `/quorate/removed/<name>` records it. Every maintenance turn the leader's
//! agent reads the records and takes the [`step`] each calls for: it revokes the node
//! certificates of the name signed before the record's `before` and deletes the name's etcd
//! user, marks the record, and [`CONFIRM_AFTER`] later deletes the user again if the issuer
//! made it anew meanwhile (it may have read the revocation requests just before they were
//! written), then deletes the record. A record left by an agent that lost the leadership,
//! crashed or left is finished by the next leader's agent, so a removed host never keeps its
//! access because leadership moved.
//!
//! A name that is back (an etcd member again, or an agent alive in gossip under it that has
//! not left: a rebuilt host, or a restore onto hosts that carry it) keeps its etcd user: only
//! its older certificates are revoked.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::etcd::client::{connect, ClientTls};

/// Records of removals still to clean up: `/quorate/removed/<name>`.
pub const REMOVED_PREFIX: &str = "/quorate/removed/";

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// Node certificates of the name signed before this Unix time are revoked.
    pub before: u64,
    /// When the member was removed (Unix time).
    pub removed_at: u64,
    /// When its etcd user was deleted (Unix time, the leader's clock); the user is deleted
    /// once more [`CONFIRM_AFTER`] later, and the record goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_deleted_at: Option<u64>,
}

impl Removal {
    /// A removal at `removed_at` of a name whose node certificates signed before `before` go.
    pub fn new(before: u64, removed_at: u64) -> Self {
        Self {
            before,
            removed_at,
            user_deleted_at: None,
        }
    }
}

/// How long after deleting a removed name's user it is deleted once more before the record
/// goes: longer than the issuer's round of making users (10 s), which may have read the
/// revocation requests just before they were stored and made the user again.
pub const CONFIRM_AFTER: u64 = 15;

/// What a turn does with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The name is back: revoke its older certificates, keep its user, delete the record.
    KeepUser,
    /// Revoke its older certificates, delete its user, mark the record.
    DeleteUser,
    /// Delete its user again if it was made anew, delete the record.
    Confirm,
    /// Not yet time to confirm.
    Wait,
}

/// The step for `r` at `now` (Unix time), `back` when the name is back ([`is_back`]).
pub fn step(r: &Removal, back: bool, now: u64) -> Step {
    match r.user_deleted_at {
        _ if back => Step::KeepUser,
        None => Step::DeleteUser,
        // A mark far in the future (a clock that was wrong) does not hold the record forever.
        Some(at) if now >= at.saturating_add(CONFIRM_AFTER) || at > now + 3600 => Step::Confirm,
        Some(_) => Step::Wait,
    }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub name: String,
    pub removal: Removal,
    /// The record's revision: it is deleted only if nobody rewrote it meanwhile.
    pub mod_revision: i64,
}

/// A live agent in gossip, as [`is_back`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveAgent<'a> {
    pub name: &'a str,
    /// It left with `quorate leave` (and still runs).
    pub left: bool,
    /// When it started (Unix time, its own clock).
    pub started: u64,
}

/// Whether `name` is back after a removal at `removed_at`: an etcd member again, or a live
/// agent under the name that started after the removal and has not left (a host about to join
/// is alive in gossip before it is a member; the removed incarnation itself, a host that left
/// and still runs or a dead one whose network came back, is not back). A clock that lags
/// makes a new host look older: its user is then deleted, and the issuer makes it again within
/// seconds for its new certificate.
pub fn is_back<'a>(
    name: &str,
    removed_at: u64,
    members: impl IntoIterator<Item = &'a str>,
    live: impl IntoIterator<Item = LiveAgent<'a>>,
) -> bool {
    members.into_iter().any(|m| m == name)
        || live
            .into_iter()
            .any(|a| a.name == name && !a.left && a.started > removed_at)
}

/// Records that `name`'s removal is to be cleaned up.
pub async fn record(client: &mut Client, name: &str, r: Removal) -> Result<(), etcd_client::Error> {
    let value = serde_json::to_vec(&r).unwrap_or_default();
    client.put(key(name), value, None).await.map(|_| ())
}

/// Records `name`'s removal for the clean-up by the leader's agent, a few tries a second
/// apart (the leave driver's hand-over); a failure is logged with the command that does the
/// clean-up by hand.
pub async fn record_with_retries(endpoints: &[String], tls: &ClientTls, name: &str, r: Removal) {
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let stored = async {
            let mut client = connect(endpoints, tls, Duration::from_secs(5)).await?;
            record(&mut client, name, r).await
        };
        match stored.await {
            Ok(()) => return,
            Err(e) => last = e.to_string(),
        }
    }
    tracing::warn!(member = %name, error = %last, "cannot record the removal for the leader's clean-up: if this host's etcd user stays, run `quorate cert revoke --name {name}` on a member");
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
            let removal = serde_json::from_slice(kv.value()).unwrap_or(Removal::new(0, 0));
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
    swap(client, p, TxnOp::delete(key(&p.name), None)).await
}

/// Marks `p`'s record: its user was deleted at `at` (unless it was rewritten since).
pub async fn mark_user_deleted(
    client: &mut Client,
    p: &Pending,
    at: u64,
) -> Result<(), etcd_client::Error> {
    let marked = Removal {
        user_deleted_at: Some(at),
        ..p.removal
    };
    let value = serde_json::to_vec(&marked).unwrap_or_default();
    swap(client, p, TxnOp::put(key(&p.name), value, None)).await
}

fn key(name: &str) -> String {
    format!("{REMOVED_PREFIX}{name}")
}

/// Does `op` on `p`'s record if its revision is still the one read.
async fn swap(client: &mut Client, p: &Pending, op: TxnOp) -> Result<(), etcd_client::Error> {
    let txn = Txn::new()
        .when([Compare::mod_revision(
            key(&p.name),
            CompareOp::Equal,
            p.mod_revision,
        )])
        .and_then([op]);
    client.txn(txn).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_back_as_a_member_or_a_new_live_agent_that_has_not_left() {
        let none: [LiveAgent; 0] = [];
        let agent = |name, left, started| LiveAgent {
            name,
            left,
            started,
        };
        let others = [agent("n2", false, 10), agent("n3", false, 10)];
        assert!(!is_back("n1", 100, ["n2", "n3"], others));
        assert!(is_back("n1", 100, ["n1", "n2"], none));
        // A host started after the removal under the name.
        assert!(is_back("n1", 100, ["n2"], [agent("n1", false, 101)]));
        // The removed incarnation itself: started before, or left and still running.
        assert!(!is_back("n1", 100, ["n2"], [agent("n1", false, 100)]));
        assert!(!is_back("n1", 100, ["n2"], [agent("n1", true, 101)]));
        assert!(!is_back("n1", 100, ["n10"], [agent("n11", false, 101)]));
    }

    #[test]
    fn the_user_is_deleted_then_confirmed_after_the_issuers_round() {
        let fresh = Removal::new(100, 160);
        assert_eq!(step(&fresh, false, 170), Step::DeleteUser);
        assert_eq!(step(&fresh, true, 170), Step::KeepUser);
        let marked = Removal {
            user_deleted_at: Some(200),
            ..fresh
        };
        assert_eq!(step(&marked, false, 200), Step::Wait);
        assert_eq!(step(&marked, false, 200 + CONFIRM_AFTER - 1), Step::Wait);
        assert_eq!(step(&marked, false, 200 + CONFIRM_AFTER), Step::Confirm);
        // Back meanwhile: its user stays.
        assert_eq!(step(&marked, true, 200 + CONFIRM_AFTER), Step::KeepUser);
        // A mark from a clock far ahead does not hold the record.
        let ahead = Removal {
            user_deleted_at: Some(100_000),
            ..fresh
        };
        assert_eq!(step(&ahead, false, 300), Step::Confirm);
        assert_eq!(step(&ahead, false, 100_000 - 3600), Step::Wait);
    }

    #[test]
    fn a_record_round_trips_as_json_and_old_ones_parse() {
        let r = Removal {
            user_deleted_at: Some(1_700_000_070),
            ..Removal::new(1_700_000_000, 1_700_000_060)
        };
        let text = serde_json::to_vec(&r).unwrap();
        assert_eq!(serde_json::from_slice::<Removal>(&text).unwrap(), r);
        let unmarked: Removal = serde_json::from_str(r#"{"before":5,"removed_at":6}"#).unwrap();
        assert_eq!(unmarked, Removal::new(5, 6));
    }
}
