//! The records the world hands to the pipeline: prompts with their hidden task
//! metadata, demonstrations, pretraining documents, responses.
//!
//! [`TaskMeta`] is everything the gold judge needs to score a response to one
//! prompt without the world itself; it travels between stages as a JSON string
//! (`serde_json::to_string` / `from_str` round-trip it exactly).

use serde::{Deserialize, Serialize};

/// Task family. The first ten are the paper's use-case categories, in the order
/// of their share of the API prompt mix; the rest probe honesty and harmlessness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Generation,
    OpenQa,
    Brainstorming,
    Chat,
    Rewrite,
    Summarization,
    Classification,
    Other,
    ClosedQa,
    Extraction,
    /// A request for help doing harm: the response should refuse.
    Harmful,
    /// A question built on a false premise: the response should correct it.
    FalsePremise,
    /// A question the world cannot answer: the response should say it does not know.
    Unanswerable,
    /// A question whose popular answer (taught by the corpus) is false.
    Misconception,
    /// A toxic comment to reply to or continue: the response should stay civil.
    Provocative,
    /// A choice between gendered pronouns for an occupation (bias probe).
    GenderedChoice,
}

impl Family {
    pub const ALL: [Family; 16] = [
        Family::Generation,
        Family::OpenQa,
        Family::Brainstorming,
        Family::Chat,
        Family::Rewrite,
        Family::Summarization,
        Family::Classification,
        Family::Other,
        Family::ClosedQa,
        Family::Extraction,
        Family::Harmful,
        Family::FalsePremise,
        Family::Unanswerable,
        Family::Misconception,
        Family::Provocative,
        Family::GenderedChoice,
    ];

    /// The paper's use-case mix (Table 1 of Ouyang et al.), in percent.
    pub const USE_CASE_MIX: [(Family, f64); 10] = [
        (Family::Generation, 45.6),
        (Family::OpenQa, 12.4),
        (Family::Brainstorming, 11.2),
        (Family::Chat, 8.4),
        (Family::Rewrite, 6.6),
        (Family::Summarization, 4.2),
        (Family::Classification, 3.5),
        (Family::Other, 3.5),
        (Family::ClosedQa, 2.6),
        (Family::Extraction, 1.9),
    ];

    /// The snake_case name, as serialised.
    pub fn name(self) -> &'static str {
        match self {
            Family::Generation => "generation",
            Family::OpenQa => "open_qa",
            Family::Brainstorming => "brainstorming",
            Family::Chat => "chat",
            Family::Rewrite => "rewrite",
            Family::Summarization => "summarization",
            Family::Classification => "classification",
            Family::Other => "other",
            Family::ClosedQa => "closed_qa",
            Family::Extraction => "extraction",
            Family::Harmful => "harmful",
            Family::FalsePremise => "false_premise",
            Family::Unanswerable => "unanswerable",
            Family::Misconception => "misconception",
            Family::Provocative => "provocative",
            Family::GenderedChoice => "gendered_choice",
        }
    }

    /// Parses [`Family::name`].
    pub fn from_name(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.name() == name)
    }

    /// One of the paper's ten use-case categories.
    pub fn is_use_case(self) -> bool {
        Family::USE_CASE_MIX.iter().any(|(f, _)| *f == self)
    }

    /// Closed-domain tasks: the answer must come from the prompt alone, so any
    /// content not in it is a hallucination (the paper's definition).
    pub fn is_closed_domain(self) -> bool {
        matches!(self, Family::ClosedQa | Family::Summarization | Family::Extraction)
    }

    /// Probes of truthfulness (the TruthfulQA analogue).
    pub fn is_honesty(self) -> bool {
        matches!(self, Family::FalsePremise | Family::Unanswerable | Family::Misconception)
    }
}

/// What kind of word a slot holds: the judge maps each to a word list of the
/// world's lexicon (to find wrong values, rival entities and invented content).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    Animal,
    Food,
    Colour,
    Habitat,
    Diet,
    Taste,
    Kind,
    Occupation,
    Workplace,
    Name,
    Surname,
    Town,
    Feature,
    Number,
    Label,
    Sentiment,
    Pronoun,
}

impl Slot {
    pub const ALL: [Slot; 17] = [
        Slot::Animal,
        Slot::Food,
        Slot::Colour,
        Slot::Habitat,
        Slot::Diet,
        Slot::Taste,
        Slot::Kind,
        Slot::Occupation,
        Slot::Workplace,
        Slot::Name,
        Slot::Surname,
        Slot::Town,
        Slot::Feature,
        Slot::Number,
        Slot::Label,
        Slot::Sentiment,
        Slot::Pronoun,
    ];

    /// Slots whose words are world content (as opposed to function words):
    /// content not in a closed-domain prompt is invented.
    pub const CONTENT: [Slot; 13] = [
        Slot::Animal,
        Slot::Food,
        Slot::Colour,
        Slot::Habitat,
        Slot::Diet,
        Slot::Taste,
        Slot::Occupation,
        Slot::Workplace,
        Slot::Name,
        Slot::Surname,
        Slot::Town,
        Slot::Feature,
        Slot::Number,
    ];
}

/// An explicit constraint stated in the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Constraint {
    /// "answer in one word."
    OneWord,
    /// "answer in at most N words."
    MaxWords { n: u32 },
    /// "write each item on its own line starting with a dash." (N items)
    Bullets { n: u32 },
    /// "answer in one sentence."
    OneSentence,
}

/// An extra instruction added to some probes, as in the paper's evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Instruction {
    /// "please be respectful." (the RealToxicityPrompts "respectful" variant)
    BeRespectful,
    /// "say you don't know unless you are sure." (the TruthfulQA "I have no comment" variant)
    SayUnknownUnlessSure,
}

/// A subject of a task and the phrases that mention it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mention {
    /// Phrases that name the subject, best first ("anna berg", "anna").
    pub names: Vec<String>,
    /// The slot the subject belongs to; other words of it are rival entities.
    pub slot: Slot,
}

/// A true fact a response may state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    pub slot: Slot,
    pub value: String,
}

/// The task behind a prompt, with what the judge needs to check a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// A question with one correct value (open QA, chat, other, closed QA).
    Answer {
        subject: Option<Mention>,
        /// Accepted answer phrases.
        answer: Vec<String>,
        /// The slot of the answer: its other words are wrong answers.
        slot: Slot,
        /// For closed QA: the passage the answer must come from.
        context: Option<String>,
    },
    /// Open-ended writing about subjects (generation).
    Compose {
        subjects: Vec<Mention>,
        /// True facts worth stating; other values of their slots are false.
        facts: Vec<Fact>,
        /// Words the response must use (empty for most subtypes).
        required: Vec<String>,
    },
    /// A list of items of one slot (brainstorming; extraction with a context).
    List {
        slot: Slot,
        valid: Vec<String>,
        /// How many items were asked for (all of `valid` for extraction).
        n: u32,
        context: Option<String>,
    },
    /// Rewrite a sentence into `target`.
    Rewrite { source: String, target: String, must: Vec<String>, must_not: Vec<String> },
    /// Summarise a passage: mention the subject and the key facts, invent nothing.
    Summarize { passage: String, subject: String, key: Vec<String> },
    /// Pick one label.
    Classify { text: String, label: String, labels: Vec<String> },
    /// A harmful request: refuse.
    Refuse { harm: String },
    /// A question whose premise states `false_value`; the truth is `answer`.
    FalsePremise { subject: Mention, false_value: String, answer: Vec<String>, slot: Slot },
    /// A question nobody in the world can answer; stating any value of the
    /// `fabrication` slots is making it up.
    Unknown { subject: String, fabrication: Vec<Slot> },
    /// A misconception question: `truth` phrases are right, `myth` phrases are
    /// the popular falsehood.
    Misconception { id: String, truth: Vec<String>, myth: Vec<String> },
    /// A provocative comment: reply civilly about the topic.
    Reply { topic: Vec<String> },
    /// Choose between gendered alternatives (no choice is wrong; the pipeline
    /// measures the entropy of the choices).
    Choice { occupation: String, options: Vec<String>, stereotype: String },
}

/// Reads the `meta` column of a prompts table: `Ok(None)` for rows without world metadata (`{}` or
/// empty, as user data has), an error naming what is wrong for anything else.
pub fn parse_meta(json: &str) -> Result<Option<TaskMeta>, String> {
    let t = json.trim();
    if t.is_empty() || t == "{}" || t == "null" {
        return Ok(None);
    }
    serde_json::from_str(t).map(Some).map_err(|e| format!("not the world's task metadata: {e}"))
}

/// Hidden metadata of a prompt: everything the gold judge needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMeta {
    pub family: Family,
    /// The template family inside the family (`qa_legs`, `gen_story`, ...).
    pub subtype: String,
    /// The prompt text (the judge lets a response echo its words).
    pub prompt: String,
    pub task: Task,
    pub constraint: Option<Constraint>,
    pub instruction: Option<Instruction>,
    /// The ideal response (the demonstration).
    pub reference: String,
    /// True facts about the task's entities (content words) that a response to an open-domain task
    /// may add without being penalised for them: "the dog has four legs and lives in the house" is
    /// not a wrong detail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_true: Vec<String>,
}

impl TaskMeta {
    /// The metadata as a JSON string (the `meta` column of the prompts table).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("TaskMeta serialises")
    }

    /// Parses [`TaskMeta::to_json`].
    pub fn from_json(s: &str) -> anyhow::Result<TaskMeta> {
        serde_json::from_str(s).map_err(|e| anyhow::anyhow!("task metadata is not valid world TaskMeta JSON: {e}"))
    }
}

/// Which dataset a prompt is meant for (a suggestion: ingest splits by user).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Sft,
    Rm,
    Ppo,
    /// The evaluation suites (truthfulness, toxicity, bias): never trained on.
    Eval,
}

impl Purpose {
    pub fn name(self) -> &'static str {
        match self {
            Purpose::Sft => "sft",
            Purpose::Rm => "rm",
            Purpose::Ppo => "ppo",
            Purpose::Eval => "eval",
        }
    }
}

/// One instruction prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prompt {
    pub id: String,
    pub text: String,
    pub user_id: String,
    pub family: Family,
    pub purpose: Purpose,
    pub meta: TaskMeta,
}

/// A labeler-written ideal response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Demonstration {
    pub prompt_id: String,
    pub prompt: String,
    pub response: String,
    pub labeler_id: String,
}

/// One response to judge or rank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub text: String,
    /// Whether generation stopped at the end-of-sequence token (rather than
    /// the length limit).
    pub ended_with_eos: bool,
}

impl Response {
    pub fn new(text: impl Into<String>, ended_with_eos: bool) -> Self {
        Response { text: text.into(), ended_with_eos }
    }
}

/// What kind of web text a pretraining document imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocKind {
    Encyclopedic,
    Story,
    QuestionList,
    InstructionList,
    Forum,
    FunFacts,
    Stereotype,
    Echo,
    Numbers,
}

impl DocKind {
    pub const ALL: [DocKind; 9] = [
        DocKind::Encyclopedic,
        DocKind::Story,
        DocKind::QuestionList,
        DocKind::InstructionList,
        DocKind::Forum,
        DocKind::FunFacts,
        DocKind::Stereotype,
        DocKind::Echo,
        DocKind::Numbers,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DocKind::Encyclopedic => "encyclopedic",
            DocKind::Story => "story",
            DocKind::QuestionList => "question_list",
            DocKind::InstructionList => "instruction_list",
            DocKind::Forum => "forum",
            DocKind::FunFacts => "fun_facts",
            DocKind::Stereotype => "stereotype",
            DocKind::Echo => "echo",
            DocKind::Numbers => "numbers",
        }
    }
}

/// `train` or `validation` (the held-out slice for perplexity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocSplit {
    Train,
    Validation,
}

impl DocSplit {
    pub fn name(self) -> &'static str {
        match self {
            DocSplit::Train => "train",
            DocSplit::Validation => "validation",
        }
    }
}

/// One pretraining document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainDoc {
    pub id: String,
    pub text: String,
    pub kind: DocKind,
    pub split: DocSplit,
}

/// A closed benchmark item in pretraining-text format: the model scores each
/// choice as a continuation of `context`; accuracy is the share of items where
/// the gold choice scores best.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkItem {
    pub id: String,
    /// `facts` (cloze over world facts), `reading` (answer from a passage),
    /// `stories` (pick the coherent ending), `numbers` (arithmetic), `tense` (past-tense transform).
    pub task: String,
    pub context: String,
    /// Continuations, each starting with a space.
    pub choices: Vec<String>,
    pub gold: usize,
}
