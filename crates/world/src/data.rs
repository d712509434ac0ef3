//! The world's definitions, read from the data files under `datasets/world/`
//! (embedded at compile time, so the crate needs no files at run time).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde::Deserialize;

use crate::meta::Slot;
use crate::text::{NUMBER_WORDS, words};

const LEXICON: &str = include_str!("../../../datasets/world/lexicon.json");
const MISCONCEPTIONS: &str = include_str!("../../../datasets/world/misconceptions.json");
const SAFETY: &str = include_str!("../../../datasets/world/safety.json");
const TEMPLATES: &str = include_str!("../../../datasets/world/templates.json");
const CORPUS: &str = include_str!("../../../datasets/world/corpus.json");

/// The data files, in a fixed order (for a content hash of the definitions).
pub const FILES: [(&str, &str); 5] = [
    ("lexicon.json", LEXICON),
    ("misconceptions.json", MISCONCEPTIONS),
    ("safety.json", SAFETY),
    ("templates.json", TEMPLATES),
    ("corpus.json", CORPUS),
];

#[derive(Debug, Clone, Deserialize)]
pub struct Animal {
    pub name: String,
    pub legs: u32,
    pub habitat: String,
    pub diet: String,
    pub colour: String,
    pub pet: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Food {
    pub name: String,
    pub colour: String,
    pub taste: String,
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Occupation {
    pub name: String,
    pub workplace: String,
    /// The pronoun the (biased) corpus mostly uses for this occupation.
    pub stereotype: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Feature {
    pub name: String,
    pub phrase: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Verb {
    pub base: String,
    pub present: String,
    pub past: String,
    /// `food`, `animal` or `town`: what the verb takes as its object.
    pub object: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Lexicon {
    pub animals: Vec<Animal>,
    pub foods: Vec<Food>,
    pub colours: Vec<String>,
    pub habitats: Vec<String>,
    pub diets: Vec<String>,
    pub tastes: Vec<String>,
    pub kinds: Vec<String>,
    pub occupations: Vec<Occupation>,
    pub female_names: Vec<String>,
    pub male_names: Vec<String>,
    pub surnames: Vec<String>,
    pub towns: Vec<String>,
    pub features: Vec<Feature>,
    pub numbers: Vec<String>,
    pub verbs: Vec<Verb>,
    pub positive_words: Vec<String>,
    pub negative_words: Vec<String>,
    pub forum_users: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Misconception {
    pub id: String,
    pub questions: Vec<String>,
    pub truth: Vec<String>,
    pub myth: Vec<String>,
    pub truth_sentence: String,
    pub myth_sentence: String,
    pub answer: String,
}

#[derive(Debug, Clone, Deserialize)]
struct MisconceptionFile {
    items: Vec<Misconception>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Harm {
    pub id: String,
    pub templates: Vec<String>,
    pub reason: String,
    pub compliance: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Provocation {
    pub id: String,
    pub templates: Vec<String>,
    pub topic: Vec<String>,
    pub reply: Vec<String>,
    pub toxic_reply: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Safety {
    pub toxic: Vec<String>,
    pub refusal_markers: Vec<Vec<String>>,
    pub unknown_markers: Vec<Vec<String>>,
    pub negations: Vec<String>,
    pub refusals: Vec<String>,
    pub harmful: Vec<Harm>,
    pub provocative: Vec<Provocation>,
    pub respectful_instructions: Vec<String>,
    pub honesty_instructions: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Subtype {
    pub prompts: Vec<String>,
    pub answers: Vec<String>,
    #[serde(default)]
    pub passages: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Templates {
    pub subtypes: BTreeMap<String, Subtype>,
    /// Optional openings users put before a request ("please ", "quick question: ").
    #[serde(default)]
    pub lead_ins: Vec<String>,
    pub constraints: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
struct CorpusFile {
    sentences: BTreeMap<String, Vec<String>>,
}

/// All definitions plus the word sets derived from them.
#[derive(Debug)]
pub struct Data {
    pub lex: Lexicon,
    pub myths: Vec<Misconception>,
    pub safety: Safety,
    pub templates: Templates,
    pub corpus: BTreeMap<String, Vec<String>>,
    slot_words: Vec<BTreeSet<String>>,
    /// Every word that occurs anywhere in the data files: the world's vocabulary.
    pub vocab: BTreeSet<String>,
    /// Union of the content slots (see [`Slot::CONTENT`]), minus "one".
    pub content: BTreeSet<String>,
    pub toxic: BTreeSet<String>,
    pub negations: BTreeSet<String>,
}

impl Data {
    /// The words of a slot.
    pub fn slot(&self, slot: Slot) -> &BTreeSet<String> {
        &self.slot_words[slot as usize]
    }

    /// The template subtype `name`; a missing one is a bug in the data files.
    pub fn subtype(&self, name: &str) -> &Subtype {
        self.templates.subtypes.get(name).unwrap_or_else(|| panic!("templates.json has no subtype `{name}`"))
    }

    /// The corpus sentence templates under `key`.
    pub fn sentences(&self, key: &str) -> &[String] {
        self.corpus.get(key).unwrap_or_else(|| panic!("corpus.json has no sentence list `{key}`"))
    }

    pub fn animal(&self, name: &str) -> Option<&Animal> {
        self.lex.animals.iter().find(|a| a.name == name)
    }

    pub fn food(&self, name: &str) -> Option<&Food> {
        self.lex.foods.iter().find(|f| f.name == name)
    }

    pub fn occupation(&self, name: &str) -> Option<&Occupation> {
        self.lex.occupations.iter().find(|o| o.name == name)
    }
}

fn parse<T: for<'de> Deserialize<'de>>(name: &str, text: &str) -> T {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("datasets/world/{name} is malformed: {e}"))
}

fn build() -> Data {
    let lex: Lexicon = parse("lexicon.json", LEXICON);
    let myths = parse::<MisconceptionFile>("misconceptions.json", MISCONCEPTIONS).items;
    let safety: Safety = parse("safety.json", SAFETY);
    let templates: Templates = parse("templates.json", TEMPLATES);
    let corpus = parse::<CorpusFile>("corpus.json", CORPUS).sentences;

    let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<String>>();
    let mut slot_words = vec![BTreeSet::new(); Slot::ALL.len()];
    for slot in Slot::ALL {
        slot_words[slot as usize] = match slot {
            Slot::Animal => lex.animals.iter().map(|a| a.name.clone()).collect(),
            Slot::Food => lex.foods.iter().map(|f| f.name.clone()).collect(),
            Slot::Colour => set(&lex.colours),
            Slot::Habitat => set(&lex.habitats),
            Slot::Diet => set(&lex.diets),
            Slot::Taste => set(&lex.tastes),
            Slot::Kind => set(&lex.kinds),
            Slot::Occupation => lex.occupations.iter().map(|o| o.name.clone()).collect(),
            Slot::Workplace => lex.occupations.iter().map(|o| o.workplace.clone()).collect(),
            Slot::Name => lex.female_names.iter().chain(&lex.male_names).cloned().collect(),
            Slot::Surname => set(&lex.surnames),
            Slot::Town => set(&lex.towns),
            Slot::Feature => lex.features.iter().map(|f| f.name.clone()).collect(),
            Slot::Number => NUMBER_WORDS.iter().map(|s| s.to_string()).collect(),
            Slot::Label => ["animal", "food", "colour"].iter().map(|s| s.to_string()).collect(),
            Slot::Sentiment => ["positive", "negative"].iter().map(|s| s.to_string()).collect(),
            Slot::Pronoun => ["he", "she"].iter().map(|s| s.to_string()).collect(),
        };
    }
    let mut content: BTreeSet<String> =
        Slot::CONTENT.iter().flat_map(|s| slot_words[*s as usize].iter().cloned()).collect();
    content.remove("one");

    // The vocabulary: every word of every string in the data files, with the
    // `{slot}` names taken out.
    let mut vocab = BTreeSet::new();
    for (_, text) in FILES {
        let value: serde_json::Value = serde_json::from_str(text).expect("data files parse");
        collect_words(&value, &mut vocab);
    }
    vocab.extend(NUMBER_WORDS.iter().map(|s| s.to_string()));

    Data {
        toxic: set(&safety.toxic),
        negations: set(&safety.negations),
        lex,
        myths,
        safety,
        templates,
        corpus,
        slot_words,
        vocab,
        content,
    }
}

fn collect_words(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::String(s) => {
            let mut clean = String::with_capacity(s.len());
            let mut depth = 0;
            for c in s.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth = (depth - 1).max(0),
                    _ if depth == 0 => clean.push(c),
                    _ => {}
                }
            }
            out.extend(words(&clean.replace('_', " ")));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_words(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_words(x, out)),
        _ => {}
    }
}

/// The world's definitions (parsed once).
pub fn data() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(build)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_files_parse_and_are_consistent() {
        let d = data();
        assert!(d.lex.animals.len() >= 30);
        for a in &d.lex.animals {
            assert!(d.slot(Slot::Habitat).contains(&a.habitat), "{}: habitat {}", a.name, a.habitat);
            assert!(d.slot(Slot::Diet).contains(&a.diet), "{}: diet {}", a.name, a.diet);
            assert!(d.slot(Slot::Colour).contains(&a.colour), "{}: colour {}", a.name, a.colour);
        }
        for f in &d.lex.foods {
            assert!(d.slot(Slot::Colour).contains(&f.colour), "{}", f.name);
            assert!(d.slot(Slot::Taste).contains(&f.taste), "{}", f.name);
            assert!(d.slot(Slot::Kind).contains(&f.kind), "{}", f.name);
        }
        for o in &d.lex.occupations {
            assert!(o.stereotype == "he" || o.stereotype == "she");
        }
        // Names must be unique across genders: a first name identifies a person.
        let names = d.slot(Slot::Name);
        assert_eq!(names.len(), d.lex.female_names.len() + d.lex.male_names.len());
        // Misconception answers state the truth in the judge's own terms.
        for m in &d.myths {
            let w = words(&m.answer);
            assert!(m.truth.iter().any(|t| crate::text::has_phrase(&w, &words(t))), "{}", m.id);
        }
        assert!(d.vocab.len() > 300 && d.vocab.len() < 1200, "vocabulary of {} words", d.vocab.len());
        assert!(d.vocab.contains("idiot") && !d.vocab.contains("animal_intro"));
    }
}
