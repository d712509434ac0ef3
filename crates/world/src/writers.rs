//! The demonstrating labelers: who writes each demonstration, and how each falls short of the ideal.
//!
//! The paper's demonstrations came from contractors writing quickly against a guideline, and its
//! labelers went on to prefer the RL policy's outputs to the SFT model's: ranking is easier than
//! writing. A world whose demonstrations are the gold judge's ideal responses makes SFT imitate the
//! optimum directly, so RL has nothing to find but what sampling loses. Here each of the
//! [`DEMO_WRITERS`] writers has a [`Habit`], and a demonstration shows its writer's habit with the
//! world's `demo_habit_rate`: answers cut to the bare value, a last sentence left out, an explicit
//! constraint skipped, a detail of the writer's own added. These are failures of form that labelers
//! notice and a policy can learn to avoid, not facts the small model lacks.
//!
//! Key design decision: the writer comes from the prompt's id, and whether their habit shows from
//! the world's seed, both independently of the prompt's content, so the SFT model sees a mixture of
//! careful and careless demonstrations of every task type, as a model trained on several
//! contractors' work does. Harmful requests are always refused as the guideline says: no habit
//! applies to a refusal.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::degrade::{Degradation, degrade};
use crate::meta::{Demonstration, Prompt, Response, Task, TaskMeta};
use crate::prompts::ideal_response;
use crate::seed;

/// How many demonstration writers (`lab-00`..) the demonstrations are attributed to.
pub const DEMO_WRITERS: usize = 10;

/// How a demonstrating labeler falls short of the ideal response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Habit {
    /// Writes the ideal response.
    Careful,
    /// Gives the bare answer, value or label, without a sentence; elsewhere leaves out the last part.
    Terse,
    /// Leaves out the last sentence or list item.
    Hasty,
    /// Ignores an explicit constraint (length, one word, bullets); careful on prompts without one.
    SkipsConstraint,
    /// Adds a detail of their own that the task does not support.
    Embellishes,
}

/// Writer `lab-NN`'s habit: four careful writers, and six with one habit each.
pub const WRITER_HABITS: [Habit; DEMO_WRITERS] = [
    Habit::Careful,
    Habit::Careful,
    Habit::Careful,
    Habit::Careful,
    Habit::Terse,
    Habit::Terse,
    Habit::Hasty,
    Habit::Hasty,
    Habit::SkipsConstraint,
    Habit::Embellishes,
];

impl Habit {
    /// The failure this habit produces on `meta`, or `None` where it leaves the ideal response alone.
    pub fn degradation(self, meta: &TaskMeta) -> Option<Degradation> {
        if matches!(meta.task, Task::Refuse { .. }) {
            return None;
        }
        let d = match self {
            Habit::Careful => return None,
            Habit::Terse if Degradation::Terse.applies(meta) => Degradation::Terse,
            Habit::Terse | Habit::Hasty => Degradation::DropPart,
            Habit::SkipsConstraint if meta.constraint.is_some() => Degradation::ViolateConstraint,
            Habit::SkipsConstraint => return None,
            Habit::Embellishes => Degradation::Hallucinate,
        };
        d.applies(meta).then_some(d)
    }
}

/// The writer of `prompt_id`'s demonstration (an index into [`WRITER_HABITS`]).
pub fn writer_of(prompt_id: &str) -> usize {
    seed::fnv1a(prompt_id.as_bytes()) as usize % DEMO_WRITERS
}

/// The demonstration of one prompt in the world of `world_seed`, where a writer's habit shows with
/// probability `habit_rate` (0 = every demonstration is the ideal response).
pub fn demonstrate(p: &Prompt, world_seed: u64, habit_rate: f64) -> Demonstration {
    let writer = writer_of(&p.id);
    let mut rng = seed::rng(world_seed, &format!("demonstration/{}", p.id));
    let ideal = Response::new(ideal_response(&p.meta), true);
    let shows = rng.random_bool(habit_rate.clamp(0.0, 1.0));
    let response = match WRITER_HABITS[writer].degradation(&p.meta) {
        Some(kind) if shows => degrade(&p.meta, &ideal, kind, &mut rng).text,
        _ => ideal.text,
    };
    Demonstration { prompt_id: p.id.clone(), prompt: p.text.clone(), response, labeler_id: format!("lab-{writer:02}") }
}
