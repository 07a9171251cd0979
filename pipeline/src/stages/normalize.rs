//! `normalize`: Unicode normalization, control characters and whitespace.
//!
//! In order: line ends become `\n` (CRLF, CR, U+2028, U+2029); control characters other than
//! `\n` and `\t` are removed, as are invisible format characters that only carry noise
//! (U+FEFF BOM, U+200B zero-width space, U+2060 word joiner); the text is put in the chosen
//! Unicode form (NFC by default; NFKC folds full-width forms, which changes CJK punctuation, so
//! it is opt-in); every space separator (tab, NBSP, U+3000 ideographic space, ...) becomes one
//! ASCII space, runs of spaces collapse, lines are trimmed, more than one blank line in a row
//! collapses to one, and the document is trimmed.

use serde::{Deserialize, Serialize};
use unicode_normalization::{is_nfc_quick, is_nfkc_quick, IsNormalized, UnicodeNormalization};

use super::{Ctx, Decision, Stage};
use crate::document::Document;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NormalizeConfig {
    #[serde(default)]
    pub unicode: UnicodeForm,
    #[serde(default = "yes")]
    pub strip_control: bool,
    #[serde(default = "yes")]
    pub whitespace: bool,
}

impl Default for NormalizeConfig {
    fn default() -> Self {
        NormalizeConfig { unicode: UnicodeForm::Nfc, strip_control: true, whitespace: true }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UnicodeForm {
    #[default]
    Nfc,
    Nfkc,
    None,
}

fn is_invisible_noise(c: char) -> bool {
    matches!(c, '\u{feff}' | '\u{200b}' | '\u{2060}')
}

fn is_space_separator(c: char) -> bool {
    // Unicode category Zs, plus tab.
    matches!(c, '\t' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}' | '\u{202f}' | '\u{205f}' | '\u{3000}')
}

impl NormalizeConfig {
    /// Returns the normalized text, or `None` when it is unchanged (the common case, no copy).
    pub fn normalize(&self, text: &str) -> Option<String> {
        let mut out: Option<String> = None;
        let mut current = text;

        if self.strip_control
            && current.chars().any(|c| {
                c == '\r'
                    || c == '\u{2028}'
                    || c == '\u{2029}'
                    || (c.is_control() && c != '\n' && c != '\t')
                    || is_invisible_noise(c)
            })
        {
            let mut s = String::with_capacity(current.len());
            let mut chars = current.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\r' => {
                        if chars.peek() == Some(&'\n') {
                            chars.next();
                        }
                        s.push('\n');
                    }
                    '\u{2028}' | '\u{2029}' => s.push('\n'),
                    '\n' | '\t' => s.push(c),
                    c if c.is_control() || is_invisible_noise(c) => {}
                    c => s.push(c),
                }
            }
            out = Some(s);
            current = out.as_deref().unwrap();
        }

        let quick = match self.unicode {
            UnicodeForm::Nfc => is_nfc_quick(current.chars()),
            UnicodeForm::Nfkc => is_nfkc_quick(current.chars()),
            UnicodeForm::None => IsNormalized::Yes,
        };
        if quick != IsNormalized::Yes {
            let s: String = match self.unicode {
                UnicodeForm::Nfc => current.nfc().collect(),
                UnicodeForm::Nfkc => current.nfkc().collect(),
                UnicodeForm::None => unreachable!(),
            };
            if s != current {
                out = Some(s);
                current = out.as_deref().unwrap();
            }
        }

        if self.whitespace {
            if let Some(s) = collapse_whitespace(current) {
                out = Some(s);
            }
        }
        out
    }
}

/// Collapses spaces, trims lines, keeps at most one blank line in a row, trims the text.
/// Returns `None` when nothing changes.
fn collapse_whitespace(text: &str) -> Option<String> {
    let mut s = String::with_capacity(text.len());
    let mut pending_newlines = 0usize;
    for line in text.split('\n') {
        let mut line_out_start = None;
        let mut pending_space = false;
        for c in line.chars() {
            if is_space_separator(c) {
                pending_space = line_out_start.is_some();
                continue;
            }
            if line_out_start.is_none() {
                if !s.is_empty() {
                    for _ in 0..pending_newlines.min(2) {
                        s.push('\n');
                    }
                }
                pending_newlines = 0;
                line_out_start = Some(s.len());
            } else if pending_space {
                s.push(' ');
            }
            pending_space = false;
            s.push(c);
        }
        pending_newlines += 1;
    }
    if s == text {
        None
    } else {
        Some(s)
    }
}

impl Stage for NormalizeConfig {
    fn name(&self) -> &'static str {
        "normalize"
    }

    fn process(&self, doc: &mut Document, _ctx: &mut Ctx) -> Decision {
        if let Some(s) = self.normalize(&doc.text) {
            doc.text = s;
        }
        Decision::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(text: &str) -> String {
        NormalizeConfig::default().normalize(text).unwrap_or_else(|| text.to_string())
    }

    #[test]
    fn collapses_whitespace_and_blank_lines() {
        assert_eq!(norm("  a \t b  \n\n\n\n c\u{3000}d  "), "a b\n\nc d");
        assert_eq!(norm("x\r\ny\rz"), "x\ny\nz");
        assert_eq!(norm("\n\n"), "");
    }

    #[test]
    fn strips_controls_but_keeps_text() {
        assert_eq!(norm("a\u{0}b\u{7}c\u{feff}d\u{200b}e"), "abcde");
        // ZWJ stays: it is part of emoji sequences and some scripts
        assert_eq!(norm("a\u{200d}b"), "a\u{200d}b");
    }

    #[test]
    fn composes_to_nfc() {
        // Hangul jamo sequence composes to one syllable; e + combining acute composes to é.
        assert_eq!(norm("\u{1100}\u{1161}"), "가");
        assert_eq!(norm("e\u{301}"), "é");
        // NFC keeps full-width CJK punctuation; NFKC folds it.
        assert_eq!(norm("你好，世界"), "你好，世界");
        let nfkc = NormalizeConfig { unicode: UnicodeForm::Nfkc, ..Default::default() };
        assert_eq!(nfkc.normalize("你好，世界").unwrap(), "你好,世界");
    }

    #[test]
    fn unchanged_text_is_not_copied() {
        assert!(NormalizeConfig::default().normalize("plain text\n\nsecond para").is_none());
    }

    proptest::proptest! {
        #[test]
        fn idempotent(text in "[ a-c\\t\\r\\n\u{3000}\u{0}\u{301}é가]{0,60}") {
            let once = norm(&text);
            proptest::prop_assert_eq!(norm(&once), once.clone());
            proptest::prop_assert!(!once.contains("\n\n\n"));
            proptest::prop_assert!(!once.starts_with(' ') && !once.ends_with(' '));
        }
    }
}
