//! Registry passwords, as `GetAuthorizationToken` hands them out and
//! `docker login -u AWS` presents them: the account, the caller's access key
//! and an expiry 12 hours on, signed with a key kept in the data directory,
//! so that any Cove process can check one and none can be forged.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use std::path::Path;

/// How long a password is good for, as on AWS.
pub const VALIDITY_SECS: f64 = 12.0 * 3600.0;

type HmacSha256 = Hmac<sha2::Sha256>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not a password this registry issued.
    Invalid,
    /// Issued here, but past its 12 hours.
    Expired,
}

/// Who a registry password was issued to: the account and the access key
/// that asked `GetAuthorizationToken` for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub account: String,
    pub access_key: String,
}

pub struct Tokens {
    key: Vec<u8>,
}

impl Tokens {
    /// Reads the signing key at `path`, making it (readable by root only) the first time.
    pub fn open(path: &Path) -> std::io::Result<Tokens> {
        if let Ok(key) = std::fs::read(path) {
            if key.len() >= 32 {
                return Ok(Tokens { key });
            }
        }
        let key: Vec<u8> = uuid::Uuid::new_v4()
            .as_bytes()
            .iter()
            .chain(uuid::Uuid::new_v4().as_bytes())
            .copied()
            .collect();
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(&key)?;
        Ok(Tokens { key })
    }

    #[cfg(test)]
    pub fn with_key(key: &[u8]) -> Tokens {
        Tokens { key: key.to_vec() }
    }

    fn sign(&self, payload: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length");
        mac.update(payload.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// A password for `account`, asked for with `access_key` at `now`
    /// (seconds since the epoch), and when it expires.
    pub fn issue(&self, account: &str, access_key: &str, now: f64) -> (String, f64) {
        let expires = (now + VALIDITY_SECS).floor();
        let payload = URL_SAFE_NO_PAD.encode(format!("{account}:{expires}:{access_key}"));
        let signature = self.sign(&payload);
        (format!("{payload}.{signature}"), expires)
    }

    /// Who a password was issued to, if it is valid at `now`.
    pub fn check(&self, password: &str, now: f64) -> Result<Holder, TokenError> {
        let (payload, signature) = password.split_once('.').ok_or(TokenError::Invalid)?;
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length");
        mac.update(payload.as_bytes());
        let given = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Invalid)?;
        mac.verify_slice(&given).map_err(|_| TokenError::Invalid)?;
        let text = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(TokenError::Invalid)?;
        let mut parts = text.splitn(3, ':');
        let account = parts.next().ok_or(TokenError::Invalid)?;
        let expires: f64 = parts
            .next()
            .and_then(|e| e.parse().ok())
            .ok_or(TokenError::Invalid)?;
        if now >= expires {
            return Err(TokenError::Expired);
        }
        Ok(Holder {
            account: account.to_string(),
            access_key: parts.next().unwrap_or_default().to_string(),
        })
    }

    /// Who holds an `Authorization: Basic …` header's `AWS:<password>`.
    pub fn check_basic(&self, header: &str, now: f64) -> Result<Holder, TokenError> {
        let encoded = header
            .strip_prefix("Basic ")
            .or_else(|| header.strip_prefix("basic "))
            .ok_or(TokenError::Invalid)?;
        let decoded = STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(TokenError::Invalid)?;
        let (user, password) = decoded.split_once(':').ok_or(TokenError::Invalid)?;
        if user != "AWS" {
            return Err(TokenError::Invalid);
        }
        self.check(password, now)
    }
}

/// ECR's `authorizationToken`: `AWS:<password>` in base64.
pub fn authorization_token(password: &str) -> String {
    STANDARD.encode(format!("AWS:{password}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_check_until_they_expire() {
        let tokens = Tokens::with_key(b"0123456789abcdef0123456789abcdef");
        let (password, expires) = tokens.issue("123456789012", "AKIAEXAMPLE", 1000.0);
        assert_eq!(expires, 1000.0 + VALIDITY_SECS);
        let holder = tokens.check(&password, 2000.0).unwrap();
        assert_eq!(
            (holder.account.as_str(), holder.access_key.as_str()),
            ("123456789012", "AKIAEXAMPLE")
        );
        assert_eq!(tokens.check(&password, expires), Err(TokenError::Expired));
        let basic = format!("Basic {}", authorization_token(&password));
        assert_eq!(
            tokens.check_basic(&basic, 2000.0).unwrap().account,
            "123456789012"
        );
        let other = format!("Basic {}", STANDARD.encode(format!("root:{password}")));
        assert_eq!(tokens.check_basic(&other, 2000.0), Err(TokenError::Invalid));
    }

    #[test]
    fn forged_passwords_fail() {
        let tokens = Tokens::with_key(b"0123456789abcdef0123456789abcdef");
        let (password, _) = tokens.issue("123456789012", "AKIA", 0.0);
        let (payload, signature) = password.split_once('.').unwrap();
        let forged_payload = URL_SAFE_NO_PAD.encode("999999999999:1e12:AKIA");
        assert_eq!(
            tokens.check(&format!("{forged_payload}.{signature}"), 1.0),
            Err(TokenError::Invalid)
        );
        let other = Tokens::with_key(b"another key, another registry!!!");
        assert_eq!(other.check(&password, 1.0), Err(TokenError::Invalid));
        assert_eq!(tokens.check(payload, 1.0), Err(TokenError::Invalid));
    }
}
