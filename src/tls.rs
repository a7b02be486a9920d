//! The one TLS crypto provider of the process.
//!
//! reqwest is built with `rustls-no-provider`, so rustls uses the process-wide default
//! provider, and we install ring's: building aws-lc-rs (reqwest's default) needs cmake and a C
//! toolchain and doubled the cold build. Every HTTPS client in the crate calls
//! [`install_crypto_provider`] before it is built; without a provider reqwest would panic.

/// Installs ring as rustls's process-wide crypto provider, once; later calls do nothing.
pub fn install_crypto_provider() {
    // An error only says a provider is installed already, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
