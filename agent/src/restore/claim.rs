//! Claiming a restore generation in etcd before deciding it, so that two members that start a
//! restore at the same moment cannot both decide one: `/quorate/restore/generation` holds the
//! newest claimed generation (zero-padded, so that etcd's byte comparison orders it), and a
//! transaction puts the new one only if the key is absent or older. The restore itself puts
//! the snapshot's value back, which is older, so the next restore can claim again.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::RestoreError;
use crate::etcd::client::{connect, ClientTls};

/// The claim key.
pub const CLAIM_KEY: &str = "/quorate/restore/generation";
const TIMEOUT: Duration = Duration::from_secs(5);

/// The claim key's value for `generation`.
pub fn claim_value(generation: u64) -> String {
    format!("{generation:020}")
}

/// Claims `generation` (by `me`); refuses when another member claimed it or a newer one.
pub async fn claim(
    endpoints: &[String],
    tls: &ClientTls,
    generation: u64,
) -> Result<(), RestoreError> {
    let fail = |e: etcd_client::Error| {
        RestoreError::Refused(format!(
            "cannot claim restore generation {generation} in etcd: {e}"
        ))
    };
    let mut client = connect(endpoints, tls, TIMEOUT).await.map_err(fail)?;
    let value = claim_value(generation);
    let absent = Txn::new()
        .when([Compare::version(CLAIM_KEY, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(CLAIM_KEY, value.clone(), None)]);
    if client.txn(absent).await.map_err(fail)?.succeeded() {
        return Ok(());
    }
    let older = Txn::new()
        .when([Compare::value(CLAIM_KEY, CompareOp::Less, value.clone())])
        .and_then([TxnOp::put(CLAIM_KEY, value, None)]);
    if client.txn(older).await.map_err(fail)?.succeeded() {
        return Ok(());
    }
    Err(RestoreError::Refused(format!(
        "another member has just claimed restore generation {generation} or a newer one: a \
         restore is being started elsewhere; wait for it (quorate status)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_values_order_like_numbers() {
        assert!(claim_value(9) < claim_value(10));
        assert!(claim_value(1) < claim_value(u64::MAX));
        assert_eq!(claim_value(3).len(), 20);
    }
}
