//! The input line, without I/O: terminal bytes to keys, keys to edits.
//!
//! `KeyParser` turns raw terminal bytes into `Key`s and keeps its state
//! across reads, so an escape sequence or a UTF-8 character may arrive split
//! anywhere. `Editor` holds the line, the cursor and the history, applies
//! keys with readline/linenoise semantics and says what the caller should do
//! next (`Outcome`). `render` cuts the window of the line that fits the
//! terminal. Display widths (`char_width`) and the sanitising of untrusted
//! text for the terminal (`escape_controls`) live here too; the history
//! file is `history`'s.
//!
//! Nothing here touches the terminal; `tty` does the drawing.

use std::fmt::Write as _;

/// Most history entries kept, in memory and in the history file.
pub const HISTORY_LIMIT: usize = 1000;
/// Longest input line, in chars: typing past it rings the bell.
pub const MAX_INPUT: usize = 4096;
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
    /// Ctrl-G (cancels a search).
    CtrlG,
    /// Ctrl-K.
    CtrlK,
    /// Ctrl-L.
    CtrlL,
    /// Ctrl-N.
    CtrlN,
    /// Ctrl-P.
    CtrlP,
    /// Ctrl-R (search the history).
    CtrlR,
    /// Ctrl-U.
    CtrlU,
    /// Ctrl-W.
    CtrlW,
    /// Ctrl-Y (yank).
    CtrlY,
    /// Alt-D (`ESC d`): delete the word after the cursor.
    AltD,
    /// Alt-Backspace (`ESC DEL`, `ESC ^H`): delete the word before it.
    AltBackspace,
    /// Ctrl-Z (0x1a arrives as a key because raw mode turns ISIG off).
    CtrlZ,
    /// Tab: completes names and commands.
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
                    b'd' => out.push(Key::AltD),
                    0x7f | 0x08 => out.push(Key::AltBackspace),
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
        0x07 => Key::CtrlG,
        0x0b => Key::CtrlK,
        0x0c => Key::CtrlL,
        0x0e => Key::CtrlN,
        0x10 => Key::CtrlP,
        0x12 => Key::CtrlR,
        0x15 => Key::CtrlU,
        0x17 => Key::CtrlW,
        0x19 => Key::CtrlY,
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
    /// Enter on a held paste: its lines, each to be sent as text (never a
    /// command), blank ones included.
    SubmitText(Vec<String>),
    /// Ctrl-C or Ctrl-D on an empty line.
    Quit,
    /// Ctrl-Z.
    Suspend,
    /// Ctrl-L.
    ClearScreen,
    /// Nothing to do for this key (no completion, the line is full): ring
    /// the bell.
    Bell,
    /// Something to tell the user on a line of its own (completions, a
    /// full line); the input line is redrawn below it.
    Notice(String),
}

/// Lines in one paste, at most; a longer paste is refused.
pub const MAX_PASTE_LINES: usize = 1000;

/// A reverse history search (Ctrl-R) under way.
#[derive(Debug, Clone)]
struct Search {
    query: String,
    /// The history entry shown, if one matches.
    at: Option<usize>,
    /// The line as it was before the search, for Ctrl-G or Ctrl-C.
    buf: Vec<char>,
    pos: usize,
}

/// The line being typed, its cursor and the input history.
///
/// Keys follow readline: Ctrl-U kills from the start of the line to the
/// cursor, Ctrl-K from the cursor to the end, Ctrl-W the whitespace-delimited
/// word before the cursor, Alt-Backspace and Alt-D the word (letters and
/// digits) before and after it; Ctrl-Y yanks back what was killed last.
/// Backspace, Delete and the arrows move over whole grapheme clusters
/// (`é` typed as e + U+0301, 👨‍👩‍👧‍👦), as the terminal draws them. Up/Down walk
/// the history; the line being typed is kept and comes back when Down walks
/// past the newest entry. Edits to a recalled entry are lost when walking
/// away from it; the history itself is never changed except by submitting.
/// Ctrl-R searches the history backwards as you type.
///
/// A paste with line breaks is held, not inserted: the input line shows how
/// many lines it has, Enter sends them all as text (`SubmitText`), Ctrl-C
/// drops them. It makes one history entry.
#[derive(Debug, Default)]
pub struct Editor {
    buf: Vec<char>,
    pos: usize,
    history: Vec<String>,
    browse: Option<usize>,
    saved: Vec<char>,
    /// What Ctrl-U, Ctrl-K, Ctrl-W, Alt-D or Alt-Backspace cut last.
    killed: Vec<char>,
    search: Option<Search>,
    /// A held paste: its lines (the text around the cursor included) and
    /// the line as it was before it.
    paste: Option<(Vec<String>, Vec<char>, usize)>,
    /// Names that Tab completes (other members).
    names: Vec<String>,
    /// The user has been told the line is full.
    full_told: bool,
    /// Set by every edit; taken by the caller (`take_edited`).
    edited: bool,
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

    /// Sets the names Tab completes (the other members).
    pub fn set_names(&mut self, names: Vec<String>) {
        self.names = names;
    }

    /// What to show between the prompt and the line: the search being
    /// typed, or the size of a held paste.
    pub fn banner(&self) -> Option<String> {
        self.banners().map(|(long, _)| long)
    }

    /// The banner and a short form of it for narrow terminals.
    pub fn banners(&self) -> Option<(String, String)> {
        if let Some(s) = &self.search {
            let state = if s.at.is_some() || s.query.is_empty() {
                ""
            } else {
                "failing "
            };
            return Some((
                format!("({state}reverse-i-search)'{}': ", s.query),
                format!("({state}search)'{}': ", s.query),
            ));
        }
        self.paste.as_ref().map(|(lines, _, _)| {
            let n = lines.len();
            (
                format!("[{n} lines pasted: Enter sends, Ctrl-C drops] "),
                format!("[{n} lines] "),
            )
        })
    }

    /// Replaces the history (e.g. with `history::load`), keeping the newest
    /// `HISTORY_LIMIT` entries, dropping blank ones and consecutive
    /// duplicates and removing control characters (but the line breaks of
    /// a pasted entry).
    pub fn set_history(&mut self, entries: Vec<String>) {
        self.history.clear();
        self.browse = None;
        for entry in entries {
            let clean: String = entry
                .chars()
                .filter(|&c| c == '\n' || !c.is_control())
                .collect();
            self.add_history(clean);
        }
        // Loaded, not entered: nothing to append to the file.
        self.edited = false;
    }

    /// The entry added to the history since the last call, if a line was
    /// entered (for the caller to append to the history file).
    pub fn take_edited(&mut self) -> Option<String> {
        if std::mem::take(&mut self.edited) {
            self.history.last().cloned()
        } else {
            None
        }
    }

    /// Applies one key.
    pub fn key(&mut self, key: Key) -> Outcome {
        if self.search.is_some()
            && let Some(o) = self.search_key(&key)
        {
            return o;
        }
        if self.paste.is_some() {
            return self.paste_key(key);
        }
        match key {
            Key::Char(c) => self.insert(&[c]),
            Key::Paste(text) => self.paste(&text),
            Key::Enter => self.submit(),
            Key::Backspace if self.pos > 0 => {
                let from = self.prev_boundary(self.pos);
                self.delete(from, self.pos)
            }
            Key::CtrlD if self.buf.is_empty() => Outcome::Quit,
            Key::Delete | Key::CtrlD if self.pos < self.buf.len() => {
                let to = self.next_boundary(self.pos);
                self.delete(self.pos, to)
            }
            Key::Left | Key::CtrlB => self.move_to(self.prev_boundary(self.pos)),
            Key::Right | Key::CtrlF => self.move_to(self.next_boundary(self.pos)),
            Key::Home | Key::CtrlA => self.move_to(0),
            Key::End | Key::CtrlE => self.move_to(self.buf.len()),
            Key::WordLeft => self.move_to(self.word_start()),
            Key::WordRight => self.move_to(self.word_end()),
            Key::CtrlU => self.kill(0, self.pos),
            Key::CtrlK => self.kill(self.pos, self.buf.len()),
            Key::CtrlW => self.kill(self.word_start(), self.pos),
            Key::AltBackspace => self.kill(self.alnum_start(), self.pos),
            Key::AltD => self.kill(self.pos, self.alnum_end()),
            Key::CtrlY => {
                let k = self.killed.clone();
                self.insert(&k)
            }
            Key::Up | Key::CtrlP => self.history_prev(),
            Key::Down | Key::CtrlN => self.history_next(),
            Key::CtrlR => self.search_start(),
            // As in a shell: Ctrl-C drops the line; on an empty one, leaves.
            Key::CtrlC if self.buf.is_empty() => Outcome::Quit,
            Key::CtrlC => {
                self.browse = None;
                self.kill(0, self.buf.len())
            }
            Key::CtrlZ => Outcome::Suspend,
            Key::CtrlL => Outcome::ClearScreen,
            Key::Tab => self.complete(),
            Key::Backspace | Key::Delete | Key::CtrlD | Key::CtrlG | Key::Unknown => Outcome::None,
        }
    }

    /// Pasted text. Without a line break (one trailing one aside) it is
    /// inserted as typed; with line breaks it is held (see the type's docs).
    pub fn paste(&mut self, text: &str) -> Outcome {
        let text = text.strip_suffix('\n').unwrap_or(text);
        if !text.contains('\n') {
            let chars: Vec<char> = text.chars().collect();
            return self.insert(&chars);
        }
        let before: String = self.buf[..self.pos].iter().collect();
        let after: String = self.buf[self.pos..].iter().collect();
        let whole = format!("{before}{text}{after}");
        self.hold(&whole)
    }

    /// Holds `text` (with line breaks) for Enter to send.
    fn hold(&mut self, text: &str) -> Outcome {
        let lines: Vec<String> = text.split('\n').map(clean).collect();
        if lines.len() > MAX_PASTE_LINES {
            return Outcome::Notice(format!(
                "paste refused: {} lines, at most {MAX_PASTE_LINES}",
                lines.len()
            ));
        }
        let before = std::mem::take(&mut self.buf);
        let pos = std::mem::take(&mut self.pos);
        let before = match self.paste.take() {
            Some((_, b, p)) => (b, p),
            None => (before, pos),
        };
        // The first line shows as a preview after the count.
        self.buf = lines[0].chars().collect();
        self.paste = Some((lines, before.0, before.1));
        Outcome::Redraw
    }

    fn paste_key(&mut self, key: Key) -> Outcome {
        match key {
            Key::Enter => {
                let (lines, _, _) = self.paste.take().expect("held");
                self.buf.clear();
                self.pos = 0;
                self.browse = None;
                self.add_history(lines.join("\n"));
                Outcome::SubmitText(lines)
            }
            Key::CtrlC | Key::CtrlU | Key::Backspace | Key::CtrlG => {
                let (_, buf, pos) = self.paste.take().expect("held");
                self.buf = buf;
                self.pos = pos;
                self.browse = None;
                Outcome::Redraw
            }
            Key::Up | Key::CtrlP | Key::Down | Key::CtrlN if self.browse.is_some() => {
                let (_, buf, pos) = self.paste.take().expect("held");
                self.buf = buf;
                self.pos = pos;
                if matches!(key, Key::Up | Key::CtrlP) {
                    self.history_prev()
                } else {
                    self.history_next()
                }
            }
            Key::Paste(text) => {
                let (lines, _, _) = self.paste.as_ref().expect("held");
                let whole = format!("{}\n{text}", lines.join("\n"));
                self.hold(whole.strip_suffix('\n').unwrap_or(&whole))
            }
            Key::CtrlZ => Outcome::Suspend,
            Key::CtrlL => Outcome::ClearScreen,
            _ => Outcome::Bell,
        }
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
            let c = if c == '\t' || c == '\n' { ' ' } else { c };
            if c.is_control() {
                continue;
            }
            if self.buf.len() >= MAX_INPUT {
                if std::mem::replace(&mut self.full_told, true) {
                    return Outcome::Bell;
                }
                return Outcome::Notice(format!(
                    "the line is full ({MAX_INPUT} characters); the rest was not typed"
                ));
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
        self.full_told = false;
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
        self.edited = true;
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

    fn delete(&mut self, from: usize, to: usize) -> Outcome {
        if from == to {
            return Outcome::None;
        }
        self.buf.drain(from..to);
        self.pos = from;
        self.full_told = false;
        Outcome::Redraw
    }

    fn kill(&mut self, from: usize, to: usize) -> Outcome {
        if from == to {
            return Outcome::None;
        }
        self.killed = self.buf[from..to].to_vec();
        self.delete(from, to)
    }

    /// Grapheme cluster boundaries of the line, as char indices.
    fn boundaries(&self) -> Vec<usize> {
        use unicode_segmentation::UnicodeSegmentation;
        let s: String = self.buf.iter().collect();
        let mut out = Vec::new();
        let mut chars = 0;
        for g in s.graphemes(true) {
            out.push(chars);
            chars += g.chars().count();
        }
        out.push(chars);
        out
    }

    fn prev_boundary(&self, pos: usize) -> usize {
        let b = self.boundaries();
        b.iter().rev().find(|&&i| i < pos).copied().unwrap_or(0)
    }

    fn next_boundary(&self, pos: usize) -> usize {
        let b = self.boundaries();
        b.iter()
            .find(|&&i| i > pos)
            .copied()
            .unwrap_or(self.buf.len())
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

    /// Start of the word (letters and digits) before the cursor.
    fn alnum_start(&self) -> usize {
        let mut i = self.pos;
        while i > 0 && !self.buf[i - 1].is_alphanumeric() {
            i -= 1;
        }
        while i > 0 && self.buf[i - 1].is_alphanumeric() {
            i -= 1;
        }
        i
    }

    /// End of the word (letters and digits) after the cursor.
    fn alnum_end(&self) -> usize {
        let mut i = self.pos;
        while i < self.buf.len() && !self.buf[i].is_alphanumeric() {
            i += 1;
        }
        while i < self.buf.len() && self.buf[i].is_alphanumeric() {
            i += 1;
        }
        i
    }

    /// Shows history entry `index` for editing (a multi-line one is held
    /// like a paste).
    fn recall(&mut self, index: usize) {
        self.browse = Some(index);
        let entry = self.history[index].clone();
        self.paste = None;
        if entry.contains('\n') {
            self.buf.clear();
            self.pos = 0;
            self.hold(&entry);
        } else {
            self.buf = entry.chars().collect();
            self.pos = self.buf.len();
        }
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
        self.recall(index);
        Outcome::Redraw
    }

    fn history_next(&mut self) -> Outcome {
        match self.browse {
            None => return Outcome::None,
            Some(i) if i + 1 < self.history.len() => self.recall(i + 1),
            Some(_) => {
                self.browse = None;
                self.paste = None;
                self.buf = std::mem::take(&mut self.saved);
                self.pos = self.buf.len();
            }
        }
        Outcome::Redraw
    }

    fn search_start(&mut self) -> Outcome {
        self.search = Some(Search {
            query: String::new(),
            at: None,
            buf: self.buf.clone(),
            pos: self.pos,
        });
        Outcome::Redraw
    }

    /// The newest entry at or before `from` that contains `query`
    /// (ignoring case).
    fn find(&self, query: &str, from: usize) -> Option<usize> {
        let q = query.to_lowercase();
        (0..=from.min(self.history.len().checked_sub(1)?))
            .rev()
            .find(|&i| self.history[i].to_lowercase().contains(&q))
    }

    fn show_match(&mut self) {
        let s = self.search.as_ref().expect("searching");
        match s.at {
            Some(i) => {
                let entry = &self.history[i];
                let at = entry
                    .to_lowercase()
                    .find(&s.query.to_lowercase())
                    .unwrap_or(0);
                self.buf = entry.replace('\n', " ").chars().collect();
                self.pos = entry.get(..at).map_or(0, |p| p.chars().count());
            }
            None if s.query.is_empty() => {
                self.buf = s.buf.clone();
                self.pos = s.pos;
            }
            None => {}
        }
    }

    /// A key during a search: `Some` if the search took it, `None` if it
    /// ended the search and the key is to be applied as usual.
    fn search_key(&mut self, key: &Key) -> Option<Outcome> {
        let s = self.search.as_mut().expect("searching");
        match key {
            Key::Char(c) => {
                s.query.push(*c);
                let (q, from) = (s.query.clone(), s.at.unwrap_or(usize::MAX));
                let at = self.find(&q, from);
                self.search.as_mut().expect("searching").at = at;
                self.show_match();
                if at.is_none() {
                    return Some(Outcome::Bell);
                }
            }
            Key::Backspace => {
                s.query.pop();
                let q = s.query.clone();
                let at = if q.is_empty() {
                    None
                } else {
                    self.find(&q, usize::MAX)
                };
                self.search.as_mut().expect("searching").at = at;
                self.show_match();
            }
            Key::CtrlR => {
                let (q, at) = (s.query.clone(), s.at);
                let older = match at {
                    Some(0) => None,
                    Some(i) => self.find(&q, i - 1),
                    None if q.is_empty() => None,
                    None => self.find(&q, usize::MAX),
                };
                match older {
                    Some(i) => {
                        self.search.as_mut().expect("searching").at = Some(i);
                        self.show_match();
                    }
                    None => return Some(Outcome::Bell),
                }
            }
            Key::CtrlG | Key::CtrlC => {
                let s = self.search.take().expect("searching");
                self.buf = s.buf;
                self.pos = s.pos;
            }
            _ => {
                // Any other key takes the match and does what it does.
                let s = self.search.take().expect("searching");
                if let Some(i) = s.at {
                    self.browse = None;
                    if self.history[i].contains('\n') {
                        let entry = self.history[i].clone();
                        self.buf.clear();
                        self.pos = 0;
                        self.hold(&entry);
                    }
                }
                return None;
            }
        }
        Some(Outcome::Redraw)
    }

    /// Tab: completes the word before the cursor, a member's name (with
    /// `: ` after it at the start of the line) or, after `:` or `/` at the
    /// start of the line, a command.
    fn complete(&mut self) -> Outcome {
        let start = self.word_start_strict();
        let word: String = self.buf[start..self.pos].iter().collect();
        let command = start == 0
            && (word.starts_with(':') || word.starts_with('/'))
            && !word[1..].starts_with(['/', ':']);
        let (stem, candidates): (&str, Vec<String>) = if command {
            let stem = &word[1..];
            (
                stem,
                crate::command::available().map(str::to_owned).collect(),
            )
        } else {
            (&word, self.names.clone())
        };
        let fstem = crate::name::fold(stem);
        let mut matches: Vec<String> = candidates
            .into_iter()
            .filter(|c| crate::name::fold(c).starts_with(&fstem))
            .collect();
        matches.sort();
        matches.dedup();
        let Some(first) = matches.first() else {
            return Outcome::Bell;
        };
        let done = matches.len() == 1;
        let mut common: Vec<char> = first.chars().collect();
        for m in &matches[1..] {
            let n = common
                .iter()
                .zip(m.chars())
                .take_while(|(a, b)| {
                    crate::name::fold(&a.to_string()) == crate::name::fold(&b.to_string())
                })
                .count();
            common.truncate(n);
        }
        if !done && common.len() <= stem.chars().count() {
            return Outcome::Notice(matches.join("  "));
        }
        let mut new: Vec<char> = if command {
            std::iter::once(word.chars().next().unwrap_or(':'))
                .chain(common)
                .collect()
        } else {
            common
        };
        if done {
            let suffix = if start == 0 && !command { ": " } else { " " };
            if self.buf[self.pos..].first() != Some(&' ') {
                new.extend(suffix.chars());
            }
        }
        self.buf.splice(start..self.pos, new.iter().copied());
        self.pos = start + new.len();
        if self.buf.len() > MAX_INPUT {
            self.buf.truncate(MAX_INPUT);
            self.pos = self.pos.min(MAX_INPUT);
        }
        Outcome::Redraw
    }

    /// Start of the whitespace-delimited word ending at the cursor.
    fn word_start_strict(&self) -> usize {
        let mut i = self.pos;
        while i > 0 && !self.buf[i - 1].is_whitespace() {
            i -= 1;
        }
        i
    }
}

/// A pasted line as it is sent: tabs as spaces, no other control
/// characters.
fn clean(line: &str) -> String {
    line.chars()
        .map(|c| if c == '\t' { ' ' } else { c })
        .filter(|c| !c.is_control())
        .collect()
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

/// Whether `c` may change how a terminal shows what follows it, or hide
/// or fake a line break: C0 controls and DEL; C1 controls; the
/// bidirectional marks (U+200E, U+200F, U+061C), embeddings, overrides
/// and isolates (U+202A–U+202E, U+2066–U+2069); the line and paragraph
/// separators (U+2028, U+2029). Text from the network never shows one raw.
pub fn is_unsafe(c: char) -> bool {
    matches!(
        u32::from(c),
        0..=0x1f | 0x7f..=0x9f | 0x61c | 0x200e | 0x200f | 0x2028 | 0x2029 | 0x202a..=0x202e
            | 0x2066..=0x2069
    )
}

/// Makes untrusted text safe to print on a terminal. C0 controls (tab and
/// newline included) and DEL are shown in caret notation (`ESC` as `^[`,
/// DEL as `^?`); the other characters [`is_unsafe`] names as
/// `\u{9b}`-style escapes. Everything else is kept.
pub fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_escaped(&mut out, s);
    out
}

/// [`escape_controls`] of `s`, added to `out` (a line built in a buffer
/// kept from one line to the next).
pub fn push_escaped(out: &mut String, s: &str) {
    // Most text has nothing to escape: one copy, not a char at a time.
    // Printable ASCII is known safe from its bytes alone.
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) || !s.chars().any(is_unsafe) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match u32::from(c) {
            u @ 0..=0x1f => {
                out.push('^');
                out.push(char::from(u as u8 + 0x40));
            }
            0x7f => out.push_str("^?"),
            u if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{u:x}}}");
            }
            _ => out.push(c),
        }
    }
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
    fn pasted_lines_are_held_sent_as_text_and_one_history_entry() {
        let mut ed = Editor::new();
        typed(&mut ed, ">");
        assert_eq!(ed.paste("in vim type\n:q\n\nto quit"), Outcome::Redraw);
        assert_eq!(
            ed.banner().as_deref(),
            Some("[4 lines pasted: Enter sends, Ctrl-C drops] ")
        );
        // Typing does not touch the held paste.
        assert_eq!(ed.key(Key::Char('x')), Outcome::Bell);
        assert_eq!(
            ed.key(Key::Enter),
            Outcome::SubmitText(vec![
                ">in vim type".into(),
                ":q".into(),
                "".into(),
                "to quit".into()
            ])
        );
        assert_eq!(ed.history(), [">in vim type\n:q\n\nto quit"]);
        assert_eq!((ed.line().as_str(), ed.banner()), ("", None));
        // Ctrl-C drops it and gives back the line as it was.
        typed(&mut ed, "ab");
        ed.key(Key::Left);
        ed.key(Key::Paste("1\n2".into()));
        assert_eq!(ed.key(Key::CtrlC), Outcome::Redraw);
        assert_eq!((ed.line().as_str(), ed.cursor()), ("ab", 1));
        // One line, even with a trailing line break, is inserted as typed.
        assert_eq!(ed.key(Key::Paste("x\ty\n".into())), Outcome::Redraw);
        assert_eq!(ed.line(), "ax yb");
        // The text around the cursor joins the first and last lines.
        ed.key(Key::Paste("1\n2".into()));
        assert_eq!(
            ed.key(Key::Enter),
            Outcome::SubmitText(vec!["ax y1".into(), "2b".into()])
        );
        // Up brings a pasted entry back held, as it was.
        ed.key(Key::Up);
        assert!(ed.banner().is_some_and(|b| b.starts_with("[2 lines")));
        assert_eq!(
            ed.key(Key::Enter),
            Outcome::SubmitText(vec!["ax y1".into(), "2b".into()])
        );
        // A huge paste is refused.
        let many = "x\n".repeat(MAX_PASTE_LINES + 1);
        assert!(matches!(ed.paste(&many), Outcome::Notice(_)));
        assert_eq!(ed.banner(), None);
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
        assert_eq!(ed.key(Key::CtrlC), Outcome::Quit);
        typed(&mut ed, "x");
        assert_eq!(ed.key(Key::CtrlD), Outcome::None);
        assert_eq!(ed.line(), "x");
        // Ctrl-C on a line clears it, as in a shell; then it leaves.
        assert_eq!(ed.key(Key::CtrlC), Outcome::Redraw);
        assert_eq!(ed.line(), "");
        assert_eq!(ed.key(Key::CtrlC), Outcome::Quit);
    }

    #[test]
    fn yank_and_alt_word_kills() {
        let mut ed = Editor::new();
        typed(&mut ed, "hello, big-world");
        assert_eq!(ed.key(Key::AltBackspace), Outcome::Redraw);
        assert_eq!(ed.line(), "hello, big-");
        ed.key(Key::AltBackspace);
        assert_eq!(ed.line(), "hello, ");
        ed.key(Key::CtrlY);
        assert_eq!(ed.line(), "hello, big-");
        ed.key(Key::Home);
        assert_eq!(ed.key(Key::AltD), Outcome::Redraw);
        assert_eq!((ed.line().as_str(), ed.cursor()), (", big-", 0));
        ed.key(Key::End);
        ed.key(Key::CtrlY);
        assert_eq!(ed.line(), ", big-hello");
        ed.key(Key::CtrlU);
        ed.key(Key::CtrlY);
        ed.key(Key::CtrlY);
        assert_eq!(ed.line(), ", big-hello, big-hello");
        assert_eq!(
            keys(b"\x1bd\x1b\x7f\x1b\x08\x19\x12\x07"),
            [
                Key::AltD,
                Key::AltBackspace,
                Key::AltBackspace,
                Key::CtrlY,
                Key::CtrlR,
                Key::CtrlG
            ]
        );
    }

    #[test]
    fn backspace_and_arrows_take_whole_grapheme_clusters() {
        let family = "\u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467}\u{200d}\u{1f466}";
        let mut ed = Editor::new();
        typed(&mut ed, &format!("a{family}e\u{301}"));
        assert_eq!(ed.key(Key::Backspace), Outcome::Redraw);
        assert_eq!(ed.line(), format!("a{family}"));
        ed.key(Key::Backspace);
        assert_eq!(ed.line(), "a");
        typed(&mut ed, &format!("{family}b"));
        ed.key(Key::Home);
        ed.key(Key::Right);
        ed.key(Key::Right);
        assert_eq!(ed.cursor(), 1 + family.chars().count());
        ed.key(Key::Left);
        ed.key(Key::Delete);
        assert_eq!(ed.line(), "ab");
    }

    #[test]
    fn tab_completes_names_and_commands() {
        let mut ed = Editor::new();
        ed.set_names(vec!["bob".into(), "Alice".into(), "albert".into()]);
        typed(&mut ed, "b");
        assert_eq!(ed.key(Key::Tab), Outcome::Redraw);
        assert_eq!(ed.line(), "bob: ");
        typed(&mut ed, "hi ALI");
        ed.key(Key::Tab);
        assert_eq!(ed.line(), "bob: hi Alice ");
        typed(&mut ed, "al");
        // Two match and share nothing more: list them.
        assert_eq!(ed.key(Key::Tab), Outcome::Notice("Alice  albert".into()));
        typed(&mut ed, "b");
        ed.key(Key::Tab);
        assert_eq!(ed.line(), "bob: hi Alice albert ");
        assert_eq!(ed.line().chars().count(), ed.cursor());
        let mut ed = Editor::new();
        typed(&mut ed, "/hel");
        ed.key(Key::Tab);
        assert_eq!(ed.line(), "/help ");
        let mut ed = Editor::new();
        typed(&mut ed, ":q");
        ed.key(Key::Tab);
        // q and quit: the common part is q already.
        assert_eq!(ed.line(), ":q");
        let mut ed = Editor::new();
        typed(&mut ed, "zed");
        assert_eq!(ed.key(Key::Tab), Outcome::Bell);
        assert_eq!(ed.line(), "zed");
    }

    #[test]
    fn ctrl_r_searches_the_history() {
        let mut ed = Editor::new();
        ed.set_history(vec![
            "hello world".into(),
            "goodbye".into(),
            "hello there".into(),
        ]);
        typed(&mut ed, "draft");
        ed.key(Key::CtrlR);
        assert_eq!(ed.banner().as_deref(), Some("(reverse-i-search)'': "));
        for c in "HEL".chars() {
            ed.key(Key::Char(c));
        }
        assert_eq!(ed.line(), "hello there");
        assert_eq!(ed.banner().as_deref(), Some("(reverse-i-search)'HEL': "));
        ed.key(Key::CtrlR);
        assert_eq!(ed.line(), "hello world");
        assert_eq!(ed.key(Key::CtrlR), Outcome::Bell);
        assert_eq!(ed.line(), "hello world");
        // Ctrl-G gives the draft back.
        ed.key(Key::CtrlG);
        assert_eq!((ed.line().as_str(), ed.banner()), ("draft", None));
        // Enter takes the match and sends it.
        ed.key(Key::CtrlR);
        for c in "bye".chars() {
            ed.key(Key::Char(c));
        }
        assert_eq!(ed.key(Key::Enter), Outcome::Submit("goodbye".into()));
        // A key that edits takes the match and edits it.
        ed.key(Key::CtrlR);
        ed.key(Key::Char('w'));
        assert_eq!(ed.key(Key::Char('x')), Outcome::Bell);
        assert!(ed.banner().is_some_and(|b| b.contains("failing")));
        ed.key(Key::Backspace);
        assert_eq!(ed.line(), "hello world");
        ed.key(Key::End);
        typed(&mut ed, "!");
        assert_eq!(ed.line(), "hello world!");
        assert_eq!(ed.banner(), None);
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
        assert_eq!(ed.take_edited(), None, "loaded, not entered");
        for i in 0..10 {
            typed(&mut ed, &format!("n{i}"));
            ed.key(Key::Enter);
        }
        assert_eq!(ed.history().len(), HISTORY_LIMIT);
        assert_eq!(ed.take_edited().as_deref(), Some("n9"));
        assert_eq!(ed.take_edited(), None);
    }

    #[test]
    fn line_is_bounded_and_has_no_controls() {
        let mut ed = Editor::new();
        assert_eq!(ed.key(Key::Char('\u{9b}')), Outcome::None);
        assert_eq!(ed.key(Key::Char('\x1b')), Outcome::None);
        let long: String = "y".repeat(MAX_INPUT + 3);
        assert!(matches!(ed.paste(&long), Outcome::Notice(n) if n.contains("the line is full")));
        assert_eq!(ed.line().len(), MAX_INPUT);
        assert_eq!(ed.key(Key::Char('z')), Outcome::Bell);
        ed.key(Key::Backspace);
        ed.key(Key::Char('z'));
        assert!(matches!(ed.key(Key::Char('z')), Outcome::Notice(_)));
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
}
