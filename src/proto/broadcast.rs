//! Broadcast: every event delivered once, and in order per origin.
//!
//! Every event carries (origin, seq). A peer delivers an event when it is
//! the next one of its origin, and then relays it. Later events are held
//! back, earlier ones are copies.
//!
//! How events are relayed is this module's private business: nothing
//! outside it depends on the strategy, and the node only routes the
//! frames it asks for. The strategy is lazy push on a tree per origin
//! (PlumTree, as in iroh-gossip), or, with [`Config::flood`], flooding:
//!
//! - An origin sends its own events on every link: its neighbours take
//!   them from it alone (see [`Broadcast::forged`]).
//! - A peer relays an event it delivers in full (eager push) on the links
//!   of the origin's tree, and announces it on the others: IHAVE, batched
//!   for [`IHAVE_WAIT`], one (origin, last seq delivered) per origin
//!   however many events. Nothing goes to a neighbour that has shown it
//!   has the event (it sent or announced it to us).
//! - A link starts in every origin's tree. When a copy is pushed to us
//!   twice, one of the two links is told to stop pushing that origin's
//!   events to us, and to announce them instead (PRUNE): the one whose
//!   copy came second, unless it is our parent (the link we take the
//!   origin's events from, which stays while it pushes: under load the
//!   quickest path changes with every burst, the tree does not), then the
//!   quicker one. If that link is level with us (the copy is of the last
//!   event we delivered), we stop pushing to it too, as PlumTree does; a
//!   link that lags behind (a newcomer catching up, pushing what we have)
//!   is pushed to still: it needs it. The origin's own link is the parent
//!   of its events as soon as they come on it, and is never pruned;
//!   nothing is pushed back to the parent, and what came another way is
//!   only announced to it (a parent that lost its supply may have taken
//!   us for its own parent). So each origin's tree becomes
//!   the paths its events came quickest by when it formed, each receiver
//!   gets one full copy, and new links heal and shorten the trees as the
//!   mesh changes. Nothing is pruned of an origin whose events we miss (a
//!   gap: every copy is welcome then), nor for copies we asked for.
//! - An event announced but not come after [`GRAFT_WAIT`] is asked for
//!   with GRAFT from the neighbour that announced it, which then pushes
//!   that origin's events to us again and sends what it has from the
//!   first we miss; after as long again, from the next that announced it,
//!   and so on, [`GRAFT_TRIES`] times. When the link an origin's events
//!   came on goes down (our parent in its tree), the neighbour that last
//!   announced them is grafted at once (or one we pruned, or any). A
//!   GRAFT from our parent means it lost its supply: it is our parent no
//!   more. Our first link (joining, or back from isolation) is every
//!   origin's parent until their events come another way.
//! - Trees become shallow. The paths quickest while a tree formed need not
//!   be short (at 64 peers, up to 12 hops where 3 would do), and every hop
//!   adds its wait to fan-out latency. So each peer tells its neighbours
//!   (HOPS) how many links from each origin its copies of the origin's
//!   events come: 1 from the origin itself, else one more than its parent
//!   says (unknown while the parent has not said). Within [`HOPS_WAIT`] of
//!   a change, on every link; all of them to a new link. A peer with a
//!   neighbour [`MOVE_GAIN`] hops closer to an origin than its parent moves
//!   to the closest such neighbour: GRAFT it (push to me, and send what
//!   you have from my next event on), PRUNE the parent (announced to from
//!   then on). Only to a neighbour that has shown it has the origin's
//!   events (a link below us never sends or announces them to us); never
//!   for a tie, nor while we miss events, nor more than once a
//!   [`MOVE_WAIT`] per tree. Each move takes the peer, and all below it,
//!   closer to the origin, and nothing moves anyone further: moves end,
//!   with each peer about as few hops from each origin as the links allow.
//!   Counts from [`MAX_HOPS`] on are unknown, so a loop in a tree under
//!   repair counts no further. A peer that does not know HOPS (built
//!   before it) skips it: it is never moved to, and peers below it do not
//!   move.
//! - With flooding, nothing is pruned: every link stays in every tree (a
//!   flooding peer honours the PRUNE and GRAFT it is sent, so the two mix);
//!   it says no hop counts, and never moves.
//!
//! The last safety net, whatever the strategy: a gap (an event came
//! before one of its origin's earlier ones) is fetched from neighbours'
//! recent-event caches (FETCH); a neighbour that delivered the missing
//! events but no longer has them says so (LACK), and the gap is skipped,
//! with a warning, at once; if nobody answers, after `gap_giveup`. An
//! origin the node declares lost is paused: its events are held, not
//! delivered, until it is back.
//!
//! Delivery is pulled: [`Broadcast::accept`] hands back the event if it is
//! next, then [`Broadcast::drain`] hands back the held ones one at a time,
//! so the node can act on each (a LEAVE ends its origin) before the next.
//!
//! Nothing is delivered or relayed before its origin's signature covers
//! it (see [`super::seal`]): events taken in order wait in the origin's
//! verifier, and our own events are sealed, one signature a run, by
//! [`Broadcast::seal`], which the node runs when [`Broadcast::deadline`]
//! says so (at once, in the same turn of the loop).
//!
//! Fair shares, so that one member's flood slows only itself: each origin
//! is delivered at most [`ORIGIN_BURST`] events at once and
//! [`ORIGIN_RATE`] a second after that (the rest wait, held, and beyond
//! the hold bounds are dropped); each origin holds back at most
//! [`HELD_PER_ORIGIN`] bytes; the cache, when full, lets go of the oldest
//! event of whichever origin has the most in it; and a neighbour's FETCH
//! is answered with at most [`FETCH_BYTES`], and [`FETCH_RATE`] bytes a
//! second (a GRAFT's request too).
//!
//! Lazy push keeps, per origin, a few sets of links up (those pruned
//! either way, what each has shown it has, each one's hop count, the
//! announcers to graft in turn), and per link, one announcement and one
//! hop count waiting per origin: all bounded by the links and the members.

use super::crypto::{self, EventHash, Identity};
use super::seal::{self, Sealer, Taken, Verifier};
use super::wire::{self, Body, Event, Frame, Msg};
use super::{Bucket, EventId, Io, LinkId, Millis, NodeId, Sink, soonest};
use ed25519_dalek::VerifyingKey;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Events held back per origin, waiting for a gap to fill (or for their
/// turn), bytes held back per origin, and in all.
pub const MAX_HELD: usize = 512;
pub const HELD_PER_ORIGIN: usize = 256 << 10;
pub const HELD_BYTES: usize = 1 << 20;
/// Events of one origin delivered at once, and a second after that.
pub const ORIGIN_BURST: u64 = 100_000;
pub const ORIGIN_RATE: u64 = 1_000;
/// Events further ahead of the next expected one are dropped, not held.
pub const HOLD_WINDOW: u64 = 4096;
/// Recent events kept to answer FETCH: count and bytes.
pub const CACHE_EVENTS: usize = 16384;
pub const CACHE_BYTES: usize = 4 << 20;
/// Events, and bytes, sent in answer to one FETCH; bytes a second sent in
/// answer to one neighbour's FETCHes (and at once).
pub const FETCH_MAX: u64 = 256;
pub const FETCH_BYTES: usize = 256 << 10;
pub const FETCH_RATE: u64 = 8 << 20;
const FETCH_BURST: u64 = 4 << 20;
/// Announcements wait this long, to go out together in one IHAVE a link.
pub const IHAVE_WAIT: Millis = 50;
/// An event announced and not come within this is asked for (GRAFT) from
/// a neighbour that announced it; and again from the next after as long.
pub const GRAFT_WAIT: Millis = 100;
/// GRAFTs for an origin's missing events with none of them coming; then
/// only the gap timer (FETCH) is left.
pub const GRAFT_TRIES: u32 = 4;
/// Hop counts (HOPS) wait this long after they change, to go out together
/// in one frame a link, with the announcements waiting (and these with
/// them): one write, one wake-up for both.
pub const HOPS_WAIT: Millis = IHAVE_WAIT;
/// A peer moves in an origin's tree to a neighbour at least this many hops
/// closer to the origin than its parent (a tie never moves it)...
pub const MOVE_GAIN: u8 = 1;
/// ...and no sooner than this after its last move in that tree.
pub const MOVE_WAIT: Millis = 1_000;
/// Hop counts from this on are not counted (a loop in a tree under repair
/// counts no further): unknown.
pub const MAX_HOPS: u8 = 64;

/// Gap repair timers, in milliseconds.
#[derive(Debug, Clone)]
pub struct Config {
    /// A gap in a sender's events is fetched after this, and again as often.
    pub gap_wait: Millis,
    /// A gap nobody can fill is skipped after this.
    pub gap_giveup: Millis,
    /// Relay by flooding: every event on every link, nothing pruned.
    pub flood: bool,
}

/// An event held back, decoded once, with its hash and the link it came
/// on. An empty frame is an event taken as nothing (see `Body::Refused`):
/// never relayed.
#[derive(Debug)]
struct Held {
    ev: Event,
    hash: EventHash,
    frame: Frame,
    link: LinkId,
    /// Its signature was checked (held ahead, see [`Broadcast::vouched`]).
    checked: bool,
}

/// Where one origin's events have got to.
#[derive(Debug)]
struct Origin {
    /// The next sequence number to deliver.
    next: u64,
    /// Events that arrived ahead of `next` (or at it, waiting for their
    /// turn under the origin's rate), and their bytes.
    held: BTreeMap<u64, Held>,
    held_bytes: usize,
    /// The furthest event seen ahead of `next`, held or not (too far
    /// ahead to hold): we are behind until `next` passes it.
    ahead: u64,
    /// The furthest event ahead of `next` not held (too far ahead, or no
    /// room) whose signature checked out: the origin got that far.
    proven: u64,
    /// A neighbour answered our FETCH: its oldest event of this origin is
    /// this one; what comes before is lost to it.
    lack: Option<u64>,
    /// We skipped this origin's events below this, or started after them
    /// (the first event we delivered ourselves): we never had them, so we
    /// cannot tell anyone they were let go.
    skipped_to: u64,
    /// The first event of this origin we delivered (0: none yet).
    first_seen: u64,
    gap_since: Millis,
    fetch_at: Millis,
    /// The last event our latest FETCH asked for (0: none pending).
    fetched_to: u64,
    /// The node lost its origin: hold, never deliver, until it is back.
    paused: bool,
    /// Its fair share of deliveries, and when the next is due if it has
    /// used them up.
    rate: Bucket,
    rate_at: Option<Millis>,
    /// Lazy push, for links up. Links that asked us (PRUNE) not to push
    /// this origin's events to them (we announce them), and links we asked
    /// so; what each link has shown it has (the last event of this origin
    /// it sent us or announced): nothing it has is sent to it again.
    pruned_by: BTreeSet<LinkId>,
    pruned: BTreeSet<LinkId>,
    has: BTreeMap<LinkId, u64>,
    /// Our parent in the tree: the link whose events we expect, and
    /// whether it has pushed any (until then, the next link to push one
    /// first is). A parent that has pushed stays while it pushes, even
    /// when another link is quicker for a while (under load, the quickest
    /// path changes with every burst; the tree does not). And the link the
    /// last event delivered came on.
    parent: Option<LinkId>,
    parent_fed: bool,
    first_from: Option<LinkId>,
    /// The link that last announced its events: a parent in waiting.
    heard: Option<LinkId>,
    /// The furthest event announced to us.
    announced: u64,
    /// Links that announced events we miss, in turn to be asked (GRAFT).
    announcers: VecDeque<LinkId>,
    /// When to ask the next of them, and how many were asked since an
    /// event last came.
    graft_at: Option<Millis>,
    grafts: u32,
    /// The parent's link went down: graft at once, even with nothing
    /// missing.
    orphan: bool,
    /// Events up to this were asked for (FETCH, GRAFT): copies of them are
    /// answers, not a reason to prune.
    asked_to: u64,
    /// How many links from the origin each neighbour's copies come (its
    /// HOPS), how many we last said ours do (`HOPS_UNKNOWN`: we do not
    /// know), and when we last moved closer to the origin.
    hops: BTreeMap<LinkId, u8>,
    told: u8,
    moved_at: Option<Millis>,
    /// Events taken in order, kept back until a signature covers them
    /// (counted in the held bytes), and the origin's key.
    verifier: Verifier<Held>,
    /// Events checked and relayed, not yet handed to the node.
    ready: VecDeque<Event>,
}

impl Origin {
    fn new(next: u64) -> Origin {
        Origin {
            next,
            held: BTreeMap::new(),
            held_bytes: 0,
            ahead: 0,
            proven: 0,
            lack: None,
            skipped_to: 0,
            first_seen: 0,
            gap_since: 0,
            fetch_at: 0,
            fetched_to: 0,
            paused: false,
            rate: Bucket::new(ORIGIN_RATE, ORIGIN_BURST),
            rate_at: None,
            pruned_by: BTreeSet::new(),
            pruned: BTreeSet::new(),
            has: BTreeMap::new(),
            parent: None,
            parent_fed: false,
            first_from: None,
            heard: None,
            announced: 0,
            announcers: VecDeque::new(),
            graft_at: None,
            grafts: 0,
            orphan: false,
            asked_to: 0,
            hops: BTreeMap::new(),
            told: wire::HOPS_UNKNOWN,
            moved_at: None,
            verifier: Verifier::default(),
            ready: VecDeque::new(),
        }
    }

    /// The next event not delivered yet: before those kept back.
    fn done(&self) -> u64 {
        self.next - self.verifier.waiting() as u64
    }

    /// Counts `n` bytes more (or less) against the origin's held share and
    /// `total`; when adding, only if they fit. Returns whether they did.
    fn charge(&mut self, total: &mut usize, n: usize, add: bool) -> bool {
        if !add {
            self.held_bytes -= n;
            *total -= n;
            return true;
        }
        if self.held_bytes + n > HELD_PER_ORIGIN || *total + n > HELD_BYTES {
            return false;
        }
        self.held_bytes += n;
        *total += n;
        true
    }

    /// Lets go of what the verifier kept back, and what is ready.
    fn clear_verifier(&mut self, total: &mut usize) {
        for h in self.verifier.clear() {
            self.charge(total, h.frame.len(), false);
        }
        self.ready.clear();
    }

    /// Whether we know of events that we have not delivered.
    fn behind(&self) -> bool {
        !self.held.is_empty() || self.ahead >= self.next
    }

    /// Holds back event `h` (not before `next`), if it is within the
    /// window and there is room in the origin's share and in `total`.
    /// Returns whether it is held now (or was already).
    fn hold(&mut self, total: &mut usize, h: Held) -> bool {
        let seq = h.ev.seq;
        self.ahead = self.ahead.max(seq);
        if self.held.contains_key(&seq) {
            return true;
        }
        if seq - self.next >= HOLD_WINDOW
            || self.held.len() >= MAX_HELD
            || !self.charge(total, h.frame.len(), true)
        {
            return false;
        }
        self.held.insert(seq, h);
        true
    }

    /// Takes the held event `seq` out.
    fn unhold(&mut self, total: &mut usize, seq: u64) -> Option<Held> {
        let h = self.held.remove(&seq)?;
        self.charge(total, h.frame.len(), false);
        Some(h)
    }

    /// Lets go of every held event below `seq` (all of them: `u64::MAX`).
    fn unhold_below(&mut self, total: &mut usize, seq: u64) {
        let keep = self.held.split_off(&seq);
        let gone = std::mem::replace(&mut self.held, keep);
        let n: usize = gone.values().map(|h| h.frame.len()).sum();
        self.charge(total, n, false);
    }

    /// Takes a turn under the origin's rate; if there is none, notes when
    /// there will be (on `wake` too) and returns false.
    fn turn(&mut self, now: Millis, wake: &mut Option<Millis>) -> bool {
        if self.rate.take(1, now) {
            return true;
        }
        let at = self.rate.ready_at(1, now);
        self.rate_at = Some(at);
        soonest(wake, at);
        false
    }

    /// A gap starts now: fetch after `wait`, give up `gap_giveup` from now.
    fn start_gap(&mut self, now: Millis, wait: Millis, wake: &mut Option<Millis>) {
        self.gap_since = now;
        self.fetch_at = now + wait;
        soonest(wake, self.fetch_at);
    }
}

/// A neighbour: the peer on an up link.
#[derive(Debug)]
struct Neighbour {
    peer: NodeId,
    /// Its own last event when it sent us its member list: later events
    /// of that node are taken from this link only. Raised to each of them
    /// that comes on it but cannot be held, so that other copies of those
    /// are let in (see [`Broadcast::accept`]).
    floor: Option<u64>,
    /// Bytes we may still send it in answer to FETCH.
    fetch: Bucket,
    /// Announcements waiting to go to it: origin → last event delivered.
    ihave: BTreeMap<NodeId, u64>,
    /// Hop counts waiting to go to it (HOPS): origin → ours.
    hops: BTreeMap<NodeId, u8>,
}

/// Recent events by id, bounded in count and bytes. When full, the oldest
/// event of the origin with the most events (or bytes) in it goes first:
/// a flood from one origin pushes out its own events, not others'.
///
/// Each origin's events are kept in its order (they are released in it),
/// so adding one is a push at the back and letting one go a pop at the
/// front.
///
/// The orders by events and bytes are only read when something must go:
/// until then an origin whose figures changed is only noted (`stale`),
/// and put in its place when the cache is next full. A stream into a
/// cache with room moves nothing in them; a stream from one origin into a
/// full one adds one of its events and lets go another, and nothing moves
/// either.
#[derive(Debug, Default)]
struct Cache {
    /// Each origin's events, found by `index`; `last` is where the last
    /// event added went (a stream from one origin finds its place there,
    /// without a lookup).
    per: Vec<(NodeId, Kept)>,
    index: HashMap<NodeId, usize>,
    last: usize,
    /// The origins by events and by bytes kept, as each was last placed
    /// (see [`Kept::placed`]).
    by_count: BTreeSet<(usize, NodeId)>,
    by_bytes: BTreeSet<(usize, NodeId)>,
    /// Origins whose place in the orders is behind what they have, each
    /// once: at most one per origin kept.
    stale: Vec<NodeId>,
    events: usize,
    bytes: usize,
}

/// One origin's events in the cache, in order of sequence number.
#[derive(Debug, Default)]
struct Kept {
    frames: VecDeque<(u64, Frame)>,
    bytes: usize,
    /// Where it is in the orders: its (events, bytes) when it was last
    /// placed; (0, 0): in neither.
    placed: (usize, usize),
    /// Its figures changed since: it is in [`Cache::stale`].
    stale: bool,
}

impl Kept {
    /// Where event `seq` is, or would go.
    fn find(&self, seq: u64) -> Result<usize, usize> {
        match self.frames.back() {
            Some(&(last, _)) if seq > last => Err(self.frames.len()),
            _ => self.frames.binary_search_by_key(&seq, |&(s, _)| s),
        }
    }

    fn figures(&self) -> (usize, usize) {
        (self.frames.len(), self.bytes)
    }
}

impl Cache {
    /// Where `origin`'s events are in `per`.
    fn slot(&self, origin: NodeId) -> Option<usize> {
        match self.per.get(self.last) {
            Some(&(o, _)) if o == origin => Some(self.last),
            _ => self.index.get(&origin).copied(),
        }
    }

    fn get(&self, origin: NodeId) -> Option<&Kept> {
        self.slot(origin).map(|i| &self.per[i].1)
    }

    fn get_mut(&mut self, origin: NodeId) -> Option<&mut Kept> {
        self.slot(origin).map(|i| &mut self.per[i].1)
    }

    /// Forgets `origin`'s entry (the last in `per` takes its slot).
    fn remove(&mut self, origin: NodeId) {
        let Some(i) = self.index.remove(&origin) else {
            return;
        };
        self.per.swap_remove(i);
        if let Some(&(moved, _)) = self.per.get(i) {
            self.index.insert(moved, i);
        }
    }

    /// The oldest event of `origin` still kept.
    #[cfg(test)]
    fn oldest(&self, origin: NodeId) -> Option<u64> {
        self.get(origin)?.frames.front().map(|&(s, _)| s)
    }

    fn contains(&self, id: EventId) -> bool {
        self.get(id.origin).is_some_and(|k| k.find(id.seq).is_ok())
    }

    /// The first event of `id`'s origin kept at or after it.
    fn first_from(&self, id: EventId) -> Option<u64> {
        let k = self.get(id.origin)?;
        let i = k.find(id.seq).unwrap_or_else(|i| i);
        k.frames.get(i).map(|&(s, _)| s)
    }

    /// `origin`'s events `from..=to` that are kept, in order.
    fn range(&self, origin: NodeId, from: u64, to: u64) -> impl Iterator<Item = &Frame> {
        let k = self.get(origin);
        let i = k.map_or(0, |k| k.find(from).unwrap_or_else(|i| i));
        k.into_iter()
            .flat_map(move |k| k.frames.range(i..))
            .take_while(move |&&(s, _)| s <= to)
            .map(|(_, f)| f)
    }

    /// Puts `origin` in its place in the orders by what it has now (and
    /// out of the cache if it has nothing). An order whose figure did not
    /// change is left alone.
    fn place(&mut self, origin: NodeId) {
        let Some(k) = self.get_mut(origin) else {
            return;
        };
        k.stale = false;
        let now = k.figures();
        let was = std::mem::replace(&mut k.placed, now);
        if now.0 == 0 {
            self.remove(origin);
            self.stale.retain(|&o| o != origin);
        }
        // (0, _): in neither order.
        if now.0 != was.0 || was.0 == 0 || now.0 == 0 {
            if was.0 != 0 {
                self.by_count.remove(&(was.0, origin));
            }
            if now.0 != 0 {
                self.by_count.insert((now.0, origin));
            }
        }
        if now.1 != was.1 || was.0 == 0 || now.0 == 0 {
            if was.0 != 0 {
                self.by_bytes.remove(&(was.1, origin));
            }
            if now.0 != 0 {
                self.by_bytes.insert((now.1, origin));
            }
        }
    }

    /// Puts every stale origin but `but` in its place.
    fn settle(&mut self, but: Option<NodeId>) {
        let mut i = 0;
        while i < self.stale.len() {
            let o = self.stale[i];
            if Some(o) == but {
                i += 1;
                continue;
            }
            self.stale.swap_remove(i);
            self.place(o);
        }
    }

    /// The origin with the most events (`by_bytes`: bytes) kept, as if
    /// `stale`, in the order as `key`, were there as it is now.
    fn most(
        order: &BTreeSet<(usize, NodeId)>,
        stale: NodeId,
        key: usize,
        now: usize,
    ) -> Option<NodeId> {
        let top = order
            .iter()
            .rev()
            .find(|&&(n, o)| (n, o) != (key, stale))
            .copied();
        let mine = (now > 0).then_some((now, stale));
        top.max(mine).map(|(_, o)| o)
    }

    /// The origin to let go of an event of, if the cache holds `size`
    /// (events, bytes), over a bound: in the orders as they are, with
    /// every origin but `id` in its place and `id` as `was` in them and
    /// `mine` in fact.
    fn victim(
        by_count: &BTreeSet<(usize, NodeId)>,
        by_bytes: &BTreeSet<(usize, NodeId)>,
        size: (usize, usize),
        id: NodeId,
        was: (usize, usize),
        mine: (usize, usize),
    ) -> Option<NodeId> {
        if size.0 > CACHE_EVENTS {
            Cache::most(by_count, id, was.0, mine.0)
        } else if size.1 > CACHE_BYTES {
            Cache::most(by_bytes, id, was.1, mine.1)
        } else {
            None
        }
    }

    fn insert(&mut self, id: EventId, frame: Frame) {
        let n = frame.len();
        // Something may have to go: every other origin in its place first.
        if self.events >= CACHE_EVENTS || self.bytes + n > CACHE_BYTES {
            self.settle(Some(id.origin));
        }
        let i = match self.slot(id.origin) {
            Some(i) => i,
            None => {
                self.per.push((id.origin, Kept::default()));
                self.index.insert(id.origin, self.per.len() - 1);
                self.per.len() - 1
            }
        };
        self.last = i;
        let k = &mut self.per[i].1;
        match k.find(id.seq) {
            Ok(i) => {
                let old = std::mem::replace(&mut k.frames[i].1, frame);
                k.bytes -= old.len();
                self.bytes -= old.len();
                self.events -= 1;
            }
            Err(i) => k.frames.insert(i, (id.seq, frame)),
        }
        k.bytes += n;
        self.bytes += n;
        self.events += 1;
        // Its place in the orders stays `was` until the end; the choice
        // of what to let go counts it as it is now. While the victim is
        // `id.origin` itself (a stream into a full cache), its entry is
        // at hand.
        let was = k.placed;
        loop {
            let size = (self.events, self.bytes);
            let v = Cache::victim(
                &self.by_count,
                &self.by_bytes,
                size,
                id.origin,
                was,
                k.figures(),
            );
            match v {
                Some(o) if o == id.origin => {
                    if let Some((_, f)) = k.frames.pop_front() {
                        k.bytes -= f.len();
                        self.bytes -= f.len();
                        self.events -= 1;
                    }
                }
                Some(_) => break,
                None => {
                    if !k.stale && k.figures() != was {
                        k.stale = true;
                        self.stale.push(id.origin);
                    }
                    if k.frames.is_empty() {
                        self.place(id.origin);
                    }
                    return;
                }
            }
        }
        // Another origin has more: let go of its events until none must
        // go, or `id.origin` is the fullest again.
        loop {
            let mine = self.get(id.origin).map_or((0, 0), Kept::figures);
            let size = (self.events, self.bytes);
            let Some(o) = Cache::victim(&self.by_count, &self.by_bytes, size, id.origin, was, mine)
            else {
                break;
            };
            self.pop_oldest(o);
            if o != id.origin {
                self.place(o);
            }
        }
        match self.get_mut(id.origin) {
            Some(k) if !k.frames.is_empty() => {
                if !k.stale && k.figures() != was {
                    k.stale = true;
                    self.stale.push(id.origin);
                }
            }
            _ => self.place(id.origin),
        }
    }

    /// Lets go of `origin`'s oldest event, leaving the orders as they are.
    fn pop_oldest(&mut self, origin: NodeId) {
        let Some(k) = self.get_mut(origin) else {
            return;
        };
        if let Some((_, f)) = k.frames.pop_front() {
            k.bytes -= f.len();
            self.bytes -= f.len();
            self.events -= 1;
        }
    }
}

/// How many links from `origin` our copies of its events come, by our
/// parent in its tree: one from the origin itself, else one more than the
/// parent says its copies come from.
fn depth(o: &Origin, neighbours: &BTreeMap<LinkId, Neighbour>, origin: NodeId) -> Option<u8> {
    let p = o.parent?;
    if neighbours.get(&p)?.peer == origin {
        return Some(1);
    }
    o.hops.get(&p).filter(|&&h| h < MAX_HOPS).map(|h| h + 1)
}

/// Whether `id` arriving on `link` is a forgery, given the neighbours:
/// see [`Broadcast::forged`].
fn forged(neighbours: &BTreeMap<LinkId, Neighbour>, link: LinkId, id: EventId) -> bool {
    neighbours
        .iter()
        .any(|(&k, n)| k != link && n.peer == id.origin && n.floor.is_some_and(|f| id.seq > f))
}

/// What became of an event accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Accepted {
    /// It was next: delivered and relayed. Drain after acting on it.
    Delivered(Event),
    /// Held back, and the next event is held too (it was held while its
    /// origin was lost): drain.
    HeldNextReady,
    /// Held back (or a copy): nothing to deliver yet.
    Held,
}

/// What became of a gap whose timer ran out.
#[derive(Debug, PartialEq, Eq)]
pub enum Gap {
    /// Skipped this many events nobody has: held ones may be next now.
    Skipped(u64),
    /// The next event is held: drain.
    Ready,
    /// Still waiting (fetched again), or nothing to do.
    Waiting,
}

/// One peer's broadcast state. See the module documentation.
#[derive(Debug)]
pub struct Broadcast {
    cfg: Config,
    me: NodeId,
    ident: Identity,
    /// The last sequence number we used.
    seq: u64,
    /// Our events not sent yet, until they are sealed.
    sealer: Sealer,
    /// Links that brought a forgery, for the node to drop.
    rejected: Vec<LinkId>,
    origins: BTreeMap<NodeId, Origin>,
    neighbours: BTreeMap<LinkId, Neighbour>,
    cache: Cache,
    /// Bytes of frames held back, all origins together.
    held_bytes: usize,
    /// No gap timer is due before this (a lower bound).
    wake: Option<Millis>,
    /// When the announcements waiting go out.
    ihave_at: Option<Millis>,
    /// The link that ended our isolation: every origin's parent, until
    /// its events come otherwise.
    supply: Option<LinkId>,
    /// No GRAFT timer is due before this (a lower bound).
    graft_wake: Option<Millis>,
    /// When the hop counts waiting go out.
    hops_at: Option<Millis>,
}

impl Broadcast {
    pub fn new(cfg: Config, ident: Identity) -> Broadcast {
        Broadcast {
            cfg,
            me: ident.id(),
            ident,
            seq: 0,
            sealer: Sealer::default(),
            rejected: Vec::new(),
            origins: BTreeMap::new(),
            neighbours: BTreeMap::new(),
            cache: Cache::default(),
            held_bytes: 0,
            wake: None,
            ihave_at: None,
            supply: None,
            graft_wake: None,
            hops_at: None,
        }
    }

    /// A new origin's state: its events expected on our supply link.
    fn origin(&self, next: u64) -> Origin {
        let mut o = Origin::new(next);
        o.parent = self.supply;
        o
    }

    /// The last sequence number we used (0: we have said nothing).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// `link` is up to `peer`: relay to it from now on. A new link is in
    /// every origin's tree until a copy comes twice: so trees heal, and
    /// find the quickest paths, as links come and go. Our first link (when
    /// we join, or come back from isolation) is the parent of every origin
    /// we know, and of those we learn of, until their events come another
    /// way: should it go down, they graft another.
    pub fn neighbour_up(&mut self, link: LinkId, peer: NodeId) {
        if self.neighbours.is_empty() {
            self.supply = Some(link);
            for o in self.origins.values_mut() {
                o.parent = o.parent.or(Some(link));
            }
        }
        let fetch = Bucket::new(FETCH_RATE, FETCH_BURST);
        // It is told at once how deep each tree has put us.
        let hops: BTreeMap<NodeId, u8> = self
            .origins
            .iter()
            .filter(|&(&id, o)| o.told != wire::HOPS_UNKNOWN && id != peer)
            .map(|(&id, o)| (id, o.told))
            .collect();
        if !hops.is_empty() {
            self.hops_at = Some(0);
        }
        self.neighbours.insert(
            link,
            Neighbour {
                peer,
                floor: None,
                fetch,
                ihave: BTreeMap::new(),
                hops,
            },
        );
    }

    /// `link` is down (or closing). Origins whose events last came on it
    /// graft, at once, the neighbour that last announced them.
    pub fn neighbour_down(&mut self, link: LinkId) {
        if self.neighbours.remove(&link).is_none() {
            return;
        }
        let any = self.neighbours.keys().next().copied();
        if self.supply == Some(link) {
            self.supply = None;
        }
        let mut orphans = Vec::new();
        for (&id, o) in &mut self.origins {
            o.pruned_by.remove(&link);
            o.pruned.remove(&link);
            o.has.remove(&link);
            o.hops.remove(&link);
            o.announcers.retain(|&l| l != link);
            if o.heard == Some(link) {
                o.heard = None;
            }
            if o.parent != Some(link) {
                continue;
            }
            o.parent = None;
            o.parent_fed = false;
            orphans.push(id);
            // Whoever announced its events last, or else a link we told
            // to stop pushing them (it had them), or any.
            let next = o.heard.or_else(|| o.pruned.first().copied()).or(any);
            if let Some(h) = next.filter(|_| !o.paused) {
                o.announcers.retain(|&l| l != h);
                o.announcers.push_front(h);
                o.orphan = true;
                // At once: the next tick, whenever that is.
                o.graft_at = Some(0);
                self.graft_wake = Some(0);
            }
        }
        // Our hop counts by that parent are unknown now (until a GRAFT
        // gives us another): said at the next tick.
        for id in orphans {
            self.retell(id, 0);
        }
    }

    /// The neighbour on `link` has delivered its own events up to `seq`:
    /// later ones can only come from it on this link.
    pub fn set_floor(&mut self, link: LinkId, seq: u64) {
        if let Some(n) = self.neighbours.get_mut(&link) {
            n.floor = Some(seq);
        }
    }

    /// Whether `id` arriving on `link` is a forgery: while we hear its
    /// origin directly, its new events come from it alone.
    pub fn forged(&self, link: LinkId, id: EventId) -> bool {
        forged(&self.neighbours, link, id)
    }

    /// [`Broadcast::forged`], for an event that came: a copy relayed to us
    /// of what its origin sends us itself. The link that pushed it is
    /// pruned (PRUNE) from the origin's tree.
    pub fn forged_copy(&mut self, out: &mut impl Sink, link: LinkId, id: EventId) -> bool {
        let f = self.forged(link, id);
        if f {
            self.redundant(out, link, id);
        }
        f
    }

    /// `link` has shown it has `id` (it sent it, or announced it): it is
    /// not sent it again.
    fn shown(&mut self, link: LinkId, id: EventId) {
        if let Some(o) = self.origins.get_mut(&id.origin)
            && self.neighbours.contains_key(&link)
        {
            let h = o.has.entry(link).or_default();
            *h = (*h).max(id.seq);
        }
    }

    /// Whether `id` is a copy of an event delivered (or passed) already:
    /// decided from the frame header alone.
    pub fn is_old(&self, id: EventId) -> bool {
        self.origins
            .get(&id.origin)
            .is_some_and(|o| id.seq < o.next)
    }

    /// [`Broadcast::is_copy`], for an event that came on `link`: a copy
    /// pushed to us again prunes that link from its origin's tree.
    pub fn copy(&mut self, out: &mut impl Sink, link: LinkId, id: EventId, signed: bool) -> bool {
        let old = self.is_copy(id, signed);
        if old {
            self.redundant(out, link, id);
        }
        old
    }

    /// A copy of `id` came on `link` that we did not need. Unless we miss
    /// some of the origin's events (when every copy helps), or it answers
    /// our asking, one of the two links that pushed it is told to stop
    /// pushing the origin's events to us (PRUNE): this one, or, if it is our
    /// parent, the one that was quicker this time. Never the origin's own
    /// link, and only while we have a parent. If the link is level with us,
    /// we stop pushing to it too.
    fn redundant(&mut self, out: &mut impl Sink, link: LinkId, id: EventId) {
        self.shown(link, id);
        if self.cfg.flood {
            return;
        }
        let Some(o) = self.origins.get_mut(&id.origin) else {
            return;
        };
        if o.parent.is_none() || o.paused || o.behind() || id.seq <= o.asked_to {
            return;
        }
        let link = if o.parent == Some(link) {
            match o.first_from {
                Some(f) if f != link => f,
                _ => return,
            }
        } else {
            link
        };
        if self
            .neighbours
            .get(&link)
            .is_none_or(|n| n.peer == id.origin)
        {
            return;
        }
        if o.pruned.insert(link) {
            let prune = Msg::Prune { origin: id.origin };
            out.io(Io::Send(link, wire::small(&prune)));
        }
        if id.seq + 1 >= o.next {
            // A copy of the last event we delivered: the link is level with
            // us, and has it from elsewhere too. We stop pushing to it as
            // well (a link that lags behind is pushed to: it needs it).
            o.pruned_by.insert(link);
        }
    }

    /// `link` has `origin`'s events from elsewhere: they are announced to
    /// it, not pushed.
    pub fn on_prune(&mut self, link: LinkId, origin: NodeId) {
        if let Some(o) = self.origins.get_mut(&origin)
            && self.neighbours.contains_key(&link)
        {
            o.pruned_by.insert(link);
        }
    }

    /// `link` wants `origin`'s events pushed to it again, and asks for
    /// what we have of `from..=to` (none if `to < from`).
    pub fn on_graft(
        &mut self,
        out: &mut impl Sink,
        link: LinkId,
        origin: NodeId,
        from: u64,
        to: u64,
        now: Millis,
    ) {
        if let Some(o) = self.origins.get_mut(&origin) {
            o.pruned_by.remove(&link);
            if o.parent == Some(link) {
                // Our parent asks us: it has lost its supply. The next to
                // push the events to us is our parent, and it is pushed
                // to like any other.
                o.parent = None;
                o.parent_fed = false;
                self.retell(origin, now + HOPS_WAIT);
            }
        }
        if from <= to {
            self.on_fetch(out, link, origin, from, to, now);
        }
    }

    /// `link` announces it has delivered these events (each the last of
    /// its origin): one we miss is asked for if it does not come soon.
    /// The link may be closer to their origins than our parent: see
    /// [`Broadcast::on_hops`].
    pub fn on_ihave(&mut self, out: &mut impl Sink, link: LinkId, ids: &[EventId], now: Millis) {
        if !self.neighbours.contains_key(&link) {
            return;
        }
        for id in ids {
            // Of an origin we do not track (any more): it will be, by the
            // membership, if it is real; its next announcement counts.
            let Some(o) = self.origins.get_mut(&id.origin) else {
                continue;
            };
            if o.paused {
                continue;
            }
            o.heard = Some(link);
            let h = o.has.entry(link).or_default();
            *h = (*h).max(id.seq);
            // Announced events are checked ones, each the last of a run
            // its signature covers: one we took and still cannot check
            // came to us with its signature taken off, and is missing too.
            if id.seq < o.done() {
                continue;
            }
            o.announced = o.announced.max(id.seq);
            if !o.announcers.contains(&link) {
                o.announcers.push_back(link);
            }
            if o.graft_at.is_none() {
                let at = now + GRAFT_WAIT;
                o.graft_at = Some(at);
                soonest(&mut self.graft_wake, at);
            }
        }
        for id in ids {
            self.reconsider(out, id.origin, now);
        }
    }

    /// Sends the announcements and hop counts waiting, and the GRAFTs due.
    pub fn tick(&mut self, out: &mut impl Sink, now: Millis) {
        let due = |t: Option<Millis>| t.is_some_and(|t| now >= t);
        if due(self.ihave_at) || due(self.hops_at) {
            self.ihave_at = None;
            self.hops_at = None;
            for (&k, n) in &mut self.neighbours {
                if n.ihave.is_empty() {
                    continue;
                }
                // Not what the link has shown it has meanwhile.
                let ids: Vec<EventId> = std::mem::take(&mut n.ihave)
                    .into_iter()
                    .map(|(origin, seq)| EventId { origin, seq })
                    .filter(|id| {
                        let o = self.origins.get(&id.origin);
                        o.is_some_and(|o| o.has.get(&k).is_none_or(|&h| h < id.seq))
                    })
                    .collect();
                for c in ids.chunks(wire::IHAVE_PER_FRAME) {
                    let m = Msg::Ihave { ids: c.to_vec() };
                    out.io(Io::Send(k, wire::small(&m)));
                }
            }
            for (&k, n) in &mut self.neighbours {
                if n.hops.is_empty() {
                    continue;
                }
                let hops: Vec<(NodeId, u8)> = std::mem::take(&mut n.hops).into_iter().collect();
                for c in hops.chunks(wire::HOPS_PER_FRAME) {
                    let m = Msg::Hops { hops: c.to_vec() };
                    out.io(Io::Send(k, wire::small(&m)));
                }
            }
        }
        if self.graft_wake.is_some_and(|t| now >= t) {
            let due: Vec<NodeId> = self
                .origins
                .iter()
                .filter(|(_, o)| o.graft_at.is_some_and(|t| now >= t))
                .map(|(&id, _)| id)
                .collect();
            for origin in due {
                self.graft(out, origin, now);
            }
            self.graft_wake = None;
            for o in self.origins.values() {
                if let Some(t) = o.graft_at {
                    soonest(&mut self.graft_wake, t);
                }
            }
        }
    }

    /// `origin`'s GRAFT timer is due: if an event announced has not come
    /// (or its parent's link went down), ask the next neighbour that
    /// announced it for what we miss, and to push the rest.
    fn graft(&mut self, out: &mut impl Sink, origin: NodeId, now: Millis) {
        let Some(o) = self.origins.get_mut(&origin) else {
            return;
        };
        o.graft_at = None;
        let unchecked = o.announced >= o.done() && o.announced < o.next;
        let missing = unchecked || (o.announced >= o.next && !o.held.contains_key(&o.next));
        if o.paused || !(missing || o.orphan) || o.grafts >= GRAFT_TRIES {
            o.orphan = false;
            return;
        }
        let id = EventId {
            origin,
            seq: o.next,
        };
        let mut chosen = None;
        for _ in 0..o.announcers.len() {
            let Some(l) = o.announcers.pop_front() else {
                break;
            };
            if !self.neighbours.contains_key(&l) || forged(&self.neighbours, l, id) {
                // Gone, or the origin sends us its events itself.
                continue;
            }
            // Asked again, after the others, if need be.
            o.announcers.push_back(l);
            chosen = Some(l);
            break;
        }
        o.orphan = false;
        let Some(link) = chosen else {
            return;
        };
        // A window from the next event, not only what was announced: what
        // the link delivered since its last IHAVE is neither announced nor
        // pushed to us yet. It sends what it has of it, signatures
        // included (it has only what it checked). From the first event
        // kept back unchecked if an announced one is among them: a copy
        // with its signature settles it (see `accept`).
        let from = if unchecked { o.done() } else { o.next };
        let first = o.held.keys().next().map_or(u64::MAX, |f| f - 1);
        let to = first.min(from.saturating_add(FETCH_MAX - 1));
        o.asked_to = o.asked_to.max(to);
        if missing {
            o.grafts += 1;
            let at = now + GRAFT_WAIT;
            o.graft_at = Some(at);
            soonest(&mut self.graft_wake, at);
        }
        o.pruned.remove(&link);
        // Expected to push from now on: should it go too, graft again.
        o.parent = Some(link);
        o.parent_fed = false;
        let m = Msg::Graft { origin, from, to };
        out.io(Io::Send(link, wire::small(&m)));
        self.retell(origin, now + HOPS_WAIT);
    }

    /// Tells every neighbour, within `at`, how many hops from `origin` our
    /// copies of its events come now (HOPS), if that changed.
    fn retell(&mut self, origin: NodeId, at: Millis) {
        let Some(o) = self.origins.get_mut(&origin) else {
            return;
        };
        let h = depth(o, &self.neighbours, origin).unwrap_or(wire::HOPS_UNKNOWN);
        if h == o.told || self.cfg.flood {
            return;
        }
        o.told = h;
        for n in self.neighbours.values_mut().filter(|n| n.peer != origin) {
            n.hops.insert(origin, h);
        }
        soonest(&mut self.hops_at, at);
    }

    /// `link` says how many hops from each origin its copies of the
    /// origin's events come. Ours follow our parent's; and a neighbour
    /// closer than our parent may become it (`Broadcast::reconsider`).
    pub fn on_hops(
        &mut self,
        out: &mut impl Sink,
        link: LinkId,
        hops: &[(NodeId, u8)],
        now: Millis,
    ) {
        if !self.neighbours.contains_key(&link) {
            return;
        }
        for &(origin, h) in hops {
            let Some(o) = self.origins.get_mut(&origin) else {
                continue;
            };
            // None but the origin is 0 hops from it, and it says nothing
            // of itself.
            if h == 0 || h >= MAX_HOPS {
                o.hops.remove(&link);
            } else {
                o.hops.insert(link, h);
            }
            if o.parent == Some(link) {
                self.retell(origin, now + HOPS_WAIT);
            }
            self.reconsider(out, origin, now);
        }
    }

    /// A neighbour told us of `origin`'s events (HOPS or IHAVE): if one
    /// is [`MOVE_GAIN`] hops closer to the origin than our parent (the
    /// closest, if several), it becomes our parent: it is asked (GRAFT) to
    /// push the origin's events to us, and for what it has that we miss,
    /// and the parent is told to stop (PRUNE). Only a neighbour that has
    /// shown it has the origin's events (sent or announced them to us: a
    /// link below us in the tree never does); not while we miss events
    /// (the tree is being repaired), nor before our parent has pushed us
    /// any, nor sooner than [`MOVE_WAIT`] after our last move in this
    /// tree; never for a tie. A move takes us, and all below us, as many
    /// hops closer to the origin.
    fn reconsider(&mut self, out: &mut impl Sink, origin: NodeId, now: Millis) {
        if self.cfg.flood {
            return;
        }
        let Some(o) = self.origins.get_mut(&origin) else {
            return;
        };
        let Some(p) = o.parent.filter(|_| o.parent_fed) else {
            return;
        };
        let Some(&hp) = o.hops.get(&p) else {
            return;
        };
        if o.paused
            || o.behind()
            || o.moved_at.is_some_and(|t| now < t + MOVE_WAIT)
            || self.neighbours.get(&p).is_none_or(|n| n.peer == origin)
        {
            return;
        }
        let best = o
            .hops
            .iter()
            .filter(|&(&l, _)| {
                l != p
                    && o.has.contains_key(&l)
                    && self.neighbours.get(&l).is_some_and(|n| n.peer != origin)
            })
            .min_by_key(|&(&l, &h)| (h, l));
        let Some((&link, _)) = best.filter(|&(_, &h)| h + MOVE_GAIN <= hp) else {
            return;
        };
        // What it has from the next we miss, should it be ahead of us:
        // the parent stops pushing as soon as it hears.
        let from = o.next;
        let to = from.saturating_add(FETCH_MAX - 1);
        o.moved_at = Some(now);
        o.pruned.remove(&link);
        o.pruned.insert(p);
        // The old parent had the events before us: announced to it.
        o.pruned_by.insert(p);
        o.parent = Some(link);
        out.io(Io::Send(
            link,
            wire::small(&Msg::Graft { origin, from, to }),
        ));
        out.io(Io::Send(p, wire::small(&Msg::Prune { origin })));
        self.retell(origin, now + HOPS_WAIT);
    }

    /// Whether an event, `signed` or not, is a copy with nothing to add:
    /// delivered already, or kept back for a signature and unsigned
    /// itself (a signed copy may settle it: [`Broadcast::accept`]).
    pub fn is_copy(&self, id: EventId, signed: bool) -> bool {
        self.origins
            .get(&id.origin)
            .is_some_and(|o| id.seq < o.done() || (id.seq < o.next && !signed))
    }

    /// Whether we track `origin`'s events.
    pub fn knows(&self, origin: NodeId) -> bool {
        self.origins.contains_key(&origin)
    }

    /// Tracks `origin`, whose next event to deliver is `next`.
    pub fn add(&mut self, origin: NodeId, next: u64) {
        if !self.origins.contains_key(&origin) {
            let o = self.origin(next);
            self.origins.insert(origin, o);
        }
    }

    /// The last event of `origin` delivered (0: none).
    pub fn delivered(&self, origin: NodeId) -> Option<u64> {
        self.origins.get(&origin).map(|o| o.done() - 1)
    }

    /// Each origin's parent in its tree: the link its events are pushed
    /// to us on, once one has pushed any (see `Origin::parent`).
    pub fn parents(&self) -> impl Iterator<Item = (NodeId, LinkId)> + '_ {
        self.origins
            .iter()
            .filter_map(|(&id, o)| Some((id, o.parent.filter(|_| o.parent_fed)?)))
    }

    /// Whether nothing has been delivered or held of `origin`: a member
    /// only heard of.
    pub fn untouched(&self, origin: NodeId) -> bool {
        self.origins
            .get(&origin)
            .is_none_or(|o| o.held.is_empty() && o.next == 1)
    }

    /// `origin`'s key: its signatures can be checked from now on.
    pub fn set_key(&mut self, origin: NodeId, key: VerifyingKey) {
        if let Some(o) = self.origins.get_mut(&origin) {
            o.verifier.set_key(key);
        }
    }

    /// Whether we can check `origin`'s signatures.
    pub fn has_key(&self, origin: NodeId) -> bool {
        self.origins
            .get(&origin)
            .is_some_and(|o| o.verifier.has_key())
    }

    /// Links that brought a forgery since the last call: the node drops
    /// them.
    pub fn take_rejected(&mut self) -> Vec<LinkId> {
        std::mem::take(&mut self.rejected)
    }

    /// Forgets `origin` altogether (it left, or was never real).
    pub fn remove(&mut self, origin: NodeId) {
        if let Some(mut o) = self.origins.remove(&origin) {
            o.unhold_below(&mut self.held_bytes, u64::MAX);
            o.clear_verifier(&mut self.held_bytes);
        }
        for n in self.neighbours.values_mut() {
            n.ihave.remove(&origin);
            n.hops.remove(&origin);
        }
    }

    /// Forgets `origin`, returning where its events had got to (the next
    /// to deliver): should it come back, what we delivered of it must not
    /// be delivered again.
    pub fn forget(&mut self, origin: NodeId) -> Option<u64> {
        let mut o = self.origins.remove(&origin)?;
        o.unhold_below(&mut self.held_bytes, u64::MAX);
        let done = o.done();
        o.clear_verifier(&mut self.held_bytes);
        for n in self.neighbours.values_mut() {
            n.ihave.remove(&origin);
            n.hops.remove(&origin);
        }
        Some(done)
    }

    /// An origin forgotten is heard of again: tracked again, paused, where
    /// it left off (`next`, from [`Broadcast::forget`]).
    pub fn recall(&mut self, origin: NodeId, next: u64) {
        let mut o = self.origin(next);
        o.paused = true;
        self.origins.insert(origin, o);
    }

    /// The node lost `origin`: what was held of it is dropped, and its
    /// events are held from now on until [`Broadcast::resume`]. Whatever
    /// gap it had is moot; if it comes back, the gap since `next` is found
    /// afresh.
    pub fn pause(&mut self, origin: NodeId) {
        if let Some(o) = self.origins.get_mut(&origin) {
            o.unhold_below(&mut self.held_bytes, u64::MAX);
            // What was kept back waiting for a signature comes again.
            o.next = o.done();
            o.clear_verifier(&mut self.held_bytes);
            o.paused = true;
            o.ahead = 0;
            o.lack = None;
            o.announcers.clear();
            o.graft_at = None;
            o.orphan = false;
        }
    }

    /// `origin` is back: what was held of it drains, the rest is fetched
    /// like any gap.
    pub fn resume(&mut self, origin: NodeId, now: Millis) {
        let wait = self.cfg.gap_wait;
        if let Some(o) = self.origins.get_mut(&origin) {
            o.paused = false;
            if o.behind() {
                o.start_gap(now, wait, &mut self.wake);
            }
        }
    }

    /// An event of paused `origin` up to `seq` was announced to us: the
    /// range to fetch, if not asked for already. Announcements of a
    /// paused origin are otherwise ignored ([`Broadcast::on_ihave`]), and
    /// may be all that comes of it: links that pruned its events before
    /// we lost it still hold them back from us. What is fetched is held
    /// like any event of a lost member (the node).
    pub fn announced_paused(&self, origin: NodeId, seq: u64) -> Option<(u64, u64)> {
        let o = self.origins.get(&origin).filter(|o| o.paused)?;
        (seq >= o.next && seq > o.asked_to)
            .then(|| (o.next, seq.min(o.next.saturating_add(FETCH_MAX - 1))))
    }

    /// Whether `origin` is paused.
    pub fn paused(&self, origin: NodeId) -> bool {
        self.origins.get(&origin).is_some_and(|o| o.paused)
    }

    /// We joined through a peer that has delivered `origin`'s events up to
    /// `seq`: start after them; what we held below is theirs already.
    pub fn start_after(&mut self, origin: NodeId, seq: u64) {
        self.add(origin, 1);
        let Some(o) = self.origins.get_mut(&origin) else {
            return;
        };
        o.clear_verifier(&mut self.held_bytes);
        o.next = seq.saturating_add(1);
        o.unhold_below(&mut self.held_bytes, o.next);
    }

    /// A neighbour has delivered `origin`'s events up to `seq`: the range
    /// we have missed, if any, to FETCH (we were cut off, or it is new to
    /// us and everything it said is news).
    pub fn missed(&self, origin: NodeId, seq: u64) -> Option<(u64, u64)> {
        match self.origins.get(&origin) {
            Some(o) if o.paused => None,
            Some(o) if seq >= o.next && !o.behind() => {
                Some((o.next, seq.min(o.next.saturating_add(FETCH_MAX - 1))))
            }
            Some(_) => None,
            None if seq >= 1 => Some((1, seq.min(FETCH_MAX))),
            None => None,
        }
    }

    /// Asks `link` for `origin`'s events `from..=to`.
    pub fn fetch(&mut self, out: &mut impl Sink, link: LinkId, origin: NodeId, from: u64, to: u64) {
        if let Some(o) = self.origins.get_mut(&origin) {
            o.asked_to = o.asked_to.max(to);
        }
        out.io(Io::Send(
            link,
            wire::small(&Msg::Fetch { origin, from, to }),
        ));
    }

    /// An event of a tracked, unpaused origin arrived on `link`: delivered
    /// and relayed if it is the next, held if it is ahead.
    pub fn accept(
        &mut self,
        out: &mut impl Sink,
        link: LinkId,
        ev: Event,
        hash: EventHash,
        frame: Frame,
        now: Millis,
    ) -> Accepted {
        let h = Held {
            ev,
            hash,
            frame,
            link,
            checked: false,
        };
        let ev = &h.ev;
        let wait = self.cfg.gap_wait;
        self.shown(link, ev.id());
        let Some(o) = self.origins.get_mut(&ev.origin) else {
            return Accepted::Held;
        };
        if ev.seq < o.next
            && !o.paused
            && let Some(seal) = &ev.seal
            && let Some((kept, from)) = o.verifier.kept(ev.seq)
        {
            // A signed copy of an event kept back unsigned: it settles
            // whether that one was forged (or had its signature taken off).
            if !o.verifier.signed(&h.hash, seal) {
                self.rejected.push(link);
                return Accepted::Held;
            }
            if kept != h.hash {
                self.rejected.push(from);
            }
            // What was kept back from it on is let go (what follows it
            // comes again), and this copy taken in its place.
            let gone: usize = o
                .verifier
                .drop_from(ev.seq)
                .iter()
                .map(|d| d.frame.len())
                .sum();
            o.charge(&mut self.held_bytes, gone, false);
            o.ahead = o.ahead.max(o.next - 1);
            o.next = ev.seq;
        }
        if ev.seq < o.next || o.paused {
            return Accepted::Held;
        }
        if ev.seq > o.next {
            if !o.behind() {
                o.start_gap(now, wait, &mut self.wake);
            }
            let (origin, seq) = (ev.origin, ev.seq);
            let proof = ev.seal.clone().map(|seal| (h.hash, seal));
            if !o.hold(&mut self.held_bytes, h) {
                // Signed, it shows how far its origin got (a gap that
                // cannot be filled may be skipped that far).
                if let Some((hash, seal)) = proof
                    && seq > o.proven
                {
                    if o.verifier.signed(&hash, &seal) {
                        o.proven = seq;
                    } else {
                        self.rejected.push(link);
                    }
                }
                // Not held (no room, or too far ahead). If it came from its
                // origin, past that link's floor, every other copy of it
                // (relayed, or a neighbour's answer to our FETCH) would be
                // refused as forged, and it would be lost though everyone
                // sent it to us: raise the floor to it, to let them in.
                if let Some(n) = self.neighbours.get_mut(&link)
                    && n.peer == origin
                {
                    n.floor = n.floor.map(|f| f.max(seq));
                }
            }
            return if o.held.contains_key(&o.next) {
                Accepted::HeldNextReady
            } else {
                Accepted::Held
            };
        }
        if !o.turn(now, &mut self.wake) {
            // Over its share: it waits its turn (or, held too much, is
            // dropped and fetched again later).
            o.hold(&mut self.held_bytes, h);
            return Accepted::Held;
        }
        let origin = h.ev.origin;
        self.take(out, h, now);
        match self
            .origins
            .get_mut(&origin)
            .and_then(|o| o.ready.pop_front())
        {
            Some(ev) => Accepted::Delivered(ev),
            None => Accepted::Held,
        }
    }

    /// Takes `h`, next in its origin's order, into its verifier; what is
    /// checked is relayed, kept and made ready for the node.
    fn take(&mut self, out: &mut impl Sink, h: Held, now: Millis) {
        let origin = h.ev.origin;
        let Some(o) = self.origins.get_mut(&origin) else {
            return;
        };
        let (seq, hash, link) = (h.ev.seq, h.hash, h.link);
        let seal = h.ev.seal.clone();
        let n = h.frame.len();
        // The next event goes before those held ahead of it: they make
        // room, furthest first (they come again, or are fetched).
        while !o.charge(&mut self.held_bytes, n, true) {
            let far = o.held.last_key_value().map(|(&s, _)| s);
            let Some(h) = far.and_then(|f| o.unhold(&mut self.held_bytes, f)) else {
                // No room to keep it back: it comes again, later.
                o.ahead = o.ahead.max(seq);
                return;
            };
            let far = h.ev.seq;
            // From its origin, past that link's floor: other copies must
            // be let in now (see `accept`).
            if let Some(nb) = self.neighbours.get_mut(&h.link)
                && nb.peer == origin
            {
                nb.floor = nb.floor.map(|f| f.max(far));
            }
        }
        o.next = seq + 1;
        if o.held.first_key_value().is_some_and(|(&k, _)| k < o.next) {
            // A copy held (while its origin was paused) of what another
            // copy just brought: stale, and it must not count as a gap.
            o.unhold_below(&mut self.held_bytes, o.next);
        }
        let taken = o.verifier.take(seq, hash, seal.as_ref(), link, h);
        let (verified, dropped, again) = match taken {
            Taken::Waiting => return,
            Taken::Verified(hs) => (hs, Vec::new(), None),
            Taken::Refused => {
                // Too much unsigned kept back, or no key yet: as if it
                // never came; it comes again.
                (Vec::new(), Vec::new(), Some(seq))
            }
            Taken::Forged {
                link,
                verified,
                dropped,
                again,
            } => {
                self.rejected.push(link);
                (verified, dropped, Some(again))
            }
        };
        for h in verified {
            self.release(out, h, now);
        }
        let Some(o) = self.origins.get_mut(&origin) else {
            return;
        };
        if let Some(again) = again {
            let refused = dropped.is_empty() && again == seq;
            let gone = if refused {
                n
            } else {
                dropped.iter().map(|h| h.frame.len()).sum()
            };
            o.charge(&mut self.held_bytes, gone, false);
            // What was let go comes again: a gap from `again`.
            o.ahead = o.ahead.max(o.next);
            o.next = again;
        }
    }

    /// Relays a checked event on every other link (never back to its
    /// origin), in full on the links of the origin's tree and as an
    /// announcement on the others, keeps it to answer FETCH, and makes it
    /// ready for the node.
    fn release(&mut self, out: &mut impl Sink, h: Held, now: Millis) {
        let Some(o) = self.origins.get_mut(&h.ev.origin) else {
            return;
        };
        o.charge(&mut self.held_bytes, h.frame.len(), false);
        if o.first_seen == 0 {
            o.first_seen = h.ev.seq;
        }
        let (seq, from) = (h.ev.seq, h.link);
        let was = (o.parent, o.parent_fed);
        // A link closing is nobody's parent: its last events still count.
        if let Some(n) = self.neighbours.get(&from) {
            o.first_from = Some(from);
            // The origin's own link is the parent as soon as its events
            // come on it: they come from it alone.
            if o.parent.is_none() || !o.parent_fed || n.peer == h.ev.origin {
                o.parent = Some(from);
            }
            o.parent_fed |= o.parent == Some(from);
        }
        o.grafts = 0;
        if seq >= o.announced {
            o.announcers.clear();
            o.graft_at = None;
        }
        if !h.frame.is_empty() {
            let mut announced = false;
            for (&k, n) in &mut self.neighbours {
                let has = o.has.get(&k).is_some_and(|&s| s >= seq);
                if n.peer == h.ev.origin || k == from || has {
                    continue;
                }
                // Our parent pushes them to us: it is sent nothing of what
                // came from it. What came another way it is told of, as a
                // pruned link is: it may have lost its own supply and
                // taken us for its parent (each waiting for the other),
                // and every neighbour must hear of every event, in full
                // or announced.
                if o.pruned_by.contains(&k) || Some(k) == o.parent {
                    let s = n.ihave.entry(h.ev.origin).or_default();
                    *s = (*s).max(seq);
                    announced = true;
                } else {
                    out.io(Io::Send(k, h.frame.clone()));
                }
            }
            if announced && self.ihave_at.is_none() {
                self.ihave_at = Some(now + IHAVE_WAIT);
            }
            self.cache.insert(h.ev.id(), h.frame);
        }
        let moved = (o.parent, o.parent_fed) != was;
        let origin = h.ev.origin;
        o.ready.push_back(h.ev);
        if moved {
            self.retell(origin, now + HOPS_WAIT);
        }
    }

    /// An event of a paused origin: held, if it is news.
    pub fn hold_paused(&mut self, link: LinkId, ev: Event, hash: EventHash, frame: Frame) {
        if let Some(o) = self.origins.get_mut(&ev.origin)
            && ev.seq >= o.next
        {
            let h = Held {
                ev,
                hash,
                frame,
                link,
                checked: false,
            };
            o.hold(&mut self.held_bytes, h);
        }
    }

    /// The next event of `origin` checked and ready, taking held ones in
    /// order as far as they go. When none is left, whatever gap remains
    /// starts its wait.
    pub fn drain(&mut self, out: &mut impl Sink, origin: NodeId, now: Millis) -> Option<Event> {
        let wait = self.cfg.gap_wait;
        loop {
            let o = self.origins.get_mut(&origin)?;
            if let Some(ev) = o.ready.pop_front() {
                return Some(ev);
            }
            if o.paused || !o.held.contains_key(&o.next) {
                break;
            }
            if !o.turn(now, &mut self.wake) {
                return None;
            }
            let h = o.unhold(&mut self.held_bytes, o.next)?;
            self.take(out, h, now);
        }
        let o = self.origins.get_mut(&origin)?;
        if o.behind() && o.next > o.fetched_to && o.fetched_to != 0 {
            // What we fetched is in, and more is missing (a long backlog,
            // fetched a window at a time): fetch the next window at once.
            o.fetched_to = 0;
            o.start_gap(now, 0, &mut self.wake);
        } else if o.behind() {
            // A gap remains further on: it starts its own wait.
            o.start_gap(now, wait, &mut self.wake);
        }
        None
    }

    /// Originates an event: ours, next in our sequence. It goes out, to
    /// every link, when [`Broadcast::seal`] signs it (the node does so
    /// before its turn ends), or at once with the run it fills.
    ///
    /// # Errors
    ///
    /// When the event does not fit in a frame; nothing is sent.
    pub fn publish(&mut self, out: &mut impl Sink, body: Body) -> Result<EventId, wire::WireError> {
        let kind = body.kind();
        let payload = wire::payload_from(body)?;
        seal::fits(&payload)?;
        self.seq += 1;
        let hash = crypto::event_hash(self.me, self.seq, kind, &payload);
        if self.sealer.push(self.seq, kind, payload, hash) {
            self.seal(out);
        }
        Ok(EventId {
            origin: self.me,
            seq: self.seq,
        })
    }

    /// Signs what we published and sends it, to every link.
    pub fn seal(&mut self, out: &mut impl Sink) {
        for (id, f) in self.sealer.seal(&self.ident) {
            for &k in self.neighbours.keys() {
                out.io(Io::Send(k, f.clone()));
            }
            self.cache.insert(id, f);
        }
    }

    /// Whether we published events not yet sealed and sent.
    pub fn unsealed(&self) -> bool {
        !self.sealer.is_empty()
    }

    /// A neighbour asks for `origin`'s events `from..=to`: what we have,
    /// and a LACK if we had them and let them go.
    pub fn on_fetch(
        &mut self,
        out: &mut impl Sink,
        link: LinkId,
        origin: NodeId,
        from: u64,
        to: u64,
        now: Millis,
    ) {
        let delivered = if origin == self.me {
            self.seq >= from
        } else {
            self.origins.get(&origin).is_some_and(|o| {
                !o.paused
                    && o.done() > from
                    && from >= o.skipped_to
                    && o.first_seen != 0
                    && from >= o.first_seen
            })
        };
        let lo = EventId { origin, seq: from };
        if delivered && !self.cache.contains(lo) {
            // We had it and let it go (or took it as nothing, and never
            // kept it): say where what we have starts again, so the asker
            // need not wait. (Not having had it says nothing.)
            let oldest = self.cache.first_from(lo).unwrap_or(0);
            out.io(Io::Send(link, wire::small(&Msg::Lack { origin, oldest })));
        }
        let to = to.min(from.saturating_add(FETCH_MAX - 1));
        let Some(n) = self.neighbours.get_mut(&link).filter(|_| from <= to) else {
            return;
        };
        // What fits in one answer and in the asker's share; it asks again
        // for the rest.
        let mut budget = n.fetch.available(now).min(FETCH_BYTES as u64);
        let mut used = 0;
        for f in self.cache.range(origin, from, to) {
            let len = f.len() as u64;
            if len > budget {
                break;
            }
            budget -= len;
            used += len;
            out.io(Io::Send(link, f.clone()));
        }
        n.fetch.take(used, now);
    }

    /// A neighbour cannot send `origin`'s events before `oldest`.
    pub fn on_lack(&mut self, origin: NodeId, oldest: u64) {
        if let Some(o) = self.origins.get_mut(&origin)
            && !o.paused
            && o.behind()
        {
            o.lack = Some(o.lack.map_or(oldest, |l| l.min(oldest)));
        }
    }

    /// Origins whose gap timer is due (the lazy push timers are
    /// [`Broadcast::tick`]'s).
    pub fn due(&self, now: Millis) -> Vec<NodeId> {
        if self.wake.is_none_or(|t| now < t) {
            return Vec::new();
        }
        let due =
            |o: &Origin| (o.behind() && now >= o.fetch_at) || o.rate_at.is_some_and(|t| now >= t);
        self.origins
            .iter()
            .filter(|(_, o)| !o.paused && due(o))
            .map(|(&id, _)| id)
            .collect()
    }

    /// Finds the next gap timer from scratch (after running the due ones).
    pub fn rewake(&mut self) {
        self.wake = None;
        for o in self.origins.values().filter(|o| !o.paused) {
            if o.behind() {
                soonest(&mut self.wake, o.fetch_at);
            }
            if let Some(t) = o.rate_at {
                soonest(&mut self.wake, t);
            }
        }
    }

    /// When a timer is next due (a gap, announcements to send, a GRAFT),
    /// if ever (a lower bound); at once (0) while our own events wait to
    /// be sealed.
    pub fn deadline(&self) -> Option<Millis> {
        if self.unsealed() {
            return Some(0);
        }
        [self.wake, self.ihave_at, self.graft_wake, self.hops_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Asks neighbours for the events missing before the first held one
    /// (or the furthest seen), and skips them once a neighbour has said
    /// they are gone from its cache, or after `gap_giveup`.
    pub fn fill_gap(&mut self, out: &mut impl Sink, origin: NodeId, now: Millis) -> Gap {
        let cfg_giveup = self.cfg.gap_giveup;
        let cfg_wait = self.cfg.gap_wait;
        let Some(o) = self.origins.get_mut(&origin) else {
            return Gap::Waiting;
        };
        if o.paused {
            return Gap::Waiting;
        }
        if o.rate_at.is_some_and(|t| now >= t) {
            // Its turn has come again.
            o.rate_at = None;
            if o.held.contains_key(&o.next) {
                return Gap::Ready;
            }
        }
        if !o.behind() {
            return Gap::Waiting;
        }
        let first = o.held.keys().next().copied();
        let lacking = o.lack.take().filter(|&l| l > o.next);
        let give_up = now >= o.gap_since + cfg_giveup;
        if first.is_some_and(|f| f <= o.next) {
            return Gap::Ready;
        }
        // Events are skipped only up to where the origin's own signature
        // shows it got: a LACK, or an event far ahead, may be a lie, and
        // must not silence the origin.
        let skip_to = if give_up || lacking.is_some() {
            let next = o.next;
            let proven = (o.proven > next).then(|| o.proven.min(next.saturating_add(HOLD_WINDOW)));
            match (lacking, self.vouched(origin).or(proven)) {
                (Some(l), Some(v)) => Some(l.min(v)),
                (_, v) => v,
            }
        } else {
            None
        };
        let Some(o) = self.origins.get_mut(&origin) else {
            return Gap::Waiting;
        };
        let first = o.held.keys().next().copied();
        if let Some(to) = skip_to.filter(|&t| t > o.next) {
            let mut missed = to - o.next;
            // Events kept back for a signature in what is skipped: unless
            // a signature held covers them, they are missed too (another
            // signature would find them out of its run, and blame whoever
            // brought them).
            let done = o.done();
            let covered = o.held.values().any(|h| {
                h.ev.seal
                    .as_ref()
                    .is_some_and(|seal| h.ev.seq.saturating_sub(seal.covers.len() as u64) <= done)
            });
            if done < o.next && !covered {
                missed = to - done;
                let gone: usize = o.verifier.drop_from(0).iter().map(|d| d.frame.len()).sum();
                o.charge(&mut self.held_bytes, gone, false);
            }
            o.next = to;
            o.skipped_to = to;
            if o.held.is_empty() && o.ahead <= to {
                // The event we skipped to was never held: wait for it
                // without a timer; it, or a later one, restarts the gap.
                o.ahead = 0;
            }
            return Gap::Skipped(missed);
        }
        if give_up {
            // Nothing to skip to that its origin signed: what is held may
            // be forged. Let it go and stop looking; the next event from
            // it will tell where it is.
            o.unhold_below(&mut self.held_bytes, u64::MAX);
            o.ahead = 0;
            return Gap::Waiting;
        }
        o.fetch_at = now + cfg_wait;
        soonest(&mut self.wake, o.fetch_at);
        let to = first.map_or(o.ahead, |f| f - 1);
        let to = to.min(o.next.saturating_add(FETCH_MAX - 1));
        o.fetched_to = to;
        o.asked_to = o.asked_to.max(to);
        let f = wire::small(&Msg::Fetch {
            origin,
            from: o.next,
            to,
        });
        for &k in self.neighbours.keys() {
            out.io(Io::Send(k, f.clone()));
        }
        Gap::Waiting
    }

    /// The first of `origin`'s held events that its signature vouches for:
    /// signed itself, or covered by a signed one held after it. Held
    /// events whose signature does not check out are let go, and the
    /// links that brought them reported. Each is checked once.
    fn vouched(&mut self, origin: NodeId) -> Option<u64> {
        let o = self.origins.get_mut(&origin)?;
        let mut bad = Vec::new();
        let mut low: Option<u64> = None;
        let signed: Vec<u64> = o
            .held
            .iter()
            .filter(|(_, h)| h.ev.seal.is_some())
            .map(|(&s, _)| s)
            .collect();
        for &t in &signed {
            let h = o.held.get_mut(&t).expect("held");
            let seal = h.ev.seal.as_ref().expect("signed");
            if !h.checked {
                h.checked = o.verifier.signed(&h.hash, seal);
                if !h.checked {
                    bad.push(t);
                }
            }
        }
        for &t in &bad {
            if let Some(h) = o.unhold(&mut self.held_bytes, t) {
                self.rejected.push(h.link);
            }
        }
        for t in signed {
            let Some(seal) = o.held.get(&t).and_then(|h| h.ev.seal.as_ref()) else {
                continue;
            };
            let mut first = t;
            let from = t.saturating_sub(seal.covers.len() as u64);
            for (i, c) in seal.covers.iter().enumerate() {
                let s = from + i as u64;
                if s < first && o.held.get(&s).is_some_and(|x| x.hash == *c) {
                    first = s;
                }
            }
            low = Some(low.map_or(first, |l| l.min(first)));
        }
        low
    }

    /// A one-line account of `origin`'s events, for tests.
    pub fn describe(&self, origin: NodeId) -> String {
        match self.origins.get(&origin) {
            Some(o) => {
                let held: Vec<u64> = o.held.keys().copied().collect();
                format!("next={} held={held:?}", o.next)
            }
            None => "untracked".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::wire::decode;

    const BOB: NodeId = NodeId(2);
    const CAROL: NodeId = NodeId(3);
    const A: LinkId = LinkId(10);
    const B: LinkId = LinkId(11);

    /// Ours, with no neighbours yet; `flood`: as with `--flood`.
    fn alone(flood: bool) -> Broadcast {
        let cfg = Config {
            gap_wait: 300,
            gap_giveup: 10_000,
            flood,
        };
        Broadcast::new(cfg, Identity::from_seed(1))
    }

    /// Ours, bob on link A and carol on link B.
    fn linked(flood: bool) -> Broadcast {
        let mut b = alone(flood);
        b.neighbour_up(A, BOB);
        b.neighbour_up(B, CAROL);
        b
    }

    /// Ours, lazy push, bob on link A and carol on link B.
    fn bc() -> Broadcast {
        linked(false)
    }

    /// `assert!` that shows all that `out` sent when it fails.
    macro_rules! assert_sent {
        ($out:expr, $ok:expr) => {
            assert!($ok, "{:?}", sent(&$out))
        };
    }

    /// Tracks `origin`, with the key its test events are signed with.
    fn add(b: &mut Broadcast, origin: NodeId, next: u64) {
        b.add(origin, next);
        let key = crypto::verifying(&Identity::from_seed(origin.0).public()).unwrap();
        b.set_key(origin, key);
    }

    /// Event `seq` of `origin`, signed on its own, with `text`.
    fn signed(origin: NodeId, seq: u64, text: &str) -> (Event, EventHash, Frame) {
        let body = Body::Chat {
            room: "lobby".into(),
            text: text.into(),
        };
        let payload = wire::payload_of(&body).unwrap();
        let hash = crypto::event_hash(origin, seq, 3, &payload);
        let sig = Identity::from_seed(origin.0).sign(&crypto::seal_message(&hash, &[]));
        let ev = Event {
            origin,
            seq,
            body,
            seal: Some(wire::Seal {
                covers: Vec::new(),
                sig,
            }),
        };
        let f = wire::frame(&Msg::Event(ev.clone())).unwrap();
        assert_eq!(wire::event_hash(&f[4..]), Some(hash));
        (ev, hash, f)
    }

    fn ev(origin: NodeId, seq: u64) -> (Event, EventHash, Frame) {
        signed(origin, seq, &format!("{seq}"))
    }

    /// Feeds an event, then drains: the sequence numbers delivered.
    fn feed(
        b: &mut Broadcast,
        out: &mut Vec<Io>,
        link: LinkId,
        origin: NodeId,
        seq: u64,
    ) -> Vec<u64> {
        let (e, h, f) = ev(origin, seq);
        let mut got = Vec::new();
        match b.accept(out, link, e, h, f, 0) {
            Accepted::Delivered(e) => got.push(e.seq),
            Accepted::HeldNextReady => {}
            Accepted::Held => return got,
        }
        while let Some(e) = b.drain(out, origin, 0) {
            got.push(e.seq);
        }
        got
    }

    fn sent(out: &[Io]) -> Vec<(LinkId, Msg)> {
        out.iter()
            .filter_map(|io| match io {
                Io::Send(l, f) => Some((*l, decode(&f[4..]).unwrap())),
                _ => None,
            })
            .collect()
    }

    /// An unsigned forgery of bob's next event, kept back for a signature,
    /// does not swallow bob's real one: the real one, signed, settles it,
    /// and the forger's link is reported.
    #[test]
    fn a_signed_copy_settles_an_unsigned_forgery() {
        let mut b = bc();
        let mut out = Vec::new();
        add(&mut b, BOB, 1);
        let forged = Event {
            seal: None,
            ..signed(BOB, 1, "IMPOSTOR").0
        };
        let f = wire::frame(&Msg::Event(forged.clone())).unwrap();
        let h = wire::event_hash(&f[4..]).unwrap();
        assert_eq!(b.accept(&mut out, B, forged, h, f, 0), Accepted::Held);
        // Kept back: an unsigned copy is no news, a signed one is.
        let id = EventId {
            origin: BOB,
            seq: 1,
        };
        assert!(b.is_copy(id, false) && !b.is_copy(id, true));
        let (e, h, f) = signed(BOB, 1, "the real one");
        let Accepted::Delivered(got) = b.accept(&mut out, A, e, h, f, 0) else {
            panic!("the real one is not delivered");
        };
        assert_eq!(got.body, lobby_text("the real one"));
        assert_eq!(b.take_rejected(), vec![B]);
        // A signed copy whose signature is someone else's is a forgery too.
        let forged = Event {
            seal: None,
            ..signed(BOB, 2, "again").0
        };
        let f = wire::frame(&Msg::Event(forged.clone())).unwrap();
        let h = wire::event_hash(&f[4..]).unwrap();
        b.accept(&mut out, B, forged, h, f, 0);
        let (mut e, h, f) = signed(BOB, 2, "bad seal");
        e.seal = signed(CAROL, 2, "bad seal").0.seal;
        assert_eq!(b.accept(&mut out, A, e, h, f, 0), Accepted::Held);
        assert_eq!(b.take_rejected(), vec![A]);
    }

    fn lobby_text(text: &str) -> Body {
        Body::Chat {
            room: "lobby".into(),
            text: text.into(),
        }
    }

    #[test]
    fn in_order_once_and_relayed_elsewhere() {
        let mut b = bc();
        let mut out = Vec::new();
        add(&mut b, CAROL, 1);
        assert_eq!(feed(&mut b, &mut out, B, CAROL, 2), Vec::<u64>::new());
        assert_eq!(feed(&mut b, &mut out, B, CAROL, 3), Vec::<u64>::new());
        assert_eq!(feed(&mut b, &mut out, B, CAROL, 1), vec![1, 2, 3]);
        assert!(b.is_old(EventId {
            origin: CAROL,
            seq: 3
        }));
        assert!(!b.is_old(EventId {
            origin: CAROL,
            seq: 4
        }));
        // Relayed to bob only: never back to carol, whose events they are.
        let s = sent(&out);
        assert_eq!(s.len(), 3);
        assert!(s.iter().all(|(l, _)| *l == A));
    }

    #[test]
    fn a_gap_is_fetched_then_skipped_on_lack() {
        let mut b = bc();
        let mut out = Vec::new();
        add(&mut b, CAROL, 1);
        feed(&mut b, &mut out, B, CAROL, 5);
        assert_eq!(b.deadline(), Some(300));
        assert_eq!(b.due(299), vec![]);
        assert_eq!(b.due(300), vec![CAROL]);
        out.clear();
        assert_eq!(b.fill_gap(&mut out, CAROL, 300), Gap::Waiting);
        // Every neighbour is asked for 1..=4.
        let s = sent(&out);
        assert_eq!(s.len(), 2);
        for (_, m) in s {
            assert_eq!(
                m,
                Msg::Fetch {
                    origin: CAROL,
                    from: 1,
                    to: 4
                }
            );
        }
        b.on_lack(CAROL, 3);
        assert_eq!(b.fill_gap(&mut out, CAROL, 600), Gap::Skipped(2));
        assert_eq!(b.drain(&mut out, CAROL, 600), None);
        assert_eq!(feed(&mut b, &mut out, A, CAROL, 3), vec![3]);
        assert_eq!(feed(&mut b, &mut out, A, CAROL, 4), vec![4, 5]);
    }

    #[test]
    fn a_gap_nobody_fills_is_skipped_after_giveup() {
        let mut b = bc();
        let mut out = Vec::new();
        add(&mut b, CAROL, 1);
        feed(&mut b, &mut out, B, CAROL, 3);
        assert_eq!(b.fill_gap(&mut out, CAROL, 300), Gap::Waiting);
        assert_eq!(b.fill_gap(&mut out, CAROL, 9_999), Gap::Waiting);
        assert_eq!(b.fill_gap(&mut out, CAROL, 10_000), Gap::Skipped(2));
        assert_eq!(b.drain(&mut out, CAROL, 10_000).map(|e| e.seq), Some(3));
    }

    #[test]
    fn fetch_is_answered_from_the_cache_or_lacked() {
        let mut b = bc();
        let mut out = Vec::new();
        add(&mut b, CAROL, 1);
        for s in 1..=3 {
            feed(&mut b, &mut out, B, CAROL, s);
        }
        out.clear();
        b.on_fetch(&mut out, A, CAROL, 2, 9, 0);
        let s = sent(&out);
        assert_eq!(s.len(), 2);
        assert!(matches!(&s[0].1, Msg::Event(e) if e.seq == 2));
        // Asked for what we never had: nothing, not even a LACK.
        out.clear();
        b.on_fetch(&mut out, A, BOB, 1, 5, 0);
        assert!(out.is_empty());
        // Our own events we always had.
        b.publish(&mut out, Body::Leave).unwrap();
        assert!(b.unsealed() && b.deadline() == Some(0));
        b.seal(&mut out);
        out.clear();
        let me = b.me;
        b.on_fetch(&mut out, A, me, 1, 1, 0);
        assert_eq!(sent(&out).len(), 1);
    }

    #[test]
    fn forged_copies_and_paused_origins() {
        let mut b = bc();
        let mut out = Vec::new();
        add(&mut b, BOB, 1);
        b.set_floor(A, 4);
        // Bob's events after 4 come from bob's own link only.
        assert!(b.forged(
            B,
            EventId {
                origin: BOB,
                seq: 5
            }
        ));
        assert!(!b.forged(
            B,
            EventId {
                origin: BOB,
                seq: 4
            }
        ));
        assert!(!b.forged(
            A,
            EventId {
                origin: BOB,
                seq: 5
            }
        ));
        // Paused: held, not delivered, until resumed.
        b.pause(BOB);
        let (e, h, f) = ev(BOB, 1);
        b.hold_paused(B, e, h, f);
        assert_eq!(b.drain(&mut out, BOB, 0), None);
        b.resume(BOB, 0);
        assert_eq!(b.drain(&mut out, BOB, 0).map(|e| e.seq), Some(1));
        // Held while paused, then another copy delivered first: the held
        // one goes, and no gap is left behind it.
        b.pause(BOB);
        let (e, h, f) = ev(BOB, 2);
        b.hold_paused(B, e, h, f);
        b.resume(BOB, 0);
        assert_eq!(feed(&mut b, &mut out, A, BOB, 2), vec![2]);
        assert!(b.describe(BOB).ends_with("held=[]"), "{}", b.describe(BOB));
        assert!(b.due(60_000).is_empty());
    }

    #[test]
    fn forgotten_origins_come_back_where_they_left_off() {
        let mut b = bc();
        let mut out = Vec::new();
        add(&mut b, CAROL, 1);
        feed(&mut b, &mut out, B, CAROL, 1);
        feed(&mut b, &mut out, B, CAROL, 2);
        assert_eq!(b.forget(CAROL), Some(3));
        assert!(!b.knows(CAROL));
        b.recall(CAROL, 3);
        assert!(b.paused(CAROL));
        assert!(b.is_old(EventId {
            origin: CAROL,
            seq: 2
        }));
        assert_eq!(b.delivered(CAROL), Some(2));
    }

    #[test]
    fn announcements_of_a_paused_origin_are_fetched_once() {
        let mut b = bc();
        let mut out = Vec::new();
        add(&mut b, CAROL, 1);
        feed(&mut b, &mut out, B, CAROL, 1);
        // Tracked and not paused: the usual IHAVE and GRAFT do.
        assert_eq!(b.announced_paused(CAROL, 5), None);
        b.pause(CAROL);
        assert_eq!(b.announced_paused(CAROL, 1), None);
        assert_eq!(b.announced_paused(CAROL, 5), Some((2, 5)));
        b.fetch(&mut out, B, CAROL, 2, 5);
        assert_eq!(b.announced_paused(CAROL, 5), None);
        assert_eq!(b.announced_paused(CAROL, 6), Some((2, 6)));
        assert_eq!(b.announced_paused(DAVE, 6), None);
    }

    #[test]
    fn held_bytes_are_bounded() {
        let mut b = bc();
        let mut out = Vec::new();
        add(&mut b, CAROL, 1);
        for s in 2..(MAX_HELD as u64 + 100) {
            feed(&mut b, &mut out, B, CAROL, s);
        }
        assert!(b.origins[&CAROL].held.len() <= MAX_HELD);
        // Too far ahead: not held at all.
        feed(&mut b, &mut out, B, CAROL, HOLD_WINDOW + 10);
        assert!(!b.origins[&CAROL].held.contains_key(&(HOLD_WINDOW + 10)));
        b.remove(CAROL);
        assert_eq!(b.held_bytes, 0);
    }

    /// The next event is taken even when what is held ahead of it fills
    /// the origin's share: the furthest held make room (they are fetched
    /// again). Under lazy push it may come only once.
    #[test]
    fn the_next_event_is_taken_when_held_ones_fill_the_share() {
        let mut b = bc();
        let mut out = Vec::new();
        add(&mut b, CAROL, 1);
        let big = |seq: u64| signed(CAROL, seq, &"x".repeat(4000));
        for seq in 2..200 {
            let (e, h, f) = big(seq);
            assert_eq!(b.accept(&mut out, B, e, h, f, 0), Accepted::Held);
        }
        assert!(b.origins[&CAROL].held_bytes + 4100 > HELD_PER_ORIGIN);
        let (e, h, f) = big(1);
        assert!(matches!(
            b.accept(&mut out, A, e, h, f, 0),
            Accepted::Delivered(e) if e.seq == 1
        ));
        let mut got = Vec::new();
        while let Some(e) = b.drain(&mut out, CAROL, 0) {
            got.push(e.seq);
        }
        assert!(got.len() > 10 && got.windows(2).all(|w| w[1] == w[0] + 1));
    }

    /// Events `seqs` of `origin`, the last signed and vouching for the
    /// others, as an origin seals a run.
    fn run(origin: NodeId, seqs: std::ops::RangeInclusive<u64>) -> Vec<(Event, EventHash, Frame)> {
        let key = Identity::from_seed(origin.0);
        let mut covers = Vec::new();
        let mut evs = Vec::new();
        let last = *seqs.end();
        for seq in seqs {
            let body = lobby_text(&format!("{seq}"));
            let payload = wire::payload_of(&body).unwrap();
            let hash = crypto::event_hash(origin, seq, 3, &payload);
            let seal = (seq == last).then(|| wire::Seal {
                covers: covers.clone(),
                sig: key.sign(&crypto::seal_message(&hash, &covers)),
            });
            covers.push(hash);
            let ev = Event {
                origin,
                seq,
                body,
                seal,
            };
            let f = wire::frame(&Msg::Event(ev.clone())).unwrap();
            evs.push((ev, hash, f));
        }
        evs
    }

    /// A gap skipped (its events are gone from every cache) after events
    /// kept back for a signature in the gap: those are missed too, not
    /// held up against the next signature, which would find them out of
    /// its run and blame the honest link that brought them.
    #[test]
    fn a_skip_lets_go_of_events_whose_signature_is_in_the_gap() {
        let mut b = bc();
        let mut out = Vec::new();
        add(&mut b, CAROL, 1);
        let mut first = run(CAROL, 1..=4);
        let second = run(CAROL, 5..=8);
        first.truncate(2);
        for (e, h, f) in first {
            assert_eq!(b.accept(&mut out, A, e, h, f, 0), Accepted::Held);
        }
        for (e, h, f) in second.into_iter().skip(1) {
            assert_eq!(b.accept(&mut out, A, e, h, f, 0), Accepted::Held);
        }
        b.on_lack(CAROL, 6);
        assert_eq!(b.fill_gap(&mut out, CAROL, 1_000), Gap::Skipped(5));
        let mut got = Vec::new();
        while let Some(e) = b.drain(&mut out, CAROL, 1_000) {
            got.push(e.seq);
        }
        assert_eq!(got, vec![6, 7, 8]);
        assert!(b.take_rejected().is_empty());
        assert_eq!(b.origins[&CAROL].held_bytes, 0);
    }

    #[test]
    fn a_flood_pushes_out_its_own_events_from_the_cache_not_others() {
        let mut b = bc();
        let mut out = Vec::new();
        add(&mut b, CAROL, 1);
        add(&mut b, BOB, 1);
        for s in 1..=10 {
            feed(&mut b, &mut out, A, BOB, s);
        }
        // Carol floods: far more than the cache holds.
        for s in 1..=(CACHE_EVENTS as u64 + 5_000) {
            feed(&mut b, &mut out, B, CAROL, s);
        }
        assert!(b.cache.events <= CACHE_EVENTS);
        // Bob's ten are all still there to answer a FETCH.
        out.clear();
        b.on_fetch(&mut out, B, BOB, 1, 10, 0);
        assert_eq!(sent(&out).len(), 10);
        assert_eq!(b.cache.oldest(CAROL), Some(5_000 + 10 + 1));
    }

    /// The cache lets go of what the plain rule says (the oldest event of
    /// the origin with the most events, then bytes, highest id on a tie),
    /// and its orders always match its contents.
    #[test]
    fn the_cache_lets_go_of_the_oldest_of_the_fullest_origin() {
        let mut c = Cache::default();
        // The rule, kept the plain way: per origin its events (seq, bytes)
        // and their bytes.
        let mut model: BTreeMap<NodeId, (VecDeque<(u64, usize)>, usize)> = BTreeMap::new();
        let (mut events, mut bytes) = (0usize, 0usize);
        let origins = [NodeId(3), NodeId(7), NodeId(9)];
        let mut seq = [0u64; 3];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..(CACHE_EVENTS + 3_000) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly one origin (a stream), some of the others, and now
            // and then a big event, so both bounds bite.
            let i = [0, 0, 0, 0, 0, 0, 1, 2][(x % 8) as usize];
            let len = if x.is_multiple_of(97) {
                40_000
            } else {
                20 + (x >> 8) as usize % 200
            };
            seq[i] += 1;
            let id = EventId {
                origin: origins[i],
                seq: seq[i],
            };
            c.insert(id, Frame::from(vec![0u8; len]));
            let m = model.entry(id.origin).or_default();
            m.0.push_back((id.seq, len));
            m.1 += len;
            events += 1;
            bytes += len;
            loop {
                let fullest = if events > CACHE_EVENTS {
                    model.iter().map(|(&o, m)| (m.0.len(), o)).max()
                } else if bytes > CACHE_BYTES {
                    model.iter().map(|(&o, m)| (m.1, o)).max()
                } else {
                    break;
                };
                let o = fullest.expect("something kept").1;
                let m = model.get_mut(&o).expect("kept");
                let (_, n) = m.0.pop_front().expect("not empty");
                m.1 -= n;
                events -= 1;
                bytes -= n;
                if m.0.is_empty() {
                    model.remove(&o);
                }
            }
            // The orders hold each origin where it was last placed: as
            // it is, unless it is noted stale (each once).
            let mut placed = 0;
            for (&o, m) in &model {
                let k = c.get(o).expect("kept");
                assert_eq!(k.frames.front().map(|f| f.0), m.0.front().map(|f| f.0));
                assert_eq!((k.frames.len(), k.bytes), (m.0.len(), m.1));
                let stale = c.stale.iter().filter(|&&s| s == o).count();
                assert_eq!(stale, usize::from(k.stale));
                if !k.stale {
                    assert_eq!(k.placed, (k.frames.len(), k.bytes));
                }
                if k.placed.0 != 0 {
                    assert!(c.by_count.contains(&(k.placed.0, o)));
                    assert!(c.by_bytes.contains(&(k.placed.1, o)));
                    placed += 1;
                }
            }
            assert_eq!((c.events, c.bytes), (events, bytes));
            assert_eq!(c.per.len(), model.len());
            assert_eq!(c.index.len(), model.len());
            for (i, (o, _)) in c.per.iter().enumerate() {
                assert_eq!(c.index[o], i);
            }
            assert_eq!(c.stale.len(), c.per.iter().filter(|(_, k)| k.stale).count());
            assert_eq!(c.by_count.len(), placed);
            assert_eq!(c.by_bytes.len(), placed);
        }
    }

    #[test]
    fn an_origin_over_its_rate_waits_its_turn() {
        let mut b = bc();
        let mut out = Vec::new();
        add(&mut b, CAROL, 1);
        let mut got = 0;
        for s in 1..=(ORIGIN_BURST + 100) {
            got += feed(&mut b, &mut out, B, CAROL, s).len() as u64;
        }
        // The burst went through at once; the next waits for its turn.
        assert_eq!(got, ORIGIN_BURST);
        let at = b.deadline().unwrap();
        assert!(at > 0 && at <= 1000 / ORIGIN_RATE + 1, "{at}");
        assert_eq!(b.due(at), vec![CAROL]);
        assert_eq!(b.fill_gap(&mut out, CAROL, at), Gap::Ready);
        assert_eq!(
            b.drain(&mut out, CAROL, at).map(|e| e.seq),
            Some(ORIGIN_BURST + 1)
        );
        assert_eq!(b.drain(&mut out, CAROL, at), None);
    }

    const DAVE: NodeId = NodeId(4);
    const EVE: NodeId = NodeId(5);
    const C: LinkId = LinkId(12);

    /// Three neighbours (bob on A, carol on B, dave on C); eve, who is
    /// none of them, is the origin.
    fn three() -> Broadcast {
        let mut b = bc();
        b.neighbour_up(C, DAVE);
        add(&mut b, EVE, 1);
        b
    }

    /// What went out on each link, by kind: full events (their seqs),
    /// announcements, GRAFTs, PRUNEs.
    fn on(out: &[Io], link: LinkId) -> Vec<Msg> {
        sent(out)
            .into_iter()
            .filter(|(l, _)| *l == link)
            .map(|(_, m)| m)
            .collect()
    }

    fn id(origin: NodeId, seq: u64) -> EventId {
        EventId { origin, seq }
    }

    #[test]
    fn a_copy_pushed_twice_is_pruned_and_then_announced() {
        let mut b = three();
        let mut out = Vec::new();
        assert_eq!(feed(&mut b, &mut out, A, EVE, 1), vec![1]);
        // Pushed in full on every other link: a new tree is every link.
        assert!(matches!(&on(&out, B)[..], [Msg::Event(e)] if e.seq == 1));
        assert!(matches!(&on(&out, C)[..], [Msg::Event(e)] if e.seq == 1));
        feed(&mut b, &mut out, A, EVE, 2);
        // Carol lags behind and pushes us what we have: she is told to
        // stop, once, and is still pushed to (she needs it).
        out.clear();
        assert!(b.copy(&mut out, B, id(EVE, 1), true));
        assert!(b.copy(&mut out, B, id(EVE, 1), true));
        assert_eq!(sent(&out), vec![(B, Msg::Prune { origin: EVE })]);
        // Dave pushes the last one we had: level with us, he is told to
        // stop, and is not pushed to either.
        out.clear();
        assert!(b.copy(&mut out, C, id(EVE, 2), true));
        assert_eq!(sent(&out), vec![(C, Msg::Prune { origin: EVE })]);
        // Eve's next events go in full to carol, and to dave as one
        // announcement for all of them, after IHAVE_WAIT; bob, our
        // parent, is sent nothing.
        out.clear();
        feed(&mut b, &mut out, A, EVE, 3);
        feed(&mut b, &mut out, A, EVE, 4);
        assert_eq!(on(&out, B).len(), 2);
        assert!(on(&out, A).is_empty() && on(&out, C).is_empty());
        assert_eq!(b.deadline(), Some(IHAVE_WAIT));
        out.clear();
        b.tick(&mut out, IHAVE_WAIT - 1);
        assert!(out.is_empty());
        b.tick(&mut out, IHAVE_WAIT);
        let ihave = Msg::Ihave {
            ids: vec![id(EVE, 4)],
        };
        assert_eq!(sent(&out), vec![(C, ihave)]);
        assert_eq!(b.deadline(), None);
        // A PRUNE from carol: announced to her too. A GRAFT puts dave
        // back: pushed to again.
        b.on_prune(B, EVE);
        b.on_graft(&mut out, C, EVE, 5, 4, 0);
        out.clear();
        feed(&mut b, &mut out, A, EVE, 5);
        assert!(on(&out, B).is_empty());
        assert_eq!(on(&out, C).len(), 1);
    }

    #[test]
    fn what_came_another_way_is_announced_to_the_parent() {
        let mut b = three();
        let mut out = Vec::new();
        // Bob is our parent for eve's events. Carol pushes the next one:
        // bob may have lost his supply and taken us for his parent, so he
        // is told of it (announced, not pushed in full).
        feed(&mut b, &mut out, A, EVE, 1);
        out.clear();
        feed(&mut b, &mut out, B, EVE, 2);
        assert!(on(&out, A).is_empty());
        out.clear();
        b.tick(&mut out, IHAVE_WAIT);
        let ihave = Msg::Ihave {
            ids: vec![id(EVE, 2)],
        };
        assert_sent!(out, sent(&out).contains(&(A, ihave)));
        // What bob pushes himself he is sent nothing of.
        out.clear();
        feed(&mut b, &mut out, A, EVE, 3);
        b.tick(&mut out, 2 * IHAVE_WAIT);
        assert!(on(&out, A).is_empty());
    }

    #[test]
    fn a_graft_from_our_parent_makes_it_our_parent_no_more() {
        let mut b = three();
        let mut out = Vec::new();
        // Bob pushes eve's events to us: our parent, never pushed to.
        feed(&mut b, &mut out, A, EVE, 1);
        assert!(on(&out, A).is_empty());
        // His supply is gone, and he asks us: we push to him from now on,
        // and the next link to push them to us is our parent.
        b.on_graft(&mut out, A, EVE, 2, FETCH_MAX + 1, 0);
        out.clear();
        feed(&mut b, &mut out, B, EVE, 2);
        assert!(matches!(&on(&out, A)[..], [Msg::Event(e)] if e.seq == 2));
        out.clear();
        feed(&mut b, &mut out, B, EVE, 3);
        assert!(on(&out, B).is_empty());
    }

    #[test]
    fn the_parent_stays_and_a_quicker_link_is_pruned() {
        let mut b = three();
        let mut out = Vec::new();
        // Bob is our parent for eve's events; carol is quicker once (her
        // copy first, bob's second): carol is pruned, not bob.
        feed(&mut b, &mut out, A, EVE, 1);
        assert!(b.copy(&mut out, C, id(EVE, 1), true));
        out.clear();
        feed(&mut b, &mut out, B, EVE, 2);
        assert!(b.copy(&mut out, A, id(EVE, 2), true));
        assert!(on(&out, A).is_empty());
        assert!(on(&out, B).contains(&Msg::Prune { origin: EVE }));
        // Eve herself is no relay: her own link is the parent of her
        // events as soon as they come on it, and is never pruned.
        let mut b = three();
        add(&mut b, CAROL, 1);
        out.clear();
        feed(&mut b, &mut out, A, CAROL, 1);
        feed(&mut b, &mut out, B, CAROL, 2);
        assert!(b.copy(&mut out, A, id(CAROL, 2), true));
        assert!(b.copy(&mut out, B, id(CAROL, 2), true));
        let prunes: Vec<_> = sent(&out)
            .into_iter()
            .filter(|(_, m)| matches!(m, Msg::Prune { .. }))
            .collect();
        assert_eq!(prunes, vec![(A, Msg::Prune { origin: CAROL })]);
    }

    #[test]
    fn an_announced_event_that_does_not_come_is_grafted() {
        let mut b = three();
        let mut out = Vec::new();
        b.on_ihave(&mut out, B, &[id(EVE, 3)], 0);
        b.on_ihave(&mut out, C, &[id(EVE, 2)], 10);
        assert_eq!(b.deadline(), Some(GRAFT_WAIT));
        b.tick(&mut out, GRAFT_WAIT - 1);
        assert!(out.is_empty());
        // The first to announce is asked for what we miss (a window: it
        // may have more by now), and to push.
        b.tick(&mut out, GRAFT_WAIT);
        let graft = |from, to| Msg::Graft {
            origin: EVE,
            from,
            to,
        };
        assert_eq!(sent(&out), vec![(B, graft(1, FETCH_MAX))]);
        // Nothing came: the next that announced it, after as long.
        out.clear();
        b.tick(&mut out, 2 * GRAFT_WAIT);
        assert_eq!(sent(&out), vec![(C, graft(1, FETCH_MAX))]);
        // It comes: no more GRAFTs.
        for s in 1..=3 {
            feed(&mut b, &mut out, C, EVE, s);
        }
        out.clear();
        b.tick(&mut out, 10 * GRAFT_WAIT);
        assert!(
            sent(&out)
                .iter()
                .all(|(_, m)| !matches!(m, Msg::Graft { .. }))
        );
        // Copies of what we asked for are answers: they prune nothing.
        out.clear();
        assert!(b.copy(&mut out, B, id(EVE, 2), true));
        assert!(out.is_empty());
        // An announcement of what we have asks for nothing.
        b.on_ihave(&mut out, A, &[id(EVE, 3)], 2_000);
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn grafts_give_up_after_their_tries() {
        let mut b = three();
        let mut out = Vec::new();
        // A liar announces what it never sends.
        b.on_ihave(&mut out, B, &[id(EVE, 1_000_000)], 0);
        let mut t = 0;
        while let Some(at) = b.deadline() {
            t = at;
            b.tick(&mut out, t);
        }
        let grafts = sent(&out).len();
        assert_eq!(grafts, GRAFT_TRIES as usize);
        assert!(t <= (GRAFT_TRIES as u64 + 1) * GRAFT_WAIT);
        // Each asks for one window at most.
        assert!(
            sent(&out)
                .iter()
                .all(|(_, m)| matches!(m, Msg::Graft { from: 1, to, .. } if *to == FETCH_MAX))
        );
    }

    /// Our parent in eve's tree relays an event whose signature is not
    /// eve's: it is not taken, the link is reported (the node drops it),
    /// and the neighbour that announced eve's events is grafted for it at
    /// once; its copy, the real one, is delivered.
    #[test]
    fn a_forging_parent_is_replaced_and_the_event_grafted() {
        let mut b = three();
        let mut out = Vec::new();
        assert_eq!(feed(&mut b, &mut out, A, EVE, 1), vec![1]);
        b.on_ihave(&mut out, C, &[id(EVE, 1)], 0);
        let (mut e, h, _) = signed(EVE, 2, "forged");
        e.seal = signed(CAROL, 2, "forged").0.seal;
        let f = wire::frame(&Msg::Event(e.clone())).unwrap();
        assert_eq!(b.accept(&mut out, A, e, h, f, 0), Accepted::Held);
        assert_eq!(b.take_rejected(), vec![A]);
        b.neighbour_down(A);
        out.clear();
        b.tick(&mut out, 1);
        let graft = Msg::Graft {
            origin: EVE,
            from: 2,
            to: 1 + FETCH_MAX,
        };
        assert_eq!(sent(&out), vec![(C, graft)]);
        assert_eq!(feed(&mut b, &mut out, C, EVE, 2), vec![2]);
        assert!(b.take_rejected().is_empty());
    }

    /// A relay takes the signature off the last event of a run: all four
    /// wait, unchecked. A neighbour announces the last of them: we miss
    /// its signature, and graft from the first kept back; the signed copy
    /// settles them, and they are delivered once.
    #[test]
    fn an_announced_event_kept_back_unsigned_is_grafted_with_its_signature() {
        let mut b = three();
        let mut out = Vec::new();
        let evs = run(EVE, 1..=4);
        for (i, (e, h, f)) in evs.iter().cloned().enumerate() {
            let (e, f) = if i == 3 {
                let e = Event { seal: None, ..e };
                let f = wire::frame(&Msg::Event(e.clone())).unwrap();
                (e, f)
            } else {
                (e, f)
            };
            assert_eq!(b.accept(&mut out, A, e, h, f, 0), Accepted::Held);
        }
        b.on_ihave(&mut out, C, &[id(EVE, 4)], 0);
        out.clear();
        b.tick(&mut out, GRAFT_WAIT);
        let graft = Msg::Graft {
            origin: EVE,
            from: 1,
            to: FETCH_MAX,
        };
        assert_eq!(sent(&out), vec![(C, graft)]);
        // Its answer: unsigned copies are no news, the signed one settles.
        for (e, h, f) in evs {
            let signed = e.seal.is_some();
            if b.copy(&mut out, C, e.id(), signed) {
                continue;
            }
            let Accepted::Delivered(first) = b.accept(&mut out, C, e, h, f, 0) else {
                panic!("not delivered");
            };
            let mut got = vec![first.seq];
            while let Some(e) = b.drain(&mut out, EVE, 0) {
                got.push(e.seq);
            }
            assert_eq!(got, vec![1, 2, 3, 4]);
        }
        assert_eq!(b.delivered(EVE), Some(4));
        assert!(b.take_rejected().is_empty());
    }

    #[test]
    fn a_graft_is_answered_from_the_cache_and_pushes_again() {
        let mut b = three();
        let mut out = Vec::new();
        feed(&mut b, &mut out, A, EVE, 1);
        b.on_prune(C, EVE);
        feed(&mut b, &mut out, A, EVE, 2);
        out.clear();
        b.on_graft(&mut out, C, EVE, 2, 2, 0);
        assert!(matches!(&on(&out, C)[..], [Msg::Event(e)] if e.seq == 2));
        out.clear();
        feed(&mut b, &mut out, A, EVE, 3);
        assert!(matches!(&on(&out, C)[..], [Msg::Event(e)] if e.seq == 3));
        // An empty range only asks to be pushed to.
        b.on_prune(C, EVE);
        out.clear();
        b.on_graft(&mut out, C, EVE, 4, 3, 0);
        assert!(out.is_empty());
        feed(&mut b, &mut out, A, EVE, 4);
        assert_eq!(on(&out, C).len(), 1);
    }

    #[test]
    fn losing_the_parent_grafts_the_last_announcer_at_once() {
        let mut b = three();
        let mut out = Vec::new();
        feed(&mut b, &mut out, A, EVE, 1);
        b.copy(&mut out, B, id(EVE, 1), true);
        b.copy(&mut out, C, id(EVE, 1), true);
        b.on_ihave(&mut out, C, &[id(EVE, 1)], 5);
        assert_eq!(b.deadline(), None);
        // Bob, who pushed eve's events to us, is gone: dave, who
        // announced them last, is asked to push them, at once, and for
        // what he has after the last we had.
        b.neighbour_down(A);
        assert_eq!(b.deadline(), Some(0));
        out.clear();
        b.tick(&mut out, 7);
        assert_eq!(
            sent(&out),
            vec![(
                C,
                Msg::Graft {
                    origin: EVE,
                    from: 2,
                    to: FETCH_MAX + 1
                }
            )]
        );
        assert_eq!(b.deadline(), None);
        // And should dave go too, carol.
        out.clear();
        b.neighbour_down(C);
        b.tick(&mut out, 8);
        assert!(matches!(&sent(&out)[..], [(l, Msg::Graft { .. })] if *l == B));
    }

    #[test]
    fn the_first_link_is_the_parent_of_origins_never_heard() {
        let mut b = alone(false);
        let mut out = Vec::new();
        // Joining: the welcome link, then the member list.
        b.neighbour_up(A, BOB);
        b.start_after(EVE, 7);
        b.neighbour_up(B, CAROL);
        b.on_ihave(&mut out, B, &[id(EVE, 7)], 0);
        // Eve has said nothing since; the welcome link goes: carol, who
        // announced eve's events, will push them.
        b.neighbour_down(A);
        b.tick(&mut out, 1);
        assert!(matches!(&sent(&out)[..], [(l, Msg::Graft { origin: EVE, .. })] if *l == B));
    }

    #[test]
    fn nothing_is_sent_to_a_link_that_has_it() {
        let mut b = three();
        let mut out = Vec::new();
        b.on_prune(C, EVE);
        // Carol and dave have eve's first two already.
        b.on_ihave(&mut out, B, &[id(EVE, 2)], 0);
        b.on_ihave(&mut out, C, &[id(EVE, 2)], 0);
        for s in 1..=2 {
            feed(&mut b, &mut out, A, EVE, s);
        }
        b.tick(&mut out, 2 * IHAVE_WAIT);
        assert!(on(&out, B).is_empty(), "{:?}", on(&out, B));
        assert!(on(&out, C).is_empty(), "{:?}", on(&out, C));
        feed(&mut b, &mut out, A, EVE, 3);
        b.tick(&mut out, 4 * IHAVE_WAIT);
        assert_eq!(on(&out, B).len(), 1);
        assert_eq!(on(&out, C).len(), 1);
    }

    #[test]
    fn no_prune_while_behind_nor_from_the_origin_nor_when_flooding() {
        // Behind: every copy is welcome.
        let mut b = three();
        let mut out = Vec::new();
        feed(&mut b, &mut out, A, EVE, 1);
        feed(&mut b, &mut out, A, EVE, 3);
        out.clear();
        assert!(b.copy(&mut out, B, id(EVE, 1), true));
        assert!(out.is_empty());
        // Bob's own events, from bob, never; a copy relayed by carol of
        // what bob sends us himself is pruned.
        let mut b = three();
        add(&mut b, BOB, 1);
        b.set_floor(A, 0);
        out.clear();
        feed(&mut b, &mut out, A, BOB, 1);
        assert!(b.forged_copy(&mut out, B, id(BOB, 2)));
        assert!(b.copy(&mut out, A, id(BOB, 1), true));
        let prunes: Vec<_> = sent(&out)
            .into_iter()
            .filter(|(_, m)| !matches!(m, Msg::Event(_)))
            .collect();
        assert_eq!(prunes, vec![(B, Msg::Prune { origin: BOB })]);
        // Flooding prunes nothing.
        let mut b = linked(true);
        add(&mut b, EVE, 1);
        out.clear();
        feed(&mut b, &mut out, A, EVE, 1);
        assert!(b.copy(&mut out, B, id(EVE, 1), true));
        assert!(sent(&out).iter().all(|(_, m)| matches!(m, Msg::Event(_))));
    }

    /// What went out on `link` of the hop counts, GRAFTs and PRUNEs: the
    /// tree's moves.
    fn moves(out: &[Io], link: LinkId) -> Vec<Msg> {
        on(out, link)
            .into_iter()
            .filter(|m| matches!(m, Msg::Graft { .. } | Msg::Prune { .. }))
            .collect()
    }

    fn hops_sent(out: &[Io]) -> Vec<(LinkId, Vec<(NodeId, u8)>)> {
        sent(out)
            .into_iter()
            .filter_map(|(l, m)| match m {
                Msg::Hops { hops } => Some((l, hops)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn hop_counts_follow_the_parent_and_go_to_every_link() {
        let mut b = three();
        let mut out = Vec::new();
        feed(&mut b, &mut out, A, EVE, 1);
        // Bob, our parent, is 4 hops from eve: we are 5, and say so to
        // every link (bob too), together, after HOPS_WAIT.
        out.clear();
        b.on_hops(&mut out, A, &[(EVE, 4)], 100);
        assert_eq!(b.deadline(), Some(100 + HOPS_WAIT));
        b.tick(&mut out, 100 + HOPS_WAIT);
        let five = vec![(EVE, 5)];
        assert_eq!(
            hops_sent(&out),
            vec![(A, five.clone()), (B, five.clone()), (C, five.clone())]
        );
        // Another neighbour's count changes nothing of ours.
        out.clear();
        b.on_hops(&mut out, B, &[(EVE, 4)], 200);
        b.tick(&mut out, 200 + HOPS_WAIT);
        assert_sent!(out, out.is_empty());
        // A new link is told at once.
        const D: LinkId = LinkId(13);
        b.neighbour_up(D, NodeId(6));
        assert_eq!(b.deadline(), Some(0));
        b.tick(&mut out, 300);
        assert_eq!(hops_sent(&out), vec![(D, five)]);
        // The parent is gone: we do not know any more (until a GRAFT
        // gives us another), and say so.
        out.clear();
        b.neighbour_down(A);
        b.tick(&mut out, 400);
        let unknown = vec![(EVE, wire::HOPS_UNKNOWN)];
        assert_sent!(out, hops_sent(&out).contains(&(B, unknown.clone())));
        // Grafted: one more than the link grafted says.
        out.clear();
        b.tick(&mut out, 400 + HOPS_WAIT);
        assert_sent!(out, hops_sent(&out).contains(&(B, vec![(EVE, 5)])));
    }

    /// The origin's own link is one hop from it: said without being told.
    #[test]
    fn the_origins_own_link_is_one_hop() {
        let mut b = three();
        let mut out = Vec::new();
        add(&mut b, BOB, 1);
        feed(&mut b, &mut out, A, BOB, 1);
        out.clear();
        b.tick(&mut out, HOPS_WAIT);
        assert_eq!(
            hops_sent(&out),
            vec![(B, vec![(BOB, 1)]), (C, vec![(BOB, 1)])]
        );
    }

    /// A deep parent: bob pushes eve's events to us from 6 hops away.
    /// Carol says she is 1 hop from eve and announces what we have: we
    /// move to her (GRAFT carol for what she has from our next, PRUNE
    /// bob), and say we are 2 hops from eve now. Eve's events then come
    /// once each and in order, whichever of the two they come from while
    /// the move is under way, and bob is announced to, not pushed to.
    #[test]
    fn a_deep_parent_is_left_for_a_closer_neighbour() {
        let mut b = three();
        let mut out = Vec::new();
        let mut got = Vec::new();
        for s in 1..=3 {
            got.extend(feed(&mut b, &mut out, A, EVE, s));
        }
        b.on_hops(&mut out, A, &[(EVE, 6)], 0);
        b.on_hops(&mut out, C, &[(EVE, 7)], 0);
        b.on_ihave(&mut out, B, &[id(EVE, 3)], 10);
        out.clear();
        b.on_hops(&mut out, B, &[(EVE, 1)], 20);
        let graft = Msg::Graft {
            origin: EVE,
            from: 4,
            to: 3 + FETCH_MAX,
        };
        assert_eq!(moves(&out, B), vec![graft]);
        assert_eq!(moves(&out, A), vec![Msg::Prune { origin: EVE }]);
        assert!(moves(&out, C).is_empty());
        out.clear();
        b.tick(&mut out, 20 + HOPS_WAIT);
        assert!(hops_sent(&out).contains(&(C, vec![(EVE, 2)])));
        // Bob's 4 was on its way; carol's answer brings 4 and 5; bob's 5
        // was on its way too; then carol pushes.
        out.clear();
        got.extend(feed(&mut b, &mut out, A, EVE, 4));
        for (link, s) in [(B, 4), (B, 5), (A, 5), (B, 6), (B, 7)] {
            if b.copy(&mut out, link, id(EVE, s), true) {
                continue;
            }
            got.extend(feed(&mut b, &mut out, link, EVE, s));
        }
        assert_eq!(got, (1..=7).collect::<Vec<u64>>());
        // Nothing went back to carol, our parent now; bob is announced to.
        assert!(on(&out, B).iter().all(|m| !matches!(m, Msg::Event(_))));
        let to_bob: Vec<u64> = on(&out, A)
            .iter()
            .filter_map(|m| match m {
                Msg::Event(e) => Some(e.seq),
                _ => None,
            })
            .collect();
        assert!(to_bob.is_empty(), "pushed to bob: {to_bob:?}");
        // Copies of what carol was asked for prune nothing; bob, pruned
        // already, is not told again.
        assert_sent!(
            out,
            sent(&out)
                .iter()
                .all(|(_, m)| !matches!(m, Msg::Prune { .. } | Msg::Graft { .. }))
        );
        assert_eq!(b.parents().collect::<Vec<_>>(), vec![(EVE, B)]);
    }

    /// A neighbour as close to eve as our parent: whatever it says, and
    /// however often, we stay with our parent (a tie never moves us). One
    /// closer moves us; another closer still, only MOVE_WAIT later.
    #[test]
    fn ties_never_move_and_moves_wait_their_turn() {
        let mut b = three();
        let mut out = Vec::new();
        feed(&mut b, &mut out, A, EVE, 1);
        b.on_hops(&mut out, A, &[(EVE, 5)], 0);
        b.on_ihave(&mut out, B, &[id(EVE, 1)], 0);
        b.on_ihave(&mut out, C, &[id(EVE, 1)], 0);
        for t in 0..50 {
            b.on_hops(&mut out, B, &[(EVE, 5)], t * 100);
            b.on_ihave(&mut out, B, &[id(EVE, 1)], t * 100 + 50);
        }
        assert!(moves(&out, A).is_empty() && moves(&out, B).is_empty());
        // Dave is 2 hops closer: we move to him.
        b.on_hops(&mut out, C, &[(EVE, 3)], 10_000);
        assert!(matches!(&moves(&out, C)[..], [Msg::Graft { .. }]));
        assert_eq!(moves(&out, A), vec![Msg::Prune { origin: EVE }]);
        // Bob, as close as dave now, is not moved back to; carol, closer
        // still, only once MOVE_WAIT has passed.
        out.clear();
        b.on_hops(&mut out, A, &[(EVE, 3)], 10_010);
        b.on_hops(&mut out, B, &[(EVE, 1)], 10_020);
        b.on_ihave(&mut out, B, &[id(EVE, 1)], 10_000 + MOVE_WAIT - 1);
        assert!(moves(&out, B).is_empty() && moves(&out, C).is_empty());
        b.on_ihave(&mut out, B, &[id(EVE, 1)], 10_000 + MOVE_WAIT);
        assert!(matches!(&moves(&out, B)[..], [Msg::Graft { .. }]));
        assert_eq!(moves(&out, C), vec![Msg::Prune { origin: EVE }]);
    }

    /// No move while we miss events (the tree is being repaired), to a
    /// neighbour that never showed it has the origin's events (it may be
    /// below us), to one that never said its hop count (an older peer),
    /// nor when flooding.
    #[test]
    fn no_move_while_behind_nor_to_a_link_that_never_showed_the_events() {
        let mut b = three();
        let mut out = Vec::new();
        feed(&mut b, &mut out, A, EVE, 1);
        b.on_hops(&mut out, A, &[(EVE, 5)], 0);
        // Carol says she is close, but never sent nor announced any.
        b.on_hops(&mut out, B, &[(EVE, 1)], 0);
        // Dave announced them, but never said how far he is.
        b.on_ihave(&mut out, C, &[id(EVE, 1)], 0);
        assert!(moves(&out, B).is_empty() && moves(&out, C).is_empty());
        // Behind: event 3 came, 2 is missing.
        feed(&mut b, &mut out, A, EVE, 3);
        b.on_ihave(&mut out, B, &[id(EVE, 1)], 0);
        assert!(moves(&out, B).is_empty());
        feed(&mut b, &mut out, A, EVE, 2);
        b.on_ihave(&mut out, B, &[id(EVE, 3)], 0);
        assert!(matches!(&moves(&out, B)[..], [Msg::Graft { .. }]));
        // Flooding: nothing moves, nothing is said.
        let mut b = linked(true);
        add(&mut b, EVE, 1);
        out.clear();
        feed(&mut b, &mut out, A, EVE, 1);
        b.on_hops(&mut out, A, &[(EVE, 5)], 0);
        b.on_ihave(&mut out, B, &[id(EVE, 1)], 0);
        b.on_hops(&mut out, B, &[(EVE, 1)], 0);
        b.tick(&mut out, 1_000);
        assert_sent!(
            out,
            sent(&out).iter().all(|(_, m)| matches!(m, Msg::Event(_)))
        );
    }

    #[test]
    fn fetch_answers_are_bounded_per_request_and_per_asker() {
        let mut b = bc();
        let mut out = Vec::new();
        add(&mut b, CAROL, 1);
        let big = "y".repeat(wire::MAX_TEXT);
        for seq in 1..=40 {
            let (ev, h, f) = signed(CAROL, seq, &big);
            let _ = b.accept(&mut out, B, ev, h, f, 0);
        }
        let bytes = |out: &[Io]| -> usize {
            out.iter()
                .map(|io| match io {
                    Io::Send(_, f) => f.len(),
                    _ => 0,
                })
                .sum()
        };
        out.clear();
        b.on_fetch(&mut out, A, CAROL, 1, 40, 0);
        let one = bytes(&out);
        assert!(one > 0 && one <= FETCH_BYTES, "{one}");
        // Asking again and again at once: the asker's share runs out.
        out.clear();
        for _ in 0..100 {
            b.on_fetch(&mut out, A, CAROL, 1, 40, 0);
        }
        assert!(bytes(&out) + one <= FETCH_BURST as usize, "{}", bytes(&out));
        // Another asker has a share of its own.
        out.clear();
        b.on_fetch(&mut out, B, CAROL, 1, 40, 0);
        assert_eq!(bytes(&out), one);
    }
}
