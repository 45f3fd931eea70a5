//! Sockets: listening, dialling, the options every link gets, and one
//! connection's buffers (a queue flushed when the socket is writable).
//!
//! The event loop owns the sockets; this file says how each is made and
//! how bytes go in and out of it.

use crate::node::Millis;
use mio::net::{TcpListener, TcpStream};
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// A link whose outbound queue grows past this is dropped.
pub const MAX_QUEUE: usize = 4 << 20;
/// Above this much queued on any link we stop reading stdin, and a link
/// that makes no progress above it for [`STALL`] ms is dropped.
pub const HIGH_WATER: usize = 256 << 10;
pub const STALL: Millis = 2_000;
/// A peer link whose sent data stays unacknowledged this long fails
/// (TCP_USER_TIMEOUT), and so does an idle one whose keepalive probes go
/// unanswered this long: a vanished host is noticed this long after it
/// last answered, whether or not we were talking to it. The kernel keeps
/// these timers: they cost the process no wake-up.
pub const DEAD_LINK: Duration = Duration::from_secs(5);
/// Keepalive on an idle link: the first probe after this much silence,
/// then one a second until [`DEAD_LINK`] (three probes: one lost probe or
/// its answer does not fail a healthy link).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(2);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_PROBES: u32 = 3;
/// Something written to a link whose far end has acknowledged nothing for
/// this long is watched (see [`Conn::watch`]): on a healthy idle link the
/// kernel's keepalives are answered at least every 2 s, so this finds the
/// links where they have started to go unanswered.
const QUIET: Millis = 1_000;
/// A watched link is taken for dead no sooner than this after the write
/// that started the watch: time for a healthy one to acknowledge it.
const ACK_GRACE: Millis = 1_000;

/// One connection's socket and buffers.
pub struct Conn {
    pub stream: TcpStream,
    pub rbuf: Vec<u8>,
    pub wbuf: Vec<u8>,
    /// Bytes of `wbuf` already written.
    pub wpos: usize,
    pub connecting: bool,
    /// The core has let go of this link: flush, then close by this time.
    pub closing: Option<Millis>,
    /// We sent FIN; waiting for the other side's.
    pub shut: bool,
    /// When the queue last shrank (or was empty).
    pub progress: Millis,
    /// A frame did not fit under [`MAX_QUEUE`]: drop the link.
    pub overflow: bool,
    /// When to look whether the far end answered what we wrote after it
    /// had been quiet (see [`Conn::watch`]).
    pub watch: Option<Millis>,
    /// When we last wrote to the socket.
    wrote: Millis,
}

impl Conn {
    pub fn new(stream: TcpStream, connecting: bool, now: Millis) -> Conn {
        Conn {
            stream,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            connecting,
            closing: None,
            shut: false,
            progress: now,
            overflow: false,
            watch: None,
            wrote: now,
        }
    }

    pub fn queued(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Writes what is queued until the socket would block.
    pub fn flush(&mut self, now: Millis) -> io::Result<()> {
        while self.wpos < self.wbuf.len() && !self.connecting {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.wpos += n;
                    self.progress = now;
                    self.wrote(now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.wpos == self.wbuf.len() {
            // An idle link keeps no big buffer around (one a file goes
            // over keeps what it needs for the next chunk).
            if self.wbuf.capacity() > 256 << 10 {
                self.wbuf = Vec::new();
            }
            self.wbuf.clear();
            self.wpos = 0;
            self.progress = now;
        } else if self.wpos > self.wbuf.len() / 2 {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        Ok(())
    }
}

impl Conn {
    /// We wrote to the socket. Data sent on a link whose far end had
    /// gone quiet stops the kernel's keepalives (they probe idle links
    /// only) and is given up on only [`DEAD_LINK`] after it was sent, by
    /// `TCP_USER_TIMEOUT`: a vanished host that gets a frame just before
    /// its keepalives would have failed the link is noticed that much
    /// later (a partition's far side gets the SUSPECTs about the links
    /// that failed first). So such a link is watched: if its far end
    /// still acknowledges nothing [`DEAD_LINK`] after it last did (and at
    /// least [`ACK_GRACE`] after this write), it is as dead as the
    /// keepalives would have found it (see [`Conn::unanswered`]).
    fn wrote(&mut self, now: Millis) {
        let after_quiet = now >= self.wrote + QUIET;
        self.wrote = now;
        if self.watch.is_some() || !after_quiet {
            return;
        }
        let Some(info) = tcp_info(&self.stream) else {
            return;
        };
        let quiet = Millis::from(info.last_ack);
        if quiet >= QUIET {
            let dead = dead_link_ms().saturating_sub(quiet).max(ACK_GRACE);
            self.watch = Some(now + dead);
        }
    }

    /// The round trip of the link's path in µs, as the kernel measures
    /// it (see [`crate::app::files::Files::path_rtt`]); None where it
    /// cannot tell.
    pub fn path_rtt(&self) -> Option<u64> {
        tcp_info(&self.stream)
            .map(|i| u64::from(i.rtt))
            .filter(|&us| us > 0)
    }

    /// Whether a watched link turns out dead (see `Conn::wrote`): its
    /// far end has acknowledged nothing for [`DEAD_LINK`] while something
    /// we sent waits. A watch is over once everything sent is
    /// acknowledged, or the far end answered since the write. The
    /// kernel counts in jiffies (4 ms at HZ=250) and we in our own
    /// milliseconds, so a far end still silent at the due time but a few
    /// milliseconds short of [`DEAD_LINK`] is looked at again when it
    /// reaches it, not let go (that left a vanished host to
    /// TCP_USER_TIMEOUT, 5 s after the write).
    pub fn unanswered(&mut self, now: Millis) -> bool {
        let Some(due) = self.watch else {
            return false;
        };
        let Some(info) = tcp_info(&self.stream) else {
            self.watch = None;
            return false;
        };
        if info.unacked == 0 {
            self.watch = None;
            return false;
        }
        if now < due {
            return false;
        }
        let quiet = Millis::from(info.last_ack);
        if quiet >= dead_link_ms() {
            self.watch = None;
            return true;
        }
        // Silent since before the write (the watch falls due at least
        // ACK_GRACE after it): look again once that has lasted DEAD_LINK.
        self.watch = (quiet >= ACK_GRACE).then(|| now + (dead_link_ms() - quiet).max(4));
        false
    }
}

fn dead_link_ms() -> Millis {
    DEAD_LINK.as_millis() as Millis
}

/// What the kernel says of a TCP connection.
struct TcpInfo {
    /// Milliseconds since the far end last acknowledged anything
    /// (keepalive probes included).
    last_ack: u32,
    /// Segments sent and not acknowledged yet.
    unacked: u32,
    /// The path's round trip in µs: the smallest the kernel measured on
    /// the connection (its smoothed one where that is not told); 0 if
    /// not measured yet.
    rtt: u32,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn tcp_info(s: &TcpStream) -> Option<TcpInfo> {
    use std::os::fd::AsRawFd;
    // SAFETY: TCP_INFO fills at most `len` bytes of a plain C struct,
    // which zeroes are a valid value of.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(TcpInfo {
        last_ack: info.tcpi_last_ack_recv,
        unacked: info.tcpi_unacked,
        rtt: least_rtt(&info),
    })
}

/// The smallest round trip the kernel saw (Linux 4.10 and later: an
/// older kernel leaves it 0), else its smoothed round trip.
#[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
fn least_rtt(info: &libc::tcp_info) -> u32 {
    match info.tcpi_min_rtt {
        0 => info.tcpi_rtt,
        min => min,
    }
}

#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))
))]
fn least_rtt(info: &libc::tcp_info) -> u32 {
    info.tcpi_rtt
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn tcp_info(_: &TcpStream) -> Option<TcpInfo> {
    None
}

/// Socket options for a peer link: no Nagle delay (a message is one small
/// frame), and a dead link noticed within [`DEAD_LINK`] by the kernel's
/// own timers, at no cost to an idle peer: TCP_USER_TIMEOUT fails a link
/// whose data goes unacknowledged (heartbeats included, which would
/// otherwise keep keepalives from ever starting), keepalives one that is
/// idle. Set before connecting, the same bound holds for the handshake.
pub fn tune(s: &SockRef<'_>) {
    let _ = s.set_nodelay(true);
    let ka = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    let _ = s.set_tcp_keepalive(&ka);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = s.set_tcp_user_timeout(Some(DEAD_LINK));
}

/// Starts a non-blocking connection to `addr`, tuned before its first
/// packet; it completes when the stream turns writable.
pub fn dial(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
    connect(s, addr)
}

/// Tunes `s` and starts its connection to `addr`.
fn connect(s: Socket, addr: SocketAddr) -> io::Result<TcpStream> {
    tune(&SockRef::from(&s));
    match s.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(s.into()))
}

/// Starts a connection to `addr` from our listening `port`, for hole
/// punching: the peer there dials us from its own listening port at the
/// same moment, so that each NAT on the way takes the other's SYN for the
/// answer to its own, and the two SYNs make one connection (TCP
/// simultaneous open). A NAT that keeps the source port (as Linux's
/// MASQUERADE does when it can) maps it to the address others saw us at.
/// The port is shared with the listener through SO_REUSEPORT, which the
/// listener sets only after it is bound (see [`listen`]).
pub fn dial_from(addr: SocketAddr, port: u16) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    let any: IpAddr = match addr {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => {
            s.set_only_v6(true)?;
            Ipv6Addr::UNSPECIFIED.into()
        }
    };
    s.bind(&SocketAddr::new(any, port).into())?;
    connect(s, addr)
}

/// Listens on `bind`, or by default on `::` for IPv6 and IPv4 at once
/// (IPV6_V6ONLY off), falling back to 0.0.0.0 where the host has no IPv6:
/// whichever family a peer reaches us over, it can dial us back at the
/// address it sees.
pub fn listen(bind: Option<IpAddr>, port: u16) -> io::Result<TcpListener> {
    let any6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
    let any4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port);
    match bind {
        Some(ip) => listen_on(SocketAddr::new(ip, port)),
        None => match listen_on(any6) {
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::EADDRNOTAVAIL)
                ) =>
            {
                listen_on(any4)
            }
            r => r,
        },
    }
}

fn listen_on(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if let IpAddr::V6(ip) = addr.ip()
        && ip.is_unspecified()
    {
        s.set_only_v6(false)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    // Punches dial from this port (dial_from). Set only after bind, so
    // that a second peer told the same port still cannot listen on it:
    // the kernel lets a socket bind a port in use only if it had
    // SO_REUSEPORT itself when it bound (and the holder has it, and the
    // same user owns both).
    let _ = s.set_reuse_port(true);
    Ok(TcpListener::from_std(s.into()))
}
