//! Fitting an SVG into a token budget with the least visible change.
//!
//! [`fit_to_budget`] searches the options of [`compact`](crate::compact::compact) (coordinate
//! precision and simplification tolerance) for the output with the lowest raster error whose
//! token count is within the budget.
//!
//! ```
//! use svgen_core::{budget::fit_to_budget, Cl100k, Svg};
//! let svg = Svg::parse(br#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">
//!     <path d="M3.14159 2.71828L20.0001 2.71828L20.0001 20.0001Z"/></svg>"#).unwrap();
//! let fitted = fit_to_budget(&svg, &Cl100k::new(), 60, 0.02).unwrap();
//! assert!(fitted.tokens <= 60 && fitted.error <= 0.02);
//! ```

use crate::compact::{compact, CompactOptions, Precision};
use crate::metrics::compare_svgs;
use crate::tokens::TokenCounter;
use crate::{Svg, SvgError};

/// Side of the square canvas on which [`fit_to_budget`] measures raster error.
pub const ERROR_RENDER_SIZE: u32 = 256;

/// The precisions tried, as viewBox steps per unit of the last decimal
/// ([`Precision::Relative`]), finest first.
const STEPS: [u32; 6] = [10_000, 1_000, 300, 100, 30, 10];

/// Simplification tolerances tried, in units of the viewBox size divided by the steps.
const TOLERANCES: [f64; 3] = [0.0, 1.0, 3.0];

/// The result of [`fit_to_budget`].
#[derive(Debug, Clone)]
pub struct Fitted {
    /// The compacted document.
    pub svg: String,
    /// Its token count under the counter that was passed in.
    pub tokens: usize,
    /// Mean absolute raster error against the input (RGB over white, `[0, 1]`), measured at
    /// [`ERROR_RENDER_SIZE`] px.
    pub error: f64,
    /// The options that produced it.
    pub options: CompactOptions,
}

/// Why no output could be fitted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// Even the coarsest compaction needs more tokens than allowed.
    #[error("no compaction fits in {max_tokens} tokens; the fewest reachable is {best_tokens}")]
    OverBudget {
        /// The budget asked for.
        max_tokens: usize,
        /// The smallest token count any tried option reached.
        best_tokens: usize,
    },
    /// Outputs fit the budget, but all of them change the picture more than allowed.
    #[error(
        "outputs within {max_tokens} tokens change the picture too much: best error \
         {best_error:.5} (at {tokens} tokens) exceeds {max_error}"
    )]
    TooLossy {
        /// The budget asked for.
        max_tokens: usize,
        /// The error bound asked for.
        max_error: f64,
        /// The lowest error among outputs within the budget.
        best_error: f64,
        /// That output's token count.
        tokens: usize,
    },
    /// A compacted document failed to parse again (a bug; reported rather than hidden).
    #[error("a compacted document does not parse: {0}")]
    Reparse(#[from] SvgError),
    /// The error bound is not a number in `[0, 1]`.
    #[error("max_error must be in [0, 1], got {0}")]
    InvalidMaxError(f64),
}

/// The candidate option sets, most faithful first.
fn candidates(svg: &Svg) -> Vec<CompactOptions> {
    let (w, h) = match svg.view_box() {
        Some(vb) => (vb.width, vb.height),
        None => (svg.width(), svg.height()),
    };
    let side = f64::from(w.max(h)).max(f64::MIN_POSITIVE);
    let mut out = Vec::new();
    for steps in STEPS {
        for tol in TOLERANCES {
            out.push(CompactOptions {
                precision: Precision::Relative(steps),
                simplify_tolerance: tol * side / f64::from(steps),
                ..CompactOptions::default()
            });
        }
    }
    out
}

/// Finds the compaction of `svg` with the lowest raster error whose token count under
/// `counter` is at most `max_tokens`, and whose error is at most `max_error` (mean absolute
/// RGB error over white, `[0, 1]`, at [`ERROR_RENDER_SIZE`] px).
///
/// The search covers coordinate precisions from 1/10000 to 1/10 of the viewBox and
/// simplification tolerances of 0, 1 and 3 units of the last decimal.
pub fn fit_to_budget(
    svg: &Svg,
    counter: &dyn TokenCounter,
    max_tokens: usize,
    max_error: f64,
) -> Result<Fitted, BudgetError> {
    if !(0.0..=1.0).contains(&max_error) {
        return Err(BudgetError::InvalidMaxError(max_error));
    }
    let mut best_tokens = usize::MAX;
    let mut best: Option<Fitted> = None;
    let mut seen: Vec<String> = Vec::new();
    for options in candidates(svg) {
        let text = compact(svg, &options);
        if seen.contains(&text) {
            continue;
        }
        let tokens = counter.count(&text);
        best_tokens = best_tokens.min(tokens);
        seen.push(text.clone());
        if tokens > max_tokens {
            continue;
        }
        let reparsed = Svg::parse(text.as_bytes())?;
        let error = compare_svgs(svg, &reparsed, ERROR_RENDER_SIZE).mean_abs_error;
        let better = best
            .as_ref()
            .is_none_or(|b| error < b.error || (error == b.error && tokens < b.tokens));
        if better {
            best = Some(Fitted {
                svg: text,
                tokens,
                error,
                options,
            });
        }
        if error == 0.0 {
            // Candidates come most faithful first: nothing later can be better.
            break;
        }
    }
    match best {
        None => Err(BudgetError::OverBudget {
            max_tokens,
            best_tokens,
        }),
        Some(b) if b.error > max_error => Err(BudgetError::TooLossy {
            max_tokens,
            max_error,
            best_error: b.error,
            tokens: b.tokens,
        }),
        Some(b) => Ok(b),
    }
}
