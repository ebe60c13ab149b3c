//! Calico's label selector language: parsing (with errors that point at the
//! column), evaluation against a label map, and printing back to text.
//!
//! ```text
//! all()                      every resource
//! has(k)      !has(k)        the label k is (not) present
//! k == 'v'    k != 'v'       equal / not equal (absent counts as not equal)
//! k in {'a','b'}             the value is one of the set
//! k not in {'a','b'}         the value is not in the set (or k is absent)
//! k contains 's'  k starts with 's'  k ends with 's'
//! a && b   a || b   !a   ( ... )
//! ```
//! Strings may be in single or double quotes. `!` binds tighter than `&&`,
//! which binds tighter than `||`. An empty selector matches everything.
//!
//! The printer writes a canonical form that parses back to the same tree,
//! which a property test checks.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parsed selector expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `all()`: matches everything.
    All,
    /// `has(k)`.
    Has(String),
    /// `k == 'v'`.
    Eq(String, String),
    /// `k != 'v'` (true when k is absent).
    Ne(String, String),
    /// `k in {...}`.
    In(String, Vec<String>),
    /// `k not in {...}` (true when k is absent).
    NotIn(String, Vec<String>),
    /// `k contains 's'`.
    Contains(String, String),
    /// `k starts with 's'`.
    StartsWith(String, String),
    /// `k ends with 's'`.
    EndsWith(String, String),
    /// `!e`.
    Not(Box<Expr>),
    /// `a && b && ...` (two or more terms).
    And(Vec<Expr>),
    /// `a || b || ...` (two or more terms).
    Or(Vec<Expr>),
}

impl Expr {
    /// Evaluates the expression against a label map.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let get = |k: &String| labels.get(k).map(String::as_str);
        match self {
            Expr::All => true,
            Expr::Has(k) => labels.contains_key(k),
            Expr::Eq(k, v) => get(k) == Some(v.as_str()),
            Expr::Ne(k, v) => get(k) != Some(v.as_str()),
            Expr::In(k, set) => get(k).is_some_and(|x| set.iter().any(|s| s == x)),
            Expr::NotIn(k, set) => !get(k).is_some_and(|x| set.iter().any(|s| s == x)),
            Expr::Contains(k, s) => get(k).is_some_and(|x| x.contains(s.as_str())),
            Expr::StartsWith(k, s) => get(k).is_some_and(|x| x.starts_with(s.as_str())),
            Expr::EndsWith(k, s) => get(k).is_some_and(|x| x.ends_with(s.as_str())),
            Expr::Not(e) => !e.matches(labels),
            Expr::And(es) => es.iter().all(|e| e.matches(labels)),
            Expr::Or(es) => es.iter().any(|e| e.matches(labels)),
        }
    }

    /// Every label key the expression mentions (for "did you mean" hints).
    pub fn keys(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_keys(&mut out);
        out
    }

    fn collect_keys<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Expr::All => {}
            Expr::Has(k)
            | Expr::Eq(k, _)
            | Expr::Ne(k, _)
            | Expr::In(k, _)
            | Expr::NotIn(k, _)
            | Expr::Contains(k, _)
            | Expr::StartsWith(k, _)
            | Expr::EndsWith(k, _) => out.push(k),
            Expr::Not(e) => e.collect_keys(out),
            Expr::And(es) | Expr::Or(es) => es.iter().for_each(|e| e.collect_keys(out)),
        }
    }

    fn precedence(&self) -> u8 {
        match self {
            Expr::Or(_) => 1,
            Expr::And(_) => 2,
            _ => 3,
        }
    }
}

fn write_str_lit(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if s.contains('"') {
        write!(f, "'{s}'")
    } else {
        write!(f, "\"{s}\"")
    }
}

fn write_set(f: &mut fmt::Formatter<'_>, set: &[String]) -> fmt::Result {
    f.write_str("{")?;
    for (i, s) in set.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_str_lit(f, s)?;
    }
    f.write_str("}")
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::All => f.write_str("all()"),
            Expr::Has(k) => write!(f, "has({k})"),
            Expr::Eq(k, v) => {
                write!(f, "{k} == ")?;
                write_str_lit(f, v)
            }
            Expr::Ne(k, v) => {
                write!(f, "{k} != ")?;
                write_str_lit(f, v)
            }
            Expr::In(k, set) => {
                write!(f, "{k} in ")?;
                write_set(f, set)
            }
            Expr::NotIn(k, set) => {
                write!(f, "{k} not in ")?;
                write_set(f, set)
            }
            Expr::Contains(k, v) => {
                write!(f, "{k} contains ")?;
                write_str_lit(f, v)
            }
            Expr::StartsWith(k, v) => {
                write!(f, "{k} starts with ")?;
                write_str_lit(f, v)
            }
            Expr::EndsWith(k, v) => {
                write!(f, "{k} ends with ")?;
                write_str_lit(f, v)
            }
            Expr::Not(e) => {
                if e.precedence() < 3 {
                    write!(f, "!({e})")
                } else {
                    write!(f, "!{e}")
                }
            }
            Expr::And(es) | Expr::Or(es) => {
                let (sep, me) = if matches!(self, Expr::And(_)) {
                    (" && ", 2)
                } else {
                    (" || ", 1)
                };
                for (i, e) in es.iter().enumerate() {
                    if i > 0 {
                        f.write_str(sep)?;
                    }
                    // Same-operator children keep their own parentheses so the
                    // tree shape survives a print/parse round trip.
                    if e.precedence() <= me {
                        write!(f, "({e})")?;
                    } else {
                        write!(f, "{e}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// A selector that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector \"{selector}\" at column {column}: {message}")]
pub struct SelectorError {
    /// The selector text.
    pub selector: String,
    /// 1-based column (in characters) where the problem is.
    pub column: usize,
    /// What was expected there.
    pub message: String,
}

struct Parser<'a> {
    text: &'a str,
    chars: Vec<char>,
    pos: usize,
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

impl<'a> Parser<'a> {
    fn err<T>(&self, at: usize, message: impl Into<String>) -> Result<T, SelectorError> {
        Err(SelectorError {
            selector: self.text.to_string(),
            column: at + 1,
            message: message.into(),
        })
    }

    fn skip_ws(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.chars.get(self.pos).copied()
    }

    /// Consumes `s` if the input continues with it (after whitespace).
    fn eat(&mut self, s: &str) -> bool {
        self.skip_ws();
        let n = s.chars().count();
        let matches = self.chars.len() >= self.pos + n
            && self.chars[self.pos..self.pos + n]
                .iter()
                .copied()
                .eq(s.chars());
        if matches {
            self.pos += n;
        }
        matches
    }

    /// Consumes the word `w` if it is followed by a non-key character.
    fn eat_word(&mut self, w: &str) -> bool {
        let save = self.pos;
        if self.eat(w) && !self.chars.get(self.pos).copied().is_some_and(is_key_char) {
            return true;
        }
        self.pos = save;
        false
    }

    fn parse_or(&mut self) -> Result<Expr, SelectorError> {
        let mut terms = vec![self.parse_and()?];
        while self.eat("||") {
            terms.push(self.parse_and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Or(terms)
        })
    }

    fn parse_and(&mut self) -> Result<Expr, SelectorError> {
        let mut terms = vec![self.parse_unary()?];
        while self.eat("&&") {
            terms.push(self.parse_unary()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::And(terms)
        })
    }

    fn parse_unary(&mut self) -> Result<Expr, SelectorError> {
        if self.peek() == Some('!') && self.chars.get(self.pos + 1) != Some(&'=') {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.parse_unary()?)));
        }
        self.parse_primary()
    }

    fn parse_key(&mut self) -> Result<String, SelectorError> {
        self.skip_ws();
        let start = self.pos;
        while self.chars.get(self.pos).copied().is_some_and(is_key_char) {
            self.pos += 1;
        }
        if start == self.pos {
            return match self.chars.get(self.pos) {
                None => self.err(
                    self.pos,
                    "unexpected end of selector, expected a label key, has(), all() or '('",
                ),
                Some(c) => self.err(
                    self.pos,
                    format!("unexpected '{c}', expected a label key, has(), all() or '('"),
                ),
            };
        }
        Ok(self.chars[start..self.pos].iter().collect())
    }

    fn parse_string(&mut self) -> Result<String, SelectorError> {
        self.skip_ws();
        let at = self.pos;
        let quote = match self.chars.get(self.pos) {
            Some(q @ ('\'' | '"')) => *q,
            Some(c) => {
                return self.err(at, format!("expected a quoted value like 'v', found '{c}'"));
            }
            None => {
                return self.err(
                    at,
                    "unexpected end of selector, expected a quoted value like 'v'",
                );
            }
        };
        self.pos += 1;
        let start = self.pos;
        while let Some(c) = self.chars.get(self.pos) {
            if *c == quote {
                let s = self.chars[start..self.pos].iter().collect();
                self.pos += 1;
                return Ok(s);
            }
            self.pos += 1;
        }
        self.err(at, format!("unterminated string: missing closing {quote}"))
    }

    fn parse_set(&mut self) -> Result<Vec<String>, SelectorError> {
        self.skip_ws();
        if !self.eat("{") {
            return self.err(self.pos, "expected '{' to start a set like {'a', 'b'}");
        }
        let mut out = Vec::new();
        if self.eat("}") {
            return Ok(out);
        }
        loop {
            out.push(self.parse_string()?);
            if self.eat("}") {
                return Ok(out);
            }
            if !self.eat(",") {
                self.skip_ws();
                return self.err(self.pos, "expected ',' or '}' in set");
            }
        }
    }

    fn parse_primary(&mut self) -> Result<Expr, SelectorError> {
        self.skip_ws();
        let at = self.pos;
        if self.eat("(") {
            let e = self.parse_or()?;
            if !self.eat(")") {
                self.skip_ws();
                return self.err(
                    self.pos,
                    format!("expected ')' to close '(' at column {}", at + 1),
                );
            }
            return Ok(e);
        }
        if self.eat_word("all") {
            if self.eat("(") && self.eat(")") {
                return Ok(Expr::All);
            }
            self.pos = at;
        }
        if self.eat_word("has") {
            if self.eat("(") {
                let k = self.parse_key()?;
                if !self.eat(")") {
                    self.skip_ws();
                    return self.err(self.pos, "expected ')' after the label key in has(...)");
                }
                return Ok(Expr::Has(k));
            }
            self.pos = at;
        }
        let key = self.parse_key()?;
        self.skip_ws();
        let op_at = self.pos;
        if self.eat("==") {
            return Ok(Expr::Eq(key, self.parse_string()?));
        }
        if self.eat("!=") {
            return Ok(Expr::Ne(key, self.parse_string()?));
        }
        if self.eat_word("in") {
            return Ok(Expr::In(key, self.parse_set()?));
        }
        if self.eat_word("not") {
            if self.eat_word("in") {
                return Ok(Expr::NotIn(key, self.parse_set()?));
            }
            return self.err(op_at, "expected 'in' after 'not'");
        }
        if self.eat_word("contains") {
            return Ok(Expr::Contains(key, self.parse_string()?));
        }
        if self.eat_word("starts") {
            if self.eat_word("with") {
                return Ok(Expr::StartsWith(key, self.parse_string()?));
            }
            return self.err(op_at, "expected 'with' after 'starts'");
        }
        if self.eat_word("ends") {
            if self.eat_word("with") {
                return Ok(Expr::EndsWith(key, self.parse_string()?));
            }
            return self.err(op_at, "expected 'with' after 'ends'");
        }
        match self.chars.get(op_at) {
            None => self.err(
                op_at,
                format!("unexpected end of selector after \"{key}\", expected ==, !=, in, not in (or write has({key}))"),
            ),
            Some('=') => self.err(op_at, "use '==' to compare, not '='"),
            Some(c) => self.err(
                op_at,
                format!("unexpected '{c}' after \"{key}\", expected ==, !=, in, not in, contains, starts with or ends with"),
            ),
        }
    }
}

/// Parses a selector. An empty (or all-whitespace) selector is `all()`.
pub fn parse(text: &str) -> Result<Expr, SelectorError> {
    let mut p = Parser {
        text,
        chars: text.chars().collect(),
        pos: 0,
    };
    if p.peek().is_none() {
        return Ok(Expr::All);
    }
    let e = p.parse_or()?;
    if let Some(c) = p.peek() {
        let msg = if c == '&' || c == '|' {
            format!("unexpected '{c}': use '&&' or '||'")
        } else if c == ')' {
            "unexpected ')' with no matching '('".to_string()
        } else {
            format!("unexpected '{c}', expected '&&', '||' or the end of the selector")
        };
        return p.err(p.pos, msg);
    }
    Ok(e)
}

/// A selector field of a resource: the text as written plus its parsed form.
#[derive(Debug, Clone)]
pub struct Selector {
    text: String,
    expr: Expr,
}

impl Selector {
    /// The selector as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed expression.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Evaluates the selector against a label map.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.expr.matches(labels)
    }

    /// `all()`.
    pub fn all() -> Self {
        Selector {
            text: "all()".into(),
            expr: Expr::All,
        }
    }
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Selector {}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Selector {
            text: s.to_string(),
            expr: parse(s)?,
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn evaluates_calico_forms() {
        let l = labels(&[("region", "WDS"), ("route-reflector", "true")]);
        let yes = [
            "all()",
            "",
            "has(region)",
            "!has(zone)",
            "region == 'WDS'",
            "region == \"WDS\"",
            "region != 'Global'",
            "zone != 'x'",
            "region in {'WDS', 'Global'}",
            "region not in {'Global'}",
            "zone not in {'a'}",
            "region == 'WDS' && route-reflector == 'true'",
            "region == 'x' || has(route-reflector)",
            "!(region == 'x' || zone == 'y')",
            "region starts with 'W' && region ends with 'S' && region contains 'D'",
        ];
        for s in yes {
            assert!(parse(s).expect(s).matches(&l), "{s} should match");
        }
        let no = [
            "!all()",
            "has(zone)",
            "!has(region)",
            "region == 'Global'",
            "zone == 'x'",
            "zone in {'x'}",
            "region in {}",
            "region == 'WDS' && has(zone)",
        ];
        for s in no {
            assert!(!parse(s).expect(s).matches(&l), "{s} should not match");
        }
    }

    #[test]
    fn seed_selectors_parse() {
        for s in [
            "kubernetes.io/hostname == \"k-master\"",
            "!has(route-reflector)",
            "route-reflector == 'true'",
            "rr-id == 'as64513'",
            "region == 'Domestic'",
        ] {
            parse(s).expect(s);
        }
    }

    #[test]
    fn errors_point_at_the_column() {
        let e = parse("region = 'WDS'").expect_err("must fail");
        assert_eq!(e.column, 8);
        assert!(e.message.contains("=="));
        let e = parse("region == WDS").expect_err("must fail");
        assert_eq!(e.column, 11);
        let e = parse("has(a) && (b == 'c'").expect_err("must fail");
        assert_eq!(e.column, 20);
        let e = parse("a == 'b' & c == 'd'").expect_err("must fail");
        assert_eq!(e.column, 10);
        let e = parse("a == 'b").expect_err("must fail");
        assert_eq!(e.column, 6);
        assert!(e.message.contains("unterminated"));
        let e = parse("a not {'x'}").expect_err("must fail");
        assert_eq!(e.column, 3);
    }

    #[test]
    fn printing_is_canonical() {
        let e = parse("a=='1'&&(b=='2'||!has(c))").expect("parses");
        assert_eq!(e.to_string(), "a == \"1\" && (b == \"2\" || !has(c))");
    }
}
