//! Frames and messages on the wire: pure encode and decode.
//!
//! Every link is a TCP stream of frames:
//!
//! ```text
//! frame   = length:u32 body            length = bytes in body, 1..=MAX_FRAME
//! body    = kind:u8 payload
//! ```
//!
//! All integers are big-endian. A string is `len:u16` then that many bytes of
//! UTF-8; an address is `family:u8` (0 none, 4, 6) then 0, 4 or 16 bytes of
//! IP. The payload of each kind:
//!
//! ```text
//! 1 HELLO    magic "p2pc", version:u16, id:u64, name:str, port:u16,
//!            flags:u8 (bit 0: joining), you:addr (the other side's IP as seen),
//!            ident, proof:sig (the sender holds its key, on this link:
//!            see crypto::hello_message), then, optional (see below):
//!            expect:u64, expect_key:32 bytes (the member the dialler
//!            means to reach; the key zeros if it does not know it)
//! 2 REFUSE   code:u8, text:str                      then the sender closes
//! 3 MEMBERS  last:u8, count:u16, count × (id:u64, name:str, ip:addr, port:u16,
//!            seq:u64, ident)
//! 4 EVENT    origin:u64, seq:u64, type:u8, seal, payload   see below
//! 5 FETCH    origin:u64, from:u64, to:u64           "send me these events again"
//! 6 PING     (empty)                                keeps an idle link alive
//! 7 LACK     origin:u64, oldest:u64                 "I cannot send what you asked:
//!                                                   what I have of origin starts
//!                                                   again at oldest" (0: I have none)
//! 8 GONE     count:u16, count × id:u64              members that left, sent to a
//!                                                   joiner before MEMBERS: their
//!                                                   events are never taken again
//! 9 IHAVE    count:u16, count × (origin:u64, seq:u64)  "I have delivered origin's
//!                                                   events up to seq": announcements
//!                                                   on a lazy link, batched
//! 10 GRAFT   origin:u64, from:u64, to:u64           "send me what you have of these
//!                                                   events (none if to < from), and
//!                                                   push origin's events to me from
//!                                                   now on"
//! 11 PRUNE   origin:u64                             "I have origin's events from
//!                                                   elsewhere: announce them to me,
//!                                                   do not push them"
//! 12 NOISE   message (to the end of the frame)      the encrypted handshake
//! 23 HOPS    count:u16, count × (origin:u64, hops:u8)  "my copies of origin's events
//!                                                   come hops links from it" (255:
//!                                                   I do not know); sent on every
//!                                                   link when it changes, and all of
//!                                                   them to a new link
//! 16-19      file transfers (GET, DATA, STOP, MORE): see crate::app::files
//! 22 ROUTED  to:u64, ttl:u8, type:u8, payload       an event payload for member to
//!                                                   alone, passed on towards it:
//!                                                   see super::route
//! 20 PUNCH_ASK target:u64                           "I cannot dial target: if you
//!                                                   link to it, have us both dial"
//! 21 PUNCH   id:u64, ip:addr, port:u16              "dial member id at ip:port from
//!                                                   your listening port, now": sent
//!                                                   to both ends by whoever got a
//!                                                   PUNCH_ASK, each end's address as
//!                                                   it sees it (TCP hole punching)
//! 24 SHED    op:u8, ...                             asking a neighbour before a link
//!                                                   is shed: see super::mesh
//! ```
//!
//! IHAVE, GRAFT and PRUNE are the broadcast layer's lazy push (see
//! [`super::broadcast`]): full events travel on a tree per origin, and the
//! other links carry only IHAVE; an announced event that does not come is
//! asked for with GRAFT, which makes the link part of the tree again; a
//! copy that comes twice is answered with PRUNE. They name events by id
//! only, never carry one. HOPS tells neighbours how deep each origin's tree
//! has put us, so that a peer with a neighbour well closer to an origin
//! than its parent moves to it (GRAFT it, PRUNE the parent): trees become
//! shallow. It came after version 3: a peer that does not know it skips
//! it, as any unknown kind, and is then only never moved to.
//!
//! Under a network secret, a link starts with the Noise handshake
//! `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s`, whose pre-shared key comes
//! from the secret: the dialler's NOISE, the other's NOISE. From then on
//! every frame body is a record, one Noise transport message: the length
//! prefix in the clear, the body encrypted and authenticated. Decrypted, a
//! record is one or more whole frames (HELLO included), each with its
//! length prefix: frames that go out together are encrypted together. A
//! peer without the secret, or with another one, gets a REFUSE (code 8) in
//! the clear and is closed; so is a plain HELLO sent to a peer that has a
//! secret. HELLO's proof is then bound to the handshake's hash, so it
//! cannot be replayed on another link.
//!
//! An identity is `ident = key:32 bytes (Ed25519), nonce:u64`; the node id
//! is bound to it (see [`super::crypto`]). A `sig` is 64 bytes.
//!
//! Event types, each flooded through the network and delivered once, in
//! order per origin. Every event is `origin:u64, seq:u64, type:u8`, then
//! `seal`, then a payload that runs to the end of the frame. `seal` is 0
//! for an unsigned event, or 1, `count:u8, count × hash:16 bytes, sig`: the
//! origin's signature of this event and of the `count` unsigned events
//! just before it (by their hashes; see [`super::crypto`]). Nothing of an
//! origin is delivered or relayed before a signature covers it.
//!
//! ```text
//! 1 JOIN     name:str, ip:addr, port:u16, ident
//! 2 LEAVE
//! 3 CHAT     room:str, text:str
//! 4 SUSPECT  target:u64                             "I lost my link to target"
//! 5 ALIVE    count:u8, count × (origin:u64, seq:u64)  refutes SUSPECTs of the origin:
//!                                                   the SUSPECT events it answers
//! 6 ACTION   room:str, text:str                     `:me text`: "* alice text"
//! 7 RENAME   name:str                               `:nick name`: the origin's new name
//! 8 CLOCK    time:u64                               the origin's wall clock (ms since
//!                                                   1970, UTC): when the events after
//!                                                   it were said, to the second
//! 10-16      rooms: ROOM, SAY, ENTER, SHOUT, HISTORY, SIGNED, WHEN (see [`rooms`])
//! 20 PRIVATE, 21 RECEIVED    private messages: payloads defined, encoded and
//!                            decoded by crate::app::dm; here they are Body::Other
//! 30 OFFER   a file offer, decoded by crate::app::files from Body::Other
//! ```
//!
//! CLOCK is how events carry the sender's time without changing any
//! older type: a peer sends one before what it says when a second or more
//! has passed since the last, so a line shown late (held behind a gap,
//! fetched after a partition) shows when it was said; and one right
//! before each SUSPECT, so that a member asked about itself knows how
//! long ago it was asked. Peers of this
//! version built before these types relay them unopened, and say once
//! that a newer version is about.
//!
//! A connecting peer sends HELLO first; the accepting peer answers HELLO and
//! MEMBERS, or REFUSE. A peer that dials one it knows by id (a member,
//! to link again or to probe it when lost; a peer heard on the LAN; not
//! a join, nor a punch) ends its HELLO with that id and the key, if
//! known: a port may have been taken by another p2pchat since. An acceptor that is neither
//! that id nor holds that key answers REFUSE, code 10 (not here), and
//! takes nothing in; the dialler counts that as a failed dial to the
//! member. The dialler checks the answer itself too: a HELLO that shows
//! neither the id nor the key it meant to reach gets a REFUSE (code 10)
//! and the link closes, before anything on it is taken in. The same key
//! under a new id is the same user, restarted on its port: taken. Peers
//! built before this field rejected a HELLO with bytes after its proof
//! (the link closed, unanswered); a dialler whose HELLO is closed that way
//! dials that address again without the field (and its own check still
//! holds). Bytes after the fields this build knows are skipped: later
//! fields at the end of HELLO are safe to add. Decoding is total: any input gives a [`Msg`] or a
//! [`WireError`], never a panic, and nothing is allocated beyond the frame
//! already received, whose length was checked against [`MAX_FRAME`] first.
//!
//! Versions. A network mixes versions during every upgrade, so:
//!
//! - a message kind this build does not know is skipped once the link is
//!   up (before HELLO it closes the link: that is not a p2pchat peer);
//! - an event type this build does not know decodes as [`Body::Other`]: it
//!   is relayed unopened and delivered as nothing, so the origin's order
//!   goes on; the user is told once that a newer version is about;
//! - [`VERSION`] changes only for changes older peers cannot skip; a HELLO
//!   of another version is answered with a REFUSE naming both.
//!
//! Encoding is checked too: a field longer than its length prefix can say,
//! or a frame over [`MAX_FRAME`], is an error, never cut short.

pub mod rooms;

use super::crypto::{EventHash, PublicKey, Sig};
use super::{EventId, NodeId};
use byteorder::{BigEndian, ByteOrder, ReadBytesExt, WriteBytesExt};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;

/// A whole frame, length prefix included, shared by every link's queue
/// and the cache that send or keep it.
pub type Frame = Rc<[u8]>;

/// Protocol version spoken by this build, sent in HELLO. Version 2:
/// signed identities and events, and links encrypted under a network
/// secret. Version 3 added IHAVE, GRAFT and PRUNE: a version 2 peer would
/// skip them, and then never be sent what it is only announced.
pub const VERSION: u16 = 3;
/// Most unsigned events one signature vouches for.
pub const MAX_COVERS: usize = 255;
/// Largest frame body accepted or sent, in bytes.
pub const MAX_FRAME: usize = 65535;
/// Largest frame body this build sends: what fits, with its length, in
/// one Noise message with its 16-byte tag, so that every frame can be
/// sent encrypted.
pub const MAX_PLAIN: usize = MAX_FRAME - 16 - 4;
/// Longest user name, in characters.
pub const MAX_NAME: usize = 32;
/// Longest chat line, in bytes.
pub const MAX_TEXT: usize = 4096;
/// Most SUSPECT events one ALIVE answers.
pub const MAX_ANSWERS: usize = 32;
/// Most member entries in one MEMBERS frame.
pub const MEMBERS_PER_FRAME: usize = 256;
/// Most ids in one GONE frame.
pub const GONE_PER_FRAME: usize = 1024;
/// Longest room name, in characters.
pub const MAX_ROOM: usize = 32;
/// Most announcements in one IHAVE frame.
pub const IHAVE_PER_FRAME: usize = 1024;
/// Most hop counts in one HOPS frame.
pub const HOPS_PER_FRAME: usize = 1024;
/// A hop count in HOPS that says "I do not know".
pub const HOPS_UNKNOWN: u8 = u8::MAX;

const MAGIC: &[u8; 4] = b"p2pc";

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// A length prefix of zero or above [`MAX_FRAME`].
    BadLength(u32),
    /// The body ended before the message did.
    Truncated,
    /// Bytes left over after the message.
    Trailing,
    /// A message kind this build does not know.
    UnknownKind(u8),
    /// A field out of its range (bad magic, address family, string…).
    Invalid(&'static str),
    /// Encoding: a field or the whole frame is too long for the format.
    TooLong(&'static str),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::BadLength(n) => write!(f, "frame length {n} out of range"),
            WireError::Truncated => f.write_str("truncated message"),
            WireError::Trailing => f.write_str("trailing bytes after message"),
            WireError::UnknownKind(k) => write!(f, "unknown message kind {k}"),
            WireError::Invalid(what) => write!(f, "invalid {what}"),
            WireError::TooLong(what) => write!(f, "{what} too long for a frame"),
        }
    }
}

/// Reasons a peer refuses a link, sent in REFUSE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Version = 1,
    NameTaken = 2,
    Myself = 3,
    Duplicate = 4,
    Full = 5,
    Gone = 6,
    BadHello = 7,
    /// The network secrets differ, or one side has none.
    Secret = 8,
    /// The name is known with another key.
    Key = 9,
    /// The dialler meant to reach another member, which is not here.
    NotHere = 10,
    Other = 255,
}

impl Refusal {
    fn from_u8(v: u8) -> Refusal {
        match v {
            1 => Refusal::Version,
            2 => Refusal::NameTaken,
            3 => Refusal::Myself,
            4 => Refusal::Duplicate,
            5 => Refusal::Full,
            6 => Refusal::Gone,
            7 => Refusal::BadHello,
            8 => Refusal::Secret,
            9 => Refusal::Key,
            10 => Refusal::NotHere,
            _ => Refusal::Other,
        }
    }
}

/// The first message on every link, from both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub id: NodeId,
    pub name: String,
    pub port: u16,
    pub joining: bool,
    /// The other side's IP as this side sees it (how a peer learns its
    /// own address).
    pub you: Option<IpAddr>,
    pub ident: Ident,
    /// The sender's signature of `crypto::hello_message`.
    pub proof: Sig,
    /// The member a dialler means to reach: its id, and its key (zeros
    /// if not known). `None` from an acceptor, a joiner, a punch, or an
    /// older peer.
    pub expect: Option<(NodeId, PublicKey)>,
}

/// A peer's public identity: its key, and the nonce of its run (the node
/// id derives from both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ident {
    pub key: PublicKey,
    pub nonce: u64,
}

/// An origin's signature of an event, and of the unsigned events before
/// it, by their hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    pub covers: Vec<EventHash>,
    pub sig: Sig,
}

/// One member in a MEMBERS list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: NodeId,
    pub name: String,
    pub ip: Option<IpAddr>,
    pub port: u16,
    /// The sender has delivered this member's events up to `seq`.
    pub seq: u64,
    pub ident: Ident,
}

/// What an event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Join {
        name: String,
        ip: Option<IpAddr>,
        port: u16,
        ident: Ident,
    },
    Leave,
    Chat {
        room: String,
        text: String,
    },
    Suspect {
        target: NodeId,
    },
    /// "I am alive", answering the SUSPECT events `answers` names (none
    /// when we come back from isolation).
    Alive {
        answers: Vec<EventId>,
    },
    /// `:me text`: an action, shown as `* alice text`.
    Action {
        room: String,
        text: String,
    },
    /// `:nick name`: the origin goes by `name` from now on.
    Rename {
        name: String,
    },
    /// The origin's wall clock, ms since 1970 (UTC): when the events of
    /// the origin after this one were said.
    Clock {
        time: u64,
    },
    /// A room event (types 10 to 14): see [`rooms`].
    Room(rooms::RoomEvent),
    /// A type this build does not know (a newer peer's): relayed as it
    /// came, delivered as nothing.
    Other {
        kind: u8,
        payload: Vec<u8>,
    },
    /// An event this peer will not take, over a limit every sender keeps
    /// ([`Body::check`]): delivered as nothing and never relayed, so its
    /// origin's order goes on. Never encoded.
    Refused {
        kind: u8,
        why: &'static str,
    },
}

impl Body {
    /// Whether the event keeps the limits every sender keeps: a name no
    /// honest peer could have, a line longer than any may send, are a
    /// hostile peer's.
    pub fn check(&self) -> Result<(), &'static str> {
        match self {
            Body::Join { name, .. } if !valid_name(name) => Err("name"),
            Body::Chat { text, .. } if text.len() > MAX_TEXT => Err("text length"),
            Body::Chat { room, .. } if room.chars().count() > MAX_ROOM => Err("room name"),
            Body::Action { text, .. } if text.len() > MAX_TEXT => Err("text length"),
            Body::Action { room, .. } if room.chars().count() > MAX_ROOM => Err("room name"),
            Body::Rename { name } if !valid_name(name) => Err("name"),
            Body::Room(r) => r.check(),
            _ => Ok(()),
        }
    }

    /// The type byte on the wire.
    pub fn kind(&self) -> u8 {
        match self {
            Body::Join { .. } => 1,
            Body::Leave => 2,
            Body::Chat { .. } => 3,
            Body::Suspect { .. } => 4,
            Body::Alive { .. } => 5,
            Body::Action { .. } => 6,
            Body::Rename { .. } => 7,
            Body::Clock { .. } => 8,
            Body::Room(r) => r.kind(),
            Body::Other { kind, .. } | Body::Refused { kind, .. } => *kind,
        }
    }
}

/// An event flooded through the network, named by (origin, seq).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub origin: NodeId,
    pub seq: u64,
    pub body: Body,
    /// The origin's signature, on the events it signed.
    pub seal: Option<Seal>,
}

impl Event {
    pub fn id(&self) -> EventId {
        EventId {
            origin: self.origin,
            seq: self.seq,
        }
    }
}

/// A decoded frame body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Hello(Hello),
    Refuse {
        code: Refusal,
        text: String,
    },
    Members {
        last: bool,
        entries: Vec<Entry>,
    },
    Event(Event),
    Fetch {
        origin: NodeId,
        from: u64,
        to: u64,
    },
    Ping,
    Lack {
        origin: NodeId,
        oldest: u64,
    },
    Gone {
        ids: Vec<NodeId>,
    },
    /// A message of the encrypted handshake (in the clear, as Noise
    /// messages are).
    Noise(Vec<u8>),
    Ihave {
        ids: Vec<EventId>,
    },
    Graft {
        origin: NodeId,
        from: u64,
        to: u64,
    },
    Prune {
        origin: NodeId,
    },
    /// How many links from each origin our copies of its events come:
    /// (origin, hops), [`HOPS_UNKNOWN`] if we do not know.
    Hops {
        hops: Vec<(NodeId, u8)>,
    },
    PunchAsk {
        target: NodeId,
    },
    Punch {
        id: NodeId,
        addr: SocketAddr,
    },
}

/// The kind byte of an EVENT frame.
pub const EVENT: u8 = 4;
/// The kind bytes of hole punching's messages.
const PUNCH_ASK: u8 = 20;
const PUNCH: u8 = 21;
/// The kind byte of HOPS.
pub const HOPS: u8 = 23;

/// The (origin, seq) of an EVENT frame body, read from its header alone:
/// enough to tell a copy already delivered without decoding anything.
pub fn event_id(body: &[u8]) -> Option<EventId> {
    if body.len() < 18 || body[0] != EVENT {
        return None;
    }
    Some(EventId {
        origin: NodeId(BigEndian::read_u64(&body[1..9])),
        seq: BigEndian::read_u64(&body[9..17]),
    })
}

/// Whether an EVENT frame body carries a seal (a signature), read from its
/// header alone.
pub fn event_signed(body: &[u8]) -> bool {
    body.first() == Some(&EVENT) && body.get(18) == Some(&1)
}

/// Looks for one whole frame at the start of `buf`.
///
/// Returns `Ok(Some(n))` when the first `n` bytes of `buf` are a whole frame
/// (its body is `buf[4..n]`), `Ok(None)` when more bytes are needed, and an
/// error as soon as the length prefix is out of range, before the body
/// arrives.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = BigEndian::read_u32(buf);
    if len == 0 || len as usize > MAX_FRAME {
        return Err(WireError::BadLength(len));
    }
    let total = 4 + len as usize;
    Ok(if buf.len() >= total {
        Some(total)
    } else {
        None
    })
}

/// Appends `msg` to `out` as one whole frame, length prefix included.
///
/// # Errors
///
/// [`WireError::TooLong`] when a field is longer than its length prefix
/// can say or the frame would pass [`MAX_FRAME`]; `out` is left as it was.
pub fn encode(msg: &Msg, out: &mut Vec<u8>) -> Result<(), WireError> {
    let start = out.len();
    let r = encode_body(msg, out);
    let len = out.len() - start - 4;
    if let Err(e) = r.and(if len > MAX_PLAIN {
        Err(WireError::TooLong("message"))
    } else {
        Ok(())
    }) {
        out.truncate(start);
        return Err(e);
    }
    BigEndian::write_u32(&mut out[start..start + 4], len as u32);
    Ok(())
}

fn encode_body(msg: &Msg, out: &mut Vec<u8>) -> Result<(), WireError> {
    out.extend_from_slice(&[0; 4]);
    match msg {
        Msg::Hello(h) => {
            out.push(1);
            out.extend_from_slice(MAGIC);
            put_u16(out, h.version);
            put_u64(out, h.id.0);
            put_str(out, &h.name)?;
            put_u16(out, h.port);
            out.push(h.joining as u8);
            put_ip(out, h.you);
            put_ident(out, &h.ident);
            out.extend_from_slice(&h.proof);
            if let Some((id, key)) = h.expect {
                put_u64(out, id.0);
                out.extend_from_slice(&key);
            }
        }
        Msg::Refuse { code, text } => {
            out.push(2);
            out.push(*code as u8);
            put_str(out, text)?;
        }
        Msg::Members { last, entries } => {
            if entries.len() > MEMBERS_PER_FRAME {
                return Err(WireError::TooLong("member list"));
            }
            out.push(3);
            out.push(*last as u8);
            put_u16(out, entries.len() as u16);
            for e in entries {
                put_u64(out, e.id.0);
                put_str(out, &e.name)?;
                put_ip(out, e.ip);
                put_u16(out, e.port);
                put_u64(out, e.seq);
                put_ident(out, &e.ident);
            }
        }
        Msg::Event(ev) => {
            out.push(EVENT);
            put_u64(out, ev.origin.0);
            put_u64(out, ev.seq);
            out.push(ev.body.kind());
            put_seal(out, ev.seal.as_ref())?;
            match &ev.body {
                Body::Join {
                    name,
                    ip,
                    port,
                    ident,
                } => {
                    put_str(out, name)?;
                    put_ip(out, *ip);
                    put_u16(out, *port);
                    put_ident(out, ident);
                }
                Body::Leave => {}
                Body::Chat { room, text } => {
                    put_str(out, room)?;
                    put_str(out, text)?;
                }
                Body::Suspect { target } => put_u64(out, target.0),
                Body::Alive { answers } => {
                    if answers.len() > MAX_ANSWERS {
                        return Err(WireError::TooLong("answer list"));
                    }
                    out.push(answers.len() as u8);
                    for a in answers {
                        put_u64(out, a.origin.0);
                        put_u64(out, a.seq);
                    }
                }
                Body::Action { room, text } => {
                    put_str(out, room)?;
                    put_str(out, text)?;
                }
                Body::Rename { name } => put_str(out, name)?,
                Body::Clock { time } => put_u64(out, *time),
                Body::Room(r) => r.encode(out)?,
                Body::Other { payload, .. } => out.extend_from_slice(payload),
                Body::Refused { .. } => return Err(WireError::Invalid("refused event")),
            }
        }
        Msg::Fetch { origin, from, to } => {
            out.push(5);
            put_u64(out, origin.0);
            put_u64(out, *from);
            put_u64(out, *to);
        }
        Msg::Ping => out.push(6),
        Msg::Lack { origin, oldest } => {
            out.push(7);
            put_u64(out, origin.0);
            put_u64(out, *oldest);
        }
        Msg::Noise(m) => {
            out.push(12);
            out.extend_from_slice(m);
        }
        Msg::Gone { ids } => {
            if ids.len() > GONE_PER_FRAME {
                return Err(WireError::TooLong("gone list"));
            }
            out.push(8);
            put_u16(out, ids.len() as u16);
            for id in ids {
                put_u64(out, id.0);
            }
        }
        Msg::Ihave { ids } => {
            if ids.len() > IHAVE_PER_FRAME {
                return Err(WireError::TooLong("announcement list"));
            }
            out.push(9);
            put_u16(out, ids.len() as u16);
            for id in ids {
                put_u64(out, id.origin.0);
                put_u64(out, id.seq);
            }
        }
        Msg::Graft { origin, from, to } => {
            out.push(10);
            put_u64(out, origin.0);
            put_u64(out, *from);
            put_u64(out, *to);
        }
        Msg::Prune { origin } => {
            out.push(11);
            put_u64(out, origin.0);
        }
        Msg::Hops { hops } => {
            if hops.len() > HOPS_PER_FRAME {
                return Err(WireError::TooLong("hop count list"));
            }
            out.push(HOPS);
            put_u16(out, hops.len() as u16);
            for &(origin, h) in hops {
                put_u64(out, origin.0);
                out.push(h);
            }
        }
        Msg::PunchAsk { target } => {
            out.push(PUNCH_ASK);
            put_u64(out, target.0);
        }
        Msg::Punch { id, addr } => {
            out.push(PUNCH);
            put_u64(out, id.0);
            put_ip(out, Some(addr.ip()));
            put_u16(out, addr.port());
        }
    }
    Ok(())
}

/// Encodes `msg` as a new frame.
///
/// # Errors
///
/// As [`encode`].
pub fn frame(msg: &Msg) -> Result<Frame, WireError> {
    let mut out = Vec::with_capacity(64);
    encode(msg, &mut out)?;
    Ok(out.into())
}

/// Encodes a message whose size is bounded by construction (HELLO, PING,
/// FETCH, LACK, GRAFT, PRUNE, an IHAVE of at most [`IHAVE_PER_FRAME`], a
/// HOPS of at most [`HOPS_PER_FRAME`], a REFUSE of ours): it always fits.
pub fn small(msg: &Msg) -> Frame {
    frame(msg).expect("a message bounded by construction fits in a frame")
}

/// The frame of an event from its parts: header, `seal`, and the payload
/// as [`payload_of`] makes it.
///
/// # Errors
///
/// As [`encode`].
pub fn event_frame(
    origin: NodeId,
    seq: u64,
    kind: u8,
    seal: Option<&Seal>,
    payload: &[u8],
) -> Result<Frame, WireError> {
    if seal.is_none() {
        // Most events: the frame made in place, one allocation.
        let len = 19 + payload.len();
        if len > MAX_PLAIN {
            return Err(WireError::TooLong("event"));
        }
        let mut head = [0; 23];
        BigEndian::write_u32(&mut head[..4], len as u32);
        head[4] = EVENT;
        BigEndian::write_u64(&mut head[5..13], origin.0);
        BigEndian::write_u64(&mut head[13..21], seq);
        head[21] = kind;
        return Ok(joined(&head, payload));
    }
    let mut out =
        Vec::with_capacity(4 + 18 + payload.len() + seal.map_or(1, |s| 66 + 16 * s.covers.len()));
    out.extend_from_slice(&[0; 4]);
    out.push(EVENT);
    put_u64(&mut out, origin.0);
    put_u64(&mut out, seq);
    out.push(kind);
    put_seal(&mut out, seal)?;
    out.extend_from_slice(payload);
    let len = out.len() - 4;
    if len > MAX_PLAIN {
        return Err(WireError::TooLong("event"));
    }
    BigEndian::write_u32(&mut out[..4], len as u32);
    Ok(out.into())
}

/// A frame of `body` as received (the length prefix put back), to relay
/// or keep without encoding it again.
pub fn frame_of(body: &[u8]) -> Frame {
    joined(&(body.len() as u32).to_be_bytes(), body)
}

/// Frames up to this long are put together on the stack.
const JOINED_SMALL: usize = 512;

/// A frame of `head` then `rest`, in one allocation and whole copies (a
/// frame collected from bytes is copied a byte at a time): a small one,
/// most by far, put together on the stack first; a larger one in a vector
/// first (its copies cost more than an allocation).
fn joined(head: &[u8], rest: &[u8]) -> Frame {
    let len = head.len() + rest.len();
    if len <= JOINED_SMALL {
        let mut buf = [0; JOINED_SMALL];
        buf[..head.len()].copy_from_slice(head);
        buf[head.len()..len].copy_from_slice(rest);
        return Frame::from(&buf[..len]);
    }
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(head);
    v.extend_from_slice(rest);
    v.into()
}

/// Decodes one frame body (the bytes after the length prefix).
pub fn decode(body: &[u8]) -> Result<Msg, WireError> {
    let mut r = body;
    let msg = match u8_(&mut r)? {
        1 => {
            if r.len() < 4 || &r[..4] != MAGIC {
                return Err(WireError::Invalid("hello magic"));
            }
            r = &r[4..];
            let hello = Msg::Hello(Hello {
                version: u16_(&mut r)?,
                id: NodeId(u64_(&mut r)?),
                name: str_(&mut r)?,
                port: u16_(&mut r)?,
                joining: u8_(&mut r)? & 1 == 1,
                you: ip_(&mut r)?,
                ident: ident_(&mut r)?,
                proof: sig_(&mut r)?,
                expect: if r.is_empty() {
                    None
                } else {
                    let id = NodeId(u64_(&mut r)?);
                    Some((id, bytes(&mut r, 32)?.try_into().expect("32 bytes")))
                },
            });
            // Fields of later builds: skipped.
            r = &[];
            hello
        }
        2 => Msg::Refuse {
            code: Refusal::from_u8(u8_(&mut r)?),
            text: str_(&mut r)?,
        },
        3 => {
            let last = u8_(&mut r)? != 0;
            let count = u16_(&mut r)? as usize;
            let entries = list_(&mut r, count, MEMBERS_PER_FRAME, "member count", |r| {
                Ok(Entry {
                    id: NodeId(u64_(r)?),
                    name: str_(r)?,
                    ip: ip_(r)?,
                    port: u16_(r)?,
                    seq: u64_(r)?,
                    ident: ident_(r)?,
                })
            })?;
            Msg::Members { last, entries }
        }
        EVENT => {
            let origin = NodeId(u64_(&mut r)?);
            let seq = u64_(&mut r)?;
            let kind = u8_(&mut r)?;
            let seal = seal_(&mut r)?;
            let body = match kind {
                1 => Body::Join {
                    name: str_(&mut r)?,
                    ip: ip_(&mut r)?,
                    port: u16_(&mut r)?,
                    ident: ident_(&mut r)?,
                },
                2 => Body::Leave,
                3 => Body::Chat {
                    room: str_(&mut r)?,
                    text: str_(&mut r)?,
                },
                4 => Body::Suspect {
                    target: NodeId(u64_(&mut r)?),
                },
                5 => {
                    let n = u8_(&mut r)? as usize;
                    let answers = list_(&mut r, n, MAX_ANSWERS, "answer count", event_id_)?;
                    Body::Alive { answers }
                }
                6 => Body::Action {
                    room: str_(&mut r)?,
                    text: str_(&mut r)?,
                },
                7 => Body::Rename {
                    name: str_(&mut r)?,
                },
                8 => Body::Clock {
                    time: u64_(&mut r)?,
                },
                kind @ rooms::FIRST..=rooms::LAST => {
                    Body::Room(rooms::RoomEvent::decode(kind, &mut r)?)
                }
                kind => Body::Other {
                    kind,
                    payload: std::mem::take(&mut r).to_vec(),
                },
            };
            Msg::Event(Event {
                origin,
                seq,
                body,
                seal,
            })
        }
        5 => Msg::Fetch {
            origin: NodeId(u64_(&mut r)?),
            from: u64_(&mut r)?,
            to: u64_(&mut r)?,
        },
        6 => Msg::Ping,
        7 => Msg::Lack {
            origin: NodeId(u64_(&mut r)?),
            oldest: u64_(&mut r)?,
        },
        12 => Msg::Noise(std::mem::take(&mut r).to_vec()),
        8 => {
            let count = u16_(&mut r)? as usize;
            let ids = list_(&mut r, count, GONE_PER_FRAME, "gone count", |r| {
                Ok(NodeId(u64_(r)?))
            })?;
            Msg::Gone { ids }
        }
        9 => {
            let count = u16_(&mut r)? as usize;
            let ids = list_(
                &mut r,
                count,
                IHAVE_PER_FRAME,
                "announcement count",
                event_id_,
            )?;
            Msg::Ihave { ids }
        }
        10 => Msg::Graft {
            origin: NodeId(u64_(&mut r)?),
            from: u64_(&mut r)?,
            to: u64_(&mut r)?,
        },
        11 => Msg::Prune {
            origin: NodeId(u64_(&mut r)?),
        },
        HOPS => {
            let count = u16_(&mut r)? as usize;
            let hops = list_(&mut r, count, HOPS_PER_FRAME, "hop count list", |r| {
                Ok((NodeId(u64_(r)?), u8_(r)?))
            })?;
            Msg::Hops { hops }
        }
        PUNCH_ASK => Msg::PunchAsk {
            target: NodeId(u64_(&mut r)?),
        },
        PUNCH => {
            let id = NodeId(u64_(&mut r)?);
            let ip = ip_(&mut r)?.ok_or(WireError::Invalid("punch address"))?;
            Msg::Punch {
                id,
                addr: SocketAddr::new(ip, u16_(&mut r)?),
            }
        }
        k => return Err(WireError::UnknownKind(k)),
    };
    if !r.is_empty() {
        return Err(WireError::Trailing);
    }
    Ok(msg)
}

/// Frames and bytes (length prefixes included) by message kind: a peer's
/// account of its own traffic.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    frames: [u64; 13],
    bytes: [u64; 13],
}

impl Tally {
    /// Counts one frame by its body.
    pub fn count(&mut self, body: &[u8]) {
        let k = body.first().map_or(0, |&k| k as usize);
        let k = if k < self.frames.len() { k } else { 0 };
        self.frames[k] += 1;
        self.bytes[k] += 4 + body.len() as u64;
    }

    /// `event F B, ihave F B, graft F B, prune F B, other F B`: frames and
    /// bytes of full events, of each lazy push message, and of the rest.
    pub fn summary(&self) -> String {
        let mut other = (0, 0);
        for k in (0..self.frames.len()).filter(|&k| ![EVENT as usize, 9, 10, 11].contains(&k)) {
            other.0 += self.frames[k];
            other.1 += self.bytes[k];
        }
        let kinds = [
            ("event", EVENT as usize),
            ("ihave", 9),
            ("graft", 10),
            ("prune", 11),
        ];
        let mut s: Vec<String> = kinds
            .iter()
            .map(|&(name, k)| format!("{name} {} {}", self.frames[k], self.bytes[k]))
            .collect();
        s.push(format!("other {} {}", other.0, other.1));
        s.join(", ")
    }
}

/// Whether `name` may be used as a user name: 1 to [`MAX_NAME`]
/// characters, none of them white space, control characters or `:` (which
/// ends the name in a chat line).
pub fn valid_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=MAX_NAME).contains(&n)
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':')
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.write_u16::<BigEndian>(v).expect("Vec write");
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.write_u64::<BigEndian>(v).expect("Vec write");
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), WireError> {
    let n = u16::try_from(s.len()).map_err(|_| WireError::TooLong("string"))?;
    put_u16(out, n);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_ip(out: &mut Vec<u8>, ip: Option<IpAddr>) {
    match ip {
        None => out.push(0),
        Some(IpAddr::V4(a)) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
}

fn put_ident(out: &mut Vec<u8>, i: &Ident) {
    out.extend_from_slice(&i.key);
    put_u64(out, i.nonce);
}

fn put_seal(out: &mut Vec<u8>, seal: Option<&Seal>) -> Result<(), WireError> {
    let Some(s) = seal else {
        out.push(0);
        return Ok(());
    };
    let n = u8::try_from(s.covers.len()).map_err(|_| WireError::TooLong("seal"))?;
    out.push(1);
    out.push(n);
    for c in &s.covers {
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&s.sig);
    Ok(())
}

fn ident_(r: &mut &[u8]) -> Result<Ident, WireError> {
    Ok(Ident {
        key: bytes(r, 32)?.try_into().expect("32 bytes"),
        nonce: u64_(r)?,
    })
}

fn sig_(r: &mut &[u8]) -> Result<Sig, WireError> {
    Ok(bytes(r, 64)?.try_into().expect("64 bytes"))
}

fn seal_(r: &mut &[u8]) -> Result<Option<Seal>, WireError> {
    match u8_(r)? {
        0 => Ok(None),
        1 => {
            let n = u8_(r)? as usize;
            let mut covers = Vec::with_capacity(n);
            for _ in 0..n {
                covers.push(bytes(r, 16)?.try_into().expect("16 bytes"));
            }
            Ok(Some(Seal {
                covers,
                sig: sig_(r)?,
            }))
        }
        _ => Err(WireError::Invalid("seal")),
    }
}

/// The hash of the event whose frame body is `body` (see
/// [`super::crypto::event_hash`]), read from the bytes as they came: its
/// header and its payload, past the seal. `None` for anything else.
pub fn event_hash(body: &[u8]) -> Option<EventHash> {
    let id = event_id(body)?;
    let kind = *body.get(17)?;
    let mut r = body.get(18..)?;
    seal_(&mut r).ok()?;
    Some(super::crypto::event_hash(id.origin, id.seq, kind, r))
}

/// The payload bytes of `body` (an event's, without its header and seal),
/// as [`event_hash`] hashes them.
pub fn payload_of(body: &Body) -> Result<Vec<u8>, WireError> {
    payload_from(body.clone())
}

/// [`payload_of`] a body we are done with (no copy of it is made).
pub fn payload_from(body: Body) -> Result<Vec<u8>, WireError> {
    let ev = Event {
        origin: NodeId(0),
        seq: 0,
        body,
        seal: None,
    };
    let mut out = Vec::with_capacity(64);
    encode(&Msg::Event(ev), &mut out)?;
    // Length prefix, kind, origin, seq, type and an empty seal.
    out.drain(..4 + 1 + 8 + 8 + 1 + 1);
    Ok(out)
}

/// `n` items, `n` just read (at most `max`, else invalid: `what`), each
/// read by `item`.
fn list_<T>(
    r: &mut &[u8],
    n: usize,
    max: usize,
    what: &'static str,
    item: impl Fn(&mut &[u8]) -> Result<T, WireError>,
) -> Result<Vec<T>, WireError> {
    if n > max {
        return Err(WireError::Invalid(what));
    }
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        items.push(item(r)?);
    }
    Ok(items)
}

fn event_id_(r: &mut &[u8]) -> Result<EventId, WireError> {
    Ok(EventId {
        origin: NodeId(u64_(r)?),
        seq: u64_(r)?,
    })
}

fn u8_(r: &mut &[u8]) -> Result<u8, WireError> {
    r.read_u8().map_err(|_| WireError::Truncated)
}

fn u16_(r: &mut &[u8]) -> Result<u16, WireError> {
    r.read_u16::<BigEndian>().map_err(|_| WireError::Truncated)
}

fn u64_(r: &mut &[u8]) -> Result<u64, WireError> {
    r.read_u64::<BigEndian>().map_err(|_| WireError::Truncated)
}

pub(super) fn bytes<'a>(r: &mut &'a [u8], n: usize) -> Result<&'a [u8], WireError> {
    if r.len() < n {
        return Err(WireError::Truncated);
    }
    let (head, tail) = r.split_at(n);
    *r = tail;
    Ok(head)
}

fn str_(r: &mut &[u8]) -> Result<String, WireError> {
    let n = u16_(r)? as usize;
    let b = bytes(r, n)?;
    std::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|_| WireError::Invalid("UTF-8"))
}

fn ip_(r: &mut &[u8]) -> Result<Option<IpAddr>, WireError> {
    Ok(match u8_(r)? {
        0 => None,
        4 => {
            let b: [u8; 4] = bytes(r, 4)?.try_into().expect("4 bytes");
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        6 => {
            let b: [u8; 16] = bytes(r, 16)?.try_into().expect("16 bytes");
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => return Err(WireError::Invalid("address family")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Msg> {
        vec![
            Msg::Hello(Hello {
                version: VERSION,
                id: NodeId(0xdead_beef_0102_0304),
                name: "alice".into(),
                port: 40123,
                joining: true,
                you: Some("127.0.0.1".parse().unwrap()),
                ident: Ident {
                    key: [5; 32],
                    nonce: 9,
                },
                proof: [6; 64],
                expect: Some((NodeId(7), [8; 32])),
            }),
            Msg::Refuse {
                code: Refusal::NameTaken,
                text: "the name alice is taken".into(),
            },
            Msg::Members {
                last: true,
                entries: vec![
                    Entry {
                        id: NodeId(7),
                        name: "bob".into(),
                        ip: Some("::1".parse().unwrap()),
                        port: 1,
                        seq: u64::MAX,
                        ident: Ident::default(),
                    },
                    Entry {
                        id: NodeId(8),
                        name: "żółw".into(),
                        ip: None,
                        port: 2,
                        seq: 0,
                        ident: Ident {
                            key: [1; 32],
                            nonce: u64::MAX,
                        },
                    },
                ],
            },
            Msg::Event(Event {
                origin: NodeId(1),
                seq: 2,
                body: Body::Join {
                    name: "carol".into(),
                    ip: Some("10.0.0.1".parse().unwrap()),
                    port: 3,
                    ident: Ident::default(),
                },
                seal: None,
            }),
            Msg::Event(Event {
                origin: NodeId(1),
                seq: 3,
                body: Body::Chat {
                    room: "lobby".into(),
                    text: "hello, 世界".into(),
                },
                seal: Some(Seal {
                    covers: vec![[3; 16], [4; 16]],
                    sig: [7; 64],
                }),
            }),
            Msg::Event(Event {
                origin: NodeId(1),
                seq: 4,
                body: Body::Leave,
                seal: None,
            }),
            Msg::Event(Event {
                origin: NodeId(1),
                seq: 5,
                body: Body::Suspect { target: NodeId(9) },
                seal: None,
            }),
            Msg::Event(Event {
                origin: NodeId(1),
                seq: 6,
                body: Body::Alive {
                    answers: vec![
                        EventId {
                            origin: NodeId(3),
                            seq: 4,
                        },
                        EventId {
                            origin: NodeId(5),
                            seq: 6,
                        },
                    ],
                },
                seal: None,
            }),
            Msg::Event(Event {
                origin: NodeId(1),
                seq: 8,
                body: Body::Action {
                    room: "lobby".into(),
                    text: "waves".into(),
                },
                seal: None,
            }),
            Msg::Event(Event {
                origin: NodeId(1),
                seq: 9,
                body: Body::Rename {
                    name: "alicia".into(),
                },
                seal: None,
            }),
            Msg::Event(Event {
                origin: NodeId(1),
                seq: 10,
                body: Body::Clock {
                    time: 1_764_560_750_123,
                },
                seal: None,
            }),
            Msg::Event(Event {
                origin: NodeId(1),
                seq: 7,
                body: Body::Other {
                    kind: 200,
                    payload: b"from a newer version".to_vec(),
                },
                seal: Some(Seal {
                    covers: vec![],
                    sig: [8; 64],
                }),
            }),
            Msg::Fetch {
                origin: NodeId(1),
                from: 2,
                to: 3,
            },
            Msg::Ping,
            Msg::Lack {
                origin: NodeId(5),
                oldest: 6,
            },
            Msg::Gone {
                ids: vec![NodeId(1), NodeId(u64::MAX)],
            },
            Msg::Ihave {
                ids: vec![
                    EventId {
                        origin: NodeId(3),
                        seq: 9,
                    },
                    EventId {
                        origin: NodeId(u64::MAX),
                        seq: 1,
                    },
                ],
            },
            Msg::Graft {
                origin: NodeId(4),
                from: 7,
                to: 6,
            },
            Msg::Prune { origin: NodeId(5) },
            Msg::Hops {
                hops: vec![(NodeId(3), 2), (NodeId(u64::MAX), HOPS_UNKNOWN)],
            },
            Msg::Noise(vec![1, 2, 3]),
            Msg::PunchAsk { target: NodeId(77) },
            Msg::Punch {
                id: NodeId(78),
                addr: "10.77.0.3:40123".parse().unwrap(),
            },
            Msg::Punch {
                id: NodeId(79),
                addr: "[fd77::3]:1".parse().unwrap(),
            },
        ]
    }

    #[test]
    fn round_trip() {
        for m in samples() {
            let f = frame(&m).unwrap();
            assert_eq!(frame_len(&f), Ok(Some(f.len())));
            assert_eq!(frame_of(&f[4..]), f);
            assert_eq!(decode(&f[4..]), Ok(m));
        }
    }

    /// Frames put together from parts (on the stack or not) are the
    /// frames encoding makes, on either side of the stack's size.
    #[test]
    fn frames_from_parts_match_encoding() {
        // (A frame is 32 bytes and the text: 512 and 513 on either side.)
        for n in [0, 1, 200, JOINED_SMALL - 32, JOINED_SMALL - 31, 5_000] {
            let text = "x".repeat(n);
            let body = Body::Chat {
                room: "lobby".into(),
                text,
            };
            let payload = payload_of(&body).unwrap();
            let ev = Msg::Event(Event {
                origin: NodeId(7),
                seq: 9,
                body,
                seal: None,
            });
            let f = frame(&ev).unwrap();
            let made = event_frame(NodeId(7), 9, 3, None, &payload).unwrap();
            assert_eq!(made, f, "payload of {} bytes", payload.len());
            assert_eq!(frame_of(&f[4..]), f);
        }
    }

    #[test]
    fn split_at_every_byte() {
        let mut stream = Vec::new();
        for m in samples() {
            encode(&m, &mut stream).unwrap();
        }
        for cut in 0..stream.len() {
            // Feed the first `cut` bytes, then the rest: every frame must
            // come out whole, whatever the split.
            let mut buf = stream[..cut].to_vec();
            let mut got = Vec::new();
            let mut feed = |buf: &mut Vec<u8>| {
                while let Some(n) = frame_len(buf).unwrap() {
                    got.push(decode(&buf[4..n]).unwrap());
                    buf.drain(..n);
                }
            };
            feed(&mut buf);
            buf.extend_from_slice(&stream[cut..]);
            feed(&mut buf);
            assert!(buf.is_empty());
            assert_eq!(got, samples());
        }
    }

    #[test]
    fn event_id_from_header_alone() {
        for m in samples() {
            let f = frame(&m).unwrap();
            let want = match &m {
                Msg::Event(ev) => Some(ev.id()),
                _ => None,
            };
            assert_eq!(event_id(&f[4..]), want);
        }
        assert_eq!(event_id(&[EVENT, 0, 0]), None);
    }

    #[test]
    fn encoding_never_cuts_short() {
        let long = "x".repeat(u16::MAX as usize + 1);
        let m = Msg::Refuse {
            code: Refusal::Other,
            text: long,
        };
        let mut out = vec![9];
        assert_eq!(encode(&m, &mut out), Err(WireError::TooLong("string")));
        assert_eq!(out, [9]);
        let big = Msg::Event(Event {
            origin: NodeId(1),
            seq: 1,
            body: Body::Other {
                kind: 99,
                payload: vec![0; MAX_PLAIN],
            },
            seal: None,
        });
        assert_eq!(frame(&big), Err(WireError::TooLong("message")));
        // Header (kind, origin, seq, type) and an empty seal: 19 bytes.
        let fits = Msg::Event(Event {
            origin: NodeId(1),
            seq: 1,
            body: Body::Other {
                kind: 99,
                payload: vec![0; MAX_PLAIN - 19],
            },
            seal: None,
        });
        assert_eq!(frame(&fits).unwrap().len(), MAX_PLAIN + 4);
    }

    #[test]
    fn length_checked_before_body() {
        assert_eq!(frame_len(&[0, 0, 0]), Ok(None));
        assert_eq!(frame_len(&[0, 0, 0, 0]), Err(WireError::BadLength(0)));
        assert_eq!(
            frame_len(&[0xff, 0xff, 0xff, 0xff]),
            Err(WireError::BadLength(u32::MAX))
        );
        let max = (MAX_FRAME as u32).to_be_bytes();
        assert_eq!(frame_len(&max), Ok(None));
        let over = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert!(frame_len(&over).is_err());
    }

    #[test]
    fn every_truncation_is_an_error() {
        for m in samples() {
            let f = frame(&m).unwrap();
            let body = &f[4..];
            if matches!(
                &m,
                Msg::Event(Event {
                    body: Body::Other { .. },
                    ..
                }) | Msg::Noise(_)
            ) {
                // An unknown type's payload runs to the end: any cut after
                // its type byte is a shorter payload, not an error.
                continue;
            }
            if let Msg::Hello(h) = &m {
                // Cut where its optional field starts: a HELLO without
                // it; more bytes at its end are a later build's fields.
                let cut = body.len() - 40;
                let old = Msg::Hello(Hello {
                    expect: None,
                    ..h.clone()
                });
                assert_eq!(decode(&body[..cut]), Ok(old));
                for n in (0..body.len()).filter(|&n| n != cut) {
                    assert!(decode(&body[..n]).is_err(), "{m:?} cut at {n}");
                }
                let mut long = body.to_vec();
                long.extend_from_slice(&[1, 2, 3]);
                assert_eq!(decode(&long), Ok(m.clone()));
                continue;
            }
            for n in 0..body.len() {
                assert!(decode(&body[..n]).is_err(), "{m:?} cut at {n}");
            }
            let mut long = body.to_vec();
            long.push(0);
            assert_eq!(decode(&long), Err(WireError::Trailing));
        }
    }

    #[test]
    fn bad_fields() {
        assert_eq!(decode(&[99]), Err(WireError::UnknownKind(99)));
        assert_eq!(decode(&[1, b'x']), Err(WireError::Invalid("hello magic")));
        // A CHAT whose text is not UTF-8.
        let mut f = vec![4];
        f.extend_from_slice(&[0; 16]);
        f.extend_from_slice(&[3, 0, 0, 1, b'a', 0, 2, 0xff, 0xfe]);
        assert_eq!(decode(&f), Err(WireError::Invalid("UTF-8")));
        // A member count larger than any honest frame carries.
        assert_eq!(
            decode(&[3, 1, 0xff, 0xff]),
            Err(WireError::Invalid("member count"))
        );
        // As many announcements as a frame holds, and one more.
        assert_eq!(
            decode(&[9, 0xff, 0xff]),
            Err(WireError::Invalid("announcement count"))
        );
        let id = EventId {
            origin: NodeId(1),
            seq: 1,
        };
        let full = Msg::Ihave {
            ids: vec![id; IHAVE_PER_FRAME],
        };
        assert_eq!(decode(&small(&full)[4..]), Ok(full));
        let over = Msg::Ihave {
            ids: vec![id; IHAVE_PER_FRAME + 1],
        };
        assert_eq!(frame(&over), Err(WireError::TooLong("announcement list")));
        // HOPS: as many as a frame may say, no more.
        assert_eq!(
            decode(&[HOPS, 0xff, 0xff]),
            Err(WireError::Invalid("hop count list"))
        );
        let full = Msg::Hops {
            hops: vec![(NodeId(1), 3); HOPS_PER_FRAME],
        };
        assert_eq!(decode(&small(&full)[4..]), Ok(full));
        let over = Msg::Hops {
            hops: vec![(NodeId(1), 3); HOPS_PER_FRAME + 1],
        };
        assert_eq!(frame(&over), Err(WireError::TooLong("hop count list")));
        assert_eq!(decode(&[HOPS, 0, 1, 0, 0]), Err(WireError::Truncated));
        // A PUNCH with no address to dial.
        let mut f = vec![PUNCH];
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&[0, 0, 1]);
        assert_eq!(decode(&f), Err(WireError::Invalid("punch address")));
    }

    #[test]
    fn limits_on_receipt() {
        let chat = |room: &str, n: usize| Body::Chat {
            room: room.into(),
            text: "x".repeat(n),
        };
        assert_eq!(chat("lobby", MAX_TEXT).check(), Ok(()));
        assert!(chat("lobby", MAX_TEXT + 1).check().is_err());
        assert!(chat(&"r".repeat(MAX_ROOM + 1), 1).check().is_err());
        let join = |name: &str| Body::Join {
            name: name.into(),
            ip: None,
            port: 1,
            ident: Ident::default(),
        };
        assert_eq!(join("bob").check(), Ok(()));
        assert!(join("b\u{1b}b").check().is_err());
        let rename = |name: &str| Body::Rename { name: name.into() };
        assert_eq!(rename("alicia").check(), Ok(()));
        assert!(rename("a b").check().is_err());
        let action = |n: usize| Body::Action {
            room: "lobby".into(),
            text: "x".repeat(n),
        };
        assert_eq!(action(MAX_TEXT).check(), Ok(()));
        assert!(action(MAX_TEXT + 1).check().is_err());
    }

    #[test]
    fn names() {
        assert!(valid_name("alice"));
        assert!(valid_name("日本"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a:b"));
        assert!(!valid_name("a\x1b[31m"));
        assert!(!valid_name(&"x".repeat(MAX_NAME + 1)));
        assert!(valid_name(&"x".repeat(MAX_NAME)));
    }

    #[test]
    fn tally_counts_by_kind() {
        let mut t = Tally::default();
        for m in samples() {
            t.count(&frame(&m).unwrap()[4..]);
        }
        t.count(&[200, 1, 2]);
        t.count(&[]);
        let s = t.summary();
        assert!(s.starts_with("event 9 "), "{s}");
        assert!(
            s.contains("ihave 1 39, graft 1 29, prune 1 13, other 14 "),
            "{s}"
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = Vec::new();
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf.clear();
            let n = (x % 64) as usize;
            for i in 0..n {
                buf.push((x >> (i % 8 * 8)) as u8 ^ i as u8);
            }
            let _ = decode(&buf);
            let _ = frame_len(&buf);
        }
    }
}
