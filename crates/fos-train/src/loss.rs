//! The losses of both methods (method.md), as differentiable burn
//! expressions; each returns a scalar tensor `[1]`, averaged over the batch.

use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::{Device, Tensor, TensorData};

/// Softmax cross-entropy of `logits` `[N, C]` against class indices.
pub fn cross_entropy(logits: Tensor<2>, labels: &[usize], device: &Device) -> Tensor<1> {
    let [n, c] = logits.dims();
    let mut onehot = vec![0f32; n * c];
    for (i, &y) in labels.iter().enumerate() {
        onehot[i * c + y] = 1.0;
    }
    let t = Tensor::<2>::from_data(TensorData::new(onehot, [n, c]), device);
    (log_softmax(logits, 1) * t).sum().neg() / n as f64
}

/// Center loss (Wen et al. 2016): `1/2 ||x_i - c_{y_i}||^2`, averaged over the
/// batch; `centres` `[N, E]` holds each sample's class centre (a constant:
/// the centres are updated apart, see [`update_centres`]).
pub fn center_loss(embed: Tensor<2>, centres: Tensor<2>) -> Tensor<1> {
    let n = embed.dims()[0];
    (embed - centres).powf_scalar(2.0).sum() * (0.5 / n as f64)
}

/// Moves each class centre toward its batch members (Wen et al.):
/// `c_j -= alpha * sum_{i: y_i = j} (c_j - x_i) / (1 + n_j)`.
pub fn update_centres(
    centres: &mut [f32],
    dim: usize,
    embed: &[f32],
    labels: &[usize],
    alpha: f32,
) {
    let mut delta: std::collections::HashMap<usize, (Vec<f32>, f32)> = Default::default();
    for (i, &y) in labels.iter().enumerate() {
        let (d, n) = delta.entry(y).or_insert_with(|| (vec![0.0; dim], 0.0));
        for k in 0..dim {
            d[k] += centres[y * dim + k] - embed[i * dim + k];
        }
        *n += 1.0;
    }
    for (y, (d, n)) in delta {
        for k in 0..dim {
            centres[y * dim + k] -= alpha * d[k] / (1.0 + n);
        }
    }
}

/// Row-wise cosine similarity of `[N, E]` tensors: `[N]`.
pub fn cosine(a: Tensor<2>, b: Tensor<2>) -> Tensor<1> {
    let n = a.dims()[0];
    let dot = (a.clone() * b.clone()).sum_dim(1);
    let na = a.powf_scalar(2.0).sum_dim(1).sqrt();
    let nb = b.powf_scalar(2.0).sum_dim(1).sqrt();
    (dot / (na * nb).clamp_min(1e-8)).reshape([n])
}

/// Cosine triplet loss `max(0, cos(q, neg) - cos(q, pos) + margin)`.
pub fn cosine_triplet(q: Tensor<2>, pos: Tensor<2>, neg: Tensor<2>, margin: f64) -> Tensor<1> {
    let d = cosine(q.clone(), neg) - cosine(q, pos) + margin;
    relu(d).mean()
}

/// Triplet loss on scores: `max(0, s_neg - s_pos + margin)`.
pub fn score_triplet(pos: Tensor<1>, neg: Tensor<1>, margin: f64) -> Tensor<1> {
    relu(neg - pos + margin).mean()
}

/// Binary cross-entropy on logits (stable form):
/// `max(x, 0) - x t + ln(1 + e^{-|x|})`.
pub fn bce_with_logits(logits: Tensor<1>, targets: &[f32], device: &Device) -> Tensor<1> {
    let n = targets.len();
    let t = Tensor::<1>::from_data(TensorData::new(targets.to_vec(), [n]), device);
    let x = logits;
    (x.clone().clamp_min(0.0) - x.clone() * t + x.abs().neg().exp().log1p()).mean()
}

/// Mean absolute difference.
pub fn l1<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<1> {
    (a - b).abs().mean()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> Device {
        fos_model::device()
    }
    fn t2(v: Vec<f32>, n: usize, m: usize) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v, [n, m]), &dev())
    }
    fn t1(v: Vec<f32>) -> Tensor<1> {
        let n = v.len();
        Tensor::from_data(TensorData::new(v, [n]), &dev())
    }
    fn val(t: Tensor<1>) -> f32 {
        fos_model::to_vec(t).unwrap()[0]
    }
    fn close(a: f32, b: f32) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }

    #[test]
    fn cross_entropy_by_hand() {
        // Row 1: logits (0, ln 3): p(class 1) = 3/4 -> -ln(3/4).
        // Row 2: logits (0, 0):    p(class 0) = 1/2 -> ln 2.
        let l = t2(vec![0.0, 3f32.ln(), 0.0, 0.0], 2, 2);
        let want = ((-(0.75f32).ln()) + 2f32.ln()) / 2.0;
        close(val(cross_entropy(l, &[1, 0], &dev())), want);
    }

    #[test]
    fn center_loss_and_update_by_hand() {
        // x = (1, 2), c = (0, 0): 1/2 * 5; second sample at its centre: 0.
        let x = t2(vec![1.0, 2.0, 3.0, 3.0], 2, 2);
        let c = t2(vec![0.0, 0.0, 3.0, 3.0], 2, 2);
        close(val(center_loss(x, c)), 2.5 / 2.0);
        // Class 0 centre (0,0), two members (1,2) and (3,4), alpha 0.5:
        // delta = ((0-1)+(0-3), (0-2)+(0-4)) / 3 = (-4/3, -2); c -= 0.5 delta.
        let mut centres = vec![0.0, 0.0];
        update_centres(&mut centres, 2, &[1.0, 2.0, 3.0, 4.0], &[0, 0], 0.5);
        close(centres[0], 2.0 / 3.0);
        close(centres[1], 1.0);
    }

    #[test]
    fn cosine_triplet_by_hand() {
        // q = (1, 0); pos = (1, 1): cos 1/sqrt2; neg = (0, 1): cos 0.
        // loss = max(0, 0 - 0.7071 + 0.1) = 0. With margin 1: 1 - 0.7071.
        let q = t2(vec![1.0, 0.0], 1, 2);
        let p = t2(vec![1.0, 1.0], 1, 2);
        let n = t2(vec![0.0, 1.0], 1, 2);
        close(
            val(cosine_triplet(q.clone(), p.clone(), n.clone(), 0.1)),
            0.0,
        );
        close(
            val(cosine_triplet(q.clone(), p.clone(), n.clone(), 1.0)),
            1.0 - 0.5f32.sqrt(),
        );
        // Swapped: cos(q, neg) = 0.7071, cos(q, pos) = 0: 0.7071 + 0.1.
        close(val(cosine_triplet(q, n, p, 0.1)), 0.5f32.sqrt() + 0.1);
        close(
            val(score_triplet(t1(vec![0.9, 0.2]), t1(vec![0.5, 0.4]), 0.1)),
            0.15,
        );
    }

    #[test]
    fn bce_and_l1_by_hand() {
        // x = 0: ln 2 for either target; x = 2, t = 1: ln(1 + e^-2);
        // x = -3, t = 1: 3 + ln(1 + e^-3).
        let got = val(bce_with_logits(
            t1(vec![0.0, 2.0, -3.0]),
            &[0.0, 1.0, 1.0],
            &dev(),
        ));
        let want =
            (2f32.ln() + (1.0 + (-2f32).exp()).ln() + 3.0 + (1.0 + (-3f32).exp()).ln()) / 3.0;
        close(got, want);
        close(val(l1(t1(vec![1.0, -1.0]), t1(vec![0.5, 1.0]))), 1.25);
    }

    #[test]
    fn gradients_flow_through_the_triplet() {
        let d = dev().autodiff();
        let q =
            Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 0.2], [1, 2]), &d).require_grad();
        let p = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 1.0], [1, 2]), &d);
        let n = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 0.0], [1, 2]), &d);
        let loss = cosine_triplet(q.clone(), p, n, 0.1);
        let g = loss.backward();
        let grad = fos_model::to_vec(q.grad(&g).unwrap()).unwrap();
        // Moving q toward pos (increasing y) lowers the loss.
        assert!(grad[1] < 0.0, "{grad:?}");
    }
}
