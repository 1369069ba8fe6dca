//! User ids and role names: validated, cheaply clonable strings.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use crate::ParseError;

/// A user, identified by the JWT `sub`: `[A-Za-z0-9_.@+-]{1,128}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Arc<str>);

impl UserId {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() {
            return Err(ParseError::new("user", s, "must not be empty"));
        }
        if s.len() > 128 {
            return Err(ParseError::new("user", s, "longer than 128 characters"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'+' | b'-'))
        {
            return Err(ParseError::new(
                "user",
                s,
                "allowed characters are A-Z a-z 0-9 _ . @ + -",
            ));
        }
        Ok(UserId(Arc::from(s)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A role name: `[a-z0-9_-]{1,64}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleName(Arc<str>);

impl RoleName {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() {
            return Err(ParseError::new("role", s, "must not be empty"));
        }
        if s.len() > 64 {
            return Err(ParseError::new("role", s, "longer than 64 characters"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(ParseError::new(
                "role",
                s,
                "allowed characters are a-z 0-9 _ -",
            ));
        }
        Ok(RoleName(Arc::from(s)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_like {
    ($t:ty) => {
        impl Borrow<str> for $t {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
    };
}
string_like!(UserId);
string_like!(RoleName);
