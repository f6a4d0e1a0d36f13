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
}

impl Caller {
    pub fn may_use(&self, model: &str) -> bool {
        self.models.is_empty()
            || self
                .models
                .iter()
                .any(|p| wildmatch::WildMatch::new(p).matches(model))
    }
}
