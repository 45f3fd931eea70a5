//! The event loop: one thread, one `mio::Poll` over the listener, every
//! peer socket, stdin and the signal pipe.
//!
//! It owns the sockets and their buffers and turns readiness into inputs
//! for the protocol core, and the core's actions into I/O. Writes never
//! block: each link has an outbound queue flushed when the socket is
//! writable; a link whose queue passes [`MAX_QUEUE`], or that stops taking
//! bytes while its queue is above [`HIGH_WATER`], is dropped, never the
//! whole program. Timers are the core's deadlines: the loop sleeps in
//! `poll` until the nearest one, and wakes for nothing else.

use crate::cli::Opts;
use crate::command::{self, Input};
use crate::discover::Lan;
use crate::files_io::Disk;
use crate::identity;
use crate::irc::{self, Gateway};
use crate::net::{self, Conn, HIGH_WATER, MAX_QUEUE, STALL};
use crate::node::{self, Action, Command, LinkId, Millis, Node, Show};
use crate::peers::PeerList;
use crate::proto::crypto::{self, Identity};
use crate::proto::wire;
use crate::signal::SignalPipe;
use crate::store;
use crate::term::editor::Outcome;
use crate::term::ui::Ui;
use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use socket2::SockRef;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
const STDIN: Token = Token(1);
const SIGNAL: Token = Token(2);
const STDOUT: Token = Token(3);
/// LAN discovery's sockets (IPv4, IPv6).
const LAN: [Token; 2] = [Token(12), Token(13)];
/// Link `n` is registered as `Token(n + FIRST_LINK)`.
const FIRST_LINK: usize = 16;

/// Connections at most, accepted and dialled; more are closed at once.
pub const MAX_CONNS: usize = 512;
/// After leaving, how long we wait for the last frames to get out.
const LINGER: Millis = 1_500;
/// Bytes read from a socket or stdin per call (a file's data comes in
/// frames of 64 KiB: several whole ones at a time).
const CHUNK: usize = 256 << 10;
/// Longest input line read from a pipe or file; the rest of it is dropped
/// (and the user told). Lines longer than a message are sent as several.
const MAX_PIPED_LINE: usize = 64 << 10;
/// Bytes read from one link per turn of the loop, so that one busy link
/// cannot starve the others.
const READ_BUDGET: usize = 256 << 10;
/// A file chunk goes on a link only while less than this is queued on it.
const FILE_ROOM: usize = 64 << 10;
/// How long a lone ESC waits for the rest of an escape sequence.
const ESC_WAIT: Millis = 50;
/// How stdin is read.
#[derive(PartialEq, Eq)]
enum Stdin {
    /// Registered with the poll (a pipe, terminal or socket).
    Polled,
    /// A regular file or /dev/null: always readable, epoll refuses it.
    File,
    /// `--no-input`, or end of input reached.
    Off,
}

/// What the files and the environment say about who we are.
struct Keys {
    seed: [u8; 32],
    secret: Option<Vec<u8>>,
    known: Vec<(String, crypto::PublicKey)>,
}

impl Keys {
    fn load(opts: &Opts) -> Result<Keys, String> {
        let path = match &opts.identity {
            Some(p) => p.clone(),
            None => identity::default_path()
                .ok_or("no home directory for the identity key: use --identity FILE")?,
        };
        let seed = identity::load_or_create(&path)?;
        let secret = identity::secret(
            std::env::var_os("P2PCHAT_SECRET"),
            opts.secret_file.as_deref(),
        )?;
        if opts.secure_only && secret.is_none() {
            return Err(
                "--secure-only: no network secret (set P2PCHAT_SECRET or --secret-file)".into(),
            );
        }
        let known = identity::known_path().map_or_else(Vec::new, |p| identity::load_known(&p));
        Ok(Keys {
            seed,
            secret,
            known,
        })
    }
}

/// Runs a peer until it leaves; returns the exit status.
pub fn run(opts: Opts, ui: &mut Ui) -> Result<i32, String> {
    let mut ev = Loop::new(&opts, ui)?;
    ev.run(ui)
}

struct Loop {
    poll: Poll,
    listener: Option<TcpListener>,
    sig: SignalPipe,
    core: Node,
    conns: PeerList<LinkId, Conn>,
    start: Instant,
    stdin: Stdin,
    /// Stdin has data we have not read yet (edge-triggered readiness).
    stdin_ready: bool,
    /// The line editor runs on the terminal: keys are read at once, even
    /// before we are in the network (so none reach the shell).
    editing: bool,
    /// A typed line not yet ended by a newline.
    partial: Vec<u8>,
    /// The line being read is longer than `MAX_PIPED_LINE` bytes: the rest of it
    /// is dropped.
    overlong: bool,
    /// Set when we leave: exit with this once the links are closed.
    exit: Option<i32>,
    /// Accept again at this time, after running out of descriptors.
    accept_retry: Option<Millis>,
    /// A lone ESC typed: take it as the Escape key if nothing follows by then.
    esc_at: Option<Millis>,
    /// Puts stdin's file status flags back as they were.
    stdin_flags: StdinFlags,
    /// Where reads land first.
    scratch: Box<[u8]>,
    /// Links with bytes left to read after their share of a turn.
    unread: Vec<LinkId>,
    /// Which address families the listener accepts: (IPv4, IPv6).
    families: (bool, bool),
    /// A link of a family we do not listen on has been warned about.
    warned_family: bool,
    /// Where private messages are kept across restarts (see [`store`]).
    store: Option<PathBuf>,
    /// When the store was last written: it is written at most every
    /// [`SAVE_EVERY`] (a sync to disk takes milliseconds on a busy disk,
    /// and blocks the loop).
    saved_at: Option<Millis>,
    /// File reads and writes of transfers, in bounded steps.
    disk: Disk,
    /// The IRC gateway (`--irc`), another front end.
    irc: Option<Gateway>,
    /// The IRC client whose command is being carried out.
    irc_origin: Option<usize>,
    /// LAN discovery (`--discover`).
    lan: Option<Lan>,
}

/// The private message store is written at most this often.
const SAVE_EVERY: Millis = 1_000;

/// stdin is made non-blocking for the poll; the file description is
/// shared with the shell, so its flags are put back on the way out.
struct StdinFlags(Option<libc::c_int>);

impl StdinFlags {
    fn set_nonblocking() -> StdinFlags {
        let flags = unsafe { libc::fcntl(0, libc::F_GETFL) };
        if flags < 0 || flags & libc::O_NONBLOCK != 0 {
            return StdinFlags(None);
        }
        unsafe { libc::fcntl(0, libc::F_SETFL, flags | libc::O_NONBLOCK) };
        StdinFlags(Some(flags))
    }
}

impl StdinFlags {
    /// Puts the original flags back (before stopping).
    fn restore(&self) {
        if let Some(f) = self.0 {
            unsafe { libc::fcntl(0, libc::F_SETFL, f) };
        }
    }

    /// Non-blocking again (after continuing).
    fn reapply(&self) {
        if let Some(f) = self.0 {
            unsafe { libc::fcntl(0, libc::F_SETFL, f | libc::O_NONBLOCK) };
        }
    }
}

impl Drop for StdinFlags {
    fn drop(&mut self) {
        self.restore();
    }
}

impl Loop {
    fn new(opts: &Opts, ui: &mut Ui) -> Result<Loop, String> {
        let keys = Keys::load(opts)?;
        let poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
        let mut listener = net::listen(opts.bind, opts.port).map_err(|e| match opts.bind {
            Some(ip) => format!("listen on {}: {e}", SocketAddr::new(ip, opts.port)),
            None => format!("listen on port {}: {e}", opts.port),
        })?;
        let local = listener.local_addr().map_err(|e| format!("listen: {e}"))?;
        let port = local.port();
        let families = match local.ip() {
            IpAddr::V4(_) => (true, false),
            // An unspecified IPv6 listener is dual-stack (see listen()).
            IpAddr::V6(ip) => (ip.is_unspecified(), true),
        };
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| format!("poll: {e}"))?;

        let mut signals = vec![libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1];
        if ui.term.is_some() {
            signals.push(libc::SIGWINCH);
        }
        // A stopped peer must not leave the terminal it shares with the
        // shell non-blocking: stop and continue are handled, when stdin
        // is one.
        if !opts.no_input && unsafe { libc::isatty(0) } == 1 {
            signals.extend([libc::SIGTSTP, libc::SIGCONT]);
        }
        let sig = SignalPipe::install(&signals).map_err(|e| format!("signals: {e}"))?;
        poll.registry()
            .register(&mut SourceFd(&sig.fd), SIGNAL, Interest::READABLE)
            .map_err(|e| format!("poll: {e}"))?;

        let stdin = if opts.no_input {
            Stdin::Off
        } else {
            match poll
                .registry()
                .register(&mut SourceFd(&0), STDIN, Interest::READABLE)
            {
                Ok(()) => Stdin::Polled,
                // epoll refuses regular files (and /dev/null): they are
                // always readable, so read them without asking.
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => Stdin::File,
                Err(e) => return Err(format!("stdin: {e}")),
            }
        };

        if ui.out().is_some_and(|o| o.pollable()) {
            // Without it, a stdout that would block is tried again on the
            // next event instead.
            let _ = poll
                .registry()
                .register(&mut SourceFd(&1), STDOUT, Interest::WRITABLE);
        }
        let stdin_flags = if stdin == Stdin::Polled {
            StdinFlags::set_nonblocking()
        } else {
            StdinFlags(None)
        };
        let cfg = node::Config {
            degree: opts.degree,
            max_degree: opts.max_degree,
            psk: keys.secret.as_deref().map(crypto::psk),
            download_dir: opts.download_dir.clone(),
            max_file: opts.max_file,
            flood: opts.flood,
            show_own: ui.shows_own() || opts.irc.is_some(),
            ..Default::default()
        };
        let ident = Identity::new(keys.seed, random_u64());
        let mut core = Node::new(cfg, ident, &opts.name, port, random_u64());
        for (name, key) in &keys.known {
            core.know(name, *key);
        }
        if keys.secret.is_none() {
            ui.diagnostic("this network is not encrypted (no network secret: see P2PCHAT_SECRET)");
        }
        let store = store::path(&opts.name);
        if let Some(p) = &store {
            restore_private(&mut core, p, ui);
            core.keep_private_store();
        }
        ui.listening(port, crate::iface::local_addrs(local.ip()));
        let lan = match &opts.discover {
            None => None,
            Some(settings) => {
                core.enable_discovery();
                let (registry, seed) = (poll.registry(), random_u64());
                let lan = Lan::start(
                    settings,
                    keys.secret.as_deref(),
                    core.id(),
                    port,
                    opts.bind,
                    families,
                    registry,
                    LAN,
                    seed,
                    0,
                )?;
                Some(lan)
            }
        };
        let irc = match &opts.irc {
            Some(o) => Some(start_irc(&poll, o, ui)?),
            None => None,
        };
        let start = Instant::now();
        if !opts.join.is_empty() {
            let mut labels = Vec::new();
            let mut addrs: Vec<SocketAddr> = Vec::new();
            let mut failed = None;
            for (host, p) in &opts.join {
                labels.push(if host.contains(':') {
                    format!("[{host}]:{p}")
                } else {
                    format!("{host}:{p}")
                });
                match (host.as_str(), *p).to_socket_addrs() {
                    Ok(a) => addrs.extend(a),
                    Err(e) => failed = Some(format!("cannot resolve {host}: {e}")),
                }
            }
            // One unresolvable peer of several is not fatal: the others
            // are tried.
            if let (true, Some(e)) = (addrs.is_empty(), failed) {
                return Err(e);
            }
            core.join(addrs, &labels.join(", "), 0);
        }
        Ok(Loop {
            poll,
            listener: Some(listener),
            sig,
            core,
            conns: PeerList::new(),
            start,
            stdin_ready: stdin == Stdin::File,
            editing: ui.term.is_some(),
            stdin,
            partial: Vec::new(),
            overlong: false,
            exit: None,
            accept_retry: None,
            esc_at: None,
            stdin_flags,
            scratch: vec![0; CHUNK].into_boxed_slice(),
            unread: Vec::new(),
            families,
            warned_family: false,
            store,
            saved_at: None,
            disk: Disk::new(),
            irc,
            irc_origin: None,
            lan,
        })
    }

    fn now(&self) -> Millis {
        self.start.elapsed().as_millis() as Millis
    }

    fn run(&mut self, ui: &mut Ui) -> Result<i32, String> {
        let mut events = Events::with_capacity(256);
        self.apply(ui);
        loop {
            if let Some(code) = self.exit
                && self.conns.is_empty()
            {
                // The last lines reach a reader that is slow, not one
                // that is gone.
                if let Err(e) = ui.finish()
                    && e.kind() != io::ErrorKind::BrokenPipe
                {
                    eprintln!("p2pchat: stdout: {e}");
                }
                return Ok(code);
            }
            self.save_shown(ui);
            // Everything shown so far goes out before we sleep.
            if let Err(e) = ui.flush() {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    return Err(format!("stdout: {e}"));
                }
                // Nobody reads us any more: leave quietly.
                if self.exit.is_none() {
                    self.core.command(Command::Quit, self.now());
                    self.apply(ui);
                }
            }
            // After the frames and the lines went out: a sync to disk
            // must not hold them up.
            self.save_private(ui, false);
            let timeout = self.timeout();
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("poll: {e}")),
            }
            let now = self.now();
            // What is said this turn is said at this wall-clock time.
            self.core.clock(wall_ms());
            for e in events.iter() {
                match e.token() {
                    LISTENER => self.accept(now),
                    SIGNAL => self.signals(ui, now),
                    STDIN => self.stdin_ready = true,
                    STDOUT => {} // flushed at the top of the loop
                    t if Gateway::owns(t) => self.irc_event(ui, Some(t), now),
                    t if LAN.contains(&t) => {
                        if let Some(lan) = &mut self.lan {
                            lan.readable(&self.core, now);
                        }
                    }
                    Token(t) => {
                        // Nothing more to come after this event's bytes
                        // but a new event: see `read`.
                        let edge = !(e.is_read_closed() || e.is_error());
                        self.conn_event(ui, LinkId((t - FIRST_LINK) as u64), edge, now)
                    }
                }
                self.apply(ui);
            }
            // Links that had more to read than one turn's share.
            for link in std::mem::take(&mut self.unread) {
                self.conn_event(ui, link, false, now);
                self.apply(ui);
            }
            if self.irc.as_ref().is_some_and(Gateway::pending) {
                self.irc_event(ui, None, now);
            }
            if self.wants_stdin() {
                self.read_stdin(ui, now);
            }
            if self.esc_at.is_some_and(|t| now >= t) {
                self.esc_at = None;
                if let Some(t) = &mut ui.term {
                    let outcomes = t.screen.flush_pending_input().unwrap_or_default();
                    self.keys(ui, outcomes, now);
                }
            }
            if self.accept_retry.is_some_and(|t| now >= t) {
                self.accept_retry = None;
                self.accept(now);
            }
            if self.core.deadline().is_some_and(|t| now >= t) {
                self.core.tick(now);
            }
            self.files(ui, now);
            self.path_rtts();
            if let Some(g) = &mut self.irc
                && g.deadline().is_some_and(|t| now >= t)
            {
                g.tick(self.poll.registry(), now);
            }
            if let Some(lan) = &mut self.lan {
                lan.turn(&mut self.core, now);
            }
            // Dropping a link in housekeeping gives the core more to do:
            // do it now, not after the next sleep.
            loop {
                self.apply(ui);
                self.housekeeping(now);
                if !self.core.has_actions() {
                    break;
                }
            }
            if let Some(g) = &mut self.irc {
                for n in g.take_notes() {
                    ui.diagnostic(&n);
                }
            }
        }
    }

    /// How long poll may sleep: until the nearest deadline.
    fn timeout(&self) -> Option<Duration> {
        let now = self.now();
        let mut t = self.core.deadline();
        let mut min = |x: Millis| t = Some(t.map_or(x, |t| t.min(x)));
        if let Some(a) = self.accept_retry {
            min(a);
        }
        if let Some(a) = self.esc_at {
            min(a);
        }
        if let Some(a) = self.irc.as_ref().and_then(Gateway::deadline) {
            min(a.max(now));
        }
        if let Some(a) = self.lan.as_ref().and_then(|l| l.deadline(now)) {
            min(a);
        }
        if !self.unread.is_empty() || self.disk.busy(|l| self.file_room(l)) {
            min(now);
        }
        for (_, c) in self.conns.iter() {
            if c.queued() > HIGH_WATER {
                min(c.progress + STALL);
            }
            if let Some(until) = c.closing {
                min(until);
            }
            if let Some(w) = c.watch.filter(|_| c.closing.is_none()) {
                min(w);
            }
        }
        if self.wants_stdin() {
            min(now);
        }
        if let Some(s) = self.save_due() {
            min(s);
        }
        t.map(|t| Duration::from_millis(t.saturating_sub(now)))
    }

    /// Whether to read stdin now: there is input, we are in the network
    /// (lines from a pipe wait until then) or the line editor runs, and
    /// the links are not all backed up.
    fn wants_stdin(&self) -> bool {
        self.stdin_ready
            && self.exit.is_none()
            && (self.editing || self.core.is_member())
            && !self.backlogged()
    }

    /// Whether every link has so much queued that we should stop reading
    /// stdin for now. One slow peer does not hold the others up: its queue
    /// grows until it is dropped.
    fn backlogged(&self) -> bool {
        self.conns
            .iter()
            .filter(|&(link, c)| c.closing.is_none() && self.core.is_established(link))
            .map(|(_, c)| c.queued())
            .min()
            .is_some_and(|q| q > HIGH_WATER)
    }

    fn accept(&mut self, now: Millis) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((mut stream, addr)) => {
                    if self.conns.len() >= MAX_CONNS || self.exit.is_some() {
                        continue; // dropped: closed at once
                    }
                    // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d:
                    // they are known, shown and dialled by their IPv4 address.
                    let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
                    let link = self.core.accepted(addr, now);
                    net::tune(&SockRef::from(&stream));
                    let token = Token(link.0 as usize + FIRST_LINK);
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        self.core.link_down(link, "poll", now);
                        continue;
                    }
                    self.conns.push(link, Conn::new(stream, false, now));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: the connection waits in the
                    // backlog; try again shortly instead of spinning.
                    if e.raw_os_error() != Some(libc::ECONNABORTED) {
                        self.accept_retry = Some(now + 100);
                        break;
                    }
                }
            }
        }
    }

    fn signals(&mut self, ui: &mut Ui, now: Millis) {
        for sig in self.sig.drain() {
            match sig {
                libc::SIGINT | libc::SIGTERM | libc::SIGHUP if self.exit.is_none() => {
                    self.core.command(Command::Quit, now);
                }
                libc::SIGWINCH => {
                    if let Some(t) = &mut ui.term {
                        let _ = t.screen.resize();
                    }
                }
                // As dd does: what went through so far, on stderr.
                libc::SIGUSR1 => {
                    ui.show(&Show::Warning(self.core.traffic()));
                    ui.show(&Show::Warning(self.core.tree()));
                }
                libc::SIGTSTP => {
                    self.stdin_flags.restore();
                    suspend(ui);
                }
                libc::SIGCONT => {
                    self.stdin_flags.reapply();
                    if let Some(o) = ui.out() {
                        o.reapply();
                    }
                    if let Some(t) = &mut ui.term {
                        let _ = t.screen.resume();
                        t.screen.paste_mode(true);
                    }
                }
                _ => {}
            }
        }
    }

    fn read_stdin(&mut self, ui: &mut Ui, now: Millis) {
        let buf = &mut self.scratch;
        let n = match io::stdin().lock().read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.stdin_ready = false;
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(e) => {
                ui.error(&format!("stdin: {e}"));
                0
            }
        };
        if n == 0 {
            // End of input: whatever was typed without a newline still
            // counts, then we leave.
            let rest = std::mem::take(&mut self.partial);
            if !rest.is_empty() {
                self.typed(ui, &String::from_utf8_lossy(&rest), now);
            }
            if self.stdin == Stdin::Polled {
                let _ = self.poll.registry().deregister(&mut SourceFd(&0));
            }
            self.stdin = Stdin::Off;
            self.stdin_ready = false;
            self.core.command(Command::Quit, now);
            return;
        }
        // Lent out while its lines are carried out (nothing else reads
        // into it meanwhile): no copy per read.
        let scratch = std::mem::take(&mut self.scratch);
        self.stdin_bytes(ui, &scratch[..n], now);
        self.scratch = scratch;
    }

    /// Bytes read from stdin: keys for the line editor, or lines.
    fn stdin_bytes(&mut self, ui: &mut Ui, bytes: &[u8], now: Millis) {
        if let Some(t) = &mut ui.term {
            if bytes.contains(&b'\t') {
                t.screen.editor_mut().set_names(self.core.member_names());
            }
            let outcomes = t.screen.feed(bytes).unwrap_or_default();
            self.esc_at = t.screen.has_pending_input().then_some(now + ESC_WAIT);
            return self.keys(ui, outcomes, now);
        }
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' {
                self.take_line(&bytes[start..i]);
                start = i + 1;
                let l = std::mem::take(&mut self.partial);
                if std::mem::take(&mut self.overlong) {
                    ui.error(&format!(
                        "line too long: only its first {MAX_PIPED_LINE} bytes are sent"
                    ));
                }
                let line = String::from_utf8_lossy(&l);
                if ui.json_input() {
                    let input = command::parse_json(&line);
                    self.input(ui, input, now);
                } else {
                    self.typed(ui, &line, now);
                }
                // The next line reuses the buffer.
                drop(line);
                if self.partial.is_empty() {
                    self.partial = l;
                    self.partial.clear();
                }
            }
        }
        self.take_line(&bytes[start..]);
    }

    /// Adds bytes to the line being read, up to `MAX_PIPED_LINE`.
    fn take_line(&mut self, bytes: &[u8]) {
        let room = MAX_PIPED_LINE.saturating_sub(self.partial.len());
        if bytes.len() > room {
            self.overlong = true;
        }
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// What the line editor made of the keys typed.
    fn keys(&mut self, ui: &mut Ui, outcomes: Vec<Outcome>, now: Millis) {
        for o in outcomes {
            if self.exit.is_some() {
                break;
            }
            match o {
                Outcome::Submit(line) => self.typed(ui, &line, now),
                Outcome::SubmitText(lines) => {
                    for l in lines {
                        self.input(ui, command::text(&l), now);
                    }
                }
                Outcome::Quit => self.core.command(Command::Quit, now),
                Outcome::Suspend => suspend(ui),
                _ => {}
            }
        }
        if let Some(t) = &mut ui.term {
            t.save_history();
        }
    }

    /// One line typed by the user.
    fn typed(&mut self, ui: &mut Ui, line: &str, now: Millis) {
        self.input(ui, command::parse(line), now);
    }

    /// Carries out a line's request at once, so a burst of lines never
    /// piles up in the core. Text longer than a message goes as several.
    fn input(&mut self, ui: &mut Ui, input: Input, now: Millis) {
        match input {
            Input::Node(Command::Say(_)) if !self.core.is_member() => {
                ui.error("not in the network yet: nothing was sent (Up recalls the line)");
            }
            // One message, the common case: the line itself, not a copy.
            Input::Node(Command::Say(text)) if text.len() <= wire::MAX_TEXT => {
                self.core.command(Command::Say(text), now);
            }
            Input::Node(Command::Say(text)) => {
                for part in command::split_text(&text, wire::MAX_TEXT) {
                    self.core.command(Command::Say(part.to_owned()), now);
                    self.apply(ui);
                }
            }
            Input::Node(c) => self.core.command(c, now),
            Input::Help => ui.help(),
            Input::Nothing => {}
            Input::Error(e) => ui.error(&e),
        }
        self.apply(ui);
    }

    fn conn_event(&mut self, ui: &mut Ui, link: LinkId, edge: bool, now: Millis) {
        let Some(c) = self.conns.get_mut(link) else {
            return;
        };
        if c.connecting {
            if let Ok(Some(e)) | Err(e) = c.stream.take_error() {
                if e.kind() == io::ErrorKind::ConnectionRefused {
                    // A peer gone, not a network down: see Node::dial_refused.
                    self.core.dial_refused(link);
                }
                return self.lost(link, &e.to_string(), now);
            }
            match c.stream.peer_addr() {
                Ok(_) => {
                    c.connecting = false;
                    let local = c.stream.local_addr().ok();
                    self.check_family(ui, local);
                    self.core.connected(link, now);
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.lost(link, &e.to_string(), now),
            }
        }
        if let Err(e) = self.read(ui, link, edge, now) {
            return self.lost(link, &e, now);
        }
        if let Some(c) = self.conns.get_mut(link)
            && let Err(e) = c.flush(now)
        {
            self.lost(link, &e.to_string(), now);
        }
    }

    /// Reads what the socket has and hands whole frames to the core.
    ///
    /// With `edge` (a readiness event that reported no close or error), a
    /// read that does not fill the buffer took all there was: what comes
    /// after it raises a new event (epoll is edge-triggered), so the read
    /// that would only say `WouldBlock` is not made, one system call less
    /// per link and wake-up. A close that came with the bytes was in the
    /// event (`edge` is false then), and one that comes later is an event
    /// of its own.
    fn read(&mut self, ui: &mut Ui, link: LinkId, edge: bool, now: Millis) -> Result<(), String> {
        let mut budget = READ_BUDGET;
        loop {
            let Some(c) = self.conns.get_mut(link) else {
                return Ok(());
            };
            if budget == 0 {
                // Fairness: the rest waits for the next turn of the loop.
                self.unread.push(link);
                return Ok(());
            }
            let n = match c.stream.read(&mut self.scratch) {
                Ok(0) => return Err("closed by peer".into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.drained(ui, link, now);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.to_string()),
            };
            budget = budget.saturating_sub(n);
            // Closing or not, what arrives goes to the core: events sent
            // before the close still count.
            // Whole frames go to the core straight from the scratch buffer;
            // only a partial frame is kept, in the link's own buffer.
            let mut rbuf = std::mem::take(&mut c.rbuf);
            let scratch = std::mem::take(&mut self.scratch);
            let mut fresh = &scratch[..n];
            // A frame begun in an earlier read is completed first, with
            // only the bytes it lacks: the rest is not copied.
            let mut res = Ok(());
            while !rbuf.is_empty() {
                match wire::frame_len(&rbuf) {
                    Ok(Some(len)) => {
                        self.core.frame(link, &rbuf[4..len], now);
                        self.apply(ui);
                        rbuf.clear();
                    }
                    Ok(None) if fresh.is_empty() => break,
                    Ok(None) => {
                        let want = match rbuf.get(..4) {
                            Some(h) => 4 + u32::from_be_bytes(h.try_into().expect("4")) as usize,
                            None => 4,
                        };
                        let take = (want - rbuf.len()).min(fresh.len());
                        rbuf.extend_from_slice(&fresh[..take]);
                        fresh = &fresh[take..];
                    }
                    Err(e) => {
                        res = Err(self.bad_frame(link, e));
                        break;
                    }
                }
            }
            if res.is_ok() && rbuf.is_empty() {
                let mut pos = 0;
                res = loop {
                    match wire::frame_len(&fresh[pos..]) {
                        Ok(Some(len)) => {
                            self.core.frame(link, &fresh[pos + 4..pos + len], now);
                            pos += len;
                            // Act on each frame at once: what one frame asks
                            // for is bounded, what a whole read asks for is not.
                            self.apply(ui);
                        }
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(self.bad_frame(link, e)),
                    }
                };
                rbuf.extend_from_slice(&fresh[pos..]);
            }
            if res.is_err() {
                rbuf = Vec::new();
            }
            let drained = edge && n < scratch.len();
            self.scratch = scratch;
            if let Some(c) = self.conns.get_mut(link) {
                c.rbuf = rbuf;
            }
            res?;
            // What this read showed goes out before the next read: a line
            // waits behind the bytes that came before it on its link, not
            // behind the rest of the turn (a file on the same link is up
            // to READ_BUDGET more of reading, writing and hashing). An
            // error is left for the flush at the top of the loop.
            let _ = ui.flush();
            if drained {
                self.drained(ui, link, now);
                return Ok(());
            }
        }
    }

    /// All there was on `link` is read: a file's sender may be waiting
    /// for what we acknowledge then.
    fn drained(&mut self, ui: &mut Ui, link: LinkId, now: Millis) {
        self.core.drained(link, now);
        self.apply(ui);
    }

    /// Why a link that sent bytes that are no frame is closed. Before
    /// HELLO, bytes that are no frame are another program (an SSH or web
    /// server): say so.
    fn bad_frame(&self, link: LinkId, e: wire::WireError) -> String {
        if self.core.is_established(link) {
            format!("bad frame: {e}")
        } else {
            format!("not a p2pchat peer (bad frame: {e})")
        }
    }

    /// The link is gone on our side: tell the core, forget the socket.
    fn lost(&mut self, link: LinkId, why: &str, now: Millis) {
        if let Some(mut c) = self.conns.remove(link) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.core.link_down(link, why, now);
        }
    }

    /// Carries out what the core asked for, until it asks for nothing.
    fn apply(&mut self, ui: &mut Ui) {
        // Read the clock only for an action that needs it: most are
        // frames to queue and lines to show, one per event.
        let start = self.start;
        let now = || start.elapsed().as_millis() as Millis;
        while let Some(a) = self.core.next_action() {
            match a {
                Action::Send(link, frame) => {
                    if let Some(c) = self.conns.get_mut(link) {
                        if c.queued() + frame.len() > MAX_QUEUE {
                            c.overflow = true;
                        } else {
                            c.wbuf.extend_from_slice(&frame);
                        }
                    }
                }
                Action::Connect(link, addr) => self.connect(link, addr, now()),
                Action::Close(link) => {
                    if let Some(c) = self.conns.get_mut(link) {
                        c.closing.get_or_insert(now() + LINGER);
                    }
                }
                Action::Show(s) => {
                    ui.show(&s);
                    if let Some(g) = &mut self.irc {
                        g.show(&self.core, &s, self.irc_origin);
                    }
                }
                Action::File(io) => self.disk.io(io),
                Action::Trust { name, key, replace } => {
                    let r = identity::known_path()
                        .map(|p| identity::remember(&p, &name, &key, replace));
                    if let Some(Err(e)) = r {
                        ui.error(&format!("known_peers: {e}"));
                    }
                }
                Action::Stop(stop) => {
                    self.save_private(ui, true);
                    if let Some(m) = stop.message() {
                        ui.error(m);
                    }
                    if let Some(g) = &mut self.irc {
                        let why = stop.message().unwrap_or("the peer left the network");
                        g.stop(self.poll.registry(), why, now());
                    }
                    if self.exit.is_none() {
                        self.exit = Some(stop.status());
                        if let Some(mut l) = self.listener.take() {
                            let _ = self.poll.registry().deregister(&mut l);
                        }
                        let now = now();
                        for (_, c) in self.conns.iter_mut() {
                            c.closing.get_or_insert(now + LINGER);
                        }
                    }
                }
            }
        }
    }

    /// When the private message store is due to be written, if it has
    /// changed.
    fn save_due(&self) -> Option<Millis> {
        (self.store.is_some() && self.core.private_unsaved())
            .then(|| self.saved_at.map_or(0, |t| t + SAVE_EVERY))
    }

    /// Writes the private message store if it changed and is due (or
    /// `now`, on leaving).
    fn save_private(&mut self, ui: &mut Ui, now: bool) {
        let due = self.save_due();
        if !now && due.is_none_or(|t| self.now() < t) {
            return;
        }
        if let (Some(p), Some(bytes)) = (&self.store, self.core.private_store()) {
            self.saved_at = Some(self.now());
            if let Err(e) = store::write(p, &bytes) {
                ui.error(&format!("{}: {e}", p.display()));
            }
        }
    }

    /// Writes the private message store now if private messages to us
    /// wait to be recorded as shown before they are shown (see
    /// [`crate::app::dm::Dm::set_durable`]); then shows them. A store
    /// that cannot be written is reported, and they are shown anyway.
    fn save_shown(&mut self, ui: &mut Ui) {
        if !self.core.private_urgent() {
            return;
        }
        if let (Some(p), Some(bytes)) = (&self.store, self.core.private_store()) {
            self.saved_at = Some(self.now());
            if let Err(e) = store::write(p, &bytes) {
                ui.error(&format!("{}: {e}", p.display()));
            }
        }
        self.core.private_saved();
        self.apply(ui);
    }

    /// One bounded step of the file transfers: hashing, reading a chunk
    /// for each link with room for it; what the disk did goes to the core.
    fn files(&mut self, ui: &mut Ui, now: Millis) {
        let conns = &self.conns;
        self.disk.step(|l| room(conns, l));
        while let Some(done) = self.disk.take_done() {
            self.core.disk_done(done, now);
            self.apply(ui);
        }
    }

    /// Tells the core the round trip of each link a transfer asked
    /// about: the kernel's measure of its path, read from the socket.
    fn path_rtts(&mut self) {
        while let Some(link) = self.core.rtt_wanted() {
            if let Some(us) = self.conns.get(link).and_then(Conn::path_rtt) {
                self.core.path_rtt(link, us);
            }
        }
    }

    /// Whether `link` can take another chunk of a file now.
    fn file_room(&self, link: LinkId) -> bool {
        room(&self.conns, link)
    }

    /// Warns, once, when a link we dialled runs over an address family we
    /// do not listen on: the address the others learn for us from it is
    /// one they cannot dial back.
    fn check_family(&mut self, ui: &mut Ui, local: Option<SocketAddr>) {
        let Some(local) = local else {
            return;
        };
        let (v4, v6) = self.families;
        let (ours, family, hint) = match local.ip().to_canonical() {
            IpAddr::V4(_) => (v4, "IPv4", "-b 0.0.0.0 or the default"),
            IpAddr::V6(_) => (v6, "IPv6", "-b :: or the default"),
        };
        if ours || self.warned_family {
            return;
        }
        self.warned_family = true;
        let listening = if v4 { "IPv4" } else { "IPv6" };
        ui.show(&Show::Warning(format!(
            "linked over {family} but listening on {listening} only: peers cannot dial \
             this one back at the address they see ({hint} listens on both)"
        )));
    }

    fn connect(&mut self, link: LinkId, addr: SocketAddr, now: Millis) {
        if self.conns.len() >= MAX_CONNS {
            return self.core.link_down(link, "too many connections", now);
        }
        // A punch goes from our listening port (Node::dial_port).
        let dialled = match self.core.dial_port(link) {
            Some(port) => net::dial_from(addr, port),
            None => net::dial(addr),
        };
        let mut stream = match dialled {
            Ok(s) => s,
            Err(e) => return self.core.link_down(link, &e.to_string(), now),
        };
        let token = Token(link.0 as usize + FIRST_LINK);
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.core.link_down(link, &e.to_string(), now);
        }
        self.conns.push(link, Conn::new(stream, true, now));
    }

    /// Readiness of a gateway socket (`None`: clients with more to read
    /// from an earlier turn): their commands are carried out as typed
    /// ones, each answered to the client that gave it.
    fn irc_event(&mut self, ui: &mut Ui, token: Option<Token>, now: Millis) {
        let Some(g) = &mut self.irc else {
            return;
        };
        let reg = self.poll.registry();
        let commands = match token {
            Some(t) => g.event(reg, t, &self.core, now),
            None => g.read_pending(reg, &self.core, now),
        };
        for (client, cmd) in commands {
            if self.exit.is_some() {
                break;
            }
            self.irc_origin = Some(client);
            self.input(ui, Input::Node(cmd), now);
            self.irc_origin = None;
        }
    }

    /// Flushes queues, closes what should close, drops stalled links.
    fn housekeeping(&mut self, now: Millis) {
        if let Some(g) = &mut self.irc {
            g.flush(self.poll.registry(), now);
        }
        for link in self.conns.keys() {
            let c = self.conns.get_mut(link).expect("listed");
            if let Err(e) = c.flush(now) {
                self.lost(link, &e.to_string(), now);
                continue;
            }
            let why = if c.overflow {
                Some("peer is not reading (queue full)")
            } else if c.queued() > HIGH_WATER && now >= c.progress + STALL {
                Some("peer stopped reading")
            } else if c.closing.is_none() && c.unanswered(now) {
                Some("its host stopped answering")
            } else {
                None
            };
            if let Some(why) = why.filter(|_| c.closing.is_none()) {
                // Nothing more goes out on it, but what it sent us before
                // is still read, until it closes too.
                c.wbuf.clear();
                c.wpos = 0;
                c.overflow = false;
                c.closing = Some(now + LINGER);
                self.core.drop_link(link, why, now);
            }
            let Some(until) = c.closing else {
                continue;
            };
            if c.queued() == 0 && !c.shut && !c.connecting {
                // Half-close and wait for the other side to close too, so
                // the last frames are read, not reset.
                let _ = c.stream.shutdown(std::net::Shutdown::Write);
                c.shut = true;
            }
            if now >= until || c.connecting {
                self.lost(link, "closed", now);
            }
        }
    }
}

/// Whether `link` has room for a chunk of a file: little queued, so a
/// chat line behind it waits little, and never near [`HIGH_WATER`].
fn room(conns: &PeerList<LinkId, Conn>, link: LinkId) -> bool {
    conns
        .get(link)
        .is_some_and(|c| c.closing.is_none() && c.queued() < FILE_ROOM)
}

/// Starts the IRC gateway on `addr`, with its password: required on an
/// address other than loopback.
fn start_irc(poll: &Poll, opts: &crate::cli::Irc, ui: &mut Ui) -> Result<Gateway, String> {
    let addr = opts.addr;
    let pass = match &opts.password_file {
        Some(f) => {
            let text = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
            let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
            Some(line.strip_suffix(b"\r").unwrap_or(line).to_vec())
        }
        None => std::env::var_os("P2PCHAT_IRC_PASSWORD").map(|v| {
            use std::os::unix::ffi::OsStrExt;
            v.as_bytes().to_vec()
        }),
    }
    .filter(|p| !p.is_empty());
    if pass.is_none() && !addr.ip().is_loopback() {
        return Err(format!(
            "--irc {addr} is not loopback: a password is required \
             (set P2PCHAT_IRC_PASSWORD or --irc-password-file)"
        ));
    }
    let mut g = Gateway::listen(addr, pass.as_deref().map(irc::Password::new))
        .map_err(|e| format!("irc: listen on {addr}: {e}"))?;
    g.register(poll.registry())
        .map_err(|e| format!("poll: {e}"))?;
    ui.irc_listening(g.addr());
    Ok(g)
}

/// Restores the terminal (and stdout's flags) and stops the process;
/// SIGCONT brings it back.
/// Takes back the private messages kept at `path`; a store that cannot
/// be read is set aside, and the user told.
fn restore_private(core: &mut Node, path: &Path, ui: &mut Ui) {
    let shown = path.display();
    let why = match store::read(path) {
        Ok(None) => return,
        Ok(Some((bytes, ago))) => match core.restore_private(&bytes, ago) {
            Ok((0, 0)) => return,
            Ok((mine, others)) => {
                ui.diagnostic(&format!(
                    "kept {mine} private message{} of yours not delivered yet, and {others} \
                     for absent members ({shown})",
                    if mine == 1 { "" } else { "s" }
                ));
                return;
            }
            Err(e) => e,
        },
        Err(e) => e,
    };
    match store::set_aside(path) {
        Ok(to) => ui.error(&format!(
            "{shown}: {why}: set aside as {}; its messages are lost",
            to.display()
        )),
        Err(e) => ui.error(&format!("{shown}: {why}; cannot set it aside: {e}")),
    }
}

fn suspend(ui: &mut Ui) {
    if let Some(o) = ui.out() {
        o.restore();
    }
    if let Some(t) = &mut ui.term {
        t.screen.paste_mode(false);
        let _ = t.screen.suspend();
    }
    unsafe { libc::kill(libc::getpid(), libc::SIGSTOP) };
}

/// 64 random bits from the kernel.
/// The wall clock, in ms since 1970 (UTC).
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    if n != 8 {
        // No getrandom(2): the clock and pid are unique enough for an id.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return (t ^ u64::from(std::process::id()) << 32).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    u64::from_ne_bytes(b)
}
