//! Technician and station tools: `camgw buffer inspect`, `camgw station watch --once --json`,
//! `camgw doctor`, `camgw discover`.

mod common;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_camgw");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = camgw_command(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn buffer_inspect_reports_known_contents_while_the_agent_runs_and_finds_corruption() {
    // No broker: everything the agent accepts stays pending on disk.
    let dead = free_port();
    let mut agent = Agent::start(dead, "--\n[buffer]\nsync = \"always\"\n");
    let seqs: Vec<u64> = (0..25).map(|_| agent.accepted("cam01")).collect();
    let data = agent.data_dir.display().to_string();

    let (code, out, err) = run(&["buffer", "inspect", "--data-dir", &data, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["events"]["pending"], 25, "{r}");
    assert_eq!(r["events"]["stored"], 25, "{r}");
    assert_eq!(r["events"]["oldest_pending_seq"], seqs[0], "{r}");
    assert_eq!(r["events"]["newest_seq"], seqs[24], "{r}");
    assert_eq!(r["events"]["corrupt"], 0);
    assert!(r["events"]["bytes"].as_u64().unwrap() > 25 * 20);
    assert!(r["events"]["oldest_pending_ts"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert!(r["next_seq"].as_u64().unwrap() > seqs[24]);
    let (code, text, _) = run(&["buffer", "inspect", "--data-dir", &data]);
    assert_eq!(code, 0);
    assert!(text.contains("events  25 pending of 25 stored"), "{text}");
    assert!(
        text.contains(&format!("oldest pending: seq {}", seqs[0])),
        "{text}"
    );

    // Stop the agent, flip bytes in the middle of the events segment.
    assert_eq!(agent.term().code(), Some(0));
    let seg = std::fs::read_dir(agent.data_dir.join("buffer/events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 4] {
        *b ^= 0x5a;
    }
    std::fs::write(&seg, &bytes).unwrap();
    std::fs::write(agent.data_dir.join("buffer/notes.txt"), "x").unwrap();
    let (code, out, _) = run(&["buffer", "inspect", "--data-dir", &data, "--json"]);
    assert_eq!(code, 1, "corruption makes the exit code 1: {out}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(r["events"]["corrupt"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["events"]["stored"].as_u64().unwrap() < 25, "{r}");
    assert!(
        r["events"]["stored"].as_u64().unwrap() >= 20,
        "the rest is still read: {r}"
    );
    assert_eq!(r["stray_files"], serde_json::json!(["notes.txt"]));
    let (_, text, _) = run(&["buffer", "inspect", "--data-dir", &data]);
    assert!(text.contains("CORRUPT"), "{text}");

    let (code, _, err) = run(&["buffer", "inspect", "--data-dir", "/nonexistent"]);
    assert_eq!(code, 2);
    assert!(err.contains("holds no buffer"), "{err}");
}
