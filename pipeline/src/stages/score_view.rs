//! `score-view`: what a quality stage computes its scores on. FineWeb-2's rules see the text as
//! it is, so Chinese prose with full-width digits and Latin (`１９９８年１２月`, `ＣＥＯ`) counts one
//! non-letter "word" per full-width character and sinks the alpha-word ratio. With
//! `score-view = "width-normalized"` the stage scores a view of the document with the full-width
//! ASCII forms (U+FF01–U+FF5E) and the ideographic space mapped to ASCII; the document itself,
//! and what later stages and the output see, is unchanged.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::{Ctx, Decision, Stage};
use crate::document::Document;

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ScoreView {
    /// The text as it is (datatrove and FineWeb-2).
    #[default]
    Text,
    /// Full-width ASCII forms and U+3000 as ASCII.
    WidthNormalized,
}

/// `text` with U+FF01–U+FF5E as U+0021–U+007E and U+3000 as a space; borrowed when there is
/// nothing to map.
pub fn width_normalize(text: &str) -> Cow<'_, str> {
    let maps = |c: char| matches!(c, '\u{FF01}'..='\u{FF5E}' | '\u{3000}');
    if !text.chars().any(maps) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| match c {
                '\u{3000}' => ' ',
                '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).expect("ASCII"),
                c => c,
            })
            .collect(),
    )
}

/// A stage that scores the width-normalized view of each document.
pub struct WidthNormalized(pub Box<dyn Stage>);

/// `stage` under `view`.
pub fn viewed(view: ScoreView, stage: Box<dyn Stage>) -> Box<dyn Stage> {
    match view {
        ScoreView::Text => stage,
        ScoreView::WidthNormalized => Box::new(WidthNormalized(stage)),
    }
}

impl Stage for WidthNormalized {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn score_names(&self) -> Vec<String> {
        self.0.score_names()
    }
    fn applies_to(&self, lang: Option<&str>) -> bool {
        self.0.applies_to(lang)
    }
    fn process(&self, doc: &mut Document, ctx: &mut Ctx) -> Decision {
        let Cow::Owned(text) = width_normalize(&doc.text) else { return self.0.process(doc, ctx) };
        ctx.counters.add("score-view.width-normalized", 1);
        let mut view = doc.clone();
        view.text = text;
        self.0.process(&mut view, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::StageSpec;

    #[test]
    fn maps_full_width_ascii_only() {
        assert_eq!(width_normalize("１９９８年１２月３１日，ＣＥＯ（Ａ）　说"), "1998年12月31日,CEO(A) 说");
        assert!(matches!(width_normalize("1998年"), Cow::Borrowed(_)));
        assert_eq!(width_normalize("。、「」"), "。、「」", "CJK punctuation is not full-width ASCII");
    }

    #[test]
    fn a_normalized_view_scores_full_width_digits_as_ascii_and_leaves_the_text() {
        // a Chinese news sentence whose dates and figures are full-width
        let text = "据新华社报道，１９９８年１２月３１日，全国人民代表大会常务委员会第六次会议在北京举行，\
                    会议审议通过了关于修改法律的决定，与会代表一致认为这项决定对于完善国家法律体系具有重要意义。"
            .repeat(3);
        let spec = |view: &str| -> StageSpec {
            toml::from_str(&format!(
                "type = \"gopher-quality\"\nmin-doc-words = 10\nmin-avg-word-length = 1\nmax-avg-word-length = 5\n\
                 max-non-alpha-words-ratio = 0.735\nmin-stop-words = 0\nscore-view = \"{view}\"\n"
            ))
            .unwrap()
        };
        let run = |s: StageSpec| {
            let stage = s.build().unwrap();
            let mut doc = Document::new("d", &text);
            doc.lang = Some("zh".into());
            let mut ctx = Ctx::for_stage(stage.as_ref());
            let d = stage.process(&mut doc, &mut ctx);
            let alpha = ctx.scores[stage.score_names().iter().position(|n| n == "alpha_words_ratio").unwrap()];
            (d, alpha.unwrap(), doc.text == text, ctx.counters)
        };
        let (exact, a_exact, same_a, _) = run(spec("text"));
        let (viewed, a_view, same_b, counters) = run(spec("width-normalized"));
        assert!(same_a && same_b, "the document's text is never changed");
        assert!(
            a_view > a_exact,
            "full-width digits no longer count as one non-letter word each: {a_exact} → {a_view}"
        );
        assert_eq!(exact, Decision::Drop("gopher_below_alpha_threshold"));
        assert_eq!(viewed, Decision::Keep);
        assert_eq!(counters.0.get("score-view.width-normalized"), Some(&1));
    }
}
