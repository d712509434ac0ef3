//! Deterministic data order: which examples make up micro-batch `g` of a run.
//!
//! The order is a pure function of the seed and the global micro-batch index, so a resumed run needs
//! only its step count to continue where it stopped.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// A permutation of `0..n` for `epoch`, the same for the same `(seed, epoch)` everywhere.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6461_7461_6f72_6465); // "dataorde"
    rng.set_stream(epoch);
    let mut v: Vec<usize> = (0..n).collect();
    v.shuffle(&mut rng);
    v
}

/// Joins documents into one token stream, each followed by `eos`.
pub fn concat_documents<S: AsRef<[u32]>>(docs: &[S], eos: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(docs.iter().map(|d| d.as_ref().len() + 1).sum());
    for d in docs {
        out.extend_from_slice(d.as_ref());
        out.push(eos);
    }
    out
}

/// Non-overlapping training windows over a token stream: window `i` is
/// `tokens[i * L .. i * L + L + 1]`, so consecutive windows share one token and every token but the
/// first is a target exactly once per epoch.
#[derive(Debug, Clone)]
pub struct Windows<'a> {
    tokens: &'a [u32],
    seq_len: usize,
}

impl<'a> Windows<'a> {
    pub fn new(tokens: &'a [u32], seq_len: usize) -> Self {
        Windows { tokens, seq_len }
    }

    pub fn len(&self) -> usize {
        self.tokens.len().saturating_sub(1).checked_div(self.seq_len).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> &'a [u32] {
        &self.tokens[i * self.seq_len..i * self.seq_len + self.seq_len + 1]
    }
}

/// Where global micro-batch `g` falls when each epoch has `per_epoch` micro-batches.
pub fn locate(g: u64, per_epoch: u64) -> (u64, u64) {
    (g / per_epoch.max(1), g % per_epoch.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_permutations_fixed_by_seed_and_epoch() {
        let a = epoch_order(50, 7, 0);
        assert_eq!(a, epoch_order(50, 7, 0));
        assert_ne!(a, epoch_order(50, 7, 1));
        assert_ne!(a, epoch_order(50, 8, 0));
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn windows_cover_every_target_once() {
        let toks: Vec<u32> = (0..11).collect();
        let w = Windows::new(&toks, 3);
        assert_eq!(w.len(), 3);
        assert_eq!(w.get(0), &[0, 1, 2, 3]);
        assert_eq!(w.get(2), &[6, 7, 8, 9]);
        assert_eq!(concat_documents(&[vec![1, 2], vec![3]], 0), vec![1, 2, 0, 3, 0]);
    }
}
