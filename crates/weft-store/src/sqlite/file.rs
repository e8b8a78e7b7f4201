//! The database file before SQLite opens it: its folder and mode, its
//! locks (by path and by inode), and the checks that refuse a damaged or
//! truncated file without writing to it.

use super::*;

/// Refuses a damaged database before anything writes to it: a file that
/// is not SQLite, one cut short (a copy that stopped half way, a full disk
/// at the wrong moment), or one whose pages fail `PRAGMA quick_check`.
/// A new, empty file passes. The check reads the whole file once, which is
/// quick next to what a runtime on a damaged database would cost.
pub(super) fn check_integrity(conn: &Connection, path: &Path, location: &str) -> Result<()> {
    let damaged = |detail: String| StoreError::Damaged {
        location: location.to_string(),
        detail,
    };
    if let Some(cut) = cut_short(path) {
        return Err(damaged(cut));
    }
    let header: Result<i64, rusqlite::Error> =
        conn.query_row("PRAGMA schema_version", [], |r| r.get(0));
    if let Err(e) = header {
        return Err(match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) => damaged(format!(
                "the file is not a SQLite database: {e}; is --db pointing at the right file?"
            )),
            _ => classify(e, location),
        });
    }
    let mut stmt = conn
        .prepare("PRAGMA quick_check(5)")
        .map_err(|e| classify(e, location))?;
    let problems = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
    match problems {
        Ok(rows) if rows == ["ok"] => Ok(()),
        Ok(rows) => Err(damaged(format!("quick_check: {}", rows.join("; ")))),
        Err(e) => Err(damaged(format!("quick_check: {e}"))),
    }
}

/// Whether the file is shorter than its header says: it was cut short (a
/// copy that stopped half way, a full disk at the wrong moment). Read from
/// the header itself (the file format's "in-header database size"), since
/// SQLite trusts the file's length and `quick_check` misses a cut at a page
/// boundary when the lost pages held nothing it walks. With a WAL beside
/// it the file may lag its pages until a checkpoint, so then this says
/// nothing and `quick_check` decides.
pub(super) fn cut_short(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return None;
    }
    let mut file = std::fs::File::open(path).ok()?;
    let on_disk = file.metadata().ok()?.len();
    let mut header = [0u8; 100];
    file.read_exact(&mut header).ok()?;
    if &header[..16] != b"SQLite format 3\0" {
        return None;
    }
    let be32 = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536,
        n => u64::from(n),
    };
    let pages = u64::from(be32(28));
    // The size is valid only when the change counter matches the
    // version-valid-for number (SQLite 3.7.0 and later write both).
    if pages == 0 || be32(24) != be32(92) {
        return None;
    }
    (on_disk < pages * page_size).then(|| {
        format!(
            "the file is {on_disk} bytes but its header counts {pages} pages of {page_size} bytes: it was cut short"
        )
    })
}

/// Makes the database's folder and file private before SQLite touches them
/// (task output and inputs are in it): a folder weft creates is 0700, a new
/// file 0600, and SQLite gives its `-wal` and `-shm` files the file's mode.
/// An existing database readable by others is kept as it is, with a
/// warning. Returns the file's real path (symlinks resolved). Refuses what
/// is not a regular file (`--db /dev/null`).
pub(super) fn prepare_file(path: &Path) -> std::result::Result<std::path::PathBuf, String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create it: {e}")),
    }
    let real = path
        .canonicalize()
        .map_err(|e| format!("cannot resolve its path: {e}"))?;
    let meta = std::fs::metadata(&real).map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "{} is not a regular file (a database needs one, with its -wal and -shm files beside it)",
            real.display()
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "the database {} can be read by other users of this machine (mode {:o}); `chmod 600 {}` keeps task inputs and output private",
            real.display(),
            meta.permissions().mode() & 0o777,
            real.display()
        );
    }
    Ok(real)
}

/// Takes an exclusive lock on `<db>.lock` beside the database, and writes
/// this process's id in it for the message another process gets. SQLite's
/// own locks allow several writers in turn, but the runtime recovers and
/// schedules the runs it finds as their only owner; the lock file (closed
/// on exec, so task processes do not inherit it) makes that so. It is
/// opened without following a symlink, and written only when it is ours: a
/// link planted by another user cannot make weft overwrite its target.
pub(super) fn lock_exclusively(path: &Path, location: &str) -> Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_err = |source| StoreError::Lock {
        location: location.to_string(),
        lock_file: Path::new(&lock_path).display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock_path)
        .map_err(lock_err)?;
    let meta = file.metadata().map_err(lock_err)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_file() || meta.uid() != me {
        return Err(lock_err(std::io::Error::other(format!(
            "it is not a regular file of this user (owner uid {}); remove it if no weft uses this database",
            meta.uid()
        ))));
    }
    // A runtime killed while it was starting a task process leaves, for a
    // moment, a child between fork and exec that still holds the lock (it
    // goes at exec, or when the child dies of its parent's death). So a
    // lock held in the name of a process that is gone is waited for,
    // briefly; one held by a live process is refused at once.
    lock_or_wait_for_the_gone(&file, location, false, &lock_err, |file| {
        let mut holder = String::new();
        let mut reader: &std::fs::File = file;
        reader.rewind().ok()?;
        reader.read_to_string(&mut holder).ok()?;
        holder.trim().parse().ok()
    })?;
    file.set_len(0).map_err(lock_err)?;
    file.rewind().map_err(lock_err)?;
    write!(file, "{}", std::process::id()).map_err(lock_err)?;
    Ok(file)
}

/// Takes `file`'s `flock`. When another holds it, `holder` says who (as
/// it can): a holder that is gone, or (with `wait_for_unknown`) one that
/// cannot be told, is waited for up to [`LOCK_WAIT`]; a live one is
/// refused at once with [`StoreError::InUse`]; an I/O error is named by
/// `lock_err`.
pub(super) fn lock_or_wait_for_the_gone(
    file: &std::fs::File,
    location: &str,
    wait_for_unknown: bool,
    lock_err: &dyn Fn(std::io::Error) -> StoreError,
    holder: impl Fn(&std::fs::File) -> Option<u32>,
) -> Result<()> {
    let mut waited = std::time::Duration::ZERO;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = holder(file);
                let gone = holder.is_some_and(|pid| !process_exists(pid as libc::pid_t));
                if (gone || (wait_for_unknown && holder.is_none())) && waited < LOCK_WAIT {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    waited += std::time::Duration::from_millis(50);
                    continue;
                }
                return Err(StoreError::InUse {
                    location: location.to_string(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
        }
    }
}

/// Takes an exclusive lock on the database file itself: a `flock`, which
/// belongs to the file (its inode), not to a name, so a hard link to it
/// under another name or in another folder finds it taken. (SQLite's own
/// locks are `fcntl` byte ranges, which on Linux are independent of a
/// `flock`, so the two never meet.) The holder's pid comes from
/// `/proc/locks` where there is one; a holder that is gone (a child of a
/// killed runtime between fork and exec) is waited for briefly, as for the
/// lock file.
pub(super) fn lock_inode(path: &Path, location: &str) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let lock_err = |source| StoreError::Lock {
        location: location.to_string(),
        lock_file: path.display().to_string(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(lock_err)?;
    lock_or_wait_for_the_gone(&file, location, true, &lock_err, flock_holder)?;
    Ok(file)
}

/// Who holds a `flock` on this file, from `/proc/locks` (Linux); `None`
/// where it cannot be told.
pub(super) fn flock_holder(file: &std::fs::File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let dev = meta.dev();
    // As the kernel prints it: major and minor in hex, the inode in decimal.
    let id = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        meta.ino()
    );
    std::fs::read_to_string("/proc/locks")
        .ok()?
        .lines()
        .filter(|l| l.contains("FLOCK") && !l.contains("->"))
        .find_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let at = fields.iter().position(|f| *f == id)?;
            fields.get(at.checked_sub(1)?)?.parse().ok()
        })
}

/// How long a lock left by a process that is gone is waited for.
pub(super) const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
