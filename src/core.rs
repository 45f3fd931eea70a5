//! The protocol core: membership, flooding and liveness, with no I/O.
//!
//! A [`Core`] is one peer's view of the network. The event loop feeds it
//! inputs (a link came up, a frame arrived, a link went down, the user typed
//! a command, the time is now `t`) and drains [`Action`]s from it (send this
//! frame on that link, open a link to that address, close a link, show this
//! to the user, exit). It never touches a socket, a clock or a terminal: time
//! is a number of milliseconds the caller passes in, randomness comes from a
//! seed. The same core runs in the real program and in simulations of
//! hundreds of peers in one process.
//!
//! How the network stays one network:
//!
//! - Joining: a new peer says HELLO (joining) to any member, which checks the
//!   name and answers HELLO and its member list, giving for each member the
//!   last sequence number it delivered from it. The joiner floods a JOIN
//!   event and links to more members until it has `degree` links.
//! - Flooding: every event carries (origin, seq). A peer delivers an event
//!   when it is the next one from its origin, then relays it on every other
//!   link; later ones are held back, earlier ones are duplicates. Held-back
//!   gaps are fetched from neighbours' recent-event caches and, if nobody
//!   has them after `gap_giveup`, skipped with a warning.
//! - Liveness: an idle link carries a PING every `heartbeat`; a link silent
//!   for `link_timeout` is dead. A peer that loses its last link to a member
//!   floods SUSPECT; the member refutes with ALIVE if it is alive elsewhere,
//!   and is declared lost everywhere if it does not within `refute_wait`.
//! - Census: whoever declares two members lost together (a partition,
//!   perhaps) says ALIVE too, and asks about members it then hears nothing
//!   from. In a partition, members with no link to our side are found that
//!   way: no one here had a link to lose. One crash costs no census.
//! - Coming back: lost members are remembered and their addresses probed.
//!   A probe that gets through (a partition heals, a laptop wakes) lets the
//!   member back in on its HELLO; whoever lets two lost members back in
//!   together says ALIVE, which lets it back in wherever it was lost, and
//!   so on across both halves: a few events per peer, not one per pair.
//!   Events of a lost member are held until its ALIVE (or LEAVE), and what
//!   it said while away is fetched like any gap.

use crate::wire::{self, Body, Entry, Event, Hello, Msg, Refusal, WireError};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A link, named by the core; the event loop maps it to a socket.
pub type LinkId = u64;
/// Milliseconds since an origin of the caller's choosing.
pub type Millis = u64;

/// The room everyone starts in.
pub const LOBBY: &str = "lobby";

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
}

impl Default for Config {
    fn default() -> Config {
        Config {
            degree: 6,
            max_degree: 12,
            max_links: 256,
            heartbeat: 20_000,
            link_timeout: 60_000,
            handshake_timeout: 5_000,
            refute_wait: 2_000,
            gap_wait: 300,
            gap_giveup: 10_000,
            lost_max: 256,
        }
    }
}

/// Accepted connections that have not said HELLO yet, at most.
pub const MAX_PENDING: usize = 64;
/// Members a peer keeps track of at most.
pub const MAX_MEMBERS: usize = 4096;
/// Events held back per sender, waiting for a gap to fill, and bytes held
/// back in all.
const MAX_HELD: usize = 512;
const HELD_BYTES: usize = 1 << 20;
/// Events further ahead of the next expected one are dropped, not held.
const HOLD_WINDOW: u64 = 4096;
/// Recent events kept to answer FETCH: count and bytes.
const CACHE_EVENTS: usize = 16384;
const CACHE_BYTES: usize = 4 << 20;
/// Events sent in answer to one FETCH.
const FETCH_MAX: u64 = 256;
/// Departed node ids remembered, so stale member lists cannot revive them.
const TOMBSTONES: usize = 4096;
/// Lost members forgotten, remembered by where their events had got to.
const FORGOTTEN: usize = 4096;
/// Redial back-off: first delay and cap.
const DIAL_BACKOFF: Millis = 500;
const DIAL_BACKOFF_MAX: Millis = 30_000;
/// Members lost (not left) are remembered, to let them back in and to
/// probe their addresses: for a day, probed with back-off up to
/// `DIAL_BACKOFF_MAX` for ten minutes and every five minutes after, one
/// probe per interval (on average).
const LOST_FORGET: Millis = 24 * 3_600_000;
const LOST_SLOW_AFTER: Millis = 600_000;
const LOST_SLOW: Millis = 300_000;
const PROBE_EVERY: Millis = 2_000;
const ASK_AGAIN: Millis = 30_000;
/// Answered suspicions remembered per member.
const ANSWERED: usize = 16;
/// Two peers joining under one name within this of each other are a race,
/// settled by node id; after it, the name belongs to whoever has it.
const JOIN_RACE: Millis = 3_000;
/// After a dial fails, wait this long before the next one to someone else.
const DIAL_PACE: Millis = 250;
/// Dials under way at once, at most.
const MAX_DIALS: usize = 3;
/// Lost members asked about per member list received.
const ASK_MAX: usize = 64;
/// Questions about lost members wait this, plus a random moment up to
/// `ASK_JITTER`: long enough for the member's own ALIVE to make them moot.
const ASK_DELAY: Millis = 2_000;
const ASK_JITTER: Millis = 1_000;
/// Having let lost members back in (a partition heals: whoever lost them
/// likely lost us too), we say ALIVE after a random moment up to this, and
/// then not again for `ALIVE_QUIET`: many coming back cost one ALIVE.
const ALIVE_JITTER: Millis = 200;
const ALIVE_QUIET: Millis = 2_000;
/// Having lost two members together, we say ALIVE, and so does everyone
/// else: a census. A member we have heard nothing from this long after
/// (nor for `ALIVE_QUIET` before) is asked about: in a partition, members
/// with no links to our side would be suspected by no one.
const CENSUS_WAIT: Millis = 3_000;
/// Two members lost, or back, within this of each other are taken for a
/// partition, or its healing.
const TOGETHER: Millis = 10_000;
/// How long leaving waits for a link that is being dialled.
const LEAVE_WAIT: Millis = 1_000;
/// SUSPECTs about us arriving within this are answered by one ALIVE.
const ANSWER_WAIT: Millis = 200;
/// A member only heard of, whose address failed this often, is forgotten.
const DIAL_GIVE_UP: u32 = 6;
/// A link younger than this is not shed (it may be a newcomer's only one).
const SHED_MIN_AGE: Millis = 2_000;
/// After a peer sheds our link, leave it alone this long.
const SHED_BACKOFF: Millis = 60_000;

/// What the event loop must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Queue this frame (length prefix included) on the link.
    Send(LinkId, Vec<u8>),
    /// Open a TCP connection for this new link; report
    /// [`Core::connected`] or [`Core::link_down`].
    Connect(LinkId, SocketAddr),
    /// Flush what is queued on the link, then close it. The core has
    /// forgotten it already.
    Close(LinkId),
    /// Tell the user.
    Show(Show),
    /// Flush every link and exit with this status, printing the message (if
    /// any) as an error.
    Exit(i32, Option<String>),
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
    /// A problem worth telling the user that is not fatal.
    Warning(String),
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

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Say(String),
    Who,
    Quit,
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

#[derive(Debug)]
struct Link {
    /// The remote address of the socket.
    addr: SocketAddr,
    outbound: bool,
    /// TCP is up (always, for an accepted link).
    connected: bool,
    /// The node we meant to reach, for a link we dialled to a member.
    target: Option<u64>,
    /// The node on the other side, once HELLO is done.
    peer: Option<u64>,
    /// Its own last event when it sent us its member list: later events
    /// of that node are taken from this link only.
    floor: Option<u64>,
    opened: Millis,
    last_rx: Millis,
    last_tx: Millis,
}

#[derive(Debug)]
struct Member {
    name: Option<String>,
    addr: Option<SocketAddr>,
    /// The next sequence number to deliver from this member.
    next: u64,
    /// Events that arrived ahead of `next`: the frame and the link it came
    /// on (decoded again when their turn comes).
    held: BTreeMap<u64, (Vec<u8>, LinkId)>,
    /// The furthest event seen ahead of `next`, held or not (too far
    /// ahead to hold): we are behind until `next` passes it.
    ahead: u64,
    /// A neighbour answered our FETCH: its oldest event of this member is
    /// this one; what comes before is lost to it.
    lack: Option<u64>,
    /// We skipped this member's events below this, or started after them
    /// (the first event we delivered ourselves): we never had them, so we
    /// cannot tell anyone they were let go.
    skipped_to: u64,
    /// The first event of this member we delivered (0: none yet).
    first_seen: u64,
    gap_since: Millis,
    fetch_at: Millis,
    suspect_until: Option<Millis>,
    dial_failures: u32,
    dial_after: Millis,
    /// Shown to the user as present: its JOIN was delivered, or it was
    /// there when we joined. Only such a member is announced as leaving.
    present: bool,
    /// Suspected, and our own dial to it failed since.
    unreachable: bool,
    /// SUSPECT events (origin, seq) it has answered with ALIVE.
    answered: VecDeque<(u64, u64)>,
    /// When we last got a new event of it (0: never).
    heard: Millis,
    /// The last event our latest FETCH of it asked for (0: none pending).
    fetched_to: u64,
    /// Silent through a census: when to ask the network about it.
    ask_at: Option<Millis>,
}

impl Member {
    fn new(name: Option<String>, addr: Option<SocketAddr>, next: u64) -> Member {
        Member {
            name,
            addr,
            next,
            held: BTreeMap::new(),
            ahead: 0,
            lack: None,
            skipped_to: 0,
            first_seen: 0,
            gap_since: 0,
            fetch_at: 0,
            suspect_until: None,
            dial_failures: 0,
            dial_after: 0,
            present: false,
            unreachable: false,
            answered: VecDeque::new(),
            heard: 0,
            fetched_to: 0,
            ask_at: None,
        }
    }
}

/// A member we lost contact with: it may come back (a partition heals, a
/// stopped laptop wakes), and we keep trying its address.
#[derive(Debug)]
struct Lost {
    m: Member,
    since: Millis,
    probes: u32,
    probe_after: Millis,
    /// When we last asked the network about it (a SUSPECT), because a
    /// peer listed it as alive, or heard someone else ask.
    asked: Option<Millis>,
    /// A question to ask: when it was decided, and when to ask it.
    ask_at: Option<(Millis, Millis)>,
}

/// A small deterministic random number generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The seed is mixed first (splitmix64), so that near seeds such as 32
    /// and 33 start far apart; xorshift must not start at 0.
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`; `n` must not be 0.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Node ids remembered with a value, at most `cap` of them: when full, the
/// one remembered longest is forgotten first.
#[derive(Debug)]
struct Remember<V> {
    cap: usize,
    /// Each id's value and its stamp in `by_age`.
    by_id: HashMap<u64, (u64, V)>,
    by_age: BTreeMap<u64, u64>,
    stamp: u64,
}

impl<V> Remember<V> {
    fn new(cap: usize) -> Remember<V> {
        Remember {
            cap,
            by_id: HashMap::new(),
            by_age: BTreeMap::new(),
            stamp: 0,
        }
    }

    fn contains(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    fn get(&self, id: u64) -> Option<&V> {
        self.by_id.get(&id).map(|(_, v)| v)
    }

    /// Remembers `v` for `id`, as the newest.
    fn insert(&mut self, id: u64, v: V) {
        self.remove(id);
        if self.by_id.len() >= self.cap {
            if let Some((_, old)) = self.by_age.pop_first() {
                self.by_id.remove(&old);
            }
        }
        self.stamp += 1;
        self.by_age.insert(self.stamp, id);
        self.by_id.insert(id, (self.stamp, v));
    }

    fn remove(&mut self, id: u64) -> Option<V> {
        let (stamp, v) = self.by_id.remove(&id)?;
        self.by_age.remove(&stamp);
        Some(v)
    }
}

/// Recent events by (origin, seq), bounded in count and bytes.
#[derive(Debug, Default)]
struct Cache {
    frames: BTreeMap<(u64, u64), Vec<u8>>,
    order: VecDeque<(u64, u64)>,
    bytes: usize,
}

impl Cache {
    /// The oldest event of `origin` still kept.
    fn oldest(&self, origin: u64) -> Option<u64> {
        self.frames
            .range((origin, 0)..=(origin, u64::MAX))
            .next()
            .map(|(&(_, s), _)| s)
    }

    fn insert(&mut self, key: (u64, u64), frame: Vec<u8>) {
        self.bytes += frame.len();
        match self.frames.insert(key, frame) {
            Some(old) => self.bytes -= old.len(),
            None => self.order.push_back(key),
        }
        while self.order.len() > CACHE_EVENTS || self.bytes > CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(f) = self.frames.remove(&old) {
                self.bytes -= f.len();
            }
        }
    }
}

/// One peer's protocol state. See the module documentation.
pub struct Core {
    cfg: Config,
    id: u64,
    name: String,
    port: u16,
    /// Our IP as others see it, once someone has told us.
    ip: Option<IpAddr>,
    /// The last sequence number we used.
    seq: u64,
    state: State,
    links: BTreeMap<LinkId, Link>,
    next_link: LinkId,
    members: BTreeMap<u64, Member>,
    /// Members that left: their ids are never let in again.
    gone: Remember<()>,
    lost: BTreeMap<u64, Lost>,
    /// Lost members forgotten (too many lost, or lost too long): the next
    /// event we would deliver of each, and its name.
    forgotten: Remember<(u64, Option<String>)>,
    /// When to probe a lost member's address next.
    probe_at: Option<Millis>,
    /// When a question about a lost member is due (a lower bound).
    ask_wake: Option<Millis>,
    /// When a link gets old enough to be shed, if we have too many.
    shed_at: Option<Millis>,
    /// When we became a member, to tell a name race from a taken name.
    joined_at: Option<Millis>,
    /// Leaving, but waiting (until the time given) for a link to say so on.
    leaving: Option<(i32, Option<String>, Millis)>,
    /// SUSPECTs about us not answered yet, and when to answer them.
    to_answer: Vec<(u64, u64)>,
    answer_at: Option<Millis>,
    /// SUSPECTs about us answered lately, so copies are not answered twice.
    answered: VecDeque<(u64, u64)>,
    /// When to say ALIVE because lost members came back, and when we last
    /// said ALIVE at all.
    alive_at: Option<Millis>,
    alive_last: Option<Millis>,
    /// A census under way: when it started, and when to count.
    census: Option<(Millis, Millis)>,
    /// When we last lost a member, and when one last came back.
    last_loss: Option<Millis>,
    last_back: Option<Millis>,
    cache: Cache,
    rng: Rng,
    out: VecDeque<Action>,
    /// When to look for more links again, if we are short of them.
    maintain_at: Option<Millis>,
    /// Bytes of frames held back, all members together.
    held_bytes: usize,
    /// No member timer (gap fetch, suspicion) is due before this: a lower
    /// bound, so [`Core::deadline`] need not look at every member.
    member_wake: Option<Millis>,
}

impl Core {
    /// A peer named `name` with node id `id`, listening on `port`, alone in
    /// a new network until someone joins or [`Core::join`] is called.
    pub fn new(cfg: Config, id: u64, name: &str, port: u16, seed: u64) -> Core {
        Core {
            cfg,
            id,
            name: name.to_owned(),
            port,
            ip: None,
            seq: 0,
            state: State::Member,
            links: BTreeMap::new(),
            next_link: 1,
            members: BTreeMap::new(),
            gone: Remember::new(TOMBSTONES),
            lost: BTreeMap::new(),
            forgotten: Remember::new(FORGOTTEN),
            probe_at: None,
            ask_wake: None,
            shed_at: None,
            // Whoever starts a network cannot be racing anyone for its name.
            joined_at: None,
            leaving: None,
            to_answer: Vec::new(),
            answer_at: None,
            answered: VecDeque::new(),
            alive_at: None,
            alive_last: None,
            census: None,
            last_loss: None,
            last_back: None,
            cache: Cache::default(),
            rng: Rng::new(seed),
            out: VecDeque::new(),
            maintain_at: None,
            member_wake: None,
            held_bytes: 0,
        }
    }

    /// Joins an existing network through the first of `addrs` that answers;
    /// `label` names them in errors (`localhost:40123`).
    pub fn join(&mut self, addrs: Vec<SocketAddr>, label: &str, now: Millis) {
        self.joined_at = None;
        self.state = State::Joining {
            addrs,
            next: 0,
            label: label.to_owned(),
            link: 0,
        };
        self.dial_next_join(now, "no address");
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether we are in a network (so typed lines can be sent).
    pub fn is_member(&self) -> bool {
        self.state == State::Member
    }

    /// Members known, not counting us.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// The names of the members shown as present, not counting us (for
    /// completing names as they are typed).
    pub fn member_names(&self) -> Vec<String> {
        self.members
            .values()
            .filter(|m| m.present)
            .filter_map(|m| m.name.clone())
            .collect()
    }

    /// A one-line account of what we know of member `id`, for tests.
    pub fn describe(&self, id: u64) -> String {
        if let Some(m) = self.members.get(&id) {
            let held: Vec<u64> = m.held.keys().copied().collect();
            format!(
                "member next={} held={held:?} suspect={:?} linked={}",
                m.next,
                m.suspect_until,
                self.linked(id)
            )
        } else if let Some(l) = self.lost.get(&id) {
            format!(
                "lost since={} next={} probes={}",
                l.since, l.m.next, l.probes
            )
        } else if let Some((next, _)) = self.forgotten.get(id) {
            format!("forgotten next={next}")
        } else if self.gone.contains(id) {
            "gone".into()
        } else {
            "unknown".into()
        }
    }

    /// Links with HELLO done.
    pub fn link_count(&self) -> usize {
        self.links.values().filter(|l| l.peer.is_some()).count()
    }

    /// Whether actions are waiting for [`Core::next_action`].
    pub fn has_actions(&self) -> bool {
        !self.out.is_empty()
    }

    /// Whether `link` has said HELLO (it carries the network's traffic).
    pub fn is_established(&self, link: LinkId) -> bool {
        self.links.get(&link).is_some_and(|l| l.peer.is_some())
    }

    /// The next thing to do, if any.
    pub fn next_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// A connection was accepted from `addr`; returns its new link. With
    /// [`MAX_PENDING`] others still waiting for their HELLO, the oldest of
    /// them is closed: an honest peer says HELLO at once, so whoever has
    /// waited longest is the likeliest to be dead or hostile.
    pub fn accepted(&mut self, addr: SocketAddr, now: Millis) -> LinkId {
        let mut pending = self
            .links
            .iter()
            .filter(|(_, l)| !l.outbound && l.peer.is_none())
            .map(|(&k, _)| k);
        if let Some(oldest) = pending.next() {
            if pending.count() + 1 >= MAX_PENDING {
                self.links.remove(&oldest);
                self.out.push_back(Action::Close(oldest));
            }
        }
        let id = self.new_link(addr, false, None, now);
        self.links.get_mut(&id).expect("new link").connected = true;
        id
    }

    /// An outbound connection we asked for is up: say HELLO.
    pub fn connected(&mut self, link: LinkId, now: Millis) {
        let joining = matches!(self.state, State::Joining { .. });
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        l.connected = true;
        let ip = l.addr.ip();
        let hello = self.hello(joining, ip);
        self.send(link, hello, now);
    }

    /// Our HELLO frame, telling the other side the IP we see it at.
    fn hello(&self, joining: bool, you: IpAddr) -> Vec<u8> {
        wire::frame(&Msg::Hello(Hello {
            version: wire::VERSION,
            id: self.id,
            name: self.name.clone(),
            port: self.port,
            joining,
            you: Some(you),
        }))
    }

    /// A link failed or was closed by the other side.
    pub fn link_down(&mut self, link: LinkId, reason: &str, now: Millis) {
        let Some(l) = self.links.remove(&link) else {
            return;
        };
        if let State::Joining { link: j, .. } = self.state {
            if j == link {
                if l.peer.is_none() {
                    self.dial_next_join(now, reason);
                } else {
                    self.exit(1, format!("{} closed the link while we joined", l.addr));
                }
                return;
            }
        }
        if let Some(p) = l.peer {
            self.lost_link_to(p, now);
        } else if let Some(t) = l.target {
            // A dial that never got through: back off before trying again.
            if let Some(m) = self.members.get_mut(&t) {
                m.unreachable = m.suspect_until.is_some();
                m.dial_failures = m.dial_failures.saturating_add(1);
                m.dial_after = now + backoff(m.dial_failures);
                if !m.present && m.dial_failures >= DIAL_GIVE_UP {
                    // Only ever heard of, never reached: likely made up.
                    self.forget_member(t);
                }
            }
            // Pace dials after a failure: a list of dead addresses must
            // not turn into a connection storm.
            soonest(&mut self.maintain_at, now + DIAL_PACE);
            return;
        }
        self.maintain(now);
    }

    /// A whole frame body arrived on `link`.
    pub fn frame(&mut self, link: LinkId, body: &[u8], now: Millis) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        l.last_rx = now;
        let peer = l.peer;
        let msg = match wire::decode(body) {
            Ok(m) => m,
            // A newer peer may speak kinds we do not know: skip them.
            Err(WireError::UnknownKind(_)) if peer.is_some() => return,
            Err(e) => return self.drop_link(link, &format!("bad frame: {e}"), now),
        };
        match (peer, msg) {
            (None, Msg::Hello(h)) => self.on_hello(link, h, now),
            (None, Msg::Refuse { code, text }) => self.on_refuse(link, code, &text, now),
            (None, _) => self.drop_link(link, "message before HELLO", now),
            (Some(_), Msg::Hello(_)) => self.drop_link(link, "second HELLO", now),
            (
                Some(p),
                Msg::Refuse {
                    code: Refusal::Full,
                    ..
                },
            ) => {
                // Shed by the other side: a deliberate close, not a failure.
                self.links.remove(&link);
                self.out.push_back(Action::Close(link));
                if let Some(m) = self.members.get_mut(&p) {
                    m.dial_after = now + SHED_BACKOFF;
                }
                self.maintain(now);
            }
            (Some(_), Msg::Refuse { .. }) => self.drop_link(link, "refused", now),
            (Some(p), Msg::Members { last, entries }) => {
                self.on_members(link, p, last, entries, now)
            }
            (Some(_), Msg::Event(ev)) => {
                let mut frame = Vec::with_capacity(body.len() + 4);
                frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
                frame.extend_from_slice(body);
                self.on_event(link, ev, frame, now);
            }
            (Some(_), Msg::Fetch { origin, from, to }) => self.on_fetch(link, origin, from, to),
            (Some(_), Msg::Ping) => {}
            (Some(_), Msg::Lack { origin, oldest }) => {
                if let Some(m) = self.members.get_mut(&origin) {
                    if behind(m) {
                        m.lack = Some(m.lack.map_or(oldest, |l| l.min(oldest)));
                    }
                }
            }
        }
    }

    /// The user typed a command.
    pub fn command(&mut self, cmd: Command, now: Millis) {
        if self.leaving.is_some() {
            return;
        }
        match cmd {
            Command::Say(text) => {
                if self.state != State::Member {
                    return;
                }
                let mut text = text;
                truncate(&mut text, wire::MAX_TEXT);
                self.show(Show::Chat {
                    from: self.name.clone(),
                    room: LOBBY.into(),
                    text: text.clone(),
                    own: true,
                });
                self.emit(
                    Body::Chat {
                        room: LOBBY.into(),
                        text,
                    },
                    now,
                );
            }
            Command::Who => {
                let mut v = vec![MemberView {
                    name: self.name.clone(),
                    addr: self.ip.map(|ip| SocketAddr::new(ip, self.port)),
                    reach: Reach::Me,
                }];
                for (id, m) in self.members.iter().filter(|(_, m)| m.present) {
                    v.push(MemberView {
                        name: display_name(*id, m),
                        addr: m.addr,
                        reach: if self.linked(*id) {
                            Reach::Direct
                        } else {
                            Reach::Relayed
                        },
                    });
                }
                v.sort_by(|a, b| a.name.cmp(&b.name));
                self.show(Show::Members(v));
            }
            Command::Quit => self.leave(0, None, now),
        }
    }

    /// The time is `now`: run the timers that are due.
    pub fn tick(&mut self, now: Millis) {
        let cfg = &self.cfg;
        let mut dead = Vec::new();
        let mut ping = Vec::new();
        let mut any_ping_due = false;
        for (&id, l) in &self.links {
            if l.peer.is_none() {
                if now >= l.opened + cfg.handshake_timeout {
                    dead.push((id, "timed out"));
                }
            } else if now >= l.last_rx + cfg.link_timeout {
                dead.push((id, "timed out"));
            } else {
                any_ping_due |= now >= l.last_tx + cfg.heartbeat;
                // Ping every link half-way due at once: one wake-up, not many.
                if now >= l.last_tx + cfg.heartbeat / 2 {
                    ping.push(id);
                }
            }
        }
        for (id, why) in dead {
            self.drop_link(id, why, now);
        }
        if any_ping_due {
            let f = wire::frame(&Msg::Ping);
            for id in ping {
                if self.links.contains_key(&id) {
                    self.send(id, f.clone(), now);
                }
            }
        }

        if self.member_wake.is_some_and(|t| now >= t) {
            self.member_wake = None;
            self.member_timers(now);
        }
        if self.maintain_at.is_some_and(|t| now >= t) {
            self.maintain_at = None;
            self.maintain(now);
        }
        if self.probe_at.is_some_and(|t| now >= t) {
            self.probe(now);
        }
        if self.ask_wake.is_some_and(|t| now >= t) {
            self.ask(now);
        }
        if self.shed_at.is_some_and(|t| now >= t) {
            self.shed_at = None;
            self.shed(0, now);
        }
        let due = |t: Option<Millis>| t.is_some_and(|t| now >= t);
        if due(self.answer_at) || due(self.alive_at) {
            self.say_alive(now);
        }
        if due(self.census.map(|(_, at)| at)) {
            self.count_census(now);
        }
        if let Some((code, msg, until)) = self.leaving.take() {
            if now >= until {
                self.state = State::Done;
                self.out.push_back(Action::Exit(code, msg));
            } else {
                self.leaving = Some((code, msg, until));
            }
        }
    }

    /// Asks the questions about lost members that are due, unless someone
    /// else asked meanwhile.
    fn ask(&mut self, now: Millis) {
        self.ask_wake = None;
        let mut due = Vec::new();
        for (&id, l) in self.lost.iter_mut() {
            match l.ask_at {
                Some((queued, at)) if at <= now => {
                    l.ask_at = None;
                    if l.asked.is_none_or(|t| t < queued) {
                        l.asked = Some(now);
                        due.push(id);
                    }
                }
                Some((_, at)) => soonest(&mut self.ask_wake, at),
                None => {}
            }
        }
        if self.state == State::Member {
            for id in due {
                self.emit(Body::Suspect { target: id }, now);
            }
        }
    }

    /// Dials one lost member whose back-off has run out: the way two halves
    /// of a partition, or a peer and a sleeping laptop, find each other
    /// again.
    fn probe(&mut self, now: Millis) {
        let old: Vec<u64> = self
            .lost
            .iter()
            .filter(|(_, l)| now >= l.since + LOST_FORGET)
            .map(|(&id, _)| id)
            .collect();
        for id in old {
            self.drop_lost(id);
        }
        self.probe_at = None;
        if self.state != State::Member || self.lost.is_empty() {
            return;
        }
        let busy: HashSet<u64> = self.links.values().filter_map(|l| l.target).collect();
        let mut ready: Vec<u64> = self
            .lost
            .iter()
            .filter(|(id, l)| l.probe_after <= now && l.m.addr.is_some() && !busy.contains(id))
            .map(|(&id, _)| id)
            .collect();
        ready.sort_unstable();
        if !ready.is_empty() {
            let id = ready[self.rng.below(ready.len() as u64) as usize];
            let l = self.lost.get_mut(&id).expect("lost");
            l.probes = l.probes.saturating_add(1);
            l.probe_after = if now >= l.since + LOST_SLOW_AFTER {
                // At a random phase: members lost together (a partition)
                // would otherwise all be probed at once, then not at all.
                now + LOST_SLOW / 2 + self.rng.below(LOST_SLOW)
            } else {
                now + backoff(l.probes)
            };
            let addr = l.m.addr.expect("addr");
            let link = self.new_link(addr, true, Some(id), now);
            self.out.push_back(Action::Connect(link, addr));
        }
        // Every peer of a partition's half lost its members at the same
        // moment: a random phase keeps their probes apart, so that one
        // reaches the other half soon after it can.
        self.probe_at = Some(now + PROBE_EVERY / 2 + self.rng.below(PROBE_EVERY));
    }

    /// Runs the members' timers that are due, and finds the next one.
    fn member_timers(&mut self, now: Millis) {
        let mut gaps = Vec::new();
        let mut gone = Vec::new();
        let mut asks = Vec::new();
        for (&id, m) in &self.members {
            if behind(m) && now >= m.fetch_at {
                gaps.push(id);
            }
            if m.suspect_until.is_some_and(|t| now >= t) {
                gone.push(id);
            }
            if m.ask_at.is_some_and(|t| now >= t) {
                asks.push(id);
            }
        }
        for id in gaps {
            self.fill_gap(id, now);
        }
        for id in asks {
            let linked = self.linked(id);
            // Gone meanwhile, perhaps by a LEAVE a filled gap let through.
            let Some(m) = self.members.get_mut(&id) else {
                continue;
            };
            m.ask_at = None;
            // Unless someone asked first, or we link to it now.
            if m.suspect_until.is_none() && !linked && self.state == State::Member {
                m.suspect_until = Some(now + self.cfg.refute_wait);
                self.emit(Body::Suspect { target: id }, now);
            }
        }
        let isolated = self.link_count() == 0;
        let wait = self.cfg.refute_wait;
        for id in gone {
            let linked = self.linked(id);
            let Some(m) = self.members.get_mut(&id) else {
                continue;
            };
            if linked {
                // Still talking to us directly: not gone, whatever others think.
                m.suspect_until = None;
            } else if isolated && !m.unreachable {
                // With no links at all we cannot tell who is cut off: us,
                // most likely. Wait until we reach someone, or fail to
                // reach this member ourselves.
                m.suspect_until = Some(now + wait);
                soonest(&mut self.member_wake, now + wait);
            } else {
                self.remove_member(id, true, now);
                // Two lost together: perhaps a partition, which a census
                // tells. One crash alone needs none.
                if together(&mut self.last_loss, now) {
                    self.start_census(now);
                }
            }
        }
        // From scratch: what ran above may have lowered it to a timer it
        // has since dealt with.
        self.member_wake = None;
        for m in self.members.values() {
            if behind(m) {
                soonest(&mut self.member_wake, m.fetch_at);
            }
            if let Some(t) = m.suspect_until {
                soonest(&mut self.member_wake, t);
            }
            if let Some(t) = m.ask_at {
                soonest(&mut self.member_wake, t);
            }
        }
    }

    /// We lost a member: say ALIVE, and count who else does.
    fn start_census(&mut self, now: Millis) {
        if self.state != State::Member {
            return;
        }
        self.want_alive(now);
        if self.census.is_none() {
            self.census = Some((now, now + CENSUS_WAIT));
        }
    }

    /// Asks, after a random moment, about members silent through the
    /// census (at most `ASK_MAX`): anyone else who asks first saves us
    /// the question.
    fn count_census(&mut self, now: Millis) {
        let Some((start, _)) = self.census.take() else {
            return;
        };
        if self.state != State::Member || self.link_count() == 0 {
            return;
        }
        let since = start.saturating_sub(ALIVE_QUIET);
        let linked: HashSet<u64> = self.links.values().filter_map(|l| l.peer).collect();
        let silent = self.members.iter_mut().filter(|(id, m)| {
            m.present
                && m.heard < since
                && m.suspect_until.is_none()
                && m.ask_at.is_none()
                && !linked.contains(id)
        });
        for (_, m) in silent.take(ASK_MAX) {
            let at = now + 1 + self.rng.below(ASK_JITTER);
            m.ask_at = Some(at);
            soonest(&mut self.member_wake, at);
        }
    }

    /// When [`Core::tick`] next has work to do, if ever.
    pub fn deadline(&self) -> Option<Millis> {
        let cfg = &self.cfg;
        let mut t = self.maintain_at;
        let mut min = |x: Millis| t = Some(t.map_or(x, |t| t.min(x)));
        for l in self.links.values() {
            if l.peer.is_none() {
                min(l.opened + cfg.handshake_timeout);
            } else {
                min(l.last_rx + cfg.link_timeout);
                min(l.last_tx + cfg.heartbeat);
            }
        }
        if let Some(w) = self.member_wake {
            min(w);
        }
        if let Some(p) = self.probe_at {
            min(p);
        }
        if let Some(a) = self.ask_wake {
            min(a);
        }
        if let Some(p) = self.shed_at {
            min(p);
        }
        if let Some((_, _, until)) = &self.leaving {
            min(*until);
        }
        if let Some(a) = self.answer_at {
            min(a);
        }
        if let Some(a) = self.alive_at {
            min(a);
        }
        if let Some((_, a)) = self.census {
            min(a);
        }
        t
    }

    fn new_link(
        &mut self,
        addr: SocketAddr,
        outbound: bool,
        target: Option<u64>,
        now: Millis,
    ) -> LinkId {
        let id = self.next_link;
        self.next_link += 1;
        self.links.insert(
            id,
            Link {
                addr,
                outbound,
                connected: false,
                target,
                peer: None,
                floor: None,
                opened: now,
                last_rx: now,
                last_tx: now,
            },
        );
        id
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
            return self.exit(1, msg);
        };
        *next += 1;
        let link = self.new_link(addr, true, None, now);
        if let State::Joining { link: j, .. } = &mut self.state {
            *j = link;
        }
        self.out.push_back(Action::Connect(link, addr));
    }

    fn on_hello(&mut self, link: LinkId, h: Hello, now: Millis) {
        let l = &self.links[&link];
        let (outbound, addr) = (l.outbound, l.addr);
        let joining_link = matches!(self.state, State::Joining { link: j, .. } if j == link);

        if h.version != wire::VERSION {
            let why = format!(
                "{addr} speaks protocol version {}, this peer speaks {}",
                h.version,
                wire::VERSION
            );
            return self.refuse(link, Refusal::Version, &why, now);
        }
        if h.id == self.id {
            if joining_link {
                return self.exit(1, format!("{addr} is this peer itself"));
            }
            return self.refuse(link, Refusal::Myself, "connected to itself", now);
        }
        if !wire::valid_name(&h.name) {
            return self.refuse(link, Refusal::BadHello, "invalid name", now);
        }
        if self.gone.contains(h.id) {
            let why = "this network saw you leave; start again to rejoin";
            return self.refuse(link, Refusal::Gone, why, now);
        }
        if !outbound {
            if self.state != State::Member {
                return self.refuse(link, Refusal::Other, "this peer is still joining", now);
            }
            if h.joining && self.name_taken(&h.name, h.id) {
                let why = format!("the name {} is taken in this network", h.name);
                return self.refuse(link, Refusal::NameTaken, &why, now);
            }
            if self.link_count() >= self.cfg.max_links {
                return self.refuse(link, Refusal::Full, "this peer has too many links", now);
            }
        }
        if h.you.is_some() && self.ip.is_none_or(|ip| ip.is_unspecified()) {
            self.ip = h.you;
        }
        self.recall(h.id, now);
        self.readmit(h.id, now);
        let was_isolated = self.link_count() == 0;

        let l = self.links.get_mut(&link).expect("link");
        l.peer = Some(h.id);
        // Where the peer listens: what we dialled, or where it came from
        // with the port it says it listens on.
        let listen = if outbound {
            addr
        } else {
            SocketAddr::new(addr.ip(), h.port)
        };
        if !outbound {
            let reply = self.hello(false, addr.ip());
            self.send(link, reply, now);
        }

        let known = self.members.contains_key(&h.id);
        if !known && !self.make_room() {
            return self.drop_link(link, "too many members", now);
        }
        let linked = self
            .links
            .iter()
            .any(|(&k, l)| k != link && l.peer == Some(h.id));
        let m = self
            .members
            .entry(h.id)
            .or_insert_with(|| Member::new(None, None, 1));
        if linked && m.name.as_deref() != Some(&h.name) {
            // Someone else's id under another name: an impostor.
            self.links.get_mut(&link).expect("link").peer = None;
            let why = "that node id is linked already";
            return self.refuse(link, Refusal::Duplicate, why, now);
        }
        m.name = Some(h.name.clone());
        m.addr = Some(listen);
        m.dial_failures = 0;
        m.suspect_until = None;
        m.unreachable = false;

        if h.name == self.name && !self.name_clash(h.id, now) {
            let why = format!("the name {} is taken in this network", h.name);
            self.forget_member(h.id);
            self.links.get_mut(&link).expect("link").peer = None;
            return self.refuse(link, Refusal::NameTaken, &why, now);
        }
        if self.state == State::Member && self.seq == 0 {
            // We started this network and this is our first link: a JOIN
            // of our own, so that peers who meet us later (a network we
            // merge with) announce us like anyone else.
            self.announce(now);
        }
        if self.state == State::Member {
            self.send_members(link, now);
            if was_isolated && self.seq > 1 {
                // Back from isolation: whoever gave up on us, take us back.
                self.say_alive(now);
            }
        }
        self.dedup_links(h.id);
        self.shed(link, now);
        if let Some((code, msg, _)) = self.leaving.take() {
            self.leave(code, msg, now);
        }
    }

    /// Too many links: close one, saying why, so the other side neither
    /// suspects us nor dials straight back.
    fn shed(&mut self, keep: LinkId, now: Millis) {
        while self.link_count() > self.cfg.max_degree {
            let mut old: Vec<LinkId> = Vec::new();
            let mut young: Option<Millis> = None;
            for (&k, l) in &self.links {
                if k == keep || l.peer.is_none() {
                    continue;
                }
                if now >= l.opened + SHED_MIN_AGE {
                    old.push(k);
                } else {
                    young = Some(young.map_or(l.opened, |y| y.min(l.opened)));
                }
            }
            if old.is_empty() {
                // Only newcomers' links: look again when one has settled.
                if let Some(y) = young {
                    soonest(&mut self.shed_at, y + SHED_MIN_AGE);
                }
                return;
            }
            let link = old[self.rng.below(old.len() as u64) as usize];
            let text = "too many links; keeping others";
            self.refuse(link, Refusal::Full, text, now);
        }
    }

    /// A member we had lost is back: it said HELLO, or ALIVE. Whoever lost
    /// it (the other half of a partition) likely lost us too: we say ALIVE
    /// in turn, soon.
    fn readmit(&mut self, id: u64, now: Millis) {
        let Some(l) = self.lost.remove(&id) else {
            return;
        };
        let mut m = l.m;
        m.suspect_until = None;
        m.unreachable = false;
        m.dial_failures = 0;
        m.dial_after = 0;
        m.present = true;
        if behind(&m) {
            // Events of it held while it was lost: fill what is missing.
            start_gap(&mut m, now, self.cfg.gap_wait, &mut self.member_wake);
        }
        m.heard = now;
        let name = display_name(id, &m);
        self.members.insert(id, m);
        if self.state == State::Member {
            self.show(Show::MemberJoined(name));
        }
        self.back_one(now);
    }

    /// A lost member is back, or a neighbour says one is. Two together: a
    /// partition heals, and the far side likely lost us too; say ALIVE.
    /// One alone (a peer back from sleep) most likely did not.
    fn back_one(&mut self, now: Millis) {
        if together(&mut self.last_back, now) {
            self.want_alive(now);
        }
    }

    /// Says ALIVE after a random moment, unless it is due already; at most
    /// once per `ALIVE_QUIET`.
    fn want_alive(&mut self, now: Millis) {
        if self.alive_at.is_none() {
            let soon = now + self.rng.below(ALIVE_JITTER);
            let quiet = self.alive_last.map_or(0, |t| t + ALIVE_QUIET);
            self.alive_at = Some(soon.max(quiet));
        }
    }

    /// Says ALIVE, answering the SUSPECTs about us not answered yet.
    fn say_alive(&mut self, now: Millis) {
        self.answer_at = None;
        self.alive_at = None;
        if self.state != State::Member {
            self.to_answer.clear();
            return;
        }
        self.alive_last = Some(now);
        let all = std::mem::take(&mut self.to_answer);
        let mut chunks = all.chunks(wire::MAX_ANSWERS).peekable();
        if chunks.peek().is_none() {
            self.emit(Body::Alive { answers: vec![] }, now);
        }
        for chunk in chunks {
            let answers = chunk.to_vec();
            self.emit(Body::Alive { answers }, now);
        }
    }

    /// Queues a question to the network about lost member `id`, which
    /// someone says is alive: a SUSPECT, which it refutes if it is. Asked
    /// after a while, and not at all if it says ALIVE first or someone else
    /// asks first: in a healed partition many peers learn the same news at
    /// once. Returns whether a question was queued.
    fn queue_ask(&mut self, id: u64, now: Millis) -> bool {
        let Some(l) = self.lost.get_mut(&id) else {
            return false;
        };
        let stale = l.asked.is_none_or(|t| now >= t + ASK_AGAIN);
        if !stale || l.ask_at.is_some() {
            return false;
        }
        let at = now + ASK_DELAY + self.rng.below(ASK_JITTER);
        l.ask_at = Some((now, at));
        soonest(&mut self.ask_wake, at);
        true
    }

    /// Forgets lost member `id`, and the bytes of its events held, but
    /// not where its events had got to: should it ever come back, what we
    /// delivered of it must not be delivered again.
    fn drop_lost(&mut self, id: u64) {
        let Some(l) = self.lost.remove(&id) else {
            return;
        };
        self.held_bytes -= l.m.held.values().map(|(f, _)| f.len()).sum::<usize>();
        self.forgotten.insert(id, (l.m.next, l.m.name));
    }

    fn on_refuse(&mut self, link: LinkId, code: Refusal, text: &str, now: Millis) {
        if let State::Joining { link: j, label, .. } = &self.state {
            if *j == link {
                let msg = match code {
                    Refusal::NameTaken | Refusal::Version | Refusal::Myself => text.to_owned(),
                    _ => format!("{label} refused: {text}"),
                };
                return self.exit(1, msg);
            }
        }
        let addr = self.links[&link].addr;
        if code == Refusal::Myself {
            // We dialled ourselves under another address: forget it.
            let ids: Vec<u64> = self
                .members
                .iter()
                .filter(|(_, m)| m.addr == Some(addr))
                .map(|(&id, _)| id)
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
        from: u64,
        last: bool,
        entries: Vec<Entry>,
        now: Millis,
    ) {
        let welcome = matches!(self.state, State::Joining { link: j, .. } if j == link);
        let sender_ip = self.links[&link].addr.ip();
        if let Some(e) = entries.iter().find(|e| e.id == from) {
            self.links.get_mut(&link).expect("link").floor = Some(e.seq);
        }
        let mut fetch = Vec::new();
        let mut asks = 0;
        let mut dropped = 0;
        for e in entries {
            if e.id == self.id || self.gone.contains(e.id) || !wire::valid_name(&e.name) {
                continue;
            }
            self.recall(e.id, now);
            if self.lost.contains_key(&e.id) {
                // Alive, says a peer we reach: it will likely say ALIVE
                // itself soon; if not, ask.
                if asks < ASK_MAX && self.queue_ask(e.id, now) {
                    asks += 1;
                }
                self.back_one(now);
                continue;
            }
            if e.name == self.name && !self.name_clash(e.id, now) {
                continue;
            }
            let ip = e.ip.filter(|ip| !ip.is_unspecified());
            let ip = if e.id == from { Some(sender_ip) } else { ip };
            let addr = ip.map(|ip| SocketAddr::new(ip, e.port));
            let room = self.members.contains_key(&e.id) || self.make_room();
            match self.members.get_mut(&e.id) {
                Some(m) => {
                    if welcome {
                        m.next = e.seq.saturating_add(1);
                        m.present = true;
                        // Held events the welcomer has delivered already.
                        let keep = m.held.split_off(&m.next);
                        let old = std::mem::replace(&mut m.held, keep);
                        dropped += old.values().map(|(f, _)| f.len()).sum::<usize>();
                    } else if e.seq >= m.next && !behind(m) {
                        // The sender has delivered events of this member
                        // that we have not seen (we were cut off): ask.
                        let to = e.seq.min(m.next.saturating_add(FETCH_MAX - 1));
                        fetch.push((e.id, m.next, to));
                    }
                    if m.name.is_none() {
                        m.name = Some(e.name);
                    }
                    if m.addr.is_none() {
                        m.addr = addr;
                    }
                }
                None if room => {
                    // On the welcome, start after what the welcomer has
                    // delivered; later, a member new to us is newer than our
                    // welcome, so everything it said is news to us.
                    let next = if welcome { e.seq.saturating_add(1) } else { 1 };
                    if !welcome && e.seq >= 1 {
                        let to = e.seq.min(FETCH_MAX);
                        fetch.push((e.id, 1, to));
                    }
                    let mut m = Member::new(Some(e.name), addr, next);
                    m.present = welcome;
                    self.members.insert(e.id, m);
                }
                None => {}
            }
        }
        self.held_bytes -= dropped;
        for (origin, from, to) in fetch {
            let f = wire::frame(&Msg::Fetch { origin, from, to });
            self.send(link, f, now);
        }
        if welcome && last {
            let via = self.links[&link].addr;
            self.state = State::Member;
            self.joined_at = Some(now);
            self.show(Show::Joined {
                via,
                members: self.members.len() + 1,
            });
            self.announce(now);
            self.send_members(link, now);
        }
        if self.state == State::Member {
            self.maintain(now);
        }
    }

    fn on_event(&mut self, link: LinkId, ev: Event, frame: Vec<u8>, now: Millis) {
        // No honest sender gets to u64::MAX; nothing could follow it.
        if ev.origin == self.id || ev.seq == u64::MAX || self.gone.contains(ev.origin) {
            return;
        }
        self.recall(ev.origin, now);
        if let Some(l) = self.lost.get(&ev.origin) {
            match ev.body {
                // Said before we lost it, or a copy replayed: no news.
                _ if ev.seq < l.m.next => return,
                // It refutes: it is alive after all. Or it leaves, and its
                // last words must not be lost with it. What we held of it
                // drains, the rest is fetched like any gap, and then the
                // LEAVE, if it is one, takes it out for good.
                Body::Alive { .. } | Body::Leave => self.readmit(ev.origin, now),
                _ => return self.hold_lost(link, ev, frame, now),
            }
        }
        // A JOIN under a name no honest peer could have is malformed.
        if matches!(&ev.body, Body::Join { name, .. } if !wire::valid_name(name)) {
            return;
        }
        // While we hear a node directly, its new events come from it alone:
        // a copy from elsewhere that it did not send us is forged.
        let forged = self.links.iter().any(|(&k, l)| {
            k != link && l.peer == Some(ev.origin) && l.floor.is_some_and(|f| ev.seq > f)
        });
        if forged {
            return;
        }
        if !self.members.contains_key(&ev.origin) {
            if !self.make_room() {
                return;
            }
            self.members.insert(ev.origin, Member::new(None, None, 1));
        }
        let m = self.members.get_mut(&ev.origin).expect("member");
        if ev.seq < m.next {
            return;
        }
        m.heard = now;
        m.ask_at = None;
        if ev.body == (Body::Suspect { target: self.id }) {
            // Answer at once, even if the question must wait behind a gap:
            // the others will not wait for that gap.
            self.answer(ev.origin, ev.seq, now);
        }
        let m = self.members.get_mut(&ev.origin).expect("member");
        if let Body::Alive { answers } = &ev.body {
            // Proof of life even if it must wait behind a gap: the
            // suspicion it answers must not outlast the gap. Remember which
            // SUSPECT it answers: that one may reach us only later.
            m.suspect_until = None;
            for &a in answers {
                if m.answered.len() >= ANSWERED {
                    m.answered.pop_front();
                }
                m.answered.push_back(a);
            }
        }
        if ev.seq > m.next {
            if !behind(m) {
                start_gap(m, now, self.cfg.gap_wait, &mut self.member_wake);
            }
            hold(m, &mut self.held_bytes, ev.seq, frame, link);
            // What comes before it may have been held while its origin was
            // lost to us.
            if m.held.contains_key(&m.next) {
                self.drain_held(ev.origin, now);
            }
            return;
        }
        let origin = ev.origin;
        self.deliver(ev, frame, Some(link), now);
        self.drain_held(origin, now);
    }

    /// An event from a member we lost. In a healed partition its events
    /// come in order, and its ALIVE after them: hold them until then. If no
    /// ALIVE comes, ask whether it is alive.
    fn hold_lost(&mut self, link: LinkId, ev: Event, frame: Vec<u8>, now: Millis) {
        if ev.body == (Body::Suspect { target: self.id }) {
            // Whoever asks, we answer: others may have it back already,
            // and our silence would make them give up on us.
            self.answer(ev.origin, ev.seq, now);
        }
        let l = self.lost.get_mut(&ev.origin).expect("lost");
        if ev.seq >= l.m.next {
            hold(&mut l.m, &mut self.held_bytes, ev.seq, frame, link);
        }
        if self.state == State::Member {
            self.queue_ask(ev.origin, now);
        }
    }

    fn drain_held(&mut self, origin: u64, now: Millis) {
        loop {
            let Some(m) = self.members.get_mut(&origin) else {
                return;
            };
            let Some((frame, link)) = m.held.remove(&m.next) else {
                break;
            };
            self.held_bytes -= frame.len();
            match wire::decode(&frame[4..]) {
                Ok(Msg::Event(ev)) => self.deliver(ev, frame, Some(link), now),
                _ => unreachable!("held frames were decoded as events"),
            }
        }
        if let Some(m) = self.members.get_mut(&origin) {
            if behind(m) && m.next > m.fetched_to && m.fetched_to != 0 {
                // What we fetched is in, and more is missing (a long
                // backlog, fetched a window at a time): fetch the next
                // window at once.
                m.fetched_to = 0;
                start_gap(m, now, 0, &mut self.member_wake);
            } else if behind(m) {
                // A gap remains further on: it starts its own wait.
                start_gap(m, now, self.cfg.gap_wait, &mut self.member_wake);
            }
        }
    }

    fn on_fetch(&mut self, link: LinkId, origin: u64, from: u64, to: u64) {
        let delivered = if origin == self.id {
            self.seq >= from
        } else {
            self.members.get(&origin).is_some_and(|m| {
                m.next > from && from >= m.skipped_to && m.first_seen != 0 && from >= m.first_seen
            })
        };
        if delivered && !self.cache.frames.contains_key(&(origin, from)) {
            // We had them and let them go: say so, so the asker need not
            // wait for them. (Not having had them says nothing.)
            let oldest = self.cache.oldest(origin).unwrap_or(0);
            let f = wire::frame(&Msg::Lack { origin, oldest });
            self.out.push_back(Action::Send(link, f));
        }
        let to = to.min(from.saturating_add(FETCH_MAX - 1));
        let mut s = from;
        while s <= to {
            if let Some(f) = self.cache.frames.get(&(origin, s)) {
                let f = f.clone();
                self.out.push_back(Action::Send(link, f));
            }
            if s == u64::MAX {
                break;
            }
            s += 1;
        }
    }

    /// Asks neighbours for the events missing before the first held one
    /// (or the furthest seen), and skips them, with a warning, once a
    /// neighbour has said they are gone from its cache or after
    /// `gap_giveup`.
    fn fill_gap(&mut self, origin: u64, now: Millis) {
        let cfg_giveup = self.cfg.gap_giveup;
        let cfg_wait = self.cfg.gap_wait;
        let Some(m) = self.members.get_mut(&origin) else {
            return;
        };
        if !behind(m) {
            return;
        }
        let first = m.held.keys().next().copied();
        let lacking = m.lack.take().filter(|&l| l > m.next);
        let give_up = now >= m.gap_since + cfg_giveup;
        let skip_to = match (lacking, first) {
            (Some(l), Some(f)) => Some(l.min(f)),
            (Some(l), None) => Some(l),
            (None, Some(f)) if give_up || f <= m.next => Some(f),
            // Skip at most a window at a time: a sequence number far ahead
            // may be a lie, and must not silence its origin at one stroke.
            _ if give_up => Some(m.ahead.min(m.next.saturating_add(HOLD_WINDOW))),
            _ => None,
        };
        if let Some(to) = skip_to.filter(|&t| t > m.next) {
            let missed = to - m.next;
            m.next = to;
            m.skipped_to = to;
            if m.held.is_empty() && m.ahead <= to {
                // The event we skipped to was never held: wait for it
                // without a timer; it, or a later one, restarts the gap.
                m.ahead = 0;
            }
            let name = display_name(origin, m);
            self.show(Show::Warning(format!(
                "missed {missed} message{} from {name}",
                if missed == 1 { "" } else { "s" }
            )));
            return self.drain_held(origin, now);
        }
        if first.is_some_and(|f| f <= m.next) {
            return self.drain_held(origin, now);
        }
        if give_up && first.is_none() {
            // Nothing held and nothing more to skip to: stop looking; the
            // next event from it will tell where it is.
            m.ahead = 0;
            return;
        }
        m.fetch_at = now + cfg_wait;
        soonest(&mut self.member_wake, m.fetch_at);
        let to = first.map_or(m.ahead, |f| f - 1);
        let to = to.min(m.next.saturating_add(FETCH_MAX - 1));
        m.fetched_to = to;
        let f = wire::frame(&Msg::Fetch {
            origin,
            from: m.next,
            to,
        });
        let links: Vec<LinkId> = self.established().collect();
        for l in links {
            self.send(l, f.clone(), now);
        }
    }

    /// Delivers an event that is next in its origin's order, and relays it.
    fn deliver(&mut self, ev: Event, frame: Vec<u8>, from: Option<LinkId>, now: Millis) {
        let (origin, seq) = (ev.origin, ev.seq);
        let Some(m) = self.members.get_mut(&origin) else {
            return;
        };
        m.next = ev.seq.saturating_add(1);
        if m.first_seen == 0 {
            m.first_seen = ev.seq;
        }
        // Relay on every other link, except back to the origin itself.
        let links: Vec<LinkId> = self
            .links
            .iter()
            .filter(|&(&k, l)| l.peer.is_some_and(|p| p != origin) && Some(k) != from)
            .map(|(&k, _)| k)
            .collect();
        for l in links {
            self.send(l, frame.clone(), now);
        }
        self.cache.insert((origin, ev.seq), frame);

        let m = self.members.get_mut(&origin).expect("member");
        match ev.body {
            Body::Join { name, ip, port } => {
                if m.addr.is_none() {
                    m.addr = ip.map(|ip| SocketAddr::new(ip, port));
                }
                // A name no honest peer could have is not taken on.
                if m.name.is_none() && wire::valid_name(&name) {
                    m.name = Some(name);
                }
                m.suspect_until = None;
                m.present = true;
                let name = display_name(origin, m);
                if self.state == State::Member {
                    self.show(Show::MemberJoined(name.clone()));
                }
                if name == self.name {
                    self.name_clash(origin, now);
                }
                self.maintain(now);
            }
            Body::Leave => self.remove_member(origin, false, now),
            Body::Chat { room, text } => {
                let from = display_name(origin, m);
                self.show(Show::Chat {
                    from,
                    room,
                    text,
                    own: false,
                });
            }
            Body::Suspect { target } if target == self.id => self.answer(origin, seq, now),
            Body::Suspect { target } => {
                // Someone asks about a member we had lost: no need for us
                // to ask too.
                if let Some(l) = self.lost.get_mut(&target) {
                    l.asked = Some(now);
                }
                let wait = self.cfg.refute_wait;
                let t = self.members.get_mut(&target);
                if let Some(t) = t.filter(|t| !t.answered.contains(&(origin, seq))) {
                    let at = *t.suspect_until.get_or_insert(now + wait);
                    soonest(&mut self.member_wake, at);
                }
            }
            Body::Alive { .. } => m.suspect_until = None,
        }
    }

    /// Floods our JOIN: who we are and where we listen.
    fn announce(&mut self, now: Millis) {
        let body = Body::Join {
            name: self.name.clone(),
            ip: self.ip,
            port: self.port,
        };
        self.emit(body, now);
    }

    /// Originates an event: ours, next in our sequence, to every link.
    fn emit(&mut self, body: Body, now: Millis) {
        self.seq += 1;
        let ev = Event {
            origin: self.id,
            seq: self.seq,
            body,
        };
        let f = wire::frame(&Msg::Event(ev));
        let links: Vec<LinkId> = self.established().collect();
        for l in links {
            self.send(l, f.clone(), now);
        }
        self.cache.insert((self.id, self.seq), f);
    }

    fn send_members(&mut self, link: LinkId, now: Millis) {
        let mut all = vec![Entry {
            id: self.id,
            name: self.name.clone(),
            ip: self.ip,
            port: self.port,
            seq: self.seq,
        }];
        // Only members we have reason to believe in: ones we were told of
        // and never heard from are not passed on.
        for (&id, m) in self.members.iter().filter(|(_, m)| m.present) {
            if let Some(name) = &m.name {
                all.push(Entry {
                    id,
                    name: name.clone(),
                    ip: m.addr.map(|a| a.ip()),
                    port: m.addr.map_or(0, |a| a.port()),
                    seq: m.next - 1,
                });
            }
        }
        let n = all.len().div_ceil(wire::MEMBERS_PER_FRAME);
        for (i, chunk) in all.chunks(wire::MEMBERS_PER_FRAME).enumerate() {
            let msg = Msg::Members {
                last: i + 1 == n,
                entries: chunk.to_vec(),
            };
            self.send(link, wire::frame(&msg), now);
        }
    }

    /// We lost our last link to `peer`: it may be gone, or only the link.
    fn lost_link_to(&mut self, peer: u64, now: Millis) {
        if self.linked(peer) || self.state != State::Member {
            return;
        }
        let wait = self.cfg.refute_wait;
        let Some(m) = self.members.get_mut(&peer) else {
            return;
        };
        if m.suspect_until.is_none() {
            m.suspect_until = Some(now + wait);
            soonest(&mut self.member_wake, now + wait);
            m.unreachable = false;
            let addr = m.addr;
            self.emit(Body::Suspect { target: peer }, now);
            // Maybe only the link broke: try it once more at once.
            if let Some(addr) = addr {
                let link = self.new_link(addr, true, Some(peer), now);
                self.out.push_back(Action::Connect(link, addr));
            }
        }
    }

    fn remove_member(&mut self, id: u64, lost: bool, now: Millis) {
        let Some(mut m) = self.forget_member(id) else {
            return;
        };
        if self.state == State::Member && m.present {
            self.show(Show::MemberLeft {
                name: display_name(id, &m),
                lost,
            });
        }
        if lost {
            // Whatever gap it had is moot now; if it comes back, the gap
            // since `next` is found afresh.
            m.ahead = 0;
            m.lack = None;
            m.suspect_until = None;
            m.unreachable = false;
            self.insert_lost(id, m, now);
        } else {
            self.tombstone(id);
        }
        let links: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| l.peer == Some(id))
            .map(|(&k, _)| k)
            .collect();
        for l in links {
            self.links.remove(&l);
            self.out.push_back(Action::Close(l));
        }
    }

    /// Remembers `m` as lost, making room by forgetting the longest lost.
    fn insert_lost(&mut self, id: u64, m: Member, now: Millis) {
        if self.lost.len() >= self.cfg.lost_max {
            let oldest = self
                .lost
                .iter()
                .min_by_key(|(_, l)| l.since)
                .map(|(&k, _)| k);
            if let Some(k) = oldest {
                self.drop_lost(k);
            }
        }
        let l = Lost {
            m,
            since: now,
            probes: 0,
            probe_after: now + DIAL_BACKOFF,
            asked: None,
            ask_at: None,
        };
        self.lost.insert(id, l);
        soonest(&mut self.probe_at, now + DIAL_BACKOFF);
    }

    /// A member forgotten as lost is heard of again: lost once more, so
    /// that it is let back in like one, where it left off.
    fn recall(&mut self, id: u64, now: Millis) {
        if let Some((next, name)) = self.forgotten.remove(id) {
            self.insert_lost(id, Member::new(name, None, next), now);
        }
    }

    /// Drops a member from the table, and the bytes it held back.
    fn forget_member(&mut self, id: u64) -> Option<Member> {
        let mut m = self.members.remove(&id)?;
        self.held_bytes -= m.held.values().map(|(f, _)| f.len()).sum::<usize>();
        m.held.clear();
        Some(m)
    }

    fn tombstone(&mut self, id: u64) {
        if !self.gone.contains(id) {
            self.gone.insert(id, ());
        }
    }

    /// Queues an answer to the SUSPECT (origin, seq) about us: answers go
    /// out together a moment later, one ALIVE for many questions.
    fn answer(&mut self, origin: u64, seq: u64, now: Millis) {
        if self.to_answer.contains(&(origin, seq)) || self.answered.contains(&(origin, seq)) {
            return;
        }
        if self.answered.len() >= 4 * ANSWERED {
            self.answered.pop_front();
        }
        self.answered.push_back((origin, seq));
        if self.to_answer.len() < 4 * wire::MAX_ANSWERS {
            self.to_answer.push((origin, seq));
        }
        if self.answer_at.is_none() {
            self.answer_at = Some(now + ANSWER_WAIT);
        }
    }

    /// Another member has our name. Two peers that joined at once under one
    /// name settle it: the larger id gives way. A peer that has been in
    /// the network longer than such a race keeps its name. Returns whether
    /// the other may keep it too (we are leaving, or it is the race's
    /// winner).
    fn name_clash(&mut self, other: u64, now: Millis) -> bool {
        let racing = self.joined_at.is_some_and(|t| now < t + JOIN_RACE);
        if !racing || self.state == State::Done {
            return self.state == State::Done;
        }
        if self.id > other {
            let msg = format!("the name {} is taken in this network", self.name);
            self.leave(1, Some(msg), now);
        }
        true
    }

    /// Makes room for one more member if the table is full, by forgetting
    /// one we only heard of (never linked, never heard from). Returns
    /// whether there is room.
    fn make_room(&mut self) -> bool {
        if self.members.len() < MAX_MEMBERS {
            return true;
        }
        let linked: HashSet<u64> = self
            .links
            .values()
            .filter_map(|l| l.peer.or(l.target))
            .collect();
        let idle = self
            .members
            .iter()
            .find(|(id, m)| !m.present && m.held.is_empty() && m.next == 1 && !linked.contains(id))
            .map(|(&id, _)| id);
        match idle {
            Some(id) => {
                self.members.remove(&id);
                true
            }
            None => false,
        }
    }

    fn name_taken(&self, name: &str, id: u64) -> bool {
        name == self.name
            || self
                .members
                .iter()
                .any(|(&k, m)| k != id && m.name.as_deref() == Some(name))
    }

    fn leave(&mut self, code: i32, msg: Option<String>, now: Millis) {
        let dialling = self.links.values().any(|l| l.outbound && l.peer.is_none());
        if self.state == State::Member && self.link_count() == 0 && dialling {
            // Nobody to tell yet, but a link is on its way (our relay just
            // left): wait a moment for it, so that our leave is heard.
            if self.leaving.is_none() {
                self.leaving = Some((code, msg, now + LEAVE_WAIT));
            }
            return;
        }
        self.leaving = None;
        if self.state == State::Member {
            self.emit(Body::Leave, now);
        }
        self.state = State::Done;
        self.out.push_back(Action::Exit(code, msg));
    }

    fn exit(&mut self, code: i32, msg: String) {
        self.state = State::Done;
        self.out.push_back(Action::Exit(code, Some(msg)));
    }

    /// Two links to one peer: keep the one dialled by the smaller node id,
    /// a choice both ends make alike.
    fn dedup_links(&mut self, peer: u64) {
        let mut both: Vec<(u64, LinkId)> = self
            .links
            .iter()
            .filter(|(_, l)| l.peer == Some(peer))
            .map(|(&k, l)| (if l.outbound { self.id } else { peer }, k))
            .collect();
        if both.len() < 2 {
            return;
        }
        both.sort();
        for &(_, link) in &both[1..] {
            self.links.remove(&link);
            self.out.push_back(Action::Close(link));
        }
    }

    /// Dials members until we have `degree` links (or run out of members
    /// worth dialling).
    fn maintain(&mut self, now: Millis) {
        if self.state != State::Member {
            return;
        }
        let busy: HashSet<u64> = self
            .links
            .values()
            .filter_map(|l| l.peer.or(l.target))
            .collect();
        let mut have = busy.len();
        if have >= self.cfg.degree {
            return;
        }
        let mut ready = Vec::new();
        let mut later: Option<Millis> = None;
        for (&id, m) in &self.members {
            if busy.contains(&id) || m.addr.is_none() || m.suspect_until.is_some() {
                continue;
            }
            if m.dial_after <= now {
                ready.push(id);
            } else {
                later = Some(later.map_or(m.dial_after, |t| t.min(m.dial_after)));
            }
        }
        ready.sort_unstable();
        let mut dialling = self
            .links
            .values()
            .filter(|l| l.outbound && l.peer.is_none())
            .count();
        while have < self.cfg.degree && !ready.is_empty() && dialling < MAX_DIALS {
            dialling += 1;
            let i = self.rng.below(ready.len() as u64) as usize;
            let id = ready.swap_remove(i);
            let addr = self.members[&id].addr.expect("addr");
            let link = self.new_link(addr, true, Some(id), now);
            self.out.push_back(Action::Connect(link, addr));
            have += 1;
        }
        if have < self.cfg.degree {
            self.maintain_at = later;
        }
    }

    fn refuse(&mut self, link: LinkId, code: Refusal, text: &str, now: Millis) {
        let f = wire::frame(&Msg::Refuse {
            code,
            text: text.to_owned(),
        });
        self.send(link, f, now);
        self.links.remove(&link);
        self.out.push_back(Action::Close(link));
    }

    /// Closes a link we gave up on, and deals with what that means.
    fn drop_link(&mut self, link: LinkId, why: &str, now: Millis) {
        if self.links.contains_key(&link) {
            self.out.push_back(Action::Close(link));
            self.link_down(link, why, now);
        }
    }

    fn send(&mut self, link: LinkId, frame: Vec<u8>, now: Millis) {
        if let Some(l) = self.links.get_mut(&link) {
            l.last_tx = now;
            self.out.push_back(Action::Send(link, frame));
        }
    }

    fn show(&mut self, s: Show) {
        self.out.push_back(Action::Show(s));
    }

    fn established(&self) -> impl Iterator<Item = LinkId> + '_ {
        self.links
            .iter()
            .filter(|(_, l)| l.peer.is_some())
            .map(|(&k, _)| k)
    }

    fn linked(&self, peer: u64) -> bool {
        self.links.values().any(|l| l.peer == Some(peer))
    }
}

/// How long to wait before dialling again after `failures` failures.
fn backoff(failures: u32) -> Millis {
    DIAL_BACKOFF
        .saturating_mul(1 << failures.min(16))
        .min(DIAL_BACKOFF_MAX)
}

/// Whether we know of events of `m` that we have not delivered.
fn behind(m: &Member) -> bool {
    !m.held.is_empty() || m.ahead >= m.next
}

/// Holds back `m`'s event `seq` (ahead of `m.next`), if it is within the
/// window and there is room: `held_bytes` counts all members' held bytes.
fn hold(m: &mut Member, held_bytes: &mut usize, seq: u64, frame: Vec<u8>, link: LinkId) {
    m.ahead = m.ahead.max(seq);
    let room = m.held.len() < MAX_HELD && *held_bytes + frame.len() <= HELD_BYTES;
    if seq - m.next < HOLD_WINDOW && room && !m.held.contains_key(&seq) {
        *held_bytes += frame.len();
        m.held.insert(seq, (frame, link));
    }
}

/// A gap in `m`'s events starts now: fetch after `wait`, and give up
/// `gap_giveup` from now.
fn start_gap(m: &mut Member, now: Millis, wait: Millis, wake: &mut Option<Millis>) {
    m.gap_since = now;
    m.fetch_at = now + wait;
    soonest(wake, m.fetch_at);
}

/// Notes that something happened at `now`, last at `*last`; returns whether
/// the two were within `TOGETHER` of each other.
fn together(last: &mut Option<Millis>, now: Millis) -> bool {
    let near = last.is_some_and(|t| now < t + TOGETHER);
    *last = Some(now);
    near
}

/// Lowers the deadline `w` to `t`.
fn soonest(w: &mut Option<Millis>, t: Millis) {
    *w = Some(w.map_or(t, |w| w.min(t)));
}

fn display_name(id: u64, m: &Member) -> String {
    match &m.name {
        Some(n) => n.clone(),
        None => format!("#{id:016x}"),
    }
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut n = max;
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        s.truncate(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remember_is_bounded_through_removals() {
        let mut r: Remember<u64> = Remember::new(4);
        for round in 0..1000u64 {
            let id = round % 7;
            r.insert(id, round);
            if round % 3 == 0 {
                r.remove(id);
            }
            assert!(r.by_id.len() <= 4);
            assert_eq!(r.by_id.len(), r.by_age.len());
        }
        // The newest stay; the oldest go first.
        for id in 10..16 {
            r.insert(id, id);
        }
        assert!((12..16).all(|id| r.get(id) == Some(&id)));
        assert!(!r.contains(10) && !r.contains(11));
    }
}
