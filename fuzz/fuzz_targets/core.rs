//! A node fed arbitrary frames on a few links, with timer ticks in
//! between: no panic, and every frame it sends is a well-formed frame.
//!
//! The input is a script: each step is one control byte then, for a frame,
//! a 2-byte length and that many body bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pchat::node::{Action, Config, LinkId, MAX_MEMBERS, Node, NodeId};
use p2pchat::proto::wire;
use std::net::SocketAddr;

fuzz_target!(|data: &[u8]| {
    let mut core = Node::new(Config::default(), NodeId(0x8000_0000_0000_0000), "me", 40_000, 1);
    let addr = SocketAddr::from(([127, 0, 0, 1], 20_000));
    let mut now = 1_000;
    let mut links = Vec::new();
    if data.first().is_some_and(|b| b & 1 == 1) {
        // Joining through the first link.
        core.join(vec![addr], "fuzz", now);
    }
    let mut rest = data.get(1..).unwrap_or_default();
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 8 {
            0 => links.push(core.accepted(addr, now)),
            1 => {
                now += u64::from(op) * 40;
                core.tick(now);
            }
            2 => {
                if let Some(&l) = links.get(usize::from(op >> 3) % links.len().max(1)) {
                    core.link_down(l, "closed", now);
                }
            }
            _ => {
                if rest.len() < 2 {
                    break;
                }
                let n = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
                let body = &rest[2..2 + n];
                rest = &rest[2 + n..];
                let link = links
                    .get(usize::from(op >> 3) % links.len().max(1))
                    .copied()
                    .unwrap_or(LinkId(1));
                core.frame(link, body, now);
            }
        }
        while let Some(a) = core.next_action() {
            match a {
                Action::Send(_, f) => assert_eq!(wire::frame_len(&f), Ok(Some(f.len()))),
                Action::Connect(l, _) => {
                    if op & 0x80 != 0 {
                        core.connected(l, now);
                    } else {
                        core.link_down(l, "refused", now);
                    }
                }
                _ => {}
            }
        }
        assert!(core.member_count() <= MAX_MEMBERS);
    }
});
