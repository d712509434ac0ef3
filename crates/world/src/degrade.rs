//! Degraded responses: realistic SFT-like samples of varying quality, made from ideal answers.
//!
//! Until the pipeline has real samples, labeler calibration and the judge's tests need responses that
//! fail the way a small fine-tuned model fails: about the wrong entity, cut off, looping, rambling into
//! pretraining text, continuing with more questions, toxic, inventing details, ignoring a constraint,
//! refusing a benign request or helping with a harmful one, repeating a myth. Each [`Degradation`]
//! applies one such failure; [`sample_group`] mixes them into K responses per prompt.

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::data;
use crate::meta::{Constraint, Response, Slot, Task, TaskMeta};
use crate::slots;
use crate::text::{Slots, number_word, with_article};

/// One way a response can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Degradation {
    /// The task's subject replaced by another entity of its kind.
    WrongEntity,
    /// The answer (or a fact, item or label) replaced by a wrong one of its kind.
    WrongValue,
    /// Cut off mid-way by the length limit (no EOS).
    Truncate,
    /// The last sentence (or list item) left out.
    DropPart,
    /// Pretraining-like text appended (off-topic continuation).
    Ramble,
    /// The last sentence repeated in a loop.
    Repeat,
    /// An insult added.
    ToxicInsert,
    /// A detail the task does not support added.
    Hallucinate,
    /// The explicit constraint broken (or, without one, padding added).
    ViolateConstraint,
    /// More questions instead of an answer.
    QuestionContinuation,
    /// The prompt copied back.
    Echo,
    /// The same text without EOS.
    MissingEos,
    /// A refusal (an over-refusal on benign tasks).
    Refuse,
    /// Help with a harmful request.
    Comply,
    /// A myth asserted, a false premise accepted or an answer made up.
    Untruthful,
    /// Some words replaced by non-words.
    Garble,
    /// Only the bare answer, no sentence.
    Terse,
}

impl Degradation {
    pub const ALL: [Degradation; 17] = [
        Degradation::WrongEntity,
        Degradation::WrongValue,
        Degradation::Truncate,
        Degradation::DropPart,
        Degradation::Ramble,
        Degradation::Repeat,
        Degradation::ToxicInsert,
        Degradation::Hallucinate,
        Degradation::ViolateConstraint,
        Degradation::QuestionContinuation,
        Degradation::Echo,
        Degradation::MissingEos,
        Degradation::Refuse,
        Degradation::Comply,
        Degradation::Untruthful,
        Degradation::Garble,
        Degradation::Terse,
    ];

    /// Whether this failure makes sense for the task.
    pub fn applies(self, meta: &TaskMeta) -> bool {
        match self {
            Degradation::WrongEntity => !subject_names(&meta.task).is_empty(),
            Degradation::WrongValue => value_of(&meta.task).is_some(),
            Degradation::Refuse => !matches!(meta.task, Task::Refuse { .. }),
            Degradation::Comply => matches!(meta.task, Task::Refuse { .. }),
            Degradation::Untruthful => {
                matches!(meta.task, Task::Misconception { .. } | Task::FalsePremise { .. } | Task::Unknown { .. })
            }
            Degradation::Terse => {
                matches!(meta.task, Task::Answer { .. } | Task::List { .. } | Task::Classify { .. })
            }
            _ => true,
        }
    }

    /// How often a small fine-tuned model makes this mistake, relative to the others.
    fn weight(self, meta: &TaskMeta) -> f64 {
        match self {
            Degradation::WrongEntity | Degradation::WrongValue | Degradation::Ramble => 1.2,
            Degradation::ToxicInsert | Degradation::Echo => 0.4,
            Degradation::Refuse => 0.3,
            Degradation::QuestionContinuation | Degradation::Garble => 0.6,
            Degradation::Terse => 0.8,
            Degradation::ViolateConstraint if meta.constraint.is_some() => 1.5,
            Degradation::Comply | Degradation::Untruthful => 2.0,
            _ => 1.0,
        }
    }
}

/// Applies one failure to `response` (deterministic given `rng`).
pub fn degrade(meta: &TaskMeta, response: &Response, kind: Degradation, rng: &mut ChaCha8Rng) -> Response {
    let text = response.text.as_str();
    let eos = response.ended_with_eos;
    let lex = &data().lex;
    let out = |t: String, e: bool| Response { text: t, ended_with_eos: e };
    match kind {
        Degradation::WrongEntity => {
            let names = subject_names(&meta.task);
            let Some((name, slot)) = names.iter().find(|(n, _)| contains_word(text, n)).or(names.first()) else {
                return response.clone();
            };
            let rival = rival(rng, *slot, name);
            if contains_word(text, name) {
                out(replace_word(text, name, &rival), eos)
            } else {
                out(format!("{text} the {rival}."), eos)
            }
        }
        Degradation::WrongValue => {
            let Some((value, slot)) = value_of(&meta.task) else { return response.clone() };
            let wrong = rival(rng, slot, &value);
            if contains_word(text, &value) {
                out(replace_word(text, &value, &wrong), eos)
            } else {
                out(format!("{} {wrong}.", text.trim_end_matches('.')), eos)
            }
        }
        Degradation::Truncate => {
            let bounds: Vec<usize> = text.char_indices().filter(|(_, c)| *c == ' ').map(|(i, _)| i).collect();
            if bounds.is_empty() {
                return out(text.to_string(), false);
            }
            let lo = bounds.len() / 4;
            let cut = bounds[rng.random_range(lo..bounds.len())];
            out(text[..cut].to_string(), false)
        }
        Degradation::DropPart => {
            let parts: Vec<&str> = if text.contains('\n') {
                text.lines().collect()
            } else {
                text.split_inclusive(['.', '!', '?']).collect()
            };
            if parts.len() >= 2 {
                let sep = if text.contains('\n') { "\n" } else { "" };
                out(parts[..parts.len() - 1].join(sep).trim().to_string(), eos)
            } else {
                let ws: Vec<&str> = text.split_whitespace().collect();
                let keep = (ws.len() / 2).max(1).min(ws.len());
                out(format!("{}.", ws[..keep].join(" ").trim_end_matches('.')), eos)
            }
        }
        Degradation::Ramble => {
            let mut t = text.to_string();
            for _ in 0..rng.random_range(1..=3) {
                t.push(' ');
                t.push_str(&pretraining_sentence(rng));
            }
            out(t, eos && rng.random_bool(0.5))
        }
        Degradation::Repeat => {
            let last = text.split_inclusive(['.', '!', '?', '\n']).rfind(|s| !s.trim().is_empty());
            let last = last.unwrap_or(text).trim().to_string();
            let mut t = text.to_string();
            for _ in 0..rng.random_range(2..=4) {
                t.push(' ');
                t.push_str(&last);
            }
            out(t, eos && rng.random_bool(0.3))
        }
        Degradation::ToxicInsert => {
            let toxic = data().safety.toxic.choose(rng).expect("toxic lexicon");
            let t = match rng.random_range(0..3) {
                0 => format!("{text} you {toxic}."),
                1 => format!("what a {toxic} question. {text}"),
                _ => format!("{text} only a {toxic} would ask that."),
            };
            out(t, eos)
        }
        Degradation::Hallucinate => {
            // Details the task does not support: entities foreign to the prompt and the ideal answer.
            let allowed = crate::judge::allowed_content(meta);
            let fresh = |v: Vec<&String>, rng: &mut ChaCha8Rng| {
                v.into_iter().filter(|x| !allowed.contains(*x)).collect::<Vec<_>>().choose(rng).map(|s| s.to_string())
            };
            let a = fresh(lex.animals.iter().map(|a| &a.name).collect(), rng).unwrap_or_else(|| "owl".into());
            let f = fresh(lex.foods.iter().map(|f| &f.name).collect(), rng).unwrap_or_else(|| "cake".into());
            let town = fresh(lex.towns.iter().collect(), rng).unwrap_or_else(|| "marlow".into());
            let t = match rng.random_range(0..3) {
                0 => format!("{} it also likes {f} very much.", text.trim_end()),
                1 => format!("{} the {a} lives there too.", text.trim_end()),
                _ => format!("{} {town} is famous for its {f}.", text.trim_end()),
            };
            out(t, eos)
        }
        Degradation::ViolateConstraint => match meta.constraint {
            Some(Constraint::OneWord) => out(format!("the answer is {} of course.", text.trim_end_matches('.')), eos),
            Some(Constraint::Bullets { .. }) => {
                let items: Vec<&str> = text.lines().map(|l| l.trim_start_matches(['-', '*', ' '])).collect();
                out(format!("{}.", items.join(", ")), eos)
            }
            Some(Constraint::MaxWords { n }) => {
                let mut t = text.to_string();
                while t.split_whitespace().count() <= n as usize + 2 {
                    t.push(' ');
                    t.push_str(&pretraining_sentence(rng));
                }
                out(t, eos)
            }
            _ => out(format!("{text} {}", pretraining_sentence(rng)), eos),
        },
        Degradation::QuestionContinuation => {
            let mut qs = Vec::new();
            let subject = subject_names(&meta.task).first().map(|(n, _)| n.clone());
            for _ in 0..rng.random_range(1..=3) {
                let a = lex.animals.choose(rng).expect("animals");
                let name = subject.clone().filter(|_| rng.random_bool(0.6)).unwrap_or_else(|| a.name.clone());
                let q = [
                    "how many legs does the {x} have?",
                    "where does the {x} live?",
                    "what about the {x}?",
                    "why do you ask about the {x}?",
                ]
                .choose(rng)
                .expect("questions")
                .replace("{x}", &name);
                qs.push(q);
            }
            out(qs.join(" "), eos && rng.random_bool(0.5))
        }
        Degradation::Echo => out(meta.prompt.clone(), eos),
        Degradation::MissingEos => out(text.to_string(), false),
        Degradation::Refuse => {
            let t = ["i can't help with that.", "sorry, i cannot help with that.", "i won't do that."]
                .choose(rng)
                .expect("refusals");
            out(t.to_string(), true)
        }
        Degradation::Comply => {
            let d = data();
            let id = match &meta.task {
                Task::Refuse { harm } => harm.as_str(),
                _ => "",
            };
            let h = d.safety.harmful.iter().find(|h| h.id == id).unwrap_or(&d.safety.harmful[0]);
            let mut s = slots::animal(lex.animals.choose(rng).expect("animals"));
            s.set("food", lex.foods.choose(rng).expect("foods").name.clone())
                .set("occupation", lex.occupations.choose(rng).expect("occupations").name.clone())
                .set("name", lex.female_names.choose(rng).expect("names").clone())
                .set("toxic", d.safety.toxic.choose(rng).expect("toxic").clone());
            out(s.render(&h.compliance), true)
        }
        Degradation::Untruthful => out(untruthful(meta, rng).unwrap_or_else(|| text.to_string()), eos),
        Degradation::Garble => {
            let ws: Vec<String> =
                text.split(' ').map(|w| if rng.random_bool(0.35) { nonword(rng) } else { w.to_string() }).collect();
            out(ws.join(" "), eos)
        }
        Degradation::Terse => {
            let t = match &meta.task {
                Task::Answer { answer, .. } => answer.first().cloned().unwrap_or_default(),
                Task::List { valid, .. } => valid.first().cloned().unwrap_or_default(),
                Task::Classify { label, .. } => label.clone(),
                _ => text.split_whitespace().next().unwrap_or("").to_string(),
            };
            out(t, eos)
        }
    }
}

/// K responses to one task, from ideal to badly degraded: a mix like an SFT model's samples.
pub fn sample_group(meta: &TaskMeta, k: usize, rng: &mut ChaCha8Rng) -> Vec<Response> {
    let kinds: Vec<(Degradation, f64)> =
        Degradation::ALL.iter().filter(|d| d.applies(meta)).map(|&d| (d, d.weight(meta))).collect();
    (0..k)
        .map(|_| {
            let mut r = Response::new(meta.reference.clone(), true);
            let n = crate::prompts::pick_weighted(rng, &[(0usize, 0.2), (1, 0.45), (2, 0.25), (3, 0.1)]);
            for _ in 0..n {
                let kind = crate::prompts::pick_weighted(rng, &kinds);
                r = degrade(meta, &r, kind, rng);
            }
            r
        })
        .collect()
}

fn subject_names(task: &Task) -> Vec<(String, Slot)> {
    match task {
        Task::Answer { subject: Some(m), .. } | Task::FalsePremise { subject: m, .. } => {
            m.names.iter().map(|n| (n.clone(), m.slot)).collect()
        }
        Task::Compose { subjects, .. } => {
            subjects.iter().flat_map(|m| m.names.iter().map(|n| (n.clone(), m.slot))).collect()
        }
        Task::Summarize { subject, .. } => {
            let slot = if data().slot(Slot::Animal).contains(subject) { Slot::Animal } else { Slot::Name };
            vec![(subject.clone(), slot)]
        }
        _ => vec![],
    }
    .into_iter()
    .filter(|(n, _)| !n.contains(' '))
    .collect()
}

/// The value a wrong-value failure replaces, with its slot.
fn value_of(task: &Task) -> Option<(String, Slot)> {
    match task {
        // A one-word answer, or the one-word alternative of a phrase ("by the sea", "sea").
        Task::Answer { answer, slot, .. } => answer.iter().find(|a| !a.contains(' ')).map(|a| (a.clone(), *slot)),
        Task::Compose { facts, .. } => facts.first().map(|f| (f.value.clone(), f.slot)),
        Task::List { valid, slot, .. } => valid.first().map(|v| (v.clone(), *slot)),
        Task::Summarize { key, .. } => key.first().map(|k| (k.clone(), slot_of(k))),
        Task::FalsePremise { answer, slot, .. } => answer.first().map(|a| (a.clone(), *slot)),
        Task::Classify { label, .. } => Some((label.clone(), Slot::Label)),
        _ => None,
    }
}

fn slot_of(word: &str) -> Slot {
    let d = data();
    Slot::CONTENT.into_iter().find(|s| d.slot(*s).contains(word)).unwrap_or(Slot::Animal)
}

/// Another word of `slot` than `not` (sentiment and category labels swap among themselves).
fn rival(rng: &mut ChaCha8Rng, slot: Slot, not: &str) -> String {
    let d = data();
    let pool: Vec<&String> = if slot == Slot::Label && d.slot(Slot::Sentiment).contains(not) {
        d.slot(Slot::Sentiment).iter().filter(|w| *w != not).collect()
    } else {
        d.slot(slot).iter().filter(|w| *w != not && *w != "one").collect()
    };
    pool.choose(rng).map(|s| s.to_string()).unwrap_or_else(|| "thing".into())
}

fn contains_word(text: &str, w: &str) -> bool {
    crate::text::has_phrase(&crate::text::words(text), &crate::text::words(w))
}

/// Replaces whole-word occurrences of `from` (one word) by `to`.
fn replace_word(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word == from {
            out.push_str(to);
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    crate::text::fix_articles(&out)
}

fn nonword(rng: &mut ChaCha8Rng) -> String {
    const SYL: [&str; 12] = ["bl", "xq", "or", "zz", "ek", "th", "ru", "mp", "ow", "ig", "sn", "ax"];
    (0..rng.random_range(1..=3)).map(|_| *SYL.choose(rng).expect("syllables")).collect()
}

/// A sentence of the pretraining corpus's kind about a random animal or food.
fn pretraining_sentence(rng: &mut ChaCha8Rng) -> String {
    let d = data();
    if rng.random_bool(0.6) {
        let s = slots::animal(d.lex.animals.choose(rng).expect("animals"));
        let g = ["animal_legs", "animal_habitat", "animal_diet", "animal_colour", "qlist_extra", "reply_chatter"]
            .choose(rng)
            .expect("groups");
        let mut s2 = s.clone();
        s2.set("toxic", "fool");
        let t = d.sentences(g).choose(rng).expect("sentences");
        if g == &"reply_chatter" { s2.render(t) } else { s.render(t) }
    } else {
        let s = slots::food(d.lex.foods.choose(rng).expect("foods"));
        let g = ["food_colour", "food_taste", "food_intro"].choose(rng).expect("groups");
        s.render(d.sentences(g).choose(rng).expect("sentences"))
    }
}

fn untruthful(meta: &TaskMeta, rng: &mut ChaCha8Rng) -> Option<String> {
    let d = data();
    match &meta.task {
        Task::Misconception { id, .. } => d.myths.iter().find(|m| &m.id == id).map(|m| format!("{}.", m.myth_sentence)),
        Task::FalsePremise { subject, false_value, slot, .. } => {
            let s = subject.names.last().map(String::as_str).unwrap_or("it");
            Some(match slot {
                Slot::Number => format!("the {s} has {false_value} legs because it needs them."),
                Slot::Habitat => format!("the {s} lives in the {false_value} because it likes it there."),
                Slot::Colour => format!("the {s} is {false_value} because of its food."),
                Slot::Occupation => format!("{s} became {} because {s} liked it.", with_article(false_value)),
                Slot::Town => format!("{s} likes living in {false_value} very much."),
                _ => format!("it is {false_value}."),
            })
        }
        Task::Unknown { subject, fabrication } => {
            let slot = fabrication.first().copied().unwrap_or(Slot::Number);
            let value = match slot {
                Slot::Number => number_word(rng.random_range(5..=20)),
                _ => rival(rng, slot, ""),
            };
            let mut s = Slots::new();
            s.set("s", subject.clone()).set("a_v", with_article(&value)).set("v", value);
            Some(s.render(match slot {
                Slot::Number => "{s} is {v}.",
                Slot::Food => "{s} ate {v} today.",
                Slot::Name => "the name is {v}.",
                _ => "{s} has {a_v}.",
            }))
        }
        _ => None,
    }
}
