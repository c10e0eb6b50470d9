//! Alertmanager's label matchers (`name op value` with `=`, `!=`, `=~`, `!~`), as written in
//! route `matchers:`, inhibit rules, amtool and the `filter` parameter of the v2 API.
//!
//! A label the set lacks counts as the empty string. Regexes are fully anchored.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};

use regex::{Regex, RegexBuilder};

/// A set of labels, name to value.
pub type Labels = BTreeMap<String, String>;

/// Longest input [`parse_matcher`] and [`parse_matchers`] accept, in bytes.
pub const MAX_INPUT_BYTES: usize = 4096;

/// Cap on a regex's compiled size and on its lazy DFA cache, in bytes: the compile time of
/// one regex from an API request stays in milliseconds (Unicode classes repeated many
/// times, like `\w{20}`, go over it and are refused).
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// Most matchers in one list (as many as a silence may have).
pub const MAX_LIST_MATCHERS: usize = 64;

/// Longest excerpt of the input quoted in an error message, in bytes.
const MAX_QUOTED_BYTES: usize = 100;

/// A matcher's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
}

impl MatchOp {
    /// The operator as written: `=`, `!=`, `=~` or `!~`.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }

    /// Whether the value is a regex (`=~`, `!~`).
    pub fn is_regex(self) -> bool {
        matches!(self, MatchOp::Regex | MatchOp::NotRegex)
    }

    /// Whether the operator selects matching values (`=`, `=~`) rather than the others.
    pub fn is_equal(self) -> bool {
        matches!(self, MatchOp::Equal | MatchOp::Regex)
    }

    /// The operator with the given `isRegex` and `isEqual` flags of Alertmanager's JSON.
    pub fn from_flags(is_regex: bool, is_equal: bool) -> MatchOp {
        match (is_regex, is_equal) {
            (false, true) => MatchOp::Equal,
            (false, false) => MatchOp::NotEqual,
            (true, true) => MatchOp::Regex,
            (true, false) => MatchOp::NotRegex,
        }
    }
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a matcher was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The input is longer than [`MAX_INPUT_BYTES`].
    #[error("matcher input is {len} bytes, more than the limit of {MAX_INPUT_BYTES}")]
    TooLong { len: usize },
    /// The input does not follow the syntax; `pos` is a byte offset into it.
    #[error("invalid matcher {input:?}: {reason} (at byte {pos})")]
    Syntax {
        input: String,
        pos: usize,
        reason: &'static str,
    },
    /// The label name is empty.
    #[error("invalid matcher: the label name is empty")]
    EmptyName,
    /// The regex does not compile, or compiles past [`REGEX_SIZE_LIMIT`].
    #[error("invalid regex {value:?} for label {name:?}: {reason}")]
    Regex {
        name: String,
        value: String,
        reason: String,
    },
}

#[derive(Debug, Clone)]
enum Test {
    Equal,
    NotEqual,
    Regex(Regex),
    NotRegex(Regex),
}

/// One label matcher. Equality, hashing and `Display` use the name, operator and value.
#[derive(Debug, Clone)]
pub struct Matcher {
    name: String,
    value: String,
    test: Test,
}

impl Matcher {
    /// A matcher; for `=~` and `!~` the value must be a regex, matched against whole values.
    pub fn new(
        name: impl Into<String>,
        op: MatchOp,
        value: impl Into<String>,
    ) -> Result<Matcher, ParseError> {
        let name = name.into();
        let value = value.into();
        if name.is_empty() {
            return Err(ParseError::EmptyName);
        }
        let test = match op {
            MatchOp::Equal => Test::Equal,
            MatchOp::NotEqual => Test::NotEqual,
            MatchOp::Regex => Test::Regex(compile(&name, &value)?),
            MatchOp::NotRegex => Test::NotRegex(compile(&name, &value)?),
        };
        Ok(Matcher { name, value, test })
    }

    /// The label name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operator.
    pub fn op(&self) -> MatchOp {
        match self.test {
            Test::Equal => MatchOp::Equal,
            Test::NotEqual => MatchOp::NotEqual,
            Test::Regex(_) => MatchOp::Regex,
            Test::NotRegex(_) => MatchOp::NotRegex,
        }
    }

    /// The value: a literal, or the regex as written (without the anchors).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether a label value satisfies the matcher.
    pub fn matches_value(&self, v: &str) -> bool {
        match &self.test {
            Test::Equal => v == self.value,
            Test::NotEqual => v != self.value,
            Test::Regex(re) => re.is_match(v),
            Test::NotRegex(re) => !re.is_match(v),
        }
    }

    /// Whether the label set satisfies the matcher; a missing label is the empty string.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_value(labels.get(&self.name).map_or("", String::as_str))
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op() == other.op() && self.value == other.value
    }
}

impl Eq for Matcher {}

impl Hash for Matcher {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.op().hash(state);
        self.value.hash(state);
    }
}

/// The canonical form `name="value"`; the name is quoted too unless it is
/// `[a-zA-Z_][a-zA-Z0-9_]*`. [`parse_matcher`] reads it back to an equal matcher.
impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_identifier(&self.name) {
            f.write_str(&self.name)?;
        } else {
            write_quoted(f, &self.name)?;
        }
        f.write_str(self.op().as_str())?;
        write_quoted(f, &self.value)
    }
}

/// Whether every matcher matches the label set; an empty list matches every set.
pub fn matchers_match(ms: &[Matcher], labels: &Labels) -> bool {
    ms.iter().all(|m| m.matches(labels))
}

/// Parses one matcher. An unquoted value runs to the end of the input, trimmed.
pub fn parse_matcher(input: &str) -> Result<Matcher, ParseError> {
    check_len(input)?;
    let mut p = Parser { src: input, pos: 0 };
    p.skip_ws();
    if p.peek() == Some('{') {
        return Err(p.error("a single matcher cannot be in braces"));
    }
    let trimmed = input.trim_end();
    if trimmed.ends_with('}') {
        return Err(syntax(
            input,
            trimmed.len().saturating_sub(1),
            "a single matcher cannot be in braces",
        ));
    }
    let m = p.matcher(false)?;
    p.skip_ws();
    if !p.at_end() {
        return Err(p.error("expected the end of the input after the matcher"));
    }
    Ok(m)
}

/// Parses a comma-separated list of matchers, optionally in braces: `{a="1", b=~"x.*"}` or
/// `a="1", b="2"`. A trailing comma is allowed; empty input and `{}` give no matchers. An
/// unquoted value runs to the next comma or closing brace, trimmed.
pub fn parse_matchers(input: &str) -> Result<Vec<Matcher>, ParseError> {
    check_len(input)?;
    let mut p = Parser { src: input, pos: 0 };
    let mut out = Vec::new();
    p.skip_ws();
    let braced = p.eat('{');
    loop {
        p.skip_ws();
        match p.peek() {
            None if braced => return Err(p.error("missing closing brace")),
            None => break,
            Some('}') if braced => {
                p.bump();
                p.skip_ws();
                if !p.at_end() {
                    return Err(p.error("unexpected input after the closing brace"));
                }
                break;
            }
            Some('}') => return Err(p.error("closing brace without an opening brace")),
            Some(_) => {}
        }
        if out.len() == MAX_LIST_MATCHERS {
            return Err(p.error("more than 64 matchers"));
        }
        out.push(p.matcher(true)?);
        p.skip_ws();
        match p.peek() {
            Some(',') => p.bump(),
            None | Some('}') => {}
            Some(_) => return Err(p.error("expected a comma between matchers")),
        }
    }
    Ok(out)
}

fn check_len(input: &str) -> Result<(), ParseError> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(ParseError::TooLong { len: input.len() });
    }
    Ok(())
}

fn syntax(input: &str, pos: usize, reason: &'static str) -> ParseError {
    ParseError::Syntax {
        input: clip(input),
        pos,
        reason,
    }
}

/// `s`, cut to at most [`MAX_QUOTED_BYTES`] on a character boundary and marked if cut.
fn clip(s: &str) -> String {
    clip_to(s, MAX_QUOTED_BYTES)
}

/// `s`, cut to at most `max` bytes on a character boundary and marked if cut, for quoting
/// untrusted input in an error message.
pub(crate) fn clip_to(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", s.get(..end).unwrap_or(""))
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '\\' => f.write_str("\\\\")?,
            '"' => f.write_str("\\\"")?,
            '\n' => f.write_str("\\n")?,
            c => fmt::Write::write_char(f, c)?,
        }
    }
    f.write_str("\"")
}

/// Compiles `value` as given (so that it cannot close the anchoring group) and anchored.
fn compile(name: &str, value: &str) -> Result<Regex, ParseError> {
    let build = |pattern: &str| {
        RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
    };
    build(value)
        .and_then(|_| build(&format!("^(?:{value})$")))
        .map_err(|e| ParseError::Regex {
            name: clip(name),
            value: clip(value),
            reason: regex_reason(&e),
        })
}

/// The last non-empty line of a regex error, without its `error: ` prefix.
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("invalid regex");
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += c.len_utf8();
        }
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.bump();
            return true;
        }
        false
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn error(&self, reason: &'static str) -> ParseError {
        syntax(self.src, self.pos, reason)
    }

    /// One matcher; `in_list` stops an unquoted value at a comma or closing brace.
    fn matcher(&mut self, in_list: bool) -> Result<Matcher, ParseError> {
        self.skip_ws();
        let name = if self.peek() == Some('"') {
            self.quoted()?
        } else {
            self.identifier()?
        };
        self.skip_ws();
        let op = self.op()?;
        self.skip_ws();
        let value = if self.peek() == Some('"') {
            self.quoted()?
        } else {
            self.unquoted(in_list)?
        };
        Matcher::new(name, op, value)
    }

    fn identifier(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        if !self
            .peek()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        {
            return Err(self.error("expected a label name"));
        }
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.bump();
        }
        Ok(self.src.get(start..self.pos).unwrap_or("").to_owned())
    }

    fn op(&mut self) -> Result<MatchOp, ParseError> {
        let rest = self.rest();
        let (op, len) = if rest.starts_with("=~") {
            (MatchOp::Regex, 2)
        } else if rest.starts_with("!=") {
            (MatchOp::NotEqual, 2)
        } else if rest.starts_with("!~") {
            (MatchOp::NotRegex, 2)
        } else if rest.starts_with('=') {
            (MatchOp::Equal, 1)
        } else {
            return Err(self.error("expected one of =, !=, =~, !~"));
        };
        self.pos += len;
        Ok(op)
    }

    /// A double-quoted string with the escapes `\"`, `\\` and `\n`; a backslash before any
    /// other character stays as it is.
    fn quoted(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        self.bump();
        let mut out = String::new();
        let mut chars = self.rest().chars();
        loop {
            match chars.next() {
                None => return Err(syntax(self.src, start, "missing closing double quote")),
                Some('"') => break,
                Some('\\') => match chars.next() {
                    None => return Err(syntax(self.src, start, "missing closing double quote")),
                    Some(c) => push_escaped(&mut out, c),
                },
                Some(c) => out.push(c),
            }
        }
        self.pos = self.src.len() - chars.as_str().len();
        Ok(out)
    }

    fn unquoted(&mut self, in_list: bool) -> Result<String, ParseError> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if in_list && (c == ',' || c == '}') {
                break;
            }
            if c == '"' {
                return Err(self.error("unexpected double quote in an unquoted value"));
            }
            self.bump();
        }
        let raw = self.src.get(start..self.pos).unwrap_or("").trim_end();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            match (c, chars.clone().next()) {
                ('\\', Some(next)) => {
                    chars.next();
                    push_escaped(&mut out, next);
                }
                (c, _) => out.push(c),
            }
        }
        Ok(out)
    }
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        'n' => out.push('\n'),
        '"' | '\\' => out.push(c),
        c => {
            out.push('\\');
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn m(s: &str) -> Matcher {
        parse_matcher(s).expect("valid matcher")
    }

    fn err(s: &str) -> String {
        match parse_matcher(s) {
            Ok(m) => panic!("{s:?} parsed as {m}"),
            Err(e) => e.to_string(),
        }
    }

    fn list_err(s: &str) -> String {
        match parse_matchers(s) {
            Ok(ms) => panic!("{s:?} parsed as {ms:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn equal() {
        let x = m(r#"job="etcd""#);
        assert_eq!(
            (x.name(), x.op(), x.value()),
            ("job", MatchOp::Equal, "etcd")
        );
        assert!(x.matches(&labels(&[("job", "etcd")])));
        assert!(!x.matches(&labels(&[("job", "etcd2")])));
        assert!(!x.matches(&labels(&[])));
    }

    #[test]
    fn not_equal() {
        let x = m(r#"job!="etcd""#);
        assert_eq!(x.op(), MatchOp::NotEqual);
        assert!(!x.matches(&labels(&[("job", "etcd")])));
        assert!(x.matches(&labels(&[("job", "node")])));
    }

    #[test]
    fn regex() {
        let x = m(r#"severity=~"warn|crit.*""#);
        assert_eq!(x.op(), MatchOp::Regex);
        assert!(x.matches(&labels(&[("severity", "warn")])));
        assert!(x.matches(&labels(&[("severity", "critical")])));
        assert!(!x.matches(&labels(&[("severity", "info")])));
    }

    #[test]
    fn not_regex() {
        let x = m(r#"instance!~"10\\.0\\..*""#);
        assert_eq!(x.op(), MatchOp::NotRegex);
        assert_eq!(x.value(), r"10\.0\..*");
        assert!(!x.matches(&labels(&[("instance", "10.0.0.1:2379")])));
        assert!(x.matches(&labels(&[("instance", "10.1.0.1:2379")])));
    }

    #[test]
    fn regexes_are_anchored() {
        let x = m(r#"a=~"b""#);
        assert!(x.matches(&labels(&[("a", "b")])));
        assert!(!x.matches(&labels(&[("a", "ab")])));
        assert!(!x.matches(&labels(&[("a", "ba")])));
        let alt = m(r#"a=~"x|y""#);
        assert!(!alt.matches(&labels(&[("a", "xy")])));
        assert!(!m(r#"a!~"b""#).matches(&labels(&[("a", "b")])));
        assert!(m(r#"a!~"b""#).matches(&labels(&[("a", "ab")])));
    }

    #[test]
    fn a_regex_cannot_close_the_anchoring_group() {
        let e = err(r#"a=~"x)|(.*""#);
        assert!(
            e.starts_with(r#"invalid regex "x)|(.*" for label "a": "#),
            "{e}"
        );
    }

    #[test]
    fn missing_labels_are_empty() {
        let none = labels(&[("other", "1")]);
        assert!(m(r#"a!="x""#).matches(&none));
        assert!(m(r#"a="""#).matches(&none));
        assert!(m(r#"a=~".*""#).matches(&none));
        assert!(m(r#"a!~"x""#).matches(&none));
        assert!(!m(r#"a="x""#).matches(&none));
        assert!(!m(r#"a=~".+""#).matches(&none));
    }

    #[test]
    fn escapes_in_quoted_values() {
        let x = m(r#"a="say \"hi\", c:\\temp\nnext""#);
        assert_eq!(x.value(), "say \"hi\", c:\\temp\nnext");
        assert_eq!(m(r#"a=~"\d+""#).value(), r"\d+");
        assert_eq!(m(r#"a="\t""#).value(), r"\t");
        assert_eq!(m("a=\"line1\nline2\"").value(), "line1\nline2");
        assert_eq!(m(r#"a="""#).value(), "");
    }

    #[test]
    fn unquoted_values() {
        assert_eq!(m("a=b").value(), "b");
        assert_eq!(m("a = hello world  ").value(), "hello world");
        assert_eq!(m("a=x,y").value(), "x,y");
        assert_eq!(m("a=").value(), "");
        assert_eq!(m("a=héllo").value(), "héllo");
        assert_eq!(m(r"a=~\d+").value(), r"\d+");
        assert_eq!(m(r"a=c:\\x").value(), r"c:\x");
        assert_eq!(m("a=trailing\\").value(), "trailing\\");
        let ms = parse_matchers("a=x, b =~ y.* ,c!=z").expect("list");
        let got: Vec<String> = ms.iter().map(ToString::to_string).collect();
        assert_eq!(got, [r#"a="x""#, r#"b=~"y.*""#, r#"c!="z""#]);
        assert_eq!(parse_matchers("{a=1}").expect("braced")[0].value(), "1");
    }

    #[test]
    fn utf8_names() {
        let x = m(r#""service.name"="api""#);
        assert_eq!(x.name(), "service.name");
        assert!(x.matches(&labels(&[("service.name", "api")])));
        let y = m(r#""föö bar \"q\""!="x""#);
        assert_eq!(y.name(), "föö bar \"q\"");
        assert_eq!(y.to_string(), r#""föö bar \"q\""!="x""#);
        assert_eq!(m("_a1=x").name(), "_a1");
    }

    #[test]
    fn braces_and_lists() {
        let ms = parse_matchers(r#"{a="1", b=~"x.*"}"#).expect("list");
        assert_eq!(ms, [m(r#"a="1""#), m(r#"b=~"x.*""#)]);
        assert_eq!(parse_matchers(r#"a="1", b="2""#).expect("list").len(), 2);
        assert_eq!(parse_matchers(r#"{a="1",}"#).expect("list").len(), 1);
        assert_eq!(parse_matchers(r#"a="1","#).expect("list").len(), 1);
        assert_eq!(
            parse_matchers(r#"a="x,}y""#).expect("list")[0].value(),
            "x,}y"
        );
        assert!(parse_matchers("").expect("empty").is_empty());
        assert!(parse_matchers("{}").expect("empty").is_empty());
        assert!(parse_matchers(" { } ").expect("empty").is_empty());
    }

    #[test]
    fn whitespace() {
        let ms = parse_matchers(" {\n  a =  \"1\" ,\n\tb!~ \"2\"  \n}\n").expect("list");
        assert_eq!(ms, [m(r#"a="1""#), m(r#"b!~"2""#)]);
        assert_eq!(m(r#"   a   !=   "1"   "#), m(r#"a!="1""#));
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(
            err("foo~bar"),
            r#"invalid matcher "foo~bar": expected one of =, !=, =~, !~ (at byte 3)"#
        );
        assert_eq!(
            err(r#"="x""#),
            r#"invalid matcher "=\"x\"": expected a label name (at byte 0)"#
        );
        assert_eq!(
            err("a"),
            r#"invalid matcher "a": expected one of =, !=, =~, !~ (at byte 1)"#
        );
        assert_eq!(
            err(r#"a="x"#),
            r#"invalid matcher "a=\"x": missing closing double quote (at byte 2)"#
        );
        assert_eq!(
            err(r#"a="x\""#),
            r#"invalid matcher "a=\"x\\\"": missing closing double quote (at byte 2)"#
        );
        assert_eq!(
            err(r#"a="1", b="2""#),
            r#"invalid matcher "a=\"1\", b=\"2\"": expected the end of the input after the matcher (at byte 5)"#
        );
        assert_eq!(
            err(r#"a=x"y"#),
            r#"invalid matcher "a=x\"y": unexpected double quote in an unquoted value (at byte 3)"#
        );
        assert!(err(r#"{a="1"}"#).contains("a single matcher cannot be in braces"));
        assert!(err("a=x}").contains("a single matcher cannot be in braces (at byte 3)"));
        assert!(err("1a=x").contains("expected a label name (at byte 0)"));
        assert!(err("").contains("expected a label name"));
        assert_eq!(
            err(r#""" = "x""#),
            "invalid matcher: the label name is empty"
        );
    }

    #[test]
    fn list_errors() {
        assert!(list_err(r#"{a="1""#).contains("missing closing brace (at byte 6)"));
        assert!(list_err(r#"a="1"}"#).contains("closing brace without an opening brace"));
        assert!(list_err(r#"{a="1"} b"#).contains("unexpected input after the closing brace"));
        assert!(
            list_err(r#"a="1" b="2""#).contains("expected a comma between matchers (at byte 6)")
        );
        assert!(list_err(r#"a="1",,b="2""#).contains("expected a label name (at byte 6)"));
        assert!(list_err("{,}").contains("expected a label name (at byte 1)"));
    }

    #[test]
    fn regex_errors_keep_the_last_line() {
        assert_eq!(
            err(r#"a=~"(""#),
            r#"invalid regex "(" for label "a": unclosed group"#
        );
        assert_eq!(
            list_err(r#"a="1", b=~"x[""#),
            r#"invalid regex "x[" for label "b": unclosed character class"#
        );
    }

    #[test]
    fn limits() {
        let long = format!("a=\"{}\"", "x".repeat(MAX_INPUT_BYTES));
        assert_eq!(
            parse_matcher(&long),
            Err(ParseError::TooLong {
                len: MAX_INPUT_BYTES + 4
            })
        );
        assert!(matches!(
            parse_matchers(&long),
            Err(ParseError::TooLong { .. })
        ));
        let e = err(r#"a=~"\w{1000}{1000}""#);
        assert!(e.contains("exceeds size limit"), "{e}");
        let long_bad = format!("{}~", "é".repeat(100));
        let e = err(&long_bad);
        assert!(e.contains("…"), "{e}");
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn case_insensitive_regex() {
        let r = Matcher::new("a", MatchOp::Regex, "(?i)warn");
        match r {
            Ok(x) => assert!(x.matches(&labels(&[("a", "WARN")]))),
            Err(e) => assert!(e.to_string().contains("Unicode-aware case"), "{e}"),
        }
    }

    #[test]
    fn display() {
        assert_eq!(m("a = b").to_string(), r#"a="b""#);
        assert_eq!(m(r#"a!="x\\y""#).to_string(), r#"a!="x\\y""#);
        assert_eq!(
            Matcher::new("a", MatchOp::NotEqual, "q\"\n")
                .expect("m")
                .to_string(),
            r#"a!="q\"\n""#
        );
        assert_eq!(m(r#""a b"=~"x""#).to_string(), r#""a b"=~"x""#);
    }

    #[test]
    fn display_round_trips() {
        let cases = [
            Matcher::new("job", MatchOp::Equal, "etcd"),
            Matcher::new("job", MatchOp::NotEqual, ""),
            Matcher::new("a", MatchOp::Regex, r"\d+\.\\"),
            Matcher::new("a", MatchOp::NotRegex, "x|y"),
            Matcher::new("a", MatchOp::Equal, "q\"uo\\te\nnl\t, } {"),
            Matcher::new("a", MatchOp::Equal, "\\"),
            Matcher::new("a", MatchOp::Equal, " padded "),
            Matcher::new("service.name", MatchOp::Equal, "x"),
            Matcher::new("ünï \"cøde\"\\", MatchOp::NotEqual, "ü"),
            Matcher::new("9lives", MatchOp::Equal, "x"),
            Matcher::new("a", MatchOp::Equal, "\\n"),
        ];
        for c in cases {
            let x = c.expect("valid");
            let shown = x.to_string();
            let back = parse_matcher(&shown).expect("display parses");
            assert_eq!(back, x, "{shown}");
            assert_eq!(back.value(), x.value());
            let list = parse_matchers(&format!("{{{shown}, {shown}}}")).expect("list parses");
            assert_eq!(list, [x.clone(), x]);
        }
    }

    #[test]
    fn equality_ignores_nothing_but_the_compiled_regex() {
        assert_eq!(m(r#"a=~"x""#), m(r#"a =~ x"#));
        assert_ne!(m(r#"a=~"x""#), m(r#"a="x""#));
        assert_ne!(m(r#"a="x""#), m(r#"b="x""#));
    }

    #[test]
    fn match_op_flags() {
        for op in [
            MatchOp::Equal,
            MatchOp::NotEqual,
            MatchOp::Regex,
            MatchOp::NotRegex,
        ] {
            assert_eq!(MatchOp::from_flags(op.is_regex(), op.is_equal()), op);
            assert_eq!(m(&format!("a{op}x")).op(), op);
        }
    }

    #[test]
    fn lists_match_when_all_match() {
        let set = labels(&[("a", "1"), ("b", "2")]);
        assert!(matchers_match(&[], &set));
        assert!(matchers_match(&[], &Labels::new()));
        let ms = parse_matchers(r#"a="1", b=~"[0-9]""#).expect("list");
        assert!(matchers_match(&ms, &set));
        let ms = parse_matchers(r#"a="1", b="3""#).expect("list");
        assert!(!matchers_match(&ms, &set));
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let inputs = [
            "\"",
            "\\",
            "{",
            "}",
            "{{",
            "a=\"\\",
            "é",
            "a=~",
            "!=",
            "a!",
            "a=~\"é",
            "\"é\"",
            "{a=\"é\",",
            "a\u{0}=b",
            "{\"\"}",
            "a=\"x\"\"",
            "\u{2028}a=b",
        ];
        for s in inputs {
            let _ = parse_matcher(s);
            let _ = parse_matchers(s);
        }
        assert_eq!(m("\u{2028}a=b").name(), "a");
    }

    #[test]
    fn generated_inputs_parse_or_fail_cleanly_and_round_trip() {
        const PIECES: [&str; 20] = [
            "a", "b_1", "\"", "\\", "=", "!", "~", "{", "}", ",", " ", "\n", "x", "é", ".*", "(",
            ")", "|", "n", "\"q\"",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut parsed = 0;
        for _ in 0..20_000 {
            let mut s = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut bits = seed;
            for _ in 0..(bits % 12) {
                bits = bits.rotate_right(5);
                s.push_str(PIECES[(bits % PIECES.len() as u64) as usize]);
            }
            if let Ok(ms) = parse_matchers(&s) {
                for x in &ms {
                    parsed += 1;
                    assert_eq!(parse_matcher(&x.to_string()).as_ref(), Ok(x), "{s:?}");
                }
            }
            if let Ok(x) = parse_matcher(&s) {
                assert_eq!(parse_matcher(&x.to_string()), Ok(x), "{s:?}");
            }
        }
        assert!(parsed > 100, "{parsed}");
    }
}

#[cfg(test)]
mod limits {
    use super::*;

    /// What the fuzzer's matchers target timed out on (`\w{20}` 128 times, each compiling
    /// near 1 MiB twice): now refused, by count and by size.
    #[test]
    fn costly_lists_are_refused() {
        let e = parse_matchers(&r#"a=~"\w{20}","#.repeat(128)).expect_err("too costly");
        assert!(matches!(e, ParseError::Regex { .. }), "{e}");
        let e = parse_matchers(&r#"a=~"x.*","#.repeat(65)).expect_err("too many");
        assert!(e.to_string().contains("more than 64 matchers"), "{e}");
        let big = parse_matcher(r#"a=~"\w{20}""#).expect_err("too big to compile");
        assert!(matches!(big, ParseError::Regex { .. }), "{big}");
        assert!(parse_matcher(r#"alertname=~"Etcd.*Disk.*""#).is_ok());
    }
}
