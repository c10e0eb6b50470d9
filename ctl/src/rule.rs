//! `--if` rules in the style of etcd-defrag: a boolean expression over one member's
//! database facts that says whether the member needs defragmenting, such as
//! `dbQuotaUsage > 0.8 || dbSizeFree > 200MiB`.
//!
//! The grammar is ours and tiny, so it is parsed by hand (recursive descent):
//!
//! ```text
//! rule    := or
//! or      := and ( "||" and )*
//! and     := not ( "&&" not )*
//! not     := "!" not | cmp
//! cmp     := sum ( (">" | ">=" | "<" | "<=" | "==" | "!=") sum )?
//! sum     := product ( ("+" | "-") product )*
//! product := unary ( ("*" | "/") unary )*
//! unary   := "-" unary | atom
//! atom    := NUMBER UNIT? | VARIABLE | "(" or ")"
//! ```
//!
//! Variables: `dbSize`, `dbSizeInUse`, `dbSizeFree` (= dbSize - dbSizeInUse), `dbQuota`,
//! `dbQuotaUsage` (= dbSize / dbQuota). Units: `B`, `KiB`, `MiB`, `GiB`, `TiB` (powers of
//! 1024) and `KB`, `MB`, `GB`, `TB` (powers of 1000). Arithmetic is there so that
//! etcd-defrag's own spelling (`200*1024*1024`) works too. Types are checked at parse
//! time: the rule as a whole and the operands of `!`, `&&` and `||` are booleans, those of
//! comparisons and arithmetic are numbers. Input is capped at [`MAX_LEN`] bytes and
//! [`MAX_DEPTH`] levels of nesting, so a hostile rule cannot exhaust the stack.

use std::fmt;

/// Longest rule accepted, in bytes.
pub const MAX_LEN: usize = 1024;
/// Deepest nesting of parentheses and prefix operators accepted.
pub const MAX_DEPTH: usize = 32;

/// A parsed, type-checked rule. `Display` gives back the text it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    source: String,
    root: Expr,
}

/// A variable a rule can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    DbSize,
    DbSizeInUse,
    DbSizeFree,
    DbQuota,
    DbQuotaUsage,
}

impl Var {
    const ALL: [(&'static str, Var); 5] = [
        ("dbSize", Var::DbSize),
        ("dbSizeInUse", Var::DbSizeInUse),
        ("dbSizeFree", Var::DbSizeFree),
        ("dbQuota", Var::DbQuota),
        ("dbQuotaUsage", Var::DbQuotaUsage),
    ];

    pub fn name(self) -> &'static str {
        Var::ALL
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("?", |(n, _)| n)
    }
}

/// The facts about one member that a rule is evaluated against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub db_size: u64,
    pub db_size_in_use: u64,
    /// The member's space quota, when it could be learnt.
    pub db_quota: Option<u64>,
}

/// Why a rule could not be parsed. `column` counts characters from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("the rule is empty")]
    Empty,
    #[error("the rule is longer than {MAX_LEN} bytes")]
    TooLong,
    #[error("the rule nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("at column {column}: expected {expected}, found {found}")]
    Syntax {
        column: usize,
        expected: String,
        found: String,
    },
}

/// Why a rule could not be evaluated for a member.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("the rule uses {0} but the member's quota is unknown")]
    QuotaUnknown(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Num(f64),
    Var(Var),
    Neg(Box<Expr>),
    Arith(Arith, Box<Expr>, Box<Expr>),
    Cmp(Cmp, Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Num,
    Bool,
}

impl Expr {
    fn ty(&self) -> Type {
        match self {
            Expr::Num(_) | Expr::Var(_) | Expr::Neg(_) | Expr::Arith(..) => Type::Num,
            Expr::Cmp(..) | Expr::Not(_) | Expr::And(..) | Expr::Or(..) => Type::Bool,
        }
    }

    fn num(&self, f: &Facts) -> Result<f64, EvalError> {
        Ok(match self {
            Expr::Num(n) => *n,
            Expr::Var(v) => var(*v, f)?,
            Expr::Neg(e) => -e.num(f)?,
            Expr::Arith(op, a, b) => {
                let (a, b) = (a.num(f)?, b.num(f)?);
                match op {
                    Arith::Add => a + b,
                    Arith::Sub => a - b,
                    Arith::Mul => a * b,
                    Arith::Div => a / b,
                }
            }
            // Booleans never reach here: the parser checked the types.
            _ => f64::NAN,
        })
    }

    fn truth(&self, f: &Facts) -> Result<bool, EvalError> {
        Ok(match self {
            Expr::Cmp(op, a, b) => {
                let (a, b) = (a.num(f)?, b.num(f)?);
                match op {
                    Cmp::Gt => a > b,
                    Cmp::Ge => a >= b,
                    Cmp::Lt => a < b,
                    Cmp::Le => a <= b,
                    Cmp::Eq => a == b,
                    Cmp::Ne => a != b,
                }
            }
            Expr::Not(e) => !e.truth(f)?,
            Expr::And(a, b) => a.truth(f)? && b.truth(f)?,
            Expr::Or(a, b) => a.truth(f)? || b.truth(f)?,
            _ => false,
        })
    }
}

fn var(v: Var, f: &Facts) -> Result<f64, EvalError> {
    let quota = || match f.db_quota {
        Some(q) if q > 0 => Ok(q as f64),
        _ => Err(EvalError::QuotaUnknown(v.name())),
    };
    Ok(match v {
        Var::DbSize => f.db_size as f64,
        Var::DbSizeInUse => f.db_size_in_use as f64,
        Var::DbSizeFree => f.db_size.saturating_sub(f.db_size_in_use) as f64,
        Var::DbQuota => quota()?,
        Var::DbQuotaUsage => f.db_size as f64 / quota()?,
    })
}

impl Rule {
    /// Parses and type-checks `text`.
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        if text.len() > MAX_LEN {
            return Err(RuleError::TooLong);
        }
        if text.trim().is_empty() {
            return Err(RuleError::Empty);
        }
        let tokens = lex(text)?;
        let mut p = Parser {
            tokens,
            at: 0,
            depth: 0,
            end_column: text.chars().count() + 1,
        };
        let (root, col) = p.or()?;
        if let Some(t) = p.peek() {
            return Err(syntax(
                t.column,
                "an operator or the end",
                &t.tok.to_string(),
            ));
        }
        if root.ty() != Type::Bool {
            return Err(syntax(
                col,
                "a comparison (the rule must be true or false)",
                "a number",
            ));
        }
        Ok(Rule {
            source: text.trim().to_owned(),
            root,
        })
    }

    /// Whether the rule selects a member with these facts.
    pub fn evaluate(&self, facts: &Facts) -> Result<bool, EvalError> {
        self.root.truth(facts)
    }

    /// The rule's text.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Rule {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Rule::parse(s)
    }
}

impl serde::Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

fn syntax(column: usize, expected: &str, found: &str) -> RuleError {
    RuleError::Syntax {
        column,
        expected: expected.to_owned(),
        found: found.to_owned(),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Ident(String),
    Op(&'static str),
    Open,
    Close,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Num(n) => write!(f, "number {n}"),
            Tok::Ident(s) => write!(f, "{s:?}"),
            Tok::Op(o) => write!(f, "'{o}'"),
            Tok::Open => f.write_str("'('"),
            Tok::Close => f.write_str("')'"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    column: usize,
}

/// Operators, longest first so that `>=` is not read as `>` then `=`.
const OPS: [&str; 14] = [
    "&&", "||", ">=", "<=", "==", "!=", ">", "<", "!", "+", "-", "*", "/", "=",
];

fn lex(text: &str) -> Result<Vec<Token>, RuleError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_digit() || chars[i] == '.' || chars[i] == '_')
            {
                i += 1;
            }
            let raw: String = chars[start..i].iter().filter(|c| **c != '_').collect();
            let n: f64 = raw
                .parse()
                .map_err(|_| syntax(column, "a number", &format!("{raw:?}")))?;
            out.push(Token {
                tok: Tok::Num(n),
                column,
            });
        } else if c.is_ascii_alphabetic() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_alphanumeric() {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Ident(chars[start..i].iter().collect()),
                column,
            });
        } else if c == '(' || c == ')' {
            out.push(Token {
                tok: if c == '(' { Tok::Open } else { Tok::Close },
                column,
            });
            i += 1;
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let Some(op) = OPS.iter().find(|o| rest.starts_with(**o)) else {
                return Err(syntax(
                    column,
                    "an operator, a number or a variable",
                    &format!("{c:?}"),
                ));
            };
            if *op == "=" {
                return Err(syntax(column, "'==' (comparison)", "'='"));
            }
            out.push(Token {
                tok: Tok::Op(op),
                column,
            });
            i += op.chars().count();
        }
    }
    Ok(out)
}

/// The multiplier of a unit name.
fn unit(name: &str) -> Option<f64> {
    Some(match name {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => return None,
    })
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
    end_column: usize,
}

/// An expression and the column it starts at.
type Parsed = Result<(Expr, usize), RuleError>;

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn peek_op(&self, ops: &[&'static str]) -> Option<&'static str> {
        match self.peek().map(|t| &t.tok) {
            Some(Tok::Op(o)) if ops.contains(o) => Some(o),
            _ => None,
        }
    }

    fn found(&self) -> (usize, String) {
        match self.peek() {
            Some(t) => (t.column, t.tok.to_string()),
            None => (self.end_column, "the end of the rule".to_owned()),
        }
    }

    fn expect_type(&self, e: &Expr, col: usize, want: Type, ctx: &str) -> Result<(), RuleError> {
        if e.ty() == want {
            return Ok(());
        }
        let (expected, found) = match want {
            Type::Bool => (format!("a comparison {ctx}"), "a number"),
            Type::Num => (format!("a number {ctx}"), "a comparison"),
        };
        Err(syntax(col, &expected, found))
    }

    fn deeper(&mut self) -> Result<(), RuleError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(RuleError::TooDeep);
        }
        Ok(())
    }

    fn or(&mut self) -> Parsed {
        let (mut left, col) = self.and()?;
        while self.peek_op(&["||"]).is_some() {
            self.expect_type(&left, col, Type::Bool, "before '||'")?;
            self.at += 1;
            let (right, rcol) = self.and()?;
            self.expect_type(&right, rcol, Type::Bool, "after '||'")?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok((left, col))
    }

    fn and(&mut self) -> Parsed {
        let (mut left, col) = self.not()?;
        while self.peek_op(&["&&"]).is_some() {
            self.expect_type(&left, col, Type::Bool, "before '&&'")?;
            self.at += 1;
            let (right, rcol) = self.not()?;
            self.expect_type(&right, rcol, Type::Bool, "after '&&'")?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok((left, col))
    }

    fn not(&mut self) -> Parsed {
        if self.peek_op(&["!"]).is_some() {
            let col = self.found().0;
            self.at += 1;
            self.deeper()?;
            let (e, ecol) = self.not()?;
            self.depth -= 1;
            self.expect_type(&e, ecol, Type::Bool, "after '!'")?;
            return Ok((Expr::Not(Box::new(e)), col));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Parsed {
        let (left, col) = self.sum()?;
        let Some(op) = self.peek_op(&[">", ">=", "<", "<=", "==", "!="]) else {
            return Ok((left, col));
        };
        self.expect_type(&left, col, Type::Num, &format!("before '{op}'"))?;
        self.at += 1;
        let (right, rcol) = self.sum()?;
        self.expect_type(&right, rcol, Type::Num, &format!("after '{op}'"))?;
        let op = match op {
            ">" => Cmp::Gt,
            ">=" => Cmp::Ge,
            "<" => Cmp::Lt,
            "<=" => Cmp::Le,
            "==" => Cmp::Eq,
            _ => Cmp::Ne,
        };
        if let Some(o) = self.peek_op(&[">", ">=", "<", "<=", "==", "!="]) {
            let (c, _) = self.found();
            return Err(syntax(
                c,
                "'&&', '||' or ')' (comparisons do not chain)",
                &format!("'{o}'"),
            ));
        }
        Ok((Expr::Cmp(op, Box::new(left), Box::new(right)), col))
    }

    fn arith(&mut self, ops: &[&'static str], next: fn(&mut Self) -> Parsed) -> Parsed {
        let (mut left, col) = next(self)?;
        while let Some(op) = self.peek_op(ops) {
            self.expect_type(&left, col, Type::Num, &format!("before '{op}'"))?;
            self.at += 1;
            let (right, rcol) = next(self)?;
            self.expect_type(&right, rcol, Type::Num, &format!("after '{op}'"))?;
            let op = match op {
                "+" => Arith::Add,
                "-" => Arith::Sub,
                "*" => Arith::Mul,
                _ => Arith::Div,
            };
            left = Expr::Arith(op, Box::new(left), Box::new(right));
        }
        Ok((left, col))
    }

    fn sum(&mut self) -> Parsed {
        self.arith(&["+", "-"], Self::product)
    }

    fn product(&mut self) -> Parsed {
        self.arith(&["*", "/"], Self::unary)
    }

    fn unary(&mut self) -> Parsed {
        if self.peek_op(&["-"]).is_some() {
            let col = self.found().0;
            self.at += 1;
            self.deeper()?;
            let (e, ecol) = self.unary()?;
            self.depth -= 1;
            self.expect_type(&e, ecol, Type::Num, "after '-'")?;
            return Ok((Expr::Neg(Box::new(e)), col));
        }
        self.atom()
    }

    fn atom(&mut self) -> Parsed {
        let (col, found) = self.found();
        let expected = "a number, a variable or '('";
        let Some(tok) = self.peek().map(|t| t.tok.clone()) else {
            return Err(syntax(col, expected, &found));
        };
        match tok {
            Tok::Num(n) => {
                self.at += 1;
                let mut value = n;
                if let Some(Tok::Ident(u)) = self.peek().map(|t| &t.tok) {
                    match unit(u) {
                        Some(m) => {
                            value *= m;
                            self.at += 1;
                        }
                        None => {
                            let (c, f) = self.found();
                            return Err(syntax(
                                c,
                                "a unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB) or an operator",
                                &f,
                            ));
                        }
                    }
                }
                Ok((Expr::Num(value), col))
            }
            Tok::Ident(name) => {
                let Some((_, v)) = Var::ALL.iter().find(|(n, _)| *n == name) else {
                    return Err(syntax(
                        col,
                        "a variable (dbSize, dbSizeInUse, dbSizeFree, dbQuota, dbQuotaUsage)",
                        &found,
                    ));
                };
                self.at += 1;
                Ok((Expr::Var(*v), col))
            }
            Tok::Open => {
                self.at += 1;
                self.deeper()?;
                let (e, _) = self.or()?;
                self.depth -= 1;
                if self.peek().map(|t| &t.tok) != Some(&Tok::Close) {
                    let (c, f) = self.found();
                    return Err(syntax(c, "')'", &f));
                }
                self.at += 1;
                Ok((e, col))
            }
            Tok::Close | Tok::Op(_) => Err(syntax(col, expected, &found)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn facts(size: u64, in_use: u64, quota: Option<u64>) -> Facts {
        Facts {
            db_size: size,
            db_size_in_use: in_use,
            db_quota: quota,
        }
    }

    fn eval(rule: &str, f: Facts) -> bool {
        Rule::parse(rule)
            .unwrap_or_else(|e| panic!("{rule}: {e}"))
            .evaluate(&f)
            .unwrap_or_else(|e| panic!("{rule}: {e}"))
    }

    fn err(rule: &str) -> String {
        Rule::parse(rule).expect_err(rule).to_string()
    }

    #[test]
    fn the_etcd_defrag_examples() {
        let quota = Some(1000 * MIB);
        let rule = "dbQuotaUsage > 0.8 || dbSizeFree > 200MiB";
        assert!(eval(rule, facts(900 * MIB, 890 * MIB, quota)));
        assert!(eval(rule, facts(300 * MIB, 50 * MIB, quota)));
        assert!(!eval(rule, facts(300 * MIB, 200 * MIB, quota)));
        // etcd-defrag's own spelling, with arithmetic.
        assert!(eval(
            "dbQuotaUsage > 0.8 || dbSizeFree > 200*1024*1024",
            facts(300 * MIB, 50 * MIB, quota)
        ));
    }

    #[test]
    fn units() {
        let f = facts(2048, 0, None);
        assert!(eval("dbSize == 2KiB", f));
        assert!(eval("dbSize == 2048B", f));
        assert!(eval("dbSize == 2048", f));
        assert!(eval("dbSize > 2KB", f));
        assert!(eval("dbSize == 2 KiB", f));
        assert!(eval(
            "1MiB == 1048576 && 1MB == 1000000 && 1GiB == 1024MiB",
            f
        ));
        assert!(eval("1GB == 1000MB && 0.5KiB == 512", f));
        assert!(err("dbSize > 2mb").contains("a unit"));
    }

    #[test]
    fn precedence() {
        let f = facts(10, 4, Some(100));
        // && binds tighter than ||.
        assert!(eval("dbSize == 10 || dbSize == 1 && dbSize == 2", f));
        assert!(!eval("(dbSize == 10 || dbSize == 1) && dbSize == 2", f));
        // ! binds tighter than &&.
        assert!(eval("!dbSize == 1 && dbSize == 10", f));
        assert!(eval("!(dbSize == 10 && dbSize == 1)", f));
        assert!(eval("!!(dbSize == 10)", f));
        // * before +, and left to right.
        assert!(eval("dbSize == 2 + 2 * 4", f));
        assert!(eval("dbSize - 4 - 2 == 4", f));
        assert!(eval("dbSize / 5 / 2 == 1", f));
        assert!(eval("-dbSize == -10 && dbSizeFree == 6", f));
        assert!(eval("dbQuotaUsage == 0.1 && dbQuota == 100", f));
    }

    #[test]
    fn a_rule_that_needs_the_quota_says_so_when_it_is_unknown() {
        let r = Rule::parse("dbQuotaUsage > 0.5").expect("parses");
        assert_eq!(
            r.evaluate(&facts(1, 1, None)),
            Err(EvalError::QuotaUnknown("dbQuotaUsage"))
        );
        // Short-circuit: the quota is not needed when the left side decides.
        let r = Rule::parse("dbSize > 0 || dbQuota > 1").expect("parses");
        assert_eq!(r.evaluate(&facts(1, 1, None)), Ok(true));
    }

    #[test]
    fn errors_name_the_column_and_what_was_expected() {
        assert_eq!(
            err("dbSize >"),
            "at column 9: expected a number, a variable or '(', found the end of the rule"
        );
        assert_eq!(
            err("dbSize > 1 |"),
            "at column 12: expected an operator, a number or a variable, found '|'"
        );
        assert!(err("dbsize > 1").starts_with("at column 1: expected a variable (dbSize"));
        assert!(err("dbSize = 1").contains("'=='"));
        assert!(err("(dbSize > 1").contains("at column 12: expected ')'"));
        assert!(err("dbSize > 1)").starts_with("at column 11: expected an operator or the end"));
        assert!(err("dbSize").contains("expected a comparison"));
        assert!(err("dbSize > 1 && 2").contains("at column 15: expected a comparison after '&&'"));
        assert!(err("(dbSize > 1) > 2").contains("expected a number before '>'"));
        assert!(err("1 < dbSize < 3").contains("do not chain"));
        assert!(err("!dbSize").contains("after '!'"));
        assert_eq!(err("   "), "the rule is empty");
    }

    #[test]
    fn input_is_bounded() {
        assert_eq!(
            err(&"x".repeat(MAX_LEN + 1)),
            "the rule is longer than 1024 bytes"
        );
        let deep = format!("{}dbSize > 1{}", "(".repeat(100), ")".repeat(100));
        assert_eq!(
            err(&deep),
            format!("the rule nests deeper than {MAX_DEPTH} levels")
        );
        assert_eq!(
            err(&format!("{}(dbSize > 1)", "!".repeat(100))),
            format!("the rule nests deeper than {MAX_DEPTH} levels")
        );
        assert!(Rule::parse(&format!("{}dbSize > 1{}", "(".repeat(10), ")".repeat(10))).is_ok());
    }

    #[test]
    fn display_gives_the_text_back() {
        let r: Rule = " dbSizeFree > 1GiB ".parse().expect("parses");
        assert_eq!(r.to_string(), "dbSizeFree > 1GiB");
    }
}
