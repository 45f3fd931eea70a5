//! The network secret and signed identities, against real peers on
//! 127.0.0.1: with a secret, strangers neither get in nor read anything;
//! a name stays with its key; and no relay can forge or alter what a
//! member said.
//!
//! Where a test shows that something did *not* happen, a later line from
//! the same sender is waited for: links keep order, so whatever came
//! before it would have been shown by then.

mod util;

use p2pchat::proto::wire::{Body, Entry, Msg};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::thread;
use util::frames::{self, who};
use util::raw::{Got, Raw};
use util::{DEADLINE, Peer, chat_both_ways, pair};

const SECRET: &str = "correct horse battery staple";

/// The one diagnostic a peer without a secret writes.
const UNENCRYPTED: &str = "p2pchat: this network is not encrypted";

fn with_secret(secret: &str) -> [(&'static str, &str); 1] {
    [("P2PCHAT_SECRET", secret)]
}

/// alice and bob, sharing `secret`, bob joined through alice.
fn secret_pair(secret: &str) -> (Peer, Peer) {
    let env = with_secret(secret);
    let mut alice = Peer::launch_env("alice", &[], None, Stdio::piped(), &env);
    let mut bob = Peer::launch_env("bob", &[], Some(alice.port()), Stdio::piped(), &env);
    bob.expect_joined(alice.port(), 2);
    alice.expect_line("* bob joined");
    (alice, bob)
}

#[test]
fn with_a_secret_members_chat_and_strangers_are_refused() {
    let (mut alice, mut bob) = secret_pair(SECRET);
    chat_both_ways(&mut alice, &mut bob, "encrypted");
    for p in [&mut alice, &mut bob] {
        assert!(
            !p.err_lines().iter().any(|l| l.starts_with(UNENCRYPTED)),
            "{}: said the network is not encrypted",
            p.name
        );
    }

    // No secret: refused, exit 1, saying the network is encrypted.
    let mut carol = Peer::launch("carol", &[], Some(alice.port()), Stdio::piped());
    carol.expect_exit(1);
    let why = carol.expect_err_contains("refused");
    assert!(why.contains("encrypted") && why.contains("secret"), "{why}");
    alice.expect_err_contains("refused 127.0.0.1:");

    // Another secret: refused, exit 1, saying the secret does not match.
    let env = with_secret("another secret");
    let mut dave = Peer::launch_env("dave", &[], Some(alice.port()), Stdio::piped(), &env);
    dave.expect_exit(1);
    dave.expect_err_contains("the network secret does not match");

    // Neither learned anything; alice and bob go on.
    chat_both_ways(&mut alice, &mut bob, "still");
    for p in [&mut carol, &mut dave] {
        let out = p.out_lines();
        assert!(
            !out.iter()
                .any(|l| l.contains("encrypted from") || l.contains("joined")),
            "{} saw: {out:?}",
            p.name
        );
    }
    assert!(
        !alice
            .out_lines()
            .iter()
            .any(|l| l.contains("carol") || l.contains("dave"))
    );

    // A peer with a secret cannot join a network without one either.
    let mut open = Peer::start("erin");
    let mut frank = Peer::launch_env("frank", &[], Some(open.port()), Stdio::piped(), &env);
    frank.expect_exit(1);
    frank.expect_err_contains("no network secret");
    open.expect_err_contains("refused 127.0.0.1:");
}

/// A TCP proxy on 127.0.0.1 in front of `port` that keeps a copy of every
/// byte it forwards, each way: (its port, bytes from the dialler, bytes
/// to it).
type Capture = Arc<Mutex<Vec<u8>>>;

fn proxy(port: u16) -> (u16, Capture, Capture) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap().port();
    let (up, down) = (Capture::default(), Capture::default());
    let (u, d) = (up.clone(), down.clone());
    thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(a) = conn else { return };
            let Ok(b) = TcpStream::connect(("127.0.0.1", port)) else {
                return;
            };
            pump(a.try_clone().unwrap(), b.try_clone().unwrap(), u.clone());
            pump(b, a, d.clone());
        }
    });
    (at, up, down)
}

fn pump(mut from: TcpStream, mut to: TcpStream, keep: Capture) {
    thread::spawn(move || {
        let mut buf = [0u8; 16 << 10];
        while let Ok(n) = from.read(&mut buf) {
            // Kept before it is passed on: once the far end has shown it,
            // the capture has it.
            keep.lock().unwrap().extend_from_slice(&buf[..n]);
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

fn holds(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// bob joins alice through a recording proxy and they chat; returns the
/// capture each way.
fn chat_through_proxy(env: &[(&str, &str)]) -> (Vec<u8>, Vec<u8>) {
    let mut alice = Peer::launch_env("alice", &[], None, Stdio::piped(), env);
    let (at, up, down) = proxy(alice.port());
    let mut bob = Peer::launch_env("bob", &[], Some(at), Stdio::piped(), env);
    bob.expect_joined(at, 2);
    alice.expect_line("* bob joined");
    alice.send("the-eagle-lands-at-noon");
    bob.expect_line("alice: the-eagle-lands-at-noon");
    bob.send("bring-the-blue-umbrella");
    alice.expect_line("bob: bring-the-blue-umbrella");
    let up = up.lock().unwrap().clone();
    let down = down.lock().unwrap().clone();
    (up, down)
}

#[test]
fn a_capture_of_the_traffic_holds_no_chat_text() {
    // Without a secret the capture shows the text: the check can fail.
    let (up, down) = chat_through_proxy(&[]);
    assert!(holds(&down, "the-eagle-lands-at-noon"));
    assert!(holds(&up, "bring-the-blue-umbrella"));

    let (up, down) = chat_through_proxy(&with_secret(SECRET));
    assert!(
        up.len() > 200 && down.len() > 200,
        "{} {}",
        up.len(),
        down.len()
    );
    for text in [
        "the-eagle-lands-at-noon",
        "bring-the-blue-umbrella",
        "alice",
        "bob",
    ] {
        assert!(
            !holds(&up, text) && !holds(&down, text),
            "{text:?} in the clear"
        );
    }
}

#[test]
fn a_replayed_handshake_and_random_bytes_get_nothing() {
    let env = with_secret(SECRET);
    let mut alice = Peer::launch_env("alice", &[], None, Stdio::piped(), &env);
    let (at, up, _) = proxy(alice.port());
    let mut bob = Peer::launch_env("bob", &[], Some(at), Stdio::piped(), &env);
    bob.expect_joined(at, 2);
    alice.expect_line("* bob joined");
    bob.send("first words");
    alice.expect_line("bob: first words");
    let recorded = up.lock().unwrap().clone();

    // bob's side of the conversation, replayed on a new connection: the
    // handshake is answered afresh, so nothing after it decrypts.
    let mut r = Raw::connect(alice.port());
    r.bytes(&recorded);
    let got = r.expect_closed(DEADLINE, "replay");
    assert!(got.len() <= 1, "alice answered a replay with {got:?}");

    // Random bytes.
    let mut r = Raw::connect(alice.port());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let _ = r.s.write_all(&noise);
    r.expect_closed(DEADLINE, "random bytes");

    // Nothing was delivered twice or from nowhere; bob still gets through.
    bob.send("after the replay");
    alice.expect_line("bob: after the replay");
    let out = alice.out_lines();
    assert_eq!(
        out.iter().filter(|l| *l == "bob: first words").count(),
        1,
        "{out:?}"
    );
    assert_eq!(
        out.iter().filter(|l| l.ends_with(" joined")).count(),
        1,
        "{out:?}"
    );
}

#[test]
fn a_name_stays_with_its_key() {
    let (mut alice, mut bob) = pair();
    // Both see the same fingerprint for bob.
    bob.send(":whois bob");
    let own = bob.expect_contains("bob (you): key ");
    alice.send(":whois bob");
    let seen = alice.expect_contains("bob: key ");
    let key = |l: &str| {
        l.split("key ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(key(&own), key(&seen));
    bob.send(":q");
    bob.expect_exit(0);
    alice.expect_line("* bob left");

    // Another bob, another key (its own home): refused, exit 1, naming
    // the name and saying its key changed; alice is told.
    let mut impostor = Peer::launch("bob", &[], Some(alice.port()), Stdio::piped());
    impostor.expect_exit(1);
    let why = impostor.expect_err_contains("refused");
    assert!(why.contains("the key of bob has changed"), "{why}");
    alice.expect_err_contains("wanted to join as bob with another key");
    let joins = alice
        .out_lines()
        .iter()
        .filter(|l| *l == "* bob joined")
        .count();
    assert_eq!(joins, 1, "the impostor was shown joining");

    // The same bob again (the same key): welcome.
    let home = bob.keep_home();
    drop(bob);
    let mut bob = Peer::launch_env("bob", &[], Some(alice.port()), Stdio::piped(), &home.env());
    bob.expect_joined(alice.port(), 2);
    alice.expect_line("* bob joined");
    bob.send(":q");
    bob.expect_exit(0);
    alice.expect_line("* bob left");

    // :trust takes the new key deliberately.
    let mut newbob = Peer::launch("bob", &[], Some(alice.port()), Stdio::piped());
    newbob.expect_exit(1);
    alice.send(":trust bob");
    alice.expect_contains("bob is trusted with key");
    let home = newbob.keep_home();
    drop(newbob);
    let mut newbob = Peer::launch_env("bob", &[], Some(alice.port()), Stdio::piped(), &home.env());
    newbob.expect_joined(alice.port(), 2);
    alice.expect_line("* bob joined");
    chat_both_ways(&mut alice, &mut newbob, "trusted");
}

/// mallory: a test peer that joins through `via` as a member (it speaks
/// the wire protocol and signs with its own key); returns it and the
/// member list it got.
fn mallory(via: &Peer, n: u64) -> (Raw, Vec<Entry>) {
    let mut r = Raw::connect(via.port());
    let (_, members) = r.hello(&who(n), &format!("mallory{n}"), true);
    (r, members)
}

/// alice, with bob and carol each linked to her only (one link wanted,
/// two at most): carol hears bob only through alice, or through a relay
/// that joins through her.
fn relayed_trio() -> (Peer, Peer, Peer) {
    let one = ["-d", "1", "-D", "2"];
    let mut alice = Peer::start("alice");
    let mut bob = Peer::launch("bob", &one, Some(alice.port()), Stdio::piped());
    bob.expect_joined(alice.port(), 2);
    alice.expect_line("* bob joined");
    let mut carol = Peer::launch("carol", &one, Some(alice.port()), Stdio::piped());
    carol.expect_joined(alice.port(), 3);
    alice.expect_line("* carol joined");
    bob.expect_line("* carol joined");
    (alice, bob, carol)
}

/// bob's id and last event in `members`.
fn bob_in(members: &[Entry]) -> (p2pchat::node::NodeId, u64) {
    let e = members
        .iter()
        .find(|e| e.name == "bob")
        .expect("bob listed");
    (e.id, e.seq)
}

/// A relay (mallory, linked to carol) forges bob's events three ways, as
/// measured on the code before signatures: a chat line in bob's name
/// (shown as his, and his real line with that number swallowed), a LEAVE
/// (bob gone for good), and an event 4,000 ahead (3,998 of bob's lines
/// skipped, carol deaf to him). Each is refused, mallory's link dropped,
/// and bob's real lines arrive.
#[test]
fn a_relay_cannot_forge_a_members_events() {
    let (mut alice, mut bob, mut carol) = relayed_trio();

    // What to forge, from bob's next sequence number: its number and body.
    type Forge = fn(u64) -> (u64, Body);
    let forgeries: [(&str, Forge); 3] = [
        ("chat", |next| (next, frames::lobby("FORGED as bob"))),
        ("leave", |next| (next, Body::Leave)),
        ("ahead", |next| {
            (next + 4_000, frames::lobby("FORGED far ahead"))
        }),
    ];
    for (i, (what, forge)) in forgeries.into_iter().enumerate() {
        let (mut r, members) = mallory(&carol, 10 + i as u64);
        let (bob_id, seq) = bob_in(&members);
        let (seq, body) = forge(seq + 1);
        // Unsigned, as bob's run would be before its seal, and signed, but
        // with mallory's key.
        let unsigned = frames::unsigned(bob_id, seq, body.clone());
        let Msg::Event(mut ev) = frames::signed(&who(10 + i as u64), seq, body) else {
            unreachable!()
        };
        ev.origin = bob_id;
        let signed = Msg::Event(ev);
        if what == "ahead" {
            // Far ahead, with a LACK saying nobody has bob's events before
            // it: once carol asks for the gap, she would skip to it.
            r.send(&signed);
            r.send(&unsigned);
            r.send(&Msg::Lack {
                origin: bob_id,
                oldest: seq,
            });
            let ask = |m: &Msg| matches!(m, Msg::Fetch { origin, .. } if *origin == bob_id);
            loop {
                match r.recv(DEADLINE) {
                    Got::Msg(m) if ask(&m) => break,
                    Got::Msg(_) => {}
                    // The gap was looked at and mallory found out already.
                    Got::Closed => break,
                    Got::Timeout => panic!("carol never asked for bob's gap"),
                }
            }
            r.send(&Msg::Lack {
                origin: bob_id,
                oldest: seq,
            });
        } else {
            r.send(&unsigned);
            r.send(&signed);
        }
        let line = format!("real line after the forged {what}");
        bob.send(&line);
        carol.expect_line(&format!("bob: {line}"));
        alice.expect_line(&format!("bob: {line}"));
        r.expect_closed(DEADLINE, what);
        if i == 0 {
            // (Told once; more of the kind within 10 s are counted.)
            carol.expect_err_contains("dropped the link to mallory10: it relayed a forged event");
        }
    }
    bob.send("and the last");
    carol.expect_line("bob: and the last");
    let out = carol.out_lines();
    assert!(
        !out.iter()
            .any(|l| l.contains("FORGED") || l == "* bob left"),
        "{out:?}"
    );
}

/// mallory, a member linked to carol, takes one of bob's real signed
/// events, changes its number to bob's next and its text, and sends it on
/// before bob says his next line: carol drops it and mallory's link, and
/// shows bob's real line.
#[test]
fn a_relay_that_alters_a_signed_event_has_it_dropped() {
    let (_alice, mut bob, mut carol) = relayed_trio();
    let (mut r, members) = mallory(&carol, 20);
    let (bob_id, _) = bob_in(&members);
    bob.send("a line mallory relays");
    carol.expect_line("bob: a line mallory relays");
    let mut real = None;
    while real.is_none() {
        match r.recv(DEADLINE) {
            // The line itself (a CLOCK, signed too, may come before it).
            Got::Msg(Msg::Event(ev))
                if ev.origin == bob_id
                    && ev.seal.is_some()
                    && matches!(ev.body, Body::Chat { .. }) =>
            {
                real = Some(ev)
            }
            Got::Msg(_) => {}
            _ => panic!("mallory never got bob's line"),
        }
    }
    let mut ev = real.unwrap();
    ev.seq += 1;
    ev.body = frames::lobby("ALTERED by mallory");
    r.send(&Msg::Event(ev));
    r.expect_closed(DEADLINE, "an altered event");
    bob.send("bob's own next line");
    carol.expect_line("bob: bob's own next line");
    assert!(!carol.out_lines().iter().any(|l| l.contains("ALTERED")));
}

/// A key or secret file that is missing, corrupt or open to others, and
/// --secure-only without a secret: one clear error each, exit 1.
#[test]
fn bad_key_and_secret_files_are_one_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = util::TempDir::new("keys");
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let set_mode =
        |p: &str, m: u32| std::fs::set_permissions(p, PermissionsExt::from_mode(m)).unwrap();
    let fails = |args: &[&str], env: &[(&str, &str)], want: &str| {
        let mut all = vec!["--plain", "-b", "127.0.0.1"];
        all.extend_from_slice(args);
        all.push("alice");
        let mut p = Peer::spawn_env("alice", &all, Stdio::null(), env);
        p.expect_exit(1);
        let err = p.err_lines();
        assert!(
            err.len() == 1 && err[0].starts_with("p2pchat: ") && err[0].contains(want),
            "{args:?}: want one error with {want:?}, got {err:?}"
        );
    };

    // A new identity is made with mode 0600, and used again.
    let id = path("id");
    let mut p = Peer::spawn(
        "alice",
        &["--plain", "-b", "127.0.0.1", "--identity", &id, "alice"],
        Stdio::piped(),
    );
    p.wait_listening();
    p.send(":whois alice");
    let first = p.expect_contains("alice (you): key ");
    drop(p);
    let mode = std::fs::metadata(&id).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut p = Peer::spawn(
        "alice",
        &["--plain", "-b", "127.0.0.1", "--identity", &id, "alice"],
        Stdio::piped(),
    );
    p.wait_listening();
    p.send(":whois alice");
    let again = p.expect_contains("alice (you): key ");
    let key = |l: &str| l.split(',').next().unwrap().to_owned();
    assert_eq!(key(&first), key(&again));
    drop(p);

    set_mode(&id, 0o644);
    fails(
        &["--identity", &id],
        &[],
        "is readable by others (mode 644)",
    );
    let junk = path("junk");
    std::fs::write(&junk, "not a key at all\n").unwrap();
    set_mode(&junk, 0o600);
    fails(&["--identity", &junk], &[], "not a p2pchat identity file");
    let nowhere = path("no/such/dir/../../../missing-dir/x");
    std::fs::write(path("missing-dir"), "a file, not a directory").unwrap();
    fails(&["--identity", &nowhere], &[], "identity");

    let secret = path("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    set_mode(&secret, 0o644);
    fails(&["--secret-file", &secret], &[], "readable by others");
    fails(&["--secret-file", &path("none")], &[], "secret file");
    fails(&["--secure-only"], &[], "--secure-only: no network secret");
    set_mode(&secret, 0o600);
    fails(
        &["--secret-file", &secret],
        &with_secret("x"),
        "give the secret once",
    );
}
