//! The command line and the config file: options in, a [`Opts`] out, or
//! a usage error.
//!
//! The config file (`$XDG_CONFIG_HOME/p2pchat/config`) holds defaults set
//! once, as `key = value` lines; `#` starts a comment. The command line
//! wins over it.

use crate::name;
use getopts::Options;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// The one-line synopsis, printed with usage errors.
pub const USAGE: &str = "usage: p2pchat [-hV] [--plain | --json] [--no-input] [--timestamps] [--log]\n\
     \x20              [--identity file] [--secret-file file] [--secure-only] [--flood]\n\
     \x20              [--download-dir dir] [--max-file size]\n\
     \x20              [--irc [address:]port [--irc-public] [--irc-password-file file]]\n\
     \x20              [--discover [--network name]] [-b address] [-d degree] [-D max]\n\
     \x20              [-p port] name [host port | host:port]";

/// The most links `-D` may allow: the node's bound on links.
const MAX_DEGREE: usize = crate::node::MAX_LINKS;

/// How events are written to standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The line editor when stdin and stdout are terminals, plain otherwise.
    Auto,
    Plain,
    Json,
}

/// A validated command line.
#[derive(Debug, Clone)]
pub struct Opts {
    pub name: String,
    /// The peers to join through, tried in order: host and port, as typed.
    /// Empty: start a new network.
    pub join: Vec<(String, u16)>,
    /// The listen address; None: `::` and 0.0.0.0 at once (dual-stack).
    pub bind: Option<IpAddr>,
    pub port: u16,
    pub mode: Mode,
    pub no_input: bool,
    /// Links to keep: dial more below this.
    pub degree: usize,
    /// Links to allow: shed some above this.
    pub max_degree: usize,
    /// Each plain output line starts with the date and time.
    pub timestamps: bool,
    /// Chat logs in `$XDG_STATE_HOME/p2pchat/logs/`.
    pub log: bool,
    /// Colours on the terminal: `None` is automatic (off with `NO_COLOR`).
    pub color: Option<bool>,
    /// LAN discovery (`--discover`), if on.
    pub discover: Option<crate::discover::Settings>,
    /// The identity key file; `None`: the default one.
    pub identity: Option<PathBuf>,
    /// The file holding the network secret (else `P2PCHAT_SECRET`).
    pub secret_file: Option<PathBuf>,
    /// Refuse to run without a network secret.
    pub secure_only: bool,
    /// Where fetched files go.
    pub download_dir: PathBuf,
    /// The largest file offered or fetched, in bytes.
    pub max_file: u64,
    /// Relay every message on every link, not on a tree (for comparison).
    pub flood: bool,
    /// The IRC gateway (`--irc`).
    pub irc: Option<Irc>,
}

/// The IRC gateway's options.
#[derive(Debug, Clone)]
pub struct Irc {
    pub addr: SocketAddr,
    /// The file holding the password (else `P2PCHAT_IRC_PASSWORD`).
    pub password_file: Option<PathBuf>,
}

/// Defaults from the config file; `None` and empty are "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub name: Option<String>,
    pub join: Vec<(String, u16)>,
    pub color: Option<bool>,
    pub log: Option<bool>,
    pub timestamps: Option<bool>,
    pub discover: Option<bool>,
    pub network: Option<String>,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    /// Boxed: the options are many, help and version none.
    Run(Box<Opts>),
    Help,
    Version,
}

fn options() -> Options {
    let mut o = Options::new();
    o.optopt(
        "b",
        "bind",
        "listen on this address (default: every IPv6 and IPv4 address)",
        "ADDRESS",
    );
    o.optopt(
        "p",
        "port",
        "listen on this port (default: any free port)",
        "PORT",
    );
    o.optopt(
        "d",
        "degree",
        &format!(
            "links to keep to other peers (default {})",
            crate::node::DEGREE
        ),
        "N",
    );
    o.optopt(
        "D",
        "max-degree",
        "shed links above this many (default twice the degree)",
        "N",
    );
    o.optflag("", "plain", "plain lines on stdout, even on a terminal");
    o.optflag(
        "",
        "json",
        "JSON lines on stdout (and JSON input unless stdin is a terminal)",
    );
    o.optflag("", "no-input", "ignore stdin; run until a signal (a relay)");
    o.optflag(
        "",
        "timestamps",
        "start each plain output line with the date and time",
    );
    o.optflag("", "log", "keep chat logs in $XDG_STATE_HOME/p2pchat/logs/");
    o.optflag(
        "",
        "discover",
        "find peers on the LAN by UDP multicast, and be found (with or without host and port)",
    );
    o.optopt(
        "",
        "network",
        "the network --discover announces and looks for (default lobby)",
        "NAME",
    );
    o.optmulti(
        "",
        "discover-group",
        "multicast group for --discover, one per address family \
         (default 239.255.77.77 and ff02::7077:7077)",
        "ADDRESS",
    );
    o.optopt(
        "",
        "discover-port",
        "UDP port for --discover (default 47777)",
        "PORT",
    );
    o.optopt(
        "",
        "identity",
        "the identity key file (default $XDG_CONFIG_HOME/p2pchat/identity)",
        "FILE",
    );
    o.optopt(
        "",
        "secret-file",
        "the network secret, read from FILE (or set P2PCHAT_SECRET)",
        "FILE",
    );
    o.optflag(
        "",
        "secure-only",
        "refuse to run without a network secret (every link encrypted)",
    );
    o.optopt(
        "",
        "download-dir",
        "where fetched files go (default $XDG_DOWNLOAD_DIR or ~/Downloads)",
        "DIR",
    );
    o.optopt(
        "",
        "max-file",
        "largest file offered or fetched, e.g. 500M, 2G (default 4G)",
        "SIZE",
    );
    o.optopt(
        "",
        "irc",
        "also be an IRC server here, for an IRC client (default address 127.0.0.1)",
        "[ADDRESS:]PORT",
    );
    o.optflag(
        "",
        "irc-public",
        "let --irc listen on an address other than loopback (needs a password)",
    );
    o.optopt(
        "",
        "irc-password-file",
        "the IRC clients' PASS, read from FILE (or set P2PCHAT_IRC_PASSWORD)",
        "FILE",
    );
    o.optflag(
        "",
        "flood",
        "relay every message on every link, not once per peer (to compare)",
    );
    o.optflag("h", "help", "print this help and exit");
    o.optflag("V", "version", "print the version and exit");
    o
}

/// The text of `--help`.
pub fn help() -> String {
    let brief = format!(
        "{USAGE}\n\n\
         Serverless group chat for the terminal. With no host and port, start a\n\
         new network; with them, join the network of the peer listening there.\n\
         With --discover, find peers on the LAN, and be found there.\n\
         Type a line to send it to your room (the lobby at first; :rooms lists\n\
         the rooms, :create and :join enter one); :msg NAME TEXT sends a private\n\
         message, encrypted to NAME, kept for NAME if away; :help (or /help)\n\
         lists the commands. Defaults come from $XDG_CONFIG_HOME/p2pchat/config\n\
         (see the man page)."
    );
    options().usage(&brief)
}

/// Parses the arguments after the program name, without a config file.
pub fn parse(args: &[String]) -> Result<Parsed, String> {
    parse_with(args, || Ok(Config::default()))
}

/// Parses the arguments after the program name; `config` is asked for the
/// config file's defaults unless the arguments ask for help or the version.
pub fn parse_with(
    args: &[String],
    config: impl FnOnce() -> Result<Config, String>,
) -> Result<Parsed, String> {
    let m = options().parse(args).map_err(|e| e.to_string())?;
    if m.opt_present("h") {
        return Ok(Parsed::Help);
    }
    if m.opt_present("V") {
        return Ok(Parsed::Version);
    }
    let cfg = config()?;
    let mode = match (m.opt_present("plain"), m.opt_present("json")) {
        (true, true) => return Err("cannot use --plain and --json together".into()),
        (true, false) => Mode::Plain,
        (false, true) => Mode::Json,
        (false, false) => Mode::Auto,
    };
    let bind = match m.opt_str("b") {
        None => None,
        Some(s) => Some(
            s.parse()
                .map_err(|_| format!("bad bind address {s:?}: expected an IP address"))?,
        ),
    };
    let listen_port = match m.opt_str("p") {
        None => 0,
        Some(s) => port(&s)?,
    };
    let degree = match m.opt_str("d") {
        None => crate::node::DEGREE,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=64).contains(&n) => n,
            _ => return Err(format!("bad degree {s:?}: expected 1 to 64")),
        },
    };
    let max_degree = match m.opt_str("D") {
        None => 2 * degree,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (degree..=MAX_DEGREE).contains(&n) => n,
            _ => {
                return Err(format!(
                    "bad max degree {s:?}: expected {degree} (the degree) to {MAX_DEGREE}"
                ));
            }
        },
    };
    let discover = discover_settings(&m, &cfg)?;
    // The config's name and peers count only when no name is given: a
    // name alone starts a new network.
    let (name, join) = match m.free.as_slice() {
        [] => match cfg.name {
            Some(n) => (n, cfg.join),
            None => return Err("a name is required".into()),
        },
        [name] => (name.clone(), Vec::new()),
        [name, hp] => (name.clone(), vec![host_port(hp)?]),
        [name, host, p] => (name.clone(), vec![(host.clone(), port(p)?)]),
        _ => return Err("too many arguments".into()),
    };
    if let Err(e) = name::valid(&name) {
        return Err(format!("bad name {name:?}: {e}"));
    }
    if join.iter().any(|(_, p)| *p == 0) {
        return Err("bad port 0 for the peer to join".into());
    }
    let irc = m.opt_str("irc").map(|s| irc_addr(&s)).transpose()?;
    if let Some(a) = irc
        && !a.ip().is_loopback()
        && !m.opt_present("irc-public")
    {
        return Err(format!(
            "--irc {a}: not a loopback address; add --irc-public (and set a password) to allow it"
        ));
    }
    if irc.is_none() && (m.opt_present("irc-public") || m.opt_present("irc-password-file")) {
        return Err("--irc-public and --irc-password-file need --irc".into());
    }
    Ok(Parsed::Run(Box::new(Opts {
        name,
        join,
        bind,
        port: listen_port,
        mode,
        no_input: m.opt_present("no-input"),
        degree,
        max_degree,
        timestamps: m.opt_present("timestamps") || cfg.timestamps == Some(true),
        log: m.opt_present("log") || cfg.log == Some(true),
        color: cfg.color,
        discover,
        identity: m.opt_str("identity").map(PathBuf::from),
        secret_file: m.opt_str("secret-file").map(PathBuf::from),
        secure_only: m.opt_present("secure-only"),
        download_dir: m
            .opt_str("download-dir")
            .map_or_else(download_dir, PathBuf::from),
        max_file: match m.opt_str("max-file") {
            None => crate::app::files::DEFAULT_MAX_FILE,
            Some(s) => size(&s)?,
        },
        flood: m.opt_present("flood"),
        irc: irc.map(|addr| Irc {
            addr,
            password_file: m.opt_str("irc-password-file").map(PathBuf::from),
        }),
    })))
}

/// The `--irc` address: `PORT` (on 127.0.0.1), `ADDRESS:PORT` or
/// `[V6ADDRESS]:PORT`.
fn irc_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(p) = s.parse::<u16>() {
        return Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), p));
    }
    s.parse().map_err(|_| {
        format!("bad --irc address {s:?}: expected PORT, ADDRESS:PORT or [ADDRESS]:PORT")
    })
}

/// The default download directory: `$XDG_DOWNLOAD_DIR`, else
/// `$HOME/Downloads` (relative values ignored), else the current one.
fn download_dir() -> PathBuf {
    let absolute = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    match (
        absolute(std::env::var_os("XDG_DOWNLOAD_DIR")),
        absolute(std::env::var_os("HOME")),
    ) {
        (Some(d), _) => d,
        (None, Some(h)) => h.join("Downloads"),
        (None, None) => PathBuf::from("."),
    }
}

/// A size: bytes, or a number with k, M, G or T (powers of 1024).
fn size(s: &str) -> Result<u64, String> {
    let bad = || format!("bad size {s:?}: expected bytes or a number with k, M, G or T");
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_lowercase() {
                'k' => 1u64 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                't' => 1 << 40,
                _ => return Err(bad()),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(bad)
}

/// `--discover` and its options (the config file's `discover` and
/// `network` as defaults).
fn discover_settings(
    m: &getopts::Matches,
    cfg: &Config,
) -> Result<Option<crate::discover::Settings>, String> {
    use crate::proto::discovery::valid_network;
    let on = m.opt_present("discover") || cfg.discover == Some(true);
    if !on {
        for o in ["network", "discover-group", "discover-port"] {
            if m.opt_present(o) {
                return Err(format!("--{o} is for --discover"));
            }
        }
        return Ok(None);
    }
    let mut s = crate::discover::Settings::default();
    if let Some(n) = m.opt_str("network").or_else(|| cfg.network.clone()) {
        valid_network(&n).map_err(|e| format!("bad network name {n:?}: {e}"))?;
        s.network = n;
    }
    let groups = m.opt_strs("discover-group");
    if !groups.is_empty() {
        s.groups.clear();
        for g in groups {
            let ip: IpAddr = g.parse().ok().filter(IpAddr::is_multicast).ok_or_else(|| {
                format!("bad discovery group {g:?}: expected a multicast address")
            })?;
            if s.groups.iter().any(|x| x.is_ipv4() == ip.is_ipv4()) {
                return Err("--discover-group: one group per address family".into());
            }
            s.groups.push(ip);
        }
    }
    if let Some(p) = m.opt_str("discover-port") {
        s.port = match port(&p)? {
            0 => return Err("bad discovery port 0".into()),
            n => n,
        };
    }
    Ok(Some(s))
}

/// `host:port`, `[v6addr]:port` (or a lone host or port, refused with
/// what is missing).
fn host_port(s: &str) -> Result<(String, u16), String> {
    if let Some(rest) = s.strip_prefix('[') {
        return match rest.split_once("]:") {
            Some((host, p)) if !host.is_empty() => Ok((host.to_owned(), port(p)?)),
            _ => Err(format!(
                "bad peer address {s:?}: expected [ADDRESS]:PORT or ADDRESS PORT"
            )),
        };
    }
    if s.parse::<Ipv6Addr>().is_ok() {
        return Err(format!(
            "the host {s:?} needs a port: [{s}]:PORT or {s} PORT"
        ));
    }
    match s.rsplit_once(':') {
        Some((host, p)) if !host.is_empty() && !host.contains(':') => {
            Ok((host.to_owned(), port(p)?))
        }
        Some(_) => Err(format!(
            "bad peer address {s:?}: expected HOST:PORT or HOST PORT"
        )),
        None if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("the port {s} needs a host: HOST {s} or HOST:{s}"))
        }
        None => Err(format!("the host {s:?} needs a port: {s} PORT or {s}:PORT")),
    }
}

/// Where the config file is: `$XDG_CONFIG_HOME/p2pchat/config`, or
/// `$HOME/.config/p2pchat/config` when that is unset or not absolute.
pub fn config_path() -> Option<PathBuf> {
    let absolute = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    match (
        absolute(std::env::var_os("XDG_CONFIG_HOME")),
        absolute(std::env::var_os("HOME")),
    ) {
        (Some(c), _) => Some(c.join("p2pchat/config")),
        (None, Some(h)) => Some(h.join(".config/p2pchat/config")),
        (None, None) => None,
    }
}

/// Reads the config file at `path`; a missing file is an empty config.
///
/// # Errors
///
/// Unreadable file, or the first bad line, as `PATH:LINE: problem`.
pub fn load_config(path: &Path) -> Result<Config, String> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes)
                .map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
            parse_config(&text).map_err(|(n, e)| format!("{}:{n}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Parses config text: `key = value` lines, blank lines, `#` comments.
/// Keys: `name`, `join` (peers, separated by commas, each `host port`,
/// `host:port` or `[v6addr]:port`), `color`, `log`, `timestamps`,
/// `discover` (each `on` or `off`), `network` (for `discover`).
///
/// # Errors
///
/// The line number (from 1) and what is wrong with it.
pub fn parse_config(text: &str) -> Result<Config, (usize, String)> {
    let mut cfg = Config::default();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err((n, format!("expected key = value, got {line:?}")));
        };
        let (key, value) = (key.trim(), value.trim());
        let flag = || match value {
            "on" | "yes" | "true" => Ok(Some(true)),
            "off" | "no" | "false" => Ok(Some(false)),
            _ => Err((n, format!("{key}: expected on or off, got {value:?}"))),
        };
        match key {
            "name" => {
                name::valid(value).map_err(|e| (n, format!("bad name {value:?}: {e}")))?;
                cfg.name = Some(value.to_owned());
            }
            "join" => {
                cfg.join.clear();
                for peer in value.split(',').map(str::trim) {
                    let words: Vec<&str> = peer.split_whitespace().collect();
                    let hp = match words[..] {
                        [hp] => host_port(hp),
                        [h, p] => port(p).map(|p| (h.to_owned(), p)),
                        _ => Err(format!(
                            "join: expected HOST PORT or HOST:PORT, got {peer:?}"
                        )),
                    };
                    cfg.join.push(hp.map_err(|e| (n, e))?);
                }
            }
            "color" | "colour" => cfg.color = flag()?,
            "discover" => cfg.discover = flag()?,
            "network" => {
                crate::proto::discovery::valid_network(value)
                    .map_err(|e| (n, format!("bad network name {value:?}: {e}")))?;
                cfg.network = Some(value.to_owned());
            }
            "log" => cfg.log = flag()?,
            "timestamps" => cfg.timestamps = flag()?,
            _ => return Err((n, format!("unknown key {key:?}"))),
        }
    }
    Ok(cfg)
}

fn port(s: &str) -> Result<u16, String> {
    s.parse()
        .map_err(|_| format!("bad port {s:?}: expected 0 to 65535"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Opts, String> {
        run_with(args, "")
    }

    fn run_with(args: &[&str], config: &str) -> Result<Opts, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let cfg = || parse_config(config).map_err(|(n, e)| format!("config:{n}: {e}"));
        match parse_with(&args, cfg)? {
            Parsed::Run(o) => Ok(*o),
            p => panic!("unexpected {p:?}"),
        }
    }

    fn peer(h: &str, p: u16) -> Vec<(String, u16)> {
        vec![(h.to_owned(), p)]
    }

    #[test]
    fn peer_address_forms() {
        assert_eq!(run(&["a", "h", "40"]).unwrap().join, peer("h", 40));
        assert_eq!(run(&["a", "h:40"]).unwrap().join, peer("h", 40));
        assert_eq!(
            run(&["a", "10.0.0.1:40"]).unwrap().join,
            peer("10.0.0.1", 40)
        );
        assert_eq!(run(&["a", "[::1]:40"]).unwrap().join, peer("::1", 40));
        assert_eq!(run(&["a", "::1", "40"]).unwrap().join, peer("::1", 40));
        let err = |args: &[&str]| run(args).unwrap_err();
        assert_eq!(
            err(&["a", "40123"]),
            "the port 40123 needs a host: HOST 40123 or HOST:40123"
        );
        assert_eq!(
            err(&["a", "example.org"]),
            r#"the host "example.org" needs a port: example.org PORT or example.org:PORT"#
        );
        assert!(err(&["a", "::1"]).contains("[::1]:PORT"));
        assert!(err(&["a", "h:x"]).starts_with("bad port"));
        assert!(err(&["a", "h:0"]).contains("port 0"));
        assert!(err(&["a", "[::1]"]).starts_with("bad peer address"));
        assert!(err(&["a", ":40"]).starts_with("bad peer address"));
    }

    #[test]
    fn names_are_checked_by_the_name_rules() {
        assert!(
            run(&["bob\u{200b}"])
                .unwrap_err()
                .contains("U+200B is invisible")
        );
        assert!(run(&["b\u{43e}b"]).is_ok());
        assert!(run(&["x\u{202e}"]).is_err());
    }

    #[test]
    fn config_gives_defaults_the_command_line_overrides() {
        let cfg = "# mine\n\nname = erin\njoin = h1 40, h2:41\ncolor = off\nlog = on\n";
        let o = run_with(&[], cfg).unwrap();
        assert_eq!(o.name, "erin");
        assert_eq!(o.join, [("h1".to_owned(), 40), ("h2".to_owned(), 41)]);
        assert_eq!((o.color, o.log, o.timestamps), (Some(false), true, false));
        // A name on the command line starts a new network.
        let o = run_with(&["frank"], cfg).unwrap();
        assert_eq!((o.name.as_str(), o.join.len()), ("frank", 0));
        let o = run_with(&["frank", "h3:42"], cfg).unwrap();
        assert_eq!(o.join, peer("h3", 42));
        assert!(run_with(&["--timestamps", "x"], "").unwrap().timestamps);
        assert!(run_with(&["x"], "timestamps = yes").unwrap().timestamps);
    }

    #[test]
    fn bad_config_lines_name_the_line() {
        for (text, want) in [
            ("name = erin\nfrob = 1", "config:2: unknown key \"frob\""),
            ("\n\njust words", "config:3: expected key = value"),
            ("color = purple", "config:1: color: expected on or off"),
            ("name = a b", "config:1: bad name"),
            ("join = host", "config:1: the host \"host\" needs a port"),
            ("join = h 1 2", "config:1: join: expected HOST PORT"),
        ] {
            let e = run_with(&[], text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
        // Help and version do not read the config at all.
        let args = vec!["-h".to_owned()];
        assert!(matches!(
            parse_with(&args, || Err("unread".into())),
            Ok(Parsed::Help)
        ));
    }

    #[test]
    fn good() {
        let o = run(&["alice"]).unwrap();
        assert_eq!((o.name.as_str(), o.port, o.join), ("alice", 0, vec![]));
        let o = run(&["-p", "4000", "-b", "127.0.0.1", "--json", "bob", "h", "40"]).unwrap();
        assert_eq!(o.join, peer("h", 40));
        assert_eq!(o.port, 4000);
        assert_eq!(o.mode, Mode::Json);
        assert!(run(&["--no-input", "--plain", "x"]).unwrap().no_input);
        assert!(!run(&["x"]).unwrap().flood);
        assert!(run(&["--flood", "x"]).unwrap().flood);
        let o = run(&["x"]).unwrap();
        assert_eq!((o.degree, o.max_degree), (6, 12));
        assert_eq!(o.bind, None, "default: dual-stack");
        let o = run(&["-b", "::", "x"]).unwrap();
        assert_eq!(o.bind, Some("::".parse().unwrap()));
        let o = run(&["-d", "3", "x"]).unwrap();
        assert_eq!((o.degree, o.max_degree), (3, 6));
        let o = run(&["-d", "2", "--max-degree", "2", "x"]).unwrap();
        assert_eq!((o.degree, o.max_degree), (2, 2));
        let irc = |a: &[&str]| run(a).unwrap().irc.map(|i| i.addr.to_string());
        assert_eq!(irc(&["x"]), None);
        assert_eq!(irc(&["--irc", "6667", "x"]).unwrap(), "127.0.0.1:6667");
        assert_eq!(irc(&["--irc", "[::1]:0", "x"]).unwrap(), "[::1]:0");
        assert_eq!(irc(&["--irc", "127.0.0.2:7", "x"]).unwrap(), "127.0.0.2:7");
        let o = run(&["--irc", "0.0.0.0:6667", "--irc-public", "x"]).unwrap();
        assert_eq!(o.irc.unwrap().addr.to_string(), "0.0.0.0:6667");
        let o = run(&["-D", "256", "x"]).unwrap();
        assert_eq!((o.degree, o.max_degree), (6, 256));
    }

    #[test]
    fn discovery_options() {
        use crate::discover::Settings;
        assert_eq!(run(&["x"]).unwrap().discover, None);
        let d = run(&["--discover", "x"]).unwrap().discover.unwrap();
        assert_eq!(d, Settings::default());
        assert_eq!(d.network, "lobby");
        assert_eq!(d.groups.len(), 2);
        // With host and port too: both ways of joining.
        let o = run(&["--discover", "x", "h", "40"]).unwrap();
        assert!(o.discover.is_some() && o.join == peer("h", 40));
        let d = run(&["--discover", "--network", "office", "x"]).unwrap();
        assert_eq!(d.discover.unwrap().network, "office");
        let d = run(&[
            "--discover",
            "--discover-group",
            "239.1.2.3",
            "--discover-port",
            "5000",
            "x",
        ])
        .unwrap()
        .discover
        .unwrap();
        assert_eq!(d.groups, ["239.1.2.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(d.port, 5000);
        let err = |args: &[&str]| run(args).unwrap_err();
        assert_eq!(err(&["--network", "o", "x"]), "--network is for --discover");
        assert!(err(&["--discover-port", "9", "x"]).contains("is for --discover"));
        assert!(err(&["--discover", "--discover-group", "10.0.0.1", "x"]).contains("multicast"));
        assert!(err(&["--discover", "--discover-group", "nowhere", "x"]).contains("multicast"));
        let two = [
            "--discover",
            "--discover-group",
            "239.1.1.1",
            "--discover-group",
        ];
        assert!(err(&[&two[..], &["239.2.2.2", "x"]].concat()).contains("one group per"));
        let both = run(&[&two[..], &["ff02::1:2", "x"]].concat()).unwrap();
        assert_eq!(both.discover.unwrap().groups.len(), 2);
        assert!(err(&["--discover", "--discover-port", "0", "x"]).contains("port 0"));
        assert!(err(&["--discover", "--network", "", "x"]).contains("bad network name"));
        // The config file: on, and the network.
        let o = run_with(&["x"], "discover = on\nnetwork = office").unwrap();
        assert_eq!(o.discover.unwrap().network, "office");
        assert_eq!(run_with(&["x"], "network = office").unwrap().discover, None);
        let o = run_with(
            &["--network", "lab", "x"],
            "discover = on\nnetwork = office",
        )
        .unwrap();
        assert_eq!(o.discover.unwrap().network, "lab");
        assert!(run_with(&["x"], "network = a\u{7}b").is_err());
    }

    #[test]
    fn bad() {
        for args in [
            &[][..],
            &["a", "b"],
            &["a", "b", "c", "d"],
            &["a", "4000"],
            &["a b"],
            &[""],
            &["-p", "70000", "a"],
            &["-p", "x", "a"],
            &["a", "h", "0"],
            &["--plain", "--json", "a"],
            &["-b", "nowhere", "a"],
            &["--frob", "a"],
            &["-d", "0", "a"],
            &["-d", "65", "a"],
            &["-d", "many", "a"],
            &["-D", "5", "a"],
            &["-d", "8", "-D", "7", "a"],
            &["-D", "257", "a"],
        ] {
            assert!(run(args).is_err(), "{args:?}");
        }
        assert!(matches!(parse(&["-h".into()]), Ok(Parsed::Help)));
        for args in [
            &["--irc", "x", "a"][..],
            &["--irc", "localhost:6667", "a"],
            &["--irc", "70000", "a"],
            &["--irc", "0.0.0.0:6667", "a"],
            &["--irc", "[::]:6667", "a"],
            &["--irc-public", "a"],
            &["--irc-password-file", "f", "a"],
        ] {
            assert!(run(args).is_err(), "{args:?}");
        }
        assert!(matches!(parse(&["--version".into()]), Ok(Parsed::Version)));
    }
}
