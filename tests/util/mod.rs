//! Test harness: real `p2pchat` processes on 127.0.0.1 (port 0), driven
//! through their stdin and read line by line through reader threads.
//!
//! Every wait has a deadline and fails with the peer's whole transcript;
//! no wait is a fixed sleep. Every process is killed (SIGKILL) and reaped
//! by its guard's `Drop`, also when a test panics.
//!
//! [`netns`] runs the same peers inside network namespaces.

#![allow(dead_code)]

pub mod delay;
pub mod frames;
pub mod netns;
pub mod procfs;
pub mod raw;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_p2pchat");

/// Deadline for any single expectation.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Which output stream of the child a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

enum Msg {
    /// A line, and when the reader thread read it.
    Line(Stream, String, Instant),
    Eof(Stream),
}

/// A running `p2pchat` process.
pub struct Peer {
    /// Chat name (or a label for runs without one), used in failure messages.
    pub name: String,
    /// The command line: a prefix (`ip netns exec NS`, or none), the
    /// binary, its arguments.
    args: Vec<String>,
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<Msg>,
    /// Lines not yet matched by an expectation, in arrival order.
    pending_out: VecDeque<String>,
    pending_err: VecDeque<String>,
    /// Everything read so far, and when each stdout line was read.
    out: Vec<String>,
    out_at: Vec<Instant>,
    err: Vec<String>,
    out_eof: bool,
    err_eof: bool,
    port: Option<u16>,
    status: Option<ExitStatus>,
    /// Its own config and state directories (identity key, known
    /// peers), unless the test gave it some.
    home: Option<Home>,
}

fn reader<R: Read + Send + 'static>(stream: Stream, r: R, tx: Sender<Msg>) {
    thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if buf.last() == Some(&b'\n') {
                        buf.pop();
                    }
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if tx.send(Msg::Line(stream, line, Instant::now())).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Msg::Eof(stream));
    });
}

impl Peer {
    /// Starts the binary with exactly `args`; stdout and stderr are piped
    /// into reader threads. `name` only labels failure messages.
    pub fn spawn<S: AsRef<str>>(name: &str, args: &[S], stdin: Stdio) -> Peer {
        Peer::spawn_full(name, &[] as &[&str], args, stdin, &[])
    }

    /// As `spawn`, with `env` added to the environment.
    pub fn spawn_env<S: AsRef<str>>(
        name: &str,
        args: &[S],
        stdin: Stdio,
        env: &[(&str, &str)],
    ) -> Peer {
        Peer::spawn_full(name, &[] as &[&str], args, stdin, env)
    }

    /// Like [`Peer::spawn`], with the binary run by the command `prefix`
    /// (such as `ip netns exec NS`), which must exec it: the process
    /// started, killed and reaped is the peer itself.
    pub fn spawn_with<P: AsRef<str>, S: AsRef<str>>(
        name: &str,
        prefix: &[P],
        args: &[S],
        stdin: Stdio,
    ) -> Peer {
        Peer::spawn_full(name, prefix, args, stdin, &[])
    }

    /// [`Peer::spawn_with`], with `env` added to the environment.
    pub fn spawn_full<P: AsRef<str>, S: AsRef<str>>(
        name: &str,
        prefix: &[P],
        args: &[S],
        stdin: Stdio,
        env: &[(&str, &str)],
    ) -> Peer {
        let mut cmd: Vec<String> = prefix.iter().map(|a| a.as_ref().to_string()).collect();
        cmd.push(BIN.to_string());
        cmd.extend(args.iter().map(|a| a.as_ref().to_string()));
        // Never the user's own identity, known peers or config.
        let given = |k: &str| env.iter().any(|(n, _)| *n == k);
        let home = (!given("XDG_CONFIG_HOME") || !given("XDG_STATE_HOME")).then(Home::new);
        let mut child = Command::new(&cmd[0])
            .args(&cmd[1..])
            .env_remove("NO_COLOR")
            .env_remove("P2PCHAT_SECRET")
            .env_remove("P2PCHAT_IRC_PASSWORD")
            .envs(home.iter().flat_map(Home::env))
            .envs(env.iter().copied())
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", cmd[0]));
        let (tx, rx) = mpsc::channel();
        reader(Stream::Out, child.stdout.take().unwrap(), tx.clone());
        reader(Stream::Err, child.stderr.take().unwrap(), tx);
        let stdin = child.stdin.take();
        // The transcript shows the arguments, and the prefix if any.
        let args = if prefix.is_empty() {
            cmd[1..].to_vec()
        } else {
            cmd
        };
        Peer {
            name: name.to_string(),
            args,
            child,
            stdin,
            rx,
            pending_out: VecDeque::new(),
            pending_err: VecDeque::new(),
            out: Vec::new(),
            out_at: Vec::new(),
            err: Vec::new(),
            out_eof: false,
            err_eof: false,
            port: None,
            status: None,
            home,
        }
    }

    /// Starts a peer named `name` on 127.0.0.1, port 0, with piped stdin,
    /// starting a new network (`via` None) or joining through
    /// 127.0.0.1:`via`. `--plain` is added unless `opts` has `--json`.
    /// Waits for the listening line (not for the joined line).
    pub fn launch(name: &str, opts: &[&str], via: Option<u16>, stdin: Stdio) -> Peer {
        Peer::launch_env(name, opts, via, stdin, &[])
    }

    /// [`Peer::launch`] with `env` added to the environment (such as a
    /// [`Home`] kept from an earlier run: the same identity).
    pub fn launch_env(
        name: &str,
        opts: &[&str],
        via: Option<u16>,
        stdin: Stdio,
        env: &[(&str, &str)],
    ) -> Peer {
        let mut args: Vec<String> = Vec::new();
        if !opts.contains(&"--json") && !opts.contains(&"--plain") {
            args.push("--plain".into());
        }
        args.extend(["-b".to_string(), "127.0.0.1".to_string()]);
        args.extend(opts.iter().map(|s| s.to_string()));
        args.push(name.to_string());
        if let Some(port) = via {
            args.extend(["127.0.0.1".to_string(), port.to_string()]);
        }
        let mut p = Peer::spawn_env(name, &args, stdin, env);
        p.wait_listening();
        p
    }

    /// Takes this peer's identity and state away from it, to start it
    /// again later as the same user ([`Peer::launch_env`]).
    pub fn keep_home(&mut self) -> Home {
        self.home.take().expect("a peer with its own home")
    }

    /// A new network of one.
    pub fn start(name: &str) -> Peer {
        Peer::launch(name, &[], None, Stdio::piped())
    }

    /// Joins through 127.0.0.1:`via` and waits for the joined line with
    /// `members` members.
    pub fn join(name: &str, via: u16, members: usize) -> Peer {
        let mut p = Peer::launch(name, &[], Some(via), Stdio::piped());
        p.expect_joined(via, members);
        p
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The listening port, from the first line of stdout.
    pub fn port(&self) -> u16 {
        self.port
            .expect("port not known: no listening line read yet")
    }

    /// Reads the first stdout line, which must be `listening on port N`
    /// (or its JSON form), and records N.
    pub fn wait_listening(&mut self) -> u16 {
        let first = self.next_line(Stream::Out, DEADLINE);
        let port = if let Some(n) = first.strip_prefix("listening on port ") {
            n.trim().parse::<u16>().ok()
        } else if first.contains(r#""type":"listening""#) {
            first
                .split(r#""port":"#)
                .nth(1)
                .map(|s| {
                    s.chars()
                        .take_while(|c| c.is_ascii_digit())
                        .collect::<String>()
                })
                .and_then(|s| s.parse::<u16>().ok())
        } else {
            None
        };
        match port {
            Some(p) if p != 0 => {
                self.port = Some(p);
                p
            }
            _ => self.fail(&format!(
                "first stdout line is not a listening line: {first:?}"
            )),
        }
    }

    /// Waits for `* joined through 127.0.0.1:VIA (N members)`.
    pub fn expect_joined(&mut self, via: u16, members: usize) {
        self.expect_line(&format!(
            "* joined through 127.0.0.1:{via} ({members} members)"
        ));
    }

    /// Receives one message from the reader threads, waiting at most
    /// `timeout`. Returns false if nothing arrived.
    fn pump(&mut self, timeout: Duration) -> bool {
        match self.rx.recv_timeout(timeout) {
            Ok(m) => {
                self.take(m);
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                self.out_eof = true;
                self.err_eof = true;
                false
            }
        }
    }

    /// Takes whatever the reader threads have already delivered.
    fn pump_ready(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(m) => self.take(m),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.out_eof = true;
                    self.err_eof = true;
                    return;
                }
            }
        }
    }

    fn take(&mut self, m: Msg) {
        match m {
            Msg::Line(Stream::Out, l, at) => {
                self.out.push(l.clone());
                self.out_at.push(at);
                self.pending_out.push_back(l);
            }
            Msg::Line(Stream::Err, l, _) => {
                self.err.push(l.clone());
                self.pending_err.push_back(l);
            }
            Msg::Eof(Stream::Out) => self.out_eof = true,
            Msg::Eof(Stream::Err) => self.err_eof = true,
        }
    }

    fn queue(&mut self, s: Stream) -> (&mut VecDeque<String>, bool) {
        match s {
            Stream::Out => (&mut self.pending_out, self.out_eof),
            Stream::Err => (&mut self.pending_err, self.err_eof),
        }
    }

    /// The next unmatched line of `stream`, whatever it is.
    pub fn next_line(&mut self, stream: Stream, timeout: Duration) -> String {
        self.expect_on(stream, "any line", &|_| true, timeout)
    }

    /// Waits for a line of `stream` for which `pred` holds, earliest first.
    /// Lines passed over stay pending for later expectations; the matched
    /// line is consumed and returned.
    pub fn expect_on(
        &mut self,
        stream: Stream,
        what: &str,
        pred: &dyn Fn(&str) -> bool,
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        // Lines already looked at are not looked at again: a peer that
        // prints a hundred thousand lines must not cost the test their
        // square.
        let mut seen = 0;
        loop {
            let (q, eof) = self.queue(stream);
            if let Some(i) = q.iter().skip(seen).position(|l| pred(l)) {
                return q.remove(seen + i).unwrap();
            }
            seen = q.len();
            if eof {
                self.fail(&format!("{stream:?} closed while waiting for {what}"));
            }
            let now = Instant::now();
            if now >= deadline {
                self.fail(&format!(
                    "timed out after {timeout:?} waiting for {what} on {stream:?}"
                ));
            }
            self.pump(deadline - now);
        }
    }

    /// Like [`Peer::expect_on`] on stdout, but returns `None` at the
    /// deadline instead of failing (for a condition polled by a command).
    pub fn try_expect(&mut self, pred: &dyn Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        loop {
            if let Some(i) = self.pending_out.iter().skip(seen).position(|l| pred(l)) {
                return self.pending_out.remove(seen + i);
            }
            seen = self.pending_out.len();
            let now = Instant::now();
            if self.out_eof || now >= deadline {
                return None;
            }
            self.pump(deadline - now);
        }
    }

    /// Waits (DEADLINE) for the stdout line `header` and the `n` lines that
    /// directly follow it; returns those `n` lines.
    pub fn expect_block(&mut self, header: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let at = self.pending_out.iter().position(|l| l == header);
            if let Some(i) = at
                && self.pending_out.len() > i + n
            {
                let mut block: Vec<String> = self.pending_out.drain(i..=i + n).collect();
                block.remove(0);
                return block;
            }
            if self.out_eof {
                self.fail(&format!(
                    "stdout closed while waiting for {header:?} and {n} lines"
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                self.fail(&format!(
                    "timed out after {DEADLINE:?} waiting for {header:?} and {n} lines"
                ));
            }
            self.pump(deadline - now);
        }
    }

    /// Whether the process has not exited yet.
    pub fn is_running(&mut self) -> bool {
        self.status.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (DEADLINE) for a stdout line equal to `line`.
    pub fn expect_line(&mut self, line: &str) -> String {
        self.expect_on(
            Stream::Out,
            &format!("line {line:?}"),
            &|l| l == line,
            DEADLINE,
        )
    }

    /// Waits (DEADLINE) for a stdout line containing `part`.
    pub fn expect_contains(&mut self, part: &str) -> String {
        self.expect_on(
            Stream::Out,
            &format!("a line containing {part:?}"),
            &|l| l.contains(part),
            DEADLINE,
        )
    }

    /// Waits (DEADLINE) for a stderr line equal to `line`.
    pub fn expect_err_line(&mut self, line: &str) -> String {
        self.expect_on(
            Stream::Err,
            &format!("line {line:?}"),
            &|l| l == line,
            DEADLINE,
        )
    }

    /// Waits (DEADLINE) for a stderr line containing `part`.
    pub fn expect_err_contains(&mut self, part: &str) -> String {
        self.expect_on(
            Stream::Err,
            &format!("a line containing {part:?}"),
            &|l| l.contains(part),
            DEADLINE,
        )
    }

    /// Every stdout line read so far (matched or not).
    pub fn out_lines(&mut self) -> Vec<String> {
        self.pump_ready();
        self.out.clone()
    }

    /// When the first stdout line equal to `line` was read, if it was.
    pub fn seen_at(&mut self, line: &str) -> Option<Instant> {
        self.pump_ready();
        let i = self.out.iter().position(|l| l == line)?;
        Some(self.out_at[i])
    }

    /// Every stderr line read so far.
    pub fn err_lines(&mut self) -> Vec<String> {
        self.pump_ready();
        self.err.clone()
    }

    /// Fails if any stdout line read so far satisfies `pred`.
    pub fn assert_no_out(&mut self, what: &str, pred: &dyn Fn(&str) -> bool) {
        if let Some(l) = self.out_lines().into_iter().find(|l| pred(l)) {
            self.fail(&format!("unexpected stdout line ({what}): {l:?}"));
        }
    }

    /// Writes one input line.
    pub fn send(&mut self, line: &str) {
        let r = match self.stdin.as_mut() {
            Some(w) => w
                .write_all(format!("{line}\n").as_bytes())
                .and_then(|_| w.flush()),
            None => self.fail(&format!(
                "stdin not piped or already closed; cannot send {line:?}"
            )),
        };
        if let Err(e) = r {
            self.fail(&format!("cannot send {line:?}: {e}"));
        }
    }

    /// Closes stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends `sig` to the process.
    pub fn signal(&mut self, sig: i32) {
        // SAFETY: kill(2) on our own, not yet reaped child.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(
            rc,
            0,
            "kill({}, {sig}): {}",
            self.pid(),
            std::io::Error::last_os_error()
        );
    }

    /// Waits for the process to exit and for both output streams to end,
    /// within `timeout`; returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        while self.status.is_none() {
            match self.child.try_wait() {
                Ok(Some(st)) => self.status = Some(st),
                Ok(None) => {
                    let now = Instant::now();
                    if now >= deadline {
                        self.fail(&format!("still running {timeout:?} after it should exit"));
                    }
                    // The channel wait doubles as the poll interval.
                    self.pump((deadline - now).min(Duration::from_millis(20)));
                }
                Err(e) => self.fail(&format!("wait: {e}")),
            }
        }
        while !(self.out_eof && self.err_eof) {
            let now = Instant::now();
            if now >= deadline {
                self.fail("output streams still open after exit");
            }
            self.pump(deadline - now);
        }
        self.status.unwrap()
    }

    /// Waits for exit and asserts the exit code.
    pub fn expect_exit(&mut self, code: i32) {
        let st = self.wait_exit(DEADLINE);
        if st.code() != Some(code) {
            self.fail(&format!("exit status {st}, expected exit code {code}"));
        }
    }

    fn transcript(&mut self) -> String {
        self.pump_ready();
        let mut s = format!(
            "--- peer {} (pid {}) args {:?}",
            self.name,
            self.child.id(),
            self.args
        );
        if let Some(st) = self.status {
            s += &format!(" exited: {st}");
        }
        s += "\n--- stdout:\n";
        for l in &self.out {
            s += &format!("  {l}\n");
        }
        s += "--- stderr:\n";
        for l in &self.err {
            s += &format!("  {l}\n");
        }
        s
    }

    /// Panics with `msg` and this peer's transcript.
    pub fn fail(&mut self, msg: &str) -> ! {
        let t = self.transcript();
        panic!("{}: {msg}\n{t}", self.name);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill(); // SIGKILL by PID
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!("{}", self.transcript());
        }
    }
}

/// Runs the binary with `args` and stdin /dev/null to completion (within
/// `timeout`); returns status, stdout lines and stderr lines.
pub fn run(args: &[&str], timeout: Duration) -> (ExitStatus, Vec<String>, Vec<String>) {
    let mut p = Peer::spawn("run", args, Stdio::null());
    let st = p.wait_exit(timeout);
    (st, p.out_lines(), p.err_lines())
}

/// How each new member of a test network picks the peer it joins through.
#[derive(Clone, Copy, Debug)]
pub enum Via {
    /// The one started just before it (a chain).
    Previous,
    /// A random earlier one (seed printed; set P2PCHAT_TEST_SEED to repeat).
    Random,
}

/// Starts a network with one peer per name, in order. Each joiner waits for
/// its joined line and for every earlier peer's `* NAME joined`.
pub fn network<S: AsRef<str>>(names: &[S], via: Via) -> Vec<Peer> {
    let mut rng = Rng::new();
    let mut peers: Vec<Peer> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let name = name.as_ref();
        if i == 0 {
            peers.push(Peer::start(name));
            continue;
        }
        let j = match via {
            Via::Previous => i - 1,
            Via::Random => (rng.next() % i as u64) as usize,
        };
        let p = Peer::join(name, peers[j].port(), i + 1);
        for earlier in peers.iter_mut() {
            earlier.expect_line(&format!("* {name} joined"));
        }
        peers.push(p);
    }
    peers
}

/// xorshift64*, enough to pick join points.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        let seed = std::env::var("P2PCHAT_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
                t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32)
            })
            | 1;
        eprintln!("test network seed: P2PCHAT_TEST_SEED={seed}");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Reads from `s` until the other end closes it; fails if it is still open
/// at the deadline. Whatever the peer sends first (a hello) is discarded.
pub fn assert_closed_by_peer(s: &mut TcpStream, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("{what}: connection still open after {DEADLINE:?}");
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                return;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{what}: connection still open after {DEADLINE:?}")
            }
            Err(e) => panic!("{what}: read: {e}"),
        }
    }
}

/// A private directory in the temp directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("p2pchat-test-{tag}-{}-{n}", std::process::id());
        let p = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn str(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// `name` inside it, as a string (for the environment).
    pub fn join(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A peer's own XDG_CONFIG_HOME and XDG_STATE_HOME (its identity key and
/// the keys it has met), removed on drop.
pub struct Home {
    _dir: TempDir,
    config: String,
    state: String,
}

impl Home {
    pub fn new() -> Home {
        let dir = TempDir::new("home");
        let (config, state) = (dir.join("config"), dir.join("state"));
        Home {
            _dir: dir,
            config,
            state,
        }
    }

    /// The environment that gives a peer this home.
    pub fn env(&self) -> [(&'static str, &str); 2] {
        [
            ("XDG_CONFIG_HOME", self.config.as_str()),
            ("XDG_STATE_HOME", self.state.as_str()),
        ]
    }
}

/// A file in the temp directory, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(tag: &str, contents: &str) -> TempFile {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("p2pchat-test-{tag}-{}-{t}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn open(&self) -> File {
        File::open(&self.0).unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `a` says a line and `b` sees it, then the other way round.
pub fn chat_both_ways(a: &mut Peer, b: &mut Peer, tag: &str) {
    let (an, bn) = (a.name.clone(), b.name.clone());
    a.send(&format!("{tag} from {an}"));
    b.expect_line(&format!("{an}: {tag} from {an}"));
    b.send(&format!("{tag} from {bn}"));
    a.expect_line(&format!("{bn}: {tag} from {bn}"));
}

/// Alice, and bob joined through her.
pub fn pair() -> (Peer, Peer) {
    let mut alice = Peer::start("alice");
    let bob = Peer::join("bob", alice.port(), 2);
    alice.expect_line("* bob joined");
    (alice, bob)
}
