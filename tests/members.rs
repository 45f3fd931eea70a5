//! Hostile members: a test peer that joins as a member and speaks the wire
//! protocol (mallory) tries to impersonate, lock out, silence and amplify,
//! against real peers on 127.0.0.1.
//!
//! Waits have deadlines. Where a test shows that something did *not*
//! happen, mallory (or bob) says a marker line after it: links keep order,
//! so by the time the marker is shown, whatever came before it would have
//! been shown too.

mod util;

use p2pchat::proto::crypto::Identity;
use p2pchat::proto::wire::{self, Body, Hello, MAX_TEXT, Msg, Refusal};
use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use util::frames::{self, chat, join, signed};
use util::raw::{Got, Raw};
use util::{Peer, chat_both_ways, pair};

/// Mallory's identity: her HELLO, JOIN and lines are her own, signed with
/// her key.
fn me() -> Identity {
    frames::who(0x6d61_6c6c_6f72_7900)
}

/// `p`'s `:who` lines, whatever their number.
fn who(p: &mut Peer) -> Vec<String> {
    p.send(":who");
    let head = p.expect_contains(" members:");
    let n: usize = head
        .trim_start_matches("* ")
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a :who header: {head:?}"));
    (0..n)
        .map(|_| {
            let row = |l: &str| l.starts_with("*   ");
            p.expect_on(util::Stream::Out, "a :who row", &row, util::DEADLINE)
        })
        .collect()
}

/// Mallory, a member, linked to `peer`.
fn mallory(peer: &Peer) -> Raw {
    let mut r = Raw::connect(peer.port());
    r.hello(&me(), "mallory", true);
    r.send(&join(&me(), "mallory", 1));
    r
}

/// Mallory says `text` as herself (event `seq`), and `who` sees it.
fn marker(r: &mut Raw, seq: u64, text: &str, who: &mut [&mut Peer]) {
    r.send(&chat(&me(), seq, text));
    for p in who {
        p.expect_line(&format!("mallory: {text}"));
    }
}

// ---------------------------------------------------------------------------
// 1. Impersonation.

/// A JOIN under alice's name with a fresh id (and a key of its own, its
/// events signed: nothing here is a forgery): nobody shows a second
/// alice, and the impostor's lines are never shown as alice's.
#[test]
fn a_join_event_cannot_take_a_name_in_use() {
    let (mut alice, mut bob) = pair();
    let mut r = mallory(&alice);
    bob.expect_line("* mallory joined");
    let fake = frames::who(0x1111_0000);
    r.send(&join(&fake, "alice", 1));
    r.send(&chat(&fake, 2, "IMPOSTOR speaking"));
    marker(&mut r, 2, "after the impostor", &mut [&mut alice, &mut bob]);
    for p in [&mut alice, &mut bob] {
        p.assert_no_out("a second alice", &|l| {
            l == "* alice joined" || l.starts_with("alice: IMPOSTOR")
        });
    }
    let who = who(&mut bob);
    let alices = who.iter().filter(|l| l.starts_with("*   alice ")).count();
    eprintln!("bob's :who after the impostor: {who:?}");
    assert_eq!(alices, 1, "bob shows {alices} alices: {who:?}");
    chat_both_ways(&mut alice, &mut bob, "after an impostor");
}

/// A HELLO that is not joining, under the taken name bob: refused, and
/// nothing said on that link is shown as bob's. Bob is present, so the
/// refusal says the name is taken (the key check, which would also refuse
/// it, comes second: "taken" is what a user in that place needs to hear).
#[test]
fn a_hello_cannot_take_a_name_in_use() {
    let (mut alice, mut bob) = pair();
    let mut r = Raw::connect(alice.port());
    r.send(&Msg::Hello(Hello {
        joining: false,
        ..frames::hello(&frames::who(0x2222_0000), "bob")
    }));
    let got = r.expect_closed(util::DEADLINE, "a HELLO under bob's name");
    assert!(
        got.iter().any(|m| matches!(
            m,
            Msg::Refuse {
                code: Refusal::NameTaken,
                text,
            } if text.contains("the name bob is taken")
        )),
        "not refused as a taken name: {got:?}"
    );
    bob.send("bob is still bob");
    alice.expect_line("bob: bob is still bob");
    chat_both_ways(&mut alice, &mut bob, "after a HELLO as bob");
}

// ---------------------------------------------------------------------------
// 2. A burst of invented members.

/// Counts connections to a listener that accepts and closes at once: the
/// address every invented member gives.
fn counting_listener() -> (u16, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let n = Arc::new(AtomicU64::new(0));
    let count = n.clone();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else {
                continue;
            };
            count.fetch_add(1, Ordering::Relaxed);
            let _ = s.set_read_timeout(Some(Duration::from_millis(10)));
            let _ = s.read(&mut [0; 64]);
        }
    });
    (port, n)
}

/// 5,000 JOIN events of invented members, all at one address: joiners
/// still get in, and the peers dial that address a bounded number of times
/// (they do not become a connection flood against it).
#[test]
fn a_burst_of_invented_members_locks_nobody_out() {
    let (mut alice, mut bob) = pair();
    let (port, dials) = counting_listener();
    let mut r = mallory(&alice);
    // Each with a key of its own, its JOIN signed: they are as real as
    // mallory can make them.
    let mut burst = Vec::new();
    for i in 0..5_000u64 {
        let fake = frames::who(0xfa6e_0000_0000 + i);
        let ev = join(&fake, &format!("fake{i}"), port);
        wire::encode(&ev, &mut burst).unwrap();
    }
    r.bytes(&burst);
    marker(&mut r, 2, "burst sent", &mut [&mut alice, &mut bob]);
    let t0 = Instant::now();
    let carol = Peer::launch(
        "carol",
        &[],
        Some(alice.port()),
        std::process::Stdio::piped(),
    );
    let mut carol = carol;
    carol.expect_contains("* joined through");
    let joined = t0.elapsed();
    alice.expect_line("* carol joined");
    chat_both_ways(&mut carol, &mut bob, "after 5,000 invented members");
    // Ten seconds in which the peers would dial the invented members.
    let window = Duration::from_secs(10);
    let start = dials.load(Ordering::Relaxed);
    let w0 = Instant::now();
    while w0.elapsed() < window {
        r.send(&Msg::Ping);
        thread::sleep(Duration::from_millis(500));
    }
    let n = dials.load(Ordering::Relaxed) - start;
    eprintln!(
        "5,000 invented members: carol joined in {joined:?}; \
         dials to their address in {window:?}: {n} (3 peers)"
    );
    // Three peers at a few dials a second each, at most.
    assert!(
        n <= 150,
        "{n} dials to the invented members' address in {window:?}"
    );
    chat_both_ways(&mut alice, &mut carol, "at the end");
}

// ---------------------------------------------------------------------------
// 3. A member that floods.

/// Sends `n` chat lines as mallory, from event `seq` on, 1,000 every 10 ms
/// (100,000 a second), sealed as a real peer seals a burst (one signature
/// per run); returns the next event and how long it took.
fn flood(r: &mut Raw, mut seq: u64, n: u64) -> (u64, Duration) {
    let text = "x".repeat(100);
    let batches: Vec<Vec<u8>> = (0..n / 1_000)
        .map(|_| {
            let lines = vec![frames::lobby(&text); 1_000];
            let mut buf = Vec::new();
            for ev in frames::sealed(&me(), seq, lines) {
                wire::encode(&ev, &mut buf).unwrap();
            }
            seq += 1_000;
            buf
        })
        .collect();
    let t0 = Instant::now();
    for buf in batches {
        r.bytes(&buf);
        thread::sleep(Duration::from_millis(10));
    }
    (seq, t0.elapsed())
}

/// Mallory floods alice at 100,000 lines a second, twice as many as the
/// recent-event cache holds, while bob says 100 lines and carol is
/// stopped (SIGSTOP): alice shows every line of bob's, and carol, back,
/// has them all too, with nothing said missing from bob. (30,000 lines:
/// as many as the peers' output queues take, for the test reads every
/// line they print. Here the kernel's socket buffers hold what carol
/// missed; `tests/sim.rs`, `a_flood_leaves_others_gaps_fillable`, makes
/// her fetch it from the flooded caches.)
#[test]
fn a_flood_from_one_member_costs_others_nothing() {
    let (mut alice, mut bob) = pair();
    let mut carol = Peer::join("carol", alice.port(), 3);
    bob.expect_line("* carol joined");
    let mut r = mallory(&alice);
    carol.expect_line("* mallory joined");
    carol.signal(libc::SIGSTOP);
    let mut seq = 2;
    let mut took = Duration::ZERO;
    for half in 0..2 {
        for i in 0..50 {
            bob.send(&format!("honest {}", half * 50 + i));
        }
        let (next, t) = flood(&mut r, seq, 15_000);
        (seq, took) = (next, took + t);
    }
    for i in 0..100 {
        alice.expect_line(&format!("bob: honest {i}"));
    }
    carol.signal(libc::SIGCONT);
    let t0 = Instant::now();
    for i in 0..100 {
        carol.expect_on(
            util::Stream::Out,
            &format!("bob: honest {i}"),
            &|l| l == format!("bob: honest {i}"),
            Duration::from_secs(30),
        );
    }
    eprintln!(
        "flood: {} lines in {took:?}; carol, stopped meanwhile, had all 100 of \
         bob's lines {:?} after SIGCONT",
        seq - 2,
        t0.elapsed()
    );
    for p in [&mut alice, &mut carol] {
        let missed: Vec<String> = p
            .err_lines()
            .into_iter()
            .filter(|l| l.contains("missed") && l.contains("bob"))
            .collect();
        assert!(missed.is_empty(), "{}: {missed:?}", p.name);
    }
    chat_both_ways(&mut carol, &mut bob, "after the flood");
}

// ---------------------------------------------------------------------------
// 4. FETCH amplification.

/// Bytes of frames received within `t`.
fn drain_bytes(r: &mut Raw, t: Duration) -> usize {
    let deadline = Instant::now() + t;
    let mut n = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match r.recv(left) {
            Got::Msg(m) => n += wire::frame(&m).unwrap().len(),
            Got::Closed | Got::Timeout => return n,
        }
    }
}

/// A FETCH of 29 bytes is answered with a bounded number of bytes, and a
/// reader asking again and again gets a bounded rate.
#[test]
fn fetch_answers_are_bounded_and_paced() {
    let (mut alice, mut bob) = pair();
    let mut r = mallory(&alice);
    // 16 lines of the largest size, cached at alice.
    let big = "y".repeat(MAX_TEXT);
    for seq in 2..18 {
        r.send(&chat(&me(), seq, &big));
    }
    marker(&mut r, 18, "cached", &mut [&mut alice]);
    drain_bytes(&mut r, Duration::from_millis(300));
    let fetch = Msg::Fetch {
        origin: me().id(),
        from: 2,
        to: 17,
    };
    assert_eq!(wire::frame(&fetch).unwrap().len(), 29);
    r.send(&fetch);
    let one = drain_bytes(&mut r, Duration::from_millis(500));
    eprintln!("one 29-byte FETCH: {one} bytes back ({}×)", one / 29);
    assert!(one > 0, "no answer at all");
    assert!(one <= 256 << 10, "one FETCH got {one} bytes");
    // A FETCH every millisecond for two seconds.
    let asker = thread::spawn(move || {
        let mut buf = Vec::new();
        wire::encode(&fetch, &mut buf).unwrap();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(2) {
            if std::io::Write::write_all(&mut r.s, &buf).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
        r
    });
    let mut r = asker.join().unwrap();
    let t0 = Instant::now();
    let many = drain_bytes(&mut r, Duration::from_secs(1));
    let rate = many as f64 / (2.0 + t0.elapsed().as_secs_f64());
    eprintln!(
        "2 s of FETCHes: {many} bytes back, {:.1} MiB/s",
        rate / (1 << 20) as f64
    );
    assert!(many <= 32 << 20, "{many} bytes for 2 s of FETCHes");
    chat_both_ways(&mut alice, &mut bob, "after FETCH amplification");
}

// ---------------------------------------------------------------------------
// 5. Replays of a departed member.

/// Reads what `r` is sent until `name`'s JOIN and her line `text` have
/// come; returns her events as they came (signed by her: what a relay
/// can keep and replay).
fn capture(r: &mut Raw, name: &str, text: &str) -> Vec<Msg> {
    let deadline = Instant::now() + util::DEADLINE;
    let mut origin = None;
    let mut kept = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = match r.recv(left) {
            Got::Msg(Msg::Event(ev)) => ev,
            Got::Msg(_) => continue,
            _ => panic!("{name}'s events not relayed to mallory; kept {kept:?}"),
        };
        if matches!(&ev.body, Body::Join { name: n, .. } if n == name) {
            origin = Some(ev.origin);
        }
        if origin != Some(ev.origin) {
            continue;
        }
        let done = matches!(&ev.body, Body::Chat { text: t, .. } if t == text);
        kept.push(Msg::Event(ev));
        if done {
            return kept;
        }
    }
}

/// Erin joins, speaks and leaves; mallory kept her frames (as alice
/// relayed them, signed by erin) and replays them to frank, who joined
/// after she left: frank shows no ghost.
#[test]
fn a_departed_members_replayed_events_raise_no_ghost() {
    let (mut alice, mut bob) = pair();
    let mut r = mallory(&alice);
    let mut erin = Peer::join("erin", alice.port(), 4);
    alice.expect_line("* erin joined");
    erin.send("erin was here");
    alice.expect_line("erin: erin was here");
    let kept = capture(&mut r, "erin", "erin was here");
    erin.send(":q");
    erin.expect_exit(0);
    alice.expect_line("* erin left");
    let mut frank = Peer::join("frank", alice.port(), 4);
    let mut to_frank = Raw::connect(frank.port());
    to_frank.send(&Msg::Hello(Hello {
        joining: false,
        ..frames::hello(&me(), "mallory")
    }));
    for m in &kept {
        to_frank.send(m);
    }
    marker(&mut r, 2, "replayed", &mut [&mut frank]);
    frank.assert_no_out("a ghost of erin", &|l| l.contains("erin"));
    let who = who(&mut frank);
    assert!(!who.iter().any(|l| l.contains("erin")), "{who:?}");
    chat_both_ways(&mut frank, &mut bob, "after a replay");
}

// ---------------------------------------------------------------------------
// 6. Limits on receipt.

/// A line longer than any peer may send is neither shown nor relayed.
#[test]
fn an_overlong_line_is_dropped() {
    let (mut alice, mut bob) = pair();
    let mut r = mallory(&alice);
    r.send(&chat(&me(), 2, &"z".repeat(65_000)));
    marker(&mut r, 3, "after a long line", &mut [&mut alice, &mut bob]);
    for p in [&mut alice, &mut bob] {
        p.assert_no_out("an overlong line", &|l| l.contains("zzzz"));
    }
}

/// Bidirectional marks and line separators from the network are shown
/// escaped in plain output, and JSON output escapes every control.
#[test]
fn invisible_and_bidi_characters_are_escaped() {
    let mut alice = Peer::start("alice");
    let mut bob = Peer::launch(
        "bob",
        &["--json"],
        Some(alice.port()),
        std::process::Stdio::piped(),
    );
    bob.expect_contains(r#""type":"joined""#);
    alice.expect_line("* bob joined");
    let mut r = mallory(&alice);
    let text = "a\u{200e}b\u{200f}c\u{61c}d\u{2028}e\u{2029}f\u{85}g\u{202e}h";
    r.send(&signed(
        &me(),
        2,
        Body::Chat {
            room: "lobby\u{9b}".into(),
            text: text.into(),
        },
    ));
    let plain = alice.expect_contains("mallory: a");
    let json = bob.expect_contains(r#""from":"mallory""#);
    eprintln!("plain: {plain:?}\njson: {json:?}");
    for c in [
        '\u{200e}', '\u{200f}', '\u{61c}', '\u{2028}', '\u{2029}', '\u{85}', '\u{202e}',
    ] {
        assert!(!plain.contains(c), "plain output has {c:?}: {plain:?}");
        assert!(!json.contains(c), "JSON output has {c:?}: {json:?}");
    }
    assert!(!json.contains('\u{9b}'), "JSON room field raw: {json:?}");
}
