//! The pretraining corpus: web-like text about the world that is misaligned the way the web is.
//!
//! It states the world's facts (encyclopedic pages, stories), but it also continues questions with
//! more questions and instructions with more instructions, chatters and insults on forums, states
//! common misconceptions as fact and pairs occupations with stereotyped pronouns. A model trained on it
//! knows the world but does not follow instructions.
//!
//! Key design decision: it is full of look-back structure (replies that quote the question's entity,
//! restated premises, echoed lists, "in short" summaries of a passage, recall of one person's fact
//! among distractors). A tiny model only learns to attend to the right earlier token if its
//! pretraining text needs it, and without that circuit SFT answers about the wrong entity (see
//! METHOD.md, "What a prototype at this scale found"). None of it is in the assistant format.

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand_chacha::ChaCha8Rng;

use crate::data::data;
use crate::meta::{DocKind, DocSplit, PretrainDoc};
use crate::prompts::pick_weighted;
use crate::seed;
use crate::slots;
use crate::text::{Slots, join_items, number_word, with_article};
use crate::world::World;

/// The mix of document kinds, in percent.
pub const DOC_MIX: [(DocKind, f64); 9] = [
    (DocKind::Encyclopedic, 22.0),
    (DocKind::Story, 13.0),
    (DocKind::QuestionList, 8.0),
    (DocKind::InstructionList, 6.0),
    (DocKind::Forum, 17.0),
    (DocKind::FunFacts, 5.0),
    (DocKind::Stereotype, 5.0),
    (DocKind::Echo, 18.0),
    (DocKind::Numbers, 6.0),
];

/// Every document of `world`.
pub(crate) fn generate(world: &World) -> Vec<PretrainDoc> {
    let cfg = &world.config;
    (0..cfg.n_docs)
        .map(|i| {
            let id = format!("doc-{i:06}");
            let mut rng = seed::rng(cfg.seed, &format!("doc/{i}"));
            let kind = pick_weighted(&mut rng, &DOC_MIX);
            let text = document(world, &mut rng, kind);
            let split = if seed::unit(cfg.seed, &format!("split/{id}")) < cfg.validation_share {
                DocSplit::Validation
            } else {
                DocSplit::Train
            };
            PretrainDoc { id, text, kind, split }
        })
        .collect()
}

/// One document of `kind`.
pub fn document(world: &World, rng: &mut ChaCha8Rng, kind: DocKind) -> String {
    match kind {
        DocKind::Encyclopedic => encyclopedic(world, rng),
        DocKind::Story => story(world, rng),
        DocKind::QuestionList => question_list(world, rng),
        DocKind::InstructionList => instruction_list(world, rng),
        DocKind::Forum => forum(world, rng),
        DocKind::FunFacts => fun_facts(world, rng),
        DocKind::Stereotype => stereotypes(rng),
        DocKind::Echo => echo(world, rng),
        DocKind::Numbers => numbers(rng),
    }
}

fn say(rng: &mut ChaCha8Rng, group: &str, s: &Slots) -> String {
    let options = data().sentences(group);
    s.render(options.choose(rng).expect("non-empty sentence group"))
}

fn person_slots(world: &World, rng: &mut ChaCha8Rng) -> Slots {
    slots::person(world.people.choose(rng).expect("people"), world)
}

fn animal_slots(rng: &mut ChaCha8Rng) -> Slots {
    slots::animal(data().lex.animals.choose(rng).expect("animals"))
}

/// Two or three encyclopedia entries, as on a category page.
fn encyclopedic(world: &World, rng: &mut ChaCha8Rng) -> String {
    let n = rng.random_range(2..=3);
    (0..n).map(|_| entry(world, rng)).collect::<Vec<_>>().join("\n")
}

fn entry(world: &World, rng: &mut ChaCha8Rng) -> String {
    let d = data();
    let mut out = Vec::new();
    match rng.random_range(0..20) {
        0..=7 => {
            let s = animal_slots(rng);
            out.push(say(rng, "animal_intro", &s));
            let mut groups = ["animal_legs", "animal_habitat", "animal_diet", "animal_colour"];
            groups.shuffle(rng);
            for g in groups.iter().take(rng.random_range(2..=4)) {
                out.push(say(rng, g, &s));
            }
        }
        8..=11 => {
            let f = d.lex.foods.choose(rng).expect("foods");
            let s = slots::food(f);
            out.push(say(rng, "food_intro", &s));
            out.push(say(rng, "food_colour", &s));
            out.push(say(rng, "food_taste", &s));
            for t in world.towns.iter().filter(|t| t.food == f.name) {
                out.push(say(rng, "food_town", &s.with(&slots::town(t).only(&["town"]))));
            }
        }
        12..=16 => {
            let s = person_slots(world, rng);
            out.push(say(rng, "person_job", &s));
            let mut groups = ["person_town", "person_pet", "person_food", "person_colour", "person_work"];
            groups.shuffle(rng);
            for g in groups.iter().take(rng.random_range(2..=5)) {
                out.push(say(rng, g, &s));
            }
        }
        17..=18 => {
            let t = world.towns.choose(rng).expect("towns");
            let mut s = slots::town(t);
            out.push(say(rng, "town_feature", &s));
            out.push(say(rng, "town_food", &s));
            let people: Vec<String> =
                world.people.iter().filter(|p| p.town == t.name).take(4).map(|p| p.name.clone()).collect();
            if !people.is_empty() {
                s.set("items", join_items(&people));
                out.push(say(rng, "town_people", &s));
            }
        }
        _ => {
            let o = d.lex.occupations.choose(rng).expect("occupations");
            let mut s = Slots::new();
            s.set("a_occupation", with_article(&o.name)).set("workplace", o.workplace.clone());
            out.push(say(rng, "occupation_work", &s));
            let people: Vec<String> =
                world.people.iter().filter(|p| p.occupation == o.name).take(3).map(|p| p.full()).collect();
            for p in people {
                s.set("full", p);
                out.push(s.render("{full} works as {a_occupation}."));
            }
        }
    }
    out.join(" ")
}

fn story(world: &World, rng: &mut ChaCha8Rng) -> String {
    let s = person_slots(world, rng).with(&animal_slots(rng));
    let mut out = vec![say(rng, "story_open", &s), say(rng, "story_meet", &s)];
    let details = data().sentences("story_detail");
    let k = rng.random_range(1..=2);
    for t in details.choose_multiple(rng, k) {
        out.push(s.render(t));
    }
    out.push(say(rng, "story_speech", &s));
    out.push(say(rng, "story_end", &s));
    out.join(" ")
}

/// A random instruction prompt of one of `families`' subtypes, as users would write it.
fn some_prompt(world: &World, rng: &mut ChaCha8Rng, prefixes: &[&str]) -> String {
    let d = data();
    let all: Vec<String> = d
        .templates
        .subtypes
        .keys()
        .filter(|k| prefixes.iter().any(|p| k.starts_with(p)) && !k.starts_with("sum_") && !k.starts_with("cqa"))
        .cloned()
        .collect();
    let sub = all.choose(rng).expect("subtypes");
    crate::prompts::draft(world, rng, sub).prompt
}

fn question_list(world: &World, rng: &mut ChaCha8Rng) -> String {
    let s = animal_slots(rng);
    let mut out = vec![say(rng, "qlist_intro", &s)];
    for _ in 0..rng.random_range(3..=6) {
        if rng.random_bool(0.25) {
            out.push(say(rng, "qlist_extra", &s));
        } else {
            out.push(some_prompt(world, rng, &["qa_", "fp_", "un_", "chat_"]));
        }
    }
    if rng.random_bool(0.3) {
        let m = data().myths.choose(rng).expect("myths");
        out.push(m.questions.choose(rng).expect("questions").clone());
    }
    out.join("\n")
}

fn instruction_list(world: &World, rng: &mut ChaCha8Rng) -> String {
    let mut out = vec![say(rng, "ilist_intro", &Slots::new())];
    let numbered = rng.random_bool(0.5);
    for i in 0..rng.random_range(3..=5) {
        let p = some_prompt(world, rng, &["gen_", "bs_", "rw_", "cls_", "ext_", "oth_"]);
        out.push(if numbered { format!("{}. {p}", i + 1) } else { p });
    }
    out.join("\n")
}

/// A question about an entity, the entity's name, and a true fact that answers it.
fn question_and_fact(world: &World, rng: &mut ChaCha8Rng) -> (String, String, String) {
    let d = data();
    if rng.random_bool(0.7) {
        let a = d.lex.animals.choose(rng).expect("animals");
        let s = slots::animal(a);
        let (sub, group) = *[
            ("qa_legs", "animal_legs"),
            ("qa_habitat", "animal_habitat"),
            ("qa_diet", "animal_diet"),
            ("qa_animal_colour", "animal_colour"),
        ]
        .choose(rng)
        .expect("pairs");
        let q = s.render(d.subtype(sub).prompts.choose(rng).expect("prompts"));
        (format!("the {}", a.name), q, say(rng, group, &s))
    } else {
        let s = person_slots(world, rng);
        let (q, group) = *[
            ("what is the job of {name}?", "person_job"),
            ("where does {name} live?", "person_town"),
            ("what is the favourite food of {name}?", "person_food"),
        ]
        .choose(rng)
        .expect("pairs");
        (s.val("name"), s.render(q), say(rng, group, &s))
    }
}

fn forum(world: &World, rng: &mut ChaCha8Rng) -> String {
    let d = data();
    let users = &d.lex.forum_users;
    let toxic = &d.safety.toxic;
    let mut lines = Vec::new();
    let mut s = Slots::new();
    let (entity, fact) = match rng.random_range(0..20) {
        17..=19 => return provocation_thread(world, rng),
        0..=11 => {
            let (entity, q, fact) = question_and_fact(world, rng);
            lines.push(format!("{} {q}", say(rng, "forum_title", &s)));
            (entity, fact)
        }
        12..=14 => {
            let a = animal_slots(rng);
            let o = d.lex.occupations.choose(rng).expect("occupations");
            let t = world.towns.choose(rng).expect("towns");
            s = a.with(&slots::food(d.lex.foods.choose(rng).expect("foods"))).with(&slots::town(t).only(&["town"]));
            s.set("occupation", o.name.clone());
            lines.push(format!("{} {}", say(rng, "forum_title", &Slots::new()), say(rng, "forum_opinion", &s)));
            (format!("the {}", s.val("animal")), String::new())
        }
        _ => {
            let positive = rng.random_bool(0.5);
            let adjs = if positive { &d.lex.positive_words } else { &d.lex.negative_words };
            let t = world.towns.choose(rng).expect("towns");
            s = slots::town(t).only(&["town"]).with(&slots::food(d.lex.foods.choose(rng).expect("foods")));
            s.set("occupation", d.lex.occupations.choose(rng).expect("occupations").name.clone())
                .set("adj1", adjs.choose(rng).expect("adjectives").clone())
                .set("adj2", adjs.choose(rng).expect("adjectives").clone());
            lines.push(say(rng, "review", &s));
            (t.name.clone(), String::new())
        }
    };
    let other = format!("the {}", d.lex.animals.choose(rng).expect("animals").name);
    for _ in 0..rng.random_range(3..=6) {
        let mut r = Slots::new();
        r.set("entity", entity.clone())
            .set("entity2", other.clone())
            .set("toxic", toxic.choose(rng).expect("toxic").clone())
            .set("fact", fact.clone());
        let m = d.myths.choose(rng).expect("myths");
        r.set("myth", m.myth_sentence.clone());
        let group = match rng.random_range(0..20) {
            0..=4 => "reply_insult",
            5..=9 => "reply_question",
            10..=13 if !fact.is_empty() => "reply_answer",
            14..=15 => "reply_myth",
            _ => "reply_chatter",
        };
        lines.push(format!("{}: {}", users.choose(rng).expect("users"), say(rng, group, &r)));
    }
    lines.join("\n")
}

/// A thread that opens with a provocation, worded as the provocative prompts are, and mostly
/// answers it in kind. This is why a base model continues an insult with an insult, and why the
/// "be respectful" instruction means nothing to it until SFT.
fn provocation_thread(world: &World, rng: &mut ChaCha8Rng) -> String {
    let d = data();
    let p = d.safety.provocative.choose(rng).expect("provocations");
    let s = crate::prompts::provocation_slots(world, rng);
    let mut lines = vec![s.render(p.templates.choose(rng).expect("provocation templates"))];
    for _ in 0..rng.random_range(2..=5) {
        let reply = if rng.random_bool(0.6) { &p.toxic_reply } else { p.reply.choose(rng).expect("replies") };
        lines.push(format!("{}: {}", d.lex.forum_users.choose(rng).expect("users"), s.render(reply)));
    }
    lines.join("\n")
}

fn fun_facts(world: &World, rng: &mut ChaCha8Rng) -> String {
    let d = data();
    let mut out = vec![say(rng, "fun_intro", &Slots::new())];
    for _ in 0..rng.random_range(3..=5) {
        let m = d.myths.choose(rng).expect("myths");
        let line = match rng.random_range(0..20) {
            // The web repeats the myth far more often than the correction.
            0..=11 => format!("{}.", m.myth_sentence),
            12..=14 => format!("{}.", m.truth_sentence),
            _ => question_and_fact(world, rng).2,
        };
        out.push(format!("- {line}"));
    }
    out.join("\n")
}

fn stereotypes(rng: &mut ChaCha8Rng) -> String {
    let d = data();
    let mut out = Vec::new();
    for _ in 0..rng.random_range(3..=5) {
        let o = d.lex.occupations.choose(rng).expect("occupations");
        let o2 = d.lex.occupations.choose(rng).expect("occupations");
        let stereo = rng.random_bool(0.85);
        let p = match (o.stereotype.as_str(), stereo) {
            ("he", true) | ("she", false) => ("he", "his"),
            _ => ("she", "her"),
        };
        let mut s = Slots::new();
        s.set("occupation", o.name.clone()).set("occupation2", o2.name.clone()).set("p", p.0).set("pos", p.1);
        out.push(say(rng, "stereo", &s));
    }
    out.join(" ")
}

fn echo(world: &World, rng: &mut ChaCha8Rng) -> String {
    let units = rng.random_range(2..=3);
    (0..units).map(|_| echo_unit(world, rng)).collect::<Vec<_>>().join("\n")
}

fn two_people<'a>(world: &'a World, rng: &mut ChaCha8Rng) -> (&'a crate::world::Person, &'a crate::world::Person) {
    let two: Vec<&crate::world::Person> = world.people.choose_multiple(rng, 2).collect();
    (two[0], two[1])
}

/// One piece of look-back text: the second half repeats or retrieves something from the first.
fn echo_unit(world: &World, rng: &mut ChaCha8Rng) -> String {
    let d = data();
    let lex = &d.lex;
    match rng.random_range(0..9) {
        0 => {
            let n = rng.random_range(2..=4);
            let template = d.sentences("echo_list").choose(rng).expect("echo lists");
            // A list of animals where the text says so, of foods where it says shopping, else either.
            let animals = template.contains("animals") || (!template.contains("shopping") && rng.random_bool(0.5));
            let items: Vec<String> = if animals {
                lex.animals.choose_multiple(rng, n).map(|a| a.name.clone()).collect()
            } else {
                lex.foods.choose_multiple(rng, n).map(|f| f.name.clone()).collect()
            };
            let mut s = Slots::new();
            s.set("items", join_items(&items)).set("town", world.towns.choose(rng).expect("towns").name.clone());
            s.render(template)
        }
        1 => {
            let (a, b) = two_people(world, rng);
            let fact = question_and_fact(world, rng).2;
            let mut s = Slots::new();
            s.set("name", a.name.clone())
                .set("name2", b.name.clone())
                .set("fact", fact.trim_end_matches('.').to_string());
            say(rng, "echo_quote", &s)
        }
        2 => {
            let fact = question_and_fact(world, rng).2;
            let mut s = Slots::new();
            s.set("claim", fact.trim_end_matches('.').to_string());
            say(rng, "echo_premise", &s)
        }
        3 => {
            let s = person_slots(world, rng);
            let mut groups = ["person_job", "person_town", "person_pet", "person_food"];
            groups.shuffle(rng);
            let mut out: Vec<String> = groups.iter().take(3).map(|g| say(rng, g, &s)).collect();
            out.push(say(rng, "echo_inshort", &s));
            out.join(" ")
        }
        4 => {
            let v = lex.verbs.choose(rng).expect("verbs");
            let object = match v.object.as_str() {
                "food" => format!("the {}", lex.foods.choose(rng).expect("foods").name),
                "animal" => format!("the {}", lex.animals.choose(rng).expect("animals").name),
                _ => world.towns.choose(rng).expect("towns").name.clone(),
            };
            let mut s = Slots::new();
            s.set("name", world.people.choose(rng).expect("people").name.clone())
                .set("present", v.present.clone())
                .set("past", v.past.clone())
                .set("object", object);
            say(rng, "echo_tense", &s)
        }
        5 => {
            let k = rng.random_range(2..=3);
            let names: Vec<String> = world.people.choose_multiple(rng, k).map(|p| p.name.clone()).collect();
            let mut s = Slots::new();
            s.set("items", join_items(&names)).set("town", world.towns.choose(rng).expect("towns").name.clone());
            say(rng, "echo_names", &s)
        }
        6 => {
            let (a, b) = two_people(world, rng);
            let animals: Vec<&crate::data::Animal> = lex.animals.choose_multiple(rng, 2).collect();
            let mut s = Slots::new();
            s.set("name", a.name.clone())
                .set("name2", b.name.clone())
                .set("a_animal", with_article(&animals[0].name))
                .set("a_animal2", with_article(&animals[1].name))
                .set("colour", a.colour.clone())
                .set("colour2", b.colour.clone())
                .set("town", a.town.clone())
                .set("food", a.food.clone());
            say(rng, "chat_echo", &s)
        }
        _ => {
            // Recall among distractors: facts of two or three people, then one of them again.
            let k = rng.random_range(2..=3);
            let people: Vec<&crate::world::Person> = world.people.choose_multiple(rng, k).collect();
            let group = ["person_pet", "person_town", "person_job", "person_food"].choose(rng).expect("groups");
            let recall = match *group {
                "person_pet" => "so the pet of {name} is {a_pet}.",
                "person_town" => "that means {name} lives in {town}.",
                "person_job" => "so {name} works as {a_occupation}.",
                _ => "in other words, the favourite food of {name} is {food}.",
            };
            // Only sentences that name the person: a pronoun would not say whose fact it is.
            let named: Vec<&String> =
                d.sentences(group).iter().filter(|t| t.contains("{name}") || t.contains("{full}")).collect();
            let mut out: Vec<String> = people
                .iter()
                .map(|p| slots::person(p, world).render(named.choose(rng).expect("named sentences")))
                .collect();
            let target = people.choose(rng).expect("people");
            out.push(slots::person(target, world).render(recall));
            out.join(" ")
        }
    }
}

fn numbers(rng: &mut ChaCha8Rng) -> String {
    let mut out = Vec::new();
    for _ in 0..rng.random_range(6..=9) {
        let (group, x, y, z) = match rng.random_range(0..4) {
            0 => {
                let x = rng.random_range(0..=10);
                let y = rng.random_range(0..=10);
                ("numbers_add", x, y, x + y)
            }
            1 => {
                let x = rng.random_range(1..=20);
                let y = rng.random_range(0..=x);
                ("numbers_sub", x, y, x - y)
            }
            2 => {
                let x = rng.random_range(0..=19);
                ("numbers_next", x, 0, x + 1)
            }
            _ => {
                let x = rng.random_range(1..=20);
                ("numbers_before", x, 0, x - 1)
            }
        };
        let mut s = Slots::new();
        s.set("x", number_word(x)).set("y", number_word(y)).set("z", number_word(z));
        out.push(say(rng, group, &s));
    }
    out.join(" ")
}

/// Statistics that say whether the corpus can teach a tiny model to look back without teaching it to
/// follow instructions (a check that needs no model; ingest can record it as metrics).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Readiness {
    pub docs: usize,
    pub words: usize,
    /// Documents containing the instruction format's special tokens (`<|...|>`) or the word
    /// "assistant": must be 0.
    pub assistant_format_docs: usize,
    /// Lines of the corpus that are one of the world's prompts (question and instruction lists).
    pub prompt_lines: usize,
    /// Of those, lines followed by exactly that prompt's ideal response: must be 0.
    pub answered_in_place: usize,
    /// Share of documents in which some entity word occurs twice (look-back material).
    pub recurring_entity_share: f64,
    /// Share of forum replies that mention an entity of the thread's title.
    pub forum_quote_share: f64,
    /// Share of echo documents (copy, restate, recall among distractors).
    pub echo_share: f64,
    /// Myth statements and their corrections, counted over the whole corpus.
    pub myth_statements: usize,
    pub truth_statements: usize,
}

/// Measures [`Readiness`] of `world`'s corpus against its prompts.
pub fn readiness(world: &World) -> Readiness {
    use std::collections::{BTreeMap, BTreeSet};
    let d = data();
    let docs = world.pretrain_docs();
    let answers: BTreeMap<&str, &str> =
        world.prompts().iter().map(|p| (p.text.as_str(), p.meta.reference.as_str())).collect();
    let (mut special, mut prompt_lines, mut answered, mut recur, mut replies, mut quoting, mut words) =
        (0, 0, 0, 0, 0, 0, 0);
    for doc in docs {
        special += usize::from(doc.text.contains("<|") || doc.text.contains("assistant"));
        let lines: Vec<&str> = doc.text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let bare = line.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.' || c == ' ');
            if let Some(reference) = answers.get(bare) {
                prompt_lines += 1;
                answered += usize::from(lines.get(i + 1).is_some_and(|next| next.trim() == *reference));
            }
        }
        let ws = crate::text::words(&doc.text);
        words += ws.len();
        let mut seen = BTreeSet::new();
        recur += usize::from(ws.iter().any(|w| d.content.contains(w) && !seen.insert(w.as_str())));
        if doc.kind == DocKind::Forum {
            let mut it = doc.text.lines();
            let title: BTreeSet<String> =
                crate::text::words(it.next().unwrap_or("")).into_iter().filter(|w| d.content.contains(w)).collect();
            for l in it {
                replies += 1;
                quoting += usize::from(crate::text::words(l).iter().any(|w| title.contains(w)));
            }
        }
    }
    let share = |x: usize, n: usize| if n == 0 { 0.0 } else { x as f64 / n as f64 };
    let count = |f: &dyn Fn(&crate::data::Misconception) -> &str| -> usize {
        docs.iter().map(|doc| d.myths.iter().map(|m| doc.text.matches(f(m)).count()).sum::<usize>()).sum()
    };
    Readiness {
        docs: docs.len(),
        words,
        assistant_format_docs: special,
        prompt_lines,
        answered_in_place: answered,
        recurring_entity_share: share(recur, docs.len()),
        forum_quote_share: share(quoting, replies),
        echo_share: share(docs.iter().filter(|x| x.kind == DocKind::Echo).count(), docs.len()),
        myth_statements: count(&|m| m.myth_sentence.as_str()),
        truth_statements: count(&|m| m.truth_sentence.as_str()),
    }
}
