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
        let ring = settings.token.ring();
        if !ring.others().is_empty() {
            eprintln!(
                "note: a join token rotation is under way on this member (also accepted: {});                  `quorate status` shows it",
                ring.others()
                    .iter()
                    .map(|t| t.fingerprint())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
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

/// `quorate token rotate`: through the local agent's control socket, the token (if given) in
/// the request's body.
pub async fn token_rotate(
    settings: &Settings,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let body = match token_file {
        None => Vec::new(),
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            crate::token::JoinToken::parse(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
                .expose()
                .as_bytes()
                .to_vec()
        }
    };
    let (code, answer) = crate::control::post_body(
        &settings.state_dir,
        "/v1/token/rotate",
        body,
        std::time::Duration::from_secs(30),
    )
    .await
    .map_err(|e| anyhow::anyhow!(e))?;
    if code != 200 {
        bail!("{}", answer.trim_end());
    }
    // The token alone on stdout (`quorate token rotate > file`), the guidance on stderr.
    let (token, guidance) = answer
        .trim_end()
        .split_once('\n')
        .unwrap_or((answer.trim_end(), ""));
    println!("{token}");
    eprintln!("{}", guidance.trim());
    Ok(())
}

/// `quorate token create --client`: through the local agent's control socket.
pub async fn client_token_create(settings: &Settings, replace: bool) -> anyhow::Result<()> {
    let path = format!("/v1/token/client?replace={replace}");
    super::local::post_and_print(settings, &path, std::time::Duration::from_secs(30)).await
}
