//! Argon2id password hashing in PHC string format.
//!
//! The `_in` variants compute in caller-owned [`HashMemory`], so a server that
//! bounds how many hashes run at once can also keep exactly that many work areas
//! and reuse them. Allocating a fresh 19 MiB area per hash, as the crate's own
//! entry points do, lets the allocator keep the freed areas of every thread that
//! ever hashed: a login storm left the process holding hundreds of megabytes
//! long after it had passed.

use std::sync::OnceLock;

use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::rngs::OsRng;
use rand::RngCore;

/// The work area of one Argon2 computation (19 MiB at the default parameters),
/// grown on first use and reused after.
#[derive(Default)]
pub struct HashMemory {
    blocks: Vec<Block>,
}

impl HashMemory {
    pub fn new() -> Self {
        Self::default()
    }

    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.blocks.len() < count {
            self.blocks.resize(count, Block::new());
        }
        &mut self.blocks[..count]
    }
}

/// Hashes `pw` with Argon2id and a fresh 16-byte salt, returning a PHC string such as
/// `$argon2id$v=19$m=19456,t=2,p=1$…`.
///
/// The parameters are the `argon2` crate defaults (m = 19 MiB, t = 2, p = 1), the
/// OWASP baseline; they are recorded in the string, so raising them later leaves old
/// hashes verifiable.
///
/// # Panics
/// Only for a password longer than 4 GiB, which Argon2 cannot take; callers bound
/// request bodies far below that.
pub fn hash_password(pw: &str) -> String {
    hash_password_in(pw, &mut HashMemory::new())
}

/// [`hash_password`], computed in `memory`.
///
/// # Panics
/// As [`hash_password`].
pub fn hash_password_in(pw: &str, memory: &mut HashMemory) -> String {
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes are a valid salt length");
    let argon = Argon2::default();
    let output = compute(&argon, pw.as_bytes(), salt.as_salt(), memory)
        .expect("Argon2id with default parameters hashes any password under 4 GiB");
    PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::default().into()),
        params: ParamsString::try_from(argon.params())
            .expect("the default parameters encode as a PHC string"),
        salt: Some(salt.as_salt()),
        hash: Some(output),
    }
    .to_string()
}

/// Checks `pw` against a stored PHC hash; `None` means the user does not exist.
///
/// Without a hash (or with an unparsable one) this still runs one full Argon2id
/// verification against a fixed dummy hash and answers `false`, so an unknown user
/// takes about as long as a wrong password and the timing does not reveal which
/// usernames exist.
pub fn verify_password(hash: Option<&str>, pw: &str) -> bool {
    verify_password_in(hash, pw, &mut HashMemory::new())
}

/// [`verify_password`], computed in `memory`.
pub fn verify_password_in(hash: Option<&str>, pw: &str, memory: &mut HashMemory) -> bool {
    match hash.and_then(|h| PasswordHash::new(h).ok()) {
        Some(parsed) => matches(&parsed, pw, memory),
        None => {
            if let Ok(dummy) = PasswordHash::new(dummy_hash()) {
                // The outcome is irrelevant; only the work is wanted.
                let _ = matches(&dummy, pw, memory);
            }
            false
        }
    }
}

/// Recomputes `hash` for `pw` with the hash's own algorithm, version, parameters
/// and salt; the outputs are compared in constant time ([`Output`]'s equality).
fn matches(hash: &PasswordHash<'_>, pw: &str, memory: &mut HashMemory) -> bool {
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(hash) else {
        return false;
    };
    let argon = Argon2::new(algorithm, version, params);
    compute(&argon, pw.as_bytes(), salt, memory).is_ok_and(|computed| computed == expected)
}

fn compute(
    argon: &Argon2<'_>,
    pw: &[u8],
    salt: Salt<'_>,
    memory: &mut HashMemory,
) -> Result<Output, argon2::password_hash::Error> {
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
    let len = argon
        .params()
        .output_len()
        .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let blocks = memory.blocks(argon.params().block_count());
    Output::init_with(len, |out| {
        Ok(argon.hash_password_into_with_memory(pw, salt_bytes, out, &mut *blocks)?)
    })
}

/// A hash of a random password, made once with the same parameters as real hashes so
/// the dummy verification costs the same.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&crate::random_token()))
}
