//! Numeric comparison of two float sequences for parity checks (tests, parity examples,
//! benchmarks).
//!
//! The usual hand-written "max abs diff" zips the two slices, takes `|x - y|` and folds with
//! `f32::max` from zero. It is wrong twice: `f32::max` ignores NaN, so a NaN output passes any
//! tolerance, and `zip` stops at the shorter side, so missing values pass too. Every comparison
//! here fails on both instead, with a [`CompareError`] that says where.
//!
//! ```
//! use svgen_core::compare::{max_abs_diff, Tolerance};
//!
//! let ours = [1.0_f32, 2.0, 3.0];
//! let reference = [1.0_f32, 2.0, 3.000_001];
//! assert!(max_abs_diff(&ours, &reference)?.value < 1e-5);
//! assert!(max_abs_diff(&[f32::NAN], &[0.0]).is_err());
//! assert!(max_abs_diff(&[1.0], &[1.0, 2.0]).is_err());
//!
//! // Relative to the reference's RMS, for gradients and other values whose scale varies.
//! Tolerance::rms_relative(1e-4).check("grad", &ours, &reference)?;
//! # Ok::<(), svgen_core::compare::CompareError>(())
//! ```

use std::fmt;

/// Why two sequences could not be compared, or did not agree.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompareError {
    /// The sequences have different lengths.
    #[error("length mismatch: {actual} values against {expected} expected")]
    LengthMismatch {
        /// Length of the values under test.
        actual: usize,
        /// Length of the reference.
        expected: usize,
    },
    /// A value is NaN or infinite.
    #[error("non-finite value {value} at index {index} of the {side}")]
    NonFinite {
        /// `"values under test"` or `"reference"`.
        side: &'static str,
        /// Position of the first non-finite value.
        index: usize,
        /// The value itself.
        value: f64,
    },
    /// The difference exceeds the tolerance.
    #[error("{name}: {diff} exceeds {tolerance}")]
    Exceeded {
        /// What was compared.
        name: String,
        /// The worst difference found.
        diff: Diff,
        /// The tolerance it was checked against.
        tolerance: Tolerance,
    },
}

/// The worst element-wise difference between two sequences.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Diff {
    /// The difference (absolute, or scaled as the tolerance demands).
    pub value: f64,
    /// Where it occurs.
    pub index: usize,
    /// The value under test at `index`.
    pub actual: f64,
    /// The reference value at `index`.
    pub expected: f64,
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "difference {:.3e} at index {} ({} vs reference {})",
            self.value, self.index, self.actual, self.expected
        )
    }
}

/// A tolerance on the largest element-wise difference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    /// `|a - b| ≤ tol` everywhere.
    Absolute(f64),
    /// `|a - b| ≤ tol · max(1, |b|)` everywhere: absolute near zero, relative for large values
    /// (scheduler sigmas, logits of large magnitude).
    Relative(f64),
    /// `|a - b| ≤ tol · rms(b)` everywhere: for tensors whose overall scale varies (gradients),
    /// where an absolute bound would be either meaningless or impossible.
    RmsRelative(f64),
}

impl Tolerance {
    /// `|a - b| ≤ tol`.
    pub fn absolute(tol: f64) -> Self {
        Self::Absolute(tol)
    }

    /// `|a - b| ≤ tol · max(1, |b|)`.
    pub fn relative(tol: f64) -> Self {
        Self::Relative(tol)
    }

    /// `|a - b| ≤ tol · rms(b)`.
    pub fn rms_relative(tol: f64) -> Self {
        Self::RmsRelative(tol)
    }

    /// The worst difference of `actual` against `expected`, scaled as this tolerance scales it.
    pub fn diff<A: Float, E: Float>(
        &self,
        actual: &[A],
        expected: &[E],
    ) -> Result<Diff, CompareError> {
        check_inputs(actual, expected)?;
        let scale = match *self {
            Self::RmsRelative(_) => {
                let rms = rms(expected)?;
                // An all-zero reference: fall back to absolute differences.
                if rms > 0.0 {
                    rms
                } else {
                    1.0
                }
            }
            _ => 1.0,
        };
        let mut worst = Diff {
            value: 0.0,
            index: 0,
            actual: actual.first().map_or(0.0, |x| x.to_f64()),
            expected: expected.first().map_or(0.0, |x| x.to_f64()),
        };
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            let (a, e) = (a.to_f64(), e.to_f64());
            let d = match *self {
                Self::Absolute(_) => (a - e).abs(),
                Self::Relative(_) => (a - e).abs() / e.abs().max(1.0),
                Self::RmsRelative(_) => (a - e).abs() / scale,
            };
            if d > worst.value {
                worst = Diff {
                    value: d,
                    index: i,
                    actual: a,
                    expected: e,
                };
            }
        }
        Ok(worst)
    }

    /// Checks `actual` against `expected`; `name` labels the error.
    pub fn check<A: Float, E: Float>(
        &self,
        name: &str,
        actual: &[A],
        expected: &[E],
    ) -> Result<Diff, CompareError> {
        let diff = self.diff(actual, expected)?;
        if diff.value > self.bound() {
            return Err(CompareError::Exceeded {
                name: name.to_string(),
                diff,
                tolerance: *self,
            });
        }
        Ok(diff)
    }

    fn bound(&self) -> f64 {
        match *self {
            Self::Absolute(t) | Self::Relative(t) | Self::RmsRelative(t) => t,
        }
    }
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Absolute(t) => write!(f, "absolute tolerance {t:e}"),
            Self::Relative(t) => write!(f, "relative tolerance {t:e} (of max(1, |reference|))"),
            Self::RmsRelative(t) => write!(f, "tolerance {t:e} of the reference's RMS"),
        }
    }
}

/// The largest `|a - b|`; an error on a length mismatch or any non-finite value.
pub fn max_abs_diff<A: Float, E: Float>(
    actual: &[A],
    expected: &[E],
) -> Result<Diff, CompareError> {
    Tolerance::Absolute(0.0).diff(actual, expected)
}

/// Panics with the [`CompareError`] unless `actual` agrees with `expected` within `tolerance`;
/// returns the worst difference. For tests.
#[track_caller]
pub fn assert_close<A: Float, E: Float>(
    name: &str,
    actual: &[A],
    expected: &[E],
    tolerance: Tolerance,
) -> Diff {
    match tolerance.check(name, actual, expected) {
        Ok(d) => d,
        Err(e) => panic!("{name}: {e}"),
    }
}

/// Root mean square of `values`; an error on any non-finite value. `0` for an empty slice.
pub fn rms<T: Float>(values: &[T]) -> Result<f64, CompareError> {
    check_finite("reference", values)?;
    if values.is_empty() {
        return Ok(0.0);
    }
    let sum: f64 = values.iter().map(|v| v.to_f64() * v.to_f64()).sum();
    Ok((sum / values.len() as f64).sqrt())
}

fn check_inputs<A: Float, E: Float>(actual: &[A], expected: &[E]) -> Result<(), CompareError> {
    if actual.len() != expected.len() {
        return Err(CompareError::LengthMismatch {
            actual: actual.len(),
            expected: expected.len(),
        });
    }
    check_finite("values under test", actual)?;
    check_finite("reference", expected)
}

fn check_finite<T: Float>(side: &'static str, values: &[T]) -> Result<(), CompareError> {
    match values.iter().position(|v| !v.to_f64().is_finite()) {
        Some(index) => Err(CompareError::NonFinite {
            side,
            index,
            value: values[index].to_f64(),
        }),
        None => Ok(()),
    }
}

/// The float types a comparison accepts.
pub trait Float: Copy {
    /// The value as `f64` (exact for `f32` and `f64`).
    fn to_f64(self) -> f64;
}

impl Float for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Float for f64 {
    fn to_f64(self) -> f64 {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_infinity_fail_on_either_side() {
        assert!(matches!(
            max_abs_diff(&[1.0f32, f32::NAN], &[1.0f32, 2.0]),
            Err(CompareError::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            max_abs_diff(&[1.0f32], &[f32::INFINITY]),
            Err(CompareError::NonFinite {
                side: "reference",
                ..
            })
        ));
    }

    #[test]
    fn length_mismatch_fails() {
        assert_eq!(
            max_abs_diff(&[1.0f32, 2.0], &[1.0f32]),
            Err(CompareError::LengthMismatch {
                actual: 2,
                expected: 1
            })
        );
    }

    #[test]
    fn worst_difference_is_located() {
        let d = max_abs_diff(&[1.0f32, 2.5, 3.0], &[1.0f64, 2.0, 3.1]).unwrap();
        assert_eq!(d.index, 1);
        assert!((d.value - 0.5).abs() < 1e-12);
    }

    #[test]
    fn relative_and_rms_tolerances_scale() {
        // 600 vs 600.01: absolute 1e-2, relative 1.7e-5.
        assert!(Tolerance::absolute(1e-3)
            .check("x", &[600.01f64], &[600.0f64])
            .is_err());
        assert!(Tolerance::relative(1e-4)
            .check("x", &[600.01f64], &[600.0f64])
            .is_ok());
        // Gradients of RMS 2e-3: an absolute 1e-4 allows 4% errors, the RMS bound does not.
        let g = [2e-3f64, -2e-3, 2e-3, -2e-3];
        let off: Vec<f64> = g.iter().map(|v| v * 1.04).collect();
        assert!(Tolerance::absolute(1e-4).check("g", &off, &g).is_ok());
        assert!(Tolerance::rms_relative(1e-4).check("g", &off, &g).is_err());
    }

    #[test]
    #[should_panic(expected = "exceeds")]
    fn assert_close_panics_beyond_the_bound() {
        assert_close("x", &[1.0f32], &[2.0f32], Tolerance::absolute(0.5));
    }
}
