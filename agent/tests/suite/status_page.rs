//! `cc-ci-agent status-page` (docs/status-page.md): a fleet with every kind of recipe, written
//! as a site, then loaded in headless Chromium at a phone's width and a desktop's, and checked
//! from the DOM the browser built.

use crate::common;

use std::path::{Path, PathBuf};

use super::greenness::{Fleet, FOUR};

/// CI copies `$CASES/<recipe>/` into `{results}`, prints `$CASES/<recipe>.say`, and exits
/// `$CASES/<recipe>.exit`.
const CI: &str = r#"cp -a "$CASES/$1/." "$2/" 2>/dev/null; cat "$CASES/$1.say" 2>/dev/null; exit "$(cat "$CASES/$1.exit" 2>/dev/null || echo 0)""#;

const HOSTILE_TEST: &str = "\"><img src=x onerror=alert(1)>";
const HOSTILE_MESSAGE: &str = "<script>alert(1)</script>";
const BRIDGE_SECRET: &str = "bridge-secret-0123456789abcdef";

/// green (plausible), partly broken (custom-html), broken (wordpress: every tier fails, with
/// hostile names), never judged and mirror failed (hedgedoc: exempt, its upstream missing).
fn fleet() -> Fleet {
    let command = format!("[\"sh\", \"-c\", {CI:?}, \"ci\", \"{{recipe}}\", \"{{results}}\"]");
    let f = Fleet::new(&["plausible", "custom-html", "wordpress"], FOUR, &command);
    f.case("plausible", &["pytest-7.2/green.xml"], 0);
    f.case("custom-html", &["pytest-7.2/backup-red.xml"], 1);
    let broken = format!(
        "<testsuites><testsuite name=\"pytest\">{}</testsuite></testsuites>",
        ["install", "upgrade", "backup", "functional"]
            .map(|t| format!(
                "<testcase classname=\"{t}.test_{t}\" name=\"{}\"><failure message=\"{}\"/></testcase>",
                xml_attr(HOSTILE_TEST),
                xml_attr(&format!("{HOSTILE_MESSAGE} (found {BRIDGE_SECRET})"))
            ))
            .join("")
    );
    std::fs::write(f.path("cases/wordpress/junit.xml"), broken).unwrap();
    std::fs::write(f.path("cases/wordpress.exit"), "1").unwrap();
    // CI prints a token of the agent's that it found: the page must not repeat it.
    std::fs::write(
        f.path("cases/wordpress.say"),
        format!("found {BRIDGE_SECRET} lying around\n"),
    )
    .unwrap();
    std::fs::write(f.path("bridge-token"), BRIDGE_SECRET).unwrap();
    let mut enrollment = std::fs::read_to_string(f.path("enrollment.toml")).unwrap();
    enrollment.push_str(
        "\n[recipe.hedgedoc]\ntests = \"exempt\"\nreason = \"suite being written\"\nupstream = \"file:///nonexistent/hedgedoc.git\"\n",
    );
    std::fs::write(f.path("enrollment.toml"), enrollment).unwrap();
    let mut config = std::fs::read_to_string(&f.config).unwrap();
    config = config.replace(
        "[sweep]\n",
        "[bridge]\ntoken_file = \"bridge-token\"\n\n[sweep]\n",
    );
    std::fs::write(&f.config, config).unwrap();
    let _ = f.agent(&["mirrors", "sync"], &[]);
    let _ = f.agent(&["sweep"], &[]);
    f
}

fn xml_attr(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
        .replace('>', "&gt;")
}

fn write_site(f: &Fleet) -> PathBuf {
    let out = f.path("site");
    let run = f.agent(&["status-page", "--out", out.to_str().unwrap()], &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    out
}

#[test]
fn every_kind_of_recipe_is_a_row_of_its_own_and_nothing_from_outside_is_markup() {
    let f = fleet();
    let site = write_site(&f);
    let index = std::fs::read_to_string(site.join("index.html")).unwrap();
    for (recipe, standing) in [
        ("plausible", "green"),
        ("custom-html", "partly-broken"),
        ("wordpress", "broken"),
        ("hedgedoc", "never-judged"),
    ] {
        let row = format!("<tr class=\"{standing}\" data-recipe=\"{recipe}\">");
        assert!(index.contains(&row), "{row}\n{index}");
    }
    assert!(index.contains("4 recipes: 1 green, 1 partly broken, 1 broken, 1 never judged"));
    let green = std::fs::read_to_string(site.join("recipe/plausible.html")).unwrap();
    let history = green
        .split("The canonical&#39;s history")
        .nth(1)
        .or_else(|| green.split("The canonical's history").nth(1));
    assert!(
        history.is_some_and(|h| h
            .split("</ul>")
            .next()
            .unwrap_or_default()
            .contains("promoted")),
        "{green}"
    );
    let page = std::fs::read_to_string(site.join("recipe/wordpress.html")).unwrap();
    assert!(
        !page.contains("<img") && !page.contains("<script"),
        "{page}"
    );
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    for file in files(&site) {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains(BRIDGE_SECRET),
            "the bridge token is in {}",
            file.display()
        );
    }
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(site.join("status.json")).unwrap()).unwrap();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo().join("docs/schemas/status.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&status)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // The same verdicts as `health`: one read model.
    let health = f.agent(&["--format", "json", "health"], &[]);
    let health: serde_json::Value = serde_json::from_str(&health.stdout).unwrap();
    for r in health["recipes"].as_array().unwrap() {
        let on_page = status["health"]["recipes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["recipe"] == r["recipe"])
            .unwrap();
        assert_eq!(on_page["verdict"], r["verdict"], "{}", r["recipe"]);
    }
}

/// A second write replaces the site whole; a link planted in the old one is not followed.
/// Recipe CI that found a token of the agent's and put it in its results: the health report, as
/// printed in either format and as written to health.json (which goes to the bridge), names the
/// failing tier without the token.
#[test]
fn a_token_in_ci_results_is_not_repeated_by_the_health_report() {
    let f = fleet();
    for format in ["human", "json"] {
        let run = f.agent(&["--format", format, "health"], &[]);
        assert!(run.stdout.contains("backup"), "{}", run.stdout);
        for (what, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
            assert!(!text.contains(BRIDGE_SECRET), "{format} {what}: {text}");
        }
    }
    let file = std::fs::read_to_string(f.path("state/health.json")).unwrap();
    assert!(!file.contains(BRIDGE_SECRET), "{file}");
    assert!(file.contains("a token of the agent's, not shown"), "{file}");
    // A run an older agent recorded unredacted: the report and the page still do not repeat it.
    let db = rusqlite::Connection::open(f.path("state/state.db")).unwrap();
    let old = format!("CI said {BRIDGE_SECRET}");
    db.execute("UPDATE runs SET detail = ?1", [&old]).unwrap();
    db.execute("UPDATE run_tiers SET first_message = ?1", [&old])
        .unwrap();
    drop(db);
    let run = f.agent(&["--format", "json", "health"], &[]);
    assert!(run.stdout.contains("CI said"), "{}", run.stdout);
    assert!(!run.stdout.contains(BRIDGE_SECRET), "{}", run.stdout);
    let site = write_site(&f);
    for file in files(&site) {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains(BRIDGE_SECRET), "{}", file.display());
    }
}

#[test]
fn the_site_is_replaced_in_one_rename_and_no_link_in_it_is_followed() {
    let f = fleet();
    let site = write_site(&f);
    let outside = f.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), "mine").unwrap();
    std::os::unix::fs::symlink(&outside, site.join("planted")).unwrap();
    write_site(&f);
    assert!(!site.join("planted").exists(), "the old site is gone whole");
    assert_eq!(
        std::fs::read_to_string(outside.join("keep")).unwrap(),
        "mine"
    );
    let leftovers: Vec<_> = std::fs::read_dir(f.path(""))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".status-page"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A writer killed mid-way (`kill -9`) leaves its half-built site beside the page: the next
/// writer removes it (its process is gone), and leaves a live writer's alone.
#[test]
fn half_built_sites_of_killed_writers_are_removed() {
    let f = fleet();
    write_site(&f);
    let dead = f.path(".status-page.new-4999999-00000000deadbeef");
    let older = f.path(".status-page.new--0123456789abcdef");
    let live = f.path(&format!(
        ".status-page.new-{}-00000000cafef00d",
        std::os::unix::process::parent_id()
    ));
    for d in [&dead, &older, &live] {
        std::fs::create_dir_all(d.join("recipe")).unwrap();
        std::fs::write(d.join("index.html"), "half").unwrap();
    }
    write_site(&f);
    assert!(
        !dead.exists() && !older.exists(),
        "a killed writer's site is left"
    );
    assert!(live.exists(), "a live writer's site was removed");
}

/// In a real browser, at a phone's width and a desktop's: the DOM Chromium built has the rows,
/// the summary, and the hostile names as text, never as elements.
#[test]
fn the_page_in_headless_chromium_at_phone_and_desktop_width() {
    let Some(chromium) = chromium_here() else {
        return;
    };
    let f = fleet();
    let site = write_site(&f);
    let shots = common::repo().join("target/status-page");
    std::fs::create_dir_all(&shots).unwrap();
    for (width, height, name) in [(390, 844, "phone"), (1280, 900, "desktop")] {
        for page in ["index.html", "recipe/wordpress.html"] {
            let url = format!("file://{}", site.join(page).display());
            let dom = browse(&chromium, &f, &["--dump-dom"], (width, height), &url);
            let shot = shots.join(format!("{}-{name}.png", page.replace('/', "-")));
            let _ = browse(
                &chromium,
                &f,
                &[&format!("--screenshot={}", shot.display())],
                (width, height),
                &url,
            );
            assert!(shot.is_file(), "no screenshot at {}", shot.display());
            assert!(
                !dom.contains("<img") && !dom.contains("<script"),
                "{page} at {name}: {dom}"
            );
            if page == "index.html" {
                assert!(
                    dom.contains("4 recipes: 1 green, 1 partly broken, 1 broken, 1 never judged"),
                    "{dom}"
                );
                for recipe in ["plausible", "custom-html", "wordpress", "hedgedoc"] {
                    assert!(
                        dom.contains(&format!("data-recipe=\"{recipe}\"")),
                        "{recipe}: {dom}"
                    );
                }
            } else {
                assert!(
                    dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
                    "{dom}"
                );
                assert!(dom.contains("onerror=alert(1)&gt;"), "{dom}");
            }
        }
    }
    eprintln!("status page: screenshots in {}", shots.display());
}

fn browse(chromium: &Path, f: &Fleet, how: &[&str], (w, h): (u32, u32), url: &str) -> String {
    let profile = f.path("chromium-profile");
    let out = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={w},{h}"))
        .args(how)
        .arg(url)
        .env("HOME", f.path(""))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Chromium where it is installed; elsewhere says NOT RUN HERE, and fails in CI, which has it.
fn chromium_here() -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        eprintln!("status page: NOT RUN HERE: no chromium (apt install chromium; .ci/run does)");
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have chromium: .ci/run installs it"
        );
    }
    found
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join(name))
                    .find(|p| p.is_file())
            })
        })
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            found.extend(files(&e.path()));
        } else {
            found.push(e.path());
        }
    }
    found
}

/// For recipe maintainers: a badge per recipe (the canonical version and its standing, in the
/// page's colours, its words as text for a screen reader) and an Atom feed of greenness
/// changes, both escaped like the page.
#[test]
fn badges_and_the_feed_say_each_recipes_standing_and_escape_what_came_from_outside() {
    let f = fleet();
    let site = write_site(&f);
    for (recipe, says, colour) in [
        ("plausible", "1.0.0+1.0 green", "#1a7f37"),
        ("custom-html", "partly broken", "#9a6700"),
        ("wordpress", "broken", "#c62828"),
        ("hedgedoc", "never judged", "#6e7781"),
    ] {
        let svg = std::fs::read_to_string(site.join(format!("badge/{recipe}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{svg}"
        );
        assert!(
            svg.contains(&format!("aria-label=\"{recipe}: cc-ci ")) && svg.contains(says),
            "{recipe}: {svg}"
        );
        assert!(
            svg.contains(&format!("fill=\"{colour}\"")),
            "{recipe}: {svg}"
        );
    }
    let feed = std::fs::read_to_string(site.join("feed.xml")).unwrap();
    assert!(
        feed.contains("<title>plausible 1.0.0+1.0 is green: promoted</title>"),
        "{feed}"
    );
    assert!(
        feed.contains("<title>wordpress 1.0.0+1.0 is not green</title>"),
        "{feed}"
    );
    assert!(
        feed.contains("<title>custom-html 1.0.0+1.0 is not green</title>"),
        "{feed}"
    );
    assert!(
        !feed.contains("<img") && !feed.contains("<script") && feed.contains("&lt;img"),
        "{feed}"
    );
    assert!(!feed.contains(BRIDGE_SECRET));
}

/// In Chromium: a badge renders as an image whose words the DOM holds, and the feed parses as
/// Atom (DOMParser, in a page the test writes beside the site) with its entries.
#[test]
fn a_badge_renders_and_the_feed_parses_as_atom_in_chromium() {
    let Some(chromium) = chromium_here() else {
        return;
    };
    let f = fleet();
    let site = write_site(&f);
    let badge = format!("file://{}", site.join("badge/wordpress.svg").display());
    let dom = browse(&chromium, &f, &["--dump-dom"], (300, 60), &badge);
    assert!(dom.contains("wordpress: cc-ci broken"), "{dom}");
    let shots = common::repo().join("target/status-page");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("badge-wordpress.png");
    let _ = browse(
        &chromium,
        &f,
        &[&format!("--screenshot={}", shot.display())],
        (300, 60),
        &badge,
    );
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 0),
        "no badge screenshot"
    );
    let feed = std::fs::read_to_string(site.join("feed.xml")).unwrap();
    let harness = f.path("feed-check.html");
    std::fs::write(
        &harness,
        format!(
            "<!doctype html><meta charset=utf-8><body><script>\n\
             const A = 'http://www.w3.org/2005/Atom';\n\
             const doc = new DOMParser().parseFromString({}, 'application/xml');\n\
             const root = doc.documentElement;\n\
             document.body.textContent = JSON.stringify({{\n\
               errors: doc.getElementsByTagName('parsererror').length,\n\
               ns: root.namespaceURI, name: root.localName,\n\
               entries: doc.getElementsByTagNameNS(A, 'entry').length,\n\
               titles: [...doc.getElementsByTagNameNS(A, 'entry')].map(e => e.getElementsByTagNameNS(A, 'title')[0].textContent),\n\
             }});\n</script>",
            serde_json::to_string(&feed).unwrap()
        ),
    )
    .unwrap();
    let dom = browse(
        &chromium,
        &f,
        &["--dump-dom"],
        (800, 600),
        &format!("file://{}", harness.display()),
    );
    let body = dom
        .split_once("<body>")
        .and_then(|(_, b)| b.split_once("</body>"))
        .map(|(b, _)| {
            b.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        })
        .unwrap_or_else(|| panic!("{dom}"));
    let got: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {dom}"));
    assert_eq!(got["errors"], 0, "{got:#}");
    assert_eq!(
        (&got["ns"], &got["name"]),
        (&"http://www.w3.org/2005/Atom".into(), &"feed".into())
    );
    assert_eq!(got["entries"], 3, "{got:#}");
    assert!(
        got["titles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "plausible 1.0.0+1.0 is green: promoted"),
        "{got:#}"
    );
}
