//! The command line: options in, a [`Opts`] out, or a usage error.

use crate::wire;
use getopts::Options;
use std::net::IpAddr;

/// The one-line synopsis, printed with usage errors.
pub const USAGE: &str = "usage: p2pchat [-hV] [--plain | --json] [--no-input] [-b address] [-d degree] [-D max]\n\
     \x20              [-p port] name [host port]";

/// The most links `-D` may allow: the core's bound on links.
const MAX_DEGREE: usize = 256;

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
    /// The peer to join through: host and port, as typed.
    pub join: Option<(String, u16)>,
    /// The listen address; None: `::` and 0.0.0.0 at once (dual-stack).
    pub bind: Option<IpAddr>,
    pub port: u16,
    pub mode: Mode,
    pub no_input: bool,
    /// Links to keep: dial more below this.
    pub degree: usize,
    /// Links to allow: shed some above this.
    pub max_degree: usize,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    Run(Opts),
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
        "links to keep to other peers (default 6)",
        "N",
    );
    o.optopt(
        "D",
        "max-degree",
        "shed links above this many (default twice the degree)",
        "N",
    );
    o.optflag("", "plain", "plain lines on stdout, even on a terminal");
    o.optflag("", "json", "JSON lines on stdout");
    o.optflag("", "no-input", "ignore stdin; run until a signal (a relay)");
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
         Type a line to send it; :help lists the commands."
    );
    options().usage(&brief)
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Parsed, String> {
    let m = options().parse(args).map_err(|e| e.to_string())?;
    if m.opt_present("h") {
        return Ok(Parsed::Help);
    }
    if m.opt_present("V") {
        return Ok(Parsed::Version);
    }
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
        None => 6,
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
    let (name, join) = match m.free.as_slice() {
        [] => return Err("a name is required".into()),
        [name] => (name, None),
        [_, _] => return Err("a host needs a port".into()),
        [name, host, p] => (name, Some((host.clone(), port(p)?))),
        _ => return Err("too many arguments".into()),
    };
    if !wire::valid_name(name) {
        return Err(format!(
            "bad name {name:?}: 1 to {} characters, no spaces, control characters or ':'",
            wire::MAX_NAME
        ));
    }
    if join.as_ref().is_some_and(|(_, p)| *p == 0) {
        return Err("bad port 0 for the peer to join".into());
    }
    Ok(Parsed::Run(Opts {
        name: name.to_string(),
        join,
        bind,
        port: listen_port,
        mode,
        no_input: m.opt_present("no-input"),
        degree,
        max_degree,
    }))
}

fn port(s: &str) -> Result<u16, String> {
    s.parse()
        .map_err(|_| format!("bad port {s:?}: expected 0 to 65535"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Opts, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&args)? {
            Parsed::Run(o) => Ok(o),
            p => panic!("unexpected {p:?}"),
        }
    }

    #[test]
    fn good() {
        let o = run(&["alice"]).unwrap();
        assert_eq!((o.name.as_str(), o.port, o.join), ("alice", 0, None));
        let o = run(&["-p", "4000", "-b", "127.0.0.1", "--json", "bob", "h", "40"]).unwrap();
        assert_eq!(o.join, Some(("h".into(), 40)));
        assert_eq!(o.port, 4000);
        assert_eq!(o.mode, Mode::Json);
        assert!(run(&["--no-input", "--plain", "x"]).unwrap().no_input);
        let o = run(&["x"]).unwrap();
        assert_eq!((o.degree, o.max_degree), (6, 12));
        assert_eq!(o.bind, None, "default: dual-stack");
        let o = run(&["-b", "::", "x"]).unwrap();
        assert_eq!(o.bind, Some("::".parse().unwrap()));
        let o = run(&["-d", "3", "x"]).unwrap();
        assert_eq!((o.degree, o.max_degree), (3, 6));
        let o = run(&["-d", "2", "--max-degree", "2", "x"]).unwrap();
        assert_eq!((o.degree, o.max_degree), (2, 2));
        let o = run(&["-D", "256", "x"]).unwrap();
        assert_eq!((o.degree, o.max_degree), (6, 256));
    }

    #[test]
    fn bad() {
        for args in [
            &[][..],
            &["a", "b"],
            &["a", "b", "c", "d"],
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
        assert!(matches!(parse(&["--version".into()]), Ok(Parsed::Version)));
    }
}
