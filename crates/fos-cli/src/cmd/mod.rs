//! One module per subcommand.

pub mod bench;
pub mod classify;
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
