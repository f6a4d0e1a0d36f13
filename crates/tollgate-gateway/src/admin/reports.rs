//! Reports by any dimensions, as JSON, CSV (streamed) or a table (the
//! CLI prints the same).

use super::*;
use crate::api::{ReportRowView, ReportView, Totals};
use tollgate_store::{ReportFilter, Store};

/// A report's rows and its total. Grouped by budget, a record that
/// charged several budgets counts under each, and once in the total.
pub struct Report {
    pub group_by: Vec<GroupBy>,
    pub rows: Vec<ReportRow>,
    pub total: ReportRow,
}

/// Runs a report and its total.
pub async fn run_report(store: &dyn Store, q: &ReportQuery) -> Result<Report, StoreError> {
    let rows = store.report(q).await?;
    let total = if q.group_by.contains(&GroupBy::Budget) {
        let mut t = q.clone();
        t.group_by.clear();
        store
            .report(&t)
            .await?
            .pop()
            .unwrap_or_else(|| empty_row(vec![]))
    } else {
        let mut total = empty_row(vec![]);
        for r in &rows {
            add_row(&mut total, r);
        }
        total
    };
    Ok(Report {
        group_by: q.group_by.clone(),
        rows,
        total,
    })
}

fn empty_row(keys: Vec<Option<String>>) -> ReportRow {
    ReportRow {
        keys,
        requests: 0,
        refused: 0,
        usage: Usage::default(),
        cost: tollgate_core::Money::ZERO,
    }
}

fn add_row(into: &mut ReportRow, r: &ReportRow) {
    into.requests += r.requests;
    into.refused += r.refused;
    into.usage = into.usage.add(&r.usage);
    into.cost += r.cost;
}

fn totals(r: &ReportRow) -> Totals {
    Totals::new(r.requests, r.refused, &r.usage, r.cost)
}

/// A report in the documented shape: `{"rows":[{<dimensions>, ...totals}], "total": {...}}`.
pub fn report_json(r: &Report) -> ReportView<'_> {
    ReportView {
        rows: r
            .rows
            .iter()
            .map(|row| ReportRowView {
                dimensions: &r.group_by,
                keys: &row.keys,
                totals: totals(row),
            })
            .collect(),
        total: totals(&r.total),
    }
}

/// The CSV header: the grouping dimensions, then the totals' columns.
pub fn csv_header(group_by: &[GroupBy]) -> String {
    let mut cols: Vec<&str> = group_by.iter().map(|g| g.name()).collect();
    cols.extend(Totals::COLUMNS);
    format!("{}\n", cols.join(","))
}

/// One CSV line of a report row (a dimension a record lacks is empty).
pub fn csv_line(row: &ReportRow) -> String {
    let mut cells: Vec<String> = row
        .keys
        .iter()
        .map(|k| csv_field(k.as_deref().unwrap_or("")))
        .collect();
    cells.extend(totals(row).cells());
    let mut line = cells.join(",");
    line.push('\n');
    line
}

/// The report as CSV, one header line, the grouping dimensions first.
pub fn report_csv(r: &Report) -> String {
    let mut out = csv_header(&r.group_by);
    for row in &r.rows {
        out.push_str(&csv_line(row));
    }
    out
}

pub(super) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Rows of a report as a fixed-width text table (the CLI's default).
pub fn report_table(r: &Report) -> String {
    let header: Vec<String> = r
        .group_by
        .iter()
        .map(|g| g.name().to_string())
        .chain(Totals::COLUMNS.iter().map(|c| c.to_string()))
        .collect();
    let key_cols = r.group_by.len().max(1);
    let mut lines = vec![header];
    for row in &r.rows {
        lines.push(
            row.keys
                .iter()
                .map(|k| k.as_deref().unwrap_or("-").to_string())
                .chain(totals(row).cells())
                .collect(),
        );
    }
    let mut total: Vec<String> = vec!["TOTAL".into()];
    total.resize(r.group_by.len().max(1), String::new());
    total.extend(totals(&r.total).cells());
    if r.group_by.is_empty() {
        lines[0].insert(0, String::new());
    }
    lines.push(total);
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for l in &lines {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i < key_cols {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The query string of `GET /admin/reports`: the groupings, the time
/// bounds, and every dimension as a filter.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ReportParams {
    group_by: Option<String>,
    from: Option<String>,
    to: Option<String>,
    user: Option<String>,
    tenant: Option<String>,
    session: Option<String>,
    key: Option<String>,
    model: Option<String>,
    provider: Option<String>,
    budget: Option<String>,
    /// A UTC day, `YYYY-MM-DD`.
    day: Option<String>,
    /// A UTC hour, `YYYY-MM-DDTHH` (or the report's own `...:00:00Z`).
    hour: Option<String>,
    format: Option<String>,
}

/// A day or hour filter as `[start, end)`.
fn day_or_hour(p: &ReportParams) -> Result<Vec<(Timestamp, Timestamp)>, AdminError> {
    let mut spans = Vec::new();
    if let Some(d) = &p.day {
        let date: jiff::civil::Date = d
            .parse()
            .map_err(|_| AdminError::bad_request(format!("day {d:?} is not YYYY-MM-DD")))?;
        let start = date
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .map_err(|e| AdminError::bad_request(e.to_string()))?
            .timestamp();
        spans.push((start, start + SignedDuration::from_hours(24)));
    }
    if let Some(h) = &p.hour {
        let bad = || AdminError::bad_request(format!("hour {h:?} is not YYYY-MM-DDTHH"));
        let trimmed = h.strip_suffix(":00:00Z").unwrap_or(h);
        let (date, hour) = trimmed.split_once('T').ok_or_else(bad)?;
        let date: jiff::civil::Date = date.parse().map_err(|_| bad())?;
        let hour: i8 = hour
            .parse()
            .ok()
            .filter(|h| (0..24).contains(h))
            .ok_or_else(bad)?;
        let start = date
            .at(hour, 0, 0, 0)
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .map_err(|e| AdminError::bad_request(e.to_string()))?
            .timestamp();
        spans.push((start, start + SignedDuration::from_hours(1)));
    }
    Ok(spans)
}

impl ReportParams {
    fn query(&self, scope: &AdminScope) -> Result<ReportQuery, AdminError> {
        let group_by = GroupBy::parse_list(self.group_by.as_deref().unwrap_or("model"))
            .map_err(AdminError::bad_request)?;
        let mut from = time_arg(&self.from)?;
        let mut to = time_arg(&self.to)?;
        // Day and hour filters narrow the bounds.
        for (start, end) in day_or_hour(self)? {
            from = Some(from.map_or(start, |f| f.max(start)));
            to = Some(to.map_or(end, |t| t.min(end)));
        }
        let filter = ReportFilter {
            user: self.user.clone(),
            tenant: scope.tenant_filter(self.tenant.clone())?,
            session: self.session.clone(),
            key_id: self.key.clone(),
            model: self.model.clone(),
            provider: self.provider.clone(),
            budget: self.budget.clone(),
        };
        for (name, v) in [
            ("user", &filter.user),
            ("tenant", &filter.tenant),
            ("session", &filter.session),
            ("key", &filter.key_id),
            ("model", &filter.model),
            ("provider", &filter.provider),
            ("budget", &filter.budget),
        ] {
            if v.as_deref() == Some("") {
                return Err(AdminError::bad_request(format!("{name} must not be empty")));
            }
        }
        Ok(ReportQuery {
            group_by,
            from,
            to,
            filter,
            raw_only: false,
        })
    }
}

/// An export waits this long for a slow reader before giving up (its read
/// holds a snapshot of the database open).
const EXPORT_STALL: std::time::Duration = std::time::Duration::from_secs(30);

#[utoipa::path(get, path = "/reports", tag = "usage", params(ReportParams), responses((status = 200, description = "JSON (`format=json`) or CSV (`format=csv`, streamed)", body = crate::api::ReportView), (status = 400, description = "Invalid request", body = crate::api::ErrorBody)))]
pub(super) async fn reports(
    State(s): State<AppState>,
    Extension(scope): Extension<AdminScope>,
    Query(p): Query<ReportParams>,
) -> Result<Response, AdminError> {
    let q = p.query(&scope)?;
    match p.format.as_deref().unwrap_or("json") {
        "json" => {
            let r = run_report(&*s.store, &q).await?;
            Ok(axum::Json(report_json(&r)).into_response())
        }
        "csv" => csv_export(&s, q).await,
        f => Err(AdminError::bad_request(format!(
            "format {f:?} is not json or csv"
        ))),
    }
}

/// A CSV report streamed as its rows are read: however many groups, none
/// is held beyond the channel's. An error before the first row is an
/// ordinary error response; one after it cuts the body short (the client
/// sees an incomplete transfer, never a silently short file).
async fn csv_export(s: &AppState, q: ReportQuery) -> Result<Response, AdminError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<ReportRow, StoreError>>(256);
    let store = s.store.clone();
    let head = csv_header(&q.group_by);
    tokio::spawn(async move {
        let rt = tokio::runtime::Handle::current();
        let rows = tx.clone();
        let each = Box::new(move |row| {
            rt.block_on(tokio::time::timeout(EXPORT_STALL, rows.send(Ok(row))))
                .is_ok_and(|sent| sent.is_ok())
        });
        if let Err(e) = store.report_each(&q, each).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    let first = match rx.recv().await {
        Some(Err(e)) => return Err(e.into()),
        other => other,
    };
    let body = futures_util::stream::unfold(
        (Some(head), first, rx),
        |(head, pending, mut rx)| async move {
            if let Some(h) = head {
                return Some((Ok::<_, std::io::Error>(h), (None, pending, rx)));
            }
            let next = match pending {
                Some(p) => Some(p),
                None => rx.recv().await,
            };
            match next? {
                Ok(row) => Some((Ok(csv_line(&row)), (None, None, rx))),
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), (None, None, rx))),
            }
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}
