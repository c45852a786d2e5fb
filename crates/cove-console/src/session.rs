//! Console sign-in: a person gives an access key id and its secret (a
//! configured pair or an IAM user's key, what the CLI would be given); a
//! random token in an HttpOnly, SameSite=Strict cookie then names their
//! session. Sessions live in this process only (a restart signs everyone
//! out) and end after [`SESSION_LIFETIME`], at sign-out, or as soon as the
//! key stops being valid (an IAM key deleted or deactivated).

use cove_wire::dispatch::{CredentialLookup, Principal};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const COOKIE: &str = "cove_console";
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, Clone)]
pub struct Session {
    /// Who signed in (as the key lookup answered at sign-in).
    pub principal: Principal,
    /// A digest of the secret signed in with: a key whose secret changed
    /// no longer opens the session.
    secret_digest: [u8; 32],
    expires: Instant,
}

#[derive(Default)]
pub struct Sessions {
    by_token: Mutex<HashMap<String, Session>>,
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl Sessions {
    /// A new session's token, or why signing in failed (the same words
    /// whichever of the two was wrong).
    pub fn sign_in(
        &self,
        credentials: &CredentialLookup,
        access_key: &str,
        secret: &str,
    ) -> Result<String, &'static str> {
        const WRONG: &str = "The access key ID or the secret access key is not valid.";
        let access_key = access_key.trim();
        let principal = credentials(access_key).ok_or(WRONG)?;
        // Temporary credentials need their session token: not for the console.
        if principal.session_token.is_some() {
            return Err(
                "Sign in with a long-term access key: temporary credentials need a session token.",
            );
        }
        // Comparing digests keeps the comparison's time from telling how
        // much of the secret was right.
        let given = digest(secret.trim());
        if given != digest(&principal.secret_key) {
            return Err(WRONG);
        }
        let mut token = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut token);
        let token = hex::encode(token);
        let mut sessions = self.by_token.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(
            token.clone(),
            Session {
                principal,
                secret_digest: given,
                expires: now + SESSION_LIFETIME,
            },
        );
        Ok(token)
    }

    /// The session a request's `Cookie` header names, if it is still good.
    pub fn session(&self, credentials: &CredentialLookup, cookie_header: &str) -> Option<Session> {
        let token = token_in(cookie_header)?;
        let mut sessions = self.by_token.lock().unwrap_or_else(|e| e.into_inner());
        let s = sessions.get(token)?.clone();
        let still_valid = s.expires > Instant::now()
            && credentials(&s.principal.access_key)
                .is_some_and(|p| digest(&p.secret_key) == s.secret_digest);
        if !still_valid {
            sessions.remove(token);
            return None;
        }
        Some(s)
    }

    pub fn sign_out(&self, cookie_header: &str) {
        if let Some(token) = token_in(cookie_header) {
            self.by_token
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(token);
        }
    }
}

fn token_in(cookie_header: &str) -> Option<&str> {
    cookie_header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `Set-Cookie` value that holds a session.
pub fn cookie(token: &str) -> String {
    format!(
        "{COOKIE}={token}; Path={}; HttpOnly; SameSite=Strict; Max-Age={}",
        crate::html::BASE,
        SESSION_LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that ends one.
pub fn expired_cookie() -> String {
    format!(
        "{COOKIE}=; Path={}; HttpOnly; SameSite=Strict; Max-Age=0",
        crate::html::BASE
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex as StdMutex};

    fn lookup(secret: Arc<StdMutex<Option<String>>>) -> CredentialLookup {
        Arc::new(move |key: &str| {
            let secret = secret.lock().unwrap().clone()?;
            (key == "AKIDCONSOLE").then(|| Principal {
                access_key: key.into(),
                secret_key: secret,
                session_token: None,
                account_id: "000000000000".into(),
                arn: "arn:aws:iam::000000000000:root".into(),
                user_id: "000000000000".into(),
            })
        })
    }

    #[test]
    fn the_right_pair_opens_a_session_and_a_wrong_one_does_not() {
        let secret = Arc::new(StdMutex::new(Some("s3cret".to_string())));
        let creds = lookup(secret);
        let sessions = Sessions::default();
        assert!(sessions.sign_in(&creds, "AKIDCONSOLE", "nope").is_err());
        assert!(sessions.sign_in(&creds, "AKIDOTHER", "s3cret").is_err());
        let token = sessions.sign_in(&creds, "AKIDCONSOLE", "s3cret").unwrap();
        let header = format!("a=b; {COOKIE}={token}");
        assert_eq!(
            sessions
                .session(&creds, &header)
                .unwrap()
                .principal
                .account_id,
            "000000000000"
        );
        assert!(sessions.session(&creds, "cove_console=00").is_none());
        sessions.sign_out(&header);
        assert!(sessions.session(&creds, &header).is_none());
    }

    #[test]
    fn a_session_ends_when_its_key_is_deleted_or_its_secret_changes() {
        let secret = Arc::new(StdMutex::new(Some("s3cret".to_string())));
        let creds = lookup(secret.clone());
        let sessions = Sessions::default();
        let header = format!(
            "{COOKIE}={}",
            sessions.sign_in(&creds, "AKIDCONSOLE", "s3cret").unwrap()
        );
        *secret.lock().unwrap() = Some("other".into());
        assert!(sessions.session(&creds, &header).is_none());
        *secret.lock().unwrap() = Some("s3cret".into());
        let header = format!(
            "{COOKIE}={}",
            sessions.sign_in(&creds, "AKIDCONSOLE", "s3cret").unwrap()
        );
        *secret.lock().unwrap() = None;
        assert!(sessions.session(&creds, &header).is_none());
    }
}
