//! Integration tests of permsync-auth: one binary, one module per concern, real keys.

mod common;
mod external;
mod fuzz;
mod jwks;
mod malformed;
mod opaque;
mod own_tokens;
mod passwords;
