//! Words, sentences and character classes for the quality filters.
//!
//! The filters count words, so what a "word" is decides their results. lehr picks the word
//! splitter from the document's language, as datatrove/FineWeb-2 do:
//!
//! - `zh` (and `zh-*`, `cmn`, `yue`): jieba-rs segmentation (datatrove uses spaCy's Chinese
//!   tokenizer with the jieba segmenter, i.e. the same dictionary-based segmentation);
//! - `ko`: eojeol (whitespace-separated units) with punctuation split off, since Korean spacing
//!   already marks word units;
//! - everything else: an English-style rule tokenizer that follows spaCy's English rules
//!   (datatrove's English word tokenizer is `spacy.blank("en")`): split on whitespace, then peel
//!   prefix and suffix punctuation, split contractions (`don't` → `do n't`) and hyphens between
//!   letters. There is no Rust port of spaCy's tokenizer; this one reproduces the rules that move
//!   Gopher/FineWeb counts (tests/bench compare the filter decisions with datatrove's).
//!
//! All functions return slices of the input: no allocation per word.

use std::sync::LazyLock;

use regex::Regex;

/// How a document's text is split into words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordSplitter {
    /// spaCy-English-like rules (Latin, Cyrillic, ... scripts).
    Rules,
    /// jieba-rs dictionary + HMM segmentation (Chinese).
    Jieba,
    /// Whitespace units with leading/trailing punctuation split off (Korean eojeol).
    Eojeol,
}

impl WordSplitter {
    /// The splitter for a language code (ISO 639-1 or -3, optionally with a region/script).
    pub fn for_lang(lang: Option<&str>) -> WordSplitter {
        let base = lang.unwrap_or("").split(['-', '_']).next().unwrap_or("").to_ascii_lowercase();
        match base.as_str() {
            "zh" | "cmn" | "zho" | "yue" | "wuu" => WordSplitter::Jieba,
            "ko" | "kor" => WordSplitter::Eojeol,
            _ => WordSplitter::Rules,
        }
    }

    /// Splits `text` into words (whitespace never appears in a word; punctuation tokens do).
    pub fn words(self, text: &str) -> Vec<&str> {
        let mut out = Vec::with_capacity(text.len() / 5 + 1);
        match self {
            WordSplitter::Rules => {
                for chunk in text.split(char::is_whitespace).filter(|c| !c.is_empty()) {
                    split_rules(chunk, &mut out);
                }
            }
            WordSplitter::Eojeol => {
                for chunk in text.split(char::is_whitespace).filter(|c| !c.is_empty()) {
                    split_punct_edges(chunk, &mut out);
                }
            }
            WordSplitter::Jieba => {
                for w in JIEBA.cut(text, true) {
                    let w = w.word.trim();
                    if !w.is_empty() {
                        out.push(w);
                    }
                }
            }
        }
        out
    }
}

static JIEBA: LazyLock<jieba_rs::Jieba> = LazyLock::new(jieba_rs::Jieba::new);

/// Loads the Chinese segmenter's dictionary now (it takes ~0.3 s), rather than on the first
/// Chinese document.
pub fn warm_up_jieba() {
    LazyLock::force(&JIEBA);
}

/// jieba-rs dictionary segmentation without the HMM (deterministic for unseen words too).
pub fn jieba_words(text: &str) -> Vec<&str> {
    JIEBA.cut(text, false).into_iter().map(|t| t.word).collect()
}

mod datatrove_chars;

/// datatrove's `PUNCTUATION_SET` (its `PUNCTUATION` and `TERMINAL_PUNCTUATION`), exactly: what
/// its Gopher quality filter calls a symbol. Not Unicode's P/S categories: `•`, `©`, `·`, `『』`,
/// `／`, `－` and emoji are not in it, full-width `１` is.
pub fn is_datatrove_punct(c: char) -> bool {
    datatrove_chars::PUNCTUATION_SET.binary_search(&c).is_ok()
}

/// datatrove's `TERMINAL_PUNCTUATION`, exactly (FineWeb's line-ending rule).
pub fn is_datatrove_terminal(c: char) -> bool {
    datatrove_chars::TERMINAL_PUNCTUATION.binary_search(&c).is_ok()
}

/// Python's `str.isalpha` for one character: Unicode letters (Lu, Ll, Lt, Lm, Lo). Unlike
/// [`char::is_alphabetic`], letter numbers (Ⅱ, Ⅲ) and combining vowel signs are not letters.
pub fn is_py_alpha(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    let ranges = &datatrove_chars::ALPHA_RANGES;
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// The Unicode version of [`is_py_alpha`]'s table (Python's `unicodedata` that made it).
pub fn py_alpha_unicode_version() -> &'static str {
    datatrove_chars::ALPHA_UNICODE_VERSION
}

/// Punctuation, symbols and control characters: a word made only of these is a "symbol word"
/// (Gopher's counts leave them out).
pub fn is_punct_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_punctuation() || c.is_ascii_control();
    }
    if c.is_control() {
        return true;
    }
    if c.is_alphanumeric() || c.is_whitespace() {
        return false;
    }
    // General categories P* and S* outside ASCII: the common ranges first, then the regex.
    matches!(c, '\u{2000}'..='\u{206F}' | '\u{3000}'..='\u{303F}' | '\u{FF01}'..='\u{FF0F}' | '\u{FF1A}'..='\u{FF20}' | '\u{FF3B}'..='\u{FF40}' | '\u{FF5B}'..='\u{FF65}' | '«' | '»' | '·' | '¡' | '¿' | '§' | '¶' | '°' | '©' | '®' | '×' | '÷')
        || {
            let mut buf = [0u8; 4];
            PUNCT_RE.is_match(c.encode_utf8(&mut buf))
        }
}

static PUNCT_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[\p{P}\p{S}]$").expect("valid regex"));

/// True if every character of `w` is punctuation/symbol (and `w` is not empty).
pub fn is_symbol_word(w: &str) -> bool {
    !w.is_empty() && w.chars().all(is_punct_char)
}

/// Characters that end a sentence (Unicode `Sentence_Terminal`: `.` `!` `?` `。` `！` `？` ...),
/// which is what datatrove's `TERMINAL_PUNCTUATION` lists.
pub fn is_terminal_punct(c: char) -> bool {
    if c.is_ascii() {
        return matches!(c, '.' | '!' | '?');
    }
    matches!(c, '。' | '！' | '？' | '｡' | '．' | '﹒' | '﹗' | '﹖') || {
        let mut buf = [0u8; 4];
        TERMINAL_RE.is_match(c.encode_utf8(&mut buf))
    }
}

static TERMINAL_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\p{Sentence_Terminal}$").expect("valid regex"));

/// Number of sentences in `words` (as produced by [`WordSplitter::words`]), with spaCy's
/// sentencizer rule: a sentence ends after a terminal-punctuation token and the next sentence
/// starts at the next token that is not punctuation.
pub fn sentence_count(words: &[&str]) -> usize {
    if words.is_empty() {
        return 0;
    }
    let mut n = 1;
    let mut seen_end = false;
    for w in words {
        let single_terminal = {
            let mut cs = w.chars();
            matches!((cs.next(), cs.next()), (Some(c), None) if is_terminal_punct(c))
        };
        if seen_end && !single_terminal && !is_symbol_word(w) {
            n += 1;
            seen_end = false;
        } else if single_terminal {
            seen_end = true;
        }
    }
    n
}

fn first_char(s: &str) -> Option<char> {
    s.chars().next()
}
fn last_char(s: &str) -> Option<char> {
    s.chars().next_back()
}

/// Korean/other whitespace units: leading and trailing punctuation become their own tokens.
fn split_punct_edges<'a>(chunk: &'a str, out: &mut Vec<&'a str>) {
    let mut s = chunk;
    while let Some(c) = first_char(s) {
        if s.len() == c.len_utf8() || !is_punct_char(c) {
            break;
        }
        out.push(&s[..c.len_utf8()]);
        s = &s[c.len_utf8()..];
    }
    let mut tail = Vec::new();
    while let Some(c) = last_char(s) {
        if s.len() == c.len_utf8() || !is_punct_char(c) {
            break;
        }
        tail.push(&s[s.len() - c.len_utf8()..]);
        s = &s[..s.len() - c.len_utf8()];
    }
    if !s.is_empty() {
        out.push(s);
    }
    out.extend(tail.into_iter().rev());
}

/// Prefix characters spaCy splits off the front of a token.
fn is_prefix_char(c: char) -> bool {
    matches!(
        c,
        '(' | '['
            | '{'
            | '"'
            | '\''
            | '`'
            | '«'
            | '“'
            | '‘'
            | '„'
            | '‚'
            | '¿'
            | '¡'
            | '$'
            | '£'
            | '€'
            | '¥'
            | '#'
            | '&'
            | '*'
            | '+'
            | '<'
            | '='
            | '>'
            | '~'
            | '§'
            | '%'
            | '—'
            | '–'
            | '-'
            | ','
            | ':'
            | ';'
            | '!'
            | '?'
            | '.'
            | '…'
            | '/'
            | '\\'
            | '|'
            | '_'
            | '@'
            | '^'
            | ')'
            | ']'
            | '}'
            | '»'
            | '”'
            | '’'
    ) || (!c.is_ascii() && is_punct_char(c) && !c.is_alphanumeric())
}

/// Suffix characters spaCy splits off the end of a token (`.` is handled separately).
fn is_suffix_char(c: char) -> bool {
    matches!(
        c,
        ',' | ':'
            | ';'
            | '!'
            | '?'
            | '"'
            | '\''
            | '`'
            | ')'
            | ']'
            | '}'
            | '»'
            | '”'
            | '’'
            | '“'
            | '‘'
            | '…'
            | '%'
            | '°'
            | '*'
            | '|'
            | '>'
            | '<'
            | '='
            | '+'
            | '~'
            | '#'
            | '&'
            | '—'
            | '–'
            | '-'
            | '/'
            | '\\'
            | '_'
            | '('
            | '['
            | '{'
    ) || (!c.is_ascii() && is_punct_char(c) && !c.is_alphanumeric())
}

/// Words spaCy's English tokenizer keeps whole although they end in `.`.
const ABBREVIATIONS: &[&str] = &[
    "a.m.", "p.m.", "e.g.", "i.e.", "etc.", "vs.", "mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "jr.", "sr.", "inc.",
    "ltd.", "co.", "corp.", "jan.", "feb.", "mar.", "apr.", "jun.", "jul.", "aug.", "sep.", "sept.", "oct.", "nov.",
    "dec.", "mt.", "gov.", "gen.", "rev.", "sen.", "rep.", "u.s.", "u.k.", "n.y.",
];

const CONTRACTION_SUFFIXES: &[&str] =
    &["n't", "n’t", "'s", "’s", "'m", "’m", "'re", "’re", "'ve", "’ve", "'ll", "’ll", "'d", "’d", "'S", "N'T"];

fn is_url_like(s: &str) -> bool {
    if s.contains("://") || s.starts_with("www.") || (s.contains('@') && s.contains('.')) {
        return true;
    }
    // domain/path without a scheme: "wikipedia.org/wiki/Page"
    match s.split_once('/') {
        Some((host, _)) => {
            let mut labels = host.split('.');
            let first = labels.next().unwrap_or("");
            let tld = host.rsplit('.').next().unwrap_or("");
            host.contains('.')
                && !first.is_empty()
                && (2..=6).contains(&tld.len())
                && tld.chars().all(|c| c.is_ascii_lowercase())
                && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        }
        None => false,
    }
}

/// Words spaCy's English exceptions split although they have no apostrophe:
/// `(word, length of the first part)`, matched case-insensitively.
const SPLIT_WORDS: &[(&str, usize)] = &[
    ("cannot", 3),
    ("gonna", 3),
    ("gotta", 3),
    ("wanna", 3),
    ("im", 1),
    ("ive", 1),
    ("dont", 2),
    ("didnt", 3),
    ("doesnt", 4),
    ("isnt", 2),
    ("wasnt", 3),
    ("cant", 2),
    ("wont", 2),
    ("thats", 4),
    ("youre", 3),
];

/// A chunk made of one of `-` `.` `~` `|` repeated (`...`, `--`, `-----`): spaCy keeps it as
/// one token. Runs of its prefix/suffix characters (`!!!!`, `____`, `====`, `****`) it splits
/// into single characters, which the peeling below does too.
fn is_punct_run(s: &str) -> bool {
    let mut cs = s.chars();
    match cs.next() {
        Some(c) if matches!(c, '-' | '.' | '~' | '|') => cs.all(|d| d == c),
        _ => false,
    }
}

/// spaCy-English-like splitting of one whitespace-free chunk.
fn split_rules<'a>(chunk: &'a str, out: &mut Vec<&'a str>) {
    // Fast path: most chunks are plain ASCII words or numbers.
    if chunk.bytes().all(|b| b.is_ascii_alphanumeric()) {
        if (2..=6).contains(&chunk.len()) {
            if let Some((_, n)) = SPLIT_WORDS.iter().find(|(w, _)| w.eq_ignore_ascii_case(chunk)) {
                out.push(&chunk[..*n]);
                out.push(&chunk[*n..]);
                return;
            }
        }
        out.push(chunk);
        return;
    }
    // Whitespace-free runs over 1 KiB (minified code, base64, "=====" x 10^6): the rule loop
    // below rescans the chunk per peeled character (quadratic), so these get the linear edge
    // splitter instead. Real words are never this long.
    if chunk.len() > 1024 {
        split_punct_edges(chunk, out);
        return;
    }
    let mut s = chunk;
    let mut tail: Vec<&'a str> = Vec::new();
    loop {
        if s.is_empty() {
            break;
        }
        if is_abbreviation(s) || is_url_like(s) || is_punct_run(s) || is_letter_period(s) || is_option(s) {
            out.push(s);
            s = "";
            break;
        }
        if let Some((_, n)) = SPLIT_WORDS.iter().find(|(w, _)| w.eq_ignore_ascii_case(s)) {
            out.push(&s[..*n]);
            out.push(&s[*n..]);
            s = "";
            break;
        }
        // prefixes
        if s.starts_with("...") && s.len() > 3 {
            out.push(&s[..3]);
            s = &s[3..];
            continue;
        }
        if let Some(c) = first_char(s) {
            if s.len() > c.len_utf8() && is_prefix_char(c) {
                out.push(&s[..c.len_utf8()]);
                s = &s[c.len_utf8()..];
                continue;
            }
        }
        // suffixes
        if s.ends_with("...") && s.len() > 3 {
            tail.push(&s[s.len() - 3..]);
            s = &s[..s.len() - 3];
            continue;
        }
        if let Some(suf) = CONTRACTION_SUFFIXES.iter().find(|suf| s.len() > suf.len() && s.ends_with(**suf)) {
            let cut = s.len() - suf.len();
            // `n't` only after a letter ("don't"); the others after a letter too
            if s[..cut].chars().next_back().is_some_and(char::is_alphabetic) {
                tail.push(&s[cut..]);
                s = &s[..cut];
                continue;
            }
        }
        if let Some(c) = last_char(s) {
            if s.len() > c.len_utf8() {
                let head = &s[..s.len() - c.len_utf8()];
                let split = if c == '.' {
                    // spaCy: a final period splits after a lowercase letter, a digit, punctuation,
                    // or two capitals ("USA." → "USA" "."); "A." and "U.S." stay whole.
                    let mut back = head.chars().rev();
                    match (back.next(), back.next()) {
                        (Some(p), _) if p.is_lowercase() || p.is_numeric() || is_punct_char(p) => true,
                        (Some(p), Some(q)) if p.is_uppercase() && q.is_uppercase() => true,
                        (Some(p), _) if !p.is_alphabetic() => true,
                        _ => false,
                    }
                } else {
                    is_suffix_char(c)
                };
                if split {
                    tail.push(&s[s.len() - c.len_utf8()..]);
                    s = head;
                    continue;
                }
            }
        }
        break;
    }
    if !s.is_empty() {
        split_infixes(s, out);
    }
    out.extend(tail.into_iter().rev());
}

/// `u.`, `d.`: a single letter and a period stay one token (spaCy's exceptions).
fn is_letter_period(s: &str) -> bool {
    let mut cs = s.chars();
    matches!((cs.next(), cs.next(), cs.next()), (Some(c), Some('.'), None) if c.is_alphabetic())
}

/// Command-line options (`-h`, `--help`, `--output=x`) stay one token.
fn is_option(s: &str) -> bool {
    let rest = s.strip_prefix("--").or_else(|| s.strip_prefix('-')).unwrap_or("");
    !rest.is_empty()
        && rest.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_abbreviation(s: &str) -> bool {
    s.len() <= 6 && s.ends_with('.') && ABBREVIATIONS.iter().any(|a| a.eq_ignore_ascii_case(s))
}

/// Infix splits: hyphens/dashes/`~` between a letter or digit and a letter, `,` between
/// letters, `:<>=/` between a letter or digit and a letter, `...`/`…` anywhere, `+-*^` between
/// digits, and `.` between a lowercase letter and a capital.
fn split_infixes<'a>(s: &'a str, out: &mut Vec<&'a str>) {
    if s.chars().all(char::is_alphanumeric) {
        out.push(s);
        return;
    }
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let mut start = 0usize;
    let mut i = 0usize;
    while i < chars.len() {
        let (pos, c) = chars[i];
        let prev = if i > 0 { Some(chars[i - 1].1) } else { None };
        let next = chars.get(i + 1).map(|x| x.1);
        let mut len = 0usize; // bytes of the infix at i
        if c == '.' && s[pos..].starts_with("..") {
            len = s[pos..].bytes().take_while(|b| *b == b'.').count();
        } else if c == '…' {
            len = c.len_utf8();
        } else if let (Some(p), Some(n)) = (prev, next) {
            let split = match c {
                '-' | '–' | '—' | '~' => (p.is_alphabetic() || p.is_numeric()) && n.is_alphabetic(),
                ',' => p.is_alphabetic() && n.is_alphabetic(),
                ':' | '<' | '>' | '=' | '/' => (p.is_alphabetic() || p.is_numeric()) && n.is_alphabetic(),
                '+' | '*' | '^' => p.is_numeric() && (n.is_numeric() || n == '-'),
                '.' => p.is_lowercase() && n.is_uppercase(),
                _ => false,
            };
            if split {
                len = c.len_utf8();
            }
            if c == '-' && p.is_numeric() && (n.is_numeric() || n == '-') {
                len = 1;
            }
        }
        if len > 0 && pos > 0 && pos + len < s.len() {
            if pos > start {
                out.push(&s[start..pos]);
            }
            out.push(&s[pos..pos + len]);
            start = pos + len;
            while i < chars.len() && chars[i].0 < start {
                i += 1;
            }
            continue;
        }
        i += 1;
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
}

/// Whether `c` is a CJK ideograph, kana or Hangul syllable/jamo (text written without spaces
/// between words, or with units that are not English-like words).
/// Text made safe inside HTML/SVG/XML text and double-quoted attributes: the one escape that
/// lehr's reports, charts and status page share.
pub fn escape_xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F
        | 0x1100..=0x11FF | 0x3130..=0x318F | 0xAC00..=0xD7AF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatrove_sets_and_python_isalpha() {
        // datatrove's symbol set is not Unicode's P/S categories
        for c in ['.', '!', '，', '。', '…', '»', '１', '\u{7}', '\u{85}'] {
            assert!(is_datatrove_punct(c), "{c:?} is in datatrove's PUNCTUATION_SET");
        }
        for c in ['•', '©', '·', '『', '』', '‘', '／', '－', '●', '😀', '２', '\t', '\n', 'a'] {
            assert!(!is_datatrove_punct(c), "{c:?} is not in datatrove's PUNCTUATION_SET");
        }
        assert!(is_datatrove_terminal('。') && is_datatrove_terminal('?') && is_datatrove_terminal('।'));
        assert!(!is_datatrove_terminal('"') && !is_datatrove_terminal(';'));
        // isalpha: letters only
        for c in ['a', 'Z', 'é', 'ß', '中', '가', 'ʰ', 'ǅ', 'Ω'] {
            assert!(is_py_alpha(c), "{c:?}");
        }
        for c in ['Ⅱ', 'Ⅲ', '\u{93f}', '1', '１', '_', '·', '\u{301}'] {
            assert!(!is_py_alpha(c), "{c:?} is not alpha for Python");
            if c == 'Ⅱ' {
                assert!(c.is_alphabetic(), "where Rust's is_alphabetic disagrees");
            }
        }
    }

    /// Every code point against the Python that is here (when its Unicode version is the
    /// table's, so a newer Python's additions are not differences).
    #[test]
    fn py_alpha_matches_python_everywhere() {
        let script = "import sys,unicodedata\nprint(unicodedata.unidata_version)\nsys.stdout.write(''.join('1' if chr(c).isalpha() else '0' for c in range(0x110000)))";
        let Ok(out) = std::process::Command::new("python3").args(["-c", script]).output() else {
            eprintln!("python3 not found: the table is checked against the characters above only");
            return;
        };
        let text = String::from_utf8(out.stdout).unwrap();
        let (version, bits) = text.split_once('\n').unwrap();
        if version != py_alpha_unicode_version() {
            eprintln!("python3 has Unicode {version}, the table {}: skipped", py_alpha_unicode_version());
            return;
        }
        let differ: Vec<u32> = bits
            .bytes()
            .enumerate()
            .filter_map(|(cp, b)| {
                let c = char::from_u32(cp as u32)?;
                (is_py_alpha(c) != (b == b'1')).then_some(cp as u32)
            })
            .collect();
        assert!(differ.is_empty(), "{} code points differ, first {:x?}", differ.len(), &differ[..differ.len().min(8)]);
    }

    #[test]
    fn english_rules_split_like_spacy() {
        let w = WordSplitter::Rules.words("I don't think (really) it's well-known, e.g. in the U.S. today... Yes!");
        assert_eq!(
            w,
            vec![
                "I", "do", "n't", "think", "(", "really", ")", "it", "'s", "well", "-", "known", ",", "e.g.", "in",
                "the", "U.S.", "today", "...", "Yes", "!"
            ]
        );
        assert_eq!(
            WordSplitter::Rules.words("Costs $3.50 or 5-6 EUR. See https://x.org/a."),
            vec!["Costs", "$", "3.50", "or", "5", "-", "6", "EUR", ".", "See", "https://x.org/a."]
        );
    }

    #[test]
    fn spacy_exceptions_and_runs() {
        let w = WordSplitter::Rules.words("I cannot use --help or -h ... ----- see wikipedia.org/wiki/OpenDocument.");
        assert_eq!(
            w,
            vec![
                "I",
                "can",
                "not",
                "use",
                "--help",
                "or",
                "-h",
                "...",
                "-----",
                "see",
                "wikipedia.org/wiki/OpenDocument."
            ]
        );
        assert_eq!(WordSplitter::Rules.words("Im gonna hit No."), vec!["I", "m", "gon", "na", "hit", "No", "."]);
        assert_eq!(
            WordSplitter::Rules.words("____ ==== |||| ~~~"),
            vec!["_", "_", "_", "_", "=", "=", "=", "=", "||||", "~~~"]
        );
    }

    #[test]
    fn chinese_uses_jieba_and_korean_eojeol() {
        let w = WordSplitter::for_lang(Some("zh")).words("我们今天去公园散步吧，好吗？");
        assert_eq!(w, vec!["我们", "今天", "去", "公园", "散步", "吧", "，", "好", "吗", "？"]);
        let w = WordSplitter::for_lang(Some("ko")).words("안녕하세요, 반갑습니다! (정말)");
        assert_eq!(w, vec!["안녕하세요", ",", "반갑습니다", "!", "(", "정말", ")"]);
    }

    #[test]
    fn character_classes() {
        assert!(is_symbol_word("--") && is_symbol_word("。") && is_symbol_word("…") && is_symbol_word("©"));
        assert!(!is_symbol_word("a-") && !is_symbol_word("") && !is_symbol_word("中"));
        assert!(is_terminal_punct('.') && is_terminal_punct('。') && is_terminal_punct('？') && is_terminal_punct('।'));
        assert!(!is_terminal_punct(',') && !is_terminal_punct(':') && !is_terminal_punct('a'));
    }

    #[test]
    fn sentences_follow_the_sentencizer() {
        let s = |t: &str| sentence_count(&WordSplitter::Rules.words(t));
        assert_eq!(s("One. Two! Three? Four"), 4);
        assert_eq!(s("Mr. Smith went to the U.S. yesterday."), 1);
        assert_eq!(s("Wait... what?!"), 1);
        assert_eq!(s("May God bles u. Good nite."), 1);
        assert_eq!(s(""), 0);
        assert_eq!(sentence_count(&WordSplitter::Jieba.words("今天天气很好。我们去公园吧！")), 2);
    }

    #[test]
    fn long_runs_take_linear_time() {
        let t = std::time::Instant::now();
        for run in ["=".repeat(1 << 20), format!("x{}", "!".repeat(1 << 20)), format!("{}x", "-".repeat(1 << 20))] {
            assert!(!WordSplitter::Rules.words(&run).is_empty());
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(20), "{:?}", t.elapsed());
    }

    #[test]
    fn never_panics_on_odd_text() {
        for t in ["", " ", "....", "-", "'", "\u{FFFD}\u{FFFD}", "a\u{0301}-b", "🙂-🙂", "1-", "-1", "n't", "'s"] {
            for sp in [WordSplitter::Rules, WordSplitter::Eojeol, WordSplitter::Jieba] {
                let ws = sp.words(t);
                assert!(ws.iter().all(|w| !w.is_empty() && !w.contains(char::is_whitespace)), "{t:?} {ws:?}");
            }
        }
    }
}
