//! Signals through a self-pipe: handlers only write the signal's number.
//!
//! The event loop watches the read end with everything else and acts on
//! the numbers it drains, outside any handler.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn handler(sig: libc::c_int) {
    let fd = WRITE_FD.load(Ordering::Relaxed);
    let b = sig as u8;
    let saved = unsafe { *libc::__errno_location() };
    // A full pipe already holds a wake-up: losing this byte is fine.
    unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    unsafe { *libc::__errno_location() = saved };
}

/// The read end of the self-pipe, non-blocking.
pub struct SignalPipe {
    pub fd: RawFd,
}

impl SignalPipe {
    /// Creates the pipe and routes `signals` into it.
    pub fn install(signals: &[libc::c_int]) -> io::Result<SignalPipe> {
        let mut fds = [0; 2];
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        WRITE_FD.store(fds[1], Ordering::Relaxed);
        for &sig in signals {
            catch(sig, handler as *const () as libc::sighandler_t)?;
        }
        Ok(SignalPipe { fd: fds[0] })
    }

    /// The signals received since the last call, in order.
    pub fn drain(&self) -> Vec<libc::c_int> {
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        loop {
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            got.extend(buf[..n as usize].iter().map(|&b| b as libc::c_int));
        }
        got
    }
}

/// Sets the disposition of `sig` to `action` (a handler, `SIG_DFL` or
/// `SIG_IGN`).
pub fn catch(sig: libc::c_int, action: libc::sighandler_t) -> io::Result<()> {
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = action;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
