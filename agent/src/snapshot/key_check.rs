//! The configuration's check of `snapshot.encryption_key_file`: an absolute path to a file
//! that group and others cannot read, holding an age X25519 identity. A user who may not read
//! the file (`quorate status` run by someone other than the service user) still gets a valid
//! configuration; the agent itself, which must read it, fails at start if it is not a key.

use std::io::ErrorKind;
use std::path::Path;

use super::crypt::{load_identity, CryptError};

/// What is wrong with a key file, and how to fix it.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyProblem {
    pub what: String,
    pub fix: String,
}

/// The problem with the key file at `path`, if any.
pub fn problem(path: &Path) -> Option<KeyProblem> {
    let shown = path.display();
    if !path.is_absolute() {
        return Some(KeyProblem {
            what: "not an absolute path".into(),
            fix: "write the absolute path of an age-keygen identity file".into(),
        });
    }
    match load_identity(path) {
        Ok(_) => None,
        Err(CryptError::KeyUnreadable { source, .. })
            if source.kind() == ErrorKind::PermissionDenied =>
        {
            None
        }
        Err(CryptError::KeyUnreadable { source, .. }) if source.kind() == ErrorKind::NotFound => {
            Some(KeyProblem {
                what: "the file does not exist".into(),
                fix: format!(
                    "make a key with `age-keygen -o {shown}` (mode 0600) and keep a copy off \
                     the cluster, or remove the setting"
                ),
            })
        }
        Err(CryptError::KeyExposed { mode, .. }) => Some(KeyProblem {
            what: format!("mode {mode:04o}: group or others can read the key"),
            fix: format!("chmod 600 {shown} (owned by the service user)"),
        }),
        Err(e) => Some(KeyProblem {
            what: e.to_string(),
            fix: format!("make a key with `age-keygen -o {shown}`, or remove the setting"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn relative_missing_exposed_and_junk_key_files_are_problems() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            problem(Path::new("key.txt")).unwrap().what,
            "not an absolute path"
        );
        let missing = dir.path().join("missing.txt");
        assert!(problem(&missing).unwrap().fix.contains("age-keygen -o"));
        let key = dir.path().join("key.txt");
        let identity = age::x25519::Identity::generate();
        use age::secrecy::ExposeSecret;
        std::fs::write(&key, identity.to_string().expose_secret()).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let p = problem(&key).unwrap();
        assert!(
            p.what.contains("0644") && p.fix.contains("chmod 600"),
            "{p:?}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(problem(&key), None);
        std::fs::write(&key, "hello\n").unwrap();
        assert!(problem(&key).is_some());
    }
}
