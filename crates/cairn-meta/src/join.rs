//! Join tokens: how a new agent gets its agent token without anyone copying one by hand.
//!
//! An admin issues a join token for a host (`PutJoinToken`, access `administer`); the catalog
//! keeps its id, host, expiry and BLAKE3 hash, never the token. The new agent presents the
//! token to any node, which authenticates it as [`Principal::JoinToken`] (its id and the hash
//! of what was presented, nothing looked up) and proposes `RedeemJoinToken` with a fresh
//! agent token's record. This decision, the same on every member, is the whole check (rule
//! `join-token-holder`), in this order:
//!
//! | # | refused when | code |
//! |---|---|---|
//! | 1 | the proposer is not a join token's holder | `E1001` invalid argument |
//! | 2 | no record has its id, or the hash differs | `E1008` unauthenticated |
//! | 3 | it was redeemed before | `E1025` join token used |
//! | 4 | `now_ms` is at or past its expiry | `E1026` join token expired |
//! | 5 | the host asked for is not the token's | `E1009` permission denied |
//!
//! Otherwise one atomic write stores the agent token (bound to the join token's host) and
//! marks the join token redeemed. The record stays until the token's expiry, so a second
//! redemption is told "used" rather than "unknown". A refusal for an unknown id and for a
//! wrong secret read the same. `now_ms` is the proposing node's clock, carried in the command
//! like every other time a decision compares.
//!
//! # Lifecycle: listing, revoking, pruning
//! - Listing (`Agents.ListJoinTokens`, access `administer`) is a read of this node's catalog
//!   and shows id, host, creation, expiry and redemption: never the token, never its hash.
//! - `RevokeJoinTokens` (access `administer`) removes the records it names. A revoked token
//!   is then unknown, and its redemption is refused like a wrong secret (`E1008`, row 2).
//!   Naming nothing that exists is refused as not found (`E1002`), so a typo is not
//!   mistaken for a revocation.
//! - Pruning needs no sweeper: every `PutJoinToken` also removes, in the same write, every
//!   record whose expiry is at or before the new token's creation (the proposer's clock,
//!   carried in the record). An expired token could not be redeemed anyway, and a used one is
//!   kept until its expiry only so that a retried redemption is told "used". The catalog
//!   thus holds at most the tokens of the last 30 days (the longest TTL).

use cairn_core::auth::{Principal, Rule};
use cairn_core::job::JoinTokenRecord;
use cairn_core::ErrorCode;

use crate::command::{Command, Response};
use crate::view::{CatalogRead, Decision, Write};

/// Decides `PutJoinToken`, `RedeemJoinToken` and `RevokeJoinTokens` (admission already
/// passed).
pub(crate) fn decide<V: CatalogRead + ?Sized>(
    view: &V,
    by: &Principal,
    cmd: &Command,
) -> Result<Decision, V::Error> {
    match cmd {
        Command::PutJoinToken { record } => {
            if view.join_token(&record.id)?.is_some() {
                return Ok(Decision::refuse(
                    ErrorCode::Conflict,
                    format!("join token {} already exists", record.id),
                ));
            }
            // Pruning: the tokens that expired by this one's creation go in the same write.
            let mut writes: Vec<Write> = view
                .join_tokens()?
                .into_iter()
                .filter(|t| t.expires_ms <= record.created_ms)
                .map(|t| Write::DeleteJoinToken(t.id))
                .collect();
            writes.push(Write::PutJoinToken(record.clone()));
            Ok(Decision {
                writes,
                response: Response::Done,
            })
        }
        Command::RevokeJoinTokens { ids } => {
            let mut writes = Vec::new();
            for id in ids {
                if view.join_token(id)?.is_some() {
                    writes.push(Write::DeleteJoinToken(id.clone()));
                }
            }
            if writes.is_empty() {
                return Ok(Decision::refuse(
                    ErrorCode::NotFound,
                    "no join token matches".into(),
                ));
            }
            Ok(Decision {
                response: Response::Removed {
                    count: writes.len() as u32,
                },
                writes,
            })
        }
        Command::RedeemJoinToken {
            host,
            agent,
            now_ms,
        } => redeem(view, by, host, agent, *now_ms),
        other => Ok(Decision::refuse(
            ErrorCode::Internal,
            format!("command {} is not a join token command", other.kind()),
        )),
    }
}

fn redeem<V: CatalogRead + ?Sized>(
    view: &V,
    by: &Principal,
    host: &str,
    agent: &cairn_core::job::TokenRecord,
    now_ms: i64,
) -> Result<Decision, V::Error> {
    let Principal::JoinToken { id, hash } = by else {
        return Ok(Decision::refuse(
            ErrorCode::InvalidArgument,
            format!(
                "rule join-token-holder: enrolling needs a join token (cairn agent join-token create), not {}",
                by.describe()
            ),
        ));
    };
    let record: Option<JoinTokenRecord> = view.join_token(id)?;
    let Some(mut record) = record.filter(|r| hashes_match(&r.hash, hash)) else {
        return Ok(Decision::refuse(
            ErrorCode::Unauthenticated,
            "rule join-token-holder: unknown join token".into(),
        ));
    };
    if let Some((at, _)) = &record.redeemed {
        return Ok(Decision::refuse(
            ErrorCode::JoinTokenUsed,
            format!("rule join-token-holder: join token {id} was already redeemed (at {at} ms); it enrolls one agent"),
        ));
    }
    if now_ms >= record.expires_ms {
        return Ok(Decision::refuse(
            ErrorCode::JoinTokenExpired,
            format!("rule join-token-holder: join token {id} expired"),
        ));
    }
    if host != record.host || agent.host != record.host || agent.role.is_some() {
        return Ok(Decision::deny(
            Rule::JoinTokenHolder,
            format!(
                "rule join-token-holder: join token {id} enrolls host {:?}, not {host:?}",
                record.host
            ),
        ));
    }
    if view.token(&agent.id)?.is_some() {
        return Ok(Decision::refuse(
            ErrorCode::Conflict,
            format!("agent token {} already exists", agent.id),
        ));
    }
    record.redeemed = Some((now_ms, agent.id.clone()));
    Ok(Decision {
        writes: vec![Write::PutToken(agent.clone()), Write::PutJoinToken(record)],
        response: Response::Done,
    })
}

/// Compares two hex hashes without an early exit.
fn hashes_match(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use cairn_core::auth::Role;
    use cairn_core::job::{token_hash, TokenRecord};

    use super::*;
    use crate::catalog::tests::{agent, user, MemCatalog};

    const TOKEN: &str = "cairn-join.j1.secret";

    fn holder(token: &str) -> Principal {
        Principal::JoinToken {
            id: cairn_core::job::join_token_id(token).unwrap().into(),
            hash: token_hash(token),
        }
    }

    fn agent_token(host: &str, id: &str) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            host: host.into(),
            hash: token_hash(&format!("cairn-agent.{id}.s")),
            created_ms: 5,
            name: String::new(),
            role: None,
        }
    }

    fn redeem(host: &str, agent_id: &str, now_ms: i64) -> Command {
        Command::RedeemJoinToken {
            host: host.into(),
            agent: agent_token(host, agent_id),
            now_ms,
        }
    }

    /// A catalog with join token j1 for host hn1, expiring at 1000.
    fn issued() -> MemCatalog {
        let mut cat = MemCatalog::default();
        let r = cat.run_as(
            user(Role::Admin),
            Command::PutJoinToken {
                record: JoinTokenRecord {
                    id: "j1".into(),
                    host: "hn1".into(),
                    hash: token_hash(TOKEN),
                    created_ms: 0,
                    expires_ms: 1_000,
                    redeemed: None,
                },
            },
        );
        assert_eq!(r, Response::Done);
        cat
    }

    fn code(r: &Response) -> Option<ErrorCode> {
        r.refusal().map(|(c, _)| c)
    }

    #[test]
    fn a_join_token_enrolls_its_host_once() {
        let mut cat = issued();
        assert_eq!(
            cat.run_as(holder(TOKEN), redeem("hn1", "a1", 10)),
            Response::Done
        );
        let t = cat.token("a1").unwrap().unwrap();
        assert_eq!(t.principal(), agent("hn1"));
        assert_eq!(
            cat.join_token("j1").unwrap().unwrap().redeemed,
            Some((10, "a1".to_string()))
        );
        // A second redemption is refused as used, and issues nothing.
        let again = cat.run_as(holder(TOKEN), redeem("hn1", "a2", 11));
        assert_eq!(code(&again), Some(ErrorCode::JoinTokenUsed));
        assert!(cat.token("a2").unwrap().is_none());
    }

    #[test]
    fn expired_wrong_host_wrong_secret_and_unknown_tokens_are_refused_by_code() {
        let mut cat = issued();
        let expired = cat.run_as(holder(TOKEN), redeem("hn1", "a1", 1_000));
        assert_eq!(code(&expired), Some(ErrorCode::JoinTokenExpired));
        let other_host = cat.run_as(holder(TOKEN), redeem("hn2", "a1", 10));
        assert_eq!(code(&other_host), Some(ErrorCode::PermissionDenied));
        assert!(matches!(
            other_host,
            Response::Refused {
                rule: Some(Rule::JoinTokenHolder),
                ..
            }
        ));
        // An agent token for another host than the one asked for.
        let mismatched = cat.run_as(
            holder(TOKEN),
            Command::RedeemJoinToken {
                host: "hn1".into(),
                agent: agent_token("hn2", "a1"),
                now_ms: 10,
            },
        );
        assert_eq!(code(&mismatched), Some(ErrorCode::PermissionDenied));
        let wrong_secret = cat.run_as(holder("cairn-join.j1.guess"), redeem("hn1", "a1", 10));
        assert_eq!(code(&wrong_secret), Some(ErrorCode::Unauthenticated));
        let unknown = cat.run_as(holder("cairn-join.j9.secret"), redeem("hn1", "a1", 10));
        assert_eq!(code(&unknown), Some(ErrorCode::Unauthenticated));
        assert_eq!(
            wrong_secret.refusal().map(|(_, m)| m.to_string()),
            unknown.refusal().map(|(_, m)| m.to_string()),
            "an unknown id and a wrong secret read the same"
        );
        // None of them redeemed it: the holder still can.
        assert!(cat.token("a1").unwrap().is_none());
        assert_eq!(
            cat.run_as(holder(TOKEN), redeem("hn1", "a1", 10)),
            Response::Done
        );
    }

    fn put(id: &str, created_ms: i64, expires_ms: i64) -> Command {
        Command::PutJoinToken {
            record: JoinTokenRecord {
                id: id.into(),
                host: "hn1".into(),
                hash: token_hash(&format!("cairn-join.{id}.secret")),
                created_ms,
                expires_ms,
                redeemed: None,
            },
        }
    }

    #[test]
    fn a_revoked_join_token_is_unknown_and_revoking_nothing_is_not_found() {
        let mut cat = issued();
        let r = cat.run_as(
            user(Role::Admin),
            Command::RevokeJoinTokens {
                ids: vec!["j1".into(), "j9".into()],
            },
        );
        assert_eq!(r, Response::Removed { count: 1 });
        assert!(cat.join_token("j1").unwrap().is_none());
        let again = cat.run_as(holder(TOKEN), redeem("hn1", "a1", 10));
        assert_eq!(code(&again), Some(ErrorCode::Unauthenticated));
        assert!(cat.token("a1").unwrap().is_none());
        let none = cat.run_as(
            user(Role::Admin),
            Command::RevokeJoinTokens {
                ids: vec!["j1".into()],
            },
        );
        assert_eq!(code(&none), Some(ErrorCode::NotFound));
        // Only admins revoke.
        let mut cat = issued();
        for who in [user(Role::Operator), agent("hn1"), holder(TOKEN)] {
            let r = cat.run_as(
                who.clone(),
                Command::RevokeJoinTokens {
                    ids: vec!["j1".into()],
                },
            );
            assert_eq!(code(&r), Some(ErrorCode::PermissionDenied), "{who:?}");
        }
        assert!(cat.join_token("j1").unwrap().is_some());
    }

    #[test]
    fn a_new_join_token_prunes_the_expired_ones_used_or_not() {
        // j1 expires at 1000 and is redeemed; j2 expires at 2000 unused; j3 at 5000.
        let mut cat = issued();
        assert_eq!(
            cat.run_as(holder(TOKEN), redeem("hn1", "a1", 10)),
            Response::Done
        );
        for (id, exp) in [("j2", 2_000), ("j3", 5_000)] {
            assert_eq!(
                cat.run_as(user(Role::Admin), put(id, 500, exp)),
                Response::Done
            );
        }
        // Before its expiry a used token stays, so a retry is told "used".
        assert!(cat.join_token("j1").unwrap().is_some());
        // A token created at 2000: j1 (used, expired) and j2 (unused, expired at 2000) go.
        assert_eq!(
            cat.run_as(user(Role::Admin), put("j4", 2_000, 9_000)),
            Response::Done
        );
        let left: Vec<String> = cat
            .join_tokens()
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(left, ["j3", "j4"]);
        // The agent token j1 gave is untouched.
        assert!(cat.token("a1").unwrap().is_some());
    }

    #[test]
    fn only_admins_issue_and_only_holders_redeem() {
        let mut cat = MemCatalog::default();
        let record = JoinTokenRecord {
            id: "j1".into(),
            host: "hn1".into(),
            hash: token_hash(TOKEN),
            created_ms: 0,
            expires_ms: 1_000,
            redeemed: None,
        };
        for who in [user(Role::Operator), agent("hn1"), holder(TOKEN)] {
            let r = cat.run_as(
                who.clone(),
                Command::PutJoinToken {
                    record: record.clone(),
                },
            );
            assert_eq!(code(&r), Some(ErrorCode::PermissionDenied), "{who:?}");
        }
        let mut cat = issued();
        for who in [user(Role::Admin), agent("hn1")] {
            let r = cat.run_as(who.clone(), redeem("hn1", "a1", 10));
            assert_eq!(code(&r), Some(ErrorCode::PermissionDenied), "{who:?}");
        }
        // The cluster secret passes the table but holds no join token.
        let r = cat.run(redeem("hn1", "a1", 10));
        assert_eq!(code(&r), Some(ErrorCode::InvalidArgument));
        assert!(cat.token("a1").unwrap().is_none());
    }
}
