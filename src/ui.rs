//! Rendering events for the user: plain lines, JSON lines, or the
//! interactive terminal.
//!
//! Plain and JSON output is collected in a buffer and written to stdout
//! once per turn of the event loop, so a burst of messages costs one write.
//! Every piece of text that came from the network passes through
//! [`escape_controls`] first: a peer can never send escape sequences to our
//! terminal.

use crate::app::{LOBBY, MemberView, Reach, Show};
use crate::command;
use crate::editor::{self, escape_controls};
use crate::tty::{self, RawMode, Screen};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::PathBuf;

/// The interactive terminal: raw mode, the screen, and what to save when
/// we are done.
pub struct Term {
    pub screen: Screen,
    /// Our name, to highlight mentions of it.
    name: String,
    history: Option<PathBuf>,
    raw: RawMode,
}

impl Term {
    /// Puts the terminal in raw mode and draws the prompt. Colour unless
    /// `NO_COLOR` is set (and not empty); no escape sequences at all with
    /// `TERM=dumb`.
    pub fn start(name: &str) -> io::Result<Term> {
        let raw = RawMode::enable()?;
        let prompt = format!("[{LOBBY}] {name}> ");
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let mut screen = if dumb {
            Screen::new_dumb(prompt)
        } else {
            Screen::new(prompt, !no_color)
        };
        let history = editor::history_path();
        if let Some(p) = &history {
            screen.editor_mut().set_history(editor::load_history(p));
        }
        if !dumb {
            paste_mode(true);
        }
        screen.redraw()?;
        Ok(Term {
            screen,
            name: name.to_owned(),
            history,
            raw,
        })
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.screen.hide();
        paste_mode(false);
        if let Some(p) = &self.history
            && let Err(e) = editor::save_history(p, self.screen.editor().history())
        {
            let _ = self.raw.restore();
            eprintln!("p2pchat: history {}: {e}", p.display());
        }
    }
}

/// Asks the terminal to mark pasted text (bracketed paste), or to stop.
pub fn paste_mode(on: bool) {
    let seq: &[u8] = if on { b"\x1b[?2004h" } else { b"\x1b[?2004l" };
    if std::env::var("TERM").is_ok_and(|t| t == "dumb") {
        return;
    }
    unsafe { libc::write(1, seq.as_ptr().cast(), seq.len()) };
}

/// Whether stdin and stdout are both terminals.
pub fn interactive() -> bool {
    unsafe { libc::isatty(0) == 1 && libc::isatty(1) == 1 }
}

/// Where events go.
pub enum Ui {
    /// One line per event (the documented script interface).
    Plain(Vec<u8>),
    /// One JSON object per event.
    Json(Vec<u8>),
    /// The line editor with chat scrolling above it.
    Tty(Box<Term>),
}

impl Ui {
    /// The first line: where we listen.
    pub fn listening(&mut self, port: u16) {
        match self {
            Ui::Plain(b) => line(b, format_args!("listening on port {port}")),
            Ui::Json(b) => line(b, format_args!(r#"{{"type":"listening","port":{port}}}"#)),
            Ui::Tty(t) => {
                let s = &mut t.screen;
                let l = s.paint(NOTICE, &format!("* listening on port {port}"));
                let _ = s.print(&l);
            }
        }
    }

    /// Shows one event from the core.
    pub fn show(&mut self, ev: &Show) {
        match self {
            // In plain lines a warning is a diagnostic, on stderr.
            Ui::Plain(_) if let Show::Warning(w) = ev => self.error(w),
            Ui::Plain(b) => plain(b, ev),
            Ui::Json(b) => json(b, ev),
            Ui::Tty(t) => tty(&mut t.screen, &t.name, ev),
        }
    }

    /// The `:help` text.
    pub fn help(&mut self) {
        for h in command::HELP {
            match self {
                Ui::Plain(b) => line(b, format_args!("* {h}")),
                Ui::Json(b) => line(b, format_args!(r#"{{"type":"help","text":{}}}"#, Js(h))),
                Ui::Tty(t) => {
                    let s = &mut t.screen;
                    let l = s.paint(NOTICE, &format!("* {h}"));
                    let _ = s.print(&l);
                }
            }
        }
    }

    /// A diagnostic: stderr, or above the input line on a terminal. It may
    /// quote a peer (a refusal's text), so it is escaped like chat.
    pub fn error(&mut self, msg: &str) {
        let msg = &escape_controls(msg);
        match self {
            Ui::Tty(t) => {
                let s = &mut t.screen;
                let l = s.paint(ERROR, &format!("p2pchat: {msg}"));
                let _ = s.print(&l);
            }
            _ => {
                // Keep stdout and stderr in the order the events happened.
                let _ = self.flush();
                eprintln!("p2pchat: {msg}");
            }
        }
    }

    /// Writes what is buffered. A closed stdout is reported as
    /// `BrokenPipe`, which the caller treats as leaving.
    pub fn flush(&mut self) -> io::Result<()> {
        let b = match self {
            Ui::Plain(b) | Ui::Json(b) => b,
            Ui::Tty(_) => return Ok(()),
        };
        if b.is_empty() {
            return Ok(());
        }
        let mut out = io::stdout().lock();
        let r = out.write_all(b).and_then(|_| out.flush());
        b.clear();
        r
    }
}

const NOTICE: &str = "2"; // dim
const ERROR: &str = "31"; // red
const OWN: &str = "1"; // bold

fn line(b: &mut Vec<u8>, args: std::fmt::Arguments) {
    let _ = b.write_fmt(args);
    b.push(b'\n');
}

fn plain(b: &mut Vec<u8>, ev: &Show) {
    match ev {
        Show::Joined { via, members } => line(
            b,
            format_args!("* joined through {via} ({members} members)"),
        ),
        Show::Chat { own: true, .. } => {}
        Show::Chat { from, text, .. } => line(
            b,
            format_args!("{}: {}", escape_controls(from), escape_controls(text)),
        ),
        Show::MemberJoined(n) => line(b, format_args!("* {} joined", escape_controls(n))),
        Show::MemberLeft { name, lost } => line(
            b,
            format_args!(
                "* {} left{}",
                escape_controls(name),
                if *lost { " (connection lost)" } else { "" }
            ),
        ),
        Show::Members(v) => {
            line(b, format_args!("* {} members:", v.len()));
            for m in v {
                line(b, format_args!("*   {}", member(m)));
            }
        }
        Show::Warning(_) => unreachable!("Ui::show sends warnings to Ui::error"),
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
                c if (c as u32) < 0x20 || c == '\u{7f}' => write!(f, "\\u{:04x}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

fn json(b: &mut Vec<u8>, ev: &Show) {
    match ev {
        Show::Joined { via, members } => line(
            b,
            format_args!(r#"{{"type":"joined","via":"{via}","members":{members}}}"#),
        ),
        Show::Chat {
            from,
            room,
            text,
            own,
        } => line(
            b,
            format_args!(
                r#"{{"type":"chat","from":{},"room":{},"text":{}{}}}"#,
                Js(from),
                Js(room),
                Js(text),
                if *own { r#","own":true"# } else { "" }
            ),
        ),
        Show::MemberJoined(n) => line(b, format_args!(r#"{{"type":"join","name":{}}}"#, Js(n))),
        Show::MemberLeft { name, lost } => line(
            b,
            format_args!(r#"{{"type":"leave","name":{},"lost":{lost}}}"#, Js(name)),
        ),
        Show::Members(v) => {
            let mut s = String::from(r#"{"type":"members","members":["#);
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
            s.push_str("]}");
            line(b, format_args!("{s}"));
        }
        Show::Warning(w) => line(b, format_args!(r#"{{"type":"warning","text":{}}}"#, Js(w))),
    }
}

fn tty(s: &mut Screen, me: &str, ev: &Show) {
    let now = tty::clock();
    let l = match ev {
        Show::Joined { via, members } => s.paint(
            NOTICE,
            &format!("{now} * joined through {via} ({members} members)"),
        ),
        Show::Chat {
            from, text, own, ..
        } => {
            let from = escape_controls(from);
            let text = escape_controls(text);
            let who = if *own {
                s.paint(OWN, &from)
            } else {
                s.paint(tty::name_color(&from), &from)
            };
            let mentioned = !*own && mentions(&text, me);
            let text = if mentioned {
                let _ = s.bell();
                s.paint("7", &text) // reverse video
            } else {
                text
            };
            format!("{now} {who}: {text}")
        }
        Show::MemberJoined(n) => s.paint(NOTICE, &format!("{now} * {} joined", escape_controls(n))),
        Show::MemberLeft { name, lost } => s.paint(
            NOTICE,
            &format!(
                "{now} * {} left{}",
                escape_controls(name),
                if *lost { " (connection lost)" } else { "" }
            ),
        ),
        Show::Members(v) => {
            let head = s.paint(NOTICE, &format!("* {} members:", v.len()));
            let _ = s.print(&head);
            for m in v {
                let l = s.paint(NOTICE, &format!("*   {}", member(m)));
                let _ = s.print(&l);
            }
            return;
        }
        Show::Warning(w) => s.paint(ERROR, &format!("p2pchat: {}", escape_controls(w))),
    };
    let _ = s.print(&l);
}

/// Whether `text` mentions `name` as a word.
fn mentions(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + name.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain_of(ev: Show) -> String {
        let mut b = Vec::new();
        plain(&mut b, &ev);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn plain_lines() {
        let chat = Show::Chat {
            from: "alice".into(),
            room: "lobby".into(),
            text: "hi \x1b[2J".into(),
            own: false,
        };
        assert_eq!(plain_of(chat), "alice: hi ^[[2J\n");
        let left = Show::MemberLeft {
            name: "bob".into(),
            lost: true,
        };
        assert_eq!(plain_of(left), "* bob left (connection lost)\n");
    }

    #[test]
    fn json_escapes() {
        let mut b = Vec::new();
        json(
            &mut b,
            &Show::Chat {
                from: "a\"b".into(),
                room: "lobby".into(),
                text: "x\\y\n\u{1}".into(),
                own: false,
            },
        );
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "{\"type\":\"chat\",\"from\":\"a\\\"b\",\"room\":\"lobby\",\"text\":\"x\\\\y\\n\\u0001\"}\n"
        );
    }

    #[test]
    fn mention_is_a_word() {
        assert!(mentions("hi bob!", "bob"));
        assert!(mentions("bob", "bob"));
        assert!(!mentions("bobby", "bob"));
        assert!(!mentions("kabob", "bob"));
    }
}
