//! 95 % bootstrap intervals over questions and seeds. Every arm (a point of
//! a study, or a series) is a set of runs, each with one score per question;
//! all arms were scored on the same questions, in the same order. One
//! replicate draws the questions with replacement once (the same draw for
//! every arm, so differences between arms are paired by question) and each
//! arm's runs with replacement; an arm's value is the mean over its drawn
//! runs of their means over the drawn questions. The draws are seeded, so a
//! report rebuilt from the same logs has the same intervals.

use rand::Rng;

/// Replicates per interval.
pub const REPLICATES: usize = 2000;

/// One arm: its runs' per-question scores.
pub type Arm<'a> = Vec<&'a [f64]>;

/// The statistic on the arms' plain means, and its 95 % percentile
/// interval; `Err` names why it cannot be computed.
pub fn interval(
    arms: &[Arm<'_>],
    statistic: &dyn Fn(&[f64]) -> f64,
    seed: u64,
) -> Result<(f64, f64, f64), String> {
    let n = questions(arms)?;
    let plain: Vec<f64> = arms.iter().map(|a| arm_mean(a, None, None)).collect();
    let mut rng = crate::rng::seeded(seed);
    let mut values = Vec::with_capacity(REPLICATES);
    let mut q = vec![0usize; n];
    let mut means = vec![0.0; arms.len()];
    for _ in 0..REPLICATES {
        for x in q.iter_mut() {
            *x = rng.random_range(0..n);
        }
        for (m, arm) in means.iter_mut().zip(arms) {
            let runs: Vec<usize> = (0..arm.len())
                .map(|_| rng.random_range(0..arm.len()))
                .collect();
            *m = arm_mean(arm, Some(&q), Some(&runs));
        }
        values.push(statistic(&means));
    }
    values.sort_by(f64::total_cmp);
    let at = |p: f64| values[((p * REPLICATES as f64) as usize).min(REPLICATES - 1)];
    Ok((statistic(&plain), at(0.025), at(0.975)))
}

/// The number of questions every run of every arm was scored on.
fn questions(arms: &[Arm<'_>]) -> Result<usize, String> {
    let mut n = None;
    for run in arms.iter().flatten() {
        match n {
            None => n = Some(run.len()),
            Some(k) if k != run.len() => {
                return Err(format!(
                    "the runs scored different numbers of questions ({k} and {})",
                    run.len()
                ))
            }
            Some(_) => {}
        }
    }
    match n {
        Some(0) | None => Err("no per-question scores".into()),
        Some(k) if arms.iter().any(|a| a.is_empty()) => Err(format!(
            "an arm has no runs (of {k} questions each elsewhere)"
        )),
        Some(k) => Ok(k),
    }
}

/// The mean over `runs` (all when None) of each run's mean over `q` (all
/// questions when None).
fn arm_mean(arm: &[&[f64]], q: Option<&[usize]>, runs: Option<&[usize]>) -> f64 {
    let run_mean = |r: &[f64]| match q {
        Some(q) => q.iter().map(|&i| r[i]).sum::<f64>() / q.len() as f64,
        None => r.iter().sum::<f64>() / r.len() as f64,
    };
    match runs {
        Some(idx) => idx.iter().map(|&i| run_mean(arm[i])).sum::<f64>() / idx.len() as f64,
        None => arm.iter().map(|r| run_mean(r)).sum::<f64>() / arm.len() as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_difference_has_no_width_and_noise_has_some() {
        // A scores 1 on every question, B on none: the difference is 1 in
        // every replicate.
        let (a, b) = (vec![1.0; 50], vec![0.0; 50]);
        let arms = vec![vec![&a[..], &a[..]], vec![&b[..]]];
        let diff = |m: &[f64]| m[0] - m[1];
        assert_eq!(interval(&arms, &diff, 1), Ok((1.0, 1.0, 1.0)));
        // Half the questions right: the mean is 0.5, and its interval
        // (binomial, n 100: ±1.96·√(0.25/100) ≈ ±0.098) is about that wide.
        let half: Vec<f64> = (0..100).map(|i| (i % 2) as f64).collect();
        let (m, lo, hi) = interval(&[vec![&half[..]]], &|m| m[0], 7).unwrap();
        assert_eq!(m, 0.5);
        assert!(
            (lo - 0.40).abs() < 0.03 && (hi - 0.60).abs() < 0.03,
            "{lo} {hi}"
        );
        // The same seed, the same interval.
        assert_eq!(
            interval(&[vec![&half[..]]], &|m| m[0], 7).unwrap(),
            (m, lo, hi)
        );
    }

    #[test]
    fn seeds_that_disagree_widen_the_interval() {
        // Two seeds of one point: one answers everything, one nothing. Over
        // questions alone the interval would be a point; seeds make it [0, 1].
        let (a, b) = (vec![1.0; 20], vec![0.0; 20]);
        let (m, lo, hi) = interval(&[vec![&a[..], &b[..]]], &|m| m[0], 3).unwrap();
        assert_eq!((m, lo, hi), (0.5, 0.0, 1.0));
    }

    #[test]
    fn runs_of_other_question_counts_are_refused() {
        let (a, b) = (vec![1.0; 20], vec![0.0; 19]);
        let e = interval(&[vec![&a[..]], vec![&b[..]]], &|m| m[0], 3).unwrap_err();
        assert!(e.contains("20 and 19"), "{e}");
        assert!(interval(&[vec![]], &|m| m[0], 3).is_err());
    }
}
