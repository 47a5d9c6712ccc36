//! Users and roles of the gateway's HTTP (Sun Cloud REST) adapter, and later of the XML one.
//!
//! # The users file
//!
//! A TOML file of `[[user]]` tables, each with exactly three keys:
//!
//! ```toml
//! [[user]]
//! name = "alice"            # 1–64 of ASCII letters, digits, '.', '_', '-', '@'
//! role = "admin"            # "viewer" < "operator" < "admin"
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$…$…"
//! ```
//!
//! Passwords are never stored: only argon2 PHC strings (argon2id with the crate's default
//! parameters and a random salt when made here; any argon2 variant is accepted when read).
//! [`UsersFile::load`] refuses unknown keys, duplicate or malformed names and hashes that are
//! not argon2 PHC strings, so a mistake made by hand surfaces with the file's path rather than
//! as a user who silently cannot log in. A missing file is an empty list. [`UsersFile::save`]
//! writes atomically (temporary file in the same directory, fsync, rename, fsync of the
//! directory) with mode 0600.
//!
//! # Reloading
//!
//! [`Users`] is what a running gateway authenticates against. At most once a second (on the
//! next authentication) it stats the file; when its mtime, ctime, size or inode changed it
//! reads it again. A file that no longer loads (bad TOML written by hand) keeps the previous
//! users and logs a warning naming the file and the error; it is not retried until the file
//! changes again. A file that was removed is an empty list: no one can log in (fail closed).
//!
//! # The verification cache, and why it is safe
//!
//! An argon2 verification costs tens of milliseconds by design; a client polling every 100 ms
//! with basic auth would otherwise pay it on every request. So successful verifications are
//! remembered for five minutes:
//!
//! * the key is a BLAKE3 *keyed* hash, with 32 random bytes drawn from the OS when the
//!   [`Users`] is made, of the user name, the stored password hash and the presented
//!   password, each prefixed by its length so that fields cannot run together. No plaintext
//!   is kept or logged; without the in-memory key the entries cannot even be tested against
//!   guesses (and whoever can read this process's memory sees the passwords as they arrive);
//! * the value is only an expiry instant. The identity (and so the role) always comes from the
//!   current user record, so a role change applies at once;
//! * because the stored hash is part of the key, a password change makes old entries
//!   unreachable at once, and a removed user is refused before the cache is consulted;
//! * only successes are cached: every wrong password costs a full argon2 run, as does an
//!   unknown name (checked against a fixed dummy hash, so that both take about as long);
//! * the cache is bounded ([`CACHE_MAX`] entries: expired ones are dropped when it is full,
//!   and if that is not enough it is cleared).
//!
//! # Throttling, and why a login flood costs little
//!
//! A verification takes the hash's memory cost (19 MiB for the hashes made here) and tens of
//! milliseconds, and failures are never cached: unthrottled, a flood of wrong passwords is
//! unauthenticated memory and CPU exhaustion. [`Users::login`], the path every adapter takes,
//! therefore goes through one gate per [`Users`] (so REST and XML share it), configured by
//! [`AuthConfig`] (the gateway config's `[auth]` table):
//!
//! 1. a cached success is answered at once and takes no slot: a logged-in client polling
//!    every 100 ms never queues behind a flood;
//! 2. otherwise the attempt takes one of `max_concurrent_hashes + max_waiting_hashes`
//!    admission permits; with none left it is refused at once with [`LoginError::Busy`],
//!    before any work (REST answers 503 `busy` with `Retry-After`, XML error 315);
//! 3. it waits for one of `max_concurrent_hashes` hashing slots and verifies on the blocking
//!    pool. Both permits move into the blocking task, so a client that hangs up mid-hash frees
//!    its slot only when the hash is done: at most `max_concurrent_hashes` verifications run
//!    at once, ever. Each runs in a working memory the gate keeps for reuse (one buffer per
//!    slot, as large as the largest memory cost met), so verifying allocates nothing and
//!    hashing memory is `max_concurrent_hashes` × the memory cost (38 MiB with the defaults),
//!    however many attempts come: letting argon2 allocate and free 19 MiB per attempt left
//!    the allocator (glibc) holding hundreds of MiB after a few hundred failures;
//! 4. a failure releases both permits, then waits `failed_login_delay_ms` before it is
//!    answered. The delay slows a guesser down while costing the gateway a timer, not a slot.
//!
//! An unknown name takes exactly the steps of a wrong password (admission, a slot, the dummy
//! hash, the delay), so the two still cost the same. [`Users::authenticate`] is the same check
//! without steps 2–4 (no gate, no delay), for tools and tests, not for adapters.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, TryLockError};
use std::time::{Duration, Instant, SystemTime};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The shortest password accepted when one is set.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest user name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// How long a successful verification is remembered.
pub const CACHE_TTL: Duration = Duration::from_secs(5 * 60);
/// How many successful verifications are remembered at most.
pub const CACHE_MAX: usize = 4096;
/// How often, at most, [`Users`] looks whether its file changed.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

const NAME_RULE: &str = "a user name is 1–64 characters of letters, digits, '.', '_', '-' and '@'";
const FILE_HEADER: &str = "# Cairn gateway users: [[user]] tables of name, role (viewer, operator \
                           or admin) and password_hash (an argon2 PHC string, never a password).\n\n";

/// What a user may do (`viewer < operator < admin`): the cluster's roles, which user tokens
/// carry too.
pub use cairn_core::auth::Role;

/// One user of the users file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// argon2 PHC string
    pub password_hash: String,
}

/// The users file: `[[user]]` tables (name, role, password_hash).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    #[serde(default, rename = "user")]
    pub users: Vec<User>,
}

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The users file (or its directory) could not be read or written.
    #[error("users file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The users file is not valid TOML of the expected shape, or its content breaks a rule
    /// (duplicate or malformed name, a hash that is not an argon2 PHC string).
    #[error("users file {} is not valid: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// A request that cannot be done: the user exists or does not, a bad name or password.
    #[error("{0}")]
    Invalid(String),
}

impl UsersError {
    fn io(path: &Path, source: io::Error) -> UsersError {
        UsersError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Checks a user name: 1–64 of ASCII letters, digits, '.', '_', '-', '@'.
pub fn validate_name(name: &str) -> Result<(), UsersError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(UsersError::Invalid(format!(
            "invalid user name {name:?}: {NAME_RULE}"
        )))
    }
}

/// Whether `hash` is an argon2 (argon2id, argon2i or argon2d) PHC string with a salt, an
/// output and parameters argon2 accepts.
fn is_argon2_phc(hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    argon2::Algorithm::try_from(parsed.algorithm).is_ok()
        && parsed.salt.is_some()
        && parsed.hash.is_some()
        && argon2::Params::try_from(&parsed).is_ok()
}

impl UsersFile {
    /// Reads the file; a missing file is an empty list. Refuses duplicate names, invalid names,
    /// hashes that are not argon2 PHC strings.
    pub fn load(path: &Path) -> Result<UsersFile, UsersError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(UsersFile::default()),
            Err(e) => return Err(UsersError::io(path, e)),
        };
        let file: UsersFile = toml::from_str(&text).map_err(|e| UsersError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        file.check().map_err(|message| UsersError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(file)
    }

    /// Writes atomically (temp file in the same dir, fsync, rename, fsync dir) with mode 0600.
    /// Refuses to write a list that [`UsersFile::load`] would refuse.
    pub fn save(&self, path: &Path) -> Result<(), UsersError> {
        self.check().map_err(UsersError::Invalid)?;
        let body = toml::to_string(self)
            .map_err(|e| UsersError::Invalid(format!("cannot encode the users file: {e}")))?;
        let text = format!("{FILE_HEADER}{body}");

        let file_name = path.file_name().ok_or_else(|| {
            UsersError::Invalid(format!(
                "users file path {} does not name a file",
                path.display()
            ))
        })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = dir.join(format!(
            ".{}.{}.{}.tmp",
            file_name.to_string_lossy(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        if let Err(e) = write_new_private(&tmp, text.as_bytes()) {
            let _ = fs::remove_file(&tmp);
            return Err(UsersError::io(path, e));
        }
        if let Err(e) = fs::rename(&tmp, path) {
            let _ = fs::remove_file(&tmp);
            return Err(UsersError::io(path, e));
        }
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| UsersError::io(dir, e))
    }

    /// Adds a user; an error if one of that name exists, or the name or password is refused.
    pub fn add(&mut self, name: &str, role: Role, password: &str) -> Result<(), UsersError> {
        validate_name(name)?;
        if self.get(name).is_some() {
            return Err(UsersError::Invalid(format!("user {name:?} already exists")));
        }
        let password_hash = hash_password(password)?;
        self.users.push(User {
            name: name.to_string(),
            role,
            password_hash,
        });
        Ok(())
    }

    /// Replaces a user's password; an error if there is no such user or the password is refused.
    pub fn set_password(&mut self, name: &str, password: &str) -> Result<(), UsersError> {
        let i = self.index(name)?;
        self.users[i].password_hash = hash_password(password)?;
        Ok(())
    }

    /// Changes a user's role; an error if there is no such user.
    pub fn set_role(&mut self, name: &str, role: Role) -> Result<(), UsersError> {
        let i = self.index(name)?;
        self.users[i].role = role;
        Ok(())
    }

    /// Removes a user; an error if there is no such user.
    pub fn remove(&mut self, name: &str) -> Result<(), UsersError> {
        let i = self.index(name)?;
        self.users.remove(i);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    fn index(&self, name: &str) -> Result<usize, UsersError> {
        self.users
            .iter()
            .position(|u| u.name == name)
            .ok_or_else(|| UsersError::Invalid(format!("no user named {name:?}")))
    }

    /// The rules a loaded or saved file must follow; the message for the first one broken.
    fn check(&self) -> Result<(), String> {
        let mut seen = HashSet::new();
        for u in &self.users {
            if let Err(UsersError::Invalid(m)) = validate_name(&u.name) {
                return Err(m);
            }
            if !seen.insert(u.name.as_str()) {
                return Err(format!("user {:?} appears more than once", u.name));
            }
            if !is_argon2_phc(&u.password_hash) {
                return Err(format!(
                    "the password_hash of user {:?} is not an argon2 PHC string \
                     (such as $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>)",
                    u.name
                ));
            }
        }
        Ok(())
    }
}

/// Creates `path` (which must not exist) with mode 0600, writes `bytes` and syncs it.
fn write_new_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    // The mode given at creation is narrowed by the umask; make it exactly 0600.
    f.set_permissions(Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// argon2id with the crate's default params and a random salt (from the OS). Refuses a
/// password shorter than [`MIN_PASSWORD_CHARS`] characters.
pub fn hash_password(password: &str) -> Result<String, UsersError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(UsersError::Invalid(format!(
            "a password must be at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Invalid(format!("cannot hash the password: {e}")))
}

/// Constant-time via argon2's verify. False for a hash that is not a PHC string.
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash no password is known to match, checked for unknown names so that they cost as much
/// as a wrong password. Made once, on first use.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(&secret, &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// [`verify_password`] in the working memory given (grown to the hash's memory cost when
/// smaller), so that it allocates nothing once that memory has the size. The same steps as
/// the argon2 crate's own verification: parameters, version and salt from the PHC string,
/// the output compared in constant time. False for a hash that is not an argon2 PHC string.
fn verify_password_in(hash: &str, password: &str, memory: &mut Vec<argon2::Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let Ok(version) = parsed.version.map(argon2::Version::try_from).transpose() else {
        return false;
    };
    let Ok(params) = argon2::Params::try_from(&parsed) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, argon2::Block::default());
    }
    let argon2 = Argon2::new(algorithm, version.unwrap_or_default(), params);
    let computed = argon2::password_hash::Output::init_with(expected.len(), |out| {
        Ok(argon2.hash_password_into_with_memory(
            password.as_bytes(),
            salt,
            out,
            &mut memory[..blocks],
        )?)
    });
    // `Output`'s equality is constant-time.
    matches!(computed, Ok(c) if c == expected)
}

/// Verifies on the blocking pool in one of the gate's working memories, holding `permits`
/// until the hash is done (also when the caller stops waiting); None if the blocking task
/// failed. `hash` None: the dummy hash.
async fn verify_gated(
    gate: Arc<Gate>,
    permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    hash: Option<String>,
    password: String,
) -> Option<bool> {
    tokio::task::spawn_blocking(move || {
        let _permits = permits;
        let _hashing = gate.count_hashing();
        let hash = hash.as_deref().unwrap_or_else(|| dummy_hash());
        // There are never more verifications than slots, so never more memories.
        let mut memory = lock(&gate.memory).pop().unwrap_or_default();
        let matched = verify_password_in(hash, &password, &mut memory);
        lock(&gate.memory).push(memory);
        matched
    })
    .await
    .ok()
}

/// What a successful authentication yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub role: Role,
}

/// Why an authentication failed. Callers answer both the same way (401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No such user.
    Unknown,
    WrongPassword,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthError::Unknown => "unknown user",
            AuthError::WrongPassword => "wrong password",
        })
    }
}

impl std::error::Error for AuthError {}

/// Why [`Users::login`] let no one in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginError {
    /// Wrong name or password; answered only after the failure delay.
    Refused(AuthError),
    /// Too many verifications running and waiting: refused at once, before any check. The
    /// client may retry after [`BUSY_RETRY_AFTER`].
    Busy,
}

impl fmt::Display for LoginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginError::Refused(e) => e.fmt(f),
            LoginError::Busy => f.write_str("too many logins being checked"),
        }
    }
}

impl std::error::Error for LoginError {}

/// What a client refused with [`LoginError::Busy`] is told to wait before trying again.
pub const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Limits on password verification, shared by every adapter of a gateway: the gateway
/// config's `[auth]` table (see the module doc, "Throttling").
#[derive(Clone, Debug, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// argon2 verifications running at once, REST and XML together (each takes the hash's
    /// memory cost, 19 MiB for hashes made by `cairn user`).
    #[serde(default = "default_max_concurrent_hashes")]
    pub max_concurrent_hashes: usize,
    /// Logins that may wait for a verification slot; one more is refused at once as busy.
    #[serde(default = "default_max_waiting_hashes")]
    pub max_waiting_hashes: usize,
    /// How long a failed login waits, holding no slot, before it is answered (milliseconds).
    #[serde(default = "default_failed_login_delay_ms")]
    pub failed_login_delay_ms: u64,
}

fn default_max_concurrent_hashes() -> usize {
    2
}
fn default_max_waiting_hashes() -> usize {
    32
}
fn default_failed_login_delay_ms() -> u64 {
    1000
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            max_concurrent_hashes: default_max_concurrent_hashes(),
            max_waiting_hashes: default_max_waiting_hashes(),
            failed_login_delay_ms: default_failed_login_delay_ms(),
        }
    }
}

impl AuthConfig {
    /// The most verifications allowed at once (each holds the hash's memory cost).
    pub const MAX_CONCURRENT_HASHES: usize = 64;
    /// The longest failure delay accepted: a failed login holds its connection that long.
    pub const MAX_FAILED_LOGIN_DELAY_MS: u64 = 60_000;

    /// Checks the limits; names the field at fault and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_concurrent_hashes == 0
            || self.max_concurrent_hashes > Self::MAX_CONCURRENT_HASHES
        {
            return Err(format!(
                "auth.max_concurrent_hashes: from 1 to {} (each verification holds ~19 MiB); 2 is the default",
                Self::MAX_CONCURRENT_HASHES
            ));
        }
        if self.max_waiting_hashes > Semaphore::MAX_PERMITS - Self::MAX_CONCURRENT_HASHES {
            return Err("auth.max_waiting_hashes: too large; 32 is the default".to_string());
        }
        if self.failed_login_delay_ms > Self::MAX_FAILED_LOGIN_DELAY_MS {
            return Err(format!(
                "auth.failed_login_delay_ms: at most {} (a failed login holds its connection that long); 1000 is the default",
                Self::MAX_FAILED_LOGIN_DELAY_MS
            ));
        }
        Ok(())
    }
}

pub use crate::metrics::LoginStats;

/// The gate of [`Users::login`] (see the module doc).
struct Gate {
    /// Hashing slots plus places to wait for one.
    admission: Arc<Semaphore>,
    hashing: Arc<Semaphore>,
    /// The permits of `admission` and `hashing`.
    admitted: usize,
    slots: usize,
    failure_delay: Duration,
    hashing_now: AtomicUsize,
    peak_hashing: AtomicUsize,
    waiting: AtomicUsize,
    delaying: AtomicUsize,
    busy: AtomicU64,
    /// argon2 working memories for reuse, at most one per slot (see the module doc).
    memory: Mutex<Vec<Vec<argon2::Block>>>,
}

impl Gate {
    fn new(cfg: &AuthConfig) -> Gate {
        let slots = cfg
            .max_concurrent_hashes
            .clamp(1, AuthConfig::MAX_CONCURRENT_HASHES);
        let admitted = slots
            .saturating_add(cfg.max_waiting_hashes)
            .min(Semaphore::MAX_PERMITS);
        Gate {
            admission: Arc::new(Semaphore::new(admitted)),
            hashing: Arc::new(Semaphore::new(slots)),
            admitted,
            slots,
            failure_delay: Duration::from_millis(cfg.failed_login_delay_ms),
            hashing_now: AtomicUsize::new(0),
            peak_hashing: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            delaying: AtomicUsize::new(0),
            busy: AtomicU64::new(0),
            memory: Mutex::new(Vec::new()),
        }
    }

    fn stats(&self) -> LoginStats {
        LoginStats {
            hashing: self.hashing_now.load(Ordering::Relaxed),
            peak_hashing: self.peak_hashing.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            delaying: self.delaying.load(Ordering::Relaxed),
            busy: self.busy.load(Ordering::Relaxed),
        }
    }

    fn publish(&self) {
        crate::metrics::login_gate(&self.stats());
    }

    /// Counts one more in `which` until the guard drops.
    fn count<'a>(&'a self, which: &'a AtomicUsize) -> Counted<'a> {
        which.fetch_add(1, Ordering::Relaxed);
        self.publish();
        Counted { gate: self, which }
    }

    /// Counts one running verification until the guard drops, and its high-water mark.
    fn count_hashing(&self) -> Counted<'_> {
        let n = self.hashing_now.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_hashing.fetch_max(n, Ordering::Relaxed);
        self.publish();
        Counted {
            gate: self,
            which: &self.hashing_now,
        }
    }
}

/// One unit of a [`Gate`] counter, given back on drop (also when a future is dropped).
struct Counted<'a> {
    gate: &'a Gate,
    which: &'a AtomicUsize,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.which.fetch_sub(1, Ordering::Relaxed);
        self.gate.publish();
    }
}

/// What the cache says about an attempt.
enum Lookup {
    /// A remembered success: no verification needed.
    Cached(Identity),
    /// Verify `password` against `hash` (None: an unknown name, checked against the dummy
    /// hash); a success is remembered under `key`.
    Verify {
        identity: Option<Identity>,
        hash: Option<String>,
        key: [u8; 32],
    },
}

/// What identifies a version of the users file on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    mtime: Option<SystemTime>,
    ctime: (i64, i64),
    size: u64,
    dev: u64,
    ino: u64,
}

impl Stamp {
    /// None when the file cannot be stat'ed (missing, or unreadable: loading says why).
    fn of(path: &Path) -> Option<Stamp> {
        let md = fs::metadata(path).ok()?;
        Some(Stamp {
            mtime: md.modified().ok(),
            ctime: (md.ctime(), md.ctime_nsec()),
            size: md.len(),
            dev: md.dev(),
            ino: md.ino(),
        })
    }
}

/// The file behind a [`Users`] and what was last seen of it.
struct Source {
    path: PathBuf,
    check_interval: Duration,
    watch: Mutex<Watch>,
}

struct Watch {
    last_check: Instant,
    stamp: Option<Stamp>,
}

/// The users a gateway authenticates against: the file, reloaded when its mtime or size
/// changes (checked at most once a second), plus a cache of recent successful verifications
/// so that a client polling every 100 ms does not cost an argon2 run per request.
/// `Send + Sync`; share it with an `Arc`.
pub struct Users {
    current: RwLock<HashMap<String, User>>,
    source: Option<Source>,
    /// Keyed hash of (name, stored hash, password) → when the success is forgotten.
    cache: Mutex<HashMap<[u8; 32], Instant>>,
    cache_key: [u8; 32],
    gate: Arc<Gate>,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Users")
            .field("path", &self.source.as_ref().map(|s| &s.path))
            .field("users", &self.len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn by_name(file: UsersFile) -> HashMap<String, User> {
    file.users
        .into_iter()
        .map(|u| (u.name.clone(), u))
        .collect()
}

impl Users {
    /// Loads the file once (so that its errors surface at start-up); it is then reloaded when
    /// it changes. A missing file is an empty list.
    pub fn open(path: PathBuf) -> Result<Users, UsersError> {
        let stamp = Stamp::of(&path);
        let file = UsersFile::load(&path)?;
        let mut users = Users::new(file);
        users.source = Some(Source {
            path,
            check_interval: CHECK_INTERVAL,
            watch: Mutex::new(Watch {
                last_check: Instant::now(),
                stamp,
            }),
        });
        Ok(users)
    }

    /// For tests and `cairn dev`: a fixed list, never reloaded. It is not checked; of two
    /// users with the same name the later one counts.
    pub fn from_list(file: UsersFile) -> Users {
        Users::new(file)
    }

    fn new(file: UsersFile) -> Users {
        let mut cache_key = [0u8; 32];
        OsRng.fill_bytes(&mut cache_key);
        Users {
            current: RwLock::new(by_name(file)),
            source: None,
            cache: Mutex::new(HashMap::new()),
            cache_key,
            gate: Arc::new(Gate::new(&AuthConfig::default())),
        }
    }

    /// The same users behind a gate of these limits (a new gate: call before serving).
    pub fn with_limits(mut self, cfg: &AuthConfig) -> Users {
        self.gate = Arc::new(Gate::new(cfg));
        self
    }

    /// Checks `name` and `password` through the gate of the module doc ("Throttling"): a
    /// cached success at once; else a verification slot, or [`LoginError::Busy`] at once when
    /// too many wait already; a failure answered after the failure delay. What adapters call.
    pub async fn login(&self, name: &str, password: &str) -> Result<Identity, LoginError> {
        let (identity, hash, key) = match self.lookup(name, password) {
            Lookup::Cached(identity) => return Ok(identity),
            Lookup::Verify {
                identity,
                hash,
                key,
            } => (identity, hash, key),
        };
        let gate = &self.gate;
        let Ok(admitted) = gate.admission.clone().try_acquire_owned() else {
            gate.busy.fetch_add(1, Ordering::Relaxed);
            crate::metrics::login_busy();
            tracing::debug!(
                verifying = gate.slots,
                waiting = gate.admitted.saturating_sub(gate.slots),
                "login refused at once: every verification slot is taken and as many wait"
            );
            gate.publish();
            return Err(LoginError::Busy);
        };
        let slot = {
            let _waiting = gate.count(&gate.waiting);
            gate.hashing.clone().acquire_owned().await
        };
        let matched = match slot {
            Ok(slot) => verify_gated(gate.clone(), (admitted, slot), hash, password.to_string())
                .await
                .unwrap_or_else(|| {
                    tracing::error!("a password verification did not run to its end");
                    false
                }),
            // The semaphore is never closed; were it, no one gets in.
            Err(_) => false,
        };
        match identity {
            Some(identity) if matched => {
                self.remember(key);
                Ok(identity)
            }
            found => {
                let _delaying = gate.count(&gate.delaying);
                tokio::time::sleep(gate.failure_delay).await;
                Err(LoginError::Refused(match found {
                    Some(_) => AuthError::WrongPassword,
                    None => AuthError::Unknown,
                }))
            }
        }
    }

    /// What the login gate is doing now.
    pub fn login_stats(&self) -> LoginStats {
        self.gate.stats()
    }

    /// Checks `name` and `password` at once, with no gate and no failure delay: for tools and
    /// tests. Adapters call [`Users::login`]. Reloads the file first if it changed (see the
    /// module doc).
    pub fn authenticate(&self, name: &str, password: &str) -> Result<Identity, AuthError> {
        match self.lookup(name, password) {
            Lookup::Cached(identity) => Ok(identity),
            Lookup::Verify { identity: None, .. } => {
                // As long as a wrong password takes, so that names cannot be probed by timing.
                let _ = verify_password(dummy_hash(), password);
                Err(AuthError::Unknown)
            }
            Lookup::Verify {
                identity: Some(identity),
                hash,
                key,
            } => {
                if !verify_password(hash.as_deref().unwrap_or_default(), password) {
                    return Err(AuthError::WrongPassword);
                }
                self.remember(key);
                Ok(identity)
            }
        }
    }

    /// Reloads the file if it changed, finds the user and looks in the cache.
    fn lookup(&self, name: &str, password: &str) -> Lookup {
        self.maybe_reload();
        let found = {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            current.get(name).map(|u| (u.role, u.password_hash.clone()))
        };
        let Some((role, hash)) = found else {
            return Lookup::Verify {
                identity: None,
                hash: None,
                key: [0; 32],
            };
        };
        let identity = Identity {
            name: name.to_string(),
            role,
        };
        let key = self.cache_key_for(name, &hash, password);
        let now = Instant::now();
        let mut cache = lock(&self.cache);
        match cache.get(&key) {
            Some(&expiry) if expiry > now => return Lookup::Cached(identity),
            Some(_) => {
                cache.remove(&key);
            }
            None => {}
        }
        Lookup::Verify {
            identity: Some(identity),
            hash: Some(hash),
            key,
        }
    }

    /// Remembers a successful verification for [`CACHE_TTL`].
    fn remember(&self, key: [u8; 32]) {
        let now = Instant::now();
        let mut cache = lock(&self.cache);
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, expiry| *expiry > now);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, now + CACHE_TTL);
    }

    /// The current role of `name` (`None`: no such user now). Reloads the file first if it
    /// changed, so a dashboard session follows role changes and removals at once.
    pub fn role_of(&self, name: &str) -> Option<Role> {
        self.maybe_reload();
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.get(name).map(|u| u.role)
    }

    /// How many users there are now.
    pub fn len(&self) -> usize {
        self.current.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file the users come from; None for [`Users::from_list`].
    pub fn path(&self) -> Option<&Path> {
        self.source.as_ref().map(|s| s.path.as_path())
    }

    /// Reads the file again now, changed or not (e.g. on SIGHUP). A file that does not load
    /// keeps the previous users, with a warning. Nothing for [`Users::from_list`].
    pub fn reload_now(&self) {
        if let Some(src) = &self.source {
            let mut watch = lock(&src.watch);
            watch.last_check = Instant::now();
            self.reload(src, &mut watch, true);
        }
    }

    /// Reloads if the file changed, looking at most once per check interval. If another
    /// thread is looking already, goes on with the users as they are.
    fn maybe_reload(&self) {
        let Some(src) = &self.source else {
            return;
        };
        let mut watch = match src.watch.try_lock() {
            Ok(w) => w,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        let now = Instant::now();
        if now.duration_since(watch.last_check) < src.check_interval {
            return;
        }
        watch.last_check = now;
        self.reload(src, &mut watch, false);
    }

    fn reload(&self, src: &Source, watch: &mut Watch, force: bool) {
        // Stat before reading: a change made while reading is seen by the next check.
        let stamp = Stamp::of(&src.path);
        if !force && stamp == watch.stamp {
            return;
        }
        // Whatever happens, this version has been looked at: a broken file warns once.
        watch.stamp = stamp;
        match UsersFile::load(&src.path) {
            Ok(file) => {
                let n = file.users.len();
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = by_name(file);
                if stamp.is_none() {
                    tracing::warn!(
                        file = %src.path.display(),
                        "the users file is gone; no one can log in until it is back"
                    );
                } else {
                    tracing::info!(file = %src.path.display(), users = n, "users file reloaded");
                }
            }
            Err(e) => {
                tracing::warn!(
                    file = %src.path.display(),
                    error = %e,
                    "cannot reload the users file; keeping the previous users"
                );
            }
        }
    }

    /// The cache key of a verification: keyed BLAKE3 of the length-prefixed fields.
    fn cache_key_for(&self, name: &str, password_hash: &str, password: &str) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.cache_key);
        for field in [name, password_hash, password] {
            h.update(&(field.len() as u64).to_le_bytes());
            h.update(field.as_bytes());
        }
        *h.finalize().as_bytes()
    }

    #[cfg(test)]
    fn with_check_interval(mut self, interval: Duration) -> Users {
        if let Some(src) = &mut self.source {
            src.check_interval = interval;
        }
        self
    }

    #[cfg(test)]
    fn cached(&self) -> usize {
        lock(&self.cache).len()
    }

    /// Takes every hashing slot (and the admission permits running verifications hold)
    /// until the permits drop: logins wait as behind a flood's verifications.
    #[cfg(test)]
    pub(crate) async fn occupy_hashing(&self) -> (OwnedSemaphorePermit, OwnedSemaphorePermit) {
        let n = u32::try_from(self.gate.slots).unwrap_or(u32::MAX);
        let admitted = self.gate.admission.clone().acquire_many_owned(n).await;
        let hashing = self.gate.hashing.clone().acquire_many_owned(n).await;
        (
            admitted.expect("the gate is never closed"),
            hashing.expect("the gate is never closed"),
        )
    }

    /// Takes every admission permit until the permit drops: the gate is as full as a flood
    /// makes it, and an uncached login is refused as busy.
    #[cfg(test)]
    pub(crate) async fn occupy_gate(&self) -> OwnedSemaphorePermit {
        let n = u32::try_from(self.gate.admitted).unwrap_or(u32::MAX);
        self.gate
            .admission
            .clone()
            .acquire_many_owned(n)
            .await
            .expect("the gate is never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(users: &[(&str, Role, &str)]) -> UsersFile {
        UsersFile {
            users: users
                .iter()
                .map(|&(name, role, password_hash)| User {
                    name: name.to_string(),
                    role,
                    password_hash: password_hash.to_string(),
                })
                .collect(),
        }
    }

    /// Sets the file's mtime to a fixed point that differs from the one before.
    fn bump_mtime(path: &Path, secs: u64) {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs);
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn users_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Users>();
    }

    #[test]
    fn role_ordering_and_allows() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert!(Role::Admin.allows(Role::Viewer));
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Admin.allows(Role::Admin));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Operator.allows(Role::Admin));
        assert!(!Role::Viewer.allows(Role::Operator));
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            assert_eq!(r.to_string(), r.as_str());
        }
        assert_eq!(Role::parse("ADMIN"), Some(Role::Admin));
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn names_and_passwords_are_checked() {
        let mut f = UsersFile::default();
        for bad in ["", "a b", "é", "x/y", &"a".repeat(65)] {
            let e = f.add(bad, Role::Viewer, "long enough").unwrap_err();
            assert!(e.to_string().contains(NAME_RULE), "{e}");
        }
        let e = f.add("bob", Role::Viewer, "short").unwrap_err();
        assert_eq!(e.to_string(), "a password must be at least 8 characters");
        assert!(f.users.is_empty());
        validate_name("ops.team_1-x@example").unwrap();
        validate_name(&"a".repeat(64)).unwrap();
    }

    #[test]
    fn round_trip_mode_and_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        assert_eq!(UsersFile::load(&path).unwrap(), UsersFile::default());

        let mut f = UsersFile::default();
        f.add("alice", Role::Admin, "alice-secret-1").unwrap();
        f.users.push(User {
            name: "bob".into(),
            role: Role::Viewer,
            password_hash: f.users[0].password_hash.clone(),
        });
        f.save(&path).unwrap();

        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("alice-secret-1"));
        assert!(text.contains("[[user]]") && text.contains("$argon2id$"));
        // Nothing left behind but the file itself.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        let back = UsersFile::load(&path).unwrap();
        assert_eq!(back, f);
        let alice = back.get("alice").unwrap();
        assert_eq!(alice.role, Role::Admin);
        assert!(verify_password(&alice.password_hash, "alice-secret-1"));
        assert!(!verify_password(&alice.password_hash, "alice-secret-2"));

        // Saving over an existing file keeps it private too.
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        back.save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn duplicates_refused() {
        let mut f = UsersFile::default();
        f.add("bob", Role::Viewer, "bob-password").unwrap();
        let e = f.add("bob", Role::Admin, "other-password").unwrap_err();
        assert_eq!(e.to_string(), "user \"bob\" already exists");
        assert_eq!(f.users.len(), 1);
        assert_eq!(f.get("bob").unwrap().role, Role::Viewer);

        // A file with the same name twice is refused on load, and never written.
        let hash = f.users[0].password_hash.clone();
        f.users.push(f.users[0].clone());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        assert!(matches!(f.save(&path), Err(UsersError::Invalid(_))));
        assert!(!path.exists());
        let text = format!(
            "[[user]]\nname = \"bob\"\nrole = \"viewer\"\npassword_hash = \"{hash}\"\n\
             [[user]]\nname = \"bob\"\nrole = \"admin\"\npassword_hash = \"{hash}\"\n"
        );
        fs::write(&path, text).unwrap();
        let e = UsersFile::load(&path).unwrap_err();
        assert!(matches!(e, UsersError::Parse { .. }));
        assert!(e.to_string().contains("more than once"), "{e}");
    }

    #[test]
    fn remove_set_password_set_role() {
        let mut f = UsersFile::default();
        f.add("bob", Role::Viewer, "first-password").unwrap();
        let old = f.get("bob").unwrap().password_hash.clone();
        f.set_password("bob", "second-password").unwrap();
        let new = &f.get("bob").unwrap().password_hash;
        assert_ne!(&old, new);
        assert!(verify_password(new, "second-password"));
        assert!(!verify_password(new, "first-password"));
        assert!(f.set_password("bob", "short").is_err());

        f.set_role("bob", Role::Operator).unwrap();
        assert_eq!(f.get("bob").unwrap().role, Role::Operator);

        let e = f.set_password("carol", "whatever-password").unwrap_err();
        assert_eq!(e.to_string(), "no user named \"carol\"");
        assert!(f.set_role("carol", Role::Admin).is_err());
        f.remove("bob").unwrap();
        assert!(f.get("bob").is_none());
        let e = f.remove("bob").unwrap_err();
        assert_eq!(e.to_string(), "no user named \"bob\"");
    }

    #[test]
    fn bad_content_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let cases = [
            "[[user]\nname = \"x\"\n",
            "[[user]]\nname = \"x\"\nrole = \"root\"\npassword_hash = \"$argon2id$\"\n",
            "[[user]]\nname = \"x\"\nrole = \"admin\"\npassword = \"plain\"\n",
            "[[user]]\nname = \"x\"\nrole = \"admin\"\npassword_hash = \"plain\"\n",
            "[[user]]\nname = \"x\"\nrole = \"admin\"\npassword_hash = \"$2b$12$abc\"\n",
            "[[user]]\nname = \"a b\"\nrole = \"admin\"\npassword_hash = \"\"\n",
            "users = 3\n",
        ];
        for text in cases {
            fs::write(&path, text).unwrap();
            let e = UsersFile::load(&path).unwrap_err();
            assert!(matches!(e, UsersError::Parse { .. }), "{text}: {e:?}");
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
            assert!(Users::open(path.clone()).is_err());
        }
    }

    #[test]
    fn authenticate_and_refuse() {
        let mut f = UsersFile::default();
        f.add("alice", Role::Operator, "alice-password").unwrap();
        let users = Users::from_list(f);
        assert_eq!(users.len(), 1);
        assert!(!users.is_empty());

        assert_eq!(
            users.authenticate("alice", "alice-password"),
            Ok(Identity {
                name: "alice".into(),
                role: Role::Operator
            })
        );
        assert_eq!(users.cached(), 1);
        // A second time comes from the cache.
        assert!(users.authenticate("alice", "alice-password").is_ok());
        assert_eq!(users.cached(), 1);

        assert_eq!(
            users.authenticate("alice", "wrong-password"),
            Err(AuthError::WrongPassword)
        );
        assert_eq!(
            users.authenticate("mallory", "alice-password"),
            Err(AuthError::Unknown)
        );
        assert_eq!(
            users.authenticate("ALICE", "alice-password"),
            Err(AuthError::Unknown)
        );
        // Failures are never cached.
        assert_eq!(users.cached(), 1);
        assert!(Users::from_list(UsersFile::default()).is_empty());
    }

    /// A PHC string of `password` with the smallest argon2 parameters (8 KiB, one pass):
    /// verifications that take microseconds, for tests about the gate rather than the hash.
    fn cheap_hash(password: &str) -> String {
        let params = argon2::Params::new(8, 1, 1, None).unwrap();
        Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string()
    }

    fn limits(
        max_concurrent_hashes: usize,
        max_waiting_hashes: usize,
        delay_ms: u64,
    ) -> AuthConfig {
        AuthConfig {
            max_concurrent_hashes,
            max_waiting_hashes,
            failed_login_delay_ms: delay_ms,
        }
    }

    /// Polls `ready` every few milliseconds until it holds; panics after `deadline`.
    async fn until(deadline: Duration, what: &str, ready: impl Fn() -> bool) {
        let end = Instant::now() + deadline;
        while !ready() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_than_n_verifications_run_at_once() {
        let mut f = UsersFile::default();
        // Full-cost hashes (19 MiB, two passes): each verification lasts long enough for
        // unthrottled ones to overlap.
        f.add("alice", Role::Admin, "alice-password").unwrap();
        let users = Arc::new(Users::from_list(f).with_limits(&limits(2, 100, 0)));
        let attempts: Vec<_> = (0..12)
            .map(|i| {
                let users = users.clone();
                let (name, password) = if i % 3 == 0 {
                    ("mallory", "whatever-password".to_string())
                } else {
                    ("alice", format!("wrong-password-{i}"))
                };
                tokio::spawn(async move { users.login(name, &password).await })
            })
            .collect();
        for a in attempts {
            assert!(matches!(a.await.unwrap(), Err(LoginError::Refused(_))));
        }
        let stats = users.login_stats();
        assert!((1..=2).contains(&stats.peak_hashing), "{stats:?}");
        assert_eq!((stats.hashing, stats.waiting, stats.busy), (0, 0, 0));
        assert_eq!(users.cached(), 0);
        // One working memory per verification that ran at once, kept for the next ones.
        let memories = lock(&users.gate.memory);
        assert_eq!(memories.len(), stats.peak_hashing);
        let default_blocks = argon2::Params::default().block_count();
        assert!(memories.iter().all(|m| m.len() == default_blocks));
    }

    #[test]
    fn verifying_in_reused_memory_agrees_with_the_crate() {
        let salt = SaltString::generate(&mut OsRng);
        let mut hashes = vec![
            hash_password("right-password").unwrap(),
            cheap_hash("right-password"),
        ];
        for (algorithm, version, m) in [
            (argon2::Algorithm::Argon2i, argon2::Version::V0x13, 64),
            (argon2::Algorithm::Argon2d, argon2::Version::V0x10, 32),
            (argon2::Algorithm::Argon2id, argon2::Version::V0x10, 128),
        ] {
            let params = argon2::Params::new(m, 2, 2, Some(24)).unwrap();
            let h = Argon2::new(algorithm, version, params)
                .hash_password(b"right-password", &salt)
                .unwrap()
                .to_string();
            hashes.push(h);
        }
        hashes.push("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ".to_string());
        hashes.push("plain".to_string());
        hashes.push(String::new());
        // One memory for all, in an order where it shrinks and grows.
        let mut memory = Vec::new();
        for round in 0..2 {
            for hash in &hashes {
                for password in ["right-password", "wrong-password", ""] {
                    assert_eq!(
                        verify_password_in(hash, password, &mut memory),
                        verify_password(hash, password),
                        "round {round}: {hash} {password:?}"
                    );
                }
            }
        }
        assert!(verify_password_in(
            &hashes[0],
            "right-password",
            &mut memory
        ));
        assert_eq!(memory.len(), argon2::Params::default().block_count());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_gate_refuses_at_once_but_a_cached_user_gets_in() {
        let f = file_with(&[
            ("alice", Role::Operator, &cheap_hash("alice-password")),
            ("bob", Role::Viewer, &cheap_hash("bob-password")),
        ]);
        let users = Arc::new(Users::from_list(f).with_limits(&limits(1, 2, 0)));
        // Alice logged in before the flood.
        assert!(users.login("alice", "alice-password").await.is_ok());
        let held = users.occupy_hashing().await;
        // Two wrong passwords wait for the slot...
        let waiting: Vec<_> = ["bob", "nobody"]
            .into_iter()
            .map(|name| {
                let users = users.clone();
                tokio::spawn(async move { users.login(name, "guess-password").await })
            })
            .collect();
        until(Duration::from_secs(30), "two logins waiting", || {
            users.login_stats().waiting == 2
        })
        .await;
        // ...so a third is refused at once, whether the name exists or not, and whether the
        // password is right or not: nothing is checked.
        let at_once = Duration::from_secs(10);
        for (name, password) in [
            ("bob", "guess-password"),
            ("nobody", "guess-password"),
            ("bob", "bob-password"),
            ("alice", "wrong-password"),
        ] {
            let answer = tokio::time::timeout(at_once, users.login(name, password)).await;
            assert_eq!(answer, Ok(Err(LoginError::Busy)), "{name} {password}");
        }
        assert_eq!(users.login_stats().busy, 4);
        // The cached success passes the full gate without a slot.
        let alice = tokio::time::timeout(at_once, users.login("alice", "alice-password"))
            .await
            .expect("a cached login waits for nothing")
            .unwrap();
        assert_eq!(alice.role, Role::Operator);
        // Once the slot is free the waiting ones are checked (and refused).
        drop(held);
        let mut refusals = Vec::new();
        for w in waiting {
            match w.await.unwrap() {
                Err(LoginError::Refused(e)) => refusals.push(e),
                other => panic!("{other:?}"),
            }
        }
        refusals.sort_by_key(|e| *e == AuthError::Unknown);
        assert_eq!(refusals, [AuthError::WrongPassword, AuthError::Unknown]);
        assert_eq!(users.login_stats().waiting, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failure_is_answered_after_the_delay() {
        let f = file_with(&[("alice", Role::Admin, &cheap_hash("alice-password"))]);
        let users = Users::from_list(f).with_limits(&limits(2, 8, 400));
        for (name, password, want) in [
            ("alice", "wrong-password", AuthError::WrongPassword),
            ("mallory", "alice-password", AuthError::Unknown),
        ] {
            let started = Instant::now();
            assert_eq!(
                users.login(name, password).await,
                Err(LoginError::Refused(want))
            );
            assert!(
                started.elapsed() >= Duration::from_millis(400),
                "{name}: answered after {:?}",
                started.elapsed()
            );
        }
        assert!(users.login("alice", "alice-password").await.is_ok());
        assert_eq!(users.login_stats().delaying, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_delay_holds_no_slot() {
        let f = file_with(&[
            ("alice", Role::Admin, &cheap_hash("alice-password")),
            ("bob", Role::Viewer, &cheap_hash("bob-password")),
        ]);
        // One slot, and a delay far longer than the test may take.
        let users = Arc::new(Users::from_list(f).with_limits(&limits(1, 0, 3_600_000)));
        let failing = {
            let users = users.clone();
            tokio::spawn(async move { users.login("alice", "wrong-password").await })
        };
        until(
            Duration::from_secs(30),
            "the failure to be in its delay",
            || {
                let s = users.login_stats();
                s.delaying == 1 && s.hashing == 0
            },
        )
        .await;
        // Bob (not cached) needs the only slot, and gets it at once.
        let bob = tokio::time::timeout(Duration::from_secs(60), users.login("bob", "bob-password"))
            .await
            .expect("a login while another failure waits out its delay");
        assert_eq!(bob.unwrap().name, "bob");
        assert!(!failing.is_finished());
        failing.abort();
    }

    #[test]
    fn expired_entries_are_not_used() {
        let mut f = UsersFile::default();
        f.add("alice", Role::Viewer, "alice-password").unwrap();
        let hash = f.users[0].password_hash.clone();
        let users = Users::from_list(f);
        // A stale entry for a wrong password must not let it in.
        let key = users.cache_key_for("alice", &hash, "wrong-password");
        lock(&users.cache).insert(key, Instant::now());
        assert_eq!(
            users.authenticate("alice", "wrong-password"),
            Err(AuthError::WrongPassword)
        );
        assert_eq!(users.cached(), 0);
        // Fields cannot run together.
        assert_ne!(
            users.cache_key_for("ab", "c", "d"),
            users.cache_key_for("a", "bc", "d")
        );
    }

    #[test]
    fn reloaded_after_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let mut f = UsersFile::default();
        f.add("alice", Role::Admin, "alice-password").unwrap();
        let hash = f.users[0].password_hash.clone();
        f.save(&path).unwrap();
        bump_mtime(&path, 0);

        let users = Users::open(path.clone())
            .unwrap()
            .with_check_interval(Duration::from_secs(3600));
        assert_eq!(users.len(), 1);
        // Within the check interval a change is not looked at...
        f.set_role("alice", Role::Viewer).unwrap();
        fs::write(&path, toml::to_string(&f).unwrap()).unwrap();
        bump_mtime(&path, 1);
        assert_eq!(
            users.authenticate("alice", "alice-password").unwrap().role,
            Role::Admin
        );
        // ...until it is forced.
        users.reload_now();
        assert_eq!(
            users.authenticate("alice", "alice-password").unwrap().role,
            Role::Viewer
        );

        // With no interval, the next authentication sees a change made in place.
        let users = users.with_check_interval(Duration::ZERO);
        let more = file_with(&[
            ("alice", Role::Viewer, &hash),
            ("bob", Role::Operator, &hash),
        ]);
        fs::write(&path, toml::to_string(&more).unwrap()).unwrap();
        bump_mtime(&path, 2);
        assert_eq!(
            users.authenticate("bob", "alice-password").unwrap().role,
            Role::Operator
        );
        assert_eq!(users.len(), 2);

        // Bad TOML written by hand keeps the previous users.
        fs::write(&path, "[[user]\nname = ").unwrap();
        bump_mtime(&path, 3);
        assert_eq!(
            users.authenticate("bob", "alice-password").unwrap().role,
            Role::Operator
        );
        assert_eq!(users.len(), 2);

        // A removed file means no users.
        fs::remove_file(&path).unwrap();
        assert_eq!(
            users.authenticate("bob", "alice-password"),
            Err(AuthError::Unknown)
        );
        assert!(users.is_empty());
    }

    #[test]
    fn cache_invalidated_by_a_password_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let mut f = UsersFile::default();
        f.add("alice", Role::Admin, "old-password").unwrap();
        f.save(&path).unwrap();
        bump_mtime(&path, 0);
        let users = Users::open(path.clone())
            .unwrap()
            .with_check_interval(Duration::ZERO);
        assert!(users.authenticate("alice", "old-password").is_ok());
        assert_eq!(users.cached(), 1);

        f.set_password("alice", "new-password").unwrap();
        f.save(&path).unwrap();
        bump_mtime(&path, 1);
        assert_eq!(
            users.authenticate("alice", "old-password"),
            Err(AuthError::WrongPassword)
        );
        assert!(users.authenticate("alice", "new-password").is_ok());

        // Removing the user: its cached success no longer counts.
        f.remove("alice").unwrap();
        f.save(&path).unwrap();
        bump_mtime(&path, 2);
        assert_eq!(
            users.authenticate("alice", "new-password"),
            Err(AuthError::Unknown)
        );
    }
}
