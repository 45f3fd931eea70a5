//! A raw client speaking (or not speaking) the wire protocol to a real
//! peer: the hostile member of the hostile-input tests.

use super::free_port;
use p2pchat::proto::crypto::Identity;
use p2pchat::proto::mesh;
use p2pchat::proto::wire::{self, Body, Entry, Hello, Msg, rooms::RoomEvent};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// What [`Raw::recv`] got. (A message is large, a HELLO most: one at a
/// time in a test, it is not worth a box.)
#[allow(clippy::large_enum_variant)]
pub enum Got {
    Msg(Msg),
    Closed,
    Timeout,
}

pub struct Raw {
    pub s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// A client on a stream accepted from a peer that dialled us.
    pub fn accepted(s: TcpStream) -> Raw {
        Raw { s, buf: Vec::new() }
    }

    pub fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nodelay(true).unwrap();
        Raw { s, buf: Vec::new() }
    }

    /// Connected with a tiny receive buffer: a client that never reads
    /// fills up at once.
    pub fn connect_small_rcvbuf(port: u16) -> Raw {
        use socket2::{Domain, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        sock.connect(&addr.into()).unwrap();
        Raw {
            s: sock.into(),
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, m: &Msg) {
        self.bytes(&wire::frame(m).unwrap());
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.s.write_all(b).expect("write to alice");
    }

    /// A frame whose body is `body`, length prefix set.
    pub fn body(&mut self, body: &[u8]) {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        self.bytes(&f);
    }

    /// The next message, the end of the stream, or nothing within `t`.
    pub fn recv(&mut self, t: Duration) -> Got {
        let deadline = Instant::now() + t;
        loop {
            match wire::frame_len(&self.buf) {
                Ok(Some(n)) if mesh::is_shed(&self.buf[4..n]) => {
                    // The mesh's asking before it sheds: skipped, as a
                    // peer built before SHED skips it.
                    self.buf.drain(..n);
                    continue;
                }
                Ok(Some(n)) => {
                    let m = wire::decode(&self.buf[4..n]).expect("alice sent a bad frame");
                    self.buf.drain(..n);
                    return Got::Msg(m);
                }
                Ok(None) => {}
                Err(e) => panic!("alice sent a bad frame: {e}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Got::Timeout;
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            let mut b = [0u8; 16 << 10];
            match self.s.read(&mut b) {
                Ok(0) => return Got::Closed,
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Got::Timeout;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Got::Closed, // reset
            }
        }
    }

    /// The next frame body, of any kind, even one this build cannot
    /// decode; `None` if none comes within `t` or the link closes.
    pub fn recv_body(&mut self, t: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + t;
        loop {
            match wire::frame_len(&self.buf) {
                Ok(Some(n)) => {
                    let body = self.buf[4..n].to_vec();
                    self.buf.drain(..n);
                    return Some(body);
                }
                Ok(None) => {}
                Err(e) => panic!("alice sent a bad frame: {e}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            let mut b = [0u8; 16 << 10];
            match self.s.read(&mut b) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }

    /// The next frame body whose kind byte is `kind`, skipping others;
    /// `None` if none comes within `t` or the link closes.
    pub fn recv_kind(&mut self, kind: u8, t: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + t;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let body = self.recv_body(left)?;
            if body.first() == Some(&kind) {
                return Some(body);
            }
        }
    }

    /// Reads until alice closes the connection, within `t`; returns what
    /// she sent before.
    pub fn expect_closed(&mut self, t: Duration, what: &str) -> Vec<Msg> {
        let deadline = Instant::now() + t;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Got::Msg(m) => got.push(m),
                Got::Closed => return got,
                Got::Timeout => panic!("{what}: connection still open after {t:?}; got {got:?}"),
            }
        }
    }

    /// A member `name`, `me`, joins through the peer at `port`, waits
    /// for the room `room` to be announced to it (for its era), and says
    /// `text` there as said at `time` (ms since 1970, by its CLOCK): its
    /// events 1 (JOIN), 2 (CLOCK) and 3 (the line). The member is there
    /// while the client returned is.
    pub fn say_in_room_at(
        port: u16,
        me: &Identity,
        name: &str,
        room: &str,
        time: u64,
        text: &str,
    ) -> Raw {
        use super::frames;
        let mut r = Raw::connect(port);
        r.hello(me, name, true);
        for msg in frames::sealed(me, 1, vec![frames::join_body(me, name, 1)]) {
            r.send(&msg);
        }
        // The owner announces the room to the newcomer: its era.
        let era = loop {
            match r.recv(super::DEADLINE) {
                Got::Msg(Msg::Event(ev)) => {
                    if let Body::Room(RoomEvent::State(st)) = ev.body
                        && st.name == room
                    {
                        break st.era;
                    }
                }
                Got::Msg(_) => {}
                Got::Closed | Got::Timeout => panic!("{room} was not announced"),
            }
        };
        let bodies = vec![
            Body::Clock { time },
            Body::Room(RoomEvent::Say {
                room: room.into(),
                era,
                n: 1,
                text: text.into(),
            }),
        ];
        for msg in frames::sealed(me, 2, bodies) {
            r.send(&msg);
        }
        r
    }

    /// Says HELLO as `name`, `me`; returns alice's HELLO and her member
    /// list.
    pub fn hello(&mut self, me: &Identity, name: &str, joining: bool) -> (Hello, Vec<Entry>) {
        let h = Hello {
            port: free_port(),
            joining,
            you: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ..super::frames::hello(me, name)
        };
        self.send(&Msg::Hello(super::frames::prove(me, h)));
        let h = match self.recv(super::DEADLINE) {
            Got::Msg(Msg::Hello(h)) => h,
            Got::Msg(m) => panic!("HELLO as {name}: got {m:?}"),
            Got::Closed => panic!("HELLO as {name}: closed"),
            Got::Timeout => panic!("HELLO as {name}: no answer"),
        };
        let mut members = Vec::new();
        loop {
            match self.recv(super::DEADLINE) {
                Got::Msg(Msg::Members { last, entries }) => {
                    members.extend(entries);
                    if last {
                        return (h, members);
                    }
                }
                Got::Msg(_) => {}
                _ => panic!("HELLO as {name}: no member list"),
            }
        }
    }
}
