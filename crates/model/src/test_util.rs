//! Helpers shared by the crate's unit tests.

use candle_core::{Device, Tensor};

/// A standard-normal tensor of `shape` on the CPU, from `seed`.
pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rand_distr::StandardNormal.sample(&mut rng)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// The largest absolute elementwise difference of two tensors of the same shape.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}
