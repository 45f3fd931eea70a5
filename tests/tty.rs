//! Integration tests of the interactive terminal (issue 3): `p2pchat` runs
//! in a real pseudo-terminal, a pane of a private tmux server, and chats
//! with a plain-mode peer (`bob`, from `tests/util`; plain mode reads no
//! HOME or history) on 127.0.0.1.
//!
//! Each test starts its own tmux server (`tmux -L <unique name>` with a
//! config file of its own, never the user's server or config), runs
//! p2pchat with a private HOME and XDG_STATE_HOME, drives the pane with
//! `send-keys`, and waits for screen content by polling `capture-pane`
//! until a deadline. The `Drop` guards SIGKILL every process of the pane
//! by PID, kill the tmux server, and remove its socket and the temp
//! directory, also when a test fails.

mod util;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use util::{BIN, DEADLINE, Peer, TempDir};

/// The prompt of the peer under test.
const PROMPT: &str = "[lobby] alice> ";
/// Its width in columns.
const PW: usize = 15;
/// How often a wait looks at the screen again.
const POLL: Duration = Duration::from_millis(20);

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A name no other test, run or user shares.
fn unique(tag: &str) -> String {
    format!(
        "p2pchat-tty-{tag}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// `s` quoted for sh.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Whether `s` is `HH:MM`.
fn is_hhmm(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 5
        && b[2] == b':'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 2 || c.is_ascii_digit())
}

/// The XDG_STATE_HOME inside a private HOME.
fn state_of(home: &TempDir) -> PathBuf {
    let p = home.path().join("state");
    fs::create_dir_all(&p).unwrap();
    p
}

/// parent pid -> child pids, from /proc.
fn process_tree() -> HashMap<i32, Vec<i32>> {
    let mut tree: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return tree;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some((ppid, _)) = stat(pid) {
            tree.entry(ppid).or_default().push(pid);
        }
    }
    tree
}

/// (ppid, start time) of a live, not yet reaped process.
fn stat(pid: i32) -> Option<(i32, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: skip to the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    if f[0] == "Z" || f[0] == "X" {
        return None;
    }
    Some((f[1].parse().ok()?, f[19].parse().ok()?))
}

fn alive(pid: i32) -> bool {
    stat(pid).is_some()
}

/// Every descendant of `root`, parents before children.
fn descendants(root: i32) -> Vec<i32> {
    let tree = process_tree();
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in tree.get(&p).map(Vec::as_slice).unwrap_or_default() {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

fn comm(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

/// One look at the pane: its rows (trailing blanks trimmed unless taken
/// with escapes) and the cursor.
#[derive(Debug, Clone)]
struct Snap {
    rows: Vec<String>,
    x: usize,
    y: usize,
}

impl Snap {
    /// The row the cursor is on: the input line while p2pchat runs.
    fn input(&self) -> &str {
        self.rows.get(self.y).map_or("", String::as_str)
    }

    fn has(&self, part: &str) -> bool {
        self.rows.iter().any(|r| r.contains(part))
    }

    /// The index of the row `HH:MM rest`.
    fn stamped(&self, rest: &str) -> Option<usize> {
        self.rows.iter().position(|r| {
            r.split_once(' ')
                .is_some_and(|(t, r)| is_hhmm(t) && r == rest)
        })
    }

    /// How many rows contain `part`.
    fn count(&self, part: &str) -> usize {
        self.rows.iter().filter(|r| r.contains(part)).count()
    }
}

impl std::fmt::Display for Snap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "--- screen (cursor x={} y={}):", self.x, self.y)?;
        for (i, r) in self.rows.iter().enumerate() {
            writeln!(f, "{i:2}|{}", r.escape_debug())?;
        }
        Ok(())
    }
}

/// A tmux server of our own with one pane.
struct Pane {
    sock: String,
    conf: PathBuf,
    /// The pane's first process and its start time (against PID reuse).
    pid: i32,
    start: u64,
    server: i32,
    tty: String,
    /// The server's socket file, removed after the server is gone.
    socket: String,
}

impl Pane {
    /// Starts a server with one `cols` x `rows` pane running `cmd` (by
    /// /bin/sh -c) in directory `dir`.
    fn start(tag: &str, dir: &Path, cols: u16, rows: u16, cmd: &str) -> Pane {
        let conf = dir.join("tmux.conf");
        fs::write(
            &conf,
            "set -g status off\n\
             set -g remain-on-exit on\n\
             set -g default-shell /bin/sh\n\
             set -g default-terminal screen\n\
             set -g history-limit 1000\n",
        )
        .unwrap();
        let mut p = Pane {
            sock: unique(tag),
            conf,
            pid: 0,
            start: 0,
            server: 0,
            tty: String::new(),
            socket: String::new(),
        };
        let (c, r) = (cols.to_string(), rows.to_string());
        let d = dir.to_str().unwrap();
        p.tmux(&["new-session", "-d", "-x", &c, "-y", &r, "-c", d, cmd]);
        let info = p.display("#{pane_pid} #{pid} #{pane_tty} #{socket_path}");
        let f: Vec<&str> = info.splitn(4, ' ').collect();
        p.pid = f[0].parse().unwrap();
        p.server = f[1].parse().unwrap();
        p.tty = f[2].to_string();
        p.socket = f[3].to_string();
        p.start = stat(p.pid).map_or(0, |s| s.1);
        p
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-L")
            .arg(&self.sock)
            .arg("-f")
            .arg(&self.conf)
            .args(args)
            .env_remove("TMUX")
            .env_remove("TMUX_PANE")
            .env_remove("NO_COLOR")
            .env("LC_ALL", "C.UTF-8")
            .stdin(Stdio::null());
        c
    }

    /// Runs a tmux command; its stdout.
    fn tmux(&self, args: &[&str]) -> String {
        let out = self
            .command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run tmux (is it installed?): {e}"));
        assert!(
            out.status.success(),
            "tmux {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A tmux format (`#{...}`) expanded for the pane.
    fn display(&self, format: &str) -> String {
        self.tmux(&["display-message", "-p", format])
            .trim_end_matches('\n')
            .to_string()
    }

    /// Key names (`Enter`, `C-a`, `Left`, ...).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend(keys);
        self.tmux(&args);
    }

    /// Text typed as is.
    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-l", "--", text]);
    }

    fn snap_with(&self, escapes: bool) -> Snap {
        let mut args = vec!["capture-pane", "-p"];
        if escapes {
            args.push("-e");
        }
        args.extend([";", "display-message", "-p", "#{cursor_x} #{cursor_y}"]);
        let out = self.tmux(&args);
        let mut rows: Vec<String> = out.lines().map(str::to_string).collect();
        let cursor = rows.pop().unwrap_or_default();
        let mut c = cursor.split(' ').map(|n| n.parse().unwrap_or(0));
        let (x, y) = (c.next().unwrap_or(0), c.next().unwrap_or(0));
        if !escapes {
            for r in rows.iter_mut() {
                r.truncate(r.trim_end().len());
            }
        }
        Snap { rows, x, y }
    }

    fn snap(&self) -> Snap {
        self.snap_with(false)
    }

    /// Waits (DEADLINE) until the screen satisfies `pred`.
    fn wait(&self, what: &str, pred: impl Fn(&Snap) -> bool) -> Snap {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let s = self.snap();
            if pred(&s) {
                return s;
            }
            if Instant::now() >= deadline {
                panic!("timed out after {DEADLINE:?} waiting for {what}\n{s}");
            }
            thread::sleep(POLL);
        }
    }

    /// Waits until the cursor is on `PROMPT` + `line`, in column `x`.
    fn expect_input(&self, line: &str, x: usize) -> Snap {
        let want = format!("{PROMPT}{line}");
        let want = want.trim_end();
        self.wait(&format!("input line {want:?}, cursor x={x}"), |s| {
            s.input() == want && s.x == x
        })
    }

    /// The pid of the p2pchat process in the pane (itself or a child).
    fn p2pchat_pid(&self) -> i32 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let mut all = vec![self.pid];
            all.extend(descendants(self.pid));
            if let Some(&p) = all.iter().find(|&&p| comm(p) == "p2pchat") {
                return p;
            }
            if Instant::now() >= deadline {
                panic!("no p2pchat process in the pane\n{}", self.snap());
            }
            thread::sleep(POLL);
        }
    }

    /// `stty` of the pane's terminal, read from outside.
    fn stty(&self, flag: &str) -> String {
        let out = Command::new("stty")
            .args([flag, "-F", &self.tty])
            .stdin(Stdio::null())
            .output()
            .expect("stty");
        assert!(out.status.success(), "stty {flag} -F {}", self.tty);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn resize(&self, cols: u16) {
        self.tmux(&["resize-window", "-x", &cols.to_string()]);
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let mut pids = Vec::new();
        if self.pid > 0 && stat(self.pid).is_some_and(|s| s.1 == self.start) {
            pids = descendants(self.pid);
            pids.reverse();
            pids.push(self.pid);
        }
        for &p in &pids {
            // SAFETY: kill(2) on a process of our own pane.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        // Let tmux reap them before it goes.
        let deadline = Instant::now() + Duration::from_secs(2);
        while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        let _ = self
            .command(&["kill-server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        while self.server > 0 && alive(self.server) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        // tmux leaves its socket file behind.
        if self.socket.ends_with(&self.sock) {
            let _ = fs::remove_file(&self.socket);
        }
    }
}

/// How the pane runs p2pchat.
enum Launch {
    /// The pane is p2pchat (`exec`); its exit status is the pane's.
    Exec,
    /// sh saves `stty -g` and fd 0's file status flags, runs p2pchat,
    /// prints `exit=N`, saves both again (files `before`, `after`,
    /// `flags-before`, `flags-after`) and prints `done`.
    Wrapped,
    /// As `Exec`, but once every byte the pane writes is copied into the
    /// file `raw` (tmux pipe-pane).
    Recorded,
    /// An interactive dash with job control; p2pchat is typed at it.
    Shell,
    /// stdout is a pipe (`| cat > out`): the terminal is stdin only.
    Piped,
}

/// Shell commands that save the terminal's settings (`stty -g`) and fd
/// 0's file status flags in the files `NAME` and `flags-NAME`.
fn save_tty(name: &str) -> String {
    format!("stty -g > {name}; grep flags /proc/self/fdinfo/0 > flags-{name}")
}

/// Asserts the settings saved by `save_tty(a)` and `save_tty(b)` in `dir`
/// are the same.
fn assert_same_tty(dir: &Path, a: &str, b: &str) {
    let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    assert!(!read(a).trim().is_empty(), "no stty -g in {a}");
    assert_eq!(read(a), read(b), "stty -g differs: {a} and {b}");
    assert_eq!(
        read(&format!("flags-{a}")),
        read(&format!("flags-{b}")),
        "fd 0 file status flags differ: {a} and {b}"
    );
}

/// `cmd` between `save_tty("before")` and `save_tty("after")`, printing
/// `exit=N` (its status) and then `done`.
fn wrapped(cmd: &str) -> String {
    format!(
        "{}; {cmd}; echo \"exit=$?\"; {}; echo done",
        save_tty("before"),
        save_tty("after")
    )
}

/// Waits for a `wrapped` command to finish; the exit status it printed.
fn wait_wrapped(pane: &Pane) -> i32 {
    let s = pane.wait("the wrapper's done", |s| s.rows.iter().any(|r| r == "done"));
    let line = s
        .rows
        .iter()
        .find_map(|r| r.strip_prefix("exit="))
        .unwrap_or_else(|| panic!("no exit= line\n{s}"));
    line.parse().unwrap()
}

/// The shell command that runs `alice` with HOME and XDG_STATE_HOME in
/// `home`, `env` added, joining through 127.0.0.1:`port`.
fn alice_cmd(home: &TempDir, env: &[(&str, &str)], port: u16) -> String {
    peer_cmd(home, env, "alice", port)
}

/// As `alice_cmd`, for a peer named `name`.
fn peer_cmd(home: &TempDir, env: &[(&str, &str)], name: &str, port: u16) -> String {
    let mut cmd = format!(
        "env -u NO_COLOR HOME={} XDG_STATE_HOME={}",
        sh(home.path().to_str().unwrap()),
        sh(state_of(home).to_str().unwrap())
    );
    for (k, v) in env {
        cmd += &format!(" {k}={}", sh(v));
    }
    cmd + &format!(" {} -b 127.0.0.1 {name} 127.0.0.1 {port}", sh(BIN))
}

/// `alice` (p2pchat in the pane) joined to `bob` (plain, piped stdio).
struct Chat {
    pane: Pane,
    bob: Peer,
    home: TempDir,
}

impl Chat {
    /// Starts bob and alice (with `env` added to her environment) and
    /// waits until both see the join and alice shows her prompt.
    fn start(tag: &str, env: &[(&str, &str)], cols: u16, how: Launch) -> Chat {
        let home = TempDir::new(tag);
        let bob = Peer::start("bob");
        let port = bob.port();
        let cmd = alice_cmd(&home, env, port);
        let pane_cmd = match how {
            Launch::Exec => format!("exec {cmd}"),
            Launch::Recorded => format!("read go; exec {cmd}"),
            Launch::Wrapped => wrapped(&cmd),
            Launch::Piped => format!("{cmd} | cat > out"),
            // dash leaves the terminal as the job left it (bash would
            // restore its own settings when a job stops, hiding ours).
            Launch::Shell => {
                let dash = ["/bin/dash", "/usr/bin/dash"]
                    .iter()
                    .any(|p| Path::new(p).exists());
                format!("exec env PS1='$ ' {} -i", if dash { "dash" } else { "sh" })
            }
        };
        let pane = Pane::start(tag, home.path(), cols, 24, &pane_cmd);
        match how {
            Launch::Recorded => {
                let raw = home.path().join("raw");
                pane.tmux(&[
                    "pipe-pane",
                    "-O",
                    &format!("cat > {}", sh(raw.to_str().unwrap())),
                ]);
                pane.keys(&["Enter"]);
            }
            Launch::Shell => {
                pane.wait("the shell prompt", |s| s.input() == "$");
                pane.type_text(&save_tty("before"));
                pane.keys(&["Enter"]);
                pane.type_text(&cmd);
                pane.keys(&["Enter"]);
            }
            Launch::Exec | Launch::Wrapped | Launch::Piped => {}
        }
        let mut c = Chat { pane, bob, home };
        let joined = format!("* joined through 127.0.0.1:{port} (2 members)");
        c.pane.wait("the prompt after joining", |s| {
            s.input() == PROMPT.trim_end() && s.x == PW && s.stamped(&joined).is_some()
        });
        c.bob.expect_line("* alice joined");
        c
    }

    /// The bytes p2pchat wrote (`Launch::Recorded`).
    fn raw(&self) -> Vec<u8> {
        fs::read(self.home.path().join("raw")).unwrap_or_default()
    }

    /// Waits until the recorded output contains `part`.
    fn wait_raw(&self, part: &str) -> Vec<u8> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let raw = self.raw();
            if raw.windows(part.len()).any(|w| w == part.as_bytes()) {
                return raw;
            }
            if Instant::now() >= deadline {
                panic!(
                    "recorded output has no {part:?}: {:?}\n{}",
                    String::from_utf8_lossy(&raw),
                    self.pane.snap()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Waits for `Launch::Wrapped` to finish; p2pchat's exit status.
    fn wait_wrapped(&self) -> i32 {
        wait_wrapped(&self.pane)
    }

    /// Asserts the terminal and fd 0's flags are as before p2pchat ran.
    fn assert_restored(&self) {
        assert_same_tty(self.home.path(), "before", "after");
    }
}

#[test]
fn typed_keys_edit_the_line_and_enter_sends_it() {
    let mut c = Chat::start("keys", &[], 80, Launch::Exec);
    let p = &c.pane;
    p.type_text("hello world");
    p.expect_input("hello world", PW + 11);
    p.keys(&["C-w"]);
    p.expect_input("hello ", PW + 6);
    p.type_text("there");
    p.expect_input("hello there", PW + 11);
    p.keys(&["Home"]);
    p.expect_input("hello there", PW);
    p.type_text("oh ");
    p.expect_input("oh hello there", PW + 3);
    p.keys(&["C-e"]);
    p.expect_input("oh hello there", PW + 14);
    p.keys(&["Left", "Left", "Left", "Left", "Left"]);
    p.expect_input("oh hello there", PW + 9);
    p.keys(&["C-k"]);
    p.expect_input("oh hello ", PW + 9);
    p.type_text("you");
    p.expect_input("oh hello you", PW + 12);
    p.keys(&["C-a"]);
    p.expect_input("oh hello you", PW);
    p.keys(&["Right", "Right", "Right"]);
    p.expect_input("oh hello you", PW + 3);
    p.keys(&["C-u"]);
    p.expect_input("hello you", PW);
    p.keys(&["End"]);
    p.expect_input("hello you", PW + 9);
    p.keys(&["BSpace"]);
    p.expect_input("hello yo", PW + 8);
    p.type_text("u!");
    p.expect_input("hello you!", PW + 10);
    p.keys(&["Left", "Left", "Left", "Left"]);
    p.expect_input("hello you!", PW + 6);
    p.keys(&["DC"]);
    p.expect_input("hello ou!", PW + 6);
    // Ctrl-D on a non-empty line deletes under the cursor.
    p.keys(&["C-d"]);
    p.expect_input("hello u!", PW + 6);
    p.type_text("yo");
    p.expect_input("hello you!", PW + 8);
    p.keys(&["C-b"]);
    p.expect_input("hello you!", PW + 7);
    p.keys(&["C-f"]);
    p.expect_input("hello you!", PW + 8);

    p.keys(&["Enter"]);
    c.bob.expect_line("alice: hello you!");
    let s = c.pane.expect_input("", PW);
    let own = s
        .stamped("alice: hello you!")
        .unwrap_or_else(|| panic!("own line not shown\n{s}"));
    assert!(own < s.y, "own line not above the input line\n{s}");
    assert_eq!(s.count("hello you!"), 1, "stale text on screen\n{s}");
    c.bob.assert_no_out("intermediate text sent", &|l| {
        l.starts_with("alice: ") && l != "alice: hello you!"
    });

    // Ctrl-L clears the screen and draws the input line at the top.
    c.pane.type_text("draft");
    c.pane.expect_input("draft", PW + 5);
    c.pane.keys(&["C-l"]);
    let s = c
        .pane
        .wait("a cleared screen", |s| s.y == 0 && s.x == PW + 5);
    assert_eq!(s.input(), format!("{PROMPT}draft"), "\n{s}");
    assert!(
        s.rows[1..].iter().all(String::is_empty),
        "screen not cleared\n{s}"
    );
}

#[test]
fn message_mid_typing_keeps_the_half_typed_line() {
    let mut c = Chat::start("midtype", &[], 80, Launch::Exec);
    c.pane.type_text("hello wor");
    c.pane.expect_input("hello wor", PW + 9);
    c.bob.send("incoming while you type");
    let s = c.pane.wait("bob's line", |s| {
        s.stamped("bob: incoming while you type").is_some()
    });
    let at = s.stamped("bob: incoming while you type").unwrap();
    assert!(at < s.y, "incoming line not above the input line\n{s}");
    assert_eq!(s.input(), format!("{PROMPT}hello wor"), "\n{s}");
    assert_eq!(s.x, PW + 9, "cursor moved\n{s}");
    assert_eq!(s.count("hello wor"), 1, "stale copy of the input\n{s}");

    // Several lines at once, the cursor in the middle of the line.
    c.pane.keys(&["Left", "Left"]);
    c.pane.expect_input("hello wor", PW + 7);
    c.bob.send("second");
    c.bob.send("third");
    let s = c.pane.wait("bob's burst", |s| {
        s.stamped("bob: third").is_some() && s.stamped("bob: second").is_some()
    });
    assert!(s.stamped("bob: second") < s.stamped("bob: third"), "\n{s}");
    assert!(s.stamped("bob: third").unwrap() < s.y, "\n{s}");
    let s = c.pane.expect_input("hello wor", PW + 7);
    assert_eq!(s.count("hello wor"), 1, "stale copy of the input\n{s}");

    c.pane.keys(&["End"]);
    c.pane.type_text("ld");
    c.pane.keys(&["Enter"]);
    c.bob.expect_line("alice: hello world");
    c.pane.expect_input("", PW);
}

/// A line that fits when typed, then the terminal narrows and the line
/// grows: it scrolls at the new width.
#[test]
fn resize_redraws_at_the_new_width() {
    let mut c = Chat::start("resize", &[], 80, Launch::Exec);
    let a = "abcdefghijklmnopqrst"; // 20
    let b = "ABCDEFGHIJKLMNOPQRST"; // 20
    c.pane.type_text(a);
    c.pane.expect_input(a, PW + 20);
    c.pane.resize(40);
    c.pane
        .wait("40 columns", |_| c.pane.display("#{pane_width}") == "40");
    c.pane.type_text(b);
    // 40 - 15 of prompt - 1 free column: the last 24 characters show.
    let whole = format!("{a}{b}");
    let s = c.pane.expect_input(&whole[16..], 39);
    assert_eq!(s.count(PROMPT.trim_end()), 1, "stale input line\n{s}");
    assert!(s.rows.iter().all(|r| r.chars().count() <= 40), "\n{s}");
    c.pane.keys(&["Home"]);
    c.pane.expect_input(&whole[..24], PW);
    c.pane.keys(&["End"]);
    c.pane.expect_input(&whole[16..], 39);

    // Wider again: the whole line shows.
    c.pane.resize(80);
    let s = c.pane.expect_input(&whole, PW + 40);
    assert_eq!(s.count(PROMPT.trim_end()), 1, "stale input line\n{s}");

    c.pane.keys(&["Enter"]);
    c.bob.expect_line(&format!("alice: {whole}"));
}

/// A line as wide as the terminal allows, then the terminal narrows: the
/// input line is drawn once, scrolled, with no leftover of the old one.
/// (tmux, like most terminals today, re-wraps the old line on a resize.)
#[test]
fn resize_narrower_with_a_long_line_leaves_no_stale_copy() {
    let mut c = Chat::start("resize-long", &[], 80, Launch::Exec);
    let text = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX"; // 60
    c.pane.type_text(text);
    c.pane.expect_input(text, PW + 60);
    c.pane.resize(40);
    let s = c.pane.expect_input(&text[36..], 39);
    assert_eq!(
        s.count(PROMPT.trim_end()),
        1,
        "the old input line is left on the screen after the resize\n{s}"
    );
    assert!(!s.has("0123456789"), "stale input text\n{s}");
    c.pane.keys(&["Enter"]);
    c.bob.expect_line(&format!("alice: {text}"));
}

#[test]
fn ctrl_c_restores_stty_and_leaves() {
    let mut c = Chat::start("ctrl-c", &[], 80, Launch::Wrapped);
    // Raw while it runs.
    let during = c.pane.stty("-a");
    for flag in ["-icanon", "-echo", "-isig", "-icrnl", "-ixon"] {
        assert!(
            during.split_whitespace().any(|w| w == flag),
            "{flag} not set while p2pchat runs: {during}"
        );
    }
    c.pane.keys(&["C-c"]);
    c.bob.expect_line("* alice left");
    let status = c.wait_wrapped();
    assert_eq!(status, 0, "exit status after Ctrl-C\n{}", c.pane.snap());
    c.assert_restored();
    let s = c.pane.snap();
    assert!(!s.has(PROMPT.trim_end()), "input line left on screen\n{s}");
    c.bob
        .assert_no_out("lost instead of left", &|l| l.contains("connection lost"));
}

#[test]
fn ctrl_d_on_an_empty_line_leaves() {
    let mut c = Chat::start("ctrl-d", &[], 80, Launch::Wrapped);
    // Not on a non-empty line (there it deletes under the cursor).
    c.pane.type_text("x");
    c.pane.expect_input("x", PW + 1);
    c.pane.keys(&["C-d"]);
    c.pane.keys(&["BSpace"]);
    c.pane.expect_input("", PW);
    assert!(c.pane.snap().stamped("alice left").is_none());
    c.pane.keys(&["C-d"]);
    c.bob.expect_line("* alice left");
    assert_eq!(c.wait_wrapped(), 0, "exit status after Ctrl-D");
    c.assert_restored();
    let s = c.pane.snap();
    assert!(!s.has(PROMPT.trim_end()), "input line left on screen\n{s}");
}

#[test]
fn sigterm_restores_the_terminal_and_leaves() {
    let mut c = Chat::start("sigterm", &[], 80, Launch::Wrapped);
    c.pane.type_text("half");
    c.pane.expect_input("half", PW + 4);
    let pid = c.pane.p2pchat_pid();
    // SAFETY: kill(2) on the p2pchat process of our own pane.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    c.bob.expect_line("* alice left");
    assert_eq!(c.wait_wrapped(), 0, "exit status after SIGTERM");
    c.assert_restored();
}

#[test]
fn escape_sequences_from_peers_are_shown_escaped() {
    let mut c = Chat::start("escapes", &[], 80, Launch::Exec);
    let title = c.pane.display("#{pane_title}");
    c.bob.send("before the attack");
    c.pane.wait("bob's first line", |s| {
        s.stamped("bob: before the attack").is_some()
    });
    c.pane.type_text("draft");
    c.pane.expect_input("draft", PW + 5);

    c.bob
        .send("x \x1b[2J y \x1b]0;pwned\x07 z \x1b[31mred\x1b[0m \x08\x7f\u{9b}2J");
    let shown = r"bob: x ^[[2J y ^[]0;pwned^G z ^[[31mred^[[0m ^H^?\u{9b}2J";
    let s = c
        .pane
        .wait("the escaped line", |s| s.stamped(shown).is_some());
    assert!(
        s.stamped("bob: before the attack").is_some(),
        "the screen was cleared\n{s}"
    );
    assert_eq!(s.input(), format!("{PROMPT}draft"), "\n{s}");
    assert_eq!(s.x, PW + 5, "\n{s}");
    assert_eq!(c.pane.display("#{pane_title}"), title, "title changed");
    // Not red: the only colours are p2pchat's own.
    let e = c.pane.snap_with(true);
    let row = e.rows.iter().find(|r| r.contains("red^[[0m")).unwrap();
    assert!(!row.contains("\x1b[31m"), "peer's colour executed: {row:?}");
}

#[test]
fn names_are_coloured_by_default() {
    let mut c = Chat::start("colour", &[], 80, Launch::Exec);
    c.bob.send("hello there");
    c.pane
        .wait("bob's line", |s| s.stamped("bob: hello there").is_some());
    let e = c.pane.snap_with(true);
    let row = e.rows.iter().find(|r| r.contains("hello there")).unwrap();
    assert!(
        row.contains("\x1b[") && row.find("\x1b[") < row.find("bob"),
        "bob's name is not coloured: {row:?}"
    );
    assert_eq!(c.pane.display("#{window_bell_flag}"), "0", "bell rung");

    // Our own name, and a mention of it (reverse video and the bell).
    c.pane.type_text("mine");
    c.pane.keys(&["Enter"]);
    c.bob.expect_line("alice: mine");
    c.bob.send("hey ALICE, look");
    c.pane.wait("both lines", |s| {
        s.stamped("alice: mine").is_some() && s.stamped("bob: hey ALICE, look").is_some()
    });
    let e = c.pane.snap_with(true);
    let own = e.rows.iter().find(|r| r.contains("mine")).unwrap();
    assert!(
        own.find("\x1b[1m")
            .is_some_and(|i| Some(i) < own.find("alice")),
        "own name not bold: {own:?}"
    );
    let mention = e.rows.iter().find(|r| r.contains("look")).unwrap();
    assert!(
        mention.contains("\x1b[7m"),
        "mention not highlighted: {mention:?}"
    );
    assert_eq!(c.pane.display("#{window_bell_flag}"), "1", "no bell");
}

/// The SGR parameter lists in `row` (`ESC [ ... m`).
fn sgr_params(row: &str) -> Vec<String> {
    row.split("\x1b[")
        .skip(1)
        .filter_map(|r| r.split_once('m').map(|(p, _)| p.to_string()))
        .collect()
}

/// Whether an SGR parameter list sets a colour (30-49, 90-107; 39 and 49
/// are the defaults, which tmux writes on every row).
fn sets_colour(params: &str) -> bool {
    params
        .split([';', ':'])
        .filter_map(|p| p.parse::<u32>().ok())
        .any(|n| n != 39 && n != 49 && ((30..=49).contains(&n) || (90..=107).contains(&n)))
}

/// NO_COLOR takes the colours away, not the bold, dim and reverse video.
#[test]
fn no_color_output_has_no_colours_but_keeps_styles() {
    let mut c = Chat::start("nocolor", &[("NO_COLOR", "1")], 80, Launch::Exec);
    c.bob.send("hello alice");
    c.pane.type_text("mine");
    c.pane.keys(&["Enter"]);
    c.bob.expect_line("alice: mine");
    c.pane.type_text(":nope");
    c.pane.keys(&["Enter"]);
    c.pane.type_text("typing");
    let s = c.pane.wait("all lines", |s| {
        s.stamped("bob: hello alice").is_some()
            && s.stamped("alice: mine").is_some()
            && s.has("p2pchat: unknown command :nope")
            && s.input() == format!("{PROMPT}typing")
    });
    let e = c.pane.snap_with(true);
    for row in &e.rows {
        for p in sgr_params(row) {
            assert!(
                !sets_colour(&p),
                "a colour with NO_COLOR=1: {p:?} in {row:?}\n{e}\nplain:\n{s}"
            );
        }
    }
    let mention = e.rows.iter().find(|r| r.contains("hello alice")).unwrap();
    assert!(
        mention.contains("\x1b[7m"),
        "mention not in reverse video with NO_COLOR: {mention:?}"
    );
}

#[test]
fn term_dumb_gets_no_escape_sequences() {
    let mut c = Chat::start("dumb", &[("TERM", "dumb")], 80, Launch::Recorded);
    c.pane.type_text("hello wor");
    c.pane.expect_input("hello wor", PW + 9);
    c.bob.send("incoming");
    let s = c
        .pane
        .wait("bob's line", |s| s.stamped("bob: incoming").is_some());
    assert!(s.stamped("bob: incoming").unwrap() < s.y, "\n{s}");
    let s = c.pane.expect_input("hello wor", PW + 9);
    assert_eq!(s.count("hello wor"), 1, "stale copy of the input\n{s}");
    c.pane.type_text("ld");
    c.pane
        .keys(&["Left", "Left", "Left", "Left", "Left", "BSpace"]);
    c.pane.expect_input("helloworld", PW + 5);
    c.pane.keys(&["C-u"]);
    c.pane.expect_input("world", PW);
    c.pane.keys(&["C-l"]);
    c.pane.keys(&["Enter"]);
    c.bob.expect_line("alice: world");
    let raw = c.wait_raw("alice: world");
    if let Some(i) = raw.iter().position(|&b| b == 0x1b) {
        panic!(
            "escape sequence with TERM=dumb at byte {i}: {:?}",
            String::from_utf8_lossy(&raw[i.saturating_sub(20)..(i + 20).min(raw.len())])
        );
    }
}

#[test]
fn utf8_and_wide_characters() {
    let mut c = Chat::start("utf8", &[], 80, Launch::Exec);
    let text = "héllo 世界 😀";
    // h é l l o ␠ 世 界 ␠ 😀: 5 + 1 + 4 + 1 + 2 columns.
    c.pane.type_text(text);
    c.pane.expect_input(text, PW + 13);
    c.pane.keys(&["Left"]);
    c.pane.expect_input(text, PW + 11);
    c.pane.keys(&["Left", "BSpace"]);
    c.pane.expect_input("héllo 世 😀", PW + 8);
    c.pane.type_text("界");
    c.pane.expect_input(text, PW + 10);
    c.pane.keys(&["Home", "Right", "Right"]);
    c.pane.expect_input(text, PW + 2);
    c.pane.keys(&["End"]);
    c.pane.expect_input(text, PW + 13);
    c.pane.keys(&["Enter"]);
    c.bob.expect_line(&format!("alice: {text}"));
    let s = c.pane.expect_input("", PW);
    assert!(s.stamped(&format!("alice: {text}")).is_some(), "\n{s}");

    // And the other way round.
    c.bob.send("ça va? 你好 🎉");
    c.pane
        .wait("bob's line", |s| s.stamped("bob: ça va? 你好 🎉").is_some());

    // A wide line longer than the terminal scrolls by whole characters.
    c.pane.resize(40);
    c.pane
        .wait("40 columns", |_| c.pane.display("#{pane_width}") == "40");
    let wide = "世界".repeat(10); // 40 columns
    c.pane.type_text(&wide);
    // 24 columns for the input: the last 12 characters.
    let tail: String = wide.chars().skip(8).collect();
    c.pane.expect_input(&tail, PW + 24);
    c.pane.keys(&["Enter"]);
    c.bob.expect_line(&format!("alice: {wide}"));
}

#[test]
fn history_recalls_lines_and_survives_a_restart() {
    let mut c = Chat::start("history", &[], 80, Launch::Wrapped);
    for line in ["first line", "second line"] {
        c.pane.type_text(line);
        c.pane.keys(&["Enter"]);
        c.bob.expect_line(&format!("alice: {line}"));
    }
    c.pane.type_text("draft");
    c.pane.keys(&["Up"]);
    c.pane.expect_input("second line", PW + 11);
    c.pane.keys(&["Up"]);
    c.pane.expect_input("first line", PW + 10);
    c.pane.keys(&["Up"]);
    c.pane.expect_input("first line", PW + 10);
    c.pane.keys(&["Down"]);
    c.pane.expect_input("second line", PW + 11);
    c.pane.keys(&["Down"]);
    c.pane.expect_input("draft", PW + 5);
    c.pane.keys(&["C-u", "C-p", "C-p"]);
    c.pane.expect_input("first line", PW + 10);
    c.pane.type_text(" again");
    c.pane.keys(&["Enter"]);
    c.bob.expect_line("alice: first line again");

    // A pasted block is one history entry.
    c.pane.tmux(&["set-buffer", "--", "pasted one\npasted two"]);
    c.pane.tmux(&["paste-buffer", "-p"]);
    c.pane
        .wait("the held paste", |s| s.input().contains("[2 lines pasted"));
    c.pane.keys(&["Enter"]);
    c.bob.expect_line("alice: pasted one");
    c.bob.expect_line("alice: pasted two");
    c.pane.expect_input("", PW);

    c.pane.type_text(":q");
    c.pane.keys(&["Enter"]);
    c.bob.expect_line("* alice left");
    assert_eq!(c.wait_wrapped(), 0, "exit status after :q");
    c.assert_restored();
    let saved = fs::read_to_string(state_of(&c.home).join("p2pchat/history")).unwrap();
    assert_eq!(
        saved,
        "first line\nsecond line\nfirst line again\npasted one\\npasted two\n:q\n"
    );

    // A new run, same XDG_STATE_HOME: the history is back.
    drop(c.pane);
    let cmd = format!("exec {}", alice_cmd(&c.home, &[], c.bob.port()));
    let pane = Pane::start("history2", c.home.path(), 80, 24, &cmd);
    pane.expect_input("", PW);
    c.bob.expect_line("* alice joined");
    pane.keys(&["Up"]);
    pane.expect_input(":q", PW + 2);
    pane.keys(&["Up"]);
    pane.wait("the pasted entry, held", |s| {
        s.input().contains("[2 lines pasted") && s.input().ends_with("pasted one")
    });
    pane.keys(&["Up", "Up", "Up"]);
    pane.expect_input("first line", PW + 10);
    // Walking the history writes nothing.
    assert_eq!(
        fs::read_to_string(state_of(&c.home).join("p2pchat/history")).unwrap(),
        saved
    );
}

#[test]
fn ctrl_z_suspends_and_fg_resumes() {
    let mut c = Chat::start("ctrl-z", &[], 80, Launch::Shell);
    c.pane.type_text("draft");
    c.pane.expect_input("draft", PW + 5);
    c.pane.keys(&["C-z"]);
    let s = c.pane.wait("the shell after Ctrl-Z", |s| {
        s.has("Stopped") && s.input() == "$"
    });
    assert!(!s.has("[lobby] alice> draft"), "input line left\n{s}");
    // The terminal is the shell's again.
    c.pane
        .type_text(&format!("{}; echo saved", save_tty("suspended")));
    c.pane.keys(&["Enter"]);
    c.pane.wait("the shell prompt", |s| {
        s.input() == "$" && s.rows.iter().any(|r| r == "saved")
    });
    assert_same_tty(c.home.path(), "before", "suspended");

    // Stopped, so this waits until fg.
    c.bob.send("while you were away");
    c.pane.type_text("fg");
    c.pane.keys(&["Enter"]);
    let s = c.pane.wait("the redrawn input line", |s| {
        s.input() == format!("{PROMPT}draft") && s.x == PW + 5
    });
    let during = c.pane.stty("-a");
    assert!(
        during.split_whitespace().any(|w| w == "-icanon"),
        "not raw after fg: {during}\n{s}"
    );
    let s = c.pane.wait("bob's line", |s| {
        s.stamped("bob: while you were away").is_some()
    });
    assert_eq!(s.input(), format!("{PROMPT}draft"), "\n{s}");

    // SIGTSTP from outside (kill -TSTP) suspends the same way.
    let pid = c.pane.p2pchat_pid();
    // SAFETY: kill(2) on the p2pchat process of our own pane.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTSTP) }, 0);
    c.pane.wait("the shell after SIGTSTP", |s| s.input() == "$");
    c.pane.type_text("fg");
    c.pane.keys(&["Enter"]);
    c.pane.expect_input("draft", PW + 5);

    c.pane.keys(&["Enter"]);
    c.bob.expect_line("alice: draft");
}

#[test]
fn failure_to_join_restores_the_terminal_and_exits_1() {
    let home = TempDir::new("nojoin");
    let port = util::free_port();
    let cmd = wrapped(&alice_cmd(&home, &[], port));
    let pane = Pane::start("nojoin", home.path(), 80, 24, &cmd);
    assert_eq!(wait_wrapped(&pane), 1, "exit status\n{}", pane.snap());
    let s = pane.snap();
    assert!(
        s.has(&format!("p2pchat: cannot reach 127.0.0.1:{port}")),
        "\n{s}"
    );
    assert!(!s.has(PROMPT.trim_end()), "input line left on screen\n{s}");
    assert_same_tty(home.path(), "before", "after");
}

#[test]
fn closing_the_terminal_leaves() {
    let mut c = Chat::start("hangup", &[], 80, Launch::Exec);
    c.pane.type_text("half");
    c.pane.expect_input("half", PW + 4);
    let pid = c.pane.p2pchat_pid();
    c.pane.tmux(&["kill-pane"]);
    c.bob.expect_line("* alice left");
    let deadline = Instant::now() + DEADLINE;
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "p2pchat still running after SIGHUP"
        );
        thread::sleep(POLL);
    }
}

/// Emoji that terminals draw two columns wide, outside the ranges every
/// table has (U+1F300..U+1F64F): the cursor and the scrolling must agree
/// with the terminal.
#[test]
fn wide_emoji_are_measured_as_the_terminal_draws_them() {
    let mut c = Chat::start("emoji", &[], 80, Launch::Exec);
    // U+2615 HOT BEVERAGE, U+26A1 HIGH VOLTAGE, U+1FAE0 MELTING FACE: East
    // Asian Width W, two columns in tmux, VTE, kitty and xterm.
    c.pane.type_text("☕⚡🫠");
    c.pane.expect_input("☕⚡🫠", PW + 6);
    c.pane.keys(&["C-u"]);
    c.pane.expect_input("", PW);
    let cups = "☕".repeat(40);
    c.pane.type_text(&cups);
    // 80 - 15 - 1 = 64 columns for the input: the last 32 cups.
    let s = c.pane.expect_input(&"☕".repeat(32), PW + 64);
    assert_eq!(s.count("☕"), 1, "the input line wrapped\n{s}");
    c.pane.keys(&["Enter"]);
    c.bob.expect_line(&format!("alice: {cups}"));
}

/// A port that accepts connections (the kernel does) and never answers.
fn silent_port() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// While joining a peer that never answers, the line editor is live: typed
/// keys are echoed, Enter refuses to send, Ctrl-C clears the line and then
/// cancels the join; and nothing typed reaches the shell, also after the
/// join times out.
#[test]
fn keys_typed_while_joining_never_reach_the_shell() {
    let home = TempDir::new("joining");
    let (_silent, port) = silent_port();
    let dash = ["/bin/dash", "/usr/bin/dash"]
        .iter()
        .any(|p| Path::new(p).exists());
    let shell = format!("exec env PS1='$ ' {} -i", if dash { "dash" } else { "sh" });
    let pane = Pane::start("joining", home.path(), 80, 24, &shell);
    pane.wait("the shell prompt", |s| s.input() == "$");
    let cmd = alice_cmd(&home, &[], port);

    // Until the join times out.
    pane.type_text(&cmd);
    pane.keys(&["Enter"]);
    pane.expect_input("", PW);
    pane.type_text("echo LEAK$((3+3))");
    pane.expect_input("echo LEAK$((3+3))", PW + 17);
    pane.keys(&["Enter"]);
    pane.wait("the refusal", |s| s.has("not in the network yet"));
    pane.type_text("echo LEAK$((4+4))");
    pane.wait("the timeout", |s| {
        s.has(&format!("cannot reach 127.0.0.1:{port}")) && s.input() == "$"
    });

    // Ctrl-C cancels.
    pane.type_text(&cmd);
    pane.keys(&["Enter"]);
    pane.expect_input("", PW);
    pane.type_text("echo LEAK$((5+5))");
    pane.expect_input("echo LEAK$((5+5))", PW + 17);
    pane.keys(&["C-c"]);
    pane.expect_input("", PW);
    pane.keys(&["C-c"]);
    pane.wait("the shell again", |s| s.input() == "$");
    pane.type_text("echo DONE$((4+5))");
    pane.keys(&["Enter"]);
    let s = pane.wait("the shell's answer", |s| {
        s.rows.iter().any(|r| r == "DONE9")
    });
    for leak in ["LEAK6", "LEAK8", "LEAK10"] {
        assert!(
            !s.rows.iter().any(|r| r == leak),
            "typed keys reached the shell: {leak}\n{s}"
        );
    }
}

/// A pasted block is text, held until Enter: a `:q` in it is sent, not run.
#[test]
fn pasted_lines_are_text_never_commands() {
    let mut c = Chat::start("paste", &[], 80, Launch::Exec);
    c.pane.type_text("see: ");
    c.pane
        .tmux(&["set-buffer", "--", "in vim type\n:q\n\nto quit"]);
    c.pane.tmux(&["paste-buffer", "-p"]);
    c.pane.wait("the held paste", |s| {
        s.input().starts_with(&format!(
            "{PROMPT}[4 lines pasted: Enter sends, Ctrl-C drops] see: in vim"
        ))
    });
    c.pane.keys(&["Enter"]);
    c.bob.expect_line("alice: see: in vim type");
    c.bob.expect_line("alice: :q");
    c.bob.expect_line("alice: ");
    c.bob.expect_line("alice: to quit");
    c.pane.expect_input("", PW);
    c.pane.type_text("still here");
    c.pane.keys(&["Enter"]);
    c.bob.expect_line("alice: still here");
    c.bob.assert_no_out("left", &|l| l.contains("alice left"));
    // A line at its limit says so.
    c.pane.type_text(&"z".repeat(4100));
    c.pane.wait("the full line notice", |s| {
        s.has("the line is full (4096 characters)")
    });
    c.pane.keys(&["C-c"]);
    c.pane.expect_input("", PW);
}

/// Two instances share the history file: each line is appended when it is
/// entered, so neither overwrites the other and a killed one keeps its
/// lines.
#[test]
fn history_is_appended_by_every_instance() {
    let home = TempDir::new("histshare");
    let mut bob = Peer::start("bob");
    let a = Pane::start(
        "hist-a",
        home.path(),
        80,
        24,
        &format!("exec {}", peer_cmd(&home, &[], "alice", bob.port())),
    );
    a.expect_input("", PW);
    bob.expect_line("* alice joined");
    let b = Pane::start(
        "hist-c",
        home.path(),
        80,
        24,
        &format!("exec {}", peer_cmd(&home, &[], "carol", bob.port())),
    );
    b.wait("carol's prompt", |s| s.input() == "[lobby] carol>");
    bob.expect_line("* carol joined");
    for (p, who, line) in [
        (&a, "alice", "from alice 1"),
        (&b, "carol", "from carol 1"),
        (&a, "alice", "from alice 2"),
        (&b, "carol", "from carol 2"),
    ] {
        p.type_text(line);
        p.keys(&["Enter"]);
        bob.expect_line(&format!("{who}: {line}"));
    }
    // carol dies without a word; alice leaves.
    let pid = b.p2pchat_pid();
    // SAFETY: kill(2) on the p2pchat process of our own pane.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    a.type_text(":q");
    a.keys(&["Enter"]);
    bob.expect_line("* alice left");
    let saved = fs::read_to_string(state_of(&home).join("p2pchat/history")).unwrap();
    let lines: Vec<&str> = saved.lines().collect();
    assert_eq!(
        lines,
        [
            "from alice 1",
            "from carol 1",
            "from alice 2",
            "from carol 2",
            ":q"
        ],
        "{saved}"
    );
}

/// With stdout a pipe, the line editor still runs on the terminal and the
/// chat shows there; stdout gets the plain lines.
#[test]
fn piped_stdout_keeps_the_line_editor() {
    let mut c = Chat::start("piped", &[], 80, Launch::Piped);
    c.pane.type_text("helo wrld");
    c.pane.keys(&["Left", "Left", "Left"]);
    c.pane.type_text("o");
    c.pane.keys(&["Home", "Right", "Right"]);
    c.pane.type_text("l");
    c.pane.expect_input("hello world", PW + 3);
    c.pane.keys(&["Enter"]);
    c.bob.expect_line("alice: hello world");
    c.pane.type_text("half");
    // The half line is on the screen before bob's line comes.
    c.pane.expect_input("half", PW + 4);
    c.bob.send("incoming");
    let s = c
        .pane
        .wait("bob's line", |s| s.stamped("bob: incoming").is_some());
    assert_eq!(s.input(), format!("{PROMPT}half"), "\n{s}");
    c.pane.keys(&["C-u"]);
    c.pane.type_text(":q");
    c.pane.keys(&["Enter"]);
    c.bob.expect_line("* alice left");
    let out = c.home.path().join("out");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = fs::read_to_string(&out).unwrap_or_default();
        if text.lines().any(|l| l == "bob: incoming") {
            assert!(text.starts_with("listening on port "), "{text}");
            assert!(!text.contains('\x1b'), "escapes on stdout: {text:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stdout has no bob line: {text:?}"
        );
        thread::sleep(POLL);
    }
}

/// Ctrl-C clears a line, Ctrl-Y yanks, Alt-D and Alt-Backspace delete
/// words, Ctrl-R searches the history, Backspace takes a whole grapheme
/// cluster, Tab completes names and commands.
#[test]
fn readline_keys_and_completion() {
    let mut c = Chat::start("morekeys", &[], 80, Launch::Exec);
    let p = &c.pane;
    p.type_text("one two three");
    p.keys(&["M-BSpace"]);
    p.expect_input("one two ", PW + 8);
    p.keys(&["C-a", "M-d"]);
    p.expect_input(" two ", PW);
    p.keys(&["C-e", "C-y"]);
    p.expect_input(" two one", PW + 8);
    p.keys(&["C-c"]);
    p.expect_input("", PW);
    let family = "\u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467}\u{200d}\u{1f466}";
    p.type_text(&format!("a{family}"));
    p.keys(&["BSpace"]);
    p.expect_input("a", PW + 1);
    p.keys(&["BSpace"]);
    p.type_text("b");
    p.keys(&["Tab"]);
    p.expect_input("bob: ", PW + 5);
    p.type_text("hi");
    p.keys(&["Enter"]);
    c.bob.expect_line("alice: bob: hi");
    // `/wh` completes as far as :who and :whois agree; `/tr` to :trust.
    p.type_text("/wh");
    p.keys(&["Tab"]);
    p.expect_input("/who", PW + 4);
    p.keys(&["C-u"]);
    p.type_text("/tr");
    p.keys(&["Tab"]);
    p.expect_input("/trust ", PW + 7);
    p.keys(&["C-u"]);
    p.keys(&["C-r"]);
    p.type_text("bob");
    p.wait("the search", |s| {
        s.input() == format!("{PROMPT}(reverse-i-search)'bob': bob: hi")
    });
    p.keys(&["Enter"]);
    c.bob.expect_line("alice: bob: hi");
    c.pane.expect_input("", PW);
}

/// Long messages wrap with their rows indented under the text; names get
/// 256 colours where the terminal has them; a narrow terminal keeps a
/// short prompt.
#[test]
fn wrapping_colours_and_a_narrow_prompt() {
    let env = [("TERM", "screen-256color")];
    let mut c = Chat::start("wrap", &env, 80, Launch::Exec);
    c.pane.resize(40);
    c.pane
        .wait("40 columns", |_| c.pane.display("#{pane_width}") == "40");
    // The pane is 40 wide; wait until p2pchat draws for 40 too: 30 typed
    // characters after the prompt then scroll on one row instead of being
    // wrapped by the terminal onto a second.
    c.pane.type_text(&"x".repeat(30));
    c.pane.wait("the input line drawn for 40 columns", |s| {
        s.input().matches('x').count() >= 20
    });
    c.pane.keys(&["C-u"]);
    let words = "one two three four five six seven eight nine ten eleven";
    c.bob.send(words);
    let s = c.pane.wait("bob's wrapped line", |s| {
        s.rows
            .iter()
            .any(|r| r.ends_with("bob: one two three four five six"))
    });
    let at = s
        .rows
        .iter()
        .position(|r| r.ends_with("bob: one two three four five six"))
        .unwrap();
    assert_eq!(
        s.rows[at + 1],
        format!("{}seven eight nine ten eleven", " ".repeat(11)),
        "\n{s}"
    );
    let e = c.pane.snap_with(true);
    let row = e.rows.iter().find(|r| r.contains("bob")).unwrap();
    assert!(row.contains("\x1b[38;5;"), "no 256-colour name: {row:?}");
    c.pane.resize(16);
    c.pane
        .wait("a short prompt", |s| s.input() == ">" && s.x == 2);
    c.pane.type_text("hi");
    c.pane
        .wait("the input", |s| s.input() == "> hi" && s.x == 4);
    c.pane.keys(&["Enter"]);
    c.bob.expect_line("alice: hi");
}

/// On the terminal: an action shows as `* bob waves` with bob's colour,
/// a rename as `* bob is now robert`; Tab completes the new name; our
/// own rename changes the prompt, and mentions of the new name are
/// highlighted. A line said yesterday (as one fetched late would be) is
/// stamped with its date.
#[test]
fn actions_renames_and_late_lines_on_the_terminal() {
    use p2pchat::proto::wire::Body;
    use util::frames;
    use util::raw::Raw;
    let mut c = Chat::start("renames", &[], 80, Launch::Exec);
    c.bob.send("/me waves");
    c.pane
        .wait("the action", |s| s.stamped("* bob waves").is_some());
    c.bob.send("/nick robert");
    c.pane
        .wait("the rename", |s| s.stamped("* bob is now robert").is_some());
    c.pane.type_text("ro");
    c.pane.keys(&["Tab"]);
    c.pane.expect_input("robert: ", PW + 8);
    c.pane.keys(&["C-u"]);
    c.pane.type_text("/nick alicia");
    c.pane.keys(&["Enter"]);
    c.bob.expect_line("* alice is now alicia");
    c.pane.wait("the new prompt", |s| {
        s.input() == "[lobby] alicia>" && s.stamped("* alice is now alicia").is_some()
    });
    c.bob.send("hey Alicia, look");
    c.pane.wait("the mention", |s| {
        s.stamped("robert: hey Alicia, look").is_some()
    });
    let e = c.pane.snap_with(true);
    let mention = e.rows.iter().find(|r| r.contains("look")).unwrap();
    assert!(
        mention.contains("\x1b[7m"),
        "new name not highlighted: {mention:?}"
    );

    // Yesterday's line, from a member that speaks the wire protocol.
    let yesterday = frames::now_ms() - 26 * 3_600_000;
    let m = frames::who(0x7474_7979);
    let mut r = Raw::connect(c.bob.port());
    r.hello(&m, "yester", true);
    let bodies = vec![
        frames::join_body(&m, "yester", 1),
        Body::Clock { time: yesterday },
        frames::lobby("from yesterday"),
    ];
    for msg in frames::sealed(&m, 1, bodies) {
        r.send(&msg);
    }
    let out = Command::new("date")
        .args(["-d", &format!("@{}", yesterday / 1000), "+%Y-%m-%d %H:%M"])
        .output()
        .unwrap();
    let when = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    c.pane.wait("yesterday's line with its date", |s| {
        s.rows
            .iter()
            .any(|row| *row == format!("{when} yester: from yesterday"))
    });
}

/// With `--irc`, the terminal and an IRC client are front ends of the
/// same peer at once: each shows what the other sends.
#[test]
fn the_terminal_works_beside_an_irc_client() {
    use std::io::{BufRead, BufReader, Write};
    let home = TempDir::new("irc");
    let mut bob = Peer::start("bob");
    let cmd =
        alice_cmd(&home, &[], bob.port()).replacen(" -b 127.0.0.1 ", " -b 127.0.0.1 --irc 0 ", 1);
    let pane = Pane::start("irc", home.path(), 80, 24, &format!("exec {cmd}"));
    let s = pane.wait("the irc line", |s| s.has("* irc on 127.0.0.1:"));
    let row = s.rows.iter().find(|r| r.contains("* irc on")).unwrap();
    let port: u16 = row.rsplit(':').next().unwrap().parse().unwrap();
    bob.expect_line("* alice joined");
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut expect = |want: &str| loop {
        let mut l = String::new();
        assert!(
            r.read_line(&mut l).unwrap() > 0,
            "IRC closed before {want:?}"
        );
        if l.trim_end() == want {
            break;
        }
    };
    w.write_all(b"NICK al\r\nUSER al 0 * :al\r\n").unwrap();
    expect(":p2pchat 366 alice #lobby :End of /NAMES list");
    w.write_all(b"PRIVMSG #lobby :from irc\r\n").unwrap();
    bob.expect_line("alice: from irc");
    pane.wait("alice's line from IRC", |s| {
        s.stamped("alice: from irc").is_some()
    });
    pane.type_text("from the terminal");
    pane.keys(&["Enter"]);
    bob.expect_line("alice: from the terminal");
    expect(":alice!alice@p2pchat PRIVMSG #lobby :from the terminal");
    bob.send("hi both");
    expect(":bob!bob@p2pchat PRIVMSG #lobby :hi both");
    pane.wait("bob's line", |s| s.stamped("bob: hi both").is_some());
    pane.expect_input("", PW);
}

/// A room's history line said yesterday shows on the terminal with the
/// date and time it was said (issue 18, item 9), not when it is shown.
#[test]
fn history_lines_on_the_terminal_show_when_they_were_said() {
    use util::frames;
    use util::raw::Raw;
    let mut c = Chat::start("history", &[], 80, Launch::Exec);
    c.bob.send(":create dev");
    c.bob.expect_line("* you are in dev");
    let m = frames::who(0x6869_7374);
    let yesterday = frames::now_ms() - 26 * 3_600_000;
    let said = "said yesterday";
    let _r = Raw::say_in_room_at(c.bob.port(), &m, "yester", "dev", yesterday, said);
    c.bob.expect_line("[dev] yester: said yesterday");
    c.pane.type_text("/join dev");
    c.pane.keys(&["Enter"]);
    let out = Command::new("date")
        .args(["-d", &format!("@{}", yesterday / 1000), "+%Y-%m-%d %H:%M"])
        .output()
        .unwrap();
    let when = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    c.pane.wait("the history line with its date", |s| {
        s.rows
            .iter()
            .any(|row| *row == format!("{when} ~ yester: said yesterday"))
    });
}

/// A fetch in the terminal: the progress bar (with rate and time left)
/// while it goes, and the line that says it is saved at its end. The
/// sender is held still (SIGSTOP) until the progress interval (one
/// second) has passed since the fetch started, so that the first chunk
/// to come is shown with a bar however fast the rest goes.
#[test]
fn a_fetch_shows_a_progress_bar_and_its_end() {
    let dl = TempDir::new("tty-dl");
    let mut c = Chat::start(
        "progress",
        &[("XDG_DOWNLOAD_DIR", dl.str())],
        120,
        Launch::Exec,
    );
    let src = TempDir::new("tty-src");
    let f = src.path().join("big.bin");
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    fs::write(&f, &data).unwrap();
    c.bob.send(&format!(":send {}", f.display()));
    c.bob.expect_contains("* you offer big.bin (1.0 MB)");
    let p = &c.pane;
    p.wait("the offer", |s| {
        s.has("* bob offers big.bin (1.0 MB): :get 1")
    });
    c.bob.signal(libc::SIGSTOP);
    p.type_text(":get 1");
    p.keys(&["Enter"]);
    let part = dl.path().join("big.bin.part");
    let end = Instant::now() + DEADLINE;
    while !part.exists() {
        assert!(Instant::now() < end, "no part\n{}", p.snap());
        thread::sleep(POLL);
    }
    // No line marks the interval's end: it is waited out.
    thread::sleep(Duration::from_millis(1_200));
    c.bob.signal(libc::SIGCONT);
    let s = p.wait("the saved line", |s| {
        s.has("* get 1: big.bin from bob saved as ")
    });
    let bar = s
        .rows
        .iter()
        .find(|r| r.starts_with('[') && r.contains("] get 1: big.bin "))
        .unwrap_or_else(|| panic!("no progress bar\n{s}"));
    // [####................] get 1: big.bin 6% (64.0 kB of 1.0 MB) at 53.3 kB/s, 17 s left
    let inside = &bar[1..bar.find(']').unwrap()];
    assert_eq!(inside.len(), 20, "{bar}");
    assert!(
        inside.trim_start_matches('#').chars().all(|c| c == '.'),
        "{bar}"
    );
    assert!(bar.contains(" of 1.0 MB) at "), "{bar}");
    assert!(bar.contains("/s, ") && bar.ends_with(" s left"), "{bar}");
    assert!(s.has(&format!(
        "saved as {} (1.0 MB, hash verified)",
        dl.path().join("big.bin").display()
    )));
    assert_eq!(fs::read(dl.path().join("big.bin")).unwrap(), data);
}
