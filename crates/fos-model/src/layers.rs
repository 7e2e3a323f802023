//! Building burn layers from named torch weights (batch norm folded in), and
//! deterministic synthetic weights for tests of shapes and loading.

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::{Device, Tensor, TensorData};

use crate::weights::{Weights, WeightsError};

/// Geometry of one convolution.
#[derive(Debug, Clone)]
pub(crate) struct ConvSpec {
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub groups: usize,
    pub padding: PaddingConfig2d,
}

impl ConvSpec {
    pub fn weight_shape(&self) -> Vec<usize> {
        vec![self.cout, self.cin / self.groups, self.kernel, self.kernel]
    }
}

/// Folds batch norm into the preceding convolution's kernel and a bias:
/// `w' = w * g / sqrt(v + eps)`, `b' = beta - m * g / sqrt(v + eps)`.
/// Returns `(w', b')`, row-major.
pub(crate) fn fold_conv_bn(
    w: &Weights,
    conv: &str,
    bn: &str,
    spec: &ConvSpec,
    eps: f32,
) -> Result<(Vec<f32>, Vec<f32>), WeightsError> {
    let c = spec.cout;
    let kernel = w.get(&format!("{conv}.weight"), &spec.weight_shape())?;
    let gamma = w.get(&format!("{bn}.weight"), &[c])?;
    let beta = w.get(&format!("{bn}.bias"), &[c])?;
    let mean = w.get(&format!("{bn}.running_mean"), &[c])?;
    let var = w.get(&format!("{bn}.running_var"), &[c])?;
    let per_out = kernel.len() / c;
    let mut weight = kernel.to_vec();
    let mut bias = vec![0f32; c];
    for o in 0..c {
        let scale = gamma[o] / (var[o] + eps).sqrt();
        weight[o * per_out..(o + 1) * per_out]
            .iter_mut()
            .for_each(|x| *x *= scale);
        bias[o] = beta[o] - mean[o] * scale;
    }
    Ok((weight, bias))
}

/// A biased convolution of geometry `spec` over the given kernel and bias
/// tensors (tracked tensors stay tracked: their gradients reach the caller).
pub(crate) fn conv_from(spec: &ConvSpec, weight: Tensor<4>, bias: Tensor<1>) -> Conv2d {
    Conv2d {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(bias)),
        stride: [spec.stride; 2],
        kernel_size: [spec.kernel; 2],
        dilation: [1, 1],
        groups: spec.groups,
        padding: spec.padding.clone(),
    }
}

/// A convolution followed by batch norm, folded into one biased convolution
/// ([`fold_conv_bn`]).
pub(crate) fn conv_bn(
    w: &Weights,
    conv: &str,
    bn: &str,
    spec: &ConvSpec,
    eps: f32,
    device: &Device,
) -> Result<Conv2d, WeightsError> {
    let (weight, bias) = fold_conv_bn(w, conv, bn, spec, eps)?;
    Ok(conv_from(
        spec,
        Tensor::from_data(TensorData::new(weight, spec.weight_shape()), device),
        Tensor::from_data(TensorData::new(bias, [spec.cout]), device),
    ))
}

/// A torch `nn.Linear` (`weight` is `[out, in]`) as a burn `Linear` (`[in, out]`).
pub(crate) fn linear(
    w: &Weights,
    name: &str,
    d_in: usize,
    d_out: usize,
    device: &Device,
) -> Result<Linear, WeightsError> {
    let weight = w.get(&format!("{name}.weight"), &[d_out, d_in])?;
    let bias = w.get(&format!("{name}.bias"), &[d_out])?;
    let mut t = vec![0f32; d_in * d_out];
    for o in 0..d_out {
        for i in 0..d_in {
            t[i * d_out + o] = weight[o * d_in + i];
        }
    }
    Ok(Linear {
        weight: Param::from_tensor(Tensor::from_data(TensorData::new(t, [d_in, d_out]), device)),
        bias: Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(bias.to_vec(), [d_out]),
            device,
        ))),
    })
}

/// Deterministic pseudo-random numbers (SplitMix64) for synthetic weights.
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Adds a synthetic conv + batch-norm pair (He-scaled kernel, BN close to identity).
pub(crate) fn synth_conv_bn(w: &mut Weights, conv: &str, bn: &str, spec: &ConvSpec, rng: &mut Rng) {
    let shape = spec.weight_shape();
    let fan_in: usize = shape[1..].iter().product();
    let scale = (3.0 / fan_in as f32).sqrt();
    let n: usize = shape.iter().product();
    w.insert(
        format!("{conv}.weight"),
        shape,
        (0..n).map(|_| rng.uniform() * scale).collect(),
    );
    let c = spec.cout;
    let mut vec_of =
        |base: f32, spread: f32| (0..c).map(|_| base + spread * rng.uniform()).collect();
    let (g, b, m, v) = (
        vec_of(1.0, 0.1),
        vec_of(0.0, 0.1),
        vec_of(0.0, 0.1),
        vec_of(1.0, 0.2),
    );
    w.insert(format!("{bn}.weight"), vec![c], g);
    w.insert(format!("{bn}.bias"), vec![c], b);
    w.insert(format!("{bn}.running_mean"), vec![c], m);
    w.insert(format!("{bn}.running_var"), vec![c], v);
}

/// Adds a synthetic torch-layout linear layer.
pub(crate) fn synth_linear(w: &mut Weights, name: &str, d_in: usize, d_out: usize, rng: &mut Rng) {
    let s = (1.0 / d_in as f32).sqrt();
    w.insert(
        format!("{name}.weight"),
        vec![d_out, d_in],
        (0..d_in * d_out).map(|_| rng.uniform() * s).collect(),
    );
    w.insert(
        format!("{name}.bias"),
        vec![d_out],
        (0..d_out).map(|_| rng.uniform() * s).collect(),
    );
}

/// Global average pooling `[N, C, H, W] -> [N, C]`.
pub(crate) fn global_avg_pool(x: Tensor<4>) -> Tensor<2> {
    let [n, c, _, _] = x.dims();
    x.mean_dim(3).mean_dim(2).reshape([n, c])
}

/// ReLU6, `min(max(x, 0), 6)`, NaN kept (see [`clamp`]).
pub(crate) fn relu6<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    clamp(x, 0.0, 6.0)
}

/// ReLU, `max(x, 0)`, NaN kept (see [`clamp`]).
pub(crate) fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    clamp(x, 0.0, f32::INFINITY)
}

/// `min(max(x, lo), hi)` with NaN kept, as burn's `clamp`, but fast at inference.
///
/// burn-flex's `clamp` is a single-threaded scalar loop, measured at 18% of an
/// EfficientNet-Lite0 forward pass. A plain (not autodiff-tracked), uniquely
/// owned, contiguous f32 tensor on the Flex backend, which is what inference
/// produces after every convolution, is clamped in place here on all rayon
/// threads in a loop the compiler vectorises; any other tensor goes through
/// burn's `clamp`, so training and other backends are unchanged.
fn clamp<const D: usize>(x: Tensor<D>, lo: f32, hi: f32) -> Tensor<D> {
    let mut d = x.into_dispatch();
    if clamp_in_place(&mut d, lo, hi) {
        return Tensor::from_dispatch(d);
    }
    Tensor::from_dispatch(d).clamp(lo, hi)
}

/// Clamps `d` in place if it is a plain, unique, contiguous f32 Flex tensor;
/// says whether it did.
fn clamp_in_place(d: &mut burn::backend::DispatchTensor, lo: f32, hi: f32) -> bool {
    use burn::backend::{BackendTensor, DispatchAutodiffContext, DispatchTensorKind};
    use burn::tensor::DType;
    use rayon::prelude::*;

    if d.autodiff != DispatchAutodiffContext::Disabled {
        return false;
    }
    let DispatchTensorKind::Flex(BackendTensor::Float(t)) = &mut d.kind else {
        return false;
    };
    let n = t.layout().num_elements();
    if t.dtype() != DType::F32 || !t.is_contiguous() || t.layout().start_offset() != 0 {
        return false;
    }
    let Some(s) = t.try_storage_mut::<f32>() else {
        return false;
    };
    s[..n]
        .par_chunks_mut(1 << 14)
        .for_each(move |c| clamp_slice(c, lo, hi));
    true
}

/// Clamps in place with two selects per value, which the compiler turns into
/// `maxps`/`minps` with the value as the operand they return on NaN (`lo`,
/// `hi` by value so nothing aliases the output). Written as comparisons, not
/// `f32::max`/`min`: a NaN stays NaN, as with burn's `clamp`.
#[inline(never)]
fn clamp_slice(c: &mut [f32], lo: f32, hi: f32) {
    for v in c {
        let x = *v;
        let x = if x < lo { lo } else { x };
        *v = if x > hi { hi } else { x };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `v` with NaN written as a marker, for exact comparison.
    fn v_checked(v: &[f32]) -> Vec<f32> {
        v.iter()
            .map(|x| if x.is_nan() { -7.0 } else { *x })
            .collect()
    }

    #[test]
    fn relu6_in_place_equals_clamp_and_keeps_shared_inputs() {
        let device = crate::device();
        let v: Vec<f32> = (0..70_000)
            .map(|i| (i as f32 - 30_000.0) * 3e-4)
            .chain([f32::NAN, -0.0, 6.0, f32::INFINITY, f32::NEG_INFINITY])
            .collect();
        let n = v.len();
        let x: Tensor<2> = Tensor::from_data(TensorData::new(v.clone(), [1, n]), &device);
        // `x` stays shared by the clone, so the fast path must not write into it.
        let y = crate::to_vec(relu6(x.clone())).unwrap();
        let z = crate::to_vec(relu6(x.clone() * 1.0)).unwrap();
        let reference = crate::to_vec(x.clone().clamp(0.0, 6.0)).unwrap();
        // The in-place path is taken for a unique tensor only.
        let mut unique = (x.clone() * 1.0).into_dispatch();
        assert!(clamp_in_place(&mut unique, 0.0, 6.0));
        let mut shared = x.clone().into_dispatch();
        assert!(!clamp_in_place(&mut shared, 0.0, 6.0));
        assert_eq!(v_checked(&crate::to_vec(x).unwrap()), v_checked(&v));
        for i in 0..n {
            let want = reference[i];
            for got in [y[i], z[i]] {
                assert!(
                    got == want || (got.is_nan() && want.is_nan()),
                    "{i}: {got} vs {want}"
                );
            }
        }
        assert_eq!(z[0], 0.0);
        assert_eq!(z[n - 2], 6.0);
        assert!(z[n - 5].is_nan());
        let t = Tensor::<1>::from_data(
            TensorData::new(vec![-1.0f32, 0.5, 1e30, f32::NAN], [4]),
            &device,
        );
        // Shared (burn's clamp up to +inf) and unique (in place).
        for r in [relu(t.clone()), relu(t)] {
            let r = crate::to_vec(r).unwrap();
            assert_eq!(&r[..3], &[0.0, 0.5, 1e30]);
            assert!(r[3].is_nan());
        }
    }

    #[test]
    fn folded_conv_equals_conv_then_bn() {
        let device = crate::device();
        let spec = ConvSpec {
            cin: 2,
            cout: 3,
            kernel: 3,
            stride: 1,
            groups: 1,
            padding: PaddingConfig2d::Explicit(1, 1, 1, 1),
        };
        let mut w = Weights::new();
        let mut rng = Rng::new(7);
        synth_conv_bn(&mut w, "c", "bn", &spec, &mut rng);
        let conv = conv_bn(&w, "c", "bn", &spec, 1e-3, &device).unwrap();
        let x: Vec<f32> = (0..2 * 5 * 5).map(|_| rng.uniform()).collect();
        let y = conv.forward(Tensor::from_data(
            TensorData::new(x.clone(), [1, 2, 5, 5]),
            &device,
        ));
        let y = crate::to_vec(y).unwrap();
        // Direct computation at output (o, 2, 2): a full 3x3 window, no padding involved.
        let k = w.get("c.weight", &[3, 2, 3, 3]).unwrap();
        for o in 0..3 {
            let mut acc = 0f32;
            for i in 0..2 {
                for a in 0..3 {
                    for b in 0..3 {
                        acc += k[((o * 2 + i) * 3 + a) * 3 + b] * x[(i * 5 + 1 + a) * 5 + 1 + b];
                    }
                }
            }
            let g = |n: &str| w.get(&format!("bn.{n}"), &[3]).unwrap()[o];
            let expect = (acc - g("running_mean")) / (g("running_var") + 1e-3).sqrt() * g("weight")
                + g("bias");
            let got = y[o * 25 + 2 * 5 + 2];
            assert!((got - expect).abs() < 1e-5, "{got} vs {expect}");
        }
    }
}
