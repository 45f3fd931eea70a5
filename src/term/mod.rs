//! The terminal front end: what the user sees and types.
//!
//! - [`ui`]: renders what the node shows as plain lines, JSON lines or on
//!   the interactive terminal; chat logs.
//! - [`tty`]: raw mode, the screen, the window size, wrapping.
//! - [`editor`]: the line editor: keys, completion, display widths.
//! - [`history`]: the input history file, shared by instances.
//! - [`output`]: stdout as a bounded queue written without blocking.

pub mod editor;
pub mod history;
pub mod output;
pub mod tty;
pub mod ui;
