//! PEFT loads our adapters: `llama3-tied/adapter-ours/` was saved by our trainer (the
//! `finetune_llm` example), and `tools/fixtures/check_peft_load.py` loaded it with
//! `peft.PeftModel.from_pretrained` and recorded the logits PEFT computes with it in
//! `reference_ours.safetensors`. The same adapter in our model gives the same logits.

mod common;
use common::*;

#[test]
fn peft_computes_our_logits_with_an_adapter_we_saved() {
    let adapter = fixture("llama3-tied/adapter-ours");
    let (model, cfg) = load("llama3-tied").with_peft_adapter(&adapter).unwrap();
    assert_eq!((cfg.r, cfg.target_modules.len()), (8, 7));
    let (ids, shape, expected) = reference(fixture("llama3-tied/reference_ours.safetensors"));
    let ours = to_vec(model.forward(ids.clone()).unwrap());
    assert_eq!(shape, vec![2, 24, model.config().vocab_size]);
    let diff = max_abs_diff(&ours, &expected);
    assert!(diff <= 1e-4, "max abs diff {diff} against PEFT");
    // The trained adapter matters: the base alone is far from PEFT's logits.
    let base = to_vec(load("llama3-tied").forward(ids).unwrap());
    assert!(max_abs_diff(&base, &expected) > 1e-2);
}
