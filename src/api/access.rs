//! Who may call what. Management (load, unload, traffic) needs the admin token and is off without one; when API
//! keys are configured, inference and metadata calls need one of them. Health checks are always open. Secrets
//! are compared in constant time and never logged.

use subtle::{Choice, ConstantTimeEq};

use super::ApiError;

/// Who may load and unload models and change their traffic.
#[derive(Clone)]
pub struct ModelControl {
    token: Option<String>,
}

impl std::fmt::Debug for ModelControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelControl").field("enabled", &self.token.is_some()).finish()
    }
}

impl ModelControl {
    /// Enabled when `token` is set.
    pub fn new(token: Option<String>) -> ModelControl {
        ModelControl { token }
    }

    /// Checks an `Authorization` value ("Bearer <token>").
    pub(super) fn authorize(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        let Some(expected) = &self.token else {
            return Err(ApiError::Forbidden(
                "model management (load, unload, traffic) is disabled; set --admin-token (INFERGATE_ADMIN_TOKEN) to enable it"
                    .to_owned(),
            ));
        };
        let presented = bearer(authorization)
            .ok_or_else(|| ApiError::Unauthorized("model management needs 'Authorization: Bearer <token>'".into()))?;
        if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized("the admin token is not valid".to_owned()))
        }
    }
}

/// Header carrying an API key, as an alternative to `Authorization: Bearer <key>`.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The keys inference and metadata calls need; none configured means those calls are open.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: std::sync::Arc<[String]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys").field("count", &self.keys.len()).finish()
    }
}

impl ApiKeys {
    pub fn new(keys: impl IntoIterator<Item = String>) -> ApiKeys {
        ApiKeys { keys: keys.into_iter().map(|key| key.trim().to_owned()).collect() }
    }

    pub fn required(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Checks the key a caller presented in `Authorization: Bearer <key>` or in `x-api-key`.
    pub fn authorize(&self, authorization: Option<&str>, api_key: Option<&str>) -> Result<(), ApiError> {
        if !self.required() {
            return Ok(());
        }
        let presented = api_key.map(str::trim).or_else(|| bearer(authorization)).ok_or_else(|| {
            ApiError::Unauthorized(format!(
                "this server needs an API key: 'Authorization: Bearer <key>' or '{API_KEY_HEADER}'"
            ))
        })?;
        // Every key is compared in constant time, so the time taken does not tell which one nearly matched.
        let matched =
            self.keys.iter().fold(Choice::from(0), |matched, key| matched | presented.as_bytes().ct_eq(key.as_bytes()));
        if bool::from(matched) { Ok(()) } else { Err(ApiError::Unauthorized("the API key is not valid".to_owned())) }
    }
}

fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization.and_then(|value| value.strip_prefix("Bearer ")).map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked() {
        let off = ModelControl::new(None);
        assert!(matches!(off.authorize(Some("Bearer x")), Err(ApiError::Forbidden(_))));
        let on = ModelControl::new(Some("s3cret-token-0123456789".to_owned()));
        assert!(on.authorize(Some("Bearer s3cret-token-0123456789")).is_ok());
        for bad in [None, Some("s3cret-token-0123456789"), Some("Bearer wrong"), Some("Basic s3cret-token-0123456789")]
        {
            assert!(matches!(on.authorize(bad), Err(ApiError::Unauthorized(_))), "{bad:?}");
        }
    }

    #[test]
    fn api_keys_are_checked() {
        assert!(ApiKeys::default().authorize(None, None).is_ok());
        let keys = ApiKeys::new(["first-key-0123456789".to_owned(), "second-key-0123456789".to_owned()]);
        assert!(keys.authorize(Some("Bearer second-key-0123456789"), None).is_ok());
        assert!(keys.authorize(None, Some("first-key-0123456789")).is_ok());
        for (authorization, key) in [(None, None), (Some("Bearer nope"), None), (None, Some("first-key-012345678"))] {
            assert!(matches!(keys.authorize(authorization, key), Err(ApiError::Unauthorized(_))));
        }
    }
}
