//! Integration tests: real `p2pchat` peers on 127.0.0.1 talking to each
//! other, to raw sockets, and to signals.

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::process::Stdio;

use util::{
    DEADLINE, Peer, TempFile, Via, assert_closed_by_peer, chat_both_ways, free_port, network,
};

/// Every stdout line of `p` equal to `line`, counted.
fn count(p: &mut Peer, line: &str) -> usize {
    p.out_lines().iter().filter(|l| *l == line).count()
}

#[test]
fn two_peers_chat_both_ways() {
    let mut alice = Peer::start("alice");
    let mut bob = Peer::join("bob", alice.port(), 2);
    alice.expect_line("* bob joined");

    bob.send("hello alice");
    alice.expect_line("bob: hello alice");
    alice.send("hi bob");
    bob.expect_line("alice: hi bob");

    // The join is announced before the joiner's first message (FIFO per sender).
    let out = alice.out_lines();
    let joined = out.iter().position(|l| l == "* bob joined").unwrap();
    let said = out.iter().position(|l| l == "bob: hello alice").unwrap();
    assert!(
        joined < said,
        "alice saw bob's message before his join: {out:?}"
    );
    // A peer does not echo its own messages in plain mode.
    bob.assert_no_out("own message echoed", &|l| l.contains("hello alice"));
    alice.assert_no_out("own message echoed", &|l| l.contains("hi bob"));
}

#[test]
fn chain_join_relays_between_ends() {
    let mut peers = network(&["alice", "bob", "carol"], Via::Previous);
    peers[0].send("from the first");
    peers[2].expect_line("alice: from the first");
    peers[1].expect_line("alice: from the first");
    peers[2].send("from the last");
    peers[0].expect_line("carol: from the last");
    peers[1].expect_line("carol: from the last");
}

#[test]
fn ten_peers_every_message_once() {
    let names: Vec<String> = (0..10).map(|i| format!("ten{i}")).collect();
    let mut peers = network(&names, Via::Random);

    for p in peers.iter_mut() {
        let msg = format!("message from {}", p.name);
        p.send(&msg);
    }
    for (i, p) in peers.iter_mut().enumerate() {
        for (j, n) in names.iter().enumerate() {
            if i != j {
                p.expect_line(&format!("{n}: message from {n}"));
            }
        }
    }
    // Settle: a second round, which by per-sender FIFO arrives after every
    // first-round copy that takes the same path; late duplicates show below.
    for p in peers.iter_mut() {
        let msg = format!("done {}", p.name);
        p.send(&msg);
    }
    for (i, p) in peers.iter_mut().enumerate() {
        for (j, n) in names.iter().enumerate() {
            if i != j {
                p.expect_line(&format!("{n}: done {n}"));
            }
        }
    }
    for p in peers.iter_mut() {
        p.send(":q");
    }
    for p in peers.iter_mut() {
        let st = p.wait_exit(DEADLINE);
        if !st.success() {
            p.fail(&format!("exit status {st} after :q"));
        }
    }
    for (i, p) in peers.iter_mut().enumerate() {
        for (j, n) in names.iter().enumerate() {
            for text in ["message from", "done"] {
                let line = format!("{n}: {text} {n}");
                let c = count(p, &line);
                let want = usize::from(i != j);
                if c != want {
                    p.fail(&format!("{line:?} printed {c} times, expected {want}"));
                }
            }
        }
    }
}

#[test]
fn sigkill_middle_of_chain_is_noticed_and_ends_still_chat() {
    let mut peers = network(&["alice", "bob", "carol"], Via::Previous);
    let mut carol = peers.pop().unwrap();
    let mut bob = peers.pop().unwrap();
    let mut alice = peers.pop().unwrap();

    bob.signal(libc::SIGKILL);
    bob.wait_exit(DEADLINE);
    alice.expect_line("* bob left (connection lost)");
    carol.expect_line("* bob left (connection lost)");

    alice.send("still there?");
    carol.expect_line("alice: still there?");
    carol.send("yes");
    alice.expect_line("carol: yes");

    alice.assert_no_out("carol lost", &|l| l.starts_with("* carol left"));
    carol.assert_no_out("alice lost", &|l| l.starts_with("* alice left"));
    alice.assert_no_out("clean leave for a crash", &|l| l == "* bob left");
}

#[test]
fn quit_command_leaves_cleanly() {
    let mut peers = network(&["alice", "bob", "carol"], Via::Previous);
    let mut carol = peers.pop().unwrap();
    let mut bob = peers.pop().unwrap();
    let mut alice = peers.pop().unwrap();

    bob.send(":q");
    bob.expect_exit(0);
    alice.expect_line("* bob left");
    carol.expect_line("* bob left");

    carol.send(":quit");
    carol.expect_exit(0);
    alice.expect_line("* carol left");
    alice.assert_no_out("crash reported for a clean leave", &|l| {
        l.contains("connection lost")
    });
}

#[test]
fn end_of_input_leaves() {
    let mut alice = Peer::start("alice");
    let mut bob = Peer::join("bob", alice.port(), 2);
    alice.expect_line("* bob joined");
    bob.send("bye now");
    bob.close_stdin();
    alice.expect_line("bob: bye now");
    alice.expect_line("* bob left");
    bob.expect_exit(0);
}

fn leaves_on_signal(sig: i32) {
    let mut alice = Peer::start("alice");
    let mut bob = Peer::join("bob", alice.port(), 2);
    alice.expect_line("* bob joined");
    bob.signal(sig);
    alice.expect_line("* bob left");
    bob.expect_exit(0);
    alice.assert_no_out("crash reported for a signal", &|l| {
        l.contains("connection lost")
    });
}

#[test]
fn sigint_leaves() {
    leaves_on_signal(libc::SIGINT);
}

#[test]
fn sigterm_leaves() {
    leaves_on_signal(libc::SIGTERM);
}

#[test]
fn duplicate_name_is_refused() {
    let mut alice = Peer::start("alice");
    let mut bob = Peer::join("bob", alice.port(), 2);
    alice.expect_line("* bob joined");

    // Through bob, so the check cannot rely on asking the named peer itself.
    let mut dup = Peer::spawn(
        "alice(dup)",
        &[
            "--plain",
            "-b",
            "127.0.0.1",
            "alice",
            "127.0.0.1",
            &bob.port().to_string(),
        ],
        Stdio::piped(),
    );
    dup.expect_exit(1);
    let err = dup.err_lines();
    assert!(
        err.iter()
            .any(|l| l.starts_with("p2pchat: ") && l.contains("alice") && l.contains("taken")),
        "no 'p2pchat: ... alice ... taken' on stderr: {err:?}"
    );

    // The network is untouched: the original alice still chats, nobody saw
    // the impostor come or go.
    alice.send("still me");
    bob.expect_line("alice: still me");
    bob.send("sure");
    alice.expect_line("bob: sure");
    for p in [&mut alice, &mut bob] {
        p.assert_no_out("impostor visible", &|l| {
            l == "* alice joined" || l.starts_with("* alice left")
        });
    }
}

#[test]
fn join_through_itself_is_refused() {
    let port = free_port().to_string();
    let mut p = Peer::spawn(
        "narcissus",
        &[
            "--plain",
            "-b",
            "127.0.0.1",
            "-p",
            &port,
            "narcissus",
            "127.0.0.1",
            &port,
        ],
        Stdio::piped(),
    );
    p.expect_exit(1);
    let err = p.err_lines();
    assert!(
        err.iter()
            .any(|l| l.starts_with("p2pchat: ") && l.contains("itself")),
        "no 'p2pchat: ... itself' on stderr: {err:?}"
    );
}

#[test]
fn who_lists_members_sorted_with_links() {
    // Started in reverse name order, so sorting is visible.
    let mut carol = Peer::start("carol");
    let mut bob = Peer::join("bob", carol.port(), 2);
    carol.expect_line("* bob joined");

    bob.send(":who");
    let rows = bob.expect_block("* 2 members:", 2);
    assert_eq!(
        rows[0],
        format!("*   bob 127.0.0.1:{} (you)", bob.port()),
        "{rows:?}"
    );
    assert_eq!(
        rows[1],
        format!("*   carol 127.0.0.1:{} direct", carol.port()),
        "{rows:?}"
    );

    // A third member: three lines in name order, each link direct or relayed.
    let mut alice = Peer::join("alice", bob.port(), 3);
    bob.expect_line("* alice joined");
    carol.expect_line("* alice joined");
    carol.send(":who");
    let rows = carol.expect_block("* 3 members:", 3);
    let a = format!("*   alice 127.0.0.1:{} ", alice.port());
    assert!(
        rows[0] == format!("{a}direct") || rows[0] == format!("{a}relayed"),
        "row 1: {rows:?}"
    );
    assert_eq!(
        rows[1],
        format!("*   bob 127.0.0.1:{} direct", bob.port()),
        "{rows:?}"
    );
    assert_eq!(
        rows[2],
        format!("*   carol 127.0.0.1:{} (you)", carol.port()),
        "{rows:?}"
    );

    // :who is local: nothing reaches the others.
    carol.send("after who");
    alice.expect_line("carol: after who");
    bob.expect_line("carol: after who");
    alice.assert_no_out(":who sent", &|l| {
        l.contains("who") && l != "carol: after who"
    });
}

#[test]
fn help_lists_commands_locally() {
    let mut alice = Peer::start("alice");
    let mut bob = Peer::join("bob", alice.port(), 2);
    alice.expect_line("* bob joined");

    alice.send(":help");
    let mut missing = vec![":q", ":who", ":help"];
    let mut lines = Vec::new();
    while !missing.is_empty() {
        let l = alice.expect_on(
            util::Stream::Out,
            &format!("help lines naming {missing:?}"),
            &|l| l.starts_with("* "),
            DEADLINE,
        );
        missing.retain(|c| {
            !l.split(|ch: char| ch.is_whitespace() || ch == ',')
                .any(|w| w == *c)
        });
        lines.push(l);
    }
    assert!(lines.len() >= 2, "help is a single line: {lines:?}");

    alice.send("after help");
    bob.expect_line("alice: after help");
    bob.assert_no_out(":help sent", &|l| {
        l.contains("help") && l != "alice: after help"
    });
}

#[test]
fn unknown_command_is_an_error_and_not_sent() {
    let mut alice = Peer::start("alice");
    let mut bob = Peer::join("bob", alice.port(), 2);
    alice.expect_line("* bob joined");

    alice.send(":frob");
    alice.expect_err_line("p2pchat: unknown command :frob (try :help)");
    alice.send("after frob");
    bob.expect_line("alice: after frob");
    bob.assert_no_out(":frob sent", &|l| {
        l.contains("frob") && l != "alice: after frob"
    });
    // The peer is still up and chatting.
    bob.send("ok");
    alice.expect_line("bob: ok");
}

#[test]
fn double_colon_sends_a_colon_line() {
    let mut alice = Peer::start("alice");
    let mut bob = Peer::join("bob", alice.port(), 2);
    alice.expect_line("* bob joined");
    alice.send("::text");
    bob.expect_line("alice: :text");
    alice.send("::q");
    bob.expect_line("alice: :q");
    alice.send("still here");
    bob.expect_line("alice: still here");
    alice.assert_no_out("::q quit", &|l| l.contains("left"));
}

#[test]
fn garbage_bytes_close_only_that_connection() {
    let mut alice = Peer::start("alice");
    let mut bob = Peer::join("bob", alice.port(), 2);
    alice.expect_line("* bob joined");

    // One well-sized frame full of junk, and nothing after it.
    let mut s = TcpStream::connect(("127.0.0.1", alice.port())).unwrap();
    s.write_all(b"\x00\x00\x00\x0cgarbage!\xff\xfe\xfd\xfc")
        .unwrap();
    assert_closed_by_peer(&mut s, "junk frame");
    // Text that is no frame at all (a length of ~1.2 GB).
    let mut s = TcpStream::connect(("127.0.0.1", bob.port())).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_closed_by_peer(&mut s, "HTTP request");

    chat_both_ways(&mut alice, &mut bob, "after garbage");
    // And the peer still lets people in.
    let mut carol = Peer::join("carol", alice.port(), 3);
    alice.expect_line("* carol joined");
    bob.expect_line("* carol joined");
    chat_both_ways(&mut carol, &mut bob, "newcomer");
}

#[test]
fn huge_length_prefix_closes_only_that_connection() {
    let mut alice = Peer::start("alice");
    let mut bob = Peer::join("bob", alice.port(), 2);
    alice.expect_line("* bob joined");

    let mut s = TcpStream::connect(("127.0.0.1", alice.port())).unwrap();
    s.write_all(&0xFFFF_FFF0u32.to_be_bytes()).unwrap();
    // The peer may close as soon as it has read the prefix.
    let _ = s.write_all(&[0x55; 1024]);
    assert_closed_by_peer(&mut s, "huge length prefix");

    // Just over the maximum is refused too.
    let mut s = TcpStream::connect(("127.0.0.1", alice.port())).unwrap();
    s.write_all(&65537u32.to_be_bytes()).unwrap();
    let _ = s.write_all(&[0x55; 1024]);
    assert_closed_by_peer(&mut s, "length 65537");

    chat_both_ways(&mut alice, &mut bob, "after huge prefix");
}

#[test]
fn silent_connection_does_not_block_chat() {
    let mut alice = Peer::start("alice");
    // Opened before anyone joins and kept open, silent, for the whole test.
    let silent = TcpStream::connect(("127.0.0.1", alice.port())).unwrap();
    let half = TcpStream::connect(("127.0.0.1", alice.port())).unwrap();
    (&half).write_all(&[0, 0]).unwrap(); // half a length prefix, then nothing

    let mut bob = Peer::join("bob", alice.port(), 2);
    alice.expect_line("* bob joined");
    chat_both_ways(&mut alice, &mut bob, "beside a silent socket");
    let mut carol = Peer::join("carol", alice.port(), 3);
    alice.expect_line("* carol joined");
    bob.expect_line("* carol joined");
    chat_both_ways(&mut carol, &mut alice, "third");
    drop((silent, half));
}

#[test]
fn stdin_from_regular_file() {
    let mut alice = Peer::start("alice");
    let file = TempFile::new("stdin", "first line\nsecond line\n");
    let mut filer = Peer::launch("filer", &[], Some(alice.port()), Stdio::from(file.open()));
    filer.expect_joined(alice.port(), 2);
    alice.expect_line("* filer joined");
    alice.expect_line("filer: first line");
    alice.expect_line("filer: second line");
    alice.expect_line("* filer left");
    filer.expect_exit(0);
    let out = alice.out_lines();
    let first = out.iter().position(|l| l == "filer: first line").unwrap();
    let second = out.iter().position(|l| l == "filer: second line").unwrap();
    assert!(first < second, "lines out of order: {out:?}");
}

#[test]
fn no_input_runs_until_sigterm() {
    let mut alice = Peer::start("alice");
    let mut relay = Peer::launch("relay", &["--no-input"], Some(alice.port()), Stdio::null());
    relay.expect_joined(alice.port(), 2);
    alice.expect_line("* relay joined");

    // Still a member after reading end of file: it relays and lets people in.
    let mut bob = Peer::join("bob", relay.port(), 3);
    alice.expect_line("* bob joined");
    relay.expect_line("* bob joined");
    alice.send("to all");
    relay.expect_line("alice: to all");
    bob.expect_line("alice: to all");
    alice.assert_no_out("relay left on EOF", &|l| l.starts_with("* relay left"));
    assert!(relay.is_running(), "relay exited without a signal");

    relay.signal(libc::SIGTERM);
    alice.expect_line("* relay left");
    bob.expect_line("* relay left");
    relay.expect_exit(0);
    chat_both_ways(&mut alice, &mut bob, "after relay");
}

#[test]
fn json_output() {
    let mut alice = Peer::launch("alice", &["--json"], None, Stdio::piped());
    let pa = alice.port();
    let mut bob = Peer::launch("bob", &["--json"], Some(pa), Stdio::piped());
    let pb = bob.port();
    let joined = bob.expect_contains(r#""type":"joined""#);
    assert!(
        joined.contains(&format!(r#""via":"127.0.0.1:{pa}""#)),
        "{joined}"
    );
    assert!(joined.contains(r#""members":2"#), "{joined}");
    assert!(joined.starts_with('{') && joined.ends_with('}'), "{joined}");
    let join = alice.expect_contains(r#""type":"join""#);
    assert!(join.contains(r#""name":"bob""#), "{join}");

    // With --json, input is JSON too: text is always text.
    bob.send(r#"{"say":"say \"hi\" \\o/"}"#);
    let chat = alice.expect_contains(r#""type":"chat""#);
    for part in [
        r#""from":"bob""#,
        r#""room":"lobby""#,
        r#""text":"say \"hi\" \\o/""#,
    ] {
        assert!(chat.contains(part), "{part} not in {chat}");
    }

    alice.send(r#"{"command":"who"}"#);
    let who = alice.expect_contains(r#""type":"members""#);
    for part in [
        format!(r#"{{"name":"alice","addr":"127.0.0.1:{pa}","link":"self"}}"#),
        format!(r#"{{"name":"bob","addr":"127.0.0.1:{pb}","link":"direct"}}"#),
    ] {
        assert!(who.contains(&part), "{part} not in {who}");
    }

    bob.send(r#"{"command":"q"}"#);
    bob.expect_exit(0);
    let leave = alice.expect_contains(r#""type":"leave""#);
    assert!(leave.contains(r#""name":"bob""#), "{leave}");
    assert!(leave.contains(r#""lost":false"#), "{leave}");
    // Every stdout line is one JSON object.
    for l in alice.out_lines().iter().chain(bob.out_lines().iter()) {
        assert!(
            l.starts_with("{\"type\":") && l.ends_with('}'),
            "not a JSON event line: {l:?}"
        );
    }
}
