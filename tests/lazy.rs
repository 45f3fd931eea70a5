//! Lazy push between real processes on 127.0.0.1: each receiver reads one
//! full copy of a line where flooding sends it many (counted by the peers
//! themselves, SIGUSR1), the tree heals when a relay is killed in the
//! middle of a stream, and flooding and lazy peers mix.

mod util;

use std::process::Stdio;
use util::Peer;

/// Starts `names.len()` peers, each with `opts(i)`, the i-th joining
/// through `via(i)`; waits until each is in and every earlier peer has
/// shown it joining.
fn network(
    names: &[&str],
    opts: impl Fn(usize) -> Vec<&'static str>,
    via: impl Fn(usize) -> usize,
) -> Vec<Peer> {
    let mut peers: Vec<Peer> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let o = opts(i);
        if i == 0 {
            peers.push(Peer::launch(name, &o, None, Stdio::piped()));
            continue;
        }
        let port = peers[via(i)].port();
        let mut p = Peer::launch(name, &o, Some(port), Stdio::piped());
        p.expect_joined(port, i + 1);
        for earlier in peers.iter_mut() {
            earlier.expect_line(&format!("* {name} joined"));
        }
        peers.push(p);
    }
    peers
}

/// Waits until every peer has a direct link to at least `links` others
/// (`:who`): the mesh is made, and no link still to come will carry a
/// burst before it has carried a warm-up line.
fn settled(peers: &mut [Peer], links: usize) {
    let n = peers.len();
    let deadline = std::time::Instant::now() + util::DEADLINE;
    for p in peers.iter_mut() {
        loop {
            p.send(":who");
            let rows = p.expect_block(&format!("* {n} members:"), n);
            if rows.iter().filter(|r| r.ends_with(" direct")).count() >= links {
                break;
            }
            if std::time::Instant::now() >= deadline {
                p.fail(&format!("fewer than {links} direct links: {rows:?}"));
            }
        }
    }
}

/// Waits for `from: {tag}0` to `from: {tag}{n-1}` on `p`, then checks
/// that each came exactly once and in order.
fn expect_all(p: &mut Peer, from: &str, tag: &str, n: usize) {
    p.expect_line(&format!("{from}: {tag}{}", n - 1));
    let prefix = format!("{from}: {tag}");
    let got: Vec<usize> = p
        .out_lines()
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix)?.parse().ok())
        .collect();
    let want: Vec<usize> = (0..n).collect();
    if got != want {
        let dup = got.len() - {
            let mut g = got.clone();
            g.sort();
            g.dedup();
            g.len()
        };
        p.fail(&format!(
            "{tag}: {} lines from {from}, {dup} duplicated, in order: {}",
            got.len(),
            got.windows(2).all(|w| w[0] < w[1])
        ));
    }
}

/// A peer's own count of its traffic, from its SIGUSR1 line `traffic:
/// in: event F B, ihave F B, graft F B, prune F B, other F B; out: ...`:
/// frames of `kind` received (`out`: sent).
fn traffic(p: &mut Peer) -> impl Fn(bool, &str) -> u64 {
    p.signal(libc::SIGUSR1);
    let line = p.expect_err_contains("traffic: in: ");
    let (_, rest) = line.split_once("traffic: in: ").expect("traffic line");
    let (inbound, outbound) = rest.split_once("; out: ").expect("traffic line");
    let (inbound, outbound) = (inbound.to_owned(), outbound.to_owned());
    move |out: bool, kind: &str| {
        let part = if out { &outbound } else { &inbound };
        let f = part
            .split(", ")
            .find_map(|f| f.strip_prefix(&format!("{kind} ")))
            .unwrap_or_else(|| panic!("no {kind} in {part:?}"));
        f.split(' ').next().unwrap().parse().expect("a count")
    }
}

/// What a peer received: (full events, IHAVE, GRAFT and PRUNE frames).
fn received(p: &mut Peer) -> (u64, u64) {
    let t = traffic(p);
    let lazy = ["ihave", "graft", "prune"].map(|k| t(false, k));
    (t(false, "event"), lazy.iter().sum())
}

/// Full copies of alice's lines each receiver read, and announcement
/// frames, in a network of 8 joined through random members, with
/// `opts`.
fn copies(opts: &'static [&'static str], n: usize) -> (f64, f64, Vec<Peer>) {
    let names = [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    ];
    // Fixed join points: a mesh like any other, the same for both runs.
    let via = [0, 0, 1, 0, 2, 3, 1, 5];
    let mut peers = network(&names, |_| opts.to_vec(), |i| via[i]);
    settled(&mut peers, 6);
    // The first lines go on every link made since alice's JOIN: the tree
    // settles on them (a peer whose copy came first everywhere is sent no
    // copy back to prune, until the next line).
    for w in ["first", "second"] {
        peers[0].send(w);
        for p in &mut peers[1..] {
            p.expect_line(&format!("alice: {w}"));
        }
    }
    let before: Vec<(u64, u64)> = peers[1..].iter_mut().map(received).collect();
    for k in 0..n {
        peers[0].send(&format!("l{k}"));
    }
    for p in &mut peers[1..] {
        expect_all(p, "alice", "l", n);
    }
    let after: Vec<(u64, u64)> = peers[1..].iter_mut().map(received).collect();
    let receivers = (names.len() - 1) as f64;
    let ev: u64 = after.iter().zip(&before).map(|(a, b)| a.0 - b.0).sum();
    let lazy: u64 = after.iter().zip(&before).map(|(a, b)| a.1 - b.1).sum();
    (
        ev as f64 / receivers / n as f64,
        lazy as f64 / receivers,
        peers,
    )
}

/// With lazy push each receiver reads one full copy of each line (at
/// most 1.3, counted by the peers themselves), announcements aside;
/// flooding, in the same mesh, sends it several.
#[test]
fn each_receiver_reads_one_copy_where_flooding_sends_several() {
    let n = 300;
    let (lazy, announced, _peers) = copies(&[], n);
    let (flood, flood_announced, _flooders) = copies(&["--flood"], n);
    eprintln!(
        "{n} lines, 7 receivers: {lazy:.2} full copies per receiver per line \
         ({announced:.0} IHAVE/GRAFT/PRUNE frames per receiver); \
         flooding {flood:.2} ({flood_announced:.0})"
    );
    assert!(lazy <= 1.3, "lazy push: {lazy:.2} copies per line");
    assert!(flood >= 2.0, "flooding: {flood:.2} copies per line");
    assert_eq!(flood_announced, 0.0, "flooding announced");
}

/// SIGUSR1's second line says whom each sender's lines come from: in a
/// full mesh of three, alice's and bob's own links (the origin's link is
/// the parent as soon as its events come on it).
#[test]
fn sigusr1_tells_whom_each_senders_lines_come_from() {
    let mut peers = network(&["alice", "bob", "carol"], |_| Vec::new(), |_| 0);
    settled(&mut peers, 2);
    for (i, from) in [(0, "alice"), (1, "bob")] {
        peers[i].send("hi");
        for (j, p) in peers.iter_mut().enumerate() {
            if j != i {
                p.expect_line(&format!("{from}: hi"));
            }
        }
    }
    peers[2].signal(libc::SIGUSR1);
    let line = peers[2].expect_err_contains("tree: ");
    for want in ["alice<alice", "bob<bob"] {
        assert!(line.contains(want), "no {want} in {line:?}");
    }
}

/// A sparse mesh (2 to 3 links each, joined in a chain) streams alice's
/// lines; the peer that relays the most of them (by its own count) is
/// killed in the middle of the stream. Its children in the tree graft
/// another parent at once; every survivor shows every line once and in
/// order, with no gap reported, and sees the relay lost.
#[test]
fn a_relay_killed_mid_stream_loses_and_repeats_nothing() {
    let names = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"];
    let mut peers = network(&names, |_| vec!["-d", "2", "-D", "3"], |i| i - 1);
    settled(&mut peers, 2);
    peers[0].send("first");
    for p in &mut peers[1..] {
        p.expect_line("alice: first");
    }
    let before: Vec<u64> = peers[1..]
        .iter_mut()
        .map(|p| traffic(p)(true, "event"))
        .collect();
    peers[0].send("second");
    for p in &mut peers[1..] {
        p.expect_line("alice: second");
    }
    let relayed: Vec<u64> = peers[1..]
        .iter_mut()
        .zip(&before)
        .map(|(p, b)| traffic(p)(true, "event") - b)
        .collect();
    let busiest = 1 + (0..relayed.len()).max_by_key(|&i| relayed[i]).unwrap();
    assert!(relayed[busiest - 1] > 0, "nobody relays: {relayed:?}");
    let grafts: Vec<u64> = peers
        .iter_mut()
        .map(|p| traffic(p)(true, "graft"))
        .collect();
    let n = 1_000;
    for k in 0..n {
        peers[0].send(&format!("s{k}"));
    }
    let last = if busiest == peers.len() - 1 {
        1
    } else {
        peers.len() - 1
    };
    peers[last].expect_line(&format!("alice: s{}", n / 3));
    let mut victim = peers.remove(busiest);
    let gone = format!("* {} left (connection lost)", victim.name);
    // SIGKILL, then reaped: a crash, mid-stream.
    victim.signal(libc::SIGKILL);
    let _ = victim.wait_exit(util::DEADLINE);
    for k in n..2 * n {
        peers[0].send(&format!("s{k}"));
    }
    for p in &mut peers[1..] {
        expect_all(p, "alice", "s", 2 * n);
        p.expect_line(&gone);
    }
    peers[1].send("after");
    let said = format!("{}: after", peers[1].name);
    peers[0].expect_line(&said);
    let grafted: u64 = peers
        .iter_mut()
        .zip(
            grafts
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != busiest)
                .map(|(_, g)| g),
        )
        .map(|(p, g)| traffic(p)(true, "graft") - g)
        .sum();
    assert!(grafted > 0, "no survivor grafted a new parent");
    for p in &mut peers {
        let gaps: Vec<String> = p
            .err_lines()
            .into_iter()
            .filter(|l| l.contains("missed"))
            .collect();
        if !gaps.is_empty() {
            p.fail(&format!("gaps reported: {gaps:?}"));
        }
    }
}

/// Peers that flood and peers that push lazily, in one network, each
/// talking: everyone shows everything once and in order.
#[test]
fn flooding_and_lazy_peers_mix() {
    let names = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let mut peers = network(
        &names,
        |i| if i % 2 == 1 { vec!["--flood"] } else { vec![] },
        |i| (i - 1) / 2,
    );
    let n = 200;
    for k in 0..n {
        peers[0].send(&format!("a{k}"));
        peers[1].send(&format!("b{k}"));
    }
    for (i, p) in peers.iter_mut().enumerate() {
        if i != 0 {
            expect_all(p, "alice", "a", n);
        }
        if i != 1 {
            expect_all(p, "bob", "b", n);
        }
    }
}

/// HOPS (kind 23) came after version 3 was made: a peer built before it
/// skips it, as any kind it does not know after HELLO (see hostile's
/// unknown_kind_before_and_after_hello). Here such a peer, a raw client
/// that never says a hop count, links to alice: she tells it hers (one
/// hop from bob, none for its own lines), and lines go both ways as
/// before. Hop counts that make no sense (0, 255, unknown senders, a
/// full frame of them) close nothing either.
#[test]
fn hop_counts_go_to_peers_that_never_say_theirs() {
    use p2pchat::node::NodeId;
    use p2pchat::proto::wire::{self, Msg};
    use util::frames::{chat, join, who};
    use util::raw::Raw;
    let old = who(0x6f6c_6465_6e00);
    let (mut alice, mut bob) = util::pair();
    util::chat_both_ways(&mut alice, &mut bob, "before");
    let mut r = Raw::connect(alice.port());
    let (_, members) = r.hello(&old, "olden", true);
    let bob_id = members.iter().find(|e| e.name == "bob").expect("bob").id;
    let body = r
        .recv_kind(wire::HOPS, util::DEADLINE)
        .expect("alice says no hop counts");
    let Ok(Msg::Hops { hops }) = wire::decode(&body) else {
        panic!("not a HOPS: {body:?}");
    };
    assert_eq!(hops, vec![(bob_id, 1)]);
    r.send(&join(&old, "olden", 1));
    bob.expect_line("* olden joined");
    r.send(&chat(&old, 2, "hello from an old build"));
    alice.expect_line("olden: hello from an old build");
    bob.expect_line("olden: hello from an old build");
    bob.send("to everyone");
    loop {
        let body = r
            .recv_kind(wire::EVENT, util::DEADLINE)
            .expect("bob's line never reached the old peer");
        if let Ok(Msg::Event(e)) = wire::decode(&body)
            && e.origin == bob_id
            && matches!(&e.body, wire::Body::Chat { text, .. } if text == "to everyone")
        {
            break;
        }
    }
    let mut nonsense = vec![(bob_id, 0), (bob_id, wire::HOPS_UNKNOWN), (NodeId(7), 1)];
    nonsense.resize(wire::HOPS_PER_FRAME, (NodeId(9), 2));
    r.send(&Msg::Hops { hops: nonsense });
    r.send(&chat(&old, 3, "after nonsense"));
    alice.expect_line("olden: after nonsense");
    bob.expect_line("olden: after nonsense");
    util::chat_both_ways(&mut alice, &mut bob, "after");
}
