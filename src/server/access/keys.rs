//! Reading secrets at start: the token signing keys (`[[auth.keys]]`) and the API's
//! bearer token (`http.api_token_file`). A secret file readable by every user is
//! refused; trailing whitespace (the newline of `echo` or an editor) is not part of a
//! secret. Secrets never reach a log line or an error message.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use proto::auth::Keyring;

use crate::server::config::{AuthConfig, KeyConfig};

/// A secret shorter than this is refused (the signing keys' own floor, in `proto::auth`).
pub const MIN_SECRET_BYTES: usize = 16;

/// A secret file larger than this is not a secret (a mistaken path).
const MAX_SECRET_BYTES: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the secret file {} for {what}: {source}", path.display())]
    Read {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the secret file {} for {what} is readable by every user (mode {mode:o}); \
         run `chmod 600 {}` (and chown it to the service user)",
        path.display(),
        path.display()
    )]
    WorldReadable {
        what: String,
        path: PathBuf,
        mode: u32,
    },
    #[error("the environment variable {var} for {what} is not set")]
    MissingEnv { what: String, var: String },
    #[error(
        "the secret for {what} is {len} bytes; use at least {MIN_SECRET_BYTES} \
         (e.g. `openssl rand -hex 32`)"
    )]
    TooShort { what: String, len: usize },
    #[error("the secret file {} for {what} is larger than {MAX_SECRET_BYTES} bytes", path.display())]
    TooLarge { what: String, path: PathBuf },
    #[error("signing key '{id}': {source}")]
    Key {
        id: String,
        #[source]
        source: proto::auth::KeyError,
    },
}

/// Read a secret file: not world-readable, at most 4 KiB, trailing whitespace removed,
/// at least [`MIN_SECRET_BYTES`].
pub fn read_secret_file(path: &Path, what: &str) -> Result<Vec<u8>, SecretError> {
    let read = |source| SecretError::Read {
        what: what.to_owned(),
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o004 != 0 {
        return Err(SecretError::WorldReadable {
            what: what.to_owned(),
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() > MAX_SECRET_BYTES {
        return Err(SecretError::TooLarge {
            what: what.to_owned(),
            path: path.to_owned(),
        });
    }
    let bytes = std::fs::read(path).map_err(read)?;
    trimmed(bytes, what)
}

fn trimmed(mut bytes: Vec<u8>, what: &str) -> Result<Vec<u8>, SecretError> {
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(SecretError::TooShort {
            what: what.to_owned(),
            len: bytes.len(),
        });
    }
    Ok(bytes)
}

fn read_key(k: &KeyConfig) -> Result<Vec<u8>, SecretError> {
    let what = format!("signing key '{}'", k.id);
    match (&k.secret_file, &k.secret_env) {
        (Some(path), _) => read_secret_file(path, &what),
        (None, Some(var)) => match std::env::var_os(var) {
            Some(v) => trimmed(std::os::unix::ffi::OsStringExt::into_vec(v), &what),
            None => Err(SecretError::MissingEnv {
                what,
                var: var.clone(),
            }),
        },
        // Refused by config validation.
        (None, None) => Err(SecretError::MissingEnv {
            what,
            var: String::new(),
        }),
    }
}

/// The keyring of `[[auth.keys]]`, in config order (the first signs by default).
pub fn load_keyring(auth: &AuthConfig) -> Result<Keyring, SecretError> {
    let mut keys = Keyring::new();
    for k in &auth.keys {
        let secret = read_key(k)?;
        keys.insert(&k.id, &secret)
            .map_err(|source| SecretError::Key {
                id: k.id.clone(),
                source,
            })?;
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("shardcast-keys-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn secret_files_must_be_private_and_long_enough() {
        let dir = scratch("files");
        let good = write(&dir, "good", "0123456789abcdef0123\n", 0o600);
        assert_eq!(
            read_secret_file(&good, "k").unwrap(),
            b"0123456789abcdef0123"
        );
        let open = write(&dir, "open", "0123456789abcdef0123\n", 0o644);
        let e = read_secret_file(&open, "k").unwrap_err().to_string();
        assert!(
            e.contains("readable by every user") && e.contains("chmod 600"),
            "{e}"
        );
        let short = write(&dir, "short", "abc\n", 0o600);
        assert!(matches!(
            read_secret_file(&short, "k"),
            Err(SecretError::TooShort { len: 3, .. })
        ));
        // The message never carries the secret.
        let e = read_secret_file(&short, "k").unwrap_err().to_string();
        assert!(!e.contains("abc"), "{e}");
        assert!(read_secret_file(&dir.join("none"), "k").is_err());
    }

    #[test]
    fn keyring_from_files_and_env() {
        let dir = scratch("ring");
        let f = write(&dir, "k1", "k1-secret-0123456789\n", 0o600);
        std::env::set_var("SHARDCAST_TEST_K0", "k0-secret-0123456789");
        let auth = AuthConfig {
            keys: vec![
                KeyConfig {
                    id: "k1".into(),
                    secret_file: Some(f),
                    secret_env: None,
                },
                KeyConfig {
                    id: "k0".into(),
                    secret_file: None,
                    secret_env: Some("SHARDCAST_TEST_K0".into()),
                },
            ],
            ..AuthConfig::default()
        };
        let ring = load_keyring(&auth).unwrap();
        assert_eq!(ring.ids().collect::<Vec<_>>(), ["k1", "k0"]);
        let missing = AuthConfig {
            keys: vec![KeyConfig {
                id: "kx".into(),
                secret_file: None,
                secret_env: Some("SHARDCAST_TEST_UNSET_VAR".into()),
            }],
            ..AuthConfig::default()
        };
        assert!(matches!(
            load_keyring(&missing),
            Err(SecretError::MissingEnv { .. })
        ));
    }
}
