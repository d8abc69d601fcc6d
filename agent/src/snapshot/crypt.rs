//! Encryption of snapshots at rest. A snapshot holds every key, the sealed CA included, so
//! with `snapshot.encryption_key_file` set it is stored as a standard age file (X25519, the
//! key file being an `age-keygen` identity, `AGE-SECRET-KEY-1...`): an operator can decrypt
//! it with the stock `age -d -i KEY` as well as with [`decrypt_to`].
//!
//! [`Encrypting`] encrypts in memory while the snapshot streams in, so the plaintext never
//! touches the disk; [`decrypt_to`] streams the other way and checks etcd's integrity hash of
//! the plaintext before the result takes its name.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use age::x25519::{Identity, Recipient};

use super::file::{StreamVerifier, VerifyError};
use crate::fsutil;

/// The first bytes of every (binary) age file.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";
/// What an encrypted snapshot's name adds after `.db`.
pub const AGE_EXT: &str = ".age";

/// Why a key could not be loaded or a snapshot not be decrypted.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    /// The snapshot is encrypted and no key was given.
    #[error(
        "{path} is encrypted and no key was given: set snapshot.encryption_key_file to the key \
         file it was encrypted with (docs/operations.md, encryption at rest)"
    )]
    NoKey { path: PathBuf },
    /// The key file cannot be read.
    #[error(
        "cannot read the key file {path}: {source}. Check the path and that this user may read it"
    )]
    KeyUnreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The key file may be read by others.
    #[error(
        "the key file {path} has mode {mode:04o}: group and others must not read it. Run \
         chmod 600 {path}"
    )]
    KeyExposed { path: PathBuf, mode: u32 },
    /// The key file holds no age identity.
    #[error(
        "the key file {path} holds no age X25519 identity (a line AGE-SECRET-KEY-1...): {why}. \
         Make one with age-keygen -o {path}"
    )]
    KeyInvalid { path: PathBuf, why: String },
    /// The key does not open this snapshot.
    #[error(
        "the key in {key} does not open {path}: it was encrypted to another key. Use the key \
         file that was snapshot.encryption_key_file when it was taken"
    )]
    WrongKey { path: PathBuf, key: PathBuf },
    /// The ciphertext is damaged or cut short.
    #[error(
        "{path} is truncated or corrupted ({why}): take or fetch another copy of the snapshot"
    )]
    Corrupted { path: PathBuf, why: String },
    /// The plaintext is not the snapshot etcd sent.
    #[error("{path} is not a good snapshot: {source}. Take or fetch another copy")]
    Integrity {
        path: PathBuf,
        #[source]
        source: VerifyError,
    },
    /// Reading the source or writing the destination failed.
    #[error("{0}")]
    Fs(#[from] fsutil::FsError),
    /// The destination exists already.
    #[error("{path} exists already: choose another destination or remove it first")]
    DestinationExists { path: PathBuf },
}

/// Loads the age X25519 identity from `path`: the file must not be readable by group or
/// others, and its first non-comment line is the identity (as `age-keygen` writes it).
pub fn load_identity(path: &Path) -> Result<Identity, CryptError> {
    let unreadable = |source| CryptError::KeyUnreadable {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CryptError::KeyExposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| CryptError::KeyInvalid {
            path: path.to_path_buf(),
            why: "the file is empty".into(),
        })?;
    Identity::from_str(line).map_err(|why| CryptError::KeyInvalid {
        path: path.to_path_buf(),
        why: why.to_owned(),
    })
}

/// Whether the file at `path` is an age file (by its header).
pub fn is_encrypted(path: &Path) -> io::Result<bool> {
    let mut head = [0u8; AGE_MAGIC.len()];
    let mut file = File::open(path)?;
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled == head.len() && head == AGE_MAGIC)
}

/// The bytes age has produced so far, taken out after each write.
#[derive(Clone, Default)]
struct Drain(Arc<Mutex<Vec<u8>>>);

impl Drain {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

impl Write for Drain {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("poisoned buffer"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Encrypts a stream in memory, piece by piece: feed plaintext, get ciphertext to store.
pub struct Encrypting {
    writer: age::stream::StreamWriter<Drain>,
    out: Drain,
}

impl Encrypting {
    /// Starts an age file to `recipient`.
    pub fn new(recipient: &Recipient) -> io::Result<Self> {
        let out = Drain::default();
        let encryptor = age::Encryptor::with_recipients(std::iter::once(recipient as _))
            .map_err(|e| io::Error::other(e.to_string()))?;
        let writer = encryptor.wrap_output(out.clone())?;
        Ok(Self { writer, out })
    }

    /// Feeds plaintext; returns the ciphertext ready so far (often empty: age seals 64 KiB
    /// chunks).
    pub fn update(&mut self, plain: &[u8]) -> io::Result<Vec<u8>> {
        self.writer.write_all(plain)?;
        Ok(self.out.take())
    }

    /// Seals the last chunk; returns the rest of the ciphertext.
    pub fn finish(self) -> io::Result<Vec<u8>> {
        let out = self.out.clone();
        self.writer.finish()?;
        Ok(out.take())
    }
}

/// Size of the pieces [`decrypt_to`] streams in.
const PIECE: usize = 256 * 1024;

/// Decrypts (or, for a plain snapshot, copies) `src` to `dst`, streamed, and checks etcd's
/// integrity hash of the plaintext; `dst` appears (fsynced, mode 0600) only if it passes, and
/// an existing `dst` is never replaced. A plain `src` needs no key.
pub fn decrypt_to(src: &Path, dst: &Path, key_file: Option<&Path>) -> Result<(), CryptError> {
    if dst.exists() {
        return Err(CryptError::DestinationExists {
            path: dst.to_path_buf(),
        });
    }
    let fs_err = |op, path: &Path, source| fsutil::FsError {
        op,
        path: path.to_path_buf(),
        source,
    };
    let encrypted = is_encrypted(src).map_err(|e| fs_err("read", src, e))?;
    let input = File::open(src).map_err(|e| fs_err("open", src, e))?;
    let mut reader: Box<dyn Read> = if encrypted {
        let key_file = key_file.ok_or_else(|| CryptError::NoKey {
            path: src.to_path_buf(),
        })?;
        let identity = load_identity(key_file)?;
        let decryptor =
            age::Decryptor::new_buffered(BufReader::new(input)).map_err(|e| match e {
                age::DecryptError::Io(e) => fs_err("read", src, e).into(),
                other => CryptError::Corrupted {
                    path: src.to_path_buf(),
                    why: other.to_string(),
                },
            })?;
        let stream = decryptor
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => CryptError::WrongKey {
                    path: src.to_path_buf(),
                    key: key_file.to_path_buf(),
                },
                other => CryptError::Corrupted {
                    path: src.to_path_buf(),
                    why: other.to_string(),
                },
            })?;
        Box::new(stream)
    } else {
        Box::new(BufReader::new(input))
    };
    let dir = dst.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or_else(|| Path::new("."));
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut out = fsutil::create_private_new(&tmp)?;
        let mut verifier = StreamVerifier::default();
        let mut buf = vec![0u8; PIECE];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if encrypted => {
                    return Err(CryptError::Corrupted {
                        path: src.to_path_buf(),
                        why: e.to_string(),
                    })
                }
                Err(e) => return Err(fs_err("read", src, e).into()),
            };
            verifier.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| fs_err("write", &tmp, fsutil::explain_full(e)))?;
        }
        verifier.finish().map_err(|source| CryptError::Integrity {
            path: src.to_path_buf(),
            source,
        })?;
        if dst.exists() {
            return Err(CryptError::DestinationExists {
                path: dst.to_path_buf(),
            });
        }
        fsutil::persist(out, &tmp, dst)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;
    use ring::digest::{digest, SHA256};

    fn snapshot_bytes(len: usize) -> Vec<u8> {
        let mut v: Vec<u8> = (0..len).map(|i| (i * 31 % 253) as u8).collect();
        let hash = digest(&SHA256, &v);
        v.extend_from_slice(hash.as_ref());
        v
    }

    fn key_file(dir: &Path, name: &str) -> (PathBuf, Identity) {
        let identity = Identity::generate();
        let path = dir.join(name);
        let text = format!(
            "# created: test\n# public key: {}\n{}\n",
            identity.to_public(),
            identity.to_string().expose_secret()
        );
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        (path, identity)
    }

    fn encrypt(plain: &[u8], to: &Identity, piece: usize) -> Vec<u8> {
        let mut enc = Encrypting::new(&to.to_public()).unwrap();
        let mut out = Vec::new();
        for p in plain.chunks(piece) {
            out.extend(enc.update(p).unwrap());
        }
        out.extend(enc.finish().unwrap());
        out
    }

    #[test]
    fn round_trip_through_an_encrypted_file() {
        let dir = tempfile::tempdir().unwrap();
        let (key, identity) = key_file(dir.path(), "key.txt");
        let plain = snapshot_bytes(300_000);
        let sealed = encrypt(&plain, &identity, 7_000);
        assert!(sealed.starts_with(AGE_MAGIC));
        assert!(!sealed.windows(64).any(|w| w == &plain[1000..1064]));
        let src = dir.path().join("s.db.age");
        std::fs::write(&src, &sealed).unwrap();
        assert!(is_encrypted(&src).unwrap());
        let dst = dir.path().join("s.db");
        decrypt_to(&src, &dst, Some(&key)).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), plain);
        let mode = std::fs::metadata(&dst).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Never replaces what exists.
        assert!(matches!(
            decrypt_to(&src, &dst, Some(&key)),
            Err(CryptError::DestinationExists { .. })
        ));
    }

    #[test]
    fn a_plain_snapshot_is_copied_and_checked_without_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let plain = snapshot_bytes(1000);
        let src = dir.path().join("p.db");
        std::fs::write(&src, &plain).unwrap();
        assert!(!is_encrypted(&src).unwrap());
        let dst = dir.path().join("out.db");
        decrypt_to(&src, &dst, None).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), plain);
        let tiny = dir.path().join("tiny");
        std::fs::write(&tiny, b"age").unwrap();
        assert!(!is_encrypted(&tiny).unwrap());
    }

    #[test]
    fn encrypted_without_a_key_names_both_ways_to_give_one() {
        let dir = tempfile::tempdir().unwrap();
        let (_, identity) = key_file(dir.path(), "key.txt");
        let src = dir.path().join("s.db.age");
        std::fs::write(&src, encrypt(&snapshot_bytes(100), &identity, 50)).unwrap();
        let dst = dir.path().join("s.db");
        let err = decrypt_to(&src, &dst, None).unwrap_err();
        assert!(matches!(err, CryptError::NoKey { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("snapshot.encryption_key_file") && text.contains("it was encrypted with"),
            "{text}"
        );
        assert!(!dst.exists());
    }

    #[test]
    fn the_wrong_key_is_named_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (_, right) = key_file(dir.path(), "right.txt");
        let (wrong, _) = key_file(dir.path(), "wrong.txt");
        let src = dir.path().join("s.db.age");
        std::fs::write(&src, encrypt(&snapshot_bytes(100), &right, 50)).unwrap();
        let dst = dir.path().join("s.db");
        let err = decrypt_to(&src, &dst, Some(&wrong)).unwrap_err();
        assert!(matches!(err, CryptError::WrongKey { .. }), "{err}");
        assert!(err.to_string().contains("wrong.txt"), "{err}");
        assert!(!dst.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    #[test]
    fn truncated_or_corrupted_ciphertext_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (key, identity) = key_file(dir.path(), "key.txt");
        let sealed = encrypt(&snapshot_bytes(200_000), &identity, 4096);
        let dst = dir.path().join("s.db");
        let cut = dir.path().join("cut.db.age");
        std::fs::write(&cut, &sealed[..sealed.len() - 100]).unwrap();
        let err = decrypt_to(&cut, &dst, Some(&key)).unwrap_err();
        assert!(matches!(err, CryptError::Corrupted { .. }), "{err}");
        let chunk_cut = dir.path().join("chunk.db.age");
        // Cut exactly after the first full chunk: age notices the last chunk is missing.
        std::fs::write(&chunk_cut, &sealed[..sealed.len() / 2]).unwrap();
        let err = decrypt_to(&chunk_cut, &dst, Some(&key)).unwrap_err();
        assert!(matches!(err, CryptError::Corrupted { .. }), "{err}");
        let mut flipped = sealed.clone();
        let at = flipped.len() - 5000;
        flipped[at] ^= 1;
        let bad = dir.path().join("bad.db.age");
        std::fs::write(&bad, &flipped).unwrap();
        let err = decrypt_to(&bad, &dst, Some(&key)).unwrap_err();
        assert!(matches!(err, CryptError::Corrupted { .. }), "{err}");
        assert!(err.to_string().contains("truncated or corrupted"), "{err}");
        assert!(!dst.exists());
    }

    #[test]
    fn a_plaintext_that_fails_etcds_hash_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (key, identity) = key_file(dir.path(), "key.txt");
        let mut plain = snapshot_bytes(5000);
        plain[10] ^= 1;
        let src = dir.path().join("s.db.age");
        std::fs::write(&src, encrypt(&plain, &identity, 999)).unwrap();
        let dst = dir.path().join("s.db");
        let err = decrypt_to(&src, &dst, Some(&key)).unwrap_err();
        assert!(matches!(err, CryptError::Integrity { .. }), "{err}");
        assert!(!dst.exists());
    }

    #[test]
    fn key_files_readable_by_others_or_not_age_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = key_file(dir.path(), "key.txt");
        assert!(load_identity(&key).is_ok());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = load_identity(&key).err().unwrap();
        assert!(
            matches!(err, CryptError::KeyExposed { mode: 0o640, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
        let junk = dir.path().join("junk.txt");
        std::fs::write(&junk, "not a key\n").unwrap();
        std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = load_identity(&junk).err().unwrap();
        assert!(matches!(err, CryptError::KeyInvalid { .. }), "{err}");
        assert!(err.to_string().contains("age-keygen"), "{err}");
        let err = load_identity(&dir.path().join("missing")).err().unwrap();
        assert!(matches!(err, CryptError::KeyUnreadable { .. }), "{err}");
    }
}
