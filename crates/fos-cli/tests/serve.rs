//! `fos serve` on loopback: every route, the error statuses, the limits, a
//! slow client, path traversal, and a graceful shutdown with a request in
//! flight. Mechanics run with random backbone weights over real COCO data.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{a_query, fixture, fos, s, skip, stdout};
use fos_server::client::{multipart, request, Reply};

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(home: &std::path::Path, args: &[&str]) -> Server {
    let mut child = common::fos_command(home)
        .args(["--max-pixels", "2000000", "serve", "--addr", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    Server { child, addr }
}

fn get(srv: &Server, path: &str) -> Reply {
    request(&srv.addr, "GET", path, None, b"", Duration::from_secs(30)).unwrap()
}

fn post(srv: &Server, path: &str, bg: &[u8], query: &str) -> Reply {
    let (ct, body) = multipart(&[
        ("background", Some("bg.jpg"), bg),
        ("query", None, query.as_bytes()),
    ]);
    request(
        &srv.addr,
        "POST",
        path,
        Some(&ct),
        &body,
        Duration::from_secs(60),
    )
    .unwrap()
}

fn err_code(r: &Reply) -> String {
    r.json()["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not a JSON error: {r:?}"))
        .to_owned()
}

#[test]
fn api_routes_errors_limits_and_shutdown() {
    let Some(f) = fixture() else {
        return skip("../shared/data absent");
    };
    let srv = start(
        f.home.path(),
        &[
            "--index",
            s(&f.lib),
            "--max-upload-mb",
            "1",
            "--timeout-s",
            "3",
        ],
    );
    let h = get(&srv, "/healthz");
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ok");
    let cats = get(&srv, "/v1/categories").json();
    assert!(cats
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "person"));
    let api = get(&srv, "/openapi.json");
    assert_eq!(api.json()["openapi"], "3.0.3");
    let page = get(&srv, "/");
    assert!(page.status == 200 && String::from_utf8_lossy(&page.body).contains("<canvas"));
    assert!(
        !String::from_utf8_lossy(&page.body).contains("http://")
            || !String::from_utf8_lossy(&page.body).contains("<script src")
    );

    // Search: the same answer as `fos search --json`.
    let (bg_path, bx, _) = a_query(&f.ds);
    let bg = std::fs::read(&bg_path).unwrap();
    let q = format!(
        r#"{{"box": [{bx}], "category": "person", "k": 5, "patterns": [2, 2], "aspect_factor": null}}"#
    );
    let r = post(&srv, "/v1/search", &bg, &q);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!(j["results"].as_array().unwrap().len(), 5);
    assert_eq!(j["patterns"].as_array().unwrap().len(), 2);
    let cli = fos(
        f.home.path(),
        &[
            "search",
            "--index",
            s(&f.lib),
            "--background",
            s(&bg_path),
            "--box",
            &bx,
            "--category",
            "person",
            "-k",
            "5",
            "--no-aspect-filter",
            "--json",
        ],
    );
    let cj: serde_json::Value = serde_json::from_str(&stdout(&cli)).unwrap();
    let ids = |v: &serde_json::Value| {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&j), ids(&cj));

    // Cut-outs and composites.
    let id = j["results"][0]["id"].as_str().unwrap().to_owned();
    let fg = get(&srv, &format!("/v1/foregrounds/{id}"));
    assert_eq!(
        (fg.status, fg.header("content-type")),
        (200, Some("image/png"))
    );
    assert!(image::load_from_memory(&fg.body).is_ok());
    for bad in [
        "no-such-id",
        "..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        "..",
        "a%00b",
    ] {
        let r = get(&srv, &format!("/v1/foregrounds/{bad}"));
        assert_eq!(r.status, 404, "{bad}");
    }
    let c = post(
        &srv,
        "/v1/composite",
        &bg,
        &format!(r#"{{"box": [{bx}], "id": "{id}"}}"#),
    );
    assert_eq!(c.status, 200, "{}", String::from_utf8_lossy(&c.body));
    let img = image::load_from_memory(&c.body).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        image::image_dimensions(&bg_path).unwrap()
    );
    assert_eq!(
        post(
            &srv,
            "/v1/composite",
            &bg,
            &format!(r#"{{"box": [{bx}], "id": "nope"}}"#)
        )
        .status,
        404
    );

    // Bad requests: JSON errors with the right status.
    let cases: Vec<(&str, Vec<u8>, String, u16, &str)> = vec![
        (
            "box outside",
            bg.clone(),
            r#"{"box": [5000, 1, 10, 10], "category": "person"}"#.into(),
            400,
            "invalid_query",
        ),
        (
            "zero box",
            bg.clone(),
            r#"{"box": [1, 1, 0, 10], "category": "person"}"#.into(),
            400,
            "invalid_query",
        ),
        (
            "unknown category",
            bg.clone(),
            format!(r#"{{"box": [{bx}], "category": "unicorn"}}"#),
            400,
            "invalid_query",
        ),
        ("not JSON", bg.clone(), "{box".into(), 400, "invalid_query"),
        (
            "box not numbers",
            bg.clone(),
            r#"{"box": ["a", 1, 2, 3], "category": "person"}"#.into(),
            400,
            "invalid_query",
        ),
        (
            "corrupt image",
            b"\xff\xd8\xff\xe0garbage".to_vec(),
            format!(r#"{{"box": [{bx}], "category": "person"}}"#),
            400,
            "bad_image",
        ),
        (
            "empty image",
            vec![],
            format!(r#"{{"box": [{bx}], "category": "person"}}"#),
            400,
            "bad_image",
        ),
    ];
    for (name, img, q, status, code) in cases {
        let r = post(&srv, "/v1/search", &img, &q);
        assert_eq!(
            (r.status, err_code(&r).as_str()),
            (status, code),
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // A decompression bomb: a PNG header claiming 30000 x 30000 pixels.
    let bomb = {
        let mut v = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&30000u32.to_be_bytes());
        ihdr.extend_from_slice(&30000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        v.extend_from_slice(&ihdr[4..]);
        v.extend_from_slice(&crc(&ihdr).to_be_bytes());
        v
    };
    let r = post(
        &srv,
        "/v1/search",
        &bomb,
        &format!(r#"{{"box": [{bx}], "category": "person"}}"#),
    );
    assert_eq!((r.status, err_code(&r).as_str()), (413, "image_too_large"));
    // Over the upload limit (1 MB).
    let big = vec![7u8; 3 << 20];
    let r = post(
        &srv,
        "/v1/search",
        &big,
        &format!(r#"{{"box": [{bx}], "category": "person"}}"#),
    );
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    // Missing parts, unknown routes.
    let (ct, body) = multipart(&[("query", None, b"{}")]);
    let r = request(
        &srv.addr,
        "POST",
        "/v1/search",
        Some(&ct),
        &body,
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!((r.status, err_code(&r).as_str()), (400, "bad_request"));
    let r = get(&srv, "/v2/nothing");
    assert_eq!((r.status, err_code(&r).as_str()), (404, "not_found"));

    // A slow client that never sends its body gets 408 after the timeout, and
    // the server keeps answering others meanwhile.
    let mut slow = std::net::TcpStream::connect(&srv.addr).unwrap();
    slow.write_all(b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=zz\r\nContent-Length: 100000\r\n\r\n--zz\r\n").unwrap();
    assert_eq!(get(&srv, "/healthz").status, 200);
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reply = Vec::new();
    let _ = slow.read_to_end(&mut reply);
    assert!(
        String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&reply)
    );

    // Graceful shutdown: SIGTERM with a search in flight; it completes.
    let addr = srv.addr.clone();
    let (ct, body) = multipart(&[
        ("background", Some("bg.jpg"), &bg),
        ("query", None, q.as_bytes()),
    ]);
    let inflight = std::thread::spawn(move || {
        request(
            &addr,
            "POST",
            "/v1/search",
            Some(&ct),
            &body,
            Duration::from_secs(60),
        )
    });
    std::thread::sleep(Duration::from_millis(30));
    let pid = srv.child.id();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let r = inflight.join().unwrap().unwrap();
    assert_eq!(r.status, 200);
    let mut srv = srv;
    let status = srv.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

fn crc(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}
