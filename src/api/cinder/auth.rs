//! Who a Cinder request comes from. Two modes:
//! - tokens (the default): `X-Auth-Token` must be one of the configured
//!   tokens, each naming a project, a user and whether it is an admin;
//!   a request without a known token is refused (401), reads included;
//! - noauth, for a standalone host, enabled explicitly and only on a
//!   loopback listener: as Cinder's noauth, the token `user:project` (or
//!   `x-project-id`, or the URL's project segment) names the caller, who
//!   is an admin.

use std::collections::HashMap;
use std::path::Path;

use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::Fault;

/// The caller.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Principal {
    pub project: String,
    pub user: String,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Clone)]
pub enum CinderAuth {
    NoAuth,
    Tokens(HashMap<String, Principal>),
    /// Tokens validated by a Keystone.
    Keystone(std::sync::Arc<super::keystone::Keystone>),
}

#[derive(Deserialize)]
struct TokenFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Deserialize)]
struct TokenEntry {
    token: String,
    #[serde(flatten)]
    principal: Principal,
}

/// Shortest token accepted: a guessable one is no authentication.
const MIN_TOKEN: usize = 16;

impl CinderAuth {
    /// Reads a tokens file (TOML: `[[token]]` tables of token, project,
    /// user, admin).
    pub fn from_file(path: &Path) -> Result<CinderAuth, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read Cinder tokens {}: {e}", path.display()))?;
        let file: TokenFile =
            toml::from_str(&text).map_err(|e| format!("Cinder tokens {}: {e}", path.display()))?;
        let mut tokens = HashMap::new();
        for t in file.token {
            if t.token.len() < MIN_TOKEN {
                return Err(format!(
                    "Cinder tokens {}: a token of project {:?} is shorter than {MIN_TOKEN} characters",
                    path.display(),
                    t.principal.project
                ));
            }
            tokens.insert(t.token, t.principal);
        }
        Ok(CinderAuth::Tokens(tokens))
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

pub fn authenticate(
    auth: &CinderAuth,
    headers: &HeaderMap,
    url_project: Option<&str>,
) -> Result<Principal, Fault> {
    let token = header(headers, "x-auth-token");
    let unauthorized = || {
        Fault::new(
            StatusCode::UNAUTHORIZED,
            "The request you have made requires authentication.",
        )
    };
    match auth {
        CinderAuth::Keystone(k) => {
            let principal = k.validate(token.ok_or_else(unauthorized)?)?;
            if let Some(p) = url_project.filter(|p| *p != principal.project && !principal.admin) {
                return Err(Fault::new(
                    StatusCode::FORBIDDEN,
                    format!("Policy doesn't allow this token to act in project {p:?}."),
                ));
            }
            Ok(principal)
        }
        CinderAuth::Tokens(tokens) => {
            let principal = token
                .and_then(|t| constant_time_find(tokens, t))
                .ok_or_else(unauthorized)?;
            if let Some(p) = url_project.filter(|p| *p != principal.project && !principal.admin) {
                return Err(Fault::new(
                    StatusCode::FORBIDDEN,
                    format!("Policy doesn't allow this token to act in project {p:?}."),
                ));
            }
            Ok(principal.clone())
        }
        CinderAuth::NoAuth => {
            let (tok_user, tok_project) = match token.and_then(|t| t.split_once(':')) {
                Some((u, p)) => (Some(u), Some(p)),
                None => (token, token),
            };
            let project = url_project
                .or(header(headers, "x-project-id"))
                .or(tok_project)
                .unwrap_or("admin");
            let user = header(headers, "x-user-id").or(tok_user).unwrap_or(project);
            Ok(Principal {
                project: project.to_string(),
                user: user.to_string(),
                admin: true,
            })
        }
    }
}

/// The principal of `token`, compared in time independent of where the
/// first difference lies.
fn constant_time_find<'a>(
    tokens: &'a HashMap<String, Principal>,
    token: &str,
) -> Option<&'a Principal> {
    let mut found = None;
    for (known, p) in tokens {
        let same = known.len() == token.len()
            && known
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            found = Some(p);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn tokens_name_the_caller_and_unknown_ones_are_refused() {
        let alice = Principal {
            project: "p1".into(),
            user: "alice".into(),
            admin: false,
        };
        let auth = CinderAuth::Tokens(HashMap::from([("a".repeat(20), alice.clone())]));
        let ok = headers(&[("x-auth-token", &"a".repeat(20))]);
        assert_eq!(authenticate(&auth, &ok, None).unwrap(), alice);
        assert_eq!(authenticate(&auth, &ok, Some("p1")).unwrap(), alice);
        assert_eq!(
            authenticate(&auth, &ok, Some("p2")).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        let bad = headers(&[("x-auth-token", &"b".repeat(20))]);
        assert_eq!(
            authenticate(&auth, &bad, None).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            authenticate(&auth, &HeaderMap::new(), None)
                .unwrap_err()
                .status,
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn noauth_reads_the_project_as_cinder_does() {
        let p = authenticate(
            &CinderAuth::NoAuth,
            &headers(&[("x-auth-token", "bob:proj")]),
            None,
        )
        .unwrap();
        assert_eq!(
            (p.user.as_str(), p.project.as_str(), p.admin),
            ("bob", "proj", true)
        );
        let p = authenticate(
            &CinderAuth::NoAuth,
            &headers(&[("x-auth-token", "notused")]),
            Some("demo"),
        )
        .unwrap();
        assert_eq!(p.project, "demo");
    }
}
