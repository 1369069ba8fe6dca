//! Rebuilds the binary when the demo's built web apps change: `rust-embed` embeds
//! the files of `web/dist`, but cargo would not notice a file added or removed.
fn main() {
    println!("cargo:rerun-if-changed=../../web/dist");
}
