//! After a restore, quorate's own CA goes back into etcd as it is now, not as it was in the
//! snapshot: a snapshot of another cluster, or one without a manifest from before the CA
//! changed, brings back a `/quorate/ca` that this cluster's agents do not trust, and no issuer
//! could sign. The restore plan carries the sealed CA of the moment it was decided
//! (`RestorePlan::sealed_ca`); [`replacement`] decides, purely, what to put back, and
//! [`put_back`] does it with a compare-and-swap on the stale value, so that agents doing it at
//! the same time cannot overwrite anything newer.

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};

use super::{SealedCa, CA_KEY};
use crate::pki::{CaHash, CertificateAuthority};
use crate::restore::RestorePlan;

/// The sealed CA to put in place of `stored`, if any: only when the newest restore plan was
/// decided under the CA this agent trusts, `stored` is another CA, and a sealed copy of the
/// trusted one is at hand (the seed's own CA, else the plan's copy).
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
    let stored_hash = SealedCa::from_json(stored).and_then(|s| s.hash()).ok();
    if stored_hash == Some(trusted) {
        return None;
    }
    if let Some(ca) = disk_ca.filter(|ca| ca.hash() == trusted) {
        return Some(SealedCa::seal(ca, seal_key).to_json());
    }
    let copy = plan.sealed_ca.as_deref()?;
    let copy_hash = SealedCa::from_json(copy.as_bytes())
        .and_then(|s| s.hash())
        .ok();
    (copy_hash == Some(trusted)).then(|| copy.to_owned())
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

#[cfg(test)]
mod tests {
    use super::*;
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
        // The snapshot's CA is another one: the plan's copy goes back (or the seed's own).
        assert_eq!(
            replacement(Some(&plan), trusted, stale, None, &key),
            Some(ours_sealed.clone())
        );
        let from_disk = replacement(Some(&plan), trusted, stale, Some(&ours), &key).unwrap();
        assert_eq!(
            SealedCa::from_json(from_disk.as_bytes())
                .unwrap()
                .hash()
                .unwrap(),
            ours.hash()
        );
        // Nothing when the stored CA is the trusted one, without a plan, or when the plan was
        // decided under another CA, or when no copy of the trusted CA is at hand.
        let current = Some(ours_sealed.as_bytes());
        assert_eq!(replacement(Some(&plan), trusted, current, None, &key), None);
        assert_eq!(replacement(None, trusted, stale, None, &key), None);
        assert_eq!(
            replacement(Some(&plan), Some(theirs.hash()), stale, None, &key),
            None
        );
        let mut bare = plan.clone();
        bare.sealed_ca = None;
        assert_eq!(replacement(Some(&bare), trusted, stale, None, &key), None);
        bare.sealed_ca = Some(theirs_sealed.clone());
        assert_eq!(replacement(Some(&bare), trusted, stale, None, &key), None);
    }
}
