//! Rooms with owners (issue 12), with real peers on 127.0.0.1: the
//! COMP90015 chat peer's walk-through, shouts from two senders across
//! rooms, an owner that leaves and one that crashes, and a late joiner's
//! history. Waits are on output lines with deadlines; a peer that must
//! learn of a room is asked (`:rooms`) until it lists it.

mod util;

use std::time::{Duration, Instant};
use util::{DEADLINE, Peer, Stream, Via, network};

/// Sends `cmd` to `p` until it prints a line `pred` accepts (each try
/// waits 300 ms); fails at the deadline.
fn poll(p: &mut Peer, cmd: &str, what: &str, pred: &dyn Fn(&str) -> bool) -> String {
    let end = Instant::now() + DEADLINE;
    loop {
        p.send(cmd);
        if let Some(l) = p.try_expect(pred, Duration::from_millis(300)) {
            return l;
        }
        if Instant::now() >= end {
            p.fail(&format!("{cmd} never showed {what}"));
        }
    }
}

/// Asks `p` for the rooms until it lists `room` owned by `owner`.
fn knows_room(p: &mut Peer, room: &str, owner: &str) -> String {
    let row = format!("*   {room} {owner} ");
    poll(p, ":rooms", &format!("room {room} of {owner}"), &|l| {
        l.starts_with(&row)
    })
}

/// Waits until `p` knows room `room` of `owner`, and enters it.
fn enter(p: &mut Peer, room: &str, owner: &str) {
    knows_room(p, room, owner);
    p.send(&format!(":join {room}"));
    p.expect_line(&format!("* you are in {room}"));
}

/// Lets go of what `p` printed so far and nobody waited for (the answers
/// to polls): the next block read is the next one printed.
fn drain(p: &mut Peer) {
    std::thread::sleep(Duration::from_millis(300));
    while p.try_expect(&|_| true, Duration::ZERO).is_some() {}
}

/// Waits for a stderr error line containing `part`.
fn refused(p: &mut Peer, part: &str) -> String {
    p.expect_on(
        Stream::Err,
        &format!("an error containing {part:?}"),
        &|l| l.starts_with("p2pchat: ") && l.contains(part),
        DEADLINE,
    )
}

/// The line `* room ROOM now owned by NAME` both `a` and `b` print: the
/// same new owner, one of `names`.
fn new_owner(a: &mut Peer, b: &mut Peer, room: &str, names: &[&str]) -> String {
    let head = format!("* room {room} now owned by ");
    let la = a.expect_on(
        Stream::Out,
        "a new owner",
        &|l| l.starts_with(&head),
        DEADLINE,
    );
    let lb = b.expect_on(
        Stream::Out,
        "a new owner",
        &|l| l.starts_with(&head),
        DEADLINE,
    );
    assert_eq!(la, lb, "{} and {} disagree on the owner", a.name, b.name);
    let owner = la[head.len()..].to_string();
    assert!(names.contains(&owner.as_str()), "{owner} owns {room}");
    owner
}

/// The COMP90015 chat peer's session, on p2pchat: alice makes a room,
/// carol (two hops away) lists it, bob joins it and sees who is there,
/// talks (carol in the lobby does not see it), is refused a kick, is
/// kicked, cannot come back, and the room is deleted.
#[test]
fn walk_through_create_list_join_who_talk_kick_delete() {
    let mut p = network(&["alice", "bob", "carol"], Via::Previous);
    let mut carol = p.pop().unwrap();
    let mut bob = p.pop().unwrap();
    let mut alice = p.pop().unwrap();

    alice.send(":create dev");
    alice.expect_line("* room dev created; you own it");
    alice.expect_line("* you are in dev");
    knows_room(&mut carol, "dev", "alice");
    drain(&mut carol);
    carol.send(":list");
    let rows = carol.expect_block("* 2 rooms:", 2);
    assert_eq!(
        rows,
        ["*   lobby - 2 members (here)", "*   dev alice 1 member"]
    );

    knows_room(&mut bob, "dev", "alice");
    drain(&mut bob);
    bob.send(":join dev");
    bob.expect_line("* you are in dev");
    alice.expect_line("* bob moved from lobby to dev");
    bob.send(":who");
    let rows = bob.expect_block("* 2 members in dev:", 2);
    assert!(
        rows[0].starts_with("*   alice 127.0.0.1:") && rows[0].ends_with(" owner"),
        "{rows:?}"
    );
    assert!(
        rows[1].starts_with("*   bob ") && rows[1].ends_with("(you)"),
        "{rows:?}"
    );
    bob.send(":rooms");
    let rows = bob.expect_block("* 2 rooms:", 2);
    assert_eq!(rows[1], "*   dev alice 2 members (here)");

    bob.send("hello dev");
    alice.expect_line("[dev] bob: hello dev");
    carol.send("hello lobby");
    bob.send(":who lobby");
    bob.expect_block("* 1 member:", 1);

    // Not his room: refused, one line, nothing sent.
    bob.send(":kick alice");
    refused(&mut bob, ":kick: you do not own dev (alice does)");
    carol.send(":delete dev");
    refused(&mut carol, ":delete: you do not own dev (alice does)");
    carol.send(":create Dev");
    refused(&mut carol, ":create: room dev exists (owned by alice)");
    carol.send(":create 9lives");
    refused(&mut carol, "is not a room name");
    carol.send(":join lobby");
    refused(&mut carol, "you are in the lobby already");

    alice.send(":kick bob");
    alice.expect_line("* alice kicked bob from dev");
    bob.expect_line("* alice kicked bob from dev");
    bob.expect_line("* you are in lobby");
    bob.send(":join dev");
    refused(
        &mut bob,
        ":join: alice kicked you from dev; you cannot enter it",
    );

    alice.send(":delete dev");
    alice.expect_line("* room dev deleted by alice");
    alice.expect_line("* you are in lobby");
    poll(&mut carol, ":rooms", "the lobby alone", &|l| {
        l == "* 1 room:"
    });

    // What was said in dev never reached carol; the lobby line reached
    // bob and alice only once they were back (as history).
    bob.expect_line("[lobby history] carol: hello lobby");
    alice.expect_line("[lobby history] carol: hello lobby");
    carol.assert_no_out("a line of dev", &|l| l.contains("hello dev"));
    alice.assert_no_out("a lobby line while in dev", &|l| l == "carol: hello lobby");
}

/// Two senders in two rooms shout and talk in turn, three rooms and the
/// lobby listening: every peer shows each sender's shouts in the order
/// sent, and a sender's room mates show its shouts and its room lines
/// interleaved as they were said.
#[test]
fn shouts_are_in_order_per_sender_across_three_rooms() {
    let names = ["p1", "p2", "p3", "p4", "p5"];
    let mut p = network(&names, Via::Random);
    for (i, r) in [(0, "r1"), (1, "r2"), (2, "r3")] {
        p[i].send(&format!(":create {r}"));
        p[i].expect_line(&format!("* you are in {r}"));
    }
    knows_room(&mut p[3], "r1", "p1");
    p[3].send(":join r1");
    p[3].expect_line("* you are in r1");
    for i in [0, 1, 2, 4] {
        knows_room(&mut p[i], "r1", "p1");
    }
    p[0].expect_line("* p4 moved from lobby to r1");
    for k in 0..3 {
        for s in [0, 1] {
            p[s].send(&format!(":shout s{k} from {}", names[s]));
            p[s].send(&format!("line {k} from {}", names[s]));
        }
    }
    // Everyone (p5 in the lobby, p3 in r3 included) shows the shouts.
    for (i, peer) in p.iter_mut().enumerate() {
        for s in [0, 1].into_iter().filter(|&s| s != i) {
            for k in 0..3 {
                peer.expect_line(&format!("! {}: s{k} from {}", names[s], names[s]));
            }
        }
    }
    // p4, in r1 with p1, shows p1's shouts and lines in the order said,
    // and none of p2's lines (r2).
    p[3].expect_line("[r1] p1: line 2 from p1");
    let lines: Vec<String> = p[3]
        .out_lines()
        .into_iter()
        .filter(|l| l.contains("from p1"))
        .collect();
    let want: Vec<String> = (0..3)
        .flat_map(|k| {
            [
                format!("! p1: s{k} from p1"),
                format!("[r1] p1: line {k} from p1"),
            ]
        })
        .collect();
    assert_eq!(lines, want);
    for i in [2, 3, 4] {
        p[i].assert_no_out("a line of r2", &|l| {
            l.contains("line") && l.contains("from p2")
        });
    }
}

/// Four peers, Via::Random: alice creates dev, bob, carol and dave join
/// it, and alice kicks dave. Returns them in that order.
fn dev_without_dave() -> [Peer; 4] {
    let mut p = network(&["alice", "bob", "carol", "dave"], Via::Random);
    p[0].send(":create dev");
    p[0].expect_line("* you are in dev");
    for i in 1..4 {
        enter(&mut p[i], "dev", "alice");
        let line = format!("* {} moved from lobby to dev", p[i].name);
        p[0].expect_line(&line);
    }
    p[0].send(":kick dave");
    p[3].expect_line("* you are in lobby");
    p[1].expect_line("* alice kicked dave from dev");
    p[2].expect_line("* alice kicked dave from dev");
    p.try_into().unwrap_or_else(|_| panic!("four peers"))
}

/// alice, bob and carol (Via::Previous), alice in dev, which she just
/// created. Returns them in that order.
fn dev_by_alice() -> [Peer; 3] {
    let mut p = network(&["alice", "bob", "carol"], Via::Previous);
    p[0].send(":create dev");
    p[0].expect_line("* you are in dev");
    p.try_into().unwrap_or_else(|_| panic!("three peers"))
}

/// The owner leaves (`:q`): the room goes to one of its members before it
/// exits; both members see the same new owner, keep talking, and the kick
/// list is the new owner's too.
#[test]
fn an_owner_that_leaves_hands_its_room_over() {
    let [mut alice, mut bob, mut carol, mut dave] = dev_without_dave();

    alice.send(":q");
    let owner = new_owner(&mut bob, &mut carol, "dev", &["bob", "carol"]);
    alice.expect_line(&format!("* room dev now owned by {owner}"));
    alice.expect_exit(0);
    bob.expect_line("* alice left");
    carol.expect_line("* alice left");
    bob.send("still here");
    carol.expect_line("[dev] bob: still here");
    knows_room(&mut dave, "dev", &owner);
    dave.send(":join dev");
    refused(&mut dave, &format!(":join: {owner} kicked you from dev"));
}

/// The owner crashes (SIGKILL): once it is reported lost, the members
/// elect the one with the largest id; both show the same new owner, the
/// kick list survives, and the room goes on.
#[test]
fn an_owner_that_crashes_is_replaced_by_election() {
    let [mut alice, mut bob, mut carol, mut dave] = dev_without_dave();

    alice.signal(libc::SIGKILL);
    alice.wait_exit(DEADLINE);
    bob.expect_line("* alice left (connection lost)");
    carol.expect_line("* alice left (connection lost)");
    let owner = new_owner(&mut bob, &mut carol, "dev", &["bob", "carol"]);
    carol.send("after the crash");
    bob.expect_line("[dev] carol: after the crash");
    bob.send(":who");
    let rows = bob.expect_block("* 2 members in dev:", 2);
    assert!(
        rows.iter()
            .any(|r| r.contains(&format!("*   {owner} ")) && r.ends_with(" owner")),
        "{rows:?}"
    );
    knows_room(&mut dave, "dev", &owner);
    dave.send(":join dev");
    refused(&mut dave, ":join: ");
    let entered = dave
        .out_lines()
        .iter()
        .filter(|l| *l == "* you are in dev")
        .count();
    assert_eq!(entered, 1, "dave entered dev again");
}

/// Someone who joins the network after a room's lines were said, and then
/// enters the room, is shown its recent lines as history, each once and
/// in order, then the live lines.
#[test]
fn a_late_joiner_gets_the_history_once_then_live_lines() {
    let mut alice = Peer::start("alice");
    alice.send(":create dev");
    alice.expect_line("* you are in dev");
    for k in 1..=5 {
        alice.send(&format!("line {k}"));
    }
    alice.send(":shout all hands");
    let mut bob = Peer::join("bob", alice.port(), 2);
    alice.expect_line("* bob joined");
    enter(&mut bob, "dev", "alice");
    bob.expect_line("[dev history] ! alice: all hands");
    alice.send("line 6");
    bob.expect_line("[dev] alice: line 6");
    let out = bob.out_lines();
    let mine: Vec<&String> = out.iter().filter(|l| l.contains("alice: ")).collect();
    let mut want: Vec<String> = (1..=5)
        .map(|k| format!("[dev history] alice: line {k}"))
        .collect();
    want.push("[dev history] ! alice: all hands".into());
    want.push("[dev] alice: line 6".into());
    assert_eq!(mine, want.iter().collect::<Vec<_>>());
}

/// JSON output carries the room: room lines, history, shouts, notices and
/// the room we are in.
#[test]
fn json_lines_carry_the_room() {
    let mut alice = Peer::start("alice");
    alice.send(":create dev");
    alice.expect_line("* you are in dev");
    alice.send("before");
    let mut erin = Peer::launch(
        "erin",
        &["--json"],
        Some(alice.port()),
        std::process::Stdio::piped(),
    );
    erin.expect_contains(r#""type":"joined""#);
    alice.expect_line("* erin joined");
    poll(&mut erin, r#"{"command":"rooms"}"#, "room dev", &|l| {
        l.contains(r#""name":"dev","owner":"alice""#)
    });
    erin.send(r#"{"command":"join dev"}"#);
    erin.expect_contains(r#"{"type":"here","#);
    erin.expect_contains(r#""from":"alice","room":"dev","text":"before","history":true"#);
    alice.send("after");
    alice.send(":shout loud");
    let l = erin.expect_contains(r#""text":"after""#);
    assert!(
        l.contains(r#""room":"dev""#) && !l.contains("history"),
        "{l}"
    );
    erin.expect_contains(r#""type":"shout","#);
    erin.send(r#"{"command":"kick alice"}"#);
    let e = erin.expect_contains(r#""type":"error""#);
    assert!(e.contains("you do not own dev"), "{e}");
}

/// An owner that crashes and starts again with its identity (its home:
/// the same key, a new node id) is still the owner: it takes its room
/// back from the member elected meanwhile, kick list and all, and its
/// commands work. Another peer under its name, with another key, is
/// refused before it could claim anything.
#[test]
fn an_owner_back_with_its_key_is_the_owner_and_an_impostor_is_not() {
    let [mut alice, mut bob, mut carol, mut dave] = dev_without_dave();

    alice.signal(libc::SIGKILL);
    alice.wait_exit(DEADLINE);
    bob.expect_line("* alice left (connection lost)");
    carol.expect_line("* alice left (connection lost)");
    new_owner(&mut bob, &mut carol, "dev", &["bob", "carol"]);

    // Another "alice", another key: refused by those who know alice's.
    let mut impostor = Peer::launch("alice", &[], Some(bob.port()), std::process::Stdio::piped());
    impostor.expect_exit(1);
    impostor.expect_err_contains("the key of alice has changed");

    // alice again, her home kept: her room again.
    let home = alice.keep_home();
    drop(alice);
    let mut alice = Peer::launch_env(
        "alice",
        &[],
        Some(bob.port()),
        std::process::Stdio::piped(),
        &home.env(),
    );
    alice.expect_contains("joined through");
    alice.expect_line("* room dev now owned by alice");
    bob.expect_line("* room dev now owned by alice");
    carol.expect_line("* room dev now owned by alice");
    knows_room(&mut dave, "dev", "alice");
    dave.send(":join dev");
    refused(&mut dave, ":join: ");
    bob.send(":kick carol");
    refused(&mut bob, "you do not own dev");
    alice.send(":join dev");
    alice.expect_line("* you are in dev");
    alice.send(":kick carol");
    carol.expect_line("* you are in lobby");
    bob.expect_line("* alice kicked carol from dev");
}

/// A relay cannot kick in the owner's name: mallory, a member linked to
/// carol (who hears alice only through bob), claims alice's room as
/// herself (signed, a member) while alice is present, with bob kicked;
/// then sends alice's state with bob kicked as alice's next event, sealed
/// with mallory's key. Nobody acts on either: bob stays in dev and his
/// lines reach carol and alice; carol drops the relay.
#[test]
fn a_relay_cannot_forge_an_owners_kick() {
    use p2pchat::proto::wire::Body;
    use p2pchat::proto::wire::rooms::{Op, RoomEvent, RoomState};
    use std::process::Stdio;
    use util::frames::{self, who};

    // alice and carol each linked to bob only (one link wanted, two at
    // most): carol hears alice only through bob, or through a relay.
    let one = ["-d", "1", "-D", "2"];
    let mut bob = Peer::start("bob");
    let mut alice = Peer::launch("alice", &one, Some(bob.port()), Stdio::piped());
    alice.expect_joined(bob.port(), 2);
    let mut carol = Peer::launch("carol", &one, Some(bob.port()), Stdio::piped());
    carol.expect_joined(bob.port(), 3);
    alice.expect_line("* carol joined");
    alice.send(":create dev");
    alice.expect_line("* you are in dev");
    for q in [&mut bob, &mut carol] {
        enter(q, "dev", "alice");
    }

    let me = who(40);
    let (mut r, members) = raw_member(carol.port(), &me, "mallory");
    let a = members
        .iter()
        .find(|e| e.name == "alice")
        .expect("alice listed");
    let (alice_id, mut next) = (a.id, a.seq + 1);
    carol.expect_line("* mallory joined");
    alice.expect_line("* mallory joined");
    // alice announces dev to the newcomer: its state, to forge from.
    let (state, last) = state_from(&mut r, alice_id, "dev");
    next = next.max(last + 1);
    // Whatever else alice says meanwhile comes first.
    quiet(&mut r, alice_id, &mut next);
    let kick = RoomState {
        op: Op::Kick,
        arg: "bob".into(),
        kicked: vec!["bob".into()],
        roster: vec![],
        ..state.clone()
    };
    // As herself: a member's claim over alice (present), bob kicked.
    let claim = RoomState {
        epoch: state.epoch + 1,
        from: alice_id,
        op: Op::Elected,
        elected: true,
        ..kick.clone()
    };
    for m in frames::sealed(&me, 2, vec![Body::Room(RoomEvent::State(Box::new(claim)))]) {
        r.send(&m);
    }
    bob.send("still here");
    carol.expect_line("[dev] bob: still here");
    alice.expect_line("[dev] bob: still here");
    // In alice's name, sealed with mallory's key.
    // At alice's next number (and the few after it), once what she said
    // meanwhile is in.
    quiet(&mut r, alice_id, &mut next);
    for seq in next..next + 3 {
        let body = Body::Room(RoomEvent::State(Box::new(kick.clone())));
        r.send(&frames::forged(&me, alice_id, seq, body));
    }
    r.expect_closed(DEADLINE, "the forged kick");
    carol.expect_err_contains("it relayed a forged event");
    bob.send("and still here");
    carol.expect_line("[dev] bob: and still here");
    alice.expect_line("[dev] bob: and still here");
    alice.send(":who");
    let rows = alice.expect_block("* 3 members in dev:", 3);
    assert!(rows.iter().any(|l| l.starts_with("*   bob ")), "{rows:?}");
    for q in [&mut alice, &mut bob, &mut carol] {
        q.assert_no_out("a kick", &|l| {
            l.contains("kicked") || l.contains("now owned by")
        });
    }
}

/// A member cannot take a room by an election over an owner nobody saw:
/// mallory (a member, signing as herself) claims alice's room, bob
/// kicked, over an owner she made up (no proof of its state), then over
/// a second made-up owner whose "creation" of the room she signed with a
/// key of her own (a proof of a state nobody set). No honest peer changes
/// the room's owner or its kick list.
#[test]
fn an_election_over_an_owner_nobody_saw_is_refused() {
    use p2pchat::proto::wire::Body;
    use p2pchat::proto::wire::rooms::{Op, RoomEvent, RoomState, Signed, signed_bytes};
    use util::frames::{self, who};

    let [mut alice, mut bob, mut carol] = dev_by_alice();
    for q in [&mut bob, &mut carol] {
        enter(q, "dev", "alice");
    }

    let me = who(40);
    let (mut r, members) = raw_member(carol.port(), &me, "mallory");
    let alice_id = members
        .iter()
        .find(|e| e.name == "alice")
        .expect("alice listed")
        .id;
    carol.expect_line("* mallory joined");
    alice.expect_line("* mallory joined");
    // alice announces dev to the newcomer: its state, to forge from.
    let (state, _) = state_from(&mut r, alice_id, "dev");
    let claim = |from, epoch| RoomState {
        epoch,
        from,
        op: Op::Elected,
        elected: true,
        kicked: vec!["bob".into()],
        roster: vec![],
        ..state.clone()
    };
    // Over an id nobody has seen: no state of it anywhere.
    let made_up = claim(
        p2pchat::node::NodeId(0x5eed_5eed_5eed_5eed),
        state.epoch + 1,
    );
    // Over a "creator" of dev's era with a key of her own, its state
    // signed with that key.
    let ghost = who(41);
    let made = RoomState {
        epoch: 1,
        from: p2pchat::node::NodeId(0),
        lord: ghost.public(),
        op: Op::Create,
        ..state.clone()
    };
    let proof = Signed {
        owner: ghost.id(),
        key: ghost.public(),
        nonce: ghost.nonce(),
        sig: ghost.sign(&signed_bytes(ghost.id(), &made)),
        state: made,
    };
    let over_ghost = RoomState {
        lord: ghost.public(),
        ..claim(ghost.id(), state.epoch + 2)
    };
    let bodies = vec![
        Body::Room(RoomEvent::State(Box::new(made_up))),
        Body::Room(RoomEvent::Signed(Box::new(proof))),
        Body::Room(RoomEvent::State(Box::new(over_ghost))),
    ];
    for m in frames::sealed(&me, 2, bodies) {
        r.send(&m);
    }
    // Delivered by then (one origin's events in order): bob is still in.
    let done = RoomEvent::Shout {
        n: 1,
        text: "done".into(),
    };
    r.send(&frames::signed(&me, 5, Body::Room(done)));
    for q in [&mut alice, &mut bob, &mut carol] {
        q.expect_line("! mallory: done");
    }
    bob.send("still here");
    carol.expect_line("[dev] bob: still here");
    alice.expect_line("[dev] bob: still here");
    for q in [&mut bob, &mut carol] {
        knows_room(q, "dev", "alice");
    }
    alice.send(":who");
    let rows = alice.expect_block("* 3 members in dev:", 3);
    assert!(rows.iter().any(|l| l.starts_with("*   bob ")), "{rows:?}");
    alice.send(":kick carol");
    bob.expect_line("* alice kicked carol from dev");
    for q in [&mut alice, &mut bob, &mut carol] {
        q.assert_no_out("a new owner", &|l| {
            l.contains("now owned by") || l.contains("kicked bob")
        });
    }
}

/// Joins a raw member `name` (identity `me`) through `via`, and reads
/// until `owner` announces room `room` to it: that state, to forge from.
fn raw_member(
    via: u16,
    me: &p2pchat::proto::crypto::Identity,
    name: &str,
) -> (util::raw::Raw, Vec<p2pchat::proto::wire::Entry>) {
    use p2pchat::proto::wire::Msg;
    use util::frames;
    let mut r = util::raw::Raw::connect(via);
    let (_, members) = r.hello(me, name, true);
    let Msg::Event(join) = frames::join(me, name, 9) else {
        unreachable!()
    };
    r.send(&Msg::Event(join));
    (r, members)
}

/// Reads what `r` gets until a state of `room` from `owner` comes; with
/// the highest number of `owner`'s events read meanwhile.
fn state_from(
    r: &mut util::raw::Raw,
    owner: p2pchat::node::NodeId,
    room: &str,
) -> (p2pchat::proto::wire::rooms::RoomState, u64) {
    use p2pchat::proto::wire::rooms::RoomEvent;
    use p2pchat::proto::wire::{Body, Msg};
    use util::raw::Got;
    let mut last = 0;
    loop {
        match r.recv(DEADLINE) {
            Got::Msg(Msg::Event(ev)) if ev.origin == owner => {
                last = last.max(ev.seq);
                if let Body::Room(RoomEvent::State(st)) = ev.body
                    && st.name == room
                {
                    return (*st, last);
                }
            }
            Got::Msg(_) => {}
            Got::Closed => panic!("no state of {room}: closed"),
            Got::Timeout => panic!("no state of {room}"),
        }
    }
}

/// Reads what `r` gets until it has been quiet for half a second; `next`
/// stays above the numbers of `owner`'s events read.
fn quiet(r: &mut util::raw::Raw, owner: p2pchat::node::NodeId, next: &mut u64) {
    use p2pchat::proto::wire::Msg;
    use util::raw::Got;
    while let Got::Msg(m) = r.recv(Duration::from_millis(500)) {
        if let Msg::Event(ev) = m
            && ev.origin == owner
        {
            *next = (*next).max(ev.seq + 1);
        }
    }
}

/// A member cannot take a room over an owner that was replaced since:
/// alice crashes and bob or carol is elected in her place; then mallory
/// (a member, signing as herself) claims dev over alice too, at the next
/// epoch after the new owner's, bob kicked. Nobody takes it.
#[test]
fn a_late_claim_over_an_owner_replaced_since_is_refused() {
    use p2pchat::proto::wire::rooms::{Op, RoomEvent, RoomState};
    use p2pchat::proto::wire::{Body, Msg};
    use util::frames::{self, who};

    let [mut alice, mut bob, mut carol] = dev_by_alice();
    for q in [&mut bob, &mut carol] {
        enter(q, "dev", "alice");
    }
    let me = who(40);
    let (mut r, members) = raw_member(carol.port(), &me, "mallory");
    let alice_id = members.iter().find(|e| e.name == "alice").unwrap().id;
    carol.expect_line("* mallory joined");
    let (state, _) = state_from(&mut r, alice_id, "dev");

    alice.signal(libc::SIGKILL);
    alice.wait_exit(DEADLINE);
    bob.expect_line("* alice left (connection lost)");
    carol.expect_line("* alice left (connection lost)");
    let owner = new_owner(&mut bob, &mut carol, "dev", &["bob", "carol"]);
    r.send(&Msg::Ping);
    // Over alice, as if the owner elected in her place were not there.
    let late = RoomState {
        epoch: state.epoch + 2,
        from: alice_id,
        op: Op::Elected,
        elected: true,
        kicked: vec!["bob".into()],
        roster: vec![],
        ..state
    };
    let done = Body::Room(RoomEvent::Shout {
        n: 1,
        text: "done".into(),
    });
    let bodies = vec![Body::Room(RoomEvent::State(Box::new(late))), done];
    for m in frames::sealed(&me, 2, bodies) {
        r.send(&m);
    }
    for q in [&mut bob, &mut carol] {
        q.expect_line("! mallory: done");
    }
    bob.send("still here");
    carol.expect_line("[dev] bob: still here");
    for q in [&mut bob, &mut carol] {
        knows_room(q, "dev", &owner);
        q.assert_no_out("mallory's claim", &|l| {
            l.contains("owned by mallory") || l.contains("kicked bob")
        });
    }
}

/// A former owner cannot hand its room over again: mallory (signing as
/// herself) makes ops and gives it to bob, who takes it over; then she
/// says she gave it to trent too (an id larger than bob's), and trent
/// claims it as given, over the same state as bob. Nobody takes it.
#[test]
fn a_former_owner_cannot_hand_its_room_over_again() {
    use p2pchat::proto::crypto::{Identity, node_id};
    use p2pchat::proto::wire::Body;
    use p2pchat::proto::wire::rooms::{Op, RoomEvent, RoomState};
    use util::frames::{self, who};

    let mut p = network(&["bob", "carol"], Via::Previous);
    let mut carol = p.pop().unwrap();
    let mut bob = p.pop().unwrap();
    let mallory = who(40);
    let (mut m, members) = raw_member(carol.port(), &mallory, "mallory");
    let bob_id = members.iter().find(|e| e.name == "bob").unwrap().id;
    carol.expect_line("* mallory joined");
    bob.expect_line("* mallory joined");
    // trent: a key of hers whose id is larger than bob's, surely.
    let seed = [7; 32];
    let key = Identity::new(seed, 0).public();
    let nonce = (0..).find(|&n| node_id(&key, n).0 >> 48 == 0xffff).unwrap();
    let trent = Identity::new(seed, nonce);
    let (mut t, _) = raw_member(carol.port(), &trent, "trent");
    carol.expect_line("* trent joined");
    bob.expect_line("* trent joined");

    let era = ((mallory.id().0 >> 40) as u32) << 8 | 1;
    let made = RoomState::founding("ops", era, mallory.public());
    let state = |st: &RoomState| Body::Room(RoomEvent::State(Box::new(st.clone())));
    let shout = |text: &str| {
        Body::Room(RoomEvent::Shout {
            n: 1,
            text: text.into(),
        })
    };
    for f in frames::sealed(&mallory, 2, vec![state(&made)]) {
        m.send(&f);
    }
    for q in [&mut bob, &mut carol] {
        enter(q, "ops", "mallory");
    }
    let gave = RoomState {
        op: Op::Give,
        arg: "bob".into(),
        gave: vec![bob_id],
        ..made.clone()
    };
    for f in frames::sealed(&mallory, 3, vec![state(&gave)]) {
        m.send(&f);
    }
    for q in [&mut bob, &mut carol] {
        q.expect_line("* room ops now owned by bob");
    }
    // She gives it again, once bob has it; trent takes it.
    let again = RoomState {
        op: Op::Give,
        arg: "trent".into(),
        gave: vec![bob_id, trent.id()],
        ..made.clone()
    };
    for f in frames::sealed(&mallory, 4, vec![state(&again), shout("gave")]) {
        m.send(&f);
    }
    for q in [&mut bob, &mut carol] {
        q.expect_line("! mallory: gave");
    }
    let claim = RoomState {
        epoch: 2,
        from: mallory.id(),
        lord: trent.public(),
        op: Op::Given,
        kicked: vec!["bob".into()],
        ..made
    };
    for f in frames::sealed(&trent, 2, vec![state(&claim), shout("done")]) {
        t.send(&f);
    }
    for q in [&mut bob, &mut carol] {
        q.expect_line("! trent: done");
    }
    bob.send("still here");
    carol.expect_line("[ops] bob: still here");
    for q in [&mut bob, &mut carol] {
        knows_room(q, "ops", "bob");
        q.assert_no_out("trent's claim", &|l| {
            l.contains("owned by trent") || l.contains("kicked bob")
        });
    }
}

/// Someone new takes a room on its creation only: as erin joins,
/// mallory (a member, signing as herself) tells her first that she owns
/// dev, elected over alice (who is here), bob kicked. erin lists dev as
/// alice's, as everyone does.
#[test]
fn a_newcomer_is_not_fed_a_made_up_owner() {
    use p2pchat::proto::wire::rooms::{Op, RoomEvent, RoomState};
    use p2pchat::proto::wire::{Body, Msg};
    use std::process::Stdio;
    use util::frames::{self, who};

    let [mut alice, mut bob, mut carol] = dev_by_alice();
    enter(&mut bob, "dev", "alice");
    let me = who(40);
    let (mut r, members) = raw_member(carol.port(), &me, "mallory");
    let alice_id = members.iter().find(|e| e.name == "alice").unwrap().id;
    carol.expect_line("* mallory joined");
    let (state, _) = state_from(&mut r, alice_id, "dev");
    let claim = RoomState {
        epoch: state.epoch + 1,
        from: alice_id,
        lord: state.lord,
        op: Op::Elected,
        elected: true,
        kicked: vec!["bob".into()],
        roster: vec![],
        ..state
    };
    let mut erin = Peer::launch("erin", &[], Some(carol.port()), Stdio::piped());
    erin.expect_joined(carol.port(), 5);
    // At once: before alice tells erin of dev.
    let bodies = vec![Body::Room(RoomEvent::State(Box::new(claim)))];
    for m in frames::sealed(&me, 2, bodies) {
        r.send(&m);
    }
    r.send(&Msg::Ping);
    knows_room(&mut erin, "dev", "alice");
    bob.send("still here");
    alice.expect_line("[dev] bob: still here");
    for q in [&mut alice, &mut bob, &mut carol, &mut erin] {
        q.assert_no_out("mallory's claim", &|l| {
            l.contains("owned by mallory") || l.contains("kicked bob")
        });
    }
    drain(&mut erin);
    erin.send(":rooms");
    let rows = erin.expect_block("* 2 rooms:", 2);
    assert!(
        rows.iter().any(|l| l.starts_with("*   dev alice ")),
        "{rows:?}"
    );
}

/// `:me` in a room: shown by that room's members only (`[dev] * bob
/// waves`; JSON: an `action` with the room), not by the lobby, and a
/// lobby action not by the room.
#[test]
fn actions_in_a_room_reach_its_members_only() {
    use std::process::Stdio;
    let mut alice = Peer::start("alice");
    let mut bob = Peer::join("bob", alice.port(), 2);
    let mut carol = Peer::launch("carol", &["--json"], Some(alice.port()), Stdio::piped());
    carol.expect_on(
        Stream::Out,
        "carol in",
        &|l| l.contains(r#""type":"joined""#),
        DEADLINE,
    );
    alice.send(":create dev");
    alice.expect_line("* you are in dev");
    enter(&mut bob, "dev", "alice");
    alice.expect_line("* bob moved from lobby to dev");
    bob.send(":me waves");
    alice.expect_line("[dev] * bob waves");
    carol.send(r#"{"command":"me yawns"}"#);
    alice.send(":shout sync");
    carol.expect_on(
        Stream::Out,
        "the shout",
        &|l| l.contains(r#""type":"shout""#) && l.contains("sync"),
        DEADLINE,
    );
    bob.expect_line("! alice: sync");
    // carol (lobby) in JSON: no room action; dev: no lobby action.
    carol.assert_no_out("a room action", &|l| l.contains("waves"));
    for q in [&mut alice, &mut bob] {
        q.assert_no_out("a lobby action", &|l| l.contains("yawns"));
    }
    carol.send(r#"{"command":"join dev"}"#);
    bob.expect_line("* carol moved from lobby to dev");
    bob.send(":me nods");
    carol.expect_on(
        Stream::Out,
        "a room action in JSON",
        &|l| {
            l.contains(r#""type":"action""#)
                && l.contains(r#""from":"bob","room":"dev","text":"nods""#)
        },
        DEADLINE,
    );
    alice.expect_line("[dev] * bob nods");
}

/// The owner gives the room away (`:give`): the new owner's commands work
/// and the old one's are refused; a kick is undone (`:unkick`); `:leave`
/// goes back to the lobby; `:who *` lists everyone.
#[test]
fn give_unkick_leave_and_who_everyone() {
    let [mut alice, mut bob, mut carol] = dev_by_alice();
    for q in [&mut bob, &mut carol] {
        enter(q, "dev", "alice");
    }
    alice.send(":give dev dave");
    refused(&mut alice, ":give: ");
    alice.send(":give dev bob");
    alice.expect_line("* giving dev to bob");
    for q in [&mut alice, &mut bob, &mut carol] {
        q.expect_line("* room dev now owned by bob");
    }
    alice.send(":kick carol");
    refused(&mut alice, ":kick: you do not own dev (bob does)");
    bob.send(":kick carol");
    carol.expect_line("* you are in lobby");
    alice.expect_line("* bob kicked carol from dev");
    carol.send(":join dev");
    refused(&mut carol, "you cannot enter it");
    bob.send(":unkick carol");
    bob.expect_line("* carol may enter dev again");
    carol.expect_line("* carol may enter dev again");
    carol.send(":join dev");
    carol.expect_line("* you are in dev");
    bob.expect_line("* carol moved from lobby to dev");
    carol.send(":leave");
    carol.expect_line("* you are in lobby");
    carol.send(":who *");
    let rows = carol.expect_block("* 3 members:", 3);
    assert!(rows[0].starts_with("*   alice "), "{rows:?}");
    assert!(rows[2].starts_with("*   carol "), "{rows:?}");
}

/// Issue 18 (items 9 and 13): a room's history line shows when it was
/// said, by its sender's clock (with the date when not today), in plain
/// lines with --timestamps and in JSON, under the id it had live. The
/// line is said yesterday by a raw member, and the owner sends the
/// history to two peers that join the network later.
#[test]
fn history_lines_show_when_they_were_said() {
    use std::process::{Command, Stdio};
    use util::frames;
    use util::raw::Raw;
    let mut alice = Peer::launch("alice", &["--json"], None, Stdio::piped());
    alice.send(r#"{"command":"create dev"}"#);
    alice.expect_contains(r#"{"type":"here","#);
    let m = frames::who(0x7965_7374);
    let yesterday = frames::now_ms() - 26 * 3_600_000;
    let said = "said yesterday";
    let _r = Raw::say_in_room_at(alice.port(), &m, "yester", "dev", yesterday, said);
    // Live, at the owner: yester's event 3.
    let id = format!("{:016x}-3", m.id().0);
    let live = alice.expect_contains("said yesterday");
    let head = format!(r#"{{"type":"chat","time":{yesterday},"id":"{id}","from":"yester","#);
    assert!(live.starts_with(&head), "{live}");
    let port = alice.port().to_string();
    let args = ["--plain", "--timestamps", "bob", "127.0.0.1", &port];
    let mut bob = Peer::spawn("bob", &args, Stdio::piped());
    let mut erin = Peer::launch("erin", &["--json"], Some(alice.port()), Stdio::piped());
    poll(&mut bob, ":rooms", "room dev", &|l| {
        l.contains("*   dev alice ")
    });
    bob.send(":join dev");
    let l = bob.expect_contains("[dev history] yester: said yesterday");
    let out = Command::new("date")
        .args([
            "-d",
            &format!("@{}", yesterday / 1000),
            "+%Y-%m-%d %H:%M:%S",
        ])
        .output()
        .unwrap();
    let date = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(l, format!("{date} [dev history] yester: said yesterday"));
    poll(&mut erin, r#"{"command":"rooms"}"#, "room dev", &|l| {
        l.contains(r#""name":"dev","owner":"alice""#)
    });
    erin.send(r#"{"command":"join dev"}"#);
    let l = erin.expect_contains(r#""text":"said yesterday","history":true"#);
    assert!(l.starts_with(&head), "{l}");
}
