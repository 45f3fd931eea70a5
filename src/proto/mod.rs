//! The protocol: the wire format and one sans-I/O machine per concern.
//!
//! - [`wire`]: frames and messages, pure encode and decode.
//! - [`crypto`]: keys, node ids, event hashes, signatures, and the key a
//!   network secret gives (Ed25519 and BLAKE2s from their crates).
//! - [`link`]: each link's life: dial, the encrypted handshake (Noise
//!   with the network secret) and HELLO/REFUSE with the key's proof,
//!   records, heartbeats, timeouts, the bound on pending handshakes.
//! - [`membership`]: who is in the network: names, addresses, liveness,
//!   suspicion and refutation, census, lost members and their probes.
//! - [`mesh`]: which links to keep: degree, dialling, back-off, shedding.
//! - [`broadcast`]: every event delivered once and in order per origin:
//!   holding, the recent-event cache, FETCH/LACK gap repair, relaying.
//! - [`seal`]: which events a signature covers, and holding an origin's
//!   events until one that covers them is checked.
//! - [`discovery`]: LAN announcements (format, network tag), when to
//!   announce, and which peers heard on the LAN to act on.
//!
//! None of them touches a socket, a clock or a terminal, and none calls
//! another: [`crate::node`] routes what one says to the others. This file
//! holds what they share: ids, time, randomness and small bounded tables.

pub mod broadcast;
pub mod crypto;
pub mod discovery;
pub mod link;
pub mod membership;
pub mod mesh;
pub mod route;
pub mod seal;
pub mod wire;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;

/// Milliseconds since an origin of the caller's choosing.
pub type Millis = u64;

/// A peer's node id: random per run, carried by every event it originates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:016x}", self.0)
    }
}

/// One event in the network: its origin and its place in the origin's
/// sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    pub origin: NodeId,
    pub seq: u64,
}

/// A link, named by the node; the event loop maps it to a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u64);

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "link {}", self.0)
    }
}

/// I/O a machine asks of the event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Io {
    /// Queue this frame on the link.
    Send(LinkId, wire::Frame),
    /// Open a TCP connection for this new link.
    Connect(LinkId, SocketAddr),
    /// Flush what is queued on the link, then close it; it is forgotten
    /// already.
    Close(LinkId),
}

/// Where machines put the I/O they ask for, in order.
pub trait Sink {
    fn io(&mut self, io: Io);
}

impl Sink for Vec<Io> {
    fn io(&mut self, io: Io) {
        self.push(io);
    }
}

impl Sink for VecDeque<Io> {
    fn io(&mut self, io: Io) {
        self.push_back(io);
    }
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

    /// Puts `v` in a random order (Fisher-Yates), so that a stable sort
    /// after it leaves equals at random.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

/// Redial back-off: first delay and cap.
pub const DIAL_BACKOFF: Millis = 500;
pub const DIAL_BACKOFF_MAX: Millis = 30_000;

/// Lost members are probed one at a time, one probe this often; a probe
/// not connected by the next is given up (see the membership and the
/// links), so that giving one up and sending the next take one wake-up.
pub const PROBE_EVERY: Millis = 1_000;

/// How long to wait before dialling again after `failures` failures.
pub fn backoff(failures: u32) -> Millis {
    DIAL_BACKOFF
        .saturating_mul(1 << failures.min(16))
        .min(DIAL_BACKOFF_MAX)
}

/// Lowers the deadline `w` to `t`.
pub fn soonest(w: &mut Option<Millis>, t: Millis) {
    *w = Some(w.map_or(t, |w| w.min(t)));
}

/// One machine's timers, indexed by the machine's own timer enum
/// (`Timer::X as usize`): when each is due, if set.
#[derive(Debug, Clone)]
pub struct Timers<const N: usize>([Option<Millis>; N]);

impl<const N: usize> Default for Timers<N> {
    fn default() -> Self {
        Timers([None; N])
    }
}

impl<const N: usize> Timers<N> {
    pub fn get(&self, t: usize) -> Option<Millis> {
        self.0[t]
    }

    pub fn set(&mut self, t: usize, at: Option<Millis>) {
        self.0[t] = at;
    }

    /// Makes timer `t` due at `at`, or earlier if it already is.
    pub fn soonest(&mut self, t: usize, at: Millis) {
        soonest(&mut self.0[t], at);
    }

    pub fn clear(&mut self, t: usize) {
        self.0[t] = None;
    }

    pub fn is_due(&self, t: usize, now: Millis) -> bool {
        self.0[t].is_some_and(|at| now >= at)
    }

    /// Whether timer `t` is due; if so it is cleared.
    pub fn take_due(&mut self, t: usize, now: Millis) -> bool {
        let due = self.is_due(t, now);
        if due {
            self.0[t] = None;
        }
        due
    }

    /// The earliest timer set.
    pub fn next(&self) -> Option<Millis> {
        self.0.iter().flatten().min().copied()
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up; full
/// to begin with.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: u64,
    /// Tokens are counted up to this time.
    at: Millis,
    rate: u64,
    burst: u64,
}

impl Bucket {
    pub fn new(rate: u64, burst: u64) -> Bucket {
        Bucket {
            tokens: burst,
            at: 0,
            rate: rate.max(1),
            burst,
        }
    }

    fn refill(&mut self, now: Millis) {
        if now <= self.at {
            return;
        }
        let add = (now - self.at).saturating_mul(self.rate) / 1000;
        if add == 0 {
            return;
        }
        self.tokens = self.tokens.saturating_add(add).min(self.burst);
        if self.tokens == self.burst {
            self.at = now;
        } else {
            // Keep the fraction of a token earned but not yet counted.
            self.at += add * 1000 / self.rate;
        }
    }

    /// Tokens there are now.
    pub fn available(&mut self, now: Millis) -> u64 {
        self.refill(now);
        self.tokens
    }

    /// Takes `n` tokens if there are as many; returns whether it did.
    pub fn take(&mut self, n: u64, now: Millis) -> bool {
        self.refill(now);
        if self.tokens < n {
            return false;
        }
        self.tokens -= n;
        true
    }

    /// When `n` tokens will be there (now, if they are).
    pub fn ready_at(&mut self, n: u64, now: Millis) -> Millis {
        self.refill(now);
        let short = n.min(self.burst).saturating_sub(self.tokens);
        now.max(self.at) + short.saturating_mul(1000).div_ceil(self.rate)
    }
}

/// Node ids remembered with a value, at most `cap` of them: when full, the
/// one remembered longest is forgotten first.
#[derive(Debug)]
pub struct Remember<V> {
    cap: usize,
    /// Each id's value and its stamp in `by_age`.
    by_id: HashMap<NodeId, (u64, V)>,
    by_age: BTreeMap<u64, NodeId>,
    stamp: u64,
}

impl<V> Remember<V> {
    pub fn new(cap: usize) -> Remember<V> {
        Remember {
            cap,
            by_id: HashMap::new(),
            by_age: BTreeMap::new(),
            stamp: 0,
        }
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.by_id.contains_key(&id)
    }

    pub fn get(&self, id: NodeId) -> Option<&V> {
        self.by_id.get(&id).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Remembers `v` for `id`, as the newest.
    pub fn insert(&mut self, id: NodeId, v: V) {
        self.remove(id);
        if self.by_id.len() >= self.cap
            && let Some((_, old)) = self.by_age.pop_first()
        {
            self.by_id.remove(&old);
        }
        self.stamp += 1;
        self.by_age.insert(self.stamp, id);
        self.by_id.insert(id, (self.stamp, v));
    }

    pub fn remove(&mut self, id: NodeId) -> Option<V> {
        // An empty table is not hashed into (asked of every event).
        if self.by_id.is_empty() {
            return None;
        }
        let (stamp, v) = self.by_id.remove(&id)?;
        self.by_age.remove(&stamp);
        Some(v)
    }

    /// The ids remembered, longest first.
    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.by_age.values().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remember_is_bounded_through_removals() {
        let mut r: Remember<u64> = Remember::new(4);
        for round in 0..1000u64 {
            let id = NodeId(round % 7);
            r.insert(id, round);
            if round % 3 == 0 {
                r.remove(id);
            }
            assert!(r.by_id.len() <= 4);
            assert_eq!(r.by_id.len(), r.by_age.len());
        }
        // The newest stay; the oldest go first.
        for id in 10..16 {
            r.insert(NodeId(id), id);
        }
        assert!((12..16).all(|id| r.get(NodeId(id)) == Some(&id)));
        assert!(!r.contains(NodeId(10)) && !r.contains(NodeId(11)));
    }

    #[test]
    fn timers_keep_the_earliest() {
        let mut t: Timers<3> = Timers::default();
        assert_eq!(t.next(), None);
        t.soonest(0, 50);
        t.soonest(0, 70);
        t.set(2, Some(40));
        assert_eq!(t.get(0), Some(50));
        assert_eq!(t.next(), Some(40));
        assert!(!t.take_due(0, 49));
        assert!(t.take_due(0, 50));
        assert_eq!(t.get(0), None);
        t.clear(2);
        assert_eq!(t.next(), None);
    }

    #[test]
    fn buckets_refill_at_their_rate_up_to_their_burst() {
        let mut b = Bucket::new(10, 5);
        assert!(b.take(5, 0));
        assert!(!b.take(1, 0));
        assert_eq!(b.ready_at(1, 0), 100);
        assert!(!b.take(1, 99));
        assert!(b.take(1, 100));
        // Fractions are kept: 10 tokens a second is one per 100 ms.
        assert_eq!(b.available(250), 1);
        assert_eq!(b.available(300), 2);
        assert_eq!(b.available(1_000_000), 5);
        assert_eq!(b.ready_at(3, 1_000_000), 1_000_000);
    }

    #[test]
    fn rng_is_deterministic() {
        let (mut a, mut b) = (Rng::new(32), Rng::new(32));
        let mut c = Rng::new(33);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        assert!(xs.iter().all(|&x| x == b.next_u64()));
        assert_ne!(xs[0], c.next_u64());
        assert!((0..1000).all(|_| a.below(7) < 7));
    }
}
