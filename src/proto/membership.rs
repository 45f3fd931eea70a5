//! Membership: who is in the network, and who is still alive.
//!
//! Each member has a name, an address to dial, and a [`Status`]. How the
//! network finds out who is gone:
//!
//! - Suspicion: a peer that loses its last link to a member floods SUSPECT;
//!   the member refutes with ALIVE if it is alive elsewhere, and is declared
//!   lost everywhere if it does not within `refute_wait`. A peer that
//!   welcomes a newcomer asks again about those it suspects, so that
//!   the newcomer, listed them as present, loses them with everyone.
//! - Census: whoever declares two members lost together (a partition,
//!   perhaps) says ALIVE too, and asks about members it then hears nothing
//!   from. In a partition, members with no link to our side are found that
//!   way: no one here had a link to lose. One crash costs no census.
//! - Alone: a peer left with no link at all for [`ISOLATED_LOSE`] takes
//!   every member for lost, since no path of its own reaches any. Two
//!   members that could talk only through others that left are told so,
//!   each on its side.
//! - Coming back: lost members are remembered and their addresses probed,
//!   one about every second ([`PROBE_EVERY`]) for ten minutes, so that a
//!   network coming back is found within about a second; each one that
//!   comes back has the next probed at once.
//!   A probe that gets through (a partition heals, a laptop wakes) lets the
//!   member back in on its HELLO; whoever lets two lost members back in
//!   together says ALIVE, which lets it back in wherever it was lost, and
//!   so on across both halves: a few events per peer, not one per pair.
//! - Departed members are tombstoned, so stale member lists cannot revive
//!   them; lost members forgotten (too many, or lost a day) are remembered
//!   by name and by where their events had got to. One forgotten is
//!   recalled (lost again, where it left off) when a neighbour announces
//!   its events (IHAVE; see `Node::on_ihave`), as after a heal the tree
//!   may bring a member's events only as announcements.
//!
//! A name belongs to one member. A member that claims a name another
//! (or we) has is not shown under it: it keeps its claim, and gets the
//! name if the holder leaves or is lost. Each member not heard from
//! directly counts against the neighbour that told us of it, and one
//! neighbour may tell us of at most [`INTRO_MAX`] such members: a member
//! that invents thousands cannot fill the table; when the table is full,
//! room is made at the expense of whoever introduced the most.
//!
//! Names are compared as [`crate::name::skeleton`]s: `bob`, `Bob` and
//! `bоb` (Cyrillic о) are one name. A rename (`:nick`) settles
//! [`RENAME_SETTLE`] after it is delivered, on every peer alike: of the
//! renames to one name pending then, the smallest node id's wins, and
//! only if the name is free; so two members renaming to one name at the
//! same moment are never both shown under it, and none of them is shown
//! under it first and then not.
//!
//! Decisions that need the rest of the node (flood an event, dial, a
//! suspicion ran out, a lost member forgotten) are queued as [`Out`] for
//! the node to route.

use super::link::Links;
use super::wire::{Body, Ident, MAX_ANSWERS};
use super::{
    DIAL_BACKOFF, EventId, Millis, NodeId, PROBE_EVERY, Remember, Rng, Timers, backoff, soonest,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;

/// Members a peer keeps track of at most (not counting lost ones).
pub const MAX_MEMBERS: usize = 4096;
/// Members one neighbour may introduce (tell us of, not heard directly).
pub const INTRO_MAX: usize = 1024;
/// Departed node ids remembered, so stale member lists cannot revive them.
const TOMBSTONES: usize = 4096;
/// Lost members forgotten, remembered by where their events had got to.
const FORGOTTEN: usize = 4096;
/// Members lost (not left) are remembered, to let them back in and to
/// probe their addresses: for a day. For ten minutes one lost member is
/// probed about every second, the one probed longest ago first, so that
/// a network coming back is found within about a second (a probe is one
/// SYN, and the dial budget bounds them); after that each is probed
/// about every five minutes.
const LOST_FORGET: Millis = 24 * 3_600_000;
const LOST_SLOW_AFTER: Millis = 600_000;
const LOST_SLOW: Millis = 300_000;
/// The first probe of a member just lost, after a random moment up to
/// `PROBE_EVERY` more: every peer of a partition's half loses its members
/// at the same moment, and their probes, a second apart from then on,
/// are kept apart.
const PROBE_FIRST: Millis = DIAL_BACKOFF;
/// A lost member whose address is given up (it refused us, again and
/// again: see the mesh) is looked at again after this.
const PROBE_DEAD: Millis = 60_000;
/// With no link left at all, we wait this long for one (our dials take up
/// to 5 s to fail), then take every member for lost: none can be reached
/// by any path of ours. A silent split is no split: both sides are told.
pub const ISOLATED_LOSE: Millis = 6_000;
const ASK_AGAIN: Millis = 30_000;
/// Answered suspicions remembered per member.
const ANSWERED: usize = 16;
/// SUSPECTs awaiting an answer remembered per suspected member.
const ASKS: usize = 8;
/// Lost members asked about per member list received.
pub const ASK_MAX: usize = 64;
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
/// (nor for `ALIVE_QUIET` before) is asked about.
const CENSUS_WAIT: Millis = 3_000;
/// Two members lost, or back, within this of each other are taken for a
/// partition, or its healing.
const TOGETHER: Millis = 10_000;
/// SUSPECTs about us arriving within this are answered by one ALIVE.
const ANSWER_WAIT: Millis = 200;
/// A rename is settled this long after it is delivered (see the module
/// docs): renames to one name within it are a race, settled by node id.
pub const RENAME_SETTLE: Millis = 1_500;

/// Liveness settings, in milliseconds and counts.
#[derive(Debug, Clone)]
pub struct Config {
    /// A suspected member has this long to refute.
    pub refute_wait: Millis,
    /// Lost members remembered and probed, at most; beyond it the longest
    /// lost is forgotten (but for where its events had got to).
    pub lost_max: usize,
}

/// Where a member stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Told of in a member list, or heard from, but not announced: not
    /// shown to the user, never announced as leaving.
    Heard,
    /// Shown to the user as present: its JOIN was delivered, or it was
    /// there when we joined.
    Present,
    /// Someone lost its last link to it: lost at `until` unless it
    /// refutes. `unreachable`: our own dial to it failed since. `asks`:
    /// the SUSPECTs about it it has not answered yet.
    Suspected {
        until: Millis,
        present: bool,
        unreachable: bool,
        asks: Vec<EventId>,
    },
    /// Lost: remembered and probed, in case it comes back.
    Lost(Lost),
}

/// What we know of a lost member's absence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    since: Millis,
    probes: u32,
    probe_after: Millis,
    /// When we last asked the network about it (a SUSPECT), because a
    /// peer listed it as alive, or heard someone else ask.
    asked: Option<Millis>,
    /// A question to ask: when it was decided, and when to ask it.
    ask_at: Option<(Millis, Millis)>,
}

/// One member.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its name, unless someone else had it when it claimed it.
    pub name: Option<String>,
    /// A name it claims that another member has.
    pub claim: Option<String>,
    /// Its key and nonce, once known (its id is bound to them).
    pub ident: Option<Ident>,
    /// The neighbour that told us of it, until we hear it directly.
    via: Option<NodeId>,
    /// Order of introduction, to let go of the newest first.
    stamp: u64,
    /// Where it listens.
    pub addr: Option<SocketAddr>,
    pub status: Status,
    /// When we last got a new event of it (0: never).
    heard: Millis,
    /// SUSPECT events it has answered with ALIVE.
    answered: VecDeque<EventId>,
    /// Silent through a census: when to ask the network about it.
    ask_at: Option<Millis>,
}

impl Member {
    fn new(addr: Option<SocketAddr>, status: Status) -> Member {
        Member {
            name: None,
            claim: None,
            ident: None,
            via: None,
            stamp: 0,
            addr,
            status,
            heard: 0,
            answered: VecDeque::new(),
            ask_at: None,
        }
    }

    /// Whether it is shown to the user as present.
    pub fn present(&self) -> bool {
        matches!(
            self.status,
            Status::Present | Status::Suspected { present: true, .. }
        )
    }

    pub fn is_lost(&self) -> bool {
        matches!(self.status, Status::Lost(_))
    }

    pub fn suspected(&self) -> bool {
        matches!(self.status, Status::Suspected { .. })
    }

    fn suspect_until(&self) -> Option<Millis> {
        match self.status {
            Status::Suspected { until, .. } => Some(until),
            _ => None,
        }
    }

    /// Suspected until `until`, unless it is already.
    fn suspect(&mut self, until: Millis) {
        if let Status::Heard | Status::Present = self.status {
            let present = self.present();
            self.status = Status::Suspected {
                until,
                present,
                unreachable: false,
                asks: Vec::new(),
            };
        }
    }

    /// The SUSPECT `ask` is about it: unless it was answered already, it
    /// must be answered before the suspicion is cleared.
    fn asked(&mut self, ask: EventId) {
        if self.answered.contains(&ask) {
            return;
        }
        if let Status::Suspected { asks, .. } = &mut self.status
            && !asks.contains(&ask)
        {
            if asks.len() >= ASKS {
                asks.remove(0);
            }
            asks.push(ask);
        }
    }

    /// It said ALIVE, answering `answers`: no longer suspected once every
    /// SUSPECT about it is answered. An ALIVE said before a SUSPECT was
    /// (it may come after it, by a slower path) answers none: proof of
    /// life before the question, not after; it would clear the
    /// suspicion of a member that died just after saying it.
    fn refute(&mut self, answers: &[EventId]) {
        if let Status::Suspected { asks, .. } = &mut self.status {
            asks.retain(|a| !answers.contains(a));
            if asks.is_empty() {
                self.clear();
            }
        }
    }

    /// Not suspected (any more).
    fn clear(&mut self) {
        if let Status::Suspected { present, .. } = self.status {
            self.status = if present {
                Status::Present
            } else {
                Status::Heard
            };
        }
    }

    fn show(&mut self) {
        match &mut self.status {
            Status::Heard => self.status = Status::Present,
            Status::Suspected { present, .. } => *present = true,
            _ => {}
        }
    }

    fn lost(&mut self) -> Option<&mut Lost> {
        match &mut self.status {
            Status::Lost(l) => Some(l),
            _ => None,
        }
    }

    /// Its name, or its id where it has not told us one.
    pub fn display(&self, id: NodeId) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => id.to_string(),
        }
    }
}

/// What membership asks of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Flood this event of ours.
    Publish(Body),
    /// Dial this member: a probe, or one more try after losing our link.
    Dial(NodeId, SocketAddr),
    /// Its suspicion ran out: it is lost (shown as present before, or
    /// not). Hold its events, close links to it.
    Lost(NodeId, bool),
    /// A lost member is forgotten: drop what is held of it, and give
    /// [`Membership::forgotten`] where its events had got to.
    Dropped(NodeId, Option<String>, Option<Ident>),
    /// A member gets the name it claimed: its holder is gone, or gave it
    /// up; with the name it was shown by before, if it had one (then it
    /// is a rename).
    Named(NodeId, Option<String>),
    /// A rename settled: member `id` (we, if `own`) asked for `name`;
    /// `won`: no member of a smaller id asked for it at the same moment
    /// (the node still checks the name is free, and its key).
    Rename {
        id: NodeId,
        name: String,
        own: bool,
        won: bool,
    },
}

/// A rename delivered, not settled yet.
#[derive(Debug, Clone)]
struct Pending {
    id: NodeId,
    name: String,
    /// Its skeleton, to find races.
    skeleton: String,
    own: bool,
    due: Millis,
}

#[derive(Clone, Copy)]
enum T {
    /// A member timer (suspicion, census ask) may be due (a lower bound).
    Members,
    /// Probe a lost member's address.
    Probe,
    /// A question about a lost member may be due (a lower bound).
    Ask,
    /// Answer the SUSPECTs about us.
    Answer,
    /// Say ALIVE: lost members came back, or a census.
    Alive,
    /// Count who spoke since the census began.
    Census,
    /// Settle the first pending rename.
    Rename,
    /// We have had no link for `ISOLATED_LOSE`.
    Isolated,
}
const TIMERS: usize = 8;

/// One peer's view of the network's members. See the module docs.
#[derive(Debug)]
pub struct Membership {
    cfg: Config,
    /// Our own name: taken, as far as others are concerned.
    name: String,
    /// Members each neighbour introduced (not heard directly), and a
    /// counter to stamp introductions with.
    intro: HashMap<NodeId, usize>,
    stamps: u64,
    /// Whether we are a member (not joining, not gone): only a member
    /// floods events.
    active: bool,
    members: BTreeMap<NodeId, Member>,
    /// Members by their names, and by the names they claim (lost ones
    /// too): a name is looked up on every JOIN, so not by a scan.
    names: Index,
    claims: Index,
    /// Members in `members` that are lost.
    lost: usize,
    /// Members that left: their ids are never let in again.
    gone: Remember<()>,
    /// Lost members forgotten: where their events had got to (the next
    /// to deliver), their names and identities.
    forgotten: Remember<(u64, Option<String>, Option<Ident>)>,
    timers: Timers<TIMERS>,
    /// SUSPECTs about us not answered yet, and those answered lately.
    to_answer: Vec<EventId>,
    answered: VecDeque<EventId>,
    /// When we last said ALIVE at all.
    alive_last: Option<Millis>,
    /// A census under way: when it started.
    census: Option<Millis>,
    /// When we last lost a member, and when one last came back.
    last_loss: Option<Millis>,
    last_back: Option<Millis>,
    /// Renames delivered and not settled yet, in order of delivery: at
    /// most one per member (and one of ours).
    renames: VecDeque<Pending>,
    rng: Rng,
    out: VecDeque<Out>,
}

impl Membership {
    pub fn new(cfg: Config, name: &str, seed: u64) -> Membership {
        Membership {
            cfg,
            name: name.to_owned(),
            intro: HashMap::new(),
            stamps: 0,
            active: true,
            members: BTreeMap::new(),
            names: Index::default(),
            claims: Index::default(),
            lost: 0,
            gone: Remember::new(TOMBSTONES),
            forgotten: Remember::new(FORGOTTEN),
            timers: Timers::default(),
            to_answer: Vec::new(),
            answered: VecDeque::new(),
            alive_last: None,
            census: None,
            last_loss: None,
            last_back: None,
            renames: VecDeque::new(),
            rng: Rng::new(seed),
            out: VecDeque::new(),
        }
    }

    /// Whether we are a member of the network (joined, not gone).
    pub fn set_active(&mut self, active: bool) {
        self.active = active;
    }

    /// What the node has to do, in order.
    pub fn next_out(&mut self) -> Option<Out> {
        self.out.pop_front()
    }

    pub fn get(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id)
    }

    /// Whether `id` is a member, lost or not.
    pub fn knows(&self, id: NodeId) -> bool {
        self.members.contains_key(&id)
    }

    /// Whether `id` is a member that is not lost.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.members.get(&id).is_some_and(|m| !m.is_lost())
    }

    pub fn is_lost(&self, id: NodeId) -> bool {
        self.members.get(&id).is_some_and(Member::is_lost)
    }

    /// The members we lost.
    pub fn lost_ids(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|(_, m)| m.is_lost())
            .map(|(&id, _)| id)
            .collect()
    }

    /// Whether `id` left: never let in again.
    pub fn is_gone(&self, id: NodeId) -> bool {
        self.gone.contains(id)
    }

    /// Members not lost.
    pub fn count(&self) -> usize {
        self.members.len() - self.lost
    }

    /// Members not lost, with their ids.
    pub fn active(&self) -> impl Iterator<Item = (NodeId, &Member)> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| !m.is_lost())
            .map(|(&id, m)| (id, m))
    }

    /// Members shown as present, with their ids.
    pub fn present(&self) -> impl Iterator<Item = (NodeId, &Member)> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| m.present())
            .map(|(&id, m)| (id, m))
    }

    /// Members worth dialling: not lost, not suspected, with an address.
    pub fn dialable(&self) -> impl Iterator<Item = (NodeId, SocketAddr)> + '_ {
        self.active()
            .filter(|(_, m)| !m.suspected())
            .filter_map(|(id, m)| m.addr.map(|a| (id, a)))
    }

    /// The name to show for `id`.
    pub fn display(&self, id: NodeId) -> String {
        self.members
            .get(&id)
            .map_or_else(|| id.to_string(), |m| m.display(id))
    }

    /// Whether `name` is ours, or taken by a member (not lost) other than
    /// `id`.
    pub fn name_taken(&self, name: &str, id: NodeId) -> bool {
        same_name(name, &self.name) || self.holder(name, id).is_some()
    }

    /// The member (not lost) other than `id` that has `name`.
    fn holder(&self, name: &str, id: NodeId) -> Option<NodeId> {
        self.names.ids(name).find(|&k| k != id && !self.is_lost(k))
    }

    /// Sets member `id`'s name, keeping the index; returns the old one.
    fn set_name(&mut self, id: NodeId, name: Option<String>) -> Option<String> {
        let m = self.members.get_mut(&id)?;
        let old = std::mem::replace(&mut m.name, name);
        self.names.update(id, old.as_deref(), m.name.as_deref());
        old
    }

    /// Sets the name member `id` claims, keeping the index; returns the
    /// old claim.
    fn set_claim(&mut self, id: NodeId, claim: Option<String>) -> Option<String> {
        let m = self.members.get_mut(&id)?;
        let old = std::mem::replace(&mut m.claim, claim);
        self.claims.update(id, old.as_deref(), m.claim.as_deref());
        old
    }

    /// Gives member `id` the name `name`, if it is free; else notes its
    /// claim. Returns whether it has the name now.
    pub fn name(&mut self, id: NodeId, name: &str) -> bool {
        if !self.members.contains_key(&id) {
            return false;
        }
        if self.name_taken(name, id) {
            self.set_claim(id, Some(name.to_owned()));
            return false;
        }
        self.set_name(id, Some(name.to_owned()));
        self.set_claim(id, None);
        true
    }

    /// `name` may be free now (its holder left, or was lost): the claimant
    /// with the smallest id gets it, a choice every peer makes alike.
    fn free(&mut self, name: Option<String>) {
        let Some(name) = name else {
            return;
        };
        if self.name_taken(&name, NodeId(u64::MAX)) {
            return;
        }
        let next = self.claims.ids(&name).find(|&k| !self.is_lost(k));
        if let Some(id) = next {
            let claim = self.set_claim(id, None);
            let old = self.set_name(id, claim);
            self.out.push_back(Out::Named(id, old));
        }
    }

    /// Member `id` (we, if `own`) asked to go by `name` (its RENAME was
    /// delivered, or we said it): settled [`RENAME_SETTLE`] from now.
    pub fn rename(&mut self, id: NodeId, name: &str, own: bool, now: Millis) {
        // A member's newer rename replaces one still pending.
        self.renames.retain(|p| p.id != id);
        let due = now + RENAME_SETTLE;
        self.renames.push_back(Pending {
            id,
            name: name.to_owned(),
            skeleton: crate::name::skeleton(name),
            own,
            due,
        });
        self.timers.soonest(T::Rename as usize, due);
    }

    /// The name our own pending rename asks for, if one is pending.
    pub fn own_rename(&self) -> Option<&str> {
        self.renames.iter().find(|p| p.own).map(|p| p.name.as_str())
    }

    /// Settles the renames that are due, in order ([`Out::Rename`]): one
    /// with a rival of a smaller id pending loses; one without wins, and
    /// its rivals lose at once.
    fn settle_renames(&mut self, now: Millis) {
        while self.renames.front().is_some_and(|p| now >= p.due) {
            let p = self.renames.pop_front().expect("a pending rename");
            let rival = |q: &Pending| q.skeleton == p.skeleton;
            let won = !self.renames.iter().any(|q| rival(q) && q.id < p.id);
            let mut settled = vec![(p.clone(), won)];
            if won {
                settled.extend(
                    self.renames
                        .iter()
                        .filter(|q| rival(q))
                        .map(|q| (q.clone(), false)),
                );
                self.renames.retain(|q| !rival(q));
            }
            for (q, won) in settled {
                self.out.push_back(Out::Rename {
                    id: q.id,
                    name: q.name,
                    own: q.own,
                    won,
                });
            }
        }
        self.timers
            .set(T::Rename as usize, self.renames.front().map(|p| p.due));
    }

    /// Member `id` goes by `name` now, if `name` is free (ours and other
    /// members' compared as skeletons; its own old name does not count).
    /// Its old name goes to whoever claims it. Returns the name it was
    /// shown by before (its id, if none).
    pub fn renamed(&mut self, id: NodeId, name: &str) -> Option<String> {
        self.members.get(&id).filter(|m| !m.is_lost())?;
        if self.name_taken(name, id) {
            return None;
        }
        let shown = self.display(id);
        let old = self.set_name(id, Some(name.to_owned()));
        self.set_claim(id, None);
        if !old.as_deref().is_some_and(|o| same_name(o, name)) {
            self.free(old);
        }
        Some(shown)
    }

    /// Member `id` renamed itself to `name` where we could not hear it (a
    /// partition), and another member has that name here: `id` claims
    /// it, under the name it has, and gets it if the holder gives it up
    /// (see [`Out::Named`]).
    pub fn claim_rename(&mut self, id: NodeId, name: &str) {
        if self.members.contains_key(&id) {
            self.set_claim(id, Some(name.to_owned()));
        }
    }

    /// Two members joined under one name at once: `winner` (the smaller
    /// id) takes it from `loser`, which only claims it from now on (it
    /// gives way and leaves, as it finds out itself).
    pub fn take_name(&mut self, winner: NodeId, loser: NodeId) {
        if !self.members.contains_key(&winner) {
            return;
        }
        let Some(name) = self.set_name(loser, None) else {
            return;
        };
        self.set_claim(loser, Some(name.clone()));
        self.set_claim(winner, None);
        self.set_name(winner, Some(name));
    }

    /// The member (not lost) that has `name`, not merely claims it.
    pub fn holder_of(&self, name: &str) -> Option<NodeId> {
        self.holder(name, NodeId(u64::MAX))
    }

    /// We go by `name` now, if no member has it. Returns the old name.
    pub fn rename_own(&mut self, name: &str) -> Option<String> {
        if self.holder(name, NodeId(u64::MAX)).is_some() {
            return None;
        }
        let old = std::mem::replace(&mut self.name, name.to_owned());
        if !same_name(&old, name) {
            self.free(Some(old.clone()));
        }
        Some(old)
    }

    /// Members `via` introduced that we have not heard directly.
    pub fn introduced(&self, via: NodeId) -> usize {
        self.intro.get(&via).copied().unwrap_or(0)
    }

    /// Member `id` is heard directly: it counts against nobody.
    fn vouch(&mut self, id: NodeId) {
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        if let Some(v) = m.via.take()
            && let Some(n) = self.intro.get_mut(&v)
        {
            *n -= 1;
            if *n == 0 {
                self.intro.remove(&v);
            }
        }
    }

    /// A member to forget to make room for one introduced by `via` (or
    /// heard directly: `None`): the newest introduced by the neighbour
    /// that introduced the most, not `busy`, unless that is `via` itself.
    pub fn evictable(&self, busy: &HashSet<NodeId>, via: Option<NodeId>) -> Option<NodeId> {
        let (&top, _) = self.intro.iter().max_by_key(|&(&v, &n)| (n, v))?;
        if via == Some(top) {
            return None;
        }
        self.active()
            .filter(|(id, m)| m.via == Some(top) && !busy.contains(id))
            .max_by_key(|(_, m)| m.stamp)
            .map(|(id, _)| id)
    }

    /// A member only heard of (not announced, not linked: see `busy`),
    /// whose events we never touched (`untouched`): the first one to
    /// forget when the table is full.
    pub fn idle(
        &self,
        busy: &HashSet<NodeId>,
        untouched: impl Fn(NodeId) -> bool,
    ) -> Option<NodeId> {
        self.active()
            .find(|&(id, m)| !m.present() && untouched(id) && !busy.contains(&id))
            .map(|(id, _)| id)
    }

    /// A new member, not yet shown unless `present`, introduced by `via`
    /// (the neighbour that told us of it; `None`: heard directly, or in
    /// the member list we joined with). Its name, if it has one, is given
    /// as [`Membership::name`] gives it.
    pub fn insert(
        &mut self,
        id: NodeId,
        name: Option<&str>,
        addr: Option<SocketAddr>,
        present: bool,
        via: Option<NodeId>,
    ) {
        self.insert_as(id, name, None, addr, present, via);
    }

    /// [`Membership::insert`], with its identity.
    pub fn insert_as(
        &mut self,
        id: NodeId,
        name: Option<&str>,
        ident: Option<Ident>,
        addr: Option<SocketAddr>,
        present: bool,
        via: Option<NodeId>,
    ) {
        let status = if present {
            Status::Present
        } else {
            Status::Heard
        };
        self.forget(id);
        self.stamps += 1;
        let mut m = Member::new(addr, status);
        m.stamp = self.stamps;
        m.via = via;
        m.ident = ident;
        if let Some(v) = via {
            *self.intro.entry(v).or_default() += 1;
        }
        self.members.insert(id, m);
        if let Some(n) = name {
            self.name(id, n);
        }
    }

    /// Fills in what we did not know of a member: its address. Returns
    /// whether it still needs a name.
    pub fn fill_in(&mut self, id: NodeId, addr: Option<SocketAddr>) -> bool {
        let Some(m) = self.members.get_mut(&id) else {
            return false;
        };
        if m.addr.is_none() {
            m.addr = addr;
        }
        m.name.is_none() && m.claim.is_none()
    }

    /// We joined through a peer that lists `id` as present.
    pub fn set_present(&mut self, id: NodeId) {
        if let Some(m) = self.members.get_mut(&id) {
            m.show();
        }
    }

    /// `id` said HELLO to us, listening at `addr`, proving its identity:
    /// it is alive, and heard directly. (Its name is given apart.)
    pub fn hello(&mut self, id: NodeId, ident: Ident, addr: SocketAddr) {
        self.vouch(id);
        if let Some(m) = self.members.get_mut(&id) {
            m.addr = Some(addr);
            m.ident = Some(ident);
            m.clear();
        }
    }

    /// `id`'s JOIN was delivered: it is present, at `addr` (unless we
    /// knew one). Returns whether it still needs a name (neither one nor a
    /// claim).
    pub fn joined(&mut self, id: NodeId, addr: Option<SocketAddr>) -> bool {
        let Some(m) = self.members.get_mut(&id) else {
            return false;
        };
        if m.addr.is_none() {
            m.addr = addr;
        }
        m.clear();
        m.show();
        m.name.is_none() && m.claim.is_none()
    }

    /// Notes that `id` claims `name` without giving it: its name is
    /// known here with another key.
    pub fn claim(&mut self, id: NodeId, name: &str) {
        if self.members.get(&id).is_some_and(|m| m.name.is_none()) {
            self.set_claim(id, Some(name.to_owned()));
        }
    }

    /// Forgets member `id` (never shown, or refused): nothing remembered.
    /// Its name, if it had one, goes to whoever claims it.
    pub fn forget(&mut self, id: NodeId) -> Option<Member> {
        self.vouch(id);
        self.set_claim(id, None);
        let name = self.set_name(id, None);
        let mut m = self.members.remove(&id)?;
        m.name = name;
        if m.is_lost() {
            self.lost -= 1;
        }
        self.free(m.name.clone());
        m.via = None;
        Some(m)
    }

    /// `id` left: forgotten and tombstoned.
    pub fn leave(&mut self, id: NodeId) -> Option<Member> {
        let m = self.forget(id);
        if !self.gone.contains(id) {
            self.gone.insert(id, ());
        }
        m
    }

    /// The peer we join through says `id` left: never let in.
    pub fn tombstone(&mut self, id: NodeId) {
        if !self.members.contains_key(&id) && !self.gone.contains(id) {
            self.gone.insert(id, ());
        }
    }

    /// The members that left, as we remember them, longest gone first.
    pub fn gone(&self) -> Vec<NodeId> {
        self.gone.ids().collect()
    }

    /// A new event of `id` arrived: it is alive, and answers any census.
    pub fn heard(&mut self, id: NodeId, now: Millis) {
        if let Some(m) = self.members.get_mut(&id) {
            m.heard = now;
            m.ask_at = None;
        }
    }

    /// `id` said ALIVE, answering `answers` (SUSPECTs that may reach us
    /// only later): not suspected, whatever others think.
    pub fn refuted(&mut self, id: NodeId, answers: &[EventId]) {
        if let Some(m) = self.members.get_mut(&id) {
            m.refute(answers);
            for &a in answers {
                if m.answered.len() >= ANSWERED {
                    m.answered.pop_front();
                }
                m.answered.push_back(a);
            }
        }
    }

    /// `id`'s ALIVE, answering `answers`, was delivered.
    pub fn alive(&mut self, id: NodeId, answers: &[EventId]) {
        if let Some(m) = self.members.get_mut(&id) {
            m.refute(answers);
        }
    }

    /// We asked the network about `target` with the SUSPECT `ask`.
    pub fn asking(&mut self, target: NodeId, ask: EventId) {
        if let Some(m) = self.members.get_mut(&target) {
            m.asked(ask);
        }
    }

    /// Our dial to `id` failed: if suspected, it is unreachable from here
    /// too.
    pub fn unreachable(&mut self, id: NodeId) {
        if let Some(m) = self.members.get_mut(&id)
            && let Status::Suspected { unreachable, .. } = &mut m.status
        {
            *unreachable = true;
        }
    }

    /// `suspicion` (an event of another member) asks about `target`: no
    /// need for us to ask too, if we lost it; if not, it is lost unless it
    /// refutes, unless it has already.
    pub fn suspicion(&mut self, suspicion: EventId, target: NodeId, now: Millis) {
        let wait = self.cfg.refute_wait;
        let Some(t) = self.members.get_mut(&target) else {
            return;
        };
        if let Some(l) = t.lost() {
            l.asked = Some(now);
            return;
        }
        if !t.answered.contains(&suspicion) {
            t.suspect(now + wait);
            t.asked(suspicion);
            if let Some(at) = t.suspect_until() {
                self.timers.soonest(T::Members as usize, at);
            }
        }
    }

    /// A newcomer was given our member list: every member we suspect is
    /// asked about again (a SUSPECT of ours), since the SUSPECTs said so
    /// far came before the newcomer. Those who suspect it already keep
    /// their deadline; a live one answers with ALIVE as to any SUSPECT.
    pub fn ask_again(&mut self) {
        let suspected: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, m)| m.suspected())
            .map(|(&id, _)| id)
            .collect();
        for target in suspected {
            self.out.push_back(Out::Publish(Body::Suspect { target }));
        }
    }

    /// We lost our last link to `peer` (`links` no longer has one): it may
    /// be gone, or only the link. Ask the network, and try once more.
    pub fn link_lost(&mut self, peer: NodeId, links: &Links, now: Millis) {
        if links.linked(peer) || !self.active {
            return;
        }
        let wait = self.cfg.refute_wait;
        let Some(m) = self.members.get_mut(&peer).filter(|m| !m.is_lost()) else {
            return;
        };
        if m.suspected() {
            return;
        }
        m.suspect(now + wait);
        self.timers.soonest(T::Members as usize, now + wait);
        let addr = m.addr;
        self.out
            .push_back(Out::Publish(Body::Suspect { target: peer }));
        // Maybe only the link broke: try it once more at once.
        if let Some(addr) = addr {
            self.out.push_back(Out::Dial(peer, addr));
        }
    }

    /// Declares `id` lost (its suspicion ran out): remembered and probed.
    /// Returns whether it was shown as present; [`Out::Lost`] tells the
    /// node.
    pub fn lose(&mut self, id: NodeId, now: Millis) -> Option<bool> {
        let present = self.make_lost(id, now)?;
        self.out.push_back(Out::Lost(id, present));
        // Two lost together: perhaps a partition, which a census tells.
        // One crash alone needs none.
        if together(&mut self.last_loss, now) {
            self.start_census(now);
        }
        Some(present)
    }

    /// Makes `id` lost, remembered and probed, making room for it.
    fn make_lost(&mut self, id: NodeId, now: Millis) -> Option<bool> {
        let m = self.members.get(&id).filter(|m| !m.is_lost())?;
        let present = m.present();
        self.make_lost_room(now);
        self.vouch(id);
        let m = self.members.get_mut(&id).expect("member");
        m.ask_at = None;
        let name = m.name.clone();
        m.status = Status::Lost(Lost {
            since: now,
            probes: 0,
            probe_after: now + PROBE_FIRST,
            asked: None,
            ask_at: None,
        });
        self.lost += 1;
        let first = now + PROBE_FIRST + self.rng.below(PROBE_EVERY);
        self.timers.soonest(T::Probe as usize, first);
        self.free(name);
        Some(present)
    }

    /// Makes room for one more lost member by forgetting the longest lost.
    fn make_lost_room(&mut self, now: Millis) {
        if self.lost < self.cfg.lost_max {
            return;
        }
        let oldest = self
            .members
            .iter()
            .filter_map(|(&id, m)| match &m.status {
                Status::Lost(l) => Some((l.since, id)),
                _ => None,
            })
            .min();
        if let Some((_, id)) = oldest {
            self.drop_lost(id, now);
        }
    }

    /// Forgets lost member `id`; the node gives back where its events had
    /// got to, with [`Membership::forgotten`].
    fn drop_lost(&mut self, id: NodeId, _now: Millis) {
        if let Some(m) = self.forget(id) {
            self.out.push_back(Out::Dropped(id, m.name, m.ident));
        }
    }

    /// Remembers a lost member forgotten ([`Out::Dropped`]): its name, and
    /// `next`, the next of its events to deliver.
    pub fn forgotten(&mut self, id: NodeId, next: u64, name: Option<String>, ident: Option<Ident>) {
        self.forgotten.insert(id, (next, name, ident));
    }

    /// A member forgotten as lost is heard of again: lost once more, so
    /// that it is let back in like one, where it left off. Returns the
    /// next of its events to deliver, and its identity, if it was
    /// forgotten.
    pub fn recall(&mut self, id: NodeId, now: Millis) -> Option<(u64, Option<Ident>)> {
        let (next, name, ident) = self.forgotten.remove(id)?;
        self.insert(id, None, None, false, None);
        self.set_name(id, name);
        if let Some(m) = self.members.get_mut(&id) {
            m.ident = ident;
        }
        self.make_lost(id, now);
        Some((next, ident))
    }

    /// Member `id`'s identity (the caller checked the id is bound to it).
    pub fn set_ident(&mut self, id: NodeId, ident: Ident) {
        if let Some(m) = self.members.get_mut(&id) {
            m.ident = Some(ident);
        }
    }

    /// The member (not lost) with `name`, or claiming it.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        let active = |k: &NodeId| !self.is_lost(*k);
        (self.names.ids(name).find(active)).or_else(|| self.claims.ids(name).find(active))
    }

    /// A lost member is back: it said HELLO, or ALIVE. Returns whether it
    /// was lost (the user is told it joined).
    pub fn readmit(&mut self, id: NodeId, now: Millis) -> bool {
        let Some(m) = self.members.get_mut(&id).filter(|m| m.is_lost()) else {
            return false;
        };
        m.status = Status::Present;
        m.heard = now;
        self.lost -= 1;
        if self.lost > 0 {
            // Evidence that the network is back: probe the next lost
            // member now, not in a second.
            let soon = now + self.rng.below(ALIVE_JITTER);
            self.timers.soonest(T::Probe as usize, soon);
        }
        // Its name may have gone to a claimant meanwhile: then it claims
        // it in turn.
        if let Some(n) = self.set_name(id, None) {
            self.name(id, &n);
        }
        self.back_one(now);
        true
    }

    /// A lost member is back, or a neighbour says one is. Two together: a
    /// partition heals, and the far side likely lost us too; say ALIVE.
    /// One alone (a peer back from sleep) most likely did not.
    pub fn back_one(&mut self, now: Millis) {
        if together(&mut self.last_back, now) {
            self.want_alive(now);
        }
    }

    /// Says ALIVE after a random moment, unless it is due already; at most
    /// once per `ALIVE_QUIET`.
    fn want_alive(&mut self, now: Millis) {
        if self.timers.get(T::Alive as usize).is_none() {
            let soon = now + self.rng.below(ALIVE_JITTER);
            let quiet = self.alive_last.map_or(0, |t| t + ALIVE_QUIET);
            self.timers.set(T::Alive as usize, Some(soon.max(quiet)));
        }
    }

    /// Says ALIVE now, answering the SUSPECTs about us not answered yet.
    pub fn say_alive(&mut self, now: Millis) {
        self.timers.clear(T::Answer as usize);
        self.timers.clear(T::Alive as usize);
        if !self.active {
            self.to_answer.clear();
            return;
        }
        self.alive_last = Some(now);
        let all = std::mem::take(&mut self.to_answer);
        if all.is_empty() {
            self.out
                .push_back(Out::Publish(Body::Alive { answers: vec![] }));
        }
        for chunk in all.chunks(MAX_ANSWERS) {
            let answers = chunk.to_vec();
            self.out.push_back(Out::Publish(Body::Alive { answers }));
        }
    }

    /// Queues an answer to the SUSPECT `id` about us: answers go out
    /// together a moment later, one ALIVE for many questions.
    pub fn answer(&mut self, id: EventId, now: Millis) {
        if self.to_answer.contains(&id) || self.answered.contains(&id) {
            return;
        }
        if self.answered.len() >= 4 * ANSWERED {
            self.answered.pop_front();
        }
        self.answered.push_back(id);
        if self.to_answer.len() < 4 * MAX_ANSWERS {
            self.to_answer.push(id);
        }
        if self.timers.get(T::Answer as usize).is_none() {
            self.timers.set(T::Answer as usize, Some(now + ANSWER_WAIT));
        }
    }

    /// Queues a question to the network about lost member `id`, which
    /// someone says is alive: a SUSPECT, which it refutes if it is. Asked
    /// after a while, and not at all if it says ALIVE first or someone else
    /// asks first: in a healed partition many peers learn the same news at
    /// once. Returns whether a question was queued.
    pub fn queue_ask(&mut self, id: NodeId, now: Millis) -> bool {
        let Some(l) = self.members.get_mut(&id).and_then(Member::lost) else {
            return false;
        };
        let stale = l.asked.is_none_or(|t| now >= t + ASK_AGAIN);
        if !stale || l.ask_at.is_some() {
            return false;
        }
        let at = now + ASK_DELAY + self.rng.below(ASK_JITTER);
        l.ask_at = Some((now, at));
        self.timers.soonest(T::Ask as usize, at);
        true
    }

    /// We lost a member: say ALIVE, and count who else does.
    fn start_census(&mut self, now: Millis) {
        if !self.active {
            return;
        }
        self.want_alive(now);
        if self.census.is_none() {
            self.census = Some(now);
            self.timers.set(T::Census as usize, Some(now + CENSUS_WAIT));
        }
    }

    /// Asks, after a random moment, about members silent through the
    /// census (at most `ASK_MAX`): anyone else who asks first saves us
    /// the question.
    fn count_census(&mut self, links: &Links, now: Millis) {
        let Some(start) = self.census.take() else {
            return;
        };
        if !self.active || links.up_count() == 0 {
            return;
        }
        let since = start.saturating_sub(ALIVE_QUIET);
        let silent: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(id, m)| {
                m.present()
                    && m.heard < since
                    && !m.suspected()
                    && m.ask_at.is_none()
                    && !links.linked(**id)
            })
            .map(|(&id, _)| id)
            .take(ASK_MAX)
            .collect();
        for id in silent {
            let at = now + 1 + self.rng.below(ASK_JITTER);
            self.members.get_mut(&id).expect("member").ask_at = Some(at);
            self.timers.soonest(T::Members as usize, at);
        }
    }

    /// A probe sent at `sent` failed before the next was due (the network
    /// answered it: no route, or refused): that answer cost a wake-up of
    /// its own, so the next probe waits an interval more. At most one
    /// wake-up a second in all, however a network fails.
    pub fn probe_failed_early(&mut self, sent: Millis) {
        if let Some(t) = self.timers.get(T::Probe as usize) {
            let later = t.max(sent + 2 * PROBE_EVERY);
            self.timers.set(T::Probe as usize, Some(later));
        }
    }

    /// We have no link left: unless one comes up within
    /// [`ISOLATED_LOSE`], every member is lost (see [`Membership::tick`]).
    /// Called each time the last link goes.
    pub fn isolated(&mut self, now: Millis) {
        if self.active && self.count() > 0 {
            let at = now + ISOLATED_LOSE;
            self.timers.set(T::Isolated as usize, Some(at));
        }
    }

    /// Alone since `ISOLATED_LOSE`: no path of ours reaches any member,
    /// so each is lost (and probed, and let back in when it answers).
    /// Members we link to never are: then we are not alone.
    fn alone(&mut self, links: &Links, now: Millis) {
        if !self.active || links.up_count() > 0 {
            return;
        }
        let all: Vec<NodeId> = self.active().map(|(id, _)| id).collect();
        for id in all {
            self.lose(id, now);
        }
        self.rewake();
    }

    /// Runs the timers that are due. `refusals` says how often in a row an
    /// address refused our dials (its host answered that nobody listens
    /// there), or `None` if the mesh has given it up.
    pub fn tick(
        &mut self,
        links: &Links,
        refusals: impl Fn(SocketAddr) -> Option<u32>,
        now: Millis,
    ) {
        if self.timers.take_due(T::Members as usize, now) {
            self.member_timers(links, now);
        }
        if self.timers.take_due(T::Isolated as usize, now) {
            self.alone(links, now);
        }
        if self.timers.is_due(T::Probe as usize, now) {
            self.probe(links, &refusals, now);
        }
        if self.timers.is_due(T::Ask as usize, now) {
            self.ask(now);
        }
        if self.timers.is_due(T::Answer as usize, now) || self.timers.is_due(T::Alive as usize, now)
        {
            self.say_alive(now);
        }
        if self.timers.take_due(T::Census as usize, now) {
            self.count_census(links, now);
        }
        if self.timers.is_due(T::Rename as usize, now) {
            self.settle_renames(now);
        }
    }

    /// When [`Membership::tick`] next has work to do, if ever.
    pub fn deadline(&self) -> Option<Millis> {
        self.timers.next()
    }

    /// Suspicions that ran out, and census questions that are due; then
    /// finds the next member timer.
    fn member_timers(&mut self, links: &Links, now: Millis) {
        let mut gone = Vec::new();
        let mut asks = Vec::new();
        for (&id, m) in self.members.iter().filter(|(_, m)| !m.is_lost()) {
            if m.suspect_until().is_some_and(|t| now >= t) {
                gone.push(id);
            }
            if m.ask_at.is_some_and(|t| now >= t) {
                asks.push(id);
            }
        }
        let wait = self.cfg.refute_wait;
        for id in asks {
            let linked = links.linked(id);
            let m = self.members.get_mut(&id).expect("member");
            m.ask_at = None;
            // Unless someone asked first, or we link to it now.
            if !m.suspected() && !linked && self.active {
                m.suspect(now + wait);
                self.out
                    .push_back(Out::Publish(Body::Suspect { target: id }));
            }
        }
        let isolated = links.up_count() == 0;
        for id in gone {
            let linked = links.linked(id);
            let m = self.members.get_mut(&id).expect("member");
            let unreachable = matches!(
                m.status,
                Status::Suspected {
                    unreachable: true,
                    ..
                }
            );
            if linked {
                // Still talking to us directly: not gone, whatever others think.
                m.clear();
            } else if isolated && !unreachable {
                // With no links at all we cannot tell who is cut off: us,
                // most likely. Wait until we reach someone, or fail to
                // reach this member ourselves.
                if let Status::Suspected { until, .. } = &mut m.status {
                    *until = now + wait;
                }
            } else {
                self.lose(id, now);
            }
        }
        self.rewake();
    }

    /// Finds the next member timer from scratch.
    fn rewake(&mut self) {
        let mut wake = None;
        for m in self.members.values().filter(|m| !m.is_lost()) {
            if let Some(t) = m.suspect_until() {
                soonest(&mut wake, t);
            }
            if let Some(t) = m.ask_at {
                soonest(&mut wake, t);
            }
        }
        self.timers.set(T::Members as usize, wake);
    }

    /// Asks the questions about lost members that are due, unless someone
    /// else asked meanwhile.
    fn ask(&mut self, now: Millis) {
        self.timers.clear(T::Ask as usize);
        let mut due = Vec::new();
        let mut wake = None;
        for (&id, m) in self.members.iter_mut() {
            let Some(l) = m.lost() else {
                continue;
            };
            match l.ask_at {
                Some((queued, at)) if at <= now => {
                    l.ask_at = None;
                    if l.asked.is_none_or(|t| t < queued) {
                        l.asked = Some(now);
                        due.push(id);
                    }
                }
                Some((_, at)) => soonest(&mut wake, at),
                None => {}
            }
        }
        if let Some(w) = wake {
            self.timers.soonest(T::Ask as usize, w);
        }
        if self.active {
            for id in due {
                self.out
                    .push_back(Out::Publish(Body::Suspect { target: id }));
            }
        }
    }

    /// Dials a lost member whose probe is due, one of them at random: the
    /// way two halves of a partition, or a peer and a sleeping laptop, find
    /// each other again. Members whose address refused us (their process
    /// is gone, not their network) come after the others, and back off:
    /// they must not hold up the probes of a partition's far side, which
    /// must find it within a second of it healing. Forgets members lost a
    /// day.
    fn probe(&mut self, links: &Links, refusals: &dyn Fn(SocketAddr) -> Option<u32>, now: Millis) {
        let old: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, m)| match &m.status {
                Status::Lost(l) => now >= l.since + LOST_FORGET,
                _ => false,
            })
            .map(|(&id, _)| id)
            .collect();
        for id in old {
            self.drop_lost(id, now);
        }
        self.timers.clear(T::Probe as usize);
        if !self.active || self.lost == 0 {
            return;
        }
        let busy = links.targets();
        // The fewest refusals, and among those one at random (reservoir
        // sampling: the n-th candidate replaces the pick with chance 1/n).
        let mut pick: Option<(u32, NodeId)> = None;
        let mut tied = 0;
        for (&id, m) in self.members.iter_mut() {
            let Some(addr) = m.addr else {
                continue;
            };
            let Status::Lost(l) = &mut m.status else {
                continue;
            };
            if l.probe_after > now || busy.contains(&id) {
                continue;
            }
            let Some(refused) = refusals(addr) else {
                // Given up for now: look again later, not every second.
                l.probe_after = now + PROBE_DEAD;
                continue;
            };
            match pick {
                Some((r, _)) if r < refused => continue,
                Some((r, _)) if r == refused => tied += 1,
                _ => tied = 1,
            }
            if self.rng.below(tied) == 0 {
                pick = Some((refused, id));
            }
        }
        if let Some((refused, id)) = pick {
            let m = self.members.get_mut(&id).expect("lost");
            let addr = m.addr.expect("addr");
            let l = m.lost().expect("lost");
            l.probes = l.probes.saturating_add(1);
            l.probe_after = if now >= l.since + LOST_SLOW_AFTER {
                // At a random phase: members lost together (a partition)
                // would otherwise all be probed at once, then not at all.
                now + LOST_SLOW / 2 + self.rng.below(LOST_SLOW)
            } else if refused > 0 {
                now + backoff(refused).max(PROBE_EVERY)
            } else {
                now + PROBE_EVERY
            };
            self.out.push_back(Out::Dial(id, addr));
        }
        // A second from now (when this probe, if it is not connected, is
        // given up: one wake-up for both), but not before a lost member
        // is due, nor after one is to be forgotten: an idle peer sleeps.
        let mut due: Option<Millis> = None;
        let mut forget: Option<Millis> = None;
        for m in self.members.values() {
            if let Status::Lost(l) = &m.status {
                if m.addr.is_some() {
                    soonest(&mut due, l.probe_after);
                }
                soonest(&mut forget, l.since + LOST_FORGET);
            }
        }
        let cadence = now + PROBE_EVERY;
        let next = match (due, forget) {
            (Some(d), Some(f)) => Some(d.max(cadence).min(f)),
            (None, f) => f,
            (d, None) => d.map(|d| d.max(cadence)),
        };
        self.timers.set(T::Probe as usize, next);
    }

    /// A one-line account of member `id`, for tests.
    pub fn describe(&self, id: NodeId) -> String {
        match self.members.get(&id) {
            Some(m) => match &m.status {
                Status::Lost(l) => format!("lost since={} probes={}", l.since, l.probes),
                s => format!("member {s:?}"),
            },
            None if self.forgotten.contains(id) => {
                let (next, ..) = self.forgotten.get(id).expect("forgotten");
                format!("forgotten next={next}")
            }
            None if self.gone.contains(id) => "gone".into(),
            None => "unknown".into(),
        }
    }
}

/// Whether two names are the same name, as far as uniqueness goes: in
/// any case, look-alike letters alike (see [`crate::name`]).
fn same_name(a: &str, b: &str) -> bool {
    a == b || crate::name::same(a, b)
}

/// Members by a name of theirs (its skeleton), in order of id.
#[derive(Debug, Default)]
struct Index(HashMap<String, BTreeSet<NodeId>>);

impl Index {
    /// Member `id`'s name was `old` and is `new`.
    fn update(&mut self, id: NodeId, old: Option<&str>, new: Option<&str>) {
        if let Some(o) = old.map(crate::name::skeleton)
            && let Some(ids) = self.0.get_mut(&o)
        {
            ids.remove(&id);
            if ids.is_empty() {
                self.0.remove(&o);
            }
        }
        if let Some(n) = new {
            self.0
                .entry(crate::name::skeleton(n))
                .or_default()
                .insert(id);
        }
    }

    fn ids(&self, name: &str) -> impl Iterator<Item = NodeId> + '_ {
        self.0
            .get(&crate::name::skeleton(name))
            .into_iter()
            .flatten()
            .copied()
    }
}

/// Notes that something happened at `now`, last at `*last`; returns whether
/// the two were within `TOGETHER` of each other.
fn together(last: &mut Option<Millis>, now: Millis) -> bool {
    let near = last.is_some_and(|t| now < t + TOGETHER);
    *last = Some(now);
    near
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: NodeId = NodeId(1);
    const BOB: NodeId = NodeId(2);
    const CAROL: NodeId = NodeId(3);

    fn ms() -> Membership {
        let cfg = Config {
            refute_wait: 2_000,
            lost_max: 4,
        };
        Membership::new(cfg, "me", 7)
    }

    fn links() -> Links {
        Links::for_test(ME)
    }

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    fn outs(m: &mut Membership) -> Vec<Out> {
        std::iter::from_fn(|| m.next_out()).collect()
    }

    #[test]
    fn a_lost_link_is_suspected_then_lost_unless_refuted() {
        let mut m = ms();
        let mut ls = links();
        // Linked to someone: not isolated.
        let l = ls.dial(&mut Vec::new(), addr(4), None, 0);
        ls.up(l, NodeId(4));
        m.insert(BOB, Some("bob"), Some(addr(2)), true, None);
        m.insert(CAROL, Some("carol"), Some(addr(3)), true, None);
        m.link_lost(BOB, &ls, 100);
        assert_eq!(
            outs(&mut m),
            [
                Out::Publish(Body::Suspect { target: BOB }),
                Out::Dial(BOB, addr(2))
            ]
        );
        m.link_lost(CAROL, &ls, 100);
        outs(&mut m);
        // Carol refutes; bob does not.
        m.refuted(CAROL, &[]);
        assert_eq!(m.deadline(), Some(2_100));
        m.tick(&ls, |_| Some(0), 2_100);
        assert_eq!(outs(&mut m), [Out::Lost(BOB, true)]);
        assert!(m.is_lost(BOB));
        assert!(m.get(CAROL).unwrap().present());
        assert_eq!(m.count(), 1);
    }

    #[test]
    fn a_suspicion_already_answered_is_ignored() {
        let mut m = ms();
        m.insert(BOB, Some("bob"), None, true, None);
        let q = EventId {
            origin: CAROL,
            seq: 9,
        };
        m.refuted(BOB, &[q]);
        m.suspicion(q, BOB, 0);
        assert!(!m.get(BOB).unwrap().suspected());
        let q2 = EventId {
            origin: CAROL,
            seq: 10,
        };
        m.suspicion(q2, BOB, 0);
        assert!(m.get(BOB).unwrap().suspected());
    }

    #[test]
    fn an_alive_said_before_a_suspicion_does_not_clear_it() {
        let mut m = ms();
        m.insert(BOB, Some("bob"), None, true, None);
        let q = |seq| EventId { origin: CAROL, seq };
        m.suspicion(q(1), BOB, 0);
        m.suspicion(q(2), BOB, 10);
        // Bob's ALIVE from before the SUSPECTs, delivered after them by a
        // slower path: it answers neither.
        m.alive(BOB, &[]);
        assert!(m.get(BOB).unwrap().suspected());
        // One answered, one not: still suspected.
        m.alive(BOB, &[q(1)]);
        assert!(m.get(BOB).unwrap().suspected());
        m.alive(BOB, &[q(2)]);
        assert!(!m.get(BOB).unwrap().suspected());
        // Without the fix it would be lost at the deadline.
        m.tick(&links(), |_| Some(0), 5_000);
        assert!(!m.is_lost(BOB));
    }

    #[test]
    fn isolated_we_wait_rather_than_lose_everyone() {
        let mut m = ms();
        let ls = links();
        m.insert(BOB, Some("bob"), Some(addr(2)), true, None);
        m.link_lost(BOB, &ls, 0);
        outs(&mut m);
        // No links at all: it is likelier us who are cut off.
        m.tick(&ls, |_| Some(0), 2_000);
        assert!(outs(&mut m).is_empty());
        assert!(m.get(BOB).unwrap().suspected());
        // Our own dial failed too: now it is lost.
        m.unreachable(BOB);
        m.tick(&ls, |_| Some(0), 4_000);
        assert_eq!(outs(&mut m), [Out::Lost(BOB, true)]);
    }

    #[test]
    fn suspicions_about_us_are_answered_together() {
        let mut m = ms();
        let q = |seq| EventId { origin: BOB, seq };
        m.answer(q(1), 0);
        m.answer(q(2), 50);
        m.answer(q(1), 60);
        assert_eq!(m.deadline(), Some(ANSWER_WAIT));
        m.tick(&links(), |_| Some(0), ANSWER_WAIT);
        assert_eq!(
            outs(&mut m),
            [Out::Publish(Body::Alive {
                answers: vec![q(1), q(2)]
            })]
        );
    }

    #[test]
    fn lost_members_are_probed_bounded_and_readmitted() {
        let mut m = ms();
        let ls = links();
        for i in 10..16 {
            m.insert(
                NodeId(i),
                Some(&format!("p{i}")),
                Some(addr(i as u16)),
                true,
                None,
            );
            assert_eq!(m.lose(NodeId(i), i), Some(true));
        }
        // lost_max is 4: the two lost longest are forgotten.
        assert_eq!(m.count(), 0);
        let dropped: Vec<Out> = outs(&mut m)
            .into_iter()
            .filter(|o| matches!(o, Out::Dropped(..)))
            .collect();
        assert_eq!(
            dropped,
            [
                Out::Dropped(NodeId(10), Some("p10".into()), None),
                Out::Dropped(NodeId(11), Some("p11".into()), None)
            ]
        );
        m.forgotten(NodeId(10), 7, Some("p10".into()), None);
        // Probes start after PROBE_FIRST (and a random moment), one member
        // at a time.
        m.tick(&ls, |_| Some(0), 20 + PROBE_FIRST + PROBE_EVERY);
        let dials = outs(&mut m)
            .into_iter()
            .filter(|o| matches!(o, Out::Dial(..)))
            .count();
        assert_eq!(dials, 1);
        // Back: present again.
        assert!(m.readmit(NodeId(13), 1_000));
        assert!(m.get(NodeId(13)).unwrap().present());
        // A forgotten member heard of again is lost again, where it was.
        assert_eq!(m.recall(NodeId(10), 2_000), Some((7, None)));
        assert!(m.is_lost(NodeId(10)));
    }

    #[test]
    fn a_lost_member_is_probed_about_every_second_but_never_twice_at_once() {
        let mut m = ms();
        let mut ls = links();
        m.insert(BOB, Some("bob"), Some(addr(2)), true, None);
        m.insert(CAROL, Some("carol"), Some(addr(3)), true, None);
        m.lose(BOB, 0);
        outs(&mut m);
        let mut dials = Vec::new();
        let mut wakes = 0;
        let mut now = 0;
        while let Some(t) = m.deadline().filter(|&t| t < 60_000) {
            now = t;
            wakes += 1;
            m.tick(&ls, |_| Some(0), now);
            for o in outs(&mut m) {
                if let Out::Dial(id, a) = o {
                    assert_eq!((id, a), (BOB, addr(2)));
                    dials.push(now);
                }
            }
        }
        // One probe a second, and no more wake-ups than that.
        assert!((55..=60).contains(&dials.len()), "{} probes", dials.len());
        assert!(wakes <= 60, "{wakes} wake-ups in a minute");
        assert!(
            dials.windows(2).all(|w| w[1] - w[0] == PROBE_EVERY),
            "{dials:?}"
        );
        // While a probe is under way, none other goes to the same member.
        let l = ls.dial(&mut Vec::new(), addr(2), Some(BOB), now);
        for _ in 0..5 {
            now = m.deadline().unwrap();
            m.tick(&ls, |_| Some(0), now);
            assert!(outs(&mut m).is_empty());
        }
        ls.remove(l);
        // An address the mesh gave up is not probed; the timer slows down.
        now = m.deadline().unwrap();
        m.tick(&ls, |_| None, now);
        assert!(outs(&mut m).is_empty());
        assert!(m.deadline().unwrap() >= now + PROBE_DEAD);
        // A probe the network answered at once (no route) costs a wake-up:
        // the next waits a second more.
        let t = m.deadline().unwrap();
        m.probe_failed_early(t - PROBE_EVERY);
        assert_eq!(m.deadline(), Some(t + PROBE_EVERY));
        // Back: the next lost member is probed at once, not in a second.
        m.lose(CAROL, now);
        m.tick(&ls, |_| Some(0), now + PROBE_FIRST);
        outs(&mut m);
        let t = now + PROBE_FIRST + 10;
        m.readmit(BOB, t);
        assert!(m.deadline().unwrap() <= t + ALIVE_JITTER);
    }

    #[test]
    fn alone_for_a_while_every_member_is_lost() {
        let mut m = ms();
        let mut ls = links();
        m.insert(BOB, Some("bob"), Some(addr(2)), true, None);
        m.insert(CAROL, Some("carol"), None, false, None);
        // Alone, then a link comes up in time: nobody is lost.
        m.isolated(0);
        let l = ls.dial(&mut Vec::new(), addr(9), None, 0);
        ls.up(l, NodeId(9));
        m.tick(&ls, |_| Some(0), ISOLATED_LOSE);
        assert!(outs(&mut m).is_empty());
        assert_eq!(m.count(), 2);
        // Alone for good: both lost (carol, never shown, is not shown
        // leaving either).
        ls.remove(l);
        m.isolated(10_000);
        m.tick(&ls, |_| Some(0), 10_000 + ISOLATED_LOSE - 1);
        assert!(outs(&mut m).is_empty());
        m.tick(&ls, |_| Some(0), 10_000 + ISOLATED_LOSE);
        let o = outs(&mut m);
        assert!(o.contains(&Out::Lost(BOB, true)), "{o:?}");
        assert!(o.contains(&Out::Lost(CAROL, false)), "{o:?}");
        assert_eq!(m.count(), 0);
    }

    #[test]
    fn two_losses_together_start_a_census() {
        let mut m = ms();
        let mut ls = links();
        let mut io = Vec::new();
        for i in 2..6 {
            m.insert(NodeId(i), Some(&format!("p{i}")), None, true, None);
        }
        // One link up, so the census can count.
        let l = ls.dial(&mut io, addr(9), None, 0);
        ls.up(l, NodeId(5));
        m.lose(NodeId(2), 11_000);
        assert!(m.census.is_none());
        m.lose(NodeId(3), 12_000);
        assert!(m.census.is_some());
        // At the census, the silent member not linked (4) is asked about,
        // after a random moment; the linked one (5) is not.
        m.tick(&ls, |_| Some(0), 15_000);
        assert!(m.get(NodeId(4)).unwrap().ask_at.is_some());
        assert!(m.get(NodeId(5)).unwrap().ask_at.is_none());
        m.tick(&ls, |_| Some(0), 15_000 + ASK_JITTER + 1);
        let o = outs(&mut m);
        assert!(o.contains(&Out::Publish(Body::Suspect { target: NodeId(4) })));
        assert!(o.contains(&Out::Publish(Body::Alive { answers: vec![] })));
    }

    #[test]
    fn look_alike_names_are_one_name() {
        let mut m = ms();
        m.insert(BOB, Some("bob"), None, true, None);
        for n in ["Bob", "BOB", "b\u{43e}b", "b0b"] {
            assert!(m.name_taken(n, CAROL), "{n:?}");
        }
        assert!(m.name_taken("ME", CAROL));
        assert_eq!(m.find("BOB"), Some(BOB));
        m.insert(CAROL, None, None, false, None);
        assert!(!m.name(CAROL, "Bob"));
        assert!(m.name(CAROL, "carol"));
    }

    #[test]
    fn renames_race_and_the_smallest_id_wins_wherever_it_comes_first() {
        const DAVE: NodeId = NodeId(4);
        for first_carol in [true, false] {
            let mut m = ms();
            for (id, n) in [(BOB, "bob"), (CAROL, "carol"), (DAVE, "dave")] {
                m.insert(id, Some(n), None, true, None);
            }
            // Carol and dave ask for one name (in two cases) within the
            // settling time, in either order; bob asks for another.
            let (a, b) = if first_carol {
                (CAROL, DAVE)
            } else {
                (DAVE, CAROL)
            };
            m.rename(a, "xena", false, 0);
            m.rename(BOB, "bobby", false, 100);
            m.rename(b, "XENA", false, 1_000);
            m.tick(&links(), |_| Some(0), RENAME_SETTLE - 1);
            assert_eq!(outs(&mut m), []);
            assert_eq!(m.deadline(), Some(RENAME_SETTLE));
            m.tick(&links(), |_| Some(0), 1_000 + RENAME_SETTLE);
            let o = outs(&mut m);
            let won = |id| Out::Rename {
                id,
                name: if id == BOB {
                    "bobby".into()
                } else if id == a {
                    "xena".into()
                } else {
                    "XENA".into()
                },
                own: false,
                won: true,
            };
            assert!(o.contains(&won(CAROL)), "{o:?}");
            assert!(o.contains(&won(BOB)), "{o:?}");
            assert!(!o.contains(&won(DAVE)), "{o:?}");
            assert_eq!(o.len(), 3, "{o:?}");
            let carol_asked = if first_carol { "xena" } else { "XENA" };
            assert_eq!(m.renamed(CAROL, carol_asked), Some("carol".into()));
            assert_eq!(m.renamed(DAVE, "xena"), None, "taken now");
            assert_eq!(m.renamed(BOB, "bobby"), Some("bob".into()));
            assert_eq!(m.find("Xena"), Some(CAROL));
            assert!(!m.name_taken("carol", DAVE), "carol's old name is free");
        }
        let mut m = ms();
        assert_eq!(m.rename_own("Me").as_deref(), Some("me"));
        m.insert(BOB, Some("bob"), None, true, None);
        assert_eq!(m.rename_own("BOB"), None);
        assert!(m.name_taken("Me", BOB));
    }

    #[test]
    fn a_name_in_use_is_only_claimed_until_its_holder_goes() {
        let mut m = ms();
        m.insert(BOB, Some("bob"), None, true, None);
        // An impostor under bob's name, and one under ours.
        m.insert(CAROL, None, None, false, None);
        assert!(m.joined(CAROL, None));
        assert!(!m.name(CAROL, "bob"));
        assert_eq!(m.get(CAROL).unwrap().name, None);
        assert_eq!(m.display(CAROL), CAROL.to_string());
        m.insert(NodeId(9), None, None, false, None);
        assert!(m.joined(NodeId(9), None));
        assert!(!m.name(NodeId(9), "me"));
        assert!(m.name_taken("bob", CAROL));
        assert!(!m.name_taken("bob", BOB));
        // Bob leaves: the claimant with the smallest id gets the name.
        m.insert(NodeId(2_000), None, None, false, None);
        assert!(m.joined(NodeId(2_000), None));
        assert!(!m.name(NodeId(2_000), "bob"));
        m.leave(BOB);
        assert_eq!(outs(&mut m), [Out::Named(CAROL, None)]);
        assert_eq!(m.display(CAROL), "bob");
        assert_eq!(m.display(NodeId(2_000)), NodeId(2_000).to_string());
    }

    #[test]
    fn one_neighbour_introduces_a_bounded_share_and_goes_first() {
        let mut m = ms();
        let mallory = NodeId(666);
        let honest = NodeId(777);
        for i in 0..10 {
            m.insert(NodeId(1000 + i), None, None, true, Some(honest));
        }
        for i in 0..50 {
            m.insert(NodeId(5000 + i), None, None, true, Some(mallory));
        }
        assert_eq!(m.introduced(mallory), 50);
        assert_eq!(m.introduced(honest), 10);
        // Room is made at the expense of the one that introduced the most,
        // newest first, not for its own.
        let none = HashSet::new();
        assert_eq!(m.evictable(&none, None), Some(NodeId(5049)));
        assert_eq!(m.evictable(&none, Some(honest)), Some(NodeId(5049)));
        assert_eq!(m.evictable(&none, Some(mallory)), None);
        // Heard directly, a member counts against nobody.
        m.hello(NodeId(5049), Ident::default(), addr(5));
        assert_eq!(m.introduced(mallory), 49);
        m.forget(NodeId(5048));
        assert_eq!(m.introduced(mallory), 48);
    }
}
