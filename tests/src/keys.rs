//! Snapshot encryption keys for tests, as `age-keygen` writes them.

use std::path::Path;

use age::secrecy::ExposeSecret;

/// Writes a new age X25519 identity to `path` (mode 0600, the agent refuses a key that others
/// may read) and returns it.
pub fn write_age_key(path: &Path) -> age::x25519::Identity {
    use std::os::unix::fs::PermissionsExt;
    let identity = age::x25519::Identity::generate();
    let text = format!(
        "# public key: {}\n{}\n",
        identity.to_public(),
        identity.to_string().expose_secret()
    );
    std::fs::write(path, text).expect("write the key file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    identity
}
