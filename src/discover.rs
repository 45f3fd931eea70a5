//! LAN discovery's sockets: UDP multicast, one more source in the event
//! loop's poll.
//!
//! [`crate::proto::discovery`] decides what to announce, when, and which
//! announcements to act on; this file makes the sockets, reads datagrams
//! into it, sends the announcements it asks for, and hands the peers it
//! finds to the node ([`Node::found`]).
//!
//! Sockets, per address family the TCP listener takes:
//!
//! - one to receive: bound to the group's port with `SO_REUSEADDR` and
//!   `SO_REUSEPORT` (every peer on a host gets every announcement), joined
//!   to the group on each interface used, non-blocking, registered with
//!   the poll; it takes only the groups it joined (`IP_MULTICAST_ALL`
//!   off) and its kernel buffer is [`RCVBUF`] bytes: what does not fit is
//!   dropped by the kernel, never queued by us;
//! - one to send per interface used, bound to the address others are to
//!   dial (the datagram's source is where they connect), time to live 1,
//!   loopback on (peers on the same host hear each other).
//!
//! The interfaces used: the one that has the listen address, when it is a
//! specific one (`-b`); otherwise every interface that is up, takes
//! multicast and is not loopback, with an address of the family; loopback
//! when there is no other. They are looked at again before announcing, at
//! most every [`RESCAN`] ms, so an interface that comes up later (Wi-Fi)
//! is used from then on.

use crate::iface::{Iface, interfaces};
use crate::node::{Found, Millis, Node, NodeId};
use crate::proto::discovery::{self, Discovery, MAX_DATAGRAM, Out, Standing};
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// Datagrams read per socket and turn of the event loop, at most; the
/// rest wait for the next turn (in the kernel's buffer), so a flood cannot
/// starve the links, nor one family's socket the other's.
pub const DATAGRAMS_PER_TURN: usize = 64;
/// The kernel's receive buffer for discovery, in bytes.
pub const RCVBUF: usize = 64 << 10;
/// Interfaces are looked at again at most this often (before announcing).
pub const RESCAN: Millis = 5_000;
/// Interfaces used per family, at most.
const MAX_IFACES: usize = 16;

/// What `--discover` and its options ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The network announced and looked for.
    pub network: String,
    /// The groups, one per family at most; a family without one is not
    /// used.
    pub groups: Vec<IpAddr>,
    pub port: u16,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            network: discovery::DEFAULT_NETWORK.to_owned(),
            groups: vec![discovery::GROUP_V4.into(), discovery::GROUP_V6.into()],
            port: discovery::PORT,
        }
    }
}

/// One socket that sends announcements on one interface.
struct Sender {
    sock: std::net::UdpSocket,
    /// The address it sends from (bound), which a keyed tag covers.
    source: IpAddr,
    to: SocketAddr,
}

/// One address family's sockets.
struct Family {
    group: IpAddr,
    rx: UdpSocket,
    /// Interfaces (by index) the receiving socket has joined the group on.
    joined: BTreeSet<u32>,
    tx: Vec<Sender>,
}

/// Discovery's sockets and machine; see the module documentation.
pub struct Lan {
    machine: Discovery,
    families: Vec<Family>,
    /// The listen address, when it is a specific one.
    bind: Option<IpAddr>,
    port: u16,
    rescan_at: Millis,
    /// Datagrams were left unread last turn.
    more: bool,
    /// The machine is polled only when something may have changed: an
    /// announcement was noted (`touched`), a timer is due, or the node's
    /// standing is not what it was at the last poll.
    touched: bool,
    standing: Option<Standing>,
    buf: Box<[u8]>,
}

impl Lan {
    /// Makes the sockets and registers them with `tokens`, for node `id`
    /// listening on TCP `port` at `bind` (None: every address), over the
    /// families `(v4, v6)` the listener takes. `secret` keys the network
    /// tag. Fails only when no family can be used at all.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        settings: &Settings,
        secret: Option<&[u8]>,
        id: NodeId,
        port: u16,
        bind: Option<IpAddr>,
        (v4, v6): (bool, bool),
        registry: &Registry,
        tokens: [Token; 2],
        seed: u64,
        now: Millis,
    ) -> Result<Lan, String> {
        let bind = bind.filter(|ip| !ip.is_unspecified());
        let mut families = Vec::new();
        let mut errors = Vec::new();
        for (&group, &token) in settings.groups.iter().zip(tokens.iter()) {
            let usable = match (group, bind) {
                (IpAddr::V4(_), None) => v4,
                (IpAddr::V6(_), None) => v6,
                (g, Some(b)) => g.is_ipv4() == b.is_ipv4(),
            };
            if !usable {
                continue;
            }
            match receiver(group, settings.port) {
                Ok(mut rx) => {
                    if let Err(e) = registry.register(&mut rx, token, Interest::READABLE) {
                        errors.push(format!("poll: {e}"));
                        continue;
                    }
                    families.push(Family {
                        group,
                        rx,
                        joined: BTreeSet::new(),
                        tx: Vec::new(),
                    });
                }
                Err(e) => errors.push(format!("{}: {e}", SocketAddr::new(group, settings.port))),
            }
        }
        if families.is_empty() {
            return Err(match errors.is_empty() {
                true => "discovery: no group of an address family this peer listens on".into(),
                false => format!("discovery: {}", errors.join("; ")),
            });
        }
        let net = discovery::Network::new(&settings.network, secret);
        let mut lan = Lan {
            machine: Discovery::new(id, port, net, seed, now),
            families,
            bind,
            port: settings.port,
            rescan_at: now,
            more: false,
            touched: false,
            standing: None,
            buf: vec![0; MAX_DATAGRAM + 1].into_boxed_slice(),
        };
        lan.rescan(now);
        Ok(lan)
    }

    /// Reads what the receiving sockets have (at most
    /// [`DATAGRAMS_PER_TURN`] from each) into the machine.
    pub fn readable(&mut self, core: &Node, now: Millis) {
        self.more = false;
        for f in &self.families {
            let mut budget = DATAGRAMS_PER_TURN;
            loop {
                if budget == 0 {
                    self.more = true;
                    break;
                }
                match f.rx.recv_from(&mut self.buf) {
                    Ok((n, from)) => {
                        budget -= 1;
                        let known = |id| core.knows(id);
                        let heard = self.machine.heard(&self.buf[..n], from, known, now);
                        if matches!(heard, discovery::Heard::Noted | discovery::Heard::Known) {
                            self.touched = true;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // An error queued on the socket (ICMP for an earlier
                    // send, and the like) is taken and counted: reading
                    // goes on until the socket would block.
                    Err(_) => budget -= 1,
                }
            }
        }
    }

    /// Reads what was left last turn, then does what the machine asks:
    /// sends announcements, hands found peers to `core`. Cheap when there
    /// is nothing to do: call it every turn of the loop.
    pub fn turn(&mut self, core: &mut Node, now: Millis) {
        if self.more {
            self.readable(core, now);
        }
        let standing = core.standing();
        let due = self.machine.deadline(now).is_some_and(|t| now >= t);
        if !due && self.standing == Some(standing) && !self.touched {
            return;
        }
        loop {
            let standing = core.standing();
            let Some(out) = self.machine.poll(standing, |id| core.knows(id), now) else {
                break;
            };
            match out {
                Out::Announce(member) => {
                    if now >= self.rescan_at {
                        self.rescan(now);
                    }
                    for f in &self.families {
                        for s in &f.tx {
                            // With a secret, the tag covers the source
                            // address: one announcement per sender. A send
                            // that fails (an interface gone) is retried at
                            // the next announcement.
                            let bytes = self.machine.announcement(member, s.source);
                            let _ = s.sock.send_to(&bytes, s.to);
                        }
                    }
                }
                Out::Found(addr, id) => core.found(addr, id, Found::Discovery, now),
                Out::Met(id) => core.met(id, Found::Discovery),
            }
        }
        self.touched = false;
        self.standing = Some(core.standing());
    }

    /// When [`Lan::turn`] next has something to do.
    pub fn deadline(&self, now: Millis) -> Option<Millis> {
        if self.more || self.touched || self.standing.is_none() {
            return Some(now);
        }
        self.machine.deadline(now)
    }

    /// Looks at the interfaces again: joins the group and makes a sender
    /// on each one to use.
    fn rescan(&mut self, now: Millis) {
        self.rescan_at = now + RESCAN;
        let ifaces = interfaces();
        for f in &mut self.families {
            let chosen = choose(&ifaces, f.group, self.bind);
            for &(index, _) in &chosen {
                if !f.joined.contains(&index) {
                    let r = match f.group {
                        IpAddr::V4(g) => {
                            let n = InterfaceIndexOrAddress::Index(index);
                            socket2::SockRef::from(&f.rx).join_multicast_v4_n(&g, &n)
                        }
                        IpAddr::V6(g) => socket2::SockRef::from(&f.rx).join_multicast_v6(&g, index),
                    };
                    if r.is_ok() || r.is_err_and(|e| e.raw_os_error() == Some(libc::EADDRINUSE)) {
                        f.joined.insert(index);
                    }
                }
            }
            f.tx = chosen
                .into_iter()
                .filter_map(|(index, source)| sender(f.group, self.port, index, source).ok())
                .collect();
        }
    }
}

/// The receiving socket of `group`'s family, bound to `port`.
fn receiver(group: IpAddr, port: u16) -> io::Result<UdpSocket> {
    let s = Socket::new(
        Domain::for_address(SocketAddr::new(group, port)),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
    let _ = s.set_recv_buffer_size(RCVBUF);
    match group {
        IpAddr::V4(g) => {
            let _ = s.set_multicast_all_v4(false);
            // Bound to the group: unicast to the port is not ours.
            if s.bind(&SocketAddr::new(g.into(), port).into()).is_err() {
                s.bind(&SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port).into())?;
            }
        }
        IpAddr::V6(_) => {
            s.set_only_v6(true)?;
            let _ = s.set_multicast_all_v6(false);
            s.bind(&SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port).into())?;
        }
    }
    Ok(UdpSocket::from_std(s.into()))
}

/// A socket that sends to `group` on interface `index`, from `source`.
fn sender(group: IpAddr, port: u16, index: u32, source: IpAddr) -> io::Result<Sender> {
    let (from, to) = match (group, source) {
        (IpAddr::V4(g), IpAddr::V4(src)) => (
            SocketAddr::new(src.into(), 0),
            SocketAddr::new(g.into(), port),
        ),
        (IpAddr::V6(g), IpAddr::V6(src)) => {
            let scope = if link_local6(&src) { index } else { 0 };
            (
                SocketAddrV6::new(src, 0, 0, scope).into(),
                SocketAddrV6::new(g, port, 0, index).into(),
            )
        }
        _ => return Err(io::ErrorKind::InvalidInput.into()),
    };
    let s = Socket::new(Domain::for_address(to), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
    match (group, source) {
        (IpAddr::V4(_), IpAddr::V4(src)) => {
            s.set_multicast_if_v4(&src)?;
            s.set_multicast_ttl_v4(1)?;
            s.set_multicast_loop_v4(true)?;
        }
        _ => {
            s.set_only_v6(true)?;
            s.set_multicast_if_v6(index)?;
            s.set_multicast_hops_v6(1)?;
            s.set_multicast_loop_v6(true)?;
        }
    }
    s.bind(&from.into())?;
    Ok(Sender {
        sock: s.into(),
        source,
        to,
    })
}

fn link_local6(a: &Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80
}

/// The interfaces to use for `group` and the source address on each:
/// the one with `bind` if given, else every multicast interface with an
/// address of the family but loopback, else loopback.
fn choose(ifaces: &[Iface], group: IpAddr, bind: Option<IpAddr>) -> Vec<(u32, IpAddr)> {
    let family = |a: &&IpAddr| a.is_ipv4() == group.is_ipv4();
    if let Some(b) = bind {
        return ifaces
            .iter()
            .filter(|i| i.addrs.contains(&b))
            .map(|i| (i.index, b))
            .take(1)
            .collect();
    }
    // IPv6: a routable address (ULA or global) is a better source than a
    // link-local one, which only means something on this link.
    let source = |i: &Iface| {
        let mut a: Vec<&IpAddr> = i.addrs.iter().filter(family).collect();
        a.sort_by_key(|a| matches!(a, IpAddr::V6(v6) if link_local6(v6)));
        a.first().map(|&&a| (i.index, a))
    };
    let lan: Vec<(u32, IpAddr)> = ifaces
        .iter()
        .filter(|i| i.multicast && !i.loopback)
        .filter_map(source)
        .take(MAX_IFACES)
        .collect();
    if !lan.is_empty() {
        return lan;
    }
    ifaces
        .iter()
        .filter(|i| i.loopback)
        .filter_map(source)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(index: u32, loopback: bool, multicast: bool, addrs: &[&str]) -> Iface {
        Iface {
            index,
            loopback,
            multicast,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn interfaces_and_sources() {
        let g4: IpAddr = discovery::GROUP_V4.into();
        let g6: IpAddr = discovery::GROUP_V6.into();
        let all = [
            iface(1, true, false, &["127.0.0.1", "::1"]),
            iface(2, false, true, &["fe80::2", "10.0.0.2", "fd00::2"]),
            iface(3, false, false, &["10.9.0.3"]),
            iface(4, false, true, &["fe80::4"]),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(choose(&all, g4, None), [(2, ip("10.0.0.2"))]);
        // A routable IPv6 source before a link-local one.
        assert_eq!(
            choose(&all, g6, None),
            [(2, ip("fd00::2")), (4, ip("fe80::4"))]
        );
        // A specific listen address: its interface only.
        assert_eq!(
            choose(&all, g4, Some(ip("10.9.0.3"))),
            [(3, ip("10.9.0.3"))]
        );
        assert_eq!(
            choose(&all, g4, Some(ip("127.0.0.1"))),
            [(1, ip("127.0.0.1"))]
        );
        assert!(choose(&all, g4, Some(ip("10.1.1.1"))).is_empty());
        // Loopback only when there is nothing else.
        let lo = [iface(1, true, false, &["127.0.0.1"])];
        assert_eq!(choose(&lo, g4, None), [(1, ip("127.0.0.1"))]);
    }

    #[test]
    fn this_machine_has_interfaces() {
        let all = interfaces();
        assert!(all.iter().any(|i| i.loopback), "{all:?}");
    }
}
