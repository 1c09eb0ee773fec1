//! The layering rule, checked on the source: each top-level module may import (`crate::x`)
//! only modules of a lower layer, so there is no import cycle and no arrow that runs upward.
//! Test code (`#[cfg(test)]` modules) may also use the simulators.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Lowest first. A module may import modules of earlier layers (and its own layer's peers
/// only where listed in `PEERS`).
const LAYERS: &[&[&str]] = &[
    &[
        "clock", "logs", "heavy", "faults", "watchdog", "topics", "boardmap", "durable", "release",
        "upgrade",
    ],
    &["proto"],
    &["record", "config"],
    &["buffer", "bus"],
    &["events", "uplink"],
    &["health", "ingest", "board", "snapshot"],
    &["system", "discover", "trial", "metrics"],
    &["remote", "doctor", "update"],
    &["agent", "sim"],
    &["station"],
    &["demo"],
];

/// Same-layer imports that are allowed: (from, to).
const PEERS: &[(&str, &str)] = &[
    ("record", "clock"),
    ("config", "record"),
    ("faults", "durable"),
    ("doctor", "update"),
];

fn layer_of(m: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&m))
}

/// The module's source with `#[cfg(test)] mod tests { ... }` blocks cut off (they sit at the
/// end of each file in this codebase) and comments removed.
fn production_code(text: &str) -> String {
    let cut = [
        "#[cfg(test)]\nmod tests",
        "#[cfg(all(test, feature = \"sim\"))]\nmod tests",
    ]
    .iter()
    .filter_map(|m| text.find(m))
    .min()
    .unwrap_or(text.len());
    text[..cut]
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn imports(code: &str, tops: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + 7..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for part in group.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if tops.contains(&name) {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if tops.contains(&name) {
                out.insert(name);
            }
        }
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
}

#[test]
fn every_import_runs_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let tops: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let stem = p.file_stem()?.to_str()?.to_string();
            (p.is_dir() || p.extension().is_some_and(|x| x == "rs")).then_some(stem)
        })
        .filter(|m| m != "lib" && m != "main")
        .collect();
    for m in &tops {
        assert!(
            layer_of(m).is_some(),
            "module {m} is in no layer: add it to LAYERS"
        );
    }
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let code = production_code(&std::fs::read_to_string(&f).unwrap());
        let mut d = imports(&code, &tops);
        d.remove(&top);
        deps.entry(top).or_default().extend(d);
    }
    let mut wrong = Vec::new();
    for (from, to) in &deps {
        let lf = layer_of(from).unwrap();
        for t in to {
            let lt = layer_of(t).unwrap();
            let peer_ok = PEERS.contains(&(from.as_str(), t.as_str()));
            if lt > lf || (lt == lf && !peer_ok) {
                wrong.push(format!("{from} (layer {lf}) imports {t} (layer {lt})"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "upward or sideways imports:\n{}",
        wrong.join("\n")
    );
    // The protocol layer is the boundary for peer bytes: it imports only the foundation.
    for t in &deps["proto"] {
        assert_eq!(layer_of(t), Some(0), "proto imports {t}");
    }
}

/// Alert kinds and event sources are named once, in `record` (the enums): no other
/// production code spells one as a string literal.
#[test]
fn alert_kinds_and_event_sources_are_spelled_only_in_record() {
    use camgw::record::{AlertKind, Source};
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    // Words that are also something else: a board pin role and a telemetry field ("tamper",
    // "disk_low"), and the vendor names, which three sources share ("onvif", ...).
    let shared = ["tamper", "disk_low", "onvif", "hikvision", "dahua"];
    let names: Vec<String> = AlertKind::ALL
        .iter()
        .map(|k| k.name())
        .chain(Source::ALL.iter().map(|s| s.name()))
        .filter(|n| !shared.contains(n))
        .map(|n| format!("\"{n}\""))
        .collect();
    assert!(names.len() > 15, "{names:?}");
    let mut found = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().to_string();
        // The enums themselves; the config's `events = [...]` keys and the board map's pin
        // roles are their own vocabularies that happen to share a word.
        if ["record.rs", "config/validate.rs", "boardmap.rs"].contains(&rel.as_str()) {
            continue;
        }
        let code = production_code(&std::fs::read_to_string(&f).unwrap());
        for (i, line) in code.lines().enumerate() {
            for n in &names {
                if line.contains(n.as_str()) {
                    found.push(format!("src/{rel}:{}: {n}", i + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "spelled outside record.rs:\n{}",
        found.join("\n")
    );
}

/// Every capture in testdata/ is described in its README and read by a test.
#[test]
fn every_testdata_file_is_described_and_used() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("testdata/README.md")).unwrap();
    let mut src = Vec::new();
    walk(&root.join("src"), &mut src);
    let code: String = src
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let mut n = 0;
    for e in std::fs::read_dir(root.join("testdata")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name == "README.md" || name == ".gitattributes" {
            continue;
        }
        n += 1;
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} is not in testdata/README.md"
        );
        assert!(
            code.contains(&format!("\"{name}\"")),
            "no test reads testdata/{name}"
        );
    }
    assert!(n >= 10, "testdata/ holds {n} captures");
}
