//! The command line as the contract names it: check-config, run with a bad config, --version.

mod common;

use common::BIN;

fn write(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("camgw.toml");
    std::fs::write(&p, text).unwrap();
    p
}

const GOOD: &str = r#"
[gateway]
id = "q1-p05-gw03"
ward = "q1-p05"
data_dir = "/tmp/camgw-cli-test"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[[camera]]
id = "cam01"
vendor = "hikvision"
host = "192.168.1.64"
username = "admin"
password = "Sup3r-Secret"
events = ["hikvision"]
"#;

#[test]
fn check_config_accepts_a_valid_file_with_exit_0() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), GOOD);
    let out = common::camgw_command(BIN)
        .arg("check-config")
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
}

#[test]
fn check_config_prints_one_line_per_problem_as_file_key_path_message_and_exits_1() {
    let d = tempfile::tempdir().unwrap();
    let text = GOOD
        .replace("ward = \"q1-p05\"", "ward = \"Q1 P05\"\ncolour = \"blue\"")
        .replace("mqtt://127.0.0.1:1883", "tcp://127.0.0.1:1883")
        .replace("vendor = \"hikvision\"", "vendor = \"acme\"");
    let p = write(d.path(), &text);
    let out = common::camgw_command(BIN)
        .arg("check-config")
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    let f = p.display().to_string();
    for (line, key) in lines.iter().zip([
        "gateway.colour",
        "gateway.ward",
        "mqtt.url",
        "camera[0].vendor",
    ]) {
        assert!(line.starts_with(&format!("{f}: ")), "{line}");
        assert!(
            err.contains(&format!("{f}: {key}: ")),
            "{key} missing in:\n{err}"
        );
    }
    assert!(!err.contains("Sup3r-Secret"));
}

#[test]
fn run_with_an_invalid_config_exits_2_before_starting() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        &GOOD.replace("[mqtt]", "[mqtt]\nkeep_alive_s = -1"),
    );
    let out = common::camgw_command(BIN)
        .args(["run", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("mqtt.keep_alive_s: -1 is out of range"),
        "{err}"
    );
}

#[test]
fn a_missing_config_file_is_a_clear_problem() {
    let out = common::camgw_command(BIN)
        .args(["check-config", "/nonexistent/camgw.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("/nonexistent/camgw.toml: (file): cannot read"),
        "{err}"
    );
}

#[test]
fn version_prints_the_package_version() {
    let out = common::camgw_command(BIN)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains(env!("CARGO_PKG_VERSION")));
}

/// docs/reference.md describes every config key in its section's table, every alert kind,
/// and every subcommand: adding one without documenting it fails here.
#[test]
fn the_reference_describes_every_key_alert_kind_and_command() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/reference.md"))
        .expect("docs/reference.md");
    let section = |name: &str| -> String {
        let head = if name == "camera" {
            "### `[[camera]]`".to_string()
        } else {
            format!("### `[{name}]`")
        };
        let start = doc
            .find(&head)
            .unwrap_or_else(|| panic!("no {head} section"));
        let rest = &doc[start + head.len()..];
        rest[..rest.find("\n### ").unwrap_or(rest.len())].to_string()
    };
    // The keys are named once, where the validator reads them: the ones it read while
    // checking the reference's full example (which must be valid and hold every table).
    let full = doc
        .split("### Full example")
        .nth(1)
        .and_then(|r| r.split("```toml\n").nth(1))
        .and_then(|r| r.split("```").next())
        .expect("a full example in docs/reference.md");
    let checked = camgw::config::validate(full, &|_| Ok(None));
    assert!(
        checked.is_ok(),
        "the full example is invalid: {:?}",
        checked.err()
    );
    let read = camgw::config::keys_read(full);
    let tables = &read[""];
    assert!(tables.len() >= 9, "{tables:?}");
    let counts: Vec<String> = tables
        .iter()
        .map(|t| format!("{t} {}", read.get(t).map_or(0, |k| k.len())))
        .collect();
    eprintln!("keys read per table: {counts:?}");
    let mut missing = Vec::new();
    for name in tables {
        let keys = read
            .get(name)
            .unwrap_or_else(|| panic!("the full example has no [{name}] table"));
        let table = section(name);
        for k in keys {
            if !table.contains(&format!("| `{k}` |")) {
                missing.push(format!("[{name}] {k}"));
            }
        }
    }
    let alerts = &doc[doc.find("## 5. Alert kinds").expect("alert section")..];
    for k in camgw::record::AlertKind::ALL {
        if !alerts.contains(&format!("| `{k}` |")) {
            missing.push(format!("alert {k}"));
        }
    }
    let help = common::camgw_command(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    let commands = help
        .split("Commands:")
        .nth(1)
        .expect("a Commands: list")
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect::<Vec<_>>();
    assert!(commands.len() >= 8, "{commands:?}");
    for c in commands {
        if !doc.contains(&format!("camgw {c}")) {
            missing.push(format!("command {c}"));
        }
    }
    assert!(missing.is_empty(), "not in docs/reference.md: {missing:?}");
}
