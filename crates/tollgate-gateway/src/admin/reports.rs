//! Reports by a dimension, as JSON, CSV or a table (the CLI prints the same).

use super::*;
use crate::api::{ReportRowView, ReportView, Totals};

/// A report in the documented shape: `{"rows":[{<dimension>, ...totals}], "total": {...}}`.
pub fn report_json(group_by: GroupBy, rows: &[ReportRow]) -> ReportView<'_> {
    let mut total_u = Usage::default();
    let mut total_cost = tollgate_core::Money::ZERO;
    let (mut total_req, mut total_refused) = (0, 0);
    let rows = rows
        .iter()
        .map(|r| {
            total_u = total_u.add(&r.usage);
            total_cost += r.cost;
            total_req += r.requests;
            total_refused += r.refused;
            ReportRowView {
                dimension: group_by.name(),
                key: r.key.as_deref(),
                totals: Totals::new(r.requests, r.refused, &r.usage, r.cost),
            }
        })
        .collect();
    ReportView {
        rows,
        total: Totals::new(total_req, total_refused, &total_u, total_cost),
    }
}

/// The report as CSV, one header line, the grouping dimension first.
pub fn report_csv(group_by: GroupBy, rows: &[ReportRow]) -> String {
    let v = report_json(group_by, rows);
    let mut out = format!("{},{}\n", group_by.name(), Totals::COLUMNS.join(","));
    for row in &v.rows {
        out.push_str(&csv_field(row.key.unwrap_or("")));
        for c in row.totals.cells() {
            out.push(',');
            out.push_str(&c);
        }
        out.push('\n');
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
pub fn report_table(group_by: GroupBy, rows: &[ReportRow]) -> String {
    let v = report_json(group_by, rows);
    let mut lines: Vec<Vec<String>> = vec![
        std::iter::once(group_by.name().to_string())
            .chain(Totals::COLUMNS.iter().map(|c| c.to_string()))
            .collect(),
    ];
    for row in &v.rows {
        lines.push(
            std::iter::once(row.key.unwrap_or("-").to_string())
                .chain(row.totals.cells())
                .collect(),
        );
    }
    lines.push(
        std::iter::once("TOTAL".to_string())
            .chain(v.total.cells())
            .collect(),
    );
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
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
                if i == 0 {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReportParams {
    group_by: Option<String>,
    from: Option<String>,
    to: Option<String>,
    user: Option<String>,
    tenant: Option<String>,
    format: Option<String>,
}

pub(super) async fn reports(
    State(s): State<AppState>,
    Query(p): Query<ReportParams>,
) -> Result<Response, AdminError> {
    let g = p.group_by.as_deref().unwrap_or("model");
    let group_by = GroupBy::parse(g).ok_or_else(|| {
        AdminError::bad_request(format!("group_by {g:?} is not one of {}", GroupBy::ALL))
    })?;
    let q = ReportQuery {
        group_by,
        from: time_arg(&p.from)?,
        to: time_arg(&p.to)?,
        user: p.user,
        tenant: p.tenant,
    };
    let rows = s.store.report(&q).await?;
    match p.format.as_deref().unwrap_or("json") {
        "json" => Ok(axum::Json(report_json(group_by, &rows)).into_response()),
        "csv" => Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            report_csv(group_by, &rows),
        )
            .into_response()),
        f => Err(AdminError::bad_request(format!(
            "format {f:?} is not json or csv"
        ))),
    }
}
