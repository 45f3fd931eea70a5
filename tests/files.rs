//! File transfer between real peers on 127.0.0.1: offers, fetching,
//! verification, safe names, limits, resuming, and chat during a transfer.

mod util;

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};
use util::{Peer, TempDir};

/// Bytes that are not all alike, so that a chunk out of place shows.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    let mut x = 0x9e37_79b9_u32 ^ u32::from(seed);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A peer downloading into `dl`.
fn peer(name: &str, dl: &TempDir, via: Option<u16>, more: &[&str]) -> Peer {
    let mut opts = vec!["--download-dir", dl.str()];
    opts.extend_from_slice(more);
    Peer::launch(name, &opts, via, Stdio::piped())
}

/// Alice and bob, each with a download directory.
fn two(more: &[&str]) -> (Peer, Peer, TempDir, TempDir) {
    let (da, db) = (TempDir::new("dl-alice"), TempDir::new("dl-bob"));
    let mut alice = peer("alice", &da, None, more);
    let mut bob = peer("bob", &db, Some(alice.port()), more);
    bob.expect_joined(alice.port(), 2);
    alice.expect_line("* bob joined");
    (alice, bob, da, db)
}

/// The offer number in a line `... :get N`.
fn offer_id(line: &str) -> u32 {
    line.rsplit(":get ").next().unwrap().trim().parse().unwrap()
}

#[test]
fn a_file_goes_across_verified_and_the_sender_sees_who_fetched() {
    let (mut alice, mut bob, _da, db) = two(&[]);
    let src = TempDir::new("src");
    let data = pattern(3 << 20, 1);
    let path = src.path().join("notes.pdf");
    fs::write(&path, &data).unwrap();
    alice.send(&format!(":send {}", path.display()));
    alice.expect_line("* you offer notes.pdf (3.1 MB) to everyone: offer 1");
    let line = bob.expect_contains("* alice offers notes.pdf (3.1 MB): :get ");
    let id = offer_id(&line);
    bob.send(&format!(":get {id}"));
    let saved = db.path().join("notes.pdf");
    bob.expect_line(&format!(
        "* get {id}: notes.pdf from alice saved as {} (3.1 MB, hash verified)",
        saved.display()
    ));
    assert_eq!(fs::read(&saved).unwrap(), data);
    assert!(!db.path().join("notes.pdf.part").exists());
    alice.expect_line("* bob is fetching notes.pdf (offer 1)");
    alice.expect_line("* bob fetched notes.pdf (offer 1)");
    // Fetched again: never over the first copy.
    bob.send(&format!(":get {id}"));
    bob.expect_contains("saved as");
    assert_eq!(fs::read(db.path().join("notes (1).pdf")).unwrap(), data);
    assert_eq!(fs::read(&saved).unwrap(), data);
}
