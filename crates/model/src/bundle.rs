//! A model directory as the stages use it: the language model, its tokenizer and its instruction
//! format, loaded together, with batched sampling over many prompts.
//!
//! Every stage that samples (rollout, reward-model epoch selection, PPO, evaluation) goes through
//! [`Bundle::sample`], so prompts are encoded, truncated and decoded the same way everywhere.

use std::path::Path;

use candle_core::Device;

use crate::error::Result;
use crate::generate::{FinishReason, Generation, SamplingConfig};
use crate::lm::CausalLm;
use crate::tokenizer::{InstructionFormat, Tokenizer};

/// The padding token our tokenizers reserve; models without one pad with EOS.
pub const PAD_TOKEN: &str = "<|pad|>";

/// A loaded model directory.
pub struct Bundle {
    pub lm: CausalLm,
    pub tok: Tokenizer,
    pub format: InstructionFormat,
    pub eos: u32,
    pub pad: u32,
}

/// One sampled response, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub generation: Generation,
    /// The response text up to (not including) EOS.
    pub text: String,
}

impl Sampled {
    pub fn ended_with_eos(&self) -> bool {
        self.generation.finish == FinishReason::Eos
    }
}

impl Bundle {
    /// Loads `dir` (config.json, weights, tokenizer.json, optional instruction format).
    pub fn load(dir: &Path, device: &Device) -> Result<Bundle> {
        let lm = CausalLm::load(dir, device)?;
        let tok = Tokenizer::from_dir(dir)?;
        let format = InstructionFormat::load_from_dir(dir)?.unwrap_or_default();
        Bundle::new(lm, tok, format)
    }

    pub fn new(lm: CausalLm, tok: Tokenizer, format: InstructionFormat) -> Result<Bundle> {
        let eos = format.eos_id(&tok)?;
        let pad = tok.token_id(PAD_TOKEN).unwrap_or(eos);
        Ok(Bundle { lm, tok, format, eos, pad })
    }

    /// Writes the model, tokenizer and format into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.save_with(&self.lm, dir)
    }

    /// Writes other weights of the same architecture (e.g. an EMA of these) with this tokenizer and
    /// format into `dir`.
    pub fn save_with(&self, lm: &CausalLm, dir: &Path) -> Result<()> {
        lm.save(dir)?;
        self.tok.save_to_dir(dir)?;
        self.format.save_to_dir(dir)
    }

    /// Sampling settings with this model's EOS and padding.
    pub fn sampling(&self, max_new_tokens: usize, temperature: f32, top_k: usize, top_p: f32) -> SamplingConfig {
        SamplingConfig { max_new_tokens, temperature, top_k, top_p, eos_ids: vec![self.eos], pad_id: self.pad }
    }

    /// The longest prompt that leaves room for `max_new_tokens` in the model's context.
    pub fn max_prompt_tokens(&self, max_new_tokens: usize) -> usize {
        self.lm.config().max_position_embeddings.saturating_sub(max_new_tokens).max(1)
    }

    /// Encodes prompts in the instruction format; a prompt longer than `max_tokens` keeps its last
    /// `max_tokens` tokens (the assistant prefix the response follows is at the end). Returns the
    /// ids and how many prompts were truncated.
    pub fn encode_prompts<S: AsRef<str>>(&self, prompts: &[S], max_tokens: usize) -> Result<(Vec<Vec<u32>>, usize)> {
        let mut truncated = 0;
        let mut out = Vec::with_capacity(prompts.len());
        for p in prompts {
            let (ids, cut) = self.encode_prompt(p.as_ref(), max_tokens)?;
            truncated += usize::from(cut);
            out.push(ids);
        }
        Ok((out, truncated))
    }

    /// One prompt as [`encode_prompts`](Self::encode_prompts) encodes it, and whether it was cut.
    pub fn encode_prompt(&self, prompt: &str, max_tokens: usize) -> Result<(Vec<u32>, bool)> {
        let mut ids = self.format.encode_prompt(&self.tok, prompt)?;
        let cut = ids.len() > max_tokens;
        if cut {
            ids.drain(..ids.len() - max_tokens);
        }
        Ok((ids, cut))
    }

    /// Samples one response per prompt (`seeds[i]` drives prompt `i`), `batch_size` sequences at a
    /// time. Sequences are batched in order of length, which changes nothing in the result (a
    /// sequence's tokens do not depend on its batch) and wastes less compute on padding.
    pub fn sample(
        &self,
        prompts: &[Vec<u32>],
        seeds: &[u64],
        cfg: &SamplingConfig,
        batch_size: usize,
        on_batch: impl FnMut(usize),
    ) -> Result<Vec<Sampled>> {
        self.sample_from(&self.lm, prompts, seeds, cfg, batch_size, on_batch)
    }

    /// As [`sample`](Self::sample), from other weights of the same architecture and tokenizer
    /// (e.g. an EMA of the policy).
    pub fn sample_from(
        &self,
        lm: &CausalLm,
        prompts: &[Vec<u32>],
        seeds: &[u64],
        cfg: &SamplingConfig,
        batch_size: usize,
        mut on_batch: impl FnMut(usize),
    ) -> Result<Vec<Sampled>> {
        assert_eq!(prompts.len(), seeds.len(), "one seed per prompt");
        let mut order: Vec<usize> = (0..prompts.len()).collect();
        order.sort_by_key(|&i| (prompts[i].len(), i));
        let mut out: Vec<Option<Sampled>> = vec![None; prompts.len()];
        for chunk in order.chunks(batch_size.max(1)) {
            let p: Vec<Vec<u32>> = chunk.iter().map(|&i| prompts[i].clone()).collect();
            let s: Vec<u64> = chunk.iter().map(|&i| seeds[i]).collect();
            let gens = lm.generate(&p, &s, cfg)?;
            for (&i, generation) in chunk.iter().zip(gens) {
                let text = self.format.decode_response(&self.tok, &generation.tokens)?;
                out[i] = Some(Sampled { generation, text });
            }
            on_batch(chunk.len());
        }
        Ok(out.into_iter().map(|s| s.expect("every prompt sampled")).collect())
    }
}

/// The scalar model's reward for each (prompt ids, response ids) pair, `batch_size` pairs per
/// forward pass, no gradients; `on_batch` hears how many pairs each pass scored (for progress).
pub fn score_pairs(
    scorer: &crate::lm::ScalarModel,
    pairs: &[(Vec<u32>, Vec<u32>)],
    batch_size: usize,
    mut on_batch: impl FnMut(usize),
) -> Result<Vec<f32>> {
    let frozen;
    let scorer = if scorer.is_trainable() {
        frozen = scorer.frozen()?;
        &frozen
    } else {
        scorer
    };
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(batch_size.max(1)) {
        let batch = crate::batch::Batch::aligned(chunk, scorer.device())?;
        out.extend(scorer.rewards(&batch, None)?.to_vec1::<f32>()?);
        on_batch(chunk.len());
    }
    Ok(out)
}

/// Response tokens as the reward model reads them: ending with EOS (appended when the sample ran
/// out of length; the reward model was trained on responses that end with EOS, and a missing EOS is
/// penalised separately where it matters).
pub fn with_eos(tokens: &[u32], eos: u32) -> Vec<u32> {
    let mut r = tokens.to_vec();
    if r.last() != Some(&eos) {
        r.push(eos);
    }
    r
}
