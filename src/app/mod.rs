//! Applications: what events mean to the user.
//!
//! Each application ([`chat`], [`rooms`] and [`files`] now; private
//! messages later) turns commands into events and delivered events into things to
//! show. It reaches the network only through [`Net`]: publish an event,
//! read the member list, show something. It never sees links or sequence
//! numbers.

pub mod chat;
pub mod dm;
pub mod files;
pub mod rooms;

use crate::proto::crypto::{PublicKey, Sig};
use crate::proto::wire::Body;
use crate::proto::{EventId, NodeId};
use std::fmt;
use std::net::SocketAddr;

/// The room everyone starts in.
pub const LOBBY: &str = "lobby";

/// What an application may ask of the network, and tell the user.
pub trait Net {
    /// Floods `body` as our next event.
    fn publish(&mut self, body: Body);
    /// Tells the user.
    fn show(&mut self, show: Show);
    /// Our own name.
    fn me(&self) -> &str;
    /// Whether our own lines are shown anywhere: when not (plain lines
    /// only), they need not be built.
    fn shows_own(&self) -> bool {
        true
    }
    /// The name to show for member `id`.
    fn name_of(&self, id: NodeId) -> String;
    /// The members shown as present, us among them.
    fn members(&self) -> Vec<MemberView>;
    /// Our own node id.
    fn id(&self) -> NodeId;
    /// Whether member `id` is shown as present (not lost, not gone); we
    /// are.
    fn is_present(&self, id: NodeId) -> bool;
    /// The key member `id`'s node id is bound to (ours for our id), if
    /// known: its events are verified as that key's.
    fn key_of(&self, id: NodeId) -> Option<PublicKey>;
    /// The member present under `name` (its name trusted), if any.
    fn find(&self, _name: &str) -> Option<NodeId> {
        None
    }
    /// The key known for `name`: its present member's, or the one it had
    /// when last met.
    fn key_of_name(&self, _name: &str) -> Option<PublicKey> {
        None
    }
    /// The id of the event being delivered now, if one is (see
    /// [`MsgId`]).
    fn event(&self) -> Option<EventId> {
        None
    }
    /// The id our next event will have, if we can publish (see
    /// [`MsgId`]).
    fn next_event(&self) -> Option<EventId> {
        None
    }
    /// Our wall clock (ms since 1970), if known.
    fn wall(&self) -> Option<u64> {
        None
    }
    /// The node ids of the members present, ours among them.
    fn ring(&self) -> Vec<NodeId> {
        vec![self.id()]
    }
    /// `msg` signed with our key: the key, this run's nonce (they make
    /// our node id) and the signature; `None` if we cannot sign.
    fn sign(&self, _msg: &[u8]) -> Option<(PublicKey, u64, Sig)> {
        None
    }
}

/// Something for the user interface to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Show {
    /// We are in: welcomed through `via`, `members` including us.
    Joined {
        via: SocketAddr,
        members: usize,
    },
    /// A line said; `said`: when, by its sender's clock (ms since 1970),
    /// if it told us.
    Chat {
        from: String,
        room: String,
        text: String,
        own: bool,
        said: Option<u64>,
        id: Option<MsgId>,
    },
    /// `:me text`: shown as `* from text`.
    Action {
        from: String,
        room: String,
        text: String,
        own: bool,
        said: Option<u64>,
        id: Option<MsgId>,
    },
    /// A member goes by another name now (`own`: we do).
    Renamed {
        old: String,
        new: String,
        own: bool,
        said: Option<u64>,
    },
    MemberJoined(String),
    MemberLeft {
        name: String,
        lost: bool,
    },
    Members(Vec<MemberView>),
    /// A private message, ours (`own`) or to us; `said`: when, by its
    /// sender's clock (ms since 1970), if known (it may have been held
    /// for us a while).
    Private {
        from: String,
        to: String,
        text: String,
        own: bool,
        said: Option<u64>,
        id: Option<MsgId>,
    },
    /// Where our private message `n` to `to` is: `sent` (to a member
    /// present), `queued` (held for an absent one), `delivered`.
    Delivery {
        to: String,
        n: u64,
        state: String,
    },
    /// `:peers`: the members LAN discovery found (None: it is off).
    Discovered(Option<Vec<MemberView>>),
    /// A problem worth telling the user that is not fatal.
    Warning(String),
    // Rooms (see `rooms`). A line said in a room is a `Chat` with that
    // room.
    /// A line to every room.
    Shout {
        from: String,
        text: String,
        own: bool,
        id: Option<MsgId>,
    },
    /// A line said in `room` before we entered it, shown as we enter;
    /// `said`: when, by its sender's clock, if the room's owner told us.
    History {
        room: String,
        from: String,
        text: String,
        shout: bool,
        said: Option<u64>,
        id: Option<MsgId>,
    },
    /// We are in `room` now (the prompt shows it).
    Here(String),
    /// Something happened in or to `room`: `event` names it for JSON
    /// (`moved`, `owner`, `kicked`...), `text` says it.
    Room {
        room: String,
        event: &'static str,
        text: String,
    },
    /// `:rooms`.
    Rooms(Vec<RoomView>),
    /// `:who ROOM`: its members, and its owner's name.
    RoomMembers {
        room: String,
        owner: Option<String>,
        members: Vec<MemberView>,
    },
    /// A command refused: nothing was sent.
    Error(String),
    /// An answer to a question the user asked (`:whois`, `:trust`).
    Info(String),
    /// File offers and transfers.
    File(files::Note),
}

impl Show {
    /// A line we say ourselves (`action`: with `:me`), in `room` (its name
    /// as shown), as it is shown before it is sent: under the id its event
    /// will have.
    fn own_line(net: &impl Net, action: bool, room: String, text: &str) -> Show {
        let (from, text) = (net.me().to_owned(), text.to_owned());
        let id = net.next_event().map(MsgId::Event);
        if action {
            Show::Action {
                from,
                room,
                text,
                own: true,
                said: None,
                id,
            }
        } else {
            Show::Chat {
                from,
                room,
                text,
                own: true,
                said: None,
                id,
            }
        }
    }
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
fn truncate(s: &mut String, max: usize) {
    s.truncate(s.floor_char_boundary(max));
}

/// A message's id, the same on every peer that shows it, so that a bot
/// can tell a message it has seen and refer to it: an event's origin and
/// number (`ORIGIN-SEQ`, hex); for a private message its sender, its
/// number from that sender to that name, and the name (`SENDER-pN-NAME`);
/// for a file offer its sender and its number (`SENDER-oN`), which stay
/// the offer's when it is announced again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsgId {
    Event(EventId),
    Private { from: NodeId, n: u64, to: String },
    Offer { from: NodeId, num: u32 },
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MsgId::Event(e) => write!(f, "{:016x}-{:x}", e.origin.0, e.seq),
            MsgId::Private { from, n, to } => write!(f, "{:016x}-p{n:x}-{to}", from.0),
            MsgId::Offer { from, num } => write!(f, "{:016x}-o{num:x}", from.0),
        }
    }
}

/// One line of `:rooms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomView {
    pub name: String,
    /// Its owner's name (the lobby has none).
    pub owner: Option<String>,
    pub members: usize,
    /// We are in it.
    pub here: bool,
}

/// How a member is reached from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    Me,
    Direct,
    Relayed,
}

impl fmt::Display for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reach::Me => "self",
            Reach::Direct => "direct",
            Reach::Relayed => "relayed",
        })
    }
}

/// One line of `:who`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub id: NodeId,
    pub name: String,
    pub addr: Option<SocketAddr>,
    pub reach: Reach,
}

/// A network of one peer's own, for the applications' unit tests (chat
/// and files; dm and rooms keep theirs: their peers see one another, by
/// name and key).
#[cfg(test)]
pub(crate) mod fake {
    use super::{MemberView, Net, Reach, Show};
    use crate::proto::NodeId;
    use crate::proto::crypto::PublicKey;
    use crate::proto::wire::Body;

    /// We are node 0, named `me`; the members present are us and
    /// `others`, nodes 1, 2, …, in that order. Keeps what is published
    /// and shown.
    pub struct Fake {
        pub published: Vec<Body>,
        pub shown: Vec<Show>,
        members: Vec<String>,
    }

    impl Fake {
        pub fn new(me: &str, others: &[&str]) -> Fake {
            Fake {
                published: Vec::new(),
                shown: Vec::new(),
                members: std::iter::once(me)
                    .chain(others.iter().copied())
                    .map(str::to_owned)
                    .collect(),
            }
        }
    }

    impl Net for Fake {
        fn publish(&mut self, body: Body) {
            self.published.push(body);
        }
        fn show(&mut self, show: Show) {
            self.shown.push(show);
        }
        fn me(&self) -> &str {
            &self.members[0]
        }
        fn name_of(&self, id: NodeId) -> String {
            format!("n{}", id.0)
        }
        fn members(&self) -> Vec<MemberView> {
            self.members
                .iter()
                .enumerate()
                .map(|(i, n)| MemberView {
                    id: NodeId(i as u64),
                    name: n.clone(),
                    addr: None,
                    reach: Reach::Relayed,
                })
                .collect()
        }
        fn id(&self) -> NodeId {
            NodeId(0)
        }
        fn is_present(&self, id: NodeId) -> bool {
            id.0 < self.members.len() as u64
        }
        fn key_of(&self, _: NodeId) -> Option<PublicKey> {
            None
        }
    }
}
