//! Man pages, generated from the clap definition (`cargo xtask man`): `floodgate(8)` and one
//! page per verb, `floodgate-block(8)`, `floodgate-run(8)`, ... A verb group's page documents
//! each of its sub-verbs in full (synopsis, description, options, examples), so
//! `man floodgate-block` answers what `floodgate block load --help` does.
//!
//! clap_mangen renders the synopses and option lists. The prose is laid out here, because the
//! doc comments keep their examples as indented lines (`verbatim_doc_comment`) and roff would
//! fill those into one paragraph: indented lines become unfilled, indented blocks.

use std::{io, path::Path};

use clap::Command;
use clap_mangen::{
    Man,
    roff::{Roff, bold, roman},
};

/// Manual section: system administration commands.
const SECTION: &str = "8";
const MANUAL: &str = "floodgate manual";

/// One generated page.
pub struct Page {
    /// `floodgate` or `floodgate-VERB`.
    pub name: String,
    /// The page in roff.
    pub roff: String,
}

impl Page {
    /// `floodgate-block.8`
    pub fn file_name(&self) -> String {
        format!("{}.{SECTION}", self.name)
    }
}

/// Every page: `floodgate(8)` first, then one per verb in the order of `floodgate --help`.
pub fn pages() -> Vec<Page> {
    let mut root = super::command();
    root.build();
    let mut out = vec![root_page(&root)];
    for verb in verbs(&root) {
        out.push(verb_page(verb));
    }
    out
}

/// Write every page into `dir` (created if missing); returns the files written.
pub fn write_to(dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for page in pages() {
        let path = dir.join(page.file_name());
        std::fs::write(&path, page.roff)?;
        written.push(path);
    }
    Ok(written)
}

/// The verbs a page is made for: what `--help` lists (clap's own `help` verb left out).
pub fn verbs(cmd: &Command) -> impl Iterator<Item = &Command> {
    cmd.get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
}

/// `floodgate-block` for `floodgate block`.
fn page_name(cmd: &Command) -> String {
    cmd.get_bin_name()
        .unwrap_or_else(|| cmd.get_name())
        .replace(' ', "-")
}

fn root_page(root: &Command) -> Page {
    let name = page_name(root);
    let mut page = Fragments::default();
    page.title(root, &name);
    // The top command's `about` is the package description; its doc comment says more.
    page.name_section(&name, &summary(root, root.get_long_about()));
    page.mangen(|w| Man::new(root.clone()).render_synopsis_section(w), true);
    let mut roff = Roff::new();
    roff.control("SH", ["DESCRIPTION"]);
    prose(&mut roff, &long_about(root));
    roff.control("SH", ["OPTIONS"]);
    page.roff(roff);
    page.mangen(|w| Man::new(root.clone()).render_options_section(w), false);

    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    for verb in verbs(root) {
        roff.control("TP", []);
        roff.text([bold(page_name(verb)), roman(format!("({SECTION})"))]);
        roff.text([roman(about(verb))]);
    }
    // The after-help: its examples, then the exit status.
    let after = root
        .get_after_long_help()
        .or_else(|| root.get_after_help())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let doc = split_examples(&after);
    prose(&mut roff, &doc.before);
    examples_section(&mut roff, &doc.examples);
    if let Some(status) = doc.after.trim().strip_prefix("Exit status:") {
        roff.control("SH", ["EXIT STATUS"]);
        prose(&mut roff, status.trim());
    } else {
        prose(&mut roff, &doc.after);
    }
    roff.control("SH", ["SEE ALSO"]);
    let all: Vec<String> = verbs(root)
        .map(|v| format!("{}({SECTION})", page_name(v)))
        .collect();
    roff.text([roman(all.join(", "))]);
    page.roff(roff);
    page.version(root);
    Page {
        name,
        roff: page.finish(),
    }
}

fn verb_page(verb: &Command) -> Page {
    let name = page_name(verb);
    let shown = without_globals(verb);
    let mut page = Fragments::default();
    page.title(verb, &name);
    page.name_section(&name, &about(verb));
    page.mangen(|w| Man::new(shown.clone()).render_synopsis_section(w), true);
    let doc = split_examples(&long_about(verb));
    let mut roff = Roff::new();
    roff.control("SH", ["DESCRIPTION"]);
    prose(&mut roff, &doc.before);
    prose(&mut roff, &doc.after);
    page.roff(roff);
    if shown.get_arguments().any(|a| !a.is_hide_set()) {
        let mut roff = Roff::new();
        roff.control("SH", ["OPTIONS"]);
        page.roff(roff);
        page.mangen(|w| Man::new(shown.clone()).render_options_section(w), false);
    }
    if verb.has_subcommands() {
        let mut roff = Roff::new();
        roff.control("SH", ["COMMANDS"]);
        page.roff(roff);
        for sub in verbs(verb) {
            sub_verb(&mut page, sub);
        }
    }
    let mut roff = Roff::new();
    examples_section(&mut roff, &doc.examples);
    roff.control("SH", ["GLOBAL OPTIONS"]);
    roff.text([
        roman("--pin-dir and --source-table-size (and their environment variables) apply to every verb: see "),
        bold("floodgate"),
        roman(format!("({SECTION})."))
    ]);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([bold("floodgate"), roman(format!("({SECTION})"))]);
    page.roff(roff);
    page.version(verb);
    Page {
        name,
        roff: page.finish(),
    }
}

/// A sub-verb (`floodgate block add`) in full, as a subsection of its group's page.
fn sub_verb(page: &mut Fragments, sub: &Command) {
    let shown = without_globals(sub);
    let mut roff = Roff::new();
    roff.control("SS", [sub.get_bin_name().unwrap_or_else(|| sub.get_name())]);
    page.roff(roff);
    page.mangen(
        |w| Man::new(shown.clone()).render_synopsis_section(w),
        false,
    );
    let doc = split_examples(&long_about(sub));
    let mut roff = Roff::new();
    roff.control("PP", []);
    prose(&mut roff, &doc.before);
    prose(&mut roff, &doc.after);
    page.roff(roff);
    if shown.get_arguments().any(|a| !a.is_hide_set()) {
        page.mangen(|w| Man::new(shown.clone()).render_options_section(w), false);
    }
    if !doc.examples.is_empty() {
        let mut roff = Roff::new();
        roff.control("PP", []);
        roff.text([roman(doc.label)]);
        unfilled(&mut roff, &doc.examples);
        page.roff(roff);
    }
}

/// The verb with the global options, -h and -V hidden: floodgate(8) documents them once.
fn without_globals(cmd: &Command) -> Command {
    cmd.clone().mut_args(|a| {
        if a.is_global_set() || matches!(a.get_id().as_str(), "help" | "version") {
            a.hide(true)
        } else {
            a
        }
    })
}

fn long_about(cmd: &Command) -> String {
    cmd.get_long_about()
        .or_else(|| cmd.get_about())
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// The summary: the first paragraph of `about` on one line, without a leading "floodgate: "
/// or a closing period.
fn about(cmd: &Command) -> String {
    summary(cmd, cmd.get_about().or_else(|| cmd.get_long_about()))
}

fn summary(cmd: &Command, doc: Option<&clap::builder::StyledStr>) -> String {
    let doc = doc.map(|s| s.to_string()).unwrap_or_default();
    let first = doc.trim().split("\n\n").next().unwrap_or_default();
    let about = first.split_whitespace().collect::<Vec<_>>().join(" ");
    let about = about
        .strip_prefix(&format!("{}: ", cmd.get_name()))
        .unwrap_or(&about);
    about.strip_suffix('.').unwrap_or(about).to_string()
}

/// A doc text cut at its `Examples:` (or `Example:`) block.
struct Doc {
    before: String,
    /// The block's own heading, `Examples:` or `Example:`.
    label: String,
    /// The example lines, indent removed.
    examples: Vec<String>,
    after: String,
}

fn split_examples(text: &str) -> Doc {
    let lines: Vec<&str> = text.lines().collect();
    let Some(at) = lines
        .iter()
        .position(|l| matches!(l.trim_end(), "Examples:" | "Example:"))
    else {
        return Doc {
            before: text.to_string(),
            label: String::new(),
            examples: Vec::new(),
            after: String::new(),
        };
    };
    let mut end = at + 1;
    while end < lines.len() && lines[end].starts_with(' ') {
        end += 1;
    }
    let examples = lines[at + 1..end]
        .iter()
        .map(|l| l.trim().to_string())
        .collect();
    Doc {
        before: lines[..at].join("\n"),
        label: lines[at].trim().to_string(),
        examples,
        after: lines[end..].join("\n"),
    }
}

fn examples_section(roff: &mut Roff, examples: &[String]) {
    if examples.is_empty() {
        return;
    }
    roff.control("SH", ["EXAMPLES"]);
    unfilled(roff, examples);
}

/// Lines kept as they are (commands), indented.
fn unfilled(roff: &mut Roff, lines: &[impl AsRef<str>]) {
    roff.control("RS", ["4"]);
    roff.control("nf", []);
    for l in lines {
        roff.text([roman(l.as_ref())]);
    }
    roff.control("fi", []);
    roff.control("RE", []);
}

/// Doc-comment text: paragraphs filled, indented lines kept as they are.
fn prose(roff: &mut Roff, text: &str) {
    let mut first = true;
    for para in text.trim().split("\n\n").filter(|p| !p.trim().is_empty()) {
        if !first {
            roff.control("PP", []);
        }
        first = false;
        let mut block: Vec<&str> = Vec::new();
        for line in para.lines() {
            if line.starts_with(' ') {
                block.push(line.trim());
                continue;
            }
            if !block.is_empty() {
                unfilled(roff, &block);
                block.clear();
            }
            roff.text([roman(line.trim())]);
        }
        if !block.is_empty() {
            unfilled(roff, &block);
        }
    }
}

/// A page put together from pieces: ours, and sections clap_mangen renders. Each piece comes
/// with roff's preamble (the apostrophe string); the page carries it once, at the top.
#[derive(Default)]
struct Fragments {
    body: String,
}

impl Fragments {
    fn preamble() -> String {
        Roff::new().render()
    }

    fn push(&mut self, rendered: &str) {
        let text = rendered.strip_prefix(&Self::preamble()).unwrap_or(rendered);
        self.body.push_str(text);
    }

    fn roff(&mut self, roff: Roff) {
        self.push(&roff.render());
    }

    /// A section clap_mangen renders; `keep_heading: false` drops its `.SH` line (the section
    /// is part of one of ours).
    fn mangen(
        &mut self,
        render: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
        keep_heading: bool,
    ) {
        let mut buf = Vec::new();
        render(&mut buf).expect("rendering to memory");
        let text = String::from_utf8(buf).expect("clap_mangen writes UTF-8");
        let text = text.strip_prefix(&Self::preamble()).unwrap_or(&text);
        for line in text.lines() {
            if keep_heading || !line.starts_with(".SH ") {
                self.body.push_str(line);
                self.body.push('\n');
            }
        }
    }

    /// `.TH` by hand: roff leaves an empty argument (the date, left out so that a build is
    /// reproducible) unquoted, which shifts the ones after it.
    fn title(&mut self, cmd: &Command, name: &str) {
        let version = cmd.get_version().unwrap_or_default();
        self.body.push_str(&format!(
            ".TH {} {SECTION} \"\" \"floodgate {version}\" \"{MANUAL}\"\n",
            name.to_uppercase()
        ));
        // No hyphenation, left-aligned: command names and flags must not be split.
        self.body.push_str(".nh\n.ad l\n");
    }

    fn name_section(&mut self, name: &str, summary: &str) {
        let mut roff = Roff::new();
        roff.control("SH", ["NAME"]);
        roff.text([roman(format!("{name} - {summary}"))]);
        self.roff(roff);
    }

    fn version(&mut self, cmd: &Command) {
        if let Some(v) = cmd.get_version() {
            let mut roff = Roff::new();
            roff.control("SH", ["VERSION"]);
            roff.text([roman(v)]);
            self.roff(roff);
        }
    }

    fn finish(self) -> String {
        Self::preamble() + &self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tree;

    /// A page's text as a reader sees the words: roff's escapes and font changes removed.
    fn plain(roff: &str) -> String {
        roff.replace("\\-", "-")
            .replace("\\fB", "")
            .replace("\\fI", "")
            .replace("\\fR", "")
    }

    fn page<'a>(pages: &'a [Page], name: &str) -> &'a Page {
        pages
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no man page {name}"))
    }

    #[test]
    fn every_verb_sub_verb_and_flag_is_in_the_man_pages() {
        let pages = pages();
        let nodes = tree::nodes();
        let mut names: Vec<&str> = pages.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        let mut want: Vec<String> = nodes
            .iter()
            .filter(|n| n.path.len() == 1)
            .map(|n| format!("floodgate-{}", n.path[0]))
            .chain(["floodgate".to_string()])
            .collect();
        want.sort_unstable();
        assert_eq!(names, want, "one page for floodgate and one per verb");

        let root = plain(&page(&pages, "floodgate").roff);
        for global in ["--pin-dir", "--source-table-size", "FLOODGATE_PIN_DIR"] {
            assert!(root.contains(global), "floodgate(8) documents {global}");
        }
        for node in &nodes {
            let verb = &node.path[0];
            let text = plain(&page(&pages, &format!("floodgate-{verb}")).roff);
            assert!(
                root.contains(&format!("floodgate-{verb}(8)")),
                "floodgate(8) lists floodgate-{verb}(8)"
            );
            // A sub-verb is a subsection of its group's page: its flags are looked for there.
            let section = match node.path.len() {
                1 => text.clone(),
                2 => {
                    let heading = format!(".SS \"floodgate {}\"", node.path.join(" "));
                    let start = text
                        .find(&heading)
                        .unwrap_or_else(|| panic!("floodgate-{verb}(8) has no section {heading}"));
                    let rest = &text[start + heading.len()..];
                    let end = [rest.find(".SS "), rest.find(".SH ")]
                        .into_iter()
                        .flatten()
                        .min()
                        .unwrap_or(rest.len());
                    rest[..end].to_string()
                }
                _ => panic!(
                    "floodgate {}: verbs three deep need a page layout of their own",
                    node.path.join(" ")
                ),
            };
            for flag in &node.flags {
                assert!(
                    section.contains(&format!("--{flag}")),
                    "man page of floodgate {} documents --{flag}",
                    node.path.join(" ")
                );
            }
        }
    }

    #[test]
    fn examples_stay_one_command_a_line() {
        let pages = pages();
        let block = plain(&page(&pages, "floodgate-block").roff);
        let at = block
            .find(".nf\nfloodgate block load firehol_level1.netset --source firehol\n")
            .unwrap_or_else(|| panic!("the load example is an unfilled line:\n{block}"));
        assert!(block[at..].contains(".fi\n"), "the unfilled block ends");
        let root = &page(&pages, "floodgate").roff;
        assert!(root.contains(".SH \"EXIT STATUS\""), "{root}");
        assert!(
            root.starts_with(&Roff::new().render()) && root.matches(".TH ").count() == 1,
            "one preamble, one title:\n{root}"
        );
    }
}
