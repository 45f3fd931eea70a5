//! Files: offers, fetches and the transfers they start (sans-I/O).
//!
//! `:send PATH` hashes the file (at the edge, in bounded steps) and
//! publishes an OFFER event: signed like every event, so nobody can offer
//! a file in someone else's name. Everyone it is for sees it with a local
//! number; `:get N` opens `NAME.part` in the download directory (at the
//! edge), and asks the sender for the data from the part's length on
//! (GET), over a direct link: the one there is, or one opened for it.
//! The sender reads the file in chunks and sends them as DATA frames on
//! that link, never flooded, and never more ahead of what the receiver
//! has acknowledged (MORE) than the path holds in its round trip and
//! what the receiver takes in [`WINDOW_TIME`] besides: the window follows
//! the rate the receiver acknowledges at and the path's own round trip
//! (the kernel's measure of it, told by the edge: [`Files::path_rtt`]),
//! between [`MIN_WINDOW`] and [`MAX_WINDOW`], so a chat line on the same
//! link waits about [`WINDOW_TIME`] behind the file, on a fast machine as
//! on a busy one, and a long path is not capped by the window. When the
//! part is whole, the edge
//! hashes it: a match renames it (never over an existing file:
//! `notes (1).pdf`), a mismatch deletes it; either is told. A broken
//! transfer keeps its part, and `:get N` (or a new offer of the same
//! file) resumes it.
//!
//! This machine decides; it touches no file and no socket. What it asks
//! of the disk is an [`Io`]; what the disk did comes back as a [`Done`].
//!
//! An offer stays open while its sender is in the network: when a member
//! comes (or comes back), the sender publishes its open offers again,
//! soon and at most every [`ANNOUNCE_GAP`], so a later joiner sees them
//! too; those that know one already (same sender, same number) show
//! nothing. Offers end with their sender: when it leaves, its offers are
//! forgotten, and nothing offers them again after a restart (a new
//! `:send` of the same file resumes a part).
//!
//! Wire (payloads; integers big-endian, `str` as in [`crate::proto::wire`]):
//!
//! ```text
//! event type 31 OFFER  num:u32, room:str, to:u64 (0: everyone in room),
//!                      size:u64, hash:32 bytes (BLAKE3), name:str
//! event type 30 OFFER  the same, with a BLAKE2b-256 hash: what versions
//!                      before BLAKE3 offered; still fetched and checked
//! message kind 16 GET  num:u32, offset:u64     "send offer num from offset"
//! message kind 17 DATA num:u32, offset:u64, bytes (to the end of the frame)
//! message kind 18 STOP num:u32, from_sender:u8, text:str
//!                      the fetcher stops (0), or the sender cannot go on (1)
//! message kind 19 MORE num:u32, offset:u64     "I have everything before offset"
//! ```

use super::{LOBBY, MsgId, Net, Show};
use crate::proto::wire::{Body, Frame};
use crate::proto::{LinkId, Millis, NodeId};
use byteorder::{BigEndian, ByteOrder};
use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;

/// The event types of an offer: one whose hash is BLAKE3 (what we
/// offer), and the older one whose hash is BLAKE2b-256.
pub const OFFER: u8 = 31;
pub const OFFER_BLAKE2B: u8 = 30;
/// Message kinds of a transfer.
pub const GET: u8 = 16;
pub const DATA: u8 = 17;
pub const STOP: u8 = 18;
pub const MORE: u8 = 19;
/// File bytes in one DATA frame (a frame is at most 64 KiB).
pub const CHUNK: usize = 64_000;
/// Bytes a sender sends beyond what the receiver has acknowledged: what
/// the path holds in its own round trip R (the kernel's smallest round
/// trip on the link, [`Files::path_rtt`]; 0 where it is not known), and
/// what the receiver takes in [`WINDOW_TIME`] ms besides, at the best
/// rate it acknowledged at in the last `RATE_BEST_OF` samples (each over
/// `RATE_SAMPLE` ms, or R if longer), within these bounds. A chat line
/// on the link waits behind what is beyond the round trip: about
/// [`WINDOW_TIME`]. R is the kernel's, not
/// the time a MORE takes to come back: that includes the receiver's
/// processing and its waits for a CPU, and a window of the rate times
/// [`WINDOW_TIME`] plus the shortest such round trip seen made chat wait
/// longer on a busy loopback machine (p50 2.7-2.9 ms against 2.0-2.4) and
/// did not raise the rate of whole transfers. A window of 1 ms, in place
/// of 2, halved chat's p50 during a transfer on loopback (0.7-1.0 ms
/// against 1.6-2.9) and left the rate where it was, with a network
/// secret or without, in the same runs on a machine busy with other work
/// (load 5-6).
///
/// On loopback the kernel's R is a few µs: the window is what it was,
/// the rate times [`WINDOW_TIME`]. Where R is longer than
/// [`WINDOW_TIME`], two things are added. The window also holds what a
/// receiver takes before it acknowledges ([`ACK_EVERY`] and a chunk):
/// without it the window covers less than the round trip of a MORE, the
/// rate measured falls, and the window with it, sample by sample. And
/// the window alone would grow by (R + 1 ms) / R a sample (2 % on a
/// 50 ms path: seconds to fill it), so a transfer starts by doubling it
/// instead (`GROW_GAIN`) until the rate stops rising (`GROW_FLAT`),
/// as TCP's slow start does: at most twice the window is in flight
/// meanwhile, for a few round trips. A rate that rises past the best
/// seen by a quarter starts the doubling again: TCP's own start (the
/// receiver's kernel growing its window round trip by round trip) can
/// hold the rate flat for three samples early on, and then the window
/// was left to grow by 2 % a sample (2.8-2.9 s, in place of 1.2-1.3, for
/// 64 MiB over 50 ms, in 2 runs of 8). TCP's start still makes some runs
/// slower (2.0-2.4 s, in 3 runs of 8 with no segment sent again): the
/// rate then rises 15-20 % a round trip, with the window twice what it
/// carries, so not held by it.
///
/// The best rate of recent samples, not the last one, as BBR takes the
/// bottleneck's rate: a sample is short of the rate whenever the
/// receiver or the sender is not running for some of it (on a virtual
/// machine whose host takes its CPUs away for a few ms now and then),
/// and a window taken from it was then smaller, which made the next
/// sample shorter still. With the two processes stopped for 5 ms after
/// every 7.5-22.5 ms of running (each on its own, with SIGSTOP, and the
/// raw copy's two processes likewise in the same rounds), 1 GiB went at
/// 41-55 % of the raw copy's rate with the last sample (3 rounds), and
/// 61-64 % with the best of 8; with 10 ms stops after 10-30 ms, 34-48 %
/// against 50-62 %. On a quiet machine the two did not differ (57-113 %
/// against 71-105 %). A window too large for a receiver that has slowed
/// for good is so for `RATE_BEST_OF` samples at most.
///
/// Bytes in flight sit in the kernel's socket buffers on both sides (the
/// sender's process holds at most what the edge lets it queue on the
/// link, the receiver's at most [`WRITE_STEP`] and a chunk per fetch):
/// 16 MiB fills a path of 100 ms at 160 MiB/s, where the kernel's buffers
/// allow it (Linux's default maxima, 4 MiB to send and 6 MiB to receive,
/// bound it first).
pub const WINDOW_TIME: u64 = 1;
pub const MIN_WINDOW: u64 = 256 << 10;
pub const MAX_WINDOW: u64 = 16 << 20;
const RATE_SAMPLE: Millis = 10;
const RATE_BEST_OF: usize = 8;
/// While a transfer starts over a long path, the window is this many
/// times what the rate measured fills; it stops growing so after this
/// many samples in a row without the rate rising by a quarter.
const GROW_GAIN: u64 = 2;
const GROW_FLAT: u8 = 3;
/// The receiver acknowledges (MORE) what it has whenever it has read all
/// there was on the link, since the sender may then be waiting for it
/// ([`Files::drained`]), and otherwise after half of what
/// [`WINDOW_TIME`] takes at the rate it receives at (over the last
/// sample of `RATE_SAMPLE` ms), at least this many bytes and at most
/// [`ACK_MOST`]. Each MORE wakes a sender that waits for it, on the other
/// CPU, and on a virtual machine whose host takes CPUs away that wake-up
/// is what a transfer pays most for (in the kernel, spinning on the
/// socket's lock for a CPU that is not running). Acknowledged after every
/// 64 KiB, the sender was woken 2,460-3,510 times a GiB; so, 1,020-1,430.
/// With that and the window's best rate (see [`WINDOW_TIME`]), 1 GiB went
/// at 47 and 50 % of a raw copy's rate in the runs whose host took 22-23 %
/// of the machine, against 15-53 % (18-38 %, 5 runs) before, and at
/// 55-82 % against 60-74 % in the quieter runs of the same 10 rounds
/// (each with a raw copy of its own). The half is a margin, since the two
/// sides measure the rate apart; reading all there was is what keeps a
/// sender from waiting for good if the half is still beyond its window.
pub const ACK_EVERY: u64 = 64 << 10;
pub const ACK_MOST: u64 = MAX_WINDOW / 4;

/// The rates (bytes a ms) of the last `RATE_BEST_OF` samples.
#[derive(Debug, Clone, Copy, Default)]
struct BestRate {
    rates: [u64; RATE_BEST_OF],
    /// Samples taken: the latest is at `n % RATE_BEST_OF`.
    n: usize,
}

impl BestRate {
    /// A sample of `rate` taken: the best of the last ones.
    fn add(&mut self, rate: u64) -> u64 {
        self.rates[self.n % RATE_BEST_OF] = rate;
        self.n += 1;
        self.rates.iter().copied().max().unwrap_or(rate)
    }
}

/// When a receiver acknowledges (see [`ACK_EVERY`]).
#[derive(Debug, Clone, Copy)]
struct AckPace {
    step: u64,
    /// Since when, and from which offset, the rate is being measured.
    since: Millis,
    from: u64,
}

impl AckPace {
    fn new(offset: u64, now: Millis) -> AckPace {
        AckPace {
            step: ACK_EVERY,
            since: now,
            from: offset,
        }
    }

    /// What a receiver that receives `rate` bytes a ms holds before it
    /// acknowledges, at most.
    fn most(rate: u64) -> u64 {
        (rate.saturating_mul(WINDOW_TIME) / 2).clamp(ACK_EVERY, ACK_MOST)
    }

    /// Whether to acknowledge at `end`, having acknowledged `acked`.
    fn due(&mut self, end: u64, acked: u64, now: Millis) -> bool {
        if now >= self.since + RATE_SAMPLE {
            let rate = end.saturating_sub(self.from) / (now - self.since);
            self.step = AckPace::most(rate);
            (self.since, self.from) = (now, end);
        }
        end.saturating_sub(acked) >= self.step
    }
}

/// What a receiver gets goes to the disk in writes that end at a
/// multiple of this many bytes of the part (or at its end): the kernel's
/// work for a write goes by the page and by the call, and whole pages in
/// writes of this size took a third less of it than a write per chunk
/// (64,000 bytes, which splits a page at both ends) in the same runs.
/// What is held meanwhile is written out before the part is kept,
/// checked or closed.
pub const WRITE_STEP: u64 = 256 << 10;
/// Longest name a file is saved under, in bytes (before ` (N)` and
/// `.part`); longer names from the network are cut, their extension kept.
pub const SAVE_NAME: usize = 200;
/// Offers remembered (ours and others'); beyond it the oldest not in a
/// transfer is forgotten.
pub const MAX_OFFERS: usize = 256;
/// Transfers at once, each way.
pub const MAX_DOWNLOADS: usize = 8;
pub const MAX_UPLOADS: usize = 16;
/// Files larger than this are not offered nor fetched, unless
/// `--max-file` says otherwise.
pub const DEFAULT_MAX_FILE: u64 = 4 << 30;
/// A GET unanswered is asked again this often, and given up after.
const GET_RETRY: Millis = 1_000;
const GET_GIVE_UP: Millis = 15_000;
/// A transfer that gets no data this long is given up (the part stays).
const STALL: Millis = 30_000;
/// Progress is told this often.
const PROGRESS_EVERY: Millis = 1_000;
/// Our open offers are published again this long after a member comes,
/// and not more often than every `ANNOUNCE_GAP`; at most `REANNOUNCE`
/// of them (the newest).
const ANNOUNCE_DELAY: Millis = 300;
pub const ANNOUNCE_GAP: Millis = 2_000;
const REANNOUNCE: usize = 32;

/// A hash of a file: BLAKE3, or BLAKE2b-256 (see [`Algo`]).
pub type Hash = [u8; 32];

/// Which hash an offer's is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    /// BLAKE3 (256 bits): what we offer.
    Blake3,
    /// BLAKE2b-256: offers of versions before BLAKE3.
    Blake2b,
}

/// Settings of the machine.
#[derive(Debug, Clone)]
pub struct Config {
    pub download_dir: PathBuf,
    pub max_file: u64,
}

/// An offer as on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub num: u32,
    pub room: String,
    pub to: Option<NodeId>,
    pub size: u64,
    pub hash: Hash,
    pub algo: Algo,
    pub name: String,
}

impl Offer {
    /// The event that carries it.
    pub fn body(&self) -> Body {
        let mut p = Vec::with_capacity(64 + self.name.len());
        p.extend_from_slice(&self.num.to_be_bytes());
        put_str(&mut p, &self.room);
        p.extend_from_slice(&self.to.map_or(0, |t| t.0).to_be_bytes());
        p.extend_from_slice(&self.size.to_be_bytes());
        p.extend_from_slice(&self.hash);
        put_str(&mut p, &self.name);
        let kind = match self.algo {
            Algo::Blake3 => OFFER,
            Algo::Blake2b => OFFER_BLAKE2B,
        };
        Body::Other { kind, payload: p }
    }

    /// An offer from an event of type `kind`; `None` if it is not one.
    pub fn decode(kind: u8, p: &[u8]) -> Option<Offer> {
        let algo = match kind {
            OFFER => Algo::Blake3,
            OFFER_BLAKE2B => Algo::Blake2b,
            _ => return None,
        };
        let mut r = p;
        let num = BigEndian::read_u32(take(&mut r, 4)?);
        let room = get_str(&mut r)?;
        let to = BigEndian::read_u64(take(&mut r, 8)?);
        let size = BigEndian::read_u64(take(&mut r, 8)?);
        let hash: Hash = take(&mut r, 32)?.try_into().ok()?;
        let name = get_str(&mut r)?;
        r.is_empty().then_some(Offer {
            num,
            room,
            to: (to != 0).then_some(NodeId(to)),
            size,
            hash,
            algo,
            name,
        })
    }
}

/// A transfer message, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg<'a> {
    Get {
        num: u32,
        offset: u64,
    },
    Data {
        num: u32,
        offset: u64,
        data: &'a [u8],
    },
    Stop {
        num: u32,
        sender: bool,
        text: String,
    },
    More {
        num: u32,
        offset: u64,
    },
}

/// Whether a frame body is a transfer message (by its kind byte).
pub fn is_transfer(body: &[u8]) -> bool {
    matches!(body.first(), Some(&(GET..=MORE)))
}

impl<'a> Msg<'a> {
    /// Decodes a frame body; `None` if it is not a well-formed transfer
    /// message.
    pub fn decode(body: &'a [u8]) -> Option<Msg<'a>> {
        let (&kind, mut r) = body.split_first()?;
        let num = BigEndian::read_u32(take(&mut r, 4)?);
        let msg = match kind {
            GET | MORE => {
                let offset = BigEndian::read_u64(take(&mut r, 8)?);
                if kind == GET {
                    Msg::Get { num, offset }
                } else {
                    Msg::More { num, offset }
                }
            }
            DATA => {
                let offset = BigEndian::read_u64(take(&mut r, 8)?);
                let data = std::mem::take(&mut r);
                Msg::Data { num, offset, data }
            }
            STOP => {
                let sender = take(&mut r, 1)?[0] != 0;
                let text = get_str(&mut r)?;
                Msg::Stop { num, sender, text }
            }
            _ => return None,
        };
        r.is_empty().then_some(msg)
    }

    /// The whole frame, length prefix included.
    pub fn frame(&self) -> Frame {
        let mut out = vec![0; 4];
        match self {
            Msg::Get { num, offset } | Msg::More { num, offset } => {
                out.push(if matches!(self, Msg::Get { .. }) {
                    GET
                } else {
                    MORE
                });
                out.extend_from_slice(&num.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
            }
            Msg::Data { num, offset, data } => {
                out.push(DATA);
                out.extend_from_slice(&num.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(&data[..data.len().min(CHUNK)]);
            }
            Msg::Stop { num, sender, text } => {
                out.push(STOP);
                out.extend_from_slice(&num.to_be_bytes());
                out.push(*sender as u8);
                put_str(&mut out, text);
            }
        }
        let len = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        out.into()
    }
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if r.len() < n {
        return None;
    }
    let (a, b) = r.split_at(n);
    *r = b;
    Some(a)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Bounded by the callers (names, rooms, reasons) well below u16.
    let s = &s[..floor_boundary(s, 4096)];
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn get_str(r: &mut &[u8]) -> Option<String> {
    let n = BigEndian::read_u16(take(r, 2)?) as usize;
    String::from_utf8(take(r, n)?.to_vec()).ok()
}

fn floor_boundary(s: &str, max: usize) -> usize {
    let mut n = s.len().min(max);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    n
}

/// A name from the network made safe to save under: its last path
/// component only, without control, bidirectional or invisible format
/// characters, without leading dots or spaces, at most [`SAVE_NAME`]
/// bytes (the extension kept), and never empty, `.` or `..`.
pub fn safe_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut s: String = last.chars().filter(|&c| !unsafe_char(c)).collect();
    let trimmed = s.trim_start_matches(['.', ' ']).trim_end().len();
    s = s.trim_start_matches(['.', ' ']).to_owned();
    s.truncate(floor_boundary(&s, trimmed));
    if s.len() > SAVE_NAME {
        // Keep a short extension: `long….pdf` still opens as a PDF.
        let ext = match s.rfind('.') {
            Some(i) if s.len() - i <= 16 => s[i..].to_owned(),
            _ => String::new(),
        };
        let keep = floor_boundary(&s, SAVE_NAME - ext.len());
        s = format!("{}{ext}", &s[..keep]);
    }
    if s.is_empty() {
        s = "file".into();
    }
    s
}

/// Control characters, bidirectional controls and invisible format
/// characters: none of them belongs in a file name shown to a user.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

/// What the machine asks of the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Io {
    /// Open the file at `path` to offer it: check it is a regular file of
    /// at most `max` bytes, and hash it.
    Prepare { job: u32, path: PathBuf, max: u64 },
    /// Open (or create) `dir/name.part` for `size` bytes: check free
    /// space, and report its length (where to resume). The part is
    /// hashed with `algo` as it is written.
    Open {
        job: u32,
        dir: PathBuf,
        name: String,
        size: u64,
        algo: Algo,
    },
    /// Write these bytes at `offset` of the part.
    Write {
        job: u32,
        offset: u64,
        data: Vec<u8>,
    },
    /// The part is whole: hash it; if it is `hash`, rename it to its name
    /// (or `name (N)`); else delete it.
    Verify { job: u32, hash: Hash },
    /// Close the part and keep it (to resume).
    Keep { job: u32 },
    /// Close the part and delete it.
    Discard { job: u32 },
    /// Open the offered file to send it on `link` as offer `num`; it
    /// must still be `size` bytes, modified at `mtime`.
    Upload {
        job: u32,
        num: u32,
        link: LinkId,
        path: PathBuf,
        size: u64,
        mtime: i64,
    },
    /// Read `len` bytes at `offset` of an upload into a DATA frame, when
    /// its link has room.
    Read { job: u32, offset: u64, len: usize },
    /// Close an upload's file.
    EndUpload { job: u32 },
}

/// What the disk did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    Prepared {
        job: u32,
        result: Result<(u64, Hash, i64), String>,
    },
    /// The part is open; this much of it is there already.
    Opened {
        job: u32,
        result: Result<u64, String>,
    },
    /// Read for an upload: `len` bytes from `offset`, as the DATA
    /// frame that carries them.
    Chunk {
        job: u32,
        offset: u64,
        len: usize,
        frame: Frame,
    },
    /// Saved under this path, verified; or why not (the part is gone).
    Verified {
        job: u32,
        result: Result<PathBuf, String>,
    },
    /// A job failed (a write, an upload's file): why.
    Failed { job: u32, why: String },
}

/// What the machine asks of the node, besides publishing and showing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Send on this link.
    Send(LinkId, Frame),
    /// Send to this member, over a link there is or one opened for it
    /// (then a later retry gets through).
    SendTo(NodeId, Frame),
    Disk(Io),
}

/// Something about files to show the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// An offer: ours (`own`) or someone's; `to` is the one member it is
    /// for, if not everyone.
    Offered {
        id: u32,
        from: String,
        name: String,
        size: u64,
        own: bool,
        to: Option<String>,
        /// The room it is offered to, if not the lobby (nor one member).
        room: Option<String>,
        /// Its id, the same on every peer (`id` is our local number).
        msg: MsgId,
    },
    Progress {
        id: u32,
        name: String,
        done: u64,
        size: u64,
        /// Bytes a second, over the transfer so far.
        rate: u64,
    },
    /// Fetched, verified and saved.
    Received {
        id: u32,
        name: String,
        from: String,
        path: String,
        size: u64,
    },
    /// Someone is fetching one of our offers (from `offset`), or has.
    Fetching {
        id: u32,
        name: String,
        by: String,
        offset: u64,
    },
    Fetched {
        id: u32,
        name: String,
        by: String,
    },
    /// `:files`.
    List(Vec<Row>),
}

/// One line of `:files`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: u32,
    pub from: String,
    pub name: String,
    pub size: u64,
    /// `offered`, `yours`, `opening`, `asking`, `receiving`, `checking`,
    /// `sending to NAME`...
    pub state: String,
    pub done: u64,
}

/// Sizes as people read them: `1.2 MB`.
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n < 1000 {
            return write!(f, "{n} B");
        }
        let units = ["kB", "MB", "GB", "TB", "PB", "EB"];
        let mut v = n as f64 / 1000.0;
        let mut i = 0;
        while v >= 999.95 && i + 1 < units.len() {
            v /= 1000.0;
            i += 1;
        }
        write!(f, "{v:.1} {}", units[i])
    }
}

impl Note {
    /// The plain line (see the man page).
    pub fn plain(&self) -> String {
        match self {
            Note::Offered {
                id,
                name,
                size,
                own: true,
                to,
                room,
                ..
            } => {
                let to = to.as_deref().unwrap_or("everyone");
                let line = format!("* you offer {name} ({}) to {to}: offer {id}", Size(*size));
                in_room(room, line)
            }
            Note::Offered {
                id,
                from,
                name,
                size,
                to,
                room,
                ..
            } => {
                let you = if to.is_some() { "you " } else { "" };
                let line = format!("* {from} offers {you}{name} ({}): :get {id}", Size(*size));
                in_room(room, line)
            }
            Note::Progress {
                id,
                name,
                done,
                size,
                rate,
            } => {
                let pct = percent(*done, *size);
                let left = match (size - done.min(size)).checked_div(*rate) {
                    Some(s) => format!("{s} s left"),
                    None => "time left unknown".into(),
                };
                format!(
                    "* get {id}: {name} {pct}% ({} of {}) at {}/s, {left}",
                    Size(*done),
                    Size(*size),
                    Size(*rate)
                )
            }
            Note::Received {
                id,
                name,
                from,
                path,
                size,
            } => format!(
                "* get {id}: {name} from {from} saved as {path} ({}, hash verified)",
                Size(*size)
            ),
            Note::Fetching {
                id,
                name,
                by,
                offset: 0,
            } => format!("* {by} is fetching {name} (offer {id})"),
            Note::Fetching {
                id,
                name,
                by,
                offset,
            } => format!(
                "* {by} is fetching {name} (offer {id}) from {}",
                Size(*offset)
            ),
            Note::Fetched { id, name, by } => format!("* {by} fetched {name} (offer {id})"),
            Note::List(rows) if rows.is_empty() => "* no file offers".into(),
            Note::List(rows) => {
                let mut s = format!("* {} file offer{}:", rows.len(), plural(rows.len()));
                for r in rows {
                    s.push_str(&format!(
                        "\n  {} {} ({}) from {}: {}",
                        r.id,
                        r.name,
                        Size(r.size),
                        r.from,
                        r.state
                    ));
                    if r.done > 0 && r.done < r.size {
                        s.push_str(&format!(" {}%", percent(r.done, r.size)));
                    }
                }
                s
            }
        }
    }

    /// The terminal line: a progress bar for progress, else the plain line.
    pub fn tty(&self) -> String {
        match self {
            Note::Progress { done, size, .. } => {
                let filled = (percent(*done, *size) / 5) as usize;
                let bar = format!("[{}{}]", "#".repeat(filled), ".".repeat(20 - filled));
                format!("{bar} {}", &self.plain()[2..])
            }
            _ => self.plain(),
        }
    }

    /// The JSON type and fields (after `"type"`), each string escaped by
    /// `esc`.
    pub fn json(&self, esc: impl Fn(&str) -> String) -> (&'static str, String) {
        match self {
            Note::Offered {
                id,
                from,
                name,
                size,
                own,
                to,
                room,
                msg,
            } => (
                "offer",
                format!(
                    r#","msgid":{},"id":{id},"from":{},"name":{},"size":{size},"own":{own},"to":{},"room":{}"#,
                    esc(&msg.to_string()),
                    esc(from),
                    esc(name),
                    to.as_deref().map_or("null".into(), &esc),
                    esc(room.as_deref().unwrap_or(LOBBY))
                ),
            ),
            Note::Progress {
                id,
                name,
                done,
                size,
                rate,
            } => (
                "progress",
                format!(
                    r#","id":{id},"name":{},"done":{done},"size":{size},"rate":{rate}"#,
                    esc(name)
                ),
            ),
            Note::Received {
                id,
                name,
                from,
                path,
                size,
            } => (
                "received",
                format!(
                    r#","id":{id},"name":{},"from":{},"path":{},"size":{size}"#,
                    esc(name),
                    esc(from),
                    esc(path)
                ),
            ),
            Note::Fetching {
                id,
                name,
                by,
                offset,
            } => (
                "fetching",
                format!(
                    r#","id":{id},"name":{},"by":{},"offset":{offset}"#,
                    esc(name),
                    esc(by)
                ),
            ),
            Note::Fetched { id, name, by } => (
                "fetched",
                format!(r#","id":{id},"name":{},"by":{}"#, esc(name), esc(by)),
            ),
            Note::List(rows) => {
                let rows: Vec<String> = rows
                    .iter()
                    .map(|r| {
                        format!(
                            r#"{{"id":{},"from":{},"name":{},"size":{},"state":{},"done":{}}}"#,
                            r.id,
                            esc(&r.from),
                            esc(&r.name),
                            r.size,
                            esc(&r.state),
                            r.done
                        )
                    })
                    .collect();
                ("files", format!(r#","files":[{}]"#, rows.join(",")))
            }
        }
    }
}

fn percent(done: u64, size: u64) -> u64 {
    if size == 0 {
        100
    } else {
        (done.min(size) as u128 * 100 / size as u128) as u64
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// An offer we know: ours or someone's.
#[derive(Debug)]
struct Known {
    id: u32,
    from: NodeId,
    /// The sender's name when the offer came.
    sender: String,
    offer: Offer,
    /// Ours: the file, and its modification time when hashed.
    path: Option<(PathBuf, i64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Opening,
    Asking { first: Millis, last: Millis },
    Receiving,
    Checking,
}

/// A file we fetch.
#[derive(Debug)]
struct Down {
    id: u32,
    job: u32,
    stage: Stage,
    /// Bytes of the part that are there.
    offset: u64,
    /// Where this run started (for the rate).
    from_offset: u64,
    started: Millis,
    last_data: Millis,
    last_progress: Millis,
    acked: u64,
    pace: AckPace,
    link: Option<LinkId>,
    /// What came and is not written yet: the bytes before `offset` (see
    /// [`WRITE_STEP`]).
    held: Vec<u8>,
}

impl Down {
    /// All that is there is acknowledged: the MORE to send on `link`
    /// for the offer's `num`.
    fn ack(&mut self, link: LinkId, num: u32) -> Out {
        self.acked = self.offset;
        let more = Msg::More {
            num,
            offset: self.offset,
        };
        Out::Send(link, more.frame())
    }
}

/// A file we send.
#[derive(Debug)]
struct Up {
    id: u32,
    job: u32,
    link: LinkId,
    peer: NodeId,
    /// Next byte to read.
    next: u64,
    reading: bool,
    acked: u64,
    size: u64,
    /// Bytes sent beyond `acked` at most, and since when and from where
    /// the acknowledgement rate is being measured.
    window: u64,
    since: Millis,
    from: u64,
    /// The path's own round trip in µs, once the edge has told it.
    rtt: Option<u64>,
    /// Still growing the window at the start (see [`WINDOW_TIME`]): the
    /// best rate seen (bytes a ms), and samples since it rose.
    growing: bool,
    best: u64,
    flat: u8,
    rates: BestRate,
}

impl Up {
    /// A sample of `rate` (bytes a ms) taken: the window is what the path
    /// holds in its round trip and the receiver takes in [`WINDOW_TIME`]
    /// at the best rate of the last samples; over a long path, also what
    /// the receiver holds before it acknowledges, and twice all that
    /// while a transfer starts (see [`WINDOW_TIME`]).
    fn sampled(&mut self, rate: u64) {
        let rate = self.rates.add(rate);
        let rtt = self.rtt.unwrap_or(0);
        let fill = rate.saturating_mul(rtt + WINDOW_TIME * 1000) / 1000;
        let mut window = fill;
        if rtt > WINDOW_TIME * 1000 {
            window = fill + AckPace::most(rate) + CHUNK as u64;
            if rate > self.best + self.best / 4 {
                // Rising, or rising again past the best: what held the
                // rate (such as TCP's own start) has let go.
                (self.best, self.flat, self.growing) = (rate, 0, true);
            } else if self.growing {
                self.flat += 1;
                self.growing = self.flat < GROW_FLAT;
            }
            if self.growing {
                window = window.saturating_mul(GROW_GAIN);
            }
        }
        self.window = window.clamp(MIN_WINDOW, MAX_WINDOW);
    }
}

/// A `:send` waiting for its file to be hashed.
#[derive(Debug)]
struct Prep {
    job: u32,
    path: PathBuf,
    to: Option<(NodeId, String)>,
    room: String,
}

/// The file machine. See the module documentation.
#[derive(Debug)]
pub struct Files {
    cfg: Config,
    next_job: u32,
    next_id: u32,
    offers: VecDeque<Known>,
    preps: Vec<Prep>,
    downs: Vec<Down>,
    ups: Vec<Up>,
    out: VecDeque<Out>,
    /// When our open offers are to be published again, and when they
    /// last were.
    announce_at: Option<Millis>,
    announced: Option<Millis>,
    /// Links whose round trip we want to know (see [`Files::path_rtt`]);
    /// at most one per upload.
    rtt_asks: Vec<LinkId>,
}

impl Files {
    pub fn new(cfg: Config) -> Files {
        Files {
            cfg,
            next_job: 1,
            next_id: 1,
            offers: VecDeque::new(),
            preps: Vec::new(),
            downs: Vec::new(),
            ups: Vec::new(),
            out: VecDeque::new(),
            announce_at: None,
            announced: None,
            rtt_asks: Vec::new(),
        }
    }

    /// A link whose round trip the window needs: the edge measures it
    /// (the kernel's smallest round trip on the link's socket) and tells
    /// [`Files::path_rtt`]. Asked as an upload starts and at each rate
    /// sample, not for every chunk.
    pub fn rtt_wanted(&mut self) -> Option<LinkId> {
        self.rtt_asks.pop()
    }

    /// The round trip of `link`'s path is `us` µs, as the kernel measures
    /// it (where it can; elsewhere nothing is told, and the window is
    /// what [`WINDOW_TIME`] takes alone).
    pub fn path_rtt(&mut self, link: LinkId, us: u64) {
        for u in self.ups.iter_mut().filter(|u| u.link == link) {
            u.rtt = Some(us);
        }
    }

    fn ask_rtt(&mut self, link: LinkId) {
        if !self.rtt_asks.contains(&link) && self.rtt_asks.len() < MAX_UPLOADS {
            self.rtt_asks.push(link);
        }
    }

    /// What to do next, for the node to route.
    pub fn next_out(&mut self) -> Option<Out> {
        self.out.pop_front()
    }

    fn job(&mut self) -> u32 {
        self.next_job = self.next_job.wrapping_add(1).max(1);
        self.next_job
    }

    fn disk(&mut self, io: Io) {
        self.out.push_back(Out::Disk(io));
    }

    fn known(&self, id: u32) -> Option<&Known> {
        self.offers.iter().find(|k| k.id == id)
    }

    /// Remembers an offer under a new local number; the oldest not in a
    /// transfer goes when there are too many.
    fn remember(&mut self, mut k: Known) -> u32 {
        if self.offers.len() >= MAX_OFFERS {
            let busy = |id: u32| {
                self.downs.iter().any(|d| d.id == id) || self.ups.iter().any(|u| u.id == id)
            };
            if let Some(i) = self.offers.iter().position(|k| !busy(k.id)) {
                self.offers.remove(i);
            } else {
                self.offers.pop_front();
            }
        }
        k.id = self.next_id;
        self.next_id += 1;
        let id = k.id;
        self.offers.push_back(k);
        id
    }

    /// `:send [NAME] PATH`: hash the file, then offer it (to `to`, else
    /// to everyone in `room`, ours).
    pub fn send(
        &mut self,
        net: &mut impl Net,
        to: Option<(NodeId, String)>,
        path: PathBuf,
        room: &str,
    ) {
        if self.preps.len() >= MAX_UPLOADS {
            let w = "too many files being prepared; try again in a moment".into();
            return net.show(Show::Warning(w));
        }
        let job = self.job();
        let max = self.cfg.max_file;
        self.disk(Io::Prepare {
            job,
            path: path.clone(),
            max,
        });
        let room = room.to_owned();
        self.preps.push(Prep {
            job,
            path,
            to,
            room,
        });
    }

    /// An OFFER event (of type `kind`) of `from` was delivered; `me` is
    /// our id, `here` the room we are in. Returns false if it is not a
    /// well-formed offer.
    pub fn offered(
        &mut self,
        net: &mut impl Net,
        me: NodeId,
        from: NodeId,
        kind: u8,
        payload: &[u8],
        here: &str,
    ) -> bool {
        let Some(mut offer) = Offer::decode(kind, payload) else {
            return false;
        };
        // Not for us: to another member, or to a room we are not in (an
        // offer to us alone is ours wherever we are).
        let other_room = offer.to.is_none() && !offer.room.eq_ignore_ascii_case(here);
        if offer.to.is_some_and(|t| t != me) || other_room {
            return true;
        }
        offer.name = safe_name(&offer.name);
        // The same offer again (a sender re-announcing it): known already.
        if self
            .offers
            .iter()
            .any(|k| k.from == from && k.offer.num == offer.num)
        {
            return true;
        }
        let sender = net.name_of(from);
        let (size, name) = (offer.size, offer.name.clone());
        let to = offer.to.map(|_| net.me().to_owned());
        let room = room_shown(&offer);
        let msg = MsgId::Offer {
            from,
            num: offer.num,
        };
        let id = self.remember(Known {
            id: 0,
            from,
            sender: sender.clone(),
            offer,
            path: None,
        });
        net.show(Show::File(Note::Offered {
            id,
            from: sender.clone(),
            name: name.clone(),
            size,
            own: false,
            to,
            room,
            msg,
        }));
        if size > self.cfg.max_file {
            net.show(Show::Warning(format!(
                "{name} from {sender} is larger than the file size limit ({}): it cannot be fetched",
                Size(self.cfg.max_file)
            )));
        }
        true
    }

    /// `:get ID [DIR]`.
    pub fn get(&mut self, net: &mut impl Net, id: u32, dir: Option<PathBuf>, now: Millis) {
        let Some(k) = self.known(id) else {
            return net.show(Show::Warning(format!("no file offer {id} (see :files)")));
        };
        if k.from == OWN {
            return net.show(Show::Warning(format!("offer {id} is yours")));
        }
        if self.downs.iter().any(|d| d.id == id) {
            return net.show(Show::Warning(format!(
                "offer {id} is being fetched already"
            )));
        }
        if k.offer.size > self.cfg.max_file {
            return net.show(Show::Warning(format!(
                "{} is {}, over the file size limit of {} (see --max-file)",
                k.offer.name,
                Size(k.offer.size),
                Size(self.cfg.max_file)
            )));
        }
        if self.downs.len() >= MAX_DOWNLOADS {
            return net.show(Show::Warning(format!(
                "{MAX_DOWNLOADS} files are being fetched already; wait for one"
            )));
        }
        let (name, size, algo) = (k.offer.name.clone(), k.offer.size, k.offer.algo);
        let job = self.job();
        let dir = dir.unwrap_or_else(|| self.cfg.download_dir.clone());
        self.disk(Io::Open {
            job,
            dir,
            name,
            size,
            algo,
        });
        self.downs.push(Down {
            id,
            job,
            stage: Stage::Opening,
            offset: 0,
            from_offset: 0,
            started: now,
            last_data: now,
            last_progress: now,
            acked: 0,
            pace: AckPace::new(0, now),
            link: None,
            held: Vec::new(),
        });
    }

    /// `:cancel ID`: stop fetching it (the part is deleted), or withdraw
    /// our offer (its transfers stop).
    pub fn cancel(&mut self, net: &mut impl Net, id: u32) {
        let Some(k) = self.known(id) else {
            return net.show(Show::Warning(format!("no file offer {id} (see :files)")));
        };
        let (from, num, name) = (k.from, k.offer.num, k.offer.name.clone());
        if from == OWN {
            for u in self.take_ups(|u| u.id == id) {
                let stop = Msg::Stop {
                    num,
                    sender: true,
                    text: "the offer was withdrawn".into(),
                };
                self.out.push_back(Out::Send(u.link, stop.frame()));
                self.disk(Io::EndUpload { job: u.job });
            }
            self.offers.retain(|k| k.id != id);
            return net.show(Show::Info(format!("offer {id} ({name}) withdrawn")));
        }
        let Some(i) = self.downs.iter().position(|d| d.id == id) else {
            return net.show(Show::Warning(format!("offer {id} is not being fetched")));
        };
        let d = self.downs.remove(i);
        if d.stage != Stage::Opening {
            let stop = Msg::Stop {
                num,
                sender: false,
                text: "cancelled".into(),
            };
            self.out.push_back(Out::SendTo(from, stop.frame()));
        }
        self.disk(Io::Discard { job: d.job });
        net.show(Show::Info(format!("get {id}: {name} cancelled")));
    }

    /// `:files`.
    pub fn list(&self, net: &mut impl Net) {
        let rows = self
            .offers
            .iter()
            .map(|k| {
                let down = self.downs.iter().find(|d| d.id == k.id);
                let ups: Vec<String> = self
                    .ups
                    .iter()
                    .filter(|u| u.id == k.id)
                    .map(|u| net.name_of(u.peer))
                    .collect();
                let (state, done) = match (down, k.from == OWN) {
                    (_, true) if !ups.is_empty() => (format!("sending to {}", ups.join(", ")), 0),
                    (_, true) => ("yours".into(), 0),
                    (None, false) => ("offered".into(), 0),
                    (Some(d), false) => (
                        match d.stage {
                            Stage::Opening => "opening",
                            Stage::Asking { .. } => "asking",
                            Stage::Receiving => "receiving",
                            Stage::Checking => "checking",
                        }
                        .into(),
                        d.offset,
                    ),
                };
                Row {
                    id: k.id,
                    from: if k.from == OWN {
                        net.me().to_owned()
                    } else {
                        k.sender.clone()
                    },
                    name: k.offer.name.clone(),
                    size: k.offer.size,
                    state,
                    done,
                }
            })
            .collect();
        net.show(Show::File(Note::List(rows)));
    }

    /// The disk did `done`.
    pub fn disk_done(&mut self, net: &mut impl Net, done: Done, now: Millis) {
        match done {
            Done::Prepared { job, result } => {
                let Some(i) = self.preps.iter().position(|p| p.job == job) else {
                    return;
                };
                let p = self.preps.remove(i);
                let (size, hash, mtime) = match result {
                    Ok(r) => r,
                    Err(why) => {
                        let w = format!("cannot offer {}: {why}", p.path.display());
                        return net.show(Show::Warning(w));
                    }
                };
                let raw = p
                    .path
                    .file_name()
                    .map_or("file".into(), |n| n.to_string_lossy().into_owned());
                let mut offer = Offer {
                    num: 0,
                    room: p.room,
                    to: p.to.as_ref().map(|t| t.0),
                    size,
                    hash,
                    algo: Algo::Blake3,
                    name: safe_name(&raw),
                };
                let id = self.next_id;
                offer.num = id;
                net.publish(offer.body());
                let name = offer.name.clone();
                let room = room_shown(&offer);
                self.remember(Known {
                    id: 0,
                    from: OWN,
                    sender: net.me().to_owned(),
                    offer,
                    path: Some((p.path, mtime)),
                });
                net.show(Show::File(Note::Offered {
                    id,
                    from: net.me().to_owned(),
                    name,
                    size,
                    own: true,
                    to: p.to.map(|t| t.1),
                    room,
                    msg: MsgId::Offer {
                        from: net.id(),
                        num: id,
                    },
                }));
            }
            Done::Opened { job, result } => {
                let Some(d) = self.downs.iter_mut().find(|d| d.job == job) else {
                    return;
                };
                let id = d.id;
                let offset = match result {
                    Ok(o) => o,
                    Err(why) => {
                        self.downs.retain(|d| d.job != job);
                        return net.show(Show::Warning(format!("get {id}: {why}")));
                    }
                };
                d.offset = offset;
                d.from_offset = offset;
                d.acked = offset;
                d.pace = AckPace::new(offset, now);
                d.started = now;
                d.last_progress = now;
                let Some(k) = self.offers.iter().find(|k| k.id == id) else {
                    return;
                };
                let (from, num, size, name) =
                    (k.from, k.offer.num, k.offer.size, k.offer.name.clone());
                if offset > 0 && offset < size {
                    net.show(Show::Info(format!(
                        "get {id}: resuming {name} at {} of {}",
                        Size(offset),
                        Size(size)
                    )));
                }
                if offset >= size {
                    d.stage = Stage::Checking;
                    let hash = k.offer.hash;
                    return self.disk(Io::Verify { job, hash });
                }
                d.stage = Stage::Asking {
                    first: now,
                    last: now,
                };
                let get = Msg::Get { num, offset };
                self.out.push_back(Out::SendTo(from, get.frame()));
            }
            Done::Chunk {
                job,
                offset,
                len,
                frame,
            } => {
                let Some(u) = self.ups.iter_mut().find(|u| u.job == job) else {
                    return;
                };
                u.reading = false;
                u.next = offset + len as u64;
                self.out.push_back(Out::Send(u.link, frame));
                self.read_more(job);
            }
            Done::Verified { job, result } => {
                let Some(i) = self.downs.iter().position(|d| d.job == job) else {
                    return;
                };
                let d = self.downs.remove(i);
                let Some(k) = self.offers.iter().find(|k| k.id == d.id) else {
                    return;
                };
                match result {
                    Ok(path) => net.show(Show::File(Note::Received {
                        id: d.id,
                        name: k.offer.name.clone(),
                        from: k.sender.clone(),
                        path: path.display().to_string(),
                        size: k.offer.size,
                    })),
                    Err(why) => net.show(Show::Warning(format!(
                        "get {}: {} from {}: {why}",
                        d.id, k.offer.name, k.sender
                    ))),
                }
            }
            Done::Failed { job, why } => {
                if let Some(i) = self.downs.iter().position(|d| d.job == job) {
                    let d = self.downs.remove(i);
                    if let Some(k) = self.offers.iter().find(|k| k.id == d.id) {
                        let stop = Msg::Stop {
                            num: k.offer.num,
                            sender: false,
                            text: "the receiver could not save it".into(),
                        };
                        self.out.push_back(Out::SendTo(k.from, stop.frame()));
                        net.show(Show::Warning(format!(
                            "get {}: {}: {why}",
                            d.id, k.offer.name
                        )));
                    }
                    self.disk(Io::Keep { job });
                } else if let Some(i) = self.ups.iter().position(|u| u.job == job) {
                    let u = self.ups.remove(i);
                    self.disk(Io::EndUpload { job });
                    if let Some(k) = self.offers.iter().find(|k| k.id == u.id) {
                        let stop = Msg::Stop {
                            num: k.offer.num,
                            sender: true,
                            text: why.clone(),
                        };
                        self.out.push_back(Out::Send(u.link, stop.frame()));
                        let w = format!(
                            "offer {}: cannot send {} to {}: {why}",
                            u.id,
                            k.offer.name,
                            net.name_of(u.peer)
                        );
                        net.show(Show::Warning(w));
                    }
                }
            }
        }
    }

    /// Asks the disk for the next chunk of upload `job`, if the window
    /// allows and none is being read.
    fn read_more(&mut self, job: u32) {
        let Some(u) = self.ups.iter_mut().find(|u| u.job == job) else {
            return;
        };
        if u.reading || u.next >= u.size || u.next >= u.acked.saturating_add(u.window) {
            return;
        }
        let len = (u.size - u.next).min(CHUNK as u64) as usize;
        u.reading = true;
        let offset = u.next;
        self.disk(Io::Read { job, offset, len });
    }

    fn take_ups(&mut self, f: impl Fn(&Up) -> bool) -> Vec<Up> {
        let (gone, keep) = std::mem::take(&mut self.ups)
            .into_iter()
            .partition(|u| f(u));
        self.ups = keep;
        gone
    }

    /// A transfer message from `peer` on `link`.
    pub fn frame(
        &mut self,
        net: &mut impl Net,
        link: LinkId,
        peer: NodeId,
        body: &[u8],
        now: Millis,
    ) {
        let Some(msg) = Msg::decode(body) else {
            return; // malformed: ignored, like any unknown message
        };
        match msg {
            Msg::Get { num, offset } => self.on_get(net, link, peer, num, offset, now),
            Msg::More { num, offset } => {
                let Some(u) = self
                    .ups
                    .iter_mut()
                    .find(|u| u.peer == peer && num_of(&self.offers, u.id) == Some(num))
                else {
                    return;
                };
                u.acked = u.acked.max(offset.min(u.next));
                // Over a long path, a sample takes a round trip: what was
                // acknowledged in it answers what went in the last one.
                let sample = RATE_SAMPLE.max(u.rtt.unwrap_or(0).div_ceil(1000));
                let sampled = now >= u.since + sample;
                if sampled {
                    // Bytes a ms, over the sample.
                    let rate = (u.acked - u.from) / (now - u.since);
                    u.sampled(rate);
                    (u.since, u.from) = (now, u.acked);
                }
                let (job, id, link, done) = (u.job, u.id, u.link, u.acked >= u.size);
                if sampled {
                    self.ask_rtt(link);
                }
                if done {
                    self.ups.retain(|u| u.job != job);
                    self.disk(Io::EndUpload { job });
                    if let Some(k) = self.known(id) {
                        let n = Note::Fetched {
                            id,
                            name: k.offer.name.clone(),
                            by: net.name_of(peer),
                        };
                        net.show(Show::File(n));
                    }
                } else {
                    self.read_more(job);
                }
            }
            Msg::Data { num, offset, data } => {
                self.on_data(net, link, peer, num, offset, data, now)
            }
            Msg::Stop {
                num, sender: false, ..
            } => {
                let id = self
                    .ups
                    .iter()
                    .find(|u| u.peer == peer && num_of(&self.offers, u.id) == Some(num))
                    .map(|u| u.id);
                for u in self.take_ups(|u| u.peer == peer && Some(u.id) == id) {
                    self.disk(Io::EndUpload { job: u.job });
                }
            }
            Msg::Stop {
                num,
                sender: true,
                text,
            } => {
                let Some(i) = self.down_of(peer, num) else {
                    return;
                };
                let mut d = self.downs.remove(i);
                self.keep(&mut d);
                if let Some(k) = self.known(d.id) {
                    let text: String = text.chars().take(200).collect();
                    net.show(Show::Warning(format!(
                        "get {}: {} cannot send {}: {text}",
                        d.id, k.sender, k.offer.name
                    )));
                }
            }
        }
    }

    fn down_of(&self, peer: NodeId, num: u32) -> Option<usize> {
        self.downs.iter().position(|d| {
            self.known(d.id)
                .is_some_and(|k| k.from == peer && k.offer.num == num)
        })
    }

    fn on_get(
        &mut self,
        net: &mut impl Net,
        link: LinkId,
        peer: NodeId,
        num: u32,
        offset: u64,
        now: Millis,
    ) {
        let refuse = |files: &mut Files, text: &str| {
            let stop = Msg::Stop {
                num,
                sender: true,
                text: text.into(),
            };
            files.out.push_back(Out::Send(link, stop.frame()));
        };
        let Some(k) = self
            .offers
            .iter()
            .find(|k| k.from == OWN && k.offer.num == num)
        else {
            return refuse(
                self,
                "no such offer (withdrawn, or offered before a restart)",
            );
        };
        if k.offer.to.is_some_and(|t| t != peer) {
            return refuse(self, "the offer is not for you");
        }
        if offset > k.offer.size {
            return refuse(self, "offset beyond the end of the file");
        }
        let (id, size, name) = (k.id, k.offer.size, k.offer.name.clone());
        let Some((path, mtime)) = k.path.clone() else {
            return;
        };
        // A GET again for one under way: it starts over from there.
        for u in self.take_ups(|u| u.peer == peer && u.id == id) {
            self.disk(Io::EndUpload { job: u.job });
        }
        if self.ups.len() >= MAX_UPLOADS {
            return refuse(self, "the sender is busy; try again later");
        }
        let job = self.job();
        self.disk(Io::Upload {
            job,
            num,
            link,
            path,
            size,
            mtime,
        });
        self.ups.push(Up {
            id,
            job,
            link,
            peer,
            next: offset,
            reading: false,
            acked: offset,
            size,
            window: MIN_WINDOW,
            since: now,
            from: offset,
            rtt: None,
            growing: true,
            best: 0,
            flat: 0,
            rates: BestRate::default(),
        });
        self.ask_rtt(link);
        net.show(Show::File(Note::Fetching {
            id,
            name,
            by: net.name_of(peer),
            offset,
        }));
        if offset >= size {
            // Nothing to send: done once the receiver says so.
            return;
        }
        self.read_more(job);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_data(
        &mut self,
        net: &mut impl Net,
        link: LinkId,
        peer: NodeId,
        num: u32,
        offset: u64,
        data: &[u8],
        now: Millis,
    ) {
        let Some(i) = self.down_of(peer, num) else {
            return; // late, after a cancel or a failure: nothing to do
        };
        let (size, hash, name, sender) = {
            let k = self
                .known(self.downs[i].id)
                .expect("a download's offer is known");
            (
                k.offer.size,
                k.offer.hash,
                k.offer.name.clone(),
                k.sender.clone(),
            )
        };
        let d = &mut self.downs[i];
        if !matches!(d.stage, Stage::Asking { .. } | Stage::Receiving) {
            return;
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > size {
            // More than offered: a liar, or another file now.
            let (id, job) = (d.id, d.job);
            self.downs.remove(i);
            self.disk(Io::Discard { job });
            let stop = Msg::Stop {
                num,
                sender: false,
                text: "more data than offered".into(),
            };
            self.out.push_back(Out::Send(link, stop.frame()));
            return net.show(Show::Warning(format!(
                "get {id}: {sender} sent more than the {} offered for {name}: discarded",
                Size(size)
            )));
        }
        // Only what follows what we have: a chunk from a GET repeated may
        // overlap it, or be all ours already. Then what we have is
        // acknowledged: a sender that started again from an earlier
        // offset takes it as the end of what it sent at most, and sends
        // on (its window would wait for good otherwise, since chunks we
        // have move nothing).
        if end <= d.offset && d.stage == Stage::Receiving {
            let more = d.ack(link, num);
            return self.out.push_back(more);
        }
        if offset > d.offset || end <= d.offset {
            return;
        }
        let skip = (d.offset - offset) as usize;
        let job = d.job;
        d.offset = end;
        d.stage = Stage::Receiving;
        d.link = Some(link);
        d.last_data = now;
        let ack = end >= size || d.pace.due(end, d.acked, now);
        // Sent after the write it follows.
        let more = ack.then(|| d.ack(link, num));
        let progress = now >= d.last_progress + PROGRESS_EVERY && end < size;
        if progress {
            d.last_progress = now;
        }
        let note = Note::Progress {
            id: d.id,
            name: name.clone(),
            done: end,
            size,
            rate: rate(end - d.from_offset, now - d.started),
        };
        let whole = end >= size;
        if whole {
            d.stage = Stage::Checking;
        }
        // Held until a write can end on a step (or the part is whole).
        let step = end / WRITE_STEP * WRITE_STEP;
        let from = end - d.held.len() as u64 - (data.len() - skip) as u64;
        if whole || step > from {
            let upto = if whole { end } else { step };
            let cut = (upto - from) as usize - d.held.len();
            let mut w = std::mem::replace(
                &mut d.held,
                Vec::with_capacity((WRITE_STEP as usize + CHUNK).min((size - upto) as usize)),
            );
            w.extend_from_slice(&data[skip..skip + cut]);
            d.held.extend_from_slice(&data[skip + cut..]);
            self.disk(Io::Write {
                job,
                offset: from,
                data: w,
            });
        } else {
            if d.held.capacity() == 0 {
                d.held
                    .reserve((WRITE_STEP as usize + CHUNK).min((size - from) as usize));
            }
            d.held.extend_from_slice(&data[skip..]);
        }
        self.out.extend(more);
        if progress {
            net.show(Show::File(note));
        }
        if whole {
            self.disk(Io::Verify { job, hash });
        }
    }

    /// Whether a transfer runs on `link` (to `peer`), or is about to: it
    /// should not be shed.
    pub fn carries(&self, link: LinkId, peer: Option<NodeId>) -> bool {
        self.ups.iter().any(|u| u.link == link)
            || self.downs.iter().any(|d| {
                d.link == Some(link)
                    || (matches!(d.stage, Stage::Asking { .. })
                        && peer.is_some_and(|p| self.known(d.id).is_some_and(|k| k.from == p)))
            })
    }

    /// The edge has read all there was on `link`: what came on it and is
    /// not acknowledged is, now, since its sender may be waiting for that
    /// (see [`ACK_EVERY`]).
    pub fn drained(&mut self, link: LinkId) {
        let waiting = self
            .downs
            .iter_mut()
            .filter(|d| d.link == Some(link) && d.stage == Stage::Receiving && d.offset > d.acked);
        for d in waiting {
            if let Some(k) = self.offers.iter().find(|k| k.id == d.id) {
                self.out.push_back(d.ack(link, k.offer.num));
            }
        }
    }

    /// `link` is gone: what ran on it stops (a part stays, to resume).
    pub fn link_down(&mut self, net: &mut impl Net, link: LinkId) {
        for u in self.take_ups(|u| u.link == link) {
            self.disk(Io::EndUpload { job: u.job });
        }
        let broken: Vec<usize> = (0..self.downs.len())
            .filter(|&i| {
                self.downs[i].link == Some(link) && self.downs[i].stage == Stage::Receiving
            })
            .collect();
        for i in broken.into_iter().rev() {
            let d = self.downs.remove(i);
            self.interrupted(net, d, "the link to the sender broke");
        }
    }

    /// Member `id` came, or came back: our open offers are published
    /// again soon, for it to see (those who know them already show
    /// nothing).
    pub fn member_came(&mut self, now: Millis) {
        if self.announce_at.is_none() && self.offers.iter().any(|k| k.from == OWN) {
            let soonest = self.announced.map_or(0, |t| t + ANNOUNCE_GAP);
            self.announce_at = Some((now + ANNOUNCE_DELAY).max(soonest));
        }
    }

    /// Publishes our open offers again (the newest [`REANNOUNCE`]), but
    /// those for one member who is not present.
    fn announce(&mut self, net: &mut impl Net, now: Millis) {
        self.announce_at = None;
        self.announced = Some(now);
        let open: Vec<Body> = self
            .offers
            .iter()
            .rev()
            .filter(|k| k.from == OWN && k.offer.to.is_none_or(|t| net.is_present(t)))
            .take(REANNOUNCE)
            .map(|k| k.offer.body())
            .collect();
        for body in open.into_iter().rev() {
            net.publish(body);
        }
    }

    /// Member `id` left the network: its offers end with it (a transfer
    /// of one stops, its part kept for a new offer of the same file).
    pub fn member_left(&mut self, net: &mut impl Net, id: NodeId) {
        for d in self.stop_with(id) {
            self.stopped(net, d, |k, _| {
                format!("{} left; a new offer of it resumes it", k.sender)
            });
        }
        let busy: Vec<u32> = self.downs.iter().map(|d| d.id).collect();
        self.offers.retain(|k| k.from != id || busy.contains(&k.id));
    }

    /// Member `id` left or was lost: its transfers stop.
    pub fn member_gone(&mut self, net: &mut impl Net, id: NodeId) {
        for d in self.stop_with(id) {
            self.interrupted(net, d, "the sender left");
        }
    }

    /// Ends our uploads to member `id`, and takes out our fetches from it
    /// (but one being checked), last first.
    fn stop_with(&mut self, id: NodeId) -> Vec<Down> {
        for u in self.take_ups(|u| u.peer == id) {
            self.disk(Io::EndUpload { job: u.job });
        }
        let gone: Vec<usize> = (0..self.downs.len())
            .filter(|&i| {
                self.known(self.downs[i].id).is_some_and(|k| k.from == id)
                    && self.downs[i].stage != Stage::Checking
            })
            .collect();
        gone.into_iter()
            .rev()
            .map(|i| self.downs.remove(i))
            .collect()
    }

    /// Closes the part of fetch `d`, kept to resume, with what it held
    /// written first.
    fn keep(&mut self, d: &mut Down) {
        if !d.held.is_empty() {
            let data = std::mem::take(&mut d.held);
            let offset = d.offset - data.len() as u64;
            self.disk(Io::Write {
                job: d.job,
                offset,
                data,
            });
        }
        self.disk(Io::Keep { job: d.job });
    }

    /// The fetch `d` stopped, for `why`; `:get` resumes it.
    fn interrupted(&mut self, net: &mut impl Net, d: Down, why: &str) {
        self.stopped(net, d, |_, d| format!("{why}; :get {} resumes it", d.id));
    }

    /// The fetch `d` stopped: its part kept (unless it was still being
    /// opened), and the user told, `tail` saying why and what next.
    fn stopped(&mut self, net: &mut impl Net, mut d: Down, tail: impl Fn(&Known, &Down) -> String) {
        if d.stage != Stage::Opening {
            self.keep(&mut d);
        } else {
            self.disk(Io::Discard { job: d.job });
        }
        if let Some(k) = self.known(d.id) {
            net.show(Show::Warning(format!(
                "get {}: {} interrupted at {} of {}: {}",
                d.id,
                k.offer.name,
                Size(d.offset),
                Size(k.offer.size),
                tail(k, &d)
            )));
        }
    }

    /// The time is `now`: GETs asked again, stalled transfers given up,
    /// progress told, offers published again.
    pub fn tick(&mut self, net: &mut impl Net, now: Millis) {
        if self.announce_at.is_some_and(|t| now >= t) {
            self.announce(net, now);
        }
        let mut i = 0;
        while i < self.downs.len() {
            let d = &mut self.downs[i];
            match d.stage {
                Stage::Asking { first, .. } if now >= first + GET_GIVE_UP => {
                    let d = self.downs.remove(i);
                    self.interrupted(net, d, "the sender does not answer");
                    continue;
                }
                Stage::Asking { first, last } if now >= last + GET_RETRY => {
                    d.stage = Stage::Asking { first, last: now };
                    let (id, offset) = (d.id, d.offset);
                    if let Some(k) = self.known(id) {
                        let get = Msg::Get {
                            num: k.offer.num,
                            offset,
                        };
                        let f = get.frame();
                        let from = k.from;
                        self.out.push_back(Out::SendTo(from, f));
                    }
                }
                Stage::Receiving if now >= d.last_data + STALL => {
                    let d = self.downs.remove(i);
                    self.interrupted(net, d, "no data for 30 s");
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }

    /// When [`Files::tick`] next has work to do.
    pub fn deadline(&self) -> Option<Millis> {
        self.downs
            .iter()
            .filter_map(|d| match d.stage {
                Stage::Asking { first, last } => Some((last + GET_RETRY).min(first + GET_GIVE_UP)),
                Stage::Receiving => Some(d.last_data + STALL),
                _ => None,
            })
            .chain(self.announce_at)
            .min()
    }
}

/// Our own offers are known by this sender id (no node has it: ids are
/// hashes).
const OWN: NodeId = NodeId(0);

/// The room an offer is shown in, if it is one (not the lobby, and not
/// an offer to one member, which is shown wherever that member is).
fn room_shown(offer: &Offer) -> Option<String> {
    let lobby = offer.room.eq_ignore_ascii_case(LOBBY);
    (offer.to.is_none() && !lobby).then(|| offer.room.clone())
}

/// `line` as shown for `room`: `[room] line`, or the line alone.
fn in_room(room: &Option<String>, line: String) -> String {
    match room {
        Some(r) => format!("[{r}] {line}"),
        None => line,
    }
}

fn num_of(offers: &VecDeque<Known>, id: u32) -> Option<u32> {
    offers.iter().find(|k| k.id == id).map(|k| k.offer.num)
}

fn rate(bytes: u64, ms: Millis) -> u64 {
    bytes.saturating_mul(1000) / ms.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::fake::Fake;

    fn files() -> Files {
        Files::new(Config {
            download_dir: "/dl".into(),
            max_file: 10 << 20,
        })
    }

    fn outs(f: &mut Files) -> Vec<Out> {
        std::iter::from_fn(|| f.next_out()).collect()
    }

    /// The body of a frame (without its length).
    fn body(f: &Frame) -> &[u8] {
        &f[4..]
    }

    const ME: NodeId = NodeId(1);
    const ALICE: NodeId = NodeId(2);
    const L: LinkId = LinkId(7);

    fn an_offer(size: u64) -> Offer {
        Offer {
            num: 5,
            room: LOBBY.into(),
            to: None,
            size,
            hash: [9; 32],
            algo: Algo::Blake3,
            name: "notes.pdf".into(),
        }
    }

    fn payload(o: &Offer) -> Vec<u8> {
        let Body::Other { kind, payload } = o.body() else {
            panic!("not an event of a type of its own");
        };
        assert_eq!(kind, OFFER);
        payload
    }

    #[test]
    fn offers_and_messages_round_trip_and_refuse_garbage() {
        let o = Offer {
            to: Some(NodeId(42)),
            ..an_offer(1234)
        };
        let p = payload(&o);
        assert_eq!(Offer::decode(OFFER, &p), Some(o.clone()));
        for n in 0..p.len() {
            assert_eq!(Offer::decode(OFFER, &p[..n]), None, "cut at {n}");
        }
        let mut long = p.clone();
        long.push(0);
        assert_eq!(Offer::decode(OFFER, &long), None);
        let data = [1u8, 2, 3];
        for m in [
            Msg::Get { num: 1, offset: 2 },
            Msg::More { num: 3, offset: 4 },
            Msg::Data {
                num: 5,
                offset: 6,
                data: &data,
            },
            Msg::Stop {
                num: 7,
                sender: true,
                text: "gone".into(),
            },
        ] {
            let f = m.frame();
            assert_eq!(
                f.len(),
                4 + u32::from_be_bytes(f[..4].try_into().unwrap()) as usize
            );
            assert!(is_transfer(body(&f)));
            assert_eq!(Msg::decode(body(&f)), Some(m.clone()));
            for n in 0..body(&f).len() {
                if !matches!(m, Msg::Data { .. }) || n < 13 {
                    assert_eq!(Msg::decode(&body(&f)[..n]), None);
                }
            }
        }
        assert!(!is_transfer(&[4]) && !is_transfer(&[]));
    }

    #[test]
    fn names_from_the_network_are_made_safe() {
        for (bad, good) in [
            ("../../etc/passwd", "passwd"),
            (".bashrc", "bashrc"),
            ("...", "file"),
            ("", "file"),
            ("a\\b\\c.txt", "c.txt"),
            ("x\u{1b}[31my", "x[31my"),
            ("rep\u{202e}gnp.exe", "repgnp.exe"),
            ("zero\u{200b}width", "zerowidth"),
            ("  . spaced .txt ", "spaced .txt"),
            ("notes (1).pdf", "notes (1).pdf"),
        ] {
            assert_eq!(safe_name(bad), good, "{bad:?}");
        }
        let long = format!("{}.tar.gz", "é".repeat(500));
        let s = safe_name(&long);
        assert!(s.len() <= SAVE_NAME && s.ends_with(".gz"), "{s}");
    }

    /// A receiver acknowledges after half of what 1 ms takes at the rate
    /// it receives at, and at once when it has read all there was.
    #[test]
    fn a_receiver_acknowledges_by_its_rate_and_when_it_has_read_all() {
        let mut net = Fake::new("me", &[]);
        let mut f = Files::new(Config {
            download_dir: "/dl".into(),
            max_file: 1 << 30,
        });
        assert!(f.offered(
            &mut net,
            ME,
            ALICE,
            OFFER,
            &payload(&an_offer(1 << 30)),
            LOBBY
        ));
        f.get(&mut net, 1, None, 0);
        let [Out::Disk(Io::Open { job, .. })] = &outs(&mut f)[..] else {
            panic!("no open");
        };
        f.disk_done(
            &mut net,
            Done::Opened {
                job: *job,
                result: Ok(0),
            },
            0,
        );
        outs(&mut f);
        let chunk = vec![0u8; CHUNK];
        let (mut at, mut acked, mut steps) = (0u64, 0u64, Vec::new());
        let more = |f: &mut Files| {
            let mut ends = Vec::new();
            for o in outs(f) {
                if let Out::Send(L, m) = o
                    && let Some(Msg::More { offset, .. }) = Msg::decode(body(&m))
                {
                    ends.push(offset);
                }
            }
            ends
        };
        // 16 chunks a ms (1,024,000 bytes) for 40 ms.
        for t in 0..40 * 16 {
            let d = Msg::Data {
                num: 5,
                offset: at,
                data: &chunk,
            };
            f.frame(&mut net, L, ALICE, body(&d.frame()), t / 16);
            at += CHUNK as u64;
            for end in more(&mut f) {
                if t >= 20 * 16 {
                    steps.push(end - acked);
                }
                acked = end;
            }
        }
        assert!(!steps.is_empty());
        assert!(steps.iter().all(|&x| x == 8 * CHUNK as u64), "{steps:?}");
        // All there was is read: what is not acknowledged is, once, on
        // the link it came on (not on another that was read dry).
        f.drained(LinkId(99));
        assert!(more(&mut f).is_empty());
        f.drained(L);
        assert_eq!(more(&mut f), [at]);
        f.drained(L);
        assert!(more(&mut f).is_empty());
        // A chunk we have (a GET repeated, answered twice): what we have
        // is acknowledged, so that a sender that started again from an
        // earlier offset moves on rather than wait for us.
        let d = Msg::Data {
            num: 5,
            offset: at - CHUNK as u64,
            data: &chunk,
        };
        f.frame(&mut net, L, ALICE, body(&d.frame()), 50);
        assert_eq!(more(&mut f), [at]);
    }

    /// The receiver's side, from the offer to the whole file.
    #[test]
    fn a_fetch_asks_writes_acknowledges_and_verifies() {
        let mut net = Fake::new("me", &[]);
        let mut f = files();
        let size = 5 * CHUNK as u64 + 10;
        assert!(f.offered(&mut net, ME, ALICE, OFFER, &payload(&an_offer(size)), LOBBY));
        assert!(matches!(
            &net.shown[0],
            Show::File(Note::Offered {
                id: 1,
                own: false,
                ..
            })
        ));
        // The same offer again is not shown twice.
        f.offered(&mut net, ME, ALICE, OFFER, &payload(&an_offer(size)), LOBBY);
        assert_eq!(net.shown.len(), 1);
        f.get(&mut net, 1, None, 0);
        let [Out::Disk(Io::Open { job, dir, name, .. })] = &outs(&mut f)[..] else {
            panic!("no open");
        };
        assert_eq!((dir.to_str(), name.as_str()), (Some("/dl"), "notes.pdf"));
        let job = *job;
        f.disk_done(&mut net, Done::Opened { job, result: Ok(0) }, 10);
        let o = outs(&mut f);
        let [Out::SendTo(ALICE, get)] = &o[..] else {
            panic!("{o:?}");
        };
        assert_eq!(Msg::decode(body(get)), Some(Msg::Get { num: 5, offset: 0 }));
        // Whatever link there is to the sender is kept for it.
        assert!(f.carries(LinkId(99), Some(ALICE)) && !f.carries(LinkId(99), Some(ME)));
        // Asked again until data comes, then given up.
        f.tick(&mut net, 10 + GET_RETRY);
        assert!(matches!(&outs(&mut f)[..], [Out::SendTo(ALICE, _)]));
        let chunk = vec![0u8; CHUNK];
        let mut at = 0u64;
        let mut acks = 0;
        let mut written = 0u64;
        let mut writes = 0;
        for (i, len) in [CHUNK, CHUNK, CHUNK, CHUNK, CHUNK, 10]
            .into_iter()
            .enumerate()
        {
            // A repeated chunk (from a repeated GET) overlaps: only the
            // new part is written, and one we have writes nothing (it is
            // acknowledged).
            if i == 1 {
                let d = Msg::Data {
                    num: 5,
                    offset: 0,
                    data: &chunk,
                };
                f.frame(&mut net, L, ALICE, body(&d.frame()), 20);
                let o = outs(&mut f);
                let [Out::Send(L, m)] = &o[..] else {
                    panic!("{o:?}");
                };
                let more = Msg::More {
                    num: 5,
                    offset: CHUNK as u64,
                };
                assert_eq!(Msg::decode(body(m)), Some(more));
            }
            let d = Msg::Data {
                num: 5,
                offset: at,
                data: &chunk[..len],
            };
            f.frame(&mut net, L, ALICE, body(&d.frame()), 20);
            for o in outs(&mut f) {
                match o {
                    Out::Disk(Io::Write { offset, data, .. }) => {
                        // In order, and in whole steps but the last.
                        assert_eq!(offset, written);
                        written += data.len() as u64;
                        assert!(
                            written.is_multiple_of(WRITE_STEP) || written == size,
                            "{written}"
                        );
                        writes += 1;
                    }
                    Out::Send(L, m) => {
                        acks += 1;
                        assert!(matches!(
                            Msg::decode(body(&m)),
                            Some(Msg::More { num: 5, .. })
                        ));
                    }
                    Out::Disk(Io::Verify { hash, .. }) => {
                        assert_eq!(hash, [9; 32]);
                        assert_eq!(at + len as u64, size);
                    }
                    o => panic!("{o:?}"),
                }
            }
            at += len as u64;
        }
        assert!(acks >= 2, "acknowledged as it went, and at the end");
        assert_eq!((written, writes), (size, 2), "one step, then the rest");
        f.disk_done(
            &mut net,
            Done::Verified {
                job,
                result: Ok("/dl/notes.pdf".into()),
            },
            30,
        );
        assert!(matches!(
            net.shown.last(),
            Some(Show::File(Note::Received { .. }))
        ));
        assert_eq!(f.deadline(), None);
    }

    /// The sender's side: GET, reads within the window, MORE, done.
    #[test]
    fn a_send_keeps_within_the_window() {
        let mut net = Fake::new("me", &[]);
        let mut f = files();
        f.send(&mut net, None, "/src/notes.pdf".into(), LOBBY);
        let [Out::Disk(Io::Prepare { job, .. })] = &outs(&mut f)[..] else {
            panic!("no prepare");
        };
        let size = 4 * MAX_WINDOW;
        let result = Ok((size, [3; 32], 77));
        f.disk_done(&mut net, Done::Prepared { job: *job, result }, 0);
        let offer = Offer::decode(OFFER, &payload_of(&net.published[0])).unwrap();
        assert_eq!(
            (offer.num, offer.size, offer.name.as_str()),
            (1, size, "notes.pdf")
        );
        let get = Msg::Get { num: 1, offset: 0 };
        f.frame(&mut net, L, ALICE, body(&get.frame()), 1);
        let o = outs(&mut f);
        let (up, mut read) = match &o[..] {
            [
                Out::Disk(Io::Upload { job, mtime: 77, .. }),
                Out::Disk(Io::Read { offset: 0, len, .. }),
            ] => (*job, *len),
            o => panic!("{o:?}"),
        };
        let mut sent = 0u64;
        // Reads go on until the window is full, and no further.
        while read > 0 {
            f.disk_done(&mut net, chunk_read(up, sent, read), 2);
            sent += read as u64;
            read = 0;
            for o in outs(&mut f) {
                match o {
                    Out::Send(L, d) => assert!(matches!(
                        Msg::decode(body(&d)),
                        Some(Msg::Data { num: 1, .. })
                    )),
                    Out::Disk(Io::Read { offset, len, .. }) => {
                        assert_eq!(offset, sent);
                        read = len;
                    }
                    o => panic!("{o:?}"),
                }
            }
        }
        assert!(
            (MIN_WINDOW..MIN_WINDOW + CHUNK as u64).contains(&sent),
            "{sent}"
        );
        // An acknowledgement opens the window again.
        let more = Msg::More {
            num: 1,
            offset: sent,
        };
        f.frame(&mut net, L, ALICE, body(&more.frame()), 3);
        assert!(matches!(&outs(&mut f)[..], [Out::Disk(Io::Read { .. })]));
        assert!(f.carries(L, Some(ALICE)));
        // The link goes: the upload ends.
        f.link_down(&mut net, L);
        assert!(!f.carries(L, Some(ALICE)));
        assert!(matches!(&outs(&mut f)[..], [Out::Disk(Io::EndUpload { job })] if *job == up));
    }

    /// The disk's answer to a read of `len` bytes at `offset` for upload
    /// `job` of offer 1: a DATA frame of ones.
    fn chunk_read(job: u32, offset: u64, len: usize) -> Done {
        let data = vec![1; len];
        let frame = Msg::Data {
            num: 1,
            offset,
            data: &data,
        }
        .frame();
        Done::Chunk {
            job,
            offset,
            len,
            frame,
        }
    }

    /// A file of `size` bytes offered by us and asked for from its
    /// start by alice: the network, the machine, and what it asked then.
    fn uploading(size: u64) -> (Fake, Files, Vec<Out>) {
        let mut net = Fake::new("me", &[]);
        let mut f = files();
        f.send(&mut net, None, "/src/big".into(), LOBBY);
        let [Out::Disk(Io::Prepare { job, .. })] = &outs(&mut f)[..] else {
            panic!("no prepare");
        };
        let result = Ok((size, [3; 32], 77));
        f.disk_done(&mut net, Done::Prepared { job: *job, result }, 0);
        let get = Msg::Get { num: 1, offset: 0 };
        f.frame(&mut net, L, ALICE, body(&get.frame()), 0);
        let o = outs(&mut f);
        (net, f, o)
    }

    /// The window follows the rate the receiver acknowledges at.
    #[test]
    fn the_window_follows_the_acknowledgement_rate() {
        let (mut net, mut f, o) = uploading(1 << 30);
        let up = match &o[0] {
            Out::Disk(Io::Upload { job, .. }) => *job,
            o => panic!("{o:?}"),
        };
        // Serves every read asked for; `sent`: the end of what went.
        let serve = |f: &mut Files, net: &mut Fake, mut o: Vec<Out>, sent: &mut u64| {
            while let Some(x) = o.pop() {
                if let Out::Disk(Io::Read { offset, len, .. }) = x {
                    f.disk_done(net, chunk_read(up, offset, len), 0);
                    *sent = offset + len as u64;
                    o.extend(outs(f));
                }
            }
        };
        let mut sent = 0;
        serve(&mut f, &mut net, o, &mut sent);
        assert!((MIN_WINDOW..MIN_WINDOW + CHUNK as u64).contains(&sent));
        let mut acked = 0;
        let mut ack = |f: &mut Files, net: &mut Fake, rate: u64, t: Millis, sent: &mut u64| {
            acked = (acked + rate).min(*sent);
            let more = Msg::More {
                num: 1,
                offset: acked,
            };
            f.frame(net, L, ALICE, body(&more.frame()), t);
            let o = outs(f);
            serve(f, net, o, sent);
            *sent - acked
        };
        // Acknowledged at 1 MB a ms, twice a ms (a round trip shorter
        // than WINDOW_TIME): the window grows to what WINDOW_TIME takes.
        let mut ahead = 0;
        for t in 2..=200 {
            ahead = ack(&mut f, &mut net, 500_000, t / 2, &mut sent);
        }
        let w = WINDOW_TIME * 1_000_000;
        let window = w - CHUNK as u64..=w + CHUNK as u64;
        assert!(window.contains(&ahead), "{ahead}");
        // At 10 kB a ms: back to the least.
        for t in 101..=500 {
            ahead = ack(&mut f, &mut net, 10_000, t, &mut sent);
        }
        assert!(ahead <= MIN_WINDOW + CHUNK as u64, "{ahead}");
        // Back at 1 MB a ms, the receiver now stopped for 5 ms of every
        // 15 (its host took its CPU): the window stays what the rate it
        // runs at takes in WINDOW_TIME, not the rate over the stops.
        for t in 1002..=1400 {
            ahead = ack(&mut f, &mut net, 500_000, t / 2, &mut sent);
        }
        let mut least = u64::MAX;
        for t in 1402..=2000 {
            let rate = if t / 2 % 15 < 5 { 0 } else { 500_000 };
            ahead = ack(&mut f, &mut net, rate, t / 2, &mut sent);
            least = least.min(f.ups[0].window);
        }
        assert!(window.contains(&ahead), "{ahead}");
        assert!(least >= w - CHUNK as u64, "{least}");
    }

    /// A path between a sender and its receiver: a bottleneck of
    /// `rate` bytes a ms, then `rtt_us` µs until the receiver's MORE is
    /// back (the receiver acknowledging as `on_data` does). Runs an
    /// upload over it in steps of `step_us` µs, told the path's round
    /// trip when it asks; returns the window after each ms, from 1.
    fn over_path(rate: u64, rtt_us: u64, step_us: u64, ms: u64) -> Vec<u64> {
        over_path_held(rate, rtt_us, step_us, ms, 0)
    }

    /// [`over_path`], the bottleneck carrying a tenth of `rate` for the
    /// first `held` ms (as TCP's start can hold a transfer).
    fn over_path_held(rate: u64, rtt_us: u64, step_us: u64, ms: u64, held: u64) -> Vec<u64> {
        let (mut net, mut f, o) = uploading(1 << 40);
        // The bottleneck's queue (end of each chunk, bytes of it left),
        // what is past it (end, when it is acknowledged), and the
        // receiver's offset and last acknowledgement.
        let mut queue: VecDeque<(u64, u64)> = VecDeque::new();
        let mut flying: VecDeque<(u64, u64)> = VecDeque::new();
        let mut acked = 0u64;
        let mut pace = AckPace::new(0, 0);
        let mut windows = Vec::new();
        let mut o: VecDeque<Out> = o.into();
        let mut t = 0u64;
        while t < ms * 1000 {
            let now = t / 1000;
            // The sender: reads served at once, chunks into the queue.
            while let Some(x) = o.pop_front() {
                match x {
                    Out::Disk(Io::Read { job, offset, len }) => {
                        f.disk_done(&mut net, chunk_read(job, offset, len), now);
                        o.extend(outs(&mut f));
                    }
                    Out::Send(L, frame) => {
                        if let Some(Msg::Data { offset, data, .. }) = Msg::decode(body(&frame)) {
                            let len = data.len() as u64;
                            queue.push_back((offset + len, len));
                        }
                    }
                    _ => {}
                }
            }
            while let Some(link) = f.rtt_wanted() {
                assert_eq!(link, L);
                f.path_rtt(L, rtt_us);
            }
            // The bottleneck drains.
            let rate = if t < held * 1000 { rate / 10 } else { rate };
            let mut budget = rate * step_us / 1000;
            while let Some((end, left)) = queue.front_mut() {
                let n = (*left).min(budget);
                *left -= n;
                budget -= n;
                if *left > 0 {
                    break;
                }
                flying.push_back((*end, t + rtt_us));
                queue.pop_front();
            }
            // The receiver's acknowledgements come back: it acknowledges
            // as `on_data` does, and when it has taken all there was.
            while flying.front().is_some_and(|&(_, at)| at <= t) {
                let (end, _) = flying.pop_front().unwrap();
                let drained = flying.front().is_none_or(|&(_, at)| at > t);
                if pace.due(end, acked, now) || drained {
                    acked = end;
                    let more = Msg::More {
                        num: 1,
                        offset: acked,
                    };
                    f.frame(&mut net, L, ALICE, body(&more.frame()), now);
                    o.extend(outs(&mut f));
                }
            }
            t += step_us;
            if t.is_multiple_of(1000) {
                windows.push(f.ups[0].window);
            }
        }
        windows
    }

    /// Over a long path the window grows, within a bounded number of
    /// samples, to what the path holds in its round trip and 1 ms
    /// besides (and what the receiver holds before it acknowledges), not
    /// capped at the least as a window of 1 ms alone was, and stays
    /// there.
    #[test]
    fn the_window_covers_a_long_round_trip() {
        let rate = 20_000; // bytes a ms: 20 MB/s
        let w = over_path(rate, 50_000, 100, 3_000);
        let want = rate * (50 + WINDOW_TIME) + ACK_EVERY + CHUNK as u64;
        let ok = |x: &u64| x * 100 >= want * 95 && x * 100 <= want * 105;
        // A sample is a round trip (50 ms): settled within 20 of them,
        // after growing to at most twice the window.
        let settled = w.iter().rposition(|x| !ok(x)).map_or(0, |i| i + 1);
        assert!(settled <= 1_000, "not settled at {want}: {w:?}");
        assert!(w.iter().all(|&x| x <= 2 * GROW_GAIN * want), "{w:?}");
        // Held at first (by TCP's start), it grows once let go.
        let w = over_path_held(rate, 50_000, 100, 3_000, 500);
        let settled = w.iter().rposition(|x| !ok(x)).map_or(0, |i| i + 1);
        assert!(settled <= 1_500, "not settled at {want}: {w:?}");
        // Fast and long (1 GB/s, 5 ms): the window also covers what the
        // receiver holds before it acknowledges at that rate (half a ms
        // of it, not 64 KiB).
        let rate = 1_000_000;
        let w = over_path(rate, 5_000, 10, 400);
        let want = rate * (5 + WINDOW_TIME) + AckPace::most(rate) + CHUNK as u64;
        let near = |x: &u64| x * 100 >= want * 97 && x * 100 <= want * 103;
        assert!(w[200..].iter().all(near), "{want}: {w:?}");
        // With no round trip told (not Linux), it is what 1 ms takes.
        let rate = 2_000_000;
        let w = over_path(rate, 0, 10, 300);
        assert!(w[200..].iter().all(|&x| x <= rate * 12 / 10), "{w:?}");
    }

    /// On loopback (a round trip of 0.05 ms) the window stays about
    /// what the rate takes in 1 ms, as it was.
    #[test]
    fn the_window_on_loopback_is_about_one_ms() {
        let rate = 1_000_000; // bytes a ms: 1 GB/s
        let w = over_path(rate, 50, 10, 300);
        let want = rate * WINDOW_TIME;
        let after = &w[100..];
        assert!(
            after
                .iter()
                .all(|&x| x * 10 >= want * 9 && x <= want * 12 / 10),
            "{want}: {after:?}"
        );
    }

    fn payload_of(b: &Body) -> Vec<u8> {
        match b {
            Body::Other { payload, .. } => payload.clone(),
            _ => panic!("not an offer"),
        }
    }

    #[test]
    fn liars_and_strangers_are_turned_away() {
        let mut net = Fake::new("me", &[]);
        let mut f = files();
        // Offers for someone else are not shown.
        let other = Offer {
            to: Some(NodeId(99)),
            ..an_offer(10)
        };
        f.offered(&mut net, ME, ALICE, OFFER, &payload(&other), LOBBY);
        assert!(net.shown.is_empty());
        assert!(!f.offered(&mut net, ME, ALICE, OFFER, b"garbage", LOBBY));
        // A sender that sends more than it offered: discarded.
        f.offered(&mut net, ME, ALICE, OFFER, &payload(&an_offer(10)), LOBBY);
        f.get(&mut net, 1, None, 0);
        let [Out::Disk(Io::Open { job, .. })] = &outs(&mut f)[..] else {
            panic!();
        };
        let job = *job;
        f.disk_done(&mut net, Done::Opened { job, result: Ok(0) }, 0);
        outs(&mut f);
        let d = Msg::Data {
            num: 5,
            offset: 0,
            data: &[0; 11],
        };
        f.frame(&mut net, L, ALICE, body(&d.frame()), 1);
        let o = outs(&mut f);
        assert!(
            matches!(&o[0], Out::Disk(Io::Discard { job: j }) if *j == job),
            "{o:?}"
        );
        assert!(matches!(net.shown.last(), Some(Show::Warning(w)) if w.contains("more than")));
        // A GET for an offer we never made is answered with STOP.
        let get = Msg::Get { num: 9, offset: 0 };
        f.frame(&mut net, L, ALICE, body(&get.frame()), 2);
        let o = outs(&mut f);
        let [Out::Send(L, stop)] = &o[..] else {
            panic!("{o:?}");
        };
        assert!(matches!(
            Msg::decode(body(stop)),
            Some(Msg::Stop { sender: true, .. })
        ));
        // Over the size limit: not fetched.
        f.offered(
            &mut net,
            ME,
            ALICE,
            OFFER,
            &payload(&Offer {
                num: 6,
                ..an_offer(11 << 20)
            }),
            LOBBY,
        );
        f.get(&mut net, 2, None, 3);
        assert!(outs(&mut f).is_empty());
    }

    #[test]
    fn progress_is_told_once_a_second_in_every_format() {
        let mut net = Fake::new("me", &[]);
        let mut f = files();
        let size = 10 * CHUNK as u64;
        f.offered(&mut net, ME, ALICE, OFFER, &payload(&an_offer(size)), LOBBY);
        f.get(&mut net, 1, None, 0);
        let [Out::Disk(Io::Open { job, .. })] = &outs(&mut f)[..] else {
            panic!();
        };
        let job = *job;
        f.disk_done(&mut net, Done::Opened { job, result: Ok(0) }, 0);
        let chunk = vec![0u8; CHUNK];
        for (i, t) in [100, 600, 1000, 1500, 2100].into_iter().enumerate() {
            let d = Msg::Data {
                num: 5,
                offset: (i * CHUNK) as u64,
                data: &chunk,
            };
            f.frame(&mut net, L, ALICE, body(&d.frame()), t);
        }
        let notes: Vec<&Note> = net
            .shown
            .iter()
            .filter_map(|s| match s {
                Show::File(n @ Note::Progress { .. }) => Some(n),
                _ => None,
            })
            .collect();
        assert_eq!(notes.len(), 2, "at 1000 and 2100 ms");
        let n = notes[0];
        assert_eq!(
            n.plain(),
            "* get 1: notes.pdf 30% (192.0 kB of 640.0 kB) at 192.0 kB/s, 2 s left"
        );
        assert_eq!(
            n.tty(),
            "[######..............] get 1: notes.pdf 30% (192.0 kB of 640.0 kB) at 192.0 kB/s, 2 s left"
        );
        let (kind, fields) = n.json(|s| format!("{s:?}"));
        assert_eq!(kind, "progress");
        assert_eq!(
            fields,
            r#","id":1,"name":"notes.pdf","done":192000,"size":640000,"rate":192000"#
        );
    }

    /// Open offers go out again when someone comes (not too often), and
    /// end with their sender.
    #[test]
    fn open_offers_are_published_again_for_those_who_come() {
        let mut net = Fake::new("me", &[]);
        let mut f = files();
        for (n, path) in ["/src/a.bin", "/src/b.bin"].into_iter().enumerate() {
            f.send(&mut net, None, path.into(), LOBBY);
            let [Out::Disk(Io::Prepare { job, .. })] = &outs(&mut f)[..] else {
                panic!("no prepare");
            };
            let result = Ok((10 + n as u64, [n as u8; 32], 1));
            f.disk_done(&mut net, Done::Prepared { job: *job, result }, 0);
        }
        assert_eq!(net.published.len(), 2);
        f.cancel(&mut net, 2);
        f.member_came(1_000);
        let at = f.deadline().expect("an announcement due");
        assert_eq!(at, 1_000 + ANNOUNCE_DELAY);
        f.tick(&mut net, at);
        // Only the one still open, as it was.
        assert_eq!(&net.published[2..], &net.published[..1]);
        // Another comes at once: not before the gap.
        f.member_came(at + 1);
        assert_eq!(f.deadline(), Some(at + ANNOUNCE_GAP));
        f.tick(&mut net, at + ANNOUNCE_GAP);
        assert_eq!(net.published.len(), 4);
        assert_eq!(f.deadline(), None);
        // Someone else's offers end when it leaves.
        f.offered(&mut net, ME, ALICE, OFFER, &payload(&an_offer(10)), LOBBY);
        f.list(&mut net);
        assert!(matches!(net.shown.last(), Some(Show::File(Note::List(r))) if r.len() == 2));
        f.member_left(&mut net, ALICE);
        f.list(&mut net);
        assert!(matches!(net.shown.last(), Some(Show::File(Note::List(r))) if r.len() == 1));
    }

    #[test]
    fn sizes_read_as_people_read_them() {
        let s = |n| Size(n).to_string();
        assert_eq!(s(0), "0 B");
        assert_eq!(s(999), "999 B");
        assert_eq!(s(1000), "1.0 kB");
        assert_eq!(s(1_234_567), "1.2 MB");
        assert_eq!(s(999_960), "1.0 MB");
        assert_eq!(s(u64::MAX), "18.4 EB");
    }

    #[test]
    fn an_unanswered_get_is_given_up_and_the_part_kept() {
        let mut net = Fake::new("me", &[]);
        let mut f = files();
        f.offered(&mut net, ME, ALICE, OFFER, &payload(&an_offer(100)), LOBBY);
        f.get(&mut net, 1, None, 0);
        let [Out::Disk(Io::Open { job, .. })] = &outs(&mut f)[..] else {
            panic!();
        };
        let job = *job;
        f.disk_done(
            &mut net,
            Done::Opened {
                job,
                result: Ok(40),
            },
            0,
        );
        let o = outs(&mut f);
        let [Out::SendTo(ALICE, get)] = &o[..] else {
            panic!("{o:?}");
        };
        assert_eq!(
            Msg::decode(body(get)),
            Some(Msg::Get { num: 5, offset: 40 })
        );
        let mut t = 0;
        while let Some(d) = f.deadline() {
            t = d;
            f.tick(&mut net, t);
            assert!(t <= GET_GIVE_UP);
        }
        assert_eq!(t, GET_GIVE_UP);
        assert!(outs(&mut f).contains(&Out::Disk(Io::Keep { job })));
        assert!(matches!(net.shown.last(), Some(Show::Warning(w)) if w.contains(":get 1 resumes")));
    }

    /// What came and was held for a whole write is written before the
    /// part is kept, however the fetch stops: a resume goes on from it.
    #[test]
    fn what_is_held_is_written_before_the_part_is_kept() {
        let size = 10 * CHUNK as u64;
        for how in ["link", "stop", "left"] {
            let mut net = Fake::new("me", &[]);
            let mut f = files();
            f.offered(&mut net, ME, ALICE, OFFER, &payload(&an_offer(size)), LOBBY);
            f.get(&mut net, 1, None, 0);
            let [Out::Disk(Io::Open { job, .. })] = &outs(&mut f)[..] else {
                panic!();
            };
            let job = *job;
            f.disk_done(&mut net, Done::Opened { job, result: Ok(0) }, 0);
            outs(&mut f);
            let chunk = vec![7u8; CHUNK];
            let mut written = Vec::new();
            for i in 0..6u64 {
                let d = Msg::Data {
                    num: 5,
                    offset: i * CHUNK as u64,
                    data: &chunk,
                };
                f.frame(&mut net, L, ALICE, body(&d.frame()), 1);
                for o in outs(&mut f) {
                    if let Out::Disk(Io::Write { offset, data, .. }) = o {
                        written.push((offset, data.len() as u64));
                    }
                }
            }
            assert_eq!(written, [(0, WRITE_STEP)], "{how}: one whole step so far");
            match how {
                "link" => f.link_down(&mut net, L),
                "stop" => {
                    let stop = Msg::Stop {
                        num: 5,
                        sender: true,
                        text: "gone".into(),
                    };
                    f.frame(&mut net, L, ALICE, body(&stop.frame()), 2);
                }
                _ => f.member_left(&mut net, ALICE),
            }
            let o = outs(&mut f);
            let held = 6 * CHUNK as u64 - WRITE_STEP;
            let Some(i) = o.iter().position(|o| {
                matches!(o, Out::Disk(Io::Write { offset, data, .. })
                    if *offset == WRITE_STEP && data.len() as u64 == held)
            }) else {
                panic!("{how}: the held bytes are not written: {o:?}");
            };
            assert_eq!(o.get(i + 1), Some(&Out::Disk(Io::Keep { job })), "{how}");
        }
    }
}
