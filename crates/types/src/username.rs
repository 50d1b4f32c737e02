//! Usernames: the only account identifier. No phone number, no e-mail.

use std::fmt;

/// Shortest allowed username, in characters.
pub const USERNAME_CHARS_MIN: usize = 3;
/// Longest allowed username, in characters.
pub const USERNAME_CHARS_MAX: usize = 32;

/// A validated username: lowercase `[a-z0-9_]`, 3 to 32 characters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Username(String);

/// Why a string is not a valid username.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// Fewer than [`USERNAME_CHARS_MIN`] or more than [`USERNAME_CHARS_MAX`] characters.
    #[error(
        "a username has {USERNAME_CHARS_MIN} to {USERNAME_CHARS_MAX} characters, this one has {0}"
    )]
    Length(usize),
    /// A character outside `[a-z0-9_]`.
    #[error("a username may only contain a-z, 0-9 and _ (found {0:?})")]
    Character(char),
}

impl Username {
    /// Validates `raw`. A leading `@` is accepted and dropped, so `@alice` and `alice` are equal.
    pub fn parse(raw: &str) -> Result<Self, UsernameError> {
        let name = raw.strip_prefix('@').unwrap_or(raw);
        let chars = name.chars().count();
        if !(USERNAME_CHARS_MIN..=USERNAME_CHARS_MAX).contains(&chars) {
            return Err(UsernameError::Length(chars));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
        {
            return Err(UsernameError::Character(bad));
        }
        Ok(Self(name.to_owned()))
    }

    /// The username without the `@`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names_and_strips_at() {
        assert_eq!(
            Username::parse("@alice_01").map(|u| u.0),
            Ok("alice_01".into())
        );
        assert!(Username::parse("abc").is_ok());
        assert!(Username::parse(&"a".repeat(32)).is_ok());
    }

    #[test]
    fn rejects_bad_length_and_characters() {
        assert_eq!(Username::parse("ab"), Err(UsernameError::Length(2)));
        assert_eq!(
            Username::parse(&"a".repeat(33)),
            Err(UsernameError::Length(33))
        );
        assert_eq!(Username::parse("Alice"), Err(UsernameError::Character('A')));
        assert_eq!(
            Username::parse("al-ice"),
            Err(UsernameError::Character('-'))
        );
        assert_eq!(Username::parse("alïce"), Err(UsernameError::Character('ï')));
    }
}
