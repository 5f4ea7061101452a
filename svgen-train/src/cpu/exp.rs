//! `exp` for `f32` written so it vectorises, shared by the attention kernels and the GEGLU `erf`.

/// `a·b + c`, fused when the variant is compiled with FMA (otherwise `mul_add` would be a
/// library call).
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `e^x` for `f32`, written so it vectorises: `x = n·ln2 + r` with `|r| ≤ ln2/2`,
/// `e^r` by a degree-7 Taylor polynomial (truncation below 6e-9 relative), scaled by `2^n`
/// through the exponent bits. Relative error against `f32::exp` is below 3e-7 on
/// `[-87.33, 88]`; `x < -87.33` (results below the smallest normal float, including `-∞`) gives
/// `0`, and `x > 88` gives `+∞` (`e^88.72` is the largest finite float; the kernel only
/// exponentiates `x ≤ 0`). NaN is not propagated (callers never pass one).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    exp_lane::<false>(x)
}

/// [`exp_f32`] with fused multiply-adds in the variants compiled for FMA.
#[inline(always)]
pub(crate) fn exp_lane<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| < 2^9
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5·2^23: adding it rounds to the nearest integer, kept in the low mantissa bits
    const ROUND: f32 = 12_582_912.0;
    const LO: f32 = -87.336_55;
    const HI: f32 = 88.0;
    let xc = if x > LO { x } else { LO };
    let xc = if xc < HI { xc } else { HI };
    let t = madd::<FMA>(xc, LOG2E, ROUND);
    let n = t - ROUND;
    let r = madd::<FMA>(-n, LN2_LO, madd::<FMA>(-n, LN2_HI, xc));
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = madd::<FMA>(p, r, c);
    }
    // 2^n: the integer n sits in the low mantissa bits of t; n ∈ [-126, 127] is a normal scale
    let biased = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32 - 127);
    let y = p * f32::from_bits((biased << 23) as u32);
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_over_the_normal_range() {
        let mut worst = 0.0f64;
        let n = 200_000;
        for i in 0..=n {
            let x = -87.3 + 175.3 * i as f32 / n as f32;
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        assert!(exp_f32(88.0).is_finite());
    }
}
