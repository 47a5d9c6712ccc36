//! A network of its own for each node, so the nemesis can cut links (root only).
//!
//! Every node runs in a network namespace (`ip netns exec`) with one veth link to a bridge
//! in the harness's namespace; the bridge carries the harness's own address, so clients and
//! the checker reach every node directly and are never cut off. A cut link is a `blackhole`
//! route in the sender's namespace: packets from A to B are dropped where they start, while
//! B's packets still reach A. Cutting both directions partitions A from B; cutting one gives
//! the one-way partitions real networks produce (a TCP connection then fails both ways, but
//! A fails fast while B waits for its timeout). Only `iproute2` is needed: no iptables.
//!
//! Names carry a tag from the harness's process id so two runs on one machine do not meet;
//! [`Drop`] deletes the namespaces and the bridge (which takes the veth links with it).

use std::collections::BTreeSet;
use std::process::Command;

use crate::Host;

/// The port every node listens on inside its own namespace.
const PORT: u16 = 7100;

pub struct Net {
    tag: String,
    bridge: String,
    /// `10.231.X`: the /24 the nodes and the bridge share.
    prefix: String,
    /// Node ids whose namespace exists.
    made: BTreeSet<u64>,
    /// Links cut now, as (from, to): packets from `from` to `to` are dropped.
    cut: BTreeSet<(u64, u64)>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// Makes the bridge; fails when not root or without `ip`.
    pub fn create() -> Result<Net, String> {
        let pid = std::process::id();
        let tag = format!("{:04x}", pid & 0xffff);
        // A /24 no interface of this host uses yet (another run's bridge, say).
        let used = Command::new("ip")
            .args(["-o", "addr", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .map_err(|e| format!("ip addr show: {e}"))?;
        let third = (0..200)
            .map(|i| 20 + (pid + i) % 200)
            .find(|x| !used.contains(&format!(" 10.231.{x}.")))
            .ok_or("no free 10.231.X.0/24 for the nodes")?;
        let net = Net {
            bridge: format!("cnb{tag}"),
            prefix: format!("10.231.{third}"),
            tag,
            made: BTreeSet::new(),
            cut: BTreeSet::new(),
        };
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}.254/24", net.prefix),
            "dev",
            &net.bridge,
        ])?;
        Ok(net)
    }

    fn ns(&self, id: u64) -> String {
        format!("cn{}-{id}", self.tag)
    }

    fn addr(&self, id: u64) -> String {
        format!("{}.{id}", self.prefix)
    }

    /// Makes node `id`'s namespace (once) and returns where the node runs.
    pub fn host(&mut self, id: u64) -> Result<Host, String> {
        let ns = self.ns(id);
        if !self.made.contains(&id) {
            let veth = format!("cv{}-{id}", self.tag);
            ip(&["netns", "add", &ns])?;
            self.made.insert(id);
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &veth, "master", &self.bridge, "up"])?;
            let a = format!("{}/24", self.addr(id));
            ip(&["-n", &ns, "addr", "add", &a, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(Host {
            ip: self.addr(id),
            port: PORT,
            wrap: vec!["ip".into(), "netns".into(), "exec".into(), ns],
        })
    }

    /// Drops every packet node `from` sends to node `to`.
    pub fn cut(&mut self, from: u64, to: u64) -> Result<(), String> {
        if from == to || self.cut.contains(&(from, to)) {
            return Ok(());
        }
        let dst = format!("{}/32", self.addr(to));
        ip(&["-n", &self.ns(from), "route", "add", "blackhole", &dst])?;
        self.cut.insert((from, to));
        Ok(())
    }

    /// The links cut now.
    pub fn cuts(&self) -> Vec<(u64, u64)> {
        self.cut.iter().copied().collect()
    }

    /// Restores every link.
    pub fn heal(&mut self) -> Result<(), String> {
        let mut first_err = None;
        for (from, to) in std::mem::take(&mut self.cut) {
            let dst = format!("{}/32", self.addr(to));
            if let Err(e) = ip(&["-n", &self.ns(from), "route", "del", "blackhole", &dst]) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for id in std::mem::take(&mut self.made) {
            let _ = ip(&["netns", "del", &self.ns(id)]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// Which links a partition cuts, as (from, to) pairs of node ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A minority (one node up to less than half) cut off both ways from the rest.
    Isolate,
    /// The nodes split in two halves (the smaller one a minority), cut both ways.
    Halves,
    /// Two sides that cannot talk, and one node that talks to both (Jepsen's "bridge").
    Bridge,
    /// Packets from a group to the others are dropped; the other direction still flows.
    OneWay,
}

impl Shape {
    pub const ALL: [Shape; 4] = [Shape::Isolate, Shape::Halves, Shape::Bridge, Shape::OneWay];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Isolate => "isolate",
            Shape::Halves => "halves",
            Shape::Bridge => "bridge",
            Shape::OneWay => "one-way",
        }
    }

    /// The links to cut among `ids` (already shuffled: the shape takes groups from the
    /// front), as `(from, to)` pairs, plus the groups for the history.
    pub fn links(self, ids: &[u64], k: usize) -> (Vec<(u64, u64)>, Vec<Vec<u64>>) {
        let n = ids.len();
        let both = |a: &[u64], b: &[u64]| {
            let mut v = Vec::new();
            for &x in a {
                for &y in b {
                    v.push((x, y));
                    v.push((y, x));
                }
            }
            v
        };
        match self {
            Shape::Isolate | Shape::Halves => {
                let k = if self == Shape::Halves {
                    n / 2
                } else {
                    k.clamp(1, ((n - 1) / 2).max(1))
                };
                let (a, b) = ids.split_at(k.min(n));
                (both(a, b), vec![a.to_vec(), b.to_vec()])
            }
            Shape::Bridge => {
                if n < 3 {
                    return (Vec::new(), vec![ids.to_vec()]);
                }
                let (mid, rest) = ids.split_at(1);
                let (a, b) = rest.split_at(rest.len() / 2);
                (both(a, b), vec![a.to_vec(), mid.to_vec(), b.to_vec()])
            }
            Shape::OneWay => {
                let k = k.clamp(1, (n / 2).max(1));
                let (a, b) = ids.split_at(k.min(n));
                let mut v = Vec::new();
                for &x in a {
                    for &y in b {
                        v.push((x, y));
                    }
                }
                (v, vec![a.to_vec(), b.to_vec()])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bridge_cuts_the_sides_and_spares_the_middle() {
        let (links, groups) = Shape::Bridge.links(&[3, 1, 2, 4, 5], 0);
        assert_eq!(groups, vec![vec![1, 2], vec![3], vec![4, 5]]);
        assert!(links.iter().all(|&(a, b)| a != 3 && b != 3));
        assert!(links.contains(&(1, 4)) && links.contains(&(4, 1)));
        assert_eq!(links.len(), 8);
    }

    #[test]
    fn one_way_cuts_one_direction_only() {
        let (links, _) = Shape::OneWay.links(&[2, 1, 3], 1);
        assert_eq!(links, vec![(2, 1), (2, 3)]);
    }

    #[test]
    fn isolate_keeps_a_majority_together() {
        for k in 0..6 {
            let (links, groups) = Shape::Isolate.links(&[1, 2, 3, 4, 5], k);
            assert!(groups[0].len() <= 2 && !groups[0].is_empty(), "{groups:?}");
            assert!(links
                .iter()
                .all(|&(a, b)| groups[0].contains(&a) != groups[0].contains(&b)));
        }
        let (_, groups) = Shape::Halves.links(&[1, 2, 3, 4, 5], 0);
        assert_eq!(groups, vec![vec![1, 2], vec![3, 4, 5]]);
    }
}
