//! The files a client agent keeps in `client.dir`: `ca.pem`, `NAME.pem`, `NAME-key.pem`
//! (0600), `endpoints` (one comma-separated line), `endpoints.json` and `etcdctl.env`. What
//! they contain is decided here from what the agent holds ([`render`], pure); [`write_changed`]
//! replaces, each atomically, only the files whose content differs, key first. The key stays
//! the same across renewals, so a consumer reading the key and the certificate at any moment
//! always gets a matching pair.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::fsutil;
use crate::gossip::directory::DirectoryMember;

/// What goes into the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents<'a> {
    pub name: &'a str,
    pub ca_pem: &'a str,
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
    pub members: &'a [DirectoryMember],
}

/// One file to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub mode: u32,
}

#[derive(Serialize)]
struct EndpointsJson<'a> {
    endpoints: Vec<&'a str>,
    members: &'a [DirectoryMember],
}

/// The members' client URLs, each once, in member-name order.
pub fn endpoints(members: &[DirectoryMember]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for url in members.iter().flat_map(|m| m.client_urls.iter()) {
        if !out.contains(&url.as_str()) {
            out.push(url);
        }
    }
    out
}

/// The certificate's and key's paths in `dir`.
pub fn cert_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join("ca.pem"),
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    )
}

/// Every file, key first.
pub fn render(dir: &Path, c: &Contents<'_>) -> Vec<File> {
    let (ca, cert, key) = cert_paths(dir, c.name);
    let urls = endpoints(c.members);
    let json = serde_json::to_vec_pretty(&EndpointsJson {
        endpoints: urls.clone(),
        members: c.members,
    })
    .unwrap_or_default();
    let env = format!(
        "ETCDCTL_API=3\nETCDCTL_ENDPOINTS={}\nETCDCTL_CACERT={}\nETCDCTL_CERT={}\nETCDCTL_KEY={}\n",
        urls.join(","),
        ca.display(),
        cert.display(),
        key.display()
    );
    let public = |path: PathBuf, bytes: Vec<u8>| File {
        path,
        bytes,
        mode: fsutil::MODE_PUBLIC,
    };
    vec![
        File {
            path: key,
            bytes: c.key_pem.as_bytes().to_vec(),
            mode: fsutil::MODE_PRIVATE,
        },
        public(ca, c.ca_pem.as_bytes().to_vec()),
        public(cert, c.cert_pem.as_bytes().to_vec()),
        public(
            dir.join("endpoints"),
            format!("{}\n", urls.join(",")).into_bytes(),
        ),
        public(dir.join("endpoints.json"), json),
        public(dir.join("etcdctl.env"), env.into_bytes()),
    ]
}

/// Writes the files whose content differs from what is on disk; the paths it wrote.
pub fn write_changed(files: &[File]) -> Result<Vec<PathBuf>, fsutil::FsError> {
    let mut written = Vec::new();
    for f in files {
        if std::fs::read(&f.path).is_ok_and(|on_disk| on_disk == f.bytes) {
            continue;
        }
        fsutil::atomic_write(&f.path, &f.bytes, f.mode)?;
        written.push(f.path.clone());
    }
    Ok(written)
}

/// Checks at start that `dir` exists or can be made, and that files can be written in it.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    fsutil::create_dir_if_missing(dir, 0o755).map_err(|e| e.to_string())?;
    // A random O_EXCL|O_NOFOLLOW name, as for every write.
    let (file, tmp) = fsutil::create_temp_next_to(&dir.join("endpoints"), fsutil::MODE_PUBLIC)
        .map_err(|e| e.to_string())?;
    drop(file);
    let _ = std::fs::remove_file(&tmp);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, urls: &[&str]) -> DirectoryMember {
        DirectoryMember {
            name: name.into(),
            client_urls: urls.iter().map(|u| u.to_string()).collect(),
            gossip_addr: None,
        }
    }

    #[test]
    fn the_files_say_the_members_and_where_the_certificate_is() {
        let members = [
            member("a", &["https://10.0.0.1:2379"]),
            member("b", &["https://10.0.0.2:2379", "https://10.0.0.1:2379"]),
        ];
        let files = render(
            Path::new("/srv/c"),
            &Contents {
                name: "omni",
                ca_pem: "CA",
                cert_pem: "CERT",
                key_pem: "KEY",
                members: &members,
            },
        );
        let by = |n: &str| {
            files
                .iter()
                .find(|f| f.path == Path::new("/srv/c").join(n))
                .unwrap_or_else(|| panic!("{n}"))
        };
        assert_eq!(files[0].path, Path::new("/srv/c/omni-key.pem"), "key first");
        assert_eq!(by("omni-key.pem").mode, 0o600);
        assert_eq!(by("omni.pem").bytes, b"CERT");
        assert_eq!(by("ca.pem").mode, 0o644);
        assert_eq!(
            by("endpoints").bytes,
            b"https://10.0.0.1:2379,https://10.0.0.2:2379\n"
        );
        let json: serde_json::Value = serde_json::from_slice(&by("endpoints.json").bytes).unwrap();
        assert_eq!(json["endpoints"][1], "https://10.0.0.2:2379");
        assert_eq!(json["members"][0]["name"], "a");
        let env = String::from_utf8(by("etcdctl.env").bytes.clone()).unwrap();
        assert!(env.contains("ETCDCTL_ENDPOINTS=https://10.0.0.1:2379,https://10.0.0.2:2379\n"));
        assert!(env.contains("ETCDCTL_KEY=/srv/c/omni-key.pem\n"));
        assert!(env.contains("ETCDCTL_CACERT=/srv/c/ca.pem\n"));
    }

    #[test]
    fn only_changed_files_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let members = [member("a", &["https://10.0.0.1:2379"])];
        let mut c = Contents {
            name: "app",
            ca_pem: "CA",
            cert_pem: "CERT1",
            key_pem: "KEY",
            members: &members,
        };
        assert_eq!(write_changed(&render(dir.path(), &c)).unwrap().len(), 6);
        assert!(write_changed(&render(dir.path(), &c)).unwrap().is_empty());
        c.cert_pem = "CERT2";
        assert_eq!(
            write_changed(&render(dir.path(), &c)).unwrap(),
            vec![dir.path().join("app.pem")]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("app-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_unwritable_directory_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        assert!(check_dir(&file.join("sub")).is_err());
        assert!(check_dir(&dir.path().join("new")).is_ok());
    }
}
