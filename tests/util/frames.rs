//! Messages a test peer speaking the wire protocol sends, built from the
//! wire module's types and signed as a real peer signs them (shared by
//! the hostile-peer, simulation and fuzz tests).

use p2pchat::node::NodeId;
use p2pchat::proto::crypto::{self, Identity};
use p2pchat::proto::seal;
use p2pchat::proto::wire::{self, Body, Event, Hello, Ident, Msg, Seal};

/// A test peer's identity, from a number.
pub fn who(n: u64) -> Identity {
    Identity::from_seed(n)
}

/// `me`'s public identity, as HELLO, JOIN and member lists carry it.
pub fn ident(me: &Identity) -> Ident {
    Ident {
        key: me.public(),
        nonce: me.nonce(),
    }
}

/// A HELLO as `name` from `me`, with its proof for a link without a
/// network secret: this version, joining, listening on port 1 (nobody can
/// dial it), no address seen. Change what a test needs with
/// `Hello { joining: false, ..hello(&me, name) }` (a changed name or port
/// needs [`prove`] again).
pub fn hello(me: &Identity, name: &str) -> Hello {
    prove(
        me,
        Hello {
            version: wire::VERSION,
            id: me.id(),
            name: name.into(),
            port: 1,
            joining: true,
            you: None,
            ident: ident(me),
            proof: [0; 64],
            expect: None,
        },
    )
}

/// `h` with `me`'s proof for its id, name and port (no network secret).
pub fn prove(me: &Identity, mut h: Hello) -> Hello {
    h.proof = me.sign(&crypto::hello_message(&[0; 32], h.id, &h.name, h.port));
    h
}

/// Event `seq` of `me`, signed on its own.
pub fn signed(me: &Identity, seq: u64, body: Body) -> Msg {
    let payload = wire::payload_of(&body).expect("a test event fits");
    let hash = crypto::event_hash(me.id(), seq, body.kind(), &payload);
    let sig = me.sign(&crypto::seal_message(&hash, &[]));
    Msg::Event(Event {
        origin: me.id(),
        seq,
        body,
        seal: Some(Seal {
            covers: Vec::new(),
            sig,
        }),
    })
}

/// Event `seq` of `origin`, unsigned (what a forger sends, or an event a
/// later one vouches for).
pub fn unsigned(origin: NodeId, seq: u64, body: Body) -> Msg {
    Msg::Event(Event {
        origin,
        seq,
        body,
        seal: None,
    })
}

/// A chat line in the lobby: `me`'s event `seq`, signed.
pub fn chat(me: &Identity, seq: u64, text: &str) -> Msg {
    signed(me, seq, lobby(text))
}

/// A chat line in the lobby, as a body.
pub fn lobby(text: &str) -> Body {
    Body::Chat {
        room: "lobby".into(),
        text: text.into(),
    }
}

/// `me`'s JOIN as `name`, listening at 127.0.0.1:`port`: event 1, signed.
pub fn join(me: &Identity, name: &str, port: u16) -> Msg {
    signed(me, 1, join_body(me, name, port))
}

/// The body of `me`'s JOIN as `name`, listening at 127.0.0.1:`port`.
pub fn join_body(me: &Identity, name: &str, port: u16) -> Body {
    Body::Join {
        name: name.into(),
        ip: Some(std::net::Ipv4Addr::LOCALHOST.into()),
        port,
        ident: ident(me),
    }
}

/// The wall clock in milliseconds since 1970, as CLOCK events carry it.
pub fn now_ms() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    t.unwrap().as_millis() as u64
}

/// `me`'s events `first..` with `bodies`, as a real peer sends a burst:
/// in runs of [`seal::SEAL_EVERY`], the last of each run signed and
/// vouching for the others by their hashes, which go unsigned.
pub fn sealed(me: &Identity, first: u64, bodies: Vec<Body>) -> Vec<Msg> {
    let mut out = Vec::with_capacity(bodies.len());
    let mut run: Vec<[u8; 16]> = Vec::new();
    let n = bodies.len();
    for (i, body) in bodies.into_iter().enumerate() {
        let seq = first + i as u64;
        let payload = wire::payload_of(&body).expect("a test event fits");
        let hash = crypto::event_hash(me.id(), seq, body.kind(), &payload);
        if run.len() + 1 < seal::SEAL_EVERY && i + 1 < n {
            run.push(hash);
            out.push(unsigned(me.id(), seq, body));
            continue;
        }
        let covers = std::mem::take(&mut run);
        let sig = me.sign(&crypto::seal_message(&hash, &covers));
        out.push(Msg::Event(Event {
            origin: me.id(),
            seq,
            body,
            seal: Some(Seal { covers, sig }),
        }));
    }
    out
}

/// Event `seq` of `origin` with a seal made with `signer`'s key: what a
/// member forging someone else's event can do at best.
pub fn forged(signer: &Identity, origin: NodeId, seq: u64, body: Body) -> Msg {
    let payload = wire::payload_of(&body).expect("a test event fits");
    let hash = crypto::event_hash(origin, seq, body.kind(), &payload);
    let sig = signer.sign(&crypto::seal_message(&hash, &[]));
    Msg::Event(Event {
        origin,
        seq,
        body,
        seal: Some(Seal {
            covers: Vec::new(),
            sig,
        }),
    })
}
