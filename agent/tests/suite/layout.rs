//! The source's own rules, checked on the source: each program's command lines live in one
//! place. `git` is spoken only in `src/git/`; systemd and the NixOS tools only in `src/host/`;
//! processes start only through `process::Cmd`. And the binary holds no test kit.

use std::path::{Path, PathBuf};

/// Programs whose command lines belong to `git/` or `host/`, as a name in a string or a variable.
const TOOLS: [(&str, &str); 5] = [
    ("git", "git/"),
    ("systemctl", "host/"),
    ("nixos-rebuild", "host/"),
    ("nix-env", "host/"),
    ("systemd-run", "host/"),
];

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The text of each `Cmd::new(...)` argument in `text`, with its line number.
fn cmd_arguments(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("Cmd::new(") {
        let rest = &text[at + "Cmd::new(".len()..];
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map_or(rest.len(), |(i, _)| i);
        let line = text[..at].lines().count().max(1);
        out.push((line, rest[..end].to_string()));
    }
    out
}

/// Whether an argument names `tool`: `"git"`, or a variable or path such as `systemctl`,
/// `self.nix_env` or `bin.join("nixos-rebuild")`.
fn names(argument: &str, tool: &str) -> bool {
    let ident = tool.replace('-', "_");
    let words: Vec<&str> = argument
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .collect();
    words.contains(&tool) || words.contains(&ident.as_str())
}

#[test]
fn each_program_is_spoken_only_in_its_own_folder() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(file).unwrap();
        for (line, argument) in cmd_arguments(&text) {
            for (tool, home) in TOOLS {
                if names(&argument, tool) && !rel.starts_with(home) {
                    wrong.push(format!(
                        "src/{rel}:{line}: Cmd::new({argument}) belongs in src/{home}"
                    ));
                }
            }
        }
        if !rel.starts_with("process/") && text.contains("Command::new(") {
            wrong.push(format!("src/{rel}: starts a process without process::Cmd"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_what_it_looks_for() {
    let text = "let a = Cmd::new(\"git\").arg(x);\nlet b = Cmd::new(&self.nix_env);\nCmd::new(bin.join(\"nixos-rebuild\"))";
    let args = cmd_arguments(text);
    assert_eq!(args.len(), 3);
    assert!(names(&args[0].1, "git"));
    assert!(names(&args[1].1, "nix-env"));
    assert!(names(&args[2].1, "nixos-rebuild"));
    assert!(!names("\"gitea\"", "git"));
    assert_eq!(args[1].0, 2);
}

/// The release binary holds no test kit: no demo command, no emulated host's scripts.
#[test]
fn the_agent_binary_holds_no_demo_and_no_emulated_host() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_cc-ci-agent"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("mirrors"), "{help}");
    assert!(!help.contains("demo"), "{help}");
    let binary = std::fs::read(env!("CARGO_BIN_EXE_cc-ci-agent")).unwrap();
    let marker = b"A stand-in for one NixOS host program";
    assert!(
        !binary.windows(marker.len()).any(|w| w == marker),
        "the emulated host's scripts are in the agent binary"
    );
}

/// Each top-level module and the top-level modules it names (`crate::x`), doc comments left out.
fn imports(src: &Path) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut graph = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (at, _) in line.match_indices("crate::") {
                let name: String = line[at + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top {
                    graph.entry(top.clone()).or_default().insert(name);
                }
            }
        }
    }
    graph
}

/// A path back to `from` through `graph`, if there is one.
fn cycle_from(
    graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    from: &str,
) -> Option<Vec<String>> {
    let mut stack = vec![(from.to_string(), vec![from.to_string()])];
    let mut seen = std::collections::BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in graph.get(&at).into_iter().flatten() {
            if next == from {
                return Some([path.clone(), vec![from.to_string()]].concat());
            }
            if seen.insert(next.clone()) {
                stack.push((next.clone(), [path.clone(), vec![next.clone()]].concat()));
            }
        }
    }
    None
}

/// The modules form layers: the CLI imports capabilities, capabilities import the leaves
/// (`context`, `error`, `output`, `settings`, `ledger`, ...), and nothing imports back up.
#[test]
fn no_module_imports_back_up() {
    let graph = imports(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_from(&graph, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
    let mut toy = std::collections::BTreeMap::new();
    toy.insert("a".to_string(), ["b".to_string()].into());
    toy.insert("b".to_string(), ["a".to_string()].into());
    assert!(cycle_from(&toy, "a").is_some(), "the check finds a cycle");
}

/// `--format` is decided in one place (`Output::answer`, `progress`, `aside`) and the CLI's
/// error report: no command asks "is it JSON?" itself.
#[test]
fn no_command_branches_on_the_output_format() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let asking: Vec<String> = files
        .iter()
        .filter(|f| !f.ends_with("output.rs") && !f.ends_with("cli.rs"))
        .filter(|f| std::fs::read_to_string(f).unwrap().contains(".is_json()"))
        .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
        .collect();
    assert!(asking.is_empty(), "these branch on the format: {asking:?}");
}
