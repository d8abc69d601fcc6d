//! The registry of issued certificates, `/quorate/issued/<serial>`: what `quorate cert revoke
//! --name NAME` looks names up in. The issuer's API records every certificate it signs (handed
//! to the revocation-list task, which writes them: see [`crate::node::crl`]); every member
//! also records its own node certificate, since the first ones are signed before etcd exists.
//! Entries are written only if absent and pruned by the issuer a day after they expire.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::api::CertKind;

/// Where the records live.
pub const ISSUED_PREFIX: &str = "/quorate/issued/";
/// How long a record outlives its certificate.
pub const KEEP_AFTER_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);

/// One issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    /// Lowercase hex, as [`crate::pki::CertInfo::serial_hex`].
    pub serial: String,
    pub name: String,
    pub kind: CertKind,
    /// Unix seconds.
    pub not_after: u64,
    /// When it was signed, in Unix seconds (its notBefore plus the back-dating); 0 in records
    /// written before this field existed.
    #[serde(default)]
    pub issued_at: u64,
    /// A client certificate's etcd role (None: the default client role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl Issued {
    /// The record of a certificate, from its PEM.
    pub fn of_cert(cert_pem: &str, kind: CertKind) -> Option<Self> {
        let info = crate::pki::inspect(cert_pem).ok()?;
        Some(Self {
            serial: info.serial_hex,
            name: info.common_name,
            kind,
            not_after: unix(info.not_after),
            issued_at: unix(crate::pki::signed_at(info.not_before, info.not_after)),
            role: None,
        })
    }

    /// The same record with the role the certificate's name was given.
    pub fn with_role(self, role: Option<String>) -> Self {
        Self { role, ..self }
    }
}

use crate::clock::unix;

/// The serials of `name` that have not expired at `now` (pure).
pub fn serials_of(records: &[Issued], name: &str, now: u64) -> Vec<String> {
    let mut serials: Vec<String> = records
        .iter()
        .filter(|r| r.name == name && r.not_after > now)
        .map(|r| r.serial.clone())
        .collect();
    serials.sort();
    serials.dedup();
    serials
}

/// The unexpired node certificates of `name` signed before `before` (Unix seconds; records
/// without a signing time count as older), except `keep`: what a member that is gone, or has
/// been replaced, leaves behind (pure).
pub fn superseded_node_serials(
    records: &[Issued],
    name: &str,
    keep: Option<&str>,
    before: u64,
    now: u64,
) -> Vec<String> {
    let mut serials: Vec<String> = records
        .iter()
        .filter(|r| r.kind == CertKind::Node && r.name == name && r.not_after > now)
        .filter(|r| r.issued_at < before && Some(r.serial.as_str()) != keep)
        .map(|r| r.serial.clone())
        .collect();
    serials.sort();
    serials.dedup();
    serials
}

/// Each client name with the role of its newest record (the default client role when that
/// record has none), for the etcd users (pure).
pub fn client_roles(records: &[Issued]) -> Vec<(String, String)> {
    let mut newest: std::collections::BTreeMap<&str, &Issued> = Default::default();
    for r in records.iter().filter(|r| r.kind == CertKind::Client) {
        let entry = newest.entry(r.name.as_str()).or_insert(r);
        if (r.issued_at, &r.serial) > (entry.issued_at, &entry.serial) {
            *entry = r;
        }
    }
    newest
        .into_iter()
        .map(|(name, r)| {
            let role = r.role.as_deref().unwrap_or(crate::etcd::auth::CLIENT_ROLE);
            (name.to_owned(), role.to_owned())
        })
        .collect()
}

/// Whether a record may be forgotten at `now` (pure).
pub fn prunable(record: &Issued, now: u64) -> bool {
    record.not_after + KEEP_AFTER_EXPIRY.as_secs() < now
}

/// Writes `record` unless its serial is recorded already.
pub async fn register(client: &mut Client, record: &Issued) -> Result<(), etcd_client::Error> {
    let key = format!("{ISSUED_PREFIX}{}", record.serial);
    let value = serde_json::to_vec(record).unwrap_or_default();
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key, value, None)]);
    client.txn(txn).await?;
    Ok(())
}

/// Records a restore plan carries at most (a plan is 64 KiB at most; a record is ~200 bytes).
pub const MAX_CARRIED: usize = 200;

/// Of `records` (each with the etcd revision that created it), the unexpired ones at `now`,
/// newest first, `max` at most (pure).
pub fn newest_unexpired(mut records: Vec<(i64, Issued)>, now: u64, max: usize) -> Vec<Issued> {
    records.retain(|(_, r)| r.not_after > now);
    records.sort_by_key(|r| std::cmp::Reverse(r.0));
    records.into_iter().take(max).map(|(_, r)| r).collect()
}

/// What a restore plan carries of the registry: the newest unexpired records (see
/// `RestorePlan::issued`), so that certificates issued after the snapshot stay etcd users.
pub async fn to_carry(client: &mut Client, now: u64) -> Result<Vec<Issued>, etcd_client::Error> {
    let got = client
        .get(ISSUED_PREFIX, Some(GetOptions::new().with_prefix()))
        .await?;
    let records = got
        .kvs()
        .iter()
        .filter_map(|kv| {
            let r: Issued = serde_json::from_slice(kv.value()).ok()?;
            Some((kv.create_revision(), r))
        })
        .collect();
    Ok(newest_unexpired(records, now, MAX_CARRIED))
}

/// Of `carried` (a restore plan's records), the unexpired ones at `now` that `have` (etcd's
/// records) lacks: a restored snapshot from before they were issued (pure).
pub fn lacking<'a>(carried: &'a [Issued], have: &[Issued], now: u64) -> Vec<&'a Issued> {
    carried
        .iter()
        .filter(|r| r.not_after > now && !have.iter().any(|h| h.serial == r.serial))
        .collect()
}

/// Every record (entries that do not parse are skipped).
pub async fn list(client: &mut Client) -> Result<Vec<Issued>, etcd_client::Error> {
    let got = client
        .get(ISSUED_PREFIX, Some(GetOptions::new().with_prefix()))
        .await?;
    Ok(got
        .kvs()
        .iter()
        .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
        .collect())
}

/// Deletes the records of certificates expired for a day; how many it deleted.
pub async fn prune(client: &mut Client, now: u64) -> Result<usize, etcd_client::Error> {
    let old: Vec<Issued> = list(client)
        .await?
        .into_iter()
        .filter(|r| prunable(r, now))
        .collect();
    for r in &old {
        client
            .delete(format!("{ISSUED_PREFIX}{}", r.serial), None)
            .await?;
    }
    Ok(old.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_carries_the_newest_unexpired_records() {
        let records = vec![
            (5, rec("05", "a", 100)),
            (9, rec("09", "b", 100)),
            (7, rec("07", "c", 10)),
            (8, rec("08", "d", 100)),
        ];
        let kept = newest_unexpired(records, 50, 2);
        let serials: Vec<&str> = kept.iter().map(|r| r.serial.as_str()).collect();
        assert_eq!(serials, ["09", "08"]);
        // After the restore: what etcd lacks and has not expired since goes back.
        let have = vec![rec("08", "d", 100)];
        let back: Vec<&str> = lacking(&kept, &have, 50)
            .iter()
            .map(|r| r.serial.as_str())
            .collect();
        assert_eq!(back, ["09"]);
        assert!(lacking(&kept, &have, 100).is_empty());
    }

    fn rec(serial: &str, name: &str, not_after: u64) -> Issued {
        Issued {
            serial: serial.into(),
            name: name.into(),
            kind: CertKind::Client,
            not_after,
            issued_at: 0,
            role: None,
        }
    }

    fn node(serial: &str, name: &str, issued_at: u64, not_after: u64) -> Issued {
        Issued {
            kind: CertKind::Node,
            issued_at,
            ..rec(serial, name, not_after)
        }
    }

    #[test]
    fn a_client_name_holds_the_role_of_its_newest_certificate() {
        let with = |serial: &str, name: &str, at: u64, role: Option<&str>| {
            Issued {
                issued_at: at,
                ..rec(serial, name, 100)
            }
            .with_role(role.map(str::to_owned))
        };
        let records = vec![
            with("01", "omni", 10, Some("omni")),
            with("02", "omni", 20, None),
            with("03", "app", 30, Some("ro")),
            with("04", "app", 5, None),
            Issued {
                kind: CertKind::Node,
                ..with("05", "n1", 50, None)
            },
        ];
        assert_eq!(
            client_roles(&records),
            vec![
                ("app".to_string(), "ro".to_string()),
                (
                    "omni".to_string(),
                    crate::etcd::auth::CLIENT_ROLE.to_string()
                ),
            ]
        );
    }

    #[test]
    fn a_gone_members_older_node_certificates_are_superseded() {
        let records = [
            node("01", "n3", 0, 900),   // written before issued_at existed
            node("02", "n3", 100, 900), // the dead incarnation
            node("03", "n3", 500, 900), // signed after it was last seen: a new host
            node("04", "n3", 100, 150), // expired already
            node("05", "n2", 100, 900), // another member
            rec("06", "n3", 900),       // a client certificate of that name
        ];
        assert_eq!(
            superseded_node_serials(&records, "n3", None, 400, 200),
            vec!["01", "02"]
        );
        // The replacing host keeps its own certificate, whatever its age.
        assert_eq!(
            superseded_node_serials(&records, "n3", Some("03"), 1000, 200),
            vec!["01", "02"]
        );
        assert!(superseded_node_serials(&records, "n9", None, 1000, 200).is_empty());
    }

    #[test]
    fn a_names_live_serials_are_found_once_each() {
        let records = [
            rec("0b", "omni", 200),
            rec("0a", "omni", 300),
            rec("0c", "omni", 50),
            rec("0d", "other", 300),
            rec("0a", "omni", 300),
        ];
        assert_eq!(serials_of(&records, "omni", 100), vec!["0a", "0b"]);
        assert!(serials_of(&records, "nobody", 100).is_empty());
        assert!(serials_of(&records, "omni", 1000).is_empty());
    }

    #[test]
    fn records_are_kept_a_day_past_expiry() {
        let r = rec("0a", "omni", 1000);
        assert!(!prunable(&r, 1000 + 86_400));
        assert!(prunable(&r, 1001 + 86_400));
    }

    #[test]
    fn a_record_is_read_from_the_certificate() {
        let ca = crate::pki::test_support::ca("test CA");
        let (cert, _) = crate::pki::test_support::node_cert(&ca, "n1", &[]);
        let r = Issued::of_cert(&cert, CertKind::Node).unwrap();
        assert_eq!(r.name, "n1");
        assert_eq!(r.serial, crate::pki::inspect(&cert).unwrap().serial_hex);
        assert!(r.not_after > 0);
        assert!(Issued::of_cert("not a certificate", CertKind::Node).is_none());
    }
}
