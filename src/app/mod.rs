//! Applications: what events mean to the user.
//!
//! Each application ([`chat`] and [`files`] now; rooms and private
//! messages later) turns commands into events and delivered events into things to
//! show. It reaches the network only through [`Net`]: publish an event,
//! read the member list, show something. It never sees links or sequence
//! numbers.

pub mod chat;
pub mod dm;
pub mod files;

use crate::proto::NodeId;
use crate::proto::crypto::PublicKey;
use crate::proto::wire::Body;
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
    /// The name to show for member `id`.
    fn name_of(&self, id: NodeId) -> String;
    /// The members shown as present, us among them.
    fn members(&self) -> Vec<MemberView>;
    /// Our node id.
    fn id(&self) -> NodeId {
        NodeId(0)
    }
    /// The member present under `name` (its name trusted), if any.
    fn find(&self, _name: &str) -> Option<NodeId> {
        None
    }
    /// The key known for `name`: its present member's, or the one it had
    /// when last met.
    fn key_of(&self, _name: &str) -> Option<PublicKey> {
        None
    }
    /// The node ids of the members present, ours among them.
    fn ring(&self) -> Vec<NodeId> {
        vec![self.id()]
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
    Chat {
        from: String,
        room: String,
        text: String,
        own: bool,
    },
    MemberJoined(String),
    MemberLeft {
        name: String,
        lost: bool,
    },
    Members(Vec<MemberView>),
    /// A private message, ours (`own`) or to us.
    Private {
        from: String,
        to: String,
        text: String,
        own: bool,
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
    /// An answer to a question the user asked (`:whois`, `:trust`).
    Info(String),
    /// File offers and transfers.
    File(files::Note),
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
    pub name: String,
    pub addr: Option<SocketAddr>,
    pub reach: Reach,
}
