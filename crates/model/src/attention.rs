//! Fused causal attention with a backward kernel, for the CPU.
//!
//! The composed version (`softmax(q k^T * scale + mask) v` out of candle ops) materialises the
//! `[B, kv_heads, rows, keys]` score and probability tensors, and its backward allocates, zeroes
//! and accumulates several more of them: on a 2-core machine that memory traffic, not the
//! arithmetic, dominated a training step. This kernel works on one `(batch, kv head)` block at a
//! time, keeps the block's scores in a cache-sized scratch buffer, and recomputes them in the
//! backward pass (as flash attention does) instead of storing them. Blocks run in parallel with
//! rayon; each block's arithmetic is sequential, so results do not depend on the thread count.
//!
//! Layout: `q` is `[B, G, R, hd]` where the `R = n * tq` rows of a key/value head stack the `n`
//! query heads that share it (grouped-query attention), `k` and `v` are `[B, G, Tk, hd]` (a
//! narrowed KV cache is fine: only the last two dimensions must be contiguous). Masking follows
//! [`AttnMask`].

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::ops::{AttnMask, MATVEC_MAX_ROWS, dot, gemm_f32, masked_softmax};

type CResult<T> = candle_core::Result<T>;

/// Query rows per chunk: a chunk's scores (`CHUNK x keys`) stay in the L2 cache.
const CHUNK: usize = 64;

/// `softmax(q k^T * scale, masked) v`, differentiable in `q`, `k` and `v`. Uses the fused kernel
/// on CPU (f32) and the composed candle ops elsewhere.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &AttnMask, tq: usize, scale: f64) -> CResult<Tensor> {
    if q.device().is_cpu() && q.dtype() == DType::F32 {
        q.contiguous()?.apply_op3(k, v, FusedAttention { mask: mask.clone(), tq, scale: scale as f32 })
    } else {
        attention_composed(q, k, v, mask, tq, scale)
    }
}

/// The reference composition of [`attention`].
pub fn attention_composed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttnMask,
    tq: usize,
    scale: f64,
) -> CResult<Tensor> {
    let scores = q.matmul(&k.t()?)?; // (B, G, R, Tk)
    let p = masked_softmax(&scores, mask, tq, scale)?;
    p.matmul(v)
}

/// Where block `(b, g)` of a `[B, G, T, hd]` tensor starts; the last two dims must be contiguous.
fn block_offsets(l: &Layout, what: &str) -> CResult<(Vec<usize>, usize)> {
    let (b, g, t, hd) = l.shape().dims4()?;
    let s = l.stride();
    if s[3] != 1 || (t > 1 && s[2] != hd) {
        candle_core::bail!("attention: {what} {:?} with strides {s:?} is not contiguous per head", l.dims());
    }
    let offs = (0..b * g).map(|i| l.start_offset() + (i / g) * s[0] + (i % g) * s[1]).collect();
    Ok((offs, t))
}

fn f32_slice(s: &CpuStorage) -> CResult<&[f32]> {
    s.as_slice::<f32>()
}

/// `dst = lhs * rhs` on the calling thread (blocks already run in parallel).
#[allow(clippy::too_many_arguments)]
#[inline]
fn matmul(
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
) {
    gemm_f32(m, n, k, dst, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, false)
}

struct FusedAttention {
    mask: AttnMask,
    tq: usize,
    scale: f32,
}

impl FusedAttention {
    /// Splits the `r` query rows of a block into chunks of at most [`CHUNK`] rows of one query head,
    /// each with the number of keys it can see: `(first row, rows, keys)`. Keys after a chunk's last
    /// query are never visible, so causal attention skips about half of the score matrix.
    fn chunks(&self, r: usize, tk: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let tq = self.tq;
        (0..r / tq).flat_map(move |head| {
            (0..tq).step_by(CHUNK).map(move |t0| {
                let rows = CHUNK.min(tq - t0);
                let keys = (self.mask.query_offset + t0 + rows).min(tk);
                (head * tq + t0, rows, keys)
            })
        })
    }

    /// Scaled, masked softmax in place over the scores `s` (`rows x keys`) of the block rows
    /// starting at `r0`: `s` becomes `P`.
    fn softmax_rows(&self, s: &mut [f32], b: usize, r0: usize, rows: usize, keys: usize) {
        for row in 0..rows {
            let qi = self.mask.query_offset + (r0 + row) % self.tq;
            let sr = &mut s[row * keys..(row + 1) * keys];
            let end = (qi + 1).min(keys);
            let valid = &self.mask.key_valid[b * self.mask.keys..];
            let visible = |j: usize| j == qi || (j < qi && valid[j] != 0);
            let mut max = f32::NEG_INFINITY;
            for (j, &x) in sr.iter().enumerate().take(end) {
                if visible(j) {
                    max = max.max(x * self.scale);
                }
            }
            let mut sum = 0f32;
            for (j, x) in sr.iter_mut().enumerate() {
                if j < end && visible(j) {
                    let e = (*x * self.scale - max).exp();
                    *x = e;
                    sum += e;
                } else {
                    *x = 0.0;
                }
            }
            let inv = 1.0 / sum;
            for x in &mut sr[..end] {
                *x *= inv;
            }
        }
    }

    fn check(&self, lq: &Layout, lk: &Layout, lv: &Layout) -> CResult<(usize, usize, usize, usize, usize)> {
        let (b, g, r, hd) = lq.shape().dims4()?;
        let (bk, gk, tk, hdk) = lk.shape().dims4()?;
        if (bk, gk, hdk) != (b, g, hd) || lv.shape() != lk.shape() {
            candle_core::bail!("attention: q {:?}, k {:?}, v {:?} do not fit", lq.dims(), lk.dims(), lv.dims());
        }
        if b != self.mask.batch || tk != self.mask.keys || r % self.tq != 0 {
            candle_core::bail!(
                "attention: q {:?} and k {:?} do not fit the mask ({} x {})",
                lq.dims(),
                lk.dims(),
                self.mask.batch,
                self.mask.keys
            );
        }
        Ok((b, g, r, tk, hd))
    }
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        sq: &CpuStorage,
        lq: &Layout,
        sk: &CpuStorage,
        lk: &Layout,
        sv: &CpuStorage,
        lv: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (_, g, r, tk, hd) = self.check(lq, lk, lv)?;
        let (qo, _) = block_offsets(lq, "q")?;
        let (ko, _) = block_offsets(lk, "k")?;
        let (vo, _) = block_offsets(lv, "v")?;
        let (q, k, v) = (f32_slice(sq)?, f32_slice(sk)?, f32_slice(sv)?);
        let mut out = vec![0f32; qo.len() * r * hd];
        let work = |(i, y): (usize, &mut [f32])| {
            let mut s = vec![0f32; CHUNK * tk];
            let (qb, kb, vb) = (&q[qo[i]..], &k[ko[i]..], &v[vo[i]..]);
            for (r0, rows, keys) in self.chunks(r, tk) {
                let s = &mut s[..rows * keys];
                if rows <= MATVEC_MAX_ROWS {
                    // Decode steps: gemm's setup costs more than these few dot products and axpys.
                    for (row, sr) in s.chunks_exact_mut(keys).enumerate() {
                        let qr = &qb[(r0 + row) * hd..(r0 + row + 1) * hd];
                        for (j, sj) in sr.iter_mut().enumerate() {
                            *sj = dot(qr, &kb[j * hd..(j + 1) * hd]);
                        }
                    }
                    self.softmax_rows(s, i / g, r0, rows, keys);
                    for (row, sr) in s.chunks_exact(keys).enumerate() {
                        let yr = &mut y[(r0 + row) * hd..(r0 + row + 1) * hd];
                        yr.fill(0.0);
                        for (j, &pj) in sr.iter().enumerate() {
                            if pj != 0.0 {
                                yr.iter_mut().zip(&vb[j * hd..(j + 1) * hd]).for_each(|(a, &v)| *a += pj * v);
                            }
                        }
                    }
                    continue;
                }
                matmul(rows, keys, hd, s, &qb[r0 * hd..], hd, 1, kb, 1, hd); // S = Q K^T
                self.softmax_rows(s, i / g, r0, rows, keys);
                matmul(rows, hd, keys, &mut y[r0 * hd..], s, keys, 1, vb, hd, 1); // Y = P V
            }
        };
        if qo.len() > 1 && r * tk * hd > 4096 {
            out.par_chunks_mut(r * hd).enumerate().for_each(work);
        } else {
            out.chunks_mut(r * hd).enumerate().for_each(work);
        }
        Ok((CpuStorage::F32(out), lq.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = grad.contiguous()?;
        let (sq, lq) = q.storage_and_layout();
        let (sk, lk) = k.storage_and_layout();
        let (sv, lv) = v.storage_and_layout();
        let (sdy, ldy) = dy.storage_and_layout();
        let (Storage::Cpu(sq), Storage::Cpu(sk), Storage::Cpu(sv), Storage::Cpu(sdy)) = (&*sq, &*sk, &*sv, &*sdy)
        else {
            candle_core::bail!("fused attention backward runs on the CPU only");
        };
        let (_, g, r, tk, hd) = self.check(lq, lk, lv)?;
        let (qo, _) = block_offsets(lq, "q")?;
        let (ko, _) = block_offsets(lk, "k")?;
        let (vo, _) = block_offsets(lv, "v")?;
        let (dyo, _) = block_offsets(ldy, "grad")?;
        let (qs, ks, vs, dys) = (f32_slice(sq)?, f32_slice(sk)?, f32_slice(sv)?, f32_slice(sdy)?);
        let n = qo.len();
        // One buffer per block: [dq (R x hd) | dk (Tk x hd) | dv (Tk x hd)].
        let per = r * hd + 2 * tk * hd;
        let mut out = vec![0f32; n * per];
        let work = |(i, o): (usize, &mut [f32])| {
            let (qb, kb, vb, dyb) = (&qs[qo[i]..], &ks[ko[i]..], &vs[vo[i]..], &dys[dyo[i]..]);
            let (dq, rest) = o.split_at_mut(r * hd);
            let (dk, dv) = rest.split_at_mut(tk * hd);
            let mut p = vec![0f32; CHUNK * tk];
            let mut dp = vec![0f32; CHUNK * tk];
            let mut acc = vec![0f32; tk * hd];
            for (r0, rows, keys) in self.chunks(r, tk) {
                let (p, dp) = (&mut p[..rows * keys], &mut dp[..rows * keys]);
                let (qc, dyc) = (&qb[r0 * hd..], &dyb[r0 * hd..]);
                matmul(rows, keys, hd, p, qc, hd, 1, kb, 1, hd); // S = Q K^T
                self.softmax_rows(p, i / g, r0, rows, keys); // P
                matmul(rows, keys, hd, dp, dyc, hd, 1, vb, 1, hd); // dP = dY V^T
                // dS = scale * P * (dP - rowsum(dP * P)), in place in dp.
                for row in 0..rows {
                    let (pr, dpr) = (&p[row * keys..(row + 1) * keys], &mut dp[row * keys..(row + 1) * keys]);
                    let dot: f32 = pr.iter().zip(dpr.iter()).map(|(a, b)| a * b).sum();
                    for (d, &pv) in dpr.iter_mut().zip(pr) {
                        *d = self.scale * pv * (*d - dot);
                    }
                }
                matmul(rows, hd, keys, &mut dq[r0 * hd..], dp, keys, 1, kb, hd, 1); // dQ = dS K
                // dK[..keys] += dS^T Q and dV[..keys] += P^T dY, in a fixed chunk order.
                let acc = &mut acc[..keys * hd];
                matmul(keys, hd, rows, acc, dp, 1, keys, qc, hd, 1);
                dk[..keys * hd].iter_mut().zip(acc.iter()).for_each(|(d, a)| *d += a);
                matmul(keys, hd, rows, acc, p, 1, keys, dyc, hd, 1);
                dv[..keys * hd].iter_mut().zip(acc.iter()).for_each(|(d, a)| *d += a);
            }
        };
        if n > 1 && r * tk * hd > 4096 {
            out.par_chunks_mut(per).enumerate().for_each(work);
        } else {
            out.chunks_mut(per).enumerate().for_each(work);
        }
        let (b, dev) = (n / g, q.device().clone());
        let all = Tensor::from_vec(out, (n, per), &dev)?;
        let dq = all.narrow(1, 0, r * hd)?.reshape((b, g, r, hd))?;
        let dk = all.narrow(1, r * hd, tk * hd)?.reshape((b, g, tk, hd))?;
        let dv = all.narrow(1, r * hd + tk * hd, tk * hd)?.reshape((b, g, tk, hd))?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use candle_core::Var;

    use super::*;
    use crate::test_util::{max_diff, randn};

    fn check(b: usize, g: usize, n: usize, tq: usize, tk: usize, hd: usize, key_valid: Vec<u8>) {
        let mask = AttnMask { key_valid: Arc::new(key_valid), batch: b, keys: tk, query_offset: tk - tq };
        let q = Var::from_tensor(&randn(&[b, g, n * tq, hd], 1)).unwrap();
        let k = Var::from_tensor(&randn(&[b, g, tk, hd], 2)).unwrap();
        let v = Var::from_tensor(&randn(&[b, g, tk, hd], 3)).unwrap();
        let probe = randn(&[b, g, n * tq, hd], 4);
        let yf = attention(&q, &k, &v, &mask, tq, 0.35).unwrap();
        let yc = attention_composed(&q, &k, &v, &mask, tq, 0.35).unwrap();
        assert!(max_diff(&yf, &yc) < 1e-5, "forward differs by {}", max_diff(&yf, &yc));
        let gf = (&yf * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (&yc * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, t) in [("q", &q), ("k", &k), ("v", &v)] {
            let (a, c) = (gf.get(t).unwrap(), gc.get(t).unwrap());
            assert!(max_diff(a, c) < 2e-5, "grad of {name} differs by {}", max_diff(a, c));
        }
    }

    #[test]
    fn fused_attention_matches_composed_with_padding_and_groups() {
        // Left padding in row 0, right padding in row 1, 3 query heads per kv head.
        check(2, 2, 3, 6, 6, 8, vec![0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
        // Large enough for the parallel path.
        check(3, 2, 2, 20, 20, 16, vec![1; 60]);
        // Several row chunks per head (causal key limits), with some padding.
        let mut valid = vec![1u8; 2 * 150];
        valid[..7].fill(0);
        valid[290..].fill(0);
        check(2, 1, 2, 150, 150, 8, valid);
        // A decode step: one query over a longer cache.
        check(2, 2, 2, 1, 7, 8, vec![0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1]);
    }

    #[test]
    fn fused_attention_reads_a_narrowed_cache_without_copying() {
        let (b, g, hd, cap, tk) = (2, 2, 8, 10, 6);
        let cache = randn(&[b, g, cap, hd], 5);
        let k = cache.narrow(2, 0, tk).unwrap();
        let mask = AttnMask { key_valid: Arc::new(vec![1; b * tk]), batch: b, keys: tk, query_offset: tk - 1 };
        let q = randn(&[b, g, 2, hd], 6);
        let yf = attention(&q, &k, &k, &mask, 1, 0.3).unwrap();
        let yc = attention_composed(&q, &k.contiguous().unwrap(), &k.contiguous().unwrap(), &mask, 1, 0.3).unwrap();
        assert!(max_diff(&yf, &yc) < 1e-5);
    }
}
