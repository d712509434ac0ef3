//! Closed benchmark tasks in pretraining-text format, for the alignment tax.
//!
//! Each item is a context and a few candidate continuations; the eval stage picks the candidate with
//! the highest model log-likelihood and [`score`] says whether it is the gold one. The tasks stand in
//! for the paper's public NLP benchmarks: `facts` (cloze over world facts, like closed-book QA),
//! `reading` (retrieve one person's fact from a passage with distractors, like SQuAD/DROP), `stories`
//! (pick the ending that stays with the story's animal, like HellaSwag), `numbers` (arithmetic), and
//! `tense` (the past tense of a sentence, a transformation like translation).

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand_chacha::ChaCha8Rng;

use crate::data::data;
use crate::meta::BenchmarkItem;
use crate::seed;
use crate::slots;
use crate::text::{number_word, with_article};
use crate::world::World;

/// The benchmark tasks, in report order.
pub const TASKS: [&str; 5] = ["facts", "reading", "stories", "numbers", "tense"];

/// Every benchmark item of `world`: `n_benchmark_items` per task.
pub(crate) fn generate(world: &World) -> Vec<BenchmarkItem> {
    let mut out = Vec::new();
    for task in TASKS {
        for i in 0..world.config.n_benchmark_items {
            let mut rng = seed::rng(world.config.seed, &format!("bench/{task}/{i}"));
            let (context, gold, distractors) = match task {
                "facts" => facts(world, &mut rng),
                "reading" => reading(world, &mut rng),
                "stories" => stories(world, &mut rng),
                "numbers" => numbers(&mut rng),
                _ => tense(world, &mut rng),
            };
            out.push(assemble(&mut rng, format!("bench-{task}-{i:04}"), task, context, gold, distractors));
        }
    }
    out
}

/// Whether `choice` (an index into the item's choices) is the gold answer.
pub fn score(item: &BenchmarkItem, choice: usize) -> bool {
    choice == item.gold
}

/// Accuracy of `choices` (one per item, same order); 0 for no items.
pub fn accuracy(items: &[BenchmarkItem], choices: &[usize]) -> f64 {
    if items.is_empty() {
        return 0.0;
    }
    let right = items.iter().zip(choices).filter(|(it, c)| score(it, **c)).count();
    right as f64 / items.len() as f64
}

fn assemble(
    rng: &mut ChaCha8Rng,
    id: String,
    task: &str,
    context: String,
    gold: String,
    mut distractors: Vec<String>,
) -> BenchmarkItem {
    distractors.retain(|d| *d != gold);
    distractors.sort();
    distractors.dedup();
    distractors.shuffle(rng);
    distractors.truncate(3);
    let mut choices: Vec<String> = distractors.into_iter().map(|d| format!(" {d}")).collect();
    let gold_at = rng.random_range(0..=choices.len());
    choices.insert(gold_at, format!(" {gold}"));
    BenchmarkItem { id, task: task.to_string(), context, choices, gold: gold_at }
}

fn others<T: Clone>(rng: &mut ChaCha8Rng, pool: &[T], n: usize) -> Vec<T> {
    pool.choose_multiple(rng, n).cloned().collect()
}

fn facts(world: &World, rng: &mut ChaCha8Rng) -> (String, String, Vec<String>) {
    let d = data();
    let lex = &d.lex;
    match rng.random_range(0..5) {
        0 => {
            let a = lex.animals.choose(rng).expect("animals");
            (format!("the {} lives in the", a.name), format!("{}.", a.habitat), dots(others(rng, &lex.habitats, 6)))
        }
        1 => {
            let a = lex.animals.choose(rng).expect("animals");
            let legs: Vec<String> = [0, 2, 4, 6, 8].iter().map(|&l| format!("{} legs.", number_word(l))).collect();
            (format!("the {} has", a.name), format!("{} legs.", number_word(a.legs)), legs)
        }
        2 => {
            let a = lex.animals.choose(rng).expect("animals");
            (format!("the {} eats", a.name), format!("{}.", a.diet), dots(others(rng, &lex.diets, 6)))
        }
        3 => {
            let f = lex.foods.choose(rng).expect("foods");
            (format!("{} tastes", f.name), format!("{}.", f.taste), dots(others(rng, &lex.tastes, 6)))
        }
        _ => {
            let p = world.people.choose(rng).expect("people");
            let occs: Vec<String> = lex.occupations.iter().map(|o| with_article(&o.name)).collect();
            (format!("{} works as", p.full()), format!("{}.", with_article(&p.occupation)), dots(others(rng, &occs, 6)))
        }
    }
}

fn dots(v: Vec<String>) -> Vec<String> {
    v.into_iter().map(|s| format!("{s}.")).collect()
}

fn reading(world: &World, rng: &mut ChaCha8Rng) -> (String, String, Vec<String>) {
    // Facts stated in the passage, not the world's: the answer must be read, not remembered.
    let lex = &data().lex;
    let names: Vec<String> = world.people.choose_multiple(rng, 3).map(|p| p.name.clone()).collect();
    let pets: Vec<String> = lex.animals.choose_multiple(rng, 3).map(|a| a.name.clone()).collect();
    let passage: Vec<String> = names.iter().zip(&pets).map(|(n, a)| format!("{n} has {}.", with_article(a))).collect();
    let k = rng.random_range(0..3);
    let context = format!("{} so the pet of {} is", passage.join(" "), names[k]);
    let gold = format!("{}.", with_article(&pets[k]));
    let distractors = pets.iter().map(|a| format!("{}.", with_article(a))).collect();
    (context, gold, distractors)
}

fn stories(world: &World, rng: &mut ChaCha8Rng) -> (String, String, Vec<String>) {
    let lex = &data().lex;
    let p = world.people.choose(rng).expect("people");
    let a = lex.animals.choose(rng).expect("animals");
    let s = slots::person(p, world).with(&slots::animal(a));
    let context = s.render(
        "one day {name} the {occupation} went to the {habitat}. there {pron} saw {a_animal}. the {animal} was {colour}. then {name} went home and told everyone about the",
    );
    let distractors = others(rng, &lex.animals, 4).into_iter().map(|x| format!("{}.", x.name)).collect();
    (context, format!("{}.", a.name), distractors)
}

fn numbers(rng: &mut ChaCha8Rng) -> (String, String, Vec<String>) {
    let x: u32 = rng.random_range(1..=10);
    let y: u32 = rng.random_range(1..=10);
    let z = x + y;
    let distractors = [z.saturating_sub(2), z.saturating_sub(1), z + 1, z + 2, x, y]
        .iter()
        .filter(|&&v| v != z && v <= 20)
        .map(|&v| format!("{}.", number_word(v)))
        .collect();
    (format!("{} plus {} is", number_word(x), number_word(y)), format!("{}.", number_word(z)), distractors)
}

fn tense(world: &World, rng: &mut ChaCha8Rng) -> (String, String, Vec<String>) {
    let lex = &data().lex;
    let verbs: Vec<&crate::data::Verb> = lex.verbs.iter().filter(|v| v.object != "town").collect();
    let v = verbs.choose(rng).expect("verbs");
    let object = if v.object == "food" {
        format!("the {}", lex.foods.choose(rng).expect("foods").name)
    } else {
        format!("the {}", lex.animals.choose(rng).expect("animals").name)
    };
    let name = &world.people.choose(rng).expect("people").name;
    let context = format!("today {name} {} {object}. yesterday {name}", v.present);
    let distractors = verbs
        .choose_multiple(rng, 4)
        .map(|o| format!("{} {object}.", o.past))
        .chain([format!("{} {object}.", v.present), format!("{} {object}.", v.base)]);
    (context, format!("{} {object}.", v.past), distractors.collect())
}
