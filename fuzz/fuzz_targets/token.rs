//! The token verifier: nothing but a token signed with the key is a login,
//! and nothing panics, whatever arrives.
#![no_main]

use std::sync::{Arc, OnceLock};

use consumer_host::Authenticator;
use consumer_host::config::AuthConfig;
use libfuzzer_sys::fuzz_target;

fn authenticator() -> &'static Arc<Authenticator> {
    static AUTH: OnceLock<Arc<Authenticator>> = OnceLock::new();
    AUTH.get_or_init(|| {
        Authenticator::new(&AuthConfig {
            secret: Some("fuzzing-secret-of-at-least-32-bytes!".into()),
            ..AuthConfig::default()
        })
        .expect("a valid config")
    })
}

fuzz_target!(|token: &str| {
    assert!(
        authenticator().verify(token).is_err(),
        "{token:?} logged in"
    );
    // The same bytes as the parts of a JWT.
    let shaped = token.replacen('!', ".", 2);
    assert!(
        authenticator().verify(&shaped).is_err(),
        "{shaped:?} logged in"
    );
});
