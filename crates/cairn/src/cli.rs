//! Command-line parsing and dispatch.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use cairn_agent::{BackupRequest, Progress, RestoreRequest};
use cairn_api::{browse, Client, Credentials};
use cairn_core::job::{JobKind, JobOptions};
use cairn_core::{BackupId, BackupType, Compression, EnvId};
use clap::{Parser, Subcommand};

use crate::output::{self, ProgressView};

const DEFAULT_CLUSTER: &str = cairn_api::DEFAULT_CLUSTER;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: a distributed, deduplicating backup cluster for container hosts"
)]
struct Cli {
    #[command(flatten)]
    cluster: ClusterArg,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct ClusterArg {
    /// Address of any storage node, or several separated by commas (the first that answers
    /// is used; the others, and every member it names, are tried when a node fails).
    #[arg(long, env = "CAIRN_CLUSTER", default_value = DEFAULT_CLUSTER, global = true)]
    cluster: String,
    /// Your token (a user token from `cairn token create`; the cluster secret also works),
    /// when the nodes require one. Prefer the environment variable: a command line is
    /// visible to other users.
    #[arg(long, env = "CAIRN_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// The PEM file of the CA that signed the nodes' certificates, for `https://` nodes.
    #[arg(long, env = "CAIRN_CA", global = true)]
    ca: Option<PathBuf>,
}

/// The cluster a command talks to: its addresses and the caller's credentials (from
/// `--cluster`/`CAIRN_CLUSTER`, `--token`/`CAIRN_TOKEN` and `--ca`/`CAIRN_CA`; the client
/// library reads no environment itself).
pub struct Target {
    urls: String,
    creds: Credentials,
    /// The CA file given, if any.
    ca: Option<PathBuf>,
}

impl Target {
    fn new(arg: &ClusterArg) -> Result<Target> {
        let mut creds = Credentials::token(arg.token.as_deref());
        if let Some(ca) = &arg.ca {
            creds = creds.with_ca_file(ca)?;
        }
        Ok(Target {
            urls: arg.cluster.clone(),
            creds,
            ca: arg.ca.clone(),
        })
    }

    /// Connects to the first of the addresses that answers.
    pub async fn connect(&self) -> Result<Client> {
        Ok(Client::connect(&self.urls, &self.creds).await?)
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a local 3-node cluster in one process, in the foreground (the embedded default).
    Dev {
        /// Data directory (one subdirectory per node).
        #[arg(long, default_value = "./cairn-data")]
        data: PathBuf,
        /// gRPC listen address of the first node; the others take the next ports.
        #[arg(long, default_value = "127.0.0.1:7700")]
        listen: std::net::SocketAddr,
        /// Number of storage nodes (all raft voters), 1 to 5.
        #[arg(long, default_value_t = 3)]
        nodes: u16,
        /// Also run an agent whose environments are the subdirectories of this directory
        /// (each a container's private area). Default: a small generated sample under the
        /// data directory.
        #[arg(long)]
        containers: Option<PathBuf>,
        /// Listen address of the REST API (Sun Cloud API); user `admin`, password
        /// CAIRN_DEV_PASSWORD or one generated and printed at start-up.
        #[arg(long, default_value = "127.0.0.1:8080")]
        rest_listen: std::net::SocketAddr,
        /// Listen address of the XML API (Virtuozzo Agent backupm), same users.
        #[arg(long, default_value = "127.0.0.1:4433")]
        xml_listen: std::net::SocketAddr,
    },
    /// Run the gateway alone (the REST adapter in front of a cluster's nodes).
    Gateway {
        /// Gateway configuration (TOML): cluster URLs, token, users file, [rest].
        #[arg(long)]
        config: PathBuf,
    },
    /// The users of the gateway (REST API): name, role, argon2-hashed password.
    User {
        /// The users file (default: CAIRN_USERS_FILE, else /etc/cairn/users.toml).
        #[arg(long, global = true)]
        users_file: Option<PathBuf>,
        /// Read the password from one line of stdin (else CAIRN_PASSWORD, else a prompt).
        #[arg(long, global = true)]
        password_stdin: bool,
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// Run the agent of this hardware node: register its containers and run the backup and
    /// restore jobs the cluster hands it. `cairn agent token …` manages agent tokens.
    #[command(args_conflicts_with_subcommands = true)]
    Agent {
        /// Agent configuration (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        cmd: Option<AgentCmd>,
    },
    /// User tokens: personal credentials with a role (viewer, operator, admin) for the CLI
    /// and standalone gateways, so nobody needs the cluster secret.
    Token {
        #[command(subcommand)]
        cmd: UserTokenCmd,
    },
    /// The environments (containers) every host reports, with their latest backup.
    Envs {
        #[command(subcommand)]
        cmd: EnvsCmd,
    },
    /// Backup and restore jobs: list, show, watch, cancel.
    Jobs {
        #[command(subcommand)]
        cmd: JobsCmd,
    },
    /// Show Cairn working end to end in one command: start a node, back up a sample tree,
    /// change it, back it up again, restore, and compare.
    Demo {
        /// Back up this directory instead of a generated sample tree.
        #[arg(long)]
        source: Option<PathBuf>,
    },
    /// Write what a new cluster needs before its first start (see `init cluster --help`).
    Init {
        #[command(subcommand)]
        cmd: InitCmd,
    },
    /// Run one storage node.
    Node {
        /// Node configuration (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Overrides the config's data_dir.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Back up an environment: without PATH, as a job run by the agent of its host (waits
    /// with a progress bar); with PATH, directly from here. Prints the new backup id.
    Backup {
        /// Root of the tree to back up directly (a container's private area).
        path: Option<PathBuf>,
        /// Environment (container) id, a UUID.
        #[arg(long)]
        env: String,
        /// full, incremental (against the latest backup) or differential (against the latest
        /// full). Default: incremental for a direct backup, the environment's configured type
        /// for a job.
        #[arg(long = "type")]
        kind: Option<String>,
        /// 0 none, 1 normal, 2 high, 3 maximum (default: the configured one, else 1).
        #[arg(long)]
        compression: Option<u32>,
        /// Create the job and print its id without waiting.
        #[arg(long)]
        no_wait: bool,
        /// Leave out matching paths (glob; without '/' it matches any name). Repeatable.
        #[arg(long)]
        exclude: Vec<String>,
        /// Back up only these relative paths. Repeatable.
        #[arg(long)]
        include: Vec<String>,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Free-form tag. Repeatable.
        #[arg(long)]
        tag: Vec<String>,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup. With TARGET: into that new directory, from here. With --env and no
    /// TARGET: as a job run by the agent of the environment's host, in place (or only the
    /// --path entries into the live tree), or with --host and --to on another host.
    Restore {
        /// Backup id, EID/YYYYMMDDhhmmss (default for a job: the environment's latest).
        backup: Option<String>,
        /// Directory to restore into directly; must not exist or be empty.
        target: Option<PathBuf>,
        /// Restore only this relative path (and what is below it). Repeatable.
        #[arg(long)]
        path: Vec<String>,
        /// Restore the environment through its agent (a job).
        #[arg(long)]
        env: Option<String>,
        /// Replace the environment even when it is in use or changed since its last backup.
        #[arg(long)]
        force: bool,
        /// Run the restore on this host instead (its original host is gone); needs --to.
        #[arg(long)]
        host: Option<String>,
        /// The directory on that host to restore into.
        #[arg(long)]
        to: Option<String>,
        /// Create the job and print its id without waiting.
        #[arg(long)]
        no_wait: bool,
        /// Do not restore file owners even when running as root (setuid/setgid bits and file
        /// capabilities are then not restored either).
        #[arg(long)]
        no_owners: bool,
        /// With --host: also restore device nodes, setuid/setgid bits and file capabilities
        /// (a restore onto another host than the backup's withholds them otherwise).
        #[arg(long, requires = "host")]
        allow_privileged: bool,
        #[arg(long)]
        json: bool,
    },
    /// List, show and delete backups.
    Backups {
        #[command(subcommand)]
        cmd: BackupsCmd,
    },
    /// Reclaim chunks no committed backup references (safe beside running backups), and
    /// compact pack segments that are mostly dead.
    Gc {
        /// Seconds to wait for backups that started before the collection.
        #[arg(long, default_value_t = 3600)]
        wait: u64,
        #[arg(long)]
        json: bool,
    },
    /// Per-environment settings (retention).
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Re-hash every stored chunk on every node; corrupt copies are replaced from healthy
    /// replicas and counted. Exit code 1 if a corrupt copy had no healthy replica.
    Scrub {
        #[arg(long)]
        json: bool,
    },
    /// Cluster information.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Show the backup settings of an environment (its own and those in force), or the
    /// cluster-wide ones without --env.
    Get {
        #[arg(long)]
        env: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Change the backup settings of an environment, or the cluster-wide ones without --env
    /// (an environment's own setting wins).
    Set {
        #[arg(long)]
        env: Option<String>,
        /// Keep at most this many backups; the oldest beyond it are deleted after each commit
        /// (and now).
        #[arg(long, conflicts_with = "keep_all")]
        keep_max: Option<u32>,
        /// Keep every backup.
        #[arg(long)]
        keep_all: bool,
        /// Incremental/differential backups after a full before a request becomes a full.
        #[arg(long)]
        chain_length: Option<u32>,
        /// Days after a full before a request becomes a full.
        #[arg(long)]
        chain_days: Option<u32>,
        /// Default compression: 0 none, 1 normal, 2 high, 3 maximum.
        #[arg(long)]
        compression: Option<u32>,
        /// Default backup type: full, incremental or differential.
        #[arg(long = "type")]
        kind: Option<String>,
        /// A command the agent runs (sh -c) before each backup; repeat for several, in order.
        #[arg(long)]
        pre_hook: Vec<String>,
        /// A command the agent runs after each backup, whatever its outcome.
        #[arg(long)]
        post_hook: Vec<String>,
        /// Seconds each hook may run before it is killed.
        #[arg(long)]
        hook_timeout: Option<u32>,
        /// Days a backup is safe from retention triggered by an agent's or operator's commit
        /// (default 7; 0: none). An admin's own keep_max change applies at once.
        #[arg(long)]
        retention_grace: Option<u32>,
        /// Unset a setting (keep_max, chain_length, chain_days, compression, type,
        /// pre_hooks, post_hooks, hook_timeout, retention_grace). Repeatable.
        #[arg(long)]
        unset: Vec<String>,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user.
    Add {
        name: String,
        /// admin (everything), operator (back up, restore, read) or viewer (read).
        #[arg(long, default_value = "viewer")]
        role: String,
    },
    /// Change a user's password.
    Passwd { name: String },
    /// Change a user's role.
    Role { name: String, role: String },
    /// Remove a user.
    Remove { name: String },
    /// List the users and their roles.
    List,
}

#[derive(Subcommand)]
enum InitCmd {
    /// Write a new cluster into --out: a CA (ca.pem, ca.key, ca.sha256), the first admin
    /// token (admin.token) and, for each node, a directory node-<ID>/ (node.toml, node.pem,
    /// node.key, ca.pem, token) to copy to --etc (default /etc/cairn) on that node, then
    /// `cairn node --config /etc/cairn/node.toml`. TLS is on; secrets are written 0600.
    /// Refuses a non-empty --out unless --force.
    Cluster {
        /// The output directory.
        #[arg(long)]
        out: PathBuf,
        /// A voter: ID=HOST:PORT[,zone=Z][,weight=W] (HOST an IP address or DNS name, which
        /// the node's certificate names). Repeat for each node (3 or 5).
        #[arg(long = "node", required = true, value_parser = crate::init::parse_node)]
        nodes: Vec<crate::init::NodeSpec>,
        /// Copies of every chunk.
        #[arg(long, default_value_t = 3)]
        rf: u32,
        /// Where each node's files are on that node (the configs name paths under it);
        /// `{id}` in it stands for the node's id (several nodes on one machine).
        #[arg(long, default_value = "/etc/cairn")]
        etc: PathBuf,
        /// Each node's data directory (`{id}`: the node's id).
        #[arg(long, default_value = "/var/lib/cairn/node")]
        data_dir: PathBuf,
        /// The first admin's user name (its token goes to admin.token).
        #[arg(long, default_value = "admin")]
        admin: String,
        /// Write into a non-empty --out.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Write the files of a node added to a running cluster made by `init cluster`: a
    /// certificate signed with its ca.key, and node-<ID>/ (node.toml, node.pem, node.key,
    /// ca.pem, token) beside the voters' directories. Copy it to --etc on the new node,
    /// start it, then `cairn cluster add-node HOST:PORT --zone Z`. Refuses an existing
    /// node-<ID>/ unless --force.
    Node {
        /// The directory `cairn init cluster --out` wrote (ca.pem, ca.key, node-<ID>/).
        #[arg(long)]
        cluster_dir: PathBuf,
        /// The new node: ID=HOST:PORT[,zone=Z][,weight=W], an id no node ever had.
        #[arg(long = "node", value_parser = crate::init::parse_node)]
        node: crate::init::NodeSpec,
        /// Where the node's files are on it (`{id}`: its id).
        #[arg(long, default_value = "/etc/cairn")]
        etc: PathBuf,
        /// Its data directory (`{id}`: its id).
        #[arg(long, default_value = "/var/lib/cairn/node")]
        data_dir: PathBuf,
        /// Replace an existing node-<ID>/.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Write a standalone gateway's files into --out: gateway.toml (the cluster from
    /// --cluster, [rest] and [xml] listeners), gateway.token (a new admin user token named
    /// --name, created with your CAIRN_TOKEN), ca.pem (from --ca) and an empty users.toml.
    /// Copy them to --etc on the gateway and add its users with `cairn user add`.
    Gateway {
        /// The output directory.
        #[arg(long)]
        out: PathBuf,
        /// Where the files are on the gateway's machine (the config names paths under it).
        #[arg(long, default_value = "/etc/cairn")]
        etc: PathBuf,
        /// The REST API's (and dashboard's) listen address.
        #[arg(long, default_value = "0.0.0.0:8080")]
        rest_listen: std::net::SocketAddr,
        /// The XML API's listen address.
        #[arg(long, default_value = "0.0.0.0:4433")]
        xml_listen: std::net::SocketAddr,
        /// Serve no REST API.
        #[arg(long)]
        no_rest: bool,
        /// Serve no XML API.
        #[arg(long)]
        no_xml: bool,
        /// The name of the gateway's user token.
        #[arg(long, default_value = "gateway")]
        name: String,
        /// Replace an existing gateway.toml in --out.
        #[arg(long)]
        force: bool,
    },
    /// Write an agent config template (no token: `cairn agent enroll` fills one in, or put
    /// an agent token in agent.token beside it). The cluster comes from --cluster.
    Agent {
        /// The agent config to write (it names agent.token and ca.pem beside it).
        #[arg(long, default_value = "/etc/cairn/agent.toml")]
        config: PathBuf,
        /// This host's id (default: the host name).
        #[arg(long)]
        host: Option<String>,
        /// A directory whose every subdirectory is one environment (repeatable).
        #[arg(long = "dir")]
        dirs: Vec<PathBuf>,
        /// Replace an existing config.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum AgentCmd {
    /// Agent tokens: each binds an agent to one host.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// One-time join tokens that enroll an agent (`cairn agent enroll`).
    JoinToken {
        #[command(subcommand)]
        cmd: JoinTokenCmd,
    },
    /// Enroll this host's agent: pin the cluster's CA by its fingerprint, redeem a join
    /// token (read from --token-file or stdin, never the command line) for an agent token,
    /// and write the agent config, agent.token (0600) and ca.pem side by side. The cluster's
    /// addresses come from --cluster (https://…).
    Enroll {
        /// The SHA-256 of the cluster's CA (`cairn init cluster` writes it to ca.sha256).
        #[arg(long)]
        ca_fingerprint: String,
        /// The agent config to write (agent.token and ca.pem go beside it).
        #[arg(long, default_value = "/etc/cairn/agent.toml")]
        config: PathBuf,
        /// The file holding the join token (default: read one line from stdin).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The host id the join token was created for (default: the host name).
        #[arg(long)]
        host: Option<String>,
        /// The agent's state directory (default /var/lib/cairn-agent).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// A directory whose every subdirectory is one environment (repeatable).
        #[arg(long = "dir")]
        dirs: Vec<PathBuf>,
        /// Replace an existing config.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum JoinTokenCmd {
    /// Issue a join token for HOST: printed once on stdout, valid once, until --ttl passes.
    /// With --ca (CAIRN_CA), also prints the CA fingerprint agents pin.
    Create {
        host: String,
        /// How long it stays valid: 30m, 1h (default), 2d; 1 minute to 30 days.
        #[arg(long, default_value = "1h", value_parser = crate::enroll::parse_ttl)]
        ttl: u64,
        #[arg(long)]
        json: bool,
    },
    /// List the join tokens the catalog keeps: id, host, created, expires and state (unused,
    /// used, expired). Never a token or its hash. A new token prunes the expired ones.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a join token by its id, or every join token of a host; it no longer enrolls.
    Revoke {
        /// A join token's id, or a host id.
        target: String,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Issue a token for HOST (printed once).
    Create {
        host: String,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id, or every token of --host.
    Revoke {
        id: Option<String>,
        #[arg(long)]
        host: Option<String>,
    },
}

#[derive(Subcommand)]
enum UserTokenCmd {
    /// Issue a token for NAME with a role (printed once; the cluster keeps only its hash).
    Create {
        name: String,
        /// viewer (reads), operator (also backs up and restores), admin (everything).
        #[arg(long)]
        role: String,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id, or every token of --name.
    Revoke {
        id: Option<String>,
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Subcommand)]
enum EnvsCmd {
    List {
        /// Only this host's environments.
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Assign an environment to another host (a container migrated, or its host replaced):
    /// that host's agent then backs it up and restores it, history included. Agents never
    /// take over another host's environment themselves.
    Move {
        eid: String,
        /// The host to run it from now on.
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
enum JobsCmd {
    /// Newest first.
    List {
        #[arg(long)]
        env: Option<String>,
        /// queued, running, succeeded, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Follow a job to its end with a progress bar.
    Watch {
        id: String,
        #[arg(long)]
        json: bool,
    },
    Cancel {
        id: String,
    },
}

#[derive(Subcommand)]
enum BackupsCmd {
    /// List backups, oldest first.
    List {
        #[arg(long)]
        env: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one backup.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete one backup (its chunks are reclaimed by garbage collection). A protected
    /// backup is refused.
    Delete { id: String },
    /// Protect a backup: nothing removes it (delete, retention) until it is unprotected.
    Protect { id: String },
    /// Lift a backup's protection.
    Unprotect { id: String },
    /// List a directory of a backup (or show one object): mode, owner uid:gid, size, mtime
    /// (UTC), name, and `-> target` for links. Operators and admins may read a backup's tree.
    Ls {
        id: String,
        /// A directory below the backup's root (default: the root; a leading `/` is the root).
        #[arg(default_value = "")]
        path: String,
        #[arg(long)]
        json: bool,
        /// Every entry, page after page (default: the first page, and a hint when more).
        #[arg(long)]
        all: bool,
    },
    /// Write a file of a backup to stdout, every chunk verified (holes as zeros).
    Cat { id: String, path: String },
    /// Save a file of a backup, or with --tar a directory as a tar archive, to a file (or
    /// `-` for stdout). A download that fails leaves no file behind.
    Get {
        id: String,
        /// A path below the backup's root (with --tar, default: the root).
        #[arg(default_value = "")]
        path: String,
        /// A directory and its subtree as a tar archive (paths relative to the backup's root).
        #[arg(long)]
        tar: bool,
        /// Where to write (`-`: stdout).
        #[arg(short = 'o', long)]
        output: String,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Show every node's state: role, term, commit index, epoch, chunks and bytes.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Add a running storage node (its config lists the voters but not itself). Repair
    /// then moves its share of the chunks to it.
    AddNode {
        /// Its gRPC address, host:port (reached with TLS when the cluster's nodes use it),
        /// or a URL.
        addr: String,
        /// Its zone (failure domain); default: the one it reports.
        #[arg(long, default_value = "")]
        zone: String,
        /// Relative capacity (a node of weight 2 gets about twice the chunks).
        #[arg(long, default_value_t = 1)]
        weight: u32,
    },
    /// Drain a node (its chunks are copied to their new owners), then remove it.
    RemoveNode {
        /// The node's id (see cairn cluster status).
        id: u64,
    },
    /// Set how many distinct zones each chunk's copies span: `maximum` (as many as there are
    /// copies) or a number. Fewer zones than copies let zones of unequal size fill evenly
    /// (see the usable capacity in `cluster status`); repair moves the chunks whose owners
    /// change.
    SetZoneRedundancy {
        /// `maximum` or a number of zones (1 or more).
        #[arg(value_parser = parse_zone_redundancy)]
        value: cairn_core::placement::ZoneRedundancy,
    },
    /// Run a repair pass on every node now and report what moved and what is still missing.
    Repair {
        #[arg(long)]
        json: bool,
    },
}

fn parse_zone_redundancy(s: &str) -> Result<cairn_core::placement::ZoneRedundancy, String> {
    cairn_core::placement::ZoneRedundancy::parse(s)
        .ok_or_else(|| format!("{s:?}: expected \"maximum\" or a number of zones (1 or more)"))
}

fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, not in log files.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Entry point: parses, runs, maps errors to one line and an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let server = matches!(
        cli.cmd,
        Cmd::Dev { .. }
            | Cmd::Node { .. }
            | Cmd::Gateway { .. }
            | Cmd::Agent {
                config: Some(_),
                ..
            }
    );
    // openraft and sled narrate every election and flush at info; our own lines are enough.
    init_logs(if server {
        "info,openraft=warn,sled=warn"
    } else {
        "warn"
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let target = Target::new(&cli.cluster);
    match rt.block_on(async move { run(cli.cmd, &target?).await }) {
        Ok(code) => code,
        Err(e) => {
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            let mut line = msg.join(": ");
            // Avoid "x: x" when a context repeats its source.
            if msg.len() == 2 && msg[0].ends_with(&msg[1]) {
                line = msg[0].clone();
            }
            // A node's refusal carries its stable code, so scripts can tell "refused, nothing
            // happened" from "may have happened" without reading the prose.
            let code = e.chain().find_map(|c| {
                match (
                    c.downcast_ref::<cairn_api::Error>(),
                    c.downcast_ref::<cairn_agent::AgentError>(),
                ) {
                    (Some(e), _) if e.is_answer() => Some(e.code()),
                    (_, Some(cairn_agent::AgentError::Cluster { code, .. })) => Some(*code),
                    _ => None,
                }
            });
            match code {
                Some(code) => eprintln!("error: {line} [{}]", code.as_str()),
                None => eprintln!("error: {line}"),
            }
            // Bad usage exits 2 like clap's own refusals; every other failure exits 1.
            if e.chain().any(|c| c.is::<Usage>()) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Bad usage found after clap parsed the arguments (a malformed id, options that do not go
/// together): the command exits 2, as for the errors clap finds itself.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Fails with a [`Usage`] error unless `ok`.
fn usage_check(ok: bool, msg: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Usage(msg.to_string()).into())
    }
}

fn parse_env(s: &str) -> Result<EnvId> {
    s.parse::<EnvId>().map_err(|e| Usage(e.to_string()).into())
}

fn parse_backup(s: &str) -> Result<BackupId> {
    s.parse::<BackupId>()
        .map_err(|e| Usage(e.to_string()).into())
}

async fn run(cmd: Cmd, cluster: &Target) -> Result<ExitCode> {
    match cmd {
        Cmd::Dev {
            data,
            listen,
            nodes,
            containers,
            rest_listen,
            xml_listen,
        } => {
            dev(data, listen, nodes, containers, rest_listen, xml_listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Gateway { config } => {
            crate::gateway::standalone(&config, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::User {
            users_file,
            password_stdin,
            cmd,
        } => {
            use crate::gateway::UserOp;
            let op = match cmd {
                UserCmd::Add { name, role } => UserOp::Add { name, role },
                UserCmd::Passwd { name } => UserOp::Passwd { name },
                UserCmd::Role { name, role } => UserOp::Role { name, role },
                UserCmd::Remove { name } => UserOp::Remove { name },
                UserCmd::List => UserOp::List,
            };
            crate::gateway::user_cmd(&crate::gateway::users_path(users_file), op, password_stdin)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Agent { config, cmd } => match (config, cmd) {
            (Some(config), None) => {
                let cfg = cairn_agent::daemon::AgentConfig::load(&config)?;
                cairn_agent::daemon::run(cfg, shutdown_signal()).await?;
                Ok(ExitCode::SUCCESS)
            }
            (None, Some(AgentCmd::Token { cmd })) => {
                let c = cluster.connect().await?;
                match cmd {
                    TokenCmd::Create { host, json } => {
                        crate::jobs::token_create(&c, &host, json).await
                    }
                    TokenCmd::List { json } => crate::jobs::token_list(&c, json).await,
                    TokenCmd::Revoke { id, host } => {
                        usage_check(
                            id.is_some() != host.is_some(),
                            "name either a token id or --host",
                        )?;
                        crate::jobs::token_revoke(&c, id, host).await
                    }
                }
            }
            (None, Some(AgentCmd::JoinToken { cmd })) => {
                let c = cluster.connect().await?;
                match cmd {
                    JoinTokenCmd::Create { host, ttl, json } => {
                        crate::enroll::join_token_create(
                            &c,
                            &host,
                            ttl,
                            cluster.ca.as_deref(),
                            &cluster.urls,
                            json,
                        )
                        .await
                    }
                    JoinTokenCmd::List { json } => crate::enroll::join_token_list(&c, json).await,
                    JoinTokenCmd::Revoke { target } => {
                        crate::enroll::join_token_revoke(&c, &target).await
                    }
                }
            }
            (
                None,
                Some(AgentCmd::Enroll {
                    ca_fingerprint,
                    config,
                    token_file,
                    host,
                    state_dir,
                    dirs,
                    force,
                    json,
                }),
            ) => {
                crate::enroll::enroll(crate::enroll::EnrollArgs {
                    urls: cluster.urls.clone(),
                    fingerprint: ca_fingerprint,
                    host,
                    config,
                    token_file,
                    state_dir,
                    dirs,
                    force,
                    json,
                })
                .await
            }
            _ => {
                Err(Usage("use `cairn agent --config FILE` or `cairn agent token …`".into()).into())
            }
        },
        Cmd::Init {
            cmd:
                InitCmd::Cluster {
                    out,
                    nodes,
                    rf,
                    etc,
                    data_dir,
                    admin,
                    force,
                    json,
                },
        } => {
            let plan = crate::init::ClusterPlan {
                nodes,
                rf,
                etc,
                data_dir,
                admin,
            };
            crate::init::check(&plan).map_err(|e| Usage(e.to_string()))?;
            let bundle = crate::init::generate(&plan)?;
            crate::init::write(&out, &bundle.files, force)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "out": out,
                        "ca_fingerprint": bundle.ca_fingerprint,
                        "admin_token_file": out.join("admin.token"),
                        "nodes": plan.nodes.iter().map(|n| serde_json::json!({
                            "id": n.id, "url": n.url(), "dir": out.join(format!("node-{}", n.id)),
                        })).collect::<Vec<_>>(),
                    })
                );
            } else {
                println!("cluster written to {}", out.display());
                for n in &plan.nodes {
                    println!(
                        "  node {} ({}): copy {}/ to {} on it, then: cairn node --config {}",
                        n.id,
                        n.url(),
                        out.join(format!("node-{}", n.id)).display(),
                        crate::init::for_node(&plan.etc, n.id).display(),
                        crate::init::for_node(&plan.etc, n.id)
                            .join("node.toml")
                            .display()
                    );
                }
                println!(
                    "  admin token: {} (CAIRN_TOKEN=$(cat …) CAIRN_CA={} cairn …)",
                    out.join("admin.token").display(),
                    out.join("ca.pem").display()
                );
                println!(
                    "  CA fingerprint (agents pin it): {}",
                    bundle.ca_fingerprint
                );
                println!(
                    "  keep {} offline: it signs node certificates",
                    out.join("ca.key").display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Init {
            cmd:
                InitCmd::Node {
                    cluster_dir,
                    node,
                    etc,
                    data_dir,
                    force,
                    json,
                },
        } => {
            let plan = crate::init::NodePlan {
                cluster_dir,
                node,
                etc,
                data_dir,
            };
            let files = crate::init::generate_node(&plan)?;
            crate::init::write_node(&plan.cluster_dir, plan.node.id, &files, force)?;
            let n = &plan.node;
            let dir = plan.cluster_dir.join(format!("node-{}", n.id));
            let etc = crate::init::for_node(&plan.etc, n.id);
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "id": n.id,
                        "url": n.url(),
                        "dir": dir,
                        "add_node": ["cluster", "add-node", n.authority(), "--zone", n.zone, "--weight", n.weight.to_string()],
                    })
                );
            } else {
                println!(
                    "node {} ({}): copy {}/ to {} on it, start it (cairn node --config {}), then:\n  cairn cluster add-node {} --zone {} --weight {}",
                    n.id,
                    n.url(),
                    dir.display(),
                    etc.display(),
                    etc.join("node.toml").display(),
                    n.authority(),
                    n.zone,
                    n.weight
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Init {
            cmd:
                InitCmd::Gateway {
                    out,
                    etc,
                    rest_listen,
                    xml_listen,
                    no_rest,
                    no_xml,
                    name,
                    force,
                },
        } => {
            let g = crate::gateway::GatewayInit {
                out,
                etc,
                urls: cluster
                    .urls
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_string)
                    .collect(),
                ca: cluster.ca.clone(),
                rest_listen: (!no_rest).then_some(rest_listen),
                xml_listen: (!no_xml).then_some(xml_listen),
                name,
                force,
            };
            let c = cluster.connect().await?;
            crate::gateway::init_gateway(&g, &c).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Init {
            cmd:
                InitCmd::Agent {
                    config,
                    host,
                    dirs,
                    force,
                },
        } => crate::enroll::init_agent(&cluster.urls, &config, host, &dirs, force),
        Cmd::Token { cmd } => {
            let c = cluster.connect().await?;
            match cmd {
                UserTokenCmd::Create { name, role, json } => {
                    crate::jobs::user_token_create(&c, &name, &role, json).await
                }
                UserTokenCmd::List { json } => crate::jobs::user_token_list(&c, json).await,
                UserTokenCmd::Revoke { id, name } => {
                    usage_check(
                        id.is_some() != name.is_some(),
                        "name either a token id or --name",
                    )?;
                    crate::jobs::user_token_revoke(&c, id, name).await
                }
            }
        }
        Cmd::Envs {
            cmd: EnvsCmd::List { host, json },
        } => {
            let c = cluster.connect().await?;
            crate::jobs::envs(&c, host, json).await
        }
        Cmd::Envs {
            cmd: EnvsCmd::Move { eid, to },
        } => {
            let eid = parse_env(&eid)?;
            let c = cluster.connect().await?;
            crate::jobs::move_env(&c, eid, &to).await
        }
        Cmd::Jobs { cmd } => {
            let c = cluster.connect().await?;
            match cmd {
                JobsCmd::List {
                    env,
                    state,
                    limit,
                    json,
                } => {
                    if let Some(e) = &env {
                        parse_env(e)?;
                    }
                    crate::jobs::list(&c, env, state, limit, json).await
                }
                JobsCmd::Show { id, json } => crate::jobs::show(&c, &id, json).await,
                JobsCmd::Watch { id, json } => crate::jobs::watch(&c, &id, json).await,
                JobsCmd::Cancel { id } => crate::jobs::cancel(&c, &id).await,
            }
        }
        Cmd::Demo { source } => crate::demo::run(source).await,
        Cmd::Node { config, data } => {
            let mut cfg = cairn_node::NodeConfig::load(&config)?;
            if let Some(d) = data {
                cfg.data_dir = d;
            }
            let dir = config
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default();
            serve(cfg, &dir).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Backup {
            path,
            env,
            kind,
            compression,
            exclude,
            include,
            name,
            description,
            tag,
            json,
            no_wait,
        } => {
            let env = parse_env(&env)?;
            let kind: Option<BackupType> = kind
                .map(|k| k.parse().map_err(|e: String| Usage(format!("--type: {e}"))))
                .transpose()?;
            if let Some(level) = compression {
                usage_check(
                    Compression::from_level(level).is_some(),
                    &format!(
                        "--compression {level} is not a level: use 0 none, 1 normal, 2 high, 3 maximum"
                    ),
                )?;
            }
            let Some(path) = path else {
                let c = cluster.connect().await?;
                let mut req = cairn_api::JobRequest::new(JobKind::Backup, env);
                req.options = JobOptions {
                    backup_type: kind,
                    compression: compression.and_then(Compression::from_level),
                    name,
                    description,
                    tags: tag,
                    includes: include,
                    excludes: exclude,
                    ..Default::default()
                };
                return crate::jobs::submit(&c, req, no_wait, json).await;
            };
            let kind = kind.unwrap_or(BackupType::Incremental);
            let compression = compression
                .and_then(Compression::from_level)
                .unwrap_or_default();
            let source = std::fs::canonicalize(&path)
                .with_context(|| format!("source path {}", path.display()))?;
            let c = cluster.connect().await?;
            let progress = Arc::new(Progress::new());
            let view = ProgressView::start(progress.clone(), "backup", json);
            let req = BackupRequest {
                source,
                env,
                kind,
                compression,
                excludes: exclude,
                includes: include,
                name,
                description,
                tags: tag,
                host: crate::sys::hostname(),
                env_info: Default::default(),
                upload_limit: None,
                job: None,
            };
            let result = cairn_agent::backup(&c, req, progress).await;
            view.finish().await;
            let s = result?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("{}", s.id);
                eprintln!(
                    "backup {} ({}{}) {}: {} entries; files: {} read, {} reused unread, {} skipped; {} excluded; read {}, sent {} in {} chunks; {:.2}s",
                    s.id,
                    s.kind,
                    s.parent.as_ref().map(|p| format!(" of {p}")).unwrap_or_default(),
                    s.state,
                    s.entries,
                    s.files_read,
                    s.files_reused,
                    s.files_skipped,
                    s.excluded,
                    output::bytes(s.bytes_read),
                    output::bytes(s.bytes_sent),
                    s.chunks_sent,
                    s.duration_secs
                );
                for e in &s.errors {
                    eprintln!("  skipped: {e}");
                }
            }
            Ok(if s.state == "incomplete" {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Restore {
            backup,
            target,
            path,
            no_owners,
            allow_privileged,
            json,
            env,
            force,
            host,
            to,
            no_wait,
        } => {
            let Some(target) = target else {
                usage_check(
                    env.is_some() || backup.is_some(),
                    "name a TARGET directory, or --env (and optionally a backup id) to restore through the environment's agent",
                )?;
                usage_check(
                    host.is_some() == to.is_some(),
                    "--host and --to go together: the host to restore on and the directory there",
                )?;
                let backup = backup.map(|b| parse_backup(&b)).transpose()?;
                let env = env.map(|e| parse_env(&e)).transpose()?;
                let kind = if path.is_empty() {
                    JobKind::Restore
                } else {
                    JobKind::SelectiveRestore
                };
                usage_check(
                    path.is_empty() || host.is_none(),
                    "a selective restore (--path) goes into the environment's live tree; --host is for whole restores",
                )?;
                let c = cluster.connect().await?;
                let env = env
                    .or(backup.map(|b| b.env))
                    .ok_or_else(|| Usage("name --env or the backup to restore".into()))?;
                let mut req = cairn_api::JobRequest::new(kind, env);
                req.host = host;
                req.options = JobOptions {
                    backup,
                    force,
                    target_path: to.unwrap_or_default(),
                    paths: path,
                    allow_privileged,
                    ..Default::default()
                };
                return crate::jobs::submit(&c, req, no_wait, json).await;
            };
            let backup = backup.ok_or_else(|| Usage("name the backup to restore".into()))?;
            let id = parse_backup(&backup)?;
            let c = cluster.connect().await?;
            let progress = Arc::new(Progress::new());
            let view = ProgressView::start(progress.clone(), "restore", json);
            let req = RestoreRequest {
                backup: id,
                target,
                paths: path,
                owners: if no_owners { Some(false) } else { None },
                into_existing: false,
                // Restoring here is the operator's own act; owners off withholds
                // setuid/setgid bits and capabilities (see cairn_fs::RestoreOptions).
                privileged: true,
            };
            let result = cairn_agent::restore(&c, req, progress).await;
            view.finish().await;
            let s = result?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!(
                    "restored {} into {}: {} entries, {} files, {} in {:.2}s",
                    s.id,
                    s.target,
                    s.entries,
                    s.files,
                    output::bytes(s.bytes),
                    s.duration_secs
                );
                for n in &s.notes {
                    eprintln!("  note: {n}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Backups { cmd } => backups(cmd, cluster).await,
        Cmd::Gc { wait, json } => {
            let c = cluster.connect().await?;
            if !json {
                eprintln!("garbage collection: waiting for older backups, marking, sweeping…");
            }
            let r = c.gc(std::time::Duration::from_secs(wait)).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "backups": r.backups, "referenced": r.referenced, "removed": r.removed,
                        "bytes_reclaimed": r.bytes_reclaimed,
                        "segments_compacted": r.segments_compacted,
                        "nodes_skipped": r.nodes_skipped,
                    })
                );
            } else {
                println!(
                    "gc: {} backups mark {} chunks; removed {} unreferenced chunk copies; {} reclaimed by compacting {} segment(s){}",
                    r.backups,
                    r.referenced,
                    r.removed,
                    output::bytes(r.bytes_reclaimed),
                    r.segments_compacted,
                    if r.nodes_skipped.is_empty() {
                        String::new()
                    } else {
                        format!("; not swept (restarted or unreachable): nodes {:?}", r.nodes_skipped)
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Config { cmd } => {
            let c = cluster.connect().await?;
            let scope = |env: Option<String>| -> Result<EnvId> {
                env.map(|e| parse_env(&e))
                    .transpose()
                    .map(|e| e.unwrap_or(EnvId::GLOBAL))
            };
            match cmd {
                ConfigCmd::Get { env, json } => {
                    crate::jobs::config_get(&c, scope(env)?, json).await
                }
                ConfigCmd::Set {
                    env,
                    keep_max,
                    keep_all,
                    chain_length,
                    chain_days,
                    compression,
                    kind,
                    pre_hook,
                    post_hook,
                    hook_timeout,
                    retention_grace,
                    mut unset,
                } => {
                    if keep_all {
                        unset.push("keep_max".into());
                    }
                    let set = cairn_core::retention::EnvConfig {
                        keep_max,
                        chain_length,
                        chain_days,
                        compression,
                        backup_type: kind
                            .map(|k| k.parse::<BackupType>().map(|t| t.code()))
                            .transpose()
                            .map_err(anyhow::Error::msg)?,
                        pre_hooks: (!pre_hook.is_empty()).then_some(pre_hook),
                        post_hooks: (!post_hook.is_empty()).then_some(post_hook),
                        hook_timeout_secs: hook_timeout,
                        retention_grace_days: retention_grace,
                    };
                    crate::jobs::config_set(&c, scope(env)?, set, &unset).await
                }
            }
        }
        Cmd::Scrub { json } => {
            let c = cluster.connect().await?;
            scrub(&c, json).await
        }
        Cmd::Cluster { cmd } => {
            let c = cluster.connect().await?;
            match cmd {
                ClusterCmd::Status { json } => cluster_status(&c, json).await?,
                ClusterCmd::AddNode { addr, zone, weight } => {
                    let r = c.add_node(&addr, &zone, weight).await?;
                    println!(
                        "node {} added at {addr}; placement epoch {}; repair is moving its share of the chunks to it",
                        r.node_id, r.epoch
                    );
                }
                ClusterCmd::RemoveNode { id } => {
                    eprintln!("draining node {id} (its chunks are copied to their new owners)…");
                    let r = c.remove_node(id).await?;
                    println!(
                        "node {id} removed after moving {} chunk copies; placement epoch {}",
                        r.moved, r.epoch
                    );
                }
                ClusterCmd::SetZoneRedundancy { value } => {
                    let r = c.set_zone_redundancy(value).await?;
                    println!(
                        "zone redundancy {value}; placement epoch {} (repair moves the chunks whose owners changed)",
                        r.epoch
                    );
                }
                ClusterCmd::Repair { json } => return repair(&c, json).await,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Which way `backups protect|unprotect` goes.
enum Protection {
    On,
    Off,
}

async fn backups(cmd: BackupsCmd, cluster: &Target) -> Result<ExitCode> {
    let cmd_kind = match &cmd {
        BackupsCmd::Unprotect { .. } => Protection::Off,
        _ => Protection::On,
    };
    match cmd {
        BackupsCmd::List { env, json } => {
            let env = env.as_deref().map(parse_env).transpose()?;
            let c = cluster.connect().await?;
            let list = c.list(env).await?;
            if json {
                let v: Vec<_> = list.iter().map(output::backup_json).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if list.is_empty() {
                eprintln!("no backups");
            } else {
                println!(
                    "{:<52} {:<12} {:<10} {:>10} {:>10} {:>8}  NAME",
                    "ID", "TYPE", "STATE", "SIZE", "STORED", "FILES"
                );
                for r in &list {
                    println!(
                        "{:<52} {:<12} {:<10} {:>10} {:>10} {:>8}  {}",
                        r.id.to_string(),
                        r.kind.as_str(),
                        r.state.as_str(),
                        output::bytes(r.logical_size),
                        output::bytes(r.stored_size),
                        r.file_count,
                        r.name
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        BackupsCmd::Show { id, json } => {
            let id = parse_backup(&id)?;
            let c = cluster.connect().await?;
            let r = c.show(&id).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&output::backup_json(&r))?
                );
            } else {
                let v = output::backup_json(&r);
                if let Some(map) = v.as_object() {
                    for (k, v) in map {
                        println!("{k:>14}: {}", v.to_string().trim_matches('"'));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        BackupsCmd::Delete { id } => {
            let id = parse_backup(&id)?;
            let c = cluster.connect().await?;
            c.delete(&id).await?;
            println!("deleted {id}");
            Ok(ExitCode::SUCCESS)
        }
        BackupsCmd::Protect { id } | BackupsCmd::Unprotect { id } => {
            let protect = matches!(cmd_kind, Protection::On);
            let id = parse_backup(&id)?;
            let c = cluster.connect().await?;
            c.protect(&id, protect).await?;
            println!("{} {id}", if protect { "protected" } else { "unprotected" });
            Ok(ExitCode::SUCCESS)
        }
        BackupsCmd::Ls {
            id,
            path,
            json,
            all,
        } => {
            let id = parse_backup(&id)?;
            let path = browse_path(&path)?;
            let c = cluster.connect().await?;
            let mut page = match browse::list(&c, &id, &path, None, LS_PAGE).await {
                Ok(page) => page,
                // The path is well formed (checked above) but not a directory: like
                // `ls FILE`, show the object itself.
                Err(e) if e.code() == cairn_core::ErrorCode::InvalidArgument => {
                    let node = browse::stat(&c, &id, &path).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&node)?);
                    } else {
                        println!("{}", output::node_line(&node));
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                Err(e) => return Err(e.into()),
            };
            if all {
                while let Some(after) = page.next.take() {
                    let more = browse::list(&c, &id, &path, Some(&after), LS_PAGE).await?;
                    page.entries.extend(more.entries);
                    page.next = more.next;
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&page)?);
            } else {
                for n in &page.entries {
                    println!("{}", output::node_line(n));
                }
                if let Some(after) = &page.next {
                    eprintln!(
                        "(first {} entries; more after {after:?}: add --all for every one)",
                        page.entries.len()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        BackupsCmd::Cat { id, path } => {
            let id = parse_backup(&id)?;
            let path = browse_path(&path)?;
            let c = cluster.connect().await?;
            let stream = browse::file_stream(c, id, path);
            let mut out = std::io::stdout().lock();
            copy_stream(stream, &mut out).await?;
            Ok(ExitCode::SUCCESS)
        }
        BackupsCmd::Get {
            id,
            path,
            tar,
            output,
        } => {
            let id = parse_backup(&id)?;
            let path = browse_path(&path)?;
            if path.is_empty() && !tar {
                return Err(Usage("name a file, or use --tar for a directory".into()).into());
            }
            let c = cluster.connect().await?;
            let stream: std::pin::Pin<Box<dyn futures::Stream<Item = _> + Send>> = if tar {
                Box::pin(browse::tar_stream(c, id, path))
            } else {
                Box::pin(browse::file_stream(c, id, path))
            };
            if output == "-" {
                copy_stream(stream, &mut std::io::stdout().lock()).await?;
                return Ok(ExitCode::SUCCESS);
            }
            // Written beside the target and renamed when complete: a failed download
            // leaves no file that could be taken for the real one.
            let target = PathBuf::from(&output);
            let partial = PathBuf::from(format!("{output}.cairn-partial"));
            let file = std::fs::File::create(&partial)
                .with_context(|| format!("cannot create {}", partial.display()))?;
            let mut w = std::io::BufWriter::new(file);
            let written = async {
                let n = copy_stream(stream, &mut w).await?;
                let file = w.into_inner().map_err(|e| e.into_error())?;
                file.sync_all()?;
                std::fs::rename(&partial, &target)?;
                anyhow::Ok(n)
            }
            .await;
            match written {
                Ok(n) => {
                    eprintln!("wrote {} to {output}", output::bytes(n));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&partial);
                    Err(e)
                }
            }
        }
    }
}

/// Entries per page `backups ls` asks for.
const LS_PAGE: usize = 1000;

/// A path of `backups ls|cat|get`: relative to the backup's root, where a leading `/` (or
/// a lone `/`) means the root as the user sees it; `..` and the like are bad usage.
fn browse_path(p: &str) -> Result<String> {
    let rel = p.trim_start_matches('/');
    browse::parse_path(rel).map_err(|e| Usage(format!("{p:?}: {e}")))?;
    Ok(rel.to_string())
}

/// Copies a download to `out` block by block; returns the bytes written. An error in the
/// stream (a chunk no node holds intact) is the command's error.
async fn copy_stream(
    stream: impl futures::Stream<Item = Result<Vec<u8>, cairn_api::Error>>,
    out: &mut impl std::io::Write,
) -> Result<u64> {
    use futures::StreamExt;
    let mut stream = std::pin::pin!(stream);
    let mut n = 0u64;
    while let Some(block) = stream.next().await {
        let block = block?;
        out.write_all(&block).context("cannot write the download")?;
        n += block.len() as u64;
    }
    out.flush().context("cannot write the download")?;
    Ok(n)
}

async fn serve(cfg: cairn_node::NodeConfig, config_dir: &std::path::Path) -> Result<()> {
    let mut node = cairn_node::start(cfg.clone()).await?;
    let gateway = match crate::gateway::start_in_node(&cfg, config_dir, &node.url).await {
        Ok(g) => g,
        Err(e) => {
            node.shutdown().await;
            return Err(e.context("the node's [gateway] cannot start"));
        }
    };
    let _gateway = gateway;
    let fatal = {
        let meta = node.meta.clone();
        async move { meta.fatal().await }
    };
    tokio::select! {
        r = node.wait() => { r?; }
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            node.shutdown().await;
        }
        // A node whose catalog cannot be written (its disk filled to the last byte) stops
        // with the reason rather than stay up answering nothing: its supervisor restarts
        // it, and the restart recovers once there is space.
        why = fatal => {
            node.shutdown().await;
            anyhow::bail!("the node's catalog failed and the node stops (restart it once the cause is fixed, e.g. space freed on a full disk): {why}");
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

async fn dev(
    data: PathBuf,
    listen: std::net::SocketAddr,
    count: u16,
    containers: Option<PathBuf>,
    rest_listen: std::net::SocketAddr,
    xml_listen: std::net::SocketAddr,
) -> Result<()> {
    anyhow::ensure!(
        (1..=5).contains(&count),
        "--nodes {count}: use 1 to 5 nodes"
    );
    let addr = |i: u16| std::net::SocketAddr::new(listen.ip(), listen.port() + i);
    let voters: Vec<cairn_node::Voter> = (0..count)
        .map(|i| cairn_node::Voter {
            id: u64::from(i) + 1,
            addr: addr(i).to_string(),
            zone: format!("zone{}", i + 1),
            weight: 1,
        })
        .collect();
    let mut nodes = Vec::new();
    for v in &voters {
        let mut cfg = cairn_node::NodeConfig::local(
            v.id,
            addr((v.id - 1) as u16),
            data.join(format!("node{}", v.id)),
        );
        if count > 1 {
            cfg.voters = voters.clone();
        }
        nodes.push(cairn_node::start(cfg).await?);
    }
    let url = nodes[0].url.clone();
    let c = Client::connect(&url, &Credentials::default()).await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while c.placement().is_none() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the local cluster did not form within 30s; see the log above"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        c.refresh_placement().await?;
    }
    // The agent of this machine: its environments are the subdirectories of `containers`
    // (a generated sample without the flag).
    let containers = match containers {
        Some(d) => {
            std::fs::canonicalize(&d).with_context(|| format!("--containers {}", d.display()))?
        }
        None => crate::demo::sample_containers(&data.join("containers"))?,
    };
    let mut agent_cfg = cairn_agent::daemon::AgentConfig::new(
        nodes.iter().map(|n| n.url.clone()).collect(),
        data.join("agent"),
        cairn_agent::discovery::Sources {
            dirs: vec![containers.clone()],
            ..Default::default()
        },
    );
    agent_cfg.host_id = Some("dev-host".into());
    agent_cfg.register_interval_ms = 2_000;
    let (agent_stop, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(cairn_agent::daemon::run(agent_cfg, async {
        let _ = agent_stopped.await;
    }));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let envs = loop {
        let list = c.list_envs(None).await?;
        if !list.is_empty() || std::time::Instant::now() > deadline || agent.is_finished() {
            break list;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let (users_file, generated) = crate::gateway::dev_users(&data)?;
    let (rest, xml) =
        crate::gateway::start_dev(rest_listen, xml_listen, users_file, c.clone()).await?;
    let password_line = match &generated {
        Some(p) => format!("user admin, password {p} (set CAIRN_DEV_PASSWORD to choose it)"),
        None => "user admin with the password in CAIRN_DEV_PASSWORD".to_string(),
    };
    let dashboard_login = match &generated {
        Some(p) => format!("user admin, password {p}"),
        None => "user admin, the password in CAIRN_DEV_PASSWORD".to_string(),
    };
    let example_env = envs
        .first()
        .map(|e| e.record.eid.to_string())
        .unwrap_or_else(|| "<EID>".into());
    println!(
        "cairn dev: a {count}-node cluster (replication factor {}) is serving on {} with data in {}\n\
         and an agent (host \"dev-host\") runs the {} environment(s) under {}\n\
         \n\
         Dashboard at {rest_url}ui/ ({dashboard_login}): open it in a browser\n\
         \n\
         Or try, in another terminal:\n\
         \x20 cairn envs list\n\
         \x20 cairn backup --env {example_env}          # a job for the agent, with a progress bar\n\
         \x20 cairn jobs list\n\
         \x20 cairn backups list\n\
         \x20 cairn restore --env {example_env} --force  # restore it in place\n\
         \x20 cairn cluster status\n\
         \x20 curl -u admin:PASSWORD {rest_url}vdc   # the REST API (Sun Cloud API)\n\
         \n\
         REST API at {rest_url}: {password_line}\n\
         XML API (Virtuozzo Agent backupm) at {xml_addr}, same user\n\
         \n\
         (clients use {DEFAULT_CLUSTER} unless --cluster or CAIRN_CLUSTER says otherwise; any node answers; Ctrl-C stops)",
        c.placement().map(|p| p.effective_rf()).unwrap_or(1),
        nodes.iter().map(|n| n.url.as_str()).collect::<Vec<_>>().join(", "),
        data.display(),
        envs.len(),
        containers.display(),
        rest_url = rest.url(),
        xml_addr = xml.addr,
    );
    let mut first = nodes.remove(0);
    tokio::select! {
        r = first.wait() => { r?; }
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
        }
    }
    let _ = agent_stop.send(());
    if let Ok(Err(e)) = agent.await {
        tracing::warn!(error = %e, "the dev agent stopped with an error");
    }
    first.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}

/// Runs a repair pass on every node and reports; exit code 1 while a backlog remains.
async fn repair(c: &Client, json: bool) -> Result<ExitCode> {
    let nodes: Vec<(u64, String)> = match c.placement() {
        Some(p) => p.nodes.iter().map(|n| (n.id, n.addr.clone())).collect(),
        None => vec![(0, c.url.clone())],
    };
    let mut rows = Vec::new();
    let mut backlog = 0;
    for (id, addr) in nodes {
        match c.repair_at(&addr).await {
            Ok(r) => {
                backlog += r.backlog;
                if !json {
                    println!(
                        "node {id}: {} chunks checked, {} copies made, {} dropped, backlog {}, {} chunks held",
                        r.checked, r.pushed, r.dropped, r.backlog, r.chunks
                    );
                }
                rows.push(serde_json::json!({
                    "node_id": id, "epoch": r.epoch, "checked": r.checked, "pushed": r.pushed,
                    "dropped": r.dropped, "backlog": r.backlog, "chunks": r.chunks,
                }));
            }
            Err(e) => {
                backlog += 1;
                if !json {
                    println!("node {id}: not reached: {e}");
                }
                rows.push(serde_json::json!({"node_id": id, "error": e.to_string()}));
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"backlog": backlog, "nodes": rows}))?
        );
    }
    Ok(if backlog > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Scrubs every node of the placement in turn and reports per node and in total.
async fn scrub(c: &Client, json: bool) -> Result<ExitCode> {
    let targets: Vec<(u64, String)> = match c.placement() {
        Some(p) => p.nodes.iter().map(|n| (n.id, n.addr.clone())).collect(),
        None => vec![(0, c.url.clone())],
    };
    let mut rows = Vec::new();
    let (mut checked, mut corrupt, mut repaired, mut unrepaired, mut unreadable, mut failed) =
        (0, 0, 0, 0, 0, 0);
    for (id, addr) in targets {
        match c.scrub_at(&addr).await {
            Ok(r) => {
                checked += r.checked;
                corrupt += r.corrupt;
                repaired += r.repaired;
                unrepaired += r.unrepaired.len() as u64;
                unreadable += r.unreadable.len() as u64;
                let ids: Vec<String> = r.unrepaired.iter().map(|i| i.to_string()).collect();
                let unread: Vec<String> = r.unreadable.iter().map(|i| i.to_string()).collect();
                if !json {
                    println!(
                        "node {id} ({}): {} chunks checked, {} corrupt, {} repaired{}{}",
                        addr.trim_start_matches("http://"),
                        r.checked,
                        r.corrupt,
                        r.repaired,
                        if ids.is_empty() {
                            String::new()
                        } else {
                            format!(", NOT repaired (kept): {}", ids.join(" "))
                        },
                        if unread.is_empty() {
                            String::new()
                        } else {
                            format!(", UNREADABLE (I/O error; kept): {}", unread.join(" "))
                        }
                    );
                }
                rows.push(serde_json::json!({
                    "node_id": id, "addr": addr, "checked": r.checked, "corrupt": r.corrupt,
                    "repaired": r.repaired, "unrepaired": ids, "unreadable": unread,
                }));
            }
            Err(e) => {
                failed += 1;
                if !json {
                    println!("node {id} ({addr}): not scrubbed: {e}");
                }
                rows.push(serde_json::json!({"node_id": id, "addr": addr, "error": e.to_string()}));
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "checked": checked, "corrupt": corrupt, "repaired": repaired,
                "unrepaired": unrepaired, "unreadable": unreadable,
                "nodes_failed": failed, "nodes": rows,
            }))?
        );
    } else {
        println!(
            "scrub: {checked} chunks checked, {corrupt} corrupt, {repaired} repaired, {unrepaired} not repairable, {unreadable} unreadable, {failed} node(s) not reached"
        );
    }
    Ok(if unrepaired > 0 || unreadable > 0 || failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints every node's state as the nodes themselves report it; a node that does not
/// answer is listed as down.
async fn cluster_status(c: &Client, json: bool) -> Result<()> {
    let placement = c.placement();
    let mut targets: Vec<(Option<u64>, String, String)> = match &placement {
        Some(p) => p
            .nodes
            .iter()
            .map(|n| (Some(n.id), n.addr.clone(), n.zone.clone()))
            .collect(),
        None => vec![(None, c.url.clone(), String::new())],
    };
    targets.sort();
    let mut rows = Vec::new();
    for (id, addr, zone) in targets {
        let s = c.node_status_at(&addr).await;
        rows.push((id, addr, zone, s));
    }
    let leader = rows
        .iter()
        .filter_map(|r| r.3.as_ref().ok())
        .max_by_key(|s| s.term)
        .and_then(|s| s.leader);
    // How evenly the layout fills the nodes (sampled placement; see cairn_core::placement).
    let balance = placement.as_ref().map(|p| p.balance(20_000));
    if json {
        let nodes: Vec<serde_json::Value> = rows
            .iter()
            .map(|(id, addr, zone, s)| match s {
                Ok(s) => serde_json::json!({
                    "node_id": s.node_id, "addr": addr, "zone": s.zone, "state": "up",
                    "role": s.role, "voter": s.voter, "leader": s.leader, "term": s.term,
                    "commit_index": s.commit_index, "last_log_index": s.last_log_index,
                    "epoch": s.epoch, "chunks": s.chunks, "stored_bytes": s.stored_bytes,
                    "repair_backlog": s.repair_backlog, "draining": s.draining,
                    "logical_bytes": s.logical_bytes, "backups": s.backups,
                    "catalog_index": s.catalog_index, "catalog_digest": s.catalog_digest,
                    "last_runs": s.last_runs,
                }),
                Err(e) => serde_json::json!({
                    "node_id": id, "addr": addr, "zone": zone, "state": "down",
                    "error": e.to_string(),
                }),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "leader": leader,
                "epoch": placement.as_ref().map(|p| p.number),
                "replication_factor": placement.as_ref().map(|p| p.effective_rf()),
                "zone_redundancy": placement.as_ref().map(|p| p.zone_redundancy.to_string()),
                "usable_capacity": balance.as_ref().map(|b| b.usable),
                "zones_unbalanced": balance.as_ref().map(|b| b.is_unbalanced()),
                "repair_backlog": rows.iter().filter_map(|r| r.3.as_ref().ok()).map(|s| s.repair_backlog).sum::<u64>(),
                "nodes": nodes,
            }))?
        );
        return Ok(());
    }
    match &placement {
        Some(p) => println!(
            "placement epoch {}, {} node(s), replication factor {}, leader {}",
            p.number,
            p.nodes.len(),
            p.effective_rf(),
            leader
                .map(|l| l.to_string())
                .unwrap_or_else(|| "none".into())
        ),
        None => println!("no placement yet (the cluster is forming)"),
    }
    if let (Some(p), Some(b)) = (&placement, &balance) {
        println!(
            "zone redundancy {}; usable capacity {:.0} % of raw",
            p.zone_redundancy,
            b.usable * 100.0
        );
        if let (true, Some(full)) = (b.is_unbalanced(), b.fullest()) {
            println!(
                "warning: zones are unbalanced: node {} (zone {:?}) holds {:.2}× its share of the \
                 copies and fills first, so only {:.0} % of the raw capacity is usable. Balance the \
                 zones' weights, or place copies in fewer zones than the replication factor \
                 (`cairn cluster set-zone-redundancy 2`).",
                full.id,
                full.zone,
                full.load(),
                b.usable * 100.0
            );
        }
    }
    println!(
        "{:>4}  {:<24} {:<8} {:<8} {:<18} {:>5} {:>8} {:>8} {:>10} {:>10} {:>8}",
        "node",
        "address",
        "zone",
        "state",
        "role",
        "term",
        "commit",
        "backups",
        "chunks",
        "stored",
        "backlog"
    );
    for (id, addr, zone, s) in &rows {
        match s {
            Ok(s) => println!(
                "{:>4}  {:<24} {:<8} {:<8} {:<18} {:>5} {:>8} {:>8} {:>10} {:>10} {:>8}",
                s.node_id,
                addr.trim_start_matches("http://"),
                s.zone,
                if s.draining { "draining" } else { "up" },
                if s.voter {
                    s.role.clone()
                } else {
                    format!("{} (storage)", s.role)
                },
                s.term,
                s.commit_index,
                s.backups,
                s.chunks,
                output::bytes(s.stored_bytes),
                s.repair_backlog
            ),
            Err(_) => println!(
                "{:>4}  {:<24} {:<8} {:<5}",
                id.map(|i| i.to_string()).unwrap_or_default(),
                addr.trim_start_matches("http://"),
                zone,
                "down"
            ),
        }
    }
    let runs: Vec<(u64, Vec<String>)> = rows
        .iter()
        .filter_map(|r| r.3.as_ref().ok())
        .map(|s| (s.node_id, output::last_runs(&s.last_runs)))
        .filter(|(_, lines)| !lines.is_empty())
        .collect();
    if !runs.is_empty() {
        println!("last maintenance runs:");
    }
    for (node, lines) in runs {
        for l in lines {
            println!("{node:>4}  {l}");
        }
    }
    Ok(())
}
