//! Identities and the primitives built on them: keys, ids, hashes,
//! signatures, the key a network secret gives. No I/O (key files are read
//! by the event loop), and nothing hand-rolled: Ed25519 and BLAKE2s come
//! from `ed25519-dalek` and `blake2`.
//!
//! - An identity is an Ed25519 key, kept across runs, and a nonce drawn
//!   per run. The node id is the first 8 bytes of
//!   `BLAKE2s("p2pchat id" ‖ key ‖ nonce)`: fresh each run (a departed
//!   member's id is never let in again), and bound to the key, so nobody
//!   can announce someone else's id with their own key.
//! - An event's hash is the first 16 bytes of `BLAKE2s("p2pchat event" ‖
//!   origin ‖ seq ‖ type ‖ payload)`. An origin signs some of its events;
//!   a signature covers the event and the hashes of the unsigned events
//!   just before it (see [`crate::proto::broadcast`]).
//! - A network secret becomes a 32-byte pre-shared key,
//!   `BLAKE2s("p2pchat secret" ‖ secret)`, never sent anywhere.

use super::NodeId;
use blake2::{Blake2s256, Digest};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

/// An Ed25519 public key, as on the wire.
pub type PublicKey = [u8; 32];
/// An Ed25519 signature, as on the wire.
pub type Sig = [u8; 64];
/// An event's hash, as signatures cover it.
pub type EventHash = [u8; 16];

/// A peer's own identity: its key, and this run's nonce and id.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
    public: PublicKey,
    nonce: u64,
    id: NodeId,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({} {})", self.id, fingerprint(&self.public))
    }
}

impl Identity {
    /// The identity of the secret key `seed`, with this run's `nonce`.
    pub fn new(seed: [u8; 32], nonce: u64) -> Identity {
        let key = SigningKey::from_bytes(&seed);
        let public = key.verifying_key().to_bytes();
        Identity {
            key,
            public,
            nonce,
            id: node_id(&public, nonce),
        }
    }

    /// A throwaway identity derived from `seed`, for simulations and
    /// tests.
    pub fn from_seed(seed: u64) -> Identity {
        let mut h = Blake2s256::new();
        h.update(b"p2pchat test identity");
        h.update(seed.to_be_bytes());
        Identity::new(h.finalize().into(), seed.rotate_left(17))
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn public(&self) -> PublicKey {
        self.public
    }

    pub fn nonce(&self) -> u64 {
        self.nonce
    }

    pub fn sign(&self, msg: &[u8]) -> Sig {
        self.key.sign(msg).to_bytes()
    }

    /// This key as an X25519 secret, to open what was sealed to
    /// [`dh_public`] of our public key (private messages).
    pub fn dh_secret(&self) -> [u8; 32] {
        self.key.to_scalar_bytes()
    }
}

/// An Ed25519 public key in its X25519 (Montgomery) form, to seal to;
/// `None` if the bytes are no usable key.
pub fn dh_public(key: &PublicKey) -> Option<[u8; 32]> {
    verifying(key).map(|k| k.to_montgomery().to_bytes())
}

/// The node id a key and nonce make.
pub fn node_id(key: &PublicKey, nonce: u64) -> NodeId {
    let mut h = Blake2s256::new();
    h.update(b"p2pchat id");
    h.update(key);
    h.update(nonce.to_be_bytes());
    let d = h.finalize();
    NodeId(u64::from_be_bytes(d[..8].try_into().expect("8 bytes")))
}

/// A key ready to check signatures with; `None` if the bytes are no
/// Ed25519 key, or a weak one (of small order: its signatures would
/// prove nothing).
pub fn verifying(key: &PublicKey) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(key).ok().filter(|k| !k.is_weak())
}

/// Whether `sig` is `key`'s signature of `msg` (RFC 8032; weak keys are
/// refused once, by [`verifying`], rather than on every signature as
/// `verify_strict` does at a third more cost).
pub fn verify(key: &VerifyingKey, msg: &[u8], sig: &Sig) -> bool {
    let check = || key.verify(msg, &Signature::from_bytes(sig)).is_ok();
    SHARED.with_borrow_mut(|shared| {
        let Some(answers) = shared else {
            return check();
        };
        let mut h = Blake2s256::new();
        h.update(key.as_bytes());
        h.update(sig);
        h.update(msg);
        let asked: [u8; 32] = h.finalize().into();
        if answers.len() >= SHARED_MAX {
            answers.clear();
        }
        *answers.entry(asked).or_insert_with(check)
    })
}

/// Answers [`verify`] remembers at most, when sharing them.
const SHARED_MAX: usize = 1 << 20;

thread_local! {
    /// [`verify`]'s answers in this thread, once [`share_checks`] asked
    /// for it; `None` (not shared) in a peer.
    static SHARED: RefCell<Option<HashMap<[u8; 32], bool>>> = const { RefCell::new(None) };
}

/// Makes [`verify`] remember its answers in this thread, so that many
/// nodes run in one process (the simulation) check each signature once
/// between them rather than once each. The answers are those of a pure
/// function, keyed by a hash of key, signature and message; a peer never
/// calls this, as it checks each signature once anyway.
pub fn share_checks() {
    SHARED.with_borrow_mut(|shared| {
        shared.get_or_insert_with(HashMap::new);
    });
}

/// The hash of an event: its origin, sequence number, type and payload.
pub fn event_hash(origin: NodeId, seq: u64, kind: u8, payload: &[u8]) -> EventHash {
    let mut h = Blake2s256::new();
    h.update(b"p2pchat event");
    h.update(origin.0.to_be_bytes());
    h.update(seq.to_be_bytes());
    h.update([kind]);
    h.update(payload);
    h.finalize()[..16].try_into().expect("16 bytes")
}

/// What an origin signs for its event `hash`, which also vouches for the
/// unsigned events just before it, whose hashes are `covers`.
pub fn seal_message(hash: &EventHash, covers: &[EventHash]) -> Vec<u8> {
    let mut m = Vec::with_capacity(24 + 16 * (covers.len() + 1));
    m.extend_from_slice(b"p2pchat seal v2\0");
    m.extend_from_slice(hash);
    for c in covers {
        m.extend_from_slice(c);
    }
    m
}

/// What a peer signs in HELLO: that it holds its key, on this link
/// (`binding`: the encrypted handshake's hash, or zeros without a
/// secret), as this id and name.
pub fn hello_message(binding: &[u8; 32], id: NodeId, name: &str, port: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + name.len());
    m.extend_from_slice(b"p2pchat hello v2\0");
    m.extend_from_slice(binding);
    m.extend_from_slice(&id.0.to_be_bytes());
    m.extend_from_slice(&port.to_be_bytes());
    m.extend_from_slice(name.as_bytes());
    m
}

/// The pre-shared key a network secret gives.
pub fn psk(secret: &[u8]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    h.update(b"p2pchat secret");
    h.update(secret);
    h.finalize().into()
}

/// A key as people compare it out of band: 16 bytes of its hash, in
/// groups of four hex digits.
pub fn fingerprint(key: &PublicKey) -> String {
    let mut h = Blake2s256::new();
    h.update(b"p2pchat fingerprint");
    h.update(key);
    let d = h.finalize();
    d[..16]
        .chunks(2)
        .map(|c| format!("{:02x}{:02x}", c[0], c[1]))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bound_to_keys_and_fresh_per_run() {
        let a = Identity::new([1; 32], 5);
        let b = Identity::new([1; 32], 6);
        let c = Identity::new([2; 32], 5);
        assert_eq!(a.public(), b.public());
        assert_ne!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        assert_eq!(a.id(), node_id(&a.public(), 5));
        assert_eq!(Identity::from_seed(9).id(), Identity::from_seed(9).id());
    }

    #[test]
    fn signatures_verify_only_for_their_key_and_message() {
        let a = Identity::new([1; 32], 5);
        let b = Identity::new([2; 32], 5);
        let h = event_hash(a.id(), 1, 3, b"hi");
        let m = seal_message(&h, &[]);
        let sig = a.sign(&m);
        let ka = verifying(&a.public()).unwrap();
        let kb = verifying(&b.public()).unwrap();
        assert!(verify(&ka, &m, &sig));
        assert!(!verify(&kb, &m, &sig));
        let h2 = event_hash(a.id(), 1, 3, b"ho");
        assert!(!verify(&ka, &seal_message(&h2, &[]), &sig));
        assert!(!verify(&ka, &seal_message(&h, &[h2]), &sig));
    }

    #[test]
    fn fingerprints_are_stable_and_readable() {
        let f = fingerprint(&[3; 32]);
        assert_eq!(f, fingerprint(&[3; 32]));
        assert_ne!(f, fingerprint(&[4; 32]));
        assert_eq!(f.len(), 8 * 4 + 7);
        assert_ne!(psk(b"a"), psk(b"b"));
    }
}
