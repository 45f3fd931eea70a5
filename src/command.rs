//! Lines typed at the prompt: `:commands` and chat.

use crate::node;

/// The commands, for `:help`.
pub const HELP: &[&str] = &[
    "text        send text to the room",
    "::text      send a line that starts with ':'",
    ":who        list the members: name, address, direct link or relayed",
    ":help       show this help",
    ":q, :quit   leave the network and exit (also Ctrl-D)",
];

/// What a typed line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// Something for the node.
    Node(node::Command),
    Help,
    /// Nothing to do (an empty line).
    Nothing,
    /// A mistake to tell the user about; nothing is sent.
    Error(String),
}

/// Parses one line (without its newline).
pub fn parse(line: &str) -> Input {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.trim().is_empty() {
        return Input::Nothing;
    }
    let Some(rest) = line.strip_prefix(':') else {
        return Input::Node(node::Command::Say(line.to_owned()));
    };
    if rest.starts_with(':') {
        return Input::Node(node::Command::Say(rest.to_owned()));
    }
    let mut words = rest.split_whitespace();
    let cmd = words.next().unwrap_or("");
    let args = words.count();
    let input = match cmd {
        "q" | "quit" => Input::Node(node::Command::Quit),
        "who" => Input::Node(node::Command::Who),
        "help" => Input::Help,
        _ => return Input::Error(format!("unknown command :{cmd} (try :help)")),
    };
    if args > 0 {
        return Input::Error(format!(":{cmd} takes no arguments"));
    }
    input
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Command;

    #[test]
    fn lines() {
        assert_eq!(
            parse("hi there"),
            Input::Node(Command::Say("hi there".into()))
        );
        assert_eq!(parse("hi\r"), Input::Node(Command::Say("hi".into())));
        assert_eq!(parse("::q"), Input::Node(Command::Say(":q".into())));
        assert_eq!(parse(":q"), Input::Node(Command::Quit));
        assert_eq!(parse(":quit"), Input::Node(Command::Quit));
        assert_eq!(parse(":who"), Input::Node(Command::Who));
        assert_eq!(parse(":help"), Input::Help);
        assert_eq!(parse(""), Input::Nothing);
        assert_eq!(parse("   "), Input::Nothing);
        assert_eq!(
            parse(":frob"),
            Input::Error("unknown command :frob (try :help)".into())
        );
        assert_eq!(
            parse(":"),
            Input::Error("unknown command : (try :help)".into())
        );
        assert_eq!(
            parse(":who x"),
            Input::Error(":who takes no arguments".into())
        );
    }
}
