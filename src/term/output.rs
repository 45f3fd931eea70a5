//! Standard output for plain and JSON lines: a bounded queue written
//! without blocking, so that a reader that pauses never stalls the event
//! loop (and the relaying it does for others).
//!
//! When stdout is a pipe or a socket it is made non-blocking and the loop
//! polls it for writability; its file status flags are put back on the way
//! out (and while stopped), since the file description may be shared. A
//! terminal, a regular file or `/dev/null` is written as before: those do
//! not hold a writer up for long (a terminal that is non-blocking because
//! stdin shares it is polled too).
//!
//! The queue holds at most [`MAX_OUT`] bytes. A line that does not fit is
//! dropped and counted; once the reader has caught up to half the bound,
//! the caller is told how many were dropped (`take_dropped`) and says so
//! on stdout and stderr. Lines are never cut.

use std::collections::VecDeque;
use std::io;
use std::os::raw::c_int;
use std::time::{Duration, Instant};

/// The most bytes waiting for stdout; past this, lines are dropped.
pub const MAX_OUT: usize = 8 << 20;
/// How long the last lines may take to go out when we exit.
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// The queue is kept in chunks of about this size, so that its memory is
/// what it holds, not twice that (as one doubling buffer would be).
const CHUNK: usize = 16 << 10;

/// The stdout queue.
#[derive(Debug)]
pub struct Out {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the first chunk already written.
    pos: usize,
    /// Bytes waiting, in all.
    queued: usize,
    /// Lines dropped since the last notice.
    dropped: u64,
    /// stdout's file status flags before we made it non-blocking.
    flags: Option<c_int>,
    /// Whether the event loop should poll stdout for writability.
    pollable: bool,
    max: usize,
}

fn get_flags() -> c_int {
    // SAFETY: F_GETFL on fd 1 takes no argument.
    unsafe { libc::fcntl(libc::STDOUT_FILENO, libc::F_GETFL) }
}

fn set_flags(f: c_int) {
    // SAFETY: F_SETFL on fd 1 takes an int.
    unsafe { libc::fcntl(libc::STDOUT_FILENO, libc::F_SETFL, f) };
}

impl Out {
    /// Looks at what stdout is; a pipe or socket is made non-blocking.
    pub fn stdout() -> Out {
        // SAFETY: fstat fills in the stat buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let kind = if unsafe { libc::fstat(libc::STDOUT_FILENO, &mut st) } == 0 {
            st.st_mode & libc::S_IFMT
        } else {
            0
        };
        let mut out = Out::with_bound(MAX_OUT);
        // SAFETY: isatty takes any descriptor number.
        if unsafe { libc::isatty(libc::STDOUT_FILENO) } == 1 {
            // Not ours to make non-blocking, but it may be already (it is
            // stdin's too): then wait for it in the poll.
            out.pollable = true;
        } else if kind == libc::S_IFIFO || kind == libc::S_IFSOCK {
            let flags = get_flags();
            if flags >= 0 {
                if flags & libc::O_NONBLOCK == 0 {
                    set_flags(flags | libc::O_NONBLOCK);
                    out.flags = Some(flags);
                }
                out.pollable = true;
            }
        }
        out
    }

    fn with_bound(max: usize) -> Out {
        Out {
            chunks: VecDeque::new(),
            pos: 0,
            queued: 0,
            dropped: 0,
            flags: None,
            pollable: false,
            max,
        }
    }

    /// Whether the event loop should register stdout for writability.
    pub fn pollable(&self) -> bool {
        self.pollable
    }

    /// Bytes waiting.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Queues `text`, one or more whole lines; drops them all (counting
    /// the lines) if they do not fit under the bound.
    pub fn push(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.queued() + text.len() > self.max {
            self.dropped += text.bytes().filter(|&b| b == b'\n').count() as u64;
            return;
        }
        let bytes = text.as_bytes();
        match self.chunks.back_mut() {
            Some(last) if last.len() + bytes.len() <= last.capacity() => {
                last.extend_from_slice(bytes);
            }
            _ => {
                let mut chunk = Vec::with_capacity(bytes.len().max(CHUNK));
                chunk.extend_from_slice(bytes);
                self.chunks.push_back(chunk);
            }
        }
        self.queued += bytes.len();
    }

    /// Lines dropped, once there is room again to say so (the queue is
    /// under half the bound); the count starts again from zero.
    pub fn take_dropped(&mut self) -> Option<u64> {
        (self.dropped > 0 && self.queued() < self.max / 2)
            .then(|| std::mem::take(&mut self.dropped))
    }

    /// Writes what is queued until stdout would block.
    ///
    /// # Errors
    ///
    /// The write error; `BrokenPipe` when nobody reads stdout any more.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_some(|| Ok(false))
    }

    /// Writes the rest before exiting, blocking (for at most 10 s).
    ///
    /// # Errors
    ///
    /// As `flush`, or `TimedOut`.
    pub fn finish(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + EXIT_WAIT;
        self.write_some(|| {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let mut pfd = libc::pollfd {
                fd: libc::STDOUT_FILENO,
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as c_int) };
            Ok(true)
        })
    }

    /// Writes until done, or until stdout would block and `wait` says not
    /// to wait (false) or fails.
    fn write_some(&mut self, mut wait: impl FnMut() -> io::Result<bool>) -> io::Result<()> {
        while let Some(front) = self.chunks.front() {
            let rest = &front[self.pos..];
            if rest.is_empty() {
                self.chunks.pop_front();
                self.pos = 0;
                continue;
            }
            // SAFETY: the pointer and length describe `rest`.
            let n = unsafe { libc::write(libc::STDOUT_FILENO, rest.as_ptr().cast(), rest.len()) };
            if n > 0 {
                let n = n as usize;
                self.pos += n;
                self.queued -= n;
                if self.pos == front.len() {
                    self.chunks.pop_front();
                    self.pos = 0;
                }
                continue;
            }
            let e = if n == 0 {
                io::ErrorKind::WriteZero.into()
            } else {
                io::Error::last_os_error()
            };
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock if wait()? => continue,
                io::ErrorKind::WouldBlock => break,
                _ => {
                    self.chunks.clear();
                    self.pos = 0;
                    self.queued = 0;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Puts stdout's flags back as they were (before stopping, at exit).
    pub fn restore(&self) {
        if let Some(f) = self.flags {
            set_flags(f);
        }
    }

    /// Non-blocking again (after continuing).
    pub fn reapply(&self) {
        if let Some(f) = self.flags {
            set_flags(f | libc::O_NONBLOCK);
        }
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        self.restore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_whole_lines_and_counts_them() {
        let mut o = Out::with_bound(20);
        o.push("0123456789\n");
        o.push("abc\ndef\n");
        assert_eq!(o.queued(), 19);
        o.push("x\n");
        o.push("y\nz\n");
        assert_eq!(o.queued(), 19, "nothing cut");
        assert_eq!(o.take_dropped(), None, "no room to say so yet");
        // The reader takes the first line.
        let first = o.chunks[0][..11].to_vec();
        assert_eq!(first, b"0123456789\n");
        o.pos = 11;
        o.queued -= 11;
        assert_eq!(o.take_dropped(), Some(3));
        assert_eq!(o.take_dropped(), None);
        o.push("w\n");
        assert_eq!(o.queued(), 10);
        o.push("");
        assert_eq!(o.chunks.len(), 1, "nothing to write, no chunk");
    }
}
