//! `quorate etcd restart --rolling`: asks the local agent for a rolling restart of every etcd
//! member (one at a time, each only while every voter is healthy), then follows it until every
//! member has restarted, printing each one as it is done. `quorate restart`: asks the local
//! agent to restart itself on its installed binary, when it holds the member-down lock.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::config::Settings;
use crate::control::{get_request, post_request, REQUEST_TIMEOUT};
use crate::rolling::{Progress, RESTART_DEADLINE};

/// How often the progress is asked for.
const POLL: Duration = Duration::from_secs(1);

/// `quorate restart`: asks the local agent to restart on its installed binary when it may;
/// returns at once (the package's postinst must not wait on the other hosts).
pub async fn agent_restart(settings: &Settings) -> anyhow::Result<()> {
    super::local::post_and_print(settings, "/v1/agent/restart", REQUEST_TIMEOUT).await
}

/// `quorate etcd restart [--rolling]`.
pub async fn etcd_restart(settings: &Settings, rolling: bool) -> anyhow::Result<()> {
    if !rolling {
        bail!(
            "restarting every member at once would stop the cluster; use `quorate etcd restart \
             --rolling` (one member at a time, each only while every voter is healthy)"
        );
    }
    let (code, body) = post_request(&settings.state_dir, "/v1/etcd/restart", REQUEST_TIMEOUT)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    if code != 200 {
        bail!("{}", body.trim_end());
    }
    let id: u64 = body
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("unexpected answer from the agent: {body}"))?;
    println!("rolling restart {id} requested; members restart one at a time");
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut last_message = String::new();
    let mut deadline: Option<Instant> = None;
    loop {
        match get_request(&settings.state_dir, &format!("/v1/etcd/restart?id={id}")).await {
            Ok((200, body)) => {
                let progress: Progress = serde_json::from_str(&body)
                    .map_err(|e| anyhow::anyhow!("unexpected progress answer: {e}"))?;
                let total = progress.done.len() + progress.pending.len();
                // Every member gets the restart deadline, and a little more for the lock.
                let limit = (RESTART_DEADLINE + Duration::from_secs(60)) * total.max(1) as u32;
                let deadline = *deadline.get_or_insert_with(|| Instant::now() + limit);
                for name in &progress.done {
                    if seen.insert(name.clone()) {
                        println!("{name}: restarted ({}/{total} members done)", seen.len());
                    }
                }
                if progress.pending.is_empty() && total > 0 {
                    println!("rolling restart {id} done: every member restarted");
                    return Ok(());
                }
                if progress.message != last_message {
                    println!("  {}", progress.message);
                    last_message = progress.message;
                }
                if Instant::now() > deadline {
                    bail!(
                        "rolling restart {id} is not done after {limit:?}: still pending {} \
                         (see `quorate status` on those hosts)",
                        progress.pending.join(", ")
                    );
                }
            }
            // The local member may be the one restarting: ask again.
            Ok((_, body)) => tracing::debug!(answer = %body.trim_end(), "progress not available"),
            Err(e) => tracing::debug!(error = %e, "progress not available"),
        }
        tokio::time::sleep(POLL).await;
    }
}
