//! Lines typed at the prompt: commands and chat.
//!
//! A command starts with `:` (vi) or `/` (IRC), followed directly by its
//! name, case-insensitive: `:q`, `/quit`, `/WHO`. The rule that tells a
//! command from chat, so that IRC habits never leak private text and
//! emoticons still get through:
//!
//! - the prefix and a name from [`COMMANDS`] → that command;
//! - the prefix and a word of two or more ASCII letters that is not a
//!   command (`/frob`, `:wq`) → refused with a hint, nothing is sent;
//! - anything else is chat, sent as typed: `:)`, `:-(`, `:D that's great`
//!   (one letter), `:thumbsup:` and `/usr/bin` (not only letters), `:8080`;
//! - `::text` and `//text` send the line without its first character.
//!
//! Adding a command is one row of [`COMMANDS`]. A row whose feature is not
//! there yet answers "not available yet" and sends nothing: `/msg bob
//! secret` must never go out as chat.

use crate::app::rooms::Cmd;
use crate::node;

/// What a typed line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// Something for the protocol core.
    Node(node::Command),
    Help,
    /// Nothing to do (an empty line).
    Nothing,
    /// A mistake to tell the user about; nothing is sent.
    Error(String),
}

/// What a command does with the rest of its line (its arguments).
pub type Run = fn(&str) -> Result<Input, String>;

/// One command: its names (the first is the main one), its arguments as
/// shown in the help (empty: none), its help text, and what it does with
/// the rest of the line (`None`: not available yet).
pub struct Row {
    pub names: &'static [&'static str],
    pub args: &'static str,
    pub help: &'static str,
    pub run: Option<Run>,
}

/// Every command, in the order `:help` lists them.
pub const COMMANDS: &[Row] = &[
    Row {
        names: &["who"],
        args: "[ROOM|*]",
        help: "members of this room (or ROOM; * everyone): address, link, owner",
        run: Some(|a| {
            Ok(match words::<1>(a, "[ROOM|*]", 0)? {
                [None] => Input::Node(node::Command::Who),
                [Some(r)] => room(Cmd::Who(Some(r))),
            })
        }),
    },
    Row {
        names: &["peers"],
        args: "",
        help: "list the members LAN discovery found (--discover)",
        run: Some(|_| Ok(Input::Node(node::Command::Peers))),
    },
    Row {
        names: &["help"],
        args: "",
        help: "show this help",
        run: Some(|_| Ok(Input::Help)),
    },
    Row {
        names: &["q", "quit"],
        args: "",
        help: "leave the network and exit (also Ctrl-D)",
        run: Some(|_| Ok(Input::Node(node::Command::Quit))),
    },
    Row {
        names: &["rooms", "list"],
        args: "",
        help: "every room in the network: owner, members",
        run: Some(|_| Ok(room(Cmd::Rooms))),
    },
    Row {
        names: &["create"],
        args: "ROOM",
        help: "create a room you own, and go into it",
        run: Some(|a| Ok(room(Cmd::Create(one(a, "ROOM")?)))),
    },
    Row {
        names: &["join"],
        args: "[ROOM]",
        help: "go into ROOM (one at a time); alone, back to the lobby",
        run: Some(|a| {
            let [r] = words::<1>(a, "[ROOM]", 0)?;
            Ok(room(Cmd::Join(r)))
        }),
    },
    Row {
        names: &["leave"],
        args: "",
        help: "go back to the lobby",
        run: Some(|_| Ok(room(Cmd::Join(None)))),
    },
    Row {
        names: &["shout"],
        args: "TEXT",
        help: "say TEXT in every room",
        run: Some(|a| {
            if a.is_empty() {
                return Err("needs TEXT".into());
            }
            Ok(room(Cmd::Shout(a.to_owned())))
        }),
    },
    Row {
        names: &["kick"],
        args: "NAME",
        help: "owner: send NAME back to the lobby, not to come back",
        run: Some(|a| Ok(room(Cmd::Kick(one(a, "NAME")?)))),
    },
    Row {
        names: &["unkick"],
        args: "NAME",
        help: "owner: let NAME into your room again",
        run: Some(|a| Ok(room(Cmd::Unkick(one(a, "NAME")?)))),
    },
    Row {
        names: &["delete"],
        args: "ROOM",
        help: "owner: delete ROOM; its members go back to the lobby",
        run: Some(|a| Ok(room(Cmd::Delete(one(a, "ROOM")?)))),
    },
    Row {
        names: &["give"],
        args: "ROOM NAME",
        help: "owner: hand ROOM over to NAME",
        run: Some(|a| {
            let [r, n] = words::<2>(a, "ROOM NAME", 2)?;
            Ok(room(Cmd::Give(
                r.unwrap_or_default(),
                n.unwrap_or_default(),
            )))
        }),
    },
    Row {
        names: &["whois"],
        args: "NAME",
        help: "someone's key fingerprint, to compare out of band",
        run: Some(|a| one_name(a).map(|n| Input::Node(node::Command::Whois(n)))),
    },
    Row {
        names: &["trust"],
        args: "NAME",
        help: "accept the new key of someone known with another one",
        run: Some(|a| one_name(a).map(|n| Input::Node(node::Command::Trust(n)))),
    },
    Row {
        names: &["me"],
        args: "ACTION",
        help: "an action to your room, shown as '* yourname ACTION'",
        run: Some(|a| {
            if a.is_empty() {
                Err("say what you do: :me waves".into())
            } else if a.len() > crate::proto::wire::MAX_TEXT {
                Err(format!(
                    "an action is at most {} bytes; nothing was sent",
                    crate::proto::wire::MAX_TEXT
                ))
            } else {
                Ok(Input::Node(node::Command::Me(a.to_owned())))
            }
        }),
    },
    Row {
        names: &["nick"],
        args: "NAME",
        help: "go by another name, without leaving",
        run: Some(|a| one_name(a).map(|n| Input::Node(node::Command::Nick(n)))),
    },
    Row {
        names: &["msg", "m"],
        args: "NAME TEXT",
        help: "a private message, encrypted to NAME; kept for NAME if absent",
        run: Some(|a| msg(a).map(|(n, t)| Input::Node(node::Command::Msg(n, t)))),
    },
    Row {
        names: &["msgs"],
        args: "",
        help: "your private messages not delivered yet, and their state",
        run: Some(|_| Ok(Input::Node(node::Command::Msgs))),
    },
    Row {
        names: &["send"],
        args: "[NAME] FILE",
        help: "offer a file to my room, or to NAME only",
        run: Some(|a| match a.trim() {
            "" => Err("give the file to send: :send [NAME] FILE".into()),
            a => Ok(Input::Node(node::Command::Send(expand_home(a)))),
        }),
    },
    Row {
        names: &["files"],
        args: "",
        help: "list file offers and transfers",
        run: Some(|_| Ok(Input::Node(node::Command::Files))),
    },
    Row {
        names: &["get"],
        args: "OFFER [DIR]",
        help: "fetch an offered file (into DIR); resumes a partial one",
        run: Some(|a| {
            let a = a.trim();
            let (id, dir) = a.split_once(' ').unwrap_or((a, ""));
            let dir = dir.trim();
            let dir = (!dir.is_empty()).then(|| expand_home(dir).into());
            Ok(Input::Node(node::Command::Get(offer(id)?, dir)))
        }),
    },
    Row {
        names: &["cancel"],
        args: "OFFER",
        help: "stop fetching a file, or withdraw your offer",
        run: Some(|a| Ok(Input::Node(node::Command::Cancel(offer(a.trim())?)))),
    },
];

fn room(c: Cmd) -> Input {
    Input::Node(node::Command::Room(c))
}

/// The words of a command's arguments: at least `min`, at most `N`
/// (`usage` says which, in errors).
fn words<const N: usize>(
    args: &str,
    usage: &str,
    min: usize,
) -> Result<[Option<String>; N], String> {
    let w: Vec<&str> = args.split_whitespace().collect();
    if w.len() < min || w.len() > N {
        return Err(format!("takes {usage}"));
    }
    Ok(std::array::from_fn(|i| w.get(i).map(|s| (*s).to_owned())))
}

/// The one word a command takes.
fn one(args: &str, usage: &str) -> Result<String, String> {
    let [w] = words::<1>(args, usage, 1)?;
    Ok(w.unwrap_or_default())
}

/// An offer's number.
fn offer(s: &str) -> Result<u32, String> {
    s.parse()
        .map_err(|_| format!("give an offer's number (see :files), not {s:?}"))
}

/// `~/x` is `$HOME/x`; in `:send NAME ~/x` too.
fn expand_home(s: &str) -> String {
    let home = std::env::var("HOME").ok().filter(|h| h.starts_with('/'));
    let Some(home) = home else {
        return s.to_owned();
    };
    if let Some(rest) = s.strip_prefix("~/") {
        return format!("{home}/{rest}");
    }
    match s.split_once(" ~/") {
        Some((name, rest)) if !name.contains(' ') => format!("{name} {home}/{rest}"),
        _ => s.to_owned(),
    }
}

/// The one name a command takes.
fn one_name(args: &str) -> Result<String, String> {
    let mut words = args.split_whitespace();
    match (words.next(), words.next()) {
        (Some(n), None) => Ok(n.to_owned()),
        _ => Err("give one name".into()),
    }
}

/// `:msg`'s name and text.
fn msg(args: &str) -> Result<(String, String), String> {
    match args.split_once(char::is_whitespace) {
        Some((n, t)) if !t.trim().is_empty() => Ok((n.to_owned(), t.trim().to_owned())),
        _ => Err("give a name and a message".into()),
    }
}

/// The command named `name` (any case, any of its names).
pub fn find(name: &str) -> Option<&'static Row> {
    COMMANDS
        .iter()
        .find(|r| r.names.iter().any(|n| n.eq_ignore_ascii_case(name)))
}

/// The names of the commands that work now, for completion.
pub fn available() -> impl Iterator<Item = &'static str> {
    COMMANDS
        .iter()
        .filter(|r| r.run.is_some())
        .flat_map(|r| r.names.iter().copied())
}

/// The `:help` text, one line per item.
pub fn help() -> Vec<String> {
    let mut out = vec![
        "text        send text to the room".to_owned(),
        "::text      send a line that starts with ':' (or //text, '/')".to_owned(),
    ];
    for r in COMMANDS.iter().filter(|r| r.run.is_some()) {
        let mut head = r
            .names
            .iter()
            .map(|n| format!(":{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        if !r.args.is_empty() {
            head = format!("{head} {}", r.args);
        }
        out.push(format!("{head:<11} {}", r.help));
    }
    out.push("commands also start with '/' (/who) and ignore case".to_owned());
    out
}

/// Parses one line (without its newline).
pub fn parse(line: &str) -> Input {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.trim().is_empty() {
        return Input::Nothing;
    }
    let Some(prefix) = line.chars().next().filter(|c| matches!(c, ':' | '/')) else {
        return say(line);
    };
    let rest = &line[1..];
    if rest.starts_with(prefix) {
        return say(rest);
    }
    let (word, args) = match rest.split_once(char::is_whitespace) {
        Some((w, a)) => (w, a.trim()),
        None => (rest, ""),
    };
    let Some(row) = find(word) else {
        if word.len() >= 2 && word.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Input::Error(format!("unknown command {prefix}{word} (try {prefix}help)"));
        }
        return say(line); // an emoticon, a path, a number
    };
    let name = format!("{prefix}{}", word.to_ascii_lowercase());
    let Some(run) = row.run else {
        return Input::Error(format!("{name} is not available yet; nothing was sent"));
    };
    if row.args.is_empty() && !args.is_empty() {
        return Input::Error(format!("{name} takes no arguments"));
    }
    run(args).unwrap_or_else(|e| Input::Error(format!("{name}: {e}")))
}

fn say(text: &str) -> Input {
    Input::Node(node::Command::Say(text.to_owned()))
}

/// Text sent as typed, never a command (a pasted line, a JSON `say`).
pub fn text(line: &str) -> Input {
    say(line.strip_suffix('\r').unwrap_or(line))
}

/// Parses one line of JSON input (`--json` without a terminal): an object
/// with one member, `{"say": "text"}` (sent as text, whatever it starts
/// with) or `{"command": "who"}` (a command line, without or with its
/// `:` or `/`). Anything else is an error; nothing is sent.
pub fn parse_json(line: &str) -> Input {
    let fields = match json_object(line.trim()) {
        Ok(f) => f,
        Err(e) => return Input::Error(format!("bad JSON input: {e}")),
    };
    match fields.as_slice() {
        [(k, v)] if k == "say" => {
            if v.is_empty() {
                Input::Nothing
            } else {
                say(v)
            }
        }
        [(k, v)] if k == "command" => {
            let cmd = v.strip_prefix([':', '/']).unwrap_or(v);
            match parse(&format!(":{cmd}")) {
                Input::Node(node::Command::Say(_)) => {
                    Input::Error(format!("bad JSON input: not a command: {v:?}"))
                }
                other => other,
            }
        }
        [(k, _)] => Input::Error(format!(
            "bad JSON input: unknown key {k:?} (expected \"say\" or \"command\")"
        )),
        _ => Input::Error("bad JSON input: expected one key, \"say\" or \"command\"".to_owned()),
    }
}

/// A JSON object whose values are all strings, as (key, value) pairs.
fn json_object(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut p = Json {
        s: s.as_bytes(),
        at: 0,
    };
    p.ws();
    p.eat(b'{')?;
    let mut out = Vec::new();
    p.ws();
    if p.peek() == Some(b'}') {
        p.at += 1;
    } else {
        loop {
            p.ws();
            let k = p.string()?;
            p.ws();
            p.eat(b':')?;
            p.ws();
            let v = p.string()?;
            out.push((k, v));
            p.ws();
            match p.next() {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err(format!("expected ',' or '}}' at byte {}", p.at)),
            }
        }
    }
    p.ws();
    if p.at != p.s.len() {
        return Err(format!("trailing text at byte {}", p.at));
    }
    Ok(out)
}

/// A small JSON reader: objects of strings are all the input needs.
struct Json<'a> {
    s: &'a [u8],
    at: usize,
}

impl Json<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek();
        self.at += 1;
        b
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Result<(), String> {
        if self.next() == Some(b) {
            Ok(())
        } else {
            Err(format!(
                "expected '{}' at byte {}",
                char::from(b),
                self.at - 1
            ))
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let h = self
            .s
            .get(self.at..self.at + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| format!("bad \\u escape at byte {}", self.at))?;
        self.at += 4;
        Ok(h)
    }

    /// A string literal (values must be strings).
    fn string(&mut self) -> Result<String, String> {
        let start = self.at;
        if self.next() != Some(b'"') {
            return Err(format!("expected a string at byte {start}"));
        }
        let mut out: Vec<u8> = Vec::new();
        loop {
            match self.next() {
                None => return Err("unterminated string".to_owned()),
                Some(b'"') => break,
                Some(b'\\') => {
                    let c = match self.next() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            let hi = self.hex4()?;
                            let code = if (0xd800..0xdc00).contains(&hi)
                                && self.s.get(self.at..self.at + 2) == Some(b"\\u")
                            {
                                self.at += 2;
                                let lo = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&lo) {
                                    return Err("bad surrogate pair".to_owned());
                                }
                                0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                            } else {
                                hi
                            };
                            char::from_u32(code).ok_or("lone surrogate")?
                        }
                        _ => return Err(format!("bad escape at byte {}", self.at - 1)),
                    };
                    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                }
                Some(b) if b < 0x20 => return Err("control character in a string".to_owned()),
                Some(b) => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|_| "not UTF-8".to_owned())
    }
}

/// `text` cut into pieces of at most `max` bytes, at character boundaries,
/// after white space where there is some in the second half of a piece.
/// An empty text is one empty piece.
pub fn split_text(text: &str, max: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(sp) = rest[..cut].rfind(char::is_whitespace)
            && sp >= max / 2
        {
            let w = rest[sp..].chars().next().map_or(1, char::len_utf8);
            cut = sp + w;
        }
        if cut == 0 {
            break; // max smaller than one character: cannot happen for messages
        }
        parts.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    parts.push(rest);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Command;

    fn said(s: &str) -> Input {
        Input::Node(Command::Say(s.into()))
    }

    #[test]
    fn lines() {
        assert_eq!(parse("hi there"), said("hi there"));
        assert_eq!(parse("hi\r"), said("hi"));
        assert_eq!(parse("::q"), said(":q"));
        assert_eq!(parse("//q"), said("/q"));
        assert_eq!(parse("//msg bob hi"), said("/msg bob hi"));
        assert_eq!(parse(":q"), Input::Node(Command::Quit));
        assert_eq!(parse(":quit"), Input::Node(Command::Quit));
        assert_eq!(parse(":who"), Input::Node(Command::Who));
        assert_eq!(parse("/peers"), Input::Node(Command::Peers));
        assert_eq!(parse(":help"), Input::Help);
        assert_eq!(parse(""), Input::Nothing);
        assert_eq!(parse("   "), Input::Nothing);
        assert_eq!(
            parse(":frob"),
            Input::Error("unknown command :frob (try :help)".into())
        );
        assert_eq!(
            parse(":who x y"),
            Input::Error(":who: takes [ROOM|*]".into())
        );
        assert_eq!(
            parse(":leave x"),
            Input::Error(":leave takes no arguments".into())
        );
    }

    #[test]
    fn room_commands() {
        let room = |c: Cmd| Input::Node(Command::Room(c));
        assert_eq!(parse(":who dev"), room(Cmd::Who(Some("dev".into()))));
        assert_eq!(parse(":who *"), room(Cmd::Who(Some("*".into()))));
        assert_eq!(parse("/list"), room(Cmd::Rooms));
        assert_eq!(parse(":rooms"), room(Cmd::Rooms));
        assert_eq!(parse(":create Dev"), room(Cmd::Create("Dev".into())));
        assert_eq!(parse(":join dev"), room(Cmd::Join(Some("dev".into()))));
        assert_eq!(parse(":join"), room(Cmd::Join(None)));
        assert_eq!(parse(":leave"), room(Cmd::Join(None)));
        assert_eq!(parse(":kick bob"), room(Cmd::Kick("bob".into())));
        assert_eq!(parse(":unkick bob"), room(Cmd::Unkick("bob".into())));
        assert_eq!(parse(":delete dev"), room(Cmd::Delete("dev".into())));
        assert_eq!(
            parse(":shout  fire!  now "),
            room(Cmd::Shout("fire!  now".into()))
        );
        assert_eq!(
            parse(":give dev bob"),
            room(Cmd::Give("dev".into(), "bob".into()))
        );
        // Wrong arguments: one line, nothing sent.
        for bad in [
            ":create",
            ":create a b",
            ":join a b",
            ":kick",
            ":give dev",
            ":shout",
            ":delete",
        ] {
            assert!(matches!(parse(bad), Input::Error(_)), "{bad}");
        }
    }

    #[test]
    fn irc_prefix_and_any_case() {
        assert_eq!(parse("/quit"), Input::Node(Command::Quit));
        assert_eq!(parse("/Q"), Input::Node(Command::Quit));
        assert_eq!(parse("/WHO"), Input::Node(Command::Who));
        assert_eq!(parse(":Help"), Input::Help);
        assert_eq!(parse("/who  "), Input::Node(Command::Who));
        assert_eq!(
            parse("/frob x"),
            Input::Error("unknown command /frob (try /help)".into())
        );
        assert_eq!(
            parse("/WHO is there"),
            Input::Error("/who: takes [ROOM|*]".into())
        );
    }

    #[test]
    fn private_messages_take_a_name_and_text() {
        let m = |n: &str, t: &str| Input::Node(node::Command::Msg(n.into(), t.into()));
        assert_eq!(parse("/msg bob psst, private?"), m("bob", "psst, private?"));
        assert_eq!(parse(":m bob  two  spaces "), m("bob", "two  spaces"));
        assert_eq!(parse("/MSG bob hi"), m("bob", "hi"));
        for bad in [":msg", ":msg bob", ":m bob   "] {
            match parse(bad) {
                Input::Error(e) => assert!(e.ends_with("give a name and a message"), "{e}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert_eq!(parse(":msgs"), Input::Node(node::Command::Msgs));
        assert_eq!(
            parse(":msgs x"),
            Input::Error(":msgs takes no arguments".into())
        );
    }

    #[test]
    fn file_commands_take_their_arguments() {
        let node = |c| Input::Node(c);
        assert_eq!(
            parse(":send /tmp/a b.txt"),
            node(Command::Send("/tmp/a b.txt".into()))
        );
        assert_eq!(parse("/get 3"), node(Command::Get(3, None)));
        assert_eq!(
            parse(":get 3  /tmp/x y"),
            node(Command::Get(3, Some("/tmp/x y".into())))
        );
        assert_eq!(parse(":cancel 2"), node(Command::Cancel(2)));
        assert_eq!(parse(":files"), node(Command::Files));
        for bad in [":send", ":send  ", ":get", ":get x", ":get -1", ":cancel"] {
            assert!(matches!(parse(bad), Input::Error(_)), "{bad}");
        }
    }

    #[test]
    fn actions_and_renames() {
        assert_eq!(
            parse("/me waves at  bob"),
            Input::Node(Command::Me("waves at  bob".into()))
        );
        assert_eq!(parse(":ME waves"), Input::Node(Command::Me("waves".into())));
        assert!(matches!(parse("/me"), Input::Error(e) if e.contains(":me waves")));
        let long = format!("/me {}", "x".repeat(crate::proto::wire::MAX_TEXT + 1));
        assert!(matches!(parse(&long), Input::Error(e) if e.contains("at most 4096 bytes")));
        assert_eq!(
            parse("/nick caroline"),
            Input::Node(Command::Nick("caroline".into()))
        );
        assert_eq!(
            parse("/nick a b"),
            Input::Error("/nick: give one name".into())
        );
        assert!(matches!(parse("/nick"), Input::Error(_)));
    }

    #[test]
    fn emoticons_paths_and_numbers_are_chat() {
        for line in [
            ":)",
            ":-)",
            ":(",
            ":'(",
            ":D",
            ":D that's great",
            ":P",
            ":3",
            ":thumbsup:",
            ":+1:",
            "/usr/bin/env is a path",
            "/",
            ":",
            ":8080 is the port",
            ": spaced",
            "/ spaced",
            ":-D",
            ":q!",
        ] {
            assert_eq!(parse(line), said(line), "{line:?}");
        }
        // Two letters or more look like a command: refused, not sent.
        for line in [":wq", "/shrug", ":XD", ":DD", "/msgg bob secret"] {
            assert!(matches!(parse(line), Input::Error(_)), "{line:?}");
        }
    }

    #[test]
    fn json_input_says_text_or_runs_commands() {
        assert_eq!(parse_json(r#"{"say":":q"}"#), said(":q"));
        assert_eq!(
            parse_json(r#" { "say" : "/msg bob hi" } "#),
            said("/msg bob hi")
        );
        assert_eq!(
            parse_json(r#"{"say":"a\"b\\c\n\u00e9\ud83d\ude00"}"#),
            said("a\"b\\c\né😀")
        );
        assert_eq!(parse_json(r#"{"say":""}"#), Input::Nothing);
        assert_eq!(
            parse_json(r#"{"command":"quit"}"#),
            Input::Node(Command::Quit)
        );
        assert_eq!(
            parse_json(r#"{"command":"/who"}"#),
            Input::Node(Command::Who)
        );
        assert_eq!(parse_json(r#"{"command":":help"}"#), Input::Help);
        for bad in [
            ":q",
            "hello",
            "{}",
            r#"{"say":1}"#,
            r#"{"say":"x","command":"q"}"#,
            r#"{"shout":"x"}"#,
            r#"{"command":":)"}"#,
            r#"{"command":"frob"}"#,
            r#"{"command":"nick"}"#,
            r#"{"say":"x"} trailing"#,
            r#"{"say":"\ud800"}"#,
            r#"{"say":"unterminated}"#,
            "{\"say\":\"tab\there\"}",
        ] {
            assert!(matches!(parse_json(bad), Input::Error(_)), "{bad:?}");
        }
    }

    #[test]
    fn the_table_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for r in COMMANDS {
            for n in r.names {
                assert!(seen.insert(*n), "{n} twice");
                assert!(n.bytes().all(|b| b.is_ascii_lowercase()), "{n}");
                assert!(find(n).is_some());
            }
        }
        assert!(available().any(|n| n == "who"));
        assert!(available().any(|n| n == "nick"));
        let help = help();
        assert!(help.iter().any(|l| l.starts_with(":q, :quit")));
        assert!(help.iter().any(|l| l.contains(":msg, :m")));
        assert_eq!(text(":q"), said(":q"));
    }
}
