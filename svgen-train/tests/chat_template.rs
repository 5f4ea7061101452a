//! Chat templates and the real tokenizer layouts: token ids equal transformers'
//! `apply_chat_template` for Llama 3.0-, 3.1-, 3.2- and 2-style templates
//! (`tools/fixtures/make_llama3_layout.py`), the Llama 3 `tokenizer.json` layout loads, and bad
//! input gets typed errors.

mod common;
use std::path::{Path, PathBuf};

use common::fixture;
use serde_json::Value;
use svgen_train::llama::chat_template::{ChatOptions, ChatTemplate};
use svgen_train::llama::tokenizer::{
    LlamaTokenizer, PromptFormat, ThesisPrompt, THESIS_SPECIAL_TOKENS,
};
use svgen_train::TrainError;

fn reference() -> Value {
    let p = fixture("llama3-layout/chat_reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The tokenizer folder of a template name; Llama 3.0 / 3.2 templates are assembled in a temp
/// folder from the shared tokenizer.json and their own config files.
fn tokenizer(name: &str, tmp: &Path) -> LlamaTokenizer {
    let dir: PathBuf = match name {
        "llama2" => fixture("llama2-layout/tokenizer"),
        "llama3.1" => fixture("llama3-layout/tokenizer"),
        other => {
            let d = tmp.join(other);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::copy(
                fixture("llama3-layout/tokenizer/tokenizer.json"),
                d.join("tokenizer.json"),
            )
            .unwrap();
            let src = fixture("llama3-layout/chat-templates").join(other);
            for e in std::fs::read_dir(src).unwrap() {
                let p = e.unwrap().path();
                std::fs::copy(&p, d.join(p.file_name().unwrap())).unwrap();
            }
            d
        }
    };
    LlamaTokenizer::from_dir(dir).unwrap()
}

fn options(case: &Value) -> ChatOptions {
    let mut o = ChatOptions {
        add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
        ..ChatOptions::default()
    };
    if let Some(t) = case.get("tools") {
        o.tools = Some(t.as_array().unwrap().clone());
    }
    o.variables = case["kwargs"].as_object().unwrap().clone();
    o
}

#[test]
fn token_ids_equal_apply_chat_template_for_llama_3_0_3_1_3_2_and_2() {
    let tmp = tempfile::tempdir().unwrap();
    let r = reference();
    let names = ["llama3.0", "llama3.1", "llama3.2", "llama2"];
    let toks: Vec<LlamaTokenizer> = names.iter().map(|n| tokenizer(n, tmp.path())).collect();
    let mut per_template = [0usize; 4];
    for case in r["cases"].as_array().unwrap() {
        let t = names
            .iter()
            .position(|n| *n == case["template"].as_str().unwrap())
            .unwrap();
        let label = format!("{} {}", names[t], case["name"].as_str().unwrap());
        let messages = case["messages"].as_array().unwrap();
        let o = options(case);
        let text = toks[t].render_chat(messages, &o).unwrap();
        assert_eq!(text, case["text"].as_str().unwrap(), "{label}: text");
        let got = toks[t].apply_chat_template(messages, &o).unwrap();
        assert_eq!(got, ids(&case["ids"]), "{label}: ids");
        per_template[t] += 1;
    }
    // Every template is covered with system / no system, multi-turn, both generation prompts.
    assert!(per_template.iter().all(|&n| n >= 10), "{per_template:?}");
    for e in r["errors"].as_array().unwrap() {
        let t = names
            .iter()
            .position(|n| *n == e["template"].as_str().unwrap())
            .unwrap();
        match toks[t].render_chat(e["messages"].as_array().unwrap(), &options(e)) {
            Err(TrainError::ChatTemplateException(m)) => {
                assert_eq!(m, e["error"].as_str().unwrap())
            }
            other => panic!("{}: {other:?}", e["name"]),
        }
    }
}

#[test]
fn llama3_layout_and_llama2_class_encode_as_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let r = reference();
    let l3 = tokenizer("llama3.1", tmp.path());
    let l2 = tokenizer("llama2", tmp.path());
    // The real layout: BPE entries, then 256 special tokens in Meta's order; ignore_merges on.
    assert_eq!(l3.len(), r["llama3_len"].as_u64().unwrap() as usize);
    assert_eq!(l3.len(), 768);
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("llama3-layout/tokenizer/tokenizer.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(file["model"]["ignore_merges"], Value::Bool(true));
    assert_eq!(file["added_tokens"].as_array().unwrap().len(), 256);
    for (tok, id) in [
        ("<|begin_of_text|>", 512),
        ("<|end_of_text|>", 513),
        ("<|reserved_special_token_0|>", 514),
        ("<|start_header_id|>", 518),
        ("<|end_header_id|>", 519),
        ("<|eom_id|>", 520),
        ("<|eot_id|>", 521),
        ("<|python_tag|>", 522),
        ("<|reserved_special_token_247|>", 767),
    ] {
        assert_eq!(l3.token_id(tok), Some(id), "{tok}");
    }
    for p in r["plain"].as_array().unwrap() {
        let tok = if p["tokenizer"] == "llama2" { &l2 } else { &l3 };
        let text = p["text"].as_str().unwrap();
        assert_eq!(tok.encode(text, true).unwrap(), ids(&p["ids"]), "{text}");
        assert_eq!(
            tok.encode(text, false).unwrap(),
            ids(&p["ids_no_special"]),
            "{text}"
        );
    }
    // transformers 5 rebuilds a `LlamaTokenizer` pipeline: no `▁` after `<s>`. The file's own
    // pipeline (legacy normaliser) differs there, so the rebuild is what makes the ids match.
    let raw = LlamaTokenizer::from_file(fixture("llama2-layout/tokenizer/tokenizer.json")).unwrap();
    let text = "<s>[INST] hi [/INST]";
    assert_ne!(
        raw.encode(text, false).unwrap(),
        l2.encode(text, false).unwrap()
    );
}

#[test]
fn llama_3_2_template_uses_todays_date_when_none_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = tokenizer("llama3.2", tmp.path());
    let msgs = [serde_json::json!({"role": "user", "content": "hi"})];
    let text = tok.render_chat(&msgs, &ChatOptions::generation()).unwrap();
    let date = text
        .split("Today Date: ")
        .nth(1)
        .and_then(|rest| rest.split('\n').next())
        .unwrap();
    // `%d %b %Y`, e.g. "02 Dec 2025".
    let parts: Vec<&str> = date.split(' ').collect();
    assert_eq!(parts.len(), 3, "{date}");
    assert!(parts[0].len() == 2 && parts[0].chars().all(|c| c.is_ascii_digit()));
    assert!(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
            .contains(&parts[1])
    );
    assert!(parts[2].parse::<u32>().unwrap() >= 2025);
}

#[test]
fn thesis_prompt_and_special_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tok = tokenizer("llama3.1", tmp.path());
    // The real Llama 3 tokenizer lacks the thesis tokens: they are added, with a message.
    for t in THESIS_SPECIAL_TOKENS {
        assert_eq!(tok.token_id(t), None);
    }
    let report = tok.ensure_thesis_tokens().unwrap();
    let message = report.message().unwrap();
    assert!(message.contains("<|ctx|> = 768"), "{message}");
    assert!(message.contains("from 768 to 771"), "{message}");
    assert_eq!(tok.len(), 771);
    assert!(tok.ensure_thesis_tokens().unwrap().message().is_none());

    let format = PromptFormat::default();
    let prompt = tok.encode_prompt(&format, " a red apple ").unwrap();
    assert_eq!(prompt[0], 512, "starts with <|begin_of_text|>");
    assert_eq!(prompt[1], 768, "then <|ctx|>");
    assert_eq!(*prompt.last().unwrap(), 769, "ends with <|objs|>");
    assert_eq!(
        tok.decode(&prompt, false).unwrap(),
        "<|begin_of_text|><|ctx|>Create a valid minimal SVG for: a red apple<|objs|>"
    );
    let svg = r#"<svg viewBox="0 0 8 8"><rect width="8" height="8"/></svg>"#;
    let completion = tok.encode_completion(&format, "a red apple", svg).unwrap();
    assert_eq!(*completion.last().unwrap(), 770, "ends with <|end_svg|>");
    assert_eq!(tok.decode(&completion, true).unwrap(), svg);

    // A custom template, and templates without (or with two) `{description}`.
    let custom = ThesisPrompt::new("<|ctx|>Draw {description}<|objs|>").unwrap();
    assert_eq!(custom.fill("x"), "<|ctx|>Draw x<|objs|>");
    for bad in ["<|ctx|>Draw<|objs|>", "{description} {description}"] {
        assert!(matches!(
            ThesisPrompt::new(bad),
            Err(TrainError::InvalidArgument(_))
        ));
    }

    // The chat format answers with the SVG, `<|end_svg|>` and the template's end of turn.
    let chat = PromptFormat::Chat { system: None };
    let done = tok.encode_completion(&chat, "a red apple", svg).unwrap();
    assert_eq!(&done[done.len() - 2..], &[770, 521]);
}

#[test]
fn missing_or_broken_templates_are_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = LlamaTokenizer::from_file(fixture("llama3-layout/tokenizer/tokenizer.json")).unwrap();
    assert!(raw.chat_template().is_none());
    assert!(matches!(
        raw.encode_prompt(&PromptFormat::Chat { system: None }, "x"),
        Err(TrainError::Tokenizer(_))
    ));
    // Thesis format without the special tokens: a typed error, not a silent text token.
    let svg = "<svg/>";
    assert!(matches!(
        raw.encode_completion(&PromptFormat::default(), "x", svg),
        Err(TrainError::Tokenizer(_))
    ));
    let d = tmp.path().join("bad");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(
        fixture("llama3-layout/tokenizer/tokenizer.json"),
        d.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(d.join("chat_template.jinja"), "{% for m in messages %}").unwrap();
    assert!(matches!(
        LlamaTokenizer::from_dir(&d),
        Err(TrainError::ChatTemplate(_))
    ));
    std::fs::write(
        d.join("chat_template.jinja"),
        "{{ messages[0].content | no_such_filter }}",
    )
    .unwrap();
    let m = [serde_json::json!({"role": "user", "content": "x"})];
    assert!(matches!(
        LlamaTokenizer::from_dir(&d)
            .unwrap()
            .render_chat(&m, &ChatOptions::default()),
        Err(TrainError::ChatTemplate(_))
    ));
    std::fs::remove_file(d.join("chat_template.jinja")).unwrap();
    std::fs::write(d.join("tokenizer_config.json"), r#"{"chat_template": 3}"#).unwrap();
    assert!(matches!(
        LlamaTokenizer::from_dir(&d),
        Err(TrainError::Config(_))
    ));
    // Named templates: `tool_use` with tools, `default` otherwise.
    std::fs::write(
        d.join("tokenizer_config.json"),
        r#"{"chat_template": [{"name": "default", "template": "D"}, {"name": "tool_use", "template": "T"}]}"#,
    )
    .unwrap();
    let tok = LlamaTokenizer::from_dir(&d).unwrap();
    assert_eq!(tok.render_chat(&m, &ChatOptions::default()).unwrap(), "D");
    let with_tools = ChatOptions {
        tools: Some(vec![serde_json::json!({"name": "f"})]),
        ..ChatOptions::default()
    };
    assert_eq!(tok.render_chat(&m, &with_tools).unwrap(), "T");
    assert!(matches!(
        tok.render_chat(&[], &ChatOptions::default()),
        Err(TrainError::InvalidArgument(_))
    ));
    let t = ChatTemplate::new("{{ bos_token }}", [("bos_token", "<s>")]).unwrap();
    assert_eq!(t.render(&m, &ChatOptions::default()).unwrap(), "<s>");
}
