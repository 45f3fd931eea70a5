//! p2pchat: a serverless group chat for the terminal.
//!
//! Every running `p2pchat` is a peer: it listens, connects and relays.
//! The layers, from the outside in:
//!
//! - [`cli`]: the command line and the config file.
//! - [`event`]: the event loop, the only place that does I/O; [`peers`]:
//!   its linked list of live connections; [`signal`]: the signal pipe;
//!   [`discover`]: LAN discovery's multicast sockets; [`files_io`]: the
//!   file reads and writes of transfers.
//! - [`term`]: the terminal front end (what the user sees and types);
//!   [`command`]: typed lines into commands; [`name`]: which names are
//!   allowed; [`iface`]: this machine's addresses.
//! - [`irc`]: the IRC gateway, a second front end.
//! - [`node`]: one peer, the machines below wired together, with no I/O.
//! - [`app`]: what events mean to the user (chat, private messages,
//!   files); [`store`]: the file private messages are kept in across
//!   restarts.
//! - [`proto`]: the wire format and the protocol machines (links,
//!   membership, mesh, broadcast, LAN discovery).

pub mod app;
pub mod cli;
pub mod command;
pub mod discover;
pub mod event;
pub mod files_io;
pub mod identity;
pub mod iface;
pub mod irc;
pub mod name;
pub mod net;
pub mod node;
pub mod peers;
pub mod proto;
pub mod signal;
pub mod store;
pub mod term;
