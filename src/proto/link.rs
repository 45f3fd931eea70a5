//! Links: each connection's life, from dial or accept to close.
//!
//! A link is dialled (or accepted), both sides say HELLO, and it is then up:
//! it carries the network's traffic to one peer. This machine owns the
//! stages, the heartbeats that keep an idle link alive, the timeouts that
//! find a dead one, and the bound on accepted links that have not said
//! HELLO yet. What a HELLO means for the network (may this peer join, under
//! that name?) is the node's decision; the checks that need nothing but
//! the HELLO itself are made here. An encrypted handshake will be one more
//! [`Stage`].
//!
//! A link the node closes is not forgotten at once: it is `Closing` until
//! the event loop reports the socket gone, and events already on their
//! way on it are still taken.

use super::wire::{self, Frame, Hello, Msg, Refusal};
use super::{Io, LinkId, Millis, NodeId, PROBE_EVERY, Sink};
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};

/// Accepted connections that have not said HELLO yet, at most.
pub const MAX_PENDING: usize = 64;
/// A closing link the event loop never reports gone is forgotten after
/// this (it reports it within its linger time, 1.5 s).
const CLOSING_MAX: Millis = 10_000;
/// A probe of a lost member not connected within this is given up: the
/// next probe, a second later, sends a fresh SYN the moment the network is
/// back, rather than wait out TCP's back-off on this one. On a network
/// whose dials take longer, a probe waits three times the slowest dial
/// seen lately (up to the handshake timeout), in whole probe intervals:
/// it is given up when a probe is due anyway, in the same wake-up.
pub const PROBE_PATIENCE: Millis = PROBE_EVERY;

/// How a link is dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dial {
    /// From any port (and accepted links).
    Plain,
    /// A probe of a lost member: given up unless connected within
    /// [`PROBE_PATIENCE`] (or longer on a slow network).
    Probe,
    /// Hole punching: from our listening port, to a peer that dials us
    /// from its own at the same moment (TCP simultaneous open), so that
    /// each NAT lets the other's packets in as answers to its own.
    Punch,
}

/// Timers of a link, in milliseconds.
#[derive(Debug, Clone)]
pub struct Config {
    /// An idle link gets a PING this often.
    pub heartbeat: Millis,
    /// A link silent this long is dead.
    pub link_timeout: Millis,
    /// A link must complete HELLO within this.
    pub handshake_timeout: Millis,
}

/// Where a link is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Our dial is under way: TCP is not up yet.
    Dialing,
    /// TCP is up; the other side's HELLO has not come (ours went out
    /// already if we dialled).
    Hello,
    /// HELLO done: the link carries the network's traffic to `peer`.
    Up { peer: NodeId },
    /// Closed by us: nothing more is sent on it, but events that were on
    /// their way from `peer` (if it got that far) are still taken.
    Closing { peer: Option<NodeId> },
}

/// One link.
#[derive(Debug)]
pub struct Link {
    /// The remote address of the socket.
    pub addr: SocketAddr,
    pub outbound: bool,
    /// The member we meant to reach, for a link we dialled to one.
    pub target: Option<NodeId>,
    pub stage: Stage,
    /// How we dialled it.
    pub dial: Dial,
    pub opened: Millis,
    last_rx: Millis,
    last_tx: Millis,
    /// A HELLO held until we are in the network ourselves (see
    /// [`Links::hold`]).
    held: Option<Hello>,
    /// Our dial was refused: a host answered, and nobody listens there.
    refused: bool,
}

impl Link {
    /// The peer on the other side, once HELLO is done (and until we close
    /// the link).
    pub fn peer(&self) -> Option<NodeId> {
        match self.stage {
            Stage::Up { peer } => Some(peer),
            _ => None,
        }
    }

    pub fn closing(&self) -> bool {
        matches!(self.stage, Stage::Closing { .. })
    }

    /// Whether our dial was refused (see [`Links::refused`]).
    pub fn refused(&self) -> bool {
        self.refused
    }
}

/// Why a HELLO is not taken, whatever the network thinks of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadHello {
    /// Another protocol version; the text names both.
    Version(String),
    /// Our own id: we reached ourselves.
    Myself,
    /// A name no honest peer could have.
    Name,
}

/// Every link of one peer, and what it says in HELLO.
#[derive(Debug)]
pub struct Links {
    cfg: Config,
    links: BTreeMap<LinkId, Link>,
    next: u64,
    /// The slowest dial lately: how long the latest took to connect, or
    /// less each time since (by 1/8), whichever is longer.
    slowest: Millis,
    id: NodeId,
    name: String,
    port: u16,
}

impl Links {
    pub fn new(cfg: Config, id: NodeId, name: &str, port: u16) -> Links {
        Links {
            cfg,
            links: BTreeMap::new(),
            next: 1,
            slowest: 0,
            id,
            name: name.to_owned(),
            port,
        }
    }

    fn insert(
        &mut self,
        addr: SocketAddr,
        outbound: bool,
        target: Option<NodeId>,
        dial: Dial,
        now: Millis,
    ) -> LinkId {
        let id = LinkId(self.next);
        self.next += 1;
        let stage = if outbound {
            Stage::Dialing
        } else {
            Stage::Hello
        };
        self.links.insert(
            id,
            Link {
                addr,
                outbound,
                target,
                stage,
                dial,
                opened: now,
                last_rx: now,
                last_tx: now,
                held: None,
                refused: false,
            },
        );
        id
    }

    /// Opens a new link to `addr` (to member `target`, if we know who is
    /// there): the event loop connects, then reports
    /// [`Links::connected`] or the link's loss.
    pub fn dial(
        &mut self,
        out: &mut impl Sink,
        addr: SocketAddr,
        target: Option<NodeId>,
        now: Millis,
    ) -> LinkId {
        self.dial_as(out, addr, target, Dial::Plain, now)
    }

    /// As [`Links::dial`], dialled as `dial` says.
    pub fn dial_as(
        &mut self,
        out: &mut impl Sink,
        addr: SocketAddr,
        target: Option<NodeId>,
        dial: Dial,
        now: Millis,
    ) -> LinkId {
        let id = self.insert(addr, true, target, dial, now);
        out.io(Io::Connect(id, addr));
        id
    }

    /// Our dial on `link` was refused (the event loop says so before it
    /// reports the link down): a host answered, and nobody listens there.
    pub fn refused(&mut self, link: LinkId) {
        if let Some(l) = self
            .links
            .get_mut(&link)
            .filter(|l| l.stage == Stage::Dialing)
        {
            l.refused = true;
        }
    }

    /// A connection was accepted from `addr`; returns its new link. With
    /// [`MAX_PENDING`] others still waiting for their HELLO, the oldest of
    /// them is closed: an honest peer says HELLO at once, so whoever has
    /// waited longest is the likeliest to be dead or hostile.
    pub fn accepted(&mut self, out: &mut impl Sink, addr: SocketAddr, now: Millis) -> LinkId {
        let mut pending = self
            .links
            .iter()
            .filter(|(_, l)| !l.outbound && l.stage == Stage::Hello)
            .map(|(&k, _)| k);
        if let Some(oldest) = pending.next()
            && pending.count() + 1 >= MAX_PENDING
        {
            // Nothing came on it worth waiting for.
            self.links.remove(&oldest);
            out.io(Io::Close(oldest));
        }
        self.insert(addr, false, None, Dial::Plain, now)
    }

    /// Our dial got through: say HELLO. Returns whether the link is ours
    /// (a dial we gave up on, closing already, is not brought back).
    pub fn connected(
        &mut self,
        out: &mut impl Sink,
        link: LinkId,
        joining: bool,
        now: Millis,
    ) -> bool {
        let Some(l) = self
            .links
            .get_mut(&link)
            .filter(|l| l.stage == Stage::Dialing)
        else {
            return false;
        };
        l.stage = Stage::Hello;
        let took = now.saturating_sub(l.opened);
        self.slowest = (self.slowest - self.slowest / 8).max(took);
        let hello = self.hello(joining, self.links[&link].addr.ip());
        self.send(out, link, hello, now);
        true
    }

    /// Our HELLO, telling the other side the IP we see it at.
    pub fn hello(&self, joining: bool, you: IpAddr) -> Frame {
        wire::small(&Msg::Hello(Hello {
            version: wire::VERSION,
            id: self.id,
            name: self.name.clone(),
            port: self.port,
            joining,
            you: Some(you),
        }))
    }

    /// The checks a HELLO must pass whoever we are.
    pub fn check_hello(&self, h: &Hello) -> Result<(), BadHello> {
        if h.version != wire::VERSION {
            return Err(BadHello::Version(format!(
                "speaks protocol version {}, this peer speaks {}",
                h.version,
                wire::VERSION
            )));
        }
        if h.id == self.id {
            return Err(BadHello::Myself);
        }
        if !wire::valid_name(&h.name) {
            return Err(BadHello::Name);
        }
        Ok(())
    }

    /// Holds the HELLO that came on `link` (accepted, not up) until
    /// [`Links::take_held`]: a joiner that reached us while we are still
    /// joining ourselves waits for our own join to complete rather than
    /// being refused. Bounded like every link waiting for its HELLO: by
    /// [`MAX_PENDING`] in count and by the handshake timeout in time
    /// (a held link is still not up).
    pub fn hold(&mut self, link: LinkId, hello: Hello) {
        if let Some(l) = self
            .links
            .get_mut(&link)
            .filter(|l| !l.outbound && l.stage == Stage::Hello)
        {
            l.held = Some(hello);
        }
    }

    /// The HELLOs held, oldest link first, to be taken now.
    pub fn take_held(&mut self) -> Vec<(LinkId, Hello)> {
        self.links
            .iter_mut()
            .filter(|(_, l)| !l.closing())
            .filter_map(|(&k, l)| Some((k, l.held.take()?)))
            .collect()
    }

    /// HELLO is done on `link`: it now carries traffic to `peer`.
    pub fn up(&mut self, link: LinkId, peer: NodeId) {
        if let Some(l) = self.links.get_mut(&link) {
            l.stage = Stage::Up { peer };
        }
    }

    /// Back to waiting for HELLO: the peer on `link` was not let in after
    /// all (the link is about to be refused).
    pub fn down_to_hello(&mut self, link: LinkId) {
        if let Some(l) = self.links.get_mut(&link) {
            l.stage = Stage::Hello;
        }
    }

    /// A frame arrived on `link`: notes the time; returns the link, if it
    /// is ours.
    pub fn received(&mut self, link: LinkId, now: Millis) -> Option<&Link> {
        let l = self.links.get_mut(&link)?;
        if !l.closing() {
            l.last_rx = now;
        }
        Some(l)
    }

    /// A frame went out on `link` (an idle link is one that sends nothing).
    pub fn sent(&mut self, link: LinkId, now: Millis) {
        if let Some(l) = self.links.get_mut(&link) {
            l.last_tx = now;
        }
    }

    /// Queues `frame` on `link`, if it is ours and open.
    pub fn send(&mut self, out: &mut impl Sink, link: LinkId, frame: Frame, now: Millis) {
        if let Some(l) = self.links.get_mut(&link).filter(|l| !l.closing()) {
            l.last_tx = now;
            out.io(Io::Send(link, frame));
        }
    }

    /// Says REFUSE on `link` and closes it.
    pub fn refuse(
        &mut self,
        out: &mut impl Sink,
        link: LinkId,
        code: Refusal,
        text: &str,
        now: Millis,
    ) {
        let f = wire::small(&Msg::Refuse {
            code,
            text: text.to_owned(),
        });
        self.send(out, link, f, now);
        self.close(out, link, now);
    }

    /// Has the event loop close `link` (after flushing what is queued on
    /// it); it is `Closing` until [`Links::remove`]. Returns how it stood.
    pub fn close(&mut self, out: &mut impl Sink, link: LinkId, now: Millis) -> Option<Stage> {
        let stage = self.closed(link, now)?;
        out.io(Io::Close(link));
        Some(stage)
    }

    /// `link` is closing (the event loop knows already); returns how it
    /// stood, unless it was closing already.
    pub fn closed(&mut self, link: LinkId, now: Millis) -> Option<Stage> {
        let l = self.links.get_mut(&link).filter(|l| !l.closing())?;
        let was = l.stage;
        l.stage = Stage::Closing { peer: l.peer() };
        // When it started closing, for `CLOSING_MAX`.
        l.last_rx = now;
        Some(was)
    }

    /// Forgets `link`, which is gone.
    pub fn remove(&mut self, link: LinkId) -> Option<Link> {
        self.links.remove(&link)
    }

    pub fn get(&self, link: LinkId) -> Option<&Link> {
        self.links.get(&link)
    }

    /// The peer on `link`, if HELLO is done.
    pub fn peer(&self, link: LinkId) -> Option<NodeId> {
        self.links.get(&link).and_then(Link::peer)
    }

    /// Whether we have a link up to `peer`.
    pub fn linked(&self, peer: NodeId) -> bool {
        self.links.values().any(|l| l.peer() == Some(peer))
    }

    /// Whether a link other than `link` is up to `peer`.
    pub fn linked_elsewhere(&self, peer: NodeId, link: LinkId) -> bool {
        self.links
            .iter()
            .any(|(&k, l)| k != link && l.peer() == Some(peer))
    }

    /// The links up to `peer`, with who dialled each.
    pub fn to(&self, peer: NodeId) -> Vec<(LinkId, bool)> {
        self.links
            .iter()
            .filter(|(_, l)| l.peer() == Some(peer))
            .map(|(&k, l)| (k, l.outbound))
            .collect()
    }

    /// Links with HELLO done.
    pub fn up_count(&self) -> usize {
        self.links.values().filter(|l| l.peer().is_some()).count()
    }

    /// Links with HELLO done, and their peers.
    pub fn up_links(&self) -> impl Iterator<Item = (LinkId, &Link)> + '_ {
        self.links
            .iter()
            .filter(|(_, l)| l.peer().is_some())
            .map(|(&k, l)| (k, l))
    }

    fn open(&self) -> impl Iterator<Item = &Link> + '_ {
        self.links.values().filter(|l| !l.closing())
    }

    /// Members we link to or are dialling.
    pub fn busy(&self) -> HashSet<NodeId> {
        self.open().filter_map(|l| l.peer().or(l.target)).collect()
    }

    /// Members we have a dial under way to.
    pub fn targets(&self) -> HashSet<NodeId> {
        self.open().filter_map(|l| l.target).collect()
    }

    /// Whether a punch to `peer` is under way (not up yet).
    pub fn punching(&self, peer: NodeId) -> bool {
        self.open()
            .any(|l| l.dial == Dial::Punch && l.target == Some(peer) && l.peer().is_none())
    }

    /// Dials not through HELLO yet.
    pub fn dialling(&self) -> usize {
        self.open()
            .filter(|l| l.outbound && l.peer().is_none())
            .count()
    }

    /// Links with the default timers, for tests of the machines that
    /// read them.
    #[cfg(test)]
    pub(crate) fn for_test(id: NodeId) -> Links {
        let cfg = Config {
            heartbeat: 20_000,
            link_timeout: 60_000,
            handshake_timeout: 5_000,
        };
        Links::new(cfg, id, "me", 4000)
    }

    /// Runs heartbeats; returns the links found dead, for the caller to
    /// drop.
    pub fn tick(&mut self, out: &mut impl Sink, now: Millis) -> Vec<LinkId> {
        self.links
            .retain(|_, l| !l.closing() || now < l.last_rx + CLOSING_MAX);
        let cfg = &self.cfg;
        let mut dead = Vec::new();
        let mut ping = Vec::new();
        let mut any_ping_due = false;
        for (&id, l) in &self.links {
            if l.closing() {
                continue;
            }
            if l.peer().is_none() {
                if now >= l.opened + patience(l, cfg, self.slowest) {
                    dead.push(id);
                }
            } else if now >= l.last_rx + cfg.link_timeout {
                dead.push(id);
            } else {
                any_ping_due |= now >= l.last_tx + cfg.heartbeat;
                // Ping every link half-way due at once: one wake-up, not many.
                if now >= l.last_tx + cfg.heartbeat / 2 {
                    ping.push(id);
                }
            }
        }
        if any_ping_due {
            let f = wire::small(&Msg::Ping);
            for id in ping {
                self.send(out, id, f.clone(), now);
            }
        }
        dead
    }

    /// When [`Links::tick`] next has work to do.
    pub fn deadline(&self) -> Option<Millis> {
        let cfg = &self.cfg;
        self.links
            .values()
            .flat_map(|l| {
                if l.closing() {
                    [Some(l.last_rx + CLOSING_MAX), None]
                } else if l.peer().is_none() {
                    [Some(l.opened + patience(l, cfg, self.slowest)), None]
                } else {
                    [
                        Some(l.last_rx + cfg.link_timeout),
                        Some(l.last_tx + cfg.heartbeat),
                    ]
                }
            })
            .flatten()
            .min()
    }
}

/// How long `l`, not up yet, may take to come up, on a network whose
/// slowest dial lately took `slowest`.
fn patience(l: &Link, cfg: &Config, slowest: Millis) -> Millis {
    if l.dial == Dial::Probe && l.stage == Stage::Dialing {
        let p = PROBE_PATIENCE.max(slowest.saturating_mul(3));
        p.div_ceil(PROBE_EVERY)
            .saturating_mul(PROBE_EVERY)
            .min(cfg.handshake_timeout)
    } else {
        cfg.handshake_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::wire::decode;

    const ME: NodeId = NodeId(1);

    fn links() -> Links {
        Links::for_test(ME)
    }

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    fn kinds(out: &[Io]) -> Vec<String> {
        out.iter()
            .map(|io| match io {
                Io::Send(l, f) => format!("send {} {:?}", l.0, decode(&f[4..]).unwrap()),
                Io::Connect(l, a) => format!("connect {} {a}", l.0),
                Io::Close(l) => format!("close {}", l.0),
            })
            .collect()
    }

    #[test]
    fn dial_then_hello_then_up() {
        let mut ls = links();
        let mut out = Vec::new();
        let l = ls.dial(&mut out, addr(9), Some(NodeId(7)), 0);
        assert_eq!(ls.get(l).unwrap().stage, Stage::Dialing);
        assert!(ls.connected(&mut out, l, true, 10));
        let k = kinds(&out);
        assert!(k[0].starts_with("connect 1"));
        assert!(k[1].contains("Hello") && k[1].contains("joining: true"));
        assert_eq!(ls.up_count(), 0);
        assert_eq!(ls.dialling(), 1);
        ls.up(l, NodeId(7));
        assert_eq!(ls.peer(l), Some(NodeId(7)));
        assert!(ls.linked(NodeId(7)));
        assert_eq!(ls.up_count(), 1);
        assert_eq!(ls.dialling(), 0);
    }

    #[test]
    fn silent_handshake_and_silent_link_die() {
        let mut ls = links();
        let mut out = Vec::new();
        let a = ls.accepted(&mut out, addr(9), 0);
        let b = ls.accepted(&mut out, addr(10), 0);
        ls.up(b, NodeId(8));
        assert_eq!(ls.deadline(), Some(5_000));
        assert_eq!(ls.tick(&mut out, 4_999), vec![]);
        assert_eq!(ls.tick(&mut out, 5_000), vec![a]);
        ls.remove(a);
        // Half-way to the heartbeat nothing is sent; at it, a PING.
        out.clear();
        assert_eq!(ls.tick(&mut out, 10_000), vec![]);
        assert!(out.is_empty());
        assert_eq!(ls.tick(&mut out, 20_000), vec![]);
        assert_eq!(kinds(&out), ["send 2 Ping"]);
        ls.received(b, 21_000);
        assert_eq!(ls.tick(&mut out, 80_999), vec![]);
        assert_eq!(ls.tick(&mut out, 81_000), vec![b]);
    }

    #[test]
    fn a_probe_not_connected_within_its_patience_is_given_up() {
        let mut ls = links();
        let mut out = Vec::new();
        let p = ls.dial_as(&mut out, addr(9), Some(NodeId(7)), Dial::Probe, 0);
        let q = ls.dial_as(&mut out, addr(9), Some(NodeId(7)), Dial::Probe, 0);
        let d = ls.dial(&mut out, addr(10), None, 0);
        assert_eq!(ls.deadline(), Some(PROBE_PATIENCE));
        // One connects in time: the handshake's own timeout holds then.
        ls.connected(&mut out, q, false, 100);
        // A dial given up (closing) is not brought back by a late answer.
        ls.close(&mut out, p, 200);
        assert!(!ls.connected(&mut out, p, false, 300));
        assert!(ls.get(p).unwrap().closing());
        let p = ls.dial_as(&mut out, addr(9), Some(NodeId(7)), Dial::Probe, 0);
        // Refusals are noted on dials under way only.
        ls.refused(p);
        assert!(ls.get(p).unwrap().refused());
        ls.refused(q);
        assert!(!ls.get(q).unwrap().refused());
        assert_eq!(ls.tick(&mut out, PROBE_PATIENCE), vec![p]);
        ls.remove(p);
        assert_eq!(ls.tick(&mut out, 5_000), vec![q, d]);
        // On a slow network (a dial took 1.2 s), probes wait longer.
        let mut ls = links();
        let slow = ls.dial(&mut out, addr(9), None, 0);
        ls.connected(&mut out, slow, false, 1_200);
        ls.up(slow, NodeId(9));
        let p = ls.dial_as(&mut out, addr(9), Some(NodeId(7)), Dial::Probe, 2_000);
        assert!(ls.tick(&mut out, 2_000 + PROBE_PATIENCE).is_empty());
        assert!(ls.tick(&mut out, 2_000 + 3_600).is_empty());
        assert_eq!(ls.tick(&mut out, 2_000 + 4_000), vec![p]);
    }

    #[test]
    fn pending_handshakes_are_bounded() {
        let mut ls = links();
        let mut out = Vec::new();
        let first = ls.accepted(&mut out, addr(1), 0);
        for i in 1..MAX_PENDING as u64 * 2 {
            ls.accepted(&mut out, addr(1), i);
        }
        let pending = ls.links.values().filter(|l| l.peer().is_none()).count();
        assert!(pending <= MAX_PENDING);
        // The oldest went first.
        assert!(ls.get(first).is_none());
        assert!(kinds(&out).contains(&format!("close {}", first.0)));
    }

    #[test]
    fn hello_checks() {
        let ls = links();
        let mut h = Hello {
            version: wire::VERSION,
            id: NodeId(5),
            name: "bob".into(),
            port: 1,
            joining: true,
            you: None,
        };
        assert_eq!(ls.check_hello(&h), Ok(()));
        h.name = "a b".into();
        assert_eq!(ls.check_hello(&h), Err(BadHello::Name));
        h.id = ME;
        assert_eq!(ls.check_hello(&h), Err(BadHello::Myself));
        h.version = wire::VERSION + 1;
        let Err(BadHello::Version(why)) = ls.check_hello(&h) else {
            panic!("version taken");
        };
        assert!(why.contains(&wire::VERSION.to_string()));
        assert!(why.contains(&(wire::VERSION + 1).to_string()));
    }

    #[test]
    fn a_held_hello_is_taken_once_and_bounded_by_the_handshake() {
        let mut ls = links();
        let mut out = Vec::new();
        let h = Hello {
            version: wire::VERSION,
            id: NodeId(5),
            name: "carol".into(),
            port: 1,
            joining: true,
            you: None,
        };
        let a = ls.accepted(&mut out, addr(9), 0);
        let b = ls.accepted(&mut out, addr(10), 0);
        ls.hold(a, h.clone());
        // Only an accepted link waiting for its HELLO holds one.
        let d = ls.dial(&mut out, addr(11), None, 0);
        ls.hold(d, h.clone());
        ls.close(&mut out, b, 0);
        ls.hold(b, h.clone());
        assert_eq!(ls.take_held(), vec![(a, h.clone())]);
        assert!(ls.take_held().is_empty());
        // A held link is not up: the handshake timeout still closes it.
        ls.hold(a, h);
        assert!(ls.tick(&mut out, 5_000).contains(&a));
    }

    #[test]
    fn refuse_sends_then_closes() {
        let mut ls = links();
        let mut out = Vec::new();
        let l = ls.accepted(&mut out, addr(1), 0);
        ls.refuse(&mut out, l, Refusal::Full, "full", 0);
        let k = kinds(&out);
        assert!(k[0].contains("Refuse") && k[0].contains("Full"));
        assert_eq!(k[1], format!("close {}", l.0));
        assert!(ls.get(l).unwrap().closing());
    }

    #[test]
    fn a_closing_link_counts_for_nothing_and_is_forgotten() {
        let mut ls = links();
        let mut out = Vec::new();
        let l = ls.dial(&mut out, addr(9), Some(NodeId(7)), 0);
        ls.up(l, NodeId(7));
        assert_eq!(
            ls.close(&mut out, l, 100),
            Some(Stage::Up { peer: NodeId(7) })
        );
        assert_eq!(ls.close(&mut out, l, 100), None);
        assert_eq!(
            ls.get(l).unwrap().stage,
            Stage::Closing {
                peer: Some(NodeId(7))
            }
        );
        assert!(!ls.linked(NodeId(7)));
        assert!(ls.busy().is_empty());
        assert_eq!((ls.up_count(), ls.dialling()), (0, 0));
        // Frames on it are still taken until the loop says it is gone.
        assert!(ls.received(l, 200).is_some());
        assert!(ls.remove(l).is_some());
        // One the loop never reports gone is forgotten in the end.
        let m = ls.accepted(&mut out, addr(9), 0);
        ls.close(&mut out, m, 0);
        assert_eq!(ls.deadline(), Some(CLOSING_MAX));
        ls.tick(&mut out, CLOSING_MAX);
        assert!(ls.get(m).is_none());
    }
}
