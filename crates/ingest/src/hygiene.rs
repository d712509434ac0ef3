//! The paper's prompt hygiene, applied to examples in this order:
//!
//! 1. **length limits** on prompts and responses (characters, or tokens when
//!    a tokenizer is given);
//! 2. **exact duplicates** (after case and whitespace normalisation) merge into
//!    one prompt; a row that repeats another row of that prompt (same response,
//!    same ranking) is dropped;
//! 3. **common-prefix duplicates**: a prompt whose first `dedup_prefix_chars`
//!    normalised characters equal an earlier prompt's is dropped with its rows;
//! 4. the **per-user cap**: a user keeps at most `max_per_user` prompts, chosen
//!    by a seeded hash of the prompt id (so the choice does not depend on file
//!    order);
//! 5. the **split by user**: a seeded hash of the user id picks train,
//!    validation or test, so no user is in two splits;
//! 6. the **dataset**: the row's `dataset` column, else the declared one;
//!    test-split prompts are `eval`;
//! 7. **PII scrubbing** of the training split (prompts and responses).
//!
//! Every removed row goes to quarantine with its reason, and is counted.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::common::{normalize, stable_id, unit_hash};
use crate::formats::{Example, Payload};
use crate::pii::{Scrubbed, scrub};
use crate::quarantine::{Quarantine, RowError};

/// Hygiene settings (from a stage's parameters).
#[derive(Debug, Clone)]
pub struct Hygiene {
    /// 0 turns common-prefix deduplication off.
    pub dedup_prefix_chars: usize,
    /// 0 means no cap.
    pub max_per_user: usize,
    pub validation_fraction: f64,
    pub test_fraction: f64,
    /// Every prompt into this split (`""`: by user id).
    pub split: String,
    pub scrub_pii: bool,
    /// 0 means no limit.
    pub max_prompt_chars: usize,
    pub max_response_chars: usize,
    pub max_prompt_tokens: usize,
    pub max_response_tokens: usize,
    /// The file's declared dataset (`""`: none).
    pub dataset: String,
    /// The stage's dataset when neither the row nor the file says.
    pub default_dataset: &'static str,
    pub seed: u64,
}

/// One distinct prompt and the rows that came with it.
#[derive(Debug, Clone)]
pub struct Group {
    pub prompt_id: String,
    pub text: String,
    pub user_id: String,
    pub split: String,
    pub dataset: String,
    /// The file of its first row.
    pub source: String,
    pub examples: Vec<Example>,
}

/// Counts for the metrics.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub scrubbed: Scrubbed,
    pub users: usize,
}

/// The split a user's prompts go to.
pub fn split_of(user: &str, h: &Hygiene) -> &'static str {
    if !h.split.is_empty() {
        return match h.split.as_str() {
            "validation" => "validation",
            "test" => "test",
            _ => "train",
        };
    }
    let u = unit_hash(h.seed, "split", user);
    if u < h.test_fraction {
        "test"
    } else if u < h.test_fraction + h.validation_fraction {
        "validation"
    } else {
        "train"
    }
}

pub fn prompt_id(text: &str) -> String {
    stable_id("p", &[&normalize(text)])
}

/// Applies the hygiene steps; removed rows go to `q`.
pub fn apply(
    examples: Vec<Example>,
    h: &Hygiene,
    tokens: Option<TokenCount<'_>>,
    q: &mut Quarantine,
) -> (Vec<Group>, Report) {
    let mut report = Report::default();

    // 1. Length limits.
    let mut kept = Vec::with_capacity(examples.len());
    for e in examples {
        match too_long(&e, h, tokens) {
            Ok(None) => kept.push(e),
            Ok(Some(err)) => q.removed(&e.origin, "too_long", err),
            Err(err) => q.bad(&e.origin, err),
        }
    }

    // 2. Exact duplicates: group by normalised prompt.
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut seen: Vec<HashSet<String>> = Vec::new();
    for e in kept {
        let norm = normalize(&e.prompt);
        let i = *index.entry(norm).or_insert_with(|| {
            groups.push(Group {
                prompt_id: prompt_id(&e.prompt),
                text: e.prompt.clone(),
                user_id: e.user_id.clone(),
                split: String::new(),
                dataset: String::new(),
                source: e.origin.file.clone(),
                examples: Vec::new(),
            });
            seen.push(HashSet::new());
            groups.len() - 1
        });
        if seen[i].insert(e.payload.dedup_key()) {
            groups[i].examples.push(e);
        } else {
            let what = match e.payload {
                Payload::Prompt => "",
                Payload::Demonstration { .. } => " (same prompt and response)",
                Payload::Ranking { .. } => " (same prompt, responses, ranks and labeler)",
            };
            let reason = format!("duplicate of {}{what}", groups[i].prompt_id);
            q.removed(&e.origin, "duplicate_exact", RowError::new("prompt", reason));
        }
    }

    // 3. Common-prefix duplicates.
    if h.dedup_prefix_chars > 0 {
        let mut prefixes: HashMap<String, String> = HashMap::new();
        groups.retain(|g| {
            let norm = normalize(&g.text);
            if norm.chars().count() < h.dedup_prefix_chars {
                return true;
            }
            let prefix: String = norm.chars().take(h.dedup_prefix_chars).collect();
            match prefixes.get(&prefix) {
                None => {
                    prefixes.insert(prefix, g.prompt_id.clone());
                    true
                }
                Some(first) => {
                    let reason =
                        format!("duplicate of {first} (the first {} characters are the same)", h.dedup_prefix_chars);
                    for e in &g.examples {
                        q.removed(&e.origin, "duplicate_prefix", RowError::new("prompt", reason.clone()));
                    }
                    false
                }
            }
        });
    }

    // 4. The per-user cap.
    let mut by_user: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, g) in groups.iter().enumerate() {
        by_user.entry(g.user_id.as_str()).or_default().push(i);
    }
    report.users = by_user.len();
    let mut drop: HashSet<usize> = HashSet::new();
    if h.max_per_user > 0 {
        for (user, mut idx) in by_user {
            if idx.len() <= h.max_per_user {
                continue;
            }
            let n = idx.len();
            idx.sort_by(|&a, &b| {
                let ka = unit_hash(h.seed, "cap", &groups[a].prompt_id);
                let kb = unit_hash(h.seed, "cap", &groups[b].prompt_id);
                ka.total_cmp(&kb).then(a.cmp(&b))
            });
            for &i in &idx[h.max_per_user..] {
                drop.insert(i);
                let reason =
                    format!("over the per-user cap: user `{user}` has {n} prompts, max_per_user {}", h.max_per_user);
                for e in &groups[i].examples {
                    q.removed(&e.origin, "over_cap", RowError::new("user_id", reason.clone()));
                }
            }
        }
    }
    let mut groups: Vec<Group> =
        groups.into_iter().enumerate().filter(|(i, _)| !drop.contains(i)).map(|(_, g)| g).collect();

    // 5-7. Split, dataset, scrubbing.
    for g in &mut groups {
        g.split = split_of(&g.user_id, h).to_string();
        g.dataset = if g.split == "test" {
            "eval".to_string()
        } else if let Some(d) = g.examples.first().and_then(|e| e.dataset.clone()) {
            d
        } else if !h.dataset.is_empty() {
            h.dataset.clone()
        } else {
            h.default_dataset.to_string()
        };
        if h.scrub_pii && g.split == "train" {
            let (text, n) = scrub(&g.text);
            g.text = text;
            report.scrubbed += n;
            for e in &mut g.examples {
                // The prompt's PII was counted once, on the group's text.
                e.prompt = scrub(&e.prompt).0;
                for r in e.payload.responses_mut() {
                    let (s, n) = scrub(r);
                    *r = s;
                    report.scrubbed += n;
                }
            }
        }
    }
    (groups, report)
}

/// Counts a text's tokens, or says why it cannot.
pub type TokenCount<'a> = &'a dyn Fn(&str) -> Result<usize, String>;

/// `Ok(Some(_))`: over a length limit (removed); `Err(_)`: its tokens could not be counted (a bad
/// row, which counts against `max_bad_fraction`).
fn too_long(e: &Example, h: &Hygiene, tokens: Option<TokenCount<'_>>) -> Result<Option<RowError>, RowError> {
    let check = |field: &str, text: &str, max_chars: usize, max_tokens: usize| -> Result<Option<RowError>, RowError> {
        if max_chars > 0 {
            let n = text.chars().count();
            if n > max_chars {
                return Ok(Some(RowError::new(field, format!("too long: {n} characters, limit {max_chars}"))));
            }
        }
        if max_tokens > 0
            && let Some(count) = tokens
        {
            let n = count(text).map_err(|why| RowError::new(field, why))?;
            if n > max_tokens {
                return Ok(Some(RowError::new(field, format!("too long: {n} tokens, limit {max_tokens}"))));
            }
        }
        Ok(None)
    };
    if let Some(err) = check("prompt", &e.prompt, h.max_prompt_chars, h.max_prompt_tokens)? {
        return Ok(Some(err));
    }
    for r in e.payload.responses() {
        if let Some(err) = check("response", r, h.max_response_chars, h.max_response_tokens)? {
            return Ok(Some(err));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quarantine::Origin;

    fn ex(line: i64, prompt: &str, user: &str) -> Example {
        Example {
            origin: Origin { file: "f".into(), line, raw: prompt.into() },
            prompt: prompt.into(),
            user_id: user.into(),
            dataset: None,
            family: None,
            payload: Payload::Prompt,
        }
    }

    fn hygiene() -> Hygiene {
        Hygiene {
            dedup_prefix_chars: 20,
            max_per_user: 2,
            validation_fraction: 0.2,
            test_fraction: 0.2,
            split: String::new(),
            scrub_pii: true,
            max_prompt_chars: 0,
            max_response_chars: 0,
            max_prompt_tokens: 0,
            max_response_tokens: 0,
            dataset: String::new(),
            default_dataset: "ppo",
            seed: 1,
        }
    }

    #[test]
    fn dedups_caps_and_keeps_users_in_one_split() {
        let examples = vec![
            ex(1, "Write a poem about the sea and its waves", "a"),
            ex(2, "write a   POEM about the sea and its waves", "b"),
            ex(3, "Write a poem about the sea and the moon", "c"),
            ex(4, "Name three fruits", "a"),
            ex(5, "Name three birds", "a"),
            ex(6, "Name three trees", "a"),
        ];
        let mut q = Quarantine::new();
        let (groups, _) = apply(examples, &hygiene(), None, &mut q);
        let reasons: Vec<(i64, &str)> = q.rows().iter().map(|r| (r.line, r.reason.as_str())).collect();
        assert!(reasons[0].0 == 2 && reasons[0].1.starts_with("duplicate of p"), "{reasons:?}");
        assert!(reasons[1].0 == 3 && reasons[1].1.contains("first 20 characters"), "{reasons:?}");
        assert!(reasons[2].1.contains("over the per-user cap"), "{reasons:?}");
        assert_eq!(groups.len(), 2, "user a keeps 2 of 4, b and c are duplicates");
        let counts = q.removed_counts();
        assert_eq!((counts["duplicate_exact"], counts["duplicate_prefix"], counts["over_cap"]), (1, 1, 2));
        for g in &groups {
            assert_eq!(g.split, split_of(&g.user_id, &hygiene()));
            assert_eq!(g.dataset, if g.split == "test" { "eval" } else { "ppo" });
        }
    }

    #[test]
    fn length_limits_in_chars_and_tokens() {
        let mut h = hygiene();
        h.max_prompt_chars = 10;
        let mut q = Quarantine::new();
        let (groups, _) = apply(vec![ex(1, "short", "a"), ex(2, "far too long a prompt", "a")], &h, None, &mut q);
        assert_eq!(groups.len(), 1);
        assert_eq!(q.rows()[0].reason, "too long: 21 characters, limit 10");
        h.max_prompt_chars = 0;
        h.max_prompt_tokens = 3;
        let words = |s: &str| match s.contains('\u{0}') {
            true => Err("the tokenizer could not encode it".to_string()),
            false => Ok(s.split_whitespace().count()),
        };
        let mut q = Quarantine::new();
        let rows = vec![ex(1, "one two", "a"), ex(2, "one two three four", "a"), ex(3, "one \u{0}", "a")];
        let (groups, _) = apply(rows, &h, Some(&words), &mut q);
        assert_eq!(groups.len(), 1);
        assert_eq!(q.rows()[0].reason, "too long: 4 tokens, limit 3");
        // A text the tokenizer cannot encode is a bad row with the tokenizer's reason, not "too long".
        assert_eq!(q.bad_count(), 1);
        assert_eq!(
            (q.rows()[1].field.as_str(), q.rows()[1].reason.as_str()),
            ("prompt", "the tokenizer could not encode it")
        );
    }

    #[test]
    fn splits_follow_the_fractions() {
        let h = hygiene();
        let mut n = BTreeMap::new();
        for i in 0..2000 {
            *n.entry(split_of(&format!("user{i}"), &h)).or_insert(0) += 1;
        }
        assert!((300..500).contains(&n["test"]) && (300..500).contains(&n["validation"]), "{n:?}");
    }
}
