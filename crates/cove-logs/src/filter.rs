//! Filter patterns for unstructured log events (the subset Cove supports; see
//! the crate documentation for the grammar).

use regex::{Regex, RegexBuilder};

pub const UNSUPPORTED: &str = "Cove does not support JSON or space-delimited filter patterns yet";

/// Largest compiled regular expression a `%regex%` term may produce.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug)]
enum Term {
    Literal(String),
    Regex(Regex),
}

impl Term {
    fn matches(&self, message: &str) -> bool {
        match self {
            Term::Literal(s) => message.contains(s.as_str()),
            Term::Regex(r) => r.is_match(message),
        }
    }
}

/// A parsed filter pattern: every `all` term must occur, no `none` term may
/// occur, and if there are `any` terms at least one of them must occur.
#[derive(Debug, Default)]
pub struct FilterPattern {
    all: Vec<Term>,
    any: Vec<Term>,
    none: Vec<Term>,
}

#[derive(Clone, Copy)]
enum Modifier {
    All,
    Any,
    None,
}

impl FilterPattern {
    /// Parses a pattern; the error is the message of an `InvalidParameterException`.
    pub fn parse(pattern: &str) -> Result<FilterPattern, String> {
        let trimmed = pattern.trim();
        if trimmed.starts_with('{') || trimmed.starts_with('[') {
            return Err(UNSUPPORTED.into());
        }
        let mut out = FilterPattern::default();
        let chars: Vec<char> = trimmed.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            if chars[i].is_whitespace() {
                i += 1;
                continue;
            }
            let mut modifier = Modifier::All;
            if matches!(chars[i], '-' | '?') && chars.get(i + 1).is_some_and(|c| !c.is_whitespace())
            {
                modifier = if chars[i] == '-' {
                    Modifier::None
                } else {
                    Modifier::Any
                };
                i += 1;
            }
            let term = match chars[i] {
                '"' => {
                    let mut s = String::new();
                    i += 1;
                    loop {
                        match chars.get(i) {
                            None => {
                                return Err(format!(
                                "Invalid filter pattern: unterminated quoted phrase in '{pattern}'"
                            ))
                            }
                            Some('"') => {
                                i += 1;
                                break;
                            }
                            Some('\\') if matches!(chars.get(i + 1), Some('"' | '\\')) => {
                                s.push(chars[i + 1]);
                                i += 2;
                            }
                            Some(c) => {
                                s.push(*c);
                                i += 1;
                            }
                        }
                    }
                    Term::Literal(s)
                }
                '%' => {
                    let start = i + 1;
                    let Some(len) = chars[start..].iter().position(|&c| c == '%') else {
                        return Err(format!(
                            "Invalid filter pattern: unterminated %regex% in '{pattern}'"
                        ));
                    };
                    let source: String = chars[start..start + len].iter().collect();
                    i = start + len + 1;
                    if source.is_empty() {
                        return Err("Invalid filter pattern: empty %regex%".into());
                    }
                    let re = RegexBuilder::new(&source)
                        .size_limit(REGEX_SIZE_LIMIT)
                        .build()
                        .map_err(|e| {
                            format!(
                                "Invalid filter pattern: bad regular expression '{source}': {e}"
                            )
                        })?;
                    Term::Regex(re)
                }
                _ => {
                    let start = i;
                    while i < chars.len() && !chars[i].is_whitespace() {
                        i += 1;
                    }
                    Term::Literal(chars[start..i].iter().collect())
                }
            };
            match modifier {
                Modifier::All => out.all.push(term),
                Modifier::Any => out.any.push(term),
                Modifier::None => out.none.push(term),
            }
        }
        Ok(out)
    }

    /// True when the pattern matches every event (an empty pattern).
    pub fn is_match_all(&self) -> bool {
        self.all.is_empty() && self.any.is_empty() && self.none.is_empty()
    }

    pub fn matches(&self, message: &str) -> bool {
        self.all.iter().all(|t| t.matches(message))
            && !self.none.iter().any(|t| t.matches(message))
            && (self.any.is_empty() || self.any.iter().any(|t| t.matches(message)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, message: &str) -> bool {
        FilterPattern::parse(pattern).unwrap().matches(message)
    }

    #[test]
    fn empty_pattern_matches_everything() {
        assert!(FilterPattern::parse("").unwrap().is_match_all());
        assert!(FilterPattern::parse("   ").unwrap().is_match_all());
        assert!(m("", "anything"));
    }

    #[test]
    fn terms_must_all_appear_case_sensitively() {
        assert!(m("ERROR", "[ERROR] disk full"));
        assert!(!m("ERROR", "[error] disk full"));
        assert!(m("ERROR disk", "[ERROR] disk full"));
        assert!(!m("ERROR memory", "[ERROR] disk full"));
        // Substrings match, as the terms are searched for in the message.
        assert!(m("ERR", "[ERROR] disk full"));
    }

    #[test]
    fn quoted_phrases_match_exactly() {
        assert!(m("\"disk full\"", "[ERROR] disk full"));
        assert!(!m("\"full disk\"", "[ERROR] disk full"));
        assert!(m(r#""say \"hi\"""#, r#"they say "hi" here"#));
        assert!(m(r#""a\\b""#, r"path a\b"));
        assert!(m("\"user=1\" ERROR", "ERROR for user=1"));
    }

    #[test]
    fn exclusion_and_any_of() {
        assert!(m("ERROR -disk", "[ERROR] memory"));
        assert!(!m("ERROR -disk", "[ERROR] disk full"));
        assert!(!m("ERROR -\"disk full\"", "[ERROR] disk full"));
        assert!(m("?ERROR ?WARN", "WARN: low"));
        assert!(m("?ERROR ?WARN", "ERROR: out"));
        assert!(!m("?ERROR ?WARN", "INFO: ok"));
        assert!(m("?ERROR ?\"warn ing\"", "a warn ing"));
        // Plain terms and ?-terms combine: all plain terms and one ?-term.
        assert!(m("disk ?ERROR ?WARN", "WARN disk"));
        assert!(!m("disk ?ERROR ?WARN", "INFO disk"));
        // A lone - or ? is a literal term.
        assert!(m("a - b", "a - b"));
        assert!(!m("a - b", "a b"));
    }

    #[test]
    fn regex_terms() {
        assert!(m("%ERROR [0-9]{3}%", "ERROR 404 not found"));
        assert!(!m("%ERROR [0-9]{3}%", "ERROR x"));
        assert!(m("-%^DEBUG%", "INFO x"));
        assert!(!m("-%^DEBUG%", "DEBUG x"));
        assert!(FilterPattern::parse("%(%").is_err());
        assert!(FilterPattern::parse("%abc").is_err());
        assert!(FilterPattern::parse("%%").is_err());
    }

    #[test]
    fn structured_patterns_are_refused_honestly() {
        for p in ["{ $.level = \"ERROR\" }", "[ip, user, ...]", "  {$.x=1}"] {
            assert_eq!(FilterPattern::parse(p).unwrap_err(), UNSUPPORTED);
        }
        assert!(FilterPattern::parse("\"unterminated").is_err());
    }
}
