//! Bounds for the tests' statistical assertions, computed from the sample
//! size: a count of `trials` independent draws that each hit with
//! probability `p` stays within [`Z`] standard deviations of its mean.
//! With a fixed seed a test either always passes or always fails; the bound
//! says how unlikely a correct implementation is to fail it for a seed
//! (below 10⁻⁶ per assertion at five standard deviations).

/// Standard deviations allowed around a mean.
pub(crate) const Z: f64 = 5.0;

/// The standard deviation of a binomial count.
pub(crate) fn binomial_sd(trials: f64, p: f64) -> f64 {
    (trials * p * (1.0 - p)).sqrt()
}

/// The least a binomial count is allowed to be: [`Z`] standard deviations
/// under its mean.
pub(crate) fn at_least(trials: f64, p: f64) -> f64 {
    trials * p - Z * binomial_sd(trials, p)
}
