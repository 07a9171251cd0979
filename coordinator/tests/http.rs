//! The HTTP status face and TLS on both faces, over real sockets: 401s and the login cookie,
//! escaping of job-supplied text, the JSON API and its pages, and gRPC/HTTPS with a certificate
//! made in the test (rcgen) — refused without the right CA, refused in plain text.

use std::sync::Arc;

use lehr_coordinator::tls::ServerTls;
use lehr_coordinator::{start, CoordinatorConfig, RunningCoordinator, SchedulerConfig};
use lehr_proto::pb;
use lehr_proto::{CoordinatorApi, ErrorCode, GrpcCoordinatorClient};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct Served {
    grpc: std::net::SocketAddr,
    http: std::net::SocketAddr,
    stop: CancellationToken,
    _keep: (tempfile::TempDir, RunningCoordinator),
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(token: Option<&str>, tls: Option<ServerTls>) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let config = CoordinatorConfig {
        state: dir.path().into(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        http_listen: Some("127.0.0.1:0".parse().unwrap()),
        token: token.map(str::to_string),
        tls,
        scheduler: SchedulerConfig::default(),
    };
    let running = start(config, stop.clone()).await.unwrap();
    Served { grpc: running.grpc_addr.unwrap(), http: running.http_addr.unwrap(), stop, _keep: (dir, running) }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 exchange on `stream` (`Connection: close`, read to the end).
async fn exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).expect("utf-8 reply");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Reply { status, headers, body: body.to_string() }
}

async fn http(addr: std::net::SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    exchange(tokio::net::TcpStream::connect(addr).await.unwrap(), method, path, headers, body).await
}

fn grpc_client(url: &str, token: Option<&str>, ca: Option<&[u8]>) -> Arc<dyn CoordinatorApi> {
    Arc::new(GrpcCoordinatorClient::with_tls(url, token, ca).unwrap())
}

async fn submit(api: &dyn CoordinatorApi, name: &str, tasks: u32) -> String {
    api.submit_job(pb::SubmitJobRequest {
        kind: "noop".into(),
        name: name.into(),
        spec: format!("tasks = {tasks}"),
        base_dir: String::new(),
    })
    .await
    .unwrap()
    .job_id
}

const TOKEN: &str = "s3cret-token-for-http";

#[tokio::test]
async fn the_status_page_needs_a_login_and_escapes_what_jobs_say() {
    let s = serve(Some(TOKEN), None).await;
    let api = grpc_client(&format!("http://{}", s.grpc), Some(TOKEN), None);
    let evil = "<script>alert('x')</script>&\"";
    let job = submit(api.as_ref(), evil, 3).await;

    assert_eq!(http(s.http, "GET", "/healthz", &[], "").await.status, 200);
    let r = http(s.http, "GET", "/readyz", &[], "").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "a coordinator that leads is ready, no login needed");

    // the JSON API: 401 with a JSON body and a challenge, then the data with the bearer token
    let r = http(s.http, "GET", "/api/jobs", &[], "").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(r.json()["code"], "unauthenticated");
    let r = http(s.http, "GET", "/api/jobs", &[("Authorization", "Bearer wrong")], "").await;
    assert_eq!(r.status, 401);
    let bearer = format!("Bearer {TOKEN}");
    let r = http(s.http, "GET", "/api/jobs", &[("Authorization", &bearer)], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["total"], 1);
    assert_eq!(v["jobs"][0]["name"], evil, "JSON carries the name as it is");
    // the token in a URL is not a credential (URLs end up in logs and histories)
    let r = http(s.http, "GET", &format!("/api/jobs?token={TOKEN}"), &[], "").await;
    assert_eq!(r.status, 401);

    // browsers without a session go to the login page and come back where they were going
    let r = http(s.http, "GET", &format!("/jobs/{job}"), &[], "").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some(format!("/login?next=/jobs/{job}").as_str()));
    let r = http(s.http, "GET", "/login?next=/", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("type=password") && !r.body.contains(TOKEN));

    // a wrong token: 401, no cookie
    let r = http(s.http, "POST", "/login", &[], "token=nope&next=%2F").await;
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());
    assert!(r.body.contains("not this coordinator"));
    // the right one: an HttpOnly, SameSite=Strict cookie that is not the token; an off-site
    // `next` is ignored
    let r = http(s.http, "POST", "/login", &[], &format!("token={TOKEN}&next=%2F%2Fevil.example%2F")).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/"));
    let set = r.header("set-cookie").expect("a session cookie").to_string();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && !set.contains("Secure"), "{set}");
    assert!(!set.contains(TOKEN), "the cookie never carries the token");
    let session = set.split(';').next().unwrap().to_string();
    assert!(session.starts_with("lehr_session="));
    let bad_session = "lehr_session=0000";
    assert_eq!(http(s.http, "GET", "/", &[("Cookie", bad_session)], "").await.status, 303);

    // the dashboard: the job's name escaped, a working link to the job's page
    let r = http(s.http, "GET", "/", &[("Cookie", &session)], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains("<script>alert"), "job text is escaped: {}", r.body);
    assert!(r.body.contains("&lt;script&gt;alert('x')&lt;/script&gt;&amp;&quot;"), "{}", r.body);
    let link = format!("href=\"/jobs/{job}\"");
    assert!(r.body.contains(&link), "{}", r.body);
    assert!(!r.body.contains(TOKEN), "links never carry the token");
    // the job's page lists its tasks; the cookie also opens the JSON API
    let r = http(s.http, "GET", &format!("/jobs/{job}"), &[("Cookie", &session)], "").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Tasks 1–3 of 3") && r.body.contains("&lt;script&gt;"), "{}", r.body);
    let r = http(s.http, "GET", &format!("/api/jobs/{job}?limit=2&offset=1"), &[("Cookie", &session)], "").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["tasks_total"], 3);
    assert_eq!(v["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(v["tasks"][0]["index"], 1);
    // errors: unknown job (404 page and JSON), a bad page number (400 naming the parameter)
    let r = http(s.http, "GET", "/jobs/job-999999-%3Cb%3E", &[("Cookie", &session)], "").await;
    assert_eq!(r.status, 404);
    assert!(!r.body.contains("<b>"), "{}", r.body);
    let r = http(s.http, "GET", "/api/jobs/nope", &[("Authorization", &bearer)], "").await;
    assert_eq!((r.status, r.json()["code"].as_str()), (404, Some("not_found")));
    let r = http(s.http, "GET", "/api/jobs?limit=many", &[("Authorization", &bearer)], "").await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("`limit`"));
    let r = http(s.http, "GET", "/api/workers", &[("Authorization", &bearer)], "").await;
    assert_eq!(r.status, 200);
    assert!(r.json()["workers"].is_array());

    // logging out clears the cookie
    let r = http(s.http, "POST", "/logout", &[("Cookie", &session)], "").await;
    assert_eq!(r.status, 303);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
}

#[tokio::test]
async fn jobs_are_paged_newest_first() {
    let s = serve(None, None).await;
    let api = grpc_client(&format!("http://{}", s.grpc), None, None);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(submit(api.as_ref(), &format!("j{i}"), 1).await);
    }
    let page = api.list_jobs(pb::ListJobsRequest { offset: 1, limit: 2 }).await.unwrap();
    assert_eq!(page.total, 5);
    let got: Vec<&str> = page.jobs.iter().map(|j| j.job_id.as_str()).collect();
    assert_eq!(got, [ids[3].as_str(), ids[2].as_str()]);
    assert_eq!(api.list_jobs(pb::ListJobsRequest::default()).await.unwrap().jobs.len(), 5);
    assert!(api.list_jobs(pb::ListJobsRequest { offset: 9, limit: 2 }).await.unwrap().jobs.is_empty());
    // without a token the pages are open (a loopback coordinator) and the dashboard shows them
    let r = http(s.http, "GET", "/", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(ids.iter().all(|id| r.body.contains(id.as_str())));
    assert!(!r.body.contains("log out"));
}

struct Pki {
    cert_pem: String,
    key_pem: String,
}

fn self_signed() -> Pki {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    Pki { cert_pem: c.cert.pem(), key_pem: c.signing_key.serialize_pem() }
}

fn tls_client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

async fn https(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<Reply> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(ca_pem));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await?;
    Ok(exchange(tls, method, path, &[], body).await)
}

#[tokio::test]
async fn tls_serves_both_faces_and_refuses_the_wrong_ca_and_plain_text() {
    let pki = self_signed();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    let tls = ServerTls::from_files(&cert, &key).unwrap();
    let s = serve(Some(TOKEN), Some(tls)).await;

    // gRPC over TLS, trusting the test's CA
    let url = format!("https://localhost:{}", s.grpc.port());
    let api = grpc_client(&url, Some(TOKEN), Some(pki.cert_pem.as_bytes()));
    let job = submit(api.as_ref(), "over-tls", 2).await;
    assert_eq!(api.list_jobs(pb::ListJobsRequest::default()).await.unwrap().total, 1);
    // also by IP address (the certificate names 127.0.0.1)
    let by_ip = grpc_client(&format!("https://{}", s.grpc), Some(TOKEN), Some(pki.cert_pem.as_bytes()));
    assert!(by_ip.get_job(pb::GetJobRequest { job_id: job.clone(), ..Default::default() }).await.is_ok());

    // another CA, the system's roots, or plain text: no answer
    let other = self_signed();
    let err = grpc_client(&url, Some(TOKEN), Some(other.cert_pem.as_bytes()))
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable, "{err}");
    let err = grpc_client(&url, Some(TOKEN), None).list_jobs(pb::ListJobsRequest::default()).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable, "{err}");
    let err = grpc_client(&format!("http://{}", s.grpc), Some(TOKEN), None)
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable, "{err}");
    // a CA with a plain-text URL is a mistake the client names
    let err = GrpcCoordinatorClient::with_tls(&format!("http://{}", s.grpc), None, Some(pki.cert_pem.as_bytes()))
        .unwrap_err();
    assert!(err.message.contains("use https://"), "{}", err.message);

    // HTTPS: the page answers with the right CA, the cookie is Secure; the wrong CA fails the
    // handshake and plain HTTP gets no page
    let r = https(s.http, &pki.cert_pem, "GET", "/healthz", "").await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let r = https(s.http, &pki.cert_pem, "POST", "/login", &format!("token={TOKEN}")).await.unwrap();
    assert_eq!(r.status, 303);
    assert!(r.header("set-cookie").unwrap().contains("Secure"));
    assert!(https(s.http, &other.cert_pem, "GET", "/healthz", "").await.is_err());
    let mut plain = tokio::net::TcpStream::connect(s.http).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut raw = Vec::new();
    let _ = plain.read_to_end(&mut raw).await;
    assert!(!String::from_utf8_lossy(&raw).contains("200 OK"), "plain HTTP is not served");
    // a client that connects and never starts its handshake does not hold up the next one
    let _silent = tokio::net::TcpStream::connect(s.http).await.unwrap();
    assert_eq!(https(s.http, &pki.cert_pem, "GET", "/healthz", "").await.unwrap().status, 200);
}

#[test]
fn bad_certificate_files_are_named() {
    let pki = self_signed();
    let other = self_signed();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, other_key, junk) =
        (dir.path().join("c.pem"), dir.path().join("k.pem"), dir.path().join("o.pem"), dir.path().join("j.pem"));
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    std::fs::write(&other_key, &other.key_pem).unwrap();
    std::fs::write(&junk, "not a pem file\n").unwrap();
    let e = ServerTls::from_files(&junk, &key).unwrap_err().to_string();
    assert!(e.contains("no PEM `CERTIFICATE`") && e.contains("j.pem"), "{e}");
    let e = ServerTls::from_files(&cert, &junk).unwrap_err().to_string();
    assert!(e.contains("private key") && e.contains("j.pem"), "{e}");
    let e = ServerTls::from_files(&cert, &dir.path().join("missing.pem")).unwrap_err().to_string();
    assert!(e.contains("missing.pem"), "{e}");
    let e = ServerTls::from_files(&cert, &other_key).unwrap_err().to_string();
    assert!(e.contains("do not go together"), "{e}");
}

/// Before it leads (a standby waiting for the leader lock) the face answers `/healthz` only:
/// `/readyz` and every page are 503 with the reason, until the status router is installed.
#[tokio::test]
async fn a_face_that_does_not_lead_is_alive_but_not_ready() {
    let face = lehr_coordinator::http::Face::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = face.router();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    assert_eq!(http(addr, "GET", "/healthz", &[], "").await.status, 200);
    for path in ["/readyz", "/api/jobs", "/"] {
        let r = http(addr, "GET", path, &[], "").await;
        assert_eq!(r.status, 503, "{path}");
        assert!(r.body.contains("standby"), "{path}: {}", r.body);
    }
    face.lead(axum::Router::new().route("/api/jobs", axum::routing::get(|| async { "the jobs" })));
    let r = http(addr, "GET", "/readyz", &[], "").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let r = http(addr, "GET", "/api/jobs", &[], "").await;
    assert_eq!((r.status, r.body.as_str()), (200, "the jobs"), "requests reach the installed router");
    assert_eq!(http(addr, "GET", "/nothing", &[], "").await.status, 404);
}
