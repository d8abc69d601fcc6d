//! `quorate token show`: this cluster's join token in its pinned form, for new hosts. The CA
//! hash comes from the CA certificate on this member's disk (never from the network), so the
//! command runs where the token and the CA are readable: as root or the service user on a
//! member.

use anyhow::bail;

use crate::config::Settings;
use crate::pki::{CaHash, PkiStore};

/// Prints `qrt1:sha256:<CA hash>:<token>`.
pub fn token_show(settings: &Settings) -> anyhow::Result<()> {
    let pki = PkiStore::new(settings.pki_dir());
    let ca = match pki.load_ca_cert() {
        Ok(Some(pem)) => CaHash::of_cert_pem(&pem)?,
        Ok(None) => bail!(
            "this host has no cluster CA yet ({} does not exist): run this on a member of the \
             cluster",
            pki.ca_cert_path().display()
        ),
        Err(e) => bail!("cannot read this cluster's CA: {e}. Run this as root or the service user"),
    };
    if let Some(pin) = settings.ca_pin.filter(|pin| *pin != ca) {
        bail!("the config pins CA {pin}, but this host's CA is {ca}: fix ca_hash first");
    }
    println!("{}", settings.token.pinned(&ca));
    Ok(())
}
