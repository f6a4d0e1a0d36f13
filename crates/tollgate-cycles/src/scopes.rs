//! From a Cycles subject to Tollgate scopes: canonical scope paths
//! (`tenant:acme/workspace:prod/agent:bot`), always under the caller's
//! own tenant, so that no subject reaches another tenant's budgets.

use tollgate_core::budget::Scope;

use crate::CyclesError;
use crate::protocol::Subject;

/// The standard levels in canonical order, with the Tollgate scope each
/// one's budgets are kept in.
pub const LEVELS: [(&str, Scope); 6] = [
    ("tenant", Scope::Tenant),
    ("workspace", Scope::Workspace),
    ("app", Scope::App),
    ("workflow", Scope::Workflow),
    ("agent", Scope::Agent),
    ("toolset", Scope::Toolset),
];

/// A subject's scopes: `(Tollgate scope, canonical path)` from the tenant
/// down, one per level the subject names (gaps skipped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Derived {
    pub tenant: String,
    pub scopes: Vec<(Scope, String)>,
}

impl Derived {
    /// The deepest path: the subject's own scope.
    pub fn scope_path(&self) -> &str {
        self.scopes.last().map_or("", |(_, p)| p.as_str())
    }

    pub fn affected(&self) -> Vec<String> {
        self.scopes.iter().map(|(_, p)| p.clone()).collect()
    }
}

/// Whether a standard-field value has a stable canonical form: the
/// protocol's charset (`:` and `/` structure the paths).
fn valid_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The scopes of `subject` for a caller of `tenant`. A subject naming
/// another tenant is forbidden; one naming no tenant is under the
/// caller's (a path without its tenant would be shared by every tenant).
pub fn derive(subject: &Subject, tenant: &str) -> Result<Derived, CyclesError> {
    let values = subject.levels();
    if values.iter().all(|v| v.is_none()) {
        return Err(CyclesError::invalid(
            "subject: at least one of tenant, workspace, app, workflow, agent or toolset is required",
        ));
    }
    for ((level, _), v) in LEVELS.iter().zip(values) {
        if let Some(v) = v
            && !valid_value(v)
        {
            return Err(CyclesError::invalid(format!(
                "subject.{level}: {v:?} is not 1 to 128 of A-Z a-z 0-9 _ . -"
            )));
        }
    }
    if let Some(d) = &subject.dimensions {
        if d.len() > 16 {
            return Err(CyclesError::invalid("subject.dimensions: at most 16"));
        }
        if let Some((k, _)) = d.iter().find(|(k, v)| k.is_empty() || v.len() > 256) {
            return Err(CyclesError::invalid(format!(
                "subject.dimensions.{k}: values are at most 256 characters"
            )));
        }
    }
    if let Some(t) = &subject.tenant
        && t != tenant
    {
        return Err(CyclesError::forbidden(format!(
            "subject.tenant {t:?} is not this key's tenant"
        )));
    }
    let mut path = format!("tenant:{tenant}");
    let mut scopes = vec![(Scope::Tenant, path.clone())];
    for ((level, scope), v) in LEVELS.iter().zip(values).skip(1) {
        if let Some(v) = v {
            path.push('/');
            path.push_str(level);
            path.push(':');
            path.push_str(v);
            scopes.push((*scope, path.clone()));
        }
    }
    Ok(Derived {
        tenant: tenant.to_string(),
        scopes,
    })
}

/// The tenant a canonical path is under (`tenant:acme/...` → `acme`).
pub fn tenant_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("tenant:")?;
    Some(rest.split('/').next().unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;
    use proptest::prelude::*;

    fn subject(tenant: Option<&str>, workspace: Option<&str>, agent: Option<&str>) -> Subject {
        Subject {
            tenant: tenant.map(String::from),
            workspace: workspace.map(String::from),
            agent: agent.map(String::from),
            ..Subject::default()
        }
    }

    #[test]
    fn paths_follow_the_canonical_order_and_skip_gaps() {
        let d = derive(&subject(Some("acme"), Some("prod"), Some("bot")), "acme").unwrap();
        assert_eq!(
            d.affected(),
            [
                "tenant:acme",
                "tenant:acme/workspace:prod",
                "tenant:acme/workspace:prod/agent:bot"
            ]
        );
        assert_eq!(d.scope_path(), "tenant:acme/workspace:prod/agent:bot");
        assert_eq!(d.scopes[2].0, Scope::Agent);
        // No tenant named: under the caller's.
        let d = derive(&subject(None, None, Some("bot")), "acme").unwrap();
        assert_eq!(d.affected(), ["tenant:acme", "tenant:acme/agent:bot"]);
    }

    #[test]
    fn another_tenant_is_forbidden_and_bad_subjects_invalid() {
        let e = derive(&subject(Some("globex"), None, None), "acme").unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
        let e = derive(&Subject::default(), "acme").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        for v in ["a/b", "a:b", "", "a b", "é"] {
            let e = derive(&subject(None, Some(v), None), "acme").unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{v:?}");
        }
    }

    proptest! {
        /// Whatever a subject names, every path it derives is under the
        /// caller's tenant and parses back to it.
        #[test]
        fn every_path_is_under_the_callers_tenant(
            t in proptest::option::of("[a-z]{1,3}"),
            w in proptest::option::of("[a-zA-Z0-9_.:/-]{0,6}"),
            a in proptest::option::of("[a-zA-Z0-9_.:/-]{0,6}"),
        ) {
            let s = subject(t.as_deref(), w.as_deref(), a.as_deref());
            if let Ok(d) = derive(&s, "acme") {
                for p in d.affected() {
                    prop_assert_eq!(tenant_of(&p), Some("acme"));
                    prop_assert!(p == "tenant:acme" || p.starts_with("tenant:acme/"));
                }
            }
        }
    }
}
