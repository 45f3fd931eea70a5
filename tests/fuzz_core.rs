//! Seeded random-bytes test: a million random and mutated frames thrown at
//! the frame decoder and at protocol cores in every state.
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
//! The seed is fixed unless `FUZZ_SEED=random` is set, and always printed;
//! `FUZZ_SEED=<n> cargo test --test fuzz_core` runs seed n, and
//! `FUZZ_FRAMES=<n>` changes the number of frames (1,000,000).

use p2pchat::app::rooms::Cmd;
use p2pchat::node::{
    Action, Command, Config, LinkId, MAX_MEMBERS, Millis, Node as Core, NodeId, Rng, Show,
};
use p2pchat::proto::EventId;
use p2pchat::proto::wire::rooms::{Line, Op, RoomEvent, RoomState};
use p2pchat::proto::wire::{
    self, Body, Entry, Event, Hello, MAX_FRAME, MEMBERS_PER_FRAME, Msg, Refusal, WireError,
};
mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;
use util::frames::{self, chat};

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

struct Gen {
    rng: Rng,
    /// The core's own id and name.
    me: u64,
    my_name: String,
    /// Ids that have said HELLO on some link, with their names.
    known: Vec<(u64, String)>,
    /// Next sequence number to use per origin, to hit real deliveries.
    seqs: HashMap<u64, u64>,
}

impl Gen {
    fn n(&mut self, n: u64) -> u64 {
        self.rng.below(n.max(1))
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.rng.below(100) < percent
    }

    fn pick<T: Clone>(&mut self, v: &[T]) -> T {
        v[self.n(v.len() as u64) as usize].clone()
    }

    fn id(&mut self) -> u64 {
        match self.n(40) {
            0 | 1 => self.me,
            2 => 0,
            3 => u64::MAX,
            4 => self.rng.next_u64(),
            5..=16 => 1 + self.n(16),
            _ if !self.known.is_empty() => {
                let i = self.n(self.known.len() as u64) as usize;
                self.known[i].0
            }
            _ => 100 + self.n(8),
        }
    }

    fn seq(&mut self, origin: u64) -> u64 {
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

    fn hello(&mut self, id: u64, name: String, joining: bool) -> Msg {
        Msg::Hello(Hello {
            version: if self.chance(95) {
                wire::VERSION
            } else {
                self.pick(&[0, 2, u16::MAX])
            },
            id: NodeId(id),
            name,
            port: self.port(),
            joining,
            you: self.ip(),
        })
    }

    fn entry(&mut self) -> Entry {
        let id = self.id();
        let seq = match self.n(6) {
            0 => u64::MAX,
            1 => u64::MAX - 1,
            2 => 0,
            _ => self.n(20),
        };
        Entry {
            id: NodeId(id),
            name: self.name(),
            ip: self.ip(),
            port: self.port(),
            seq,
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

    fn body(&mut self) -> Body {
        if self.chance(30) {
            return Body::Room(self.room_event());
        }
        match self.n(10) {
            0 | 1 => Body::Join {
                name: self.name(),
                ip: self.ip(),
                port: self.port(),
            },
            2 => Body::Leave,
            3 => Body::Suspect {
                target: NodeId(self.id()),
            },
            4 => Body::Alive {
                answers: (0..self.n(3))
                    .map(|_| EventId {
                        origin: NodeId(self.id()),
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

    /// A room event: names of a few rooms, small numbers, any op.
    fn room_event(&mut self) -> RoomEvent {
        let room = ["dev", "ops", "Dev", "lobby", "x"][self.n(5) as usize].to_owned();
        let era = [1, 2, 0x0a00_0001, u32::MAX][self.n(4) as usize];
        match self.n(5) {
            0 => RoomEvent::State(RoomState {
                name: room,
                era,
                epoch: 1 + self.n(4) as u32,
                from: NodeId(self.id()),
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
                gave: (0..self.n(3)).map(|_| NodeId(self.id())).collect(),
                kicked: (0..self.n(3)).map(|_| self.name()).collect(),
                roster: (0..self.n(4))
                    .map(|_| (NodeId(self.id()), self.n(5) as u32))
                    .collect(),
            }),
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
                        origin: NodeId(self.id()),
                        n: self.n(10) as u32,
                        shout: self.chance(20),
                        text: self.text(),
                    })
                    .collect(),
            },
        }
    }

    fn event(&mut self) -> Msg {
        let origin = self.id();
        let seq = self.seq(origin);
        let body = self.body();
        Msg::Event(Event {
            origin: NodeId(origin),
            seq,
            body,
        })
    }

    /// Any valid message, every kind.
    fn msg(&mut self) -> Msg {
        match self.n(20) {
            0..=2 => {
                let id = self.id();
                let name = self.name();
                let joining = self.chance(50);
                self.hello(id, name, joining)
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
                Msg::Fetch {
                    origin: NodeId(origin),
                    from,
                    to,
                }
            }
            _ => Msg::Ping,
        }
    }

    /// A valid frame, mutated or not.
    fn frame(&mut self) -> Vec<u8> {
        let m = self.msg();
        let mut f = wire::frame(&m).unwrap().to_vec();
        if self.chance(25) {
            fix_utf8_markers(&mut f, None);
            return f;
        }
        let rounds = 1 + self.n(3);
        for _ in 0..rounds {
            self.mutate(&mut f);
        }
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

impl Harness {
    fn new(g: &mut Gen, scenario: Scenario, stats: Stats) -> Harness {
        let heap0 = live_bytes();
        let cfg = Config {
            degree: 1 + g.n(6) as usize,
            max_links: if g.chance(20) { 2 } else { 256 },
            ..Config::default()
        };
        g.me = g.rng.next_u64();
        g.my_name = format!("me{}", g.n(4));
        g.known.clear();
        g.seqs.clear();
        let seed = g.rng.next_u64();
        let core = Core::new(cfg, NodeId(g.me), &g.my_name, 40_000, seed);
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
                    let id = g.rng.next_u64();
                    let name = format!("w{}", g.n(100));
                    g.known.push((id, name.clone()));
                    if g.chance(85) {
                        let hello = Msg::Hello(Hello {
                            version: wire::VERSION,
                            id: NodeId(id),
                            name,
                            port: 999,
                            joining: false,
                            you: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                        });
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
            let id = g.rng.next_u64();
            let name = format!("p{}", g.n(1000));
            g.known.push((id, name.clone()));
            let f = wire::frame(&Msg::Hello(Hello {
                version: wire::VERSION,
                id: NodeId(id),
                name,
                port: 20_000 + g.n(1000) as u16,
                joining: g.chance(50),
                you: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            }))
            .unwrap();
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
                0 => Command::Who,
                1 => Command::Room(match g.n(6) {
                    0 => Cmd::Create("dev".into()),
                    1 => Cmd::Join(Some("dev".into())),
                    2 => Cmd::Join(None),
                    3 => Cmd::Kick(g.name()),
                    4 => Cmd::Shout(g.text()),
                    _ => Cmd::Rooms,
                }),
                _ => Command::Say(g.text()),
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
                        assert!(m.is_ok(), "core sent an undecodable frame: {m:?}");
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
                Action::Show(_) => self.stats.shows += 1,
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
fn a_million_mutated_frames() {
    let seed = seed();
    let total: u64 = std::env::var("FUZZ_FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let started = Instant::now();
    let mut g = Gen {
        rng: Rng::new(seed),
        me: 0,
        my_name: String::new(),
        known: Vec::new(),
        seqs: HashMap::new(),
    };
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

const ME: u64 = 0x8000_0000_0000_0000;
const WELCOMER: u64 = 0x4000;
const EVIL: u64 = 0x5000;

impl One {
    fn new(name: &str) -> One {
        One {
            core: Core::new(Config::default(), NodeId(ME), name, 40_000, 7),
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
        o.frame(link, &hello(WELCOMER, "welcomer", false));
        (o, link)
    }

    /// A member core with one accepted link on which `id` said HELLO.
    fn with_link(name: &str, id: u64, peer: &str) -> (One, LinkId) {
        let mut o = One::new(name);
        let link = o.core.accepted(peer_addr(2), o.now);
        o.frame(link, &hello(id, peer, true));
        (o, link)
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

fn hello(id: u64, name: &str, joining: bool) -> Msg {
    Msg::Hello(Hello {
        port: 20_000,
        joining,
        you: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ..frames::hello(id, name)
    })
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
    const X: u64 = 0x7777;
    // Before the member list, events of X arrive out of order: held back.
    for seq in [5, 6] {
        let a = o.frame(link, &chat(X, seq, &format!("old {seq}")));
        assert!(shown_chats(&a).is_empty());
    }
    let a = o.frame(
        link,
        &Msg::Members {
            last: true,
            entries: vec![
                Entry {
                    id: NodeId(WELCOMER),
                    name: "welcomer".into(),
                    ip: None,
                    port: 20_000,
                    seq: 0,
                },
                Entry {
                    id: NodeId(X),
                    name: "x".into(),
                    ip: None,
                    port: 20_001,
                    seq: 10,
                },
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
    // X's next event after the welcome is delivered, once.
    let mut a = o.frame(link, &chat(X, 11, "new"));
    a.extend(o.frame(link, &chat(X, 11, "new")));
    assert_eq!(shown_chats(&a), ["new"]);
}

/// Sequence numbers at the very top: an event is still delivered once.
#[test]
fn sequence_numbers_at_u64_max() {
    // From an origin never seen: far ahead of 1, not held, not delivered.
    let (mut o, link) = One::with_link("alice", EVIL, "eve");
    let mut a = Vec::new();
    for seq in [u64::MAX, u64::MAX - 1, u64::MAX - 4096] {
        a.extend(o.frame(link, &chat(0x1234, seq, "far")));
    }
    a.extend(o.tick(20_000));
    assert!(shown_chats(&a).is_empty(), "{a:?}");
    assert!(o.core.member_count() <= 2);

    // A welcome that puts a member at u64::MAX - 1: sequence number
    // u64::MAX is refused outright (no honest sender gets there, and
    // nothing could follow it), so neither it nor its copies are shown.
    let (mut o, link) = One::joining("joiner");
    const X: u64 = 0x7777;
    let a = o.frame(
        link,
        &Msg::Members {
            last: true,
            entries: vec![Entry {
                id: NodeId(X),
                name: "x".into(),
                ip: None,
                port: 20_001,
                seq: u64::MAX - 1,
            }],
        },
    );
    assert!(o.core.is_member(), "not joined: {a:?}");
    let mut a = Vec::new();
    for _ in 0..3 {
        a.extend(o.frame(link, &chat(X, u64::MAX, "top")));
    }
    assert!(shown_chats(&a).is_empty(), "u64::MAX delivered: {a:?}");
    // The member's other traffic is unaffected.
    let a = o.frame(link, &chat(X, u64::MAX - 1, "below"));
    assert!(
        shown_chats(&a).is_empty(),
        "an old seq delivered again: {a:?}"
    );
}

/// A HELLO that takes our name with a smaller id must not make us leave:
/// anyone can pick an id, so the newcomer is the one turned away.
#[test]
fn hello_with_our_name_does_not_evict_us() {
    let (mut o, _) = One::with_link("alice", 0x9000, "bob");
    o.tick(60_000);
    let link = o.core.accepted(peer_addr(3), o.now);
    let a = o.frame(link, &hello(0, "alice", false));
    assert_eq!(
        exits(&a),
        Vec::<String>::new(),
        "a stranger's HELLO evicts us"
    );
    // Nor a member list or a JOIN event naming a member "alice".
    let link = o.core.accepted(peer_addr(4), o.now);
    o.frame(link, &hello(EVIL, "eve", false));
    let mut a = o.frame(
        link,
        &Msg::Members {
            last: true,
            entries: vec![Entry {
                id: NodeId(1),
                name: "alice".into(),
                ip: None,
                port: 1,
                seq: 0,
            }],
        },
    );
    a.extend(o.frame(
        link,
        &Msg::Event(Event {
            origin: NodeId(2),
            seq: 1,
            body: Body::Join {
                name: "alice".into(),
                ip: None,
                port: 1,
            },
        }),
    ));
    assert_eq!(exits(&a), Vec::<String>::new(), "a forged member evicts us");
}

/// JOIN events carry names that are checked like any other name, so a
/// member list never outgrows a frame.
#[test]
fn forged_join_names_are_checked() {
    let (mut o, link) = One::with_link("alice", EVIL, "eve");
    let long = "n".repeat(40_000);
    for origin in [0x100, 0x101] {
        o.frame(
            link,
            &Msg::Event(Event {
                origin: NodeId(origin),
                seq: 1,
                body: Body::Join {
                    name: long.clone(),
                    ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    port: 1,
                },
            }),
        );
    }
    // A newcomer gets the member list: every frame of it within MAX_FRAME
    // (One::drain checks), and no 40,000-byte name in it.
    let carol = o.core.accepted(peer_addr(5), o.now);
    let a = o.frame(carol, &hello(0x6000, "carol", true));
    for act in &a {
        if let Action::Send(l, f) = act
            && *l == carol
            && let Ok(Msg::Members { entries, .. }) = wire::decode(&f[4..])
        {
            assert!(entries.iter().all(|e| wire::valid_name(&e.name)));
        }
    }
}

/// A member list of thousands of fake members at unreachable ports, from
/// the link on `link`.
fn flood_fake_members(o: &mut One, link: LinkId) {
    let mut n = 0u32;
    for _ in 0..(MAX_MEMBERS + 512) / MEMBERS_PER_FRAME {
        let entries = (0..MEMBERS_PER_FRAME)
            .map(|_| {
                n += 1;
                Entry {
                    id: NodeId(0x1_0000 + u64::from(n)),
                    name: format!("fake{n}"),
                    ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    port: (n % 65535) as u16 + 1,
                    seq: 0,
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
}

/// Thousands of fake members at unreachable ports: a bounded number of
/// dials per second, not a connection storm.
#[test]
fn fake_members_dials_are_rate_bounded() {
    let (mut o, link) = One::with_link("alice", EVIL, "eve");
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
    let (mut o, link) = One::with_link("alice", EVIL, "eve");
    flood_fake_members(&mut o, link);
    let carol = o.core.accepted(peer_addr(6), o.now);
    let a = o.frame(carol, &hello(0x6000, "carol", true));
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
    let (mut o, link) = One::with_link("alice", EVIL, "eve");
    let heap0 = live_bytes();
    let text = "h".repeat(60_000);
    let mut max = 0;
    // 1,000 events of 60 kB: 60 MB if all were kept.
    for i in 0..1_000u64 {
        let origin = 0x10_0000 + i / 8;
        let seq = 2 + i % 8; // 1 never comes
        o.frame(link, &chat(origin, seq, &text));
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
