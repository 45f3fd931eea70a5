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
//! [`Links::seal`]). HELLO's proof is bound to the handshake's hash. A
//! punched link (both ends dialled at once, see [`Dial::Punch`]) has no
//! dialler: the end with the smaller node id starts the handshake, and the
//! other says HELLO right after its answer. It is checked like any other.
//!
//! A dial to a member we know (any dial but the join and a punch) ends its
//! HELLO with the id and key it means to reach, and the answer is checked
//! against them: a port may have been taken by another p2pchat since the
//! member was there, and two networks must not merge through it (see
//! [`BadHello::NotHere`] and [`BadHello::Stranger`]). A peer built
//! before the field rejects such a HELLO and closes the link unanswered:
//! an address that did so [`OLD_AFTER`] times in a row (once may be a
//! peer that died as we dialled) is sent HELLOs without it, until one
//! with it is answered there; at most [`MAX_OLD_HELLO`] such addresses
//! are remembered. Such a peer takes us in and may dial us back, as a
//! member it lost: the last [`MAX_STRANGERS`] peers found at a member's
//! address are refused, unless they join.
//!
//! A link the node closes is not forgotten at once: it is `Closing` until
//! the event loop reports the socket gone, and events already on their
//! way on it are still taken.

use super::crypto::{self, Identity, PublicKey};
use super::wire::{self, Frame, Hello, Ident, Msg, Refusal};
use super::{Io, LinkId, Millis, NodeId, PROBE_EVERY, Sink};
use snow::{HandshakeState, TransportState};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;

/// Accepted connections that have not said HELLO yet, at most.
pub const MAX_PENDING: usize = 64;
/// Addresses remembered as closing HELLOs that name the member expected
/// unanswered, at most (the oldest is forgotten first).
pub const MAX_OLD_HELLO: usize = 64;
/// Times in a row an address closes such a HELLO unanswered before it is
/// sent HELLOs without the field.
pub const OLD_AFTER: u8 = 2;
/// Peers found at a member's address remembered, at most (the oldest is
/// forgotten first).
pub const MAX_STRANGERS: usize = 64;
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
    /// Our HELLO went out on it.
    said_hello: bool,
    /// The key of `target`, if known: the same key under another id is
    /// the same user, restarted.
    target_key: Option<PublicKey>,
    /// Our HELLO named the member we meant to reach.
    expected: bool,
    /// A frame came since our HELLO went out.
    answered: bool,
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

    /// Whether we start the encrypted handshake on this link: we dialled
    /// it; or, for a punch (both ends dialled it at the same moment, TCP
    /// simultaneous open, or one end's dial reached the other's listening
    /// socket first), ours is the smaller node id. Both ends choose alike.
    fn initiator(&self, me: NodeId) -> bool {
        match (self.dial, self.target) {
            (Dial::Punch, Some(t)) => me < t,
            _ => self.outbound,
        }
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
    /// Its id is not the one its key makes, or it does not prove it holds
    /// the key.
    Proof,
    /// A dialler meant to reach another member (another id and key): a
    /// port we took was that member's once.
    NotHere,
    /// The peer we dialled, to reach a member, is another (neither its id
    /// nor its key).
    Stranger,
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
    /// Addresses that closed HELLOs naming the member expected without a
    /// word, and how many times in a row. At most [`MAX_OLD_HELLO`].
    old_hello: VecDeque<(SocketAddr, u8)>,
    /// Peers found at a member's address (see [`Links::stranger`]). At
    /// most [`MAX_STRANGERS`].
    strangers: VecDeque<NodeId>,
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
            slowest: 0,
            ident,
            name: name.to_owned(),
            port,
            psk,
            gathering: Vec::new(),
            plain_proof,
            old_hello: VecDeque::new(),
            strangers: VecDeque::new(),
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
        dial: Dial,
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
                dial,
                opened: now,
                last_rx: now,
                last_tx: now,
                held: None,
                refused: false,
                said_hello: false,
                target_key: None,
                expected: false,
                answered: false,
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
            .filter(|(_, l)| !l.outbound && matches!(l.stage, Stage::Hello | Stage::Noise))
            .map(|(&k, _)| k);
        if let Some(oldest) = pending.next()
            && pending.count() + 1 >= MAX_PENDING
        {
            // Nothing came on it worth waiting for.
            self.links.remove(&oldest);
            out.io(Io::Close(oldest));
        }
        let punch = self
            .live()
            .find(|l| l.dial == Dial::Punch && l.outbound && l.addr == addr && l.peer().is_none())
            .and_then(|l| l.target);
        let id = self.insert(addr, false, None, Dial::Plain, now);
        if let Some(target) = punch {
            self.punched(id, target);
        }
        id
    }

    /// Whoever we punch to at `addr` reached our listening socket first
    /// (its SYN came in before ours went out): the link accepted from it,
    /// if it is not up yet, is that punch, to member `target`. Returns it.
    pub fn punched_from(&mut self, addr: SocketAddr, target: NodeId) -> Option<LinkId> {
        let k = self
            .links
            .iter()
            .find(|(_, l)| !l.outbound && l.addr == addr && l.peer().is_none() && !l.closing())
            .map(|(&k, _)| k)?;
        self.punched(k, target);
        Some(k)
    }

    /// Takes the accepted `link` for a punch to `target`: both ends then
    /// take the same end for the dialler (see [`Link::initiator`]).
    fn punched(&mut self, link: LinkId, target: NodeId) {
        if let Some(l) = self.links.get_mut(&link) {
            l.dial = Dial::Punch;
            l.target = Some(target);
        }
    }

    /// Starts the encrypted handshake on an accepted `link` that is a
    /// punch, if it is ours to start (the other end, which dialled it,
    /// waits for it); see [`Links::punched_from`].
    pub fn start(&mut self, out: &mut impl Sink, link: LinkId, now: Millis) {
        let me = self.ident.id();
        let ours = self.links.get(&link).is_some_and(|l| {
            !l.outbound
                && l.stage == Stage::Noise
                && matches!(l.crypt, Crypt::Plain)
                && l.initiator(me)
        });
        if ours {
            self.initiate(out, link, now);
        }
    }

    /// Sends the first message of the encrypted handshake on `link`.
    /// Returns whether it went.
    fn initiate(&mut self, out: &mut impl Sink, link: LinkId, now: Millis) -> bool {
        let (Some(psk), Some(l)) = (self.psk, self.links.get_mut(&link)) else {
            return false;
        };
        let mut hs = noise(&psk, true);
        let mut buf = vec![0u8; 128];
        let Ok(n) = hs.write_message(&[], &mut buf) else {
            return false;
        };
        buf.truncate(n);
        l.stage = Stage::Noise;
        l.crypt = Crypt::Handshake(Box::new(hs));
        self.send(out, link, wire::small(&Msg::Noise(buf)), now);
        true
    }

    /// Sends our HELLO on `link`.
    pub fn say_hello(&mut self, out: &mut impl Sink, link: LinkId, joining: bool, now: Millis) {
        let hello = self.hello(link, joining);
        let expected = self.expects(link).is_some();
        if let Some(l) = self.links.get_mut(&link) {
            l.said_hello = true;
            l.expected = expected;
            l.answered = false;
        }
        self.send(out, link, hello, now);
    }

    /// Whether our HELLO went out on `link` (it is answered otherwise).
    pub fn said_hello(&self, link: LinkId) -> bool {
        self.links.get(&link).is_some_and(|l| l.said_hello)
    }

    /// Our dial got through: start the encrypted handshake, or say HELLO.
    /// Returns whether the link is ours (a dial we gave up on, closing
    /// already, is not brought back).
    pub fn connected(
        &mut self,
        out: &mut impl Sink,
        link: LinkId,
        joining: bool,
        now: Millis,
    ) -> bool {
        let psk = self.psk;
        let me = self.ident.id();
        let Some(l) = self
            .links
            .get_mut(&link)
            .filter(|l| l.stage == Stage::Dialing)
        else {
            return false;
        };
        let took = now.saturating_sub(l.opened);
        self.slowest = (self.slowest - self.slowest / 8).max(took);
        if psk.is_some() {
            if !l.initiator(me) {
                // A punch: the other end, the smaller id, starts the
                // handshake (whether it dialled too or accepted ours);
                // we answer it.
                l.stage = Stage::Noise;
                return true;
            }
            return self.initiate(out, link, now);
        }
        l.stage = Stage::Hello;
        self.say_hello(out, link, joining, now);
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
        let me = self.ident.id();
        let Some(l) = self
            .links
            .get_mut(&link)
            .filter(|l| l.stage == Stage::Noise)
        else {
            return Err("handshake out of turn");
        };
        let mismatch = "the network secret does not match";
        let mut buf = vec![0u8; 128];
        if l.initiator(me) {
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
            self.say_hello(out, link, joining, now);
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
        let punched = l.outbound;
        self.send(out, link, wire::small(&Msg::Noise(answer)), now);
        if punched {
            // A punch we dialled: nobody answers a HELLO of ours, so
            // ours goes now, encrypted.
            self.say_hello(out, link, joining, now);
        }
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
            expect: self.expects(link),
        }))
    }

    /// The member our HELLO on `link` says we mean to reach: on a dial
    /// to one, not a punch, unless its address rejects the field.
    fn expects(&self, link: LinkId) -> Option<(NodeId, PublicKey)> {
        let l = self.links.get(&link)?;
        let t = l.target.filter(|_| l.outbound && l.dial != Dial::Punch)?;
        let old = self
            .old_hello
            .iter()
            .any(|&(a, n)| a == l.addr && n >= OLD_AFTER);
        (!old).then(|| (t, l.target_key.unwrap_or([0; 32])))
    }

    /// `id` answered at a member's address (see [`BadHello::Stranger`]):
    /// its HELLOs are refused from now on, unless it joins.
    pub fn stranger(&mut self, id: NodeId) {
        if !self.strangers.contains(&id) {
            if self.strangers.len() == MAX_STRANGERS {
                self.strangers.pop_front();
            }
            self.strangers.push_back(id);
        }
    }

    /// The key of the member `link` is dialled to, if known: a HELLO
    /// under it is that member's, whatever its id.
    pub fn target_key(&mut self, link: LinkId, key: Option<PublicKey>) {
        if let Some(l) = self.links.get_mut(&link) {
            l.target_key = key;
        }
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
        let me = (self.ident.id(), self.ident.public());
        if let Some((id, key)) = h.expect
            && id != me.0
            && (key == [0; 32] || key != me.1)
        {
            return Err(BadHello::NotHere);
        }
        let l = self.links.get(&link);
        if l.is_some_and(|l| !l.outbound) && !h.joining && self.strangers.contains(&h.id) {
            // Found at a member's address, and not taken in there: it
            // does not come in by dialling us either, unless it joins.
            return Err(BadHello::NotHere);
        }
        if let Some(l) = l.filter(|l| l.outbound)
            && let Some(t) = l.target
            && h.id != t
            && l.target_key != Some(h.ident.key)
        {
            return Err(BadHello::Stranger);
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
            if l.expected && !l.answered {
                // A HELLO naming whom we meant to reach is understood here.
                let a = l.addr;
                self.old_hello.retain(|&(x, _)| x != a);
            }
            l.answered = true;
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
        if l.stage == Stage::Hello && l.expected && !l.answered {
            // Our HELLO, naming whom we meant to reach, got nothing
            // back: a peer of an older build rejects the field.
            match self.old_hello.iter_mut().find(|(a, _)| *a == l.addr) {
                Some((_, n)) => *n = n.saturating_add(1),
                None => {
                    if self.old_hello.len() == MAX_OLD_HELLO {
                        self.old_hello.pop_front();
                    }
                    self.old_hello.push_back((l.addr, 1));
                }
            }
        }
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

    /// Whether a punch to `peer` is under way (not up yet).
    pub fn punching(&self, peer: NodeId) -> bool {
        self.live()
            .any(|l| l.dial == Dial::Punch && l.target == Some(peer) && l.peer().is_none())
    }

    /// Dials not through HELLO yet.
    pub fn dialling(&self) -> usize {
        self.live()
            .filter(|l| l.outbound && l.peer().is_none())
            .count()
    }

    /// What our HELLO on `link` says of the member we mean to reach.
    #[cfg(test)]
    fn hello_expects(&self, link: LinkId) -> Option<(NodeId, PublicKey)> {
        self.expects(link)
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
    use crate::proto::wire::{decode, frame};

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

    #[test]
    fn a_hello_expecting_another_member_is_refused_and_a_stranger_is_not_taken() {
        let mut ls = links();
        let l = ls.accepted(&mut Vec::new(), addr(2), 0);
        let (me, key) = (ls.ident.id(), ls.ident.public());
        // Without the field (an old-format HELLO: its bytes end at the
        // proof), or expecting us: taken.
        let h = bobs_hello(false);
        assert_eq!(h.expect, None);
        let mut body = frame(&Msg::Hello(h.clone())).unwrap()[4..].to_vec();
        assert_eq!(decode(&body), Ok(Msg::Hello(h.clone())));
        assert_eq!(ls.check_hello(l, &h), Ok(()));
        let ours = Hello {
            expect: Some((me, key)),
            ..h.clone()
        };
        assert_eq!(ls.check_hello(l, &ours), Ok(()));
        // Our key under an id of an earlier run: the same user, restarted.
        let earlier = Hello {
            expect: Some((NodeId(me.0 ^ 1), key)),
            ..h.clone()
        };
        assert_eq!(ls.check_hello(l, &earlier), Ok(()));
        // Another member: refused, whether its key is known or not.
        for k in [[0; 32], [9; 32]] {
            let other = Hello {
                expect: Some((NodeId(me.0 ^ 1), k)),
                ..h.clone()
            };
            assert_eq!(ls.check_hello(l, &other), Err(BadHello::NotHere));
        }
        // The field on the wire, after the proof.
        body.extend_from_slice(&(me.0 ^ 1).to_be_bytes());
        body.extend_from_slice(&[0; 32]);
        let Ok(Msg::Hello(got)) = decode(&body) else {
            panic!("not a HELLO");
        };
        assert_eq!(ls.check_hello(l, &got), Err(BadHello::NotHere));

        // Our dial to member 7: its HELLO names it; an answer from bob
        // (neither its id nor its key) is a stranger's; from 7's key
        // under another id, the member restarted.
        let mut out = Vec::new();
        let d = ls.dial_as(&mut out, addr(9), Some(NodeId(7)), Dial::Probe, 0);
        ls.target_key(d, Some([7; 32]));
        ls.connected(&mut out, d, false, 0);
        let said = out.iter().rev().find_map(|io| match io {
            Io::Send(k, f) if *k == d => Some(f.clone()),
            _ => None,
        });
        let Some(Ok(Msg::Hello(mine))) = said.map(|f| decode(&f[4..])) else {
            panic!("no HELLO");
        };
        assert_eq!(mine.expect, Some((NodeId(7), [7; 32])));
        assert_eq!(ls.check_hello(d, &h), Err(BadHello::Stranger));
        ls.target_key(d, Some(h.ident.key));
        assert_eq!(ls.check_hello(d, &h), Ok(()));
        // Found there, it is not taken in when it dials us (a peer of an
        // older build that took us in may), unless it joins.
        ls.stranger(h.id);
        assert_eq!(ls.check_hello(l, &h), Err(BadHello::NotHere));
        let joins = Hello {
            joining: true,
            ..h.clone()
        };
        assert_eq!(ls.check_hello(l, &joins), Ok(()));
        // The join (no member in mind) takes whoever answers.
        let j = ls.dial(&mut out, addr(9), None, 0);
        assert_eq!(ls.check_hello(j, &h), Ok(()));
        assert_eq!(ls.hello_expects(j), None);
    }

    #[test]
    fn an_address_that_closes_our_hello_unanswered_is_sent_the_old_form() {
        let mut ls = links();
        let mut out = Vec::new();
        let d = ls.dial(&mut out, addr(9), Some(NodeId(7)), 0);
        ls.connected(&mut out, d, false, 0);
        assert!(ls.hello_expects(d).is_some());
        // Closed with nothing back, twice in a row: an older build
        // rejected the field (once may be a peer that died as we dialled).
        ls.closed(d, 10);
        let e = ls.dial(&mut out, addr(9), Some(NodeId(7)), 20);
        ls.connected(&mut out, e, false, 20);
        assert!(ls.hello_expects(e).is_some());
        ls.closed(e, 30);
        let e = ls.dial(&mut out, addr(9), Some(NodeId(7)), 40);
        ls.connected(&mut out, e, false, 40);
        assert_eq!(ls.hello_expects(e), None);
        // Answered (a REFUSE, say), another address keeps the field.
        let f = ls.dial(&mut out, addr(10), Some(NodeId(8)), 30);
        ls.connected(&mut out, f, false, 30);
        ls.received(f, 40);
        ls.closed(f, 40);
        let g = ls.dial(&mut out, addr(10), Some(NodeId(8)), 50);
        assert!(ls.hello_expects(g).is_some());
        // An expecting HELLO answered there: understood again.
        let d = ls.dial(&mut out, addr(11), Some(NodeId(8)), 30);
        ls.connected(&mut out, d, false, 30);
        ls.closed(d, 31);
        let d = ls.dial(&mut out, addr(11), Some(NodeId(8)), 32);
        ls.connected(&mut out, d, false, 32);
        ls.received(d, 33);
        assert!(ls.old_hello.iter().all(|&(a, _)| a != addr(11)));
        // Bounded.
        for p in 0..MAX_OLD_HELLO as u16 * 2 {
            let k = ls.dial(&mut out, addr(1000 + p), Some(NodeId(9)), 60);
            ls.connected(&mut out, k, false, 60);
            ls.closed(k, 70);
        }
        assert_eq!(ls.old_hello.len(), MAX_OLD_HELLO);
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
        // (A record is random bytes to anyone without the key: about one
        // in 256 decodes as some message, a NOISE say, never as a HELLO.)
        assert!(
            !matches!(decode(&hello[0][4..]), Ok(Msg::Hello(_))),
            "HELLO went in the clear"
        );
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
    fn a_punched_link_has_one_handshake_and_both_hellos_under_a_secret() {
        let mut a = secret_links(1, [7; 32]);
        let mut b = secret_links(2, [7; 32]);
        let (ida, idb) = (a.ident.id(), b.ident.id());
        let (mut ia, mut ib) = (Vec::new(), Vec::new());
        // Both dial at once: one TCP connection, outbound at both ends.
        let la = a.dial_as(&mut ia, addr(2), Some(idb), Dial::Punch, 0);
        let lb = b.dial_as(&mut ib, addr(1), Some(ida), Dial::Punch, 0);
        ia.clear();
        ib.clear();
        assert!(a.connected(&mut ia, la, false, 0));
        assert!(b.connected(&mut ib, lb, false, 0));
        let (wa, wb) = (wrote(&mut a, &mut ia, la), wrote(&mut b, &mut ib, lb));
        // Only the smaller id starts the handshake.
        let (mut i, li, wi, mut r, lr, wr) = if ida < idb {
            (a, la, wa, b, lb, wb)
        } else {
            (b, lb, wb, a, la, wa)
        };
        assert!(wr.is_empty(), "both ends started a handshake");
        let Ok(Msg::Noise(n1)) = decode(&wi[0][4..]) else {
            panic!("not NOISE");
        };
        let mut ir = Vec::new();
        r.handshake(&mut ir, lr, &n1, false, 0).unwrap();
        // The answer in the clear, and at once a HELLO, encrypted.
        let from_r = wrote(&mut r, &mut ir, lr);
        assert_eq!(from_r.len(), 2, "{from_r:?}");
        let Ok(Msg::Noise(n2)) = decode(&from_r[0][4..]) else {
            panic!("the answer is not in the clear");
        };
        let mut ii = Vec::new();
        i.handshake(&mut ii, li, &n2, false, 0).unwrap();
        let from_i = wrote(&mut i, &mut ii, li);
        let (id_i, id_r) = (i.ident.id(), r.ident.id());
        for (x, lx, f, them) in [
            (&mut i, li, &from_r[1], id_r),
            (&mut r, lr, &from_i[0], id_i),
        ] {
            let clear = x.open(lx, &f[4..]).unwrap();
            let Ok(Msg::Hello(h)) = decode(&clear[0]) else {
                panic!("not HELLO");
            };
            assert_eq!(h.id, them);
            assert_eq!(x.check_hello(lx, &h), Ok(()));
        }
        // Another secret: the handshake fails at its first message.
        let mut c = secret_links(3, [8; 32]);
        let mut ic = Vec::new();
        let lc = c.dial_as(&mut ic, addr(1), Some(NodeId(0)), Dial::Punch, 0);
        c.connected(&mut ic, lc, false, 0);
        assert_eq!(
            c.handshake(&mut ic, lc, &n1, false, 0),
            Err("the network secret does not match")
        );
    }

    #[test]
    fn a_punch_that_reached_the_listening_socket_is_started_by_the_smaller_id() {
        for order in [false, true] {
            let x = secret_links(1, [7; 32]);
            let y = secret_links(2, [7; 32]);
            let (idx, idy) = (x.ident.id(), y.ident.id());
            // The larger id dials; the smaller accepts it.
            let (mut d, mut a) = if idx > idy { (x, y) } else { (y, x) };
            let (idd, ida) = (d.ident.id(), a.ident.id());
            let (mut io_d, mut io_a) = (Vec::new(), Vec::new());
            let ld = d.dial_as(&mut io_d, addr(2), Some(ida), Dial::Punch, 0);
            let la = if order {
                // Our own punch is under way when theirs comes in.
                a.dial_as(&mut io_a, addr(1), Some(idd), Dial::Punch, 0);
                let la = a.accepted(&mut io_a, addr(1), 0);
                a.start(&mut io_a, la, 0);
                la
            } else {
                // Theirs comes in, then the PUNCH telling us of it.
                let la = a.accepted(&mut io_a, addr(1), 0);
                a.start(&mut io_a, la, 0);
                assert!(wrote(&mut a, &mut io_a, la).is_empty());
                assert_eq!(a.punched_from(addr(1), idd), Some(la));
                a.start(&mut io_a, la, 0);
                la
            };
            io_d.clear();
            assert!(d.connected(&mut io_d, ld, false, 0));
            assert!(
                wrote(&mut d, &mut io_d, ld).is_empty(),
                "the dialler started"
            );
            let m1 = wrote(&mut a, &mut io_a, la);
            let Ok(Msg::Noise(n1)) = decode(&m1[0][4..]) else {
                panic!("not NOISE: {m1:?}");
            };
            d.handshake(&mut io_d, ld, &n1, false, 0).unwrap();
            let from_d = wrote(&mut d, &mut io_d, ld);
            let Ok(Msg::Noise(n2)) = decode(&from_d[0][4..]) else {
                panic!("the answer is not in the clear");
            };
            a.handshake(&mut io_a, la, &n2, false, 0).unwrap();
            assert!(a.said_hello(la) && d.said_hello(ld));
            let from_a = wrote(&mut a, &mut io_a, la);
            for (x, lx, f) in [(&mut a, la, &from_d[1]), (&mut d, ld, &from_a[0])] {
                let clear = x.open(lx, &f[4..]).unwrap();
                let Ok(Msg::Hello(h)) = decode(&clear[0]) else {
                    panic!("not HELLO");
                };
                assert_eq!(x.check_hello(lx, &h), Ok(()));
            }
        }
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
            ident: Ident {
                key: [0; 32],
                nonce: 0,
            },
            proof: [0; 64],
            expect: None,
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
