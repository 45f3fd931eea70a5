//! The user's identity, the names it has met, and the network secret: the
//! files behind them, read and written here at the edge (the node never
//! touches a file).
//!
//! - The identity is an Ed25519 secret key in
//!   `$XDG_CONFIG_HOME/p2pchat/identity` (or `--identity FILE`), created on
//!   first run with mode 0600, and refused if others can read it, as ssh
//!   refuses an open private key. The file is one line:
//!   `p2pchat-identity-v1 HEX` (the 32-byte key).
//! - `$XDG_STATE_HOME/p2pchat/known_peers` remembers the key each name had
//!   when first seen, one `NAME HEX` line each: a name seen again with
//!   another key is refused until the user trusts it (`:trust NAME`, or
//!   removing the line).
//! - The network secret comes from `P2PCHAT_SECRET` or a file
//!   (`--secret-file`), never from the command line, where other users
//!   could read it in `ps`.

use crate::proto::crypto::PublicKey;
use crate::store;
use crate::term::history::{self, Lock};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const MAGIC: &str = "p2pchat-identity-v1";
/// Longest secret read from a file or the environment.
const MAX_SECRET: usize = 4096;
/// Lines of known_peers read, at most.
const MAX_KNOWN: usize = 100_000;

/// The default identity file: `$XDG_CONFIG_HOME/p2pchat/identity`, or
/// `$HOME/.config/p2pchat/identity`.
pub fn default_path() -> Option<PathBuf> {
    crate::cli::config_path().map(|p| p.with_file_name("identity"))
}

/// Reads the secret key at `path`, creating it (and its directory, mode
/// 0700) when there is none.
///
/// # Errors
///
/// One line for the user: the file is readable by others, is not an
/// identity, or cannot be read or made.
pub fn load_or_create(path: &Path) -> Result<[u8; 32], String> {
    let shown = path.display();
    match fs::File::open(path) {
        Ok(f) => {
            owner_only(&f, "identity", &shown)?;
            let mut text = String::new();
            f.take(256)
                .read_to_string(&mut text)
                .map_err(|e| format!("identity {shown}: {e}"))?;
            parse(&text).ok_or_else(|| format!("identity {shown}: not a p2pchat identity file"))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => create(path),
        Err(e) => Err(format!("identity {shown}: {e}")),
    }
}

fn parse(text: &str) -> Option<[u8; 32]> {
    let hex = text.trim().strip_prefix(MAGIC)?.trim();
    let bytes = unhex(hex)?;
    bytes.try_into().ok()
}

fn create(path: &Path) -> Result<[u8; 32], String> {
    let shown = path.display();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        history::make_dir(dir).map_err(|e| format!("identity {}: {e}", dir.display()))?;
    }
    let mut seed = [0u8; 32];
    random(&mut seed).map_err(|e| format!("identity: no randomness: {e}"))?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("identity {shown}: {e}"))?;
    f.write_all(format!("{MAGIC} {}\n", hex(&seed)).as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("identity {shown}: {e}"))?;
    Ok(seed)
}

/// Fills `buf` from the kernel's random source.
pub fn random(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: getrandom writes at most rest.len() bytes into rest.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// Where the names met are remembered: `$XDG_STATE_HOME/p2pchat/known_peers`.
pub fn known_path() -> Option<PathBuf> {
    history::state_dir().map(|d| d.join("known_peers"))
}

/// The names and keys remembered at `path`; a missing file is none.
/// Lines that are not `NAME HEX` are passed over.
pub fn load_known(path: &Path) -> Vec<(String, PublicKey)> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .take(MAX_KNOWN)
        .filter_map(|l| {
            let (name, key) = l.trim().split_once(' ')?;
            let key: PublicKey = unhex(key.trim())?.try_into().ok()?;
            Some((name.to_owned(), key))
        })
        .collect()
}

/// Remembers that `name` has `key`: appended, or (`replace`) in place of
/// the key it had. Safe with several instances at once (a lock, and a
/// rename for a rewrite).
///
/// # Errors
///
/// Creating the directory, locking, writing.
pub fn remember(path: &Path, name: &str, key: &PublicKey, replace: bool) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        history::make_dir(dir)?;
    }
    let _lock = Lock::take(path)?;
    let line = format!("{name} {}\n", hex(key));
    if !replace {
        return store::append(path, line.as_bytes());
    }
    let mut text: String = load_known(path)
        .into_iter()
        .filter(|(n, _)| n != name)
        .map(|(n, k)| format!("{n} {}\n", hex(&k)))
        .collect();
    text.push_str(&line);
    store::replace(path, &[text.as_bytes()])
}

/// The network secret: `P2PCHAT_SECRET`, or the contents of `file` (a
/// final newline is not part of it). `None`: no secret.
///
/// # Errors
///
/// An empty or overlong secret, a file others can read, or one that
/// cannot be read.
pub fn secret(
    env: Option<std::ffi::OsString>,
    file: Option<&Path>,
) -> Result<Option<Vec<u8>>, String> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = match (env, file) {
        (Some(_), Some(_)) => {
            return Err("both P2PCHAT_SECRET and --secret-file: give the secret once".into());
        }
        (Some(v), None) => v.as_bytes().to_vec(),
        (None, Some(path)) => {
            let shown = path.display();
            let f = fs::File::open(path).map_err(|e| format!("secret file {shown}: {e}"))?;
            owner_only(&f, "secret file", &shown)?;
            let mut b = Vec::new();
            f.take(MAX_SECRET as u64 + 2)
                .read_to_end(&mut b)
                .map_err(|e| format!("secret file {shown}: {e}"))?;
            while b.last().is_some_and(|&c| c == b'\n' || c == b'\r') {
                b.pop();
            }
            b
        }
        (None, None) => return Ok(None),
    };
    if bytes.is_empty() {
        return Err("the network secret is empty".into());
    }
    if bytes.len() > MAX_SECRET {
        return Err(format!(
            "the network secret is longer than {MAX_SECRET} bytes"
        ));
    }
    Ok(Some(bytes))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Refuses a file others can read (`what` and `shown` name it), as ssh
/// refuses a private key with loose permissions.
fn owner_only(f: &fs::File, what: &str, shown: &impl std::fmt::Display) -> Result<(), String> {
    let mode = f
        .metadata()
        .map_err(|e| format!("{shown}: {e}"))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{what} {shown} is readable by others (mode {:o}): chmod 600 {shown}",
            mode & 0o777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("p2pchat-ident-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_key_is_made_once_kept_private_and_read_back() {
        let d = temp("key");
        let p = d.join("cfg/p2pchat/identity");
        let a = load_or_create(&p).unwrap();
        assert_eq!(load_or_create(&p).unwrap(), a);
        let mode = fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(&p).unwrap_err();
        assert!(
            e.contains("readable by others") && e.contains("chmod 600"),
            "{e}"
        );
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&p, "garbage").unwrap();
        assert!(
            load_or_create(&p)
                .unwrap_err()
                .contains("not a p2pchat identity")
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn known_names_append_and_replace() {
        let d = temp("known");
        let p = d.join("state/known_peers");
        assert!(load_known(&p).is_empty());
        remember(&p, "alice", &[1; 32], false).unwrap();
        remember(&p, "bob", &[2; 32], false).unwrap();
        remember(&p, "alice", &[3; 32], true).unwrap();
        let mut got = load_known(&p);
        got.sort();
        assert_eq!(
            got,
            vec![("alice".into(), [3; 32]), ("bob".into(), [2; 32])]
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn secrets_come_from_one_place_and_stay_private() {
        let d = temp("secret");
        fs::create_dir_all(&d).unwrap();
        let f = d.join("s");
        fs::write(&f, "hunter2\n").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(secret(None, Some(&f)).unwrap(), Some(b"hunter2".to_vec()));
        assert_eq!(secret(Some("x".into()), None).unwrap(), Some(b"x".to_vec()));
        assert!(secret(Some("x".into()), Some(&f)).is_err());
        assert_eq!(secret(None, None).unwrap(), None);
        fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(
            secret(None, Some(&f))
                .unwrap_err()
                .contains("readable by others")
        );
        assert!(secret(Some("".into()), None).is_err());
        let _ = fs::remove_dir_all(&d);
    }
}
