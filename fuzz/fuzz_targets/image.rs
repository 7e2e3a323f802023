//! The image-loading guard: any bytes (PNG, JPEG, WebP or not) give an image
//! within the pixel cap or an error, never a panic or an allocation the
//! header's claimed size would demand (decompression bombs).
#![no_main]

use fos_image::decode::{decode_bytes, DecodeOptions};
use libfuzzer_sys::fuzz_target;

const CAP: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let opts = DecodeOptions { max_pixels: CAP };
    if let Ok(img) = decode_bytes(data, std::path::Path::new("fuzz-input"), &opts) {
        assert!(img.width() as u64 * img.height() as u64 <= CAP);
        let _ = img.to_rgba8();
    }
});
