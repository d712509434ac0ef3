//! The training loops: losses fall, SFT writes per-epoch models and validation losses, and a run
//! stopped, saved and resumed ends with bit-identical weights to an uninterrupted one.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use candle_core::Device;
use model::lm::CausalLm;
use model::params::Params;
use model::tokenizer::EncodedPair;
use model::train::{PretrainConfig, RunDir, SftConfig, TrainConfig, TrainEvent, no_observer, pretrain, sft};
use model::{LlamaConfig, Preset};

const VOCAB: usize = 40;

fn cfg() -> LlamaConfig {
    LlamaConfig::preset(Preset::Smoke, VOCAB, 64)
}

fn values(p: &Params) -> BTreeMap<String, Vec<f32>> {
    p.iter().map(|(k, v)| (k.clone(), v.flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect()
}

/// A learnable stream: counting runs with a little noise.
fn stream(n: usize) -> Vec<u32> {
    let mut x = 12345u64;
    (0..n)
        .map(|i| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            if (x >> 60) == 0 { ((x >> 33) % VOCAB as u64) as u32 } else { (i % 17) as u32 + 3 }
        })
        .collect()
}

fn pairs(n: usize) -> Vec<EncodedPair> {
    (0..n)
        .map(|i| {
            let a = (i % 7) as u32 + 3;
            let prompt = [1, a, a + 1, 2];
            let response = [a + 10, a + 11, a + 12, 0];
            EncodedPair { prompt: prompt[..2 + i % 3].to_vec(), response: response[(i % 2)..].to_vec() }
        })
        .collect()
}

fn train_cfg() -> TrainConfig {
    TrainConfig {
        seed: 11,
        lr: 3e-3,
        warmup_steps: 2,
        batch_size: 3,
        grad_accum: 2,
        dropout: Some(0.1),
        ..TrainConfig::default()
    }
}

fn stop_at(step: u64) -> impl FnMut(&TrainEvent<'_>) -> ControlFlow<()> {
    move |e| match e {
        TrainEvent::Step(m) if m.step == step => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    }
}

#[test]
fn pretraining_resumes_bit_for_bit() {
    let toks = stream(1200);
    let pc = PretrainConfig { train: train_cfg(), seq_len: 16, steps: 6 };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let run = |d| RunDir { dir: d, tokenizer: None, format: None };

    let a = CausalLm::init(&cfg(), 1, &Device::Cpu).unwrap();
    let mut losses = vec![];
    let ra = pretrain(&a, &toks, &pc, Some(run(da.path())), &mut |e| {
        if let TrainEvent::Step(m) = e {
            assert!(m.loss.is_finite() && m.grad_norm > 0.0 && m.tokens > 0 && m.lr > 0.0);
            losses.push(m.loss);
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!((ra.steps, ra.steps_this_run, ra.stopped), (6, 6, false));
    assert!(losses.last() < losses.first(), "{losses:?}");

    let b = CausalLm::init(&cfg(), 1, &Device::Cpu).unwrap();
    let rb = pretrain(&b, &toks, &pc, Some(run(db.path())), &mut stop_at(4)).unwrap();
    assert_eq!((rb.steps, rb.stopped), (4, true));
    // A fresh process: different initial weights, everything comes from the checkpoint.
    let c = CausalLm::init(&cfg(), 99, &Device::Cpu).unwrap();
    let rc = pretrain(&c, &toks, &pc, Some(run(db.path())), &mut no_observer).unwrap();
    assert_eq!((rc.steps, rc.steps_this_run, rc.resumed_from_step), (6, 2, Some(4)));
    assert_eq!(values(a.params()), values(c.params()));
    // The finished run's checkpoint loads as a model directory.
    let loaded = CausalLm::load(&db.path().join("checkpoint"), &Device::Cpu).unwrap();
    assert_eq!(values(loaded.params()), values(a.params()));
}

#[test]
fn sft_keeps_epochs_records_validation_and_resumes_bit_for_bit() {
    let (train, val) = (pairs(10), pairs(4));
    // 10 pairs in micro-batches of 3 -> 4 micro-batches, 2 per update -> 2 updates per epoch.
    let sc = SftConfig { train: train_cfg(), epochs: 3 };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let run = |d| RunDir { dir: d, tokenizer: None, format: None };

    let a = CausalLm::init(&cfg(), 2, &Device::Cpu).unwrap();
    let ra = sft(&a, &train, &val, &sc, Some(run(da.path())), &mut no_observer).unwrap();
    assert_eq!(ra.steps, 6);
    assert_eq!(ra.val_losses.iter().map(|v| v.0).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(ra.val_losses[2].1 < ra.val_losses[0].1, "{:?}", ra.val_losses);
    assert_eq!(ra.epoch_dirs.len(), 3);
    let e1 = CausalLm::load(&ra.epoch_dirs[0], &Device::Cpu).unwrap();
    assert_ne!(values(e1.params()), values(a.params()));
    let last = CausalLm::load(&ra.epoch_dirs[2], &Device::Cpu).unwrap();
    assert_eq!(values(last.params()), values(a.params()));

    // Stop mid-epoch (after update 3 of 6), resume in a fresh model.
    let b = CausalLm::init(&cfg(), 2, &Device::Cpu).unwrap();
    let rb = sft(&b, &train, &val, &sc, Some(run(db.path())), &mut stop_at(3)).unwrap();
    assert_eq!((rb.steps, rb.stopped), (3, true));
    let c = CausalLm::init(&cfg(), 7, &Device::Cpu).unwrap();
    let rc = sft(&c, &train, &val, &sc, Some(run(db.path())), &mut no_observer).unwrap();
    assert_eq!((rc.steps, rc.steps_this_run), (6, 3));
    assert_eq!(values(a.params()), values(c.params()));
    assert_eq!(rc.val_losses, ra.val_losses);
    assert_eq!(rc.epoch_dirs.len(), 3);
}

#[test]
fn sft_without_dropout_or_directory_and_with_a_frozen_model() {
    let lm = CausalLm::init(&cfg(), 3, &Device::Cpu).unwrap();
    let sc = SftConfig { train: TrainConfig { dropout: Some(0.0), grad_accum: 1, ..train_cfg() }, epochs: 1 };
    let r = sft(&lm, &pairs(6), &[], &sc, None, &mut no_observer).unwrap();
    assert_eq!(r.steps, 2);
    assert!(r.val_losses.is_empty() && r.epoch_dirs.is_empty());
    let frozen = lm.frozen().unwrap();
    assert!(sft(&frozen, &pairs(6), &[], &sc, None, &mut no_observer).is_err());
}

#[test]
fn a_checkpoint_of_another_run_is_refused() {
    let toks = stream(800);
    let pc = PretrainConfig { train: train_cfg(), seq_len: 16, steps: 2 };
    let d = tempfile::tempdir().unwrap();
    let run = RunDir { dir: d.path(), tokenizer: None, format: None };
    let a = CausalLm::init(&cfg(), 1, &Device::Cpu).unwrap();
    pretrain(&a, &toks, &pc, Some(run), &mut no_observer).unwrap();
    let other = PretrainConfig { train: TrainConfig { seed: 12, ..train_cfg() }, ..pc.clone() };
    let e = pretrain(&a, &toks, &other, Some(run), &mut no_observer).unwrap_err().to_string();
    assert!(e.contains("another run"), "{e}");
    // Changing only the checkpoint interval is fine.
    let same = PretrainConfig { train: TrainConfig { checkpoint_every: 1, ..train_cfg() }, ..pc };
    assert_eq!(pretrain(&a, &toks, &same, Some(run), &mut no_observer).unwrap().steps_this_run, 0);
}

/// The loop asks its observer for files while it fills each checkpoint, and they land inside it; an
/// observer that cannot write them fails that checkpoint and leaves the previous one whole.
#[test]
fn the_observers_files_are_written_into_each_checkpoint() {
    let toks = stream(1200);
    let pc = PretrainConfig { train: TrainConfig { checkpoint_every: 2, ..train_cfg() }, seq_len: 16, steps: 6 };
    let d = tempfile::tempdir().unwrap();
    let run = RunDir { dir: d.path(), tokenizer: None, format: None };
    let ck = d.path().join("checkpoint");
    let read = || {
        let state = model::train::checkpoint::read_state(&ck).unwrap().step;
        (state, std::fs::read_to_string(ck.join("seen.txt")).unwrap())
    };

    // Writes "<checkpoint step>/<last step seen>" into each checkpoint, or fails the one at `fail_at`.
    fn observer(fail_at: u64) -> impl FnMut(&TrainEvent<'_>) -> ControlFlow<()> {
        let mut seen = 0;
        move |e| match e {
            TrainEvent::Step(m) => {
                seen = m.step;
                ControlFlow::Continue(())
            }
            TrainEvent::CheckpointFiles { step, .. } if *step == fail_at => ControlFlow::Break(()),
            TrainEvent::CheckpointFiles { step, dir } => {
                std::fs::write(dir.join("seen.txt"), format!("{step}/{seen}")).unwrap();
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Continue(()),
        }
    }
    let lm = CausalLm::init(&cfg(), 1, &Device::Cpu).unwrap();
    // Checkpoints at 2 and 4; the one at 4 fails.
    let e = pretrain(&lm, &toks, &pc, Some(run), &mut observer(4)).unwrap_err().to_string();
    assert!(e.contains("could not write its files"), "{e}");
    assert_eq!(read(), (2, "2/2".to_string()), "the previous checkpoint, with its own files");
    // Resumed, it writes them at 4 and at the end.
    let lm = CausalLm::init(&cfg(), 1, &Device::Cpu).unwrap();
    let r = pretrain(&lm, &toks, &pc, Some(run), &mut observer(0)).unwrap();
    assert_eq!(r.resumed_from_step, Some(2));
    assert_eq!(read(), (6, "6/6".to_string()));
}
