//! A slow path for tests: a point-to-point link between two network
//! namespaces that delays every packet by a fixed time each way.
//!
//! This kernel has no netem qdisc, and a TCP relay (accept, connect,
//! forward with a delay) would not do: each side's TCP connection would
//! end at the relay, on loopback, and the kernel's round trip on it (what
//! a transfer's window is sized by) would stay loopback's. So the delay
//! is put under TCP: a TUN interface in each namespace, and two threads
//! per direction that read each IP packet from one, hold it for the delay
//! and write it into the other. The TCP connection runs end to end, and
//! its kernel sees the delay in every round trip, as on a real long path.
//!
//! The line adds no limit of its own beyond what the threads carry: the
//! packets wait in an unbounded queue (a delay line holds what arrives in
//! one delay, bounded by the TCP windows of the connections over it), and
//! the interfaces' MTU is 65,000 bytes, so one read and one write carry
//! a whole TCP segment of that size.
//!
//! Each TUN device is made inside its namespace (a helper thread enters
//! it): no interface ever exists outside. The devices go when [`Line`] is
//! dropped (their file descriptors close), before the namespaces are.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// `_IOW('T', 202, int)`: attach the descriptor to a new TUN device.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
/// MTU of the line's interfaces.
pub const MTU: usize = 65_000;

/// A running delay line; see the module docs.
pub struct Line {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// A TUN device named `name` made inside namespace `ns` (a thread enters
/// it to make the device, so the device is born there).
fn tun_in(ns: &str, name: &str) -> File {
    let path = format!("/var/run/netns/{ns}");
    let name = name.to_owned();
    thread::spawn(move || {
        let nsf = File::open(&path).unwrap_or_else(|e| panic!("delay: {path}: {e}"));
        // SAFETY: plain system calls on descriptors we own; setns moves
        // only this thread, which ends here.
        unsafe {
            assert_eq!(
                libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET),
                0,
                "delay: setns {path}: {}",
                std::io::Error::last_os_error()
            );
            let fd = libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            assert!(
                fd >= 0,
                "delay: /dev/net/tun: {}",
                std::io::Error::last_os_error()
            );
            let mut ifr = [0u8; 40];
            ifr[..name.len()].copy_from_slice(name.as_bytes());
            ifr[16..18].copy_from_slice(&(IFF_TUN | IFF_NO_PI).to_ne_bytes());
            assert_eq!(
                libc::ioctl(fd, TUNSETIFF, ifr.as_mut_ptr()),
                0,
                "delay: TUNSETIFF {name}: {}",
                std::io::Error::last_os_error()
            );
            File::from_raw_fd(fd)
        }
    })
    .join()
    .expect("delay: making a TUN device")
}

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("delay: cannot run ip");
    assert!(
        out.status.success(),
        "delay: ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Line {
    /// Links namespace `a` (address `a_addr`) and `b` (`b_addr`), both
    /// IPv4 addresses of one /30 not used elsewhere, with a line that
    /// delays each packet by `one_way` in each direction.
    pub fn new(a: &str, a_addr: &str, b: &str, b_addr: &str, one_way: Duration) -> Line {
        let ta = tun_in(a, "slow0");
        let tb = tun_in(b, "slow0");
        for (ns, me, peer) in [(a, a_addr, b_addr), (b, b_addr, a_addr)] {
            ip(&["-n", ns, "addr", "add", me, "peer", peer, "dev", "slow0"]);
            ip(&[
                "-n",
                ns,
                "link",
                "set",
                "slow0",
                "mtu",
                &MTU.to_string(),
                "up",
            ]);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (ta2, tb2) = (ta.try_clone().unwrap(), tb.try_clone().unwrap());
        let mut threads = Vec::new();
        threads.extend(direction(ta, tb2, one_way, &stop));
        threads.extend(direction(tb, ta2, one_way, &stop));
        Line { stop, threads }
    }
}

/// Two threads carrying packets from `from` to `to`, each `delay` late:
/// one reads and stamps them, the other writes each when it is due.
fn direction(
    mut from: File,
    mut to: File,
    delay: Duration,
    stop: &Arc<AtomicBool>,
) -> [JoinHandle<()>; 2] {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let s = stop.clone();
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while !s.load(Ordering::Relaxed) {
            let mut pfd = libc::pollfd {
                fd: from.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd, ours.
            if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
                continue;
            }
            match from.read(&mut buf) {
                Ok(n) if n > 0 => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
                _ => return,
            }
        }
    });
    let s = stop.clone();
    let writer = thread::spawn(move || {
        let mut due: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
        while !s.load(Ordering::Relaxed) {
            if due.is_empty() {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(p) => due.push_back(p),
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(_) => return,
                }
            }
            due.extend(rx.try_iter());
            let (at, _) = due.front().expect("one at least");
            let now = Instant::now();
            if *at > now {
                thread::sleep(*at - now);
            }
            let (_, p) = due.pop_front().expect("one at least");
            // A packet the kernel refuses (the interface going down at
            // the end) is lost, as on a wire.
            let _ = to.write(&p);
        }
    });
    [reader, writer]
}

impl Drop for Line {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// How many bytes a second one TCP connection carries over a line:
/// `bytes` written from namespace `a` to a listener at `b_addr` in
/// namespace `b` (threads entering them), timed from connect to the
/// last byte read.
pub fn copy_rate(a: &str, b: &str, b_addr: &str, bytes: usize) -> f64 {
    let enter = |ns: &str| {
        let f = File::open(format!("/var/run/netns/{ns}")).unwrap();
        // SAFETY: moves only the calling thread.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
    };
    let (b, b_addr, a) = (b.to_owned(), b_addr.to_owned(), a.to_owned());
    let port = Arc::new(Mutex::new(None));
    let p2 = port.clone();
    let (ready_tx, ready_rx) = mpsc::channel();
    let server = thread::spawn(move || {
        enter(&b);
        let l = std::net::TcpListener::bind((b_addr.as_str(), 0)).unwrap();
        *p2.lock().unwrap() = Some(l.local_addr().unwrap());
        ready_tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while got < bytes {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        Instant::now()
    });
    ready_rx.recv().unwrap();
    let addr = port.lock().unwrap().unwrap();
    let client = thread::spawn(move || {
        enter(&a);
        let start = Instant::now();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let chunk = vec![7u8; 1 << 16];
        let mut sent = 0;
        while sent < bytes {
            let n = chunk.len().min(bytes - sent);
            s.write_all(&chunk[..n]).unwrap();
            sent += n;
        }
        start
    });
    let start = client.join().unwrap();
    let end = server.join().unwrap();
    bytes as f64 / (end - start).as_secs_f64()
}
