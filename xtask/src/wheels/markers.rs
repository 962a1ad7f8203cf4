//! PEP 508 environment markers, evaluated for the image rather than for the host.
//!
//! `poetry.lock` records when each package is needed as a marker (`sys_platform == "win32"`,
//! `python_full_version < "3.11.3"`, `extra == "s3"`). pip would judge them against the
//! interpreter it runs in, which is the host's; the image's interpreter is another one, so
//! the markers are parsed here and evaluated against a [`MarkerEnvironment`] that describes
//! the image. Grammar and semantics: https://peps.python.org/pep-0508/#environment-markers
//! and https://packaging.python.org/en/latest/specifications/dependency-specifiers/.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};

/// The values PEP 508's marker variables take in one environment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MarkerEnvironment {
    pub os_name: String,
    pub sys_platform: String,
    pub platform_machine: String,
    pub platform_python_implementation: String,
    pub platform_release: String,
    pub platform_system: String,
    pub platform_version: String,
    pub python_version: String,
    pub python_full_version: String,
    pub implementation_name: String,
    pub implementation_version: String,
    /// The root project's extras that are switched on (`extra == "name"` is true for these).
    #[serde(default)]
    pub extras: BTreeSet<String>,
}

impl MarkerEnvironment {
    fn value(&self, variable: &str) -> Option<&str> {
        Some(match variable {
            "os_name" => &self.os_name,
            "sys_platform" => &self.sys_platform,
            "platform_machine" => &self.platform_machine,
            "platform_python_implementation" => &self.platform_python_implementation,
            "platform_release" => &self.platform_release,
            "platform_system" => &self.platform_system,
            "platform_version" => &self.platform_version,
            "python_version" => &self.python_version,
            "python_full_version" => &self.python_full_version,
            "implementation_name" => &self.implementation_name,
            "implementation_version" => &self.implementation_version,
            _ => return None,
        })
    }
}

/// Whether `marker` holds in `environment`. An empty marker always holds.
pub fn evaluate(marker: &str, environment: &MarkerEnvironment) -> Result<bool> {
    let tokens = tokenize(marker).with_context(|| format!("reading the marker `{marker}`"))?;
    if tokens.is_empty() {
        return Ok(true);
    }
    let mut parser = Parser {
        tokens: &tokens,
        at: 0,
        environment,
    };
    let value = parser
        .or()
        .with_context(|| format!("reading the marker `{marker}`"))?;
    if parser.at != tokens.len() {
        bail!("the marker `{marker}` has unexpected text after its end");
    }
    Ok(value)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Variable(String),
    Literal(String),
    Operator(Operator),
    And,
    Or,
    Open,
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Operator {
    Equal,
    NotEqual,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
    Compatible,
    Arbitrary,
    In,
    NotIn,
}

fn tokenize(text: &str) -> Result<Vec<Token>> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < chars.len() {
        let c = chars[at];
        if c.is_whitespace() {
            at += 1;
        } else if c == '(' || c == ')' {
            tokens.push(if c == '(' { Token::Open } else { Token::Close });
            at += 1;
        } else if c == '"' || c == '\'' {
            let end = chars[at + 1..]
                .iter()
                .position(|&d| d == c)
                .context("a quoted string is not closed")?;
            tokens.push(Token::Literal(chars[at + 1..at + 1 + end].iter().collect()));
            at += end + 2;
        } else if "=!<>~".contains(c) {
            let mut end = at;
            while end < chars.len() && "=!<>~".contains(chars[end]) {
                end += 1;
            }
            let operator: String = chars[at..end].iter().collect();
            tokens.push(Token::Operator(match operator.as_str() {
                "==" => Operator::Equal,
                "!=" => Operator::NotEqual,
                "<" => Operator::Less,
                "<=" => Operator::LessEqual,
                ">" => Operator::Greater,
                ">=" => Operator::GreaterEqual,
                "~=" => Operator::Compatible,
                "===" => Operator::Arbitrary,
                other => bail!("unknown operator `{other}`"),
            }));
            at = end;
        } else if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            let mut end = at;
            while end < chars.len()
                && (chars[end].is_ascii_alphanumeric() || "_.".contains(chars[end]))
            {
                end += 1;
            }
            let word: String = chars[at..end].iter().collect();
            at = end;
            match word.as_str() {
                "and" => tokens.push(Token::And),
                "or" => tokens.push(Token::Or),
                "in" => tokens.push(Token::Operator(Operator::In)),
                "not" => {
                    // `not in` is the only use of `not` in the grammar.
                    match tokenize(&chars[at..].iter().collect::<String>())?.first() {
                        Some(Token::Operator(Operator::In)) => {
                            while chars[at].is_whitespace() {
                                at += 1;
                            }
                            at += 2;
                            tokens.push(Token::Operator(Operator::NotIn));
                        }
                        _ => bail!("`not` must be followed by `in`"),
                    }
                }
                // `os.name` and friends are the old spellings PEP 345 used.
                _ => tokens.push(Token::Variable(word.replace('.', "_"))),
            }
        } else {
            bail!("unexpected character `{c}`");
        }
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: &'a [Token],
    at: usize,
    environment: &'a MarkerEnvironment,
}

impl Parser<'_> {
    fn or(&mut self) -> Result<bool> {
        let mut value = self.and()?;
        while self.tokens.get(self.at) == Some(&Token::Or) {
            self.at += 1;
            // Both sides are parsed: a syntax error is an error whatever the left side said.
            let right = self.and()?;
            value = value || right;
        }
        Ok(value)
    }

    fn and(&mut self) -> Result<bool> {
        let mut value = self.expression()?;
        while self.tokens.get(self.at) == Some(&Token::And) {
            self.at += 1;
            let right = self.expression()?;
            value = value && right;
        }
        Ok(value)
    }

    fn expression(&mut self) -> Result<bool> {
        if self.tokens.get(self.at) == Some(&Token::Open) {
            self.at += 1;
            let value = self.or()?;
            if self.tokens.get(self.at) != Some(&Token::Close) {
                bail!("a parenthesis is not closed");
            }
            self.at += 1;
            return Ok(value);
        }
        let left = self.operand()?;
        let Some(Token::Operator(operator)) = self.tokens.get(self.at).cloned() else {
            bail!("expected an operator after {left:?}");
        };
        self.at += 1;
        let right = self.operand()?;
        self.compare(&left, operator, &right)
    }

    fn operand(&mut self) -> Result<Token> {
        match self.tokens.get(self.at) {
            Some(token @ (Token::Variable(_) | Token::Literal(_))) => {
                self.at += 1;
                Ok(token.clone())
            }
            other => bail!("expected a variable or a quoted string, found {other:?}"),
        }
    }

    fn compare(&self, left: &Token, operator: Operator, right: &Token) -> Result<bool> {
        // `extra` compares against a set: the root project's extras that are on.
        if let (Token::Variable(variable), Token::Literal(name)) = (left, right) {
            if variable == "extra" {
                let on = self.environment.extras.contains(&normalize_name(name));
                return match operator {
                    Operator::Equal => Ok(on),
                    Operator::NotEqual => Ok(!on),
                    _ => bail!("`extra` is only compared with == and !="),
                };
            }
        }
        let resolve = |token: &Token| -> Result<(String, bool)> {
            match token {
                Token::Literal(text) => Ok((text.clone(), false)),
                Token::Variable(name) => match self.environment.value(name) {
                    Some(value) => Ok((value.to_string(), is_version_variable(name))),
                    None => bail!("unknown marker variable `{name}`"),
                },
                _ => bail!("expected a value"),
            }
        };
        let (left, left_is_version) = resolve(left)?;
        let (right, right_is_version) = resolve(right)?;
        Ok(match operator {
            Operator::In => right.contains(&left),
            Operator::NotIn => !right.contains(&left),
            Operator::Arbitrary => left == right,
            _ if left_is_version || right_is_version => {
                version_compare(&left, operator, &right).unwrap_or_else(|| {
                    // PEP 508: when a side is no valid version, fall back to Python's string
                    // comparison, for which only == and != are meaningful.
                    match operator {
                        Operator::Equal => left == right,
                        Operator::NotEqual => left != right,
                        _ => false,
                    }
                })
            }
            Operator::Equal => left == right,
            Operator::NotEqual => left != right,
            Operator::Less => left < right,
            Operator::LessEqual => left <= right,
            Operator::Greater => left > right,
            Operator::GreaterEqual => left >= right,
            Operator::Compatible => false,
        })
    }
}

fn is_version_variable(name: &str) -> bool {
    matches!(
        name,
        "python_version" | "python_full_version" | "implementation_version"
    )
}

/// PEP 503 name normalization: lowercase, runs of `-_.` become one `-`.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if "-_.".contains(c) {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// A PEP 440 version reduced to what marker values use: the release numbers, then an
/// optional pre-release (`a`, `b`, `rc`) that sorts before the release itself.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    release: Vec<u64>,
    /// `None` for a final release; pre-releases sort by (kind, number).
    pre: Option<(u8, u64)>,
}

impl Version {
    fn parse(text: &str) -> Option<Version> {
        let text = text.trim().trim_start_matches('v');
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (numbers, rest) = text.split_at(split);
        let release = numbers
            .trim_end_matches('.')
            .split('.')
            .map(|part| part.parse().ok())
            .collect::<Option<Vec<u64>>>()?;
        let pre = match rest {
            "" => None,
            rest => {
                let rest = rest.trim_start_matches(['.', '-', '_']);
                let (kind, number) = [("rc", 2), ("c", 2), ("b", 1), ("a", 0)]
                    .iter()
                    .find_map(|(word, kind)| rest.strip_prefix(word).map(|n| (*kind, n)))?;
                Some((kind, number.parse().unwrap_or(0)))
            }
        };
        Some(Version { release, pre })
    }

    fn cmp_release(&self, other: &Version, length: usize) -> Ordering {
        for i in 0..length {
            let a = self.release.get(i).copied().unwrap_or(0);
            let b = other.release.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => continue,
                unequal => return unequal,
            }
        }
        Ordering::Equal
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Version) -> Ordering {
        let length = self.release.len().max(other.release.len());
        self.cmp_release(other, length)
            .then_with(|| match (self.pre, other.pre) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(&b),
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// `left <operator> right` as PEP 440 versions; `None` when either side is not one.
fn version_compare(left: &str, operator: Operator, right: &str) -> Option<bool> {
    // `== "3.*"`: a prefix match on the release numbers.
    if let Some(prefix) = right.strip_suffix(".*") {
        let (left, prefix) = (Version::parse(left)?, Version::parse(prefix)?);
        let matches = left.cmp_release(&prefix, prefix.release.len()) == Ordering::Equal;
        return match operator {
            Operator::Equal => Some(matches),
            Operator::NotEqual => Some(!matches),
            _ => None,
        };
    }
    let (a, b) = (Version::parse(left)?, Version::parse(right)?);
    Some(match operator {
        Operator::Equal => a == b,
        Operator::NotEqual => a != b,
        Operator::Less => a < b,
        Operator::LessEqual => a <= b,
        Operator::Greater => a > b,
        Operator::GreaterEqual => a >= b,
        // `~= 3.11` means `>= 3.11, == 3.*`: all but the last release number must match.
        Operator::Compatible => {
            let prefix = b.release.len().saturating_sub(1).max(1);
            a >= b && a.cmp_release(&b, prefix) == Ordering::Equal
        }
        Operator::Arbitrary | Operator::In | Operator::NotIn => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The image: Debian bookworm's CPython 3.11.2 on amd64.
    fn bookworm() -> MarkerEnvironment {
        MarkerEnvironment {
            os_name: "posix".into(),
            sys_platform: "linux".into(),
            platform_machine: "x86_64".into(),
            platform_python_implementation: "CPython".into(),
            platform_release: "6.1.0".into(),
            platform_system: "Linux".into(),
            platform_version: "#1 SMP".into(),
            python_version: "3.11".into(),
            python_full_version: "3.11.2".into(),
            implementation_name: "cpython".into(),
            implementation_version: "3.11.2".into(),
            extras: BTreeSet::new(),
        }
    }

    fn holds(marker: &str) -> bool {
        evaluate(marker, &bookworm()).unwrap()
    }

    #[test]
    fn platform_markers_from_real_locks() {
        assert!(!holds(r#"sys_platform == "win32""#));
        assert!(!holds(r#"platform_system == "Windows""#));
        assert!(holds(r#"sys_platform != "emscripten""#));
        assert!(holds(r#"platform_python_implementation != "PyPy""#));
        assert!(holds(
            r#"platform_python_implementation != "PyPy" and implementation_name != "PyPy""#
        ));
        assert!(!holds(r#"platform_machine == "aarch64""#));
        assert!(holds(
            r#"os_name == "posix" and (sys_platform == "linux" or sys_platform == "darwin")"#
        ));
        assert!(holds("'linux' in sys_platform"));
        assert!(!holds("'win' in sys_platform"));
        assert!(holds("'win' not in sys_platform"));
        assert!(holds("os.name == 'posix'"));
        assert!(holds(""));
    }

    #[test]
    fn python_versions_compare_as_versions() {
        // async-timeout in the realistic lock: needed on 3.11.2, not on 3.11.3 and later.
        assert!(holds(r#"python_full_version < "3.11.3""#));
        assert!(holds(r#"python_version >= "3.9""#));
        // As strings "3.11" < "3.9"; as versions it is not.
        assert!(!holds(r#"python_version < "3.9""#));
        assert!(holds(r#"python_version == "3.11""#));
        assert!(holds(r#"python_version == "3.*""#));
        assert!(holds(
            r#"python_full_version != "3.11.*" or python_version < "4""#
        ));
        assert!(!holds(r#"python_full_version != "3.11.*""#));
        assert!(holds(r#"python_version ~= "3.10""#));
        assert!(!holds(r#"python_full_version ~= "3.11.3""#));
        assert!(holds(r#"python_full_version >= "3.11.0rc1""#));
        assert!(!holds(
            r#"python_version < "3.11" and sys_platform == "linux""#
        ));
        assert!(holds(r#""3.12" > python_version"#));
    }

    #[test]
    fn extras_are_the_root_projects() {
        let mut environment = bookworm();
        assert!(!evaluate(r#"extra == "s3""#, &environment).unwrap());
        assert!(evaluate(r#"extra != "s3""#, &environment).unwrap());
        environment.extras.insert("s3".into());
        assert!(evaluate(r#"extra == "S3""#, &environment).unwrap());
        assert!(evaluate(r#"extra == "s3" and python_version >= "3.8""#, &environment).unwrap());
    }

    #[test]
    fn bad_markers_are_errors_that_quote_them() {
        for bad in [
            r#"sys_platform = "linux""#,
            r#"sys_platform == "linux"#,
            r#"(sys_platform == "linux""#,
            r#"unknown_variable == "x""#,
            r#"sys_platform == "linux" and"#,
        ] {
            let err = evaluate(bad, &bookworm()).unwrap_err();
            assert!(format!("{err:#}").contains(bad), "{err:#}");
        }
    }

    #[test]
    fn names_normalize_like_pep_503() {
        assert_eq!(normalize_name("Python_Multipart"), "python-multipart");
        assert_eq!(normalize_name("zope.interface"), "zope-interface");
        assert_eq!(normalize_name("a__-b"), "a-b");
    }
}
