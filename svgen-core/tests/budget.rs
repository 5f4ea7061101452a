//! fit_to_budget: lowest raster error within a token budget, typed errors otherwise.
use svgen_core::{compare_svgs, fit_to_budget, BudgetError, Cl100k, Svg, TokenCounter};

fn wavy() -> Svg {
    let mut d = String::from("M5.123 50.456");
    for i in 1..60 {
        let x = 5.123 + f64::from(i) * 1.5013;
        let y = 50.456 + 20.0 * (f64::from(i) * 0.3).sin();
        d.push_str(&format!(" L{x:.4} {y:.4}"));
    }
    d.push_str(" L95 95 L5 95z");
    Svg::parse(
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100"><path d="{d}"/></svg>"#
        )
        .as_bytes(),
    )
    .expect("parses")
}

#[test]
fn fits_and_reports_error_and_tokens() {
    let cl = Cl100k::new();
    let svg = wavy();
    let generous = fit_to_budget(&svg, &cl, 100_000, 0.01).expect("fits");
    let tight_budget = generous.tokens * 7 / 10;
    let tight = fit_to_budget(&svg, &cl, tight_budget, 0.05).expect("fits tighter");
    assert!(tight.tokens <= tight_budget);
    assert_eq!(tight.tokens, cl.count(&tight.svg));
    assert!(
        tight.error >= generous.error,
        "{} < {}",
        tight.error,
        generous.error
    );
    let measured = compare_svgs(
        &svg,
        &Svg::parse(tight.svg.as_bytes()).expect("parses"),
        256,
    );
    assert!((measured.mean_abs_error - tight.error).abs() < 1e-12);
    assert!(tight.error <= 0.05);
}

#[test]
fn impossible_budget_reports_best_reachable_count() {
    let cl = Cl100k::new();
    match fit_to_budget(&wavy(), &cl, 10, 0.5) {
        Err(BudgetError::OverBudget {
            max_tokens: 10,
            best_tokens,
        }) => assert!(best_tokens > 10),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn error_bound_is_enforced() {
    let cl = Cl100k::new();
    let svg = wavy();
    let coarse = fit_to_budget(&svg, &cl, 100_000, 1.0).expect("fits");
    // The lowest error any candidate reaches under a very tight budget exceeds a zero bound.
    let budget = coarse.tokens;
    match fit_to_budget(&svg, &cl, budget / 2, 0.0) {
        Err(BudgetError::TooLossy { best_error, .. }) => assert!(best_error > 0.0),
        Err(BudgetError::OverBudget { best_tokens, .. }) => assert!(best_tokens > budget / 2),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        fit_to_budget(&svg, &cl, 1000, f64::NAN),
        Err(BudgetError::InvalidMaxError(_))
    ));
}
