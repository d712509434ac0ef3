//! Scrubbing e-mail addresses and phone numbers from text.
//!
//! A heuristic, as any regex scrubber is: it catches the common written forms
//! (`name@host.tld`; `+1 555 123 4567`, `(555) 123-4567`, `020 7946 0958`)
//! and leaves alone what most often looks like a phone number but is not
//! (dates such as `2023-01-15`, plain runs of digits in arithmetic, years).

use std::sync::LazyLock;

use regex::Regex;

pub const EMAIL_PLACEHOLDER: &str = "[email]";
pub const PHONE_PLACEHOLDER: &str = "[phone]";

static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b").expect("valid"));

/// Digit groups joined by separators, with an optional `+country` and
/// `(area)`; at least two separated groups, so a bare number never matches.
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,4}){1,4}\b").expect("valid")
});

static DATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4})$").expect("valid")
});

/// How many of each were replaced.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scrubbed {
    pub emails: u64,
    pub phones: u64,
}

impl std::ops::AddAssign for Scrubbed {
    fn add_assign(&mut self, o: Scrubbed) {
        self.emails += o.emails;
        self.phones += o.phones;
    }
}

/// Replaces e-mail addresses and phone numbers with placeholders.
pub fn scrub(text: &str) -> (String, Scrubbed) {
    let mut counts = Scrubbed::default();
    let after_email = EMAIL.replace_all(text, |_: &regex::Captures| {
        counts.emails += 1;
        EMAIL_PLACEHOLDER
    });
    let out = PHONE.replace_all(&after_email, |c: &regex::Captures| {
        let m = c.get(0).expect("whole match").as_str();
        if looks_like_phone(m) {
            counts.phones += 1;
            PHONE_PLACEHOLDER.to_string()
        } else {
            m.to_string()
        }
    });
    (out.into_owned(), counts)
}

fn looks_like_phone(m: &str) -> bool {
    let digits = m.chars().filter(char::is_ascii_digit).count();
    if !(7..=15).contains(&digits) || DATE.is_match(m.trim()) {
        return false;
    }
    // Two groups only (`2020-2021`, `12 345`) pass only with a `+` or `(area)`.
    let groups = m.split(|c: char| !c.is_ascii_digit()).filter(|g| !g.is_empty()).count();
    groups >= 3 || m.starts_with('+') || m.contains('(')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_emails_and_phones() {
        let cases = [
            ("mail me at jo.doe+x@mail.example.co.uk please", "mail me at [email] please", 1, 0),
            ("call 555-123-4567 or (555) 123-4567", "call [phone] or [phone]", 0, 2),
            ("ring +44 20 7946 0958 now", "ring [phone] now", 0, 1),
            ("UK 020 7946 0958", "UK [phone]", 0, 1),
        ];
        for (input, want, emails, phones) in cases {
            let (out, n) = scrub(input);
            assert_eq!(out, want, "{input}");
            assert_eq!((n.emails, n.phones), (emails, phones), "{input}");
        }
    }

    #[test]
    fn leaves_dates_numbers_and_years_alone() {
        for input in [
            "on 2023-01-15 we met",
            "between 2020-2021",
            "what is 12345678 * 3?",
            "the years 1999 and 2004",
            "version 1.2.3",
            "a 12.5 km walk",
        ] {
            assert_eq!(scrub(input).0, input);
        }
    }
}
