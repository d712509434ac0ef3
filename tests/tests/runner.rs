//! The pipeline runner as its users meet it: caching, reruns, early cutoff,
//! and faults (a killed run, a corrupt file, two runs on one store, bad
//! pipeline files). Uses the cheap `debug.*` stages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pipeline");

fn config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/debug.toml")
}

fn pipeline(store: &Path, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("pipeline").args(args).arg("--config").arg(config()).arg("--store").arg(store);
    cmd.env_remove("INSTRUCTGPT_STORE").env("NO_COLOR", "1");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

fn run_ok(store: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let out = pipeline(store, args, envs).output().expect("runs");
    assert!(out.status.success(), "{args:?} failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// step -> status, from the summary table a run prints.
fn statuses(out: &Output) -> BTreeMap<String, String> {
    let stdout = text(&out.stdout);
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("step "))
        .skip(1)
        .take_while(|l| !l.starts_with("pipeline "))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[0].to_string(), cols[3].to_string())
        })
        .collect()
}

fn all(out: &Output, status: &str) -> bool {
    let s = statuses(out);
    !s.is_empty() && s.values().all(|v| v == status)
}

fn artifacts_of(store: &Path, stage: &str) -> Vec<PathBuf> {
    match std::fs::read_dir(store.join(stage)) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn second_run_is_cached_and_a_change_reruns_only_its_descendants() {
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    assert!(all(&run_ok(s, &["run"], &[]), "ran"));
    assert!(all(&run_ok(s, &["run"], &[]), "cached"));

    let why = run_ok(s, &["why", "concat", "-s", "emit.rows=5"], &[]);
    let why = text(&why.stdout);
    assert!(why.contains("emit.rows 4 -> 5"), "{why}");
    assert!(why.contains("upstream step `upper`"), "{why}");

    let status = text(&run_ok(s, &["status", "-s", "emit.rows=5"], &[]).stdout);
    assert!(status.lines().any(|l| l.contains("other") && l.contains("fresh")), "{status}");
    assert!(status.lines().any(|l| l.contains("emit") && l.contains("stale")), "{status}");

    let changed = statuses(&run_ok(s, &["run", "-s", "emit.rows=5"], &[]));
    assert_eq!(changed["emit"], "ran");
    assert_eq!(changed["upper"], "ran");
    assert_eq!(changed["concat"], "ran");
    assert_eq!(changed["other"], "cached");
}

#[test]
fn early_cutoff_keeps_downstream_cached() {
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    run_ok(s, &["run"], &[]);
    // `note` enters emit's key but not its output.
    let out = statuses(&run_ok(s, &["run", "-s", "emit.note=\"new note\""], &[]));
    assert_eq!(out["emit"], "ran", "a parameter changed, so the step reruns");
    assert_eq!(out["upper"], "cached", "its output is identical, so downstream stays cached");
    assert_eq!(out["concat"], "cached");
    assert_eq!(artifacts_of(s, "debug.emit").len(), 3, "two emit artifacts of step emit plus `other`");
}

#[test]
fn a_killed_run_leaves_no_artifact_and_the_step_reruns() {
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    let mut child = pipeline(s, &["run"], &[("INSTRUCTGPT_DEBUG_STALL", "upper")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until `upper` has half-written its output, then SIGKILL. The stall's file is told by its
    // content: `emit` writes an items.parquet of its own in `_tmp` just before it moves it into the
    // store, and a loaded machine may poll in that moment.
    let deadline = Instant::now() + Duration::from_secs(60);
    let tmp = s.join("_tmp");
    loop {
        let stalled = std::fs::read_dir(&tmp)
            .map(|rd| {
                rd.flatten()
                    .any(|e| std::fs::read(e.path().join("items.parquet")).is_ok_and(|b| b == b"PAR1 half-written"))
            })
            .unwrap_or(false);
        if stalled {
            break;
        }
        assert!(Instant::now() < deadline, "the run never reached the stalled step");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();

    assert!(artifacts_of(s, "debug.upper").is_empty(), "no artifact may appear for the killed step");
    assert_eq!(artifacts_of(s, "debug.emit").len(), 1, "the step before it completed");

    let out = statuses(&run_ok(s, &["run"], &[]));
    assert_eq!(out["emit"], "cached");
    assert_eq!(out["upper"], "ran");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "the half-written output was cleaned up");
    run_ok(s, &["verify"], &[]);
}

#[test]
fn a_flipped_byte_is_reported_by_verify_and_recomputed_by_run() {
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    run_ok(s, &["run"], &[]);
    let dir = artifacts_of(s, "debug.upper").pop().unwrap();
    let file = dir.join("items.parquet");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();

    let verify = pipeline(s, &["verify"], &[]).output().unwrap();
    assert!(!verify.status.success(), "verify must fail on a corrupt artifact");
    let report = text(&verify.stdout);
    assert!(report.contains("CORRUPT") && report.contains("items.parquet"), "{report}");

    let out = statuses(&run_ok(s, &["run"], &[]));
    assert_eq!(out["upper"], "ran", "the corrupt artifact is recomputed");
    assert_eq!(out["concat"], "cached", "identical recomputed content keeps downstream cached");
    assert_eq!(std::fs::read_dir(s.join("_corrupt")).unwrap().count(), 1, "the corrupt copy is kept aside");
    run_ok(s, &["verify"], &[]);
}

#[test]
fn two_concurrent_runs_share_a_store_and_compute_each_step_once() {
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    let log = s.join("runlog.txt");
    let log_str = log.to_str().unwrap();
    let envs = [("INSTRUCTGPT_DEBUG_RUNLOG", log_str), ("INSTRUCTGPT_DEBUG_SLEEP_MS", "300")];
    let a = pipeline(s, &["run"], &envs).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let b = pipeline(s, &["run"], &envs).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", text(&a.stderr));
    assert!(b.status.success(), "{}", text(&b.stderr));
    let lines = std::fs::read_to_string(&log).unwrap();
    let mut steps: Vec<&str> = lines.lines().map(|l| l.split(' ').next().unwrap()).collect();
    steps.sort();
    assert_eq!(steps, vec!["concat", "emit", "other", "upper"], "each step computed exactly once:\n{lines}");
    let (sa, sb) = (statuses(&a), statuses(&b));
    for step in ["emit", "upper", "other", "concat"] {
        let pair = [sa[step].as_str(), sb[step].as_str()];
        assert!(pair.contains(&"ran"), "{step}: {pair:?}");
    }
}

#[test]
fn bad_pipeline_files_and_parameters_are_named() {
    let store = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[pipeline]\nseed = 1\n\n[steps.emit]\nstage = \"debug.emit\"\nparams = { rowz = 4 }\n")
        .unwrap();
    let out = Command::new(BIN)
        .args(["pipeline", "run", "--config"])
        .arg(&bad)
        .arg("--store")
        .arg(store.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("bad.toml:6") && err.contains("`rowz`") && err.contains("rows"), "{err}");

    std::fs::write(&bad, "[pipeline]\nseed = 1\n[steps.emit\n").unwrap();
    let out = Command::new(BIN).args(["pipeline", "run", "--config"]).arg(&bad).output().unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.toml") && err.contains("line 3"), "{err}");

    let out = pipeline(store.path(), &["run", "-s", "emit.rowz=3"], &[]).output().unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("-s emit.rowz") && err.contains("unknown parameter `rowz`"), "{err}");
}

#[test]
fn show_dag_and_gc() {
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    run_ok(s, &["run"], &[]);
    run_ok(s, &["run", "-s", "emit.rows=2"], &[]);
    let show = text(&run_ok(s, &["show", "concat"], &[]).stdout);
    assert!(show.contains("table items") && show.contains("upper: HELLO 0"), "{show}");
    let dot = text(&run_ok(s, &["dag", "--format", "dot"], &[]).stdout);
    assert!(dot.starts_with("digraph") && dot.contains("emit -> upper"), "{dot}");

    // The refs now point at the rows=2 artifacts; the rows=4 ones are garbage.
    let before = artifacts_of(s, "debug.emit").len();
    // An interrupted run's leftovers: one key's half-written output and its checkpoints.
    let (tmp, scratch) = (s.join("_tmp/0123abcd.4242"), s.join("_scratch/0123abcd"));
    for d in [&tmp, &scratch] {
        std::fs::create_dir_all(d).unwrap();
    }
    let dry = text(&run_ok(s, &["gc", "--dry-run", "-s", "emit.rows=2"], &[]).stdout);
    assert!(dry.contains("would remove") && dry.contains("leftover"), "{dry}");
    assert_eq!(artifacts_of(s, "debug.emit").len(), before, "a dry run removes nothing");
    assert!(tmp.is_dir() && scratch.is_dir());
    run_ok(s, &["gc", "-s", "emit.rows=2"], &[]);
    assert_eq!(artifacts_of(s, "debug.emit").len(), before - 1);
    assert!(!tmp.exists() && !scratch.exists(), "both leftovers of the key go, under one lock");
    let left: Vec<_> = std::fs::read_dir(s.join("_tmp")).unwrap().collect();
    assert!(left.is_empty(), "removed artifacts pass through _tmp and leave nothing there: {left:?}");
    assert!(all(&run_ok(s, &["run", "-s", "emit.rows=2"], &[]), "cached"), "gc kept what the pipeline references");
}

#[test]
fn a_changed_input_file_reruns_its_step() {
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    let data = s.join("data.txt");
    std::fs::write(&data, "a\nb\n").unwrap();
    let set = format!("emit.from_file=\"{}\"", data.display());
    assert_eq!(statuses(&run_ok(s, &["run", "-s", &set], &[]))["emit"], "ran");
    assert_eq!(statuses(&run_ok(s, &["run", "-s", &set], &[]))["emit"], "cached");
    std::fs::write(&data, "a\nc\n").unwrap();
    let why = text(&run_ok(s, &["why", "emit", "-s", &set], &[]).stdout);
    assert!(why.contains("file ") && why.contains("data.txt"), "{why}");
    let out = statuses(&run_ok(s, &["run", "-s", &set], &[]));
    assert_eq!(out["emit"], "ran");
    assert_eq!(out["other"], "cached");
}

/// `compare` of the pipeline against itself with `flag` (`--set-a` / `--set-b`) `set`: its report.
fn compare(store: &Path, flag: &str, set: &str) -> String {
    let out = Command::new(BIN)
        .arg("compare")
        .arg(config())
        .arg(config())
        .arg("--store")
        .arg(store)
        .args([flag, set])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn compare_shows_metrics_and_lineage_differences() {
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    run_ok(s, &["run"], &[]);
    run_ok(s, &["run", "-s", "emit.rows=5"], &[]);
    let report = compare(s, "--set-b", "emit.rows=5");
    assert!(report.contains("param rows: 4 vs 5"), "{report}");
    assert!(report.contains("other: same artifact"), "{report}");
    assert!(report.lines().any(|l| l.trim_start().starts_with("rows") && l.contains("+1")), "{report}");

    // A data file that only one side reads is a lineage difference, whichever side it is on.
    let data = s.join("data.txt");
    std::fs::write(&data, "a\nb\n").unwrap();
    let set = format!("emit.from_file=\"{}\"", data.display());
    run_ok(s, &["run", "-s", &set], &[]);
    for (flag, side) in [("--set-b", "B"), ("--set-a", "A")] {
        let report = compare(s, flag, &set);
        assert!(report.contains(&format!("data.txt only in {side}")), "{report}");
    }
}
