//! The client token: the second credential of a cluster (like k3s' agent token beside its
//! server token). `quorate token create --client` on a member makes a random one (never
//! derived from the join token) and stores it in etcd at [`CLIENT_TOKEN_KEY`], sealed with a
//! key derived from the join token, so that every member can read it and nobody else (an
//! etcd client certificate reads only the sealed bytes). Its holder can prove it to the
//! issuer's API and get client certificates: never a node certificate, never membership,
//! nothing of the CA (see [`crate::api::sign`]).

use std::time::Duration;

use base64::Engine;
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::aead::Aead;
use crate::token::{JoinToken, KeyPurpose};

/// Where the sealed client token lives.
pub const CLIENT_TOKEN_KEY: &str = "/quorate/client-token";
/// The file in the state directory where each member keeps the client token it read last
/// (0600), so that it still checks proofs while etcd is unavailable.
pub const STATE_FILE: &str = "client-token";

/// What [`CLIENT_TOKEN_KEY`] holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientTokenRecord {
    /// The token sealed with the join token's [`KeyPurpose::ClientTokenSeal`] key, base64.
    pub sealed: String,
    /// When it was made (seconds since the epoch).
    pub created_at: u64,
}

/// The keys a member checks a client-token holder's messages with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKeys {
    /// Proves the client token in agent-API requests.
    pub api_proof: [u8; 32],
    /// Seals client-mode agents' directory asks and their answers on the gossip port.
    pub gossip: [u8; 32],
}

impl ClientKeys {
    pub fn of(token: &JoinToken) -> Self {
        Self {
            api_proof: token.derive(KeyPurpose::ApiProof),
            gossip: token.derive(KeyPurpose::Gossip),
        }
    }
}

/// Why the stored client token could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientTokenError {
    #[error("{CLIENT_TOKEN_KEY} is not a sealed client token: {0}")]
    Malformed(String),
    #[error(
        "{CLIENT_TOKEN_KEY} does not open with this host's join token (another cluster's, or \
         tampered with)"
    )]
    WrongSeal,
}

/// The associated data binding a sealed token to its key and creation time.
fn aad(created_at: u64) -> Vec<u8> {
    format!("{CLIENT_TOKEN_KEY} {created_at}").into_bytes()
}

/// Seals `client` for storage.
pub fn seal(join: &JoinToken, client: &JoinToken, created_at: u64) -> ClientTokenRecord {
    let aead = Aead::new(&join.derive(KeyPurpose::ClientTokenSeal));
    let sealed = aead.seal(&aad(created_at), client.expose().as_bytes());
    ClientTokenRecord {
        sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
        created_at,
    }
}

/// Opens a stored record with the join token.
pub fn open(join: &JoinToken, record: &ClientTokenRecord) -> Result<JoinToken, ClientTokenError> {
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(&record.sealed)
        .map_err(|e| ClientTokenError::Malformed(e.to_string()))?;
    let aead = Aead::new(&join.derive(KeyPurpose::ClientTokenSeal));
    let plain = aead
        .open(&aad(record.created_at), &sealed)
        .map_err(|_| ClientTokenError::WrongSeal)?;
    let text = String::from_utf8(plain).map_err(|e| ClientTokenError::Malformed(e.to_string()))?;
    JoinToken::parse(&text).map_err(|e| ClientTokenError::Malformed(e.to_string()))
}

/// Decodes the value of [`CLIENT_TOKEN_KEY`] and opens it.
pub fn open_value(join: &JoinToken, value: &[u8]) -> Result<JoinToken, ClientTokenError> {
    let record: ClientTokenRecord =
        serde_json::from_slice(value).map_err(|e| ClientTokenError::Malformed(e.to_string()))?;
    open(join, &record)
}

/// Reads the stored client token, if there is one, opening it with any token of `ring`. One
/// sealed with another token than the primary (a join token rotation, see
/// [`crate::rotation`]) is sealed again with the primary, by compare-and-swap: this member
/// uses the primary only once every member accepts it, so every member still opens it.
pub async fn read(
    client: &mut Client,
    ring: &crate::keyring::Keyring,
) -> Result<Option<JoinToken>, String> {
    let got = client
        .get(CLIENT_TOKEN_KEY, None)
        .await
        .map_err(|e| format!("cannot read {CLIENT_TOKEN_KEY}: {e}"))?;
    let Some(kv) = got.kvs().first() else {
        return Ok(None);
    };
    let record: ClientTokenRecord = serde_json::from_slice(kv.value())
        .map_err(|e| ClientTokenError::Malformed(e.to_string()).to_string())?;
    let mut last = ClientTokenError::WrongSeal;
    for (i, join) in ring.accepted().enumerate() {
        match open(join, &record) {
            Ok(token) if i == 0 => return Ok(Some(token)),
            Ok(token) => {
                let value = serde_json::to_vec(&seal(ring.primary(), &token, record.created_at))
                    .map_err(|e| e.to_string())?;
                let txn = Txn::new()
                    .when(vec![Compare::mod_revision(
                        CLIENT_TOKEN_KEY,
                        CompareOp::Equal,
                        kv.mod_revision(),
                    )])
                    .and_then(vec![TxnOp::put(CLIENT_TOKEN_KEY, value, None)]);
                client
                    .txn(txn)
                    .await
                    .map_err(|e| format!("cannot seal the client token again: {e}"))?;
                tracing::info!(
                    "the client token in etcd is now sealed with the join token in force"
                );
                return Ok(Some(token));
            }
            Err(e) => last = e,
        }
    }
    Err(last.to_string())
}

/// `quorate token create --client`: makes and stores a new client token and returns it. Only
/// when there is none yet, unless `replace` (then hosts holding the old one can no longer get
/// certificates once the members have read the new one, within seconds).
pub async fn create(
    endpoints: &[String],
    tls: &crate::etcd::client::ClientTls,
    join: &JoinToken,
    replace: bool,
    now: u64,
) -> Result<JoinToken, String> {
    let token = JoinToken::generate_client();
    let value = serde_json::to_vec(&seal(join, &token, now)).map_err(|e| e.to_string())?;
    let mut client = crate::etcd::client::connect(endpoints, tls, Duration::from_secs(5))
        .await
        .map_err(|e| format!("cannot reach etcd: {e}"))?;
    let put = TxnOp::put(CLIENT_TOKEN_KEY, value, None);
    let txn = if replace {
        Txn::new().and_then(vec![put])
    } else {
        Txn::new()
            .when(vec![Compare::create_revision(
                CLIENT_TOKEN_KEY,
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![put])
    };
    let done = client
        .txn(txn)
        .await
        .map_err(|e| format!("cannot store the client token: {e}"))?;
    if !done.succeeded() {
        return Err(
            "this cluster has a client token already: `quorate token show --client` prints it; \
             `quorate token create --client --replace` makes a new one (hosts holding the old \
             one can then no longer get certificates)"
                .into(),
        );
    }
    tracing::warn!(replace, "a new client token was created");
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_token_opens_with_its_join_token_only() {
        let join = JoinToken::generate();
        let client = JoinToken::generate_client();
        let record = seal(&join, &client, 1_700_000_000);
        assert!(!record.sealed.contains(client.expose()));
        assert_eq!(open(&join, &record).unwrap(), client);
        let value = serde_json::to_vec(&record).unwrap();
        assert_eq!(open_value(&join, &value).unwrap(), client);
        assert_eq!(
            open(&JoinToken::generate(), &record),
            Err(ClientTokenError::WrongSeal)
        );
        // The creation time is bound to the sealed bytes.
        let moved = ClientTokenRecord {
            created_at: 1,
            ..record.clone()
        };
        assert_eq!(open(&join, &moved), Err(ClientTokenError::WrongSeal));
        assert!(matches!(
            open_value(&join, b"{}"),
            Err(ClientTokenError::Malformed(_))
        ));
        let e = open_value(&join, b"not json").unwrap_err().to_string();
        assert!(e.contains(CLIENT_TOKEN_KEY), "{e}");
    }
}
