//! Quick chains on 127.0.0.1: each peer joins through the one started just
//! before it as soon as that one has printed its port, while it may still
//! be joining itself. A peer that has printed its port lets joiners in.

mod util;

use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use util::{DEADLINE, Peer};

/// How a joiner fared.
enum Outcome {
    Joined(Duration),
    /// Exited before joining, with its stderr.
    Failed(Vec<String>),
}

/// Waits (DEADLINE) until `p` has printed its joined line or exited.
fn outcome(p: &mut Peer, since: Instant) -> Outcome {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if p.out_lines()
            .iter()
            .any(|l| l.starts_with("* joined through "))
        {
            return Outcome::Joined(since.elapsed());
        }
        if !p.is_running() {
            p.wait_exit(DEADLINE);
            if p.out_lines()
                .iter()
                .any(|l| l.starts_with("* joined through "))
            {
                return Outcome::Joined(since.elapsed());
            }
            return Outcome::Failed(p.err_lines());
        }
        if Instant::now() >= deadline {
            p.fail("neither joined nor exited");
        }
        // Polling its output, with the deadline above.
        thread::sleep(Duration::from_millis(5));
    }
}

/// 30 chains a ← b ← c ← d, each peer started the moment the one before
/// it printed its port: none is refused, and each chain is one network.
#[test]
fn thirty_quick_chains_see_no_refusal() {
    const CHAINS: usize = 30;
    let mut refused: Vec<String> = Vec::new();
    let mut slowest = Duration::ZERO;
    for c in 0..CHAINS {
        let t = Instant::now();
        let mut chain: Vec<Peer> = Vec::new();
        for n in ["a", "b", "c", "d"] {
            let via = chain.last().map(Peer::port);
            // Waits for the listening line only.
            chain.push(Peer::launch(&format!("{n}{c}"), &[], via, Stdio::piped()));
        }
        let mut whole = true;
        for p in chain.iter_mut().skip(1) {
            match outcome(p, t) {
                Outcome::Joined(d) => slowest = slowest.max(d),
                Outcome::Failed(err) => {
                    whole = false;
                    refused.push(format!("chain {c}: {} failed: {err:?}", p.name));
                }
            }
        }
        if whole {
            for n in ["b", "c", "d"] {
                chain[0].expect_line(&format!("* {n}{c} joined"));
            }
        }
    }
    eprintln!(
        "chains: {CHAINS} chains of 4; {} joiners failed; the slowest joined {} ms after its \
         chain started",
        refused.len(),
        slowest.as_millis()
    );
    for r in &refused {
        eprintln!("chains: {r}");
    }
    assert!(refused.is_empty(), "{} joiners failed", refused.len());
}
