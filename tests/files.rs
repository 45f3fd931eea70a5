//! File transfer between real peers on 127.0.0.1: offers, fetching,
//! verification, safe names, limits, resuming, and chat during a transfer.

mod util;

use std::fs;
use std::process::Stdio;
use std::time::Duration;
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

/// Waits for `cond`, up to the deadline.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + util::DEADLINE;
    while !cond() {
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
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

/// As [`two`], with JSON output.
fn two_json() -> (Peer, Peer, TempDir, TempDir) {
    let (da, db) = (TempDir::new("dl-alice"), TempDir::new("dl-bob"));
    let mut alice = peer("alice", &da, None, &["--json"]);
    let mut bob = peer("bob", &db, Some(alice.port()), &["--json"]);
    bob.expect_contains(r#""type":"joined""#);
    alice.expect_contains(r#""type":"join""#);
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

/// Mallory, a raw member of alice's network, offers files with hostile
/// names; alice fetches from her.
mod hostile {
    use super::*;
    use p2pchat::app::files::{self, Algo, Msg as FileMsg, Offer};
    use util::frames::{self, who};
    use util::raw::Raw;

    /// An offer (event type 31, its hash BLAKE3).
    fn offer(num: u32, name: &str, size: u64, hash: [u8; 32]) -> p2pchat::proto::wire::Body {
        offer_as(Algo::Blake3, num, name, size, hash)
    }

    fn offer_as(
        algo: Algo,
        num: u32,
        name: &str,
        size: u64,
        hash: [u8; 32],
    ) -> p2pchat::proto::wire::Body {
        Offer {
            num,
            room: "lobby".into(),
            to: None,
            size,
            hash,
            algo,
            name: name.into(),
        }
        .body()
    }

    fn blake(data: &[u8]) -> [u8; 32] {
        *blake3::hash(data).as_bytes()
    }

    fn blake2b(data: &[u8]) -> [u8; 32] {
        use blake2::{Blake2b, Digest, digest::consts::U32};
        Blake2b::<U32>::digest(data).into()
    }

    /// Sends `data` as offer `num`, in DATA frames.
    fn serve(r: &mut Raw, num: u32, data: &[u8]) {
        for (i, c) in data.chunks(files::CHUNK).enumerate() {
            let d = FileMsg::Data {
                num,
                offset: (i * files::CHUNK) as u64,
                data: c,
            };
            r.bytes(&d.frame());
        }
    }

    /// Offers of versions before BLAKE3 (event type 30, a BLAKE2b-256
    /// hash) are still fetched, and checked with their own hash.
    #[test]
    fn an_older_offer_hashed_with_blake2b_is_fetched_and_checked() {
        let dl = TempDir::new("dl");
        let mut alice = peer("alice", &dl, None, &[]);
        let (mut r, m) = mallory(&mut alice);
        let data = pattern(150_000, 4);
        for (seq, num, name, hash) in [
            (2, 1, "old.bin", blake2b(&data)),
            (3, 2, "wrong.bin", blake(&data)),
        ] {
            let size = data.len() as u64;
            r.send(&frames::signed(
                &m,
                seq,
                offer_as(Algo::Blake2b, num, name, size, hash),
            ));
            let id = offer_id(&alice.expect_contains(&format!("* mallory offers {name}")));
            alice.send(&format!(":get {id}"));
            r.recv_kind(files::GET, util::DEADLINE).expect("a GET");
            serve(&mut r, num, &data);
            if num == 1 {
                alice.expect_contains(&format!("* get {id}: old.bin from mallory saved as "));
                assert!(fs::read(dl.path().join("old.bin")).unwrap() == data);
            } else {
                // A BLAKE3 hash in an older offer is a wrong hash.
                alice.expect_err_contains(&format!(
                    "p2pchat: get {id}: wrong.bin from mallory: hash mismatch"
                ));
            }
        }
    }

    /// Mallory joined to alice; alice has seen her.
    fn mallory(alice: &mut Peer) -> (Raw, p2pchat::proto::crypto::Identity) {
        let m = who(0x3a11);
        let mut r = Raw::connect(alice.port());
        r.hello(&m, "mallory", true);
        r.send(&frames::join(&m, "mallory", 1));
        alice.expect_line("* mallory joined");
        (r, m)
    }

    #[test]
    fn hostile_names_are_made_safe() {
        let dl = TempDir::new("dl");
        let mut alice = peer("alice", &dl, None, &[]);
        let (mut r, m) = mallory(&mut alice);
        let long = format!("{}.pdf", "x".repeat(4000));
        let names = [
            ("../../etc/passwd", "passwd"),
            (".bashrc", "bashrc"),
            ("evil\u{1b}[2Jname.txt", "evil[2Jname.txt"),
            ("invoice\u{202e}fdp.exe", "invoicefdp.exe"),
            ("..", "file"),
            ("/", "file"),
            ("C:\\Windows\\win.ini", "win.ini"),
        ];
        for (i, (name, _)) in names.iter().enumerate() {
            r.send(&frames::signed(
                &m,
                2 + i as u64,
                offer(i as u32 + 1, name, 10, [0; 32]),
            ));
        }
        for (_, safe) in names {
            alice.expect_contains(&format!("* mallory offers {safe} (10 B): :get "));
        }
        r.send(&frames::signed(
            &m,
            2 + names.len() as u64,
            offer(99, &long, 10, [0; 32]),
        ));
        let line = alice.expect_contains("* mallory offers xxx");
        assert!(line.len() < 300, "a long name is cut: {line}");
        assert!(
            line.contains(".pdf (10 B)"),
            "its extension is kept: {line}"
        );
        // Nothing like them appeared anywhere.
        assert_eq!(fs::read_dir(dl.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_wrong_hash_or_a_size_lie_is_reported_and_discarded() {
        let dl = TempDir::new("dl");
        let mut alice = peer("alice", &dl, None, &[]);
        let (mut r, m) = mallory(&mut alice);
        let real = pattern(200_000, 2);
        let lie = pattern(200_000, 3);
        r.send(&frames::signed(
            &m,
            2,
            offer(1, "a.bin", real.len() as u64, blake(&real)),
        ));
        let id = offer_id(&alice.expect_contains("* mallory offers a.bin"));
        alice.send(&format!(":get {id}"));
        let get = r.recv_kind(files::GET, util::DEADLINE).expect("a GET");
        assert_eq!(
            FileMsg::decode(&get),
            Some(FileMsg::Get { num: 1, offset: 0 })
        );
        serve(&mut r, 1, &lie);
        alice.expect_err_contains(&format!(
            "p2pchat: get {id}: a.bin from mallory: hash mismatch"
        ));
        assert_eq!(fs::read_dir(dl.path()).unwrap().count(), 0, "discarded");
        // A size lie: more than offered.
        r.send(&frames::signed(
            &m,
            3,
            offer(2, "b.bin", 1000, blake(&real[..1000])),
        ));
        let id = offer_id(&alice.expect_contains("* mallory offers b.bin"));
        alice.send(&format!(":get {id}"));
        r.recv_kind(files::GET, util::DEADLINE).expect("a GET");
        let d = FileMsg::Data {
            num: 2,
            offset: 0,
            data: &real[..5000],
        };
        r.bytes(&d.frame());
        alice.expect_err_contains("sent more than the 1.0 kB offered for b.bin: discarded");
        wait_for("the part discarded", || {
            fs::read_dir(dl.path()).unwrap().count() == 0
        });
        // Chat goes on, with mallory too.
        r.send(&frames::chat(&m, 4, "still here"));
        alice.expect_line("mallory: still here");
    }

    #[test]
    fn a_file_larger_than_the_free_space_is_not_started() {
        let dl = TempDir::new("dl");
        let mut alice = peer("alice", &dl, None, &["--max-file", "8192T"]);
        let (mut r, m) = mallory(&mut alice);
        r.send(&frames::signed(
            &m,
            2,
            offer(1, "huge.img", 1 << 52, [0; 32]),
        ));
        let id = offer_id(&alice.expect_contains("* mallory offers huge.img (4.5 PB): :get "));
        alice.send(&format!(":get {id}"));
        let line = alice.expect_err_contains(&format!(
            "p2pchat: get {id}: not enough free space in {}: 4.5 PB needed, ",
            dl.str()
        ));
        assert!(line.ends_with(" free"), "{line}");
        assert_eq!(
            fs::read_dir(dl.path()).unwrap().count(),
            0,
            "nothing created"
        );
        assert_eq!(r.recv_kind(files::GET, Duration::from_millis(300)), None);
        alice.send(":files");
        alice.expect_line("* 1 file offer:");
        alice.expect_line(&format!("  {id} huge.img (4.5 PB) from mallory: offered"));
    }
}

#[test]
fn what_cannot_be_offered_is_one_clear_line_and_chat_goes_on() {
    let (mut alice, mut bob, _da, _db) = two(&["--max-file", "1M"]);
    let src = TempDir::new("src");
    let big = src.path().join("big.iso");
    fs::write(&big, pattern(2 << 20, 4)).unwrap();
    alice.send(&format!(":send {}", big.display()));
    alice.expect_err_line(&format!(
        "p2pchat: cannot offer {}: it is 2.1 MB, over the file size limit of 1.0 MB (see --max-file)",
        big.display()
    ));
    let missing = src.path().join("missing.txt");
    alice.send(&format!(":send {}", missing.display()));
    alice.expect_err_line(&format!(
        "p2pchat: cannot offer {}: no such file",
        missing.display()
    ));
    alice.send(&format!(":send {}", src.str()));
    alice.expect_err_line(&format!(
        "p2pchat: cannot offer {}: not a regular file",
        src.str()
    ));
    // A FIFO with no writer: refused, not waited on.
    let fifo = src.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    alice.send(&format!(":send {}", fifo.display()));
    alice.expect_err_line(&format!(
        "p2pchat: cannot offer {}: not a regular file",
        fifo.display()
    ));
    if unsafe { libc::geteuid() } != 0 {
        // (root reads anything: checked only for other users)
        let secret = src.path().join("secret");
        fs::write(&secret, b"x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
        alice.send(&format!(":send {}", secret.display()));
        alice.expect_err_line(&format!(
            "p2pchat: cannot offer {}: permission denied",
            secret.display()
        ));
    }
    util::chat_both_ways(&mut alice, &mut bob, "after the refusals");
}

#[test]
fn offers_over_the_receivers_limit_are_not_fetched() {
    let (da, db) = (TempDir::new("dl-alice"), TempDir::new("dl-bob"));
    let mut alice = peer("alice", &da, None, &[]);
    let mut bob = peer("bob", &db, Some(alice.port()), &["--max-file", "100k"]);
    bob.expect_joined(alice.port(), 2);
    let src = TempDir::new("src");
    let f = src.path().join("photo.jpg");
    fs::write(&f, pattern(200_000, 5)).unwrap();
    alice.send(&format!(":send {}", f.display()));
    let id = offer_id(&bob.expect_contains("* alice offers photo.jpg (200.0 kB): :get "));
    bob.expect_err_contains("photo.jpg from alice is larger than the file size limit (102.4 kB)");
    bob.send(&format!(":get {id}"));
    bob.expect_err_line(
        "p2pchat: photo.jpg is 200.0 kB, over the file size limit of 102.4 kB (see --max-file)",
    );
    assert_eq!(fs::read_dir(db.path()).unwrap().count(), 0);
}

#[test]
fn a_file_removed_or_changed_after_the_offer_is_told() {
    let (mut alice, mut bob, _da, db) = two(&[]);
    let src = TempDir::new("src");
    let f = src.path().join("draft.txt");
    fs::write(&f, b"first version").unwrap();
    alice.send(&format!(":send {}", f.display()));
    let id = offer_id(&bob.expect_contains("* alice offers draft.txt"));
    fs::remove_file(&f).unwrap();
    bob.send(&format!(":get {id}"));
    bob.expect_err_line(&format!(
        "p2pchat: get {id}: alice cannot send draft.txt: the file was removed since it was offered"
    ));
    alice.expect_err_contains("cannot send draft.txt to bob: the file was removed");
    fs::write(&f, b"second version, longer").unwrap();
    bob.send(&format!(":get {id}"));
    bob.expect_err_contains("the file changed since it was offered: offer it again");
    assert!(!db.path().join("draft.txt").exists());
    util::chat_both_ways(&mut alice, &mut bob, "after the failures");
}

#[test]
fn a_full_disk_is_one_clear_line() {
    // A file-size limit stands in for a full disk: writes past it fail
    // (EFBIG) as they would with ENOSPC, without needing a small file
    // system. ulimit -f counts 512-byte blocks in sh: 1 MB.
    let (da, db) = (TempDir::new("dl-alice"), TempDir::new("dl-bob"));
    let mut alice = peer("alice", &da, None, &[]);
    let args = [
        "--plain",
        "-b",
        "127.0.0.1",
        "--download-dir",
        db.str(),
        "bob",
        "127.0.0.1",
    ];
    let port = alice.port().to_string();
    let mut args: Vec<&str> = args.to_vec();
    args.push(&port);
    let mut bob = Peer::spawn_with(
        "bob",
        &["sh", "-c", "ulimit -f 2048 && exec \"$0\" \"$@\""],
        &args,
        Stdio::piped(),
    );
    bob.wait_listening();
    bob.expect_joined(alice.port(), 2);
    let src = TempDir::new("src");
    let f = src.path().join("video.mp4");
    fs::write(&f, pattern(3 << 20, 6)).unwrap();
    alice.send(&format!(":send {}", f.display()));
    let id = offer_id(&bob.expect_contains("* alice offers video.mp4"));
    bob.send(&format!(":get {id}"));
    bob.expect_err_line(&format!(
        "p2pchat: get {id}: video.mp4: cannot save: file too large (a file size limit)"
    ));
    util::chat_both_ways(&mut alice, &mut bob, "after a full disk");
    assert!(bob.is_running());
}

/// Waits until the part of `name` in `dir` holds at least `n` bytes.
fn part_reaches(dir: &TempDir, name: &str, n: u64) -> u64 {
    let part = dir.path().join(format!("{name}.part"));
    let mut len = 0;
    wait_for("the part to grow", || {
        len = fs::metadata(&part).map_or(0, |m| m.len());
        len >= n
    });
    len
}

/// The size in a line `* get N: resuming NAME at SIZE of SIZE`.
fn resumed_at(line: &str) -> String {
    let at = line.split(" at ").nth(1).unwrap();
    at.split(" of ").next().unwrap().to_owned()
}

#[test]
fn a_receiver_killed_halfway_resumes_from_its_part() {
    let (mut alice, mut bob, _da, db) = two(&[]);
    let src = TempDir::new("src");
    let data = pattern(64 << 20, 7);
    let f = src.path().join("big.bin");
    fs::write(&f, &data).unwrap();
    alice.send(&format!(":send {}", f.display()));
    let id = offer_id(&bob.expect_contains("* alice offers big.bin (67.1 MB): :get "));
    bob.send(&format!(":get {id}"));
    let had = part_reaches(&db, "big.bin", 32 << 20);
    let home = bob.keep_home();
    bob.signal(libc::SIGKILL);
    bob.wait_exit(util::DEADLINE);
    let had = had.max(fs::metadata(db.path().join("big.bin.part")).unwrap().len());
    assert!(had < data.len() as u64, "killed before the end");
    alice.expect_line("* bob left (connection lost)");
    // Bob again, the same user in a new run: the offer is made again.
    let opts = ["--download-dir", db.str()];
    let mut bob = Peer::launch_env(
        "bob",
        &opts,
        Some(alice.port()),
        Stdio::piped(),
        &home.env(),
    );
    bob.expect_joined(alice.port(), 2);
    alice.send(&format!(":send {}", f.display()));
    let id = offer_id(&bob.expect_contains("* alice offers big.bin (67.1 MB): :get "));
    bob.send(&format!(":get {id}"));
    let line = bob.expect_contains(&format!("* get {id}: resuming big.bin at "));
    eprintln!("{line} (the part had {had} bytes when bob was killed)");
    assert_ne!(resumed_at(&line), "0 B");
    bob.expect_contains(&format!("* get {id}: big.bin from alice saved as "));
    assert!(fs::read(db.path().join("big.bin")).unwrap() == data);
}

#[test]
fn a_sender_killed_halfway_is_told_and_its_new_offer_resumes() {
    let (da, db) = (TempDir::new("dl-alice"), TempDir::new("dl-bob"));
    let mut alice = peer("alice", &da, None, &[]);
    let mut bob = peer("bob", &db, Some(alice.port()), &[]);
    bob.expect_joined(alice.port(), 2);
    let src = TempDir::new("src");
    let data = pattern(64 << 20, 8);
    let f = src.path().join("big.bin");
    fs::write(&f, &data).unwrap();
    alice.send(&format!(":send {}", f.display()));
    let id = offer_id(&bob.expect_contains("* alice offers big.bin"));
    bob.send(&format!(":get {id}"));
    part_reaches(&db, "big.bin", 32 << 20);
    let home = alice.keep_home();
    alice.signal(libc::SIGKILL);
    alice.wait_exit(util::DEADLINE);
    bob.expect_err_contains(&format!("p2pchat: get {id}: big.bin interrupted at "));
    bob.expect_line("* alice left (connection lost)");
    // Alice again, the same user, joining bob.
    let opts = ["--download-dir", da.str()];
    let mut alice = Peer::launch_env(
        "alice",
        &opts,
        Some(bob.port()),
        Stdio::piped(),
        &home.env(),
    );
    alice.expect_joined(bob.port(), 2);
    alice.send(&format!(":send {}", f.display()));
    let id = offer_id(&bob.expect_contains("* alice offers big.bin"));
    bob.send(&format!(":get {id}"));
    let line = bob.expect_contains(&format!("* get {id}: resuming big.bin at "));
    assert_ne!(resumed_at(&line), "0 B");
    bob.expect_contains(&format!("* get {id}: big.bin from alice saved as "));
    assert!(fs::read(db.path().join("big.bin")).unwrap() == data);
}

#[test]
fn chat_goes_on_during_a_large_transfer() {
    let (mut alice, mut bob, _da, db) = two(&[]);
    let src = TempDir::new("src");
    let data = pattern(200 << 20, 9);
    let f = src.path().join("large.bin");
    fs::write(&f, &data).unwrap();
    alice.send(&format!(":send {}", f.display()));
    let id = offer_id(&bob.expect_contains("* alice offers large.bin"));
    bob.send(&format!(":get {id}"));
    part_reaches(&db, "large.bin", 1 << 20);
    // Lines both ways on the link that carries the data.
    let mut sent = Vec::new();
    for i in 0..5 {
        let line = format!("during the transfer {i}");
        sent.push((format!("alice: {line}"), std::time::Instant::now()));
        alice.send(&line);
        bob.expect_line(&format!("alice: {line}"));
        bob.send(&format!("reply {i}"));
        alice.expect_line(&format!("bob: reply {i}"));
    }
    let done = bob.expect_contains(&format!("* get {id}: large.bin from alice saved as "));
    let saved_at = bob.seen_at(&done).unwrap();
    let mut lat = Vec::new();
    let mut before = 0;
    for (line, at) in &sent {
        let seen = bob.seen_at(line).unwrap();
        lat.push(seen.duration_since(*at).as_secs_f64() * 1000.0);
        before += usize::from(seen < saved_at);
    }
    eprintln!(
        "chat latency during the transfer (ms, from stdin to stdout): {lat:.1?}; {before} of 5 lines arrived before the file"
    );
    assert!(before >= 1, "no line got through while the file was sent");
    assert!(
        lat.iter().all(|&l| l < 1000.0),
        "a chat line waited a second behind the file: {lat:?}"
    );
    assert!(fs::read(db.path().join("large.bin")).unwrap() == data);
}

#[test]
fn a_file_goes_across_an_encrypted_network() {
    let secret = [("P2PCHAT_SECRET", "files under a secret")];
    let (da, db) = (TempDir::new("dl-alice"), TempDir::new("dl-bob"));
    let opts_a = ["--download-dir", da.str()];
    let opts_b = ["--download-dir", db.str()];
    let mut alice = Peer::launch_env("alice", &opts_a, None, Stdio::piped(), &secret);
    let mut bob = Peer::launch_env("bob", &opts_b, Some(alice.port()), Stdio::piped(), &secret);
    bob.expect_joined(alice.port(), 2);
    let src = TempDir::new("src");
    let data = pattern(5 << 20, 10);
    let f = src.path().join("secret.tar");
    fs::write(&f, &data).unwrap();
    alice.send(&format!(":send {}", f.display()));
    let id = offer_id(&bob.expect_contains("* alice offers secret.tar (5.2 MB): :get "));
    bob.send(&format!(":get {id}"));
    bob.expect_contains(&format!("* get {id}: secret.tar from alice saved as "));
    assert!(fs::read(db.path().join("secret.tar")).unwrap() == data);
    util::chat_both_ways(&mut alice, &mut bob, "after an encrypted transfer");
}

#[test]
fn an_offer_to_one_member_and_a_link_opened_for_the_transfer() {
    // A chain: alice - bob - carol, one link each (degree 1).
    let (da, db, dc) = (
        TempDir::new("dl-alice"),
        TempDir::new("dl-bob"),
        TempDir::new("dl-carol"),
    );
    let chain = ["-d", "1", "-D", "2"];
    let mut alice = peer("alice", &da, None, &chain);
    let mut bob = peer("bob", &db, Some(alice.port()), &chain);
    bob.expect_joined(alice.port(), 2);
    let mut carol = peer("carol", &dc, Some(bob.port()), &chain);
    carol.expect_joined(bob.port(), 3);
    alice.expect_line("* carol joined");
    carol.send(":who");
    let who = carol.expect_block("* 3 members:", 3);
    assert!(
        who.iter()
            .any(|l| l.contains("alice") && l.ends_with("relayed")),
        "{who:?}"
    );
    let src = TempDir::new("src");
    let data = pattern(1 << 20, 11);
    let f = src.path().join("for carol.txt");
    fs::write(&f, &data).unwrap();
    alice.send(&format!(":send carol {}", f.display()));
    alice.expect_line("* you offer for carol.txt (1.0 MB) to carol: offer 1");
    let id = offer_id(&carol.expect_contains("* alice offers you for carol.txt (1.0 MB): :get "));
    carol.send(&format!(":get {id}"));
    carol.expect_contains(&format!("* get {id}: for carol.txt from alice saved as "));
    assert!(fs::read(dc.path().join("for carol.txt")).unwrap() == data);
    carol.send(":who");
    let who = carol.expect_block("* 3 members:", 3);
    assert!(
        who.iter()
            .any(|l| l.contains("alice") && l.ends_with("direct")),
        "a direct link to the sender: {who:?}"
    );
    // Bob relayed the offer but was not shown it.
    bob.send(":files");
    bob.expect_line("* no file offers");
    bob.assert_no_out("an offer for carol", &|l| l.contains("for carol.txt"));
}

#[test]
fn json_shows_offers_and_results() {
    let (mut alice, mut bob, _da, db) = two_json();
    let src = TempDir::new("src");
    let f = src.path().join("a \"quoted\" name.bin");
    fs::write(&f, pattern(100_000, 12)).unwrap();
    alice.send(&format!(
        r#"{{"command":"send {}"}}"#,
        f.display().to_string().replace('"', "\\\"")
    ));
    // (each object has "type", then "time", then its fields)
    let offer = alice.expect_contains(
        r#","id":1,"from":"alice","name":"a \"quoted\" name.bin","size":100000,"own":true,"to":null,"room":"lobby"}"#,
    );
    assert!(offer.starts_with(r#"{"type":"offer","#), "{offer}");
    let msgid = |l: &str| {
        let (_, rest) = l
            .split_once(r#","msgid":""#)
            .unwrap_or_else(|| panic!("{l}"));
        rest.split('"').next().unwrap().to_owned()
    };
    let ours = msgid(&offer);
    let offer = bob.expect_contains(
        r#","id":1,"from":"alice","name":"a \"quoted\" name.bin","size":100000,"own":false,"to":null,"room":"lobby"}"#,
    );
    assert!(offer.starts_with(r#"{"type":"offer","#), "{offer}");
    // The offer's id is the same on both peers (item 13).
    assert_eq!(msgid(&offer), ours);
    bob.send(r#"{"command":"get 1"}"#);
    let got = bob.expect_contains(r#"{"type":"received","#);
    let path = db.path().join("a \"quoted\" name.bin");
    let path = path.display().to_string().replace('"', "\\\"");
    assert!(
        got.ends_with(&format!(
            r#","id":1,"name":"a \"quoted\" name.bin","from":"alice","path":"{path}","size":100000}}"#
        )),
        "{got}"
    );
    let fetching = alice.expect_contains(r#"{"type":"fetching","#);
    assert!(
        fetching.ends_with(r#","id":1,"name":"a \"quoted\" name.bin","by":"bob","offset":0}"#),
        "{fetching}"
    );
    alice.expect_contains(r#"{"type":"fetched","#);
    bob.send(r#"{"command":"files"}"#);
    let list = bob.expect_contains(r#"{"type":"files","#);
    assert!(
        list.ends_with(r#","files":[{"id":1,"from":"alice","name":"a \"quoted\" name.bin","size":100000,"state":"offered","done":0}]}"#),
        "{list}"
    );
}

#[test]
fn a_broken_link_is_told_and_get_resumes_in_the_same_run() {
    let (mut alice, mut bob, _da, db) = two(&[]);
    let src = TempDir::new("src");
    let data = pattern(64 << 20, 13);
    let f = src.path().join("big.bin");
    fs::write(&f, &data).unwrap();
    alice.send(&format!(":send {}", f.display()));
    let id = offer_id(&bob.expect_contains("* alice offers big.bin"));
    bob.send(&format!(":get {id}"));
    part_reaches(&db, "big.bin", 16 << 20);
    // Hold bob still so the transfer cannot finish before the link breaks
    // (on a quiet machine the rest takes a fraction of a second).
    bob.signal(libc::SIGSTOP);
    let held = fs::metadata(db.path().join("big.bin.part")).map_or(0, |m| m.len());
    assert!(
        held < data.len() as u64,
        "the whole file came before bob was stopped"
    );
    // Break the link from outside both processes: only the sockets of
    // alice's listening port (this test's own), by the kernel (ss -K).
    let port = alice.port();
    let filter = format!("( sport = :{port} or dport = :{port} )");
    let out = std::process::Command::new("ss")
        .args(["-K", "-t", "state", "established", &filter])
        .output();
    let killed = out.as_ref().is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).lines().count() > 1
    });
    bob.signal(libc::SIGCONT);
    if !killed {
        eprintln!(
            "skipped: cannot destroy sockets here (ss -K needs root and INET_DIAG_DESTROY): {out:?}"
        );
        return;
    }
    let line = bob.expect_err_contains(&format!("p2pchat: get {id}: big.bin interrupted at "));
    assert!(line.ends_with(&format!(":get {id} resumes it")), "{line}");
    // The link comes back (the peers dial again); the same offer resumes.
    util::chat_both_ways(&mut alice, &mut bob, "after the break");
    bob.send(&format!(":get {id}"));
    let line = bob.expect_contains(&format!("* get {id}: resuming big.bin at "));
    assert_ne!(resumed_at(&line), "0 B");
    bob.expect_contains(&format!("* get {id}: big.bin from alice saved as "));
    assert!(fs::read(db.path().join("big.bin")).unwrap() == data);
}

#[test]
fn a_later_joiner_is_shown_the_offers_still_open_and_they_end_with_their_sender() {
    let (mut alice, mut bob, _da, _db) = two(&[]);
    let src = TempDir::new("src");
    let data = pattern(200_000, 14);
    for name in ["open.bin", "withdrawn.bin"] {
        fs::write(src.path().join(name), &data).unwrap();
        alice.send(&format!(":send {}", src.path().join(name).display()));
    }
    alice.expect_line("* you offer open.bin (200.0 kB) to everyone: offer 1");
    alice.expect_line("* you offer withdrawn.bin (200.0 kB) to everyone: offer 2");
    bob.expect_contains("* alice offers withdrawn.bin (200.0 kB): :get ");
    alice.send(":cancel 2");
    alice.expect_line("* offer 2 (withdrawn.bin) withdrawn");
    // Carol comes after the offers, through bob.
    let dc = TempDir::new("dl-carol");
    let mut carol = peer("carol", &dc, Some(bob.port()), &[]);
    carol.expect_joined(bob.port(), 3);
    let id = offer_id(&carol.expect_contains("* alice offers open.bin (200.0 kB): :get "));
    carol.send(&format!(":get {id}"));
    carol.expect_contains(&format!("* get {id}: open.bin from alice saved as "));
    assert!(fs::read(dc.path().join("open.bin")).unwrap() == data);
    carol.send(":files");
    let rows = carol.expect_block("* 1 file offer:", 1);
    assert!(
        rows[0].contains("open.bin (200.0 kB) from alice"),
        "{rows:?}"
    );
    // Bob knew it already: shown once. (Alice's line after the offers
    // comes after them.)
    alice.send("after the offers");
    bob.expect_line("alice: after the offers");
    let shown = bob.out_lines();
    let shown: Vec<&String> = shown
        .iter()
        .filter(|l| l.contains("offers open.bin"))
        .collect();
    assert_eq!(shown.len(), 1, "{shown:?}");
    // Offers end with their sender.
    alice.send(":q");
    alice.expect_exit(0);
    carol.expect_line("* alice left");
    carol.send(":files");
    carol.expect_line("* no file offers");
}

#[test]
fn a_fetch_cancelled_deletes_its_part_and_chat_goes_on() {
    let (mut alice, mut bob, _da, db) = two(&[]);
    let src = TempDir::new("src");
    let f = src.path().join("big.bin");
    fs::write(&f, pattern(256 << 20, 15)).unwrap();
    alice.send(&format!(":send {}", f.display()));
    let id = offer_id(&bob.expect_contains("* alice offers big.bin"));
    bob.send(&format!(":get {id}"));
    part_reaches(&db, "big.bin", 1 << 20);
    // Held still while the cancel is typed, so that the file cannot be
    // whole before it is read.
    bob.signal(libc::SIGSTOP);
    let held = fs::metadata(db.path().join("big.bin.part")).map_or(0, |m| m.len());
    assert!(held < 256 << 20, "the whole file came before the cancel");
    bob.send(&format!(":cancel {id}"));
    bob.signal(libc::SIGCONT);
    bob.expect_line(&format!("* get {id}: big.bin cancelled"));
    wait_for("the part deleted", || {
        !db.path().join("big.bin.part").exists()
    });
    assert!(!db.path().join("big.bin").exists());
    util::chat_both_ways(&mut alice, &mut bob, "after the cancel");
    bob.send(":files");
    bob.expect_line("* 1 file offer:");
    bob.expect_line(&format!("  {id} big.bin (268.4 MB) from alice: offered"));
}

/// An offer goes to the sender's room: its members are shown it (marked
/// with the room), a member in the lobby is not.
#[test]
fn an_offer_goes_to_the_senders_room_only() {
    let (mut alice, mut bob, _da, _db) = two(&[]);
    let dc = TempDir::new("dl-carol");
    let mut carol = peer("carol", &dc, Some(alice.port()), &[]);
    carol.expect_joined(alice.port(), 3);
    alice.send(":create dev");
    alice.expect_line("* you are in dev");
    // Bob goes in once he has heard of the room.
    let end = std::time::Instant::now() + util::DEADLINE;
    loop {
        bob.send(":join dev");
        if bob
            .try_expect(&|l| l == "* you are in dev", Duration::from_millis(300))
            .is_some()
        {
            break;
        }
        assert!(std::time::Instant::now() < end, "bob never got into dev");
    }
    alice.expect_line("* bob moved from lobby to dev");
    let src = TempDir::new("src");
    let f = src.path().join("plan.txt");
    fs::write(&f, b"the plan").unwrap();
    alice.send(&format!(":send {}", f.display()));
    alice.expect_line("[dev] * you offer plan.txt (8 B) to everyone: offer 1");
    let line = bob.expect_contains("[dev] * alice offers plan.txt (8 B): :get ");
    let id = offer_id(&line);
    // A shout comes after the offer on every link: by the time carol
    // shows it, she would have shown the offer.
    alice.send(":shout after the offer");
    carol.expect_contains("after the offer");
    carol.assert_no_out("an offer to a room she is not in", &|l| {
        l.contains("offers plan.txt")
    });
    bob.send(&format!(":get {id}"));
    bob.expect_contains(&format!("* get {id}: plan.txt from alice saved as "));
}

/// Progress goes out in JSON as `progress` objects between the `get` and
/// the `received`. The sender is held still (SIGSTOP) until the progress
/// interval (one second) has passed since the fetch started, so that the
/// first chunk to come is told however fast the rest goes.
#[test]
fn json_tells_progress_during_a_fetch() {
    let (mut alice, mut bob, _da, db) = two_json();
    let src = TempDir::new("src");
    let f = src.path().join("big.bin");
    fs::write(&f, pattern(1_000_000, 16)).unwrap();
    alice.send(&format!(r#"{{"command":"send {}"}}"#, f.display()));
    bob.expect_contains(r#","id":1,"from":"alice","name":"big.bin","size":1000000,"own":false"#);
    alice.signal(libc::SIGSTOP);
    bob.send(r#"{"command":"get 1"}"#);
    wait_for("the part opened", || {
        db.path().join("big.bin.part").exists()
    });
    // No line marks the interval's end: it is waited out.
    std::thread::sleep(Duration::from_millis(1_200));
    alice.signal(libc::SIGCONT);
    let p = bob.expect_contains(r#"{"type":"progress","#);
    let tail = p
        .split_once(r#","id":1,"name":"big.bin","done":"#)
        .unwrap_or_else(|| panic!("{p}"))
        .1;
    let (done, rest) = tail.split_once(r#","size":1000000,"rate":"#).unwrap();
    let done: u64 = done.parse().unwrap();
    assert!(done > 0 && done < 1_000_000, "{p}");
    let rate: u64 = rest.trim_end_matches('}').parse().unwrap();
    assert!(rate > 0, "{p}");
    bob.expect_contains(r#"{"type":"received","#);
    assert_eq!(
        fs::read(db.path().join("big.bin")).unwrap(),
        pattern(1_000_000, 16)
    );
}

/// Over a slow path (25 ms each way: a delay line between two network
/// namespaces that the kernel's TCP sees, see `util::delay`), a transfer
/// is not capped by its window: the window covers the path's round trip
/// (the kernel's measure of it) and 1 ms of queue, where it used to be
/// 256 KiB per round trip (5 MiB/s on this path, 64 MiB in 13 s). A chat
/// line on the same link still arrives about one way's delay after it is
/// typed. The line alone carried one TCP copy of 64 MiB, from connect
/// to the last byte, at 42-44 MiB/s (`line_alone_carries_a_tcp_copy`,
/// load average 4.4-5.0 on 2 cores); this transfer ran at 25-53 MiB/s
/// in 1.2-2.6 s (the slower runs held by TCP's own start on the line,
/// with no segment sent again), and in 13.8 s (4.6 MiB/s) before the
/// window covered the round trip.
#[test]
fn a_long_path_is_not_capped_by_the_window() {
    use std::net::SocketAddr;
    use std::time::Instant;
    use util::netns::{self, Net};
    let Some(mut net) = Net::new() else {
        return;
    };
    let one_way = Duration::from_millis(25);
    let (ha, hb) = net.slow_pair(one_way);
    let (da, db) = (TempDir::new("dl-alice"), TempDir::new("dl-bob"));
    let mut alice = net.peer(ha, "alice", &["--download-dir", da.str()], None);
    let via = SocketAddr::new(net.addr(ha), alice.port());
    let mut bob = net.peer(hb, "bob", &["--download-dir", db.str()], Some(via));
    bob.expect_line(&netns::joined(via, 2));
    alice.expect_line("* bob joined");
    let src = TempDir::new("src");
    let size = 64 << 20;
    let data = pattern(size, 5);
    let f = src.path().join("far.bin");
    fs::write(&f, &data).unwrap();
    alice.send(&format!(":send {}", f.display()));
    let id = offer_id(&bob.expect_contains("* alice offers far.bin (67.1 MB): :get "));
    let start = Instant::now();
    bob.send(&format!(":get {id}"));
    // Halfway, a line on the link that carries the file.
    part_reaches(&db, "far.bin", size as u64 / 2);
    let typed = Instant::now();
    alice.send("across the long path");
    let chat = netns::time_to(
        &mut bob,
        "alice: across the long path",
        typed,
        util::DEADLINE,
    );
    let saved = db.path().join("far.bin");
    let done = format!(
        "* get {id}: far.bin from alice saved as {} (67.1 MB, hash verified)",
        saved.display()
    );
    let took = netns::time_to(&mut bob, &done, start, Duration::from_secs(60));
    let rate = size as f64 / took.as_secs_f64() / f64::from(1 << 20);
    let cap = (256 << 10) as f64 / (2 * one_way).as_secs_f64() / f64::from(1 << 20);
    // TCP's own losses on the line (its queues overflowing) slow a run.
    let retrans = net.exec(ha, "nstat", &["-asz", "TcpRetransSegs"]);
    let retrans = retrans
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .nth(1);
    eprintln!(
        "over a 50 ms round trip: 64 MiB in {took:.2?} ({rate:.1} MiB/s; the old window's cap {cap:.1} MiB/s; TCP segments sent again {retrans:?}); a chat line took {chat:.1?}"
    );
    assert!(
        rate >= 3.0 * cap,
        "{rate:.1} MiB/s over the slow path: not 3 times the cap of 256 KiB per round trip ({cap:.1} MiB/s)"
    );
    assert!(
        chat < 2 * one_way + Duration::from_millis(250),
        "a chat line took {chat:?} during the transfer, over a path of {one_way:?} each way"
    );
    assert!(fs::read(&saved).unwrap() == data, "the saved file differs");
}

/// What the delay line of [`a_long_path_is_not_capped_by_the_window`]
/// carries alone: one TCP copy of 64 MiB through it (the figure in that
/// test's documentation). Not run by default: `cargo test --test files
/// line_alone -- --ignored --nocapture`.
#[test]
#[ignore]
fn line_alone_carries_a_tcp_copy() {
    use util::netns::Net;
    let Some(mut net) = Net::new() else {
        return;
    };
    let (ha, hb) = net.slow_pair(Duration::from_millis(25));
    for _ in 0..3 {
        let rate =
            util::delay::copy_rate(net.ns(ha), net.ns(hb), &net.addr(hb).to_string(), 64 << 20);
        eprintln!(
            "one TCP copy over the line: {:.1} MiB/s",
            rate / f64::from(1 << 20)
        );
    }
}
