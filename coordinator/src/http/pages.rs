//! The HTML of the status pages. Every value that comes from a job (names, errors, shard paths)
//! is escaped; links carry percent-encoded ids and never a token.

use axum::response::Html;
use lehr_pipeline::text::escape_xml as esc;
use lehr_proto::pb::*;
use lehr_proto::Named;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}\
    td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}\
    .bar{background:#eee;width:200px;height:10px}.fill{background:#4a7;height:10px}.failed{color:#b22}\
    nav form{display:inline}small{color:#666}";

/// Percent-encodes everything but RFC 3986's unreserved characters (for a path segment or a
/// query value).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn head(title: &str, refresh: bool) -> String {
    let refresh = if refresh { "<meta http-equiv=refresh content=2>" } else { "" };
    format!(
        "<!doctype html><html><head><meta charset=utf-8>{refresh}<title>{}</title><style>{STYLE}</style></head><body>",
        esc(title)
    )
}

fn nav(with_logout: bool) -> String {
    let logout =
        if with_logout { " · <form method=post action=\"/logout\"><button>log out</button></form>" } else { "" };
    format!("<nav><a href=\"/\">all jobs</a>{logout}</nav>")
}

fn job_link(id: &str) -> String {
    format!("<a href=\"/jobs/{}\">{}</a>", percent_encode(id), esc(id))
}

fn ms(t: i64) -> String {
    if t <= 0 {
        return String::new();
    }
    let secs = t / 1000;
    let (d, s) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // days since 1970-01-01 to a civil date (Howard Hinnant's algorithm)
    let z = d + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z", s / 3600, s % 3600 / 60, s % 60)
}

pub fn dashboard(jobs: &ListJobsResponse, workers: &[WorkerStatus], with_logout: bool) -> Html<String> {
    let mut html = head("lehr coordinator", true);
    html.push_str(&nav(with_logout));
    html.push_str("<h1>lehr coordinator</h1><h2>Jobs</h2>");
    if jobs.total as usize > jobs.jobs.len() {
        html.push_str(&format!(
            "<p><small>the newest {} of {} jobs; all of them: <a href=\"/api/jobs?limit=0\">/api/jobs?limit=0</a></small></p>",
            jobs.jobs.len(),
            jobs.total
        ));
    }
    html.push_str(
        "<table><tr><th>job</th><th>name</th><th>kind</th><th>state</th><th>shards</th><th>progress</th>\
         <th>docs in → out</th><th>bad records</th><th>error</th></tr>",
    );
    for j in &jobs.jobs {
        let total: u32 = j.stages.iter().map(|s| s.tasks_total).sum();
        let done: u32 = j.stages.iter().map(|s| s.tasks_committed).sum();
        let din: u64 = j.stages.iter().map(|s| s.docs_in).sum();
        let dout: u64 = j.stages.iter().map(|s| s.docs_out).sum();
        let bad: u64 = j.stages.iter().map(|s| s.bad_records).sum();
        let pct = if total == 0 { 0.0 } else { 100.0 * done as f64 / total as f64 };
        html.push_str(&format!(
            "<tr><td>{link}</td><td>{name}</td><td>{kind}</td><td class=\"{state}\">{state}</td><td>{done}/{total}</td>\
             <td><div class=bar><div class=fill style=\"width:{pct:.0}%\"></div></div></td><td>{din} → {dout}</td>\
             <td>{bad}</td><td class=failed>{err}</td></tr>",
            link = job_link(&j.job_id),
            name = esc(&j.name),
            kind = esc(&j.kind),
            state = j.state().name(),
            err = esc(&j.error),
        ));
    }
    html.push_str(
        "</table><h2>Workers</h2><table><tr><th>worker</th><th>name</th><th>alive</th><th>last seen</th><th>running tasks</th></tr>",
    );
    for w in workers {
        let running: Vec<String> = w.running_tasks.iter().map(u64::to_string).collect();
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&w.worker_id),
            esc(&w.name),
            if w.alive { "yes" } else { "no" },
            ms(w.last_seen_ms),
            running.join(", ")
        ));
    }
    html.push_str("</table><p><small>JSON: <a href=\"/api/jobs\">/api/jobs</a> · <a href=\"/api/workers\">/api/workers</a></small></p></body></html>");
    Html(html)
}

pub fn job(r: &GetJobResponse, offset: u32, per_page: u32, with_logout: bool) -> Html<String> {
    let Some(j) = &r.job else { return not_found("no such job") };
    let running = !j.state().is_terminal();
    let mut html = head(&format!("{} · lehr", j.job_id), running);
    html.push_str(&nav(with_logout));
    html.push_str(&format!(
        "<h1>{id}</h1><p>{name} · {kind} · <b class=\"{state}\">{state}</b> · output <code>{out}</code><br>\
         <small>created {created}{finished}</small></p>",
        id = esc(&j.job_id),
        name = esc(&j.name),
        kind = esc(&j.kind),
        state = j.state().name(),
        out = esc(&j.output),
        created = ms(j.created_ms),
        finished = if j.finished_ms > 0 { format!(", ended {}", ms(j.finished_ms)) } else { String::new() },
    ));
    if !j.error.is_empty() {
        html.push_str(&format!("<p class=failed>{}</p>", esc(&j.error)));
    }
    html.push_str(
        "<h2>Stages</h2><table><tr><th>stage</th><th>state</th><th>after</th><th>tasks</th><th>running</th><th>failed</th>\
         <th>docs in → out</th><th>bytes in</th><th>bad records</th></tr>",
    );
    for s in &j.stages {
        html.push_str(&format!(
            "<tr><td>{}</td><td class=\"{st}\">{st}</td><td>{}</td><td>{}/{}</td><td>{}</td><td>{}</td><td>{} → {}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.name),
            esc(&s.depends_on.join(", ")),
            s.tasks_committed,
            s.tasks_total,
            s.tasks_running,
            s.tasks_failed,
            s.docs_in,
            s.docs_out,
            s.bytes_in,
            s.bad_records,
            st = s.state().name(),
        ));
    }
    let (from, to) = (offset as usize + 1, offset as usize + r.tasks.len());
    html.push_str(&format!("</table><h2>Tasks {from}–{to} of {}</h2>", r.tasks_total));
    html.push_str(
        "<table><tr><th>task</th><th>stage</th><th>shard</th><th>state</th><th>attempts</th><th>worker</th><th>last error</th></tr>",
    );
    for t in &r.tasks {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}#{}</td><td><small>{}</small></td><td class=\"{st}\">{st}</td><td>{}</td><td>{}</td><td class=failed>{}</td></tr>",
            t.task_id,
            esc(&t.stage),
            t.index,
            esc(&t.shard),
            t.attempts,
            esc(&t.worker_id),
            esc(&t.last_error),
            st = t.state().name(),
        ));
    }
    html.push_str("</table><p>");
    let base = format!("/jobs/{}", percent_encode(&j.job_id));
    if offset > 0 {
        html.push_str(&format!("<a href=\"{base}?offset={}\">← previous</a> ", offset.saturating_sub(per_page)));
    }
    if (offset + per_page) < r.tasks_total {
        html.push_str(&format!("<a href=\"{base}?offset={}\">next →</a> ", offset + per_page));
    }
    html.push_str(&format!(
        "</p><p><small>JSON: <a href=\"/api/jobs/{id}\">/api/jobs/{id}</a></small></p></body></html>",
        id = percent_encode(&j.job_id)
    ));
    Html(html)
}

pub fn login(next: &str, error: Option<&str>) -> Html<String> {
    let mut html = head("log in · lehr", false);
    html.push_str("<h1>lehr coordinator</h1>");
    if let Some(e) = error {
        html.push_str(&format!("<p class=failed>{}</p>", esc(e)));
    }
    html.push_str(&format!(
        "<form method=post action=\"/login\"><p>This coordinator needs its token (the contents of the file given \
         to <code>--token-file</code>).</p><input type=password name=token autofocus size=48> \
         <input type=hidden name=next value=\"{}\"><button>log in</button></form></body></html>",
        esc(next)
    ));
    Html(html)
}

pub fn not_found(message: &str) -> Html<String> {
    let mut html = head("not found · lehr", false);
    html.push_str(&nav(false));
    html.push_str(&format!("<h1>not found</h1><p>{}</p></body></html>", esc(message)));
    Html(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(ms(0), "");
        assert_eq!(ms(1_000), "1970-01-01 00:00:01Z");
        assert_eq!(ms(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(ms(1_796_083_200_000 + 3_723_000), "2026-12-01 01:02:03Z");
    }

    #[test]
    fn ids_are_encoded() {
        assert_eq!(percent_encode("job-000001-ab12"), "job-000001-ab12");
        assert_eq!(percent_encode("a b\"<>?#&"), "a%20b%22%3C%3E%3F%23%26");
    }
}
