//! Every flood defence and every switch, as fixtures run through BPF_PROG_TEST_RUN: sanity
//! checks, rules, the reflection preset, rate limits with auto-ban, dry-run. Each row sets the
//! defences from a fresh `Settings` (the same writer the CLI and `apply` use), runs one frame
//! and checks the action, the reason and the STATS row (enforced or dry-run).

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use filter_common::{Action, Class, Reason, sanity_bits};
use floodgate::{
    lists::ListKind,
    prefix::parse_prefix,
    settings::{DefenceMode, LimitSpec, RuleText, Settings, Spelling},
};
use floodgate_tests::{
    Harness, XDP_DROP, XDP_PASS,
    packet::{self, *},
};

const DST4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const SRC4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const VLAN: &[(u16, u16)] = &[(ETH_P_8021Q, 100)];

fn v4_from(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
    eth(&[], ETH_P_IP, &ipv4(src, dst, proto, &[], frag, l4))
}

fn v4(proto: u8, l4: &[u8]) -> Vec<u8> {
    v4_from(SRC4, DST4, proto, 0, l4)
}

fn v6_from(src: Ipv6Addr, dst: Ipv6Addr, next: u8, rest: &[u8]) -> Vec<u8> {
    eth(&[], ETH_P_IPV6, &ipv6(src, dst, next, rest))
}

fn v6(next: u8, rest: &[u8]) -> Vec<u8> {
    v6_from(SRC6, DST6, next, rest)
}

/// The same frame with one 802.1Q tag.
fn tagged(frame: &[u8]) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&VLAN[0].0.to_be_bytes());
    f.extend_from_slice(&VLAN[0].1.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

fn syn() -> Vec<u8> {
    tcp(40000, 443, 0x02, 5)
}

fn dns_answer() -> Vec<u8> {
    packet::udp(53, 40000, &[0xab; 64])
}

fn a4(s: &str) -> Ipv4Addr {
    s.parse().expect("IPv4 literal")
}

fn a6(s: &str) -> Ipv6Addr {
    s.parse().expect("IPv6 literal")
}

/// How a row sets up the defences, starting from the defaults.
type Setup = fn(&mut Settings);

fn defaults(_: &mut Settings) {}

fn sanity_off(s: &mut Settings) {
    s.sanity.bits = 0;
}

fn rule(text: RuleText) -> floodgate::settings::RuleSpec {
    text.to_spec(0, Spelling::Cli).expect("valid rule")
}

fn t(action: &str) -> RuleText {
    RuleText {
        action: action.into(),
        ..RuleText::default()
    }
}

fn with_rules(s: &mut Settings, rules: Vec<RuleText>) {
    s.rules = rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let mut spec = rule(r);
            spec.id = i as u32 + 1;
            spec
        })
        .collect();
}

struct Row {
    what: &'static str,
    setup: Setup,
    /// Rules as `floodgate rule add` arguments, applied after `setup`.
    rules: Vec<&'static str>,
    frame: Vec<u8>,
    reason: Reason,
    dry_run: bool,
}

fn row(what: &'static str, setup: Setup, frame: Vec<u8>, reason: Reason) -> Row {
    Row {
        what,
        setup,
        rules: Vec::new(),
        frame,
        reason,
        dry_run: false,
    }
}

/// A row whose reason is counted in the dry-run row (the packet passes).
fn dry(what: &'static str, setup: Setup, frame: Vec<u8>, reason: Reason) -> Row {
    Row {
        dry_run: true,
        ..row(what, setup, frame, reason)
    }
}

/// An IPv4 frame whose total length claims `extra` bytes more than it carries.
fn v4_long_claim(extra: u16) -> Vec<u8> {
    let mut f = v4(UDP, &packet::udp(1, 2, b"abc"));
    let tot = u16::from_be_bytes([f[16], f[17]]) + extra;
    f[16..18].copy_from_slice(&tot.to_be_bytes());
    f
}

fn udp_with_len(len: u16) -> Vec<u8> {
    let mut u = packet::udp(1, 2, &[0; 20]);
    u[4..6].copy_from_slice(&len.to_be_bytes());
    u
}

fn rows() -> Vec<Row> {
    use Reason::*;
    let u = packet::udp(40000, 5000, b"hello");
    let mut rows = floodgate_tests::table! {
        // --- sanity: TCP flags (default on)
        row: "v4 TCP SYN is valid", defaults, v4(TCP, &syn()), Pass;
        row: "v4 TCP SYN+ACK is valid", defaults, v4(TCP, &tcp(443, 40000, 0x12, 5)), Pass;
        row: "v4 TCP RST is valid", defaults, v4(TCP, &tcp(443, 40000, 0x04, 5)), Pass;
        row: "v4 TCP null scan", defaults, v4(TCP, &tcp(1, 2, 0x00, 5)), TcpFlags;
        row: "v4 TCP SYN+FIN", defaults, v4(TCP, &tcp(1, 2, 0x03, 5)), TcpFlags;
        row: "v4 TCP SYN+RST", defaults, v4(TCP, &tcp(1, 2, 0x06, 5)), TcpFlags;
        row: "v4 TCP FIN without ACK", defaults, v4(TCP, &tcp(1, 2, 0x01, 5)), TcpFlags;
        row: "v4 TCP PSH without ACK", defaults, v4(TCP, &tcp(1, 2, 0x08, 5)), TcpFlags;
        row: "v4 TCP URG without ACK", defaults, v4(TCP, &tcp(1, 2, 0x20, 5)), TcpFlags;
        row: "v4 TCP xmas (all set)", defaults, v4(TCP, &tcp(1, 2, 0x3f, 5)), TcpFlags;
        row: "v6 TCP SYN+FIN", defaults, v6(TCP, &tcp(1, 2, 0x03, 5)), TcpFlags;
        row: "v6 TCP null, VLAN", defaults, tagged(&v6(TCP, &tcp(1, 2, 0, 5))), TcpFlags;
        row: "v4 TCP null, VLAN", defaults, tagged(&v4(TCP, &tcp(1, 2, 0, 5))), TcpFlags;
        row: "tcp_flags off: null passes", sanity_off, v4(TCP, &tcp(1, 2, 0, 5)), Pass;
        // --- sanity: land
        row: "v4 land", defaults, v4_from(DST4, DST4, UDP, 0, &u), Land;
        row: "v6 land", defaults, v6_from(DST6, DST6, UDP, &u), Land;
        row: "v6 land, VLAN", defaults, tagged(&v6_from(DST6, DST6, UDP, &u)), Land;
        row: "land off", sanity_off, v4_from(DST4, DST4, UDP, 0, &u), Pass;
        // --- sanity: martians
        row: "v4 source 0.1.2.3", defaults, v4_from(a4("0.1.2.3"), DST4, UDP, 0, &u), Martian;
        row: "v4 source 127.0.0.1", defaults, v4_from(a4("127.0.0.1"), DST4, UDP, 0, &u), Martian;
        row: "v4 multicast source", defaults, v4_from(a4("224.0.0.5"), DST4, UDP, 0, &u), Martian;
        row: "v4 broadcast source", defaults, v4_from(a4("255.255.255.255"), DST4, UDP, 0, &u), Martian;
        row: "v4 class E source", defaults, v4_from(a4("240.0.0.1"), DST4, UDP, 0, &u), Martian;
        row: "v4 0.0.0.0 DHCP discover passes", defaults, v4_from(a4("0.0.0.0"), a4("255.255.255.255"), UDP, 0, &packet::udp(68, 67, &[0; 32])), Pass;
        row: "v6 source ::1", defaults, v6_from(a6("::1"), DST6, UDP, &u), Martian;
        row: "v6 multicast source", defaults, v6_from(a6("ff02::1"), DST6, UDP, &u), Martian;
        row: "v6 source :: with UDP", defaults, v6_from(a6("::"), DST6, UDP, &u), Martian;
        row: "v6 source :: ICMPv6 (DAD) passes", defaults, v6_from(a6("::"), a6("ff02::1:ff00:1"), ICMPV6, &icmpv6_echo()), Pass;
        row: "v4 martian, VLAN", defaults, tagged(&v4_from(a4("127.0.0.1"), DST4, UDP, 0, &u)), Martian;
        row: "martian off", sanity_off, v4_from(a4("127.0.0.1"), DST4, UDP, 0, &u), Pass;
        // --- sanity: fragments (IPv4)
        row: "v4 tiny first fragment", defaults, v4_from(SRC4, DST4, UDP, 0x2000, &u), Fragment;
        row: "v4 tiny first fragment, VLAN", defaults, tagged(&v4_from(SRC4, DST4, UDP, 0x2000, &u)), Fragment;
        row: "v4 full first fragment", defaults, v4_from(SRC4, DST4, UDP, 0x2000, &packet::udp(1, 2, &[0; 1000])), Pass;
        row: "v4 non-first fragment passes by default", defaults, v4_from(SRC4, DST4, UDP, 0x0010, &[9; 200]), Pass;
        row: "v4 non-first fragment, fragment_non_first on", |s| s.sanity.bits |= sanity_bits::FRAGMENT_NON_FIRST, v4_from(SRC4, DST4, UDP, 0x0010, &[9; 200]), Fragment;
        row: "v4 first fragment of 600 B under a 1000 B minimum", |s| s.sanity.fragment_min_bytes = 1000, v4_from(SRC4, DST4, UDP, 0x2000, &packet::udp(1, 2, &[0; 592])), Fragment;
        row: "fragment_tiny off", sanity_off, v4_from(SRC4, DST4, UDP, 0x2000, &u), Pass;
        row: "v6 fragments are not policed (IPv4 only)", defaults, v6(FRAGMENT, &frag6(UDP, 0, true, &u)), Pass;
        // --- sanity: lengths
        row: "v4 total length beyond the frame", defaults, v4_long_claim(100), Length;
        row: "v4 total length beyond the frame, VLAN", defaults, tagged(&v4_long_claim(100)), Length;
        row: "v4 Ethernet padding is fine", defaults, { let mut f = v4(UDP, &packet::udp(1, 2, b"x")); f.resize(60, 0); f }, Pass;
        row: "v4 UDP length beyond the packet", defaults, v4(UDP, &udp_with_len(200)), Length;
        row: "v4 UDP length under 8", defaults, v4(UDP, &udp_with_len(4)), Length;
        row: "v4 TCP data offset beyond the packet", defaults, v4(TCP, &{ let mut t = tcp(1, 2, 0x10, 5); t[12] = 15 << 4; t }), Length;
        row: "v6 payload length beyond the frame", defaults, { let mut f = v6(UDP, &u); f[18..20].copy_from_slice(&500u16.to_be_bytes()); f }, Length;
        row: "v6 UDP length beyond the packet", defaults, v6(UDP, &udp_with_len(300)), Length;
        row: "length off", sanity_off, v4_long_claim(100), Pass;
        row: "allowlist comes before sanity", defaults, v4_from(a4("198.19.250.1"), a4("198.19.250.1"), UDP, 0, &u), Allowlist;
        row: "blocklist comes before sanity", defaults, v4(TCP, &tcp(1, 2, 0, 5)).pipe_src(a4("198.19.251.1")), Blocklist;
        // --- rules: each match field (written as `floodgate rule add` arguments)
    };
    let rule_rows: [(&str, &[&str], Vec<u8>, Reason); 19] = [
        (
            "rule: proto udp, dst port 53, length 512+ (the issue's example, as drop)",
            &["--proto udp --dst-port 53 --length 512-65535 --action drop"],
            v4(UDP, &packet::udp(40000, 53, &[0; 600])),
            Rule,
        ),
        (
            "rule: same, small query passes",
            &["--proto udp --dst-port 53 --length 512-65535 --action drop"],
            v4(UDP, &packet::udp(40000, 53, &[0; 40])),
            Pass,
        ),
        (
            "rule: source prefix v4",
            &["--src 198.18.0.0/24 --action drop"],
            v4(UDP, &u),
            Rule,
        ),
        (
            "rule: source prefix v4 misses",
            &["--src 198.18.1.0/24 --action drop"],
            v4(UDP, &u),
            Pass,
        ),
        (
            "rule: destination prefix v6, VLAN",
            &["--dst 2001:db8::/64 --action drop"],
            tagged(&v6(UDP, &u)),
            Rule,
        ),
        (
            "rule: v6 source prefix does not match v4",
            &["--src 2001:db8::/32 --action drop"],
            v4(UDP, &u),
            Pass,
        ),
        (
            "rule: family ipv6 only",
            &["--family ipv6 --action drop"],
            v6(UDP, &u),
            Rule,
        ),
        (
            "rule: family ipv6 skips v4",
            &["--family ipv6 --action drop"],
            v4(UDP, &u),
            Pass,
        ),
        (
            "rule: source port range",
            &["--proto udp --src-port 39000-41000 --action drop"],
            v4(UDP, &u),
            Rule,
        ),
        (
            "rule: TCP flags syn/syn,ack matches a SYN",
            &["--proto tcp --tcp-flags syn/syn,ack --action drop"],
            v6(TCP, &syn()),
            Rule,
        ),
        (
            "rule: TCP flags syn/syn,ack skips a SYN+ACK",
            &["--proto tcp --tcp-flags syn/syn,ack --action drop"],
            v6(TCP, &tcp(443, 40000, 0x12, 5)),
            Pass,
        ),
        (
            "rule: TTL range",
            &["--ttl 60-70 --action drop"],
            v4(UDP, &u),
            Rule,
        ),
        (
            "rule: ICMP type 8 code 0",
            &["--proto icmp --icmp-type 8 --icmp-code 0 --action drop"],
            v4(ICMP, &icmp_echo()),
            Rule,
        ),
        (
            "rule: ICMPv6 type 129 skips an echo request",
            &["--proto icmpv6 --icmp-type 129 --action drop"],
            v6(ICMPV6, &icmpv6_echo()),
            Pass,
        ),
        (
            "rule: port match never matches a non-first fragment",
            &["--proto udp --dst-port 0-65535 --action drop"],
            v4_from(SRC4, DST4, UDP, 0x0010, &[9; 200]),
            Pass,
        ),
        (
            "rules: first match wins (pass before drop)",
            &["--src 198.18.0.2 --action pass", "--action drop"],
            v4(UDP, &u),
            Pass,
        ),
        (
            "rules: a drop rule below a non-matching rule",
            &["--proto tcp --action pass", "--action drop"],
            v4(UDP, &u),
            Rule,
        ),
        (
            "rules: a dry-run drop rule counts and passes (dry-run row)",
            &["--action drop --dry-run"],
            v4(UDP, &u),
            Rule,
        ),
        (
            "rules: evaluation goes on past a dry-run rule",
            &["--action drop --dry-run", "--proto udp --action drop"],
            v4(UDP, &u),
            Rule,
        ),
    ];
    for (what, args, frame, reason) in rule_rows {
        // Only dry-run rules matched: nothing enforced, so the drop lands in the dry-run row.
        let dry_run = args.iter().all(|a| a.contains("--dry-run"));
        rows.push(Row {
            what,
            setup: defaults,
            rules: args.to_vec(),
            frame,
            reason,
            dry_run,
        });
    }
    rows.push(Row {
        rules: vec!["--src 198.18.0.2 --action pass"],
        ..row(
            "rules: a pass rule skips the reflection preset",
            |s| s.reflection.enabled = true,
            v4(UDP, &dns_answer()),
            Reason::Pass,
        )
    });
    rows.extend([
        // --- reflection preset
        row(
            "reflection off: DNS answer passes",
            defaults,
            v4(UDP, &dns_answer()),
            Pass,
        ),
        row(
            "reflection: v4 UDP from port 53",
            |s| s.reflection.enabled = true,
            v4(UDP, &dns_answer()),
            Reflection,
        ),
        row(
            "reflection: v6 UDP from NTP 123, VLAN",
            |s| s.reflection.enabled = true,
            tagged(&v6(UDP, &packet::udp(123, 40000, &[0; 48]))),
            Reflection,
        ),
        row(
            "reflection: memcached 11211",
            |s| s.reflection.enabled = true,
            v4(UDP, &packet::udp(11211, 80, &[0; 100])),
            Reflection,
        ),
        row(
            "reflection: TCP from port 53 is not reflection",
            |s| s.reflection.enabled = true,
            v4(TCP, &tcp(53, 40000, 0x12, 5)),
            Pass,
        ),
        row(
            "reflection: UDP from a high port passes",
            |s| s.reflection.enabled = true,
            v4(UDP, &u),
            Pass,
        ),
        row(
            "reflection: exempt destination port",
            |s| {
                s.reflection.enabled = true;
                s.reflection.exempt_ports = vec![40000];
            },
            v4(UDP, &dns_answer()),
            Pass,
        ),
        row(
            "reflection: exempt destination prefix (v6)",
            |s| {
                s.reflection.enabled = true;
                s.reflection.exempt_dst = vec![parse_prefix("2001:db8::1").unwrap()];
            },
            v6(UDP, &dns_answer()),
            Pass,
        ),
        row(
            "reflection: an added port",
            |s| {
                s.reflection.enabled = true;
                s.reflection.ports.push(27960);
            },
            v4(UDP, &packet::udp(27960, 1000, &[0; 10])),
            Reflection,
        ),
        // --- global dry-run
        dry(
            "dry-run: blocklisted source counted, passed",
            |s| s.mode = DefenceMode::DryRun,
            v4_from(a4("198.19.251.1"), DST4, UDP, 0, &u),
            Blocklist,
        ),
        dry(
            "dry-run: malformed counted, passed",
            |s| s.mode = DefenceMode::DryRun,
            v4(UDP, &[0, 53]),
            Malformed,
        ),
        dry(
            "dry-run: sanity counted, passed",
            |s| s.mode = DefenceMode::DryRun,
            v4(TCP, &tcp(1, 2, 0x03, 5)),
            TcpFlags,
        ),
        dry(
            "dry-run: reflection counted, passed",
            |s| {
                s.mode = DefenceMode::DryRun;
                s.reflection.enabled = true;
            },
            v6(UDP, &dns_answer()),
            Reflection,
        ),
        row(
            "dry-run: clean traffic is plain pass",
            |s| s.mode = DefenceMode::DryRun,
            v4(UDP, &u),
            Pass,
        ),
        row(
            "dry-run: allowlist still counts as allowlist",
            |s| s.mode = DefenceMode::DryRun,
            v4_from(a4("198.19.250.1"), DST4, UDP, 0, &u),
            Allowlist,
        ),
    ]);
    // Rows above carry one-tag variants for each defence; `every_defence_sees_through_two_
    // vlan_tags` runs every drop row again behind two tags.
    rows.push(row("v6 UDP, clean", defaults, v6(UDP, &u), Pass));
    rows
}

/// Set a v4 frame's source address (and fix nothing else: the filter ignores checksums).
trait PipeSrc {
    fn pipe_src(self, src: Ipv4Addr) -> Vec<u8>;
}

impl PipeSrc for Vec<u8> {
    fn pipe_src(mut self, src: Ipv4Addr) -> Vec<u8> {
        self[26..30].copy_from_slice(&src.octets());
        self
    }
}

fn harness() -> Harness {
    let mut h = Harness::new();
    for (kind, e) in [
        (ListKind::Allow, "198.19.250.0/24"),
        (ListKind::Block, "198.19.251.0/24"),
    ] {
        h.state
            .lists
            .add(
                kind,
                filter_common::SOURCE_CLI,
                &[parse_prefix(e).unwrap()],
                None,
                None,
                &mut |_, _| {},
            )
            .expect("fixture list entry");
    }
    h
}

fn apply(h: &mut Harness, setup: Setup) {
    apply_with(h, setup, &[]);
}

/// `floodgate rule add` arguments as a rule: the CLI's own parser, so the table reads like
/// what an operator types.
fn rule_args(line: &str) -> RuleText {
    #[derive(clap::Parser)]
    struct Add {
        #[command(flatten)]
        rule: RuleText,
    }
    let argv = std::iter::once("rule-add").chain(line.split_whitespace());
    <Add as clap::Parser>::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("`{line}`: {e}"))
        .rule
}

fn apply_with(h: &mut Harness, setup: Setup, rules: &[&str]) {
    let mut s = Settings::default();
    setup(&mut s);
    if !rules.is_empty() {
        with_rules(&mut s, rules.iter().map(|l| rule_args(l)).collect());
    }
    h.state.write_settings(&s).expect("writing settings");
}

fn check(h: &mut Harness, rows: &[Row]) -> Vec<String> {
    let mut failures = Vec::new();
    for r in rows {
        apply_with(h, r.setup, &r.rules);
        let (action, reason, dry_run) = h.run_any(&r.frame);
        let want_action = match (r.dry_run, r.reason.action()) {
            (true, _) | (false, Action::Pass) => XDP_PASS,
            (false, Action::Drop) => XDP_DROP,
            (false, Action::Tx) => floodgate_tests::XDP_TX,
        };
        if (action, reason, dry_run) != (want_action, r.reason, r.dry_run) {
            failures.push(format!(
                "{}: got action {action} reason {} dry-run {dry_run}, want action {want_action} reason {} dry-run {}",
                r.what,
                reason.name(),
                r.reason.name(),
                r.dry_run
            ));
        }
    }
    failures
}

#[test]
fn every_defence_and_switch_through_test_run() {
    let mut h = harness();
    let rows = rows();
    let failures = check(&mut h, &rows);
    assert!(
        failures.is_empty(),
        "{} of {} fixture(s) failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

#[test]
fn every_defence_sees_through_two_vlan_tags() {
    let mut h = harness();
    let rows: Vec<Row> = rows()
        .into_iter()
        // Rows already tagged once would get three tags (malformed by design).
        .filter(|r| {
            r.reason.action() == Action::Drop && r.frame[12..14] != ETH_P_8021Q.to_be_bytes()
        })
        .map(|mut r| {
            // Q-in-Q: an 802.1ad outer tag, then an 802.1Q inner tag.
            let mut f = r.frame[..12].to_vec();
            f.extend_from_slice(&ETH_P_8021AD.to_be_bytes());
            f.extend_from_slice(&200u16.to_be_bytes());
            f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
            f.extend_from_slice(&100u16.to_be_bytes());
            f.extend_from_slice(&r.frame[12..]);
            r.frame = f;
            r
        })
        .collect();
    assert!(rows.len() > 30, "most drop rows are re-run behind two tags");
    let failures = check(&mut h, &rows);
    assert!(
        failures.is_empty(),
        "{} of {} fixture(s) failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

fn limit(s: &mut Settings, class: Class, l: LimitSpec) {
    l.validate(class, Spelling::Cli).expect("valid limit");
    s.limits.insert(class, l);
}

/// Default settings plus one class limit, written to the maps; returns the settings.
fn limited(h: &mut Harness, class: Class, l: LimitSpec) -> Settings {
    let mut s = Settings::default();
    limit(&mut s, class, l);
    h.state.write_settings(&s).expect("writing the limit");
    s
}

/// Run `n` copies of a frame; the verdicts in order.
fn burst(h: &mut Harness, frame: &[u8], n: usize) -> Vec<Reason> {
    (0..n).map(|_| h.run(frame).1).collect()
}

#[test]
fn per_source_limits_drop_the_flooder_not_its_neighbour() {
    use Reason::*;
    let mut h = harness();
    // 10 pps: a burst of one second's worth (100 ms at 10 pps = 1 packet) then nothing.
    let mut s = limited(
        &mut h,
        Class::Udp,
        LimitSpec {
            per_source: Some("10".parse().unwrap()),
            ..LimitSpec::default()
        },
    );
    let flood = v4_from(a4("198.18.9.1"), DST4, UDP, 0, &packet::udp(1, 2, b"x"));
    let got = burst(&mut h, &flood, 5);
    assert_eq!(
        got,
        [Pass, Ratelimit, Ratelimit, Ratelimit, Ratelimit],
        "udp from one source"
    );
    let neighbour = v4_from(a4("198.18.9.2"), DST4, UDP, 0, &packet::udp(1, 2, b"x"));
    assert_eq!(
        h.run(&neighbour).1,
        Pass,
        "another source has its own bucket"
    );
    let tcp_from_flooder = v4_from(a4("198.18.9.1"), DST4, TCP, 0, &syn());
    assert_eq!(
        h.run(&tcp_from_flooder).1,
        Pass,
        "the udp class does not police TCP"
    );

    // IPv6 sources share a bucket per /64 by default.
    let a = v6_from(a6("2001:db8:9::1"), DST6, UDP, &packet::udp(1, 2, b"x"));
    let b = v6_from(a6("2001:db8:9::2"), DST6, UDP, &packet::udp(1, 2, b"x"));
    let c = v6_from(a6("2001:db8:a::1"), DST6, UDP, &packet::udp(1, 2, b"x"));
    assert_eq!(h.run(&a).1, Pass);
    assert_eq!(h.run(&b).1, Ratelimit, "same /64: same bucket");
    assert_eq!(h.run(&c).1, Pass, "another /64");

    // syn: SYNs only; ACKs from the same source pass.
    limit(
        &mut s,
        Class::Syn,
        LimitSpec {
            per_source: Some("10".parse().unwrap()),
            ..LimitSpec::default()
        },
    );
    h.state.write_settings(&s).unwrap();
    let syn4 = v4_from(a4("198.18.9.3"), DST4, TCP, 0, &syn());
    let ack4 = v4_from(a4("198.18.9.3"), DST4, TCP, 0, &tcp(40000, 443, 0x10, 5));
    assert_eq!(
        burst(&mut h, &syn4, 2),
        [Pass, Ratelimit],
        "SYNs are limited"
    );
    assert_eq!(
        burst(&mut h, &ack4, 3),
        [Pass, Pass, Pass],
        "ACKs are not SYNs"
    );

    // icmp and all, grouped by /24 for IPv4.
    limit(
        &mut s,
        Class::All,
        LimitSpec {
            per_source: Some("10".parse().unwrap()),
            source_prefix_v4: Some(24),
            ..LimitSpec::default()
        },
    );
    h.state.write_settings(&s).unwrap();
    let p1 = v4_from(a4("198.18.77.1"), DST4, ICMP, 0, &icmp_echo());
    let p2 = v4_from(a4("198.18.77.200"), DST4, GRE, 0, &[0; 8]);
    assert_eq!(h.run(&p1).1, Pass);
    assert_eq!(h.run(&p2).1, Ratelimit, "same /24 shares the `all` bucket");
}

#[test]
fn bit_rate_limits_count_bytes() {
    use Reason::*;
    let mut h = harness();
    // 80 kbit/s = 10 kB/s: the 100 ms burst is 1000 bytes.
    limited(
        &mut h,
        Class::Udp,
        LimitSpec {
            per_source: Some("/80k".parse().unwrap()),
            ..LimitSpec::default()
        },
    );
    let small = v4_from(
        a4("198.18.10.1"),
        DST4,
        UDP,
        0,
        &packet::udp(1, 2, &[0; 100]),
    );
    let got = burst(&mut h, &small, 10);
    let passed = got.iter().filter(|r| **r == Pass).count();
    assert!(
        (6..=7).contains(&passed),
        "about 1000 bytes of 142-byte frames pass, got {passed}: {got:?}"
    );
}

#[test]
fn aggregate_caps_a_random_source_flood() {
    use Reason::*;
    let mut h = harness();
    limited(
        &mut h,
        Class::Udp,
        LimitSpec {
            aggregate: Some("10".parse().unwrap()),
            dst: vec![
                parse_prefix("198.18.0.0/24").unwrap(),
                parse_prefix("2001:db8::/64").unwrap(),
            ],
            ..LimitSpec::default()
        },
    );
    let mut got = Vec::new();
    for i in 1..=5u8 {
        let f = v4_from(
            Ipv4Addr::new(198, 19, 100, i),
            DST4,
            UDP,
            0,
            &packet::udp(1, 2, b"x"),
        );
        got.push(h.run(&f).1);
    }
    assert_eq!(
        got,
        [Pass, Aggregate, Aggregate, Aggregate, Aggregate],
        "5 sources, one cap"
    );
    let other_dst = v4_from(
        a4("198.19.100.9"),
        a4("198.18.1.1"),
        UDP,
        0,
        &packet::udp(1, 2, b"x"),
    );
    assert_eq!(h.run(&other_dst).1, Pass, "outside the protected prefix");
    let v6a = v6_from(a6("2001:db8:1::1"), DST6, UDP, &packet::udp(1, 2, b"x"));
    let v6b = v6_from(a6("2001:db8:2::1"), DST6, UDP, &packet::udp(1, 2, b"x"));
    assert_eq!(
        [h.run(&v6a).1, h.run(&v6b).1],
        [Pass, Aggregate],
        "IPv6 prefix too"
    );
    let tcp = v4_from(a4("198.19.100.1"), DST4, TCP, 0, &syn());
    assert_eq!(h.run(&tcp).1, Pass, "a udp cap leaves TCP alone");
}

#[test]
fn a_limit_rule_polices_everything_it_matches() {
    use Reason::*;
    let mut h = harness();
    let mut s = Settings::default();
    with_rules(
        &mut s,
        vec![RuleText {
            proto: Some("icmp".into()),
            pps: Some("10".into()),
            ..t("limit")
        }],
    );
    h.state.write_settings(&s).unwrap();
    let mut got = Vec::new();
    for i in 1..=3u8 {
        let f = v4_from(Ipv4Addr::new(198, 18, 50, i), DST4, ICMP, 0, &icmp_echo());
        got.push(h.run(&f).1);
    }
    assert_eq!(got, [Pass, RuleLimit, RuleLimit]);
    let rows = h.state.defences.rule_rows(&|_| None).unwrap();
    assert_eq!(rows[0].hits.packets, 3, "the rule counted every match");
    assert_eq!(rows[0].hits.bytes, 3 * 44, "and their bytes");
}

#[test]
fn auto_ban_puts_the_source_on_the_blocklist_until_it_expires() {
    use Reason::*;
    let mut h = harness();
    let mut s = limited(
        &mut h,
        Class::Udp,
        LimitSpec {
            per_source: Some("10".parse().unwrap()),
            ban_after: Some(Duration::from_millis(1)),
            ban_for: Some(Duration::from_secs(2)),
            ..LimitSpec::default()
        },
    );
    let f = v4_from(a4("198.18.44.4"), DST4, UDP, 0, &packet::udp(1, 2, b"x"));
    assert_eq!(
        burst(&mut h, &f, 2),
        [Pass, Ratelimit],
        "first over-limit packet"
    );
    std::thread::sleep(Duration::from_millis(5));
    let marked = h.state.lists.front.marked(ListKind::Block);
    assert_eq!(
        h.run(&f).1,
        Ratelimit,
        "over the limit for more than ban_after: banned now"
    );
    // The data plane marks the ban's /24 in the front itself (no rebuild in between), so other
    // sources keep skipping the blocklist; the next sweep's rebuild is due.
    assert_eq!(
        h.state.lists.front.marked(ListKind::Block),
        [marked[0] + 1, marked[1], marked[2]],
        "the ban's slot is marked at once"
    );
    assert!(h.state.lists.front.auto_pending(), "a rebuild is due");
    assert_eq!(
        h.state
            .lists
            .source_counts(ListKind::Block)
            .get(&filter_common::SOURCE_AUTO),
        Some(&[1, 0]),
        "the data plane counts its ban"
    );
    assert_eq!(h.run(&f).1, Blocklist, "the ban is on the blocklist");
    let entries = h.state.lists.entries(ListKind::Block).unwrap();
    let ban = entries
        .iter()
        .find(|e| e.net == parse_prefix("198.18.44.4").unwrap())
        .unwrap_or_else(|| panic!("auto-ban listed: {entries:?}"));
    assert!(ban.auto(), "marked as an auto-ban");
    let left = ban.expires_in.expect("an auto-ban expires");
    assert!(
        left <= Duration::from_secs(2) && left > Duration::from_millis(1500),
        "{left:?}"
    );
    std::thread::sleep(Duration::from_millis(2100));
    assert_ne!(
        h.run(&f).1,
        Blocklist,
        "the ban expired in the kernel by itself"
    );

    // IPv6 sources are banned by their /64 (the per-source grouping), into the prefix trie.
    let v6a = v6_from(a6("2001:db8:44::1"), DST6, UDP, &packet::udp(1, 2, b"x"));
    let v6b = v6_from(a6("2001:db8:44::99"), DST6, UDP, &packet::udp(1, 2, b"x"));
    assert_eq!(burst(&mut h, &v6a, 2), [Pass, Ratelimit]);
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(h.run(&v6a).1, Ratelimit, "banned now");
    assert_eq!(h.run(&v6b).1, Blocklist, "the whole /64 is banned");
    let entries = h.state.lists.entries(ListKind::Block).unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.auto() && e.net == parse_prefix("2001:db8:44::/64").unwrap()),
        "the /64 is listed as an auto-ban: {entries:?}"
    );

    // Dry-run never bans.
    s.mode = DefenceMode::DryRun;
    h.state.write_settings(&s).unwrap();
    let g = v4_from(a4("198.18.44.5"), DST4, UDP, 0, &packet::udp(1, 2, b"x"));
    for _ in 0..3 {
        h.run_any(&g);
        std::thread::sleep(Duration::from_millis(3));
    }
    let (_, reason, dry) = h.run_any(&g);
    assert_eq!(
        (reason, dry),
        (Ratelimit, true),
        "counted as dry-run ratelimit"
    );
    assert!(
        !h.state
            .lists
            .entries(ListKind::Block)
            .unwrap()
            .iter()
            .any(|e| e.net == parse_prefix("198.18.44.5").unwrap()),
        "no ban in dry-run"
    );
}

/// xorshift64*: a reproducible stream of pseudo-random numbers (the seed is in the message).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A frame built from a seed frame by one of: byte flips, truncation, extension, a random
/// EtherType/protocol/flags byte, or pure noise.
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut f = seeds[rng.below(seeds.len())].clone();
    match rng.below(6) {
        0 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(f.len());
                f[i] ^= 1 << rng.below(8);
            }
        }
        1 => f.truncate(rng.below(f.len() + 1)),
        2 => f.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
        3 => {
            // The bytes every parser branches on: EtherType, IP version/IHL, protocol, TCP flags.
            for i in [12, 13, 14, 23, 20, 47, 54] {
                if i < f.len() && rng.below(3) == 0 {
                    f[i] = rng.next() as u8;
                }
            }
        }
        4 => {
            let n = rng.below(200);
            f = (0..n).map(|_| rng.next() as u8).collect();
        }
        _ => {
            let i = rng.below(f.len());
            f[i] = rng.next() as u8;
        }
    }
    // BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet header (and no NIC delivers
    // one): top short frames up with noise.
    while f.len() < 14 {
        f.push(rng.next() as u8);
    }
    f
}

fn everything_on(s: &mut Settings) {
    s.sanity.bits |= sanity_bits::FRAGMENT_NON_FIRST;
    s.reflection.enabled = true;
    with_rules(
        s,
        vec![
            RuleText {
                proto: Some("udp".into()),
                dst_port: Some("53".into()),
                length: Some("512-65535".into()),
                ..t("drop")
            },
            RuleText {
                proto: Some("icmp".into()),
                pps: Some("1000".into()),
                ..t("limit")
            },
            RuleText {
                ttl: Some("0-1".into()),
                dry_run: true,
                ..t("drop")
            },
        ],
    );
}

#[test]
fn thousands_of_random_and_mutated_frames_each_get_one_documented_verdict() {
    let seed = 0x5eed_f100_d6a7_e000;
    let mut rng = Rng(seed);
    let seeds: Vec<Vec<u8>> = rows().into_iter().map(|r| r.frame).collect();
    let mut h = harness();

    // Stateless defences: the same frame must always get the same verdict.
    apply(&mut h, everything_on);
    let total_before: u64 = h.counters().iter().map(|c| c.packets).sum();
    let mut frames = 0u64;
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..3000 {
        let f = mutate(&mut rng, &seeds);
        let first = h.run_any(&f);
        let again = h.run_any(&f);
        frames += 2;
        let (action, reason, dry_run) = first;
        let want = if dry_run || reason.action() == Action::Pass {
            XDP_PASS
        } else {
            XDP_DROP
        };
        assert_eq!(
            action, want,
            "frame {i} (seed {seed:#x}): action matches {reason:?}"
        );
        // Rule 2 is a rate limit: a repeat may be over it; everything else is deterministic.
        if reason != Reason::RuleLimit && again.1 != Reason::RuleLimit {
            assert_eq!(
                first, again,
                "frame {i} (seed {seed:#x}) {f:02x?}: same verdict twice"
            );
        }
        *seen.entry(reason.name()).or_insert(0u32) += 1;
    }

    // With rate limits on as well: still exactly one verdict each.
    let mut s = Settings::default();
    everything_on(&mut s);
    for class in [Class::Udp, Class::All] {
        limit(
            &mut s,
            class,
            LimitSpec {
                per_source: Some("50".parse().unwrap()),
                aggregate: Some("200".parse().unwrap()),
                dst: vec![parse_prefix("198.18.0.0/16").unwrap()],
                ..LimitSpec::default()
            },
        );
    }
    h.state.write_settings(&s).unwrap();
    for _ in 0..2000 {
        let f = mutate(&mut rng, &seeds);
        let (_, reason, _) = h.run_any(&f);
        frames += 1;
        *seen.entry(reason.name()).or_insert(0u32) += 1;
    }
    let total_after: u64 = h.counters().iter().map(|c| c.packets).sum();
    assert_eq!(
        total_after - total_before,
        frames,
        "counters add up to the frames sent"
    );
    for must in [
        "pass",
        "malformed",
        "tcp_flags",
        "length",
        "reflection",
        "ratelimit",
    ] {
        assert!(
            seen.contains_key(must),
            "the mix reached `{must}`: {seen:?}"
        );
    }
}
