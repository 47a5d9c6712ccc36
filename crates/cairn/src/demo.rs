//! `cairn demo`: the whole data path in one command, on a throw-away node.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use cairn_agent::{BackupRequest, BackupSummary, Progress, RestoreRequest};
use cairn_api::{Client, Credentials};
use cairn_core::{BackupType, Compression, EnvId};

use crate::output;

/// Writes a small tree that looks like a container's private area.
fn sample_tree(root: &Path) -> Result<()> {
    let etc = root.join("etc");
    std::fs::create_dir_all(etc.join("nginx/sites-enabled"))?;
    std::fs::create_dir_all(root.join("var/www/html"))?;
    std::fs::create_dir_all(root.join("var/log"))?;
    std::fs::create_dir_all(root.join("usr/bin"))?;
    std::fs::write(etc.join("hostname"), "web01\n")?;
    std::fs::write(
        etc.join("nginx/nginx.conf"),
        "worker_processes auto;\nevents { worker_connections 1024; }\n".repeat(50),
    )?;
    std::os::unix::fs::symlink("../nginx.conf", etc.join("nginx/sites-enabled/default"))?;
    for i in 0..200 {
        std::fs::write(
            root.join(format!("var/www/html/page{i:03}.html")),
            format!(
                "<html><body><h1>Page {i}</h1>{}</body></html>\n",
                "<p>lorem ipsum</p>".repeat(40)
            ),
        )?;
    }
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let blob: Vec<u8> = (0..6 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as u8
        })
        .collect();
    std::fs::write(root.join("usr/bin/app"), &blob)?;
    std::fs::hard_link(root.join("usr/bin/app"), root.join("usr/bin/app-link"))?;
    let sparse = std::fs::File::create(root.join("var/lib-sparse.img"))?;
    sparse.set_len(64 << 20)?;
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"superblock", 4096)?;
    std::fs::write(root.join("var/log/app.log"), "started\n")?;
    Ok(())
}

/// Creates two sample containers (`web01`, `db01`) under `dir` unless it already has
/// some, and returns `dir`: the environments of `cairn dev`'s agent.
pub fn sample_containers(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for name in ["web01", "db01"] {
        let root = dir.join(name);
        if !root.exists() {
            let tmp = dir.join(format!(".{name}.tmp"));
            let _ = std::fs::remove_dir_all(&tmp);
            sample_tree(&tmp).with_context(|| format!("writing the sample container {name}"))?;
            std::fs::write(tmp.join("etc/hostname"), format!("{name}\n"))?;
            std::fs::rename(&tmp, &root)?;
        }
    }
    Ok(std::fs::canonicalize(dir)?)
}

fn line(s: &BackupSummary) {
    println!(
        "  {} {:<12} read {:>4} files ({:>9}), reused {:>4} unread, sent {:>9}  in {:.2}s",
        s.id,
        s.kind,
        s.files_read,
        output::bytes(s.bytes_read),
        s.files_reused,
        output::bytes(s.bytes_sent),
        s.duration_secs
    );
}

pub async fn run(source: Option<PathBuf>) -> Result<ExitCode> {
    let tmp = tempfile::tempdir().context("temporary directory")?;
    let data = tmp.path().join("node");
    let cfg = cairn_node::NodeConfig::local(1, "127.0.0.1:0".parse()?, data.clone());
    println!("starting a storage node (data in {})", data.display());
    let node = cairn_node::start(cfg).await?;
    let cluster = Client::connect(&node.url, &Credentials::default()).await?;

    let (src, generated) = match source {
        Some(s) => (
            std::fs::canonicalize(&s).with_context(|| format!("{}", s.display()))?,
            false,
        ),
        None => {
            let s = tmp.path().join("container");
            sample_tree(&s).context("writing the sample tree")?;
            (s, true)
        }
    };
    let env = EnvId::derive(&format!("demo/{}", src.display()));
    println!("backing up {} as environment {env}", src.display());
    let req = |kind| BackupRequest {
        source: src.clone(),
        env,
        kind,
        compression: Compression::Normal,
        excludes: vec![],
        includes: vec![],
        name: String::new(),
        description: "cairn demo".into(),
        tags: vec![],
        host: crate::sys::hostname(),
        env_info: Default::default(),
        upload_limit: None,
        job: None,
    };
    let full =
        cairn_agent::backup(&cluster, req(BackupType::Full), Arc::new(Progress::new())).await?;
    line(&full);
    if generated {
        std::fs::write(src.join("var/log/app.log"), "started\nrequest served\n")?;
    }
    let inc = cairn_agent::backup(
        &cluster,
        req(BackupType::Incremental),
        Arc::new(Progress::new()),
    )
    .await?;
    line(&inc);

    let target = tmp.path().join("restored");
    let restored = cairn_agent::restore(
        &cluster,
        RestoreRequest {
            backup: inc.id.parse()?,
            target: target.clone(),
            paths: vec![],
            owners: None,
            into_existing: false,
            privileged: true,
        },
        Arc::new(Progress::new()),
    )
    .await?;
    println!(
        "restored {} entries ({}) in {:.2}s",
        restored.entries,
        output::bytes(restored.bytes),
        restored.duration_secs
    );
    let same = cairn_fs::compare::require_same(
        &src,
        &target,
        cairn_fs::compare::DiffOptions {
            owners: nix::unistd::geteuid().is_root(),
            atime: false,
        },
    );
    let status = cluster.node_status().await?;
    node.shutdown().await;
    if let Err(differs) = same {
        bail!("restore check failed: {differs}");
    }
    println!(
        "restored tree is identical to the source (content, modes, owners, times, links, holes, xattrs)\n\
         store: {} chunks, {} on disk for {} of backups",
        status.chunks,
        output::bytes(status.stored_bytes),
        output::bytes(full.logical_size + inc.logical_size)
    );
    Ok(ExitCode::SUCCESS)
}
