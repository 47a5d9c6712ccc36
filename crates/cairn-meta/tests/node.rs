//! A single-voter metadata node end to end: initialise, write, read, restart, write again.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_core::{BackupId, BackupType, EnvId, ErrorCode};
use cairn_meta::{Command, MetaConfig, MetaError, MetaNode, NoPeers, Response};
use openraft::{BasicNode, ServerState};
use tempfile::TempDir;

use common::record;

const T: i64 = 1_763_800_000;
const LEADER_WAIT: Duration = Duration::from_secs(10);

fn config(dir: &TempDir) -> MetaConfig {
    MetaConfig::new(dir.path(), 1, "127.0.0.1:7700")
}

async fn commit(node: &MetaNode, r: cairn_core::BackupRecord) -> anyhow::Result<Response> {
    Ok(node
        .write_system(Command::CommitBackup {
            record: r,
            job: None,
            now_ms: 0,
            session: None,
        })
        .await?)
}

fn committed(r: Response) -> BackupId {
    match r {
        Response::Committed { id, .. } => id,
        other => panic!("expected Committed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_voter_serves_the_catalog_across_a_restart() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let env_a = EnvId::derive("hn1/101");
    let env_b = EnvId::derive("hn1/102");

    let node = MetaNode::open(config(&dir), NoPeers).await?;
    let members = BTreeMap::from([(1u64, BasicNode::new("127.0.0.1:7700"))]);
    assert!(node.initialize_if_new(members.clone()).await?);
    assert!(
        !node.initialize_if_new(members.clone()).await?,
        "initialised twice"
    );
    assert_eq!(node.wait_for_leader(LEADER_WAIT).await?, 1);

    let full = committed(commit(&node, record(env_a, T, "nightly", BackupType::Full)).await?);
    assert_eq!(full, BackupId::new(env_a, T));
    // Same second: distinct, later ids.
    let inc1 = committed(commit(&node, record(env_a, T, "", BackupType::Incremental)).await?);
    let inc2 = committed(commit(&node, record(env_a, T, "", BackupType::Incremental)).await?);
    assert_eq!((inc1.time, inc2.time), (T + 1, T + 2));
    let other = committed(commit(&node, record(env_b, T, "nightly", BackupType::Full)).await?);
    assert_eq!(other, BackupId::new(env_b, T));

    // A duplicate name is an answer, not an error, and changes nothing.
    let refused = commit(&node, record(env_a, T + 600, "nightly", BackupType::Full)).await?;
    assert_eq!(
        refused.refusal().map(|(c, _)| c),
        Some(ErrorCode::DuplicateName)
    );
    assert!(node.get_backup(&BackupId::new(env_a, T + 600))?.is_none());

    node.read_barrier().await?;
    let ids: Vec<BackupId> = node
        .list_backups(Some(env_a))?
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec![full, inc1, inc2]);
    assert_eq!(node.list_backups(None)?.len(), 4);
    let all: Vec<BackupId> = node.list_backups(None)?.iter().map(|r| r.id).collect();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "listing is ordered by env, then time");
    assert_eq!(node.latest_backup(env_a, false)?.map(|r| r.id), Some(inc2));
    assert_eq!(node.latest_backup(env_a, true)?.map(|r| r.id), Some(full));
    assert_eq!(
        node.get_backup(&inc1)?.map(|r| r.kind),
        Some(BackupType::Incremental)
    );

    // Update: rename, describe, tag; a taken name is refused.
    let upd = node
        .write_system(Command::UpdateBackup {
            id: inc1,
            name: Some("nightly".into()),
            description: None,
            tags: None,
        })
        .await?;
    assert_eq!(
        upd.refusal().map(|(c, _)| c),
        Some(ErrorCode::DuplicateName)
    );
    let upd = node
        .write_system(Command::UpdateBackup {
            id: inc1,
            name: Some("before-upgrade".into()),
            description: Some("kept for the upgrade".into()),
            tags: Some(vec!["keep".into()]),
        })
        .await?;
    assert_eq!(upd, Response::Updated);

    // Delete, then deleting again is NotFound.
    assert_eq!(
        node.write_system(Command::DeleteBackup { id: inc2 })
            .await?,
        Response::Deleted
    );
    let again = node
        .write_system(Command::DeleteBackup { id: inc2 })
        .await?;
    assert_eq!(
        again.refusal().map(|(c, _)| c),
        Some(ErrorCode::BackupNotFound)
    );

    let metrics = node.metrics();
    assert_eq!(metrics.state, ServerState::Leader);
    let before = node.list_backups(None)?;
    node.shutdown().await?;
    drop(node);

    // Reopen the same directory: everything is there and the node leads again.
    let node = MetaNode::open(config(&dir), NoPeers).await?;
    assert!(
        !node.initialize_if_new(members).await?,
        "a restarted node re-initialised"
    );
    assert_eq!(node.wait_for_leader(LEADER_WAIT).await?, 1);
    node.read_barrier().await?;
    assert_eq!(node.list_backups(None)?, before);
    let renamed = node
        .get_backup(&inc1)?
        .ok_or_else(|| anyhow::anyhow!("inc1 lost"))?;
    assert_eq!(renamed.name, "before-upgrade");
    assert_eq!(renamed.description, "kept for the upgrade");
    assert_eq!(renamed.tags, vec!["keep".to_string()]);
    assert!(node.get_backup(&inc2)?.is_none());

    // The name index survived too, and the node accepts writes.
    let dup = commit(
        &node,
        record(env_a, T + 900, "before-upgrade", BackupType::Full),
    )
    .await?;
    assert_eq!(
        dup.refusal().map(|(c, _)| c),
        Some(ErrorCode::DuplicateName)
    );
    let next = committed(commit(&node, record(env_a, T, "", BackupType::Full)).await?);
    // T and T+1 are taken and T+2 was deleted: ids are never given twice, and the last one
    // given survived the restart.
    assert_eq!(next, BackupId::new(env_a, T + 3));
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uninitialised_node_has_no_leader_and_refuses_writes() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let node = MetaNode::open(config(&dir), NoPeers).await?;
    let err = node
        .wait_for_leader(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::Unavailable(_)), "{err}");
    let env = EnvId::derive("hn1/101");
    let err = node
        .write_system(Command::CommitBackup {
            record: record(env, T, "", BackupType::Full),
            job: None,
            now_ms: 0,
            session: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            MetaError::NotLeader {
                leader_id: None,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.code(), ErrorCode::Unavailable);
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_a_live_directory_is_refused() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let node = MetaNode::open(config(&dir), NoPeers).await?;
    let second = MetaNode::open(config(&dir), NoPeers).await;
    assert!(
        matches!(second, Err(MetaError::InUse(_))),
        "second open was not refused"
    );
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_taken_and_logs_purged_under_load() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let env = EnvId::derive("hn1/101");
    let node = MetaNode::open(config(&dir), NoPeers).await?;
    assert!(node.initialize_if_new(BTreeMap::new()).await?);
    node.wait_for_leader(LEADER_WAIT).await?;
    // Some writes, then a snapshot and a purge up to it, as the snapshot policy would do.
    for i in 0..50 {
        committed(commit(&node, record(env, T + i, "", BackupType::Full)).await?);
    }
    node.raft().trigger().snapshot().await?;
    let m = node
        .raft()
        .wait(Some(LEADER_WAIT))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= 50),
            "snapshot taken",
        )
        .await?;
    let snap_index = m.snapshot.map(|s| s.index).unwrap_or_default();
    node.raft().trigger().purge_log(snap_index).await?;
    node.raft()
        .wait(Some(LEADER_WAIT))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index == snap_index),
            "log purged",
        )
        .await?;
    node.shutdown().await?;
    drop(node);

    // After purge + restart, the catalog comes from the state machine, not the log.
    let node = MetaNode::open(config(&dir), NoPeers).await?;
    node.wait_for_leader(LEADER_WAIT).await?;
    node.read_barrier().await?;
    assert_eq!(node.list_backups(Some(env))?.len(), 50);
    assert!(
        node.metrics().snapshot.is_some(),
        "snapshot lost across restart"
    );
    committed(commit(&node, record(env, T, "", BackupType::Full)).await?);
    assert_eq!(node.list_backups(Some(env))?.len(), 51);
    node.shutdown().await?;
    Ok(())
}

/// Retention runs inside the commit's decision, over the sled store: it lists the
/// environment's backups (a scan, outside sled's transaction; inside one it would deadlock)
/// and removes the oldest in the same write, protected ones excepted. A batch of entries
/// sees its own earlier commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_in_the_commit_on_sled() -> anyhow::Result<()> {
    let dir = TempDir::new()?;
    let env = EnvId::derive("hn1/101");
    let node = MetaNode::open(config(&dir), NoPeers).await?;
    let members = BTreeMap::from([(1u64, BasicNode::new("127.0.0.1:7700"))]);
    node.initialize_if_new(members).await?;
    node.wait_for_leader(LEADER_WAIT).await?;
    let first = committed(commit(&node, record(env, T, "", BackupType::Full)).await?);
    node.write_system(Command::ProtectBackup {
        id: first,
        protected: true,
    })
    .await?;
    let set = node
        .write_system(Command::SetEnvConfig {
            env,
            config: cairn_core::retention::EnvConfig {
                keep_max: Some(2),
                ..Default::default()
            },
            now_ms: 0,
        })
        .await?;
    assert_eq!(set, Response::Configured { removed: vec![] });
    // Many commits at once: each decides over the earlier ones of its batch.
    let commits: Vec<_> = (1..=5)
        .map(|i| commit(&node, record(env, T + i, "", BackupType::Full)))
        .collect();
    for c in futures::future::join_all(commits).await {
        committed(c?);
    }
    let left: Vec<i64> = node
        .list_backups(Some(env))?
        .iter()
        .map(|b| b.id.time)
        .collect();
    assert_eq!(
        left,
        vec![T, T + 4, T + 5],
        "the protected one and the newest two"
    );
    // And the node still answers reads while it applies (no lock held across them).
    assert!(node.get_backup(&first)?.is_some_and(|b| b.protected));
    node.shutdown().await?;
    Ok(())
}

/// Pages walk an environment (and the whole catalog) newest first without a gap or a
/// repeat, each page reading at most its size; the totals the state machine keeps with
/// every commit, update and delete (retention included) equal those of the records, and
/// survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_totals_follow_commits_updates_and_deletes() -> anyhow::Result<()> {
    use cairn_core::totals::BackupTotals;
    let dir = TempDir::new()?;
    let env_a = EnvId::derive("hn1/201");
    let env_b = EnvId::derive("hn1/202");
    let node = MetaNode::open(config(&dir), NoPeers).await?;
    assert!(node.initialize_if_new(BTreeMap::new()).await?);
    node.wait_for_leader(LEADER_WAIT).await?;
    assert_eq!(node.backup_totals(None)?, BackupTotals::default());

    let mut ids = Vec::new();
    for i in 0..23 {
        let env = if i % 3 == 0 { env_b } else { env_a };
        let mut r = record(env, T + i * 40_000, "", BackupType::Full);
        r.logical_size = 1000 + i as u64;
        ids.push(committed(commit(&node, r).await?));
    }
    node.write_system(Command::DeleteBackup { id: ids[4] })
        .await?;
    node.write_system(Command::UpdateBackup {
        id: ids[5],
        name: Some("renamed".into()),
        description: None,
        tags: None,
    })
    .await?;
    node.read_barrier().await?;

    let check = |node: &MetaNode| -> anyhow::Result<()> {
        for env in [Some(env_a), Some(env_b), None] {
            let all = node.list_backups(env)?;
            assert_eq!(node.backup_totals(env)?, BackupTotals::of(&all), "{env:?}");
            let mut want: Vec<BackupId> = all.iter().map(|r| r.id).collect();
            want.reverse();
            let mut got = Vec::new();
            let mut cursor = None;
            loop {
                let (page, next) = node.backups_page(env, cursor.as_ref(), 5)?;
                assert!(page.len() <= 5);
                got.extend(page.iter().map(|r| r.id));
                match next {
                    Some(n) => {
                        assert_eq!(Some(n), page.last().map(|r| r.id));
                        cursor = Some(n);
                    }
                    None => break,
                }
            }
            assert_eq!(got, want, "pages of {env:?}");
        }
        Ok(())
    };
    check(&node)?;
    assert_eq!(node.backup_totals(None)?.count, 22);
    node.shutdown().await?;
    drop(node);

    let node = MetaNode::open(config(&dir), NoPeers).await?;
    node.wait_for_leader(LEADER_WAIT).await?;
    node.read_barrier().await?;
    check(&node)?;
    node.shutdown().await?;
    Ok(())
}
