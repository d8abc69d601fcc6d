//! `quorate token show`: this cluster's join token in its pinned form, for new hosts. The CA
//! hash comes from the CA certificate on this member's disk (never from the network), so the
//! command runs where the token and the CA are readable: as root or the service user on a
//! member.

use anyhow::bail;

use crate::config::Settings;
use crate::pki::{CaHash, PkiStore};

/// Prints `qrt1:sha256:<CA hash>:<token>`, for the join token or (`client`) the client token
/// this member keeps.
pub fn token_show(settings: &Settings, client: bool) -> anyhow::Result<()> {
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
    if !client {
        println!("{}", settings.token.pinned(&ca));
        return Ok(());
    }
    let file = settings.state_dir.join(crate::client_token::STATE_FILE);
    match crate::node::client_token::load(&settings.state_dir) {
        Some(token) => println!("{}", token.pinned(&ca)),
        None if file.exists() => bail!(
            "cannot read the client token in {}: run this as root or the service user",
            file.display()
        ),
        None => bail!(
            "this member has no client token ({} does not exist): make one with `quorate \
             token create --client`, or wait a few seconds for this member to read it",
            file.display()
        ),
    }
    Ok(())
}

/// `quorate token create --client`: through the local agent's control socket.
pub async fn client_token_create(settings: &Settings, replace: bool) -> anyhow::Result<()> {
    let path = format!("/v1/token/client?replace={replace}");
    super::local::post_and_print(settings, &path, std::time::Duration::from_secs(30)).await
}
