//! The runtime API's operations on the budget engine: a reservation holds
//! its estimate on every budget its subject reaches, through the same
//! engine (and ledger) the proxy reserves on, and settles by commit,
//! release or expiry. Every answer that succeeded is kept for its
//! idempotency key and replayed to the same request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Digest;
use tollgate_budgets::engine::{Applied, BudgetEngine, Reserved};
use tollgate_core::budget::Scope;
use tollgate_core::ledger::{Amount as Held, CounterKey, Sizing};
use tollgate_core::{Caller, Flags, Money, Usage, UsageRecord};
use tollgate_store::Store;
use tollgate_store::cycles::{ReservationQuery, StoredReply, StoredReservation};

use crate::CyclesError;
use crate::protocol::*;
use crate::scopes::{self, Derived};
use crate::units;

/// How many times one reservation may be extended.
pub const MAX_EXTENSIONS: u32 = 10;
/// How long after a reservation's grace the ledger still holds it, should
/// the sweeper (which releases it at the end of its grace) not run: a
/// backstop, so that a hold never outlives its reservation for long.
const LEDGER_MARGIN_MS: i64 = 10_000;
/// How long a successful answer is replayed for its idempotency key.
pub const REPLAY_HOURS: i64 = 24;

/// Who calls: the Tollgate key's identity (tenant, user, trust).
#[derive(Clone, Debug)]
pub struct Principal {
    pub caller: Caller,
    /// Authenticated by an admin key (`X-Admin-API-Key`): a full admin
    /// (of no tenant) or a tenant's admin.
    pub admin: bool,
}

/// A reservation's state beyond its columns, kept as JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Doc {
    subject: Subject,
    action: Action,
    reserved: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    committed: Option<Amount>,
    grace_ms: i64,
    overage: OveragePolicy,
    extensions: u32,
    affected: Vec<String>,
    /// The budgets held: (budget id, subject).
    holds: Vec<(String, String)>,
    /// The caller the reservation charges (its record's identity).
    key_id: Option<String>,
    user: Option<String>,
    session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    committed_metadata: Option<Map<String, Value>>,
}

/// An open reservation in memory: its row, and what the engine holds.
struct Open {
    row: StoredReservation,
    doc: Doc,
    reserved: Reserved,
    applied: Vec<Applied>,
}

/// Where an operation's answer is kept for its idempotency key. An
/// operation keeps its answer (with its reservation row, in one
/// transaction) *before* it changes the ledger: a failure to write leaves
/// nothing changed, so a retry runs again; never a charge whose answer is
/// lost (and charged twice on the retry).
struct ReplyTo {
    store: Arc<dyn Store>,
    slot: Slot,
    at: Timestamp,
}

/// An idempotency key's place — the tenant, the operation, the key — and
/// the hash of the request it was first used for.
#[derive(Clone)]
struct Slot {
    tenant: String,
    endpoint: &'static str,
    key: String,
    hash: [u8; 32],
}

impl ReplyTo {
    async fn keep(
        &self,
        reply: &Reply,
        row: Option<&StoredReservation>,
    ) -> Result<(), CyclesError> {
        let stored = StoredReply {
            tenant: self.slot.tenant.clone(),
            endpoint: self.slot.endpoint.to_string(),
            key: self.slot.key.clone(),
            hash: self.slot.hash,
            status: reply.status,
            body: reply.body.to_string(),
            created_at: self.at,
        };
        match row {
            Some(row) => self.store.put_reservation(row, Some(&stored)).await,
            None => self.store.put_reply(&stored).await,
        }
        .map_err(internal)
    }

    /// Keeps an answer that changes nothing and gives it.
    async fn answer(&self, reply: Reply) -> Result<Reply, CyclesError> {
        self.keep(&reply, None).await?;
        Ok(reply)
    }
}

/// An idempotency key's place: (tenant, operation, key).
type KeySlot = (String, &'static str, String);

/// A successful answer: status and body.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

/// What one output token of a model costs at most (the higher of its
/// output and reasoning rates), where the price table knows the model.
pub type OutputPrice = Arc<dyn Fn(&str) -> Option<tollgate_core::Money> + Send + Sync>;

pub struct Cycles {
    engine: Arc<BudgetEngine>,
    /// Prices `llm.*` actions by their model name, for their caps.
    output_price: OutputPrice,
    config: crate::CyclesConfig,
    store: Arc<dyn Store>,
    /// Open reservations, each behind its own lock (operations on one
    /// reservation run one at a time; on different ones, in parallel).
    open: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Open>>>>>,
    /// Idempotency keys being answered now: a second request with the
    /// same key waits for the first and replays its answer.
    keys: Mutex<HashMap<KeySlot, Arc<tokio::sync::Mutex<()>>>>,
    /// When each open reservation's grace ends (ms, id), soonest first; an
    /// extension adds a later entry and the earlier one is skipped.
    deadlines: Mutex<std::collections::BTreeSet<(i64, String)>>,
    /// Open reservations per tenant (bounded by `max_open_reservations`).
    per_tenant: Mutex<HashMap<String, usize>>,
    /// Budget lines an `ALLOW_IF_AVAILABLE` commit could not cover whole
    /// (`is_over_limit`): counter → budget id. They refuse new
    /// reservations until the budget is funded or changed.
    over_limit: Mutex<HashMap<CounterKey, String>>,
}

fn now_ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::MAX)
}

/// The hash an idempotency key is bound to: the operation's target and
/// the request as canonical JSON (object keys sorted).
fn request_hash(target: &str, body: &impl Serialize) -> [u8; 32] {
    let v = serde_json::to_value(body).unwrap_or(Value::Null);
    let mut h = sha2::Sha256::new();
    h.update(target.as_bytes());
    h.update([0]);
    h.update(v.to_string().as_bytes());
    h.finalize().into()
}

fn check_key(key: &str, header: Option<&str>) -> Result<(), CyclesError> {
    if key.is_empty() || key.len() > 256 {
        return Err(CyclesError::invalid("idempotency_key: 1 to 256 characters"));
    }
    if let Some(h) = header
        && h != key
    {
        return Err(CyclesError::invalid(
            "X-Idempotency-Key and the body's idempotency_key differ",
        ));
    }
    Ok(())
}

fn check_action(a: &Action) -> Result<(), CyclesError> {
    if a.kind.is_empty() || a.kind.len() > 64 {
        return Err(CyclesError::invalid("action.kind: 1 to 64 characters"));
    }
    if a.name.is_empty() || a.name.len() > 256 {
        return Err(CyclesError::invalid("action.name: 1 to 256 characters"));
    }
    if let Some(t) = &a.tags
        && (t.len() > 10 || t.iter().any(|t| t.len() > 64))
    {
        return Err(CyclesError::invalid(
            "action.tags: at most 10, each at most 64 characters",
        ));
    }
    Ok(())
}

fn internal(e: impl std::fmt::Display) -> CyclesError {
    CyclesError::new(ErrorCode::InternalError, e.to_string())
}

/// The budgets of `applied` that hold `unit` (a money budget for
/// microcents, a token budget for tokens).
fn in_unit(applied: Vec<Applied>, unit: Unit) -> (Vec<Applied>, Vec<Applied>) {
    applied.into_iter().partition(|a| match unit {
        Unit::UsdMicrocents => a.line.limit.money.is_some(),
        Unit::Tokens => a.line.limit.tokens.is_some(),
        Unit::Credits | Unit::RiskPoints => false,
    })
}

/// What an operation on a subject has checked and derived before it runs.
struct Checked {
    /// The amount asked for (a tool's configured cost for an estimate of 0).
    amount: Amount,
    held: Held,
    derived: Derived,
    caller: Caller,
    slot: Slot,
}

/// Recomputes `remaining_ttl_ms` of a replayed answer from its
/// `expires_at_ms` (volatile: never replayed as stored).
fn refresh_ttl(engine: Arc<BudgetEngine>) -> impl Fn(&mut Value) {
    move |body: &mut Value| {
        if let Some(exp) = body.get("expires_at_ms").and_then(Value::as_i64)
            && body.get("remaining_ttl_ms").is_some()
        {
            body["remaining_ttl_ms"] = (exp - now_ms(engine.now())).max(0).into();
        }
    }
}

/// A request about a subject's action and an amount.
trait SubjectOp: Serialize {
    fn parts(&self) -> (&str, &Subject, &Action, Amount);
}

impl SubjectOp for CreateRequest {
    fn parts(&self) -> (&str, &Subject, &Action, Amount) {
        (
            &self.idempotency_key,
            &self.subject,
            &self.action,
            self.estimate,
        )
    }
}

impl SubjectOp for DecisionRequest {
    fn parts(&self) -> (&str, &Subject, &Action, Amount) {
        (
            &self.idempotency_key,
            &self.subject,
            &self.action,
            self.estimate,
        )
    }
}

impl SubjectOp for EventRequest {
    fn parts(&self) -> (&str, &Subject, &Action, Amount) {
        (
            &self.idempotency_key,
            &self.subject,
            &self.action,
            self.actual,
        )
    }
}

impl Cycles {
    /// The checks every operation on a subject starts with: the key, the
    /// action, the amount's unit, the subject's scopes under the caller's
    /// tenant, and the request's hash for its idempotency key.
    fn check(
        &self,
        p: &Principal,
        endpoint: &'static str,
        header: Option<&str>,
        req: &impl SubjectOp,
    ) -> Result<Checked, CyclesError> {
        let (key, subject, action, amount) = req.parts();
        check_key(key, header)?;
        check_action(action)?;
        let amount = match self.config.tool_cost(action) {
            Some(cost)
                if endpoint != "event"
                    && amount.amount == 0
                    && amount.unit == Unit::UsdMicrocents =>
            {
                Amount::new(amount.unit, cost)
            }
            _ => amount,
        };
        let held = units::held(amount)?;
        let (derived, caller) = self.caller_for(p, subject)?;
        Ok(Checked {
            amount,
            held,
            slot: Slot {
                tenant: derived.tenant.clone(),
                endpoint,
                key: key.to_string(),
                hash: request_hash(endpoint, req),
            },
            derived,
            caller,
        })
    }

    /// The service on `engine`, with the reservations a previous process
    /// left open held again (their lines are in the ledger already).
    pub async fn start(
        engine: Arc<BudgetEngine>,
        store: Arc<dyn Store>,
        config: crate::CyclesConfig,
        output_price: OutputPrice,
    ) -> Result<Arc<Cycles>, CyclesError> {
        let c = Arc::new(Cycles {
            engine,
            output_price,
            config,
            store,
            open: Mutex::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
            deadlines: Mutex::new(std::collections::BTreeSet::new()),
            per_tenant: Mutex::new(HashMap::new()),
            over_limit: Mutex::new(HashMap::new()),
        });
        let marks = c.store.over_limit_marks().await.map_err(internal)?;
        c.over_limit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(
                marks
                    .into_iter()
                    .filter_map(|(budget, counter)| Some((counter.parse().ok()?, budget))),
            );
        let rows = c.store.active_reservations().await.map_err(internal)?;
        let now = c.engine.now();
        for row in rows {
            let Ok(doc) = serde_json::from_str::<Doc>(&row.doc) else {
                tracing::error!(reservation = %row.id, "stored reservation unreadable; left as it is");
                continue;
            };
            let mut applied = Vec::new();
            for (id, subject) in &doc.holds {
                if let Some(e) = c.engine.entries().get(id) {
                    applied.push(
                        c.engine
                            .applied(e.budget.clone(), subject.clone(), now)
                            .await,
                    );
                }
            }
            let amount = units::held(doc.reserved).unwrap_or_default();
            let reserved = Reserved {
                id: row.id.clone(),
                granted: 0,
                amount,
                per_unit: Held::default(),
                charges: applied.iter().map(|a| a.line.charge.clone()).collect(),
                warned: false,
                would_block: false,
            };
            let id = row.id.clone();
            c.due_at(&id, now_ms(row.expires_at) + doc.grace_ms);
            c.count(&row.tenant, true);
            c.lock_of(&id).lock().await.replace(Open {
                row,
                doc,
                reserved,
                applied,
            });
        }
        Ok(c)
    }

    fn lock_of(&self, id: &str) -> Arc<tokio::sync::Mutex<Option<Open>>> {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// Counts a tenant's reservation opened (`true`) or closed.
    fn count(&self, tenant: &str, opened: bool) {
        let mut m = self.per_tenant.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(tenant.to_string()).or_default();
        if opened {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(tenant);
            }
        }
    }

    /// Refuses a tenant at its limit of open reservations.
    fn room_for(&self, tenant: &str) -> Result<(), CyclesError> {
        let n = self
            .per_tenant
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .copied()
            .unwrap_or(0);
        if n >= self.config.max_open_reservations {
            return Err(CyclesError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "tenant {tenant:?} holds {n} open reservations, its limit (cycles.max_open_reservations); commit or release some"
                ),
            ));
        }
        Ok(())
    }

    /// Notes when reservation `id`'s grace ends, for the sweeper.
    fn due_at(&self, id: &str, ms: i64) {
        self.deadlines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((ms, id.to_string()));
    }

    fn forget(&self, id: &str) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Runs `op` once per (tenant, endpoint, key): a request repeating a
    /// successful one gets its answer again (its volatile fields
    /// refreshed by `refresh`); a different request with the key is a
    /// mismatch. Failures are not kept: a retry runs again.
    async fn idempotent<F, Fut>(
        &self,
        at: Slot,
        refresh: impl Fn(&mut Value),
        op: F,
    ) -> Result<Reply, CyclesError>
    where
        F: FnOnce(ReplyTo) -> Fut,
        Fut: std::future::Future<Output = Result<Reply, CyclesError>>,
    {
        let (tenant, endpoint, key, hash) =
            (at.tenant.as_str(), at.endpoint, at.key.as_str(), at.hash);
        let slot = (tenant.to_string(), endpoint, key.to_string());
        let lock = self
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(slot.clone())
            .or_default()
            .clone();
        let result = {
            let _held = lock.lock().await;
            match self
                .store
                .reply(tenant, endpoint, key)
                .await
                .map_err(internal)?
            {
                Some(r) if r.hash != hash => Err(CyclesError::new(
                    ErrorCode::IdempotencyMismatch,
                    format!("idempotency key {key:?} was used for a different {endpoint} request"),
                )),
                Some(r) => {
                    let mut body: Value = serde_json::from_str(&r.body).map_err(internal)?;
                    refresh(&mut body);
                    Ok(Reply {
                        status: r.status,
                        body,
                    })
                }
                None => {
                    op(ReplyTo {
                        store: self.store.clone(),
                        slot: at.clone(),
                        at: self.engine.now(),
                    })
                    .await
                }
            }
        };
        {
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            // The last one out removes the slot.
            if Arc::strong_count(&lock) <= 2 {
                keys.remove(&slot);
            }
        }
        result
    }

    /// The caller a subject charges: the key's identity, with the user
    /// and session its `dimensions` name (a user only by a trusted key).
    fn caller_for(
        &self,
        p: &Principal,
        subject: &Subject,
    ) -> Result<(Derived, Caller), CyclesError> {
        let home = p.caller.tenant.clone();
        let tenant = match (&home, &subject.tenant) {
            (Some(t), _) => t.clone(),
            // A platform key (trusted, of no tenant) acts for the tenant named.
            (None, Some(t)) if p.caller.trusted => t.clone(),
            (None, _) if p.caller.trusted => {
                return Err(CyclesError::invalid(
                    "subject.tenant: required with a key of no tenant",
                ));
            }
            (None, _) => {
                return Err(CyclesError::forbidden(
                    "this key belongs to no tenant; Cycles calls need a key of a tenant (or a trusted platform key)",
                ));
            }
        };
        let derived = scopes::derive(subject, &tenant)?;
        let mut caller = p.caller.clone();
        caller.tenant = Some(tenant.clone());
        let dims = subject.dimensions.as_ref();
        if let Some(u) = dims.and_then(|d| d.get("user")) {
            let u = tollgate_core::in_tenant(Some(&tenant), u.clone());
            if !p.caller.trusted && caller.user.as_deref() != Some(u.as_str()) {
                return Err(CyclesError::forbidden(
                    "subject.dimensions.user: only a trusted key may name a user",
                ));
            }
            caller.user = Some(u);
        }
        if let Some(s) = dims.and_then(|d| d.get("session")) {
            // As on the proxy: an untrusted caller's sessions are its own.
            caller.session = Some(if p.caller.trusted {
                match &home {
                    Some(h) => format!("{h}/{s}"),
                    None => s.clone(),
                }
            } else {
                match (&caller.key_id, &caller.user) {
                    (Some(k), _) => format!("{k}/{s}"),
                    (None, Some(u)) => format!("{u}/{s}"),
                    (None, None) => s.clone(),
                }
            });
        }
        caller.paths = derived
            .scopes
            .iter()
            .filter(|(s, _)| *s != Scope::Tenant)
            .cloned()
            .collect();
        Ok((derived, caller))
    }

    /// A model call (`llm.*` action) its budgets cannot fund whole, capped
    /// the way the proxy caps a request: the most output tokens every
    /// budget affords (at least `budgets.min_output_tokens`), priced at the
    /// model's output rate (`USD_MICROCENTS`, the action's name a priced
    /// model) or one token each (`TOKENS`). Answers the `max_tokens` cap
    /// and the smaller estimate it holds; `None` when no cap lets it run.
    async fn capped(
        &self,
        action: &Action,
        applied: &[Applied],
        estimate: Amount,
    ) -> Option<(Caps, Amount, Held)> {
        if !action.kind.starts_with("llm.") {
            return None;
        }
        let per_token = match estimate.unit {
            Unit::Tokens => Held::new(tollgate_core::Money::ZERO, 1),
            Unit::UsdMicrocents => Held::new((self.output_price)(&action.name)?, 0),
            _ => return None,
        };
        let whole = units::held(estimate).ok()?;
        let want = match estimate.unit {
            Unit::Tokens => whole.tokens,
            _ if per_token.money.units() > 0 => {
                u64::try_from(whole.money.units() / per_token.money.units()).ok()?
            }
            _ => return None,
        };
        let sizing = Sizing {
            base: Held::default(),
            per_unit: per_token,
            want,
            min: self.engine.min_output_tokens.clamp(1, want.max(1)),
        };
        let n = self.engine.plan(applied, &sizing).await.ok()?;
        if n == 0 || n >= want {
            return None;
        }
        let capped = match estimate.unit {
            Unit::Tokens => Amount::new(Unit::Tokens, i64::try_from(n).ok()?),
            // Whole microcents, rounded down: never more than the budgets afford.
            _ => Amount::new(
                estimate.unit,
                units::microcents_down(sizing.amount(n).money),
            ),
        };
        let caps = Caps {
            max_tokens: Some(n),
            ..Caps::default()
        };
        Some((caps, capped, units::held(capped).ok()?))
    }

    /// The budgets a request for `unit` holds on, or why there are none.
    async fn budgets(
        &self,
        caller: &Caller,
        action: &Action,
        derived: &Derived,
        unit: Unit,
    ) -> Result<Vec<Applied>, CyclesError> {
        // A model call is held on the budgets of its model too.
        let model = if action.kind.starts_with("llm.") {
            action.name.rsplit(':').next().unwrap_or(&action.name)
        } else {
            ""
        };
        let all = self.engine.applicable(caller, model).await;
        let (held, other) = in_unit(all, unit);
        if !held.is_empty() {
            return Ok(held);
        }
        if other.is_empty() {
            return Err(CyclesError::new(
                ErrorCode::NotFound,
                format!(
                    "Budget not found for provided scope: {}",
                    derived.scope_path()
                ),
            ));
        }
        let mut expected: Vec<&str> = Vec::new();
        if other.iter().any(|a| a.line.limit.money.is_some()) {
            expected.push("USD_MICROCENTS");
        }
        if other.iter().any(|a| a.line.limit.tokens.is_some()) {
            expected.push("TOKENS");
        }
        let mut d = Map::new();
        d.insert("scope".into(), derived.scope_path().into());
        d.insert("requested_unit".into(), unit.as_str().into());
        d.insert("expected_units".into(), expected.clone().into());
        Err(CyclesError::new(
            ErrorCode::UnitMismatch,
            format!(
                "no budget in {} for {}; budgets there are in {}",
                unit.as_str(),
                derived.scope_path(),
                expected.join(", ")
            ),
        )
        .with_details(d))
    }

    /// Balances of the subject's own scopes that hold `unit`, in
    /// canonical order (the tightest budget of a scope with several).
    async fn balances(&self, derived: &Derived, applied: &[Applied], unit: Unit) -> Vec<Balance> {
        let states = self.engine.states(applied).await;
        let mut out = Vec::new();
        for (scope, path) in &derived.scopes {
            let subject = if *scope == Scope::Tenant {
                derived.tenant.as_str()
            } else {
                path.as_str()
            };
            let mut best: Option<Balance> = None;
            for (a, st) in applied.iter().zip(&states) {
                if a.budget.scope != *scope || a.subject != subject {
                    continue;
                }
                let mut b = balance(path, unit, a, st);
                if self.is_marked(a) {
                    b.is_over_limit = Some(true);
                }
                if best
                    .as_ref()
                    .is_none_or(|x| b.remaining.amount < x.remaining.amount)
                {
                    best = Some(b);
                }
            }
            out.extend(best);
        }
        out
    }

    /// `POST /v1/reservations`.
    pub async fn create(
        &self,
        p: &Principal,
        req: CreateRequest,
        header_key: Option<&str>,
    ) -> Result<Reply, CyclesError> {
        let c = self.check(p, "reserve", header_key, &req)?;
        let estimate = c.amount;
        let (amount, derived, caller) = (c.held, c.derived, c.caller);
        let tenant = c.slot.tenant.clone();
        let ttl = req.ttl_ms.unwrap_or(60_000);
        if !(1_000..=86_400_000).contains(&ttl) {
            return Err(CyclesError::invalid("ttl_ms: 1000 to 86400000"));
        }
        let grace = req.grace_period_ms.unwrap_or(5_000);
        if !(0..=60_000).contains(&grace) {
            return Err(CyclesError::invalid("grace_period_ms: 0 to 60000"));
        }
        let refresh = refresh_ttl(self.engine.clone());
        self.idempotent(c.slot, refresh, |to| async move {
            let applied = self
                .budgets(&caller, &req.action, &derived, req.estimate.unit)
                .await?;
            let dry = req.dry_run.unwrap_or(false);
            let sizing = Sizing::fixed(amount);
            if let Some(code) = self.blocked(&applied, req.estimate.unit).await {
                if dry {
                    let balances = self.balances(&derived, &applied, req.estimate.unit).await;
                    return to.answer(deny(&derived, code, balances)).await;
                }
                return Err(CyclesError::new(code, blocked_message(code, &derived)));
            }
            if dry {
                let planned = match self.engine.plan(&applied, &sizing).await {
                    Ok(_) => Ok((Decision::Allow, None, estimate)),
                    Err(e) => match self.capped(&req.action, &applied, estimate).await {
                        Some((caps, capped, _)) => {
                            Ok((Decision::AllowWithCaps, Some(caps), capped))
                        }
                        None => Err(e),
                    },
                };
                let body = match planned {
                    Ok((decision, caps, reserved)) => CreateResponse {
                        decision,
                        reservation_id: None,
                        reserved: Some(reserved),
                        expires_at_ms: None,
                        remaining_ttl_ms: None,
                        scope_path: Some(derived.scope_path().to_string()),
                        affected_scopes: derived.affected(),
                        caps,
                        balances: Some(self.balances(&derived, &applied, req.estimate.unit).await),
                        reason_code: None,
                        retry_after_ms: None,
                    },
                    Err(_) => {
                        let balances = self.balances(&derived, &applied, req.estimate.unit).await;
                        return to
                            .answer(deny(&derived, ErrorCode::BudgetExceeded, balances))
                            .await;
                    }
                };
                return to.answer(ok(200, &body)).await;
            }
            self.room_for(&tenant)?;
            let now = self.engine.now();
            let created = now_ms(now);
            let expires = created + ttl;
            let id = format!("rsv_{}", random_id());
            let until = at(expires + grace + LEDGER_MARGIN_MS);
            let hold = |sizing| {
                self.engine.reserve_until(
                    &id,
                    &applied,
                    sizing,
                    until,
                    tollgate_store::Payload::Empty,
                    self.config.fail,
                )
            };
            let refused = |e| match e {
                tollgate_budgets::engine::ReserveError::Refused(r) => CyclesError::new(
                    ErrorCode::BudgetExceeded,
                    format!(
                        "Insufficient remaining budget for scope {} (budget {})",
                        scope_name(&r.applied, &derived),
                        r.applied.budget.id
                    ),
                ),
                tollgate_budgets::engine::ReserveError::Unavailable(m) => internal(m),
            };
            let (reserved, estimate, decision, caps) = match hold(sizing).await {
                Ok(r) => (r, estimate, Decision::Allow, None),
                Err(e @ tollgate_budgets::engine::ReserveError::Unavailable(_)) => {
                    return Err(refused(e));
                }
                // A model call too large for what is left runs capped.
                Err(e) => match self.capped(&req.action, &applied, estimate).await {
                    Some((caps, capped, held)) => {
                        let r = hold(Sizing::fixed(held)).await.map_err(refused)?;
                        (r, capped, Decision::AllowWithCaps, Some(caps))
                    }
                    None => return Err(refused(e)),
                },
            };
            let doc = Doc {
                subject: req.subject.clone(),
                action: req.action.clone(),
                reserved: estimate,
                committed: None,
                grace_ms: grace,
                overage: req.overage_policy.unwrap_or_default(),
                extensions: 0,
                affected: derived.affected(),
                holds: applied
                    .iter()
                    .map(|a| (a.budget.id.clone(), a.subject.clone()))
                    .collect(),
                key_id: caller.key_id.clone(),
                user: caller.user.clone(),
                session: caller.session.clone(),
                metadata: req.metadata.clone(),
                committed_metadata: None,
            };
            let row = StoredReservation {
                id: id.clone(),
                tenant: tenant.clone(),
                status: Status::Active.as_str().into(),
                idempotency_key: req.idempotency_key.clone(),
                scope_path: derived.scope_path().to_string(),
                created_at: now,
                expires_at: at(expires),
                finalized_at: None,
                doc: serde_json::to_string(&doc).map_err(internal)?,
            };
            let body = CreateResponse {
                decision,
                reservation_id: Some(id.clone()),
                reserved: Some(estimate),
                expires_at_ms: Some(expires),
                remaining_ttl_ms: Some(ttl),
                scope_path: Some(derived.scope_path().to_string()),
                affected_scopes: derived.affected(),
                caps,
                balances: Some(self.balances(&derived, &applied, req.estimate.unit).await),
                reason_code: None,
                retry_after_ms: None,
            };
            let reply = ok(200, &body);
            if let Err(e) = to.keep(&reply, Some(&row)).await {
                // Not answered: the hold goes back, a retry reserves anew.
                self.engine.release(&reserved);
                return Err(e);
            }
            self.due_at(&id, expires + grace);
            self.count(&tenant, true);
            self.lock_of(&id).lock().await.replace(Open {
                row,
                doc,
                reserved,
                applied,
            });
            Ok(reply)
        })
        .await
    }

    /// Scopes that refuse any new reservation: over their limit (debt).
    /// Why no new reservation may be made on `applied` (in `unit`): a
    /// budget past its overdraft limit, or in debt without one.
    async fn blocked(&self, applied: &[Applied], unit: Unit) -> Option<ErrorCode> {
        let states = self.engine.states(applied).await;
        let mut out = None;
        for (a, st) in applied.iter().zip(&states) {
            if !a.line.enforce {
                continue;
            }
            if self.is_marked(a) {
                return Some(ErrorCode::OverdraftLimitExceeded);
            }
            let d = debt(a, st, unit);
            if d.debt <= 0 {
                continue;
            }
            match d.overdraft {
                Some(limit) if d.debt > limit => return Some(ErrorCode::OverdraftLimitExceeded),
                Some(_) => {}
                None => out = Some(ErrorCode::DebtOutstanding),
            }
        }
        out
    }

    /// Whether every enforced budget can take `over` more than `held`
    /// as debt within its overdraft limit (checked per commit, not
    /// across concurrent commits, as the protocol allows).
    async fn overdraft_allows(
        &self,
        applied: &[Applied],
        held: Held,
        over: Held,
        unit: Unit,
    ) -> bool {
        let states = self.engine.states(applied).await;
        applied.iter().zip(&states).all(|(a, st)| {
            if !a.line.enforce {
                return true;
            }
            let d = debt(a, st, unit);
            // Debt once this commit is charged (its own hold is in `spent +
            // reserved` no longer; the other holds are not debt).
            let extra = match unit {
                Unit::Tokens => i128::from(held.tokens.saturating_add(over.tokens)),
                _ => held.money.units() + over.money.units(),
            };
            let after = d.spent + extra - d.limit;
            after <= 0 || d.overdraft.is_some_and(|o| after <= o)
        })
    }

    /// The open reservation `id` for `p`, locked; or why not.
    async fn open_for(
        &self,
        p: &Principal,
        id: &str,
    ) -> Result<tokio::sync::OwnedMutexGuard<Option<Open>>, CyclesError> {
        let lock = self.lock_of(id);
        let mut guard = lock.lock_owned().await;
        if let Some(o) = guard.as_ref() {
            self.owned(p, &o.row)?;
            // Past its grace (the sweeper has not come by): expired now.
            let now = now_ms(self.engine.now());
            if self.expire_if_due(id, &mut guard, now).await == Ok(true) {
                drop(guard);
                self.forget(id);
                return Err(expired(id));
            }
            return Ok(guard);
        }
        drop(guard);
        self.forget(id);
        match self.store.reservation(id).await.map_err(internal)? {
            None => Err(CyclesError::new(
                ErrorCode::NotFound,
                format!("reservation {id} not found"),
            )),
            Some(row) => {
                self.owned(p, &row)?;
                Err(match Status::parse(&row.status) {
                    Some(Status::Expired) | Some(Status::Active) => expired(id),
                    _ => CyclesError::new(
                        ErrorCode::ReservationFinalized,
                        format!("reservation {id} is {}", row.status),
                    ),
                })
            }
        }
    }

    fn owned(&self, p: &Principal, row: &StoredReservation) -> Result<(), CyclesError> {
        match &p.caller.tenant {
            Some(t) if *t != row.tenant => Err(CyclesError::forbidden(format!(
                "reservation {} belongs to another tenant",
                row.id
            ))),
            None if !p.caller.trusted => {
                Err(CyclesError::forbidden("this key belongs to no tenant"))
            }
            _ => Ok(()),
        }
    }

    /// `POST /v1/reservations/{id}/commit`.
    pub async fn commit(
        &self,
        p: &Principal,
        id: &str,
        req: CommitRequest,
        header_key: Option<&str>,
    ) -> Result<Reply, CyclesError> {
        check_key(&req.idempotency_key, header_key)?;
        let actual = units::held(req.actual)?;
        let slot = self
            .reservation_slot(p, id, "commit", &req.idempotency_key, &req)
            .await?;
        self.idempotent(slot, |_| {}, |to| async move {
            let mut guard = self.open_for(p, id).await?;
            let now = self.engine.now();
            let o = guard.as_mut().expect("open_for answers an open reservation");
            let unit = o.doc.reserved.unit;
            if req.actual.unit != unit {
                return Err(CyclesError::new(
                    ErrorCode::UnitMismatch,
                    format!("actual is in {}; the reservation is in {}", req.actual.unit.as_str(), unit.as_str()),
                ));
            }
            if now_ms(now) > now_ms(o.row.expires_at) + o.doc.grace_ms {
                return Err(expired(id));
            }
            let reserved = units::held(o.doc.reserved)?;
            let over = Held::new(
                (actual.money - reserved.money).max(Money::ZERO),
                actual.tokens.saturating_sub(reserved.tokens),
            );
            let mut charged = actual;
            if !over.is_zero() {
                match o.doc.overage {
                    OveragePolicy::Reject => {
                        return Err(CyclesError::new(
                            ErrorCode::BudgetExceeded,
                            "actual exceeds the reservation (overage_policy REJECT)",
                        ));
                    }
                    OveragePolicy::AllowWithOverdraft => {
                        if self.engine.grow(&mut o.reserved, over, self.config.fail).await.is_err()
                            && !self
                                .overdraft_allows(&o.applied, o.reserved.amount, over, unit)
                                .await
                        {
                            return Err(CyclesError::new(
                                ErrorCode::OverdraftLimitExceeded,
                                "the overage exceeds what the budgets have left and their overdraft limits",
                            ));
                        }
                    }
                    OveragePolicy::AllowIfAvailable => {
                        // Charge what the budgets have left of the overage.
                        let covered = self.cover(&mut o.reserved, &o.applied, over).await;
                        if covered != over {
                            self.mark_uncovered(&o.applied, unit).await;
                        }
                        charged = reserved.plus(covered);
                    }
                }
            }
            let charged_amount = units::amount_of(unit, charged);
            let released = (o.doc.reserved.amount - charged_amount.amount).max(0);
            let mut doc = o.doc.clone();
            doc.committed = Some(charged_amount);
            doc.committed_metadata = req.metadata.clone();
            let mut row = o.row.clone();
            row.status = Status::Committed.as_str().into();
            row.finalized_at = Some(now);
            row.doc = serde_json::to_string(&doc).map_err(internal)?;
            let body = CommitResponse {
                status: Status::Committed,
                charged: charged_amount,
                released: (released > 0).then(|| Amount::new(unit, released)),
                balances: None,
            };
            let reply = ok(200, &body);
            to.keep(&reply, Some(&row)).await?;
            let record = self.record(o, charged, &req.metrics, now);
            self.engine.settle(Some(&o.reserved), &o.applied, charged, record);
            *guard = None;
            self.forget(id);
            self.count(&row.tenant, false);
            Ok(reply)
        })
        .await
    }

    /// Grows the hold by as much of `over` as every enforced budget still
    /// has room for; answers what it grew by.
    fn is_marked(&self, a: &Applied) -> bool {
        self.over_limit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&a.line.charge)
    }

    /// After an `ALLOW_IF_AVAILABLE` charge that covered less than its
    /// overage: marks the budget lines left with no room (those that could
    /// not take the whole delta) over their limit, kept across restarts.
    async fn mark_uncovered(&self, applied: &[Applied], unit: Unit) {
        let states = self.engine.states(applied).await;
        let emptied: Vec<&Applied> = applied
            .iter()
            .zip(&states)
            .filter(|(a, st)| {
                a.line.enforce
                    && match unit {
                        Unit::Tokens => st.headroom.tokens == Some(0),
                        _ => st.headroom.money.is_some_and(|m| m <= Money::ZERO),
                    }
            })
            .map(|(a, _)| a)
            .collect();
        if emptied.is_empty() {
            return;
        }
        self.over_limit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(
                emptied
                    .iter()
                    .map(|a| (a.line.charge.clone(), a.budget.id.clone())),
            );
        let marks: Vec<(String, String)> = emptied
            .iter()
            .map(|a| (a.budget.id.clone(), a.line.charge.to_string()))
            .collect();
        if let Err(e) = self.store.mark_over_limit(&marks, self.engine.now()).await {
            // Kept in memory; a restart before the store recovers forgets it.
            tracing::warn!(error = %e, "cannot store over-limit marks");
        }
    }

    /// An operator funded or changed `budget_id`: its lines take new
    /// reservations again.
    pub async fn clear_over_limit(&self, budget_id: &str) -> Result<(), CyclesError> {
        self.store
            .clear_over_limit(budget_id)
            .await
            .map_err(internal)?;
        self.over_limit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, b| b != budget_id);
        Ok(())
    }

    async fn cover(&self, reserved: &mut Reserved, applied: &[Applied], over: Held) -> Held {
        for _ in 0..4 {
            if self
                .engine
                .grow(reserved, over, self.config.fail)
                .await
                .is_ok()
            {
                return over;
            }
            let states = self.engine.states(applied).await;
            let mut room = over;
            for (a, st) in applied.iter().zip(&states) {
                if !a.line.enforce {
                    continue;
                }
                if let Some(m) = st.headroom.money {
                    room.money = room.money.min(m.max(Money::ZERO));
                }
                if let Some(t) = st.headroom.tokens {
                    room.tokens = room.tokens.min(t);
                }
            }
            if room.is_zero()
                || self
                    .engine
                    .grow(reserved, room, self.config.fail)
                    .await
                    .is_ok()
            {
                return room;
            }
        }
        Held::default()
    }

    /// The usage record a commit writes: the reservation's caller, the
    /// action as the model, what it charged.
    fn record(
        &self,
        o: &Open,
        charged: Held,
        metrics: &Option<Metrics>,
        now: Timestamp,
    ) -> UsageRecord {
        let m = metrics.clone().unwrap_or_default();
        let tokens_unit = o.doc.reserved.unit == Unit::Tokens;
        UsageRecord {
            request_id: o.row.id.clone(),
            time: now,
            key_id: o.doc.key_id.clone(),
            user: o.doc.user.clone(),
            tenant: Some(o.row.tenant.clone()),
            session: o.doc.session.clone(),
            budgets: o.applied.iter().map(|a| a.budget.id.clone()).collect(),
            provider: "cycles".into(),
            model_requested: o.doc.action.name.clone(),
            model_served: o.doc.action.name.clone(),
            usage: Usage {
                input_tokens: m.tokens_input.unwrap_or(0),
                output_tokens: m.tokens_output.unwrap_or(if tokens_unit {
                    charged.tokens
                } else {
                    0
                }),
                ..Usage::default()
            },
            cost: charged.money,
            latency_ms: m.latency_ms.unwrap_or(0),
            ttft_ms: None,
            status: 200,
            flags: Flags::default(),
        }
    }

    /// The idempotency slot of an operation on reservation `id`: under the
    /// reservation's tenant, the request hashed with the id.
    async fn reservation_slot(
        &self,
        p: &Principal,
        id: &str,
        endpoint: &'static str,
        key: &str,
        req: &impl Serialize,
    ) -> Result<Slot, CyclesError> {
        Ok(Slot {
            tenant: self.tenant_of_reservation(p, id).await?,
            endpoint,
            key: key.to_string(),
            hash: request_hash(id, req),
        })
    }

    /// The tenant a reservation belongs to, checked against the caller
    /// (before its idempotency key is looked up under that tenant).
    async fn tenant_of_reservation(&self, p: &Principal, id: &str) -> Result<String, CyclesError> {
        if let Some(t) = &p.caller.tenant {
            return Ok(t.clone());
        }
        // A platform key acts under the reservation's own tenant.
        match self.store.reservation(id).await.map_err(internal)? {
            Some(r) => {
                self.owned(p, &r)?;
                Ok(r.tenant)
            }
            None => Err(CyclesError::new(
                ErrorCode::NotFound,
                format!("reservation {id} not found"),
            )),
        }
    }

    /// `POST /v1/reservations/{id}/release`.
    pub async fn release(
        &self,
        p: &Principal,
        id: &str,
        req: ReleaseRequest,
        header_key: Option<&str>,
    ) -> Result<Reply, CyclesError> {
        check_key(&req.idempotency_key, header_key)?;
        let slot = self
            .reservation_slot(p, id, "release", &req.idempotency_key, &req)
            .await?;
        self.idempotent(
            slot,
            |_| {},
            |to| async move {
                let mut guard = self.open_for(p, id).await?;
                let now = self.engine.now();
                let o = guard
                    .as_mut()
                    .expect("open_for answers an open reservation");
                if now_ms(now) > now_ms(o.row.expires_at) + o.doc.grace_ms {
                    return Err(expired(id));
                }
                let mut row = o.row.clone();
                row.status = Status::Released.as_str().into();
                row.finalized_at = Some(now);
                let body = ReleaseResponse {
                    status: Status::Released,
                    released: o.doc.reserved,
                    balances: None,
                };
                let reply = ok(200, &body);
                to.keep(&reply, Some(&row)).await?;
                self.engine.release(&o.reserved);
                *guard = None;
                self.forget(id);
                self.count(&row.tenant, false);
                Ok(reply)
            },
        )
        .await
    }

    /// `POST /v1/reservations/{id}/extend`.
    pub async fn extend(
        &self,
        p: &Principal,
        id: &str,
        req: ExtendRequest,
        header_key: Option<&str>,
    ) -> Result<Reply, CyclesError> {
        check_key(&req.idempotency_key, header_key)?;
        if !(1..=86_400_000).contains(&req.extend_by_ms) {
            return Err(CyclesError::invalid("extend_by_ms: 1 to 86400000"));
        }
        let slot = self
            .reservation_slot(p, id, "extend", &req.idempotency_key, &req)
            .await?;
        let refresh = refresh_ttl(self.engine.clone());
        self.idempotent(slot, refresh, |to| async move {
            let mut guard = self.open_for(p, id).await?;
            let now = self.engine.now();
            let o = guard
                .as_mut()
                .expect("open_for answers an open reservation");
            if now_ms(now) > now_ms(o.row.expires_at) {
                return Err(expired(id));
            }
            if o.doc.extensions >= MAX_EXTENSIONS {
                return Err(CyclesError::new(
                    ErrorCode::MaxExtensionsExceeded,
                    format!("reservation {id} was extended {MAX_EXTENSIONS} times already"),
                ));
            }
            let expires = now_ms(o.row.expires_at).saturating_add(req.extend_by_ms);
            let mut doc = o.doc.clone();
            doc.extensions += 1;
            let mut row = o.row.clone();
            row.expires_at = at(expires);
            row.doc = serde_json::to_string(&doc).map_err(internal)?;
            let body = ExtendResponse {
                status: Status::Active,
                expires_at_ms: expires,
                remaining_ttl_ms: Some((expires - now_ms(now)).max(0)),
                balances: None,
            };
            let reply = ok(200, &body);
            to.keep(&reply, Some(&row)).await?;
            self.engine
                .prolong(
                    id,
                    at(expires + doc.grace_ms + LEDGER_MARGIN_MS),
                    self.config.fail,
                )
                .await
                .map_err(|_| expired(id))?;
            self.due_at(id, expires + doc.grace_ms);
            o.doc = doc;
            o.row = row;
            Ok(reply)
        })
        .await
    }

    /// `GET /v1/reservations/{id}`.
    pub async fn get(&self, p: &Principal, id: &str) -> Result<Reply, CyclesError> {
        let row = match self.store.reservation(id).await.map_err(internal)? {
            Some(r) => r,
            None => {
                return Err(CyclesError::new(
                    ErrorCode::NotFound,
                    format!("reservation {id} not found"),
                ));
            }
        };
        self.owned(p, &row)?;
        let view = self.view(&row, true)?;
        if view.status == Status::Expired {
            return Err(expired(id));
        }
        Ok(ok(200, &view))
    }

    /// A row as the protocol shows it; an `ACTIVE` row past its grace is
    /// `EXPIRED` (the sweeper may not have come by yet).
    fn view(&self, row: &StoredReservation, full: bool) -> Result<ReservationView, CyclesError> {
        let doc: Doc = serde_json::from_str(&row.doc).map_err(internal)?;
        let mut status = Status::parse(&row.status).unwrap_or(Status::Expired);
        if status == Status::Active
            && now_ms(self.engine.now()) > now_ms(row.expires_at) + doc.grace_ms
        {
            status = Status::Expired;
        }
        Ok(ReservationView {
            reservation_id: row.id.clone(),
            status,
            idempotency_key: Some(row.idempotency_key.clone()),
            subject: doc.subject,
            action: doc.action,
            reserved: doc.reserved,
            committed: doc.committed,
            created_at_ms: now_ms(row.created_at),
            expires_at_ms: now_ms(row.expires_at),
            finalized_at_ms: row.finalized_at.map(now_ms),
            scope_path: row.scope_path.clone(),
            affected_scopes: doc.affected,
            metadata: if full { doc.metadata } else { None },
            committed_metadata: if full { doc.committed_metadata } else { None },
        })
    }

    /// `POST /v1/decide`: what a reservation would be answered now,
    /// reserving nothing. Budget conditions answer `DENY` with a reason,
    /// never an error.
    pub async fn decide(
        &self,
        p: &Principal,
        req: DecisionRequest,
        header_key: Option<&str>,
    ) -> Result<Reply, CyclesError> {
        let c = self.check(p, "decide", header_key, &req)?;
        let (estimate, amount, derived, caller) = (c.amount, c.held, c.derived, c.caller);
        self.idempotent(
            c.slot,
            |_| {},
            |to| async move {
                let decision = |decision, reason: Option<&str>| DecisionResponse {
                    decision,
                    caps: None,
                    reason_code: reason.map(String::from),
                    retry_after_ms: None,
                    affected_scopes: Some(derived.affected()),
                };
                let applied = match self
                    .budgets(&caller, &req.action, &derived, req.estimate.unit)
                    .await
                {
                    Ok(a) => a,
                    Err(e) if e.code == ErrorCode::NotFound => {
                        return to
                            .answer(ok(200, &decision(Decision::Deny, Some("BUDGET_NOT_FOUND"))))
                            .await;
                    }
                    Err(e) => return Err(e),
                };
                let body = if let Some(code) = self.blocked(&applied, req.estimate.unit).await {
                    decision(Decision::Deny, Some(code.as_str()))
                } else {
                    match self.engine.plan(&applied, &Sizing::fixed(amount)).await {
                        Ok(_) => decision(Decision::Allow, None),
                        Err(_) => match self.capped(&req.action, &applied, estimate).await {
                            Some((caps, _, _)) => DecisionResponse {
                                caps: Some(caps),
                                ..decision(Decision::AllowWithCaps, None)
                            },
                            None => decision(Decision::Deny, Some("BUDGET_EXCEEDED")),
                        },
                    }
                };
                to.answer(ok(200, &body)).await
            },
        )
        .await
    }

    /// `GET /v1/auth/introspect`: what the credential may do here. A full
    /// admin key is `admin` (everything, no tenant); a tenant admin key
    /// lists and releases its tenant's reservations and reads and funds its
    /// budgets; a virtual key (or JWT) of a tenant runs reservations and
    /// reads balances. A key of no tenant has no dashboard surface (401, as
    /// the protocol has servers answer such keys).
    pub fn introspect(&self, p: &Principal) -> Result<Reply, CyclesError> {
        const TENANT_ADMIN: &[&str] = &[
            "reservations:list",
            "reservations:release",
            "budgets:read",
            "budgets:write",
        ];
        const KEY: &[&str] = &[
            "reservations:create",
            "reservations:commit",
            "reservations:release",
            "reservations:extend",
            "reservations:list",
            "balances:read",
        ];
        let body = match (&p.caller.tenant, p.admin) {
            (None, true) => Introspection {
                authenticated: true,
                auth_type: "admin".into(),
                permissions: vec!["*".into()],
                capabilities: Capabilities::all(),
                tenant_id: None,
            },
            (None, false) => {
                return Err(CyclesError::new(
                    ErrorCode::Unauthorized,
                    "this key belongs to no tenant: it has no dashboard surface",
                ));
            }
            (Some(t), admin) => {
                let permissions = if admin { TENANT_ADMIN } else { KEY };
                Introspection {
                    authenticated: true,
                    auth_type: "tenant".into(),
                    permissions: permissions.iter().map(|p| p.to_string()).collect(),
                    capabilities: Capabilities::of_tenant(permissions),
                    tenant_id: Some(t.clone()),
                }
            }
        };
        Ok(ok(200, &body))
    }

    /// `GET /v1/balances`: the balances of the scopes a subject filter
    /// derives, in canonical order.
    pub async fn balances_of(&self, p: &Principal, subject: Subject) -> Result<Reply, CyclesError> {
        let (derived, caller) = self.caller_for(p, &subject)?;
        let mut applied = self.engine.applicable(&caller, "").await;
        // The subject's own scopes only: not the key's or the user's.
        applied.retain(|a| a.budget.scope == Scope::Tenant || a.budget.scope.is_cycles_path());
        let mut balances = Vec::new();
        for unit in [Unit::UsdMicrocents, Unit::Tokens] {
            let (held, _) = in_unit(applied.clone(), unit);
            balances.extend(self.balances(&derived, &held, unit).await);
        }
        Ok(ok(
            200,
            &BalanceResponse {
                balances,
                next_cursor: None,
                has_more: Some(false),
            },
        ))
    }

    /// `GET /v1/reservations`: the tenant's reservations, newest first.
    pub async fn list(
        &self,
        p: &Principal,
        mut q: ReservationQuery,
        subject: Subject,
        with_metadata: bool,
    ) -> Result<Reply, CyclesError> {
        let tenant = match (&p.caller.tenant, &subject.tenant) {
            (Some(t), Some(s)) if t != s => {
                return Err(CyclesError::forbidden(format!(
                    "tenant {s:?} is not this key's tenant"
                )));
            }
            (Some(t), _) => t.clone(),
            (None, Some(s)) if p.caller.trusted => s.clone(),
            (None, _) if p.admin => {
                return Err(CyclesError::invalid(
                    "tenant query parameter is required when using admin key authentication",
                ));
            }
            (None, _) if p.caller.trusted => {
                return Err(CyclesError::invalid(
                    "tenant: required with a key of no tenant",
                ));
            }
            (None, _) => return Err(CyclesError::forbidden("this key belongs to no tenant")),
        };
        q.tenant = tenant;
        for ((level, _), v) in scopes::LEVELS.iter().zip(subject.levels()).skip(1) {
            if let Some(v) = v {
                q.segments.push(format!("{level}:{v}"));
            }
        }
        let limit = q.limit;
        q.limit = limit + 1;
        // `EXPIRED` includes rows the sweeper has not come to yet.
        let want = q.status.clone();
        if want.as_deref() == Some("EXPIRED") || want.as_deref() == Some("ACTIVE") {
            q.status = None;
        }
        let mut rows = self.store.reservations_page(&q).await.map_err(internal)?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = more
            .then(|| {
                rows.last()
                    .map(|r| format!("{}_{}", now_ms(r.created_at), r.id))
            })
            .flatten();
        let mut views = Vec::new();
        for r in &rows {
            let v = self.view(r, with_metadata)?;
            if want.as_deref().is_none_or(|w| v.status.as_str() == w) {
                views.push(v);
            }
        }
        Ok(ok(
            200,
            &ReservationList {
                reservations: views,
                has_more: Some(next.is_some()),
                next_cursor: next,
            },
        ))
    }

    /// `POST /v1/events`: spend recorded after the fact, without a
    /// reservation, on every budget its subject reaches at once.
    pub async fn event(
        &self,
        p: &Principal,
        req: EventRequest,
        header_key: Option<&str>,
    ) -> Result<Reply, CyclesError> {
        let c = self.check(p, "event", header_key, &req)?;
        let (actual, derived, caller) = (c.held, c.derived, c.caller);
        let (tenant, key) = (c.slot.tenant.clone(), c.slot.key.clone());
        self.idempotent(
            c.slot,
            |_| {},
            |to| async move {
                let applied = self
                    .budgets(&caller, &req.action, &derived, req.actual.unit)
                    .await?;
                let id = format!("evt_{}", random_id());
                let policy = req.overage_policy.unwrap_or_default();
                // Held first, so that what it charges never passes a limit
                // unless the policy says so; then committed at once.
                let until = self
                    .engine
                    .now()
                    .checked_add(jiff::SignedDuration::from_secs(60))
                    .unwrap_or(Timestamp::MAX);
                let hold = |applied: Vec<Applied>, amount: Held| {
                    let id = id.clone();
                    async move {
                        let r = self
                            .engine
                            .reserve_until(
                                &id,
                                &applied,
                                Sizing::fixed(amount),
                                until,
                                tollgate_store::Payload::Empty,
                                self.config.fail,
                            )
                            .await;
                        (r, applied)
                    }
                };
                // The same budgets, admitting whatever the policy decided.
                let loose = applied
                    .iter()
                    .cloned()
                    .map(|mut a| {
                        a.line.enforce = false;
                        a
                    })
                    .collect::<Vec<_>>();
                let refused = |r: &tollgate_budgets::engine::Refusal, code| {
                    CyclesError::new(
                        code,
                        format!(
                            "Insufficient remaining budget for scope {} (budget {})",
                            scope_name(&r.applied, &derived),
                            r.applied.budget.id
                        ),
                    )
                };
                use tollgate_budgets::engine::ReserveError as E;
                // (hold, its budgets, what it charges; `None`: what the
                // budgets have left of `actual`).
                let (mut reserved, applied, charged) = match (
                    policy,
                    hold(
                        applied.clone(),
                        if policy == OveragePolicy::AllowIfAvailable {
                            Held::default()
                        } else {
                            actual
                        },
                    )
                    .await,
                ) {
                    (_, (Err(E::Unavailable(m)), _)) => return Err(internal(m)),
                    (OveragePolicy::Reject, (Err(E::Refused(r)), _)) => {
                        return Err(refused(&r, ErrorCode::BudgetExceeded));
                    }
                    (OveragePolicy::AllowWithOverdraft, (Err(E::Refused(r)), _)) => {
                        if !self
                            .overdraft_allows(&applied, Held::default(), actual, req.actual.unit)
                            .await
                        {
                            return Err(refused(&r, ErrorCode::OverdraftLimitExceeded));
                        }
                        let (res, applied) = hold(loose, actual).await;
                        (
                            res.map_err(|_| internal("cannot hold an event"))?,
                            applied,
                            Some(actual),
                        )
                    }
                    (OveragePolicy::AllowIfAvailable, (Err(E::Refused(_)), _)) => {
                        // Nothing left: charged nothing, recorded all the same.
                        let (res, applied) = hold(loose, Held::default()).await;
                        (
                            res.map_err(|_| internal("cannot hold an event"))?,
                            applied,
                            Some(Held::default()),
                        )
                    }
                    (OveragePolicy::AllowIfAvailable, (Ok(r), applied)) => (r, applied, None),
                    (_, (Ok(r), applied)) => (r, applied, Some(actual)),
                };
                let charged = match charged {
                    Some(c) => c,
                    None => {
                        let covered = self.cover(&mut reserved, &applied, actual).await;
                        if covered != actual {
                            self.mark_uncovered(&applied, req.actual.unit).await;
                        }
                        covered
                    }
                };
                let now = self.engine.now();
                let open = Open {
                    row: StoredReservation {
                        id: id.clone(),
                        tenant: tenant.clone(),
                        status: Status::Committed.as_str().into(),
                        idempotency_key: key.clone(),
                        scope_path: derived.scope_path().to_string(),
                        created_at: now,
                        expires_at: now,
                        finalized_at: Some(now),
                        doc: String::new(),
                    },
                    doc: Doc {
                        subject: req.subject.clone(),
                        action: req.action.clone(),
                        reserved: req.actual,
                        committed: None,
                        grace_ms: 0,
                        overage: policy,
                        extensions: 0,
                        affected: derived.affected(),
                        holds: Vec::new(),
                        key_id: caller.key_id.clone(),
                        user: caller.user.clone(),
                        session: caller.session.clone(),
                        metadata: None,
                        committed_metadata: None,
                    },
                    reserved,
                    applied,
                };
                let charged_amount = units::amount_of(req.actual.unit, charged);
                let body = EventResponse {
                    status: "APPLIED".into(),
                    event_id: id,
                    charged: (charged_amount != req.actual).then_some(charged_amount),
                    // Balances are read with `GET /v1/balances`: the answer
                    // is kept before the charge is made.
                    balances: None,
                };
                let reply = ok(201, &body);
                if let Err(e) = to.keep(&reply, None).await {
                    self.engine.release(&open.reserved);
                    return Err(e);
                }
                let record = self.record(&open, charged, &req.metrics, now);
                self.engine
                    .settle(Some(&open.reserved), &open.applied, charged, record);
                Ok(reply)
            },
        )
        .await
    }

    /// `GET /v1/sessions/{id}`: a session's spend across proxied calls and
    /// tool reservations, its budgets' room, and the models and tools it
    /// used. The id is the caller's own session (as its `dimensions.session`
    /// and `X-Session-Id` name it); another caller's is not reachable.
    pub async fn session(&self, p: &Principal, id: &str) -> Result<Reply, CyclesError> {
        if id.is_empty() || id.len() > 256 {
            return Err(CyclesError::invalid("session id: 1 to 256 characters"));
        }
        let mut dims = std::collections::BTreeMap::new();
        dims.insert("session".to_string(), id.to_string());
        let subject = Subject {
            tenant: p.caller.tenant.clone(),
            dimensions: Some(dims),
            ..Subject::default()
        };
        if subject.tenant.is_none() {
            return Err(CyclesError::forbidden(
                "session summaries are for keys of a tenant",
            ));
        }
        let (_, caller) = self.caller_for(p, &subject)?;
        let session = caller.session.clone().unwrap_or_default();
        let mut q = tollgate_store::query::ReportQuery::new(vec![
            tollgate_store::query::GroupBy::Provider,
            tollgate_store::query::GroupBy::Model,
        ]);
        q.filter.session = Some(session.clone());
        q.filter.tenant = caller.tenant.clone();
        let rows = self.store.report(&q).await.map_err(internal)?;
        let (mut spent, mut tokens, mut calls, mut tools) = (Money::ZERO, 0u64, 0u64, 0u64);
        let mut models = Vec::new();
        for r in &rows {
            let provider = r.keys[0].clone().unwrap_or_default();
            spent += r.cost;
            tokens += r.usage.total_tokens();
            if provider == "cycles" {
                tools += r.requests;
            } else {
                calls += r.requests;
            }
            models.push(serde_json::json!({
                "provider": provider,
                "model": r.keys[1].clone().unwrap_or_default(),
                "requests": r.requests,
                "refused": r.refused,
                "input_tokens": r.usage.input_tokens,
                "output_tokens": r.usage.output_tokens,
                "cost_usd": r.cost.to_usd_string(),
            }));
        }
        let active = {
            let open: Vec<_> = self
                .open
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect();
            open.iter()
                .filter(|slot| {
                    slot.try_lock().is_ok_and(|o| {
                        o.as_ref()
                            .is_some_and(|o| o.doc.session.as_deref() == Some(&session))
                    })
                })
                .count()
        };
        let mut budgets = Vec::new();
        let applied: Vec<Applied> = self
            .engine
            .applicable(&caller, "")
            .await
            .into_iter()
            .filter(|a| a.budget.scope == Scope::Session)
            .collect();
        for (a, st) in applied.iter().zip(self.engine.states(&applied).await) {
            budgets.push(serde_json::json!({
                "id": a.budget.id,
                "limit_usd": st.limit.money.map(|m| m.to_usd_string()),
                "limit_tokens": st.limit.tokens,
                "remaining_usd": st.headroom.money.map(|m| m.max(Money::ZERO).to_usd_string()),
                "remaining_tokens": st.headroom.tokens,
                "status": st.status,
            }));
        }
        Ok(ok(
            200,
            &serde_json::json!({
                "session_id": id,
                "session": session,
                "spent": {
                    "usd": spent.to_usd_string(),
                    "microcents": units::microcents_up(spent),
                    "tokens": tokens,
                },
                "model_calls": calls,
                "tool_reservations": {"committed": tools, "active": active},
                "budgets": budgets,
                "models": models,
            }),
        ))
    }

    /// Marks reservations past their grace `EXPIRED` (their holds left the
    /// ledger at the same time); answers how many.
    pub async fn sweep(&self) -> usize {
        let now = now_ms(self.engine.now());
        let due: Vec<String> = {
            let mut d = self.deadlines.lock().unwrap_or_else(|e| e.into_inner());
            let mut out = Vec::new();
            while let Some(first) = d.first() {
                if first.0 >= now {
                    break;
                }
                if let Some((_, id)) = d.pop_first() {
                    out.push(id);
                }
            }
            out
        };
        let mut n = 0;
        for id in due {
            let lock = self.lock_of(&id);
            let mut guard = lock.lock().await;
            match self.expire_if_due(&id, &mut guard, now).await {
                Ok(true) => n += 1,
                Ok(false) => {}
                Err(()) => self.due_at(&id, now + 1_000),
            }
            let gone = guard.is_none();
            drop(guard);
            if gone {
                self.forget(&id);
            }
        }
        n
    }

    /// Expires the open reservation in `slot` if its grace has ended:
    /// its hold released, its row `EXPIRED`. `Ok(true)` when it did;
    /// `Err` when the row could not be written (retried later).
    async fn expire_if_due(&self, id: &str, slot: &mut Option<Open>, now: i64) -> Result<bool, ()> {
        let Some(o) = slot.as_mut() else {
            return Ok(false);
        };
        if now <= now_ms(o.row.expires_at) + o.doc.grace_ms {
            return Ok(false);
        }
        let mut row = o.row.clone();
        row.status = Status::Expired.as_str().into();
        if let Err(e) = self.store.put_reservation(&row, None).await {
            tracing::warn!(reservation = %id, error = %e, "cannot mark a reservation expired; will retry");
            return Err(());
        }
        self.engine.release(&o.reserved);
        self.count(&row.tenant, false);
        *slot = None;
        Ok(true)
    }
}

fn expired(id: &str) -> CyclesError {
    CyclesError::new(
        ErrorCode::ReservationExpired,
        format!("reservation {id} has expired"),
    )
}

fn blocked_message(code: ErrorCode, derived: &Derived) -> String {
    match code {
        ErrorCode::OverdraftLimitExceeded => format!(
            "a budget of {} is in debt past its overdraft limit; no new reservations until it is funded or its period resets",
            derived.scope_path()
        ),
        ErrorCode::DebtOutstanding => format!(
            "a budget of {} is in debt (spent past its limit); no new reservations until it is funded or its period resets",
            derived.scope_path()
        ),
        _ => format!("{} refuses new reservations", derived.scope_path()),
    }
}

/// The scope a refusing budget is on, as the protocol names it.
fn scope_name(a: &Applied, derived: &Derived) -> String {
    derived
        .scopes
        .iter()
        .find(|(s, p)| {
            *s == a.budget.scope
                && (a.subject == *p || (*s == Scope::Tenant && a.subject == derived.tenant))
        })
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| format!("{}:{}", a.budget.scope, a.subject))
}

fn deny(derived: &Derived, code: ErrorCode, balances: Vec<Balance>) -> Reply {
    let body = CreateResponse {
        decision: Decision::Deny,
        reservation_id: None,
        reserved: None,
        expires_at_ms: None,
        remaining_ttl_ms: None,
        scope_path: Some(derived.scope_path().to_string()),
        affected_scopes: derived.affected(),
        caps: None,
        balances: Some(balances),
        reason_code: Some(code.as_str().into()),
        retry_after_ms: None,
    };
    ok(200, &body)
}

fn ok(status: u16, body: &impl Serialize) -> Reply {
    Reply {
        status,
        body: serde_json::to_value(body).unwrap_or(Value::Null),
    }
}

/// A budget's debt in one unit, in that unit's smallest amount (money
/// units or tokens).
struct Debt {
    spent: i128,
    limit: i128,
    debt: i128,
    overdraft: Option<i128>,
}

fn debt(a: &Applied, st: &tollgate_budgets::engine::State, unit: Unit) -> Debt {
    let (spent, limit, overdraft) = match unit {
        Unit::Tokens => (
            i128::from(st.spent.tokens),
            st.limit.tokens.map_or(i128::MAX, i128::from),
            a.budget.overdraft_tokens.map(i128::from),
        ),
        _ => (
            st.spent.money.units(),
            st.limit.money.map_or(i128::MAX, |m| m.units()),
            a.budget.overdraft_money.map(|m| m.units()),
        ),
    };
    Debt {
        spent,
        limit,
        debt: (spent - limit).max(0),
        overdraft: overdraft.filter(|o| *o > 0),
    }
}

/// A budget's state as a Cycles balance: `remaining = allocated − spent −
/// reserved − debt`, each rounded against the caller; spend past the limit
/// is debt.
fn balance(path: &str, unit: Unit, a: &Applied, st: &tollgate_budgets::engine::State) -> Balance {
    let (allocated, spent, reserved, overdraft) = match unit {
        Unit::Tokens => (
            i64::try_from(st.limit.tokens.unwrap_or(0)).unwrap_or(i64::MAX),
            i64::try_from(st.spent.tokens).unwrap_or(i64::MAX),
            i64::try_from(st.reserved.tokens).unwrap_or(i64::MAX),
            a.budget
                .overdraft_tokens
                .map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
        ),
        _ => (
            units::microcents_down(st.limit.money.unwrap_or(Money::ZERO)),
            units::microcents_up(st.spent.money),
            units::microcents_up(st.reserved.money),
            a.budget.overdraft_money.map(units::microcents_down),
        ),
    };
    let debt = (spent - allocated).max(0);
    let spent = spent.min(allocated.max(0));
    let amount = |n: i64| Amount::new(unit, n.max(0));
    let over_limit = overdraft.is_some_and(|o| o > 0 && debt > o);
    Balance {
        scope: path.to_string(),
        scope_path: path.to_string(),
        remaining: SignedAmount {
            unit,
            amount: allocated - spent - reserved - debt,
        },
        reserved: Some(amount(reserved)),
        spent: Some(amount(spent)),
        debt: Some(amount(debt)),
        allocated: Some(amount(allocated)),
        overdraft_limit: overdraft.map(amount),
        is_over_limit: Some(over_limit),
    }
}

/// 16 random bytes as hex (ids need uniqueness; the tenant check
/// guards access).
fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
