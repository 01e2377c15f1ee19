//! The push API (HTTP/JSON) and /metrics, served by `floodgate run`. Reference with curl
//! examples: README, "Push API".
//!
//! Every push is all-or-nothing: the whole body is checked (each bad entry is reported), then
//! the capacity, then it is applied under the state lock; a failure part-way rolls back.
#![expect(
    clippy::result_large_err,
    reason = "handlers return a ready Response as their error, once per request"
)]

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{
        MatchedPath, Query, Request, State as AxState,
        rejection::{BytesRejection, QueryRejection},
    },
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    daemon::Shared,
    entry::{EntryText, Field, Item, json_entries},
    error::Error,
    lists::ListKind,
    prefix::parse_prefix,
};

type Sh = AxState<Arc<Shared>>;

/// The API's routes, with authentication, request counting and the body limit.
pub fn router(shared: Arc<Shared>, max_body: usize) -> Router {
    let list_routes = |kind: ListKind| {
        get(move |s: Sh, q: QueryResult| list_get(s, kind, q))
            .post(move |s: Sh, b: Result<Bytes, BytesRejection>| list_post(s, kind, b))
            .delete(
                move |s: Sh, q: QueryResult, b: Result<Bytes, BytesRejection>| {
                    list_delete(s, kind, q, b)
                },
            )
    };
    Router::new()
        .route("/v1/blocklist", list_routes(ListKind::Block))
        .route("/v1/allowlist", list_routes(ListKind::Allow))
        .route("/v1/stats", get(stats))
        .route("/v1/sources", get(sources))
        .route("/v1/top", get(top))
        .route("/v1/attacks", get(attacks))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(shared)
}

/// A JSON error body: `{"error": "..."}` plus any details.
fn fail(code: StatusCode, message: impl Into<String>, details: Option<Value>) -> Response {
    let mut body = json!({ "error": message.into() });
    if let Some(Value::Object(extra)) = details {
        body.as_object_mut().expect("object").extend(extra);
    }
    (code, axum::Json(body)).into_response()
}

fn token_ok(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Compare every byte, so the time taken does not say how much of a guess was right.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Authentication (writes always, reads when `protect_reads`), then count the request by
/// route and status.
async fn guard(AxState(sh): Sh, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let response = match &route {
        // Unknown paths get their 404 whoever asks.
        None => next.run(req).await,
        Some(path) => {
            // Writes: POST and DELETE on the lists. Any other method that is not GET gets
            // its 405 from the router, token or not.
            let write =
                matches!(*req.method(), Method::POST | Method::DELETE) && path.starts_with("/v1/");
            let (needs, token) = {
                let rt = sh.runtime();
                let needs = write || (rt.daemon.protect_reads && path != "/healthz");
                (needs, rt.token.clone())
            };
            match (needs, token) {
                (false, _) => next.run(req).await,
                (true, None) => fail(
                    StatusCode::UNAUTHORIZED,
                    "API writes are disabled: set daemon.token_file in the configuration",
                    None,
                ),
                (true, Some(t)) if token_ok(req.headers(), &t) => next.run(req).await,
                (true, Some(_)) => {
                    let mut r = fail(
                        StatusCode::UNAUTHORIZED,
                        "missing or wrong token: send `Authorization: Bearer <token>` (the \
                         token is in the file daemon.token_file names)",
                        None,
                    );
                    r.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                    r
                }
            }
        }
    };
    sh.metrics
        .api_requests
        .with_label_values(&[
            route.as_deref().unwrap_or("unmatched"),
            response.status().as_str(),
        ])
        .inc();
    response
}

async fn method_not_allowed(method: Method) -> Response {
    fail(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {} is not allowed here: lists take GET, POST and DELETE; the rest GET",
            crate::entry::quote(method.as_str())
        ),
        None,
    )
}

/// The query string as asked, or the JSON 400 saying what is wrong with it.
type QueryResult = Result<Query<SourceQuery>, QueryRejection>;

fn query_error(r: QueryRejection) -> Response {
    fail(
        StatusCode::BAD_REQUEST,
        format!(
            "bad query string: {} (the lists take at most one `source=NAME`)",
            crate::entry::quote(&r.body_text())
        ),
        None,
    )
}

async fn not_found() -> Response {
    fail(
        StatusCode::NOT_FOUND,
        "no such path: see /v1/blocklist, /v1/allowlist, /v1/stats, /v1/sources, /healthz, \
         /metrics",
        None,
    )
}

/// A body that could not be read: too large (413) or broken.
fn body_error(rejection: BytesRejection, sh: &Shared) -> Response {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        let max = sh.runtime().daemon.max_body_bytes;
        return fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {max} bytes (daemon.max_body_bytes): split the push"),
            None,
        );
    }
    fail(rejection.status(), rejection.body_text(), None)
}

/// At most this many characters of an error message that may quote input (serde's do).
const ERROR_MAX: usize = 400;

/// At most this many bad entries are listed in a 400 (the count is always exact).
pub const BAD_ENTRIES_SHOWN: usize = 20;

/// The bad entries of a batch: the first [`BAD_ENTRIES_SHOWN`] in detail, all of them counted.
#[derive(Default)]
struct BadEntries {
    count: usize,
    shown: Vec<Value>,
}

impl BadEntries {
    /// Entry `index` (its text as sent) is bad because of `error`.
    fn push(&mut self, index: usize, text: &str, error: impl std::fmt::Display) {
        self.count += 1;
        if self.shown.len() < BAD_ENTRIES_SHOWN {
            // Quoted short: a 10 MB bad entry must not come back as a 10 MB answer.
            let entry = crate::entry::quote(text);
            let error = crate::entry::cut(&error.to_string(), ERROR_MAX);
            self.shown
                .push(json!({ "index": index, "entry": entry, "error": error }));
        }
    }

    /// The 400 for a batch of `total`, if any entry was bad; nothing was `done`.
    fn response(self, total: usize, done: &str) -> Option<Response> {
        (self.count > 0).then(|| {
            fail(
                StatusCode::BAD_REQUEST,
                format!(
                    "{} of {total} entries are invalid; nothing was {done}",
                    self.count
                ),
                Some(json!({ "bad_entries": self.shown, "bad_count": self.count,
                             "bad_entries_shown": self.shown.len() })),
            )
        })
    }
}

fn bad_json(e: &serde_json::Error) -> Response {
    fail(
        StatusCode::BAD_REQUEST,
        format!(
            "malformed JSON: {}; nothing was applied",
            crate::entry::cut(&e.to_string(), ERROR_MAX)
        ),
        None,
    )
}

/// A library error as a response: full lists are 507, bad input 400, the rest 500.
fn from_error(e: Error) -> Response {
    let code = match &e {
        Error::ListFull { .. } | Error::TooManySources { .. } => StatusCode::INSUFFICIENT_STORAGE,
        Error::PinsGone { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::BadSourceName { .. }
        | Error::ReservedSource { .. }
        | Error::BadPrefix { .. }
        | Error::Entry(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = crate::error::chain(&e);
    let message = if code == StatusCode::INSUFFICIENT_STORAGE {
        format!("{message}; nothing was applied, existing entries are untouched")
    } else {
        message
    };
    fail(code, message, None)
}

/// Run blocking map work off the async threads.
async fn blocking<T: Send + 'static>(
    sh: &Arc<Shared>,
    work: impl FnOnce(&Shared) -> Result<T, Response> + Send + 'static,
) -> Result<T, Response> {
    let sh = sh.clone();
    tokio::task::spawn_blocking(move || work(&sh))
        .await
        .unwrap_or_else(|e| {
            Err(fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error: {e}"),
                None,
            ))
        })
}

/// A handler's result as its response: the JSON value, or the error response it made.
fn json_reply(r: Result<Value, Response>) -> Response {
    r.map_or_else(|e| e, |v| axum::Json(v).into_response())
}

#[derive(Deserialize)]
struct SourceQuery {
    source: Option<String>,
}

/// A push as sent. Entries stay raw text until each is parsed on its own: a tree of JSON
/// values for a 16 MB body would take ten times its size.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Push {
    #[serde(default = "default_source")]
    source: String,
    #[serde(default)]
    replace: bool,
    /// Take entries broader than /8 (IPv4) or /16 (IPv6).
    #[serde(default)]
    force: bool,
    entries: Vec<Box<serde_json::value::RawValue>>,
}

fn default_source() -> String {
    "api".into()
}

/// The source a push may write: a valid name that is not the data plane's or the file's.
fn push_source(name: &str) -> Result<(), Error> {
    crate::sources::validate_name(name)?;
    crate::sources::check_not_reserved(name)
}

/// Entry `index` of a push: `"CIDR"` or `{"cidr": "...", "ttl": "10m", "comment": "..."}`.
/// An error names the entry's field as the push wrote it (`entries[3].ttl`).
fn parse_entry(
    index: usize,
    raw: &serde_json::value::RawValue,
    force: bool,
) -> Result<Item, String> {
    let text: EntryText = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
    text.parse(force).map_err(|e| {
        let mut field = format!("entries[{index}]");
        if e.field != Field::Cidr {
            field = format!("{field}.{}", e.field.name());
        }
        e.spelled(&field, "send \"force\": true")
    })
}

async fn list_post(
    AxState(sh): Sh,
    kind: ListKind,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(r) => return body_error(r, &sh),
    };
    let push: Push = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad_json(&e),
    };
    if let Err(e) = push_source(&push.source) {
        return from_error(e);
    }
    let mut items = Vec::with_capacity(push.entries.len());
    let mut bad = BadEntries::default();
    for (index, raw) in push.entries.iter().enumerate() {
        match parse_entry(index, raw, push.force) {
            Ok(i) => items.push(i),
            Err(error) => bad.push(index, raw.get(), error),
        }
    }
    if let Some(r) = bad.response(push.entries.len(), "applied") {
        return r;
    }
    drop(body);
    drop(push.entries);
    let (source, replace) = (push.source, push.replace);
    let r = blocking(&sh, move |sh| {
        let started = std::time::Instant::now();
        // No capacity pre-check: counting a big sparse hash map's entries walks all of its
        // buckets (milliseconds per push). A push that does not fit fails on the map's own
        // limit and is rolled back, so nothing of it stays and nothing else is touched.
        sh.write(|st| {
            let id = st.lists.register_source(&source)?;
            if replace {
                st.lists.replace(kind, id, &items, &mut |_, _| {})
            } else {
                Ok((st.lists.upsert(kind, id, &items, &mut |_, _| {})?, 0))
            }
        })
        .map(|(added, removed)| {
            tracing::info!(event = "push", list = kind.name(), source = %source, replace,
                           added = added.added, updated = added.updated, removed,
                           ms = started.elapsed().as_secs_f64() * 1e3);
            json!({ "source": source, "added": added.added, "updated": added.updated,
                    "removed": removed })
        })
        .map_err(from_error)
    })
    .await;
    json_reply(r)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Delete {
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    entries: Option<Vec<String>>,
}

async fn list_delete(
    AxState(sh): Sh,
    kind: ListKind,
    q: QueryResult,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(r) => return query_error(r),
    };
    let body = match body {
        Ok(b) => b,
        Err(r) => return body_error(r, &sh),
    };
    let mut del: Delete = if body.iter().all(u8::is_ascii_whitespace) {
        Delete::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(d) => d,
            Err(e) => return bad_json(&e),
        }
    };
    if del.source.is_none() {
        del.source = q.source;
    }
    match (del.source, del.entries) {
        (Some(source), None) => {
            let r = blocking(&sh, move |sh| {
                sh.write(|st| match st.lists.sources.id(&source)? {
                    Some(id) => st.lists.remove_source(kind, id),
                    None => Ok(0),
                })
                .map(|n| {
                    tracing::info!(event = "delete_source", list = kind.name(), source = %source, removed = n);
                    json!({ "source": source, "removed": n })
                })
                .map_err(from_error)
            })
            .await;
            json_reply(r)
        }
        (None, Some(entries)) => {
            let mut nets = Vec::new();
            let mut bad = BadEntries::default();
            for (index, e) in entries.iter().enumerate() {
                match parse_prefix(e) {
                    Ok(n) => nets.push(n),
                    Err(err) => bad.push(index, e, err),
                }
            }
            if let Some(r) = bad.response(entries.len(), "removed") {
                return r;
            }
            let r = blocking(&sh, move |sh| {
                sh.write(|st| st.lists.remove_present(kind, &nets))
                    .map(|(removed, absent)| {
                        tracing::info!(
                            event = "delete",
                            list = kind.name(),
                            removed = removed.len(),
                            absent = absent.len()
                        );
                        let show = |v: Vec<IpNet>| -> Vec<String> {
                            v.iter().map(crate::prefix::display).collect()
                        };
                        json!({ "removed": removed.len(), "absent": show(absent) })
                    })
                    .map_err(from_error)
            })
            .await;
            json_reply(r)
        }
        _ => fail(
            StatusCode::BAD_REQUEST,
            "say what to delete: {\"entries\": [\"CIDR\", ...]} or {\"source\": \"NAME\"} (or ?source=NAME), not both",
            None,
        ),
    }
}

async fn list_get(AxState(sh): Sh, kind: ListKind, q: QueryResult) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(r) => return query_error(r),
    };
    let r = blocking(&sh, move |sh| {
        let st = sh.state();
        let mut entries = st.lists.entries(kind).map_err(from_error)?;
        if let Some(name) = &q.source {
            let id = st.lists.sources.id(name).map_err(from_error)?;
            entries.retain(|e| Some(e.source) == id);
        }
        let names = st.lists.sources.names().map_err(from_error)?;
        let rows = json_entries(&names, &entries);
        Ok(json!({ "count": rows.len(), "entries": rows }))
    })
    .await;
    json_reply(r)
}

async fn stats(AxState(sh): Sh) -> Response {
    let r = blocking(&sh, |sh| {
        let snap = sh.state().stats.snapshot().map_err(from_error)?;
        Ok(serde_json::to_value(crate::stats::json(&snap, None)).expect("serialisable"))
    })
    .await;
    json_reply(r)
}

/// Every source: its entries on each list and its blocklist drops.
async fn sources(AxState(sh): Sh) -> Response {
    let r = blocking(&sh, |sh| {
        let st = sh.state();
        let sources = st.lists.sources.all().map_err(from_error)?;
        let block = st.lists.source_counts(ListKind::Block);
        let allow = st.lists.source_counts(ListKind::Allow);
        let count = |c: &std::collections::BTreeMap<u32, [usize; 2]>, id| {
            c.get(&id).map_or(0, |[v4, v6]| v4 + v6)
        };
        let mut out = Vec::new();
        for (id, name) in sources {
            let drops = st.lists.sources.drops(id).map_err(from_error)?;
            out.push(json!({
                "source": name,
                "blocklist_entries": count(&block, id),
                "allowlist_entries": count(&allow, id),
                "drops": { "packets": drops.packets, "bytes": drops.bytes },
                "fixed": id < filter_common::SOURCES_FIXED,
            }));
        }
        Ok(json!({ "sources": out }))
    })
    .await;
    json_reply(r)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopQuery {
    interval: Option<String>,
    sample: Option<u32>,
    rows: Option<usize>,
}

/// What `floodgate top --json --once` prints: the daemon samples for `interval` (default 1s,
/// at most 10s), 1 in `sample` packets (default 100), and answers `rows` rows per table
/// (default 10, at most 100).
/// `GET /v1/attacks`: automatic mitigation: the mode, the host groups, the attacks going on
/// with their mitigations, and the last events (the audit log's).
async fn attacks(AxState(sh): Sh) -> Response {
    let cfg = sh.runtime().auto.clone();
    let mode = crate::auto::kernel::AutoMaps::open(&sh.pin)
        .and_then(|m| m.mode())
        .unwrap_or(cfg.mode);
    let (attacks, events, totals) = {
        let m = sh.auto.manager();
        (m.attacks(), m.recent_events(), m.totals.clone())
    };
    let groups: Vec<Value> = cfg
        .groups
        .iter()
        .map(|g| {
            let thresholds: serde_json::Map<String, Value> = filter_common::AUTO_CLASSES
                .iter()
                .filter_map(|c| {
                    g.threshold(*c)
                        .map(|t| (c.name().to_string(), json!(t.to_string())))
                })
                .collect();
            json!({
                "name": g.name,
                "prefixes": g.prefixes.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                "thresholds": thresholds,
            })
        })
        .collect();
    axum::Json(json!({
        "mode": filter_common::auto_mode::name(mode),
        "groups": groups,
        "attacks": attacks,
        "events": events,
        "totals": totals,
    }))
    .into_response()
}

async fn top(AxState(sh): Sh, q: Result<Query<TopQuery>, QueryRejection>) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e.body_text(), None),
    };
    let interval = match q
        .interval
        .as_deref()
        .map(|s| crate::settings::parse_duration(s, "interval"))
    {
        None => std::time::Duration::from_secs(1),
        Some(Ok(d))
            if d >= std::time::Duration::from_millis(100)
                && d <= std::time::Duration::from_secs(10) =>
        {
            d
        }
        Some(Ok(_)) => return fail(StatusCode::BAD_REQUEST, "interval: from 100ms to 10s", None),
        Some(Err(e)) => return fail(StatusCode::BAD_REQUEST, e.to_string(), None),
    };
    let sample = q.sample.unwrap_or(100);
    if sample == 0 {
        return fail(
            StatusCode::BAD_REQUEST,
            "sample: 1 or more (1 in N packets)",
            None,
        );
    }
    let rows = q.rows.unwrap_or(10).min(100);
    let r = blocking(&sh, move |sh| {
        let counters = || -> crate::error::Result<Vec<(u64, u64)>> {
            Ok(sh
                .state()
                .stats
                .snapshot()?
                .iter()
                .map(|(_, c)| (c.packets, c.bytes))
                .collect())
        };
        let mut report = crate::top::sample_once(&sh.pin, &counters, interval, sample, rows)
            .map_err(from_error)?;
        let names: std::collections::HashMap<u32, String> = sh
            .state()
            .lists
            .sources
            .all()
            .map_err(from_error)?
            .into_iter()
            .collect();
        report.name_sources(&|id| names.get(&id).cloned());
        Ok(serde_json::to_value(report).expect("serialisable"))
    })
    .await;
    json_reply(r)
}

async fn healthz(AxState(sh): Sh) -> Response {
    let r = blocking(&sh, |sh| {
        // The pins are still ours (not purged under us), a counter answers (the maps work),
        // and listing attachments proves netlink does.
        sh.pins_intact().map_err(from_error)?;
        sh.state().stats.read().map_err(from_error)?;
        let attached = crate::loader::attachments(&sh.pin).map_err(from_error)?;
        Ok(json!({
            "status": "ok",
            "uptime_s": sh.started.elapsed().as_secs(),
            "interfaces": attached,
        }))
    })
    .await;
    let mut resp = json_reply(r);
    if !resp.status().is_success() {
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    resp
}

async fn metrics(AxState(sh): Sh) -> Response {
    let r = blocking(&sh, |sh| {
        crate::metrics::render(&sh.state(), &sh.metrics, &sh.auto.metrics).map_err(from_error)
    })
    .await;
    match r {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            text,
        )
            .into_response(),
        Err(resp) => resp,
    }
}
