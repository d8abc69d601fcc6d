//! `etcd snapshot restore` for one member, rendered purely: etcdctl (ETCDCTL_API=3) on etcd
//! 3.4, etcdutl on 3.5 and later when it is beside the etcd binary (3.6 dropped etcdctl's
//! restore); from etcdutl 3.5.16 the revision is bumped and marked compacted, so that watchers
//! notice the restore. The driver that runs it is `restore::run`.

use std::path::{Path, PathBuf};

/// What one member restores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreArgs<'a> {
    pub snapshot: &'a Path,
    pub name: &'a str,
    pub peer_url: &'a str,
    pub initial_cluster: &'a str,
    pub cluster_token: &'a str,
    /// Must not exist yet: the tool creates it.
    pub data_dir: &'a Path,
}

/// A rendered command: program, arguments, extra environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Renders the restore command for etcd `version` at `etcd_binary`; `etcdutl_beside` says
/// whether an etcdutl binary sits next to it.
pub fn restore_command(
    etcd_binary: &Path,
    version: (u32, u32, u32),
    etcdutl_beside: bool,
    a: &RestoreArgs<'_>,
) -> RestoreCommand {
    let dir = etcd_binary.parent().unwrap_or(Path::new("/usr/bin"));
    let use_etcdutl = version >= (3, 5, 0) && etcdutl_beside;
    let (program, env) = if use_etcdutl {
        (dir.join("etcdutl"), vec![])
    } else {
        (
            dir.join("etcdctl"),
            vec![("ETCDCTL_API".to_owned(), "3".to_owned())],
        )
    };
    let args = vec![
        "snapshot".to_owned(),
        "restore".to_owned(),
        a.snapshot.display().to_string(),
        format!("--name={}", a.name),
        format!("--initial-cluster={}", a.initial_cluster),
        format!("--initial-cluster-token={}", a.cluster_token),
        format!("--initial-advertise-peer-urls={}", a.peer_url),
        format!("--data-dir={}", a.data_dir.display()),
    ];
    let mut args = args;
    if use_etcdutl && version >= BUMP_SINCE {
        // Revisions after the restore are far above any the old cluster reached, and the
        // restored revision counts as compacted: a watcher that resumes from a revision it saw
        // before the restore gets "required revision has been compacted" and re-lists, instead
        // of silently missing or repeating events.
        args.push(format!("--bump-revision={REVISION_BUMP}"));
        args.push("--mark-compacted".to_owned());
    }
    RestoreCommand { program, args, env }
}

/// The first etcdutl with `--bump-revision` and `--mark-compacted`.
pub const BUMP_SINCE: (u32, u32, u32) = (3, 5, 16);

/// How far the revision jumps on a restore (the value etcd's own guide suggests; every member
/// restores with the same, so they agree on the revision).
pub const REVISION_BUMP: u64 = 1_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> RestoreArgs<'static> {
        RestoreArgs {
            snapshot: Path::new("/var/lib/quorate/restore/ab.db"),
            name: "b",
            peer_url: "https://10.0.0.2:2380",
            initial_cluster: "a=https://10.0.0.1:2380,b=https://10.0.0.2:2380",
            cluster_token: "quorate-restore-1",
            data_dir: Path::new("/var/lib/quorate/etcd"),
        }
    }

    const GOLDEN_ARGS: [&str; 8] = [
        "snapshot",
        "restore",
        "/var/lib/quorate/restore/ab.db",
        "--name=b",
        "--initial-cluster=a=https://10.0.0.1:2380,b=https://10.0.0.2:2380",
        "--initial-cluster-token=quorate-restore-1",
        "--initial-advertise-peer-urls=https://10.0.0.2:2380",
        "--data-dir=/var/lib/quorate/etcd",
    ];

    #[test]
    fn etcd_3_4_restores_with_etcdctl_api_3() {
        let c = restore_command(Path::new("/usr/bin/etcd"), (3, 4, 23), false, &args());
        assert_eq!(c.program, Path::new("/usr/bin/etcdctl"));
        assert_eq!(c.args, GOLDEN_ARGS);
        assert_eq!(c.env, [("ETCDCTL_API".to_owned(), "3".to_owned())]);
        // An etcdutl lying around does not change 3.4 (it has none of its own).
        let c = restore_command(Path::new("/usr/bin/etcd"), (3, 4, 23), true, &args());
        assert_eq!(c.program, Path::new("/usr/bin/etcdctl"));
    }

    #[test]
    fn etcd_3_5_and_3_6_restore_with_etcdutl_beside_the_binary_and_bump_the_revision() {
        for version in [(3, 5, 16), (3, 5, 30), (3, 6, 0)] {
            let c = restore_command(Path::new("/opt/etcd/bin/etcd"), version, true, &args());
            assert_eq!(c.program, Path::new("/opt/etcd/bin/etcdutl"));
            assert_eq!(c.args[..GOLDEN_ARGS.len()], GOLDEN_ARGS);
            assert_eq!(
                c.args[GOLDEN_ARGS.len()..],
                ["--bump-revision=1000000000", "--mark-compacted"]
            );
            assert!(c.env.is_empty());
        }
        // etcdutl before 3.5.16 has no --bump-revision.
        let c = restore_command(Path::new("/opt/etcd/bin/etcd"), (3, 5, 15), true, &args());
        assert_eq!(c.args, GOLDEN_ARGS);
    }

    #[test]
    fn etcd_3_5_without_etcdutl_falls_back_to_etcdctl() {
        let c = restore_command(Path::new("/opt/etcd/etcd"), (3, 5, 16), false, &args());
        assert_eq!(c.program, Path::new("/opt/etcd/etcdctl"));
    }
}
