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
//! marks the join token redeemed. The record stays, so a second redemption is told "used"
//! rather than "unknown". A refusal for an unknown id and for a wrong secret read the same.
//! `now_ms` is the proposing node's clock, carried in the command like every other time a
//! decision compares.

use cairn_core::auth::{Principal, Rule};
use cairn_core::job::JoinTokenRecord;
use cairn_core::ErrorCode;

use crate::command::{Command, Response};
use crate::view::{CatalogRead, Decision, Write};

/// Decides `PutJoinToken` and `RedeemJoinToken` (admission already passed).
pub(crate) fn decide<V: CatalogRead + ?Sized>(
    view: &V,
    by: &Principal,
    cmd: &Command,
) -> Result<Decision, V::Error> {
    match cmd {
        Command::PutJoinToken { record } => Ok(if view.join_token(&record.id)?.is_some() {
            Decision::refuse(
                ErrorCode::Conflict,
                format!("join token {} already exists", record.id),
            )
        } else {
            Decision {
                writes: vec![Write::PutJoinToken(record.clone())],
                response: Response::Done,
            }
        }),
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
