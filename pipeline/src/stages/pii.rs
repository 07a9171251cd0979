//! `pii`: replaces e-mail addresses, phone numbers and IP addresses with placeholders and counts
//! each replacement (`pii.email`, `pii.phone`, `pii.ip` in the manifest's stage counters).
//!
//! Phone patterns cover international numbers written with a `+` country code, Chinese mobiles
//! (1[3-9]x xxxx xxxx) and landlines (0xx-xxxxxxxx), Korean mobiles (01x-xxxx-xxxx) and
//! landlines (02-xxx-xxxx, 0xx-xxx-xxxx), and North-American numbers ((xxx) xxx-xxxx). Digit
//! boundaries are ASCII-only, so a number glued to Chinese or Korean text ("电话13812345678") is
//! still found, while digits inside longer digit runs (ids, hashes) are not.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::{Ctx, Decision, Stage};
use crate::document::Document;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PiiConfig {
    /// Placeholder for e-mail addresses; an empty string keeps them.
    #[serde(default = "email_placeholder")]
    pub email: String,
    #[serde(default = "phone_placeholder")]
    pub phone: String,
    #[serde(default = "ip_placeholder")]
    pub ip: String,
}

fn email_placeholder() -> String {
    "<EMAIL>".into()
}
fn phone_placeholder() -> String {
    "<PHONE>".into()
}
fn ip_placeholder() -> String {
    "<IP>".into()
}

impl Default for PiiConfig {
    fn default() -> Self {
        PiiConfig { email: email_placeholder(), phone: phone_placeholder(), ip: ip_placeholder() }
    }
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u:\b)[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?-u:\b)")
        .expect("valid email regex")
});

static IP: LazyLock<Regex> = LazyLock::new(|| {
    let octet = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
    let v4 = format!(r"(?:{octet}\.){{3}}{octet}");
    let h = r"[0-9A-Fa-f]{1,4}";
    // full IPv6 and the common compressed forms (a::b, a:b::c, ::1)
    let v6 = format!(r"(?:(?:{h}:){{7}}{h}|(?:{h}:){{1,6}}:(?:{h}(?::{h}){{0,5}})?|::(?:{h}(?::{h}){{0,6}}))");
    Regex::new(&format!(r"(?:^|[^0-9A-Za-z.:])((?:{v4})|(?:{v6}))(?:$|[^0-9A-Za-z.:])")).expect("valid ip regex")
});

static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    let patterns = [
        // international: +CC then groups of digits with optional separators / parenthesized area
        r"\+[1-9][0-9]{0,2}[ .-]?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{1,4}(?:[ .-]?[0-9]{2,4}){1,4}",
        // China mobile: 1[3-9]x xxxx xxxx
        r"1[3-9][0-9][ -]?[0-9]{4}[ -]?[0-9]{4}",
        // China landline: 0AA(A)-NNNNNNN(N) (a separator or parentheses required)
        r"\(?0[1-9][0-9]{1,2}\)?[ -][0-9]{7,8}",
        // Korea mobile: 010-NNNN-NNNN
        r"01[016789][ .-]?[0-9]{3,4}[ .-]?[0-9]{4}",
        // Korea landline: 02-NNN(N)-NNNN, 0AA-NNN(N)-NNNN
        r"0(?:2|[3-6][1-5])[ .-][0-9]{3,4}[ .-][0-9]{4}",
        // North America: (NNN) NNN-NNNN, NNN-NNN-NNNN
        r"(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[.-])[0-9]{3}[.-][0-9]{4}",
    ];
    // Context: not inside a longer number, a decimal ("3.1415926535"), an identifier or a
    // literal ("&o17777777777"): no ASCII letter, digit, `+`, `.` or `,` glued before; no digit
    // or decimal separator followed by a digit after. CJK text around the number is fine.
    Regex::new(&format!(r"(?:^|[^0-9A-Za-z+.,&])((?:{}))(?:$|[^0-9.,]|[.,](?:$|[^0-9]))", patterns.join(")|(?:")))
        .expect("valid phone regex")
});

/// Seven-digit local numbers (`555-0123`) only after a word that says it is a phone number
/// ("call", "phone", "tel", "fax", "mobile", 电话, 전화): without that context such a pattern is
/// as often a range or a code.
static LOCAL_PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:\b(?:call|phone|tel|telephone|fax|mobile|cell|ph)\.?|电话|手机|전화|휴대폰)\s*(?:[:：]\s*)?(?:(?:us|me)\s+)?(?:at\s+|on\s+)?([2-9][0-9]{2}[-.][0-9]{4})(?:$|[^0-9])")
        .expect("valid local phone regex")
});

/// Replaces the first capture group of every match of `re` that `valid` accepts with
/// `placeholder`; returns the text and the count.
fn replace_group(
    re: &Regex,
    text: &str,
    placeholder: &str,
    valid: impl Fn(&str, usize, usize) -> bool,
) -> Option<(String, u64)> {
    let mut out = String::new();
    let mut last = 0;
    let mut n = 0;
    let mut pos = 0;
    while let Some(c) = re.captures_at(text, pos) {
        let g = c.get(1).expect("group 1");
        if !valid(text, g.start(), g.end()) {
            // skip this candidate: resume after its first character
            pos = g.start() + g.as_str().chars().next().map_or(1, char::len_utf8);
            if pos >= text.len() {
                break;
            }
            continue;
        }
        out.push_str(&text[last..g.start()]);
        out.push_str(placeholder);
        last = g.end();
        // the trailing context character may start the next match
        pos = g.end();
        n += 1;
        if pos >= text.len() {
            break;
        }
    }
    if n == 0 {
        return None;
    }
    out.push_str(&text[last..]);
    Some((out, n))
}

/// E.164 numbers have at most 15 digits; local numbers at least 7.
fn plausible_phone(text: &str, start: usize, end: usize) -> bool {
    let digits = text[start..end].bytes().filter(u8::is_ascii_digit).count();
    (7..=15).contains(&digits)
}

/// Dotted quads that are version or section numbers, not addresses: "LibreOffice 7.4.7.1",
/// "build 7.4.7.1-1", "version 10.0.0.1", "section 3.2.1.4". Quads of single digits
/// ("1.2.3.4", "8.8.8.8") are numbering or well-known public services, never a person's address.
fn plausible_ip(text: &str, start: usize, end: usize) -> bool {
    let m = &text[start..end];
    if m.contains(':') {
        return true;
    }
    if m.split('.').all(|o| o.len() == 1) {
        return false;
    }
    if text[end..].starts_with('-') && text[end + 1..].starts_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    let before: String = text[..start].chars().rev().take(24).collect::<Vec<_>>().into_iter().rev().collect();
    let before = before.to_lowercase();
    let last_word = before.split_whitespace().next_back().unwrap_or("");
    let last_word = last_word.trim_end_matches([':', '：']);
    !(VERSION_WORDS.contains(&last_word) || ["版本", "버전"].iter().any(|w| last_word.ends_with(w)))
}

const VERSION_WORDS: [&str; 18] = [
    "version",
    "ver.",
    "ver",
    "build",
    "release",
    "update",
    "libreoffice",
    "openoffice",
    "firefox",
    "chrome",
    "section",
    "chapter",
    "§",
    "clause",
    "article",
    "figure",
    "table",
    "step",
];

impl PiiConfig {
    /// Returns the masked text and counts (email, phone, ip), or `None` when nothing matched.
    pub fn mask(&self, text: &str) -> Option<(String, [u64; 3])> {
        let mut counts = [0u64; 3];
        let mut current: Option<String> = None;
        if !self.email.is_empty() && text.contains('@') {
            let src = current.as_deref().unwrap_or(text);
            let n = EMAIL.find_iter(src).count() as u64;
            if n > 0 {
                current = Some(EMAIL.replace_all(src, self.email.as_str()).into_owned());
                counts[0] = n;
            }
        }
        if !self.ip.is_empty() {
            let src = current.as_deref().unwrap_or(text);
            if let Some((s, n)) = replace_group(&IP, src, &self.ip, plausible_ip) {
                current = Some(s);
                counts[2] = n;
            }
        }
        if !self.phone.is_empty() {
            let src = current.as_deref().unwrap_or(text);
            if let Some((s, n)) = replace_group(&PHONE, src, &self.phone, plausible_phone) {
                current = Some(s);
                counts[1] = n;
            }
            let src = current.as_deref().unwrap_or(text);
            if let Some((s, n)) = replace_group(&LOCAL_PHONE, src, &self.phone, |_, _, _| true) {
                current = Some(s);
                counts[1] += n;
            }
        }
        current.map(|s| (s, counts))
    }
}

impl Stage for PiiConfig {
    fn name(&self) -> &'static str {
        "pii"
    }

    fn process(&self, doc: &mut Document, ctx: &mut Ctx) -> Decision {
        if let Some((s, [email, phone, ip])) = self.mask(&doc.text) {
            doc.text = s;
            ctx.counters.add("pii.email", email);
            ctx.counters.add("pii.phone", phone);
            ctx.counters.add("pii.ip", ip);
            ctx.counters.add("docs-modified", 1);
        }
        Decision::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(t: &str) -> String {
        PiiConfig::default().mask(t).map(|(s, _)| s).unwrap_or_else(|| t.to_string())
    }

    #[test]
    fn emails() {
        assert_eq!(mask("write to jane.doe+lists@example.co.uk today"), "write to <EMAIL> today");
        assert_eq!(mask("联系邮箱：zhang_san@mail.qq.com。"), "联系邮箱：<EMAIL>。");
        assert_eq!(
            mask("no @ here, and user@localhost is not routable"),
            "no @ here, and user@localhost is not routable"
        );
    }

    #[test]
    fn phones_in_three_languages() {
        assert_eq!(mask("电话13812345678或010-12345678"), "电话<PHONE>或<PHONE>");
        assert_eq!(mask("문의: 010-1234-5678, 02-123-4567"), "문의: <PHONE>, <PHONE>");
        assert_eq!(mask("call +1 (415) 555-0199 or (212) 555-0100."), "call <PHONE> or <PHONE>.");
        assert_eq!(mask("Call 555-0159 between 9am and 5pm"), "Call <PHONE> between 9am and 5pm");
        assert_eq!(mask("or call 555-0191."), "or call <PHONE>.");
        assert_eq!(mask("Tel: 555.0101, 电话：555-0102"), "Tel: <PHONE>, 电话：<PHONE>");
        assert_eq!(mask("+82 10 1234 5678"), "<PHONE>");
    }

    #[test]
    fn ips() {
        assert_eq!(mask("server 192.168.0.1 and ::1 and 2001:db8::ff00:42:8329"), "server <IP> and <IP> and <IP>");
        assert_eq!(mask("version 1.2.3.4.5 and 999.1.1.1"), "version 1.2.3.4.5 and 999.1.1.1");
    }

    #[test]
    fn leaves_ordinary_numbers_alone() {
        for t in [
            "ISBN 9787115428028 printed in 2019",
            "第12345678901234号文件",
            "a total of 13812345678901 bytes",
            "the years 1998-2005 and 2010-2020",
            "price: 12,345.67 USD",
            "PRINT PI ; print 3.14159265358979",
            "values range from -922337203685477.5808 to +922337203685477.5807.",
            "MAX_Long = &h7fffffff ' 2147483647 = &o17777777777",
            "=LOGNORM.DIST(0.1;0;1;1) returns 0.0106510993",
            "pages 555-0123 of the report",
            "LibreOffice 7.4.7.1 was released together with build 7.4.7.1-1.",
            "upgrade to version 10.2.0.1 today",
            "See section 3.12.1.4 for details; the ratio was 1.2.3.4.",
            "the phone cost 299.9999 dollars",
        ] {
            assert_eq!(mask(t), t);
        }
    }

    #[test]
    fn counts_each_kind() {
        let (_, c) = PiiConfig::default().mask("a@b.io c@d.io 10.0.0.1 13900001111").unwrap();
        assert_eq!(c, [2, 1, 1]);
        let off = PiiConfig { email: String::new(), ..Default::default() };
        assert_eq!(off.mask("a@b.io").map(|(s, _)| s), None);
    }
}
