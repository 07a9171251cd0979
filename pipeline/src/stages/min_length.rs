//! `min-length`: drops documents with fewer than `min-chars` characters (Unicode scalar values,
//! counted after earlier stages ran, so that CJK text is measured fairly) and, when set, more
//! than `max-chars`.

use serde::{Deserialize, Serialize};

use super::{Ctx, Decision, Stage};
use crate::document::Document;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MinLengthConfig {
    pub min_chars: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chars: Option<u64>,
}

impl MinLengthConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        if let Some(max) = self.max_chars {
            if max < self.min_chars {
                return Err(("max-chars".into(), format!("{max} is below min-chars ({})", self.min_chars)));
            }
        }
        Ok(())
    }
}

impl Stage for MinLengthConfig {
    fn name(&self) -> &'static str {
        "min-length"
    }

    fn process(&self, doc: &mut Document, _ctx: &mut Ctx) -> Decision {
        // Byte length bounds the char count from both sides (1..=4 bytes per char): count
        // characters only when the bytes alone cannot decide.
        let bytes = doc.text.len() as u64;
        if bytes < self.min_chars {
            return Decision::Drop("too-short");
        }
        let max = self.max_chars.unwrap_or(u64::MAX);
        if bytes / 4 > max {
            return Decision::Drop("too-long");
        }
        let chars =
            if bytes / 4 >= self.min_chars && bytes <= max { None } else { Some(doc.text.chars().count() as u64) };
        match chars {
            Some(c) if c < self.min_chars => Decision::Drop("too-short"),
            Some(c) if c > max => Decision::Drop("too-long"),
            _ => Decision::Keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(min: u64, max: Option<u64>, text: &str) -> Decision {
        let cfg = MinLengthConfig { min_chars: min, max_chars: max };
        cfg.process(&mut Document::new("d", text), &mut Ctx::default())
    }

    #[test]
    fn counts_characters_not_bytes() {
        // 5 Han characters are 15 bytes: kept at min 5, dropped at min 6.
        assert_eq!(decide(5, None, "你好世界！"), Decision::Keep);
        assert_eq!(decide(6, None, "你好世界！"), Decision::Drop("too-short"));
        assert_eq!(decide(1, Some(4), "你好世界！"), Decision::Drop("too-long"));
        assert_eq!(decide(1, Some(5), "你好世界！"), Decision::Keep);
        assert_eq!(decide(1, None, ""), Decision::Drop("too-short"));
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_a_plain_char_count(text in "\\PC{0,40}", min in 0u64..30, span in 0u64..30) {
            let max = min + span;
            let n = text.chars().count() as u64;
            let expected = if n < min { Decision::Drop("too-short") } else if n > max { Decision::Drop("too-long") } else { Decision::Keep };
            proptest::prop_assert_eq!(decide(min, Some(max), &text), expected);
        }
    }
}
