//! p2pchat: a serverless group chat for the terminal.
//!
//! Every running `p2pchat` is a peer: it listens, connects and relays.
//! The layers, from the outside in:
//!
//! - [`cli`]: the command line and the config file.
//! - [`event`]: the event loop, the only place that does network I/O.
//! - [`ui`], [`output`], [`tty`], [`editor`], [`history`], [`command`]:
//!   what the user sees and types; [`name`]: which names are allowed.
//! - [`core`]: the protocol state machine, with no I/O at all.
//! - [`wire`]: frames and messages, pure encode and decode.
//! - [`peers`]: the linked list of live connections.

pub mod cli;
pub mod command;
pub mod core;
pub mod editor;
pub mod event;
pub mod history;
pub mod iface;
pub mod name;
pub mod output;
pub mod peers;
pub mod signal;
pub mod tty;
pub mod ui;
pub mod wire;
