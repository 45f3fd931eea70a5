//! Routes to one member: which link leads towards it, for what is meant
//! for it alone (private messages), so that it goes down one path instead
//! of to every peer.
//!
//! A member's events reach us first down the link nearest it (the
//! broadcast tree grows from the first copies), so the link its latest
//! new event came on leads back towards it: each peer on the way knows
//! its own next step the same way, or has a direct link. A ROUTED frame
//! goes down that link, one hop at a time, at most [`TTL`] hops; a peer
//! that knows no way on drops it, and the sender's fallback (the flood,
//! after a while without acknowledgement) covers that.
//!
//! ```text
//! 22 ROUTED  to:u64, ttl:u8, type:u8, payload (to the end of the frame)
//!            "pass this on towards member to": type and payload are an
//!            event's (20 PRIVATE), for to alone
//! ```
//!
//! A peer that does not know kind 22 skips it (see [`super::wire`]):
//! what it dropped comes again by the flood.

use super::wire::{self, Frame};
use super::{LinkId, NodeId, Remember};

/// The message kind of a ROUTED frame.
pub const ROUTED: u8 = 22;
/// Hops a ROUTED frame may take, at most.
pub const TTL: u8 = 16;
/// Members a route is remembered to, at most (the oldest learned is
/// forgotten first).
pub const MAX_ROUTES: usize = 4096;

/// Whether a frame body is a ROUTED frame.
pub fn is_routed(body: &[u8]) -> bool {
    body.first() == Some(&ROUTED)
}

/// A ROUTED frame, length prefix included.
pub fn frame(to: NodeId, ttl: u8, kind: u8, payload: &[u8]) -> Frame {
    let mut body = Vec::with_capacity(11 + payload.len());
    body.push(ROUTED);
    body.extend_from_slice(&to.0.to_be_bytes());
    body.push(ttl);
    body.push(kind);
    body.extend_from_slice(payload);
    wire::frame_of(&body)
}

/// A ROUTED frame body, read: (to, ttl, type, payload). Total: `None`
/// for anything else.
pub fn decode(body: &[u8]) -> Option<(NodeId, u8, u8, &[u8])> {
    let rest = body.strip_prefix(&[ROUTED])?;
    if rest.len() < 10 {
        return None;
    }
    let to = NodeId(u64::from_be_bytes(rest[..8].try_into().ok()?));
    Some((to, rest[8], rest[9], &rest[10..]))
}

/// The routes learned. See the module documentation.
#[derive(Debug)]
pub struct Route {
    via: Remember<LinkId>,
}

impl Default for Route {
    fn default() -> Route {
        Route::new()
    }
}

impl Route {
    pub fn new() -> Route {
        Route {
            via: Remember::new(MAX_ROUTES),
        }
    }

    /// A new event of `origin` came on `link`.
    pub fn learned(&mut self, origin: NodeId, link: LinkId) {
        if self.via.get(origin) != Some(&link) {
            self.via.insert(origin, link);
        }
    }

    /// The next link towards `to`: `direct`, a link to it, if there is
    /// one; else the one its events came on, if `up` still and not `from`
    /// (where the frame came from).
    pub fn next_hop(
        &self,
        to: NodeId,
        direct: Option<LinkId>,
        from: Option<LinkId>,
        up: impl Fn(LinkId) -> bool,
    ) -> Option<LinkId> {
        direct.or_else(|| {
            self.via
                .get(to)
                .copied()
                .filter(|&l| Some(l) != from && up(l))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_decoding_is_total() {
        let f = frame(NodeId(7), 3, 20, b"sealed");
        assert_eq!(wire::frame_len(&f), Ok(Some(f.len())));
        assert_eq!(decode(&f[4..]), Some((NodeId(7), 3, 20, &b"sealed"[..])));
        for cut in 0..14 {
            assert_eq!(decode(&f[4..4 + cut.min(f.len() - 4)]).is_some(), cut >= 11);
        }
        assert_eq!(decode(&[4, 0, 0]), None);
    }

    #[test]
    fn the_next_hop_is_direct_or_where_events_came_from() {
        let mut r = Route::new();
        let up = |_| true;
        assert_eq!(r.next_hop(NodeId(1), None, None, up), None);
        r.learned(NodeId(1), LinkId(5));
        assert_eq!(r.next_hop(NodeId(1), None, None, up), Some(LinkId(5)));
        assert_eq!(
            r.next_hop(NodeId(1), Some(LinkId(9)), None, up),
            Some(LinkId(9))
        );
        // Never back where it came from, nor down a link gone.
        assert_eq!(r.next_hop(NodeId(1), None, Some(LinkId(5)), up), None);
        assert_eq!(r.next_hop(NodeId(1), None, None, |_| false), None);
        r.learned(NodeId(1), LinkId(6));
        assert_eq!(r.next_hop(NodeId(1), None, None, up), Some(LinkId(6)));
    }
}
