//! After a restore, quorate's own CA goes back into etcd as it is now, not as it was in the
//! snapshot: a snapshot of another cluster, or one without a manifest from before the CA
//! changed, brings back a `/quorate/ca` that this cluster's agents do not trust, and no issuer
//! could sign. The restore plan carries the sealed CA of the moment it was decided
//! (`RestorePlan::sealed_ca`); [`replacement`] decides, purely, what to put back, and
//! [`put_back`] does it with a compare-and-swap on the stale value, so that agents doing it at
//! the same time cannot overwrite anything newer.
//!
//! The snapshot also brings back the keys quorate held under leases when it was taken: the
//! issuer key and the job locks (a snapshot is always taken under the `snapshot` lock). etcd
//! restores their leases too and renews them when the restored cluster elects a leader, so
//! without help they would keep the issuer election and the job they lock waiting for a lease
//! whose holder is gone. [`stale_held_keys`] picks them (held under a lease, written at or
//! before the snapshot's revision) and [`remove_stale_held`] deletes them, each only if it was
//! not written since, and revokes their leases.

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::{SealedCa, CA_KEY};
use crate::pki::{CaHash, CertificateAuthority};
use crate::restore::RestorePlan;

/// The sealed CA to put in place of `stored`, if any: only when the newest restore plan was
/// decided under the CA this agent trusts, and `stored` is another CA, or the trusted one
/// sealed otherwise than the plan's copy (a snapshot from before the CA seal secret changed:
/// nobody may hold the secret it is sealed with). What goes back is the plan's copy (sealed as
/// the cluster's CA was when the restore was decided), else the seed's own CA sealed with the
/// join token's key `seal_key` (the issuer seals it with the secret again, `reseal`).
pub fn replacement(
    plan: Option<&RestorePlan>,
    trusted: Option<CaHash>,
    stored: Option<&[u8]>,
    disk_ca: Option<&CertificateAuthority>,
    seal_key: &[u8; 32],
) -> Option<String> {
    let (plan, trusted, stored) = (plan?, trusted?, stored?);
    if plan.ca_hash != trusted {
        return None;
    }
    let copy = plan
        .sealed_ca
        .as_deref()
        .and_then(|c| SealedCa::from_json(c.as_bytes()).ok())
        .filter(|c| c.hash().ok() == Some(trusted));
    let stored = SealedCa::from_json(stored).ok();
    let stored_is_ours = stored.as_ref().is_some_and(|s| {
        s.hash().ok() == Some(trusted) && copy.as_ref().is_none_or(|c| c.seal_id == s.seal_id)
    });
    if stored_is_ours {
        return None;
    }
    if let Some(copy) = copy {
        return Some(copy.to_json());
    }
    disk_ca
        .filter(|ca| ca.hash() == trusted)
        .map(|ca| SealedCa::seal(ca, seal_key).to_json())
}

/// Puts the trusted CA back when [`replacement`] says so; true when it did.
pub async fn put_back(
    client: &mut Client,
    plan: Option<&RestorePlan>,
    trusted: Option<CaHash>,
    disk_ca: Option<&CertificateAuthority>,
    seal_key: &[u8; 32],
) -> Result<bool, etcd_client::Error> {
    let got = client.get(CA_KEY, None).await?;
    let Some(stored) = got.kvs().first().map(|kv| kv.value().to_vec()) else {
        return Ok(false);
    };
    let Some(value) = replacement(plan, trusted, Some(&stored), disk_ca, seal_key) else {
        return Ok(false);
    };
    let txn = Txn::new()
        .when([Compare::value(CA_KEY, CompareOp::Equal, stored.clone())])
        .and_then([TxnOp::put(CA_KEY, value, None)]);
    let done = client.txn(txn).await?.succeeded();
    if done {
        let was = SealedCa::from_json(&stored)
            .and_then(|s| s.hash())
            .map(|h| h.to_string())
            .unwrap_or_else(|_| "unreadable".into());
        tracing::warn!(
            snapshot_ca = %was,
            "put the cluster's CA back into etcd after the restore (the snapshot held another)"
        );
    }
    Ok(done)
}

/// One of quorate's keys as read: (key, mod revision, lease id).
pub type HeldKey = (String, i64, i64);

/// The keys among `keys` that the snapshot of revision `snapshot_revision` brought back held
/// under a lease: the issuer key and the job locks (not the job's recorded slots, which hold no
/// lease). Nothing when the revision is unknown (0): those keys then expire with their leases.
pub fn stale_held_keys(keys: &[HeldKey], snapshot_revision: i64) -> Vec<HeldKey> {
    if snapshot_revision <= 0 {
        return Vec::new();
    }
    keys.iter()
        .filter(|(key, mod_revision, lease)| {
            let held = key == super::ISSUER_KEY
                || (key.starts_with(crate::jobs::JOBS_PREFIX)
                    && !key[crate::jobs::JOBS_PREFIX.len()..].contains('/'));
            held && *lease != 0 && *mod_revision <= snapshot_revision
        })
        .cloned()
        .collect()
}

/// Deletes the lease-held keys the restored snapshot brought back (see [`stale_held_keys`]),
/// each only if it is unchanged, and revokes their leases; returns how many it deleted.
pub async fn remove_stale_held(
    client: &mut Client,
    plan: &RestorePlan,
) -> Result<usize, etcd_client::Error> {
    if plan.snapshot.revision <= 0 {
        return Ok(0);
    }
    let got = client
        .get(
            "/quorate/",
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    let keys: Vec<HeldKey> = got
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.mod_revision(),
                kv.lease(),
            )
        })
        .collect();
    let mut removed = 0;
    for (key, mod_revision, lease) in stale_held_keys(&keys, plan.snapshot.revision) {
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                mod_revision,
            )])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        if client.txn(txn).await?.succeeded() {
            removed += 1;
            // Whatever else the old holder kept under that lease is as stale as the key.
            let _ = client.lease_revoke(lease).await;
            tracing::info!(
                key = %key,
                revision = mod_revision,
                generation = plan.generation,
                "removed a key the restored snapshot brought back held by a lease of before the restore"
            );
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lease_held_keys_from_the_snapshot_are_stale() {
        let keys: Vec<HeldKey> = vec![
            ("/quorate/issuer".into(), 90, 7),
            ("/quorate/jobs/snapshot".into(), 100, 8),
            ("/quorate/jobs/member-down".into(), 101, 9),
            ("/quorate/jobs/snapshot/last-slot".into(), 50, 0),
            ("/quorate/jobs/snapshot/odd".into(), 50, 5),
            ("/quorate/ca".into(), 10, 0),
            ("/quorate/jobs/defrag".into(), 60, 0),
        ];
        let stale = stale_held_keys(&keys, 100);
        let names: Vec<&str> = stale.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(names, ["/quorate/issuer", "/quorate/jobs/snapshot"]);
        // Written after the snapshot's revision: held by someone now.
        assert!(stale_held_keys(&keys, 89).is_empty());
        // The revision unknown: nothing (the leases run out by themselves).
        assert!(stale_held_keys(&keys, 0).is_empty());
    }
    use std::time::{Duration, SystemTime};

    fn ca(name: &str) -> CertificateAuthority {
        CertificateAuthority::generate(name, SystemTime::now(), Duration::from_secs(3600)).unwrap()
    }

    #[test]
    fn only_a_stale_ca_under_a_plan_of_the_trusted_one_is_replaced() {
        let key = [7u8; 32];
        let (ours, theirs) = (ca("ours"), ca("theirs"));
        let ours_sealed = SealedCa::seal(&ours, &key).to_json();
        let theirs_sealed = SealedCa::seal(&theirs, &key).to_json();
        let mut plan = crate::restore::tests::example_plan(1);
        plan.ca_hash = ours.hash();
        plan.sealed_ca = Some(ours_sealed.clone());
        let trusted = Some(ours.hash());
        let stale = Some(theirs_sealed.as_bytes());
        // The snapshot's CA is another one: the plan's copy goes back, also on the seed.
        assert_eq!(
            replacement(Some(&plan), trusted, stale, None, &key),
            Some(ours_sealed.clone())
        );
        assert_eq!(
            replacement(Some(&plan), trusted, stale, Some(&ours), &key),
            Some(ours_sealed.clone())
        );
        // Without a copy in the plan, the seed seals its own.
        let mut bare = plan.clone();
        bare.sealed_ca = None;
        let from_disk = replacement(Some(&bare), trusted, stale, Some(&ours), &key).unwrap();
        assert_eq!(
            SealedCa::from_json(from_disk.as_bytes())
                .unwrap()
                .hash()
                .unwrap(),
            ours.hash()
        );
        // Nothing when the stored CA is the trusted one sealed as the copy is, without a plan,
        // or when the plan was decided under another CA, or when no copy of the trusted CA is
        // at hand.
        let current = Some(ours_sealed.as_bytes());
        assert_eq!(replacement(Some(&plan), trusted, current, None, &key), None);
        assert_eq!(replacement(None, trusted, stale, None, &key), None);
        assert_eq!(
            replacement(Some(&plan), Some(theirs.hash()), stale, None, &key),
            None
        );
        assert_eq!(replacement(Some(&bare), trusted, stale, None, &key), None);
        assert_eq!(replacement(Some(&bare), trusted, current, None, &key), None);
        bare.sealed_ca = Some(theirs_sealed.clone());
        assert_eq!(replacement(Some(&bare), trusted, stale, None, &key), None);
    }

    #[test]
    fn our_ca_sealed_with_another_secret_is_replaced_by_the_plans_copy() {
        use crate::issuer::seal_secret::SealSecret;
        let key = [7u8; 32];
        let ours = ca("ours");
        let (old, now) = (SealSecret::generate(), SealSecret::generate());
        let old_sealed = SealedCa::seal_with_secret(&ours, &old).to_json();
        let now_sealed = SealedCa::seal_with_secret(&ours, &now).to_json();
        let mut plan = crate::restore::tests::example_plan(1);
        plan.ca_hash = ours.hash();
        plan.sealed_ca = Some(now_sealed.clone());
        let trusted = Some(ours.hash());
        // A snapshot from before the secret changed: the copy sealed with today's goes back.
        assert_eq!(
            replacement(
                Some(&plan),
                trusted,
                Some(old_sealed.as_bytes()),
                None,
                &key
            ),
            Some(now_sealed.clone())
        );
        // Sealed with the token in the snapshot, with the secret now: the same.
        let token_sealed = SealedCa::seal(&ours, &key).to_json();
        assert_eq!(
            replacement(
                Some(&plan),
                trusted,
                Some(token_sealed.as_bytes()),
                None,
                &key
            ),
            Some(now_sealed.clone())
        );
        // Already sealed as the copy is: nothing.
        assert_eq!(
            replacement(
                Some(&plan),
                trusted,
                Some(now_sealed.as_bytes()),
                None,
                &key
            ),
            None
        );
    }
}
