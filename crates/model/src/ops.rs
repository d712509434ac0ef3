//! Differentiable fused ops: RMSNorm, rotary embedding, masked softmax, SwiGLU, and the per-token
//! log-probability / entropy of a categorical distribution.
//!
//! candle-nn's fused kernels (`ops::rms_norm`, `ops::softmax_last_dim`, `rotary_emb::rope*`) record
//! no backward op, so gradients silently stop at them. Each op here is a `CustomOp` with a forward
//! AND a backward kernel on CPU (the hot path on our machines), and falls back to a composition of
//! differentiable candle ops on any other device. The tests check each kernel against its composed
//! version, in forward and backward.
//!
//! Kernels parallelise over rows with rayon; every reduction runs in a fixed order that does not
//! depend on the number of threads, so results are bit-for-bit reproducible.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, DType, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

type CResult<T> = candle_core::Result<T>;

/// Below this many elements a kernel runs on the calling thread (decode steps are tiny).
const PAR_MIN: usize = 1 << 14;

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> CResult<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: expected a contiguous f32 input"),
    }
}

fn contiguous_u32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> CResult<&'a [u32]> {
    let data = s.as_slice::<u32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: expected a contiguous u32 input"),
    }
}

/// Runs `f(row_index, out_row)` over the rows of `out`, in parallel when the work is large enough.
fn for_rows(out: &mut [f32], row: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(row).enumerate().for_each(|(i, o)| f(i, o));
    } else {
        out.chunks_mut(row).enumerate().for_each(|(i, o)| f(i, o));
    }
}

fn use_kernel(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

// ------------------------------------------------------------------------------------------------
// RMSNorm
// ------------------------------------------------------------------------------------------------

/// `x * rsqrt(mean(x^2, -1) + eps) * weight` over the last dimension, differentiable in `x` and
/// `weight`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> CResult<Tensor> {
    if use_kernel(x) {
        x.contiguous()?.apply_op2(&weight.contiguous()?, RmsNorm { eps: eps as f32 })
    } else {
        rms_norm_composed(x, weight, eps)
    }
}

/// The reference composition of [`rms_norm`].
pub fn rms_norm_composed(x: &Tensor, weight: &Tensor, eps: f64) -> CResult<Tensor> {
    let r = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&r)?.broadcast_mul(weight)
}

struct RmsNorm {
    eps: f32,
}

fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let ss: f32 = x.iter().map(|v| v * v).sum();
    1.0 / (ss / x.len() as f32 + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let w = contiguous_f32(s2, l2, self.name())?;
        let d = w.len();
        if l1.dims().last() != Some(&d) {
            candle_core::bail!("rms-norm: weight has {d} elements but x is {:?}", l1.dims());
        }
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, d, |i, o| {
            let xr = &x[i * d..(i + 1) * d];
            let r = inv_rms(xr, self.eps);
            for j in 0..d {
                o[j] = xr[j] * r * w[j];
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let both = x.apply_op3_no_bwd(w, &g, &RmsNormBwd { eps: self.eps })?;
        let n = x.elem_count();
        let dx = both.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = both.narrow(0, n, w.elem_count())?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw)))
    }
}

/// Returns `[dx (flattened) | dw]` in one buffer.
struct RmsNormBwd {
    eps: f32,
}

/// Rows per partial sum of `dw`; fixed so that the summation order does not depend on threads.
const DW_CHUNK: usize = 64;

impl CustomOp3 for RmsNormBwd {
    fn name(&self) -> &'static str {
        "rms-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let w = contiguous_f32(s2, l2, self.name())?;
        let g = contiguous_f32(s3, l3, self.name())?;
        let d = w.len();
        let n = x.len();
        let rows = n / d;
        let mut out = vec![0f32; n + d];
        let (dx, dw) = out.split_at_mut(n);
        // dx = r * (w*g - xhat * mean(xhat * w * g)), with xhat = x * r.
        for_rows(dx, d, |i, o| {
            let (xr, gr) = (&x[i * d..(i + 1) * d], &g[i * d..(i + 1) * d]);
            let r = inv_rms(xr, self.eps);
            let mut dot = 0f32;
            for j in 0..d {
                dot += xr[j] * r * w[j] * gr[j];
            }
            let c = dot / d as f32;
            for j in 0..d {
                o[j] = r * (w[j] * gr[j] - xr[j] * r * c);
            }
        });
        // dw = sum over rows of g * xhat, summed chunk by chunk in a fixed order.
        let chunks: Vec<Vec<f32>> = (0..rows.div_ceil(DW_CHUNK))
            .into_par_iter()
            .map(|c| {
                let mut acc = vec![0f32; d];
                for i in c * DW_CHUNK..((c + 1) * DW_CHUNK).min(rows) {
                    let (xr, gr) = (&x[i * d..(i + 1) * d], &g[i * d..(i + 1) * d]);
                    let r = inv_rms(xr, self.eps);
                    for j in 0..d {
                        acc[j] += gr[j] * xr[j] * r;
                    }
                }
                acc
            })
            .collect();
        for acc in chunks {
            for j in 0..d {
                dw[j] += acc[j];
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(n + d)))
    }
}

// ------------------------------------------------------------------------------------------------
// Rotary embedding (HF Llama `rotate_half` convention), fused with the head transpose
// ------------------------------------------------------------------------------------------------

/// Rotates `x` `[B, T, H, Dh]` by the angles whose cosines and sines are `cos`, `sin` `[B, T, Dh/2]`,
/// and returns it transposed to `[B, H, T, Dh]` (the layout attention wants).
///
/// HF convention: with `x1 = x[.., :Dh/2]`, `x2 = x[.., Dh/2:]`,
/// `out = [x1*cos - x2*sin, x2*cos + x1*sin]`. Differentiable in `x` only.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> CResult<Tensor> {
    if use_kernel(x) {
        x.contiguous()?.apply_op3(&cos.contiguous()?, &sin.contiguous()?, Rope { inverse: false })
    } else {
        rope_composed(x, cos, sin)
    }
}

/// The reference composition of [`rope`].
pub fn rope_composed(x: &Tensor, cos: &Tensor, sin: &Tensor) -> CResult<Tensor> {
    let x = x.transpose(1, 2)?; // (B, H, T, Dh)
    let half = x.dim(D::Minus1)? / 2;
    let cos = cos.unsqueeze(1)?; // (B, 1, T, Dh/2)
    let sin = sin.unsqueeze(1)?;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let o1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
    let o2 = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
    Tensor::cat(&[o1, o2], D::Minus1)?.contiguous()
}

/// Forward: `[B, T, H, Dh]` -> `[B, H, T, Dh]`, rotating by +angle. Inverse (the backward pass):
/// `[B, H, T, Dh]` -> `[B, T, H, Dh]`, rotating by -angle (the transpose of a rotation).
struct Rope {
    inverse: bool,
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "rope-hf"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let cos = contiguous_f32(s2, l2, self.name())?;
        let sin = contiguous_f32(s3, l3, self.name())?;
        let (b, d1, d2, dh) = l1.shape().dims4()?;
        // Forward input is (B, T, H, Dh); inverse input is (B, H, T, Dh).
        let (t, h) = if self.inverse { (d2, d1) } else { (d1, d2) };
        let half = dh / 2;
        if cos.len() != b * t * half || sin.len() != cos.len() {
            candle_core::bail!("rope: cos/sin must be [B, T, Dh/2] = [{b}, {t}, {half}]");
        }
        let sign = if self.inverse { -1f32 } else { 1f32 };
        let mut out = vec![0f32; x.len()];
        // One output row of Dh values per (b, out_d1, out_d2).
        for_rows(&mut out, dh, |row, o| {
            let (bi, rest) = (row / (t * h), row % (t * h));
            // Output layout is (B, H, T, Dh) forward and (B, T, H, Dh) inverse.
            let (ti, hi) = if self.inverse { (rest / h, rest % h) } else { (rest % t, rest / t) };
            let src = if self.inverse { ((bi * h + hi) * t + ti) * dh } else { ((bi * t + ti) * h + hi) * dh };
            let cs = (bi * t + ti) * half;
            let (c, s) = (&cos[cs..cs + half], &sin[cs..cs + half]);
            let xr = &x[src..src + dh];
            for j in 0..half {
                let (x1, x2) = (xr[j], xr[j + half]);
                let sj = sign * s[j];
                o[j] = x1 * c[j] - x2 * sj;
                o[j + half] = x2 * c[j] + x1 * sj;
            }
        });
        let shape = if self.inverse { Shape::from((b, t, h, dh)) } else { Shape::from((b, h, t, dh)) };
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = grad.contiguous()?.apply_op3_no_bwd(cos, sin, &Rope { inverse: true })?;
        Ok((Some(dx), None, None))
    }
}

// ------------------------------------------------------------------------------------------------
// Scaled, causally- and padding-masked softmax for attention
// ------------------------------------------------------------------------------------------------

/// Which keys each query may attend to.
///
/// Key `j` is visible from the query at absolute column `i` iff `j <= i` and the key is a real
/// token (`key_valid[b][j] == 1`). A query always sees itself, so a padding query has one visible
/// key and its (ignored) output stays finite: no NaN reaches the backward pass.
#[derive(Debug, Clone)]
pub struct AttnMask {
    /// `[B, Tk]` row-major: 1 for a real token, 0 for padding.
    pub key_valid: Arc<Vec<u8>>,
    pub batch: usize,
    /// Number of key columns.
    pub keys: usize,
    /// Absolute column of the first query (non-zero when decoding with a KV cache).
    pub query_offset: usize,
}

impl AttnMask {
    /// The additive mask `[B, 1, R, Tk]` (0 or -inf) for `R = groups * tq` query rows.
    fn additive(&self, groups: usize, tq: usize, device: &candle_core::Device) -> CResult<Tensor> {
        let (b, tk) = (self.batch, self.keys);
        let mut m = vec![0f32; b * groups * tq * tk];
        for bi in 0..b {
            for r in 0..groups * tq {
                let qi = self.query_offset + r % tq;
                for j in 0..tk {
                    if !self.visible(bi, qi, j) {
                        m[((bi * groups * tq) + r) * tk + j] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        Tensor::from_vec(m, (b, 1, groups * tq, tk), device)
    }

    #[inline]
    fn visible(&self, b: usize, qi: usize, j: usize) -> bool {
        j == qi || (j < qi && self.key_valid[b * self.keys + j] != 0)
    }
}

/// `softmax(scores * scale + mask)` over the last dimension of `scores` `[B, G, R, Tk]`, where the
/// `R = n * tq` rows of a group are `n` blocks of `tq` consecutive queries (grouped-query attention
/// stacks the heads that share a key/value head along `R`). Differentiable in `scores`.
pub fn masked_softmax(scores: &Tensor, mask: &AttnMask, tq: usize, scale: f64) -> CResult<Tensor> {
    if use_kernel(scores) {
        scores.contiguous()?.apply_op1(MaskedSoftmax { mask: mask.clone(), tq, scale: scale as f32 })
    } else {
        masked_softmax_composed(scores, mask, tq, scale)
    }
}

/// The reference composition of [`masked_softmax`].
pub fn masked_softmax_composed(scores: &Tensor, mask: &AttnMask, tq: usize, scale: f64) -> CResult<Tensor> {
    let r = scores.dim(2)?;
    let add = mask.additive(r / tq, tq, scores.device())?;
    let s = (scores * scale)?.broadcast_add(&add)?;
    candle_nn::ops::softmax(&s, D::Minus1)
}

struct MaskedSoftmax {
    mask: AttnMask,
    tq: usize,
    scale: f32,
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let (b, g, r, tk) = l.shape().dims4()?;
        if b != self.mask.batch || tk != self.mask.keys {
            candle_core::bail!("masked-softmax: scores {:?} do not fit the mask ({b} x {tk})", l.dims());
        }
        let mut out = vec![0f32; x.len()];
        let rows_per_batch = g * r;
        for_rows(&mut out, tk, |row, o| {
            let bi = row / rows_per_batch;
            let qi = self.mask.query_offset + (row % r) % self.tq;
            let xr = &x[row * tk..(row + 1) * tk];
            // Keys beyond the query are never visible, so the row ends at qi.
            let end = (qi + 1).min(tk);
            let mut max = f32::NEG_INFINITY;
            for (j, &x) in xr.iter().enumerate().take(end) {
                if self.mask.visible(bi, qi, j) {
                    max = max.max(x * self.scale);
                }
            }
            let mut sum = 0f32;
            for j in 0..end {
                if self.mask.visible(bi, qi, j) {
                    let e = (xr[j] * self.scale - max).exp();
                    o[j] = e;
                    sum += e;
                }
            }
            let inv = 1.0 / sum;
            for v in &mut o[..end] {
                *v *= inv;
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let g = grad.contiguous()?;
        Ok(Some(res.apply_op2_no_bwd(&g, &SoftmaxBwd { scale: self.scale })?))
    }
}

/// `dS = scale * P * (dP - sum(dP * P))` row by row; masked entries have `P = 0`.
struct SoftmaxBwd {
    scale: f32,
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "masked-softmax-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> CResult<(CpuStorage, Shape)> {
        let p = contiguous_f32(s1, l1, self.name())?;
        let g = contiguous_f32(s2, l2, self.name())?;
        let tk = *l1.dims().last().unwrap_or(&1);
        let mut out = vec![0f32; p.len()];
        for_rows(&mut out, tk, |row, o| {
            let (pr, gr) = (&p[row * tk..(row + 1) * tk], &g[row * tk..(row + 1) * tk]);
            let dot: f32 = pr.iter().zip(gr).map(|(a, b)| a * b).sum();
            for j in 0..tk {
                o[j] = self.scale * pr[j] * (gr[j] - dot);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

// ------------------------------------------------------------------------------------------------
// SwiGLU
// ------------------------------------------------------------------------------------------------

/// `silu(gate) * up`, differentiable in both.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> CResult<Tensor> {
    if use_kernel(gate) { gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu) } else { swiglu_composed(gate, up) }
}

/// The reference composition of [`swiglu`].
pub fn swiglu_composed(gate: &Tensor, up: &Tensor) -> CResult<Tensor> {
    gate.silu()? * up
}

struct SwiGlu;

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> CResult<(CpuStorage, Shape)> {
        let a = contiguous_f32(s1, l1, self.name())?;
        let u = contiguous_f32(s2, l2, self.name())?;
        if l1.shape() != l2.shape() {
            candle_core::bail!("swiglu: gate {:?} and up {:?} differ", l1.dims(), l2.dims());
        }
        let row = *l1.dims().last().unwrap_or(&1);
        let mut out = vec![0f32; a.len()];
        for_rows(&mut out, row, |i, o| {
            for (j, o) in o.iter_mut().enumerate() {
                let x = a[i * row + j];
                *o = x * sigmoid(x) * u[i * row + j];
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let both = gate.apply_op3_no_bwd(up, &g, &SwiGluBwd)?;
        let n = gate.elem_count();
        let dg = both.narrow(0, 0, n)?.reshape(gate.shape())?;
        let du = both.narrow(0, n, n)?.reshape(up.shape())?;
        Ok((Some(dg), Some(du)))
    }
}

/// Returns `[d gate | d up]` in one buffer.
struct SwiGluBwd;

impl CustomOp3 for SwiGluBwd {
    fn name(&self) -> &'static str {
        "swiglu-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let a = contiguous_f32(s1, l1, self.name())?;
        let u = contiguous_f32(s2, l2, self.name())?;
        let g = contiguous_f32(s3, l3, self.name())?;
        let n = a.len();
        let row = *l1.dims().last().unwrap_or(&1);
        let mut out = vec![0f32; 2 * n];
        let (da, du) = out.split_at_mut(n);
        let work = |(i, (da, du)): (usize, (&mut [f32], &mut [f32]))| {
            for j in 0..da.len() {
                let k = i * row + j;
                let s = sigmoid(a[k]);
                let silu = a[k] * s;
                du[j] = g[k] * silu;
                da[j] = g[k] * u[k] * s * (1.0 + a[k] * (1.0 - s));
            }
        };
        if n >= PAR_MIN {
            da.par_chunks_mut(row).zip(du.par_chunks_mut(row)).enumerate().for_each(work);
        } else {
            da.chunks_mut(row).zip(du.chunks_mut(row)).enumerate().for_each(work);
        }
        Ok((CpuStorage::F32(out), Shape::from(2 * n)))
    }
}

// ------------------------------------------------------------------------------------------------
// Log-probability of chosen tokens, and entropy
// ------------------------------------------------------------------------------------------------

/// `log_softmax(logits)[n, targets[n]]` for logits `[N, V]` and targets `[N]` (u32): the per-token
/// log-probability, differentiable in `logits`. The backward kernel recomputes the softmax rather
/// than storing it, so no `[N, V]` log-probability tensor is ever kept.
pub fn token_logprobs(logits: &Tensor, targets: &Tensor) -> CResult<Tensor> {
    if use_kernel(logits) {
        logits.contiguous()?.apply_op2(&targets.contiguous()?, TokenLogprob)
    } else {
        token_logprobs_composed(logits, targets)
    }
}

/// The reference composition of [`token_logprobs`].
pub fn token_logprobs_composed(logits: &Tensor, targets: &Tensor) -> CResult<Tensor> {
    let lsm = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    lsm.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)
}

/// Entropy `-sum p log p` of `softmax(logits)` per row of `[N, V]`, differentiable in `logits`.
pub fn entropy(logits: &Tensor) -> CResult<Tensor> {
    if use_kernel(logits) { logits.contiguous()?.apply_op1(Entropy) } else { entropy_composed(logits) }
}

/// The reference composition of [`entropy`].
pub fn entropy_composed(logits: &Tensor) -> CResult<Tensor> {
    let lsm = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    (lsm.exp()? * &lsm)?.sum(D::Minus1)?.neg()
}

/// `(max, log-sum-exp)` of a row.
fn lse(x: &[f32]) -> (f32, f32) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = x.iter().map(|v| (v - max).exp()).sum();
    (max, max + sum.ln())
}

struct TokenLogprob;

impl CustomOp2 for TokenLogprob {
    fn name(&self) -> &'static str {
        "token-logprob"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let t = contiguous_u32(s2, l2, self.name())?;
        let (n, v) = l1.shape().dims2()?;
        if t.len() != n {
            candle_core::bail!("token-logprob: {n} rows of logits but {} targets", t.len());
        }
        if let Some(&bad) = t.iter().find(|&&t| t as usize >= v) {
            candle_core::bail!("token-logprob: target {bad} is outside the vocabulary of {v}");
        }
        let out: Vec<f32> = (0..n)
            .into_par_iter()
            .with_min_len(16)
            .map(|i| {
                let xr = &x[i * v..(i + 1) * v];
                xr[t[i] as usize] - lse(xr).1
            })
            .collect();
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        Ok((Some(logits.apply_op3_no_bwd(targets, &g, &TokenLogprobBwd)?), None))
    }
}

/// `d logits = g * (onehot(target) - softmax(logits))`.
struct TokenLogprobBwd;

impl CustomOp3 for TokenLogprobBwd {
    fn name(&self) -> &'static str {
        "token-logprob-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let t = contiguous_u32(s2, l2, self.name())?;
        let g = contiguous_f32(s3, l3, self.name())?;
        let (_, v) = l1.shape().dims2()?;
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, v, |i, o| {
            let xr = &x[i * v..(i + 1) * v];
            let gi = g[i];
            if gi == 0.0 {
                return;
            }
            let (_, l) = lse(xr);
            for j in 0..v {
                o[j] = -gi * (xr[j] - l).exp();
            }
            o[t[i] as usize] += gi;
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

struct Entropy;

impl CustomOp1 for Entropy {
    fn name(&self) -> &'static str {
        "entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let (n, v) = l.shape().dims2()?;
        let out: Vec<f32> =
            (0..n).into_par_iter().with_min_len(16).map(|i| row_entropy(&x[i * v..(i + 1) * v])).collect();
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(&self, logits: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        Ok(Some(logits.apply_op2_no_bwd(&grad.contiguous()?, &EntropyBwd)?))
    }
}

fn row_entropy(x: &[f32]) -> f32 {
    let (_, l) = lse(x);
    -x.iter()
        .map(|&v| {
            let lp = v - l;
            lp.exp() * lp
        })
        .sum::<f32>()
}

/// `d logits = -g * p * (log p + H)`.
struct EntropyBwd;

impl CustomOp2 for EntropyBwd {
    fn name(&self) -> &'static str {
        "entropy-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let g = contiguous_f32(s2, l2, self.name())?;
        let (_, v) = l1.shape().dims2()?;
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, v, |i, o| {
            let xr = &x[i * v..(i + 1) * v];
            let (_, l) = lse(xr);
            let h = row_entropy(xr);
            for j in 0..v {
                let lp = xr[j] - l;
                o[j] = -g[i] * lp.exp() * (lp + h);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

// ------------------------------------------------------------------------------------------------
// Linear layer without bias: y = x W^T
// ------------------------------------------------------------------------------------------------

/// `x @ weight^T` for `x` `[N, in]` and `weight` `[out, in]` (PyTorch's layout), differentiable in
/// both. On CPU this calls the `gemm` kernels directly: candle's matmul looks up the thread count
/// on every call (reading `/proc/cpuinfo` unless `RAYON_NUM_THREADS` is set), which dominated
/// small decode steps, and its weight gradient arrives transposed, costing a strided copy. Small
/// products run on the calling thread, so decode steps wake no thread pool.
pub fn linear(x: &Tensor, weight: &Tensor) -> CResult<Tensor> {
    if use_kernel(x) { x.contiguous()?.apply_op2(&weight.contiguous()?, Linear) } else { linear_composed(x, weight) }
}

/// The reference composition of [`linear`].
pub fn linear_composed(x: &Tensor, weight: &Tensor) -> CResult<Tensor> {
    x.matmul(&weight.t()?)
}

/// Products with fewer multiply-adds than this run single-threaded.
const GEMM_PAR_MIN: usize = 1 << 18;

/// `dst (m x n) = lhs (m x k) * rhs (k x n)`, operands given with (row, column) strides.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    lhs: &[f32],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    rhs_cs: usize,
    parallel: bool,
) {
    assert!(dst.len() >= m * n, "gemm: destination too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst[..m * n].fill(0.0);
        return;
    }
    assert!(lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs, "gemm: lhs too small");
    assert!(rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs, "gemm: rhs too small");
    let par = if parallel && m * n * k >= GEMM_PAR_MIN && rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // Safety: the asserts above bound every address the strides reach; dst does not alias the
    // operands (it is a distinct &mut slice).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

struct Linear;

/// Up to this many rows, [`linear`] (and attention) compute dot products instead of calling gemm.
pub(crate) const MATVEC_MAX_ROWS: usize = 4;

/// A dot product with 16 independent partial sums (so it vectorises), added in a fixed order.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (xa, xb) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += xa[l] * xb[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let w = contiguous_f32(s2, l2, self.name())?;
        let (n, k) = l1.shape().dims2()?;
        let (out, k2) = l2.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("linear: x {:?} does not fit weight {:?}", l1.dims(), l2.dims());
        }
        let mut y = vec![0f32; n * out];
        if n <= MATVEC_MAX_ROWS {
            // Decode steps: a few rows. gemm would repack all of `w` for them; dot products read it once.
            for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(out)) {
                for (yj, wr) in yr.iter_mut().zip(w.chunks_exact(k)) {
                    *yj = dot(xr, wr);
                }
            }
        } else {
            gemm_f32(n, out, k, &mut y, x, k, 1, w, 1, k, true); // x (N, in) @ w^T (in, out)
        }
        Ok((CpuStorage::F32(y), Shape::from((n, out))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let (n, k) = x.dims2()?;
        let out = w.dim(0)?;
        let (dx, dw) = {
            let (sx, lx) = x.storage_and_layout();
            let (sw, lw) = w.storage_and_layout();
            let (sg, lg) = g.storage_and_layout();
            let (Storage::Cpu(sx), Storage::Cpu(sw), Storage::Cpu(sg)) = (&*sx, &*sw, &*sg) else {
                candle_core::bail!("linear backward runs on the CPU only");
            };
            let xs = contiguous_f32(sx, lx, "linear-bwd")?;
            let ws = contiguous_f32(sw, lw, "linear-bwd")?;
            let gs = contiguous_f32(sg, lg, "linear-bwd")?;
            let mut dx = vec![0f32; n * k];
            gemm_f32(n, k, out, &mut dx, gs, out, 1, ws, k, 1, true); // g (N, out) @ w (out, in)
            let mut dw = vec![0f32; out * k];
            gemm_f32(out, k, n, &mut dw, gs, 1, out, xs, k, 1, true); // g^T (out, N) @ x (N, in)
            (dx, dw)
        };
        let dev = x.device();
        Ok((Some(Tensor::from_vec(dx, (n, k), dev)?), Some(Tensor::from_vec(dw, (out, k), dev)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{max_diff, randn};
    use candle_core::{Device, Var};

    /// Checks forward values and the gradients of every input against the composed version, using
    /// a random linear functional of the output as the loss.
    fn check(
        inputs: &[Tensor],
        fused: impl Fn(&[Tensor]) -> CResult<Tensor>,
        composed: impl Fn(&[Tensor]) -> CResult<Tensor>,
        grad_of: &[bool],
    ) {
        let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let yf = fused(&ts).unwrap();
        let yc = composed(&ts).unwrap();
        assert!(max_diff(&yf, &yc) < 1e-5, "forward differs by {}", max_diff(&yf, &yc));
        let probe = randn(yf.dims(), 99);
        let gf = (&yf * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (&yc * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        for (i, t) in ts.iter().enumerate() {
            if !grad_of[i] {
                continue;
            }
            let a = gf.get(t).expect("fused op gave no gradient");
            let b = gc.get(t).expect("composed op gave no gradient");
            let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap().max(1.0);
            assert!(max_diff(a, b) / scale < 2e-5, "grad of input {i} differs by {}", max_diff(a, b));
        }
    }

    #[test]
    fn rms_norm_matches_composed() {
        let x = randn(&[3, 5, 16], 1);
        let w = randn(&[16], 2);
        check(&[x, w], |t| rms_norm(&t[0], &t[1], 1e-5), |t| rms_norm_composed(&t[0], &t[1], 1e-5), &[true, true]);
        // Large enough to take the parallel path and several dw chunks.
        let x = randn(&[300, 64], 3);
        let w = randn(&[64], 4);
        check(&[x, w], |t| rms_norm(&t[0], &t[1], 1e-6), |t| rms_norm_composed(&t[0], &t[1], 1e-6), &[true, true]);
    }

    #[test]
    fn rope_matches_composed() {
        let (b, t, h, dh) = (2, 7, 3, 8);
        let x = randn(&[b, t, h, dh], 5);
        let ang = randn(&[b, t, dh / 2], 6);
        let (cos, sin) = (ang.cos().unwrap(), ang.sin().unwrap());
        check(
            &[x, cos, sin],
            |t| rope(&t[0], &t[1], &t[2]),
            |t| rope_composed(&t[0], &t[1], &t[2]),
            &[true, false, false],
        );
    }

    #[test]
    fn masked_softmax_matches_composed() {
        // Two sequences, the first left-padded by 2 and the second right-padded by 1; 2 key/value
        // groups of 3 stacked query heads; also a decode-style offset query block.
        let (b, g, n, tq) = (2, 2, 3, 6);
        let key_valid = Arc::new(vec![0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
        let mask = AttnMask { key_valid: key_valid.clone(), batch: b, keys: tq, query_offset: 0 };
        let s = randn(&[b, g, n * tq, tq], 7);
        check(
            &[s],
            |t| masked_softmax(&t[0], &mask, tq, 0.3),
            |t| masked_softmax_composed(&t[0], &mask, tq, 0.3),
            &[true],
        );
        let mask = AttnMask { key_valid, batch: b, keys: tq, query_offset: 4 };
        let s = randn(&[b, g, n * 2, tq], 8);
        check(
            &[s],
            |t| masked_softmax(&t[0], &mask, 2, 0.3),
            |t| masked_softmax_composed(&t[0], &mask, 2, 0.3),
            &[true],
        );
    }

    #[test]
    fn swiglu_matches_composed() {
        let a = randn(&[4, 9, 40], 9);
        let u = randn(&[4, 9, 40], 10);
        check(&[a, u], |t| swiglu(&t[0], &t[1]), |t| swiglu_composed(&t[0], &t[1]), &[true, true]);
    }

    #[test]
    fn linear_matches_composed() {
        // Small (single-threaded) and large (parallel) products.
        for (n, k, out) in [(1, 37, 5), (3, 64, 9), (5, 7, 3), (300, 64, 48)] {
            let x = randn(&[n, k], 12);
            let w = randn(&[out, k], 13);
            check(&[x, w], |t| linear(&t[0], &t[1]), |t| linear_composed(&t[0], &t[1]), &[true, true]);
        }
    }

    #[test]
    fn token_logprobs_and_entropy_match_composed() {
        let logits = (randn(&[37, 50], 11) * 3.0).unwrap();
        let targets = Tensor::from_vec((0..37u32).map(|i| (i * 7) % 50).collect::<Vec<_>>(), 37, &Device::Cpu).unwrap();
        let tg = targets.clone();
        check(
            std::slice::from_ref(&logits),
            move |t| token_logprobs(&t[0], &targets),
            move |t| token_logprobs_composed(&t[0], &tg),
            &[true],
        );
        check(&[logits], |t| entropy(&t[0]), |t| entropy_composed(&t[0]), &[true]);
    }
}
