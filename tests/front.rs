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

/// IRC habits: `/` works like `:`, commands ignore case, unknown
/// commands and bad arguments are refused and never sent, emoticons are
/// chat.
#[test]
fn irc_commands_never_leak_as_chat() {
    let (mut alice, mut bob) = pair();
    alice.send("/msg bob");
    alice.expect_err_line("p2pchat: /msg: give a name and a message");
    alice.send("/msg bob psst, private?");
    bob.expect_line("alice (private): psst, private?");
    alice.send("/NICK caroline");
    bob.expect_line("* alice is now caroline");
    alice.expect_line("* alice is now caroline");
    alice.send("/nick alice");
    bob.expect_line("* caroline is now alice");
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
    let leaked = [
        "alice: psst",
        "alice: /msg bob",
        "alice: /NICK",
        "caroline: /nick",
        "alice: /frob",
        "alice: /WHO",
        "alice: /Quit",
    ];
    bob.assert_no_out("a command leaked", &|l| {
        leaked.iter().any(|p| l.starts_with(p))
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
    // Our own line is an event too (plain lines leave it out).
    let own = alice.expect_contains(r#""type":"chat""#);
    assert!(
        own.contains(r#""from":"alice","room":"lobby","text":":q","own":true"#),
        "{own}"
    );
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
/// address and "1 member", and so does `:who ROOM`.
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
    // And in a room's list.
    alice.send(":create dev");
    alice.expect_line("* you are in dev");
    alice.send(":who dev");
    let rows = alice.expect_block("* 1 member in dev:", 1);
    assert_eq!(rows, [format!("*   alice 127.0.0.1:{port} (you) owner")]);
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

/// `--log` keeps one file per room: a room's lines go to its own file,
/// written alike whoever said them (no `[room]` in a room's own file),
/// and not to the lobby's.
#[test]
fn chat_logs_are_kept_per_room() {
    let mut alice = Peer::launch("alice", &["--log"], None, Stdio::piped());
    let mut bob = Peer::join("bob", alice.port(), 2);
    alice.expect_line("* bob joined");
    alice.send(":create dev");
    alice.expect_line("* you are in dev");
    bob.send(":join dev");
    bob.expect_line("* you are in dev");
    alice.expect_line("* bob moved from lobby to dev");
    bob.send("bob in dev");
    alice.expect_line("[dev] bob: bob in dev");
    alice.send("alice in dev");
    bob.expect_line("[dev] alice: alice in dev");
    alice.send(":join lobby");
    alice.expect_line("* you are in lobby");
    // (bob, in dev, is not shown it: nothing to wait for but the log.)
    alice.send("alice in the lobby");
    alice.send(":q");
    alice.expect_exit(0);
    let home = alice.keep_home();
    let logs = home.env()[1].1.to_owned() + "/p2pchat/logs";
    let read = |f: &str| std::fs::read_to_string(format!("{logs}/{f}")).unwrap();
    let dev = read("dev.log");
    let rest: Vec<&str> = dev
        .lines()
        .map(|l| {
            assert!(is_stamp(&l[..19]), "{l}");
            &l[20..]
        })
        .collect();
    for want in ["bob: bob in dev", "alice: alice in dev"] {
        assert!(rest.contains(&want), "{want:?} not in dev.log:\n{dev}");
    }
    let lobby = read("lobby.log");
    assert!(
        !lobby.contains("in dev"),
        "a room's line in lobby.log:\n{lobby}"
    );
    // Our own lobby lines too (plain lines on stdout leave them out).
    assert!(
        lobby.contains("alice: alice in the lobby"),
        "our own line not in lobby.log:\n{lobby}"
    );
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

/// `:me` is an action (`* alice waves`); `:nick` renames without leaving:
/// everyone sees `* alice is now alicia`, lines come from the new name, a
/// name in use (in any case, or a look-alike) is refused with a reason,
/// and the old name stays bound to its key.
#[test]
fn me_and_nick() {
    let (mut alice, mut bob) = pair();
    alice.send("/me waves at everyone");
    bob.expect_line("* alice waves at everyone");
    alice.send(":me");
    alice.expect_err_contains(":me: say what you do");
    alice.send("/nick alicia");
    bob.expect_line("* alice is now alicia");
    alice.expect_line("* alice is now alicia");
    alice.send("hi, as alicia");
    bob.expect_line("alicia: hi, as alicia");
    bob.send(":who");
    let rows = bob.expect_block("* 2 members:", 2);
    assert!(rows[0].starts_with("*   alicia 127.0.0.1:"), "{rows:?}");
    // Bob remembers the new name with alicia's key, as the old one.
    let home = bob.keep_home();
    let state = home.env()[1].1.to_owned();
    let known = std::fs::read_to_string(format!("{state}/p2pchat/known_peers")).unwrap();
    let key = |name: &str| {
        known
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned))
            .unwrap_or_else(|| panic!("{name} not in known_peers: {known}"))
    };
    assert_eq!(key("alicia"), key("alice"));
    for taken in ["alicia", "ALICIA", "al\u{456}cia"] {
        bob.send(&format!("/nick {taken}"));
        bob.expect_err_line(&format!(
            "p2pchat: the name {taken} is taken in this network; you are still bob"
        ));
    }
    bob.send("/nick a\u{200b}b");
    bob.expect_err_contains("U+200B is invisible");
    bob.send("/nick two words");
    bob.expect_err_line("p2pchat: /nick: give one name");
    // Nobody joins under the new name, in any case.
    let mut other = Peer::launch("Alicia", &[], Some(bob.port()), Stdio::piped());
    other.expect_exit(1);
    let e = other.err_lines().join("\n");
    assert!(e.contains("the name Alicia is taken"), "{e}");
    // The old name is free, but bound to alicia's key: another key is
    // refused under it.
    let mut impostor = Peer::launch("alice", &[], Some(bob.port()), Stdio::piped());
    impostor.expect_exit(1);
    let e = impostor.err_lines().join("\n");
    assert!(e.contains("key"), "{e}");
    bob.send("/me is still bob");
    alice.expect_line("* bob is still bob");
    bob.assert_no_out("a refused rename shown", &|l| l.contains("bob is now"));
}

/// In JSON, actions and renames are events of their own, with the time
/// they were said.
#[test]
fn json_actions_and_renames() {
    let mut alice = Peer::launch("alice", &["--json"], None, Stdio::piped());
    let mut bob = Peer::join("bob", alice.port(), 2);
    alice.expect_contains(r#""type":"join""#);
    bob.send(":me waves");
    let l = alice.expect_contains(r#""type":"action""#);
    assert!(
        l.ends_with(r#","from":"bob","room":"lobby","text":"waves"}"#),
        "{l}"
    );
    bob.send(":nick robert");
    let l = alice.expect_contains(r#""type":"rename""#);
    assert!(l.ends_with(r#","from":"bob","to":"robert"}"#), "{l}");
    alice.send(r#"{"command":"nick alicia"}"#);
    let l = alice.expect_contains(r#""type":"rename""#);
    assert!(
        l.ends_with(r#","from":"alice","to":"alicia","own":true}"#),
        "{l}"
    );
    bob.expect_line("* alice is now alicia");
}

/// Asks `p` (JSON) to enter `room` until it is in (it may not know the
/// room yet).
fn enter(p: &mut Peer, room: &str) {
    let end = Instant::now() + DEADLINE;
    let here = r#""type":"here","#;
    loop {
        p.send(&format!(r#"{{"command":"join {room}"}}"#));
        let wait = std::time::Duration::from_millis(300);
        if p.try_expect(&|l| l.contains(here), wait).is_some() {
            return;
        }
        assert!(Instant::now() < end, "never entered {room}");
    }
}

/// The `"id"` of a JSON event, if it has one.
fn id_of(line: &str) -> Option<String> {
    let (_, rest) = line.split_once(r#","id":""#)?;
    Some(rest.split('"').next()?.to_owned())
}

/// Item 13: every JSON event that is a message has an `"id"`, the same on
/// every peer that shows it: chat, actions, private messages, shouts,
/// room lines, and a room line shown again as history.
#[test]
fn json_messages_have_one_id_on_every_peer() {
    let mut alice = Peer::launch("alice", &["--json"], None, Stdio::piped());
    let mut p = vec![];
    for name in ["bob", "carol"] {
        let mut q = Peer::launch(name, &["--json"], Some(alice.port()), Stdio::piped());
        q.expect_contains(r#""type":"joined""#);
        alice.expect_contains(r#""type":"join","time":"#);
        p.push(q);
    }
    let [mut bob, mut carol] = <[Peer; 2]>::try_from(p).ok().unwrap();
    bob.expect_contains(r#""name":"carol""#);
    let mut ids = std::collections::BTreeSet::new();
    let mut same = |what: &str, lines: Vec<String>| {
        let got: Vec<Option<String>> = lines.iter().map(|l| id_of(l)).collect();
        let id = got[0]
            .clone()
            .unwrap_or_else(|| panic!("{what}: no id: {lines:?}"));
        assert!(
            got.iter().all(|g| g.as_ref() == Some(&id)),
            "{what}: {lines:?}"
        );
        assert!(ids.insert(id), "{what}: an id seen before: {lines:?}");
    };
    alice.send(r#"{"say":"hello ids"}"#);
    let lines = [&mut alice, &mut bob, &mut carol].map(|q| q.expect_contains("hello ids"));
    same("chat", lines.to_vec());
    bob.send(r#"{"command":"me waves"}"#);
    let lines = [&mut alice, &mut bob, &mut carol].map(|q| q.expect_contains(r#""text":"waves""#));
    same("action", lines.to_vec());
    alice.send(r#"{"command":"msg bob psst"}"#);
    let lines = [&mut alice, &mut bob].map(|q| q.expect_contains(r#""text":"psst""#));
    same("private", lines.to_vec());
    carol.send(r#"{"command":"shout lunch"}"#);
    let lines = [&mut alice, &mut bob, &mut carol].map(|q| q.expect_contains(r#""text":"lunch""#));
    same("shout", lines.to_vec());
    alice.send(r#"{"command":"create dev"}"#);
    alice.expect_contains(r#""type":"here","#);
    enter(&mut bob, "dev");
    alice.send(r#"{"say":"in dev"}"#);
    let live = [&mut alice, &mut bob].map(|q| q.expect_contains(r#""text":"in dev""#));
    enter(&mut carol, "dev");
    let hist = carol.expect_contains(r#""text":"in dev","history":true"#);
    same("room line", vec![live[0].clone(), live[1].clone(), hist]);
    assert_eq!(ids.len(), 5);
}

/// Defect 9: a line is shown with when its sender said it, with the
/// date when that is not today: a peer that says yesterday's line now
/// (as one held, fetched after a partition or from a store would come)
/// has it stamped with yesterday, in JSON and plain lines alike.
#[test]
fn lines_show_when_they_were_said() {
    use p2pchat::proto::wire::Body;
    use util::frames;
    use util::raw::Raw;
    let mut alice = Peer::launch("alice", &["--json"], None, Stdio::piped());
    let port = alice.port().to_string();
    let args = [
        "--plain",
        "--timestamps",
        "-b",
        "127.0.0.1",
        "bob",
        "127.0.0.1",
        &port,
    ];
    let mut bob = Peer::spawn("bob", &args, Stdio::piped());
    bob.expect_contains("* joined through");
    alice.expect_contains(r#""type":"join""#);
    let now_ms = frames::now_ms();
    let yesterday = now_ms - 26 * 3_600_000;
    let m = frames::who(0x7965_7374);
    let mut r = Raw::connect(alice.port());
    r.hello(&m, "yester", true);
    let bodies = vec![
        frames::join_body(&m, "yester", 1),
        Body::Clock { time: yesterday },
        frames::lobby("said yesterday"),
        Body::Clock { time: now_ms },
        frames::lobby("said now"),
    ];
    for msg in frames::sealed(&m, 1, bodies) {
        r.send(&msg);
    }
    let l = alice.expect_contains("said yesterday");
    assert!(
        l.starts_with(&format!(r#"{{"type":"chat","time":{yesterday},"#)),
        "{l}"
    );
    let l = alice.expect_contains("said now");
    assert!(
        l.starts_with(&format!(r#"{{"type":"chat","time":{now_ms},"#)),
        "{l}"
    );
    // Plain lines with --timestamps: the sender's date and time.
    let l = bob.expect_contains("yester: said yesterday");
    let date = |ms: u64| {
        let out = Command::new("date")
            .args(["-d", &format!("@{}", ms / 1000), "+%Y-%m-%d %H:%M:%S"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(l, format!("{} yester: said yesterday", date(yesterday)));
    let l = bob.expect_contains("yester: said now");
    assert_eq!(l, format!("{} yester: said now", date(now_ms)));
}

/// The last `:nick` typed wins: a second one before the first settles
/// replaces it, and one back to the name we have calls the first off.
#[test]
fn the_last_nick_typed_wins() {
    let (mut alice, mut bob) = pair();
    alice.send("/nick caroline");
    alice.send("/nick alice");
    alice.expect_line("* you stay alice: the rename to caroline is called off");
    alice.send("/nick caroline");
    alice.send("/nick dora");
    bob.expect_line("* alice is now dora");
    alice.expect_line("* alice is now dora");
    alice.send("hi, as dora");
    bob.expect_line("dora: hi, as dora");
    bob.assert_no_out("a rename replaced shown", &|l| l.contains("caroline"));
    alice.assert_no_out("a rename replaced shown", &|l| {
        l.contains("is now caroline")
    });
}

/// Two peers ask for one name at the same moment: one gets it, on every
/// peer; the other is told, and is never shown under it.
#[test]
fn two_renames_at_once_one_wins() {
    let (mut alice, mut bob) = pair();
    let mut carol = Peer::join("carol", alice.port(), 3);
    alice.expect_line("* carol joined");
    bob.expect_line("* carol joined");
    alice.send("/nick xena");
    bob.send("/nick Xena");
    let l = carol.expect_contains(" is now ");
    let (winner, loser, lost) = match l.as_str() {
        "* alice is now xena" => (&mut alice, &mut bob, "* bob is now"),
        "* bob is now Xena" => (&mut bob, &mut alice, "* alice is now"),
        _ => panic!("carol shows {l:?}"),
    };
    loser.expect_err_contains("took the name");
    winner.expect_contains(" is now ");
    winner.send("winner here");
    loser.send("loser here");
    let from_winner = carol.expect_contains("winner here");
    let from_loser = carol.expect_contains("loser here");
    assert!(from_winner.starts_with("xena: ") || from_winner.starts_with("Xena: "));
    assert!(from_loser.starts_with("alice: ") || from_loser.starts_with("bob: "));
    let renames = carol
        .out_lines()
        .iter()
        .filter(|l| l.contains(" is now "))
        .count();
    assert_eq!(renames, 1, "{:?}", carol.out_lines());
    loser.assert_no_out("the loser shown renamed", &|l| l.starts_with(lost));
    winner.assert_no_out("the loser shown renamed", &|l| l.starts_with(lost));
}

/// Defect 14: started again at once after a crash, with the same
/// identity, a peer gets its name back from its own stale self (the
/// others see the old one lost and the new one join); it is not refused
/// as a name in use.
#[test]
fn restart_right_after_a_crash_takes_the_name_back() {
    let (mut alice, mut bob) = pair();
    let home = bob.keep_home();
    bob.signal(libc::SIGKILL);
    let _ = bob.wait_exit(DEADLINE);
    let mut bob = Peer::launch_env("bob", &[], Some(alice.port()), Stdio::piped(), &home.env());
    bob.expect_joined(alice.port(), 2);
    alice.expect_line("* bob left (connection lost)");
    alice.expect_line("* bob joined");
    bob.send("back again");
    alice.expect_line("bob: back again");
    alice.send("welcome back");
    bob.expect_line("alice: welcome back");
}

/// Defect 14: a peer that did not run for a while (stopped) is told when
/// it runs again that the others may have given it up. (Stopped for 32 s:
/// an idle peer's next timer, a heartbeat, is up to 20 s away, and it is
/// told when that is 10 s past. How long it is stopped is what the test
/// is about, so it is a sleep.)
#[test]
fn a_stopped_peer_is_told_when_it_runs_again() {
    let (mut alice, mut bob) = pair();
    bob.signal(libc::SIGSTOP);
    thread::sleep(std::time::Duration::from_secs(32));
    bob.signal(libc::SIGCONT);
    let w = bob.expect_err_contains("this peer did not run for");
    assert!(w.contains("the others may have shown it leaving"), "{w}");
    alice.send("ping after stop");
    bob.expect_line("alice: ping after stop");
    bob.send("pong after stop");
    alice.expect_line("bob: pong after stop");
}

/// Defect 7: two peers join under one name at the same moment, through
/// different members: one gets in, the other is told the name is taken,
/// and the others show the name joining once and never leaving.
#[test]
fn two_joins_under_one_name_at_once_are_announced_once() {
    let (mut alice, mut bob) = pair();
    let args = |port: u16| {
        [
            "--plain".to_owned(),
            "-b".into(),
            "127.0.0.1".into(),
            "carol".into(),
            "127.0.0.1".into(),
            port.to_string(),
        ]
    };
    let mut c1 = Peer::spawn("carol", &args(alice.port()), Stdio::piped());
    let mut c2 = Peer::spawn("carol", &args(bob.port()), Stdio::piped());
    alice.expect_line("* carol joined");
    bob.expect_line("* carol joined");
    // One of them gives way, within the race.
    let start = Instant::now();
    let (mut winner, mut loser) = loop {
        if !c1.is_running() {
            break (c2, c1);
        }
        if !c2.is_running() {
            break (c1, c2);
        }
        assert!(start.elapsed() < DEADLINE, "neither carol gave way");
        thread::sleep(std::time::Duration::from_millis(20));
    };
    loser.expect_exit(1);
    let e = loser.err_lines().join("\n");
    assert!(e.contains("the name carol is taken"), "{e}");
    // Longer than anything of the race could take to be shown.
    thread::sleep(std::time::Duration::from_millis(2_500));
    winner.send("carol, the one");
    alice.expect_line("carol: carol, the one");
    bob.expect_line("carol: carol, the one");
    for p in [&mut alice, &mut bob] {
        let lines = p.out_lines();
        let joins = lines.iter().filter(|l| *l == "* carol joined").count();
        assert_eq!(joins, 1, "{lines:?}");
        assert!(
            !lines.iter().any(|l| l.starts_with("* carol left")),
            "{lines:?}"
        );
        let errs = p.err_lines();
        assert!(!errs.iter().any(|l| l.contains("name in use")), "{errs:?}");
    }
}
