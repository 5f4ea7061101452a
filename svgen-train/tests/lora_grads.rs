//! LoRA training touches only the adapters: after a backward pass through the masked LM
//! loss, every `lora_A`/`lora_B` of every targeted module has a gradient of its own
//! (low-rank) shape, and no base parameter (embeddings, norms, linear weights, lm_head) has
//! one, so no dense `[in, out]` weight update is ever formed.

mod common;
use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use svgen_train::llama::sft::causal_lm_loss;
use svgen_train::{Llama, LoadOptions, LoraConfig};

type AB = Autodiff<B>;

/// Every float parameter's module path, shape and gradient shape (if any).
struct GradCensus<'a, AD: AutodiffBackend> {
    grads: &'a AD::Gradients,
    path: Vec<String>,
    rows: Vec<(String, Vec<usize>, Option<Vec<usize>>)>,
}

impl<AD: AutodiffBackend> ModuleVisitor<AD> for GradCensus<'_, AD> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AD, D>>) {
        let tensor = param.val();
        let grad = tensor.grad(self.grads).map(|g| g.dims().to_vec());
        self.rows
            .push((self.path.join("."), tensor.dims().to_vec(), grad));
    }
}

fn census(untied: bool, dropout: f64) {
    let name = if untied {
        "llama3-untied-bf16-sharded"
    } else {
        "llama3-tied"
    };
    let device = Default::default();
    let lora = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: dropout,
        ..LoraConfig::default()
    };
    let model = Llama::<AB>::from_pretrained(fixture(name), LoadOptions::default(), &device)
        .unwrap()
        .with_lora(&lora, 3)
        .unwrap();
    let vocab = model.config().vocab_size as i64;
    let t = 12;
    let ids: Vec<i64> = (0..t as i64).map(|i| (i * 29 + 3) % vocab).collect();
    let input = Tensor::<AB, 2, Int>::from_data(TensorData::new(ids.clone(), [1, t]), &device);
    let (loss, _) = causal_lm_loss(model.forward(input).unwrap(), &ids).unwrap();
    let grads = loss.backward();
    let mut visitor = GradCensus::<AB> {
        grads: &grads,
        path: Vec::new(),
        rows: Vec::new(),
    };
    model.visit(&mut visitor);

    let cfg = model.config().clone();
    let mut adapters = 0;
    let mut base = 0;
    for (path, shape, grad) in &visitor.rows {
        if path.contains("lora_a") || path.contains("lora_b") {
            adapters += 1;
            let grad = grad
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: adapter `{path}` has no gradient"));
            assert_eq!(grad, shape, "{name}: gradient shape of `{path}`");
            assert!(
                shape.contains(&lora.r),
                "{name}: `{path}` {shape:?} is not low-rank"
            );
        } else {
            base += 1;
            assert!(
                grad.is_none(),
                "{name}: base parameter `{path}` {shape:?} got a gradient"
            );
        }
    }
    // 7 targeted linears per layer, A and B each; embeddings, final norm, 2 norms and 7
    // weights per layer (+ lm_head when untied).
    assert_eq!(adapters, cfg.num_hidden_layers * 7 * 2, "{name}");
    assert_eq!(
        base,
        2 + cfg.num_hidden_layers * 9 + usize::from(untied),
        "{name}"
    );
}

#[test]
fn only_adapters_get_gradients_tied() {
    census(false, 0.0);
}

#[test]
fn only_adapters_get_gradients_untied_with_dropout() {
    census(true, 0.1);
}
