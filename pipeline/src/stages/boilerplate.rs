//! `boilerplate`: line-level cleanup of extracted web text.
//!
//! 1. HTML leftovers (`strip-html`): `<head>`, `<script>`, `<style>`, `<nav>` and comments go
//!    with their content; block tags (`p`, `div`, `br`, `li`, `h1`-`h6`, ...) become line breaks,
//!    other tags vanish; entities are decoded (twice, for `&amp;nbsp;`-style double escaping).
//! 2. Boilerplate lines (`drop-lines`): whole lines matching the built-in English/Chinese/Korean
//!    patterns (cookie banners, share/subscribe/login links, breadcrumbs `Home > News`, `A | B | C`
//!    link rows, copyright and disclaimer lines, "next/previous post") and any `extra-patterns`
//!    (regexes, matched against the trimmed line). Only lines up to `max-line-chars` characters
//!    are candidates, so prose that mentions cookies is never cut.
//! 3. Blank lines: runs of blank lines collapse to one (`collapse-blank-lines`).
//!
//! Counters: `lines-dropped`, `html-docs`, `docs-modified`. A document left empty is dropped
//! (`empty_after_cleanup`).

use std::sync::LazyLock;

use regex::{Regex, RegexSet};
use serde::{Deserialize, Serialize};

use super::{lang_matches, Ctx, Decision, Stage};
use crate::document::Document;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BoilerplateConfig {
    #[serde(default)]
    pub languages: Vec<String>,
    #[serde(default = "d_true")]
    pub strip_html: bool,
    /// Use the built-in en/zh/ko boilerplate line patterns.
    #[serde(default = "d_true")]
    pub drop_lines: bool,
    /// More line patterns (Rust regex syntax, matched case-insensitively against the trimmed line).
    #[serde(default)]
    pub extra_patterns: Vec<String>,
    /// Longer lines are never dropped as boilerplate.
    #[serde(default = "d_max_line")]
    pub max_line_chars: usize,
    #[serde(default = "d_true")]
    pub collapse_blank_lines: bool,
}

fn d_true() -> bool {
    true
}
fn d_max_line() -> usize {
    200
}

impl Default for BoilerplateConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

impl BoilerplateConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (i, p) in self.extra_patterns.iter().enumerate() {
            if let Err(e) = Regex::new(p) {
                return Err((format!("extra-patterns[{i}]"), format!("not a valid regex: {e}")));
            }
        }
        Ok(())
    }

    pub fn build(&self) -> Result<Boilerplate, String> {
        let extra = RegexSet::new(self.extra_patterns.iter().map(|p| format!("(?i){p}")))
            .map_err(|e| format!("boilerplate extra-patterns: {e}"))?;
        Ok(Boilerplate { cfg: self.clone(), extra })
    }
}

pub struct Boilerplate {
    cfg: BoilerplateConfig,
    extra: RegexSet,
}

/// Whole-line patterns (after trimming), case-insensitive, that mark boilerplate whatever the
/// line ends with: cookie banners, copyright and disclaimer lines.
const STRONG_PATTERNS: &[&str] = &[
    r"^(accept|allow|reject|manage)( all)? cookies$",
    r"^cookie (policy|settings|preferences|notice)$",
    r"^(we|this (web)?site|our site) uses? cookies\b.*",
    r"^by (continuing|using this site)\b.*\b(cookies|privacy)\b.*",
    r"^(©|\(c\)|copyright)\s*(©\s*)?\d{4}.*",
    r"^all rights reserved\.?$",
    r"^(版权所有|版权声明|免责声明|未经授权|本网站使用|本站使用)\S*.*$",
    r"^.{0,10}(cookie|隐私政策|用户协议).{0,30}$",
    r"^(무단\s?전재|저작권자|copyright).*(금지|reserved|©).*$",
    r"^(쿠키 정책|개인정보처리방침|이용약관)(\s*[|·/]\s*\S+)*$",
];

/// Navigation-like lines (share, login, next post, read more, ...). They only count when the
/// line does not end like a sentence: "Click here to apply the properties." is help text,
/// "Click here to download the PDF" is a link.
const WEAK_PATTERNS: &[&str] = &[
    // English
    r"^(advertisement|sponsored( content)?|ad)$",
    r"^(skip to (main )?content|back to top|scroll to top|jump to navigation)$",
    r"^(share( this( article| post| page)?)?|share on \w+.*|tweet( this)?|pin it)$",
    r"^(read more|continue reading|show more|load more|view all|see more)\W*$",
    r"^(related|recommended|popular|trending|latest) (articles|posts|stories|news|reads)$",
    r"^(leave|post|add|write) a (comment|reply)$",
    r"^\d+ comments?$",
    r"^(next|previous|older|newer) (post|article|story|entry)\W*$",
    r"^(log ?in|sign ?in|sign ?up|register|log ?out)( (/|\||or) (log ?in|sign ?in|sign ?up|register))?$",
    r"^subscribe( now| today)?( to (our|the) (newsletter|channel|blog|podcast).*)?$",
    r"^(sign up|subscribe) (for|to) (our|the) newsletter.*",
    r"^follow us( on .*)?$",
    r"^(powered by|designed by|theme by) \S+.*$",
    r"^click here( to .*)?$",
    r"^(print|email|e-mail) this (page|article)$",
    // Chinese
    r"^(上一篇|下一篇|举报|广告|收藏|评论|点赞|分享|相关阅读|相关文章|相关新闻|热门推荐|返回顶部|返回首页|登录|注册|网站地图)([:：].{0,20})?$",
    r"^(分享到|扫一扫|打印本页|关闭窗口|责任编辑|点击查看|点击阅读|更多精彩|联系我们|关于我们).*$",
    // Korean
    r"^(이전글|다음글|광고|프린트|공유하기|스크랩|기사 스크랩|관련기사|관련 기사|많이 본 뉴스|인기 기사|구독하기|맨 위로|위로 가기|로그인|회원가입|고객센터)$",
    r"^(로그인|회원가입)(\s*[|·/]\s*(로그인|회원가입))+$",
    r"^(카카오톡|카카오스토리|페이스북|트위터|네이버|밴드|링크|url) 공유(하기)?$",
    r"^댓글\s*\d*$",
    r"^이 기사를 추천합니다$",
];

static STRONG_SET: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new(STRONG_PATTERNS.iter().map(|p| format!("(?i){p}"))).expect("valid boilerplate patterns")
});
static WEAK_SET: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new(WEAK_PATTERNS.iter().map(|p| format!("(?i){p}"))).expect("valid boilerplate patterns")
});

fn is_boilerplate_line(line: &str) -> bool {
    if STRONG_SET.is_match(line) {
        return true;
    }
    let sentence = line.chars().next_back().is_some_and(crate::text::is_terminal_punct);
    !sentence && (WEAK_SET.is_match(line) || is_link_row(line))
}

/// `Home > News > Article` (breadcrumbs) and `About | Contact | Jobs` (link rows): short
/// segments joined by two or more separators, without sentence punctuation.
fn is_link_row(line: &str) -> bool {
    // (lines ending like a sentence never get here: see `is_boilerplate_line`)
    if line.chars().count() > 100 {
        return false;
    }
    for sep in [" > ", " » ", " › ", " | ", " · "] {
        let parts: Vec<&str> = line.split(sep).collect();
        // link texts: short, each with a letter and no code punctuation ("{ % | & | ! }" is a
        // syntax summary, "A > B And B > C" an expression)
        if parts.len() >= 3
            && parts.iter().all(|p| {
                p.chars().any(char::is_alphabetic)
                    && p.chars().count() <= 30
                    && !p.contains(['=', '(', ')', '{', '}', '[', ']', ';', '\'', '"'])
            })
        {
            return true;
        }
    }
    false
}

static HTML_BLOCKS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?is)<head\b.*?</head>|<script\b.*?</script>|<style\b.*?</style>|<nav\b.*?</nav>|<!--.*?-->|<!doctype[^>]*>",
    )
    .expect("valid regex")
});
static HTML_BREAK_TAGS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)<br\s*/?>|</?(p|div|h[1-6]|li|ul|ol|tr|table|section|article|header|footer|blockquote|pre)\b[^>]{0,500}>",
    )
    .expect("valid regex")
});
static HTML_TAGS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"</?[a-zA-Z][a-zA-Z0-9-]*\b[^<>]{0,500}>").expect("valid regex"));
/// Layout tags. A document is HTML when it has a doctype or at least two of these: text that
/// *mentions* tags (`the tag <SCRIPT LANGUAGE="JavaScript">`, `<META NAME=...>`) or merely
/// contains `&gt;` is left alone.
static LOOKS_HTML: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)<!doctype html|</?(html|head|body|div|p|span|br|h[1-6]|li|ul|ol|table|td|tr|nav|section|article)\b[^<>]{0,500}>|<a\s+href=[^<>]{0,500}>")
        .expect("valid regex")
});

fn looks_html(text: &str) -> bool {
    let mut n = 0;
    for m in LOOKS_HTML.find_iter(text) {
        if m.as_str().len() > 2 && m.as_str()[..2].eq_ignore_ascii_case("<!") {
            return true;
        }
        n += 1;
        if n >= 2 {
            return true;
        }
    }
    false
}
/// Entities left after a first decoding round (`&amp;nbsp;` → `&nbsp;`).
static ENTITY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)&(amp|lt|gt|nbsp|quot|apos|#\d+|#x[0-9a-f]+);").expect("valid regex"));

fn strip_html(text: &str) -> String {
    let mut s = text.to_string();
    for round in 0..2 {
        if round > 0 && !looks_html(&s) && !ENTITY.is_match(&s) {
            break;
        }
        let t = HTML_BLOCKS.replace_all(&s, "\n");
        let t = HTML_BREAK_TAGS.replace_all(&t, "\n");
        let t = HTML_TAGS.replace_all(&t, "");
        s = html_escape::decode_html_entities(&t).replace('\u{a0}', " ");
    }
    s
}

impl Stage for Boilerplate {
    fn name(&self) -> &'static str {
        "boilerplate"
    }
    fn score_names(&self) -> Vec<String> {
        vec!["lines_dropped".into()]
    }
    fn applies_to(&self, lang: Option<&str>) -> bool {
        lang_matches(&self.cfg.languages, lang)
    }

    fn process(&self, doc: &mut Document, ctx: &mut Ctx) -> Decision {
        let c = &self.cfg;
        let mut text = std::borrow::Cow::Borrowed(doc.text.as_str());
        if c.strip_html && looks_html(&text) {
            ctx.counters.add("html-docs", 1);
            text = strip_html(&text).into();
        }
        let mut out = String::with_capacity(text.len());
        let mut dropped = 0u64;
        let mut blank_run = 0usize;
        for line in text.split('\n') {
            let trimmed = line.trim();
            if !trimmed.is_empty()
                && trimmed.chars().count() <= c.max_line_chars
                && ((c.drop_lines && is_boilerplate_line(trimmed)) || self.extra.is_match(trimmed))
            {
                dropped += 1;
                continue;
            }
            if trimmed.is_empty() {
                blank_run += 1;
                if c.collapse_blank_lines && (blank_run > 1 || out.is_empty()) {
                    continue;
                }
                out.push('\n');
                continue;
            }
            blank_run = 0;
            if c.collapse_blank_lines {
                out.push_str(line.trim_end());
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        // drop the final newline we added, and trailing blank lines when collapsing
        let out = if c.collapse_blank_lines {
            out.trim_end().to_string()
        } else {
            out[..out.len().saturating_sub(1)].to_string()
        };
        ctx.set(0, dropped as f64);
        ctx.counters.add("lines-dropped", dropped);
        if out != doc.text {
            ctx.counters.add("docs-modified", 1);
            doc.text = out;
        }
        if doc.text.trim().is_empty() {
            return Decision::Drop("empty_after_cleanup");
        }
        Decision::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(text: &str) -> (Decision, String) {
        let b = BoilerplateConfig::default().build().unwrap();
        let mut doc = Document::new("d", text);
        let d = b.process(&mut doc, &mut Ctx::for_stage(&b));
        (d, doc.text)
    }

    #[test]
    fn drops_boilerplate_lines_in_three_languages() {
        let (_, t) = clean("Skip to main content\nHome > News > Article\nReal text stays here.\n\n\n\nShare this\nAll rights reserved.");
        assert_eq!(t, "Real text stays here.");
        let (_, t) = clean("首页 > 新闻中心 > 正文\n床前明月光，疑是地上霜。\n分享到：微信 微博 QQ空间\n版权所有 © 2023 本网站保留所有权利");
        assert_eq!(t, "床前明月光，疑是地上霜。");
        let (_, t) = clean("카카오톡 공유\n변수나 배열의 값이 유지됩니다.\n맨 위로\n댓글 0\n로그인 | 회원가입");
        assert_eq!(t, "변수나 배열의 값이 유지됩니다.");
    }

    #[test]
    fn keeps_prose_that_mentions_the_words() {
        let prose = "We use cookies in the kitchen every Sunday, and my grandmother always said that sharing them with neighbours is what makes a community; she baked hundreds of them for the church sale each year and never kept a single one for herself.";
        assert_eq!(clean(prose).1, prose);
        assert_eq!(clean("Print\nNext\nSearch").1, "Print\nNext\nSearch");
    }

    #[test]
    fn strips_html_and_double_escaped_entities() {
        let html = "<!DOCTYPE html>\n<html><head><title>T</title><script>var a={};</script></head>\n<body><div class=\"nav\"><a href=\"/\">Home</a> | <a href=\"/about\">About</a> | <a href=\"/x\">X</a></div>\n<h1>Title</h1>\n<p>It&#x27;s a &amp;nbsp;test&lt;br&gt;line.</p>\n<!-- footer -->\n</body></html>";
        let (d, t) = clean(html);
        assert_eq!(d, Decision::Keep);
        assert_eq!(t, "Title\n\nIt's a  test\nline.");
        assert_eq!(clean("<html><body><script>x</script></body></html>").0, Decision::Drop("empty_after_cleanup"));
        let mention = "The script is identified by the tag <SCRIPT LANGUAGE=\"JavaScript\"> and &gt; is an entity.";
        assert_eq!(clean(mention).1, mention);
        assert_eq!(clean("a < b and c > d, 3 > 2.").1, "a < b and c > d, 3 > 2.");
    }
}
