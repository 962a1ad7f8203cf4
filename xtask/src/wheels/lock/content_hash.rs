//! Whether `poetry.lock` was made from the current `pyproject.toml`, decided as Poetry
//! decides it (`poetry check --lock`): the lock's `content-hash` against the hash of the
//! dependency-relevant parts of `pyproject.toml`, computed here exactly as Poetry computes it.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use stigmer_stack::runner::inputs::sha256_hex;

use super::parse::LockFile;

/// Fails, as `poetry check --lock` would, when `poetry.lock` was not made from the current
/// `pyproject.toml`: its `content-hash` must be the hash Poetry computes from the
/// dependency-relevant parts of `pyproject.toml`.
pub fn check_lock_is_fresh(runner_dir: &Path) -> Result<()> {
    let lock_path = runner_dir.join("poetry.lock");
    let lock_text = fs::read_to_string(&lock_path).with_context(|| {
        format!(
            "reading {}: run `poetry lock` in {}",
            lock_path.display(),
            runner_dir.display()
        )
    })?;
    let lock: LockFile = toml::from_str(&lock_text)
        .context("poetry.lock is not a valid Poetry lock file; regenerate it with `poetry lock`")?;
    let pyproject_path = runner_dir.join("pyproject.toml");
    let pyproject_text = fs::read_to_string(&pyproject_path)
        .with_context(|| format!("reading {}", pyproject_path.display()))?;
    let pyproject: toml::Value = toml::from_str(&pyproject_text)
        .with_context(|| format!("{} is not valid TOML", pyproject_path.display()))?;
    let expected = poetry_content_hash(&pyproject)?;
    match lock.metadata.content_hash {
        Some(found) if found == expected => Ok(()),
        Some(found) => bail!(
            "poetry.lock is out of date with pyproject.toml (its content-hash is {}…, pyproject.toml hashes to {}…): \
             run `poetry lock` in {}",
            &found[..found.len().min(12)],
            &expected[..12],
            runner_dir.display()
        ),
        None => bail!("poetry.lock has no content-hash: regenerate it with `poetry lock` in {}", runner_dir.display()),
    }
}

/// Poetry 2's `Locker._get_content_hash`: the SHA-256 of `json.dumps(relevant, sort_keys=True)`
/// over the dependency-relevant keys of `[project]`, `[dependency-groups]` and `[tool.poetry]`
/// (poetry/packages/locker.py, Poetry 2.3 and later).
pub fn poetry_content_hash(pyproject: &toml::Value) -> Result<String> {
    use toml::map::Map;
    use toml::Value;
    const LEGACY_KEYS: [&str; 4] = ["dependencies", "source", "extras", "dev-dependencies"];
    let table =
        |value: Option<&Value>| value.and_then(Value::as_table).cloned().unwrap_or_default();
    let project = table(pyproject.get("project"));
    let groups = table(pyproject.get("dependency-groups"));
    let tool_poetry = table(pyproject.get("tool").and_then(|tool| tool.get("poetry")));
    let mut relevant_project = Map::new();
    for key in ["requires-python", "dependencies", "optional-dependencies"] {
        if let Some(value) = project.get(key) {
            relevant_project.insert(key.to_string(), value.clone());
        }
    }
    // `None` stands for Python's null, which only legacy projects record.
    let mut relevant_poetry: Vec<(String, Result<Option<String>>)> = Vec::new();
    for key in LEGACY_KEYS.iter().chain(["group"].iter()) {
        match tool_poetry.get(*key) {
            Some(value) => relevant_poetry.push((key.to_string(), python_json(value).map(Some))),
            None if !LEGACY_KEYS.contains(key)
                || !relevant_project.is_empty()
                || !groups.is_empty() => {}
            None => relevant_poetry.push((key.to_string(), Ok(None))),
        }
    }
    let poetry_json = python_json_object(relevant_poetry.into_iter())?;
    let mut top: Vec<(String, Result<Option<String>>)> = Vec::new();
    if !relevant_project.is_empty() {
        top.push((
            "project".to_string(),
            python_json(&Value::Table(relevant_project)).map(Some),
        ));
    }
    if !groups.is_empty() {
        top.push((
            "dependency-groups".to_string(),
            python_json(&Value::Table(groups)).map(Some),
        ));
    }
    let text = if top.is_empty() {
        poetry_json
    } else {
        top.push((
            "tool".to_string(),
            Ok(Some(format!("{{\"poetry\": {poetry_json}}}"))),
        ));
        python_json_object(top.into_iter())?
    };
    Ok(sha256_hex(text.as_bytes()))
}

/// A JSON object the way Python's `json.dumps(..., sort_keys=True)` writes it.
fn python_json_object(
    entries: impl Iterator<Item = (String, Result<Option<String>>)>,
) -> Result<String> {
    let mut entries: Vec<(String, Option<String>)> = entries
        .map(|(k, v)| v.map(|v| (k, v)))
        .collect::<Result<_>>()?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let parts: Vec<String> = entries
        .into_iter()
        .map(|(key, value)| {
            format!(
                "{}: {}",
                python_json_string(&key),
                value.unwrap_or_else(|| "null".to_string())
            )
        })
        .collect();
    Ok(format!("{{{}}}", parts.join(", ")))
}

/// One TOML value as Python's `json.dumps` writes it: `", "` and `": "` separators, ASCII only.
fn python_json(value: &toml::Value) -> Result<String> {
    use toml::Value;
    Ok(match value {
        Value::String(text) => python_json_string(text),
        Value::Integer(number) => number.to_string(),
        Value::Boolean(flag) => if *flag { "true" } else { "false" }.to_string(),
        Value::Float(number) if number.fract() == 0.0 && number.is_finite() => format!("{number:.1}"),
        Value::Float(number) => number.to_string(),
        Value::Array(items) => format!("[{}]", items.iter().map(python_json).collect::<Result<Vec<_>>>()?.join(", ")),
        Value::Table(table) => python_json_object(table.iter().map(|(k, v)| (k.clone(), python_json(v).map(Some))))?,
        Value::Datetime(_) => bail!("pyproject.toml has a date among its dependency settings, which Poetry cannot hash either"),
    })
}

fn python_json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_matches_poetry_on_the_real_project() {
        let runner_dir = crate::project_root()
            .unwrap()
            .join("backend/services/agent-runner");
        check_lock_is_fresh(&runner_dir).unwrap();
    }

    #[test]
    fn content_hash_follows_dependencies_not_other_settings() {
        let base: toml::Value = toml::from_str(
            "[project]\nname = \"a\"\ndependencies = [\"x (>=1)\"]\n[tool.pytest]\nq = 1\n",
        )
        .unwrap();
        let renamed: toml::Value = toml::from_str(
            "[project]\nname = \"b\"\ndependencies = [\"x (>=1)\"]\n[tool.pytest]\nq = 2\n",
        )
        .unwrap();
        let bumped: toml::Value =
            toml::from_str("[project]\nname = \"a\"\ndependencies = [\"x (>=2)\"]\n").unwrap();
        assert_eq!(
            poetry_content_hash(&base).unwrap(),
            poetry_content_hash(&renamed).unwrap()
        );
        assert_ne!(
            poetry_content_hash(&base).unwrap(),
            poetry_content_hash(&bumped).unwrap()
        );
        // python3 -c 'import json,hashlib; print(hashlib.sha256(json.dumps({"project": {"dependencies": ["x (>=1)"]}, "tool": {"poetry": {}}}, sort_keys=True).encode()).hexdigest())'
        assert_eq!(
            poetry_content_hash(&base).unwrap(),
            "1eb4c6e5476320d67c8a29a1f9c648390748bde017eddda64e6c2e4a2e7abcb9"
        );
    }

    #[test]
    fn python_json_escapes_like_python() {
        assert_eq!(
            python_json_string("é\"\\\n😀"),
            "\"\\u00e9\\\"\\\\\\n\\ud83d\\ude00\""
        );
    }
}
