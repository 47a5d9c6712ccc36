//! Who may do what: the principals, the kinds of access, and the one table that lists every
//! entry point of the cluster (gRPC methods, REST routes, XML calls, dashboard routes, a
//! node's metrics listener) with the access it needs.
//!
//! # How a call is authorized
//! 1. **Authentication** happens at the edge: a node's interceptor turns the bearer token
//!    into a [`Principal`] (the cluster secret, a user token, an agent token, or a join
//!    token, which admits only its own redemption: [`Access::Enroll`]); the gateway
//!    turns HTTP Basic or an XML login into a [`Principal::User`]. A caller holding the
//!    cluster secret (another node, or a gateway) may say whom it acts for; a user token may
//!    act for a user with no more rights than its own ([`Principal::delegate`]).
//! 2. **The table** ([`TABLE`]) names, for each entry point, the [`Access`] it needs, and
//!    [`Access::admits`] says which principals that access admits: the cluster secret all of
//!    them, users by [`Role`], agents never, always, or only for what belongs to their own
//!    host ([`Admission::OwnHost`]).
//! 3. **The catalog decides** (`cairn_meta::authz`): the principal is part of every raft
//!    command, so the same pure function of (catalog, principal, request, now) runs on the
//!    leader, on every follower and in a replay, and checks what "own host" means there (the
//!    environment, backup, job or session named). Services only authenticate.
//!
//! The matrix test (`tests/authz.rs`) calls every row of [`TABLE`] as every kind of caller,
//! via the leader and via a follower, and checks the answer against this table; an entry
//! point without a row fails it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a user may do. Ordered: `Viewer < Operator < Admin`, each allowing what the lower
/// ones allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads the catalog: backups, environments, hosts, jobs, settings, status.
    Viewer,
    /// Also backs up and restores, reads backup content, cancels jobs.
    Operator,
    /// Also deletes, edits and protects backups, changes settings, tokens and the cluster.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// `"viewer"`, `"operator"` or `"admin"` (ASCII case ignored).
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
    }

    /// Whether this role may do what `needed` allows (admin ⊇ operator ⊇ viewer).
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who asks. Part of every raft command, so every member decides alike.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Principal {
    /// The holder of the cluster secret: another node (or the node itself: its sweeper,
    /// health watcher, bootstrap), or an operator bootstrapping the first user token. On a
    /// node without a cluster secret (`cairn dev` on loopback) every caller is this.
    Cluster,
    /// A person: a user token (`cairn token create NAME --role R`), or a gateway user
    /// (`rest:alice`, `xml:bob`) the gateway vouches for.
    User { name: String, role: Role },
    /// An agent token, bound to one host.
    Agent { host: String },
    /// The holder of a join token (`cairn agent join-token create HOST`): the token's id and
    /// the BLAKE3 hash of what was presented. It may only redeem that token for an agent
    /// token ([`Access::Enroll`]); the catalog checks the hash, the expiry, the host and that
    /// the token was never redeemed.
    JoinToken { id: String, hash: String },
}

impl Principal {
    /// Who to record as a job's requester.
    pub fn name(&self) -> String {
        match self {
            Principal::Cluster => "cluster".into(),
            Principal::User { name, .. } => name.clone(),
            Principal::Agent { host } => format!("agent:{host}"),
            Principal::JoinToken { id, .. } => format!("join:{id}"),
        }
    }

    /// The host an agent is bound to; `None` for everyone else.
    pub fn agent_host(&self) -> Option<&str> {
        match self {
            Principal::Agent { host } => Some(host),
            _ => None,
        }
    }

    /// How the principal is shown in a refusal: `the cluster secret`, `user "alice"
    /// (viewer)`, `the agent token of host "hn1"`.
    pub fn describe(&self) -> String {
        match self {
            Principal::Cluster => "the cluster secret".into(),
            Principal::User { name, role } => format!("user {name:?} ({role})"),
            Principal::Agent { host } => format!("the agent token of host {host:?}"),
            Principal::JoinToken { id, .. } => format!("join token {id}"),
        }
    }

    /// Whom a caller authenticated as `self` may act for: the cluster secret for anyone (a
    /// node relaying a call, a gateway); a user for a user with no more rights than its own
    /// (a standalone gateway's admin token); an agent for nobody.
    pub fn delegate(&self, asserted: Principal) -> Result<Principal, String> {
        match (self, &asserted) {
            (Principal::Cluster, _) => Ok(asserted),
            (Principal::User { role, .. }, Principal::User { role: wanted, .. })
                if role.allows(*wanted) =>
            {
                Ok(asserted)
            }
            _ => Err(format!(
                "{} may not act for {}: only the cluster secret, or a user token for a user with no more rights than its own, may say whom it acts for",
                self.describe(),
                asserted.describe()
            )),
        }
    }
}

/// What an entry point does, as far as who may do it is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Access {
    /// Anyone, without credentials: health checks, the XML greeting and login.
    Public,
    /// Node to node only: raft, replica copies, GC sweeps.
    Internal,
    /// Cluster status and chunk placement: every authenticated caller.
    Status,
    /// Reading the catalog: backups, environments, hosts, jobs, settings.
    Read,
    /// Reading backup content (chunks, files).
    ReadContent,
    /// Uploading chunks (they are content-addressed: an upload changes no backup).
    Upload,
    /// Committing a backup, opening and closing its session.
    Commit,
    /// Running backup and restore jobs, cancelling them.
    Operate,
    /// What only an agent does: registering its host, taking, reporting and ending jobs.
    AgentWork,
    /// Changing or removing history, settings, tokens, environments' hosts and the cluster.
    Administer,
    /// Redeeming a join token for an agent token: only the join token's holder, whose token
    /// the catalog checks (rule `join-token-holder`).
    Enroll,
}

/// How [`Access`] treats agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Agents {
    Never,
    Always,
    OwnHost,
}

/// The rule a permission refusal applies: a stable name a caller may match on (carried in the
/// `cairn-rule` metadata of a refusal), never the refusal's prose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// The access table ([`TABLE`]): the principal's role or kind lacks the access the entry
    /// point needs.
    AccessTable,
    /// An agent acts for its own host only.
    AgentOwnHost,
    /// An agent acts on environments its host runs only.
    AgentOwnEnv,
    /// An agent reads backups of its host's environments (and the one an active restore job
    /// on its host reads) only.
    AgentOwnBackup,
    /// An agent sees and acts on its host's jobs only.
    AgentOwnJob,
    /// An agent opens sessions and commits only for the backup job its host runs.
    AgentCommitInJob,
    /// An agent closes the sessions its host opened only.
    AgentOwnSession,
    /// An agent restores only into the environment's own path, on its host.
    AgentOwnPaths,
    /// Removing backups (deleting, replacing) needs the right to delete.
    MayDelete,
    /// A caller may vouch only for principals with at most its own rights.
    Delegation,
    /// A join token enrolls one agent, for the host it names, once, before it expires.
    JoinTokenHolder,
}

impl Rule {
    pub const ALL: [Rule; 11] = [
        Rule::AccessTable,
        Rule::AgentOwnHost,
        Rule::AgentOwnEnv,
        Rule::AgentOwnBackup,
        Rule::AgentOwnJob,
        Rule::AgentCommitInJob,
        Rule::AgentOwnSession,
        Rule::AgentOwnPaths,
        Rule::MayDelete,
        Rule::Delegation,
        Rule::JoinTokenHolder,
    ];

    /// The rule's stable name (`agent-own-host`, …), as refusals print and carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::AccessTable => "access-table",
            Rule::AgentOwnHost => "agent-own-host",
            Rule::AgentOwnEnv => "agent-own-env",
            Rule::AgentOwnBackup => "agent-own-backup",
            Rule::AgentOwnJob => "agent-own-job",
            Rule::AgentCommitInJob => "agent-commit-in-job",
            Rule::AgentOwnSession => "agent-own-session",
            Rule::AgentOwnPaths => "agent-own-paths",
            Rule::MayDelete => "may-delete",
            Rule::Delegation => "delegation",
            Rule::JoinTokenHolder => "join-token-holder",
        }
    }

    pub fn parse(s: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The table's answer for one principal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Allowed, whatever the request names.
    Allowed,
    /// Allowed for an agent only for what belongs to its host: the catalog checks the
    /// environment, backup, job or session the request names.
    OwnHost,
    /// Refused; the reason names the rule.
    Denied(String),
}

impl Access {
    /// Every access, for tables and tests.
    pub const ALL: [Access; 11] = [
        Access::Public,
        Access::Internal,
        Access::Status,
        Access::Read,
        Access::ReadContent,
        Access::Upload,
        Access::Commit,
        Access::Operate,
        Access::AgentWork,
        Access::Administer,
        Access::Enroll,
    ];

    /// The least role a user needs; `None`: users never (only nodes, or only agents).
    pub fn min_role(self) -> Option<Role> {
        match self {
            Access::Public | Access::Status | Access::Read => Some(Role::Viewer),
            Access::ReadContent | Access::Upload | Access::Commit | Access::Operate => {
                Some(Role::Operator)
            }
            Access::Administer => Some(Role::Admin),
            Access::Internal | Access::AgentWork | Access::Enroll => None,
        }
    }

    fn agents(self) -> Agents {
        match self {
            Access::Public | Access::Status | Access::Upload => Agents::Always,
            Access::Read
            | Access::ReadContent
            | Access::Commit
            | Access::Operate
            | Access::AgentWork => Agents::OwnHost,
            Access::Internal | Access::Administer | Access::Enroll => Agents::Never,
        }
    }

    /// A short name for refusals and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Internal => "internal",
            Access::Status => "status",
            Access::Read => "read",
            Access::ReadContent => "read-content",
            Access::Upload => "upload",
            Access::Commit => "commit",
            Access::Operate => "operate",
            Access::AgentWork => "agent-work",
            Access::Administer => "administer",
            Access::Enroll => "enroll",
        }
    }

    /// What the table says of `who` for this access.
    pub fn admits(self, who: &Principal) -> Admission {
        match who {
            Principal::Cluster => Admission::Allowed,
            Principal::User { name, role } => match self.min_role() {
                Some(needed) if role.allows(needed) => Admission::Allowed,
                Some(needed) => Admission::Denied(format!(
                    "rule {}: user {name:?} has role {role}; {} needs {needed}",
                    self.as_str(),
                    self.doing()
                )),
                None => Admission::Denied(format!(
                    "rule {}: {} is for {}, not for users",
                    self.as_str(),
                    self.as_str(),
                    match self {
                        Access::Internal => "nodes (the cluster secret)",
                        Access::Enroll => "the holder of a join token",
                        _ => "agents",
                    }
                )),
            },
            Principal::Agent { host } => match self.agents() {
                Agents::Always => Admission::Allowed,
                Agents::OwnHost => Admission::OwnHost,
                Agents::Never => Admission::Denied(format!(
                    "rule {}: the agent token of host {host:?} may not {}; agents back up and restore their own host's environments and nothing else",
                    self.as_str(),
                    self.what()
                )),
            },
            Principal::JoinToken { id, .. } => match self {
                Access::Enroll => Admission::Allowed,
                _ => Admission::Denied(format!(
                    "rule {}: join token {id} only enrolls an agent (cairn agent enroll); it may not {}",
                    self.as_str(),
                    self.what()
                )),
            },
        }
    }

    /// What the access is, for refusals ("backing up and restoring needs operator").
    fn doing(self) -> &'static str {
        match self {
            Access::Public => "this",
            Access::Internal => "a node-to-node call",
            Access::Status => "reading the cluster's status",
            Access::Read => "reading the catalog",
            Access::ReadContent => "reading backup content",
            Access::Upload => "uploading chunks",
            Access::Commit => "committing a backup",
            Access::Operate => "backing up and restoring",
            Access::AgentWork => "an agent's work",
            Access::Enroll => "enrolling an agent",
            Access::Administer => {
                "removing, editing or protecting backups, or changing settings, tokens or the cluster"
            }
        }
    }

    fn what(self) -> &'static str {
        match self {
            Access::Internal => "make node-to-node calls",
            Access::Administer => {
                "delete, edit or protect backups, change settings, tokens, environments' hosts or the cluster"
            }
            _ => "do this",
        }
    }
}

/// The interface an entry point belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interface {
    Grpc,
    Rest,
    Xml,
    /// The web dashboard (`/ui/…` on the REST listener).
    Ui,
    /// A storage node's own HTTP listener (`metrics_listen`): its Prometheus metrics.
    Node,
}

/// One entry point and the access it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    pub interface: Interface,
    /// gRPC: `Service.Method`, with a variant in parentheses where the request decides
    /// (`Agents.CreateJob(delete)`); REST: `METHOD /path` as the router spells it; XML:
    /// `interface/call`, with a variant in parentheses.
    pub entry: &'static str,
    pub access: Access,
}

const fn grpc(entry: &'static str, access: Access) -> Row {
    Row {
        interface: Interface::Grpc,
        entry,
        access,
    }
}

const fn rest(entry: &'static str, access: Access) -> Row {
    Row {
        interface: Interface::Rest,
        entry,
        access,
    }
}

const fn ui(entry: &'static str, access: Access) -> Row {
    Row {
        interface: Interface::Ui,
        entry,
        access,
    }
}

const fn node(entry: &'static str, access: Access) -> Row {
    Row {
        interface: Interface::Node,
        entry,
        access,
    }
}

const fn xml(entry: &'static str, access: Access) -> Row {
    Row {
        interface: Interface::Xml,
        entry,
        access,
    }
}

use Access::*;

/// Every entry point of the cluster and the access it needs. A new gRPC method, REST route
/// or XML call without a row here fails the matrix test.
pub const TABLE: &[Row] = &[
    // The chunk data plane.
    grpc("Chunks.Missing", Upload),
    grpc("Chunks.Missing(local)", Internal),
    grpc("Chunks.Put", Upload),
    grpc("Chunks.Put(replica)", Internal),
    grpc("Chunks.Get", ReadContent),
    grpc("Chunks.Scrub", Administer),
    grpc("Chunks.Repair", Administer),
    grpc("Chunks.Sweep", Internal),
    grpc("Chunks.Mark", Internal),
    // The catalog.
    grpc("Catalog.CommitBackup", Commit),
    grpc("Catalog.ListBackups", Read),
    grpc("Catalog.GetBackup", Read),
    grpc("Catalog.DeleteBackup", Administer),
    grpc("Catalog.ProtectBackup", Administer),
    grpc("Catalog.LatestBackup", Read),
    grpc("Catalog.NodeStatus", Status),
    grpc("Catalog.GetPlacement", Status),
    grpc("Catalog.AddNode", Administer),
    grpc("Catalog.SetZoneRedundancy", Administer),
    grpc("Catalog.RemoveNode", Administer),
    grpc("Catalog.OpenSession", Commit),
    grpc("Catalog.CloseSession", Commit),
    grpc("Catalog.RenewSession", Commit),
    grpc("Catalog.Gc", Administer),
    grpc("Catalog.GetEnvConfig", Read),
    grpc("Catalog.SetEnvConfig", Administer),
    // Hosts, environments, jobs, tokens.
    grpc("Agents.RegisterHost", AgentWork),
    grpc("Agents.ListHosts", Read),
    grpc("Agents.ListEnvs", Read),
    grpc("Agents.MoveEnv", Administer),
    grpc("Agents.CreateJob(backup)", Operate),
    grpc("Agents.CreateJob(restore)", Operate),
    grpc("Agents.CreateJob(selective_restore)", Operate),
    grpc("Agents.CreateJob(delete)", Administer),
    grpc("Agents.CreateJob(update)", Administer),
    grpc("Agents.GetJob", Read),
    grpc("Agents.ListJobs", Read),
    grpc("Agents.WatchJob", Read),
    grpc("Agents.CancelJob", Operate),
    grpc("Agents.AgentJobs", AgentWork),
    grpc("Agents.ClaimJob", AgentWork),
    grpc("Agents.ReportProgress", AgentWork),
    grpc("Agents.FinishJob", AgentWork),
    grpc("Agents.CreateAgentToken", Administer),
    grpc("Agents.ListAgentTokens", Administer),
    grpc("Agents.RevokeAgentToken", Administer),
    grpc("Agents.CreateUserToken", Administer),
    grpc("Agents.ListUserTokens", Administer),
    grpc("Agents.RevokeUserToken", Administer),
    // Enrollment: an admin issues a one-time join token for a host; its holder (the new
    // agent) redeems it for an agent token of that host, without any other credential.
    grpc("Agents.CreateJoinToken", Administer),
    grpc("Agents.RedeemJoinToken", Enroll),
    grpc("Agents.ListJoinTokens", Administer),
    grpc("Agents.RevokeJoinToken", Administer),
    // Raft between voters.
    grpc("Raft.AppendEntries", Internal),
    grpc("Raft.Vote", Internal),
    grpc("Raft.InstallSnapshot", Internal),
    // The Sun Cloud API REST adapter (users only).
    rest("GET /", Read),
    rest("GET /versions", Read),
    rest("GET /vdc", Read),
    rest("GET /clusters", Read),
    rest("GET /clusters/{host}", Read),
    rest("GET /vms/{eid}", Read),
    rest("POST /vms/{eid}/back_up", Operate),
    rest("GET /vms/{eid}/backups", Read),
    rest("GET /vms/{eid}/backups/{stamp}", Read),
    rest("PUT /vms/{eid}/backups/{stamp}", Administer),
    rest("DELETE /vms/{eid}/backups/{stamp}", Administer),
    rest("POST /vms/{eid}/backups/{stamp}/restore", Operate),
    // The file browser of a backup: its tree, a file's bytes, a directory as a tar.
    rest("GET /vms/{eid}/backups/{stamp}/files", ReadContent),
    rest("GET /vms/{eid}/backups/{stamp}/files/{path}", ReadContent),
    rest("GET /statuses/{id}", Read),
    rest("GET /healthz", Public),
    rest("GET /metrics", Read),
    rest("GET /openapi.json", Read),
    // The Virtuozzo Agent XML adapter (users only).
    xml("system/get_realm", Public),
    xml("system/login", Public),
    xml("system/cancel", Operate),
    xml("backupm/list", Read),
    xml("backupm/search", Read),
    xml("backupm/get_info", Read),
    xml("backupm/get_config", Read),
    xml("backupm/set_config", Administer),
    xml("backupm/remove", Administer),
    xml("backupm/protect", Administer),
    xml("backupm/backup_env", Operate),
    xml("backupm/backup_env(remove)", Administer),
    xml("backupm/restore_env", Operate),
    xml("backupm/selective_restore_env", Operate),
    // The web dashboard (users only, by session). Each action calls the cluster as the user,
    // which decides again; the dashboard shows a button only where its row admits the user.
    ui("GET /ui", Public),
    ui("GET /ui/login", Public),
    ui("POST /ui/login", Public),
    ui("GET /ui/assets/{name}", Public),
    ui("POST /ui/logout", Read),
    ui("GET /ui/", Read),
    ui("GET /ui/hosts", Read),
    ui("GET /ui/envs/{eid}", Read),
    ui("POST /ui/envs/{eid}/backup", Operate),
    ui("GET /ui/backups/{eid}/{stamp}", Read),
    ui("GET /ui/backups/{eid}/{stamp}/file", ReadContent),
    ui("GET /ui/backups/{eid}/{stamp}/tar", ReadContent),
    ui("GET /ui/backups/{eid}/{stamp}/restore", Read),
    ui("POST /ui/backups/{eid}/{stamp}/restore", Operate),
    ui("POST /ui/backups/{eid}/{stamp}/protect", Administer),
    ui("POST /ui/backups/{eid}/{stamp}/delete", Administer),
    ui("GET /ui/jobs", Read),
    ui("GET /ui/jobs/{id}", Read),
    ui("POST /ui/jobs/{id}/cancel", Operate),
    ui("GET /ui/events/jobs", Read),
    ui("GET /ui/nodes", Read),
    ui("POST /ui/nodes/{what}", Administer),
    // A storage node's metrics listener (off unless `metrics_listen` is set): counts and
    // states only, for scrapers that carry no token; see `cairn_node::metrics`.
    node("GET /metrics", Public),
];

/// The access an entry point needs; `None` when the table has no row for it (a bug: every
/// entry point must have one, and the matrix test checks it).
pub fn access_of(interface: Interface, entry: &str) -> Option<Access> {
    TABLE
        .iter()
        .find(|r| r.interface == interface && r.entry == entry)
        .map(|r| r.access)
}

/// What the table says of `who` calling `entry`. An entry point without a row is refused,
/// so forgetting a row fails closed.
pub fn admit(interface: Interface, entry: &str, who: &Principal) -> Admission {
    match access_of(interface, entry) {
        Some(access) => access.admits(who),
        None => Admission::Denied(format!(
            "{entry} has no row in the authorization table; refused"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_are_stable_and_round_trip() {
        for r in Rule::ALL {
            assert_eq!(Rule::parse(r.as_str()), Some(r));
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
        assert_eq!(Rule::AgentOwnHost.as_str(), "agent-own-host");
        assert_eq!(Rule::parse("agent-own-hosts"), None);
    }

    fn user(role: Role) -> Principal {
        Principal::User {
            name: "u".into(),
            role,
        }
    }

    #[test]
    fn rows_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in TABLE {
            assert!(
                seen.insert((r.interface, r.entry)),
                "{} is listed twice",
                r.entry
            );
        }
    }

    #[test]
    fn roles_nest_and_agents_never_administer() {
        for access in Access::ALL {
            let admitted: Vec<bool> = Role::ALL
                .iter()
                .map(|r| access.admits(&user(*r)) == Admission::Allowed)
                .collect();
            // A role allows at least what the lower ones allow.
            assert!(admitted.windows(2).all(|w| w[0] <= w[1]), "{access:?}");
            assert_eq!(access.admits(&Principal::Cluster), Admission::Allowed);
        }
        let agent = Principal::Agent { host: "h".into() };
        for access in [Access::Administer, Access::Internal] {
            assert!(matches!(access.admits(&agent), Admission::Denied(_)));
        }
        assert!(matches!(
            Access::Internal.admits(&user(Role::Admin)),
            Admission::Denied(_)
        ));
        assert!(matches!(
            Access::AgentWork.admits(&user(Role::Admin)),
            Admission::Denied(_)
        ));
        assert!(matches!(
            Access::ReadContent.admits(&user(Role::Viewer)),
            Admission::Denied(_)
        ));
        assert_eq!(Access::Operate.admits(&agent), Admission::OwnHost);
        // A join token redeems itself and does nothing else; nobody else enrolls.
        let joiner = Principal::JoinToken {
            id: "j1".into(),
            hash: "00".into(),
        };
        for access in Access::ALL {
            let allowed = access.admits(&joiner) == Admission::Allowed;
            assert_eq!(allowed, access == Access::Enroll, "{access:?}");
        }
        assert!(matches!(
            Access::Enroll.admits(&user(Role::Admin)),
            Admission::Denied(_)
        ));
        assert!(matches!(
            Access::Enroll.admits(&agent),
            Admission::Denied(_)
        ));
        assert_eq!(Access::Upload.admits(&agent), Admission::Allowed);
    }

    #[test]
    fn unknown_entries_fail_closed() {
        assert!(matches!(
            admit(Interface::Grpc, "Catalog.Nope", &Principal::Cluster),
            Admission::Denied(_)
        ));
        assert_eq!(
            admit(Interface::Grpc, "Catalog.DeleteBackup", &Principal::Cluster),
            Admission::Allowed
        );
    }

    #[test]
    fn only_the_secret_and_stronger_users_delegate() {
        let alice = user(Role::Operator);
        assert_eq!(
            Principal::Cluster.delegate(alice.clone()),
            Ok(alice.clone())
        );
        let agent = Principal::Agent { host: "h1".into() };
        assert_eq!(
            Principal::Cluster.delegate(agent.clone()),
            Ok(agent.clone())
        );
        assert!(user(Role::Admin).delegate(alice.clone()).is_ok());
        assert!(user(Role::Operator).delegate(alice.clone()).is_ok());
        assert!(user(Role::Viewer).delegate(alice.clone()).is_err());
        assert!(user(Role::Admin).delegate(agent.clone()).is_err());
        assert!(user(Role::Admin).delegate(Principal::Cluster).is_err());
        assert!(agent.delegate(user(Role::Viewer)).is_err());
    }

    #[test]
    fn principals_round_trip_as_json() {
        for p in [
            Principal::Cluster,
            user(Role::Admin),
            Principal::Agent { host: "hn1".into() },
        ] {
            let j = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<Principal>(&j).unwrap(), p);
        }
        assert_eq!(
            serde_json::to_string(&user(Role::Viewer)).unwrap(),
            r#"{"User":{"name":"u","role":"viewer"}}"#
        );
    }
}
