//! KV-cache text generation (greedy and sampled) with SVG extraction and validation.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};

use crate::error::{Result, TrainError};
use crate::llama::tokenizer::{LlamaTokenizer, END_SVG};
use crate::llama::{KvCache, Llama};
use crate::nn::tensor::host_f32;

/// Decoding settings (HF `generate` names). `temperature == 0` means greedy.
///
/// ```
/// let cfg = svgen_train::GenerationConfig { max_new_tokens: 32, ..Default::default() };
/// assert!(cfg.is_greedy());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Upper bound on generated tokens per prompt.
    pub max_new_tokens: usize,
    /// Softmax temperature; `0.0` selects greedy decoding.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (`0`: off).
    pub top_k: usize,
    /// Nucleus sampling mass (`1.0`: off).
    pub top_p: f32,
    /// HF repetition penalty over prompt and generated tokens (`1.0`: off).
    pub repetition_penalty: f32,
    /// Seed of the sampler.
    pub seed: u64,
    /// Token ids that end a sequence (EOS, `<|eot_id|>`, `<|end_svg|>`); kept in the output.
    pub stop_token_ids: Vec<u32>,
    /// Texts that end a sequence once decoded (default `</svg>`); needs a tokenizer. A model
    /// trained in the thesis' format ends its SVG with `<|end_svg|>`: clear this list to let it
    /// stop there by itself ([`StopReason::StopToken`]).
    pub stop_strings: Vec<String>,
    /// Id used for left padding and for rows that already stopped.
    pub pad_token_id: u32,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
            stop_token_ids: Vec::new(),
            stop_strings: vec!["</svg>".into()],
            pad_token_id: 0,
        }
    }
}

impl GenerationConfig {
    /// Whether decoding is greedy.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Adds the model's EOS ids and the tokenizer's `<|end_svg|>` / `<|eot_id|>` as stops.
    pub fn with_default_stops<B: Backend>(
        mut self,
        model: &Llama<B>,
        tokenizer: Option<&LlamaTokenizer>,
    ) -> Self {
        self.stop_token_ids
            .extend(model.config().eos_token_ids.iter().copied());
        if let Some(tok) = tokenizer {
            for t in [END_SVG, "<|eot_id|>", "<|end_of_text|>"] {
                if let Some(id) = tok.token_id(t) {
                    self.stop_token_ids.push(id);
                }
            }
        }
        self.stop_token_ids.sort_unstable();
        self.stop_token_ids.dedup();
        self
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(TrainError::InvalidArgument(m.into()));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad("temperature must be finite and >= 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p must be in (0, 1]");
        }
        if !self.repetition_penalty.is_finite() || self.repetition_penalty <= 0.0 {
            return bad("repetition_penalty must be > 0");
        }
        Ok(())
    }
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A stop token id was produced.
    StopToken,
    /// A stop string appeared in the decoded text.
    StopString,
    /// `max_new_tokens` was reached.
    MaxNewTokens,
}

/// One generated continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOutput {
    /// New token ids (the stop token included, as HF does).
    pub token_ids: Vec<u32>,
    /// Why generation ended.
    pub stop_reason: StopReason,
    /// Decoded text (special tokens skipped), when a tokenizer was given.
    pub text: Option<String>,
}

/// Applies HF's logits processors in HF order (repetition penalty, temperature, top-k, top-p)
/// and picks the next token.
fn pick(
    logits: &mut [f32],
    seen: &[u32],
    cfg: &GenerationConfig,
    rng: &mut rand::rngs::StdRng,
) -> u32 {
    if cfg.repetition_penalty != 1.0 {
        let mut ids: Vec<u32> = seen.to_vec();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = if *l < 0.0 {
                    *l * cfg.repetition_penalty
                } else {
                    *l / cfg.repetition_penalty
                };
            }
        }
    }
    let argmax = |l: &[f32]| {
        let mut best = 0usize;
        for (i, &v) in l.iter().enumerate() {
            if v > l[best] {
                best = i;
            }
        }
        best as u32
    };
    if cfg.is_greedy() {
        return argmax(logits);
    }
    for l in logits.iter_mut() {
        *l /= cfg.temperature;
    }
    let order = candidates(logits, cfg);
    let max = logits[order[0]];
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] - max) as f64).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    if cfg.top_p < 1.0 {
        // Smallest prefix whose mass reaches top_p (at least one token).
        let mut acc = 0.0;
        let mut n = 0;
        for p in &probs {
            acc += p / total;
            n += 1;
            if acc >= cfg.top_p as f64 {
                break;
            }
        }
        probs.truncate(n.max(1));
    }
    let total: f64 = probs.iter().sum();
    if !(total.is_finite() && total > 0.0) {
        return argmax(logits);
    }
    let mut x = rng.random::<f64>() * total;
    for (k, p) in probs.iter().enumerate() {
        x -= p;
        if x <= 0.0 {
            return order[k] as u32;
        }
    }
    order[probs.len() - 1] as u32
}

/// The tokens sampling draws from, the most likely first (`order[0]` is the largest logit by
/// `total_cmp`, ties broken by the lower id). No sort of the whole vocabulary unless top-p
/// needs it: top-k selects its `k` tokens in linear time (`select_nth_unstable_by`) and sorts
/// only those (top-p then walks them); with neither, the vocabulary stays in id order behind
/// its largest logit. The kept set and its order are those of a full descending sort.
fn candidates(logits: &[f32], cfg: &GenerationConfig) -> Vec<usize> {
    let desc = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    let mut order: Vec<usize> = (0..logits.len()).collect();
    if cfg.top_k > 0 {
        if cfg.top_k < order.len() {
            order.select_nth_unstable_by(cfg.top_k - 1, desc);
            order.truncate(cfg.top_k);
        }
        order.sort_unstable_by(desc);
    } else if cfg.top_p < 1.0 {
        order.sort_unstable_by(desc);
    } else if let Some(first) = order.iter().copied().min_by(desc) {
        order.swap(0, first);
    }
    order
}

/// Generates continuations for a batch of prompts with a KV cache.
pub struct Generator<'a, B: Backend> {
    model: &'a Llama<B>,
    tokenizer: Option<&'a LlamaTokenizer>,
}

impl<'a, B: Backend> Generator<'a, B> {
    /// A generator over a model and, for stop strings and text output, a tokenizer.
    pub fn new(model: &'a Llama<B>, tokenizer: Option<&'a LlamaTokenizer>) -> Self {
        Self { model, tokenizer }
    }

    /// Generates for each prompt (prompts of different lengths are left-padded and masked).
    /// Stop strings are checked only when the generator has a tokenizer.
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        cfg: &GenerationConfig,
    ) -> Result<Vec<GenerationOutput>> {
        cfg.validate()?;
        svgen_eval::gpu::note_first_step::<B>("generation");
        let vocab = self.model.config().vocab_size;
        if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
            return Err(TrainError::InvalidArgument("empty prompt".into()));
        }
        if let Some(&bad) = prompts.iter().flatten().find(|&&id| id as usize >= vocab) {
            return Err(TrainError::InvalidArgument(format!(
                "prompt token id {bad} is outside the vocabulary ({vocab})"
            )));
        }
        let b = prompts.len();
        let t = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let device = self.model.device();
        let mut ids = Vec::with_capacity(b * t);
        let mut mask = Vec::with_capacity(b);
        for p in prompts {
            let pad = t - p.len();
            ids.extend(std::iter::repeat_n(cfg.pad_token_id as i64, pad));
            ids.extend(p.iter().map(|&x| x as i64));
            let mut m = vec![false; pad];
            m.extend(std::iter::repeat_n(true, p.len()));
            mask.push(m);
        }
        let mut cache = KvCache::<B>::new(self.model.layers.len(), b);
        let input = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, t]), &device);
        let h = self.model.forward_cached(input, &mask, &mut cache)?;
        let mut logits = host_f32(self.model.logits(h.narrow(1, t - 1, 1)));

        let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
        let mut seen: Vec<Vec<u32>> = prompts.to_vec();
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
        let mut done: Vec<Option<StopReason>> = vec![None; b];
        for step in 0..cfg.max_new_tokens {
            let mut next = Vec::with_capacity(b);
            for row in 0..b {
                if done[row].is_some() {
                    next.push(cfg.pad_token_id);
                    continue;
                }
                let l = &mut logits[row * vocab..(row + 1) * vocab];
                let id = pick(l, &seen[row], cfg, &mut rng);
                out[row].push(id);
                seen[row].push(id);
                next.push(id);
                if cfg.stop_token_ids.contains(&id) {
                    done[row] = Some(StopReason::StopToken);
                } else if let Some(tok) = self.tokenizer.filter(|_| !cfg.stop_strings.is_empty()) {
                    // Decode a short tail: enough for any stop string spanning tokens.
                    let tail = &out[row][out[row].len().saturating_sub(16)..];
                    let text = tok.decode(tail, false)?;
                    if cfg.stop_strings.iter().any(|s| text.contains(s.as_str())) {
                        done[row] = Some(StopReason::StopString);
                    }
                }
            }
            if done.iter().all(Option::is_some) || step + 1 == cfg.max_new_tokens {
                break;
            }
            let input = Tensor::<B, 2, Int>::from_data(
                TensorData::new(next.iter().map(|&x| x as i64).collect::<Vec<_>>(), [b, 1]),
                &device,
            );
            let h = self
                .model
                .forward_cached(input, &vec![vec![true]; b], &mut cache)?;
            logits = host_f32(self.model.logits(h));
        }
        out.into_iter()
            .zip(done)
            .map(|(token_ids, d)| {
                let text = match self.tokenizer {
                    Some(tok) => Some(tok.decode(&token_ids, true)?),
                    None => None,
                };
                Ok(GenerationOutput {
                    token_ids,
                    stop_reason: d.unwrap_or(StopReason::MaxNewTokens),
                    text,
                })
            })
            .collect()
    }
}

/// Counts of valid / invalid SVGs among generated texts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SvgReport {
    /// Outputs that parsed as they were.
    pub valid: usize,
    /// Outputs that parsed only after repairing an unclosed tail.
    pub repaired: usize,
    /// Outputs that did not parse (or held no `<svg`).
    pub invalid: usize,
}

/// Cuts the `<svg …>…</svg>` document out of generated text.
pub fn extract_svg(text: &str) -> Option<&str> {
    let start = text.find("<svg")?;
    let rest = &text[start..];
    match rest.find("</svg>") {
        Some(end) => Some(&rest[..end + "</svg>".len()]),
        None => Some(rest),
    }
}

/// Repairs an SVG whose generation stopped early: drops a trailing partial tag, then closes
/// every still-open element in order. Returns `None` when there is nothing to repair.
pub fn repair_unclosed(svg: &str) -> Option<String> {
    let cut = match (svg.rfind('<'), svg.rfind('>')) {
        (Some(lt), Some(gt)) if lt > gt => &svg[..lt],
        (Some(_), None) => return None,
        _ => svg,
    };
    let mut stack: Vec<&str> = Vec::new();
    let mut i = 0;
    let bytes = cut.as_bytes();
    while let Some(off) = cut[i..].find('<') {
        let s = i + off;
        let Some(e_off) = cut[s..].find('>') else {
            break;
        };
        let e = s + e_off;
        let tag = &cut[s + 1..e];
        if let Some(closing) = tag.strip_prefix('/') {
            let name = closing.trim();
            if let Some(pos) = stack.iter().rposition(|n| *n == name) {
                stack.truncate(pos);
            }
        } else if !(tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/')) {
            let name = tag
                .split(|c: char| c.is_whitespace())
                .next()
                .unwrap_or_default();
            if !name.is_empty() {
                stack.push(name);
            }
        }
        i = e + 1;
        if i >= bytes.len() {
            break;
        }
    }
    if stack.is_empty() {
        return None;
    }
    let mut fixed = cut.trim_end().to_string();
    for name in stack.iter().rev() {
        fixed.push_str("</");
        fixed.push_str(name);
        fixed.push('>');
    }
    Some(fixed)
}

/// Validates generated texts through [`svgen_core::Svg::parse`]; with `repair`, an unclosed
/// tail is closed before giving up. Returns per-output SVGs (None when invalid) and counts.
pub fn validate_svgs<S: AsRef<str>>(texts: &[S], repair: bool) -> (Vec<Option<String>>, SvgReport) {
    let mut report = SvgReport::default();
    let mut out = Vec::with_capacity(texts.len());
    for t in texts {
        let Some(svg) = extract_svg(t.as_ref()) else {
            report.invalid += 1;
            out.push(None);
            continue;
        };
        if svgen_core::Svg::parse(svg.as_bytes()).is_ok() {
            report.valid += 1;
            out.push(Some(svg.to_string()));
            continue;
        }
        let fixed = repair
            .then(|| repair_unclosed(svg))
            .flatten()
            .filter(|f| svgen_core::Svg::parse(f.as_bytes()).is_ok());
        match fixed {
            Some(f) => {
                report.repaired += 1;
                out.push(Some(f));
            }
            None => {
                report.invalid += 1;
                out.push(None);
            }
        }
    }
    (out, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_closes_open_elements_and_drops_partial_tag() {
        let s = r#"<svg viewBox="0 0 4 4"><g fill="red"><path d="M0 0L4 4"/><circ"#;
        assert_eq!(
            repair_unclosed(s).unwrap(),
            r#"<svg viewBox="0 0 4 4"><g fill="red"><path d="M0 0L4 4"/></g></svg>"#
        );
        assert_eq!(repair_unclosed("<svg></svg>"), None);
    }

    #[test]
    fn validation_counts_valid_repaired_invalid() {
        let texts = [
            r#"ok: <svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 4 4"><rect width="2" height="2"/></svg> tail"#,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 4 4"><g><rect width="2" height="2"/>"#,
            "no svg here",
        ];
        let (svgs, r) = validate_svgs(&texts, true);
        assert_eq!(
            r,
            SvgReport {
                valid: 1,
                repaired: 1,
                invalid: 1
            }
        );
        assert!(svgs[0].as_ref().unwrap().ends_with("</svg>"));
        let (_, r) = validate_svgs(&texts, false);
        assert_eq!(
            r,
            SvgReport {
                valid: 1,
                repaired: 0,
                invalid: 2
            }
        );
    }

    #[test]
    fn sampling_processors() {
        let cfg = GenerationConfig {
            temperature: 1.0,
            top_k: 1,
            ..Default::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        // top_k = 1 is greedy whatever the seed.
        for _ in 0..10 {
            assert_eq!(pick(&mut [0.1, 3.0, 2.9], &[], &cfg, &mut rng), 1);
        }
        // A strong repetition penalty moves greedy off a seen token.
        let greedy = GenerationConfig {
            repetition_penalty: 10.0,
            ..Default::default()
        };
        assert_eq!(pick(&mut [0.1, 3.0, 2.9], &[1], &greedy, &mut rng), 2);
        // top_p small keeps only the top token.
        let p = GenerationConfig {
            temperature: 1.0,
            top_p: 0.01,
            ..Default::default()
        };
        for _ in 0..10 {
            assert_eq!(pick(&mut [0.0, 5.0, 1.0], &[], &p, &mut rng), 1);
        }
        // Plain sampling hits every token of a flat distribution.
        let flat = GenerationConfig {
            temperature: 1.0,
            ..Default::default()
        };
        let mut hit = [false; 3];
        for _ in 0..200 {
            hit[pick(&mut [0.0, 0.0, 0.0], &[], &flat, &mut rng) as usize] = true;
        }
        assert_eq!(hit, [true; 3]);
    }

    /// The sampler before top-k selection: a full descending sort of the vocabulary.
    fn full_sort_candidates(logits: &[f32], cfg: &GenerationConfig) -> Vec<usize> {
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if cfg.top_k > 0 {
            order.truncate(cfg.top_k);
        }
        order
    }

    #[test]
    fn top_k_selection_keeps_the_full_sort_order() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for trial in 0..50 {
            // Coarse values give many ties.
            let logits: Vec<f32> = (0..257)
                .map(|_| (rng.random::<f32>() * 20.0).round() - 10.0)
                .collect();
            for (top_k, top_p) in [(1, 1.0), (5, 1.0), (40, 0.9), (300, 0.5), (0, 0.8)] {
                let cfg = GenerationConfig {
                    temperature: 1.0,
                    top_k,
                    top_p,
                    ..Default::default()
                };
                assert_eq!(
                    candidates(&logits, &cfg),
                    full_sort_candidates(&logits, &cfg),
                    "trial {trial}, top_k {top_k}, top_p {top_p}"
                );
            }
            // Neither: the same set, the largest logit first.
            let plain = GenerationConfig {
                temperature: 1.0,
                ..Default::default()
            };
            let got = candidates(&logits, &plain);
            let want = full_sort_candidates(&logits, &plain);
            assert_eq!(got[0], want[0]);
            let mut sorted = got.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..logits.len()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn plain_sampling_follows_the_softmax() {
        let cfg = GenerationConfig {
            temperature: 1.0,
            ..Default::default()
        };
        let logits = [0.0f32, 1.0, -1.0, 2.0];
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let n = 20_000;
        let mut hits = [0usize; 4];
        for _ in 0..n {
            hits[pick(&mut logits.clone(), &[], &cfg, &mut rng) as usize] += 1;
        }
        for (i, &h) in hits.iter().enumerate() {
            let p = (logits[i] as f64).exp() / z;
            // Five standard deviations of a binomial frequency.
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            let f = h as f64 / n as f64;
            assert!((f - p).abs() < 5.0 * sd, "token {i}: {f} vs {p}");
        }
    }
}
