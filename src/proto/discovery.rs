//! LAN discovery: the announcement a peer multicasts on its LAN, and which
//! announcements heard there to act on.
//!
//! With `--discover`, a peer announces itself on a UDP multicast group
//! (IPv4 [`GROUP_V4`], IPv6 link-local [`GROUP_V6`], port [`PORT`];
//! time to live 1, so never beyond the LAN) when it starts and at a low
//! rate after, and listens there. A peer that hears an announcement of its
//! own network connects to the announcer by TCP as if given its host and
//! port: alone, it joins the announcer's network; in a network, it links
//! to the announcer, which merges two networks that found each other.
//! This machine holds no socket: the event loop feeds it datagrams and the
//! time, and carries out what it asks for (send an announcement, tell the
//! node a peer was found); `src/discover.rs` owns the sockets.
//!
//! # The announcement
//!
//! One UDP datagram, all integers big-endian:
//!
//! ```text
//! offset  size  field
//!  0       4    magic "p2pd"
//!  4       1    version: 1
//!  5       1    flags: bit 0 set: the sender is in a network with others
//!                      (clear: it is alone); other bits 0, ignored
//!  6       2    TCP port the sender listens on (not 0)
//!  8       8    the sender's node id
//! 16      16    network tag, see [`Network`]
//! ```
//!
//! 32 bytes ([`LEN`]). The address to dial is the datagram's source
//! address with this port. A later version keeps these 32 bytes and
//! appends; a datagram shorter than 32 bytes or longer than
//! [`MAX_DATAGRAM`], with another magic, version 0 or port 0 is ignored
//! (and counted), as is one of another network (its tag differs) and our
//! own, looped back. The network name and the secret are never sent.
//!
//! Without a network secret the tag is a hash of the network name alone,
//! the same in every announcement of the network:
//! `BLAKE2s-128("p2pchat discovery 1\0" ‖ name)`. Anyone on the LAN can
//! make one; what it costs is bounded (below).
//!
//! With a secret, the tag is a MAC, keyed with
//! `BLAKE2s-256("p2pchat discovery key 1\0" ‖ secret)`, of the network
//! name, the announcement's first 16 bytes and the address it is sent
//! from: `BLAKE2s-MAC-128(key, "p2pchat discovery 1\0" ‖ len(name) ‖
//! name ‖ bytes 0..16 ‖ source)`, the source as 16 bytes (an IPv4 address
//! IPv4-mapped). Only peers that know the secret recognise the network's
//! announcements or can make them; a tag copied from one announcement
//! (replayed) does not fit another id, port or source address, so a
//! replay can only point at the peer that really sent it.
//!
//! # Whom to act on
//!
//! Heard peers that are not members yet are remembered, at most
//! [`MAX_HEARD`] (the one heard longest ago makes room; one unheard for
//! [`HEARD_TTL`] is forgotten), and acted on at most [`ACT_RATE`] a
//! second ([`ACT_BURST`] at once); acting on the same peer again waits
//! [`RETRY`], doubling up to [`RETRY_MAX`], until it is a member. So a
//! flood of forged announcements costs a bounded table and a few dials a
//! second, never unbounded connections or memory.
//!
//! A flood must not starve a real peer out either. Real peers are heard
//! again and again (they announce at start, and answer newcomers), made-up
//! ids once. Peers not in the table are let in at most [`ADMIT_RATE`] a
//! second ([`MAX_HEARD`] at once), and past that only when heard before
//! within the last second or two (a Bloom filter of the ids heard,
//! [`RECENT_BITS`] bits in two generations of [`RECENT_TURN`] ms, with
//! hashes keyed per run); so a peer heard again is never the one heard
//! longest ago, and the one heard most often is acted on first. This holds
//! against about 10,000 made-up ids a second (the filter then errs for
//! about one a second); a flood that repeats ids, or far faster, can still delay
//! discovery without a secret, never the peers already linked.
//!
//! - Alone, a peer joins through a peer in a network (first choice), or
//!   through a peer alone too with a larger node id: of two peers alone,
//!   the smaller id joins the larger, so that they do not join each other
//!   at once. The larger joins the smaller only if it is still alone
//!   [`ALONE_GRACE`] after first hearing it (the smaller could not reach
//!   it). Several alone peers all join the largest id they hear.
//!   Candidates heard more often come first (see above).
//! - In a network, a peer links to peers in a network it does not know
//!   (two networks found each other), and leaves alone peers to join it.
//! - Joining or leaving, it acts on nothing.
//!
//! A peer heard for the first time is answered with an announcement (at
//! most [`REPLY_RATE`] a second; one answers every newcomer heard since
//! the last), so that a newcomer learns of the peers there at once, not
//! at their next announcement. A member heard announcing (or a peer heard
//! that has become a member) is reported ([`Out::Met`]): `:peers` lists
//! the members found on the LAN on both sides of a join. A peer heard only over
//! IPv6 is acted on after [`V6_WAIT`]: the same peer over IPv4, if there
//! is one, is preferred (an IPv6 link-local address means nothing to the
//! other members it is passed on to).

use super::{Bucket, Millis, NodeId, Rng};
use blake2::digest::consts::U16;
use blake2::digest::{Digest, FixedOutput, KeyInit, Mac, Update};
use blake2::{Blake2s256, Blake2sMac};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The IPv4 group (administratively scoped, RFC 2365) and the IPv6
/// link-local group announcements go to, and their UDP port.
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(239, 255, 77, 77);
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0x7077, 0x7077);
pub const PORT: u16 = 47777;
/// The network a peer announces and looks for unless told another.
pub const DEFAULT_NETWORK: &str = "lobby";
/// Longest network name, in bytes.
pub const MAX_NETWORK: usize = 64;

const MAGIC: [u8; 4] = *b"p2pd";
/// Announcement version sent by this build.
pub const VERSION: u8 = 1;
/// Bytes in an announcement of this version.
pub const LEN: usize = 32;
/// Longest datagram taken as an announcement (a later version's).
pub const MAX_DATAGRAM: usize = 512;

/// Peers heard and not members yet, remembered at most.
pub const MAX_HEARD: usize = 64;
/// A heard peer not heard again for this long is forgotten.
pub const HEARD_TTL: Millis = 90_000;
/// Peers not remembered yet let in, a second (and [`MAX_HEARD`] at once).
pub const ADMIT_RATE: u64 = 16;
/// Bits of each generation of the filter of ids heard lately, and how
/// long a generation lasts.
pub const RECENT_BITS: usize = 1 << 19;
pub const RECENT_TURN: Millis = 1_000;
/// Peers acted on (joined through or dialled), a second and at once.
pub const ACT_RATE: u64 = 2;
pub const ACT_BURST: u64 = 4;
/// Acting on one peer again waits this, doubling up to `RETRY_MAX`.
pub const RETRY: Millis = 250;
pub const RETRY_MAX: Millis = 30_000;
/// Announcements that answer a newcomer, a second and at once.
pub const REPLY_RATE: u64 = 2;
pub const REPLY_BURST: u64 = 4;
/// Of two peers alone, the larger id joins the smaller after this.
pub const ALONE_GRACE: Millis = 2_000;
/// A peer heard over IPv6 only is acted on after this.
pub const V6_WAIT: Millis = 200;
/// Announcements after the first, counted from the start.
pub const START: [Millis; 2] = [300, 1_500];
/// Then one every this (give or take a fifth).
pub const EVERY: Millis = 20_000;

const DOMAIN: &[u8] = b"p2pchat discovery 1\0";

/// The network a peer announces and looks for: its name, and the key the
/// network secret gives, if there is one. It makes and checks the tags of
/// announcements (see the module documentation).
#[derive(Clone)]
pub struct Network {
    /// Without a secret: the one tag of every announcement.
    open: [u8; 16],
    /// With a secret: the name and the MAC key.
    keyed: Option<(Vec<u8>, [u8; 32])>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        write!(f, "Network(keyed: {})", self.keyed.is_some())
    }
}

impl Network {
    /// The network `name`, with the network `secret` if there is one.
    pub fn new(name: &str, secret: Option<&[u8]>) -> Network {
        let mut h = blake2::Blake2s::<U16>::default();
        Update::update(&mut h, DOMAIN);
        Update::update(&mut h, name.as_bytes());
        let keyed = secret.map(|secret| {
            let key = Blake2s256::new()
                .chain_update(b"p2pchat discovery key 1\0")
                .chain_update(secret)
                .finalize();
            (name.as_bytes().to_vec(), key.into())
        });
        Network {
            open: h.finalize_fixed().into(),
            keyed,
        }
    }

    /// The tag of an announcement whose first 16 bytes are `head`, sent
    /// from `source`.
    pub fn tag(&self, head: &[u8], source: IpAddr) -> [u8; 16] {
        let Some((name, key)) = &self.keyed else {
            return self.open;
        };
        let mut mac =
            <Blake2sMac<U16> as KeyInit>::new_from_slice(key).expect("a 32-byte key fits");
        let source = match source {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        Mac::update(&mut mac, DOMAIN);
        // Names are at most MAX_NETWORK (64) bytes; longer ones (not
        // valid) are cut here rather than wrap the length.
        let name = &name[..name.len().min(255)];
        Mac::update(&mut mac, &[name.len() as u8]);
        Mac::update(&mut mac, name);
        Mac::update(&mut mac, head);
        Mac::update(&mut mac, &source.octets());
        mac.finalize().into_bytes().into()
    }
}

/// Whether `name` may name a network: 1 to [`MAX_NETWORK`] bytes, no
/// control characters.
pub fn valid_network(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".into());
    }
    if name.len() > MAX_NETWORK {
        return Err(format!("longer than {MAX_NETWORK} bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err("has a control character".into());
    }
    Ok(())
}

/// One announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announcement {
    pub id: NodeId,
    /// The TCP port the sender listens on.
    pub port: u16,
    /// The sender is in a network with others (not alone).
    pub member: bool,
    pub tag: [u8; 16],
}

/// Why a datagram is not an announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    Short,
    Long,
    Magic,
    Version,
    Port,
}

impl Announcement {
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..16].copy_from_slice(&self.head());
        b[16..32].copy_from_slice(&self.tag);
        b
    }

    /// The first 16 bytes, which a keyed tag covers: magic, version,
    /// flags, port, id (as this version sends them).
    pub fn head(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = u8::from(self.member);
        b[6..8].copy_from_slice(&self.port.to_be_bytes());
        b[8..16].copy_from_slice(&self.id.0.to_be_bytes());
        b
    }

    /// Reads an announcement of any version from its first [`LEN`] bytes.
    pub fn decode(b: &[u8]) -> Result<Announcement, Bad> {
        if b.len() > MAX_DATAGRAM {
            return Err(Bad::Long);
        }
        let Some(b) = b.get(..LEN) else {
            return Err(Bad::Short);
        };
        if b[..4] != MAGIC {
            return Err(Bad::Magic);
        }
        if b[4] == 0 {
            return Err(Bad::Version);
        }
        let port = u16::from_be_bytes([b[6], b[7]]);
        if port == 0 {
            return Err(Bad::Port);
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[8..16]);
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&b[16..32]);
        Ok(Announcement {
            id: NodeId(u64::from_be_bytes(id)),
            port,
            member: b[5] & 1 != 0,
            tag,
        })
    }
}

/// Where the node stands, as discovery sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// A network of one: nobody else in it.
    Alone,
    /// In a network with others.
    Member,
    /// Joining, or leaving: acts on nothing, announces nothing.
    Busy,
}

/// What became of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// Not an announcement.
    Bad(Bad),
    /// Another network's.
    Foreign,
    /// Our own, looped back.
    Ours,
    /// A member already.
    Known,
    /// A peer not remembered yet, heard when too many were let in
    /// already: ignored.
    Unadmitted,
    /// Remembered, to act on.
    Noted,
}

/// What discovery asks of the event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Multicast our announcement, saying whether we are in a network with
    /// others: [`Discovery::announcement`] makes it for each source
    /// address.
    Announce(bool),
    /// A peer of our network is at this address (its id as announced):
    /// join through it, or link to it.
    Found(SocketAddr, NodeId),
    /// A member of our network was heard on the LAN (it announced itself,
    /// or a peer heard became a member).
    Met(NodeId),
}

/// Counts of what was heard, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub bad: u64,
    pub foreign: u64,
    pub noted: u64,
    /// Peers not let into the table (more than [`ADMIT_RATE`]).
    pub unadmitted: u64,
    pub acted: u64,
    pub announced: u64,
}

/// A peer heard and not a member yet.
#[derive(Debug, Clone)]
struct Peer {
    v4: Option<SocketAddr>,
    v6: Option<SocketAddr>,
    member: bool,
    first: Millis,
    last: Millis,
    /// Times heard (saturating).
    seen: u32,
    tries: u32,
    /// Not acted on again before this.
    after: Millis,
}

impl Peer {
    /// Where to dial it: over IPv4 if it was heard there.
    fn addr(&self) -> SocketAddr {
        self.v4.or(self.v6).expect("heard over one family at least")
    }

    /// When it may be acted on, by its own timers.
    fn ready_at(&self) -> Millis {
        let v6_only = self.v4.is_none();
        let wait = if v6_only { self.first + V6_WAIT } else { 0 };
        self.after.max(wait)
    }
}

/// The ids heard lately: a Bloom filter of two generations, four hashes
/// keyed per run (so that a sender cannot aim at bits).
struct Recent {
    cur: Box<[u64]>,
    prev: Box<[u64]>,
    key: [u64; 2],
    turn_at: Millis,
}

impl std::fmt::Debug for Recent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recent")
    }
}

impl Recent {
    fn new(rng: &mut Rng) -> Recent {
        Recent {
            cur: vec![0; RECENT_BITS / 64].into_boxed_slice(),
            prev: vec![0; RECENT_BITS / 64].into_boxed_slice(),
            key: [rng.next_u64(), rng.next_u64()],
            turn_at: 0,
        }
    }

    fn bits(&self, id: NodeId) -> [usize; 4] {
        // splitmix64's finaliser, on the id mixed with the key.
        let mix = |mut z: u64| {
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let a = mix(id.0 ^ self.key[0]);
        let b = mix(a ^ self.key[1]);
        let m = RECENT_BITS - 1;
        [
            a as usize & m,
            (a >> 32) as usize & m,
            b as usize & m,
            (b >> 32) as usize & m,
        ]
    }

    /// Whether `id` was heard lately; it is, from now on.
    fn heard(&mut self, id: NodeId, now: Millis) -> bool {
        if now >= self.turn_at {
            std::mem::swap(&mut self.cur, &mut self.prev);
            if now >= self.turn_at + RECENT_TURN {
                self.prev.fill(0);
            }
            self.cur.fill(0);
            self.turn_at = now + RECENT_TURN;
        }
        let bits = self.bits(id);
        let has = |v: &[u64]| bits.iter().all(|&b| v[b / 64] & 1 << (b % 64) != 0);
        let again = has(&self.cur) || has(&self.prev);
        for b in bits {
            self.cur[b / 64] |= 1 << (b % 64);
        }
        again
    }
}

/// One peer's discovery: see the module documentation.
#[derive(Debug)]
pub struct Discovery {
    id: NodeId,
    port: u16,
    net: Network,
    heard: BTreeMap<NodeId, Peer>,
    /// Members heard, to report ([`Out::Met`]); at most [`MAX_HEARD`].
    met: Vec<NodeId>,
    recent: Recent,
    admits: Bucket,
    acts: Bucket,
    replies: Bucket,
    /// The next announcement is due then.
    announce_at: Millis,
    /// Announcements of the start still to go: their times.
    start: Vec<Millis>,
    /// A newcomer was heard: an announcement answers it as soon as the
    /// reply rate allows (one answers every newcomer heard meanwhile).
    reply: bool,
    /// The standing the last [`Discovery::poll`] saw.
    standing: Standing,
    rng: Rng,
    pub stats: Stats,
}

impl Discovery {
    /// Discovery for node `id`, listening on TCP `port`, in network
    /// `net`; the first announcement is due at `now`.
    pub fn new(id: NodeId, port: u16, net: Network, seed: u64, now: Millis) -> Discovery {
        let mut rng = Rng::new(seed);
        Discovery {
            recent: Recent::new(&mut rng),
            id,
            port,
            net,
            heard: BTreeMap::new(),
            met: Vec::new(),
            admits: Bucket::new(ADMIT_RATE, MAX_HEARD as u64),
            acts: Bucket::new(ACT_RATE, ACT_BURST),
            replies: Bucket::new(REPLY_RATE, REPLY_BURST),
            announce_at: now,
            start: START.iter().rev().map(|t| now + t).collect(),
            reply: false,
            standing: Standing::Busy,
            rng,
            stats: Stats::default(),
        }
    }

    /// Our announcement, as we stand (`member`: in a network with
    /// others), to send from `source`.
    pub fn announcement(&self, member: bool, source: IpAddr) -> [u8; LEN] {
        let mut a = Announcement {
            id: self.id,
            port: self.port,
            member,
            tag: [0; 16],
        };
        a.tag = self.net.tag(&a.head(), source);
        a.encode()
    }

    /// A datagram arrived from `from`. `known` says whether a node id is
    /// a member of our network (present: a lost one is worth dialling).
    pub fn heard(
        &mut self,
        bytes: &[u8],
        from: SocketAddr,
        known: impl Fn(NodeId) -> bool,
        now: Millis,
    ) -> Heard {
        let a = match Announcement::decode(bytes) {
            Ok(a) => a,
            Err(e) => {
                self.stats.bad += 1;
                return Heard::Bad(e);
            }
        };
        let source = match from {
            SocketAddr::V6(v6) => v6
                .ip()
                .to_ipv4_mapped()
                .map_or(IpAddr::V6(*v6.ip()), IpAddr::V4),
            SocketAddr::V4(v4) => IpAddr::V4(*v4.ip()),
        };
        if a.tag != self.net.tag(&bytes[..16], source) {
            self.stats.foreign += 1;
            return Heard::Foreign;
        }
        if a.id == self.id {
            return Heard::Ours;
        }
        if known(a.id) {
            self.heard.remove(&a.id);
            self.meet(a.id);
            return Heard::Known;
        }
        let new = !self.heard.contains_key(&a.id);
        let again = self.recent.heard(a.id, now);
        if new && !again && !self.admits.take(1, now) {
            self.stats.unadmitted += 1;
            return Heard::Unadmitted;
        }
        self.stats.noted += 1;
        let addr = match from {
            SocketAddr::V4(v4) => SocketAddr::new((*v4.ip()).into(), a.port),
            SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(v4.into(), a.port),
                None => SocketAddr::V6(std::net::SocketAddrV6::new(
                    *v6.ip(),
                    a.port,
                    0,
                    v6.scope_id(),
                )),
            },
        };
        if new {
            self.make_room(now);
        }
        let p = self.heard.entry(a.id).or_insert(Peer {
            v4: None,
            v6: None,
            member: a.member,
            first: now,
            last: now,
            seen: u32::from(again),
            tries: 0,
            after: 0,
        });
        if addr.is_ipv4() {
            p.v4 = Some(addr);
        } else {
            p.v6 = Some(addr);
        }
        let changed = p.member != a.member;
        p.member = a.member;
        p.last = now;
        p.seen = p.seen.saturating_add(1);
        if new || changed {
            // A newcomer, or one that joined a network: tell it we are here.
            self.reply = true;
        }
        Heard::Noted
    }

    /// A member of our network was heard on the LAN: reported once polled.
    fn meet(&mut self, id: NodeId) {
        if self.met.len() < MAX_HEARD && !self.met.contains(&id) {
            self.met.push(id);
        }
    }

    /// Forgets peers not heard for `HEARD_TTL`, and makes room for one
    /// more: the one heard longest ago goes.
    fn make_room(&mut self, now: Millis) {
        self.heard.retain(|_, p| now < p.last + HEARD_TTL);
        if self.heard.len() >= MAX_HEARD
            && let Some(oldest) = self
                .heard
                .iter()
                .min_by_key(|(_, p)| p.last)
                .map(|(&id, _)| id)
        {
            self.heard.remove(&oldest);
        }
    }

    /// Whether a heard peer is one to act on, as we stand.
    fn wanted(&self, id: NodeId, p: &Peer, standing: Standing, now: Millis) -> bool {
        match standing {
            Standing::Busy => false,
            Standing::Member => p.member,
            Standing::Alone => p.member || id > self.id || now >= p.first + ALONE_GRACE,
        }
    }

    /// When a wanted peer's own timers let it be acted on.
    fn due_at(&self, id: NodeId, p: &Peer, standing: Standing) -> Option<Millis> {
        match standing {
            Standing::Busy => None,
            Standing::Member if !p.member => None,
            Standing::Alone if !p.member && id < self.id => {
                Some(p.ready_at().max(p.first + ALONE_GRACE))
            }
            _ => Some(p.ready_at()),
        }
    }

    /// The next thing to do, if any: call until it returns None, after
    /// every input and when [`Discovery::deadline`] comes. `known` is as
    /// for [`Discovery::heard`].
    pub fn poll(
        &mut self,
        standing: Standing,
        known: impl Fn(NodeId) -> bool,
        now: Millis,
    ) -> Option<Out> {
        self.standing = standing;
        if let Some(id) = self.met.pop() {
            return Some(Out::Met(id));
        }
        if standing != Standing::Busy && self.reply && self.replies.take(1, now) {
            self.reply = false;
            self.stats.announced += 1;
            return Some(Out::Announce(standing == Standing::Member));
        }
        if standing != Standing::Busy && now >= self.announce_at {
            self.announce_at = match self.start.pop() {
                Some(t) => t.max(now + 1),
                None => {
                    let jitter = self.rng.below(EVERY / 5 * 2 + 1);
                    now + EVERY - EVERY / 5 + jitter
                }
            };
            self.stats.announced += 1;
            return Some(Out::Announce(standing == Standing::Member));
        }
        if standing == Standing::Busy {
            return None;
        }
        let mut met = Vec::new();
        self.heard.retain(|&id, p| {
            let member = known(id);
            if member {
                met.push(id);
            }
            !member && now < p.last + HEARD_TTL
        });
        for id in met {
            self.meet(id);
        }
        if let Some(id) = self.met.pop() {
            return Some(Out::Met(id));
        }
        // Peers heard more often first (made-up ids are heard once); then,
        // alone, a peer in a network first, then the largest id.
        let best = self
            .heard
            .iter()
            .filter(|&(&id, p)| self.wanted(id, p, standing, now) && p.ready_at() <= now)
            .max_by_key(|&(&id, p)| (p.seen.min(3), p.member, id))
            .map(|(&id, _)| id)?;
        if !self.acts.take(1, now) {
            return None;
        }
        let p = self.heard.get_mut(&best).expect("chosen from the table");
        p.after = now + RETRY.saturating_mul(1 << p.tries.min(16)).min(RETRY_MAX);
        p.tries = p.tries.saturating_add(1);
        self.stats.acted += 1;
        Some(Out::Found(p.addr(), best))
    }

    /// When [`Discovery::poll`] next has something to do, as things stood
    /// at the last poll.
    pub fn deadline(&self, now: Millis) -> Option<Millis> {
        let standing = self.standing;
        let busy = standing == Standing::Busy;
        if !self.met.is_empty() {
            return Some(now);
        }
        let announce = (!busy).then_some(self.announce_at);
        let reply = (!busy && self.reply).then(|| self.replies.clone().ready_at(1, now));
        let act = self
            .heard
            .iter()
            .filter_map(|(&id, p)| self.due_at(id, p, standing))
            .min()
            .map(|t| t.max(self.acts.clone().ready_at(1, now)));
        [announce, reply, act].into_iter().flatten().min()
    }

    /// Peers heard and not members yet, for tests.
    pub fn heard_count(&self) -> usize {
        self.heard.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lobby, no secret: every announcement has the same tag.
    fn net() -> Network {
        Network::new(DEFAULT_NETWORK, None)
    }

    fn ann(id: u64, port: u16, member: bool) -> Vec<u8> {
        let mut a = Announcement {
            id: NodeId(id),
            port,
            member,
            tag: [0; 16],
        };
        a.tag = net().tag(&a.head(), IpAddr::from([0, 0, 0, 0]));
        a.encode().to_vec()
    }

    fn v4(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 5000))
    }

    fn none(_: NodeId) -> bool {
        false
    }

    /// Runs `poll` until it has nothing to do; returns what it asked for.
    fn drain(d: &mut Discovery, st: Standing, now: Millis) -> Vec<Out> {
        std::iter::from_fn(|| d.poll(st, none, now)).collect()
    }

    fn found(out: &[Out]) -> Vec<(SocketAddr, u64)> {
        out.iter()
            .filter_map(|o| match o {
                Out::Found(a, id) => Some((*a, id.0)),
                Out::Announce(_) | Out::Met(_) => None,
            })
            .collect()
    }

    #[test]
    fn announcements_round_trip_and_are_small() {
        let a = Announcement {
            id: NodeId(0x0102_0304_0506_0708),
            port: 40123,
            member: true,
            tag: net().tag(&[], IpAddr::from([0, 0, 0, 0])),
        };
        let b = a.encode();
        assert_eq!(b.len(), 32);
        assert_eq!(&b[..6], b"p2pd\x01\x01");
        assert_eq!(&b[6..8], &40123u16.to_be_bytes());
        assert_eq!(Announcement::decode(&b), Ok(a));
        // A later version appends: its first 32 bytes still read.
        let mut later = b.to_vec();
        later[4] = 2;
        later.extend_from_slice(&[0xee; 100]);
        assert_eq!(Announcement::decode(&later).map(|x| x.port), Ok(40123));
    }

    #[test]
    fn bad_datagrams_are_refused_by_reason() {
        let good = ann(1, 80, false);
        let with = |i: usize, v: u8| {
            let mut b = good.clone();
            b[i] = v;
            b
        };
        assert_eq!(Announcement::decode(&good[..31]), Err(Bad::Short));
        assert_eq!(Announcement::decode(&[]), Err(Bad::Short));
        assert_eq!(Announcement::decode(&[0; 513]), Err(Bad::Long));
        assert_eq!(Announcement::decode(&with(0, b'P')), Err(Bad::Magic));
        assert_eq!(Announcement::decode(&with(4, 0)), Err(Bad::Version));
        let mut no_port = good.clone();
        no_port[6..8].copy_from_slice(&[0, 0]);
        assert_eq!(Announcement::decode(&no_port), Err(Bad::Port));
        // Unknown flag bits are ignored.
        assert!(Announcement::decode(&with(5, 0xfe)).is_ok_and(|a| !a.member));
        // Total on any input: every prefix, every byte value at each place.
        for n in 0..=good.len() {
            let _ = Announcement::decode(&good[..n]);
        }
        for i in 0..good.len() {
            for v in 0..=255 {
                let _ = Announcement::decode(&with(i, v));
            }
        }
    }

    #[test]
    fn tags_depend_on_the_name_and_the_secret() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let head = ann(9, 4000, true)[..16].to_vec();
        let src = ip("10.0.0.9");
        let lobby = net().tag(&head, src);
        // Without a secret: the name alone, whatever the rest.
        assert_eq!(lobby, net().tag(&[1, 2, 3], ip("10.0.0.1")));
        assert_ne!(lobby, Network::new("Lobby", None).tag(&head, src));
        assert_ne!(lobby, Network::new("lobby2", None).tag(&head, src));
        // Known answer: the format is public, so other implementations
        // must compute the same.
        assert_eq!(
            hex(&lobby),
            hex(&{
                let mut h = blake2::Blake2s::<U16>::default();
                Update::update(&mut h, b"p2pchat discovery 1\0lobby");
                <[u8; 16]>::from(h.finalize_fixed())
            })
        );
        // With a secret: a MAC of the name, the head and the source.
        let keyed = |name: &str, secret: &[u8]| Network::new(name, Some(secret));
        let k = keyed("lobby", b"hunter2").tag(&head, src);
        assert_eq!(k, keyed("lobby", b"hunter2").tag(&head, src));
        assert_ne!(k, lobby, "keyed differs from unkeyed");
        assert_ne!(k, keyed("lobby", b"hunter3").tag(&head, src));
        assert_ne!(k, keyed("other", b"hunter2").tag(&head, src));
        assert_ne!(k, keyed("lobby", b"hunter2").tag(&head, ip("10.0.0.8")));
        assert_ne!(
            k,
            keyed("lobby", b"hunter2").tag(&ann(9, 4001, true)[..16], src)
        );
        assert_ne!(
            k,
            keyed("lobby", b"hunter2").tag(&ann(8, 4000, true)[..16], src)
        );
        assert_ne!(
            k,
            keyed("lobby", b"hunter2").tag(&ann(9, 4000, false)[..16], src)
        );
        // An IPv4 source is its IPv4-mapped IPv6 address.
        assert_eq!(
            k,
            keyed("lobby", b"hunter2").tag(&head, ip("::ffff:10.0.0.9"))
        );
        // Any secret length, the empty one too, is a key.
        assert_ne!(keyed("lobby", b"").tag(&head, src), lobby);
        assert_ne!(
            keyed("lobby", &[9; 1000]).tag(&head, src),
            keyed("lobby", &[9; 999]).tag(&head, src)
        );
        // The secret is never in the tag, nor in the debug output.
        let secret = [0x41u8; 16];
        assert_ne!(keyed("lobby", &secret).tag(&head, src), secret);
        assert_eq!(
            format!("{:?}", keyed("lobby", b"hunter2")),
            "Network(keyed: true)"
        );
    }

    /// With a secret, only announcements made with it, for the address
    /// they come from, are of the network: a copy sent from elsewhere, or
    /// with another id or port, is not.
    #[test]
    fn with_a_secret_replays_and_strangers_are_foreign() {
        let ours = Network::new("lobby", Some(b"s3cret"));
        let from = |last: u8| SocketAddr::from(([10, 0, 0, last], 5353));
        let mut d = Discovery::new(NodeId(50), 4000, ours.clone(), 1, 0);
        let alice = Discovery::new(NodeId(60), 4001, ours.clone(), 2, 0);
        let good = alice.announcement(true, from(60).ip());
        assert_eq!(d.heard(&good, from(60), none, 1), Heard::Noted);
        // The same datagram from another address (a replay): foreign.
        assert_eq!(d.heard(&good, from(66), none, 2), Heard::Foreign);
        // Altered: another port, id or flag.
        for (i, v) in [(7, 0x99), (15, 0x01), (5, 1)] {
            let mut bad = good;
            bad[i] ^= v;
            assert_eq!(d.heard(&bad, from(60), none, 3), Heard::Foreign, "byte {i}");
        }
        // Another secret, or none: foreign both ways.
        let other = Discovery::new(
            NodeId(70),
            4002,
            Network::new("lobby", Some(b"other")),
            3,
            0,
        );
        let open = Discovery::new(NodeId(80), 4003, net(), 4, 0);
        assert_eq!(
            d.heard(&other.announcement(true, from(70).ip()), from(70), none, 4),
            Heard::Foreign
        );
        assert_eq!(
            d.heard(&open.announcement(true, from(80).ip()), from(80), none, 5),
            Heard::Foreign
        );
        let mut o = Discovery::new(NodeId(81), 4004, net(), 5, 0);
        assert_eq!(o.heard(&good, from(60), none, 6), Heard::Foreign);
        assert_eq!(d.stats.foreign, 6);
        assert_eq!(d.heard_count(), 1);
        let f = found(&drain(&mut d, Standing::Alone, 10));
        assert_eq!(f, [(SocketAddr::from(([10, 0, 0, 60], 4001)), 60)]);
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn network_names() {
        assert!(valid_network("lobby").is_ok());
        assert!(valid_network("café du coin").is_ok());
        assert!(valid_network("").is_err());
        assert!(valid_network(&"x".repeat(65)).is_err());
        assert!(valid_network("a\nb").is_err());
    }

    #[test]
    fn announces_at_start_then_slowly() {
        let mut d = Discovery::new(NodeId(5), 4000, net(), 1, 1000);
        let mut at = Vec::new();
        let mut now = 1000;
        while now < 1000 + 5 * EVERY {
            if let Some(Out::Announce(member)) = d.poll(Standing::Alone, none, now) {
                assert!(!member);
                let b = d.announcement(member, IpAddr::from([10, 0, 0, 5]));
                assert_eq!(Announcement::decode(&b).unwrap().id, NodeId(5));
                at.push(now - 1000);
            }
            now = d.deadline(now).expect("always announcing").max(now + 1);
        }
        assert_eq!(&at[..3], &[0, 300, 1500]);
        for w in at[3..].windows(2) {
            let gap = w[1] - w[0];
            assert!((16_000..=24_000).contains(&gap), "{at:?}");
        }
        assert!(at.len() <= 8, "{at:?}");
    }

    #[test]
    fn nothing_is_announced_or_done_while_busy() {
        let mut d = Discovery::new(NodeId(5), 4000, net(), 1, 0);
        assert_eq!(d.poll(Standing::Busy, none, 0), None);
        d.heard(&ann(9, 80, true), v4(9), none, 0);
        assert_eq!(d.poll(Standing::Busy, none, 10), None);
        assert_eq!(d.deadline(10), None, "no wake-ups while busy");
        // Then, at once: our announcement, and the peer.
        let out = drain(&mut d, Standing::Alone, 20);
        assert!(matches!(out[0], Out::Announce(false)));
        assert_eq!(found(&out), [(SocketAddr::from(([10, 0, 0, 9], 80)), 9)]);
    }

    #[test]
    fn alone_joins_a_network_first_then_the_largest_id() {
        let mut d = Discovery::new(NodeId(50), 4000, net(), 1, 0);
        drain(&mut d, Standing::Alone, 0);
        for (id, member) in [(60, false), (70, false), (10, true)] {
            d.heard(&ann(id, 80, member), v4(id as u8), none, 1);
        }
        let out = drain(&mut d, Standing::Alone, 1);
        let f = found(&out);
        // Ten is in a network: first, though its id is the smallest;
        // then the largest alone id, then the next, each once.
        assert_eq!(f.iter().map(|x| x.1).collect::<Vec<_>>(), [10, 70, 60]);
        // Again only after the retry wait.
        assert!(found(&drain(&mut d, Standing::Alone, 1 + RETRY - 1)).is_empty());
        assert_eq!(found(&drain(&mut d, Standing::Alone, 1 + RETRY)).len(), 1);
    }

    #[test]
    fn of_two_alone_the_smaller_id_joins_and_the_larger_waits() {
        let mut big = Discovery::new(NodeId(90), 4000, net(), 1, 0);
        drain(&mut big, Standing::Alone, 0);
        big.heard(&ann(20, 80, false), v4(20), none, 100);
        let out = drain(&mut big, Standing::Alone, 100);
        // It answers (the smaller may have missed our start), and waits.
        assert!(matches!(out.as_slice(), [Out::Announce(_)]), "{out:?}");
        assert!(big.deadline(100).is_some_and(|t| t <= 100 + ALONE_GRACE));
        assert!(found(&drain(&mut big, Standing::Alone, 100 + ALONE_GRACE - 1)).is_empty());
        // Still alone then: the smaller could not reach us; we try it.
        assert_eq!(
            found(&drain(&mut big, Standing::Alone, 100 + ALONE_GRACE)),
            [(SocketAddr::from(([10, 0, 0, 20], 80)), 20)]
        );
        // Members known are forgotten, never acted on.
        let mut d = Discovery::new(NodeId(10), 4000, net(), 1, 0);
        drain(&mut d, Standing::Alone, 0);
        d.heard(&ann(20, 80, false), v4(20), none, 5);
        let known = |id: NodeId| id == NodeId(20);
        let out: Vec<Out> = std::iter::from_fn(|| d.poll(Standing::Alone, known, 5)).collect();
        assert!(found(&out).is_empty(), "{out:?}");
        assert_eq!(d.heard_count(), 0);
        assert_eq!(d.heard(&ann(20, 80, false), v4(20), known, 6), Heard::Known);
    }

    #[test]
    fn a_member_links_to_other_networks_and_lets_alone_peers_come() {
        let mut d = Discovery::new(NodeId(50), 4000, net(), 1, 0);
        drain(&mut d, Standing::Member, 0);
        d.heard(&ann(60, 80, false), v4(60), none, 1);
        d.heard(&ann(40, 81, true), v4(40), none, 1);
        let out = drain(&mut d, Standing::Member, 1);
        assert_eq!(found(&out), [(SocketAddr::from(([10, 0, 0, 40], 81)), 40)]);
        // Sixty, alone, is answered with an announcement that says we are
        // in a network.
        assert!(out.iter().any(|o| matches!(o, Out::Announce(true))));
        assert!(found(&drain(&mut d, Standing::Member, 60_000)).len() <= 1);
    }

    #[test]
    fn own_and_foreign_announcements_are_ignored() {
        let mut d = Discovery::new(NodeId(50), 4000, net(), 1, 0);
        assert_eq!(d.heard(&ann(50, 4000, true), v4(1), none, 0), Heard::Ours);
        let mut other = ann(51, 80, true);
        other[16] ^= 1;
        assert_eq!(d.heard(&other, v4(2), none, 0), Heard::Foreign);
        assert_eq!(d.heard(b"hello", v4(3), none, 0), Heard::Bad(Bad::Short));
        assert_eq!(d.heard_count(), 0);
        assert_eq!((d.stats.foreign, d.stats.bad), (1, 1));
    }

    #[test]
    fn ipv4_is_preferred_and_ipv6_waits_for_it() {
        let v6 = |scope| {
            SocketAddr::V6(std::net::SocketAddrV6::new(
                "fe80::1".parse().unwrap(),
                9,
                0,
                scope,
            ))
        };
        let mut d = Discovery::new(NodeId(50), 4000, net(), 1, 0);
        drain(&mut d, Standing::Member, 0);
        d.heard(&ann(60, 80, true), v6(3), none, 10);
        assert!(found(&drain(&mut d, Standing::Member, 10)).is_empty());
        assert_eq!(d.deadline(10), Some(10 + V6_WAIT));
        d.heard(&ann(60, 80, true), v4(6), none, 20);
        assert_eq!(
            found(&drain(&mut d, Standing::Member, 20)),
            [(SocketAddr::from(([10, 0, 0, 6], 80)), 60)]
        );
        // IPv6 only: after the wait, with its scope (the interface).
        d.heard(&ann(70, 81, true), v6(3), none, 30);
        let f = found(&drain(&mut d, Standing::Member, 30 + V6_WAIT));
        let want = std::net::SocketAddrV6::new("fe80::1".parse().unwrap(), 81, 0, 3);
        assert_eq!(f, [(SocketAddr::V6(want), 70)]);
    }

    #[test]
    fn a_flood_of_forgeries_stays_bounded() {
        let mut d = Discovery::new(NodeId(1 << 40), 4000, net(), 1, 0);
        let mut rng = Rng::new(7);
        let (mut acted, mut announced) = (0, 0);
        // 10,000 a second for 60 s: new ids, addresses and ports each time.
        for ms in 0..60_000u64 {
            for _ in 0..10 {
                let id = rng.next_u64();
                let member = id & 1 == 0;
                let from = SocketAddr::from(([10, 0, (id >> 8) as u8, id as u8], 1));
                d.heard(&ann(id, (id >> 16) as u16 | 1, member), from, none, ms);
                assert!(d.heard_count() <= MAX_HEARD);
            }
            for o in drain(&mut d, Standing::Member, ms) {
                match o {
                    Out::Found(..) => acted += 1,
                    Out::Announce(_) => announced += 1,
                    Out::Met(_) => unreachable!("no member"),
                }
            }
        }
        // At most the act rate, and the reply rate plus the schedule.
        assert!(acted <= ACT_BURST + 60 * ACT_RATE, "{acted}");
        assert!(
            announced <= REPLY_BURST + 60 * REPLY_RATE + 10,
            "{announced}"
        );
        assert_eq!(d.stats.noted + d.stats.unadmitted, 600_000);
        // The admission rate, and the filter's few errors a second.
        let most = MAX_HEARD as u64 + 60 * (ADMIT_RATE + 2);
        assert!(d.stats.noted <= most, "{:?}", d.stats);
    }

    #[test]
    fn a_newcomer_is_answered_even_when_replies_ran_out() {
        let mut d = Discovery::new(NodeId(50), 4000, net(), 1, 0);
        drain(&mut d, Standing::Member, 0);
        // Newcomers use up the replies...
        for id in 0..20 {
            d.heard(&ann(100 + id, 80, false), v4(1), none, 10);
        }
        let replies = |out: &[Out]| out.iter().filter(|o| matches!(o, Out::Announce(_))).count();
        assert_eq!(replies(&drain(&mut d, Standing::Member, 10)), 1);
        for id in 0..20 {
            d.heard(&ann(200 + id, 80, false), v4(1), none, 11);
            drain(&mut d, Standing::Member, 11);
        }
        let spent = replies(&drain(&mut d, Standing::Member, 12));
        assert_eq!(spent, 0, "the burst is spent");
        // ...then one more: answered as soon as there is a reply to give.
        d.heard(&ann(7, 80, false), v4(7), none, 20);
        let at = d.deadline(20).unwrap();
        assert!(at <= 20 + 1000 / REPLY_RATE, "{at}");
        assert!(matches!(
            d.poll(Standing::Member, none, at),
            Some(Out::Announce(_))
        ));
    }

    #[test]
    fn forgotten_when_unheard() {
        let mut d = Discovery::new(NodeId(50), 4000, net(), 1, 0);
        d.heard(&ann(60, 80, false), v4(60), none, 0);
        assert_eq!(d.heard_count(), 1);
        drain(&mut d, Standing::Member, HEARD_TTL);
        assert_eq!(d.heard_count(), 0);
    }

    /// A flood of made-up peers does not starve a real one out: heard
    /// again and again, it stays in the table and is acted on first.
    #[test]
    fn a_real_peer_is_found_in_a_flood() {
        let mut d = Discovery::new(NodeId(50), 4000, net(), 1, 0);
        let mut rng = Rng::new(9);
        let mut joined_at = None;
        // 10,000 forgeries a second, all "in a network" with ids above the
        // real peer's; the real one (id 60, in a network) answers a
        // newcomer every half second, as members do in a flood.
        'flood: for ms in 0..10_000u64 {
            for _ in 0..10 {
                let id = rng.next_u64() | 1 << 63;
                let from = SocketAddr::from(([10, 0, 1, id as u8], 1));
                d.heard(&ann(id, 80, true), from, none, ms);
            }
            if ms % 500 == 100 {
                d.heard(&ann(60, 4060, true), v4(60), none, ms);
            }
            for o in drain(&mut d, Standing::Alone, ms) {
                if let Out::Found(_, NodeId(60)) = o {
                    joined_at = Some(ms);
                    break 'flood;
                }
            }
        }
        // Heard again at 600 ms: let in, and acted on as soon as the act
        // rate allows (the forgeries let in used it up).
        let at = joined_at.expect("the real peer is acted on in the flood");
        assert!(at <= 1_200, "{at}");
    }

    /// Members heard on the LAN are reported, on both sides of a join:
    /// one that announces, and a peer heard that has become a member.
    #[test]
    fn members_heard_are_met() {
        let mut d = Discovery::new(NodeId(50), 4000, net(), 1, 0);
        drain(&mut d, Standing::Member, 0);
        let known = |id: NodeId| id == NodeId(60) || id == NodeId(70);
        assert_eq!(d.heard(&ann(60, 80, true), v4(60), known, 1), Heard::Known);
        assert_eq!(
            d.poll(Standing::Member, known, 1),
            Some(Out::Met(NodeId(60)))
        );
        // Seventy is heard alone, then joins us.
        assert_eq!(d.heard(&ann(70, 80, false), v4(70), none, 2), Heard::Noted);
        let out: Vec<Out> = std::iter::from_fn(|| d.poll(Standing::Member, known, 3)).collect();
        assert!(out.contains(&Out::Met(NodeId(70))), "{out:?}");
        assert_eq!(d.heard_count(), 0);
    }
}
