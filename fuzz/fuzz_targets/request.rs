//! The HTTP request parser of `POST /api/search`: any body gives the parsed
//! background, query and rectangle, or an API error (a 4xx), never a panic.
//! The first byte picks the boundary the content type announces, so that the
//! corpus's well-formed bodies stay reachable.
#![no_main]

use fos_server::{parse_search_request, Limits};
use libfuzzer_sys::fuzz_target;

const BOUNDARIES: [&str; 3] = ["fosfuzzboundary", "x", "----WebKitFormBoundary7MA4YWxkTrZu0gW"];

thread_local! {
    static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let ct = format!(
        "multipart/form-data; boundary={}",
        BOUNDARIES[pick as usize % BOUNDARIES.len()]
    );
    let limits = Limits {
        max_pixels: 1 << 20,
        ..Limits::default()
    };
    RT.with(|rt| {
        match rt.block_on(parse_search_request(&ct, body.to_vec(), &limits)) {
            Ok((img, _q, rect)) => {
                assert!(img.width() as u64 * img.height() as u64 <= 1 << 20);
                assert!(rect.w > 0.0 && rect.h > 0.0);
            }
            Err(e) => assert!(e.status().is_client_error(), "{e:?}"),
        }
    });
});
