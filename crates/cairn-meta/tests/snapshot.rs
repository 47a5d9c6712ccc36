//! Snapshot build and install through the openraft traits preserve the catalog.

mod common;

use std::collections::BTreeSet;

use cairn_core::{BackupId, BackupType, EnvId, ErrorCode};
use cairn_meta::store::{self, StateMachineStore};
use cairn_meta::{Command, LogEntry, Response};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership, RaftSnapshotBuilder};
use tempfile::TempDir;

use common::record;

const T: i64 = 1_763_800_000;

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn normal(index: u64, cmd: Command) -> LogEntry {
    LogEntry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(cairn_meta::Proposal::system(cmd)),
    }
}

fn open(dir: &TempDir) -> StateMachineStore {
    store::open(dir.path()).expect("open stores").1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_round_trip_preserves_the_catalog() -> anyhow::Result<()> {
    let env_a = EnvId::derive("hn1/101");
    let env_b = EnvId::derive("hn1/102");
    let dir_l = TempDir::new()?;
    let mut leader = open(&dir_l);

    let membership = LogEntry {
        log_id: log_id(1),
        payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1u64])], None)),
    };
    let entries = vec![
        membership,
        normal(
            2,
            Command::CommitBackup {
                record: record(env_a, T, "first", BackupType::Full),
                job: None,
                now_ms: 0,
                session: None,
            },
        ),
        normal(
            3,
            Command::CommitBackup {
                record: record(env_a, T, "", BackupType::Incremental),
                job: None,
                now_ms: 0,
                session: None,
            },
        ),
        normal(
            4,
            Command::CommitBackup {
                record: record(env_b, T, "first", BackupType::Full),
                job: None,
                now_ms: 0,
                session: None,
            },
        ),
        normal(
            5,
            Command::CommitBackup {
                record: record(env_a, T + 60, "first", BackupType::Full),
                job: None,
                now_ms: 0,
                session: None,
            },
        ),
    ];
    let responses = leader.apply(entries).await?;
    assert_eq!(responses[0], Response::Empty);
    assert_eq!(
        responses[2],
        Response::Committed {
            id: BackupId::new(env_a, T + 1),
            removed: vec![],
        }
    );
    assert_eq!(
        responses[4].refusal().map(|(c, _)| c),
        Some(ErrorCode::DuplicateName)
    );

    let built = leader.get_snapshot_builder().await.build_snapshot().await?;
    assert_eq!(built.meta.last_log_id, Some(log_id(5)));
    assert_eq!(built.meta.last_membership.log_id(), &Some(log_id(1)));

    // A later apply on the leader does not leak into the built snapshot.
    leader
        .apply([normal(
            6,
            Command::DeleteBackup {
                id: BackupId::new(env_b, T),
            },
        )])
        .await?;

    let dir_f = TempDir::new()?;
    let mut follower = open(&dir_f);
    // The follower has unrelated state that the snapshot must replace entirely.
    follower
        .apply([normal(
            1,
            Command::CommitBackup {
                record: record(env_b, T + 5, "stale", BackupType::Full),
                job: None,
                now_ms: 0,
                session: None,
            },
        )])
        .await?;
    let mut data = follower.begin_receiving_snapshot().await?;
    *data = *built.snapshot.clone();
    follower.install_snapshot(&built.meta, data).await?;

    let expected = vec![
        record(env_a, T, "first", BackupType::Full),
        {
            let mut r = record(env_a, T, "", BackupType::Incremental);
            r.id = BackupId::new(env_a, T + 1);
            r
        },
        record(env_b, T, "first", BackupType::Full),
    ];
    let mut want = expected.clone();
    want.sort_by_key(|r| r.id);
    assert_eq!(follower.list_backups(None)?, want);
    let (applied, membership) = follower.applied_state().await?;
    assert_eq!(applied, Some(log_id(5)));
    assert_eq!(membership, built.meta.last_membership);

    // The name index came along: the same name is still refused on the follower, and the
    // stale backup's name is free.
    let r = follower
        .apply([
            normal(
                6,
                Command::CommitBackup {
                    record: record(env_a, T + 99, "first", BackupType::Full),
                    job: None,
                    now_ms: 0,
                    session: None,
                },
            ),
            normal(
                7,
                Command::CommitBackup {
                    record: record(env_b, T + 99, "stale", BackupType::Full),
                    job: None,
                    now_ms: 0,
                    session: None,
                },
            ),
        ])
        .await?;
    assert_eq!(
        r[0].refusal().map(|(c, _)| c),
        Some(ErrorCode::DuplicateName)
    );
    assert_eq!(
        r[1],
        Response::Committed {
            id: BackupId::new(env_b, T + 99),
            removed: vec![],
        }
    );

    // The installed snapshot is current, and stays so across a restart.
    drop(follower);
    let mut reopened = open(&dir_f);
    let current = reopened
        .get_current_snapshot()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no current snapshot after restart"))?;
    assert_eq!(current.meta, built.meta);
    assert_eq!(current.snapshot.get_ref(), built.snapshot.get_ref());
    assert_eq!(
        reopened.latest_backup(env_a, false)?.map(|r| r.id),
        Some(BackupId::new(env_a, T + 1))
    );
    assert_eq!(
        reopened.latest_backup(env_a, true)?.map(|r| r.id),
        Some(BackupId::new(env_a, T))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_snapshot_is_refused_and_the_state_kept() -> anyhow::Result<()> {
    let env = EnvId::derive("hn1/101");
    let dir_l = TempDir::new()?;
    let mut leader = open(&dir_l);
    leader
        .apply([normal(
            1,
            Command::CommitBackup {
                record: record(env, T, "a", BackupType::Full),
                job: None,
                now_ms: 0,
                session: None,
            },
        )])
        .await?;
    let built = leader.get_snapshot_builder().await.build_snapshot().await?;

    let dir_f = TempDir::new()?;
    let mut follower = open(&dir_f);
    follower
        .apply([normal(
            1,
            Command::CommitBackup {
                record: record(env, T + 7, "keep", BackupType::Full),
                job: None,
                now_ms: 0,
                session: None,
            },
        )])
        .await?;
    let mut bytes = built.snapshot.get_ref().clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let mut data = follower.begin_receiving_snapshot().await?;
    *data = std::io::Cursor::new(bytes);
    assert!(follower.install_snapshot(&built.meta, data).await.is_err());
    assert_eq!(
        follower
            .list_backups(Some(env))?
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        vec![BackupId::new(env, T + 7)]
    );
    assert!(follower.get_current_snapshot().await?.is_none());
    Ok(())
}

/// Members that applied the same log report the same catalog digest at the same index (the
/// nemesis checker compares it across voters); one different entry changes it, and a
/// snapshot installed from a member carries that member's digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_digest_is_the_same_for_the_same_log() -> anyhow::Result<()> {
    let env = EnvId::derive("hn1/101");
    let commit = |index: u64, t: i64, name: &str| {
        normal(
            index,
            Command::CommitBackup {
                record: record(env, t, name, BackupType::Full),
                job: None,
                now_ms: 0,
                session: None,
            },
        )
    };
    let (da, db, dc) = (TempDir::new()?, TempDir::new()?, TempDir::new()?);
    let (mut a, mut b, mut c) = (open(&da), open(&db), open(&dc));
    a.apply([commit(1, T, "x"), commit(2, T + 60, "y")]).await?;
    b.apply([commit(1, T, "x"), commit(2, T + 60, "y")]).await?;
    c.apply([commit(1, T, "x"), commit(2, T + 60, "z")]).await?;
    let (ia, ga) = a.digest()?;
    assert_eq!(ia, 2);
    assert_eq!(b.digest()?, (ia, ga.clone()));
    let (ic, gc) = c.digest()?;
    assert_eq!(ic, 2);
    assert_ne!(gc, ga, "another backup name, another catalog");

    let built = a.get_snapshot_builder().await.build_snapshot().await?;
    let mut data = c.begin_receiving_snapshot().await?;
    *data = *built.snapshot.clone();
    c.install_snapshot(&built.meta, data).await?;
    assert_eq!(c.digest()?, (ia, ga));
    Ok(())
}
