//! The one batch layout used for training, scoring and generation.
//!
//! Architecture Invariant: generation and training lay sequences out the same way.
//!
//! ```text
//!   column:   0 ..  P-1                     P .. P+R-1
//!   row 0:    [pad pad p p p p]             [r r r r EOS pad]
//!   row 1:    [p p p p p p]                 [r r EOS pad pad pad]
//! ```
//!
//! * Prompts are **left**-padded to the longest prompt `P` ("aligned"), so every response starts at
//!   column `P`; responses are **right**-padded to the longest response `R`.
//! * A token's rotary position is the number of real tokens before it in its row, so padding never
//!   changes a token's position, and padding columns are never attended to.
//! * Column `P - 1 + i` predicts response token `i`: response-aligned outputs (log-probs, entropies,
//!   values) are `[B, R]`, entry `[b, i]` about response token `i` of row `b`.
//!
//! [`crate::generate::generate`] lays out prompts and sampled tokens exactly like this, so the
//! log-probs that training recomputes for a rollout match those recorded while sampling (to float
//! rounding: only the amount of padding can differ, and padded keys contribute exact zeros).

use candle_core::{Device, Tensor};

use crate::error::{ModelError, Result};
use crate::model::Input;
use crate::tokenizer::EncodedPair;

/// The id written into padding columns (any valid id works: padding is masked out).
pub const PAD_FILL: u32 = 0;

/// A batch of token rows with its model input and loss mask.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The model input: ids `[B, T]`, positions, padding mask.
    pub input: Input,
    /// `B`.
    pub rows: usize,
    /// `T = P + R`.
    pub width: usize,
    /// `P`: the column where responses start (0 for documents).
    pub prompt_width: usize,
    /// `R`: the longest response.
    pub response_width: usize,
    ids: Vec<u32>,
    valid: Vec<u8>,
    loss_mask: Vec<u8>,
    response_len: Vec<usize>,
}

impl Batch {
    /// Prompts left-padded to a common width, responses right-padded after them; the loss mask
    /// covers the response tokens (put the EOS in `response` if it should be learned).
    pub fn aligned<P: AsRef<[u32]>, R: AsRef<[u32]>>(pairs: &[(P, R)], device: &Device) -> Result<Batch> {
        if pairs.is_empty() {
            return Err(ModelError::Input("empty batch".into()));
        }
        let p_max = pairs.iter().map(|(p, _)| p.as_ref().len()).max().unwrap_or(0);
        let r_max = pairs.iter().map(|(_, r)| r.as_ref().len()).max().unwrap_or(0);
        let (b, t) = (pairs.len(), p_max + r_max);
        if t == 0 {
            return Err(ModelError::Input("every sequence in the batch is empty".into()));
        }
        let mut ids = vec![PAD_FILL; b * t];
        let mut valid = vec![0u8; b * t];
        let mut loss_mask = vec![0u8; b * t];
        let mut response_len = Vec::with_capacity(b);
        for (row, (p, r)) in pairs.iter().enumerate() {
            let (p, r) = (p.as_ref(), r.as_ref());
            let start = row * t + p_max - p.len();
            for (j, &tok) in p.iter().chain(r).enumerate() {
                ids[start + j] = tok;
                valid[start + j] = 1;
                loss_mask[start + j] = u8::from(j >= p.len());
            }
            response_len.push(r.len());
        }
        let input = Input::new(ids.clone(), &valid, b, device)?;
        Ok(Batch {
            input,
            rows: b,
            width: t,
            prompt_width: p_max,
            response_width: r_max,
            ids,
            valid,
            loss_mask,
            response_len,
        })
    }

    /// Encoded (prompt, response) pairs, aligned.
    pub fn from_pairs(pairs: &[EncodedPair], device: &Device) -> Result<Batch> {
        let v: Vec<(&[u32], &[u32])> = pairs.iter().map(|p| (&p.prompt[..], &p.response[..])).collect();
        Batch::aligned(&v, device)
    }

    /// Documents for language modelling: right-padded, every token but the first is a target.
    pub fn documents<S: AsRef<[u32]>>(docs: &[S], device: &Device) -> Result<Batch> {
        let v: Vec<(&[u32], &[u32])> = docs.iter().map(|d| (&[][..], d.as_ref())).collect();
        Batch::aligned(&v, device)
    }

    /// Row-major `[B, T]` token ids.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Row-major `[B, T]`: 1 for a real token, 0 for padding.
    pub fn valid(&self) -> &[u8] {
        &self.valid
    }

    /// Row-major `[B, T]`: 1 where the token is a training target.
    pub fn loss_mask(&self) -> &[u8] {
        &self.loss_mask
    }

    /// Number of real (non-padding) tokens.
    pub fn num_tokens(&self) -> usize {
        self.valid.iter().filter(|&&v| v != 0).count()
    }

    /// Length of each row's response.
    pub fn response_lens(&self) -> &[usize] {
        &self.response_len
    }

    /// `P`, the column of the first response token; an error when there is no prompt column (a
    /// response at column 0 has nothing to be predicted from).
    pub fn response_start(&self) -> Result<usize> {
        if self.prompt_width == 0 {
            return Err(ModelError::Input(
                "response-aligned outputs need a prompt of at least one token in some row".into(),
            ));
        }
        Ok(self.prompt_width)
    }

    /// Column of each row's last real token (where a reward model reads its score).
    pub fn last_valid(&self) -> Vec<usize> {
        (0..self.rows)
            .map(|r| {
                let row = &self.valid[r * self.width..(r + 1) * self.width];
                row.iter().rposition(|&v| v != 0).unwrap_or(0)
            })
            .collect()
    }

    /// Every target under the loss mask: the flat `[B * T]` index of the column predicting it
    /// (`b * T + t - 1`) and the target id. Targets at column 0 have no predictor and are skipped.
    pub fn target_rows(&self) -> (Vec<u32>, Vec<u32>) {
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        for b in 0..self.rows {
            for c in 1..self.width {
                let i = b * self.width + c;
                if self.loss_mask[i] != 0 {
                    rows.push((i - 1) as u32);
                    targets.push(self.ids[i]);
                }
            }
        }
        (rows, targets)
    }

    /// Number of targets under the loss mask (what [`Batch::target_rows`] returns).
    pub fn num_targets(&self) -> usize {
        (0..self.rows)
            .map(|b| self.loss_mask[b * self.width + 1..(b + 1) * self.width].iter().filter(|&&m| m != 0).count())
            .sum()
    }

    /// Response tokens `[B, R]` (u32, padding filled with [`PAD_FILL`]) and their mask `[B, R]`
    /// (f32: 1 on real response tokens).
    pub fn response_targets(&self) -> Result<(Tensor, Tensor)> {
        let p = self.response_start()?;
        let (b, r) = (self.rows, self.response_width);
        let mut targets = vec![PAD_FILL; b * r];
        let mut mask = vec![0f32; b * r];
        for row in 0..b {
            for i in 0..self.response_len[row] {
                targets[row * r + i] = self.ids[row * self.width + p + i];
                mask[row * r + i] = 1.0;
            }
        }
        let dev = self.input.ids.device();
        Ok((Tensor::from_vec(targets, (b, r), dev)?, Tensor::from_vec(mask, (b, r), dev)?))
    }

    /// Splits a response-aligned `[B, R]` tensor into each row's values over its real response
    /// tokens (the shape generation records per sequence).
    pub fn split_responses(&self, per_token: &Tensor) -> Result<Vec<Vec<f32>>> {
        let v = per_token.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
        Ok(v.into_iter().zip(&self.response_len).map(|(row, &n)| row[..n].to_vec()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_left_pads_prompts_and_right_pads_responses() {
        let b = Batch::aligned(&[(vec![5, 6], vec![7, 8, 9]), (vec![1, 2, 3], vec![4])], &Device::Cpu).unwrap();
        assert_eq!((b.rows, b.width, b.prompt_width, b.response_width), (2, 6, 3, 3));
        assert_eq!(b.ids(), &[0, 5, 6, 7, 8, 9, 1, 2, 3, 4, 0, 0]);
        assert_eq!(b.valid(), &[0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
        assert_eq!(b.input.positions, vec![0, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 4]);
        assert_eq!(b.loss_mask(), &[0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0, 0]);
        assert_eq!(b.last_valid(), vec![5, 3]);
        let (rows, tg) = b.target_rows();
        assert_eq!(rows, vec![2, 3, 4, 8]);
        assert_eq!(tg, vec![7, 8, 9, 4]);
        assert_eq!(b.num_targets(), 4);
        let (t, m) = b.response_targets().unwrap();
        assert_eq!(t.to_vec2::<u32>().unwrap(), vec![vec![7, 8, 9], vec![4, 0, 0]]);
        assert_eq!(m.to_vec2::<f32>().unwrap(), vec![vec![1.0, 1.0, 1.0], vec![1.0, 0.0, 0.0]]);
        let per = Tensor::from_vec((0..6).map(|x| x as f32).collect::<Vec<_>>(), (2, 3), &Device::Cpu).unwrap();
        assert_eq!(b.split_responses(&per).unwrap(), vec![vec![0.0, 1.0, 2.0], vec![3.0]]);
    }

    #[test]
    fn documents_score_every_token_but_the_first() {
        let b = Batch::documents(&[vec![1, 2, 3], vec![4]], &Device::Cpu).unwrap();
        assert_eq!(b.loss_mask(), &[1, 1, 1, 1, 0, 0]);
        assert_eq!(b.num_targets(), 2);
        assert!(b.response_start().is_err());
    }
}
