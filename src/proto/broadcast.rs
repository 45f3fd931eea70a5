//! Broadcast: every event delivered once, and in order per origin.
//!
//! Every event carries (origin, seq). A peer delivers an event when it is
//! the next one of its origin, and relays it on every other link (today's
//! strategy: flooding; nothing outside this file depends on it). Later
//! events are held back, earlier ones are copies. A gap is fetched from
//! neighbours' recent-event caches (FETCH); a neighbour that delivered the
//! missing events but no longer has them says so (LACK), and the gap is
//! skipped, with a warning, at once; if nobody answers, after
//! `gap_giveup`. An origin the node declares lost is paused: its events
//! are held, not delivered, until it is back.
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
//! second.

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

/// Gap repair timers, in milliseconds.
#[derive(Debug, Clone)]
pub struct Config {
    /// A gap in a sender's events is fetched after this, and again as often.
    pub gap_wait: Millis,
    /// A gap nobody can fill is skipped after this.
    pub gap_giveup: Millis,
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
}

/// Recent events by id, bounded in count and bytes. When full, the oldest
/// event of the origin with the most events (or bytes) in it goes first:
/// a flood from one origin pushes out its own events, not others'.
///
/// Each origin's events are kept in its order (they are released in it),
/// so adding one is a push at the back and letting one go a pop at the
/// front.
#[derive(Debug, Default)]
struct Cache {
    per: HashMap<NodeId, Kept>,
    /// The origins by events and by bytes kept.
    by_count: BTreeSet<(usize, NodeId)>,
    by_bytes: BTreeSet<(usize, NodeId)>,
    events: usize,
    bytes: usize,
}

/// One origin's events in the cache, in order of sequence number.
#[derive(Debug, Default)]
struct Kept {
    frames: VecDeque<(u64, Frame)>,
    bytes: usize,
}

impl Kept {
    /// Where event `seq` is, or would go.
    fn find(&self, seq: u64) -> Result<usize, usize> {
        match self.frames.back() {
            Some(&(last, _)) if seq > last => Err(self.frames.len()),
            _ => self.frames.binary_search_by_key(&seq, |&(s, _)| s),
        }
    }
}

impl Cache {
    /// The oldest event of `origin` still kept.
    #[cfg(test)]
    fn oldest(&self, origin: NodeId) -> Option<u64> {
        self.per.get(&origin)?.frames.front().map(|&(s, _)| s)
    }

    fn contains(&self, id: EventId) -> bool {
        self.per
            .get(&id.origin)
            .is_some_and(|k| k.find(id.seq).is_ok())
    }

    /// The first event of `id`'s origin kept at or after it.
    fn first_from(&self, id: EventId) -> Option<u64> {
        let k = self.per.get(&id.origin)?;
        let i = k.find(id.seq).unwrap_or_else(|i| i);
        k.frames.get(i).map(|&(s, _)| s)
    }

    /// `origin`'s events `from..=to` that are kept, in order.
    fn range(&self, origin: NodeId, from: u64, to: u64) -> impl Iterator<Item = &Frame> {
        let k = self.per.get(&origin);
        let i = k.map_or(0, |k| k.find(from).unwrap_or_else(|i| i));
        k.into_iter()
            .flat_map(move |k| k.frames.range(i..))
            .take_while(move |&&(s, _)| s <= to)
            .map(|(_, f)| f)
    }

    /// Moves `origin` in the orders by count and bytes: it had `was`
    /// (events, bytes) and has what its entry says now.
    fn reorder(&mut self, origin: NodeId, was: (usize, usize)) {
        self.by_count.remove(&(was.0, origin));
        self.by_bytes.remove(&(was.1, origin));
        match self.per.get(&origin) {
            Some(k) if !k.frames.is_empty() => {
                self.by_count.insert((k.frames.len(), origin));
                self.by_bytes.insert((k.bytes, origin));
            }
            _ => {
                self.per.remove(&origin);
            }
        }
    }

    fn insert(&mut self, id: EventId, frame: Frame) {
        let n = frame.len();
        let k = self.per.entry(id.origin).or_default();
        let was = (k.frames.len(), k.bytes);
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
        self.reorder(id.origin, was);
        while self.events > CACHE_EVENTS {
            let Some(&(_, o)) = self.by_count.last() else {
                break;
            };
            self.evict_oldest(o);
        }
        while self.bytes > CACHE_BYTES {
            let Some(&(_, o)) = self.by_bytes.last() else {
                break;
            };
            self.evict_oldest(o);
        }
    }

    fn evict_oldest(&mut self, origin: NodeId) {
        let Some(k) = self.per.get_mut(&origin) else {
            return;
        };
        let was = (k.frames.len(), k.bytes);
        if let Some((_, f)) = k.frames.pop_front() {
            k.bytes -= f.len();
            self.bytes -= f.len();
            self.events -= 1;
        }
        self.reorder(origin, was);
    }
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
        }
    }

    /// The last sequence number we used (0: we have said nothing).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// `link` is up to `peer`: relay to it from now on.
    pub fn neighbour_up(&mut self, link: LinkId, peer: NodeId) {
        let fetch = Bucket::new(FETCH_RATE, FETCH_BURST);
        self.neighbours.insert(
            link,
            Neighbour {
                peer,
                floor: None,
                fetch,
            },
        );
    }

    pub fn neighbour_down(&mut self, link: LinkId) {
        self.neighbours.remove(&link);
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
        self.neighbours
            .iter()
            .any(|(&k, n)| k != link && n.peer == id.origin && n.floor.is_some_and(|f| id.seq > f))
    }

    /// Whether `id` is a copy of an event delivered (or passed) already:
    /// decided from the frame header alone.
    pub fn is_old(&self, id: EventId) -> bool {
        self.origins
            .get(&id.origin)
            .is_some_and(|o| id.seq < o.next)
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
        self.origins
            .entry(origin)
            .or_insert_with(|| Origin::new(next));
    }

    /// The last event of `origin` delivered (0: none).
    pub fn delivered(&self, origin: NodeId) -> Option<u64> {
        self.origins.get(&origin).map(|o| o.done() - 1)
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
    }

    /// Forgets `origin`, returning where its events had got to (the next
    /// to deliver): should it come back, what we delivered of it must not
    /// be delivered again.
    pub fn forget(&mut self, origin: NodeId) -> Option<u64> {
        let mut o = self.origins.remove(&origin)?;
        o.unhold_below(&mut self.held_bytes, u64::MAX);
        let done = o.done();
        o.clear_verifier(&mut self.held_bytes);
        Some(done)
    }

    /// An origin forgotten is heard of again: tracked again, paused, where
    /// it left off (`next`, from [`Broadcast::forget`]).
    pub fn recall(&mut self, origin: NodeId, next: u64) {
        let mut o = Origin::new(next);
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

    /// Whether `origin` is paused.
    pub fn paused(&self, origin: NodeId) -> bool {
        self.origins.get(&origin).is_some_and(|o| o.paused)
    }

    /// We joined through a peer that has delivered `origin`'s events up to
    /// `seq`: start after them; what we held below is theirs already.
    pub fn start_after(&mut self, origin: NodeId, seq: u64) {
        let o = self.origins.entry(origin).or_insert_with(|| Origin::new(1));
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
    pub fn fetch(&self, out: &mut impl Sink, link: LinkId, origin: NodeId, from: u64, to: u64) {
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
        self.take(out, h);
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
    fn take(&mut self, out: &mut impl Sink, h: Held) {
        let origin = h.ev.origin;
        let Some(o) = self.origins.get_mut(&origin) else {
            return;
        };
        let (seq, hash, link) = (h.ev.seq, h.hash, h.link);
        let seal = h.ev.seal.clone();
        let n = h.frame.len();
        if !o.charge(&mut self.held_bytes, n, true) {
            // No room to keep it back: it comes again, later.
            o.ahead = o.ahead.max(seq);
            return;
        }
        o.next = seq + 1;
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
            self.release(out, h);
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
    /// origin), keeps it to answer FETCH, and makes it ready for the node.
    fn release(&mut self, out: &mut impl Sink, h: Held) {
        let Some(o) = self.origins.get_mut(&h.ev.origin) else {
            return;
        };
        o.charge(&mut self.held_bytes, h.frame.len(), false);
        if o.first_seen == 0 {
            o.first_seen = h.ev.seq;
        }
        if !h.frame.is_empty() {
            for (&k, n) in &self.neighbours {
                if n.peer != h.ev.origin && k != h.link {
                    out.io(Io::Send(k, h.frame.clone()));
                }
            }
            self.cache.insert(h.ev.id(), h.frame);
        }
        o.ready.push_back(h.ev);
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
            self.take(out, h);
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
        let payload = wire::payload_of(&body)?;
        seal::fits(&payload)?;
        self.seq += 1;
        let kind = body.kind();
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

    /// Origins whose gap timer is due.
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

    /// When a gap timer is next due, if ever (a lower bound); at once
    /// (0) while our own events wait to be sealed.
    pub fn deadline(&self) -> Option<Millis> {
        if self.unsealed() {
            return Some(0);
        }
        self.wake
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
            let missed = to - o.next;
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

    fn bc() -> Broadcast {
        let cfg = Config {
            gap_wait: 300,
            gap_giveup: 10_000,
        };
        let mut b = Broadcast::new(cfg, Identity::from_seed(1));
        b.neighbour_up(A, BOB);
        b.neighbour_up(B, CAROL);
        b
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
