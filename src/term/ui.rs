//! Rendering events for the user: the interactive terminal, plain lines,
//! JSON lines, and the chat log.
//!
//! The terminal (`Term`) is there whenever stdin is a terminal: the line
//! editor runs on it, and chat scrolls above the input line. It is stdout
//! when stdout is the terminal, or the terminal opened anew when stdout is
//! a pipe or a file; then stdout gets plain (or JSON) lines as well, for a
//! log or a script. Without a terminal on stdin, stdout gets plain or JSON
//! lines only. Stdout lines go through a bounded queue (`output::Out`)
//! that the event loop writes without blocking.
//!
//! Every piece of text that came from the network passes through
//! [`escape_controls`] first: a peer can never send escape sequences to our
//! terminal.

use crate::app::{LOBBY, MemberView, MsgId, Reach, RoomView, Show};
use crate::command;
use crate::term::editor::{self, escape_controls};
use crate::term::history;
use crate::term::output::Out;
use crate::term::tty::{self, RawMode, Screen};
use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// The interactive terminal: raw mode, the screen, and the history file.
pub struct Term {
    pub screen: Screen,
    /// Our name, to highlight mentions of it.
    name: String,
    history: Option<PathBuf>,
    /// The history file could not be written (said once).
    history_failed: bool,
    raw: RawMode,
    /// The terminal opened anew when stdout is not the terminal.
    _tty: Option<File>,
}

impl Term {
    /// Puts the terminal on stdin in raw mode and draws the prompt, on
    /// stdout if `stdout_is_tty`, else on the terminal opened anew. Colour
    /// as `color` says, or unless `NO_COLOR` is set (and not empty); no
    /// escape sequences at all with `TERM=dumb`.
    ///
    /// # Errors
    ///
    /// Opening the terminal, raw mode, drawing.
    pub fn start(name: &str, stdout_is_tty: bool, color: Option<bool>) -> io::Result<Term> {
        let tty = if stdout_is_tty {
            None
        } else {
            Some(open_tty()?)
        };
        let fd = tty.as_ref().map_or(libc::STDOUT_FILENO, |f| f.as_raw_fd());
        let raw = RawMode::enable()?;
        let prompts = prompts(name);
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let mut screen = if dumb {
            Screen::new_dumb(fd, prompts)
        } else {
            Screen::new(fd, prompts, color.unwrap_or(!no_color))
        };
        let history = history::path();
        if let Some(p) = &history {
            screen.editor_mut().set_history(history::load(p));
        }
        screen.paste_mode(true);
        screen.redraw()?;
        Ok(Term {
            screen,
            name: name.to_owned(),
            history,
            history_failed: false,
            raw,
            _tty: tty,
        })
    }

    /// We go by `name` now (`:nick`): the prompt and mentions follow.
    fn rename(&mut self, name: &str) {
        name.clone_into(&mut self.name);
        let _ = self.screen.set_prompt(prompts(name));
    }

    /// Appends what was just entered to the history file; a failure is
    /// told once.
    pub fn save_history(&mut self) {
        let Some(entry) = self.screen.editor_mut().take_edited() else {
            return;
        };
        let (Some(p), false) = (&self.history, self.history_failed) else {
            return;
        };
        if let Err(e) = history::append(p, &entry) {
            self.history_failed = true;
            let msg = format!("p2pchat: history {}: {e}", p.display());
            let l = self.screen.paint(ERROR, &escape_controls(&msg));
            let _ = self.screen.print(&l);
        }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.screen.hide();
        self.screen.paste_mode(false);
        let _ = self.raw.restore();
    }
}

/// The terminal that stdin is, opened for writing.
/// The prompt for `name`, then shorter forms of it for narrower terminals.
fn prompts(name: &str) -> Vec<String> {
    vec![
        format!("[{LOBBY}] {name}> "),
        format!("{name}> "),
        "> ".to_owned(),
    ]
}

fn open_tty() -> io::Result<File> {
    let mut buf = [0 as libc::c_char; 256];
    // SAFETY: ttyname_r writes a NUL-terminated name into `buf`.
    let path = if unsafe { libc::ttyname_r(0, buf.as_mut_ptr(), buf.len()) } == 0 {
        // SAFETY: NUL-terminated by ttyname_r.
        let c = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
        PathBuf::from(c.to_string_lossy().into_owned())
    } else {
        PathBuf::from("/dev/tty")
    };
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
}

/// Whether `fd` is a terminal.
pub fn isatty(fd: libc::c_int) -> bool {
    // SAFETY: isatty takes any descriptor number.
    unsafe { libc::isatty(fd) == 1 }
}

/// Whether stdin and stdout are both terminals.
pub fn interactive() -> bool {
    isatty(0) && isatty(1)
}

/// The form of stdout lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Plain,
    Json,
}

/// Where events go: the terminal, stdout lines, the chat log.
pub struct Ui {
    /// The line editor and the chat on the terminal, if stdin is one.
    pub term: Option<Box<Term>>,
    /// Lines for stdout, unless stdout is the terminal.
    out: Option<Out>,
    format: Format,
    /// Plain lines start with the date and time.
    timestamps: bool,
    log: Option<ChatLog>,
    /// Where others can reach us: for `:who` when the network has not told
    /// us, and the line that says how to join.
    addrs: Vec<IpAddr>,
    port: u16,
    /// Buffers kept from one line to the next: a line, and the text of
    /// lines for stdout (no allocation per line shown).
    line: String,
    text: String,
}

impl Ui {
    /// A terminal (if any) and, unless `term` is on stdout, stdout lines.
    pub fn new(term: Option<Box<Term>>, stdout_lines: bool, format: Format) -> Ui {
        Ui {
            term,
            out: stdout_lines.then(Out::stdout),
            format,
            timestamps: false,
            log: None,
            addrs: Vec::new(),
            port: 0,
            line: String::new(),
            text: String::new(),
        }
    }

    /// Plain lines start with `YYYY-MM-DD HH:MM:SS `.
    pub fn set_timestamps(&mut self, on: bool) {
        self.timestamps = on;
    }

    /// Keeps chat logs in `dir` (`$XDG_STATE_HOME/p2pchat/logs`).
    pub fn set_log(&mut self, dir: Option<PathBuf>) {
        self.log = dir.map(ChatLog::new);
    }

    /// Whether our own lines are shown: on a terminal, in JSON, in a chat
    /// log (plain lines do not show them).
    pub fn shows_own(&self) -> bool {
        self.term.is_some() || self.format != Format::Plain || self.log.is_some()
    }

    /// The stdout queue, if stdout gets lines.
    pub fn out(&mut self) -> Option<&mut Out> {
        self.out.as_mut()
    }

    /// Whether stdin input is JSON objects (`--json`, no terminal).
    pub fn json_input(&self) -> bool {
        self.term.is_none() && self.format == Format::Json
    }

    fn push_plain(&mut self, lines: &[String], now: i64) {
        self.push_lines(lines.iter().map(String::as_str), now);
    }

    fn push_lines<'a>(&mut self, lines: impl IntoIterator<Item = &'a str>, now: i64) {
        let Some(o) = &mut self.out else {
            return;
        };
        let prefix = self.timestamps.then(|| tty::long_stamp(now));
        let text = &mut self.text;
        text.clear();
        for l in lines {
            if let Some(p) = &prefix {
                text.push_str(p);
                text.push(' ');
            }
            text.push_str(l);
            text.push('\n');
        }
        o.push(text);
    }

    fn push_json(&mut self, kind: &str, fields: &str, now_ms: i64) {
        if let Some(o) = &mut self.out {
            let text = &mut self.text;
            text.clear();
            let _ = writeln!(text, "{{\"type\":\"{kind}\",\"time\":{now_ms}{fields}}}");
            o.push(text);
        }
    }

    /// The first lines: where we listen and how others join (`addrs`:
    /// this machine's addresses).
    pub fn listening(&mut self, port: u16, addrs: Vec<IpAddr>) {
        self.port = port;
        self.addrs = addrs;
        let first = self
            .addrs
            .first()
            .map_or("HOST".to_owned(), |a| a.to_string());
        let mut invite = format!("* others join with: p2pchat NAME {first} {port}");
        if self.addrs.len() > 1 {
            let more: Vec<String> = self.addrs[1..].iter().map(IpAddr::to_string).collect();
            let _ = write!(invite, " (or {})", more.join(", "));
        }
        let (now, ms) = (tty::now_secs(), now_ms());
        if let Some(t) = &mut self.term {
            let s = &mut t.screen;
            for l in [format!("* listening on port {port}"), invite.clone()] {
                let l = s.style(NOTICE, &l);
                let _ = s.print(&l);
            }
        }
        match self.format {
            Format::Plain => self.push_plain(&[format!("listening on port {port}"), invite], now),
            Format::Json => {
                let addrs: Vec<String> = self.addrs.iter().map(|a| format!("\"{a}\"")).collect();
                let fields = format!(",\"port\":{port},\"addrs\":[{}]", addrs.join(","));
                self.push_json("listening", &fields, ms);
            }
        }
    }

    /// Where the IRC gateway listens (`irc on 127.0.0.1:6667`).
    pub fn irc_listening(&mut self, addr: SocketAddr) {
        let (now, ms) = (tty::now_secs(), now_ms());
        if let Some(t) = &mut self.term {
            let l = t.screen.style(NOTICE, &format!("* irc on {addr}"));
            let _ = t.screen.print(&l);
        }
        match self.format {
            Format::Plain => self.push_plain(&[format!("irc on {addr}")], now),
            Format::Json => self.push_json("irc", &format!(",\"addr\":\"{addr}\""), ms),
        }
    }

    /// Shows one event from the core.
    pub fn show(&mut self, ev: &Show) {
        if let Show::Error(e) = ev {
            return self.error(e);
        }
        if let (Show::Here(room), Some(t)) = (ev, &mut self.term) {
            let name = &t.name;
            let prompts = vec![
                format!("[{room}] {name}> "),
                format!("{name}> "),
                "> ".to_owned(),
            ];
            let _ = t.screen.set_prompt(prompts);
        }
        let now_ms = now_ms();
        let now = now_ms.div_euclid(1000);
        // Never later than now: a sender's clock may be ahead of ours.
        let said_ms = said_at(ev).map(|t| t.min(now_ms));
        let at = said_ms.map_or(now, |t| t.div_euclid(1000));
        let filled = self.fill_in_self(ev);
        let ev = filled.as_ref().unwrap_or(ev);
        if let (Some(t), Show::Renamed { new, own: true, .. }) = (&mut self.term, ev) {
            t.rename(new);
        }
        if let Some(log) = &mut self.log
            && let Some(room) = log_room(ev)
            && let Err(e) = log.write(room, &plain_for_log(ev), at)
        {
            let msg = format!("chat log: {e}; logging stops");
            self.log = None;
            self.error(&msg);
        }
        if let Some(t) = &mut self.term {
            tty(&mut t.screen, &t.name, ev, at, now);
        }
        match self.format {
            // Without a terminal, a warning in plain lines is a diagnostic,
            // on stderr; with one, it was shown there.
            Format::Plain if let Show::Warning(w) = ev => {
                if self.term.is_none() {
                    self.stderr(w);
                }
            }
            Format::Plain => {
                // A chat line, the most common by far, is built in place.
                let mut line = std::mem::take(&mut self.line);
                line.clear();
                if plain_line(ev, &mut line) {
                    self.push_lines([line.as_str()], at);
                } else {
                    self.push_plain(&plain(ev), at);
                }
                self.line = line;
            }
            Format::Json => {
                let (kind, fields) = json(ev);
                self.push_json(kind, &fields, said_ms.unwrap_or(now_ms));
            }
        }
    }

    /// Our own row of `:who` and `:who ROOM` with the addresses we listen
    /// on, when the network has not told us the one it sees (`None`: any
    /// other event, shown as it is, not copied).
    fn fill_in_self(&self, ev: &Show) -> Option<Show> {
        if !matches!(ev, Show::Members(_) | Show::RoomMembers { .. }) {
            return None;
        }
        let mut ev = ev.clone();
        let (Show::Members(v) | Show::RoomMembers { members: v, .. }) = &mut ev else {
            return None;
        };
        for m in v
            .iter_mut()
            .filter(|m| m.reach == Reach::Me && m.addr.is_none())
        {
            m.addr = self.addrs.first().map(|&a| SocketAddr::new(a, self.port));
        }
        Some(ev)
    }

    /// The `:help` text.
    pub fn help(&mut self) {
        let lines = command::help();
        if let Some(t) = &mut self.term {
            for h in &lines {
                let l = t.screen.style(NOTICE, &format!("* {h}"));
                let _ = t.screen.print(&l);
            }
        }
        let (now, ms) = (tty::now_secs(), now_ms());
        match self.format {
            Format::Plain => {
                let lines: Vec<String> = lines.iter().map(|h| format!("* {h}")).collect();
                self.push_plain(&lines, now);
            }
            Format::Json => {
                for h in &lines {
                    self.push_json("help", &format!(",\"text\":{}", Js(h)), ms);
                }
            }
        }
    }

    /// A diagnostic: on the terminal above the input line, as a JSON
    /// `error` event, or on stderr. It may quote a peer (a refusal's text),
    /// so it is escaped like chat.
    /// A diagnostic for whoever runs this peer, not an event of the
    /// chat: on the screen, else on stderr (JSON output included).
    pub fn diagnostic(&mut self, msg: &str) {
        let msg = escape_controls(msg);
        match &mut self.term {
            Some(t) => {
                let l = t.screen.paint(ERROR, &format!("p2pchat: {msg}"));
                let _ = t.screen.print(&l);
            }
            None => self.stderr(&msg),
        }
    }

    pub fn error(&mut self, msg: &str) {
        let msg = escape_controls(msg);
        if let Some(t) = &mut self.term {
            let l = t.screen.paint(ERROR, &format!("p2pchat: {msg}"));
            let _ = t.screen.print(&l);
        }
        match self.format {
            Format::Json => self.push_json("error", &format!(",\"text\":{}", Js(&msg)), now_ms()),
            Format::Plain if self.term.is_none() => self.stderr(&msg),
            Format::Plain => {}
        }
    }

    /// `p2pchat: msg` on stderr, after what stdout has queued if it can
    /// go now (stdout and stderr in the order things happened).
    fn stderr(&mut self, msg: &str) {
        if let Some(o) = &mut self.out {
            let _ = o.flush();
        }
        eprintln!("p2pchat: {msg}");
    }

    /// Writes what stdout has queued, as far as it takes it without
    /// blocking, and says if lines were dropped. A closed stdout is
    /// reported as `BrokenPipe`, which the caller treats as leaving.
    ///
    /// # Errors
    ///
    /// The write error.
    pub fn flush(&mut self) -> io::Result<()> {
        let Some(o) = &mut self.out else {
            return Ok(());
        };
        o.flush()?;
        if let Some(n) = o.take_dropped() {
            let what = format!("{n} lines dropped (output not read)");
            match self.format {
                Format::Plain => self.push_plain(&[format!("* {what}")], tty::now_secs()),
                Format::Json => self.push_json("dropped", &format!(",\"lines\":{n}"), now_ms()),
            }
            eprintln!("p2pchat: {what}");
            if let Some(o) = &mut self.out {
                o.flush()?;
            }
        }
        Ok(())
    }

    /// Writes the rest of stdout's queue before exiting (waiting for the
    /// reader, a little).
    ///
    /// # Errors
    ///
    /// The write error.
    pub fn finish(&mut self) -> io::Result<()> {
        match &mut self.out {
            Some(o) => {
                o.restore();
                o.finish()
            }
            None => Ok(()),
        }
    }
}

/// Milliseconds since the epoch, now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// When the event was said, by its sender's clock, if it told us (ms
/// since the epoch): a line shown late shows when it was said.
fn said_at(ev: &Show) -> Option<i64> {
    match ev {
        Show::Chat { said, .. }
        | Show::Action { said, .. }
        | Show::Renamed { said, .. }
        | Show::History { said, .. }
        | Show::Private { said, .. } => said.and_then(|t| i64::try_from(t).ok()),
        _ => None,
    }
}

const NOTICE: &str = "2"; // dim
const ERROR: &str = "31"; // red
const OWN: &str = "1"; // bold
const MENTION: &str = "7"; // reverse video

/// The one plain line of another member's chat line or action, added to
/// `out` (as [`plain`] makes it); false for any other event.
fn plain_line(ev: &Show, out: &mut String) -> bool {
    let (room, from, text, action) = match ev {
        Show::Chat {
            own: false,
            from,
            text,
            room,
            ..
        } => (room, from, text, false),
        Show::Action {
            own: false,
            from,
            text,
            room,
            ..
        } => (room, from, text, true),
        _ => return false,
    };
    if room != LOBBY {
        out.push('[');
        editor::push_escaped(out, room);
        out.push_str("] ");
    }
    if action {
        out.push_str("* ");
        editor::push_escaped(out, from);
        out.push(' ');
    } else {
        editor::push_escaped(out, from);
        out.push_str(": ");
    }
    editor::push_escaped(out, text);
    true
}

/// The plain lines of an event (without newlines). A peer does not print
/// its own messages.
pub(crate) fn plain(ev: &Show) -> Vec<String> {
    match ev {
        Show::Joined { via, members } => {
            vec![format!("* joined through {via} ({members} members)")]
        }
        Show::Chat { own: true, .. } | Show::Shout { own: true, .. } => vec![],
        Show::Chat {
            from, text, room, ..
        } => vec![format!(
            "{}{}: {}",
            room_prefix(room),
            escape_controls(from),
            escape_controls(text)
        )],
        Show::Action { own: true, .. } => vec![],
        Show::Action {
            from, text, room, ..
        } => {
            vec![format!(
                "{}* {} {}",
                room_prefix(room),
                escape_controls(from),
                escape_controls(text)
            )]
        }
        Show::Renamed { old, new, .. } => vec![format!(
            "* {} is now {}",
            escape_controls(old),
            escape_controls(new)
        )],
        Show::MemberJoined(n) => vec![format!("* {} joined", escape_controls(n))],
        Show::MemberLeft { name, lost } => vec![format!(
            "* {} left{}",
            escape_controls(name),
            if *lost { " (connection lost)" } else { "" }
        )],
        Show::Members(v) => {
            let mut out = vec![members_head(v.len())];
            out.extend(v.iter().map(|m| format!("*   {}", member(m))));
            out
        }
        Show::Warning(w) | Show::Error(w) => vec![format!("p2pchat: {}", escape_controls(w))],
        Show::Shout { from, text, .. } => vec![format!(
            "! {}: {}",
            escape_controls(from),
            escape_controls(text)
        )],
        Show::History {
            room,
            from,
            text,
            shout,
            ..
        } => vec![format!(
            "[{} history] {}{}: {}",
            escape_controls(room),
            if *shout { "! " } else { "" },
            escape_controls(from),
            escape_controls(text)
        )],
        Show::Here(room) => vec![format!("* you are in {}", escape_controls(room))],
        Show::Room { text, .. } => vec![format!("* {}", escape_controls(text))],
        Show::Rooms(v) => {
            let mut out = vec![if v.len() == 1 {
                "* 1 room:".to_owned()
            } else {
                format!("* {} rooms:", v.len())
            }];
            out.extend(v.iter().map(|r| format!("*   {}", room_row(r))));
            out
        }
        Show::RoomMembers {
            room,
            owner,
            members,
        } => {
            let n = members.len();
            let s = if n == 1 { "" } else { "s" };
            let mut out = vec![format!("* {n} member{s} in {}:", escape_controls(room))];
            out.extend(
                members
                    .iter()
                    .map(|m| format!("*   {}", room_member(m, owner.as_deref()))),
            );
            out
        }
        Show::Discovered(v) => discovered(v.as_deref()),
        Show::Info(i) => vec![format!("* {}", escape_controls(i))],
        Show::Private { own: true, .. } => vec![],
        Show::Private { from, text, .. } => vec![format!(
            "{} (private): {}",
            escape_controls(from),
            escape_controls(text)
        )],
        Show::Delivery { to, n, state } => {
            vec![format!("* private {n} to {}: {state}", escape_controls(to))]
        }
        Show::File(n) => n.plain().lines().map(escape_controls).collect(),
    }
}

/// `[room] ` before a line said in a room; nothing for the lobby.
fn room_prefix(room: &str) -> String {
    if room == LOBBY {
        String::new()
    } else {
        format!("[{}] ", escape_controls(room))
    }
}

/// One line of `:rooms`: `dev alice 3 members (here)`, the lobby's owner
/// `-`.
fn room_row(r: &RoomView) -> String {
    let owner = r.owner.as_deref().map_or("-".to_owned(), escape_controls);
    let s = if r.members == 1 { "" } else { "s" };
    format!(
        "{} {owner} {} member{s}{}",
        escape_controls(&r.name),
        r.members,
        if r.here { " (here)" } else { "" }
    )
}

/// One row of `:who ROOM`: as `:who`'s, `owner` after the owner's.
fn room_member(m: &MemberView, owner: Option<&str>) -> String {
    let mark = if owner == Some(m.name.as_str()) {
        " owner"
    } else {
        ""
    };
    format!("{}{mark}", member(m))
}

/// The answer to `:peers`: the members discovery found, or why none.
fn discovered(v: Option<&[MemberView]>) -> Vec<String> {
    match v {
        None => vec!["* discovery is off (--discover finds peers on the LAN)".to_owned()],
        Some([]) => vec!["* no members found by discovery".to_owned()],
        Some(v) => {
            let s = if v.len() == 1 { "" } else { "s" };
            let mut out = vec![format!("* {} member{s} found by discovery:", v.len())];
            out.extend(v.iter().map(|m| format!("*   {}", member(m))));
            out
        }
    }
}

fn members_head(n: usize) -> String {
    if n == 1 {
        "* 1 member:".to_owned()
    } else {
        format!("* {n} members:")
    }
}

fn member(m: &MemberView) -> String {
    let addr = m.addr.map_or("-".to_owned(), |a| a.to_string());
    let how = match m.reach {
        Reach::Me => "(you)",
        Reach::Direct => "direct",
        Reach::Relayed => "relayed",
    };
    format!("{} {addr} {how}", escape_controls(&m.name))
}

/// A string as a JSON string literal.
struct Js<'a>(&'a str);

impl std::fmt::Display for Js<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                // Every control, bidi mark and line separator escaped: a
                // consumer that prints the text raw is not fooled either.
                c if editor::is_unsafe(c) => write!(f, "\\u{:04x}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

/// `,"id":"..."`: a message's id, where it has one (see [`MsgId`]).
struct IdJs<'a>(&'a Option<MsgId>);

impl std::fmt::Display for IdJs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(id) => write!(f, r#","id":{}"#, Js(&id.to_string())),
            None => Ok(()),
        }
    }
}

/// `,"members":[...]`: each member's name, address and link.
fn members_json(v: &[MemberView]) -> String {
    let mut s = String::from(r#","members":["#);
    for (i, m) in v.iter().enumerate() {
        let addr = m.addr.map_or("null".to_owned(), |a| format!("\"{a}\""));
        let _ = write!(
            s,
            r#"{}{{"name":{},"addr":{addr},"link":"{}"}}"#,
            if i > 0 { "," } else { "" },
            Js(&m.name),
            m.reach
        );
    }
    s.push(']');
    s
}

/// An event's JSON type and its fields after `type` and `time` (each with
/// a leading comma).
fn json(ev: &Show) -> (&'static str, String) {
    match ev {
        Show::Joined { via, members } => {
            ("joined", format!(r#","via":"{via}","members":{members}"#))
        }
        Show::Chat {
            from,
            room,
            text,
            own,
            id,
            ..
        }
        | Show::Action {
            from,
            room,
            text,
            own,
            id,
            ..
        } => (
            if matches!(ev, Show::Chat { .. }) {
                "chat"
            } else {
                "action"
            },
            format!(
                r#"{},"from":{},"room":{},"text":{}{}"#,
                IdJs(id),
                Js(from),
                Js(room),
                Js(text),
                if *own { r#","own":true"# } else { "" }
            ),
        ),
        Show::Renamed { old, new, own, .. } => (
            "rename",
            format!(
                r#","from":{},"to":{}{}"#,
                Js(old),
                Js(new),
                if *own { r#","own":true"# } else { "" }
            ),
        ),
        Show::MemberJoined(n) => ("join", format!(r#","name":{}"#, Js(n))),
        Show::MemberLeft { name, lost } => {
            ("leave", format!(r#","name":{},"lost":{lost}"#, Js(name)))
        }
        Show::Members(v) => ("members", members_json(v)),
        Show::Discovered(v) => (
            "discovered",
            format!(
                r#","discovery":{}{}"#,
                v.is_some(),
                members_json(v.as_deref().unwrap_or_default())
            ),
        ),
        Show::Warning(w) => ("warning", format!(r#","text":{}"#, Js(w))),
        Show::Error(w) => ("error", format!(r#","text":{}"#, Js(w))),
        Show::Shout {
            from,
            text,
            own,
            id,
        } => (
            "shout",
            format!(
                r#"{},"from":{},"text":{}{}"#,
                IdJs(id),
                Js(from),
                Js(text),
                if *own { r#","own":true"# } else { "" }
            ),
        ),
        Show::History {
            room,
            from,
            text,
            shout,
            id,
            ..
        } => (
            if *shout { "shout" } else { "chat" },
            format!(
                r#"{},"from":{},"room":{},"text":{},"history":true"#,
                IdJs(id),
                Js(from),
                Js(room),
                Js(text)
            ),
        ),
        Show::Here(room) => ("here", format!(r#","room":{}"#, Js(room))),
        Show::Room { room, event, text } => (
            "room",
            format!(
                r#","room":{},"event":"{event}","text":{}"#,
                Js(room),
                Js(text)
            ),
        ),
        Show::Rooms(v) => {
            let mut s = String::from(r#","rooms":["#);
            for (i, r) in v.iter().enumerate() {
                let owner = r
                    .owner
                    .as_deref()
                    .map_or("null".to_owned(), |o| Js(o).to_string());
                let _ = write!(
                    s,
                    r#"{}{{"name":{},"owner":{owner},"members":{},"here":{}}}"#,
                    if i > 0 { "," } else { "" },
                    Js(&r.name),
                    r.members,
                    r.here
                );
            }
            s.push(']');
            ("rooms", s)
        }
        Show::RoomMembers {
            room,
            owner,
            members,
        } => {
            let (_, list) = json(&Show::Members(members.clone()));
            let owner = owner
                .as_deref()
                .map_or("null".to_owned(), |o| Js(o).to_string());
            (
                "members",
                format!(r#","room":{},"owner":{owner}{list}"#, Js(room)),
            )
        }
        Show::Info(i) => ("info", format!(r#","text":{}"#, Js(i))),
        Show::Private {
            from,
            to,
            text,
            own,
            id,
            ..
        } => (
            "private",
            format!(
                r#"{},"from":{},"to":{},"text":{}{}"#,
                IdJs(id),
                Js(from),
                Js(to),
                Js(text),
                if *own { r#","own":true"# } else { "" }
            ),
        ),
        Show::Delivery { to, n, state } => (
            "delivery",
            format!(r#","to":{},"n":{n},"state":{}"#, Js(to), Js(state)),
        ),
        Show::File(n) => n.json(|s| Js(s).to_string()),
    }
}

fn tty(s: &mut Screen, me: &str, ev: &Show, at: i64, now: i64) {
    let when = tty::stamp(at, now);
    let l = match ev {
        Show::Joined { via, members } => s.style(
            NOTICE,
            &format!("{when} * joined through {via} ({members} members)"),
        ),
        Show::Chat {
            from, text, own, ..
        }
        | Show::Action {
            from, text, own, ..
        } => {
            let from = escape_controls(from);
            let text = escape_controls(text);
            let who = if *own {
                s.style(OWN, &from)
            } else {
                s.paint(&s.name_color(&from), &from)
            };
            let mentioned = !*own && mentions(&text, me);
            if mentioned {
                let _ = s.bell();
            }
            let head = if matches!(ev, Show::Action { .. }) {
                format!("{when} * {who} ")
            } else {
                format!("{when} {who}: ")
            };
            let _ = s.print_message(&head, &text, mentioned.then_some(MENTION));
            return;
        }
        Show::Renamed { old, new, .. } => s.style(
            NOTICE,
            &format!(
                "{when} * {} is now {}",
                escape_controls(old),
                escape_controls(new)
            ),
        ),
        Show::MemberJoined(n) => {
            s.style(NOTICE, &format!("{when} * {} joined", escape_controls(n)))
        }
        Show::MemberLeft { name, lost } => s.style(
            NOTICE,
            &format!(
                "{when} * {} left{}",
                escape_controls(name),
                if *lost { " (connection lost)" } else { "" }
            ),
        ),
        Show::Members(v) => {
            let head = s.style(NOTICE, &members_head(v.len()));
            let _ = s.print(&head);
            for m in v {
                let l = s.style(NOTICE, &format!("*   {}", member(m)));
                let _ = s.print(&l);
            }
            return;
        }
        Show::Warning(w) | Show::Error(w) => {
            s.paint(ERROR, &format!("p2pchat: {}", escape_controls(w)))
        }
        Show::Shout {
            from, text, own, ..
        } => {
            let from = escape_controls(from);
            let who = if *own {
                s.style(OWN, &from)
            } else {
                s.paint(&s.name_color(&from), &from)
            };
            let _ = s.print_message(
                &format!("{when} {who} {}: ", s.style(OWN, "shouts")),
                &escape_controls(text),
                None,
            );
            return;
        }
        Show::History {
            from,
            text,
            shout,
            said,
            ..
        } => {
            let shouts = if *shout { " shouts" } else { "" };
            // When it was said, where the owner told us.
            let when = if said.is_some() {
                format!("{when} ")
            } else {
                String::new()
            };
            let head = s.style(
                NOTICE,
                &format!("{when}~ {}{shouts}: ", escape_controls(from)),
            );
            let _ = s.print_message(&head, &escape_controls(text), Some(NOTICE));
            return;
        }
        Show::Here(_) | Show::Room { .. } | Show::Rooms(_) | Show::RoomMembers { .. } => {
            for l in plain(ev) {
                let l = s.style(NOTICE, &format!("{when} {l}"));
                let _ = s.print(&l);
            }
            return;
        }
        Show::Discovered(v) => {
            for l in discovered(v.as_deref()) {
                let l = s.style(NOTICE, &l);
                let _ = s.print(&l);
            }
            return;
        }
        Show::Info(i) => s.style(NOTICE, &format!("* {}", escape_controls(i))),
        Show::Private {
            from,
            to,
            text,
            own,
            ..
        } => {
            let head = if *own {
                format!(
                    "{when} {} ",
                    s.style(OWN, &format!("-> {} (private):", escape_controls(to)))
                )
            } else {
                let _ = s.bell();
                let from = escape_controls(from);
                let who = s.paint(&s.name_color(&from), &from);
                format!("{when} {who} (private): ")
            };
            let _ = s.print_message(&head, &escape_controls(text), None);
            return;
        }
        Show::Delivery { to, n, state } => s.style(
            NOTICE,
            &format!("{when} * private {n} to {}: {state}", escape_controls(to)),
        ),
        Show::File(n) => {
            for l in n.tty().lines() {
                let l = s.style(NOTICE, &escape_controls(l));
                let _ = s.print(&l);
            }
            return;
        }
    };
    let _ = s.print(&l);
}

/// Whether `text` mentions `name` as a word, ignoring case.
fn mentions(text: &str, name: &str) -> bool {
    let (text, name) = (crate::name::fold(text), crate::name::fold(name));
    if name.is_empty() {
        return false;
    }
    text.match_indices(&name).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + name.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// The room an event belongs in, for the chat log (joins and leaves are
/// everyone's: the lobby's). Local answers (`:who`, warnings) are not
/// logged.
fn log_room(ev: &Show) -> Option<&str> {
    match ev {
        Show::Chat { room, .. } | Show::Room { room, .. } | Show::Action { room, .. } => Some(room),
        Show::MemberJoined(_)
        | Show::MemberLeft { .. }
        | Show::Joined { .. }
        | Show::Shout { .. }
        | Show::Renamed { .. } => Some(LOBBY),
        // Private messages are never written to a room's log.
        Show::Members(_)
        | Show::Private { .. }
        | Show::Delivery { .. }
        | Show::Warning(_)
        | Show::Error(_)
        | Show::Info(_)
        | Show::Discovered(_)
        | Show::History { .. }
        | Show::Here(_)
        | Show::Rooms(_)
        | Show::RoomMembers { .. } => None,
        Show::File(_) => None,
    }
}

/// Chat logs: one file per room, `ROOM.log`, of timestamped plain lines
/// (own messages included). A file past [`LOG_MAX`] bytes is renamed to
/// `ROOM.log.old` (replacing the one before) and started anew.
struct ChatLog {
    dir: PathBuf,
}

/// The largest a chat log grows before it is rotated.
pub const LOG_MAX: u64 = 4 << 20;

impl ChatLog {
    fn new(dir: PathBuf) -> ChatLog {
        ChatLog { dir }
    }

    fn write(&mut self, room: &str, lines: &[String], at: i64) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        history::make_dir(&self.dir)?;
        let path = self.dir.join(format!("{}.log", file_name(room)));
        if std::fs::metadata(&path).is_ok_and(|m| m.len() > LOG_MAX) {
            let mut old = path.clone().into_os_string();
            old.push(".old");
            std::fs::rename(&path, old)?;
        }
        let stamp = tty::long_stamp(at);
        let mut text = String::new();
        for l in lines {
            let _ = writeln!(text, "{stamp} {l}");
        }
        crate::store::append(&path, text.as_bytes())
    }
}

/// A room name as a safe file name: letters, digits, `-` and `_` kept,
/// anything else as `%XX` bytes (so no `/`, `..` or hidden files).
fn file_name(room: &str) -> String {
    let mut out = String::new();
    for b in room.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    if out.is_empty() { "%".to_owned() } else { out }
}

/// A line for the log: a peer's own messages are logged too, and a
/// room's lines go without `[room]`, the file being the room's.
fn plain_for_log(ev: &Show) -> Vec<String> {
    match ev {
        Show::Chat { from, text, .. } => vec![format!(
            "{}: {}",
            escape_controls(from),
            escape_controls(text)
        )],
        Show::Shout {
            from,
            text,
            own: true,
            ..
        } => vec![format!(
            "! {}: {}",
            escape_controls(from),
            escape_controls(text)
        )],
        Show::Action { from, text, .. } => vec![format!(
            "* {} {}",
            escape_controls(from),
            escape_controls(text)
        )],
        _ => plain(ev),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain_of(ev: Show) -> String {
        plain(&ev).join("\n")
    }

    #[test]
    fn plain_lines() {
        let chat = Show::Chat {
            from: "alice".into(),
            room: "lobby".into(),
            text: "hi \x1b[2J".into(),
            own: false,
            said: None,
            id: None,
        };
        assert_eq!(plain_of(chat), "alice: hi ^[[2J");
        let action = Show::Action {
            from: "alice".into(),
            room: "lobby".into(),
            text: "waves".into(),
            own: false,
            said: Some(1),
            id: None,
        };
        assert_eq!(plain_of(action), "* alice waves");
        let renamed = Show::Renamed {
            old: "alice".into(),
            new: "alicia".into(),
            own: false,
            said: None,
        };
        assert_eq!(plain_of(renamed), "* alice is now alicia");
        let left = Show::MemberLeft {
            name: "bob".into(),
            lost: true,
        };
        assert_eq!(plain_of(left), "* bob left (connection lost)");
        let one = Show::Members(vec![MemberView {
            id: crate::proto::NodeId(1),
            name: "al".into(),
            addr: None,
            reach: Reach::Me,
        }]);
        assert_eq!(plain_of(one), "* 1 member:\n*   al - (you)");
    }

    #[test]
    fn chat_lines_built_in_place_are_the_plain_lines() {
        let mut line = String::new();
        for room in ["lobby", "dev", "a\x1bb"] {
            for text in ["hi", "hi \x1b[2J \u{202e}x"] {
                let chat = Show::Chat {
                    from: "al\tice".into(),
                    room: room.into(),
                    text: text.into(),
                    own: false,
                    said: None,
                    id: None,
                };
                let action = Show::Action {
                    from: "bob".into(),
                    room: room.into(),
                    text: text.into(),
                    own: false,
                    said: Some(1),
                    id: None,
                };
                for ev in [chat, action] {
                    line.clear();
                    assert!(plain_line(&ev, &mut line));
                    assert_eq!(line, plain_of(ev));
                }
            }
        }
        let own = Show::Chat {
            from: "me".into(),
            room: "lobby".into(),
            text: "x".into(),
            own: true,
            said: None,
            id: None,
        };
        assert!(!plain_line(&own, &mut line));
        assert!(!plain_line(&Show::MemberJoined("bob".into()), &mut line));
    }

    #[test]
    fn peers_found_by_discovery() {
        assert_eq!(
            plain_of(Show::Discovered(None)),
            "* discovery is off (--discover finds peers on the LAN)"
        );
        assert_eq!(
            plain_of(Show::Discovered(Some(vec![]))),
            "* no members found by discovery"
        );
        let bob = MemberView {
            id: crate::proto::NodeId(2),
            name: "bob".into(),
            addr: Some("10.0.0.2:4000".parse().unwrap()),
            reach: Reach::Direct,
        };
        assert_eq!(
            plain_of(Show::Discovered(Some(vec![bob.clone()]))),
            "* 1 member found by discovery:\n*   bob 10.0.0.2:4000 direct"
        );
        let (kind, fields) = json(&Show::Discovered(Some(vec![bob])));
        assert_eq!(kind, "discovered");
        assert_eq!(
            fields,
            r#","discovery":true,"members":[{"name":"bob","addr":"10.0.0.2:4000","link":"direct"}]"#
        );
        let (_, off) = json(&Show::Discovered(None));
        assert_eq!(off, r#","discovery":false,"members":[]"#);
    }

    #[test]
    fn json_escapes() {
        let (kind, fields) = json(&Show::Chat {
            from: "a\"b".into(),
            room: "lobby".into(),
            text: "x\\y\n\u{1}".into(),
            own: false,
            said: Some(5),
            id: None,
        });
        assert_eq!(kind, "chat");
        assert_eq!(
            fields,
            ",\"from\":\"a\\\"b\",\"room\":\"lobby\",\"text\":\"x\\\\y\\n\\u0001\""
        );
    }

    #[test]
    fn mention_is_a_word_in_any_case() {
        assert!(mentions("hi bob!", "bob"));
        assert!(mentions("bob", "bob"));
        assert!(mentions("Alice, are you there?", "alice"));
        assert!(mentions("HEY ALICE", "alice"));
        assert!(mentions("σοφία?", "Σοφία"));
        assert!(!mentions("bobby", "bob"));
        assert!(!mentions("kabob", "bob"));
    }

    #[test]
    fn log_file_names_are_safe() {
        assert_eq!(file_name("lobby"), "lobby");
        assert_eq!(file_name("../x"), "%2E%2E%2Fx");
        assert_eq!(file_name(".hidden"), "%2Ehidden");
        assert_eq!(file_name(""), "%");
        assert_eq!(file_name("é"), "%C3%A9");
    }

    #[test]
    fn chat_log_appends_stamped_lines_and_rotates() {
        let dir = std::env::temp_dir().join(format!("p2pchat-log-test-{}", std::process::id()));
        let mut log = ChatLog::new(dir.join("logs"));
        let own = Show::Chat {
            from: "me".into(),
            room: "lobby".into(),
            text: "mine".into(),
            own: true,
            said: None,
            id: None,
        };
        log.write("lobby", &plain_for_log(&own), 0).unwrap();
        log.write("lobby", &["* bob joined".into()], 0).unwrap();
        let text = std::fs::read_to_string(dir.join("logs/lobby.log")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with(" me: mine"), "{text}");
        assert!(lines[1].ends_with(" * bob joined"), "{text}");
        let big = vec!["x".repeat(1 << 20); 5];
        log.write("lobby", &big, 0).unwrap();
        log.write("lobby", &["after".into()], 0).unwrap();
        assert!(dir.join("logs/lobby.log.old").exists());
        let text = std::fs::read_to_string(dir.join("logs/lobby.log")).unwrap();
        assert_eq!(text.lines().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
