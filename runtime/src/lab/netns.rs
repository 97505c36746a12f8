//! A network of Linux network namespaces for fault tests: one namespace per node, each joined
//! to a bridge in the caller's namespace by a veth pair, so partitions are real (a node's link
//! is taken down and its packets go nowhere) and the caller still reaches every node.
//!
//! Needs root (or `CAP_NET_ADMIN`) and `ip` from iproute2; [`NetLab::create`] says which is
//! missing instead of half-building anything. Packet loss ([`NetLab::set_loss`]) needs
//! `iptables` too (the kernel here has no `netem`; the `statistic` match drops at random). Addresses are `10.77.<subnet>.<i>` inside the
//! lab, `.254` on the bridge. Dropping the lab deletes its namespaces and the bridge.

use std::process::Command;

/// Why a lab could not be built or changed.
#[derive(Debug, thiserror::Error)]
pub enum NetLabError {
    /// `ip` failed (not root, no iproute2, no netns support).
    #[error("`ip {args}` failed: {message}")]
    Ip {
        /// The arguments.
        args: String,
        /// What it said.
        message: String,
    },
}

/// The `iptables` that [`NetLab::set_loss`] runs: `iptables-legacy` where it exists, else
/// `iptables`; `None` when neither is installed (packet loss cannot be made here).
pub fn iptables() -> Option<&'static str> {
    ["iptables-legacy", "iptables"]
        .into_iter()
        .find(|bin| Command::new(bin).arg("--version").output().is_ok())
}

/// A node's place in the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetHost {
    /// The namespace the node runs in (`ip netns exec NAME ...`).
    pub netns: String,
    /// The node's address inside the lab.
    pub ip: String,
    /// The bridge-side end of its veth pair: down = the node is cut off.
    link: String,
}

/// Namespaces on a bridge; see the module docs.
#[derive(Debug)]
pub struct NetLab {
    bridge: String,
    /// The hosts, node 1 first.
    pub hosts: Vec<NetHost>,
}

fn ip(args: &[&str]) -> Result<(), NetLabError> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<(), NetLabError> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| NetLabError::Ip {
            args: args.join(" "),
            message: e.to_string(),
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NetLabError::Ip {
            args: args.join(" "),
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

impl NetLab {
    /// Builds `n` namespaces on subnet `10.77.<subnet>.0/24`, named after `tag` (at most 6
    /// characters, unique among labs alive at once: interface names are limited to 15).
    pub fn create(tag: &str, subnet: u8, n: usize) -> Result<NetLab, NetLabError> {
        let bridge = format!("{tag}br");
        // A lab left behind by a killed run: its names would collide.
        let mut lab = NetLab {
            bridge: bridge.clone(),
            hosts: (1..=n)
                .map(|i| NetHost {
                    netns: format!("{tag}ns{i}"),
                    ip: format!("10.77.{subnet}.{i}"),
                    link: format!("{tag}v{i}"),
                })
                .collect(),
        };
        lab.remove();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("10.77.{subnet}.254/24"),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for host in &mut lab.hosts {
            let inner = format!("{}p", host.link);
            ip(&["netns", "add", &host.netns])?;
            ip(&[
                "link", "add", &host.link, "type", "veth", "peer", "name", &inner,
            ])?;
            ip(&["link", "set", &inner, "netns", &host.netns])?;
            ip(&["link", "set", &host.link, "master", &bridge])?;
            ip(&["link", "set", &host.link, "up"])?;
            let ns = host.netns.clone();
            let in_ns = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &ns, "ip"];
                all.extend_from_slice(args);
                ip(&all)
            };
            in_ns(&["addr", "add", &format!("{}/24", host.ip), "dev", &inner])?;
            in_ns(&["link", "set", &inner, "up"])?;
            in_ns(&["link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    fn host(&self, id: usize) -> Result<&NetHost, NetLabError> {
        self.hosts
            .get(id.wrapping_sub(1))
            .ok_or_else(|| NetLabError::Ip {
                args: format!("link of node {id}"),
                message: "no such node".into(),
            })
    }

    /// Cuts node `id` (1-based) off the lab, or reconnects it.
    pub fn set_connected(&self, id: usize, connected: bool) -> Result<(), NetLabError> {
        let state = if connected { "up" } else { "down" };
        ip(&["link", "set", &self.host(id)?.link, state])
    }

    /// Makes node `id` (1-based) lose `percent` of the packets it sends and of those it
    /// receives, at random (`0` ends the loss), with `iptables` in its namespace.
    pub fn set_loss(&self, id: usize, percent: u8) -> Result<(), NetLabError> {
        let netns = &self.host(id)?.netns;
        // Without one, `ip netns exec iptables` fails and says so.
        let iptables = iptables().unwrap_or("iptables");
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", netns, iptables];
            all.extend_from_slice(args);
            ip(&all)
        };
        for chain in ["INPUT", "OUTPUT"] {
            in_ns(&["-F", chain])?;
        }
        if percent > 0 {
            let probability = format!("{:.2}", f64::from(percent.min(100)) / 100.0);
            for chain in ["INPUT", "OUTPUT"] {
                in_ns(&[
                    "-A",
                    chain,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &probability,
                    "-j",
                    "DROP",
                ])?;
            }
        }
        Ok(())
    }

    fn remove(&mut self) {
        for host in &self.hosts {
            let _ = ip(&["link", "del", &host.link]);
            let _ = ip(&["netns", "del", &host.netns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        self.remove();
    }
}
