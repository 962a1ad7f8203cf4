//! The benchmark's correctness part against the real Docker engine: `xtask bench --quick
//! --correctness-only` brings its own stack up, then asserts that `xtask dev` neither builds
//! nor restarts anything when nothing changed or files were only touched. No timing is
//! asserted. Without an engine this fails: nothing here is skipped.

// A panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn no_change_and_touched_build_and_restart_nothing() {
    let json = std::env::temp_dir().join(format!("xtask-bench-test-{}.json", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench", "--quick", "--correctness-only", "--json"])
        .arg(&json)
        .env_remove("STIGMER_BASE_IMAGE")
        .output()
        .expect("xtask runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status.code()
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let checks = report["checks"].as_array().unwrap();
    for scenario in ["no change", "touched, not changed"] {
        let name = format!("xtask dev, {scenario}: no build, no restart");
        let check = checks
            .iter()
            .find(|check| check["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no check `{name}` in {report}"));
        assert_eq!(check["ok"], true, "{check}");
    }
    // The benchmark removes everything it made.
    let left = Command::new("docker")
        .args(["inspect", "--type", "container", "stigmer-bench-check"])
        .output()
        .expect("the docker client runs");
    assert!(
        !left.status.success(),
        "the benchmark left its container behind"
    );
}
