//! Loading `tollgate.yaml`: read, interpolate `${VAR}` / `${VAR:-default}`
//! from the environment, apply `TOLLGATE_*` overrides, deserialize with
//! errors that name the field, and validate.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_yaml_ng::Value;
use tollgate_gateway::Config;

/// Reads the config at `path`. A missing file is an error only when the
/// user named it (`explicit`); otherwise defaults apply.
pub fn load(path: &Path, explicit: bool, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading config {}", path.display())),
    };
    parse(&text, env).with_context(|| format!("in config {}", path.display()))
}

pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
    let mut value: Value = if text.trim().is_empty() {
        Value::Mapping(Default::default())
    } else {
        serde_yaml_ng::from_str(text).context("invalid YAML")?
    };
    let mut errors = Vec::new();
    interpolate(&mut value, "", env, &mut errors);
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    apply_overrides(&mut value, env)?;
    let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        anyhow::anyhow!(
            "{}: {}",
            if path == "." { "config".into() } else { path },
            e.into_inner()
        )
    })?;
    if let Err(errs) = config.validate() {
        bail!(
            "invalid configuration:\n{}",
            errs.iter()
                .map(|e| format!("  - {e}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(config)
}

fn interpolate(
    v: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) {
    match v {
        Value::String(s) if s.contains("${") => match expand(s, env) {
            Ok(x) => *s = x,
            Err(var) => errors.push(format!(
                "{}: environment variable {var} is not set (write ${{{var}:-default}} for a default)",
                if path.is_empty() { "config" } else { path }
            )),
        },
        Value::Sequence(seq) => {
            for (i, x) in seq.iter_mut().enumerate() {
                interpolate(x, &format!("{path}[{i}]"), env, errors);
            }
        }
        Value::Mapping(m) => {
            for (k, x) in m.iter_mut() {
                let key = k.as_str().unwrap_or("?");
                let p = if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
                interpolate(x, &p, env, errors);
            }
        }
        _ => {}
    }
}

/// Expands `${VAR}` and `${VAR:-default}`; `$${` is a literal `${`.
fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let Some(end) = rest[i..].find('}') else {
            out.push_str(&rest[i..]);
            return Ok(out);
        };
        let inner = &rest[i + 2..i + end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match (env(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(name.to_string()),
        }
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `TOLLGATE_LISTEN`, `TOLLGATE_DATABASE`, `TOLLGATE_REDIS`,
/// `TOLLGATE_ADMIN_KEYS` (comma-separated), `TOLLGATE_REQUIRE_AUTH`,
/// `TOLLGATE_MAX_BODY_BYTES` override the file.
fn apply_overrides(v: &mut Value, env: &dyn Fn(&str) -> Option<String>) -> Result<()> {
    let Value::Mapping(m) = v else {
        bail!("config: expected a mapping at the top level");
    };
    let mut set = |key: &str, val: Value| {
        m.insert(Value::String(key.into()), val);
    };
    for (var, key) in [
        ("TOLLGATE_LISTEN", "listen"),
        ("TOLLGATE_DATABASE", "database"),
        ("TOLLGATE_REDIS", "redis"),
    ] {
        if let Some(x) = env(var).filter(|x| !x.is_empty()) {
            set(key, Value::String(x));
        }
    }
    if let Some(x) = env("TOLLGATE_ADMIN_KEYS").filter(|x| !x.is_empty()) {
        let keys = x
            .split(',')
            .map(|k| Value::String(k.trim().to_string()))
            .collect();
        set("admin_keys", Value::Sequence(keys));
    }
    if let Some(x) = env("TOLLGATE_REQUIRE_AUTH").filter(|x| !x.is_empty()) {
        let b = match x.as_str() {
            "1" | "true" | "yes" => true,
            "0" | "false" | "no" => false,
            _ => bail!("TOLLGATE_REQUIRE_AUTH: expected true or false, got {x:?}"),
        };
        set("require_auth", Value::Bool(b));
    }
    if let Some(x) = env("TOLLGATE_MAX_BODY_BYTES").filter(|x| !x.is_empty()) {
        let n: u64 = x.parse().with_context(|| {
            format!("TOLLGATE_MAX_BODY_BYTES: expected a number of bytes, got {x:?}")
        })?;
        set("max_body_bytes", Value::Number(n.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "ADMIN" => Some("admin-key-0123456789abcdef".into()),
            "TOLLGATE_LISTEN" => Some("127.0.0.1:9000".into()),
            _ => None,
        }
    }

    #[test]
    fn brief_example_loads() {
        let c = parse(
            r#"
listen: 127.0.0.1:4747
database: sqlite://tollgate.db
admin_keys: ["${ADMIN}"]
providers:
  - name: openai
    kind: openai
    base_url: https://api.openai.com/v1
    api_key_env: OPENAI_API_KEY
models:
  - match: "gpt-*"
    provider: openai
pricing:
  fallback: { input_per_mtok: "1.00", output_per_mtok: "4.00" }
  models:
    - model: my-finetune
      input_per_mtok: "0.30"
      output_per_mtok: "1.20"
      long_context: { above_input_tokens: 200000, input_per_mtok: "0.60", output_per_mtok: "1.80" }
"#,
            &env,
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000", "TOLLGATE_LISTEN overrides");
        assert_eq!(c.admin_keys, ["admin-key-0123456789abcdef"]);
        assert_eq!(
            c.pricing.models[0]
                .price
                .long_context
                .as_ref()
                .unwrap()
                .above_input_tokens,
            200_000
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse("admin_keys: [\"${NOPE}\"]", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("admin_keys[0]") && e.contains("NOPE"), "{e}");
        let e = format!(
            "{:#}",
            parse(
                "providers:\n  - name: x\n    kind: openai\n    base_url: http://x\n    bogus: 1\n",
                &env
            )
            .unwrap_err()
        );
        assert!(e.contains("providers[0]") && e.contains("bogus"), "{e}");
        let e = format!(
            "{:#}",
            parse(
                "providers:\n  - name: x\n    kind: llama\n    base_url: http://x\n",
                &env
            )
            .unwrap_err()
        );
        assert!(
            e.contains("providers[0].kind") && e.contains("llama"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            parse(
                "pricing:\n  models:\n    - model: m\n      input_per_mtok: \"abc\"\n",
                &env
            )
            .unwrap_err()
        );
        assert!(e.contains("pricing.models[0]") && e.contains("abc"), "{e}");
        let e = format!(
            "{:#}",
            parse("models:\n  - match: x\n    provider: ghost\n", &env).unwrap_err()
        );
        assert!(
            e.contains("models[0].provider") && e.contains("ghost"),
            "{e}"
        );
    }

    #[test]
    fn defaults_and_literal_dollar() {
        assert_eq!(expand("a${X:-b}c", &env).unwrap(), "abc");
        assert_eq!(expand("$${X}", &env).unwrap(), "${X}");
        assert!(expand("${X}", &env).is_err());
    }
}
