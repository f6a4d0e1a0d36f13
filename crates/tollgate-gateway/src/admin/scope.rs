//! Who an admin key speaks for: everything (a key from the config), or one
//! tenant (a key created through `POST /admin/admin-keys`).
//!
//! A tenant admin reaches only the routes in [`TENANT_ROUTES`] — anything
//! else, a route added later included, is refused — and on those sees and
//! changes only its tenant's objects: keys, records, reports and users of
//! the tenant, budgets whose subject is the tenant's, alerts about them.
//! The gateway's own configuration (rate limits, alert rules, prices, its
//! stats, admin keys) is hidden from it, except the price catalog, which
//! it may read.

use super::*;
use tollgate_core::budget::Scope;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminScope {
    /// A key from `admin_keys:` in the config.
    Full,
    /// A stored key scoped to this tenant.
    Tenant(String),
}

/// The routes a tenant admin may call: (method, route as registered).
pub const TENANT_ROUTES: &[(&str, &str)] = &[
    ("GET", "/admin/keys"),
    ("POST", "/admin/keys"),
    ("DELETE", "/admin/keys/{id}"),
    ("GET", "/admin/records"),
    ("GET", "/admin/reports"),
    ("GET", "/admin/users"),
    ("GET", "/admin/usage/{user}"),
    ("GET", "/admin/pricing"),
    ("GET", "/admin/pricing/{model}"),
    ("GET", "/admin/budgets"),
    ("POST", "/admin/budgets"),
    ("GET", "/admin/budgets/{id}"),
    ("PATCH", "/admin/budgets/{id}"),
    ("DELETE", "/admin/budgets/{id}"),
    ("GET", "/admin/budgets/{id}/usage"),
    ("POST", "/admin/budgets/{id}/test-webhook"),
    ("POST", "/admin/budgets/{id}/fund"),
    ("GET", "/admin/budgets/{id}/badge"),
    ("GET", "/admin/budgets/{id}/badge-tokens"),
    ("POST", "/admin/budgets/{id}/badge-tokens"),
    ("DELETE", "/admin/budgets/{id}/badge-tokens/{token_id}"),
    ("GET", "/admin/alerts"),
    ("GET", "/admin/alerts/{id}"),
    ("POST", "/admin/alerts/{id}/redeliver"),
    ("POST", "/admin/explain"),
];

impl AdminScope {
    pub fn tenant(&self) -> Option<&str> {
        match self {
            AdminScope::Full => None,
            AdminScope::Tenant(t) => Some(t),
        }
    }

    /// Whether a tenant admin may call `method route`.
    pub fn may_call(&self, method: &str, route: &str) -> bool {
        match self {
            AdminScope::Full => true,
            AdminScope::Tenant(_) => TENANT_ROUTES.contains(&(method, route)),
        }
    }

    pub fn refused(&self) -> AdminError {
        AdminError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this admin key is scoped to tenant {:?}; this needs a full admin key",
                self.tenant().unwrap_or_default()
            ),
        )
    }

    /// The tenant a filter must name: a tenant admin's own (asking for
    /// another is refused), else what was asked.
    pub fn tenant_filter(&self, asked: Option<String>) -> Result<Option<String>, AdminError> {
        match (self, asked) {
            (AdminScope::Full, asked) => Ok(asked),
            (AdminScope::Tenant(t), Some(a)) if a != *t => Err(AdminError::new(
                StatusCode::FORBIDDEN,
                format!("this admin key is scoped to tenant {t:?} and cannot read tenant {a:?}"),
            )),
            (AdminScope::Tenant(t), _) => Ok(Some(t.clone())),
        }
    }

    /// A name as the tenant's (`acme/alice`): what a tenant admin writes
    /// for a user, session or named budget is its tenant's.
    pub fn own_name(&self, name: String) -> String {
        tollgate_core::in_tenant(self.tenant(), name)
    }

    /// Whether the subject `subject` of a `scope` budget is this admin's.
    pub async fn owns(&self, s: &AppState, scope: Scope, subject: &str) -> bool {
        let AdminScope::Tenant(t) = self else {
            return true;
        };
        match scope {
            Scope::Global => false,
            Scope::Tenant => subject == t,
            Scope::User | Scope::Session | Scope::Budget => subject
                .strip_prefix(t.as_str())
                .is_some_and(|r| r.starts_with('/')),
            Scope::Key => matches!(
                s.store.key_by_id(subject).await,
                Ok(Some(k)) if k.tenant.as_deref() == Some(t)
            ),
            // Cycles paths begin with their tenant (`tenant:acme/...`).
            Scope::Workspace | Scope::App | Scope::Workflow | Scope::Agent | Scope::Toolset => {
                tollgate_cycles::scopes::tenant_of(subject) == Some(t.as_str())
            }
        }
    }

    /// Whether a budget instance is this admin's to see.
    pub async fn owns_instance(&self, s: &AppState, a: &crate::budgets::Applied) -> bool {
        self.owns(s, a.budget.scope, &a.subject).await
    }
}
