use super::*;

fn run(stage: &dyn Stage, lang: &str, text: &str) -> (Decision, Vec<Option<f64>>, String) {
    let mut doc = Document::new("d", text);
    doc.lang = Some(lang.into());
    let mut ctx = Ctx::for_stage(stage);
    let d = stage.process(&mut doc, &mut ctx);
    (d, ctx.scores, doc.text)
}

const GOOD: &str = "The quick brown fox jumps over the lazy dog and runs to the forest with its friends. \
    It is a sunny day, and the animals have a lot of fun together in the green meadow near the river. \
    They play games, they sing songs, and they eat berries that grow along the path to the old mill. \
    Later that evening the fox returns home, tired but happy, and tells the story to the rest of the family.";

#[test]
fn gopher_quality_keeps_prose_and_names_the_rule() {
    let g = GopherQualityConfig::default().build();
    assert_eq!(run(&g, "en", GOOD).0, Decision::Keep);
    assert_eq!(run(&g, "en", "too short to count").0, Decision::Drop("gopher_short_doc"));
    let hashes = format!("{GOOD} {}", "#tag ".repeat(30));
    assert_eq!(run(&g, "en", &hashes).0, Decision::Drop("gopher_too_many_hashes"));
    let numbers = format!("{GOOD}\n{}", "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 ".repeat(20));
    assert_eq!(run(&g, "en", &numbers).0, Decision::Drop("gopher_below_avg_threshold"));
    // all punctuation / all digits / empty: no panic, dropped
    for t in ["", "!!!! ???? ....", "1234567890 0987654321"] {
        assert!(matches!(run(&g, "en", t).0, Decision::Drop(_)));
    }
}

#[test]
fn gopher_quality_cjk_uses_real_words() {
    let cfg = GopherQualityConfig {
        min_doc_words: Some(10),
        min_avg_word_length: Some(1.0),
        max_avg_word_length: Some(5.0),
        stop_words: ["的", "是", "在", "了", "和"].map(String::from).into(),
        ..Default::default()
    };
    let g = cfg.build();
    let zh = "我们今天在公园里散步，天气很好。孩子们在草地上玩耍，老人们在树下聊天，这是一个美好的周末。";
    let (d, scores, _) = run(&g, "zh", zh);
    assert_eq!(d, Decision::Keep, "{scores:?}");
    let mean = scores[1].unwrap();
    assert!((1.0..3.0).contains(&mean), "jieba words are 1-3 characters: {mean}");
    let ko = GopherQualityConfig {
        min_doc_words: Some(5),
        min_avg_word_length: Some(1.0),
        stop_words: ["는", "을", "에서", "의"].map(String::from).into(),
        stop_word_match: StopWordMatch::Suffix,
        ..Default::default()
    }
    .build();
    let (d, scores, _) = run(&ko, "ko", "나는 학교에서 친구의 책을 읽었다. 오늘은 날씨가 좋다.");
    assert_eq!(d, Decision::Keep, "{scores:?}");
    assert_eq!(scores[7], Some(4.0));
}

#[test]
fn repetition_catches_repeated_lines_and_ngrams() {
    let g = GopherRepetitionConfig::default().build();
    assert_eq!(run(&g, "en", GOOD).0, Decision::Keep);
    let lines = format!("{GOOD}\nBuy now!\nBuy now!\nBuy now!\nBuy now!");
    assert_eq!(run(&g, "en", &lines).0, Decision::Drop("dup_line_frac"));
    let spam = "buy cheap pills online ".repeat(30);
    assert!(matches!(run(&g, "en", &spam).0, Decision::Drop(_)));
    assert_eq!(run(&g, "en", "").0, Decision::Drop("empty"));
    // Chinese: repeated phrases are found through jieba words
    let zh = "哈哈哈哈".repeat(40);
    assert!(matches!(run(&g, "zh", &zh).0, Decision::Drop(_)));
}

#[test]
fn c4_filters_lines_and_pages() {
    let c = C4Config::default().build();
    let text = "Home\nThis site uses cookies to improve your experience of the site.\n\
        Enable JavaScript to view this page properly please.\n\
        One sentence here is fine. Two sentences here are fine.\n\
        Three is good too. Four is also good! Is five good?\nShort one.";
    let (d, scores, out) = run(&c, "en", text);
    assert_eq!(d, Decision::Keep, "{scores:?}");
    assert_eq!(
        out,
        "One sentence here is fine. Two sentences here are fine.\nThree is good too. Four is also good! Is five good?"
    );
    assert_eq!(scores[2], Some(5.0));
    assert_eq!(run(&c, "en", "Lorem ipsum dolor sit amet.").0, Decision::Drop("lorem_ipsum"));
    assert_eq!(run(&c, "en", "function f() { return 1; } is code.").0, Decision::Drop("curly_bracket"));
    assert_eq!(run(&c, "en", "").0, Decision::Drop("too_few_sentences"));
}

#[test]
fn fineweb_rules() {
    let f = FineWebConfig::default().build();
    assert_eq!(run(&f, "en", GOOD).0, Decision::Keep);
    assert_eq!(run(&f, "en", "a\nb\nc\nd").0, Decision::Drop("line_punct_ratio"));
    assert_eq!(run(&f, "en", "Short.\nLines.\nOnly.").0, Decision::Drop("short_line_ratio"));
    let dup = format!("{GOOD}\n{GOOD}");
    assert_eq!(run(&f, "en", &dup).0, Decision::Drop("char_dup_ratio"));
    assert_eq!(run(&f, "en", "\n\n  \n").0, Decision::Drop("empty"));
    assert_eq!(run(&f, "zh", "今天天气很好，我们一起去公园散步，看见了很多美丽的花朵和高大的树木。").0, Decision::Keep);
}

#[test]
fn splitlines_matches_python() {
    assert_eq!(splitlines("a\nb\r\nc\rd\u{2028}e\n"), vec!["a", "b", "c", "d", "e"]);
    assert_eq!(splitlines(""), Vec::<&str>::new());
    assert_eq!(splitlines("\n\n"), vec!["", ""]);
}
