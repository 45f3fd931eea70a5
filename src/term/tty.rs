//! The interactive terminal: raw mode and its restoration, the window size,
//! and `Screen`, which keeps one input line at the bottom while chat scrolls
//! above it.
//!
//! Raw mode (`RawMode`) is linenoise's, except that output processing
//! (OPOST) stays on, so a stray `\n` still returns the carriage. Input: no
//! ECHO, ICANON, ISIG, IEXTEN, IXON, ICRNL, BRKINT, INPCK, ISTRIP; CS8;
//! VMIN 1, VTIME 0. With ISIG off, Ctrl-C, Ctrl-Z and Ctrl-\ arrive as bytes,
//! not signals; with ICRNL off, Enter arrives as CR. The original termios
//! and file status flags of fd 0 are kept in a process-global copy, so the
//! terminal can be restored from anywhere: the guard's `Drop`, a panic hook,
//! a signal path (`restore_terminal_global`).
//!
//! The "IRC problem" (a message arrives while the user types) is solved the
//! linenoise way: every line goes through `Screen::print`, which erases the
//! input line, prints, and draws the prompt and the input again, in one
//! `write`. Output to the terminal is never dropped: a non-blocking stdout
//! that would block is waited on with `poll`.

use std::io;
use std::os::raw::c_int;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::term::editor::{
    Editor, Key, KeyParser, Outcome, char_width, escape_controls, str_width,
};

struct Saved {
    /// fd 0's termios before raw mode.
    termios: libc::termios,
    /// fd 0's file status flags before raw mode.
    flags: c_int,
    /// Whether raw mode is on now.
    raw: bool,
    /// The flags in effect while raw (the event loop sets O_NONBLOCK),
    /// put back when raw mode is re-entered after a suspension.
    raw_flags: c_int,
}

static SAVED: Mutex<Option<Saved>> = Mutex::new(None);

fn saved() -> MutexGuard<'static, Option<Saved>> {
    // A panic never happens while the lock is held; recover anyway, since
    // restoring the terminal matters most after a panic.
    SAVED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Retries a libc call while it fails with EINTR.
fn cvt(mut f: impl FnMut() -> c_int) -> io::Result<c_int> {
    loop {
        let r = f();
        if r != -1 {
            return Ok(r);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn set_termios(termios: &libc::termios) -> io::Result<()> {
    // SAFETY: a valid fd number and a pointer to an initialised termios.
    cvt(|| unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSADRAIN, termios) }).map(drop)
}

fn get_flags() -> io::Result<c_int> {
    // SAFETY: F_GETFL takes no argument.
    cvt(|| unsafe { libc::fcntl(libc::STDIN_FILENO, libc::F_GETFL) })
}

fn set_flags(flags: c_int) -> io::Result<()> {
    // SAFETY: F_SETFL takes an int.
    cvt(|| unsafe { libc::fcntl(libc::STDIN_FILENO, libc::F_SETFL, flags) }).map(drop)
}

/// fd 0's mode and flags as they are now, to restore later.
fn current_mode() -> io::Result<Saved> {
    // SAFETY: termios is plain data; tcgetattr fills it in.
    let mut termios: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd number and a pointer to a termios.
    cvt(|| unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut termios) })?;
    let flags = get_flags()?;
    Ok(Saved {
        termios,
        flags,
        raw: false,
        raw_flags: flags,
    })
}

fn enter_raw(s: &mut Saved) -> io::Result<()> {
    let mut raw = s.termios;
    raw.c_iflag &= !(libc::BRKINT | libc::ICRNL | libc::INPCK | libc::ISTRIP | libc::IXON);
    raw.c_cflag |= libc::CS8;
    raw.c_lflag &= !(libc::ECHO | libc::ICANON | libc::IEXTEN | libc::ISIG);
    raw.c_cc[libc::VMIN] = 1;
    raw.c_cc[libc::VTIME] = 0;
    set_termios(&raw)?;
    s.raw = true;
    Ok(())
}

/// Puts fd 0 back in the mode and with the file status flags (O_NONBLOCK
/// among them: the file description is shared with the shell) it had before
/// `RawMode::enable`. Does nothing if raw mode is not on, so it may be
/// called any number of times, e.g. from a panic hook and again from the
/// guard's `Drop`. `reenter_raw_mode` undoes it.
///
/// # Errors
///
/// The error of `tcsetattr` or `fcntl`; both are attempted.
pub fn restore_terminal_global() -> io::Result<()> {
    let mut guard = saved();
    let Some(s) = guard.as_mut().filter(|s| s.raw) else {
        return Ok(());
    };
    s.raw = false;
    if let Ok(flags) = get_flags() {
        s.raw_flags = flags;
    }
    let termios = set_termios(&s.termios);
    let flags = set_flags(s.flags);
    termios.and(flags)
}

/// Discards what was typed on the terminal on stdin and not read yet, so
/// that it does not reach the shell after we exit (`tcflush(TCIFLUSH)`).
/// Does nothing when stdin is not a terminal.
pub fn discard_input() {
    // SAFETY: tcflush on fd 0; fails harmlessly (ENOTTY) on a non-terminal.
    unsafe { libc::tcflush(libc::STDIN_FILENO, libc::TCIFLUSH) };
}

/// Re-enters raw mode after `restore_terminal_global` (resuming after a
/// suspension), with the file status flags fd 0 had when it was left.
/// Does nothing without a live `RawMode` or when raw mode is already on.
///
/// # Errors
///
/// The error of `tcsetattr` or `fcntl`.
pub fn reenter_raw_mode() -> io::Result<()> {
    let mut guard = saved();
    let Some(s) = guard.as_mut().filter(|s| !s.raw) else {
        return Ok(());
    };
    enter_raw(s)?;
    set_flags(s.raw_flags)
}

/// Raw mode on fd 0 for as long as the guard lives.
///
/// Create it once, before the event loop makes stdin non-blocking; dropping
/// it (or `restore`) restores the terminal and fd 0's original flags.
#[derive(Debug)]
pub struct RawMode {
    active: bool,
}

impl RawMode {
    /// Saves fd 0's termios and file status flags and switches the terminal
    /// to raw mode.
    ///
    /// # Errors
    ///
    /// The error of `tcgetattr` (ENOTTY when stdin is not a terminal),
    /// `fcntl` or `tcsetattr`.
    pub fn enable() -> io::Result<RawMode> {
        let mut guard = saved();
        let s = match guard.take() {
            Some(s) => s,
            None => current_mode()?,
        };
        enter_raw(guard.insert(s))?;
        Ok(RawMode { active: true })
    }

    /// Restores the terminal now; later calls (and `Drop`) do nothing.
    ///
    /// # Errors
    ///
    /// As `restore_terminal_global`.
    pub fn restore(&mut self) -> io::Result<()> {
        if !std::mem::replace(&mut self.active, false) {
            return Ok(());
        }
        let result = restore_terminal_global();
        *saved() = None;
        discard_input();
        result
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = self.restore();
    }
}

/// The terminal's size as (columns, rows), from TIOCGWINSZ on `fd`;
/// 80x24 when that fails or reports zero.
pub fn winsize(fd: c_int) -> (u16, u16) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize through the pointer.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    if r == -1 || ws.ws_col == 0 {
        return (80, 24);
    }
    (ws.ws_col, if ws.ws_row == 0 { 24 } else { ws.ws_row })
}

/// Writes all of `buf` to `fd`, retrying on EINTR and waiting in `poll`
/// while a non-blocking fd would block.
fn write_all(fd: c_int, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: the pointer and length describe `buf`.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n > 0 {
            buf = &buf[n.unsigned_abs()..];
            continue;
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd. A terminal drains fast; an error
                // or hangup shows up in the next write.
                cvt(|| unsafe { libc::poll(&mut pfd, 1, -1) })?;
            }
            _ => return Err(err),
        }
    }
    Ok(())
}

/// Foreground colours for user names on a 16-colour terminal (SGR
/// parameters): the readable ones, neither black nor white nor grey.
const NAME_COLORS: [&str; 12] = [
    "32", "33", "34", "35", "36", "31", "92", "93", "94", "95", "96", "91",
];

/// Colours for user names on a 256-colour terminal: mid-bright, readable
/// on dark and light backgrounds, far apart from each other.
const NAME_COLORS_256: [u8; 36] = [
    160, 166, 172, 178, 136, 142, 106, 70, 34, 35, 36, 37, 31, 32, 33, 63, 62, 98, 97, 133, 132,
    167, 173, 179, 143, 107, 71, 72, 73, 67, 68, 69, 105, 141, 140, 168,
];

/// Whether the terminal shows 256 colours (`TERM` says so, or `COLORTERM`
/// announces more).
pub fn has_256_colors() -> bool {
    let term = std::env::var("TERM").unwrap_or_default();
    term.contains("256color")
        || std::env::var("COLORTERM").is_ok_and(|c| c == "truecolor" || c == "24bit")
}

fn fnv(name: &str) -> u32 {
    // FNV-1a: stable, unlike std's randomly keyed hasher; then murmur3's
    // finaliser, so that every bit counts in a small modulus.
    let mut h = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The colour for `name`: an SGR parameter string for `Screen::paint`,
/// the same for the same name in every run and on every peer.
pub fn name_color(name: &str, colors256: bool) -> String {
    let hash = fnv(name) as usize;
    if colors256 {
        format!("38;5;{}", NAME_COLORS_256[hash % NAME_COLORS_256.len()])
    } else {
        NAME_COLORS[hash % NAME_COLORS.len()].to_owned()
    }
}

/// The local time as `HH:MM` (`--:--` if it cannot be had).
pub fn clock() -> String {
    stamp(now_secs(), now_secs())
}

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Broken-down local time.
fn local(t: i64) -> Option<libc::tm> {
    let t = t as libc::time_t;
    // SAFETY: localtime_r reads `t` and fills in `tm`.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        (!libc::localtime_r(&t, &mut tm).is_null()).then_some(tm)
    }
}

/// When something was said (`at`, seconds since the epoch) as the terminal
/// shows it: `HH:MM` on the day it is `now`, `YYYY-MM-DD HH:MM` otherwise.
pub fn stamp(at: i64, now: i64) -> String {
    let (Some(tm), Some(today)) = (local(at), local(now)) else {
        return "--:--".to_owned();
    };
    let hm = format!("{:02}:{:02}", tm.tm_hour, tm.tm_min);
    if (tm.tm_year, tm.tm_yday) == (today.tm_year, today.tm_yday) {
        hm
    } else {
        format!(
            "{}-{:02}-{:02} {hm}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday
        )
    }
}

/// `YYYY-MM-DD HH:MM:SS`, local time, for logs and `--timestamps`.
pub fn long_stamp(at: i64) -> String {
    match local(at) {
        Some(tm) => format!(
            "{}-{:02}-{:02} {:02}:{:02}:{:02}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        ),
        None => "----------- --:--:--".to_owned(),
    }
}

/// Terminal columns of `s`, skipping the CSI sequences (colours) in it.
fn visible_width(s: &str) -> usize {
    let mut width = 0;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.next() == Some('[') {
                chars.by_ref().find(|c| ('@'..='~').contains(c));
            }
        } else {
            width += crate::term::editor::char_width(c);
        }
    }
    width
}

/// Columns the input itself gets at least, before the prompt is shortened.
const MIN_INPUT: usize = 10;

/// `text` cut into rows: the first at most `first` columns wide, the
/// others `rest`, broken after white space where there is some (the space
/// at a break is dropped), never inside a grapheme cluster.
pub fn wrap(text: &str, first: usize, rest: usize) -> Vec<String> {
    use unicode_segmentation::UnicodeSegmentation;
    let mut rows = Vec::new();
    let mut row = String::new();
    let mut used = 0;
    let mut width = first.max(1);
    // Byte offset in `row` of its last space.
    let mut space: Option<usize> = None;
    for g in text.graphemes(true) {
        let w = str_width(g);
        if used + w > width && !row.is_empty() {
            width = rest.max(1);
            if g == " " {
                rows.push(std::mem::take(&mut row));
                used = 0;
                space = None;
                continue;
            }
            match space.take() {
                Some(i) if i > 0 => {
                    let tail = row.split_off(i);
                    rows.push(std::mem::replace(&mut row, tail[1..].to_owned()));
                    used = str_width(&row);
                }
                _ => {
                    rows.push(std::mem::take(&mut row));
                    used = 0;
                }
            }
        }
        if g == " " {
            space = Some(row.len());
        }
        row.push_str(g);
        used += w;
    }
    rows.push(row);
    rows
}

/// The interactive UI: chat lines scroll above one input line drawn at the
/// bottom as a prompt plus the visible part of the line being edited.
///
/// Everything printed while the input line is shown must go through
/// `print`. Methods that write return the write error (EIO once the
/// terminal is gone); output is never dropped because the terminal would
/// block.
#[derive(Debug)]
pub struct Screen {
    editor: Editor,
    keys: KeyParser,
    /// The terminal: fd 1, or a descriptor of its own when stdout is not
    /// the terminal.
    fd: c_int,
    /// The prompt, then shorter forms of it for narrower terminals.
    prompts: Vec<String>,
    /// Colours (off with `NO_COLOR`).
    color: bool,
    /// 256 colours for names.
    colors256: bool,
    /// Escape sequences at all (off with `TERM=dumb`).
    escapes: bool,
    cols: usize,
    /// Whether the input line is on the screen (not hidden).
    shown: bool,
    /// Columns the input line took when last drawn without escapes.
    drawn: usize,
    /// The cursor's column when the input line was last drawn.
    cursor_col: usize,
}

impl Screen {
    /// A screen on the ANSI terminal `fd`, with colours if `color`. The
    /// input line is not drawn until `redraw`. `prompts` is the prompt and
    /// shorter forms of it, longest first.
    pub fn new(fd: c_int, prompts: Vec<String>, color: bool) -> Screen {
        let mut s = Screen::with_width(prompts, color, true, usize::from(winsize(fd).0));
        s.fd = fd;
        s.colors256 = color && has_256_colors();
        s
    }

    /// A screen for a terminal without escape sequences (`TERM=dumb`): the
    /// input line is redrawn with `\r` and spaces only, and there is no
    /// colour.
    pub fn new_dumb(fd: c_int, prompts: Vec<String>) -> Screen {
        let mut s = Screen::with_width(prompts, false, false, usize::from(winsize(fd).0));
        s.fd = fd;
        s
    }

    fn with_width(prompts: Vec<String>, color: bool, escapes: bool, cols: usize) -> Screen {
        Screen {
            editor: Editor::new(),
            keys: KeyParser::new(),
            fd: libc::STDOUT_FILENO,
            prompts,
            color,
            colors256: false,
            escapes,
            cols,
            shown: false,
            drawn: 0,
            cursor_col: 0,
        }
    }

    /// The terminal's descriptor.
    pub fn fd(&self) -> c_int {
        self.fd
    }

    /// The line editor (line, cursor, history).
    pub fn editor(&self) -> &Editor {
        &self.editor
    }

    /// The line editor, e.g. to `set_history`.
    pub fn editor_mut(&mut self) -> &mut Editor {
        &mut self.editor
    }

    /// Whether colours are on.
    pub fn color(&self) -> bool {
        self.color
    }

    /// Whether escape sequences are allowed at all.
    pub fn escapes(&self) -> bool {
        self.escapes
    }

    /// The colour of `name`'s name (see `name_color`).
    pub fn name_color(&self, name: &str) -> String {
        name_color(name, self.colors256)
    }

    /// `text` in the colour `sgr` (SGR parameters such as `"32"` or
    /// `name_color(name)`), or `text` unchanged when colours are off.
    pub fn paint(&self, sgr: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{sgr}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// `text` in the style `sgr` (bold, dim, reverse video: not colours,
    /// so kept with `NO_COLOR`), or unchanged without escape sequences.
    pub fn style(&self, sgr: &str, text: &str) -> String {
        if self.escapes {
            format!("\x1b[{sgr}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// Prints one line above the input line. `line` must be safe for the
    /// terminal: untrusted text goes through `editor::escape_controls`
    /// before the caller adds colours.
    ///
    /// # Errors
    ///
    /// The error writing to the terminal.
    pub fn print(&mut self, line: &str) -> io::Result<()> {
        let mut out = String::new();
        self.compose_print(line, &mut out);
        write_all(self.fd, out.as_bytes())
    }

    /// Prints a message: `prefix` (time and name, coloured) and `body`
    /// (safe text, as for `print`), in the style `body_style` if any,
    /// wrapped at the terminal's width with the rows after the first
    /// indented under the body's start.
    ///
    /// # Errors
    ///
    /// The error writing to the terminal.
    pub fn print_message(
        &mut self,
        prefix: &str,
        body: &str,
        body_style: Option<&str>,
    ) -> io::Result<()> {
        let indent = visible_width(prefix);
        let (first, indent) = if indent * 2 <= self.cols {
            (self.cols - indent, indent)
        } else {
            (self.cols.saturating_sub(indent), 0)
        };
        let rows = wrap(body, first, self.cols - indent);
        let paint = |row: &str| match body_style {
            Some(sgr) if !row.is_empty() => self.style(sgr, row),
            _ => row.to_owned(),
        };
        let mut text = format!("{prefix}{}", paint(&rows[0]));
        for row in &rows[1..] {
            text.push_str("\r\n");
            push_spaces(&mut text, indent);
            text.push_str(&paint(row));
        }
        self.print(&text)
    }

    /// Feeds bytes read from the terminal through the key parser and the
    /// editor, redraws, and returns what the caller must act on: `Submit`
    /// and `SubmitText` (print the lines yourself with `print`), `Quit`
    /// and `Suspend`. Redraws, Ctrl-L, notices and the bell are handled
    /// here.
    ///
    /// If `has_pending_input` is then true (a lone ESC, say), call
    /// `flush_pending_input` when no more input came within ~50 ms.
    ///
    /// # Errors
    ///
    /// The error writing to the terminal.
    pub fn feed(&mut self, bytes: &[u8]) -> io::Result<Vec<Outcome>> {
        let mut keys = Vec::new();
        self.keys.feed(bytes, &mut keys);
        self.apply(keys)
    }

    /// Whether input bytes are waiting to complete a key.
    pub fn has_pending_input(&self) -> bool {
        self.keys.has_pending()
    }

    /// Takes waiting input bytes as they are (a lone ESC is the Escape key,
    /// and ignored); see `feed`.
    ///
    /// # Errors
    ///
    /// The error writing to the terminal.
    pub fn flush_pending_input(&mut self) -> io::Result<Vec<Outcome>> {
        let mut keys = Vec::new();
        self.keys.flush_pending(&mut keys);
        self.apply(keys)
    }

    /// Draws the prompt and the input line (again), and shows it if hidden.
    ///
    /// # Errors
    ///
    /// The error writing to the terminal.
    pub fn redraw(&mut self) -> io::Result<()> {
        let mut out = String::new();
        self.shown = true;
        self.compose_line(&mut out);
        write_all(self.fd, out.as_bytes())
    }

    /// Reads the terminal width again (after SIGWINCH) and redraws.
    ///
    /// # Errors
    ///
    /// The error writing to the terminal.
    pub fn resize(&mut self) -> io::Result<()> {
        let cols = usize::from(winsize(self.fd).0);
        let narrower = cols < self.cols;
        self.cols = cols;
        if !self.shown {
            return Ok(());
        }
        if narrower && self.escapes && cols > 0 {
            // Most terminals re-wrap the old, longer input line onto more
            // rows: go up to its first row and clear from there.
            let up = self.cursor_col / cols;
            let mut out = String::new();
            if up > 0 {
                out.push_str(&format!("\x1b[{up}A"));
            }
            out.push_str("\r\x1b[J");
            write_all(self.fd, out.as_bytes())?;
        }
        self.redraw()
    }

    /// Changes the prompt and its shorter forms (e.g. after changing
    /// rooms) and redraws.
    ///
    /// # Errors
    ///
    /// The error writing to the terminal.
    pub fn set_prompt(&mut self, prompts: Vec<String>) -> io::Result<()> {
        self.prompts = prompts;
        if self.shown { self.redraw() } else { Ok(()) }
    }

    /// Clears the screen (Ctrl-L) and redraws the input line at the top.
    ///
    /// # Errors
    ///
    /// The error writing to the terminal.
    pub fn clear_screen(&mut self) -> io::Result<()> {
        let mut out = String::new();
        self.compose_clear_screen(&mut out);
        write_all(self.fd, out.as_bytes())
    }

    /// Erases the input line, e.g. before exiting or suspending; `print`
    /// then prints without redrawing it, until `redraw`.
    ///
    /// # Errors
    ///
    /// The error writing to the terminal.
    pub fn hide(&mut self) -> io::Result<()> {
        if !self.shown {
            return Ok(());
        }
        let mut out = String::new();
        self.compose_erase(&mut out);
        self.shown = false;
        write_all(self.fd, out.as_bytes())
    }

    /// Rings the terminal bell.
    ///
    /// # Errors
    ///
    /// The error writing to the terminal.
    pub fn bell(&mut self) -> io::Result<()> {
        write_all(self.fd, b"\x07")
    }

    /// Asks the terminal to mark pasted text (bracketed paste), or to stop.
    pub fn paste_mode(&mut self, on: bool) {
        if self.escapes {
            let seq: &[u8] = if on { b"\x1b[?2004h" } else { b"\x1b[?2004l" };
            let _ = write_all(self.fd, seq);
        }
    }

    /// Hides the input line and restores the terminal's own mode, before
    /// the caller stops the process (`raise(SIGSTOP)`).
    ///
    /// # Errors
    ///
    /// The error writing to the terminal or restoring it.
    pub fn suspend(&mut self) -> io::Result<()> {
        let hidden = self.hide();
        restore_terminal_global().and(hidden)
    }

    /// Returns to raw mode after a suspension (SIGCONT), reads the width
    /// again and redraws.
    ///
    /// # Errors
    ///
    /// The error entering raw mode or writing to the terminal.
    pub fn resume(&mut self) -> io::Result<()> {
        reenter_raw_mode()?;
        self.cols = usize::from(winsize(self.fd).0);
        self.redraw()
    }

    fn apply(&mut self, keys: Vec<Key>) -> io::Result<Vec<Outcome>> {
        let mut out = String::new();
        let mut actions = Vec::new();
        let mut dirty = false;
        for key in keys {
            match self.editor.key(key) {
                Outcome::None => continue,
                Outcome::Redraw => {}
                Outcome::Bell => out.push('\x07'),
                Outcome::ClearScreen if self.escapes => out.push_str("\x1b[H\x1b[2J"),
                Outcome::ClearScreen => {}
                Outcome::Notice(n) => {
                    let line = self.style("2", &format!("* {}", escape_controls(&n)));
                    if self.shown {
                        self.compose_erase(&mut out);
                    }
                    out.push_str(&line);
                    out.push_str("\r\n");
                }
                action => actions.push(action),
            }
            dirty = true;
        }
        if dirty && self.shown {
            self.compose_line(&mut out);
        }
        if !out.is_empty() {
            write_all(self.fd, out.as_bytes())?;
        }
        Ok(actions)
    }

    fn compose_print(&mut self, line: &str, out: &mut String) {
        if self.shown {
            self.compose_erase(out);
        }
        out.push_str(line);
        out.push_str("\r\n");
        if self.shown {
            self.compose_line(out);
        }
    }

    fn compose_clear_screen(&mut self, out: &mut String) {
        if self.escapes {
            out.push_str("\x1b[H\x1b[2J");
        } else {
            self.compose_erase(out);
        }
        if self.shown {
            self.compose_line(out);
        }
    }

    /// Erases the input line, leaving the cursor in column 0.
    fn compose_erase(&mut self, out: &mut String) {
        if self.escapes {
            out.push_str("\r\x1b[K");
        } else {
            out.push('\r');
            push_spaces(out, self.drawn);
            out.push('\r');
            self.drawn = 0;
        }
    }

    /// The prompt to draw at this width: the longest form that leaves
    /// `MIN_INPUT` columns for the input (the shortest one if none does,
    /// nothing if not even that leaves two), with the editor's banner (a
    /// search, a held paste) after it, cut to fit.
    fn prompt(&self) -> String {
        let fits = |w: usize| w + MIN_INPUT < self.cols;
        let mut prompt = self
            .prompts
            .iter()
            .find(|p| fits(visible_width(p)))
            .or(self.prompts.last())
            .cloned()
            .unwrap_or_default();
        if visible_width(&prompt) + 2 > self.cols {
            prompt.clear();
        }
        if let Some((long, short)) = self.editor.banners() {
            let left = self.cols.saturating_sub(visible_width(&prompt));
            let banner = if visible_width(&long) + MIN_INPUT < left {
                long
            } else {
                short
            };
            let room = self
                .cols
                .saturating_sub(visible_width(&prompt) + MIN_INPUT.min(self.cols / 2) + 1);
            let mut used = 0;
            let cut: String = banner
                .chars()
                .take_while(|&c| {
                    used += char_width(c);
                    used <= room
                })
                .collect();
            prompt.push_str(&self.style("1", &cut));
        }
        prompt
    }

    /// Draws the prompt and the visible part of the input line, and puts
    /// the cursor on the editor's cursor.
    fn compose_line(&mut self, out: &mut String) {
        let prompt = self.prompt();
        let prompt_cols = visible_width(&prompt);
        let (text, col) = self.editor.render(prompt_cols, self.cols);
        out.push('\r');
        out.push_str(&prompt);
        out.push_str(&text);
        if self.escapes {
            out.push_str("\x1b[K\r");
            if prompt_cols + col > 0 {
                out.push_str(&format!("\x1b[{}C", prompt_cols + col));
            }
            self.cursor_col = prompt_cols + col;
        } else {
            // Blank what the last drawing left, then write the part before
            // the cursor again to leave the cursor there.
            let width = prompt_cols + str_width(&text);
            push_spaces(out, self.drawn.saturating_sub(width));
            out.push('\r');
            out.push_str(&prompt);
            let mut left = col;
            for c in text.chars() {
                let w = crate::term::editor::char_width(c);
                if w > left {
                    break;
                }
                left -= w;
                out.push(c);
            }
            self.drawn = width;
        }
    }
}

fn push_spaces(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompts() -> Vec<String> {
        ["[lobby] al> ", "al> ", "> "].map(str::to_owned).to_vec()
    }

    fn screen(escapes: bool, cols: usize) -> Screen {
        let mut s = Screen::with_width(prompts(), false, escapes, cols);
        s.shown = true;
        s
    }

    fn typed(s: &mut Screen, text: &str) {
        for c in text.chars() {
            s.editor.key(Key::Char(c));
        }
    }

    fn line(s: &mut Screen) -> String {
        let mut out = String::new();
        s.compose_line(&mut out);
        out
    }

    #[test]
    fn draws_prompt_line_and_cursor() {
        let mut s = screen(true, 80);
        assert_eq!(line(&mut s), "\r[lobby] al> \x1b[K\r\x1b[12C");
        typed(&mut s, "hi 你好");
        s.editor.key(Key::Left);
        assert_eq!(line(&mut s), "\r[lobby] al> hi 你好\x1b[K\r\x1b[17C");
    }

    #[test]
    fn scrolls_long_input() {
        let mut s = screen(true, 30);
        typed(&mut s, "abcdefghijklmnopqrstuvwxyz");
        // 30 columns - 12 of prompt - 1 free = 17 for the input.
        assert_eq!(
            line(&mut s),
            "\r[lobby] al> jklmnopqrstuvwxyz\x1b[K\r\x1b[29C"
        );
        s.editor.key(Key::Home);
        assert_eq!(
            line(&mut s),
            "\r[lobby] al> abcdefghijklmnopq\x1b[K\r\x1b[12C"
        );
    }

    #[test]
    fn narrow_terminals_keep_a_shorter_prompt() {
        let mut s = screen(true, 20);
        typed(&mut s, "ab");
        assert_eq!(line(&mut s), "\ral> ab\x1b[K\r\x1b[6C");
        let mut s = screen(true, 10);
        typed(&mut s, "ab");
        assert_eq!(line(&mut s), "\r> ab\x1b[K\r\x1b[4C");
        let mut s = screen(true, 3);
        typed(&mut s, "ab");
        assert_eq!(line(&mut s), "\rab\x1b[K\r\x1b[2C");
    }

    #[test]
    fn banner_shortens_on_narrow_terminals() {
        let mut s = screen(true, 60);
        s.editor.key(Key::Paste("one\ntwo\nthree".into()));
        assert_eq!(
            line(&mut s),
            "\r[lobby] al> \x1b[1m[3 lines] \x1b[0mone\x1b[K\r\x1b[22C"
        );
    }

    #[test]
    fn banner_goes_after_the_prompt() {
        let mut s = screen(true, 80);
        s.editor.key(Key::Paste("one\ntwo\nthree".into()));
        assert_eq!(
            line(&mut s),
            "\r[lobby] al> \x1b[1m[3 lines pasted: Enter sends, Ctrl-C drops] \x1b[0mone\x1b[K\r\x1b[56C"
        );
    }

    #[test]
    fn wraps_at_spaces_under_the_text() {
        assert_eq!(wrap("hello big world", 10, 8), ["hello big", "world"]);
        assert_eq!(wrap("abcdefghij", 4, 3), ["abcd", "efg", "hij"]);
        assert_eq!(wrap("", 4, 4), [""]);
        assert_eq!(wrap("a  b", 2, 2), ["a ", "b"]);
        // Never inside a cluster, and by display width.
        assert_eq!(wrap("你好世界", 5, 5), ["你好", "世界"]);
        assert_eq!(
            wrap("e\u{301}e\u{301}e\u{301}", 2, 2),
            ["e\u{301}e\u{301}", "e\u{301}"]
        );
        let mut s = screen(true, 20);
        s.shown = false;
        let mut out = String::new();
        let prefix = "12:00 bob: "; // 11 columns: more than half, no indent
        let rows = wrap("one two three four", 20 - 11, 20);
        assert_eq!(rows, ["one two", "three four"]);
        s.compose_print(prefix, &mut out);
        assert!(out.starts_with(prefix));
    }

    #[test]
    fn print_erases_prints_and_redraws() {
        let mut s = screen(true, 80);
        typed(&mut s, "draft");
        let mut out = String::new();
        s.compose_print("bob: hello", &mut out);
        assert_eq!(
            out,
            "\r\x1b[Kbob: hello\r\n\r[lobby] al> draft\x1b[K\r\x1b[17C"
        );
        s.shown = false;
        let mut out = String::new();
        s.compose_print("bye", &mut out);
        assert_eq!(out, "bye\r\n");
    }

    #[test]
    fn dumb_terminal_gets_no_escapes() {
        let mut s = screen(false, 80);
        typed(&mut s, "hello");
        s.editor.key(Key::Left);
        assert_eq!(line(&mut s), "\r[lobby] al> hello\r[lobby] al> hell");
        s.editor.key(Key::CtrlU);
        assert_eq!(line(&mut s), "\r[lobby] al> o    \r[lobby] al> ");
        let mut out = String::new();
        s.compose_print("x", &mut out);
        assert_eq!(
            out,
            format!("\r{}\rx\r\n\r[lobby] al> o\r[lobby] al> ", " ".repeat(13))
        );
        let mut out = String::new();
        s.compose_clear_screen(&mut out);
        assert!(!out.contains('\x1b'));
    }

    #[test]
    fn prompt_colours_do_not_count() {
        let s = Screen::with_width(
            vec!["\x1b[1m[lobby]\x1b[0m al> ".to_owned()],
            true,
            true,
            80,
        );
        assert_eq!(visible_width(&s.prompt()), 12);
        assert_eq!(visible_width("你\x1b[38;5;12mx"), 3);
    }

    #[test]
    fn paint_only_with_colour_style_without_no_color() {
        let plain = screen(true, 80);
        assert_eq!(plain.paint("1;32", "alice"), "alice");
        assert_eq!(plain.style("7", "alice"), "\x1b[7malice\x1b[0m");
        let colored = Screen::with_width(vec![], true, true, 80);
        assert_eq!(colored.paint("1;32", "alice"), "\x1b[1;32malice\x1b[0m");
        let dumb = screen(false, 80);
        assert_eq!(dumb.style("7", "alice"), "alice");
    }

    #[test]
    fn name_colours_are_stable_and_many() {
        assert_eq!(name_color("alice", false), name_color("alice", false));
        assert_eq!(name_color("alice", true), name_color("alice", true));
        assert!(name_color("alice", true).starts_with("38;5;"));
        // Typical group sizes get mostly distinct colours.
        let names: Vec<String> = [
            "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
        ]
        .map(str::to_owned)
        .to_vec();
        for (colors256, at_least) in [(false, 6), (true, 7)] {
            let distinct: std::collections::HashSet<_> =
                names.iter().map(|n| name_color(n, colors256)).collect();
            assert!(distinct.len() >= at_least, "{colors256}: {distinct:?}");
        }
    }

    #[test]
    fn stamps_show_the_date_when_not_today() {
        let now = now_secs();
        assert_eq!(stamp(now, now), clock());
        let long_ago = stamp(now - 400 * 86_400, now);
        assert_eq!(long_ago.len(), "2025-01-02 03:04".len(), "{long_ago}");
        assert!(long_ago.ends_with(&stamp(now - 400 * 86_400, now - 400 * 86_400)));
        assert_eq!(long_stamp(now).len(), "2025-01-02 03:04:05".len());
    }

    #[test]
    fn clock_is_hh_mm() {
        let t = clock();
        let b = t.as_bytes();
        assert_eq!(b.len(), 5);
        assert!(
            b[2] == b':'
                && b.iter()
                    .enumerate()
                    .all(|(i, c)| i == 2 || c.is_ascii_digit())
        );
    }

    #[test]
    fn restore_without_raw_mode_is_harmless() {
        assert!(restore_terminal_global().is_ok());
        assert!(reenter_raw_mode().is_ok());
    }
}
