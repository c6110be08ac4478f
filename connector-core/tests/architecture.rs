//! The one-way floors of the architecture (docs/architecture.md): the
//! connector core depends on no crate of this workspace, so a connector of
//! any model can be built on it.

#[test]
fn connector_core_depends_on_no_crate_of_ours() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let ours: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(ours.contains(&"canonical-model") && ours.contains(&"sync-daemon"));
    let core = packages
        .iter()
        .find(|p| p["name"] == "connector-core")
        .unwrap();
    let deps: Vec<&str> = core["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    let inward: Vec<&&str> = deps.iter().filter(|d| ours.contains(d)).collect();
    assert!(
        inward.is_empty(),
        "connector-core depends on {inward:?}: the canonical model and the mappers are wired \
         in the connector crates and the daemon, never in core"
    );
}
