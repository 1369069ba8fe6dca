//! `UserId::parse` and `RoleName::parse` on arbitrary text: each accepts exactly its
//! character set and length (user `[A-Za-z0-9_.@+-]{1,128}`, role `[a-z0-9_-]{1,64}`),
//! prints back unchanged, and every role name is also a valid user id.

#![no_main]

use libfuzzer_sys::fuzz_target;
use permsync_core::{RoleName, UserId};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let user_ok = (1..=128).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.@+-".contains(c));
    let role_ok = (1..=64).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c));
    match UserId::parse(&text) {
        Ok(user) => {
            assert!(user_ok, "accepted user {text:?}");
            assert_eq!(user.as_str(), text);
            assert_eq!(user.to_string(), text);
        }
        Err(e) => {
            assert!(!user_ok, "refused user {text:?}: {e}");
            assert!(e.value.chars().count() <= 140);
        }
    }
    match RoleName::parse(&text) {
        Ok(role) => {
            assert!(role_ok, "accepted role {text:?}");
            assert_eq!(role.as_str(), text);
            assert!(UserId::parse(role.as_str()).is_ok());
        }
        Err(e) => {
            assert!(!role_ok, "refused role {text:?}: {e}");
            assert!(e.value.chars().count() <= 140);
        }
    }
});
