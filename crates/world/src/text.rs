//! Text helpers shared by the generators and the judge.
//!
//! The judge reads text the way a tiny model writes it: lowercase words split
//! on anything that is not a letter or a digit, apostrophes dropped (so
//! "can't" reads as "cant"), small digit numbers read as words ("8" as
//! "eight"). Nothing here panics on arbitrary input.

use std::collections::BTreeMap;

/// Number words, 0..=20, as the world writes them.
pub const NUMBER_WORDS: [&str; 21] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
];

/// The word for `n` (0..=20), or its digits beyond.
pub fn number_word(n: u32) -> String {
    NUMBER_WORDS.get(n as usize).map(|s| s.to_string()).unwrap_or_else(|| n.to_string())
}

/// Lowercase words of `s`: letters and digits, apostrophes dropped, digits
/// 0..=20 read as number words.
pub fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        if cur.is_empty() {
            return;
        }
        let w = std::mem::take(cur);
        match w.parse::<u32>() {
            Ok(n) if n <= 20 && w.len() <= 2 => out.push(NUMBER_WORDS[n as usize].to_string()),
            _ => out.push(w),
        }
    };
    for c in s.chars() {
        if c.is_alphanumeric() {
            cur.extend(c.to_lowercase());
        } else if c == '\'' || c == '\u{2019}' {
            // Dropped inside a word: "don't" -> "dont".
        } else {
            flush(&mut cur, &mut out);
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// Sentences of `s` as word lists, split at `.`, `!`, `?`, `;` and newlines.
pub fn sentences(s: &str) -> Vec<Vec<String>> {
    s.split(['.', '!', '?', ';', '\n']).map(words).filter(|w| !w.is_empty()).collect()
}

/// Whether `phrase` occurs as a contiguous run in `ws`.
pub fn has_phrase(ws: &[String], phrase: &[String]) -> bool {
    find_phrase(ws, phrase).is_some()
}

/// The first start index of `phrase` in `ws`.
pub fn find_phrase(ws: &[String], phrase: &[String]) -> Option<usize> {
    if phrase.is_empty() || phrase.len() > ws.len() {
        return None;
    }
    (0..=ws.len() - phrase.len()).find(|&i| ws[i..i + phrase.len()] == *phrase)
}

/// Whether any of the phrases (given as text) occurs in `ws`.
pub fn has_any(ws: &[String], phrases: &[String]) -> bool {
    phrases.iter().any(|p| has_phrase(ws, &words(p)))
}

/// Bag-of-words F1 between two word lists (0 when either is empty).
pub fn f1(a: &[String], b: &[String]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for w in a {
        *counts.entry(w.as_str()).or_default() += 1;
    }
    let mut common = 0i64;
    for w in b {
        if let Some(c) = counts.get_mut(w.as_str())
            && *c > 0
        {
            *c -= 1;
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let p = common as f64 / b.len() as f64;
    let r = common as f64 / a.len() as f64;
    2.0 * p * r / (p + r)
}

/// How loopy a text is, in [0, 1]: the larger of the fraction of word
/// trigrams (bigrams for short texts) that repeat an earlier one and the
/// fraction of words that repeat the word before ("mouse mouse mouse").
pub fn repetition(ws: &[String]) -> f64 {
    let stutter =
        if ws.len() < 2 { 0.0 } else { ws.windows(2).filter(|w| w[0] == w[1]).count() as f64 / (ws.len() - 1) as f64 };
    let n = if ws.len() >= 8 { 3 } else { 2 };
    if ws.len() < n + 1 {
        return stutter;
    }
    let grams: Vec<&[String]> = ws.windows(n).collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut repeated = 0usize;
    for g in &grams {
        if !seen.insert(*g) {
            repeated += 1;
        }
    }
    (repeated as f64 / grams.len() as f64).max(stutter)
}

/// "a" or "an" for `word`.
pub fn article(word: &str) -> &'static str {
    match word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

/// `word` with its indefinite article.
pub fn with_article(word: &str) -> String {
    format!("{} {}", article(word), word)
}

/// "a", "a and b", "a, b and c".
pub fn join_items(items: &[String]) -> String {
    match items.len() {
        0 => String::new(),
        1 => items[0].clone(),
        n => format!("{} and {}", items[..n - 1].join(", "), items[n - 1]),
    }
}

/// Replaces the word "a" by "an" before a word that starts with a vowel.
pub fn fix_articles(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len() + 4);
    let mut i = 0;
    while i < s.len() {
        let starts_word = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        if starts_word
            && bytes[i] == b'a'
            && bytes.get(i + 1) == Some(&b' ')
            && matches!(bytes.get(i + 2), Some(b'a' | b'e' | b'i' | b'o' | b'u'))
        {
            out.push_str("an ");
            i += 2;
            continue;
        }
        let c = s[i..].chars().next().expect("in bounds");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Named values for filling `{slot}` templates.
#[derive(Debug, Clone, Default)]
pub struct Slots {
    values: Vec<(String, String)>,
}

impl Slots {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or replaces) a slot.
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        let value = value.into();
        match self.values.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.values.push((key.to_string(), value)),
        }
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The slot's value; a missing slot is a bug in a generator.
    pub fn val(&self, key: &str) -> String {
        self.get(key).unwrap_or_else(|| panic!("slot `{key}` is not set")).to_string()
    }

    /// Sets every slot of `other` (replacing equal keys).
    pub fn extend(&mut self, other: &Slots) -> &mut Self {
        for (k, v) in &other.values {
            self.set(k, v.clone());
        }
        self
    }

    /// A copy with the slots of `other` added.
    pub fn with(&self, other: &Slots) -> Slots {
        let mut s = self.clone();
        s.extend(other);
        s
    }

    /// A copy with only the named slots.
    pub fn only(&self, keys: &[&str]) -> Slots {
        Slots { values: self.values.iter().filter(|(k, _)| keys.contains(&k.as_str())).cloned().collect() }
    }

    /// The slots as (name, value) pairs, in insertion order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.values
    }

    /// Fills every `{slot}` of `template` and fixes "a owl" into "an owl"; an
    /// unknown slot is left as `{slot}` (a bug in the data files, caught by the
    /// tests that render every template).
    pub fn render(&self, template: &str) -> String {
        fix_articles(&self.render_raw(template))
    }

    fn render_raw(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len() + 16);
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            match after.find('}') {
                Some(close) => {
                    let key = &after[..close];
                    match self.get(key) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push('{');
                            out.push_str(key);
                            out.push('}');
                        }
                    }
                    rest = &after[close + 1..];
                }
                None => {
                    out.push_str(&rest[open..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        words(s)
    }

    #[test]
    fn words_normalise() {
        assert_eq!(w("I can't help, Tom! 8 legs"), ["i", "cant", "help", "tom", "eight", "legs"]);
        assert_eq!(w("  "), Vec::<String>::new());
        assert_eq!(w("123 x"), ["123", "x"]);
        assert_eq!(w("\u{0}\u{fffd}é!"), ["é"]);
    }

    #[test]
    fn phrases_and_overlap() {
        assert!(has_phrase(&w("i do not know it"), &w("not know")));
        assert!(!has_phrase(&w("know not"), &w("not know")));
        assert!((f1(&w("a b c"), &w("a b c")) - 1.0).abs() < 1e-12);
        assert_eq!(f1(&w("a"), &w("b")), 0.0);
        assert!(repetition(&w("the dog the dog the dog the dog")) > 0.5);
        assert_eq!(repetition(&w("the dog eats meat")), 0.0);
    }

    #[test]
    fn render_fills_slots() {
        let mut s = Slots::new();
        s.set("animal", "owl").set("n", "two");
        assert_eq!(s.render("{n} {animal}s {x} {"), "two owls {x} {");
        assert_eq!(join_items(&["a".into(), "b".into(), "c".into()]), "a, b and c");
        assert_eq!(with_article("owl"), "an owl");
        assert_eq!(s.render("a {animal} and a cat. a"), "an owl and a cat. a");
        assert_eq!(fix_articles("a ant, a é"), "an ant, a é");
    }
}
