//! completions: shell completion scripts, generated from the same clap definition as --help.

use std::io::Write as _;

use clap::{Args, ValueEnum};

/// Print a completion script for bash, zsh or fish on standard output.
///
/// The script is generated from this floodgate's own command definition, so it completes
/// every verb and flag of this version. Save it where the shell looks for completions.
///
/// Examples:
///   floodgate completions bash > /etc/bash_completion.d/floodgate
///   floodgate completions zsh > /usr/local/share/zsh/site-functions/_floodgate
///   floodgate completions fish > ~/.config/fish/completions/floodgate.fish
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Shell {
    pub const ALL: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> String {
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(generator, &mut super::command(), "floodgate", &mut out);
    String::from_utf8(out).expect("clap_complete writes UTF-8")
}

pub fn completions(a: CompletionsArgs) -> anyhow::Result<()> {
    std::io::stdout().write_all(script(a.shell).as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tree;

    /// What bash offers after `floodgate WORDS... CUR`, for each query, from the real script.
    fn bash_completes(queries: &[(Vec<String>, &str)]) -> Vec<Vec<String>> {
        let dir =
            std::env::temp_dir().join(format!("floodgate-completions-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating a temporary directory");
        let file = dir.join("floodgate.bash");
        std::fs::write(&file, script(Shell::Bash)).expect("writing the script");
        let mut driver = format!("source {}\n", file.display());
        for (words, cur) in queries {
            // COMP_WORDS as bash sets it; _floodgate gets the command, the word and the one
            // before it.
            let all: Vec<String> = std::iter::once("floodgate".to_string())
                .chain(words.iter().cloned())
                .chain([cur.to_string()])
                .collect();
            let quoted: Vec<String> = all.iter().map(|w| format!("'{w}'")).collect();
            driver.push_str(&format!(
                "COMP_WORDS=({}); COMP_CWORD={}; COMPREPLY=(); _floodgate floodgate '{cur}' '{}'; echo \"${{COMPREPLY[*]}}\"\n",
                quoted.join(" "),
                all.len() - 1,
                all[all.len() - 2]
            ));
        }
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&driver)
            .output()
            .expect("running bash");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "bash: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<Vec<String>> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect();
        assert_eq!(lines.len(), queries.len(), "one answer per query");
        lines
    }

    #[test]
    fn bash_completes_every_verb_sub_verb_and_flag() {
        let nodes = tree::nodes();
        // What follows `floodgate`, what follows each verb, and each verb's flags after `--`.
        let mut queries = vec![(Vec::new(), "")];
        let mut want = vec![
            nodes
                .iter()
                .filter(|n| n.path.len() == 1)
                .map(|n| n.path[0].clone())
                .collect::<Vec<_>>(),
        ];
        for n in &nodes {
            if !n.children.is_empty() {
                queries.push((n.path.clone(), ""));
                want.push(n.children.clone());
            }
            queries.push((n.path.clone(), "--"));
            want.push(n.flags.iter().map(|f| format!("--{f}")).collect());
        }
        let got = bash_completes(&queries);
        for ((query, want), got) in queries.iter().zip(&want).zip(&got) {
            for w in want {
                assert!(
                    got.contains(w),
                    "bash: `floodgate {} {}<TAB>` offers {w}; it offered {got:?}",
                    query.0.join(" "),
                    query.1
                );
            }
        }
    }

    #[test]
    fn zsh_and_fish_scripts_name_every_verb_sub_verb_and_flag() {
        let zsh = script(Shell::Zsh);
        let fish = script(Shell::Fish);
        for n in tree::nodes() {
            let name = n.path.last().expect("a path");
            let path = n.path.join(" ");
            // zsh: the verb in its parent's list of verbs, and a branch for it.
            assert!(
                zsh.contains(&format!("\n'{name}:")) && zsh.contains(&format!("({name})")),
                "zsh completes floodgate {path}"
            );
            // fish: offered where its parent is the last verb seen.
            let offered = match &n.path[..] {
                [_] => format!("__fish_floodgate_needs_command\" -f -a \"{name}\""),
                [.., parent, _] => format!("__fish_floodgate_using_subcommand {parent}; and not"),
                [] => unreachable!("paths are not empty"),
            };
            assert!(
                fish.lines()
                    .any(|l| l.contains(&offered) && l.contains(&format!("-a \"{name}\""))),
                "fish completes floodgate {path}"
            );
            for flag in &n.flags {
                assert!(
                    zsh.contains(&format!("--{flag}=[")) || zsh.contains(&format!("--{flag}[")),
                    "zsh completes floodgate {path} --{flag}"
                );
                assert!(
                    fish.lines()
                        .any(|l| l.contains(&format!("-l {flag}"))
                            && l.contains(&format!("{name}\""))),
                    "fish completes floodgate {path} --{flag}"
                );
            }
        }
    }
}
