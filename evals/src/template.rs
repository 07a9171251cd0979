//! The template language of task files: the part of Jinja that lm-eval's task YAMLs use, so a
//! definition can be pasted from lm-eval. Text with `{{ expression }}` holes; an expression is a
//! field (`question`, dotted `choices.label`), a string (`'A'`, `"A"`), an integer, a list
//! (`[distractor1, correct_answer]`), `a + b`, indexing and slicing (`x[0]`, `x[:-1]`), the
//! string and list methods `strip lstrip rstrip lower upper split replace index startswith
//! endswith` and the filters `trim lower upper join(sep) length first last int string`.
//! Values render as Python prints them (lists as `['a', 'b']`, booleans `True`/`False`).
//! Anything else (`{% %}` blocks, other methods) is refused by name rather than misread.

use serde_json::{Number, Value};

/// Renders a template against a document.
pub fn render(template: &str, doc: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    if rest.contains("{%") {
        return Err(format!("`{template}`: {{% %}} blocks are not supported (only {{{{ expression }}}})"));
    }
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").ok_or_else(|| format!("unclosed {{{{ in `{template}`"))? + start;
        let v = eval(&rest[start + 2..end], doc)?;
        out.push_str(&to_text(&v)?);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// When the template is one `{{ expression }}` and nothing else, its value (a list, a number).
pub fn value(template: &str, doc: &Value) -> Option<Result<Value, String>> {
    let inner = template.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then(|| eval(inner, doc))
}

/// Evaluates one expression.
pub fn eval(expr: &str, doc: &Value) -> Result<Value, String> {
    let tokens = lex(expr).map_err(|e| format!("`{}`: {e}", expr.trim()))?;
    let mut p = Parser { t: &tokens, i: 0, doc };
    let v = p.expr().map_err(|e| format!("`{}`: {e}", expr.trim()))?;
    if p.i != tokens.len() {
        return Err(format!("`{}`: unexpected {:?}", expr.trim(), tokens[p.i]));
    }
    Ok(v)
}

/// Python's `str()` of a value.
pub fn to_text(v: &Value) -> Result<String, String> {
    Ok(match v {
        Value::String(s) => s.clone(),
        Value::Null => return Err("a field is null".into()),
        other => repr(other),
    })
}

fn repr(v: &Value) -> String {
    match v {
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Null => "None".into(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(repr).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => {
            format!("{{{}}}", o.iter().map(|(k, v)| format!("'{k}': {}", repr(v))).collect::<Vec<_>>().join(", "))
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Punct(char),
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let c: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else if ch.is_ascii_digit() {
            let start = i;
            while i < c.len() && c[i].is_ascii_digit() {
                i += 1;
            }
            let text: String = c[start..i].iter().collect();
            out.push(Tok::Int(text.parse().map_err(|_| format!("integer {text} is too large"))?));
        } else if ch == '\'' || ch == '"' {
            let mut text = String::new();
            i += 1;
            loop {
                match c.get(i) {
                    None => return Err("unclosed string".into()),
                    Some(&q) if q == ch => break,
                    Some('\\') => {
                        i += 1;
                        text.push(match c.get(i) {
                            Some('n') => '\n',
                            Some('t') => '\t',
                            Some(&o) => o,
                            None => return Err("unclosed string".into()),
                        });
                    }
                    Some(&o) => text.push(o),
                }
                i += 1;
            }
            i += 1;
            out.push(Tok::Str(text));
        } else if "[](),.|+-:".contains(ch) {
            out.push(Tok::Punct(ch));
            i += 1;
        } else {
            return Err(format!("unexpected character `{ch}`"));
        }
    }
    Ok(out)
}

struct Parser<'a> {
    t: &'a [Tok],
    i: usize,
    doc: &'a Value,
}

impl Parser<'_> {
    fn peek(&self, ch: char) -> bool {
        self.t.get(self.i) == Some(&Tok::Punct(ch))
    }
    fn eat(&mut self, ch: char) -> bool {
        let hit = self.peek(ch);
        self.i += hit as usize;
        hit
    }
    fn expect(&mut self, ch: char) -> Result<(), String> {
        if self.eat(ch) {
            Ok(())
        } else {
            Err(format!("expected `{ch}`"))
        }
    }
    fn ident(&mut self) -> Result<String, String> {
        match self.t.get(self.i) {
            Some(Tok::Ident(s)) => {
                self.i += 1;
                Ok(s.clone())
            }
            other => Err(format!("expected a name, found {other:?}")),
        }
    }

    fn expr(&mut self) -> Result<Value, String> {
        let mut v = self.postfix()?;
        while self.eat('+') {
            let r = self.postfix()?;
            v = add(v, r)?;
        }
        Ok(v)
    }

    fn args(&mut self) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        if self.eat(')') {
            return Ok(out);
        }
        loop {
            out.push(self.expr()?);
            if self.eat(')') {
                return Ok(out);
            }
            self.expect(',')?;
        }
    }

    fn postfix(&mut self) -> Result<Value, String> {
        let mut v = self.primary()?;
        loop {
            if self.eat('.') {
                let name = self.ident()?;
                if self.eat('(') {
                    let args = self.args()?;
                    v = method(&v, &name, &args)?;
                } else {
                    v = v.get(&name).cloned().ok_or_else(|| format!("no field `{name}`"))?;
                }
            } else if self.eat('[') {
                v = self.subscript(v)?;
            } else if self.eat('|') {
                let name = self.ident()?;
                let args = if self.eat('(') { self.args()? } else { Vec::new() };
                v = filter(&v, &name, &args)?;
            } else {
                return Ok(v);
            }
        }
    }

    fn int(&mut self) -> Result<Option<i64>, String> {
        let neg = self.eat('-');
        match self.t.get(self.i) {
            Some(Tok::Int(n)) => {
                self.i += 1;
                Ok(Some(if neg { -n } else { *n }))
            }
            _ if neg => Err("expected an integer after `-`".into()),
            _ => Ok(None),
        }
    }

    fn subscript(&mut self, v: Value) -> Result<Value, String> {
        if let Value::Object(o) = &v {
            let key = self.expr()?;
            self.expect(']')?;
            let key = to_text(&key)?;
            return o.get(&key).cloned().ok_or_else(|| format!("no field `{key}`"));
        }
        let start = self.int()?;
        if self.eat(':') {
            let end = self.int()?;
            self.expect(']')?;
            return slice(&v, start, end);
        }
        self.expect(']')?;
        let i = start.ok_or("expected an integer index")?;
        let items = seq(&v)?;
        let at = if i < 0 { items.len() as i64 + i } else { i };
        items.get(at as usize).filter(|_| at >= 0).cloned().ok_or_else(|| format!("index {i} is out of range"))
    }

    fn primary(&mut self) -> Result<Value, String> {
        match self.t.get(self.i).cloned() {
            Some(Tok::Str(s)) => {
                self.i += 1;
                Ok(Value::String(s))
            }
            Some(Tok::Int(n)) => {
                self.i += 1;
                Ok(Value::Number(n.into()))
            }
            Some(Tok::Punct('-')) => Ok(Value::Number(self.int()?.expect("an integer").into())),
            Some(Tok::Punct('(')) => {
                self.i += 1;
                let v = self.expr()?;
                self.expect(')')?;
                Ok(v)
            }
            Some(Tok::Punct('[')) => {
                self.i += 1;
                let mut items = Vec::new();
                if !self.eat(']') {
                    loop {
                        items.push(self.expr()?);
                        if self.eat(']') {
                            break;
                        }
                        self.expect(',')?;
                    }
                }
                Ok(Value::Array(items))
            }
            Some(Tok::Ident(name)) => {
                self.i += 1;
                match name.as_str() {
                    "True" | "true" => Ok(Value::Bool(true)),
                    "False" | "false" => Ok(Value::Bool(false)),
                    _ => self.doc.get(&name).cloned().ok_or_else(|| format!("no field `{name}`")),
                }
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }
}

/// Characters for strings, items for lists.
fn seq(v: &Value) -> Result<Vec<Value>, String> {
    match v {
        Value::Array(a) => Ok(a.clone()),
        Value::String(s) => Ok(s.chars().map(|c| Value::String(c.to_string())).collect()),
        other => Err(format!("{} cannot be indexed", repr(other))),
    }
}

fn slice(v: &Value, start: Option<i64>, end: Option<i64>) -> Result<Value, String> {
    let items = seq(v)?;
    let n = items.len() as i64;
    let clamp = |x: i64| if x < 0 { (n + x).max(0) } else { x.min(n) } as usize;
    let (a, b) = (clamp(start.unwrap_or(0)), clamp(end.unwrap_or(n)));
    let picked = if a < b { items[a..b].to_vec() } else { Vec::new() };
    Ok(match v {
        Value::String(_) => Value::String(picked.iter().filter_map(Value::as_str).collect()),
        _ => Value::Array(picked),
    })
}

fn add(a: Value, b: Value) -> Result<Value, String> {
    match (a, b) {
        (Value::String(a), Value::String(b)) => Ok(Value::String(a + &b)),
        (Value::Array(mut a), Value::Array(b)) => {
            a.extend(b);
            Ok(Value::Array(a))
        }
        (Value::Number(a), Value::Number(b)) if a.is_i64() && b.is_i64() => {
            Ok(Value::Number((a.as_i64().unwrap_or(0) + b.as_i64().unwrap_or(0)).into()))
        }
        (a, b) => Err(format!("cannot add {} and {}", repr(&a), repr(&b))),
    }
}

fn str_arg(args: &[Value], i: usize, what: &str) -> Result<Option<String>, String> {
    match args.get(i) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{what} takes a string, not {}", repr(other))),
    }
}

fn strip(s: &str, chars: Option<&str>, left: bool, right: bool) -> String {
    let pat = |c: char| chars.map_or(c.is_whitespace(), |set| set.contains(c));
    let mut out = s;
    if left {
        out = out.trim_start_matches(pat);
    }
    if right {
        out = out.trim_end_matches(pat);
    }
    out.to_string()
}

fn method(v: &Value, name: &str, args: &[Value]) -> Result<Value, String> {
    let s = v.as_str();
    let text = |r: String| Ok(Value::String(r));
    match (name, s) {
        ("strip", Some(s)) => text(strip(s, str_arg(args, 0, "strip")?.as_deref(), true, true)),
        ("lstrip", Some(s)) => text(strip(s, str_arg(args, 0, "lstrip")?.as_deref(), true, false)),
        ("rstrip", Some(s)) => text(strip(s, str_arg(args, 0, "rstrip")?.as_deref(), false, true)),
        ("lower", Some(s)) => text(s.to_lowercase()),
        ("upper", Some(s)) => text(s.to_uppercase()),
        ("replace", Some(s)) => {
            let (a, b) = (str_arg(args, 0, "replace")?, str_arg(args, 1, "replace")?);
            text(s.replace(&a.ok_or("replace needs two strings")?, &b.ok_or("replace needs two strings")?))
        }
        ("startswith", Some(s)) => Ok(Value::Bool(s.starts_with(&str_arg(args, 0, name)?.unwrap_or_default()))),
        ("endswith", Some(s)) => Ok(Value::Bool(s.ends_with(&str_arg(args, 0, name)?.unwrap_or_default()))),
        ("split", Some(s)) => {
            let max = match args.get(1) {
                None => usize::MAX,
                Some(Value::Number(n)) if n.as_i64() == Some(-1) => usize::MAX,
                Some(Value::Number(n)) => n.as_u64().ok_or("split's maxsplit is an integer")? as usize,
                Some(other) => return Err(format!("split's maxsplit is an integer, not {}", repr(other))),
            };
            let parts: Vec<Value> = match str_arg(args, 0, "split")? {
                Some(sep) if sep.is_empty() => return Err("split: empty separator".into()),
                Some(sep) => s.splitn(max.saturating_add(1), sep.as_str()).map(|p| Value::String(p.into())).collect(),
                None => {
                    // Python's split(): runs of whitespace, none at the ends
                    let mut out = Vec::new();
                    let mut rest = s.trim_start();
                    while !rest.is_empty() {
                        if out.len() == max {
                            out.push(Value::String(rest.trim_end().into()));
                            break;
                        }
                        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                        out.push(Value::String(rest[..end].into()));
                        rest = rest[end..].trim_start();
                    }
                    out
                }
            };
            Ok(Value::Array(parts))
        }
        ("index", _) => {
            let x = args.first().ok_or("index needs an argument")?;
            let found = match (v, x) {
                (Value::String(s), Value::String(x)) => s.find(x.as_str()).map(|b| s[..b].chars().count()),
                (Value::Array(a), x) => a.iter().position(|y| y == x),
                _ => return Err(format!("{}.index({})", repr(v), repr(x))),
            };
            found.map(|i| Value::Number((i as u64).into())).ok_or_else(|| format!("{} is not in {}", repr(x), repr(v)))
        }
        _ => Err(format!("unsupported method `{name}` on {}", repr(v))),
    }
}

fn filter(v: &Value, name: &str, args: &[Value]) -> Result<Value, String> {
    match name {
        "trim" => method(v, "strip", &[]),
        "lower" | "upper" => method(v, name, &[]),
        "join" => {
            let sep = str_arg(args, 0, "join")?.unwrap_or_default();
            let parts = seq(v)?.iter().map(to_text).collect::<Result<Vec<_>, _>>()?;
            Ok(Value::String(parts.join(&sep)))
        }
        "length" | "count" => Ok(Value::Number(
            (seq(v).map(|s| s.len()).or_else(|e| v.as_object().map(|o| o.len()).ok_or(e))? as u64).into(),
        )),
        "first" => seq(v)?.first().cloned().ok_or_else(|| "first of an empty list".into()),
        "last" => seq(v)?.last().cloned().ok_or_else(|| "last of an empty list".into()),
        "string" => Ok(Value::String(to_text(v)?)),
        "int" => match v {
            Value::Number(n) => Ok(Value::Number(Number::from(n.as_f64().unwrap_or(0.0) as i64))),
            Value::String(s) => Ok(Value::Number(s.trim().parse::<i64>().unwrap_or(0).into())),
            Value::Bool(b) => Ok(Value::Number((*b as i64).into())),
            _ => Ok(Value::Number(0.into())),
        },
        _ => Err(format!("unsupported filter `{name}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "question": "  Why?  ", "A": "x", "answer": "B", "label": 1,
            "choices": {"text": ["red", "blue"], "label": ["A", "B"]}, "answerKey": " B",
            "sentence": "The cup fell because _ was slippery.", "option1": "it", "option2": "the table",
            "text": "he went to the store", "n": 3
        })
    }

    #[test]
    fn lm_eval_templates() {
        let d = doc();
        let r = |t: &str| render(t, &d).unwrap();
        assert_eq!(r("{{question.strip()}}\nA. {{A}}\n答案："), "Why?\nA. x\n答案：");
        assert_eq!(r("{{['A', 'B', 'C', 'D'].index(answer)}}"), "1");
        assert_eq!(r("{{choices.label.index(answerKey.lstrip())}}"), "1");
        assert_eq!(r("{{choices.text}}"), "['red', 'blue']");
        assert_eq!(r("{{text.split(' ')[:-1]|join(' ')}}"), "he went to the");
        assert_eq!(r("{{' '+text.split(' ')[-1]}}"), " store");
        assert_eq!(r("{{sentence.split('_', 1)[0]}}{{option2}}"), "The cup fell because the table");
        assert_eq!(r("{{sentence.split('_', 1)[1].strip()}}"), "was slippery.");
        assert_eq!(r("{{ question | trim | upper }}!"), "WHY?!");
        assert_eq!(r("{{label}} {{n + 1}} {{'abc'[1:]}} {{choices['text'][0]}}"), "1 4 bc red");
        assert_eq!(r("{{'  a  b '.split()}}"), "['a', 'b']");
        assert_eq!(value("{{[A, answer]}}", &d).unwrap().unwrap(), json!(["x", "B"]));
        assert!(value("Q: {{A}}", &d).is_none());
    }

    #[test]
    fn refusals_name_the_problem() {
        let d = doc();
        let e = |t: &str| render(t, &d).unwrap_err();
        assert!(e("{{missing}}").contains("no field `missing`"));
        assert!(e("{{A.capitalize()}}").contains("unsupported method `capitalize`"));
        assert!(e("{% if A %}x{% endif %}").contains("blocks are not supported"));
        assert!(e("{{['A'].index(answer)}}").contains("'B' is not in ['A']"));
        assert!(e("{{A").contains("unclosed"));
        assert!(e("{{choices.text[5]}}").contains("out of range"));
        assert!(e("{{A | wordwrap}}").contains("unsupported filter"));
    }
}
