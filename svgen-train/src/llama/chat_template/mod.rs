//! HF chat templates: the Jinja `chat_template` of a checkpoint, rendered as transformers'
//! `apply_chat_template` renders it.
//!
//! Templates come from the tokenizer folder with transformers' precedence: `chat_template.jinja`
//! (the default template) and `additional_chat_templates/*.jinja` (named ones) win over the
//! `chat_template` entry of `tokenizer_config.json`, which is either one template or a list of
//! `{"name", "template"}`. With several templates, `tool_use` is picked when tools are given and
//! `default` otherwise, as transformers does.
//!
//! The environment mirrors transformers' (`ImmutableSandboxedEnvironment(trim_blocks=True,
//! lstrip_blocks=True, extensions=[loopcontrols, generation])`) on [minijinja]:
//! - `raise_exception(message)` stops rendering with [`TrainError::ChatTemplateException`]
//!   carrying the message;
//! - `strftime_now(format)` formats the local time (chrono's strftime, which agrees with
//!   Python's for the directives chat templates use: `%d %b %Y`, `%B`, `%m`, `%H:%M`, …);
//! - `tojson(ensure_ascii=False, indent=None, separators=None, sort_keys=False)` writes exactly
//!   what Python's `json.dumps` writes (Python float repr, `", "`/`": "` separators without an
//!   indent, `","` with one, no HTML escaping), unlike Jinja's own `tojson`;
//! - `namespace`, `dict`, `{% break %}` / `{% continue %}` and the `{% generation %}` block (its
//!   body is rendered as it is; assistant masks are not tracked);
//! - the Python string and dict methods templates call (`strip`, `lstrip`, `rstrip`, `split`,
//!   `startswith`, `endswith`, `upper`, `lower`, `title`, `capitalize`, `replace`, `join`,
//!   `find`, `items`, `keys`, `values`, `get`);
//! - values print as Python's `str()` prints them (`None`, `True`, `1.0`, `['a']`).
//!
//! The template sees `messages`, `tools`, `documents`, `add_generation_prompt`, the special
//! tokens of `tokenizer_config.json` (`bos_token`, `eos_token`, …, and any other `*_token`
//! entry) and the caller's extra variables (e.g. `date_string`), which override the special
//! tokens. Rendering is bounded (a fuel budget and minijinja's recursion limit), so a template
//! cannot hang or exhaust memory.
//!
//! ```
//! use serde_json::json;
//! use svgen_train::llama::chat_template::{ChatOptions, ChatTemplate};
//! let t = ChatTemplate::new(
//!     "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content | trim }}\n{% endfor %}\
//!      {% if add_generation_prompt %}[assistant] {% endif %}",
//!     [("bos_token", "<s>")],
//! )
//! .unwrap();
//! let text = t
//!     .render(&[json!({"role": "user", "content": " hi "})], &ChatOptions::generation())
//!     .unwrap();
//! assert_eq!(text, "<s>[user] hi\n[assistant] ");
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use serde_json::Value as Json;

use crate::error::{Result, TrainError};
use crate::nn::json::read_json;

mod python;
#[cfg(test)]
use python::python_float_repr;
use python::{python_method, python_str, tojson_filter};

/// Rendering budget (minijinja fuel: roughly VM instructions, and a bound on memory).
const FUEL: u64 = 20_000_000;
/// Prefix of the error detail `raise_exception` produces (to tell it from other errors).
const RAISED: &str = "raise_exception: ";
/// The special-token attributes transformers passes to every template.
const SPECIAL_TOKEN_KEYS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// What `apply_chat_template` takes besides the messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatOptions {
    /// Append the header that starts the assistant's turn.
    pub add_generation_prompt: bool,
    /// JSON schemas of the tools (`tools=`); with `None` the template sees `tools` as `none`,
    /// as transformers passes it.
    pub tools: Option<Vec<Json>>,
    /// Documents for retrieval-augmented templates (`documents=`).
    pub documents: Option<Vec<Json>>,
    /// Extra template variables (`date_string`, `builtin_tools`, `tools_in_user_message`, …);
    /// they override the special tokens of the same name.
    pub variables: serde_json::Map<String, Json>,
}

impl ChatOptions {
    /// Options with `add_generation_prompt = true` (a prompt the model answers).
    pub fn generation() -> Self {
        Self {
            add_generation_prompt: true,
            ..Self::default()
        }
    }

    /// Sets one extra template variable (e.g. `date_string`).
    pub fn with_variable(mut self, name: &str, value: impl Into<Json>) -> Self {
        self.variables.insert(name.to_string(), value.into());
        self
    }
}

/// A compiled chat template (one or several named ones) with the special tokens it is given.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Template names, `default` first when present.
    names: Vec<String>,
    sources: BTreeMap<String, String>,
    special_tokens: BTreeMap<String, String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("names", &self.names)
            .field("special_tokens", &self.special_tokens)
            .finish_non_exhaustive()
    }
}

fn template_error(e: Error) -> TrainError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = cur {
        if let Some(m) = err.downcast_ref::<Error>() {
            if let Some(msg) = m.detail().and_then(|d| d.strip_prefix(RAISED)) {
                return TrainError::ChatTemplateException(msg.to_string());
            }
        }
        cur = err.source();
    }
    TrainError::ChatTemplate(format!("{e:#}"))
}

/// `{% generation %}` … `{% endgeneration %}` (transformers' assistant-mask extension) become
/// an always-true `if`, which renders the body unchanged and keeps the tags' whitespace control.
fn rewrite_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let (lead, body) = match inner.strip_prefix(['-', '+']) {
            Some(b) => (&inner[..1], b),
            None => ("", inner),
        };
        let (body, trail) = match body.strip_suffix(['-', '+']) {
            Some(b) => (b, &body[body.len() - 1..]),
            None => (body, ""),
        };
        match body.trim() {
            "generation" => {
                let _ = write!(out, "{{%{lead} if true {trail}%}}");
            }
            "endgeneration" => {
                let _ = write!(out, "{{%{lead} endif {trail}%}}");
            }
            _ => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

impl ChatTemplate {
    /// One template (transformers' `tokenizer.chat_template = source`) with its special tokens
    /// (`bos_token`, `eos_token`, …). A syntax error is [`TrainError::ChatTemplate`].
    pub fn new<K: Into<String>, V: Into<String>>(
        source: impl Into<String>,
        special_tokens: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self> {
        let sources = BTreeMap::from([("default".to_string(), source.into())]);
        let special = special_tokens
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self::from_sources(sources, special)
    }

    fn from_sources(
        sources: BTreeMap<String, String>,
        special_tokens: BTreeMap<String, String>,
    ) -> Result<Self> {
        if sources.is_empty() {
            return Err(TrainError::ChatTemplate("no chat template".into()));
        }
        let mut env = Environment::new();
        configure(&mut env);
        for (name, source) in &sources {
            env.add_template_owned(name.clone(), rewrite_generation_tags(source))
                .map_err(|e| {
                    TrainError::ChatTemplate(format!("template `{name}` does not compile: {e:#}"))
                })?;
        }
        let mut names: Vec<String> = sources.keys().cloned().collect();
        names.sort_by_key(|n| n != "default");
        Ok(Self {
            env,
            names,
            sources,
            special_tokens,
        })
    }

    /// The chat template(s) of a tokenizer folder, or `None` when it has none (see the module
    /// documentation for the files read and their precedence). Special tokens are read from
    /// `tokenizer_config.json` (strings or `{"content": …}` objects).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Option<Self>> {
        let dir = dir.as_ref();
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            read_json(&config_path)?
        } else {
            Json::Null
        };
        let special_tokens = special_tokens_of(&config);
        let mut sources = BTreeMap::new();
        let read = |p: &Path| TrainError::read_text_capped(p, svgen_core::io::MAX_METADATA_BYTES);
        let file = dir.join("chat_template.jinja");
        if file.is_file() {
            sources.insert("default".to_string(), read(&file)?);
        }
        let extra = dir.join("additional_chat_templates");
        if extra.is_dir() {
            let entries = std::fs::read_dir(&extra).map_err(|e| TrainError::io(&extra, e))?;
            for entry in entries {
                let p = entry.map_err(|e| TrainError::io(&extra, e))?.path();
                if let Some(name) = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".jinja"))
                {
                    sources.insert(name.to_string(), read(&p)?);
                }
            }
        }
        if sources.is_empty() {
            match config.get("chat_template") {
                None | Some(Json::Null) => {}
                Some(Json::String(s)) => {
                    sources.insert("default".to_string(), s.clone());
                }
                Some(Json::Array(list)) => {
                    for item in list {
                        let name = item.get("name").and_then(Json::as_str);
                        let template = item.get("template").and_then(Json::as_str);
                        match (name, template) {
                            (Some(n), Some(t)) => {
                                sources.insert(n.to_string(), t.to_string());
                            }
                            _ => {
                                return Err(TrainError::Config(format!(
                                    "{}: chat_template entries need `name` and `template`",
                                    config_path.display()
                                )))
                            }
                        }
                    }
                }
                Some(other) => {
                    return Err(TrainError::Config(format!(
                        "{}: chat_template must be a string or a list, found {other}",
                        config_path.display()
                    )))
                }
            }
        }
        if sources.is_empty() {
            return Ok(None);
        }
        Self::from_sources(sources, special_tokens).map(Some)
    }

    /// The template names (`default` first when present).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The source of the template `name`.
    pub fn source(&self, name: &str) -> Option<&str> {
        self.sources.get(name).map(String::as_str)
    }

    /// The special tokens passed to the template.
    pub fn special_tokens(&self) -> &BTreeMap<String, String> {
        &self.special_tokens
    }

    /// transformers' `get_chat_template`: the only template, or `tool_use` with tools, or
    /// `default`.
    fn pick(&self, with_tools: bool) -> Result<&str> {
        if self.names.len() == 1 {
            return Ok(&self.names[0]);
        }
        if with_tools && self.sources.contains_key("tool_use") {
            return Ok("tool_use");
        }
        if self.sources.contains_key("default") {
            return Ok("default");
        }
        Err(TrainError::ChatTemplate(format!(
            "several chat templates and no `default` among {:?}",
            self.names
        )))
    }

    /// Renders `messages` (JSON objects with `role`, `content`, and optionally `tool_calls`, …)
    /// as `apply_chat_template(messages, tokenize=False, ...)` does. Keys whose value is `null`
    /// are dropped first, as transformers does.
    pub fn render(&self, messages: &[Json], options: &ChatOptions) -> Result<String> {
        if messages.is_empty() {
            return Err(TrainError::InvalidArgument(
                "cannot apply a chat template to an empty conversation".into(),
            ));
        }
        let mut cleaned = Vec::with_capacity(messages.len());
        for m in messages {
            let Json::Object(map) = m else {
                return Err(TrainError::InvalidArgument(format!(
                    "chat messages must be JSON objects, found {m}"
                )));
            };
            let kept: serde_json::Map<String, Json> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            cleaned.push(Json::Object(kept));
        }
        let name = self.pick(options.tools.is_some())?;
        let template = self.env.get_template(name).map_err(template_error)?;
        let mut ctx: BTreeMap<String, Value> = self
            .special_tokens
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        for (k, v) in &options.variables {
            ctx.insert(k.clone(), json_value(v));
        }
        ctx.insert("messages".into(), json_value(&Json::Array(cleaned)));
        ctx.insert(
            "tools".into(),
            options
                .tools
                .as_ref()
                .map(|t| json_value(&Json::Array(t.clone())))
                .unwrap_or(Value::from(())),
        );
        ctx.insert(
            "documents".into(),
            options
                .documents
                .as_ref()
                .map(|d| json_value(&Json::Array(d.clone())))
                .unwrap_or(Value::from(())),
        );
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(options.add_generation_prompt),
        );
        template.render(ctx).map_err(template_error)
    }
}

/// The `*_token` entries of a `tokenizer_config.json` as strings (an `AddedToken` object gives
/// its `content`; `null` entries are left out), as `tokenizer.special_tokens_map` holds them.
pub(crate) fn special_tokens_of(config: &Json) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(map) = config.as_object() else {
        return out;
    };
    for (k, v) in map {
        if !(SPECIAL_TOKEN_KEYS.contains(&k.as_str()) || k.ends_with("_token")) {
            continue;
        }
        let text = match v {
            Json::String(s) => Some(s.clone()),
            Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
            _ => None,
        };
        if let Some(t) = text {
            out.insert(k.clone(), t);
        }
    }
    out
}

fn json_value(v: &Json) -> Value {
    Value::from(minijinja::value::Serde(v))
}

fn configure(env: &mut Environment<'static>) {
    // The default delimiters always build; `Default` is the same configuration.
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(false)
        .build()
        .unwrap_or_default();
    env.set_syntax(syntax);
    env.set_fuel(Some(FUEL));
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_function(
        "raise_exception",
        |message: String| -> Result<Value, Error> {
            Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("{RAISED}{message}"),
            ))
        },
    );
    env.add_function("strftime_now", |format: String| -> Result<String, Error> {
        strftime(&chrono::Local::now(), &format)
    });
    env.add_function("dict", |kwargs: Kwargs| -> Result<Value, Error> {
        let mut map = BTreeMap::new();
        for key in kwargs.args() {
            map.insert(key.to_string(), kwargs.get::<Value>(key)?);
        }
        Ok(Value::from_iter(map))
    });
    env.add_filter("tojson", tojson_filter);
    env.set_unknown_method_callback(python_method);
    env.set_formatter(|out, _state, value| {
        if value.is_undefined() {
            return Ok(());
        }
        match value.kind() {
            ValueKind::String => out
                .write_str(value.as_str().unwrap_or_default())
                .map_err(|_| Error::new(ErrorKind::WriteFailure, "could not write output")),
            _ => {
                let text = python_str(value)?;
                out.write_str(&text)
                    .map_err(|_| Error::new(ErrorKind::WriteFailure, "could not write output"))
            }
        }
    });
}

/// chrono's strftime without its panic on an unknown directive.
pub(crate) fn strftime<Tz: chrono::TimeZone>(
    time: &chrono::DateTime<Tz>,
    format: &str,
) -> Result<String, Error>
where
    Tz::Offset: std::fmt::Display,
{
    let items: Vec<chrono::format::Item<'_>> = chrono::format::StrftimeItems::new(format).collect();
    if items
        .iter()
        .any(|i| matches!(i, chrono::format::Item::Error))
    {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: bad format string `{format}`"),
        ));
    }
    let mut out = String::new();
    write!(out, "{}", time.format_with_items(items.into_iter())).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: cannot format `{format}`"),
        )
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn render(src: &str, vars: Json) -> Result<String> {
        let t = ChatTemplate::new(src, [("bos_token", "<s>")])?;
        let mut o = ChatOptions::default();
        if let Json::Object(m) = vars {
            o.variables = m;
        }
        t.render(&[json!({"role": "user", "content": "x"})], &o)
    }

    #[test]
    fn float_repr_matches_python() {
        for (x, want) in [
            (1.0, "1.0"),
            (7.5, "7.5"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (123456789.0, "123456789.0"),
            (1.5e300, "1.5e+300"),
            (-0.1, "-0.1"),
            (2.5e-7, "2.5e-07"),
            (1234567890123456.0, "1234567890123456.0"),
        ] {
            assert_eq!(python_float_repr(x), want, "{x}");
        }
    }

    #[test]
    fn tojson_writes_what_json_dumps_writes() {
        let v = json!({"b": [1, 2.0, "ü\"\n"], "a": {}, "c": null, "d": true, "e": []});
        let out = render(
            "{{ v | tojson }}|{{ v | tojson(indent=2) }}|{{ v | tojson(sort_keys=true, separators=[',', ':']) }}|{{ 'é' | tojson(ensure_ascii=true) }}",
            json!({"v": v}),
        )
        .unwrap();
        assert_eq!(
            out,
            "{\"b\": [1, 2.0, \"ü\\\"\\n\"], \"a\": {}, \"c\": null, \"d\": true, \"e\": []}|\
             {\n  \"b\": [\n    1,\n    2.0,\n    \"ü\\\"\\n\"\n  ],\n  \"a\": {},\n  \"c\": null,\n  \"d\": true,\n  \"e\": []\n}|\
             {\"a\":{},\"b\":[1,2.0,\"ü\\\"\\n\"],\"c\":null,\"d\":true,\"e\":[]}|\"\\u00e9\""
        );
    }

    #[test]
    fn python_methods_and_printing() {
        let out = render(
            "{{ '  a b  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|\
             {{ 'ab'.startswith(('x', 'a')) }}|{{ 'hello world'.title() }}|{{ d.get('k', 'none') }}|{{ d.items() | list }}|\
             {{ none }}|{{ true }}|{{ 2.0 }}|{{ '-'.join(['a', 'b']) }}",
            json!({"d": {"j": 1}}),
        )
        .unwrap();
        assert_eq!(
            out,
            "a b|hi|['a', 'b', '', 'c']|['a', 'b']|True|Hello World|none|[['j', 1]]|None|True|2.0|a-b"
        );
    }

    #[test]
    fn raise_exception_and_bad_templates_are_typed_errors() {
        match render(
            "{{ raise_exception('no: ' + messages[0].role) }}",
            json!({}),
        ) {
            Err(TrainError::ChatTemplateException(m)) => assert_eq!(m, "no: user"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ChatTemplate::new("{% for %}", [("bos_token", "<s>")]),
            Err(TrainError::ChatTemplate(_))
        ));
        // A runaway loop runs out of fuel instead of hanging.
        assert!(matches!(
            render(
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
                json!({})
            ),
            Err(TrainError::ChatTemplate(_))
        ));
        assert!(matches!(
            render("{{ strftime_now('%Q') }}", json!({})),
            Err(TrainError::ChatTemplate(_))
        ));
    }

    #[test]
    fn generation_tags_render_their_body() {
        let t = "{% for m in messages %}{%- generation -%} [{{ m.content }}] {%- endgeneration %}{% endfor %}";
        assert_eq!(render(t, json!({})).unwrap(), "[x]");
    }

    #[test]
    fn strftime_formats_like_python() {
        let t = chrono::Utc.with_ymd_and_hms(2024, 7, 6, 9, 5, 0).unwrap();
        assert_eq!(strftime(&t, "%d %b %Y").unwrap(), "06 Jul 2024");
        assert_eq!(strftime(&t, "%B %-d, %H:%M").unwrap(), "July 6, 09:05");
    }
}
