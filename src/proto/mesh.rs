//! Mesh: which links to keep.
//!
//! A peer keeps `degree` links: below that it dials members (a few at a
//! time, paced, backing off from members and addresses that fail), above
//! `max_degree` it sheds one, politely, never a newcomer's only link. Small
//! networks end up fully meshed, large ones keep a bounded random mesh.
//!
//! Every dial, to keep the mesh or to probe a lost member, draws on one
//! budget ([`DIAL_RATE`] a second, [`DIAL_BURST`] at once), and an address
//! that fails is backed off from, whoever claims it: however many members
//! claim an address, a peer never turns into a connection flood against
//! it. An address whose host answers that nobody is there (the dial is
//! refused, or what answers is no p2pchat peer) [`ADDR_GIVE_UP`] times in
//! a row is given up for [`ADDR_DEAD`]. One that does not answer at all is
//! never given up: that is a network down or split, not a peer gone, and
//! lost members are probed there (at the membership's pace, past the
//! back-off) until the network is back.
//!
//! A member whose dial got no answer may sit behind a NAT that drops
//! connections coming in: the next try is hole punching. We ask our
//! neighbours (PUNCH_ASK); one that links to the member tells both ends
//! (PUNCH) to dial each other from their listening ports at once, and each
//! NAT takes the other's SYN for the answer to its own (TCP simultaneous
//! open). Where that fails too, the user is told once.

use super::link::Links;
use super::{Bucket, LinkId, Millis, NodeId, Rng, Timers, backoff};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

/// Dials a second, and at once.
pub const DIAL_RATE: u64 = 2;
pub const DIAL_BURST: u64 = 8;
/// Having asked our neighbours to have a member and us punch, ask again
/// no sooner than this (nobody may link to it).
const PUNCH_WAIT: Millis = 3_000;
/// PUNCH_ASKs passed on (each a PUNCH to both ends), a second and at once.
const PUNCH_RELAY_RATE: u64 = 4;
const PUNCH_RELAY_BURST: u64 = 16;
/// An address refused this often in a row is given up for a while.
pub const ADDR_GIVE_UP: u32 = 6;
pub const ADDR_DEAD: Millis = 600_000;
/// Addresses whose failures are remembered, at most.
const ADDRS: usize = 4096;

/// After a dial fails, wait this long before the next one to someone else.
const DIAL_PACE: Millis = 250;
/// Dials under way at once, at most.
const MAX_DIALS: usize = 3;
/// A member only heard of, whose address failed this often, is forgotten.
pub const DIAL_GIVE_UP: u32 = 6;
/// A link younger than this is not shed (it may be a newcomer's only one).
const SHED_MIN_AGE: Millis = 2_000;
/// After a peer sheds our link, leave it alone this long.
const SHED_BACKOFF: Millis = 60_000;

/// Link counts.
#[derive(Debug, Clone)]
pub struct Config {
    /// Links a peer tries to keep.
    pub degree: usize,
    /// Above this many links a peer sheds one.
    pub max_degree: usize,
}

/// Dials to one member that failed, and when to try again.
#[derive(Debug, Default, Clone, Copy)]
struct Dial {
    failures: u32,
    after: Millis,
    /// A dial got no answer: punch next time.
    punch: bool,
    /// The user was told punching failed.
    told: bool,
}

/// A member to link to, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chosen {
    pub id: NodeId,
    pub addr: SocketAddr,
    /// Ask the neighbours for a punch rather than dial.
    pub punch: bool,
}

/// Dials to one address that failed in a row, those of them that were
/// answered (refused), and when to dial it again.
#[derive(Debug, Default, Clone, Copy)]
struct Addr {
    failures: u32,
    refused: u32,
    after: Millis,
}

impl Addr {
    /// Given up: refused `ADDR_GIVE_UP` times, and not dialled since.
    fn dead(&self, now: Millis) -> bool {
        self.refused >= ADDR_GIVE_UP && self.after > now
    }
}

#[derive(Clone, Copy)]
enum T {
    /// Look for more links again.
    Maintain,
    /// A link gets old enough to be shed.
    Shed,
}
const TIMERS: usize = 2;

/// One peer's mesh policy. See the module documentation.
#[derive(Debug)]
pub struct Mesh {
    cfg: Config,
    dials: BTreeMap<NodeId, Dial>,
    /// Failures per address, whoever claims it.
    addrs: HashMap<SocketAddr, Addr>,
    budget: Bucket,
    /// PUNCH_ASKs passed on.
    relays: Bucket,
    timers: Timers<TIMERS>,
    rng: Rng,
}

impl Mesh {
    pub fn new(cfg: Config, seed: u64) -> Mesh {
        Mesh {
            cfg,
            dials: BTreeMap::new(),
            addrs: HashMap::new(),
            budget: Bucket::new(DIAL_RATE, DIAL_BURST),
            relays: Bucket::new(PUNCH_RELAY_RATE, PUNCH_RELAY_BURST),
            timers: Timers::default(),
            rng: Rng::new(seed),
        }
    }

    /// Members to link to now, from `candidates` (members with an address,
    /// not suspected), to get back to `degree` links: `links` says whom we
    /// link to or dial already. A member whose dial got no answer is to be
    /// punched, when we have neighbours to ask. If some must wait for
    /// their back-off, the maintain timer is set for the first of them.
    pub fn choose(
        &mut self,
        links: &Links,
        candidates: impl Iterator<Item = (NodeId, SocketAddr)>,
        now: Millis,
    ) -> Vec<Chosen> {
        let busy = links.busy();
        let mut have = busy.len();
        if have >= self.cfg.degree {
            return Vec::new();
        }
        let mut ready = Vec::new();
        let mut later: Option<Millis> = None;
        for (id, addr) in candidates {
            if busy.contains(&id) {
                continue;
            }
            let member = self.dials.get(&id).map_or(0, |d| d.after);
            let after = member.max(self.addrs.get(&addr).map_or(0, |d| d.after));
            if after <= now {
                ready.push((id, addr));
            } else {
                later = Some(later.map_or(after, |t| t.min(after)));
            }
        }
        ready.sort_unstable();
        let mut dialling = links.dialling();
        let mut chosen = Vec::new();
        while have < self.cfg.degree && !ready.is_empty() && dialling < MAX_DIALS {
            if !self.budget.take(1, now) {
                later = Some(self.budget.ready_at(1, now));
                break;
            }
            dialling += 1;
            let i = self.rng.below(ready.len() as u64) as usize;
            let (id, addr) = ready.swap_remove(i);
            let d = self.dials.get_mut(&id);
            let punch = links.up_count() > 0 && d.as_ref().is_some_and(|d| d.punch);
            if let Some(d) = d.filter(|_| punch) {
                // No link comes of asking: not again for a while.
                d.after = now + PUNCH_WAIT.max(backoff(d.failures));
                later = Some(later.map_or(d.after, |t| t.min(d.after)));
            }
            chosen.push(Chosen { id, addr, punch });
            have += 1;
        }
        if have < self.cfg.degree
            && let Some(t) = later
        {
            self.timers.soonest(T::Maintain as usize, t);
        }
        chosen
    }

    /// Whether a dial to `addr` may go out now (a redial): it is not in
    /// back-off, and the budget has room.
    pub fn may_dial(&mut self, addr: SocketAddr, now: Millis) -> bool {
        let free = self.addrs.get(&addr).is_none_or(|d| d.after <= now);
        free && self.budget.take(1, now)
    }

    /// Whether a probe of a lost member, or a punch, may go to `addr` now:
    /// the address is not given up, and the budget has room. Back-off from
    /// an address that does not answer is no reason to wait: the
    /// membership paces its probes, punches come when asked for, and the
    /// network may be back any moment.
    pub fn may_probe(&mut self, addr: SocketAddr, now: Millis) -> bool {
        self.usable(addr, now) && self.budget.take(1, now)
    }

    /// Whether `addr` is not given up (see [`Mesh::may_probe`]).
    pub fn usable(&self, addr: SocketAddr, now: Millis) -> bool {
        self.addrs.get(&addr).is_none_or(|d| !d.dead(now))
    }

    /// How often in a row `addr` refused our dials, unless it is given up.
    pub fn refusals(&self, addr: SocketAddr, now: Millis) -> Option<u32> {
        match self.addrs.get(&addr) {
            Some(d) if d.dead(now) => None,
            Some(d) => Some(d.refused),
            None => Some(0),
        }
    }

    /// Our dial to `id` failed: back off from it, and pace the next dial
    /// (a list of dead addresses must not turn into a connection storm).
    /// A dial nobody `answered` (it timed out: a NAT may drop what comes
    /// in) is followed by punching. Returns how often it has failed in a
    /// row.
    pub fn failed(&mut self, id: NodeId, answered: bool, now: Millis) -> u32 {
        let d = self.dials.entry(id).or_default();
        d.failures = d.failures.saturating_add(1);
        d.after = now + backoff(d.failures);
        d.punch |= !answered;
        let failures = d.failures;
        self.paced(now);
        failures
    }

    /// A punch to `id` got no answer either: returns whether to tell the
    /// user (once per member, until it is reached).
    pub fn punch_failed(&mut self, id: NodeId) -> bool {
        let d = self.dials.entry(id).or_default();
        !std::mem::replace(&mut d.told, true)
    }

    /// Whether to pass on a PUNCH_ASK now (a bounded rate in all).
    pub fn may_relay_punch(&mut self, now: Millis) -> bool {
        self.relays.take(1, now)
    }

    /// A dial to `addr` failed (whoever we meant to reach): back off from
    /// the address; if it was `refused` (its host answered, and no peer
    /// is there), give it up after `ADDR_GIVE_UP` such failures in a row.
    /// Pace the next dial.
    pub fn addr_failed(&mut self, addr: SocketAddr, refused: bool, now: Millis) {
        if self.addrs.len() >= ADDRS && !self.addrs.contains_key(&addr) {
            self.addrs.retain(|_, d| d.after > now);
        }
        if self.addrs.len() < ADDRS || self.addrs.contains_key(&addr) {
            let d = self.addrs.entry(addr).or_default();
            d.failures = d.failures.saturating_add(1);
            d.refused = if refused {
                d.refused.saturating_add(1)
            } else {
                0
            };
            d.after = now
                + if d.refused >= ADDR_GIVE_UP {
                    ADDR_DEAD
                } else {
                    backoff(d.failures)
                };
        }
        self.paced(now);
    }

    /// A dial that was no member's failed: pace the next one.
    pub fn paced(&mut self, now: Millis) {
        self.timers.soonest(T::Maintain as usize, now + DIAL_PACE);
    }

    /// We reached `id` at `addr`: their failures are forgotten (not the
    /// member's back-off).
    pub fn reached(&mut self, id: NodeId, addr: SocketAddr) {
        if let Some(d) = self.dials.get_mut(&id) {
            d.failures = 0;
            d.told = false;
        }
        self.addrs.remove(&addr);
    }

    /// `id` is back from being lost: dial it as if new.
    pub fn reset(&mut self, id: NodeId) {
        self.dials.remove(&id);
    }

    /// `id` shed our link: leave it alone for a while.
    pub fn shed_by(&mut self, id: NodeId, now: Millis) {
        self.dials.entry(id).or_default().after = now + SHED_BACKOFF;
    }

    /// `id` is no longer a member.
    pub fn forget(&mut self, id: NodeId) {
        self.dials.remove(&id);
    }

    /// Links to shed to get down to `max_degree`, never `keep` and never a
    /// link younger than `SHED_MIN_AGE`; if only young ones are left, the
    /// shed timer is set for when the first settles.
    pub fn shed(&mut self, links: &Links, keep: Option<LinkId>, now: Millis) -> Vec<LinkId> {
        let mut count = links.up_count();
        if count <= self.cfg.max_degree {
            return Vec::new();
        }
        let mut old: Vec<LinkId> = Vec::new();
        let mut young: Option<Millis> = None;
        for (k, l) in links.up_links() {
            if Some(k) == keep {
                continue;
            }
            if now >= l.opened + SHED_MIN_AGE {
                old.push(k);
            } else {
                young = Some(young.map_or(l.opened, |y| y.min(l.opened)));
            }
        }
        let mut shed = Vec::new();
        while count > self.cfg.max_degree {
            if old.is_empty() {
                // Only newcomers' links: look again when one has settled.
                if let Some(y) = young {
                    self.timers.soonest(T::Shed as usize, y + SHED_MIN_AGE);
                }
                break;
            }
            let i = self.rng.below(old.len() as u64) as usize;
            shed.push(old.remove(i));
            count -= 1;
        }
        shed
    }

    /// Which timers are due: (look for links, shed links). Both cleared.
    pub fn tick(&mut self, now: Millis) -> (bool, bool) {
        (
            self.timers.take_due(T::Maintain as usize, now),
            self.timers.take_due(T::Shed as usize, now),
        )
    }

    pub fn deadline(&self) -> Option<Millis> {
        self.timers.next()
    }

    /// Whether `id` is in back-off.
    pub fn waiting(&self, id: NodeId, now: Millis) -> bool {
        self.dials.get(&id).is_some_and(|d| d.after > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Io;

    fn links() -> Links {
        Links::for_test(NodeId(1))
    }

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    fn mesh(degree: usize, max_degree: usize) -> Mesh {
        Mesh::new(Config { degree, max_degree }, 3)
    }

    fn cands(n: u64) -> Vec<(NodeId, SocketAddr)> {
        (10..10 + n).map(|i| (NodeId(i), addr(i as u16))).collect()
    }

    #[test]
    fn dials_up_to_the_degree_a_few_at_a_time() {
        let mut m = mesh(6, 12);
        let mut ls = links();
        let mut io: Vec<Io> = Vec::new();
        let got = m.choose(&ls, cands(20).into_iter(), 0);
        assert_eq!(got.len(), MAX_DIALS);
        for c in &got {
            assert!(!c.punch);
            ls.dial(&mut io, c.addr, Some(c.id), 0);
        }
        // Those dials are under way: no more until they finish.
        assert!(m.choose(&ls, cands(20).into_iter(), 0).is_empty());
        // Up to the degree, never more.
        let dialled: Vec<(LinkId, NodeId)> = io
            .iter()
            .filter_map(|i| match i {
                Io::Connect(k, _) => Some((*k, ls.get(*k).unwrap().target.unwrap())),
                _ => None,
            })
            .collect();
        for (k, peer) in dialled {
            ls.up(k, peer);
        }
        let more = m.choose(&ls, cands(20).into_iter(), 0);
        assert_eq!(more.len(), 3);
    }

    #[test]
    fn failures_back_off_and_pace() {
        let mut m = mesh(2, 4);
        let ls = links();
        assert_eq!(m.failed(NodeId(10), true, 0), 1);
        assert_eq!(m.failed(NodeId(10), true, 0), 2);
        assert!(m.waiting(NodeId(10), 1_999));
        assert!(!m.waiting(NodeId(10), 2_000));
        assert_eq!(m.deadline(), Some(DIAL_PACE));
        // In back-off: not chosen; the pace after a failure is kept (a
        // later back-off does not push it out), then the timer says when
        // it may be.
        let got = m.choose(&ls, cands(1).into_iter(), 100);
        assert!(got.is_empty());
        assert_eq!(m.deadline(), Some(DIAL_PACE));
        assert_eq!(m.tick(DIAL_PACE), (true, false));
        assert!(m.choose(&ls, cands(1).into_iter(), DIAL_PACE).is_empty());
        assert_eq!(m.deadline(), Some(2_000));
        m.reached(NodeId(10), addr(10));
        assert_eq!(m.failed(NodeId(10), true, 0), 1);
    }

    #[test]
    fn a_member_that_does_not_answer_is_punched_through_a_neighbour() {
        let mut m = mesh(6, 12);
        let mut ls = links();
        let mut io: Vec<Io> = Vec::new();
        let bob = NodeId(10);
        let c = m.choose(&ls, cands(1).into_iter(), 0);
        assert!(!c[0].punch);
        // Timed out (behind a NAT, perhaps). Alone, we can only dial.
        m.failed(bob, false, 5_000);
        let c = m.choose(&ls, cands(1).into_iter(), 6_000);
        assert!(!c[0].punch);
        // With a neighbour to ask: a punch, asked for once per PUNCH_WAIT.
        m.failed(bob, false, 11_000);
        let k = ls.dial(&mut io, addr(50), None, 11_000);
        ls.up(k, NodeId(50));
        let c = m.choose(&ls, cands(1).into_iter(), 13_000);
        assert!(c.len() == 1 && c[0].punch, "{c:?}");
        assert!(m.choose(&ls, cands(1).into_iter(), 13_001).is_empty());
        assert!(m.deadline().is_some_and(|t| t <= 13_000 + PUNCH_WAIT));
        assert!(m.choose(&ls, cands(1).into_iter(), 16_000)[0].punch);
        // Failed: told once, until reached.
        assert!(m.punch_failed(bob));
        assert!(!m.punch_failed(bob));
        m.reached(bob, addr(10));
        assert!(m.punch_failed(bob));
        // Passing PUNCH_ASKs on is bounded.
        let n = (0..100).filter(|_| m.may_relay_punch(20_000)).count();
        assert_eq!(n as u64, PUNCH_RELAY_BURST);
    }

    #[test]
    fn a_dead_address_is_given_up_whoever_claims_it() {
        let mut m = mesh(6, 12);
        let ls = links();
        let dead = addr(99);
        let many = (10..5000).map(|i| (NodeId(i), dead));
        // However many members claim it, one dial at a time goes to it,
        // with back-off, and after ADDR_GIVE_UP failures none for a while.
        let mut dials = 0;
        let mut now = 0;
        while now < 120_000 {
            let got = m.choose(&ls, many.clone(), now);
            for _ in &got {
                m.addr_failed(dead, true, now);
            }
            dials += got.len();
            now += 100;
        }
        assert!(
            dials <= 3 * ADDR_GIVE_UP as usize,
            "{dials} dials in 2 minutes"
        );
        assert!(!m.may_dial(dead, now));
        assert!(!m.may_probe(dead, now));
    }

    #[test]
    fn an_address_that_does_not_answer_is_never_given_up() {
        let mut m = mesh(6, 12);
        let far = addr(98);
        // A network split for ten minutes: every dial times out.
        let mut now = 0;
        for _ in 0..600 {
            m.addr_failed(far, false, now);
            now += 1_000;
            assert!(m.usable(far, now));
        }
        // Redials back off; probes go on at the membership's pace.
        assert!(!m.may_dial(far, now));
        assert!(m.may_probe(far, now));
        // A refusal in between starts the count of refusals again.
        for _ in 0..ADDR_GIVE_UP - 1 {
            m.addr_failed(far, true, now);
        }
        m.addr_failed(far, false, now);
        m.addr_failed(far, true, now);
        assert!(m.usable(far, now));
    }

    #[test]
    fn dials_draw_on_one_budget() {
        let mut m = mesh(6, 12);
        let n = (0..100).filter(|&i| m.may_dial(addr(1000 + i), 0)).count();
        assert_eq!(n as u64, DIAL_BURST);
        assert!(m.may_dial(addr(1), 1000 / DIAL_RATE));
    }

    #[test]
    fn sheds_old_links_above_the_bound_never_the_kept_one() {
        let mut m = mesh(1, 2);
        let mut ls = links();
        let mut io = Vec::new();
        let mut all = Vec::new();
        for i in 0..5u64 {
            let k = ls.accepted(&mut io, addr(1), i * 1_000);
            ls.up(k, NodeId(100 + i));
            all.push(k);
        }
        // At 3_500 only the first two are 2 s old: shed them, wait for more.
        let shed = m.shed(&ls, Some(all[0]), 3_500);
        assert_eq!(shed, vec![all[1]]);
        assert_eq!(m.deadline(), Some(4_000));
        let shed = m.shed(&ls, None, 10_000);
        assert_eq!(shed.len(), 3);
    }
}
