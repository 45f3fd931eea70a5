//! Chat: lines said, actions (`:me`), renames (`:nick`), members coming
//! and going, and `:who`; each line with when its sender said it.
//!
//! When: a sender's CLOCK event gives its wall clock, and the lines it
//! says after it were said then (to the second). The latest clock of each
//! sender is kept, for at most [`CLOCKS`] senders (the longest silent
//! forgotten first: its next line comes with a clock anyway, unless said
//! within the second).

use super::{LOBBY, MsgId, Net, Show, truncate};
use crate::proto::wire::{self, Body};
use crate::proto::{NodeId, Remember};

/// Senders whose clock is remembered, at most.
pub const CLOCKS: usize = 8192;

/// The chat application: everyone is in the lobby; what it remembers is
/// each sender's clock.
#[derive(Debug)]
pub struct Chat {
    said: Remember<u64>,
    /// The clock remembered last (the newest in `said`, never the first
    /// to be forgotten): a stream from one sender asks for it every line.
    last: Option<(NodeId, u64)>,
}

impl Default for Chat {
    fn default() -> Chat {
        Chat {
            said: Remember::new(CLOCKS),
            last: None,
        }
    }
}

impl Chat {
    /// The user said `text`: shown as ours, and sent to the room.
    pub fn say(&mut self, net: &mut impl Net, text: String) {
        let mut text = text;
        truncate(&mut text, wire::MAX_TEXT);
        if net.shows_own() {
            net.show(Show::own_line(net, false, LOBBY.into(), &text));
        }
        net.publish(Body::Chat {
            room: LOBBY.into(),
            text,
        });
    }

    /// `:me text`: an action, shown as ours, and sent to the room.
    pub fn action(&mut self, net: &mut impl Net, text: String) {
        let mut text = text;
        truncate(&mut text, wire::MAX_TEXT);
        net.show(Show::own_line(net, true, LOBBY.into(), &text));
        net.publish(Body::Action {
            room: LOBBY.into(),
            text,
        });
    }

    /// `from`'s clock said `time` (ms since 1970): its next lines were
    /// said then.
    pub fn clock(&mut self, from: NodeId, time: u64) {
        self.said.insert(from, time);
        self.last = Some((from, time));
    }

    /// When `from` said what it says now, if it told us.
    pub fn said(&self, from: NodeId) -> Option<u64> {
        match self.last {
            Some((id, time)) if id == from => Some(time),
            _ => self.said.get(from).copied(),
        }
    }

    /// `:who`: the members, by name.
    pub fn who(&mut self, net: &mut impl Net) {
        let mut v = net.members();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        net.show(Show::Members(v));
    }

    /// A chat event of `from` was delivered.
    pub fn delivered(&mut self, net: &mut impl Net, from: NodeId, room: String, text: String) {
        let said = self.said(from);
        let from = net.name_of(from);
        self.delivered_as(net, from, said, room, text);
    }

    /// [`Chat::delivered`], told the name its sender is shown by and when
    /// it was said.
    pub fn delivered_as(
        &mut self,
        net: &mut impl Net,
        from: String,
        said: Option<u64>,
        room: String,
        text: String,
    ) {
        let id = net.event().map(MsgId::Event);
        net.show(Show::Chat {
            from,
            room,
            text,
            own: false,
            said,
            id,
        });
    }

    /// An action of `from` was delivered.
    pub fn delivered_action(
        &mut self,
        net: &mut impl Net,
        from: NodeId,
        room: String,
        text: String,
    ) {
        let said = self.said(from);
        let id = net.event().map(MsgId::Event);
        let from = net.name_of(from);
        net.show(Show::Action {
            from,
            room,
            text,
            own: false,
            said,
            id,
        });
    }

    /// Member `id` (us, if `own`) went by `old` and goes by `new` now.
    pub fn renamed(&mut self, net: &mut impl Net, id: NodeId, old: String, new: String, own: bool) {
        let said = if own { None } else { self.said(id) };
        net.show(Show::Renamed {
            old,
            new,
            own,
            said,
        });
    }

    /// Member `name` is present now.
    pub fn joined(&mut self, net: &mut impl Net, name: String) {
        net.show(Show::MemberJoined(name));
    }

    /// Member `name` is gone: it left, or was `lost`.
    pub fn left(&mut self, net: &mut impl Net, name: String, lost: bool) {
        net.show(Show::MemberLeft { name, lost });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::fake::Fake;

    #[test]
    fn say_shows_ours_and_publishes_bounded() {
        let mut net = Fake::new("alice", &["carol", "bob"]);
        let mut c = Chat::default();
        c.say(&mut net, "é".repeat(wire::MAX_TEXT));
        let Body::Chat { text, room } = &net.published[0] else {
            panic!("not a chat");
        };
        assert_eq!(room, LOBBY);
        assert!(text.len() <= wire::MAX_TEXT && text.len() > wire::MAX_TEXT - 2);
        assert!(matches!(&net.shown[0], Show::Chat { own: true, from, .. } if from == "alice"));
    }

    #[test]
    fn delivered_lines_name_their_sender() {
        let mut net = Fake::new("alice", &["carol", "bob"]);
        let mut c = Chat::default();
        c.delivered(&mut net, NodeId(7), LOBBY.into(), "hi".into());
        c.clock(NodeId(7), 1_000_000);
        c.delivered_action(&mut net, NodeId(7), LOBBY.into(), "waves".into());
        assert_eq!(
            net.shown,
            [
                Show::Chat {
                    from: "n7".into(),
                    room: LOBBY.into(),
                    text: "hi".into(),
                    own: false,
                    said: None,
                    id: None,
                },
                Show::Action {
                    from: "n7".into(),
                    room: LOBBY.into(),
                    text: "waves".into(),
                    own: false,
                    said: Some(1_000_000),
                    id: None,
                }
            ]
        );
    }

    #[test]
    fn actions_show_ours_and_publish() {
        let mut net = Fake::new("alice", &["carol", "bob"]);
        Chat::default().action(&mut net, "waves".into());
        assert_eq!(
            net.published,
            [Body::Action {
                room: LOBBY.into(),
                text: "waves".into()
            }]
        );
        assert!(matches!(&net.shown[0], Show::Action { own: true, from, .. } if from == "alice"));
    }

    #[test]
    fn who_is_sorted_by_name() {
        let mut net = Fake::new("alice", &["carol", "bob"]);
        Chat::default().who(&mut net);
        let Show::Members(v) = &net.shown[0] else {
            panic!("not members");
        };
        let names: Vec<&str> = v.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob", "carol"]);
    }
}
