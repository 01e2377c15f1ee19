//! List entries as people and list sources write and read them: one set of rules for every
//! front end (CLI, TOML file, push API, snapshot) for the TTL, the comment and how broad a
//! prefix may be; how input is quoted back in an error; and the one shape of a listed entry
//! (the CLI's `--json` and the API's `GET`).
//!
//! The limits (README, "Limits"):
//! - a TTL is more than 0 and at most [`TTL_MAX`] (no TTL: the entry never expires);
//! - a comment is at most [`filter_common::COMMENT_MAX`] bytes, with no control characters;
//! - an entry broader than /[`MIN_PREFIX_V4`] (IPv4) or /[`MIN_PREFIX_V6`] (IPv6) is refused
//!   unless forced, except inside multicast/reserved space no real peer sends from.

use std::{net::IpAddr, time::Duration};

use filter_common::{COMMENT_MAX, SOURCE_AUTO};
use ipnet::IpNet;

use crate::{
    prefix::{display, parse_prefix},
    sources::SourceNames,
};

/// A list entry to add: prefix, TTL (None = never expires), comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub net: IpNet,
    pub ttl: Option<Duration>,
    pub comment: Option<String>,
}

/// One list entry as users see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub net: IpNet,
    /// Time left; `None` = never expires.
    pub expires_in: Option<Duration>,
    pub hits: u64,
    pub comment: Option<String>,
    /// The list source that added it ([`SOURCE_AUTO`]: the data plane's auto-ban).
    pub source: u32,
}

impl Entry {
    /// Added by the data plane's auto-ban, not by an operator.
    pub fn auto(&self) -> bool {
        self.source == SOURCE_AUTO
    }
}

/// One entry in `floodgate block list --json` and the API's `GET /v1/blocklist`.
#[derive(Debug, serde::Serialize)]
pub struct JsonEntry {
    pub cidr: String,
    /// Seconds left, rounded up (an entry with 0.4 s left still matches); null = never.
    pub expires_in_s: Option<u64>,
    pub hits: u64,
    pub comment: Option<String>,
    /// The source that added it: cli, config, auto or a named source.
    pub source: String,
    /// "manual" (CLI, configuration file, API) or "auto" (auto-ban by a rate limit).
    pub origin: &'static str,
}

/// Entries as JSON rows, sources named.
pub fn json_entries(names: &SourceNames, entries: &[Entry]) -> Vec<JsonEntry> {
    entries
        .iter()
        .map(|e| JsonEntry {
            cidr: e.net.to_string(),
            expires_in_s: e
                .expires_in
                .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
            hits: e.hits,
            comment: e.comment.clone(),
            source: names.get(e.source),
            origin: if e.auto() { "auto" } else { "manual" },
        })
        .collect()
}

/// The longest TTL: ten years. Longer is a typo or an overflow; leave the TTL out instead.
pub const TTL_MAX: Duration = Duration::from_secs(10 * 365 * 86_400);
/// The broadest IPv4 entry taken without forcing.
pub const MIN_PREFIX_V4: u8 = 8;
/// The broadest IPv6 entry taken without forcing.
pub const MIN_PREFIX_V6: u8 = 16;
/// At most this many characters of user input are quoted back in an error.
pub const QUOTE_MAX: usize = 64;

/// The fields of an entry, as a validation error names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Cidr,
    Ttl,
    Comment,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::Cidr => "cidr",
            Field::Ttl => "ttl",
            Field::Comment => "comment",
        }
    }
}

/// What is wrong with the value of a field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Not an address or prefix (the message quotes the input).
    Prefix(String),
    BadTtl {
        input: String,
        reason: String,
    },
    TtlZero,
    TtlTooLong {
        given: String,
    },
    CommentTooLong {
        len: usize,
        max: usize,
    },
    CommentControl {
        found: String,
    },
    /// Broader than /`min`, and not forced.
    TooBroad {
        net: String,
        min: u8,
    },
}

/// A field of an entry that breaks a rule. Its message names neither a flag nor a key: each
/// front end names the field and the switch that forces a broad entry its own way
/// ([`FieldError::spelled`]): `--ttl` and `add --force` on the CLI, `entries[3].ttl` and
/// `"force": true` in the API, `lists.block[3].ttl` and `force = true` in the file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.spelled(self.field.name(), "force it"))]
pub struct FieldError {
    pub field: Field,
    pub problem: Problem,
}

impl FieldError {
    fn new(field: Field, problem: Problem) -> FieldError {
        FieldError { field, problem }
    }

    /// The message as a front end says it: `field` is its name for the field ("" when the
    /// message quotes the value itself, as the CLI's positional entries do), `force` how to
    /// take a broad entry anyway.
    pub fn spelled(&self, field: &str, force: &str) -> String {
        let problem = match &self.problem {
            Problem::Prefix(message) => message.clone(),
            Problem::BadTtl { input, reason } => {
                format!("`{input}`: {reason} (e.g. 30s, 10m, 1h, 7d)")
            }
            Problem::TtlZero => {
                "must be more than 0; leave the TTL out for an entry that never expires".into()
            }
            Problem::TtlTooLong { given } => format!(
                "{given} is longer than the maximum, 10years; leave the TTL out for an entry \
                 that never expires"
            ),
            Problem::CommentTooLong { len, max } => {
                format!("{len} bytes long; at most {max} are kept")
            }
            Problem::CommentControl { found } => {
                format!("holds the control character {found}; use printable text only")
            }
            Problem::TooBroad { net, min } => format!(
                "{net} is broader than /{min} and would drop (nearly) every source, your own \
                 access included: if you mean it, {force}"
            ),
        };
        if field.is_empty() {
            problem
        } else {
            format!("{field}: {problem}")
        }
    }
}

/// Check a TTL: more than 0, at most [`TTL_MAX`].
pub fn check_ttl(ttl: Duration) -> Result<Duration, FieldError> {
    if ttl.is_zero() {
        return Err(FieldError::new(Field::Ttl, Problem::TtlZero));
    }
    if ttl > TTL_MAX {
        let given = humantime::format_duration(ttl).to_string();
        return Err(FieldError::new(Field::Ttl, Problem::TtlTooLong { given }));
    }
    Ok(ttl)
}

/// Parse a TTL as people write it (`30s`, `10m`, `1h30m`, `7d`) and check it.
pub fn parse_ttl(text: &str) -> Result<Duration, FieldError> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        let (input, reason) = (quote(text), e.to_string());
        FieldError::new(Field::Ttl, Problem::BadTtl { input, reason })
    })?;
    check_ttl(d)
}

/// Check a comment: at most [`COMMENT_MAX`] bytes, no control characters (they would run as
/// escape sequences in the terminal of whoever lists the entries, or fake a line).
pub fn check_comment(comment: &str) -> Result<(), FieldError> {
    if comment.len() > COMMENT_MAX {
        let (len, max) = (comment.len(), COMMENT_MAX);
        return Err(FieldError::new(
            Field::Comment,
            Problem::CommentTooLong { len, max },
        ));
    }
    if let Some(c) = comment.chars().find(|c| c.is_control()) {
        let found = c.escape_default().to_string();
        return Err(FieldError::new(
            Field::Comment,
            Problem::CommentControl { found },
        ));
    }
    Ok(())
}

/// Check a whole entry: TTL and comment (the library's own last check before any write).
pub fn check_item(item: &Item) -> Result<(), FieldError> {
    if let Some(t) = item.ttl {
        check_ttl(t)?;
    }
    if let Some(c) = &item.comment {
        check_comment(c)?;
    }
    Ok(())
}

/// Refuse an entry that would cover (nearly) everyone, unless `force`. Prefixes that lie wholly
/// inside multicast and reserved space (224.0.0.0/3, ff00::/8) are fine at any length: no real
/// peer sends from there (FireHOL's level1 list carries 224.0.0.0/3).
pub fn check_breadth(net: &IpNet, force: bool) -> Result<(), FieldError> {
    if force {
        return Ok(());
    }
    let (min, harmless): (u8, IpNet) = match net {
        IpNet::V4(_) => (MIN_PREFIX_V4, "224.0.0.0/3".parse().expect("valid")),
        IpNet::V6(_) => (MIN_PREFIX_V6, "ff00::/8".parse().expect("valid")),
    };
    if net.prefix_len() >= min || harmless.contains(net) {
        return Ok(());
    }
    let net = display(net);
    Err(FieldError::new(Field::Cidr, Problem::TooBroad { net, min }))
}

/// A list entry as written in the TOML file and the push API: `"CIDR"` or
/// `{cidr, ttl, comment}` (the one input shape of both; the CLI has a flag per field).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum EntryText {
    Cidr(String),
    Full(FullEntry),
}

/// `{cidr, ttl, comment}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullEntry {
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl<'de> serde::Deserialize<'de> for EntryText {
    /// A string or a table, each with its own errors (an unknown field is named, not lost in
    /// "no variant matched").
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Shape;
        impl<'de> serde::de::Visitor<'de> for Shape {
            type Value = EntryText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list entry: \"CIDR\" or {cidr, ttl, comment}")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<EntryText, E> {
                Ok(EntryText::Cidr(s.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<EntryText, A::Error> {
                let full = serde::de::value::MapAccessDeserializer::new(map);
                serde::Deserialize::deserialize(full).map(EntryText::Full)
            }
        }
        d.deserialize_any(Shape)
    }
}

impl EntryText {
    /// Parse and check every field; with `force` false, also refuse a broad entry
    /// ([`check_breadth`]).
    pub fn parse(self, force: bool) -> Result<Item, FieldError> {
        let (cidr, ttl, comment) = match self {
            EntryText::Cidr(cidr) => (cidr, None, None),
            EntryText::Full(f) => (f.cidr, f.ttl, f.comment),
        };
        let net = parse_prefix(&cidr)
            .map_err(|e| FieldError::new(Field::Cidr, Problem::Prefix(e.to_string())))?;
        check_breadth(&net, force)?;
        let ttl = ttl.as_deref().map(parse_ttl).transpose()?;
        if let Some(c) = &comment {
            check_comment(c)?;
        }
        Ok(Item { net, ttl, comment })
    }

    /// How `item` is written: a bare prefix when it has no TTL and no comment.
    pub fn of(item: &Item) -> EntryText {
        let cidr = display(&item.net);
        if item.ttl.is_none() && item.comment.is_none() {
            return EntryText::Cidr(cidr);
        }
        EntryText::Full(FullEntry {
            cidr,
            ttl: item.ttl.map(|t| humantime::format_duration(t).to_string()),
            comment: item.comment.clone(),
        })
    }
}

/// Quote user input in an error: unprintable characters escaped, cut to [`QUOTE_MAX`]
/// characters with the length of the rest said.
pub fn quote(input: &str) -> String {
    cut(input, QUOTE_MAX)
}

/// `text` with unprintable characters escaped, cut to `max` characters with the length of the
/// rest said: for messages that may carry user input quoted by others (serde's, say).
pub fn cut(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    for c in chars.by_ref().take(max) {
        push_escaped(&mut out, c);
    }
    let rest = chars.as_str().len();
    if rest > 0 {
        out.push_str(&format!("... ({rest} more bytes)"));
    }
    out
}

/// Text from the maps as it may be shown on a terminal: control characters escaped.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    // The byte-order mark and other invisible format characters are escaped too: an error
    // must show what is there.
    if c.is_control() || matches!(c, '\u{feff}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}')
    {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

/// An IPv4-mapped IPv6 prefix (`::ffff:a.b.c.d`, `::ffff:0:0/96` and longer) as the IPv4
/// prefix it means: packets from that address arrive as IPv4.
pub fn unmap(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).expect("0..=32"),
            None => net,
        },
        _ => net,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        for (text, ok) in [
            ("30s", true),
            ("10m", true),
            ("3650days", true),
            ("3651days", false),
            ("1000y", false),
            ("18446744073s", false),
            ("18446744073709551615s", false),
            ("0s", false),
            ("0", false),
            ("soon", false),
        ] {
            assert_eq!(
                parse_ttl(text).is_ok(),
                ok,
                "ttl {text:?}: {:?}",
                parse_ttl(text)
            );
        }
        let e = parse_ttl("0s").expect_err("zero");
        assert_eq!(e.field, Field::Ttl);
        assert!(e.to_string().contains("leave the TTL out"), "{e}");
        let e = parse_ttl("1000y").expect_err("too long");
        assert!(e.to_string().contains("maximum, 10years"), "{e}");
    }

    #[test]
    fn comments_refuse_control_characters() {
        for bad in ["a\nb", "\u{1b}[31mred", "nul\0", "cr\r", "tab\there"] {
            let e = check_comment(bad).expect_err(bad);
            assert!(e.to_string().contains("control character"), "{e}");
        }
        for good in ["feed X", "SBL123 – spamhaus", "ünïcödé"] {
            check_comment(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    #[test]
    fn breadth() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        for (net, ok) in [
            ("0.0.0.0/0", false),
            ("0.0.0.0/1", false),
            ("10.0.0.0/7", false),
            ("10.0.0.0/8", true),
            ("224.0.0.0/3", true),
            ("240.0.0.0/4", true),
            ("::/0", false),
            ("2000::/3", false),
            ("2001::/16", true),
            ("ff00::/8", true),
        ] {
            assert_eq!(check_breadth(&n(net), false).is_ok(), ok, "{net}");
            assert!(check_breadth(&n(net), true).is_ok(), "{net} forced");
        }
        let e = check_breadth(&n("0.0.0.0/0"), false).expect_err("/0");
        assert_eq!(e.field, Field::Cidr);
        let cli = e.spelled("", "add --force");
        assert!(
            cli.starts_with("0.0.0.0/0 is broader") && cli.ends_with("add --force"),
            "{cli}"
        );
    }

    #[test]
    fn entry_text_errors_name_the_field() {
        let parse = |json: &str, force: bool| {
            serde_json::from_str::<EntryText>(json)
                .map_err(|e| e.to_string())
                .and_then(|t| t.parse(force).map_err(|e| e.spelled("at", "force it")))
        };
        let ok = parse(
            r#"{"cidr": "198.18.0.0/24", "ttl": "1h", "comment": "x"}"#,
            false,
        );
        assert_eq!(
            ok.expect("a full entry").ttl,
            Some(Duration::from_secs(3600))
        );
        for (json, force, want) in [
            (r#""198.18.0.1/15""#, false, "at: 198.18.0.1/15: host bits"),
            (r#""0.0.0.0/0""#, false, "if you mean it, force it"),
            (
                r#"{"cidr": "198.18.0.1", "ttl": "0s"}"#,
                false,
                "at: must be more than 0",
            ),
            (
                r#"{"cidr": "198.18.0.1", "comment": "a\nb"}"#,
                false,
                "at: holds the control",
            ),
            (
                r#"{"cidr": "198.18.0.1", "tll": "1h"}"#,
                false,
                "unknown field `tll`",
            ),
            (r#"{"ttl": "1h"}"#, false, "missing field `cidr`"),
            ("7", false, "expected a list entry"),
        ] {
            let e = parse(json, force).expect_err(json);
            assert!(e.contains(want), "{json}: want {want:?} in {e}");
        }
        assert!(parse(r#""0.0.0.0/0""#, true).is_ok(), "forced");
        let item = parse(r#"{"cidr": "198.18.0.0/24", "ttl": "1h"}"#, false).expect("item");
        let text = serde_json::to_string(&EntryText::of(&item)).expect("json");
        assert_eq!(parse(&text, false).expect("round trip"), item);
    }

    #[test]
    fn quoting_escapes_and_cuts() {
        assert_eq!(quote("a\u{1b}b"), "a\\u{1b}b");
        assert_eq!(quote("\u{feff}1.2.3.4"), "\\u{feff}1.2.3.4");
        let long = "x".repeat(10_000_000);
        let q = quote(&long);
        assert!(q.len() < 100, "cut: {} bytes", q.len());
        assert!(q.ends_with("(9999936 more bytes)"), "{q}");
        assert_eq!(printable("evil\nline"), "evil\\nline");
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(unmap(n("::ffff:198.18.0.1/128")), n("198.18.0.1/32"));
        assert_eq!(unmap(n("::ffff:198.18.0.0/112")), n("198.18.0.0/16"));
        assert_eq!(unmap(n("::ffff:0:0/96")), n("0.0.0.0/0"));
        assert_eq!(unmap(n("2001:db8::1/128")), n("2001:db8::1/128"));
        assert_eq!(unmap(n("::/0")), n("::/0"));
    }
}
