//! Dashboard sessions and the CSRF check: pure pieces the router composes.
//!
//! # Invariants
//! - A session id is 256 random bits from the OS (hex), known only to the browser (cookie
//!   `cairn_session`: HttpOnly, SameSite=Strict, Path=/ui, Secure over TLS) and to this
//!   gateway's memory. Sessions are not shared between gateways and do not survive a restart:
//!   signing in again is the remedy, and nothing else depends on them.
//! - A session ends after [`IDLE`] without a request, after [`ABSOLUTE`] whatever happens,
//!   on sign-out, and when its user is removed from the users file (checked on every request
//!   by the router, which also takes the user's *current* role).
//! - Each session has its own CSRF token (256 random bits). Every POST carries it (a hidden
//!   `csrf` form field, or the `X-CSRF-Token` header for scripts); [`csrf_ok`] compares it in
//!   constant time. When the request names an `Origin` (or, lacking one, a `Referer`), its
//!   host must be the request's `Host` ([`same_origin`]). GET never changes anything.
//! - The number of live sessions is bounded ([`MAX_SESSIONS`]): expired ones are dropped
//!   first, then the oldest.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use cairn_core::auth::Role;
use subtle::ConstantTimeEq;

/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, however busy.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once.
pub const MAX_SESSIONS: usize = 10_000;
/// The session cookie's name.
pub const COOKIE: &str = "cairn_session";

/// What a live session knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    created: Instant,
    last: Instant,
}

/// The sessions of one gateway listener, in memory.
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    idle: Duration,
    absolute: Duration,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(IDLE, ABSOLUTE)
    }
}

impl Sessions {
    pub fn new(idle: Duration, absolute: Duration) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            idle,
            absolute,
        }
    }

    fn live(&self, s: &Session, now: Instant) -> bool {
        now.saturating_duration_since(s.last) < self.idle
            && now.saturating_duration_since(s.created) < self.absolute
    }

    /// Starts a session for `user`; answers its id.
    pub fn create(&self, user: &str, role: Role, now: Instant) -> String {
        let id = random_token();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| {
                now.saturating_duration_since(s.last) < self.idle
                    && now.saturating_duration_since(s.created) < self.absolute
            });
            while map.len() >= MAX_SESSIONS {
                let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, s)| s.last)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                map.remove(&oldest);
            }
        }
        map.insert(
            id.clone(),
            Session {
                user: user.to_string(),
                role,
                csrf: random_token(),
                created: now,
                last: now,
            },
        );
        id
    }

    /// The live session of `id`, marked used at `now`; an expired one is forgotten.
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let s = map.get(id)?;
        if !self.live(s, now) {
            map.remove(id);
            return None;
        }
        let s = map.get_mut(id)?;
        s.last = now;
        Some(s.clone())
    }

    /// Ends a session (sign-out, or its user is gone).
    pub fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// 256 random bits from the OS, as 64 hex digits.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether a presented CSRF token is the session's, compared in constant time.
pub fn csrf_ok(expected: &str, given: Option<&str>) -> bool {
    match given {
        Some(g) if !expected.is_empty() => bool::from(expected.as_bytes().ct_eq(g.as_bytes())),
        _ => false,
    }
}

/// Whether the `Origin` (else the `Referer`) of a POST names the host the request went to.
/// A request naming neither passes (the CSRF token is the check that always runs).
pub fn same_origin(origin: Option<&str>, referer: Option<&str>, host: Option<&str>) -> bool {
    let named = match (origin, referer) {
        (Some(o), _) => o,
        (None, Some(r)) => r,
        (None, None) => return true,
    };
    let Some(host) = host else {
        return false;
    };
    let after_scheme = match named.split_once("://") {
        Some((_, rest)) => rest,
        None => return false,
    };
    let authority = after_scheme.split(['/', '?', '#']).next().unwrap_or("");
    authority.eq_ignore_ascii_case(host)
}

/// The session id a `Cookie` header carries, if any.
pub fn cookie_value(cookie_header: &str) -> Option<&str> {
    cookie_header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value that gives the browser its session.
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that makes the browser forget its session.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_and_absolutely() {
        let s = Sessions::new(Duration::from_secs(10), Duration::from_secs(25));
        let t0 = Instant::now();
        let id = s.create("alice", Role::Operator, t0);
        assert_eq!(id.len(), 64);
        let got = s.get(&id, t0 + Duration::from_secs(9)).unwrap();
        assert_eq!((got.user.as_str(), got.role), ("alice", Role::Operator));
        // Used at 9 s, 18 s: still alive though more than 10 s after sign-in.
        assert!(s.get(&id, t0 + Duration::from_secs(18)).is_some());
        // Past the absolute limit, however recently used.
        assert!(s.get(&id, t0 + Duration::from_secs(26)).is_none());
        assert!(s.is_empty(), "an expired session is forgotten");

        let id = s.create("bob", Role::Viewer, t0);
        assert!(s.get(&id, t0 + Duration::from_secs(11)).is_none(), "idle");
        let id = s.create("bob", Role::Viewer, t0);
        s.remove(&id);
        assert!(s.get(&id, t0).is_none(), "signed out");
        assert!(s.get("nope", t0).is_none());
    }

    #[test]
    fn each_session_has_its_own_id_and_token() {
        let s = Sessions::default();
        let now = Instant::now();
        let a = s.create("a", Role::Admin, now);
        let b = s.create("a", Role::Admin, now);
        assert_ne!(a, b);
        let (ta, tb) = (s.get(&a, now).unwrap().csrf, s.get(&b, now).unwrap().csrf);
        assert_ne!(ta, tb);
        assert_eq!(ta.len(), 64);
    }

    #[test]
    fn csrf_tokens_must_match_exactly() {
        let t = random_token();
        assert!(csrf_ok(&t, Some(&t)));
        assert!(!csrf_ok(&t, None));
        assert!(!csrf_ok(&t, Some("")));
        assert!(!csrf_ok(&t, Some(&t[..63])));
        assert!(!csrf_ok(&t, Some(&format!("{t}0"))));
        assert!(
            !csrf_ok("", Some("")),
            "an empty expected token matches nothing"
        );
    }

    #[test]
    fn origins_must_name_the_requests_host() {
        let host = Some("127.0.0.1:8080");
        assert!(same_origin(Some("http://127.0.0.1:8080"), None, host));
        assert!(same_origin(
            None,
            Some("http://127.0.0.1:8080/ui/x?y"),
            host
        ));
        assert!(same_origin(None, None, host));
        assert!(!same_origin(Some("http://evil.example"), None, host));
        assert!(!same_origin(Some("http://127.0.0.1:8080.evil"), None, host));
        // The Origin decides when both are present.
        assert!(!same_origin(
            Some("http://evil.example"),
            Some("http://127.0.0.1:8080/"),
            host
        ));
        assert!(!same_origin(Some("null"), None, host));
        assert!(!same_origin(Some("http://127.0.0.1:8080"), None, None));
    }

    #[test]
    fn cookies() {
        assert_eq!(cookie_value("a=1; cairn_session=abc; b=2"), Some("abc"));
        assert_eq!(cookie_value("cairn_session="), None);
        assert_eq!(cookie_value("xcairn_session=abc"), None);
        let c = set_cookie("abc", true);
        for part in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Secure"] {
            assert!(c.contains(part), "{c}");
        }
        assert!(!set_cookie("abc", false).contains("Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }
}
