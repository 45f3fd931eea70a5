//! The gateway's sockets: its listener and its clients, one more source
//! in the event loop's poll. What each client says and is told is its
//! [`Session`]'s business; this file moves the bytes.
//!
//! Writes never block: each client has an output queue flushed when its
//! socket is writable. A client whose queue passes [`MAX_QUEUE`] (it
//! stopped reading) is dropped at once; chat and the other clients go on.
//! Its socket's send buffer is fixed at 64 KiB, so that this happens
//! after about `MAX_QUEUE` + 64 KiB, not after megabytes.
//! At most [`MAX_CLIENTS`] clients at once; one more is told so and
//! closed. Each turn reads at most `READ_BUDGET` (16 KiB) bytes of a client.

use super::session::{Password, Session, View};
use crate::app::Show;
use crate::node::{Command, Millis};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use std::io::{self, Read, Write};
use std::net::SocketAddr;

/// Clients at once.
pub const MAX_CLIENTS: usize = 8;
/// Bytes queued for one client at most; past this it is dropped.
pub const MAX_QUEUE: usize = 256 << 10;
/// The socket send buffer of a client.
const SNDBUF: usize = 64 << 10;
/// Lines for a client are written when this much is waiting, or at the
/// end of the turn.
const BATCH: usize = 16 << 10;
/// Bytes read from one client per turn of the loop.
const READ_BUDGET: usize = 16 << 10;
/// How long a closing client's last lines may take to go out.
const LINGER: Millis = 2_000;
/// The listener's token; client `n` is `TOKEN + 1 + n`. Far above the
/// tokens of peer links, which count up from the bottom.
const TOKEN: usize = usize::MAX / 2;

struct Client {
    stream: TcpStream,
    session: Session,
    wbuf: Vec<u8>,
    wpos: usize,
    /// Closing: gone by this time, written or not.
    close_by: Option<Millis>,
    /// More to read than this turn's share.
    unread: bool,
    /// Its queue overflowed or its socket failed: drop it, for this
    /// reason (None: quietly).
    gone: Option<Option<&'static str>>,
}

impl Client {
    /// Moves what the session said into the queue and writes what the
    /// socket takes now, so that a burst of chat never piles up unwritten
    /// for a client that reads.
    fn pump(&mut self) {
        let out = self.session.take_output();
        if self.gone.is_some() {
            return;
        }
        if self.wbuf.len() - self.wpos + out.len() > MAX_QUEUE {
            // It stopped reading: nothing more can reach it.
            self.gone = Some(Some("irc: a client stopped reading; dropped"));
            return;
        }
        self.wbuf.extend_from_slice(&out);
        if write(self).is_err() {
            self.gone = Some(None);
        }
    }
}

/// The listener and the clients.
pub struct Gateway {
    listener: TcpListener,
    addr: SocketAddr,
    password: Option<Password>,
    clients: Vec<Option<Client>>,
    scratch: Box<[u8]>,
    /// What the user should hear of (a client dropped or refused).
    notes: Vec<String>,
}

impl Gateway {
    /// Listens on `addr` (port 0: any free port).
    ///
    /// # Errors
    ///
    /// Binding or listening.
    pub fn listen(addr: SocketAddr, password: Option<Password>) -> io::Result<Gateway> {
        let s = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        s.set_reuse_address(true)?;
        s.set_nonblocking(true)?;
        s.set_cloexec(true)?;
        s.bind(&addr.into())?;
        s.listen(16)?;
        let listener = TcpListener::from_std(s.into());
        let addr = listener.local_addr()?;
        Ok(Gateway {
            listener,
            addr,
            password,
            clients: (0..MAX_CLIENTS).map(|_| None).collect(),
            scratch: vec![0; READ_BUDGET].into_boxed_slice(),
            notes: Vec::new(),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Registers the listener with the poll.
    ///
    /// # Errors
    ///
    /// The registry's.
    pub fn register(&mut self, reg: &Registry) -> io::Result<()> {
        reg.register(&mut self.listener, Token(TOKEN), Interest::READABLE)
    }

    /// Whether `token` is the gateway's.
    pub fn owns(token: Token) -> bool {
        (TOKEN..=TOKEN + MAX_CLIENTS).contains(&token.0)
    }

    /// What the user should be told: clients dropped or refused.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.clients.iter().flatten().count()
    }

    /// Readiness of one of its tokens: accepts, or reads a client. The
    /// commands the clients gave, each with the client's number.
    pub fn event(
        &mut self,
        reg: &Registry,
        token: Token,
        view: &impl View,
        now: Millis,
    ) -> Vec<(usize, Command)> {
        if token.0 == TOKEN {
            self.accept(reg, now);
            return Vec::new();
        }
        let n = token.0 - TOKEN - 1;
        self.read(n, view, now);
        self.flush(reg, now);
        self.commands(n)
    }

    /// Whether a client has bytes left to read from an earlier turn.
    pub fn pending(&self) -> bool {
        self.clients.iter().flatten().any(|c| c.unread)
    }

    /// Reads the clients that had more than their share last turn.
    pub fn read_pending(
        &mut self,
        reg: &Registry,
        view: &impl View,
        now: Millis,
    ) -> Vec<(usize, Command)> {
        let mut out = Vec::new();
        for n in 0..MAX_CLIENTS {
            if self.clients[n].as_ref().is_some_and(|c| c.unread) {
                self.read(n, view, now);
                out.extend(self.commands(n));
            }
        }
        self.flush(reg, now);
        out
    }

    fn commands(&mut self, n: usize) -> Vec<(usize, Command)> {
        let Some(c) = &mut self.clients[n] else {
            return Vec::new();
        };
        c.session
            .take_commands()
            .into_iter()
            .map(|cmd| (n, cmd))
            .collect()
    }

    fn accept(&mut self, reg: &Registry, now: Millis) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    // A fixed send buffer: what a client that stops
                    // reading holds up is this and the queue, no more
                    // (autotuning would let it grow to megabytes).
                    let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SNDBUF);
                    let Some(n) = self.clients.iter().position(Option::is_none) else {
                        // Best effort: the socket is new and empty.
                        let _ = stream.write(b"ERROR :Closing link: too many IRC clients\r\n");
                        self.notes.push(format!(
                            "irc: refused a client: {MAX_CLIENTS} are connected"
                        ));
                        continue;
                    };
                    let token = Token(TOKEN + 1 + n);
                    if reg
                        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        continue;
                    }
                    self.clients[n] = Some(Client {
                        stream,
                        session: Session::new(self.password.clone(), now),
                        wbuf: Vec::new(),
                        wpos: 0,
                        close_by: None,
                        unread: false,
                        gone: None,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock, or out of descriptors: the rest wait in the
                // backlog for the next readiness.
                Err(_) => break,
            }
        }
    }

    fn read(&mut self, n: usize, view: &impl View, now: Millis) {
        let Some(c) = &mut self.clients[n] else {
            return;
        };
        c.unread = false;
        let mut budget = READ_BUDGET;
        while c.close_by.is_none() && c.session.closing().is_none() {
            if budget == 0 {
                c.unread = true;
                return;
            }
            let want = budget.min(self.scratch.len());
            match c.stream.read(&mut self.scratch[..want]) {
                Ok(0) => {
                    c.session.stop("Connection closed");
                    return;
                }
                Ok(k) => {
                    budget -= k;
                    c.session.feed(view, &self.scratch[..k], now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    c.session.stop(&e.to_string());
                    return;
                }
            }
        }
    }

    /// Something the peer shows, to every client; `origin`: the client
    /// whose command this answers.
    pub fn show(&mut self, view: &impl View, ev: &Show, origin: Option<usize>) {
        for (n, c) in self.clients.iter_mut().enumerate() {
            if let Some(c) = c {
                c.session.show(view, ev, origin == Some(n));
                // Written at the end of the turn, in few system calls; a
                // burst is written as it comes, so that it never piles up
                // unwritten for a client that reads.
                if c.session.output_len() >= BATCH {
                    c.pump();
                }
            }
        }
    }

    /// The peer leaves: every client is told and closed, and no more are
    /// taken.
    pub fn stop(&mut self, reg: &Registry, why: &str, now: Millis) {
        let _ = reg.deregister(&mut self.listener);
        for c in self.clients.iter_mut().flatten() {
            c.session.stop(why);
        }
        self.flush(reg, now);
    }

    /// When [`Gateway::tick`] next has work to do.
    pub fn deadline(&self) -> Option<Millis> {
        self.clients
            .iter()
            .flatten()
            .filter_map(|c| match c.close_by {
                Some(t) => Some(t),
                None if c.unread => Some(0),
                None => c.session.deadline(),
            })
            .min()
    }

    /// PINGs, timeouts, lingering closes.
    pub fn tick(&mut self, reg: &Registry, now: Millis) {
        for c in self.clients.iter_mut().flatten() {
            c.session.tick(now);
        }
        self.flush(reg, now);
    }

    /// Moves what the sessions said into the queues and writes them;
    /// drops clients that stopped reading, closes those that are done.
    pub fn flush(&mut self, reg: &Registry, now: Millis) {
        for slot in self.clients.iter_mut() {
            let Some(c) = slot else {
                continue;
            };
            c.pump();
            if c.session.closing().is_some() && c.close_by.is_none() {
                c.close_by = Some(now + LINGER);
            }
            let done = c
                .close_by
                .is_some_and(|t| now >= t || c.wpos == c.wbuf.len());
            if let Some(Some(why)) = c.gone {
                self.notes.push(why.to_owned());
            }
            if c.gone.is_some() || done {
                let _ = reg.deregister(&mut c.stream);
                *slot = None;
            }
        }
    }
}

/// Writes what is queued until the socket would block.
fn write(c: &mut Client) -> io::Result<()> {
    while c.wpos < c.wbuf.len() {
        match c.stream.write(&c.wbuf[c.wpos..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => c.wpos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if c.wpos == c.wbuf.len() {
        c.wbuf.clear();
        c.wpos = 0;
    } else if c.wpos > c.wbuf.len() / 2 {
        c.wbuf.drain(..c.wpos);
        c.wpos = 0;
    }
    Ok(())
}
