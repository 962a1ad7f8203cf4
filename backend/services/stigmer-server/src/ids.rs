//! Identifiers handed out by the server: the prefix `exec-` followed by 26 random
//! lowercase alphanumerics drawn from the operating system's random source, so that IDs are
//! unguessable and never collide in practice (26 symbols of base 36 carry about 134 bits).

use anyhow::{Context, Result};

const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const RANDOM_SYMBOLS: usize = 26;

pub fn execution_id() -> Result<String> {
    random_id("exec-")
}

fn random_id(prefix: &str) -> Result<String> {
    let mut id = String::with_capacity(prefix.len() + RANDOM_SYMBOLS);
    id.push_str(prefix);
    let mut symbols = 0;
    while symbols < RANDOM_SYMBOLS {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).context("read the operating system's random source")?;
        // Rejection sampling: 252 is the largest multiple of 36 below 256, so every symbol
        // is equally likely.
        for byte in bytes.into_iter().filter(|byte| *byte < 252) {
            if symbols == RANDOM_SYMBOLS {
                break;
            }
            id.push(char::from(ALPHABET[usize::from(byte % 36)]));
            symbols += 1;
        }
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_documented_shape() -> Result<()> {
        let id = execution_id()?;
        let suffix = id.strip_prefix("exec-").context("prefix")?;
        assert_eq!(suffix.len(), 26);
        assert!(suffix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert_ne!(execution_id()?, execution_id()?);
        Ok(())
    }
}
