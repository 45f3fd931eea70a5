//! Private messages between real peers on 127.0.0.1: shown only by their
//! recipient, unreadable to the peers that relay them, acknowledged end to
//! end, and kept by holders for an absent recipient after the sender has
//! gone.
//!
//! Where a test shows that something did *not* happen, a later line from
//! the same sender is waited for: links keep order, so whatever came
//! before it would have been shown by then.

mod util;

use p2pchat::app::dm::{self, Private};
use p2pchat::proto::wire::{self, Body, Msg};
use std::process::Stdio;
use std::time::{Duration, Instant};
use util::frames::{self, who};
use util::raw::{Got, Raw};
use util::{DEADLINE, Peer};

/// Whether `hay` holds the bytes of `needle`.
fn holds(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Waits until `p` says, for `:msgs`, that it holds `n` messages for
/// others.
fn until_holding(p: &mut Peer, n: usize) {
    let want = format!(
        "* holding {n} private message{} for",
        if n == 1 { "" } else { "s" }
    );
    let deadline = Instant::now() + DEADLINE;
    loop {
        p.send(":msgs");
        let l = p.expect_contains("* holding ");
        if l.starts_with(&want) {
            return;
        }
        assert!(Instant::now() < deadline, "{}: still {l:?}", p.name);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// bob and alice each linked to carol only: carol relays between them.
/// eve, a raw member linked to carol, is on no path between them. alice's
/// message to bob is shown by bob alone, and acknowledged; it is routed
/// to bob (alice, carol, bob), so eve never gets it, in any form: no
/// PRIVATE event, no ROUTED frame. The acknowledgement is an event, signed
/// by bob, and reaches everyone.
#[test]
fn a_private_message_is_routed_to_its_recipient_alone_and_acknowledged() {
    let one = ["-d", "1", "-D", "2"];
    let mut carol = Peer::start("carol");
    let mut alice = Peer::launch("alice", &one, Some(carol.port()), Stdio::piped());
    alice.expect_joined(carol.port(), 2);
    let mut bob = Peer::launch("bob", &one, Some(carol.port()), Stdio::piped());
    bob.expect_joined(carol.port(), 3);
    alice.expect_line("* bob joined");
    let mut eve = Raw::connect(carol.port());
    eve.hello(&who(7), "eve", true);

    alice.send(":msg bob psst, the password is swordfish");
    alice.expect_line("* private 1 to bob: sent");
    bob.expect_line("alice (private): psst, the password is swordfish");
    alice.expect_line("* private 1 to bob: delivered");
    alice.send(":msgs");
    alice.expect_line("* no private messages of yours waiting");

    alice.send("a public line");
    carol.expect_line("alice: a public line");
    bob.expect_line("alice: a public line");
    carol.assert_no_out("a relay showed it", &|l| l.contains("swordfish"));
    bob.assert_no_out("shown twice", &|l| {
        l.contains("swordfish") && l != "alice (private): psst, the password is swordfish"
    });
    assert_eq!(
        bob.out_lines()
            .iter()
            .filter(|l| l.contains("swordfish"))
            .count(),
        1
    );

    // eve got bob's acknowledgement, and alice's public line after the
    // message, but not the message.
    let mut received = 0;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(body) = eve.recv_body(left) else {
            panic!("eve never got alice's public line");
        };
        assert_ne!(body[0], 22, "a ROUTED frame reached eve, on no path");
        assert!(!holds(&body, "swordfish"), "readable by a peer");
        let Ok(Msg::Event(ev)) = wire::decode(&body) else {
            continue;
        };
        match &ev.body {
            Body::Other { kind: 20, .. } => panic!("a PRIVATE event reached eve: flooded"),
            Body::Other { kind: 21, .. } => received += 1,
            Body::Chat { text, .. } if text == "a public line" => break,
            _ => {}
        }
    }
    assert!(received >= 1, "{received}");
}

/// dave, met before, is away: alice's message to him is queued on the
/// holders, alice leaves, one holder is SIGKILLed, and dave, back through
/// another peer, gets it once; every copy is then dropped.
#[test]
fn a_message_to_an_absent_member_outlives_its_sender_and_a_holder() {
    let mut alice = Peer::start("alice");
    let mut carol = Peer::join("carol", alice.port(), 2);
    let mut erin = Peer::join("erin", alice.port(), 3);
    let mut frank = Peer::join("frank", alice.port(), 4);
    let mut dave = Peer::join("dave", alice.port(), 5);
    for p in [&mut alice, &mut carol, &mut erin, &mut frank] {
        p.expect_line("* dave joined");
    }
    let home = dave.keep_home();
    dave.send(":q");
    dave.expect_exit(0);
    for p in [&mut alice, &mut carol, &mut erin, &mut frank] {
        p.expect_line("* dave left");
    }

    alice.send(":msg dave hello dave, are you there?");
    alice.expect_line("* private 1 to dave: queued");
    alice.send(":msgs");
    alice.expect_contains("* private 1 to dave: queued: held until it joins");
    alice.send(":q");
    alice.expect_exit(0);
    // Three live peers are left: each holds a copy.
    for p in [&mut carol, &mut erin, &mut frank] {
        p.expect_line("* alice left");
        until_holding(p, 1);
    }
    erin.signal(libc::SIGKILL);
    carol.expect_line("* erin left (connection lost)");
    frank.expect_line("* erin left (connection lost)");

    let env = home.env();
    let mut dave = Peer::launch_env("dave", &[], Some(frank.port()), Stdio::piped(), &env);
    dave.expect_joined(frank.port(), 3);
    dave.expect_line("alice (private): hello dave, are you there?");
    for p in [&mut carol, &mut frank] {
        until_holding(p, 0);
    }
    // Once, though both holders passed it on.
    carol.send("after");
    frank.send("after");
    dave.expect_line("carol: after");
    dave.expect_line("frank: after");
    let n = dave
        .out_lines()
        .iter()
        .filter(|l| l.contains("hello dave"))
        .count();
    assert_eq!(n, 1);
}

/// A message held for an absent member shows, when it is delivered, when
/// its sender said it, not when it came (issue 18, defect 9: a line from
/// an offline store). dave is away for 3 s: what the test is about is
/// the time passing, so it is a sleep.
#[test]
fn a_held_message_shows_when_it_was_said() {
    let mut alice = Peer::start("alice");
    let mut carol = Peer::join("carol", alice.port(), 2);
    let mut dave = Peer::join("dave", alice.port(), 3);
    alice.expect_line("* dave joined");
    carol.expect_line("* dave joined");
    let home = dave.keep_home();
    dave.send(":q");
    dave.expect_exit(0);
    alice.expect_line("* dave left");
    carol.expect_line("* dave left");

    let before = util::frames::now_ms();
    alice.send(":msg dave said before you came");
    alice.expect_line("* private 1 to dave: queued");
    let after = util::frames::now_ms();
    std::thread::sleep(Duration::from_secs(3));

    let env = home.env();
    let mut dave = Peer::launch_env(
        "dave",
        &["--json"],
        Some(carol.port()),
        Stdio::piped(),
        &env,
    );
    let l = dave.expect_contains(r#""type":"private""#);
    assert!(l.contains("said before you came"), "{l}");
    let time: u64 = l
        .split(r#""time":"#)
        .nth(1)
        .and_then(|t| t.split(',').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no time: {l}"));
    // Said as long ago as its holders kept it: the passing on from one
    // to the next is not counted, a few milliseconds here.
    assert!(
        time + 200 >= before && time <= after + 500,
        "shown as said at {time}, said between {before} and {after}: {l}"
    );
}

/// A message to a name never met waits with its sender, in the clear on
/// the sender's disk only, until the name is first seen: then it is
/// encrypted to the key that name comes with, and delivered. It outlives
/// the sender's restart meanwhile.
#[test]
fn a_message_to_a_name_never_met_waits_for_its_key() {
    let mut alice = Peer::start("alice");
    alice.send(":msg zed hello zed, whoever you will be");
    alice.expect_line("* private 1 to zed: waiting");
    alice.expect_line("* msg: queued until zed is first seen (no key yet to encrypt to)");
    alice.send(":m zed and a second");
    alice.expect_line("* private 2 to zed: waiting");
    alice.send(":m alice me?");
    alice.expect_err_line("p2pchat: msg: that is you");
    alice.send(":msgs");
    alice.expect_contains(
        "* private 1 to zed: queued until zed is first seen (no key yet to encrypt to) (",
    );
    alice.expect_line("* holding 0 private messages for 0 absent members");

    // alice restarts: both wait still.
    let home = alice.keep_home();
    alice.send(":q");
    alice.expect_exit(0);
    let mut alice = Peer::launch_env("alice", &[], None, Stdio::piped(), &home.env());
    alice.expect_err_contains("kept 2 private messages of yours not delivered yet");
    let mut bob = Peer::join("bob", alice.port(), 2);
    alice.expect_line("* bob joined");
    bob.send("bob here");
    alice.expect_line("bob: bob here");
    alice.assert_no_out("sent to no key", &|l| l.contains("to zed: sent"));

    // zed is first seen: its key is the one its name is bound to now.
    let mut zed = Peer::join("zed", bob.port(), 3);
    alice.expect_line("* zed joined");
    zed.expect_line("alice (private): hello zed, whoever you will be");
    zed.expect_line("alice (private): and a second");
    alice.expect_line("* private 1 to zed: delivered");
    alice.expect_line("* private 2 to zed: delivered");
    alice.send(":msgs");
    alice.expect_line("* no private messages of yours waiting");
    bob.assert_no_out("a relay showed it", &|l| l.contains("whoever"));
}

/// Both the sender and the only other holder stop while dave is away:
/// carol, started again alone, still holds the message and delivers it
/// when dave joins; alice, started again, still has it as undelivered
/// until dave's acknowledgement reaches her.
#[test]
fn holders_and_senders_keep_messages_across_restarts() {
    let mut alice = Peer::start("alice");
    let mut carol = Peer::join("carol", alice.port(), 2);
    let mut dave = Peer::join("dave", alice.port(), 3);
    alice.expect_line("* dave joined");
    carol.expect_line("* dave joined");
    let dave_home = dave.keep_home();
    dave.send(":q");
    dave.expect_exit(0);
    alice.expect_line("* dave left");
    carol.expect_line("* dave left");

    alice.send(":msg dave kept across restarts");
    alice.expect_line("* private 1 to dave: queued");
    until_holding(&mut carol, 1);
    let (alice_home, carol_home) = (alice.keep_home(), carol.keep_home());
    alice.send(":q");
    alice.expect_exit(0);
    carol.send(":q");
    carol.expect_exit(0);

    let mut carol = Peer::launch_env("carol", &[], None, Stdio::piped(), &carol_home.env());
    carol.expect_err_contains("kept 0 private messages of yours not delivered yet, and 1 for");
    let mut dave = Peer::launch_env(
        "dave",
        &[],
        Some(carol.port()),
        Stdio::piped(),
        &dave_home.env(),
    );
    dave.expect_joined(carol.port(), 2);
    dave.expect_line("alice (private): kept across restarts");
    until_holding(&mut carol, 0);

    let mut alice = Peer::launch_env(
        "alice",
        &[],
        Some(carol.port()),
        Stdio::piped(),
        &alice_home.env(),
    );
    alice.expect_err_contains("kept 1 private message of yours not delivered yet");
    alice.expect_joined(carol.port(), 3);
    alice.expect_line("* private 1 to dave: delivered");
    alice.send(":msgs");
    alice.expect_line("* no private messages of yours waiting");
    carol.send("after");
    dave.expect_line("carol: after");
    let n = dave
        .out_lines()
        .iter()
        .filter(|l| l.contains("kept across restarts"))
        .count();
    assert_eq!(n, 1, "shown once");
}

/// A store that cannot be read is set aside with a clear error; the peer
/// runs on.
#[test]
fn a_corrupt_store_is_set_aside() {
    let home = util::Home::new();
    let env = home.env();
    let state = std::path::Path::new(env[1].1).join("p2pchat");
    std::fs::create_dir_all(&state).unwrap();
    // "alice" in hexadecimal.
    let file = state.join("private-616c696365");
    std::fs::write(&file, b"\0\0\0\0\0\0\0\0not a store").unwrap();
    let mut alice = Peer::launch_env("alice", &[], None, Stdio::piped(), &env);
    alice.expect_err_contains("not a p2pchat private message store: set aside as");
    assert!(state.join("private-616c696365.corrupt").exists());
    assert!(!file.exists());
    let mut bob = Peer::join("bob", alice.port(), 2);
    alice.expect_line("* bob joined");
    bob.send(":msg alice still works");
    alice.expect_line("bob (private): still works");
}

/// The bound on one sender's undelivered messages to one name gives a
/// clear error, and nothing is sent; in JSON, private messages and their
/// states are objects of their own.
#[test]
fn bounds_refuse_clearly_and_json_has_private_objects() {
    let mut alice = Peer::start("alice");
    let mut dave = Peer::launch("dave", &["--json"], Some(alice.port()), Stdio::piped());
    dave.expect_contains(r#""type":"joined""#);
    alice.expect_line("* dave joined");
    alice.send(":msg dave hi dave");
    let l = dave.expect_contains(r#""from":"alice","to":"dave","text":"hi dave""#);
    assert!(l.starts_with(r#"{"type":"private","time":"#), "{l}");
    alice.expect_line("* private 1 to dave: delivered");
    dave.send(r#"{"command":"msg alice hello"}"#);
    alice.expect_line("dave (private): hello");
    let l = dave.expect_contains(r#""type":"delivery""#);
    assert!(l.ends_with(r#","to":"alice","n":1,"state":"sent"}"#), "{l}");
    let l = dave.expect_contains(r#""state":"delivered"}"#);
    assert!(l.contains(r#""to":"alice","n":1,"#), "{l}");

    dave.send(r#"{"command":"q"}"#);
    dave.expect_exit(0);
    alice.expect_line("* dave left");
    for k in 0..100 {
        alice.send(&format!(":m dave number {k}"));
    }
    alice.expect_line("* private 101 to dave: queued");
    alice.send(":m dave one too many");
    alice.expect_err_line(
        "p2pchat: msg: not sent: 100 messages of yours are waiting for dave; \
         at most 1000 (100 to one name)",
    );
    alice.send(":msgs");
    alice.expect_contains("* private 101 to dave: queued");
    alice.assert_no_out("over the bound", &|l| l.contains("private 102"));
}

/// dave shows alice's message, and is killed before his acknowledgement
/// reaches anyone (the one peer he has, a raw wire client, keeps it to
/// itself, as if dave had crashed before sending it). Started again,
/// dave gets the same message once more from a holder, and does not show
/// it again: he recorded it as shown, on disk, before showing it.
#[test]
fn a_message_shown_before_a_crash_is_not_shown_again() {
    let mut dave = Peer::start("dave");
    let home = dave.keep_home();
    let alice = who(0xa11ce);
    let mut raw = Raw::connect(dave.port());
    let (h, _) = raw.hello(&alice, "alice", true);
    let seal = |n: u64, text: &str| {
        let mut p = Private {
            to: "dave".into(),
            from: alice.id(),
            n,
            age: 0,
            holders: Vec::new(),
            sealed: Vec::new(),
        };
        dm::seal(&alice, "alice", &h.ident.key, &mut p, 1, text).unwrap();
        Body::Other {
            kind: dm::PRIVATE,
            payload: p.encode(),
        }
    };
    let (one, two) = (seal(1, "exactly once"), seal(2, "and then the next"));
    let join = |me: &p2pchat::proto::crypto::Identity, name: &str| Body::Join {
        name: name.into(),
        ip: Some(std::net::Ipv4Addr::LOCALHOST.into()),
        port: 1,
        ident: frames::ident(me),
    };
    for m in frames::sealed(&alice, 1, vec![join(&alice, "alice"), one.clone()]) {
        raw.send(&m);
    }
    dave.expect_line("alice (private): exactly once");
    dave.signal(libc::SIGKILL);
    dave.wait_exit(DEADLINE);
    drop(raw);

    // A holder passes its copy on again, and the next one.
    let mut dave = Peer::launch_env("dave", &[], None, Stdio::piped(), &home.env());
    let carol = who(0xca201);
    let mut raw = Raw::connect(dave.port());
    raw.hello(&carol, "carol", true);
    for m in frames::sealed(&carol, 1, vec![join(&carol, "carol"), one, two]) {
        raw.send(&m);
    }
    dave.expect_line("alice (private): and then the next");
    dave.assert_no_out("shown again after the crash", &|l| {
        l.contains("exactly once")
    });
    // Acknowledged again, so that the holder drops it.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match raw.recv(left) {
            Got::Msg(Msg::Event(ev)) => {
                if let Body::Other { kind: 21, payload } = &ev.body
                    && dm::decode_received(payload).is_some_and(|a| a.contains(&(alice.id(), 2)))
                {
                    break;
                }
            }
            Got::Msg(_) => {}
            Got::Closed | Got::Timeout => panic!("dave never acknowledged"),
        }
    }
}
