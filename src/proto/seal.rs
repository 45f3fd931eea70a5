//! Seals: an origin's signatures over its own events, made and checked.
//!
//! Signing every event would cost each receiver an Ed25519 verification
//! (tens of microseconds) per event: a burst of a hundred thousand lines
//! would take seconds to check on every peer. So an origin signs one event
//! in [`SEAL_EVERY`], and the last of each burst: the signed event carries
//! the hashes of the unsigned events since the previous signed one, and the
//! signature covers them all. One signature per burst, one hash per event.
//! A run grows past [`SEAL_EVERY`], up to [`SEAL_MOST`], when its signed
//! event's frame has room for the longer seal: a fast stream costs every
//! peer half the signatures (they are most of its CPU time per line).
//!
//! A receiver takes an origin's events in order and keeps the unsigned
//! ones back ([`Verifier`]), neither delivered nor relayed, until the
//! signature that covers them comes and checks out; then they go on
//! together. An unsigned event that does not match its hash in the
//! signature is a forgery: the link it came on is reported, and it and
//! what follows are fetched again (the signature's hashes are kept, to
//! check the copies against). A signature that does not check out is a
//! forgery too. Nothing unsigned waits for ever: at most
//! [`UNVERIFIED_MAX`] events of one origin are kept back.

use super::crypto::{self, EventHash, Identity};
use super::wire::{self, Frame, Seal, WireError};
use super::{EventId, LinkId, NodeId};
use ed25519_dalek::VerifyingKey;
use std::collections::{BTreeMap, VecDeque};

/// An origin signs at least one event in this many: every event has room
/// in its frame for a seal over the `SEAL_EVERY - 1` before it.
pub const SEAL_EVERY: usize = 128;
/// The longest run one signature covers, when the signed event's frame
/// has room: a seal counts its hashes in a byte (255), and a receiver
/// keeps [`UNVERIFIED_MAX`] unsigned events back, so earlier peers take
/// such runs too.
pub const SEAL_MOST: usize = 256;
/// Unsigned events of one origin kept back, at most, waiting for their
/// signature.
pub const UNVERIFIED_MAX: usize = 2 * SEAL_EVERY;
const _: () = assert!(SEAL_MOST - 1 <= UNVERIFIED_MAX && SEAL_MOST - 1 <= u8::MAX as usize);

/// One of our events, published and not sent yet.
#[derive(Debug)]
struct Unsent {
    seq: u64,
    kind: u8,
    payload: Vec<u8>,
    hash: EventHash,
}

/// Our own events on their way out: kept until [`Sealer::seal`], which
/// signs the last of each run of [`SEAL_EVERY`].
#[derive(Debug, Default)]
pub struct Sealer {
    unsent: Vec<Unsent>,
}

impl Sealer {
    /// Adds our event `seq`; returns whether the longest run is full
    /// (seal now).
    pub fn push(&mut self, seq: u64, kind: u8, payload: Vec<u8>, hash: EventHash) -> bool {
        self.unsent.push(Unsent {
            seq,
            kind,
            payload,
            hash,
        });
        self.unsent.len() >= SEAL_MOST
    }

    pub fn is_empty(&self) -> bool {
        self.unsent.is_empty()
    }

    /// The frames of everything unsent, in order, the last of each run
    /// signed by `me`, vouching for the rest of its run. A run is as long
    /// as its signed event's frame has room for, up to [`SEAL_MOST`], and
    /// never shorter than [`SEAL_EVERY`] (unless nothing more is unsent).
    pub fn seal(&mut self, me: &Identity) -> Vec<(EventId, Frame)> {
        let origin = me.id();
        let unsent = std::mem::take(&mut self.unsent);
        let mut frames = Vec::with_capacity(unsent.len());
        let mut todo = &unsent[..];
        while !todo.is_empty() {
            let mut len = todo.len().min(SEAL_MOST);
            while len > SEAL_EVERY && !room(&todo[len - 1].payload, len - 1) {
                len -= 1;
            }
            let (run, next) = todo.split_at(len);
            todo = next;
            let (last, rest) = run.split_last().expect("runs are not empty");
            let covers: Vec<EventHash> = rest.iter().map(|u| u.hash).collect();
            for u in rest {
                frames.push(frame(origin, u, None));
            }
            let sig = me.sign(&crypto::seal_message(&last.hash, &covers));
            frames.push(frame(origin, last, Some(&Seal { covers, sig })));
        }
        frames
    }
}

fn frame(origin: NodeId, u: &Unsent, seal: Option<&Seal>) -> (EventId, Frame) {
    let f = wire::event_frame(origin, u.seq, u.kind, seal, &u.payload)
        .expect("a published event was checked to fit");
    (EventId { origin, seq: u.seq }, f)
}

/// The room a seal over `covers` hashes takes in a frame.
const fn seal_bytes(covers: usize) -> usize {
    2 + 16 * covers + 64
}

/// The room a seal takes in a frame, at most, in a run of [`SEAL_EVERY`].
pub const SEAL_BYTES: usize = seal_bytes(SEAL_EVERY - 1);

/// Whether an event with `payload` fits in a frame with a seal over
/// `covers` hashes.
fn room(payload: &[u8], covers: usize) -> bool {
    1 + 8 + 8 + 1 + seal_bytes(covers) + payload.len() <= wire::MAX_PLAIN
}

/// Whether an event with `payload` fits in a frame with a seal.
pub fn fits(payload: &[u8]) -> Result<(), WireError> {
    if !room(payload, SEAL_EVERY - 1) {
        return Err(WireError::TooLong("event"));
    }
    Ok(())
}

/// What became of an event taken in order.
#[derive(Debug)]
pub enum Taken<T> {
    /// Kept back until a signature covers it.
    Waiting,
    /// These are checked, in order, the one taken last among them.
    Verified(Vec<T>),
    /// Not taken (its origin has too much unsigned kept back, or we have
    /// no key to check it yet): as if it never came; it comes again.
    Refused,
    /// A forgery came on `link`. `verified` were checked before it and go
    /// on; the events from `again` on are let go (`dropped`) and must come
    /// again.
    Forged {
        link: LinkId,
        verified: Vec<T>,
        dropped: Vec<T>,
        again: u64,
    },
}

impl<T> Taken<T> {
    /// Event `seq`, `item`, come on `link`, is a forgery; nothing kept
    /// back goes with it.
    fn forged(link: LinkId, seq: u64, item: T) -> Taken<T> {
        Taken::Forged {
            link,
            verified: Vec::new(),
            dropped: vec![item],
            again: seq,
        }
    }
}

/// One origin's events taken in order and kept back until a signature
/// covers them.
#[derive(Debug)]
pub struct Verifier<T> {
    key: Option<VerifyingKey>,
    waiting: VecDeque<(u64, EventHash, LinkId, T)>,
    /// Hashes the origin signed for events not taken yet (after a
    /// forgery, the copies that come again are checked against them).
    expect: BTreeMap<u64, EventHash>,
}

impl<T> Default for Verifier<T> {
    fn default() -> Self {
        Verifier {
            key: None,
            waiting: VecDeque::new(),
            expect: BTreeMap::new(),
        }
    }
}

impl<T> Verifier<T> {
    pub fn set_key(&mut self, key: VerifyingKey) {
        self.key = Some(key);
    }

    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// Events kept back.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The hash of event `seq`, and the link it came on, if it is kept
    /// back.
    pub fn kept(&self, seq: u64) -> Option<(EventHash, LinkId)> {
        let first = self.waiting.front()?.0;
        let (s, h, l, _) = self.waiting.get(seq.checked_sub(first)? as usize)?;
        (*s == seq).then_some((*h, *l))
    }

    /// Whether `seal` is the origin's signature of the event whose hash is
    /// `hash` (and of those it covers).
    pub fn signed(&self, hash: &EventHash, seal: &Seal) -> bool {
        self.key.as_ref().is_some_and(|k| {
            crypto::verify(k, &crypto::seal_message(hash, &seal.covers), &seal.sig)
        })
    }

    /// Lets go of what is kept back from event `seq` on.
    pub fn drop_from(&mut self, seq: u64) -> Vec<T> {
        let keep = self.waiting.iter().take_while(|w| w.0 < seq).count();
        self.waiting.drain(keep..).map(|(_, _, _, t)| t).collect()
    }

    /// Lets go of everything kept back (the origin is lost or gone).
    pub fn clear(&mut self) -> Vec<T> {
        self.expect.clear();
        self.waiting.drain(..).map(|(_, _, _, t)| t).collect()
    }

    /// Takes the origin's event `seq` (the next in its order), whose hash
    /// is `hash`, with its `seal` if it is signed, as it came on `link`.
    pub fn take(
        &mut self,
        seq: u64,
        hash: EventHash,
        seal: Option<&Seal>,
        link: LinkId,
        item: T,
    ) -> Taken<T> {
        if let Some(want) = self.expect.remove(&seq) {
            if want != hash {
                self.expect.insert(seq, want);
                return Taken::forged(link, seq, item);
            }
            if self.waiting.is_empty() {
                return Taken::Verified(vec![item]);
            }
        }
        let Some(seal) = seal else {
            if self.waiting.len() >= UNVERIFIED_MAX {
                return Taken::Refused;
            }
            self.waiting.push_back((seq, hash, link, item));
            return Taken::Waiting;
        };
        let Some(key) = &self.key else {
            return Taken::Refused;
        };
        if !crypto::verify(key, &crypto::seal_message(&hash, &seal.covers), &seal.sig) {
            return Taken::forged(link, seq, item);
        }
        // The signature vouches for the events first..seq-1, by hash (an
        // honest origin never covers more than came before).
        let Some(first) = seq
            .checked_sub(seal.covers.len() as u64)
            .filter(|&f| f >= 1)
        else {
            return Taken::forged(link, seq, item);
        };
        let mut verified = Vec::with_capacity(self.waiting.len() + 1);
        while let Some((s, h, l, t)) = self.waiting.pop_front() {
            let good = s >= first && seal.covers[(s - first) as usize] == h;
            if !good {
                // Forged on its way here. What the signature vouches for
                // from here on is checked when it comes again.
                for c in s.max(first)..seq {
                    self.expect.insert(c, seal.covers[(c - first) as usize]);
                }
                self.expect.insert(seq, hash);
                let mut dropped = vec![t];
                dropped.extend(self.waiting.drain(..).map(|(_, _, _, t)| t));
                dropped.push(item);
                return Taken::Forged {
                    link: l,
                    verified,
                    dropped,
                    again: s,
                };
            }
            verified.push(t);
        }
        verified.push(item);
        Taken::Verified(verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::wire::{Body, Msg, decode};

    const A: LinkId = LinkId(1);
    const B: LinkId = LinkId(2);

    /// `n` events of `me`, sealed, as (seq, hash, seal) from their frames.
    fn events(me: &Identity, n: u64) -> Vec<(u64, EventHash, Option<Seal>)> {
        let mut s = Sealer::default();
        for seq in 1..=n {
            let body = Body::Chat {
                room: "lobby".into(),
                text: format!("line {seq}"),
            };
            let payload = wire::payload_of(&body).unwrap();
            let hash = crypto::event_hash(me.id(), seq, 3, &payload);
            s.push(seq, 3, payload, hash);
        }
        s.seal(me)
            .into_iter()
            .map(|(id, f)| {
                let Ok(Msg::Event(ev)) = decode(&f[4..]) else {
                    panic!("not an event");
                };
                assert_eq!(
                    wire::event_hash(&f[4..]),
                    Some(crypto::event_hash(
                        me.id(),
                        id.seq,
                        3,
                        &wire::payload_of(&ev.body).unwrap()
                    ))
                );
                (id.seq, wire::event_hash(&f[4..]).unwrap(), ev.seal)
            })
            .collect()
    }

    fn verifier(me: &Identity) -> Verifier<u64> {
        let mut v = Verifier::default();
        v.set_key(crypto::verifying(&me.public()).unwrap());
        v
    }

    #[test]
    fn one_signature_per_run_checks_them_all() {
        let me = Identity::from_seed(1);
        let evs = events(&me, SEAL_MOST as u64 + 3);
        let signed = evs.iter().filter(|e| e.2.is_some()).count();
        assert_eq!(signed, 2);
        let mut v = verifier(&me);
        let mut out = Vec::new();
        for (seq, h, seal) in &evs {
            match v.take(*seq, *h, seal.as_ref(), A, *seq) {
                Taken::Waiting => assert!(seal.is_none()),
                Taken::Verified(got) => out.extend(got),
                t => panic!("{t:?}"),
            }
        }
        assert_eq!(out, (1..=SEAL_MOST as u64 + 3).collect::<Vec<_>>());
    }

    /// The seqs of the signed events among `n` with payloads `size(seq)`
    /// bytes long, sealed together; every frame within bounds.
    fn signed_seqs(n: u64, size: impl Fn(u64) -> usize) -> Vec<u64> {
        let me = Identity::from_seed(1);
        let mut s = Sealer::default();
        for seq in 1..=n {
            let payload = vec![b'x'; size(seq)];
            fits(&payload).unwrap();
            let hash = crypto::event_hash(me.id(), seq, 3, &payload);
            s.push(seq, 3, payload, hash);
        }
        let frames = s.seal(&me);
        assert_eq!(frames.len() as u64, n);
        frames
            .into_iter()
            .filter(|(_, f)| {
                assert!(f.len() - 4 <= wire::MAX_PLAIN);
                let body = &f[4..];
                wire::event_signed(body)
            })
            .map(|(id, _)| id.seq)
            .collect()
    }

    #[test]
    fn a_run_is_as_long_as_its_signed_frame_has_room_for() {
        // Small events: one signature per SEAL_MOST.
        assert_eq!(signed_seqs(600, |_| 10), [256, 512, 600]);
        // The longest event: runs of SEAL_EVERY, never shorter.
        let most = wire::MAX_PLAIN - 18 - SEAL_BYTES;
        assert_eq!(signed_seqs(260, |_| most), [128, 256, 260]);
        // One long event where a run would end: the run ends before it.
        let size = |seq| if seq == 256 { most } else { 10 };
        assert_eq!(signed_seqs(300, size), [255, 300]);
    }

    #[test]
    fn a_forged_event_is_found_and_checked_again() {
        let me = Identity::from_seed(1);
        let evs = events(&me, 4);
        let mut v = verifier(&me);
        assert!(matches!(v.take(1, evs[0].1, None, A, 1), Taken::Waiting));
        // Event 2 forged on link B.
        assert!(matches!(v.take(2, [9; 16], None, B, 2), Taken::Waiting));
        assert!(matches!(v.take(3, evs[2].1, None, A, 3), Taken::Waiting));
        match v.take(4, evs[3].1, evs[3].2.as_ref(), A, 4) {
            Taken::Forged {
                link,
                verified,
                dropped,
                again,
            } => {
                assert_eq!(
                    (link, verified, dropped, again),
                    (B, vec![1], vec![2, 3, 4], 2)
                );
            }
            t => panic!("{t:?}"),
        }
        // The forgery again: refused; the real ones are checked one by one.
        assert!(matches!(
            v.take(2, [9; 16], None, B, 2),
            Taken::Forged { link: B, .. }
        ));
        for (seq, h, _) in &evs[1..] {
            assert!(
                matches!(v.take(*seq, *h, None, A, *seq), Taken::Verified(got) if got == vec![*seq])
            );
        }
    }

    #[test]
    fn a_bad_signature_or_another_key_is_a_forgery() {
        let me = Identity::from_seed(1);
        let other = Identity::from_seed(2);
        let evs = events(&me, 1);
        let mut v = verifier(&other);
        assert!(matches!(
            v.take(1, evs[0].1, evs[0].2.as_ref(), A, 1),
            Taken::Forged { link: A, .. }
        ));
        let mut v = verifier(&me);
        assert!(matches!(
            v.take(1, [0; 16], evs[0].2.as_ref(), A, 1),
            Taken::Forged { link: A, .. }
        ));
        let mut unkeyed: Verifier<u64> = Verifier::default();
        assert!(matches!(
            unkeyed.take(1, evs[0].1, evs[0].2.as_ref(), A, 1),
            Taken::Refused
        ));
    }

    #[test]
    fn unsigned_events_are_kept_back_boundedly() {
        let me = Identity::from_seed(1);
        let mut v = verifier(&me);
        for seq in 1..=UNVERIFIED_MAX as u64 {
            assert!(matches!(v.take(seq, [0; 16], None, A, seq), Taken::Waiting));
        }
        assert!(matches!(v.take(99, [0; 16], None, A, 99), Taken::Refused));
        assert_eq!(v.clear().len(), UNVERIFIED_MAX);
    }
}
