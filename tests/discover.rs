//! LAN discovery (`--discover`): real peers in private network namespaces
//! on one bridge (tests/util/netns.rs), finding each other by UDP
//! multicast with no host or port typed.
//!
//! Multicast never leaves the namespaces these tests make: the hosts'
//! only interfaces are their veth ports on the test bridge (and loopback).
//! These need root and `ip`; where namespaces cannot be made each test
//! says so and passes without running (`P2PCHAT_NETNS=require` makes that
//! a failure, as in CI). Figures are printed with `-- --nocapture`.

mod util;

use p2pchat::proto::discovery::{self, Announcement};
use p2pchat::proto::{NodeId, Rng};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use util::netns::Net;
use util::procfs::{cpu_ticks, fd_count, status_kib};
use util::{DEADLINE, Peer, Stream, chat_both_ways};

/// How long peers that all start at once may take to be one network.
const SETTLE: Duration = Duration::from_secs(20);
/// How often a wait over `:who` asks again.
const POLL: Duration = Duration::from_millis(200);

/// The member names `:who` lists on `p`, whatever their number.
fn who(p: &mut Peer) -> BTreeSet<String> {
    p.send(":who");
    let head = p.expect_on(
        Stream::Out,
        ":who header",
        &|l| l.starts_with("* ") && (l.ends_with(" members:") || l.ends_with(" member:")),
        DEADLINE,
    );
    let n: usize = head[2..].split(' ').next().unwrap().parse().unwrap();
    (0..n)
        .map(|_| {
            let l = p.expect_on(
                Stream::Out,
                ":who row",
                &|l| l.starts_with("*   "),
                DEADLINE,
            );
            l[4..].split(' ').next().unwrap_or("").to_string()
        })
        .collect()
}

/// The names `:peers` lists on `p` (members discovery found).
fn found(p: &mut Peer) -> BTreeSet<String> {
    p.send(":peers");
    let head = p.expect_on(
        Stream::Out,
        ":peers header",
        &|l| l.contains("found by discovery"),
        DEADLINE,
    );
    if head == "* no members found by discovery" {
        return BTreeSet::new();
    }
    let n: usize = head[2..].split(' ').next().unwrap().parse().unwrap();
    (0..n)
        .map(|_| {
            let l = p.expect_on(
                Stream::Out,
                ":peers row",
                &|l| l.starts_with("*   "),
                DEADLINE,
            );
            l[4..].split(' ').next().unwrap_or("").to_string()
        })
        .collect()
}

/// Waits until every peer's `:who` lists exactly `names`; returns how long
/// it took.
fn wait_one_network(peers: &mut [Peer], names: &[&str], within: Duration) -> Duration {
    let start = Instant::now();
    let want: BTreeSet<String> = names.iter().map(|s| s.to_string()).collect();
    for p in peers.iter_mut() {
        loop {
            let got = who(p);
            if got == want {
                break;
            }
            if start.elapsed() > within {
                let name = p.name.clone();
                p.fail(&format!(
                    "{name}: :who lists {got:?} after {within:?}, expected {want:?}"
                ));
            }
            thread::sleep(POLL);
        }
    }
    start.elapsed()
}

/// Each peer says a line and every other one prints it.
fn everyone_hears_everyone(peers: &mut [Peer], tag: &str) {
    for i in 0..peers.len() {
        let from = peers[i].name.clone();
        let line = format!("{tag} from {from}");
        peers[i].send(&line);
        for (j, p) in peers.iter_mut().enumerate() {
            if j != i {
                p.expect_line(&format!("{from}: {line}"));
            }
        }
    }
}

/// Peer `name` with `--discover` (and `opts`) on host `h`.
fn discovering(net: &Net, h: usize, name: &str, opts: &[&str]) -> Peer {
    let mut all = vec!["--discover"];
    all.extend_from_slice(opts);
    net.peer(h, name, &all, None)
}

/// Two peers with `--discover` and nothing else find each other, one
/// joins through the other, and they chat; `:peers` on the joiner names
/// the one it found.
#[test]
fn two_peers_find_each_other_and_chat() {
    let Some(mut net) = Net::new() else { return };
    let (ha, hb) = (net.host(), net.host());
    let t0 = Instant::now();
    let mut a = discovering(&net, ha, "alice", &[]);
    let mut b = discovering(&net, hb, "bob", &[]);
    // One of them joins through the other, whichever has the smaller id.
    let joined = |l: &str| l.starts_with("* joined through ") || l.ends_with(" joined");
    let la = a.expect_on(Stream::Out, "a join", &joined, DEADLINE);
    let lb = b.expect_on(Stream::Out, "a join", &joined, DEADLINE);
    eprintln!(
        "discover: two peers: one network {} ms after the first started ({la:?}, {lb:?})",
        t0.elapsed().as_millis()
    );
    let (joiner, welcomer) = if la.starts_with("* joined through") {
        assert_eq!(lb, "* alice joined");
        (&mut a, "bob")
    } else {
        assert_eq!(la, "* bob joined");
        assert!(lb.starts_with("* joined through 10.77.0."), "{lb}");
        assert!(lb.ends_with(" (2 members)"), "{lb}");
        (&mut b, "alice")
    };
    assert_eq!(found(joiner), BTreeSet::from([welcomer.to_string()]));
    // The welcomer lists the joiner too: it heard it announce, and it
    // became a member.
    let (welcomer, joiner) = if welcomer == "alice" {
        (&mut a, "bob")
    } else {
        (&mut b, "alice")
    };
    let until = Instant::now() + DEADLINE;
    while found(welcomer) != BTreeSet::from([joiner.to_string()]) {
        assert!(
            Instant::now() < until,
            "the welcomer's :peers lacks {joiner}"
        );
        thread::sleep(POLL);
    }
    chat_both_ways(&mut a, &mut b, "discovered");
}

/// Five peers started at once with `--discover` only end up one network
/// of five, in which everyone hears everyone; between them, `:peers`
/// names every one of them.
#[test]
fn five_peers_form_one_network() {
    let Some(mut net) = Net::new() else { return };
    let names = ["alice", "bob", "carol", "dave", "erin"];
    let hosts: Vec<usize> = names.iter().map(|_| net.host()).collect();
    let t0 = Instant::now();
    let mut peers: Vec<Peer> = names
        .iter()
        .zip(&hosts)
        .map(|(n, &h)| discovering(&net, h, n, &[]))
        .collect();
    let took = wait_one_network(&mut peers, &names, SETTLE);
    eprintln!(
        "discover: five peers: one network {} ms after the first started (seen by :who within {} ms)",
        t0.elapsed().as_millis(),
        took.as_millis()
    );
    everyone_hears_everyone(&mut peers, "hello");
    // Each peer was found by someone, or found someone.
    let mut pairs = BTreeSet::new();
    for p in peers.iter_mut() {
        let me = p.name.clone();
        for other in found(p) {
            pairs.insert(me.clone());
            pairs.insert(other);
        }
    }
    assert_eq!(pairs.len(), 5, "{pairs:?}");
    for p in peers.iter_mut() {
        p.assert_no_out("nobody left", &|l| l.contains(" left"));
    }
}

/// With a network secret, announcements carry a keyed hash: alice and bob,
/// who share one, find each other and chat; carol, with another secret on
/// the same LAN and network name, is not dialled and dials nobody (a dial
/// would be refused with "the network secret does not match", on both
/// sides), and stays alone.
#[test]
fn a_secret_finds_only_its_own() {
    let Some(mut net) = Net::new() else { return };
    let hosts: Vec<usize> = (0..3).map(|_| net.host()).collect();
    let ours = [("P2PCHAT_SECRET", "correct horse battery staple")];
    let theirs = [("P2PCHAT_SECRET", "another secret")];
    let t0 = Instant::now();
    let mut carol = net.peer_env(hosts[2], "carol", &["--discover"], None, &theirs);
    let mut pair = vec![
        net.peer_env(hosts[0], "alice", &["--discover"], None, &ours),
        net.peer_env(hosts[1], "bob", &["--discover"], None, &ours),
    ];
    wait_one_network(&mut pair, &["alice", "bob"], SETTLE);
    if let [a, b] = pair.as_mut_slice() {
        chat_both_ways(a, b, "secretly");
    }
    // Everyone announces at start, 0.3 and 1.5 s later, and answers
    // newcomers; an alone peer waits 2 s for a larger id. Let all that go
    // by (nothing is printed when nothing happens), then look.
    let quiet = t0 + Duration::from_secs(4);
    thread::sleep(quiet.saturating_duration_since(Instant::now()));
    wait_one_network(&mut pair, &["alice", "bob"], Duration::ZERO);
    let mut all = vec![carol];
    wait_one_network(&mut all, &["carol"], Duration::ZERO);
    carol = all.pop().unwrap();
    assert_eq!(found(&mut carol), BTreeSet::new());
    pair.push(carol);
    for p in pair.iter_mut() {
        let name = p.name.clone();
        let dialled = |l: &str| l.contains("refused") || l.contains("secret does not match");
        if let Some(l) = p.err_lines().into_iter().find(|l| dialled(l)) {
            p.fail(&format!(
                "{name} dialled or was dialled across secrets: {l:?}"
            ));
        }
        if name == "carol" {
            p.assert_no_out("carol joins nobody", &|l| l.contains("joined"));
        } else {
            p.assert_no_out("nobody meets carol", &|l| l.contains("carol"));
        }
    }
}

/// Peers of another network (`--network`) on the same LAN stay apart:
/// two networks of two form side by side, and neither hears of the other.
#[test]
fn another_network_stays_apart() {
    let Some(mut net) = Net::new() else { return };
    let hosts: Vec<usize> = (0..4).map(|_| net.host()).collect();
    let mut lobby = vec![
        discovering(&net, hosts[0], "alice", &[]),
        discovering(&net, hosts[1], "bob", &[]),
    ];
    let mut other = vec![
        discovering(&net, hosts[2], "carol", &["--network", "office"]),
        discovering(&net, hosts[3], "dave", &["--network", "office"]),
    ];
    wait_one_network(&mut lobby, &["alice", "bob"], SETTLE);
    wait_one_network(&mut other, &["carol", "dave"], SETTLE);
    if let [c, d] = other.as_mut_slice() {
        chat_both_ways(c, d, "office");
    }
    // Both networks announce at their start and 1.5 s later: let those
    // go by, then look again. (Nothing is printed when nothing happens.)
    thread::sleep(Duration::from_secs(3));
    wait_one_network(&mut lobby, &["alice", "bob"], Duration::ZERO);
    wait_one_network(&mut other, &["carol", "dave"], Duration::ZERO);
    for p in lobby.iter_mut() {
        p.assert_no_out("no office member", &|l| {
            l.contains("carol") || l.contains("dave")
        });
    }
    for p in other.iter_mut() {
        p.assert_no_out("no lobby member", &|l| {
            l.contains("alice") || l.contains("bob")
        });
    }
}

/// Host and port with `--discover` bridge both ways of joining. alice
/// runs without discovery; dave and erin find each other on the LAN.
/// carol joins alice by host and port with `--discover`: the LAN finds
/// her, and the two networks become one: alice and dave chat. frank,
/// with `--discover` only, then joins that network and chats with alice.
#[test]
fn host_and_port_bridge_both_ways() {
    let Some(mut net) = Net::new() else { return };
    let hosts: Vec<usize> = (0..5).map(|_| net.host()).collect();
    let alice = net.peer(hosts[0], "alice", &[], None);
    let via = SocketAddr::new(net.addr(hosts[0]), alice.port());
    let mut lan = vec![
        discovering(&net, hosts[1], "dave", &[]),
        discovering(&net, hosts[2], "erin", &[]),
    ];
    wait_one_network(&mut lan, &["dave", "erin"], SETTLE);
    let t0 = Instant::now();
    let carol = net.peer(hosts[3], "carol", &["--discover"], Some(via));
    let mut peers = vec![alice, carol];
    peers.append(&mut lan);
    let all = ["alice", "carol", "dave", "erin"];
    wait_one_network(&mut peers, &all, SETTLE);
    eprintln!(
        "discover: bridge: a network of 2 by host and port and one of 2 by discovery \
         became one {} ms after carol started",
        t0.elapsed().as_millis()
    );
    let (a, rest) = peers.split_at_mut(1);
    chat_both_ways(&mut a[0], &mut rest[1], "bridged");
    let frank = discovering(&net, hosts[4], "frank", &[]);
    peers.push(frank);
    wait_one_network(
        &mut peers,
        &["alice", "carol", "dave", "erin", "frank"],
        SETTLE,
    );
    let (a, rest) = peers.split_at_mut(1);
    chat_both_ways(&mut a[0], &mut rest[3], "found");
}

/// Discovery over IPv6 alone: two peers listening only on their IPv6
/// addresses announce on the link-local group, from those addresses, and
/// find each other.
#[test]
fn ipv6_only() {
    let Some(mut net) = Net::new() else { return };
    let (ha, hb) = (net.host(), net.host());
    let (a6, b6) = (net.addr6(ha).to_string(), net.addr6(hb).to_string());
    let mut a = discovering(&net, ha, "alice", &["-b", &a6]);
    let mut b = discovering(&net, hb, "bob", &["-b", &b6]);
    let mut peers = vec![a, b];
    wait_one_network(&mut peers, &["alice", "bob"], SETTLE);
    b = peers.pop().unwrap();
    a = peers.pop().unwrap();
    chat_both_ways(&mut a, &mut b, "over IPv6");
    a.send(":who");
    let rows = a.expect_block("* 2 members:", 2);
    assert!(
        rows.iter().any(|r| r.contains(&format!("[{b6}]:"))),
        "{rows:?}"
    );
}

// ---------------------------------------------------------------------------
// A spoofing sender.

/// Runs `f` on a thread that has entered network namespace `ns`: the
/// sockets it makes are that namespace's.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let c = std::ffi::CString::new(path.clone()).unwrap();
        // SAFETY: plain system calls on a descriptor we own.
        unsafe {
            let fd = libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            assert!(fd >= 0, "open {path}: {}", std::io::Error::last_os_error());
            let rc = libc::setns(fd, libc::CLONE_NEWNET);
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            libc::close(fd);
        }
        f()
    })
}

/// One forged datagram: mostly announcements of the lobby network from
/// made-up peers (ids, ports, "in a network" or not), the rest garbage of
/// every kind (other networks, bad versions, no port, short, long).
fn forgery(rng: &mut Rng, lobby: [u8; 16]) -> Vec<u8> {
    let office = discovery::Network::new("office", None).tag(&[], Ipv4Addr::UNSPECIFIED.into());
    let ann = |rng: &mut Rng, tag| {
        Announcement {
            id: NodeId(rng.next_u64()),
            port: (rng.next_u64() as u16) | 1,
            member: rng.below(2) == 0,
            tag,
        }
        .encode()
        .to_vec()
    };
    match rng.below(10) {
        0..=6 => ann(rng, lobby),
        7 => ann(rng, office),
        8 => {
            let mut b = ann(rng, lobby);
            match rng.below(3) {
                0 => b[4] = 0,
                1 => b[6..8].copy_from_slice(&[0, 0]),
                _ => b.truncate(rng.below(32) as usize),
            }
            b
        }
        _ => (0..rng.below(600)).map(|_| rng.next_u64() as u8).collect(),
    }
}

/// An IPv4 + UDP packet from `src` to the discovery group and port.
fn packet(src: Ipv4Addr, sport: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(28 + payload.len());
    let total = (28 + payload.len()) as u16;
    // Version 4, 5 words; length; id 0 and checksum 0 are filled in by
    // the kernel (raw(7)); time to live 1; UDP.
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 1, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&discovery::GROUP_V4.octets());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&discovery::PORT.to_be_bytes());
    p.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]); // no UDP checksum (IPv4 allows it)
    p.extend_from_slice(payload);
    p
}

/// Sends forged announcements at `rate` a second from source addresses
/// spoofed across 10.77.0.0/24 (the real peers' among them), through a
/// raw socket, until `stop`; returns how many the kernel took.
fn spoof(own: Ipv4Addr, rate: u64, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    // SAFETY: a raw socket we own, and plain system calls on it.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    let ifaddr = libc::in_addr {
        s_addr: u32::from(own).to_be(),
    };
    // SAFETY: setsockopt with a value of the size it is given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            (&ifaddr as *const libc::in_addr).cast(),
            std::mem::size_of::<libc::in_addr>() as libc::socklen_t,
        );
    }
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(discovery::GROUP_V4).to_be(),
        },
        sin_zero: [0; 8],
    };
    // No secret: the tag is the network name's, in every announcement.
    let lobby = discovery::Network::new(discovery::DEFAULT_NETWORK, None)
        .tag(&[], Ipv4Addr::UNSPECIFIED.into());
    let mut rng = Rng::new(0x5eed);
    let start = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Paced: `rate` a second, in bursts of a hundredth of a second.
        let due = start.elapsed().as_micros() as u64 * rate / 1_000_000;
        while n < due {
            let src = Ipv4Addr::new(10, 77, 0, 1 + rng.below(254) as u8);
            let p = packet(src, rng.next_u64() as u16 | 1, &forgery(&mut rng, lobby));
            // SAFETY: sendto with a buffer and address of the sizes given.
            let r = unsafe {
                libc::sendto(
                    fd,
                    p.as_ptr().cast(),
                    p.len(),
                    0,
                    (&dst as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if r > 0 {
                sent.fetch_add(1, Ordering::Relaxed);
            }
            n += 1;
        }
        thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
}

/// A spoofing sender of 10,000 forged announcements a second, from
/// addresses across the LAN: the peers stay bounded (descriptors,
/// members, memory) and keep chatting; a newcomer started in the flood
/// finds them (the forgeries do not starve it out), and once the flood
/// stops another is found as before.
#[test]
fn flood_of_forged_announcements() {
    const RATE: u64 = 10_000;
    const FLOOD: Duration = Duration::from_secs(8);
    /// Descriptors a peer may open beyond its count before the flood:
    /// the dials discovery makes (2 a second) to made-up addresses, each
    /// failing within seconds.
    const FD_SLACK: usize = 24;
    const RSS_GROWTH_KIB: u64 = 4 << 10;
    let Some(mut net) = Net::new() else { return };
    let hosts: Vec<usize> = (0..5).map(|_| net.host()).collect();
    let spoofer = net.host();
    let names = ["alice", "bob", "carol"];
    let mut peers: Vec<Peer> = names
        .iter()
        .zip(&hosts)
        .map(|(n, &h)| discovering(&net, h, n, &[]))
        .collect();
    wait_one_network(&mut peers, &names, SETTLE);
    let before: Vec<(usize, u64, u64)> = peers
        .iter()
        .map(|p| {
            (
                fd_count(p.pid()),
                status_kib(p.pid(), "VmRSS"),
                cpu_ticks(p.pid()),
            )
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let own = match net.addr(spoofer) {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => unreachable!(),
    };
    let sender = {
        let (stop, sent) = (stop.clone(), sent.clone());
        in_netns(net.ns(spoofer), move || spoof(own, RATE, stop, sent))
    };
    let t0 = Instant::now();
    let mut most_fds = vec![0; peers.len()];
    let mut round = 0;
    let mut dave = None;
    while t0.elapsed() < FLOOD {
        round += 1;
        if round == 4 {
            // A newcomer in the flood.
            let mut p = discovering(&net, hosts[3], "dave", &[]);
            let started = Instant::now();
            p.expect_contains("* joined through 10.77.0.");
            eprintln!(
                "discover: flood: dave, started in it, joined after {} ms",
                started.elapsed().as_millis()
            );
            dave = Some(p);
        }
        let (a, rest) = peers.split_at_mut(1);
        let other = &mut rest[round % 2];
        chat_both_ways(&mut a[0], other, &format!("flood {round}"));
        for (i, p) in peers.iter().enumerate() {
            most_fds[i] = most_fds[i].max(fd_count(p.pid()));
        }
        thread::sleep(Duration::from_millis(250));
    }
    // One network of four, nobody invented.
    let mut dave = dave.expect("dave started in the flood");
    let four = ["alice", "bob", "carol", "dave"];
    wait_one_network(&mut peers, &four, DEADLINE);
    let (a, _) = peers.split_at_mut(1);
    chat_both_ways(&mut a[0], &mut dave, "in the flood");
    assert!(t0.elapsed() < FLOOD + DEADLINE * 2);
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    let sent = sent.load(Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "discover: flood: {sent} forged datagrams in {secs:.1} s ({:.0}/s)",
        sent as f64 / secs
    );
    assert!(
        sent as f64 >= RATE as f64 * FLOOD.as_secs_f64() * 0.8,
        "the spoofer sent only {sent}"
    );
    for (i, p) in peers.iter_mut().enumerate() {
        let (fds, rss, cpu) = before[i];
        let rss_now = status_kib(p.pid(), "VmRSS");
        let cpu_now = cpu_ticks(p.pid());
        eprintln!(
            "discover: flood: {}: descriptors {fds} before, at most {} during; VmRSS {rss} KiB \
             before, {rss_now} KiB after; CPU {} ticks in the flood",
            p.name,
            most_fds[i],
            cpu_now - cpu
        );
        if most_fds[i] > fds + FD_SLACK {
            p.fail(&format!(
                "{} descriptors during the flood, {fds} before",
                most_fds[i]
            ));
        }
        if rss_now > rss + RSS_GROWTH_KIB {
            p.fail(&format!("VmRSS grew from {rss} to {rss_now} KiB"));
        }
        p.assert_no_out("no member invented", &|l| {
            l.starts_with("* #")
                || (l.ends_with(" joined") && !four.iter().any(|n| l == format!("* {n} joined")))
        });
    }
    // The flood over, a newcomer is found as before.
    peers.push(dave);
    let mut erin = discovering(&net, hosts[4], "erin", &[]);
    erin.expect_contains("* joined through 10.77.0.");
    peers.push(erin);
    wait_one_network(
        &mut peers,
        &["alice", "bob", "carol", "dave", "erin"],
        SETTLE,
    );
    let (a, rest) = peers.split_at_mut(1);
    chat_both_ways(&mut a[0], &mut rest[3], "after");
}
