//! Private messages: `:msg NAME TEXT`, end-to-end encrypted to NAME's key
//! and signed by ours, acknowledged by NAME, and kept for an absent NAME by
//! the peers that follow NAME on the ring of node ids.
//!
//! How a message travels. To NAME present, the sender routes the
//! PRIVATE payload (type 20) to NAME's node id ([`Dm::take_routed`]; the
//! node sends it down the way [`crate::proto::route`] knows, or floods it
//! when it knows none); if NAME's acknowledgement has not come within
//! [`ROUTE_WAIT`], it floods it as a PRIVATE event, which every peer
//! relays, as it relays chat, and the holders keep. To NAME absent, it
//! floods it at once. Only NAME can open it. NAME shows it, once and in
//! order per sender, and floods a RECEIVED event (type 21), which the
//! sender shows as "delivered" (end to end, not "handed to a
//! neighbour"). The acknowledgement stays an event: signed by NAME, so
//! that nobody else can make the sender and the holders drop a message.
//!
//! Holding. Every peer places the name on the ring of node ids at
//! `hash(NAME)` (BLAKE2s); the [`HOLDERS`] present members whose ids follow
//! it (the successors, as in Chord; the sender counts too) keep a copy of
//! every PRIVATE to NAME until NAME's RECEIVED covers it, or it is
//! [`MAX_AGE`] old. When NAME joins, every holder routes its copies to
//! it, in order (flooded as PRIVATE events of its own if not
//! acknowledged within [`ROUTE_WAIT`]): NAME opens them and
//! acknowledges, every copy is dropped, and the sender, if still there,
//! is told. When the holders change (a holder leaves or crashes, a new
//! peer comes between), the first of the old holders still present passes
//! its copies on, so the new holders have them. A copy's age travels with
//! it, so passing it on never makes it younger. Each copy names the
//! holders its sender chose: a peer named keeps it even if it has not
//! yet seen the change that made it a holder (a LEAVE still on its way).
//!
//! Once and in order. Messages are numbered per sender (its node id, one
//! run) and recipient, from 1. Each also says (inside, signed) the first
//! number the sender has had no acknowledgement for, so a recipient that
//! never heard of the sender knows where to start. Later ones wait (at
//! most [`MAX_WAITING`], [`GAP_WAIT`]) for the ones before them; a copy
//! already shown is acknowledged again and not shown.
//!
//! Which key. A message is encrypted to the key known for NAME: the key
//! of the member present under that name, or the key NAME had when this
//! peer last met it (known_peers). To a name whose key this peer never
//! saw, a message waits, unsealed, with its sender alone (in memory and
//! in the sender's store, never on the wire): nothing can be encrypted
//! to a key nobody has given us. When NAME is first seen, the node binds
//! the key it comes with to the name (trust on first use, as for every
//! name) and [`Net::key_of_name`] gives it: the waiting messages are
//! sealed to it, in order, and sent as if just written. A member that
//! comes under NAME with another key than the one bound is not found
//! under NAME, so it gets nothing.
//!
//! Shown once across a crash. With a store ([`Dm::set_durable`]), a
//! message to us is recorded as shown (per sender run, up to which
//! number) and the record written and synced before it is shown and
//! acknowledged; after a restart, a copy already recorded is only
//! acknowledged again.
//!
//! What is protected: the text, and who wrote it (the sender's name and
//! key are inside, signed). What is not: the sender's node id, the
//! recipient's name, the size and the time, which every peer sees.
//!
//! Payloads (after the event header, see [`crate::proto::wire`]):
//!
//! ```text
//! 20 PRIVATE   to:str, from:u64, n:u64, age:u64 (ms),
//!              count:u8, count × holder:u64, sealed (to the end)
//! 21 RECEIVED  count:u8, count × (from:u64, upto:u64)   "I showed from's
//!              messages to me up to upto"
//! ```
//!
//! `sealed` is one `Noise_N_25519_ChaChaPoly_BLAKE2s` message to NAME's
//! key (its X25519 form), with prologue `"p2pchat private v1\0" ‖ to ‖
//! from ‖ n`. Inside: `key:32, nonce:u64, first:u64, name:str, sig:64,
//! text` (to the end): the sender's identity (its node id is
//! `crypto::node_id(key, nonce)`, which must be `from`), and its Ed25519
//! signature of [`signed`].

use super::{MsgId, Net, Show};
use crate::proto::crypto::{self, Identity, PublicKey};
use crate::proto::wire::{self, Body};
use crate::proto::{Millis, NodeId, Remember};
use blake2::{Blake2s256, Digest};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Event types.
pub const PRIVATE: u8 = 20;
pub const RECEIVED: u8 = 21;
/// Peers that hold a copy for an absent recipient.
pub const HOLDERS: usize = 3;
/// Longest private message, in bytes.
pub const MAX_TEXT: usize = wire::MAX_TEXT;
/// Copies one peer holds for one recipient, and our own undelivered
/// messages to one name, at most.
pub const MAX_PER_NAME: usize = 100;
/// Copies one peer holds in all, and our own undelivered messages in all,
/// at most.
pub const MAX_HELD: usize = 1000;
/// A copy this old is dropped (a week).
pub const MAX_AGE: Millis = 7 * 24 * 3600 * 1000;
/// Messages a recipient keeps while one before them is missing, at most.
pub const MAX_WAITING: usize = 256;
/// How long a recipient waits for a missing message before showing the
/// ones after it.
pub const GAP_WAIT: Millis = 60_000;
/// Senders a recipient remembers where it got to with, and (sender,
/// recipient) pairs a holder remembers the acknowledgements of.
const REMEMBERED: usize = 4096;
/// Holders one copy names, at most.
const MAX_NAMED: usize = 16;
/// How long a message routed to its recipient waits for the
/// acknowledgement before it is flooded (and so reaches the holders).
pub const ROUTE_WAIT: Millis = 5_000;
/// Acknowledgements in one RECEIVED event, at most.
const ACKS_PER_EVENT: usize = 64;

const PATTERN: &str = "Noise_N_25519_ChaChaPoly_BLAKE2s";
const STORE_MAGIC: &[u8] = b"p2pchat-private-v2\n";
/// The store before messages could wait for a key and recipients kept
/// what they showed: still read.
const STORE_MAGIC_V1: &[u8] = b"p2pchat-private-v1\n";
const CONTEXT: &[u8] = b"p2pchat private v1\0";

/// A PRIVATE event's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Private {
    pub to: String,
    pub from: NodeId,
    pub n: u64,
    /// How old the message was when this copy was sent, in ms.
    pub age: Millis,
    /// The holders, as whoever sent this copy sees them.
    pub holders: Vec<NodeId>,
    pub sealed: Vec<u8>,
}

impl Private {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.to.len() + self.sealed.len());
        put_str(&mut out, &self.to);
        out.extend_from_slice(&self.from.0.to_be_bytes());
        out.extend_from_slice(&self.n.to_be_bytes());
        out.extend_from_slice(&self.age.to_be_bytes());
        let holders = &self.holders[..self.holders.len().min(MAX_NAMED)];
        out.push(holders.len() as u8);
        for h in holders {
            out.extend_from_slice(&h.0.to_be_bytes());
        }
        out.extend_from_slice(&self.sealed);
        out
    }

    /// Total on any input: `None` for anything malformed.
    pub fn decode(mut r: &[u8]) -> Option<Private> {
        let to = get_str(&mut r)?;
        let from = NodeId(get_u64(&mut r)?);
        let n = get_u64(&mut r)?;
        let age = get_u64(&mut r)?;
        let count = usize::from(*take(&mut r, 1)?.first()?);
        if count > MAX_NAMED {
            return None;
        }
        let mut holders = Vec::with_capacity(count);
        for _ in 0..count {
            holders.push(NodeId(get_u64(&mut r)?));
        }
        (wire::valid_name(&to) && n > 0).then(|| Private {
            to,
            from,
            n,
            age,
            holders,
            sealed: r.to_vec(),
        })
    }

    fn prologue(&self) -> Vec<u8> {
        let mut p = CONTEXT.to_vec();
        put_str(&mut p, &self.to);
        p.extend_from_slice(&self.from.0.to_be_bytes());
        p.extend_from_slice(&self.n.to_be_bytes());
        p
    }
}

/// A RECEIVED event's payload.
pub fn encode_received(acks: &[(NodeId, u64)]) -> Vec<u8> {
    let acks = &acks[..acks.len().min(ACKS_PER_EVENT)];
    let mut out = vec![acks.len() as u8];
    for (from, upto) in acks {
        out.extend_from_slice(&from.0.to_be_bytes());
        out.extend_from_slice(&upto.to_be_bytes());
    }
    out
}

pub fn decode_received(mut r: &[u8]) -> Option<Vec<(NodeId, u64)>> {
    let (&count, rest) = r.split_first()?;
    r = rest;
    let mut v = Vec::with_capacity(usize::from(count).min(ACKS_PER_EVENT));
    for _ in 0..count {
        v.push((NodeId(get_u64(&mut r)?), get_u64(&mut r)?));
    }
    r.is_empty().then_some(v)
}

/// What a sealed message holds, opened and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub key: PublicKey,
    pub first: u64,
    pub name: String,
    pub text: String,
}

/// What the sender signs: the recipient (key and name), the message's
/// place (sender id, number, first unacknowledged), the sender's name
/// and the text.
pub fn signed(to_key: &PublicKey, p: &Private, first: u64, name: &str, text: &str) -> Vec<u8> {
    let mut m = CONTEXT.to_vec();
    m.extend_from_slice(to_key);
    put_str(&mut m, &p.to);
    m.extend_from_slice(&p.from.0.to_be_bytes());
    m.extend_from_slice(&p.n.to_be_bytes());
    m.extend_from_slice(&first.to_be_bytes());
    put_str(&mut m, name);
    m.extend_from_slice(text.as_bytes());
    m
}

/// Seals `text` from `ident` (named `name`) into `p`, to `to_key`.
/// `None` if `to_key` is no usable key.
pub fn seal(
    ident: &Identity,
    name: &str,
    to_key: &PublicKey,
    p: &mut Private,
    first: u64,
    text: &str,
) -> Option<()> {
    seal_as(ident, ident.nonce(), name, to_key, p, first, text)
}

/// [`seal`], as the run of `ident`'s key with `nonce` (whose id is
/// `p.from`): a message written in an earlier run, sealed now.
fn seal_as(
    ident: &Identity,
    nonce: u64,
    name: &str,
    to_key: &PublicKey,
    p: &mut Private,
    first: u64,
    text: &str,
) -> Option<()> {
    let rs = crypto::dh_public(to_key)?;
    let sig = ident.sign(&signed(to_key, p, first, name, text));
    let mut plain = Vec::with_capacity(150 + text.len());
    plain.extend_from_slice(&ident.public());
    plain.extend_from_slice(&nonce.to_be_bytes());
    plain.extend_from_slice(&first.to_be_bytes());
    put_str(&mut plain, name);
    plain.extend_from_slice(&sig);
    plain.extend_from_slice(text.as_bytes());
    let prologue = p.prologue();
    let mut hs = snow::Builder::new(PATTERN.parse().ok()?)
        .remote_public_key(&rs)
        .ok()?
        .prologue(&prologue)
        .ok()?
        .build_initiator()
        .ok()?;
    let mut buf = vec![0; plain.len() + 64];
    let len = hs.write_message(&plain, &mut buf).ok()?;
    buf.truncate(len);
    p.sealed = buf;
    Some(())
}

/// Opens `p`, sealed to `ident`: decrypts it, checks that its sender is
/// `p.from` and that the sender signed it, to us.
pub fn open(ident: &Identity, p: &Private) -> Result<Opened, &'static str> {
    let sk = ident.dh_secret();
    let prologue = p.prologue();
    let params = PATTERN.parse().map_err(|_| "pattern")?;
    let mut hs = snow::Builder::new(params)
        .local_private_key(&sk)
        .and_then(|b| b.prologue(&prologue))
        .and_then(|b| b.build_responder())
        .map_err(|_| "pattern")?;
    let mut plain = vec![0; p.sealed.len()];
    let len = hs
        .read_message(&p.sealed, &mut plain)
        .map_err(|_| "not sealed to this peer's key")?;
    let mut r = &plain[..len];
    let key: PublicKey = take(&mut r, 32)
        .and_then(|k| k.try_into().ok())
        .ok_or("truncated")?;
    let nonce = get_u64(&mut r).ok_or("truncated")?;
    let first = get_u64(&mut r).ok_or("truncated")?;
    let name = get_str(&mut r).ok_or("truncated")?;
    let sig: crypto::Sig = take(&mut r, 64)
        .and_then(|s| s.try_into().ok())
        .ok_or("truncated")?;
    let text = String::from_utf8(r.to_vec()).map_err(|_| "text not UTF-8")?;
    if crypto::node_id(&key, nonce) != p.from {
        return Err("sender id not its key's");
    }
    let vk = crypto::verifying(&key).ok_or("bad sender key")?;
    let m = signed(&ident.public(), p, first, &name, &text);
    if !crypto::verify(&vk, &m, &sig) {
        return Err("bad signature");
    }
    if !wire::valid_name(&name) || text.len() > MAX_TEXT || first == 0 || first > p.n {
        return Err("out of bounds");
    }
    Ok(Opened {
        key,
        first,
        name,
        text,
    })
}

/// Where `name` sits on the ring of node ids.
pub fn ring_point(name: &str) -> u64 {
    let mut h = Blake2s256::new();
    h.update(b"p2pchat ring");
    h.update(name.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// The `k` ids of `ids` that follow `point` on the ring (the first at or
/// after it, going round), in ring order.
pub fn successors(point: u64, ids: &[NodeId], k: usize) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = ids.to_vec();
    v.sort();
    v.dedup();
    let start = v.partition_point(|id| id.0 < point);
    v.iter()
        .cycle()
        .skip(start)
        .take(k.min(v.len()))
        .copied()
        .collect()
}

/// One of our messages, not yet acknowledged.
#[derive(Debug, Clone)]
struct Sent {
    to: String,
    n: u64,
    text: String,
    at: Millis,
    /// The message as sent (its `from` is our id in the run that sent
    /// it), passed on again after a restart and when `to` joins. Not
    /// sealed yet (`sealed` empty) while no key is known for `to`.
    p: Private,
    /// The nonce of the run that wrote it: its id is `p.from`.
    nonce: u64,
    /// Routed to its recipient: flooded at this time if not acknowledged
    /// by then.
    flood_at: Option<Millis>,
}

impl Sent {
    /// Waiting for a key to be sealed to.
    fn waiting(&self) -> bool {
        self.p.sealed.is_empty()
    }
}

/// A copy held for an absent recipient.
#[derive(Debug, Clone)]
struct Held {
    p: Private,
    /// When we got it (its age then is `p.age`).
    at: Millis,
}

impl Held {
    fn age(&self, now: Millis) -> Millis {
        self.p.age.saturating_add(now.saturating_sub(self.at))
    }
}

/// What we hold for one name.
#[derive(Debug, Default)]
struct Box_ {
    /// By (sender, number): in order per sender.
    copies: BTreeMap<(NodeId, u64), Held>,
    /// The holders as last computed.
    holders: Vec<NodeId>,
    /// The member under the name the copies were last passed to.
    handed: Option<NodeId>,
    /// The copies were routed to it: flooded at this time if some are
    /// not acknowledged by then.
    flood_at: Option<Millis>,
}

/// A message shown later: one before it is missing.
#[derive(Debug, Clone)]
struct Waiting {
    from_name: String,
    text: String,
    since: Millis,
    said: Option<u64>,
}

/// The private messages application. See the module documentation.
#[derive(Debug)]
pub struct Dm {
    ident: Identity,
    holders: usize,
    /// Our messages not yet acknowledged, oldest first.
    sent: VecDeque<Sent>,
    /// The next number for each name we wrote to (this run).
    next: HashMap<String, u64>,
    /// Copies held for absent recipients, by name.
    held: BTreeMap<String, Box_>,
    held_total: usize,
    /// Acknowledged: (sender, recipient) → up to which number, for
    /// copies that come after the acknowledgement.
    acked: HashMap<(NodeId, String), u64>,
    acked_order: VecDeque<(NodeId, String)>,
    /// As recipient: per sender, the last number shown.
    got: Remember<u64>,
    waiting: BTreeMap<(NodeId, u64), Waiting>,
    /// Acknowledgements to send, per sender.
    acks: BTreeMap<NodeId, u64>,
    /// Senders whose messages we could not open, told once each.
    unreadable: Remember<()>,
    /// The members changed: the holders may have.
    dirty: bool,
    /// The holders ran out of room at least once (told once).
    told_full: bool,
    /// For each name we wrote to, the member under it our undelivered
    /// messages were last passed to.
    sent_handed: HashMap<String, NodeId>,
    /// Our undelivered messages are to be passed on again (restored
    /// after a restart).
    resend: bool,
    /// What we hold or sent changed since [`Dm::save`].
    unsaved: bool,
    /// What we show is kept (see [`Dm::set_durable`]).
    durable: bool,
    /// Payloads of PRIVATE events to route to a member present (see
    /// [`Dm::take_routed`]).
    routed: Vec<(NodeId, Vec<u8>)>,
    /// Private messages to us, to be shown once what we showed is kept,
    /// in order (at most [`MAX_WAITING`] arrive between two saves: they
    /// come from `waiting` or straight in, one loop turn at a time).
    unshown: Vec<Show>,
}

impl Dm {
    pub fn new(ident: Identity) -> Dm {
        Dm::with_holders(ident, HOLDERS)
    }

    /// With `holders` copies per absent recipient.
    pub fn with_holders(ident: Identity, holders: usize) -> Dm {
        Dm {
            ident,
            holders: holders.max(1),
            sent: VecDeque::new(),
            next: HashMap::new(),
            held: BTreeMap::new(),
            held_total: 0,
            acked: HashMap::new(),
            acked_order: VecDeque::new(),
            got: Remember::new(REMEMBERED),
            waiting: BTreeMap::new(),
            acks: BTreeMap::new(),
            unreadable: Remember::new(256),
            dirty: false,
            told_full: false,
            sent_handed: HashMap::new(),
            resend: false,
            unsaved: false,
            durable: false,
            routed: Vec::new(),
            unshown: Vec::new(),
        }
    }

    /// `:msg NAME TEXT`.
    pub fn send(&mut self, net: &mut impl Net, to: &str, text: &str, now: Millis) {
        let why = if to == net.me() {
            Some("msg: that is you".to_owned())
        } else if !wire::valid_name(to) {
            Some(format!("msg: {to:?} is not a valid name"))
        } else if text.len() > MAX_TEXT {
            Some(format!("msg: not sent: longer than {MAX_TEXT} bytes"))
        } else {
            None
        };
        if let Some(why) = why {
            return net.show(Show::Warning(why));
        }
        let key = net.key_of_name(to);
        if key.is_some() {
            // Ones that waited for this key go first.
            self.seal_waiting(net, now);
        }
        let mine = self.sent.iter().filter(|s| s.to == to).count();
        if mine >= MAX_PER_NAME || self.sent.len() >= MAX_HELD {
            let why = format!(
                "msg: not sent: {} messages of yours are waiting{}; at most {} ({} to one name)",
                if mine >= MAX_PER_NAME {
                    mine
                } else {
                    self.sent.len()
                },
                if mine >= MAX_PER_NAME {
                    format!(" for {to}")
                } else {
                    String::new()
                },
                MAX_HELD,
                MAX_PER_NAME
            );
            return net.show(Show::Warning(why));
        }
        let n = *self.next.get(to).unwrap_or(&1);
        let me = net.id();
        let mut p = Private {
            to: to.to_owned(),
            from: me,
            n,
            age: 0,
            holders: successors(ring_point(to), &net.ring(), self.holders),
            sealed: Vec::new(),
        };
        if let Some(key) = key {
            let first = self.first_unacked(to, me).unwrap_or(n);
            if seal(&self.ident, net.me(), &key, &mut p, first, text).is_none() {
                let why = format!("msg: not sent: the key known for {to} is not usable");
                return net.show(Show::Warning(why));
            }
        }
        self.next.insert(to.to_owned(), n + 1);
        self.sent.push_back(Sent {
            to: to.to_owned(),
            n,
            text: text.to_owned(),
            at: now,
            p: p.clone(),
            nonce: self.ident.nonce(),
            flood_at: None,
        });
        self.unsaved = true;
        net.show(Show::Private {
            from: net.me().to_owned(),
            to: to.to_owned(),
            text: text.to_owned(),
            own: true,
            said: None,
            id: Some(MsgId::Private {
                from: me,
                n,
                to: to.to_owned(),
            }),
        });
        if key.is_none() {
            // Kept here, in the clear, until a key for `to` is known:
            // then sealed to it and sent (see `seal_waiting`).
            net.show(Show::Delivery {
                to: to.to_owned(),
                n,
                state: "waiting".into(),
            });
            return net.show(Show::Info(format!(
                "msg: queued until {to} is first seen (no key yet to encrypt to)"
            )));
        }
        self.dispatch(net, p, now);
    }

    /// The first of our messages to `to` from our run `from` not yet
    /// acknowledged.
    fn first_unacked(&self, to: &str, from: NodeId) -> Option<u64> {
        self.sent
            .iter()
            .filter(|s| s.to == to && s.p.from == from)
            .map(|s| s.n)
            .min()
    }

    /// Sends `p`, ours, sealed, and tells the user where it is: routed
    /// to its recipient if present, else flooded to its holders (and
    /// kept, if we are one of them).
    fn dispatch(&mut self, net: &mut impl Net, p: Private, now: Millis) {
        let here = net.find(&p.to);
        net.show(Show::Delivery {
            to: p.to.clone(),
            n: p.n,
            state: if here.is_some() { "sent" } else { "queued" }.into(),
        });
        match here {
            Some(id) => {
                self.sent_handed.insert(p.to.clone(), id);
                self.route_own(id, &p, now);
            }
            None => self.flood(net, p, now),
        }
    }

    /// Routes `p`, ours, to member `id`, its recipient; flooded if not
    /// acknowledged within [`ROUTE_WAIT`].
    fn route_own(&mut self, id: NodeId, p: &Private, now: Millis) {
        self.routed.push((id, p.encode()));
        let mine = |s: &&mut Sent| s.p.from == p.from && s.n == p.n && s.to == p.to;
        if let Some(s) = self.sent.iter_mut().find(mine) {
            s.flood_at = Some(now + ROUTE_WAIT);
        }
    }

    /// Floods `p` to every peer (its holders keep it), and keeps a copy
    /// if we are one of them.
    fn flood(&mut self, net: &mut impl Net, p: Private, now: Millis) {
        net.publish(Body::Other {
            kind: PRIVATE,
            payload: p.encode(),
        });
        self.hold(net, p, now);
    }

    /// What to route: (member, PRIVATE payload), for the node to send
    /// down the link towards the member, or to flood when it knows none.
    pub fn take_routed(&mut self) -> Vec<(NodeId, Vec<u8>)> {
        std::mem::take(&mut self.routed)
    }

    /// A PRIVATE routed to us (see [`crate::proto::route`]); `wall` as
    /// for [`Dm::delivered`].
    pub fn routed(&mut self, net: &mut impl Net, payload: &[u8], wall: Option<u64>, now: Millis) {
        if let Some(p) = Private::decode(payload) {
            let said = wall.map(|t| t.saturating_sub(p.age));
            self.on_private(net, p, said, now);
        }
    }

    /// Seals and sends, in order, our messages that waited for a key,
    /// to the names whose key is known now: the key of the member
    /// present under the name (bound to it on first sight, as every
    /// name is), or the one known_peers has for it.
    fn seal_waiting(&mut self, net: &mut impl Net, now: Millis) {
        let name = net.me().to_owned();
        let mut i = 0;
        while i < self.sent.len() {
            let s = &self.sent[i];
            let Some(key) = s.waiting().then(|| net.key_of_name(&s.to)).flatten() else {
                i += 1;
                continue;
            };
            let first = self.first_unacked(&s.to, s.p.from).unwrap_or(s.n);
            let s = &mut self.sent[i];
            s.p.holders = successors(ring_point(&s.to), &net.ring(), self.holders);
            let sealed = seal_as(&self.ident, s.nonce, &name, &key, &mut s.p, first, &s.text);
            self.unsaved = true;
            if sealed.is_none() {
                let s = self.sent.remove(i).expect("in range");
                net.show(Show::Warning(format!(
                    "msg: private {} to {} not sent: the key known for {} is not usable",
                    s.n, s.to, s.to
                )));
                continue;
            }
            let mut p = s.p.clone();
            p.age = now.saturating_sub(s.at).max(p.age);
            self.dispatch(net, p, now);
            i += 1;
        }
    }

    /// `:msgs`: our messages not yet delivered, and what we hold.
    pub fn list(&mut self, net: &mut impl Net, now: Millis) {
        if self.sent.is_empty() {
            net.show(Show::Info("no private messages of yours waiting".into()));
        }
        for s in &self.sent {
            let waiting = format!(
                "queued until {} is first seen (no key yet to encrypt to)",
                s.to
            );
            let state = if s.waiting() {
                waiting.as_str()
            } else if net.find(&s.to).is_some() {
                "sent, not acknowledged yet"
            } else {
                "queued: held until it joins"
            };
            let mut text = s.text.clone();
            if text.chars().count() > 40 {
                text = text.chars().take(40).collect::<String>() + "...";
            }
            let ago = now.saturating_sub(s.at) / 1000;
            net.show(Show::Info(format!(
                "private {} to {}: {state} ({ago}s ago): {text}",
                s.n, s.to
            )));
        }
        {
            net.show(Show::Info(format!(
                "holding {} private message{} for {} absent member{}",
                self.held_total,
                if self.held_total == 1 { "" } else { "s" },
                self.held.len(),
                if self.held.len() == 1 { "" } else { "s" }
            )));
        }
    }

    /// An event of ours of `kind` (20-29) from `origin` was delivered;
    /// `wall`: the wall clock now (ms since 1970), if known.
    pub fn delivered(
        &mut self,
        net: &mut impl Net,
        origin: NodeId,
        kind: u8,
        payload: &[u8],
        wall: Option<u64>,
        now: Millis,
    ) {
        match kind {
            PRIVATE => {
                if let Some(p) = Private::decode(payload) {
                    // Said as long ago as the age its copy carries (the
                    // time holders kept it for us).
                    let said = wall.map(|t| t.saturating_sub(p.age));
                    self.on_private(net, p, said, now);
                }
            }
            RECEIVED => {
                if let Some(acks) = decode_received(payload) {
                    let name = net.name_of(origin);
                    if wire::valid_name(&name) {
                        self.on_received(net, &name, &acks);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_private(&mut self, net: &mut impl Net, p: Private, said: Option<u64>, now: Millis) {
        if p.to == net.me() {
            return self.receive(net, p, said, now);
        }
        self.hold(net, p, now);
    }

    /// A message to us, said at `said` (ms since 1970) if known.
    fn receive(&mut self, net: &mut impl Net, p: Private, said: Option<u64>, now: Millis) {
        let o = match open(&self.ident, &p) {
            Ok(o) => o,
            Err(why) => {
                if !self.unreadable.contains(p.from) {
                    self.unreadable.insert(p.from, ());
                    net.show(Show::Warning(format!(
                        "a private message to you from {} cannot be opened: {why}",
                        net.name_of(p.from)
                    )));
                }
                return;
            }
        };
        // The name it gives shown only if its key is the one known for it.
        let from_name = match net.key_of_name(&o.name) {
            Some(k) if k != o.key => format!("{} (claims to be {})", p.from, o.name),
            _ => o.name.clone(),
        };
        // What came before `first` was acknowledged (by us, in this run
        // or an earlier one): nothing to wait for.
        let mut done = self.got.get(p.from).copied().unwrap_or(0);
        if done + 1 < o.first {
            done = o.first - 1;
            self.got.insert(p.from, done);
        }
        let expect = done + 1;
        if p.n < expect {
            // Shown already: say so again, so that its holders drop it.
            self.ack(p.from, done);
            return self.drain(net, p.from);
        }
        if p.n > expect {
            if self.waiting.len() < MAX_WAITING {
                self.waiting.entry((p.from, p.n)).or_insert(Waiting {
                    from_name,
                    text: o.text,
                    since: now,
                    said,
                });
            }
            return self.drain(net, p.from);
        }
        self.show_private(
            net,
            Show::Private {
                from: from_name,
                to: p.to.clone(),
                text: o.text,
                own: false,
                said,
                id: Some(MsgId::Private {
                    from: p.from,
                    n: p.n,
                    to: p.to.clone(),
                }),
            },
        );
        self.got.insert(p.from, p.n);
        self.ack(p.from, p.n);
        self.drain(net, p.from);
    }

    /// Shows what waited for the one just shown.
    fn drain(&mut self, net: &mut impl Net, from: NodeId) {
        loop {
            let done = self.got.get(from).copied().unwrap_or(0);
            // Copies of ones shown meanwhile go.
            while let Some((&(f, n), _)) = self.waiting.range((from, 0)..=(from, done)).next() {
                self.waiting.remove(&(f, n));
            }
            let Some(w) = self.waiting.remove(&(from, done + 1)) else {
                return;
            };
            let me = net.me().to_owned();
            self.show_private(
                net,
                Show::Private {
                    from: w.from_name,
                    to: me.clone(),
                    text: w.text,
                    own: false,
                    said: w.said,
                    id: Some(MsgId::Private {
                        from,
                        n: done + 1,
                        to: me,
                    }),
                },
            );
            self.got.insert(from, done + 1);
            self.ack(from, done + 1);
        }
    }

    /// Shows `show`, about a message to us: once what we showed is
    /// kept, if it is to be (see [`Dm::set_durable`]).
    fn show_private(&mut self, net: &mut impl Net, show: Show) {
        if self.durable {
            self.unshown.push(show);
            self.unsaved = true;
        } else {
            net.show(show);
        }
    }

    /// What we show is kept across our restarts: a message to us is
    /// shown only once [`Dm::save`] has recorded it as shown and the
    /// record is on disk ([`Dm::saved`]), and acknowledged only then. A
    /// crash before that shows it after the restart; a crash after it
    /// never shows it again. Without it (no state directory), a crash
    /// between showing and acknowledging shows it again.
    pub fn set_durable(&mut self) {
        self.durable = true;
    }

    /// Whether messages to us wait for [`Dm::save`] to be written.
    pub fn must_save(&self) -> bool {
        !self.unshown.is_empty()
    }

    /// What [`Dm::save`] last gave is on disk: shows what waited for it.
    pub fn saved(&mut self, net: &mut impl Net) {
        for s in std::mem::take(&mut self.unshown) {
            net.show(s);
        }
    }

    fn ack(&mut self, from: NodeId, upto: u64) {
        let a = self.acks.entry(from).or_insert(0);
        *a = (*a).max(upto);
    }

    /// `name` acknowledged `acks`.
    fn on_received(&mut self, net: &mut impl Net, name: &str, acks: &[(NodeId, u64)]) {
        for &(from, upto) in acks {
            {
                let before = self.sent.len();
                let mut done = Vec::new();
                self.sent.retain(|s| {
                    let acked = s.p.from == from && s.to == name && s.n <= upto;
                    if acked {
                        done.push(s.n);
                    }
                    !acked
                });
                if self.sent.len() != before {
                    self.unsaved = true;
                    for n in done {
                        net.show(Show::Delivery {
                            to: name.to_owned(),
                            n,
                            state: "delivered".into(),
                        });
                    }
                }
            }
            self.remember_ack(from, name, upto);
            if let Some(b) = self.held.get_mut(name) {
                let gone: Vec<_> = b
                    .copies
                    .range((from, 0)..=(from, upto))
                    .map(|(k, _)| *k)
                    .collect();
                for k in gone {
                    b.copies.remove(&k);
                    self.held_total -= 1;
                    self.unsaved = true;
                }
                if b.copies.is_empty() {
                    self.held.remove(name);
                }
            }
        }
    }

    fn remember_ack(&mut self, from: NodeId, name: &str, upto: u64) {
        let key = (from, name.to_owned());
        match self.acked.get_mut(&key) {
            Some(a) => *a = (*a).max(upto),
            None => {
                if self.acked_order.len() >= REMEMBERED
                    && let Some(old) = self.acked_order.pop_front()
                {
                    self.acked.remove(&old);
                }
                self.acked_order.push_back(key.clone());
                self.acked.insert(key, upto);
            }
        }
    }

    /// Keeps a copy of `p` if we are one of its recipient's holders.
    fn hold(&mut self, net: &mut impl Net, p: Private, now: Millis) {
        if self
            .acked
            .get(&(p.from, p.to.clone()))
            .is_some_and(|&a| a >= p.n)
            || p.age >= MAX_AGE
        {
            return;
        }
        let ring = net.ring();
        let mut holders = successors(ring_point(&p.to), &ring, self.holders);
        if !holders.contains(&net.id()) && !p.holders.contains(&net.id()) {
            return;
        }
        if p.holders.contains(&net.id()) {
            holders = p.holders.clone();
        }
        let b = self.held.entry(p.to.clone()).or_default();
        if b.copies.contains_key(&(p.from, p.n)) {
            return;
        }
        if b.copies.len() >= MAX_PER_NAME || self.held_total >= MAX_HELD {
            if b.copies.is_empty() {
                self.held.remove(&p.to);
            }
            if !self.told_full {
                self.told_full = true;
                net.show(Show::Warning(format!(
                    "holding no more private messages for others (at most {MAX_PER_NAME} \
                     for one name, {MAX_HELD} in all): one to {} is not kept here",
                    p.to
                )));
            }
            return;
        }
        if b.holders.is_empty() {
            b.holders = holders;
        }
        b.copies.insert((p.from, p.n), Held { p, at: now });
        self.held_total += 1;
        self.unsaved = true;
    }

    /// The members changed (joined, left, lost, named).
    pub fn changed(&mut self) {
        self.dirty = true;
    }

    /// When [`Dm::tick`] has work.
    pub fn deadline(&self) -> Option<Millis> {
        let acks = !self.acks.is_empty() && self.unshown.is_empty();
        let now_work = (self.dirty || acks).then_some(0);
        let gap = self.waiting.values().map(|w| w.since + GAP_WAIT).min();
        let expiry = self
            .held
            .values()
            .flat_map(|b| b.copies.values())
            .map(|h| h.at.saturating_add(MAX_AGE.saturating_sub(h.p.age)))
            .min();
        let waiting = self
            .sent
            .iter()
            .filter(|s| s.waiting())
            .map(|s| s.at.saturating_add(MAX_AGE))
            .min();
        let flood = self
            .sent
            .iter()
            .filter_map(|s| s.flood_at)
            .chain(self.held.values().filter_map(|b| b.flood_at))
            .min();
        [now_work, gap, expiry, waiting, flood]
            .into_iter()
            .flatten()
            .min()
    }

    /// Sends acknowledgements, passes copies on, skips gaps waited out,
    /// drops old copies.
    pub fn tick(&mut self, net: &mut impl Net, now: Millis) {
        // Acknowledged once shown: kept first (see `set_durable`).
        let acks: Vec<(NodeId, u64)> = if self.unshown.is_empty() {
            std::mem::take(&mut self.acks).into_iter().collect()
        } else {
            Vec::new()
        };
        for chunk in acks.chunks(ACKS_PER_EVENT) {
            net.publish(Body::Other {
                kind: RECEIVED,
                payload: encode_received(chunk),
            });
        }
        self.skip_gaps(net, now);
        self.expire(now);
        self.expire_waiting(net, now);
        self.flood_unacknowledged(net, now);
        if std::mem::take(&mut self.dirty) {
            self.pass_on(net, now);
        }
    }

    fn skip_gaps(&mut self, net: &mut impl Net, now: Millis) {
        let late: Vec<NodeId> = self
            .waiting
            .iter()
            .filter(|(_, w)| now >= w.since + GAP_WAIT)
            .map(|(&(f, _), _)| f)
            .collect();
        for from in late {
            let Some((&(_, n), w)) = self.waiting.range((from, 0)..=(from, u64::MAX)).next() else {
                continue;
            };
            let done = self.got.get(from).copied().unwrap_or(0);
            let missed = n - done - 1;
            let why = format!(
                "missed {missed} private message{} from {}",
                if missed == 1 { "" } else { "s" },
                w.from_name
            );
            self.show_private(net, Show::Warning(why));
            self.got.insert(from, n - 1);
            self.drain(net, from);
        }
    }

    fn expire(&mut self, now: Millis) {
        for b in self.held.values_mut() {
            let old: Vec<_> = b
                .copies
                .iter()
                .filter(|(_, h)| h.age(now) >= MAX_AGE)
                .map(|(k, _)| *k)
                .collect();
            for k in old {
                b.copies.remove(&k);
                self.held_total -= 1;
                self.unsaved = true;
            }
        }
        self.held.retain(|_, b| !b.copies.is_empty());
    }

    /// Floods what was routed to its recipient and not acknowledged in
    /// [`ROUTE_WAIT`]: the route failed, or the recipient went; the flood
    /// reaches it, or its holders.
    fn flood_unacknowledged(&mut self, net: &mut impl Net, now: Millis) {
        let mut late = Vec::new();
        for s in &mut self.sent {
            if s.flood_at.is_some_and(|t| t <= now) {
                s.flood_at = None;
                let mut p = s.p.clone();
                p.age = now.saturating_sub(s.at).max(p.age);
                late.push(p);
            }
        }
        let ring = net.ring();
        for mut p in late {
            p.holders = successors(ring_point(&p.to), &ring, self.holders);
            self.flood(net, p, now);
        }
        for (name, b) in &mut self.held {
            if b.flood_at.is_none_or(|t| t > now) {
                continue;
            }
            b.flood_at = None;
            for h in b.copies.values() {
                let mut p = h.p.clone();
                p.age = h.age(now);
                p.holders = successors(ring_point(name), &ring, self.holders);
                net.publish(Body::Other {
                    kind: PRIVATE,
                    payload: p.encode(),
                });
            }
        }
    }

    /// Drops our messages that waited [`MAX_AGE`] for a key, saying so.
    fn expire_waiting(&mut self, net: &mut impl Net, now: Millis) {
        let old = |s: &Sent| s.waiting() && now.saturating_sub(s.at) >= MAX_AGE;
        for s in self.sent.iter().filter(|s| old(s)) {
            net.show(Show::Warning(format!(
                "msg: private {} to {} not delivered: {} was not seen in {} days",
                s.n,
                s.to,
                s.to,
                MAX_AGE / (24 * 3600 * 1000)
            )));
            self.unsaved = true;
        }
        self.sent.retain(|s| !old(s));
    }

    /// Passes copies on: to their recipient, which is here now (every
    /// holder does), or to new holders (the first old holder still
    /// present does).
    fn pass_on(&mut self, net: &mut impl Net, now: Millis) {
        // A name first seen: what waited for its key goes now.
        self.seal_waiting(net, now);
        // Ours, to a recipient that is here now, or all of them after a
        // restart: we hold them too.
        let resend = std::mem::take(&mut self.resend);
        let mut to_send = Vec::new();
        for s in self.sent.iter().filter(|s| !s.waiting()) {
            let here = net.find(&s.to);
            let handed = self.sent_handed.get(&s.to).copied();
            if resend || (here.is_some() && here != handed) {
                to_send.push(s.p.clone());
            }
        }
        for s in &self.sent {
            if let Some(id) = net.find(&s.to) {
                self.sent_handed.insert(s.to.clone(), id);
            }
        }
        let ring = net.ring();
        for mut p in to_send {
            p.age = now.saturating_sub(self.sent_at(&p)).max(p.age);
            p.holders = successors(ring_point(&p.to), &ring, self.holders);
            match net.find(&p.to) {
                Some(id) => self.route_own(id, &p, now),
                None => net.publish(Body::Other {
                    kind: PRIVATE,
                    payload: p.encode(),
                }),
            }
        }
        let me = net.id();
        for (name, b) in &mut self.held {
            let holders = successors(ring_point(name), &ring, self.holders);
            // To its recipient, here now (routed), or to new holders
            // (flooded: it reaches the recipient too).
            let (mut to_it, mut to_holders) = (None, false);
            let here = net.find(name);
            if here.is_some() && here != b.handed {
                b.handed = here;
                to_it = here;
            }
            if holders != b.holders {
                let first_old = b.holders.iter().find(|h| ring.contains(h));
                if first_old.is_none_or(|&h| h == me) {
                    to_holders = true;
                }
                b.holders = holders;
            }
            if !to_holders && to_it.is_none() {
                continue;
            }
            if !to_holders {
                b.flood_at = Some(now + ROUTE_WAIT);
            }
            for h in b.copies.values() {
                let mut p = h.p.clone();
                p.age = h.age(now);
                p.holders = b.holders.clone();
                match to_it.filter(|_| !to_holders) {
                    Some(id) => self.routed.push((id, p.encode())),
                    None => net.publish(Body::Other {
                        kind: PRIVATE,
                        payload: p.encode(),
                    }),
                }
            }
        }
    }

    /// Whether [`Dm::save`] has something new.
    pub fn unsaved(&self) -> bool {
        self.unsaved
    }

    /// When we sent `p`, in this run's time (0 for one sent before a
    /// restart: its age is in `p.age`).
    fn sent_at(&self, p: &Private) -> Millis {
        self.sent
            .iter()
            .find(|s| s.p.from == p.from && s.n == p.n && s.to == p.to)
            .map_or(0, |s| s.at)
    }

    /// What must outlive a restart, if it changed since last asked: the
    /// copies held and our undelivered messages, with their ages at
    /// `now`. See [`Dm::restore`] for the format.
    pub fn save(&mut self, now: Millis) -> Option<Vec<u8>> {
        if !std::mem::take(&mut self.unsaved) {
            return None;
        }
        let mut out = STORE_MAGIC.to_vec();
        out.extend_from_slice(&(self.sent.len() as u32).to_be_bytes());
        for s in &self.sent {
            let mut p = s.p.clone();
            p.age = p.age.max(now.saturating_sub(s.at));
            let mut r = Vec::new();
            put_str(&mut r, &s.text);
            r.extend_from_slice(&s.nonce.to_be_bytes());
            r.extend_from_slice(&p.encode());
            out.extend_from_slice(&(r.len() as u32).to_be_bytes());
            out.extend_from_slice(&r);
        }
        let held: Vec<&Held> = self.held.values().flat_map(|b| b.copies.values()).collect();
        out.extend_from_slice(&(held.len() as u32).to_be_bytes());
        for h in held {
            let mut p = h.p.clone();
            p.age = h.age(now);
            let r = p.encode();
            out.extend_from_slice(&(r.len() as u32).to_be_bytes());
            out.extend_from_slice(&r);
        }
        // What we showed, oldest first, so that a copy that comes after a
        // crash is not shown again.
        out.extend_from_slice(&(self.got.len() as u32).to_be_bytes());
        for from in self.got.ids() {
            let upto = self.got.get(from).copied().unwrap_or(0);
            out.extend_from_slice(&from.0.to_be_bytes());
            out.extend_from_slice(&upto.to_be_bytes());
        }
        Some(out)
    }

    /// Takes back what [`Dm::save`] gave, `elapsed` ms later (the time
    /// we were away ages every copy), at `now`. The format:
    ///
    /// ```text
    /// "p2pchat-private-v2\n", sent:u32, sent × (len:u32, text:str, nonce:u64,
    /// PRIVATE), held:u32, held × (len:u32, PRIVATE), shown:u32,
    /// shown × (from:u64, upto:u64)
    /// ```
    ///
    /// A PRIVATE of ours with nothing sealed waits for its recipient's
    /// key; `nonce` is that of the run that wrote it. `shown`: what we
    /// showed of each sender (see [`Dm::set_durable`]). Version 1 had no
    /// `nonce` and no `shown`.
    ///
    /// Returns how many of ours and of others' were taken back.
    ///
    /// # Errors
    ///
    /// What is wrong with the bytes; nothing is taken then.
    pub fn restore(
        &mut self,
        bytes: &[u8],
        elapsed: Millis,
        now: Millis,
    ) -> Result<(usize, usize), String> {
        let (v1, mut r) = match bytes.strip_prefix(STORE_MAGIC) {
            Some(r) => (false, r),
            None => (
                true,
                bytes
                    .strip_prefix(STORE_MAGIC_V1)
                    .ok_or("not a p2pchat private message store")?,
            ),
        };
        let record = |r: &mut &[u8]| -> Result<Vec<u8>, String> {
            let n = take(r, 4).ok_or("truncated")?;
            let n = u32::from_be_bytes(n.try_into().expect("4 bytes")) as usize;
            take(r, n)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| "truncated".into())
        };
        let count = |r: &mut &[u8]| -> Result<usize, String> {
            let n = take(r, 4).ok_or("truncated")?;
            let n = u32::from_be_bytes(n.try_into().expect("4 bytes")) as usize;
            if n > MAX_HELD {
                return Err(format!("{n} messages, over the bound of {MAX_HELD}"));
            }
            Ok(n)
        };
        let mut sent = Vec::new();
        for _ in 0..count(&mut r)? {
            let rec = record(&mut r)?;
            let mut b = &rec[..];
            let text = get_str(&mut b).ok_or("bad text")?;
            let nonce = if v1 {
                0
            } else {
                get_u64(&mut b).ok_or("truncated")?
            };
            let mut p = Private::decode(b).ok_or("bad message")?;
            p.age = p.age.saturating_add(elapsed);
            if p.sealed.is_empty() && crypto::node_id(&self.ident.public(), nonce) != p.from {
                return Err("a message waiting for a key is not ours".into());
            }
            if p.age < MAX_AGE && text.len() <= MAX_TEXT {
                sent.push(Sent {
                    to: p.to.clone(),
                    n: p.n,
                    text,
                    at: now.saturating_sub(p.age),
                    p,
                    nonce,
                    flood_at: None,
                });
            }
        }
        let mut held = Vec::new();
        for _ in 0..count(&mut r)? {
            let mut p = Private::decode(&record(&mut r)?).ok_or("bad message")?;
            p.age = p.age.saturating_add(elapsed);
            if p.age < MAX_AGE {
                held.push(p);
            }
        }
        let mut shown = Vec::new();
        if !v1 {
            let n = take(&mut r, 4).ok_or("truncated")?;
            let n = u32::from_be_bytes(n.try_into().expect("4 bytes")) as usize;
            if n > REMEMBERED {
                return Err(format!("{n} senders, over the bound of {REMEMBERED}"));
            }
            for _ in 0..n {
                let from = NodeId(get_u64(&mut r).ok_or("truncated")?);
                shown.push((from, get_u64(&mut r).ok_or("truncated")?));
            }
        }
        if !r.is_empty() {
            return Err("bytes after the end".into());
        }
        for (from, upto) in shown {
            let done = self.got.get(from).copied().unwrap_or(0);
            self.got.insert(from, done.max(upto));
        }
        let (ns, nh) = (sent.len(), held.len());
        if !sent.is_empty() {
            self.resend = true;
            self.dirty = true;
        }
        self.sent.extend(sent);
        for p in held {
            let b = self.held.entry(p.to.clone()).or_default();
            if b.copies.len() < MAX_PER_NAME && self.held_total < MAX_HELD {
                b.holders = p.holders.clone();
                b.copies.insert((p.from, p.n), Held { p, at: now });
                self.held_total += 1;
            }
        }
        self.held.retain(|_, b| !b.copies.is_empty());
        if nh > 0 {
            // Pass them on to whoever holds them now, and to their
            // recipients if here.
            self.dirty = true;
            for b in self.held.values_mut() {
                b.holders.clear();
            }
        }
        Ok((ns, nh))
    }

    /// Messages held for others, for tests.
    pub fn held(&self) -> usize {
        self.held_total
    }

    /// Our messages not acknowledged yet, for tests.
    pub fn unacknowledged(&self) -> usize {
        self.sent.len()
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Names and texts here are far below u16::MAX bytes.
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if r.len() < n {
        return None;
    }
    let (a, b) = r.split_at(n);
    *r = b;
    Some(a)
}

fn get_u64(r: &mut &[u8]) -> Option<u64> {
    take(r, 8).map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

fn get_str(r: &mut &[u8]) -> Option<String> {
    let n = take(r, 2).map(|b| u16::from_be_bytes([b[0], b[1]]))?;
    let b = take(r, usize::from(n))?;
    String::from_utf8(b.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::MemberView;

    /// One peer's view of the network.
    struct Fake {
        id: NodeId,
        name: String,
        up: bool,
        published: Vec<Body>,
        shown: Vec<Show>,
        /// Everyone's names and keys, and who is present.
        names: HashMap<NodeId, String>,
        keys: HashMap<String, PublicKey>,
        present: Vec<NodeId>,
    }

    impl Net for Fake {
        fn publish(&mut self, body: Body) {
            self.published.push(body);
        }
        fn show(&mut self, show: Show) {
            self.shown.push(show);
        }
        fn me(&self) -> &str {
            &self.name
        }
        fn name_of(&self, id: NodeId) -> String {
            self.names.get(&id).cloned().unwrap_or_default()
        }
        fn members(&self) -> Vec<MemberView> {
            Vec::new()
        }
        fn id(&self) -> NodeId {
            self.id
        }
        fn find(&self, name: &str) -> Option<NodeId> {
            self.present
                .iter()
                .copied()
                .find(|id| self.names.get(id).is_some_and(|n| n == name))
        }
        fn is_present(&self, id: NodeId) -> bool {
            id == self.id || self.present.contains(&id)
        }
        fn key_of(&self, id: NodeId) -> Option<PublicKey> {
            self.keys.get(self.names.get(&id)?).copied()
        }
        fn key_of_name(&self, name: &str) -> Option<PublicKey> {
            self.keys.get(name).copied()
        }
        fn ring(&self) -> Vec<NodeId> {
            let mut v = self.present.clone();
            v.push(self.id);
            v
        }
    }

    /// A network of peers that see every event at once.
    struct World {
        peers: Vec<(Dm, Fake)>,
        now: Millis,
    }

    impl World {
        fn new(names: &[&str]) -> World {
            let idents: Vec<Identity> = (0..names.len() as u64).map(Identity::from_seed).collect();
            let mut all_names = HashMap::new();
            let mut keys = HashMap::new();
            for (i, n) in names.iter().enumerate() {
                all_names.insert(idents[i].id(), n.to_string());
                keys.insert(n.to_string(), idents[i].public());
            }
            let peers = names
                .iter()
                .zip(idents)
                .map(|(n, ident)| {
                    let f = Fake {
                        id: ident.id(),
                        name: n.to_string(),
                        up: true,
                        published: Vec::new(),
                        shown: Vec::new(),
                        names: all_names.clone(),
                        keys: keys.clone(),
                        present: Vec::new(),
                    };
                    (Dm::new(ident), f)
                })
                .collect();
            let mut w = World { peers, now: 1 };
            w.membership();
            w
        }

        fn by_name(&self, name: &str) -> usize {
            self.peers.iter().position(|(_, f)| f.name == name).unwrap()
        }

        /// Tells everyone who is up.
        fn membership(&mut self) {
            let up: Vec<NodeId> = self
                .peers
                .iter()
                .filter(|(_, f)| f.up)
                .map(|(_, f)| f.id)
                .collect();
            for (dm, f) in &mut self.peers {
                f.present = up.iter().copied().filter(|&i| i != f.id).collect();
                dm.changed();
            }
        }

        fn set_up(&mut self, name: &str, up: bool) {
            let i = self.by_name(name);
            self.peers[i].1.up = up;
            self.membership();
            self.settle();
        }

        /// Floods what is published, and ticks, until all is quiet.
        fn settle(&mut self) {
            for _ in 0..100 {
                let mut any = false;
                for i in 0..self.peers.len() {
                    if !self.peers[i].1.up {
                        self.peers[i].1.published.clear();
                        continue;
                    }
                    let now = self.now;
                    let (dm, f) = &mut self.peers[i];
                    if dm.deadline().is_some_and(|d| d <= now) {
                        dm.tick(f, now);
                    }
                    let evs = std::mem::take(&mut self.peers[i].1.published);
                    let origin = self.peers[i].1.id;
                    // Routed: to its member alone, if up.
                    for (to, payload) in self.peers[i].0.take_routed() {
                        any = true;
                        if let Some((dm, f)) =
                            self.peers.iter_mut().find(|(_, f)| f.id == to && f.up)
                        {
                            dm.routed(f, &payload, None, now);
                        }
                    }
                    for ev in evs {
                        any = true;
                        let Body::Other { kind, payload } = ev else {
                            panic!("not ours");
                        };
                        for (j, (dm, f)) in self.peers.iter_mut().enumerate() {
                            if j != i && f.up {
                                dm.delivered(f, origin, kind, &payload, None, now);
                            }
                        }
                    }
                }
                if !any {
                    return;
                }
            }
            panic!("never settles");
        }

        fn send(&mut self, from: &str, to: &str, text: &str) {
            let i = self.by_name(from);
            let now = self.now;
            let (dm, f) = &mut self.peers[i];
            dm.send(f, to, text, now);
            self.settle();
        }

        fn privates(&self, name: &str) -> Vec<(String, String)> {
            let i = self.by_name(name);
            self.peers[i]
                .1
                .shown
                .iter()
                .filter_map(|s| match s {
                    Show::Private {
                        from,
                        text,
                        own: false,
                        ..
                    } => Some((from.clone(), text.clone())),
                    _ => None,
                })
                .collect()
        }

        fn states(&self, name: &str) -> Vec<(u64, String)> {
            let i = self.by_name(name);
            self.peers[i]
                .1
                .shown
                .iter()
                .filter_map(|s| match s {
                    Show::Delivery { n, state, .. } => Some((*n, state.clone())),
                    _ => None,
                })
                .collect()
        }

        fn held(&self) -> usize {
            self.peers
                .iter()
                .filter(|(_, f)| f.up)
                .map(|(d, _)| d.held())
                .sum()
        }
    }

    fn private(to: &str, from: NodeId, n: u64) -> Private {
        Private {
            to: to.into(),
            from,
            n,
            age: 0,
            holders: vec![NodeId(5), NodeId(6)],
            sealed: Vec::new(),
        }
    }

    #[test]
    fn sealed_opens_only_for_its_recipient_and_as_sent() {
        let (a, b, c) = (
            Identity::from_seed(1),
            Identity::from_seed(2),
            Identity::from_seed(3),
        );
        let mut p = private("bob", a.id(), 4);
        seal(&a, "alice", &b.public(), &mut p, 2, "psst").unwrap();
        assert!(!p.sealed.windows(4).any(|w| w == b"psst"));
        let o = open(&b, &p).unwrap();
        assert_eq!(
            (o.name.as_str(), o.text.as_str(), o.first),
            ("alice", "psst", 2)
        );
        assert_eq!(o.key, a.public());
        assert!(open(&c, &p).is_err(), "opened by another key");
        // Its place cannot be changed on the way, nor its sender.
        for change in [
            |p: &mut Private| p.n = 5,
            |p: &mut Private| p.to = "bobby".into(),
            |p: &mut Private| p.from = NodeId(p.from.0 ^ 1),
            |p: &mut Private| p.sealed[40] ^= 1,
        ] {
            let mut q = p.clone();
            change(&mut q);
            assert!(open(&b, &q).is_err(), "{q:?}");
        }
        // The sender's id must be its key's.
        let mut q = private("bob", c.id(), 4);
        seal(&a, "alice", &b.public(), &mut q, 1, "x").unwrap();
        assert_eq!(open(&b, &q), Err("sender id not its key's"));
    }

    #[test]
    fn payloads_round_trip_and_decoding_is_total() {
        let mut p = private("dave", NodeId(7), 3);
        p.age = 99;
        p.sealed = vec![1, 2, 3];
        let e = p.encode();
        assert_eq!(Private::decode(&e), Some(p));
        for cut in 0..e.len() - 3 {
            assert_eq!(Private::decode(&e[..cut]), None);
        }
        let acks = vec![(NodeId(1), 2), (NodeId(3), 4)];
        let e = encode_received(&acks);
        assert_eq!(decode_received(&e), Some(acks));
        for cut in 0..e.len() {
            assert_eq!(decode_received(&e[..cut]), None);
        }
        let mut rng = crate::proto::Rng::new(5);
        for _ in 0..2000 {
            let n = rng.below(64) as usize;
            let b: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            let _ = Private::decode(&b);
            let _ = decode_received(&b);
        }
    }

    #[test]
    fn successors_go_round_the_ring() {
        let ids: Vec<NodeId> = [50, 10, 30, 40, 20].map(NodeId).to_vec();
        assert_eq!(successors(25, &ids, 3), [30, 40, 50].map(NodeId));
        assert_eq!(successors(45, &ids, 3), [50, 10, 20].map(NodeId));
        assert_eq!(successors(60, &ids, 2), [10, 20].map(NodeId));
        assert_eq!(successors(0, &ids[..2], 3), [10, 50].map(NodeId));
        assert!(successors(0, &[], 3).is_empty());
    }

    #[test]
    fn online_message_is_shown_once_and_acknowledged() {
        let mut w = World::new(&["alice", "bob", "carol"]);
        w.send("alice", "bob", "hi bob");
        assert_eq!(
            w.privates("bob"),
            [("alice".to_owned(), "hi bob".to_owned())]
        );
        assert!(w.privates("carol").is_empty());
        assert_eq!(
            w.states("alice"),
            [(1, "sent".into()), (1, "delivered".into())]
        );
        assert_eq!(w.held(), 0, "every copy dropped on acknowledgement");
        let a = w.by_name("alice");
        assert_eq!(w.peers[a].0.unacknowledged(), 0);
    }

    #[test]
    fn offline_messages_wait_for_their_recipient_after_the_sender_left() {
        let mut w = World::new(&["alice", "dave", "h1", "h2", "h3", "h4", "h5"]);
        w.set_up("dave", false);
        for t in ["one", "two", "three"] {
            w.send("alice", "dave", t);
        }
        assert_eq!(w.states("alice")[0], (1, "queued".into()));
        assert_eq!(w.held(), 3 * HOLDERS);
        w.set_up("alice", false);
        // Holders go, one crashing after another: the copies follow.
        for h in ["h1", "h2", "h3"] {
            w.set_up(h, false);
            let live = w
                .peers
                .iter()
                .filter(|(d, f)| f.up && d.held() == 3)
                .count();
            let up = w.peers.iter().filter(|(_, f)| f.up).count();
            assert!(live >= HOLDERS.min(up), "after {h} went: {live} holders");
        }
        w.set_up("dave", true);
        let got: Vec<String> = w.privates("dave").into_iter().map(|(_, t)| t).collect();
        assert_eq!(got, ["one", "two", "three"]);
        assert!(w.privates("dave").iter().all(|(f, _)| f == "alice"));
        assert_eq!(w.held(), 0);
    }

    #[test]
    fn a_later_message_waits_for_an_earlier_one() {
        let mut w = World::new(&["alice", "bob"]);
        let (a, b) = (w.by_name("alice"), w.by_name("bob"));
        let bob_key = w.peers[b].1.keys["bob"];
        let ident = Identity::from_seed(a as u64);
        let from = ident.id();
        let mk = |n: u64, text: &str| {
            let mut p = private("bob", from, n);
            seal(&ident, "alice", &bob_key, &mut p, 1, text).unwrap();
            p.encode()
        };
        let (dm, f) = &mut w.peers[b];
        dm.delivered(f, from, PRIVATE, &mk(2, "second"), None, 10);
        assert!(f.shown.is_empty());
        dm.delivered(f, from, PRIVATE, &mk(1, "first"), None, 20);
        dm.delivered(f, from, PRIVATE, &mk(2, "second"), None, 30);
        dm.delivered(f, from, PRIVATE, &mk(1, "first"), None, 40);
        dm.delivered(f, from, PRIVATE, &mk(4, "fourth"), None, 50);
        assert_eq!(dm.deadline(), Some(0), "acknowledgements to send");
        dm.tick(f, 60);
        assert_eq!(dm.deadline(), Some(50 + GAP_WAIT));
        dm.tick(f, 50 + GAP_WAIT);
        let texts: Vec<&str> = f
            .shown
            .iter()
            .filter_map(|s| match s {
                Show::Private { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(texts, ["first", "second", "fourth"]);
        assert!(
            f.shown
                .iter()
                .any(|s| s == &Show::Warning("missed 1 private message from alice".into()))
        );
    }

    #[test]
    fn what_is_held_and_sent_outlives_a_restart() {
        let mut w = World::new(&["alice", "dave", "h1"]);
        w.set_up("dave", false);
        w.send("alice", "dave", "one");
        let (a, h) = (w.by_name("alice"), w.by_name("h1"));
        let saved_a = w.peers[a].0.save(5_000).unwrap();
        let saved_h = w.peers[h].0.save(5_000).unwrap();
        assert_eq!(w.peers[h].0.save(5_000), None, "nothing new to save");
        // Every cut of a store is refused whole; so is a changed magic.
        for cut in 0..saved_h.len() {
            let mut fresh = Dm::new(Identity::from_seed(9));
            assert!(fresh.restore(&saved_h[..cut], 0, 0).is_err(), "{cut}");
            assert_eq!(fresh.held(), 0);
        }
        // Restarted: new ids, same keys.
        for (i, saved) in [(a, &saved_a), (h, &saved_h)] {
            let ident = Identity::from_seed(i as u64);
            let mut dm = Dm::new(ident);
            let (mine, others) = dm.restore(saved, 1_000, 0).unwrap();
            assert!(mine + others >= 1);
            w.peers[i].0 = dm;
        }
        assert!(w.held() >= 1);
        w.set_up("dave", true);
        assert_eq!(w.privates("dave"), [("alice".to_owned(), "one".to_owned())]);
        assert_eq!(w.held(), 0);
        assert_eq!(w.peers[a].0.unacknowledged(), 0);
        // Too old by the time it is read back: dropped.
        let mut late = Dm::new(Identity::from_seed(9));
        assert_eq!(late.restore(&saved_h, MAX_AGE, 0), Ok((0, 0)));
    }

    #[test]
    fn bounds_refuse_with_a_reason() {
        let mut w = World::new(&["alice", "bob"]);
        w.set_up("bob", false);
        let a = w.by_name("alice");
        let (dm, f) = &mut w.peers[a];
        dm.send(f, "alice", "me", 1);
        dm.send(f, "nobody", "hello?", 1);
        dm.send(f, "bob", &"x".repeat(MAX_TEXT + 1), 1);
        for i in 0..=MAX_PER_NAME {
            dm.send(f, "bob", &format!("{i}"), 1);
        }
        let warnings: Vec<&str> = f
            .shown
            .iter()
            .filter_map(|s| match s {
                Show::Warning(w) => Some(w.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains("that is you"));
        assert!(warnings[1].contains("longer than"));
        assert!(warnings[2].contains("100 messages of yours are waiting for bob"));
        // The one to a name never met waits for its key.
        assert!(f.shown.contains(&Show::Info(
            "msg: queued until nobody is first seen (no key yet to encrypt to)".into()
        )));
        assert_eq!(dm.unacknowledged(), MAX_PER_NAME + 1);
        // Copies held expire, and so does a message that waited a week
        // for its key, with a reason.
        assert!(dm.held() > 0);
        dm.tick(f, 1 + MAX_AGE);
        assert_eq!(dm.held(), 0);
        assert_eq!(dm.unacknowledged(), MAX_PER_NAME);
        assert!(f.shown.contains(&Show::Warning(
            "msg: private 1 to nobody not delivered: nobody was not seen in 7 days".into()
        )));
    }
}
