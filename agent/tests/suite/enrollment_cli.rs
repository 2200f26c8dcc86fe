//! `cc-ci-agent enrollment ...` driven as a user would, in temp dirs.
use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{agent, agent_in, repo, snapshot};

fn example_copy(dir: &Path) -> PathBuf {
    let path = dir.join("enrollment.toml");
    fs::copy(repo().join("tests/enrollment/valid/example.toml"), &path).expect("copy example");
    path
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).expect("read")
}

#[test]
fn add_appends_and_keeps_every_comment_and_line_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = example_copy(dir.path());
    let before = read(&file);
    let f = file.to_string_lossy();
    let run = agent(&["enrollment", "--file", &f, "add", "ghost", "--canonical"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = agent(&[
        "enrollment",
        "--file",
        &f,
        "add",
        "mumble",
        "--upstream",
        "https://example.org/mumble.git",
        "--tests-exempt",
        "suite being written",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let after = read(&file);
    assert!(
        after.starts_with(&before),
        "the original text must survive unchanged:\n{after}"
    );
    assert_eq!(
        &after[before.len()..],
        "\n[recipe.ghost]\ncanonical = true\n\n[recipe.mumble]\nupstream = \"https://example.org/mumble.git\"\ntests = \"exempt\"\nreason = \"suite being written\"\n"
    );
    let poll = agent(&["enrollment", "--file", &f, "poll-repos"]);
    assert_eq!(poll.stdout, "custom-html,ghost,hedgedoc,mumble,plausible\n");
}

#[test]
fn remove_takes_out_one_table_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = example_copy(dir.path());
    let before = read(&file);
    let run = agent(&[
        "enrollment",
        "--file",
        &file.to_string_lossy(),
        "remove",
        "plausible",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let after = read(&file);
    let removed: Vec<&str> = before
        .lines()
        .filter(|l| !after.lines().any(|a| a == *l))
        .collect();
    assert_eq!(
        removed.len(),
        3,
        "only the plausible table's three lines go: {removed:#?}"
    );
    assert!(removed
        .iter()
        .all(|l| l.contains("plausible") || l.contains("canonical") || l.contains("upgrade_base")));
    assert!(after.contains("# enrolled with defaults") && after.contains("# per-recipe override"));
}

/// Comments written by hand around recipes declared in the dotted and inline forms survive
/// the removal of one recipe (and an add and remove of another).
#[test]
fn remove_keeps_comments_around_dotted_and_inline_recipes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("enrollment.toml");
    let f = file.to_string_lossy();
    let dotted = "# the ghost note\nrecipe.ghost.canonical = true\n\
                  # the plausible note\nrecipe.plausible.canonical = true\n\n[defaults]\nbranch = \"main\"\n";
    fs::write(&file, dotted).expect("write");
    let run = agent(&["enrollment", "--file", &f, "remove", "ghost"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let after = read(&file);
    assert!(after.contains("# the ghost note"), "{after}");
    assert!(after.contains("# the plausible note"), "{after}");
    assert!(!after.contains("ghost.canonical"), "{after}");

    let inline = "recipe = { plausible = { canonical = true } } # the inline note\n\n[defaults]\nbranch = \"main\"\n";
    fs::write(&file, inline).expect("write");
    let run = agent(&["enrollment", "--file", &f, "add", "ghost"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = agent(&["enrollment", "--file", &f, "remove", "ghost"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let after = read(&file);
    assert!(after.contains("# the inline note"), "{after}");
    let poll = agent(&["enrollment", "--file", &f, "poll-repos"]);
    assert_eq!(poll.stdout, "plausible\n", "{after}");
}

/// `add` then `remove` of the same recipe gives the file back byte for byte, whatever its
/// shape: comments on table headers, inline and nested tables, comments and blank lines at the
/// end, no newline at the end, CRLF line ends.
#[test]
fn add_then_remove_gives_the_file_back_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("enrollment.toml");
    let f = file.to_string_lossy().into_owned();
    let shapes = [
        "[defaults]\nupstream = \"https://x.example/{recipe}.git\"  # where\n\n[recipe.a]  # a\ncanonical = true # yes\n",
        "[defaults]\nbranch = \"main\"\n[recipe.a]\ncanonical = true\n# about a\n",
        "[defaults]\nbranch = \"main\"\n[recipe.a]\ncanonical = true\n# c1\n\n# c2\n",
        "[defaults]\nbranch = \"main\"\n[recipe.a]\ncanonical = true\n\n\n",
        "[defaults]\nbranch = \"main\"\n\n[recipe.a]\ncanonical = true # yes",
        "[defaults]\nbranch = \"main\"\n\n[recipe.a]  # a",
        "[defaults]\nbranch = \"main\"\n\n[recipe]\n\n[recipe.a] # inline\n\n",
        "[defaults]\nbranch = \"main\"\n\n[recipe] # all of them\n[recipe.a]  # nested\ncanonical = true\n",
        "recipe = { a = { canonical = true } } # the inline note\n\n[defaults]\nbranch = \"main\"\n",
        "[recipe]\na = { canonical = true } # inline in a table\n",
        "# the a note\nrecipe.a.canonical = true # dotted\n\n[defaults]\nbranch = \"main\"\n",
        "[recipe.a] # a\n\n[defaults] # d\nbranch = \"main\"\n",
    ];
    let mut failed = Vec::new();
    for shape in shapes {
        for text in [shape.to_string(), shape.replace('\n', "\r\n")] {
            fs::write(&file, &text).expect("write");
            let add = agent(&["enrollment", "--file", &f, "add", "ghost", "--canonical"]);
            let remove = agent(&["enrollment", "--file", &f, "remove", "ghost"]);
            assert_eq!(
                (add.code, remove.code),
                (0, 0),
                "{text:?}: {}{}",
                add.stderr,
                remove.stderr
            );
            let after = read(&file);
            if after != text {
                failed.push(format!("{text:?}\n  became {after:?}"));
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn refused_edits_write_nothing_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = example_copy(dir.path());
    let f = file.to_string_lossy();
    let before = snapshot(dir.path());
    for (args, says) in [
        (vec!["add", "plausible"], "already declared"),
        (
            vec!["add", "old-thing"],
            "set enrolled = true there instead",
        ),
        (vec!["add", "../x"], "recipe name"),
        (vec!["add", "Ghost"], "recipe name"),
        (
            vec![
                "add",
                "ghost",
                "--upstream",
                "http://insecure.example.org/g.git",
            ],
            "http://",
        ),
        (
            vec!["add", "ghost", "--tests-exempt", " "],
            "needs a reason",
        ),
        (vec!["remove", "not-declared"], "not declared"),
    ] {
        let mut full = vec!["enrollment", "--file", &f];
        full.extend(&args);
        let run = agent(&full);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr_lines().len(), 1, "{args:?}: {}", run.stderr);
        assert_eq!(snapshot(dir.path()), before, "{args:?} wrote something");
    }
}

#[test]
fn import_turns_todays_csv_into_an_enrollment_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("enrollment.toml");
    let o = out.to_string_lossy();
    let csv = "plausible, custom-html,hedgedoc ,mumble,";
    let run = agent(&["enrollment", "--file", &o, "import", "--poll-repos", csv]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, format!("wrote {o} with 4 recipes\n"));
    let poll = agent(&["enrollment", "--file", &o, "poll-repos"]);
    assert_eq!(poll.stdout, "custom-html,hedgedoc,mumble,plausible\n");

    // An existing file is never replaced by accident.
    let before = snapshot(dir.path());
    let again = agent(&["enrollment", "--file", &o, "import", "--poll-repos", "a"]);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    assert_eq!(snapshot(dir.path()), before);
    let forced = agent(&[
        "enrollment",
        "--file",
        &o,
        "import",
        "--poll-repos",
        "a",
        "--force",
    ]);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert_eq!(
        agent(&["enrollment", "--file", &o, "poll-repos"]).stdout,
        "a\n"
    );

    // Bad names and duplicates: located by position, nothing written.
    let before = snapshot(dir.path());
    let bad = agent(&[
        "enrollment",
        "--file",
        &o,
        "import",
        "--poll-repos",
        "a,B c,a",
        "--force",
    ]);
    assert_eq!(bad.code, 2);
    assert_eq!(bad.stderr_lines().len(), 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("POLL_REPOS[1]") && bad.stderr.contains("POLL_REPOS[2]"),
        "{}",
        bad.stderr
    );
    assert_eq!(snapshot(dir.path()), before);

    let stdout = agent(&[
        "enrollment",
        "--file",
        &o,
        "import",
        "--poll-repos",
        "x,y",
        "--output",
        "-",
    ]);
    assert!(
        stdout.stdout.contains("[recipe.x]\n\n[recipe.y]\n"),
        "{}",
        stdout.stdout
    );
}

#[test]
fn check_requires_a_suite_for_every_enrolled_recipe_unless_exempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = example_copy(dir.path());
    let suites = dir.path().join("suites");
    fs::create_dir_all(suites.join("custom-html")).expect("mkdir");
    let (f, s) = (file.to_string_lossy(), suites.to_string_lossy());

    // plausible has no suite: an error, exit 3.
    let run = agent(&["enrollment", "--file", &f, "check", "--tests-dir", &s]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("error: plausible: enrolled with tests required"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("old-thing"),
        "unenrolled recipes need no suite: {}",
        run.stdout
    );

    let json = agent(&[
        "--format",
        "json",
        "enrollment",
        "--file",
        &f,
        "check",
        "--tests-dir",
        &s,
    ]);
    assert_eq!(json.code, 3);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["problems"][0]["recipe"], "plausible");
    assert_eq!(v["poll_repos"], "custom-html,hedgedoc,plausible");

    // Suite added: clean. hedgedoc getting a suite while exempt: a warning, still exit 0.
    fs::create_dir_all(suites.join("plausible")).expect("mkdir");
    fs::create_dir_all(suites.join("hedgedoc")).expect("mkdir");
    let run = agent(&["enrollment", "--file", &f, "check", "--tests-dir", &s]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("warning: hedgedoc: exempt from tests, but"),
        "{}",
        run.stdout
    );

    // Without a tests directory, check says that suites were not checked.
    let run = agent(&["enrollment", "--file", &f, "check"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("test suites: not checked"),
        "{}",
        run.stdout
    );

    let missing = agent(&[
        "enrollment",
        "--file",
        &f,
        "check",
        "--tests-dir",
        "/nonexistent/suites",
    ]);
    assert_eq!(missing.code, 2, "{}", missing.stderr);
}

#[test]
fn config_paths_resolve_against_the_config_file_from_any_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etc = dir.path().join("etc");
    fs::create_dir_all(etc.join("suites/custom-html")).expect("mkdir");
    fs::create_dir_all(etc.join("suites/plausible")).expect("mkdir");
    example_copy(&etc);
    fs::write(
        etc.join("agent.toml"),
        "enrollment_file = \"enrollment.toml\"\ntests_dir = \"suites\"\n",
    )
    .expect("write");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let config = etc.join("agent.toml");
    let run = agent_in(
        Some(elsewhere.path()),
        &["--config", &config.to_string_lossy(), "enrollment", "check"],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains(&format!("checked against {}", etc.join("suites").display())),
        "{}",
        run.stdout
    );

    // The environment variable names the config just as --config does.
    let out = std::process::Command::new(common::bin())
        .args(["enrollment", "poll-repos"])
        .env("CC_CI_AGENT_CONFIG", &config)
        .current_dir(elsewhere.path())
        .output();
    let run = common::finish(out);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "custom-html,hedgedoc,plausible\n"),
        "{}",
        run.stderr
    );
}

#[test]
fn no_config_anywhere_is_explained() {
    if Path::new("/etc/cc-ci/agent.toml").exists() {
        eprintln!(
            "SKIPPED part: /etc/cc-ci/agent.toml exists on this machine, so the default is found"
        );
        return;
    }
    let run = agent(&["enrollment", "list"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("pass --config FILE or set CC_CI_AGENT_CONFIG"),
        "{}",
        run.stderr
    );
}

#[test]
fn list_in_json_gives_every_default_applied() {
    let file = repo().join("tests/enrollment/valid/example.toml");
    let run = agent(&[
        "--format",
        "json",
        "enrollment",
        "--file",
        &file.to_string_lossy(),
        "list",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    let recipes = v["recipes"].as_array().expect("recipes");
    let names: Vec<&str> = recipes.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["custom-html", "hedgedoc", "old-thing", "plausible"]);
    assert_eq!(
        recipes[0]["upstream"],
        "https://git.coopcloud.tech/coop-cloud/custom-html.git"
    );
    assert_eq!(recipes[1]["tests"]["mode"], "exempt");
    assert_eq!(recipes[1]["tests"]["reason"], "suite being written");
    assert_eq!(recipes[2]["branch"], "master");
    assert_eq!(recipes[3]["upgrade_base"], "3.0.1+v2.0.0");
}

/// Colour only on a terminal, never with NO_COLOR. `script` gives the agent a real pty.
#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let file = repo().join("tests/enrollment/valid/example.toml");
    let piped = agent(&["enrollment", "--file", &file.to_string_lossy(), "list"]);
    assert!(
        !piped.stdout.contains('\x1b'),
        "escape codes in piped output"
    );

    let Ok(script) = which("script") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "script(1) missing: the pty colour check cannot run"
        );
        eprintln!("SKIPPED pty part: script(1) not found (util-linux)");
        return;
    };
    let cmd = format!(
        "{} enrollment --file {} list",
        common::bin(),
        file.display()
    );
    let on_tty = |no_color: bool| {
        let mut c = std::process::Command::new(&script);
        c.args(["-qec", &cmd, "/dev/null"]).env_remove("NO_COLOR");
        if no_color {
            c.env("NO_COLOR", "1");
        }
        common::run(&mut c)
    };
    let tty = on_tty(false);
    assert_eq!(tty.code, 0, "{}", tty.stderr);
    assert!(
        tty.stdout.contains("\x1b[1mRECIPE"),
        "a terminal gets colour: {:?}",
        tty.stdout
    );
    let plain = on_tty(true);
    assert!(
        plain.stdout.contains("RECIPE") && !plain.stdout.contains('\x1b'),
        "{:?}",
        plain.stdout
    );
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

#[test]
fn set_changes_a_declared_recipe_and_keeps_the_rest_of_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = example_copy(dir.path());
    let before = read(&file);
    let f = file.to_string_lossy();
    let set = |args: &[&str]| {
        let mut full = vec!["enrollment", "--file", &f, "set"];
        full.extend_from_slice(args);
        agent(&full)
    };
    let run = set(&[
        "custom-html",
        "--canonical",
        "--branch",
        "master",
        "--upgrade-base",
        "1.2.0+1.25",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let after = read(&file);
    assert!(
        after.contains("canonical = true") && after.contains("branch = \"master\""),
        "{after}"
    );
    assert!(after.contains("upgrade_base = \"1.2.0+1.25\""), "{after}");
    for line in before.lines().filter(|l| l.trim_start().starts_with('#')) {
        assert!(after.contains(line), "comment lost: {line}\n{after}");
    }
    let list = agent(&["--format", "json", "enrollment", "--file", &f, "list"]);
    assert!(
        list.stdout.contains("\"branch\": \"master\""),
        "{}",
        list.stdout
    );

    // And back: the keys go, the defaults apply again.
    assert_eq!(
        set(&["custom-html", "--no-canonical", "--no-upgrade-base"]).code,
        0
    );
    let after = read(&file);
    assert!(!after.contains("upgrade_base = \"1.2.0+1.25\""), "{after}");
    assert_eq!(
        set(&["hedgedoc", "--tests-required", "--not-enrolled"]).code,
        0
    );
    let after = read(&file);
    assert!(
        !after.contains("suite being written") && after.contains("enrolled = false"),
        "{after}"
    );
    let poll = agent(&["enrollment", "--file", &f, "poll-repos"]);
    assert!(!poll.stdout.contains("hedgedoc"), "{}", poll.stdout);

    // Refusals write nothing and name the key.
    let unchanged = read(&file);
    let bad = set(&["custom-html", "--upgrade-base", "v1"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("upgrade_base"), "{}", bad.stderr);
    assert_eq!(set(&["ghost", "--canonical"]).code, 2, "not declared");
    assert_eq!(
        set(&["custom-html", "--canonical", "--no-canonical"]).code,
        2
    );
    assert_eq!(read(&file), unchanged);
    let again = agent(&["enrollment", "--file", &f, "add", "custom-html"]);
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("enrollment set custom-html"),
        "{}",
        again.stderr
    );
}

#[test]
fn import_canonical_keeps_a_repository_that_is_not_a_recipe_polled_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("enrollment.toml");
    let o = out.to_string_lossy();
    let csv = "plausible,cc-ci,ghost";
    let run = agent(&[
        "enrollment",
        "--file",
        &o,
        "import",
        "--poll-repos",
        csv,
        "--canonical",
        "--not-recipe",
        "cc-ci",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let poll = agent(&["enrollment", "--file", &o, "poll-repos"]);
    assert_eq!(
        poll.stdout, "cc-ci,ghost,plausible\n",
        "POLL_REPOS unchanged"
    );
    let check = agent(&["--format", "json", "enrollment", "--file", &o, "check"]);
    let v: serde_json::Value = serde_json::from_str(&check.stdout).expect("json");
    assert_eq!(
        (v["declared"].clone(), v["canonical"].clone()),
        (2.into(), 2.into()),
        "{v}"
    );
    let wrong = agent(&[
        "enrollment",
        "--file",
        &o,
        "import",
        "--poll-repos",
        csv,
        "--force",
        "--not-recipe",
        "bridge",
    ]);
    assert_eq!(wrong.code, 2, "{}", wrong.stderr);
}

#[test]
fn canonical_in_defaults_applies_and_set_writes_only_what_differs_from_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("enrollment.toml");
    fs::write(
        &file,
        "[defaults]\ncanonical = true\n\n[recipe.plausible]\n\n[recipe.hedgedoc]\n",
    )
    .unwrap();
    let f = file.to_string_lossy();
    let canonical = || {
        let check = agent(&["--format", "json", "enrollment", "--file", &f, "check"]);
        serde_json::from_str::<serde_json::Value>(&check.stdout).expect("json")["canonical"].clone()
    };
    assert_eq!(canonical(), 2);
    assert_eq!(
        agent(&[
            "enrollment",
            "--file",
            &f,
            "set",
            "hedgedoc",
            "--no-canonical"
        ])
        .code,
        0
    );
    assert!(
        read(&file).contains("[recipe.hedgedoc]\ncanonical = false"),
        "{}",
        read(&file)
    );
    assert_eq!(canonical(), 1);
    assert_eq!(
        agent(&["enrollment", "--file", &f, "set", "hedgedoc", "--canonical"]).code,
        0
    );
    assert!(
        !read(&file).contains("canonical = false"),
        "{}",
        read(&file)
    );
    assert_eq!(canonical(), 2);
}

#[test]
fn add_takes_the_settings_set_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = example_copy(dir.path());
    let f = file.to_string_lossy();
    let run = agent(&[
        "enrollment",
        "--file",
        &f,
        "add",
        "discourse",
        "--canonical",
        "--branch",
        "master",
        "--upgrade-base",
        "1.0.0+3.1",
        "--not-enrolled",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let list = agent(&["--format", "json", "enrollment", "--file", &f, "list"]);
    let v: serde_json::Value = serde_json::from_str(&list.stdout).expect("json");
    let r = v["recipes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "discourse")
        .cloned();
    let r = r.unwrap_or_else(|| panic!("{v}"));
    assert_eq!(
        (
            r["branch"].clone(),
            r["upgrade_base"].clone(),
            r["enrolled"].clone(),
            r["canonical"].clone()
        ),
        (
            "master".into(),
            "1.0.0+3.1".into(),
            false.into(),
            true.into()
        ),
        "{r}"
    );
    // The table shows every key too: the pin has its column.
    let human = agent(&["enrollment", "--file", &f, "list"]);
    assert!(
        human.stdout.contains("BASE PIN") && human.stdout.contains("1.0.0+3.1"),
        "{}",
        human.stdout
    );
    let bad = agent(&[
        "enrollment",
        "--file",
        &f,
        "add",
        "ghost",
        "--upgrade-base",
        "v2",
    ]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
}
