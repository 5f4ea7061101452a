//! The masked causal-LM loss of supervised fine-tuning.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use crate::error::{Result, TrainError};
use crate::llama::sft::data::{SftSample, IGNORE_INDEX};
use crate::llama::Llama;

/// Next-token cross-entropy as HF's `ForCausalLMLoss`: logits at `t` predict `labels[t + 1]`;
/// labels equal to [`IGNORE_INDEX`] are skipped; the mean is over counted tokens.
///
/// Returns the scalar loss and the number of counted tokens. Fails if no token counts or a
/// label is outside the vocabulary.
pub fn causal_lm_loss<B: Backend>(
    logits: Tensor<B, 3>,
    labels: &[i64],
) -> Result<(Tensor<B, 1>, usize)> {
    let [b, t, v] = logits.dims();
    if labels.len() != b * t {
        return Err(TrainError::InvalidArgument(format!(
            "labels hold {} values for a [{b}, {t}] batch",
            labels.len()
        )));
    }
    let device = logits.device();
    let mut targets = Vec::with_capacity(b * (t - 1).max(1));
    let mut weights = Vec::with_capacity(b * t);
    let mut count = 0usize;
    for row in 0..b {
        for i in 0..t.saturating_sub(1) {
            let y = labels[row * t + i + 1];
            if y == IGNORE_INDEX {
                targets.push(0i64);
                weights.push(0.0f32);
            } else if y < 0 || y as usize >= v {
                return Err(TrainError::InvalidArgument(format!(
                    "label {y} outside the vocabulary ({v})"
                )));
            } else {
                targets.push(y);
                weights.push(1.0);
                count += 1;
            }
        }
    }
    if count == 0 {
        return Err(TrainError::InvalidArgument(
            "no label counts in the loss (all ignored)".into(),
        ));
    }
    let n = b * (t - 1);
    let logits = logits.narrow(1, 0, t - 1).reshape([n, v]);
    let logits = if logits.dtype() != DType::F32 {
        logits.cast(DType::F32)
    } else {
        logits
    };
    let logp = log_softmax(logits, 1);
    let idx = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
    let picked = logp.gather(1, idx).reshape([n]);
    let w = Tensor::<B, 1>::from_data(TensorData::new(weights, [n]), &device);
    let loss = (picked * w).sum().neg().div_scalar(count as f64);
    Ok((loss, count))
}

/// Loss of one batch of samples, right-padded with `pad_id` (padding labels ignored).
/// Right padding is exact for a causal model: real tokens never attend to later padding.
pub fn batch_loss<B: Backend>(
    model: &Llama<B>,
    samples: &[&SftSample],
    pad_id: u32,
) -> Result<(Tensor<B, 1>, usize)> {
    let t = samples.iter().map(|s| s.len()).max().unwrap_or(0);
    if samples.is_empty() || t < 2 {
        return Err(TrainError::InvalidArgument("empty batch".into()));
    }
    let b = samples.len();
    let mut ids = Vec::with_capacity(b * t);
    let mut labels = Vec::with_capacity(b * t);
    for s in samples {
        ids.extend(s.input_ids.iter().map(|&x| x as i64));
        ids.extend(std::iter::repeat_n(pad_id as i64, t - s.len()));
        labels.extend_from_slice(&s.labels);
        labels.extend(std::iter::repeat_n(IGNORE_INDEX, t - s.len()));
    }
    let input = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, t]), &model.device());
    causal_lm_loss(model.forward(input), &labels)
}
