//! Token middleware: simplejwt access tokens in, a user (or none) out.
//!
//! A token is a login only if all of these hold: it is a JWS signed with the
//! shared secret by one of the configured algorithms (`alg: none` and every
//! algorithm not listed are refused before any key is used); `exp` is present
//! and in the future, `nbf` (when present) in the past, both within the
//! configured leeway (simplejwt's default: none); the token-type claim says
//! `access` (a refresh token is never a login); the user-id claim is present;
//! and the configured user query finds the user (it filters out inactive
//! users). The reasons stay in the server's logs and metrics: a client only
//! sees HTTP 403.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value as Json};

use crate::config::{AuthConfig, HmacAlgorithm};
use crate::db::{Database, DbError, Value};

/// The user a connection belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Primary key as stored (32 hex digits for a Django UUID key).
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// E-mail address.
    pub email: String,
}

/// A token that checked out.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The user-id claim, normalised (see [`Authenticator::verify`]).
    pub user_id: Value,
    /// When it stops being a login (seconds since the epoch, leeway included).
    pub expires: u64,
}

/// A login: the token checked out and the user exists and is active.
#[derive(Debug, Clone)]
pub struct Login {
    /// The user.
    pub user: User,
    /// The user-id claim, as the user query takes it.
    pub user_id: Value,
    /// When the token stops being a login (seconds since the epoch).
    pub expires: u64,
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Why a token is not a login. Logged and counted, never shown to a client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    /// Not three base64url parts with JSON inside.
    #[error("malformed token")]
    Malformed,
    /// `alg` is not one of the configured algorithms (or is `none`).
    #[error("algorithm not allowed")]
    Algorithm,
    /// The signature does not match the secret.
    #[error("bad signature")]
    Signature,
    /// `exp` is in the past.
    #[error("expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("not yet valid")]
    NotYetValid,
    /// A required claim is missing or mistyped.
    #[error("missing or invalid claim {0}")]
    Claim(String),
    /// The token type is not `access`.
    #[error("not an access token")]
    WrongType,
    /// The user does not exist or is inactive.
    #[error("unknown or inactive user")]
    UnknownUser,
    /// The user lookup failed.
    #[error("user lookup failed: {0}")]
    Lookup(DbError),
}

impl AuthError {
    /// Every label [`AuthError::label`] gives, and `missing` for no token.
    pub const LABELS: &[&str] = &[
        "missing",
        "malformed",
        "algorithm",
        "signature",
        "expired",
        "not_yet_valid",
        "claim",
        "token_type",
        "unknown_user",
        "lookup",
    ];

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Malformed => "malformed",
            AuthError::Algorithm => "algorithm",
            AuthError::Signature => "signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::Claim(_) => "claim",
            AuthError::WrongType => "token_type",
            AuthError::UnknownUser => "unknown_user",
            AuthError::Lookup(_) => "lookup",
        }
    }
}

fn algorithm(algorithm: HmacAlgorithm) -> Algorithm {
    match algorithm {
        HmacAlgorithm::HS256 => Algorithm::HS256,
        HmacAlgorithm::HS384 => Algorithm::HS384,
        HmacAlgorithm::HS512 => Algorithm::HS512,
    }
}

/// Verifies tokens and mints them; built once from the config.
pub struct Authenticator {
    config: AuthConfig,
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    mint_algorithm: Algorithm,
}

impl Authenticator {
    /// Builds the keys. The config must have passed `Config::validate`.
    pub fn new(config: &AuthConfig) -> Result<Arc<Self>, crate::config::ConfigError> {
        let secret = config.secret()?;
        let algorithms: Vec<Algorithm> = config.algorithms.iter().copied().map(algorithm).collect();
        if algorithms.is_empty() {
            return Err(crate::config::ConfigError::Invalid(
                "[auth] algorithms is empty".into(),
            ));
        }
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms.clone();
        // The library checks the signature and the algorithm; the clock
        // checks are ours (`verify_at`), so they can be tested at any time.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims::<&str>(&[]);
        Ok(Arc::new(Self {
            config: config.clone(),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            validation,
            mint_algorithm: algorithms[0],
        }))
    }

    /// Checks a token now and returns the user-id claim, normalised: a UUID in
    /// any spelling becomes 32 lowercase hex digits, a number stays a number.
    pub fn verify(&self, token: &str) -> Result<Value, AuthError> {
        self.verify_at(token, unix_now())
            .map(|verified| verified.user_id)
    }

    /// Checks a token as of `now` (seconds since the epoch): the user-id
    /// claim, and when the token stops being a login.
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Verified, AuthError> {
        // The header is checked first so an unlisted algorithm (or `none`) is
        // refused before any signature work.
        let header = jsonwebtoken::decode_header(token).map_err(|err| classify(&err))?;
        if !self.validation.algorithms.contains(&header.alg) {
            return Err(AuthError::Algorithm);
        }
        let data =
            jsonwebtoken::decode::<Map<String, Json>>(token, &self.decoding, &self.validation)
                .map_err(|err| classify(&err))?;
        let claims = data.claims;
        // simplejwt: expired when exp <= now - leeway; PyJWT: immature when nbf > now + leeway.
        let leeway = self.config.leeway_secs;
        let expires = match claims.get("exp").and_then(Json::as_u64) {
            Some(exp) if exp > now.saturating_sub(leeway) => exp.saturating_add(leeway),
            Some(_) => return Err(AuthError::Expired),
            None => return Err(AuthError::Claim("exp".into())),
        };
        if let Some(nbf) = claims.get("nbf") {
            match nbf.as_u64() {
                Some(nbf) if nbf > now + leeway => return Err(AuthError::NotYetValid),
                Some(_) => {}
                None => return Err(AuthError::Claim("nbf".into())),
            }
        }
        match claims.get(&self.config.token_type_claim) {
            Some(Json::String(kind)) if *kind == self.config.access_token_type => {}
            _ => return Err(AuthError::WrongType),
        }
        let user_id = match claims.get(&self.config.user_id_claim) {
            Some(Json::String(id)) if !id.is_empty() => {
                Value::Text(crate::db::normalise_uuid(id).unwrap_or_else(|| id.clone()))
            }
            Some(Json::Number(n)) if n.is_i64() => Value::Integer(n.as_i64().expect("checked")),
            _ => return Err(AuthError::Claim(self.config.user_id_claim.clone())),
        };
        Ok(Verified { user_id, expires })
    }

    /// Verifies a token and looks its user up.
    pub async fn authenticate(&self, db: &Database, token: &str) -> Result<Login, AuthError> {
        let verified = self.verify_at(token, unix_now())?;
        let user = self.look_up(db, verified.user_id.clone()).await?;
        Ok(Login {
            user,
            user_id: verified.user_id,
            expires: verified.expires,
        })
    }

    /// Looks an active user up by the id a token named (again, for a
    /// long-lived connection: the user may since have been removed or
    /// made inactive).
    pub async fn look_up(&self, db: &Database, user_id: Value) -> Result<User, AuthError> {
        let row = db
            .read_row(&self.config.user_query, vec![user_id])
            .await
            .map_err(AuthError::Lookup)?
            .ok_or(AuthError::UnknownUser)?;
        user_from_row(row).map_err(AuthError::Lookup)
    }

    /// Mints an access token like simplejwt's: `token_type`, `exp`, `iat`,
    /// `jti`, and the user id hyphenated when it is a UUID.
    pub fn mint(&self, user_id: &str) -> String {
        let now = unix_now();
        let id = uuid::Uuid::try_parse(user_id)
            .map(|uuid| uuid.hyphenated().to_string())
            .unwrap_or_else(|_| user_id.to_string());
        let mut claims = Map::new();
        claims.insert(
            self.config.token_type_claim.clone(),
            Json::String(self.config.access_token_type.clone()),
        );
        claims.insert(
            "exp".into(),
            Json::from(now + self.config.access_token_lifetime_secs),
        );
        claims.insert("iat".into(), Json::from(now));
        claims.insert(
            "jti".into(),
            Json::String(uuid::Uuid::new_v4().simple().to_string()),
        );
        claims.insert(self.config.user_id_claim.clone(), Json::String(id));
        jsonwebtoken::encode(&Header::new(self.mint_algorithm), &claims, &self.encoding)
            .expect("HMAC signing cannot fail")
    }
}

fn classify(err: &jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    match err.kind() {
        ErrorKind::InvalidSignature => AuthError::Signature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::Algorithm,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::Claim(claim.clone()),
        _ => AuthError::Malformed,
    }
}

/// Runs the user query for one id on a SQLite connection; `None` when
/// there is no such active user.
pub fn lookup_user(
    conn: &rusqlite::Connection,
    query: &str,
    user_id: &Value,
) -> Result<Option<User>, DbError> {
    let mut stmt = conn.prepare_cached(query)?;
    let width = stmt.column_count();
    let mut rows = stmt.query([user_id])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let values = (0..width)
        .map(|index| Ok(Value::from(row.get_ref(index)?)))
        .collect::<Result<Vec<_>, DbError>>()?;
    user_from_row(values).map(Some)
}

/// The user in a row of the user query: `id, name, email` (name and email
/// optional).
pub fn user_from_row(values: Vec<Value>) -> Result<User, DbError> {
    let mut values = values.into_iter().map(|value| match value {
        Value::Null | Value::Blob(_) => None,
        Value::Integer(i) => Some(i.to_string()),
        Value::Real(f) => Some(f.to_string()),
        Value::Text(t) => Some(t),
    });
    let id = values
        .next()
        .flatten()
        .ok_or_else(|| DbError::Invalid("the user query returned a NULL id".into()))?;
    let name = values.next().flatten();
    let email = values.next().flatten().unwrap_or_default();
    Ok(User { id, name, email })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn authenticator(secret: &str) -> Arc<Authenticator> {
        Authenticator::new(&AuthConfig {
            secret: Some(secret.into()),
            ..AuthConfig::default()
        })
        .unwrap()
    }

    fn sign(secret: &str, header: &str, payload: &str) -> String {
        use hmac::{Hmac, Mac};
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    const ALICE: &str = "9f5ba441-036f-4f39-9ea6-258e3206e909";

    fn payload(token_type: &str, exp: i64) -> String {
        format!(
            r#"{{"token_type":"{token_type}","exp":{exp},"iat":1795627348,"jti":"816889e33d564d50867bee01ee4d4738","user_id":"{ALICE}"}}"#
        )
    }

    fn far_future() -> i64 {
        4_102_444_800 // 2100-01-01
    }

    #[test]
    fn accepts_a_simplejwt_access_token() {
        let auth = authenticator("reference-secret");
        let token = sign(
            "reference-secret",
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &payload("access", far_future()),
        );
        assert_eq!(
            auth.verify(&token),
            Ok(Value::Text("9f5ba441036f4f399ea6258e3206e909".into()))
        );
    }

    #[test]
    fn refuses_every_non_login() {
        let auth = authenticator("reference-secret");
        let header = r#"{"alg":"HS256","typ":"JWT"}"#;
        let good = sign("reference-secret", header, &payload("access", far_future()));
        let (head, rest) = good.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let tampered_payload = payload("access", far_future()).replace("9f5b", "0000");
        let cases: Vec<(&str, String, AuthError)> = vec![
            (
                "refresh",
                sign(
                    "reference-secret",
                    header,
                    &payload("refresh", far_future()),
                ),
                AuthError::WrongType,
            ),
            (
                "expired",
                sign("reference-secret", header, &payload("access", 1_000_000)),
                AuthError::Expired,
            ),
            (
                "wrong key",
                sign("other-secret", header, &payload("access", far_future())),
                AuthError::Signature,
            ),
            (
                "tampered",
                format!(
                    "{head}.{}.{signature}",
                    URL_SAFE_NO_PAD.encode(&tampered_payload)
                ),
                AuthError::Signature,
            ),
            (
                "alg none",
                format!(
                    "{}.{}.",
                    URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
                    URL_SAFE_NO_PAD.encode(payload("access", far_future()))
                ),
                AuthError::Malformed,
            ),
            (
                "HS512 not listed",
                jsonwebtoken::encode(
                    &Header::new(Algorithm::HS512),
                    &serde_json::from_str::<Json>(&payload("access", far_future())).unwrap(),
                    &EncodingKey::from_secret(b"reference-secret"),
                )
                .unwrap(),
                AuthError::Algorithm,
            ),
            (
                "no user_id",
                sign(
                    "reference-secret",
                    header,
                    &format!(r#"{{"token_type":"access","exp":{}}}"#, far_future()),
                ),
                AuthError::Claim("user_id".into()),
            ),
            (
                "no exp",
                sign(
                    "reference-secret",
                    header,
                    &format!(r#"{{"token_type":"access","user_id":"{ALICE}"}}"#),
                ),
                AuthError::Claim("exp".into()),
            ),
            (
                "not yet valid",
                sign(
                    "reference-secret",
                    header,
                    &format!(
                        r#"{{"token_type":"access","exp":{},"nbf":{},"user_id":"{ALICE}"}}"#,
                        far_future(),
                        far_future() - 10
                    ),
                ),
                AuthError::NotYetValid,
            ),
            ("garbage", "not-a-token".into(), AuthError::Malformed),
            ("empty", String::new(), AuthError::Malformed),
        ];
        for (name, token, expected) in cases {
            let got = auth.verify(&token);
            // `alg: none` fails to parse as a header at all in jsonwebtoken: either way it is refused.
            if name == "alg none" {
                assert!(
                    matches!(got, Err(AuthError::Malformed | AuthError::Algorithm)),
                    "{name}: {got:?}"
                );
                continue;
            }
            assert_eq!(got, Err(expected), "{name}");
        }
    }

    #[test]
    fn the_reference_tokens_are_refused() {
        // From shared/reference/simplejwt_tokens.md: an access token that
        // expires an hour after it was made, and a refresh token (never a
        // login, expired or not). Both minted at iat 1795627348.
        let auth = authenticator("reference-secret");
        let access = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0b2tlbl90eXBlIjoiYWNjZXNzIiwiZXhwIjoxNzk1NjMwOTQ4LCJpYXQiOjE3OTU2MjczNDgsImp0aSI6IjgxNjg4OWUzM2Q1NjRkNTA4NjdiZWUwMWVlNGQ0NzM4IiwidXNlcl9pZCI6IjlmNWJhNDQxLTAzNmYtNGYzOS05ZWE2LTI1OGUzMjA2ZTkwOSJ9.dzgCTKmh7a95ogZxXXSu5V6N2kDYmPMA5-x30CBIP78";
        let refresh = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCIsImV4cCI6MTc5NTcxMzc0OCwiaWF0IjoxNzk1NjI3MzQ4LCJqdGkiOiJmNjYwYWJjZGNkZDA0ZDhiYjZjNjFlMGU0Y2M2ZTRkYiIsInVzZXJfaWQiOiI5ZjViYTQ0MS0wMzZmLTRmMzktOWVhNi0yNThlMzIwNmU5MDkifQ.RoE1yBS-xT9-8xehz8dJlEbSMqj8NmAjHjaDk2tWW_w";
        let minted = 1_795_627_348;
        let alice = Value::Text("9f5ba441036f4f399ea6258e3206e909".into());
        // Within its hour the access token is genuine: signature and claims check out.
        assert_eq!(
            auth.verify_at(access, minted + 60),
            Ok(Verified {
                user_id: alice,
                expires: 1_795_630_948
            })
        );
        // At its `exp` and after, it is expired, as simplejwt says.
        assert_eq!(
            auth.verify_at(access, 1_795_630_948),
            Err(AuthError::Expired)
        );
        assert_eq!(
            auth.verify_at(access, minted + 86_400),
            Err(AuthError::Expired)
        );
        for at in [minted + 60, minted + 86_400 + 1] {
            assert!(
                matches!(
                    auth.verify_at(refresh, at),
                    Err(AuthError::WrongType | AuthError::Expired)
                ),
                "a refresh token at {at}"
            );
        }
        assert_eq!(
            auth.verify_at(refresh, minted + 60),
            Err(AuthError::WrongType)
        );
        for error in [
            AuthError::Malformed,
            AuthError::Algorithm,
            AuthError::Signature,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::Claim("x".into()),
            AuthError::WrongType,
            AuthError::UnknownUser,
            AuthError::Lookup(DbError::Timeout),
        ] {
            assert!(AuthError::LABELS.contains(&error.label()), "{error:?}");
        }
    }

    #[test]
    fn minted_tokens_verify_and_look_like_simplejwt() {
        let auth = authenticator("s3cret");
        let token = auth.mint("9f5ba441036f4f399ea6258e3206e909");
        assert_eq!(
            auth.verify(&token),
            Ok(Value::Text("9f5ba441036f4f399ea6258e3206e909".into()))
        );
        let payload = token.split('.').nth(1).unwrap();
        let claims: Json =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["token_type"], "access");
        assert_eq!(claims["user_id"], ALICE);
        assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            3600
        );
        assert_eq!(
            authenticator("other").verify(&token),
            Err(AuthError::Signature)
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn authenticator() -> Arc<Authenticator> {
        Authenticator::new(&AuthConfig {
            secret: Some("property-secret".into()),
            ..AuthConfig::default()
        })
        .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever arrives as a token, verification answers without panicking,
        /// and nothing but a correctly signed token is a login.
        #[test]
        fn arbitrary_tokens_are_refused(token in ".{0,400}") {
            prop_assert!(authenticator().verify(&token).is_err());
        }

        /// Three dot-separated base64url-ish parts: the shape of a JWT, never a login.
        #[test]
        fn jwt_shaped_garbage_is_refused(a in "[A-Za-z0-9_-]{0,80}", b in "[A-Za-z0-9_-]{0,200}", c in "[A-Za-z0-9_-]{0,60}") {
            let token = format!("{a}.{b}.{c}");
            prop_assert!(authenticator().verify(&token).is_err());
        }

        /// Changing any one character of a valid token makes it invalid
        /// (or, where base64 padding bits absorb the change, leaves the very
        /// same claims).
        #[test]
        fn any_change_to_a_valid_token_is_refused(at in 0usize..10_000, replacement in "[A-Za-z0-9_.-]") {
            let auth = authenticator();
            let token = auth.mint("9f5ba441036f4f399ea6258e3206e909");
            let at = at % token.len();
            let mut changed: Vec<u8> = token.clone().into_bytes();
            prop_assume!(changed[at] != replacement.as_bytes()[0]);
            changed[at] = replacement.as_bytes()[0];
            let changed = String::from_utf8(changed).unwrap();
            match auth.verify(&changed) {
                Err(_) => {}
                Ok(user) => {
                    // Only the last character of a base64 part carries spare bits.
                    prop_assert_eq!(user, Value::Text("9f5ba441036f4f399ea6258e3206e909".into()));
                    let part_end = token[at..].find('.').map_or(token.len(), |dot| at + dot);
                    prop_assert_eq!(at + 1, part_end, "a change that mattered was accepted");
                }
            }
        }
    }
}
