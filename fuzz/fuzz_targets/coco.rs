//! The COCO annotation reader and the mask decoders (polygons, RLE counts,
//! compressed RLE): any bytes give a parsed file or an error, never a panic;
//! masks that decode have the size asked for; compressed RLE round-trips.
#![no_main]

use fos_data::coco::CocoFile;
use fos_data::mask::{decode_rle_string, encode_rle_string};
use libfuzzer_sys::fuzz_target;

/// Masks larger than this are skipped to keep executions fast (the reader's
/// own cap, `MAX_MASK_PIXELS`, is 100 M pixels and is tested by unit tests).
const FUZZ_MAX_PIXELS: u64 = 1 << 22;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = CocoFile::parse(data) {
        let _ = file.category_names();
        for a in file.annotations.iter().take(16) {
            let Some(img) = file.images.iter().find(|i| i.id == a.image_id) else {
                continue;
            };
            if img.width as u64 * img.height as u64 > FUZZ_MAX_PIXELS {
                continue;
            }
            if let Ok(m) = a.segmentation.to_mask(img.width, img.height) {
                assert_eq!((m.width, m.height), (img.width, img.height));
                assert!(m.area() <= img.width as u64 * img.height as u64);
                if let Some(b) = m.bbox() {
                    assert!(b.area() >= m.area());
                }
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(counts) = decode_rle_string(text) {
            let again = decode_rle_string(&encode_rle_string(&counts)).expect("own encoding");
            assert_eq!(again, counts);
        }
    }
});
