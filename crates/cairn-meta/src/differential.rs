//! The sled state machine against the in-memory reference: random command sequences through
//! both must give the same answers and leave the same catalog. `MemCatalog` (in the catalog
//! tests) applies `decide`'s writes to plain maps; the sled store decides over its overlay and
//! writes in a transaction, with its own keys, encodings and indexes. A difference is a bug in
//! one of them.

use std::collections::BTreeSet;

use cairn_core::auth::Role;
use cairn_core::job::{EnvRecord, HostRecord, JobOptions};
use cairn_core::retention::EnvConfig;
use cairn_core::{BackupId, BackupType};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId};

use crate::catalog::tests::{agent, env, record, user, MemCatalog};
use crate::catalog::CatalogRead;
use crate::command::{Command, JobRequest, Proposal, Response};
use crate::LogEntry;

/// SplitMix64: the same seed, the same sequence.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

const T: i64 = 1_763_800_000;
const NAMES: [&str; 3] = ["", "daily", "weekly"];

/// One random proposal over a small world (two hosts, three environments, a few seconds of
/// backup ids), so commands collide often: duplicate names, deletes of what exists, retention
/// that removes, jobs that conflict.
fn proposal(
    rng: &mut Rng,
    step: i64,
    envs: &[EnvRecord],
    ids: &[BackupId],
    mem: &MemCatalog,
) -> Proposal {
    let env = envs[rng.below(envs.len() as u64) as usize].eid;
    let some_id = |rng: &mut Rng| {
        if ids.is_empty() || rng.below(5) == 0 {
            BackupId::new(env, T + rng.below(6) as i64)
        } else {
            ids[rng.below(ids.len() as u64) as usize]
        }
    };
    let now_ms = (T + step) * 1000;
    let admin = user(Role::Admin);
    match rng.below(11) {
        0..=2 => {
            let mut r = record(env, T + rng.below(6) as i64, NAMES[rng.below(3) as usize]);
            if rng.below(2) == 0 {
                r.kind = BackupType::Incremental;
            }
            // Half of the commits are the environment's active job's own (taking the id it
            // reserved), the others direct (refused while a backup job holds an id).
            let job = match rng.below(2) {
                0 => mem.active_job(env).unwrap(),
                _ => None,
            };
            Proposal::system(Command::CommitBackup {
                record: r,
                job,
                now_ms,
                session: None,
            })
        }
        9 => Proposal::new(
            admin,
            Command::CancelJob {
                id: uuid::Uuid::from_u128(rng.below(8) as u128 + 1),
                now_ms,
            },
        ),
        3 => Proposal::new(admin, Command::DeleteBackup { id: some_id(rng) }),
        4 => Proposal::new(
            admin,
            Command::ProtectBackup {
                id: some_id(rng),
                protected: rng.below(2) == 0,
            },
        ),
        5 => Proposal::new(
            admin,
            Command::UpdateBackup {
                id: some_id(rng),
                name: Some(NAMES[rng.below(3) as usize].to_string()),
                description: None,
                tags: None,
            },
        ),
        6 => Proposal::new(
            admin,
            Command::SetEnvConfig {
                env,
                config: EnvConfig {
                    keep_max: [None, Some(1), Some(2), Some(4)][rng.below(4) as usize],
                    ..Default::default()
                },
                now_ms,
            },
        ),
        7 => {
            let host = ["h1", "h2"][rng.below(2) as usize];
            let mine: Vec<EnvRecord> = envs
                .iter()
                .filter(|e| e.host == host || rng.below(4) == 0)
                .map(|e| EnvRecord {
                    host: host.into(),
                    ..e.clone()
                })
                .collect();
            Proposal::new(
                agent(host),
                Command::RegisterHost {
                    host: HostRecord {
                        id: host.into(),
                        hostname: format!("{host}.example"),
                        ..Default::default()
                    },
                    envs: mine,
                    now_ms,
                    takeover_after_ms: 0,
                },
            )
        }
        _ => Proposal::new(
            admin,
            Command::SubmitJob {
                id: uuid::Uuid::from_u128(rng.below(8) as u128 + 1),
                request: JobRequest {
                    kind: ["backup", "restore", "delete"][rng.below(3) as usize].into(),
                    env: Some(env),
                    host: None,
                    options: JobOptions {
                        backup: (rng.below(2) == 0).then(|| some_id(rng)),
                        ..Default::default()
                    },
                },
                now_ms,
                queue_timeout_ms: 60_000,
            },
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sled_state_machine_agrees_with_the_reference_on_random_commands() {
    let envs = vec![env("h1", "101"), env("h1", "102"), env("h2", "201")];
    // Commits that took their job's reserved id, and direct ones a reservation held back.
    let (mut reserved_taken, mut held_back) = (0, 0);
    for seed in 1..=12u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = crate::store::open(dir.path()).unwrap().1;
        let mut mem = MemCatalog::default();
        let mut rng = Rng(seed);
        let mut ids: Vec<BackupId> = Vec::new();
        let mut kinds = BTreeSet::new();
        for step in 1..=150u64 {
            let p = proposal(&mut rng, step as i64, &envs, &ids, &mem);
            kinds.insert(p.cmd.kind());
            let what = format!("seed {seed}, step {step}: {:?}", p.cmd);
            let reserved = match &p.cmd {
                Command::CommitBackup { job: Some(j), .. } => {
                    mem.job(j).unwrap().and_then(|j| j.reserved_backup)
                }
                _ => None,
            };
            let want = mem.run_proposal(p.clone());
            match (&p.cmd, &want) {
                (Command::CommitBackup { .. }, Response::Committed { id, .. })
                    if Some(*id) == reserved =>
                {
                    reserved_taken += 1
                }
                (Command::CommitBackup { job: None, .. }, Response::Refused { code, .. })
                    if *code == cairn_core::ErrorCode::JobRunning =>
                {
                    held_back += 1
                }
                _ => {}
            }
            let entry = LogEntry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), step),
                payload: EntryPayload::Normal(p),
            };
            let got = sm.apply([entry]).await.unwrap().remove(0);
            assert_eq!(got, want, "{what}");
            if let Response::Committed { id, .. } = &got {
                ids.push(*id);
            }
            let mem_backups = mem.backups(None).unwrap();
            assert_eq!(sm.list_backups(None).unwrap(), mem_backups, "{what}");
            for e in &envs {
                assert_eq!(sm.env(e.eid).unwrap(), mem.env(e.eid).unwrap(), "{what}");
                assert_eq!(
                    sm.env_config(e.eid).unwrap(),
                    mem.env_config(e.eid).unwrap(),
                    "{what}"
                );
                assert_eq!(
                    sm.last_id(e.eid).unwrap(),
                    mem.last_id(e.eid).unwrap(),
                    "{what}"
                );
                assert_eq!(
                    sm.active_job(e.eid).unwrap(),
                    mem.active_job(e.eid).unwrap(),
                    "{what}"
                );
            }
            for h in ["h1", "h2"] {
                assert_eq!(sm.host(h).unwrap(), mem.host(h).unwrap(), "{what}");
            }
            for n in 1..=8u128 {
                let id = uuid::Uuid::from_u128(n);
                assert_eq!(sm.job(&id).unwrap(), mem.job(&id).unwrap(), "{what}");
            }
        }
        assert_eq!(kinds.len(), 8, "seed {seed} exercised only {kinds:?}");
    }
    assert!(
        reserved_taken > 0 && held_back > 0,
        "reservations exercised: {reserved_taken} taken, {held_back} held back"
    );
}
