//! The node: one peer, its protocol machines wired together.
//!
//! The event loop and the simulation drive a [`Node`] with inputs (a link
//! was accepted, connected, lost; a frame arrived; the user typed a
//! command; the time is now) and drain [`Action`]s from it (send this frame
//! on that link, open a link, close one, show this, stop). It owns the
//! protocol machines ([`Links`], [`Membership`], [`Mesh`], [`Broadcast`])
//! and the applications ([`Chat`], [`Rooms`]), and routes what one says to the others;
//! none of them calls another. Nothing here touches a socket, a clock or a
//! terminal: time is a number of milliseconds the caller passes in,
//! randomness comes from a seed.
//!
//! Joining: a new peer says HELLO (joining) to any member, which checks the
//! name and answers HELLO and its member list, giving for each member the
//! last sequence number it delivered from it. The joiner floods a JOIN
//! event and links to more members until it has `degree` links. A peer
//! prints its port before its own join is done: joiners that reach it
//! meanwhile are held (see [`Links::hold`]) and answered once it is in.

use crate::app::chat::Chat;
use crate::app::dm::{self, Dm};
use crate::app::files::{self, Files};
use crate::app::rooms::{self, Rooms};
use crate::app::{MemberView, Net, Reach};
use crate::proto::broadcast::{self, Accepted, Broadcast, FETCH_MAX, Gap};
use crate::proto::crypto::{self, Identity, PublicKey};
use crate::proto::discovery::Standing;
use crate::proto::link::{self, BadHello, Links, Stage};
use crate::proto::membership::{self, ASK_MAX, INTRO_MAX, Membership, Out};
use crate::proto::mesh::{self, DIAL_GIVE_UP, Mesh, ShedIo};
use crate::proto::route::{self, Route};
use crate::proto::wire::{self, Body, Entry, Event, Frame, Hello, Ident, Msg, Refusal, WireError};
use crate::proto::{EventId, Io, PROBE_EVERY, Remember, Sink};
use std::collections::HashMap;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

pub use crate::app::Show;
pub use crate::proto::link::MAX_PENDING;
pub use crate::proto::membership::MAX_MEMBERS;
pub use crate::proto::{LinkId, Millis, NodeId, Rng};

/// Two peers joining under one name within this of each other are a race,
/// settled by node id; after it, the name belongs to whoever has it.
const JOIN_RACE: Millis = 3_000;
/// A member that leaves within [`JOIN_RACE`] of joining may have lost a
/// join race: its leaving is shown after this, unless a JOIN under its
/// name comes meanwhile (the winner's). At most `RACE_LEFT` wait.
const RACE_LEFT_WAIT: Millis = 1_000;
const RACE_LEFT: usize = 64;
/// Not running for this long past a timer (stopped, suspended) is told:
/// the others may have given this peer up.
const STOPPED: Millis = 10_000;
/// A SUSPECT about us answered this long after it was said (by the CLOCK
/// said just before it) ran out of time to be refuted (2 s), even between
/// clocks a few seconds apart: whoever asked has given us up.
const ANSWERED_LATE: u64 = 5_000;
/// Being given up is told at most this often (wall clock, ms).
const TOLD_LOST_QUIET: u64 = 60_000;
/// How long leaving waits for a link that is being dialled.
const LEAVE_WAIT: Millis = 1_000;
/// A punch that failed sooner than this was no test of the NATs (a local
/// error, or the other end had let us in already): the user is not told.
const PUNCH_TOLD: Millis = 2_000;
/// How long leaving waits for the rooms we own to be taken over.
const HANDOVER_WAIT: Millis = 8_000;
/// Keys remembered that names were refused with, for `:trust`.
const OFFERED: usize = 16;
/// Warnings about strangers of one kind: at most one in this many ms.
const QUIET: Millis = 10_000;

/// Kinds of warning about strangers, each shown now and then.
#[derive(Clone, Copy)]
enum Quiet {
    Secret,
    Key,
    Forged,
}

/// Members found by discovery remembered, at most (for `:peers`).
pub const FOUND_MAX: usize = 1024;

/// How a peer given to [`Node::found`] was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Its announcement was heard on the LAN (`--discover`).
    Discovery,
}

/// Links a peer keeps by default, and accepts at most.
pub const DEGREE: usize = 6;
pub const MAX_LINKS: usize = 256;

/// Tunables: link counts and timers.
#[derive(Debug, Clone)]
pub struct Config {
    /// Links a peer tries to keep.
    pub degree: usize,
    /// Above this many links a peer sheds one, politely (twice `degree`).
    pub max_degree: usize,
    /// Links a peer accepts at most; beyond it newcomers are refused.
    pub max_links: usize,
    /// An idle link gets a PING this often.
    pub heartbeat: Millis,
    /// A link silent this long is dead.
    pub link_timeout: Millis,
    /// A link must complete HELLO within this.
    pub handshake_timeout: Millis,
    /// A suspected member has this long to refute.
    pub refute_wait: Millis,
    /// A gap in a sender's events is fetched after this, and again as often.
    pub gap_wait: Millis,
    /// A gap nobody can fill is skipped after this.
    pub gap_giveup: Millis,
    /// Lost members remembered and probed, at most; beyond it the longest
    /// lost is forgotten (but for where its events had got to).
    pub lost_max: usize,
    /// The key a network secret gives (see `crypto::psk`): links are
    /// encrypted, and only peers with the same secret get in.
    pub psk: Option<[u8; 32]>,
    /// Files: where fetched ones go, and the largest offered or fetched.
    pub download_dir: PathBuf,
    pub max_file: u64,
    /// Relay every event on every link, instead of lazy push on a tree.
    pub flood: bool,
    /// Our own lines are shown somewhere (a terminal, JSON, a chat log,
    /// IRC); plain lines do not show them, and then they are not built.
    pub show_own: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            degree: DEGREE,
            max_degree: 2 * DEGREE,
            max_links: MAX_LINKS,
            heartbeat: 20_000,
            link_timeout: 60_000,
            handshake_timeout: 5_000,
            refute_wait: 2_000,
            gap_wait: 300,
            gap_giveup: 10_000,
            lost_max: 256,
            psk: None,
            download_dir: PathBuf::from("."),
            max_file: files::DEFAULT_MAX_FILE,
            flood: false,
            show_own: true,
        }
    }
}

/// What the event loop must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Queue this frame (length prefix included) on the link.
    Send(LinkId, Frame),
    /// Open a TCP connection for this new link; report
    /// [`Node::connected`] or [`Node::link_down`].
    Connect(LinkId, SocketAddr),
    /// Flush what is queued on the link, then close it. The node has
    /// forgotten it already.
    Close(LinkId),
    /// Tell the user.
    Show(Show),
    /// Flush every link and stop, for this reason.
    Stop(Stop),
    /// Remember that `name` has `key` (trust on first use); `replace`: a
    /// key the user now trusts in place of the one known.
    Trust {
        name: String,
        key: PublicKey,
        replace: bool,
    },
    /// File I/O for a transfer (see [`crate::files_io`]); what it did
    /// comes back to [`Node::disk_done`].
    File(files::Io),
}

impl From<Io> for Action {
    fn from(io: Io) -> Action {
        match io {
            Io::Send(l, f) => Action::Send(l, f),
            Io::Connect(l, a) => Action::Connect(l, a),
            Io::Close(l) => Action::Close(l),
        }
    }
}

impl Sink for VecDeque<Action> {
    fn io(&mut self, io: Io) {
        self.push_back(io.into());
    }
}

/// Why a node stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The user left.
    Left,
    /// Our name belongs to another member.
    NameTaken(String),
    /// The peer we joined through would not have us.
    Refused(String),
    /// Nobody could be reached to join through.
    Unreachable(String),
}

impl Stop {
    /// The exit status for it: 0 for leaving, 1 for a failure.
    pub fn status(&self) -> i32 {
        match self {
            Stop::Left => 0,
            _ => 1,
        }
    }

    /// What to tell the user, if anything.
    pub fn message(&self) -> Option<&str> {
        match self {
            Stop::Left => None,
            Stop::NameTaken(m) | Stop::Refused(m) | Stop::Unreachable(m) => Some(m),
        }
    }
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Say(String),
    Who,
    /// Show a member's key fingerprint.
    Whois(String),
    /// Accept the key a member now has for its name.
    Trust(String),
    /// `:me`: an action.
    Me(String),
    /// `:nick`: go by another name.
    Nick(String),
    /// A private message: to, text.
    Msg(String, String),
    /// Our private messages not delivered yet.
    Msgs,
    /// `:send [NAME] PATH`, as typed after the command.
    Send(String),
    Files,
    /// `:get ID [DIR]`.
    Get(u32, Option<PathBuf>),
    Cancel(u32),
    Quit,
    /// A room command (`:rooms`, `:join`...).
    Room(rooms::Cmd),
    /// `:peers`: the members found by discovery.
    Peers,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Dialling `addrs[next - 1]` on `link`, to join through it.
    Joining {
        addrs: Vec<SocketAddr>,
        next: usize,
        label: String,
        link: LinkId,
    },
    Member,
    Done,
}

/// One peer. See the module documentation.
pub struct Node {
    id: NodeId,
    ident: Identity,
    /// Names and the keys they had when first seen, here and in earlier
    /// runs (trust on first use).
    known: HashMap<String, PublicKey>,
    /// Keys other than the known one that names were offered with lately
    /// (refused at HELLO), at most [`OFFERED`]: `:trust NAME` takes the
    /// last.
    offered: VecDeque<(String, PublicKey)>,
    /// When each kind of warning about strangers was last shown, and how
    /// many were not shown since: a stranger cannot flood the screen.
    quiet: [(Millis, u32); 3],
    name: String,
    /// The name we had before our last rename: what we go back to if a
    /// member of a smaller id took the new one where we could not hear
    /// it (see [`Node::give_way`]).
    before: Option<String>,
    port: u16,
    max_links: usize,
    /// Our own lines are shown (see [`Config::show_own`]).
    show_own: bool,
    /// Our IP as others see it, once someone has told us.
    ip: Option<IpAddr>,
    state: State,
    /// When we became a member, to tell a name race from a taken name.
    joined_at: Option<Millis>,
    /// Leaving, but waiting (until the time given) for a link to say so on.
    leaving: Option<(Stop, Millis)>,
    /// Leaving, but waiting (until the time given) for the rooms we own
    /// to be taken over.
    handover: Option<(Stop, Millis)>,
    links: Links,
    membership: Membership,
    mesh: Mesh,
    broadcast: Broadcast,
    chat: Chat,
    rooms: Rooms,
    dm: Dm,
    /// Which link leads towards a member, for private messages.
    route: Route,
    files: Files,
    /// The user was told a newer version of p2pchat is about.
    told_newer: bool,
    /// Members' latest CLOCK: its seq and time (see [`Node::asked_late`]).
    clocks: Remember<(u64, u64)>,
    /// When (wall clock) the user was last told others gave this peer up.
    told_lost: Option<u64>,
    /// Members the user was told we dropped a message of (once each, for
    /// the last few hundred).
    refused: Remember<()>,
    out: VecDeque<Action>,
    /// The time of the latest input.
    now: Millis,
    /// The wall clock (ms since 1970) as the caller last told it, and
    /// when we last published it (CLOCK): what we say carries its time.
    wall: Option<u64>,
    clocked: Option<u64>,
    /// The event being delivered to the applications, if one is: its id
    /// is the id of what they show ([`crate::app::MsgId`]).
    delivering: Option<EventId>,
    /// When the JOINs of the last few hundred members were delivered, to
    /// tell two joins at once under one name.
    /// (And whether the JOIN made its name's key known here.)
    joins: Remember<(Millis, bool)>,
    /// Names of members that left just after joining, shown as leaving at
    /// the time given unless a JOIN under the name comes first.
    race_left: VecDeque<(String, Millis, Option<PublicKey>)>,
    /// Frames received and sent, by kind (see [`Node::traffic`]).
    received: wire::Tally,
    sent: wire::Tally,
    /// LAN discovery is on: the members it found (None: it is off).
    found: Option<Remember<Found>>,
    /// The join under way is through a peer discovery found: failing it
    /// leaves us alone in our network, not stopped.
    found_join: bool,
}

/// The network as an application sees it (see [`Net`]), made of the
/// node's parts; a macro, so that the application itself stays borrowable.
macro_rules! net {
    ($s:ident) => {
        AppNet {
            name: &$s.name,
            me: $s.id,
            key: $s.ident.public(),
            ident: &$s.ident,
            listen: $s.ip.map(|ip| SocketAddr::new(ip, $s.port)),
            broadcast: &mut $s.broadcast,
            membership: &$s.membership,
            links: &$s.links,
            known: &$s.known,
            out: &mut $s.out,
            event: $s.delivering,
            wall: $s.wall,
            show_own: $s.show_own,
        }
    };
}

/// Member `id` (`m`) as an application sees it: reached over a link of
/// ours, or through others.
fn view(links: &Links, id: NodeId, m: &membership::Member) -> MemberView {
    MemberView {
        id,
        name: m.display(id),
        addr: m.addr,
        reach: if links.linked(id) {
            Reach::Direct
        } else {
            Reach::Relayed
        },
    }
}

struct AppNet<'a> {
    name: &'a str,
    me: NodeId,
    key: PublicKey,
    ident: &'a Identity,
    listen: Option<SocketAddr>,
    broadcast: &'a mut Broadcast,
    membership: &'a Membership,
    links: &'a Links,
    known: &'a HashMap<String, PublicKey>,
    out: &'a mut VecDeque<Action>,
    /// The event being delivered, if one is.
    event: Option<EventId>,
    wall: Option<u64>,
    show_own: bool,
}

impl AppNet<'_> {
    /// Publishes `body`; returns its id, unless it could not be sent.
    fn publish_id(&mut self, body: Body) -> Option<EventId> {
        match self.broadcast.publish(self.out, body) {
            Ok(id) => Some(id),
            Err(e) => {
                let w = Show::Warning(format!("not sent: {e}"));
                self.out.push_back(Action::Show(w));
                None
            }
        }
    }
}

impl Net for AppNet<'_> {
    fn publish(&mut self, body: Body) {
        self.publish_id(body);
    }

    fn show(&mut self, show: Show) {
        self.out.push_back(Action::Show(show));
    }

    fn me(&self) -> &str {
        self.name
    }

    fn shows_own(&self) -> bool {
        self.show_own
    }

    fn name_of(&self, id: NodeId) -> String {
        if id == self.me {
            return self.name.to_owned();
        }
        self.membership.display(id)
    }

    fn members(&self) -> Vec<MemberView> {
        let mut v = vec![MemberView {
            id: self.me,
            name: self.name.to_owned(),
            addr: self.listen,
            reach: Reach::Me,
        }];
        for (id, m) in self.membership.present() {
            v.push(view(self.links, id, m));
        }
        v
    }

    fn id(&self) -> NodeId {
        self.me
    }

    fn is_present(&self, id: NodeId) -> bool {
        id == self.me || self.membership.get(id).is_some_and(|m| m.present())
    }

    fn key_of(&self, id: NodeId) -> Option<PublicKey> {
        if id == self.me {
            return Some(self.key);
        }
        self.membership.get(id).and_then(|m| m.ident).map(|i| i.key)
    }

    fn find(&self, name: &str) -> Option<NodeId> {
        let id = self.membership.find(name)?;
        let m = self.membership.get(id)?;
        (m.present() && m.name.as_deref() == Some(name)).then_some(id)
    }

    fn key_of_name(&self, name: &str) -> Option<PublicKey> {
        let here = self
            .find(name)
            .and_then(|id| self.membership.get(id)?.ident);
        here.map(|i| i.key)
            .or_else(|| self.known.get(name).copied())
    }

    fn event(&self) -> Option<EventId> {
        self.event
    }

    fn next_event(&self) -> Option<EventId> {
        Some(EventId {
            origin: self.me,
            seq: self.broadcast.seq() + 1,
        })
    }

    fn wall(&self) -> Option<u64> {
        self.wall
    }

    fn ring(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.membership.present().map(|(id, _)| id).collect();
        v.push(self.me);
        v
    }

    fn sign(&self, msg: &[u8]) -> Option<(PublicKey, u64, crypto::Sig)> {
        Some((
            self.ident.public(),
            self.ident.nonce(),
            self.ident.sign(msg),
        ))
    }
}

impl Node {
    /// A peer named `name` with identity `ident`, listening on `port`,
    /// alone in a new network until someone joins or [`Node::join`] is
    /// called.
    pub fn new(cfg: Config, ident: Identity, name: &str, port: u16, seed: u64) -> Node {
        let id = ident.id();
        let mut rng = Rng::new(seed);
        let link_cfg = link::Config {
            heartbeat: cfg.heartbeat,
            link_timeout: cfg.link_timeout,
            handshake_timeout: cfg.handshake_timeout,
        };
        let member_cfg = membership::Config {
            refute_wait: cfg.refute_wait,
            lost_max: cfg.lost_max,
        };
        let mesh_cfg = mesh::Config {
            degree: cfg.degree,
            max_degree: cfg.max_degree,
        };
        let bc_cfg = broadcast::Config {
            gap_wait: cfg.gap_wait,
            gap_giveup: cfg.gap_giveup,
            flood: cfg.flood,
        };
        Node {
            id,
            ident: ident.clone(),
            known: HashMap::new(),
            offered: VecDeque::new(),
            quiet: [(0, 0); 3],
            name: name.to_owned(),
            before: None,
            port,
            max_links: cfg.max_links,
            show_own: cfg.show_own,
            ip: None,
            state: State::Member,
            // Whoever starts a network cannot be racing anyone for its name.
            joined_at: None,
            leaving: None,
            handover: None,
            links: Links::new(link_cfg, ident.clone(), name, port, cfg.psk),
            membership: Membership::new(member_cfg, name, rng.next_u64()),
            mesh: Mesh::new(mesh_cfg, rng.next_u64()),
            dm: Dm::new(ident.clone()),
            route: Route::new(),
            broadcast: Broadcast::new(bc_cfg, ident),
            chat: Chat::default(),
            rooms: Rooms::new(),
            files: Files::new(files::Config {
                download_dir: cfg.download_dir.clone(),
                max_file: cfg.max_file,
            }),
            told_newer: false,
            clocks: Remember::new(membership::MAX_MEMBERS),
            told_lost: None,
            refused: Remember::new(256),
            out: VecDeque::new(),
            now: 0,
            wall: None,
            delivering: None,
            clocked: None,
            joins: Remember::new(256),
            race_left: VecDeque::new(),
            received: wire::Tally::default(),
            sent: wire::Tally::default(),
            found: None,
            found_join: false,
        }
    }

    /// The wall clock now, in ms since 1970 (UTC): what we say from now
    /// on is said at this time. Without it, nothing carries a time.
    ///
    /// Called before the turn's inputs, it also tells whether this peer
    /// did not run for a while (stopped, or the machine suspended): the
    /// time it should have woken for its timers is long past. The others
    /// may have given it up meanwhile; the user is told.
    pub fn clock(&mut self, wall: u64) {
        if let (Some(prev), Some(due)) = (self.wall, self.deadline())
            && self.is_member()
        {
            let expected = prev.saturating_add(due.saturating_sub(self.now));
            let late = wall.saturating_sub(expected);
            if late >= STOPPED {
                self.told_lost = Some(wall);
                let w = format!(
                    "this peer did not run for {} s (stopped, or the machine suspended): \
                     the others may have shown it leaving, and show it joining again as it \
                     reconnects",
                    late / 1000
                );
                self.out.push_back(Action::Show(Show::Warning(w)));
            }
        }
        self.wall = Some(wall);
    }

    /// Joins an existing network through the first of `addrs` that answers;
    /// `label` names them in errors (`localhost:40123`).
    pub fn join(&mut self, addrs: Vec<SocketAddr>, label: &str, now: Millis) {
        self.now = now;
        self.joined_at = None;
        self.set_state(State::Joining {
            addrs,
            next: 0,
            label: label.to_owned(),
            link: LinkId(0),
        });
        self.dial_next_join(now, "no address");
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// `name` had `key` when last seen (known_peers, read at start).
    pub fn know(&mut self, name: &str, key: PublicKey) {
        self.known.insert(name.to_owned(), key);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether we are in a network (so typed lines can be sent).
    pub fn is_member(&self) -> bool {
        self.state == State::Member
    }

    /// Members known, not counting us (nor lost ones).
    pub fn member_count(&self) -> usize {
        self.membership.count()
    }

    /// The names of the members shown as present, not counting us (for
    /// completing names as they are typed).
    pub fn member_names(&self) -> Vec<String> {
        self.membership
            .present()
            .filter_map(|(_, m)| m.name.clone())
            .collect()
    }

    /// A one-line account of what we know of member `id`, for tests.
    pub fn describe(&self, id: NodeId) -> String {
        format!(
            "{} {} linked={}",
            self.membership.describe(id),
            self.broadcast.describe(id),
            self.links.linked(id)
        )
    }

    /// Every live room as this peer sees it (for tests of convergence).
    pub fn rooms_summary(&mut self) -> Vec<rooms::Summary> {
        self.rooms.summary(&net!(self))
    }

    /// The room we are in.
    pub fn room(&self) -> &str {
        self.rooms.here()
    }

    /// Links with HELLO done.
    pub fn link_count(&self) -> usize {
        self.links.up_count()
    }

    /// Frames and bytes received and sent so far, by kind: `traffic: in:
    /// event F B, ihave F B, graft F B, prune F B, other F B; out: ...`.
    pub fn traffic(&self) -> String {
        format!(
            "traffic: in: {}; out: {}",
            self.received.summary(),
            self.sent.summary()
        )
    }

    /// Whom each sender's messages come from, by name: `tree: bob<carol,
    /// dave<carol, ...` (bob's and dave's are pushed to us by carol).
    pub fn tree(&self) -> String {
        let mut v: Vec<String> = self
            .broadcast
            .parents()
            .filter_map(|(origin, link)| {
                let via = self.links.peer(link)?;
                let name = |id| {
                    if id == self.id {
                        self.name.clone()
                    } else {
                        self.membership.display(id)
                    }
                };
                Some(format!("{}<{}", name(origin), name(via)))
            })
            .collect();
        v.sort();
        format!("tree: {}", v.join(", "))
    }

    /// Whether actions are waiting for [`Node::next_action`].
    pub fn has_actions(&self) -> bool {
        !self.out.is_empty() || self.links.gathered()
    }

    /// Whether `link` has said HELLO (it carries the network's traffic).
    pub fn is_established(&self, link: LinkId) -> bool {
        self.links.peer(link).is_some()
    }

    /// The next thing to do, if any.
    pub fn next_action(&mut self) -> Option<Action> {
        loop {
            let Some(a) = self.out.pop_front() else {
                // What was gathered for encrypted links goes out last,
                // one record per link.
                let (link, f) = self.links.flush()?;
                return Some(Action::Send(link, f));
            };
            let Action::Send(link, frame) = a else {
                // Frames before a close (or a stop) go out before it.
                if let Some((link, f)) = self.links.flush() {
                    self.out.push_front(a);
                    return Some(Action::Send(link, f));
                }
                return Some(a);
            };
            // An idle link is one that sends nothing: a heartbeat is due
            // only after a quiet while.
            self.links.sent(link, self.now);
            self.sent.count(&frame[4..]);
            // Encrypted here, in the order the loop writes them, once per
            // link (a relayed frame is shared until now).
            if let Some(f) = self.links.seal(link, frame) {
                return Some(Action::Send(link, f));
            }
        }
    }

    /// A connection was accepted from `addr`; returns its new link. With
    /// [`MAX_PENDING`] others still waiting for their HELLO, the oldest of
    /// them is closed.
    pub fn accepted(&mut self, addr: SocketAddr, now: Millis) -> LinkId {
        self.now = now;
        let link = self.links.accepted(&mut self.out, addr, now);
        // A punch of ours, perhaps, that the other end's dial beat.
        self.links.start(&mut self.out, link, now);
        link
    }

    /// An outbound connection we asked for is up: say HELLO.
    pub fn connected(&mut self, link: LinkId, now: Millis) {
        self.now = now;
        let joining = matches!(self.state, State::Joining { .. });
        let target = self.links.get(link).and_then(|l| l.target);
        let key = target.and_then(|t| self.membership.get(t)?.ident.map(|i| i.key));
        self.links.target_key(link, key);
        self.links.connected(&mut self.out, link, joining, now);
    }

    /// A link failed or was closed by the other side, or the event loop
    /// is done with one we closed.
    pub fn link_down(&mut self, link: LinkId, reason: &str, now: Millis) {
        self.now = now;
        let closing = self.links.get(link).is_some_and(|l| l.closing());
        if !closing {
            self.lose_link(link, reason, now);
        }
        self.links.remove(link);
    }

    /// The local port `link` must be dialled from, if not any: our
    /// listening port, for a punch (see [`crate::proto::mesh`]).
    pub fn dial_port(&self, link: LinkId) -> Option<u16> {
        let l = self.links.get(link)?;
        (l.dial == link::Dial::Punch).then_some(self.port)
    }

    /// Our dial on `link` was refused: a host answered that nobody listens
    /// there (ECONNREFUSED). Called before [`Node::link_down`], it tells a
    /// peer that is gone from a network that is down or split, which
    /// answers nothing: an address is given up only for the first.
    pub fn dial_refused(&mut self, link: LinkId) {
        self.links.refused(link);
    }

    /// Closes `link` because of what the event loop saw on it (the peer
    /// stopped reading): what it has sent already is still taken.
    pub fn drop_link(&mut self, link: LinkId, why: &str, now: Millis) {
        self.now = now;
        if self.links.get(link).is_some_and(|l| !l.closing()) {
            self.out.push_back(Action::Close(link));
            self.lose_link(link, why, now);
        }
    }

    /// Takes `link` out of service (it is closing, or gone), and deals
    /// with what that means.
    fn lose_link(&mut self, link: LinkId, reason: &str, now: Millis) {
        let Some(l) = self.links.get(link) else {
            return;
        };
        let (addr, target, refused) = (l.addr, l.target, l.refused());
        let (dial, opened) = (l.dial, l.opened);
        let Some(stage) = self.links.closed(link, now) else {
            return;
        };
        self.broadcast.neighbour_down(link);
        self.tell_load(now);
        self.files.link_down(&mut net!(self), link);
        self.files_out(now);
        let peer = match stage {
            Stage::Up { peer } => Some(peer),
            _ => None,
        };
        if self.joining_link() == Some(link) {
            if peer.is_none() {
                self.dial_next_join(now, reason);
            } else if !self.found_join_failed() {
                let why = format!("{addr} closed the link while we joined");
                self.stop(Stop::Refused(why));
            }
            return;
        }
        if let Some(p) = peer {
            self.membership.link_lost(p, &self.links, now);
            self.membership_out(now);
            self.alone(now);
        } else if let Some(t) = target {
            // A dial that never got through: back off before trying again,
            // from the member and from its address. Whether anyone
            // answered tells a peer gone (refused, or what answered is no
            // peer) from a network down or split (no answer at all).
            let answered = refused || stage != Stage::Dialing;
            if answered || !self.membership.is_lost(t) {
                self.mesh.addr_failed(addr, answered, now);
            }
            if dial == link::Dial::Probe && now < opened + PROBE_EVERY {
                self.membership.probe_failed_early(opened);
            }
            if self.membership.is_member(t) {
                self.membership.unreachable(t);
                let failures = self.mesh.failed(t, answered, now);
                if dial == link::Dial::Punch && !answered && now >= opened + PUNCH_TOLD {
                    self.punch_failed(t);
                }
                let present = self.membership.get(t).is_some_and(|m| m.present());
                if !present && failures >= DIAL_GIVE_UP {
                    // Only ever heard of, never reached: likely made up.
                    self.forget_member(t);
                }
            }
            return;
        }
        self.maintain(now);
    }

    /// A whole frame body arrived on `link`.
    pub fn frame(&mut self, link: LinkId, body: &[u8], now: Millis) {
        self.now = now;
        if self.state == State::Done {
            return;
        }
        let Some(l) = self.links.received(link, now) else {
            return;
        };
        let (peer, closing, noise) = match l.stage {
            Stage::Closing { peer } => (peer, true, false),
            Stage::Noise => (None, false, true),
            _ => (l.peer(), false, false),
        };
        if noise {
            return self.on_noise(link, body, now);
        }
        if !self.links.encrypted(link) {
            return self.clear_frame(link, peer, closing, body, now);
        }
        let Some(bodies) = self.links.open(link, body) else {
            return self.drop_link(link, "a frame that does not decrypt", now);
        };
        for body in bodies {
            // Each frame of a record may change the link (HELLO, REFUSE).
            let Some(l) = self.links.get(link).filter(|_| self.state != State::Done) else {
                return;
            };
            let (peer, closing) = match l.stage {
                Stage::Closing { peer } => (peer, true),
                _ => (l.peer(), false),
            };
            self.clear_frame(link, peer, closing, &body, now);
        }
    }

    /// A frame body in the clear (decrypted if it came encrypted) on
    /// `link`, to `peer`, which we are `closing`.
    fn clear_frame(
        &mut self,
        link: LinkId,
        peer: Option<NodeId>,
        closing: bool,
        body: &[u8],
        now: Millis,
    ) {
        self.received.count(body);
        // A copy of an event delivered already is known by its header:
        // nothing is decoded or allocated for it.
        // (A copy pushed to us again is a reason to prune its link.)
        let signed = wire::event_signed(body);
        let copy = |id| self.broadcast.copy(&mut self.out, link, id, signed);
        if peer.is_some() && wire::event_id(body).is_some_and(copy) {
            return;
        }
        if let (Some(_), false) = (peer, closing)
            && route::is_routed(body)
        {
            return self.on_routed(link, body, now);
        }
        if let (Some(_), false) = (peer, closing)
            && mesh::is_shed(body)
        {
            return self.on_shed(link, body, now);
        }
        if let (Some(p), false) = (peer, closing)
            && files::is_transfer(body)
        {
            self.files.frame(&mut net!(self), link, p, body, now);
            return self.files_out(now);
        }
        let msg = match wire::decode(body) {
            Ok(m) => m,
            // A newer peer may speak kinds we do not know: skip them.
            Err(WireError::UnknownKind(_)) if peer.is_some() => return,
            Err(e) if peer.is_none() => {
                let why = format!("not a p2pchat peer (bad frame: {e})");
                return self.drop_link(link, &why, now);
            }
            Err(e) => return self.drop_link(link, &format!("bad frame: {e}"), now),
        };
        if closing {
            // Closed by us: only events that were on their way count.
            if let (Some(_), Msg::Event(ev)) = (peer, msg) {
                self.on_event(link, ev, body, now);
            }
            return;
        }
        match (peer, msg) {
            (None, Msg::Hello(h)) => self.on_hello(link, h, now),
            (None, Msg::Noise(_)) => {
                let why = "this peer has no network secret";
                self.refused_secret(link, why, now);
            }
            (None, Msg::Refuse { code, text }) => self.on_refuse(link, code, &text, now),
            (None, _) => self.drop_link(link, "message before HELLO", now),
            (Some(_), Msg::Hello(_)) => self.drop_link(link, "second HELLO", now),
            (
                Some(p),
                Msg::Refuse {
                    code: code @ (Refusal::Full | Refusal::Duplicate),
                    ..
                },
            ) => {
                // A deliberate close, not a failure: shed by the other
                // side (Full), or a second link to us while the far end
                // keeps another, which may not be up here yet
                // (Duplicate). Not a loss to tell the network about.
                self.close(link);
                if code == Refusal::Full && self.membership.is_member(p) {
                    self.mesh.shed_by(p, now);
                }
                self.maintain(now);
                self.alone(now);
            }
            (Some(_), Msg::Refuse { .. }) => self.drop_link(link, "refused", now),
            (Some(p), Msg::Members { last, entries }) => {
                self.on_members(link, p, last, entries, now)
            }
            (Some(_), Msg::Event(ev)) => self.on_event(link, ev, body, now),
            (Some(_), Msg::Noise(_)) => self.drop_link(link, "handshake out of turn", now),
            (Some(_), Msg::Fetch { origin, from, to }) => {
                self.broadcast
                    .on_fetch(&mut self.out, link, origin, from, to, now)
            }
            (Some(_), Msg::Ping) => {}
            (Some(_), Msg::Lack { origin, oldest }) => self.broadcast.on_lack(origin, oldest),
            (Some(_), Msg::Ihave { ids }) => self.on_ihave(link, &ids, now),
            (Some(_), Msg::Graft { origin, from, to }) => {
                self.broadcast
                    .on_graft(&mut self.out, link, origin, from, to, now)
            }
            (Some(_), Msg::Prune { origin }) => self.broadcast.on_prune(link, origin),
            (Some(_), Msg::Hops { hops }) => {
                self.broadcast.on_hops(&mut self.out, link, &hops, now)
            }
            (Some(p), Msg::PunchAsk { target }) => self.on_punch_ask(link, p, target, now),
            (Some(_), Msg::Punch { id, addr }) => self.on_punch(id, addr, now),
            (Some(_), Msg::Gone { ids }) => {
                // From whoever welcomes us only: a neighbour must not be
                // able to cut members off by naming them.
                if self.joining_link() == Some(link) {
                    for id in ids.into_iter().filter(|&id| id != self.id) {
                        self.membership.tombstone(id);
                    }
                }
            }
        }
    }

    /// The user typed a command.
    pub fn command(&mut self, cmd: Command, now: Millis) {
        self.now = now;
        if self.leaving.is_some() {
            return;
        }
        if self.handover.is_some() {
            // Handing rooms over: a second :q leaves at once.
            if let (Command::Quit, Some((stop, _))) = (&cmd, self.handover.take()) {
                self.leave_now(stop, now);
            }
            return;
        }
        match cmd {
            Command::Say(text) => {
                if !self.is_member() {
                } else if self.rooms.in_lobby() {
                    self.stamp();
                    let (id, name) = (self.id, &self.name);
                    self.rooms.lobby_line_of(&net!(self), id, name, &text, None);
                    self.chat.say(&mut net!(self), text);
                } else {
                    self.stamp();
                    self.rooms.say(&mut net!(self), text);
                }
            }
            Command::Who => self
                .rooms
                .command(&mut net!(self), rooms::Cmd::Who(None), now),
            Command::Whois(name) => self.whois(&name),
            Command::Trust(name) => self.trust(&name),
            Command::Me(text) => {
                if !self.is_member() {
                } else if self.rooms.in_lobby() {
                    self.stamp();
                    self.chat.action(&mut net!(self), text);
                } else {
                    self.stamp();
                    self.rooms.action(&mut net!(self), text);
                }
            }
            Command::Nick(name) => self.nick(&name, now),
            Command::Msg(to, text) => {
                if self.is_member() {
                    self.dm.send(&mut net!(self), &to, &text, now);
                    self.dm_out(now);
                }
            }
            Command::Msgs => self.dm.list(&mut net!(self), now),
            Command::Send(args) => self.send_file(&args),
            Command::Files => self.files.list(&mut net!(self)),
            Command::Get(id, dir) => self.files.get(&mut net!(self), id, dir, now),
            Command::Cancel(id) => self.files.cancel(&mut net!(self), id),
            Command::Quit => self.leave(Stop::Left, now),
            Command::Room(c) if self.is_member() => self.rooms.command(&mut net!(self), c, now),
            Command::Room(_) => {
                let e = "not in the network yet: nothing was sent".to_owned();
                self.out.push_back(Action::Show(Show::Error(e)));
            }
            Command::Peers => self.show_found(),
        }
        self.files_out(now);
    }

    /// The disk did what a transfer asked (see [`Action::File`]).
    pub fn disk_done(&mut self, done: files::Done, now: Millis) {
        self.now = now;
        if self.state == State::Done {
            return;
        }
        self.files.disk_done(&mut net!(self), done, now);
        self.files_out(now);
    }

    /// A link whose path's round trip a file transfer wants to know:
    /// measure it and tell [`Node::path_rtt`] (see
    /// [`Files::path_rtt`]).
    pub fn rtt_wanted(&mut self) -> Option<LinkId> {
        self.files.rtt_wanted()
    }

    /// The round trip of `link`'s path is `us` µs (the kernel's measure).
    pub fn path_rtt(&mut self, link: LinkId, us: u64) {
        self.files.path_rtt(link, us);
    }

    /// `:send [NAME] PATH`: to member NAME if the first word names one,
    /// else the whole is the path, offered to everyone.
    fn send_file(&mut self, args: &str) {
        if !self.is_member() {
            let w = "not in the network yet: nothing was offered".into();
            return self.out.push_back(Action::Show(Show::Warning(w)));
        }
        let mut to = None;
        let mut path = args.trim();
        if let Some((first, rest)) = path.split_once(' ')
            && let Some(id) = self.membership.find(first)
        {
            to = Some((id, first.to_owned()));
            path = rest.trim();
        }
        if path.is_empty() {
            let w = "give the file to send: :send [NAME] PATH".into();
            return self.out.push_back(Action::Show(Show::Warning(w)));
        }
        let path = PathBuf::from(path);
        let room = self.rooms.here().to_owned();
        self.files.send(&mut net!(self), to, path, &room);
    }

    /// A ROUTED frame on `link`: ours, or passed on towards its member
    /// (see [`route`]).
    fn on_routed(&mut self, link: LinkId, body: &[u8], now: Millis) {
        let Some((to, ttl, kind, payload)) = route::decode(body) else {
            return self.drop_link(link, "bad frame: a ROUTED frame too short", now);
        };
        if to == self.id {
            if self.is_member() && kind == dm::PRIVATE {
                let wall = self.wall;
                self.dm.routed(&mut net!(self), payload, wall, now);
                self.dm_out(now);
            }
            return;
        }
        // Only what an honest sender routes is passed on: a well-formed
        // PRIVATE, for a bounded number of hops.
        if ttl == 0 || kind != dm::PRIVATE || dm::Private::decode(payload).is_none() {
            return;
        }
        match self.next_hop(to, Some(link)) {
            Some(next) => {
                let f = route::frame(to, ttl.min(route::TTL) - 1, kind, payload);
                self.links.send(&mut self.out, next, f, now);
            }
            // No way on known (the links its events came by are gone, or
            // lead back): flooded from here, as the sender would after a
            // while; it reaches the recipient, or its holders. Only to a
            // member present: a frame to nobody is no reason to flood.
            None if self.is_member() && self.membership.get(to).is_some_and(|m| m.present()) => {
                self.publish(Body::Other {
                    kind,
                    payload: payload.to_vec(),
                })
            }
            None => {}
        }
    }

    /// The next link towards member `to`, not `from`.
    fn next_hop(&self, to: NodeId, from: Option<LinkId>) -> Option<LinkId> {
        let direct = self.links.to(to).first().map(|&(l, _)| l);
        let links = &self.links;
        self.route
            .next_hop(to, direct, from, |l| links.peer(l).is_some())
    }

    /// Sends what the private messages ask to route: down the next link
    /// towards its member, or, when none is known, flooded.
    fn dm_out(&mut self, now: Millis) {
        for (to, payload) in self.dm.take_routed() {
            match self.next_hop(to, None) {
                Some(link) => {
                    let f = route::frame(to, route::TTL, dm::PRIVATE, &payload);
                    self.links.send(&mut self.out, link, f, now);
                }
                None => self.publish(Body::Other {
                    kind: dm::PRIVATE,
                    payload,
                }),
            }
        }
    }

    /// The edge has read all there was on `link` (see
    /// [`files::ACK_EVERY`]).
    pub fn drained(&mut self, link: LinkId, now: Millis) {
        self.files.drained(link);
        self.files_out(now);
    }

    /// Routes what the file machine asks for.
    fn files_out(&mut self, now: Millis) {
        while let Some(o) = self.files.next_out() {
            match o {
                files::Out::Send(link, f) => self.links.send(&mut self.out, link, f, now),
                files::Out::SendTo(peer, f) => match self.links.to(peer).first() {
                    Some(&(link, _)) => self.links.send(&mut self.out, link, f, now),
                    None => {
                        // A direct link for the transfer; the machine
                        // asks again, and then it is there.
                        if let Some(addr) = self.membership.get(peer).and_then(|m| m.addr) {
                            self.links.dial(&mut self.out, addr, Some(peer), now);
                        }
                    }
                },
                files::Out::Disk(io) => self.out.push_back(Action::File(io)),
            }
        }
    }

    /// The time is `now`: run the timers that are due.
    pub fn tick(&mut self, now: Millis) {
        self.now = now;
        for link in self.links.tick(&mut self.out, now) {
            self.drop_link(link, "timed out", now);
        }
        // A window of a long backlog, fetched and in, asks for the next at
        // once: a second pass (a few at most) finds it due.
        for _ in 0..4 {
            if self.broadcast.deadline().is_none_or(|t| now < t) {
                break;
            }
            for origin in self.broadcast.due(now) {
                self.fill_gap(origin, now);
            }
            self.broadcast.rewake();
        }
        let mesh = &self.mesh;
        self.membership
            .tick(&self.links, |a| mesh.refusals(a, now), now);
        self.membership_out(now);
        let (maintain, shed) = self.mesh.tick(now);
        if maintain {
            self.maintain(now);
        }
        if shed {
            self.shed(None, now);
        }
        self.rooms.tick(&mut net!(self), now);
        self.check_handover(now);
        while self.race_left.front().is_some_and(|&(_, t, _)| now >= t) {
            let (name, ..) = self.race_left.pop_front().expect("a member that left");
            if self.is_member() {
                self.chat.left(&mut net!(self), name, false);
            }
        }
        if self.is_member() {
            self.dm.tick(&mut net!(self), now);
            self.dm_out(now);
        }
        if let Some((stop, until)) = self.leaving.take() {
            if now >= until {
                self.stop(stop);
            } else {
                self.leaving = Some((stop, until));
            }
        }
        self.files.tick(&mut net!(self), now);
        self.files_out(now);
        // Links lost above graft their replacements now.
        self.broadcast.tick(&mut self.out, now);
        // Our events of this turn go out, signed.
        self.broadcast.seal(&mut self.out);
    }

    /// When [`Node::tick`] next has work to do, if ever.
    pub fn deadline(&self) -> Option<Millis> {
        [
            self.links.deadline(),
            self.broadcast.deadline(),
            self.membership.deadline(),
            self.mesh.deadline(),
            self.files.deadline(),
            self.leaving.as_ref().map(|&(_, until)| until),
            self.rooms.deadline(),
            self.handover.as_ref().map(|&(_, until)| until),
            self.race_left.front().map(|&(_, t, _)| t),
            self.dm.deadline().filter(|_| self.is_member()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The private messages held here and ours undelivered, as bytes to
    /// keep across a restart, if they changed since last asked.
    pub fn private_store(&mut self) -> Option<Vec<u8>> {
        self.dm.save(self.now)
    }

    /// Whether [`Node::private_store`] has something new.
    pub fn private_unsaved(&self) -> bool {
        self.dm.unsaved()
    }

    /// The private message store is kept: a message to us is shown only
    /// once it is recorded as shown there (see [`Dm::set_durable`]).
    pub fn keep_private_store(&mut self) {
        self.dm.set_durable();
    }

    /// Whether messages to us wait for [`Node::private_store`] to be
    /// written now.
    pub fn private_urgent(&self) -> bool {
        self.dm.must_save()
    }

    /// What [`Node::private_store`] last gave is on disk.
    pub fn private_saved(&mut self) {
        self.dm.saved(&mut net!(self));
    }

    /// Takes back the private messages of [`Node::private_store`], kept
    /// `elapsed` ms ago; returns how many of ours and of others'.
    ///
    /// # Errors
    ///
    /// What is wrong with the bytes; nothing is taken then.
    pub fn restore_private(
        &mut self,
        bytes: &[u8],
        elapsed: Millis,
    ) -> Result<(usize, usize), String> {
        self.dm.restore(bytes, elapsed, self.now)
    }

    /// For tests: private messages held here for others, and ours not
    /// acknowledged yet.
    #[doc(hidden)]
    pub fn private_counts(&self) -> (usize, usize) {
        (self.dm.held(), self.dm.unacknowledged())
    }

    /// For tests of mixed versions: floods `body` as our next event, even
    /// one of a type this build does not know.
    #[doc(hidden)]
    pub fn publish_for_test(&mut self, body: Body, now: Millis) {
        self.now = now;
        self.publish(body);
    }

    fn set_state(&mut self, state: State) {
        if !matches!(state, State::Joining { .. }) {
            self.found_join = false;
        }
        self.membership.set_active(state == State::Member);
        self.state = state;
    }

    fn joining_link(&self) -> Option<LinkId> {
        match self.state {
            State::Joining { link, .. } => Some(link),
            _ => None,
        }
    }

    fn dial_next_join(&mut self, now: Millis, reason: &str) {
        let State::Joining {
            addrs, next, label, ..
        } = &mut self.state
        else {
            return;
        };
        let Some(&addr) = addrs.get(*next) else {
            let msg = format!("cannot reach {label}: {reason}");
            if self.found_join_failed() {
                return;
            }
            return self.stop(Stop::Unreachable(msg));
        };
        *next += 1;
        let link = self.links.dial(&mut self.out, addr, None, now);
        if let State::Joining { link: j, .. } = &mut self.state {
            *j = link;
        }
    }

    fn on_hello(&mut self, link: LinkId, h: Hello, now: Millis) {
        let Some(l) = self.links.get(link) else {
            return;
        };
        let (outbound, addr) = (l.outbound, l.addr);
        let joining_link = self.joining_link() == Some(link);
        match self.links.check_hello(link, &h) {
            Ok(()) => {}
            Err(BadHello::Version(why)) => {
                let why = format!("{addr} {why}");
                return self.refuse(link, Refusal::Version, &why, now);
            }
            Err(BadHello::Myself) if joining_link && !self.found_join => {
                return self.stop(Stop::Refused(format!("{addr} is this peer itself")));
            }
            Err(BadHello::Myself) => {
                return self.refuse(link, Refusal::Myself, "connected to itself", now);
            }
            Err(BadHello::Name) => {
                return self.refuse(link, Refusal::BadHello, "invalid name", now);
            }
            Err(BadHello::Proof) => {
                let why = "its id or its proof of key does not check out";
                return self.refuse(link, Refusal::BadHello, why, now);
            }
            Err(BadHello::NotHere) => {
                // It dialled a member that is not us; or we found it where
                // a member of ours was.
                let why = "not linked: a port was taken again (you meant to reach another \
                           member here, or this peer found you at one's address)";
                return self.refuse(link, Refusal::NotHere, why, now);
            }
            Err(BadHello::Stranger) => {
                // Another peer took the port of the member we dialled:
                // nothing of it is taken in, and the dial failed.
                let text = "you are not the member this peer dialled";
                let f = wire::small(&Msg::Refuse {
                    code: Refusal::NotHere,
                    text: text.into(),
                });
                self.links.send(&mut self.out, link, f, now);
                self.links.stranger(h.id);
                return self.drop_link(link, "another peer at the member's address", now);
            }
        }
        if self.membership.is_gone(h.id) {
            let why = "this network saw you leave; start again to rejoin";
            return self.refuse(link, Refusal::Gone, why, now);
        }
        if !outbound && !self.is_member() {
            // We printed our port, so joiners may come before our own
            // join is done: they wait for it (bounded like any HELLO
            // not yet answered) and are answered then.
            return self.links.hold(link, h);
        }
        self.stale_self(h.id, &h.name, &h.ident.key, now);
        // A member we know under another name renamed itself where we
        // could not hear it (a partition): its RENAME settles its name
        // here, as every rename, so its links come up whatever name it
        // says now.
        let renamed_away = self.membership.get(h.id).is_some_and(|m| {
            (m.name.as_deref().or(m.claim.as_deref()))
                .is_some_and(|n| !crate::name::same(n, &h.name))
        });
        // A name belongs to one member, whoever says HELLO under it (our
        // own name is settled below: two joins at once under one name).
        if !renamed_away && !self.is_ours(&h.name) && self.membership.name_taken(&h.name, h.id) {
            let why = format!("the name {} is taken in this network", h.name);
            return self.refuse(link, Refusal::NameTaken, &why, now);
        }
        if !self.is_ours(&h.name)
            && !self.key_fits(&h.name, &h.ident.key)
            && joining_link
            && self.found_join
        {
            // Heard on the LAN, under a name we know with another key: not
            // joined (anyone on the LAN can announce); we stay alone.
            let w = format!(
                "{addr}, found on the LAN, says it is {n} with another key ({}): not joined",
                crypto::fingerprint(&h.ident.key),
                n = h.name
            );
            self.warn(Quiet::Key, w, now);
            let text = format!("the key of {} has changed, for the peer joining", h.name);
            return self.refuse(link, Refusal::Key, &text, now);
        }
        if !self.is_ours(&h.name) && !self.key_fits(&h.name, &h.ident.key) && joining_link {
            let why = format!(
                "{addr} says it is {n}, whose key has changed since this peer last met {n} \
                 (now {}); if {n} has a new key, remove {n} from known_peers (see FILES in \
                 p2pchat(1)) and try again",
                crypto::fingerprint(&h.ident.key),
                n = h.name
            );
            self.stop(Stop::Refused(why));
            let text = format!("the key of {} has changed, for the peer joining", h.name);
            return self.refuse(link, Refusal::Key, &text, now);
        }
        self.race_key(&h.name, h.ident.key);
        if !self.is_ours(&h.name) && !self.key_fits(&h.name, &h.ident.key) {
            let known = self
                .known
                .get(&h.name)
                .map_or(String::new(), crypto::fingerprint);
            let w = format!(
                "{addr} wanted to join as {n} with another key ({}; {n} had {known}): refused; \
                 if {n} has a new key, :trust {n}",
                crypto::fingerprint(&h.ident.key),
                n = h.name
            );
            if self.offered.len() == OFFERED {
                self.offered.pop_front();
            }
            self.offered.push_back((h.name.clone(), h.ident.key));
            self.warn(Quiet::Key, w, now);
            let why = format!(
                "the key of {n} has changed: this network knows {n} with another key; \
                 if you are {n} on a new key, ask a member to :trust {n} after comparing \
                 fingerprints (:whois {n})",
                n = h.name
            );
            return self.refuse(link, Refusal::Key, &why, now);
        }
        if !outbound && self.links.up_count() >= self.max_links {
            return self.refuse(link, Refusal::Full, "this peer has too many links", now);
        }
        if h.you.is_some() && self.ip.is_none_or(|ip| ip.is_unspecified()) {
            self.ip = h.you;
        }
        self.recall(h.id, now);
        self.readmit(h.id, now);
        let was_isolated = self.links.up_count() == 0;

        self.link_up(link, h.id);
        // Where the peer listens: what we dialled, or where it came from
        // with the port it says it listens on.
        let listen = if outbound {
            addr
        } else {
            SocketAddr::new(addr.ip(), h.port)
        };
        if !self.links.said_hello(link) {
            self.links.say_hello(&mut self.out, link, false, now);
        }

        let known = self.membership.is_member(h.id);
        if !known && !self.make_room(None) {
            return self.drop_link(link, "too many members", now);
        }
        let linked = self.links.linked_elsewhere(h.id, link);
        if !known {
            self.membership.insert(h.id, None, None, false, None);
            self.broadcast.add(h.id, 1);
        }
        let name = self.membership.get(h.id).and_then(|m| m.name.as_deref());
        if linked && name != Some(&h.name) {
            // Someone else's id under another name: an impostor.
            self.link_not_up(link);
            let why = "that node id is linked already";
            return self.refuse(link, Refusal::Duplicate, why, now);
        }
        if !renamed_away && self.is_ours(&h.name) && !self.name_clash(h.id, now) {
            let why = format!("the name {} is taken in this network", h.name);
            self.forget_member(h.id);
            self.link_not_up(link);
            return self.refuse(link, Refusal::NameTaken, &why, now);
        }
        self.membership.hello(h.id, h.ident, listen);
        self.learn_key(h.id, h.ident);
        // A member's name changes by its RENAME only (a HELLO under its
        // new name may come before that settles here).
        let renamed = self
            .membership
            .get(h.id)
            .and_then(|m| m.name.as_deref())
            .is_some_and(|n| n != h.name);
        if !renamed {
            // The peer that welcomes us has had its name since before
            // we came: no race with it.
            self.name_member(h.id, &h.name, !joining_link);
        }
        self.mesh.reached(h.id, listen);
        if self.is_member() && self.broadcast.seq() == 0 {
            // We started this network and this is our first link: a JOIN
            // of our own, so that peers who meet us later (a network we
            // merge with) announce us like anyone else.
            self.announce();
        }
        if self.is_member() {
            if h.joining {
                self.send_gone(link, now);
            }
            // Our events so far go out before the list that counts them.
            self.broadcast.seal(&mut self.out);
            self.send_members(link, now);
            if h.joining {
                // The list has members only suspected, whose SUSPECTs went
                // out before the newcomer came: asked again, so that it
                // loses a crashed one with everyone else.
                self.membership.ask_again();
                self.membership_out(now);
            }
            if was_isolated && self.broadcast.seq() > 1 {
                // Back from isolation: whoever gave up on us, take us back.
                self.membership.say_alive(now);
                self.membership_out(now);
                self.catch_up(link);
            }
        }
        self.dedup_links(h.id);
        // We ask before we shed (see crate::proto::mesh).
        let hi = self.mesh.tell(&self.links, Some(link));
        self.shed_io(hi, now);
        self.shed(Some(link), now);
        if let Some((stop, _)) = self.leaving.take() {
            self.leave_now(stop, now);
        }
    }

    fn on_refuse(&mut self, link: LinkId, code: Refusal, text: &str, now: Millis) {
        if self.joining_link() == Some(link)
            && code != Refusal::NameTaken
            && self.found_join_failed()
        {
            // A peer discovery found would not have us (it was joining
            // too, or is full): we stay alone, and discovery tries again.
            return self.close(link);
        }
        if let State::Joining { link: j, label, .. } = &self.state
            && *j == link
        {
            let stop = match code {
                Refusal::NameTaken => Stop::NameTaken(text.to_owned()),
                Refusal::Version | Refusal::Myself => Stop::Refused(text.to_owned()),
                _ => Stop::Refused(format!("{label} refused: {text}")),
            };
            return self.stop(stop);
        }
        let Some(addr) = self.links.get(link).map(|l| l.addr) else {
            return;
        };
        if code == Refusal::Myself {
            // We dialled ourselves under another address: forget it.
            let ids: Vec<NodeId> = self
                .membership
                .active()
                .filter(|(_, m)| m.addr == Some(addr))
                .map(|(id, _)| id)
                .collect();
            for id in ids {
                self.forget_member(id);
            }
        }
        self.drop_link(link, text, now);
    }

    fn on_members(
        &mut self,
        link: LinkId,
        from: NodeId,
        last: bool,
        entries: Vec<Entry>,
        now: Millis,
    ) {
        let welcome = self.joining_link() == Some(link);
        let Some(sender_ip) = self.links.get(link).map(|l| l.addr.ip()) else {
            return;
        };
        // Members told of on the welcome are the network as we find it;
        // later ones count against the neighbour that told us.
        let via = (!welcome).then_some(from);
        if let Some(e) = entries.iter().find(|e| e.id == from) {
            self.broadcast.set_floor(link, e.seq);
        }
        let mut fetch = Vec::new();
        if !welcome && last {
            // Members we lost that the sender does not list as present
            // may have left meanwhile (a partition heals as one leaves):
            // their last events, LEAVE included, may still be in its
            // cache, and came before the link was up on its side.
            let listed: std::collections::HashSet<NodeId> = entries.iter().map(|e| e.id).collect();
            let unlisted = self.membership.lost_ids();
            let unlisted = unlisted.into_iter().filter(|id| !listed.contains(id));
            for id in unlisted.take(ASK_MAX) {
                if let Some(d) = self.broadcast.delivered(id) {
                    let from = d.saturating_add(1);
                    fetch.push((id, from, from.saturating_add(FETCH_MAX - 1)));
                }
            }
        }
        let mut asks = 0;
        for e in entries {
            if e.id == self.id || self.membership.is_gone(e.id) || !wire::valid_name(&e.name) {
                continue;
            }
            self.recall(e.id, now);
            if self.membership.is_lost(e.id) {
                // Alive, says a peer we reach: it will likely say ALIVE
                // itself soon; if not, ask.
                if asks < ASK_MAX && self.membership.queue_ask(e.id, now) {
                    asks += 1;
                }
                self.membership.back_one(now);
                continue;
            }
            if self.is_ours(&e.name) && !self.name_clash(e.id, now) {
                continue;
            }
            if crypto::node_id(&e.ident.key, e.ident.nonce) != e.id {
                // A member whose id is not bound to its key: made up.
                continue;
            }
            let name = (!self.is_ours(&e.name)).then_some(e.name.as_str());
            let ip = e.ip.filter(|ip| !ip.is_unspecified());
            let ip = if e.id == from { Some(sender_ip) } else { ip };
            let addr = ip.map(|ip| SocketAddr::new(ip, e.port));
            if self.membership.is_member(e.id) {
                if welcome {
                    self.broadcast.start_after(e.id, e.seq);
                    self.membership.set_present(e.id);
                } else if let Some((lo, hi)) = self.broadcast.missed(e.id, e.seq) {
                    // The sender has delivered events of this member
                    // that we have not seen (we were cut off): ask.
                    fetch.push((e.id, lo, hi));
                }
                let unnamed = self.membership.fill_in(e.id, addr);
                self.membership.set_ident(e.id, e.ident);
                self.learn_key(e.id, e.ident);
                if let Some(n) = name.filter(|_| unnamed) {
                    self.name_member(e.id, n, !welcome);
                }
            } else if self.make_room(via) {
                // On the welcome, start after what the welcomer has
                // delivered; later, a member new to us is newer than our
                // welcome, so everything it said is news to us.
                let next = if welcome { e.seq.saturating_add(1) } else { 1 };
                if !welcome && e.seq >= 1 {
                    fetch.push((e.id, 1, e.seq.min(FETCH_MAX)));
                }
                self.membership
                    .insert_as(e.id, None, Some(e.ident), addr, welcome, via);
                self.broadcast.add(e.id, next);
                self.learn_key(e.id, e.ident);
                if let Some(n) = name {
                    self.name_member(e.id, n, !welcome);
                }
            }
        }
        for (origin, lo, hi) in fetch {
            self.broadcast.fetch(&mut self.out, link, origin, lo, hi);
        }
        if welcome && last {
            let via = self
                .links
                .get(link)
                .map_or(SocketAddr::from(([0; 4], 0)), |l| l.addr);
            self.set_state(State::Member);
            self.joined_at = Some(now);
            self.rooms.joined(now);
            let members = self.membership.count() + 1;
            self.out
                .push_back(Action::Show(Show::Joined { via, members }));
            self.announce();
            self.broadcast.seal(&mut self.out);
            self.send_members(link, now);
            // Joiners that came while we joined, in the order they came.
            for (held, h) in self.links.take_held() {
                self.on_hello(held, h, now);
            }
        }
        if self.is_member() {
            self.maintain(now);
        }
    }

    fn on_event(&mut self, link: LinkId, mut ev: Event, body: &[u8], now: Millis) {
        let origin = ev.origin;
        let Some(hash) = wire::event_hash(body) else {
            return;
        };
        let mut frame = wire::frame_of(body);
        // No honest sender gets to u64::MAX; nothing could follow it.
        if origin == self.id || ev.seq == u64::MAX || self.membership.is_gone(origin) {
            return;
        }
        self.recall(origin, now);
        if self.membership.is_lost(origin) {
            if self.broadcast.is_old(ev.id()) {
                // Said before we lost it, or a copy replayed: no news.
                return;
            }
            match ev.body {
                // It refutes: it is alive after all. Or it leaves, and its
                // last words must not be lost with it. What we held of it
                // drains, the rest is fetched like any gap, and then the
                // LEAVE, if it is one, takes it out for good.
                Body::Alive { .. } | Body::Leave => self.readmit(origin, now),
                _ => return self.hold_lost(link, ev, hash, frame, now),
            }
        }
        // Beyond what any honest peer sends (a name no peer could have, an
        // overlong line): taken in its place in its origin's order, as
        // nothing, and never relayed (an empty frame is not).
        if let Err(why) = ev.body.check() {
            let kind = ev.body.kind();
            ev.body = Body::Refused { kind, why };
            frame = Frame::from([]);
        }
        if self.broadcast.forged_copy(&mut self.out, link, ev.id()) {
            return;
        }
        if !self.membership.is_member(origin) {
            // A member new to us, introduced by whoever relayed it.
            let via = self.links.get(link).and_then(|l| match l.stage {
                Stage::Up { peer } | Stage::Closing { peer: Some(peer) } => Some(peer),
                _ => None,
            });
            let via = via.filter(|&v| v != origin);
            if !self.make_room(via) {
                return;
            }
            self.membership.insert(origin, None, None, false, via);
            self.broadcast.add(origin, 1);
        }
        // A JOIN tells its origin's key, bound to its id: its signatures
        // can be checked from here on.
        if let Body::Join { ident, .. } = &ev.body
            && !self.broadcast.has_key(origin)
            && crypto::node_id(&ident.key, ident.nonce) == origin
        {
            let ident = *ident;
            self.membership.set_ident(origin, ident);
            self.learn_key(origin, ident);
        }
        if self.broadcast.is_copy(ev.id(), ev.seal.is_some()) {
            return;
        }
        self.membership.heard(origin, now);
        if ev.body == (Body::Suspect { target: self.id }) {
            // Answer at once, even if the question must wait behind a gap:
            // the others will not wait for that gap.
            self.membership.answer(ev.id(), now);
        }
        if let Body::Alive { answers } = &ev.body {
            // Proof of life even if it must wait behind a gap: the
            // suspicion it answers must not outlast the gap.
            self.membership.refuted(origin, answers);
        }
        match self
            .broadcast
            .accept(&mut self.out, link, ev, hash, frame, now)
        {
            Accepted::Delivered(ev) => {
                self.route.learned(origin, link);
                self.delivered(ev, now);
                self.drain(origin, now);
            }
            Accepted::HeldNextReady => self.drain(origin, now),
            Accepted::Held => {}
        }
        self.drop_forgers(now);
    }

    /// Drops the links that brought forged events.
    fn drop_forgers(&mut self, now: Millis) {
        for link in self.broadcast.take_rejected() {
            let who = match self.links.get(link).and_then(|l| l.peer()) {
                Some(p) => self.membership.display(p),
                None => continue,
            };
            let w = format!("dropped the link to {who}: it relayed a forged event");
            self.warn(Quiet::Forged, w, now);
            self.drop_link(
                link,
                "a forged event (its signature does not check out)",
                now,
            );
        }
    }

    /// Shows warning `w` about a stranger, unless one of its kind was
    /// shown in the last [`QUIET`] ms (then it is counted, and the count
    /// told with the next).
    fn warn(&mut self, kind: Quiet, w: String, now: Millis) {
        let (last, missed) = &mut self.quiet[kind as usize];
        if *last != 0 && now < *last + QUIET {
            *missed += 1;
            return;
        }
        let w = match std::mem::take(missed) {
            0 => w,
            n => format!("{w} (and {n} more like it not shown)"),
        };
        *last = now.max(1);
        self.out.push_back(Action::Show(Show::Warning(w)));
    }

    /// The encrypted handshake: a message on `link` in the `Noise` stage.
    fn on_noise(&mut self, link: LinkId, body: &[u8], now: Millis) {
        let joining = self.joining_link() == Some(link);
        match wire::decode(body) {
            Ok(Msg::Noise(m)) => {
                if let Err(why) = self.links.handshake(&mut self.out, link, &m, joining, now) {
                    // A peer discovery found with another secret (a tag
                    // collision, or a forgery): we stay alone.
                    if joining && !self.found_join_failed() {
                        let label = self.join_label();
                        return self.stop(Stop::Refused(format!("{label}: {why}")));
                    }
                    self.refused_secret(link, why, now);
                }
            }
            Ok(Msg::Refuse { code, text }) => self.on_refuse(link, code, &text, now),
            Ok(Msg::Hello(_)) => {
                let why = "this network is encrypted: start p2pchat with its secret";
                self.refused_secret(link, why, now);
            }
            _ => self.drop_link(link, "not the encrypted handshake", now),
        }
    }

    /// Refuses `link`: its peer does not share our network secret (or
    /// our lack of one). The user is told, now and then.
    fn refused_secret(&mut self, link: LinkId, why: &str, now: Millis) {
        if let Some(addr) = self.links.get(link).map(|l| l.addr) {
            self.warn(Quiet::Secret, format!("refused {addr}: {why}"), now);
        }
        self.refuse(link, Refusal::Secret, why, now);
    }

    fn join_label(&self) -> String {
        match &self.state {
            State::Joining { label, .. } => label.clone(),
            _ => String::new(),
        }
    }

    /// `id`'s identity, bound to it (the caller checked): its key checks
    /// its signatures from now on.
    fn learn_key(&mut self, id: NodeId, ident: Ident) {
        // An id is bound to its key: once known, it never changes (and
        // taking a key apart costs more than checking a signature).
        if self.broadcast.has_key(id) {
            return;
        }
        if let Some(k) = crypto::verifying(&ident.key) {
            self.broadcast.set_key(id, k);
        }
    }

    /// Whether `name` is ours: the same name, in any case or look-alike
    /// letters (see [`crate::name`]).
    fn is_ours(&self, name: &str) -> bool {
        name == self.name || crate::name::same(name, &self.name)
    }

    /// Whether `key` may go by `name`: the name is new here (it is
    /// remembered with this key), or known with this very key.
    fn key_fits(&self, name: &str, key: &PublicKey) -> bool {
        self.known.get(name).is_none_or(|k| k == key)
    }

    /// Gives member `id` the name `name`, unless another member has it or
    /// the name is known with another key (then it is only claimed, and
    /// the user told). `new`: it may be joining the network now (not
    /// learned from our welcome), so if it had no name here before, a
    /// JOIN under the same name in the next moments is a race (see
    /// [`Node::join_rival`]). The members of our welcome have had their
    /// names since before we came: a JOIN under one of them is never a
    /// race, or anyone could take a name at a newcomer in its first
    /// seconds. Returns whether it has the name now.
    fn name_member(&mut self, id: NodeId, name: &str, new: bool) -> bool {
        let had = self.membership.get(id).is_some_and(|m| m.name.is_some());
        let key = self.membership.get(id).and_then(|m| m.ident).map(|i| i.key);
        if let Some(key) = key
            && !self.key_fits(name, &key)
        {
            self.membership.claim(id, name);
            if self.is_member() {
                let was = self
                    .known
                    .get(name)
                    .map_or(String::new(), crypto::fingerprint);
                let w = format!(
                    "{id} says it is {name} with another key ({}; {name} had {was}); \
                     not shown as {name}: compare fingerprints, then :trust {name}",
                    crypto::fingerprint(&key)
                );
                self.out.push_back(Action::Show(Show::Warning(w)));
            }
            return false;
        }
        let named = self.membership.name(id, name);
        let mut taught = false;
        if named
            && let Some(key) = key
            && !self.known.contains_key(name)
        {
            taught = true;
            self.trust_key(name, key, false);
        }
        if named && new && !had {
            self.joins.insert(id, (self.now, taught));
        }
        named
    }

    /// `:whois NAME`: the member's key fingerprint and id.
    fn whois(&mut self, name: &str) {
        let line = if self.is_ours(name) {
            format!(
                "{name} (you): key {}, node {}",
                crypto::fingerprint(&self.ident.public()),
                self.id
            )
        } else {
            let found = self
                .membership
                .find(name)
                .and_then(|id| self.membership.get(id).map(|m| (id, m)));
            match found {
                Some((id, m)) => {
                    let key = m
                        .ident
                        .map_or("unknown".into(), |i| crypto::fingerprint(&i.key));
                    let how = if m.name.is_some() {
                        ""
                    } else {
                        " (claims the name; not trusted)"
                    };
                    format!("{name}: key {key}, node {id}{how}")
                }
                None => match self.known.get(name) {
                    Some(k) => format!(
                        "{name}: not here; known with key {}",
                        crypto::fingerprint(k)
                    ),
                    None => format!("{name}: no such member"),
                },
            }
        };
        self.out.push_back(Action::Show(Show::Info(line)));
    }

    /// `name` has `key` from now on, here and in known_peers (see
    /// [`Action::Trust`]; `replace`: in place of the key known).
    fn trust_key(&mut self, name: &str, key: PublicKey, replace: bool) {
        self.known.insert(name.to_owned(), key);
        self.out.push_back(Action::Trust {
            name: name.to_owned(),
            key,
            replace,
        });
    }

    /// `:trust NAME`: the member that claims `name` with another key gets
    /// it, and its key is remembered for the name from now on.
    fn trust(&mut self, name: &str) {
        let Some(id) = self.membership.find(name) else {
            // Not here: the key it was last refused with, if any.
            let offered = self.offered.iter().rev().find(|(n, _)| n == name);
            let Some(&(_, key)) = offered else {
                let w = format!("no member says it is {name}");
                return self.out.push_back(Action::Show(Show::Warning(w)));
            };
            self.trust_key(name, key, true);
            let line = format!(
                "{name} is trusted with key {}: it may join now",
                crypto::fingerprint(&key)
            );
            return self.out.push_back(Action::Show(Show::Info(line)));
        };
        let Some(key) = self.membership.get(id).and_then(|m| m.ident).map(|i| i.key) else {
            let w = format!("{name}'s key is not known yet");
            return self.out.push_back(Action::Show(Show::Warning(w)));
        };
        self.trust_key(name, key, true);
        if self.membership.get(id).is_some_and(|m| m.name.is_none())
            && self.name_member(id, name, false)
            && self.is_member()
        {
            let shown = self.membership.display(id);
            self.chat.joined(&mut net!(self), shown);
        }
        let line = format!("{name} is trusted with key {}", crypto::fingerprint(&key));
        self.out.push_back(Action::Show(Show::Info(line)));
    }

    /// Announcements (IHAVE) on `link`. One is news of its origin, too:
    /// a member we forgot as lost is heard of again (lost again, where it
    /// left off), and what is announced of a member we lost is fetched,
    /// to be held until its ALIVE lets it back in. In a healed partition
    /// announcements may be all that comes of it: links that pruned its
    /// events before we lost it still hold them back from us, and
    /// nothing else would ever tell us it is back.
    fn on_ihave(&mut self, link: LinkId, ids: &[crate::proto::EventId], now: Millis) {
        for id in ids {
            if id.origin == self.id || self.membership.is_gone(id.origin) {
                continue;
            }
            self.recall(id.origin, now);
            if self.membership.is_lost(id.origin)
                && let Some((lo, hi)) = self.broadcast.announced_paused(id.origin, id.seq)
            {
                self.broadcast.fetch(&mut self.out, link, id.origin, lo, hi);
            }
        }
        self.broadcast.on_ihave(&mut self.out, link, ids, now);
    }

    /// An event from a member we lost. In a healed partition its events
    /// come in order, and its ALIVE after them: hold them until then. If no
    /// ALIVE comes, ask whether it is alive.
    fn hold_lost(
        &mut self,
        link: LinkId,
        ev: Event,
        hash: crypto::EventHash,
        frame: Frame,
        now: Millis,
    ) {
        let origin = ev.origin;
        if ev.body == (Body::Suspect { target: self.id }) {
            // Whoever asks, we answer: others may have it back already,
            // and our silence would make them give up on us.
            self.membership.answer(ev.id(), now);
        }
        self.broadcast.hold_paused(link, ev, hash, frame);
        if self.is_member() {
            self.membership.queue_ask(origin, now);
        }
    }

    /// Delivers what is held of `origin` while it is next in order.
    fn drain(&mut self, origin: NodeId, now: Millis) {
        while let Some(ev) = self.broadcast.drain(&mut self.out, origin, now) {
            self.delivered(ev, now);
        }
        self.drop_forgers(now);
    }

    /// A gap's timer ran out: fetch again, or skip what nobody has.
    fn fill_gap(&mut self, origin: NodeId, now: Millis) {
        match self.broadcast.fill_gap(&mut self.out, origin, now) {
            Gap::Skipped(missed) => {
                let name = self.membership.display(origin);
                let s = if missed == 1 { "" } else { "s" };
                let w = format!("missed {missed} message{s} from {name}");
                self.out.push_back(Action::Show(Show::Warning(w)));
                self.drain(origin, now);
            }
            Gap::Ready => self.drain(origin, now),
            Gap::Waiting => self.drop_forgers(now),
        }
    }

    /// What a delivered event means.
    fn delivered(&mut self, ev: Event, now: Millis) {
        self.delivering = Some(ev.id());
        self.deliver(ev, now);
        self.delivering = None;
    }

    fn deliver(&mut self, ev: Event, now: Millis) {
        let (origin, id) = (ev.origin, ev.id());
        match ev.body {
            Body::Join { name, ip, port, .. } => {
                let addr = ip.map(|ip| SocketAddr::new(ip, port));
                // The key its id is bound to (not whatever the JOIN says).
                if let Some(i) = self.membership.get(origin).and_then(|m| m.ident) {
                    self.stale_self(origin, &name, &i.key, now);
                }
                // Two joins at once under our name: settled by id.
                let race = self.is_ours(&name) && self.name_clash(origin, now);
                let fresh = self.membership.joined(origin, addr);
                // Two others joined under one name at once: the smaller
                // id keeps it, wherever its JOIN comes first, and the
                // other gives way by itself (`name_clash`). The name was
                // announced once, and that is all.
                let rival = self.join_rival(origin, &name, now);
                let present = |s: &Node, id| s.membership.get(id).is_some_and(|m| m.present());
                let (named, announce) = match rival {
                    // Announced under the name unless the loser was.
                    Some(r) if fresh && origin < r => {
                        let shown = present(self, r);
                        (self.take_race(origin, r, &name), !shown)
                    }
                    Some(_) => {
                        if fresh {
                            self.membership.claim(origin, &name);
                        }
                        (false, false)
                    }
                    None => {
                        let named = if fresh {
                            if let Some(key) = self.membership.get(origin).and_then(|m| m.ident) {
                                self.race_key(&name, key.key);
                            }
                            self.name_member(origin, &name, true)
                        } else {
                            self.membership
                                .get(origin)
                                .is_some_and(|m| m.name.is_some())
                        };
                        (named, named && !self.race_won(&name))
                    }
                };
                let shown = self.membership.display(origin);
                if race || rival.is_some() {
                    if announce && named && self.is_member() {
                        self.chat.joined(&mut net!(self), shown);
                    }
                } else if !named && self.is_member() {
                    // Someone has that name already: not shown under it.
                    let w =
                        format!("{shown} says it is {name}, a name in use; not shown as {name}");
                    self.out.push_back(Action::Show(Show::Warning(w)));
                } else if announce && self.is_member() {
                    // Not when it won a race whose loser was shown and
                    // left (`race_won`): the name was announced once.
                    self.chat.joined(&mut net!(self), shown);
                }
                self.rooms.presence(&mut net!(self), origin, now);
                // Our open offers, for the newcomer.
                self.files.member_came(now);
                self.dm.changed();
                self.maintain(now);
            }
            Body::Leave => self.remove_member(origin),
            Body::Chat { room, text } => {
                // Shown only in the lobby; kept for its history.
                let said = self.chat.said(origin);
                let name = self.membership.display(origin);
                if self
                    .rooms
                    .lobby_line_of(&net!(self), origin, &name, &text, said)
                {
                    self.chat
                        .delivered_as(&mut net!(self), name, said, room, text);
                }
            }
            Body::Room(ev) => {
                let said = self.chat.said(origin);
                self.rooms.delivered(&mut net!(self), origin, ev, said, now);
                self.check_handover(now);
            }
            // A lobby action is the chat's; one in a room, the room's.
            Body::Action { room, text } => {
                if room.eq_ignore_ascii_case(crate::app::LOBBY) {
                    if self.rooms.in_lobby() {
                        self.chat
                            .delivered_action(&mut net!(self), origin, room, text)
                    }
                } else {
                    let said = self.chat.said(origin);
                    self.rooms
                        .heard_action(&mut net!(self), origin, &room, text, said);
                }
            }
            Body::Rename { name } => self.membership.rename(origin, &name, false, now),
            Body::Clock { time } => {
                self.clocks.insert(origin, (id.seq, time));
                self.chat.clock(origin, time)
            }
            Body::Other { kind, payload } if (dm::PRIVATE..=29).contains(&kind) => {
                let wall = self.wall;
                self.dm
                    .delivered(&mut net!(self), origin, kind, &payload, wall, now);
                self.dm_out(now);
            }
            Body::Suspect { target } if target == self.id => {
                self.membership.answer(id, now);
                self.asked_late(origin, id.seq);
            }
            Body::Suspect { target } => self.membership.suspicion(id, target, now),
            Body::Alive { answers } => self.membership.alive(origin, &answers),
            Body::Refused { why, .. } => {
                if !self.refused.contains(origin) {
                    self.refused.insert(origin, ());
                    let name = self.membership.display(origin);
                    let w = format!("dropped a message from {name}: {why} over the limit");
                    self.out.push_back(Action::Show(Show::Warning(w)));
                }
            }
            Body::Other {
                kind: kind @ (files::OFFER | files::OFFER_BLAKE2B),
                payload,
            } => {
                if self.is_member() {
                    let here = self.rooms.here().to_owned();
                    self.files
                        .offered(&mut net!(self), self.id, origin, kind, &payload, &here);
                    self.files_out(now);
                }
            }
            Body::Other { kind, .. } => {
                if !self.told_newer {
                    self.told_newer = true;
                    let w = format!(
                        "a newer version of p2pchat is in this network \
                         (event type {kind}); some of what it says is not shown"
                    );
                    self.out.push_back(Action::Show(Show::Warning(w)));
                }
            }
        }
    }

    /// A member left for good: forgotten and tombstoned.
    fn remove_member(&mut self, id: NodeId) {
        let Some(m) = self.membership.leave(id) else {
            return;
        };
        self.dm.changed();
        self.broadcast.remove(id);
        self.mesh.forget(id);
        // One never announced under a name (it lost a join race, or
        // claimed a name in use) is not announced leaving either.
        if self.is_member() && m.present() && m.name.is_some() {
            let name = m.display(id);
            let joined = self.joins.get(id).copied();
            let recent = joined.is_some_and(|(at, _)| self.now < at + JOIN_RACE);
            if recent && self.race_left.len() < RACE_LEFT {
                // It may have lost a join race, and the winner's JOIN be
                // on its way: then the name stays, and nothing is shown;
                // the key its JOIN made known for the name was a loser's
                // (see `race_key`).
                let taught = joined.is_some_and(|(_, t)| t);
                let key = m.ident.map(|i| i.key).filter(|_| taught);
                self.race_left
                    .push_back((name, self.now + RACE_LEFT_WAIT, key));
            } else {
                self.chat.left(&mut net!(self), name, false);
            }
        }
        self.rooms.presence(&mut net!(self), id, self.now);
        self.check_handover(self.now);
        self.files.member_left(&mut net!(self), id);
        self.files.member_gone(&mut net!(self), id);
        self.files_out(self.now);
        self.close_links_to(id);
        let now = self.now;
        self.alone(now);
    }

    /// If our last link just went, the membership waits a while for one,
    /// then takes every member for lost (no path of ours reaches them).
    fn alone(&mut self, now: Millis) {
        if self.is_member() && self.links.up_count() == 0 {
            self.membership.isolated(now);
        }
    }

    /// Routes what membership asks for.
    fn membership_out(&mut self, now: Millis) {
        while let Some(o) = self.membership.next_out() {
            if !matches!(o, Out::Publish(_) | Out::Dial(..)) {
                self.dm.changed();
            }
            match o {
                Out::Publish(body) => {
                    if !self.is_member() {
                        continue;
                    }
                    // Our own question must be answered too before the
                    // suspicion is cleared.
                    let target = match body {
                        Body::Suspect { target } => Some(target),
                        _ => None,
                    };
                    if target.is_some() {
                        // A question carries its time: one answered late
                        // knows it was (see `asked_late`).
                        self.clocked = None;
                        self.stamp();
                    }
                    if let (Some(ask), Some(target)) = (net!(self).publish_id(body), target) {
                        self.membership.asking(target, ask);
                    }
                }
                Out::Dial(id, addr) if self.membership.is_lost(id) => {
                    // A probe: at the membership's pace, past any back-off
                    // from an address that did not answer.
                    if self.mesh.may_probe(addr, now) {
                        let probe = link::Dial::Probe;
                        self.links
                            .dial_as(&mut self.out, addr, Some(id), probe, now);
                    }
                }
                Out::Dial(id, addr) => {
                    if self.mesh.may_dial(addr, now) {
                        self.links.dial(&mut self.out, addr, Some(id), now);
                    }
                }
                Out::Named(id, old) => {
                    let key = self.membership.get(id).and_then(|m| m.ident).map(|i| i.key);
                    let name = self.membership.get(id).and_then(|m| m.name.clone());
                    if let (Some(key), Some(name)) = (key, name)
                        && old.is_some()
                        && !self.known.contains_key(&name)
                    {
                        // As for a rename settled (`settle_rename`).
                        self.trust_key(&name, key, false);
                    }
                    if self.is_member() && self.membership.get(id).is_some_and(|m| m.present()) {
                        let name = self.membership.display(id);
                        if let Some(old) = old {
                            // Its holder gave the name up (see `give_way`).
                            self.chat.renamed(&mut net!(self), id, old, name, false);
                        } else if !self.race_won(&name) {
                            self.chat.joined(&mut net!(self), name);
                        }
                    }
                }
                Out::Lost(id, present) => {
                    self.broadcast.pause(id);
                    self.files.member_gone(&mut net!(self), id);
                    self.files_out(now);
                    if self.is_member() && present {
                        let name = self.membership.display(id);
                        self.chat.left(&mut net!(self), name, true);
                    }
                    self.rooms.presence(&mut net!(self), id, now);
                    self.check_handover(now);
                    self.close_links_to(id);
                    self.alone(now);
                }
                Out::Dropped(id, name, ident) => {
                    if let Some(next) = self.broadcast.forget(id) {
                        self.membership.forgotten(id, next, name, ident);
                    }
                    self.mesh.forget(id);
                }
                Out::Rename { id, name, own, won } => {
                    self.settle_rename(id, name, own, won, now);
                }
            }
        }
    }

    /// A member we had lost is back: it said HELLO, or ALIVE.
    fn readmit(&mut self, id: NodeId, now: Millis) {
        if !self.membership.readmit(id, now) {
            return;
        }
        self.mesh.reset(id);
        self.broadcast.resume(id, now);
        self.dm.changed();
        if self.is_member() {
            let name = self.membership.display(id);
            self.chat.joined(&mut net!(self), name);
        }
        // What was held of it while it was lost, now, not when its next
        // event comes.
        self.drain(id, now);
        self.rooms.presence(&mut net!(self), id, now);
        self.files.member_came(now);
    }

    /// A member forgotten as lost is heard of again: lost again, where it
    /// left off.
    fn recall(&mut self, id: NodeId, now: Millis) {
        if let Some((next, ident)) = self.membership.recall(id, now) {
            self.broadcast.recall(id, next);
            if let Some(ident) = ident {
                self.learn_key(id, ident);
            }
            self.membership_out(now);
        }
    }

    /// Drops a member from every table.
    fn forget_member(&mut self, id: NodeId) {
        self.membership.forget(id);
        self.broadcast.remove(id);
        self.mesh.forget(id);
    }

    /// Makes room for one more member if the table is full, by forgetting
    /// one we only heard of (never linked, never heard from). Returns
    /// whether there is room.
    ///
    /// `via` is the neighbour that told us of it (`None`: it is heard
    /// directly, or in the list we join with): a neighbour may introduce
    /// at most `INTRO_MAX` members, and when the table is full the one
    /// that introduced the most makes room for the others.
    fn make_room(&mut self, via: Option<NodeId>) -> bool {
        if via.is_some_and(|v| self.membership.introduced(v) >= INTRO_MAX) {
            return false;
        }
        if self.membership.count() < MAX_MEMBERS {
            return true;
        }
        let busy = self.links.busy();
        let bc = &self.broadcast;
        let victim = self
            .membership
            .idle(&busy, |id| bc.untouched(id))
            .or_else(|| self.membership.evictable(&busy, via));
        match victim {
            Some(id) => {
                self.forget_member(id);
                true
            }
            None => false,
        }
    }

    /// `id` says it is `name`, with `key`: if the member that has the name
    /// has this key too, and is suspected (it crashed, and this is the
    /// same user starting again before the network has given it up), it
    /// is lost now, and the name free for `id`.
    fn stale_self(&mut self, id: NodeId, name: &str, key: &PublicKey, now: Millis) {
        let Some(h) = self.membership.holder_of(name).filter(|&h| h != id) else {
            return;
        };
        let stale = self
            .membership
            .get(h)
            .is_some_and(|m| m.suspected() && m.ident.is_some_and(|i| &i.key == key));
        if stale && self.membership.lose(h, now).is_some() {
            self.membership_out(now);
        }
    }

    /// Whether a member joins under `name` just after one under it left
    /// (see [`RACE_LEFT_WAIT`]): the winner of a join race whose loser
    /// left already. The name was announced, and stays: neither its
    /// leaving nor this joining is shown.
    fn race_won(&mut self, name: &str) -> bool {
        let before = self.race_left.len();
        self.race_left.retain(|(n, ..)| !crate::name::same(n, name));
        before != self.race_left.len()
    }

    /// `key` comes under `name` (a JOIN, or a HELLO) within
    /// [`RACE_LEFT_WAIT`] of a member under it leaving, whose own JOIN
    /// made the name's key known here: that member lost a join race and
    /// left before the winner's JOIN came, so the winner's key replaces
    /// the loser's, as in [`Node::take_race`].
    fn race_key(&mut self, name: &str, key: PublicKey) {
        let lost = self
            .race_left
            .iter()
            .find(|(n, ..)| crate::name::same(n, name))
            .and_then(|&(_, _, k)| k);
        if let Some(lost) = lost
            && lost != key
            && self.known.get(name) == Some(&lost)
        {
            self.trust_key(name, key, true);
        }
    }

    /// The member other than `id` that has `name` and joined within
    /// [`JOIN_RACE`] of `now`: a join race, as `id` joins under it now.
    fn join_rival(&self, id: NodeId, name: &str, now: Millis) -> Option<NodeId> {
        let h = self.membership.holder_of(name).filter(|&h| h != id)?;
        let &(at, _) = self.joins.get(h)?;
        (now < at + JOIN_RACE).then_some(h)
    }

    /// `winner` takes `name` from `loser`, which joined under it at the
    /// same moment (see [`Node::join_rival`]), if its key may have the
    /// name: the key known for it, or the loser's, if the loser's JOIN
    /// is what made it known (then the winner's key replaces it in
    /// known_peers). Returns whether it has the name now.
    fn take_race(&mut self, winner: NodeId, loser: NodeId, name: &str) -> bool {
        let key = |s: &Node, id| s.membership.get(id).and_then(|m| m.ident).map(|i| i.key);
        let (Some(wkey), lkey) = (key(self, winner), key(self, loser)) else {
            return false;
        };
        let taught = self.joins.get(loser).is_some_and(|&(_, t)| t);
        if taught && lkey.is_some() && self.known.get(name) == lkey.as_ref() {
            self.known.insert(name.to_owned(), wkey);
            self.out.push_back(Action::Trust {
                name: name.to_owned(),
                key: wkey,
                replace: true,
            });
        } else if !self.key_fits(name, &wkey) {
            self.membership.claim(winner, name);
            return false;
        }
        self.membership.take_name(winner, loser);
        self.joins.insert(winner, (self.now, false));
        true
    }

    /// Another member has our name. Two peers that joined at once under one
    /// name settle it: the larger id gives way. A peer that has been in
    /// the network longer than such a race keeps its name. Returns whether
    /// the other may keep it too (we are leaving, or it is the race's
    /// winner).
    fn name_clash(&mut self, other: NodeId, now: Millis) -> bool {
        let racing = self.joined_at.is_some_and(|t| now < t + JOIN_RACE);
        if !racing || self.state == State::Done {
            return self.state == State::Done;
        }
        if self.id > other {
            let msg = format!("the name {} is taken in this network", self.name);
            self.leave(Stop::NameTaken(msg), now);
        }
        true
    }

    /// A SUSPECT about us from `origin` (its event `seq`) was delivered.
    /// If the CLOCK just before it says it was asked [`ANSWERED_LATE`] ago
    /// or more, we did not answer in time (we were stopped, or cut off):
    /// whoever asked, and every member with no link to us, has shown us
    /// leaving, and shows us joining again as our answer comes. Nothing
    /// else may tell the user: a short stop of an idle peer wakes none of
    /// its own timers late. Told once, not once per question.
    fn asked_late(&mut self, origin: NodeId, seq: u64) {
        let Some(wall) = self.wall else {
            return;
        };
        let Some(&(at, said)) = self.clocks.get(origin) else {
            return;
        };
        let late = wall.saturating_sub(said);
        if at + 1 != seq || late < ANSWERED_LATE || !self.is_member() {
            return;
        }
        if self.told_lost.is_some_and(|t| wall < t + TOLD_LOST_QUIET) {
            return;
        }
        self.told_lost = Some(wall);
        let who = self.membership.display(origin);
        let w = format!(
            "{who} asked {} s ago whether this peer was alive, and it did not answer in time \
             (it was stopped, or cut off): {who} and others have shown it leaving, and show it \
             joining again as it answers now",
            late / 1000
        );
        self.out.push_back(Action::Show(Show::Warning(w)));
    }

    /// Publishes our wall clock (CLOCK) before what we say next (a line,
    /// an action, a rename), unless we did within the second: everything
    /// we say carries its time. (Joins and leaves are shown when they
    /// arrive, and our JOIN stays our first event.)
    fn stamp(&mut self) {
        let Some(wall) = self.wall else {
            return;
        };
        if self.clocked.is_none_or(|c| wall < c || wall >= c + 1_000) {
            self.clocked = Some(wall);
            self.publish(Body::Clock { time: wall });
            // Signed on its own, so that a line said alone is signed
            // alone too, never an unsigned event of a run (which a
            // forger's copy, held first, could stand in for).
            self.broadcast.seal(&mut self.out);
        }
    }

    /// `:nick NAME`: asks the network to know us as `name`. Refused here,
    /// with the reason, when it is not a name or another member has it;
    /// else settled like every rename (see [`Membership::rename`]).
    fn nick(&mut self, name: &str, now: Millis) {
        let refuse = |s: &mut Node, w: String| s.out.push_back(Action::Show(Show::Warning(w)));
        if !self.is_member() {
            return refuse(self, "not in a network yet; the name is not changed".into());
        }
        if let Err(e) = crate::name::valid(name) {
            return refuse(self, format!("bad name {name:?}: {e}"));
        }
        // The last `:nick` typed wins: it is compared with the name a
        // rename of ours under way asks for, and replaces that rename.
        let pending = self.membership.own_rename().map(str::to_owned);
        if pending.as_deref() == Some(name) || (pending.is_none() && name == self.name) {
            let line = format!("you are {name} already");
            return self.out.push_back(Action::Show(Show::Info(line)));
        }
        if !crate::name::same(name, &self.name) && self.membership.name_taken(name, self.id) {
            let w = format!(
                "the name {name} is taken in this network; you are still {}",
                self.name
            );
            return refuse(self, w);
        }
        if !self.key_fits(name, &self.ident.public()) {
            let w = format!(
                "the name {name} belongs to another key here (see :whois {name}); you are still {}",
                self.name
            );
            return refuse(self, w);
        }
        if let Some(p) = pending.filter(|_| name == self.name) {
            let line = format!("you stay {name}: the rename to {p} is called off");
            self.out.push_back(Action::Show(Show::Info(line)));
        }
        self.stamp();
        self.publish(Body::Rename {
            name: name.to_owned(),
        });
        self.membership.rename(self.id, name, true, now);
    }

    /// A rename settled (see [`Membership::rename`]): member `id` (we, if
    /// `own`) goes by `name` now, if it `won` the race for it, the name is
    /// free, and the key of whoever had it before (known_peers) is its.
    fn settle_rename(&mut self, id: NodeId, name: String, own: bool, won: bool, now: Millis) {
        if own {
            let old = if won {
                self.membership.rename_own(&name)
            } else {
                None
            };
            let Some(old) = old else {
                let w = format!(
                    "another member took the name {name} at the same moment; you are still {}",
                    self.name
                );
                return self.out.push_back(Action::Show(Show::Warning(w)));
            };
            if old == name {
                // A rename called off by another back to this name.
                return;
            }
            self.before = Some(old.clone());
            self.name.clone_from(&name);
            self.links.rename(&name);
            let me = self.id;
            return self.chat.renamed(&mut net!(self), me, old, name, true);
        }
        let present = self.is_member() && self.membership.get(id).is_some_and(|m| m.present());
        let shown = self.membership.display(id);
        if !won {
            return;
        }
        let key = self.membership.get(id).and_then(|m| m.ident).map(|i| i.key);
        if let Some(key) = key
            && !self.key_fits(&name, &key)
        {
            if present {
                let w = format!(
                    "{shown} asked to be {name}, a name known with another key; still shown as {shown}"
                );
                self.out.push_back(Action::Show(Show::Warning(w)));
            }
            return;
        }
        let Some(old) = self.membership.renamed(id, &name) else {
            // It renamed itself where we could not hear it (a partition),
            // as its holder here did: the smaller node id keeps the name,
            // on every peer. `id` claims it, and has it when the holder
            // gives it up (`give_way`), or is gone.
            self.membership.claim_rename(id, &name);
            let holder = if self.is_ours(&name) {
                Some(self.id)
            } else {
                self.membership.holder_of(&name)
            };
            if holder.is_some_and(|h| h > id) {
                if holder == Some(self.id) {
                    self.give_way(id, &name, now);
                }
            } else if present {
                let w =
                    format!("{shown} asked to be {name}, a name in use; still shown as {shown}");
                self.out.push_back(Action::Show(Show::Warning(w)));
            }
            return;
        };
        if let Some(key) = key
            && !self.known.contains_key(&name)
        {
            self.known.insert(name.clone(), key);
            self.out.push_back(Action::Trust {
                name: name.clone(),
                key,
                replace: false,
            });
        }
        if present && old != name {
            self.chat.renamed(&mut net!(self), id, old, name, false);
        }
    }

    /// Member `winner`, of a smaller node id, renamed itself to `name`,
    /// our name, where we could not hear it (a partition), as we did: it
    /// keeps the name on every peer, and we go back to the name we had
    /// before (see [`Node::fallback`]), told with one line.
    fn give_way(&mut self, winner: NodeId, name: &str, now: Millis) {
        let fallback = self.fallback();
        let who = self.membership.display(winner);
        let again = if self.before.as_deref() == Some(fallback.as_str()) {
            "again"
        } else {
            "now"
        };
        let w = format!(
            "{who} took the name {name} while the network was split, and the smaller node id \
             keeps it: you are {fallback} {again}"
        );
        self.out.push_back(Action::Show(Show::Warning(w)));
        self.stamp();
        self.publish(Body::Rename {
            name: fallback.clone(),
        });
        self.membership.rename(self.id, &fallback, true, now);
    }

    /// The name we go back to when we give ours up: the one we had before
    /// our last rename, if it is free here and ours to take; else our
    /// name, or that one, followed by `-` and the first hex digits of our
    /// node id, which no other member has (node ids differ).
    fn fallback(&self) -> String {
        let key = self.ident.public();
        let free = |s: &Node, n: &str| {
            crate::name::valid(n).is_ok()
                && !s.is_ours(n)
                && s.membership.holder_of(n).is_none()
                && s.key_fits(n, &key)
        };
        if let Some(b) = self.before.as_deref().filter(|b| free(self, b)) {
            return b.to_owned();
        }
        let base = self.before.as_deref().unwrap_or(&self.name);
        let hex = format!("{:016x}", self.id.0);
        for digits in [4, 8, 16] {
            let tail = format!("-{}", &hex[..digits]);
            let keep = wire::MAX_NAME.saturating_sub(tail.chars().count());
            let n: String = base.chars().take(keep).chain(tail.chars()).collect();
            if free(self, &n) {
                return n;
            }
        }
        format!("-{hex}")
    }

    /// Floods our JOIN: who we are and where we listen.
    fn announce(&mut self) {
        let body = Body::Join {
            name: self.name.clone(),
            ip: self.ip,
            port: self.port,
            ident: Ident {
                key: self.ident.public(),
                nonce: self.ident.nonce(),
            },
        };
        self.publish(body);
    }

    fn publish(&mut self, body: Body) {
        net!(self).publish(body);
    }

    /// Tells a joiner who has left: their events, replayed, are not taken.
    /// Back from isolation on `link`: what members we lost said while we
    /// were away may be all that is left of them (they left meanwhile, and
    /// nobody lists them any more), so ask for it. The answers are held
    /// like any event of a lost member, and signed, so the neighbour can
    /// only give us what they said.
    fn catch_up(&mut self, link: LinkId) {
        let lost = self.membership.lost_ids();
        for id in lost.into_iter().take(ASK_MAX) {
            if let Some(done) = self.broadcast.delivered(id) {
                let to = done.saturating_add(FETCH_MAX);
                self.broadcast.fetch(&mut self.out, link, id, done + 1, to);
            }
        }
    }

    fn send_gone(&mut self, link: LinkId, now: Millis) {
        let gone = self.membership.gone();
        for chunk in gone.chunks(wire::GONE_PER_FRAME) {
            let msg = Msg::Gone {
                ids: chunk.to_vec(),
            };
            self.links.send(&mut self.out, link, wire::small(&msg), now);
        }
    }

    fn send_members(&mut self, link: LinkId, now: Millis) {
        let mut all = vec![Entry {
            id: self.id,
            name: self.name.clone(),
            ip: self.ip,
            port: self.port,
            seq: self.broadcast.seq(),
            ident: Ident {
                key: self.ident.public(),
                nonce: self.ident.nonce(),
            },
        }];
        // Only members we have reason to believe in: ones we were told of
        // and never heard from are not passed on.
        for (id, m) in self.membership.present() {
            if let (Some(name), Some(ident)) = (&m.name, m.ident) {
                all.push(Entry {
                    id,
                    name: name.clone(),
                    ip: m.addr.map(|a| a.ip()),
                    port: m.addr.map_or(0, |a| a.port()),
                    seq: self.broadcast.delivered(id).unwrap_or(0),
                    ident,
                });
            }
        }
        let n = all.len().div_ceil(wire::MEMBERS_PER_FRAME);
        for (i, chunk) in all.chunks(wire::MEMBERS_PER_FRAME).enumerate() {
            let msg = Msg::Members {
                last: i + 1 == n,
                entries: chunk.to_vec(),
            };
            self.links.send(&mut self.out, link, wire::small(&msg), now);
        }
    }

    /// Leaves: first hands the rooms we own over, if we are leaving of
    /// our own accord.
    fn leave(&mut self, stop: Stop, now: Millis) {
        if self.is_member()
            && stop == Stop::Left
            && self.handover.is_none()
            && self.rooms.hand_over(&mut net!(self), now)
        {
            self.handover = Some((stop, now + HANDOVER_WAIT));
            return;
        }
        self.leave_now(stop, now);
    }

    /// Leaves once the rooms we own are taken over (or it took too long).
    fn check_handover(&mut self, now: Millis) {
        if let Some((_, until)) = &self.handover
            && (self.rooms.handed_over() || now >= *until)
            && let Some((stop, _)) = self.handover.take()
        {
            self.leave_now(stop, now);
        }
    }

    fn leave_now(&mut self, stop: Stop, now: Millis) {
        let dialling = self.links.dialling() > 0;
        if self.is_member() && self.links.up_count() == 0 && dialling {
            // Nobody to tell yet, but a link is on its way (our relay just
            // left): wait a moment for it, so that our leave is heard.
            if self.leaving.is_none() {
                self.leaving = Some((stop, now + LEAVE_WAIT));
            }
            return;
        }
        self.leaving = None;
        if self.is_member() {
            self.publish(Body::Leave);
        }
        self.stop(stop);
    }

    fn stop(&mut self, stop: Stop) {
        // What we said, our LEAVE last, goes out signed.
        self.broadcast.seal(&mut self.out);
        self.set_state(State::Done);
        self.out.push_back(Action::Stop(stop));
    }

    /// Two links to one peer: keep the one dialled by the smaller node id,
    /// a choice both ends make alike (a punched link was dialled by both).
    /// The other is closed with REFUSE Duplicate, which the far end takes
    /// for no loss.
    fn dedup_links(&mut self, peer: NodeId) {
        let links = &self.links;
        let dialler = |k: LinkId, outbound: bool| {
            if links.get(k).is_some_and(|l| l.dial == link::Dial::Punch) {
                // Both ends dialled it (simultaneous open).
                self.id.min(peer)
            } else if outbound {
                self.id
            } else {
                peer
            }
        };
        let mut both: Vec<(NodeId, LinkId)> = self
            .links
            .to(peer)
            .into_iter()
            .map(|(k, outbound)| (dialler(k, outbound), k))
            .collect();
        if both.len() < 2 {
            return;
        }
        both.sort();
        for &(_, link) in &both[1..] {
            // Said, so that the far end, whose HELLO on the other link may
            // not have reached it yet, does not take the close for a loss.
            let why = wire::small(&Msg::Refuse {
                code: Refusal::Duplicate,
                text: "a second link".into(),
            });
            self.links.send(&mut self.out, link, why, self.now);
            self.close(link);
        }
    }

    /// Dials members until we have `degree` links (or run out of members
    /// worth dialling).
    fn maintain(&mut self, now: Millis) {
        if !self.is_member() {
            return;
        }
        let chosen = self
            .mesh
            .choose(&self.links, self.membership.dialable(), now);
        for c in chosen {
            if c.punch {
                // It did not answer: perhaps behind a NAT. A neighbour
                // that links to it has us both dial at once.
                let ask = wire::small(&Msg::PunchAsk { target: c.id });
                let up: Vec<LinkId> = self.links.up_links().map(|(k, _)| k).collect();
                for k in up {
                    self.links.send(&mut self.out, k, ask.clone(), now);
                }
            } else {
                self.links.dial(&mut self.out, c.addr, Some(c.id), now);
            }
        }
    }

    /// `from` (on `link`) cannot dial `target`: if we link to it, both are
    /// told to dial each other, each at its address as we see it.
    fn on_punch_ask(&mut self, link: LinkId, from: NodeId, target: NodeId, now: Millis) {
        if target == self.id || target == from {
            return;
        }
        let Some(&(to, _)) = self.links.to(target).first() else {
            return;
        };
        let addr = |id| {
            let m = self.membership.get(id).filter(|m| !m.is_lost())?;
            m.addr
        };
        let (Some(a_from), Some(a_target)) = (addr(from), addr(target)) else {
            return;
        };
        if !self.mesh.may_relay_punch(now) {
            return;
        }
        let to_target = Msg::Punch {
            id: from,
            addr: a_from,
        };
        let to_from = Msg::Punch {
            id: target,
            addr: a_target,
        };
        self.links
            .send(&mut self.out, to, wire::small(&to_target), now);
        self.links
            .send(&mut self.out, link, wire::small(&to_from), now);
    }

    /// A neighbour says member `id` dials us from `addr` now: dial it back
    /// from our listening port (TCP simultaneous open), unless we link to
    /// it or punch already.
    fn on_punch(&mut self, id: NodeId, addr: SocketAddr, now: Millis) {
        let known = self.membership.knows(id) && !self.membership.is_gone(id);
        if id == self.id || !known || !self.is_member() {
            return;
        }
        if self.links.linked(id) || self.links.punching(id) {
            return;
        }
        if let Some(k) = self.links.punched_from(addr, id) {
            // Its dial reached us before ours went out: that is the link.
            return self.links.start(&mut self.out, k, now);
        }
        if self.mesh.may_probe(addr, now) {
            let punch = link::Dial::Punch;
            self.links
                .dial_as(&mut self.out, addr, Some(id), punch, now);
        }
    }

    /// Punching to `id` failed too: say so, once.
    fn punch_failed(&mut self, id: NodeId) {
        if self.links.linked(id) || !self.mesh.punch_failed(id) {
            return;
        }
        let name = self.membership.display(id);
        let w = format!(
            "no direct link to {name}: hole punching failed (NATs or firewalls between us); \
             its messages come through other members while there are any"
        );
        self.out.push_back(Action::Show(Show::Warning(w)));
    }

    /// Too many links: ask a neighbour whether we may close ours to it
    /// (see crate::proto::mesh), never `keep` nor a link a file is on
    /// (it stays until the file is through).
    fn shed(&mut self, keep: Option<LinkId>, now: Millis) {
        self.tell_load(now);
        let (links, files) = (&self.links, &self.files);
        let spare = |k| Some(k) == keep || files.carries(k, links.peer(k));
        let io = self.mesh.shed(links, spare, now);
        self.shed_io(io, now);
    }

    /// Our neighbours hear how loaded we are when that changes (see
    /// crate::proto::mesh).
    fn tell_load(&mut self, now: Millis) {
        let io = self.mesh.tell(&self.links, None);
        self.shed_io(io, now);
    }

    /// A SHED message on `link`: answer it, or shed as it allows.
    fn on_shed(&mut self, link: LinkId, body: &[u8], now: Millis) {
        let (links, files) = (&self.links, &self.files);
        let spare = |k| files.carries(k, links.peer(k));
        match self.mesh.on_shed(links, spare, link, body, now) {
            Ok(io) => self.shed_io(io, now),
            Err(e) => return self.drop_link(link, &format!("bad frame: {e}"), now),
        }
        self.shed(None, now);
    }

    /// Does what shedding asks: closes a link saying why, so the other
    /// side neither suspects us nor dials straight back; sends SHED
    /// messages; links to a member a neighbour links to, so that it may
    /// shed its link to us.
    fn shed_io(&mut self, io: Vec<ShedIo>, now: Millis) {
        for x in io {
            match x {
                ShedIo::Send(k, f) => self.links.send(&mut self.out, k, f, now),
                ShedIo::Close(k) => {
                    let text = "too many links; keeping others";
                    self.refuse(k, Refusal::Full, text, now);
                }
                ShedIo::Dial(ids) if self.is_member() => {
                    let dialable: HashMap<NodeId, SocketAddr> =
                        self.membership.dialable().collect();
                    if let Some((id, addr)) = ids.iter().find_map(|i| Some((*i, dialable.get(i)?)))
                        && self.mesh.may_dial(*addr, now)
                    {
                        self.links.dial(&mut self.out, *addr, Some(id), now);
                    }
                }
                ShedIo::Dial(_) => {}
            }
        }
    }

    fn link_up(&mut self, link: LinkId, peer: NodeId) {
        self.links.up(link, peer);
        self.broadcast.neighbour_up(link, peer);
    }

    /// The peer on `link` is not let in after all.
    fn link_not_up(&mut self, link: LinkId) {
        self.links.down_to_hello(link);
        self.broadcast.neighbour_down(link);
    }

    fn refuse(&mut self, link: LinkId, code: Refusal, text: &str, now: Millis) {
        if self.joining_link() == Some(link)
            && !self.found_join_failed()
            && let Some(addr) = self.links.get(link).map(|l| l.addr)
        {
            // We cannot join through a peer we refuse: say why, and stop.
            let why = if text.starts_with(&addr.to_string()) {
                text.to_owned()
            } else {
                format!("cannot join through {addr}: {text}")
            };
            self.stop(Stop::Refused(why));
        }
        self.links.refuse(&mut self.out, link, code, text, now);
        self.broadcast.neighbour_down(link);
        self.tell_load(now);
    }

    fn close(&mut self, link: LinkId) {
        if self.joining_link() == Some(link) {
            self.found_join_failed();
        }
        self.links.close(&mut self.out, link, self.now);
        self.broadcast.neighbour_down(link);
        self.files.link_down(&mut net!(self), link);
        self.files_out(self.now);
        self.tell_load(self.now);
    }

    fn close_links_to(&mut self, id: NodeId) {
        for (link, _) in self.links.to(id) {
            self.close(link);
        }
    }

    // ------------------------------------------------------------------
    // LAN discovery (issue 15): src/proto/discovery.rs decides whom to act
    // on; the node joins through it or links to it, and remembers it.

    /// Discovery is on: `:peers` lists what it finds.
    pub fn enable_discovery(&mut self) {
        self.found.get_or_insert_with(|| Remember::new(FOUND_MAX));
    }

    /// Where we stand, as discovery sees it: alone in our network, in one
    /// with others, or joining or leaving.
    pub fn standing(&self) -> Standing {
        match self.state {
            State::Member if self.leaving.is_none() => {
                if self.membership.count() == 0 {
                    Standing::Alone
                } else {
                    Standing::Member
                }
            }
            _ => Standing::Busy,
        }
    }

    /// Whether `id` is a member of our network (not lost: a lost one is
    /// worth finding again).
    pub fn knows(&self, id: NodeId) -> bool {
        self.membership.is_member(id)
    }

    /// A peer of our network, `id` as it says, is at `addr`, found by
    /// `how`. Alone, we join through it (failing that, we stay alone);
    /// in a network, we link to it, which merges its network with ours.
    pub fn found(&mut self, addr: SocketAddr, id: NodeId, how: Found, now: Millis) {
        self.now = now;
        if id == self.id {
            return;
        }
        match self.standing() {
            Standing::Busy => {}
            Standing::Alone => {
                self.note_found(id, how);
                self.found_join = true;
                self.join(vec![addr], &addr.to_string(), now);
            }
            Standing::Member => {
                if self.knows(id) || self.links.busy().contains(&id) {
                    return;
                }
                if self.mesh.may_dial(addr, now) {
                    self.note_found(id, how);
                    self.links.dial(&mut self.out, addr, Some(id), now);
                }
            }
        }
    }

    /// Member `id` of our network was found by `how` as well (heard on
    /// the LAN): `:peers` lists it.
    pub fn met(&mut self, id: NodeId, how: Found) {
        if self.membership.is_member(id) {
            self.note_found(id, how);
        }
    }

    fn note_found(&mut self, id: NodeId, how: Found) {
        if let Some(f) = &mut self.found {
            f.insert(id, how);
        }
    }

    /// A join through a peer discovery found failed: alone again, and
    /// true; false if the join is not such a one.
    fn found_join_failed(&mut self) -> bool {
        if !self.found_join || !matches!(self.state, State::Joining { .. }) {
            return false;
        }
        self.set_state(State::Member);
        true
    }

    /// `:peers`: the members present that discovery found.
    fn show_found(&mut self) {
        let members = match &self.found {
            None => None,
            Some(found) => {
                let mut v: Vec<MemberView> = self
                    .membership
                    .present()
                    .filter(|&(id, _)| found.contains(id))
                    .map(|(id, m)| view(&self.links, id, m))
                    .collect();
                v.sort_by(|a, b| a.name.cmp(&b.name));
                Some(v)
            }
        };
        self.out.push_back(Action::Show(Show::Discovered(members)));
    }
}
