//! The IRC gateway (`--irc`): a front end beside the terminal, so that an
//! IRC client (irssi, weechat, HexChat) can be the peer's interface.
//!
//! [`session`] is one client, with no I/O: IRC lines in, the same commands
//! the terminal's command table ([`crate::command`]) gives out, and what
//! the peer shows turned into IRC lines. [`server`] holds the listener and
//! the clients' sockets for the event loop.
//!
//! The mapping:
//!
//! | IRC | p2pchat |
//! |---|---|
//! | NICK/USER (PASS, CAP LS/END) | 001-005, MOTD; a different nick is changed to the peer's name (NICK) |
//! | `#lobby` | the network's chat: joined at registration |
//! | PRIVMSG #lobby | a chat line, as typed (never a command) |
//! | JOIN/PART/QUIT of others | members joining, leaving, lost |
//! | NAMES, WHO, WHOIS, ISON, USERHOST | the members |
//! | PRIVMSG nick, JOIN #room, PART #room, KICK, NICK, CTCP ACTION, LIST | `:msg`, `:join`, `:leave`, `:kick`, `:nick`, `:me`, `:rooms` through the command table: refused with a numeric while not available |
//! | PRIVMSG *p2pchat, P2PCHAT | any command line (`who`, `help`, `quit`) |
//! | QUIT | detaches this client; the peer stays |
//! | what has no IRC form | a NOTICE with the plain line |
//!
//! How rooms and private messages plug in: JOIN, PART, KICK, LIST and
//! PRIVMSG to a nick already run `:join`, `:leave`, `:kick`, `:rooms` and
//! `:msg` through the command table, and work once those rows do. For
//! rooms, [`View::room`] and [`View::room_members`] (below, for the node)
//! say which room we are in: the client's channels follow it, and its
//! channel takes chat. A new kind of event (a private message, a room's
//! news) is a NOTICE with its plain line until [`session::Session::show`]
//! gives it an IRC form: for a private message, one arm calling
//! [`session::Session::private_message`], which is ready.
//!
//! Several clients at once (at most [`server::MAX_CLIENTS`]) see the same
//! chat; a line one of them sends reaches the others as the peer's own.

pub mod server;
pub mod session;

pub use server::Gateway;
pub use session::{Password, View};

impl View for crate::node::Node {
    fn name(&self) -> &str {
        crate::node::Node::name(self)
    }
    fn room(&self) -> String {
        crate::node::Node::room(self).to_owned()
    }

    fn others(&self) -> Vec<String> {
        self.member_names()
    }

    fn in_network(&self) -> bool {
        self.is_member()
    }
}
