//! Links: each connection's life, from dial or accept to close.
//!
//! A link is dialled (or accepted), both sides say HELLO, and it is then up:
//! it carries the network's traffic to one peer. This machine owns the
//! stages, the heartbeats that keep an idle link alive, the timeouts that
//! find a dead one, and the bound on accepted links that have not said
//! HELLO yet. What a HELLO means for the network (may this peer join, under
//! that name?) is the node's decision; the checks that need nothing but
//! the HELLO itself are made here: its version, that its id is bound to
//! its key, and that it proves it holds the key.
//!
//! Under a network secret a link first runs the Noise handshake (the
//! `Noise` stage; see [`super::wire`]): the dialler's message, the other's
//! answer, and from then on every frame is encrypted ([`Links::open`] and
//! [`Links::seal`]). HELLO's proof is bound to the handshake's hash.
//!
//! A link the node closes is not forgotten at once: it is `Closing` until
//! the event loop reports the socket gone, and events already on their
//! way on it are still taken.

use super::crypto::{self, Identity};
use super::wire::{self, Frame, Hello, Ident, Msg, Refusal};
use super::{Io, LinkId, Millis, NodeId, Sink};
use snow::{HandshakeState, TransportState};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

/// Accepted connections that have not said HELLO yet, at most.
pub const MAX_PENDING: usize = 64;
/// A closing link the event loop never reports gone is forgotten after
/// this (it reports it within its linger time, 1.5 s).
const CLOSING_MAX: Millis = 10_000;

/// The Noise protocol of encrypted links.
const NOISE: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Bytes a Noise message adds: its tag.
const NOISE_TAG: usize = 16;

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
    /// TCP is up; the encrypted handshake is under way.
    Noise,
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
    pub opened: Millis,
    last_rx: Millis,
    last_tx: Millis,
    crypt: Crypt,
    /// What HELLO's proof is bound to: the handshake's hash, or zeros.
    binding: [u8; 32],
    /// Frames gathered to go out encrypted together, as one record.
    gathered: Vec<u8>,
}

/// A link's encryption.
enum Crypt {
    /// No network secret.
    Plain,
    /// The handshake, under way.
    Handshake(Box<HandshakeState>),
    /// Done, but for our answer, which goes out in the clear: encrypted
    /// from the frame after it.
    OpenAfterNext(Box<TransportState>),
    Open(Box<TransportState>),
}

impl std::fmt::Debug for Crypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Crypt::Plain => "plain",
            Crypt::Handshake(_) => "handshake",
            Crypt::OpenAfterNext(_) | Crypt::Open(_) => "open",
        })
    }
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
    /// Its id is not the one its key makes, or it does not prove it holds
    /// the key.
    Proof,
}

/// Every link of one peer, and what it says in HELLO.
#[derive(Debug)]
pub struct Links {
    cfg: Config,
    links: BTreeMap<LinkId, Link>,
    next: u64,
    ident: Identity,
    name: String,
    port: u16,
    /// The key the network secret gives; `None`: links are not encrypted.
    psk: Option<[u8; 32]>,
    /// Links with frames gathered.
    gathering: Vec<LinkId>,
    /// Our HELLO's proof on a link without a secret (bound to nothing but
    /// us): signed once.
    plain_proof: crypto::Sig,
}

impl Links {
    pub fn new(
        cfg: Config,
        ident: Identity,
        name: &str,
        port: u16,
        psk: Option<[u8; 32]>,
    ) -> Links {
        let plain_proof = ident.sign(&crypto::hello_message(&[0; 32], ident.id(), name, port));
        Links {
            cfg,
            links: BTreeMap::new(),
            next: 1,
            ident,
            name: name.to_owned(),
            port,
            psk,
            gathering: Vec::new(),
            plain_proof,
        }
    }

    /// We go by `name` from now on (`:nick`): HELLOs say it.
    pub fn rename(&mut self, name: &str) {
        self.name = name.to_owned();
        let id = self.ident.id();
        self.plain_proof = self
            .ident
            .sign(&crypto::hello_message(&[0; 32], id, name, self.port));
    }

    /// Whether links are encrypted (there is a network secret).
    pub fn secret(&self) -> bool {
        self.psk.is_some()
    }

    fn insert(
        &mut self,
        addr: SocketAddr,
        outbound: bool,
        target: Option<NodeId>,
        now: Millis,
    ) -> LinkId {
        let id = LinkId(self.next);
        self.next += 1;
        let stage = match (outbound, self.psk) {
            (true, _) => Stage::Dialing,
            (false, Some(_)) => Stage::Noise,
            (false, None) => Stage::Hello,
        };
        self.links.insert(
            id,
            Link {
                addr,
                outbound,
                target,
                stage,
                opened: now,
                last_rx: now,
                last_tx: now,
                crypt: Crypt::Plain,
                gathered: Vec::new(),
                binding: [0; 32],
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
        let id = self.insert(addr, true, target, now);
        out.io(Io::Connect(id, addr));
        id
    }

    /// A connection was accepted from `addr`; returns its new link. With
    /// [`MAX_PENDING`] others still waiting for their HELLO, the oldest of
    /// them is closed: an honest peer says HELLO at once, so whoever has
    /// waited longest is the likeliest to be dead or hostile.
    pub fn accepted(&mut self, out: &mut impl Sink, addr: SocketAddr, now: Millis) -> LinkId {
        let mut pending = self
            .links
            .iter()
            .filter(|(_, l)| !l.outbound && matches!(l.stage, Stage::Hello | Stage::Noise))
            .map(|(&k, _)| k);
        if let Some(oldest) = pending.next()
            && pending.count() + 1 >= MAX_PENDING
        {
            // Nothing came on it worth waiting for.
            self.links.remove(&oldest);
            out.io(Io::Close(oldest));
        }
        self.insert(addr, false, None, now)
    }

    /// Our dial got through: start the encrypted handshake, or say HELLO.
    /// Returns whether the link is ours.
    pub fn connected(
        &mut self,
        out: &mut impl Sink,
        link: LinkId,
        joining: bool,
        now: Millis,
    ) -> bool {
        let psk = self.psk;
        let Some(l) = self.links.get_mut(&link) else {
            return false;
        };
        if let Some(psk) = psk {
            let mut hs = noise(&psk, true);
            let mut buf = vec![0u8; 128];
            let Ok(n) = hs.write_message(&[], &mut buf) else {
                return false;
            };
            buf.truncate(n);
            l.stage = Stage::Noise;
            l.crypt = Crypt::Handshake(Box::new(hs));
            self.send(out, link, wire::small(&Msg::Noise(buf)), now);
            return true;
        }
        l.stage = Stage::Hello;
        let hello = self.hello(link, joining);
        self.send(out, link, hello, now);
        true
    }

    /// A handshake message `msg` came on `link` (in the `Noise` stage): the
    /// dialler's, answered; or the answer to ours, after which we say
    /// HELLO. Errors say why the link must close.
    pub fn handshake(
        &mut self,
        out: &mut impl Sink,
        link: LinkId,
        msg: &[u8],
        joining: bool,
        now: Millis,
    ) -> Result<(), &'static str> {
        let Some(psk) = self.psk else {
            return Err("this peer has no network secret");
        };
        let Some(l) = self
            .links
            .get_mut(&link)
            .filter(|l| l.stage == Stage::Noise)
        else {
            return Err("handshake out of turn");
        };
        let mismatch = "the network secret does not match";
        let mut buf = vec![0u8; 128];
        if l.outbound {
            let Crypt::Handshake(hs) = &mut l.crypt else {
                return Err("handshake out of turn");
            };
            hs.read_message(msg, &mut buf).map_err(|_| mismatch)?;
            let binding = binding(hs);
            let Crypt::Handshake(hs) = std::mem::replace(&mut l.crypt, Crypt::Plain) else {
                unreachable!("matched above");
            };
            let t = hs.into_transport_mode().map_err(|_| mismatch)?;
            l.crypt = Crypt::Open(Box::new(t));
            l.binding = binding;
            l.stage = Stage::Hello;
            let hello = self.hello(link, joining);
            self.send(out, link, hello, now);
            return Ok(());
        }
        if !matches!(l.crypt, Crypt::Plain) {
            return Err("handshake out of turn");
        }
        let mut hs = noise(&psk, false);
        hs.read_message(msg, &mut buf).map_err(|_| mismatch)?;
        let n = hs.write_message(&[], &mut buf).map_err(|_| mismatch)?;
        let answer = buf[..n].to_vec();
        l.binding = binding(&hs);
        let t = hs.into_transport_mode().map_err(|_| mismatch)?;
        l.crypt = Crypt::OpenAfterNext(Box::new(t));
        l.stage = Stage::Hello;
        self.send(out, link, wire::small(&Msg::Noise(answer)), now);
        Ok(())
    }

    /// The clear bodies of a frame body that came on `link`: on an
    /// encrypted link, a record decrypted and split into the frames it
    /// carries; else the body itself. `None` if it does not decrypt or
    /// split (the link must close).
    pub fn open(&mut self, link: LinkId, body: &[u8]) -> Option<Vec<Vec<u8>>> {
        let l = self.links.get_mut(&link)?;
        let (Crypt::Open(t) | Crypt::OpenAfterNext(t)) = &mut l.crypt else {
            return Some(vec![body.to_vec()]);
        };
        let mut buf = vec![0u8; body.len()];
        let n = t.read_message(body, &mut buf).ok()?;
        let mut rest = &buf[..n];
        let mut bodies = Vec::new();
        while !rest.is_empty() {
            let total = wire::frame_len(rest).ok()??;
            bodies.push(rest[4..total].to_vec());
            rest = &rest[total..];
        }
        Some(bodies)
    }

    /// Whether frames on `link` are decrypted by [`Links::open`].
    pub fn encrypted(&self, link: LinkId) -> bool {
        self.links
            .get(&link)
            .is_some_and(|l| matches!(l.crypt, Crypt::Open(_) | Crypt::OpenAfterNext(_)))
    }

    /// `frame` is to go out on `link`. On an encrypted link it is gathered
    /// with the frames after it into one record (one Noise message: one
    /// tag and one round of the cipher for all of them), which
    /// [`Links::flush`] gives; returned is a record made full by it, if
    /// any. Elsewhere the frame itself is returned.
    pub fn seal(&mut self, link: LinkId, frame: Frame) -> Option<Frame> {
        let l = self.links.get_mut(&link)?;
        match std::mem::replace(&mut l.crypt, Crypt::Plain) {
            Crypt::OpenAfterNext(t) => {
                // Our answer to the handshake: in the clear, the last.
                l.crypt = Crypt::Open(t);
                Some(frame)
            }
            Crypt::Open(t) => {
                l.crypt = Crypt::Open(t);
                let full = if l.gathered.len() + frame.len() > wire::MAX_PLAIN {
                    self.record(link)
                } else {
                    None
                };
                let l = self.links.get_mut(&link)?;
                if l.gathered.is_empty() {
                    self.gathering.push(link);
                }
                l.gathered.extend_from_slice(&frame);
                full
            }
            other => {
                l.crypt = other;
                Some(frame)
            }
        }
    }

    /// A record of frames gathered for some link, encrypted, while there
    /// are any.
    pub fn flush(&mut self) -> Option<(LinkId, Frame)> {
        while let Some(link) = self.gathering.pop() {
            if let Some(f) = self.record(link) {
                return Some((link, f));
            }
        }
        None
    }

    /// Whether frames are gathered, waiting for [`Links::flush`].
    pub fn gathered(&self) -> bool {
        !self.gathering.is_empty()
    }

    /// The frames gathered for `link`, encrypted as one frame body.
    fn record(&mut self, link: LinkId) -> Option<Frame> {
        let l = self.links.get_mut(&link)?;
        let plain = std::mem::take(&mut l.gathered);
        let Crypt::Open(t) = &mut l.crypt else {
            return None;
        };
        if plain.is_empty() {
            return None;
        }
        let mut buf = vec![0u8; 4 + plain.len() + NOISE_TAG];
        let n = t.write_message(&plain, &mut buf[4..]).ok()?;
        buf.truncate(4 + n);
        buf[..4].copy_from_slice(&(n as u32).to_be_bytes());
        Some(buf.into())
    }

    /// Our HELLO on `link`, telling the other side the IP we see it at and
    /// proving we hold our key, on this link.
    pub fn hello(&self, link: LinkId, joining: bool) -> Frame {
        let l = &self.links[&link];
        let me = &self.ident;
        let proof = if l.binding == [0; 32] {
            self.plain_proof
        } else {
            me.sign(&crypto::hello_message(
                &l.binding,
                me.id(),
                &self.name,
                self.port,
            ))
        };
        wire::small(&Msg::Hello(Hello {
            version: wire::VERSION,
            id: me.id(),
            name: self.name.clone(),
            port: self.port,
            joining,
            you: Some(l.addr.ip()),
            ident: Ident {
                key: me.public(),
                nonce: me.nonce(),
            },
            proof,
        }))
    }

    /// The checks a HELLO on `link` must pass whoever we are.
    pub fn check_hello(&self, link: LinkId, h: &Hello) -> Result<(), BadHello> {
        if h.version != wire::VERSION {
            return Err(BadHello::Version(format!(
                "speaks protocol version {}, this peer speaks {}",
                h.version,
                wire::VERSION
            )));
        }
        if h.id == self.ident.id() {
            return Err(BadHello::Myself);
        }
        if !wire::valid_name(&h.name) {
            return Err(BadHello::Name);
        }
        let binding = self.links.get(&link).map_or([0; 32], |l| l.binding);
        let msg = crypto::hello_message(&binding, h.id, &h.name, h.port);
        let proved = crypto::node_id(&h.ident.key, h.ident.nonce) == h.id
            && crypto::verifying(&h.ident.key).is_some_and(|k| crypto::verify(&k, &msg, &h.proof));
        if !proved {
            return Err(BadHello::Proof);
        }
        Ok(())
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

    fn live(&self) -> impl Iterator<Item = &Link> + '_ {
        self.links.values().filter(|l| !l.closing())
    }

    /// Members we link to or are dialling.
    pub fn busy(&self) -> HashSet<NodeId> {
        self.live().filter_map(|l| l.peer().or(l.target)).collect()
    }

    /// Members we have a dial under way to.
    pub fn targets(&self) -> HashSet<NodeId> {
        self.live().filter_map(|l| l.target).collect()
    }

    /// Dials not through HELLO yet.
    pub fn dialling(&self) -> usize {
        self.live()
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
        Links::new(cfg, Identity::from_seed(id.0), "me", 4000, None)
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
                if now >= l.opened + cfg.handshake_timeout {
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
                    [Some(l.opened + cfg.handshake_timeout), None]
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

/// A Noise handshake under `psk`, as the dialler or the one dialled.
fn noise(psk: &[u8; 32], initiator: bool) -> HandshakeState {
    let b = snow::Builder::new(NOISE.parse().expect("a valid Noise pattern"))
        .psk(0, psk)
        .expect("one pre-shared key");
    if initiator {
        b.build_initiator()
    } else {
        b.build_responder()
    }
    .expect("the pattern has what it needs")
}

fn binding(hs: &HandshakeState) -> [u8; 32] {
    let mut b = [0u8; 32];
    let h = hs.get_handshake_hash();
    let n = h.len().min(32);
    b[..n].copy_from_slice(&h[..n]);
    b
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

    /// Bob's HELLO to `ls`, as its link would carry it.
    fn bobs_hello(joining: bool) -> Hello {
        let mut bob = Links::for_test(NodeId(2));
        let mut out = Vec::new();
        let l = bob.dial(&mut out, addr(1), None, 0);
        let f = bob.hello(l, joining);
        let Ok(Msg::Hello(h)) = decode(&f[4..]) else {
            panic!("not a HELLO");
        };
        h
    }

    #[test]
    fn hello_checks() {
        let mut ls = links();
        let l = ls.accepted(&mut Vec::new(), addr(2), 0);
        let h = bobs_hello(true);
        assert_eq!(ls.check_hello(l, &h), Ok(()));
        let mut bad = h.clone();
        bad.name = "a b".into();
        assert_eq!(ls.check_hello(l, &bad), Err(BadHello::Name));
        // A name or port changed after the proof, or an id not bound to
        // the key: the proof does not check out.
        let mut bad = h.clone();
        bad.name = "mallory".into();
        assert_eq!(ls.check_hello(l, &bad), Err(BadHello::Proof));
        let mut bad = h.clone();
        bad.id = NodeId(bad.id.0 ^ 1);
        assert_eq!(ls.check_hello(l, &bad), Err(BadHello::Proof));
        let mut bad = h.clone();
        bad.id = ls.ident.id();
        assert_eq!(ls.check_hello(l, &bad), Err(BadHello::Myself));
        let mut bad = h;
        bad.version = wire::VERSION + 1;
        let Err(BadHello::Version(why)) = ls.check_hello(l, &bad) else {
            panic!("version taken");
        };
        assert!(why.contains(&wire::VERSION.to_string()));
        assert!(why.contains(&(wire::VERSION + 1).to_string()));
    }

    /// The frames of `io` for `link`, as the event loop would write them.
    fn wrote(ls: &mut Links, io: &mut Vec<Io>, link: LinkId) -> Vec<Frame> {
        let frames: Vec<Frame> = io
            .drain(..)
            .filter_map(|x| match x {
                Io::Send(l, f) if l == link => Some(f),
                _ => None,
            })
            .collect();
        let mut out: Vec<Frame> = frames
            .into_iter()
            .filter_map(|f| ls.seal(link, f))
            .collect();
        while let Some((l, f)) = ls.flush() {
            if l == link {
                out.push(f);
            }
        }
        out
    }

    fn secret_links(seed: u64, psk: [u8; 32]) -> Links {
        let cfg = Config {
            heartbeat: 20_000,
            link_timeout: 60_000,
            handshake_timeout: 5_000,
        };
        Links::new(cfg, Identity::from_seed(seed), "me", 4000, Some(psk))
    }

    #[test]
    fn a_secret_makes_an_encrypted_link_that_proves_who_is_on_it() {
        let mut a = secret_links(1, [7; 32]);
        let mut b = secret_links(2, [7; 32]);
        let (mut ia, mut ib) = (Vec::new(), Vec::new());
        let la = a.dial(&mut ia, addr(2), None, 0);
        let lb = b.accepted(&mut ib, addr(1), 0);
        assert_eq!(b.get(lb).unwrap().stage, Stage::Noise);
        ia.clear();
        assert!(a.connected(&mut ia, la, true, 0));
        // The dialler's handshake message, in the clear.
        let m1 = wrote(&mut a, &mut ia, la);
        let Ok(Msg::Noise(n1)) = decode(&m1[0][4..]) else {
            panic!("not NOISE");
        };
        b.handshake(&mut ib, lb, &n1, false, 0).unwrap();
        let m2 = wrote(&mut b, &mut ib, lb);
        let Ok(Msg::Noise(n2)) = decode(&m2[0][4..]) else {
            panic!("the answer is not in the clear");
        };
        a.handshake(&mut ia, la, &n2, true, 0).unwrap();
        // Then a's HELLO, encrypted: b opens it and checks its proof.
        let hello = wrote(&mut a, &mut ia, la);
        assert!(decode(&hello[0][4..]).is_err(), "HELLO went in the clear");
        let clear = b.open(lb, &hello[0][4..]).unwrap();
        let Ok(Msg::Hello(h)) = decode(&clear[0]) else {
            panic!("not HELLO");
        };
        assert_eq!(b.check_hello(lb, &h), Ok(()));
        // Frames sent together go as one record, and come out as they went.
        let mut io = Vec::new();
        a.send(&mut io, la, wire::small(&Msg::Ping), 0);
        let lack = Msg::Lack {
            origin: NodeId(5),
            oldest: 9,
        };
        a.send(&mut io, la, wire::small(&lack), 0);
        let both = wrote(&mut a, &mut io, la);
        assert_eq!(both.len(), 1, "one record");
        let bodies = b.open(lb, &both[0][4..]).unwrap();
        assert_eq!(bodies.len(), 2);
        assert_eq!(decode(&bodies[0]), Ok(Msg::Ping));
        assert_eq!(decode(&bodies[1]), Ok(lack));
        // A frame replayed does not open again.
        assert!(b.open(lb, &hello[0][4..]).is_none());
        // The same HELLO on a link of another handshake: bound to the
        // first, its proof does not check out there.
        let mut c = secret_links(3, [7; 32]);
        let mut ic = Vec::new();
        let lc = c.accepted(&mut ic, addr(1), 0);
        let mut a2 = secret_links(1, [7; 32]);
        let la2 = a2.dial(&mut Vec::new(), addr(3), None, 0);
        let mut i2 = Vec::new();
        a2.connected(&mut i2, la2, true, 0);
        let Ok(Msg::Noise(n)) = decode(&wrote(&mut a2, &mut i2, la2)[0][4..]) else {
            panic!("not NOISE");
        };
        c.handshake(&mut ic, lc, &n, false, 0).unwrap();
        assert_eq!(c.check_hello(lc, &h), Err(BadHello::Proof));
    }

    #[test]
    fn another_secret_is_refused_at_the_first_message() {
        let mut a = secret_links(1, [7; 32]);
        let mut b = secret_links(2, [8; 32]);
        let (mut ia, mut ib) = (Vec::new(), Vec::new());
        let la = a.dial(&mut ia, addr(2), None, 0);
        let lb = b.accepted(&mut ib, addr(1), 0);
        ia.clear();
        a.connected(&mut ia, la, true, 0);
        let Ok(Msg::Noise(n1)) = decode(&wrote(&mut a, &mut ia, la)[0][4..]) else {
            panic!("not NOISE");
        };
        assert_eq!(
            b.handshake(&mut ib, lb, &n1, false, 0),
            Err("the network secret does not match")
        );
        // Without a secret, a handshake is not answered at all.
        let mut plain = links();
        let lp = plain.accepted(&mut Vec::new(), addr(1), 0);
        assert!(plain.handshake(&mut Vec::new(), lp, &n1, false, 0).is_err());
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
