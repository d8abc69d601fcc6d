//! Runs `snapshot restore` for this host's member (the command is rendered by
//! `etcd::restore`): the tool is chosen from the etcd binary's version as it is now (etcdctl on
//! 3.4, etcdutl on 3.5 and later when it sits beside etcd).

use std::path::Path;

use super::{local_etcd_version, RestoreError};
use crate::etcd::restore::{restore_command, RestoreArgs};

/// Restores `args.snapshot` into `args.data_dir` (which must not exist) with the etcd tools
/// beside `binary`, in `work_dir`.
pub async fn restore_data(
    binary: &Path,
    work_dir: &Path,
    args: &RestoreArgs<'_>,
) -> Result<(), RestoreError> {
    let version = local_etcd_version(binary).await?;
    let etcdutl = binary.parent().is_some_and(|d| d.join("etcdutl").exists());
    let command = restore_command(binary, version, etcdutl, args);
    tracing::warn!(program = %command.program.display(), data_dir = %args.data_dir.display(), "restoring the snapshot");
    let output = tokio::process::Command::new(&command.program)
        .args(&command.args)
        .envs(command.env.iter().map(|(k, v)| (k, v)))
        .current_dir(work_dir)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| RestoreError::Command(format!("{}: {e}", command.program.display())))?;
    if !output.status.success() {
        return Err(RestoreError::Command(format!(
            "{} {}: {}",
            command.program.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}
