//! The private message store: what a peer holds for absent members, and
//! its own undelivered private messages, kept across its restarts in
//! `$XDG_STATE_HOME/p2pchat/private-HEX` (HEX: the user name's bytes in
//! hexadecimal, so that each name of a user has its own). Read at start
//! and written here at the edge; the node only gives and takes bytes
//! (see [`crate::app::dm`]).
//!
//! The event loop writes it after a change at most once a second (a sync
//! to disk blocks the loop for milliseconds), and on leaving.
//!
//! The file is `wall:u64` (milliseconds since 1970 when written: the time
//! away ages every copy) and the node's bytes. It is written whole to a
//! temporary file, synced, and renamed over the old one, so a crash at
//! any moment leaves the old file or the new one, never a mix. A file
//! that cannot be read back is renamed to `private-HEX.corrupt` and
//! reported; nothing else happens.

use crate::term::history;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Largest store read: the bounds on what is held and sent (see LIMITS)
/// keep it far below.
const MAX_STORE: u64 = 32 << 20;

/// The store of user `name`.
pub fn path(name: &str) -> Option<PathBuf> {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    history::state_dir().map(|d| d.join(format!("private-{hex}")))
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The store at `path`, and how long ago it was written; `Ok(None)` if
/// there is none.
///
/// # Errors
///
/// The file cannot be read, or is too short or too long to be a store.
pub fn read(path: &Path) -> Result<Option<(Vec<u8>, u64)>, String> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut bytes = Vec::new();
    f.take(MAX_STORE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_STORE {
        return Err("too large".into());
    }
    if bytes.len() < 8 {
        return Err("truncated".into());
    }
    let wall = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
    Ok(Some((bytes[8..].to_vec(), wall_ms().saturating_sub(wall))))
}

/// Sets a store that cannot be read aside; returns where it went.
pub fn set_aside(path: &Path) -> io::Result<PathBuf> {
    let to = path.with_file_name(format!(
        "{}.corrupt",
        path.file_name()
            .map_or("private".into(), |n| n.to_string_lossy())
    ));
    fs::rename(path, &to)?;
    Ok(to)
}

/// Replaces the store at `path` with `bytes`, safely (see the module
/// documentation).
///
/// # Errors
///
/// Making the directory, writing, syncing or renaming.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    history::make_dir(dir)?;
    replace(path, &[&wall_ms().to_be_bytes(), bytes])
}

/// Replaces the file at `path` with `parts`, one after another, so that
/// a crash leaves the old file or the new one, never a mix: written to a
/// temporary file beside it (0600), synced, renamed over it, and the
/// directory synced so that the rename outlives a crash too.
///
/// # Errors
///
/// Writing, syncing or renaming.
pub fn replace(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let r = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        for part in parts {
            f.write_all(part)?;
        }
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

/// Appends `bytes` to the file at `path`, made (0600) if there is none.
///
/// # Errors
///
/// Opening or writing.
pub fn append(path: &Path, bytes: &[u8]) -> io::Result<()> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_is_read_back_and_corrupt_is_set_aside() {
        let dir = std::env::temp_dir().join(format!("p2pchat-store-{}", std::process::id()));
        let p = dir.join("private-616c696365");
        assert_eq!(read(&p), Ok(None));
        write(&p, b"hello").unwrap();
        let (b, ago) = read(&p).unwrap().unwrap();
        assert_eq!(b, b"hello");
        assert!(ago < 60_000);
        write(&p, b"again").unwrap();
        assert_eq!(read(&p).unwrap().unwrap().0, b"again");
        fs::write(&p, b"1234").unwrap();
        assert!(read(&p).is_err());
        let aside = set_aside(&p).unwrap();
        assert!(aside.ends_with("private-616c696365.corrupt"));
        assert_eq!(read(&p), Ok(None));
        fs::remove_dir_all(&dir).unwrap();
    }
}
