//! netfilter SYNPROXY: the SYN guard's completion path for kernels without the kfunc
//! `bpf_sk_assign_tcp_reqsk`. The XDP stage answers SYNs with the kernel's own cookie (see
//! `filter_common::synguard_bits::SYNPROXY`); the handshake's ACK, which conntrack has never
//! seen, is invalid to it, and the `synproxy` expression of this module's nftables table checks
//! the cookie, opens the connection to the listener and splices the two. The table is
//! floodgate's own (`inet floodgate_synguard`), written whole each time (idempotent), and
//! removed by `synguard off` and `detach`.
//!
//! netfilter needs `net.netfilter.nf_conntrack_tcp_loose` at 0 (else conntrack picks up the
//! ACK as a connection and SYNPROXY never sees it). The value before is kept in the table's
//! comment and put back when the table goes. Both are per network namespace.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use ipnet::IpNet;

use crate::{
    error::{Error, Result},
    settings::Synguard,
};
use filter_common::{SYNGUARD_MSS_V4, SYNGUARD_MSS_V6, SYNGUARD_WSCALE};

/// The table's family and name.
pub const TABLE: &str = "inet floodgate_synguard";
/// The conntrack setting SYNPROXY needs at 0.
pub const TCP_LOOSE: &str = "/proc/sys/net/netfilter/nf_conntrack_tcp_loose";
/// The table's comment, before the saved value of [`TCP_LOOSE`].
const SAVED: &str = "floodgate SYN guard; nf_conntrack_tcp_loose was ";

/// The nftables script that (re)writes the table for `g`: flushed and made again in one
/// transaction. `loose_before` is kept in the comment.
///
/// SYNs are left alone (the XDP stage answers them; one that passes it, under `--when-over`
/// or in dry-run, reaches the listener as usual). An ACK conntrack cannot place (invalid, or
/// untracked) to a protected port and destination goes to SYNPROXY, which checks the cookie;
/// what SYNPROXY leaves invalid is dropped.
pub fn script(g: &Synguard, loose_before: u32) -> String {
    let ports: Vec<String> = g.ports.iter().map(u16::to_string).collect();
    let ports = format!("{{ {} }}", ports.join(", "));
    let v4: Vec<String> = nets(&g.dst, true);
    let v6: Vec<String> = nets(&g.dst, false);
    // Without --dst every local address: the input hook only sees those.
    let mut scopes: Vec<(String, u16)> = Vec::new();
    if g.dst.is_empty() {
        scopes.push(("meta nfproto ipv4".into(), SYNGUARD_MSS_V4));
        scopes.push(("meta nfproto ipv6".into(), SYNGUARD_MSS_V6));
    } else {
        if !v4.is_empty() {
            scopes.push((format!("ip daddr {{ {} }}", v4.join(", ")), SYNGUARD_MSS_V4));
        }
        if !v6.is_empty() {
            scopes.push((
                format!("ip6 daddr {{ {} }}", v6.join(", ")),
                SYNGUARD_MSS_V6,
            ));
        }
    }
    let mut out = format!(
        "table {TABLE}\ndelete table {TABLE}\ntable {TABLE} {{\n\tcomment \"{SAVED}{loose_before}\"\n\
         \tchain handshake {{\n\t\ttype filter hook input priority filter; policy accept;\n"
    );
    for (scope, mss) in &scopes {
        out.push_str(&format!(
            "\t\t{scope} tcp dport {ports} ct state invalid,untracked synproxy mss {mss} \
             wscale {SYNGUARD_WSCALE} timestamp sack-perm\n"
        ));
    }
    for (scope, _) in &scopes {
        out.push_str(&format!(
            "\t\t{scope} tcp dport {ports} ct state invalid drop\n"
        ));
    }
    out.push_str("\t}\n}\n");
    out
}

fn nets(dst: &[IpNet], v4: bool) -> Vec<String> {
    dst.iter()
        .filter(|n| matches!(n, IpNet::V4(_)) == v4)
        .map(|n| n.trunc().to_string())
        .collect()
}

/// Run `nft` with `args`, `stdin` as its script; its output, or an error that says what failed.
fn nft(args: &[&str], stdin: Option<&str>, context: &str) -> Result<String> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Nft {
            context: context.into(),
            message: if e.kind() == std::io::ErrorKind::NotFound {
                "the `nft` command is not installed (Debian: apt-get install nftables)".into()
            } else {
                format!("running nft: {e}")
            },
        })?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("piped");
        pipe.write_all(text.as_bytes()).map_err(|e| Error::Nft {
            context: context.into(),
            message: format!("writing the script to nft: {e}"),
        })?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().map_err(|e| Error::Nft {
        context: context.into(),
        message: format!("waiting for nft: {e}"),
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err: String = err.trim().chars().take(2000).collect();
        return Err(Error::Nft {
            context: context.into(),
            message: if err.is_empty() {
                format!("nft exited with {}", out.status)
            } else {
                err
            },
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The table's listing, None when it is not there.
fn listing() -> Option<String> {
    let (family, name) = TABLE.split_once(' ').expect("family and name");
    nft(&["list", "table", family, name], None, "reading the table").ok()
}

/// Is the table there?
pub fn installed() -> bool {
    listing().is_some()
}

/// The `nf_conntrack_tcp_loose` value saved in a listing's comment.
fn saved_loose(listing: &str) -> Option<u32> {
    let at = listing.find(SAVED)? + SAVED.len();
    let digits: String = listing[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn read_loose() -> Option<u32> {
    std::fs::read_to_string(TCP_LOOSE).ok()?.trim().parse().ok()
}

fn write_loose(v: u32) -> Result<()> {
    std::fs::write(TCP_LOOSE, format!("{v}\n")).map_err(|e| Error::Nft {
        context: format!("setting {TCP_LOOSE} to {v}"),
        message: e.to_string(),
    })
}

/// Can SYNPROXY be set up here? Checks the script for a sample guard with the kernel (`nft
/// --check`: nothing is changed). Err: why not.
pub fn probe() -> std::result::Result<(), String> {
    let g = Synguard {
        enabled: true,
        ports: vec![443],
        ..Synguard::default()
    };
    // `--check` cannot delete a table that is not there: check the table alone.
    let text = script(&g, 1);
    let body = &text[text.find(&format!("table {TABLE} {{")).expect("the table")..];
    nft(
        &["--check", "-f", "-"],
        Some(body),
        "checking SYNPROXY support",
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// Write the table for `g` and set `nf_conntrack_tcp_loose` to 0 (its value before is kept
/// across rewrites).
pub fn install(g: &Synguard) -> Result<()> {
    let before = listing()
        .as_deref()
        .and_then(saved_loose)
        .or_else(read_loose)
        .unwrap_or(1);
    nft(
        &["-f", "-"],
        Some(&script(g, before)),
        "installing the SYNPROXY table",
    )?;
    write_loose(0)
}

/// Remove the table and put `nf_conntrack_tcp_loose` back; false when there was no table.
pub fn remove() -> Result<bool> {
    let Some(text) = listing() else {
        return Ok(false);
    };
    let (family, name) = TABLE.split_once(' ').expect("family and name");
    nft(
        &["delete", "table", family, name],
        None,
        "removing the SYNPROXY table",
    )?;
    if let Some(v) = saved_loose(&text) {
        write_loose(v)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Spelling;

    #[test]
    fn the_script_scopes_ports_and_destinations() {
        let g = Synguard::new(
            true,
            vec![443, 80],
            vec![
                "198.18.0.0/24".parse().unwrap(),
                "2001:db8::1/64".parse().unwrap(),
            ],
            None,
            Spelling::Cli,
        )
        .unwrap();
        let s = script(&g, 1);
        assert!(
            s.starts_with("table inet floodgate_synguard\ndelete table"),
            "{s}"
        );
        assert!(
            s.contains(
                "ip daddr { 198.18.0.0/24 } tcp dport { 80, 443 } ct state invalid,untracked \
                 synproxy mss 1460 wscale 7 timestamp sack-perm"
            ),
            "{s}"
        );
        assert!(
            s.contains("ip6 daddr { 2001:db8::/64 } tcp dport { 80, 443 } ct state invalid,untracked synproxy mss 1440"),
            "{s}"
        );
        assert!(
            s.contains("ip daddr { 198.18.0.0/24 } tcp dport { 80, 443 } ct state invalid drop"),
            "{s}"
        );
        assert_eq!(saved_loose(&s), Some(1));
        let all = script(
            &Synguard::new(true, vec![22], vec![], None, Spelling::Cli).unwrap(),
            0,
        );
        assert!(all.contains("meta nfproto ipv4 tcp dport { 22 }"), "{all}");
        assert!(all.contains("meta nfproto ipv6 tcp dport { 22 }"), "{all}");
        assert_eq!(saved_loose(&all), Some(0));
    }
}
