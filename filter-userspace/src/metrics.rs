//! `GET /metrics`: Prometheus text format (version 0.0.4, what `promtool check metrics`
//! checks). The kernel's counters are read at scrape time: the maps are the truth, so a
//! daemon restart never resets a counter, and nothing is counted twice.
//!
//! The `prometheus` crate is used rather than `prometheus-client`: the latter writes
//! OpenMetrics, whose counter families (`x` with samples `x_total`) promtool's Prometheus
//! format check rejects.

use filter_common::{Reason, synguard_bits, synguard_stat};
use prometheus::{
    Encoder, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder, core::Collector,
};

use crate::{
    error::Result,
    lists::{ListKind, MapKind},
    state::State,
};

/// Counters the daemon itself keeps (the rest are read from the kernel at scrape time).
#[derive(Clone)]
pub struct DaemonMetrics {
    /// API requests by route and status code.
    pub api_requests: IntCounterVec,
    /// Configuration reloads by result (applied, rejected).
    pub reloads: IntCounterVec,
    /// 1 while an attack of that reason is on (see the attack-event log).
    pub attack_active: IntGaugeVec,
    /// Open API connections (what `daemon.max_connections` is compared with).
    pub api_connections: IntGauge,
    /// `[daemon.top]`: estimated packets per second of the top source nets and destination
    /// ports in the last sample window.
    pub top_source_nets: prometheus::GaugeVec,
    pub top_dst_ports: prometheus::GaugeVec,
}

impl Default for DaemonMetrics {
    fn default() -> Self {
        DaemonMetrics {
            api_requests: IntCounterVec::new(
                Opts::new(
                    "floodgate_api_requests_total",
                    "HTTP API requests by route and status code.",
                ),
                &["route", "code"],
            )
            .expect("valid metric"),
            reloads: IntCounterVec::new(
                Opts::new(
                    "floodgate_config_reloads_total",
                    "Configuration reloads (SIGHUP or a changed file) by result.",
                ),
                &["result"],
            )
            .expect("valid metric"),
            attack_active: IntGaugeVec::new(
                Opts::new(
                    "floodgate_attack_active",
                    "1 while the drop rate of this reason is over its attack threshold.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            api_connections: IntGauge::new(
                "floodgate_api_connections",
                "Open HTTP API connections (over daemon.max_connections, new ones are shed).",
            )
            .expect("valid metric"),
            top_source_nets: prometheus::GaugeVec::new(
                Opts::new(
                    "floodgate_top_source_net_pps",
                    "[daemon.top]: estimated packets per second of the top source nets \
                     (IPv4 /24, IPv6 /48) in the last sample window.",
                ),
                &["net"],
            )
            .expect("valid metric"),
            top_dst_ports: prometheus::GaugeVec::new(
                Opts::new(
                    "floodgate_top_dst_port_pps",
                    "[daemon.top]: estimated packets per second of the top destination ports \
                     in the last sample window.",
                ),
                &["port"],
            )
            .expect("valid metric"),
        }
    }
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

/// Help of `floodgate_synguard_<name>_total`, in `synguard_stat` slot order.
const SYNGUARD_HELP: [&str; synguard_stat::COUNT as usize] = [
    "SYN guard: ACKs to a protected port with a valid cookie (passed on to the kernel).",
    "SYN guard: ACKs to a protected port with no connection and a bad cookie (dropped, reason \
     bad_cookie).",
    "SYN guard: ACKs to a protected port of an existing connection (passed untouched).",
    "SYN guard: handshakes with a valid cookie handed to the listener.",
    "SYN guard: valid cookies the kernel refused to turn into a connection.",
];

/// The SYN guard's families: SYN-ACKs sent (the `syn_cookie` reason), its own counters, and
/// whether it is on.
fn synguard_families(state: &State, syn_acks: u64) -> Result<Vec<Box<dyn Collector>>> {
    let mut out: Vec<Box<dyn Collector>> = Vec::new();
    let sent = IntCounter::new(
        "floodgate_synguard_syn_acks_total",
        "SYN guard: SYNs answered by the data plane with a SYN-ACK cookie (reason syn_cookie).",
    )
    .expect("valid metric");
    sent.inc_by(syn_acks);
    out.push(Box::new(sent));
    for ((name, value), help) in state.stats.synguard()?.into_iter().zip(SYNGUARD_HELP) {
        let c = IntCounter::new(format!("floodgate_synguard_{name}_total"), help)
            .expect("valid metric");
        c.inc_by(value);
        out.push(Box::new(c));
    }
    let enabled = IntGauge::new(
        "floodgate_synguard_enabled",
        "1 while the SYN guard is on (floodgate synguard on, [synguard] enabled).",
    )
    .expect("valid metric");
    let on = state.defences.kernel_config()?.synguard & synguard_bits::ON != 0;
    enabled.set(i64::from(on));
    out.push(Box::new(enabled));
    Ok(out)
}

/// One scrape: every family filled from the kernel's maps, then encoded.
pub fn render(
    state: &State,
    daemon: &DaemonMetrics,
    auto: &crate::auto::run::AutoMetrics,
) -> Result<String> {
    let registry = Registry::new();
    let packets = counter(
        "floodgate_packets_total",
        "Packets seen by the XDP program, by verdict reason and action (pass, drop, tx: answered \
         from the data plane, or dry_run: a drop or tx reason matched but dry-run let the packet \
         pass).",
        &["reason", "action"],
    );
    let bytes = counter(
        "floodgate_bytes_total",
        "Bytes (whole frames) seen by the XDP program, by verdict reason and action.",
        &["reason", "action"],
    );
    let snap = state.stats.snapshot()?;
    for (i, (reason, c)) in snap.iter().enumerate() {
        let action = if i >= filter_common::REASON_COUNT {
            if reason.action() == filter_common::Action::Pass {
                continue;
            }
            "dry_run"
        } else {
            reason.action().name()
        };
        packets
            .with_label_values(&[reason.name(), action])
            .inc_by(c.packets);
        bytes
            .with_label_values(&[reason.name(), action])
            .inc_by(c.bytes);
    }

    let sources = state.lists.sources.all()?;
    let drops = counter(
        "floodgate_source_drops_total",
        "Packets dropped by blocklist entries of this source.",
        &["source"],
    );
    let drop_bytes = counter(
        "floodgate_source_dropped_bytes_total",
        "Bytes dropped by blocklist entries of this source.",
        &["source"],
    );
    for (id, name) in &sources {
        let c = state.lists.sources.drops(*id)?;
        drops.with_label_values(&[name.as_str()]).inc_by(c.packets);
        drop_bytes
            .with_label_values(&[name.as_str()])
            .inc_by(c.bytes);
    }

    let entries = [
        (
            ListKind::Block,
            gauge(
                "floodgate_blocklist_entries",
                "Blocklist entries by address family and source (kept counts: an expired entry counts until the sweep deletes it).",
                &["family", "source"],
            ),
        ),
        (
            ListKind::Allow,
            gauge(
                "floodgate_allowlist_entries",
                "Allowlist entries by address family and source (kept counts: an expired entry counts until the sweep deletes it).",
                &["family", "source"],
            ),
        ),
    ];
    let capacity = gauge(
        "floodgate_map_capacity_ratio",
        "Entries in a list map over its capacity (1 = full: further adds are refused).",
        &["map"],
    );
    let names = state.lists.sources.names()?;
    for (kind, g) in &entries {
        for (id, by_family) in state.lists.source_counts(*kind) {
            let name = names.get(id);
            for (family, n) in ["ipv4", "ipv6"].into_iter().zip(by_family) {
                if n > 0 {
                    g.with_label_values(&[family, name.as_str()]).set(n as f64);
                }
            }
        }
        let list = state.lists.list(*kind);
        for ((count, cap), m) in state
            .lists
            .map_counts(*kind)
            .iter()
            .zip(list.capacities())
            .zip(MapKind::ALL)
        {
            let map = format!("{} {}", kind.name(), m.label());
            capacity
                .with_label_values(&[map.as_str()])
                .set(*count as f64 / f64::from(cap.max(1)));
        }
    }

    let info = IntGaugeVec::new(
        Opts::new(
            "floodgate_build_info",
            "Always 1; labels say which floodgate runs.",
        ),
        &["version"],
    )
    .expect("valid metric");
    info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

    let syn_acks = snap
        .iter()
        .take(filter_common::REASON_COUNT)
        .find(|(r, _)| *r == Reason::SynCookie)
        .map_or(0, |(_, c)| c.packets);
    let mut families: Vec<Box<dyn Collector>> = vec![
        Box::new(packets),
        Box::new(bytes),
        Box::new(drops),
        Box::new(drop_bytes),
        Box::new(entries[0].1.clone()),
        Box::new(entries[1].1.clone()),
        Box::new(capacity),
        Box::new(info),
        Box::new(daemon.api_requests.clone()),
        Box::new(daemon.reloads.clone()),
        Box::new(daemon.attack_active.clone()),
        Box::new(daemon.api_connections.clone()),
        Box::new(daemon.top_source_nets.clone()),
        Box::new(daemon.top_dst_ports.clone()),
    ];
    families.extend(synguard_families(state, syn_acks)?);
    families.extend(auto.families());
    for f in families {
        registry.register(f).expect("metric names are unique");
    }
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("text encoding into memory");
    Ok(String::from_utf8(out).expect("the text format is UTF-8"))
}
