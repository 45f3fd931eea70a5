//! Room events on the wire: event types 10 to 16, their payloads, encode
//! and decode (types 17 to 19 are kept for rooms to come).
//!
//! Every room event is an ordinary event (origin, seq, type, payload),
//! flooded to everyone and delivered once, in order per origin; what they
//! mean is `app::rooms`'s. Strings and addresses are as in the parent
//! module; `u32` is big-endian. A room is named by `room:str` (any case
//! on the wire; peers compare names in ASCII lower case) and `era:u32`,
//! which counts the times that name has been created: a room deleted and
//! created again is a new room.
//!
//! ```text
//! 10 ROOM    name:str, era:u32, epoch:u32, from:u64, lord:32 bytes, op:u8, arg:str,
//!            flags:u8 (bit 0: deleted; bit 1: the sender holds the room's
//!            whole recent history; bit 2: it took the room by election;
//!            bit 3: withdrawn, this state no longer stands),
//!            gave: count:u8 × id:u64,        members it handed the room to
//!            kicked: count:u8 × name:str,    who may not enter
//!            roster: count:u16 × (id:u64, m:u32)   members, as it sees them
//!        The room as the origin, its owner for `epoch`, has it: every
//!        change (created, kicked, handed over, deleted) is the whole
//!        state again. `from`: the owner it took the room over from;
//!        `epoch` counts the changes of owner (1: created), so a claim
//!        names the state it takes over: `from`'s, at the epoch below.
//!        A creation's `era` is its creator's: the top 24 bits of its id,
//!        then a count.
//!        `lord`: the key the room belongs to (an Ed25519 public key): its
//!        creator's, or the key of the member it was given to; an owner
//!        elected keeps the lord of the owner it replaced, so that the
//!        lord, back under a new node id, takes the room again.
//!        `op` says what just happened (1 create, 2 taken over as given,
//!        3 taken over by election, 4 withdrawn, 5 announce, 6 kick,
//!        7 unkick, 8 give, 9 delete, 10 close, 11 taken back by its lord;
//!        others: announce) and `arg` whom it is about (kick, unkick,
//!        give), else empty.
//! 11 SAY     room:str, era:u32, n:u32, text:str     a line in a room; n
//!                                                   counts the origin's lines
//! 12 ENTER   m:u32, room:str, era:u32, want:u8      the origin is now in
//!            that room (empty: the lobby); m counts its moves; want: it
//!            has not the room's history and asks the owner for it
//! 13 SHOUT   n:u32, text:str                        a line to every room
//! 14 HISTORY room:str, era:u32, count:u8 × (origin:u64, n:u32, shout:u8,
//!            text:str)                              the owner's last lines
//! 15 SIGNED  owner:u64, key:32 bytes, nonce:u64, sig:64 bytes, then a
//!            ROOM payload (as type 10's)
//!        A room state as its owner `owner` set it, signed by it: `key`
//!        and `nonce` make `owner` (BLAKE2s, as every node id), `sig` is
//!        `key`'s Ed25519 signature of [`signed_bytes`] (the state as it is
//!        judged: its op, arg, flag bit 1 and roster left out). An owner
//!        sends one after each ROOM event of its own; one that takes a room
//!        over from another sends, before its claim, the state it took the
//!        room from, as that owner signed it: so that anyone can check that
//!        the owner it replaces really set the room so, even one that never
//!        saw that state (it came later, or its owner was lost first).
//! 16 WHEN    room:str, era:u32, count:u8 × (said:u64, seq:u64)
//!        Sent by an owner just before each HISTORY, one entry per line
//!        of it, in order: when the line was said (ms since 1970, by its
//!        sender's clock; 0: not known) and its event's number in its
//!        origin's order (0: not known), which with the origin names the
//!        line on every peer. A HISTORY cannot carry them itself: peers
//!        built before WHEN refuse trailing bytes after a payload, and
//!        take WHEN as an event of a newer version (relayed, shown as
//!        nothing).
//! ```
//!
//! Counts are bounded on decoding ([`MAX_GAVE`], [`MAX_KICKED`],
//! [`MAX_ROSTER`], [`HISTORY_LINES`]); names, texts and sizes on receipt
//! ([`RoomEvent::check`]), like every event's.

use super::{
    MAX_TEXT, WireError, bytes, list_, put_str, put_u16, put_u64, str_, u8_, u16_, u64_, valid_name,
};
use crate::proto::NodeId;
use crate::proto::crypto::{PublicKey, Sig};
use byteorder::{BigEndian, ReadBytesExt, WriteBytesExt};

/// The event types, the first and the last kept for rooms.
pub const ROOM: u8 = 10;
pub const SAY: u8 = 11;
pub const ENTER: u8 = 12;
pub const SHOUT: u8 = 13;
pub const HISTORY: u8 = 14;
pub const SIGNED: u8 = 15;
pub const WHEN: u8 = 16;
pub const FIRST: u8 = 10;
pub const LAST: u8 = 16;

/// Members one owner may hand a room to within one epoch (the next after
/// one dies mid-handover, and so on).
pub const MAX_GAVE: usize = 8;
/// Names on a room's kick list.
pub const MAX_KICKED: usize = 64;
/// Members listed in one ROOM event.
pub const MAX_ROSTER: usize = 4096;
/// Lines in a room's history, and their bytes of text.
pub const HISTORY_LINES: usize = 50;
pub const HISTORY_BYTES: usize = 32 * 1024;
/// Longest room name, and shortest.
pub const MAX_ROOM: usize = super::MAX_ROOM;
pub const MIN_ROOM: usize = 2;

/// What just happened to a room, in a ROOM event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    /// Taken over from an owner that handed it over (GIVE).
    Given,
    /// Taken over by election: the owner is gone.
    Elected,
    /// Withdrawn: an election whose owner proved alive after all.
    Withdraw,
    /// Nothing new: the state again, for peers that joined later.
    Announce,
    Kick,
    Unkick,
    /// Handed over to the member named in `arg` (it takes over next).
    Give,
    Delete,
    /// Deleted because nobody was left to hand it over to.
    Close,
    /// Taken back by its lord (the key it belongs to) under a new node id.
    Reclaim,
    /// An op of a newer version: taken as an announce.
    Other(u8),
}

impl Op {
    fn to_u8(self) -> u8 {
        match self {
            Op::Create => 1,
            Op::Given => 2,
            Op::Elected => 3,
            Op::Withdraw => 4,
            Op::Announce => 5,
            Op::Kick => 6,
            Op::Unkick => 7,
            Op::Give => 8,
            Op::Delete => 9,
            Op::Close => 10,
            Op::Reclaim => 11,
            Op::Other(k) => k,
        }
    }

    fn from_u8(v: u8) -> Op {
        match v {
            1 => Op::Create,
            2 => Op::Given,
            3 => Op::Elected,
            4 => Op::Withdraw,
            5 => Op::Announce,
            6 => Op::Kick,
            7 => Op::Unkick,
            8 => Op::Give,
            9 => Op::Delete,
            10 => Op::Close,
            11 => Op::Reclaim,
            k => Op::Other(k),
        }
    }
}

/// A room as its owner has it (ROOM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomState {
    pub name: String,
    pub era: u32,
    pub epoch: u32,
    pub from: NodeId,
    /// The key the room belongs to (see the module docs).
    pub lord: PublicKey,
    pub op: Op,
    pub arg: String,
    pub deleted: bool,
    /// The owner holds the room's whole recent history.
    pub complete: bool,
    /// The owner took this epoch by election (the owner before it gone).
    pub elected: bool,
    /// Withdrawn by its owner: this state no longer stands.
    pub void: bool,
    pub gave: Vec<NodeId>,
    pub kicked: Vec<String>,
    pub roster: Vec<(NodeId, u32)>,
}

impl RoomState {
    /// Room `name` as its creator founds it (op create, epoch 1, the
    /// whole history, nobody kicked or given it), in era `era`, belonging
    /// to key `lord`.
    pub fn founding(name: &str, era: u32, lord: PublicKey) -> RoomState {
        RoomState {
            name: name.to_owned(),
            era,
            epoch: 1,
            from: NodeId(0),
            lord,
            op: Op::Create,
            arg: String::new(),
            deleted: false,
            complete: true,
            elected: false,
            void: false,
            gave: vec![],
            kicked: vec![],
            roster: vec![],
        }
    }
}

/// One line of a HISTORY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub origin: NodeId,
    pub n: u32,
    pub shout: bool,
    pub text: String,
}

/// A room event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// Boxed: the largest by far, and events are moved about a lot.
    State(Box<RoomState>),
    Say {
        room: String,
        era: u32,
        n: u32,
        text: String,
    },
    /// `room` empty: the lobby.
    Enter {
        m: u32,
        room: String,
        era: u32,
        want: bool,
    },
    Shout {
        n: u32,
        text: String,
    },
    History {
        room: String,
        era: u32,
        lines: Vec<Line>,
    },
    Signed(Box<Signed>),
    /// For the HISTORY that follows: each line's (said, seq), 0 unknown.
    When {
        room: String,
        era: u32,
        lines: Vec<(u64, u64)>,
    },
}

/// A room state signed by its owner (SIGNED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub owner: NodeId,
    pub key: PublicKey,
    pub nonce: u64,
    pub sig: Sig,
    pub state: RoomState,
}

/// What an owner signs of its state `st` (see SIGNED): a label, the
/// owner, and the state with what is not judged left out.
pub fn signed_bytes(owner: NodeId, st: &RoomState) -> Vec<u8> {
    let bare = RoomState {
        op: Op::Announce,
        arg: String::new(),
        complete: false,
        roster: Vec::new(),
        ..st.clone()
    };
    let mut out = b"p2pchat room state".to_vec();
    put_u64(&mut out, owner.0);
    // Within the limits of one ROOM event: it encodes.
    let _ = encode_state(&bare, &mut out);
    out
}

/// Whether `name` may name a room: an ASCII letter, then ASCII letters,
/// digits, `-` or `_`, [`MIN_ROOM`] to [`MAX_ROOM`] in all. (`lobby` is
/// one, and is everyone's.)
pub fn valid_room(name: &str) -> bool {
    let b = name.as_bytes();
    (MIN_ROOM..=MAX_ROOM).contains(&b.len())
        && b[0].is_ascii_alphabetic()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

impl RoomEvent {
    /// The event type.
    pub fn kind(&self) -> u8 {
        match self {
            RoomEvent::State(_) => ROOM,
            RoomEvent::Say { .. } => SAY,
            RoomEvent::Enter { .. } => ENTER,
            RoomEvent::Shout { .. } => SHOUT,
            RoomEvent::History { .. } => HISTORY,
            RoomEvent::Signed(_) => SIGNED,
            RoomEvent::When { .. } => WHEN,
        }
    }

    /// Whether the event keeps the limits every sender keeps (see
    /// [`super::Body::check`]).
    pub fn check(&self) -> Result<(), &'static str> {
        match self {
            RoomEvent::State(s) => check_state(s),
            RoomEvent::Signed(s) => check_state(&s.state),
            RoomEvent::Say { room, text, .. } => {
                if !valid_room(room) {
                    Err("room name")
                } else if text.len() > MAX_TEXT {
                    Err("text length")
                } else {
                    Ok(())
                }
            }
            RoomEvent::Enter { room, .. } if !room.is_empty() && !valid_room(room) => {
                Err("room name")
            }
            RoomEvent::Enter { .. } => Ok(()),
            RoomEvent::Shout { text, .. } if text.len() > MAX_TEXT => Err("text length"),
            RoomEvent::Shout { .. } => Ok(()),
            RoomEvent::When { room, .. } if !valid_room(room) => Err("room name"),
            RoomEvent::When { .. } => Ok(()),
            RoomEvent::History { room, lines, .. } => {
                let bytes: usize = lines.iter().map(|l| l.text.len()).sum();
                if !valid_room(room) {
                    Err("room name")
                } else if bytes > HISTORY_BYTES || lines.iter().any(|l| l.text.len() > MAX_TEXT) {
                    Err("history length")
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Appends the payload (after the type byte).
    pub(super) fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        match self {
            RoomEvent::State(s) => encode_state(s, out)?,
            RoomEvent::Signed(s) => {
                put_u64(out, s.owner.0);
                out.extend_from_slice(&s.key);
                put_u64(out, s.nonce);
                out.extend_from_slice(&s.sig);
                encode_state(&s.state, out)?;
            }
            RoomEvent::Say { room, era, n, text } => {
                put_str(out, room)?;
                put_u32(out, *era);
                put_u32(out, *n);
                put_str(out, text)?;
            }
            RoomEvent::Enter { m, room, era, want } => {
                put_u32(out, *m);
                put_str(out, room)?;
                put_u32(out, *era);
                out.push(u8::from(*want));
            }
            RoomEvent::Shout { n, text } => {
                put_u32(out, *n);
                put_str(out, text)?;
            }
            RoomEvent::History { room, era, lines } => {
                put_history(out, room, *era, lines, |out, l| {
                    put_u64(out, l.origin.0);
                    put_u32(out, l.n);
                    out.push(u8::from(l.shout));
                    put_str(out, &l.text)
                })?;
            }
            RoomEvent::When { room, era, lines } => {
                put_history(out, room, *era, lines, |out, &(said, seq)| {
                    put_u64(out, said);
                    put_u64(out, seq);
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    /// Decodes the payload of an event of type `kind` (one of
    /// [`FIRST`]`..=`[`LAST`]).
    pub(super) fn decode(kind: u8, r: &mut &[u8]) -> Result<RoomEvent, WireError> {
        Ok(match kind {
            ROOM => RoomEvent::State(Box::new(decode_state(r)?)),
            SIGNED => RoomEvent::Signed(Box::new(Signed {
                owner: NodeId(u64_(r)?),
                key: key_(r)?,
                nonce: u64_(r)?,
                sig: bytes(r, 64)?.try_into().expect("64 bytes"),
                state: decode_state(r)?,
            })),
            SAY => RoomEvent::Say {
                room: str_(r)?,
                era: u32_(r)?,
                n: u32_(r)?,
                text: str_(r)?,
            },
            ENTER => RoomEvent::Enter {
                m: u32_(r)?,
                room: str_(r)?,
                era: u32_(r)?,
                want: u8_(r)? != 0,
            },
            SHOUT => RoomEvent::Shout {
                n: u32_(r)?,
                text: str_(r)?,
            },
            HISTORY => {
                let room = str_(r)?;
                let era = u32_(r)?;
                let lines = counted(r, HISTORY_LINES, "history count", |r| {
                    Ok(Line {
                        origin: NodeId(u64_(r)?),
                        n: u32_(r)?,
                        shout: u8_(r)? != 0,
                        text: str_(r)?,
                    })
                })?;
                RoomEvent::History { room, era, lines }
            }
            WHEN => {
                let room = str_(r)?;
                let era = u32_(r)?;
                let lines = counted(r, HISTORY_LINES, "history count", |r| {
                    Ok((u64_(r)?, u64_(r)?))
                })?;
                RoomEvent::When { room, era, lines }
            }
            _ => return Err(WireError::Invalid("room event type")),
        })
    }
}

/// `room:str, era:u32`, then a count of history lines, `count:u8` (at
/// most [`HISTORY_LINES`]), and each, written by `line` (HISTORY and WHEN).
fn put_history<T>(
    out: &mut Vec<u8>,
    room: &str,
    era: u32,
    lines: &[T],
    line: impl Fn(&mut Vec<u8>, &T) -> Result<(), WireError>,
) -> Result<(), WireError> {
    if lines.len() > HISTORY_LINES {
        return Err(WireError::TooLong("history"));
    }
    put_str(out, room)?;
    put_u32(out, era);
    out.push(lines.len() as u8);
    for l in lines {
        line(out, l)?;
    }
    Ok(())
}

/// A count, `count:u8` (at most `max`, else invalid: `what`), then that
/// many items, each read by `item` (history lines, gave, kicked).
fn counted<T>(
    r: &mut &[u8],
    max: usize,
    what: &'static str,
    item: impl Fn(&mut &[u8]) -> Result<T, WireError>,
) -> Result<Vec<T>, WireError> {
    let n = u8_(r)? as usize;
    list_(r, n, max, what, item)
}

/// Appends a ROOM payload.
fn encode_state(s: &RoomState, out: &mut Vec<u8>) -> Result<(), WireError> {
    if s.gave.len() > MAX_GAVE {
        return Err(WireError::TooLong("gave list"));
    }
    if s.kicked.len() > MAX_KICKED {
        return Err(WireError::TooLong("kick list"));
    }
    if s.roster.len() > MAX_ROSTER {
        return Err(WireError::TooLong("roster"));
    }
    put_str(out, &s.name)?;
    put_u32(out, s.era);
    put_u32(out, s.epoch);
    put_u64(out, s.from.0);
    out.extend_from_slice(&s.lord);
    out.push(s.op.to_u8());
    put_str(out, &s.arg)?;
    out.push(
        u8::from(s.deleted)
            | u8::from(s.complete) << 1
            | u8::from(s.elected) << 2
            | u8::from(s.void) << 3,
    );
    out.push(s.gave.len() as u8);
    for id in &s.gave {
        put_u64(out, id.0);
    }
    out.push(s.kicked.len() as u8);
    for k in &s.kicked {
        put_str(out, k)?;
    }
    put_u16(out, s.roster.len() as u16);
    for (id, m) in &s.roster {
        put_u64(out, id.0);
        put_u32(out, *m);
    }
    Ok(())
}

/// Reads a ROOM payload.
fn decode_state(r: &mut &[u8]) -> Result<RoomState, WireError> {
    let name = str_(r)?;
    let era = u32_(r)?;
    let epoch = u32_(r)?;
    let from = NodeId(u64_(r)?);
    let lord = key_(r)?;
    let op = Op::from_u8(u8_(r)?);
    let arg = str_(r)?;
    let flags = u8_(r)?;
    let gave = counted(r, MAX_GAVE, "gave count", |r| Ok(NodeId(u64_(r)?)))?;
    let kicked = counted(r, MAX_KICKED, "kick count", str_)?;
    let n = u16_(r)? as usize;
    if n > MAX_ROSTER {
        return Err(WireError::Invalid("roster count"));
    }
    // Twelve bytes an entry: no more than the frame holds.
    let mut roster = Vec::with_capacity(n.min(r.len() / 12));
    for _ in 0..n {
        roster.push((NodeId(u64_(r)?), u32_(r)?));
    }
    let st = RoomState {
        name,
        era,
        epoch,
        from,
        lord,
        op,
        arg,
        deleted: flags & 1 != 0,
        complete: flags & 2 != 0,
        elected: flags & 4 != 0,
        void: flags & 8 != 0,
        gave,
        kicked,
        roster,
    };
    Ok(st)
}

/// The limits of one room state (see [`RoomEvent::check`]).
fn check_state(s: &RoomState) -> Result<(), &'static str> {
    if !valid_room(&s.name) {
        return Err("room name");
    }
    if !(s.arg.is_empty() || valid_name(&s.arg)) || !s.kicked.iter().all(|k| valid_name(k)) {
        return Err("name");
    }
    if s.era == 0 || s.epoch == 0 {
        return Err("room number");
    }
    Ok(())
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.write_u32::<BigEndian>(v).expect("Vec write");
}

fn u32_(r: &mut &[u8]) -> Result<u32, WireError> {
    r.read_u32::<BigEndian>().map_err(|_| WireError::Truncated)
}

fn key_(r: &mut &[u8]) -> Result<PublicKey, WireError> {
    Ok(bytes(r, 32)?.try_into().expect("32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::super::{Body, Event, Msg, decode, frame};
    use super::*;

    pub(crate) fn samples() -> Vec<RoomEvent> {
        vec![
            RoomEvent::State(Box::new(RoomState {
                name: "Dev-ops_2".into(),
                era: 3,
                epoch: 7,
                from: NodeId(9),
                lord: [7; 32],
                op: Op::Kick,
                arg: "carol".into(),
                deleted: false,
                complete: true,
                elected: true,
                void: false,
                gave: vec![NodeId(1), NodeId(u64::MAX)],
                kicked: vec!["carol".into(), "żółw".into()],
                roster: vec![(NodeId(4), 2), (NodeId(5), u32::MAX)],
            })),
            RoomEvent::State(Box::new(RoomState {
                name: "dev".into(),
                era: 1,
                epoch: 1,
                from: NodeId(0),
                lord: [0; 32],
                op: Op::Other(99),
                arg: String::new(),
                deleted: true,
                complete: false,
                elected: false,
                void: true,
                gave: vec![],
                kicked: vec![],
                roster: vec![],
            })),
            RoomEvent::Say {
                room: "dev".into(),
                era: 1,
                n: 42,
                text: "hello, 世界".into(),
            },
            RoomEvent::Enter {
                m: 3,
                room: String::new(),
                era: 0,
                want: false,
            },
            RoomEvent::Enter {
                m: 4,
                room: "dev".into(),
                era: 2,
                want: true,
            },
            RoomEvent::Shout {
                n: 1,
                text: "FIRE".into(),
            },
            RoomEvent::History {
                room: "dev".into(),
                era: 2,
                lines: vec![
                    Line {
                        origin: NodeId(1),
                        n: 1,
                        shout: false,
                        text: "one".into(),
                    },
                    Line {
                        origin: NodeId(2),
                        n: 9,
                        shout: true,
                        text: String::new(),
                    },
                ],
            },
            RoomEvent::When {
                room: "dev".into(),
                era: 2,
                lines: vec![(1_764_560_750_123, 7), (0, 0)],
            },
        ]
    }

    fn msg(ev: RoomEvent) -> Msg {
        Msg::Event(Event {
            origin: NodeId(77),
            seq: 5,
            body: Body::Room(ev),
            seal: None,
        })
    }

    #[test]
    fn round_trip_and_every_truncation_fails() {
        for ev in samples() {
            let m = msg(ev.clone());
            let f = frame(&m).unwrap();
            assert_eq!(f[4 + 17], ev.kind());
            assert_eq!(decode(&f[4..]), Ok(m.clone()));
            for n in 0..f.len() - 4 {
                assert!(decode(&f[4..4 + n]).is_err(), "{ev:?} cut at {n}");
            }
            let mut long = f[4..].to_vec();
            long.push(0);
            assert_eq!(decode(&long), Err(WireError::Trailing));
        }
    }

    #[test]
    fn counts_are_checked_before_allocating() {
        // A ROOM claiming 255 gave ids, then the same with 255 kicked.
        let mut f = vec![super::super::EVENT];
        f.extend_from_slice(&[0; 16]);
        f.push(ROOM);
        f.push(0); // unsigned
        f.extend_from_slice(&[0, 3, b'd', b'e', b'v']);
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&[0; 32]);
        f.extend_from_slice(&[1, 0, 0, 0]);
        let mut gave = f.clone();
        gave.push(255);
        assert_eq!(decode(&gave), Err(WireError::Invalid("gave count")));
        f.push(0);
        f.push(255);
        assert_eq!(decode(&f), Err(WireError::Invalid("kick count")));
        // A HISTORY of 51 lines.
        let mut h = vec![super::super::EVENT];
        h.extend_from_slice(&[0; 16]);
        h.extend_from_slice(&[HISTORY, 0, 0, 2, b'a', b'b', 0, 0, 0, 1, 51]);
        assert_eq!(decode(&h), Err(WireError::Invalid("history count")));
    }

    #[test]
    fn limits_on_receipt() {
        assert_eq!(Body::Room(samples()[0].clone()).check(), Ok(()));
        let say = |room: &str, n: usize| {
            Body::Room(RoomEvent::Say {
                room: room.into(),
                era: 1,
                n: 1,
                text: "x".repeat(n),
            })
        };
        assert_eq!(say("dev", MAX_TEXT).check(), Ok(()));
        assert!(say("dev", MAX_TEXT + 1).check().is_err());
        assert!(say("../x", 1).check().is_err());
        let enter = |room: &str| {
            Body::Room(RoomEvent::Enter {
                m: 1,
                room: room.into(),
                era: 1,
                want: false,
            })
        };
        assert_eq!(enter("").check(), Ok(()));
        assert!(enter("d").check().is_err());
        let mut s = RoomState {
            op: Op::Kick,
            arg: "a b".into(),
            ..RoomState::founding("dev", 1, [0; 32])
        };
        assert!(
            Body::Room(RoomEvent::State(Box::new(s.clone())))
                .check()
                .is_err()
        );
        s.arg = "bob".into();
        s.kicked = vec!["x\u{1b}".into()];
        assert!(
            Body::Room(RoomEvent::State(Box::new(s.clone())))
                .check()
                .is_err()
        );
        s.kicked.clear();
        s.era = 0;
        assert!(Body::Room(RoomEvent::State(Box::new(s))).check().is_err());
    }

    #[test]
    fn room_names() {
        for ok in ["dev", "ab", "Dev-Ops_2", "lobby", &"x".repeat(MAX_ROOM)] {
            assert!(valid_room(ok), "{ok}");
        }
        for bad in [
            "",
            "d",
            "2dev",
            "-dev",
            "de v",
            "dév",
            "dev!",
            &"x".repeat(MAX_ROOM + 1),
        ] {
            assert!(!valid_room(bad), "{bad}");
        }
    }
}
