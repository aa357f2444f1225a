//! The population stability index: how far a distribution moved. Drift (a version's live window against its
//! reference) and the rollout (the candidate's predictions against the baseline's) both measure with it.

/// The share an empty bin counts as, so that a class one side never predicts still weighs.
pub const EPSILON: f64 = 1e-4;
/// Fewer observations than this give no PSI (NaN): a handful of answers says nothing about a distribution.
pub const MIN_SAMPLES: u64 = 30;

/// PSI of `counts` against the `expected` shares (floored at [`EPSILON`], summing to about 1): the sum over bins
/// of (live − expected) × ln(live / expected). NaN with fewer than [`MIN_SAMPLES`] counts.
pub fn psi(expected: &[f64], counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total < MIN_SAMPLES {
        return f64::NAN;
    }
    expected
        .iter()
        .zip(counts)
        .map(|(&e, &c)| {
            let a = (c as f64 / total as f64).max(EPSILON);
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// The shares of bin counts, floored at [`EPSILON`], as the expected side of [`psi`]; `None` with fewer than
/// [`MIN_SAMPLES`] counts.
pub fn shares(counts: &[u64]) -> Option<Vec<f64>> {
    let total: u64 = counts.iter().sum();
    (total >= MIN_SAMPLES).then(|| counts.iter().map(|&c| (c as f64 / total as f64).max(EPSILON)).collect())
}

/// PSI of one set of bin counts against another; NaN when either side has fewer than [`MIN_SAMPLES`].
pub fn psi_of_counts(expected: &[u64], counts: &[u64]) -> f64 {
    shares(expected).map_or(f64::NAN, |expected| psi(&expected, counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_for_the_same_distribution_and_growing_with_shift() {
        let expected = [0.25, 0.25, 0.5];
        assert!(psi(&expected, &[25, 25, 50]).abs() < 1e-12);
        assert!(psi(&expected, &[20, 30, 50]) < 0.1);
        assert!(psi(&expected, &[80, 10, 10]) > 0.25);
        assert!(psi(&expected, &[1, 1, 1]).is_nan(), "too few samples");
    }

    #[test]
    fn counts_against_counts() {
        assert!(psi_of_counts(&[50, 50, 0], &[500, 500, 0]) < 1e-9);
        assert!(psi_of_counts(&[90, 10], &[10, 90]) > 1.0);
        assert!(psi_of_counts(&[100, 0], &[95, 5]) > 0.02);
        // Empty or nearly empty windows give no reading, on either side.
        assert!(psi_of_counts(&[0, 0], &[0, 0]).is_nan());
        assert!(psi_of_counts(&[0, 0], &[50, 50]).is_nan());
        assert!(psi_of_counts(&[50, 50], &[3, 2]).is_nan());
    }
}
