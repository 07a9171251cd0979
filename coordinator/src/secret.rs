//! Secrets: comparing them without leaking where they differ, and making new ones.

/// Whether `given` equals `expected`, in time that depends on their lengths only. An empty
/// `expected` matches nothing (an attempt recorded without a token can never be claimed).
pub fn secrets_match(given: &str, expected: &str) -> bool {
    // both sides compared in full, the emptiness check included
    let equal = lehr_schedules::job::constant_time_eq(given.as_bytes(), expected.as_bytes());
    equal & !expected.is_empty()
}

/// 128 random bits (rand's thread generator: ChaCha12 seeded from the OS), as 32 hex digits.
pub fn new_secret() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A secret for `purpose` derived from `from` (sha256, hex): knowing it reveals nothing of
/// `from`, and the same `from` always gives the same secret (so every rank of a gang
/// generation gets one secret, even across a coordinator restart).
pub fn derive_secret(from: &str, purpose: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"lehr-derived-secret\0");
    h.update(purpose.as_bytes());
    h.update(b"\0");
    h.update(from.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly() {
        assert!(secrets_match("s3cret", "s3cret"));
        assert!(!secrets_match("s3cre", "s3cret"));
        assert!(!secrets_match("s3cret!", "s3cret"));
        assert!(!secrets_match("", "s3cret"));
        assert!(!secrets_match("", ""));
        assert!(!secrets_match("S3cret", "s3cret"));
        // lengths that differ by a multiple of 256
        assert!(!secrets_match(&"a".repeat(262), "aaaaaa"));
        let (a, b) = (new_secret(), new_secret());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
