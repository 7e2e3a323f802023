//! One module per subcommand.

pub mod bench;
pub mod bench_http;
pub mod bench_search;
pub mod bench_vectors;
pub mod classify;
pub mod dataset;
pub mod demo;
pub mod encoder;
pub mod eval;
pub mod index;
pub mod search;
pub mod serve;
pub mod train;
pub mod weights;

use indicatif::{ProgressBar, ProgressStyle};

/// Settings shared by all subcommands.
pub struct Context {
    /// Image decoding limits.
    pub decode: fos_image::decode::DecodeOptions,
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

/// A spinner on stderr for a step of unknown length.
pub fn spinner(what: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_message(what.to_owned());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

/// A progress bar that library jobs report to (see [`fos_data::Progress`]).
pub struct Bar(ProgressBar);

impl Bar {
    /// A bar labelled `what`; its length is set when the job starts.
    pub fn new(what: &str) -> Self {
        Bar(progress(0, what))
    }
}

impl fos_data::Progress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
        self.0.reset_eta();
    }
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
