//! What chat templates need of Python: `json.dumps` (transformers' `tojson`), `str()` / `repr()`
//! of values (what Jinja2 prints), and the string and dict methods templates call.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Error, ErrorKind, State};

// --- Python-compatible output --------------------------------------------------------------

/// Python's `repr(float)`: the shortest round-trip digits, positional for exponents in
/// `[-4, 16)`, else `d.ddde±XX`.
pub(super) fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if x < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let body = if exp < 0 {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        } else if exp + 1 >= n {
            format!("{}{}.0", digits, "0".repeat((exp + 1 - n) as usize))
        } else {
            let (a, b) = digits.split_at((exp + 1) as usize);
            format!("{a}.{b}")
        };
        format!("{sign}{body}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    }
}

fn number_text(v: &Value, json: bool) -> Result<String, Error> {
    if v.is_integer() {
        let i = i128::try_from(v.clone())?;
        return Ok(i.to_string());
    }
    let f = f64::try_from(v.clone())?;
    Ok(match (json, f) {
        (true, f) if f.is_nan() => "NaN".into(),
        (true, f) if f.is_infinite() && f > 0.0 => "Infinity".into(),
        (true, f) if f.is_infinite() => "-Infinity".into(),
        (_, f) => python_float_repr(f),
    })
}

/// Python's `json.dumps` string escaping (`ensure_ascii` as given).
fn json_string(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && !c.is_ascii() => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

struct JsonStyle {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

fn map_key_text(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_string()),
        ValueKind::Number => number_text(key, true),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.into()),
        ValueKind::None => Ok("null".into()),
        k => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: keys must be str, int, float, bool or None, not {k}"),
        )),
    }
}

fn write_json(v: &Value, style: &JsonStyle, depth: usize, out: &mut String) -> Result<(), Error> {
    let newline = |out: &mut String, d: usize| {
        if let Some(ind) = &style.indent {
            out.push('\n');
            for _ in 0..d {
                out.push_str(ind);
            }
        }
    };
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&number_text(v, true)?),
        ValueKind::String => json_string(v.as_str().unwrap_or_default(), style.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(out, depth + 1);
                write_json(item, style, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let mut pairs: Vec<(String, Value)> = Vec::new();
            for key in v.try_iter()? {
                let value = v.get_item(&key)?;
                pairs.push((map_key_text(&key)?, value));
            }
            if style.sort_keys {
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
            }
            if pairs.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, (k, item)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(out, depth + 1);
                json_string(k, style.ensure_ascii, out);
                out.push_str(&style.key_sep);
                write_json(item, style, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        k => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: object of kind {k} is not JSON serialisable"),
            ))
        }
    }
    Ok(())
}

/// transformers' `tojson` filter: `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`.
pub(super) fn tojson_filter(
    value: &Value,
    positional: minijinja::value::Rest<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let kwargs = Some(kwargs);
    let arg = |i: usize, name: &str| -> Result<Option<Value>, Error> {
        let from_kw = match &kwargs {
            Some(k) if k.has(name) => Some(k.get::<Value>(name)?),
            _ => None,
        };
        Ok(from_kw.or_else(|| positional.get(i).cloned()))
    };
    if positional.len() > 4 {
        return Err(Error::new(
            ErrorKind::TooManyArguments,
            "tojson takes at most 4 arguments",
        ));
    }
    let ensure_ascii = arg(0, "ensure_ascii")?.is_some_and(|v| v.is_true());
    let indent = match arg(1, "indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) if v.kind() == ValueKind::String => {
            Some(v.as_str().unwrap_or_default().to_string())
        }
        Some(v) => {
            let n = v.as_i64().ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be int or str",
                )
            })?;
            Some(" ".repeat(n.clamp(0, 64) as usize))
        }
    };
    let (mut item_sep, mut key_sep) = if indent.is_some() {
        (",".to_string(), ": ".to_string())
    } else {
        (", ".to_string(), ": ".to_string())
    };
    if let Some(seps) = arg(2, "separators")? {
        if !seps.is_none() {
            let parts: Vec<Value> = seps.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] if a.as_str().is_some() && b.as_str().is_some() => {
                    item_sep = a.as_str().unwrap_or_default().to_string();
                    key_sep = b.as_str().unwrap_or_default().to_string();
                }
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be two strings",
                    ))
                }
            }
        }
    }
    let sort_keys = arg(3, "sort_keys")?.is_some_and(|v| v.is_true());
    if let Some(k) = &kwargs {
        k.assert_all_used()?;
    }
    let style = JsonStyle {
        ensure_ascii,
        indent,
        item_sep,
        key_sep,
        sort_keys,
    };
    let mut out = String::new();
    write_json(value, &style, 0, &mut out)?;
    Ok(Value::from(out))
}

/// Python's `repr(str)`: single quotes unless the text holds `'` and no `"`.
fn python_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

fn python_repr(v: &Value) -> Result<String, Error> {
    Ok(match v.kind() {
        ValueKind::String => python_str_repr(v.as_str().unwrap_or_default()),
        _ => python_str(v)?,
    })
}

/// Python's `str()` of a template value (what Jinja2 prints).
pub(super) fn python_str(v: &Value) -> Result<String, Error> {
    Ok(match v.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::None => "None".into(),
        ValueKind::Bool => if v.is_true() { "True" } else { "False" }.into(),
        ValueKind::Number => number_text(v, false)?,
        ValueKind::String => v.as_str().unwrap_or_default().to_string(),
        ValueKind::Seq => {
            let items: Vec<String> = v
                .try_iter()?
                .map(|i| python_repr(&i))
                .collect::<Result<_, _>>()?;
            format!("[{}]", items.join(", "))
        }
        ValueKind::Map => {
            let mut items = Vec::new();
            for key in v.try_iter()? {
                let value = v.get_item(&key)?;
                items.push(format!("{}: {}", python_repr(&key)?, python_repr(&value)?));
            }
            format!("{{{}}}", items.join(", "))
        }
        _ => v.to_string(),
    })
}

// --- Python methods ------------------------------------------------------------------------

fn str_arg(args: &[Value], i: usize, method: &str) -> Result<Option<String>, Error> {
    match args.get(i) {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => v.as_str().map(|s| Some(s.to_string())).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("{method}() argument must be a string"),
            )
        }),
    }
}

fn too_many(args: &[Value], max: usize, method: &str) -> Result<(), Error> {
    if args.len() > max {
        return Err(Error::new(
            ErrorKind::TooManyArguments,
            format!("{method}() takes at most {max} arguments"),
        ));
    }
    Ok(())
}

/// Python's whitespace for `str.strip()` / `str.split()` (Unicode White_Space plus the
/// information separators U+001C–U+001F).
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn python_string_method(s: &str, method: &str, args: &[Value]) -> Result<Value, Error> {
    let strip_set = |i: usize| -> Result<Option<Vec<char>>, Error> {
        Ok(str_arg(args, i, method)?.map(|c| c.chars().collect()))
    };
    match method {
        "strip" | "lstrip" | "rstrip" => {
            too_many(args, 1, method)?;
            let set = strip_set(0)?;
            let pred = |c: char| match &set {
                Some(s) => s.contains(&c),
                None => is_py_space(c),
            };
            let out = match method {
                "strip" => s.trim_matches(pred),
                "lstrip" => s.trim_start_matches(pred),
                _ => s.trim_end_matches(pred),
            };
            Ok(Value::from(out))
        }
        "upper" => Ok(Value::from(s.to_uppercase())),
        "lower" => Ok(Value::from(s.to_lowercase())),
        "capitalize" => {
            let mut c = s.chars();
            Ok(Value::from(match c.next() {
                Some(f) => f.to_uppercase().collect::<String>() + &c.as_str().to_lowercase(),
                None => String::new(),
            }))
        }
        "title" => {
            let mut out = String::with_capacity(s.len());
            let mut prev_cased = false;
            for c in s.chars() {
                if prev_cased {
                    out.extend(c.to_lowercase());
                } else {
                    out.extend(c.to_uppercase());
                }
                prev_cased = c.is_alphabetic();
            }
            Ok(Value::from(out))
        }
        "startswith" | "endswith" => {
            too_many(args, 1, method)?;
            let arg = args.first().ok_or_else(|| {
                Error::new(
                    ErrorKind::MissingArgument,
                    format!("{method}() takes one argument"),
                )
            })?;
            let candidates: Vec<String> = if arg.kind() == ValueKind::String {
                vec![arg.as_str().unwrap_or_default().to_string()]
            } else {
                arg.try_iter()?
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::InvalidOperation,
                            format!("{method}() takes a string or a tuple of strings"),
                        )
                    })?
            };
            let hit = candidates.iter().any(|c| {
                if method == "startswith" {
                    s.starts_with(c.as_str())
                } else {
                    s.ends_with(c.as_str())
                }
            });
            Ok(Value::from(hit))
        }
        "split" | "rsplit" => {
            too_many(args, 2, method)?;
            let sep = str_arg(args, 0, method)?;
            let max = match args.get(1) {
                Some(v) => v.as_i64().unwrap_or(-1),
                None => -1,
            };
            let limit = if max < 0 { usize::MAX } else { max as usize };
            let parts: Vec<Value> = match sep {
                Some(sep) if sep.is_empty() => {
                    return Err(Error::new(ErrorKind::InvalidOperation, "empty separator"))
                }
                Some(sep) => {
                    let v: Vec<&str> = if method == "split" {
                        s.splitn(limit.saturating_add(1), sep.as_str()).collect()
                    } else {
                        let mut v: Vec<&str> =
                            s.rsplitn(limit.saturating_add(1), sep.as_str()).collect();
                        v.reverse();
                        v
                    };
                    v.into_iter().map(Value::from).collect()
                }
                None => {
                    let words: Vec<&str> = s.split(is_py_space).filter(|w| !w.is_empty()).collect();
                    if words.len() <= limit.saturating_add(1) || method == "rsplit" {
                        // rsplit with a limit on whitespace is rare; whole-word split suffices.
                        words.into_iter().map(Value::from).collect()
                    } else {
                        // Keep the rest of the text after `limit` splits, left-stripped.
                        let mut out: Vec<Value> = Vec::new();
                        let mut rest = s.trim_start_matches(is_py_space);
                        for _ in 0..limit {
                            let end = rest.find(is_py_space).unwrap_or(rest.len());
                            out.push(Value::from(&rest[..end]));
                            rest = rest[end..].trim_start_matches(is_py_space);
                        }
                        if !rest.is_empty() {
                            out.push(Value::from(rest));
                        }
                        out
                    }
                }
            };
            Ok(Value::from(parts))
        }
        "replace" => {
            too_many(args, 3, method)?;
            let (Some(old), Some(new)) = (str_arg(args, 0, method)?, str_arg(args, 1, method)?)
            else {
                return Err(Error::new(
                    ErrorKind::MissingArgument,
                    "replace() takes two strings",
                ));
            };
            let count = args.get(2).and_then(Value::as_i64).unwrap_or(-1);
            Ok(Value::from(if count < 0 {
                s.replace(old.as_str(), &new)
            } else {
                s.replacen(old.as_str(), &new, count as usize)
            }))
        }
        "join" => {
            too_many(args, 1, method)?;
            let items = args.first().ok_or_else(|| {
                Error::new(ErrorKind::MissingArgument, "join() takes one argument")
            })?;
            let parts: Vec<String> = items
                .try_iter()?
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        Error::new(ErrorKind::InvalidOperation, "join() needs strings")
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok(Value::from(parts.join(s)))
        }
        "find" => {
            too_many(args, 1, method)?;
            let needle = str_arg(args, 0, method)?.unwrap_or_default();
            Ok(Value::from(match s.find(needle.as_str()) {
                Some(byte) => s[..byte].chars().count() as i64,
                None => -1,
            }))
        }
        _ => Err(Error::from(ErrorKind::UnknownMethod)),
    }
}

pub(super) fn python_method(
    _state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    match value.kind() {
        ValueKind::String => python_string_method(value.as_str().unwrap_or_default(), method, args),
        ValueKind::Map => match method {
            "items" => {
                too_many(args, 0, method)?;
                let mut out = Vec::new();
                for key in value.try_iter()? {
                    let item = value.get_item(&key)?;
                    out.push(Value::from(vec![key, item]));
                }
                Ok(Value::from(out))
            }
            "keys" => {
                too_many(args, 0, method)?;
                Ok(Value::from(value.try_iter()?.collect::<Vec<_>>()))
            }
            "values" => {
                too_many(args, 0, method)?;
                let mut out = Vec::new();
                for key in value.try_iter()? {
                    out.push(value.get_item(&key)?);
                }
                Ok(Value::from(out))
            }
            "get" => {
                too_many(args, 2, method)?;
                let key = args
                    .first()
                    .ok_or_else(|| Error::new(ErrorKind::MissingArgument, "get() takes a key"))?;
                let item = value.get_item(key)?;
                Ok(if item.is_undefined() {
                    args.get(1).cloned().unwrap_or(Value::from(()))
                } else {
                    item
                })
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        },
        _ => Err(Error::from(ErrorKind::UnknownMethod)),
    }
}
