//! The world: sizes, the seeded people and towns, and the generation entry point.
//!
//! Animals, foods and occupations are static (the data files); people and towns are drawn from the
//! name lists by the seed, so two seeds give two worlds with the same vocabulary and different facts.
//! Every generated collection comes from its own seeded stream (see [`crate::seed`]), so changing how
//! many prompts a world has does not change its documents.

use std::collections::BTreeMap;

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde::{Deserialize, Serialize};

use crate::data::data;
use crate::meta::{BenchmarkItem, Demonstration, Family, PretrainDoc, Prompt, Purpose};
use crate::seed;

/// How big a world to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorldSize {
    /// The whole pipeline in well under a minute: a few hundred short documents, tens of prompts per dataset.
    Smoke,
    /// The full CPU pipeline in about half an hour: about 1.5M words of pretraining text, 6000 prompts.
    Default,
    /// More of everything, for a GPU.
    Large,
}

impl WorldSize {
    pub fn name(self) -> &'static str {
        match self {
            WorldSize::Smoke => "smoke",
            WorldSize::Default => "default",
            WorldSize::Large => "large",
        }
    }

    pub fn from_name(name: &str) -> Option<WorldSize> {
        [WorldSize::Smoke, WorldSize::Default, WorldSize::Large].into_iter().find(|s| s.name() == name)
    }
}

/// The presets' chance that a demonstration shows its writer's habit: about 40% of demonstrations
/// fall short of the ideal, so labelers have something to prefer over the SFT model's imitation.
pub const DEMO_HABIT_RATE: f64 = 0.8;

/// The counts that make a world. [`WorldConfig::new`] fills them from a size; callers may change any
/// of them (then call [`WorldConfig::validate`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorldConfig {
    pub seed: u64,
    /// People with distinct first names (at most the name lists' size minus a few strangers).
    pub n_people: usize,
    /// Towns (at most the town list's size).
    pub n_towns: usize,
    /// Pretraining documents (train and validation together).
    pub n_docs: usize,
    /// Share of documents in the held-out validation slice.
    pub validation_share: f64,
    /// Instruction prompts, all purposes together, before ingest's per-user cap.
    pub n_prompts: usize,
    /// Prompt authors; prompts per user follow a Zipf law, so a few users write many.
    pub n_users: usize,
    /// Zipf exponent of prompts per user.
    pub user_zipf: f64,
    /// Share of users whose prompts are all suggested for evaluation.
    pub eval_user_share: f64,
    /// Benchmark items per benchmark task.
    pub n_benchmark_items: usize,
    /// Chance that a demonstration shows its writer's habit ([`crate::writers`]); 0 makes every
    /// demonstration the ideal response.
    pub demo_habit_rate: f64,
}

impl WorldConfig {
    pub fn new(seed: u64, size: WorldSize) -> WorldConfig {
        let (n_people, n_towns, n_docs, n_prompts, n_users, n_benchmark_items) = match size {
            WorldSize::Smoke => (16, 6, 400, 240, 10, 20),
            WorldSize::Default => (56, 14, 34_000, 6_000, 120, 200),
            WorldSize::Large => (72, 20, 110_000, 24_000, 400, 500),
        };
        WorldConfig {
            seed,
            n_people,
            n_towns,
            n_docs,
            validation_share: 0.05,
            n_prompts,
            n_users,
            user_zipf: 0.8,
            eval_user_share: 0.12,
            n_benchmark_items,
            demo_habit_rate: DEMO_HABIT_RATE,
        }
    }

    /// Checks the cross-field rules; the message says which field to change.
    pub fn validate(&self) -> anyhow::Result<()> {
        let lex = &data().lex;
        let names = lex.female_names.len() + lex.male_names.len();
        anyhow::ensure!(
            (4..=names - 8).contains(&self.n_people),
            "n_people = {} must be in 4..={} (distinct first names, leaving 8 for strangers)",
            self.n_people,
            names - 8
        );
        anyhow::ensure!(
            (2..=lex.towns.len()).contains(&self.n_towns),
            "n_towns = {} must be in 2..={}",
            self.n_towns,
            lex.towns.len()
        );
        anyhow::ensure!(self.n_docs >= 10, "n_docs = {} must be at least 10", self.n_docs);
        anyhow::ensure!(
            (0.0..0.5).contains(&self.validation_share),
            "validation_share = {} must be in [0, 0.5)",
            self.validation_share
        );
        anyhow::ensure!(self.n_prompts >= 20, "n_prompts = {} must be at least 20", self.n_prompts);
        anyhow::ensure!(
            self.n_users >= 2 && self.n_users <= self.n_prompts,
            "n_users = {} must be in 2..=n_prompts",
            self.n_users
        );
        anyhow::ensure!((0.0..=3.0).contains(&self.user_zipf), "user_zipf = {} must be in [0, 3]", self.user_zipf);
        anyhow::ensure!(
            (0.0..0.9).contains(&self.eval_user_share),
            "eval_user_share = {} must be in [0, 0.9)",
            self.eval_user_share
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.demo_habit_rate),
            "demo_habit_rate = {} must be in [0, 1]",
            self.demo_habit_rate
        );
        Ok(())
    }
}

/// `he`/`his` or `she`/`her`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gender {
    Female,
    Male,
}

impl Gender {
    pub fn pronoun(self) -> &'static str {
        match self {
            Gender::Female => "she",
            Gender::Male => "he",
        }
    }
    pub fn possessive(self) -> &'static str {
        match self {
            Gender::Female => "her",
            Gender::Male => "his",
        }
    }
}

/// A person of the world. Occupations are drawn independently of gender: the corpus's pronoun
/// stereotypes are a bias of the text, not a fact of the world.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub name: String,
    pub surname: String,
    pub gender: Gender,
    pub occupation: String,
    pub town: String,
    pub pet: String,
    pub food: String,
    pub colour: String,
}

impl Person {
    pub fn full(&self) -> String {
        format!("{} {}", self.name, self.surname)
    }
}

/// A town of the world.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Town {
    pub name: String,
    /// The feature's name (`sea`, `river`, ...).
    pub feature: String,
    /// How the corpus says where the town lies ("by the sea").
    pub feature_phrase: String,
    /// The food the town is famous for.
    pub food: String,
}

/// A generated world: its entities and every dataset drawn from them.
#[derive(Debug, Clone)]
pub struct World {
    pub config: WorldConfig,
    pub people: Vec<Person>,
    pub towns: Vec<Town>,
    /// Full names of people who are not in the world (for unanswerable questions).
    pub strangers: Vec<String>,
    docs: Vec<PretrainDoc>,
    prompts: Vec<Prompt>,
    benchmarks: Vec<BenchmarkItem>,
}

impl World {
    /// Generates the world of `seed` at `size`.
    pub fn generate(seed: u64, size: WorldSize) -> World {
        World::from_config(WorldConfig::new(seed, size)).expect("the preset sizes are valid")
    }

    /// Generates a world from explicit counts.
    pub fn from_config(config: WorldConfig) -> anyhow::Result<World> {
        config.validate()?;
        let (people, towns, strangers) = entities(&config);
        let mut world = World { config, people, towns, strangers, docs: vec![], prompts: vec![], benchmarks: vec![] };
        world.docs = crate::corpus::generate(&world);
        world.prompts = crate::prompts::generate(&world);
        world.benchmarks = crate::benchmarks::generate(&world);
        Ok(world)
    }

    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    /// The pretraining corpus, train and validation documents together (see [`PretrainDoc::split`]).
    pub fn pretrain_docs(&self) -> &[PretrainDoc] {
        &self.docs
    }

    /// Every instruction prompt, with user ids and suggested purposes.
    pub fn prompts(&self) -> &[Prompt] {
        &self.prompts
    }

    /// The demonstrating labelers' responses to every prompt suggested for SFT, each showing its
    /// writer's habit with the configured rate ([`crate::writers`]).
    pub fn demonstrations(&self) -> Vec<Demonstration> {
        let (seed, rate) = (self.config.seed, self.config.demo_habit_rate);
        self.prompts
            .iter()
            .filter(|p| p.purpose == Purpose::Sft)
            .map(|p| crate::writers::demonstrate(p, seed, rate))
            .collect()
    }

    /// The closed benchmark items (alignment tax).
    pub fn benchmarks(&self) -> &[BenchmarkItem] {
        &self.benchmarks
    }

    pub fn person(&self, name: &str) -> Option<&Person> {
        self.people.iter().find(|p| p.name == name)
    }

    pub fn town(&self, name: &str) -> Option<&Town> {
        self.towns.iter().find(|t| t.name == name)
    }

    /// A one-screen summary of the world's sizes (for logs and reports).
    pub fn stats(&self) -> WorldStats {
        let mut by_family = BTreeMap::new();
        let mut by_purpose = BTreeMap::new();
        for p in &self.prompts {
            *by_family.entry(p.family.name().to_string()).or_insert(0) += 1;
            *by_purpose.entry(p.purpose.name().to_string()).or_insert(0) += 1;
        }
        let words: usize = self.docs.iter().map(|d| d.text.split_whitespace().count()).sum();
        let validation = self.docs.iter().filter(|d| d.split == crate::meta::DocSplit::Validation).count();
        WorldStats {
            docs: self.docs.len(),
            validation_docs: validation,
            words,
            prompts: self.prompts.len(),
            demonstrations: by_purpose.get("sft").copied().unwrap_or(0),
            users: self.prompts.iter().map(|p| p.user_id.as_str()).collect::<std::collections::BTreeSet<_>>().len(),
            benchmark_items: self.benchmarks.len(),
            by_family,
            by_purpose,
        }
    }

    /// Prompts of one family (for tests and reports).
    pub fn prompts_of(&self, family: Family) -> impl Iterator<Item = &Prompt> {
        self.prompts.iter().filter(move |p| p.family == family)
    }
}

/// Sizes of a generated world.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorldStats {
    pub docs: usize,
    pub validation_docs: usize,
    /// Whitespace-separated words of all documents (about 0.8 of a tokenizer's tokens at this vocabulary).
    pub words: usize,
    pub prompts: usize,
    pub demonstrations: usize,
    pub users: usize,
    pub benchmark_items: usize,
    pub by_family: BTreeMap<String, usize>,
    pub by_purpose: BTreeMap<String, usize>,
}

fn entities(config: &WorldConfig) -> (Vec<Person>, Vec<Town>, Vec<String>) {
    let d = data();
    let lex = &d.lex;
    let mut rng = seed::rng(config.seed, "entities");

    let mut town_names = lex.towns.clone();
    town_names.shuffle(&mut rng);
    let mut foods: Vec<&str> = lex.foods.iter().map(|f| f.name.as_str()).collect();
    foods.shuffle(&mut rng);
    let towns: Vec<Town> = town_names
        .into_iter()
        .take(config.n_towns)
        .enumerate()
        .map(|(i, name)| {
            let feature = lex.features.choose(&mut rng).expect("features");
            Town {
                name,
                feature: feature.name.clone(),
                feature_phrase: feature.phrase.clone(),
                food: foods[i % foods.len()].to_string(),
            }
        })
        .collect();

    // Alternate genders so the world is balanced; names are distinct, so a first name identifies a person.
    let mut female = lex.female_names.clone();
    let mut male = lex.male_names.clone();
    female.shuffle(&mut rng);
    male.shuffle(&mut rng);
    let pets: Vec<&str> = lex.animals.iter().filter(|a| a.pet).map(|a| a.name.as_str()).collect();
    let mut people = Vec::with_capacity(config.n_people);
    let (mut fi, mut mi) = (0, 0);
    for i in 0..config.n_people {
        let gender = if (i % 2 == 0 && fi < female.len()) || mi >= male.len() { Gender::Female } else { Gender::Male };
        let name = match gender {
            Gender::Female => {
                fi += 1;
                female[fi - 1].clone()
            }
            Gender::Male => {
                mi += 1;
                male[mi - 1].clone()
            }
        };
        people.push(Person {
            name,
            surname: lex.surnames.choose(&mut rng).expect("surnames").clone(),
            gender,
            occupation: lex.occupations.choose(&mut rng).expect("occupations").name.clone(),
            town: towns[rng.random_range(0..towns.len())].name.clone(),
            pet: pets.choose(&mut rng).expect("pets").to_string(),
            food: lex.foods.choose(&mut rng).expect("foods").name.clone(),
            colour: lex.colours.choose(&mut rng).expect("colours").clone(),
        });
    }
    let strangers: Vec<String> = female[fi..]
        .iter()
        .chain(&male[mi..])
        .map(|n| format!("{} {}", n, lex.surnames.choose(&mut rng).expect("surnames")))
        .collect();
    (people, towns, strangers)
}
