//! Seeded random-bytes test: half a million random and mutated frames
//! thrown at the frame decoder and at protocol cores in every state.
//!
//! Valid messages of every kind are built with `wire::frame`, then mutated
//! (bit flips, truncation, splices, length-field edits, huge counts,
//! sequence numbers near `u64::MAX`, invalid UTF-8, names with control
//! characters) and fed to `frame_len` and `decode`, and as frame bodies to a
//! [`Core`] over several links: before HELLO, after a valid HELLO, and while
//! the core joins through us. Timer ticks at advancing times come in
//! between. After every input all actions are drained and checked: no
//! panic, every frame the core sends is a well-formed frame, the actions of
//! one input are bounded in count and bytes, and the core's members, links
//! and heap stay bounded.
//!
//! Ids come mostly from a pool of test identities whose keys the generator
//! holds, so that HELLOs are proved, JOINs and member lists carry the keys
//! that make their ids, and events are signed (alone, or unsigned and then
//! covered by a later signature) as a real peer signs them: they reach past
//! the signature checks into the core. Mixed in: random ids bound to no
//! key, ids bound to keys that check nothing (of small order, or no point),
//! proofs and seals by the wrong key, seals that vouch for events never
//! sent, and the mutations, which break any signature they touch.
//!
//! The seed is fixed unless `FUZZ_SEED=random` is set, and always printed;
//! `FUZZ_SEED=<n> cargo test --test fuzz_core` runs seed n, and
//! `FUZZ_FRAMES=<n>` changes the number of frames (500,000: before signed
//! identities a million took as long; a link now costs a core a signature
//! check and a signature of its own, and links come and go all the time).

use p2pchat::app::rooms::Cmd;
use p2pchat::node::{
    Action, Command, Config, LinkId, MAX_MEMBERS, Millis, Node as Core, NodeId, Rng, Show,
};
use p2pchat::proto::EventId;
use p2pchat::proto::crypto::{self, EventHash, Identity};
use p2pchat::proto::mesh;
use p2pchat::proto::wire::rooms::{Line, Op, RoomEvent, RoomState};
use p2pchat::proto::wire::{
    self, Body, Entry, Event, Hello, Ident, MAX_FRAME, MEMBERS_PER_FRAME, Msg, Refusal, Seal,
    WireError,
};
mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;
use util::frames::{self, chat, ident, lobby, signed, who};

// ---------------------------------------------------------------------------
// Heap accounting: bytes live on this thread, so a core's memory can be
// bounded while other tests run on other threads.

struct Counting;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

fn account(n: i64) {
    let _ = LIVE.try_with(|c| c.set(c.get() + n));
}

/// Heap bytes allocated and not yet freed by the current thread.
fn live_bytes() -> i64 {
    LIVE.with(Cell::get)
}

// SAFETY: every call is passed straight to the system allocator; the
// counter is a const-initialised thread-local that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            account(l.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            account(l.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        account(-(l.size() as i64));
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            account(new as i64 - l.size() as i64);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

// ---------------------------------------------------------------------------
// Bounds asserted on every core.

/// Heap a core may hold, whatever it is sent. Its own bounded stores: the
/// event cache (1 MiB), member and tombstone tables (4096 each), held-back
/// events; 32 MiB leaves ample room for the bookkeeping around them.
const CORE_HEAP_MAX: i64 = 32 << 20;
/// Links a core has open or dialling at once, in these runs (at most
/// `ACCEPTED` accepted by us, plus its own dials).
const LINKS_MAX: usize = 64;
/// Links we accept on each core.
const ACCEPTED: usize = 8;

/// Actions one input may cause: a FETCH answer (256 frames); for a member
/// list (256 entries), a FETCH or a SUSPECT flooded on every link per
/// entry; a frame relayed on every link; a welcome's member list and the
/// dials after it.
fn actions_max(links: usize, members: usize) -> usize {
    MEMBERS_PER_FRAME * (links + 2) + 4 * (links + 1) + members.div_ceil(MEMBERS_PER_FRAME) + 64
}

/// Bytes queued by one input: a FETCH answers at most the 1 MiB cache, one
/// frame goes out on each link, a member list is a few frames.
fn bytes_max(links: usize, members: usize) -> usize {
    (1 << 20)
        + (links + 4) * (MAX_FRAME + 4)
        + members.div_ceil(MEMBERS_PER_FRAME) * (MAX_FRAME + 4)
}

// ---------------------------------------------------------------------------
// Generator of messages and mutations.

/// The run's seed: `FUZZ_SEED=<n>` (decimal or 0x hex), `FUZZ_SEED=random`
/// for a new one each run, else a fixed one so that `make test` is the same
/// every time.
fn seed() -> u64 {
    let var = std::env::var("FUZZ_SEED").unwrap_or_default();
    let var = var.trim();
    let seed = if var == "random" {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)
    } else if let Some(h) = var.strip_prefix("0x") {
        u64::from_str_radix(h, 16).expect("FUZZ_SEED is a number")
    } else if !var.is_empty() {
        var.parse().expect("FUZZ_SEED is a number")
    } else {
        0x005e_ed0f_f0cc_0001
    };
    eprintln!("fuzz_core seed: FUZZ_SEED={seed}");
    seed
}

/// Marker put in strings, replaced by invalid UTF-8 by a mutation.
const BAD: &str = "~~";
const BAD_UTF8: [&[u8]; 5] = [
    b"\xc3\x28",
    b"\xff\xfe",
    b"\xed\xa0",
    b"\xc0\xaf",
    b"\xf8\x88",
];

/// Test identities every core hears of: their keys sign HELLOs, JOINs and
/// events that check out, so that inputs reach past the signature checks
/// into the core.
const POOL: usize = 24;
/// Peers that say HELLO on the links a core accepts, or welcome it: each
/// with its name, port and proof made once (a HELLO costs the core a
/// signature check, and it is sent one on most of the links it accepts;
/// proving each afresh would take more time than the core).
const PEERS: usize = 64;
/// Where the core's own identity is in [`Gen::keys`].
const ME_KEY: usize = 0;
/// Unsigned events of one origin the generator lets one signature cover,
/// at most (an honest peer: 31).
const RUN_MAX: usize = 40;

/// Whose an id is.
#[derive(Clone, Copy, Debug)]
enum Who {
    /// One of [`Gen::keys`]: what it says can be signed.
    Key(usize),
    /// An id bound to one of [`Gen::bad`], with this nonce: nothing it
    /// says can be checked.
    Bad(usize, u64),
    /// A number, bound to no key.
    Num(u64),
}

struct Gen {
    rng: Rng,
    /// Keys the generator signs with: the core's own ([`ME_KEY`]), the
    /// pool, then the peers.
    keys: Vec<Identity>,
    /// The peers' HELLOs, proved: `PEERS` of them, for `keys[1 + POOL..]`.
    peers: Vec<Hello>,
    /// Public keys that check no signature: of small order, or no point.
    bad: Vec<[u8; 32]>,
    my_name: String,
    /// Keys that have said HELLO on some link, with their names.
    known: Vec<(usize, String)>,
    /// Next sequence number to use per origin, to hit real deliveries.
    seqs: HashMap<NodeId, u64>,
    /// Per origin, its unsigned events just before the next one (seq and
    /// hash), for the next signed one to cover.
    runs: HashMap<NodeId, Vec<(u64, EventHash)>>,
    /// Whether signatures are made (else random bytes stand for them).
    sign: bool,
}

impl Gen {
    fn new(seed: u64) -> Gen {
        let mut keys = vec![who(0)];
        keys.extend((1..=POOL as u64).map(|n| who(0xf022_0000 + n)));
        let peers: Vec<Hello> = (0..PEERS as u64)
            .map(|n| {
                let peer = who(0x9ee2_0000 + n);
                let h = valid_hello(&peer, &format!("p{n}"), 20_000 + n as u16, true);
                keys.push(peer);
                h
            })
            .collect();
        // Small order (the neutral element, and a point of order 4), and
        // bytes no point decompresses from.
        let mut bad = vec![[0; 32], {
            let mut k = [0; 32];
            k[0] = 1;
            k
        }];
        bad.extend(
            (2..=255u8)
                .map(|b| [b; 32])
                .filter(|k| crypto::verifying(k).is_none())
                .take(2),
        );
        assert!(bad.iter().all(|k| crypto::verifying(k).is_none()));
        Gen {
            rng: Rng::new(seed),
            keys,
            peers,
            bad,
            my_name: String::new(),
            known: Vec::new(),
            seqs: HashMap::new(),
            runs: HashMap::new(),
            sign: true,
        }
    }

    /// A new core's identity and name; what the last one was told is
    /// forgotten.
    fn new_core(&mut self) -> Identity {
        self.keys[ME_KEY] = who(self.rng.next_u64());
        self.my_name = format!("me{}", self.n(4));
        self.known.clear();
        self.seqs.clear();
        self.runs.clear();
        self.keys[ME_KEY].clone()
    }

    /// A peer's HELLO, proved (joining or not: the proof does not
    /// cover it), now known to have said it.
    fn peer_hello(&mut self, joining: bool) -> Hello {
        let i = self.n(PEERS as u64) as usize;
        let h = self.peers[i].clone();
        let k = 1 + POOL + i;
        if !self.known.iter().any(|&(j, _)| j == k) {
            self.known.push((k, h.name.clone()));
        }
        Hello { joining, ..h }
    }

    fn n(&mut self, n: u64) -> u64 {
        self.rng.below(n.max(1))
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.rng.below(100) < percent
    }

    fn pick<T: Clone>(&mut self, v: &[T]) -> T {
        v[self.n(v.len() as u64) as usize].clone()
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.rng.next_u64() as u8)
    }

    fn pool(&mut self) -> usize {
        1 + self.n(POOL as u64) as usize
    }

    fn who(&mut self) -> Who {
        match self.n(40) {
            0 | 1 => Who::Key(ME_KEY),
            2 => Who::Num(0),
            3 => Who::Num(u64::MAX),
            4 => Who::Num(self.rng.next_u64()),
            5..=7 => Who::Num(1 + self.n(16)),
            8 => Who::Bad(self.n(self.bad.len() as u64) as usize, self.n(4)),
            9..=22 => Who::Key(self.pool()),
            _ if !self.known.is_empty() => {
                let i = self.n(self.known.len() as u64) as usize;
                Who::Key(self.known[i].0)
            }
            _ => Who::Key(self.pool()),
        }
    }

    fn id_of(&self, w: Who) -> NodeId {
        match w {
            Who::Key(k) => self.keys[k].id(),
            Who::Bad(b, nonce) => crypto::node_id(&self.bad[b], nonce),
            Who::Num(n) => NodeId(n),
        }
    }

    fn id(&mut self) -> NodeId {
        let w = self.who();
        self.id_of(w)
    }

    /// An identity bound to nothing said here: another's, a bad key, or
    /// random bytes.
    fn any_ident(&mut self) -> Ident {
        match self.n(3) {
            0 => {
                let k = self.pool();
                ident(&self.keys[k])
            }
            1 => Ident {
                key: self.pick(&self.bad.clone()),
                nonce: self.rng.next_u64(),
            },
            _ => Ident {
                key: self.bytes(),
                nonce: self.rng.next_u64(),
            },
        }
    }

    /// The identity `w` gives in HELLO, JOIN and member lists: its own,
    /// mostly.
    fn ident_of(&mut self, w: Who) -> Ident {
        match w {
            Who::Key(k) if self.chance(90) => ident(&self.keys[k]),
            Who::Bad(b, nonce) if self.chance(90) => Ident {
                key: self.bad[b],
                nonce,
            },
            _ => self.any_ident(),
        }
    }

    fn seq(&mut self, origin: NodeId) -> u64 {
        let next = *self.seqs.entry(origin).or_insert(1);
        let s = match self.n(20) {
            0..=10 => next,
            11 => next.saturating_add(1 + self.n(8)),
            12 => 0,
            13 => u64::MAX,
            14 => u64::MAX - self.n(4),
            15 => next.saturating_add(4094 + self.n(4)),
            16 => next.saturating_sub(1 + self.n(3)),
            17 => self.rng.next_u64(),
            _ => 1 + self.n(32),
        };
        if s >= next {
            self.seqs.insert(origin, s.saturating_add(1));
        }
        s
    }

    fn name(&mut self) -> String {
        match self.n(30) {
            0 => String::new(),
            1 => "x".repeat(33),
            2 => "y".repeat(32),
            3 => "a b".into(),
            4 => "a\x1b[31mred".into(),
            5 => "tab\there".into(),
            6 => "a:b".into(),
            7 => "日本語".into(),
            8 => "\u{202e}evil".into(),
            9 => format!("bad{BAD}name"),
            // Our own name, rarely: a clash makes one of the two leave.
            10 if self.chance(5) => self.my_name.clone(),
            11 => "z".repeat(300),
            12 => "\u{0}".into(),
            13..=17 if !self.known.is_empty() => {
                let i = self.n(self.known.len() as u64) as usize;
                self.known[i].1.clone()
            }
            _ => format!("n{}", self.n(64)),
        }
    }

    fn text(&mut self) -> String {
        match self.n(40) {
            0 => String::new(),
            1 => "\x1b]0;title\x07\r\n".into(),
            2 => format!("invalid {BAD} utf8"),
            3 => "w".repeat(wire::MAX_TEXT + 1),
            4 => "é".repeat(3000),
            5 => "\u{7f}\u{85}\u{2066}".into(),
            _ => format!("hello {}", self.n(1000)),
        }
    }

    fn ip(&mut self) -> Option<IpAddr> {
        match self.n(8) {
            0 => None,
            1 => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            2 => Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            3 => Some(IpAddr::V4(Ipv4Addr::from(self.rng.next_u64() as u32))),
            _ => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        }
    }

    fn port(&mut self) -> u16 {
        match self.n(6) {
            0 => 0,
            1 => 65535,
            2 => 1,
            _ => 10_000 + self.n(64) as u16,
        }
    }

    /// A HELLO from `w`, proved as well as `w` can (see [`Gen::prove`]).
    fn hello(&mut self, w: Who, name: String, joining: bool) -> Msg {
        let h = Hello {
            version: if self.chance(95) {
                wire::VERSION
            } else {
                self.pick(&[0, wire::VERSION - 1, wire::VERSION + 1, u16::MAX])
            },
            id: self.id_of(w),
            name,
            port: self.port(),
            joining,
            you: self.ip(),
            ident: self.ident_of(w),
            proof: [0; 64],
            expect: None,
        };
        Msg::Hello(self.prove(w, h))
    }

    /// `h` with a proof: mostly by `w`'s own key if it has one, else by
    /// another's; now and then one over another port, or random bytes.
    /// A HELLO refused for its version or name before its proof is looked
    /// at gets random bytes (signing is most of the generator's time).
    fn prove(&mut self, w: Who, h: Hello) -> Hello {
        if !self.sign || h.version != wire::VERSION || !wire::valid_name(&h.name) {
            return Hello {
                proof: self.bytes(),
                ..h
            };
        }
        let signer = match w {
            Who::Key(k) if self.chance(95) => k,
            _ => self.pool(),
        };
        match self.n(20) {
            0 => Hello {
                proof: self.bytes(),
                ..h
            },
            1 => {
                let h = frames::prove(&self.keys[signer], h);
                Hello {
                    port: h.port ^ 1,
                    ..h
                }
            }
            _ => frames::prove(&self.keys[signer], h),
        }
    }

    fn entry(&mut self) -> Entry {
        let w = self.who();
        let seq = match self.n(6) {
            0 => u64::MAX,
            1 => u64::MAX - 1,
            2 => 0,
            _ => self.n(20),
        };
        Entry {
            id: self.id_of(w),
            name: self.name(),
            ip: self.ip(),
            port: self.port(),
            seq,
            ident: self.ident_of(w),
        }
    }

    fn members(&mut self) -> Msg {
        let count = match self.n(10) {
            0 => MEMBERS_PER_FRAME,
            1 => 0,
            _ => 1 + self.n(8) as usize,
        };
        let entries = (0..count).map(|_| self.entry()).collect();
        Msg::Members {
            last: self.chance(70),
            entries,
        }
    }

    /// What `w` says in an event.
    fn body(&mut self, w: Who) -> Body {
        if self.chance(30) {
            return Body::Room(self.room_event(w));
        }
        match self.n(10) {
            0 | 1 => Body::Join {
                name: self.name(),
                ip: self.ip(),
                port: self.port(),
                ident: self.ident_of(w),
            },
            2 => Body::Leave,
            3 => Body::Suspect { target: self.id() },
            4 => Body::Alive {
                answers: (0..self.n(3))
                    .map(|_| EventId {
                        origin: self.id(),
                        seq: 1 + self.n(8),
                    })
                    .collect(),
            },
            _ => Body::Chat {
                room: if self.chance(90) {
                    "lobby".into()
                } else {
                    self.name()
                },
                text: self.text(),
            },
        }
    }

    /// A room event of `w`: names of a few rooms, small numbers, any op;
    /// states mostly at `w`'s key.
    fn room_event(&mut self, w: Who) -> RoomEvent {
        let room = ["dev", "ops", "Dev", "lobby", "x"][self.n(5) as usize].to_owned();
        let era = [1, 2, 0x0a00_0001, u32::MAX][self.n(4) as usize];
        match self.n(5) {
            0 => RoomEvent::State(Box::new(RoomState {
                name: room,
                era,
                epoch: 1 + self.n(4) as u32,
                from: self.id(),
                lord: self.ident_of(w).key,
                op: match self.n(4) {
                    0 => Op::Create,
                    1 => Op::Kick,
                    2 => Op::Give,
                    _ => Op::Elected,
                },
                arg: self.name(),
                deleted: self.chance(10),
                complete: self.chance(50),
                elected: self.chance(30),
                void: self.chance(10),
                gave: (0..self.n(3)).map(|_| self.id()).collect(),
                kicked: (0..self.n(3)).map(|_| self.name()).collect(),
                roster: (0..self.n(4))
                    .map(|_| (self.id(), self.n(5) as u32))
                    .collect(),
            })),
            1 => RoomEvent::Say {
                room,
                era,
                n: self.n(10) as u32,
                text: self.text(),
            },
            2 => RoomEvent::Enter {
                m: self.n(10) as u32,
                room: if self.chance(20) { String::new() } else { room },
                era,
                want: self.chance(50),
            },
            3 => RoomEvent::Shout {
                n: self.n(10) as u32,
                text: self.text(),
            },
            _ => RoomEvent::History {
                room,
                era,
                lines: (0..self.n(4))
                    .map(|_| Line {
                        origin: self.id(),
                        n: self.n(10) as u32,
                        shout: self.chance(20),
                        text: self.text(),
                    })
                    .collect(),
            },
        }
    }

    fn event(&mut self) -> Msg {
        let w = self.who();
        let origin = self.id_of(w);
        let seq = self.seq(origin);
        let body = self.body(w);
        let seal = self.seal(w, origin, seq, &body);
        Msg::Event(Event {
            origin,
            seq,
            body,
            seal,
        })
    }

    /// The seal of `origin`'s event `seq`, as `w` makes it. With a key,
    /// mostly as an honest peer does: unsigned, waiting for a signature,
    /// or signed, covering the unsigned ones just before it. And now and
    /// then a forgery: signed with another key, or a signature altered,
    /// or covering hashes of events never sent, or unsigned and never to
    /// be covered. Without a key: unsigned, or random bytes.
    fn seal(&mut self, w: Who, origin: NodeId, seq: u64, body: &Body) -> Option<Seal> {
        let Who::Key(k) = w else {
            if self.chance(70) {
                return None;
            }
            let covers = (0..self.n(4)).map(|_| self.bytes()).collect();
            return Some(Seal {
                covers,
                sig: self.bytes(),
            });
        };
        let payload = wire::payload_of(body).expect("generated events fit");
        let hash = crypto::event_hash(origin, seq, body.kind(), &payload);
        let mut run = self.runs.remove(&origin).unwrap_or_default();
        // An honest seal covers the unsigned events just before this one.
        if run
            .last()
            .is_none_or(|&(s, _)| s.checked_add(1) != Some(seq))
        {
            run.clear();
        }
        // Unsigned, for the next signed event to cover; a forgery, now
        // and then; else signed as its origin signs it.
        let forgery = match self.n(20) {
            0..=6 if run.len() < RUN_MAX => {
                run.push((seq, hash));
                self.runs.insert(origin, run);
                return None;
            }
            7 | 8 => Some(self.n(5)),
            _ => None,
        };
        let mut covers: Vec<EventHash> = run.iter().map(|&(_, h)| h).collect();
        let mut signer = k;
        match forgery {
            // Unsigned, and left out of the next seal.
            Some(0) => return None,
            // Signed with another key.
            Some(1) => signer = self.pool(),
            // Vouching for events never sent (more, now and then, than
            // came before it).
            Some(2) => covers = (0..1 + self.n(8)).map(|_| self.bytes()).collect(),
            // Vouching for one of the run altered.
            Some(3) if !covers.is_empty() => {
                let i = self.n(covers.len() as u64) as usize;
                covers[i][0] ^= 1;
            }
            _ => {}
        }
        let mut sig = if self.sign {
            self.keys[signer].sign(&crypto::seal_message(&hash, &covers))
        } else {
            self.bytes()
        };
        if forgery == Some(4) {
            // The signature altered.
            sig[self.n(64) as usize] ^= 1 << self.n(8);
        }
        Some(Seal { covers, sig })
    }

    /// Any valid message, every kind.
    fn msg(&mut self) -> Msg {
        match self.n(25) {
            0..=2 => {
                let w = self.who();
                let name = self.name();
                let joining = self.chance(50);
                self.hello(w, name, joining)
            }
            3 => Msg::Refuse {
                code: self.pick(&[
                    Refusal::Version,
                    Refusal::NameTaken,
                    Refusal::Myself,
                    Refusal::Duplicate,
                    Refusal::Full,
                    Refusal::Gone,
                    Refusal::BadHello,
                    Refusal::Secret,
                    Refusal::Key,
                    Refusal::Other,
                ]),
                text: self.text(),
            },
            4..=6 => self.members(),
            7..=15 => self.event(),
            16 | 17 => {
                let origin = self.id();
                let from = self.pick(&[0, 1, 2, u64::MAX - 1, u64::MAX]);
                let to = self.pick(&[0, 1, 5, 300, u64::MAX]);
                Msg::Fetch { origin, from, to }
            }
            18 => match self.n(3) {
                0 => Msg::Lack {
                    origin: self.id(),
                    oldest: self.pick(&[0, 1, 2, 4096, u64::MAX - 1, u64::MAX]),
                },
                1 => Msg::Gone {
                    ids: (0..self.n(4)).map(|_| self.id()).collect(),
                },
                _ => Msg::Noise((0..self.n(96)).map(|_| self.rng.next_u64() as u8).collect()),
            },
            19 | 20 => {
                let n = self.pick(&[0, 1, 2, 5, wire::IHAVE_PER_FRAME]);
                let ids = (0..n)
                    .map(|_| {
                        let origin = self.id();
                        let next = self.seqs.get(&origin).copied().unwrap_or(1);
                        EventId {
                            origin,
                            seq: self.pick(&[
                                0,
                                1,
                                next,
                                next.saturating_add(1),
                                next.saturating_add(300),
                                u64::MAX,
                            ]),
                        }
                    })
                    .collect();
                Msg::Ihave { ids }
            }
            21 => {
                let origin = self.id();
                let from = self.pick(&[0, 1, 2, u64::MAX - 1, u64::MAX]);
                let to = self.pick(&[0, 1, 5, 300, u64::MAX]);
                Msg::Graft { origin, from, to }
            }
            22 => Msg::Prune { origin: self.id() },
            23 => {
                let n = self.pick(&[0, 1, 2, 5, wire::HOPS_PER_FRAME]);
                let hops = (0..n)
                    .map(|_| (self.id(), self.pick(&[0, 1, 2, 63, 64, wire::HOPS_UNKNOWN])))
                    .collect();
                Msg::Hops { hops }
            }
            _ => Msg::Ping,
        }
    }

    /// A valid frame, mutated or not. One to be mutated is built with
    /// random bytes where signatures go: most mutations would break the
    /// signature anyway (the few that leave the body alone, a length prefix
    /// edited, now bring a bad one), and signing is most of the
    /// generator's time. Valid signatures come in the quarter left whole.
    fn frame(&mut self) -> Vec<u8> {
        let whole = self.chance(25);
        self.sign = whole;
        let m = self.msg();
        let mut f = wire::frame(&m).unwrap().to_vec();
        if whole {
            fix_utf8_markers(&mut f, None);
            return f;
        }
        let rounds = 1 + self.n(3);
        for _ in 0..rounds {
            self.mutate(&mut f);
        }
        self.sign = true;
        f
    }

    fn mutate(&mut self, f: &mut Vec<u8>) {
        match self.n(12) {
            // Bit flips anywhere, length prefix included.
            0 | 1 => {
                for _ in 0..1 + self.n(4) {
                    let i = self.n(f.len() as u64) as usize;
                    f[i] ^= 1 << self.n(8);
                }
            }
            // A random byte.
            2 => {
                let i = self.n(f.len() as u64) as usize;
                f[i] = self.rng.next_u64() as u8;
            }
            // Truncated, length prefix fixed up or left.
            3 => {
                let n = self.n(f.len() as u64) as usize;
                f.truncate(n.max(4));
                if self.chance(70) {
                    set_len(f);
                }
            }
            // Trailing bytes.
            4 => {
                for _ in 0..1 + self.n(8) {
                    f.push(self.rng.next_u64() as u8);
                }
                if self.chance(70) {
                    set_len(f);
                }
            }
            // Spliced onto the tail of another frame.
            5 => {
                let g = wire::frame(&self.msg()).unwrap();
                let i = 4 + self.n(f.len() as u64 - 4) as usize;
                let j = self.n(g.len() as u64) as usize;
                f.truncate(i);
                f.extend_from_slice(&g[j..]);
                if self.chance(70) {
                    set_len(f);
                }
            }
            // The length prefix edited.
            6 => {
                let body = (f.len() - 4) as u32;
                let any = self.rng.next_u64() as u32;
                let len = self.pick(&[
                    0,
                    1,
                    body.saturating_sub(1),
                    body + 1,
                    MAX_FRAME as u32,
                    MAX_FRAME as u32 + 1,
                    1 << 31,
                    u32::MAX,
                    any,
                ]);
                f[..4].copy_from_slice(&len.to_be_bytes());
            }
            // A u16 field (a count or a string length) made huge or odd.
            7 | 8 => {
                if f.len() >= 7 {
                    let i = 5 + self.n(f.len() as u64 - 6) as usize;
                    let v: u16 = self.pick(&[0xffff, 0, 256, 257, 0x8000, 33]);
                    f[i..i + 2].copy_from_slice(&v.to_be_bytes());
                }
            }
            // A u64 field (an id or a sequence number) near the top.
            9 => {
                if f.len() >= 13 {
                    let i = 5 + self.n(f.len() as u64 - 12) as usize;
                    let v = u64::MAX - self.n(3);
                    f[i..i + 8].copy_from_slice(&v.to_be_bytes());
                }
            }
            // Invalid UTF-8 where the generator left markers.
            10 => {
                let b = self.pick(&BAD_UTF8);
                fix_utf8_markers(f, Some(b));
            }
            // Random bytes behind a right length prefix.
            _ => {
                let n = self.n(48) as usize;
                f.truncate(4);
                for _ in 0..n {
                    f.push(self.rng.next_u64() as u8);
                }
                set_len(f);
            }
        }
    }
}

/// Sets the length prefix to the body's length.
fn set_len(f: &mut [u8]) {
    let n = (f.len() - 4) as u32;
    f[..4].copy_from_slice(&n.to_be_bytes());
}

/// Replaces each marker with `bad` (same length) or leaves it valid.
fn fix_utf8_markers(f: &mut [u8], bad: Option<&[u8]>) {
    let Some(bad) = bad else {
        return;
    };
    let m = BAD.as_bytes();
    let mut i = 0;
    while i + m.len() <= f.len() {
        if &f[i..i + m.len()] == m {
            f[i..i + m.len()].copy_from_slice(bad);
            i += m.len();
        } else {
            i += 1;
        }
    }
}

// ---------------------------------------------------------------------------
// The decoder's properties.

/// Checks `frame_len` and `decode` on `f`; returns the body when `f` starts
/// with one whole frame.
fn check_decoder(f: &[u8]) -> Option<&[u8]> {
    for cut in [0, 1, 3, 4, f.len() / 2] {
        if cut <= f.len() {
            check_frame_len(&f[..cut]);
        }
    }
    let n = check_frame_len(f)?;
    let body = &f[4..n];
    if let Ok(m) = wire::decode(body) {
        // What decodes, encodes and decodes to the same message.
        let g = wire::frame(&m).unwrap();
        assert_eq!(wire::frame_len(&g), Ok(Some(g.len())), "{m:?}");
        assert_eq!(wire::decode(&g[4..]).as_ref(), Ok(&m), "{body:02x?}");
    }
    Some(body)
}

fn check_frame_len(b: &[u8]) -> Option<usize> {
    match wire::frame_len(b) {
        Ok(Some(n)) => {
            let len = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
            assert!((1..=MAX_FRAME).contains(&len), "accepted length {len}");
            assert_eq!(n, len + 4);
            assert!(n <= b.len());
            Some(n)
        }
        Ok(None) => {
            if b.len() >= 4 {
                let len = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
                assert!((1..=MAX_FRAME).contains(&len) && b.len() < len + 4);
            }
            None
        }
        Err(WireError::BadLength(len)) => {
            assert!(b.len() >= 4);
            assert!(len == 0 || len as usize > MAX_FRAME);
            None
        }
        Err(e) => panic!("frame_len gave {e:?}"),
    }
}

// ---------------------------------------------------------------------------
// A core under fire.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// Alone in a new network; links accepted from us.
    Alone,
    /// Joining through us: we are its welcomer on one dialled link.
    Joining,
}

struct Harness {
    core: Core,
    scenario: Scenario,
    now: Millis,
    /// Links the core knows of as far as we can tell: accepted by it, or
    /// dialled by it and not yet closed or failed.
    open: BTreeSet<LinkId>,
    /// Dials we have not answered yet.
    dialling: Vec<LinkId>,
    /// The link the core joins through, in the Joining scenario.
    welcome: Option<LinkId>,
    exited: bool,
    /// Heap live on this thread when the core was new.
    heap0: i64,
    stats: Stats,
}

#[derive(Default, Debug)]
struct Stats {
    inputs: u64,
    frames: u64,
    decoded: u64,
    sends: u64,
    shows: u64,
    /// Of which chat lines and members joined: events delivered.
    chats: u64,
    joins: u64,
    trusts: u64,
    connects: u64,
    closes: u64,
    exits: u64,
    exit_why: std::collections::BTreeMap<String, u64>,
    /// Ticks that left a deadline already due (one more wake-up).
    stale_deadlines: u64,
    max_actions: usize,
    max_bytes: usize,
    max_members: usize,
    max_links: usize,
    max_heap: i64,
}

fn peer_addr(i: u64) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 20_000 + (i % 1000) as u16))
}

/// A HELLO from `me` that checks out, as a peer at 127.0.0.1:`port`.
fn valid_hello(me: &Identity, name: &str, port: u16, joining: bool) -> Hello {
    let h = Hello {
        port,
        joining,
        you: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ..frames::hello(me, name)
    };
    frames::prove(me, h)
}

impl Harness {
    fn new(g: &mut Gen, scenario: Scenario, stats: Stats) -> Harness {
        let heap0 = live_bytes();
        let cfg = Config {
            degree: 1 + g.n(6) as usize,
            max_links: if g.chance(20) { 2 } else { 256 },
            ..Config::default()
        };
        let me = g.new_core();
        let seed = g.rng.next_u64();
        let core = Core::new(cfg, me, &g.my_name, 40_000, seed);
        let mut h = Harness {
            core,
            scenario,
            now: g.n(10_000),
            open: BTreeSet::new(),
            dialling: Vec::new(),
            welcome: None,
            exited: false,
            heap0,
            stats,
        };
        match scenario {
            Scenario::Alone => {}
            Scenario::Joining => {
                let now = h.now;
                h.core.join(vec![peer_addr(999)], "welcomer", now);
                h.drain(g);
                // Answer the dial at once, then say HELLO as the welcomer.
                if let Some(link) = h.dialling.pop() {
                    h.welcome = Some(link);
                    h.core.connected(link, now);
                    h.drain(g);
                    let hello = Msg::Hello(g.peer_hello(false));
                    if g.chance(85) {
                        h.input_frame(g, link, &wire::frame(&hello).unwrap()[4..]);
                    }
                }
            }
        }
        h
    }

    fn accept(&mut self, g: &mut Gen) {
        let now = self.now;
        let link = self.core.accepted(peer_addr(g.n(1000)), now);
        self.open.insert(link);
        self.check_after_input(g);
        // Most accepted links say a valid HELLO at once.
        if g.chance(60) {
            let joining = g.chance(50);
            let f = wire::frame(&Msg::Hello(g.peer_hello(joining))).unwrap();
            self.input_frame(g, link, &f[4..]);
        }
    }

    fn input_frame(&mut self, g: &mut Gen, link: LinkId, body: &[u8]) {
        self.stats.frames += 1;
        let now = self.now;
        self.core.frame(link, body, now);
        self.check_after_input(g);
    }

    /// One random input of any sort.
    fn step(&mut self, g: &mut Gen, frame: &[u8]) {
        // Time moves on now and then; due timers run.
        if g.chance(15) {
            self.now += g.pick(&[0, 1, 50, 300, 1_000, 2_500, 5_001, 12_000]);
        }
        if self.core.deadline().is_some_and(|d| d <= self.now) || g.chance(3) {
            let now = self.now;
            self.core.tick(now);
            self.check_after_input(g);
            // A deadline still due after a tick makes the event loop wake
            // at once; a few times is a hiccup, more is a busy loop.
            let mut again = 0;
            while let Some(d) = self.core.deadline().filter(|&d| d <= now) {
                again += 1;
                assert!(
                    again <= 2,
                    "tick leaves deadline {d} due at {now}: a busy loop"
                );
                self.stats.stale_deadlines += 1;
                self.core.tick(now);
                self.check_after_input(g);
            }
        }
        if self.open.len() < ACCEPTED && g.chance(30) {
            self.accept(g);
        }
        if !self.dialling.is_empty() && g.chance(40) {
            let i = g.n(self.dialling.len() as u64) as usize;
            let link = self.dialling.swap_remove(i);
            let now = self.now;
            if g.chance(50) {
                self.core.connected(link, now);
            } else {
                self.open.remove(&link);
                self.core.link_down(link, "refused", now);
            }
            self.check_after_input(g);
        }
        if g.chance(2)
            && let Some(&link) = self.open.iter().nth(g.n(self.open.len() as u64) as usize)
        {
            self.open.remove(&link);
            self.dialling.retain(|&l| l != link);
            let now = self.now;
            self.core.link_down(link, "closed", now);
            self.check_after_input(g);
        }
        if g.chance(1) {
            let now = self.now;
            let c = match g.n(10) {
                0..=5 => Command::Say(g.text()),
                6 => Command::Who,
                7 => Command::Whois(g.name()),
                8 => Command::Trust(g.name()),
                _ => Command::Room(match g.n(6) {
                    0 => Cmd::Create("dev".into()),
                    1 => Cmd::Join(Some("dev".into())),
                    2 => Cmd::Join(None),
                    3 => Cmd::Kick(g.name()),
                    4 => Cmd::Shout(g.text()),
                    _ => Cmd::Rooms,
                }),
            };
            self.core.command(c, now);
            self.check_after_input(g);
        }
        // The frame itself, on the welcome link, a random link or a stale one.
        let link = match (self.welcome, g.n(10)) {
            (Some(w), 0..=4) if self.open.contains(&w) => w,
            (_, 9) => LinkId(g.n(64)),
            _ => match self.open.iter().nth(g.n(self.open.len() as u64) as usize) {
                Some(&l) => l,
                None => return,
            },
        };
        self.input_frame(g, link, frame);
    }

    /// Drains the core's actions, answering what needs answering later.
    fn drain(&mut self, g: &mut Gen) -> (usize, usize) {
        let (mut n, mut bytes) = (0, 0);
        while let Some(a) = self.core.next_action() {
            n += 1;
            match a {
                Action::Send(link, f) => {
                    self.stats.sends += 1;
                    bytes += f.len();
                    // Whatever it is sent, a core only sends good frames.
                    assert_eq!(
                        wire::frame_len(&f),
                        Ok(Some(f.len())),
                        "core sent a bad frame on link {link}: {:02x?}",
                        &f[..f.len().min(64)]
                    );
                    // Decoding them all would take most of the time: a sample.
                    if self.stats.sends.is_multiple_of(8) {
                        let m = wire::decode(&f[4..]);
                        // (file transfers' kinds are the file machine's,
                        // SHED the mesh's)
                        let file = p2pchat::app::files::Msg::decode(&f[4..]).is_some();
                        let shed = mesh::ShedMsg::decode(&f[4..]).is_ok_and(|m| m.is_some());
                        assert!(
                            m.is_ok() || file || shed,
                            "core sent an undecodable frame: {m:?}"
                        );
                    }
                }
                Action::Connect(link, _) => {
                    self.stats.connects += 1;
                    self.open.insert(link);
                    self.dialling.push(link);
                }
                Action::Close(link) => {
                    self.stats.closes += 1;
                    self.open.remove(&link);
                    self.dialling.retain(|&l| l != link);
                }
                Action::Show(show) => {
                    self.stats.shows += 1;
                    match show {
                        Show::Chat { .. } => self.stats.chats += 1,
                        Show::MemberJoined(_) => self.stats.joins += 1,
                        _ => {}
                    }
                }
                Action::Trust { .. } => self.stats.trusts += 1,
                Action::File(_) => {}
                Action::Stop(stop) => {
                    let why: String = stop
                        .message()
                        .unwrap_or_default()
                        .chars()
                        .take(24)
                        .collect();
                    *self.stats.exit_why.entry(why).or_default() += 1;
                    self.stats.exits += 1;
                    self.exited = true;
                }
            }
        }
        let _ = g;
        (n, bytes)
    }

    fn check_after_input(&mut self, g: &mut Gen) {
        self.stats.inputs += 1;
        let links_before = self.open.len();
        let members = self.core.member_count();
        let (n, bytes) = self.drain(g);
        let links = self.open.len().max(links_before);
        let s = &mut self.stats;
        s.max_actions = s.max_actions.max(n);
        s.max_bytes = s.max_bytes.max(bytes);
        assert!(
            n <= actions_max(links, members),
            "one input gave {n} actions ({links} links, {members} members)"
        );
        assert!(
            bytes <= bytes_max(links, members),
            "one input queued {bytes} bytes ({links} links, {members} members)"
        );
        let members = self.core.member_count();
        s.max_members = s.max_members.max(members);
        assert!(members <= MAX_MEMBERS, "{members} members");
        s.max_links = s.max_links.max(self.open.len());
        assert!(
            self.open.len() <= LINKS_MAX,
            "{} links open or dialling",
            self.open.len()
        );
        assert!(self.core.link_count() <= self.open.len());
        let heap = live_bytes() - self.heap0;
        s.max_heap = s.max_heap.max(heap);
        assert!(heap <= CORE_HEAP_MAX, "core heap grew to {heap} bytes");
    }
}

#[test]
fn half_a_million_mutated_frames() {
    let seed = seed();
    let total: u64 = std::env::var("FUZZ_FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500_000);
    let started = Instant::now();
    let mut g = Gen::new(seed);
    let mut h = Harness::new(&mut g, Scenario::Alone, Stats::default());
    let mut since_new = 0u64;
    let mut decoded = 0u64;
    let mut scenarios = [0u64; 2];
    for i in 0..total {
        // A fresh core now and then, in either state; always after an exit.
        if h.exited || since_new >= 2_000 {
            let sc = if g.chance(50) {
                Scenario::Alone
            } else {
                Scenario::Joining
            };
            scenarios[sc as usize] += 1;
            let stats = std::mem::take(&mut h.stats);
            drop(h);
            h = Harness::new(&mut g, sc, stats);
            since_new = 0;
        }
        since_new += 1;
        let f = g.frame();
        let body = match check_decoder(&f) {
            Some(b) => {
                decoded += wire::decode(b).is_ok() as u64;
                b.to_vec()
            }
            // The loop never hands such bytes to a core; they are still
            // bytes, and the core must take any.
            None => f[4.min(f.len())..].to_vec(),
        };
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            h.step(&mut g, &body);
        })) {
            eprintln!(
                "fuzz_core failed at frame {i} (scenario {:?}, t={}): rerun with FUZZ_SEED={seed}",
                h.scenario, h.now
            );
            eprintln!("frame: {:02x?}", &f[..f.len().min(256)]);
            std::panic::resume_unwind(e);
        }
    }
    // A stream of many frames, split anywhere, comes out frame by frame.
    stream_reassembly(&mut g, total / 50);
    h.stats.decoded = decoded;
    eprintln!(
        "fuzz_core: {total} frames in {:.1?}: {decoded} decoded, scenarios {scenarios:?}, {:?}",
        started.elapsed(),
        h.stats
    );
}

/// Feeds frames concatenated and cut at random points through `frame_len`,
/// as the event loop reads them.
fn stream_reassembly(g: &mut Gen, frames: u64) {
    let mut want = Vec::new();
    let mut stream = Vec::new();
    for _ in 0..frames {
        let m = g.msg();
        let f = wire::frame(&m).unwrap();
        if f.len() - 4 <= MAX_FRAME {
            stream.extend_from_slice(&f);
            want.push(m);
        }
    }
    let mut buf = Vec::new();
    let mut got = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let n = (1 + g.n(3000) as usize).min(stream.len() - pos);
        buf.extend_from_slice(&stream[pos..pos + n]);
        pos += n;
        let mut at = 0;
        while let Some(n) = wire::frame_len(&buf[at..]).expect("good stream") {
            got.push(wire::decode(&buf[at + 4..at + n]).expect("good frame"));
            at += n;
        }
        buf.drain(..at);
    }
    assert!(buf.is_empty());
    assert_eq!(got.len(), want.len());
    assert!(got == want);
}

// ---------------------------------------------------------------------------
// Targeted cases: hostile inputs the random run may take long to build.

/// A core and its clock, for step-by-step cases.
struct One {
    core: Core,
    now: Millis,
}

/// The core of the step-by-step cases, whoever welcomes it, and a hostile
/// member: identities, their ids made by their keys.
fn me() -> Identity {
    who(0x8000)
}

fn welcomer() -> Identity {
    who(0x4000)
}

fn evil() -> Identity {
    who(0x5000)
}

impl One {
    fn new(name: &str) -> One {
        One {
            core: Core::new(Config::default(), me(), name, 40_000, 7),
            now: 1_000,
        }
    }

    /// A core joining through a welcomer that has said HELLO on `link`.
    fn joining(name: &str) -> (One, LinkId) {
        let mut o = One::new(name);
        o.core.join(vec![peer_addr(1)], "welcomer", o.now);
        let link = o
            .drain()
            .into_iter()
            .find_map(|a| match a {
                Action::Connect(l, _) => Some(l),
                _ => None,
            })
            .expect("a dial");
        o.core.connected(link, o.now);
        o.drain();
        o.frame(link, &hello(&welcomer(), "welcomer", false));
        (o, link)
    }

    /// A member core with one accepted link on which `peer` said HELLO.
    fn with_link(name: &str, peer: &Identity, peer_name: &str) -> (One, LinkId) {
        let mut o = One::new(name);
        let link = o.accept(peer, peer_name, 2);
        (o, link)
    }

    /// Accepts a link from address `i`, on which `peer` says HELLO.
    fn accept(&mut self, peer: &Identity, name: &str, i: u64) -> LinkId {
        let link = self.core.accepted(peer_addr(i), self.now);
        self.frame(link, &hello(peer, name, true));
        link
    }

    fn frame(&mut self, link: LinkId, msg: &Msg) -> Vec<Action> {
        let f = wire::frame(msg).unwrap();
        self.core.frame(link, &f[4..], self.now);
        self.drain()
    }

    fn tick(&mut self, dt: Millis) -> Vec<Action> {
        self.now += dt;
        self.core.tick(self.now);
        self.drain()
    }

    /// Drains the actions; every frame sent must be a good one.
    fn drain(&mut self) -> Vec<Action> {
        let mut v = Vec::new();
        while let Some(a) = self.core.next_action() {
            if let Action::Send(_, f) = &a {
                assert_eq!(
                    wire::frame_len(f),
                    Ok(Some(f.len())),
                    "core sends a frame of {} bytes (MAX_FRAME is {MAX_FRAME})",
                    f.len() - 4
                );
            }
            v.push(a);
        }
        v
    }
}

/// A HELLO from `me` as a peer at 127.0.0.1:20000, proved.
fn hello(me: &Identity, name: &str, joining: bool) -> Msg {
    Msg::Hello(valid_hello(me, name, 20_000, joining))
}

/// `id`'s entry in a member list, its events delivered up to `seq`.
fn entry(id: &Identity, name: &str, port: u16, seq: u64) -> Entry {
    Entry {
        id: id.id(),
        name: name.into(),
        ip: None,
        port,
        seq,
        ident: ident(id),
    }
}

/// A JOIN of `id` as `name` with no address (nobody dials it): event 1,
/// signed.
fn join_unlinked(id: &Identity, name: &str) -> Msg {
    signed(
        id,
        1,
        Body::Join {
            name: name.into(),
            ip: None,
            port: 1,
            ident: ident(id),
        },
    )
}

fn shown_chats(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Show(Show::Chat { text, .. }) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// The events of `origin` sent on `link`, by sequence number.
fn sent_events(actions: &[Action], link: LinkId, origin: NodeId) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(l, f) if *l == link => wire::event_id(&f[4..]),
            _ => None,
        })
        .filter(|id| id.origin == origin)
        .map(|id| id.seq)
        .collect()
}

fn exits(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Stop(s) => Some(format!("exit {}: {:?}", s.status(), s.message())),
            _ => None,
        })
        .collect()
}

/// A welcome that lists a member further on than events already held back
/// from it: those events are old news, not a gap to count backwards.
#[test]
fn welcome_past_held_events() {
    let (mut o, link) = One::joining("joiner");
    let x = who(0x7777);
    // Before the member list, events of X arrive out of order: held back
    // (and its key is not known yet).
    for seq in [5, 6] {
        let a = o.frame(link, &chat(&x, seq, &format!("old {seq}")));
        assert!(shown_chats(&a).is_empty());
    }
    let a = o.frame(
        link,
        &Msg::Members {
            last: true,
            entries: vec![
                entry(&welcomer(), "welcomer", 20_000, 0),
                entry(&x, "x", 20_001, 10),
            ],
        },
    );
    assert!(o.core.is_member(), "not joined: {a:?}");
    let mut all = Vec::new();
    for _ in 0..40 {
        all.extend(o.tick(500));
    }
    assert!(
        shown_chats(&all).is_empty(),
        "events older than the welcome delivered: {:?}",
        shown_chats(&all)
    );
    // X's next event after the welcome is delivered (its key came with the
    // list), once.
    let mut a = o.frame(link, &chat(&x, 11, "new"));
    a.extend(o.frame(link, &chat(&x, 11, "new")));
    assert_eq!(shown_chats(&a), ["new"]);
}

/// Sequence numbers at the very top: an event is still delivered once.
#[test]
fn sequence_numbers_at_u64_max() {
    // From an origin never seen: far ahead of 1, not held, not delivered.
    let (mut o, link) = One::with_link("alice", &evil(), "eve");
    let far = who(0x1234);
    let mut a = Vec::new();
    for seq in [u64::MAX, u64::MAX - 1, u64::MAX - 4096] {
        a.extend(o.frame(link, &chat(&far, seq, "far")));
    }
    a.extend(o.tick(20_000));
    assert!(shown_chats(&a).is_empty(), "{a:?}");
    assert!(o.core.member_count() <= 2);

    // A welcome that puts a member at u64::MAX - 1: sequence number
    // u64::MAX is refused outright (no honest sender gets there, and
    // nothing could follow it), so neither it nor its copies are shown,
    // signed as they are.
    let (mut o, link) = One::joining("joiner");
    let x = who(0x7777);
    let a = o.frame(
        link,
        &Msg::Members {
            last: true,
            entries: vec![entry(&x, "x", 20_001, u64::MAX - 1)],
        },
    );
    assert!(o.core.is_member(), "not joined: {a:?}");
    let mut a = Vec::new();
    for _ in 0..3 {
        a.extend(o.frame(link, &chat(&x, u64::MAX, "top")));
    }
    assert!(shown_chats(&a).is_empty(), "u64::MAX delivered: {a:?}");
    // The member's other traffic is unaffected.
    let a = o.frame(link, &chat(&x, u64::MAX - 1, "below"));
    assert!(
        shown_chats(&a).is_empty(),
        "an old seq delivered again: {a:?}"
    );
}

/// A HELLO that takes our name with a smaller id must not make us leave:
/// anyone can make a key whose id is smaller (here, the smallest of many),
/// so the newcomer is the one turned away.
#[test]
fn hello_with_our_name_does_not_evict_us() {
    let namesake = (0..256)
        .map(|n| who(0x0500_0000 + n))
        .min_by_key(|i| i.id())
        .unwrap();
    assert!(namesake.id() < me().id(), "no smaller id among 256 keys");
    let (mut o, _) = One::with_link("alice", &who(0x9000), "bob");
    o.tick(60_000);
    let link = o.core.accepted(peer_addr(3), o.now);
    let a = o.frame(link, &hello(&namesake, "alice", false));
    assert_eq!(
        exits(&a),
        Vec::<String>::new(),
        "a stranger's HELLO evicts us"
    );
    // Nor a member list or a JOIN event naming a member "alice", with
    // keys and signatures of their own.
    let link = o.core.accepted(peer_addr(4), o.now);
    o.frame(link, &hello(&evil(), "eve", false));
    let mut a = o.frame(
        link,
        &Msg::Members {
            last: true,
            entries: vec![entry(&who(1), "alice", 1, 0)],
        },
    );
    a.extend(o.frame(link, &frames::join(&who(2), "alice", 1)));
    assert_eq!(exits(&a), Vec::<String>::new(), "a forged member evicts us");
}

/// JOIN events carry names that are checked like any other name, so a
/// member list never outgrows a frame.
#[test]
fn forged_join_names_are_checked() {
    let (mut o, link) = One::with_link("alice", &evil(), "eve");
    let long = "n".repeat(40_000);
    for giant in [who(0x100), who(0x101)] {
        o.frame(
            link,
            &signed(
                &giant,
                1,
                Body::Join {
                    name: long.clone(),
                    ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    port: 1,
                    ident: ident(&giant),
                },
            ),
        );
    }
    // A newcomer gets the member list: every frame of it within MAX_FRAME
    // (One::drain checks), and no 40,000-byte name in it.
    let carol = o.core.accepted(peer_addr(5), o.now);
    let a = o.frame(carol, &hello(&who(0x6000), "carol", true));
    let mut lists = 0;
    for act in &a {
        if let Action::Send(l, f) = act
            && *l == carol
            && let Ok(Msg::Members { entries, .. }) = wire::decode(&f[4..])
        {
            lists += 1;
            assert!(entries.iter().all(|e| wire::valid_name(&e.name)));
        }
    }
    assert!(lists > 0, "carol got no member list");
}

/// A member list of thousands of fake members at unreachable ports, from
/// the link on `link`: each with a key of its own and the id it makes
/// (one whose id is not its key's is dropped unread).
fn flood_fake_members(o: &mut One, link: LinkId) {
    let mut n = 0u32;
    for _ in 0..(MAX_MEMBERS + 512) / MEMBERS_PER_FRAME {
        let entries = (0..MEMBERS_PER_FRAME)
            .map(|_| {
                n += 1;
                let fake = who(0x1_0000 + u64::from(n));
                Entry {
                    ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    ..entry(&fake, &format!("fake{n}"), (n % 65535) as u16 + 1, 0)
                }
            })
            .collect();
        o.frame(
            link,
            &Msg::Members {
                last: true,
                entries,
            },
        );
    }
    eprintln!("{} members after the fake list", o.core.member_count());
    assert!(o.core.member_count() <= MAX_MEMBERS);
    assert!(
        o.core.member_count() > 512,
        "the fake members were not taken in at all: nothing tested"
    );
}

/// Thousands of fake members at unreachable ports: a bounded number of
/// dials per second, not a connection storm.
#[test]
fn fake_members_dials_are_rate_bounded() {
    let (mut o, link) = One::with_link("alice", &evil(), "eve");
    flood_fake_members(&mut o, link);
    // A minute in which every dial fails at once (connection refused).
    let mut dials = 0;
    let mut pending: Vec<LinkId> = Vec::new();
    let start = o.now;
    while o.now < start + 60_000 {
        let mut acts = o.tick(100);
        while let Some(l) = pending.pop() {
            o.core.link_down(l, "refused", o.now);
            acts.extend(o.drain());
        }
        for a in acts {
            if let Action::Connect(l, _) = a {
                dials += 1;
                pending.push(l);
            }
        }
        // The attacker keeps its link alive.
        o.frame(link, &Msg::Ping);
    }
    eprintln!("fake members: {dials} dials in 60 s");
    assert!(
        dials <= 600,
        "{dials} dials to fake members in 60 s: a connection storm (bound 10/s)"
    );
}

/// After fake members filled the member table, a newcomer still gets in.
#[test]
fn fake_members_do_not_lock_out_newcomers() {
    let (mut o, link) = One::with_link("alice", &evil(), "eve");
    flood_fake_members(&mut o, link);
    let carol = o.core.accepted(peer_addr(6), o.now);
    let a = o.frame(carol, &hello(&who(0x6000), "carol", true));
    // Welcomed: a HELLO and a member list, and the link kept.
    let sent = |want: fn(&Msg) -> bool| {
        a.iter().any(|a| {
            matches!(a, Action::Send(l, f) if *l == carol
                && wire::decode(&f[4..]).is_ok_and(|m| want(&m)))
        })
    };
    let welcomed = sent(|m| matches!(m, Msg::Hello(_)))
        && sent(|m| matches!(m, Msg::Members { .. }))
        && !a.contains(&Action::Close(carol));
    assert!(
        welcomed,
        "a newcomer is turned away after fake members filled the table: {:?}",
        a.iter()
            .map(|a| match a {
                Action::Send(l, f) => format!("send {l} {:?}", wire::decode(&f[4..])),
                a => format!("{a:?}"),
            })
            .collect::<Vec<_>>()
    );
}

/// Events from thousands of invented origins, each with a gap so that
/// they are held back: the core's memory stays bounded.
#[test]
fn held_back_events_are_bounded_in_bytes() {
    let (mut o, link) = One::with_link("alice", &evil(), "eve");
    let origins: Vec<Identity> = (0..125).map(|n| who(0x10_0000 + n)).collect();
    let text = "h".repeat(60_000);
    let heap0 = live_bytes();
    let mut max = 0;
    // 1,000 events of 60 kB: 60 MB if all were kept.
    for i in 0..1_000u64 {
        let origin = &origins[(i / 8) as usize];
        let seq = 2 + i % 8; // 1 never comes
        let ev = chat(origin, seq, &text);
        o.frame(link, &ev);
        drop(ev);
        max = max.max(live_bytes() - heap0);
    }
    eprintln!("held back: heap grew by {max} bytes");
    assert!(
        max <= CORE_HEAP_MAX,
        "held-back events grew the core's heap by {} MiB (bound {} MiB)",
        max >> 20,
        CORE_HEAP_MAX >> 20
    );
}

/// A neighbour that sends PUNCH after PUNCH (naming members it made up,
/// each at a new address) and PUNCH_ASK after PUNCH_ASK (about a member we
/// link to) for a minute gets a bounded number of dials (the dial budget)
/// and of PUNCHes passed on (the relay budget): hole punching is no way to
/// turn a peer into a connection or message flood.
#[test]
fn punch_requests_are_rate_bounded() {
    let (mut o, evil) = One::with_link("alice", &evil(), "eve");
    let bob = who(0x6000);
    let bob_link = o.accept(&bob, "bob", 3);
    let fakes: Vec<Identity> = (0..200u64).map(|i| who(0x7_0000 + i)).collect();
    let entries = fakes
        .iter()
        .enumerate()
        .map(|(i, f)| Entry {
            ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ..entry(f, &format!("fake{i}"), 30_000 + i as u16, 0)
        })
        .collect();
    o.frame(
        evil,
        &Msg::Members {
            last: true,
            entries,
        },
    );
    let (mut dials, mut relayed) = (0u64, 0u64);
    let count = |acts: Vec<Action>, dials: &mut u64, relayed: &mut u64| {
        for a in acts {
            match a {
                Action::Connect(..) => *dials += 1,
                Action::Send(l, f) if l == bob_link => {
                    if matches!(wire::decode(&f[4..]), Ok(Msg::Punch { .. })) {
                        *relayed += 1;
                    }
                }
                _ => {}
            }
        }
    };
    let start = o.now;
    let mut n = 0u64;
    while o.now < start + 60_000 {
        for _ in 0..50 {
            n += 1;
            let punch = Msg::Punch {
                id: fakes[(n % 200) as usize].id(),
                addr: SocketAddr::from(([127, 0, 0, 1], 1 + (n % 60_000) as u16)),
            };
            let acts = o.frame(evil, &punch);
            count(acts, &mut dials, &mut relayed);
            let ask = Msg::PunchAsk { target: bob.id() };
            let acts = o.frame(evil, &ask);
            count(acts, &mut dials, &mut relayed);
        }
        let acts = o.tick(100);
        count(acts, &mut dials, &mut relayed);
        o.frame(evil, &Msg::Ping);
        o.frame(bob_link, &Msg::Ping);
    }
    eprintln!(
        "punch flood: {n} PUNCHes and as many PUNCH_ASKs in 60 s: {dials} dials, {relayed} PUNCHes passed on"
    );
    assert!(dials <= 2 * 60 + 8, "{dials} dials in 60 s");
    assert!(
        relayed <= 4 * 60 + 16,
        "{relayed} PUNCHes passed on in 60 s"
    );
}

/// Unsigned events wait, neither shown nor relayed, until the signature
/// that covers them checks out; then they go on together, in order. One
/// that does not match its hash in that signature is a forgery: nothing
/// of it is shown or relayed, the link that brought it is dropped, and
/// the real one, when it comes, is checked against the signature.
#[test]
fn unsigned_events_wait_for_their_seal() {
    let (mut o, link) = One::with_link("alice", &evil(), "eve");
    let trent = o.accept(&who(0x7e47), "trent", 3);
    let x = who(0x7777);
    let a = o.frame(link, &join_unlinked(&x, "x"));
    assert_eq!(sent_events(&a, trent, x.id()), [1]);
    let lines = (2..=5).map(|i| lobby(&format!("line {i}"))).collect();
    let evs = frames::sealed(&x, 2, lines);
    let mut a = Vec::new();
    for ev in &evs[..3] {
        a.extend(o.frame(link, ev));
    }
    assert!(shown_chats(&a).is_empty(), "shown unsigned: {a:?}");
    assert!(
        sent_events(&a, trent, x.id()).is_empty(),
        "relayed unsigned"
    );
    let a = o.frame(link, &evs[3]);
    assert_eq!(shown_chats(&a), ["line 2", "line 3", "line 4", "line 5"]);
    assert_eq!(sent_events(&a, trent, x.id()), [2, 3, 4, 5]);

    // Event 6 altered on eve's link; 7, signed, vouches for the real 6.
    let real = frames::sealed(&x, 6, vec![lobby("six"), lobby("seven")]);
    let mut a = o.frame(link, &frames::unsigned(x.id(), 6, lobby("forged six")));
    a.extend(o.frame(trent, &real[1]));
    assert!(a.contains(&Action::Close(link)), "eve's link kept: {a:?}");
    assert!(shown_chats(&a).is_empty(), "{a:?}");
    assert!(sent_events(&a, trent, x.id()).is_empty());
    // The real ones come again, and are taken.
    let mut a = o.frame(trent, &real[0]);
    a.extend(o.frame(trent, &real[1]));
    assert_eq!(shown_chats(&a), ["six", "seven"]);
}

/// A member's own signature on a seal that vouches for more events than
/// came before the one it signs (an honest peer's never does): taken
/// without a panic, whatever becomes of it, and the core goes on.
#[test]
fn a_seal_covering_more_than_came_before() {
    let (mut o, link) = One::with_link("alice", &evil(), "eve");
    let trent = o.accept(&who(0x7e47), "trent", 3);
    let eve = evil();
    let body = lobby("covers too much");
    let payload = wire::payload_of(&body).unwrap();
    let hash = crypto::event_hash(eve.id(), 1, body.kind(), &payload);
    let covers: Vec<EventHash> = vec![[1; 16], [2; 16], [3; 16]];
    let sig = eve.sign(&crypto::seal_message(&hash, &covers));
    o.frame(
        link,
        &Msg::Event(Event {
            origin: eve.id(),
            seq: 1,
            body,
            seal: Some(Seal { covers, sig }),
        }),
    );
    let a = o.frame(trent, &chat(&who(0x7e47), 1, "still here"));
    assert_eq!(shown_chats(&a), ["still here"]);
}

/// A relay's event far ahead of a member's numbering (signed with the
/// relay's own key), and a LACK saying nothing before it is kept: the core
/// skips nothing of the member's real events, and drops the relay.
#[test]
fn a_forged_event_far_ahead_and_a_lack_silence_nobody() {
    let (mut o, link) = One::with_link("alice", &evil(), "eve");
    let trent = o.accept(&who(0x7e47), "trent", 3);
    let x = who(0x7777);
    o.frame(trent, &join_unlinked(&x, "x"));
    assert_eq!(shown_chats(&o.frame(trent, &chat(&x, 2, "two"))), ["two"]);
    o.frame(link, &frames::forged(&evil(), x.id(), 4000, lobby("far")));
    o.frame(link, &frames::unsigned(x.id(), 4000, lobby("far")));
    o.frame(
        link,
        &Msg::Lack {
            origin: x.id(),
            oldest: 4000,
        },
    );
    let mut a = Vec::new();
    for _ in 0..60 {
        a.extend(o.tick(200));
    }
    assert!(a.contains(&Action::Close(link)), "eve's link kept");
    let a = o.frame(trent, &chat(&x, 3, "three"));
    assert_eq!(shown_chats(&a), ["three"]);
}

/// An unsigned copy of a member's next event, forged, does not swallow
/// the real, signed one: it is shown at once, and the forger dropped.
#[test]
fn an_unsigned_forgery_does_not_swallow_the_real_event() {
    let (mut o, link) = One::with_link("alice", &evil(), "eve");
    let trent = o.accept(&who(0x7e47), "trent", 3);
    let x = who(0x7777);
    o.frame(trent, &join_unlinked(&x, "x"));
    let a = o.frame(link, &frames::unsigned(x.id(), 2, lobby("forged")));
    assert!(shown_chats(&a).is_empty());
    let a = o.frame(trent, &chat(&x, 2, "two"));
    assert_eq!(shown_chats(&a), ["two"]);
    assert!(a.contains(&Action::Close(link)), "eve's link kept: {a:?}");
}
