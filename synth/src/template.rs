//! Prompt templates: literal text with `{name}` placeholders filled from the input document
//! (`text`, `lang`, `id`, `source` or any other field of its record); `{{` and `}}` are literal
//! braces.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Field(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// What a template is filled from.
pub struct Fields<'a> {
    pub id: &'a str,
    pub text: &'a str,
    pub lang: Option<&'a str>,
    pub source: Option<&'a str>,
    pub extra: &'a Map<String, Value>,
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = s.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '}')) => break,
                            Some((_, c)) if c.is_alphanumeric() || c == '_' || c == '-' || c == '.' => name.push(c),
                            _ => {
                                return Err(format!(
                                    "placeholder at byte {at} is not closed or has characters other than letters, digits, `_`, `-`, `.` (write {{{{ for a literal brace)"
                                ))
                            }
                        }
                    }
                    if name.is_empty() {
                        return Err(format!("empty placeholder {{}} at byte {at}"));
                    }
                    if !lit.is_empty() {
                        pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                    }
                    pieces.push(Piece::Field(name));
                }
                '}' => return Err(format!("`}}` at byte {at} closes nothing (write }}}} for a literal brace)")),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Template { pieces })
    }

    /// The filled prompt, or the name of the first placeholder the document has no value for.
    pub fn render(&self, f: &Fields<'_>) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Field(name) => match name.as_str() {
                    "text" => out.push_str(f.text),
                    "id" => out.push_str(f.id),
                    "lang" => out.push_str(f.lang.ok_or_else(|| name.clone())?),
                    "source" => out.push_str(f.source.ok_or_else(|| name.clone())?),
                    other => match f.extra.get(other) {
                        Some(Value::String(s)) => out.push_str(s),
                        Some(Value::Null) | None => return Err(name.clone()),
                        Some(v) => out.push_str(&v.to_string()),
                    },
                },
            }
        }
        Ok(out)
    }
}

/// Cuts `text` to at most `max` characters (at a char boundary); says whether it cut.
pub fn truncate(text: &str, max: usize) -> (&str, bool) {
    match text.char_indices().nth(max) {
        Some((at, _)) => (&text[..at], true),
        None => (text, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(extra: &'a Map<String, Value>) -> Fields<'a> {
        Fields { id: "d1", text: "본문 text", lang: Some("ko"), source: None, extra }
    }

    #[test]
    fn fills_fields_and_braces() {
        let mut extra = Map::new();
        extra.insert("title".into(), Value::String("T".into()));
        extra.insert("year".into(), Value::from(2024));
        let t = Template::parse("[{lang}] {title} ({year}) {{json}}: {text}").unwrap();
        assert_eq!(t.render(&fields(&extra)).unwrap(), "[ko] T (2024) {json}: 본문 text");
        assert_eq!(Template::parse("{source}").unwrap().render(&fields(&extra)).unwrap_err(), "source");
        assert_eq!(Template::parse("{missing}").unwrap().render(&fields(&extra)).unwrap_err(), "missing");
    }

    #[test]
    fn bad_templates_say_where() {
        assert!(Template::parse("a {text").unwrap_err().contains("byte 2"));
        assert!(Template::parse("a } b").unwrap_err().contains("closes nothing"));
        assert!(Template::parse("{}").unwrap_err().contains("empty"));
        assert!(Template::parse("{a b}").is_err());
    }

    #[test]
    fn truncates_at_chars() {
        assert_eq!(truncate("한국어", 2), ("한국", true));
        assert_eq!(truncate("ab", 2), ("ab", false));
    }
}
