//! The input history file, shared by every instance that shares
//! `$XDG_STATE_HOME`: each line is appended as it is entered, under a lock,
//! so nothing is lost when two instances run at once or one is killed.
//!
//! One entry per line. A pasted entry's line breaks are written `\n` and a
//! backslash `\\`. The file is compacted to the newest [`HISTORY_LIMIT`]
//! entries when it has grown past twice that, by whoever appends then:
//! under the lock it is rewritten to a temporary file and renamed over the
//! old one. The lock is a separate file (`history.lock`, `flock(2)`), so a
//! rename never strands a writer on the old file.

use crate::term::editor::HISTORY_LIMIT;
use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Where the input history is kept: `$XDG_STATE_HOME/p2pchat/history`, or
/// `$HOME/.local/state/p2pchat/history` when `XDG_STATE_HOME` is unset or
/// not absolute. `None` without a usable `HOME`.
pub fn path() -> Option<PathBuf> {
    path_in(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
}

fn path_in(state: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    state_dir_in(state, home).map(|d| d.join("history"))
}

/// `$XDG_STATE_HOME/p2pchat` (or `$HOME/.local/state/p2pchat`).
pub fn state_dir() -> Option<PathBuf> {
    state_dir_in(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
}

fn state_dir_in(state: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let absolute = |dir: Option<OsString>| dir.map(PathBuf::from).filter(|p| p.is_absolute());
    match (absolute(state), absolute(home)) {
        (Some(state), _) => Some(state.join("p2pchat")),
        (None, Some(home)) => Some(home.join(".local/state/p2pchat")),
        (None, None) => None,
    }
}

/// Creates `dir` and its parents, mode 0700.
pub fn make_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

fn escape(entry: &str) -> String {
    entry.replace('\\', "\\\\").replace('\n', "\\n")
}

fn unescape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            // Not an escape (a file from before escapes): as it was.
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Reads a history file, keeping the newest [`HISTORY_LIMIT`] non-blank
/// entries. A missing or unreadable file is an empty history.
pub fn load(path: &Path) -> Vec<String> {
    let Ok(bytes) = fs::read(path) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(unescape)
        .collect();
    let excess = lines.len().saturating_sub(HISTORY_LIMIT);
    lines.drain(..excess);
    lines
}

/// Holds `flock(LOCK_EX)` on the lock file beside `path` while alive.
/// An exclusive lock on `PATH.lock`, held until dropped: one writer of a
/// file shared by several instances at a time.
pub struct Lock(File);

impl Lock {
    /// Takes the lock for `path`, waiting for whoever holds it.
    ///
    /// # Errors
    ///
    /// Creating or locking the lock file.
    pub fn take(path: &Path) -> io::Result<Lock> {
        let mut name = path.file_name().unwrap_or_default().to_owned();
        name.push(".lock");
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path.with_file_name(name))?;
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Lock(f));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: as above; closing the file would unlock too.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Appends one entry to the history file (creating it, mode 0600, and its
/// directory, mode 0700), then compacts the file if it has grown past
/// twice [`HISTORY_LIMIT`] entries.
///
/// # Errors
///
/// Creating the directory, locking, writing.
pub fn append(path: &Path, entry: &str) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        make_dir(dir)?;
    }
    let _lock = Lock::take(path)?;
    crate::store::append(path, format!("{}\n", escape(entry)).as_bytes())?;
    let entries = fs::read(path).map(|b| b.iter().filter(|&&c| c == b'\n').count())?;
    if entries > 2 * HISTORY_LIMIT {
        compact(path)?;
    }
    Ok(())
}

/// Rewrites the file with its newest [`HISTORY_LIMIT`] entries: a
/// temporary file, then a rename ([`crate::store::replace`]). The caller
/// holds the lock.
fn compact(path: &Path) -> io::Result<()> {
    let mut text = String::new();
    for e in &load(path) {
        text.push_str(&escape(e));
        text.push('\n');
    }
    crate::store::replace(path, &[text.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("p2pchat-history-{tag}-{}", std::process::id()))
    }

    #[test]
    fn appends_round_trip_and_stay_bounded() {
        let dir = temp("round");
        let path = dir.join("state/p2pchat/history");
        assert_eq!(load(&path), Vec::<String>::new());
        for i in 0..2 * HISTORY_LIMIT + 1 {
            append(&path, &format!("line {i} ü")).expect("append");
        }
        let loaded = load(&path);
        assert_eq!(loaded.len(), HISTORY_LIMIT);
        assert_eq!(loaded[0], format!("line {} ü", HISTORY_LIMIT + 1));
        let lines = fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, HISTORY_LIMIT, "compacted");
        append(&path, "two\nlines \\o/ \\n").expect("append");
        assert_eq!(
            load(&path).last().map(String::as_str),
            Some("two\nlines \\o/ \\n")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("dir")), 0o700);
        // No temporary file is left behind: the history and its lock.
        let files = fs::read_dir(path.parent().expect("dir")).unwrap().count();
        assert_eq!(files, 2);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn writers_at_once_lose_nothing() {
        let dir = temp("race");
        let path = dir.join("history");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for i in 0..300 {
                        append(&path, &format!("t{t} {i}")).expect("append");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let all = load(&path);
        // 1200 appended, compacted to the newest 1000 at most once past 2000:
        // never here, so every line is there.
        assert_eq!(all.len(), HISTORY_LIMIT.min(1200));
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1200);
        for t in 0..4 {
            assert!(text.contains(&format!("t{t} 299\n")));
        }
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn old_files_without_escapes_load_as_they_were() {
        assert_eq!(unescape(r"C:\temp \o/"), r"C:\temp \o/");
        assert_eq!(unescape(r"a\nb\\n"), "a\nb\\n");
        assert_eq!(unescape(&escape("x\\n\ny\\")), "x\\n\ny\\");
    }

    #[test]
    fn path_follows_xdg() {
        let os = |s: &str| Some(OsString::from(s));
        let path = |s: &str| Some(PathBuf::from(s));
        assert_eq!(
            path_in(os("/state"), os("/home/u")),
            path("/state/p2pchat/history")
        );
        let fallback = path("/home/u/.local/state/p2pchat/history");
        assert_eq!(path_in(os("relative"), os("/home/u")), fallback);
        assert_eq!(path_in(None, os("/home/u")), fallback);
        assert_eq!(path_in(os(""), os("")), None);
        assert_eq!(path_in(None, None), None);
    }
}
