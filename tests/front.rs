//! Integration tests of the front end through pipes: commands and their
//! prefixes, long lines, JSON input and events, the lines printed at the
//! start, the config file, chat logs, timestamps, and stdout that is not
//! read (it must not stall the relaying for others).

mod util;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Instant;

use util::{BIN, DEADLINE, Peer, Stream, TempDir};

fn pair() -> (Peer, Peer) {
    let mut alice = Peer::start("alice");
    let bob = Peer::join("bob", alice.port(), 2);
    alice.expect_line("* bob joined");
    (alice, bob)
}

/// IRC habits: `/` works like `:`, commands ignore case, unknown and
/// not-yet-available commands are refused and never sent, emoticons are
/// chat.
#[test]
fn irc_commands_never_leak_as_chat() {
    let (mut alice, mut bob) = pair();
    alice.send("/msg bob");
    alice.expect_err_line("p2pchat: /msg: give a name and a message");
    alice.send("/give bob psst, private?");
    alice.expect_err_line("p2pchat: /give is not available yet; nothing was sent");
    alice.send("/nick caroline");
    alice.expect_err_contains("/nick is not available yet");
    alice.send("/ME waves");
    alice.expect_err_contains("/me is not available yet");
    alice.send("/frob x");
    alice.expect_err_line("p2pchat: unknown command /frob (try /help)");
    alice.send("/WHO");
    alice.expect_block("* 2 members:", 2);
    for chat in [":)", ":D that's great", ":thumbsup:", "/usr/bin is a path"] {
        alice.send(chat);
        bob.expect_line(&format!("alice: {chat}"));
    }
    alice.send("//msg is how you whisper");
    bob.expect_line("alice: /msg is how you whisper");
    alice.send("/Quit");
    alice.expect_exit(0);
    bob.expect_line("* alice left");
    bob.assert_no_out("a command leaked", &|l| {
        l.contains("psst") || l.contains("caroline") || l.contains("waves") || l.contains("frob")
    });
}

/// A line longer than a message is sent as several, cut at character
/// boundaries, nothing lost.
#[test]
fn long_lines_are_split_not_cut() {
    let (mut alice, mut bob) = pair();
    let words: Vec<String> = (0..1500).map(|i| format!("wörd{i}")).collect();
    let long = words.join(" ");
    assert!(long.len() > 2 * 4096);
    alice.send(&long);
    alice.send("after");
    let mut got = String::new();
    loop {
        let l = bob.expect_contains("alice: ");
        let text = l.strip_prefix("alice: ").unwrap();
        if text == "after" {
            break;
        }
        assert!(text.len() <= 4096, "a message of {} bytes", text.len());
        got.push_str(text);
    }
    assert_eq!(got, long);
}

/// `--json` reads JSON input: text is never a command; errors, help and
/// everything else are events with a time.
#[test]
fn json_input_and_error_events() {
    let mut alice = Peer::launch("alice", &["--json"], None, Stdio::piped());
    let listening = alice.out_lines()[0].clone();
    assert!(
        listening.starts_with(r#"{"type":"listening","time":"#)
            && listening.contains(r#""addrs":["127.0.0.1"]"#),
        "{listening}"
    );
    let mut bob = Peer::join("bob", alice.port(), 2);
    alice.expect_contains(r#""type":"join""#);
    alice.send(r#"{"say":":q"}"#);
    bob.expect_line("alice: :q");
    alice.send("not json");
    let e = alice.expect_contains(r#""type":"error""#);
    assert!(e.contains("bad JSON input"), "{e}");
    alice.send(r#"{"command":"frob"}"#);
    let e = alice.expect_contains(r#""type":"error""#);
    assert!(
        e.contains(r#""text":"unknown command :frob (try :help)""#),
        "{e}"
    );
    alice.send(r#"{"command":"help"}"#);
    alice.expect_contains(r#""type":"help""#);
    alice.send(r#"{"command":"quit"}"#);
    alice.expect_exit(0);
    for l in alice.out_lines() {
        let time = l
            .split(r#""time":"#)
            .nth(1)
            .and_then(|t| t.split([',', '}']).next())
            .and_then(|t| t.parse::<u64>().ok());
        assert!(
            l.starts_with(r#"{"type":""#) && time.is_some_and(|t| t > 1_600_000_000_000),
            "no type and time in milliseconds: {l}"
        );
    }
    // The one diagnostic for whoever runs it, not an event: stderr.
    assert_eq!(
        alice.err_lines(),
        ["p2pchat: this network is not encrypted (no network secret: see P2PCHAT_SECRET)"],
        "errors on stderr"
    );
}

/// The lines at the start say how others join; `:who` alone shows our
/// address and "1 member".
#[test]
fn start_says_how_to_join_and_who_shows_own_address() {
    let mut alice = Peer::start("alice");
    let port = alice.port();
    assert_eq!(
        alice.next_line(Stream::Out, DEADLINE),
        format!("* others join with: p2pchat NAME 127.0.0.1 {port}")
    );
    alice.send(":who");
    let rows = alice.expect_block("* 1 member:", 1);
    assert_eq!(rows, [format!("*   alice 127.0.0.1:{port} (you)")]);
}

/// `host:port` is accepted as the peer to join through.
#[test]
fn join_through_host_colon_port() {
    let mut alice = Peer::start("alice");
    let port = alice.port();
    let args = [
        "--plain".to_owned(),
        "-b".into(),
        "127.0.0.1".into(),
        "bob".into(),
        format!("127.0.0.1:{port}"),
    ];
    let mut bob = Peer::spawn("bob", &args, Stdio::piped());
    bob.wait_listening();
    bob.expect_joined(port, 2);
    alice.expect_line("* bob joined");
}

/// The config file gives a name and peers to join; a bad line is an
/// error naming the line.
#[test]
fn config_file_gives_defaults() {
    let alice = Peer::start("alice");
    let dir = TempDir::new("config");
    let cfg = dir.path().join("p2pchat/config");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "# defaults\nname = carol\njoin = 127.0.0.1:{}\ncolor = off\n",
            alice.port()
        ),
    )
    .unwrap();
    let env = [("XDG_CONFIG_HOME", dir.str())];
    let mut carol = Peer::spawn_env(
        "carol",
        &["--plain", "-b", "127.0.0.1"],
        Stdio::piped(),
        &env,
    );
    carol.wait_listening();
    carol.expect_joined(alice.port(), 2);
    drop(carol);

    std::fs::write(&cfg, "name = carol\nfrob = 1\n").unwrap();
    let mut bad = Peer::spawn_env("bad", &["--plain"], Stdio::null(), &env);
    bad.expect_exit(2);
    assert_eq!(
        bad.err_lines(),
        [format!(
            "p2pchat: config {}:2: unknown key \"frob\"",
            cfg.display()
        )]
    );
}

/// `--log` keeps timestamped chat lines per room; `--timestamps` puts the
/// time on stdout lines.
#[test]
fn chat_log_and_timestamps() {
    let state = TempDir::new("log");
    let env = [("XDG_STATE_HOME", state.str())];
    let mut alice = Peer::spawn_env(
        "alice",
        &[
            "--plain",
            "--log",
            "--timestamps",
            "-b",
            "127.0.0.1",
            "alice",
        ],
        Stdio::piped(),
        &env,
    );
    let first = alice.next_line(Stream::Out, DEADLINE);
    let (stamp, rest) = first.split_at(20);
    assert!(is_stamp(stamp.trim_end()), "{first}");
    let port: u16 = rest
        .strip_prefix("listening on port ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{first}"));
    let mut bob = Peer::join("bob", port, 2);
    alice.expect_on(
        Stream::Out,
        "bob joined",
        &|l| l.ends_with(" * bob joined"),
        DEADLINE,
    );
    bob.send("hi alice");
    alice.expect_on(
        Stream::Out,
        "bob's line",
        &|l| l.ends_with(" bob: hi alice"),
        DEADLINE,
    );
    alice.send("mine");
    bob.expect_line("alice: mine");
    alice.send(":q");
    alice.expect_exit(0);
    let log = std::fs::read_to_string(state.path().join("p2pchat/logs/lobby.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    for want in ["* bob joined", "bob: hi alice", "alice: mine"] {
        let l = lines
            .iter()
            .find(|l| l.ends_with(want))
            .unwrap_or_else(|| panic!("{want:?} not in the log:\n{log}"));
        assert!(is_stamp(&l[..19]), "{l}");
    }
}

/// `YYYY-MM-DD HH:MM:SS`.
fn is_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

/// Alice's stdout is a pipe nobody reads while 200 lines of 4 KB go from
/// mem through her to bob, who is linked to her only: bob gets every line
/// at once, and alice's reader, when it reads, gets them all too.
#[test]
fn unread_stdout_does_not_stall_relaying() {
    let home = util::Home::new();
    let mut alice = Command::new(BIN)
        .args(["--plain", "-b", "127.0.0.1", "alice"])
        .envs(home.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = alice.stdout.take().unwrap();
    // The first line, a byte at a time: nothing more is read from the pipe.
    let mut first = Vec::new();
    let mut b = [0u8];
    while first.last() != Some(&b'\n') {
        assert_eq!(out.read(&mut b).unwrap(), 1, "alice's stdout closed");
        first.push(b[0]);
    }
    let first = String::from_utf8(first).unwrap();
    let port: u16 = first
        .trim_end()
        .strip_prefix("listening on port ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{first:?}"));
    let guard = KillOnDrop(alice);

    let one = ["-d", "1", "-D", "1"];
    let mut mem = Peer::launch("mem", &one, Some(port), Stdio::piped());
    mem.expect_joined(port, 2);
    let mut bob = Peer::launch("bob", &one, Some(port), Stdio::piped());
    bob.expect_joined(port, 3);
    mem.expect_line("* bob joined");

    const N: usize = 200;
    let line = |i: usize| format!("m{i:03} {}", "x".repeat(4000));
    let start = Instant::now();
    for i in 0..N {
        mem.send(&line(i));
    }
    for i in 0..N {
        let want = format!("mem: {}", line(i));
        let left = (start + DEADLINE).saturating_duration_since(Instant::now());
        bob.expect_on(
            Stream::Out,
            &format!("line {i} of {N}"),
            &|l| l == want,
            left,
        );
    }
    let took = start.elapsed();
    eprintln!("bob had all {N} lines {took:?} after the first was sent");

    // Now alice's reader reads: every line is there, none dropped.
    let reader = thread::spawn(move || {
        let mut lines = Vec::new();
        for l in BufReader::new(out).lines() {
            let l = l.unwrap();
            let done = l == "* bob left";
            lines.push(l);
            if done {
                break;
            }
        }
        lines
    });
    bob.send(":q");
    bob.expect_exit(0);
    let lines = reader.join().unwrap();
    let got = lines.iter().filter(|l| l.starts_with("mem: m")).count();
    assert_eq!(got, N, "alice's stdout: {} lines", lines.len());
    assert!(
        !lines.iter().any(|l| l.contains("dropped")),
        "lines dropped"
    );
    drop(guard);
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
