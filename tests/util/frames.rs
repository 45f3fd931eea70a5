//! Messages a test peer speaking the wire protocol sends, built from the
//! wire module's types (shared by the hostile-peer and fuzz tests).

use p2pchat::node::NodeId;
use p2pchat::proto::wire::{self, Body, Event, Hello, Msg};

/// A HELLO as `name` with node id `id`: this version, joining, listening
/// on port 1 (nobody can dial it), no address seen. Change what a test
/// needs with `Hello { joining: false, ..hello(id, name) }`.
pub fn hello(id: u64, name: &str) -> Hello {
    Hello {
        version: wire::VERSION,
        id: NodeId(id),
        name: name.into(),
        port: 1,
        joining: true,
        you: None,
    }
}

/// A chat line in the lobby, event `seq` of `origin`.
pub fn chat(origin: u64, seq: u64, text: &str) -> Msg {
    Msg::Event(Event {
        origin: NodeId(origin),
        seq,
        body: Body::Chat {
            room: "lobby".into(),
            text: text.into(),
        },
    })
}
