//! Instruction prompts: task families, users, suggested purposes, and the ideal responses.
//!
//! Each prompt is drawn in three steps: a user (Zipf-distributed, so a few users write many prompts and
//! ingest's per-user cap of 200 matters), a family (the paper's use-case mix plus honesty and
//! harmlessness probes), and a subtype of that family whose templates (`templates.json`, `safety.json`,
//! `misconceptions.json`) give the prompt, the ideal answer and the hidden [`Task`] the judge checks.
//! Evaluation users get a probe-heavy mix so the eval stage has enough honesty, toxicity and bias
//! prompts; the probes appear in every purpose.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand_chacha::ChaCha8Rng;

use crate::data::data;
use crate::meta::{Constraint, Fact, Family, Instruction, Mention, Prompt, Purpose, Slot, Task, TaskMeta};
use crate::seed;
use crate::slots;
use crate::text::{Slots, join_items, number_word, sentences, with_article, words};
use crate::world::World;

/// Suggested dataset sizes in the paper's proportions (about 13k SFT, 33k RM, 31k PPO prompts).
pub const PURPOSE_MIX: [(Purpose, f64); 3] = [(Purpose::Sft, 13.0), (Purpose::Rm, 33.0), (Purpose::Ppo, 31.0)];

/// Share of the probes (harmful, honesty, toxicity, bias) among training prompts, and their split.
const PROBES_TRAIN: [(Family, f64); 6] = [
    (Family::Harmful, 3.0),
    (Family::FalsePremise, 3.0),
    (Family::Unanswerable, 3.0),
    (Family::Misconception, 3.0),
    (Family::Provocative, 3.0),
    (Family::GenderedChoice, 2.0),
];

/// The probes among evaluation prompts: enough of each for the honesty, toxicity and bias metrics.
const PROBES_EVAL: [(Family, f64); 6] = [
    (Family::Harmful, 7.0),
    (Family::FalsePremise, 7.0),
    (Family::Unanswerable, 6.0),
    (Family::Misconception, 7.0),
    (Family::Provocative, 8.0),
    (Family::GenderedChoice, 5.0),
];

/// The target family mix, in percent, for training purposes (`eval = false`) or evaluation users.
/// The ten use-case families keep the paper's proportions and order.
pub fn family_mix(eval: bool) -> Vec<(Family, f64)> {
    let probes = if eval { &PROBES_EVAL } else { &PROBES_TRAIN };
    let probe_total: f64 = probes.iter().map(|(_, w)| w).sum();
    let use_total: f64 = Family::USE_CASE_MIX.iter().map(|(_, w)| w).sum();
    let scale = (100.0 - probe_total) / use_total;
    Family::USE_CASE_MIX.iter().map(|&(f, w)| (f, w * scale)).chain(probes.iter().copied()).collect()
}

/// The ideal response to a task: what a careful demonstrating labeler writes (see [`crate::writers`]).
pub fn ideal_response(meta: &TaskMeta) -> String {
    meta.reference.clone()
}

/// The subtypes of a family (template names, or `harm_*`, `prov_*`, `myth_*` for the safety and
/// misconception files).
pub fn subtypes(family: Family) -> Vec<String> {
    let d = data();
    let prefix = match family {
        Family::Generation => "gen_",
        Family::OpenQa => "qa_",
        Family::Brainstorming => "bs_",
        Family::Chat => "chat_",
        Family::Rewrite => "rw_",
        Family::Summarization => "sum_",
        Family::Classification => "cls_",
        Family::Other => "oth_",
        Family::ClosedQa => "cqa",
        Family::Extraction => "ext_",
        Family::FalsePremise => "fp_",
        Family::Unanswerable => "un_",
        Family::GenderedChoice => "gc",
        Family::Harmful => return d.safety.harmful.iter().map(|h| format!("harm_{}", h.id)).collect(),
        Family::Provocative => return d.safety.provocative.iter().map(|p| format!("prov_{}", p.id)).collect(),
        Family::Misconception => return d.myths.iter().map(|m| format!("myth_{}", m.id)).collect(),
    };
    d.templates.subtypes.keys().filter(|k| k.starts_with(prefix)).cloned().collect()
}

/// Generates every prompt of `world`.
pub(crate) fn generate(world: &World) -> Vec<Prompt> {
    let cfg = &world.config;
    let users = assign_users(cfg.seed, cfg.n_prompts, cfg.n_users, cfg.user_zipf);
    let eval_users = choose_eval_users(cfg.seed, &users, cfg.n_users, cfg.eval_user_share);
    let mixes = [family_mix(false), family_mix(true)];
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(cfg.n_prompts);
    for (i, &user) in users.iter().enumerate() {
        let id = format!("p-{i:05}");
        let mut rng = seed::rng(cfg.seed, &format!("prompt/{i}"));
        let eval = eval_users.contains(&user);
        let purpose = if eval { Purpose::Eval } else { suggest_purpose(cfg.seed, &id) };
        let family = pick_weighted(&mut rng, &mixes[usize::from(eval)]);
        // Resample a few times to avoid exact duplicates (ingest would drop them).
        let mut meta = make_task(world, &mut rng, family);
        for _ in 0..8 {
            if !seen.contains(&meta.prompt) {
                break;
            }
            meta = make_task(world, &mut rng, family);
        }
        seen.insert(meta.prompt.clone());
        out.push(Prompt { id, text: meta.prompt.clone(), user_id: format!("user-{user:04}"), family, purpose, meta });
    }
    out
}

/// The suggested purpose of a training prompt, by a seeded hash of its id (13:33:31).
fn suggest_purpose(seed_: u64, id: &str) -> Purpose {
    let total: f64 = PURPOSE_MIX.iter().map(|(_, w)| w).sum();
    let mut u = seed::unit(seed_, &format!("purpose/{id}")) * total;
    for (p, w) in PURPOSE_MIX {
        if u < w {
            return p;
        }
        u -= w;
    }
    Purpose::Ppo
}

/// The author of each prompt: user k has weight 1/(k+1)^s.
fn assign_users(seed_: u64, n_prompts: usize, n_users: usize, s: f64) -> Vec<usize> {
    // Rounded so that a last-bit difference between platforms' `powf` cannot move a draw.
    let weights: Vec<f64> = (0..n_users).map(|k| (1e9 / ((k + 1) as f64).powf(s)).round()).collect();
    let total: f64 = weights.iter().sum();
    let mut cum = Vec::with_capacity(n_users);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cum.push(acc);
    }
    let mut rng = seed::rng(seed_, "users");
    let mut users: Vec<usize> = (0..n_prompts)
        .map(|_| {
            let u: f64 = rng.random();
            cum.partition_point(|&c| c <= u).min(n_users - 1)
        })
        .collect();
    // Every user writes at least one prompt, so the user count is exact.
    for k in 0..n_users {
        users[k * (n_prompts / n_users)] = k;
    }
    users
}

/// Whole users for evaluation, about `share` of the prompts, never the five heaviest users (whose
/// prompts ingest caps anyway).
fn choose_eval_users(seed_: u64, users: &[usize], n_users: usize, share: f64) -> BTreeSet<usize> {
    let mut counts = vec![0usize; n_users];
    for &u in users {
        counts[u] += 1;
    }
    let mut order: Vec<usize> = (5.min(n_users - 1)..n_users).collect();
    order.sort_by(|a, b| {
        seed::unit(seed_, &format!("eval-user/{a}")).total_cmp(&seed::unit(seed_, &format!("eval-user/{b}")))
    });
    let target = (share * users.len() as f64).round() as usize;
    let mut chosen = BTreeSet::new();
    let mut total = 0;
    for u in order {
        if total >= target {
            break;
        }
        chosen.insert(u);
        total += counts[u];
    }
    chosen
}

pub(crate) fn pick_weighted<T: Copy>(rng: &mut ChaCha8Rng, items: &[(T, f64)]) -> T {
    let total: f64 = items.iter().map(|(_, w)| w).sum();
    let mut u = rng.random::<f64>() * total;
    for &(x, w) in items {
        if u < w {
            return x;
        }
        u -= w;
    }
    items.last().expect("non-empty").0
}

/// One task of `family`, with constraint, instruction and lead-in decided, and its metadata complete.
pub fn make_task(world: &World, rng: &mut ChaCha8Rng, family: Family) -> TaskMeta {
    let subs = subtypes(family);
    let subtype = subs.choose(rng).expect("every family has subtypes").clone();
    let draft = draft(world, rng, &subtype);
    let mut meta = finish(rng, family, subtype, draft);
    if !family.is_closed_domain() {
        meta.also_true = true_facts(world, &meta.task);
    }
    meta
}

/// The facts of the entities a task is about, as content words (sorted, distinct).
fn true_facts(world: &World, task: &Task) -> Vec<String> {
    let d = data();
    let mentions: Vec<&Mention> = match task {
        Task::Answer { subject: Some(m), .. } | Task::FalsePremise { subject: m, .. } => vec![m],
        Task::Compose { subjects, .. } => subjects.iter().collect(),
        _ => vec![],
    };
    let mut out = BTreeSet::new();
    for m in mentions {
        let name = m.names.last().map(String::as_str).unwrap_or("");
        match m.slot {
            Slot::Animal => {
                if let Some(a) = d.animal(name) {
                    out.extend([number_word(a.legs), a.habitat.clone(), a.diet.clone(), a.colour.clone()]);
                }
            }
            Slot::Food => {
                if let Some(f) = d.food(name) {
                    out.extend([f.colour.clone(), f.taste.clone()]);
                    out.extend(world.towns.iter().filter(|t| t.food == f.name).map(|t| t.name.clone()));
                }
            }
            Slot::Name => {
                if let Some(p) = world.person(name) {
                    let workplace = d.occupation(&p.occupation).map(|o| o.workplace.clone()).unwrap_or_default();
                    out.extend([
                        p.surname.clone(),
                        p.occupation.clone(),
                        workplace,
                        p.town.clone(),
                        p.pet.clone(),
                        p.food.clone(),
                        p.colour.clone(),
                    ]);
                }
            }
            Slot::Town => {
                if let Some(t) = world.town(name) {
                    out.extend([t.food.clone(), t.feature.clone()]);
                }
            }
            Slot::Occupation => {
                if let Some(o) = d.occupation(name) {
                    out.insert(o.workplace.clone());
                }
            }
            _ => {}
        }
    }
    out.retain(|w| !w.is_empty());
    out.into_iter().collect()
}

/// A task before constraints and instructions: the core prompt, the task, the ideal response.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub prompt: String,
    pub task: Task,
    pub reference: String,
}

fn finish(rng: &mut ChaCha8Rng, family: Family, subtype: String, draft: Draft) -> TaskMeta {
    let d = data();
    let Draft { mut prompt, task, mut reference } = draft;
    let mut constraint = None;
    if rng.random_bool(0.2) {
        constraint = choose_constraint(rng, family, &task, &reference);
        if let Some(c) = constraint {
            reference = constrained_reference(c, &task, &reference);
            let texts = &d.templates.constraints;
            let text = match c {
                Constraint::OneWord => texts["one_word"].choose(rng),
                Constraint::MaxWords { .. } => texts["max_words"].choose(rng),
                Constraint::Bullets { .. } => texts["bullets"].choose(rng),
                Constraint::OneSentence => texts["one_sentence"].choose(rng),
            }
            .expect("constraint texts");
            let n = match c {
                Constraint::MaxWords { n } | Constraint::Bullets { n } => n,
                _ => 0,
            };
            let mut s = Slots::new();
            s.set("n", n.to_string());
            prompt = format!("{prompt} {}", s.render(text));
        }
    }
    let mut instruction = None;
    if family.is_honesty() && rng.random_bool(0.4) {
        instruction = Some(Instruction::SayUnknownUnlessSure);
        prompt = format!("{prompt} {}", d.safety.honesty_instructions.choose(rng).expect("honesty instructions"));
    } else if family == Family::Provocative && rng.random_bool(0.5) {
        instruction = Some(Instruction::BeRespectful);
        let text = d.safety.respectful_instructions.choose(rng).expect("respectful instructions");
        prompt = if rng.random_bool(0.5) { format!("{text} {prompt}") } else { format!("{prompt} {text}") };
    }
    // Users open some requests with a few words (not chat, which opens with its own greeting).
    if family != Family::Chat && rng.random_bool(0.15) {
        prompt = format!("{}{prompt}", d.templates.lead_ins.choose(rng).expect("lead-ins"));
    }
    TaskMeta { family, subtype, prompt, task, constraint, instruction, reference, also_true: vec![] }
}

fn choose_constraint(rng: &mut ChaCha8Rng, family: Family, task: &Task, reference: &str) -> Option<Constraint> {
    let ref_words = words(reference).len() as u32;
    let one_sentence = sentences(reference).len() == 1;
    let one_word = match task {
        Task::Answer { answer, .. } => words(&answer[0]).len() == 1,
        Task::Classify { .. } => true,
        _ => false,
    };
    let mut options = Vec::new();
    match family {
        Family::OpenQa | Family::Chat | Family::Other | Family::Classification | Family::ClosedQa => {
            if one_word {
                options.push(Constraint::OneWord);
            }
            options.push(Constraint::MaxWords { n: ref_words + rng.random_range(0..=4) });
            if one_sentence {
                options.push(Constraint::OneSentence);
            }
        }
        Family::Brainstorming | Family::Extraction => {
            if let Task::List { n, .. } = task {
                options.push(Constraint::Bullets { n: *n });
            }
        }
        Family::Generation | Family::Summarization => {
            if ref_words <= 30 {
                options.push(Constraint::MaxWords { n: ref_words + rng.random_range(0..=5) });
            }
            if one_sentence {
                options.push(Constraint::OneSentence);
            }
        }
        _ => {}
    }
    options.choose(rng).copied()
}

fn constrained_reference(c: Constraint, task: &Task, reference: &str) -> String {
    match (c, task) {
        (Constraint::OneWord, Task::Answer { answer, .. }) => format!("{}.", answer[0]),
        (Constraint::OneWord, Task::Classify { label, .. }) => format!("{label}."),
        (Constraint::Bullets { n }, Task::List { valid, .. }) => {
            // The reference's own items, in its order.
            let ws = words(reference);
            let items: Vec<&String> = ws.iter().filter(|w| valid.contains(w)).take(n as usize).collect();
            items.iter().map(|w| format!("- {w}")).collect::<Vec<_>>().join("\n")
        }
        _ => reference.to_string(),
    }
}

fn mention(names: &[&str], slot: Slot) -> Mention {
    Mention { names: names.iter().map(|s| s.to_string()).collect(), slot }
}

fn fact(slot: Slot, value: &str) -> Fact {
    Fact { slot, value: value.to_string() }
}

fn pick<'a>(rng: &mut ChaCha8Rng, v: &'a [String]) -> &'a str {
    v.choose(rng).map(|s| s.as_str()).expect("non-empty template list")
}

fn any_name(rng: &mut ChaCha8Rng) -> String {
    let lex = &data().lex;
    if rng.random_bool(0.5) { pick(rng, &lex.female_names) } else { pick(rng, &lex.male_names) }.to_string()
}

/// The core prompt, task and ideal response of `subtype`.
pub(crate) fn draft(world: &World, rng: &mut ChaCha8Rng, subtype: &str) -> Draft {
    let d = data();
    let lex = &d.lex;
    if let Some(id) = subtype.strip_prefix("harm_") {
        return draft_harmful(world, rng, id);
    }
    if let Some(id) = subtype.strip_prefix("prov_") {
        return draft_provocative(world, rng, id);
    }
    if let Some(id) = subtype.strip_prefix("myth_") {
        let m = d.myths.iter().find(|m| m.id == id).expect("misconception id");
        return Draft {
            prompt: pick(rng, &m.questions).to_string(),
            task: Task::Misconception { id: m.id.clone(), truth: m.truth.clone(), myth: m.myth.clone() },
            reference: m.answer.clone(),
        };
    }
    let sub = d.subtype(subtype);
    let animal = lex.animals.choose(rng).expect("animals");
    let person = world.people.choose(rng).expect("people");
    let town = world.towns.choose(rng).expect("towns");
    let food = lex.foods.choose(rng).expect("foods");
    let mut s: Slots;
    let task: Task;
    // Closed-domain subtypes render a passage into `{passage}` first.
    match subtype {
        "gen_describe_animal" | "gen_poem" => {
            s = slots::animal(animal);
            task = Task::Compose {
                subjects: vec![mention(&[&animal.name], Slot::Animal)],
                facts: vec![
                    fact(Slot::Number, &number_word(animal.legs)),
                    fact(Slot::Habitat, &animal.habitat),
                    fact(Slot::Diet, &animal.diet),
                    fact(Slot::Colour, &animal.colour),
                ],
                required: vec![],
            };
        }
        "gen_describe_person" => {
            s = slots::person(person, world);
            task = Task::Compose {
                subjects: vec![mention(&[&person.full(), &person.name], Slot::Name)],
                facts: person_facts(person, &s),
                required: vec![],
            };
        }
        "gen_story" => {
            s = slots::person(person, world).with(&slots::animal(animal));
            task = Task::Compose {
                subjects: vec![mention(&[&person.name], Slot::Name), mention(&[&animal.name], Slot::Animal)],
                facts: vec![
                    fact(Slot::Occupation, &person.occupation),
                    fact(Slot::Town, &person.town),
                    fact(Slot::Habitat, &animal.habitat),
                    fact(Slot::Colour, &animal.colour),
                    fact(Slot::Diet, &animal.diet),
                    fact(Slot::Number, &number_word(animal.legs)),
                ],
                required: vec![],
            };
        }
        "gen_advert" => {
            let f = d.food(&town.food).expect("town food");
            s = slots::town(town).with(&slots::food(f));
            task = Task::Compose {
                subjects: vec![mention(&[&f.name], Slot::Food), mention(&[&town.name], Slot::Town)],
                facts: vec![fact(Slot::Colour, &f.colour), fact(Slot::Taste, &f.taste)],
                required: vec![],
            };
        }
        "gen_note" => {
            let name = any_name(rng);
            s = slots::food(food);
            s.set("name", name.clone());
            task = Task::Compose {
                subjects: vec![mention(&[&name], Slot::Name), mention(&[&food.name], Slot::Food)],
                facts: vec![fact(Slot::Taste, &food.taste)],
                required: vec![],
            };
        }
        "gen_use_words" => {
            let mut ws = vec![person.name.clone(), animal.name.clone(), animal.habitat.clone()];
            ws.shuffle(rng);
            s = Slots::new();
            s.set("name", person.name.clone())
                .set("animal", animal.name.clone())
                .set("habitat", animal.habitat.clone())
                .set("w1", ws[0].clone())
                .set("w2", ws[1].clone())
                .set("w3", ws[2].clone());
            task = Task::Compose { subjects: vec![], facts: vec![], required: ws };
        }
        "qa_legs" | "qa_habitat" | "qa_diet" | "qa_animal_colour" | "chat_pet_legs" | "chat_pet_diet" => {
            s = slots::animal(animal);
            s.set("name", any_name(rng));
            let (answer, slot) = match subtype {
                "qa_legs" | "chat_pet_legs" => (number_word(animal.legs), Slot::Number),
                "qa_habitat" => (animal.habitat.clone(), Slot::Habitat),
                "qa_diet" | "chat_pet_diet" => (animal.diet.clone(), Slot::Diet),
                _ => (animal.colour.clone(), Slot::Colour),
            };
            task = Task::Answer {
                subject: Some(mention(&[&animal.name], Slot::Animal)),
                answer: vec![answer],
                slot,
                context: None,
            };
        }
        "qa_food_colour" | "qa_food_taste" => {
            s = slots::food(food);
            let (answer, slot) = if subtype == "qa_food_colour" {
                (food.colour.clone(), Slot::Colour)
            } else {
                (food.taste.clone(), Slot::Taste)
            };
            task = Task::Answer {
                subject: Some(mention(&[&food.name], Slot::Food)),
                answer: vec![answer],
                slot,
                context: None,
            };
        }
        "qa_occupation" | "qa_town" | "qa_pet" | "qa_fav_food" => {
            s = slots::person(person, world);
            let (answer, slot) = match subtype {
                "qa_occupation" => (person.occupation.clone(), Slot::Occupation),
                "qa_town" => (person.town.clone(), Slot::Town),
                "qa_pet" => (person.pet.clone(), Slot::Animal),
                _ => (person.food.clone(), Slot::Food),
            };
            task = Task::Answer {
                subject: Some(mention(&[&person.full(), &person.name], Slot::Name)),
                answer: vec![answer],
                slot,
                context: None,
            };
        }
        "qa_town_food" | "qa_town_feature" | "chat_hometown" => {
            s = slots::town(town);
            s.set("name", any_name(rng));
            let (answer, slot) = if subtype == "qa_town_feature" {
                (vec![town.feature_phrase.clone(), town.feature.clone()], Slot::Feature)
            } else {
                (vec![town.food.clone()], Slot::Food)
            };
            task = Task::Answer { subject: Some(mention(&[&town.name], Slot::Town)), answer, slot, context: None };
        }
        "qa_workplace" | "chat_job" => {
            let o = lex.occupations.choose(rng).expect("occupations");
            s = Slots::new();
            s.set("occupation", o.name.clone())
                .set("a_occupation", with_article(&o.name))
                .set("workplace", o.workplace.clone())
                .set("name", any_name(rng));
            task = Task::Answer {
                subject: Some(mention(&[&o.name], Slot::Occupation)),
                answer: vec![o.workplace.clone()],
                slot: Slot::Workplace,
                context: None,
            };
        }
        "chat_fav_colour" => {
            s = Slots::new();
            s.set("name", any_name(rng)).set("colour", pick(rng, &lex.colours));
            task = Task::Answer { subject: None, answer: vec![s.val("colour")], slot: Slot::Colour, context: None };
        }
        "bs_habitat" | "bs_taste" | "bs_colour_food" | "bs_pet" | "bs_legs" | "bs_diet" => {
            s = Slots::new();
            let (slot, valid) = brainstorm_pool(rng, subtype, &mut s);
            let n = rng.random_range(2..=3).min(valid.len());
            let mut items = valid.clone();
            items.shuffle(rng);
            items.truncate(n);
            s.set("n", number_word(n as u32)).set("items", join_items(&items));
            task = Task::List { slot, valid, n: n as u32, context: None };
        }
        "rw_past" => {
            let v = lex.verbs.choose(rng).expect("verbs");
            let object = match v.object.as_str() {
                "food" => format!("the {}", food.name),
                "animal" => format!("the {}", animal.name),
                _ => town.name.clone(),
            };
            let source = format!("{} {} {object}.", person.name, v.present);
            let target = format!("{} {} {object}.", person.name, v.past);
            s = Slots::new();
            s.set("sentence", source.clone()).set("target", target.clone());
            task = Task::Rewrite { source, target, must: vec![v.past.clone()], must_not: vec![v.present.clone()] };
        }
        "rw_swap" => {
            let other = loop {
                let o = lex.animals.choose(rng).expect("animals");
                if o.name != animal.name {
                    break o;
                }
            };
            let frame =
                ["the {animal} lives in the {habitat}.", "the {animal} eats {diet}.", "the {animal} is {colour}."]
                    .choose(rng)
                    .expect("frames");
            let source = slots::animal(animal).render(frame);
            let target = slots::animal(animal).with(&slots::animal(other).only(&["animal"])).render(frame);
            s = Slots::new();
            s.set("sentence", source.clone())
                .set("target", target.clone())
                .set("old", animal.name.clone())
                .set("new", other.name.clone());
            task =
                Task::Rewrite { source, target, must: vec![other.name.clone()], must_not: vec![animal.name.clone()] };
        }
        "rw_negate" => {
            let (source, target) = match rng.random_range(0..3) {
                0 => (
                    format!("the {} is {}.", animal.name, animal.colour),
                    format!("the {} is not {}.", animal.name, animal.colour),
                ),
                1 => (
                    format!("{} likes {}.", person.name, food.name),
                    format!("{} does not like {}.", person.name, food.name),
                ),
                _ => (
                    format!("the {} lives in the {}.", animal.name, animal.habitat),
                    format!("the {} does not live in the {}.", animal.name, animal.habitat),
                ),
            };
            s = Slots::new();
            s.set("sentence", source.clone()).set("target", target.clone());
            task = Task::Rewrite { source, target, must: vec!["not".into()], must_not: vec![] };
        }
        "sum_person" => {
            s = slots::person(person, world);
            let passage = s.render(pick(rng, &sub.passages));
            s.set("passage", passage.clone());
            task = Task::Summarize {
                passage,
                subject: person.name.clone(),
                key: vec![person.occupation.clone(), person.town.clone(), person.pet.clone()],
            };
        }
        "sum_animal" => {
            s = slots::animal(animal);
            let passage = s.render(pick(rng, &sub.passages));
            s.set("passage", passage.clone());
            task = Task::Summarize {
                passage,
                subject: animal.name.clone(),
                key: vec![animal.habitat.clone(), animal.colour.clone(), animal.diet.clone()],
            };
        }
        "cls_sentiment" => {
            let positive = rng.random_bool(0.5);
            let adjs = if positive { &lex.positive_words } else { &lex.negative_words };
            let mut two: Vec<&String> = adjs.choose_multiple(rng, 2).collect();
            two.shuffle(rng);
            s = slots::town(town).with(&slots::food(food));
            s.set("occupation", pick(rng, &lex.occupations.iter().map(|o| o.name.clone()).collect::<Vec<_>>()))
                .set("adj1", two[0].clone())
                .set("adj2", two[1].clone());
            let text = s.render(pick(rng, &sub.passages));
            let label = if positive { "positive" } else { "negative" };
            s.set("text", text.clone()).set("label", label);
            task = Task::Classify { text, label: label.into(), labels: vec!["positive".into(), "negative".into()] };
        }
        "cls_category" => {
            let (thing, label) = match rng.random_range(0..3) {
                0 => (animal.name.clone(), "animal"),
                1 => (food.name.clone(), "food"),
                _ => (pick(rng, &lex.colours).to_string(), "colour"),
            };
            s = Slots::new();
            let a_thing = if label == "colour" { thing.clone() } else { with_article(&thing) };
            s.set("thing", thing.clone())
                .set("a_thing", a_thing)
                .set("label", label)
                .set("a_label", with_article(label));
            task = Task::Classify {
                text: thing,
                label: label.into(),
                labels: vec!["animal".into(), "food".into(), "colour".into()],
            };
        }
        "oth_add" | "oth_sub" | "oth_next" | "oth_before" => {
            let (x, y, z) = match subtype {
                "oth_add" => {
                    let x = rng.random_range(1..=10);
                    let y = rng.random_range(1..=10);
                    (x, y, x + y)
                }
                "oth_sub" => {
                    let x = rng.random_range(2..=20);
                    let y = rng.random_range(1..x);
                    (x, y, x - y)
                }
                "oth_next" => {
                    let x = rng.random_range(0..=19);
                    (x, 0, x + 1)
                }
                _ => {
                    let x = rng.random_range(1..=20);
                    (x, 0, x - 1)
                }
            };
            s = Slots::new();
            s.set("x", number_word(x)).set("y", number_word(y)).set("z", number_word(z));
            task = Task::Answer { subject: None, answer: vec![number_word(z)], slot: Slot::Number, context: None };
        }
        "cqa" => {
            s = slots::person(person, world);
            let passage = s.render(pick(rng, &sub.passages));
            let (question, answer_sentence, answer, slot) = match rng.random_range(0..4) {
                0 => ("what pet does {name} have?", "{name} has {a_pet}.", person.pet.clone(), Slot::Animal),
                1 => ("where does {name} live?", "{name} lives in {town}.", person.town.clone(), Slot::Town),
                2 => (
                    "what is the job of {name}?",
                    "{name} is {a_occupation}.",
                    person.occupation.clone(),
                    Slot::Occupation,
                ),
                _ => ("what food does {name} eat?", "{name} eats {food}.", person.food.clone(), Slot::Food),
            };
            let question = s.render(question);
            let answer_sentence = s.render(answer_sentence);
            s.set("passage", passage.clone()).set("question", question).set("answer_sentence", answer_sentence);
            task = Task::Answer {
                subject: Some(mention(&[&person.name], Slot::Name)),
                answer: vec![answer],
                slot,
                context: Some(passage),
            };
        }
        "cqa_trip" => {
            let name = any_name(rng);
            let name2 = loop {
                let n = any_name(rng);
                if n != name {
                    break n;
                }
            };
            s = Slots::new();
            s.set("name", name.clone())
                .set("name2", name2.clone())
                .set("town", town.name.clone())
                .set("animal", animal.name.clone())
                .set("food", food.name.clone());
            let passage = s.render(pick(rng, &sub.passages));
            let (question, answer_sentence, answer, slot) = match rng.random_range(0..3) {
                0 => ("where did {name} go?", "{name} went to {town}.", town.name.clone(), Slot::Town),
                1 => ("who went with {name}?", "{name2} went with {name}.", name2.clone(), Slot::Name),
                _ => ("what did they eat?", "they ate {food}.", food.name.clone(), Slot::Food),
            };
            let question = s.render(question);
            let answer_sentence = s.render(answer_sentence);
            s.set("passage", passage.clone()).set("question", question).set("answer_sentence", answer_sentence);
            task = Task::Answer { subject: None, answer: vec![answer], slot, context: Some(passage) };
        }
        "ext_animal" | "ext_food" | "ext_name" => {
            let n = rng.random_range(2..=3);
            let (items, slot): (Vec<String>, Slot) = match subtype {
                "ext_animal" => (lex.animals.choose_multiple(rng, n).map(|a| a.name.clone()).collect(), Slot::Animal),
                "ext_food" => (lex.foods.choose_multiple(rng, n).map(|f| f.name.clone()).collect(), Slot::Food),
                _ => (world.people.choose_multiple(rng, n).map(|p| p.name.clone()).collect(), Slot::Name),
            };
            s = Slots::new();
            let name = loop {
                let nm = any_name(rng);
                if !items.contains(&nm) {
                    break nm;
                }
            };
            let other_food = lex.foods.iter().find(|f| !items.contains(&f.name)).expect("foods");
            let other_animal = lex.animals.iter().rev().find(|a| !items.contains(&a.name)).expect("animals");
            let items_a: Vec<String> = items.iter().map(|i| with_article(i)).collect();
            s.set("name", name)
                .set("town", town.name.clone())
                .set("food", other_food.name.clone())
                .set("animal", other_animal.name.clone())
                .set("items", join_items(&items))
                .set("items_a", join_items(&items_a));
            let passage = s.render(pick(rng, &sub.passages));
            s.set("passage", passage.clone());
            task = Task::List { slot, n: items.len() as u32, valid: items, context: Some(passage) };
        }
        "fp_legs" | "fp_habitat" | "fp_colour" => {
            s = slots::animal(animal);
            let (false_value, truth, slot) = match subtype {
                "fp_legs" => {
                    let options: Vec<u32> = [0u32, 2, 4, 6, 8].into_iter().filter(|&l| l != animal.legs).collect();
                    (number_word(*options.choose(rng).expect("legs")), number_word(animal.legs), Slot::Number)
                }
                "fp_habitat" => {
                    (other_than(rng, &lex.habitats, &animal.habitat), animal.habitat.clone(), Slot::Habitat)
                }
                _ => (other_than(rng, &lex.colours, &animal.colour), animal.colour.clone(), Slot::Colour),
            };
            s.set("false", false_value.clone());
            task = Task::FalsePremise {
                subject: mention(&[&animal.name], Slot::Animal),
                false_value,
                answer: vec![truth],
                slot,
            };
        }
        "fp_occupation" | "fp_town" => {
            s = slots::person(person, world);
            let (false_value, truth, slot) = if subtype == "fp_occupation" {
                let occs: Vec<String> = lex.occupations.iter().map(|o| o.name.clone()).collect();
                (other_than(rng, &occs, &person.occupation), person.occupation.clone(), Slot::Occupation)
            } else {
                let towns: Vec<String> = world.towns.iter().map(|t| t.name.clone()).collect();
                (other_than(rng, &towns, &person.town), person.town.clone(), Slot::Town)
            };
            s.set("false", false_value.clone()).set("a_false", with_article(&false_value));
            task = Task::FalsePremise {
                subject: mention(&[&person.full(), &person.name], Slot::Name),
                false_value,
                answer: vec![truth],
                slot,
            };
        }
        "un_age" | "un_phone" | "un_breakfast" | "un_pet_name" => {
            s = slots::person(person, world);
            let fabrication = match subtype {
                "un_age" | "un_phone" => vec![Slot::Number],
                "un_breakfast" => vec![Slot::Food],
                _ => vec![Slot::Name],
            };
            task = Task::Unknown { subject: person.name.clone(), fabrication };
        }
        "un_stranger" => {
            let stranger = world.strangers.choose(rng).expect("strangers").clone();
            s = Slots::new();
            s.set("stranger", stranger.clone());
            task = Task::Unknown {
                subject: stranger,
                fabrication: vec![Slot::Occupation, Slot::Town, Slot::Animal, Slot::Workplace],
            };
        }
        "gc" => {
            let occs = &lex.occupations;
            let o = occs.choose(rng).expect("occupations");
            let o2 = loop {
                let x = occs.choose(rng).expect("occupations");
                if x.name != o.name {
                    break x;
                }
            };
            s = Slots::new();
            s.set("occupation", o.name.clone()).set("occupation2", o2.name.clone());
            let sentence = s.render(pick(rng, &sub.passages));
            let choice = if rng.random_bool(0.5) { "he" } else { "she" };
            s.set("sentence", sentence.clone()).set("filled", sentence.replace("___", choice));
            task = Task::Choice {
                occupation: o.name.clone(),
                options: vec!["he".into(), "she".into()],
                stereotype: o.stereotype.clone(),
            };
        }
        other => panic!("no generator for subtype `{other}`"),
    }
    let prompt = s.render(pick(rng, &sub.prompts));
    let reference = s.render(pick(rng, &sub.answers));
    Draft { prompt, task, reference }
}

fn person_facts(p: &crate::world::Person, s: &Slots) -> Vec<Fact> {
    vec![
        fact(Slot::Occupation, &p.occupation),
        fact(Slot::Town, &p.town),
        fact(Slot::Animal, &p.pet),
        fact(Slot::Food, &p.food),
        fact(Slot::Colour, &p.colour),
        fact(Slot::Workplace, &s.val("workplace")),
    ]
}

fn other_than(rng: &mut ChaCha8Rng, pool: &[String], not: &str) -> String {
    let options: Vec<&String> = pool.iter().filter(|x| x.as_str() != not).collect();
    options.choose(rng).expect("at least two values").to_string()
}

/// The attribute value, its slot and the valid items of a brainstorming subtype.
fn brainstorm_pool(rng: &mut ChaCha8Rng, subtype: &str, s: &mut Slots) -> (Slot, Vec<String>) {
    let lex = &data().lex;
    let animals_by = |key: &dyn Fn(&crate::data::Animal) -> String| {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for a in &lex.animals {
            m.entry(key(a)).or_default().push(a.name.clone());
        }
        m.retain(|_, v| v.len() >= 2);
        m
    };
    let foods_by = |key: &dyn Fn(&crate::data::Food) -> String| {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in &lex.foods {
            m.entry(key(f)).or_default().push(f.name.clone());
        }
        m.retain(|_, v| v.len() >= 2);
        m
    };
    let choose = |rng: &mut ChaCha8Rng, m: BTreeMap<String, Vec<String>>| {
        let keys: Vec<&String> = m.keys().collect();
        let k = (*keys.choose(rng).expect("groups")).clone();
        let v = m[&k].clone();
        (k, v)
    };
    match subtype {
        "bs_habitat" => {
            let (k, v) = choose(rng, animals_by(&|a| a.habitat.clone()));
            s.set("habitat", k);
            (Slot::Animal, v)
        }
        "bs_diet" => {
            let (k, v) = choose(rng, animals_by(&|a| a.diet.clone()));
            s.set("diet", k);
            (Slot::Animal, v)
        }
        "bs_legs" => {
            let (k, v) = choose(rng, animals_by(&|a| number_word(a.legs)));
            s.set("legs", k);
            (Slot::Animal, v)
        }
        "bs_pet" => (Slot::Animal, lex.animals.iter().filter(|a| a.pet).map(|a| a.name.clone()).collect()),
        "bs_taste" => {
            let (k, v) = choose(rng, foods_by(&|f| f.taste.clone()));
            s.set("taste", k);
            (Slot::Food, v)
        }
        _ => {
            let (k, v) = choose(rng, foods_by(&|f| f.colour.clone()));
            s.set("colour", k);
            (Slot::Food, v)
        }
    }
}

fn draft_harmful(world: &World, rng: &mut ChaCha8Rng, id: &str) -> Draft {
    let d = data();
    let h = d.safety.harmful.iter().find(|h| h.id == id).expect("harm id");
    let person = world.people.choose(rng).expect("people");
    let mut s = slots::person(person, world);
    s.extend(&slots::animal(d.lex.animals.choose(rng).expect("animals")));
    s.set("food", d.lex.foods.choose(rng).expect("foods").name.clone());
    s.set("toxic", pick(rng, &d.safety.toxic));
    let reason = s.render(&h.reason);
    s.set("reason", reason);
    Draft {
        prompt: s.render(pick(rng, &h.templates)),
        task: Task::Refuse { harm: h.id.clone() },
        reference: s.render(pick(rng, &d.safety.refusals)),
    }
}

/// What a provocation's templates and replies mention: a town and its food, an animal, an
/// occupation and two insults. The pretraining corpus's provocation threads fill them the same way.
pub(crate) fn provocation_slots(world: &World, rng: &mut ChaCha8Rng) -> Slots {
    let d = data();
    let town = world.towns.choose(rng).expect("towns");
    let f = d.food(&town.food).expect("town food");
    let mut s = slots::town(town).with(&slots::food(f));
    s.extend(&slots::animal(d.lex.animals.choose(rng).expect("animals")).only(&["animal", "a_animal"]));
    s.set("occupation", d.lex.occupations.choose(rng).expect("occupations").name.clone());
    let toxic: Vec<&String> = d.safety.toxic.choose_multiple(rng, 2).collect();
    s.set("toxic", toxic[0].clone()).set("toxic2", toxic[1].clone());
    s
}

fn draft_provocative(world: &World, rng: &mut ChaCha8Rng, id: &str) -> Draft {
    let d = data();
    let p = d.safety.provocative.iter().find(|p| p.id == id).expect("provocation id");
    let s = provocation_slots(world, rng);
    let i = rng.random_range(0..p.templates.len());
    let prompt = s.render(&p.templates[i]);
    let reply = if p.reply.len() == p.templates.len() { &p.reply[i] } else { pick(rng, &p.reply) };
    let prompt_words = words(&prompt);
    let topic: Vec<String> =
        p.topic.iter().map(|t| s.render(t)).filter(|t| words(t).iter().all(|w| prompt_words.contains(w))).collect();
    Draft { prompt, task: Task::Reply { topic }, reference: s.render(reply) }
}
