//! Serialises tenantctl processes that change the same cluster directory (two commands started at
//! once would both initdb or both pick a port).
//!
//! The lock is the operating system's lock on the open file `DIR/.lock`: the kernel grants it to
//! one process at a time and releases it when that process exits, however it exits, so there is
//! no stale lock to take over and no race between two waiters. The file itself is never deleted:
//! a waiter may hold it open, and a new file would be a second, independent lock.

use std::fs::{self, File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Held while alive; dropping it closes the file, which releases the lock.
pub(super) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Take the lock on `dir`, waiting up to two minutes for another tenantctl process.
    pub(super) fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(".lock");
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if Instant::now() > deadline => {
                    let holder = holder(&mut file);
                    bail!(
                        "{} is locked by another tenantctl process{}\n  hint: wait for it to finish, or stop it",
                        dir.display(),
                        holder.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                    );
                }
                Err(TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(50)),
                Err(TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()))
                }
            }
        }
        // Our pid, for the message of a process that waits too long for us. Best effort: the
        // lock is what counts.
        let _ = file
            .set_len(0)
            .and_then(|_| write!(file, "{}", std::process::id()));
        Ok(DirLock { _file: file })
    }
}

/// The pid the holder wrote into the lock file, if it did.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        // Another open file description of the same file: what a second process would hold.
        let other = File::options()
            .read(true)
            .write(true)
            .open(dir.path().join(".lock"))
            .unwrap();
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
        let mut text = String::new();
        File::open(dir.path().join(".lock"))
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, std::process::id().to_string());
        drop(first);
        assert!(other.try_lock().is_ok());
    }
}
