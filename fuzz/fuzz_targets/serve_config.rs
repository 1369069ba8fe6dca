//! The `serve` configuration file, parsed and validated as `permsync serve` does it:
//! `FileConfig::parse`, `resolve` into the server's settings, then the token
//! verifier built from them (which checks the issuers' keys and URLs), on arbitrary
//! text. A file that does not parse is refused with a one-line report; one
//! that resolves yields settings within every documented range.
//!
//! An issuer's `public_key_pem_file` names a file to read: here it is pointed at
//! one of the test PEM files (public keys, a private key, a certificate), chosen by
//! the path given, so no input reads an arbitrary file of this machine.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use permsync_auth::{generate_ed25519, IssuerKey, KeyMaterial, Tokens};
use permsync_config::{resolve, FileConfig, Overrides, DEFAULT_ADDR, DEFAULT_DB};

const PEM_FILES: [&str; 6] = [
    "rsa_public.pem",
    "rsa_public_pkcs1.pem",
    "ec_p384_public.pem",
    "ed25519_public.pem",
    "rsa_private.pem",
    "rsa_cert.pem",
];

fn own_key() -> KeyMaterial {
    static KEY: OnceLock<KeyMaterial> = OnceLock::new();
    KEY.get_or_init(generate_ed25519).clone()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut file = match FileConfig::parse(text) {
        Ok(file) => file,
        Err(e) => {
            // An operator reads this to fix the file: one line that says something.
            let report = e.to_string();
            assert!(
                !report.trim().is_empty() && !report.contains('\n'),
                "{report:?}"
            );
            return;
        }
    };
    let secrets: Vec<Option<usize>> = file
        .issuers
        .iter()
        .map(|i| i.hs256_secret.as_ref().map(String::len))
        .collect();
    for issuer in &mut file.issuers {
        if let Some(path) = &mut issuer.public_key_pem_file {
            let pick = PEM_FILES[path.as_os_str().len() % PEM_FILES.len()];
            *path = PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../crates/auth/tests/fixtures"
            ))
            .join(pick);
        }
    }
    let access_ttl = file.access_token_ttl;
    let (addr, db) = (file.addr.clone(), file.db.clone());
    let Ok(resolved) = resolve(file, Overrides::default()) else {
        return;
    };
    let server = &resolved.server;
    let ttl = server.access_token_ttl;
    assert!(
        Duration::from_secs(10) <= ttl && ttl <= Duration::from_secs(86_400),
        "{ttl:?}"
    );
    if access_ttl.is_none() {
        assert_eq!(ttl, Duration::from_secs(300));
    }
    assert!(server.refresh_token_ttl >= Duration::from_secs(60));
    let keepalive = server.stream_keepalive;
    assert!(Duration::from_secs(1) <= keepalive && keepalive <= Duration::from_secs(15));
    let ping = server.ws_ping_interval;
    assert!(Duration::from_secs(1) <= ping && ping <= Duration::from_secs(60));
    assert!((1..=1024).contains(&server.max_streams_per_user));
    assert_eq!(server.external_issuers.len(), secrets.len());
    for (issuer, secret) in server.external_issuers.iter().zip(&secrets) {
        match &issuer.key {
            IssuerKey::Hs256Secret(s) => {
                assert!(s.len() >= 32);
                assert_eq!(Some(s.len()), *secret);
            }
            IssuerKey::PublicKeyPem(_) | IssuerKey::JwksUrl(_) => assert_eq!(*secret, None),
        }
    }
    assert_eq!(resolved.addr, addr.as_deref().unwrap_or(DEFAULT_ADDR));
    assert_eq!(resolved.db, db.as_deref().unwrap_or(DEFAULT_DB));

    // What `AppState::open` does next with the issuers: every key and URL is
    // checked, and a bad one is an error naming its issuer, never a panic.
    let _ = Tokens::new(
        vec![own_key()],
        server.issuer.clone(),
        server.audience.clone(),
        server.external_issuers.clone(),
    );
});
