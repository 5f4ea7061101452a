//! Learning-rate schedules.

/// HF `get_cosine_schedule_with_warmup`: the learning rate at (0-based) `step` for peak `lr`
/// (shared by the Llama and Stable Diffusion trainers).
pub(crate) fn warmup_cosine_lr(
    lr: f64,
    warmup_steps: usize,
    total_steps: usize,
    step: usize,
) -> f64 {
    if step < warmup_steps {
        return lr * step as f64 / warmup_steps.max(1) as f64;
    }
    let span = total_steps.saturating_sub(warmup_steps).max(1);
    let progress = (step - warmup_steps) as f64 / span as f64;
    lr * (0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())).max(0.0)
}
