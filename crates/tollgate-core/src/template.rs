//! Message templates for budget warnings, refusals and footers:
//! `{placeholder}` names a fact about the budget, `{{` and `}}` are literal
//! braces. Placeholders are checked when the template is read, so a typo
//! is a configuration error that names it, never a message that shows
//! `{usd_usde}` to a user.

use std::fmt;

/// The facts a template can name.
pub const PLACEHOLDERS: [&str; 10] = [
    "percent_used",
    "period",
    "tokens_used",
    "tokens_limit",
    "tokens_remaining",
    "usd_used",
    "usd_limit",
    "usd_remaining",
    "reset_time",
    "budget",
];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    /// An index into [`PLACEHOLDERS`].
    Fact(usize),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder {{{0}}} (expected one of {list})", list = PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", "))]
    Unknown(String),
    #[error("unclosed {{ at byte {0} (write {{{{ for a literal brace)")]
    Unclosed(usize),
    #[error("unmatched }} at byte {0} (write }}}} for a literal brace)")]
    Unmatched(usize),
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().is_some_and(|(_, n)| *n == '{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek().is_some_and(|(_, n)| *n == '}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '}')) => break,
                            Some((_, c)) => name.push(c),
                            None => return Err(TemplateError::Unclosed(i)),
                        }
                    }
                    let idx = PLACEHOLDERS
                        .iter()
                        .position(|p| *p == name)
                        .ok_or(TemplateError::Unknown(name))?;
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Fact(idx));
                }
                '}' => return Err(TemplateError::Unmatched(i)),
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template {
            source: source.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders with `fact(name)` for each placeholder.
    pub fn render(&self, fact: impl Fn(&str) -> String) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Fact(i) => out.push_str(&fact(PLACEHOLDERS[*i])),
            }
        }
        out
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl serde::Serialize for Template {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_facts_and_literal_braces() {
        let t = Template::parse("{{x}} {budget}: {percent_used}% of {usd_limit}").unwrap();
        let out = t.render(|n| match n {
            "budget" => "daily".into(),
            "percent_used" => "75.00".into(),
            "usd_limit" => "5.00".into(),
            _ => "?".into(),
        });
        assert_eq!(out, "{x} daily: 75.00% of 5.00");
    }

    #[test]
    fn unknown_and_unbalanced_placeholders_are_errors() {
        assert_eq!(
            Template::parse("used {usd_usde}"),
            Err(TemplateError::Unknown("usd_usde".into()))
        );
        assert!(
            TemplateError::Unknown("x".into())
                .to_string()
                .contains("{percent_used}")
        );
        assert_eq!(
            Template::parse("a {budget"),
            Err(TemplateError::Unclosed(2))
        );
        assert_eq!(Template::parse("a } b"), Err(TemplateError::Unmatched(2)));
    }
}
