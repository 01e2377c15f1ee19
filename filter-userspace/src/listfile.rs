//! Blocklist/allowlist files: one entry per line, `#` and `;` start comments. This reads
//! FireHOL `.netset` files and Spamhaus DROP (`1.2.3.0/24 ; SBL123`) as they are published.
//! The whole file is validated before anything is applied.

use std::io::BufRead;

use ipnet::IpNet;

use crate::{error::Error, prefix::parse_prefix};

/// At most this many bad lines are listed in the error (the count is always exact).
const SHOWN_ERRORS: usize = 20;

/// Parse every line; on any bad line return an error listing them (by line number) instead.
pub fn parse_list_file(reader: impl BufRead, name: &str) -> Result<Vec<IpNet>, Error> {
    let mut entries = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let mut line = line.map_err(|source| Error::Io {
            context: format!("reading {name}"),
            source,
        })?;
        // Files saved by some Windows editors start with a byte-order mark: not part of the entry.
        if i == 0 && line.starts_with('\u{feff}') {
            line.drain(..'\u{feff}'.len_utf8());
        }
        let data = line.split(['#', ';']).next().unwrap_or("").trim();
        if data.is_empty() {
            continue;
        }
        // The entry is the first field; anything after whitespace is a trailing note.
        let field = data.split_whitespace().next().unwrap_or(data);
        match parse_prefix(field) {
            Ok(net) => entries.push(net),
            Err(e) => bad.push(format!("  line {}: {e}", i + 1)),
        }
    }
    if !bad.is_empty() {
        let count = bad.len();
        let mut details: Vec<String> = bad.into_iter().take(SHOWN_ERRORS).collect();
        if count > SHOWN_ERRORS {
            details.push(format!("  ... and {} more", count - SHOWN_ERRORS));
        }
        return Err(Error::BadListFile {
            path: name.to_string(),
            count,
            details: details.join("\n"),
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<String>, Error> {
        parse_list_file(s.as_bytes(), "test").map(|v| v.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn firehol_netset() {
        let text = "#\n# firehol_level1\n#\n198.18.0.0/16\n198.19.1.1\n\n2001:db8::/48\n";
        assert_eq!(
            parse(text).unwrap(),
            ["198.18.0.0/16", "198.19.1.1/32", "2001:db8::/48"],
            "netset lines and comments"
        );
    }

    #[test]
    fn spamhaus_drop() {
        let text = "; Spamhaus DROP List 2026/11/21\n; Expires: ...\n198.18.16.0/20 ; SBL256894\n198.18.64.0/18 ; SBL1\n";
        assert_eq!(
            parse(text).unwrap(),
            ["198.18.16.0/20", "198.18.64.0/18"],
            "DROP format"
        );
    }

    #[test]
    fn trailing_note_after_whitespace_and_crlf() {
        assert_eq!(
            parse("198.18.0.1 scanner\r\n").unwrap(),
            ["198.18.0.1/32"],
            "first field wins"
        );
    }

    #[test]
    fn byte_order_mark_is_not_part_of_the_first_entry() {
        assert_eq!(
            parse("\u{feff}198.18.0.1\n198.18.0.2\n").unwrap(),
            ["198.18.0.1/32", "198.18.0.2/32"],
            "BOM skipped"
        );
    }

    #[test]
    fn a_huge_bad_line_is_quoted_short_and_escaped() {
        let text = format!("198.18.0.1\n\u{1b}[2J{}\n", "x".repeat(10_000_000));
        let msg = parse(&text).expect_err("bad line").to_string();
        assert!(msg.len() < 300, "error is {} bytes", msg.len());
        assert!(msg.contains("line 2: \\u{1b}[2Jxxx"), "escaped in: {msg}");
    }

    #[test]
    fn reports_every_bad_line_and_keeps_nothing() {
        let err = parse("198.18.0.0/16\nnonsense\n198.18.0.1/8\n").expect_err("bad lines");
        let msg = err.to_string();
        assert!(msg.contains("2 bad line(s)"), "count in: {msg}");
        assert!(
            msg.contains("line 2:") && msg.contains("line 3:"),
            "line numbers in: {msg}"
        );
        assert!(msg.contains("did you mean 198.0.0.0/8"), "fix in: {msg}");
    }
}
