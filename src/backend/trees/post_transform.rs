//! Post transforms: what turns aggregated scores into the operator's outputs (probabilities, margins).

/// What is applied to the aggregated scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PostTransform {
    #[default]
    None,
    Softmax,
    Logistic,
    SoftmaxZero,
    Probit,
}

impl PostTransform {
    pub fn parse(name: &str) -> Result<PostTransform, String> {
        Ok(match name {
            "NONE" => PostTransform::None,
            "SOFTMAX" => PostTransform::Softmax,
            "LOGISTIC" => PostTransform::Logistic,
            "SOFTMAX_ZERO" => PostTransform::SoftmaxZero,
            "PROBIT" => PostTransform::Probit,
            other => return Err(format!("unknown post_transform '{other}'")),
        })
    }
}

/// Applies the post transform to two or more scores and writes them to `z`.
pub(super) fn write_scores(scores: &mut [f32], transform: PostTransform, z: &mut [f32]) {
    match transform {
        PostTransform::None => {}
        PostTransform::Logistic => scores.iter_mut().for_each(|s| *s = logistic(*s)),
        PostTransform::Probit => scores.iter_mut().for_each(|s| *s = probit(*s)),
        PostTransform::Softmax => softmax(scores, false),
        PostTransform::SoftmaxZero => softmax(scores, true),
    }
    z.copy_from_slice(scores);
}

/// 1 / (1 + e^-x), computed on |x| so that large margins do not overflow.
pub fn logistic(x: f32) -> f32 {
    let v = 1.0 / (1.0 + (-x.abs()).exp());
    if x < 0.0 { 1.0 - v } else { v }
}

/// √2 · erf⁻¹(2p − 1), with Winitzki's approximation of erf⁻¹ (a = 0.147).
pub fn probit(p: f32) -> f32 {
    let x = 2.0 * p - 1.0;
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let ln = ((1.0 - x) * (1.0 + x)).ln();
    let a = 2.0 / (std::f32::consts::PI * 0.147) + 0.5 * ln;
    let b = ln / 0.147;
    std::f32::consts::SQRT_2 * sign * (-a + (a * a - b).sqrt()).sqrt()
}

/// Softmax in place; with `skip_zeros`, scores of exactly zero stay (near) zero instead of counting as e^0.
fn softmax(scores: &mut [f32], skip_zeros: bool) {
    let max = scores.iter().copied().fold(f32::MIN, f32::max);
    let zero_scale = (-max).exp();
    let mut sum = 0.0f32;
    for s in scores.iter_mut() {
        if skip_zeros && s.abs() <= 1e-7 {
            *s *= zero_scale;
        } else {
            *s = (*s - max).exp();
            sum += *s;
        }
    }
    scores.iter_mut().for_each(|s| *s /= sum);
}
