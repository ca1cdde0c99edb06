//! `vrrp-lab`: run one Ballast VRRP instance from command-line flags, for
//! network-namespace labs (vrrp/tests/netns.rs) and manual interop checks
//! against keepalived. Not the product: the `ballast` binary embeds the
//! same driver.
//!
//! ```text
//! vrrp-lab --iface eth0 --vrid 51 --priority 150 --vip 198.18.0.100/24 \
//!          [--interval-ms 1000] [--no-preempt] [--preempt-delay-ms N] \
//!          [--peer ADDR]... [--checksum pseudo|message] [--vip-lifetime-s N] \
//!          [--garp-count N] [--garp-repeat-ms N] [--notify PROGRAM] \
//!          [--status-file PATH] [--penalty-file PATH] [--resume-master]
//! vrrp-lab --send-bad ttl64|checksum|version --vrid 51 --vip ADDR --src ADDR --dst ADDR
//! vrrp-lab --probe ADDR:PORT [--probe-ms 10] [--probe-log PATH] [--probe-duration-s 60]
//! ```
//!
//! SIGTERM or SIGINT stops gracefully (priority 0, VIPs removed). SIGUSR1
//! abandons the instance as the old process of a live upgrade does (nothing
//! sent, VIPs left; the status file gets `abandoned=<state>`), and
//! `--resume-master` starts one as the new process does when the old one was
//! master. With
//! `--status-file` the status and counters are written every 50 ms as
//! `key=value` lines (atomically, via rename). With `--penalty-file` the
//! file's number (0-255) is read every 50 ms as the priority penalty.

#[cfg(target_os = "linux")]
mod lab {
    use std::fmt::Write as _;
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::PathBuf;
    use std::time::Duration;

    use ballast_vrrp::driver::{
        send_raw_ipv4, GarpConfig, InstanceConfig, NotifyCommand, Resume, VirtualIp, VrrpHandle,
        VrrpInstance,
    };
    use ballast_vrrp::packet::{Advertisement, ChecksumMode, Ipv4Header};
    use tokio::signal::unix::{signal, SignalKind};
    use tokio::sync::watch;

    struct Args {
        cfg: InstanceConfig,
        status_file: Option<PathBuf>,
        penalty_file: Option<PathBuf>,
        send_bad: Option<String>,
        probe: Option<std::net::SocketAddr>,
        probe_ms: u64,
        probe_log: Option<PathBuf>,
        probe_duration_s: u64,
        src: Option<Ipv4Addr>,
        dst: Option<Ipv4Addr>,
    }

    fn parse() -> Result<Args, String> {
        let mut cfg = InstanceConfig::new("eth0", 51, 100, Vec::new());
        let mut a = Args {
            cfg: cfg.clone(),
            status_file: None,
            penalty_file: None,
            send_bad: None,
            probe: None,
            probe_ms: 10,
            probe_log: None,
            probe_duration_s: 60,
            src: None,
            dst: None,
        };
        let mut it = std::env::args().skip(1);
        let num = |v: Option<String>, f: &str| -> Result<u64, String> {
            v.ok_or(format!("{f} needs a value"))?
                .parse::<u64>()
                .map_err(|e| format!("{f}: {e}"))
        };
        while let Some(flag) = it.next() {
            match flag.as_str() {
                "--iface" => cfg.interface = it.next().ok_or("--iface needs a value")?,
                "--vrid" => {
                    cfg.vrid = u8::try_from(num(it.next(), "--vrid")?).map_err(|e| e.to_string())?
                }
                "--priority" => {
                    cfg.priority =
                        u8::try_from(num(it.next(), "--priority")?).map_err(|e| e.to_string())?
                }
                "--interval-ms" => {
                    cfg.advert_interval = Duration::from_millis(num(it.next(), "--interval-ms")?)
                }
                "--vip" => cfg.virtual_ips.push(
                    it.next()
                        .ok_or("--vip needs a value")?
                        .parse::<VirtualIp>()
                        .map_err(|e| e.to_string())?,
                ),
                "--no-preempt" => cfg.preempt = false,
                "--resume-master" => cfg.resume = Resume::master(),
                "--preempt-delay-ms" => {
                    cfg.preempt_delay = Duration::from_millis(num(it.next(), "--preempt-delay-ms")?)
                }
                "--peer" => cfg.unicast_peers.push(
                    it.next()
                        .ok_or("--peer needs a value")?
                        .parse::<IpAddr>()
                        .map_err(|e| e.to_string())?,
                ),
                "--checksum" => {
                    cfg.checksum_send = match it.next().as_deref() {
                        Some("pseudo") => ChecksumMode::PseudoHeader,
                        Some("message") => ChecksumMode::MessageOnly,
                        _ => return Err("--checksum pseudo|message".into()),
                    }
                }
                "--vip-lifetime-s" => {
                    cfg.vip_lifetime =
                        Some(Duration::from_secs(num(it.next(), "--vip-lifetime-s")?))
                }
                "--garp-count" => {
                    cfg.garp.count =
                        u32::try_from(num(it.next(), "--garp-count")?).map_err(|e| e.to_string())?
                }
                "--garp-repeat-ms" => {
                    let ms = num(it.next(), "--garp-repeat-ms")?;
                    cfg.garp = GarpConfig {
                        count: cfg.garp.count,
                        repeat_delay: (ms > 0).then(|| Duration::from_millis(ms)),
                    };
                }
                "--notify" => {
                    cfg.notify = Some(NotifyCommand {
                        program: it.next().ok_or("--notify needs a value")?.into(),
                        args: Vec::new(),
                    })
                }
                "--status-file" => {
                    a.status_file = Some(it.next().ok_or("--status-file needs a value")?.into())
                }
                "--penalty-file" => {
                    a.penalty_file = Some(it.next().ok_or("--penalty-file needs a value")?.into())
                }
                "--send-bad" => a.send_bad = Some(it.next().ok_or("--send-bad needs a value")?),
                "--probe" => {
                    a.probe = Some(
                        it.next()
                            .ok_or("--probe needs ADDR:PORT")?
                            .parse()
                            .map_err(|e| format!("--probe: {e}"))?,
                    )
                }
                "--probe-ms" => a.probe_ms = num(it.next(), "--probe-ms")?.max(1),
                "--probe-log" => {
                    a.probe_log = Some(it.next().ok_or("--probe-log needs a value")?.into())
                }
                "--probe-duration-s" => a.probe_duration_s = num(it.next(), "--probe-duration-s")?,
                "--src" => {
                    a.src = Some(
                        it.next()
                            .ok_or("--src needs a value")?
                            .parse()
                            .map_err(|e| format!("--src: {e}"))?,
                    )
                }
                "--dst" => {
                    a.dst = Some(
                        it.next()
                            .ok_or("--dst needs a value")?
                            .parse()
                            .map_err(|e| format!("--dst: {e}"))?,
                    )
                }
                other => return Err(format!("unknown flag {other}")),
            }
        }
        a.cfg = cfg;
        Ok(a)
    }

    /// Craft one deliberately broken advert and send it.
    fn send_bad(a: &Args, kind: &str) -> Result<(), String> {
        let src = a.src.ok_or("--send-bad needs --src")?;
        let dst = a.dst.ok_or("--send-bad needs --dst")?;
        let adv = Advertisement {
            vrid: a.cfg.vrid,
            priority: 254,
            max_advert_int_cs: 100,
            addrs: a.cfg.virtual_ips.iter().map(|v| v.addr).collect(),
        };
        let mut hdr = Ipv4Header::vrrp(src, dst);
        if kind == "ttl64" {
            hdr.ttl = 64;
        }
        let mut pkt = adv
            .encode_ipv4_packet(&hdr, ChecksumMode::PseudoHeader)
            .map_err(|e| e.to_string())?;
        match kind {
            "ttl64" => {}
            "checksum" => pkt[26] ^= 0x55,
            "version" => pkt[20] = 0x21,
            _ => return Err("--send-bad ttl64|checksum|version".into()),
        }
        send_raw_ipv4(&pkt, dst).map_err(|e| e.to_string())
    }

    /// Client-side reachability probe for takeover measurements: a TCP
    /// connect to `target` every `every_ms` (timeout `every_ms`); a refused
    /// connection counts as reached (the VIP holder's kernel answered).
    /// Appends `ok <unix-ns>` / `fail <unix-ns>` to `log` at each change.
    /// Bounded by `duration_s`.
    fn probe(
        target: std::net::SocketAddr,
        every_ms: u64,
        duration_s: u64,
        log: Option<&std::path::Path>,
    ) -> Result<(), String> {
        use std::io::Write as _;
        let every = Duration::from_millis(every_ms);
        let mut out: Box<dyn std::io::Write> = match log {
            Some(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| e.to_string())?,
            ),
            None => Box::new(std::io::stdout()),
        };
        let end = std::time::Instant::now() + Duration::from_secs(duration_s);
        let mut last: Option<bool> = None;
        while std::time::Instant::now() < end {
            let start = std::time::Instant::now();
            let ok = match std::net::TcpStream::connect_timeout(&target, every) {
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
            };
            if last != Some(ok) {
                let ns = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                writeln!(out, "{} {ns}", if ok { "ok" } else { "fail" })
                    .map_err(|e| e.to_string())?;
                out.flush().map_err(|e| e.to_string())?;
                last = Some(ok);
            }
            if let Some(rest) = every.checked_sub(start.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        Ok(())
    }

    fn status_text(h: &VrrpHandle) -> String {
        let s = h.status();
        let m = h.metrics();
        let mut out = String::new();
        let _ = writeln!(out, "state={}", s.state.as_str());
        let _ = writeln!(out, "priority={}", s.effective_priority);
        let _ = writeln!(
            out,
            "master={}",
            s.master_addr.map(|a| a.to_string()).unwrap_or_default()
        );
        let _ = writeln!(out, "transitions={}", s.transitions);
        if let Some(t) = s.last_transition {
            let _ = writeln!(out, "last_reason={}", t.reason.as_str());
        }
        let _ = writeln!(out, "adverts_sent={}", m.adverts_sent);
        let _ = writeln!(out, "adverts_received={}", m.adverts_received);
        let _ = writeln!(out, "garp_sent={}", m.garp_sent);
        let _ = writeln!(out, "vip_errors={}", m.vip_errors);
        for (r, n) in &m.drops {
            let _ = writeln!(out, "drop.{}={}", r.as_str(), n);
        }
        out
    }

    fn write_status(path: &PathBuf, text: &str) {
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }

    pub async fn main() -> Result<(), String> {
        let a = parse()?;
        if let Some(kind) = a.send_bad.clone() {
            return send_bad(&a, &kind);
        }
        if let Some(target) = a.probe {
            return probe(
                target,
                a.probe_ms,
                a.probe_duration_s,
                a.probe_log.as_deref(),
            );
        }
        let (penalty_tx, penalty_rx) = watch::channel(0u8);
        let h = VrrpInstance::spawn(a.cfg.clone(), penalty_rx).map_err(|e| e.to_string())?;
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let mut usr1 = signal(SignalKind::user_defined1()).map_err(|e| e.to_string())?;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let abandon = loop {
            tokio::select! {
                _ = term.recv() => break false,
                _ = int.recv() => break false,
                _ = usr1.recv() => break true,
                _ = tick.tick() => {
                    if let Some(p) = &a.status_file {
                        write_status(p, &status_text(&h));
                    }
                    if let Some(p) = &a.penalty_file {
                        if let Ok(s) = std::fs::read_to_string(p) {
                            if let Ok(v) = s.trim().parse::<u8>() {
                                penalty_tx.send_if_modified(|old| {
                                    let changed = *old != v;
                                    *old = v;
                                    changed
                                });
                            }
                        }
                    }
                }
            }
        };
        let status_file = a.status_file.clone();
        let last = status_text(&h);
        if abandon {
            let gone = h.abandon().await.map_err(|e| e.to_string())?;
            if let Some(p) = status_file {
                write_status(&p, &format!("{last}abandoned={}\n", gone.state.as_str()));
            }
            return Ok(());
        }
        h.shutdown().await.map_err(|e| e.to_string())?;
        if let Some(p) = status_file {
            write_status(
                &p,
                &last
                    .replace("state=master", "state=initialize")
                    .replace("state=backup", "state=initialize"),
            );
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
#[tokio::main(flavor = "current_thread")]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = lab::main().await {
        eprintln!("vrrp-lab: {e}");
        std::process::exit(2);
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("vrrp-lab runs on Linux only");
    std::process::exit(2);
}
