//! `quorate restore SOURCE --yes`: asks the local agent (over its control socket, so only root
//! and the service user can) to restore the whole cluster from a snapshot, then follows the
//! restore in the agent's status and prints each member as it is done. While the agent
//! downloads an `s3://` source, and while this member fetches the snapshot from the deciding
//! one, it shows the bytes done (a bar on a terminal, plain lines otherwise). Without `--yes`
//! it only says what would happen.

use std::time::Duration;

use anyhow::bail;

use super::local::fetch_report;
use super::progress::BytesProgress;
use crate::config::Settings;
use crate::restore::transfer::Transfer;

/// How long the command follows a restore before leaving it to `quorate status`.
const FOLLOW: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_millis(500);

/// Percent-encodes a query value (everything but unreserved characters and `/`).
fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The source as the agent must see it: an absolute path (or an URL as given).
fn resolve(source: &str) -> anyhow::Result<String> {
    if source.contains("://") {
        return Ok(source.to_owned());
    }
    Ok(std::path::absolute(source)?.display().to_string())
}

/// `quorate restore`.
pub async fn restore(settings: &Settings, source: &str, yes: bool) -> anyhow::Result<()> {
    let source = resolve(source)?;
    if !yes {
        bail!(
            "quorate restore replaces the data of EVERY member of the cluster with {source}: \
             each member stops etcd, moves its data aside (kept in the state directory as \
             etcd.pre-restore-*), restores the snapshot and starts again as a new cluster (new \
             cluster ID; the revision goes back to the snapshot's, so watchers must re-list). \
             Writes made after the snapshot are lost. Nothing was changed. Run again with --yes \
             to do it"
        );
    }
    let path = format!("/v1/restore?source={}", encode(&source));
    if source.starts_with("s3://") {
        eprintln!("the agent downloads {source} and checks it first");
    }
    let post = crate::control::post_request(
        &settings.state_dir,
        &path,
        crate::control::RESTORE_REQUEST_TIMEOUT,
    );
    tokio::pin!(post);
    // The agent answers once the source is downloaded, checked and the plan decided; until
    // then its status says how far the download is.
    let mut shown = TransferView::default();
    let answer = loop {
        tokio::select! {
            answer = &mut post => break answer,
            _ = tokio::time::sleep(POLL) => {
                let report = fetch_report(settings).await.ok();
                shown.update(report.and_then(|r| r.restore_transfer).as_ref());
            }
        }
    };
    let (code, body) = answer.map_err(|e| anyhow::anyhow!(e))?;
    shown.update(None);
    if code != 200 {
        bail!("{}", body.trim_end());
    }
    print!("{body}");
    follow(settings, &mut shown).await
}

/// The transfer the agent reports, drawn as it goes; a new one replaces the last.
#[derive(Default)]
struct TransferView {
    current: Option<(String, BytesProgress)>,
}

impl TransferView {
    fn update(&mut self, transfer: Option<&Transfer>) {
        let same =
            matches!((&self.current, transfer), (Some((what, _)), Some(t)) if *what == t.what);
        if !same {
            if let Some((_, progress)) = self.current.take() {
                progress.finish("done");
            }
        }
        let Some(t) = transfer else { return };
        let (_, progress) = self
            .current
            .get_or_insert_with(|| (t.what.clone(), BytesProgress::new(&t.what)));
        progress.set_total(t.total);
        progress.set(t.done);
    }
}

/// Prints members as they finish, until every member of the plan is done and this agent is
/// ready again.
async fn follow(settings: &Settings, shown: &mut TransferView) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + FOLLOW;
    let mut printed: Vec<String> = Vec::new();
    loop {
        if let Ok(report) = fetch_report(settings).await {
            shown.update(report.restore_transfer.as_ref());
            if let Some(r) = &report.restore {
                for m in r.members.iter().filter(|m| m.done) {
                    if !printed.contains(&m.name) {
                        println!("{}: restored", m.name);
                        printed.push(m.name.clone());
                    }
                }
                if r.complete() && report.ready {
                    println!(
                        "restore generation {} done: {} members restored; this member is ready",
                        r.generation,
                        r.members.len()
                    );
                    return Ok(());
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the restore is still going on after {FOLLOW:?}; follow it with quorate status");
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("/var/lib/a b&c.db"), "/var/lib/a%20b%26c.db");
        assert_eq!(encode("s3://b/k+1"), "s3%3A//b/k%2B1");
    }
}
