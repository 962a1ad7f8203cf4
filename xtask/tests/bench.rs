//! The benchmark's correctness part against the real Docker engine: `xtask bench --quick
//! --correctness-only --json` runs `dev` and Compose v2 side by side, and each check is found
//! in its JSON by the check's, scenario's and tool's serialized names. Both sides must have
//! been measured, every check must pass, and nothing the benchmark made may be left behind.
//! No timing is asserted. Without an engine this fails: nothing here is skipped.

// A panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::process::Command;

/// (check, scenario, tool) that the correctness run must report, and pass.
const EXPECTED: [(&str, &str, &str); 7] = [
    ("no-build-no-restart", "no-change", "dev"),
    ("no-build-no-restart", "no-change", "compose-v2"),
    ("no-build-no-restart", "touched", "dev"),
    ("no-build-no-restart", "touched", "compose-v2"),
    ("reloaded-without-build", "source-change", "dev"),
    ("dependency-layer-reused", "source-change", "compose-v2"),
    (
        "dependency-layer-reused",
        "source-change-image",
        "dev-image",
    ),
];

#[test]
fn every_check_is_measured_on_both_sides_and_passes() {
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
    for (check, scenario, peer) in EXPECTED {
        let found = checks
            .iter()
            .find(|c| c["check"] == check && c["scenario"] == scenario && c["peer"] == peer)
            .unwrap_or_else(|| panic!("no check {check} for {peer} in {scenario}: {report:#}"));
        assert_eq!(found["ok"], true, "{found}");
    }
    for peer in ["dev", "compose-v2"] {
        let measured = checks.iter().filter(|c| c["peer"] == peer).count();
        assert!(measured >= 3, "only {measured} checks measured on {peer}");
    }
    let left = checks
        .iter()
        .find(|c| c["check"] == "nothing-left-behind")
        .expect("the clean-up is checked");
    assert_eq!(left["ok"], true, "{left}");
    // And from outside the benchmark: its containers and image tags are gone.
    for name in ["stigmer-bench-ci", "stigmer-bench-ci-v2"] {
        let inspect = Command::new("docker")
            .args(["inspect", "--type", "container", name])
            .output()
            .expect("the docker client runs");
        assert!(
            !inspect.status.success(),
            "the benchmark left {name} behind"
        );
    }
    for tag in [
        "stigmer-agent-runner:bench-ci",
        "stigmer-agent-runner:bench-ci-v2",
    ] {
        let inspect = Command::new("docker")
            .args(["image", "inspect", tag])
            .output()
            .expect("the docker client runs");
        assert!(
            !inspect.status.success(),
            "the benchmark left the image {tag} behind"
        );
    }
}
