//! The ingest stages run through lineage on the sample files in
//! `datasets/samples/`, as a pipeline would run them: every format, the
//! quarantine, hygiene, failure past `max_bad_fraction`, determinism,
//! the tokenizer and the labelling round-trip.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Result;
use lineage::tables::*;
use lineage::{Artifact, Outcome, TableSpec};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn sample(name: &str) -> String {
    samples_dir().join(name).display().to_string()
}

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/samples").canonicalize().unwrap()
}

/// A temporary store and the crate's stages.
struct Harness {
    _dir: tempfile::TempDir,
    inner: lineage::testing::Harness,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let inner = lineage::testing::Harness::new(dir.path(), ingest::stages()).unwrap();
        Harness { _dir: dir, inner }
    }

    fn run(&self, stage: &str, params: Value, inputs: &[(&str, &Artifact, Option<&str>)]) -> Result<Artifact> {
        self.run_seeded(stage, params, inputs, 7).map(|(a, _)| a)
    }

    fn run_seeded(
        &self,
        stage: &str,
        params: Value,
        inputs: &[(&str, &Artifact, Option<&str>)],
        seed: u64,
    ) -> Result<(Artifact, Outcome)> {
        self.inner.run(&stage.replace('.', "_"), stage, params, inputs, seed)
    }
}

fn rows<T: DeserializeOwned>(a: &Artifact, spec: &TableSpec) -> Vec<T> {
    lineage::testing::rows(a, spec).unwrap()
}

fn quarantine(a: &Artifact) -> Vec<QuarantineRow> {
    rows(a, &QUARANTINE)
}

/// line -> (field, reason) of the quarantined rows.
fn rejected(a: &Artifact) -> BTreeMap<i64, (String, String)> {
    quarantine(a).into_iter().map(|r| (r.line, (r.field, r.reason))).collect()
}

fn metric(a: &Artifact, name: &str) -> f64 {
    *a.manifest.metrics.get(name).unwrap_or_else(|| panic!("no metric {name}: {:?}", a.manifest.metrics))
}

fn assert_users_in_one_split(prompts: &[PromptRow]) {
    let mut split_of: BTreeMap<&str, &str> = BTreeMap::new();
    for p in prompts {
        let s = split_of.entry(&p.user_id).or_insert(&p.split);
        assert_eq!(*s, p.split, "user {} is in two splits", p.user_id);
        if p.split == "test" {
            assert_eq!(p.dataset, "eval", "test prompts are eval");
        }
    }
}

fn assert_no_pii_in_train(texts: impl IntoIterator<Item = (String, String)>) {
    let email = regex::Regex::new(r"[\w.+-]+@[\w-]+\.[\w.]+").unwrap();
    let phone = regex::Regex::new(r"\d{3}[ -]\d{3,4}[ -]?\d{0,4}").unwrap();
    for (split, text) in texts {
        if split == "train" {
            assert!(!email.is_match(&text) && !phone.is_match(&text), "PII left in a training row: {text}");
        }
    }
}

#[test]
fn prompts_jsonl_quarantine_dedup_cap_split_and_pii() {
    let h = Harness::new();
    let path = sample("prompts.jsonl");
    let a = h.run("ingest.prompts", json!({ "path": path, "max_per_user": 3 }), &[]).unwrap();
    let prompts: Vec<PromptRow> = rows(&a, &PROMPTS);
    let q = rejected(&a);

    // Malformed rows, with line, field and reason.
    assert_eq!(q[&7], ("prompt".into(), "missing".into()));
    assert_eq!(q[&8], ("prompt".into(), "expected text, got a number".into()));
    assert!(q[&9].0.is_empty() && q[&9].1.starts_with("not valid JSON"), "{:?}", q[&9]);
    assert_eq!(q[&10], ("prompt".into(), "empty".into()));
    assert_eq!(metric(&a, "rows_read"), 40.0);
    assert_eq!(metric(&a, "rows_bad"), 4.0);

    // Duplicates: exact (case and whitespace) and a 100-character common prefix.
    let id_of = |needle: &str| prompts.iter().find(|p| p.text.contains(needle)).unwrap().prompt_id.clone();
    assert_eq!(q[&3].1, format!("duplicate of {}", id_of("short poem about the sea")));
    assert_eq!(q[&40].1, format!("duplicate of {}", id_of("photosynthesis")));
    assert!(q[&5].1.starts_with(&format!("duplicate of {} (the first 100", id_of("Monday sync"))), "{:?}", q[&5]);
    assert!(!prompts.iter().any(|p| p.text.contains("Friday retro")));
    assert!(prompts.iter().any(|p| p.text == "Brainstorm five names for a neighbourhood bakery!"), "not a duplicate");
    assert_eq!(metric(&a, "removed_duplicate_exact"), 2.0);
    assert_eq!(metric(&a, "removed_duplicate_prefix"), 1.0);

    // The per-user cap: gina wrote 6, keeps 3; the rest are quarantined with the reason.
    assert_eq!(prompts.iter().filter(|p| p.user_id == "gina").count(), 3);
    assert_eq!(metric(&a, "removed_over_cap"), 3.0);
    assert_eq!(q.values().filter(|(_, r)| r.contains("per-user cap")).count(), 3);

    // Nothing is lost: every row is kept or quarantined.
    assert_eq!(prompts.len() + q.len(), 40);

    assert_users_in_one_split(&prompts);
    assert_no_pii_in_train(prompts.iter().map(|p| (p.split.clone(), p.text.clone())));
    let scrubbed = metric(&a, "pii_emails_scrubbed") + metric(&a, "pii_phones_scrubbed");
    let pii_in_train = prompts.iter().filter(|p| p.split == "train" && p.text.contains("[email]")).count();
    assert!(scrubbed >= 1.0 && pii_in_train >= 1, "the sample has PII in the training split");

    // A row without a user id belongs to the file's user; datasets from the column or the default.
    let bakery =
        prompts.iter().find(|p| p.text.starts_with("Brainstorm five names for a neighbourhood bakery.")).unwrap();
    assert_eq!(bakery.user_id, format!("file:{path}"));
    let hank = prompts.iter().find(|p| p.user_id == "hank").unwrap();
    assert_eq!(hank.dataset, if hank.split == "test" { "eval" } else { "sft" });
    assert!(prompts.iter().filter(|p| p.split != "test").all(|p| ["ppo", "sft", "rm"].contains(&p.dataset.as_str())));

    // Statistics for `show`.
    let stats = &a.manifest.stats;
    assert_eq!(stats["prompts_per_user"]["max"], 3.0);
    let per_split: u64 = stats["rows_per_split"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(per_split as usize, prompts.len());
    assert_eq!(stats["formats"][&path], "prompt");
}

#[test]
fn prompts_csv_and_parquet() {
    let h = Harness::new();
    let a = h.run("ingest.prompts", json!({ "path": sample("prompts.csv") }), &[]).unwrap();
    let prompts: Vec<PromptRow> = rows(&a, &PROMPTS);
    let q = rejected(&a);
    assert_eq!(q[&12], ("prompt".into(), "empty".into()), "{q:?}");
    assert!(q[&17].1.contains("has 4 fields but the header has 3"), "{q:?}");
    assert!(q[&7].1.starts_with("duplicate of"), "the case/space variant of line 2: {q:?}");
    assert!(prompts.iter().any(|p| p.text.contains("Friday, and parking")), "a quoted multi-line field");
    let boiling = prompts.iter().find(|p| p.text.contains("boiling point")).unwrap();
    assert_eq!(boiling.dataset, "eval");
    assert_users_in_one_split(&prompts);

    let a = h.run("ingest.prompts", json!({ "path": sample("prompts.parquet") }), &[]).unwrap();
    let prompts: Vec<PromptRow> = rows(&a, &PROMPTS);
    let q = rejected(&a);
    assert_eq!(q[&4], ("prompt".into(), "missing".into()), "a null prompt, by row number: {q:?}");
    assert_eq!(q[&9].0, "prompt", "a duplicate: {q:?}");
    assert_eq!(metric(&a, "rows_read"), 12.0);
    assert_eq!(prompts.len(), 10);
    assert!(prompts.iter().any(|p| p.user_id == "1001"), "a numeric user id reads as text");
}

#[test]
fn failing_past_max_bad_fraction_names_the_file_and_first_row() {
    let h = Harness::new();
    let path = sample("prompts.jsonl");
    let err = h.run("ingest.prompts", json!({ "path": path, "max_bad_fraction": 0.05 }), &[]).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(&format!("{path}: 4 of 40 rows (10%) rejected, more than max_bad_fraction 0.05")), "{msg}");
    assert!(msg.contains("the first: line 7, field `prompt`: missing"), "{msg}");
    assert!(msg.contains("quarantine.jsonl") && msg.contains("columns = {"), "{msg}");
    // The same file passes at the default (10% is not more than 0.1).
    h.run("ingest.prompts", json!({ "path": path }), &[]).unwrap();
}

#[test]
fn demonstrations_from_alpaca_prompt_completion_and_messages() {
    let h = Harness::new();

    let a = h.run("ingest.demonstrations", json!({ "path": sample("alpaca.json") }), &[]).unwrap();
    let demos: Vec<DemonstrationRow> = rows(&a, &DEMONSTRATIONS);
    let q = rejected(&a);
    assert_eq!(q[&10], ("output".into(), "missing".into()));
    assert!(q[&14].1.contains("expected a JSON object"), "{q:?}");
    assert!(q[&8].1.contains("same prompt and response"), "{q:?}");
    let french: Vec<&DemonstrationRow> =
        demos.iter().filter(|d| d.prompt.starts_with("Translate the sentence")).collect();
    assert_eq!(french.len(), 2, "instruction + input makes two prompts");
    assert_eq!(french[0].prompt, "Translate the sentence into French.\n\nThe cat is on the table.");
    let prompts: Vec<PromptRow> = rows(&a, &PROMPTS);
    assert!(prompts.iter().all(|p| p.dataset == if p.split == "test" { "eval" } else { "sft" }));
    assert_no_pii_in_train(demos.iter().map(|d| (d.split.clone(), format!("{} {}", d.prompt, d.response))));

    let a = h.run("ingest.demonstrations", json!({ "path": sample("prompt_completion.jsonl") }), &[]).unwrap();
    let demos: Vec<DemonstrationRow> = rows(&a, &DEMONSTRATIONS);
    let q = rejected(&a);
    assert_eq!(q[&6], ("completion".into(), "expected text, got a list".into()));
    assert!(q[&9].1.starts_with("not valid JSON"));
    assert!(q[&3].1.contains("same prompt and response"));
    let france: Vec<&DemonstrationRow> = demos.iter().filter(|d| d.prompt.contains("France")).collect();
    assert_eq!(france.len(), 2, "two different responses to one prompt are both kept");
    assert_eq!(france[0].prompt_id, france[1].prompt_id);
    assert!(demos.iter().any(|d| d.response.starts_with("Gravity is")), "`response` reads as `completion`");
    assert_eq!(metric(&a, "demonstrations"), demos.len() as f64);
    assert_no_pii_in_train(demos.iter().map(|d| (d.split.clone(), format!("{} {}", d.prompt, d.response))));

    let a = h.run("ingest.demonstrations", json!({ "path": sample("messages.jsonl") }), &[]).unwrap();
    let demos: Vec<DemonstrationRow> = rows(&a, &DEMONSTRATIONS);
    let q = rejected(&a);
    assert_eq!(q[&5].0, "messages");
    assert!(q[&5].1.contains("last message must be the assistant"), "{q:?}");
    assert!(q[&11].1.starts_with("duplicate of"), "{q:?}");
    let pasta = demos.iter().find(|d| d.response.contains("garlic")).unwrap();
    assert_eq!(
        pasta.prompt,
        "I need a dinner idea.<|assistant|>How about a vegetable stir-fry?<|user|>Something with pasta instead?"
    );
    let light = demos.iter().find(|d| d.response.contains("300,000")).unwrap();
    assert_eq!(light.prompt, "You are a concise assistant.\n\nWhat is the speed of light?");
    assert!(demos.iter().any(|d| d.response == "Honey never spoils."), "ShareGPT conversations");
    assert_eq!(demos.len(), 10);
}

#[test]
fn preferences_from_trl_pairs_conversational_and_hh_rlhf() {
    let h = Harness::new();

    let a = h.run("ingest.preferences", json!({ "path": sample("trl_pairs.jsonl") }), &[]).unwrap();
    let rankings: Vec<RankingRow> = rows(&a, &RANKINGS);
    let comparisons: Vec<ComparisonRow> = rows(&a, &COMPARISONS);
    let q = rejected(&a);
    assert_eq!(q[&14], ("rejected".into(), "missing".into()));
    assert!(q[&12].1.contains("same prompt, responses, ranks and labeler"), "{q:?}");
    assert_eq!(rankings.len(), 13);
    assert!(rankings.iter().all(|r| r.ranks == vec![1, 2] && r.responses.len() == 2));
    assert_eq!(comparisons.len(), 13, "a pair is one comparison");
    let sky: Vec<&RankingRow> = rankings.iter().filter(|r| r.prompt.contains("sky")).collect();
    assert_eq!(sky.len(), 2, "two rankings of one prompt");
    assert_eq!(sky[0].prompt_id, sky[1].prompt_id);
    assert_eq!(sky[1].labeler_id, "lab2");
    let prompts: Vec<PromptRow> = rows(&a, &PROMPTS);
    assert_eq!(prompts.len(), 12);
    assert!(prompts.iter().all(|p| p.dataset == if p.split == "test" { "eval" } else { "rm" }));
    assert_users_in_one_split(&prompts);
    for r in &rankings {
        let p = prompts.iter().find(|p| p.prompt_id == r.prompt_id).unwrap();
        assert_eq!(p.split, r.split);
    }

    let a = h.run("ingest.preferences", json!({ "path": sample("trl_conversational.jsonl") }), &[]).unwrap();
    let rankings: Vec<RankingRow> = rows(&a, &RANKINGS);
    let q = rejected(&a);
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[&11].0, "chosen");
    let joke = rankings.iter().find(|r| r.responses[1] == "No.").unwrap();
    assert_eq!(joke.prompt, "Hi<|assistant|>Hello! How can I help?<|user|>Tell me a joke.");
    let rhyme = rankings.iter().find(|r| r.prompt == "Give me a rhyme for 'cat'.").unwrap();
    assert_eq!(rhyme.responses, vec!["Hat.", "Dog."], "the implicit prompt is split off");

    let a = h.run("ingest.preferences", json!({ "path": sample("hh_rlhf.jsonl") }), &[]).unwrap();
    let rankings: Vec<RankingRow> = rows(&a, &RANKINGS);
    let q = rejected(&a);
    assert_eq!(q.len(), 1);
    assert!(q[&8].1.contains("differs from `chosen`"), "{q:?}");
    assert_eq!(rankings.len(), 11);
    let tokyo = rankings.iter().find(|r| r.responses[0] == "Tokyo.").unwrap();
    assert_eq!(tokyo.prompt, "Hi there<|assistant|>Hello! How can I help?<|user|>What's the capital of Japan?");
    assert_eq!(metric(&a, "comparisons"), 11.0);
}

#[test]
fn preferences_from_k_way_rankings() {
    let h = Harness::new();
    let a = h.run("ingest.preferences", json!({ "path": sample("rankings.jsonl") }), &[]).unwrap();
    let rankings: Vec<RankingRow> = rows(&a, &RANKINGS);
    let comparisons: Vec<ComparisonRow> = rows(&a, &COMPARISONS);
    let q = rejected(&a);
    assert_eq!(q[&7], ("ranks".into(), "rank 5 is outside 1..=3".into()));
    assert_eq!(rankings.len(), 11);
    let expected: usize = rankings.iter().map(|r| comparisons_of(r).len()).sum();
    assert_eq!(comparisons.len(), expected);
    // K = 5 with one tie: C(5,2) - 1 comparisons.
    let dog = rankings.iter().find(|r| r.prompt.contains("dog")).unwrap();
    assert_eq!(comparisons.iter().filter(|c| c.ranking_id == dog.ranking_id).count(), 9);
    let bakery: Vec<&RankingRow> = rankings.iter().filter(|r| r.prompt.contains("bakery")).collect();
    assert_eq!(bakery.len(), 2, "two labelers ranked the same responses");
    assert_ne!(bakery[0].ranking_id, bakery[1].ranking_id);
    assert_eq!(a.manifest.stats["rankings_per_k"]["4"], 6);
}

#[test]
fn text_blocks_dedup_and_validation_split() {
    let h = Harness::new();
    let a = h.run("ingest.text", json!({ "path": sample("text.txt"), "validation_fraction": 0.3 }), &[]).unwrap();
    let docs: Vec<PretrainTextRow> = rows(&a, &PRETRAIN_TEXT);
    let q = rejected(&a);
    assert_eq!(docs.len(), 14);
    assert_eq!(q.len(), 1);
    assert!(q[&17].1.starts_with("duplicate of d"), "{q:?}");
    assert!(docs[0].text.starts_with("The river ran") && docs[0].text.contains('\n'), "a block is one document");
    assert!(docs.iter().any(|d| d.split == "validation") && docs.iter().any(|d| d.split == "train"));
    assert!(docs.iter().all(|d| d.kind == "text"));
}

#[test]
fn column_mapping_reads_other_names() {
    let h = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qa.csv");
    std::fs::write(&path, "question,answer,who\nWhat is 1+1?,2,u1\nName a vowel.,A,u2\n").unwrap();
    let path = path.display().to_string();
    let err = h.run("ingest.demonstrations", json!({ "path": path }), &[]).unwrap_err();
    assert!(format!("{err:#}").contains("cannot tell the format"), "{err:#}");
    let params =
        json!({ "path": path, "columns": { "prompt": "question", "completion": "answer" }, "user_column": "who" });
    let a = h.run("ingest.demonstrations", params, &[]).unwrap();
    let demos: Vec<DemonstrationRow> = rows(&a, &DEMONSTRATIONS);
    assert_eq!(demos.len(), 2);
    let prompts: Vec<PromptRow> = rows(&a, &PROMPTS);
    assert_eq!(prompts.iter().map(|p| p.user_id.as_str()).collect::<BTreeSet<_>>(), BTreeSet::from(["u1", "u2"]));
}

#[test]
fn several_files_in_one_step() {
    let h = Harness::new();
    let (alpaca, messages) = (sample("alpaca.json"), sample("messages.jsonl"));
    let a = h.run("ingest.demonstrations", json!({ "path": [alpaca, messages] }), &[]).unwrap();
    assert_eq!(a.manifest.stats["formats"][&alpaca], "alpaca");
    assert_eq!(a.manifest.stats["formats"][&messages], "messages");
    let demos: Vec<DemonstrationRow> = rows(&a, &DEMONSTRATIONS);
    assert_eq!(demos.iter().map(|d| d.source.as_str()).collect::<BTreeSet<_>>().len(), 2);
    assert_eq!(a.manifest.file_deps.len(), 2, "both files enter the key");
    assert_eq!(metric(&a, "rows_read"), 32.0);
}

#[test]
fn parameters_are_checked() {
    let stages = ingest::stages();
    let prompts = stages.iter().find(|s| s.name() == "ingest.prompts").unwrap();
    let e = prompts.resolve_params(&json!({ "path": "x.jsonl", "max_per_usr": 3 })).unwrap_err().to_string();
    assert!(e.contains("unknown parameter `max_per_usr`"), "{e}");
    let e = prompts.resolve_params(&json!({})).unwrap_err().to_string();
    assert!(e.contains("`path` is required"), "{e}");
    let e =
        prompts.resolve_params(&json!({ "path": "x", "validation_fraction": 0.6, "test_fraction": 0.5 })).unwrap_err();
    assert!(e.to_string().contains("leaves no training split"), "{e}");
    let e = prompts.resolve_params(&json!({ "path": "x", "columns": { "question": "q" } })).unwrap_err();
    assert!(e.to_string().contains("`question` is not a column"), "{e}");
    let resolved = prompts.resolve_params(&json!({ "path": "x" })).unwrap();
    assert_eq!(resolved["max_per_user"], 200);
    assert_eq!(resolved["max_bad_fraction"], 0.1);
}

#[test]
fn same_inputs_and_seed_give_identical_tables() {
    let hash = |seed: u64| {
        let h = Harness::new();
        let (a, _) = h
            .run_seeded(
                "ingest.preferences",
                json!({ "path": sample("trl_pairs.jsonl"), "test_fraction": 0.3 }),
                &[],
                seed,
            )
            .unwrap();
        let tables: BTreeMap<String, String> =
            a.manifest.files.iter().map(|f| (f.path.clone(), f.content.clone())).collect();
        (a.manifest.content_hash.clone(), tables)
    };
    let (first, tables) = hash(1);
    let (again, tables_again) = hash(1);
    assert_eq!(first, again);
    assert_eq!(tables, tables_again);
    assert!((2..6).any(|s| hash(s).0 != first), "the seed moves users between splits");

    // And through the store: an unchanged step is not run again.
    let h = Harness::new();
    let params = json!({ "path": sample("prompts.csv") });
    let (_, outcome) = h.run_seeded("ingest.prompts", params.clone(), &[], 3).unwrap();
    assert_eq!(outcome, Outcome::Ran);
    let (_, outcome) = h.run_seeded("ingest.prompts", params, &[], 3).unwrap();
    assert_eq!(outcome, Outcome::Cached);
}

#[test]
fn tokenizer_trains_deterministically_and_checks_user_tokenizers() {
    let h = Harness::new();
    let text = h.run("ingest.text", json!({ "path": sample("text.txt") }), &[]).unwrap();
    let params = json!({ "vocab_size": 400, "min_frequency": 1 });
    let tok = h.run("ingest.tokenizer", params.clone(), &[("text", &text, None)]).unwrap();
    let path = tok.dir.join("model/tokenizer.json");
    let bytes = std::fs::read(&path).unwrap();
    let t = tokenizers::Tokenizer::from_file(&path).unwrap();
    for (i, s) in ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|pad|>"].iter().enumerate() {
        assert_eq!(t.token_to_id(s), Some(i as u32), "{s}");
    }
    let enc = t.encode("Hi<|assistant|>Hello", false).unwrap();
    assert!(enc.get_ids().contains(&2), "the chat marker is one special token");
    assert_eq!(t.decode(enc.get_ids(), false).unwrap(), "Hi<|assistant|>Hello");
    assert!(metric(&tok, "vocab_size") <= 400.0 && metric(&tok, "vocab_size") > 300.0);
    assert!(metric(&tok, "chars_per_token") > 1.5, "{:?}", tok.manifest.metrics);
    assert!(metric(&tok, "mean_tokens_per_doc") > 1.0);

    // Same input, same bytes, in a fresh store (a fresh training run).
    let h2 = Harness::new();
    let text2 = h2.run("ingest.text", json!({ "path": sample("text.txt") }), &[]).unwrap();
    let tok2 = h2.run("ingest.tokenizer", params, &[("text", &text2, None)]).unwrap();
    assert_eq!(bytes, std::fs::read(tok2.dir.join("model/tokenizer.json")).unwrap());

    // A user's tokenizer: copied byte for byte when it has the special tokens.
    let dir = tempfile::tempdir().unwrap();
    let user = dir.path().join("tokenizer.json");
    std::fs::write(&user, &bytes).unwrap();
    let copied = h.run("ingest.tokenizer", json!({ "path": user }), &[]).unwrap();
    assert_eq!(bytes, std::fs::read(copied.dir.join("model/tokenizer.json")).unwrap());

    // One without them: an error that says what to do, or a mapping.
    let other = h
        .run("ingest.tokenizer", json!({ "vocab_size": 300, "special_tokens": ["</s>"] }), &[("text", &text, None)])
        .unwrap();
    let other_path = other.dir.join("model/tokenizer.json");
    let err = h.run("ingest.tokenizer", json!({ "path": other_path }), &[]).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("has no token `<|endoftext|>`") && msg.contains("map_special_tokens"), "{msg}");
    let mapped = h
        .run(
            "ingest.tokenizer",
            json!({ "path": other_path, "map_special_tokens": { "<|endoftext|>": "</s>" }, "add_missing_special_tokens": true }),
            &[],
        )
        .unwrap();
    let specials: Value =
        serde_json::from_slice(&std::fs::read(mapped.dir.join("model/special_tokens.json")).unwrap()).unwrap();
    assert_eq!(specials["<|endoftext|>"]["token"], "</s>");
    assert_eq!(specials["<|endoftext|>"]["id"], 0);
    assert!(specials["<|pad|>"]["id"].as_u64().unwrap() >= 300, "added after the vocabulary");
    assert_eq!(mapped.manifest.warnings.len(), 1);
}

#[test]
fn length_limits_in_tokens_need_a_tokenizer() {
    let h = Harness::new();
    let path = sample("prompts.csv");
    let err = h.run("ingest.prompts", json!({ "path": path, "max_prompt_tokens": 8 }), &[]).unwrap_err();
    assert!(format!("{err:#}").contains("need a tokenizer"), "{err:#}");
    let text = h.run("ingest.text", json!({ "path": sample("text.txt") }), &[]).unwrap();
    let tok = h.run("ingest.tokenizer", json!({ "vocab_size": 300 }), &[("text", &text, None)]).unwrap();
    let a = h
        .run("ingest.prompts", json!({ "path": path, "max_prompt_tokens": 20 }), &[("tokenizer", &tok, None)])
        .unwrap();
    assert!(metric(&a, "removed_too_long") >= 1.0);
    assert!(quarantine(&a).iter().any(|r| r.reason.contains("tokens, limit 20")));
    let chars = h.run("ingest.prompts", json!({ "path": path, "max_prompt_chars": 40 }), &[]).unwrap();
    assert!(quarantine(&chars).iter().any(|r| r.reason.contains("characters, limit 40")));
}

/// Rankings -> export -> the filled-in sample files -> import.
#[test]
fn labelling_round_trip() {
    let h = Harness::new();
    let prefs = h.run("ingest.preferences", json!({ "path": sample("rankings.jsonl") }), &[]).unwrap();
    let export = h.run("ingest.export_labels", json!({}), &[("tasks", &prefs, Some("rankings"))]).unwrap();
    let tasks: Vec<LabelTaskRow> = rows(&export, &LABEL_TASKS);
    assert_eq!(tasks.len(), 10, "the two bakery rankings share a task");
    let csv_text = std::fs::read_to_string(export.dir.join("label_tasks.csv")).unwrap();
    assert!(
        csv_text.starts_with("task_id,prompt,response_1,response_2,response_3,response_4,response_5,ranks,labeler_id")
    );
    let jsonl = std::fs::read_to_string(export.dir.join("label_tasks.jsonl")).unwrap();
    assert_eq!(jsonl.lines().count(), 10);
    let shuffled = tasks.iter().any(|t| {
        let r: Vec<RankingRow> = rows(&prefs, &RANKINGS);
        r.iter().any(|r| r.prompt_id == t.prompt_id && r.responses != t.responses)
    });
    assert!(shuffled, "responses are shown in a shuffled order");

    // The CSV has one more malformed row (3 of 24), so it needs a higher max_bad_fraction.
    for (file, max_bad) in [("labels_filled.jsonl", 0.1), ("labels_filled.csv", 0.15)] {
        let params = json!({ "path": sample(file), "max_bad_fraction": max_bad });
        let a = h.run("ingest.import_labels", params, &[("tasks", &export, None)]).unwrap();
        let rankings: Vec<RankingRow> = rows(&a, &RANKINGS);
        let comparisons: Vec<ComparisonRow> = rows(&a, &COMPARISONS);
        let q = quarantine(&a);
        let reasons: Vec<&str> = q.iter().map(|r| r.reason.as_str()).collect();
        assert!(reasons.iter().any(|r| r.starts_with("unknown task `t-missing`")), "{file}: {reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("outside 1..=")), "{file}: {reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("not ranked yet")), "{file}: {reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("ranked twice")), "{file}: {reasons:?}");
        assert_eq!(rankings.len(), 19, "{file}");
        assert_eq!(metric(&a, "tasks_labelled"), 10.0);
        assert_eq!(metric(&a, "labelers"), 2.0);
        let expected: usize = rankings.iter().map(|r| comparisons_of(r).len()).sum();
        assert_eq!(comparisons.len(), expected);
        for r in &rankings {
            let t = tasks.iter().find(|t| t.prompt_id == r.prompt_id).unwrap();
            assert_eq!(r.responses, t.responses, "ranks refer to the exported order");
            assert_eq!(r.split, t.split);
        }
    }
    // A re-sorted spreadsheet is caught.
    let params = json!({ "path": sample("labels_filled.csv"), "max_bad_fraction": 0.15 });
    let a = h.run("ingest.import_labels", params, &[("tasks", &export, None)]).unwrap();
    assert!(
        quarantine(&a).iter().any(|r| r.field == "responses" && r.reason.contains("differ from the exported task"))
    );
}

/// Regenerates `prompts.parquet` and the filled-in label files:
/// `cargo test -p ingest --test stages -- --ignored regenerate`.
#[test]
#[ignore = "regenerates the fixtures; run by hand"]
fn regenerate_fixtures() {
    write_prompts_parquet(&samples_dir().join("prompts.parquet"));

    let h = Harness::new();
    let prefs = h.run("ingest.preferences", json!({ "path": sample("rankings.jsonl") }), &[]).unwrap();
    let export = h.run("ingest.export_labels", json!({}), &[("tasks", &prefs, Some("rankings"))]).unwrap();
    let tasks: Vec<LabelTaskRow> = rows(&export, &LABEL_TASKS);
    // Two labelers rank every task: `ann` by response length (longest best),
    // `ben` by reverse order of appearance with a tie at the top.
    let ranks = |t: &LabelTaskRow, labeler: &str| -> Vec<i32> {
        let k = t.responses.len();
        if labeler == "ann" {
            let mut order: Vec<usize> = (0..k).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(t.responses[i].len()));
            let mut r = vec![0; k];
            for (rank, i) in order.into_iter().enumerate() {
                r[i] = rank as i32 + 1;
            }
            r
        } else {
            (0..k).map(|i| ((k - i) as i32).min(k as i32 - 1)).collect()
        }
    };
    let mut jsonl = String::new();
    let mut w = csv::Writer::from_writer(Vec::new());
    let kmax = tasks.iter().map(|t| t.responses.len()).max().unwrap();
    let mut header = vec!["task_id".to_string(), "prompt".to_string()];
    header.extend((1..=kmax).map(|i| format!("response_{i}")));
    header.extend(["ranks".to_string(), "labeler_id".to_string()]);
    w.write_record(&header).unwrap();
    let mut csv_row = |t: &LabelTaskRow, responses: &[String], ranks: &str, labeler: &str| {
        let mut row = vec![t.task_id.clone(), t.prompt.clone()];
        row.extend((0..kmax).map(|i| responses.get(i).cloned().unwrap_or_default()));
        row.extend([ranks.to_string(), labeler.to_string()]);
        w.write_record(&row).unwrap();
    };
    let join = |r: &[i32]| r.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    for labeler in ["ann", "ben"] {
        for (i, t) in tasks.iter().enumerate() {
            if labeler == "ben" && i == 0 {
                // Not ranked yet.
                jsonl.push_str(&json!({"task_id": t.task_id, "ranks": [], "labeler_id": labeler}).to_string());
                jsonl.push('\n');
                csv_row(t, &t.responses, "", labeler);
                continue;
            }
            let r = ranks(t, labeler);
            jsonl.push_str(
                &json!({"task_id": t.task_id, "prompt": t.prompt, "ranks": r, "labeler_id": labeler}).to_string(),
            );
            jsonl.push('\n');
            csv_row(t, &t.responses, &join(&r), labeler);
        }
    }
    // The malformed rows: an unknown task, ranks out of range, a task ranked
    // twice by one labeler (the second is dropped).
    let t = &tasks[1];
    let k = t.responses.len() as i32;
    let bad = (1..=k).map(|i| if i == 1 { k + 1 } else { i }).collect::<Vec<_>>();
    for (id, r, labeler) in [
        ("t-missing", ranks(t, "ann"), "ann"),
        (t.task_id.as_str(), bad, "ann"),
        (t.task_id.as_str(), ranks(t, "ann"), "ann"),
    ] {
        jsonl.push_str(&json!({"task_id": id, "ranks": r, "labeler_id": labeler}).to_string());
        jsonl.push('\n');
        let mut tt = t.clone();
        tt.task_id = id.to_string();
        csv_row(&tt, &t.responses, &join(&r), labeler);
    }
    // In the CSV only: a row whose responses were re-sorted.
    let t = &tasks[2];
    let mut sorted = t.responses.clone();
    sorted.sort();
    sorted.reverse();
    assert_ne!(sorted, t.responses);
    csv_row(t, &sorted, &join(&ranks(t, "ann")), "cat");
    std::fs::write(samples_dir().join("labels_filled.jsonl"), jsonl).unwrap();
    std::fs::write(samples_dir().join("labels_filled.csv"), w.into_inner().unwrap()).unwrap();
}

fn write_prompts_parquet(path: &Path) {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, LargeStringArray, ListBuilder, StringArray, StringBuilder};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    let prompts: Vec<Option<&str>> = vec![
        Some("Write a sonnet about a lighthouse keeper."),
        Some("What is the difference between a virus and a bacterium?"),
        Some("Suggest three names for a sailing boat."),
        None,
        Some("Explain compound interest with an example."),
        Some("Give me a recipe for lemonade."),
        Some("Describe a busy market in the morning."),
        Some("How do I change a bicycle tyre?"),
        Some("write a sonnet about a LIGHTHOUSE keeper."),
        Some("List three benefits of walking every day."),
        Some("Email me at sam@example.net with a summary of the French revolution."),
        Some("What is the tallest animal?"),
    ];
    let users = ["pq1", "pq1", "pq2", "pq2", "pq3", "pq3", "pq4", "pq4", "pq5", "1001", "1001", "pq6"];
    let mut tags = ListBuilder::new(StringBuilder::new());
    for i in 0..prompts.len() {
        tags.values().append_value("sample");
        if i % 2 == 0 {
            tags.values().append_value("even");
        }
        tags.append(true);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("prompt", DataType::Utf8, true),
        Field::new("user_id", DataType::LargeUtf8, false),
        Field::new("tags", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..prompts.len() as i64)),
        Arc::new(StringArray::from(prompts)),
        Arc::new(LargeStringArray::from(users.to_vec())),
        Arc::new(tags.finish()),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}
