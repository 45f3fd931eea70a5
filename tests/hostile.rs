//! Hostile input against a real peer: raw TCP sockets speaking (or not
//! speaking) the wire protocol to `alice`, with `bob`, an honest peer,
//! joined through her.
//!
//! Every case checks afterwards that alice and bob still chat both ways,
//! and where memory is at stake that alice's peak resident set (VmHWM in
//! /proc/PID/status) stays under [`RSS_MAX`]. Waits have deadlines; the
//! only fixed durations are measuring windows (CPU time over a second).

mod util;

use p2pchat::proto::crypto::Identity;
use p2pchat::proto::wire::{self, Body, Entry, Hello, MAX_FRAME, Msg, Refusal};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};
use util::frames::{self, chat, forged, ident, signed, who};
use util::procfs::{cpu_ticks, fd_count, status_kib};
use util::raw::{Got, Raw};
use util::{Peer, Stream, chat_both_ways, pair};

/// Alice's peak resident set may not pass this, whatever she is sent.
const RSS_MAX_KIB: u64 = 16 << 10;
/// In words, for failure messages.
const RSS_MAX: &str = "16 MiB";
/// The handshake timeout (core::Config::default().handshake_timeout) plus
/// slack for a loaded machine.
const HANDSHAKE_CLOSE: Duration = Duration::from_secs(8);

// ---------------------------------------------------------------------------
// The honest pair, and what we measure of alice.

/// Fails if alice's peak RSS passed the bound.
fn assert_rss_bounded(alice: &mut Peer, what: &str) {
    assert_rss_bounded_plus(alice, what, 0);
}

/// Fails if alice's peak RSS passed the bound plus `extra_kib` (what her
/// stdout may queue when she prints a flood faster than it is read).
fn assert_rss_bounded_plus(alice: &mut Peer, what: &str, extra_kib: u64) {
    let hwm = status_kib(alice.pid(), "VmHWM");
    let rss = status_kib(alice.pid(), "VmRSS");
    eprintln!("{what}: alice VmRSS {rss} KiB, VmHWM {hwm} KiB");
    if hwm > RSS_MAX_KIB + extra_kib {
        alice.fail(&format!(
            "{what}: peak RSS {} MiB, over {RSS_MAX} + {} MiB",
            hwm >> 10,
            extra_kib >> 10
        ));
    }
}

/// Waits until `cond` holds, polling; fails with `what` at the deadline.
fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A HELLO from `me` as `name`, proved, speaking `version` (which the
/// proof does not cover).
fn hello_msg(me: &Identity, name: &str, version: u16) -> Msg {
    Msg::Hello(Hello {
        version,
        ..frames::hello(me, name)
    })
}

/// Bob's entry in alice's member list.
fn entry<'a>(members: &'a [Entry], name: &str) -> &'a Entry {
    members
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("{name} not in {members:?}"))
}

/// Mallory's identity: a key of her own, so her HELLO and her own events
/// check out; what she says as anyone else cannot.
fn mallory() -> Identity {
    who(0x6d61_6c6c_6f72_7900)
}

// ---------------------------------------------------------------------------
// Malformed frames.

#[test]
fn truncated_frame_then_close() {
    let m = mallory();
    let (mut alice, mut bob) = pair();
    // Half a HELLO, then the connection closes.
    let f = wire::frame(&hello_msg(&m, "mallory", wire::VERSION)).unwrap();
    let mut r = Raw::connect(alice.port());
    r.bytes(&f[..f.len() / 2]);
    drop(r);
    // A whole HELLO, then half an event, then close.
    let mut r = Raw::connect(alice.port());
    r.hello(&m, "mallory", true);
    let f = wire::frame(&chat(&m, 1, "never finished")).unwrap();
    r.bytes(&f[..f.len() - 3]);
    r.s.shutdown(Shutdown::Write).unwrap();
    r.expect_closed(util::DEADLINE, "truncated event");
    chat_both_ways(&mut alice, &mut bob, "after truncated frames");
    alice.assert_no_out("half an event shown", &|l| l.contains("never finished"));
}

#[test]
fn oversized_length_prefixes_refused_before_allocation() {
    let m = mallory();
    let (mut alice, mut bob) = pair();
    let before = status_kib(alice.pid(), "VmHWM");
    for len in [MAX_FRAME as u32 + 1, 1 << 31, u32::MAX] {
        let mut r = Raw::connect(alice.port());
        r.bytes(&len.to_be_bytes());
        // She may close as soon as she has read the prefix.
        let _ = r.s.write_all(&[0x55; 4096]);
        r.expect_closed(util::DEADLINE, &format!("length prefix {len}"));
    }
    // The same after HELLO, on a link that is a member's.
    let mut r = Raw::connect(alice.port());
    r.hello(&m, "mallory", true);
    r.bytes(&u32::MAX.to_be_bytes());
    r.expect_closed(util::DEADLINE, "length prefix 0xFFFFFFFF after HELLO");
    let after = status_kib(alice.pid(), "VmHWM");
    assert!(
        after < before + 1024,
        "peak RSS grew from {before} to {after} KiB on length prefixes alone"
    );
    assert_rss_bounded(&mut alice, "oversized prefixes");
    chat_both_ways(&mut alice, &mut bob, "after oversized prefixes");
}

#[test]
fn unknown_kind_before_and_after_hello() {
    let m = mallory();
    let (mut alice, mut bob) = pair();
    // Before HELLO: not a peer, closed.
    let mut r = Raw::connect(alice.port());
    r.body(&[99, 1, 2, 3]);
    let got = r.expect_closed(util::DEADLINE, "unknown kind before HELLO");
    assert!(
        !got.iter().any(|m| matches!(m, Msg::Hello(_))),
        "answered {got:?}"
    );
    // After HELLO: a newer peer's message, skipped; the link stays.
    let mut r = Raw::connect(alice.port());
    r.hello(&m, "mallory", true);
    r.body(&[99, 1, 2, 3]);
    r.body(&[0xff]);
    r.send(&chat(&m, 1, "after unknown kinds"));
    alice.expect_line("mallory: after unknown kinds");
    chat_both_ways(&mut alice, &mut bob, "after unknown kinds");
}

#[test]
fn wrong_protocol_version_gets_a_readable_refusal() {
    let m = mallory();
    let (mut alice, mut bob) = pair();
    // Version 1 is the last before signed identities: a peer that still
    // speaks it is told so, not let in unsigned. Version 2 is the last
    // before lazy push (it would skip IHAVE, and miss what is announced).
    for version in [0, 1, wire::VERSION - 1, wire::VERSION + 1, u16::MAX] {
        let mut r = Raw::connect(alice.port());
        r.send(&hello_msg(&m, "mallory", version));
        let got = r.expect_closed(util::DEADLINE, "wrong version");
        match got.as_slice() {
            [Msg::Refuse { code, text }] => {
                assert_eq!(*code, Refusal::Version, "{text}");
                assert!(
                    text.contains(&format!("version {version}"))
                        && text.contains(&wire::VERSION.to_string()),
                    "refusal does not name the versions: {text:?}"
                );
            }
            other => panic!("version {version}: expected one REFUSE, got {other:?}"),
        }
    }
    chat_both_ways(&mut alice, &mut bob, "after wrong versions");
}

#[test]
fn invalid_names_are_refused() {
    let m = mallory();
    let (mut alice, mut bob) = pair();
    // Not UTF-8: the HELLO does not decode at all.
    let mut body = wire::frame(&hello_msg(&m, "mmmm", wire::VERSION)).unwrap()[4..].to_vec();
    let at = body.windows(4).position(|w| w == b"mmmm").unwrap();
    body[at..at + 4].copy_from_slice(b"\xff\xfe\xc0\x80");
    let mut r = Raw::connect(alice.port());
    r.body(&body);
    let got = r.expect_closed(util::DEADLINE, "name not UTF-8");
    assert!(
        got.iter().all(|m| matches!(m, Msg::Refuse { .. })),
        "{got:?}"
    );

    let long = "x".repeat(wire::MAX_NAME + 1);
    for name in [
        "",
        long.as_str(),
        "a\x1b[2Jb",
        "bell\x07",
        "a b",
        "tab\t",
        "a:b",
    ] {
        let mut r = Raw::connect(alice.port());
        r.send(&hello_msg(&m, name, wire::VERSION));
        let got = r.expect_closed(util::DEADLINE, &format!("name {name:?}"));
        assert!(
            got.iter().all(|m| matches!(m, Msg::Refuse { .. })),
            "name {name:?} answered {got:?}"
        );
    }
    chat_both_ways(&mut alice, &mut bob, "after bad names");
    alice.assert_no_out("bad name shown", &|l| {
        l.contains("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
    });
}

// ---------------------------------------------------------------------------
// Hostile behaviour.

#[test]
fn never_sends_hello_closed_after_handshake_timeout() {
    let (mut alice, mut bob) = pair();
    let mut r = Raw::connect(alice.port());
    let opened = Instant::now();
    // Chat goes on meanwhile.
    chat_both_ways(&mut alice, &mut bob, "beside a silent socket");
    r.expect_closed(HANDSHAKE_CLOSE, "silent connection");
    eprintln!("silent connection closed after {:?}", opened.elapsed());
    chat_both_ways(&mut alice, &mut bob, "after the silent socket");
}

#[test]
fn one_byte_per_second_closed_by_handshake_timeout() {
    let m = mallory();
    let (mut alice, mut bob) = pair();
    let f = wire::frame(&hello_msg(&m, "mallory", wire::VERSION)).unwrap();
    let mut r = Raw::connect(alice.port());
    let opened = Instant::now();
    let mut closed = false;
    for &b in f.iter().cycle().take(20) {
        if r.s.write_all(&[b]).is_err() {
            closed = true;
            break;
        }
        // The pace: one byte, then a second of listening for the close.
        if let Got::Closed = r.recv(Duration::from_secs(1)) {
            closed = true;
            break;
        }
        if opened.elapsed() > HANDSHAKE_CLOSE {
            break;
        }
    }
    assert!(
        closed,
        "slow loris still connected after {:?}",
        opened.elapsed()
    );
    eprintln!("slow loris closed after {:?}", opened.elapsed());
    chat_both_ways(&mut alice, &mut bob, "after the slow loris");
}

#[test]
fn a_member_that_never_reads_is_dropped_and_chat_goes_on() {
    let m = mallory();
    let (mut alice, mut bob) = pair();
    let fds = fd_count(alice.pid());
    let mut r = Raw::connect_small_rcvbuf(alice.port());
    r.hello(&m, "mallory", true);
    wait_until(util::DEADLINE, "mallory's link open", || {
        fd_count(alice.pid()) > fds
    });
    // Bob floods: 4,000 lines of 2 kB, relayed by alice to mallory, who
    // reads nothing.
    let pad = "f".repeat(2000);
    let n = 4000;
    for i in 0..n {
        bob.send(&format!("flood {i} {pad}"));
    }
    alice.expect_on(
        Stream::Out,
        "the last flood line",
        &|l| l.starts_with(&format!("bob: flood {} ", n - 1)),
        Duration::from_secs(30),
    );
    let shown = alice
        .out_lines()
        .iter()
        .filter(|l| l.starts_with("bob: flood "))
        .count();
    assert_eq!(shown, n, "alice lost flood lines");
    // Mallory's link is dropped (queue over its bound, or stalled).
    wait_until(
        util::DEADLINE,
        "alice drops the link that never reads",
        || fd_count(alice.pid()) <= fds,
    );
    let mut got = 0usize;
    loop {
        match r.recv(util::DEADLINE) {
            Got::Msg(_) => got += 1,
            Got::Closed => break,
            Got::Timeout => panic!("mallory's link still open after it was dropped"),
        }
    }
    eprintln!("mallory got {got} of {n} flood frames before the drop");
    assert!(got < n, "mallory was never dropped");
    // Alice prints the whole flood: her stdout queue (bounded, so that the
    // network never waits for her reader) may hold some of it.
    let out_kib = (p2pchat::term::output::MAX_OUT >> 10) as u64;
    assert_rss_bounded_plus(&mut alice, "a member that never reads", out_kib);
    chat_both_ways(&mut alice, &mut bob, "after the flood");
}

#[test]
fn a_thousand_connections_at_once() {
    raise_nofile(4096);
    let (mut alice, mut bob) = pair();
    let fds = fd_count(alice.pid());
    let conns: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(("127.0.0.1", alice.port())).unwrap())
        .collect();
    chat_both_ways(&mut alice, &mut bob, "beside a thousand sockets");
    let max = fd_count(alice.pid());
    eprintln!("alice has {max} descriptors with 1000 connections pending");
    assert!(
        max <= p2pchat::event::MAX_CONNS + 32,
        "alice holds {max} descriptors: no bound on connections"
    );
    assert_rss_bounded(&mut alice, "a thousand connections");
    drop(conns);
    wait_until(util::DEADLINE, "the thousand connections closed", || {
        fd_count(alice.pid()) <= fds
    });
    // And she still lets people in.
    let mut carol = Peer::join("carol", alice.port(), 3);
    alice.expect_line("* carol joined");
    chat_both_ways(&mut alice, &mut carol, "after a thousand sockets");
    chat_both_ways(&mut alice, &mut bob, "after a thousand sockets");
}

#[test]
fn out_of_descriptors_does_not_spin() {
    raise_nofile(4096);
    let (mut alice, mut bob) = pair();
    // Alice may hold 40 descriptors; 100 connections leave her at EMFILE.
    set_nofile(alice.pid(), 40);
    let conns: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(("127.0.0.1", alice.port())).unwrap())
        .collect();
    chat_both_ways(&mut alice, &mut bob, "at EMFILE");
    let t0 = cpu_ticks(alice.pid());
    let window = Instant::now();
    thread::sleep(Duration::from_secs(1)); // a measuring window
    let used = cpu_ticks(alice.pid()) - t0;
    eprintln!(
        "alice used {used} ticks of CPU in {:?} at EMFILE",
        window.elapsed()
    );
    assert!(
        used <= 20,
        "alice spins at EMFILE: {used} ticks in a second"
    );
    drop(conns);
    set_nofile(alice.pid(), 1024);
    let mut carol = Peer::join("carol", alice.port(), 3);
    alice.expect_line("* carol joined");
    chat_both_ways(&mut alice, &mut carol, "after EMFILE");
}

#[test]
fn thousands_of_fake_members_bounded_work() {
    let m = mallory();
    let (mut alice, mut bob) = pair();
    let mut r = Raw::connect(alice.port());
    r.hello(&m, "mallory", true);
    let fds = fd_count(alice.pid());
    send_fake_members(&mut r, 4096);
    let t0 = cpu_ticks(alice.pid());
    let start = Instant::now();
    let mut max_fds = 0;
    // Three seconds of alice dialling fake members, sampled.
    while start.elapsed() < Duration::from_secs(3) {
        max_fds = max_fds.max(fd_count(alice.pid()));
        thread::sleep(Duration::from_millis(10));
    }
    let used = cpu_ticks(alice.pid()) - t0;
    eprintln!(
        "fake members: alice at most {max_fds} descriptors (from {fds}), {used} CPU ticks in 3 s"
    );
    assert!(max_fds <= fds + 32, "alice opened {max_fds} descriptors");
    assert!(
        used <= 60,
        "alice used {used} ticks of CPU in 3 s on fake members"
    );
    chat_both_ways(&mut alice, &mut bob, "after fake members");
    assert_rss_bounded(&mut alice, "fake members");
}

#[test]
fn fake_members_do_not_lock_out_newcomers() {
    let m = mallory();
    let (mut alice, mut bob) = pair();
    let mut r = Raw::connect(alice.port());
    r.hello(&m, "mallory", true);
    send_fake_members(&mut r, 4096);
    // A frame after the list has been read: the list is in.
    r.send(&chat(&m, 1, "list sent"));
    alice.expect_line("mallory: list sent");
    let mut carol = Peer::join("carol", alice.port(), 3);
    alice.expect_line("* carol joined");
    chat_both_ways(&mut carol, &mut bob, "newcomer after fake members");
}

/// Sends a member list of `n` invented members: each with a key of its
/// own and the id it makes (a list entry whose id is not bound to its key
/// is dropped unread, which would test nothing), at ports where nothing
/// listens.
fn send_fake_members(r: &mut Raw, n: u32) {
    let mut i = 0u32;
    while i < n {
        let entries: Vec<Entry> = (0..wire::MEMBERS_PER_FRAME)
            .map(|_| {
                i += 1;
                let fake = who(0xfa6e_0000_0000 + u64::from(i));
                Entry {
                    id: fake.id(),
                    ident: ident(&fake),
                    name: format!("fake{i}"),
                    ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    // Ports where nothing listens.
                    port: 1 + (i % 1000) as u16,
                    seq: 0,
                }
            })
            .collect();
        r.send(&Msg::Members {
            last: i >= n,
            entries,
        });
    }
}

// ---------------------------------------------------------------------------
// Lies: forged origins, sequence numbers, identities.

/// A forged chat line in bob's name, from a link that is not bob's while
/// alice hears bob directly: refused, and bob's own next line gets
/// through. Mallory can sign it only with her own key; alice refuses it
/// before she looks at the signature (bob's new events come on bob's link
/// alone), so mallory's link stays. Unsigned, it is refused alike. Where
/// alice hears a member only through relays, the signature refuses it:
/// see `forgeries_through_a_relay_drop_the_relay`.
#[test]
fn forged_chat_from_bob_does_not_swallow_his_own() {
    let m = mallory();
    let (mut alice, mut bob) = pair();
    let mut r = Raw::connect(alice.port());
    let (_, members) = r.hello(&m, "mallory", true);
    let b = entry(&members, "bob").clone();
    r.send(&forged(
        &m,
        b.id,
        b.seq + 1,
        frames::lobby("forged by mallory"),
    ));
    r.send(&frames::unsigned(
        b.id,
        b.seq + 1,
        frames::lobby("forged unsigned"),
    ));
    // Let alice read it: a frame of mallory's own after it.
    r.send(&chat(&m, 1, "after the forged chat"));
    alice.expect_line("mallory: after the forged chat");
    bob.send("bob's own words");
    alice.expect_line("bob: bob's own words");
    alice.assert_no_out("a forged chat shown", &|l| {
        l.contains("forged by mallory") || l.contains("forged unsigned")
    });
    chat_both_ways(&mut alice, &mut bob, "after a forged chat");
}

/// A forged LEAVE in bob's name must not cut bob off (refused as the
/// forged chat is, above).
#[test]
fn forged_leave_from_bob_does_not_cut_him_off() {
    let m = mallory();
    let (mut alice, mut bob) = pair();
    let mut r = Raw::connect(alice.port());
    let (_, members) = r.hello(&m, "mallory", true);
    let b = entry(&members, "bob").clone();
    r.send(&forged(&m, b.id, b.seq + 1, Body::Leave));
    r.send(&frames::unsigned(b.id, b.seq + 1, Body::Leave));
    // Let alice read it: a frame of mallory's own after it.
    r.send(&chat(&m, 1, "after the forged leave"));
    alice.expect_line("mallory: after the forged leave");
    alice.assert_no_out("bob shown leaving", &|l| l.starts_with("* bob left"));
    chat_both_ways(&mut alice, &mut bob, "after a forged leave");
}

/// Carl's JOIN, relayed: he gives no address, so alice never links to
/// him and hears him only through relays.
fn join_unlinked(carl: &Identity, name: &str) -> Msg {
    signed(
        carl,
        1,
        Body::Join {
            name: name.into(),
            ip: None,
            port: 1,
            ident: ident(carl),
        },
    )
}

/// Where alice hears a member only through relays (carl, who gives no
/// address), nothing but his signature tells his events from a relay's
/// forgeries (issue 11: before signatures, a forged line was shown as his
/// and his own line of that number swallowed; a forged LEAVE removed him
/// for good). Now a forged line and a forged LEAVE, each from another
/// relay signing with its own key, are never shown nor passed on to bob,
/// the link that brought each is dropped, and carl's own line of that
/// number, relayed honestly by trent, is shown by alice and bob.
#[test]
fn forgeries_through_a_relay_drop_the_relay() {
    let (mut alice, mut bob) = pair();
    let carl = who(0xca71);
    let mut trent = Raw::connect(alice.port());
    trent.hello(&who(0x7e47), "trent", true);
    trent.send(&join_unlinked(&carl, "carl"));
    trent.send(&chat(&carl, 2, "carl's first words"));
    for p in [&mut alice, &mut bob] {
        p.expect_line("carl: carl's first words");
    }
    let forgeries = [
        ("a forged line", frames::lobby("forged by mallory")),
        ("a forged LEAVE", Body::Leave),
    ];
    for (k, (what, body)) in forgeries.into_iter().enumerate() {
        let m = who(0x6d00 + k as u64);
        let mut r = Raw::connect(alice.port());
        r.hello(&m, &format!("mallory{k}"), true);
        r.send(&forged(&m, carl.id(), 3, body));
        r.expect_closed(util::DEADLINE, &format!("the relay of {what}"));
    }
    trent.send(&chat(&carl, 3, "carl's own words"));
    for p in [&mut alice, &mut bob] {
        p.expect_line("carl: carl's own words");
        p.assert_no_out("a forgery shown", &|l| {
            l.contains("forged by mallory") || l.starts_with("* carl left")
        });
    }
    chat_both_ways(&mut alice, &mut bob, "after forgeries through relays");
}

/// Sequence numbers at the top, from an invented member (its own key, its
/// JOIN signed), bob (forged) and mallory herself: nothing far ahead is
/// delivered, and mallory's own order goes on.
#[test]
fn sequence_numbers_jump_to_u64_max() {
    let m = mallory();
    let (mut alice, mut bob) = pair();
    let mut r = Raw::connect(alice.port());
    let (_, members) = r.hello(&m, "mallory", true);
    let b = entry(&members, "bob").clone();
    let fake = who(0xfa6e_0001);
    let at = |seq: u64| frames::lobby(&format!("seq {seq:x}"));
    r.send(&signed(&fake, u64::MAX, at(u64::MAX)));
    r.send(&signed(&fake, u64::MAX - 1, at(u64::MAX - 1)));
    r.send(&join_unlinked(&fake, "fake"));
    r.send(&signed(&fake, u64::MAX, at(u64::MAX)));
    r.send(&forged(&m, b.id, u64::MAX, at(u64::MAX)));
    r.send(&signed(&m, u64::MAX, at(u64::MAX)));
    r.send(&chat(&m, 1, "done"));
    alice.expect_line("mallory: done");
    alice.assert_no_out("an event far ahead delivered", &|l| {
        l.contains("seq ffffffff")
    });
    chat_both_ways(&mut alice, &mut bob, "after u64::MAX");
    // Mallory's next ones still count from where she was.
    r.send(&chat(&m, 2, "still in order"));
    alice.expect_line("mallory: still in order");
}

/// A HELLO with alice's own id (and her key) is refused as a connection
/// to herself. Nobody but alice can prove that id; it is refused as
/// herself before its proof is looked at.
#[test]
fn hello_with_alices_own_id_is_refused() {
    let m = mallory();
    let (mut alice, mut bob) = pair();
    let (h, _) = Raw::connect(alice.port()).hello(&m, "mallory", true);
    let mut r = Raw::connect(alice.port());
    let mirror = Hello {
        id: h.id,
        ident: h.ident,
        ..frames::hello(&m, "mirror")
    };
    r.send(&Msg::Hello(frames::prove(&m, mirror)));
    let got = r.expect_closed(util::DEADLINE, "HELLO with alice's id");
    match got.as_slice() {
        [Msg::Refuse { code, text }] => {
            assert_eq!(*code, Refusal::Myself);
            assert_eq!(text, "connected to itself");
        }
        other => panic!("expected a REFUSE, got {other:?}"),
    }
    chat_both_ways(&mut alice, &mut bob, "after a mirror");
}

/// Someone says HELLO with bob's node id: bob stays bob. An id is bound
/// to its key, so the HELLO is refused outright, as unproved: with bob's
/// key (signed with mallory's), or with mallory's own key (which does not
/// make bob's id).
#[test]
fn hello_with_bobs_id_does_not_take_his_place() {
    let m = mallory();
    let (mut alice, mut bob) = pair();
    let (_, members) = Raw::connect(alice.port()).hello(&m, "mallory", true);
    let b = entry(&members, "bob").clone();
    for (what, key) in [("bob's key", b.ident), ("mallory's key", ident(&m))] {
        let mut r = Raw::connect(alice.port());
        let impostor = Hello {
            id: b.id,
            ident: key,
            joining: false,
            ..frames::hello(&m, "impostor")
        };
        r.send(&Msg::Hello(frames::prove(&m, impostor)));
        let got = r.expect_closed(util::DEADLINE, &format!("bob's id with {what}"));
        assert!(
            matches!(
                got.as_slice(),
                [Msg::Refuse {
                    code: Refusal::BadHello,
                    ..
                }]
            ),
            "bob's id with {what}: {got:?}"
        );
    }
    chat_both_ways(&mut alice, &mut bob, "after an impostor");
    alice.assert_no_out("bob renamed", &|l| l.starts_with("impostor:"));
}

/// A HELLO that takes alice's own name (with a smaller id than hers) must
/// not make her leave the network. Ids are no longer chosen but made by a
/// key: the namesake is the smallest of many keys, and proves its HELLO.
#[test]
fn hello_with_alices_name_does_not_evict_her() {
    let m = mallory();
    let (mut alice, mut bob) = pair();
    let (h, _) = Raw::connect(alice.port()).hello(&m, "mallory", true);
    let namesake = (0..1024u64)
        .map(|n| who(0xa11c_e000 + n))
        .min_by_key(|i| i.id())
        .unwrap();
    eprintln!(
        "alice is {}, her namesake {} (smaller: {})",
        h.id,
        namesake.id(),
        namesake.id() < h.id
    );
    let mut r = Raw::connect(alice.port());
    r.send(&Msg::Hello(Hello {
        joining: false,
        ..frames::hello(&namesake, "alice")
    }));
    // Her HELLO, then the refusal: the name is hers.
    let got = r.expect_closed(util::DEADLINE, "HELLO under alice's name");
    assert!(
        matches!(
            got.last(),
            Some(Msg::Refuse {
                code: Refusal::NameTaken,
                ..
            })
        ),
        "{got:?}"
    );
    assert!(alice.is_running(), "alice exited");
    chat_both_ways(&mut alice, &mut bob, "after a namesake");
    alice.assert_no_out("alice left", &|l| l.contains("taken"));
}

// ---------------------------------------------------------------------------
// Memory under amplification.

/// Events held back for a gap that never fills, from many invented
/// origins: alice's memory stays bounded.
#[test]
fn held_back_events_do_not_grow_memory() {
    let m = mallory();
    let (mut alice, mut bob) = pair();
    let mut r = Raw::connect(alice.port());
    r.hello(&m, "mallory", true);
    let text = "h".repeat(60_000);
    // 600 frames of 60 kB (36 MB), none deliverable: seq 1 never comes.
    // Each signed by its origin (75 keys), as an honest relay passes on.
    let origins: Vec<Identity> = (0..75).map(|n| who(0x4e1d_0000 + n)).collect();
    for i in 0..600u64 {
        let origin = &origins[(i / 8) as usize];
        r.send(&chat(origin, 2 + i % 8, &text));
    }
    r.send(&chat(&m, 1, "held"));
    alice.expect_line("mallory: held");
    assert_rss_bounded(&mut alice, "held-back events");
    chat_both_ways(&mut alice, &mut bob, "after held-back events");
}

/// FETCH asks for cached events again: a few bytes in, many out. Alice's
/// answers, and her memory, stay bounded even for a reader that asks
/// hundreds of times at once.
#[test]
fn fetch_amplification_is_bounded() {
    let m = mallory();
    let (mut alice, mut bob) = pair();
    let mut r = Raw::connect_small_rcvbuf(alice.port());
    r.hello(&m, "mallory", true);
    // Fill alice's event cache with mallory's own lines, as big as lines
    // may be (a longer one is not kept at all).
    let text = "c".repeat(wire::MAX_TEXT);
    for seq in 1..=16 {
        r.send(&chat(&m, seq, &text));
    }
    r.send(&chat(&m, 17, "cached"));
    alice.expect_line("mallory: cached");
    // 200 FETCHes of all 16 in one write: each answered with at most
    // 256 KiB, at most 8 MiB a second.
    let mut burst = Vec::new();
    for _ in 0..200 {
        wire::encode(
            &Msg::Fetch {
                origin: m.id(),
                from: 1,
                to: 16,
            },
            &mut burst,
        )
        .unwrap();
    }
    r.bytes(&burst);
    // Alice answers a bounded share (4 MiB at once, 8 MiB a second), not
    // 200 × 64 KiB: her queue for this link never grows past it.
    let t0 = Instant::now();
    let mut got = 0;
    while let Got::Msg(m) = r.recv(Duration::from_secs(1)) {
        got += wire::frame(&m).unwrap().len();
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("200 FETCHes at once: {got} bytes back in {secs:.1} s");
    assert!(got > 0, "no answer at all");
    assert!(
        (got as f64) <= (4 << 20) as f64 + secs * (8 << 20) as f64,
        "{got} bytes of answers in {secs:.1} s"
    );
    assert_rss_bounded(&mut alice, "FETCH amplification");
    chat_both_ways(&mut alice, &mut bob, "after FETCH amplification");
}

/// JOIN events with giant names: a newcomer must still be able to join
/// through alice (her member list must fit in frames).
#[test]
fn forged_joins_with_giant_names_do_not_block_joins() {
    let m = mallory();
    let (mut alice, mut bob) = pair();
    let mut r = Raw::connect(alice.port());
    r.hello(&m, "mallory", true);
    // Signed by their own keys: a name too long is refused for itself.
    for giant in [who(0x6a01), who(0x6a02)] {
        r.send(&signed(
            &giant,
            1,
            Body::Join {
                name: "g".repeat(40_000),
                ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                port: 1,
                ident: ident(&giant),
            },
        ));
    }
    r.send(&chat(&m, 1, "giants sent"));
    alice.expect_line("mallory: giants sent");
    let mut carol = Peer::join("carol", alice.port(), 3);
    alice.expect_line("* carol joined");
    chat_both_ways(&mut carol, &mut bob, "after giant names");
}

/// A hostile peer that bob dials refuses with escape sequences in the
/// text: bob prints them escaped, never raw to the terminal.
#[test]
fn refusal_text_from_a_hostile_peer_is_escaped() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut r = Raw::accepted(s);
        let _ = r.recv(util::DEADLINE);
        r.send(&Msg::Refuse {
            code: Refusal::Version,
            text: "\x1b[2J\x1b]0;pwned\x07 speaks version 9".into(),
        });
    });
    let mut bob = Peer::launch("bob", &[], Some(port), std::process::Stdio::piped());
    bob.expect_exit(1);
    server.join().unwrap();
    let err = bob.err_lines();
    assert!(
        err.iter()
            .all(|l| !l.contains('\x1b') && !l.contains('\x07')),
        "raw control characters from the network on stderr: {err:?}"
    );
}

// ---------------------------------------------------------------------------
// Resource limits.

/// Raises this process's soft RLIMIT_NOFILE (children inherit it).
fn raise_nofile(want: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        if r.rlim_cur < want {
            r.rlim_cur = want.min(r.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
        }
    }
}

/// Sets another process's soft RLIMIT_NOFILE.
fn set_nofile(pid: i32, n: u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit(2) on our own child, with local structs.
    unsafe {
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old),
            0
        );
        let new = libc::rlimit {
            rlim_cur: n.min(old.rlim_max),
            rlim_max: old.rlim_max,
        };
        assert_eq!(
            libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()),
            0
        );
    }
}
