//! `fos bench http`: a load test of a running `fos serve` from many clients.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args as ClapArgs;
use fos_server::client::{multipart, request};

/// Arguments of `fos bench http`.
#[derive(ClapArgs, Debug)]
pub struct HttpArgs {
    /// The server, host:port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Duration in seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Background photo sent with every search.
    #[arg(long)]
    background: PathBuf,
    /// Box X,Y,W,H.
    #[arg(long = "box", default_value = "200,100,120,260")]
    rect: String,
    /// Category.
    #[arg(long, default_value = "person")]
    category: String,
    /// Read the server's peak memory (VmHWM) from /proc/PID/status at the end.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

pub fn run(a: HttpArgs) -> anyhow::Result<std::process::ExitCode> {
    let bg = std::fs::read(&a.background).with_context(|| a.background.display().to_string())?;
    let rect = super::search::parse_box(&a.rect)?;
    let q =
        serde_json::json!({"box": rect, "category": a.category, "k": 10, "aspect_factor": null});
    let (ct, body) = multipart(&[
        ("background", Some("bg.jpg"), &bg),
        ("query", None, q.to_string().as_bytes()),
    ]);
    let probe = request(
        &a.addr,
        "POST",
        "/v1/search",
        Some(&ct),
        &body,
        Duration::from_secs(60),
    )
    .with_context(|| format!("no server at {}", a.addr))?;
    if probe.status != 200 {
        bail!(
            "the probe search failed with {}: {}",
            probe.status,
            String::from_utf8_lossy(&probe.body)
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let lat = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let (ct, body) = (Arc::new(ct), Arc::new(body));
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..a.clients {
        let (stop, lat, errors, ct, body, addr) = (
            stop.clone(),
            lat.clone(),
            errors.clone(),
            ct.clone(),
            body.clone(),
            a.addr.clone(),
        );
        handles.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match request(
                    &addr,
                    "POST",
                    "/v1/search",
                    Some(&ct),
                    &body,
                    Duration::from_secs(120),
                ) {
                    Ok(r) if r.status == 200 => lat
                        .lock()
                        .expect("lock")
                        .push(t.elapsed().as_secs_f64() * 1000.0),
                    Ok(r) => errors.lock().expect("lock").push(format!(
                        "{} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    )),
                    Err(e) => errors.lock().expect("lock").push(e.to_string()),
                }
            }
        }));
    }
    // /healthz must stay responsive under the load.
    let mut health = Vec::new();
    let pb = super::progress(a.seconds, "seconds");
    while t0.elapsed() < Duration::from_secs(a.seconds) {
        let t = Instant::now();
        match request(
            &a.addr,
            "GET",
            "/healthz",
            None,
            b"",
            Duration::from_secs(10),
        ) {
            Ok(r) if r.status == 200 => health.push(t.elapsed().as_secs_f64() * 1000.0),
            Ok(r) => errors
                .lock()
                .expect("lock")
                .push(format!("healthz {}", r.status)),
            Err(e) => errors.lock().expect("lock").push(format!("healthz {e}")),
        }
        pb.set_position(t0.elapsed().as_secs());
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    pb.finish_and_clear();
    let wall = t0.elapsed().as_secs_f64();
    let mut lat = std::mem::take(&mut *lat.lock().expect("lock"));
    let errors = std::mem::take(&mut *errors.lock().expect("lock"));
    let peak_mb = a.server_pid.and_then(|pid| {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace()
            .nth(1)?
            .parse::<f64>()
            .ok()
            .map(|kb| kb / 1024.0)
    });
    let v = serde_json::json!({
        "clients": a.clients, "seconds": wall, "requests": lat.len(), "errors": errors.len(),
        "first_errors": errors.iter().take(5).collect::<Vec<_>>(),
        "requests_per_s": lat.len() as f64 / wall,
        "latency_ms_p50": pct(&mut lat, 0.5), "latency_ms_p99": pct(&mut lat, 0.99),
        "healthz_ms_p50": pct(&mut health, 0.5), "healthz_ms_max": health.iter().cloned().fold(0.0, f64::max),
        "server_peak_rss_mb": peak_mb,
    });
    if a.json {
        println!("{v}");
    } else {
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(if errors.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(2)
    })
}
