//! Reports by a dimension, as JSON, CSV or a table (the CLI prints the same).

use super::*;

pub(super) fn totals_json(
    requests: u64,
    refused: u64,
    u: &Usage,
    cost: tollgate_core::Money,
) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("requests".into(), json!(requests));
    m.insert("refused".into(), json!(refused));
    m.insert("input_tokens".into(), json!(u.input_tokens));
    m.insert("output_tokens".into(), json!(u.output_tokens));
    m.insert("cached_input_tokens".into(), json!(u.cached_input_tokens));
    m.insert(
        "cache_write_tokens".into(),
        json!(u.cache_write_5m_tokens + u.cache_write_1h_tokens),
    );
    m.insert("reasoning_tokens".into(), json!(u.reasoning_tokens));
    m.insert("cost_usd".into(), json!(cost.to_string()));
    m
}

/// A report in the documented shape: `{"rows":[{<dimension>, ...totals}], "total": {...}}`.
pub fn report_json(group_by: GroupBy, rows: &[ReportRow]) -> Value {
    let mut total_u = Usage::default();
    let mut total_cost = tollgate_core::Money::ZERO;
    let (mut total_req, mut total_refused) = (0, 0);
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            total_u = total_u.add(&r.usage);
            total_cost += r.cost;
            total_req += r.requests;
            total_refused += r.refused;
            let mut m = serde_json::Map::new();
            m.insert(group_by.name().into(), json!(r.key));
            m.extend(totals_json(r.requests, r.refused, &r.usage, r.cost));
            Value::Object(m)
        })
        .collect();
    json!({"rows": rows, "total": Value::Object(totals_json(total_req, total_refused, &total_u, total_cost))})
}

pub(super) const REPORT_COLUMNS: [&str; 8] = [
    "requests",
    "refused",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_usd",
];

/// The report as CSV, one header line, the grouping dimension first.
pub fn report_csv(group_by: GroupBy, rows: &[ReportRow]) -> String {
    let v = report_json(group_by, rows);
    let mut out = format!("{},{}\n", group_by.name(), REPORT_COLUMNS.join(","));
    for row in v["rows"].as_array().into_iter().flatten() {
        let key = row[group_by.name()].as_str().unwrap_or("");
        out.push_str(&csv_field(key));
        for c in REPORT_COLUMNS {
            out.push(',');
            match &row[c] {
                Value::String(s) => out.push_str(s),
                other => out.push_str(&other.to_string()),
            }
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
            .chain(REPORT_COLUMNS.iter().map(|c| c.to_string()))
            .collect(),
    ];
    let cell = |x: &Value| match x {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    for row in v["rows"].as_array().into_iter().flatten() {
        lines.push(
            std::iter::once(cell(&row[group_by.name()]))
                .chain(REPORT_COLUMNS.iter().map(|c| cell(&row[*c])))
                .collect(),
        );
    }
    let t = &v["total"];
    lines.push(
        std::iter::once("TOTAL".to_string())
            .chain(REPORT_COLUMNS.iter().map(|c| cell(&t[*c])))
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
