//! Real networks for tests: private network namespaces, made and torn down
//! by the test, with `p2pchat` peers running inside them.
//!
//! A [`Net`] is a hub namespace holding a bridge, and one namespace per
//! host, each linked to the hub by a veth pair: public hosts have
//! 10.77.0.N/24 and fd77::N/64 on their `eth0`; a host behind a NAT has
//! 10.78.K.2/24 and a router namespace of its own between it and the hub
//! (nftables MASQUERADE on the way out; inbound SYNs dropped, as home
//! routers do). Every address exists only inside these namespaces; the
//! host machine's interfaces and firewall are never touched.
//!
//! The NAT is a Linux home router's: conntrack lets in only what answers
//! a connection from inside (so a SYN coming in is dropped, unless it
//! matches one that went out: TCP simultaneous open gets through), and
//! MASQUERADE keeps the source port where it is free, so the port a peer
//! listens on is the port it has outside. [`Net::symmetric_nat_host`]
//! maps every connection to a new random port instead (a symmetric NAT,
//! as some carrier-grade and corporate NATs are): there hole punching
//! cannot work.
//!
//! What a test can do to the network:
//!
//! - [`Net::vanish`]: detach a host from the bridge. Every packet to and
//!   from it is dropped and nothing is closed: its interface stays up,
//!   nobody gets a reset or an ICMP error (Wi-Fi gone, a laptop's lid
//!   shut). [`Net::restore`] puts it back.
//! - [`Net::partition`]: move some hosts to a second bridge; the two
//!   groups hear nothing from each other, each still one LAN.
//!   [`Net::heal`] joins them again.
//! - [`Net::link_down`]: take the host's own interface down (the host
//!   knows; its routes go), [`Net::link_up`] back.
//!
//! Names carry the test process's pid and a counter
//! (`p2pt-PID-N-ROLE`), so parallel tests and runs never collide;
//! namespaces left by a run that died (its pid gone) are removed by the
//! next run. Everything is torn down in `Drop`, also when a test panics:
//! the processes still inside are killed by PID, then the namespaces
//! deleted (which deletes their interfaces).
//!
//! Namespaces need root and `ip` (iproute2); NAT needs `nft` (nftables).
//! Where they are missing a test prints why and returns early, unless
//! `P2PCHAT_NETNS=require` (CI) turns that into a failure.

use super::{Peer, Stream};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Set to `require` to fail, not skip, where namespaces cannot be made.
pub const REQUIRE_VAR: &str = "P2PCHAT_NETNS";

const PREFIX: &str = "p2pt";

/// A private network of namespaces; see the module docs.
pub struct Net {
    base: String,
    hub: String,
    hosts: Vec<Host>,
    /// Namespaces to delete on drop: routers and hosts, the hub last.
    owned: Vec<String>,
    /// Ports made on the hub bridge so far.
    ports: usize,
    nats: usize,
    /// The network secret peers started from now on share, if any.
    secret: Option<String>,
    /// Delay lines between hosts ([`Net::slow_pair`]): stopped first.
    lines: Vec<super::delay::Line>,
}

struct Host {
    ns: String,
    v4: Ipv4Addr,
    v6: Option<Ipv6Addr>,
    /// Its port on the hub (its router's, behind a NAT).
    port: String,
    /// Behind a NAT: the default route to put back after `link_up`.
    gateway: Option<Ipv4Addr>,
}

/// Runs `prog args`, feeding it `input`; panics with its stderr if it
/// fails.
fn run(prog: &str, args: &[&str], input: Option<&str>) -> String {
    match try_run(prog, args, input) {
        Ok(out) => out,
        Err(e) => panic!("netns: {prog} {}: {e}", args.join(" ")),
    }
}

fn try_run(prog: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(prog)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run: {e}"))?;
    if let Some(text) = input {
        let mut w = child.stdin.take().expect("piped");
        w.write_all(text.as_bytes())
            .map_err(|e| format!("stdin: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) {
    run("ip", args, None);
}

/// Whether namespaces can be made here; the reason if not. Checked once
/// per test process, which also removes namespaces that dead runs left.
fn available() -> &'static Result<(), String> {
    static OK: OnceLock<Result<(), String>> = OnceLock::new();
    OK.get_or_init(|| {
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root".into());
        }
        try_run("ip", &["-V"], None).map_err(|e| format!("no ip (iproute2): {e}"))?;
        sweep();
        let probe = format!("{PREFIX}-{}-probe", std::process::id());
        try_run("ip", &["netns", "add", &probe], None)
            .map_err(|e| format!("cannot make a network namespace: {e}"))?;
        let r = try_run(
            "ip",
            &[
                "-n", &probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1",
            ],
            None,
        )
        .map(|_| ())
        .map_err(|e| format!("cannot make a veth pair: {e}"));
        let _ = try_run("ip", &["netns", "del", &probe], None);
        r
    })
}

/// Whether nftables works in a namespace here (for NAT).
fn nft_available() -> &'static Result<(), String> {
    static OK: OnceLock<Result<(), String>> = OnceLock::new();
    OK.get_or_init(|| {
        try_run("nft", &["--version"], None).map_err(|e| format!("no nft (nftables): {e}"))?;
        Ok(())
    })
}

/// Prints why a test is skipped and returns, or fails where required.
fn skip(why: &str) {
    if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "require") {
        panic!("netns: {why} ({REQUIRE_VAR}=require)");
    }
    eprintln!("netns: test skipped: {why}");
}

/// Deletes namespaces named by this harness whose test process is gone,
/// killing what still runs in them.
fn sweep() {
    let Ok(list) = try_run("ip", &["netns", "list"], None) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
        if !alive {
            kill_all_in(name);
            let _ = try_run("ip", &["netns", "del", name], None);
        }
    }
}

/// SIGKILLs every process in namespace `ns`, by PID.
fn kill_all_in(ns: &str) {
    let Ok(pids) = try_run("ip", &["netns", "pids", ns], None) else {
        return;
    };
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

impl Net {
    /// A hub with its bridges and no hosts yet; None (after saying why)
    /// where namespaces cannot be made: the test then returns.
    pub fn new() -> Option<Net> {
        if let Err(why) = available() {
            skip(why);
            return None;
        }
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let base = format!(
            "{PREFIX}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let hub = format!("{base}-hub");
        ip(&["netns", "add", &hub]);
        let net = Net {
            base,
            hub: hub.clone(),
            hosts: Vec::new(),
            owned: vec![hub.clone()],
            ports: 0,
            nats: 0,
            secret: None,
            lines: Vec::new(),
        };
        // The hub only bridges: no addresses of its own, IPv6 included,
        // so that a detached port leads nowhere.
        net.sysctl(&hub, "net.ipv6.conf.all.disable_ipv6", "1");
        net.sysctl(&hub, "net.ipv6.conf.default.disable_ipv6", "1");
        // No multicast snooping: the bridges flood multicast to every
        // port, as a plain LAN switch does, whatever IGMP and MLD reports
        // they did or did not see (LAN discovery multicasts).
        for br in ["br0", "br1"] {
            ip(&[
                "-n",
                &hub,
                "link",
                "add",
                br,
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ]);
            ip(&["-n", &hub, "link", "set", br, "up"]);
        }
        Some(net)
    }

    /// Writes a sysctl inside namespace `ns`.
    fn sysctl(&self, ns: &str, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sh",
                "-c",
                &format!("echo {value} > {path}"),
            ],
            None,
        );
    }

    fn new_ns(&mut self, role: &str) -> String {
        let ns = format!("{}-{role}", self.base);
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        // Owned namespaces are deleted before the hub.
        self.owned.insert(0, ns.clone());
        ns
    }

    /// Links `ns`'s new interface `ifname` to a new port on the hub's
    /// bridge; returns the port's name and number.
    fn plug(&mut self, ns: &str, ifname: &str) -> (String, usize) {
        let n = self.ports;
        self.ports += 1;
        let port = format!("p{n}");
        ip(&[
            "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", &port, "netns",
            &self.hub,
        ]);
        ip(&["-n", &self.hub, "link", "set", &port, "master", "br0", "up"]);
        (port, n)
    }

    /// A public host on the hub's LAN: 10.77.0.N and fd77::N. Returns its
    /// index.
    pub fn host(&mut self) -> usize {
        let i = self.hosts.len();
        let ns = self.new_ns(&format!("h{i}"));
        let (port, n) = self.plug(&ns, "eth0");
        let v4 = Ipv4Addr::new(10, 77, 0, n as u8 + 1);
        let v6 = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, n as u16 + 1);
        ip(&["-n", &ns, "addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
        // nodad: usable at once, not after duplicate address detection.
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        self.hosts.push(Host {
            ns,
            v4,
            v6: Some(v6),
            port,
            gateway: None,
        });
        i
    }

    /// Two hosts off the LAN whose only link is a slow path: a line that
    /// delays every packet by `one_way` each way (see
    /// [`super::delay`]), 10.79.K.1 and 10.79.K.2 at its ends (IPv4
    /// only). Returns their indexes.
    pub fn slow_pair(&mut self, one_way: Duration) -> (usize, usize) {
        let k = self.lines.len();
        let mut ends = [0; 2];
        let addrs = [
            Ipv4Addr::new(10, 79, k as u8, 1),
            Ipv4Addr::new(10, 79, k as u8, 2),
        ];
        for (i, v4) in addrs.into_iter().enumerate() {
            ends[i] = self.hosts.len();
            let ns = self.new_ns(&format!("s{k}{i}"));
            self.hosts.push(Host {
                ns,
                v4,
                v6: None,
                port: String::new(),
                gateway: None,
            });
        }
        let line = super::delay::Line::new(
            &self.hosts[ends[0]].ns,
            &addrs[0].to_string(),
            &self.hosts[ends[1]].ns,
            &addrs[1].to_string(),
            one_way,
        );
        self.lines.push(line);
        (ends[0], ends[1])
    }

    /// A host behind a NAT router of its own (IPv4 only): 10.78.K.2
    /// inside, the router's 10.77.0.N outside. The router masquerades
    /// what goes out and drops connections coming in, so nobody can dial
    /// the host. None (after saying why) without nftables.
    pub fn nat_host(&mut self) -> Option<usize> {
        self.nat_host_with("masquerade")
    }

    /// As [`Net::nat_host`], behind a symmetric NAT: each connection out
    /// gets a random port (`masquerade random`), whatever port it came
    /// from.
    pub fn symmetric_nat_host(&mut self) -> Option<usize> {
        self.nat_host_with("masquerade random")
    }

    fn nat_host_with(&mut self, masquerade: &str) -> Option<usize> {
        if let Err(why) = nft_available() {
            skip(why);
            return None;
        }
        let i = self.hosts.len();
        let k = self.nats;
        self.nats += 1;
        let router = self.new_ns(&format!("nat{i}"));
        let (port, n) = self.plug(&router, "wan");
        let public = Ipv4Addr::new(10, 77, 0, n as u8 + 1);
        let inside = Ipv4Addr::new(10, 78, k as u8, 2);
        let gateway = Ipv4Addr::new(10, 78, k as u8, 1);
        ip(&[
            "-n",
            &router,
            "addr",
            "add",
            &format!("{public}/24"),
            "dev",
            "wan",
        ]);
        ip(&["-n", &router, "link", "set", "wan", "up"]);
        let ns = self.new_ns(&format!("h{i}"));
        ip(&[
            "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", "lan", "netns",
            &router,
        ]);
        ip(&[
            "-n",
            &router,
            "addr",
            "add",
            &format!("{gateway}/24"),
            "dev",
            "lan",
        ]);
        ip(&["-n", &router, "link", "set", "lan", "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{inside}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &gateway.to_string(),
        ]);
        self.sysctl(&router, "net.ipv4.ip_forward", "1");
        let rules = r#"
table inet nat {
    chain postrouting {
        type nat hook postrouting priority srcnat;
        oifname "wan" MASQUERADE
    }
}
table inet filter {
    chain forward {
        type filter hook forward priority filter;
        iifname "wan" ct state new drop
    }
    chain input {
        type filter hook input priority filter;
        iifname "wan" tcp flags & (syn | ack) == syn drop
    }
}
"#;
        let rules = rules.replace("MASQUERADE", masquerade);
        run(
            "ip",
            &["netns", "exec", &router, "nft", "-f", "-"],
            Some(&rules),
        );
        self.hosts.push(Host {
            ns,
            v4: inside,
            v6: None,
            port,
            gateway: Some(gateway),
        });
        Some(i)
    }

    /// The namespace of host `h`.
    pub fn ns(&self, h: usize) -> &str {
        &self.hosts[h].ns
    }

    /// Host `h`'s IPv4 address (inside its NAT, for a NATed host).
    pub fn addr(&self, h: usize) -> IpAddr {
        self.hosts[h].v4.into()
    }

    /// Host `h`'s IPv6 address (public hosts only).
    pub fn addr6(&self, h: usize) -> IpAddr {
        self.hosts[h].v6.expect("a NATed host has no IPv6").into()
    }

    /// Starts `p2pchat --plain OPTS NAME [VIA]` in host `h`'s namespace,
    /// with the default listen address (no `-b` unless `opts` has one);
    /// waits for its listening line.
    pub fn peer(&self, h: usize, name: &str, opts: &[&str], via: Option<SocketAddr>) -> Peer {
        self.peer_env(h, name, opts, via, &[])
    }

    /// [`Net::peer`] with `env` added to the environment (such as
    /// `P2PCHAT_SECRET`).
    pub fn peer_env(
        &self,
        h: usize,
        name: &str,
        opts: &[&str],
        via: Option<SocketAddr>,
        env: &[(&str, &str)],
    ) -> Peer {
        let mut args: Vec<String> = vec!["--plain".into()];
        args.extend(opts.iter().map(|s| s.to_string()));
        args.push(name.into());
        if let Some(v) = via {
            args.extend([v.ip().to_string(), v.port().to_string()]);
        }
        let prefix = ["ip", "netns", "exec", &self.hosts[h].ns];
        // The net's secret, unless `env` gives one.
        let mut all: Vec<(&str, &str)> = self
            .secret
            .iter()
            .map(|s| ("P2PCHAT_SECRET", s.as_str()))
            .collect();
        all.extend_from_slice(env);
        let mut p = Peer::spawn_full(name, &prefix, &args, Stdio::piped(), &all);
        p.wait_listening();
        p
    }

    /// Peers started from now on share the network secret `secret`.
    pub fn secret(&mut self, secret: &str) {
        self.secret = Some(secret.into());
    }

    /// One peer per name, each on a new public host, joined through the
    /// first over IPv4; waits until each has joined and every earlier one
    /// has seen it join.
    pub fn network(&mut self, names: &[&str]) -> Vec<Peer> {
        let mut peers: Vec<Peer> = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let h = self.host();
            let via = (i > 0).then(|| SocketAddr::new(self.addr(0), peers[0].port()));
            let mut p = self.peer(h, name, &[], via);
            if let Some(v) = via {
                p.expect_line(&joined(v, i + 1));
                for earlier in peers.iter_mut() {
                    earlier.expect_line(&format!("* {name} joined"));
                }
            }
            peers.push(p);
        }
        peers
    }

    /// Every packet to and from host `h` is dropped from now on, and
    /// nothing closed: its port leaves the bridge, its own link stays up.
    pub fn vanish(&self, h: usize) {
        ip(&[
            "-n",
            &self.hub,
            "link",
            "set",
            &self.hosts[h].port,
            "nomaster",
        ]);
    }

    /// Host `h` is back on the LAN.
    pub fn restore(&self, h: usize) {
        ip(&[
            "-n",
            &self.hub,
            "link",
            "set",
            &self.hosts[h].port,
            "master",
            "br0",
        ]);
    }

    /// Hosts `apart` go to a LAN of their own: from now on they and the
    /// rest hear nothing from each other (packets dropped, nothing
    /// closed).
    pub fn partition(&self, apart: &[usize]) {
        for &h in apart {
            ip(&[
                "-n",
                &self.hub,
                "link",
                "set",
                &self.hosts[h].port,
                "master",
                "br1",
            ]);
        }
    }

    /// One LAN again: every host that is not vanished back on the main
    /// bridge.
    pub fn heal(&self) {
        let on_br1 = run(
            "ip",
            &["-n", &self.hub, "-o", "link", "show", "master", "br1"],
            None,
        );
        for h in &self.hosts {
            if on_br1.contains(&format!(" {}@", h.port)) {
                ip(&["-n", &self.hub, "link", "set", &h.port, "master", "br0"]);
            }
        }
    }

    /// Takes host `h`'s own interface down: it knows, and loses its
    /// routes.
    pub fn link_down(&self, h: usize) {
        ip(&["-n", &self.hosts[h].ns, "link", "set", "eth0", "down"]);
    }

    /// Host `h`'s interface up again, with its routes.
    pub fn link_up(&self, h: usize) {
        let host = &self.hosts[h];
        ip(&["-n", &host.ns, "link", "set", "eth0", "up"]);
        if let Some(gw) = host.gateway {
            ip(&[
                "-n",
                &host.ns,
                "route",
                "replace",
                "default",
                "via",
                &gw.to_string(),
            ]);
        }
    }

    /// Runs `prog args` inside host `h`'s namespace; returns its stdout.
    pub fn exec(&self, h: usize, prog: &str, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &self.hosts[h].ns, prog];
        all.extend_from_slice(args);
        run("ip", &all, None)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // The lines' devices go with their descriptors, before the
        // namespaces they are in.
        self.lines.clear();
        for ns in &self.owned {
            kill_all_in(ns);
            let _ = try_run("ip", &["netns", "del", ns], None);
        }
    }
}

/// The line a peer prints when it has joined through `via`.
pub fn joined(via: SocketAddr, members: usize) -> String {
    format!("* joined through {via} ({members} members)")
}

/// Waits until `p`'s `:who` lists `n` members with a direct link (the
/// network has settled into its mesh), up to `within`.
pub fn wait_direct(p: &mut Peer, members: usize, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        p.send(":who");
        let rows = p.expect_block(&format!("* {members} members:"), members);
        let direct = rows.iter().filter(|r| r.ends_with(" direct")).count();
        if direct >= n {
            return;
        }
        if Instant::now() >= deadline {
            let name = p.name.clone();
            p.fail(&format!(
                "{name} has {direct} direct links after {within:?}, expected {n}: {rows:?}"
            ));
        }
        // Ask again once the core has had time to dial.
        std::thread::sleep(POLL);
    }
}

/// How often [`wait_direct`] asks again.
const POLL: Duration = Duration::from_millis(200);

/// Waits up to `within` for `p` to print `line`; returns how long after
/// `since` it was read.
pub fn time_to(p: &mut Peer, line: &str, since: Instant, within: Duration) -> Duration {
    let left = (since + within).saturating_duration_since(Instant::now());
    p.expect_on(Stream::Out, &format!("line {line:?}"), &|l| l == line, left);
    p.seen_at(line)
        .expect("just read")
        .saturating_duration_since(since)
}
