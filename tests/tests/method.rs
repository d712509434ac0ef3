//! The whole method on the smoke pipeline (`pipelines/smoke.toml`), as a
//! user runs it: every stage from the world to the report, bit-for-bit
//! reproducible across stores and thread counts, cached on a second run, and
//! PPO resuming exactly after the process is killed in the middle of training.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_pipeline");

fn smoke() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/smoke.toml")
}

fn pipeline(store: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("pipeline").args(args).arg("--config").arg(smoke()).arg("--store").arg(store);
    cmd.env_remove("INSTRUCTGPT_STORE").env("NO_COLOR", "1");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("the pipeline binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: Output, what: &str) -> Output {
    assert!(out.status.success(), "{what} failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
    out
}

/// step -> (status, key) from the summary table.
fn summary(out: &Output) -> BTreeMap<String, (String, String)> {
    text(&out.stdout)
        .lines()
        .skip_while(|l| !l.starts_with("step "))
        .skip(1)
        .take_while(|l| !l.starts_with("pipeline "))
        .map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            (c[0].to_string(), (c[3].to_string(), c[2].to_string()))
        })
        .collect()
}

/// stage/key -> (content hash, metrics) of every artifact in a store.
fn manifests(store: &Path) -> BTreeMap<String, (String, serde_json::Value)> {
    let mut out = BTreeMap::new();
    for stage in std::fs::read_dir(store).unwrap().flatten() {
        let name = stage.file_name().to_string_lossy().into_owned();
        if name.starts_with('_') || !stage.path().is_dir() {
            continue;
        }
        for art in std::fs::read_dir(stage.path()).unwrap().flatten() {
            let m: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(art.path().join("manifest.json")).unwrap()).unwrap();
            let key = format!("{name}/{}", art.file_name().to_string_lossy());
            out.insert(key, (m["content_hash"].as_str().unwrap().to_string(), m["metrics"].clone()));
        }
    }
    out
}

fn metrics_of(store: &Path, stage: &str) -> serde_json::Value {
    let m = manifests(store);
    let (_, (_, metrics)) = m.iter().find(|(k, _)| k.starts_with(&format!("{stage}/"))).expect("the stage ran");
    metrics.clone()
}

#[test]
fn smoke_method_is_reproducible_cached_and_resumes_ppo_exactly() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();

    // Store A on one thread (every product sequential), store B below on three.
    let one_thread = [("RAYON_NUM_THREADS", "1")];
    let first = ok(pipeline(a.path(), &["run"], &one_thread), "the smoke pipeline");
    let steps = summary(&first);
    let expected = ["world", "pretrain", "sft", "samples", "labels", "rm", "sft_best", "ppo", "ppo_ptx"];
    for s in expected.into_iter().chain(["eval_best_of", "eval_best_of_rm", "report"]) {
        assert_eq!(steps.get(s).map(|v| v.0.as_str()), Some("ran"), "{s}: {steps:?}");
    }

    // Every stage again, in another store, on another number of threads (3: the products split
    // among threads, as on a machine with other cores), killed in the middle of PPO
    // and rerun: the same bits. The first rerun resumes the first PPO step and is killed in the
    // second, so both kinds resume: GAE with its value model, and leave-one-out (PPO-ptx here)
    // without one.
    let threads = ("RAYON_NUM_THREADS", "3");
    let abort = [("INSTRUCTGPT_PPO_ABORT_AFTER", "4"), threads];
    let aborted = "INSTRUCTGPT_PPO_ABORT_AFTER=4: aborting";
    let killed = pipeline(b.path(), &["run"], &abort);
    let log = text(&killed.stderr);
    assert!(!killed.status.success() && log.contains(aborted), "the injected abort stops the run:\n{log}");
    let killed = pipeline(b.path(), &["run"], &abort);
    let log = text(&killed.stderr);
    assert!(!killed.status.success() && log.contains(aborted), "the abort stops the second PPO step:\n{log}");
    assert!(log.contains("ppo: resumed from the checkpoint"), "the first rerun resumes the GAE step:\n{log}");
    let resumed = ok(pipeline(b.path(), &["run"], &[threads]), "the rerun after the kill");
    let log = text(&resumed.stderr);
    assert!(log.contains("ppo_ptx: resumed from the checkpoint"), "the rerun resumes the RLOO step:\n{log}");
    let (ma, mb) = (manifests(a.path()), manifests(b.path()));
    assert_eq!(ma.keys().collect::<Vec<_>>(), mb.keys().collect::<Vec<_>>(), "the same artifact keys");
    for (k, (hash, _)) in &ma {
        assert_eq!(
            &mb[k].0, hash,
            "{k}: content differs between an uninterrupted run on 1 thread and a resumed one on 3"
        );
    }

    // A second run computes nothing.
    let again = summary(&ok(pipeline(a.path(), &["run"], &one_thread), "the second run"));
    assert!(again.values().all(|(s, _)| s == "cached"), "{again:?}");

    // The numbers each stage must record.
    let label = metrics_of(a.path(), "rollout.label");
    assert!(label["rankings"].as_f64().unwrap() > 0.0, "{label}");
    let rm = metrics_of(a.path(), "rm.rm");
    for m in ["final_train_loss", "norm_offset"] {
        assert!(rm[m].as_f64().is_some_and(f64::is_finite), "rm.rm lacks {m}: {rm}");
    }
    let report = metrics_of(a.path(), "eval.report");
    assert!(report.as_object().is_some_and(|o| !o.is_empty()), "{report}");
}

fn rl_check() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/rl-check.toml")
}

fn ppo_metrics(store: &Path, oracle: bool) -> serde_json::Value {
    for art in std::fs::read_dir(store.join("ppo.ppo")).unwrap().flatten() {
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(art.path().join("manifest.json")).unwrap()).unwrap();
        if m["params"]["oracle"].as_bool() == Some(oracle) {
            return m["metrics"].clone();
        }
    }
    panic!("no PPO run with oracle = {oracle}");
}

#[test]
fn oracle_ppo_raises_the_gold_score_and_rm_ppo_the_reward_with_bounded_kl() {
    let store = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("pipeline").arg("run").arg("--config").arg(rl_check()).arg("--store").arg(store.path());
    ok(cmd.env_remove("INSTRUCTGPT_STORE").output().unwrap(), "the rl-check pipeline");

    let oracle = ppo_metrics(store.path(), true);
    let q = |m: &serde_json::Value, k: &str| {
        (m[format!("{k}_first_quarter")].as_f64().unwrap(), m[format!("{k}_last_quarter")].as_f64().unwrap())
    };
    let (start, end) = q(&oracle, "gold");
    assert!(end > start * 1.1, "oracle PPO should raise the gold score of the SFT policy: {start} -> {end}");

    let rm = ppo_metrics(store.path(), false);
    // The reward of the training rollouts (fresh prompts every iteration), first quarter of the
    // iterations against the last: one probe pass of a few dozen samples moves too much by chance.
    let (r0, r1) = q(&rm, "rm_reward");
    assert!(r1 > r0 + 0.1, "RM-PPO should raise the reward model's score: {r0} -> {r1}");
    let kl = rm["probe_kl"].as_f64().unwrap();
    assert!(kl > 0.0 && kl < 10.0, "the KL penalty keeps the policy near SFT: {kl} nats");
}
