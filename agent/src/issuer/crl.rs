//! The revocation list in etcd. Anyone with the rights (a member's agent, for `quorate cert
//! revoke`) asks for a revocation by putting `/quorate/revoke/<serial>`; the issuer, while it
//! holds the issuer lease, folds the requests into `/quorate/crl` (the list, its number and
//! the CRL signed with the CA) with a compare-and-swap, and every member writes that CRL to its
//! `pki/crl.pem` (see [`crate::node::crl`]). [`next_list`] is the pure decision.

use std::time::SystemTime;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::pki::crl::Revoked;
use crate::pki::CertificateAuthority;

/// The signed list.
pub const CRL_KEY: &str = "/quorate/crl";
/// Revocation requests: `/quorate/revoke/<serial>`.
pub const REVOKE_PREFIX: &str = "/quorate/revoke/";

/// What `/quorate/crl` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrlRecord {
    /// Increases with every change.
    pub number: u64,
    pub revoked: Vec<Revoked>,
    /// The CRL for that list, signed with the cluster CA.
    pub pem: String,
}

/// The list the next CRL must carry, or None when `current` already covers every request
/// (there is always a CRL once an issuer has run: an empty one at first).
pub fn next_list(current: Option<&CrlRecord>, requests: &[Revoked]) -> Option<Vec<Revoked>> {
    let mut list = current.map(|c| c.revoked.clone()).unwrap_or_default();
    let before = list.len();
    for r in requests {
        if !list.iter().any(|have| have.serial == r.serial) {
            list.push(r.clone());
        }
    }
    (current.is_none() || list.len() != before).then_some(list)
}

/// Signs and stores a new CRL when the requests call for one; true when it did.
pub async fn reconcile(
    client: &mut Client,
    ca: &CertificateAuthority,
) -> Result<bool, etcd_client::Error> {
    let got = client.get(CRL_KEY, None).await?;
    let (current, mod_revision) = match got.kvs().first() {
        Some(kv) => (
            serde_json::from_slice::<CrlRecord>(kv.value()).ok(),
            kv.mod_revision(),
        ),
        None => (None, 0),
    };
    let requests: Vec<Revoked> = client
        .get(REVOKE_PREFIX, Some(GetOptions::new().with_prefix()))
        .await?
        .kvs()
        .iter()
        .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
        .collect();
    let Some(list) = next_list(current.as_ref(), &requests) else {
        return Ok(false);
    };
    let number = current.as_ref().map_or(1, |c| c.number + 1);
    let pem = match ca.sign_crl(&list, number, SystemTime::now()) {
        Ok(pem) => pem,
        Err(e) => {
            tracing::error!(error = %e, "cannot sign the revocation list");
            return Ok(false);
        }
    };
    let record = CrlRecord {
        number,
        revoked: list,
        pem,
    };
    let Ok(value) = serde_json::to_vec(&record) else {
        return Ok(false);
    };
    // Only over the list read above: two issuers for a moment cannot lose a revocation.
    let txn = Txn::new()
        .when([Compare::mod_revision(
            CRL_KEY,
            CompareOp::Equal,
            mod_revision,
        )])
        .and_then([TxnOp::put(CRL_KEY, value, None)]);
    let stored = client.txn(txn).await?.succeeded();
    if stored {
        tracing::info!(
            number,
            revoked = record.revoked.len(),
            "signed a new certificate revocation list"
        );
    }
    Ok(stored)
}

/// Asks for the revocation of `serial` (as a person typed it): puts the request where the
/// issuer folds it into the list. Returns what to tell the person.
pub async fn request(
    endpoints: &[String],
    tls: &crate::etcd::client::ClientTls,
    serial: &str,
    now: u64,
) -> Result<String, String> {
    let Some(serial) = crate::pki::crl::normalize_serial(serial) else {
        return Err(format!(
            "{serial:?} is not a certificate serial number: give it in hex, as `openssl x509 \
             -noout -serial -in CERT` prints it"
        ));
    };
    let request = Revoked {
        serial: serial.clone(),
        name: String::new(),
        at: now,
    };
    let mut client =
        crate::etcd::client::connect(endpoints, tls, std::time::Duration::from_secs(5))
            .await
            .map_err(|e| format!("cannot reach etcd: {e}"))?;
    put_request(&mut client, &request)
        .await
        .map_err(|e| format!("cannot store the revocation: {e}"))?;
    tracing::warn!(serial = %serial, "certificate revocation requested");
    Ok(format!(
        "serial {serial} is revoked: the issuer signs it into the revocation list within \
         seconds, and every member's etcd refuses new connections with it once its list is \
         updated (a few seconds more). Connections open now stay open until they close"
    ))
}

/// Puts the revocation request `r` where the issuer folds it into the list.
pub async fn put_request(client: &mut Client, r: &Revoked) -> Result<(), etcd_client::Error> {
    let value = serde_json::to_vec(r).unwrap_or_default();
    client
        .put(format!("{REVOKE_PREFIX}{}", r.serial), value, None)
        .await
        .map(|_| ())
}

/// Asks for the revocation of every unexpired certificate recorded under `name` (see
/// [`super::issued`]). Returns what to tell the person.
pub async fn request_name(
    endpoints: &[String],
    tls: &crate::etcd::client::ClientTls,
    name: &str,
    now: u64,
) -> Result<String, String> {
    let serials = put_requests(endpoints, tls, name, now, |records| {
        super::issued::serials_of(records, name, now)
    })
    .await?;
    if serials.is_empty() {
        return Err(format!(
            "no unexpired certificate named {name:?} is recorded: check the name (`quorate \
             status` lists the members; client names are what `quorate cert client` was \
             given), or revoke by --serial"
        ));
    }
    tracing::warn!(name, serials = ?serials, "certificate revocation requested by name");
    let open = match delete_user(endpoints, tls, name).await {
        Ok(true) => format!(
            "Its etcd user {name} is deleted: connections open now are refused at their next \
             request"
        ),
        Ok(false) => format!(
            "{name} is a member of the cluster, so its etcd user stays: remove the member \
             (`quorate leave` on it) to cut off connections open now"
        ),
        Err(e) => format!(
            "Its etcd user could not be deleted ({e}): connections open now stay open until \
             they close; run the command again to retry"
        ),
    };
    Ok(format!(
        "{} certificate(s) of {name} revoked (serials {}): the issuer signs them into the \
         revocation list within seconds, and every member's etcd refuses new connections with \
         them once its list is updated. {open}",
        serials.len(),
        serials.join(", ")
    ))
}

/// Deletes the etcd user `name` unless it is `root` or an etcd member's name: every
/// certificate of the name is revoked, and etcd takes the user from the certificate at every
/// request, so connections already open lose their access too. False when it was kept.
/// Also used once a member is removed (leave, remove_dead_after): a host that comes back under
/// the name becomes its user again when it is given its new certificate.
pub async fn delete_user(
    endpoints: &[String],
    tls: &crate::etcd::client::ClientTls,
    name: &str,
) -> Result<bool, String> {
    let mut client =
        crate::etcd::client::connect(endpoints, tls, std::time::Duration::from_secs(5))
            .await
            .map_err(|e| format!("cannot reach etcd: {e}"))?;
    let members = client
        .member_list()
        .await
        .map_err(|e| format!("cannot list the members: {e}"))?;
    if name == crate::etcd::auth::ROOT || members.members().iter().any(|m| m.name() == name) {
        return Ok(false);
    }
    // The name no longer counts as holding the CA seal secret either (a host coming back under
    // it records so again once it holds it): deleted first, as a request right after an auth
    // change may be refused. A member that has not applied an auth change yet (the issuer adds
    // users every 10 s) refuses with "revision of auth store is old": tried again a moment later.
    let holder = format!("{}{name}", super::reseal::HOLDERS_PREFIX);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let deleted = async {
            client.delete(holder.as_str(), None).await?;
            let users = client.user_list().await?;
            if users.users().iter().any(|u| u == name) {
                client.user_delete(name).await?;
                return Ok(true);
            }
            Ok::<_, etcd_client::Error>(false)
        }
        .await;
        match deleted {
            Ok(true) => {
                tracing::warn!(user = name, "deleted the etcd user of revoked certificates");
                return Ok(true);
            }
            Ok(false) => return Ok(true),
            Err(e) if attempt < 10 && e.to_string().contains("revision of auth store is old") => {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The serials revocation was asked for (the requests stay after the list carries them).
pub async fn revoked_serials(
    client: &mut Client,
) -> Result<std::collections::BTreeSet<String>, etcd_client::Error> {
    let got = client
        .get(
            REVOKE_PREFIX,
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    Ok(got
        .kvs()
        .iter()
        .filter_map(|kv| {
            kv.key_str()
                .ok()?
                .strip_prefix(REVOKE_PREFIX)
                .map(str::to_owned)
        })
        .collect())
}

/// Revokes the node certificates a removed member leaves behind: those of `name` signed
/// before `before` (Unix seconds), except `keep` (the replacing host's own). The serials
/// revoked (none is fine: nothing was recorded, or all expired).
pub async fn request_superseded(
    endpoints: &[String],
    tls: &crate::etcd::client::ClientTls,
    name: &str,
    keep: Option<&str>,
    before: u64,
    now: u64,
) -> Result<Vec<String>, String> {
    let serials = put_requests(endpoints, tls, name, now, |records| {
        super::issued::superseded_node_serials(records, name, keep, before, now)
    })
    .await?;
    if serials.is_empty() {
        tracing::info!(
            member = name,
            "no unexpired certificate of the removed member is recorded"
        );
    } else {
        tracing::warn!(member = name, serials = ?serials, "revoked the certificates of a removed member");
    }
    Ok(serials)
}

/// Reads the registry, picks serials with `pick` and puts a revocation request for each.
async fn put_requests(
    endpoints: &[String],
    tls: &crate::etcd::client::ClientTls,
    name: &str,
    now: u64,
    pick: impl FnOnce(&[super::issued::Issued]) -> Vec<String>,
) -> Result<Vec<String>, String> {
    let mut client =
        crate::etcd::client::connect(endpoints, tls, std::time::Duration::from_secs(5))
            .await
            .map_err(|e| format!("cannot reach etcd: {e}"))?;
    let records = super::issued::list(&mut client)
        .await
        .map_err(|e| format!("cannot read the issued certificates: {e}"))?;
    let serials = pick(&records);
    for serial in &serials {
        let request = Revoked {
            serial: serial.clone(),
            name: name.to_owned(),
            at: now,
        };
        let value = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        client
            .put(format!("{REVOKE_PREFIX}{serial}"), value, None)
            .await
            .map_err(|e| format!("cannot store the revocation of {serial}: {e}"))?;
    }
    Ok(serials)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(serial: &str) -> Revoked {
        Revoked {
            serial: serial.into(),
            name: String::new(),
            at: 1,
        }
    }

    #[test]
    fn the_list_grows_by_new_requests_only() {
        // No CRL yet: an empty one first.
        assert_eq!(next_list(None, &[]), Some(vec![]));
        let current = CrlRecord {
            number: 3,
            revoked: vec![r("0a")],
            pem: String::new(),
        };
        assert_eq!(next_list(Some(&current), &[]), None);
        assert_eq!(
            next_list(Some(&current), &[r("0a")]),
            None,
            "already listed"
        );
        assert_eq!(
            next_list(Some(&current), &[r("0a"), r("0b"), r("0b")]),
            Some(vec![r("0a"), r("0b")])
        );
    }
}
