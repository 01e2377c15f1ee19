//! Parsing what users type as list entries: an address (a host) or a prefix, IPv4 or IPv6.
//! A prefix with host bits set is refused with the corrected prefix, never silently truncated.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::{
    entry::{quote, unmap},
    error::{Error, Result},
};

/// Parse `1.2.3.4`, `1.2.3.0/24`, `2001:db8::1`, `2001:db8::/32`. An IPv4-mapped IPv6
/// address or prefix (`::ffff:198.18.0.1`) means the IPv4 one: that is how its packets arrive.
pub fn parse_prefix(input: &str) -> Result<IpNet> {
    let s = input.trim();
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok(unmap(IpNet::from(addr)));
    }
    let net: IpNet = s
        .parse()
        .map_err(|_| Error::BadPrefix { input: quote(s) })?;
    if net.trunc() != net {
        return Err(Error::HostBitsSet {
            input: quote(s),
            suggestion: net.trunc().to_string(),
        });
    }
    Ok(unmap(net))
}

/// Is this prefix a single host (/32 or /128)? Hosts go to the exact-match hash.
pub fn is_host(net: &IpNet) -> bool {
    net.prefix_len() == net.max_prefix_len()
}

/// The family (4 or 6) and the address in 16 bytes, an IPv4 address in the first 4 and the
/// rest zero: how `MetaKey` and the write journal store a prefix of either family.
pub fn wide_addr(net: &IpNet) -> (u8, [u8; 16]) {
    let mut addr = [0u8; 16];
    match net.addr() {
        IpAddr::V4(a) => {
            addr[..4].copy_from_slice(&a.octets());
            (4, addr)
        }
        IpAddr::V6(a) => (6, a.octets()),
    }
}

/// Show hosts without the /32 or /128, as people write them.
pub fn display(net: &IpNet) -> String {
    if is_host(net) {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_and_prefixes() {
        let cases = [
            ("198.18.0.1", "198.18.0.1/32"),
            ("198.18.0.0/15", "198.18.0.0/15"),
            (" 198.18.7.0/24 ", "198.18.7.0/24"),
            ("2001:db8::1", "2001:db8::1/128"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("198.18.0.1/32", "198.18.0.1/32"),
            ("::ffff:198.18.0.1", "198.18.0.1/32"),
            ("::ffff:198.18.0.0/120", "198.18.0.0/24"),
        ];
        for (input, want) in cases {
            let got = parse_prefix(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(got.to_string(), want, "parsing {input}");
        }
    }

    #[test]
    fn refuses_host_bits_with_the_fix() {
        let err = parse_prefix("198.18.0.1/24").expect_err("host bits must be refused");
        assert!(
            err.to_string().contains("did you mean 198.18.0.0/24"),
            "message was: {err}"
        );
        let err = parse_prefix("2001:db8::1/32").expect_err("host bits must be refused");
        assert!(
            err.to_string().contains("2001:db8::/32"),
            "message was: {err}"
        );
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4/33",
            "2001:db8::/129",
            "example.com",
            "1.2.3.4/-1",
            "::g",
        ] {
            assert!(parse_prefix(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn displays_hosts_bare() {
        assert_eq!(display(&parse_prefix("198.18.0.1").unwrap()), "198.18.0.1");
        assert_eq!(
            display(&parse_prefix("198.18.0.0/16").unwrap()),
            "198.18.0.0/16"
        );
    }
}
