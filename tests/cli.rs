//! Integration tests of the command line: usage errors, help, version,
//! and failures to reach the peer given.

mod util;

use std::time::Duration;

use util::{DEADLINE, run};

/// Runs with `args`, asserts exit code 2, nothing on stdout, and a usage
/// line or a `p2pchat: ` diagnostic on stderr.
fn usage_error(args: &[&str]) -> Vec<String> {
    let (st, out, err) = run(args, DEADLINE);
    assert_eq!(st.code(), Some(2), "{args:?}: status {st}, stderr {err:?}");
    assert!(out.is_empty(), "{args:?}: stdout on a usage error: {out:?}");
    assert!(
        err.iter()
            .any(|l| l.starts_with("usage: p2pchat") || l.starts_with("p2pchat: ")),
        "{args:?}: no usage line or diagnostic on stderr: {err:?}"
    );
    err
}

/// A usage error that prints the usage line itself.
fn usage(args: &[&str]) {
    let err = usage_error(args);
    assert!(
        err.iter().any(|l| l.contains("usage: p2pchat")),
        "{args:?}: no usage line on stderr: {err:?}"
    );
}

#[test]
fn no_arguments_is_a_usage_error() {
    usage(&[]);
}

#[test]
fn help_goes_to_stdout() {
    for flag in ["-h", "--help"] {
        let (st, out, err) = run(&[flag], DEADLINE);
        assert_eq!(st.code(), Some(0), "{flag}: status {st}, stderr {err:?}");
        assert!(
            out.iter().any(|l| l.contains("usage: p2pchat")),
            "{flag}: {out:?}"
        );
        let all = out.join("\n");
        for opt in [
            "--port",
            "--bind",
            "--plain",
            "--json",
            "--no-input",
            "--version",
            "--timestamps",
            "--log",
            "--flood",
        ] {
            assert!(
                all.contains(opt),
                "{flag}: help does not mention {opt}: {out:?}"
            );
        }
        assert!(err.is_empty(), "{flag}: stderr {err:?}");
    }
}

#[test]
fn version_goes_to_stdout() {
    for flag in ["-V", "--version"] {
        let (st, out, err) = run(&[flag], DEADLINE);
        assert_eq!(st.code(), Some(0), "{flag}: status {st}, stderr {err:?}");
        assert_eq!(out, vec!["p2pchat 0.1.0".to_string()], "{flag}");
        assert!(err.is_empty(), "{flag}: stderr {err:?}");
    }
}

#[test]
fn unknown_option_is_a_usage_error() {
    usage(&["--frob", "alice"]);
    usage(&["-z", "alice"]);
}

#[test]
fn bad_listen_port_is_a_usage_error() {
    usage_error(&["-p", "abc", "alice"]);
    usage_error(&["-p", "70000", "alice"]);
    usage_error(&["-p", "-1", "alice"]);
    usage_error(&["--port", "", "alice"]);
}

#[test]
fn bad_degrees_are_usage_errors() {
    usage_error(&["-d", "0", "alice"]);
    usage_error(&["-d", "65", "alice"]);
    usage_error(&["--degree", "six", "alice"]);
    let err = usage_error(&["-d", "4", "-D", "3", "alice"]);
    assert!(
        err.iter()
            .any(|l| l == r#"p2pchat: bad max degree "3": expected 4 (the degree) to 256"#),
        "{err:?}"
    );
    usage_error(&["--max-degree", "257", "alice"]);
}

#[test]
fn bad_peer_port_is_a_usage_error() {
    usage_error(&["alice", "127.0.0.1", "abc"]);
    usage_error(&["alice", "127.0.0.1", "70000"]);
}

#[test]
fn bad_names_are_usage_errors() {
    usage_error(&[""]);
    usage_error(&["a b"]);
    usage_error(&["a:b"]);
    usage_error(&["tab\there"]);
    usage_error(&[&"x".repeat(33)]);
}

/// Names that would look like another: invisible, format and bidi
/// characters, compatibility forms. The error names the character.
#[test]
fn invisible_and_look_alike_characters_are_refused_in_names() {
    for (name, code) in [
        ("bob\u{200b}", "U+200B"),
        ("b\u{202e}ob", "U+202E"),
        ("\u{feff}bob", "U+FEFF"),
        ("\u{ff42}ob", "U+FF42"),
    ] {
        let err = usage_error(&[name]);
        assert!(
            err.iter()
                .any(|l| l.starts_with("p2pchat: bad name") && l.contains(code)),
            "{name:?}: {err:?}"
        );
    }
}

#[test]
fn a_lone_port_is_told_it_needs_a_host() {
    let err = usage_error(&["alice", "40123"]);
    assert!(
        err.iter()
            .any(|l| l == "p2pchat: the port 40123 needs a host: HOST 40123 or HOST:40123"),
        "{err:?}"
    );
    let err = usage_error(&["alice", "example.org"]);
    assert!(err.iter().any(|l| l.contains("needs a port")), "{err:?}");
}

#[test]
fn longest_name_is_accepted() {
    // 32 characters is fine: the peer starts listening (then leaves on EOF).
    let name = "y".repeat(32);
    let (st, out, err) = run(&["--plain", "-b", "127.0.0.1", &name], DEADLINE);
    assert_eq!(st.code(), Some(0), "status {st}, stderr {err:?}");
    assert!(
        out.first()
            .is_some_and(|l| l.starts_with("listening on port ")),
        "{out:?}"
    );
}

#[test]
fn host_without_port_is_a_usage_error() {
    usage(&["alice", "127.0.0.1"]);
}

#[test]
fn too_many_arguments_is_a_usage_error() {
    usage(&["alice", "127.0.0.1", "4000", "extra"]);
}

#[test]
fn unreachable_peer_exits_1_naming_it() {
    let (st, _out, err) = run(
        &["--plain", "-b", "127.0.0.1", "alice", "127.0.0.1", "1"],
        DEADLINE,
    );
    assert_eq!(st.code(), Some(1), "status {st}, stderr {err:?}");
    assert!(
        err.iter().any(|l| l.starts_with("p2pchat: ")
            && l.contains("127.0.0.1:1")
            && l.contains("Connection refused")),
        "no 'p2pchat: ... 127.0.0.1:1 ... Connection refused' on stderr: {err:?}"
    );

    let (st, _out, err) = run(
        &["--plain", "-b", "127.0.0.1", "alice", "localhost", "1"],
        DEADLINE,
    );
    assert_eq!(st.code(), Some(1), "status {st}, stderr {err:?}");
    assert!(
        err.iter().any(|l| l.starts_with("p2pchat: ")
            && (l.contains("localhost:1") || l.contains("127.0.0.1:1"))
            && l.contains("refused")),
        "no 'p2pchat: ... localhost:1 ... refused' on stderr: {err:?}"
    );
}

#[test]
fn unresolvable_host_exits_1_naming_it() {
    // Resolver timeouts can be slow in a sandbox; allow for them.
    let (st, _out, err) = run(
        &[
            "--plain",
            "-b",
            "127.0.0.1",
            "alice",
            "no.such.host.invalid",
            "4000",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(st.code(), Some(1), "status {st}, stderr {err:?}");
    assert!(
        err.iter()
            .any(|l| l.starts_with("p2pchat: ") && l.contains("no.such.host.invalid")),
        "no 'p2pchat: ... no.such.host.invalid' on stderr: {err:?}"
    );
}

/// A port another peer listens on cannot be listened on again: the
/// listener shares its port with the peer's own punches (SO_REUSEPORT,
/// set only after it is bound), never with a second listener.
#[test]
fn a_port_in_use_exits_1() {
    let mut alice = util::Peer::launch("alice", &[], None, std::process::Stdio::piped());
    let port = alice.port().to_string();
    for bind in [None, Some("127.0.0.1")] {
        let mut args = vec!["--plain", "-p", &port];
        if let Some(b) = bind {
            args.extend(["-b", b]);
        }
        args.push("bob");
        let (st, _out, err) = run(&args, DEADLINE);
        assert_eq!(st.code(), Some(1), "status {st}, stderr {err:?}");
        assert!(
            err.iter()
                .any(|l| l.starts_with("p2pchat: listen on ") && l.contains("in use")),
            "no 'p2pchat: listen on ...: Address in use' on stderr: {err:?}"
        );
    }
    alice.send(":q");
    alice.expect_exit(0);
}

/// A port where something else answers (an SSH server, here) is named as
/// not a p2pchat peer, not as a frame length out of range.
#[test]
fn a_port_that_is_not_a_p2pchat_peer_is_named() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n");
        // Held open until p2pchat closes it.
        let _ = std::io::copy(&mut s, &mut std::io::sink());
    });
    let port = port.to_string();
    let (st, _out, err) = run(
        &["--plain", "-b", "127.0.0.1", "alice", "127.0.0.1", &port],
        DEADLINE,
    );
    assert_eq!(st.code(), Some(1), "status {st}, stderr {err:?}");
    let want = format!("p2pchat: cannot reach 127.0.0.1:{port}: not a p2pchat peer");
    assert!(
        err.iter().any(|l| l.starts_with(&want)),
        "no {want:?} on stderr: {err:?}"
    );
    server.join().unwrap();
}
