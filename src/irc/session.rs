//! One IRC client of the gateway, with no I/O: bytes in, IRC lines and
//! commands for the peer out (see the module docs of [`crate::irc`] for
//! the mapping).
//!
//! A session takes what the client sends ([`Session::feed`]) and what the
//! peer shows ([`Session::show`]), and the time; it produces the bytes to
//! send to the client ([`Session::take_output`]), the commands for the
//! peer ([`Session::take_commands`]), and whether to close. Lines are cut
//! at [`MAX_LINE`] bytes in and out; every line it writes ends in CRLF and
//! holds no other CR, LF or NUL.

use crate::app::{LOBBY, Show};
use crate::command::{self, Input};
use crate::node::{Command, Millis};
use crate::proto::wire::MAX_NAME;
use crate::term::editor::escape_controls;
use blake2::{Blake2s256, Digest};
use std::collections::BTreeSet;

/// The longest line, CRLF included, either way (RFC 1459, 2812).
pub const MAX_LINE: usize = 512;
/// Silence from a registered client after which we PING it.
pub const PING_AFTER: Millis = 90_000;
/// How long a PING may go unanswered (and how long registration may take)
/// before the client is dropped.
pub const PING_TIMEOUT: Millis = 60_000;
/// The server's name in prefixes and numerics.
pub const SERVER: &str = "p2pchat";
/// The pseudo-user that takes p2pchat commands (`/msg *p2pchat who`),
/// as a bouncer's `*status`.
pub const SERVICE: &str = "*p2pchat";

/// What a session needs to know of the peer.
pub trait View {
    /// Our name: the client's nick.
    fn name(&self) -> &str;
    /// The other members shown as present.
    fn others(&self) -> Vec<String>;
    /// Whether we are in the network (chat can be sent).
    fn in_network(&self) -> bool;
    /// The room we are in, where chat goes: the lobby until there are
    /// rooms. The client is shown in its channel as well as in #lobby.
    fn room(&self) -> String {
        LOBBY.to_owned()
    }
    /// The other members in `room`, for its NAMES.
    fn room_members(&self, room: &str) -> Vec<String> {
        let _ = room;
        self.others()
    }
}

/// The channel of a room: `#` and its name.
pub fn channel(room: &str) -> String {
    format!("#{room}")
}

/// The room of a channel name, if it is one (`#` and a name).
fn room_of(chan: &str) -> Option<&str> {
    chan.strip_prefix('#').filter(|r| !r.is_empty())
}

/// A password kept as its hash, compared as hashes.
#[derive(Clone)]
pub struct Password([u8; 32]);

impl Password {
    pub fn new(p: &[u8]) -> Password {
        Password(Blake2s256::digest(p).into())
    }

    fn matches(&self, p: &[u8]) -> bool {
        let h: [u8; 32] = Blake2s256::digest(p).into();
        h == self.0
    }
}

/// Where the client is in registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reg {
    /// Waiting for NICK and USER (and CAP END if CAP was asked).
    Waiting,
    Done,
}

/// One client. See the module documentation.
pub struct Session {
    password: Option<Password>,
    /// The PASS given matched (or none is needed).
    pass_ok: bool,
    pass_given: bool,
    reg: Reg,
    /// The nick the client registered with (before we force ours).
    nick: Option<String>,
    user: bool,
    /// `CAP LS` seen and `CAP END` not yet: registration waits.
    cap: bool,
    /// The nick the client knows itself by (ours, after registration).
    me: String,
    /// The client has #lobby open, and who it has been shown in it.
    lobby: Option<BTreeSet<String>>,
    /// The room other than the lobby the client is shown in.
    room: Option<String>,
    /// A line not yet ended.
    partial: Vec<u8>,
    /// The line being read passed [`MAX_LINE`]: dropped up to its end.
    overlong: bool,
    out: Vec<u8>,
    commands: Vec<Command>,
    /// Close once the output is written, for this reason.
    closing: Option<String>,
    last_heard: Millis,
    /// When we sent a PING not yet answered.
    pinged: Option<Millis>,
    started: Millis,
}

impl Session {
    /// A client connected at `now`; `password` is the PASS it must give.
    pub fn new(password: Option<Password>, now: Millis) -> Session {
        Session {
            pass_ok: password.is_none(),
            password,
            pass_given: false,
            reg: Reg::Waiting,
            nick: None,
            user: false,
            cap: false,
            me: "*".into(),
            lobby: None,
            room: None,
            partial: Vec::new(),
            overlong: false,
            out: Vec::new(),
            commands: Vec::new(),
            closing: None,
            last_heard: now,
            pinged: None,
            started: now,
        }
    }

    /// Bytes to write to the client.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Bytes said and not yet taken.
    pub fn output_len(&self) -> usize {
        self.out.len()
    }

    /// Commands for the peer, in order.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    /// Why the client is to be closed once its output is written.
    pub fn closing(&self) -> Option<&str> {
        self.closing.as_deref()
    }

    pub fn registered(&self) -> bool {
        self.reg == Reg::Done
    }

    /// When [`Session::tick`] next has work to do.
    pub fn deadline(&self) -> Option<Millis> {
        if self.closing.is_some() {
            return None;
        }
        Some(match (self.reg, self.pinged) {
            (Reg::Waiting, _) => self.started + PING_TIMEOUT,
            (Reg::Done, Some(t)) => t + PING_TIMEOUT,
            (Reg::Done, None) => self.last_heard + PING_AFTER,
        })
    }

    /// The time is `now`: PING a quiet client, drop a silent one.
    pub fn tick(&mut self, now: Millis) {
        if self.closing.is_some() || self.deadline().is_none_or(|t| now < t) {
            return;
        }
        match (self.reg, self.pinged) {
            (Reg::Waiting, _) => self.close("Registration timed out"),
            (Reg::Done, Some(_)) => self.close("Ping timeout"),
            (Reg::Done, None) => {
                self.pinged = Some(now);
                self.raw(&format!("PING :{SERVER}"));
            }
        }
    }

    /// Tells the client we are going, and closes.
    pub fn stop(&mut self, why: &str) {
        if self.closing.is_none() {
            self.close(why);
        }
    }

    fn close(&mut self, why: &str) {
        self.raw(&format!("ERROR :Closing link: {}", clean(why)));
        self.closing = Some(why.to_owned());
    }

    /// Bytes from the client: whole lines are handled, the rest kept.
    pub fn feed(&mut self, view: &impl View, bytes: &[u8], now: Millis) {
        self.last_heard = now;
        self.pinged = None;
        let mut rest = bytes;
        while self.closing.is_none() {
            let Some(i) = rest.iter().position(|&b| b == b'\n') else {
                break;
            };
            let (head, tail) = (&rest[..i], &rest[i + 1..]);
            rest = tail;
            if std::mem::take(&mut self.overlong) || self.partial.len() + head.len() + 1 > MAX_LINE
            {
                self.partial.clear();
                self.numeric("417", &[], "Input line was too long");
                continue;
            }
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(head);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            // Bad UTF-8 is taken, its bad bytes as U+FFFD (UTF8ONLY).
            let line = String::from_utf8_lossy(&line).into_owned();
            self.line(view, &line);
        }
        if self.closing.is_some() {
            return;
        }
        if self.overlong || self.partial.len() + rest.len() >= MAX_LINE {
            self.overlong = true;
            self.partial.clear();
        } else {
            self.partial.extend_from_slice(rest);
        }
    }

    /// One line from the client, without its line end.
    pub fn line(&mut self, view: &impl View, line: &str) {
        let Some(msg) = parse(line) else {
            return;
        };
        let cmd = msg.command.to_ascii_uppercase();
        let p = &msg.params;
        match (cmd.as_str(), self.reg) {
            ("PING", _) => {
                let token = p.first().map_or(SERVER, String::as_str);
                self.raw(&format!(":{SERVER} PONG {SERVER} :{}", clean(token)));
            }
            ("PONG", _) => {}
            ("QUIT", _) => self.close("Client quit"),
            ("CAP", _) => self.cap(view, p),
            ("PASS", Reg::Waiting) => match p.first() {
                None => self.numeric("461", &["PASS"], "Not enough parameters"),
                Some(pw) => {
                    self.pass_given = true;
                    self.pass_ok = self
                        .password
                        .as_ref()
                        .is_none_or(|w| w.matches(pw.as_bytes()));
                }
            },
            ("NICK", Reg::Waiting) => match p.first().filter(|n| !n.is_empty()) {
                None => self.numeric("431", &[], "No nickname given"),
                Some(n) => {
                    self.nick = Some(n.clone());
                    self.me = n.clone();
                    self.try_register(view);
                }
            },
            ("USER", Reg::Waiting) => {
                if p.len() < 4 {
                    self.numeric("461", &["USER"], "Not enough parameters");
                } else {
                    self.user = true;
                    self.try_register(view);
                }
            }
            ("PASS" | "USER", Reg::Done) => self.numeric("462", &[], "You may not reregister"),
            (_, Reg::Waiting) => self.numeric("451", &[], "You have not registered"),
            _ => self.command(view, &cmd, p),
        }
    }

    fn cap(&mut self, view: &impl View, p: &[String]) {
        let sub = p.first().map(|s| s.to_ascii_uppercase());
        let me = self.me.clone();
        match sub.as_deref() {
            Some("LS") => {
                if self.reg == Reg::Waiting {
                    self.cap = true;
                }
                self.raw(&format!(":{SERVER} CAP {me} LS :"));
            }
            Some("LIST") => self.raw(&format!(":{SERVER} CAP {me} LIST :")),
            Some("REQ") => {
                if self.reg == Reg::Waiting {
                    self.cap = true;
                }
                let asked = p.get(1).map_or("", String::as_str);
                self.raw(&format!(":{SERVER} CAP {me} NAK :{}", clean(asked)));
            }
            Some("END") => {
                self.cap = false;
                self.try_register(view);
            }
            _ => {
                let what = sub.unwrap_or_default();
                self.numeric("410", &[&clean(&what)], "Invalid CAP command");
            }
        }
    }

    fn try_register(&mut self, view: &impl View) {
        let Some(given) = self.nick.clone() else {
            return;
        };
        if !self.user || self.cap || self.reg == Reg::Done {
            return;
        }
        if !self.pass_ok {
            let why = if self.pass_given {
                "Password incorrect"
            } else {
                "Password required (PASS)"
            };
            self.numeric("464", &[], why);
            return self.close(why);
        }
        self.reg = Reg::Done;
        let version = env!("CARGO_PKG_VERSION");
        self.numeric(
            "001",
            &[],
            &format!("Welcome to the p2pchat network, {}", clean(&given)),
        );
        self.numeric(
            "002",
            &[],
            &format!("Your host is {SERVER}, running version {version}"),
        );
        self.numeric("003", &[], "This server was created when this peer started");
        self.raw(&format!(
            ":{SERVER} 004 {} {SERVER} {version} i nt",
            self.target()
        ));
        self.raw(&format!(
            ":{SERVER} 005 {} CASEMAPPING=ascii CHANTYPES=# CHANNELLEN={} NICKLEN={MAX_NAME} \
             NETWORK=p2pchat CHANMODES=,,,nt PREFIX=(o)@ LINELEN={MAX_LINE} UTF8ONLY \
             :are supported by this server",
            self.target(),
            MAX_NAME + 1,
        ));
        self.raw(&format!(
            ":{SERVER} 375 {} :- {SERVER} Message of the day -",
            self.target()
        ));
        for l in [
            format!("- You are {} in a p2pchat network.", view.name()),
            "- #lobby is the network's chat. QUIT detaches this client only.".to_owned(),
            format!("- /msg {SERVICE} help: the peer's commands (quit to leave)."),
        ] {
            self.numeric("372", &[], &clean(&l));
        }
        self.numeric("376", &[], "End of /MOTD command.");
        let name = view.name().to_owned();
        if given != nick(&name) {
            // The nick is the peer's name: forced, as bouncers do.
            self.raw(&format!(
                ":{}!{}@{SERVER} NICK :{}",
                clean_word(&given),
                clean_word(&given),
                nick(&name)
            ));
        }
        self.me = name;
        self.join_lobby(view);
    }

    /// The target of numerics: the client's nick.
    fn target(&self) -> String {
        match self.reg {
            Reg::Waiting => clean_word(&self.me), // as the client gave it
            Reg::Done => nick(&self.me),
        }
    }

    fn numeric(&mut self, code: &str, params: &[&str], text: &str) {
        let mut l = format!(":{SERVER} {code} {}", self.target());
        for p in params {
            l.push(' ');
            l.push_str(p);
        }
        l.push_str(" :");
        l.push_str(text);
        self.raw(&l);
    }

    /// Queues one line, cut to fit [`MAX_LINE`] with its CRLF.
    fn raw(&mut self, line: &str) {
        let mut end = line.len().min(MAX_LINE - 2);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let line = &line[..end];
        debug_assert!(!line.contains(['\r', '\n', '\0']), "{line:?}");
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Lines of `text` from `from` (a prefix) to `target`, each cut to fit.
    fn say(&mut self, from: &str, kind: &str, target: &str, text: &str) {
        let head = format!(":{from} {kind} {target} :");
        let room = MAX_LINE - 2 - head.len();
        let text = clean(text);
        for part in command::split_text(&text, room.max(16)) {
            self.raw(&format!("{head}{part}"));
        }
    }

    /// A notice from the server to the client.
    fn notice(&mut self, text: &str) {
        let to = self.target();
        self.say(SERVER, "NOTICE", &to, text);
    }

    /// A message from the command pseudo-user.
    fn service_says(&mut self, text: &str) {
        let to = self.target();
        self.say(&format!("{SERVICE}!p2pchat@{SERVER}"), "PRIVMSG", &to, text);
    }

    fn join_lobby(&mut self, view: &impl View) {
        let lobby = channel(LOBBY);
        let me = nick(&self.me);
        if self.lobby.is_none() {
            self.raw(&format!(":{me}!{me}@{SERVER} JOIN {lobby}"));
        }
        let names: BTreeSet<String> = view.others().into_iter().collect();
        self.numeric("331", &[&lobby], "No topic is set");
        let mut list = vec![me.clone()];
        list.extend(names.iter().map(|n| nick(n)));
        self.names_reply(&lobby, &list);
        self.lobby = Some(names);
    }

    /// 353 lines, as many as needed, and 366.
    fn names_reply(&mut self, chan: &str, names: &[String]) {
        let head = format!(":{SERVER} 353 {} = {chan} :", self.target());
        let mut line = String::new();
        for n in names {
            if head.len() + line.len() + n.len() + 1 > MAX_LINE - 2 {
                self.raw(&format!("{head}{line}"));
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(n);
        }
        if !line.is_empty() {
            self.raw(&format!("{head}{line}"));
        }
        self.numeric("366", &[chan], "End of /NAMES list");
    }

    /// A registered client's command.
    fn command(&mut self, view: &impl View, cmd: &str, p: &[String]) {
        let lobby = channel(LOBBY);
        match cmd {
            "PRIVMSG" | "NOTICE" => {
                let notice = cmd == "NOTICE";
                let (Some(targets), Some(text)) = (p.first(), p.get(1)) else {
                    if !notice {
                        self.numeric("461", &[cmd], "Not enough parameters");
                    }
                    return;
                };
                for t in targets.split(',').filter(|t| !t.is_empty()) {
                    self.privmsg(view, t, text, notice);
                }
            }
            "JOIN" => {
                let Some(chans) = p.first() else {
                    return self.numeric("461", &["JOIN"], "Not enough parameters");
                };
                for c in chans.split(',').filter(|c| !c.is_empty()) {
                    if c == "0" {
                        self.part_lobby();
                    } else if c.eq_ignore_ascii_case(&lobby) {
                        if view.room() != LOBBY {
                            self.run(c, "/join", "403"); // back to the lobby
                        }
                        self.join_lobby(view);
                    } else {
                        self.run(c, &format!("/join {}", room_of(c).unwrap_or(c)), "403");
                    }
                }
            }
            "PART" => {
                let Some(chans) = p.first() else {
                    return self.numeric("461", &["PART"], "Not enough parameters");
                };
                for c in chans.split(',').filter(|c| !c.is_empty()) {
                    if c.eq_ignore_ascii_case(&lobby) {
                        if self.lobby.is_some() {
                            self.part_lobby();
                        } else {
                            self.numeric("442", &[c], "You're not on that channel");
                        }
                    } else {
                        self.run(c, "/leave", "442");
                    }
                }
            }
            "NAMES" => match p.first() {
                Some(c) if !c.eq_ignore_ascii_case(&lobby) => {
                    self.numeric("366", &[&clean_word(c)], "End of /NAMES list");
                }
                _ => {
                    let mut list = vec![nick(view.name())];
                    list.extend(view.others().iter().map(|n| nick(n)));
                    self.names_reply(&lobby, &list);
                }
            },
            "WHO" => {
                let mask = p.first().map_or("*".to_owned(), |m| clean_word(m));
                let chan = if mask.eq_ignore_ascii_case(&lobby) || mask == "*" {
                    Some(lobby.clone())
                } else {
                    None
                };
                let mut all = vec![view.name().to_owned()];
                all.extend(view.others());
                for n in all {
                    let n = nick(&n);
                    if chan.is_none() && !n.eq_ignore_ascii_case(&mask) {
                        continue;
                    }
                    let c = chan.clone().unwrap_or_else(|| "*".into());
                    self.raw(&format!(
                        ":{SERVER} 352 {} {c} {n} {SERVER} {SERVER} {n} H :0 {n}",
                        self.target()
                    ));
                }
                self.numeric("315", &[&mask], "End of WHO list");
            }
            "WHOIS" => {
                let Some(n) = p.last() else {
                    return self.numeric("431", &[], "No nickname given");
                };
                let found = member(view, n);
                let n = clean_word(n);
                if found.is_some() {
                    self.raw(&format!(
                        ":{SERVER} 311 {} {n} {n} {SERVER} * :{n}",
                        self.target()
                    ));
                    // The key fingerprint, as the terminal's :whois.
                    self.run(&n, &format!("/whois {n}"), "401");
                } else {
                    self.numeric("401", &[&n], "No such nick/channel");
                }
                self.numeric("318", &[&n], "End of /WHOIS list");
            }
            "ISON" => {
                let on: Vec<String> = p
                    .iter()
                    .flat_map(|s| s.split(' '))
                    .filter_map(|n| member(view, n))
                    .map(|n| nick(&n))
                    .collect();
                self.numeric("303", &[], &on.join(" "));
            }
            "USERHOST" => {
                let on: Vec<String> = p
                    .iter()
                    .filter_map(|n| member(view, n))
                    .map(|n| format!("{0}=+{0}@{SERVER}", nick(&n)))
                    .collect();
                self.numeric("302", &[], &on.join(" "));
            }
            "MODE" => {
                let Some(t) = p.first() else {
                    return self.numeric("461", &["MODE"], "Not enough parameters");
                };
                let t = clean_word(t);
                if t.eq_ignore_ascii_case(&lobby) {
                    match p.get(1).map(String::as_str) {
                        None => {
                            let me = self.target();
                            self.raw(&format!(":{SERVER} 324 {me} {t} +nt"));
                        }
                        Some("b" | "+b") => self.numeric("368", &[&t], "End of channel ban list"),
                        Some(_) => self.numeric("482", &[&t], "You're not channel operator"),
                    }
                } else if t.starts_with('#') {
                    self.numeric("403", &[&t], "No such channel");
                } else if t.eq_ignore_ascii_case(&nick(&self.me)) {
                    // No user modes: any change is a no-op.
                    self.numeric("221", &[], "+");
                } else {
                    self.numeric("502", &[], "Can't change mode for other users");
                }
            }
            "TOPIC" => match p.first() {
                None => self.numeric("461", &["TOPIC"], "Not enough parameters"),
                Some(c) if c.eq_ignore_ascii_case(&lobby) && p.len() == 1 => {
                    self.numeric("331", &[&lobby], "No topic is set");
                }
                Some(c) if c.eq_ignore_ascii_case(&lobby) => {
                    self.numeric("482", &[&lobby], "You're not channel operator");
                }
                Some(c) => self.numeric("403", &[&clean_word(c)], "No such channel"),
            },
            "LIST" => {
                self.numeric("321", &["Channel"], "Users  Name");
                let n = (view.others().len() + 1).to_string();
                self.numeric("322", &[&lobby, &n], "everyone in the network");
                self.numeric("323", &[], "End of /LIST");
                // The rooms, as the terminal's :rooms shows them, once
                // there are rooms.
                if let Input::Node(c) = command::parse("/rooms") {
                    self.commands.push(c);
                }
            }
            "KICK" => {
                let (Some(c), Some(n)) = (p.first(), p.get(1)) else {
                    return self.numeric("461", &["KICK"], "Not enough parameters");
                };
                if c.eq_ignore_ascii_case(&lobby) {
                    self.numeric("482", &[&lobby], "The lobby has no owner");
                } else {
                    self.run(c, &format!("/kick {n}"), "482");
                }
            }
            "NICK" => {
                let Some(n) = p.first() else {
                    return self.numeric("431", &[], "No nickname given");
                };
                if n != &self.me {
                    self.run(n, &format!("/nick {n}"), "");
                }
            }
            "AWAY" => {
                if p.first().is_some_and(|a| !a.is_empty()) {
                    self.numeric("306", &[], "You have been marked as being away");
                } else {
                    self.numeric("305", &[], "You are no longer marked as being away");
                }
            }
            "P2PCHAT" => {
                let line = p.join(" ");
                self.service(&line);
            }
            "HELP" => self.service("help"),
            _ => self.numeric("421", &[&clean_word(cmd)], "Unknown command"),
        }
    }

    fn part_lobby(&mut self) {
        if self.lobby.take().is_some() {
            let me = nick(&self.me);
            let lobby = channel(LOBBY);
            self.raw(&format!(":{me}!{me}@{SERVER} PART {lobby} :detached"));
        }
    }

    /// A PRIVMSG or NOTICE to `target`.
    fn privmsg(&mut self, view: &impl View, target: &str, text: &str, notice: bool) {
        let lobby = channel(LOBBY);
        if target.eq_ignore_ascii_case(SERVICE) {
            return self.service(text);
        }
        let (action, text) = match ctcp(text) {
            Some(("ACTION", a)) => (true, a),
            // Other CTCP (VERSION, PING...) is not chat: not sent.
            Some(_) => return,
            None => (false, text),
        };
        let here = channel(&view.room());
        if target.eq_ignore_ascii_case(&here) {
            if !view.in_network() {
                if !notice {
                    self.numeric("404", &[&here], "Not in the network yet: nothing was sent");
                }
                return;
            }
            if action {
                return self.run(&here, &format!("/me {text}"), "404");
            }
            // As typed: a line starting with ':' or '/' is text here.
            if let Input::Node(c) = command::text(text) {
                self.commands.push(c);
            }
        } else if target.eq_ignore_ascii_case(&lobby) {
            if !notice {
                let why = format!("You are in {here}: chat goes there (JOIN #lobby to go back)");
                self.numeric("404", &[&lobby], &clean(&why));
            }
        } else if target.starts_with('#') {
            if !notice {
                let t = clean_word(target);
                self.numeric("404", &[&t], "Cannot send to channel (not in that room)");
            }
        } else if let Some(name) = member(view, target) {
            let line = if action {
                format!("/me {text}")
            } else {
                format!("/msg {name} {text}")
            };
            self.run(target, &line, "401");
        } else if !notice {
            self.numeric("401", &[&clean_word(target)], "No such nick/channel");
        }
    }

    /// Runs a line of the command table for a client command about
    /// `what`; a refusal is told as `numeric` (or a notice when empty).
    fn run(&mut self, what: &str, line: &str, numeric: &str) {
        match command::parse(line) {
            Input::Node(Command::Say(_)) | Input::Nothing | Input::Help => {}
            Input::Node(c) => self.commands.push(c),
            Input::Error(e) if numeric.is_empty() => self.notice(&e),
            Input::Error(e) => self.numeric(numeric, &[&clean_word(what)], &clean(&e)),
        }
    }

    /// A line for the command pseudo-user: a p2pchat command, with or
    /// without its `:` or `/`.
    fn service(&mut self, line: &str) {
        let line = line.trim();
        let bare = line.strip_prefix([':', '/']).unwrap_or(line);
        if bare.is_empty() {
            return self.service_says("a p2pchat command, such as: help, who, quit");
        }
        match command::parse(&format!("/{bare}")) {
            Input::Node(Command::Say(_)) => {
                self.service_says("not a command: chat goes to #lobby (try help)");
            }
            Input::Node(c) => self.commands.push(c),
            Input::Help => {
                for l in command::help() {
                    self.service_says(&l);
                }
            }
            Input::Nothing => {}
            Input::Error(e) => self.service_says(&e),
        }
    }

    /// Something the peer shows; `origin`: this client asked for it (its
    /// own chat line is not echoed back to it).
    pub fn show(&mut self, view: &impl View, ev: &Show, origin: bool) {
        if self.reg != Reg::Done || self.closing.is_some() {
            return;
        }
        match ev {
            Show::Joined { via, members } => {
                self.notice(&format!("joined through {via} ({members} members)"));
                // Everyone already there appears as joining.
                let now: BTreeSet<String> = view.others().into_iter().collect();
                if let Some(seen) = &self.lobby {
                    let new: Vec<String> = now.difference(seen).cloned().collect();
                    for n in new {
                        self.member_joined(&n);
                    }
                }
            }
            Show::Chat {
                from,
                room,
                text,
                own,
                ..
            } => {
                if *own && origin {
                    return;
                }
                let chan = channel(room);
                if room == LOBBY && self.lobby.is_none() {
                    return;
                }
                let from = nick(from);
                self.say(&format!("{from}!{from}@{SERVER}"), "PRIVMSG", &chan, text);
            }
            Show::Action {
                from,
                room,
                text,
                own,
                ..
            } => {
                if *own && origin || room == LOBBY && self.lobby.is_none() {
                    return;
                }
                // CTCP ACTION to the room's channel, cut to fit.
                let (chan, from) = (channel(room), nick(from));
                let head = format!(":{from}!{from}@{SERVER} PRIVMSG {chan} :\x01ACTION ");
                let room = MAX_LINE - 3 - head.len();
                for part in command::split_text(&clean(text), room.max(16)) {
                    self.raw(&format!("{head}{part}\x01"));
                }
            }
            Show::MemberJoined(n) => self.member_joined(n),
            Show::MemberLeft { name, lost } => {
                let known = self.lobby.as_mut().is_some_and(|s| s.remove(name));
                if known {
                    let n = nick(name);
                    let why = if *lost { "Connection lost" } else { "Left" };
                    self.raw(&format!(":{n}!{n}@{SERVER} QUIT :{why}"));
                }
            }
            Show::Warning(w) => self.notice(&format!("p2pchat: {w}")),
            Show::Info(i) => self.notice(i),
            Show::Private {
                from,
                to,
                text,
                own,
                ..
            } => self.private_message(from, to, text, *own, origin),
            #[allow(unreachable_patterns)]
            _ => {
                // What has no IRC form of its own yet (a feature's new
                // events) is shown as the plain lines, as notices.
                for l in crate::term::ui::plain(ev) {
                    self.notice(&l);
                }
            }
        }
        self.sync_name(view);
        if !matches!(
            ev,
            Show::Chat { .. }
                | Show::Joined { .. }
                | Show::MemberJoined(_)
                | Show::MemberLeft { .. }
        ) {
            // Who is present, whatever event changed it (a rename shows
            // as the old name quitting and the new one joining). Not
            // after the events that say who came and went, which have
            // done it with their reasons, nor after chat lines, which are
            // many and change no one.
            self.sync_members(view);
        }
        self.sync_room(view);
    }

    /// Our own name changed (a rename): the client's nick follows.
    fn sync_name(&mut self, view: &impl View) {
        if view.name() == self.me {
            return;
        }
        let (old, new) = (nick(&self.me), nick(view.name()));
        self.raw(&format!(":{old}!{old}@{SERVER} NICK :{new}"));
        self.me = view.name().to_owned();
    }

    /// The lobby's nick list follows the members present.
    fn sync_members(&mut self, view: &impl View) {
        let Some(seen) = &self.lobby else {
            return;
        };
        let now: BTreeSet<String> = view.others().into_iter().collect();
        let gone: Vec<String> = seen.difference(&now).cloned().collect();
        let new: Vec<String> = now.difference(seen).cloned().collect();
        for n in gone {
            let n = nick(&n);
            self.raw(&format!(":{n}!{n}@{SERVER} QUIT :Left"));
        }
        for n in &new {
            let n = nick(n);
            let lobby = channel(LOBBY);
            self.raw(&format!(":{n}!{n}@{SERVER} JOIN {lobby}"));
        }
        self.lobby = Some(now);
    }

    /// Shows the client in the channel of the room we are in now, and out
    /// of the one we left: whatever event moved us, the channels follow.
    fn sync_room(&mut self, view: &impl View) {
        let now = Some(view.room()).filter(|r| r != LOBBY);
        if now == self.room {
            return;
        }
        let me = nick(&self.me);
        if let Some(old) = self.room.take() {
            let c = clean_word(&channel(&old));
            self.raw(&format!(":{me}!{me}@{SERVER} PART {c} :left the room"));
        }
        if let Some(r) = now {
            let c = clean_word(&channel(&r));
            self.raw(&format!(":{me}!{me}@{SERVER} JOIN {c}"));
            self.numeric("331", &[&c], "No topic is set");
            let mut list = vec![me];
            list.extend(view.room_members(&r).iter().map(|n| nick(n)));
            self.names_reply(&c, &list);
            self.room = Some(r);
        }
    }

    /// A private message in its IRC form, for private messages when they
    /// are shown (`Show::Private`): to us, a PRIVMSG from its sender;
    /// ours (`own`), a PRIVMSG from us to `to`, except to the client that
    /// sent it.
    pub fn private_message(&mut self, from: &str, to: &str, text: &str, own: bool, origin: bool) {
        if self.reg != Reg::Done || self.closing.is_some() || (own && origin) {
            return;
        }
        let (from, to) = (nick(from), nick(to));
        self.say(&format!("{from}!{from}@{SERVER}"), "PRIVMSG", &to, text);
    }

    fn member_joined(&mut self, name: &str) {
        let Some(seen) = &mut self.lobby else {
            return;
        };
        if seen.insert(name.to_owned()) {
            let n = nick(name);
            let lobby = channel(LOBBY);
            self.raw(&format!(":{n}!{n}@{SERVER} JOIN {lobby}"));
        }
    }
}

/// The member (us included) whose IRC nick is `irc_nick`, by name.
fn member(view: &impl View, irc_nick: &str) -> Option<String> {
    std::iter::once(view.name().to_owned())
        .chain(view.others())
        .find(|n| nick(n).eq_ignore_ascii_case(irc_nick))
}

/// A member's name as an IRC nick. Names may hold characters that IRC
/// gives a meaning in nicks (`!` and `@` end the nick in a prefix, `,`
/// separates targets, `*` and `?` are masks, a leading `#` makes a
/// channel, a leading `@` or `+` a channel operator in NAMES): each such
/// character is written `¤XX` (its code in hex). No name can hold `¤` (a
/// symbol), so no member can pass for another.
pub fn nick(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        let special = matches!(c, '!' | '@' | ',' | '*' | '?')
            || (i == 0 && matches!(c, '#' | '&' | '$' | '+' | '%' | '~'));
        if special {
            for b in c.to_string().bytes() {
                out.push_str(&format!("¤{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    clean_word(&out)
}

/// The text of a CTCP message (`\x01ACTION waves\x01`): its command and
/// the rest.
fn ctcp(text: &str) -> Option<(&str, &str)> {
    let inner = text.strip_prefix('\u{1}')?;
    let inner = inner.strip_suffix('\u{1}').unwrap_or(inner);
    Some(inner.split_once(' ').unwrap_or((inner, "")))
}

/// Text from the network made safe for a line: controls shown as `^X`
/// (as on the terminal), so no CR, LF or NUL ends a line early.
fn clean(s: &str) -> String {
    escape_controls(s)
}

/// A word of a line (a nick, a channel): as [`clean`], with spaces as `_`
/// and no leading `:`.
fn clean_word(s: &str) -> String {
    let mut w = clean(s).replace(' ', "_");
    if w.starts_with(':') {
        w.replace_range(..1, "_");
    }
    if w.is_empty() { "*".into() } else { w }
}

/// A parsed line: its command and parameters (the last one may hold
/// spaces, after `:`). Tags (`@...`) and the source prefix are skipped.
#[derive(Debug, PartialEq, Eq)]
struct Message {
    command: String,
    params: Vec<String>,
}

fn parse(line: &str) -> Option<Message> {
    let mut rest = line.trim_start_matches(' ');
    for lead in ['@', ':'] {
        if rest.starts_with(lead) {
            rest = rest
                .split_once(' ')
                .map_or("", |(_, r)| r)
                .trim_start_matches(' ');
        }
    }
    let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
    if command.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        if let Some(trailing) = rest.strip_prefix(':') {
            params.push(trailing.to_owned());
            break;
        }
        let (p, r) = rest.split_once(' ').unwrap_or((rest, ""));
        params.push(p.to_owned());
        rest = r;
    }
    Some(Message {
        command: command.to_owned(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Peer {
        name: &'static str,
        others: Vec<String>,
        member: bool,
        room: &'static str,
    }

    impl View for Peer {
        fn name(&self) -> &str {
            self.name
        }
        fn others(&self) -> Vec<String> {
            self.others.clone()
        }
        fn in_network(&self) -> bool {
            self.member
        }
        fn room(&self) -> String {
            self.room.to_owned()
        }
        fn room_members(&self, _: &str) -> Vec<String> {
            vec!["carol".into()]
        }
    }

    fn alice() -> Peer {
        Peer {
            name: "alice",
            others: vec!["bob".into(), "carol".into()],
            member: true,
            room: LOBBY,
        }
    }

    fn lines(s: &mut Session) -> Vec<String> {
        let out = String::from_utf8(s.take_output()).unwrap();
        assert!(out.is_empty() || out.ends_with("\r\n"), "{out:?}");
        out.split_terminator("\r\n").map(str::to_owned).collect()
    }

    fn registered(view: &Peer) -> Session {
        let mut s = Session::new(None, 0);
        s.feed(view, b"NICK al\r\nUSER al 0 * :Al\r\n", 0);
        let _ = lines(&mut s);
        s
    }

    /// Every line in the RFC shape: `:prefix COMMAND params`, at most 512
    /// bytes with CRLF.
    fn well_formed(l: &str) {
        assert!(l.len() + 2 <= MAX_LINE, "{} bytes: {l}", l.len());
        assert!(l.starts_with(':'), "{l}");
        assert!(!l.contains(['\r', '\n', '\0']), "{l}");
    }

    #[test]
    fn registration_gives_the_welcome_numerics_and_forces_the_nick() {
        let view = alice();
        let mut s = Session::new(None, 0);
        s.feed(&view, b"CAP LS 302\r\nNICK al\r\n", 0);
        assert_eq!(lines(&mut s), [":p2pchat CAP * LS :"]);
        s.feed(&view, b"USER al 0 * :Al Ice\r\n", 0);
        assert!(lines(&mut s).is_empty(), "waits for CAP END");
        s.feed(&view, b"CAP END\r\n", 0);
        let l = lines(&mut s);
        l.iter().for_each(|l| well_formed(l));
        let codes: Vec<&str> = l.iter().map(|l| l.split(' ').nth(1).unwrap()).collect();
        assert_eq!(
            codes,
            [
                "001", "002", "003", "004", "005", "375", "372", "372", "372", "376", "NICK",
                "JOIN", "331", "353", "366"
            ]
        );
        assert!(l[0].starts_with(":p2pchat 001 al :Welcome"));
        assert_eq!(l[3], ":p2pchat 004 al p2pchat 0.1.0 i nt");
        for tok in [
            "CASEMAPPING=ascii",
            "CHANTYPES=#",
            "CHANNELLEN=",
            "NICKLEN=32",
        ] {
            assert!(l[4].contains(tok), "{tok}: {}", l[4]);
        }
        assert!(l[4].ends_with(" :are supported by this server"));
        assert_eq!(l[10], ":al!al@p2pchat NICK :alice");
        assert_eq!(l[11], ":alice!alice@p2pchat JOIN #lobby");
        assert_eq!(l[13], ":p2pchat 353 alice = #lobby :alice bob carol");
        assert_eq!(l[14], ":p2pchat 366 alice #lobby :End of /NAMES list");
        assert!(s.registered());
    }

    #[test]
    fn the_right_nick_is_not_changed_and_lf_alone_ends_lines() {
        let view = alice();
        let mut s = Session::new(None, 0);
        s.feed(&view, b"NICK alice\nUSER a 0 * :A\n", 0);
        let l = lines(&mut s);
        assert!(!l.iter().any(|l| l.contains(" NICK ")));
        assert!(l.iter().any(|l| l == ":alice!alice@p2pchat JOIN #lobby"));
    }

    #[test]
    fn before_registration_only_registration_commands() {
        let view = alice();
        let mut s = Session::new(None, 0);
        s.feed(&view, b"PRIVMSG #lobby :hi\r\nPING x\r\n", 0);
        assert_eq!(
            lines(&mut s),
            [
                ":p2pchat 451 * :You have not registered",
                ":p2pchat PONG p2pchat :x"
            ]
        );
        assert!(s.take_commands().is_empty());
        s.feed(&view, b"USER a\r\n", 0);
        assert_eq!(
            lines(&mut s),
            [":p2pchat 461 * USER :Not enough parameters"]
        );
    }

    #[test]
    fn password_is_required_when_set() {
        let view = alice();
        let mut s = Session::new(Some(Password::new(b"sesame")), 0);
        s.feed(
            &view,
            b"NICK a\r\nUSER a 0 * :a\r\nPRIVMSG #lobby :x\r\n",
            0,
        );
        assert_eq!(
            lines(&mut s),
            [
                ":p2pchat 464 a :Password required (PASS)",
                "ERROR :Closing link: Password required (PASS)"
            ]
        );
        assert!(s.closing().is_some());
        let mut s = Session::new(Some(Password::new(b"sesame")), 0);
        s.feed(&view, b"PASS wrong\r\nNICK a\r\nUSER a 0 * :a\r\n", 0);
        assert_eq!(lines(&mut s)[0], ":p2pchat 464 a :Password incorrect");
        let mut s = Session::new(Some(Password::new(b"sesame")), 0);
        s.feed(&view, b"PASS sesame\r\nNICK a\r\nUSER a 0 * :a\r\n", 0);
        assert!(s.registered());
        s.feed(&view, b"PASS again\r\n", 0);
        assert!(lines(&mut s).last().unwrap().contains(" 462 "));
    }

    #[test]
    fn chat_goes_to_the_peer_and_comes_back_as_privmsg() {
        let view = alice();
        let mut s = registered(&view);
        s.feed(&view, b"PRIVMSG #lobby :hello :) /who\r\n", 0);
        assert_eq!(s.take_commands(), [Command::Say("hello :) /who".into())]);
        s.feed(&view, b"PRIVMSG #Lobby :/q\r\n", 0);
        assert_eq!(
            s.take_commands(),
            [Command::Say("/q".into())],
            "text, not a command"
        );
        let chat = |from: &str, own| Show::Chat {
            from: from.into(),
            room: LOBBY.into(),
            text: "hi\x1b[2J\r\nQUIT".into(),
            own,
            said: None,
            id: None,
        };
        s.show(&view, &chat("bob", false), false);
        s.show(&view, &chat("alice", true), true);
        s.show(&view, &chat("alice", true), false);
        assert_eq!(
            lines(&mut s),
            [
                ":bob!bob@p2pchat PRIVMSG #lobby :hi^[[2J^M^JQUIT",
                ":alice!alice@p2pchat PRIVMSG #lobby :hi^[[2J^M^JQUIT"
            ]
        );
    }

    #[test]
    fn actions_are_ctcp_action_to_the_room() {
        let view = alice();
        let mut s = registered(&view);
        let action = |from: &str, room: &str, own| Show::Action {
            from: from.into(),
            room: room.into(),
            text: "waves\x01".into(),
            own,
            said: None,
            id: None,
        };
        s.show(&view, &action("bob", "dev", false), false);
        s.show(&view, &action("bob", LOBBY, false), false);
        s.show(&view, &action("alice", "dev", true), true);
        assert_eq!(
            lines(&mut s),
            [
                ":bob!bob@p2pchat PRIVMSG #dev :\x01ACTION waves^A\x01",
                ":bob!bob@p2pchat PRIVMSG #lobby :\x01ACTION waves^A\x01",
            ]
        );
    }

    #[test]
    fn chat_before_the_network_is_refused() {
        let mut view = alice();
        view.member = false;
        let mut s = registered(&view);
        s.feed(&view, b"PRIVMSG #lobby :early\r\n", 0);
        assert!(s.take_commands().is_empty());
        assert_eq!(
            lines(&mut s),
            [":p2pchat 404 alice #lobby :Not in the network yet: nothing was sent"]
        );
    }

    #[test]
    fn long_chat_is_cut_into_lines_that_fit() {
        let view = alice();
        let mut s = registered(&view);
        let text = "word ".repeat(800);
        s.show(
            &view,
            &Show::Chat {
                from: "bob".into(),
                room: LOBBY.into(),
                text: text.clone(),
                own: false,
                said: None,
                id: None,
            },
            false,
        );
        let l = lines(&mut s);
        assert!(l.len() >= 8, "{}", l.len());
        let mut back = String::new();
        for x in &l {
            well_formed(x);
            back.push_str(x.split_once(" :").unwrap().1);
        }
        assert_eq!(back, text);
    }

    #[test]
    fn long_input_lines_are_refused_whole() {
        let view = alice();
        let mut s = registered(&view);
        let mut long = b"PRIVMSG #lobby :".to_vec();
        long.extend(std::iter::repeat_n(b'x', 600));
        // Split across reads, as TCP may.
        s.feed(&view, &long[..300], 0);
        s.feed(&view, &long[300..], 0);
        s.feed(&view, b"\r\nPRIVMSG #lobby :short\r\n", 0);
        assert_eq!(
            lines(&mut s),
            [":p2pchat 417 alice :Input line was too long"]
        );
        assert_eq!(s.take_commands(), [Command::Say("short".into())]);
        // 510 bytes and CRLF is the longest line taken.
        let mut edge = b"PRIVMSG #lobby :".to_vec();
        edge.resize(510, b'y');
        edge.extend_from_slice(b"\r\n");
        s.feed(&view, &edge, 0);
        assert_eq!(s.take_commands().len(), 1);
        edge.insert(20, b'y');
        s.feed(&view, &edge, 0);
        assert!(s.take_commands().is_empty());
    }

    #[test]
    fn bad_utf8_is_replaced_not_refused() {
        let view = alice();
        let mut s = registered(&view);
        s.feed(&view, b"PRIVMSG #lobby :caf\xe9 ok\r\n", 0);
        assert_eq!(s.take_commands(), [Command::Say("caf\u{fffd} ok".into())]);
    }

    #[test]
    fn members_come_and_go_as_join_and_quit() {
        let mut view = alice();
        let mut s = registered(&view);
        view.others.push("dave".into());
        s.show(&view, &Show::MemberJoined("dave".into()), false);
        s.show(&view, &Show::MemberJoined("dave".into()), false);
        s.show(
            &view,
            &Show::MemberLeft {
                name: "bob".into(),
                lost: false,
            },
            false,
        );
        s.show(
            &view,
            &Show::MemberLeft {
                name: "carol".into(),
                lost: true,
            },
            false,
        );
        assert_eq!(
            lines(&mut s),
            [
                ":dave!dave@p2pchat JOIN #lobby",
                ":bob!bob@p2pchat QUIT :Left",
                ":carol!carol@p2pchat QUIT :Connection lost"
            ]
        );
    }

    #[test]
    fn joining_the_network_shows_who_was_there() {
        let mut view = alice();
        view.others.clear();
        view.member = false;
        let mut s = registered(&view);
        view.others = vec!["bob".into()];
        view.member = true;
        s.show(
            &view,
            &Show::Joined {
                via: "127.0.0.1:4000".parse().unwrap(),
                members: 2,
            },
            false,
        );
        assert_eq!(
            lines(&mut s),
            [
                ":p2pchat NOTICE alice :joined through 127.0.0.1:4000 (2 members)",
                ":bob!bob@p2pchat JOIN #lobby"
            ]
        );
    }

    #[test]
    fn ping_both_ways_and_timeouts() {
        let view = alice();
        let mut s = registered(&view);
        s.feed(&view, b"PING :12345\r\n", 10);
        assert_eq!(lines(&mut s), [":p2pchat PONG p2pchat :12345"]);
        assert_eq!(s.deadline(), Some(10 + PING_AFTER));
        s.tick(10 + PING_AFTER);
        assert_eq!(lines(&mut s), ["PING :p2pchat"]);
        s.feed(&view, b"PONG :p2pchat\r\n", 20 + PING_AFTER);
        assert!(lines(&mut s).is_empty());
        s.tick(20 + 2 * PING_AFTER);
        let _ = lines(&mut s);
        s.tick(20 + 2 * PING_AFTER + PING_TIMEOUT);
        assert_eq!(lines(&mut s), ["ERROR :Closing link: Ping timeout"]);
        assert_eq!(s.closing(), Some("Ping timeout"));
        let mut slow = Session::new(None, 0);
        slow.tick(PING_TIMEOUT);
        assert_eq!(slow.closing(), Some("Registration timed out"));
    }

    #[test]
    fn unknown_commands_get_421_and_quit_detaches() {
        let view = alice();
        let mut s = registered(&view);
        s.feed(&view, b"FROB x\r\n", 0);
        assert_eq!(lines(&mut s), [":p2pchat 421 alice FROB :Unknown command"]);
        s.feed(&view, b"QUIT :bye\r\nPRIVMSG #lobby :after\r\n", 0);
        assert_eq!(lines(&mut s), ["ERROR :Closing link: Client quit"]);
        assert!(s.take_commands().is_empty(), "QUIT is not :q");
    }

    #[test]
    fn p2pchat_commands_through_the_service_and_p2pchat() {
        let view = alice();
        let mut s = registered(&view);
        s.feed(&view, b"PRIVMSG *p2pchat :who\r\nP2PCHAT :q\r\n", 0);
        assert_eq!(s.take_commands(), [Command::Who, Command::Quit]);
        s.feed(&view, b"PRIVMSG *p2pchat :help\r\n", 0);
        let l = lines(&mut s);
        assert!(
            l.iter()
                .any(|l| l.starts_with(":*p2pchat!p2pchat@p2pchat PRIVMSG alice :"))
        );
        s.feed(&view, b"PRIVMSG *p2pchat :frob\r\n", 0);
        assert_eq!(
            lines(&mut s),
            [":*p2pchat!p2pchat@p2pchat PRIVMSG alice :unknown command /frob (try /help)"]
        );
    }

    #[test]
    fn features_to_come_answer_sensibly_through_the_command_table() {
        let view = alice();
        let mut s = registered(&view);
        s.feed(
            &view,
            // (JOIN is a room command now, answered by the node.)
            b"PRIVMSG bob :psst\r\nPRIVMSG nobody :x\r\nPRIVMSG #rust :x\r\n",
            0,
        );
        let l = lines(&mut s);
        assert_eq!(
            l,
            [
                ":p2pchat 401 alice nobody :No such nick/channel",
                ":p2pchat 404 alice #rust :Cannot send to channel (not in that room)",
            ]
        );
        // Only the private message to bob goes out; nothing as chat.
        assert_eq!(
            s.take_commands(),
            [Command::Msg("bob".into(), "psst".into())]
        );
        s.feed(&view, b"PRIVMSG #lobby :\x01ACTION waves\x01\r\n", 0);
        s.feed(&view, b"NICK alicia\r\n", 0);
        assert_eq!(
            s.take_commands(),
            [
                crate::node::Command::Me("waves".into()),
                crate::node::Command::Nick("alicia".into())
            ]
        );
    }

    #[test]
    fn channel_queries_get_their_numerics() {
        let view = alice();
        let mut s = registered(&view);
        s.feed(
            &view,
            b"MODE #lobby\r\nMODE #lobby b\r\nMODE alice +i\r\nWHO #lobby\r\nNAMES #lobby\r\n",
            0,
        );
        let l = lines(&mut s);
        l.iter().for_each(|l| well_formed(l));
        assert_eq!(l[0], ":p2pchat 324 alice #lobby +nt");
        assert!(l[1].starts_with(":p2pchat 368 alice #lobby"));
        assert_eq!(l[2], ":p2pchat 221 alice :+");
        assert_eq!(
            l[3],
            ":p2pchat 352 alice #lobby alice p2pchat p2pchat alice H :0 alice"
        );
        assert!(l[6].starts_with(":p2pchat 315 alice #lobby"));
        assert_eq!(l[7], ":p2pchat 353 alice = #lobby :alice bob carol");
        s.feed(&view, b"PART #lobby\r\n", 0);
        assert_eq!(
            lines(&mut s),
            [":alice!alice@p2pchat PART #lobby :detached"]
        );
        s.show(
            &view,
            &Show::Chat {
                from: "bob".into(),
                room: LOBBY.into(),
                text: "unseen".into(),
                own: false,
                said: None,
                id: None,
            },
            false,
        );
        assert!(lines(&mut s).is_empty(), "parted: not shown");
        s.feed(&view, b"ISON bob nobody carol\r\n", 0);
        assert_eq!(lines(&mut s), [":p2pchat 303 alice :bob carol"]);
    }

    #[test]
    fn the_channels_follow_the_room_we_are_in() {
        // How rooms plug in: the view says where we are, the channels
        // follow, and chat to the room's channel is chat.
        let mut view = alice();
        let mut s = registered(&view);
        view.room = "rust";
        s.show(&view, &Show::Info("moved".into()), false);
        assert_eq!(
            lines(&mut s),
            [
                ":p2pchat NOTICE alice :moved",
                ":alice!alice@p2pchat JOIN #rust",
                ":p2pchat 331 alice #rust :No topic is set",
                ":p2pchat 353 alice = #rust :alice carol",
                ":p2pchat 366 alice #rust :End of /NAMES list",
            ]
        );
        s.feed(
            &view,
            b"PRIVMSG #rust :in the room\r\nPRIVMSG #lobby :x\r\n",
            0,
        );
        assert_eq!(s.take_commands(), [Command::Say("in the room".into())]);
        assert_eq!(
            lines(&mut s),
            [
                ":p2pchat 404 alice #lobby :You are in #rust: chat goes there (JOIN #lobby to go back)"
            ]
        );
        view.room = LOBBY;
        s.show(&view, &Show::Info("back".into()), false);
        assert_eq!(
            lines(&mut s)[1],
            ":alice!alice@p2pchat PART #rust :left the room"
        );
    }

    /// Every numeric a session sends has the parameters RFC 2812 and the
    /// modern IRC client documentation give it: `<client>` first, then
    /// these many middle parameters, then the trailing text (`true`) or
    /// not.
    #[test]
    fn numerics_have_their_documented_parameters() {
        let shape = |code: &str| -> Option<(usize, bool)> {
            Some(match code {
                "001" | "002" | "003" | "375" | "372" | "376" | "422" | "323" | "451" | "462"
                | "464" | "417" | "431" | "305" | "306" => (0, true),
                "004" => (4, false), // servername version umodes cmodes
                "221" => (0, true),  // +modes (as trailing here)
                "302" | "303" => (0, true),
                "315" | "331" | "366" | "368" | "401" | "403" | "404" | "421" | "442" | "461"
                | "482" | "318" => (1, true),
                "321" => (1, true),  // "Channel" :Users  Name
                "322" => (2, true),  // channel count :topic
                "324" => (2, false), // channel modestring
                "352" => (6, true),  // channel user host server nick flags :hop real
                "353" => (2, true),  // symbol channel :names
                "311" => (4, true),  // nick user host * :real
                "410" => (1, true),
                _ => return None,
            })
        };
        let view = alice();
        let mut s = Session::new(None, 0);
        let script = b"PRIVMSG #lobby :early\r\nCAP LS 302\r\nCAP FROB\r\nNICK al\r\n\
            USER al 0 * :Al\r\nCAP END\r\nPASS x\r\nNAMES\r\nWHO #lobby\r\nWHO bob\r\n\
            WHOIS bob\r\nWHOIS nobody\r\nISON bob\r\nUSERHOST bob carol\r\nMODE #lobby\r\n\
            MODE #lobby b\r\nMODE #lobby +m\r\nMODE alice\r\nTOPIC #lobby\r\n\
            TOPIC #lobby :new\r\nLIST\r\nAWAY :off\r\nAWAY\r\nJOIN #rust\r\nPART #rust\r\n\
            PART #nowhere\r\nPRIVMSG nobody :x\r\nPRIVMSG #rust :x\r\nKICK #lobby bob\r\n\
            FROB\r\nPRIVMSG\r\nNAMES #other\r\nTOPIC #other\r\nPART #lobby\r\nPART #lobby\r\n";
        s.feed(&view, script, 0);
        let mut long = vec![b'x'; 600];
        long.extend_from_slice(b"\r\n");
        s.feed(&view, &long, 0);
        let mut seen = std::collections::BTreeSet::new();
        for l in lines(&mut s) {
            well_formed(&l);
            let m = parse(&l).unwrap();
            if !m.command.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let has_trailing = l.split_once(" :").is_some();
            if m.command == "005" {
                // 1 to 13 tokens, then ":are supported by this server".
                assert!((3..=15).contains(&m.params.len()), "{l}");
                assert_eq!(m.params.last().unwrap(), "are supported by this server");
                seen.insert(m.command);
                continue;
            }
            let (middle, trailing) =
                shape(&m.command).unwrap_or_else(|| panic!("undocumented numeric: {l}"));
            assert_eq!(has_trailing, trailing, "{l}");
            assert_eq!(m.params.len(), 1 + middle + usize::from(trailing), "{l}");
            assert!(matches!(m.params[0].as_str(), "*" | "al" | "alice"), "{l}");
            seen.insert(m.command);
        }
        for code in [
            "001", "004", "005", "353", "366", "352", "315", "311", "318", "401", "421", "324",
            "461", "451", "417", "442", "403", "404", "482", "322",
        ] {
            assert!(seen.contains(code), "{code} not exercised");
        }
    }

    /// Bad input is normal input: random lines and bytes never panic, and
    /// every line sent back is well formed.
    #[test]
    fn random_input_gives_well_formed_output() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let words: &[&[u8]] = &[
            b"NICK",
            b"USER",
            b"PASS",
            b"CAP",
            b"LS",
            b"END",
            b"REQ",
            b"PRIVMSG",
            b"NOTICE",
            b"JOIN",
            b"PART",
            b"#lobby",
            b"#",
            b"*p2pchat",
            b"P2PCHAT",
            b"WHO",
            b"WHOIS",
            b"MODE",
            b"KICK",
            b"PING",
            b"PONG",
            b"QUIT",
            b"LIST",
            b"ISON",
            b":",
            b" ",
            b"\r\n",
            b"\n",
            b"\r",
            b"\0",
            b"\x01ACTION ",
            b"\x01",
            b"\xff\xfe",
            b"\xc3",
            b"bob",
            b"alice",
            b"0",
            b",",
            b"@t=1",
            b":src",
            b"x",
        ];
        for round in 0..300 {
            let view = alice();
            let mut s = if round % 2 == 0 {
                registered(&view)
            } else {
                Session::new(Some(Password::new(b"pw")), 0)
            };
            for _ in 0..40 {
                let mut bytes = Vec::new();
                for _ in 0..(next() % 12) {
                    bytes.extend_from_slice(words[(next() % words.len() as u64) as usize]);
                    if next() % 3 == 0 {
                        bytes.push(b' ');
                    }
                }
                if next() % 50 == 0 {
                    bytes.extend(std::iter::repeat_n(b'z', 700));
                }
                s.feed(&view, &bytes, 0);
                for l in lines(&mut s) {
                    assert!(l.len() + 2 <= MAX_LINE, "{l:?}");
                    assert!(!l.contains(['\r', '\n', '\0']), "{l:?}");
                }
                let _ = s.take_commands();
                if s.closing().is_some() {
                    break;
                }
            }
        }
    }

    #[test]
    fn names_irc_gives_a_meaning_are_escaped_both_ways() {
        assert_eq!(nick("bob"), "bob");
        assert_eq!(nick("@bob"), "¤40bob");
        assert_eq!(nick("a!b@c"), "a¤21b¤40c");
        assert_eq!(nick("#x#"), "¤23x#");
        assert_eq!(nick("é"), "é");
        assert!(
            crate::name::valid("¤40bob").is_err(),
            "no name looks escaped"
        );
        let mut view = alice();
        view.others = vec!["@carol".into(), "a!b".into()];
        let mut s = registered(&view);
        s.feed(&view, "NAMES #lobby\r\nISON ¤40carol a!b\r\n".as_bytes(), 0);
        assert_eq!(
            lines(&mut s),
            [
                ":p2pchat 353 alice = #lobby :alice ¤40carol a¤21b",
                ":p2pchat 366 alice #lobby :End of /NAMES list",
                ":p2pchat 303 alice :¤40carol",
            ]
        );
        view.others.push("x,y".into());
        s.show(&view, &Show::MemberJoined("x,y".into()), false);
        s.show(
            &view,
            &Show::Chat {
                from: "@carol".into(),
                room: LOBBY.into(),
                text: "hi".into(),
                own: false,
                said: None,
                id: None,
            },
            false,
        );
        assert_eq!(
            lines(&mut s),
            [
                ":x¤2Cy!x¤2Cy@p2pchat JOIN #lobby",
                ":¤40carol!¤40carol@p2pchat PRIVMSG #lobby :hi"
            ]
        );
        // A private message to an escaped nick names the member.
        s.feed(&view, "PRIVMSG ¤40carol :psst\r\n".as_bytes(), 0);
        assert_eq!(
            s.take_commands(),
            [Command::Msg("@carol".into(), "psst".into())]
        );
    }

    #[test]
    fn private_messages_are_privmsg_between_nicks() {
        let view = alice();
        let mut s = registered(&view);
        s.private_message("bob", "alice", "psst", false, false);
        s.private_message("alice", "@carol", "mine", true, false);
        s.private_message("alice", "bob", "echo", true, true);
        assert_eq!(
            lines(&mut s),
            [
                ":bob!bob@p2pchat PRIVMSG alice :psst",
                ":alice!alice@p2pchat PRIVMSG ¤40carol :mine",
            ]
        );
    }

    #[test]
    fn the_nick_list_and_our_nick_follow_whatever_changed_them() {
        // A rename (not an event this build knows): the client still
        // sees the right nicks.
        let mut view = alice();
        let mut s = registered(&view);
        view.name = "alicia";
        view.others = vec!["bob".into(), "caroline".into()];
        s.show(&view, &Show::Info("renamed".into()), false);
        assert_eq!(
            lines(&mut s),
            [
                ":p2pchat NOTICE alice :renamed",
                ":alice!alice@p2pchat NICK :alicia",
                ":carol!carol@p2pchat QUIT :Left",
                ":caroline!caroline@p2pchat JOIN #lobby",
            ]
        );
        s.feed(&view, b"PING x\r\n", 0);
        assert_eq!(lines(&mut s), [":p2pchat PONG p2pchat :x"]);
        s.feed(&view, b"FROB\r\n", 0);
        assert_eq!(lines(&mut s), [":p2pchat 421 alicia FROB :Unknown command"]);
    }

    #[test]
    fn parse_lines() {
        let m = parse("@t=1 :src PRIVMSG #a :hi there ").unwrap();
        assert_eq!(m.command, "PRIVMSG");
        assert_eq!(m.params, ["#a", "hi there "]);
        let m = parse("NICK   bob  ").unwrap();
        assert_eq!(m.params, ["bob"]);
        assert!(parse("").is_none());
        assert!(parse("   ").is_none());
        assert!(parse(":only-a-prefix").is_none());
        assert_eq!(parse("PING :").unwrap().params, [""]);
    }
}
