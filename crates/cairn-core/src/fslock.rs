//! Whether a file is locked by someone else, asked with a typed answer.
//!
//! sled locks its database by an exclusive `flock` on the `db` file in its directory and,
//! when that fails, reports it only as an I/O error whose message says so. Rather than read
//! that message, the stores ask first: [`held`] tries the same kind of lock on its own open
//! file description and releases it at once. `flock` locks conflict between open file
//! descriptions, so the answer is the same for another process and for a database still
//! open (or still closing) in this one.

use std::fs::{File, TryLockError};
use std::io;
use std::path::Path;

/// Whether another open file description holds a lock on `file`. A file that does not
/// exist is not held.
pub fn held(file: &Path) -> io::Result<bool> {
    let f = match File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match f.try_lock() {
        Ok(()) => {
            f.unlock()?;
            Ok(false)
        }
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_held_elsewhere_is_seen_and_a_free_file_is_left_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        assert!(!held(&path).unwrap(), "a missing file is not held");
        std::fs::write(&path, b"x").unwrap();
        assert!(!held(&path).unwrap());
        let holder = File::open(&path).unwrap();
        holder.lock().unwrap();
        assert!(held(&path).unwrap());
        holder.unlock().unwrap();
        assert!(!held(&path).unwrap());
        // Asking left no lock behind.
        assert!(holder.try_lock().is_ok());
    }
}
