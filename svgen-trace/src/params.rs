//! Tracing parameters, with potrace's defaults.

use serde::{Deserialize, Serialize};

use crate::TraceError;

/// How to resolve ambiguous pixel configurations (two diagonal black pixels meeting at a
/// corner) during path decomposition — potrace's `-z`/`--turnpolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TurnPolicy {
    /// Prefer to connect black components.
    Black,
    /// Prefer to connect white components.
    White,
    /// Always take a left turn.
    Left,
    /// Always take a right turn.
    Right,
    /// Prefer to connect the colour that is in the minority locally (potrace's default).
    #[default]
    Minority,
    /// Prefer to connect the colour that is in the majority locally.
    Majority,
    /// Choose by potrace's deterministic pseudo-random function of the position.
    Random,
}

impl std::str::FromStr for TurnPolicy {
    type Err = TraceError;

    /// Parses potrace's names (`black`, `white`, `left`, `right`, `minority`, `majority`,
    /// `random`); like potrace, any unambiguous prefix is accepted.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const ALL: [(&str, TurnPolicy); 7] = [
            ("black", TurnPolicy::Black),
            ("white", TurnPolicy::White),
            ("left", TurnPolicy::Left),
            ("right", TurnPolicy::Right),
            ("minority", TurnPolicy::Minority),
            ("majority", TurnPolicy::Majority),
            ("random", TurnPolicy::Random),
        ];
        let s = s.to_ascii_lowercase();
        let mut hits = ALL
            .iter()
            .filter(|(n, _)| !s.is_empty() && n.starts_with(&s));
        match (hits.next(), hits.next()) {
            (Some((_, p)), None) => Ok(*p),
            _ => Err(TraceError::InvalidParam {
                name: "turnpolicy",
                reason: format!("unknown or ambiguous turn policy {s:?}"),
            }),
        }
    }
}

/// Parameters of the tracing algorithm. [`Default`] equals potrace 1.16's defaults.
///
/// ```
/// use svgen_trace::{TraceParams, TurnPolicy};
/// let p = TraceParams::default();
/// assert_eq!((p.turdsize, p.turnpolicy, p.alphamax), (2, TurnPolicy::Minority, 1.0));
/// assert!(p.opticurve && p.opttolerance == 0.2);
/// // Serialisable, e.g. for experiment configs:
/// let json = serde_json::to_string(&p).unwrap();
/// assert!(json.contains("\"turnpolicy\":\"minority\""));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TraceParams {
    /// Paths enclosing an area of at most this many pixels are dropped ("speckles", `-t`).
    pub turdsize: u32,
    /// Resolution of ambiguous configurations (`-z`).
    pub turnpolicy: TurnPolicy,
    /// Corner threshold (`-a`): 0 makes every vertex a corner, ≥ 4/3 gives no corners.
    pub alphamax: f64,
    /// Join adjacent Bézier segments where possible (off with potrace's `-n`).
    pub opticurve: bool,
    /// Maximal error allowed when joining curve segments (`-O`).
    pub opttolerance: f64,
}

impl Default for TraceParams {
    fn default() -> Self {
        TraceParams {
            turdsize: 2,
            turnpolicy: TurnPolicy::Minority,
            alphamax: 1.0,
            opticurve: true,
            opttolerance: 0.2,
        }
    }
}

impl TraceParams {
    /// Checks that the floating-point parameters are finite and non-negative.
    pub fn validate(&self) -> Result<(), TraceError> {
        for (name, v) in [
            ("alphamax", self.alphamax),
            ("opttolerance", self.opttolerance),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(TraceError::InvalidParam {
                    name,
                    reason: format!("must be finite and >= 0, got {v}"),
                });
            }
        }
        Ok(())
    }
}
