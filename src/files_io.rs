//! File I/O for transfers, at the edge of the event loop: what
//! [`crate::app::files`] asks of the disk, done in bounded steps.
//!
//! Hashing (to offer a file, to check a fetched one) goes [`HASH_STEP`]
//! bytes per job per turn of the loop; an upload reads one chunk when its
//! link has room ([`Disk::step`]); a fetched chunk is written as it comes
//! (one frame's worth). Nothing here waits on the network, and no step
//! holds the loop longer than one bounded read or write: chat goes on
//! while files move.
//!
//! Files are written only into the download directory, as `NAME.part`
//! (never through a symbolic link), and a verified part is renamed to
//! `NAME`, or `NAME (1)`, `NAME (2)`… if that exists: never over a file.
//!
//! The page cache. A part is written as any copy is (`cp`, `nc`): the
//! kernel writes its dirty pages back in its own time, on its own
//! threads, and slows a writer that outruns the disk. The receiver once
//! started the writeback of every 4 MiB itself (`sync_file_range`) and
//! dropped what was written from the cache: that work then ran in our
//! one loop, 0.10-0.15 s of its CPU per GiB (12-17 %, the receiver's CPU
//! being what bounds a transfer), and it did not spare chat when the
//! kernel throttled writes (with the machine's dirty limit lowered to
//! 64 MiB, chat p99 during a 1 GiB fetch was 5.4-6.0 ms with it and
//! 5.3-5.5 ms without): the pages it started writing still count as
//! dirty until the disk has them. A part is hashed as it comes, so
//! checking it reads nothing back. A file that is sent is read
//! sequentially and the kernel is told so (`POSIX_FADV_SEQUENTIAL`, and
//! `POSIX_FADV_WILLNEED` a step ahead of the reads), so that a read
//! finds its chunk in the cache rather than waiting for the disk; its
//! cache is left alone (the file is the user's, and may be fetched
//! again).

use crate::app::files::{Algo, DATA, Done, Hash, Io, Size};
use crate::proto::LinkId;
use crate::proto::wire::Frame;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Bytes hashed per job per turn of the loop (a few ms of work at most:
/// a chat line that comes meanwhile waits that long).
pub const HASH_STEP: usize = 1 << 20;
/// Copies of an existing name tried (`NAME (1)`…) before giving up.
const MAX_COPIES: u32 = 1000;
/// A DATA frame's length, kind, offer number and offset.
const DATA_HEAD: usize = 4 + 1 + 4 + 8;
/// Bytes of a file being sent read ahead at a time (see the module
/// documentation).
const READ_AHEAD: u64 = 4 << 20;

/// The hash of an offer, as it goes: BLAKE3 (what we offer), or
/// BLAKE2b-256 (older offers).
#[derive(Clone)]
enum Hasher {
    Blake3(Box<blake3::Hasher>),
    Blake2b(Box<Blake2b<U32>>),
}

impl Hasher {
    fn new(algo: Algo) -> Hasher {
        match algo {
            Algo::Blake3 => Hasher::Blake3(Box::default()),
            Algo::Blake2b => Hasher::Blake2b(Box::default()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Blake3(h) => {
                h.update(data);
            }
            Hasher::Blake2b(h) => h.update(data),
        }
    }

    fn finalize(&self) -> Hash {
        match self {
            Hasher::Blake3(h) => *h.finalize().as_bytes(),
            Hasher::Blake2b(h) => h.as_ref().clone().finalize().into(),
        }
    }
}

enum Job {
    /// Hashing a file to offer.
    Offer {
        file: File,
        size: u64,
        mtime: i64,
        hasher: Hasher,
        at: u64,
    },
    /// A part being written, hashed as it is (in order): `hashed` bytes
    /// so far; until `opening` is reached (what a part held already), it
    /// is being hashed before the transfer starts.
    Part {
        file: File,
        dir: PathBuf,
        name: String,
        hasher: Hasher,
        hashed: u64,
        opening: Option<u64>,
    },
    /// A whole part being hashed.
    Check {
        file: File,
        dir: PathBuf,
        name: String,
        size: u64,
        hasher: Hasher,
        at: u64,
        expect: Hash,
    },
    /// A file being sent as offer `num`; `want`: a read asked for.
    Upload {
        file: File,
        num: u32,
        link: LinkId,
        want: Option<(u64, usize)>,
        /// Read ahead up to here.
        ahead: u64,
    },
}

/// A transfer allocates and frees buffers of a chunk or more at every
/// step (a frame read, a record sealed, a chunk to write). By default
/// glibc gives the top of its heap back to the kernel as soon as 128 KiB
/// of it are free, and takes it again the next moment: two `brk` calls,
/// a TLB flush and a page fault for every 4 KiB, per chunk (a quarter of
/// the sender's CPU time under a network secret, measured). So up to
/// [`HEAP_KEPT`] of free heap is kept, and blocks up to that size come
/// from the heap, not from `mmap` (larger ones, such as a link's queue
/// near its bound, still do and go back at once).
fn keep_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of the allocator.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, HEAP_KEPT as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, HEAP_KEPT as libc::c_int);
    }
}

/// Free heap kept for the next chunks at most (see `keep_heap`).
pub const HEAP_KEPT: usize = 1 << 20;

/// Advice to the kernel on `len` bytes of `file` from `at` (0: to the
/// end); ignored where it is not taken.
fn advise(file: &File, at: u64, len: u64, advice: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: no memory is passed; a bad descriptor is an error returned.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            at as libc::off_t,
            len as libc::off_t,
            advice,
        )
    };
}

/// The disk side of transfers. See the module documentation.
#[derive(Default)]
pub struct Disk {
    jobs: BTreeMap<u32, Job>,
    done: VecDeque<Done>,
    buf: Vec<u8>,
    /// Whether [`keep_heap`] was called: at the first file I/O, not at
    /// start, so that a peer that never moves a file keeps glibc's
    /// defaults (and its memory after a burst of chat).
    heap_kept: bool,
}

impl Disk {
    pub fn new() -> Disk {
        // A file-size limit (ulimit -f) reached is an error to report,
        // not a reason to die.
        unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
        Disk::default()
    }

    /// What the disk did since last asked.
    pub fn take_done(&mut self) -> Option<Done> {
        self.done.pop_front()
    }

    /// Whether [`Disk::step`] has work now, given which links have room.
    pub fn busy(&self, room: impl Fn(LinkId) -> bool) -> bool {
        !self.done.is_empty()
            || self.jobs.values().any(|j| match j {
                Job::Offer { .. } | Job::Check { .. } => true,
                Job::Upload { link, want, .. } => want.is_some() && room(*link),
                Job::Part { opening, .. } => opening.is_some(),
            })
    }

    /// Carries out `io`: at once if it is small, else it becomes a job
    /// that [`Disk::step`] advances.
    pub fn io(&mut self, io: Io) {
        if !self.heap_kept {
            keep_heap();
            self.heap_kept = true;
        }
        match io {
            Io::Prepare { job, path, max } => match open_offer(&path, max) {
                Ok((file, size, mtime)) => {
                    self.jobs.insert(
                        job,
                        Job::Offer {
                            file,
                            size,
                            mtime,
                            hasher: Hasher::new(Algo::Blake3),
                            at: 0,
                        },
                    );
                }
                Err(why) => self.done.push_back(Done::Prepared {
                    job,
                    result: Err(why),
                }),
            },
            Io::Open {
                job,
                dir,
                name,
                size,
                algo,
            } => match open_part(&dir, &name, size) {
                Ok((file, len)) => {
                    advise(&file, 0, 0, libc::POSIX_FADV_SEQUENTIAL);
                    self.jobs.insert(
                        job,
                        Job::Part {
                            file,
                            dir,
                            name,
                            hasher: Hasher::new(algo),
                            hashed: 0,
                            opening: Some(len),
                        },
                    );
                }
                Err(why) => self.done.push_back(Done::Opened {
                    job,
                    result: Err(why),
                }),
            },
            Io::Write { job, offset, data } => {
                if let Some(Job::Part {
                    file,
                    hasher,
                    hashed,
                    ..
                }) = self.jobs.get_mut(&job)
                {
                    if let Err(e) = file.write_all_at(&data, offset) {
                        self.done.push_back(Done::Failed {
                            job,
                            why: format!("cannot save: {}", write_error(&e)),
                        });
                    } else if offset == *hashed {
                        hasher.update(&data);
                        *hashed += data.len() as u64;
                    }
                }
            }
            Io::Verify { job, hash } => {
                if let Some(Job::Part {
                    file,
                    dir,
                    name,
                    hasher,
                    hashed,
                    ..
                }) = self.jobs.remove(&job)
                {
                    let size = file.metadata().map_or(0, |m| m.len());
                    if hashed == size {
                        // Hashed as it came: no second pass.
                        let result = check(&hasher, &hash, &dir, &name);
                        self.done.push_back(Done::Verified { job, result });
                        return;
                    }
                    let hasher = match hasher {
                        Hasher::Blake3(_) => Hasher::new(Algo::Blake3),
                        Hasher::Blake2b(_) => Hasher::new(Algo::Blake2b),
                    };
                    self.jobs.insert(
                        job,
                        Job::Check {
                            file,
                            dir,
                            name,
                            size,
                            hasher,
                            at: 0,
                            expect: hash,
                        },
                    );
                }
            }
            Io::Keep { job } => {
                self.jobs.remove(&job);
            }
            Io::Discard { job } => {
                if let Some(Job::Part { dir, name, .. } | Job::Check { dir, name, .. }) =
                    self.jobs.remove(&job)
                {
                    let _ = fs::remove_file(part_path(&dir, &name));
                }
            }
            Io::Upload {
                job,
                num,
                link,
                path,
                size,
                mtime,
            } => match open_upload(&path, size, mtime) {
                Ok(file) => {
                    advise(&file, 0, 0, libc::POSIX_FADV_SEQUENTIAL);
                    self.jobs.insert(
                        job,
                        Job::Upload {
                            file,
                            num,
                            link,
                            want: None,
                            ahead: 0,
                        },
                    );
                }
                Err(why) => self.done.push_back(Done::Failed { job, why }),
            },
            Io::Read { job, offset, len } => {
                if let Some(Job::Upload { want, .. }) = self.jobs.get_mut(&job) {
                    *want = Some((offset, len));
                }
            }
            Io::EndUpload { job } => {
                self.jobs.remove(&job);
            }
        }
    }

    /// One bounded step of every job that can make progress; `room`
    /// says whether a link can take another chunk now.
    pub fn step(&mut self, room: impl Fn(LinkId) -> bool) {
        let mut finished = Vec::new();
        for (&job, j) in self.jobs.iter_mut() {
            match j {
                Job::Offer {
                    file,
                    size,
                    mtime,
                    hasher,
                    at,
                } => match hash_step(file, *size, hasher, at, &mut self.buf) {
                    Ok(false) => {}
                    Ok(true) => {
                        let h = hasher.finalize();
                        self.done.push_back(Done::Prepared {
                            job,
                            result: Ok((*size, h, *mtime)),
                        });
                        finished.push(job);
                    }
                    Err(e) => {
                        self.done.push_back(Done::Prepared {
                            job,
                            result: Err(read_error(&e)),
                        });
                        finished.push(job);
                    }
                },
                Job::Check {
                    file,
                    dir,
                    name,
                    size,
                    hasher,
                    at,
                    expect,
                } => {
                    let result = match hash_step(file, *size, hasher, at, &mut self.buf) {
                        Ok(false) => continue,
                        Ok(true) => check(hasher, expect, dir, name),
                        Err(e) => {
                            let _ = fs::remove_file(part_path(dir, name));
                            Err(format!("cannot check: {}", read_error(&e)))
                        }
                    };
                    self.done.push_back(Done::Verified { job, result });
                    finished.push(job);
                }
                Job::Part {
                    file,
                    hasher,
                    hashed,
                    opening: opening @ Some(_),
                    ..
                } => {
                    let len = opening.unwrap_or(0);
                    match hash_step(file, len, hasher, hashed, &mut self.buf) {
                        Ok(false) => {}
                        Ok(true) => {
                            *opening = None;
                            self.done.push_back(Done::Opened {
                                job,
                                result: Ok(len),
                            });
                        }
                        Err(e) => {
                            self.done.push_back(Done::Opened {
                                job,
                                result: Err(format!("cannot read the part: {}", read_error(&e))),
                            });
                            finished.push(job);
                        }
                    }
                }
                Job::Upload {
                    file,
                    num,
                    link,
                    want,
                    ahead,
                } => {
                    let Some((offset, len)) = *want else {
                        continue;
                    };
                    if !room(*link) {
                        continue;
                    }
                    *want = None;
                    // The next step is read ahead while this one is sent
                    // (readahead that starts the reads, not waiting for them).
                    if offset + READ_AHEAD > *ahead {
                        let from = (*ahead).max(offset);
                        *ahead = from + 2 * READ_AHEAD;
                        advise(file, from, *ahead - from, libc::POSIX_FADV_WILLNEED);
                    }
                    match read_frame(file, *num, offset, len) {
                        Ok(frame) => self.done.push_back(Done::Chunk {
                            job,
                            offset,
                            len,
                            frame,
                        }),
                        Err(e) => {
                            let why = if e.kind() == io::ErrorKind::UnexpectedEof {
                                "the file changed since it was offered (it is shorter)".into()
                            } else {
                                read_error(&e)
                            };
                            self.done.push_back(Done::Failed { job, why });
                            finished.push(job);
                        }
                    }
                }
                Job::Part { opening: None, .. } => {}
            }
        }
        for job in finished {
            self.jobs.remove(&job);
        }
    }
}

/// A DATA frame of offer `num` with the `len` bytes of `file` at
/// `offset`, read straight into the frame's own memory, which is not
/// zeroed first: the one copy of the bytes from here to the link's queue
/// is the kernel's (a read into a buffer of ours, zeroed, then copied
/// into the frame, was a sixth of a sender's CPU time).
fn read_frame(file: &File, num: u32, offset: u64, len: usize) -> io::Result<Frame> {
    use std::os::fd::AsRawFd;
    let mut frame = std::rc::Rc::<[u8]>::new_uninit_slice(DATA_HEAD + len);
    let buf = std::rc::Rc::get_mut(&mut frame).expect("a new frame is not shared");
    let mut head = [0u8; DATA_HEAD];
    head[..4].copy_from_slice(&((DATA_HEAD + len - 4) as u32).to_be_bytes());
    head[4] = DATA;
    head[5..9].copy_from_slice(&num.to_be_bytes());
    head[9..].copy_from_slice(&offset.to_be_bytes());
    for (b, h) in buf.iter_mut().zip(head) {
        b.write(h);
    }
    let mut got = 0;
    while got < len {
        let rest = &mut buf[DATA_HEAD + got..];
        // SAFETY: pread writes at most `rest.len()` bytes into `rest`,
        // which is ours alone; what it wrote is initialised.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                rest.as_mut_ptr().cast(),
                rest.len(),
                (offset + got as u64) as libc::off_t,
            )
        };
        match n {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => got += n as usize,
        }
    }
    // SAFETY: the head and then all `len` bytes after it were written.
    Ok(unsafe { frame.assume_init() })
}

/// Whether the part of `name` hashed to `expect`: then it is renamed
/// (see [`commit`]); else it is deleted.
fn check(hasher: &Hasher, expect: &Hash, dir: &Path, name: &str) -> Result<PathBuf, String> {
    if hasher.finalize() == *expect {
        return commit(dir, name);
    }
    let _ = fs::remove_file(part_path(dir, name));
    Err("hash mismatch: the data is not the file offered; discarded".into())
}

/// Hashes the next [`HASH_STEP`] bytes; returns whether the file is done.
fn hash_step(
    file: &File,
    size: u64,
    hasher: &mut Hasher,
    at: &mut u64,
    buf: &mut Vec<u8>,
) -> io::Result<bool> {
    let n = size.saturating_sub(*at).min(HASH_STEP as u64) as usize;
    buf.resize(n, 0);
    file.read_exact_at(buf, *at)?;
    hasher.update(&buf[..]);
    *at += n as u64;
    Ok(*at >= size)
}

/// The part of `name` in `dir`.
pub fn part_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.part"))
}

fn open_offer(path: &Path, max: u64) -> Result<(File, u64, i64), String> {
    // Not blocking on a FIFO: it is refused below, not waited on.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| read_error(&e))?;
    let m = file.metadata().map_err(|e| read_error(&e))?;
    if !m.is_file() {
        return Err("not a regular file".into());
    }
    if m.len() > max {
        return Err(format!(
            "it is {}, over the file size limit of {} (see --max-file)",
            Size(m.len()),
            Size(max)
        ));
    }
    advise(&file, 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    Ok((file, m.len(), mtime(&m)))
}

fn open_upload(path: &Path, size: u64, when: i64) -> Result<File, String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => "the file was removed since it was offered".into(),
            _ => read_error(&e),
        })?;
    let m = file.metadata().map_err(|e| read_error(&e))?;
    if m.len() != size || mtime(&m) != when {
        return Err("the file changed since it was offered: offer it again".into());
    }
    Ok(file)
}

fn mtime(m: &fs::Metadata) -> i64 {
    m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec()
}

/// Opens (or creates) the part of `name` in `dir` for `size` bytes;
/// returns it and how much of it is there.
fn open_part(dir: &Path, name: &str, size: u64) -> Result<(File, u64), String> {
    let shown = dir.display();
    if !dir.exists() {
        fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {shown}: {}", write_error(&e)))?;
    }
    let path = part_path(dir, name);
    // Room for what is missing, checked before anything is created.
    let there = fs::symlink_metadata(&path).map_or(0, |m| m.len());
    let need = size.saturating_sub(if there > size { 0 } else { there });
    if let Some(free) = free_space(dir)
        && free < need
    {
        return Err(format!(
            "not enough free space in {shown}: {} needed, {} free",
            Size(need),
            Size(free)
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| format!("cannot save in {shown}: {}", write_error(&e)))?;
    let m = file.metadata().map_err(|e| write_error(&e))?;
    if !m.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mut have = m.len();
    if have > size {
        // Not a part of this file.
        file.set_len(0).map_err(|e| write_error(&e))?;
        have = 0;
    }
    Ok((file, have))
}

/// Bytes free for us in the file system of `dir`.
fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Renames the verified part of `name` to `name`, or to the first of
/// `name (1)`, `name (2)`… that does not exist: never over a file.
fn commit(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let part = part_path(dir, name);
    for n in 0..MAX_COPIES {
        let target = dir.join(numbered(name, n));
        // A hard link fails if the target exists: no race, no overwrite.
        match fs::hard_link(&part, &target) {
            Ok(()) => {
                let _ = fs::remove_file(&part);
                return Ok(target);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(_) => {
                // A file system without hard links: rename, if free.
                if target.symlink_metadata().is_ok() {
                    continue;
                }
                return fs::rename(&part, &target)
                    .map(|()| target)
                    .map_err(|e| format!("cannot rename {}: {}", part.display(), write_error(&e)));
            }
        }
    }
    Err(format!(
        "{MAX_COPIES} files named like {name} exist already; the data is in {}",
        part.display()
    ))
}

/// `notes.pdf`, `notes (1).pdf`, `notes (2).pdf`…
pub fn numbered(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_owned();
    }
    match name.rfind('.') {
        Some(i) if i > 0 => format!("{} ({n}){}", &name[..i], &name[i..]),
        _ => format!("{name} ({n})"),
    }
}

fn read_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => plain(e),
    }
}

fn write_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => "the disk is full".into(),
        Some(libc::EFBIG) => "file too large (a file size limit)".into(),
        Some(libc::EACCES) | Some(libc::EPERM) => "permission denied".into(),
        Some(libc::EROFS) => "read-only file system".into(),
        Some(libc::ELOOP) => "a symbolic link is in the way".into(),
        _ => plain(e),
    }
}

/// An error's text without the `(os error N)`.
fn plain(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("p2pchat-disk-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn run(disk: &mut Disk) -> Vec<Done> {
        let mut v = Vec::new();
        for _ in 0..1000 {
            disk.step(|_| true);
            while let Some(d) = disk.take_done() {
                v.push(d);
            }
            if !disk.busy(|_| true) {
                break;
            }
        }
        v
    }

    #[test]
    fn names_are_numbered_before_the_extension() {
        assert_eq!(numbered("notes.pdf", 0), "notes.pdf");
        assert_eq!(numbered("notes.pdf", 1), "notes (1).pdf");
        assert_eq!(numbered("README", 2), "README (2)");
        assert_eq!(numbered("a.tar.gz", 1), "a.tar (1).gz");
    }

    #[test]
    fn a_verified_part_never_overwrites() {
        let d = tmp("commit");
        fs::write(d.join("notes.pdf"), b"mine").unwrap();
        fs::write(part_path(&d, "notes.pdf"), b"theirs").unwrap();
        let p = commit(&d, "notes.pdf").unwrap();
        assert_eq!(p, d.join("notes (1).pdf"));
        assert_eq!(fs::read(d.join("notes.pdf")).unwrap(), b"mine");
        assert_eq!(fs::read(&p).unwrap(), b"theirs");
        assert!(!part_path(&d, "notes.pdf").exists());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn offer_hash_write_check_and_mismatch() {
        let d = tmp("flow");
        let src = d.join("src.bin");
        let bytes: Vec<u8> = (0..(HASH_STEP * 2 + 12345))
            .map(|i| (i * 7) as u8)
            .collect();
        fs::write(&src, &bytes).unwrap();
        let mut disk = Disk::new();
        disk.io(Io::Prepare {
            job: 1,
            path: src.clone(),
            max: 1 << 30,
        });
        let done = run(&mut disk);
        let Done::Prepared {
            result: Ok((size, hash, _)),
            ..
        } = done[0].clone()
        else {
            panic!("{done:?}");
        };
        assert_eq!(size, bytes.len() as u64);
        let want: Hash = *blake3::hash(&bytes).as_bytes();
        assert_eq!(hash, want);
        // Received in two halves, with a restart in between.
        let dl = d.join("dl");
        for (job, range, expect) in [(2, 0..1000, 0u64), (3, 1000..bytes.len(), 1000)] {
            disk.io(Io::Open {
                job,
                dir: dl.clone(),
                name: "src.bin".into(),
                size,
                algo: Algo::Blake3,
            });
            assert_eq!(
                run(&mut disk),
                [Done::Opened {
                    job,
                    result: Ok(expect)
                }]
            );
            disk.io(Io::Write {
                job,
                offset: range.start as u64,
                data: bytes[range.clone()].to_vec(),
            });
            if job == 2 {
                disk.io(Io::Keep { job });
            }
        }
        disk.io(Io::Verify { job: 3, hash });
        let Done::Verified {
            result: Ok(path), ..
        } = run(&mut disk).remove(0)
        else {
            panic!("not verified");
        };
        assert_eq!(fs::read(&path).unwrap(), bytes);
        // A wrong hash: reported, and the part is gone.
        disk.io(Io::Open {
            job: 4,
            dir: dl.clone(),
            name: "src.bin".into(),
            size: 3,
            algo: Algo::Blake3,
        });
        run(&mut disk);
        disk.io(Io::Write {
            job: 4,
            offset: 0,
            data: b"abc".to_vec(),
        });
        disk.io(Io::Verify { job: 4, hash });
        let Done::Verified { result: Err(e), .. } = run(&mut disk).remove(0) else {
            panic!("verified a wrong hash");
        };
        assert!(e.contains("hash mismatch"), "{e}");
        assert!(!part_path(&dl, "src.bin").exists());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn offers_refuse_what_is_not_a_small_regular_file() {
        let d = tmp("refuse");
        let mut disk = Disk::new();
        fs::write(d.join("big"), vec![0; 100]).unwrap();
        for (path, max, why) in [
            (d.join("missing"), 10, "no such file"),
            (d.clone(), 10, "not a regular file"),
            (d.join("big"), 10, "over the file size limit"),
        ] {
            disk.io(Io::Prepare { job: 1, path, max });
            let Done::Prepared { result: Err(e), .. } = run(&mut disk).remove(0) else {
                panic!("offered");
            };
            assert!(e.contains(why), "{e}");
        }
        let _ = fs::remove_dir_all(&d);
    }

    /// An upload reads a chunk into a whole DATA frame when its link has
    /// room, and says so when the file became shorter.
    #[test]
    fn uploads_read_whole_frames_when_the_link_has_room() {
        use crate::app::files::Msg;
        let d = tmp("upload");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let path = d.join("src.bin");
        fs::write(&path, &data).unwrap();
        let mtime = mtime(&fs::metadata(&path).unwrap());
        let mut disk = Disk::new();
        let link = LinkId(3);
        disk.io(Io::Upload {
            job: 9,
            num: 4,
            link,
            path: path.clone(),
            size: data.len() as u64,
            mtime,
        });
        for (offset, len) in [(0u64, 64_000usize), (64_000, 64_000), (192_000, 8_000)] {
            disk.io(Io::Read {
                job: 9,
                offset,
                len,
            });
            // No room on the link: nothing is read.
            disk.step(|_| false);
            assert!(disk.take_done().is_none() && !disk.busy(|_| false));
            let Done::Chunk {
                job: 9,
                offset: o,
                len: l,
                frame,
            } = run(&mut disk).remove(0)
            else {
                panic!("no chunk");
            };
            assert_eq!((o, l), (offset, len));
            let n = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
            assert_eq!(n + 4, frame.len());
            let at = offset as usize;
            assert_eq!(
                Msg::decode(&frame[4..]),
                Some(Msg::Data {
                    num: 4,
                    offset,
                    data: &data[at..at + len]
                })
            );
        }
        // The file cut short after the offer: the read fails, clearly.
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(100_000)
            .unwrap();
        disk.io(Io::Read {
            job: 9,
            offset: 64_000,
            len: 64_000,
        });
        let Done::Failed { job: 9, why } = run(&mut disk).remove(0) else {
            panic!("read past the end");
        };
        assert!(why.contains("changed since it was offered"), "{why}");
        let _ = fs::remove_dir_all(&d);
    }
}
