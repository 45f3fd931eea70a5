//! The IRC gateway (`--irc`) with real peers on 127.0.0.1 and a raw IRC
//! client over TCP: registration, #lobby both ways with terminal peers,
//! members joining and leaving, PING, unknown commands, long lines, a
//! client that stops reading, passwords.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};
use util::{DEADLINE, Peer, Stream};

/// A raw IRC client: lines out, lines in (with deadlines).
struct Irc {
    s: TcpStream,
    buf: Vec<u8>,
    seen: Vec<String>,
}

impl Irc {
    fn connect(port: u16) -> Irc {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        Irc {
            s,
            buf: Vec::new(),
            seen: Vec::new(),
        }
    }

    fn send(&mut self, line: &str) {
        self.s.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    }

    fn bytes(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// The next line, or None at end of stream or the deadline.
    fn line(&mut self, until: Instant) -> Option<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.buf.drain(..=i).collect();
                assert!(raw.ends_with(b"\r\n"), "not CRLF: {raw:?}");
                assert!(raw.len() <= 512, "{} bytes: {raw:?}", raw.len());
                let l = String::from_utf8(raw[..raw.len() - 2].to_vec()).expect("UTF-8");
                self.seen.push(l.clone());
                return Some(l);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            let mut b = [0u8; 4096];
            match self.s.read(&mut b) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return None,
            }
        }
    }

    /// Waits for a line that `pred` accepts; fails with what was seen.
    fn expect_by(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + DEADLINE;
        while let Some(l) = self.line(until) {
            if pred(&l) {
                return l;
            }
        }
        panic!("IRC: no line {what} in:\n{}", self.seen.join("\n"));
    }

    fn expect(&mut self, line: &str) -> String {
        self.expect_by(&format!("{line:?}"), |l| l == line)
    }

    fn expect_starts(&mut self, head: &str) -> String {
        self.expect_by(&format!("starting {head:?}"), |l| l.starts_with(head))
    }

    /// Registers as `nick` and reads up to the end of the lobby's names.
    fn register(&mut self, nick: &str) -> Vec<String> {
        let from = self.seen.len();
        self.send("CAP LS 302");
        self.send(&format!("NICK {nick}"));
        self.send(&format!("USER {nick} 0 * :{nick} test"));
        self.send("CAP END");
        self.expect_by("366 (end of names)", |l| l.contains(" 366 "));
        self.seen[from..].to_vec()
    }

    /// Reads until the server closes the connection; fails at the deadline.
    fn expect_closed(&mut self) {
        let until = Instant::now() + DEADLINE;
        while self.line(until).is_some() {}
        assert!(
            Instant::now() < until,
            "IRC: still open:\n{}",
            self.seen.join("\n")
        );
    }
}

/// A peer with the gateway on a free loopback port, and that port.
fn with_irc(name: &str, via: Option<u16>, env: &[(&str, &str)]) -> (Peer, u16) {
    let mut p = Peer::launch_env(name, &["--irc", "0"], via, Stdio::piped(), env);
    let l = p.expect_contains("irc on 127.0.0.1:");
    let port = l.rsplit(':').next().unwrap().parse().unwrap();
    (p, port)
}

#[test]
fn registration_numerics_and_lobby_chat_both_ways() {
    let (mut alice, irc_port) = with_irc("alice", None, &[]);
    let mut bob = Peer::join("bob", alice.port(), 2);
    alice.expect_line("* bob joined");
    let mut c = Irc::connect(irc_port);
    let got = c.register("ali");
    // RFC 2812 / modern IRC formats: ":server NNN target params :text".
    let codes: Vec<&str> = got.iter().filter_map(|l| l.split(' ').nth(1)).collect();
    assert_eq!(
        codes,
        [
            "CAP", "001", "002", "003", "004", "005", "375", "372", "372", "372", "376", "NICK",
            "JOIN", "331", "353", "366"
        ],
        "{got:#?}"
    );
    assert!(got[1].starts_with(":p2pchat 001 ali :Welcome to the p2pchat network"));
    assert!(got[4].starts_with(":p2pchat 004 ali p2pchat "));
    assert!(got[5].contains(" CASEMAPPING=ascii CHANTYPES=# CHANNELLEN=33 NICKLEN=32 "));
    assert_eq!(got[11], ":ali!ali@p2pchat NICK :alice");
    assert_eq!(got[12], ":alice!alice@p2pchat JOIN #lobby");
    assert_eq!(got[14], ":p2pchat 353 alice = #lobby :alice bob");

    // IRC → the network, and the network → IRC.
    c.send("PRIVMSG #lobby :hello from irc");
    bob.expect_line("alice: hello from irc");
    bob.send("hi irc");
    c.expect(":bob!bob@p2pchat PRIVMSG #lobby :hi irc");
    // The terminal (here plain stdin) still works beside it; its lines
    // reach the IRC client as the peer's own.
    alice.send("from the terminal");
    bob.expect_line("alice: from the terminal");
    c.expect(":alice!alice@p2pchat PRIVMSG #lobby :from the terminal");
    alice.expect_line("bob: hi irc");
    // A line that looks like a command is text in a channel.
    c.send("PRIVMSG #lobby :/q is not a command here");
    bob.expect_line("alice: /q is not a command here");
}

#[test]
fn members_join_and_leave_as_join_and_quit() {
    let (mut alice, irc_port) = with_irc("alice", None, &[]);
    let mut c = Irc::connect(irc_port);
    let got = c.register("alice");
    assert!(got.contains(&":p2pchat 353 alice = #lobby :alice".to_owned()));
    assert!(
        !got.iter().any(|l| l.contains(" NICK ")),
        "same nick: no change"
    );
    let mut bob = Peer::join("bob", alice.port(), 2);
    c.expect(":bob!bob@p2pchat JOIN #lobby");
    let carol = Peer::join("carol", alice.port(), 3);
    c.expect(":carol!carol@p2pchat JOIN #lobby");
    bob.send(":q");
    c.expect(":bob!bob@p2pchat QUIT :Left");
    bob.expect_exit(0);
    let mut carol = carol;
    carol.signal(libc::SIGKILL);
    // The peer notices first (within seconds, up to 12 when the link's
    // keepalive is what tells: see LIMITS), and its client with it.
    let lost = "* carol left (connection lost)";
    alice.expect_on(Stream::Out, lost, &|l| l == lost, Duration::from_secs(20));
    c.expect(":carol!carol@p2pchat QUIT :Connection lost");
    c.send("NAMES #lobby");
    c.expect(":p2pchat 353 alice = #lobby :alice");
}

#[test]
fn ping_unknown_commands_long_lines_and_quit_detaches() {
    let (mut alice, irc_port) = with_irc("alice", None, &[]);
    let mut c = Irc::connect(irc_port);
    c.send("PRIVMSG #lobby :too early");
    c.expect(":p2pchat 451 * :You have not registered");
    c.register("alice");
    c.send("PING :tok 1");
    c.expect(":p2pchat PONG p2pchat :tok 1");
    c.send("FROB a b");
    c.expect(":p2pchat 421 alice FROB :Unknown command");
    // 600 bytes in one line: refused whole, and the next line works.
    let long = format!("PRIVMSG #lobby :{}", "x".repeat(600));
    c.send(&long);
    c.expect(":p2pchat 417 alice :Input line was too long");
    // Bad UTF-8 is taken, its bad bytes replaced.
    let mut bob = Peer::join("bob", alice.port(), 2);
    c.expect(":bob!bob@p2pchat JOIN #lobby");
    c.bytes(b"PRIVMSG #lobby :caf\xe9\r\n");
    bob.expect_line("alice: caf\u{fffd}");
    // A long line from the network arrives as several lines that fit.
    let words = "word ".repeat(700);
    bob.send(words.trim_end());
    let mut back = String::new();
    while back.len() < words.trim_end().len() {
        let l = c.expect_starts(":bob!bob@p2pchat PRIVMSG #lobby :");
        back.push_str(l.split_once(" :").unwrap().1);
    }
    assert_eq!(back, words.trim_end());
    // A PRIVMSG to a member is a private message, and one to us a
    // PRIVMSG from its sender.
    c.send("PRIVMSG bob :psst");
    bob.expect_line("alice (private): psst");
    c.expect(":p2pchat NOTICE alice :* private 1 to bob: delivered");
    bob.send(":msg alice psst back");
    c.expect(":bob!bob@p2pchat PRIVMSG alice :psst back");
    // QUIT detaches the client only: the peer stays in the network.
    c.send("QUIT :bye");
    c.expect("ERROR :Closing link: Client quit");
    c.expect_closed();
    bob.send("still here?");
    alice.expect_line("bob: still here?");
    assert!(alice.is_running());
    alice.assert_no_out("a leave", &|l| l.contains("left"));
}

#[test]
fn the_peer_leaves_through_the_command_pseudo_user() {
    let (mut alice, irc_port) = with_irc("alice", None, &[]);
    let mut bob = Peer::join("bob", alice.port(), 2);
    let mut c = Irc::connect(irc_port);
    c.register("alice");
    c.send("PRIVMSG *p2pchat :who");
    c.expect(":p2pchat NOTICE alice :* 2 members:");
    c.send("PRIVMSG *p2pchat :quit");
    bob.expect_line("* alice left");
    c.expect_starts("ERROR :Closing link:");
    c.expect_closed();
    alice.expect_exit(0);
}

#[test]
fn several_clients_see_each_others_lines() {
    let (mut alice, irc_port) = with_irc("alice", None, &[]);
    let mut bob = Peer::join("bob", alice.port(), 2);
    let mut one = Irc::connect(irc_port);
    one.register("one");
    let mut two = Irc::connect(irc_port);
    two.register("two");
    one.send("PRIVMSG #lobby :from client one");
    bob.expect_line("alice: from client one");
    two.expect(":alice!alice@p2pchat PRIVMSG #lobby :from client one");
    // Client one's own line is not echoed back to it.
    bob.send("next");
    let l = one.expect_starts(":bob!bob@p2pchat PRIVMSG #lobby :");
    assert_eq!(l, ":bob!bob@p2pchat PRIVMSG #lobby :next");
    assert!(!one.seen.iter().any(|l| l.contains("from client one")));
    alice.assert_no_out("an error", &|l| l.contains("p2pchat:"));
}

#[test]
fn at_most_eight_clients_at_once() {
    let (mut alice, irc_port) = with_irc("alice", None, &[]);
    let mut clients: Vec<Irc> = (0..8).map(|_| Irc::connect(irc_port)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.register(&format!("c{i}"));
    }
    let mut ninth = Irc::connect(irc_port);
    ninth.expect("ERROR :Closing link: too many IRC clients");
    ninth.expect_closed();
    alice.expect_err_line("p2pchat: irc: refused a client: 8 are connected");
    // One leaves: there is room again.
    clients.pop().unwrap().send("QUIT");
    let until = Instant::now() + DEADLINE;
    loop {
        let mut c = Irc::connect(irc_port);
        c.send("NICK again");
        c.send("USER again 0 * :again");
        let l = c.expect_by("a welcome or a refusal", |l| {
            l.contains(" 001 ") || l.starts_with("ERROR")
        });
        if l.contains(" 001 ") {
            break;
        }
        assert!(Instant::now() < until, "no room after a client quit");
    }
}

#[test]
fn a_client_that_stops_reading_is_dropped_while_chat_goes_on() {
    let (mut alice, irc_port) = with_irc("alice", None, &[]);
    let mut bob = Peer::join("bob", alice.port(), 2);
    alice.expect_line("* bob joined");
    // The stalled client: registered, then never reads again, with a small
    // receive buffer.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], irc_port).into();
    sock.connect(&addr.into()).unwrap();
    let mut stalled = Irc {
        s: sock.into(),
        buf: Vec::new(),
        seen: Vec::new(),
    };
    stalled.register("stalled");
    let mut good = Irc::connect(irc_port);
    good.register("good");
    // 2,000 lines of 400 bytes from bob (one IRC line each): far more
    // than the stalled client's queue bound (256 KiB) and its socket
    // buffers.
    let n = 2000;
    let pad = "p".repeat(394);
    // The reading client reads all the while, and gets every line.
    let reader = {
        let pad = pad.clone();
        std::thread::spawn(move || {
            for i in 0..n {
                let l = good.expect_starts(":bob!bob@p2pchat PRIVMSG #lobby :");
                assert!(l.ends_with(&format!("{i:05} {pad}")), "line {i}: {l}");
            }
            Instant::now()
        })
    };
    let start = Instant::now();
    for i in 0..n {
        bob.send(&format!("{i:05} {pad}"));
    }
    let last = format!("{:05} {pad}", n - 1);
    alice.expect_line(&format!("bob: {last}"));
    let took = start.elapsed();
    let done = reader.join().expect("the reading client got every line");
    eprintln!(
        "2,000 lines of 400 bytes: at alice after {took:?}, at the reading IRC client after {:?}",
        done - start
    );
    // The stalled one was dropped: what it has buffered, then the end.
    let until = Instant::now() + DEADLINE;
    let mut lines = 0;
    while stalled.line(until).is_some() {
        lines += 1;
    }
    assert!(Instant::now() < until, "stalled client still connected");
    assert!(lines < n, "the stalled client got all {lines} lines");
    alice.expect_err_line("p2pchat: irc: a client stopped reading; dropped");
    eprintln!("the stalled client got {lines} of {n} lines before it was dropped");
    // Chat goes on, and the gateway takes new clients.
    alice.send("after");
    bob.expect_line("alice: after");
    let mut again = Irc::connect(irc_port);
    again.register("again");
}

#[test]
fn passwords_and_non_loopback_addresses() {
    // Not loopback: refused at start without --irc-public (usage), and
    // without a password with it.
    let (st, _, err) = util::run(&["--plain", "--irc", "0.0.0.0:0", "x"], DEADLINE);
    assert_eq!(st.code(), Some(2));
    assert!(err[0].contains("not a loopback address"), "{err:?}");
    let (st, _, err) = util::run(
        &[
            "--plain",
            "-b",
            "127.0.0.1",
            "--irc",
            "0.0.0.0:0",
            "--irc-public",
            "x",
        ],
        DEADLINE,
    );
    assert_eq!(st.code(), Some(1));
    assert!(
        err.iter().any(|l| l.contains("a password is required")),
        "{err:?}"
    );
    // With a password, PASS is required.
    let (_alice, irc_port) = with_irc("alice", None, &[("P2PCHAT_IRC_PASSWORD", "sesame")]);
    let mut c = Irc::connect(irc_port);
    c.send("NICK a");
    c.send("USER a 0 * :a");
    c.expect(":p2pchat 464 a :Password required (PASS)");
    c.expect_closed();
    let mut c = Irc::connect(irc_port);
    c.send("PASS wrong");
    c.send("NICK a");
    c.send("USER a 0 * :a");
    c.expect(":p2pchat 464 a :Password incorrect");
    c.expect_closed();
    let mut c = Irc::connect(irc_port);
    c.send("PASS sesame");
    c.register("a");
    // On a public address with a password it starts.
    let mut p = Peer::launch_env(
        "pub",
        &["--irc", "0.0.0.0:0", "--irc-public"],
        None,
        Stdio::piped(),
        &[("P2PCHAT_IRC_PASSWORD", "sesame")],
    );
    p.expect_contains("irc on 0.0.0.0:");
}

/// A Python with the `irc` library (jaraco/irc), if there is one:
/// `P2PCHAT_TEST_PYTHON`, else `python3`.
fn python_with_irc() -> Option<String> {
    let py = std::env::var("P2PCHAT_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&py)
        .args(["-c", "import irc.client"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(py)
}

#[test]
fn a_real_irc_client_library_chats_both_ways() {
    let Some(py) = python_with_irc() else {
        // CI installs the library and says so: there it must run.
        assert!(
            std::env::var_os("P2PCHAT_IRC_LIB").is_none_or(|v| v != "require"),
            "P2PCHAT_IRC_LIB=require, but no Python with the irc library"
        );
        eprintln!(
            "skipped: no Python with the irc library (pip install irc; \
             P2PCHAT_TEST_PYTHON=/path/to/python)"
        );
        return;
    };
    let (mut alice, irc_port) = with_irc("alice", None, &[]);
    let mut bob = Peer::join("bob", alice.port(), 2);
    alice.expect_line("* bob joined");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/irc_client.py");
    let client = std::process::Command::new(py)
        .args([script, &irc_port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    bob.expect_line("alice: hello from the irc library");
    bob.expect_line("alice (private): psst from the irc library");
    bob.send("reply from bob");
    bob.send(":create dev");
    bob.expect_line("* room dev created; you own it");
    bob.expect_line("[dev] alice: hello, dev");
    bob.send(":q");
    bob.expect_exit(0);
    let out = client.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client failed:\n{text}\n{err}");
    for fact in [
        "welcome pyclient",
        // The library follows the forced nick change.
        "in #lobby as alice",
        "names alice bob",
        "pubmsg bob #lobby reply from bob",
        "in #dev as alice",
        "quit bob Left",
        "features chantypes=# casemapping=ascii nicklen=32 network=p2pchat",
    ] {
        assert!(
            text.lines().any(|l| l == fact),
            "no {fact:?} in:\n{text}\n{err}"
        );
    }
}
