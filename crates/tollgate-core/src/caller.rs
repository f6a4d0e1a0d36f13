//! Who a request is for: its key, user, tenant, role, session and named
//! budget, as identification (a virtual key, a JWT, trusted headers)
//! resolved them. Budgets apply by these subjects.

/// The identity of a request, as every later phase sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    pub key_id: Option<String>,
    pub user: Option<String>,
    pub tenant: Option<String>,
    pub role: Option<String>,
    pub session: Option<String>,
    /// A named budget (`X-Budget-Id`, trusted keys only).
    pub budget_id: Option<String>,
    pub trusted: bool,
    /// Model globs the key may use; empty means all.
    pub models: Vec<String>,
    /// Subjects in the Cycles scopes below the tenant (workspace, app,
    /// workflow, agent, toolset): canonical paths, set for Cycles calls.
    pub paths: Vec<(crate::budget::Scope, String)>,
}

/// A name within `tenant`: `tenant/name`, so that two tenants' "alice"
/// never share a budget, a record or a report row. A name already
/// qualified by the tenant is kept as it is; without a tenant, the name.
pub fn in_tenant(tenant: Option<&str>, name: String) -> String {
    match tenant {
        Some(t) if !name.strip_prefix(t).is_some_and(|r| r.starts_with('/')) => {
            format!("{t}/{name}")
        }
        _ => name,
    }
}

impl Caller {
    /// The caller with its user qualified by its tenant (see [`in_tenant`]).
    pub fn qualified(mut self) -> Caller {
        self.user = self
            .user
            .take()
            .map(|u| in_tenant(self.tenant.as_deref(), u));
        self
    }

    pub fn may_use(&self, model: &str) -> bool {
        self.models.is_empty()
            || self
                .models
                .iter()
                .any(|p| wildmatch::WildMatch::new(p).matches(model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_qualified_by_their_tenant_once() {
        assert_eq!(in_tenant(Some("acme"), "alice".into()), "acme/alice");
        assert_eq!(in_tenant(Some("acme"), "acme/alice".into()), "acme/alice");
        // Another tenant's prefix is part of the name, not a way out.
        assert_eq!(
            in_tenant(Some("acme"), "globex/bob".into()),
            "acme/globex/bob"
        );
        assert_eq!(
            in_tenant(Some("acme"), "acmex/bob".into()),
            "acme/acmex/bob"
        );
        assert_eq!(in_tenant(None, "alice".into()), "alice");
    }
}
