//! `fos serve`: the search API and the web page over HTTP.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Args as ClapArgs;
use fos_index::Library;
use fos_search::Searcher;

use super::index::EncoderArgs;

/// Arguments of `fos serve`.
#[derive(ClapArgs, Debug)]
#[command(after_help = "\
Examples:
  fos serve                       # the demo library on http://127.0.0.1:8080
  fos serve --index lib.fos --addr 0.0.0.0:9000 --max-concurrent 2

  curl -F background=@photo.jpg -F 'query={\"box\": [100, 80, 60, 150], \"category\": \"person\"}' \\
       http://127.0.0.1:8080/v1/search

The first line on stdout is `listening on http://ADDR`. SIGINT or SIGTERM
stops accepting connections and finishes the requests in flight.")]
pub struct Args {
    /// The library (default: the one `fos demo` builds).
    #[arg(long)]
    index: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Largest upload in MB (larger requests get 413).
    #[arg(long, default_value_t = 20)]
    max_upload_mb: usize,
    /// Time allowed per request, upload included (408 after it).
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
    /// Model computations at once (others queue); default: the thread count.
    #[arg(long)]
    max_concurrent: Option<usize>,
    #[command(flatten)]
    enc: EncoderArgs,
}

pub fn run(a: Args, ctx: &super::Context) -> anyhow::Result<ExitCode> {
    let index = a.index.clone().unwrap_or_else(super::search::default_index);
    if !index.exists() {
        bail!(
            "no library at {}; build one with `fos index build` or run `fos demo`",
            index.display()
        );
    }
    let lib = Library::open(&index)?;
    let searcher = Searcher::new(lib, a.enc.load()?)?;
    let limits = fos_server::Limits {
        max_upload: a.max_upload_mb.max(1) << 20,
        max_pixels: ctx.decode.max_pixels,
        timeout: std::time::Duration::from_secs(a.timeout_s.max(1)),
        max_concurrent: a
            .max_concurrent
            .unwrap_or_else(rayon::current_num_threads)
            .max(1),
    };
    let state = fos_server::AppState::new(searcher, limits);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&a.addr)
            .await
            .with_context(|| format!("listening on {}", a.addr))?;
        let local = listener.local_addr()?;
        println!("listening on http://{local}");
        std::io::stdout().flush()?;
        tracing::info!("serving {} on http://{local}", index.display());
        fos_server::serve(listener, state).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
