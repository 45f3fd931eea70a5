//! The input line, without I/O: terminal bytes to keys, keys to edits.
//!
//! `KeyParser` turns raw terminal bytes into `Key`s and keeps its state
//! across reads, so an escape sequence or a UTF-8 character may arrive split
//! anywhere. `Editor` holds the line, the cursor and the history, applies
//! keys with readline/linenoise semantics and says what the caller should do
//! next (`Outcome`). `render` cuts the window of the line that fits the
//! terminal. Display widths (`char_width`), the sanitising of untrusted text
//! for the terminal (`escape_controls`) and the history file live here too.
//!
//! Nothing here touches the terminal; `tty` does the drawing.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Most history entries kept, in memory and in the history file.
pub const HISTORY_LIMIT: usize = 1000;
/// Longest input line, in chars: typing past it rings the bell.
pub const MAX_LINE: usize = 4096;
/// Largest bracketed paste kept, in bytes: the rest is dropped.
pub const MAX_PASTE: usize = 64 * 1024;

const REPLACEMENT: char = '\u{fffd}';
const PASTE_END: &[u8] = b"\x1b[201~";
const MAX_CSI: usize = 16;

/// One key press (or one bracketed paste) decoded from the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// A printable character.
    Char(char),
    /// CR or LF (CR LF counts once).
    Enter,
    /// DEL (0x7f) or Ctrl-H (0x08).
    Backspace,
    /// `ESC [ 3 ~`.
    Delete,
    /// Left arrow.
    Left,
    /// Right arrow.
    Right,
    /// Home (`ESC [ H`, `ESC O H`, `ESC [ 1 ~`, `ESC [ 7 ~`).
    Home,
    /// End (`ESC [ F`, `ESC O F`, `ESC [ 4 ~`, `ESC [ 8 ~`).
    End,
    /// Up arrow.
    Up,
    /// Down arrow.
    Down,
    /// Alt-b or Ctrl/Alt-Left.
    WordLeft,
    /// Alt-f or Ctrl/Alt-Right.
    WordRight,
    /// Ctrl-A.
    CtrlA,
    /// Ctrl-B.
    CtrlB,
    /// Ctrl-C (0x03 arrives as a key because raw mode turns ISIG off).
    CtrlC,
    /// Ctrl-D.
    CtrlD,
    /// Ctrl-E.
    CtrlE,
    /// Ctrl-F.
    CtrlF,
    /// Ctrl-K.
    CtrlK,
    /// Ctrl-L.
    CtrlL,
    /// Ctrl-N.
    CtrlN,
    /// Ctrl-P.
    CtrlP,
    /// Ctrl-U.
    CtrlU,
    /// Ctrl-W.
    CtrlW,
    /// Ctrl-Z (0x1a arrives as a key because raw mode turns ISIG off).
    CtrlZ,
    /// Tab; ignored by the editor (reserved for completion).
    Tab,
    /// A bracketed paste (`ESC [200~ ... ESC [201~`), line ends as `\n`.
    Paste(String),
    /// Anything else: other control bytes, Alt-keys, unknown sequences,
    /// a lone Escape.
    Unknown,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Ground,
    Esc,
    Csi,
    Ss3,
    Paste,
}

/// Decodes terminal input bytes into keys, across any split of the input.
///
/// A lone ESC cannot be told from the start of a sequence until more bytes
/// come; while `has_pending` is true the caller should wait a short time
/// (~50 ms) for more input and then call `flush_pending`.
#[derive(Debug, Default)]
pub struct KeyParser {
    state: State,
    utf8: [u8; 4],
    utf8_len: usize,
    utf8_need: usize,
    csi: Vec<u8>,
    csi_overflow: bool,
    paste: Vec<u8>,
    paste_match: usize,
    after_cr: bool,
}

impl KeyParser {
    /// A parser with nothing pending.
    pub fn new() -> KeyParser {
        KeyParser::default()
    }

    /// Decodes `bytes`, appending complete keys to `out`; an incomplete
    /// sequence or character stays pending for the next call.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Key>) {
        for &b in bytes {
            self.byte(b, out);
        }
    }

    /// Whether an escape sequence or a paste has begun and not ended. Only
    /// then is a timeout worth having: a partial UTF-8 character is always
    /// completed or broken off by the next byte.
    pub fn has_pending(&self) -> bool {
        self.state != State::Ground
    }

    /// Gives up waiting: a partial escape sequence becomes `Key::Unknown`,
    /// a partial UTF-8 character U+FFFD, an unterminated paste what it
    /// holds so far.
    pub fn flush_pending(&mut self, out: &mut Vec<Key>) {
        match std::mem::take(&mut self.state) {
            State::Ground => {}
            State::Esc | State::Csi | State::Ss3 => out.push(Key::Unknown),
            State::Paste => {
                self.paste_match = 0;
                out.push(self.take_paste());
            }
        }
        if self.utf8_need > 0 {
            self.utf8_need = 0;
            out.push(Key::Char(REPLACEMENT));
        }
    }

    fn byte(&mut self, b: u8, out: &mut Vec<Key>) {
        match self.state {
            State::Ground => self.ground(b, out),
            State::Esc => {
                self.state = State::Ground;
                match b {
                    b'[' => {
                        self.state = State::Csi;
                        self.csi.clear();
                        self.csi_overflow = false;
                    }
                    b'O' => self.state = State::Ss3,
                    b'b' => out.push(Key::WordLeft),
                    b'f' => out.push(Key::WordRight),
                    0x1b => {
                        out.push(Key::Unknown);
                        self.state = State::Esc;
                    }
                    // Alt plus a key we do not bind: swallow both.
                    0x20..=0x7f => out.push(Key::Unknown),
                    _ => {
                        out.push(Key::Unknown);
                        self.ground(b, out);
                    }
                }
            }
            State::Csi => match b {
                0x20..=0x3f => {
                    if self.csi.len() < MAX_CSI {
                        self.csi.push(b);
                    } else {
                        self.csi_overflow = true;
                    }
                }
                0x40..=0x7e => {
                    self.state = State::Ground;
                    if self.csi_overflow {
                        out.push(Key::Unknown);
                    } else if b == b'~' && self.csi == b"200" {
                        self.state = State::Paste;
                        self.paste.clear();
                        self.paste_match = 0;
                    } else {
                        out.push(csi_key(&self.csi, b));
                    }
                }
                // Not part of a CSI sequence: drop the sequence, keep the byte.
                _ => {
                    self.state = State::Ground;
                    out.push(Key::Unknown);
                    self.ground(b, out);
                }
            },
            State::Ss3 => {
                self.state = State::Ground;
                match b {
                    b'A' => out.push(Key::Up),
                    b'B' => out.push(Key::Down),
                    b'C' => out.push(Key::Right),
                    b'D' => out.push(Key::Left),
                    b'H' => out.push(Key::Home),
                    b'F' => out.push(Key::End),
                    b'M' => out.push(Key::Enter),
                    0x20..=0x7e => out.push(Key::Unknown),
                    _ => {
                        out.push(Key::Unknown);
                        self.ground(b, out);
                    }
                }
            }
            State::Paste => self.paste_byte(b, out),
        }
    }

    fn ground(&mut self, b: u8, out: &mut Vec<Key>) {
        if self.utf8_need > 0 {
            if b & 0xc0 == 0x80 {
                self.utf8[self.utf8_len] = b;
                self.utf8_len += 1;
                if self.utf8_len == self.utf8_need {
                    self.utf8_need = 0;
                    let c = std::str::from_utf8(&self.utf8[..self.utf8_len])
                        .ok()
                        .and_then(|s| s.chars().next())
                        .unwrap_or(REPLACEMENT);
                    out.push(Key::Char(c));
                }
                return;
            }
            // A character cut short by a byte that cannot continue it.
            self.utf8_need = 0;
            out.push(Key::Char(REPLACEMENT));
        }
        let after_cr = std::mem::take(&mut self.after_cr);
        match b {
            b'\r' => {
                self.after_cr = true;
                out.push(Key::Enter);
            }
            b'\n' if after_cr => {}
            b'\n' => out.push(Key::Enter),
            0x1b => self.state = State::Esc,
            0x08 | 0x7f => out.push(Key::Backspace),
            b'\t' => out.push(Key::Tab),
            0x00..=0x1f => out.push(ctrl_key(b)),
            0x20..=0x7e => out.push(Key::Char(char::from(b))),
            0xc2..=0xdf => self.start_utf8(b, 2),
            0xe0..=0xef => self.start_utf8(b, 3),
            0xf0..=0xf4 => self.start_utf8(b, 4),
            _ => out.push(Key::Char(REPLACEMENT)),
        }
    }

    fn start_utf8(&mut self, b: u8, need: usize) {
        self.utf8[0] = b;
        self.utf8_len = 1;
        self.utf8_need = need;
    }

    fn paste_byte(&mut self, b: u8, out: &mut Vec<Key>) {
        // Bytes that might start the terminator are held back (counted by
        // paste_match) until it is complete or proven not to be one.
        if b == PASTE_END[self.paste_match] {
            self.paste_match += 1;
            if self.paste_match == PASTE_END.len() {
                self.state = State::Ground;
                self.paste_match = 0;
                out.push(self.take_paste());
            }
            return;
        }
        let held = std::mem::take(&mut self.paste_match);
        self.push_paste(&PASTE_END[..held]);
        if b == PASTE_END[0] {
            self.paste_match = 1;
        } else {
            self.push_paste(&[b]);
        }
    }

    fn push_paste(&mut self, bytes: &[u8]) {
        let room = MAX_PASTE - self.paste.len();
        self.paste
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn take_paste(&mut self) -> Key {
        let text = String::from_utf8_lossy(&self.paste)
            .replace("\r\n", "\n")
            .replace('\r', "\n");
        self.paste = Vec::new();
        Key::Paste(text)
    }
}

fn ctrl_key(b: u8) -> Key {
    match b {
        0x01 => Key::CtrlA,
        0x02 => Key::CtrlB,
        0x03 => Key::CtrlC,
        0x04 => Key::CtrlD,
        0x05 => Key::CtrlE,
        0x06 => Key::CtrlF,
        0x0b => Key::CtrlK,
        0x0c => Key::CtrlL,
        0x0e => Key::CtrlN,
        0x10 => Key::CtrlP,
        0x15 => Key::CtrlU,
        0x17 => Key::CtrlW,
        0x1a => Key::CtrlZ,
        _ => Key::Unknown,
    }
}

/// Maps a complete CSI sequence (`ESC [ params final`) to a key.
fn csi_key(params: &[u8], fin: u8) -> Key {
    let mut fields = params.split(|&b| b == b';');
    let first = fields.next().unwrap_or_default();
    // xterm modifiers: 3 = Alt, 5 = Ctrl (`ESC [ 1 ; 5 C` is Ctrl-Right).
    let word = matches!(fields.next(), Some(b"3" | b"5"));
    match fin {
        b'A' => Key::Up,
        b'B' => Key::Down,
        b'C' if word => Key::WordRight,
        b'C' => Key::Right,
        b'D' if word => Key::WordLeft,
        b'D' => Key::Left,
        b'H' => Key::Home,
        b'F' => Key::End,
        b'~' => match first {
            b"1" | b"7" => Key::Home,
            b"4" | b"8" => Key::End,
            b"3" => Key::Delete,
            _ => Key::Unknown,
        },
        _ => Key::Unknown,
    }
}

/// What the caller should do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing visible changed.
    None,
    /// The line or the cursor changed: redraw the input line.
    Redraw,
    /// Enter on a non-empty line: here is the line; the editor is empty now.
    Submit(String),
    /// Ctrl-C at any time, or Ctrl-D on an empty line.
    Quit,
    /// Ctrl-Z.
    Suspend,
    /// Ctrl-L.
    ClearScreen,
    /// The line is full (`MAX_LINE`): text was dropped.
    Bell,
}

/// The line being typed, its cursor and the input history.
///
/// Keys follow readline: Ctrl-U kills from the start of the line to the
/// cursor, Ctrl-K from the cursor to the end, Ctrl-W the whitespace-delimited
/// word before the cursor. Up/Down walk the history; the line being typed
/// is kept and comes back when Down walks past the newest entry. Edits to a
/// recalled entry are lost when walking away from it; the history itself is
/// never changed except by submitting.
#[derive(Debug, Default)]
pub struct Editor {
    buf: Vec<char>,
    pos: usize,
    history: Vec<String>,
    browse: Option<usize>,
    saved: Vec<char>,
}

impl Editor {
    /// An empty line with an empty history.
    pub fn new() -> Editor {
        Editor::default()
    }

    /// The current line.
    pub fn line(&self) -> String {
        self.buf.iter().collect()
    }

    /// The cursor, as a char index into `line()`.
    pub fn cursor(&self) -> usize {
        self.pos
    }

    /// The history, oldest first.
    pub fn history(&self) -> &[String] {
        &self.history
    }

    /// Replaces the history (e.g. with `load_history`), keeping the newest
    /// `HISTORY_LIMIT` entries, dropping blank ones and consecutive
    /// duplicates and removing control characters.
    pub fn set_history(&mut self, entries: Vec<String>) {
        self.history.clear();
        self.browse = None;
        for entry in entries {
            let clean: String = entry.chars().filter(|c| !c.is_control()).collect();
            self.add_history(clean);
        }
    }

    /// Applies one key. `Key::Paste` inserts its text with line ends turned
    /// into spaces; use `paste` to submit each pasted line instead.
    pub fn key(&mut self, key: Key) -> Outcome {
        match key {
            Key::Char(c) => self.insert(&[c]),
            Key::Paste(text) => {
                let flat: Vec<char> = text
                    .chars()
                    .map(|c| if c == '\n' { ' ' } else { c })
                    .collect();
                self.insert(&flat)
            }
            Key::Enter => self.submit(),
            Key::Backspace if self.pos > 0 => {
                self.pos -= 1;
                self.buf.remove(self.pos);
                Outcome::Redraw
            }
            Key::CtrlD if self.buf.is_empty() => Outcome::Quit,
            Key::Delete | Key::CtrlD if self.pos < self.buf.len() => {
                self.buf.remove(self.pos);
                Outcome::Redraw
            }
            Key::Left | Key::CtrlB => self.move_to(self.pos.saturating_sub(1)),
            Key::Right | Key::CtrlF => self.move_to((self.pos + 1).min(self.buf.len())),
            Key::Home | Key::CtrlA => self.move_to(0),
            Key::End | Key::CtrlE => self.move_to(self.buf.len()),
            Key::WordLeft => self.move_to(self.word_start()),
            Key::WordRight => self.move_to(self.word_end()),
            Key::CtrlU => self.kill(0, self.pos),
            Key::CtrlK => self.kill(self.pos, self.buf.len()),
            Key::CtrlW => self.kill(self.word_start(), self.pos),
            Key::Up | Key::CtrlP => self.history_prev(),
            Key::Down | Key::CtrlN => self.history_next(),
            Key::CtrlC => Outcome::Quit,
            Key::CtrlZ => Outcome::Suspend,
            Key::CtrlL => Outcome::ClearScreen,
            Key::Backspace | Key::Delete | Key::CtrlD | Key::Tab | Key::Unknown => Outcome::None,
        }
    }

    /// Inserts pasted text; each `\n` in it submits the line so far, as if
    /// typed. Tabs become spaces and other control characters are dropped.
    /// Returns the outcomes in order, without `Outcome::None`.
    pub fn paste(&mut self, text: &str) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        for (i, part) in text.split('\n').enumerate() {
            if i > 0 {
                outcomes.push(self.submit());
            }
            let chars: Vec<char> = part.chars().collect();
            outcomes.push(self.insert(&chars));
        }
        outcomes.retain(|o| *o != Outcome::None);
        outcomes
    }

    /// The part of the line to show after a prompt `prompt_cols` wide on a
    /// terminal `cols` wide, and the cursor's column relative to the end of
    /// the prompt. The window scrolls horizontally to keep the cursor (and
    /// the character under it) visible, never splits a wide character and
    /// leaves the last terminal column free so the terminal does not wrap.
    pub fn render(&self, prompt_cols: usize, cols: usize) -> (String, usize) {
        let avail = cols.saturating_sub(prompt_cols + 1);
        let width = |c: &char| char_width(*c);
        let under = self.buf.get(self.pos).map_or(0, width);
        let mut need = self.buf[..self.pos].iter().map(width).sum::<usize>() + under;
        let mut start = 0;
        while need > avail && start < self.pos {
            need -= width(&self.buf[start]);
            start += 1;
        }
        // Combining marks cut off from their base would join the prompt.
        while start > 0 && start < self.pos && width(&self.buf[start]) == 0 {
            start += 1;
        }
        let mut end = start;
        let mut used = 0;
        while let Some(c) = self.buf.get(end) {
            if used + width(c) > avail {
                break;
            }
            used += width(c);
            end += 1;
        }
        let col = self.buf[start..self.pos.min(end)].iter().map(width).sum();
        (self.buf[start..end].iter().collect(), col)
    }

    fn insert(&mut self, text: &[char]) -> Outcome {
        let mut outcome = Outcome::None;
        for &c in text {
            let c = if c == '\t' { ' ' } else { c };
            if c.is_control() {
                continue;
            }
            if self.buf.len() >= MAX_LINE {
                return Outcome::Bell;
            }
            self.buf.insert(self.pos, c);
            self.pos += 1;
            outcome = Outcome::Redraw;
        }
        outcome
    }

    fn submit(&mut self) -> Outcome {
        let line: String = self.buf.drain(..).collect();
        self.pos = 0;
        self.browse = None;
        self.saved.clear();
        if line.is_empty() {
            return Outcome::None;
        }
        self.add_history(line.clone());
        Outcome::Submit(line)
    }

    fn add_history(&mut self, line: String) {
        if line.trim().is_empty() || self.history.last() == Some(&line) {
            return;
        }
        self.history.push(line);
        if self.history.len() > HISTORY_LIMIT {
            let excess = self.history.len() - HISTORY_LIMIT;
            self.history.drain(..excess);
        }
    }

    fn move_to(&mut self, pos: usize) -> Outcome {
        if pos == self.pos {
            return Outcome::None;
        }
        self.pos = pos;
        Outcome::Redraw
    }

    fn kill(&mut self, from: usize, to: usize) -> Outcome {
        if from == to {
            return Outcome::None;
        }
        self.buf.drain(from..to);
        self.pos = from;
        Outcome::Redraw
    }

    fn word_start(&self) -> usize {
        let mut i = self.pos;
        while i > 0 && self.buf[i - 1].is_whitespace() {
            i -= 1;
        }
        while i > 0 && !self.buf[i - 1].is_whitespace() {
            i -= 1;
        }
        i
    }

    fn word_end(&self) -> usize {
        let mut i = self.pos;
        while i < self.buf.len() && self.buf[i].is_whitespace() {
            i += 1;
        }
        while i < self.buf.len() && !self.buf[i].is_whitespace() {
            i += 1;
        }
        i
    }

    fn history_prev(&mut self) -> Outcome {
        let index = match self.browse {
            None if self.history.is_empty() => return Outcome::None,
            None => {
                self.saved = self.buf.clone();
                self.history.len() - 1
            }
            Some(0) => return Outcome::None,
            Some(i) => i - 1,
        };
        self.browse = Some(index);
        self.buf = self.history[index].chars().collect();
        self.pos = self.buf.len();
        Outcome::Redraw
    }

    fn history_next(&mut self) -> Outcome {
        match self.browse {
            None => return Outcome::None,
            Some(i) if i + 1 < self.history.len() => {
                self.browse = Some(i + 1);
                self.buf = self.history[i + 1].chars().collect();
            }
            Some(_) => {
                self.browse = None;
                self.buf = std::mem::take(&mut self.saved);
            }
        }
        self.pos = self.buf.len();
        Outcome::Redraw
    }
}

/// Terminal columns `c` takes: 0 for control characters, combining marks
/// and other zero-width characters, 2 for East Asian wide and fullwidth
/// characters (emoji with emoji presentation among them), 1 otherwise, as
/// Unicode's East Asian Width tables say (the `unicode-width` crate, which
/// getopts already builds in).
pub fn char_width(c: char) -> usize {
    if c.is_control() {
        return 0;
    }
    unicode_width::UnicodeWidthChar::width(c).unwrap_or(0)
}

/// Terminal columns `s` takes (the sum of `char_width`).
pub fn str_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// Makes untrusted text safe to print on a terminal. C0 controls (tab and
/// newline included) and DEL are shown in caret notation (`ESC` as `^[`,
/// DEL as `^?`); C1 controls (U+0080–U+009F) and the bidirectional
/// embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069) as
/// `\u{9b}`-style escapes. Everything else is kept.
pub fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match u32::from(c) {
            u @ 0..=0x1f => {
                out.push('^');
                out.push(char::from(u as u8 + 0x40));
            }
            0x7f => out.push_str("^?"),
            u @ (0x80..=0x9f | 0x202a..=0x202e | 0x2066..=0x2069) => {
                let _ = write!(out, "\\u{{{u:x}}}");
            }
            _ => out.push(c),
        }
    }
    out
}

/// Where the input history is kept: `$XDG_STATE_HOME/p2pchat/history`, or
/// `$HOME/.local/state/p2pchat/history` when `XDG_STATE_HOME` is unset or
/// not absolute. `None` without a usable `HOME`.
pub fn history_path() -> Option<PathBuf> {
    history_path_in(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
}

fn history_path_in(state: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let absolute = |dir: Option<OsString>| dir.map(PathBuf::from).filter(|p| p.is_absolute());
    match (absolute(state), absolute(home)) {
        (Some(state), _) => Some(state.join("p2pchat/history")),
        (None, Some(home)) => Some(home.join(".local/state/p2pchat/history")),
        (None, None) => None,
    }
}

/// Reads a history file, one entry per line, keeping the newest
/// `HISTORY_LIMIT` non-empty lines. A missing or unreadable file is an
/// empty history.
pub fn load_history(path: &Path) -> Vec<String> {
    let Ok(bytes) = fs::read(path) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    let excess = lines.len().saturating_sub(HISTORY_LIMIT);
    lines.drain(..excess);
    lines
}

/// Writes the newest `HISTORY_LIMIT` entries to `path`, replacing it
/// atomically (a temporary file in the same directory, then a rename). The
/// directory is created with mode 0700 if missing, the file gets mode 0600.
/// Entries containing a line break are skipped.
///
/// # Errors
///
/// Any error creating the directory or writing or renaming the file; the
/// old history file is then left as it was.
pub fn save_history(path: &Path, history: &[String]) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(name);
    let mut text = String::new();
    let newest = &history[history.len().saturating_sub(HISTORY_LIMIT)..];
    for entry in newest.iter().filter(|e| !e.contains(['\n', '\r'])) {
        text.push_str(entry);
        text.push('\n');
    }
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(bytes: &[u8]) -> Vec<Key> {
        let mut parser = KeyParser::new();
        let mut out = Vec::new();
        parser.feed(bytes, &mut out);
        out
    }

    /// Feeds `bytes` split at every possible point and checks that the keys
    /// never depend on the split.
    fn keys_split_everywhere(bytes: &[u8]) -> Vec<Key> {
        let whole = keys(bytes);
        for cut in 0..=bytes.len() {
            let mut parser = KeyParser::new();
            let mut out = Vec::new();
            parser.feed(&bytes[..cut], &mut out);
            parser.feed(&bytes[cut..], &mut out);
            assert_eq!(out, whole, "split at {cut}");
        }
        // One byte per read.
        let mut parser = KeyParser::new();
        let mut out = Vec::new();
        for b in bytes {
            parser.feed(std::slice::from_ref(b), &mut out);
        }
        assert_eq!(out, whole, "byte by byte");
        whole
    }

    fn editor_after(bytes: &[u8]) -> Editor {
        let mut ed = Editor::new();
        for key in keys(bytes) {
            ed.key(key);
        }
        ed
    }

    fn typed(ed: &mut Editor, text: &str) {
        for c in text.chars() {
            ed.key(Key::Char(c));
        }
    }

    #[test]
    fn printable_and_control_bytes() {
        use Key::*;
        assert_eq!(keys(b"a Z~"), [Char('a'), Char(' '), Char('Z'), Char('~')]);
        assert_eq!(keys(b"\r\n\x7f\x08\t"), [Enter, Backspace, Backspace, Tab]);
        assert_eq!(keys(b"\n\n"), [Enter, Enter]);
        assert_eq!(keys(b"\r\r"), [Enter, Enter]);
        assert_eq!(
            keys(b"\x01\x02\x03\x04\x05\x06\x0b\x0c\x0e\x10\x15\x17\x1a\x00\x1f"),
            [
                CtrlA, CtrlB, CtrlC, CtrlD, CtrlE, CtrlF, CtrlK, CtrlL, CtrlN, CtrlP, CtrlU, CtrlW,
                CtrlZ, Unknown, Unknown
            ]
        );
    }

    #[test]
    fn utf8_split_at_every_byte() {
        let text = "aé你好😀z";
        let want: Vec<Key> = text.chars().map(Key::Char).collect();
        assert_eq!(keys_split_everywhere(text.as_bytes()), want);
        let ed = editor_after(text.as_bytes());
        assert_eq!(ed.line(), text);
        assert_eq!(ed.cursor(), 6);
    }

    #[test]
    fn invalid_utf8_becomes_replacement() {
        use Key::*;
        const R: char = REPLACEMENT;
        assert_eq!(keys(b"\xff\xc0a"), [Char(R), Char(R), Char('a')]);
        assert_eq!(keys(b"\x80"), [Char(R)]);
        // Truncated by an ASCII byte, by a control, by another lead byte.
        assert_eq!(keys(b"\xe4\xbda"), [Char(R), Char('a')]);
        assert_eq!(keys(b"\xe4\r"), [Char(R), Enter]);
        assert_eq!(keys(b"\xe4\xc3\xa9"), [Char(R), Char('é')]);
        // Surrogates and overlong forms are not characters.
        assert_eq!(keys(b"\xed\xa0\x80"), [Char(R)]);
        assert_eq!(keys(b"\xe0\x80\xaf"), [Char(R)]);
    }

    #[test]
    fn escape_sequences_split_at_every_byte() {
        use Key::*;
        let input = b"\x1b[A\x1b[B\x1b[C\x1b[D\x1bOA\x1bOD\x1b[H\x1b[F\x1bOH\x1bOF\
                      \x1b[1~\x1b[7~\x1b[4~\x1b[8~\x1b[3~\x1b[1;5C\x1b[1;3D\x1bb\x1bf";
        assert_eq!(
            keys_split_everywhere(input),
            [
                Up, Down, Right, Left, Up, Left, Home, End, Home, End, Home, Home, End, End,
                Delete, WordRight, WordLeft, WordLeft, WordRight
            ]
        );
    }

    #[test]
    fn unknown_sequences_are_swallowed_whole() {
        use Key::*;
        let input = b"\x1b[15~\x1b[?1;2c\x1b[<0;12;5M\x1b[I\x1bOP\x1bxa";
        assert_eq!(
            keys_split_everywhere(input),
            [
                Unknown,
                Unknown,
                Unknown,
                Unknown,
                Unknown,
                Unknown,
                Char('a')
            ]
        );
        // A very long sequence is still swallowed whole.
        let mut long = b"\x1b[".to_vec();
        long.extend(std::iter::repeat_n(b'9', 100));
        long.extend(b"~b");
        assert_eq!(keys(&long), [Unknown, Char('b')]);
        // A control byte breaks a sequence off and still counts.
        assert_eq!(keys(b"\x1b[1\r"), [Unknown, Enter]);
        let ed = editor_after(b"x\x1b[99;99zy");
        assert_eq!(ed.line(), "xy");
    }

    #[test]
    fn lone_escape_waits_for_flush() {
        let mut parser = KeyParser::new();
        let mut out = Vec::new();
        parser.feed(b"a\x1b", &mut out);
        assert_eq!(out, [Key::Char('a')]);
        assert!(parser.has_pending());
        parser.flush_pending(&mut out);
        assert_eq!(out, [Key::Char('a'), Key::Unknown]);
        assert!(!parser.has_pending());
        parser.feed(b"[A\xe4", &mut out);
        assert!(!parser.has_pending());
        parser.flush_pending(&mut out);
        assert_eq!(
            out[2..],
            [Key::Char('['), Key::Char('A'), Key::Char(REPLACEMENT)]
        );
    }

    #[test]
    fn bracketed_paste() {
        let input = b"x\x1b[200~one\r\ntwo\x1b[20\x1b\x1b[201~y";
        assert_eq!(
            keys_split_everywhere(input),
            [
                Key::Char('x'),
                Key::Paste("one\ntwo\x1b[20\x1b".into()),
                Key::Char('y')
            ]
        );
        // An unterminated paste ends on flush.
        let mut parser = KeyParser::new();
        let mut out = Vec::new();
        parser.feed(b"\x1b[200~abc\x1b[2", &mut out);
        assert!(out.is_empty() && parser.has_pending());
        parser.flush_pending(&mut out);
        assert_eq!(out, [Key::Paste("abc".into())]);
        // A huge paste is cut at MAX_PASTE.
        let mut big = b"\x1b[200~".to_vec();
        big.extend(std::iter::repeat_n(b'p', MAX_PASTE + 10));
        big.extend(PASTE_END);
        match &keys(&big)[..] {
            [Key::Paste(text)] => assert_eq!(text.len(), MAX_PASTE),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn paste_submits_each_line() {
        let mut ed = Editor::new();
        typed(&mut ed, ">");
        let outcomes = ed.paste("a\tb\n\nc\x1b\nd");
        assert_eq!(
            outcomes,
            [
                Outcome::Redraw,
                Outcome::Submit(">a b".into()),
                Outcome::Redraw,
                Outcome::Submit("c".into()),
                Outcome::Redraw
            ]
        );
        assert_eq!(ed.line(), "d");
        assert_eq!(ed.history(), [">a b", "c"]);
        // key(Paste) keeps everything on one line.
        let mut ed = Editor::new();
        assert_eq!(ed.key(Key::Paste("a\nb".into())), Outcome::Redraw);
        assert_eq!(ed.line(), "a b");
    }

    #[test]
    fn cursor_motion_and_deletion() {
        let mut ed = Editor::new();
        typed(&mut ed, "hello");
        assert_eq!(ed.key(Key::Left), Outcome::Redraw);
        ed.key(Key::CtrlB);
        assert_eq!(ed.cursor(), 3);
        ed.key(Key::Backspace);
        assert_eq!((ed.line().as_str(), ed.cursor()), ("helo", 2));
        ed.key(Key::Delete);
        assert_eq!((ed.line().as_str(), ed.cursor()), ("heo", 2));
        ed.key(Key::CtrlD);
        assert_eq!((ed.line().as_str(), ed.cursor()), ("he", 2));
        assert_eq!(ed.key(Key::Delete), Outcome::None);
        assert_eq!(ed.key(Key::Home), Outcome::Redraw);
        assert_eq!(ed.key(Key::CtrlA), Outcome::None);
        assert_eq!(ed.key(Key::Backspace), Outcome::None);
        typed(&mut ed, "x");
        assert_eq!((ed.line().as_str(), ed.cursor()), ("xhe", 1));
        ed.key(Key::CtrlF);
        ed.key(Key::Right);
        assert_eq!(ed.key(Key::Right), Outcome::None);
        ed.key(Key::CtrlA);
        ed.key(Key::End);
        assert_eq!(ed.cursor(), 3);
        ed.key(Key::Home);
        ed.key(Key::CtrlE);
        assert_eq!(ed.cursor(), 3);
    }

    #[test]
    fn kill_commands() {
        let mut ed = Editor::new();
        typed(&mut ed, "say  hello world ");
        ed.key(Key::CtrlW);
        assert_eq!(ed.line(), "say  hello ");
        ed.key(Key::CtrlW);
        assert_eq!(ed.line(), "say  ");
        for _ in 0..3 {
            ed.key(Key::Left);
        }
        ed.key(Key::CtrlW);
        assert_eq!((ed.line().as_str(), ed.cursor()), ("y  ", 0));
        let mut ed = Editor::new();
        typed(&mut ed, "abc def");
        ed.key(Key::WordLeft);
        assert_eq!(ed.cursor(), 4);
        ed.key(Key::CtrlU);
        assert_eq!((ed.line().as_str(), ed.cursor()), ("def", 0));
        ed.key(Key::WordRight);
        ed.key(Key::Left);
        ed.key(Key::CtrlK);
        assert_eq!((ed.line().as_str(), ed.cursor()), ("de", 2));
        assert_eq!(ed.key(Key::CtrlK), Outcome::None);
    }

    #[test]
    fn quit_suspend_clear() {
        let mut ed = Editor::new();
        assert_eq!(ed.key(Key::CtrlD), Outcome::Quit);
        assert_eq!(ed.key(Key::CtrlZ), Outcome::Suspend);
        assert_eq!(ed.key(Key::CtrlL), Outcome::ClearScreen);
        typed(&mut ed, "x");
        assert_eq!(ed.key(Key::CtrlC), Outcome::Quit);
        assert_eq!(ed.key(Key::CtrlD), Outcome::None);
        assert_eq!(ed.key(Key::Tab), Outcome::None);
        assert_eq!(ed.line(), "x");
    }

    #[test]
    fn submit_and_history() {
        let mut ed = Editor::new();
        assert_eq!(ed.key(Key::Enter), Outcome::None);
        for line in ["one", "two", "two", "   ", "three"] {
            typed(&mut ed, line);
            assert_eq!(ed.key(Key::Enter), Outcome::Submit(line.into()));
            assert_eq!((ed.line().as_str(), ed.cursor()), ("", 0));
        }
        assert_eq!(ed.history(), ["one", "two", "three"]);

        typed(&mut ed, "draft");
        ed.key(Key::Left);
        ed.key(Key::Up);
        assert_eq!((ed.line().as_str(), ed.cursor()), ("three", 5));
        ed.key(Key::CtrlP);
        ed.key(Key::Up);
        assert_eq!(ed.line(), "one");
        assert_eq!(ed.key(Key::Up), Outcome::None);
        ed.key(Key::Down);
        assert_eq!(ed.line(), "two");
        ed.key(Key::CtrlN);
        ed.key(Key::Down);
        assert_eq!((ed.line().as_str(), ed.cursor()), ("draft", 5));
        assert_eq!(ed.key(Key::Down), Outcome::None);

        // Submitting a recalled entry adds it again unless it is the newest.
        ed.key(Key::CtrlU);
        ed.key(Key::Up);
        ed.key(Key::Up);
        typed(&mut ed, "!");
        assert_eq!(ed.key(Key::Enter), Outcome::Submit("two!".into()));
        ed.key(Key::Up);
        assert_eq!(ed.key(Key::Enter), Outcome::Submit("two!".into()));
        assert_eq!(ed.history(), ["one", "two", "three", "two!"]);
    }

    #[test]
    fn history_is_bounded_and_clean() {
        let mut ed = Editor::new();
        let mut lines: Vec<String> = (0..HISTORY_LIMIT + 5).map(|i| format!("l{i}")).collect();
        lines.push("l1004".into());
        lines.push("".into());
        lines.push("bad\x1b[2Jline".into());
        ed.set_history(lines);
        assert_eq!(ed.history().len(), HISTORY_LIMIT);
        assert_eq!(ed.history()[0], "l6");
        assert_eq!(ed.history().last().map(String::as_str), Some("bad[2Jline"));
        assert_eq!(ed.history()[HISTORY_LIMIT - 2], "l1004");
        for i in 0..10 {
            typed(&mut ed, &format!("n{i}"));
            ed.key(Key::Enter);
        }
        assert_eq!(ed.history().len(), HISTORY_LIMIT);
    }

    #[test]
    fn line_is_bounded_and_has_no_controls() {
        let mut ed = Editor::new();
        assert_eq!(ed.key(Key::Char('\u{9b}')), Outcome::None);
        assert_eq!(ed.key(Key::Char('\x1b')), Outcome::None);
        let long: String = "y".repeat(MAX_LINE + 3);
        assert_eq!(ed.paste(&long), [Outcome::Bell]);
        assert_eq!(ed.line().len(), MAX_LINE);
        assert_eq!(ed.key(Key::Char('z')), Outcome::Bell);
    }

    #[test]
    fn widths() {
        assert_eq!(str_width("abc"), 3);
        assert_eq!(str_width("你好"), 4);
        assert_eq!(char_width('😀'), 2);
        assert_eq!(str_width("e\u{301}"), 1);
        assert_eq!(str_width("a\u{200d}b\u{fe0f}"), 2);
        assert_eq!(str_width("\x1b\t\u{9b}"), 0);
        assert_eq!(char_width('한'), 2);
        assert_eq!(char_width('Ａ'), 2);
        assert_eq!(char_width('\u{20000}'), 2);
    }

    #[test]
    fn render_fits_without_scrolling() {
        let mut ed = Editor::new();
        typed(&mut ed, "hi 你好😀");
        assert_eq!(ed.render(2, 80), ("hi 你好😀".into(), 9));
        ed.key(Key::Left);
        assert_eq!(ed.render(2, 80), ("hi 你好😀".into(), 7));
        // Exactly full: prompt 2 + line 9 + free column = 12.
        ed.key(Key::End);
        assert_eq!(ed.render(2, 12), ("hi 你好😀".into(), 9));
    }

    #[test]
    fn render_scrolls_to_keep_cursor_visible() {
        let mut ed = Editor::new();
        typed(&mut ed, "abcdefghij");
        // Prompt 4, terminal 10: 5 columns for the line; the cursor at the
        // end may sit in the free last column.
        let (text, col) = ed.render(4, 10);
        assert_eq!((text.as_str(), col), ("fghij", 5));
        ed.key(Key::Home);
        assert_eq!(ed.render(4, 10), ("abcde".into(), 0));
        for _ in 0..7 {
            ed.key(Key::Right);
        }
        assert_eq!(ed.render(4, 10), ("defgh".into(), 4));
        // Degenerate widths never panic.
        assert_eq!(ed.render(20, 10), (String::new(), 0));
        assert_eq!(ed.render(0, 0), (String::new(), 0));
    }

    #[test]
    fn render_never_splits_wide_chars() {
        let mut ed = Editor::new();
        typed(&mut ed, "你好世界");
        // 5 columns for the line: at most two wide chars.
        assert_eq!(ed.render(0, 6), ("世界".into(), 4));
        ed.key(Key::Left);
        assert_eq!(ed.render(0, 6), ("世界".into(), 2));
        ed.key(Key::Left);
        assert_eq!(ed.render(0, 6), ("好世".into(), 2));
        ed.key(Key::Home);
        assert_eq!(ed.render(0, 6), ("你好".into(), 0));
        // Every cursor position and width: cursor visible, text fits.
        for cols in 1..12 {
            for pos in 0..=4 {
                ed.key(Key::Home);
                for _ in 0..pos {
                    ed.key(Key::Right);
                }
                let (text, col) = ed.render(0, cols);
                let avail = cols - 1;
                assert!(str_width(&text) <= avail, "{cols} {pos}");
                assert!(col <= avail, "{cols} {pos}");
                if pos < 4 && avail >= 2 {
                    assert!(
                        col + 2 <= str_width(&text),
                        "{cols} {pos}: char under cursor shown"
                    );
                }
            }
        }
    }

    #[test]
    fn render_keeps_combining_marks_with_their_base() {
        let mut ed = Editor::new();
        typed(&mut ed, "ae\u{301}bcd");
        assert_eq!(ed.render(0, 80), ("ae\u{301}bcd".into(), 5));
        // 3 columns: the window starts after the mark, not on it.
        assert_eq!(ed.render(0, 4), ("bcd".into(), 3));
        ed.key(Key::Left);
        ed.key(Key::Left);
        assert_eq!(ed.render(0, 4), ("e\u{301}bc".into(), 2));
    }

    #[test]
    fn escapes_untrusted_text() {
        assert_eq!(escape_controls("hi there"), "hi there");
        assert_eq!(
            escape_controls("\x1b[2J\x1b]0;pwned\x07"),
            "^[[2J^[]0;pwned^G"
        );
        assert_eq!(escape_controls("a\tb\nc\r\0\x7f"), "a^Ib^Jc^M^@^?");
        assert_eq!(escape_controls("\u{9b}31m\u{85}"), "\\u{9b}31m\\u{85}");
        assert_eq!(
            escape_controls("abc\u{202e}def\u{2066}"),
            "abc\\u{202e}def\\u{2066}"
        );
        assert_eq!(escape_controls("你好 é 😀"), "你好 é 😀");
    }

    #[test]
    fn history_file_round_trip() {
        let dir = std::env::temp_dir().join(format!("p2pchat-editor-test-{}", std::process::id()));
        let path = dir.join("state/p2pchat/history");
        assert_eq!(load_history(&path), Vec::<String>::new());
        let entries: Vec<String> = (0..HISTORY_LIMIT + 2)
            .map(|i| format!("line {i} ü"))
            .collect();
        let mut with_break = entries.clone();
        with_break.push("two\nlines".into());
        save_history(&path, &with_break).expect("save");
        let loaded = load_history(&path);
        assert_eq!(loaded.len(), HISTORY_LIMIT - 1);
        assert_eq!(loaded[0], "line 3 ü");
        assert_eq!(loaded.last(), entries.last());
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("dir")), 0o700);
        // Saving again replaces the file; no temporary file is left behind.
        save_history(&path, &["only".to_owned()]).expect("save again");
        assert_eq!(load_history(&path), ["only"]);
        let files = fs::read_dir(path.parent().expect("dir"))
            .expect("readdir")
            .count();
        assert_eq!(files, 1);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn history_path_follows_xdg() {
        let os = |s: &str| Some(OsString::from(s));
        let path = |s: &str| Some(PathBuf::from(s));
        assert_eq!(
            history_path_in(os("/state"), os("/home/u")),
            path("/state/p2pchat/history")
        );
        let fallback = path("/home/u/.local/state/p2pchat/history");
        assert_eq!(history_path_in(os("relative"), os("/home/u")), fallback);
        assert_eq!(history_path_in(None, os("/home/u")), fallback);
        assert_eq!(history_path_in(os(""), os("")), None);
        assert_eq!(history_path_in(None, None), None);
    }
}
