//! `make bench`: how close p2pchat comes to what this machine can do.
//!
//! Starts real `p2pchat` processes (the binary cargo builds for this bench,
//! `target/release/p2pchat`) on 127.0.0.1 only, drives them through their
//! stdin and reads their plain stdout, one reader thread per peer that
//! stamps each read with `Instant::now()` as it returns, so many peers are
//! timed without serialising on the main thread. The limits it is compared
//! with are measured by the bench itself, in the same run, over the same
//! loopback. Every process it starts is killed (SIGKILL) and reaped by PID
//! from a guard's `Drop`, also when a stage fails or panics (and peers
//! leave on their own when the bench dies: their stdin closes). Waits are
//! for a line with a deadline, never a fixed sleep; the only sleep is the
//! idle-cost window itself. The open-file limit is raised to its maximum.
//!
//! The reader threads share the CPUs with the peers: on this 2-core
//! machine they add one wake-up per peer per message, as any real
//! terminal reading a peer would. Other work on the machine skews every
//! figure; the header and the last note give the load average.
//!
//! Environment:
//!
//! - `BENCH_QUICK=1`: smoke run (small counts, networks of 4 and 16, no
//!   64-peer or scale stage, 20 s idle window; under a minute).
//! - `BENCH_ONLY=onehop,tput1,cpu,tput16,kill,secret,dm,net,rooms,discover,files`:
//!   only these stages (the limits always run; `net` is fan-out, join, RSS
//!   with 64, rooms, idle and scale; `rooms` alone grows a network of the
//!   largest fan-out size, 64 peers or 16 in quick runs, for rooms only).
//! - `BENCH_BIN=path`: run another p2pchat build (one with symbols, for
//!   `perf`); `BENCH_PEER_ARGS="-d 3"`: extra options for every peer.
//! - `BENCH_FANOUT=16:200,64:100`: the fan-out networks (peers:messages)
//!   in place of the plan's, e.g. the 64-peer one in a quick run.
//! - `BENCH_BASELINE=path`: an older p2pchat build to measure beside this
//!   one in the `cpu` stage (its own pair of peers: it need not speak
//!   today's wire version). The `cpu` stage runs in quick runs only when
//!   this is set or `BENCH_ONLY` names it.
//!
//! # Output
//!
//! Progress goes to stderr. Stdout gets a header line, one table, then
//! notes, for example:
//!
//! ```text
//! p2pchat bench: full run, 2 cpus, linux 6.18.44, load average at start 0.31
//! key             what                                     value       target       baseline   status
//! limit.pingpong  loopback TCP ping-pong, half RTT p50     8.3 µs      -            -          -
//! onehop.ratio    one-hop p50 / ping-pong half RTT         4.46×       ≤ 2×         8.3 µs     MISS
//! tput1.rate      100000 msgs 1 → 1, until last has all…   339,875 msg/s  ≥ 100,000/s  stream 207,818/s; relay 4,280,790/s  PASS
//! ...
//! notes:
//! - 6 PASS, 10 MISS (onehop.ratio, ...)
//! - fan-out 16: 9.4 links per peer; per message each receiver woke 2.8 times and read 311 bytes (≈ 8.4 copies)
//! - run took 143 s; other processes used 2% of the machine's CPU time meanwhile, the hypervisor 0% (steal) (...)
//! ```
//!
//! Columns are separated by two or more spaces:
//!
//! - `key`: stable name of the row; compare runs by key.
//! - `what`: what was measured.
//! - `value`: the figure with its unit (µs, ms, msg/s, frames/s, MiB,
//!   bytes, /s, ×, or a count).
//! - `target`: the promise it is checked against, `-` if none.
//! - `baseline`: the same-run limit beside it: the ping-pong half RTT for
//!   latencies; the one-write-per-frame stream and the relay pair for
//!   throughput; `-` if none.
//! - `status`: `PASS` or `MISS` against the target; `-` for a figure with
//!   no target; `SKIP` when the stage was not run (quick mode); `FAIL` when
//!   it could not be measured (the reason is in the notes).
//!
//! Rows, by key:
//!
//! - `limit.pingpong`, `limit.pingpong99`: half a round trip of a 40-byte
//!   length-prefixed frame between two threads over one loopback TCP
//!   connection (NODELAY), p50 and p99. Measured during the one-hop stage,
//!   one round trip per message, so that both see the same machine (on
//!   this VM an idle CPU wakes far slower than a busy one: the same
//!   ping-pong takes 8 µs on a loaded machine and 50 µs on a quiet one).
//! - `limit.pipe_echo`: p50 of a line written to `cat` and read back: the
//!   floor for anything that goes stdin → process → stdout.
//! - `limit.stream1`, `limit.streamN`: one-way stream of 40-byte frames over
//!   loopback TCP, one `write` per frame, and in 64 KiB writes; frames/s
//!   until the receiver has parsed them all.
//! - `limit.relay`, `limit.relay_tput`: the least a peer can do on the same
//!   path: this bench binary re-run as two relays (stdin lines → frames →
//!   TCP → frames → stdout lines, blocking I/O); p50 latency of one line
//!   (interleaved with the one-hop messages too), and lines/s of the
//!   throughput run's count pushed through.
//! - `limit.spawn`: p50 of starting `p2pchat -V` and reaping it.
//! - `size.binary`: bytes of the (stripped) release binary.
//! - `onehop.p50`, `onehop.p99`: two peers, a line written to A's stdin
//!   until B prints it, one message at a time. `onehop.ratio`: p50 over the
//!   ping-pong half RTT (the target); `onehop.relay_ratio`: over the relay.
//! - `rss.idle`: VmRSS of two idle peers, max.
//! - `tput1.*`, `tput16.*`: 100,000 numbered lines written to one peer's
//!   stdin as fast as the pipe takes them, to 1 and to 16 other peers.
//!   `rate`: messages/s from the first write until the last receiver has
//!   printed all of them (or, with losses, its last one). `loss`: messages
//!   that never arrived, summed over receivers. `reorder`: lines that came
//!   after a higher-numbered one, summed. `rss.tput1`: the sender after
//!   1 → 1; `rss.tput`: max over the peers after 1 → 16. `tput16.flood.*`:
//!   the same 1 → 16 run again with every peer started with `--flood`.
//! - `copies16.tree`, `copies16.flood`: full copies of each message each
//!   receiver read in those runs, lazy push and flooding, by the peers' own
//!   count (SIGUSR1); `announce16.tree`: bytes of IHAVE, GRAFT and PRUNE
//!   each receiver read per message, counted apart.
//! - `kill.tree.*`, `kill.flood.*`: 16 peers, lines 1 ms apart from one
//!   (3,000; 300 in quick runs), the relay that relayed most of them
//!   killed half-way; latency of each line until the last survivor prints
//!   it (`p50`, `p99`, `max`, and `after99` for the lines sent after the
//!   kill). `kill.ratio`: lazy push p50 over flooding p50 (target ≤ 1.2);
//!   `kill.loss`: lines lost, repeated or reordered in both runs.
//! - `cpu.line`, `cpu.secret`, `cpu.base`: CPU time (both processes'
//!   time on a CPU, from `/proc/PID/schedstat`) per line of a 1 → 1 stream
//!   (90,000 numbered lines; 20,000 in quick runs) written to one peer's
//!   stdin until the other printed them all: this build, this build with
//!   `P2PCHAT_SECRET` set, and the `BENCH_BASELINE` build (SKIP when it is
//!   not set); the median of 3 runs of each, in turns. `cpu.ratio`: this
//!   build over the baseline. CPU time is less skewed by other work on the
//!   machine than wall time, not immune to it.
//! - `secret.onehop.p50`, `secret.tput1.rate`, `secret.tputN.rate`: the
//!   one-hop and throughput runs again with `P2PCHAT_SECRET` set (every
//!   link encrypted), the figures without a secret from the same run in
//!   the baseline column.
//! - `dm.onehop.p50`, `dm.ack.p50`: in a network of 4, `:msg p1 TEXT`
//!   written to p0 until p1 shows it, and until p0 shows it `delivered`
//!   (p1's acknowledgement back). `dm.offline.p50`: a message to dave,
//!   away, held by the others; dave started again (same identity) through
//!   a random member, from his `* joined through` line until he shows it.
//! - `fanoutN.p50`, `fanoutN.p99` (N = 4, 16, 64 peers in one network, each
//!   joined through a random member): one sender, one line at a time, until
//!   the last of the other N-1 prints it. `fanoutN.flood.*`: the same in a
//!   network of peers started with `--flood`, grown beside it and measured
//!   in turns; `fanoutN.ratio`: lazy push p50 over flooding p50;
//!   `fanoutN.copies`: full copies each receiver read, lazy push.
//! - `join.line.p50`, `join.p50`, `join.max`: starting a peer against a
//!   network of 16 to 63 peers (4 to 15 in quick runs) until it prints
//!   `* joined through`, and until its first line has reached every member
//!   and a line from the first member has reached it.
//! - `rss.net64`: VmRSS per peer in the 64-peer network after its fan-out
//!   runs, max (mean in the what column).
//! - `rooms.p50`, `rooms.p99`, `rooms.lobby.p50`, `rooms.bytes`: in the
//!   largest fan-out network (64 peers; 16 in quick runs), `p1` to `p8`
//!   make rooms (4 in quick runs) and every peer but each ninth (fifth)
//!   goes into one; a line from a room's owner until the last of its
//!   members prints it, one at a time, beside a line from `p0` to the
//!   lobby's members; and the TCP bytes every peer received per line
//!   (from `ss`), room beside lobby. A room line is flooded like any
//!   other (only its room shows it), so both should cost about the same;
//!   the rooms are deleted afterwards.
//! - `idle.wakeups`, `idle.cpu`: the largest fan-out network in steady
//!   state: once it has settled (a second in which no peer woke more than
//!   twice, or 15 s at most, after the rooms stage), over the idle window
//!   with no traffic (20 s in quick runs, 30 s in full ones: heartbeats go
//!   out every 20 s, and a shorter window may hold none), wake-ups (voluntary context switches) per second per
//!   peer (max over peers; mean in the what column), and CPU time (utime +
//!   stime, clock ticks) per second per peer, mean.
//! - `join.big.p50`, `scale.peers`, `scale.p99`: the network grown further
//!   in steps (100, 150, 200, 300, ... within a 60 s budget); joins into
//!   networks of 64 and more; the largest size at which 100 lines each
//!   reached every peer, and the fan-out p99 there.
//!
//! - `discover.first2`, `discover.first8`: 2 and 8 peers started at once
//!   with `--discover` and no host or port, on loopback in a network
//!   namespace the bench makes (root only; SKIP otherwise): from starting
//!   the first until the first peer's first message, said as soon as it
//!   knows of all the others, has reached every other one; p50 of 5 runs
//!   (1 in quick runs), and the max. The target is the libp2p chat
//!   example with mDNS on this kind of machine, about 54 ms and 232 ms,
//!   quoted, not measured here.
//! - `limit.filecopy`: bytes/s of a raw copy of the file below over one
//!   loopback TCP connection into a new file, as `nc < FILE` on one end
//!   and `nc > FILE` on the other: two threads (each end one, as each
//!   peer is one), blocking I/O, default socket buffers, NODELAY; the
//!   sender reads the file a DATA frame's bytes at a time (64,000) and
//!   writes each to the socket, the receiver reads up to 256 KiB at a
//!   time (as a peer's loop) and writes what it read to the file. It does
//!   the work every transfer must do (read a file, cross the loopback,
//!   write a file) and none of what a peer adds (frames, flow control,
//!   hashing): the baseline of `files.ratio`. One copy just
//!   before each of the three transfers below; the median, and its CPU
//!   time per GiB, sender and receiver, in the notes.
//! - `limit.tcpcopy`: bytes/s of a one-way copy over one loopback TCP
//!   connection between two threads, memory to memory, 256 KiB writes
//!   and reads, as much as the file below: what the loopback alone
//!   allows (no file is read or written; it varies a lot from run to
//!   run, 1.2 to 4.3 GiB/s on the same machine). `files.memratio` is the
//!   transfer rate over it, for information.
//! - `limit.blake3`: bytes/s of BLAKE3 over as much in memory, one
//!   thread, 64,000 bytes per update as a receiver hashes: every byte a
//!   peer receives is hashed once, so no transfer goes faster.
//!   `limit.blake2b`: the same for BLAKE2b-256 (offers of older
//!   versions), for comparison.
//! - `files.hash`: `:send` of a file (1 GiB; 256 MiB in quick runs)
//!   until the offer is shown: the time to hash it, as bytes/s. Quick
//!   runs used 64 MiB before, about 70 ms a transfer, whose start and end
//!   swung the ratio from 37 to 145 % between rounds of one build.
//! - `files.rate`: `:get` of that file by a second peer until it prints
//!   the saved line (written, hashed again, renamed), as bytes/s; the
//!   median of three rounds, each a raw copy and then the transfer (the
//!   saved copy deleted between them), so that both meet the same
//!   moments of a shared machine. `files.ratio` (target ≥ 50 %) is the
//!   median of the rounds' ratios, each transfer over the copy just
//!   before it; a note gives all three, each with the share of the
//!   machine's time the hypervisor took during that transfer (steal).
//! - `files.chat.p50`, `files.chat.p99`: lines from the sender to the
//!   receiver, on the link the file goes over, one at a time (at most
//!   one a millisecond) while the file is sent, in all three rounds
//!   (stdin → stdout); beside
//!   the same at rest, measured
//!   just before (`files.rest.p99`). Target: p99 during ≤ 5 ms. A note
//!   gives the p90 and the share of the machine's time the hypervisor
//!   took meanwhile (steal): on a virtual machine whose two CPUs are both
//!   busy with the transfer, a stolen slice of the receiver's CPU delays
//!   the line by as much, whatever the peers do.
//! - `files.alone.rate`, `files.secret.rate`: the same file fetched again
//!   by a fresh pair, with no chat beside it, without and then with a
//!   network secret (every byte encrypted and authenticated by both);
//!   `files.alone.cpu`, `files.secret.cpu`: the CPU time both peers spent
//!   on it, per GiB (less skewed by other load than the rates).
//!
//! Notes give, per stage, links per peer (sockets in /proc/PID/fd), the
//! CPU time each message of a 1 → N run cost the peers and the bench's
//! line readers (and the rate the CPUs allow at that cost), and
//! per message and receiver the context switches and TCP bytes received
//! (from `ss -tinp`), i.e. how many copies of each message a flood
//! delivers; anything the peers wrote to stderr; stalls and departures.
//! For each fan-out network: the CPU time each message cost all its peers
//! (lazy push and flooding); the latencies by phase (the first 10 lines,
//! while the tree may still settle, against the rest; the lines over
//! twice the p50 and where they fall; a histogram); and the hops from
//! `p0` to each receiver in `p0`'s tree, after the warm-up and after the
//! run, from each peer's parent (SIGUSR1's `tree:` line). With 50 lines
//! (quick runs) a p99 is the slowest line of all: one hiccup.
//!
//! Exit status: 0 when every stage ran with no loss and no reordering
//! (whatever the PASS/MISS figures), 1 when a stage failed or lost or
//! reordered messages, so a smoke run catches breakage, not slowness.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The binary cargo built for this bench; `BENCH_BIN` overrides it (a
/// build with symbols, for profiling).
fn bin() -> String {
    std::env::var("BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_p2pchat").to_string())
}
/// Longest wait for any one expected line.
const DEADLINE: Duration = Duration::from_secs(10);
/// A throughput run gives up on a receiver that prints nothing for this long.
const STALL: Duration = Duration::from_secs(15);

/// Lines `p0` says, each waited for by everyone, before a measured run
/// (see [`Net::warm`]).
const WARM: usize = 5;

/// Counts and windows for one run.
struct Plan {
    quick: bool,
    stream_single: usize,
    stream_batched: usize,
    pipe_echo: usize,
    spawn: usize,
    onehop: usize,
    fanout: Vec<(usize, usize)>,
    tput: usize,
    tput_wide: usize,
    /// Lines of the 1 → 1 stream whose CPU time is measured.
    cpu_lines: usize,
    /// Lines of the stream in which a relay is killed.
    kill: usize,
    idle: Duration,
    scale_budget: Duration,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                stream_single: 20_000,
                stream_batched: 200_000,
                pipe_echo: 200,
                spawn: 5,
                onehop: 200,
                fanout: vec![(4, 50), (16, 50)],
                tput: 10_000,
                tput_wide: 16,
                cpu_lines: 20_000,
                kill: 300,
                idle: Duration::from_secs(20),
                scale_budget: Duration::ZERO,
            }
        } else {
            Plan {
                quick,
                stream_single: 300_000,
                stream_batched: 3_000_000,
                pipe_echo: 2_000,
                spawn: 20,
                onehop: 2_000,
                fanout: vec![(4, 500), (16, 500), (64, 300)],
                tput: 100_000,
                tput_wide: 16,
                cpu_lines: 90_000,
                kill: 3_000,
                idle: Duration::from_secs(30),
                scale_budget: Duration::from_secs(60),
            }
        }
    }
}

// ---------------------------------------------------------------- output

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Pass,
    Miss,
    Info,
    Skip,
    Fail,
}

struct Row {
    key: String,
    what: String,
    value: String,
    target: String,
    baseline: String,
    status: Status,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    broken: bool,
}

impl Report {
    fn row(
        &mut self,
        key: &str,
        what: &str,
        value: String,
        target: &str,
        base: String,
        st: Status,
    ) {
        self.rows.push(Row {
            key: key.into(),
            what: what.into(),
            value,
            target: target.into(),
            baseline: base,
            status: st,
        });
    }

    fn info(&mut self, key: &str, what: &str, value: String) {
        self.row(key, what, value, "-", "-".into(), Status::Info);
    }

    /// A figure checked against a target: PASS when `ok`.
    fn check(
        &mut self,
        key: &str,
        what: &str,
        value: String,
        target: &str,
        base: String,
        ok: bool,
    ) {
        let st = if ok { Status::Pass } else { Status::Miss };
        self.row(key, what, value, target, base, st);
    }

    fn skip(&mut self, key: &str, what: &str, target: &str) {
        self.row(key, what, "-".into(), target, "-".into(), Status::Skip);
    }

    fn fail(&mut self, key: &str, what: &str, target: &str) {
        self.row(key, what, "-".into(), target, "-".into(), Status::Fail);
    }

    fn note(&mut self, s: String) {
        eprintln!("bench: note: {s}");
        self.notes.push(s);
    }

    /// A stage could not be measured: its rows become FAIL, the reason a note.
    fn failed(&mut self, stage: &str, e: &str, rows: &[(&str, &str, &str)]) {
        self.broken = true;
        self.note(format!("{stage} failed: {e}"));
        for (k, w, t) in rows {
            self.fail(k, w, t);
        }
    }

    fn print(&self, header: &str) {
        let mut w = [3usize, 4, 5, 6, 8];
        for r in &self.rows {
            for (i, s) in [&r.key, &r.what, &r.value, &r.target, &r.baseline]
                .iter()
                .enumerate()
            {
                w[i] = w[i].max(s.chars().count());
            }
        }
        let mut out = String::new();
        let _ = writeln!(out, "{header}");
        let cols = ["key", "what", "value", "target", "baseline"];
        for (i, c) in cols.iter().enumerate() {
            let _ = write!(out, "{}  ", pad(c, w[i]));
        }
        let _ = writeln!(out, "status");
        for r in &self.rows {
            let st = match r.status {
                Status::Pass => "PASS",
                Status::Miss => "MISS",
                Status::Info => "-",
                Status::Skip => "SKIP",
                Status::Fail => "FAIL",
            };
            for (i, s) in [&r.key, &r.what, &r.value, &r.target, &r.baseline]
                .iter()
                .enumerate()
            {
                let _ = write!(out, "{}  ", pad(s, w[i]));
            }
            let _ = writeln!(out, "{st}");
        }
        let _ = writeln!(out, "notes:");
        let misses: Vec<&str> = self
            .rows
            .iter()
            .filter(|r| r.status == Status::Miss)
            .map(|r| r.key.as_str())
            .collect();
        let _ = writeln!(
            out,
            "- {} PASS, {} MISS{}",
            self.rows
                .iter()
                .filter(|r| r.status == Status::Pass)
                .count(),
            misses.len(),
            if misses.is_empty() {
                String::new()
            } else {
                format!(" ({})", misses.join(", "))
            }
        );
        for n in &self.notes {
            let _ = writeln!(out, "- {n}");
        }
        print!("{out}");
        let _ = io::stdout().flush();
    }
}

fn pad(s: &str, w: usize) -> String {
    let n = s.chars().count();
    format!("{s}{}", " ".repeat(w.saturating_sub(n)))
}

fn us(d: Duration) -> String {
    let u = d.as_secs_f64() * 1e6;
    if u < 1000.0 {
        format!("{u:.1} µs")
    } else {
        format!("{:.2} ms", u / 1000.0)
    }
}

fn rate(r: f64) -> String {
    let r = r.round() as u64;
    let s = r.to_string();
    let mut o = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            o.push(',');
        }
        o.push(c);
    }
    o
}

fn kib(k: u64) -> String {
    format!("{:.2} MiB", k as f64 / 1024.0)
}

fn pct(v: &[Duration], q: f64) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    if s.is_empty() {
        return Duration::ZERO;
    }
    s[((s.len() - 1) as f64 * q).round() as usize]
}

fn progress(s: &str) {
    eprintln!("bench: {s}");
}

// ---------------------------------------------------------------- peers

/// What a reader thread saw: the lines of one read, stamped on arrival.
type Batch = (Instant, Vec<String>);

/// A running `p2pchat`, killed and reaped by `Drop`.
struct Peer {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<Batch>,
    /// Lines received and not yet matched or discarded.
    pending: VecDeque<(Instant, String)>,
    eof: bool,
    port: u16,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The peer's own account of its traffic, one line per SIGUSR1.
    traffic: Receiver<String>,
    /// Its own identity and known peers, never the user's.
    home: PathBuf,
}

/// What a peer received, by its own count (SIGUSR1): full events, and
/// the lazy push messages (IHAVE, GRAFT, PRUNE); and events it sent.
#[derive(Clone, Copy, Default)]
struct Traffic {
    events: u64,
    lazy_bytes: u64,
    sent_events: u64,
}

impl Traffic {
    /// From `traffic: in: event F B, ihave F B, graft F B, prune F B,
    /// other F B; out: event F B, ...`.
    fn parse(line: &str) -> Option<Traffic> {
        let (_, rest) = line.split_once("traffic: in: ")?;
        let (inbound, outbound) = rest.split_once("; out: ")?;
        let field = |part: &str, kind: &str| -> Option<(u64, u64)> {
            let f = part
                .split(", ")
                .find_map(|f| f.strip_prefix(kind)?.strip_prefix(' '))?;
            let (n, b) = f.split_once(' ')?;
            Some((n.parse().ok()?, b.trim().parse().ok()?))
        };
        let mut lazy = 0;
        for k in ["ihave", "graft", "prune"] {
            lazy += field(inbound, k)?.1;
        }
        Some(Traffic {
            events: field(inbound, "event")?.0,
            lazy_bytes: lazy,
            sent_events: field(outbound, "event")?.0,
        })
    }

    fn since(self, before: Traffic) -> Traffic {
        Traffic {
            events: self.events.saturating_sub(before.events),
            lazy_bytes: self.lazy_bytes.saturating_sub(before.lazy_bytes),
            sent_events: self.sent_events.saturating_sub(before.sent_events),
        }
    }
}

/// Reads `r` until EOF, splitting it into lines; each read's lines are
/// stamped with the moment the read returned.
fn line_reader<R: Read + Send + 'static>(mut r: R, tx: Sender<Batch>) {
    let spawn = thread::Builder::new().stack_size(128 << 10).spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        let mut partial: Vec<u8> = Vec::new();
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let t = Instant::now();
            let mut lines = Vec::new();
            let mut start = 0;
            for i in 0..n {
                if buf[i] == b'\n' {
                    let l = if partial.is_empty() {
                        String::from_utf8_lossy(&buf[start..i]).into_owned()
                    } else {
                        partial.extend_from_slice(&buf[start..i]);
                        let l = String::from_utf8_lossy(&partial).into_owned();
                        partial.clear();
                        l
                    };
                    lines.push(l);
                    start = i + 1;
                }
            }
            partial.extend_from_slice(&buf[start..n]);
            if !lines.is_empty() && tx.send((t, lines)).is_err() {
                return;
            }
        }
    });
    spawn.expect("reader thread");
}

/// Keeps the first few stderr lines of a peer, for the notes; its
/// traffic lines (SIGUSR1) go to `traffic`.
fn err_reader<R: Read + Send + 'static>(
    r: R,
    keep: Arc<Mutex<Vec<String>>>,
    traffic: Sender<String>,
) {
    let (tx, rx) = mpsc::channel::<Batch>();
    line_reader(r, tx);
    let spawn = thread::Builder::new().stack_size(64 << 10).spawn(move || {
        for (_, lines) in rx {
            let mut k = keep.lock().unwrap();
            for l in lines {
                if l.contains("traffic: in: ") || l.contains("p2pchat: tree: ") {
                    let _ = traffic.send(l);
                } else if k.len() < 20 {
                    k.push(l);
                }
            }
        }
    });
    spawn.expect("stderr thread");
}

impl Peer {
    /// Starts `p2pchat --plain -b 127.0.0.1 [ARGS] NAME [127.0.0.1 VIA]`
    /// and waits for its listening line.
    fn start(name: &str, via: Option<u16>, args: &[String]) -> Result<Peer, String> {
        let mut cmd = Command::new(bin());
        cmd.args(["--plain", "-b", "127.0.0.1"]);
        if let Ok(extra) = std::env::var("BENCH_PEER_ARGS") {
            cmd.args(extra.split_whitespace());
        }
        cmd.args(args);
        if SECRET.load(Ordering::Relaxed) {
            cmd.env("P2PCHAT_SECRET", "the bench's network secret");
        } else {
            cmd.env_remove("P2PCHAT_SECRET");
        }
        cmd.arg(name);
        if let Some(p) = via {
            cmd.args(["127.0.0.1", &p.to_string()]);
        }
        Peer::spawn(name, cmd)
    }

    /// Starts `cmd` with piped stdio and waits for its first line, which
    /// must be `listening on port N`.
    fn spawn(name: &str, cmd: Command) -> Result<Peer, String> {
        let mut p = Peer::launch(name, cmd)?;
        p.listening()?;
        Ok(p)
    }

    /// Starts `cmd` with piped stdio, without waiting for anything.
    fn launch(name: &str, mut cmd: Command) -> Result<Peer, String> {
        static HOMES: AtomicU64 = AtomicU64::new(0);
        let n = HOMES.fetch_add(1, Ordering::Relaxed);
        let home = REUSE_HOME.lock().unwrap().take().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("p2pchat-bench-{}-{n}", std::process::id()))
        });
        let mut child = cmd
            .env_remove("NO_COLOR")
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_STATE_HOME", home.join("state"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
        let (tx, rx) = mpsc::channel();
        line_reader(child.stdout.take().expect("piped"), tx);
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (ttx, traffic) = mpsc::channel();
        err_reader(child.stderr.take().expect("piped"), stderr.clone(), ttx);
        Ok(Peer {
            name: name.into(),
            stdin: child.stdin.take(),
            child,
            rx,
            pending: VecDeque::new(),
            eof: false,
            port: 0,
            stderr,
            traffic,
            home,
        })
    }

    /// Waits for the first line, which must be `listening on port N`.
    fn listening(&mut self) -> Result<(), String> {
        let (_, first) = self.wait(&|_| true, Instant::now() + DEADLINE)?;
        self.port = first
            .strip_prefix("listening on port ")
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| {
                format!(
                    "{}: first line is not a listening line: {first:?}",
                    self.name
                )
            })?;
        Ok(())
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn take(&mut self, (t, lines): Batch) {
        self.pending.extend(lines.into_iter().map(|l| (t, l)));
    }

    /// Waits until `deadline` for a line for which `pred` holds; returns
    /// when it arrived and the line. Lines before it are discarded.
    fn wait(
        &mut self,
        pred: &dyn Fn(&str) -> bool,
        deadline: Instant,
    ) -> Result<(Instant, String), String> {
        loop {
            if let Some(i) = self.pending.iter().position(|(_, l)| pred(l)) {
                self.pending.drain(..i);
                return Ok(self.pending.pop_front().expect("found"));
            }
            if self.eof {
                return Err(format!(
                    "{}: stdout closed{}",
                    self.name,
                    self.stderr_tail()
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                let last: Vec<&str> = self
                    .pending
                    .iter()
                    .rev()
                    .take(3)
                    .map(|(_, l)| l.as_str())
                    .collect();
                return Err(format!(
                    "{}: no expected line by the deadline (last lines: {last:?}){}",
                    self.name,
                    self.stderr_tail()
                ));
            }
            match self.rx.recv_timeout(deadline - now) {
                Ok(b) => self.take(b),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.eof = true,
            }
        }
    }

    /// Waits for exactly `line`; returns when it arrived.
    fn expect(&mut self, line: &str, deadline: Instant) -> Result<Instant, String> {
        self.wait(&|l| l == line, deadline).map(|(t, _)| t)
    }

    /// Forgets every line received so far.
    fn discard(&mut self) {
        self.pending.clear();
        loop {
            match self.rx.try_recv() {
                Ok(_) => {}
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.eof = true;
                    return;
                }
            }
        }
    }

    fn send(&mut self, line: &str) -> Result<(), String> {
        let w = self.stdin.as_mut().ok_or("stdin taken")?;
        w.write_all(format!("{line}\n").as_bytes())
            .map_err(|e| format!("{}: write stdin: {e}{}", self.name, self.stderr_tail()))
    }

    fn stderr_tail(&self) -> String {
        let e = self.stderr.lock().unwrap();
        if e.is_empty() {
            String::new()
        } else {
            format!("; stderr: {:?}", &e[..e.len().min(3)])
        }
    }

    /// The peer's own count of its traffic so far (it is sent SIGUSR1).
    fn traffic(&mut self) -> Result<Traffic, String> {
        let l = self.usr1("traffic: in: ")?;
        Traffic::parse(&l).ok_or_else(|| format!("{}: bad traffic line {l:?}", self.name))
    }

    /// Whom each sender's lines come from (SIGUSR1's `tree:` line): pairs
    /// of (sender, the neighbour that pushes its lines to this peer).
    fn tree(&mut self) -> Result<Vec<(String, String)>, String> {
        let l = self.usr1("p2pchat: tree: ")?;
        let (_, rest) = l.split_once("tree: ").expect("matched");
        Ok(rest
            .split(", ")
            .filter_map(|p| p.split_once('<'))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect())
    }

    /// Sends SIGUSR1 and waits for the line it writes that contains `what`.
    fn usr1(&mut self, what: &str) -> Result<String, String> {
        while self.traffic.try_recv().is_ok() {}
        // SAFETY: kill(2) on our own, not yet reaped child.
        unsafe { libc::kill(self.pid(), libc::SIGUSR1) };
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.traffic.recv_timeout(left) {
                Ok(l) if l.contains(what) => return Ok(l),
                Ok(_) => {}
                Err(_) => return Err(format!("{}: no {what:?} line after SIGUSR1", self.name)),
            }
        }
    }

    /// Waits for the line `header` and the `n` lines after it.
    fn block(&mut self, header: &str, n: usize, deadline: Instant) -> Result<Vec<String>, String> {
        self.wait(&|l| l == header, deadline)?;
        (0..n)
            .map(|_| self.wait(&|_| true, deadline).map(|(_, l)| l))
            .collect()
    }

    fn rss_kib(&self) -> u64 {
        proc_status(self.pid(), "VmRSS:")
    }

    /// Open sockets, less the listener: the peer's links.
    fn links(&self) -> usize {
        let Ok(d) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) else {
            return 0;
        };
        d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|t| t.to_string_lossy().starts_with("socket:"))
            .count()
            .saturating_sub(1)
    }

    /// (CPU clock ticks, voluntary + involuntary context switches).
    fn cost(&self) -> (u64, u64) {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, r)| r)
            .split_whitespace()
            .collect();
        let field = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        let ticks = field(11) + field(12);
        let cs = proc_status(self.pid(), "voluntary_ctxt_switches:")
            + proc_status(self.pid(), "nonvoluntary_ctxt_switches:");
        (ticks, cs)
    }

    /// Wake-ups so far: each time the process went to sleep of its own
    /// accord (voluntary context switches; involuntary ones are other
    /// work on the machine taking the CPU from a running peer).
    fn wakeups(&self) -> u64 {
        proc_status(self.pid(), "voluntary_ctxt_switches:")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// TCP payload bytes received so far on 127.0.0.1, by process id, from
/// `ss -tinp` (empty if `ss` is missing).
fn tcp_received() -> std::collections::HashMap<i32, u64> {
    let mut m = std::collections::HashMap::new();
    let Ok(out) = Command::new("ss")
        .args(["-tinpH", "state", "established", "src", "127.0.0.1"])
        .stderr(Stdio::null())
        .output()
    else {
        return m;
    };
    let mut pid = None;
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(i) = l.find("pid=") {
            pid = l[i + 4..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|p| p.parse::<i32>().ok());
        } else if let (Some(p), Some(i)) = (pid, l.find("bytes_received:")) {
            let n: u64 = l[i + 15..]
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            *m.entry(p).or_insert(0) += n;
            pid = None;
        }
    }
    m
}

fn proc_status(pid: i32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A network of peers `p0`, `p1`, ...; `p0` starts it.
struct Net {
    peers: Vec<Peer>,
    /// Options every peer is started with (`--flood`).
    args: Vec<String>,
    rng: u64,
    /// Join times: (network size joined, until joined line, until first
    /// message both ways).
    joins: Vec<(usize, Duration, Duration)>,
}

impl Net {
    fn new() -> Net {
        Net::with(&[])
    }

    fn with(args: &[&str]) -> Net {
        Net {
            peers: Vec::new(),
            args: args.iter().map(|s| s.to_string()).collect(),
            rng: 0x9e37_79b9_7f4a_7c15,
            joins: Vec::new(),
        }
    }

    fn below(&mut self, n: usize) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % n as u64) as usize
    }

    /// Adds one peer, joining through a random member, and checks that its
    /// first line reaches every member and a line from `p0` reaches it.
    fn grow(&mut self) -> Result<(), String> {
        let i = self.peers.len();
        let name = format!("p{i}");
        if i == 0 {
            self.peers.push(Peer::start(&name, None, &self.args)?);
            return Ok(());
        }
        let k = self.below(i);
        let via = self.peers[k].port;
        let t0 = Instant::now();
        let mut p = Peer::start(&name, Some(via), &self.args)?;
        let deadline = t0 + DEADLINE;
        let (tj, _) = p.wait(&|l| l.starts_with("* joined through "), deadline)?;
        p.send(&format!("hi{i}"))?;
        self.peers[0].send(&format!("hello{i}"))?;
        let mut end = p.expect(&format!("p0: hello{i}"), deadline)?;
        let hi = format!("{name}: hi{i}");
        for q in &mut self.peers {
            end = end.max(q.expect(&hi, deadline)?);
        }
        self.peers.push(p);
        self.joins.push((i, tj - t0, end - t0));
        Ok(())
    }

    fn grow_to(&mut self, n: usize) -> Result<(), String> {
        while self.peers.len() < n {
            self.grow()?;
        }
        Ok(())
    }

    /// `count` lines from `p0`, one at a time; for each, the time until the
    /// last other peer printed it.
    fn fanout(&mut self, count: usize, tag: &str) -> Result<Vec<Duration>, String> {
        let mut lat = Vec::with_capacity(count);
        for k in 0..count {
            lat.push(self.fanout_one(&format!("{tag}-{k}"))?);
        }
        Ok(lat)
    }

    /// The line `text` from `p0`: the time until the last other peer
    /// printed it.
    fn fanout_one(&mut self, text: &str) -> Result<Duration, String> {
        let line = format!("p0: {text}");
        let t0 = Instant::now();
        self.peers[0].send(text)?;
        let mut last = t0;
        for q in &mut self.peers[1..] {
            last = last.max(q.expect(&line, t0 + DEADLINE)?);
        }
        Ok(last - t0)
    }

    fn discard(&mut self) {
        for p in &mut self.peers {
            p.discard();
        }
    }

    /// Waits until every peer has direct links to the degree (6, or all
    /// the others in a smaller network), by `:who`: links still coming up
    /// after a join would otherwise meet the first lines measured.
    fn settle(&mut self) -> Result<(), String> {
        let n = self.peers.len();
        let links = 6.min(n - 1);
        let deadline = Instant::now() + DEADLINE;
        for p in &mut self.peers {
            loop {
                p.send(":who")?;
                let rows = p.block(&format!("* {n} members:"), n, deadline)?;
                if rows.iter().filter(|r| r.ends_with(" direct")).count() >= links {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!("{}: fewer than {links} links: {rows:?}", p.name));
                }
            }
        }
        Ok(())
    }

    /// `n` lines from `p0`, each waited for by everyone: lazy push builds
    /// `p0`'s tree on the first lines after links came up (they go on
    /// every new link, and the copies that come twice prune them).
    fn warm(&mut self, n: usize) -> Result<(), String> {
        for k in 0..n {
            let text = format!("warm-{k}");
            self.peers[0].send(&text)?;
            let line = format!("p0: {text}");
            let deadline = Instant::now() + DEADLINE;
            for q in &mut self.peers[1..] {
                q.expect(&line, deadline)?;
            }
        }
        Ok(())
    }

    /// Hops from `p0` to each other peer in `p0`'s tree, by each peer's
    /// parent for `p0` (SIGUSR1's `tree:` line); `None` for a peer with no
    /// parent yet, or one whose chain of parents does not reach `p0`.
    fn depths(&mut self) -> Result<Vec<Option<usize>>, String> {
        let root = self.peers[0].name.clone();
        let mut parent = std::collections::HashMap::new();
        for p in &mut self.peers[1..] {
            let t = p.tree()?;
            if let Some((_, via)) = t.into_iter().find(|(o, _)| *o == root) {
                parent.insert(p.name.clone(), via);
            }
        }
        let n = self.peers.len();
        Ok(self.peers[1..]
            .iter()
            .map(|p| {
                let mut at = p.name.clone();
                for hops in 1..n {
                    let up = parent.get(&at)?;
                    if *up == root {
                        return Some(hops);
                    }
                    at = up.clone();
                }
                None
            })
            .collect())
    }

    /// Every receiver's own count of its traffic so far.
    fn traffic(&mut self) -> Result<Vec<Traffic>, String> {
        self.peers[1..].iter_mut().map(Peer::traffic).collect()
    }

    fn mean_links(&self) -> f64 {
        self.peers.iter().map(Peer::links).sum::<usize>() as f64 / self.peers.len().max(1) as f64
    }

    /// Notes what the peers wrote to stderr, if anything.
    fn note_stderr(&self, r: &mut Report, stage: &str) {
        let mut n = 0;
        let mut first = None;
        for p in &self.peers {
            let e = p.stderr.lock().unwrap();
            n += e.len();
            if first.is_none() {
                first = e.first().map(|l| format!("{}: {l}", p.name));
            }
        }
        if let Some(f) = first {
            r.note(format!(
                "{stage}: peers wrote {n} stderr lines, first {f:?}"
            ));
        }
    }

    /// (context switches, TCP bytes received) of every peer.
    fn counters(&self) -> Vec<(u64, u64)> {
        let rx = tcp_received();
        self.peers
            .iter()
            .map(|p| (p.cost().1, rx.get(&p.pid()).copied().unwrap_or(0)))
            .collect()
    }
}

/// `count` lines from `p0` of each network, in turns (which goes first
/// alternates); for each, the time until the last peer of its network
/// printed it.
fn fanout_pair(
    a: &mut Net,
    b: &mut Net,
    count: usize,
    tag: &str,
) -> Result<(Vec<Duration>, Vec<Duration>), String> {
    let (mut va, mut vb) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for k in 0..count {
        let t = format!("{tag}-{k}");
        if k % 2 == 0 {
            va.push(a.fanout_one(&t)?);
            vb.push(b.fanout_one(&t)?);
        } else {
            vb.push(b.fanout_one(&t)?);
            va.push(a.fanout_one(&t)?);
        }
    }
    Ok((va, vb))
}

impl Drop for Net {
    fn drop(&mut self) {
        // Kill them all first, so no survivor spends time on the others'
        // departure; each Peer's Drop then reaps it.
        for p in &mut self.peers {
            let _ = p.child.kill();
        }
    }
}

// ---------------------------------------------------------------- limits

const FRAME_BODY: usize = 36;

fn frame() -> Vec<u8> {
    let mut f = (FRAME_BODY as u32).to_be_bytes().to_vec();
    f.extend((0..FRAME_BODY).map(|i| i as u8));
    f
}

fn loopback() -> io::Result<(TcpStream, TcpStream)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let a = TcpStream::connect(l.local_addr()?)?;
    let (b, _) = l.accept()?;
    a.set_nodelay(true)?;
    b.set_nodelay(true)?;
    Ok((a, b))
}

/// One loopback TCP connection (NODELAY both ways) whose other end, a
/// thread, echoes each frame back.
struct PingPong {
    c: TcpStream,
    echo: Option<thread::JoinHandle<()>>,
    f: Vec<u8>,
    back: Vec<u8>,
}

impl PingPong {
    fn new() -> io::Result<PingPong> {
        let (c, mut s) = loopback()?;
        let echo = thread::spawn(move || {
            let mut f = [0u8; 4 + FRAME_BODY];
            while s.read_exact(&mut f[..4]).is_ok() {
                let n = u32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize;
                if s.read_exact(&mut f[4..4 + n]).is_err() || s.write_all(&f[..4 + n]).is_err() {
                    break;
                }
            }
        });
        let f = frame();
        let back = vec![0u8; f.len()];
        Ok(PingPong {
            c,
            echo: Some(echo),
            f,
            back,
        })
    }

    /// Half of one round trip.
    fn half_rtt(&mut self) -> io::Result<Duration> {
        let t = Instant::now();
        self.c.write_all(&self.f)?;
        self.c.read_exact(&mut self.back)?;
        Ok(t.elapsed() / 2)
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        let _ = self.c.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.echo.take() {
            let _ = t.join();
        }
    }
}

/// Frames/s of a one-way stream: one write per frame, or 64 KiB writes.
fn stream(frames: usize, batched: bool) -> io::Result<f64> {
    let (mut c, mut s) = loopback()?;
    let recv = thread::spawn(move || {
        let mut buf = vec![0u8; 256 << 10];
        let (mut have, mut got) = (0usize, 0usize);
        while got < frames {
            let n = match s.read(&mut buf[have..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            have += n;
            let mut pos = 0;
            while have - pos >= 4 {
                let len = u32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]])
                    as usize;
                if have - pos < 4 + len {
                    break;
                }
                pos += 4 + len;
                got += 1;
            }
            buf.copy_within(pos..have, 0);
            have -= pos;
        }
        (Instant::now(), got)
    });
    let f = frame();
    let t0 = Instant::now();
    if batched {
        let per = (64 << 10) / f.len();
        let chunk: Vec<u8> = f.iter().copied().cycle().take(per * f.len()).collect();
        let mut left = frames;
        while left > 0 {
            let k = left.min(per);
            c.write_all(&chunk[..k * f.len()])?;
            left -= k;
        }
    } else {
        for _ in 0..frames {
            c.write_all(&f)?;
        }
    }
    let (t1, got) = recv
        .join()
        .map_err(|_| io::Error::other("receiver panicked"))?;
    if got != frames {
        return Err(io::Error::other(format!(
            "stream: {got} of {frames} frames"
        )));
    }
    Ok(frames as f64 / (t1 - t0).as_secs_f64())
}

/// Round trips of a line through `cat`: stdin → process → stdout.
fn pipe_echo(rounds: usize) -> Result<Vec<Duration>, String> {
    let mut child = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cat: {e}"))?;
    let (tx, rx) = mpsc::channel();
    line_reader(child.stdout.take().expect("piped"), tx);
    let mut stdin = child.stdin.take().expect("piped");
    let mut v = Vec::with_capacity(rounds);
    let mut res = Ok(());
    for i in 0..rounds + rounds / 10 {
        let t0 = Instant::now();
        if let Err(e) = stdin.write_all(b"x\n") {
            res = Err(format!("cat: {e}"));
            break;
        }
        match rx.recv_timeout(DEADLINE) {
            Ok((t, _)) if i >= rounds / 10 => v.push(t - t0),
            Ok(_) => {}
            Err(e) => {
                res = Err(format!("cat: {e}"));
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    res.map(|_| v)
}

fn spawn_time(n: usize) -> Result<Vec<Duration>, String> {
    let mut v = Vec::new();
    for _ in 0..n {
        let t0 = Instant::now();
        let st = Command::new(bin())
            .arg("-V")
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("{} -V: {e}", bin()))?;
        v.push(t0.elapsed());
        if !st.success() {
            return Err(format!("{} -V: {st}", bin()));
        }
    }
    Ok(v)
}

// ---------------------------------------------------------------- stages

struct Limits {
    half_rtt: Duration,
    stream1: f64,
    /// One line through the relay pair, p50.
    relay: Duration,
    relay_tput: f64,
    /// p2pchat's own figures without a secret, for the secret stage to
    /// stand beside: one-hop p50, 1 → 1 and 1 → N rates.
    onehop: Duration,
    tput1: f64,
    tput_wide: f64,
}

fn limits(plan: &Plan, r: &mut Report) -> Limits {
    progress("limits: pipe echo, TCP stream, relay pair, spawn");
    let mut lim = Limits {
        half_rtt: Duration::ZERO,
        stream1: 0.0,
        relay: Duration::ZERO,
        relay_tput: 0.0,
        onehop: Duration::ZERO,
        tput1: 0.0,
        tput_wide: 0.0,
    };
    match pipe_echo(plan.pipe_echo) {
        Ok(v) => r.info(
            "limit.pipe_echo",
            "line through `cat`, stdin→stdout p50",
            us(pct(&v, 0.5)),
        ),
        Err(e) => r.failed(
            "pipe echo",
            &e,
            &[("limit.pipe_echo", "line through `cat`", "-")],
        ),
    }
    match stream(plan.stream_single, false) {
        Ok(f) => {
            lim.stream1 = f;
            r.info(
                "limit.stream1",
                "TCP stream, 40 B frames, 1 write each",
                format!("{} frames/s", rate(f)),
            );
        }
        Err(e) => r.failed(
            "stream",
            &e.to_string(),
            &[("limit.stream1", "TCP stream, 1 write/frame", "-")],
        ),
    }
    match stream(plan.stream_batched, true) {
        Ok(f) => r.info(
            "limit.streamN",
            "TCP stream, 40 B frames, 64 KiB writes",
            format!("{} frames/s", rate(f)),
        ),
        Err(e) => r.failed(
            "stream",
            &e.to_string(),
            &[("limit.streamN", "TCP stream, 64 KiB writes", "-")],
        ),
    }
    match relay_tput(plan.tput) {
        Ok(f) => {
            lim.relay_tput = f;
            r.info(
                "limit.relay_tput",
                &format!("{} lines through the minimal relay pair", plan.tput),
                format!("{} msg/s", rate(f)),
            );
        }
        Err(e) => r.failed(
            "relay throughput",
            &e,
            &[("limit.relay_tput", "minimal relay pair", "-")],
        ),
    }
    match spawn_time(plan.spawn) {
        Ok(v) => r.info(
            "limit.spawn",
            "start and reap `p2pchat -V`, p50",
            us(pct(&v, 0.5)),
        ),
        Err(e) => r.failed("spawn", &e, &[("limit.spawn", "start `p2pchat -V`", "-")]),
    }
    lim
}

/// Two peers, one line at a time; each round also times one ping-pong
/// and one line through the relay pair, in rotating order, so the limits
/// and the figure see the same machine at the same moments.
fn onehop(plan: &Plan, lim: &mut Limits, r: &mut Report) {
    progress(&format!(
        "one hop: 2 peers, {} messages, interleaved with ping-pong and relay",
        plan.onehop
    ));
    type Samples = (Vec<Duration>, Vec<Duration>, Vec<Duration>, u64);
    let res = (|| -> Result<Samples, String> {
        let mut pp = PingPong::new().map_err(|e| format!("ping-pong: {e}"))?;
        let (mut ra, mut rb) = relays()?;
        let mut net = Net::new();
        net.grow_to(2)?;
        let rss = net.peers.iter().map(Peer::rss_kib).max().unwrap_or(0);
        let n = plan.onehop;
        let (mut vp, mut vr, mut vo) = (Vec::new(), Vec::new(), Vec::new());
        let (a, b) = net.peers.split_at_mut(1);
        let (a, b) = (&mut a[0], &mut b[0]);
        for k in 0..n + n / 10 {
            let keep = k >= n / 10;
            for step in 0..3 {
                match (k + step) % 3 {
                    0 => {
                        let d = pp.half_rtt().map_err(|e| format!("ping-pong: {e}"))?;
                        if keep {
                            vp.push(d);
                        }
                    }
                    1 => {
                        let t0 = Instant::now();
                        ra.send(&format!("m{k}"))?;
                        let t = rb.expect(&format!("m{k}"), t0 + DEADLINE)?;
                        if keep {
                            vr.push(t - t0);
                        }
                    }
                    _ => {
                        let t0 = Instant::now();
                        a.send(&format!("m{k}"))?;
                        let t = b.expect(&format!("p0: m{k}"), t0 + DEADLINE)?;
                        if keep {
                            vo.push(t - t0);
                        }
                    }
                }
            }
        }
        Ok((vp, vr, vo, rss))
    })();
    match res {
        Ok((vp, vr, vo, rss)) => {
            lim.half_rtt = pct(&vp, 0.5);
            lim.relay = pct(&vr, 0.5);
            let base = us(lim.half_rtt);
            r.info(
                "limit.pingpong",
                "loopback TCP ping-pong, half RTT p50",
                us(lim.half_rtt),
            );
            r.info(
                "limit.pingpong99",
                "loopback TCP ping-pong, half RTT p99",
                us(pct(&vp, 0.99)),
            );
            r.info(
                "limit.relay",
                "stdin → minimal relay → TCP → relay → stdout, p50",
                us(lim.relay),
            );
            let p50 = pct(&vo, 0.5);
            lim.onehop = p50;
            let ratio = p50.as_secs_f64() / lim.half_rtt.as_secs_f64();
            r.info("onehop.p50", "one hop (A stdin → B stdout), p50", us(p50));
            r.info(
                "onehop.p99",
                "one hop (A stdin → B stdout), p99",
                us(pct(&vo, 0.99)),
            );
            r.check(
                "onehop.ratio",
                "one-hop p50 / ping-pong half RTT",
                format!("{ratio:.2}×"),
                "≤ 2×",
                base,
                ratio <= 2.0,
            );
            r.info(
                "onehop.relay_ratio",
                "one-hop p50 / minimal relay pair p50",
                format!("{:.2}×", p50.as_secs_f64() / lim.relay.as_secs_f64()),
            );
            r.check(
                "rss.idle",
                "RSS per peer, 2 idle peers (max)",
                kib(rss),
                "≤ 3 MiB",
                "-".into(),
                rss <= 3 * 1024,
            );
        }
        Err(e) => r.failed(
            "one hop",
            &e,
            &[
                ("limit.pingpong", "loopback TCP ping-pong", "-"),
                ("onehop.ratio", "one-hop p50 / ping-pong half RTT", "≤ 2×"),
                ("rss.idle", "RSS per peer, idle", "≤ 3 MiB"),
            ],
        ),
    }
}

/// Whether peers started from now on share a network secret (every link
/// encrypted by the Noise handshake).
static SECRET: AtomicBool = AtomicBool::new(false);
/// The home (identity, known peers) the next peer started gets, instead of
/// a new one: the same user, back.
static REUSE_HOME: Mutex<Option<PathBuf>> = Mutex::new(None);

/// How many private messages `p` holds for others (`:msgs`).
fn holding(p: &mut Peer) -> Result<usize, String> {
    p.send(":msgs")?;
    let (_, l) = p.wait(&|l| l.starts_with("* holding "), Instant::now() + DEADLINE)?;
    l["* holding ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("{}: {l:?}", p.name))
}

/// Private messages: online latency and acknowledgement, and the time
/// from an absent recipient's join to the delivery of what was held.
fn dm_stage(plan: &Plan, lim: &Limits, r: &mut Report) {
    progress("dm: private messages online, and held until the recipient joins");
    let rounds = if plan.quick { 3 } else { 10 };
    let res = (|| -> Result<[Vec<Duration>; 3], String> {
        let mut net = Net::new();
        net.grow_to(4)?;
        let (mut shown, mut acked, mut offline) = (Vec::new(), Vec::new(), Vec::new());
        let n = plan.onehop / 4;
        for k in 0..n + n / 10 {
            let t0 = Instant::now();
            net.peers[0].send(&format!(":msg p1 d{k}"))?;
            let t1 = net.peers[1].expect(&format!("p0 (private): d{k}"), t0 + DEADLINE)?;
            let done = format!("* private {} to p1: delivered", k + 1);
            let t2 = net.peers[0].expect(&done, t0 + DEADLINE)?;
            if k >= n / 10 {
                shown.push(t1 - t0);
                acked.push(t2 - t0);
            }
        }
        let mut home = None;
        for round in 0..=rounds {
            *REUSE_HOME.lock().unwrap() = home.take();
            let k = net.below(net.peers.len());
            let mut dave = Peer::start("dave", Some(net.peers[k].port), &net.args)?;
            let (tj, _) = dave.wait(
                &|l| l.starts_with("* joined through "),
                Instant::now() + DEADLINE,
            )?;
            if round > 0 {
                let t = dave.expect(&format!("p0 (private): o{round}"), tj + DEADLINE)?;
                offline.push(t - tj);
            }
            for p in &mut net.peers {
                p.expect("* dave joined", tj + DEADLINE)?;
            }
            if round == rounds {
                home = Some(std::mem::take(&mut dave.home));
                break;
            }
            home = Some(std::mem::take(&mut dave.home));
            dave.send(":q")?;
            let _ = dave.child.wait();
            let deadline = Instant::now() + DEADLINE;
            for p in &mut net.peers {
                p.expect("* dave left", deadline)?;
            }
            net.peers[0].send(&format!(":msg dave o{}", round + 1))?;
            let queued = format!("* private {} to dave: queued", round + 1);
            net.peers[0].expect(&queued, deadline)?;
            // Held by three of the four before dave comes back.
            loop {
                let mut n = 0;
                for p in &mut net.peers {
                    n += usize::from(holding(p)? > 0);
                }
                if n >= 3 {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!("held by {n} peers only"));
                }
            }
        }
        if let Some(h) = home {
            let _ = std::fs::remove_dir_all(h);
        }
        net.note_stderr(r, "dm");
        Ok([shown, acked, offline])
    })();
    match res {
        Ok([shown, acked, offline]) => {
            r.row(
                "dm.onehop.p50",
                "private message to a member present, until it shows it, p50",
                us(pct(&shown, 0.5)),
                "-",
                if lim.onehop.is_zero() {
                    "-".into()
                } else {
                    format!("chat {}", us(lim.onehop))
                },
                Status::Info,
            );
            r.row(
                "dm.ack.p50",
                "private message until the sender shows it delivered, p50",
                us(pct(&acked, 0.5)),
                "-",
                "-".into(),
                Status::Info,
            );
            r.row(
                "dm.offline.p50",
                &format!(
                    "held message: recipient's join until it shows it, p50 of {}",
                    offline.len()
                ),
                us(pct(&offline, 0.5)),
                "-",
                "-".into(),
                Status::Info,
            );
        }
        Err(e) => r.failed(
            "private messages",
            &e,
            &[
                ("dm.onehop.p50", "private message online", "-"),
                ("dm.ack.p50", "private message acknowledged", "-"),
                ("dm.offline.p50", "held message delivered on join", "-"),
            ],
        ),
    }
}

/// The one-hop and throughput runs again with a network secret, beside
/// the figures without one from this run.
fn secret_stage(plan: &Plan, lim: &Limits, r: &mut Report) {
    progress("secret: one hop and throughput with P2PCHAT_SECRET");
    SECRET.store(true, Ordering::Relaxed);
    let beside = |plain: String| format!("no secret {plain}");
    let onehop = (|| -> Result<Vec<Duration>, String> {
        let mut net = Net::new();
        net.grow_to(2)?;
        let (a, b) = net.peers.split_at_mut(1);
        let (a, b) = (&mut a[0], &mut b[0]);
        let n = plan.onehop;
        let mut v = Vec::new();
        for k in 0..n + n / 10 {
            let t0 = Instant::now();
            a.send(&format!("m{k}"))?;
            let t = b.expect(&format!("p0: m{k}"), t0 + DEADLINE)?;
            if k >= n / 10 {
                v.push(t - t0);
            }
        }
        Ok(v)
    })();
    match onehop {
        Ok(v) => r.row(
            "secret.onehop.p50",
            "one hop with a secret (A stdin → B stdout), p50",
            us(pct(&v, 0.5)),
            "-",
            beside(us(lim.onehop)),
            Status::Info,
        ),
        Err(e) => r.failed(
            "one hop with a secret",
            &e,
            &[("secret.onehop.p50", "one hop with a secret", "-")],
        ),
    }
    for (receivers, plain) in [(1, lim.tput1), (plan.tput_wide, lim.tput_wide)] {
        let key = format!("secret.tput{receivers}.rate");
        match throughput(plan.tput, receivers, &[], r) {
            Ok(t) => {
                if t.loss > 0 || t.reorder > 0 {
                    r.broken = true;
                    r.note(format!(
                        "secret 1 → {receivers}: {} lost, {} out of order",
                        t.loss, t.reorder
                    ));
                }
                r.row(
                    &key,
                    &format!(
                        "{} msgs 1 → {receivers} with a secret, until last has all",
                        plan.tput
                    ),
                    format!("{} msg/s", rate(t.rate)),
                    "-",
                    beside(format!("{}/s", rate(plain))),
                    Status::Info,
                );
            }
            Err(e) => r.failed(
                &format!("throughput 1 → {receivers} with a secret"),
                &e,
                &[(&key, "throughput with a secret", "-")],
            ),
        }
    }
    SECRET.store(false, Ordering::Relaxed);
}

struct Tput {
    rate: f64,
    loss: u64,
    reorder: u64,
    rss_max: u64,
    rss_sender: u64,
    elapsed: Duration,
    /// Full copies of each message each receiver read, and bytes of
    /// IHAVE, GRAFT and PRUNE per message and receiver (by the peers' own
    /// count).
    copies: f64,
    announce: f64,
}

/// What one receiver of a throughput run got.
struct Tally {
    distinct: usize,
    reorder: u64,
    /// When the last new message arrived.
    last: Instant,
}

/// Counts lines `PREFIX<n>`, n < `count`, from `p` until all arrived or
/// nothing came for [`STALL`]; other lines are ignored, but a departure
/// is noted in `errs`.
fn tally(p: &mut Peer, prefix: &str, count: usize, t0: Instant, errs: &mut Vec<String>) -> Tally {
    let mut seen = vec![false; count];
    let mut t = Tally {
        distinct: 0,
        reorder: 0,
        last: t0,
    };
    let mut max_seen = None::<usize>;
    p.pending.clear();
    while t.distinct < count {
        let (at, lines) = match p.rx.recv_timeout(STALL) {
            Ok(b) => b,
            Err(_) => {
                errs.push(format!(
                    "{}: stalled at {} of {count}{}",
                    p.name,
                    t.distinct,
                    p.stderr_tail()
                ));
                break;
            }
        };
        for l in &lines {
            let Some(n) = l.strip_prefix(prefix).and_then(|s| s.parse::<usize>().ok()) else {
                if l.contains(" left") {
                    errs.push(format!("{}: {l:?}", p.name));
                }
                continue;
            };
            if n >= count || seen[n] {
                continue;
            }
            seen[n] = true;
            t.distinct += 1;
            t.last = at;
            if max_seen.is_some_and(|m| n < m) {
                t.reorder += 1;
            }
            max_seen = Some(max_seen.map_or(n, |m| m.max(n)));
        }
    }
    t
}

/// `count` lines `t0`, `t1`, ... for a sender's stdin.
fn numbered(count: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(count * 8);
    for k in 0..count {
        data.extend_from_slice(format!("t{k}\n").as_bytes());
    }
    data
}

/// Writes `data` to `stdin` from a thread; gives the pipe back afterwards
/// (kept open: end of input would mean leave).
fn feed(mut stdin: ChildStdin, data: Vec<u8>) -> thread::JoinHandle<ChildStdin> {
    thread::spawn(move || {
        let _ = stdin.write_all(&data);
        stdin
    })
}

/// `count` numbered lines into p0's stdin as fast as the pipe takes them,
/// to `receivers` other peers started with `args`; the network settled
/// and warmed up first.
fn throughput(
    count: usize,
    receivers: usize,
    args: &[&str],
    r: &mut Report,
) -> Result<Tput, String> {
    let mode = if args.contains(&"--flood") {
        "flooding"
    } else {
        "lazy push"
    };
    let mut net = Net::with(args);
    net.grow_to(receivers + 1)?;
    if receivers > 1 {
        net.settle()?;
        net.warm(WARM)?;
    }
    net.discard();
    let links = net.mean_links();
    let stdin = net.peers[0].stdin.take().ok_or("stdin taken")?;
    let before = net.counters();
    let t_before = net.traffic()?;
    let cpu_before = net_cpu(&net);
    let t0 = Instant::now();
    let writer = feed(stdin, numbered(count));
    let (mut loss, mut reorder, mut delivered) = (0u64, 0u64, 0u64);
    let mut end = t0;
    let mut errs = Vec::new();
    for p in &mut net.peers[1..] {
        let t = tally(p, "p0: t", count, t0, &mut errs);
        loss += (count - t.distinct) as u64;
        reorder += t.reorder;
        delivered += t.distinct as u64;
        end = end.max(t.last);
    }
    let cpu_after = net_cpu(&net);
    let read: u64 = net
        .counters()
        .iter()
        .zip(&before)
        .skip(1)
        .map(|(a, b)| a.1.saturating_sub(b.1))
        .sum();
    let t_after = net.traffic()?;
    let (mut copies, mut announce) = (0.0, 0.0);
    for (a, b) in t_after.iter().zip(&t_before) {
        let d = a.since(*b);
        copies += d.events as f64;
        announce += d.lazy_bytes as f64;
    }
    let per = (receivers * count) as f64;
    let (copies, announce) = (copies / per, announce / per);
    let rss_max = net.peers.iter().map(Peer::rss_kib).max().unwrap_or(0);
    let rss_sender = net.peers[0].rss_kib();
    if receivers > 1 {
        r.note(format!(
            "1 → {receivers}, {mode}: {links:.1} links per peer; each receiver read {:.1} MB of TCP ({:.1} bytes a message), {copies:.2} full copies of each message and {announce:.1} bytes of IHAVE/GRAFT/PRUNE",
            read as f64 / receivers as f64 / 1e6,
            read as f64 / per
        ));
    }
    if receivers > 1 {
        // What bounds the rate when the peers share the machine's CPUs:
        // CPU time a message costs them all, over the CPUs there are.
        let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / count as f64 / 1e3;
        let sender = per(cpu_after.0[0], cpu_before.0[0]);
        let all: f64 = (0..cpu_after.0.len())
            .map(|i| per(cpu_after.0[i], cpu_before.0[i]))
            .sum();
        let readers = per(cpu_after.1, cpu_before.1);
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        r.note(format!(
            "1 → {receivers}, {mode}: CPU per message {all:.1} µs for all peers (sender {sender:.2} µs, each receiver {:.2} µs on average) and {readers:.1} µs for the bench's own threads (line readers, writer): {cpus} CPUs allow at most {} msg/s",
            (all - sender) / receivers as f64,
            rate(cpus as f64 * 1e6 / (all + readers).max(1e-9))
        ));
    }
    net.note_stderr(r, &format!("1 → {receivers} ({mode})"));
    // Kill before joining the writer, so a stuck write ends with EPIPE.
    drop(net);
    let _ = writer.join();
    for e in errs.iter().take(5) {
        r.note(format!("1 → {receivers}: {e}"));
    }
    let elapsed = end - t0;
    Ok(Tput {
        rate: delivered as f64 / receivers as f64 / elapsed.as_secs_f64(),
        loss,
        reorder,
        rss_max,
        rss_sender,
        elapsed,
        copies,
        announce,
    })
}

/// Nanoseconds on a CPU so far, all of `net`'s peers together.
fn net_cpu_ns(net: &Net) -> u64 {
    net.peers.iter().filter_map(|p| cpu_ns(p.pid()).ok()).sum()
}

/// Latencies by phase: the first 10 (the tree may still be settling)
/// against the rest, the slow ones (over twice the p50) and where they
/// fall, and a histogram.
fn phases(v: &[Duration]) -> String {
    let head = v.len().min(10);
    let p50 = pct(v, 0.5);
    let slow: Vec<usize> = (0..v.len()).filter(|&i| v[i] > p50 * 2).collect();
    let bounds = [250, 500, 1000, 2000, 4000, 8000];
    let mut hist = vec![0; bounds.len() + 1];
    for d in v {
        let us = d.as_micros();
        hist[bounds.iter().position(|&b| us < b).unwrap_or(bounds.len())] += 1;
    }
    let mut h = String::new();
    for (i, c) in hist.iter().enumerate() {
        let lim = match bounds.get(i) {
            Some(b) => format!("<{:.2}", *b as f64 / 1000.0),
            None => format!("≥{:.0}", *bounds.last().expect("bounds") as f64 / 1000.0),
        };
        let _ = write!(h, " {lim}:{c}");
    }
    format!(
        "first {head} p50 {} p99 {}, the rest p50 {} p99 {}; {} over 2×p50 (at {:?}); ms:{h}",
        us(pct(&v[..head], 0.5)),
        us(pct(&v[..head], 0.99)),
        us(pct(&v[head..], 0.5)),
        us(pct(&v[head..], 0.99)),
        slow.len(),
        &slow[..slow.len().min(12)],
    )
}

/// Hops from the root, as mean, max and how many at each.
fn depths(d: &[Option<usize>]) -> String {
    let got: Vec<usize> = d.iter().flatten().copied().collect();
    let max = got.iter().copied().max().unwrap_or(0);
    let mean = got.iter().sum::<usize>() as f64 / got.len().max(1) as f64;
    let mut each = String::new();
    for h in 1..=max {
        let _ = write!(each, " {h}:{}", got.iter().filter(|&&g| g == h).count());
    }
    format!(
        "mean {mean:.2}, max {max} ({}{}{})",
        each.trim_start(),
        if got.len() < d.len() {
            ", no path: "
        } else {
            ""
        },
        if got.len() < d.len() {
            (d.len() - got.len()).to_string()
        } else {
            String::new()
        }
    )
}

// ---------------------------------------------------------------- CPU per line

/// Nanoseconds `pid` has spent on a CPU so far (`/proc/PID/schedstat`).
fn cpu_ns(pid: i32) -> Result<u64, String> {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no /proc/{pid}/schedstat"))
}

/// Nanoseconds on a CPU so far: of each peer of `net`, and of this bench
/// process (all its threads: the line readers above all).
fn net_cpu(net: &Net) -> (Vec<u64>, u64) {
    let peers = net
        .peers
        .iter()
        .map(|p| cpu_ns(p.pid()).unwrap_or(0))
        .collect();
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    (peers, tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// CPU time per line, sender and receiver together, of `count` numbered
/// lines 1 → 1 through a pair of `binary` peers (started as
/// [`Peer::start`] does), from the first write until the receiver printed
/// the last.
fn cpu_pair(binary: &str, count: usize, secret: bool) -> Result<Duration, String> {
    let cmd = |name: &str, via: Option<u16>| {
        let mut c = Command::new(binary);
        c.args(["--plain", "-b", "127.0.0.1", name]);
        if let Some(p) = via {
            c.args(["127.0.0.1", &p.to_string()]);
        }
        if secret {
            c.env("P2PCHAT_SECRET", "the bench's network secret");
        } else {
            c.env_remove("P2PCHAT_SECRET");
        }
        c
    };
    let mut a = Peer::spawn("p1", cmd("p1", None))?;
    let mut b = Peer::spawn("p0", cmd("p0", Some(a.port)))?;
    b.wait(
        &|l| l.starts_with("* joined through "),
        Instant::now() + DEADLINE,
    )?;
    a.expect("* p0 joined", Instant::now() + DEADLINE)?;
    a.discard();
    let stdin = b.stdin.take().ok_or("stdin taken")?;
    let before = cpu_ns(a.pid())? + cpu_ns(b.pid())?;
    let t0 = Instant::now();
    let writer = feed(stdin, numbered(count));
    let mut errs = Vec::new();
    let t = tally(&mut a, "p0: t", count, t0, &mut errs);
    let after = cpu_ns(a.pid())? + cpu_ns(b.pid())?;
    drop((a, b));
    let _ = writer.join();
    if t.distinct < count || t.reorder > 0 {
        return Err(format!(
            "{} of {count} lines arrived, {} out of order {}",
            t.distinct,
            t.reorder,
            errs.join("; ")
        ));
    }
    Ok(Duration::from_nanos((after - before) / count as u64))
}

/// Runs of each pair in the `cpu` stage; the median is shown.
const CPU_ROUNDS: usize = 3;

/// CPU per line 1 → 1: this build without and with a secret, and the
/// baseline build given, measured in turns in the same run.
fn cpu_stage(plan: &Plan, baseline: Option<&str>, r: &mut Report) {
    let n = plan.cpu_lines;
    progress(&format!("cpu: {n} lines 1 → 1, CPU time per line"));
    let ns = |d: Duration| format!("{:.2} µs", d.as_secs_f64() * 1e6);
    let what = |who: &str| {
        format!("CPU per line 1 → 1, {who}, both peers ({n} lines, median of {CPU_ROUNDS})")
    };
    let load = loadavg();
    // Each pair a few times, in turns, so that a burst of other work
    // skews one run of each rather than all runs of one; the median.
    let (mut mine, mut secret, mut base) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..CPU_ROUNDS {
        mine.push(cpu_pair(&bin(), n, false));
        secret.push(cpu_pair(&bin(), n, true));
        if let Some(b) = baseline {
            base.push(cpu_pair(b, n, false));
        }
    }
    let median = |v: Vec<Result<Duration, String>>| -> Result<Duration, String> {
        let mut ok = v.into_iter().collect::<Result<Vec<_>, _>>()?;
        ok.sort();
        Ok(ok[ok.len() / 2])
    };
    let (mine, secret) = (median(mine), median(secret));
    let base = baseline.map(|_| median(base));
    match &base {
        None => r.skip("cpu.base", &what("baseline (BENCH_BASELINE unset)"), "-"),
        Some(Ok(d)) => r.info("cpu.base", &what(baseline.unwrap_or("")), ns(*d)),
        Some(Err(e)) => r.failed(
            "cpu (baseline)",
            e,
            &[("cpu.base", "CPU per line, baseline", "-")],
        ),
    }
    let base = base.and_then(Result::ok);
    match &mine {
        Ok(d) => {
            let beside = base.map_or("-".into(), |b| format!("baseline {}", ns(b)));
            match base {
                Some(b) => r.check(
                    "cpu.line",
                    &what("this build"),
                    ns(*d),
                    "≤ baseline",
                    beside,
                    *d <= b,
                ),
                None => r.info("cpu.line", &what("this build"), ns(*d)),
            }
        }
        Err(e) => r.failed("cpu", e, &[("cpu.line", "CPU per line", "-")]),
    }
    match &secret {
        Ok(d) => r.row(
            "cpu.secret",
            &what("this build with a secret"),
            ns(*d),
            "-",
            mine.as_ref()
                .map_or("-".into(), |m| format!("no secret {}", ns(*m))),
            Status::Info,
        ),
        Err(e) => r.failed(
            "cpu (secret)",
            e,
            &[("cpu.secret", "CPU per line with a secret", "-")],
        ),
    }
    if let (Ok(d), Some(b)) = (&mine, base) {
        r.info(
            "cpu.ratio",
            "CPU per line, this build / baseline",
            format!("{:.2}×", d.as_secs_f64() / b.as_secs_f64().max(1e-12)),
        );
    }
    r.note(format!(
        "cpu: load average {load} before, {} after the runs",
        loadavg()
    ));
}

// ---------------------------------------------------------------- relay floor

/// The least a peer can do on the one-hop path, for comparison: this
/// bench binary re-run as `--relay-in PORT` (stdin lines → frames on one
/// TCP connection) and `--relay-out` (frames → stdout lines), blocking
/// I/O, one write per read. Both print `listening on port N` first (N is 0
/// for relay-in, once connected).
fn relay_main(args: &[String]) -> Option<i32> {
    let mode = args.get(1)?.as_str();
    let res = match mode {
        "--relay-out" => relay_out(),
        "--relay-in" => {
            let port: u16 = args.get(2).and_then(|p| p.parse().ok())?;
            relay_in(port)
        }
        _ => return None,
    };
    Some(match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("relay: {e}");
            1
        }
    })
}

fn relay_out() -> io::Result<()> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let mut out = io::stdout().lock();
    writeln!(out, "listening on port {}", l.local_addr()?.port())?;
    out.flush()?;
    let (mut s, _) = l.accept()?;
    s.set_nodelay(true)?;
    let mut buf = vec![0u8; 256 << 10];
    let mut lines = Vec::with_capacity(256 << 10);
    let mut have = 0;
    loop {
        let n = s.read(&mut buf[have..])?;
        if n == 0 {
            return Ok(());
        }
        have += n;
        let mut pos = 0;
        while have - pos >= 4 {
            let len =
                u32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
            if have - pos < 4 + len {
                break;
            }
            lines.extend_from_slice(&buf[pos + 4..pos + 4 + len]);
            lines.push(b'\n');
            pos += 4 + len;
        }
        buf.copy_within(pos..have, 0);
        have -= pos;
        out.write_all(&lines)?;
        out.flush()?;
        lines.clear();
    }
}

fn relay_in(port: u16) -> io::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    println!("listening on port 0");
    io::stdout().flush()?;
    let mut stdin = io::stdin().lock();
    let mut buf = vec![0u8; 64 << 10];
    let mut partial = Vec::new();
    let mut frames = Vec::with_capacity(128 << 10);
    loop {
        let n = stdin.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        partial.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(i) = partial[start..].iter().position(|&b| b == b'\n') {
            let line = &partial[start..start + i];
            frames.extend_from_slice(&(line.len() as u32).to_be_bytes());
            frames.extend_from_slice(line);
            start += i + 1;
        }
        partial.drain(..start);
        s.write_all(&frames)?;
        frames.clear();
    }
}

/// The relay pair: (relay-in, relay-out).
fn relays() -> Result<(Peer, Peer), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut c = Command::new(&exe);
    c.arg("--relay-out");
    let out = Peer::spawn("relay-out", c)?;
    let mut c = Command::new(&exe);
    c.args(["--relay-in", &out.port.to_string()]);
    let inp = Peer::spawn("relay-in", c)?;
    Ok((inp, out))
}

/// Messages/s of `count` lines pushed through the relay pair.
fn relay_tput(count: usize) -> Result<f64, String> {
    let (mut a, mut b) = relays()?;
    let stdin = a.stdin.take().ok_or("stdin taken")?;
    let t0 = Instant::now();
    let writer = feed(stdin, numbered(count));
    let mut errs = Vec::new();
    let t = tally(&mut b, "t", count, t0, &mut errs);
    drop((a, b));
    let _ = writer.join();
    if t.distinct < count {
        return Err(format!(
            "relay lost {} of {count}: {errs:?}",
            count - t.distinct
        ));
    }
    Ok(count as f64 / (t.last - t0).as_secs_f64())
}

fn tput_stage(
    plan: &Plan,
    lim: &mut Limits,
    r: &mut Report,
    receivers: usize,
    target: f64,
    flood: bool,
) -> Option<Tput> {
    let mode = if flood { "flooding" } else { "lazy push" };
    progress(&format!(
        "throughput: {} messages, 1 → {receivers}, {mode}",
        plan.tput
    ));
    let key = format!("tput{receivers}{}", if flood { ".flood" } else { "" });
    let args: &[&str] = if flood { &["--flood"] } else { &[] };
    let base = format!(
        "stream {}/s; relay {}/s",
        rate(lim.stream1),
        rate(lim.relay_tput)
    );
    let tgt = format!("≥ {}/s", rate(target));
    match throughput(plan.tput, receivers, args, r) {
        Ok(t) => {
            if flood {
            } else if receivers == 1 {
                lim.tput1 = t.rate;
            } else {
                lim.tput_wide = t.rate;
            }
            let what = format!(
                "{} msgs 1 → {receivers}, {mode}, until last has all ({:.2} s)",
                plan.tput,
                t.elapsed.as_secs_f64()
            );
            if flood {
                r.info(
                    &format!("{key}.rate"),
                    &what,
                    format!("{} msg/s", rate(t.rate)),
                );
            } else {
                r.check(
                    &format!("{key}.rate"),
                    &what,
                    format!("{} msg/s", rate(t.rate)),
                    &tgt,
                    base,
                    t.rate >= target && t.loss == 0,
                );
            }
            r.check(
                &format!("{key}.loss"),
                "messages lost (all receivers)",
                t.loss.to_string(),
                "0",
                "-".into(),
                t.loss == 0,
            );
            r.check(
                &format!("{key}.reorder"),
                "messages out of order (all receivers)",
                t.reorder.to_string(),
                "0",
                "-".into(),
                t.reorder == 0,
            );
            if t.loss > 0 || t.reorder > 0 {
                r.broken = true;
            }
            if flood {
                // Nothing more: the comparison rows follow the pair.
            } else if receivers > 1 {
                r.check(
                    "rss.tput",
                    &format!(
                        "RSS per peer after 1 → {receivers} run (max; sender {})",
                        kib(t.rss_sender)
                    ),
                    kib(t.rss_max),
                    "≤ 3 MiB",
                    "-".into(),
                    t.rss_max <= 3 * 1024,
                );
            } else {
                r.info(
                    "rss.tput1",
                    "RSS of the sender after 1 → 1 run",
                    kib(t.rss_sender),
                );
            }
            Some(t)
        }
        Err(e) => {
            r.failed(
                &format!("throughput 1 → {receivers}, {mode}"),
                &e,
                &[
                    (&format!("{key}.rate"), "throughput", &tgt),
                    (&format!("{key}.loss"), "messages lost", "0"),
                    (&format!("{key}.reorder"), "messages out of order", "0"),
                ],
            );
            None
        }
    }
}

/// 1 → N with lazy push and with flooding, one after the other: full
/// copies of each message each receiver read, announcement bytes apart.
fn tput_pair(plan: &Plan, lim: &mut Limits, r: &mut Report, receivers: usize, target: f64) {
    let tree = tput_stage(plan, lim, r, receivers, target, false);
    let flood = tput_stage(plan, lim, r, receivers, target, true);
    let key = format!("copies{receivers}");
    match tree {
        Some(t) => {
            r.check(
                &format!("{key}.tree"),
                &format!("full copies of a message each receiver read, 1 → {receivers}, lazy push"),
                format!("{:.2}", t.copies),
                "≤ 1.3",
                flood
                    .as_ref()
                    .map_or("-".into(), |f| format!("flooding {:.2}", f.copies)),
                t.copies <= 1.3,
            );
            r.info(
                &format!("announce{receivers}.tree"),
                &format!("IHAVE+GRAFT+PRUNE bytes per message per receiver, 1 → {receivers}"),
                format!("{:.1} bytes", t.announce),
            );
        }
        None => r.fail(&format!("{key}.tree"), "full copies per receiver", "≤ 1.3"),
    }
    if let Some(f) = flood {
        r.info(
            &format!("{key}.flood"),
            &format!("full copies of a message each receiver read, 1 → {receivers}, flooding"),
            format!("{:.2}", f.copies),
        );
    }
}

/// One stream with a relay killed in the middle of it.
struct KillRun {
    /// Per message every survivor printed, the time until the last one
    /// did; and for those sent after the kill.
    lat: Vec<Duration>,
    after: Vec<Duration>,
    /// Summed over survivors: messages never printed, printed twice,
    /// printed after a later one.
    loss: u64,
    dups: u64,
    reorder: u64,
    victim: String,
}

/// `n` peers started with `args`, settled and warmed up; `p0` writes
/// `msgs` lines, one every `every`, and half-way the receiver that relayed
/// the most of `p0`'s lines (a link of its tree) is killed (SIGKILL).
fn kill_run(n: usize, msgs: usize, every: Duration, args: &[&str]) -> Result<KillRun, String> {
    let mut net = Net::with(args);
    net.grow_to(n)?;
    net.settle()?;
    net.warm(WARM)?;
    let before = net.traffic()?;
    net.warm(WARM)?;
    let relayed: Vec<u64> = net
        .traffic()?
        .iter()
        .zip(&before)
        .map(|(a, b)| a.since(*b).sent_events)
        .collect();
    let busiest = (0..relayed.len()).max_by_key(|&i| relayed[i]).unwrap_or(0);
    let victim = net.peers.remove(1 + busiest);
    let victim_name = victim.name.clone();
    net.discard();
    let mut stdin = net.peers[0].stdin.take().ok_or("stdin taken")?;
    let (half_tx, half_rx) = mpsc::channel();
    let writer = thread::spawn(move || {
        let t0 = Instant::now();
        let mut sent = Vec::with_capacity(msgs);
        for k in 0..msgs {
            // The stream's pace (it is the load, not a wait for output).
            let at = t0 + every * k as u32;
            if let Some(d) = at.checked_duration_since(Instant::now()) {
                thread::sleep(d);
            }
            sent.push(Instant::now());
            if stdin.write_all(format!("k{k}\n").as_bytes()).is_err() {
                break;
            }
            if k == msgs / 2 {
                let _ = half_tx.send(());
            }
        }
        (stdin, sent)
    });
    let killed = half_rx.recv_timeout(DEADLINE).map(|_| {
        // Dropping the guard kills it (SIGKILL) and reaps it.
        drop(victim);
        Instant::now()
    });
    let (stdin, sent) = writer.join().map_err(|_| "writer panicked")?;
    net.peers[0].stdin = Some(stdin);
    let killed = killed.map_err(|_| "the stream never got half-way".to_string())?;
    let mut first: Vec<Option<Instant>> = vec![None; sent.len()];
    let mut worst: Vec<Option<Duration>> = vec![Some(Duration::ZERO); sent.len()];
    let (mut loss, mut dups, mut reorder) = (0, 0, 0);
    for p in &mut net.peers[1..] {
        first.iter_mut().for_each(|f| *f = None);
        let mut got = 0;
        let mut max_seen = None::<usize>;
        p.pending.clear();
        while got < sent.len() {
            let Ok((at, lines)) = p.rx.recv_timeout(STALL) else {
                break;
            };
            for l in &lines {
                let Some(k) = l
                    .strip_prefix("p0: k")
                    .and_then(|s| s.parse::<usize>().ok())
                else {
                    continue;
                };
                if k >= sent.len() {
                    continue;
                }
                if first[k].is_some() {
                    dups += 1;
                    continue;
                }
                first[k] = Some(at);
                got += 1;
                if max_seen.is_some_and(|m| k < m) {
                    reorder += 1;
                }
                max_seen = Some(max_seen.map_or(k, |m| m.max(k)));
            }
        }
        loss += (sent.len() - got) as u64;
        for (k, w) in worst.iter_mut().enumerate() {
            *w = match (*w, first[k]) {
                (Some(w), Some(at)) => Some(w.max(at.saturating_duration_since(sent[k]))),
                _ => None,
            };
        }
    }
    let mut lat = Vec::new();
    let mut after = Vec::new();
    for (k, w) in worst.iter().enumerate() {
        if let Some(w) = *w {
            lat.push(w);
            if sent[k] > killed {
                after.push(w);
            }
        }
    }
    Ok(KillRun {
        lat,
        after,
        loss,
        dups,
        reorder,
        victim: victim_name,
    })
}

/// A tree link killed during a stream, lazy push and flooding one after
/// the other: the farthest survivor's latency, before and after, and
/// nothing lost, repeated or reordered.
fn kill_stage(plan: &Plan, r: &mut Report) {
    let (n, msgs, every) = (16, plan.kill, Duration::from_millis(1));
    let mut runs = Vec::new();
    for flood in [false, true] {
        let mode = if flood { "flood" } else { "tree" };
        progress(&format!(
            "kill: {n} peers ({}), {msgs} lines 1 ms apart, the busiest relay killed half-way",
            if flood { "flooding" } else { "lazy push" }
        ));
        let args: &[&str] = if flood { &["--flood"] } else { &[] };
        match kill_run(n, msgs, every, args) {
            Ok(k) => {
                let what = |s: &str| {
                    format!(
                        "stream to {n}, {} killed half-way, {}: last survivor, {s}",
                        k.victim,
                        if flood { "flooding" } else { "lazy push" }
                    )
                };
                r.info(
                    &format!("kill.{mode}.p50"),
                    &what("p50"),
                    us(pct(&k.lat, 0.5)),
                );
                r.info(
                    &format!("kill.{mode}.p99"),
                    &what("p99"),
                    us(pct(&k.lat, 0.99)),
                );
                r.info(
                    &format!("kill.{mode}.after99"),
                    &what("p99 of lines sent after the kill"),
                    us(pct(&k.after, 0.99)),
                );
                r.info(
                    &format!("kill.{mode}.max"),
                    &what("max"),
                    us(pct(&k.lat, 1.0)),
                );
                runs.push(Some(k));
            }
            Err(e) => {
                r.failed(
                    &format!("kill ({mode})"),
                    &e,
                    &[(&format!("kill.{mode}.p50"), "stream with a kill", "-")],
                );
                runs.push(None);
            }
        }
    }
    if let [Some(t), Some(f)] = &runs[..] {
        let (t50, f50) = (pct(&t.lat, 0.5), pct(&f.lat, 0.5));
        let ratio = t50.as_secs_f64() / f50.as_secs_f64().max(1e-9);
        r.check(
            "kill.ratio",
            "stream with a kill: lazy push p50 / flooding p50",
            format!("{ratio:.2}×"),
            "≤ 1.2×",
            us(f50),
            ratio <= 1.2,
        );
    }
    let bad: u64 = runs
        .iter()
        .flatten()
        .map(|k| k.loss + k.dups + k.reorder)
        .sum();
    let detail: Vec<String> = runs
        .iter()
        .flatten()
        .map(|k| {
            format!(
                "{} lost, {} twice, {} out of order",
                k.loss, k.dups, k.reorder
            )
        })
        .collect();
    r.check(
        "kill.loss",
        &format!(
            "stream with a kill: lines lost, repeated, reordered ({})",
            detail.join("; ")
        ),
        bad.to_string(),
        "0",
        "-".into(),
        bad == 0,
    );
    if bad > 0 {
        r.broken = true;
    }
}

fn fanout_target(n: usize) -> Option<(Duration, &'static str)> {
    match n {
        16 => Some((Duration::from_millis(1), "< 1 ms")),
        64 => Some((Duration::from_millis(5), "< 5 ms")),
        _ => None,
    }
}

/// The growing network: fan-out at each size, joins, RSS with 64, idle
/// cost, then scale.
fn network_stage(plan: &Plan, lim: &Limits, r: &mut Report) {
    let mut net = Net::new();
    let base = if lim.half_rtt.is_zero() {
        "-".to_string()
    } else {
        us(lim.half_rtt)
    };
    let mut biggest = 0;
    // The same network grown with flooding beside it, measured in turns,
    // one message each, so that both see the same machine.
    let mut fnet = Net::with(&["--flood"]);
    for &(n, msgs) in &plan.fanout {
        progress(&format!(
            "fan-out: growing networks to {n} peers (lazy push, flooding), then {msgs} messages each"
        ));
        let mut before = Vec::new();
        let mut tb = Vec::new();
        let mut fb = Vec::new();
        let (mut depth0, mut cpu0) = (Vec::new(), (0, 0));
        let res = (|| {
            net.grow_to(n)?;
            fnet.grow_to(n)?;
            net.settle()?;
            fnet.settle()?;
            net.warm(WARM)?;
            fnet.warm(WARM)?;
            net.discard();
            fnet.discard();
            depth0 = net.depths()?;
            before = net.counters();
            tb = net.traffic()?;
            fb = fnet.traffic()?;
            cpu0 = (net_cpu_ns(&net), net_cpu_ns(&fnet));
            fanout_pair(&mut net, &mut fnet, msgs, &format!("f{n}"))
        })();
        if let Ok((v, f)) = &res {
            let cpu = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / 1e3 / msgs as f64;
            r.note(format!(
                "fan-out {n}: CPU per message {:.1} µs for all peers (flooding {:.1} µs)",
                cpu(net_cpu_ns(&net), cpu0.0),
                cpu(net_cpu_ns(&fnet), cpu0.1),
            ));
            r.note(format!("fan-out {n}: lazy push {}", phases(v)));
            r.note(format!("fan-out {n}: flooding {}", phases(f)));
            if let Ok(d1) = net.depths() {
                r.note(format!(
                    "fan-out {n}: p0's tree, hops to each receiver: after warm-up {}; after the run {}",
                    depths(&depth0),
                    depths(&d1)
                ));
            }
        }
        let copies = |net: &mut Net, b: &[Traffic]| -> Option<f64> {
            let a = net.traffic().ok()?;
            let ev: u64 = a.iter().zip(b).map(|(a, b)| a.since(*b).events).sum();
            Some(ev as f64 / ((n - 1) * msgs) as f64)
        };
        let (tc, fc) = if res.is_ok() {
            note_fanout(r, &net, n, msgs, &before);
            (copies(&mut net, &tb), copies(&mut fnet, &fb))
        } else {
            (None, None)
        };
        let key = format!("fanout{n}");
        let tgt = fanout_target(n);
        match res {
            Ok((v, f)) => {
                biggest = n;
                let (p50, p99) = (pct(&v, 0.5), pct(&v, 0.99));
                let (f50, f99) = (pct(&f, 0.5), pct(&f, 0.99));
                r.info(
                    &format!("{key}.p50"),
                    &format!("fan-out to {n} peers, last one, p50"),
                    us(p50),
                );
                match tgt {
                    Some((t, s)) => r.check(
                        &format!("{key}.p99"),
                        &format!("fan-out to {n} peers, last one, p99"),
                        us(p99),
                        s,
                        base.clone(),
                        p99 < t,
                    ),
                    None => r.info(
                        &format!("{key}.p99"),
                        &format!("fan-out to {n} peers, last one, p99"),
                        us(p99),
                    ),
                }
                r.info(
                    &format!("{key}.flood.p50"),
                    &format!("fan-out to {n} peers, flooding, last one, p50"),
                    us(f50),
                );
                r.info(
                    &format!("{key}.flood.p99"),
                    &format!("fan-out to {n} peers, flooding, last one, p99"),
                    us(f99),
                );
                let ratio = p50.as_secs_f64() / f50.as_secs_f64().max(1e-9);
                r.check(
                    &format!("{key}.ratio"),
                    &format!("fan-out to {n}: lazy push p50 / flooding p50"),
                    format!("{ratio:.2}×"),
                    "≤ 1.2×",
                    us(f50),
                    ratio <= 1.2,
                );
                if let (Some(tc), Some(fc)) = (tc, fc) {
                    r.check(
                        &format!("{key}.copies"),
                        &format!("fan-out to {n}: full copies each receiver read, lazy push"),
                        format!("{tc:.2}"),
                        "≤ 1.3",
                        format!("flooding {fc:.2}"),
                        tc <= 1.3,
                    );
                }
            }
            Err(e) => {
                let t = tgt.map_or("-", |t| t.1);
                r.failed(
                    &format!("fan-out {n}"),
                    &e,
                    &[(&format!("{key}.p99"), "fan-out p99", t)],
                );
                break;
            }
        }
    }
    // The flooding network has done its part: gone before idle and scale.
    drop(fnet);
    if plan.quick && biggest < 64 {
        r.skip(
            "fanout64.p99",
            "fan-out to 64 peers, last one, p99",
            "< 5 ms",
        );
    }

    // Joins into networks of 16 to 63 (the quick run has only 4 to 15).
    let lo = if plan.quick { 4 } else { 16 };
    let j: Vec<&(usize, Duration, Duration)> = net
        .joins
        .iter()
        .filter(|(n, _, _)| *n >= lo && *n < 64)
        .collect();
    if j.is_empty() {
        r.fail("join.p50", "join to first message", "< 20 ms");
    } else {
        let hi = j.iter().map(|x| x.0).max().unwrap_or(0);
        let line: Vec<Duration> = j.iter().map(|x| x.1).collect();
        let full: Vec<Duration> = j.iter().map(|x| x.2).collect();
        let max = full.iter().max().copied().unwrap_or_default();
        let p50 = pct(&full, 0.5);
        let span = format!("{lo}–{hi}");
        r.info(
            "join.line.p50",
            &format!("start until `joined` line, networks of {span}, p50"),
            us(pct(&line, 0.5)),
        );
        r.check(
            "join.p50",
            &format!("join to first message both ways, networks of {span}, p50"),
            us(p50),
            "< 20 ms",
            "-".into(),
            p50 < Duration::from_millis(20),
        );
        r.check(
            "join.max",
            &format!("join to first message both ways, {} joins, max", full.len()),
            us(max),
            "< 20 ms",
            "-".into(),
            max < Duration::from_millis(20),
        );
    }

    if biggest == 64 {
        let rss: Vec<u64> = net.peers.iter().map(Peer::rss_kib).collect();
        let max = rss.iter().copied().max().unwrap_or(0);
        let mean = rss.iter().sum::<u64>() / rss.len().max(1) as u64;
        r.check(
            "rss.net64",
            &format!("RSS per peer, 64-peer network (max; mean {})", kib(mean)),
            kib(max),
            "≤ 3 MiB",
            "-".into(),
            max <= 3 * 1024,
        );
    } else {
        r.skip("rss.net64", "RSS per peer, 64-peer network", "≤ 3 MiB");
    }

    if biggest > 0 {
        rooms(plan, &mut net, r);
        idle(plan, &mut net, r);
    } else {
        r.fail("idle.wakeups", "idle wakeups per peer", "≤ 1/s");
    }

    if plan.quick {
        r.skip(
            "scale.peers",
            "largest network where every line reaches all",
            "≥ 100",
        );
    } else if biggest == 64 {
        scale(plan, &mut net, r);
    } else {
        r.fail(
            "scale.peers",
            "largest network where every line reaches all",
            "≥ 100",
        );
    }
}

/// `BENCH_ONLY=rooms`: a network of the largest fan-out size grown for
/// the rooms stage alone (no fan-out runs before it).
fn rooms_stage(plan: &Plan, r: &mut Report) {
    let n = plan.fanout.last().map_or(16, |f| f.0);
    progress(&format!("rooms: growing a network to {n} peers"));
    let mut net = Net::new();
    let res = (|| {
        net.grow_to(n)?;
        net.settle()?;
        net.warm(WARM)?;
        net.discard();
        Ok::<_, String>(())
    })();
    match res {
        Ok(()) => rooms(plan, &mut net, r),
        Err(e) => r.failed("rooms", &e, &[("rooms.p50", "room line, last member", "-")]),
    }
}

/// Rooms in the largest fan-out network: what a line said in a room costs
/// beside one said in the lobby.
fn rooms(plan: &Plan, net: &mut Net, r: &mut Report) {
    let n = net.peers.len();
    let k = if n >= 64 { 8 } else { 4 };
    let msgs = if plan.quick { 20 } else { 200 };
    progress(&format!(
        "rooms: {k} rooms in {n} peers, {msgs} lines in a room and in the lobby"
    ));
    let rows = [
        ("rooms.p50", "room line, last member", "-"),
        ("rooms.bytes", "room line, bytes network-wide", "-"),
    ];
    match rooms_run(net, k, msgs) {
        Ok(f) => {
            let what = |s: &str, who: &str, size: usize| {
                format!("{s} line to its {size} {who} ({k} rooms, {n} peers), last one")
            };
            r.check(
                "rooms.p50",
                &format!("{}, p50", what("room", "members", f.room_size)),
                us(pct(&f.room, 0.5)),
                "≤ 1.5× lobby",
                format!("lobby {}", us(pct(&f.lobby, 0.5))),
                pct(&f.room, 0.5).as_secs_f64() <= 1.5 * pct(&f.lobby, 0.5).as_secs_f64(),
            );
            r.info(
                "rooms.p99",
                &format!("{}, p99", what("room", "members", f.room_size)),
                us(pct(&f.room, 0.99)),
            );
            r.info(
                "rooms.lobby.p50",
                &format!("{}, p50", what("lobby", "members", f.lobby_size)),
                us(pct(&f.lobby, 0.5)),
            );
            r.check(
                "rooms.bytes",
                &format!("TCP bytes received network-wide per room line ({n} peers)"),
                format!("{:.0} bytes", f.room_bytes),
                "≤ 1.5× lobby",
                format!("lobby {:.0} bytes", f.lobby_bytes),
                f.lobby_bytes == 0.0 || f.room_bytes <= 1.5 * f.lobby_bytes,
            );
        }
        Err(e) => r.failed("rooms", &e, &rows),
    }
}

struct RoomFigures {
    room: Vec<Duration>,
    lobby: Vec<Duration>,
    room_bytes: f64,
    lobby_bytes: f64,
    room_size: usize,
    lobby_size: usize,
}

/// Peer `i`'s room in the rooms stage: every `k + 1`th stays in the lobby
/// (`None`), the others fill rooms `r1` to `rk`, made by `p1` to `pk`.
fn room_slot(i: usize, k: usize) -> Option<usize> {
    let slot = i % (k + 1);
    (slot > 0).then_some(slot)
}

fn rooms_run(net: &mut Net, k: usize, msgs: usize) -> Result<RoomFigures, String> {
    let n = net.peers.len();
    for j in 1..=k {
        net.peers[j].send(&format!(":create r{j}"))?;
    }
    for j in 1..=k {
        net.peers[j].expect(&format!("* you are in r{j}"), Instant::now() + DEADLINE)?;
    }
    // Everyone else goes in (asked again if the room is not known yet).
    for i in k + 1..n {
        let Some(slot) = room_slot(i, k) else {
            continue;
        };
        let line = format!("* you are in r{slot}");
        let mut tries = 0;
        loop {
            net.peers[i].send(&format!(":join r{slot}"))?;
            tries += 1;
            match net.peers[i].expect(&line, Instant::now() + Duration::from_secs(1)) {
                Ok(_) => break,
                Err(e) if tries >= 5 => return Err(e),
                Err(_) => {}
            }
        }
    }
    net.discard();
    let members = |slot: Option<usize>, sender: usize| -> Vec<usize> {
        (0..n)
            .filter(|&i| i != sender && room_slot(i, k) == slot)
            .collect()
    };
    let run = |net: &mut Net, sender: usize, slot: Option<usize>, tag: &str| {
        let to = members(slot, sender);
        let before = net.counters();
        let mut lat = Vec::with_capacity(msgs);
        for m in 0..msgs {
            let text = format!("{tag}-{m}");
            let line = match slot {
                Some(s) => format!("[r{s}] p{sender}: {text}"),
                None => format!("p{sender}: {text}"),
            };
            let t0 = Instant::now();
            net.peers[sender].send(&text)?;
            let mut last = t0;
            for &q in &to {
                last = last.max(net.peers[q].expect(&line, t0 + DEADLINE)?);
            }
            lat.push(last - t0);
        }
        let after = net.counters();
        let bytes: u64 = before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.1.saturating_sub(b.1))
            .sum();
        Ok::<_, String>((lat, bytes as f64 / msgs as f64, to.len()))
    };
    let (room, room_bytes, room_size) = run(net, 1, Some(1), "rl")?;
    let (lobby, lobby_bytes, lobby_size) = run(net, 0, None, "ll")?;
    // Back to the lobby, for the stages after: the rooms are deleted.
    for j in 1..=k {
        net.peers[j].send(&format!(":delete r{j}"))?;
    }
    let mut moved = std::collections::HashSet::new();
    for i in 1..n {
        if let Some(slot) = room_slot(i, k) {
            net.peers[i].expect("* you are in lobby", Instant::now() + DEADLINE)?;
            moved.insert(format!("* p{i} moved from r{slot} to lobby"));
        }
    }
    // p0 has seen each come back (no notice is left on its way when the
    // next stage starts).
    while !moved.is_empty() {
        let (_, l) = net.peers[0].wait(&|l| moved.contains(l), Instant::now() + DEADLINE)?;
        moved.remove(&l);
    }
    net.peers[0].send("rooms done")?;
    for q in &mut net.peers[1..] {
        q.expect("p0: rooms done", Instant::now() + DEADLINE)?;
    }
    net.discard();
    Ok(RoomFigures {
        room,
        lobby,
        room_bytes,
        lobby_bytes,
        room_size,
        lobby_size,
    })
}

/// Per message and peer: how often it woke and how many copies it read.
fn note_fanout(r: &mut Report, net: &Net, n: usize, msgs: usize, before: &[(u64, u64)]) {
    let after = net.counters();
    let (mut cs, mut rd) = (0u64, 0u64);
    for (b, a) in before.iter().zip(&after).skip(1) {
        cs += a.0.saturating_sub(b.0);
        rd += a.1.saturating_sub(b.1);
    }
    let per = (msgs * (n - 1)) as f64;
    // The frame of "fN-k" is 31 bytes plus the text.
    let frame = 31.0 + format!("f{n}-{}", msgs / 2).len() as f64;
    // No `ss`, no byte counts.
    let copies = if rd == 0 {
        String::new()
    } else {
        format!(
            " and read {:.0} bytes (≈ {:.1} copies)",
            rd as f64 / per,
            rd as f64 / per / frame
        )
    };
    r.note(format!(
        "fan-out {n}: {:.1} links per peer; per message each receiver woke {:.1} times{copies}",
        net.mean_links(),
        cs as f64 / per,
    ));
}

/// The idle stage waits at most this for the network to settle.
const SETTLE_MAX: Duration = Duration::from_secs(15);

fn idle(plan: &Plan, net: &mut Net, r: &mut Report) {
    let n = net.peers.len();
    progress(&format!(
        "idle: {n} peers, {} s of silence",
        plan.idle.as_secs()
    ));
    // Steady state: what the stages before left to do (rooms deleted,
    // announcements, trees pruned) is done first.
    let settle = Instant::now();
    let mut wakes: Vec<u64> = net.peers.iter().map(Peer::wakeups).collect();
    while settle.elapsed() < SETTLE_MAX {
        thread::sleep(Duration::from_secs(1)); // a settling second, measured
        let now: Vec<u64> = net.peers.iter().map(Peer::wakeups).collect();
        let most = now.iter().zip(&wakes).map(|(a, b)| a - b).max();
        wakes = now;
        if most.unwrap_or(0) <= 2 {
            break;
        }
    }
    r.note(format!(
        "idle: settled after {:.1} s",
        settle.elapsed().as_secs_f64()
    ));
    // Every line so far was matched or discarded: anything printed from
    // now on happened during the window.
    net.discard();
    let before: Vec<(u64, u64)> = net
        .peers
        .iter()
        .map(|p| (p.cost().0, p.wakeups()))
        .collect();
    let t0 = Instant::now();
    thread::sleep(plan.idle); // the measurement window itself
    let secs = t0.elapsed().as_secs_f64();
    let after: Vec<(u64, u64)> = net
        .peers
        .iter()
        .map(|p| (p.cost().0, p.wakeups()))
        .collect();
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let wake: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.1.saturating_sub(b.1) as f64 / secs)
        .collect();
    let ticks: u64 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.0.saturating_sub(b.0))
        .sum();
    let max = wake.iter().copied().fold(0.0, f64::max);
    let busiest = wake.iter().position(|&w| w == max).unwrap_or(0);
    let links: Vec<usize> = net.peers.iter().map(Peer::links).collect();
    r.note(format!(
        "idle: the peer with most wake-ups ({}) has {} links; links per peer {} to {}",
        net.peers[busiest].name,
        links[busiest],
        links.iter().min().unwrap_or(&0),
        links.iter().max().unwrap_or(&0)
    ));
    let mean = wake.iter().sum::<f64>() / n as f64;
    r.check(
        "idle.wakeups",
        &format!("wake-ups/s per peer, {n} idle peers (max; mean {mean:.2})"),
        format!("{max:.2} /s"),
        "≤ 1/s",
        "-".into(),
        max <= 1.0,
    );
    r.info(
        "idle.cpu",
        &format!("CPU per peer, idle (mean over {n}; {tck} ticks/s)"),
        format!("{:.3} ms/s", ticks as f64 / tck * 1000.0 / n as f64 / secs),
    );
    let mut lines = 0;
    let mut first = None;
    for p in &mut net.peers {
        while let Ok(b) = p.rx.try_recv() {
            p.take(b);
        }
        lines += p.pending.len();
        if first.is_none() {
            first = p.pending.front().map(|(_, l)| format!("{}: {l}", p.name));
        }
    }
    if let Some(f) = first {
        r.note(format!(
            "idle: peers printed {lines} lines during the window, first {f:?}"
        ));
    }
}

fn scale(plan: &Plan, net: &mut Net, r: &mut Report) {
    let t0 = Instant::now();
    let mut best: Option<(usize, Duration)> = None;
    let mut steps = vec![100, 150, 200];
    steps.extend((3..).map(|k| k * 100).take(20));
    let mut last_step = Duration::ZERO;
    for n in steps {
        // A step costs more than the one before it: start it only if one
        // and a half times the last one still fits the budget.
        if t0.elapsed() + last_step * 3 / 2 > plan.scale_budget {
            r.note(format!(
                "scale: stopped before {n} peers, time budget of {} s",
                plan.scale_budget.as_secs()
            ));
            break;
        }
        progress(&format!("scale: growing to {n} peers"));
        let step = Instant::now();
        let res = net.grow_to(n).and_then(|_| {
            net.discard();
            net.fanout(100, &format!("s{n}"))
        });
        last_step = step.elapsed();
        match res {
            Ok(v) => {
                best = Some((n, pct(&v, 0.99)));
                progress(&format!(
                    "scale: {n} peers ok in {:.1} s, p99 {}",
                    step.elapsed().as_secs_f64(),
                    us(pct(&v, 0.99))
                ));
            }
            Err(e) => {
                r.note(format!("scale: {n} peers failed: {e}"));
                break;
            }
        }
    }
    net.note_stderr(r, "scale");
    let j: Vec<Duration> = net
        .joins
        .iter()
        .filter(|x| x.0 >= 64)
        .map(|x| x.2)
        .collect();
    if !j.is_empty() {
        r.info(
            "join.big.p50",
            &format!(
                "join to first message, networks of 64–{}, p50",
                net.peers.len() - 1
            ),
            us(pct(&j, 0.5)),
        );
    }
    match best {
        Some((n, p99)) => {
            r.check(
                "scale.peers",
                "largest network where every line reaches all",
                n.to_string(),
                "≥ 100",
                "-".into(),
                n >= 100,
            );
            r.info(
                "scale.p99",
                &format!("fan-out to {n} peers, last one, p99"),
                us(p99),
            );
        }
        None => r.check(
            "scale.peers",
            "largest network where every line reaches all",
            "< 100".into(),
            "≥ 100",
            "-".into(),
            false,
        ),
    }
}

// ---------------------------------------------------------------- discovery

/// The libp2p chat example with mDNS, start to first message, on this
/// kind of machine (2 and 8 peers): quoted, not measured here.
const LIBP2P_FIRST: [(usize, u64); 2] = [(2, 54), (8, 232)];

/// A network namespace with loopback only, for discovery's multicast to
/// stay in; deleted (and what runs in it killed, by PID) on drop.
struct Netns(String);

impl Netns {
    fn new() -> Result<Netns, String> {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root".into());
        }
        let name = format!("p2pb-{}", std::process::id());
        let ip = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        ip(&["netns", "add", &name])?;
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.0]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: kill(2) by PID, processes we started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// `n` peers started at once with `--discover` only, on loopback in
/// namespace `ns`: the time from starting the first until the first
/// peer's first message has reached all the others. The first peer says
/// it as soon as it knows of all the others (its `* joined through ...
/// (k members)` and `* NAME joined` lines).
fn discover_once(ns: &Netns, n: usize) -> Result<Duration, String> {
    let t0 = Instant::now();
    let mut peers = Vec::new();
    for i in 0..n {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.0, &bin()]);
        cmd.args(["--plain", "-b", "127.0.0.1", "--discover", &format!("d{i}")]);
        peers.push(Peer::launch(&format!("d{i}"), cmd)?);
    }
    let deadline = t0 + DEADLINE;
    let first = &mut peers[0];
    let mut others = std::collections::BTreeSet::new();
    let mut via = 0;
    while via + others.len() < n - 1 {
        let (_, l) = first.wait(
            &|l| l.starts_with("* joined through ") || l.ends_with(" joined"),
            deadline,
        )?;
        if let Some(rest) = l.strip_prefix("* joined through ") {
            via = rest
                .rsplit_once(" (")
                .and_then(|(_, m)| m.strip_suffix(" members)"))
                .and_then(|m| m.parse::<usize>().ok())
                .ok_or_else(|| format!("d0: {l:?}"))?
                - 1;
        } else if let Some(name) = l.strip_prefix("* ").and_then(|l| l.strip_suffix(" joined")) {
            others.insert(name.to_string());
        }
    }
    first.send("first")?;
    let mut last = t0;
    for p in peers.iter_mut().skip(1) {
        last = last.max(p.expect("d0: first", deadline)?);
    }
    Ok(last - t0)
}

/// Start to first message with discovery, 2 and 8 peers.
fn discover_stage(plan: &Plan, r: &mut Report) {
    let runs = if plan.quick { 1 } else { 5 };
    let ns = match Netns::new() {
        Ok(ns) => ns,
        Err(e) => {
            r.note(format!("discover: skipped: {e}"));
            for (n, ms) in LIBP2P_FIRST {
                let key = format!("discover.first{n}");
                r.skip(
                    &key,
                    &format!("start to first message, {n} peers, --discover"),
                    &format!("≤ {ms} ms"),
                );
            }
            return;
        }
    };
    for (n, libp2p) in LIBP2P_FIRST {
        progress(&format!("discover: {n} peers with --discover, {runs} runs"));
        let key = format!("discover.first{n}");
        let what = format!("start to first message, {n} peers, --discover, p50 of {runs}");
        let target = format!("≤ {libp2p} ms");
        let mut v = Vec::new();
        for _ in 0..runs {
            match discover_once(&ns, n) {
                Ok(d) => v.push(d),
                Err(e) => {
                    r.failed("discover", &e, &[(&key, &what, &target)]);
                    break;
                }
            }
        }
        if v.len() < runs {
            continue;
        }
        let p50 = pct(&v, 0.5);
        r.check(
            &key,
            &what,
            format!(
                "{:.1} ms (max {:.1})",
                p50.as_secs_f64() * 1e3,
                pct(&v, 1.0).as_secs_f64() * 1e3
            ),
            &target,
            format!("libp2p+mDNS {libp2p} ms"),
            p50 <= Duration::from_millis(libp2p),
        );
    }
    r.note(
        "discover: the libp2p chat example with mDNS takes about 54 ms (2 peers) and 232 ms \
         (8 peers) from start to first message on this kind of machine (quoted, not measured \
         here); ours run in a network namespace of their own, on loopback"
            .into(),
    );
}

/// CPU time of the whole machine, and of this bench with every child it
/// reaped, in clock ticks.
#[derive(Clone, Copy)]
struct Ticks {
    /// Busy, steal included.
    busy: u64,
    total: u64,
    /// Taken by the hypervisor from this virtual machine (the `steal`
    /// column of /proc/stat): time our processes were ready to run and
    /// did not, which no figure here can tell from slowness of ours.
    steal: u64,
    own: u64,
}

impl Ticks {
    fn now() -> Ticks {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let f: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let at = |i: usize| f.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal
        let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
        let total = busy + at(3) + at(4);
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let mut own = 0;
        for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            if unsafe { libc::getrusage(who, &mut ru) } == 0 {
                let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
                own += (us(ru.ru_utime) + us(ru.ru_stime)) * tck / 1_000_000;
            }
        }
        Ticks {
            busy,
            total,
            steal: at(7),
            own,
        }
    }

    /// The share of the machine's time since `before` that the
    /// hypervisor took, in percent.
    fn steal_since(&self, before: &Ticks) -> f64 {
        (self.steal - before.steal) as f64 * 100.0 / (self.total - before.total).max(1) as f64
    }
}

/// The 1-minute load average.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn raise_nofile() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(code) = relay_main(&args) {
        std::process::exit(code);
    }
    // `cargo bench` passes `--bench`; there are no other options.
    let quick = std::env::var_os("BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0");
    let mut plan = Plan::new(quick);
    if let Ok(f) = std::env::var("BENCH_FANOUT") {
        plan.fanout = f
            .split(',')
            .map(|s| {
                let (n, m) = s
                    .trim()
                    .split_once(':')
                    .expect("BENCH_FANOUT: peers:messages");
                (
                    n.parse().expect("BENCH_FANOUT peers"),
                    m.parse().expect("BENCH_FANOUT messages"),
                )
            })
            .collect();
    }
    raise_nofile();
    let started = Instant::now();
    let mut r = Report::default();
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let header = format!(
        "p2pchat bench: {} run, {cpus} cpus, linux {}, load average at start {}",
        if quick { "quick" } else { "full" },
        kernel.trim(),
        loadavg()
    );

    // BENCH_ONLY=stage,stage runs only those stages (limits always run).
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |s: &str| only.is_empty() || only.split(',').any(|o| o.trim() == s);
    let cpu0 = Ticks::now();
    let mut lim = limits(&plan, &mut r);
    match std::fs::metadata(bin()) {
        Ok(m) => r.info(
            "size.binary",
            "target/release/p2pchat, stripped",
            format!("{} bytes", rate(m.len() as f64)),
        ),
        Err(e) => r.note(format!("binary size: {e}")),
    }
    if run("onehop") {
        onehop(&plan, &mut lim, &mut r);
    }
    if run("tput1") {
        tput_stage(&plan, &mut lim, &mut r, 1, 100_000.0, false);
    }
    let baseline = std::env::var("BENCH_BASELINE")
        .ok()
        .filter(|b| !b.is_empty());
    // Not in the quick run of `make test` unless asked for.
    if (run("cpu") && !quick)
        || (quick && (only.split(',').any(|o| o.trim() == "cpu") || baseline.is_some()))
    {
        cpu_stage(&plan, baseline.as_deref(), &mut r);
    }
    if run("tput16") {
        tput_pair(&plan, &mut lim, &mut r, plan.tput_wide, 100_000.0);
    }
    if run("kill") {
        kill_stage(&plan, &mut r);
    }
    if run("secret") {
        secret_stage(&plan, &lim, &mut r);
    }
    if run("dm") {
        dm_stage(&plan, &lim, &mut r);
    }
    if run("net") {
        network_stage(&plan, &lim, &mut r);
    } else if run("rooms") {
        rooms_stage(&plan, &mut r);
    }
    if run("discover") {
        discover_stage(&plan, &mut r);
    }
    if run("files") {
        files_stage(&plan, &mut r);
    }

    let cpu1 = Ticks::now();
    let others =
        (cpu1.busy - cpu0.busy).saturating_sub(cpu1.own - cpu0.own + cpu1.steal - cpu0.steal);
    r.note(format!(
        "run took {:.0} s; other processes used {:.0}% of the machine's CPU time meanwhile, \
         the hypervisor {:.0}% (steal) (both skew every figure)",
        started.elapsed().as_secs_f64(),
        others as f64 * 100.0 / (cpu1.total - cpu0.total).max(1) as f64,
        cpu1.steal_since(&cpu0)
    ));
    r.print(&header);
    if r.broken {
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- files

/// Bytes/s of a one-way copy of `bytes` over loopback TCP, 256 KiB at a
/// time: the most a transfer could hope for on this machine.
fn tcp_copy(bytes: usize) -> io::Result<f64> {
    let (mut c, mut s) = loopback()?;
    let recv = thread::spawn(move || {
        let mut buf = vec![0u8; 256 << 10];
        let mut got = 0usize;
        while got < bytes {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        (Instant::now(), got)
    });
    let chunk = vec![0x5au8; 256 << 10];
    let t0 = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let k = left.min(chunk.len());
        c.write_all(&chunk[..k])?;
        left -= k;
    }
    let (t1, got) = recv
        .join()
        .map_err(|_| io::Error::other("receiver panicked"))?;
    if got != bytes {
        return Err(io::Error::other(format!(
            "tcp copy: {got} of {bytes} bytes"
        )));
    }
    Ok(bytes as f64 / (t1 - t0).as_secs_f64())
}

/// CPU time of the calling thread, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// A raw copy of the file `src` over one loopback TCP connection into a
/// new file `dst` (see `limit.filecopy`): bytes/s, and the sender's and
/// the receiver's CPU nanoseconds. `dst` is deleted after.
fn file_copy(src: &Path, dst: &Path) -> io::Result<(f64, u64, u64)> {
    let (mut c, mut s) = loopback()?;
    let bytes = std::fs::metadata(src)?.len() as usize;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)?;
    let recv = thread::spawn(move || -> io::Result<(Instant, usize, u64)> {
        let cpu = thread_cpu_ns();
        let mut buf = vec![0u8; 256 << 10];
        let mut got = 0usize;
        while got < bytes {
            match s.read(&mut buf)? {
                0 => break,
                n => {
                    out.write_all(&buf[..n])?;
                    got += n;
                }
            }
        }
        Ok((Instant::now(), got, thread_cpu_ns() - cpu))
    });
    let mut file = std::fs::File::open(src)?;
    let mut chunk = vec![0u8; p2pchat::app::files::CHUNK];
    let t0 = Instant::now();
    let cpu = thread_cpu_ns();
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        c.write_all(&chunk[..n])?;
    }
    let sent = thread_cpu_ns() - cpu;
    let res = recv
        .join()
        .map_err(|_| io::Error::other("receiver panicked"))?;
    let _ = std::fs::remove_file(dst);
    let (t1, got, received) = res?;
    if got != bytes {
        return Err(io::Error::other(format!(
            "file copy: {got} of {bytes} bytes"
        )));
    }
    Ok((bytes as f64 / (t1 - t0).as_secs_f64(), sent, received))
}

/// Bytes/s of BLAKE3 over `bytes` in memory, one thread, in updates of
/// one DATA frame's bytes: what the receiver of a file must do to every
/// byte, at best.
fn blake3_rate(bytes: usize) -> f64 {
    let block = vec![0xa5u8; 64_000];
    let mut h = blake3::Hasher::new();
    let t0 = Instant::now();
    for _ in 0..bytes.div_ceil(block.len()) {
        h.update(&block);
    }
    std::hint::black_box(h.finalize());
    bytes as f64 / t0.elapsed().as_secs_f64()
}

/// Bytes/s of BLAKE2b-256 over `bytes` in memory, one thread (what older
/// versions offered).
fn blake2b_rate(bytes: usize) -> f64 {
    use blake2::{Blake2b, Digest, digest::consts::U32};
    let block = vec![0xa5u8; 1 << 20];
    let mut h = Blake2b::<U32>::new();
    let t0 = Instant::now();
    for _ in 0..bytes.div_ceil(block.len()) {
        h.update(&block);
    }
    std::hint::black_box(h.finalize());
    bytes as f64 / t0.elapsed().as_secs_f64()
}

/// A file of `size` bytes that does not compress, written in 1 MiB blocks.
fn write_file(path: &std::path::Path, size: usize) -> io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for b in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        let k = left.min(block.len());
        f.write_all(&block[..k])?;
        left -= k;
    }
    f.flush()
}

fn mib_s(r: f64) -> String {
    format!("{:.0} MiB/s", r / (1 << 20) as f64)
}

/// One line from `a` to `b`, stdin to stdout; if `also` comes first, its
/// arrival is put in `seen`.
fn chat_once(
    a: &mut Peer,
    b: &mut Peer,
    text: &str,
    also: &str,
    seen: &mut Option<Instant>,
) -> Result<Duration, String> {
    let line = format!("p0: {text}");
    let t0 = Instant::now();
    a.send(text)?;
    loop {
        let (t, l) = b.wait(&|l| l == line || l.contains(also), t0 + DEADLINE)?;
        if l == line {
            return Ok(t - t0);
        }
        seen.get_or_insert(t);
    }
}

/// Chat lines during a transfer go one at a time, at most one a
/// millisecond: far busier than people type, and a load on the peers that
/// does not grow as lines come back faster. Back to back, a 1 GiB
/// transfer carried 2,500-3,000 lines (each signed by one peer and checked
/// by the other) once a line took 0.4 ms, against 150-300 when one took
/// 5 ms, and the transfer's rate fell with it.
const CHAT_EVERY: Duration = Duration::from_millis(1);

/// Rate and CPU time of one `:get` of `src` with nothing else going on,
/// by a fresh pair of peers, with or without a network secret: bytes/s,
/// and the sender's and the receiver's CPU nanoseconds from the `:get`
/// until the saved line. The fetched copy is deleted.
fn fetch_alone(src: &Path, dir: &Path, secret: bool) -> Result<(f64, u64, u64), String> {
    let size = std::fs::metadata(src).map_err(|e| e.to_string())?.len();
    let db = dir.join(if secret { "secret" } else { "alone" });
    SECRET.store(secret, Ordering::Relaxed);
    let res = (|| {
        let dl = vec!["--download-dir".to_owned(), db.display().to_string()];
        let mut a = Peer::start("p0", None, &dl)?;
        let mut b = Peer::start("p1", Some(a.port), &dl)?;
        a.expect("* p1 joined", Instant::now() + DEADLINE)?;
        a.send(&format!(":send {}", src.display()))?;
        let t0 = Instant::now();
        let (_, offer) = b.wait(&|l| l.starts_with("* p0 offers "), t0 + 6 * DEADLINE)?;
        let id = offer.rsplit(":get ").next().unwrap_or("").trim().to_owned();
        let cpu = |p: &Peer| cpu_ns(p.pid());
        let (ca, cb) = (cpu(&a)?, cpu(&b)?);
        let tg = Instant::now();
        b.send(&format!(":get {id}"))?;
        let (t1, _) = b.wait(&|l| l.contains(" saved as "), tg + 30 * DEADLINE)?;
        let (ca, cb) = (cpu(&a)? - ca, cpu(&b)? - cb);
        Ok((size as f64 / (t1 - tg).as_secs_f64(), ca, cb))
    })();
    SECRET.store(false, Ordering::Relaxed);
    let _ = std::fs::remove_dir_all(&db);
    res
}

/// CPU seconds per GiB of `size` bytes that took `ns` nanoseconds.
fn s_per_gib(ns: u64, size: usize) -> f64 {
    ns as f64 / 1e9 * (1u64 << 30) as f64 / size as f64
}

/// A raw file copy (rate, sender's and receiver's CPU nanoseconds), and
/// the rate of the transfer that followed it and the share of the
/// machine's time the hypervisor took during it (steal, %).
type Round = ((f64, u64, u64), f64, f64);

/// Rounds of the files stage: each a raw copy and then a transfer, so
/// that both meet the same moments of a shared machine (one copy of
/// 64 MiB took from 1.3 to 2.2 GiB/s in runs minutes apart).
const FILE_ROUNDS: usize = 3;

/// The middle one of `v` by `key` (of three, the second).
fn median_by<T, K: PartialOrd>(v: impl Iterator<Item = T>, key: impl Fn(&T) -> K) -> T {
    let mut v: Vec<T> = v.collect();
    v.sort_by(|a, b| {
        key(a)
            .partial_cmp(&key(b))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mid = v.len() / 2;
    v.swap_remove(mid)
}

/// One file sent while chat goes on beside it, on the same link.
fn files_stage(plan: &Plan, r: &mut Report) {
    let size: usize = if plan.quick { 256 << 20 } else { 1 << 30 };
    progress(&format!(
        "files: {} MiB from p0 to p1, chat on the same link",
        size >> 20
    ));
    let dir = std::env::temp_dir().join(format!("p2pchat-bench-files-{}", std::process::id()));
    type Figures = (
        f64,
        Vec<Round>,
        f64,
        f64,
        f64,
        Vec<Duration>,
        Vec<Duration>,
        [(f64, u64, u64); 2],
        f64,
    );
    let res = (|| -> Result<Figures, String> {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a")).map_err(|e| e.to_string())?;
        let src = dir.join("big.bin");
        write_file(&src, size).map_err(|e| format!("writing the file: {e}"))?;
        let raw = tcp_copy(size).map_err(|e| e.to_string())?;
        let blake = blake2b_rate(size);
        let blake3 = blake3_rate(size);
        let da = dir.join("a");
        let db = dir.join("b");
        let dir_of = |d: &Path| vec!["--download-dir".to_owned(), d.display().to_string()];
        let mut a = Peer::start("p0", None, &dir_of(&da))?;
        let mut b = Peer::start("p1", Some(a.port), &dir_of(&db))?;
        b.wait(
            &|l| l.starts_with("* joined through "),
            Instant::now() + DEADLINE,
        )?;
        a.expect("* p1 joined", Instant::now() + DEADLINE)?;
        let n = if plan.quick { 100 } else { 1000 };
        let mut none = None;
        let mut rest = Vec::new();
        for k in 0..n {
            rest.push(chat_once(
                &mut a,
                &mut b,
                &format!("r{k}"),
                "\u{0}",
                &mut none,
            )?);
        }
        let t0 = Instant::now();
        a.send(&format!(":send {}", src.display()))?;
        let (t1, _) = a.wait(&|l| l.starts_with("* you offer big.bin"), t0 + 6 * DEADLINE)?;
        let hash = size as f64 / (t1 - t0).as_secs_f64();
        let (_, offer) = b.wait(&|l| l.starts_with("* p0 offers big.bin"), t0 + 6 * DEADLINE)?;
        let id = offer.rsplit(":get ").next().unwrap_or("").trim().to_owned();
        let ticks = Ticks::now();
        let mut during = Vec::new();
        let mut rounds = Vec::new();
        let mut k = 0;
        for _ in 0..FILE_ROUNDS {
            // The raw copy just before each transfer: both see the same
            // moment of the machine.
            let copy = file_copy(&src, &dir.join("copy.bin")).map_err(|e| e.to_string())?;
            let (tg, round_ticks) = (Instant::now(), Ticks::now());
            b.send(&format!(":get {id}"))?;
            let mut saved = None;
            while saved.is_none() {
                if tg.elapsed() > 30 * DEADLINE {
                    return Err("the file took over 5 minutes".into());
                }
                let next = Instant::now() + CHAT_EVERY;
                let d = chat_once(&mut a, &mut b, &format!("d{k}"), " saved as ", &mut saved)?;
                if saved.is_none() {
                    during.push(d);
                    // Lines come back with their times: sleeping skews none.
                    thread::sleep(next.saturating_duration_since(Instant::now()));
                }
                k += 1;
            }
            let rate = size as f64 / (saved.expect("saved") - tg).as_secs_f64();
            let round_steal = Ticks::now().steal_since(&round_ticks);
            let got = std::fs::metadata(db.join("big.bin")).map_or(0, |m| m.len());
            if got != size as u64 {
                return Err(format!("saved {got} bytes of {size}"));
            }
            // Fetched again next round under the same name.
            std::fs::remove_file(db.join("big.bin")).map_err(|e| e.to_string())?;
            rounds.push((copy, rate, round_steal));
        }
        let steal = Ticks::now().steal_since(&ticks);
        drop((a, b));
        let _ = std::fs::remove_dir_all(&db);
        // The same file again, alone, without and with a network secret.
        let alone = [
            fetch_alone(&src, &dir, false)?,
            fetch_alone(&src, &dir, true)?,
        ];
        Ok((raw, rounds, blake, blake3, hash, rest, during, alone, steal))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    match res {
        Ok((raw, rounds, blake, blake3, hash, rest, during, alone, steal)) => {
            let copy = median_by(rounds.iter().map(|r| r.0), |c| c.0);
            let rate = median_by(rounds.iter().map(|r| r.1), |&r| r);
            let ratio = median_by(rounds.iter().map(|r| r.1 / r.0.0), |&r| r);
            r.info(
                "limit.tcpcopy",
                "one-way loopback TCP copy, 256 KiB writes",
                mib_s(raw),
            );
            r.info(
                "limit.blake3",
                "BLAKE3 in memory, one thread (receiver's floor)",
                mib_s(blake3),
            );
            r.info(
                "limit.blake2b",
                "BLAKE2b-256 in memory, one thread (older offers)",
                mib_s(blake),
            );
            r.info("files.hash", ":send until offered (hashing)", mib_s(hash));
            r.info(
                "files.rate",
                ":get until saved (sent, written, hashed, renamed)",
                mib_s(rate),
            );
            r.info(
                "limit.filecopy",
                "file → loopback TCP → file, raw (as nc < F, nc > F)",
                mib_s(copy.0),
            );
            r.note(format!(
                "files: the raw file copy took {:.2} CPU s/GiB (sender {:.2}, receiver {:.2})",
                s_per_gib(copy.1 + copy.2, size),
                s_per_gib(copy.1, size),
                s_per_gib(copy.2, size)
            ));
            r.note(format!(
                "files: {FILE_ROUNDS} rounds, each a raw file copy and then a transfer: {} \
                 (steal: what the hypervisor took of the machine's time during the transfer)",
                rounds
                    .iter()
                    .map(|(c, t, st)| format!(
                        "{:.0} % ({} / {}, steal {st:.0} %)",
                        t * 100.0 / c.0,
                        mib_s(*t),
                        mib_s(c.0)
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            r.check(
                "files.ratio",
                "transfer rate / raw file copy, median of the rounds",
                format!("{:.0} %", ratio * 100.0),
                "≥ 50 %",
                mib_s(copy.0),
                ratio >= 0.5,
            );
            r.row(
                "files.memratio",
                "transfer rate / memory-to-memory TCP copy",
                format!("{:.0} %", rate * 100.0 / raw),
                "-",
                mib_s(raw),
                Status::Info,
            );
            let cpu = |(_, a, b): (f64, u64, u64)| {
                format!(
                    "{:.2} s/GiB (sender {:.2}, receiver {:.2})",
                    s_per_gib(a + b, size),
                    s_per_gib(a, size),
                    s_per_gib(b, size)
                )
            };
            let [plain, secret] = alone;
            r.info(
                "files.alone.rate",
                ":get with no chat beside it",
                mib_s(plain.0),
            );
            r.info(
                "files.alone.cpu",
                "CPU time of that :get, both peers",
                cpu(plain),
            );
            r.row(
                "files.secret.rate",
                ":get with no chat beside it, network secret",
                mib_s(secret.0),
                "-",
                format!("without {}", mib_s(plain.0)),
                Status::Info,
            );
            r.info(
                "files.secret.cpu",
                "CPU time of that :get, both peers",
                cpu(secret),
            );
            let rest99 = pct(&rest, 0.99);
            r.info(
                "files.rest.p99",
                "chat p99 at rest (before the transfer)",
                us(rest99),
            );
            if during.is_empty() {
                r.note("files: no chat line went while the file did".into());
                r.fail("files.chat.p99", "chat p99 during the transfer", "≤ 5 ms");
                return;
            }
            r.row(
                "files.chat.p50",
                &format!("chat p50 during the transfer ({} lines)", during.len()),
                us(pct(&during, 0.5)),
                "-",
                format!("at rest {}", us(pct(&rest, 0.5))),
                Status::Info,
            );
            r.note(format!(
                "files: chat p90 during the transfer {}; the hypervisor took {steal:.0}% of the \
                 machine's time meanwhile (steal: peers ready to run, not running)",
                us(pct(&during, 0.9))
            ));
            let p99 = pct(&during, 0.99);
            r.check(
                "files.chat.p99",
                "chat p99 during the transfer",
                us(p99),
                "≤ 5 ms",
                format!("at rest {}", us(rest99)),
                p99 <= Duration::from_millis(5),
            );
        }
        Err(e) => r.failed(
            "files",
            &e,
            &[
                ("files.rate", "transfer rate", "-"),
                ("files.ratio", "transfer rate / raw file copy", "≥ 50 %"),
                ("files.chat.p99", "chat p99 during the transfer", "≤ 5 ms"),
            ],
        ),
    }
}
