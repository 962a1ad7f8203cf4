//! Docker's IDs as people read them: 12 hex characters without the `sha256:` prefix, as
//! `docker ps` and `docker images` print them.

/// The short form of a container or image ID.
pub fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_shortened_like_docker_does() {
        assert_eq!(short("sha256:0123456789abcdef0123"), "0123456789ab");
        assert_eq!(short("0123456789abcdef"), "0123456789ab");
        assert_eq!(short("abc"), "abc");
    }
}
